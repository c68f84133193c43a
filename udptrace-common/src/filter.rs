//! The filter options (`--pid`, `--netns`, `--errno`, `--port`, `--comm`, `--addr`), as the programs test
//! them before a record takes buffer space.

use crate::record::owner::TASK_COMM_LEN;

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

/// No implicit padding: the sizes are the sums of the fields.
const _: () = {
    assert!(size_of::<AddrFilter>() == 40);
    assert!(size_of::<IcmpMask>() == 40);
    assert!(size_of::<Filter>() == FILTER_VALUES * (4 + 4 + 4 + 2 + TASK_COMM_LEN + 40) + 2 * 40 + 8);
};
