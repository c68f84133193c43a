//! What the VMs run: the suite's modes and the benchmark per kernel, split into one VM per part, and the
//! kernel command line that tells each VM's init its part.

use super::{MODES, SERIES};

/// What the VMs run.
#[derive(Default)]
pub struct Plan {
    /// The scenario suite in every mode.
    pub suite: bool,
    /// The benchmark: `smoke`, or `ROUNDS,SECONDS`.
    pub bench: String,
    /// Only these modes (all when empty), and only the scenarios whose names contain `only`.
    pub modes: Vec<String>,
    pub only: Option<String>,
    /// The release of this host's kernel (`6.18.44-...`) when its suite runs in the same `cargo xtask test`,
    /// in tracepoint mode with both buffers: the QEMU kernel of that series then runs no tracepoint VM, which
    /// would run the same programs on the same series again.
    pub host_tracepoint: Option<String>,
}

/// `6.18` from a release or a package's version (`6.18.44-fc`, `6.18.15+deb13-cloud-amd64`).
pub fn major_minor(release: &str) -> String {
    release.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).take(2).collect::<Vec<_>>().join(".")
}

/// What one VM runs: the suite in one mode, or the benchmark. A kernel's work is split so, so that the lanes
/// share it out evenly: one VM of a kernel is a third of its time or less.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Suite(String),
    Bench,
}

impl Part {
    /// `fentry`, `kprobe`, `tracepoint` or `bench`: the name in logs, timing and `kernels-passed.txt`.
    pub fn name(&self) -> &str {
        match self {
            Part::Suite(mode) => mode,
            Part::Bench => "bench",
        }
    }
}

impl Plan {
    /// The VMs of the kernel of `series`, in the order of [`MODES`], the benchmark last.
    pub fn parts(&self, series: &str) -> Vec<Part> {
        let mut parts: Vec<Part> = self.suite_modes().into_iter().map(|m| Part::Suite(m.to_owned())).collect();
        if self.bench_on(series) {
            parts.push(Part::Bench);
        }
        parts
    }

    /// Whether the kernel of `series` runs the benchmark. A timed run (`cargo xtask bench`) measures every
    /// kernel; the smoke run of `cargo xtask test` runs on the newest only. What it proves is that the
    /// benchmark works (its variants start, its BPF statistics are read, its accounting adds up), and the
    /// kernel's part of that is what the suite proves on every kernel in every mode; on each further kernel it
    /// cost a VM of two to three minutes.
    pub fn bench_on(&self, series: &str) -> bool {
        match self.bench.as_str() {
            "" | "none" => false,
            "smoke" => SERIES.last() == Some(&series),
            _ => true,
        }
    }

    /// The kernel command line that tells the VM's init what to run for `part`; `probes`: the one VM of a
    /// kernel that runs `udptrace probes -v` first.
    pub fn append(&self, series: &str, part: &Part, probes: bool) -> String {
        let mut append = "console=ttyS0 quiet loglevel=3 panic=-1".to_owned();
        if probes {
            append.push_str(" udptrace.probes=1");
        }
        match part {
            Part::Suite(mode) => append.push_str(&format!(" udptrace.modes={mode}")),
            Part::Bench => append.push_str(&format!(" udptrace.bench={}", self.bench)),
        }
        if self.checks_on(series, part) {
            append.push_str(" udptrace.check=1");
        }
        if let Some(only) = &self.only {
            append.push_str(&format!(" udptrace.only={only}"));
        }
        if self.narrowed() {
            append.push_str(" udptrace.narrowed=1");
        }
        append
    }

    /// Whether `part` of the kernel of `series` runs the `udptrace check` scenarios: the fentry run of the
    /// oldest and the newest kernel (and of any kernel in a narrowed run). Each check loads udptrace's programs
    /// anew (ten of them took 100 to 160 s of a fentry VM), and what `udptrace check` adds to the hooks is the
    /// same on every kernel: the hooks themselves are `Tracing::start`'s, which the rest of the suite proves on
    /// every kernel in every mode.
    fn checks_on(&self, series: &str, part: &Part) -> bool {
        *part == Part::Suite("fentry".into())
            && (self.narrowed() || SERIES.first() == Some(&series) || SERIES.last() == Some(&series))
    }

    /// `--mode` or `--only`: a look at some of the suite, not a pass of it.
    pub fn narrowed(&self) -> bool {
        !self.modes.is_empty() || self.only.is_some()
    }

    /// The modes of the suite each kernel runs.
    fn suite_modes(&self) -> Vec<&str> {
        match (self.suite, self.modes.is_empty()) {
            (false, _) => Vec::new(),
            (true, true) => MODES.to_vec(),
            (true, false) => self.modes.iter().map(String::as_str).collect(),
        }
    }

    /// The modes whose results a full run must have on the kernel of `series`: `bench` too where the smoke
    /// run of the benchmark runs, which reports its checks.
    pub fn expected_modes(&self, series: &str) -> Vec<&str> {
        let mut modes = self.suite_modes();
        if self.bench == "smoke" && self.bench_on(series) {
            modes.push("bench");
        }
        modes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smoke_benchmark_runs_on_the_newest_kernel_and_a_timed_one_on_all() {
        let smoke = Plan { suite: true, bench: "smoke".into(), ..Plan::default() };
        let suite = |modes: &[&str]| modes.iter().map(|m| Part::Suite((*m).to_owned())).collect::<Vec<_>>();
        let mut with_bench = suite(MODES);
        with_bench.push(Part::Bench);
        assert_eq!(smoke.parts(SERIES[SERIES.len() - 1]), with_bench);
        assert_eq!(smoke.parts(SERIES[0]), suite(MODES));
        assert_eq!(smoke.parts("6.1"), suite(MODES));
        assert!(!smoke.expected_modes("6.1").contains(&"bench"));
        assert!(smoke.expected_modes(SERIES[SERIES.len() - 1]).contains(&"bench"));
        let timed = Plan { bench: "5,2".into(), ..Plan::default() };
        assert!(SERIES.iter().all(|s| timed.parts(s) == vec![Part::Bench] && timed.expected_modes(s).is_empty()));
        let narrowed = Plan { suite: true, bench: "none".into(), modes: vec!["kprobe".into()], ..Plan::default() };
        assert_eq!(narrowed.parts(SERIES[0]), suite(&["kprobe"]));
    }

    #[test]
    fn udptrace_check_runs_in_the_fentry_run_of_the_oldest_and_newest_kernels() {
        let full = Plan { suite: true, bench: "smoke".into(), ..Plan::default() };
        let fentry = Part::Suite("fentry".into());
        let (oldest, newest) = (SERIES[0], SERIES[SERIES.len() - 1]);
        assert!(full.append(oldest, &fentry, false).contains("udptrace.check=1"));
        assert!(full.append(newest, &fentry, true).contains("udptrace.check=1"));
        assert!(!full.append("6.12", &fentry, false).contains("udptrace.check=1"));
        assert!(!full.append(oldest, &Part::Suite("kprobe".into()), false).contains("udptrace.check=1"));
        assert!(!full.append(newest, &Part::Bench, false).contains("udptrace.check=1"));
        let narrowed = Plan { suite: true, bench: "none".into(), only: Some("check".into()), ..Plan::default() };
        assert!(narrowed.append("6.12", &fentry, false).contains("udptrace.check=1"));
    }
}
