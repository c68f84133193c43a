//! `udptrace-bench`: what it costs to leave udptrace on, measured side by side in one run.
//!
//! Two network namespaces joined by a veth pair; a sender thread in one, the kernel's UDP and ICMP paths in
//! the other. Every figure is a ratio or a paired comparison from the same run: each round measures every
//! variant once, in a rotating order, and the median over rounds is reported, because these machines are
//! noisy. Nothing here asserts a time; `--smoke` checks only that every part ran and that the error path's
//! events add up.
//!
//! 1. Hot path: datagrams per second to an open port, with no tracer and with udptrace in each mode.
//! 2. Error path: datagrams per second to a closed port with the ICMP rate limits off (`icmp_ratemask` 0):
//!    no tracer, udptrace per mode, a bpftrace script on the same tracepoints (`bench/errors.bt`), and
//!    `tcpdump -i any icmp -w FILE` in the server's namespace. udptrace's events plus its lost count must
//!    equal the port-unreachables the kernel counted.
//! 3. Per-event cost in the kernel: `run_time_ns / run_cnt` of each udptrace program (BPF_ENABLE_STATS).
//! 4. Start-up (spawn to `udptrace: tracing`) and peak RSS.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    Config,
    netns::{Netns, veth},
    packets::{icmp_counters, udp_socket},
    tracer::{Tracer, closing_counts},
};

const CLIENT: &str = "10.241.0.1";
const SERVER: &str = "10.241.0.2";
const OPEN_PORT: u16 = 9000;
const CLOSED_PORT: u16 = 9001;

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
    Udptrace(String),
    Bpftrace,
    Tcpdump,
}

impl Variant {
    fn label(&self) -> String {
        match self {
            Variant::Bare => "no tracer".to_owned(),
            Variant::Udptrace(mode) => format!("udptrace {mode}"),
            Variant::Bpftrace => "bpftrace script".to_owned(),
            Variant::Tcpdump => "tcpdump -i any icmp -w".to_owned(),
        }
    }
}

/// One per-program figure from BPF statistics.
#[derive(Clone, Debug)]
pub struct ProgramCost {
    pub mode: String,
    pub name: String,
    pub runs: u64,
    pub ns_per_run: f64,
}

#[derive(Debug, Default)]
pub struct Report {
    /// (variant, median datagrams/s, median ratio to no tracer) for the hot path.
    pub hot: Vec<(String, f64, f64)>,
    /// The same for the error path.
    pub error: Vec<(String, f64, f64)>,
    /// Error path accounting per udptrace run: (mode, kernel ICMP errors, events shown, lost).
    pub accounting: Vec<(String, u64, u64, u64)>,
    pub programs: Vec<ProgramCost>,
    /// (mode, start-up, peak RSS KiB).
    pub startup: Vec<(String, Duration, Option<u64>)>,
    /// Modes or tools left out, and why.
    pub left_out: Vec<String>,
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
}

/// Sends for `seconds` from a socket in `ns`; returns datagrams per second. `connected`: to the open port
/// with `send`; else to the closed port with `send_to` (errors coming back do not fail the next send).
fn blast(hosts: &Hosts, connected: bool, seconds: f64) -> Result<f64> {
    let socket = udp_socket(&hosts.client, format!("{CLIENT}:0").parse()?)?;
    let payload = [0u8; 64];
    let deadline = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut sent = 0u64;
    if connected {
        socket.connect(SocketAddr::new(SERVER.parse()?, OPEN_PORT))?;
        while start.elapsed() < deadline {
            for _ in 0..64 {
                sent += u64::from(socket.send(&payload).is_ok());
            }
        }
    } else {
        let to = SocketAddr::new(SERVER.parse()?, CLOSED_PORT);
        while start.elapsed() < deadline {
            for _ in 0..64 {
                sent += u64::from(socket.send_to(&payload, to).is_ok());
            }
        }
    }
    Ok(sent as f64 / start.elapsed().as_secs_f64())
}

/// A receiver draining the open port, so that the hot path is a delivery, not a drop.
struct Receiver {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(hosts: &Hosts) -> Result<Self> {
        let socket: UdpSocket = udp_socket(&hosts.server, SocketAddr::new(SERVER.parse()?, OPEN_PORT))?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let _ = socket.recv(&mut buf);
            }
        });
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
    }
}

/// The ids of udptrace's eBPF programs loaded now (see `suite::operator::program_ids`).
fn program_ids() -> Result<std::collections::BTreeSet<u32>> {
    crate::suite::program_ids()
}

/// Which of `modes` attach every hook here, each with its start-up time and why not for the others.
fn usable_modes(options: &Options, hosts: &Hosts, report: &mut Report) -> Vec<String> {
    let mut usable = Vec::new();
    for mode in &options.modes {
        let started = Instant::now();
        match Tracer::start(
            &tracer_config(&options.udptrace, mode),
            &["--quiet", "--netns", &hosts.server.inode.to_string()],
        ) {
            Ok(mut tracer) => {
                let startup = started.elapsed();
                // A hook this kernel lacks in this mode is said; the mode is measured with the others.
                for missing in &tracer.not_traced {
                    report.left_out.push(format!("udptrace {mode}, measured without: {missing}"));
                }
                report.startup.push((mode.clone(), startup, tracer.peak_rss_kib()));
                let _ = tracer.stop();
                usable.push(mode.clone());
            }
            Err(e) => report.left_out.push(format!("udptrace {mode}: {}", crate::one_line(&format!("{e:#}")))),
        }
    }
    usable
}

/// Runs `measure` for every variant, `rounds` times, each round in another order; returns per variant the
/// median rate and the median of its per-round ratio to the bare rate.
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

pub fn run(options: &Options) -> Result<Report> {
    crate::netns::sweep_stale();
    let hosts = Hosts::new()?;
    let mut report = Report::default();
    let modes = usable_modes(options, &hosts, &mut report);
    let server_ns = hosts.server.inode.to_string();
    let udptrace_args = ["--quiet", "--netns", server_ns.as_str()];

    // 1. Hot path.
    let mut variants = vec![Variant::Bare];
    variants.extend(modes.iter().cloned().map(Variant::Udptrace));
    {
        let _receiver = Receiver::start(&hosts)?;
        report.hot = rounds(&variants, options.rounds, |variant| {
            let _tracer = match variant {
                Variant::Udptrace(mode) => {
                    Some(Tracer::start(&tracer_config(&options.udptrace, mode), &udptrace_args)?)
                }
                _ => None,
            };
            blast(&hosts, true, options.seconds)
        })?;
    }

    // 2. Error path, with accounting; 3. per-program cost from the same udptrace runs.
    let mut error_variants = variants.clone();
    if let Some(script) = &options.bpftrace_script {
        match Command::new("bpftrace").arg("--version").output() {
            Ok(out) if out.status.success() => error_variants.push(Variant::Bpftrace),
            _ => report.left_out.push(format!("bpftrace ({}): not installed", script.display())),
        }
    }
    if options.tcpdump {
        match Command::new("tcpdump").arg("--version").output() {
            Ok(out) if out.status.success() => error_variants.push(Variant::Tcpdump),
            _ => report.left_out.push("tcpdump: not installed".to_owned()),
        }
    }
    let _tracefs = error_variants.contains(&Variant::Bpftrace).then(Tracefs::ensure);
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?;
    let mut accounting = Vec::new();
    let mut costs: Vec<ProgramCost> = Vec::new();
    let mut failed_tools: Vec<String> = Vec::new();
    report.error = rounds(&error_variants, options.rounds, |variant| {
        let before = icmp_counters(&hosts.server)?;
        match variant {
            Variant::Bare => blast(&hosts, false, options.seconds),
            Variant::Udptrace(mode) => {
                let ids_before = program_ids()?;
                let mut tracer = Tracer::start(&tracer_config(&options.udptrace, mode), &udptrace_args)?;
                let ours: Vec<u32> = program_ids()?.difference(&ids_before).copied().collect();
                let rate = blast(&hosts, false, options.seconds)?;
                std::thread::sleep(Duration::from_millis(1500));
                let kernel = icmp_counters(&hosts.server)?.reported_by(mode) - before.reported_by(mode);
                for info in aya::programs::loaded_programs().flatten().filter(|i| ours.contains(&i.id())) {
                    if info.run_count() > 0 {
                        costs.push(ProgramCost {
                            mode: mode.clone(),
                            name: info.name_as_str().unwrap_or("?").to_owned(),
                            runs: info.run_count(),
                            ns_per_run: info.run_time().as_nanos() as f64 / info.run_count() as f64,
                        });
                    }
                }
                let rss = tracer.peak_rss_kib();
                let line = tracer.stop()?;
                let (seen, _, lost) = closing_counts(&line).with_context(|| format!("no counts in {line:?}"))?;
                accounting.push((mode.clone(), kernel, seen, lost));
                if let Some(entry) = report.startup.iter_mut().find(|(m, _, _)| m == mode) {
                    entry.2 = entry.2.max(rss);
                }
                Ok(rate)
            }
            Variant::Bpftrace => {
                let script = options.bpftrace_script.as_ref().context("no script")?;
                let mut command = Command::new("bpftrace");
                command.arg(script);
                match start_tool(command, "Attaching", None) {
                    Ok(_tool) => blast(&hosts, false, options.seconds),
                    Err(e) => {
                        failed_tools.push(format!("bpftrace: {}", crate::one_line(&format!("{e:#}"))));
                        Ok(f64::NAN)
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
                match start_tool(command, "listening on", Some(file)) {
                    Ok(_tool) => blast(&hosts, false, options.seconds),
                    Err(e) => {
                        failed_tools.push(format!("tcpdump: {}", crate::one_line(&format!("{e:#}"))));
                        Ok(f64::NAN)
                    }
                }
            }
        }
    })?;
    drop(stats);
    failed_tools.dedup();
    report.left_out.extend(failed_tools);
    report.accounting = accounting;
    // Per program and mode, the run with the most invocations (the others are the same programs, re-loaded).
    costs.sort_by(|a, b| (&a.mode, &a.name, b.runs).cmp(&(&b.mode, &b.name, a.runs)));
    costs.dedup_by(|a, b| a.mode == b.mode && a.name == b.name);
    report.programs = costs;
    Ok(report)
}

impl Report {
    /// Whether every udptrace run accounted for every error the kernel sent.
    pub fn accounted(&self) -> bool {
        !self.accounting.is_empty() && self.accounting.iter().all(|(_, kernel, seen, lost)| seen + lost == *kernel)
    }

    pub fn markdown(&self, header: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{header}");
        let table = |out: &mut String, title: &str, rows: &[(String, f64, f64)]| {
            let _ = writeln!(
                out,
                "\n### {title}\n\n| variant | datagrams/s (median) | ratio to no tracer (median of rounds) |\n|---|---:|---:|"
            );
            for (label, rate, ratio) in rows {
                let _ = writeln!(out, "| {label} | {rate:.0} | {ratio:.3} |");
            }
        };
        table(&mut out, "1. Hot path: UDP to an open port", &self.hot);
        table(&mut out, "2. Error path: UDP to a closed port, ICMP rate limits off", &self.error);
        let _ = writeln!(
            out,
            "\nEvery port-unreachable the kernel sent, as udptrace accounted for it:\n\n| udptrace mode | kernel sent | events | lost | accounted |\n|---|---:|---:|---:|---|"
        );
        for (mode, kernel, seen, lost) in &self.accounting {
            let ok = if seen + lost == *kernel { "yes" } else { "NO" };
            let _ = writeln!(out, "| {mode} | {kernel} | {seen} | {lost} | {ok} |");
        }
        let _ = writeln!(
            out,
            "\n### 3. Per-invocation cost in the kernel (BPF statistics)\n\n| mode | program | runs | ns per run |\n|---|---|---:|---:|"
        );
        for p in &self.programs {
            let _ = writeln!(out, "| {} | {} | {} | {:.0} |", p.mode, p.name, p.runs, p.ns_per_run);
        }
        let _ = writeln!(
            out,
            "\n### 4. Start-up and memory\n\n| mode | spawn to `udptrace: tracing` | peak RSS |\n|---|---:|---:|"
        );
        for (mode, startup, rss) in &self.startup {
            let rss = rss.map_or_else(|| "?".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0));
            let _ = writeln!(out, "| {mode} | {} ms | {rss} |", startup.as_millis());
        }
        if !self.left_out.is_empty() {
            let _ = writeln!(out, "\nLeft out here:\n");
            for why in &self.left_out {
                let _ = writeln!(out, "- {why}");
            }
        }
        out
    }
}
