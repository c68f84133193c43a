//! `udptrace-bench --udptrace PATH [--modes fentry,kprobe,tracepoint] [--rounds N] [--seconds S]
//! [--bpftrace SCRIPT] [--tcpdump] [--paths hot,errors,drops,many-flows] [--out FILE] [--smoke]`: the benchmark of `udptrace_scenarios::bench`,
//! printed as Markdown (and written to FILE). `--smoke` makes it short and checks only that every part ran
//! and that udptrace accounted for every error and every drop: it ends on
//! `bench: N passed, N failed, N skipped`.
//!
//! The benchmark runs this binary again for its traffic (`udptrace-bench __traffic ...`, see
//! `udptrace_scenarios::bench_traffic`), so that the sender and the receiver are processes of their own.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use udptrace_scenarios::{
    bench::{Options, Report, run},
    bench_traffic, positive_seconds,
};

#[derive(Parser)]
#[command(name = "udptrace-bench", about = "What udptrace costs, beside bpftrace and tcpdump")]
struct Args {
    /// The udptrace binary to measure.
    #[arg(long, value_name = "PATH")]
    udptrace: PathBuf,
    /// The modes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "fentry,kprobe,tracepoint", value_name = "MODES",
          value_parser = ["fentry", "kprobe", "tracepoint"])]
    modes: Vec<String>,
    /// Rounds per measurement (medians are reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    rounds: u32,
    /// Seconds per variant and round.
    #[arg(long, default_value_t = 2.0, value_parser = positive_seconds, value_name = "S")]
    seconds: f64,
    /// Measure bpftrace running this script beside udptrace.
    #[arg(long, value_name = "SCRIPT")]
    bpftrace: Option<PathBuf>,
    /// Measure `tcpdump -i any icmp -w` beside udptrace.
    #[arg(long)]
    tcpdump: bool,
    /// Also write the Markdown here.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Short, and check only that every part ran and that udptrace accounted for every error and drop.
    #[arg(long)]
    smoke: bool,
    /// The parts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "hot,errors,drops,many-flows", value_name = "PARTS",
          value_parser = ["hot", "errors", "drops", "many-flows"])]
    paths: Vec<String>,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(bench_traffic::COMMAND) {
        return bench_traffic::main(&argv[2..]);
    }
    // The holder of the Kubernetes node of the `in a pod` variants (`kube::Node`).
    if argv.get(1).map(String::as_str) == Some("helper") {
        return udptrace_scenarios::helper::main(&argv[2..]);
    }
    let args = Args::parse();
    let mut options = Options {
        udptrace: args.udptrace,
        modes: args.modes,
        rounds: args.rounds as usize,
        seconds: args.seconds,
        bpftrace_script: args.bpftrace,
        tcpdump: args.tcpdump,
        paths: args.paths,
    };
    let (out, smoke) = (args.out, args.smoke);
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

/// What the smoke run checks: that it measured something in every part, and that the events (and in the
/// drop flood, the drops) add up. Whether
/// the hot path stayed healthy is reported in the tables, not checked: a short emulated run may drop.
fn smoke_checks(report: &Report) -> ExitCode {
    let udptrace_rows = || report.hot.iter().filter(|row| row.label.starts_with("udptrace "));
    let checks = [
        (
            "hot_path_measured",
            report.hot.len() > 1 && report.hot.iter().all(|row| row.sent > 0 && row.received > 0),
            "no udptrace mode was measured on the hot path, or a variant sent or received nothing",
        ),
        (
            "hot_path_programs_read",
            udptrace_rows().count() > 0
                && udptrace_rows().all(|row| report.hot_programs.iter().any(|p| p.variant == row.label)),
            "the hot path listed no udptrace program for a udptrace variant",
        ),
        (
            "error_path_accounted",
            report.accounted(),
            "udptrace's events and losses do not add up to the kernel's count",
        ),
        (
            "summary_accounted",
            report.accounting.iter().any(|a| a.label.ends_with("--summary 1")),
            "no udptrace --summary run was accounted for",
        ),
        (
            "program_costs_read",
            report.error_programs.iter().any(|p| p.runs > 0),
            "no BPF run-time statistics were read on the error path",
        ),
        (
            "drop_flood_measured",
            report.drops.rows.len() > 1 && report.drops.rows.iter().all(flooded),
            "no udptrace mode was measured in the drop flood, or a variant sent nothing or nothing was dropped",
        ),
        (
            "drop_flood_accounted",
            report.drops_accounted()
                && ["--json", "--summary 1"]
                    .iter()
                    .all(|how| report.drops.accounting.iter().any(|a| a.label.ends_with(how))),
            "udptrace's drops and losses in the drop flood do not add up to the kernel's RcvbufErrors",
        ),
        (
            "drop_programs_read",
            report.drops.programs.iter().any(|p| p.runs > 0),
            "no BPF run-time statistics were read in the drop flood",
        ),
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
    let mut passed = checks.len() - failed;
    let mut skipped = 0;
    match &report.many_flows {
        Some(many) if many.accounted() && many.rows.iter().all(flooded) => {
            passed += 1;
            println!("bench  smoke  {:<24} pass", "many_flows_accounted");
        }
        Some(_) => {
            failed += 1;
            println!(
                "bench  smoke  {:<24} FAIL: in the flood over many flows a variant sent or dropped nothing, or \
                 udptrace's drops and losses do not add up to RcvbufErrors",
                "many_flows_accounted"
            );
        }
        None => {
            skipped += 1;
            println!(
                "bench  smoke  {:<24} skip, because --paths leaves out many-flows (under emulation a round per \
                 variant costs a start of udptrace: the host's smoke run measures it)",
                "many_flows_accounted"
            );
        }
    }
    let conntrack_ran = |rows: &[udptrace_scenarios::bench::ProgramCost]| {
        let costs = udptrace_scenarios::bench::conntrack_costs(rows);
        !costs.is_empty()
            && costs.iter().any(|c| c.tracked.is_some_and(|p| p.runs > 0))
            && costs.iter().any(|c| c.translated.is_some_and(|p| p.runs > 0))
    };
    if !report.conntrack_measured {
        skipped += 1;
        println!(
            "bench  smoke  {:<24} skip, because conntrack and NAT could not be set up here (see \"Left out here\")",
            "conntrack_costs_read"
        );
    } else if conntrack_ran(&report.error_programs) && conntrack_ran(&report.drops.programs) {
        passed += 1;
        println!("bench  smoke  {:<24} pass", "conntrack_costs_read");
    } else {
        failed += 1;
        println!(
            "bench  smoke  {:<24} FAIL: no udptrace program ran on the tracked or the translated flows of the \
             error path or the drop flood",
            "conntrack_costs_read"
        );
    }
    println!("bench: {passed} passed, {failed} failed, {skipped} skipped");
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// A drop flood's variant sent and the receiver dropped; a tool that did not start (its rate not a number,
/// and named under "Left out here") is not udptrace's to answer for.
fn flooded(row: &udptrace_scenarios::bench::DropRow) -> bool {
    !row.rate.is_finite() || (row.sent > 0 && row.rcvbuf_errors > 0)
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
    let sharing = if cpus < 2 {
        " One CPU: the sender, the receiver and the tracer take turns on it, so the receiver's work counts in the \
         hot path's rate."
    } else {
        ""
    };
    format!(
        "## Kernel {} on {cpus} x {cpu}, {date}\n\n{} rounds of {} s per variant, every variant once per round in a rotating \
         order; medians over rounds.{sharing}",
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
