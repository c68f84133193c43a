//! The scenario suite on this host, in tracepoint mode (the only mode the development and CI machines
//! allow; fentry and kprobe run in the QEMU matrix, `cargo xtask vm-test`).
//!
//! A custom harness: every check prints pass, FAIL or "skip, because ...", and the closing line counts
//! them. Without root the whole suite is skipped, and says so.

use std::{process::ExitCode, time::Duration};

use udptrace_scenarios::{Config, run};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The owner scenarios run this same binary as a client process of its own.
    if args.get(1).is_some_and(|a| a == "helper") {
        return udptrace_scenarios::helper::main(&args[2..]);
    }
    let Ok(helper) = std::env::current_exe() else {
        eprintln!("scenarios: cannot find this program's own path");
        return ExitCode::FAILURE;
    };
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let mut failed = 0;
    let mut totals = Vec::new();
    // Both buffers: the ring buffer (the default) and the per-CPU perf buffers.
    for buffer in ["ring", "perf"] {
        let config = Config {
            udptrace: env!("CARGO_BIN_EXE_udptrace").into(),
            helper: helper.clone(),
            mode: "tracepoint".to_owned(),
            buffer: buffer.to_owned(),
            only: only.clone(),
            except: Vec::new(),
            event_timeout: Duration::from_secs(10),
            quiet_period: Duration::from_secs(2),
            // tracepoint is the only mode this host has, and every hook has a tracepoint variant.
            require_attach: false,
            // Once per kernel: with the ring buffer (udptrace check uses no other).
            check_command: buffer == "ring",
        };
        println!(
            "\nrunning the scenario suite against {} (tracepoint mode, {buffer} buffer)",
            config.udptrace.display()
        );
        let report = run(&config, &format!("tracepoint/{buffer:<5} "));
        failed += report.failed();
        totals.push(report.totals());
    }
    // One line per run: the test tally adds them up.
    for line in totals {
        println!("\nscenarios: {line}");
    }
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
