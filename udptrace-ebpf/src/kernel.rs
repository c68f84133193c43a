//! Reading kernel structures. Member offsets come from user space (resolved from the running kernel's BTF
//! before load) through the read-only global `OFFSETS`; nothing is hard-coded for one kernel.

use aya_ebpf::helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use udptrace_common::{EventHeader, KernelOffsets};

#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

/// The offsets user space wrote. A volatile read keeps the compiler from folding the zeroed initialiser.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: OFFSETS is a valid static; the loader rewrites its bytes before the program runs.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

pub type ReadResult<T> = Result<T, i64>;

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32) -> ReadResult<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad pointer yields an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()).map_err(|e| e as i64) }
}

/// Reads `buf.len()` bytes at `base + offset` in kernel memory straight into `buf`.
#[inline(always)]
pub fn read_into(base: *const u8, offset: u32, buf: &mut [u8]) -> ReadResult<()> {
    // SAFETY: bpf_probe_read_kernel_buf checks the address and writes only within `buf`.
    unsafe { bpf_probe_read_kernel_buf(base.wrapping_add(offset as usize), buf).map_err(|e| e as i64) }
}

/// The inode number of a `struct net *`, which is what `ls -l /proc/PID/ns/net` shows.
#[inline(always)]
pub fn netns_inum(net: *const u8, off: &KernelOffsets) -> ReadResult<u32> {
    if net.is_null() {
        return Ok(0);
    }
    read::<u32>(net, off.net_inum)
}

/// The network namespace of a socket (`sock_net(sk)`).
#[inline(always)]
pub fn sock_netns(sk: *const u8, off: &KernelOffsets) -> ReadResult<u32> {
    let net = read::<*const u8>(sk, off.sk_net)?;
    netns_inum(net, off)
}

/// The header every record starts with.
#[inline(always)]
pub fn header(kind: u8, probe: u8, family: u16, netns: u32) -> EventHeader {
    EventHeader {
        kind,
        probe,
        family: family as u8,
        _pad0: 0,
        netns,
        // SAFETY: a helper without arguments.
        time_ns: unsafe { bpf_ktime_get_boot_ns() },
    }
}
