//! `udp_dropped`: the kernel dropped a UDP (or UDP-Lite) datagram, and how a flood of drops is counted
//! instead of handed over one by one.

use super::{conntrack::Conntrack, header::EventHeader, owner::Owner};

/// Dropped datagrams (`skb:kfree_skb`). The first drop of a flow (its reason, packet 5-tuple, socket) in a
/// second is handed over at once; the rest of that second are counted in the kernel, in a per-CPU hash
/// keyed by the record itself, its time and queue length zeroed, with two generations as in
/// [`tally`](crate::tally): user space reads one each second while the programs count in the other. When only
/// counts are wanted every drop is counted. A generation that is full hands records over, one per drop.
pub mod drops {
    /// Distinct drops one generation holds.
    pub const ENTRIES: u32 = 4096;
    /// `DROP_CONTROL[EPOCH]`: the epoch the program counts in, from 1, as in [`tally`](crate::tally) (always
    /// one: a flood of drops is counted whether records are wanted or not).
    pub const EPOCH: u32 = 0;
    /// `DROP_CONTROL[ICMP_AT_DROP]`: the families whose ICMP errors no hook sees (bit 0 IPv4: no ICMP hook
    /// attached; bit 1 IPv6: none, or tracepoint mode's, which is IPv4 only). A `no_socket` drop of such a
    /// family's datagram is reported as the port unreachable the kernel decided to send; one of another family
    /// is not reported at all, for the ICMP hooks tell it (sent, stopped by a rate limit, or lost). Written
    /// once the hooks are attached.
    pub const ICMP_AT_DROP: u32 = 1;
    pub const AT_DROP_IPV4: u32 = 1 << 0;
    pub const AT_DROP_IPV6: u32 = 1 << 1;
    pub const CONTROL_ENTRIES: u32 = 2;
    /// Flows whose first drop was handed over lately.
    pub const SEEN_ENTRIES: u32 = 8192;
    /// Flows to one destination (reason, address and port, socket) whose drops a period shows one by one;
    /// the destination's further drops that period, from any source, are counted in one record whose source
    /// is not kept ([`udp_dropped_flags::SOURCES_FOLDED`](super::udp_dropped_flags::SOURCES_FOLDED)): a flood
    /// from many source ports or addresses is a few lines a second, not one per source.
    pub const FLOWS_SHOWN: u32 = 32;
    /// Destinations whose flows shown this period are counted.
    pub const DEST_ENTRIES: u32 = 4096;
    /// How long a handed-over drop stands for its flow's next ones, which are counted meanwhile.
    pub const PERIOD_NS: u64 = 1_000_000_000;
    /// [`UdpDropped::reason`](super::UdpDropped::reason) on a kernel whose `skb:kfree_skb` gives none
    /// (before 5.17).
    pub const NO_REASON: u32 = u32::MAX;
    /// `direction`: the datagram came in on an interface of this host (`skb->skb_iif` set; forwarded
    /// ones too).
    pub const IN: u8 = 1;
    /// Sent by this host.
    pub const OUT: u8 = 2;
}

/// Bits of [`UdpDropped::flags`].
pub mod udp_dropped_flags {
    /// The socket is known: the one that dropped it on receive (`skb:kfree_skb`'s `rx_sk`, 6.11), or the one
    /// sending it: `local_*` and `sock_ino` are filled in.
    pub const SOCKET_KNOWN: u8 = 1 << 0;
    /// `owner` holds the process that created the socket.
    pub const OWNER_KNOWN: u8 = 1 << 1;
    /// `rcvbuf` and `queued` were read from the socket when it dropped the datagram.
    pub const RCVBUF_KNOWN: u8 = 1 << 2;
    /// `src` and `sport` are zeros: the record counts drops from any source (only counts are wanted, or its
    /// destination had more than [`drops::FLOWS_SHOWN`](super::drops::FLOWS_SHOWN) flows in the period).
    pub const SOURCES_FOLDED: u8 = 1 << 3;
    /// The record is a [`WithDns`](crate::WithDns): the datagram is to or from a DNS port.
    pub const DNS: u8 = 1 << 4;
    /// The packet follows the record (and its DNS payload): a [`PacketHead`](crate::PacketHead) and its
    /// bytes (`--pcap`).
    pub const PACKET: u8 = 1 << 5;
}

/// The kernel dropped a UDP (or UDP-Lite) datagram: `skb:kfree_skb`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpDropped {
    pub header: EventHeader,
    /// The datagram's addresses, network byte order; its ports, host byte order.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// `enum skb_drop_reason`, or [`drops::NO_REASON`].
    pub reason: u32,
    /// Where it was freed: `kfree_skb`'s caller, a kernel text address.
    pub location: u64,
    /// The socket it was dropped at, with `SOCKET_KNOWN`: its bound address and port.
    pub local_addr: [u8; 16],
    pub local_port: u16,
    /// [`drops::IN`] or [`drops::OUT`].
    pub direction: u8,
    pub proto: u8,
    pub flags: u8,
    pub _pad0: [u8; 3],
    /// The interface it came in on or was leaving by, 0 if none.
    pub ifindex: u32,
    /// With `SOCKET_KNOWN`: `sk_rcvbuf`, and `sk_rmem_alloc` when it was dropped.
    pub rcvbuf: u32,
    pub queued: u32,
    pub _pad1: u32,
    pub sock_ino: u64,
    /// Valid with `OWNER_KNOWN`.
    pub owner: Owner,
    /// The datagram's conntrack entry.
    pub conntrack: Conntrack,
}

// SAFETY: plain `#[repr(C)]` integers and arrays with explicit padding; every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for UdpDropped {}

/// No implicit padding: the size is the sum of the fields.
const _: () = assert!(size_of::<UdpDropped>() == 16 + 32 + 4 + 4 + 8 + 16 + 8 + 16 + 8 + 56 + 88);

/// What a dropped datagram's count carries besides the count: the largest receive queue seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCount {
    pub count: u64,
    pub queued: u32,
    pub _pad0: u32,
}

// SAFETY: plain `#[repr(C)]` integers with explicit padding; every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for DropCount {}

const _: () = assert!(size_of::<DropCount>() == 16);

/// A destination's flows shown in the current period ([`drops::FLOWS_SHOWN`]): since when, and how many.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowsShown {
    pub since: u64,
    pub flows: u32,
    pub _pad0: u32,
}
