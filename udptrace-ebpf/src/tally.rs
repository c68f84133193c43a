//! Counting in the kernel (`udptrace_common::tally`): when only counts are wanted, a record is counted,
//! keyed by the record itself, instead of being handed over. A flood of one error is then a compare and an
//! add in this CPU's pending slot per error, and one key for user space to read each second, not a buffer
//! record, a wake-up and a decode per error; another key moves the slot's count into a per-CPU hash map
//! (hashing a record of about 250 bytes costs more than the rest of a run).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap},
};
use udptrace_common::{IcmpSent, Pending, SocketError, tally};

use crate::{
    filter::config,
    kernel::{copy, zero},
};

/// Where records go: `tally::STREAM`, or the epoch they are counted in. User space writes it.
#[map]
static TALLY: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static SOCKET_ERRORS_0: PerCpuHashMap<SocketError, u64> = PerCpuHashMap::with_max_entries(tally::ENTRIES, 0);
#[map]
static SOCKET_ERRORS_1: PerCpuHashMap<SocketError, u64> = PerCpuHashMap::with_max_entries(tally::ENTRIES, 0);
#[map]
static ICMP_SENT_0: PerCpuHashMap<IcmpSent, u64> = PerCpuHashMap::with_max_entries(tally::ENTRIES, 0);
#[map]
static ICMP_SENT_1: PerCpuHashMap<IcmpSent, u64> = PerCpuHashMap::with_max_entries(tally::ENTRIES, 0);

/// Each CPU's last key and its count, per generation.
#[map]
static ICMP_SENT_PENDING: PerCpuArray<Pending<IcmpSent>> = PerCpuArray::with_max_entries(2, 0);

/// A record that can be counted: its two generations of counts, and what is not part of its key.
pub(crate) trait Tallied: Copy + 'static {
    /// What `coarsen` takes out, to put back if the record is handed over after all.
    type Detail: Copy;
    fn generations() -> (&'static PerCpuHashMap<Self, u64>, &'static PerCpuHashMap<Self, u64>);
    /// Where runs of one key are counted, if they are. Not for socket errors: their tracepoint program has no
    /// stack to spare for it (6.1 refused it with every filter set: "combined stack size of 3 calls is 544"),
    /// and a socket error flood is the errors one socket is given, fewer than those sent.
    fn pending() -> Option<&'static PerCpuArray<Pending<Self>>>;
    /// Clears what varies from one error to the next and no count needs: the time, and whatever else.
    fn coarsen(&mut self) -> Self::Detail;
    fn restore(&mut self, detail: Self::Detail);
}

/// A socket error keeps its socket's 4-tuple: an unreported one is looked up by it.
impl Tallied for SocketError {
    type Detail = u64;

    #[inline(always)]
    fn generations() -> (&'static PerCpuHashMap<Self, u64>, &'static PerCpuHashMap<Self, u64>) {
        (&SOCKET_ERRORS_0, &SOCKET_ERRORS_1)
    }

    #[inline(always)]
    fn pending() -> Option<&'static PerCpuArray<Pending<Self>>> {
        None
    }

    #[inline(always)]
    fn coarsen(&mut self) -> u64 {
        core::mem::replace(&mut self.header.time_ns, 0)
    }

    #[inline(always)]
    fn restore(&mut self, time: u64) {
        self.header.time_ns = time;
    }
}

/// An ICMP error this host sends is counted by what it is about (the destination the offending packet was
/// for, the type, the cause's stack), not by who sent that packet: a scan or a flood from many source ports is
/// then a handful of keys, not one per packet. Kept when `--addr` or `--port` is given, which user space
/// checks again on the source too.
impl Tallied for IcmpSent {
    type Detail = (u64, [u8; 16], u16);

    #[inline(always)]
    fn generations() -> (&'static PerCpuHashMap<Self, u64>, &'static PerCpuHashMap<Self, u64>) {
        (&ICMP_SENT_0, &ICMP_SENT_1)
    }

    #[inline(always)]
    fn pending() -> Option<&'static PerCpuArray<Pending<Self>>> {
        Some(&ICMP_SENT_PENDING)
    }

    #[inline(always)]
    fn coarsen(&mut self) -> Self::Detail {
        let detail = (self.header.time_ns, self.src, self.sport);
        self.header.time_ns = 0;
        if config!(filter.n_addrs) == 0 && config!(filter.n_ports) == 0 {
            zero(&mut self.src);
            self.sport = 0;
        }
        detail
    }

    #[inline(always)]
    fn restore(&mut self, (time, src, sport): Self::Detail) {
        self.header.time_ns = time;
        self.src = src;
        self.sport = sport;
    }
}

/// Whether user space asked for counts only.
#[inline(always)]
pub(crate) fn counting() -> bool {
    matches!(TALLY.get(0).copied(), Some(epoch) if epoch != tally::STREAM)
}

/// Counts `record` if user space asked for counts; `false`: it is to be handed over (counts not asked for,
/// or this generation is full). `record` lives in a per-CPU map slot, so it serves as the key as it is.
#[inline(always)]
pub(crate) fn count<T: Tallied>(record: &mut T) -> bool {
    let epoch = match TALLY.get(0).copied() {
        Some(epoch) if epoch != tally::STREAM => epoch,
        _ => return false,
    };
    let (first, second) = T::generations();
    let generation = tally::generation(epoch);
    let map = if generation == 0 { first } else { second };
    let detail = record.coarsen();
    let slot = T::pending().and_then(|slots| slots.get_ptr_mut(generation));
    let counted = match slot {
        // SAFETY: this CPU's slot; the programs that count here do not nest on one CPU (`kernel::slot`).
        Some(slot) => count_in_slot(unsafe { &mut *slot }, epoch, record, 0, |key, n, _| add(map, key, n)),
        None => add(map, record, 1),
    };
    if !counted {
        record.restore(detail);
    }
    counted
}

/// Counts one `record` in `slot`, this CPU's for `epoch`'s generation: a compare and an add when it is the
/// slot's key. Another key's count of this epoch is first moved on by `flush(key, count, queued)` (into the
/// generation's hash map); `false` when that finds the map full: the slot keeps its count, and `record` is
/// to be handed over. A slot of an older epoch was read by user space already and is taken over.
#[inline(always)]
pub(crate) fn count_in_slot<T: Copy>(
    slot: &mut Pending<T>,
    epoch: u32,
    record: &T,
    queued: u32,
    flush: impl FnOnce(&T, u64, u32) -> bool,
) -> bool {
    if slot.epoch == epoch {
        if same_key(&slot.record, record) {
            slot.count += 1;
            if queued > slot.queued {
                slot.queued = queued;
            }
            return true;
        }
        if slot.count > 0 && !flush(&slot.record, slot.count, slot.queued) {
            return false;
        }
    }
    copy(&mut slot.record, record);
    slot.epoch = epoch;
    slot.queued = queued;
    slot.count = 1;
    true
}

/// Whether two records are one key: every 8-byte word compared, without a branch per word (a byte-wise
/// compare is a call to a loop, which the verifier must prove ends: refused on 6.1, "back-edge").
#[inline(always)]
pub(crate) fn same_key<T>(a: &T, b: &T) -> bool {
    const { assert!(size_of::<T>() % 8 == 0) };
    let (a, b) = ((a as *const T).cast::<u64>(), (b as *const T).cast::<u64>());
    let mut differ = 0u64;
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        // SAFETY: both records are `size_of::<T>()` bytes, 8-aligned (map values and their records).
        differ |= unsafe { a.add(i).read() ^ b.add(i).read() };
        i += 1;
    }
    differ == 0
}

/// Adds `n` to this CPU's value of `key` (per-CPU, so no atomic add is needed: the programs that count do
/// not nest on one CPU, as `kernel::slot` says).
#[inline(always)]
fn add<T>(map: &PerCpuHashMap<T, u64>, key: &T, n: u64) -> bool {
    if increment(map, key, n) {
        return true;
    }
    // Not counted yet in this generation: inserted with this CPU's count n, the others' 0. Another CPU may
    // insert it first (the insert fails with EEXIST, and this CPU's value of that entry is counted); a full
    // map fails both.
    map.insert(key, &n, u64::from(BPF_NOEXIST)).is_ok() || increment(map, key, n)
}

#[inline(always)]
fn increment<T>(map: &PerCpuHashMap<T, u64>, key: &T, n: u64) -> bool {
    match map.get_ptr_mut(key) {
        Some(count) => {
            // SAFETY: this CPU's value for `key`, valid for the program's run.
            unsafe { *count += n };
            true
        }
        None => false,
    }
}
