//! `udptrace-bench`: what it costs to leave udptrace on, measured side by side in one run.
//!
//! Two network namespaces joined by a veth pair. The traffic runs in processes of its own (see
//! `bench_traffic`): a sender in the client's namespace that sends 32-byte datagrams in a tight loop and
//! times itself, and on the hot path a receiver in the server's namespace. The harness only starts and
//! stops them, and reads counters before and after. Every figure is a ratio or a paired comparison from the
//! same run: each round measures every variant once, in a rotating order, and the median over rounds is
//! reported, because these machines are noisy. Nothing here asserts a time; `--smoke` checks only that
//! every part ran and that the error path's events add up.
//!
//! 1. Hot path: datagrams per second with `send()` on a connected socket to an open port, with no tracer
//!    and with udptrace in each mode, started as a user starts it (a text line per event). The receiver
//!    takes them with `recvmmsg()`, 64 at a time, into a 64 MiB receive buffer, so that it keeps up;
//!    whether every datagram took the healthy path is checked, not assumed: the server's
//!    `Udp: RcvbufErrors` and `InErrors` must not move, and the receiver must have every datagram sent.
//!    BPF statistics give every udptrace program's runs per datagram: a program that runs per datagram
//!    shows about 1.
//! 2. Error path: datagrams per second with `send_to()` on an unconnected socket to a closed port, with the
//!    ICMP rate limits off (`icmp_ratemask` 0), so that every datagram draws a port unreachable and no
//!    error stops the sender: no tracer; udptrace per mode printing a line per event, with `--quiet`, and
//!    with `--summary 1` (the last two count in the kernel instead of handing over a record per error); a
//!    bpftrace script on the same tracepoints (`bench/errors.bt`), and `tcpdump -i any icmp -w FILE` in the
//!    server's namespace. udptrace's events plus its lost count must equal the port unreachables the
//!    kernel counted; and the per-program cost, from BPF statistics.
//! 3. Start-up (spawn to `udptrace: tracing`) and peak RSS.
//! 4. Drop flood: the hot path's sender (`send()` on a connected socket to an open port, as fast as it
//!    goes) to a receiver that reads nothing until the end and has a small receive buffer (`SO_RCVBUF`
//!    4096), so that nearly every datagram is dropped at its socket, counted in the server's
//!    `Udp: RcvbufErrors`, and passes `skb:kfree_skb`, where udptrace's `udp_dropped` is. Variants: no
//!    tracer; udptrace per mode printing text lines; `--json`, read by the harness; `--quiet`; `--summary 1`.
//!    udptrace counts a flood in the kernel (one event per reason, flow and socket a second, with a count),
//!    so the goal is a ratio to no tracer of at least 0.95. The drops it shows (the `count`s of the
//!    `udp_dropped` events to the receiver with `--json`, the `udp_dropped` rows of the last table with
//!    `--summary`, the closing line's events with `--quiet`) must be no more than the kernel counted, and
//!    with the lost count no fewer; and the per-program cost, from BPF statistics.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    Config,
    bench_traffic::{self, Sent},
    netns::{Netns, veth},
    packets::icmp_counters,
    tracer::{Tracer, closing_counts, peak_rss_kib, stop_udptrace},
};

const CLIENT: &str = "10.241.0.1";
const SERVER: &str = "10.241.0.2";
const OPEN_PORT: u16 = 9000;
const CLOSED_PORT: u16 = 9001;
/// The drop flood's receiver, which reads nothing.
const DROP_PORT: u16 = 9002;
/// The drop flood receiver's `SO_RCVBUF`: room for a few datagrams (the kernel doubles it).
const SINK_RCVBUF: u32 = 4096;
/// The drop flood's goal: udptrace keeps at least this share of the rate with no tracer.
pub const DROP_GOAL: f64 = 0.95;
/// The size of every datagram sent: small, so that the per-datagram path is measured, not copying.
pub const DATAGRAM_BYTES: usize = 32;
/// How long the error path waits after the sender before it reads the counters and stops a tracer: what
/// is still in the buffers reaches udptrace.
const SETTLE: Duration = Duration::from_millis(1500);
/// The same for the variants that account for nothing: the last port unreachables go out.
const SETTLE_SHORT: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct Options {
    pub udptrace: PathBuf,
    /// Modes to measure; those that do not attach here are reported as such.
    pub modes: Vec<String>,
    pub rounds: usize,
    pub seconds: f64,
    /// The bpftrace script for the comparison; `None` leaves bpftrace out.
    pub bpftrace_script: Option<PathBuf>,
    /// Compare with tcpdump.
    pub tcpdump: bool,
}

/// A variant of one measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Variant {
    Bare,
    /// udptrace in this mode as a user starts it: a text line per event, to a pipe that is read and dropped.
    Udptrace(String),
    /// udptrace in this mode, `--json`: an object per event, read and counted by the harness (drop flood).
    Json(String),
    /// udptrace in this mode, `--quiet`: nothing printed; the programs count in the kernel.
    Quiet(String),
    /// udptrace in this mode, `--summary 1`: counted in the kernel, a table a second on a pipe that is read.
    Summary(String),
    Bpftrace,
    Tcpdump,
}

impl Variant {
    fn label(&self) -> String {
        match self {
            Variant::Bare => "no tracer".to_owned(),
            Variant::Udptrace(mode) => format!("udptrace {mode}"),
            Variant::Json(mode) => format!("udptrace {mode} --json"),
            Variant::Quiet(mode) => format!("udptrace {mode} --quiet"),
            Variant::Summary(mode) => format!("udptrace {mode} --summary 1"),
            Variant::Bpftrace => "bpftrace script".to_owned(),
            Variant::Tcpdump => "tcpdump -i any icmp -w".to_owned(),
        }
    }

    /// udptrace's mode in this variant, if it runs udptrace.
    fn mode(&self) -> Option<&str> {
        match self {
            Variant::Udptrace(mode) | Variant::Json(mode) | Variant::Quiet(mode) | Variant::Summary(mode) => Some(mode),
            _ => None,
        }
    }
}

/// One udptrace program's BPF statistics over a variant's rounds.
#[derive(Clone, Debug)]
pub struct ProgramCost {
    pub variant: String,
    /// As the kernel keeps it (15 characters), with `#2`... when one udptrace loads several of that name.
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
    /// Datagrams sent while these runs were counted.
    pub datagrams: u64,
}

impl ProgramCost {
    pub fn runs_per_datagram(&self) -> f64 {
        self.runs as f64 / self.datagrams as f64
    }
}

/// One variant of the hot path: the median rate and ratio, and the datagrams over all its rounds.
#[derive(Clone, Debug, Default)]
pub struct HotRow {
    pub label: String,
    pub rate: f64,
    pub ratio: f64,
    pub rounds: usize,
    pub sent: u64,
    pub received: u64,
    /// The server's `Udp: RcvbufErrors` and `Udp: InErrors`, how much they moved.
    pub rcvbuf_errors: u64,
    pub in_errors: u64,
    /// Rounds in which the receiver got every datagram sent and no UDP error counter moved.
    pub healthy_rounds: usize,
}

impl HotRow {
    pub fn healthy(&self) -> bool {
        self.rounds > 0 && self.healthy_rounds == self.rounds
    }
}

/// One variant of the error path.
#[derive(Clone, Debug, Default)]
pub struct ErrorRow {
    pub label: String,
    pub rate: f64,
    pub ratio: f64,
    pub sent: u64,
    /// Port unreachables the server sent (`IcmpMsg: OutType3`), over all rounds.
    pub unreachables: u64,
}

/// How one udptrace variant accounted for the port unreachables, over its rounds.
#[derive(Clone, Debug, Default)]
pub struct Accounting {
    pub label: String,
    /// Where the counts come from: the closing line, or the last summary table.
    pub source: &'static str,
    pub rounds: usize,
    pub accounted_rounds: usize,
    pub kernel: u64,
    pub events: u64,
    pub lost: u64,
}

impl Accounting {
    pub fn accounted(&self) -> bool {
        self.rounds > 0 && self.accounted_rounds == self.rounds
    }
}

/// One variant of the drop flood.
#[derive(Clone, Debug, Default)]
pub struct DropRow {
    pub label: String,
    pub rate: f64,
    pub ratio: f64,
    pub rounds: usize,
    pub sent: u64,
    /// The server's `Udp: RcvbufErrors`, how much it moved: the datagrams dropped at the full socket.
    pub rcvbuf_errors: u64,
    /// What the receiver found queued at the end.
    pub drained: u64,
}

impl DropRow {
    /// Datagrams sent that were neither dropped at the socket nor read from it.
    pub fn elsewhere(&self) -> u64 {
        self.sent.saturating_sub(self.rcvbuf_errors + self.drained)
    }
}

/// What one udptrace run showed of the drops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Drops at the receiver: the sum of `count` of the `udp_dropped` events (or rows) about it.
    pub drops: u64,
    /// `udp_dropped` events read, when they were (`--json`).
    pub events: Option<u64>,
    /// The largest `count` of one event (`--json`).
    pub largest: u64,
    /// Drops by reason (or location, when the kernel has no reasons).
    pub reasons: BTreeMap<String, u64>,
    /// `udp_dropped` events about something else than the receiver (`--json`).
    pub elsewhere: u64,
}

impl DropCounts {
    /// Reads one line of `udptrace --json`: a `udp_dropped` event to `receiver` counts its `count`.
    fn add_json_line(&mut self, line: &str, receiver: &str) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { return };
        if value["event"] != "udp_dropped" {
            return;
        }
        if value["packet"]["dst"].as_str() != Some(receiver) {
            self.elsewhere += 1;
            return;
        }
        let count = value["count"].as_u64().unwrap_or(0);
        let reason = value["reason"].as_str().or_else(|| value["location"].as_str()).unwrap_or("?");
        *self.events.get_or_insert(0) += 1;
        self.drops += count;
        self.largest = self.largest.max(count);
        *self.reasons.entry(reason.to_owned()).or_default() += count;
    }

    /// The `udp_dropped` rows of a `--summary` table (`{"event":"summary","rows":[...]}`).
    fn of_summary(table: &serde_json::Value) -> Self {
        let mut counts = Self::default();
        for row in table["rows"].as_array().into_iter().flatten().filter(|r| r["event"] == "udp_dropped") {
            let count = row["count"].as_u64().unwrap_or(0);
            counts.drops += count;
            *counts.reasons.entry(row["outcome"].as_str().unwrap_or("?").to_owned()).or_default() += count;
        }
        counts
    }
}

/// How one udptrace variant accounted for the drops of the drop flood, over its rounds.
#[derive(Clone, Debug, Default)]
pub struct DropAccounting {
    pub label: String,
    /// Where the counts come from: its JSON events, its last summary table, the closing line.
    pub source: &'static str,
    pub rounds: usize,
    pub accounted_rounds: usize,
    /// `Udp: RcvbufErrors` of the server, how much it moved.
    pub kernel: u64,
    pub shown: DropCounts,
    pub lost: u64,
}

impl DropAccounting {
    pub fn accounted(&self) -> bool {
        self.rounds > 0 && self.accounted_rounds == self.rounds
    }
}

/// Start-up and memory of one way of running udptrace.
#[derive(Clone, Debug, Default)]
pub struct Startup {
    pub label: String,
    pub startups: Vec<Duration>,
    pub peak_rss_kib: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub hot: Vec<HotRow>,
    /// Every udptrace program loaded on the hot path, with the runs it made there.
    pub hot_programs: Vec<ProgramCost>,
    pub error: Vec<ErrorRow>,
    pub accounting: Vec<Accounting>,
    pub error_programs: Vec<ProgramCost>,
    pub startup: Vec<Startup>,
    pub drops: Vec<DropRow>,
    pub drop_accounting: Vec<DropAccounting>,
    pub drop_programs: Vec<ProgramCost>,
    /// The drop flood receiver's receive buffer, as `SO_RCVBUF` read it back.
    pub drop_rcvbuf: Option<u64>,
    /// Modes or tools left out, and why.
    pub left_out: Vec<String>,
    /// What else happened that a reader of the figures should know (failed sends).
    pub notes: Vec<String>,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

struct Hosts {
    client: Netns,
    server: Netns,
}

impl Hosts {
    fn new() -> Result<Self> {
        let client = Netns::new("bclient")?;
        let server = Netns::new("bserver")?;
        veth(&client, &[&format!("{CLIENT}/24")], &server, &[&format!("{SERVER}/24")])?;
        // No ICMP type is rate-limited in the server: every datagram to the closed port draws an error.
        server.sysctl("net.ipv4.icmp_ratemask", "0")?;
        Ok(Self { client, server })
    }

    fn server(port: u16) -> SocketAddr {
        SocketAddr::new(SERVER.parse().expect("an IPv4 address"), port)
    }
}

/// The UDP counters of a namespace that say a datagram did not reach its socket.
#[derive(Clone, Copy, Debug, Default)]
struct UdpCounters {
    in_errors: u64,
    rcvbuf_errors: u64,
}

fn udp_counters(ns: &Netns) -> Result<UdpCounters> {
    let snmp = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
    let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let [names, values] = lines[..] else {
        bail!("no Udp counters in /proc/net/snmp of {}", ns.name);
    };
    let mut counters = UdpCounters::default();
    for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
        match name {
            "InErrors" => counters.in_errors = value.parse().unwrap_or(0),
            "RcvbufErrors" => counters.rcvbuf_errors = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok(counters)
}

/// A comparison tool running for the duration of one measurement.
struct Tool {
    child: Child,
    /// A file of the tool's, removed with it.
    scratch: Option<PathBuf>,
}

impl Drop for Tool {
    fn drop(&mut self) {
        // SIGINT lets bpftrace and tcpdump finish cleanly.
        crate::stop_child(&mut self.child, libc::SIGINT, Duration::from_secs(10));
        if let Some(path) = &self.scratch {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts `program` and waits until a line of its output contains `ready`; the rest is read and dropped.
fn start_tool(mut command: Command, ready: &str, scratch: Option<PathBuf>) -> Result<Tool> {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let tool = Tool { child, scratch };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut said = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(ready) => return Ok(tool),
            Ok(line) => said.push(line),
            Err(_) => bail!("not ready within 60 s: {}", said.join(" | ")),
        }
    }
}

/// bpftrace finds tracepoints through tracefs, which udptrace does not need and some hosts do not mount:
/// mounted for the comparison, unmounted after if it was not there.
struct Tracefs {
    mounted_here: bool,
}

impl Tracefs {
    const PATH: &str = "/sys/kernel/tracing";

    fn ensure() -> Self {
        if Path::new(Self::PATH).join("events").exists() {
            return Self { mounted_here: false };
        }
        let mounted =
            Command::new("mount").args(["-t", "tracefs", "tracefs", Self::PATH]).status().is_ok_and(|s| s.success());
        Self { mounted_here: mounted }
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_here {
            let _ = Command::new("umount").arg(Self::PATH).status();
        }
    }
}

fn tracer_config(udptrace: &Path, mode: &str) -> Config {
    Config {
        udptrace: udptrace.to_owned(),
        helper: PathBuf::new(),
        mode: mode.to_owned(),
        buffer: "ring".to_owned(),
        only: None,
        event_timeout: Duration::from_secs(10),
        quiet_period: Duration::from_secs(1),
        require_attach: true,
        check_command: false,
    }
}

/// udptrace as a user starts it, printing a text line per event to a pipe that is read and dropped; or
/// with `--json`, its `udp_dropped` events to one receiver counted as they are read.
struct Printer {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
    not_traced: Vec<String>,
    /// The reader of `--json`, which returns what it counted once the output ends.
    drops: Option<std::thread::JoinHandle<DropCounts>>,
}

impl Printer {
    /// Prints text, or with `json_drops_to` JSON whose `udp_dropped` events to that receiver are counted.
    fn start(udptrace: &Path, mode: &str, server_ns: &str, json_drops_to: Option<SocketAddr>) -> Result<Self> {
        let mut child = Command::new(udptrace)
            .args(json_drops_to.map(|_| "--json"))
            .args(["--probe", mode, "--netns", server_ns])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", udptrace.display()))?;
        let mut stdout = child.stdout.take().context("udptrace stdout")?;
        let drops = match json_drops_to {
            None => {
                std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
                None
            }
            Some(receiver) => Some(std::thread::spawn(move || {
                let receiver = receiver.to_string();
                let mut counts = DropCounts::default();
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    counts.add_json_line(&line, &receiver);
                }
                counts
            })),
        };
        let stderr = child.stderr.take().context("udptrace stderr")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut printer = Self { child, stderr: lines, not_traced: Vec::new(), drops };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut said = Vec::new();
        loop {
            match printer.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("udptrace: tracing") => return Ok(printer),
                Ok(line) => {
                    if line.contains("not traced") {
                        printer.not_traced.push(line.clone());
                    }
                    said.push(line);
                }
                Err(_) => bail!("udptrace did not start tracing: {}", said.join(" | ")),
            }
        }
    }

    /// SIGINT, as Ctrl-C; returns the closing line.
    fn stop(&mut self) -> Result<String> {
        stop_udptrace(&mut self.child, &self.stderr)
    }

    /// With `--json`, once udptrace has stopped: the drops its events showed.
    fn take_drops(&mut self) -> Option<DropCounts> {
        self.drops.take()?.join().ok()
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A udptrace under measurement: printing every event, or counting them (`--quiet`, `--summary`).
enum Running {
    Printing(Printer),
    Counting(Tracer),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Printing(p) => p.child.id(),
            Running::Counting(t) => t.pid(),
        }
    }

    fn not_traced(&self) -> &[String] {
        match self {
            Running::Printing(p) => &p.not_traced,
            Running::Counting(t) => &t.not_traced,
        }
    }

    /// Stops udptrace; returns its closing line.
    fn stop(&mut self) -> Result<String> {
        match self {
            Running::Printing(p) => p.stop(),
            Running::Counting(t) => t.stop(),
        }
    }
}

/// The eBPF programs process `pid` holds, through a program or a link fd (`prog_id:` in its fdinfo).
fn programs_of(pid: u32) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:").and_then(|id| id.trim().parse().ok()))
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The ids of the loaded programs named as udptrace names its own. A program unloaded while the list is
/// read (another udptrace stopping) is left out, not an error.
fn loaded_program_ids() -> BTreeSet<u32> {
    let ours = |name: &str| {
        ["fentry_", "fexit_", "kprobe_", "kretprobe_", "tp_", "cgroup_"].iter().any(|p| name.starts_with(p))
    };
    aya::programs::loaded_programs()
        .flatten()
        .filter(|info| info.name_as_str().is_some_and(ours))
        .map(|info| info.id())
        .collect()
}

/// Per program id: its name, run count and run time (ns) now.
type Stats = BTreeMap<u32, (String, u64, u64)>;

fn stats_of(ids: &BTreeSet<u32>) -> Stats {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|info| ids.contains(&info.id()))
        .map(|info| {
            let name = info.name_as_str().unwrap_or("?").to_owned();
            (info.id(), (name, info.run_count(), info.run_time().as_nanos() as u64))
        })
        .collect()
}

/// Program costs summed over rounds, by variant and program.
#[derive(Default)]
struct Costs(BTreeMap<(String, String), ProgramCost>);

impl Costs {
    /// Adds what each program did between `before` and `after`, while `datagrams` were sent.
    fn add(&mut self, label: &str, before: &Stats, after: &Stats, datagrams: u64) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, (name, runs, time)) in after {
            let (runs_before, time_before) = before.get(id).map_or((0, 0), |(_, r, t)| (*r, *t));
            let nth = seen.entry(name).or_default();
            *nth += 1;
            let name = if *nth == 1 { name.clone() } else { format!("{name} #{nth}") };
            let cost = self.0.entry((label.to_owned(), name.clone())).or_insert_with(|| ProgramCost {
                variant: label.to_owned(),
                name,
                runs: 0,
                run_time_ns: 0,
                datagrams: 0,
            });
            cost.runs += runs.saturating_sub(runs_before);
            cost.run_time_ns += time.saturating_sub(time_before);
            cost.datagrams += datagrams;
        }
    }

    fn into_rows(self, order: &[Variant]) -> Vec<ProgramCost> {
        let mut rows: Vec<ProgramCost> = self.0.into_values().collect();
        let rank = |label: &str| order.iter().position(|v| v.label() == label).unwrap_or(usize::MAX);
        rows.sort_by(|a, b| (rank(&a.variant), &a.name).cmp(&(rank(&b.variant), &b.name)));
        rows
    }
}

/// Start-up times and peak RSS, per way of running udptrace.
#[derive(Default)]
struct Starts(Vec<Startup>);

impl Starts {
    fn entry(&mut self, label: &str) -> &mut Startup {
        if let Some(at) = self.0.iter().position(|s| s.label == label) {
            return &mut self.0[at];
        }
        self.0.push(Startup { label: label.to_owned(), ..Startup::default() });
        self.0.last_mut().expect("just pushed")
    }

    fn rss(&mut self, label: &str, udptrace: &Running) {
        let entry = self.entry(label);
        entry.peak_rss_kib = entry.peak_rss_kib.max(peak_rss_kib(udptrace.pid()));
    }
}

/// udptrace as `variant` runs it, with the programs it loaded; `None` for a variant without udptrace.
fn start_udptrace(
    options: &Options,
    variant: &Variant,
    server_ns: &str,
    starts: &mut Starts,
) -> Result<Option<(Running, BTreeSet<u32>)>> {
    let Some(mode) = variant.mode() else {
        return Ok(None);
    };
    let config = tracer_config(&options.udptrace, mode);
    let before = loaded_program_ids();
    let started = Instant::now();
    let udptrace = match variant {
        Variant::Quiet(_) => Running::Counting(Tracer::start(&config, &["--quiet", "--netns", server_ns])?),
        // Not `--quiet`, which would leave the table out: the tables are piped and read.
        Variant::Summary(_) => Running::Counting(Tracer::start(&config, &["--summary", "1", "--netns", server_ns])?),
        Variant::Json(_) => {
            Running::Printing(Printer::start(&options.udptrace, mode, server_ns, Some(Hosts::server(DROP_PORT)))?)
        }
        _ => Running::Printing(Printer::start(&options.udptrace, mode, server_ns, None)?),
    };
    starts.entry(&variant.label()).startups.push(started.elapsed());
    // The programs its fds hold; else (no fdinfo) those that appeared while it started.
    let mut ours = programs_of(udptrace.pid());
    if ours.is_empty() {
        ours = loaded_program_ids().difference(&before).copied().collect();
    }
    Ok(Some((udptrace, ours)))
}

/// Which of `modes` attach every hook here, each with its start-up time, and why not for the others.
fn usable_modes(options: &Options, hosts: &Hosts, report: &mut Report, starts: &mut Starts) -> Vec<String> {
    let server_ns = hosts.server.inode.to_string();
    let mut usable = Vec::new();
    for mode in &options.modes {
        let variant = Variant::Udptrace(mode.clone());
        match start_udptrace(options, &variant, &server_ns, starts) {
            Ok(Some((mut tracer, _))) => {
                // A hook this kernel lacks in this mode is said; the mode is measured with the others.
                for missing in tracer.not_traced() {
                    report.left_out.push(format!("udptrace {mode}, measured without: {missing}"));
                }
                starts.rss(&variant.label(), &tracer);
                let _ = tracer.stop();
                usable.push(mode.clone());
            }
            Ok(None) => {}
            Err(e) => report.left_out.push(format!("udptrace {mode}: {}", crate::one_line(&format!("{e:#}")))),
        }
    }
    usable
}

/// Runs `measure` for every variant, `rounds` times, each round in another order; returns per variant the
/// median rate and the median of its per-round ratio to the bare rate (the first variant's).
fn rounds(
    variants: &[Variant],
    rounds: usize,
    mut measure: impl FnMut(&Variant) -> Result<f64>,
) -> Result<Vec<(String, f64, f64)>> {
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        let mut this_round = vec![f64::NAN; variants.len()];
        for k in 0..variants.len() {
            let index = (k + round) % variants.len();
            this_round[index] = measure(&variants[index])?;
        }
        let bare = this_round[0];
        for (index, rate) in this_round.into_iter().enumerate() {
            rates[index].push(rate);
            ratios[index].push(rate / bare);
        }
    }
    Ok(variants
        .iter()
        .zip(rates.iter_mut().zip(ratios.iter_mut()))
        .map(|(v, (rates, ratios))| (v.label(), median(rates), median(ratios)))
        .collect())
}

/// Failed sends are not measured datagrams; they are said.
fn note_failures(notes: &mut Vec<String>, label: &str, path: &str, sent: &Sent) {
    if sent.failed > 0 {
        let error = sent.error.as_deref().unwrap_or("?");
        notes.push(format!("{path}, {label}: {} sends failed ({error}); not counted as sent", sent.failed));
    }
}

/// Bad input, said in one line before anything is set up.
fn check_inputs(options: &Options) -> Result<()> {
    if !options.udptrace.is_file() {
        bail!("--udptrace {}: no such file", options.udptrace.display());
    }
    if let Some(script) = &options.bpftrace_script
        && !script.is_file()
    {
        bail!("--bpftrace {}: no such file", script.display());
    }
    if options.rounds == 0 || !(options.seconds > 0.0 && options.seconds <= 3600.0) {
        bail!("rounds must be at least 1 and seconds from 0 to 3600");
    }
    Ok(())
}

pub fn run(options: &Options) -> Result<Report> {
    check_inputs(options)?;
    crate::netns::sweep_stale();
    let mut options = options.clone();
    let mut once = BTreeSet::new();
    options.modes.retain(|mode| once.insert(mode.clone()));
    let hosts = Hosts::new()?;
    let mut report = Report::default();
    let mut starts = Starts::default();
    // On for both paths: a program that runs per healthy datagram shows in the hot path's run counts.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?;
    let modes = usable_modes(&options, &hosts, &mut report, &mut starts);
    hot_path(&options, &hosts, &modes, &mut report, &mut starts)?;
    error_path(&options, &hosts, &modes, &mut report, &mut starts)?;
    drop_flood(&options, &hosts, &modes, &mut report, &mut starts)?;
    drop(stats);
    report.startup = starts.0;
    Ok(report)
}

/// 1. The hot path: a sender alone in its process, a receiver that keeps up, and whether it did.
fn hot_path(
    options: &Options,
    hosts: &Hosts,
    modes: &[String],
    report: &mut Report,
    starts: &mut Starts,
) -> Result<()> {
    let server_ns = hosts.server.inode.to_string();
    let to = Hosts::server(OPEN_PORT);
    let variants = with_bare(modes, &[Variant::Udptrace]);
    let mut totals: BTreeMap<String, HotRow> = BTreeMap::new();
    let mut costs = Costs::default();
    let mut notes = Vec::new();
    let rates = rounds(&variants, options.rounds, |variant| {
        let label = variant.label();
        let mut tracer = start_udptrace(options, variant, &server_ns, starts)?;
        let ids = tracer.as_ref().map(|(_, ids)| ids.clone()).unwrap_or_default();
        let receiver = bench_traffic::Receiver::start(&hosts.server, to)?;
        let udp_before = udp_counters(&hosts.server)?;
        let stats_before = stats_of(&ids);
        let sent = bench_traffic::send(&hosts.client, to, options.seconds, DATAGRAM_BYTES, true)?;
        let received = receiver.finish()?;
        let stats_after = stats_of(&ids);
        let udp_after = udp_counters(&hosts.server)?;
        if let Some((tracer, _)) = &mut tracer {
            starts.rss(&label, tracer);
            let line = tracer.stop()?;
            if let Some((seen, _, lost)) = closing_counts(&line)
                && seen + lost > 0
            {
                notes.push(format!("hot path, {label}: udptrace saw {seen} events and lost {lost}"));
            }
            costs.add(&label, &stats_before, &stats_after, sent.datagrams);
        }
        note_failures(&mut notes, &label, "hot path", &sent);
        let row = totals.entry(label.clone()).or_default();
        let rcvbuf_errors = udp_after.rcvbuf_errors.saturating_sub(udp_before.rcvbuf_errors);
        let in_errors = udp_after.in_errors.saturating_sub(udp_before.in_errors);
        row.rounds += 1;
        row.sent += sent.datagrams;
        row.received += received;
        row.rcvbuf_errors += rcvbuf_errors;
        row.in_errors += in_errors;
        row.healthy_rounds += usize::from(rcvbuf_errors == 0 && in_errors == 0 && received == sent.datagrams);
        Ok(sent.rate())
    })?;
    report.hot = rates
        .into_iter()
        .map(|(label, rate, ratio)| {
            let row = totals.remove(&label).unwrap_or_default();
            HotRow { label, rate, ratio, ..row }
        })
        .collect();
    report.hot_programs = costs.into_rows(&variants);
    report.notes.extend(notes);
    Ok(())
}

/// `--summary`'s last table, the whole run's, once udptrace has stopped.
fn last_table(tracer: &mut Tracer) -> Option<&serde_json::Value> {
    // The output is read to its end: udptrace has exited.
    tracer.collect_for(Duration::from_secs(2));
    tracer.seen.iter().rev().find(|v| v["event"] == "summary" && v["period"].is_null())
}

/// The whole run's counts from `--summary`'s last table: `(events, lost)`.
fn last_summary(tracer: &mut Tracer) -> Option<(u64, u64)> {
    let table = last_table(tracer)?;
    Some((table["events"].as_u64()?, table["lost"].as_u64()?))
}

/// The whole run's drops from `--summary`'s last table, with its lost count.
fn last_drop_summary(tracer: &mut Tracer) -> Option<(DropCounts, u64)> {
    let table = last_table(tracer)?;
    Some((DropCounts::of_summary(table), table["lost"].as_u64()?))
}

/// The row of `rows` that `is` picks, added with `new` if there is none yet.
fn row_of<T>(rows: &mut Vec<T>, is: impl Fn(&T) -> bool, new: impl FnOnce() -> T) -> &mut T {
    let at = match rows.iter().position(is) {
        Some(at) => at,
        None => {
            rows.push(new());
            rows.len() - 1
        }
    };
    &mut rows[at]
}

/// No tracer, then each of `kinds` in every mode.
fn with_bare(modes: &[String], kinds: &[fn(String) -> Variant]) -> Vec<Variant> {
    let mut variants = vec![Variant::Bare];
    for kind in kinds {
        variants.extend(modes.iter().cloned().map(kind));
    }
    variants
}

/// 2. The error path: every variant, udptrace's accounting, and its programs' costs.
fn error_path(
    options: &Options,
    hosts: &Hosts,
    modes: &[String],
    report: &mut Report,
    starts: &mut Starts,
) -> Result<()> {
    let server_ns = hosts.server.inode.to_string();
    let to = Hosts::server(CLOSED_PORT);
    let mut variants = with_bare(modes, &[Variant::Udptrace, Variant::Quiet, Variant::Summary]);
    if let Some(script) = &options.bpftrace_script {
        match Command::new("bpftrace").arg("--version").output() {
            Ok(out) if out.status.success() => variants.push(Variant::Bpftrace),
            _ => report.left_out.push(format!("bpftrace ({}): not installed", script.display())),
        }
    }
    if options.tcpdump {
        match Command::new("tcpdump").arg("--version").output() {
            Ok(out) if out.status.success() => variants.push(Variant::Tcpdump),
            _ => report.left_out.push("tcpdump: not installed".to_owned()),
        }
    }
    let _tracefs = variants.contains(&Variant::Bpftrace).then(Tracefs::ensure);
    let mut totals: BTreeMap<String, ErrorRow> = BTreeMap::new();
    let mut accounting: Vec<Accounting> = Vec::new();
    let mut costs = Costs::default();
    let mut failed_tools: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let send = || bench_traffic::send(&hosts.client, to, options.seconds, DATAGRAM_BYTES, false);
    let rates = rounds(&variants, options.rounds, |variant| {
        let label = variant.label();
        let before = icmp_counters(&hosts.server)?;
        let tool = |command: Command, ready: &str, scratch: Option<PathBuf>| {
            start_tool(command, ready, scratch).map_err(|e| format!("{label}: {}", crate::one_line(&format!("{e:#}"))))
        };
        let sent = match variant {
            Variant::Bare => send()?,
            Variant::Udptrace(mode) | Variant::Json(mode) | Variant::Quiet(mode) | Variant::Summary(mode) => {
                let (mut tracer, ids) = start_udptrace(options, variant, &server_ns, starts)?.context("udptrace")?;
                let stats_before = stats_of(&ids);
                let sent = send()?;
                std::thread::sleep(SETTLE);
                let kernel = icmp_counters(&hosts.server)?.reported_by(mode) - before.reported_by(mode);
                costs.add(&label, &stats_before, &stats_of(&ids), sent.datagrams);
                starts.rss(&label, &tracer);
                let line = tracer.stop()?;
                let (seen, _, lost) = closing_counts(&line).with_context(|| format!("no counts in {line:?}"))?;
                let (source, events, lost) = match &mut tracer {
                    Running::Counting(summary) if matches!(variant, Variant::Summary(_)) => match last_summary(summary)
                    {
                        Some((events, lost)) => ("its last table", events, lost),
                        None => {
                            notes.push(format!(
                                "error path, {label}: no table for the whole run; counted from the closing line"
                            ));
                            ("closing line", seen, lost)
                        }
                    },
                    _ => ("closing line", seen, lost),
                };
                let entry = row_of(
                    &mut accounting,
                    |a| a.label == label,
                    || Accounting { label: label.clone(), source, ..Accounting::default() },
                );
                entry.rounds += 1;
                // Skipped kprobe runs are counted lost before the `--netns` filter (README, "lost"), so a
                // round accounts when nothing was invented and nothing is missing beyond what was reported.
                entry.accounted_rounds += usize::from(events <= kernel && kernel <= events + lost);
                entry.kernel += kernel;
                entry.events += events;
                entry.lost += lost;
                sent
            }
            Variant::Bpftrace => {
                let script = options.bpftrace_script.as_ref().context("no script")?;
                let mut command = Command::new("bpftrace");
                command.arg(script);
                match tool(command, "Attaching", None) {
                    Ok(_tool) => send()?,
                    Err(e) => {
                        failed_tools.push(e);
                        return Ok(f64::NAN);
                    }
                }
            }
            Variant::Tcpdump => {
                let file = std::env::temp_dir().join(format!("udptrace-bench-{}.pcap", std::process::id()));
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &hosts.server.name, "tcpdump", "-i", "any", "-w"])
                    .arg(&file)
                    .arg("icmp");
                match tool(command, "listening on", Some(file)) {
                    Ok(_tool) => send()?,
                    Err(e) => {
                        failed_tools.push(e);
                        return Ok(f64::NAN);
                    }
                }
            }
        };
        if variant.mode().is_none() {
            std::thread::sleep(SETTLE_SHORT);
        }
        let after = icmp_counters(&hosts.server)?;
        note_failures(&mut notes, &label, "error path", &sent);
        let row = totals.entry(label.clone()).or_default();
        row.sent += sent.datagrams;
        row.unreachables += after.out_dest_unreach.saturating_sub(before.out_dest_unreach);
        Ok(sent.rate())
    })?;
    report.error = rates
        .into_iter()
        .map(|(label, rate, ratio)| {
            let row = totals.remove(&label).unwrap_or_default();
            ErrorRow { label, rate, ratio, ..row }
        })
        .collect();
    failed_tools.sort();
    failed_tools.dedup();
    report.left_out.extend(failed_tools);
    report.accounting = accounting;
    report.error_programs = costs.into_rows(&variants);
    report.notes.extend(notes);
    Ok(())
}

/// The drop flood (4.): the hot path's sender to a receiver that never reads; what udptrace costs while
/// nearly every datagram is dropped, whether it showed every drop, and its programs' costs.
fn drop_flood(
    options: &Options,
    hosts: &Hosts,
    modes: &[String],
    report: &mut Report,
    starts: &mut Starts,
) -> Result<()> {
    let server_ns = hosts.server.inode.to_string();
    let to = Hosts::server(DROP_PORT);
    let variants = with_bare(modes, &[Variant::Udptrace, Variant::Json, Variant::Quiet, Variant::Summary]);
    let mut totals: BTreeMap<String, DropRow> = BTreeMap::new();
    let mut accounting: Vec<DropAccounting> = Vec::new();
    // The text variants' closing lines, said but not accounted: rounds, seen, lost, kernel.
    let mut closing: BTreeMap<String, (usize, u64, u64, u64)> = BTreeMap::new();
    let mut costs = Costs::default();
    let mut notes = Vec::new();
    let mut rcvbuf = None;
    let rates = rounds(&variants, options.rounds, |variant| {
        let label = variant.label();
        let tracer = start_udptrace(options, variant, &server_ns, starts)?;
        let ids = tracer.as_ref().map(|(_, ids)| ids.clone()).unwrap_or_default();
        let sink = bench_traffic::Receiver::start_sink(&hosts.server, to, SINK_RCVBUF)?;
        rcvbuf = rcvbuf.or(sink.rcvbuf);
        let udp_before = udp_counters(&hosts.server)?;
        let stats_before = stats_of(&ids);
        let sent = bench_traffic::send(&hosts.client, to, options.seconds, DATAGRAM_BYTES, true)?;
        // What is still on its way is dropped, and what udptrace still holds reaches it.
        std::thread::sleep(if tracer.is_some() { SETTLE } else { SETTLE_SHORT });
        let udp_after = udp_counters(&hosts.server)?;
        let stats_after = stats_of(&ids);
        let drained = sink.finish()?;
        let kernel = udp_after.rcvbuf_errors.saturating_sub(udp_before.rcvbuf_errors);
        if let Some((mut running, _)) = tracer {
            starts.rss(&label, &running);
            costs.add(&label, &stats_before, &stats_after, sent.datagrams);
            let line = running.stop()?;
            let (seen, _, lost) = closing_counts(&line).with_context(|| format!("no counts in {line:?}"))?;
            let from_closing_line = || DropCounts { drops: seen, ..DropCounts::default() };
            let shown = match (variant, &mut running) {
                (Variant::Json(_), Running::Printing(printer)) => match printer.take_drops() {
                    Some(counts) => Some(("its JSON events", counts, lost)),
                    None => bail!("{label}: the reader of udptrace's output failed"),
                },
                (Variant::Summary(_), Running::Counting(summary)) => match last_drop_summary(summary) {
                    Some((counts, lost)) => Some(("its last table", counts, lost)),
                    None => {
                        notes.push(format!(
                            "drop flood, {label}: no table for the whole run; counted from the closing line"
                        ));
                        Some(("closing line", from_closing_line(), lost))
                    }
                },
                (Variant::Quiet(_), _) => Some(("closing line", from_closing_line(), lost)),
                _ => {
                    let entry = closing.entry(label.clone()).or_default();
                    entry.0 += 1;
                    entry.1 += seen;
                    entry.2 += lost;
                    entry.3 += kernel;
                    None
                }
            };
            if let Some((source, counts, lost)) = shown {
                let entry = row_of(
                    &mut accounting,
                    |a| a.label == label,
                    || DropAccounting { label: label.clone(), source, ..DropAccounting::default() },
                );
                entry.rounds += 1;
                entry.accounted_rounds += usize::from(counts.drops <= kernel && kernel <= counts.drops + lost);
                entry.kernel += kernel;
                entry.lost += lost;
                let total = &mut entry.shown;
                total.drops += counts.drops;
                if let Some(events) = counts.events {
                    *total.events.get_or_insert(0) += events;
                }
                total.largest = total.largest.max(counts.largest);
                total.elsewhere += counts.elsewhere;
                for (reason, n) in counts.reasons {
                    *total.reasons.entry(reason).or_default() += n;
                }
            }
        }
        note_failures(&mut notes, &label, "drop flood", &sent);
        let row = totals.entry(label.clone()).or_default();
        row.rounds += 1;
        row.sent += sent.datagrams;
        row.rcvbuf_errors += kernel;
        row.drained += drained;
        Ok(sent.rate())
    })?;
    report.drops = rates
        .into_iter()
        .map(|(label, rate, ratio)| {
            let row = totals.remove(&label).unwrap_or_default();
            DropRow { label, rate, ratio, ..row }
        })
        .collect();
    for (label, (rounds, seen, lost, kernel)) in closing {
        notes.push(format!(
            "drop flood, {label} (not accounted: it prints text): its closing lines said {seen} events seen and \
             {lost} lost over {rounds} rounds; the kernel counted {kernel} drops at the socket"
        ));
    }
    report.drop_accounting = accounting;
    report.drop_programs = costs.into_rows(&variants);
    report.drop_rcvbuf = rcvbuf;
    report.notes.extend(notes);
    Ok(())
}

impl Report {
    /// Whether every udptrace run of the drop flood that accounts (`--json`, `--quiet`, `--summary`) showed
    /// every drop the kernel counted at the socket.
    pub fn drops_accounted(&self) -> bool {
        !self.drop_accounting.is_empty() && self.drop_accounting.iter().all(DropAccounting::accounted)
    }

    /// Whether every udptrace run, with `--quiet` and with `--summary`, accounted for every error the kernel
    /// sent.
    pub fn accounted(&self) -> bool {
        !self.accounting.is_empty() && self.accounting.iter().all(Accounting::accounted)
    }

    pub fn markdown(&self, header: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{header}");
        let rounds_word = |ok: usize, all: usize| {
            if ok == all && all > 0 { "yes".to_owned() } else { format!("NO ({ok} of {all} rounds)") }
        };

        let _ = writeln!(
            out,
            "\n### 1. Hot path: {DATAGRAM_BYTES}-byte datagrams to an open port, received by a process that keeps up\n\n\
             `send()` on a connected socket, in a process of its own; `recvmmsg()` into a 64 MiB buffer in another. \
             Sent, received and the server's `Udp:` error counters are summed over the rounds; a datagram took the \
             healthy path if it was received and neither `RcvbufErrors` nor `InErrors` moved.\n\n\
             | variant | datagrams/s (median) | ratio to no tracer (median of rounds) | sent | received | `RcvbufErrors` | `InErrors` | every datagram on the healthy path |\n\
             |---|---:|---:|---:|---:|---:|---:|---|"
        );
        for row in &self.hot {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.3} | {} | {} | {} | {} | {} |",
                row.label,
                row.rate,
                row.ratio,
                row.sent,
                row.received,
                row.rcvbuf_errors,
                row.in_errors,
                rounds_word(row.healthy_rounds, row.rounds)
            );
        }
        let programs = |out: &mut String, rows: &[ProgramCost]| {
            let _ = writeln!(
                out,
                "| variant | program | runs | runs per datagram sent | ns per run |\n|---|---|---:|---:|---:|"
            );
            for p in rows {
                let per_run =
                    if p.runs == 0 { "-".to_owned() } else { format!("{:.0}", p.run_time_ns as f64 / p.runs as f64) };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.3} | {per_run} |",
                    p.variant,
                    p.name,
                    p.runs,
                    p.runs_per_datagram()
                );
            }
            if rows.is_empty() {
                let _ = writeln!(out, "| (no udptrace variant was measured) | | | | |");
            }
        };
        let _ = writeln!(
            out,
            "\nEvery program udptrace loaded, with what it ran while the hot path was measured (BPF statistics, all \
             rounds): a program that ran for every datagram would show about 1 run per datagram.\n"
        );
        programs(&mut out, &self.hot_programs);

        let _ = writeln!(
            out,
            "\n### 2. Error path: {DATAGRAM_BYTES}-byte datagrams to a closed port, ICMP rate limits off\n\n\
             `send_to()` on an unconnected socket, in a process of its own: each datagram draws a port unreachable, \
             and no error reaches the sender. `udptrace MODE` prints a text line per event to a pipe that is read \
             and dropped; `--quiet` and `--summary 1` only count. Sent and port unreachables \
             (`IcmpMsg: OutType3`) over all rounds.\n\n\
             | variant | datagrams/s (median) | ratio to no tracer (median of rounds) | sent | port unreachables sent |\n\
             |---|---:|---:|---:|---:|"
        );
        for row in &self.error {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.3} | {} | {} |",
                row.label, row.rate, row.ratio, row.sent, row.unreachables
            );
        }
        let _ = writeln!(
            out,
            "\nEvery port unreachable the kernel sent, as udptrace accounted for it, over all rounds (in tracepoint \
             mode the kernel's count includes those it failed to queue, which the tracepoint sees; a round accounts when \
             its events are no more than the kernel sent and its events and lost together no fewer: runs the kernel \
             skipped are counted lost before the `--netns` filter):\n\n\
             | variant | counted from | rounds | kernel sent | events | lost | accounted |\n|---|---|---:|---:|---:|---:|---|"
        );
        for a in &self.accounting {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                a.label,
                a.source,
                a.rounds,
                a.kernel,
                a.events,
                a.lost,
                rounds_word(a.accounted_rounds, a.rounds)
            );
        }
        let _ = writeln!(out, "\nudptrace's programs on the error path (BPF statistics, all rounds):\n");
        programs(&mut out, &self.error_programs);

        let _ = writeln!(
            out,
            "\n### 3. Start-up and memory\n\n| udptrace | spawn to `udptrace: tracing` (median) | starts | peak RSS (largest) |\n|---|---:|---:|---:|"
        );
        for s in &self.startup {
            let rss = s.peak_rss_kib.map_or_else(|| "?".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0));
            let mut ms: Vec<f64> = s.startups.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
            let _ = writeln!(out, "| {} | {:.0} ms | {} | {rss} |", s.label, median(&mut ms), s.startups.len());
        }

        let rcvbuf = self.drop_rcvbuf.map_or_else(String::new, |n| format!(", which the kernel makes {n}"));
        let _ = writeln!(
            out,
            "\n### 4. Drop flood: {DATAGRAM_BYTES}-byte datagrams to a receiver that never reads\n\n\
             The hot path's sender, `send()` on a connected socket to an open port in a process of its own, to a \
             receiver whose socket has `SO_RCVBUF` {SINK_RCVBUF}{rcvbuf}, and which reads nothing until the end: \
             nearly every datagram finds its buffer full, is dropped and counted in the server's \
             `Udp: RcvbufErrors`, and passes `skb:kfree_skb`, where udptrace sees drops. udptrace counts such a \
             flood in the kernel, one `udp_dropped` event per reason, flow and socket a second with a count, so \
             the goal is a ratio to no tracer of at least {DROP_GOAL:.2}. `udptrace MODE` prints a text line per \
             event to a pipe that is read and dropped; `--json` is read by the harness and accounted; `--quiet` and \
             `--summary 1` only count. Sent, `RcvbufErrors`, what the receiver found queued at the end, and what \
             is left (neither dropped at the socket nor read), over all rounds.\n\n\
             | variant | datagrams/s (median) | ratio to no tracer (median of rounds) | at least {DROP_GOAL:.2} | sent | `RcvbufErrors` | read at the end | left |\n\
             |---|---:|---:|---|---:|---:|---:|---:|"
        );
        for row in &self.drops {
            let goal = if row.label == Variant::Bare.label() {
                "-"
            } else if row.ratio >= DROP_GOAL {
                "yes"
            } else {
                "NO"
            };
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.3} | {goal} | {} | {} | {} | {} |",
                row.label,
                row.rate,
                row.ratio,
                row.sent,
                row.rcvbuf_errors,
                row.drained,
                row.elsewhere()
            );
        }
        let _ = writeln!(
            out,
            "\nEvery drop the kernel counted at the socket (`RcvbufErrors`), as udptrace showed it, over all rounds: \
             with `--json` the sum of `count` of the `udp_dropped` events to the receiver, with `--summary 1` of the \
             `udp_dropped` rows of the last table (the whole run's), with `--quiet` the closing line's events. A \
             round accounts when the drops shown are no more than the kernel counted and, with the lost count, no \
             fewer. Events: how many `udp_dropped` events stood for those drops (the largest `count` of one), \
             and how many were about another destination.\n\n\
             | variant | counted from | rounds | kernel `RcvbufErrors` | drops shown | events (largest count) | about others | lost | accounted | by reason |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---|---|"
        );
        for a in &self.drop_accounting {
            let events = a.shown.events.map_or_else(|| "-".to_owned(), |n| format!("{n} ({})", a.shown.largest));
            let reasons = if a.shown.reasons.is_empty() {
                "-".to_owned()
            } else {
                a.shown.reasons.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {events} | {} | {} | {} | {reasons} |",
                a.label,
                a.source,
                a.rounds,
                a.kernel,
                a.shown.drops,
                a.shown.elsewhere,
                a.lost,
                rounds_word(a.accounted_rounds, a.rounds)
            );
        }
        if self.drop_accounting.is_empty() {
            let _ = writeln!(out, "| (no udptrace variant was measured) | | | | | | | | | |");
        }
        let _ = writeln!(
            out,
            "\nudptrace's programs in the drop flood (BPF statistics, all rounds): the one on `skb:kfree_skb` runs for \
             every datagram dropped, so about once per datagram sent.\n"
        );
        programs(&mut out, &self.drop_programs);
        for (title, lines) in [("Left out here", &self.left_out), ("Also seen", &self.notes)] {
            if !lines.is_empty() {
                let _ = writeln!(out, "\n{title}:\n");
                for line in lines {
                    let _ = writeln!(out, "- {line}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(entries: &[(u32, &str, u64, u64)]) -> Stats {
        entries.iter().map(|(id, name, runs, ns)| (*id, ((*name).to_owned(), *runs, *ns))).collect()
    }

    #[test]
    fn program_costs_add_up_over_rounds_and_keep_namesakes_apart() {
        let mut costs = Costs::default();
        let label = "udptrace fentry";
        // Round 1: two programs of one (truncated) name, one that never runs.
        costs.add(
            label,
            &stats(&[(10, "kretprobe_looku", 5, 50), (11, "kretprobe_looku", 0, 0), (12, "tp_icmp_send", 0, 0)]),
            &stats(&[
                (10, "kretprobe_looku", 105, 1050),
                (11, "kretprobe_looku", 100, 2000),
                (12, "tp_icmp_send", 0, 0),
            ]),
            100,
        );
        // Round 2: the same programs loaded again, under new ids.
        costs.add(
            label,
            &Stats::new(),
            &stats(&[(20, "kretprobe_looku", 300, 3000), (21, "kretprobe_looku", 0, 0), (22, "tp_icmp_send", 0, 0)]),
            300,
        );
        let rows = costs.into_rows(&[Variant::Bare, Variant::Udptrace("fentry".into())]);
        let got: Vec<(&str, u64, u64, u64)> =
            rows.iter().map(|p| (p.name.as_str(), p.runs, p.run_time_ns, p.datagrams)).collect();
        assert_eq!(
            got,
            vec![
                ("kretprobe_looku", 400, 4000, 400),
                ("kretprobe_looku #2", 100, 2000, 400),
                ("tp_icmp_send", 0, 0, 400)
            ]
        );
        assert_eq!(rows[0].runs_per_datagram(), 1.0);
    }

    #[test]
    fn medians_and_verdicts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
        let row = HotRow { rounds: 3, healthy_rounds: 2, ..HotRow::default() };
        assert!(!row.healthy());
        assert!(HotRow { rounds: 3, healthy_rounds: 3, ..HotRow::default() }.healthy());
        assert!(!Report::default().accounted());
    }

    #[test]
    fn drops_are_the_counts_of_the_events_to_the_receiver() {
        let receiver = "10.241.0.2:9002";
        let mut counts = DropCounts::default();
        for line in [
            r#"{"event":"udp_dropped","packet":{"src":"10.241.0.1:40000","dst":"10.241.0.2:9002","proto":"udp"},"reason":"socket_rcvbuff","location":"__udp_queue_rcv_skb","count":1}"#,
            r#"{"event":"udp_dropped","packet":{"src":"10.241.0.1:40000","dst":"10.241.0.2:9002","proto":"udp"},"reason":"socket_rcvbuff","location":"__udp_queue_rcv_skb","count":41000}"#,
            // 5.10: no reason; the location says where.
            r#"{"event":"udp_dropped","packet":{"src":"10.241.0.1:40000","dst":"10.241.0.2:9002","proto":"udp"},"reason":null,"location":"__udp_queue_rcv_skb","count":9}"#,
            r#"{"event":"udp_dropped","packet":{"src":"10.241.0.1:40000","dst":"10.241.0.2:9999","proto":"udp"},"reason":"no_socket","count":3}"#,
            r#"{"event":"icmp_sent","count":5}"#,
            "not json",
        ] {
            counts.add_json_line(line, receiver);
        }
        assert_eq!((counts.drops, counts.events, counts.largest, counts.elsewhere), (41010, Some(3), 41000, 1));
        assert_eq!(counts.reasons["socket_rcvbuff"], 41001);
        assert_eq!(counts.reasons["__udp_queue_rcv_skb"], 9);

        let table: serde_json::Value = serde_json::from_str(
            r#"{"event":"summary","period":null,"events":60,"lost":0,"rows":[
                {"count":50,"event":"udp_dropped","outcome":"socket_rcvbuff","address":"10.241.0.2:9002"},
                {"count":7,"event":"udp_dropped","outcome":"udp_csum","address":"10.241.0.2:9002"},
                {"count":3,"event":"icmp_sent","outcome":"no_listener","address":"10.241.0.2:9001"}]}"#,
        )
        .unwrap();
        let summary = DropCounts::of_summary(&table);
        assert_eq!((summary.drops, summary.events), (57, None));
        assert_eq!(summary.reasons.len(), 2);
    }

    #[test]
    fn the_markdown_has_the_drop_flood() {
        let report = Report {
            drops: vec![
                DropRow {
                    label: "no tracer".into(),
                    rate: 1000.0,
                    ratio: 1.0,
                    rounds: 1,
                    sent: 1000,
                    rcvbuf_errors: 990,
                    drained: 8,
                },
                DropRow {
                    label: "udptrace tracepoint --json".into(),
                    rate: 900.0,
                    ratio: 0.9,
                    rounds: 1,
                    sent: 900,
                    rcvbuf_errors: 892,
                    drained: 8,
                },
            ],
            drop_accounting: vec![DropAccounting {
                label: "udptrace tracepoint --json".into(),
                source: "its JSON events",
                rounds: 1,
                accounted_rounds: 1,
                kernel: 892,
                shown: DropCounts {
                    drops: 892,
                    events: Some(2),
                    largest: 891,
                    reasons: [("socket_rcvbuff".to_owned(), 892)].into(),
                    elsewhere: 0,
                },
                lost: 0,
            }],
            drop_rcvbuf: Some(8192),
            ..Report::default()
        };
        let text = report.markdown("## header");
        assert!(text.contains("### 4. Drop flood"), "{text}");
        assert!(text.contains("`SO_RCVBUF` 4096, which the kernel makes 8192"), "{text}");
        assert!(text.contains("| no tracer | 1000 | 1.000 | - | 1000 | 990 | 8 | 2 |"), "{text}");
        assert!(text.contains("| udptrace tracepoint --json | 900 | 0.900 | NO | 900 | 892 | 8 | 0 |"), "{text}");
        assert!(
            text.contains(
                "| udptrace tracepoint --json | its JSON events | 1 | 892 | 892 | 2 (891) | 0 | 0 | yes | socket_rcvbuff 892 |"
            ),
            "{text}"
        );
        assert!(report.drops_accounted());
    }

    #[test]
    fn the_markdown_lists_programs_that_did_not_run() {
        let report = Report {
            hot: vec![HotRow {
                label: "udptrace tracepoint".into(),
                rate: 1000.0,
                ratio: 0.99,
                rounds: 1,
                sent: 1000,
                received: 990,
                rcvbuf_errors: 10,
                in_errors: 10,
                healthy_rounds: 0,
            }],
            hot_programs: vec![ProgramCost {
                variant: "udptrace tracepoint".into(),
                name: "tp_icmp_send".into(),
                runs: 0,
                run_time_ns: 0,
                datagrams: 1000,
            }],
            ..Report::default()
        };
        let text = report.markdown("## header");
        assert!(
            text.contains("| udptrace tracepoint | 1000 | 0.990 | 1000 | 990 | 10 | 10 | NO (0 of 1 rounds) |"),
            "{text}"
        );
        assert!(text.contains("| udptrace tracepoint | tp_icmp_send | 0 | 0.000 | - |"), "{text}");
    }
}
