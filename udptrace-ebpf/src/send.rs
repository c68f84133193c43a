//! An ICMP error this host emits.
//!
//! `icmp:icmp_send` fires inside `__icmp_send()` (`net/ipv4/icmp.c`) once the ICMP is built, after the
//! rate limits: suppressed errors never reach it. IPv4 only. The offending packet is the skb the caller
//! passed in; its network header is set on every path that calls `icmp_send()`.
//!
//! Why the ICMP was sent is decided in user space from the kernel stack recorded here (`__udp4_lib_rcv`:
//! no listener, `nf_send_unreach`: firewall REJECT, `ip_error`: no route, ...). The stack costs one
//! unwind per ICMP error, and ICMP errors are rare and rate-limited, unlike a correlation through
//! `skb:kfree_skb`, which would run for every packet the host drops.

use aya_ebpf::{helpers::generated::bpf_get_stack, programs::RawTracePointContext, EbpfContext};
use udptrace_common::{
    AF_INET, ICMP_STACK_DEPTH, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, IcmpSent, icmp_sent_flags, kind,
    probe,
};

use crate::{
    EVENTS, STAT_LOST, count,
    kernel::{ReadResult, header, netns_inum, offsets, read, sock_netns},
};

/// IPv4 `frag_off`: the fragment offset bits. A non-first fragment carries no transport header.
const IP_OFFSET_MASK: u16 = 0x1fff;

pub fn icmp_send(ctx: &RawTracePointContext) -> ReadResult<()> {
    let skb: *const u8 = ctx.arg(0);
    let icmp_type: u64 = ctx.arg(1);
    let icmp_code: u64 = ctx.arg(2);
    let off = offsets();

    // The namespace of the device the packet came in on; a locally generated packet (REJECT in OUTPUT)
    // may have none yet, then its socket's.
    let dev = read::<*const u8>(skb, off.skb_dev)?;
    let netns = if dev.is_null() {
        let sk = read::<*const u8>(skb, off.skb_sk)?;
        if sk.is_null() { 0 } else { sock_netns(sk, &off)? }
    } else {
        netns_inum(read::<*const u8>(dev, off.dev_net)?, &off)?
    };

    let Some(mut entry) = EVENTS.reserve::<IcmpSent>(0) else {
        count(STAT_LOST);
        return Ok(());
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved ring-buffer slot of the right size; every field is written
    // before submit.
    unsafe {
        (*event).header = header(ctx, kind::ICMP_SENT, probe::TRACEPOINT, AF_INET, netns);
        (*event).icmp_type = icmp_type as u8;
        (*event).icmp_code = icmp_code as u8;
        (*event).src = [0; 16];
        (*event).dst = [0; 16];
        (*event).sport = 0;
        (*event).dport = 0;
        (*event).proto = 0;
        (*event).flags = 0;
        (*event)._pad0 = [0; 4];
        read_offending_packet(skb, &off, &mut *event);
        (*event).stack = [0; ICMP_STACK_DEPTH];
        (*event).stack_bytes = bpf_get_stack(
            ctx.as_ptr(),
            (*event).stack.as_mut_ptr().cast(),
            (ICMP_STACK_DEPTH * 8) as u32,
            0,
        ) as i32;
    }
    entry.submit(0);
    Ok(())
}

/// Fills `src`, `dst`, `proto` and, when the packet has them, the ports. Leaves the flags clear for what
/// could not be read: the event is still worth reporting.
#[inline(always)]
fn read_offending_packet(skb: *const u8, off: &udptrace_common::KernelOffsets, event: &mut IcmpSent) {
    let Ok(head) = read::<*const u8>(skb, off.skb_head) else { return };
    let Ok(network_header) = read::<u16>(skb, off.skb_network_header) else { return };
    let iph = head.wrapping_add(network_header as usize);
    // struct iphdr: version/ihl at 0, frag_off at 6, protocol at 9, saddr at 12, daddr at 16.
    let Ok(version_ihl) = read::<u8>(iph, 0) else { return };
    if version_ihl >> 4 != 4 {
        return;
    }
    let (Ok(frag_off), Ok(proto), Ok(saddr), Ok(daddr)) =
        (read::<u16>(iph, 6), read::<u8>(iph, 9), read::<[u8; 4]>(iph, 12), read::<[u8; 4]>(iph, 16))
    else {
        return;
    };
    event.proto = proto;
    event.src[..4].copy_from_slice(&saddr);
    event.dst[..4].copy_from_slice(&daddr);
    event.flags |= icmp_sent_flags::PACKET_KNOWN;

    let ihl = u32::from(version_ihl & 0x0f) * 4;
    let has_ports = matches!(proto, IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_TCP);
    if !has_ports || ihl < 20 || u16::from_be(frag_off) & IP_OFFSET_MASK != 0 {
        return;
    }
    if let Ok(ports) = read::<[u8; 4]>(iph, ihl) {
        event.sport = u16::from_be_bytes([ports[0], ports[1]]);
        event.dport = u16::from_be_bytes([ports[2], ports[3]]);
        event.flags |= icmp_sent_flags::PORTS_KNOWN;
    }
}
