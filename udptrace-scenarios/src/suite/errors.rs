//! One ICMP error seen from both ends (`socket_error.rs` and `icmp_sent.rs`): a closed port, an unconnected socket, the
//! error queue, a destroyed socket, unreachable and down hosts, nested errors, firewall rules, TTL and MTU,
//! a server that restarts.

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    config::Config,
    netns::{Netns, exec_in},
    outcome::Outcome,
    packets::{set_int_option, set_recverr, udp_socket},
    tracer::Tracer,
};

use super::*;

/// Seed case 1: the peer is up and nothing listens on the port. The server's kernel answers with a
/// port-unreachable (`icmp_sent`, cause `no_listener`); the client's kernel gives the connected socket
/// ECONNREFUSED (`socket_error`, `delivered`).
pub(super) fn closed_port(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    refused(config, tracer, &TwoHosts::new()?, family, "no_listener")
}

/// A connected client sends to the server's port and is refused with a port-unreachable: the client
/// gets ECONNREFUSED (`delivered`), the server's `icmp_sent` carries `cause`.
pub(super) fn refused(
    config: &Config,
    tracer: &mut Tracer,
    hosts: &TwoHosts,
    family: Family,
    cause: &'static str,
) -> Result<Results> {
    let server_ip = TwoHosts::server_ip(family);
    let server = SocketAddr::new(server_ip, CLOSED_PORT);
    let (local, received, _socket) =
        send_and_receive(&hosts.client, TwoHosts::client_ip(family), server, no_option, true, b"udptrace")?;
    let path = ErrorPath {
        family,
        client: &hosts.client,
        sender: &hosts.server,
        from: server_ip,
        icmp: family.port_unreachable(),
        errno: "ECONNREFUSED",
        verdict: "delivered",
        client_errno: Some(libc::ECONNREFUSED),
        cause,
    };
    Ok(path.checks(config, tracer, local, server, &received))
}

/// One ICMP error seen from both ends: the client's `socket_error` and the sender's `icmp_sent`.
pub(super) struct ErrorPath<'a> {
    pub(super) family: Family,
    pub(super) client: &'a Netns,
    /// The namespace that sends the ICMP error (the server, or the router).
    pub(super) sender: &'a Netns,
    pub(super) from: IpAddr,
    pub(super) icmp: (u8, u8),
    pub(super) errno: &'static str,
    pub(super) verdict: &'static str,
    /// What the client's receive call gets: this errno, or for `None` nothing (a timeout).
    pub(super) client_errno: Option<i32>,
    pub(super) cause: &'static str,
}

impl ErrorPath<'_> {
    /// The three checks for a datagram from `local` to `remote` and what the client then received.
    pub(super) fn checks(
        &self,
        config: &Config,
        tracer: &mut Tracer,
        local: SocketAddr,
        remote: SocketAddr,
        received: &io::Result<usize>,
    ) -> Results {
        let (icmp_type, code) = self.icmp;
        let expected = json!({
            "family": self.family.name(),
            "local": local.to_string(),
            "remote": remote.to_string(),
            "icmp": {"type": icmp_type, "code": code, "from": self.from.to_string()},
            "errno": self.errno,
            "verdict": self.verdict,
            "recverr": false,
        });
        // Tracepoint mode sees delivered errors only.
        let tracepoint = (self.verdict == "delivered").then(|| as_tracepoint_sees(&expected, true));
        let sent =
            json!({"icmp": {"type": icmp_type, "code": code}, "packet": packet(local, remote), "cause": self.cause});
        vec![
            ("client_errno", errno_check(received, self.client_errno)),
            ("socket_error", check_socket_error(config, tracer, self.client, local, expected, tracepoint)),
            ("icmp_sent", check_icmp_sent(config, tracer, self.sender, self.family, local, sent)),
        ]
    }
}

/// Seed case 5 (`nc -u` without connect): an unconnected socket gets a port-unreachable. Without
/// IP_RECVERR the kernel drops it (`ignored_unconnected`: the application sees nothing); with
/// IP_RECVERR it is delivered and queued (`recverr: true`).
pub(super) fn unconnected(config: &Config, tracer: &mut Tracer, recverr: bool) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let setup = |s: &UdpSocket| {
        if recverr { set_recverr(s, false) } else { Ok(()) }
    };
    let (local, received, _socket) =
        send_and_receive(&hosts.client, TwoHosts::client_ip(Family::V4), server, setup, false, b"udptrace")?;
    let expected = json!({
        "family": "ipv4",
        "local": local.to_string(),
        "remote": server.to_string(),
        "icmp": {"type": 3, "code": 3, "from": SERVER_V4},
        "errno": "ECONNREFUSED",
        "verdict": if recverr { "delivered" } else { "ignored_unconnected" },
        "recverr": recverr,
    });
    // Tracepoint mode: the delivered error, or nothing at all.
    let tracepoint = recverr.then(|| as_tracepoint_sees(&expected, false));
    Ok(vec![
        ("client_errno", errno_check(&received, recverr.then_some(libc::ECONNREFUSED))),
        ("socket_error", check_socket_error(config, tracer, &hosts.client, local, expected, tracepoint)),
    ])
}

/// `errors` port unreachables reach an unconnected IP_RECVERR socket in `hosts`' client (with `rcvbuf`, a
/// receive buffer that small), each queued for MSG_ERRQUEUE if it fits; then the error queue is read.
/// Returns the socket's address and how many errors were read back.
pub(super) fn recverr_errors(hosts: &TwoHosts, errors: usize, rcvbuf: Option<i32>) -> Result<(SocketAddr, usize)> {
    hosts.server.sysctl("net.ipv4.icmp_ratemask", "0")?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    set_recverr(&socket, false)?;
    if let Some(bytes) = rcvbuf {
        set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)?;
    }
    for _ in 0..errors {
        socket.send_to(b"udptrace", server)?;
        std::thread::sleep(Duration::from_millis(100));
        // SO_ERROR takes the pending error (the next send would fail with it); the queued copies stay.
        let _ = socket.take_error();
    }
    let mut read_back = 0;
    let mut buf = [0u8; 64];
    for _ in 0..errors {
        // SAFETY: reads into `buf`, of the length passed, from a socket this scenario owns.
        let n = unsafe {
            libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT)
        };
        read_back += usize::from(n >= 0);
    }
    Ok((socket.local_addr()?, read_back))
}

/// One event per ICMP error, whatever else reports on the socket: four port unreachables reach an
/// IP_RECVERR socket (each queued for MSG_ERRQUEUE, each reported by the kernel twice), then the four are
/// read back from the error queue (each read that leaves more queued reports again). Exactly four
/// `socket_error` events.
pub(super) fn error_queue(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const ERRORS: usize = 4;
    let hosts = TwoHosts::new()?;
    let (local, read_back) = recverr_errors(&hosts, ERRORS, None)?;
    let queued = if read_back == ERRORS {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("read {read_back} of {ERRORS} errors back from the error queue"))
    };
    let ours = |e: &Value| e["event"] == "socket_error" && e["local"] == local.to_string();
    let mut counted = match tracer.expect_count("the queued errors", config.event_timeout, ERRORS, ours) {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    // Nothing more may follow: the reads reported again, and those reports are not ICMP errors.
    tracer.collect_for(config.quiet_period);
    let seen = tracer.seen.iter().filter(|e| ours(e)).count();
    if seen != ERRORS && counted == Outcome::Pass {
        counted = Outcome::Fail(format!("{ERRORS} ICMP errors, {seen} socket_error events"));
    }
    Ok(vec![("read_back", queued), ("one_event_per_error", counted)])
}

/// IP_RECVERR is the socket's flag, not a guess from what the kernel did: with its error queue full (a
/// receive buffer of the kernel's minimum, nothing read), the errors that no longer fit are still delivered
/// to an IP_RECVERR socket, and every event says `recverr: true`.
pub(super) fn error_queue_full(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const ERRORS: usize = 6;
    let hosts = TwoHosts::new()?;
    let (local, queued) = recverr_errors(&hosts, ERRORS, Some(1))?;
    let filled = if queued < ERRORS {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("all {ERRORS} errors fitted in the error queue: the case was not made"))
    };
    let ours = |e: &Value| e["event"] == "socket_error" && e["local"] == local.to_string();
    let flagged = match tracer.expect_count("the errors", config.event_timeout, ERRORS, ours) {
        Err(e) => Outcome::Fail(format!("{e:#}")),
        Ok(()) => {
            let wrong: Vec<&Value> = tracer.seen.iter().filter(|e| ours(e) && e["recverr"] != true).collect();
            if wrong.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("{} of {ERRORS} events do not say recverr true: {:?}", wrong.len(), wrong))
            }
        }
    };
    Ok(vec![("queue_filled", filled), ("recverr_flag", flagged)])
}

/// `ss -K` destroys a connected UDP socket: the kernel aborts it (`udp_abort`, ECONNABORTED) and wakes it,
/// which is no ICMP error, and no `socket_error` may say otherwise.
pub(super) fn socket_destroyed(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    socket.connect(server)?;
    let local = socket.local_addr()?;
    let port = format!(":{}", local.port());
    if let Err(e) = crate::netns::exec_in(&hosts.client, "ss", &["-K", "-u", "-n", "sport", "=", &port]) {
        return Ok(vec![("not_an_icmp_error", Outcome::Skip(format!("ss -K could not run: {e:#}")))]);
    }
    match socket.take_error()? {
        Some(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
        other => {
            return Ok(vec![(
                "not_an_icmp_error",
                Outcome::Skip(format!(
                    "this kernel did not destroy the socket (CONFIG_INET_DIAG_DESTROY?): its error is {other:?}"
                )),
            )]);
        }
    }
    tracer.collect_for(config.quiet_period);
    let ours: Vec<&Value> =
        tracer.seen.iter().filter(|e| e["event"] == "socket_error" && e["local"] == local.to_string()).collect();
    let outcome = if ours.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("the abort was reported as an ICMP error: {ours:?}"))
    };
    Ok(vec![("not_an_icmp_error", outcome)])
}

/// Seed case 2: the peer's address is unreachable behind a router (an unreachable route there). The
/// router answers host-unreachable (IPv6: no-route), a soft error: the connected socket without
/// IP_RECVERR never hears of it (`ignored_soft_error`); the router's `icmp_sent` says `no_route`.
pub(super) fn unreachable(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    let net = Routed::new(None)?;
    net.router.ip(&["route", "add", "unreachable", "10.233.0.0/24"])?;
    net.router.ip(&["-6", "route", "add", "unreachable", "fd00:233::/64"])?;
    let peer = SocketAddr::new(family.pick("10.233.0.9", "fd00:233::9"), CLOSED_PORT);
    let (icmp, errno) = match family {
        Family::V4 => ((3, 1), "EHOSTUNREACH"),
        Family::V6 => ((1, 0), "ENETUNREACH"),
    };
    soft_error_from_router(config, tracer, &net, family, peer, icmp, errno, "no_route")
}

/// A connected client sends to `peer` behind the router, which answers with a soft error (`icmp`, giving
/// `errno`, for `cause`): the client without IP_RECVERR ignores it.
#[allow(clippy::too_many_arguments)]
pub(super) fn soft_error_from_router(
    config: &Config,
    tracer: &mut Tracer,
    net: &Routed,
    family: Family,
    peer: SocketAddr,
    icmp: (u8, u8),
    errno: &'static str,
    cause: &'static str,
) -> Result<Results> {
    let (local, received, _socket) =
        send_and_receive(&net.client, TwoHosts::client_ip(family), peer, no_option, true, b"udptrace")?;
    let path = ErrorPath {
        family,
        client: &net.client,
        sender: &net.router,
        from: family.pick(ROUTER_IN_V4, ROUTER_IN_V6),
        icmp,
        errno,
        verdict: "ignored_soft_error",
        client_errno: None,
        cause,
    };
    Ok(path.checks(config, tracer, local, peer, &received))
}

/// Seed case: the host is down. The router has a route to the server's link, but nobody there answers
/// ARP/ND for the address; when neighbour resolution gives up, the router answers host unreachable
/// (`arp_error_report` -> `ipv4_link_failure`; `ndisc_error_report` -> `ip6_link_failure`). A soft error:
/// the connected client without IP_RECVERR ignores it.
pub(super) fn host_down(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    let net = Routed::new(None)?;
    // One probe, given up after 100 ms, instead of three over three seconds.
    for proto in ["ipv4", "ipv6"] {
        for (key, value) in [("mcast_solicit", "1"), ("ucast_solicit", "1"), ("retrans_time_ms", "100")] {
            net.router.sysctl(&format!("net.{proto}.neigh.veth-a.{key}"), value)?;
        }
    }
    let peer = SocketAddr::new(family.pick("10.232.0.77", "fd00:232::77"), CLOSED_PORT);
    let icmp = match family {
        Family::V4 => (3, 1),
        // ICMPV6_ADDR_UNREACH.
        Family::V6 => (1, 3),
    };
    soft_error_from_router(config, tracer, &net, family, peer, icmp, "EHOSTUNREACH", "neighbour_unreachable")
}

/// Adds an nftables rule to `ns`'s input chain (table `inet udptrace`).
pub(super) fn nft_input_rule(ns: &Netns, rule: &str) -> Result<()> {
    nft_rule(ns, "input", rule)
}

/// Adds an nftables rule to the chain `hook` (`input`, `output`) of `ns`'s table `inet udptrace`.
pub(super) fn nft_rule(ns: &Netns, hook: &str, rule: &str) -> Result<()> {
    exec_in(ns, "nft", &["add", "table", "inet", "udptrace"])?;
    exec_in(ns, "nft", &[&format!("add chain inet udptrace {hook} {{ type filter hook {hook} priority 0 ; }}")])?;
    let mut args = vec!["add", "rule", "inet", "udptrace", hook];
    args.extend(rule.split_whitespace());
    exec_in(ns, "nft", &args).map(drop)
}

/// Two ICMP errors nested on one CPU. The client's OUTPUT chain rejects its datagram: `__icmp_send` runs in
/// the sending process, and its port unreachable goes back to the client through loopback. When it enables
/// bottom halves again, still inside `__icmp_send`, the softirq delivers that error, which the client's
/// INPUT chain rejects too: a second `__icmp_send` on the same CPU (it sends nothing, an ICMP error is never
/// sent about an ICMP error). The outer one's `icmp_sent` must survive the inner call. `send()` fails with
/// EPERM: a REJECT in OUTPUT drops the datagram before it leaves.
pub(super) fn nested_send(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    nft_rule(&hosts.client, "output", &format!("udp dport {CLOSED_PORT} reject"))?;
    // ICMP and ICMPv6 by number: the QEMU images have no /etc/protocols.
    nft_rule(&hosts.client, "input", "meta l4proto { 1, 58 } reject")?;
    let server = SocketAddr::new(TwoHosts::server_ip(family), CLOSED_PORT);
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(family), 0))?;
    socket.connect(server)?;
    let sent = socket.send(b"udptrace");
    let send_errno = match &sent {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Outcome::Pass,
        other => Outcome::Fail(format!("send returned {other:?}, want EPERM")),
    };
    let (icmp_type, code) = family.port_unreachable();
    let local = socket.local_addr()?;
    let expected =
        json!({"icmp": {"type": icmp_type, "code": code}, "packet": packet(local, server), "cause": "firewall_reject"});
    Ok(vec![
        ("send_errno", send_errno),
        ("icmp_sent", check_icmp_sent(config, tracer, &hosts.client, family, local, expected)),
    ])
}

/// Seed case 3: the server's firewall drops the port. Three datagrams "succeed" and nothing comes back;
/// udptrace tells no false `socket_error` on the client and no `icmp_sent` on the server about that flow, but
/// the drops themselves: exactly three `udp_dropped` in the server's namespace, direction in,
/// `netfilter_drop` (before 5.17 no reason, freed in netfilter). A datagram to another closed port, which
/// the rule lets in, gets its port unreachable (`icmp_sent`, `no_listener`) and no `udp_dropped`: the
/// `icmp_sent` tells it.
pub(super) fn firewall_drop(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const DATAGRAMS: u64 = 3;
    const OTHER_PORT: u16 = CLOSED_PORT + 1;
    let hosts = TwoHosts::new()?;
    nft_input_rule(&hosts.server, &format!("udp dport {CLOSED_PORT} drop"))?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    socket.connect(server)?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    for _ in 0..DATAGRAMS {
        socket.send(b"udptrace")?;
    }
    let local = socket.local_addr()?;
    let other = SocketAddr::new(TwoHosts::server_ip(Family::V4), OTHER_PORT);
    let other_socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    other_socket.send_to(b"udptrace", other)?;
    let other_local = other_socket.local_addr()?;
    // Time for an ICMP error to come back, were one sent.
    std::thread::sleep(Duration::from_millis(300));
    let received = socket.recv(&mut [0u8; 64]);
    tracer.collect_for(config.quiet_period);
    let about_flow = |e: &Value| {
        is_socket_error_of(&hosts.client, local)(e)
            || (e["event"] == "icmp_sent" && e["packet"]["src"] == local.to_string())
    };
    let silence = match tracer.seen.iter().find(|e| about_flow(e)) {
        None => Outcome::Pass,
        Some(e) => Outcome::Fail(format!("a dropped packet produced {e}")),
    };
    let refused = json!({
        "icmp": {"type": 3, "code": 3},
        "packet": packet(other_local, other),
        "cause": "no_listener",
        "rate_limited": false,
    });
    let other_refused = check_icmp_sent(config, tracer, &hosts.server, Family::V4, other_local, refused);
    let (counted, fields, other_not_dropped) = match drops::drop_hook(config, tracer) {
        Err(skip) => (skip.clone(), skip.clone(), skip),
        Ok(mode) => {
            let fields = json!({
                "netns": hosts.server.inode,
                "probe": mode,
                "family": "ipv4",
                "packet": packet(local, server),
                "direction": "in",
                "local": null,
            });
            let (counted, fields) =
                drops::exact_drops(config, tracer, (local, server), DATAGRAMS, &fields, &drops::NETFILTER_DROP);
            // `exact_drops` watched the quiet period: the other datagram's drop, were it reported, came by now.
            let other_not_dropped = match tracer.seen.iter().find(|e| drops::is_drop_of(other_local, other)(e)) {
                // Without an ICMP hook nothing tells the port unreachable, and the drop is shown (5.10 in
                // tracepoint mode, before icmp:icmp_send).
                _ if tracer.mode_of("icmp_send").is_none() => {
                    Outcome::Skip("the icmp_send hook did not attach: the closed port's drop is shown".to_owned())
                }
                None => Outcome::Pass,
                Some(e) => Outcome::Fail(format!("a closed port's drop is the icmp_sent's story, yet: {e}")),
            };
            (counted, fields, other_not_dropped)
        }
    };
    Ok(vec![
        ("client_errno", errno_check(&received, None)),
        ("no_event", silence),
        ("drops_counted", counted),
        ("udp_dropped", fields),
        ("other_port_icmp", other_refused),
        ("other_port_no_drop", other_not_dropped),
    ])
}

/// A firewall REJECT while a process listens: the same port-unreachable as a closed port, but the
/// server's `icmp_sent` says `firewall_reject`, not `no_listener`.
pub(super) fn firewall_reject(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let _listener = udp_socket(&hosts.server, SocketAddr::new(TwoHosts::server_ip(family), CLOSED_PORT))?;
    nft_input_rule(&hosts.server, &format!("udp dport {CLOSED_PORT} reject"))?;
    refused(config, tracer, &hosts, family, "firewall_reject")
}

/// A datagram sent with TTL 1 through the router: time-exceeded from the router (`ttl_exceeded`), a
/// soft error the connected client never hears of.
pub(super) fn ttl_exceeded(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let net = Routed::new(None)?;
    let server = SocketAddr::new(FAR_SERVER_V4.parse()?, CLOSED_PORT);
    let ttl_one = |s: &UdpSocket| s.set_ttl(1);
    let (local, received, _socket) =
        send_and_receive(&net.client, CLIENT_V4.parse()?, server, ttl_one, true, b"udptrace")?;
    let path = ErrorPath {
        family: Family::V4,
        client: &net.client,
        sender: &net.router,
        from: ROUTER_IN_V4.parse()?,
        icmp: (11, 0),
        errno: "EHOSTUNREACH",
        verdict: "ignored_soft_error",
        client_errno: None,
        cause: "ttl_exceeded",
    };
    Ok(path.checks(config, tracer, local, server, &received))
}

/// A 1400-byte datagram with DF (IP_PMTUDISC_DO) towards a 1280-byte link: the router answers
/// frag-needed (`frag_needed`); the kernel lowers the path MTU and gives the client EMSGSIZE.
pub(super) fn frag_needed(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const MTU: u32 = 1280;
    let net = Routed::new(Some(MTU))?;
    let server = SocketAddr::new(FAR_SERVER_V4.parse()?, CLOSED_PORT);
    let dont_fragment =
        |s: &UdpSocket| set_int_option(s, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO);
    let big = [0x55u8; 1400];
    let (local, received, _socket) =
        send_and_receive(&net.client, CLIENT_V4.parse()?, server, dont_fragment, true, &big)?;
    let path = ErrorPath {
        family: Family::V4,
        client: &net.client,
        sender: &net.router,
        from: ROUTER_IN_V4.parse()?,
        icmp: (3, 4),
        errno: "EMSGSIZE",
        verdict: "delivered",
        client_errno: Some(libc::EMSGSIZE),
        cause: "frag_needed",
    };
    Ok(path.checks(config, tracer, local, server, &received))
}

/// Seed case 4: the server is down (ECONNREFUSED, one `socket_error`), comes back, and the same
/// connected client socket works again: UDP kept no state to lose. udptrace reports nothing after.
pub(super) fn server_restart(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let server_addr = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let client = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    client.connect(server_addr)?;
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    let local = client.local_addr()?;
    let mut buf = [0u8; 64];

    client.send(b"while down")?;
    let refused = errno_check(&client.recv(&mut buf), Some(libc::ECONNREFUSED));
    let down_event = check_socket_error(
        config,
        tracer,
        &hosts.client,
        local,
        json!({"errno": "ECONNREFUSED", "verdict": "delivered", "remote": server_addr.to_string()}),
        Some(json!({"errno": "ECONNREFUSED", "verdict": "delivered", "remote": server_addr.to_string()})),
    );

    let server = udp_socket(&hosts.server, server_addr)?;
    server.set_read_timeout(Some(Duration::from_secs(2)))?;
    client.send(b"after restart")?;
    let recovered = outcome_of((|| {
        let (n, from) = server.recv_from(&mut buf).context("the restarted server received nothing")?;
        server.send_to(&buf[..n], from)?;
        let echoed = client.recv(&mut buf).context("the client got no reply on its old socket")?;
        if echoed != n {
            bail!("the echo was {echoed} bytes, not {n}");
        }
        Ok(Outcome::Pass)
    })());
    tracer.collect_for(config.quiet_period);
    let count = tracer.seen.iter().filter(|e| is_socket_error_of(&hosts.client, local)(e)).count();
    let only_while_down = match (tracer.mode_of("socket_error"), count) {
        (None, _) => Outcome::Skip("the socket_error hook did not attach".to_owned()),
        (Some(_), 1) => Outcome::Pass,
        (Some(_), n) => Outcome::Fail(format!("{n} socket_error events for the client, want the one while down")),
    };
    Ok(vec![
        ("client_errno", refused),
        ("socket_error", down_event),
        ("client_recovers", recovered),
        ("nothing_after", only_while_down),
    ])
}
