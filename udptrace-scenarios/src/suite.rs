//! The scenarios: the seed article's cases. Each sets up its own namespaces, provokes its case, and
//! checks the exact events (every field but the time and the context task) that one shared udptrace
//! reports for those namespaces.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{
    Config, Outcome,
    helper::ClientProcess,
    netns::{Netns, exec_in, veth},
    packets::{
        Quote, crafted_port_unreachable, icmp_counters, port_unreachable_quoting, send_raw_icmp, set_int_option,
        set_recverr, udp_socket,
    },
    tracer::Tracer,
};

mod check;
mod drops;
mod metrics;
mod operator;

pub use operator::program_ids;

pub type Results = Vec<(&'static str, Outcome)>;

pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&Config, &mut Tracer) -> Result<Results>,
}

/// The scenarios that check something with the drop hook alone (`udp_dropped`, BPF statistics).
pub const WITH_DROPS_ONLY: &[&str] = &[
    "firewall_drop",
    "rcvbuf_full",
    "neighbour_failed",
    "bad_checksum",
    "closed_port_ipv6_once",
    "healthy_path",
    // Its udptrace runs with `-v`: the verifier must accept the programs with their log calls wherever any load.
    "sigkill_unloads",
    // `udptrace check` starts hooks of its own; with the drop hook alone it still has the error queue.
    "check_open",
    "check_closed_ipv4",
    "check_closed_ipv6",
    "check_reject",
    "check_drop",
    "check_no_arp",
    "check_no_nd",
    "check_output_drop",
    "check_unprivileged",
    "check_bad_usage",
];

pub static SCENARIOS: &[Scenario] = &[
    Scenario { name: "closed_port_ipv4", run: |c, t| closed_port(c, t, Family::V4) },
    Scenario { name: "closed_port_ipv6", run: |c, t| closed_port(c, t, Family::V6) },
    Scenario { name: "unconnected", run: |c, t| unconnected(c, t, false) },
    Scenario { name: "unconnected_recverr", run: |c, t| unconnected(c, t, true) },
    Scenario { name: "error_queue", run: error_queue },
    Scenario { name: "error_queue_full", run: error_queue_full },
    Scenario { name: "socket_destroyed", run: socket_destroyed },
    Scenario { name: "unreachable_ipv4", run: |c, t| unreachable(c, t, Family::V4) },
    Scenario { name: "unreachable_ipv6", run: |c, t| unreachable(c, t, Family::V6) },
    Scenario { name: "host_down_ipv4", run: |c, t| host_down(c, t, Family::V4) },
    Scenario { name: "host_down_ipv6", run: |c, t| host_down(c, t, Family::V6) },
    Scenario { name: "firewall_drop", run: firewall_drop },
    Scenario { name: "rcvbuf_full", run: drops::rcvbuf_full },
    Scenario { name: "neighbour_failed", run: drops::neighbour_failed },
    Scenario { name: "bad_checksum", run: drops::bad_checksum },
    Scenario { name: "closed_port_ipv6_once", run: drops::closed_port_ipv6_once },
    Scenario { name: "check_open", run: check::check_open },
    Scenario { name: "check_closed_ipv4", run: |c, t| check::check_closed(c, t, Family::V4) },
    Scenario { name: "check_closed_ipv6", run: |c, t| check::check_closed(c, t, Family::V6) },
    Scenario { name: "check_reject", run: check::check_reject },
    Scenario { name: "check_drop", run: check::check_drop },
    Scenario { name: "check_no_arp", run: |c, t| check::check_no_neighbour(c, t, Family::V4) },
    Scenario { name: "check_no_nd", run: |c, t| check::check_no_neighbour(c, t, Family::V6) },
    Scenario { name: "check_output_drop", run: check::check_output_drop },
    Scenario { name: "check_unprivileged", run: check::check_unprivileged },
    Scenario { name: "check_bad_usage", run: check::check_bad_usage },
    Scenario { name: "firewall_reject_ipv4", run: |c, t| firewall_reject(c, t, Family::V4) },
    Scenario { name: "firewall_reject_ipv6", run: |c, t| firewall_reject(c, t, Family::V6) },
    Scenario { name: "nested_send_ipv4", run: |c, t| nested_send(c, t, Family::V4) },
    Scenario { name: "nested_send_ipv6", run: |c, t| nested_send(c, t, Family::V6) },
    Scenario { name: "ttl_exceeded", run: ttl_exceeded },
    Scenario { name: "frag_needed", run: frag_needed },
    Scenario { name: "server_restart", run: server_restart },
    Scenario { name: "rate_limit", run: rate_limit },
    Scenario { name: "no_socket", run: no_socket },
    Scenario { name: "no_socket_gro", run: no_socket_gro },
    Scenario { name: "no_route_back_ipv6", run: no_route_back_ipv6 },
    Scenario { name: "tunnel_socket", run: tunnel_socket },
    Scenario { name: "kernel_socket", run: kernel_socket },
    Scenario { name: "owner", run: owner },
    Scenario { name: "owner_before_start", run: owner_before_start },
    Scenario { name: "owner_forked_child", run: owner_forked_child },
    Scenario { name: "owner_connected_by_child", run: owner_connected_by_child },
    Scenario { name: "owner_back_to_back", run: owner_back_to_back },
    Scenario { name: "filters", run: operator::filters },
    Scenario { name: "flood", run: operator::flood },
    Scenario { name: "malformed_icmp", run: operator::malformed_icmp },
    Scenario { name: "sigkill_unloads", run: operator::sigkill_unloads },
    Scenario { name: "healthy_path", run: operator::healthy_path },
    Scenario { name: "owner_records_freed", run: operator::owner_records_freed },
    Scenario { name: "prometheus", run: metrics::prometheus },
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

    fn pick<'a>(self, v4: &'a str, v6: &'a str) -> IpAddr {
        match self {
            Family::V4 => v4,
            Family::V6 => v6,
        }
        .parse()
        .expect("literal address")
    }
}

/// Where nothing listens.
const CLOSED_PORT: u16 = 7777;

/// A client and a server on one link.
struct TwoHosts {
    client: Netns,
    server: Netns,
}

const CLIENT_V4: &str = "10.231.0.1";
const SERVER_V4: &str = "10.231.0.2";
const CLIENT_V6: &str = "fd00:231::1";
const SERVER_V6: &str = "fd00:231::2";

impl TwoHosts {
    fn new() -> Result<Self> {
        let client = Netns::new("client")?;
        let server = Netns::new("server")?;
        veth(&client, &["10.231.0.1/24", "fd00:231::1/64"], &server, &["10.231.0.2/24", "fd00:231::2/64"])?;
        Ok(Self { client, server })
    }

    fn client_ip(family: Family) -> IpAddr {
        family.pick(CLIENT_V4, CLIENT_V6)
    }

    fn server_ip(family: Family) -> IpAddr {
        family.pick(SERVER_V4, SERVER_V6)
    }
}

/// A client, a router and a server: client -- 10.231.0.0/24 -- router -- 10.232.0.0/24 -- server (and
/// fd00:231::/64, fd00:232::/64). The router's link to the server may have a smaller MTU.
struct Routed {
    client: Netns,
    router: Netns,
    /// Lives as long as the topology; nothing in it is inspected.
    _server: Netns,
}

const ROUTER_IN_V4: &str = "10.231.0.2";
const ROUTER_IN_V6: &str = "fd00:231::2";
const FAR_SERVER_V4: &str = "10.232.0.2";

impl Routed {
    fn new(server_link_mtu: Option<u32>) -> Result<Self> {
        let client = Netns::new("client")?;
        let router = Netns::new("router")?;
        let server = Netns::new("server")?;
        // The router ends up with veth-b towards the client and veth-a towards the server.
        veth(&client, &["10.231.0.1/24", "fd00:231::1/64"], &router, &["10.231.0.2/24", "fd00:231::2/64"])?;
        veth(&router, &["10.232.0.1/24", "fd00:232::1/64"], &server, &["10.232.0.2/24", "fd00:232::2/64"])?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        client.ip(&["route", "add", "default", "via", ROUTER_IN_V4])?;
        client.ip(&["-6", "route", "add", "default", "via", ROUTER_IN_V6])?;
        server.ip(&["route", "add", "default", "via", "10.232.0.1"])?;
        server.ip(&["-6", "route", "add", "default", "via", "fd00:232::1"])?;
        if let Some(mtu) = server_link_mtu {
            router.ip(&["link", "set", "veth-a", "mtu", &mtu.to_string()])?;
            server.ip(&["link", "set", "veth-b", "mtu", &mtu.to_string()])?;
        }
        Ok(Self { client, router, _server: server })
    }
}

/// A UDP socket in `ns`, optionally connected, that sends `payload` and then waits briefly for an
/// answer or an error. Returns its local address and what the receive call got.
fn send_and_receive(
    ns: &Netns,
    local_ip: IpAddr,
    peer: SocketAddr,
    setup: impl Fn(&UdpSocket) -> io::Result<()>,
    connect: bool,
    payload: &[u8],
) -> Result<(SocketAddr, io::Result<usize>, UdpSocket)> {
    let socket = udp_socket(ns, SocketAddr::new(local_ip, 0))?;
    setup(&socket).context("setting a socket option")?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    if connect {
        socket.connect(peer)?;
        socket.send(payload)?;
    } else {
        socket.send_to(payload, peer)?;
    }
    // Give the ICMP error time to come back before the socket is read.
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; 64];
    let received = socket.recv(&mut buf);
    // The socket is handed back, for the caller to keep open until its checks are done: the verdict of an
    // error the kernel reported to no socket comes from the socket table, asked when udptrace reads the
    // event, which under emulation can be seconds later.
    Ok((socket.local_addr()?, received, socket))
}

fn no_option(_: &UdpSocket) -> io::Result<()> {
    Ok(())
}

/// Compares the fields of `expected` with `event`; lists every difference.
pub fn compare(event: &Value, expected: &Value) -> Outcome {
    let Some(fields) = expected.as_object() else {
        return Outcome::Fail("bad expectation".into());
    };
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
    if !connected {
        seen["remote"] = Value::Null;
    }
    seen
}

fn outcome_of(result: Result<Outcome>) -> Outcome {
    result.unwrap_or_else(|e| Outcome::Fail(format!("{e:#}")))
}

/// The client's receive call must fail with `errno`, or, for `None`, time out (nothing reported).
fn errno_check(received: &io::Result<usize>, errno: Option<i32>) -> Outcome {
    match (received, errno) {
        (Err(e), Some(want)) if e.raw_os_error() == Some(want) => Outcome::Pass,
        (Err(e), None) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Outcome::Pass,
        (other, want) => Outcome::Fail(format!(
            "the client's recv returned {other:?}, want {}",
            want.map_or_else(
                || "a timeout (no error reported)".to_owned(),
                |e| io::Error::from_raw_os_error(e).to_string()
            )
        )),
    }
}

fn is_socket_error_of(ns: &Netns, local: SocketAddr) -> impl Fn(&Value) -> bool + '_ {
    move |e: &Value| e["event"] == "socket_error" && e["netns"] == ns.inode && e["local"] == local.to_string()
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
    let matches = is_socket_error_of(ns, local);
    let mut expected = match (mode.as_str(), tracepoint) {
        ("tracepoint", Some(expected)) => expected,
        ("tracepoint", None) => {
            tracer.collect_for(config.quiet_period);
            return match tracer.seen.iter().find(|e| matches(e)) {
                None => Outcome::Pass,
                Some(e) => Outcome::Fail(format!("tracepoint mode cannot see this case, yet reported {e}")),
            };
        }
        _ => expected,
    };
    expected["probe"] = json!(mode);
    outcome_of(
        tracer.expect("a socket_error for the client", config.event_timeout, matches).map(|e| compare(&e, &expected)),
    )
}

/// Why `icmp_sent` cannot be checked for `family` with the hook as attached, if it cannot.
fn icmp_send_unseen(config: &Config, tracer: &Tracer, family: Family) -> Option<String> {
    match tracer.mode_of("icmp_send") {
        None => Some(format!("the icmp_send hook did not attach in {} mode here", config.mode)),
        Some("tracepoint") if family == Family::V6 => Some(
            "tracepoint mode has no IPv6 send hook (icmp:icmp_send is IPv4 only; icmp6_send needs fentry or kprobe)"
                .to_owned(),
        ),
        Some(_) => None,
    }
}

/// The `icmp_sent` from `ns` about a packet from `src`, compared with `expected` (plus `probe`, `family`).
fn check_icmp_sent(
    config: &Config,
    tracer: &mut Tracer,
    ns: &Netns,
    family: Family,
    src: SocketAddr,
    expected: Value,
) -> Outcome {
    if let Some(why) = icmp_send_unseen(config, tracer, family) {
        return Outcome::Skip(why);
    }
    let mut expected = expected;
    expected["probe"] = json!(tracer.mode_of("icmp_send"));
    expected["family"] = json!(family.name());
    outcome_of(
        tracer
            .expect("an icmp_sent", config.event_timeout, |e| {
                e["event"] == "icmp_sent" && e["netns"] == ns.inode && e["packet"]["src"] == src.to_string()
            })
            .map(|e| compare(&e, &expected)),
    )
}

/// The offending packet of an `icmp_sent`.
fn packet(src: SocketAddr, dst: SocketAddr) -> Value {
    json!({"src": src.to_string(), "dst": dst.to_string(), "proto": "udp"})
}

/// Seed case 1: the peer is up and nothing listens on the port. The server's kernel answers with a
/// port-unreachable (`icmp_sent`, cause `no_listener`); the client's kernel gives the connected socket
/// ECONNREFUSED (`socket_error`, `delivered`).
fn closed_port(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    refused(config, tracer, &TwoHosts::new()?, family, "no_listener")
}

/// A connected client sends to the server's port and is refused with a port-unreachable: the client
/// gets ECONNREFUSED (`delivered`), the server's `icmp_sent` carries `cause`.
fn refused(
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
struct ErrorPath<'a> {
    family: Family,
    client: &'a Netns,
    /// The namespace that sends the ICMP error (the server, or the router).
    sender: &'a Netns,
    from: IpAddr,
    icmp: (u8, u8),
    errno: &'static str,
    verdict: &'static str,
    /// What the client's receive call gets: this errno, or for `None` nothing (a timeout).
    client_errno: Option<i32>,
    cause: &'static str,
}

impl ErrorPath<'_> {
    /// The three checks for a datagram from `local` to `remote` and what the client then received.
    fn checks(
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
fn unconnected(config: &Config, tracer: &mut Tracer, recverr: bool) -> Result<Results> {
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
fn recverr_errors(hosts: &TwoHosts, errors: usize, rcvbuf: Option<i32>) -> Result<(SocketAddr, usize)> {
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
fn error_queue(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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
fn error_queue_full(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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
fn socket_destroyed(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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
fn unreachable(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
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
fn soft_error_from_router(
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
fn host_down(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
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
fn nft_input_rule(ns: &Netns, rule: &str) -> Result<()> {
    nft_rule(ns, "input", rule)
}

/// Adds an nftables rule to the chain `hook` (`input`, `output`) of `ns`'s table `inet udptrace`.
fn nft_rule(ns: &Netns, hook: &str, rule: &str) -> Result<()> {
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
fn nested_send(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
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
fn firewall_drop(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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
fn firewall_reject(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let _listener = udp_socket(&hosts.server, SocketAddr::new(TwoHosts::server_ip(family), CLOSED_PORT))?;
    nft_input_rule(&hosts.server, &format!("udp dport {CLOSED_PORT} reject"))?;
    refused(config, tracer, &hosts, family, "firewall_reject")
}

/// A datagram sent with TTL 1 through the router: time-exceeded from the router (`ttl_exceeded`), a
/// soft error the connected client never hears of.
fn ttl_exceeded(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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
fn frag_needed(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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
fn server_restart(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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

/// A flood to a closed port with the rate limits on: what udptrace reports suppressed (one event per
/// error with hooks, counts from the counters in tracepoint mode) must equal the server kernel's own
/// `OutRateLimitGlobal` / `OutRateLimitHost` increases, and its `icmp_sent` the errors sent.
fn rate_limit(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const FLOOD: usize = 300;
    let hosts = TwoHosts::new()?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let before = icmp_counters(&hosts.server)?;
    let client = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    for _ in 0..FLOOD {
        // Unconnected: an ICMP error back must not make the next send fail.
        client.send_to(b"flood", server)?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = icmp_counters(&hosts.server)?;
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
        let matches = |(global, host): (u64, u64)| {
            if counted { (global, host) == (want_global, want_host) } else { global + host == want_suppressed }
        };
        let deadline = Instant::now() + config.event_timeout;
        while !matches(sums(&tracer.seen)) && Instant::now() < deadline {
            tracer.collect_for(Duration::from_millis(500));
        }
        let got = sums(&tracer.seen);
        if matches(got) {
            Outcome::Pass
        } else if counted {
            Outcome::Fail(format!(
                "udptrace reported {got:?} suppressed (global, host), the kernel counted ({want_global}, {want_host})"
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
fn crafted_error(
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
fn no_socket(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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
fn no_socket_gro(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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
fn no_route_back_ipv6(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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
fn tunnel_socket(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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
fn kernel_socket(config: &Config, tracer: &mut Tracer) -> Result<Results> {
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

/// A client process in the client namespace whose connected socket points at a listening server (so no
/// ICMP comes back on its own), and a port-unreachable quoting that socket crafted in the server
/// namespace: the error is processed in the injecting task's context, never the client's.
struct OwnerCase {
    hosts: TwoHosts,
    _listener: UdpSocket,
    server: SocketAddr,
}

impl OwnerCase {
    fn new() -> Result<Self> {
        let hosts = TwoHosts::new()?;
        let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
        let listener = udp_socket(&hosts.server, server)?;
        Ok(Self { hosts, _listener: listener, server })
    }

    fn client(&self, config: &Config, extra: &[&str]) -> Result<ClientProcess> {
        let server = self.server.to_string();
        let mut args = vec!["--netns", self.hosts.client.name.as_str(), "--bind", CLIENT_V4, "--connect", &server];
        args.extend_from_slice(extra);
        ClientProcess::start(&config.helper, &args)
    }

    fn inject(&self, client: &ClientProcess) -> Result<()> {
        let (IpAddr::V4(client_ip), IpAddr::V4(server_ip)) = (client.local.ip(), self.server.ip()) else {
            bail!("IPv4 expected");
        };
        let icmp = port_unreachable_quoting(client_ip, client.local.port(), server_ip, self.server.port());
        self.hosts.server.run(move || send_raw_icmp(client_ip, &icmp))?
    }

    /// The event must name `pid` (its comm and cgroup as /proc shows them), not the injecting process.
    fn check(&self, config: &Config, tracer: &mut Tracer, client: &ClientProcess, pid: u32) -> Outcome {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim_end().to_owned();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned));
        let expected = json!({
            "local": client.local.to_string(),
            "remote": self.server.to_string(),
            "errno": "ECONNREFUSED",
            "verdict": "delivered",
            "pid": pid,
            "comm": comm,
            "cgroup": cgroup,
        });
        let tracepoint = as_tracepoint_sees(&expected, true);
        check_socket_error(config, tracer, &self.hosts.client, client.local, expected, Some(tracepoint))
    }
}

/// The cgroup v2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_mount() -> Option<String> {
    std::fs::read_to_string("/proc/self/mountinfo").ok()?.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(str::to_owned))?
    })
}

/// A cgroup of the test's own, removed when dropped (after the processes in it are gone).
struct TestCgroup(String);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The owner, not the interrupted task: a client process in a cgroup of its own sends; another
/// process (this one) injects an ICMP error quoting its socket. The event names the client, with its
/// cgroup as /proc/PID/cgroup says.
fn owner(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let case = OwnerCase::new()?;
    let cgroup = match cgroup2_mount() {
        Some(mount) => {
            let dir = format!("{mount}/udptrace-test-{}", std::process::id());
            std::fs::create_dir_all(&dir).ok().map(|()| TestCgroup(dir))
        }
        None => None,
    };
    let mut extra = Vec::new();
    if let Some(TestCgroup(dir)) = &cgroup {
        extra.extend(["--cgroup", dir.as_str()]);
    }
    let client = case.client(config, &extra)?;
    case.inject(&client)?;
    let named = case.check(config, tracer, &client, client.pid);
    let in_cgroup = match &cgroup {
        None => Outcome::Skip("no writable cgroup v2 hierarchy here".to_owned()),
        Some(TestCgroup(dir)) => {
            let proc_says = std::fs::read_to_string(format!("/proc/{}/cgroup", client.pid)).unwrap_or_default();
            let leaf = dir.rsplit('/').next().unwrap_or_default();
            if proc_says.lines().any(|l| l.starts_with("0::") && l.ends_with(leaf)) {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("the client is not in {dir}: /proc says {proc_says:?}"))
            }
        }
    };
    drop(client);
    Ok(vec![("names_the_owner", named), ("own_cgroup", in_cgroup)])
}

/// A socket opened and used before udptrace started: no send was seen, so the owner comes from
/// /proc/*/fd through the socket's inode.
fn owner_before_start(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    let case = OwnerCase::new()?;
    let client = case.client(config, &[])?;
    let mut late = Tracer::start(config, &[])?;
    case.inject(&client)?;
    let named = case.check(config, &mut late, &client, client.pid);
    // Found through /proc, which also says how many processes hold it: the helper alone.
    let event = late.seen.iter().rev().find(|e| e["event"] == "socket_error" && e["local"] == client.local.to_string());
    let holders = match (&named, event.map(|e| &e["holders"])) {
        (Outcome::Skip(why), _) => Outcome::Skip(why.clone()),
        (_, Some(n)) if *n == 1 => Outcome::Pass,
        (_, other) => Outcome::Fail(format!("holders: got {other:?}, want 1")),
    };
    let stop = match late.stop() {
        Ok(_) => Outcome::Pass,
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    Ok(vec![("names_the_owner", named), ("holders", holders), ("clean_stop", stop)])
}

/// A forked child sends on its parent's socket, last. The event names the parent, which created the
/// socket: recorded at `socket()`, or, without that hook, the first of its holders /proc shows.
fn owner_forked_child(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let case = OwnerCase::new()?;
    let client = case.client(config, &["--fork"])?;
    let parent = client.parent_pid();
    case.inject(&client)?;
    Ok(vec![("names_the_creator", case.check(config, tracer, &client, parent))])
}

/// A parent creates the socket, a forked child connects it and sends: the event names the child, which
/// connected it last (`cgroup/connect4`). Without that hook there is no connector to name.
fn owner_connected_by_child(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    if tracer.mode_of("socket_owner").is_none() {
        return Ok(vec![("names_the_connector", Outcome::Skip("the socket_owner hook did not attach".to_owned()))]);
    }
    let case = OwnerCase::new()?;
    let client = case.client(config, &["--connect-in-child"])?;
    case.inject(&client)?;
    Ok(vec![("names_the_connector", case.check(config, tracer, &client, client.pid))])
}

/// Two sockets that never send get errors back to back, each named. Where the creation hook attaches it
/// names them; without it /proc is scanned for the first, and the second, opened after that scan within
/// the second in which /proc is not scanned again, waits for the next scan (the resolver's unit tests
/// check that wait on every host).
fn owner_back_to_back(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let case = OwnerCase::new()?;
    let first = case.client(config, &["--no-send"])?;
    case.inject(&first)?;
    let first_named = case.check(config, tracer, &first, first.pid);
    let second = case.client(config, &["--no-send"])?;
    case.inject(&second)?;
    let second_named = case.check(config, tracer, &second, second.pid);
    Ok(vec![("names_the_first", first_named), ("names_the_second", second_named)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_only_scenarios_are_scenarios() {
        for name in WITH_DROPS_ONLY {
            assert!(SCENARIOS.iter().any(|s| s.name == *name), "{name} is not a scenario");
        }
    }

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
    fn errno_check_wants_the_exact_error_or_silence() {
        let refused: io::Result<usize> = Err(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        let timeout: io::Result<usize> = Err(io::Error::from(io::ErrorKind::WouldBlock));
        assert_eq!(errno_check(&refused, Some(libc::ECONNREFUSED)), Outcome::Pass);
        assert!(matches!(errno_check(&refused, None), Outcome::Fail(_)));
        assert_eq!(errno_check(&timeout, None), Outcome::Pass);
        assert!(matches!(errno_check(&Ok(3), Some(libc::EMSGSIZE)), Outcome::Fail(_)));
    }
}
