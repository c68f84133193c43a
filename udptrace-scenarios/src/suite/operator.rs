//! What an operator relies on under load and hostile input: filters, a flood that overflows the buffer
//! (every error seen or counted lost, memory bounded, the summary adding up), and malformed ICMP.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{CLIENT_V4, CLOSED_PORT, Family, Results, SERVER_V4, TwoHosts, compare, is_socket_error_of};
use crate::{
    config::Config,
    outcome::Outcome,
    packets::{Quote, crafted_port_unreachable, icmp_counters, send_raw_icmp, udp_socket},
    tracer::{Tracer, closing_counts, lost_in},
};

/// Peak memory a udptrace may reach while a flood overflows its buffer: the buffers, the kernel symbol
/// table and the owner caches, with room to spare; a leak per event would pass it within the flood.
const RSS_BOUND_KIB: u64 = 128 * 1024;

/// A connected client socket in `hosts.client`, sent from once, refused by the server's kernel.
pub(super) fn refused_socket(hosts: &TwoHosts, port: u16) -> Result<(UdpSocket, SocketAddr)> {
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    socket.connect(SocketAddr::new(TwoHosts::server_ip(Family::V4), port))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send(b"udptrace")?;
    // The error wakes the receive; the socket stays open so that its owner can still be found.
    let _ = socket.recv(&mut [0; 16]);
    let local = socket.local_addr()?;
    Ok((socket, local))
}

/// The events a tracer saw, leaving out `lost` reports.
fn events(tracer: &Tracer) -> Vec<&Value> {
    tracer.seen.iter().filter(|e| e["event"] != "lost").collect()
}

/// Two more udptraces with filters beside the shared one. `--netns` (the client's) `--port 7001 --port
/// 7002 --errno ECONNREFUSED -p <this process>` must show exactly the error on port 7001 and count the
/// others as filtered out; `-p 1` (a process that owns none of these sockets) must show nothing.
pub fn filters(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let pid = std::process::id().to_string();
    let netns = hosts.client.inode.to_string();
    let mut selected = Tracer::start(
        config,
        &["--netns", &netns, "--port", "7001", "--port", "7002", "--errno", "ECONNREFUSED", "-p", &pid],
    )?;
    let mut nobody = Tracer::start(config, &["-p", "1", "--netns", &netns])?;
    let (_kept, wanted) = refused_socket(&hosts, 7001)?;
    let (_other, unwanted) = refused_socket(&hosts, 7003)?;

    // The shared tracer saw both errors: the filters had something to drop.
    let happened = [wanted, unwanted]
        .iter()
        .map(|local| tracer.expect("a socket_error", config.event_timeout, is_socket_error_of(&hosts.client, *local)))
        .collect::<Result<Vec<_>>>();
    if let Err(e) = happened {
        return Ok(vec![("both_errors_happened", Outcome::Fail(format!("{e:#}")))]);
    }

    let expected = json!({
        "event": "socket_error",
        "netns": hosts.client.inode,
        "local": wanted.to_string(),
        "remote": SocketAddr::new(TwoHosts::server_ip(Family::V4), 7001).to_string(),
        "errno": "ECONNREFUSED",
        "verdict": "delivered",
        "pid": std::process::id(),
    });
    let selected_one =
        match selected.expect("the selected socket_error", config.event_timeout, |e| e["event"] != "lost") {
            Ok(event) => compare(&event, &expected),
            Err(e) => Outcome::Fail(format!("{e:#}")),
        };
    selected.collect_for(config.quiet_period);
    nobody.collect_for(Duration::ZERO);
    let only_that = match events(&selected).as_slice() {
        [_] => Outcome::Pass,
        other => Outcome::Fail(format!("{} events passed the filters, want 1: {other:?}", other.len())),
    };
    // Nothing shown, and not for want of events: both errors reached it and were counted out.
    let closing = nobody.stop().map(|line| (closing_counts(&line), line));
    nobody.collect_for(Duration::from_millis(200));
    let none = match (events(&nobody).as_slice(), closing) {
        ([], Ok((Some((0, filtered, _)), _))) if filtered >= 2 => Outcome::Pass,
        ([], Ok((_, line))) => Outcome::Fail(format!("closing line {line:?}: want 0 seen and at least 2 filtered out")),
        ([], Err(e)) => Outcome::Fail(format!("{e:#}")),
        (other, _) => Outcome::Fail(format!("-p 1 let through {other:?}")),
    };
    // The other error, and the server's icmp_sent where it is seen, were dropped and counted.
    let counted = match selected.stop().map(|line| (closing_counts(&line), line)) {
        Ok((Some((1, filtered, _)), _)) if filtered >= 1 => Outcome::Pass,
        Ok((_, line)) => Outcome::Fail(format!("closing line {line:?}: want 1 seen and at least 1 filtered out")),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    // Every option at its most values: the programs test each slot of each option, which the verifier must
    // accept within its limits (the 6.1 stack limit and no loops) in every mode.
    let mut all: Vec<String> = Vec::new();
    let errnos = ["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EMSGSIZE", "EPROTO", "EACCES", "EHOSTDOWN", "ENONET"];
    for (i, errno) in errnos.iter().enumerate() {
        for (option, value) in [
            ("--pid", format!("{}", 100_000 + i)),
            ("--comm", format!("no-such-comm-{i}")),
            ("--port", format!("{}", 40_000 + i)),
            ("--addr", if i % 2 == 0 { format!("10.{i}.0.0/16") } else { format!("fd{i:02x}::/16") }),
            ("--errno", (*errno).to_owned()),
            ("--netns", format!("{}", 4_000_000_000u32 + i as u32)),
        ] {
            all.push(option.to_owned());
            all.push(value);
        }
    }
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let loads = match Tracer::start(config, &all) {
        Ok(mut every) => {
            let rejected: Vec<&String> = every.not_traced.iter().filter(|l| l.contains("verifier")).collect();
            let outcome = if rejected.is_empty() { Outcome::Pass } else { Outcome::Fail(format!("{rejected:?}")) };
            let _ = every.stop();
            outcome
        }
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    Ok(vec![
        ("every_option_loads", loads),
        ("selects_one", selected_one),
        ("nothing_else", only_that),
        ("other_pid_none", none),
        ("filtered_counted", counted),
    ])
}

/// 2,000 datagrams to a closed port with the server's ICMP rate limits off (`icmp_ratemask` 0): the
/// server's kernel answers each that reaches it with a port-unreachable. A udptrace whose reader stalls overflows its buffer:
/// every error must be shown or counted lost, with the loss reported. A `--summary` udptrace must add up
/// to the same total. Both stay within bounded memory.
///
/// The flood goes in bursts, each once the shared udptrace has shown the last: it must not lose events
/// (its closing check wants none), and it reads as fast as any udptrace that is not stalled.
pub fn flood(config: &Config, shared: &mut Tracer) -> Result<Results> {
    // More errors than the stalled udptrace can hold: with `--buffer-size 128K` its ring buffer (or in kprobe
    // mode, the perf buffer of the one CPU the flood runs on) takes under 1,000 `icmp_sent` records (128 bytes
    // and a header each), its stdout pipe and buffer a few hundred more. Each error costs the emulated kernels
    // milliseconds in three udptraces, so the flood is no larger than the overflow needs, twice over.
    const DATAGRAMS: u64 = 2_000;
    const STALLED_BUFFER: &str = "128K";
    const BURST: u64 = 250;
    let hosts = TwoHosts::new()?;
    hosts.server.sysctl("net.ipv4.icmp_ratemask", "0")?;
    let netns = hosts.server.inode.to_string();
    let mut stalled = Tracer::start_stalled(config, &["--netns", &netns, "--buffer-size", STALLED_BUFFER])?;
    let mut summary = Tracer::start(config, &["--netns", &netns, "--summary", "1"])?;
    let Some(mode) = stalled.mode_of("icmp_send").map(str::to_owned) else {
        return Ok(vec![("all", Outcome::Skip("the icmp_send hook did not attach".to_owned()))]);
    };
    let mode = mode.as_str();

    // The summary udptrace is stopped for the flood: only counts are wanted, so the programs count in the
    // kernel, and it must still account for every error though it reads nothing meanwhile (a buffer would
    // hold a fraction of them).
    let stopped = Stopped::new(summary.pid());
    let before = icmp_counters(&hosts.server)?;
    let client = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let server_ns = hosts.server.inode;
    // On one CPU, so that the errors go to one CPU's perf buffer (`--buffer perf`) and overflow it however
    // many CPUs the machine has.
    let _pinned = PinnedToOneCpu::new();
    // The shared udptrace must have shown every error the kernel counted so far before the next burst. The
    // kernel's count, not the datagrams sent: an emulated machine drops some at the veth backlog, and the
    // ICMP socket's send buffer may refuse some errors (counted as OutErrors; tracepoint mode reports them).
    //
    // In kprobe mode the kernel skips the programs for an error whose softirq ran inside a BPF syscall of
    // another process (one of the udptraces reading a map on this same CPU): udptrace reports those as lost,
    // once a second, and they count here as shown.
    let since = shared.seen.len();
    let caught_up = |shared: &mut Tracer| -> Result<u64> {
        let sent = icmp_counters(&hosts.server)?.reported_by(mode) - before.reported_by(mode);
        let deadline = Instant::now() + config.event_timeout;
        loop {
            let recent = &shared.seen[since.min(shared.seen.len())..];
            let shown = recent.iter().filter(|e| e["event"] == "icmp_sent" && e["netns"] == server_ns).count();
            let lost = lost_in(recent);
            if shown as u64 + lost >= sent {
                return Ok(sent);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{shown} of {sent} icmp_sent from the shared udptrace ({lost} lost) within {:?}",
                    config.event_timeout
                );
            }
            shared.collect_for(Duration::from_millis(200));
        }
    };
    for _ in 0..DATAGRAMS / BURST {
        for _ in 0..BURST {
            // Unconnected: the errors coming back do not fail the next send.
            client.send_to(b"flood", server)?;
        }
        if let Err(e) = caught_up(shared) {
            return Ok(vec![("paced", Outcome::Fail(format!("{e:#}")))]);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let sent = match caught_up(shared) {
        Ok(sent) => sent,
        Err(e) => return Ok(vec![("paced", Outcome::Fail(format!("{e:#}")))]),
    };

    drop(stopped);
    stalled.resume();
    stalled.collect_until_quiet(Duration::from_secs(2), config.event_timeout * 6);
    summary.collect_until_quiet(Duration::from_secs(2), config.event_timeout);
    let rss = [stalled.peak_rss_kib(), summary.peak_rss_kib()];
    let stalled_closing = stalled.stop()?;
    let summary_closing = summary.stop()?;
    summary.collect_for(Duration::from_millis(500));

    // Every datagram the server's UDP found no socket for (`NoPorts`) draws a port unreachable, which the kernel
    // sends (`sent`) or fails to (its ICMP socket's buffer full: `OutErrors`). One it fails to send was
    // dropped without an answer, which udptrace may show as a `udp_dropped` in `__udp4_lib_rcv` (before 5.17,
    // where the drop has no reason), and so may kprobe mode for one whose ICMP hook the kernel skipped.
    let reached = icmp_counters(&hosts.server)?.no_ports - before.no_ports;
    let shown = stalled.seen.iter().filter(|e| e["event"] == "icmp_sent").count() as u64;
    let dropped = |events: &[Value]| -> u64 {
        events
            .iter()
            .filter(|e| e["event"] == "udp_dropped" && e["netns"] == server_ns)
            .map(|e| e["count"].as_u64().unwrap_or(1))
            .sum()
    };
    let stalled_dropped = dropped(&stalled.seen);
    let reported_lost = lost_in(&stalled.seen);
    // What kprobe mode's skipped runs lose is counted before the filter options (`--netns` here): those of
    // the client's socket errors count too, so lost may exceed what this namespace missed.
    let adds_up = |shown: u64, dropped: u64, lost: u64| {
        let all = shown + dropped + lost;
        let bounded = shown <= sent && (mode == "kprobe" || dropped <= reached.saturating_sub(sent));
        bounded && all >= sent && (mode == "kprobe" || all <= reached)
    };
    let accounted = match closing_counts(&stalled_closing) {
        Some((seen, _, lost))
            if seen == shown + stalled_dropped
                && lost == reported_lost
                && adds_up(shown, stalled_dropped, lost)
                && lost > 0 =>
        {
            Outcome::Pass
        }
        Some((seen, _, lost)) => Outcome::Fail(format!(
            "the kernel sent {sent} for {reached} datagrams; udptrace showed {shown} and {stalled_dropped} dropped \
             (closing line: {seen} seen), reported {reported_lost} lost (closing line: {lost}); want shown + lost = \
             sent, with some lost"
        )),
        None => Outcome::Fail(format!("no closing counts in {stalled_closing:?}")),
    };

    let last = summary.seen.iter().rev().find(|e| e["event"] == "summary" && e["period"].is_null());
    let summed = match (last, closing_counts(&summary_closing)) {
        (Some(table), Some((seen, _, lost))) => {
            let rows = table["rows"].as_array().map(Vec::as_slice).unwrap_or_default();
            let count_of = |event: &str| -> u64 {
                rows.iter().filter(|r| r["event"] == event).filter_map(|r| r["count"].as_u64()).sum()
            };
            let (counted, counted_dropped) = (count_of("icmp_sent"), count_of("udp_dropped"));
            let top = compare(
                &rows.first().cloned().unwrap_or_default(),
                &json!({
                    "event": "icmp_sent",
                    "errno": "ECONNREFUSED",
                    "outcome": "no_listener",
                    "address": server.to_string(),
                }),
            );
            // Kernel counts lose nothing to a stopped reader; only kprobe mode's skipped runs (above) are lost.
            let summed_up = seen == counted + counted_dropped
                && adds_up(counted, counted_dropped, lost)
                && (mode == "kprobe" || (counted == sent && lost == 0));
            if table["events"] != seen || table["lost"] != lost || !summed_up {
                Outcome::Fail(format!(
                    "the kernel sent {sent} for {reached} datagrams; the final summary of a udptrace stopped during \
                     the flood says {table}; closing line {summary_closing:?}; want all {sent} counted, none lost"
                ))
            } else {
                top
            }
        }
        _ => Outcome::Fail(format!("no final summary; udptrace printed {}", summary.seen_summary())),
    };

    let bounded = match rss {
        [Some(a), Some(b)] if a.max(b) < RSS_BOUND_KIB => Outcome::Pass,
        [a, b] => Outcome::Fail(format!("peak RSS {a:?} KiB and {b:?} KiB, bound {RSS_BOUND_KIB} KiB")),
    };
    Ok(vec![("seen_or_lost", accounted), ("summary_adds_up", summed), ("memory_bounded", bounded)])
}

/// Port-unreachables crafted from a raw socket in the server namespace, quoting a live client socket:
/// - with IP options in the quoted header (the UDP ports 4 bytes further): delivered, the 5-tuple right;
/// - with a lying total length: the kernel does not read it; delivered, the 5-tuple right;
/// - with the UDP header cut to 4 bytes, and with a header length below 5: the kernel drops both
///   (`Icmp: InErrors`) before any UDP code runs; nothing must be reported.
///
/// No event may carry another 5-tuple than the socket's, and udptrace must keep running.
pub fn malformed_icmp(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    // A listener, so the client's own datagram draws no error; only the crafted ones do.
    let _listener = udp_socket(&hosts.server, SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT))?;
    let client = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    client.connect(server)?;
    client.send(b"udptrace")?;
    let local = client.local_addr()?;
    let (client_ip, server_ip): (Ipv4Addr, Ipv4Addr) = (CLIENT_V4.parse()?, SERVER_V4.parse()?);
    let craft = |quote| crafted_port_unreachable(client_ip, local.port(), server_ip, CLOSED_PORT, quote);
    let inject = |message: Vec<u8>| -> Result<()> {
        hosts.server.run(move || send_raw_icmp(client_ip, &message))??;
        Ok(())
    };
    let expected = json!({
        "family": "ipv4",
        "local": local.to_string(),
        "remote": server.to_string(),
        "errno": "ECONNREFUSED",
        "verdict": "delivered",
    });
    let is_ours = is_socket_error_of(&hosts.client, local);
    // Every event of the scenario, for the 5-tuple check: `tracer.seen` is cleared before each injection.
    let mut all: Vec<Value> = Vec::new();
    let delivered = |tracer: &mut Tracer, all: &mut Vec<Value>, name: &'static str, quote: Quote| {
        tracer.collect_for(Duration::from_millis(100));
        all.append(&mut tracer.seen);
        let outcome = match inject(craft(quote)) {
            Err(e) => Outcome::Fail(format!("{e:#}")),
            Ok(()) => match tracer.expect("a socket_error", config.event_timeout, &is_ours) {
                Ok(event) => compare(&event, &expected),
                Err(e) => Outcome::Fail(format!("{e:#}")),
            },
        };
        // Read the error, so that the next one is a new one.
        let _ = client.take_error();
        (name, outcome)
    };
    let mut results = vec![
        delivered(tracer, &mut all, "ip_options", Quote { option_words: 2, ..Quote::default() }),
        delivered(tracer, &mut all, "lying_total_length", Quote { total_length: Some(0xffff), ..Quote::default() }),
    ];

    tracer.collect_for(Duration::from_millis(200));
    all.append(&mut tracer.seen);
    let errors_before = icmp_counters(&hosts.client)?.in_errors;
    inject(craft(Quote { udp_bytes: Some(4), ..Quote::default() }))?;
    inject(craft(Quote { ihl: Some(4), ..Quote::default() }))?;
    tracer.collect_for(config.quiet_period);
    let dropped = icmp_counters(&hosts.client)?.in_errors - errors_before;
    let new: Vec<&Value> = tracer.seen.iter().filter(|e| e["netns"] == hosts.client.inode).collect();
    results.push((
        "truncated_ignored",
        if dropped != 2 {
            Outcome::Fail(format!("the client's kernel dropped {dropped} of the 2 malformed ICMPs, want 2"))
        } else if new.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail(format!("reported {new:?} for ICMPs the kernel dropped"))
        },
    ));
    // Still tracing: a well-formed error after the malformed ones is reported.
    results.push(delivered(tracer, &mut all, "still_tracing", Quote::default()));
    tracer.collect_for(Duration::from_millis(200));
    all.append(&mut tracer.seen);
    let wrong: Vec<&Value> = all
        .iter()
        .filter(|e| e["event"] == "socket_error" && e["netns"] == hosts.client.inode && !is_ours(e))
        .collect();
    results.push((
        "no_wrong_tuple",
        if wrong.is_empty() { Outcome::Pass } else { Outcome::Fail(format!("events with another 5-tuple: {wrong:?}")) },
    ));
    Ok(results)
}

/// This thread on the CPU it runs on, until dropped.
struct PinnedToOneCpu {
    before: Option<libc::cpu_set_t>,
}

impl PinnedToOneCpu {
    fn new() -> Self {
        // SAFETY: plain affinity calls on this thread (pid 0) with sets of the size passed.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut before) != 0 {
                return Self { before: None };
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 {
                return Self { before: None };
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one);
            Self { before: Some(before) }
        }
    }
}

impl Drop for PinnedToOneCpu {
    fn drop(&mut self) {
        if let Some(before) = &self.before {
            // SAFETY: restores the set read in `new`.
            unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), before) };
        }
    }
}

/// A process stopped (`SIGSTOP`) until this is dropped.
pub(super) struct Stopped(libc::pid_t);

impl Stopped {
    pub(super) fn new(pid: u32) -> Self {
        let pid = pid as libc::pid_t;
        // SAFETY: signals a child of ours.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signals a child of ours.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
