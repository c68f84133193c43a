//! Reading the kernel: function arguments in every mode, structure members through offsets user space
//! resolved from the running kernel's BTF (the read-only global `OFFSETS`; nothing is hard-coded for one
//! kernel), and the per-CPU slots the hooks of one kernel call share.

use aya_ebpf::{
    Argument,
    helpers::{bpf_ktime_get_boot_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext},
};
use udptrace_common::{EventHeader, KernelOffsets};

#[unsafe(no_mangle)]
pub(crate) static OFFSETS: KernelOffsets = unsafe { core::mem::zeroed() };

/// One member of `OFFSETS`, read alone: a program that needs few of them keeps the whole copy off its stack.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: OFFSETS is a valid static; the loader rewrites its bytes before the program runs.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::kernel::OFFSETS.$field)) }
    };
}
pub(crate) use offset;

/// The offsets user space wrote. A volatile read keeps the compiler from folding the zeroed initialiser.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: OFFSETS is a valid static; the loader rewrites its bytes before the program runs.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// `ETH_P_IP`, `ETH_P_IPV6` (include/uapi/linux/if_ether.h), as `sk_buff.protocol` holds them.
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// A read that failed: what was read (`sk_buff.head`), and the helper's error.
#[derive(Clone, Copy)]
pub struct ReadError {
    pub what: &'static str,
    pub code: i64,
}

pub type ReadResult<T> = Result<T, ReadError>;

/// Reads a `T` at `base + offset` in kernel memory; `what` names it if it fails.
#[inline(always)]
pub fn read<T>(base: *const u8, offset: u32, what: &'static str) -> ReadResult<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad pointer yields an error, not a fault.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
        .map_err(|code| ReadError { what, code: code as i64 })
}

/// How a program reads the members of a kernel structure. A program's mode decides: the pointers a
/// kprobe finds in registers are plain numbers to the verifier, those of fentry, fexit and `tp_btf`
/// arguments are typed from BTF.
pub trait Mem {
    /// Whether [`Mem::load`] is a plain load (then one member a load: no reading of several at once).
    const DIRECT: bool;
    /// Reads the member of type `T` at `base + offset`; `base` and the pointers loaded from it are typed
    /// (`DIRECT`) or numbers, as the mode gives them.
    fn load<T: Copy>(base: *const u8, offset: u32, what: &'static str) -> ReadResult<T>;
}

/// Through `bpf_probe_read_kernel`: a helper call per read (about 50 ns on the development host), for a
/// pointer the verifier knows nothing of.
pub struct Probe;

impl Mem for Probe {
    const DIRECT: bool = false;

    #[inline(always)]
    fn load<T: Copy>(base: *const u8, offset: u32, what: &'static str) -> ReadResult<T> {
        read(base, offset, what)
    }
}

/// A plain load from a BTF-typed pointer (an fentry, fexit or `tp_btf` argument, or a pointer member loaded
/// from one): the verifier checks the access against the structure's BTF at its offset, a constant to it
/// because `OFFSETS` is frozen and read-only (kernel/bpf/verifier.c `check_ptr_to_btf_access`, 5.5), and the
/// JIT turns a fault into zeros (`BPF_PROBE_MEM`, 5.5): a null or stale pointer reads as 0, never an error.
/// `T` must be the member's size (an integer or a pointer) or fit inside one integer member; a pointer to a
/// structure loaded so is typed in turn, any other is a number. A few nanoseconds a read.
pub struct Btf;

impl Mem for Btf {
    const DIRECT: bool = true;

    #[inline(always)]
    fn load<T: Copy>(base: *const u8, offset: u32, _what: &'static str) -> ReadResult<T> {
        const { assert!(matches!(size_of::<T>(), 1 | 2 | 4 | 8)) };
        // SAFETY: the verifier proves the access lies within a member of `base`'s type, and the JIT catches
        // a fault (above). Volatile: one load of the member's size, which the compiler may not widen or split.
        Ok(unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize).cast::<T>()) })
    }
}

/// Reads `buf.len()` bytes at `base + offset` in kernel memory straight into `buf`.
#[inline(always)]
pub fn read_into(base: *const u8, offset: u32, buf: &mut [u8], what: &'static str) -> ReadResult<()> {
    // SAFETY: bpf_probe_read_kernel_buf checks the address and writes only within `buf`.
    unsafe { bpf_probe_read_kernel_buf(base.wrapping_add(offset as usize), buf) }
        .map_err(|code| ReadError { what, code: code as i64 })
}

/// The arguments of the traced function, however the mode hands them over.
pub trait Args {
    /// Argument `n` (from 0). For fexit, the argument after the last is the return value.
    fn get<T: Argument>(&self, n: usize) -> ReadResult<T>;

    /// The return address into the traced function's caller where a kernel stack walked from this
    /// program leaves that caller out, else 0. Only a kprobe on arm64: it fires at the function's first
    /// instruction, before the function stores its frame record, and the walk (arch/arm64/kernel/
    /// stacktrace.c, from the probe's pc and frame pointer) goes from the function to its caller's caller;
    /// the caller's return address is still in the link register. x86_64's call has pushed it on the stack,
    /// which its unwinder reads; arm64's BPF trampoline stores a frame record for the function and one for
    /// its caller (arch/arm64/net/bpf_jit_comp.c, `prepare_trampoline`).
    #[inline(always)]
    fn missing_caller(&self) -> u64 {
        0
    }
}

impl Args for FEntryContext {
    #[inline(always)]
    fn get<T: Argument>(&self, n: usize) -> ReadResult<T> {
        Ok(self.arg(n))
    }
}

impl Args for FExitContext {
    #[inline(always)]
    fn get<T: Argument>(&self, n: usize) -> ReadResult<T> {
        Ok(self.arg(n))
    }
}

impl Args for BtfTracePointContext {
    #[inline(always)]
    fn get<T: Argument>(&self, n: usize) -> ReadResult<T> {
        Ok(self.arg(n))
    }
}

impl Args for ProbeContext {
    /// From the registers: x86_64 passes six arguments in registers, arm64 eight; a kprobe sees no others.
    #[inline(always)]
    fn get<T: Argument>(&self, n: usize) -> ReadResult<T> {
        self.arg(n).ok_or(ReadError { what: "a function argument", code: -1 })
    }

    /// x30, the link register (arch/arm64/include/uapi/asm/ptrace.h, `user_pt_regs.regs[30]`).
    #[cfg(bpf_target_arch = "aarch64")]
    #[inline(always)]
    fn missing_caller(&self) -> u64 {
        // SAFETY: a read of the context's registers, which the verifier checks against `user_pt_regs`.
        unsafe { (*self.regs).regs[30] }
    }
}

/// This CPU's entry of a one-entry per-CPU array: where the hooks of one kernel call meet. The hooks that
/// share a slot run on one CPU without nesting (in softirq, or with bottom halves disabled), which each
/// caller states.
#[inline(always)]
pub fn slot<T>(map: &'static PerCpuArray<T>) -> Option<&'static mut T> {
    // SAFETY: the pointer is the map's own entry for this CPU, valid for the program's run; callers do not
    // use it from nested programs.
    map.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The inode number of a `struct net *`, which is what `ls -l /proc/PID/ns/net` shows.
#[inline(always)]
pub fn netns_inum<M: Mem>(net: *const u8) -> ReadResult<u32> {
    if net.is_null() {
        return Ok(0);
    }
    M::load::<u32>(net, offset!(net_inum), "net.ns.inum")
}

/// The network namespace of a socket (`sock_net(sk)`).
#[inline(always)]
pub fn sock_netns<M: Mem>(sk: *const u8) -> ReadResult<u32> {
    netns_inum::<M>(M::load::<*const u8>(sk, offset!(sk_net), "sock.__sk_common.skc_net")?)
}

/// The network namespace of the device a packet is on (`dev_net(skb->dev)`); 0 if it has no device yet.
#[inline(always)]
pub fn skb_dev_netns<M: Mem>(skb: *const u8, off: &KernelOffsets) -> ReadResult<u32> {
    let dev = M::load::<*const u8>(skb, off.skb_dev, "sk_buff.dev")?;
    if dev.is_null() {
        return Ok(0);
    }
    netns_inum::<M>(M::load::<*const u8>(dev, off.dev_net, "net_device.nd_net")?)
}

/// The bytes of `sk_buff` read at once for [`skb_network`].
pub const SKB_WINDOW: usize = 40;

/// What a packet's `sk_buff` says of its network header: `protocol` (`ETH_P_*`, in host order) and where
/// the header starts (`head + network_header`). One read where the three members lie within
/// [`SKB_WINDOW`] bytes, as in every kernel of the matrix (include/linux/skbuff.h, 5.10 to 7.x: `protocol`,
/// `transport_header`, `network_header`, `mac_header`, `kcov_handle` with CONFIG_KCOV, then `tail`, `end`,
/// `head`), else three. The offsets come from the frozen read-only `OFFSETS`, so the verifier knows them:
/// the window's indexes are constants to it. `window` is scratch space for the read: a caller short of stack
/// passes bytes of a map slot. Through a typed pointer ([`Btf`]) three plain loads instead, and `window`
/// is not used.
#[inline(always)]
pub fn skb_network<M: Mem>(skb: *const u8, window: &mut [u8; SKB_WINDOW]) -> ReadResult<(u16, *const u8)> {
    let (p, n, h) = (offset!(skb_protocol), offset!(skb_network_header), offset!(skb_head));
    if M::DIRECT {
        let protocol = u16::from_be(M::load::<u16>(skb, p, "sk_buff.protocol")?);
        let network = M::load::<u16>(skb, n, "sk_buff.network_header")?;
        let head = M::load::<*const u8>(skb, h, "sk_buff.head")?;
        return Ok((protocol, head.wrapping_add(usize::from(network))));
    }
    let base = p.min(n).min(h);
    let (p, n, h) = ((p - base) as usize, (n - base) as usize, (h - base) as usize);
    if p + 2 <= SKB_WINDOW && n + 2 <= SKB_WINDOW && h + 8 <= SKB_WINDOW {
        read_into(skb, base, window, "sk_buff.protocol..head")?;
        let w = &*window;
        let protocol = u16::from_be_bytes([w[p], w[p + 1]]);
        let network = u16::from_ne_bytes([w[n], w[n + 1]]);
        let mut head = [0u8; 8];
        head.copy_from_slice(&w[h..h + 8]);
        let head = usize::from_ne_bytes(head) as *const u8;
        return Ok((protocol, head.wrapping_add(usize::from(network))));
    }
    let protocol = u16::from_be(read::<u16>(skb, offset!(skb_protocol), "sk_buff.protocol")?);
    let head = read::<*const u8>(skb, offset!(skb_head), "sk_buff.head")?;
    let network = read::<u16>(skb, offset!(skb_network_header), "sk_buff.network_header")?;
    Ok((protocol, head.wrapping_add(usize::from(network))))
}

/// The first bytes of an IP packet: an IPv4 header without options and the transport header's first 8
/// bytes (its ports), or the first 28 bytes of an IPv6 header. One read: the head buffer of an `sk_buff`
/// always holds more than 28 bytes past the network header (its tail room and `skb_shared_info` follow), and
/// what is read past a short packet is used only where the packet says it has that header.
pub const IP_START: usize = 28;

#[inline(always)]
pub fn ip_start(ip: *const u8) -> ReadResult<[u8; IP_START]> {
    read::<[u8; IP_START]>(ip, 0, "the packet's IP header")
}

/// The index of the device a packet is on (`skb->dev->ifindex`); 0 if it has no device yet.
#[inline(always)]
pub fn skb_ifindex(skb: *const u8, off: &KernelOffsets) -> ReadResult<u32> {
    let dev = read::<*const u8>(skb, off.skb_dev, "sk_buff.dev")?;
    if dev.is_null() {
        return Ok(0);
    }
    read::<u32>(dev, off.dev_ifindex, "net_device.ifindex")
}

/// The header every record starts with.
#[inline(always)]
pub fn header(kind: u8, probe: u8, family: u16, netns: u32) -> EventHeader {
    EventHeader { time_ns: now(), ..untimed_header(kind, probe, family, netns) }
}

/// The header without its time, for a record that may be counted rather than handed over: the clock is read
/// when it is handed over (`now`).
#[inline(always)]
pub fn untimed_header(kind: u8, probe: u8, family: u16, netns: u32) -> EventHeader {
    EventHeader { kind, probe, family: family as u8, _pad0: 0, netns, time_ns: 0 }
}

/// The clock records carry (`CLOCK_BOOTTIME`). A helper call that reads the clock source: tens of ns on a
/// virtual machine, as much as the rest of a counted drop; what only needs to know whether about a second
/// has passed reads `jiffies` instead (`ticks`).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// `ns` in ticks of `jiffies` (`Config::tick_ns`), rounded down; 0 if the tick is not known. `bpf_jiffies64`
/// (5.5) is a load of `jiffies_64`, inlined by the verifier on 64-bit hosts.
#[inline(always)]
pub fn ticks(ns: u64) -> u64 {
    ns.checked_div(u64::from(crate::filter::config!(tick_ns))).unwrap_or(0)
}

/// `jiffies`.
#[inline(always)]
pub fn jiffies() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { aya_ebpf::helpers::bpf_jiffies64() }
}

/// `$body` for each `$i` from 0 below `$n`, written out: up to 32 steps, those past `$n` left out at compile
/// time. No loop for the verifier to walk, and none at a variable stack offset (5.10 refuses that).
macro_rules! unrolled {
    ($n:expr, |$i:ident| $body:expr) => {
        unrolled!(@ $n, $i, $body; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29
            30 31)
    };
    (@ $n:expr, $i:ident, $body:expr; $($k:literal)*) => {{
        $(
            if $k < $n {
                let $i: usize = $k;
                $body;
            }
        )*
    }};
}

/// The word [`zero`] and [`copy`] move `T` by: its alignment, up to 8 bytes.
const fn word<T>() -> usize {
    if align_of::<T>() >= 8 { 8 } else { align_of::<T>() }
}

/// Zeroes `value` with a store per word (per byte for a byte array). The BPF target compiles an assignment
/// of zeros, or of one record to another, to a call of its `memset` or `memmove`, a loop that moves one byte
/// a turn: about four instructions a byte, 600 for a drop's record, most of a run's cost. Volatile stores, so
/// that the compiler does not fold them back into that call.
#[inline(always)]
pub fn zero<T>(value: &mut T) {
    const { assert!(size_of::<T>() / word::<T>() <= 32) };
    let p = core::ptr::from_mut(value);
    if align_of::<T>() >= 8 {
        let p = p.cast::<u64>();
        // SAFETY: within `value`, which is 8-aligned and a whole number of words.
        unrolled!(size_of::<T>() / 8, |i| unsafe { p.add(i).write_volatile(0) });
    } else if align_of::<T>() == 4 {
        let p = p.cast::<u32>();
        // SAFETY: as above, in 4-byte words.
        unrolled!(size_of::<T>() / 4, |i| unsafe { p.add(i).write_volatile(0) });
    } else {
        let p = p.cast::<u8>();
        // SAFETY: within `value`.
        unrolled!(size_of::<T>(), |i| unsafe { p.add(i).write_volatile(0) });
    }
}

/// `*dst = *src`, a load and a store per word (per byte for a byte array): see [`zero`].
#[inline(always)]
pub fn copy<T: Copy>(dst: &mut T, src: &T) {
    const { assert!(size_of::<T>() / word::<T>() <= 32) };
    let (d, s) = (core::ptr::from_mut(dst), core::ptr::from_ref(src));
    if align_of::<T>() >= 8 {
        let (d, s) = (d.cast::<u64>(), s.cast::<u64>());
        // SAFETY: within both, which are 8-aligned and a whole number of words.
        unrolled!(size_of::<T>() / 8, |i| unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) });
    } else if align_of::<T>() == 4 {
        let (d, s) = (d.cast::<u32>(), s.cast::<u32>());
        // SAFETY: as above, in 4-byte words.
        unrolled!(size_of::<T>() / 4, |i| unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) });
    } else {
        let (d, s) = (d.cast::<u8>(), s.cast::<u8>());
        // SAFETY: within both.
        unrolled!(size_of::<T>(), |i| unsafe { d.add(i).write_volatile(s.add(i).read_volatile()) });
    }
}
