//! What user space writes into the programs' read-only data before load: the kernel's layout (the offsets
//! of the members the programs read), the filter, and the rest of the configuration.

/// The ports (host byte order) whose datagrams are DNS: `--dns-port`, 53 by default.
pub const DNS_PORTS: usize = 8;

/// Byte offsets of the kernel structure members the programs read, resolved from the running kernel's BTF
/// by user space and written into the programs' read-only data before load. Rust eBPF gets no CO-RE
/// relocations, so nothing here is hard-coded for one kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct sock` (its `struct sock_common __sk_common` included).
    pub sk_family: u32,
    pub sk_num: u32,
    pub sk_dport: u32,
    pub sk_rcv_saddr: u32,
    pub sk_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    /// `__sk_common.skc_net.net`: the `struct net *`.
    pub sk_net: u32,
    pub sk_err: u32,
    pub sk_protocol: u32,
    /// `__sk_common.skc_state`: TCP_ESTABLISHED (1) for a connected UDP socket.
    pub sk_state: u32,
    /// `__sk_common.skc_cookie`: the socket's cookie, once something asked for it (the program that records
    /// a socket's creator does).
    pub sk_cookie: u32,
    /// `sock.sk_socket`, then the socket's inode (`SOCK_INODE()`: `struct socket_alloc` holds the socket and
    /// its inode side by side, so the inode is at a fixed distance from the socket), then `inode.i_ino`: from a
    /// socket to its inode number in two reads.
    pub sk_socket: u32,
    /// `offsetof(struct socket_alloc, vfs_inode) - offsetof(struct socket_alloc, socket)`.
    pub socket_to_inode: u32,
    pub inode_ino: u32,
    /// `struct net`: `ns.inum`.
    pub net_inum: u32,
    /// `struct sk_buff`.
    pub skb_head: u32,
    pub skb_data: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    /// `struct net_device`: `nd_net.net`, `ifindex`.
    pub dev_net: u32,
    pub dev_ifindex: u32,
    /// IP_RECVERR, which decides for an ICMP error: the byte of `struct sock` (its `struct inet_sock`) that
    /// holds the bit ([`RECVERR_UNKNOWN`] if the BTF does not show it), and the bit.
    pub recverr4_at: u32,
    /// IPV6_RECVERR, for an ICMPv6 error: the byte that holds it, in the sock, or with `recverr6_in_pinfo` in
    /// the `struct ipv6_pinfo` that `inet_sock.pinet6` points to.
    pub recverr6_at: u32,
    pub pinet6: u32,
    pub recverr4_bit: u8,
    pub recverr6_bit: u8,
    pub recverr6_in_pinfo: u8,
    pub _pad0: u8,
    /// `sk_buff.protocol` (`__be16`), `sk_buff.skb_iif`; `sock.sk_rcvbuf`, `sock.sk_backlog.rmem_alloc`.
    pub skb_protocol: u32,
    pub skb_iif: u32,
    pub sk_rcvbuf: u32,
    pub sk_rmem_alloc: u32,
    /// `sk_buff.tail`: where its linear data ends, as an offset from `head` (`sk_buff_data_t` on 64-bit).
    pub skb_tail: u32,
}

/// [`KernelOffsets::recverr4_at`] or `recverr6_at` when the flag is not found.
pub const RECVERR_UNKNOWN: u32 = u32::MAX;

/// At most this many values per filter option. The programs test each slot without a loop (kernels
/// before 6.x reject the loops the compiler makes of these tests), so this is fixed at 8.
pub const FILTER_VALUES: usize = 8;

/// One `--addr IP[/LEN]`: `addr` in network byte order with the host bits cleared, `mask` the prefix's
/// network bits (IPv4 in the first four bytes of each).
///
/// 8-byte aligned, so that the programs read the address and mask as whole words (a byte-wise copy spills
/// to the stack, which the 6.1 verifier limits to 512 bytes).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrFilter {
    pub addr: [u8; 16],
    pub mask: [u8; 16],
    /// [`AF_INET`](crate::AF_INET) or [`AF_INET6`](crate::AF_INET6).
    pub family: u16,
    pub prefix_len: u8,
    pub _pad0: [u8; 5],
}

/// Which ICMP errors map to one of the `--errno` values, per family: a bit per code of the
/// destination-unreachable type (ICMP type 3, ICMPv6 type 1; codes of 63 and above share bit 63), and a bit
/// per other type, whatever its code. Built in user space from the kernel's conversion tables.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpMask {
    pub unreach_codes: u64,
    pub types: [u64; 4],
}

/// The filter options. A count of 0 means that option is not given; values of one option are alternatives
/// (OR), options combine with AND. The programs drop an event only when they know it fails: what they
/// cannot see (an owner not recorded yet) is left to user space, which applies the same filter again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: [u32; FILTER_VALUES],
    pub netns: [u32; FILTER_VALUES],
    pub errnos: [i32; FILTER_VALUES],
    pub ports: [u16; FILTER_VALUES],
    /// Task names, NUL-padded, as two native-endian words each (read as words, like `AddrFilter`).
    pub comms: [[u64; 2]; FILTER_VALUES],
    pub addrs: [AddrFilter; FILTER_VALUES],
    /// Indexed by 0 for IPv4, 1 for IPv6.
    pub icmp: [IcmpMask; 2],
    pub n_pids: u8,
    pub n_netns: u8,
    pub n_errnos: u8,
    pub n_ports: u8,
    pub n_comms: u8,
    pub n_addrs: u8,
    pub _pad0: [u8; 2],
}

/// Where records go.
pub mod buffer {
    /// The BPF ring buffer (`EVENTS`, 5.8+): one buffer shared by every CPU, records in order.
    pub const RING: u8 = 0;
    /// The per-CPU perf event array (`PERF_EVENTS`).
    pub const PERF: u8 = 1;
}

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
    /// A [`buffer`] constant.
    pub buffer: u8,
    pub _pad0: [u8; 7],
    /// The text of [`NOT_ICMP_REPORTERS`], in that order.
    pub not_icmp_reporters: [TextRange; 5],
    /// `SKB_DROP_REASON_NO_SOCKET` in this kernel's `enum skb_drop_reason`
    /// ([`drops::NO_REASON`](crate::drops::NO_REASON) if none).
    pub reason_no_socket: u32,
    /// How many arguments `skb:kfree_skb` has: 2 (skb, location; before 5.17), 3 (reason), 4 (`rx_sk`, 6.11).
    pub kfree_skb_args: u8,
    pub n_dns_ports: u8,
    pub _pad1: [u8; 2],
    /// [`DNS_PORTS`] slots, the first `n_dns_ports` in use.
    pub dns_ports: [u16; DNS_PORTS],
}
