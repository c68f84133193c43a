//! An ICMP error reaching a UDP socket: `socket_error`.
//!
//! fentry/kprobe modes follow the kernel's own decision in `__udp4_lib_err` / `__udp6_lib_err`
//! (`net/ipv4/udp.c`, `net/ipv6/udp.c`, identical in shape from 5.x to 6.18):
//!
//! ```text
//! sk = __udp4_lib_lookup(quoted packet, reversed)          -> fexit: which socket (or none)
//! if !sk: return -ENOENT                                    -> verdict no_socket
//! if !RECVERR: if soft error or not connected: return 0     -> verdict ignored_*
//! else ip_icmp_error() -> sock_queue_err_skb() == 0         -> recverr: queued on the error queue
//! sk->sk_err = err; sk_error_report(sk)                     -> verdict delivered, errno = sk_err
//! ```
//!
//! The whole sequence runs synchronously in one softirq on one CPU, so the hooks meet in a per-CPU
//! slot (`UDP_ERR`): filled at entry, amended by the inner hooks, emitted once at exit. The verdict is
//! what the kernel did, not a re-derivation from the errno tables.
//!
//! Tracepoint mode sees only the wake-up: `sock:inet_sk_error_report` (5.14+) fires inside
//! `sk_error_report()` for an error the kernel delivers. Ignored errors and ICMPs matching no socket
//! never reach it, and the ICMP header is not visible there.

use aya_ebpf::{
    EbpfContext,
    macros::{fentry, fexit, kprobe, kretprobe, map, raw_tracepoint},
    maps::PerCpuArray,
    programs::{FEntryContext, FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use udptrace_common::{
    AF_INET, AF_INET6, IPPROTO_UDP, IPPROTO_UDPLITE, KernelOffsets, SocketError, kind, probe, socket_error_flags,
    verdict,
};

use crate::{
    emit, filter,
    kernel::{ReadResult, header, netns_inum, offsets, read, read_into, sock_netns},
    owner::fill_owner,
    report,
};

/// `-ENOENT`: `__udp4_lib_err` found no socket (an `int` return since 4.20).
const ENOENT: i64 = 2;
/// `TCP_ESTABLISHED`: what `connect()` sets on a UDP socket.
const TCP_ESTABLISHED: u8 = 1;
/// ICMP types that are route updates, not errors: the kernel never reports them to a socket.
const ICMP_SOURCE_QUENCH: u8 = 4;
const ICMP_REDIRECT: u8 = 5;
const NDISC_REDIRECT: u8 = 137;

/// One ICMP error on its way through `__udp{4,6}_lib_err` on this CPU.
#[repr(C)]
pub struct UdpErr {
    event: SocketError,
    /// The socket the lookup found, 0 if none (yet).
    sk: u64,
    active: u8,
    /// `sk_error_report()` ran for the socket after `sk_err` was set.
    reported: u8,
    /// `sock_queue_err_skb()` queued the error on the socket's error queue.
    queued: u8,
    _pad: [u8; 5],
}

#[map]
static UDP_ERR: PerCpuArray<UdpErr> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn state() -> Option<&'static mut UdpErr> {
    // SAFETY: a per-CPU slot; these hooks run in softirq, which does not nest on one CPU.
    UDP_ERR.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Entry of `__udp4_lib_err(skb, info, udptable)` (`family == AF_INET`) or `__udp6_lib_err(skb, opt,
/// type, code, offset, info, udptable)` (`v6` holds type, code and offset).
///
/// The skb is the ICMP packet: `skb->data` points at the quoted IP header (pulled by `icmp_rcv` /
/// `icmpv6_rcv`), the transport header is the ICMP header, the network header the outer IP header.
#[inline(always)]
fn udp_err_enter<C: EbpfContext>(ctx: &C, mode: u8, skb: *const u8, v6: Option<(u8, u8, i32)>) -> ReadResult<()> {
    let Some(slot) = state() else { return Ok(()) };
    slot.active = 0;
    let off = offsets();
    let head = read::<*const u8>(skb, off.skb_head)?;
    let data = read::<*const u8>(skb, off.skb_data)?;
    let outer = head.wrapping_add(read::<u16>(skb, off.skb_network_header)? as usize);
    let dev = read::<*const u8>(skb, off.skb_dev)?;
    let netns = if dev.is_null() { 0 } else { netns_inum(read::<*const u8>(dev, off.dev_net)?, &off)? };

    // Built in place in the per-CPU slot: a SocketError on the stack as well would push the 6.1
    // verifier past its 512-byte stack limit.
    let event = &mut slot.event;
    event.header = header(kind::SOCKET_ERROR, mode, if v6.is_some() { AF_INET6 } else { AF_INET }, netns);
    event.flags = socket_error_flags::ICMP_KNOWN | socket_error_flags::RECVERR_KNOWN | socket_error_flags::REMOTE_KNOWN;
    event.errno = 0;
    event.verdict = verdict::UNKNOWN;
    event.sock_ino = 0;
    event.owner = Default::default();
    event._pad0 = [0; 4];
    event.local_addr = [0; 16];
    event.remote_addr = [0; 16];
    event.icmp_from = [0; 16];
    // The quoted packet was sent by a local socket: its source is the socket's address, its
    // destination the peer's.
    let ports_at = match v6 {
        None => {
            let icmp = head.wrapping_add(read::<u16>(skb, off.skb_transport_header)? as usize);
            event.icmp_type = read::<u8>(icmp, 0)?;
            event.icmp_code = read::<u8>(icmp, 1)?;
            read_into(outer, 12, &mut event.icmp_from[..4])?;
            read_into(data, 12, &mut event.local_addr[..4])?;
            read_into(data, 16, &mut event.remote_addr[..4])?;
            u32::from(read::<u8>(data, 0)? & 0x0f) * 4
        }
        Some((icmp_type, icmp_code, offset)) => {
            event.icmp_type = icmp_type;
            event.icmp_code = icmp_code;
            read_into(outer, 8, &mut event.icmp_from)?;
            read_into(data, 8, &mut event.local_addr)?;
            read_into(data, 24, &mut event.remote_addr)?;
            offset as u32
        }
    };
    if matches!(event.icmp_type, ICMP_SOURCE_QUENCH | ICMP_REDIRECT) && v6.is_none()
        || event.icmp_type == NDISC_REDIRECT && v6.is_some()
    {
        return Ok(());
    }
    let ports = read::<[u8; 4]>(data, ports_at)?;
    event.local_port = u16::from_be_bytes([ports[0], ports[1]]);
    event.remote_port = u16::from_be_bytes([ports[2], ports[3]]);

    slot.sk = 0;
    slot.reported = 0;
    slot.queued = 0;
    slot.active = 1;
    Ok(())
}

/// Return of `__udp4_lib_lookup` / `__udp6_lib_lookup`. These run for every UDP packet received: with
/// no error in flight on this CPU this is one map lookup and a compare.
#[inline(always)]
fn udp_lookup_exit(sk: u64) {
    if let Some(slot) = state()
        && slot.active == 1
        && sk != 0
    {
        slot.sk = sk;
    }
}

/// Return of `sock_queue_err_skb(sk, skb)`: 0 when the error was queued for `MSG_ERRQUEUE`. It fails
/// when the socket's receive buffer is full of unread errors.
#[inline(always)]
fn queue_err_exit(ret: i64) {
    if let Some(slot) = state()
        && slot.active == 1
        && ret == 0
    {
        slot.queued = 1;
    }
}

/// Entry of `sk_error_report(sk)` (5.12+; before, callers invoked `sk->sk_error_report` directly).
/// With IP_RECVERR it runs twice: from `sock_queue_err_skb` before `sk_err` is set, then after.
#[inline(always)]
fn error_report(sk: *const u8) -> ReadResult<()> {
    let Some(slot) = state() else { return Ok(()) };
    // Only the socket the lookup found: raw sockets are told of the same ICMP error in the same softirq.
    if slot.active != 1 || slot.sk != sk as u64 {
        return Ok(());
    }
    let errno = read::<i32>(sk, offsets().sk_err)?;
    if errno != 0 {
        slot.event.errno = errno;
        slot.reported = 1;
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
        fill_owner(slot.sk as *const u8, &mut slot.event)?;
    }
    let event = &mut slot.event;
    if slot.queued == 1 {
        event.flags |= socket_error_flags::RECVERR;
    }
    let no_socket = match ret {
        Some(ret) => ret == -ENOENT,
        None => slot.sk == 0 && slot.reported == 0,
    };
    event.verdict = if no_socket {
        verdict::NO_SOCKET
    } else if slot.reported == 1 {
        verdict::DELIVERED
    } else if slot.sk != 0 {
        // Not reported, socket found: the kernel dropped it. The kernel's test is
        // `!harderr || sk_state != TCP_ESTABLISHED`: a connected socket here means a soft error.
        let state = read::<u8>(slot.sk as *const u8, offsets().sk_state)?;
        if state == TCP_ESTABLISHED { verdict::IGNORED_SOFT_ERROR } else { verdict::IGNORED_UNCONNECTED }
    } else {
        // A tunnel socket took it (encap_err_rcv).
        verdict::UNKNOWN
    };
    emit(ctx, event, filter::socket_error_passes(event));
    Ok(())
}

// fentry/fexit (BTF trampolines, x86_64 5.5+). fexit's return value is the argument after the
// function's last one (bpf_get_func_ret would need 5.17).

#[fentry(function = "__udp4_lib_err")]
pub fn fentry_udp4_lib_err(ctx: FEntryContext) -> u32 {
    report(udp_err_enter(&ctx, probe::FENTRY, ctx.arg(0), None))
}

#[fexit(function = "__udp4_lib_err")]
pub fn fexit_udp4_lib_err(ctx: FExitContext) -> u32 {
    report(udp_err_exit(&ctx, Some(ctx.arg::<i32>(3) as i64)))
}

/// `icmpv6_notify(skb, type, code, info)` (4 arguments) hands an ICMPv6 error to `__udp6_lib_err`, which
/// takes 7: more than BPF trampolines take on x86_64 before 6.3 (and its wrapper `udpv6_err` cannot be
/// patched). `skb->data` is the quoted IPv6 header here; UDP right after it is the case traced (a quoted
/// packet with extension headers before UDP is not).
#[fentry(function = "icmpv6_notify")]
pub fn fentry_icmpv6_notify(ctx: FEntryContext) -> u32 {
    let skb: *const u8 = ctx.arg(0);
    let next = offsets_read_data_u8(skb, 6);
    if !matches!(next, Ok(IPPROTO_UDP | IPPROTO_UDPLITE)) {
        return 0;
    }
    let v6 = (ctx.arg::<u8>(1), ctx.arg::<u8>(2), IPV6_HEADER_LEN);
    report(udp_err_enter(&ctx, probe::FENTRY, skb, Some(v6)))
}

/// Its return value (void before 6.12, a drop reason since) says nothing about UDP: the lookup does.
#[fexit(function = "icmpv6_notify")]
pub fn fexit_icmpv6_notify(ctx: FExitContext) -> u32 {
    report(udp_err_exit(&ctx, None))
}

const IPV6_HEADER_LEN: i32 = 40;

/// A byte at `skb->data + offset`.
#[inline(always)]
fn offsets_read_data_u8(skb: *const u8, offset: u32) -> ReadResult<u8> {
    let data = read::<*const u8>(skb, offsets().skb_data)?;
    read::<u8>(data, offset)
}

#[fexit(function = "__udp4_lib_lookup")]
pub fn fexit_udp4_lookup(ctx: FExitContext) -> u32 {
    udp_lookup_exit(ctx.arg::<u64>(9));
    0
}

#[fexit(function = "__udp6_lib_lookup")]
pub fn fexit_udp6_lookup(ctx: FExitContext) -> u32 {
    udp_lookup_exit(ctx.arg::<u64>(9));
    0
}

#[fexit(function = "sock_queue_err_skb")]
pub fn fexit_sock_queue_err_skb(ctx: FExitContext) -> u32 {
    queue_err_exit(ctx.arg::<i32>(2) as i64);
    0
}

#[fentry(function = "sk_error_report")]
pub fn fentry_sk_error_report(ctx: FEntryContext) -> u32 {
    report(error_report(ctx.arg(0)))
}

// kprobe/kretprobe (CONFIG_KPROBES): the same hooks, arguments from registers.

#[kprobe]
pub fn kprobe_udp4_lib_err(ctx: ProbeContext) -> u32 {
    match ctx.arg::<*const u8>(0) {
        Some(skb) => report(udp_err_enter(&ctx, probe::KPROBE, skb, None)),
        None => report::<()>(Err(-1)),
    }
}

#[kprobe]
pub fn kprobe_udp6_lib_err(ctx: ProbeContext) -> u32 {
    match (ctx.arg::<*const u8>(0), ctx.arg::<u64>(2), ctx.arg::<u64>(3), ctx.arg::<u64>(4)) {
        (Some(skb), Some(t), Some(c), Some(o)) => {
            report(udp_err_enter(&ctx, probe::KPROBE, skb, Some((t as u8, c as u8, o as i32))))
        }
        _ => report::<()>(Err(-1)),
    }
}

/// Both `__udp4_lib_err` and `__udp6_lib_err` return here.
#[kretprobe]
pub fn kretprobe_udp_lib_err(ctx: RetProbeContext) -> u32 {
    report(udp_err_exit(&ctx, Some(ctx.ret::<i32>() as i64)))
}

/// Both `__udp4_lib_lookup` and `__udp6_lib_lookup`.
#[kretprobe]
pub fn kretprobe_lookup(ctx: RetProbeContext) -> u32 {
    udp_lookup_exit(ctx.ret::<u64>());
    0
}

#[kretprobe]
pub fn kretprobe_sock_queue_err_skb(ctx: RetProbeContext) -> u32 {
    queue_err_exit(ctx.ret::<i32>() as i64);
    0
}

#[kprobe]
pub fn kprobe_sk_error_report(ctx: ProbeContext) -> u32 {
    match ctx.arg::<*const u8>(0) {
        Some(sk) => report(error_report(sk)),
        None => report::<()>(Err(-1)),
    }
}

// Tracepoint mode.

/// `sock:inet_sk_error_report` (5.14+): `TP_PROTO(const struct sock *sk)`.
#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn tp_inet_sk_error_report(ctx: RawTracePointContext) -> i32 {
    report(inet_sk_error_report(&ctx)) as i32
}

fn inet_sk_error_report(ctx: &RawTracePointContext) -> ReadResult<()> {
    let sk: *const u8 = ctx.arg(0);
    let off = offsets();

    let family = read::<u16>(sk, off.sk_family)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(());
    }
    let protocol = read::<u16>(sk, off.sk_protocol)?;
    if protocol != IPPROTO_UDP as u16 && protocol != IPPROTO_UDPLITE as u16 {
        return Ok(());
    }
    // With IP_RECVERR, sock_queue_err_skb() wakes the socket once before __udp4_lib_err sets sk_err, then
    // __udp4_lib_err wakes it again with the error (net/core/skbuff.c, net/ipv4/udp.c). The first wake-up
    // carries no new error: report the one that does.
    let errno = read::<i32>(sk, off.sk_err)?;
    if errno == 0 {
        return Ok(());
    }

    // Built in the per-CPU slot (no fentry or kprobe runs in this mode to share it), as in those modes: on
    // the stack, the event and the filters' temporaries come close to the 6.1 verifier's 512 bytes.
    let Some(slot) = state() else { return Ok(()) };
    slot.active = 0;
    let event = &mut slot.event;
    *event = SocketError::default();
    event.header = header(kind::SOCKET_ERROR, probe::TRACEPOINT, family, sock_netns(sk, &off)?);
    event.errno = errno;
    // sk_error_report only runs for an error the socket was given.
    event.verdict = verdict::DELIVERED;
    event.local_port = read::<u16>(sk, off.sk_num)?;
    event.remote_port = u16::from_be(read::<u16>(sk, off.sk_dport)?);
    read_socket_addrs(sk, &off, family, event)?;
    fill_owner(sk, event)?;
    // An unconnected socket has no peer; its error's destination is only in the quoted packet.
    if event.remote_port != 0 {
        event.flags |= socket_error_flags::REMOTE_KNOWN;
    }
    emit(ctx, event, filter::socket_error_passes(event));
    Ok(())
}

#[inline(always)]
fn read_socket_addrs(sk: *const u8, off: &KernelOffsets, family: u16, event: &mut SocketError) -> ReadResult<()> {
    if family == AF_INET {
        event.local_addr[..4].copy_from_slice(&read::<[u8; 4]>(sk, off.sk_rcv_saddr)?);
        event.remote_addr[..4].copy_from_slice(&read::<[u8; 4]>(sk, off.sk_daddr)?);
    } else {
        event.local_addr = read::<[u8; 16]>(sk, off.sk_v6_rcv_saddr)?;
        event.remote_addr = read::<[u8; 16]>(sk, off.sk_v6_daddr)?;
    }
    Ok(())
}
