//! A DNS datagram's payload, carried in the record of an event about it (`WithDns`). Only a datagram to or
//! from a DNS port (`filter::dns_port`) pays for the copy; every other one's record is what it was.

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use udptrace_common::{DNS_PREFIX, DnsPrefix};

use crate::kernel::{Mem, ReadError, ReadResult, offset, read};

/// The payload of the datagram in `skb` whose UDP header is at `udp`, up to the end of the packet's linear
/// data (`head + tail`). `M`: how `skb` is read (`kernel::Mem`).
#[inline(always)]
pub fn payload<M: Mem>(skb: *const u8, udp: *const u8, prefix: &mut DnsPrefix) -> ReadResult<()> {
    // Said empty if a read below fails: `copy_payload` then does not run.
    prefix.len = 0;
    prefix.total = 0;
    let length = u16::from_be(read::<u16>(udp, 4, "udphdr.len")?);
    let head = M::load::<*const u8>(skb, offset!(skb_head), "sk_buff.head")?;
    let tail = M::load::<u32>(skb, offset!(skb_tail), "sk_buff.tail")?;
    copy_payload(prefix, udp.wrapping_add(8), u32::from(length).saturating_sub(8), head.wrapping_add(tail as usize))
}

/// Copies the start of the payload at `payload` into `prefix`: at most [`DNS_PREFIX`] bytes, no more than the
/// UDP header says the payload holds (`total`), and none at or past `end`, where the memory the kernel
/// handed over ends (a packet's linear data: a payload held in pages beyond it is left out, and said short).
#[inline(always)]
pub fn copy_payload(prefix: &mut DnsPrefix, payload: *const u8, total: u32, end: *const u8) -> ReadResult<()> {
    let total = total.min(u32::from(u16::MAX));
    prefix.total = total as u16;
    prefix.len = 0;
    let at_hand = (end as u64).saturating_sub(payload as u64).min(u64::from(total));
    let len = at_hand.min(DNS_PREFIX as u64) as u32;
    if len == 0 {
        return Ok(());
    }
    // The verifier must see the length bounded by the buffer's size; it follows the comparison here.
    if len > DNS_PREFIX as u32 {
        return Ok(());
    }
    // SAFETY: the helper checks the source address and writes only within `bytes` (len <= its size).
    let code = unsafe { bpf_probe_read_kernel(prefix.bytes.as_mut_ptr().cast(), len, payload.cast()) };
    if code < 0 {
        return Err(ReadError { what: "the DNS payload", code });
    }
    prefix.len = len as u16;
    Ok(())
}
