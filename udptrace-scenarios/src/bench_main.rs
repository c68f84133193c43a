//! `udptrace-bench --udptrace PATH [--modes fentry,kprobe,tracepoint] [--rounds N] [--seconds S]
//! [--bpftrace SCRIPT] [--tcpdump] [--out FILE] [--smoke]`: the benchmark of `udptrace_scenarios::bench`,
//! printed as Markdown (and written to FILE). `--smoke` makes it short and checks only that every part ran
//! and that udptrace accounted for every error: it ends on `bench: N passed, N failed, N skipped`.

use std::{path::PathBuf, process::ExitCode};

use udptrace_scenarios::bench::{Options, Report, run};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        udptrace: PathBuf::new(),
        modes: vec!["fentry".into(), "kprobe".into(), "tracepoint".into()],
        rounds: 5,
        seconds: 2.0,
        bpftrace_script: None,
        tcpdump: false,
    };
    let (mut out, mut smoke) = (None, false);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--smoke" => {
                smoke = true;
                continue;
            }
            "--tcpdump" => {
                options.tcpdump = true;
                continue;
            }
            _ => args.next(),
        };
        let Some(value) = value else { return usage(&format!("{arg} needs a value")) };
        match arg.as_str() {
            "--udptrace" => options.udptrace = value.into(),
            "--modes" => options.modes = value.split(',').map(str::to_owned).collect(),
            "--rounds" => match value.parse() {
                Ok(n) if n > 0 => options.rounds = n,
                _ => return usage(&format!("--rounds takes a positive whole number, not `{value}`")),
            },
            "--seconds" => match value.parse::<f64>() {
                Ok(s) if s > 0.0 && s.is_finite() => options.seconds = s,
                _ => return usage(&format!("--seconds takes a positive number, not `{value}`")),
            },
            "--bpftrace" => options.bpftrace_script = Some(value.into()),
            "--out" => out = Some(PathBuf::from(value)),
            other => return usage(&format!("unexpected argument `{other}`")),
        }
    }
    if options.udptrace.as_os_str().is_empty() {
        return usage("--udptrace is required");
    }
    if smoke {
        options.rounds = 1;
        options.seconds = 0.5;
    }
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        println!("bench: 0 passed, 0 failed, 1 skipped (it needs root: network namespaces and eBPF)");
        return ExitCode::SUCCESS;
    }
    let report = match run(&options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("udptrace-bench: {e:#}");
            println!("bench: 0 passed, 1 failed, 0 skipped");
            return ExitCode::FAILURE;
        }
    };
    let markdown = report.markdown(&header(&options));
    println!("{markdown}");
    if let Some(path) = out
        && let Err(e) = std::fs::write(&path, &markdown)
    {
        eprintln!("udptrace-bench: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if smoke { smoke_checks(&report) } else { ExitCode::SUCCESS }
}

/// What the smoke run checks: that it measured something in every part, and that the events add up.
fn smoke_checks(report: &Report) -> ExitCode {
    let checks = [
        ("hot_path_measured", report.hot.len() > 1, "no udptrace mode was measured on the hot path"),
        (
            "error_path_accounted",
            report.accounted(),
            "udptrace's events and losses do not add up to the kernel's count",
        ),
        ("program_costs_read", !report.programs.is_empty(), "no BPF run-time statistics were read"),
    ];
    let mut failed = 0;
    for (name, ok, why) in checks {
        if ok {
            println!("bench  smoke  {name:<24} pass");
        } else {
            failed += 1;
            println!("bench  smoke  {name:<24} FAIL: {why}");
        }
    }
    println!("bench: {} passed, {failed} failed, 0 skipped", checks.len() - failed);
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn header(options: &Options) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = humantime_date();
    format!(
        "## Kernel {} on {cpus} x {cpu}, {date}\n\n{} rounds of {} s per variant, every variant once per round in a rotating \
         order; medians over rounds.",
        kernel.trim(),
        options.rounds,
        options.seconds
    )
}

/// Today's date (UTC), `YYYY-MM-DD`, without a date crate: from `date`.
fn humantime_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("udptrace-bench: {problem}");
    eprintln!(
        "usage: udptrace-bench --udptrace PATH [--modes fentry,kprobe,tracepoint] [--rounds N] [--seconds S] \
         [--bpftrace SCRIPT] [--tcpdump] [--out FILE] [--smoke]"
    );
    ExitCode::from(2)
}
