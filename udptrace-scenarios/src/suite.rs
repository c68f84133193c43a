//! The scenarios. Each sets up its own namespaces, provokes its case, and checks the exact events (every
//! field but the time and the context task) that one shared udptrace reports for those namespaces.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{
    Config, Outcome,
    netns::{Netns, veth},
    tracer::Tracer,
};

pub type Results = Vec<(&'static str, Outcome)>;

pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&Config, &mut Tracer) -> Result<Results>,
}

pub static SCENARIOS: &[Scenario] = &[
    Scenario { name: "closed_port_ipv4", run: |c, t| closed_port(c, t, Family::V4) },
    Scenario { name: "closed_port_ipv6", run: |c, t| closed_port(c, t, Family::V6) },
    Scenario { name: "unconnected", run: |c, t| unconnected(c, t, false) },
    Scenario { name: "unconnected_recverr", run: |c, t| unconnected(c, t, true) },
    Scenario { name: "soft_error", run: soft_error },
    Scenario { name: "no_socket", run: no_socket },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// Port unreachable: (type, code).
    fn port_unreachable(self) -> (u8, u8) {
        match self {
            Family::V4 => (3, 3),
            Family::V6 => (1, 4),
        }
    }
}

/// A client and a server joined by one veth link, IPv4 and IPv6.
struct TwoHosts {
    client: Netns,
    server: Netns,
}

const CLIENT_V4: &str = "10.231.0.1";
const SERVER_V4: &str = "10.231.0.2";
const CLIENT_V6: &str = "fd00:231::1";
const SERVER_V6: &str = "fd00:231::2";
/// Where nothing listens.
const CLOSED_PORT: u16 = 7777;

impl TwoHosts {
    fn new() -> Result<Self> {
        let client = Netns::new("client")?;
        let server = Netns::new("server")?;
        veth(&client, &["10.231.0.1/24", "fd00:231::1/64"], &server, &["10.231.0.2/24", "fd00:231::2/64"])?;
        Ok(Self { client, server })
    }

    fn addrs(family: Family) -> (IpAddr, IpAddr) {
        let (c, s) = match family {
            Family::V4 => (CLIENT_V4, SERVER_V4),
            Family::V6 => (CLIENT_V6, SERVER_V6),
        };
        (c.parse().expect("literal"), s.parse().expect("literal"))
    }
}

/// How a client socket is set up before it sends.
#[derive(Clone, Copy)]
struct ClientSocket {
    connect: bool,
    recverr: bool,
}

/// A UDP socket in `ns` sends one datagram to `peer` and waits briefly for an answer or an error.
/// Returns its local address and what the receive call got.
fn send_and_receive(
    ns: &Netns,
    local_ip: IpAddr,
    peer: SocketAddr,
    how: ClientSocket,
) -> Result<(SocketAddr, io::Result<usize>)> {
    ns.run(move || -> io::Result<(SocketAddr, io::Result<usize>)> {
        let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
        if how.recverr {
            set_recverr(&socket, local_ip.is_ipv6())?;
        }
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        if how.connect {
            socket.connect(peer)?;
            socket.send(b"udptrace scenario")?;
        } else {
            socket.send_to(b"udptrace scenario", peer)?;
        }
        // Give the ICMP error time to come back before the socket is read (and closed).
        std::thread::sleep(Duration::from_millis(300));
        let mut buf = [0u8; 64];
        Ok((socket.local_addr()?, socket.recv(&mut buf)))
    })?
    .context("client socket")
}

fn set_recverr(socket: &UdpSocket, ipv6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, option) = if ipv6 { (libc::IPPROTO_IPV6, libc::IPV6_RECVERR) } else { (libc::IPPROTO_IP, libc::IP_RECVERR) };
    // SAFETY: a valid socket and a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(socket.as_raw_fd(), level, option, (&raw const on).cast(), size_of::<libc::c_int>() as libc::socklen_t)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Compares the fields of `expected` with `event`; lists every difference.
pub fn compare(event: &Value, expected: &Value) -> Outcome {
    let Some(fields) = expected.as_object() else { return Outcome::Fail("bad expectation".into()) };
    let diffs: Vec<String> = fields
        .iter()
        .filter(|(key, want)| event.get(key.as_str()) != Some(want))
        .map(|(key, want)| format!("{key}: got {}, want {want}", event.get(key.as_str()).unwrap_or(&Value::Null)))
        .collect();
    if diffs.is_empty() { Outcome::Pass } else { Outcome::Fail(format!("{} in {event}", diffs.join("; "))) }
}

/// What tracepoint mode reports of a delivered error: the socket woken, not the ICMP, without knowing
/// whether the error was queued, and with no peer for an unconnected socket.
fn as_tracepoint_sees(expected: &Value, connected: bool) -> Value {
    let mut seen = expected.clone();
    seen["icmp"] = Value::Null;
    seen["recverr"] = Value::Null;
    if !connected {
        seen["remote"] = Value::Null;
    }
    seen
}

fn outcome_of(result: Result<Outcome>) -> Outcome {
    result.unwrap_or_else(|e| Outcome::Fail(format!("{e:#}")))
}

fn errno_check(received: &io::Result<usize>, want: Option<io::ErrorKind>) -> Outcome {
    match (received, want) {
        (Err(e), Some(kind)) if e.kind() == kind => Outcome::Pass,
        (Err(e), None) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Outcome::Pass,
        (other, want) => Outcome::Fail(format!(
            "the client's recv returned {other:?}, want {}",
            want.map_or_else(|| "a timeout (no error reported)".to_owned(), |k| format!("{k:?}"))
        )),
    }
}

/// The `socket_error` for `local` in `ns`, compared with `expected` (plus `probe`). In tracepoint mode,
/// which sees only delivered errors and never the ICMP, `tracepoint` says what to expect instead: `None`
/// for no event at all.
fn check_socket_error(
    config: &Config,
    tracer: &mut Tracer,
    ns: &Netns,
    local: SocketAddr,
    expected: Value,
    tracepoint: Option<Value>,
) -> Outcome {
    let Some(mode) = tracer.mode_of("socket_error").map(str::to_owned) else {
        return Outcome::Skip(format!("the socket_error hook did not attach in {} mode here", config.mode));
    };
    let matches = |e: &Value| e["event"] == "socket_error" && e["netns"] == ns.inode && e["local"] == local.to_string();
    let expected = if mode == "tracepoint" {
        match tracepoint {
            Some(expected) => expected,
            None => {
                tracer.collect_for(config.quiet_period);
                return match tracer.seen.iter().find(|e| matches(e)) {
                    None => Outcome::Pass,
                    Some(e) => Outcome::Fail(format!("tracepoint mode cannot see this case, yet reported {e}")),
                };
            }
        }
    } else {
        expected
    };
    let mut expected = expected;
    expected["probe"] = json!(mode);
    outcome_of(tracer.expect("a socket_error for the client", config.event_timeout, matches).map(|e| compare(&e, &expected)))
}

/// The `icmp_sent` from `ns` about a packet from `src`, compared with `expected` (plus `probe`).
fn check_icmp_sent(config: &Config, tracer: &mut Tracer, ns: &Netns, family: Family, src: &str, expected: Value) -> Outcome {
    match tracer.mode_of("icmp_send").map(str::to_owned) {
        None => Outcome::Skip(format!("the icmp_send hook did not attach in {} mode here", config.mode)),
        Some(mode) if mode == "tracepoint" && family == Family::V6 => Outcome::Skip(
            "tracepoint mode has no IPv6 send hook (icmp:icmp_send is IPv4 only; icmp6_send needs fentry or kprobe)"
                .to_owned(),
        ),
        Some(mode) => {
            let mut expected = expected;
            expected["probe"] = json!(mode);
            outcome_of(
                tracer
                    .expect("an icmp_sent", config.event_timeout, |e| {
                        e["event"] == "icmp_sent" && e["netns"] == ns.inode && e["packet"]["src"] == src
                    })
                    .map(|e| compare(&e, &expected)),
            )
        }
    }
}

/// Seed case 1: the peer is up and nothing listens on the port. The server's kernel answers with a
/// port-unreachable (`icmp_sent`, cause `no_listener`); the client's kernel gives the connected socket
/// ECONNREFUSED (`socket_error`, `delivered`).
fn closed_port(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let (client_ip, server_ip) = TwoHosts::addrs(family);
    let server = SocketAddr::new(server_ip, CLOSED_PORT);
    let (local, received) =
        send_and_receive(&hosts.client, client_ip, server, ClientSocket { connect: true, recverr: false })?;
    let (icmp_type, code) = family.port_unreachable();
    let expected = json!({
        "family": family.name(),
        "local": local.to_string(),
        "remote": server.to_string(),
        "icmp": {"type": icmp_type, "code": code, "from": server_ip.to_string()},
        "errno": "ECONNREFUSED",
        "verdict": "delivered",
        "recverr": false,
    });
    let tracepoint = as_tracepoint_sees(&expected, true);
    Ok(vec![
        ("client_errno", errno_check(&received, Some(io::ErrorKind::ConnectionRefused))),
        ("socket_error", check_socket_error(config, tracer, &hosts.client, local, expected, Some(tracepoint))),
        (
            "icmp_sent",
            check_icmp_sent(
                config,
                tracer,
                &hosts.server,
                family,
                &local.to_string(),
                json!({
                    "family": family.name(),
                    "icmp": {"type": icmp_type, "code": code},
                    "packet": {"src": local.to_string(), "dst": server.to_string(), "proto": "udp"},
                    "cause": "no_listener",
                }),
            ),
        ),
    ])
}

/// Seed case 5 (`nc -u` without connect): an unconnected socket gets a port-unreachable. Without
/// IP_RECVERR the kernel drops it (`ignored_unconnected`: the application sees nothing); with
/// IP_RECVERR it is delivered and queued (`recverr: true`).
fn unconnected(config: &Config, tracer: &mut Tracer, recverr: bool) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let (client_ip, server_ip) = TwoHosts::addrs(Family::V4);
    let server = SocketAddr::new(server_ip, CLOSED_PORT);
    let (local, received) = send_and_receive(&hosts.client, client_ip, server, ClientSocket { connect: false, recverr })?;
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
    let want_errno = recverr.then_some(io::ErrorKind::ConnectionRefused);
    Ok(vec![
        ("client_errno", errno_check(&received, want_errno)),
        ("socket_error", check_socket_error(config, tracer, &hosts.client, local, expected, tracepoint)),
    ])
}

/// Seed case 2: the peer's address is unreachable behind a router. The router answers host-unreachable,
/// a soft error: the connected socket without IP_RECVERR never hears of it (`ignored_soft_error`).
fn soft_error(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    // The server namespace routes for 10.231.9.0/24, which it declares unreachable.
    hosts.server.sysctl("net.ipv4.ip_forward", "1")?;
    hosts.server.ip(&["route", "add", "unreachable", "10.231.9.0/24"])?;
    hosts.client.ip(&["route", "add", "10.231.9.0/24", "via", SERVER_V4])?;
    let (client_ip, _) = TwoHosts::addrs(Family::V4);
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 231, 9, 9)), CLOSED_PORT);
    let (local, received) =
        send_and_receive(&hosts.client, client_ip, peer, ClientSocket { connect: true, recverr: false })?;
    let expected = json!({
        "family": "ipv4",
        "local": local.to_string(),
        "remote": peer.to_string(),
        "icmp": {"type": 3, "code": 1, "from": SERVER_V4},
        "errno": "EHOSTUNREACH",
        "verdict": "ignored_soft_error",
        "recverr": false,
    });
    Ok(vec![
        ("client_errno", errno_check(&received, None)),
        ("socket_error", check_socket_error(config, tracer, &hosts.client, local, expected, None)),
        (
            "icmp_sent",
            check_icmp_sent(
                config,
                tracer,
                &hosts.server,
                Family::V4,
                &local.to_string(),
                json!({
                    "family": "ipv4",
                    "icmp": {"type": 3, "code": 1},
                    "packet": {"src": local.to_string(), "dst": peer.to_string(), "proto": "udp"},
                    "cause": "no_route",
                }),
            ),
        ),
    ])
}

/// An ICMP port-unreachable quoting a socket that does not exist (crafted by a raw socket in the server
/// namespace): the client's kernel finds nothing to give it to (`no_socket`).
fn no_socket(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const GONE_PORT: u16 = 40999;
    let hosts = TwoHosts::new()?;
    let client: Ipv4Addr = CLIENT_V4.parse().expect("literal");
    let server: Ipv4Addr = SERVER_V4.parse().expect("literal");
    let icmp = port_unreachable_quoting(client, GONE_PORT, server, CLOSED_PORT);
    hosts.server.run(move || send_raw_icmp(client, &icmp))??;
    let local = SocketAddr::new(IpAddr::V4(client), GONE_PORT);
    let expected = json!({
        "family": "ipv4",
        "local": local.to_string(),
        "remote": SocketAddr::new(IpAddr::V4(server), CLOSED_PORT).to_string(),
        "icmp": {"type": 3, "code": 3, "from": SERVER_V4},
        "errno": "ECONNREFUSED",
        "verdict": "no_socket",
        "recverr": false,
    });
    Ok(vec![("socket_error", check_socket_error(config, tracer, &hosts.client, local, expected, None))])
}

/// An ICMP destination-unreachable/port-unreachable message (header and quoted IPv4+UDP headers) about a
/// datagram `src:sport -> dst:dport`.
fn port_unreachable_quoting(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut quoted = vec![0x45, 0, 0, 28 + 8, 0, 0, 0x40, 0, 64, 17, 0, 0];
    quoted.extend_from_slice(&src.octets());
    quoted.extend_from_slice(&dst.octets());
    let ip_checksum = checksum(&quoted);
    quoted[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
    quoted.extend_from_slice(&sport.to_be_bytes());
    quoted.extend_from_slice(&dport.to_be_bytes());
    quoted.extend_from_slice(&[0, 16, 0, 0]);
    let mut message = vec![3, 3, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&quoted);
    let icmp_checksum = checksum(&message);
    message[2..4].copy_from_slice(&icmp_checksum.to_be_bytes());
    message
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn send_raw_icmp(to: Ipv4Addr, message: &[u8]) -> Result<()> {
    // SAFETY: plain socket calls with valid arguments; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("raw ICMP socket");
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(to.octets()) },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            message.as_ptr().cast(),
            message.len(),
            0,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let error = io::Error::last_os_error();
        libc::close(fd);
        if sent < 0 {
            return Err(error).context("sending the crafted ICMP");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_every_differing_field() {
        let event = json!({"errno": "ECONNREFUSED", "verdict": "delivered", "icmp": null});
        assert_eq!(compare(&event, &json!({"errno": "ECONNREFUSED", "icmp": null})), Outcome::Pass);
        let Outcome::Fail(why) = compare(&event, &json!({"errno": "EHOSTUNREACH", "remote": "10.0.0.9:1"})) else {
            panic!("a mismatch must fail")
        };
        assert!(why.contains("errno: got \"ECONNREFUSED\", want \"EHOSTUNREACH\""), "{why}");
        assert!(why.contains("remote: got null"), "{why}");
    }

    #[test]
    fn crafted_icmp_has_valid_checksums() {
        let message = port_unreachable_quoting(Ipv4Addr::new(10, 0, 0, 1), 4000, Ipv4Addr::new(10, 0, 0, 2), 53);
        assert_eq!(message.len(), 8 + 20 + 8);
        // A correct checksum makes the sum over the data (checksum included) come out as zero.
        assert_eq!(checksum(&message), 0);
        assert_eq!(checksum(&message[8..28]), 0);
        assert_eq!(&message[28..32], &[0x0f, 0xa0, 0, 53]);
    }
}
