//! udptrace's eBPF programs, one file per kind of record they produce, named as the record is in
//! `udptrace-common` and in user space:
//! - `socket_error.rs`: an ICMP error reaching a UDP socket;
//! - `icmp_sent.rs`: an ICMP error this host emits;
//! - `udp_dropped.rs`: a UDP datagram the kernel drops;
//!
//! and what they share:
//! - `conntrack.rs`: a packet's conntrack entry, carried in the record when its connection is translated;
//! - `dns.rs`: a DNS datagram's payload, carried in the record of an event about it;
//! - `owner.rs`: who owns a socket, recorded when its process creates it;
//! - `tally.rs`: records counted in the kernel, when only counts are wanted;
//! - `kernel.rs`: arguments in every mode, kernel memory through offsets user space resolved from BTF,
//!   the per-CPU slots, the packet constants;
//! - `filter.rs`: the filter options, applied before an event takes buffer space;
//! - `output.rs`: the buffers and counters a record or a failed read leaves through;
//! - `program.rs`: `programs!`, the stub each program is.
//!
//! Each program is one stub per mode (fentry/fexit, kprobe/kretprobe, tracepoint) in `programs!`,
//! its name written once: `fn name(ctx: Context) { hook_body(&ctx, ...) }`, the body reading the arguments it
//! needs through `kernel::Args` whatever the mode. A failed read is counted in `STATS` and logged through
//! aya-log under the program's name (shown by `udptrace -v`); nothing is logged on the success path.
#![no_std]
#![no_main]
// `atomic_xadd`: the BPF target has no `AtomicU64`; the add compiles to BPF's atomic add (5.10 has it).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod conntrack;
mod dns;
pub(crate) mod filter;
mod icmp_sent;
mod kernel;
mod output;
mod owner;
mod packet;
mod program;
mod socket_error;
mod tally;
mod udp_dropped;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
