//! How a record leaves the programs: the buffer `--buffer` chose, the counters in `STATS`, and a failed
//! read reported. Every program file hands its records and failures over through here.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_CURRENT_CPU, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_perf_event_output, bpf_ringbuf_output},
    macros::map,
    maps::{Array, PerCpuArray, PerfEventByteArray, RingBuf},
};
use udptrace_common::{buffer, stat};

use crate::{filter::config, kernel::ReadResult, tally};

/// Events for user space (`--buffer ring`, the default). 1 MiB holds about 4,000 `icmp_sent` or 7,000
/// `socket_error` records.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Bytes waiting in `EVENTS` that make a record wake the reader: a sixteenth of the buffer.
const WAKEUP_BYTES: u64 = 64 << 10;

/// Events for user space with `--buffer perf`: one perf buffer per CPU.
#[map]
static PERF_EVENTS: PerfEventByteArray = PerfEventByteArray::new(0);

/// 1 once user space stops (`udptrace_common::names::OUTPUT_STOPPED`).
#[map]
static OUTPUT_STOPPED: Array<u32> = Array::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `udptrace_common::stat`.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[inline(always)]
pub(crate) fn count(stat: u32) {
    if let Some(counter) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, and programs do not nest on one CPU for these hooks.
        unsafe { *counter += 1 };
    }
}

/// Hands `record` to user space through the buffer `--buffer` chose; a full buffer is counted here.
#[inline(always)]
pub(crate) fn output<C: EbpfContext, T>(ctx: &C, record: &T) {
    output_bytes(ctx, core::ptr::from_ref(record).cast(), || size_of::<T>() as u64);
}

/// Hands the `size()` bytes at `data` to user space, as [`output`] does a record: a record and the packet after
/// it (`packet.rs`). `size` is evaluated at the helper's call, so that a size the verifier must see bounded is
/// bounded there: 5.10's bounds the register it compared, not a copy the compiler spilled to the stack and
/// reloads for the call.
#[inline(always)]
pub(crate) fn output_bytes<C: EbpfContext>(ctx: &C, data: *const u8, size: impl Fn() -> u64) {
    // Stopping: user space drains what the buffer holds, and no more comes; this one is lost, and counted.
    if OUTPUT_STOPPED.get(0).is_some_and(|stopped| *stopped != 0) {
        count(stat::LOST);
        return;
    }
    let full = if config!(buffer) == buffer::PERF {
        // aya's `PerfEventByteArray::output` drops the helper's result, and a perf buffer reports its
        // losses only with the next record that fits, which may never come: call the helper to count them.
        // SAFETY: the map pointer is PERF_EVENTS itself (`repr(transparent)` over its definition), and `data`
        // is `size()` plain bytes, read for the copy only.
        unsafe {
            bpf_perf_event_output(
                ctx.as_ptr(),
                core::ptr::addr_of!(PERF_EVENTS).cast_mut().cast(),
                BPF_F_CURRENT_CPU,
                data.cast_mut().cast(),
                size(),
            ) < 0
        }
    } else {
        // Waking the reader for every record costs more than the rest of the program (an interrupt and a
        // scheduler wake-up, several microseconds, inside the traced path): wake it once per batch, when this
        // record makes the bytes waiting reach the threshold. A reader that lags behind a flood, with more than
        // that waiting, is awake already, reading: waking it for each record would cost a wake-up per record
        // again (1.3 µs more per ICMP error on the development host, with --pcap's slower reader). User space
        // also drains the buffer every few milliseconds (`pipeline/source.rs`), so a quiet trickle, or a
        // wake-up that found the reader not yet asleep, is not held back.
        let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
        let wakeup = if waiting < WAKEUP_BYTES && waiting + size() >= WAKEUP_BYTES {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        };
        // SAFETY: the map pointer is EVENTS itself (`repr(transparent)` over its definition), and `data` is
        // `size()` plain bytes, read for the copy only.
        unsafe {
            bpf_ringbuf_output(
                core::ptr::addr_of!(EVENTS).cast_mut().cast(),
                data.cast_mut().cast(),
                size(),
                u64::from(wakeup),
            ) < 0
        }
    };
    if full {
        count(stat::LOST);
    }
}

/// Emits a record that passed the filter options (`filter::*_passes`): counted in the kernel when only
/// counts are wanted, else handed over. One that did not pass is counted filtered out.
#[inline(always)]
pub(crate) fn emit<C: EbpfContext, T: tally::Tallied>(ctx: &C, record: &mut T, passes: bool) {
    if to_hand_over(record, passes, false) {
        output(ctx, record);
    }
}

/// What [`emit`] decides, for a caller that hands the record over in a larger one (`WithDns`): counts a
/// record that did not pass the filters, or one counted in the kernel, and says whether to hand it over.
/// `named`: the record goes with a DNS payload, which a count would lose (the summary keys its rows by the
/// name): it is handed over even when only counts are wanted.
#[inline(always)]
pub(crate) fn to_hand_over<T: tally::Tallied>(record: &mut T, passes: bool, named: bool) -> bool {
    if !passes {
        count(stat::FILTERED);
        false
    } else {
        named || !tally::count(record)
    }
}

/// The return value of `program`: 0. A failed kernel read is counted (the closing line's `unreadable`) and
/// logged, naming the program and what it read.
#[inline(always)]
pub(crate) fn report<C: EbpfContext>(ctx: &C, program: &'static str, result: ReadResult<()>) -> u32 {
    if let Err(e) = result {
        count(stat::READ_ERROR);
        // The name comes from whichever read failed: the verifier no longer knows which string and length
        // it is, and refuses the log's copy of it (6.18, fexit: "invalid access to map value"; 5.10: a write
        // past the log record after a name of unknown length). So the name is copied to the stack in a fixed
        // size, NUL-padded, and the record has one size and layout whatever failed; user space drops the NULs.
        let mut name = [0u8; NAME_LEN];
        // SAFETY: bpf_probe_read_kernel_buf writes only within `name`; what it reads past a short name is
        // this object's own read-only data (or nothing: a fault zeroes the buffer).
        let copied = unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_buf(e.what.as_ptr(), &mut name) }.is_ok();
        let len = if copied { e.what.len() } else { 0 };
        for (i, byte) in name.iter_mut().enumerate() {
            if i >= len {
                *byte = 0;
            }
        }
        // SAFETY: a prefix of a `&str` (the names are ASCII, so no character is cut) and NULs.
        let name = unsafe { core::str::from_utf8_unchecked(&name) };
        aya_log_ebpf::warn!(ctx, "{}: reading {} failed (error {})", program, name, e.code);
    }
    0
}

/// The longest read name a log line carries (the longest is 27 bytes).
const NAME_LEN: usize = 32;

/// As `report`, counted but not logged: for the drop program. A log call there failed verification under
/// `-v` (6.18: the copy of the read's name), and its frames are the largest on 5.10, which counts a call
/// chain's stack as a whole against 512 bytes: `report`'s fixed-size copy of the name would add to them.
#[inline(always)]
pub(crate) fn count_failure(result: ReadResult<()>) -> u32 {
    if result.is_err() {
        count(stat::READ_ERROR);
    }
    0
}
