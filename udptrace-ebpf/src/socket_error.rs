//! An ICMP error reaching a UDP socket: `socket_error`.
//!
//! fentry/kprobe modes follow the kernel's own decision in `__udp4_lib_err` / `__udp6_lib_err`
//! (`net/ipv4/udp.c`, `net/ipv6/udp.c`, identical in shape from 5.x to 6.18, and from 7.2 in `udp_err` /
//! `udpv6_err`, into which they are folded):
//!
//! ```text
//! sk = __udp4_lib_lookup(quoted packet, reversed)
//! if !sk: (tunnel lookups, then) return -ENOENT             -> exit: verdict no_socket
//! if a tunnel's socket (encap_type): the tunnel takes it    -> exit, nothing reported: user space says tunnel
//! if !RECVERR: if soft error or not connected: return 0     -> exit, nothing reported: ignored_*
//! else ip_icmp_error() -> sock_queue_err_skb(sk)            -> sk_error_report(sk) once if queued
//! sk->sk_err = err; sk_error_report(sk)                     -> sk_error_report(sk): delivered, sk_err
//! ```
//!
//! The whole sequence runs synchronously in one softirq on one CPU, so the hooks meet in a per-CPU
//! slot (`UDP_ERR`): filled at entry, amended by the reports, emitted once at exit. No hook runs outside
//! an ICMP error: the socket is the one `sk_error_report` names while the error is in flight. Its
//! IP_RECVERR (IPV6_RECVERR) is read from the socket where the BTF shows it (`inet_sock.inet_flags` from
//! 6.6, a bitfield before), in every mode. An error the kernel reported to nobody is
//! flagged `UNREPORTED`: which socket ignored it, connected or not, user space looks up in the socket
//! table. The verdict is what the kernel did, not a re-derivation from the errno tables.
//!
//! Tracepoint mode sees only the wake-up: `sock:inet_sk_error_report` (5.14+) fires inside
//! `sk_error_report()` for an error the kernel delivers. Ignored errors and ICMPs matching no socket
//! never reach it, and the ICMP header is not visible there.

use aya_ebpf::{
    EbpfContext,
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use udptrace_common::{
    AF_INET, AF_INET6, IPPROTO_UDP, IPPROTO_UDPLITE, RECVERR_UNKNOWN, SocketError, WithDns, icmp, icmpv6, kind, probe,
    socket_error_flags, verdict,
};

use crate::{
    conntrack, dns,
    filter::{self, config},
    kernel::{
        Args, Probe, ReadResult, header, offset, offsets, read, read_into, skb_dev_netns, skb_ifindex, slot,
        sock_netns, zero,
    },
    output::{count_failure, emit, to_hand_over},
    owner::fill_owner,
    packet,
    program::programs,
};

/// `-ENOENT`: `__udp4_lib_err` found no socket (an `int` return since 4.20).
const ENOENT: i64 = 2;
/// The IPv6 header before the quoted UDP header (`icmpv6_notify`: none between them is the case traced).
const IPV6_HEADER_LEN: u32 = 40;

/// One ICMP error on its way through `__udp{4,6}_lib_err` on this CPU.
#[repr(C)]
pub struct UdpErr {
    /// The record, and what the ICMP error quotes of the datagram's payload when it is on a DNS port.
    event: WithDns<SocketError>,
    /// The socket `sk_error_report()` named, 0 if none (yet).
    sk: u64,
    active: u8,
    /// How often `sk_error_report()` ran for it: once when the error was delivered, once more when it was
    /// also queued for `MSG_ERRQUEUE` (`sock_queue_err_skb` reports too).
    reports: u8,
    /// The quoted datagram is on a DNS port: its payload is in `event.dns`.
    dns: u8,
    _pad: [u8; 5],
    /// Where the ICMP error's bytes are, with `--pcap`.
    packet: packet::At,
}

#[map]
static UDP_ERR: PerCpuArray<UdpErr> = PerCpuArray::with_max_entries(1, 0);

/// The error in flight on this CPU: these hooks run in one softirq, which does not nest on one CPU.
#[inline(always)]
fn state() -> Option<&'static mut UdpErr> {
    slot(&UDP_ERR)
}

/// Where an ICMP error enters UDP, and the arguments that say which.
#[derive(Clone, Copy)]
enum ErrEntry {
    /// `int __udp4_lib_err(struct sk_buff *skb, u32 info, struct udp_table *udptable)`.
    Udp4,
    /// `int __udp6_lib_err(struct sk_buff *skb, struct inet6_skb_parm *opt, u8 type, u8 code, int offset,
    /// __be32 info, struct udp_table *udptable)` (5.10 to 6.18).
    Udp6,
    /// `void icmpv6_notify(struct sk_buff *skb, u8 type, u8 code, __be32 info)` (returns a drop reason from
    /// 6.12), which calls `__udp6_lib_err` through `udpv6_err`.
    Icmpv6Notify,
}

/// Entry of an ICMP error into UDP: reads the ICMP header and the quoted packet and opens the error in the
/// per-CPU slot.
///
/// The skb is the ICMP packet: `skb->data` points at the quoted IP header (pulled by `icmp_rcv` /
/// `icmpv6_rcv`), the transport header is the ICMP header, the network header the outer IP header.
#[inline(always)]
fn udp_err_enter<C: Args>(ctx: &C, mode: u8, entry: ErrEntry) -> ReadResult<()> {
    let Some(slot) = state() else { return Ok(()) };
    slot.active = 0;
    let skb: *const u8 = ctx.get(0)?;
    let off = offsets();
    let data = read::<*const u8>(skb, off.skb_data, "sk_buff.data")?;
    // type, code and where the quoted UDP header starts; `None` for IPv4, read from the ICMP header. The quoted
    // packet's protocol tells UDP from UDP-Lite (both come here): DNS is only over UDP.
    let v6 = match entry {
        ErrEntry::Udp4 => None,
        ErrEntry::Udp6 => Some((ctx.get::<u8>(2)?, ctx.get::<u8>(3)?, ctx.get::<i32>(4)? as u32)),
        ErrEntry::Icmpv6Notify => {
            let next = read::<u8>(data, 6, "the quoted ipv6hdr.nexthdr")?;
            if next != IPPROTO_UDP && next != IPPROTO_UDPLITE {
                return Ok(());
            }
            Some((ctx.get::<u8>(1)?, ctx.get::<u8>(2)?, IPV6_HEADER_LEN))
        }
    };
    let head = read::<*const u8>(skb, off.skb_head, "sk_buff.head")?;
    let outer = head.wrapping_add(read::<u16>(skb, off.skb_network_header, "sk_buff.network_header")? as usize);
    let netns = skb_dev_netns::<Probe>(skb, &off)?;
    // The ICMP error from its IP header on, with its quote.
    slot.packet = packet::at::<Probe>(skb, outer);

    // Built in place in the per-CPU slot: with a SocketError on the stack as well, the program would pass
    // the verifier's 512-byte stack limit (every kernel's).
    slot.dns = 0;
    let event = &mut slot.event.record;
    // Every byte is part of a count's key (tally.rs): cleared first.
    zero(event);
    event.header = header(kind::SOCKET_ERROR, mode, if v6.is_some() { AF_INET6 } else { AF_INET }, netns);
    event.flags = socket_error_flags::ICMP_KNOWN | socket_error_flags::REMOTE_KNOWN;
    event.verdict = verdict::UNKNOWN;
    event.ifindex = skb_ifindex(skb, &off)?;
    // The connection of the datagram the error quotes, when conntrack translated it (the ICMP packet carries
    // its entry: `conntrack.rs`); a failed read is counted and the error still reported.
    count_failure(conntrack::fill::<Probe>(skb, &mut event.conntrack));
    // The quoted packet was sent by a local socket: its source is the socket's address, its
    // destination the peer's.
    let (ports_at, quoted_proto) = match v6 {
        None => {
            let header =
                head.wrapping_add(read::<u16>(skb, off.skb_transport_header, "sk_buff.transport_header")? as usize);
            event.icmp_type = read::<u8>(header, 0, "icmphdr.type")?;
            event.icmp_code = read::<u8>(header, 1, "icmphdr.code")?;
            read_into(outer, 12, &mut event.icmp_from[..4], "iphdr.saddr")?;
            read_into(data, 12, &mut event.local_addr[..4], "the quoted iphdr.saddr")?;
            read_into(data, 16, &mut event.remote_addr[..4], "the quoted iphdr.daddr")?;
            let ihl = u32::from(read::<u8>(data, 0, "the quoted iphdr.ihl")? & 0x0f) * 4;
            (ihl, read::<u8>(data, 9, "the quoted iphdr.protocol")?)
        }
        Some((icmp_type, icmp_code, offset)) => {
            event.icmp_type = icmp_type;
            event.icmp_code = icmp_code;
            read_into(outer, 8, &mut event.icmp_from, "ipv6hdr.saddr")?;
            read_into(data, 8, &mut event.local_addr, "the quoted ipv6hdr.saddr")?;
            read_into(data, 24, &mut event.remote_addr, "the quoted ipv6hdr.daddr")?;
            // Extension headers between it and UDP leave the protocol unknown here, and the payload unread.
            let next = if offset == IPV6_HEADER_LEN { read::<u8>(data, 6, "the quoted ipv6hdr.nexthdr")? } else { 0 };
            (offset, next)
        }
    };
    // Route updates, not errors: the kernel never reports them to a socket.
    let route_update = match v6 {
        None => matches!(event.icmp_type, icmp::SOURCE_QUENCH | icmp::REDIRECT),
        Some(_) => event.icmp_type == icmpv6::NDISC_REDIRECT,
    };
    if route_update {
        return Ok(());
    }
    let ports = read::<[u8; 4]>(data, ports_at, "the quoted udphdr ports")?;
    event.local_port = u16::from_be_bytes([ports[0], ports[1]]);
    event.remote_port = u16::from_be_bytes([ports[2], ports[3]]);
    if quoted_proto == IPPROTO_UDP && filter::dns_port(event.local_port, event.remote_port) {
        // What the ICMP error quotes of the payload (ICMPv4 quotes up to 576 bytes of the whole packet, ICMPv6
        // up to 1280, a router may quote 8 bytes of it): up to the end of the ICMP packet's linear data, which
        // holds the quote (`icmp_rcv` / `icmpv6_rcv` pulled it there). A payload that could not be read is
        // said empty and counted; the error is still reported.
        let udp = data.wrapping_add(ports_at as usize);
        let length = u16::from_be(read::<u16>(udp, 4, "the quoted udphdr.len")?);
        let end = head.wrapping_add(read::<u32>(skb, offset!(skb_tail), "sk_buff.tail")? as usize);
        count_failure(dns::copy_payload(
            &mut slot.event.dns,
            udp.wrapping_add(8),
            u32::from(length).saturating_sub(8),
            end,
        ));
        slot.dns = 1;
    }

    slot.sk = 0;
    slot.reports = 0;
    slot.active = 1;
    Ok(())
}

/// Entry of `void sk_error_report(struct sock *sk)` (5.12+; before, callers invoked `sk->sk_error_report`
/// directly), for any socket's error; with no ICMP error in flight on this CPU, a map lookup and a compare.
/// While one is, the socket it names is the UDP socket the error matched: raw sockets are told before
/// `__udp4_lib_err` runs. With IP_RECVERR it runs twice: from `sock_queue_err_skb` before `sk_err` is set,
/// then after.
#[inline(always)]
fn error_report<C: Args>(ctx: &C) -> ReadResult<()> {
    let Some(slot) = state() else { return Ok(()) };
    if slot.active != 1 {
        return Ok(());
    }
    let sk: *const u8 = ctx.get(0)?;
    if slot.sk == 0 {
        slot.sk = sk as u64;
    } else if slot.sk != sk as u64 {
        return Ok(());
    }
    slot.reports = slot.reports.saturating_add(1);
    let errno = read::<i32>(sk, offsets().sk_err, "sock.sk_err")?;
    if errno != 0 {
        slot.event.record.errno = errno;
    }
    Ok(())
}

/// Return of `__udp{4,6}_lib_err` (`ret`), or of a caller that does not pass its value on (`None`):
/// decide the verdict from what happened, emit the event.
#[inline(always)]
fn udp_err_exit<C: EbpfContext>(ctx: &C, ret: Option<i64>) -> ReadResult<()> {
    let Some(slot) = state() else { return Ok(()) };
    if slot.active != 1 {
        return Ok(());
    }
    slot.active = 0;
    if slot.sk != 0 {
        let sk = slot.sk as *const u8;
        fill_owner(sk, &mut slot.event.record)?;
        let v6 = slot.event.record.header.family == AF_INET6 as u8;
        // A flag that cannot be read stays unknown; the event still goes out.
        let _ = fill_recverr(sk, v6, &mut slot.event.record);
    }
    let event = &mut slot.event.record;
    event.verdict = if ret == Some(-ENOENT) {
        verdict::NO_SOCKET
    } else if slot.reports >= 1 {
        verdict::DELIVERED
    } else {
        // Reported to nobody: a socket ignored it (a soft error on a connected socket, or an unconnected
        // one, without IP_RECVERR; or a tunnel took it), or, where the return is not seen, none matched.
        event.flags |= socket_error_flags::UNREPORTED;
        verdict::UNKNOWN
    };
    let passes = filter::socket_error_passes(event);
    // With the quoted payload for a DNS port, and then never counted in the kernel: a count would lose the name.
    if to_hand_over(event, passes, slot.dns != 0) {
        if slot.dns != 0 {
            event.flags |= socket_error_flags::DNS;
            packet::output_with(ctx, &slot.event, slot.packet);
        } else {
            packet::output_with(ctx, event, slot.packet);
        }
    }
    Ok(())
}

// fentry/fexit (BTF trampolines, x86_64 5.5+). fexit's return value is the argument after the
// function's last one (bpf_get_func_ret would need 5.17).

programs! {
    #[fentry(function = "__udp4_lib_err")]
    fn fentry_udp4_lib_err(ctx: FEntryContext) { udp_err_enter(&ctx, probe::FENTRY, ErrEntry::Udp4) }

    #[fexit(function = "__udp4_lib_err")]
    fn fexit_udp4_lib_err(ctx: FExitContext) {
        ctx.get::<i32>(3).and_then(|ret| udp_err_exit(&ctx, Some(i64::from(ret))))
    }

    #[fentry(function = "__udp6_lib_err")]
    fn fentry_udp6_lib_err(ctx: FEntryContext) { udp_err_enter(&ctx, probe::FENTRY, ErrEntry::Udp6) }

    /// 7 arguments: the return value is the 8th.
    #[fexit(function = "__udp6_lib_err")]
    fn fexit_udp6_lib_err(ctx: FExitContext) {
        ctx.get::<i32>(7).and_then(|ret| udp_err_exit(&ctx, Some(i64::from(ret))))
    }

    /// From 7.2, `int udp_err(skb, info)` in place of `__udp4_lib_err` (folded into it, net/ipv4/udp.c): the
    /// return value is the third.
    #[fentry(function = "udp_err")]
    fn fentry_udp_err(ctx: FEntryContext) { udp_err_enter(&ctx, probe::FENTRY, ErrEntry::Udp4) }

    #[fexit(function = "udp_err")]
    fn fexit_udp_err(ctx: FExitContext) { ctx.get::<i32>(2).and_then(|ret| udp_err_exit(&ctx, Some(i64::from(ret)))) }

    /// `udpv6_err(skb, opt, type, code, offset, info)`, the six leading arguments of `__udp6_lib_err`: before 6.3
    /// in place of it (a 7-argument function), and from 7.2 where it is folded in (net/ipv6/udp.c). The return
    /// value is the seventh.
    #[fentry(function = "udpv6_err")]
    fn fentry_udpv6_err(ctx: FEntryContext) { udp_err_enter(&ctx, probe::FENTRY, ErrEntry::Udp6) }

    #[fexit(function = "udpv6_err")]
    fn fexit_udpv6_err(ctx: FExitContext) { ctx.get::<i32>(6).and_then(|ret| udp_err_exit(&ctx, Some(i64::from(ret)))) }

    /// Where neither `__udp6_lib_err` nor `udpv6_err` can be traced: `icmpv6_notify` (4 arguments) hands ICMPv6
    /// errors to them. A quoted packet with extension headers before UDP is not traced.
    #[fentry(function = "icmpv6_notify")]
    fn fentry_icmpv6_notify(ctx: FEntryContext) { udp_err_enter(&ctx, probe::FENTRY, ErrEntry::Icmpv6Notify) }

    /// Its return value (void before 6.12, a drop reason since) says nothing about UDP: the lookup does.
    #[fexit(function = "icmpv6_notify")]
    fn fexit_icmpv6_notify(ctx: FExitContext) { udp_err_exit(&ctx, None) }

    #[fentry(function = "sk_error_report")]
    fn fentry_sk_error_report(ctx: FEntryContext) { error_report(&ctx) }

    /// Before 5.12, which has no `sk_error_report`: the callback `__udp4_lib_err` calls for the sockets processes
    /// open (net/core/sock.c, `sock_init_data`).
    #[fentry(function = "sock_def_error_report")]
    fn fentry_sock_def_error_report(ctx: FEntryContext) { error_report(&ctx) }
}

// kprobe/kretprobe (CONFIG_KPROBES): the same hooks, arguments from registers.

programs! {
    #[kprobe]
    fn kprobe_udp4_lib_err(ctx: ProbeContext) { udp_err_enter(&ctx, probe::KPROBE, ErrEntry::Udp4) }

    #[kprobe]
    fn kprobe_udp6_lib_err(ctx: ProbeContext) { udp_err_enter(&ctx, probe::KPROBE, ErrEntry::Udp6) }

    /// Both `__udp4_lib_err` and `__udp6_lib_err` return here.
    #[kretprobe]
    fn kretprobe_udp_lib_err(ctx: RetProbeContext) { udp_err_exit(&ctx, Some(i64::from(ctx.ret::<i32>()))) }

    #[kprobe]
    fn kprobe_sk_error_report(ctx: ProbeContext) { error_report(&ctx) }
}

// Tracepoint mode.

programs! {
    /// `sock:inet_sk_error_report` (5.14+): `TP_PROTO(const struct sock *sk)`. A `tp_btf` program like the
    /// others of this mode; the socket is read through the helper (`kernel::Probe`), as in the other modes:
    /// an error a socket is given is rarer than the packets behind it.
    #[btf_tracepoint(function = "inet_sk_error_report")]
    fn tp_inet_sk_error_report(ctx: BtfTracePointContext) { inet_sk_error_report(&ctx) }
}

#[inline(always)]
fn inet_sk_error_report(ctx: &BtfTracePointContext) -> ReadResult<()> {
    let sk: *const u8 = ctx.get(0)?;
    // Each offset read alone (`offset!`), not a copy of them all: this program's stack is near the limit.

    let family = read::<u16>(sk, offset!(sk_family), "sock.__sk_common.skc_family")?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let protocol = read::<u16>(sk, offset!(sk_protocol), "sock.sk_protocol")?;
    if protocol != IPPROTO_UDP as u16 && protocol != IPPROTO_UDPLITE as u16 {
        return Ok(());
    }
    // The tracepoint fires for every sk_error_report(): an ICMP error reaching the socket (from
    // __udp4_lib_err / __udp6_lib_err, with sk_err just set), but also an error queued for MSG_ERRQUEUE (with
    // IP_RECVERR, sock_queue_err_skb() reports once before __udp4_lib_err sets sk_err and reports again), a
    // MSG_ERRQUEUE read that leaves more queued, an abort (net/core/skbuff.c, net/ipv4/udp.c). Only the first
    // is an ICMP error: the others are told apart by their caller on the kernel stack.
    let errno = read::<i32>(sk, offset!(sk_err), "sock.sk_err")?;
    if errno == 0 || reported_for_another_reason(ctx) {
        return Ok(());
    }

    // Built in the per-CPU slot (no fentry or kprobe runs in this mode to share it), as in those modes: on
    // the stack, the event and the filters' temporaries come close to the verifier's 512-byte limit.
    let Some(slot) = state() else { return Ok(()) };
    slot.active = 0;
    let event = &mut slot.event.record;
    zero(event);
    event.header = header(kind::SOCKET_ERROR, probe::TRACEPOINT, family, sock_netns::<Probe>(sk)?);
    event.errno = errno;
    // sk_error_report only runs for an error the socket was given.
    event.verdict = verdict::DELIVERED;
    event.local_port = read::<u16>(sk, offset!(sk_num), "sock.__sk_common.skc_num")?;
    event.remote_port = u16::from_be(read::<u16>(sk, offset!(sk_dport), "sock.__sk_common.skc_dport")?);
    read_socket_addrs(sk, family, event)?;
    fill_owner(sk, event)?;
    // The tracepoint does not say which ICMP brought the error: an IPv6 socket's is ICMPv6 unless its peer
    // is an IPv4-mapped address (a dual-stack socket talking IPv4).
    // An unconnected IPv6 socket has no peer to tell: its flag stays unknown (unless it is IPv6 only, which
    // is not read here).
    let v4_mapped = event.remote_addr[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    if family == AF_INET || event.remote_port != 0 {
        // A flag that cannot be read stays unknown; the event still goes out.
        let _ = fill_recverr(sk, family == AF_INET6 && !v4_mapped, event);
    }
    // An unconnected socket has no peer; its error's destination is only in the quoted packet.
    if event.remote_port != 0 {
        event.flags |= socket_error_flags::REMOTE_KNOWN;
    }
    let passes = filter::socket_error_passes(event);
    emit(ctx, event, passes);
    Ok(())
}

#[inline(always)]
fn read_socket_addrs(sk: *const u8, family: u16, event: &mut SocketError) -> ReadResult<()> {
    if family == AF_INET {
        event.local_addr[..4].copy_from_slice(&read::<[u8; 4]>(sk, offset!(sk_rcv_saddr), "sock.skc_rcv_saddr")?);
        event.remote_addr[..4].copy_from_slice(&read::<[u8; 4]>(sk, offset!(sk_daddr), "sock.skc_daddr")?);
    } else {
        event.local_addr = read::<[u8; 16]>(sk, offset!(sk_v6_rcv_saddr), "sock.skc_v6_rcv_saddr")?;
        event.remote_addr = read::<[u8; 16]>(sk, offset!(sk_v6_daddr), "sock.skc_v6_daddr")?;
    }
    Ok(())
}

/// Frames of the kernel stack at `sock:inet_sk_error_report` searched for the reporter: the program, the
/// tracepoint's glue (`bpf_trace_run1`, `__bpf_trace_inet_sk_error_report`, `__traceiter_...`),
/// `sk_error_report`, its caller, and room for more glue.
const REPORT_FRAMES: usize = 10;

/// Whether one of `udptrace_common::NOT_ICMP_REPORTERS` made this report (an error-queue write or read, an
/// abort), from the return addresses on the kernel stack. An unknown stack is not skipped.
#[inline(always)]
fn reported_for_another_reason(ctx: &BtfTracePointContext) -> bool {
    let mut frames = [0u64; REPORT_FRAMES];
    // SAFETY: the buffer is `frames`, of the size passed.
    let bytes = unsafe {
        aya_ebpf::helpers::generated::bpf_get_stack(
            ctx.as_ptr(),
            frames.as_mut_ptr().cast(),
            (REPORT_FRAMES * 8) as u32,
            0,
        )
    };
    if bytes <= 0 {
        return false;
    }
    // Written out frame by frame and range by range: no loop for the verifier to bound.
    macro_rules! within {
        ($at:expr, $i:literal) => {{
            let (start, end) = (config!(not_icmp_reporters[$i].start), config!(not_icmp_reporters[$i].end));
            start != 0 && $at >= start && $at < end
        }};
    }
    let reporter = |at: u64| within!(at, 0) || within!(at, 1) || within!(at, 2) || within!(at, 3) || within!(at, 4);
    reporter(frames[0])
        || reporter(frames[1])
        || reporter(frames[2])
        || reporter(frames[3])
        || reporter(frames[4])
        || reporter(frames[5])
        || reporter(frames[6])
        || reporter(frames[7])
        || reporter(frames[8])
        || reporter(frames[9])
}

/// Sets the event's IP_RECVERR (for an ICMPv6 error, IPV6_RECVERR) as the socket has it, when the kernel's
/// BTF showed where it is: the flag the kernel tested, not a guess from what it did.
#[inline(always)]
fn fill_recverr(sk: *const u8, v6: bool, event: &mut SocketError) -> ReadResult<()> {
    let (at, bit) =
        if v6 { (offset!(recverr6_at), offset!(recverr6_bit)) } else { (offset!(recverr4_at), offset!(recverr4_bit)) };
    if at == RECVERR_UNKNOWN {
        return Ok(());
    }
    let base = if v6 && offset!(recverr6_in_pinfo) == 1 {
        let pinfo = read::<*const u8>(sk, offset!(pinet6), "inet_sock.pinet6")?;
        if pinfo.is_null() {
            return Ok(());
        }
        pinfo
    } else {
        sk
    };
    let byte = read::<u8>(base, at, "the socket's RECVERR flag")?;
    event.flags |= socket_error_flags::RECVERR_KNOWN;
    if (byte >> bit) & 1 == 1 {
        event.flags |= socket_error_flags::RECVERR;
    }
    Ok(())
}
