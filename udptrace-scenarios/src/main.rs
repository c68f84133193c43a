//! `udptrace-scenarios --udptrace PATH --probe MODE [--buffer ring|perf] [--only NAME] [--require-attach]`: runs the scenario suite against a
//! udptrace binary and prints one line per check and the totals. Exits 1 if any check failed.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use udptrace_scenarios::{Config, run};

fn main() -> ExitCode {
    let all: Vec<String> = std::env::args().collect();
    if all.get(1).is_some_and(|a| a == "helper") {
        return udptrace_scenarios::helper::main(&all[2..]);
    }
    let mut args = std::env::args().skip(1);
    let mut udptrace = None;
    let mut mode = None;
    let mut buffer = "ring".to_owned();
    let mut only = None;
    let mut timeout = Duration::from_secs(10);
    let mut require_attach = false;
    while let Some(arg) = args.next() {
        if arg == "--require-attach" {
            require_attach = true;
            continue;
        }
        match (arg.as_str(), args.next()) {
            ("--udptrace", Some(v)) => udptrace = Some(PathBuf::from(v)),
            ("--probe", Some(v)) => mode = Some(v),
            ("--buffer", Some(v)) => buffer = v,
            ("--only", Some(v)) => only = Some(v),
            ("--event-timeout", Some(v)) => match v.parse() {
                Ok(secs) => timeout = Duration::from_secs(secs),
                Err(_) => return usage(&format!("--event-timeout takes whole seconds, not `{v}`")),
            },
            (other, _) => return usage(&format!("unexpected argument `{other}`")),
        }
    }
    let (Some(udptrace), Some(mode)) = (udptrace, mode) else {
        return usage("--udptrace and --probe are required");
    };
    let Ok(helper) = std::env::current_exe() else {
        return usage("cannot find this program's own path");
    };
    let config = Config {
        udptrace,
        helper,
        mode: mode.clone(),
        buffer,
        only,
        event_timeout: timeout,
        quiet_period: timeout / 4,
        require_attach,
    };
    let report = run(&config, &format!("{mode:<11} "));
    println!("{}", report.totals());
    if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("udptrace-scenarios: {problem}");
    eprintln!(
        "usage: udptrace-scenarios --udptrace PATH --probe fentry|kprobe|tracepoint [--buffer ring|perf] [--only NAME] [--event-timeout SECS] [--require-attach]"
    );
    ExitCode::from(2)
}
