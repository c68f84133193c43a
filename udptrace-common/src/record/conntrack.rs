//! The conntrack entry of a datagram whose connection conntrack translated (DNAT, SNAT, masquerade), carried
//! in the records of the kinds that have a packet: the flow as its sender addressed it and as conntrack
//! expects it back, read from the kernel's `struct nf_conn` on the error and drop paths only.

/// `struct nf_conntrack_tuple` (include/net/netfilter/nf_conntrack_tuple.h), as every kernel from 2.6.x to
/// 7.x lays it out: the programs copy the kernel's bytes here as they are. The loader checks the running
/// kernel's BTF against this layout (`CtTuple`'s offsets) before it hands the programs the offsets of
/// `struct nf_conn`; a kernel that disagrees gets no conntrack field, never a misread one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtTuple {
    /// `src.u3`: the source address, network byte order; IPv4 uses the first four bytes.
    pub src_addr: [u8; 16],
    /// `src.u.udp.port`, network byte order.
    pub src_port: [u8; 2],
    /// `src.l3num`: [`AF_INET`](crate::AF_INET) or [`AF_INET6`](crate::AF_INET6).
    pub l3num: u16,
    /// `dst.u3`.
    pub dst_addr: [u8; 16],
    /// `dst.u.udp.port`, network byte order.
    pub dst_port: [u8; 2],
    /// `dst.protonum`.
    pub protonum: u8,
    /// `dst.dir`.
    pub dir: u8,
}

const _: () = assert!(size_of::<CtTuple>() == 40);

/// Where a [`CtTuple`]'s members sit, for the loader to compare with the kernel's BTF:
/// `(path in struct nf_conntrack_tuple, offset)`.
pub const CT_TUPLE_LAYOUT: [(&str, u32); 6] =
    [("src.u3", 0), ("src.u", 16), ("src.l3num", 18), ("dst.u3", 20), ("dst.u", 36), ("dst.protonum", 38)];

/// Bits of `nf_conn.status` (`enum ip_conntrack_status`, include/uapi/linux/netfilter/nf_conntrack_common.h,
/// the same numbers in every kernel: it is the ABI ctnetlink speaks).
pub mod ct_status {
    /// `IPS_SEEN_REPLY`: conntrack saw a packet in the reply direction (`conntrack -L` shows `[UNREPLIED]`
    /// until then).
    pub const SEEN_REPLY: u16 = 1 << 1;
    /// `IPS_SRC_NAT`, `IPS_DST_NAT`: the connection's source, destination is translated.
    pub const SRC_NAT: u16 = 1 << 4;
    pub const DST_NAT: u16 = 1 << 5;
    pub const NAT: u16 = SRC_NAT | DST_NAT;
    /// `IPS_TEMPLATE`: a template a rule attached (a zone, a helper), not a connection.
    pub const TEMPLATE: u16 = 1 << 11;
    /// `IPS_UNTRACKED` (the untracked object of kernels before 4.12; later ones leave the pointer null).
    pub const UNTRACKED: u16 = 1 << 12;
}

/// Bits of [`Conntrack::flags`].
pub mod conntrack_flags {
    /// The packet's connection is translated: the tuples and status are filled in.
    pub const KNOWN: u8 = 1 << 0;
    /// `mark` was read (the kernel has CONFIG_NF_CONNTRACK_MARK).
    pub const MARK_KNOWN: u8 = 1 << 1;
    /// The program read the packet's entry: without `KNOWN`, conntrack tracked the packet and did not
    /// translate its connection, and there is nothing to ask conntrack afterwards. Without this bit the
    /// packet carried no entry (conntrack did not see it in this namespace, or a veth crossing reset it), or
    /// this kernel's entries are not readable.
    pub const TRACKED: u8 = 1 << 2;
}

/// A translated connection's entry: zeros (no `KNOWN`) when the datagram's connection was not translated,
/// conntrack did not track it, or this kernel's conntrack is not readable.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conntrack {
    /// `tuplehash[IP_CT_DIR_ORIGINAL].tuple`: the flow as its sender addressed it.
    pub original: CtTuple,
    /// `tuplehash[IP_CT_DIR_REPLY].tuple`: what conntrack expects back.
    pub reply: CtTuple,
    /// `nf_conn.mark`, with `MARK_KNOWN`.
    pub mark: u32,
    /// The low bits of `nf_conn.status` ([`ct_status`]).
    pub status: u16,
    pub flags: u8,
    pub _pad0: u8,
}

const _: () = assert!(size_of::<Conntrack>() == 2 * 40 + 8);

/// Where the programs find a connection's members in `struct nf_conn`, which lies in the `nf_conntrack`
/// module on most kernels: written into the `CONNTRACK` map by user space when that module's BTF appears
/// (at start, or later when something loads the module), not frozen before load as
/// [`KernelOffsets`](crate::KernelOffsets) are.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackOffsets {
    /// 1 once the others are written; until then the programs read no entry.
    pub ready: u32,
    /// `nf_conn.status` (an `unsigned long`: its low bits are read).
    pub status: u32,
    /// `nf_conn.tuplehash[0].tuple`, `nf_conn.tuplehash[1].tuple`.
    pub original: u32,
    pub reply: u32,
    /// `nf_conn.mark`, or [`CT_UNKNOWN`] without CONFIG_NF_CONNTRACK_MARK.
    pub mark: u32,
    pub _pad0: u32,
}

const _: () = assert!(size_of::<ConntrackOffsets>() == 24);

/// An offset that is not in this kernel: [`ConntrackOffsets::mark`], and
/// [`KernelOffsets::skb_nfct`](crate::KernelOffsets::skb_nfct) in a kernel without conntrack.
pub const CT_UNKNOWN: u32 = u32::MAX;

/// `NFCT_INFOMASK` (include/linux/skbuff.h): the low bits of `sk_buff._nfct` are the packet's
/// `ip_conntrack_info`, the rest the `struct nf_conn *` (null for none or untracked).
pub const NFCT_INFOMASK: u64 = 7;

// SAFETY: plain `#[repr(C)]` integers and arrays with explicit padding; every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Conntrack {}
// SAFETY: as above.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ConntrackOffsets {}
