//! What user space tells the programs before load: the read-only global `CONFIG`.

use crate::{filter::Filter, record::dns::DNS_PORTS};

/// A kernel function's text, `[start, end)`, from `/proc/kallsyms`; all zero when it is not known.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextRange {
    pub start: u64,
    pub end: u64,
}

/// The kernel functions that call `sk_error_report()` for something other than an ICMP error reaching the
/// socket, in this order (net/core/skbuff.c, net/ipv4/udp.c): tracepoint mode's `sock:inet_sk_error_report`
/// fires for them too, and skips a report one of them made.
/// - `sock_queue_err_skb`: an error queued for `MSG_ERRQUEUE` (with IP_RECVERR, `ip_icmp_error()` queues
///   the ICMP error there first; `__udp4_lib_err` then reports it again with `sk_err` set, and that report is
///   the one kept);
/// - `sock_dequeue_err_skb`: a `MSG_ERRQUEUE` read that leaves more errors queued;
/// - `udp_abort`: `ss -K` or `bpf_sock_destroy()`;
/// - `__msg_zerocopy_callback`, `msg_zerocopy_complete`: a `MSG_ZEROCOPY` completion.
pub const NOT_ICMP_REPORTERS: [&str; 5] =
    ["sock_queue_err_skb", "sock_dequeue_err_skb", "udp_abort", "__msg_zerocopy_callback", "msg_zerocopy_complete"];

/// What user space tells the programs before load (the read-only global `CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub filter: Filter,
    /// A [`buffer`](crate::buffer) constant.
    pub buffer: u8,
    pub _pad0: [u8; 3],
    /// A tick of `jiffies` in ns (`TICK_NSEC`, the resolution of `CLOCK_MONOTONIC_COARSE`), for the drop
    /// program's flood path, which reads `jiffies` rather than the clock; 0 if not known: that path is then
    /// never taken.
    pub tick_ns: u32,
    /// The text of [`NOT_ICMP_REPORTERS`], in that order.
    pub not_icmp_reporters: [TextRange; 5],
    /// `SKB_DROP_REASON_NO_SOCKET` in this kernel's `enum skb_drop_reason`
    /// ([`drops::NO_REASON`](crate::drops::NO_REASON) if none).
    pub reason_no_socket: u32,
    /// How many arguments `skb:kfree_skb` has: 2 (skb, location; before 5.17), 3 (reason), 4 (`rx_sk`, 6.11).
    pub kfree_skb_args: u8,
    pub n_dns_ports: u8,
    /// `--pcap-snaplen` (at most [`PACKET_MAX`](crate::PACKET_MAX)) with `--pcap`, else 0: the programs copy
    /// no packet.
    pub pcap_snaplen: u16,
    /// [`DNS_PORTS`] slots, the first `n_dns_ports` in use.
    pub dns_ports: [u16; DNS_PORTS],
}

// SAFETY: plain `#[repr(C)]` integers and arrays with explicit padding; every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Config {}

/// No implicit padding: the size is the sum of the fields.
const _: () = assert!(size_of::<Config>() == size_of::<Filter>() + 8 + 5 * 16 + 8 + 2 * DNS_PORTS);
