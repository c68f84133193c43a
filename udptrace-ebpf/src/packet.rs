//! The packet behind an event, for `--pcap`: its bytes from the IP header on, after the record (and its DNS
//! payload), up to the snap length. Only where `CONFIG.pcap_snaplen` is set, a read-only constant: without
//! `--pcap` the verifier prunes every branch here, and the programs copy and cost what they did.
//!
//! What is copied is what lies in the packet's linear data (`head + tail`): a payload held in pages (GRO, a
//! NIC's receive buffers) is left out, and the capture is said shorter than the packet, never padded.

use core::mem::offset_of;

use aya_ebpf::{EbpfContext, helpers::generated::bpf_probe_read_kernel, macros::map, maps::PerCpuArray};
use udptrace_common::{
    IcmpSent, PACKET_MAX, PacketHead, SocketError, UdpDropped, WithDns, icmp_sent_flags, socket_error_flags,
    udp_dropped_flags,
};

use crate::{
    filter::config,
    kernel::{Mem, offset, read},
    output::{output, output_bytes},
};

/// Where an event's packet is: its IP header, and the end of its linear data; `ip` 0 for none.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct At {
    pub ip: u64,
    pub end: u64,
}

/// Whether packets are wanted (`--pcap`).
#[inline(always)]
pub fn wanted() -> bool {
    config!(pcap_snaplen) != 0
}

/// Where the packet of `skb`, whose IP header is at `ip`, is; none when packets are not wanted, or the
/// packet's end cannot be read. `M`: how `skb` is read (`kernel::Mem`).
#[inline(always)]
pub fn at<M: Mem>(skb: *const u8, ip: *const u8) -> At {
    if !wanted() {
        return At::default();
    }
    let head = M::load::<*const u8>(skb, offset!(skb_head), "sk_buff.head");
    let tail = M::load::<u32>(skb, offset!(skb_tail), "sk_buff.tail");
    match (head, tail) {
        (Ok(head), Ok(tail)) if !head.is_null() => At { ip: ip as u64, end: head.wrapping_add(tail as usize) as u64 },
        _ => At::default(),
    }
}

/// A record a packet may follow: where its flags byte is, and the bit there that says one does.
pub trait Carries {
    const FLAGS_AT: usize;
    const PACKET: u8;
}

impl Carries for UdpDropped {
    const FLAGS_AT: usize = offset_of!(UdpDropped, flags);
    const PACKET: u8 = udp_dropped_flags::PACKET;
}

impl Carries for IcmpSent {
    const FLAGS_AT: usize = offset_of!(IcmpSent, flags);
    const PACKET: u8 = icmp_sent_flags::PACKET;
}

impl Carries for SocketError {
    const FLAGS_AT: usize = offset_of!(SocketError, flags);
    const PACKET: u8 = socket_error_flags::PACKET;
}

/// The record comes first in a `WithDns`.
impl<T: Carries> Carries for WithDns<T> {
    const FLAGS_AT: usize = offset_of!(WithDns<T>, record) + T::FLAGS_AT;
    const PACKET: u8 = T::PACKET;
}

/// The largest record a packet follows: a drop's with its DNS payload.
const RECORD_MAX: usize = size_of::<WithDns<UdpDropped>>();

/// The room for a packet's bytes: a power of two from [`PACKET_MAX`], so that a length masked with
/// [`LEN_MASK`] stays within it whatever the verifier knows of it (`bounded`).
const PACKET_ROOM: usize = PACKET_MAX.next_power_of_two();
const LEN_MASK: u32 = PACKET_ROOM as u32 - 1;

/// A record, its packet's head and bytes, as handed over.
#[repr(C, align(8))]
pub struct Scratch {
    bytes: [u8; RECORD_MAX + size_of::<PacketHead>() + PACKET_ROOM],
}

/// `len`, checked to be at most [`PACKET_MAX`], bounded again where a helper takes it: 5.10's verifier bounds the
/// register the check compared, not a copy the compiler spilled to the stack and reloads for the call
/// ("R2 min value is negative"). Opaque to the compiler, which would drop a mask it knows changes nothing.
#[inline(always)]
fn bounded(len: u32) -> u32 {
    core::hint::black_box(len) & LEN_MASK
}

/// How deep runs of the programs that hand a packet over nest on one CPU: one in a process (a drop on the
/// way out, an ICMP error a REJECT in OUTPUT sends) interrupted by one in a softirq, interrupted in turn by
/// one in a hard interrupt (a driver's drop). Each level has a slot; deeper, the record goes alone.
const NESTING: u32 = 3;

#[map]
static PACKET_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(NESTING, 0);

/// The level in use on this CPU.
#[map]
static PACKET_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Hands `record` over with the packet `at` after it (its flags then say `PACKET`); alone where packets are
/// not wanted, there is none, or it cannot be read (the event is still reported).
#[inline(always)]
pub(crate) fn output_with<C: EbpfContext, T: Carries>(ctx: &C, record: &T, at: At) {
    if !wanted() || at.ip == 0 {
        output(ctx, record);
        return;
    }
    let Some(depth) = PACKET_DEPTH.get_ptr_mut(0) else { return output(ctx, record) };
    // SAFETY: this CPU's entry; a nested run restores it before the interrupted one goes on.
    let level = unsafe { *depth };
    let scratch = if level < NESTING { PACKET_SCRATCH.get_ptr_mut(level) } else { None };
    let Some(scratch) = scratch else { return output(ctx, record) };
    // SAFETY: as above; this level's slot is this run's alone.
    unsafe { *depth = level + 1 };
    let len = fill(unsafe { &mut *scratch }, record, at);
    unsafe { *depth = level };
    match len {
        // The record, the head, and the bytes `fill` wrote; within the slot (`bounded`).
        Some(len) => output_bytes(ctx, unsafe { (*scratch).bytes.as_ptr() }, || {
            (size_of::<T>() + size_of::<PacketHead>()) as u64 + u64::from(bounded(len))
        }),
        None => output(ctx, record),
    }
}

/// Writes the record, flagged, then the packet's head and bytes, into `scratch`; how many bytes of the packet.
#[inline(always)]
fn fill<T: Carries>(scratch: &mut Scratch, record: &T, at: At) -> Option<u32> {
    const { assert!(size_of::<T>() <= RECORD_MAX && size_of::<T>() % 8 == 0) };
    let base = size_of::<T>();
    // A record is larger than `kernel::copy` unrolls: one helper call copies it.
    // SAFETY: the helper writes `base` bytes within the slot, read from the record.
    let code = unsafe {
        bpf_probe_read_kernel(scratch.bytes.as_mut_ptr().cast(), base as u32, core::ptr::from_ref(record).cast())
    };
    if code < 0 {
        return None;
    }
    let ip = at.ip as *const u8;
    // The length by the IP header: IPv4 `tot_len` at 2, IPv6 `payload_len` at 4 after a 40-byte header.
    let h = read::<[u8; 8]>(ip, 0, "the packet's IP header").ok()?;
    let total = match h[0] >> 4 {
        4 => u32::from(u16::from_be_bytes([h[2], h[3]])),
        6 => 40 + u32::from(u16::from_be_bytes([h[4], h[5]])),
        _ => return None,
    };
    let at_hand = at.end.saturating_sub(at.ip);
    let len = u64::from(config!(pcap_snaplen)).min(u64::from(total)).min(at_hand) as u32;
    // The verifier must see the length bounded by the slot's size; it follows the comparison here.
    if len > PACKET_MAX as u32 {
        return None;
    }
    let head = PacketHead { len: len as u16, _pad0: 0, total };
    // SAFETY: within the slot (`base + 8 <= RECORD_MAX + 8`), 8-aligned (the record's size is a whole number of
    // words); the helper writes at most `PACKET_ROOM` bytes after it (`bounded`), `len` in fact.
    unsafe {
        scratch.bytes.as_mut_ptr().add(base).cast::<PacketHead>().write(head);
        let bytes = scratch.bytes.as_mut_ptr().add(base + size_of::<PacketHead>());
        if bpf_probe_read_kernel(bytes.cast(), bounded(len), ip.cast()) < 0 {
            return None;
        }
    }
    scratch.bytes[T::FLAGS_AT] |= T::PACKET;
    Some(len)
}
