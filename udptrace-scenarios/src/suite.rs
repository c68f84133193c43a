//! The scenarios. Each sets up its namespaces, starts udptrace, provokes the case, and checks the exact
//! events (every field but the time and the context task).

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::{
    Check, Config, Outcome,
    netns::{Netns, veth},
    tracer::Tracer,
};

pub struct Scenario {
    pub name: &'static str,
    run: fn(&Config) -> Result<Vec<(&'static str, Outcome)>>,
}

pub static SCENARIOS: &[Scenario] = &[
    Scenario { name: "closed_port_ipv4", run: |c| closed_port(c, Family::V4) },
    Scenario { name: "closed_port_ipv6", run: |c| closed_port(c, Family::V6) },
];

pub fn run_one(scenario: &Scenario, config: &Config) -> Vec<Check> {
    let results = (scenario.run)(config).unwrap_or_else(|e| vec![("setup", Outcome::Fail(format!("{e:#}")))]);
    results.into_iter().map(|(name, outcome)| Check { scenario: scenario.name, name, outcome }).collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// The client/server pair every two-host case uses: one veth link, IPv4 and IPv6.
struct TwoHosts {
    client: Netns,
    server: Netns,
}

impl TwoHosts {
    const CLIENT_V4: &str = "10.231.0.1";
    const SERVER_V4: &str = "10.231.0.2";
    const CLIENT_V6: &str = "fd00:231::1";
    const SERVER_V6: &str = "fd00:231::2";

    fn new() -> Result<Self> {
        let client = Netns::new("client")?;
        let server = Netns::new("server")?;
        veth(&client, &["10.231.0.1/24", "fd00:231::1/64"], &server, &["10.231.0.2/24", "fd00:231::2/64"])?;
        Ok(Self { client, server })
    }

    fn addrs(family: Family) -> (IpAddr, IpAddr) {
        let (c, s) = match family {
            Family::V4 => (Self::CLIENT_V4, Self::SERVER_V4),
            Family::V6 => (Self::CLIENT_V6, Self::SERVER_V6),
        };
        (c.parse().expect("literal"), s.parse().expect("literal"))
    }
}

/// A connected UDP socket in `ns` sends one datagram to `peer` and waits for the answer. Returns its
/// local address and what the receive call got.
fn connected_send_recv(ns: &Netns, local_ip: IpAddr, peer: SocketAddr) -> Result<(SocketAddr, io::Result<usize>)> {
    ns.run(move || -> io::Result<(SocketAddr, io::Result<usize>)> {
        let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
        socket.connect(peer)?;
        socket.set_read_timeout(Some(Duration::from_secs(3)))?;
        socket.send(b"udptrace scenario")?;
        let mut buf = [0u8; 64];
        Ok((socket.local_addr()?, socket.recv(&mut buf)))
    })?
    .context("client socket")
}

/// Compares the fields of `expected` with `event`; lists every difference.
fn compare(event: &Value, expected: &Value) -> Outcome {
    let Some(fields) = expected.as_object() else { return Outcome::Fail("bad expectation".into()) };
    let diffs: Vec<String> = fields
        .iter()
        .filter(|(key, want)| event.get(key.as_str()) != Some(want))
        .map(|(key, want)| format!("{key}: got {}, want {want}", event.get(key.as_str()).unwrap_or(&Value::Null)))
        .collect();
    if diffs.is_empty() { Outcome::Pass } else { Outcome::Fail(format!("{} in {event}", diffs.join("; "))) }
}

fn outcome_of(result: Result<Outcome>) -> Outcome {
    result.unwrap_or_else(|e| Outcome::Fail(format!("{e:#}")))
}

/// Seed case 1: the peer is up and nothing listens on the port. The server's kernel answers with a
/// port-unreachable (`icmp_sent`, cause `no_listener`); the client's kernel gives the connected socket
/// ECONNREFUSED (`socket_error`, `delivered`).
fn closed_port(config: &Config, family: Family) -> Result<Vec<(&'static str, Outcome)>> {
    const PORT: u16 = 7777;
    let hosts = TwoHosts::new()?;
    let (client_ip, server_ip) = TwoHosts::addrs(family);
    let mut tracer = Tracer::start(&config.udptrace, &config.mode)?;
    let (local, received) = connected_send_recv(&hosts.client, client_ip, SocketAddr::new(server_ip, PORT))?;
    let server = SocketAddr::new(server_ip, PORT);
    let mut results = Vec::new();

    results.push((
        "client_errno",
        match received {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Outcome::Pass,
            other => Outcome::Fail(format!("the client's recv returned {other:?}, not ECONNREFUSED")),
        },
    ));

    let socket_error = match tracer.mode_of("socket_error").map(str::to_owned) {
        None => Outcome::Skip(format!("the socket_error hook did not attach in {} mode here", config.mode)),
        Some(mode) => outcome_of(
            tracer
                .expect("socket_error for the client", config.event_timeout, |e| {
                    e["event"] == "socket_error" && e["netns"] == hosts.client.inode && e["local"] == local.to_string()
                })
                .map(|event| {
                    // Tracepoint mode sees the socket woken, not the ICMP itself.
                    let icmp = if mode == "tracepoint" {
                        Value::Null
                    } else {
                        let code = if family == Family::V4 { 3 } else { 4 };
                        json!({"type": if family == Family::V4 { 3 } else { 1 }, "code": code, "from": server_ip.to_string()})
                    };
                    compare(
                        &event,
                        &json!({
                            "probe": mode,
                            "family": if family == Family::V4 { "ipv4" } else { "ipv6" },
                            "local": local.to_string(),
                            "remote": server.to_string(),
                            "icmp": icmp,
                            "errno": "ECONNREFUSED",
                            "verdict": "delivered",
                        }),
                    )
                }),
        ),
    };
    results.push(("socket_error", socket_error));

    let icmp_sent = match tracer.mode_of("icmp_send").map(str::to_owned) {
        Some(mode) if mode == "tracepoint" && family == Family::V6 => Outcome::Skip(
            "tracepoint mode has no IPv6 send hook (icmp:icmp_send is IPv4 only; icmp6_send needs fentry or kprobe)"
                .to_owned(),
        ),
        None => Outcome::Skip(format!("the icmp_send hook did not attach in {} mode here", config.mode)),
        Some(mode) => outcome_of(
            tracer
                .expect("icmp_sent from the server", config.event_timeout, |e| {
                    e["event"] == "icmp_sent" && e["netns"] == hosts.server.inode
                })
                .map(|event| {
                    let (icmp_type, code) = if family == Family::V4 { (3, 3) } else { (1, 4) };
                    compare(
                        &event,
                        &json!({
                            "probe": mode,
                            "family": if family == Family::V4 { "ipv4" } else { "ipv6" },
                            "icmp": {"type": icmp_type, "code": code},
                            "packet": {"src": local.to_string(), "dst": server.to_string(), "proto": "udp"},
                            "cause": "no_listener",
                        }),
                    )
                }),
        ),
    };
    results.push(("icmp_sent", icmp_sent));

    let closing = tracer.stop();
    results.push((
        "clean_stop",
        match closing {
            Ok(line) if line.contains(" 0 lost") => Outcome::Pass,
            Ok(line) => Outcome::Fail(format!("events were lost: {line}")),
            Err(e) => Outcome::Fail(format!("{e:#}")),
        },
    ));
    Ok(results)
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
}
