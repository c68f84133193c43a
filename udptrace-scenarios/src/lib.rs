//! The scenario suite: each of the seed article's cases set up in network namespaces, with a real
//! udptrace attached in one forced mode, asserting the exact events. The same suite runs on the host
//! (`cargo test`, tracepoint mode) and inside each QEMU kernel (`cargo xtask vm-test`).

pub mod netns;
mod suite;
pub mod tracer;

use std::{fmt, path::PathBuf, time::Duration};

/// What one check came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Cannot run here; the reason says why.
    Skip(String),
}

#[derive(Debug, Clone)]
pub struct Check {
    pub scenario: &'static str,
    pub name: &'static str,
    pub outcome: Outcome,
}

/// Where and how the suite runs.
pub struct Config {
    pub udptrace: PathBuf,
    /// `fentry`, `kprobe` or `tracepoint`.
    pub mode: String,
    /// Only scenarios whose name contains this.
    pub only: Option<String>,
    /// How long to wait for each event: longer under emulation.
    pub event_timeout: Duration,
}

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.checks.iter().filter(|c| f(&c.outcome)).count()
    }
    pub fn passed(&self) -> usize {
        self.count(|o| *o == Outcome::Pass)
    }
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }
    /// The closing line: `N passed, N failed, N skipped`.
    pub fn totals(&self) -> String {
        format!("{} passed, {} failed, {} skipped", self.passed(), self.failed(), self.skipped())
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, why) = match &self.outcome {
            Outcome::Pass => ("pass", String::new()),
            Outcome::Fail(why) => ("FAIL", format!(": {why}")),
            Outcome::Skip(why) => ("skip", format!(", because {why}")),
        };
        write!(f, "{:<22} {:<16} {word}{why}", self.scenario, self.name)
    }
}

/// Why the suite cannot run on this machine at all, if it cannot.
fn unable_to_run() -> Option<String> {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        return Some("it needs root (network namespaces and eBPF)".to_owned());
    }
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        return Some("the `ip` command (iproute2) is missing".to_owned());
    }
    None
}

/// Runs every scenario, printing each check as it completes (prefixed with `prefix`).
pub fn run(config: &Config, prefix: &str) -> Report {
    let mut report = Report::default();
    let scenarios = suite::SCENARIOS.iter().filter(|s| config.only.as_ref().is_none_or(|o| s.name.contains(o.as_str())));
    let unable = unable_to_run();
    if unable.is_none() {
        netns::sweep_stale();
    }
    for scenario in scenarios {
        let checks = match &unable {
            Some(why) => vec![Check { scenario: scenario.name, name: "all", outcome: Outcome::Skip(why.clone()) }],
            None => suite::run_one(scenario, config),
        };
        for check in checks {
            println!("{prefix}{check}");
            report.checks.push(check);
        }
    }
    report
}
