//! A packet's conntrack entry, carried in the record of an error or a drop when conntrack translated the
//! packet's connection (`udptrace_common::Conntrack`).
//!
//! `sk_buff._nfct` holds the entry and the packet's `ip_conntrack_info` in its low bits (include/linux/
//! skbuff.h, 4.11+; `nf_ct_get()`): a null entry is a packet conntrack did not see, or an untracked one
//! (`IP_CT_UNTRACKED` with no entry, 4.12+). A template a rule attached is no connection (`IPS_TEMPLATE`).
//! For an ICMP error, conntrack gave the ICMP packet the entry of the connection it quotes
//! (net/netfilter/nf_conntrack_proto_icmp.c `icmp_error_message`, `nf_ct_set(skb, ct, IP_CT_RELATED...)`),
//! and NAT translated the quoted header back (`nf_nat_icmp_reply_translation`): the entry is the flow's.
//!
//! `struct nf_conn` is in the `nf_conntrack` module on most kernels: its offsets come through the map
//! `CONNTRACK`, written by user space when the module's BTF is there (`ready`), not through the frozen
//! `OFFSETS`. Until then, and in a kernel without conntrack, a packet's entry is not read at all.
//!
//! Cost: one load of `_nfct` for a packet without an entry; the entry's status besides for a tracked,
//! untranslated one; two 40-byte copies and the mark only for a translated one. Only the error and drop
//! paths call it.

use aya_ebpf::{macros::map, maps::Array};
use udptrace_common::{CT_UNKNOWN, Conntrack, ConntrackOffsets, CtTuple, NFCT_INFOMASK, conntrack_flags, ct_status};

use crate::kernel::{Mem, ReadResult, offset, read, read_into};

#[map]
static CONNTRACK: Array<ConntrackOffsets> = Array::with_max_entries(1, 0);

/// Fills `out`, zeroed by the caller, from the conntrack entry of the packet `skb` (read as the mode gives
/// it, `M`): `TRACKED` for a packet with an entry, and the tuples, status and mark with `KNOWN` when its
/// connection is translated.
#[inline(always)]
pub fn fill<M: Mem>(skb: *const u8, out: &mut Conntrack) -> ReadResult<()> {
    let at = offset!(skb_nfct);
    if at == CT_UNKNOWN {
        return Ok(());
    }
    let nfct = M::load::<u64>(skb, at, "sk_buff._nfct")?;
    let ct = (nfct & !NFCT_INFOMASK) as *const u8;
    if ct.is_null() {
        return Ok(());
    }
    let Some(off) = CONNTRACK.get(0) else { return Ok(()) };
    if off.ready == 0 {
        return Ok(());
    }
    // An `unsigned long`: the bits read are its low ones (little-endian, as on x86_64 and arm64).
    let status = read::<u64>(ct, off.status, "nf_conn.status")? as u16;
    if status & (ct_status::TEMPLATE | ct_status::UNTRACKED) != 0 {
        return Ok(());
    }
    out.flags = conntrack_flags::TRACKED;
    if status & ct_status::NAT == 0 {
        return Ok(());
    }
    out.status = status;
    read_into(ct, off.original, tuple_bytes(&mut out.original), "nf_conn.tuplehash[0].tuple")?;
    read_into(ct, off.reply, tuple_bytes(&mut out.reply), "nf_conn.tuplehash[1].tuple")?;
    if off.mark != CT_UNKNOWN {
        out.mark = read::<u32>(ct, off.mark, "nf_conn.mark")?;
        out.flags |= conntrack_flags::MARK_KNOWN;
    }
    out.flags |= conntrack_flags::KNOWN;
    Ok(())
}

/// A tuple's bytes, for the kernel's to be copied straight in.
#[inline(always)]
fn tuple_bytes(tuple: &mut CtTuple) -> &mut [u8] {
    // SAFETY: `CtTuple` is plain `#[repr(C)]` bytes and integers without padding (its size is asserted), valid
    // for every bit pattern; the slice covers it exactly and borrows it mutably.
    unsafe { core::slice::from_raw_parts_mut(core::ptr::from_mut(tuple).cast::<u8>(), size_of::<CtTuple>()) }
}
