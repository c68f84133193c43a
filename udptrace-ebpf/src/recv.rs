//! An ICMP error reaching a UDP socket.
//!
//! Tracepoint mode sees only the wake-up: `sock:inet_sk_error_report` fires from `sk_error_report()`
//! (`net/core/sock.c`), which `__udp4_lib_err` / `__udp6_lib_err` call after setting `sk->sk_err` for an
//! error they deliver. Errors the kernel ignores (soft errors, unconnected sockets) and ICMPs matching no
//! socket never reach it; the ICMP header itself is not visible here.

use aya_ebpf::programs::RawTracePointContext;
use udptrace_common::{
    AF_INET, AF_INET6, IPPROTO_UDP, IPPROTO_UDPLITE, SocketError, kind, probe, socket_error_flags, verdict,
};

use crate::{
    EVENTS, STAT_LOST, count,
    kernel::{ReadResult, header, offsets, read, sock_netns},
};

pub fn inet_sk_error_report(ctx: &RawTracePointContext) -> ReadResult<()> {
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

    let mut event = SocketError {
        header: header(ctx, kind::SOCKET_ERROR, probe::TRACEPOINT, family, sock_netns(sk, &off)?),
        errno,
        // sk_error_report only runs for an error the socket was given.
        verdict: verdict::DELIVERED,
        local_port: read::<u16>(sk, off.sk_num)?,
        remote_port: u16::from_be(read::<u16>(sk, off.sk_dport)?),
        ..SocketError::default()
    };
    if family == AF_INET {
        event.local_addr[..4].copy_from_slice(&read::<[u8; 4]>(sk, off.sk_rcv_saddr)?);
        event.remote_addr[..4].copy_from_slice(&read::<[u8; 4]>(sk, off.sk_daddr)?);
    } else {
        event.local_addr = read::<[u8; 16]>(sk, off.sk_v6_rcv_saddr)?;
        event.remote_addr = read::<[u8; 16]>(sk, off.sk_v6_daddr)?;
    }
    // An unconnected socket has no peer; its error's destination is only in the quoted packet.
    if event.remote_port != 0 {
        event.flags |= socket_error_flags::REMOTE_KNOWN;
    }

    if EVENTS.output::<SocketError>(&event, 0).is_err() {
        count(STAT_LOST);
    }
    Ok(())
}
