//! What the VMs print: the console's marked lines and the suite's check lines, read into one run per kernel,
//! and what makes a run a failure.

use std::{collections::BTreeMap, time::Duration};

use super::{MODES, Plan};

/// Marks the lines the VM's init prints for this side.
const MARK: &str = "@@udptrace-vm";

/// One check as the VM printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmCheck {
    pub mode: String,
    pub scenario: String,
    pub check: String,
    /// `pass`, `FAIL: ...` or `skip, because ...`.
    pub outcome: String,
}

/// What one VM run printed that matters.
#[derive(Debug, Default)]
pub struct VmRun {
    /// The series the kernel was resolved for (`6.1`).
    pub series: String,
    /// The kernel's architecture.
    pub arch: crate::arch::Arch,
    pub release: Option<String>,
    /// What `udptrace --version` said in each VM: the binary the package holds, run on that kernel.
    pub binary_versions: Vec<String>,
    /// `/proc/version`, which names Debian's package version (`Debian 6.1.158-1`).
    pub version: Option<String>,
    pub checks: Vec<VmCheck>,
    /// Exit status per mode of the scenario binary.
    pub mode_status: BTreeMap<String, String>,
    pub probes: Vec<String>,
    /// What the benchmark printed (Markdown and its smoke checks).
    pub bench: Vec<String>,
    pub done: bool,
    /// How long the VM ran, from boot to power-off.
    pub wall: Duration,
    /// The init's `clock` lines: (name, seconds the VM had been up).
    pub clocks: Vec<(String, f64)>,
    /// Each scenario's time, per mode.
    pub took: Vec<crate::timing::Took>,
    /// Per mode, the suite's udptrace loads and their time.
    pub loads: Vec<(String, String)>,
    /// How long each VM of the kernel ran: (part, wall).
    pub parts: Vec<(String, Duration)>,
    /// Where each VM's time went, a line per VM.
    pub timing: Vec<String>,
    /// This host's release, where its suite proves tracepoint mode on this series instead of a VM.
    pub on_host: Option<String>,
}

impl VmRun {
    /// Adds what another VM of the same kernel printed. The kernel's run is done when every VM finished.
    pub fn merge(&mut self, other: VmRun) {
        self.release = self.release.take().or(other.release);
        self.version = self.version.take().or(other.version);
        self.binary_versions.extend(other.binary_versions);
        self.checks.extend(other.checks);
        self.mode_status.extend(other.mode_status);
        self.probes.extend(other.probes);
        self.bench.extend(other.bench);
        self.done &= other.done;
        self.wall += other.wall;
        self.clocks.extend(other.clocks);
        self.took.extend(other.took);
        self.loads.extend(other.loads);
        self.parts.extend(other.parts);
        self.timing.extend(other.timing);
    }
}

impl VmRun {
    /// The name this run's kernel is recorded under (`6.1`, `6.1/arm64`: [`super::machine`]).
    pub fn machine(&self) -> String {
        super::machine(self.arch, &self.series)
    }

    /// Reads one console line.
    pub fn add_line(&mut self, line: &str) {
        let line = line.trim_end_matches('\r');
        // The console may put terminal escapes (a reset when the VM starts) before a marked line.
        if let Some(rest) = line.find(MARK).map(|at| &line[at + MARK.len()..]) {
            let rest = rest.trim_start();
            if let Some(release) = rest.strip_prefix("kernel ") {
                self.release = Some(release.to_owned());
            } else if let Some(version) = rest.strip_prefix("version ") {
                self.version = Some(version.to_owned());
            } else if let Some(said) = rest.strip_prefix("udptrace-version ") {
                self.binary_versions.push(said.to_owned());
            } else if let Some(probes) = rest.strip_prefix("probes ") {
                self.probes.push(probes.to_owned());
            } else if let Some(bench) = rest.strip_prefix("bench") {
                let bench = bench.strip_prefix(' ').unwrap_or(bench);
                // `bench  smoke  CHECK  OUTCOME`: the smoke run's checks count like the suite's.
                let words: Vec<&str> = bench.split_whitespace().collect();
                if let ["bench", "smoke", check, outcome @ ..] = words.as_slice() {
                    self.checks.push(VmCheck {
                        mode: "bench".into(),
                        scenario: "smoke".into(),
                        check: (*check).into(),
                        outcome: outcome.join(" "),
                    });
                }
                self.bench.push(bench.to_owned());
            } else if let Some(end) = rest.strip_prefix("end ") {
                if let Some((mode, status)) = end.split_once(' ') {
                    self.mode_status.insert(mode.to_owned(), status.to_owned());
                }
            } else if let Some(clock) = rest.strip_prefix("clock ") {
                if let Some((name, at)) = clock.split_once(' ')
                    && let Ok(at) = at.trim().parse()
                {
                    self.clocks.push((name.to_owned(), at));
                }
            } else if rest == "done" {
                self.done = true;
            }
            return;
        }
        if let Some(took) = crate::timing::parse_took(line).filter(|t| MODES.contains(&t.place.as_str())) {
            self.took.push(took);
            return;
        }
        if let Some(loads) = crate::timing::parse_loads(line).filter(|(mode, _)| MODES.contains(&mode.as_str())) {
            self.loads.push(loads);
            return;
        }
        // `MODE  SCENARIO  CHECK  OUTCOME`, as udptrace-scenarios prints them.
        let mut words = line.split_whitespace();
        let (Some(mode), Some(scenario), Some(check)) = (words.next(), words.next(), words.next()) else {
            return;
        };
        if !MODES.contains(&mode) {
            return;
        }
        let outcome = words.collect::<Vec<_>>().join(" ");
        if outcome.starts_with("pass") || outcome.starts_with("FAIL") || outcome.starts_with("skip") {
            self.checks.push(VmCheck { mode: mode.into(), scenario: scenario.into(), check: check.into(), outcome });
        }
    }

    /// Why this run is not a success, if it is not: a failed check, a missing mode, a skip in a mode
    /// that must work (fentry and kprobe), or a VM that never finished.
    pub fn problems(&self, plan: &Plan) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.done {
            problems.push("the VM did not finish".to_owned());
        }
        // The package's binary runs there: the very file, of this architecture, on this kernel.
        let wanted = format!("udptrace {}", env!("CARGO_PKG_VERSION"));
        if self.binary_versions.is_empty() {
            problems.push("udptrace --version said nothing".to_owned());
        }
        for said in self.binary_versions.iter().filter(|said| **said != wanted) {
            problems.push(format!("udptrace --version said {said:?}, not {wanted:?}"));
        }
        for mode in plan.expected_modes(self.arch, &self.series) {
            if mode == "tracepoint" && self.on_host.is_some() {
                continue;
            }
            if !self.checks.iter().any(|c| c.mode == *mode) {
                problems.push(format!("no result for {mode}"));
            }
        }
        for c in &self.checks {
            let must_run = c.mode != "tracepoint";
            if c.outcome.starts_with("FAIL") || (must_run && c.outcome.starts_with("skip") && c.check == "all") {
                problems.push(format!("{} {} {}: {}", c.mode, c.scenario, c.check, c.outcome));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_console() {
        let mut run = VmRun::default();
        for line in [
            "\x1bc\x1b[?7l\x1b[2J@@udptrace-vm kernel 6.12.117+deb12-cloud-amd64",
            &format!("@@udptrace-vm udptrace-version udptrace {}", env!("CARGO_PKG_VERSION")),
            "[    1.234] random kernel message",
            "fentry      closed_port_ipv4       socket_error     pass",
            "fentry      closed_port_ipv6       icmp_sent        FAIL: no icmp_sent within 30s",
            "@@udptrace-vm end fentry rc=1",
            "kprobe      udptrace               all_hooks_attach pass",
            "tracepoint  soft_error             icmp_sent        skip, because no hook\r",
            "@@udptrace-vm bench | udptrace fentry | 1234 | 0.981 |",
            "@@udptrace-vm bench bench  smoke  error_path_accounted     pass",
            "@@udptrace-vm done",
        ] {
            run.add_line(line);
        }
        assert_eq!(run.release.as_deref(), Some("6.12.117+deb12-cloud-amd64"));
        assert_eq!(run.checks.len(), 5);
        assert_eq!(run.checks[3].outcome, "skip, because no hook");
        assert_eq!((run.checks[4].mode.as_str(), run.checks[4].check.as_str()), ("bench", "error_path_accounted"));
        assert_eq!(run.bench[0], "| udptrace fentry | 1234 | 0.981 |");
        assert!(run.done);
        let problems = run.problems(&Plan { suite: true, bench: "smoke".into(), ..Plan::default() });
        assert_eq!(problems, vec!["fentry closed_port_ipv6 icmp_sent: FAIL: no icmp_sent within 30s".to_owned()]);
    }

    #[test]
    fn a_vm_that_never_finished_or_skipped_a_required_mode_fails() {
        let mut run = VmRun { series: "7".into(), ..VmRun::default() };
        run.add_line("fentry      closed_port_ipv4       all              skip, because nothing attaches");
        let problems = run.problems(&Plan { suite: true, bench: "smoke".into(), ..Plan::default() });
        assert!(problems.iter().any(|p| p.contains("no result for bench")));
        assert!(problems.iter().any(|p| p.contains("did not finish")));
        assert!(problems.iter().any(|p| p.contains("udptrace --version said nothing")));
        run.add_line("@@udptrace-vm udptrace-version udptrace 0.0.1");
        let problems = run.problems(&Plan { suite: true, bench: "smoke".into(), ..Plan::default() });
        assert!(problems.iter().any(|p| p.contains("udptrace --version said \"udptrace 0.0.1\"")));
        assert!(problems.iter().any(|p| p.contains("no result for kprobe")));
        assert!(problems.iter().any(|p| p.contains("fentry closed_port_ipv4 all")));
    }
}
