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

/// A record that can be counted: its two generations of counts, and its time, which is not part of the key.
pub(crate) trait Tallied: Sized + 'static {
    fn generations() -> (&'static PerCpuHashMap<Self, u64>, &'static PerCpuHashMap<Self, u64>);
    fn time(&mut self) -> &mut u64;
}

impl Tallied for SocketError {
    #[inline(always)]
    fn generations() -> (&'static PerCpuHashMap<Self, u64>, &'static PerCpuHashMap<Self, u64>) {
        (&SOCKET_ERRORS_0, &SOCKET_ERRORS_1)
    }

    #[inline(always)]
    fn time(&mut self) -> &mut u64 {
        &mut self.header.time_ns
    }
}

impl Tallied for IcmpSent {
    #[inline(always)]
    fn generations() -> (&'static PerCpuHashMap<Self, u64>, &'static PerCpuHashMap<Self, u64>) {
        (&ICMP_SENT_0, &ICMP_SENT_1)
    }

    #[inline(always)]
    fn time(&mut self) -> &mut u64 {
        &mut self.header.time_ns
    }
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
    let time = core::mem::replace(record.time(), 0);
    let counted = add(map, record);
    if !counted {
        *record.time() = time;
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
