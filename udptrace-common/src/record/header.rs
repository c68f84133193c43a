//! What every record starts with: which record it is, and which attach mode produced it.

/// Every record in the ring buffer starts with an [`EventHeader`]; `kind` says which record follows.
pub mod kind {
    pub const SOCKET_ERROR: u8 = 1;
    pub const ICMP_SENT: u8 = 2;
    /// An [`IcmpSent`](crate::IcmpSent) record for an ICMP error a rate limit stopped.
    pub const ICMP_SUPPRESSED: u8 = 3;
    /// A [`UdpDropped`](crate::UdpDropped) record: the kernel dropped a UDP datagram.
    pub const UDP_DROPPED: u8 = 4;
}

/// The attach mode of the hook that produced a record.
pub mod probe {
    pub const FENTRY: u8 = 1;
    pub const KPROBE: u8 = 2;
    pub const TRACEPOINT: u8 = 3;
}

/// Common to every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u8,
    pub probe: u8,
    /// [`AF_INET`](crate::AF_INET) or [`AF_INET6`](crate::AF_INET6), truncated to a byte.
    pub family: u8,
    pub _pad0: u8,
    /// Inode number of the network namespace the event happened in.
    pub netns: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, so suspend does not skew the wall-clock time.
    pub time_ns: u64,
}

/// No implicit padding: the size is the sum of the fields.
const _: () = assert!(size_of::<EventHeader>() == 16);
