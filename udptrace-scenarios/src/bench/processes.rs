//! The processes a measurement runs beside the traffic: a comparison tool (bpftrace, tcpdump), udptrace
//! printing into the harness or read by it, and their start-up times and memory.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::*;
use crate::{
    config::Config,
    tracer::{Tracer, peak_rss_kib, stop_udptrace, tracing_pss_kib},
};

/// A comparison tool running for the duration of one measurement.
pub(super) struct Tool {
    pub(super) child: Child,
    /// A file of the tool's, removed with it.
    scratch: Option<PathBuf>,
}

impl Drop for Tool {
    fn drop(&mut self) {
        // SIGINT lets bpftrace and tcpdump finish cleanly.
        crate::child::stop_child(&mut self.child, libc::SIGINT, Duration::from_secs(10));
        if let Some(path) = &self.scratch {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts `program` and waits until a line of its output contains `ready`; the rest is read and dropped.
pub(super) fn start_tool(mut command: Command, ready: &str, scratch: Option<PathBuf>) -> Result<Tool> {
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
pub(super) struct Tracefs {
    mounted_here: bool,
}

impl Tracefs {
    const PATH: &str = "/sys/kernel/tracing";

    pub(super) fn ensure() -> Self {
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

pub(super) fn tracer_config(udptrace: &Path, mode: &str) -> Config {
    Config {
        udptrace: udptrace.to_owned(),
        helper: PathBuf::new(),
        mode: mode.to_owned(),
        buffer: "ring".to_owned(),
        only: None,
        except: Vec::new(),
        event_timeout: Duration::from_secs(10),
        quiet_period: Duration::from_secs(1),
        require_attach: true,
        check_command: false,
    }
}

/// What the harness makes of a printing udptrace's output.
pub(super) enum Reading {
    /// Text lines, read and dropped.
    Text,
    /// `--json`, its `udp_dropped` events to this receiver counted.
    Drops(SocketAddr),
    /// `--json`, its `socket_error` events counted by where their owners came from.
    SocketErrors,
}

/// What the reader of `--json` counted, once the output ended.
enum Counted {
    Drops(DropCounts),
    SocketErrors(SocketErrorOwners),
}

/// udptrace as a user starts it, printing a text line per event to a pipe that is read and dropped; or
/// with `--json`, some of its events counted as they are read.
pub(super) struct Printer {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
    not_traced: Vec<String>,
    /// The reader of `--json`, which returns what it counted once the output ends.
    counted: Option<std::thread::JoinHandle<Counted>>,
}

impl Printer {
    /// Prints text, or JSON whose events `reading` says are counted; only what happens in `netns`.
    pub(super) fn start(udptrace: &Path, mode: &str, netns: &str, reading: Reading, extra: &[&str]) -> Result<Self> {
        let mut command = Command::new(udptrace);
        command.args(extra);
        Self::spawn(command, mode, netns, reading)
    }

    /// As [`Printer::start`], in the mount namespace at `mounts` (a Kubernetes node's).
    pub(super) fn start_on(
        udptrace: &Path,
        mode: &str,
        netns: &str,
        reading: Reading,
        mounts: Option<&Path>,
    ) -> Result<Self> {
        let mut command = Command::new(udptrace);
        let _mounts = mounts.map(|m| crate::tracer::enter_on_exec(&mut command, m, libc::CLONE_NEWNS)).transpose()?;
        Self::spawn(command, mode, netns, reading)
    }

    fn spawn(mut command: Command, mode: &str, netns: &str, reading: Reading) -> Result<Self> {
        let mut child = command
            .args((!matches!(reading, Reading::Text)).then_some("--json"))
            .args(["--probe", mode, "--netns", netns])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", command.get_program().to_string_lossy()))?;
        let mut stdout = child.stdout.take().context("udptrace stdout")?;
        let counted = match reading {
            Reading::Text => {
                std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
                None
            }
            Reading::Drops(receiver) => Some(std::thread::spawn(move || {
                let receiver = receiver.to_string();
                let mut counts = DropCounts::default();
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    counts.add_json_line(&line, &receiver);
                }
                Counted::Drops(counts)
            })),
            Reading::SocketErrors => Some(std::thread::spawn(move || {
                let mut counts = SocketErrorOwners::default();
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    counts.add_json_line(&line);
                }
                Counted::SocketErrors(counts)
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
        let mut printer = Self { child, stderr: lines, not_traced: Vec::new(), counted };
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
    pub(super) fn stop(&mut self) -> Result<String> {
        stop_udptrace(&mut self.child, &self.stderr)
    }

    /// With `--json` read for drops, once udptrace has stopped: the drops its events showed.
    pub(super) fn take_drops(&mut self) -> Option<DropCounts> {
        match self.counted.take()?.join().ok()? {
            Counted::Drops(counts) => Some(counts),
            Counted::SocketErrors(_) => None,
        }
    }

    /// With `--json` read for socket errors, once udptrace has stopped: their owners.
    pub(super) fn take_socket_errors(&mut self) -> Option<SocketErrorOwners> {
        match self.counted.take()?.join().ok()? {
            Counted::SocketErrors(counts) => Some(counts),
            Counted::Drops(_) => None,
        }
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A udptrace under measurement: printing every event, or counting them (`--quiet`, `--summary`).
pub(super) enum Running {
    Printing(Printer),
    Counting(Tracer),
}

impl Running {
    pub(super) fn pid(&self) -> u32 {
        match self {
            Running::Printing(p) => p.child.id(),
            Running::Counting(t) => t.pid(),
        }
    }

    pub(super) fn not_traced(&self) -> &[String] {
        match self {
            Running::Printing(p) => &p.not_traced,
            Running::Counting(t) => &t.not_traced,
        }
    }

    /// Stops udptrace; returns its closing line.
    pub(super) fn stop(&mut self) -> Result<String> {
        match self {
            Running::Printing(p) => p.stop(),
            Running::Counting(t) => t.stop(),
        }
    }
}

/// The CPU time (user and system) process `pid` and its children have used so far: udptrace and its
/// privileged helper. `None` once udptrace is gone.
pub(super) fn cpu_time(pid: u32) -> Option<Duration> {
    // utime and stime, the 14th and 15th fields of /proc/PID/stat (proc(5)), in clock ticks; the 4th is the
    // parent. The fields are counted after the name, which ends at the last `)`.
    let fields = |pid: &str| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_name: Vec<u64> =
            stat.rsplit_once(')')?.1.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
        Some((*after_name.first()?, after_name.get(10)? + after_name.get(11)?))
    };
    let (_, mut ticks) = fields(&pid.to_string())?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        if let Some((parent, used)) = fields(name)
            && parent == u64::from(pid)
        {
            ticks += used;
        }
    }
    // SAFETY: no arguments.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&n| n > 0)?;
    Some(Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_second))
}

/// Start-up times, peak RSS and PSS while tracing, per way of running udptrace.
#[derive(Default)]
pub(super) struct Starts {
    pub(super) startups: Vec<Startup>,
    /// Where the `--pcap` variants write, once one has run.
    pcap_dir: Option<crate::scratch::ScratchDir>,
}

impl Starts {
    pub(super) fn entry(&mut self, label: &str) -> &mut Startup {
        if let Some(at) = self.startups.iter().position(|s| s.label == label) {
            return &mut self.startups[at];
        }
        self.startups.push(Startup { label: label.to_owned(), ..Startup::default() });
        self.startups.last_mut().expect("just pushed")
    }

    /// The memory of `udptrace`, tracing for a while already (its start settled): its peak so far, and what it
    /// and its helper hold now.
    pub(super) fn rss(&mut self, label: &str, udptrace: &Running) {
        let entry = self.entry(label);
        entry.peak_rss_kib = entry.peak_rss_kib.max(peak_rss_kib(udptrace.pid()));
        entry.tracing_pss_kib = entry.tracing_pss_kib.max(tracing_pss_kib(udptrace.pid()));
    }
}

/// Where the `--pcap` variants write: a directory of the run the unprivileged tracer may create files in (at
/// most two files of 10 MB each, `-C 10 -W 2`), made at the first and removed with `starts` at the end.
fn pcap_file(starts: &mut Starts) -> Result<String> {
    let dir = match &mut starts.pcap_dir {
        Some(dir) => dir,
        dir => dir.insert(crate::scratch::ScratchDir::new("bench-pcap", 0o1777)?),
    };
    Ok(dir.join("events.pcapng").display().to_string())
}

/// udptrace as `variant` runs it, with the programs it loaded; `None` for a variant without udptrace. It
/// watches the server's namespace, but for the socket owners' variants, the client's, where the sender's
/// socket is told of its errors.
pub(super) fn start_udptrace(
    options: &Options,
    variant: &Variant,
    hosts: &Hosts,
    starts: &mut Starts,
) -> Result<Option<(Running, BTreeSet<u32>)>> {
    let Some(mode) = variant.mode() else {
        return Ok(None);
    };
    let server_ns = &hosts.server.inode.to_string();
    let config = tracer_config(&options.udptrace, mode);
    let before = loaded_program_ids();
    let started = Instant::now();
    let udptrace = match variant.split().1 {
        Variant::Quiet(_) => Running::Counting(Tracer::start(&config, &["--quiet", "--netns", server_ns])?),
        // Not `--quiet`, which would leave the table out: the tables are piped and read.
        Variant::Summary(_) => Running::Counting(Tracer::start(&config, &["--summary", "1", "--netns", server_ns])?),
        Variant::Json(_) => {
            let to = Reading::Drops(Hosts::server(DROP_PORT));
            Running::Printing(Printer::start(&options.udptrace, mode, server_ns, to, &[])?)
        }
        Variant::DnsJson(_) => {
            let port = DROP_PORT.to_string();
            let to = Reading::Drops(Hosts::server(DROP_PORT));
            Running::Printing(Printer::start(&options.udptrace, mode, server_ns, to, &["--dns-port", &port])?)
        }
        Variant::PcapText(_) | Variant::PcapJson(_) => {
            let file = pcap_file(starts)?;
            let extra = ["--pcap", file.as_str(), "-C", "10", "-W", "2"];
            let reading = match variant.split().1 {
                Variant::PcapJson(_) => Reading::Drops(Hosts::server(DROP_PORT)),
                _ => Reading::Text,
            };
            Running::Printing(Printer::start(&options.udptrace, mode, server_ns, reading, &extra)?)
        }
        Variant::Dns(_) => {
            let port = CLOSED_PORT.to_string();
            let extra = ["--dns-port", port.as_str()];
            Running::Printing(Printer::start(&options.udptrace, mode, server_ns, Reading::Text, &extra)?)
        }
        Variant::OwnerRecorded(_) | Variant::OwnerFromProc(_) => {
            let client_ns = &hosts.client.inode.to_string();
            Running::Printing(Printer::start(&options.udptrace, mode, client_ns, Reading::SocketErrors, &[])?)
        }
        Variant::OwnerInPod(_) => {
            let client_ns = &hosts.client.inode.to_string();
            let node = &hosts.pod.as_ref().map_err(|why| anyhow::anyhow!("{why}"))?.node;
            let reading = Reading::SocketErrors;
            Running::Printing(Printer::start_on(&options.udptrace, mode, client_ns, reading, Some(&node.mounts()))?)
        }
        _ => Running::Printing(Printer::start(&options.udptrace, mode, server_ns, Reading::Text, &[])?),
    };
    starts.entry(&variant.label()).startups.push(started.elapsed());
    // The programs its fds hold; else (no fdinfo) those that appeared while it started.
    let mut ours = programs_of(udptrace.pid());
    if ours.is_empty() {
        ours = loaded_program_ids().difference(&before).copied().collect();
    }
    Ok(Some((udptrace, ours)))
}
