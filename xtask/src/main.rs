//! `cargo xtask`: udptrace's build, run and test commands.
//!
//! - `cargo xtask run [-- ARGS]`: install what is missing, build, run udptrace as root with ARGS.
//! - `cargo xtask test`: install what is missing, then every test: unit tests, the root scenario suite on
//!   this host (inside `cargo test`).

mod prereq;
mod tally;
mod vm;

use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

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
    /// Build, then run udptrace as root with ARGS (after `--`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Every test: unit tests (no root), the scenario suite on this host (root), the QEMU kernel matrix.
    Test,
    /// The scenario suite in fentry, kprobe and tracepoint modes inside Debian's 6.1 and 6.12 kernels.
    VmTest {
        /// Only this kernel series (6.1 or 6.12).
        #[arg(long)]
        series: Option<String>,
    },
}

pub fn say(message: &str) {
    eprintln!("xtask: {message}");
}

pub fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_owned()
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.current_dir(workspace_root()).env("PATH", prereq::path_with_cargo_bin());
    command
}

fn build() -> Result<PathBuf> {
    prereq::ensure_build()?;
    say("building udptrace (release)");
    prereq::run_visible(cargo().args(["build", "--release", "-p", "udptrace"]))?;
    Ok(workspace_root().join("target/release/udptrace"))
}

/// The release binaries the VM runs.
fn build_release() -> Result<(PathBuf, PathBuf)> {
    say("building udptrace and udptrace-scenarios (release)");
    prereq::run_visible(cargo().args(["build", "--release", "-p", "udptrace", "-p", "udptrace-scenarios"]))?;
    let target = workspace_root().join("target/release");
    Ok((target.join("udptrace"), target.join("udptrace-scenarios")))
}

/// Runs the QEMU matrix, prints it, and adds its checks to `totals`.
fn vm_test(totals: &mut tally::Tally, series: Option<&str>) -> Result<()> {
    prereq::ensure_build()?;
    let runs = vm::vm_test(build_release, series)?;
    println!("\n{}", vm::matrix(&runs));
    let mut problems = Vec::new();
    for (package, run) in &runs {
        for check in &run.checks {
            match check.outcome.split([',', ':']).next() {
                Some("pass") => totals.passed += 1,
                Some("skip") => totals.skipped += 1,
                _ => totals.failed += 1,
            }
        }
        problems.extend(run.problems().into_iter().map(|p| format!("{package}: {p}")));
    }
    if !problems.is_empty() {
        bail!("the kernel matrix failed:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

fn test() -> Result<()> {
    prereq::ensure_test()?;
    if !is_root() {
        say("not root: the scenario suites will report themselves skipped (they need root for namespaces and eBPF)");
    }
    say("running unit tests and the host scenario suite (tracepoint mode)");
    let mut totals = tally::Tally::default();
    let cargo_ok = tally::run_and_tally(cargo().args(["test", "--no-fail-fast"]), &mut totals)?;
    let vm = if is_root() {
        say("running the QEMU kernel matrix");
        vm_test(&mut totals, None)
    } else {
        say("skipped the QEMU kernel matrix, because it needs root (apt, namespaces and eBPF inside the VM)");
        totals.skipped += 1;
        Ok(())
    };
    println!("\ntests: {}", totals.line());
    vm?;
    if !cargo_ok || totals.failed > 0 {
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
        Task::Run { args } => run(args),
        Task::Test => test(),
        Task::VmTest { series } => {
            let mut totals = tally::Tally::default();
            let result = vm_test(&mut totals, series.as_deref());
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

fn run(args: Vec<String>) -> Result<()> {
    if !is_root() {
        bail!("udptrace loads eBPF programs and needs root (CAP_BPF and CAP_PERFMON): run `cargo xtask run` as root");
    }
    let binary = build()?;
    say(&format!("running {} {}", binary.display(), args.join(" ")));
    let error = Command::new(&binary).args(&args).exec();
    bail!("could not run {}: {error}", binary.display())
}
