//! An ICMP error this host emits: `icmp_sent`.
//!
//! Tracepoint mode: `icmp:icmp_send` fires inside `__icmp_send()` (`net/ipv4/icmp.c`) once every check
//! and rate limit has passed, right before the reply is pushed. IPv4 only.
//!
//! fentry/kprobe modes: `__icmp_send()` (IPv4; `icmp_send()` is an inline wrapper since 5.0) and
//! `icmp6_send()` (IPv6; `icmpv6_send()` is an inline wrapper since 5.12, 5.4.102). Both return
//! `void` and give up silently in many places (no route back, rate limits, errors about errors), so the
//! entry only prepares the event in a per-CPU slot; it is emitted when the reply is pushed
//! (`ip_push_pending_frames()` / `ip6_push_pending_frames()`, called from `icmp_push_reply()` /
//! `icmpv6_push_pending_frames()` in 5.x to 7.x) inside that call, and the exit only closes the slot.
//!
//! In these modes a rate limit saying no (`icmp_global_allow()` or `inet_peer_xrlim_allow()` returning
//! false inside the same call) turns the event into `icmp_suppressed`. Tracepoint mode cannot see it:
//! user space reports the namespaces' rate-limit counters instead.
//!
//! Why the ICMP was sent is decided in user space from the kernel stack recorded here (`__udp4_lib_rcv`:
//! no listener, `nf_send_unreach`: firewall REJECT, `ip_error`: no route, ...). The stack costs one
//! unwind per ICMP error, and ICMP errors are rare and rate-limited, unlike a correlation through
//! `skb:kfree_skb`, which would run for every packet the host drops.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_get_stack,
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use udptrace_common::{
    AF_INET, AF_INET6, ICMP_STACK_DEPTH, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, IcmpSent, WithDns, icmp,
    icmp_sent_flags, icmpv6, kind, probe,
};

use crate::{
    conntrack, dns, filter,
    kernel::{
        Args, Btf, ETH_P_IP, Mem, Probe, ReadResult, SKB_WINDOW, copy, ip_start, jiffies, now, offset, offsets, read,
        skb_dev_netns, skb_network, slot, sock_netns, ticks, untimed_header, zero,
    },
    output::{count_failure, to_hand_over},
    packet,
    program::programs,
};

/// IPv4 `frag_off`: the fragment offset bits. A non-first fragment carries no transport header.
const IP_OFFSET_MASK: u16 = 0x1fff;

/// One ICMP error being built by `__icmp_send` / `icmp6_send` on this CPU.
#[repr(C)]
pub struct IcmpSend {
    /// The record, and the start of the offending datagram's payload when it is on a DNS port.
    event: WithDns<IcmpSent>,
    /// The offending packet.
    skb: u64,
    /// Where its bytes are, with `--pcap`.
    packet: packet::At,
    /// The call is under way and its error not emitted yet.
    active: u8,
    /// The offending datagram is on a DNS port: its payload is in `event.dns`.
    dns: u8,
    _pad: [u8; 6],
}

/// How deep calls of `__icmp_send` / `icmp6_send` nest on one CPU: a call in process context (a REJECT in
/// the OUTPUT chain, a UDP send that finds no route) runs its entry hook before `local_bh_disable()` and its
/// exit hook after `local_bh_enable()`, which runs the softirqs that came meanwhile; one of them may send an
/// ICMP error of its own (net/ipv4/icmp.c, net/ipv6/icmp.c). Two levels are enough: softirqs do not nest.
const NESTING: u32 = 2;

/// One slot per nesting level, and after them the level in use on this CPU (its `active` byte counts
/// the calls under way).
#[map]
static ICMP_SEND: PerCpuArray<IcmpSend> = PerCpuArray::with_max_entries(NESTING + 1, 0);

/// The level the next call takes, or the current one; kept in the `active` byte of the slot after the
/// levels.
#[inline(always)]
fn depth() -> Option<&'static mut u8> {
    // SAFETY: the map's own entry for this CPU; the hooks that use it do not interrupt one another's
    // programs (they run between them).
    ICMP_SEND.get_ptr_mut(NESTING).map(|p| unsafe { &mut (*p).active })
}

#[inline(always)]
fn level(n: u8) -> Option<&'static mut IcmpSend> {
    // SAFETY: as above.
    ICMP_SEND.get_ptr_mut(u32::from(n).min(NESTING - 1)).map(|p| unsafe { &mut *p })
}

/// The slot of the call under way on this CPU, the innermost if calls nest.
#[inline(always)]
fn state() -> Option<&'static mut IcmpSend> {
    level(depth()?.saturating_sub(1))
}

/// A new call's slot. Deeper than [`NESTING`] (it cannot happen) the innermost slot is reused.
#[inline(always)]
fn enter_state() -> Option<&'static mut IcmpSend> {
    let depth = depth()?;
    let n = *depth;
    *depth = (n + 1).min(NESTING as u8);
    level(n)
}

/// The slot of the call that returns, which is then left. A return whose entry was not seen (the call was
/// under way when udptrace attached) finds its slot inactive.
#[inline(always)]
fn exit_state() -> Option<&'static mut IcmpSend> {
    let depth = depth()?;
    let n = depth.saturating_sub(1);
    *depth = n;
    level(n)
}

/// Fills the slot's event for the offending packet `skb`: header, ICMP type/code, the packet, the kernel stack;
/// and, with `--pcap`, where the packet's bytes are. `M`: how `skb` is read, which the mode decides
/// (`kernel::Mem`).
#[inline(always)]
fn fill<C: EbpfContext + Args, M: Mem>(
    ctx: &C,
    mode: u8,
    family: u16,
    skb: *const u8,
    icmp_type: u8,
    icmp_code: u8,
    slot: &mut IcmpSend,
) -> ReadResult<bool> {
    slot.packet = packet::At::default();
    let out = &mut slot.event;
    let event = &mut out.record;
    let off = offsets();
    // The namespace of the device the packet came in on; a locally generated packet (REJECT in OUTPUT)
    // may have none yet, then its socket's.
    let mut netns = skb_dev_netns::<M>(skb, &off)?;
    if netns == 0 {
        let sk = M::load::<*const u8>(skb, off.skb_sk, "sk_buff.sk")?;
        if !sk.is_null() {
            netns = sock_netns::<M>(sk)?;
        }
    }
    // Every byte is part of a count's key (tally.rs): cleared first, the stack included. The time is read
    // only if the record is handed over (`emit_sent`): a count has none.
    zero(event);
    event.header = untimed_header(kind::ICMP_SENT, mode, family, netns);
    event.icmp_type = icmp_type;
    event.icmp_code = icmp_code;
    let mut dns_datagram = false;
    if let Ok((_, ip)) = skb_network::<M>(skb, &mut [0; SKB_WINDOW]) {
        slot.packet = packet::at::<M>(skb, ip);
        let udp = if family == AF_INET { read_ipv4_packet(ip, event) } else { read_ipv6_packet(ip, event) };
        // Only a datagram on a DNS port pays for the copy of its payload (`dns.rs`).
        if let Some(udp) = udp
            && event.proto == IPPROTO_UDP
            && filter::dns_port(event.sport, event.dport)
        {
            dns_datagram = true;
            // A payload that could not be read is said empty and counted; the error is still reported.
            count_failure(dns::payload::<M>(skb, udp, &mut out.dns));
        }
    }
    // The offending packet's connection, when conntrack translated it; a failed read is counted and the
    // error still reported.
    count_failure(conntrack::fill::<M>(skb, &mut event.conntrack));
    // The stack only serves an event that passes the filters; one that does not is counted when emitted.
    if filter::icmp_sent_passes(event) {
        fill_stack(ctx, event);
    }
    Ok(dns_datagram)
}

/// Emits a prepared error; with the payload of its datagram if that is on a DNS port (`dns`), and then never
/// counted in the kernel: a count would lose the name; with `--pcap`, with the datagram.
#[inline(always)]
fn emit_sent<C: EbpfContext>(ctx: &C, slot: &mut IcmpSend, dns: bool) {
    let out = &mut slot.event;
    let passes = filter::icmp_sent_passes(&out.record);
    if !to_hand_over(&mut out.record, passes, dns) {
        return;
    }
    out.record.header.time_ns = now();
    if dns {
        out.record.flags |= icmp_sent_flags::DNS;
        packet::output_with(ctx, out, slot.packet);
    } else {
        packet::output_with(ctx, &out.record, slot.packet);
    }
}

/// A flow whose ICMP errors had their stack walked lately: the same kind of ICMP error about the same packet
/// 5-tuple in the same namespace.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FlowKey {
    src: [u8; 16],
    dst: [u8; 16],
    netns: u32,
    sport: u16,
    dport: u16,
    icmp_type: u8,
    icmp_code: u8,
    proto: u8,
    _pad: u8,
    _pad2: u32,
}

impl FlowKey {
    /// Compared word by word: a byte-wise compare is a call to a loop, which the verifier must prove ends
    /// and rejected on 6.1 ("back-edge").
    #[inline(always)]
    fn same(&self, other: &FlowKey) -> bool {
        // SAFETY: 48 plain bytes either way.
        let (a, b): ([u64; 6], [u64; 6]) = unsafe { (core::mem::transmute(*self), core::mem::transmute(*other)) };
        a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5]
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct KnownStack {
    /// `jiffies` when it was walked.
    jiffies: u64,
    stack_bytes: i64,
    stack: [u64; ICMP_STACK_DEPTH],
}

/// How long a walked stack stands for its flow.
const STACK_REUSE_NS: u64 = 1_000_000_000;

/// Stacks walked lately, by flow. Walking the stack is most of this program's cost (1.3 µs of 2.3 on the
/// development host, however few frames are asked for), and a flood of errors is one flow or a few: each
/// flow's stack is walked once a second, and reused meanwhile. What decided to send the error (no
/// listener, a REJECT rule, a route) does not change between two packets of one flow but by a
/// configuration change, which then shows within a second.
#[map]
static STACKS: LruHashMap<FlowKey, KnownStack> = LruHashMap::with_max_entries(1024, 0);

/// The last flow this CPU walked or reused a stack for: a flood of one flow skips the hash lookup too.
#[repr(C)]
pub struct LastFlow {
    key: FlowKey,
    known: KnownStack,
}

#[map]
static LAST_FLOW: PerCpuArray<LastFlow> = PerCpuArray::with_max_entries(1, 0);

/// Fills the event's kernel stack: walked, or reused from its flow's last walk (see `STACKS`). The caller a
/// walk from this program leaves out (`Args::missing_caller`) is put back in its place, after the first
/// frame; the deepest frame gives way to it.
#[inline(always)]
fn fill_stack<C: EbpfContext + Args>(ctx: &C, event: &mut IcmpSent) {
    let known = event.flags & icmp_sent_flags::PACKET_KNOWN != 0;
    let key = FlowKey {
        src: event.src,
        dst: event.dst,
        netns: event.header.netns,
        sport: event.sport,
        dport: event.dport,
        icmp_type: event.icmp_type,
        icmp_code: event.icmp_code,
        proto: event.proto,
        _pad: 0,
        _pad2: 0,
    };
    let (now, reuse) = (jiffies(), ticks(STACK_REUSE_NS));
    // __icmp_send does not nest on one CPU.
    let last = slot(&LAST_FLOW);
    if known {
        if let Some(last) = &last
            && last.key.same(&key)
            && now.wrapping_sub(last.known.jiffies) < reuse
        {
            copy(&mut event.stack, &last.known.stack);
            event.stack_bytes = last.known.stack_bytes as i32;
            return;
        }
        // SAFETY: a map lookup; the value is copied out.
        if let Some(cached) = unsafe { STACKS.get(&key) }
            && now.wrapping_sub(cached.jiffies) < reuse
        {
            copy(&mut event.stack, &cached.stack);
            event.stack_bytes = cached.stack_bytes as i32;
            if let Some(last) = last {
                last.key = key;
                copy(&mut last.known, cached);
            }
            return;
        }
    }
    // SAFETY: the buffer is the event's stack array (zeroed by `fill`), of the size passed.
    event.stack_bytes =
        unsafe { bpf_get_stack(ctx.as_ptr(), event.stack.as_mut_ptr().cast(), (ICMP_STACK_DEPTH * 8) as u32, 0) }
            as i32;
    let caller = ctx.missing_caller();
    if caller != 0 && event.stack_bytes > 0 {
        for at in (2..ICMP_STACK_DEPTH).rev() {
            event.stack[at] = event.stack[at - 1];
        }
        event.stack[1] = caller;
        event.stack_bytes = (event.stack_bytes + 8).min((ICMP_STACK_DEPTH * 8) as i32);
    }
    // Remembered in the per-CPU slot, and from there in the hash (a copy on the stack would add 80 bytes to
    // a stack the verifier holds to 512 bytes).
    if known
        && event.stack_bytes > 0
        && let Some(last) = last
    {
        last.key = key;
        last.known.jiffies = now;
        last.known.stack_bytes = i64::from(event.stack_bytes);
        copy(&mut last.known.stack, &event.stack);
        let _ = STACKS.insert(&last.key, &last.known, 0);
    }
}

#[inline(always)]
fn has_ports(proto: u8) -> bool {
    matches!(proto, IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_TCP)
}

/// Reads the ports of the transport header `offset` bytes past `at`, and returns where it starts.
#[inline(always)]
fn read_ports(at: *const u8, offset: u32, event: &mut IcmpSent) -> Option<*const u8> {
    let ports = read::<[u8; 4]>(at, offset, "the packet's ports").ok()?;
    event.sport = u16::from_be_bytes([ports[0], ports[1]]);
    event.dport = u16::from_be_bytes([ports[2], ports[3]]);
    event.flags |= icmp_sent_flags::PORTS_KNOWN;
    Some(at.wrapping_add(offset as usize))
}

/// Fills `src`, `dst`, `proto` and, when the packet has them, the ports, from the packet whose IP header
/// starts at `ip`. Leaves the flags clear for what could not be read: the event is still worth reporting.
/// Returns where the transport header starts when its ports were read.
#[inline(always)]
fn read_ipv4_packet(ip: *const u8, event: &mut IcmpSent) -> Option<*const u8> {
    // struct iphdr: version/ihl at 0, frag_off at 6, protocol at 9, saddr at 12, daddr at 16; without options
    // the ports follow at 20. One read for all of it: each read is a helper call.
    let Ok(h) = ip_start(ip) else {
        return None;
    };
    let version_ihl = h[0];
    if version_ihl >> 4 != 4 {
        return None;
    }
    let frag_off = u16::from_ne_bytes([h[6], h[7]]);
    let proto = h[9];
    event.proto = proto;
    event.src[..4].copy_from_slice(&h[12..16]);
    event.dst[..4].copy_from_slice(&h[16..20]);
    event.flags |= icmp_sent_flags::PACKET_KNOWN;
    let ihl = u32::from(version_ihl & 0x0f) * 4;
    if has_ports(proto) && ihl >= 20 && u16::from_be(frag_off) & IP_OFFSET_MASK == 0 {
        if ihl == 20 {
            event.sport = u16::from_be_bytes([h[20], h[21]]);
            event.dport = u16::from_be_bytes([h[22], h[23]]);
            event.flags |= icmp_sent_flags::PORTS_KNOWN;
            return Some(ip.wrapping_add(20));
        }
        return read_ports(ip, ihl, event);
    }
    None
}

/// IPv6: nexthdr at 6, saddr at 8, daddr at 24. Ports only when no extension header comes first.
#[inline(always)]
fn read_ipv6_packet(ip6h: *const u8, event: &mut IcmpSent) -> Option<*const u8> {
    // One read of the whole header (each read is a helper call).
    let Ok(h) = read::<[u8; 40]>(ip6h, 0, "ipv6hdr") else {
        return None;
    };
    if h[0] >> 4 != 6 {
        return None;
    }
    let next = h[6];
    event.proto = next;
    event.src.copy_from_slice(&h[8..24]);
    event.dst.copy_from_slice(&h[24..40]);
    event.flags |= icmp_sent_flags::PACKET_KNOWN;
    if has_ports(next) {
        return read_ports(ip6h, 40, event);
    }
    None
}

/// Entry of `void __icmp_send(struct sk_buff *skb_in, int type, int code, __be32 info, const struct
/// inet_skb_parm *opt)` (IPv4; the last argument changed type in 6.18 and is not read) or `void
/// icmp6_send(struct sk_buff *skb, u8 type, u8 code, __u32 info, const struct in6_addr *force_saddr, const
/// struct inet6_skb_parm *parm)` (IPv6): the error is prepared in the per-CPU slot.
#[inline(always)]
fn icmp_send_enter<C: EbpfContext + Args, M: Mem>(ctx: &C, mode: u8, family: u16) -> ReadResult<()> {
    let Some(slot) = enter_state() else { return Ok(()) };
    slot.active = 0;
    let skb: *const u8 = ctx.get(0)?;
    // An `int` for IPv4, a `u8` for IPv6: the low byte either way.
    let (icmp_type, icmp_code) = (ctx.get::<u64>(1)? as u8, ctx.get::<u64>(2)? as u8);
    slot.dns = u8::from(fill::<C, M>(ctx, mode, family, skb, icmp_type, icmp_code, slot)?);
    slot.skb = skb as u64;
    slot.active = 1;
    Ok(())
}

/// The reply was handed to the IP layer: the ICMP error is sent. It is emitted here, where it is decided,
/// not at the exit hook: before 5.14 the kretprobe of a call that another call nested in (from the softirqs
/// its `local_bh_enable()` runs) never fires (kernel/kprobes.c, the kretprobe instances of one task), and its
/// error would be lost.
#[inline(always)]
fn reply_pushed<C: EbpfContext>(ctx: &C) -> ReadResult<()> {
    if let Some(slot) = state()
        && slot.active == 1
    {
        decided(ctx, slot);
    }
    Ok(())
}

/// Emits the call's error, decided now, and closes the slot to everything after.
#[inline(always)]
fn decided<C: EbpfContext>(ctx: &C, slot: &mut IcmpSend) {
    slot.active = 0;
    note_port_unreachable(slot.skb, &slot.event.record);
    let dns = slot.dns != 0;
    emit_sent(ctx, slot, dns);
}

/// Return of `icmp_global_allow()` (the global token bucket, `net.ipv4.icmp_msgs_per_sec` and
/// `icmp_msgs_burst`) or `inet_peer_xrlim_allow()` (per destination, `net.ipv4.icmp_ratelimit`,
/// `net.ipv6.icmp.ratelimit`), both called from inside `__icmp_send` / `icmp6_send`, which gives up when
/// either says no: the error is emitted as suppressed, here for the reason above.
#[inline(always)]
fn rate_limit_exit<C: EbpfContext>(ctx: &C, allowed: bool, scope: u8) -> ReadResult<()> {
    if let Some(slot) = state()
        && slot.active == 1
        && !allowed
    {
        slot.event.record.header.kind = kind::ICMP_SUPPRESSED;
        slot.event.record.flags |= scope;
        decided(ctx, slot);
    }
    Ok(())
}

/// The call returns: its slot is left. One that gave up for another reason (no route back, an error about an
/// error) was never an ICMP error the host sent, and emitted nothing. A lost exit (see [`reply_pushed`])
/// leaves the depth one level too deep, which the next calls use as they would the first.
#[inline(always)]
fn icmp_send_exit() -> ReadResult<()> {
    if let Some(slot) = exit_state() {
        slot.active = 0;
    }
    Ok(())
}

// fentry/fexit.

programs! {
    #[fentry(function = "__icmp_send")]
    fn fentry_icmp_send(ctx: FEntryContext) { icmp_send_enter::<_, Btf>(&ctx, probe::FENTRY, AF_INET) }

    #[fexit(function = "__icmp_send")]
    fn fexit_icmp_send(ctx: FExitContext) { icmp_send_exit() }

    #[fentry(function = "icmp6_send")]
    fn fentry_icmp6_send(ctx: FEntryContext) { icmp_send_enter::<_, Btf>(&ctx, probe::FENTRY, AF_INET6) }

    #[fexit(function = "icmp6_send")]
    fn fexit_icmp6_send(ctx: FExitContext) { icmp_send_exit() }

    #[fentry(function = "ip_push_pending_frames")]
    fn fentry_ip_push_pending_frames(ctx: FEntryContext) { reply_pushed(&ctx) }

    #[fentry(function = "ip6_push_pending_frames")]
    fn fentry_ip6_push_pending_frames(ctx: FEntryContext) { reply_pushed(&ctx) }

    /// `bool icmp_global_allow(struct net *net)` (6.10, and the 6.1.y and 6.6.y backports): the return value is
    /// the second. `bpf_get_func_ret`, which finds it whatever the count, is 5.17.
    #[fexit(function = "icmp_global_allow")]
    fn fexit_icmp_global_allow(ctx: FExitContext) { global_allow_exit(&ctx, 1) }

    /// `bool icmp_global_allow(void)`, before: the return value is the first. The verifier refuses the program
    /// above there (it reads past the arguments), so this one goes in instead.
    #[fexit(function = "icmp_global_allow")]
    fn fexit_global_allow_noargs(ctx: FExitContext) { global_allow_exit(&ctx, 0) }
}

/// `icmp_global_allow`'s return value, argument `at` of the fexit context.
#[inline(always)]
fn global_allow_exit(ctx: &FExitContext, at: usize) -> ReadResult<()> {
    ctx.get::<u64>(at).and_then(|r| rate_limit_exit(ctx, r as u8 != 0, icmp_sent_flags::SUPPRESSED_GLOBAL))
}

programs! {
    /// `bool inet_peer_xrlim_allow(struct inet_peer *peer, int timeout)`: the return value is the third.
    #[fexit(function = "inet_peer_xrlim_allow")]
    fn fexit_inet_peer_xrlim_allow(ctx: FExitContext) {
        ctx.get::<u64>(2).and_then(|r| rate_limit_exit(&ctx, r as u8 != 0, icmp_sent_flags::SUPPRESSED_HOST))
    }
}

// kprobe/kretprobe.

programs! {
    #[kprobe]
    fn kprobe_icmp_send(ctx: ProbeContext) { icmp_send_enter::<_, Probe>(&ctx, probe::KPROBE, AF_INET) }

    #[kprobe]
    fn kprobe_icmp6_send(ctx: ProbeContext) { icmp_send_enter::<_, Probe>(&ctx, probe::KPROBE, AF_INET6) }

    /// Both `__icmp_send` and `icmp6_send` return here.
    #[kretprobe]
    fn kretprobe_icmp_send(ctx: RetProbeContext) { icmp_send_exit() }

    /// Both `ip_push_pending_frames` and `ip6_push_pending_frames`.
    #[kprobe]
    fn kprobe_push_pending_frames(ctx: ProbeContext) { reply_pushed(&ctx) }

    #[kretprobe]
    fn kretprobe_global_allow(ctx: RetProbeContext) {
        let allowed = ctx.ret::<u64>() as u8 != 0;
        rate_limit_exit(&ctx, allowed, icmp_sent_flags::SUPPRESSED_GLOBAL)
    }

    #[kretprobe]
    fn kretprobe_inet_peer_xrlim_allow(ctx: RetProbeContext) {
        let allowed = ctx.ret::<u64>() as u8 != 0;
        rate_limit_exit(&ctx, allowed, icmp_sent_flags::SUPPRESSED_HOST)
    }
}

// Tracepoint mode.

programs! {
    /// `icmp:icmp_send` (6.10+, backported to 6.1.130 and 6.6.81):
    /// `TP_PROTO(const struct sk_buff *skb, int type, int code)`. A `tp_btf` program: `skb` is typed, and its
    /// members are plain loads (`kernel::Btf`).
    #[btf_tracepoint(function = "icmp_send")]
    fn tp_icmp_send(ctx: BtfTracePointContext) { icmp_send_tracepoint(&ctx) }
}

/// Built in the first per-CPU slot (no fentry runs in this mode to share it): filtered before it takes buffer
/// space, and too large for the stack beside everything else.
#[inline(always)]
fn icmp_send_tracepoint(ctx: &BtfTracePointContext) -> ReadResult<()> {
    let Some(slot) = level(0) else { return Ok(()) };
    let skb: *const u8 = ctx.get(0)?;
    let (icmp_type, icmp_code) = (ctx.get::<u64>(1)? as u8, ctx.get::<u64>(2)? as u8);
    let dns = fill::<_, Btf>(ctx, probe::TRACEPOINT, AF_INET, skb, icmp_type, icmp_code, slot)?;
    note_port_unreachable(skb as u64, &slot.event.record);
    emit_sent(ctx, slot, dns);
    Ok(())
}

/// The packet this CPU last answered with a port unreachable, and when (`jiffies`).
#[repr(C)]
pub struct Answered {
    skb: u64,
    jiffies: u64,
}

#[map]
static ANSWERED: PerCpuArray<Answered> = PerCpuArray::with_max_entries(1, 0);

/// How long after its port unreachable the drop of a packet is taken for that packet's. The kernel frees it
/// right after sending (`__udp4_lib_rcv`, `nft_reject_*` then `NF_DROP`), in the same softirq, which takes
/// microseconds, and milliseconds under emulation (QEMU TCG: the first error of a flow, its stack walked).
/// The bound only keeps a note whose packet was never dropped from matching a later packet at its address.
const ANSWERED_NS: u64 = 100_000_000;

/// Notes the packet a port unreachable (sent, or stopped by a rate limit) answers: its drop follows, and is
/// not reported again (`udp_dropped.rs`).
#[inline(always)]
fn note_port_unreachable(skb: u64, event: &IcmpSent) {
    let port_unreachable = if u16::from(event.header.family) == AF_INET {
        (event.icmp_type, event.icmp_code) == (icmp::DEST_UNREACH, icmp::PORT_UNREACH)
    } else {
        (event.icmp_type, event.icmp_code) == (icmpv6::DEST_UNREACH, icmpv6::PORT_UNREACH)
    };
    if port_unreachable && let Some(answered) = slot(&ANSWERED) {
        answered.skb = skb;
        answered.jiffies = jiffies();
    }
}

/// Whether `skb` is the packet this CPU just answered with a port unreachable; the note is then used up.
#[inline(always)]
pub(crate) fn answered_port_unreachable(skb: u64) -> bool {
    let Some(answered) = slot(&ANSWERED) else { return false };
    if answered.skb != skb {
        return false;
    }
    answered.skb = 0;
    // A tick more: the note may be taken just before a tick, its drop just after.
    jiffies().wrapping_sub(answered.jiffies) <= ticks(ANSWERED_NS) + 1
}

/// Uses up the note if it is `skb`'s, whose drop was told apart without it (`udp_dropped::reported_by_icmp_hook`):
/// left, it would take a later packet at the same address for this one.
#[inline(always)]
pub(crate) fn forget_answered(skb: u64) {
    if let Some(answered) = slot(&ANSWERED)
        && answered.skb == skb
    {
        answered.skb = 0;
    }
}

/// Where no hook sees a family's ICMP errors (IPv6 in tracepoint mode, which hooks `icmp:icmp_send`, IPv4
/// only; IPv4 too before that tracepoint, 6.10): `__udp4_lib_rcv` and `__udp6_lib_rcv` (net/ipv4/udp.c,
/// net/ipv6/udp.c, 5.17+) free a datagram no socket takes with `SKB_DROP_REASON_NO_SOCKET` right after
/// `icmp_send(skb, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0)` / `icmpv6_send(skb, ICMPV6_DEST_UNREACH,
/// ICMPV6_PORT_UNREACH, 0)`: the port unreachable the kernel decided to send. Whether a rate limit let it out
/// is not seen here (`AT_DROP`); the namespace's counters say how many were not. Built in the second slot:
/// `tp_icmp_send` uses the first.
#[inline(always)]
pub(crate) fn icmp_at_no_socket_drop(ctx: &BtfTracePointContext, skb: *const u8) -> ReadResult<()> {
    let Some(slot) = level(1) else { return Ok(()) };
    let v4 = u16::from_be(Btf::load::<u16>(skb, offset!(skb_protocol), "sk_buff.protocol")?) == ETH_P_IP;
    let (family, icmp_type, code) = if v4 {
        (AF_INET, icmp::DEST_UNREACH, icmp::PORT_UNREACH)
    } else {
        (AF_INET6, icmpv6::DEST_UNREACH, icmpv6::PORT_UNREACH)
    };
    let dns = fill::<_, Btf>(ctx, probe::TRACEPOINT, family, skb, icmp_type, code, slot)?;
    // TCP and others drop with the same reason, and answer otherwise (a reset).
    if slot.event.record.proto != IPPROTO_UDP && slot.event.record.proto != IPPROTO_UDPLITE {
        return Ok(());
    }
    slot.event.record.flags |= icmp_sent_flags::AT_DROP;
    emit_sent(ctx, slot, dns);
    Ok(())
}
