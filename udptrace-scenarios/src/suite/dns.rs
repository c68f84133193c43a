//! DNS inside the errors and drops (`dns.rs` of udptrace-ebpf, the `dns` field): a query a firewall drops, a
//! query to a port 53 where nothing listens, and a datagram on port 53 that is not DNS; dig's and the glibc
//! resolver's queries to a server that refuses them.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::Result;
use serde_json::{Value, json};

use crate::{
    config::Config,
    outcome::Outcome,
    packets::{Quote, crafted_port_unreachable, send_raw_icmp, set_int_option, udp_socket},
    tracer::Tracer,
};

use super::*;

/// A query for example.com A, ID 0x1234, recursion desired: 29 bytes.
const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";

/// What udptrace says of `QUERY`.
fn query_fields() -> Value {
    json!({
        "id": 0x1234,
        "response": false,
        "qname": "example.com",
        "qtype": "A",
        "rcode": null,
        "truncated": false,
        "payload_bytes": QUERY.len(),
        "payload_length": QUERY.len(),
    })
}

/// A query whose name is a compression pointer to itself: a loop, which the decoder must refuse.
const POINTER_LOOP: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01";

/// What udptrace says of a datagram on a DNS port whose `len` bytes do not parse as DNS: nothing but their count.
fn not_dns_fields(len: usize) -> Value {
    json!({
        "id": null,
        "response": null,
        "qname": null,
        "qtype": null,
        "rcode": null,
        "truncated": null,
        "payload_bytes": len,
        "payload_length": len,
    })
}

/// Sends `payload` from a new client socket to the server's port 53; returns the client's address.
fn send_to_53(hosts: &TwoHosts, family: Family, payload: &[u8]) -> Result<(SocketAddr, SocketAddr)> {
    let (socket, server) = client_socket(hosts, family)?;
    socket.send_to(payload, server)?;
    Ok((socket.local_addr()?, server))
}

/// A new client socket, and the server's port 53 address.
fn client_socket(hosts: &TwoHosts, family: Family) -> Result<(UdpSocket, SocketAddr)> {
    let server = SocketAddr::new(TwoHosts::server_ip(family), 53);
    Ok((udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(family), 0))?, server))
}

/// The `dns` of the first event `about` matches, compared with `want`.
fn dns_of(config: &Config, tracer: &mut Tracer, what: &str, about: impl Fn(&Value) -> bool, want: Value) -> Outcome {
    outcome_of(tracer.expect(what, config.event_timeout, about).map(|e| compare(&e["dns"], &want)))
}

/// A DROP rule on the server's port 53: the `udp_dropped netfilter_drop` of each family's query names it; a
/// datagram on port 53 that is not DNS has `dns` fields `null`.
pub(super) fn dns_drop(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    nft_input_rule(&hosts.server, "udp dport 53 drop")?;
    // A second udptrace, on the server's namespace alone: its closing line counts the two datagrams not DNS.
    let netns = hosts.server.inode.to_string();
    let mut counting = Tracer::start(config, &["--netns", &netns])?;
    let v4 = send_to_53(&hosts, Family::V4, QUERY)?;
    let v6 = send_to_53(&hosts, Family::V6, QUERY)?;
    let junk = send_to_53(&hosts, Family::V4, b"udptrace")?; // 8 bytes, not DNS
    let looped = send_to_53(&hosts, Family::V4, POINTER_LOOP)?;
    let mut results: Results = Vec::new();
    match drops::drop_hook(config, tracer) {
        Err(skip) => results.extend([
            ("ipv4", skip.clone()),
            ("ipv6", skip.clone()),
            ("not_dns", skip.clone()),
            ("pointer_loop", skip),
        ]),
        Ok(_) => {
            let drop_of = |(src, dst): (SocketAddr, SocketAddr)| {
                let about = drops::is_drop_of(src, dst);
                move |e: &Value| about(e) && drops::NETFILTER_DROP.says(e)
            };
            results.push(("ipv4", dns_of(config, tracer, "the IPv4 query's drop", drop_of(v4), query_fields())));
            results.push(("ipv6", dns_of(config, tracer, "the IPv6 query's drop", drop_of(v6), query_fields())));
            let junk_drop = dns_of(config, tracer, "the drop of a datagram not DNS", drop_of(junk), not_dns_fields(8));
            results.push(("not_dns", junk_drop));
            let loop_fields = not_dns_fields(POINTER_LOOP.len());
            let loop_drop =
                dns_of(config, tracer, "the drop of a query whose name loops", drop_of(looped), loop_fields);
            results.push(("pointer_loop", loop_drop));
        }
    }
    // Its programs saw every drop once the first udptrace has.
    let counted = match drops::drop_hook(config, &counting) {
        Err(skip) => skip,
        Ok(_) => match counting.stop() {
            Ok(line) if line.contains(", 2 datagrams on a DNS port not DNS") => Outcome::Pass,
            Ok(line) => Outcome::Fail(format!("the closing line does not count 2 datagrams not DNS: {line}")),
            Err(e) => Outcome::Fail(format!("{e:#}")),
        },
    };
    results.push(("not_dns_counted", counted));
    Ok(results)
}

/// Nothing listens on the server's port 53: its `icmp_sent` about each family's query names the query, and
/// so does the `socket_error` of the connected client, from what the port unreachable quotes (fentry and
/// kprobe modes; tracepoint mode sees no quoted packet, and says `null`).
pub(super) fn dns_refused(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let mut results: Results = Vec::new();
    for (name, family) in [("ipv4", Family::V4), ("ipv6", Family::V6)] {
        let (socket, server) = client_socket(&hosts, family)?;
        socket.connect(server)?;
        socket.send(QUERY)?;
        let local = socket.local_addr()?;
        let sent = match icmp_send_unseen(config, tracer, family) {
            Some(why) => Outcome::Skip(why),
            None => dns_of(
                config,
                tracer,
                "the icmp_sent about the query",
                |e| {
                    e["event"] == "icmp_sent"
                        && e["netns"] == hosts.server.inode
                        && e["packet"]["src"] == local.to_string()
                },
                query_fields(),
            ),
        };
        results.push((name, sent));
        let refused = json!({"errno": "ECONNREFUSED", "verdict": "delivered", "dns": query_fields()});
        let tracepoint = json!({"errno": "ECONNREFUSED", "verdict": "delivered", "dns": null});
        let error = check_socket_error(config, tracer, &hosts.client, local, refused, Some(tracepoint));
        results.push((if family == Family::V4 { "socket_error_ipv4" } else { "socket_error_ipv6" }, error));
    }
    Ok(results)
}

/// Runs `program` in `ns` (`ip netns exec`, which binds `/etc/netns/NS/*` over `/etc`) to its end; returns its
/// pid, which is the process's (`ip netns exec` execs it in place). Its exit status is not checked: a lookup
/// that was refused fails.
fn run_in(ns: &crate::netns::Netns, program: &str, args: &[&str]) -> Result<u32> {
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, program])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id();
    child.wait_with_output()?;
    Ok(pid)
}

/// `/etc/netns/NS/resolv.conf` for the glibc resolver in `ns`, removed on drop.
struct ResolvConf(std::path::PathBuf);

impl ResolvConf {
    fn new(ns: &crate::netns::Netns, server: std::net::IpAddr) -> Result<Self> {
        let dir = std::path::Path::new("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir)?;
        let conf = Self(dir);
        std::fs::write(conf.0.join("resolv.conf"), format!("nameserver {server}\noptions attempts:1 timeout:1\n"))?;
        Ok(conf)
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `e`'s `dns` is a query for `name` A, with an ID.
fn asks(e: &Value, name: &str) -> Outcome {
    let dns = &e["dns"];
    if dns["id"].is_u64() {
        compare(dns, &json!({"response": false, "qname": name, "qtype": "A", "rcode": null}))
    } else {
        Outcome::Fail(format!("no query ID in {e}"))
    }
}

/// Real clients, to a server where nothing listens on port 53: dig's query named in the server's
/// `icmp_sent` and in dig's `socket_error` (its pid, and its name: dig's sockets are made by its network
/// thread, `isc-net-0000` in BIND 9.18, which `thread` names when the cgroup programs saw it, not `comm`),
/// and the glibc resolver's (`getent ahostsv4`, a `resolv.conf` naming the server) in getent's
/// `socket_error`. Tracepoint mode sees no quoted packet: its `socket_error` says `dns` `null`.
pub(super) fn dns_clients(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let server = TwoHosts::server_ip(Family::V4).to_string();
    let mut results: Results = Vec::new();
    let socket_error_mode = tracer.mode_of("socket_error").map(str::to_owned);
    // The socket_error of the process `pid` named `comm`, checked for a query for `name`.
    let socket_error = |tracer: &mut Tracer, pid: u32, name: &str, comm: &str| -> Outcome {
        let Some(mode) = socket_error_mode.as_deref() else {
            return Outcome::Skip(format!("the socket_error hook did not attach in {} mode here", config.mode));
        };
        let of = |e: &Value| e["event"] == "socket_error" && e["netns"] == hosts.client.inode && e["pid"] == pid;
        let found = tracer.expect("the client's socket_error", config.event_timeout, of);
        outcome_of(found.map(|e| {
            let want = json!({"errno": "ECONNREFUSED", "verdict": "delivered", "comm": comm});
            match (compare(&e, &want), mode) {
                (Outcome::Pass, "tracepoint") => compare(&e, &json!({"dns": null})),
                (Outcome::Pass, _) => asks(&e, name),
                (other, _) => other,
            }
        }))
    };

    match which("dig") {
        None => {
            let skip = Outcome::Skip("dig is not installed (Debian's bind9-dnsutils)".to_owned());
            results.extend([("dig_icmp_sent", skip.clone()), ("dig_socket_error", skip)]);
        }
        Some(_) => {
            let name = "dig.udptrace.test";
            let pid = run_in(&hosts.client, "dig", &["+tries=1", "+time=1", &format!("@{server}"), name, "A"])?;
            let sent = match icmp_send_unseen(config, tracer, Family::V4) {
                Some(why) => Outcome::Skip(why),
                None => outcome_of(
                    tracer
                        .expect("the icmp_sent about dig's query", config.event_timeout, |e| {
                            e["event"] == "icmp_sent" && e["netns"] == hosts.server.inode && e["dns"]["qname"] == name
                        })
                        .map(|e| asks(&e, name)),
                ),
            };
            results.push(("dig_icmp_sent", sent));
            results.push(("dig_socket_error", socket_error(tracer, pid, name, "dig")));
        }
    }

    let name = "getent.udptrace.test";
    let _conf = ResolvConf::new(&hosts.client, TwoHosts::server_ip(Family::V4))?;
    let pid = run_in(&hosts.client, "getent", &["ahostsv4", name])?;
    results.push(("getent_socket_error", socket_error(tracer, pid, name, "getent")));
    Ok(results)
}

/// An ICMP error quoting only the first 8 bytes of a query's payload, as a router may (RFC 792's minimum),
/// crafted about the connected client's query: its `socket_error` knows the ID and that it was a query, and
/// says nothing of the question (`null`), with 8 of the payload's 29 bytes at hand.
pub(super) fn dns_short_quote(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let (socket, server) = client_socket(&hosts, Family::V4)?;
    socket.connect(server)?;
    let local = socket.local_addr()?;
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (local, server) else {
        anyhow::bail!("IPv4 addresses")
    };
    let mut payload = [0; 8];
    payload.copy_from_slice(&QUERY[..8]);
    let udp_length = Some(8 + QUERY.len() as u16);
    let quote = Quote { payload, payload_len: 8, udp_length, ..Quote::default() };
    let icmp = crafted_port_unreachable(*from.ip(), from.port(), *to.ip(), to.port(), quote);
    let client = *from.ip();
    hosts.server.run(move || send_raw_icmp(client, &icmp))??;
    let dns = json!({
        "id": 0x1234,
        "response": false,
        "qname": null,
        "qtype": null,
        "rcode": null,
        "truncated": false,
        "payload_bytes": 8,
        "payload_length": QUERY.len(),
    });
    let expected = json!({"errno": "ECONNREFUSED", "verdict": "delivered", "dns": dns});
    let tracepoint = json!({"errno": "ECONNREFUSED", "verdict": "delivered", "dns": null});
    Ok(vec![("socket_error", check_socket_error(config, tracer, &hosts.client, local, expected, Some(tracepoint)))])
}

/// A query for `name` A (ID 0x4321).
fn query_for(name: &str) -> Vec<u8> {
    let mut query = b"\x43\x21\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec();
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(b"\x00\x00\x01\x00\x01");
    query
}

/// `--summary`, where only counts are wanted: the errors about refused queries are still handed over with
/// their payload (a count in the kernel would lose the name), and the whole run's table counts them by name:
/// 3 for one, 2 for another, from the server's `icmp_sent`.
pub(super) fn dns_summary(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const NAMES: [(&str, u64); 2] = [("three.udptrace.test", 3), ("two.udptrace.test", 2)];
    let hosts = TwoHosts::new()?;
    // Every port unreachable goes out: no rate limit for them.
    hosts.server.sysctl("net.ipv4.icmp_ratemask", "0")?;
    if let Some(why) = icmp_send_unseen(config, tracer, Family::V4) {
        return Ok(vec![("rows", Outcome::Skip(why))]);
    }
    let netns = hosts.server.inode.to_string();
    let mut summary = Tracer::start(config, &["--netns", &netns, "--summary", "1"])?;
    for (name, times) in NAMES {
        for _ in 0..times {
            send_to_53(&hosts, Family::V4, &query_for(name))?;
        }
    }
    // The last error reaches the programs before udptrace stops.
    std::thread::sleep(config.quiet_period);
    summary.stop()?;
    summary.collect_for(Duration::from_secs(1));
    let Some(table) = summary.seen.iter().rev().find(|v| v["event"] == "summary" && v["period"].is_null()) else {
        return Ok(vec![("rows", Outcome::Fail("no whole-run table".to_owned()))]);
    };
    let rows = table["rows"].as_array().cloned().unwrap_or_default();
    let wrong: Vec<String> = NAMES
        .iter()
        .filter_map(|(name, times)| {
            let row = rows.iter().find(|r| r["event"] == "icmp_sent" && r["dns"]["qname"] == *name);
            match row {
                Some(row) if row["count"] == *times && row["dns"]["qtype"] == "A" => None,
                Some(row) => Some(format!("{name}: {row}, want {times} A")),
                None => Some(format!("{name}: no row")),
            }
        })
        .collect();
    let outcome =
        if wrong.is_empty() { Outcome::Pass } else { Outcome::Fail(format!("{}; rows {rows:?}", wrong.join("; "))) };
    Ok(vec![("rows", outcome)])
}

/// dnsmasq in the server namespace, killed on drop: it answers `LOCAL_NAME` itself and forwards names under
/// `FORWARDED` to 127.0.0.1:53, where nothing listens.
struct Dnsmasq(std::process::Child);

const LOCAL_NAME: &str = "local.udptrace.test";
const FORWARDED: &str = "fwd.udptrace.test";

impl Dnsmasq {
    fn start(hosts: &TwoHosts) -> Result<Self> {
        let listen = format!("--listen-address={}", TwoHosts::server_ip(Family::V4));
        let answer = format!("--address=/{LOCAL_NAME}/192.0.2.1");
        let upstream = format!("--server=/{FORWARDED}/127.0.0.1#53");
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", &hosts.server.name, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"])
            .args(["--no-resolv", "--no-hosts", "--bind-interfaces", "--user=root", "--pid-file"])
            .args([listen, answer, upstream])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Self(child))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real DNS server, Debian's dnsmasq: a client that sends queries for a name it answers and never reads (a
/// receive buffer of the least size) has the answers dropped at its socket (`socket_rcvbuff`, this process's
/// pid), each naming the answer (`response` true, `NOERROR`); and a query dnsmasq forwards to an upstream that
/// refuses it is named in the `icmp_sent` about the forwarded query and, where the mode sees an error no socket
/// was given (dnsmasq's forwarding socket is not connected: fentry and kprobe), in dnsmasq's `socket_error`.
pub(super) fn dns_dnsmasq(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    if which("dnsmasq").is_none() {
        let skip = Outcome::Skip("dnsmasq is not installed (Debian's dnsmasq-base)".to_owned());
        return Ok(vec![
            ("answers_dropped", skip.clone()),
            ("forwarded_icmp_sent", skip.clone()),
            ("dnsmasq_socket_error", skip),
        ]);
    }
    let hosts = TwoHosts::new()?;
    let dnsmasq = Dnsmasq::start(&hosts)?;
    let (client, server) = client_socket(&hosts, Family::V4)?;
    client.connect(server)?;
    // Ready once it answers.
    client.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut answer = [0u8; 512];
    let ready = (0..25).any(|_| client.send(&query_for(LOCAL_NAME)).is_ok() && client.recv(&mut answer).is_ok());
    if !ready {
        anyhow::bail!("dnsmasq did not answer within 5 s");
    }
    let mut results: Results = Vec::new();

    set_int_option(&client, libc::SOL_SOCKET, libc::SO_RCVBUF, 1)?;
    let local = client.local_addr()?;
    for _ in 0..40 {
        client.send(&query_for(LOCAL_NAME))?;
    }
    let dropped = match drops::drop_hook(config, tracer) {
        Err(skip) => skip,
        Ok(_) => {
            // The first drop of the flow carries the answer; those counted after it do not (`count`).
            let about = drops::is_drop_of(server, local);
            let is_drop = |e: &Value| about(e) && drops::RCVBUF.says(e);
            let what = "an answer dropped at the client, with its payload";
            let found = tracer.expect(what, config.event_timeout, |e| is_drop(e) && !e["dns"].is_null());
            let found = found.map_err(|e| {
                let drops: Vec<&Value> = tracer.seen.iter().filter(|e| is_drop(e)).collect();
                anyhow::anyhow!("{e:#}; the drops seen: {drops:?}")
            });
            outcome_of(found.map(|e| {
                let want = json!({"response": true, "rcode": "NOERROR", "qname": LOCAL_NAME, "qtype": "A"});
                match compare(&e["dns"], &want) {
                    Outcome::Pass => compare(&e, &json!({"pid": std::process::id()})),
                    other => other,
                }
            }))
        }
    };
    results.push(("answers_dropped", dropped));

    let name = format!("www.{FORWARDED}");
    let (asker, _) = client_socket(&hosts, Family::V4)?;
    asker.send_to(&query_for(&name), server)?;
    let forwarded = |e: &Value| e["netns"] == hosts.server.inode && e["dns"]["qname"] == name.as_str();
    let sent = match icmp_send_unseen(config, tracer, Family::V4) {
        Some(why) => Outcome::Skip(why),
        None => outcome_of(
            tracer
                .expect("the icmp_sent about the forwarded query", config.event_timeout, |e| {
                    e["event"] == "icmp_sent" && forwarded(e)
                })
                .map(|e| compare(&e["packet"], &json!({"dst": "127.0.0.1:53", "proto": "udp"}))),
        ),
    };
    results.push(("forwarded_icmp_sent", sent));
    let error = match tracer.mode_of("socket_error") {
        None => Outcome::Skip(format!("the socket_error hook did not attach in {} mode here", config.mode)),
        Some("tracepoint") => Outcome::Skip(
            "tracepoint mode sees only an error given to a socket, and dnsmasq's forwarding socket is not connected"
                .to_owned(),
        ),
        Some(_) => outcome_of(
            tracer
                .expect("dnsmasq's socket_error", config.event_timeout, |e| {
                    e["event"] == "socket_error" && forwarded(e)
                })
                .map(|e| compare(&e, &json!({"comm": "dnsmasq", "pid": dnsmasq.0.id(), "remote": "127.0.0.1:53"}))),
        ),
    };
    results.push(("dnsmasq_socket_error", error));
    Ok(results)
}
