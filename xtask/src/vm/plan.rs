//! What the VMs run: the suite's modes and the benchmark per kernel, split into one VM per part, and the
//! kernel command line that tells each VM's init its part.

use crate::arch::Arch;

use super::{MODES, SERIES};

/// The arm64 kernels: bookworm's 6.1, the LTS most arm64 fleets still run and the last before fentry
/// attaches there, and the newest 7.x. Emulating arm64 costs more than x86_64, and what the other series
/// would prove there is what amd64 proves of them.
pub const ARM64_SERIES: &[&str] = &["6.1", "7"];

/// The kernel series of `arch`.
pub fn series_of(arch: Arch) -> &'static [&'static str] {
    match arch {
        Arch::X86_64 => SERIES,
        Arch::Aarch64 => ARM64_SERIES,
    }
}

/// The name a kernel of `arch` and `series` is recorded under (`xtask/kernels-passed.txt`, the timing):
/// the series for amd64, `6.1/arm64` for arm64.
pub fn machine(arch: Arch, series: &str) -> String {
    match arch {
        Arch::X86_64 => series.to_owned(),
        _ => format!("{series}/{}", arch.debian()),
    }
}

/// Whether `series` is the matrix's oldest or newest, where what one run proves for every kernel runs.
fn oldest_or_newest(series: &str) -> bool {
    SERIES.first() == Some(&series) || SERIES.last() == Some(&series)
}

/// Whether fentry and fexit attach to kernel functions on `arch` at `series`: arm64 calls a BPF trampoline
/// from a function's ftrace site only from 6.4 ("arm64: ftrace: Add direct call support",
/// arch/arm64/kernel/ftrace.c); before, `register_fentry()` (kernel/bpf/trampoline.c) answers ENOTSUPP
/// (524). The VM of the kernel's other modes still shows it: `udptrace probes -v` tries fentry there too.
pub fn fentry_on(arch: Arch, series: &str) -> bool {
    let version = |s: &str| -> (u32, u32) {
        let mut numbers = s.split('.').map(|n| n.parse().unwrap_or(0));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
    };
    arch != Arch::Aarch64 || version(series) >= (6, 4)
}

/// The scenarios an arm64 kernel runs in a full `cargo xtask test` (`--arch aarch64` runs all): those
/// whose outcome can differ by architecture. Each hook's attach and its argument and return-value reads
/// (socket errors of IPv4 and IPv6, delivered and not, ICMP sent and its rate limits, drops and their
/// reasons), the kernel stacks the causes are read from, the owner programs and the task fields they read,
/// conntrack's entries (read from kernel memory), the system-call filter every scenario runs under, and at
/// least one scenario per event kind and per field added since the first. Left to amd64: what user space
/// alone decides, and helpers that read the same on every architecture (`--pcap`'s copies, the unload).
pub const ARM64_SCENARIOS: &[&str] = &[
    "closed_port_ipv4",
    "closed_port_ipv6",
    "unconnected_recverr",
    "unreachable_ipv4",
    "ttl_exceeded",
    "firewall_reject_ipv4",
    "no_socket",
    "rate_limit",
    "rcvbuf_full",
    "firewall_drop",
    "neighbour_failed",
    "dns_refused",
    "=owner",
    "owner_before_start",
    "nat_backend_gone_ipv4",
    "pod_containerd",
    "healthy_path",
    "malformed_icmp",
];

/// What the VMs run.
#[derive(Default)]
pub struct Plan {
    /// The architectures whose kernels boot.
    pub arches: Vec<Arch>,
    /// Every scenario on arm64 too, not only [`ARM64_SCENARIOS`].
    pub arm64_whole_suite: bool,
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
    pub fn parts(&self, arch: Arch, series: &str) -> Vec<Part> {
        let mut parts: Vec<Part> = self
            .suite_modes()
            .into_iter()
            .filter(|m| *m != "fentry" || fentry_on(arch, series))
            .map(|m| Part::Suite(m.to_owned()))
            .collect();
        if self.bench_on(arch, series) {
            parts.push(Part::Bench);
        }
        parts
    }

    /// Whether the kernel of `series` runs the benchmark. A timed run (`cargo xtask bench`) measures every
    /// kernel; the smoke run of `cargo xtask test` runs on the newest only. What it proves is that the
    /// benchmark works (its variants start, its BPF statistics are read, its accounting adds up), and the
    /// kernel's part of that is what the suite proves on every kernel in every mode; on each further kernel it
    /// cost a VM of two to three minutes.
    /// The benchmark runs on amd64's kernels alone: on arm64 its programs are the same, and its emulated
    /// rates say nothing of an arm64 machine.
    pub fn bench_on(&self, arch: Arch, series: &str) -> bool {
        match self.bench.as_str() {
            _ if arch != Arch::X86_64 => false,
            "" | "none" => false,
            "smoke" => SERIES.last() == Some(&series),
            _ => true,
        }
    }

    /// The kernel command line that tells the VM's init what to run for `part`; `probes`: the one VM of a
    /// kernel that runs `udptrace probes -v` first.
    pub fn append(&self, arch: Arch, series: &str, part: &Part, probes: bool) -> String {
        let mut append = format!("console={} quiet loglevel=3 panic=-1", arch.console());
        if probes {
            append.push_str(" udptrace.probes=1");
        }
        match part {
            Part::Suite(mode) => append.push_str(&format!(" udptrace.modes={mode}")),
            Part::Bench => append.push_str(&format!(" udptrace.bench={}", self.bench)),
        }
        if self.checks_on(arch, series, part) {
            append.push_str(" udptrace.check=1");
        }
        if self.flood_on(arch, series) {
            append.push_str(" udptrace.flood=1");
        }
        if let Some(only) = self.only(arch) {
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
    ///
    /// On arm64 they run with the whole suite alone (`--arch aarch64`).
    fn checks_on(&self, arch: Arch, series: &str, part: &Part) -> bool {
        let arm64_checks = self.arm64_whole_suite || self.only.is_some();
        *part == Part::Suite("fentry".into())
            && (arch == Arch::X86_64 || arm64_checks)
            && (self.narrowed() || oldest_or_newest(series))
    }

    /// Whether the fentry and kprobe runs of the kernel of `series` flood the buffers: on the oldest and
    /// newest amd64 kernels (and any in a narrowed run, and arm64's with the whole suite). The flood (about
    /// 50 s a VM) proves the buffers' loss accounting under load, which the kernels between them do not change;
    /// the programs it floods are those the suite runs on every kernel.
    fn flood_on(&self, arch: Arch, series: &str) -> bool {
        self.narrowed()
            || (arch == Arch::X86_64 && oldest_or_newest(series))
            || (arch == Arch::Aarch64 && self.arm64_whole_suite)
    }

    /// The scenarios the VMs of `arch` run, `None` for all: `--only`, or [`ARM64_SCENARIOS`] on arm64.
    fn only(&self, arch: Arch) -> Option<String> {
        match (&self.only, arch) {
            (Some(only), _) => Some(only.clone()),
            (None, Arch::Aarch64) if !self.arm64_whole_suite => Some(ARM64_SCENARIOS.join(",")),
            (None, _) => None,
        }
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
    pub fn expected_modes(&self, arch: Arch, series: &str) -> Vec<&str> {
        let mut modes = self.suite_modes();
        modes.retain(|m| *m != "fentry" || fentry_on(arch, series));
        if self.bench == "smoke" && self.bench_on(arch, series) {
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
        assert_eq!(smoke.parts(Arch::X86_64, SERIES[SERIES.len() - 1]), with_bench);
        assert_eq!(smoke.parts(Arch::X86_64, SERIES[0]), suite(MODES));
        assert_eq!(smoke.parts(Arch::X86_64, "6.1"), suite(MODES));
        assert!(!smoke.expected_modes(Arch::X86_64, "6.1").contains(&"bench"));
        assert!(smoke.expected_modes(Arch::X86_64, SERIES[SERIES.len() - 1]).contains(&"bench"));
        let timed = Plan { bench: "5,2".into(), ..Plan::default() };
        assert!(
            SERIES.iter().all(|s| timed.parts(Arch::X86_64, s) == vec![Part::Bench]
                && timed.expected_modes(Arch::X86_64, s).is_empty())
        );
        let narrowed = Plan { suite: true, bench: "none".into(), modes: vec!["kprobe".into()], ..Plan::default() };
        assert_eq!(narrowed.parts(Arch::X86_64, SERIES[0]), suite(&["kprobe"]));
    }

    #[test]
    fn udptrace_check_runs_in_the_fentry_run_of_the_oldest_and_newest_kernels() {
        let full = Plan { suite: true, bench: "smoke".into(), ..Plan::default() };
        let fentry = Part::Suite("fentry".into());
        let (oldest, newest) = (SERIES[0], SERIES[SERIES.len() - 1]);
        assert!(full.append(Arch::X86_64, oldest, &fentry, false).contains("udptrace.check=1"));
        assert!(full.append(Arch::X86_64, newest, &fentry, true).contains("udptrace.check=1"));
        assert!(!full.append(Arch::X86_64, "6.12", &fentry, false).contains("udptrace.check=1"));
        // The flood too runs on the oldest and newest kernels alone.
        assert!(full.append(Arch::X86_64, oldest, &Part::Suite("kprobe".into()), false).contains("udptrace.flood=1"));
        assert!(!full.append(Arch::X86_64, "6.12", &fentry, false).contains("udptrace.flood=1"));
        assert!(!full.append(Arch::X86_64, oldest, &Part::Suite("kprobe".into()), false).contains("udptrace.check=1"));
        assert!(!full.append(Arch::X86_64, newest, &Part::Bench, false).contains("udptrace.check=1"));
        let narrowed = Plan { suite: true, bench: "none".into(), only: Some("check".into()), ..Plan::default() };
        assert!(narrowed.append(Arch::X86_64, "6.12", &fentry, false).contains("udptrace.check=1"));
    }

    #[test]
    fn arm64_runs_its_scenarios_in_the_modes_its_kernels_allow_and_no_benchmark() {
        let full = Plan { suite: true, bench: "smoke".into(), ..Plan::default() };
        let modes = |series: &str| -> Vec<String> {
            full.parts(Arch::Aarch64, series).iter().map(|p| p.name().to_owned()).collect()
        };
        // fentry attaches to kernel functions on arm64 from 6.4 alone; no benchmark there.
        assert_eq!(modes("6.1"), ["kprobe", "tracepoint"]);
        assert_eq!(modes("7"), ["fentry", "kprobe", "tracepoint"]);
        assert_eq!(full.expected_modes(Arch::Aarch64, "6.1"), ["kprobe", "tracepoint"]);
        assert!(fentry_on(Arch::Aarch64, "6.4") && !fentry_on(Arch::Aarch64, "6.3") && fentry_on(Arch::X86_64, "5.10"));
        let fentry = Part::Suite("fentry".into());
        let on_arm64 = full.append(Arch::Aarch64, "7", &fentry, true);
        assert!(on_arm64.starts_with("console=ttyAMA0 "));
        assert!(on_arm64.contains(&format!(" udptrace.only={}", ARM64_SCENARIOS.join(","))));
        assert!(!on_arm64.contains("udptrace.check=1"));
        let whole = Plan { arm64_whole_suite: true, ..full };
        let on_arm64 = whole.append(Arch::Aarch64, "7", &fentry, true);
        assert!(!on_arm64.contains("udptrace.only=") && on_arm64.contains("udptrace.check=1"));
        assert_eq!(machine(Arch::Aarch64, "6.1"), "6.1/arm64");
        assert_eq!(machine(Arch::X86_64, "6.1"), "6.1");
    }
}
