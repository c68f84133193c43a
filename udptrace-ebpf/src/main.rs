//! udptrace's eBPF programs, one file per kernel area:
//! - `recv.rs`: an ICMP error reaching a UDP socket (`socket_error`);
//! - `send.rs`: an ICMP error this host emits (`icmp_sent`);
//! - `owner.rs`: who owns a socket, recorded where its process sends;
//! - `kernel.rs`: reading kernel memory through offsets user space resolved from BTF.
//!
//! Each program is a thin wrapper, one per mode (fentry/fexit, kprobe/kretprobe, tracepoint), around
//! shared functions returning `Result`; failures are counted in `STATS`, never silently dropped.
#![no_std]
#![no_main]

mod kernel;
mod owner;
mod recv;
mod send;

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, RingBuf},
};

/// Events for user space. Resized by user space at load time (`--buffer` size); 1 MiB holds about
/// 4,000 `icmp_sent` or 10,000 `socket_error` records.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU counters, indexed by the `STAT_*` constants.
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// The ring buffer was full: an event was lost.
pub(crate) const STAT_LOST: u32 = 0;
/// A kernel read failed: the event could not be built.
pub(crate) const STAT_READ_ERROR: u32 = 1;
const STAT_COUNT: u32 = 2;

#[inline(always)]
pub(crate) fn count(stat: u32) {
    if let Some(counter) = STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, and programs do not nest on one CPU for these hooks.
        unsafe { *counter += 1 };
    }
}

/// The program's return value; a failed kernel read is counted, not dropped silently.
#[inline(always)]
pub(crate) fn report<T>(result: kernel::ReadResult<T>) -> u32 {
    if result.is_err() {
        count(STAT_READ_ERROR);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
