//! Counting in the kernel (`udptrace_common::tally`): when only counts are wanted, a record is counted in a
//! hash map keyed by the record itself instead of being handed over. A flood of one error is then one map
//! update per error and one key for user space to read each second, not a buffer record, a wake-up and a
//! decode per error.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, PerCpuHashMap},
};
use udptrace_common::{IcmpSent, SocketError, tally};

use crate::filter::config;

/// Where records go: `tally::STREAM`, or the generation they are counted in. User space writes it.
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

/// A record that can be counted: its two generations of counts, and what is not part of its key.
pub(crate) trait Tallied: Sized + 'static {
    /// What `coarsen` takes out, to put back if the record is handed over after all.
    type Detail: Copy;
    fn generations() -> (&'static PerCpuHashMap<Self, u64>, &'static PerCpuHashMap<Self, u64>);
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
    fn coarsen(&mut self) -> Self::Detail {
        let detail = (self.header.time_ns, self.src, self.sport);
        self.header.time_ns = 0;
        if config!(filter.n_addrs) == 0 && config!(filter.n_ports) == 0 {
            self.src = [0; 16];
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
    matches!(TALLY.get(0).copied(), Some(tally::GENERATION_0 | tally::GENERATION_1))
}

/// Counts `record` if user space asked for counts; `false`: it is to be handed over (counts not asked for,
/// or this generation is full). `record` lives in a per-CPU map slot, so it serves as the key as it is.
#[inline(always)]
pub(crate) fn count<T: Tallied>(record: &mut T) -> bool {
    let (first, second) = T::generations();
    let map = match TALLY.get(0).copied() {
        Some(tally::GENERATION_0) => first,
        Some(tally::GENERATION_1) => second,
        _ => return false,
    };
    let detail = record.coarsen();
    let counted = add(map, record);
    if !counted {
        record.restore(detail);
    }
    counted
}

/// Counts in this CPU's value of `key` (per-CPU, so no atomic add is needed: the programs that emit do not
/// nest on one CPU, as `kernel::slot` says).
#[inline(always)]
fn add<T>(map: &PerCpuHashMap<T, u64>, key: &T) -> bool {
    if increment(map, key) {
        return true;
    }
    // Not counted yet in this generation: inserted with this CPU's count 1, the others' 0. Another CPU may
    // insert it first (the insert fails with EEXIST, and this CPU's value of that entry is counted); a full
    // map fails both.
    map.insert(key, &1, u64::from(BPF_NOEXIST)).is_ok() || increment(map, key)
}

#[inline(always)]
fn increment<T>(map: &PerCpuHashMap<T, u64>, key: &T) -> bool {
    match map.get_ptr_mut(key) {
        Some(count) => {
            // SAFETY: this CPU's value for `key`, valid for the program's run.
            unsafe { *count += 1 };
            true
        }
        None => false,
    }
}
