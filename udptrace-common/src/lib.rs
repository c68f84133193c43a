//! The records udptrace's eBPF programs hand to user space, and the kernel layout facts user space hands
//! to the programs. Plain `#[repr(C)]` data with explicit padding: no pointers, no enums, no implicit holes,
//! so that both sides agree on every byte whatever the compiler does.
#![no_std]

mod config;

pub use self::config::{
    AddrFilter, Config, DNS_PORTS, FILTER_VALUES, Filter, IcmpMask, KernelOffsets, NOT_ICMP_REPORTERS, RECVERR_UNKNOWN,
    TextRange, buffer,
};

/// Every record in the ring buffer starts with an [`EventHeader`]; `kind` says which record follows.
pub mod kind {
    pub const SOCKET_ERROR: u8 = 1;
    pub const ICMP_SENT: u8 = 2;
    /// An [`IcmpSent`](super::IcmpSent) record for an ICMP error a rate limit stopped.
    pub const ICMP_SUPPRESSED: u8 = 3;
    /// A [`UdpDropped`](super::UdpDropped) record: the kernel dropped a UDP datagram.
    pub const UDP_DROPPED: u8 = 4;
}

/// The attach mode of the hook that produced a record.
pub mod probe {
    pub const FENTRY: u8 = 1;
    pub const KPROBE: u8 = 2;
    pub const TRACEPOINT: u8 = 3;
}

/// The names user space finds the programs' maps and globals by: the statics of `udptrace-ebpf` carry these
/// names (a unit test of `udptrace` checks the object against them).
pub mod names {
    /// The BPF ring buffer (`--buffer ring`).
    pub const EVENTS: &str = "EVENTS";
    /// The per-CPU perf buffers (`--buffer perf`).
    pub const PERF_EVENTS: &str = "PERF_EVENTS";
    /// Per-CPU counters, indexed by [`stat`](super::stat).
    pub const STATS: &str = "STATS";
    /// Sockets' creators, by socket cookie.
    pub const OWNERS: &str = "OWNERS";
    /// The read-only global of [`KernelOffsets`](super::KernelOffsets).
    pub const OFFSETS: &str = "OFFSETS";
    /// The read-only global of [`Config`](super::Config).
    pub const CONFIG: &str = "CONFIG";
    /// Whether the programs count records in the kernel, and in which generation ([`tally`](super::tally)).
    pub const TALLY: &str = "TALLY";
    /// The counted records, two generations per record type: `[generation 0, generation 1]`.
    pub const SOCKET_ERROR_TALLIES: [&str; 2] = ["SOCKET_ERRORS_0", "SOCKET_ERRORS_1"];
    pub const ICMP_SENT_TALLIES: [&str; 2] = ["ICMP_SENT_0", "ICMP_SENT_1"];
    /// What user space tells the drop program while it runs, indexed by [`drops::EPOCH`] and
    /// [`drops::ICMP_AT_DROP`](super::drops::ICMP_AT_DROP).
    pub const DROP_CONTROL: &str = "DROP_CONTROL";
    pub const DROP_TALLIES: [&str; 2] = ["UDP_DROPS_0", "UDP_DROPS_1"];
    /// The last record each CPU counted, per generation, with its count ([`Pending`](super::Pending)).
    pub const ICMP_SENT_PENDING: &str = "ICMP_SENT_PENDING";
    /// Per nesting level and generation: index `level * 2 + generation`.
    pub const DROP_PENDING: &str = "UDP_DROPS_PENDING";
    /// One value, set to 1 when udptrace stops: the programs then count a record lost instead of handing
    /// it over, so that the buffer's last records can be drained to the end.
    pub const OUTPUT_STOPPED: &str = "OUTPUT_STOPPED";
    /// Every map user space opens by name.
    pub const MAPS: &[&str] = &[
        EVENTS,
        PERF_EVENTS,
        STATS,
        OWNERS,
        TALLY,
        SOCKET_ERROR_TALLIES[0],
        SOCKET_ERROR_TALLIES[1],
        ICMP_SENT_TALLIES[0],
        ICMP_SENT_TALLIES[1],
        DROP_CONTROL,
        DROP_TALLIES[0],
        DROP_TALLIES[1],
        ICMP_SENT_PENDING,
        DROP_PENDING,
        OUTPUT_STOPPED,
    ];
}

/// Counting in the kernel: when only counts are wanted (`--summary`, `--quiet`, `--metrics --quiet`), a
/// record is not handed over but counted, keyed by the record itself, its time zeroed. The `TALLY` array's
/// one value says where: [`STREAM`](tally::STREAM) (every record to the buffer, the state after load), or the
/// epoch counted in, a number user space raises by one at each read; its low bit is the generation
/// ([`generation`](tally::generation)). Each CPU counts a run of one ICMP error or drop in its
/// [`Pending`](super::Pending) slot of the generation (a compare and an add: a flood is mostly one key), and
/// a key that differs from the slot's moves the slot's count into the generation's per-CPU hash map first. User space switches the
/// epoch, waits until no program can still be counting in the old one (an RCU grace period), then reads the
/// old generation's map and the slots stamped with the old epoch, and empties the map. A record that finds
/// its generation full goes to the buffer instead; a slot's count that finds it full is counted lost.
pub mod tally {
    /// Records go to the buffer.
    pub const STREAM: u32 = 0;
    /// The generation (`*_0` or `*_1` maps, pending slot 0 or 1) an epoch counts in.
    #[inline(always)]
    pub const fn generation(epoch: u32) -> u32 {
        epoch & 1
    }
    /// Distinct records one generation of one record type holds (per-CPU counts: 8 bytes per entry and CPU).
    pub const ENTRIES: u32 = 2048;
}

/// Dropped datagrams (`skb:kfree_skb`). The first drop of a flow (its reason, packet 5-tuple, socket) in a
/// second is handed over at once; the rest of that second are counted in the kernel, in a per-CPU hash
/// keyed by the record itself, its time and queue length zeroed, with two generations as in [`tally`]:
/// user space reads one each second while the programs count in the other. When only counts are wanted
/// every drop is counted. A generation that is full hands records over, one per drop.
pub mod drops {
    /// Distinct drops one generation holds.
    pub const ENTRIES: u32 = 4096;
    /// `DROP_CONTROL[EPOCH]`: the epoch the program counts in, from 1, as in [`tally`](super::tally) (always
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
    /// The record is a [`WithDns`](super::WithDns): the datagram is to or from a DNS port.
    pub const DNS: u8 = 1 << 4;
}

/// The bytes of a DNS datagram's payload a record carries: the 12-byte header and the longest first question
/// there is (a 255-byte name, its type and class), 271, rounded up to a word. A prefix this long that does
/// not parse is not DNS; a shorter one (a short datagram, or an ICMP error quoting less) may just end early.
pub const DNS_PREFIX: usize = 272;

/// The start of a DNS datagram's UDP payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsPrefix {
    /// Bytes of `bytes` filled.
    pub len: u16,
    /// The payload's length by its UDP header.
    pub total: u16,
    pub _pad0: [u8; 4],
    pub bytes: [u8; DNS_PREFIX],
}

/// A record and the DNS payload of its datagram, for a datagram on a DNS port (its flags say `DNS`): only
/// these pay for the copy, and a record of any other datagram keeps its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WithDns<T> {
    pub record: T,
    pub dns: DnsPrefix,
}

/// A destination's flows shown in the current period (`drops::FLOWS_SHOWN`): since when, and how many.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowsShown {
    pub since: u64,
    pub flows: u32,
    pub _pad0: u32,
}

/// What a dropped datagram's count carries besides the count: the largest receive queue seen.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCount {
    pub count: u64,
    pub queued: u32,
    pub _pad0: u32,
}

/// The record a CPU counted last in one generation, and how many times since its epoch began
/// ([`tally`]): the programs count a run of one key here instead of in a hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending<T> {
    pub record: T,
    /// The epoch `count` belongs to; 0 (never an epoch counted in) when the slot holds nothing.
    pub epoch: u32,
    /// For drops, the largest receive queue seen ([`DropCount::queued`]).
    pub queued: u32,
    pub count: u64,
}

/// Indexes of the per-CPU `STATS` counters.
pub mod stat {
    /// The buffer was full: an event was lost.
    pub const LOST: u32 = 0;
    /// A kernel read failed: the event could not be built.
    pub const READ_ERROR: u32 = 1;
    /// The filter options dropped an event.
    pub const FILTERED: u32 = 2;
    /// A socket's creator or connector was not recorded: [`super::OWNER_ENTRIES`] sockets were recorded
    /// and open.
    pub const OWNER_NOT_RECORDED: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// How many open sockets' owners the programs record (`OWNERS`).
pub const OWNER_ENTRIES: u32 = 65_536;

/// ICMP (IPv4) types and codes (`include/uapi/linux/icmp.h`).
pub mod icmp {
    pub const DEST_UNREACH: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETERPROB: u8 = 12;
    /// Codes of `DEST_UNREACH`.
    pub const HOST_UNREACH: u8 = 1;
    pub const PORT_UNREACH: u8 = 3;
    pub const FRAG_NEEDED: u8 = 4;
    pub const NET_ANO: u8 = 9;
    pub const HOST_ANO: u8 = 10;
    pub const PKT_FILTERED: u8 = 13;
}

/// ICMPv6 types and codes (`include/uapi/linux/icmpv6.h`, `include/net/ndisc.h`).
pub mod icmpv6 {
    pub const DEST_UNREACH: u8 = 1;
    pub const PKT_TOOBIG: u8 = 2;
    pub const TIME_EXCEED: u8 = 3;
    pub const PARAMPROB: u8 = 4;
    /// A route update, not an error.
    pub const NDISC_REDIRECT: u8 = 137;
    /// Codes of `DEST_UNREACH`.
    pub const ADM_PROHIBITED: u8 = 1;
    pub const ADDR_UNREACH: u8 = 3;
    pub const PORT_UNREACH: u8 = 4;
}

/// Address families as the kernel spells them (`include/linux/socket.h`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// IP protocol numbers (`include/uapi/linux/in.h`).
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_UDPLITE: u8 = 136;

/// What the kernel did with an ICMP error that reached the UDP layer.
pub mod verdict {
    /// Not known in this mode.
    pub const UNKNOWN: u8 = 0;
    /// `sk_err` set and the socket woken: the application's next call fails.
    pub const DELIVERED: u8 = 1;
    /// A soft error on a connected socket without `IP_RECVERR`: dropped.
    pub const IGNORED_SOFT_ERROR: u8 = 2;
    /// An unconnected socket without `IP_RECVERR`: every error is dropped.
    pub const IGNORED_UNCONNECTED: u8 = 3;
    /// No socket matched the quoted packet.
    pub const NO_SOCKET: u8 = 4;
}

/// Bits of [`SocketError::flags`].
pub mod socket_error_flags {
    /// `icmp_type`, `icmp_code` and `icmp_from` are filled in.
    pub const ICMP_KNOWN: u8 = 1 << 0;
    /// The `RECVERR` bit below was read.
    pub const RECVERR_KNOWN: u8 = 1 << 1;
    /// The error was also queued for `MSG_ERRQUEUE`.
    pub const RECVERR: u8 = 1 << 2;
    /// `remote_addr`/`remote_port` are filled in (a connected socket, or the quoted packet was read).
    pub const REMOTE_KNOWN: u8 = 1 << 3;
    /// `owner` holds the process that created the socket.
    pub const OWNER_KNOWN: u8 = 1 << 4;
    /// The kernel told no socket of the error, and did not say that none matched (it returned 0, or the
    /// mode does not see what it returned): user space looks the quoted 4-tuple up in the namespace's
    /// socket table to say which socket ignored it, and why.
    pub const UNREPORTED: u8 = 1 << 5;
    /// The record is a [`WithDns`](super::WithDns): the quoted datagram is to or from a DNS port, and its
    /// payload is what the ICMP error quotes of it (fentry and kprobe modes).
    pub const DNS: u8 = 1 << 6;
}

/// Bits of [`IcmpSent::flags`].
pub mod icmp_sent_flags {
    /// The offending packet's IP header was read.
    pub const PACKET_KNOWN: u8 = 1 << 0;
    /// Its transport ports were read (UDP, UDP-Lite or TCP).
    pub const PORTS_KNOWN: u8 = 1 << 1;
    /// Seen where the kernel drops the datagram it answers (a `no_socket` drop in tracepoint mode, where no
    /// hook sees `icmpv6_send`): the cause is no listener, and whether a rate limit let the error out is not
    /// seen.
    pub const AT_DROP: u8 = 1 << 4;
    /// `ICMP_SUPPRESSED`: the global token bucket (`icmp_global_allow`) said no.
    pub const SUPPRESSED_GLOBAL: u8 = 1 << 2;
    /// `ICMP_SUPPRESSED`: the per-destination limit (`inet_peer_xrlim_allow`) said no.
    pub const SUPPRESSED_HOST: u8 = 1 << 3;
    /// The record is a [`WithDns`](super::WithDns): the offending datagram is to or from a DNS port.
    pub const DNS: u8 = 1 << 5;
}

pub const TASK_COMM_LEN: usize = 16;

/// Kernel return addresses recorded with each `icmp_sent`, innermost first. The caller that decided to send
/// the ICMP sits a few frames above `__icmp_send` (tracing glue adds up to five frames below it), and a
/// neighbour failure is known three frames above that (`ipv4_send_dest_unreach` <- `ipv4_link_failure` <-
/// `arp_error_report`).
pub const ICMP_STACK_DEPTH: usize = 12;

/// Common to every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u8,
    pub probe: u8,
    /// [`AF_INET`] or [`AF_INET6`], truncated to a byte.
    pub family: u8,
    pub _pad0: u8,
    /// Inode number of the network namespace the event happened in.
    pub netns: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, so suspend does not skew the wall-clock time.
    pub time_ns: u64,
}

/// The process that owns a socket: the one that created it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub tid: u32,
    /// `bpf_get_current_cgroup_id()`: the cgroup v2 id (the inode of its directory).
    pub cgroup_id: u64,
    pub comm: [u8; TASK_COMM_LEN],
}

/// An ICMP error reached (or failed to reach) a UDP socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketError {
    pub header: EventHeader,
    /// Addresses in network byte order; IPv4 uses the first four bytes.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Who sent the ICMP error (may be a router).
    pub icmp_from: [u8; 16],
    /// Ports in host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    /// The positive errno the socket got (`sk->sk_err`), 0 for none.
    pub errno: i32,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub verdict: u8,
    pub flags: u8,
    /// The interface the ICMP error came in on (`skb->dev->ifindex`), 0 if unknown: the socket table is
    /// asked with it, so that a socket bound to a device (`SO_BINDTODEVICE`, a VRF) is the one found.
    pub ifindex: u32,
    /// The socket's inode number (what `/proc/PID/fd` shows as `socket:[N]`), 0 if there is no socket.
    pub sock_ino: u64,
    /// Valid with `OWNER_KNOWN`.
    pub owner: Owner,
}

/// This host emitted (or, as `ICMP_SUPPRESSED`, was stopped from emitting) an ICMP error about `src -> dst`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpSent {
    pub header: EventHeader,
    /// The offending packet's addresses, network byte order.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Its ports, host byte order.
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The offending packet's IP protocol.
    pub proto: u8,
    pub flags: u8,
    /// Bytes of `stack` that `bpf_get_stack` filled, or its negative error.
    pub stack_bytes: i32,
    pub _pad0: [u8; 4],
    /// Kernel return addresses at the hook, innermost first.
    pub stack: [u64; ICMP_STACK_DEPTH],
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
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and arrays with explicit padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: plain `#[repr(C)]` integers and arrays with explicit padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Owner {}
    // SAFETY: as above (the tally maps' keys).
    unsafe impl aya::Pod for super::SocketError {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IcmpSent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UdpDropped {}
    // SAFETY: as above.
    unsafe impl<T: aya::Pod> aya::Pod for super::WithDns<T> {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropCount {}
    // SAFETY: a Pod record followed by integers, none padded (the sizes below).
    unsafe impl<T: aya::Pod> aya::Pod for super::Pending<T> {}
}

/// Compile-time checks that the layouts have no implicit padding (sizes are the sum of the fields).
const _: () = {
    assert!(core::mem::size_of::<EventHeader>() == 16);
    assert!(core::mem::size_of::<SocketError>() == 16 + 48 + 4 + 4 + 4 + 4 + 8 + 32);
    assert!(core::mem::size_of::<IcmpSent>() == 16 + 32 + 4 + 4 + 8 + 8 * ICMP_STACK_DEPTH);
    assert!(core::mem::size_of::<KernelOffsets>() == 27 * 4 + 4 + 5 * 4);
    assert!(core::mem::size_of::<UdpDropped>() == 16 + 32 + 4 + 4 + 8 + 16 + 8 + 16 + 8 + 32);
    assert!(core::mem::size_of::<DropCount>() == 16);
    assert!(core::mem::size_of::<Pending<SocketError>>() == core::mem::size_of::<SocketError>() + 16);
    assert!(core::mem::size_of::<Pending<IcmpSent>>() == core::mem::size_of::<IcmpSent>() + 16);
    assert!(core::mem::size_of::<Pending<UdpDropped>>() == core::mem::size_of::<UdpDropped>() + 16);
    assert!(core::mem::size_of::<AddrFilter>() == 40);
    assert!(core::mem::size_of::<IcmpMask>() == 40);
    assert!(core::mem::size_of::<Filter>() == FILTER_VALUES * (4 + 4 + 4 + 2 + TASK_COMM_LEN + 40) + 2 * 40 + 8);
    assert!(core::mem::size_of::<Config>() == core::mem::size_of::<Filter>() + 8 + 5 * 16 + 8 + 2 * DNS_PORTS);
    assert!(core::mem::size_of::<DnsPrefix>() == 8 + DNS_PREFIX);
    assert!(core::mem::size_of::<WithDns<UdpDropped>>() == core::mem::size_of::<UdpDropped>() + 8 + DNS_PREFIX);
    assert!(core::mem::size_of::<WithDns<IcmpSent>>() == core::mem::size_of::<IcmpSent>() + 8 + DNS_PREFIX);
};
