//! Where an error goes, or does not: rate limits, crafted errors quoting no socket, no route back, and the
//! sockets an application never holds (a tunnel's, the kernel's).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{
    config::Config,
    netns::exec_in,
    outcome::Outcome,
    packets::{Quote, crafted_port_unreachable, icmp_counters, send_raw_icmp, set_int_option, udp_socket},
    tracer::{Tracer, lost_in},
};

use super::*;

/// A flood to a closed port with the rate limits on: what udptrace reports suppressed (one event per
/// error with hooks, counts from the counters in tracepoint mode) must equal the server kernel's own
/// `OutRateLimitGlobal` / `OutRateLimitHost` increases, and its `icmp_sent` the errors sent.
pub(super) fn rate_limit(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const FLOOD: usize = 300;
    let hosts = TwoHosts::new()?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let before = icmp_counters(&hosts.server)?;
    let client = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    for _ in 0..FLOOD {
        // Unconnected: an ICMP error back must not make the next send fail.
        client.send_to(b"flood", server)?;
    }
    let after = settled(config.event_timeout, || icmp_counters(&hosts.server))?;
    let want_global = after.rate_limit_global - before.rate_limit_global;
    let want_host = after.rate_limit_host - before.rate_limit_host;
    let want_sent = after.out_dest_unreach - before.out_dest_unreach;
    // Before 6.3 (6.1.y has them) the kernel counts no rate limit: every datagram to the closed port that got no
    // port unreachable was suppressed, by one limit or the other.
    let counted = after.has_rate_limit_counters;
    let want_suppressed =
        if counted { want_global + want_host } else { (after.no_ports - before.no_ports).saturating_sub(want_sent) };
    if want_suppressed == 0 {
        return Ok(vec![(
            "kernel_limited",
            Outcome::Fail(format!("{FLOOD} datagrams triggered no rate limit: {after:?}")),
        )]);
    }

    let suppressed = if tracer.mode_of("icmp_send").is_none() {
        Outcome::Skip("the icmp_send hook did not attach".to_owned())
    } else {
        // Counter-based events come once a second: wait until the sums match or time runs out.
        let sums = |seen: &[Value]| {
            let mut global = 0;
            let mut host = 0;
            for e in seen.iter().filter(|e| e["event"] == "icmp_suppressed" && e["netns"] == hosts.server.inode) {
                let n = e["count"].as_u64().unwrap_or(0);
                if e["scope"] == "global" { global += n } else { host += n }
            }
            (global, host)
        };
        // What udptrace reported lost in this scenario may stand for suppressed errors (a kprobe run the kernel
        // skipped is counted lost, docs/events.md "lost"): nothing invented, nothing missing beyond what it reported.
        let matches = |(global, host): (u64, u64), lost: u64| {
            let (shown, want) = (global + host, if counted { want_global + want_host } else { want_suppressed });
            let within = if counted { global <= want_global && host <= want_host } else { shown <= want };
            within && want <= shown + lost
        };
        let deadline = Instant::now() + config.event_timeout;
        while !matches(sums(&tracer.seen), lost_in(&tracer.seen)) && Instant::now() < deadline {
            tracer.collect_for(Duration::from_millis(500));
        }
        let got = sums(&tracer.seen);
        if matches(got, lost_in(&tracer.seen)) {
            Outcome::Pass
        } else if counted {
            Outcome::Fail(format!(
                "udptrace reported {got:?} suppressed (global, host) and {} lost, the kernel counted ({want_global}, \
                 {want_host})",
                lost_in(&tracer.seen)
            ))
        } else {
            Outcome::Fail(format!(
                "udptrace reported {got:?} suppressed (global, host), the kernel suppressed {want_suppressed} \
                 (NoPorts without OutType3; no rate-limit counters before 6.3)"
            ))
        }
    };
    let sent = match icmp_send_unseen(config, tracer, Family::V4) {
        Some(why) => Outcome::Skip(why),
        None => {
            let got =
                tracer.seen.iter().filter(|e| e["event"] == "icmp_sent" && e["netns"] == hosts.server.inode).count()
                    as u64;
            if got == want_sent {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("udptrace reported {got} icmp_sent, the kernel sent {want_sent}"))
            }
        }
    };
    Ok(vec![("suppressed_match", suppressed), ("sent_match", sent)])
}

/// Sends, from the server namespace, a port unreachable quoting a datagram `client:sport -> server:dport` (with
/// `quote`'s shape), and checks the client's `socket_error` against the fields every such error has and
/// `fields`. Tracepoint mode sees none of these (nothing is delivered): it must report nothing.
pub(super) fn crafted_error(
    config: &Config,
    tracer: &mut Tracer,
    hosts: &TwoHosts,
    (sport, dport): (u16, u16),
    quote: Quote,
    fields: Value,
) -> Result<Outcome> {
    let client: Ipv4Addr = CLIENT_V4.parse()?;
    let server: Ipv4Addr = SERVER_V4.parse()?;
    let icmp = crafted_port_unreachable(client, sport, server, dport, quote);
    hosts.server.run(move || send_raw_icmp(client, &icmp))??;
    let local = SocketAddr::new(IpAddr::V4(client), sport);
    let mut expected = json!({
        "family": "ipv4",
        "local": local.to_string(),
        "remote": SocketAddr::new(IpAddr::V4(server), dport).to_string(),
        "icmp": {"type": 3, "code": 3, "from": SERVER_V4},
        "errno": "ECONNREFUSED",
    });
    for (key, value) in fields.as_object().into_iter().flatten() {
        expected[key] = value.clone();
    }
    Ok(check_socket_error(config, tracer, &hosts.client, local, expected, None))
}

/// An ICMP port-unreachable quoting a socket that does not exist (crafted by a raw socket in the server
/// namespace): the client's kernel finds nothing to give it to (`no_socket`).
pub(super) fn no_socket(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const GONE_PORT: u16 = 40999;
    let hosts = TwoHosts::new()?;
    // No socket, so no flag to read.
    let fields = json!({"verdict": "no_socket", "recverr": null});
    let outcome = crafted_error(config, tracer, &hosts, (GONE_PORT, CLOSED_PORT), Quote::default(), fields)?;
    Ok(vec![("socket_error", outcome)])
}

/// As `no_socket`, with a `UDP_GRO` socket open (QUIC stacks set it), which turns on the kernel's encap path for
/// every error that matches no socket (`udp_encap_needed_key`), and a listener on the quoted destination port:
/// `__udp4_lib_err_encap` looks that listener up (keyed on the quoted destination port), finds no tunnel in it
/// and returns `-ENOENT`. Still `no_socket`, with no owner: the listener did not take the error.
pub(super) fn no_socket_gro(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const UDP_GRO: i32 = 104;
    const GONE_PORT: u16 = 40998;
    let hosts = TwoHosts::new()?;
    let client = TwoHosts::client_ip(Family::V4);
    let gro = udp_socket(&hosts.client, SocketAddr::new(client, 0))?;
    set_int_option(&gro, libc::SOL_UDP, UDP_GRO, 1).context("setting UDP_GRO")?;
    let _listener = udp_socket(&hosts.client, SocketAddr::new(client, CLOSED_PORT))?;
    let fields = json!({"verdict": "no_socket", "recverr": null, "pid": null});
    let outcome = crafted_error(config, tracer, &hosts, (GONE_PORT, CLOSED_PORT), Quote::default(), fields)?;
    drop(gro);
    Ok(vec![("socket_error", outcome)])
}

/// A datagram from a source the server has no route back to (an address the client adds for itself): the
/// server's kernel wants to send a port unreachable, finds no route, and sends nothing. No hook reports an ICMP
/// error there, sent or suppressed; tracepoint mode, which reads the kernel's counters, shows what
/// `icmpv6_xrlim_allow` counts for it (`Icmp6OutRateLimitHost`, net/ipv6/icmp.c): a `host` count for IPv6, which
/// its explanation says may be a missing route.
pub(super) fn no_route_back_ipv6(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const UNROUTED: &str = "fd00:999::1";
    let hosts = TwoHosts::new()?;
    hosts.client.ip(&["-6", "addr", "add", &format!("{UNROUTED}/128"), "dev", "veth-a", "nodad"])?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V6), CLOSED_PORT);
    let (local, _, _socket) =
        send_and_receive(&hosts.client, UNROUTED.parse()?, server, no_option, false, b"udptrace")?;
    let server_ns = hosts.server.inode;
    let about_flow = |e: &Value| {
        (e["event"] == "icmp_sent" || e["event"] == "icmp_suppressed") && e["packet"]["src"] == local.to_string()
    };
    let counted = |e: &Value| {
        e["event"] == "icmp_suppressed" && e["netns"] == server_ns && e["family"] == "ipv6" && e["scope"] == "host"
    };
    let outcome = match tracer.mode_of("icmp_send") {
        None => Outcome::Skip("the icmp_send hook did not attach".to_owned()),
        Some("tracepoint") => outcome_of(
            tracer
                .expect("the host count of the error not sent", config.event_timeout, counted)
                .map(|e| if e["count"].as_u64() >= Some(1) { Outcome::Pass } else { Outcome::Fail(format!("{e}")) }),
        ),
        Some(_) => {
            tracer.collect_for(config.quiet_period);
            match tracer.seen.iter().find(|e| about_flow(e) || (counted(e) && e["packet"].is_object())) {
                None => Outcome::Pass,
                Some(e) => Outcome::Fail(format!("no ICMP error was sent or rate-limited, yet udptrace reported {e}")),
            }
        }
    };
    Ok(vec![("not_an_error_sent", outcome)])
}

/// A port unreachable quoting a UDP tunnel's socket (`UDP_ENCAP`, here L2TP's, which needs nothing else in
/// the kernel): the kernel hands it to the tunnel, never to the application, whatever IP_RECVERR says
/// (`tunnel`). Before, this read `ignored_unconnected`. Tracepoint mode sees nothing: nothing is delivered.
pub(super) fn tunnel_socket(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const UDP_ENCAP: i32 = 100;
    const UDP_ENCAP_L2TPINUDP: i32 = 3;
    const TUNNEL_PORT: u16 = 1701;
    let hosts = TwoHosts::new()?;
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), TUNNEL_PORT))?;
    set_int_option(&socket, libc::SOL_UDP, UDP_ENCAP, UDP_ENCAP_L2TPINUDP).context("setting UDP_ENCAP")?;
    let fields = json!({"verdict": "tunnel", "recverr": null, "pid": std::process::id()});
    let outcome = crafted_error(config, tracer, &hosts, (TUNNEL_PORT, TUNNEL_PORT), Quote::default(), fields)?;
    drop(socket);
    Ok(vec![("socket_error", outcome)])
}

/// A port unreachable about a VXLAN device's packet: its socket is the kernel's, held by no process, and
/// VXLAN takes the error (its VNI is in the quoted header). udptrace says `kernel socket` (holders 0) and
/// leaves the verdict unknown, as it cannot see what the tunnel did. Before, this read `ignored_unconnected`.
pub(super) fn kernel_socket(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const VXLAN_PORT: u16 = 4789;
    const VNI: u32 = 42;
    let hosts = TwoHosts::new()?;
    let vni = VNI.to_string();
    let port = VXLAN_PORT.to_string();
    let link =
        ["link", "add", "vx-ut", "type", "vxlan", "id", &vni, "dstport", &port, "local", CLIENT_V4, "nolearning"];
    if let Err(e) = exec_in(&hosts.client, "ip", &link) {
        return Ok(vec![("all", Outcome::Skip(format!("no VXLAN device could be made here: {e:#}")))]);
    }
    exec_in(&hosts.client, "ip", &["link", "set", "vx-ut", "up"])?;
    // The VXLAN header the error quotes: the I flag and the VNI (RFC 7348).
    let mut payload = [0x08, 0, 0, 0, 0, 0, 0, 0];
    payload[4..7].copy_from_slice(&VNI.to_be_bytes()[1..]);
    let quote = Quote { payload, payload_len: 8, ..Quote::default() };
    // Quoting the device's own port as the source: the kernel's first lookup finds its socket.
    let fields = json!({"verdict": null, "recverr": null, "pid": null, "holders": 0});
    let outcome = crafted_error(config, tracer, &hosts, (VXLAN_PORT, VXLAN_PORT), quote, fields)?;
    Ok(vec![("socket_error", outcome)])
}
