//! `cargo xtask`: udptrace's build, run and test commands.
//!
//! - `cargo xtask run [-- ARGS]`: install what is missing, build, run udptrace as root with ARGS.
//! - `cargo xtask test`: install what is missing, then every test: unit tests, the root scenario suite on
//!   this host (inside `cargo test`), the benchmark's smoke run, the QEMU kernel matrix.
//! - `cargo xtask vm-test`: the QEMU kernel matrix alone.
//! - `cargo xtask check-deploy`: the manifests in deploy/ alone (promtool, kubernetes-validate).
//! - `cargo xtask bench`: what udptrace costs, on this host and in the QEMU kernels; writes
//!   docs/benchmarks.md.
//! - `cargo xtask dist`: what ships: the static binaries and the Debian packages of x86_64 and aarch64, in
//!   target/dist/.
//! - `cargo xtask demo`: the seed's cases played live in namespaces of their own, with udptrace's output.

mod apt;
mod arch;
mod bullseye;
mod deploy;
mod dist;
#[cfg(test)]
mod doc_links;
mod elf;
mod prereq;
mod results;
mod timing;
mod vm;
mod workspace;

use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use crate::{
    arch::Arch,
    workspace::{cargo, is_root, say, workspace_root},
};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing prerequisites (Debian LLVM 22, rust-src, bpf-linker).
    Setup,
    /// Build target/release/udptrace.
    Build,
    /// What ships: target/dist/x86_64/udptrace and target/dist/aarch64/udptrace (static, for any Linux
    /// userland of the architecture) and target/dist/udptrace_VERSION_{amd64,arm64}.deb (the binary, manual
    /// pages, completions, a systemd unit).
    Dist {
        /// Only this architecture (x86_64 or aarch64; amd64 and arm64 too).
        #[arg(long, value_parser = Arch::parse)]
        arch: Option<Arch>,
        /// Then check the packages, and install the amd64 one in a Debian 11 root and run it there (as
        /// `cargo xtask test` does).
        #[arg(long)]
        test: bool,
    },
    /// The seed's cases, one after another, in two network namespaces of their own, with udptrace's text
    /// output live and a line of narration before each (as root).
    Demo {
        /// Go on without waiting for Enter between cases.
        #[arg(long)]
        no_pause: bool,
    },
    /// Build, then run udptrace as root with ARGS (after `--`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every test: unit tests (no root), the scenario suite on this host (root), the QEMU kernel matrix.
    Test,
    /// Only the checks of the manifests in deploy/: the alerting rules (promtool), the DaemonSet and the
    /// PodMonitor (kubernetes-validate).
    CheckDeploy,
    /// The scenario suite in fentry, kprobe and tracepoint modes inside Debian's cloud kernels: amd64's 5.10,
    /// 6.1, 6.12, 6.18 and the newest 7.x; arm64's 6.1 and newest 7.x, with the scenarios that can differ by
    /// architecture.
    VmTest {
        /// Only this kernel series (5.10, 6.1, 6.12, 6.18, or 7 for the newest 7.x).
        #[arg(long, alias = "series")]
        kernel: Option<String>,
        /// Only this architecture's kernels (x86_64 or aarch64; amd64 and arm64 too). With aarch64, the
        /// whole suite runs there.
        #[arg(long, value_parser = Arch::parse)]
        arch: Option<Arch>,
        /// Only these modes (fentry, kprobe, tracepoint; repeat or separate with commas), without the
        /// benchmark; a second udptrace then prints its text and kernel stacks (-v) beside the suite.
        #[arg(long, value_delimiter = ',')]
        mode: Vec<String>,
        /// Only the scenarios whose names contain this, without the benchmark; as with --mode.
        #[arg(long)]
        only: Option<String>,
    },
    /// What udptrace costs: on this host (beside bpftrace and tcpdump), then inside the QEMU kernels;
    /// writes docs/benchmarks.md.
    Bench {
        /// Rounds per measurement (medians are reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Seconds per variant and round.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Leave out the QEMU kernels.
        #[arg(long)]
        no_vm: bool,
    },
}

fn build() -> Result<PathBuf> {
    prereq::ensure_build()?;
    say("building udptrace (release)");
    prereq::run_visible(cargo().args(["build", "--release", "-p", "udptrace"]))?;
    Ok(dist::target_dir().join("release/udptrace"))
}

/// The architectures of `--arch`: the one asked for, or both.
fn arches(arch: Option<Arch>) -> Vec<Arch> {
    arch.map_or_else(|| Arch::ALL.to_vec(), |a| vec![a])
}

/// What a VM of each architecture runs, from `dists`.
fn binaries_of(dists: &[dist::Dist]) -> impl Fn(Arch) -> Result<vm::Binaries> + '_ {
    move |arch| dists.iter().find(|d| d.arch == arch).map(dist::Dist::binaries).context(format!("no {arch} build"))
}

/// Runs the QEMU matrix (the suite, then a smoke run of the benchmark), prints it, and adds its checks to
/// `totals`.
fn vm_test(
    totals: &mut results::Tally,
    series: Option<&str>,
    arch: Option<Arch>,
    modes: Vec<String>,
    only: Option<String>,
) -> Result<()> {
    let dists = dist::build(&arches(arch))?;
    let whole_suite_on_arm64 = arch == Some(Arch::Aarch64);
    vm_test_with(binaries_of(&dists), &arches(arch), whole_suite_on_arm64, None, totals, series, modes, only)
}

/// [`vm_test`] with the release binaries from `binaries`.
#[allow(clippy::too_many_arguments)]
fn vm_test_with(
    binaries: impl Fn(Arch) -> Result<vm::Binaries>,
    arches: &[Arch],
    arm64_whole_suite: bool,
    host_tracepoint: Option<String>,
    totals: &mut results::Tally,
    series: Option<&str>,
    modes: Vec<String>,
    only: Option<String>,
) -> Result<()> {
    if let Some(bad) = modes.iter().find(|m| !vm::MODES.contains(&m.as_str())) {
        bail!("no mode {bad}: the modes are {}", vm::MODES.join(", "));
    }
    let narrowed = !modes.is_empty() || only.is_some();
    let bench = if narrowed { "none" } else { "smoke" };
    let plan = vm::Plan {
        arches: arches.to_vec(),
        arm64_whole_suite,
        suite: true,
        bench: bench.to_owned(),
        modes,
        only,
        host_tracepoint,
    };
    let runs = vm::vm_test(binaries, series, &plan)?;
    println!("\n{}", vm::matrix(&runs));
    let mut times = String::from("where each VM's time went:\n");
    for (_, run) in &runs {
        for row in &run.timing {
            times.push_str(row);
        }
        for (mode, loads) in &run.loads {
            times.push_str(&format!("    {mode}: udptrace loads {loads}\n"));
        }
        totals.took.extend(
            run.took.iter().map(|t| timing::Took { place: format!("{} {}", run.machine(), t.place), ..t.clone() }),
        );
    }
    println!("{times}");
    let mut problems = Vec::new();
    for (package, run) in &runs {
        for check in &run.checks {
            match check.outcome.split([',', ':']).next() {
                Some("pass") => totals.passed += 1,
                Some("skip") => totals.skipped += 1,
                _ => totals.failed += 1,
            }
        }
        let found = run.problems(&plan);
        if found.is_empty() {
            // A narrowed run is not a pass of the suite.
            if !narrowed {
                vm::record_pass(package, run)?;
            }
        } else {
            problems.push(format!("{package}: {}", vm::kernel_note(package, run)));
            problems.extend(found.into_iter().map(|p| format!("{package}: {p}")));
        }
    }
    // The table in docs/kernels.md is the last full run's, whatever it found.
    if !narrowed && series.is_none() {
        vm::write_proven_table(&vm::proven_table(&runs))?;
    }
    if !problems.is_empty() {
        bail!("the kernel matrix failed:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

fn test() -> Result<()> {
    let mut stages = timing::Stages::default();
    stages.time("installing what is missing", prereq::ensure_test)?;
    if !is_root() {
        say("not root: the scenario suites will report themselves skipped (they need root for namespaces and eBPF)");
    }
    let dists = stages
        .time("release build: the static binaries and the packages, both architectures", || dist::build(&Arch::ALL))?;
    let dist = dists.iter().find(|d| d.arch.is_host()).context("no build for this machine")?;
    let (udptrace, bench) = (dist.udptrace.clone(), dist.bench.clone());
    let mut totals = results::Tally::default();
    for built in &dists {
        totals.add(dist::check_package(built));
    }
    // The QEMU kernels mostly wait on their emulated CPU, and this host's suite mostly waits on its kernel:
    // the matrix runs beside the host's tests rather than after them. It is handed the binaries built above,
    // so that it takes no cargo lock from the test build.
    let (vm, cargo_ok, smoke_ok, demo_ok, package_ok, deploy_ok) = std::thread::scope(|scope| {
        let matrix = scope.spawn(|| {
            let mut vm_totals = results::Tally::default();
            let started = std::time::Instant::now();
            let result = if is_root() {
                say("running the QEMU kernel matrix");
                // This host's suite runs tracepoint mode on its own kernel, as root, beside the matrix.
                let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|r| r.trim().to_owned());
                vm_test_with(binaries_of(&dists), &Arch::ALL, false, host, &mut vm_totals, None, Vec::new(), None)
            } else {
                say("skipped the QEMU kernel matrix, because it needs root (apt, namespaces and eBPF inside the VM)");
                vm_totals.skipped += 1;
                Ok(())
            };
            (result, vm_totals, started.elapsed())
        });
        say("running unit tests and the host scenario suite (tracepoint mode), beside the kernel matrix");
        let cargo_ok = stages.time("cargo test: build, unit tests, the host suite (beside the matrix)", || {
            results::run_and_tally(cargo().args(["test", "--no-fail-fast"]), &mut totals)
        });
        // The benchmark, short, so that it keeps working: it checks that it measured and that the events add
        // up; nothing is timed.
        say("running the benchmark's smoke test, beside the kernel matrix");
        let smoke_ok = stages.time("the benchmark's smoke run on this host (beside the matrix)", || {
            results::run_and_tally(
                Command::new(&bench)
                    .arg("--udptrace")
                    .arg(&udptrace)
                    .args(["--smoke", "--tcpdump", "--bpftrace"])
                    .arg(workspace_root().join("bench/errors.bt")),
                &mut totals,
            )
        });
        // The demo, as an operator would run it without a terminal: each case must show its event.
        say("playing the demo (--no-pause), beside the kernel matrix");
        let demo_ok = stages.time("the demo (beside the matrix)", || {
            results::run_and_tally(
                Command::new(&dist.demo).arg("--udptrace").arg(&dist.udptrace).arg("--no-pause"),
                &mut totals,
            )
        });
        // The package, installed in a Debian 11 root and run from inside it.
        say("installing the package in a Debian 11 root and running it there, beside the kernel matrix");
        let package_ok = stages.time("the package in a Debian 11 root (beside the matrix)", || {
            bullseye::test(&dist.deb).map(|tally| {
                let ok = tally.failed == 0;
                totals.add(tally);
                ok
            })
        });
        // The manifests in deploy/, by promtool and kubernetes-validate.
        say("checking the manifests in deploy/ (promtool, kubernetes-validate), beside the kernel matrix");
        let deploy_ok = stages.time("the manifests in deploy/ (beside the matrix)", || {
            deploy::test().map(|tally| {
                let ok = tally.failed == 0;
                totals.add(tally);
                ok
            })
        });
        let (vm, vm_totals, took) = matrix.join().unwrap_or_else(|_| {
            (Err(anyhow::anyhow!("the kernel matrix panicked")), Default::default(), Default::default())
        });
        stages.add("the QEMU kernel matrix", took);
        totals.add(vm_totals);
        (vm, cargo_ok, smoke_ok, demo_ok, package_ok, deploy_ok)
    });
    let (cargo_ok, smoke_ok, demo_ok, package_ok, deploy_ok) =
        (cargo_ok?, smoke_ok?, demo_ok?, package_ok?, deploy_ok?);
    println!(
        "\n{}\n{}\n{}",
        stages.render(),
        timing::slowest(&totals.took, 10),
        timing::slowest_events(&totals.took, "flood")
    );
    println!("\ntests: {}", totals.line());
    vm?;
    if !cargo_ok || !smoke_ok || !demo_ok || !package_ok || !deploy_ok || totals.failed > 0 {
        bail!("tests failed");
    }
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => prereq::ensure_test(),
        Task::Build => build().map(drop),
        Task::Demo { no_pause } => demo(no_pause),
        Task::Dist { arch, test } => dist::build(&arches(arch)).and_then(|dists| {
            if !test {
                return Ok(());
            }
            let mut tally = results::Tally::default();
            for built in &dists {
                tally.add(dist::check_package(built));
                if built.arch == Arch::X86_64 {
                    tally.add(bullseye::test(&built.deb)?);
                }
            }
            println!("\ndist: {}", tally.line());
            if tally.failed > 0 { bail!("a package failed its checks") } else { Ok(()) }
        }),
        Task::Run { args } => run(args),
        Task::Test => test(),
        Task::CheckDeploy => prereq::ensure_test().and_then(|()| deploy::test()).and_then(|tally| {
            println!("\ndeploy: {}", tally.line());
            if tally.failed > 0 { bail!("the manifests in deploy/ failed their checks") } else { Ok(()) }
        }),
        Task::Bench { rounds, seconds, no_vm } => bench(rounds, seconds, no_vm),
        Task::VmTest { kernel, arch, mode, only } => {
            let mut totals = results::Tally::default();
            let result = vm_test(&mut totals, kernel.as_deref(), arch, mode, only);
            println!("{}\n{}", timing::slowest(&totals.took, 10), timing::slowest_events(&totals.took, "flood"));
            println!("\nvm-test: {}", totals.line());
            result
        }
    };
    if let Err(error) = result {
        let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
        say(&format!("error: {}", chain.join(": ")));
        std::process::exit(1);
    }
}

/// `cargo xtask bench`: the host's figures beside bpftrace and tcpdump, then each QEMU kernel's, into
/// docs/benchmarks.md.
fn bench(rounds: usize, seconds: f64, no_vm: bool) -> Result<()> {
    if !is_root() {
        bail!("the benchmark loads eBPF programs and creates network namespaces: run `cargo xtask bench` as root");
    }
    prereq::ensure_test()?;
    let dists = dist::build(&[Arch::X86_64])?;
    let (udptrace, bench) = (dists[0].udptrace.clone(), dists[0].bench.clone());
    let host_md = workspace_root().join("target/bench-host.md");
    say(&format!("benchmarking on this host: {rounds} rounds of {seconds} s per variant"));
    prereq::run_visible(
        Command::new(&bench)
            .arg("--udptrace")
            .arg(&udptrace)
            .args(["--rounds", &rounds.to_string(), "--seconds", &seconds.to_string(), "--tcpdump", "--bpftrace"])
            .arg(workspace_root().join("bench/errors.bt"))
            .arg("--out")
            .arg(&host_md),
    )?;
    let mut doc = String::from(BENCH_INTRO);
    doc.push_str(&std::fs::read_to_string(&host_md)?);
    if !no_vm {
        say("benchmarking inside the QEMU kernels (emulated: ratios only)");
        let plan = vm::Plan {
            arches: vec![Arch::X86_64],
            suite: false,
            bench: format!("{},{}", rounds.min(3), seconds.min(1.0)),
            ..vm::Plan::default()
        };
        for (package, run) in vm::vm_test(binaries_of(&dists), None, &plan)? {
            doc.push_str(&format!("\n## {package} under QEMU (TCG, emulated: compare the ratios, not the rates)\n\n"));
            let markdown: Vec<&str> =
                run.bench.iter().map(String::as_str).skip_while(|l| !l.starts_with("## ")).skip(1).collect();
            doc.push_str(&markdown.join("\n"));
            doc.push('\n');
        }
    }
    let path = workspace_root().join("docs/benchmarks.md");
    std::fs::create_dir_all(path.parent().expect("docs/"))?;
    std::fs::write(&path, doc)?;
    say(&format!("wrote {}", path.display()));
    Ok(())
}

const BENCH_INTRO: &str = "# What udptrace costs

Written by `cargo xtask bench` (the harness, the traffic and the bpftrace script are in the repository:
`udptrace-scenarios/src/bench/`, `udptrace-scenarios/src/bench_traffic.rs`, `bench/errors.bt`). Two network
namespaces joined by veth. The traffic runs in processes of its own, not in the harness: a sender in the
client's namespace sends 32-byte datagrams in a tight loop for the round's seconds and times itself; the
harness starts it, waits, and reads its count.

- Hot path: `send()` on a connected socket to an open port. The receiver, another process, in the server's
  namespace, takes the datagrams with `recvmmsg()`, 64 a call at most, into a 64 MiB receive buffer
  (`SO_RCVBUFFORCE`), and drains until nothing has come for 200 ms after the sender stops. That it kept up
  is checked, not assumed: the table says per variant whether every datagram sent was received and the
  server's `Udp: RcvbufErrors` and `InErrors` did not move. BPF statistics are on: every program udptrace
  loaded is listed with its runs per datagram sent, zero runs included; a program that ran for every
  datagram would show about 1.
- Error path: `send_to()` on an unconnected socket to a closed port, with the server's ICMP rate limits off
  (`icmp_ratemask` 0): every datagram draws a port unreachable, and none reaches the sender as an error, so
  nothing interrupts the loop. udptrace runs three ways in each mode: as a user starts it, a text line per
  event; with `--quiet`; and with `--summary 1`. Beside it: the bpftrace script on the same tracepoints, and
  `tcpdump -i any icmp -w FILE` in the server's namespace. udptrace's events plus its lost count must equal
  the port unreachables the kernel counted, in every round. Beside them, what naming a socket's owner costs,
  in each mode whose socket_error hook attaches: the sender's socket connected to the closed port, so that
  the kernel tells it of every port unreachable (its next send then fails with ECONNREFUSED, not counted as
  sent), with no tracer (`no tracer, connected sender`) and with udptrace `--json --netns CLIENT`, a
  `socket_error` per datagram, read and counted by the harness. With the socket opened after udptrace
  started, the programs recorded its owner; with it opened before (`socket older than udptrace`: the sender
  opens it, then waits for the word to send while udptrace starts), udptrace's privileged helper looks the
  owner up in /proc, a request over the socketpair per event (its cached scan, then the holder's
  `/proc/PID/fd/N` and `/proc/PID/stat` read again). Each event's `holders`, which only /proc sets, holds
  each round to the way it claims: every event names an owner, and /proc named all of them or none. The
  accounting table gives udptrace's CPU time per event, its helper's included: where udptrace cannot keep up,
  its buffer fills and the records lost cost the programs less, so the cost of a request shows there and in
  the lost count rather than in the rate.
- Drop floods: the hot path's connected sender to a receiver that never reads (`SO_RCVBUF` 4 KiB), so that
  nearly every datagram is dropped at its full buffer; and on this host the same over 10,000 flows, each
  datagram from the next source port in turn (written with its UDP header to a raw socket), more flows than
  the programs' per-CPU caches and their table of flows shown this second hold. Beside udptrace (a text line
  per event, `--json`, `--quiet`, `--summary 1`): the bpftrace one-liner an operator would type,
  `tracepoint:skb:kfree_skb { @[args->reason] = count(); }`, whose ratio is udptrace's goal. udptrace's drops
  shown plus its lost count must equal the server's `Udp: RcvbufErrors`.
- Conntrack: the error path's `--quiet` and owner-recorded rows, and the one-flow drop flood's `--json`,
  again on flows conntrack tracks but translates by nothing (`, tracked`: a `ct state` rule in the
  input and output chains of both namespaces) and on flows it translates (`, DNAT`: sent to a Service
  address that the client's OUTPUT and then the server's PREROUTING translate, so that every program reads
  a translated entry on its side), each beside no tracer on the same flows. The rules are added before each
  such measurement and deleted after it. A table sets each program's cost per run on those flows beside its
  cost on untracked ones: the goal on tracked flows is at most 1.10 times, the ratio being the median of the
  rounds' ratios.

Each round measures every variant once, in a rotating order; the tables give medians over rounds, and each
variant's ratio to no tracer (on the same flows) is the median of its per-round ratios, so that a machine's
drift between rounds cancels out. udptrace has `--netns SERVER`, but for the socket owner's rows, `--netns CLIENT`. Started as a user starts it, it hands over a record per
error and prints a text line for each, to a pipe that is read and dropped (the hot path runs it so too);
with `--quiet` (nothing printed) or `--summary 1` (a JSON table a second, to a pipe that is read), only
counts are wanted, and its programs count in the kernel instead of handing over a record per error. The
bpftrace script prints one line per event to a pipe that is read and dropped; tcpdump writes the ICMP packets
to a file. The QEMU kernels record fentry and kprobe the same way, emulated (TCG) on one CPU that the sender,
the receiver and the tracer share: compare their ratios, not their rates.

";

/// `cargo xtask demo`: the dist binary, shown by `udptrace-demo`.
fn demo(no_pause: bool) -> Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and loads eBPF programs: run `cargo xtask demo` as root");
    }
    prereq::ensure_packages(&["iproute2", "nftables", "netcat-openbsd"])?;
    let dists = dist::build(&[Arch::X86_64])?;
    let dist = &dists[0];
    let demo = &dist.demo;
    let mut command = Command::new(demo);
    command.arg("--udptrace").arg(&dist.udptrace);
    if no_pause {
        command.arg("--no-pause");
    }
    let error = command.exec();
    bail!("could not run {}: {error}", demo.display())
}

fn run(args: Vec<String>) -> Result<()> {
    if !is_root() {
        bail!("udptrace loads eBPF programs and needs root (CAP_BPF and CAP_PERFMON): run `cargo xtask run` as root");
    }
    let binary = build()?;
    say(&format!("running {} {}", binary.display(), args.join(" ")));
    let error = Command::new(&binary).args(&args).exec();
    bail!("could not run {}: {error}", binary.display())
}
