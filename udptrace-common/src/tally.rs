//! Counting in the kernel: when only counts are wanted (`--summary`, `--quiet`, `--metrics --quiet`), a
//! record is not handed over but counted, keyed by the record itself, its time zeroed. The `TALLY` array's
//! one value says where: [`STREAM`] (every record to the buffer, the state after load), or the epoch counted
//! in, a number user space raises by one at each read; its low bit is the generation ([`generation`]). Each
//! CPU counts a run of one ICMP error or drop in its [`Pending`] slot of the generation (a compare and an add:
//! a flood is mostly one key), and a key that differs from the slot's moves the slot's count into the
//! generation's per-CPU hash map first. User space switches the epoch, waits until no program can still be
//! counting in the old one (an RCU grace period), then reads the old generation's map and the slots stamped
//! with the old epoch, and empties the map. A record that finds its generation full goes to the buffer
//! instead; a slot's count that finds it full is counted lost.

/// Records go to the buffer.
pub const STREAM: u32 = 0;

/// The generation (`*_0` or `*_1` maps, pending slot 0 or 1) an epoch counts in.
#[inline(always)]
pub const fn generation(epoch: u32) -> u32 {
    epoch & 1
}

/// Distinct records one generation of one record type holds (per-CPU counts: 8 bytes per entry and CPU).
pub const ENTRIES: u32 = 2048;

/// The record a CPU counted last in one generation, and how many times since its epoch began: the programs
/// count a run of one key here instead of in a hash map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pending<T> {
    pub record: T,
    /// The epoch `count` belongs to; 0 (never an epoch counted in) when the slot holds nothing.
    pub epoch: u32,
    /// For drops, the largest receive queue seen ([`DropCount::queued`](crate::DropCount::queued)).
    pub queued: u32,
    pub count: u64,
}

// SAFETY: a Pod record followed by integers, none padded (the sizes below).
#[cfg(feature = "user")]
unsafe impl<T: aya::Pod> aya::Pod for Pending<T> {}

/// The counts follow the record without a hole.
const _: () = {
    use crate::record::{icmp_sent::IcmpSent, socket_error::SocketError, udp_dropped::UdpDropped};
    assert!(size_of::<Pending<SocketError>>() == size_of::<SocketError>() + 16);
    assert!(size_of::<Pending<IcmpSent>>() == size_of::<IcmpSent>() + 16);
    assert!(size_of::<Pending<UdpDropped>>() == size_of::<UdpDropped>() + 16);
};
