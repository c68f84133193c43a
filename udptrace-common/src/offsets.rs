//! Where the members the programs read sit in the running kernel's structures, for the programs to read
//! them without CO-RE.

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
    /// `sk_buff._nfct`: the packet's conntrack entry and its `ip_conntrack_info`
    /// ([`NFCT_INFOMASK`](crate::NFCT_INFOMASK)), or [`CT_UNKNOWN`](crate::CT_UNKNOWN) in a kernel built
    /// without conntrack (the member is there only with CONFIG_NF_CONNTRACK, include/linux/skbuff.h).
    pub skb_nfct: u32,
    /// `task_struct.group_leader` and `task_struct.comm`: the name of the process a thread belongs to.
    pub task_group_leader: u32,
    pub task_comm: u32,
}

/// [`KernelOffsets::recverr4_at`] or `recverr6_at` when the flag is not found.
pub const RECVERR_UNKNOWN: u32 = u32::MAX;

// SAFETY: plain `#[repr(C)]` integers with explicit padding; every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}

/// No implicit padding: the size is the sum of the fields.
const _: () = assert!(size_of::<KernelOffsets>() == 27 * 4 + 4 + 8 * 4);
