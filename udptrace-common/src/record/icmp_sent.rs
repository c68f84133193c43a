//! `icmp_sent`: this host emitted (or a rate limit stopped it from emitting) an ICMP error.

use super::{conntrack::Conntrack, header::EventHeader};

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
    /// The record is a [`WithDns`](crate::WithDns): the offending datagram is to or from a DNS port.
    pub const DNS: u8 = 1 << 5;
    /// The offending packet follows the record (and its DNS payload): a [`PacketHead`](crate::PacketHead)
    /// and its bytes (`--pcap`).
    pub const PACKET: u8 = 1 << 6;
}

/// Kernel return addresses recorded with each `icmp_sent`, innermost first. The caller that decided to send
/// the ICMP sits a few frames above `__icmp_send` (tracing glue adds up to five frames below it), and a
/// neighbour failure is known three frames above that (`ipv4_send_dest_unreach` <- `ipv4_link_failure` <-
/// `arp_error_report`).
pub const ICMP_STACK_DEPTH: usize = 12;

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
    /// The offending packet's conntrack entry.
    pub conntrack: Conntrack,
}

// SAFETY: plain `#[repr(C)]` integers and arrays with explicit padding; every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for IcmpSent {}

/// No implicit padding: the size is the sum of the fields.
const _: () = assert!(size_of::<IcmpSent>() == 16 + 32 + 4 + 4 + 8 + 8 * ICMP_STACK_DEPTH + 88);
