//! A DNS datagram's payload, carried in the record of an event about it (`WithDns`). Only a datagram to or
//! from a DNS port (`filter::dns_port`) pays for the copy; every other one's record is what it was.

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use udptrace_common::{DNS_PREFIX, DnsPrefix};

use crate::kernel::{ReadError, ReadResult};

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
