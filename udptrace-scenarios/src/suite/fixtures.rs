//! What the scenarios share: two hosts or a router between them, the checks of one event against its
//! expected fields, and the errno a send or receive must see.

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{
    config::Config,
    netns::{Netns, veth},
    outcome::Outcome,
    packets::udp_socket,
    tracer::Tracer,
};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// Port unreachable: (type, code).
    pub(super) fn port_unreachable(self) -> (u8, u8) {
        match self {
            Family::V4 => (3, 3),
            Family::V6 => (1, 4),
        }
    }

    pub(super) fn pick<'a>(self, v4: &'a str, v6: &'a str) -> IpAddr {
        match self {
            Family::V4 => v4,
            Family::V6 => v6,
        }
        .parse()
        .expect("literal address")
    }
}

/// Where nothing listens.
pub(super) const CLOSED_PORT: u16 = 7777;

/// A client and a server on one link.
pub(super) struct TwoHosts {
    pub(super) client: Netns,
    pub(super) server: Netns,
}

pub(super) const CLIENT_V4: &str = "10.231.0.1";
pub(super) const SERVER_V4: &str = "10.231.0.2";
pub(super) const CLIENT_V6: &str = "fd00:231::1";
pub(super) const SERVER_V6: &str = "fd00:231::2";

impl TwoHosts {
    pub(super) fn new() -> Result<Self> {
        let client = Netns::new("client")?;
        let server = Netns::new("server")?;
        veth(&client, &["10.231.0.1/24", "fd00:231::1/64"], &server, &["10.231.0.2/24", "fd00:231::2/64"])?;
        Ok(Self { client, server })
    }

    pub(super) fn client_ip(family: Family) -> IpAddr {
        family.pick(CLIENT_V4, CLIENT_V6)
    }

    pub(super) fn server_ip(family: Family) -> IpAddr {
        family.pick(SERVER_V4, SERVER_V6)
    }
}

/// A client, a router and a server: client -- 10.231.0.0/24 -- router -- 10.232.0.0/24 -- server (and
/// fd00:231::/64, fd00:232::/64). The router's link to the server may have a smaller MTU.
pub(super) struct Routed {
    pub(super) client: Netns,
    pub(super) router: Netns,
    /// Lives as long as the topology; nothing in it is inspected.
    pub(super) _server: Netns,
}

pub(super) const ROUTER_IN_V4: &str = "10.231.0.2";
pub(super) const ROUTER_IN_V6: &str = "fd00:231::2";
pub(super) const FAR_SERVER_V4: &str = "10.232.0.2";

impl Routed {
    pub(super) fn new(server_link_mtu: Option<u32>) -> Result<Self> {
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
pub(super) fn send_and_receive(
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

pub(super) fn no_option(_: &UdpSocket) -> io::Result<()> {
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
pub(super) fn as_tracepoint_sees(expected: &Value, connected: bool) -> Value {
    let mut seen = expected.clone();
    seen["icmp"] = Value::Null;
    if !connected {
        seen["remote"] = Value::Null;
    }
    seen
}

pub(super) fn outcome_of(result: Result<Outcome>) -> Outcome {
    result.unwrap_or_else(|e| Outcome::Fail(format!("{e:#}")))
}

/// The client's receive call must fail with `errno`, or, for `None`, time out (nothing reported).
pub(super) fn errno_check(received: &io::Result<usize>, errno: Option<i32>) -> Outcome {
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

pub(super) fn is_socket_error_of(ns: &Netns, local: SocketAddr) -> impl Fn(&Value) -> bool + '_ {
    move |e: &Value| e["event"] == "socket_error" && e["netns"] == ns.inode && e["local"] == local.to_string()
}

/// The `socket_error` for `local` in `ns`, compared with `expected` (plus `probe`). In tracepoint mode,
/// which sees only delivered errors and never the ICMP, `tracepoint` says what to expect instead: `None`
/// for no event at all.
pub(super) fn check_socket_error(
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
pub(super) fn icmp_send_unseen(config: &Config, tracer: &Tracer, family: Family) -> Option<String> {
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
pub(super) fn check_icmp_sent(
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
            .map(|e| hidden_caller(&e, &expected).unwrap_or_else(|| compare(&e, &expected))),
    )
}

/// A skip for a kprobe-mode `icmp_sent` whose cause the stack could not show, on a kernel that cannot unwind
/// past a kretprobe's trampoline (before 5.15): where a scenario runs a second udptrace beside the suite's,
/// whose kretprobe on `__icmp_send` runs first (5.10's `add_new_kprobe` puts the newest probe first).
pub(super) fn hidden_caller(event: &Value, expected: &Value) -> Option<Outcome> {
    (event["probe"] == "kprobe"
        && event["cause"] == "unknown"
        && expected.get("cause").is_some_and(|cause| cause != "unknown")
        && super::procfs::running_kernel() < (5, 15))
        .then(|| {
            Outcome::Skip(
                "another udptrace's kretprobe on __icmp_send ran first and this kernel's unwinder (before 5.15) \
                 stops at its trampoline: the cause is `unknown`, as it must be then"
                    .to_owned(),
            )
        })
}

/// The offending packet of an `icmp_sent`.
pub(super) fn packet(src: SocketAddr, dst: SocketAddr) -> Value {
    json!({"src": src.to_string(), "dst": dst.to_string(), "proto": "udp"})
}

/// What `read` gives once it gives the same twice, `STEADY` apart (the kernel has counted what it was handed),
/// or at `timeout`: for counters that a loaded machine's softirqs raise late, which a fixed sleep would read
/// too early.
pub(super) fn settled<T: PartialEq>(timeout: Duration, mut read: impl FnMut() -> Result<T>) -> Result<T> {
    const STEADY: Duration = Duration::from_millis(300);
    let deadline = Instant::now() + timeout;
    let mut last = read()?;
    loop {
        std::thread::sleep(STEADY);
        let now = read()?;
        if now == last || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Where `program` is on `PATH`, if it is.
pub(super) fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}
