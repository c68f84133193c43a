//! A real udptrace process, as a user runs it: `--json`, one forced mode, events read line by line.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{Receiver, RecvTimeoutError, channel},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// How long udptrace may take to attach. Emulated kernels (QEMU TCG) are slow to verify programs.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// With `-v` the programs' log calls are live and the verifier walks them too: 5.10 under emulation needs
/// more than a minute for the fentry programs.
const VERBOSE_ATTACH_TIMEOUT: Duration = Duration::from_secs(300);

/// How often the suite had udptrace load and attach its programs, and how long that took in all: the
/// tracers' starts (to their `tracing` line), and the `udptrace check` runs as root (each loads them too; its
/// time is the whole run's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Loads {
    pub starts: u64,
    pub start_time: Duration,
    pub checks: u64,
    pub check_time: Duration,
}

static LOADS: std::sync::Mutex<Loads> =
    std::sync::Mutex::new(Loads { starts: 0, start_time: Duration::ZERO, checks: 0, check_time: Duration::ZERO });

/// Counts a tracer's start that took `took`.
fn count_start(took: Duration) {
    let mut loads = LOADS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loads.starts += 1;
    loads.start_time += took;
}

/// Counts a `udptrace check` run as root that took `took`.
pub fn count_check(took: Duration) {
    let mut loads = LOADS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loads.checks += 1;
    loads.check_time += took;
}

/// The longest any `socket_error` or `icmp_sent` took from its kernel time to reaching the suite, in
/// microseconds: what a quiet period (watching for an event that must not come) has to outlast.
static SLOWEST_EVENT_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Notes how late `event` reached the suite.
fn note_latency(event: &Value) {
    if !matches!(event["event"].as_str(), Some("socket_error" | "icmp_sent")) {
        return;
    }
    let Some(time) = event["time"].as_str().and_then(|t| humantime::parse_rfc3339(t).ok()) else {
        return;
    };
    if let Ok(late) = std::time::SystemTime::now().duration_since(time) {
        let late = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
        SLOWEST_EVENT_US.fetch_max(late, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The longest an event took to reach the suite since the last call.
pub fn take_slowest_event() -> Duration {
    Duration::from_micros(SLOWEST_EVENT_US.swap(0, std::sync::atomic::Ordering::Relaxed))
}

/// The loads counted so far.
pub fn loads() -> Loads {
    *LOADS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub struct Tracer {
    child: Child,
    /// Holds the stdout reader until [`Tracer::resume`] (a tracer whose reader stalls).
    gate: Option<std::sync::mpsc::Sender<()>>,
    events: Receiver<Value>,
    stderr: Receiver<String>,
    /// The hooks udptrace attached, from its `udptrace: tracing (hook=mode, ...)` line.
    pub attached: Vec<(String, String)>,
    /// Every event read so far, for failure messages and "nothing else" checks.
    pub seen: Vec<Value>,
    /// udptrace's warnings about hooks it could not attach.
    pub not_traced: Vec<String>,
    /// The counts of the `lost` events of the scenarios before this one.
    lost_earlier: u64,
    /// Started with `-v`.
    verbose: bool,
}

/// How a udptrace is started: read only after [`Tracer::resume`], with `--json`, and in which network
/// namespace (the suite's own, or this one's).
#[derive(Clone, Copy)]
struct Spawn<'a> {
    stalled: bool,
    json: bool,
    netns: Option<&'a crate::netns::Netns>,
    /// A mount namespace to start in (a node's: `kube::Node::mounts`).
    mounts: Option<&'a Path>,
}

impl Tracer {
    /// udptrace in the suite's mode and buffer, with `extra` options.
    pub fn start(config: &crate::config::Config, extra: &[&str]) -> Result<Self> {
        Self::spawn(
            &config.udptrace,
            &config.mode,
            &config.buffer,
            extra,
            Spawn { stalled: false, json: true, netns: None, mounts: None },
        )
    }

    /// Like [`Tracer::start`], but with text output: each line is a `Value::String`.
    pub fn start_text(config: &crate::config::Config, extra: &[&str]) -> Result<Self> {
        Self::spawn(
            &config.udptrace,
            &config.mode,
            &config.buffer,
            extra,
            Spawn { stalled: false, json: false, netns: None, mounts: None },
        )
    }

    /// Like [`Tracer::start`], but nothing reads udptrace's output until [`Tracer::resume`]: once the
    /// pipe is full udptrace blocks writing, and the kernel's buffer fills behind it.
    pub fn start_stalled(config: &crate::config::Config, extra: &[&str]) -> Result<Self> {
        Self::spawn(
            &config.udptrace,
            &config.mode,
            &config.buffer,
            extra,
            Spawn { stalled: true, json: true, netns: None, mounts: None },
        )
    }

    /// Like [`Tracer::start`], but udptrace runs in `ns`, which is then its own namespace (a node's, whose
    /// conntrack it asks about the pods behind it). Only the network namespace changes: the mounts, `/sys`
    /// and its cgroup hierarchy among them, stay the suite's.
    pub fn start_in(config: &crate::config::Config, ns: &crate::netns::Netns, extra: &[&str]) -> Result<Self> {
        let how = Spawn { stalled: false, json: true, netns: Some(ns), mounts: None };
        Self::spawn(&config.udptrace, &config.mode, &config.buffer, extra, how)
    }

    /// Like [`Tracer::start`], but udptrace runs in `node`'s mount namespace, where the runtimes' and the
    /// kubelet's files are; its text lines instead of JSON unless `json`.
    pub fn start_on(
        config: &crate::config::Config,
        node: &crate::kube::Node,
        extra: &[&str],
        json: bool,
    ) -> Result<Self> {
        let mounts = node.mounts();
        let how = Spawn { stalled: false, json, netns: None, mounts: Some(&mounts) };
        Self::spawn(&config.udptrace, &config.mode, &config.buffer, extra, how)
    }

    pub fn resume(&mut self) {
        if let Some(gate) = self.gate.take() {
            let _ = gate.send(());
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The peak resident memory of the udptrace process (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.child.id())
    }

    /// Reads events until none came for `quiet` (at most `limit` in all); returns how many arrived.
    pub fn collect_until_quiet(&mut self, quiet: Duration, limit: Duration) -> usize {
        let start = self.seen.len();
        let deadline = Instant::now() + limit;
        loop {
            let before = self.seen.len();
            self.collect_for(quiet.min(deadline.saturating_duration_since(Instant::now())));
            if self.seen.len() == before || Instant::now() >= deadline {
                return self.seen.len() - start;
            }
        }
    }

    fn spawn(udptrace: &Path, mode: &str, buffer: &str, extra: &[&str], how: Spawn) -> Result<Self> {
        let Spawn { stalled, json, netns, mounts } = how;
        let started = Instant::now();
        let mut command = Command::new(udptrace);
        command
            .args(json.then_some("--json"))
            .args(["--probe", mode, "--buffer", buffer])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Opened here, entered in the child between fork and exec.
        let netns =
            netns.map(|ns| enter_on_exec(&mut command, Path::new(&ns.path()), libc::CLONE_NEWNET)).transpose()?;
        let mounts = mounts.map(|path| enter_on_exec(&mut command, path, libc::CLONE_NEWNS)).transpose()?;
        let mut child = command.spawn().with_context(|| format!("starting {}", udptrace.display()))?;
        drop((netns, mounts));
        let (event_tx, events) = channel();
        let stdout = child.stdout.take().context("udptrace stdout")?;
        let (gate, opened) = channel::<()>();
        let gate = stalled.then_some(gate);
        std::thread::spawn(move || {
            if stalled && opened.recv().is_err() {
                return;
            }
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or_else(|_| Value::String(line));
                note_latency(&value);
                if event_tx.send(value).is_err() {
                    break;
                }
            }
        });
        let (err_tx, stderr) = channel();
        let child_stderr = child.stderr.take().context("udptrace stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(child_stderr).lines().map_while(Result::ok) {
                if err_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut tracer = Self {
            child,
            gate,
            events,
            stderr,
            attached: Vec::new(),
            seen: Vec::new(),
            not_traced: Vec::new(),
            lost_earlier: 0,
            verbose: extra.contains(&"-v"),
        };
        let attached = tracer.wait_attached();
        count_start(started.elapsed());
        attached?;
        Ok(tracer)
    }

    fn wait_attached(&mut self) -> Result<()> {
        let timeout = if self.verbose { VERBOSE_ATTACH_TIMEOUT } else { ATTACH_TIMEOUT };
        let deadline = Instant::now() + timeout;
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("udptrace: tracing") {
                        self.attached = parse_attached(rest);
                        return Ok(());
                    }
                    if line.contains("not traced") {
                        self.not_traced.push(line.clone());
                    }
                    said.push(line);
                }
                Err(RecvTimeoutError::Disconnected) => bail!("{}", said.join(" | ")),
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    bail!("udptrace did not start tracing within {timeout:?}: {}", said.join(" | "));
                }
            }
        }
    }

    /// The mode `hook` attached in, if it did.
    pub fn mode_of(&self, hook: &str) -> Option<&str> {
        self.attached.iter().find(|(h, _)| h == hook).map(|(_, m)| m.as_str())
    }

    /// Waits until `n` events (already seen or new) satisfy `matches`.
    pub fn expect_count(
        &mut self,
        what: &str,
        timeout: Duration,
        n: usize,
        matches: impl Fn(&Value) -> bool,
    ) -> Result<()> {
        let mut count = self.seen.iter().filter(|v| matches(v)).count();
        let deadline = Instant::now() + timeout;
        while count < n {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(value) => {
                    count += usize::from(matches(&value));
                    self.seen.push(value);
                }
                Err(_) => bail!("{count} of {n} {what} within {timeout:?}"),
            }
        }
        Ok(())
    }

    /// Waits for the first event (already seen or new) for which `matches` holds.
    pub fn expect(&mut self, what: &str, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Result<Value> {
        if let Some(found) = self.seen.iter().find(|v| matches(v)) {
            return Ok(found.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(value) => {
                    self.seen.push(value.clone());
                    if matches(&value) {
                        return Ok(value);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    bail!("no {what} within {timeout:?}; udptrace printed: {}", self.seen_summary());
                }
            }
        }
    }

    /// Forgets what earlier scenarios produced, after a moment for stragglers to arrive. Namespace inode
    /// numbers are reused once a namespace is gone, so old events could otherwise match new namespaces.
    pub fn next_scenario(&mut self) {
        self.collect_for(Duration::from_millis(200));
        self.lost_earlier += lost_in(&self.seen);
        self.seen.clear();
    }

    /// The counts of every `lost` event this udptrace printed.
    pub fn lost_reported(&self) -> u64 {
        self.lost_earlier + lost_in(&self.seen)
    }

    /// Collects what arrives for `period` (to check that something did NOT happen).
    pub fn collect_for(&mut self, period: Duration) {
        let deadline = Instant::now() + period;
        while let Ok(value) = self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(value);
        }
    }

    pub fn seen_summary(&self) -> String {
        if self.seen.is_empty() {
            return "nothing".to_owned();
        }
        self.seen.iter().map(Value::to_string).collect::<Vec<_>>().join(" ")
    }

    /// SIGKILL, which leaves udptrace no chance to clean up; waits for the process to be gone.
    pub fn kill_hard(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGINT, as Ctrl-C: udptrace must exit 0 and print its closing counts.
    pub fn stop(&mut self) -> Result<String> {
        stop_udptrace(&mut self.child, &self.stderr)
    }

    /// Waits for a line on udptrace's standard error (after its tracing line) for which `matches` holds;
    /// the lines before it are passed over, and named if none matches.
    pub fn expect_stderr(&mut self, what: &str, timeout: Duration, matches: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut passed = Vec::new();
        loop {
            match self.stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if matches(&line) => return Ok(line),
                Ok(line) => passed.push(line),
                Err(_) => bail!("no {what} within {timeout:?}; udptrace wrote: {passed:?}"),
            }
        }
    }

    /// How udptrace exited, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for udptrace to exit by itself (killed if it does not): how it exited, if it
    /// did, and what it wrote to standard error after its tracing line.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<std::process::ExitStatus>, Vec<String>) {
        // Signal 0 sends nothing: only the wait and, past `timeout`, the kill.
        let status = crate::child::stop_child(&mut self.child, 0, timeout);
        (status, rest_of(&self.stderr))
    }
}

/// What is left of a udptrace's standard error, up to the end of the pipe (at most 5 s of it).
fn rest_of(stderr: &Receiver<String>) -> Vec<String> {
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(line) = stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        lines.push(line);
    }
    lines
}

/// The peak resident memory of process `pid` (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The proportional set size of process `pid` and its children (udptrace and its privileged helper), in KiB:
/// the pages the fork left shared are counted once between them. `None` if `pid` is gone.
pub fn tracing_pss_kib(pid: u32) -> Option<u64> {
    let pss = |pid: &str| {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    // The parent is the 2nd field after the name, which ends at the last `)` of /proc/PID/stat (proc(5)).
    let parent = |pid: &str| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<u32>().ok()
    };
    let mut total = pss(&pid.to_string())?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        if parent(name) == Some(pid) {
            total += pss(name).unwrap_or(0);
        }
    }
    Some(total)
}

/// Stops a udptrace `child` with SIGINT, as Ctrl-C: it must exit 0 and print its closing counts, the line
/// returned; `stderr` carries its standard error line by line.
pub fn stop_udptrace(child: &mut Child, stderr: &Receiver<String>) -> Result<String> {
    let Some(status) = crate::child::stop_child(child, libc::SIGINT, Duration::from_secs(30)) else {
        bail!("udptrace did not stop within 30 s of SIGINT");
    };
    // Everything it wrote to stderr, up to the end of the pipe.
    let closing = rest_of(stderr);
    if !status.success() {
        bail!("udptrace exited with {status}: {}", closing.join(" | "));
    }
    closing
        .into_iter()
        .find(|l| l.contains("events seen"))
        .context("udptrace stopped without printing how many events it saw and lost")
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `" (socket_error=tracepoint, icmp_send=tracepoint); Ctrl-C to stop"` -> pairs.
fn parse_attached(rest: &str) -> Vec<(String, String)> {
    let inside = rest.split_once('(').and_then(|(_, r)| r.split_once(')')).map_or("", |(i, _)| i);
    inside
        .split(',')
        .filter_map(|pair| pair.trim().split_once('='))
        .map(|(hook, mode)| (hook.to_owned(), mode.to_owned()))
        .collect()
}

/// `(seen, filtered out, lost)` from udptrace's closing line
/// (`udptrace: 12 events seen, 4 filtered out, 3 lost, 1 unreadable, 0 undecodable`).
pub fn closing_counts(line: &str) -> Option<(u64, u64, u64)> {
    let count = |what: &str| {
        line.split(',')
            .find(|part| part.trim_end().ends_with(what))?
            .split_whitespace()
            .rev()
            .nth(what.split(' ').count())?
            .parse()
            .ok()
    };
    Some((count("events seen")?, count("filtered out")?, count("lost")?))
}

/// The counts of the `lost` events among `events`.
pub fn lost_in(events: &[Value]) -> u64 {
    events.iter().filter(|e| e["event"] == "lost").filter_map(|e| e["count"].as_u64()).sum()
}

/// Makes `command`'s child enter the namespace at `path` (of type `kind`) between fork and exec. Returns the
/// namespace's descriptor, which must outlive the spawn.
pub fn enter_on_exec(command: &mut Command, path: &Path, kind: libc::c_int) -> Result<std::fs::File> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: setns is async-signal-safe, and the closure touches nothing but the descriptor, which outlives
    // the spawn. For a mount namespace, the child's fs_struct is its own after fork, as setns(CLONE_NEWNS)
    // needs.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(command, move || {
            if libc::setns(fd, kind) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_closing_counts() {
        assert_eq!(
            closing_counts("udptrace: 12 events seen, 4 filtered out, 3 lost, 1 unreadable, 0 undecodable"),
            Some((12, 4, 3))
        );
        assert_eq!(closing_counts("udptrace: tracing"), None);
    }

    #[test]
    fn parses_the_tracing_line() {
        assert_eq!(
            parse_attached(" (socket_error=tracepoint, icmp_send=fentry); Ctrl-C to stop"),
            vec![("socket_error".into(), "tracepoint".into()), ("icmp_send".into(), "fentry".into())]
        );
        assert!(parse_attached("").is_empty());
    }
}
