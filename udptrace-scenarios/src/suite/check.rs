//! `udptrace check HOST:PORT` from the client namespace, in the suite's mode: each state from the case that
//! makes it (an echo server and a DNS answer, closed ports, a REJECT, a DROP beside `nc -vzu`'s "succeeded",
//! an address nobody answers ARP/ND for, the client's own OUTPUT DROP), a run without root, bad usage.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    CLIENT_V4, CLIENT_V6, CLOSED_PORT, Family, Results, TwoHosts, compare,
    drops::{NETFILTER_DROP, drop_hook, has_drop_reasons},
    nft_input_rule, nft_rule, which,
};
use crate::{config::Config, netns::Netns, outcome::Outcome, packets::udp_socket, scratch::ScratchDir, tracer::Tracer};

/// Whether this suite run checks `udptrace check` as root. Each such run loads udptrace's programs anew
/// (under emulation a score of seconds), and what it adds to them is the same in every mode (the hooks are
/// `Tracing::start`'s, which the rest of the suite checks mode by mode and kernel by kernel): so a few runs do
/// it, the fentry runs of the oldest and newest kernels in the QEMU matrix and the ring-buffer run on this
/// host (`--with-check`).
fn skipped_here(config: &Config) -> Option<Results> {
    (!config.check_command).then(|| {
        vec![(
            "state",
            Outcome::Skip(format!(
                "udptrace check as root runs in the fentry runs of the oldest and newest kernels in QEMU and \
                 the ring-buffer run on the host, not in this {} run",
                config.mode
            )),
        )]
    })
}

/// The exit status of each state (README, `udptrace check --help`).
fn exit_status(state: &str) -> i32 {
    match state {
        "open" => 0,
        "closed" => 3,
        "filtered" => 4,
        "unreachable" => 5,
        "open|filtered" => 6,
        _ => -1,
    }
}

/// A finished `udptrace check`.
struct Ran {
    status: Option<i32>,
    answer: Value,
    stderr: String,
}

/// Runs `udptrace check --json --probe MODE ARGS` inside `ns`.
fn check_in(config: &Config, ns: &Netns, args: &[&str]) -> Result<Ran> {
    let udptrace = config.udptrace.clone();
    let mode = config.mode.clone();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    // The child is forked from a thread inside `ns`, so it runs there.
    let started = std::time::Instant::now();
    let output = ns.run(move || {
        Command::new(&udptrace).args(["check", "--json", "--probe", &mode]).args(&args).stdin(Stdio::null()).output()
    })??;
    crate::tracer::count_check(started.elapsed());
    Ok(Ran::from(&output))
}

impl Ran {
    /// The answer of a finished `udptrace check --json`: its object, or what it printed instead.
    fn from(output: &std::process::Output) -> Self {
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ran {
            status: output.status.code(),
            answer: serde_json::from_str(stdout.trim()).unwrap_or_else(|_| Value::String(stdout.into_owned())),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// The state and its exit status.
fn state_check(ran: &Ran, want: &str) -> Outcome {
    let got = ran.answer["state"].as_str().unwrap_or("none");
    if got != want {
        return Outcome::Fail(format!("state {got}, want {want}: {} {}", ran.answer, ran.stderr.trim()));
    }
    if ran.status != Some(exit_status(want)) {
        return Outcome::Fail(format!("exit status {:?} for {want}, want {}", ran.status, exit_status(want)));
    }
    Outcome::Pass
}

/// The evidence fields in `want`.
fn evidence(ran: &Ran, want: &Value) -> Outcome {
    compare(&ran.answer["evidence"], want)
}

/// As root the hooks ran, filtered to the probe socket: the answer says so and carries their events.
fn kernel_side(ran: &Ran) -> Outcome {
    if ran.answer["seen_with"] != "error_queue+kernel" {
        return Outcome::Fail(format!("not seen with the kernel hooks: {}", ran.answer));
    }
    let local = ran.answer["local"].as_str().unwrap_or_default();
    let port = local.rsplit(':').next().unwrap_or_default();
    // Every event the hooks handed over is about the probe socket's port.
    let foreign: Vec<&Value> = ran.answer["kernel"]["events"]
        .as_array()
        .map(|events| events.iter().filter(|e| !e.to_string().contains(&format!(":{port}\""))).collect::<Vec<_>>())
        .unwrap_or_default();
    if foreign.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("events about other sockets than {local}: {foreign:?}"))
    }
}

/// The kernel's `socket_error` for the probe socket, delivered (it has `IP_RECVERR`), where that hook runs.
fn delivered_to_probe(tracer: &Tracer, ran: &Ran) -> Outcome {
    if tracer.mode_of("socket_error").is_none() {
        return Outcome::Skip("the socket_error hook does not attach in this mode here".to_owned());
    }
    let events = ran.answer["kernel"]["events"].as_array().cloned().unwrap_or_default();
    match events.iter().find(|e| e["event"] == "socket_error" && e["local"] == ran.answer["local"]) {
        Some(e) => compare(e, &json!({"verdict": "delivered", "recverr": true})),
        None => Outcome::Fail(format!("no socket_error for the probe socket among {events:?}")),
    }
}

/// A server that answers every datagram: with the datagram itself, or, for a DNS query (12 bytes or more),
/// with the query turned into an answer (QR set, no records).
struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    fn start(ns: &Netns, at: SocketAddr) -> Result<Self> {
        let socket = udp_socket(ns, at)?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || serve(&socket, &stopped));
        Ok(Self { stop, thread: Some(thread) })
    }
}

fn serve(socket: &UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n >= 12 {
                buf[2] |= 0x80;
            }
            let _ = socket.send_to(&buf[..n], from);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn target(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

/// An echo server: `open`, with the answer's size and round trip; the same server taking a DNS query
/// (`--dns`) is a DNS answer.
pub fn check_open(config: &Config, _tracer: &mut Tracer) -> Result<Results> {
    if let Some(skip) = skipped_here(config) {
        return Ok(skip);
    }
    let hosts = TwoHosts::new()?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let _responder = Responder::start(&hosts.server, server)?;
    let echo = check_in(config, &hosts.client, &[&server.to_string(), "--payload", "7564707472616365"])?;
    let answer = &echo.answer["evidence"]["answer"];
    let sized = if answer["size"] == 8 && answer["round_trip_ms"].as_f64().is_some_and(|ms| ms > 0.0) {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("want an 8-byte answer and its round trip: {}", echo.answer))
    };
    let dns = check_in(config, &hosts.client, &[&server.to_string(), "--dns", "example.com"])?;
    let dns_answer = match state_check(&dns, "open") {
        Outcome::Pass => {
            compare(&dns.answer["evidence"]["answer"], &json!({"dns": {"rcode": "NOERROR", "records": 0}}))
        }
        other => other,
    };
    Ok(vec![
        ("state", state_check(&echo, "open")),
        ("answer", sized),
        ("probes", compare(&echo.answer["probes"], &json!({"sent": 1, "answered": 1}))),
        ("dns_answer", dns_answer),
        ("kernel_side", kernel_side(&echo)),
    ])
}

/// Nothing listens on the server's port: `closed`, the port unreachable from the target itself, and the
/// kernel's side (the probe socket's delivered error).
pub fn check_closed(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    if let Some(skip) = skipped_here(config) {
        return Ok(skip);
    }
    let hosts = TwoHosts::new()?;
    let server_ip = TwoHosts::server_ip(family);
    let ran = check_in(config, &hosts.client, &[&target(server_ip, CLOSED_PORT)])?;
    let (icmp_type, code) = family.port_unreachable();
    let want = json!({
        "icmp": {"type": icmp_type, "code": code, "name": "port-unreachable", "from": server_ip.to_string(),
                 "errno": "ECONNREFUSED"},
        "local_error": null,
        "interface": "veth-a",
    });
    Ok(vec![
        ("state", state_check(&ran, "closed")),
        ("evidence", evidence(&ran, &want)),
        ("kernel_side", kernel_side(&ran)),
        ("socket_error", delivered_to_probe(tracer, &ran)),
    ])
}

/// A listener on the server's port behind the server's input rule `udp dport PORT VERDICT`.
fn listener_behind(verdict: &str) -> Result<(TwoHosts, SocketAddr, UdpSocket)> {
    let hosts = TwoHosts::new()?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let listener = udp_socket(&hosts.server, server)?;
    nft_input_rule(&hosts.server, &format!("udp dport {CLOSED_PORT} {verdict}"))?;
    Ok((hosts, server, listener))
}

/// A listener behind `reject with icmpx admin-prohibited`: `filtered`, the ICMP and its sender.
pub fn check_reject(config: &Config, _tracer: &mut Tracer) -> Result<Results> {
    if let Some(skip) = skipped_here(config) {
        return Ok(skip);
    }
    let (hosts, server, _listener) = listener_behind("reject with icmpx type admin-prohibited")?;
    let ran = check_in(config, &hosts.client, &[&server.to_string()])?;
    let want = json!({"icmp": {"type": 3, "code": 13, "name": "admin-prohibited", "from": server.ip().to_string(),
                               "errno": "EHOSTUNREACH"}});
    Ok(vec![("state", state_check(&ran, "filtered")), ("evidence", evidence(&ran, &want))])
}

/// A listener behind a DROP rule: `open|filtered`, the interface it left by and the next hop that answered
/// ARP; `nc -vzu` on the same port says it succeeded, as in the seed.
pub fn check_drop(config: &Config, _tracer: &mut Tracer) -> Result<Results> {
    if let Some(skip) = skipped_here(config) {
        return Ok(skip);
    }
    let (hosts, server, _listener) = listener_behind("drop")?;
    let ran = check_in(config, &hosts.client, &[&server.to_string(), "--count", "2", "--timeout", "1"])?;
    let want = json!({
        "icmp": null,
        "answer": null,
        "interface": "veth-a",
        "neighbour": {"address": server.ip().to_string(), "state": "reachable", "answered": true},
    });
    let nc = match which("nc") {
        None => Outcome::Skip("nc is not installed here (the host suite installs netcat-openbsd)".to_owned()),
        Some(nc) => {
            let (ip, port) = (server.ip().to_string(), CLOSED_PORT.to_string());
            let output = hosts
                .client
                .run(move || Command::new(nc).args(["-vzu", "-w", "1", &ip, &port]).stdin(Stdio::null()).output())??;
            let said =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            if said.contains("invalid option") {
                // BusyBox's nc (the VM images') has no -v or -z: it is not the nc the seed ran.
                Outcome::Skip(format!("this nc has no -vz: {}", said.trim()))
            } else if output.status.success() && said.contains("succeeded") {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("nc -vzu exited {:?}: {}", output.status.code(), said.trim()))
            }
        }
    };
    Ok(vec![
        ("state", state_check(&ran, "open|filtered")),
        ("evidence", evidence(&ran, &want)),
        ("probes", compare(&ran.answer["probes"], &json!({"sent": 2, "answered": 0}))),
        ("nc_says_succeeded", nc),
    ])
}

/// An address on the link nobody answers ARP (or ND) for: `unreachable`, from this host's own host
/// unreachable; the kernel's side names the neighbour failure.
pub fn check_no_neighbour(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    if let Some(skip) = skipped_here(config) {
        return Ok(skip);
    }
    let hosts = TwoHosts::new()?;
    let (table, absent, own) = match family {
        Family::V4 => ("ipv4", "10.231.0.77", CLIENT_V4),
        Family::V6 => ("ipv6", "fd00:231::77", CLIENT_V6),
    };
    for (key, value) in [("mcast_solicit", "1"), ("ucast_solicit", "1"), ("retrans_time_ms", "100")] {
        hosts.client.sysctl(&format!("net.{table}.neigh.veth-a.{key}"), value)?;
    }
    let ran = check_in(config, &hosts.client, &[&target(absent.parse()?, CLOSED_PORT)])?;
    let (icmp_type, code) = match family {
        Family::V4 => (3, 1),
        Family::V6 => (1, 3),
    };
    let want = json!({
        "icmp": {"type": icmp_type, "code": code, "from": own, "errno": "EHOSTUNREACH",
                 "name": if family == Family::V4 { "host-unreachable" } else { "address-unreachable" }},
    });
    let own_icmp = match tracer.mode_of("icmp_send") {
        Some("tracepoint") if family == Family::V6 => {
            Outcome::Skip("tracepoint mode has no IPv6 send hook (icmp:icmp_send is IPv4 only)".to_owned())
        }
        Some(_) => compare(&ran.answer["evidence"], &json!({"own_icmp": "neighbour_unreachable"})),
        None => Outcome::Skip("the icmp_send hook does not attach in this mode here".to_owned()),
    };
    // IPv4 names the reason (arp_error_report frees with NEIGH_FAILED, net/ipv4/arp.c); IPv6's
    // ndisc_error_report frees with none (net/ipv6/ndisc.c, 5.10 to 7.3): there only the direction is certain.
    let dropped = match drop_hook(config, tracer) {
        Err(skip) => skip,
        Ok(_) if has_drop_reasons() && family == Family::V4 => {
            compare(&ran.answer["evidence"]["drop"], &json!({"direction": "out", "reason": "neigh_failed"}))
        }
        Ok(_) => compare(&ran.answer["evidence"]["drop"], &json!({"direction": "out"})),
    };
    Ok(vec![
        ("state", state_check(&ran, "unreachable")),
        ("evidence", evidence(&ran, &want)),
        ("own_icmp", own_icmp),
        ("drop", dropped),
    ])
}

/// The client's own OUTPUT chain drops it: the send fails with EPERM, `filtered`; the kernel's side gives
/// the drop and its reason.
pub fn check_output_drop(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    if let Some(skip) = skipped_here(config) {
        return Ok(skip);
    }
    let hosts = TwoHosts::new()?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    nft_rule(&hosts.client, "output", &format!("udp dport {CLOSED_PORT} drop"))?;
    let ran = check_in(config, &hosts.client, &[&server.to_string()])?;
    let want = json!({"local_error": {"call": "send", "errno": "EPERM"}, "icmp": null});
    let dropped = match drop_hook(config, tracer) {
        Err(skip) => skip,
        Ok(_) => {
            let drop = &ran.answer["evidence"]["drop"];
            let by_netfilter = if has_drop_reasons() {
                drop["reason"] == NETFILTER_DROP.reason
            } else {
                drop["location"].as_str().is_some_and(|l| NETFILTER_DROP.locations.contains(&l))
            };
            if drop["direction"] == "out" && by_netfilter {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("want this host's netfilter drop on the way out: {drop}"))
            }
        }
    };
    Ok(vec![("state", state_check(&ran, "filtered")), ("evidence", evidence(&ran, &want)), ("drop", dropped)])
}

/// Without root: the closed port's state from the error queue alone, and the answer says so.
pub fn check_unprivileged(config: &Config, _tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let copy = Copy::of(&config.udptrace)?;
    let server = target(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let exe = copy.exe.clone();
    let output = hosts.client.run(move || {
        let mut command = Command::new(&exe);
        command.args(["check", "--json", &server]).stdin(Stdio::null());
        // SAFETY: setgid/setuid between fork and exec, async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.output()
    })??;
    let ran = Ran::from(&output);
    let without = match (&ran.answer["seen_with"], ran.answer["without_kernel"].as_str()) {
        (Value::String(with), Some(why)) if with == "error_queue" && why.contains("not root") => Outcome::Pass,
        _ => Outcome::Fail(format!("want the error queue alone, not root: {}", ran.answer)),
    };
    let want = json!({"icmp": {"type": 3, "code": 3, "name": "port-unreachable",
                               "from": TwoHosts::server_ip(Family::V4).to_string(), "errno": "ECONNREFUSED"}});
    Ok(vec![("state", state_check(&ran, "closed")), ("evidence", evidence(&ran, &want)), ("error_queue_only", without)])
}

/// The unprivileged user's ids.
const NOBODY: u32 = 65534;

/// udptrace copied where the unprivileged user can run it; removed on drop.
struct Copy {
    /// Removed with the copy.
    _dir: ScratchDir,
    exe: PathBuf,
}

impl Copy {
    fn of(udptrace: &Path) -> Result<Self> {
        let dir = ScratchDir::new("check", 0o755)?;
        let exe = dir.join("udptrace");
        std::fs::copy(udptrace, &exe).with_context(|| format!("copying {}", udptrace.display()))?;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { _dir: dir, exe })
    }
}

/// Bad usage: exit status 2 and one line on stderr, nothing on stdout.
pub fn check_bad_usage(config: &Config, _tracer: &mut Tracer) -> Result<Results> {
    let bad: &[&[&str]] = &[
        &[],
        &["10.0.0.1"],
        &["[fd00::1]53"],
        &["10.0.0.1:0"],
        &["10.0.0.1:53", "--count", "0"],
        &["10.0.0.1:53", "--timeout", "-1"],
        &["10.0.0.1:53", "--payload", "0g"],
        &["10.0.0.1:53", "--dns", "a..b"],
        &["10.0.0.1:53", "--dns", "example.com", "--payload", "00"],
        &["10.0.0.1:53", "-4", "-6"],
        &["10.0.0.1:53", "--probe", "uprobe"],
    ];
    let mut wrong = Vec::new();
    for args in bad {
        let output = Command::new(&config.udptrace).arg("check").args(*args).stdin(Stdio::null()).output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let one_line = lines.len() == 1 && lines[0].starts_with("udptrace: error: ");
        if output.status.code() != Some(2) || !one_line || !output.stdout.is_empty() {
            wrong.push(format!("check {}: exit {:?}, stderr {stderr:?}", args.join(" "), output.status.code()));
        }
    }
    let outcome = if wrong.is_empty() { Outcome::Pass } else { Outcome::Fail(wrong.join("; ")) };
    Ok(vec![("exit_2_one_line", outcome)])
}
