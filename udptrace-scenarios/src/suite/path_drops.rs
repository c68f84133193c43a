//! Datagrams the kernel drops on their way (`udp_dropped`): at a failed neighbour, at a bad checksum; and the
//! closed IPv6 port that tracepoint mode now tells from its drop. Each count is checked against the kernel's
//! own counters where it keeps one.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    CLIENT_V4, CLOSED_PORT, Family, Results, SERVER_V4, TwoHosts, check_icmp_sent, check_socket_error, compare,
    drops::{
        NEIGH_FAILED, UDP_CSUM, await_drops, drop_fields, drop_hook, each_drop, exact_drops, has_drop_reasons,
        is_drop_of, none_of, snmp,
    },
    errno_check, no_option, outcome_of, packet, send_and_receive,
};
use crate::{
    config::Config,
    netns::Netns,
    outcome::Outcome,
    packets::{checksum, icmp_counters, udp_socket},
    tracer::Tracer,
};

/// Seed case 2 on the client's own link: a connected client sends three datagrams to an address of its
/// subnet that nobody has (ARP shortened as `host_down` does: one probe, given up after 100 ms). When
/// resolution fails the client's kernel drops what waited for it (`neigh_failed`, direction out; before
/// 5.17 no reason), and sends itself a host unreachable for each (`icmp_sent`, `neighbour_unreachable`),
/// which the connected socket without IP_RECVERR ignores (`ignored_soft_error`). At least one drop, at
/// most one per datagram.
pub fn neighbour_failed(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const DATAGRAMS: u64 = 3;
    let hosts = TwoHosts::new()?;
    for (key, value) in [("mcast_solicit", "1"), ("ucast_solicit", "1"), ("retrans_time_ms", "100")] {
        hosts.client.sysctl(&format!("net.ipv4.neigh.veth-a.{key}"), value)?;
    }
    let peer = SocketAddr::new(IpAddr::V4("10.231.0.77".parse()?), CLOSED_PORT);
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    socket.connect(peer)?;
    socket.set_read_timeout(Some(Duration::from_secs(1)))?;
    for _ in 0..DATAGRAMS {
        socket.send(b"udptrace")?;
    }
    let local = socket.local_addr()?;
    // Resolution gives up after about 100 ms; the errors come back meanwhile, and are ignored.
    std::thread::sleep(Duration::from_millis(500));
    let received = socket.recv(&mut [0u8; 64]);

    let expected = json!({
        "family": "ipv4",
        "local": local.to_string(),
        "remote": peer.to_string(),
        "icmp": {"type": 3, "code": 1, "from": CLIENT_V4},
        "errno": "EHOSTUNREACH",
        "verdict": "ignored_soft_error",
        "recverr": false,
    });
    let socket_error = check_socket_error(config, tracer, &hosts.client, local, expected, None);
    let sent = json!({
        "icmp": {"type": 3, "code": 1},
        "packet": packet(local, peer),
        "cause": "neighbour_unreachable",
        "rate_limited": false,
    });
    let icmp_sent = check_icmp_sent(config, tracer, &hosts.client, Family::V4, local, sent);

    let (counted, fields) = match drop_hook(config, tracer) {
        Err(skip) => (skip.clone(), skip),
        Ok(mode) => {
            let about = is_drop_of(local, peer);
            let got = await_drops(config, tracer, 1, &about);
            let events: Vec<&Value> = tracer.seen.iter().filter(|e| about(e)).collect();
            let counted = if (1..=DATAGRAMS).contains(&got) {
                Outcome::Pass
            } else {
                Outcome::Fail(format!(
                    "{DATAGRAMS} datagrams waited for the neighbour, udptrace counted {got} drops: {events:?}"
                ))
            };
            let fields = drop_fields(&hosts.client, &mode, local, peer, "out", json!({}));
            (counted, each_drop(&events, &fields, &NEIGH_FAILED))
        }
    };
    Ok(vec![
        ("client_errno", errno_check(&received, None)),
        ("drops_counted", counted),
        ("udp_dropped", fields),
        ("icmp_sent", icmp_sent),
        ("socket_error", socket_error),
    ])
}

/// Sends from `ns`, through a raw socket (the kernel adds the IP header), UDP datagrams `src -> dst` whose
/// checksum is wrong.
fn send_bad_checksum(ns: &Netns, src: SocketAddrV4, dst: SocketAddrV4, datagrams: u64) -> Result<()> {
    let payload = b"udptrace";
    let length = (8 + payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&src.port().to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&length.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.ip().octets());
    pseudo.extend_from_slice(&dst.ip().octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_UDP as u8]);
    pseudo.extend_from_slice(&length.to_be_bytes());
    pseudo.extend_from_slice(&udp);
    // Neither the right sum nor 0 (no checksum, which IPv4 accepts).
    let right = checksum(&pseudo);
    let wrong: u16 = if right == 0x1111 { 0x2222 } else { 0x1111 };
    udp[6..8].copy_from_slice(&wrong.to_be_bytes());
    let (src, dst) = (*src.ip(), *dst.ip());
    ns.run(move || send_raw_udp(src, dst, &udp, datagrams))?
}

fn send_raw_udp(src: Ipv4Addr, dst: Ipv4Addr, datagram: &[u8], times: u64) -> Result<()> {
    let address = |ip: Ipv4Addr| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip.octets()) },
        sin_zero: [0; 8],
    };
    let size = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls with valid arguments; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("raw UDP socket");
    }
    // SAFETY: a descriptor just opened, owned from here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let local = address(src);
    // SAFETY: binds to an address of the size passed.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const local).cast(), size) } != 0 {
        return Err(io::Error::last_os_error()).context("binding the raw socket");
    }
    let peer = address(dst);
    for _ in 0..times {
        // SAFETY: sends `datagram`, of the length passed, to an address of the size passed.
        let sent = unsafe {
            libc::sendto(fd.as_raw_fd(), datagram.as_ptr().cast(), datagram.len(), 0, (&raw const peer).cast(), size)
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("sending the datagram with a wrong checksum");
        }
    }
    Ok(())
}

/// Three datagrams with a wrong UDP checksum (crafted on a raw socket in the client namespace) to a closed
/// port of the server: its kernel checks the sum before it looks for a listener, drops them (`udp_csum`,
/// direction in; before 5.17 no reason, freed in `__udp4_lib_rcv`), and answers nothing. udptrace's count
/// must equal the server's `Udp: InCsumErrors` increase, and no `icmp_sent` may be about them.
pub fn bad_checksum(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const DATAGRAMS: u64 = 3;
    const SOURCE_PORT: u16 = 40123;
    let hosts = TwoHosts::new()?;
    let src = SocketAddrV4::new(CLIENT_V4.parse()?, SOURCE_PORT);
    let dst = SocketAddrV4::new(SERVER_V4.parse()?, CLOSED_PORT);
    let before = (snmp(&hosts.server, "Udp", "InCsumErrors")?, icmp_counters(&hosts.server)?.out_dest_unreach);
    send_bad_checksum(&hosts.client, src, dst, DATAGRAMS)?;
    // The server's softirq counts them when it gets to them, later on a loaded machine: polled, not slept on.
    let deadline = Instant::now() + config.event_timeout;
    while snmp(&hosts.server, "Udp", "InCsumErrors")? < before.0 + DATAGRAMS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = (snmp(&hosts.server, "Udp", "InCsumErrors")?, icmp_counters(&hosts.server)?.out_dest_unreach);
    let (want, answered) = (after.0 - before.0, after.1 - before.1);
    eprintln!("bad_checksum: InCsumErrors +{want}, OutType3 +{answered}");
    let kernel = match (want, answered) {
        (DATAGRAMS, 0) => Outcome::Pass,
        _ => Outcome::Fail(format!(
            "{DATAGRAMS} datagrams with a wrong checksum: the server counted {want} InCsumErrors and sent {answered} \
             destination unreachables, want {DATAGRAMS} and 0"
        )),
    };
    let (src, dst) = (SocketAddr::V4(src), SocketAddr::V4(dst));
    let (counted, fields) = match drop_hook(config, tracer) {
        Err(skip) => (skip.clone(), skip),
        Ok(mode) => {
            let fields = drop_fields(&hosts.server, &mode, src, dst, "in", json!({"local": null, "pid": null}));
            exact_drops(config, tracer, (src, dst), want, &fields, &UDP_CSUM)
        }
    };
    let unanswered = match tracer.mode_of("icmp_send") {
        None => Outcome::Skip("the icmp_send hook did not attach".to_owned()),
        Some(_) => none_of(config, tracer, "the kernel answered no bad checksum", |e| {
            e["event"] == "icmp_sent" && e["packet"]["src"] == src.to_string()
        }),
    };
    Ok(vec![
        ("kernel_counted", kernel),
        ("drops_match", counted),
        ("udp_dropped", fields),
        ("no_icmp_sent", unanswered),
    ])
}

/// Seed case 1 for IPv6, told once. With fentry or kprobe the `icmp6_send` hook sees the port unreachable
/// (`rate_limited` false) and the drop of the datagram that made it (`no_socket`; on 5.10, without drop
/// reasons, the drop right after the port unreachable) is no `udp_dropped`. Tracepoint mode has no hook on
/// `icmp6_send`: the port unreachable is told from that drop, `rate_limited` null (whether a rate limit let it
/// out is not seen there), which needs the drop reasons of 5.17.
pub fn closed_port_ipv6_once(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let skip = |why: String| Ok(vec![("all", Outcome::Skip(why))]);
    let (probe, rate_limited) = match tracer.mode_of("icmp_send") {
        Some("tracepoint") if !has_drop_reasons() => {
            return skip(
                "before 5.17 no drop reason says NO_SOCKET, and tracepoint mode has no IPv6 send hook".to_owned(),
            );
        }
        Some("tracepoint") => ("tracepoint", Value::Null),
        Some(mode) => (mode, json!(false)),
        None => return skip(format!("the icmp_send hook did not attach in {} mode here", config.mode)),
    };
    let probe = probe.to_owned();
    // In tracepoint mode the drop hook is what sees it.
    let drop_mode = drop_hook(config, tracer);
    if let (Err(skip), "tracepoint") = (&drop_mode, probe.as_str()) {
        return Ok(vec![("all", skip.clone())]);
    }
    let hosts = TwoHosts::new()?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V6), CLOSED_PORT);
    let (local, received, _socket) =
        send_and_receive(&hosts.client, TwoHosts::client_ip(Family::V6), server, no_option, true, b"udptrace")?;
    let server_ns = hosts.server.inode;
    let ours =
        |e: &Value| e["event"] == "icmp_sent" && e["netns"] == server_ns && e["packet"]["src"] == local.to_string();
    let expected = json!({
        "probe": probe,
        "family": "ipv6",
        "icmp": {"type": 1, "code": 4},
        "packet": packet(local, server),
        "cause": "no_listener",
        "rate_limited": rate_limited,
    });
    let sent = outcome_of(tracer.expect("icmp_sent", config.event_timeout, ours).map(|e| compare(&e, &expected)));
    tracer.collect_for(config.quiet_period);
    let all: Vec<&Value> = tracer.seen.iter().filter(|e| ours(e)).collect();
    let once = match all.as_slice() {
        [_] => Outcome::Pass,
        other => Outcome::Fail(format!("one datagram refused, {} icmp_sent: {other:?}", other.len())),
    };
    let no_drop = match drop_mode {
        Err(skip) => skip,
        Ok(_) => none_of(config, tracer, "a closed port's drop is the icmp_sent's story", is_drop_of(local, server)),
    };
    Ok(vec![
        ("client_errno", errno_check(&received, Some(libc::ECONNREFUSED))),
        ("icmp_sent", sent),
        ("one_icmp_sent", once),
        ("no_udp_dropped", no_drop),
    ])
}
