//! A suite run: one udptrace started, each scenario run against it, and the timing lines between.

use std::time::Duration;

use crate::{
    config::Config,
    netns,
    outcome::{Check, Outcome, Report},
    suite, tracer,
};

/// What a scenario or a suite run took, printed as `SCENARIO took SECONDS s, slowest event SECONDS s` after
/// its checks, so that `cargo xtask test` and `cargo xtask vm-test` can say where the time goes. The slowest
/// event is the longest a `socket_error` or `icmp_sent` took from its kernel time to the suite: what a quiet
/// period, watching for an event that must not come, has to outlast.
pub fn took_line(scenario: &str, took: Duration) -> String {
    format!(
        "{scenario:<22} {TOOK:<16} {:.1} s, slowest event {:.2} s",
        took.as_secs_f64(),
        tracer::take_slowest_event().as_secs_f64()
    )
}

/// The word of a timing line, where a check line has its check's name.
pub const TOOK: &str = "took";

/// The udptrace starts of a suite run (programs loaded and attached), printed as
/// `udptrace loads N in SECONDS s, and N check runs in SECONDS s`: under emulation a load costs seconds.
pub fn loads_line(loads: &tracer::Loads) -> String {
    format!(
        "{:<22} {LOADS:<16} {} in {:.1} s, and {} check runs in {:.1} s",
        "udptrace",
        loads.starts,
        loads.start_time.as_secs_f64(),
        loads.checks,
        loads.check_time.as_secs_f64()
    )
}

/// The word of a loads line.
pub const LOADS: &str = "loads";

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

/// Runs every scenario against one udptrace, printing each check as it completes (prefixed with
/// `prefix`).
pub fn run(config: &Config, prefix: &str) -> Report {
    let mut report = Report::default();
    let mut record = |check: Check| {
        println!("{prefix}{check}");
        report.checks.push(check);
    };
    let scenarios: Vec<&suite::Scenario> = suite::SCENARIOS
        .iter()
        .filter(|s| config.only.as_ref().is_none_or(|o| o.split(',').any(|part| selects(part, s.name))))
        .collect();
    let all = |outcome: Outcome| {
        scenarios.iter().map(move |s| Check { scenario: s.name, name: "all", outcome: outcome.clone() })
    };

    if let Some(why) = unable_to_run() {
        all(Outcome::Skip(why)).for_each(&mut record);
        return report;
    }
    netns::sweep_stale();
    let suite_started = std::time::Instant::now();
    let started = std::time::Instant::now();
    let mut tracer = match tracer::Tracer::start(config, &[]) {
        Ok(tracer) => tracer,
        Err(e) => {
            let why = format!("{e:#}");
            // A kernel may lack a hook; a verifier that rejects a program is a defect on every kernel.
            let outcome = if config.require_attach || !why.contains("could attach") || why.contains("verifier rejected")
            {
                Outcome::Fail(why)
            } else {
                Outcome::Skip(format!("nothing attaches in {} mode here: {why}", config.mode))
            };
            all(outcome).for_each(&mut record);
            return report;
        }
    };
    if config.require_attach {
        let outcome = match tracer.not_traced.as_slice() {
            [] => Outcome::Pass,
            missing => Outcome::Fail(missing.join("; ")),
        };
        record(Check { scenario: "udptrace", name: "all_hooks_attach", outcome });
    } else {
        let rejected: Vec<&String> = tracer.not_traced.iter().filter(|l| l.contains("verifier rejected")).collect();
        let outcome = if rejected.is_empty() {
            Outcome::Pass
        } else {
            Outcome::Fail(rejected.iter().map(|l| l.as_str()).collect::<Vec<_>>().join("; "))
        };
        record(Check { scenario: "udptrace", name: "verifier_accepts", outcome });
    }
    println!("{prefix}{}", took_line("udptrace", started.elapsed()));
    // Where only the drop hook attached (tracepoint mode before 5.14: no socket_error or icmp_send hook), the
    // scenarios about socket and ICMP errors have nothing to check.
    let drops_only = tracer.mode_of("socket_error").is_none() && tracer.mode_of("icmp_send").is_none();
    for scenario in &scenarios {
        if let Some((_, why)) = config.except.iter().find(|(name, _)| name == scenario.name) {
            // Not `all`: a mode that must run everything does, counting what another run of it proves.
            record(Check { scenario: scenario.name, name: "elsewhere", outcome: Outcome::Skip(why.clone()) });
            continue;
        }
        if drops_only && !suite::WITH_DROPS_ONLY.contains(&scenario.name) {
            let why = format!("only the udp_dropped hook attached in {} mode here", config.mode);
            record(Check { scenario: scenario.name, name: "all", outcome: Outcome::Skip(why) });
            continue;
        }
        let started = std::time::Instant::now();
        tracer.next_scenario();
        let results =
            (scenario.run)(config, &mut tracer).unwrap_or_else(|e| vec![("setup", Outcome::Fail(format!("{e:#}")))]);
        for (name, outcome) in results {
            record(Check { scenario: scenario.name, name, outcome });
        }
        println!("{prefix}{}", took_line(scenario.name, started.elapsed()));
    }
    // In kprobe mode the kernel skips the programs for an error whose softirq came inside a BPF syscall on
    // the same CPU (a flood read by several udptraces on one CPU does it); in every mode it skips the drop
    // program for a drop in a softirq that interrupted its run for another on the same CPU (a raw
    // tracepoint's recursion guard, `__bpf_trace_run` in kernel/trace/bpf_trace.c, 6.1 to 7.3): those must
    // be reported as lost.
    let guarded = ["socket_error", "icmp_send"].iter().any(|hook| tracer.mode_of(hook) == Some("kprobe"))
        || tracer.mode_of("udp_dropped").is_some();
    let outcome = match tracer.stop() {
        Ok(line) if line.contains(" 0 lost") && line.contains(" 0 unreadable") => Outcome::Pass,
        Ok(line) if guarded && line.contains(" 0 unreadable") => {
            // What it printed while stopping, too.
            tracer.collect_for(std::time::Duration::from_millis(500));
            let reported = tracer.lost_reported();
            if line.contains(&format!(" {reported} lost")) {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("events went missing: {line}, {reported} reported lost"))
            }
        }
        Ok(line) => Outcome::Fail(format!("events went missing: {line}")),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    record(Check { scenario: "udptrace", name: "clean_stop", outcome });
    println!("{prefix}{}", loads_line(&tracer::loads()));
    println!("{prefix}{}", took_line("suite", suite_started.elapsed()));
    report
}

/// Whether `--only`'s `part` selects the scenario `name`: `=NAME` that one alone, else every name containing it.
fn selects(part: &str, name: &str) -> bool {
    match part.strip_prefix('=') {
        Some(exact) => name == exact,
        None => name.contains(part),
    }
}

#[cfg(test)]
mod tests {
    use super::selects;

    #[test]
    fn only_selects_by_part_of_a_name_or_by_a_whole_one() {
        assert!(selects("owner", "owner_thread") && selects("owner", "owner"));
        assert!(selects("=owner", "owner") && !selects("=owner", "owner_thread"));
    }
}
