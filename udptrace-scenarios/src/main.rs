//! `udptrace-scenarios --udptrace PATH --probe MODE [--buffer ring|perf] [--only NAME[,NAME...]] [--require-attach]
//! [--with-check]`:
//! runs the scenario suite against a udptrace binary and prints one line per check and the totals. Exits 1
//! if any check failed. `udptrace-scenarios helper ...` is the suite's own client process.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, ValueEnum};
use udptrace_scenarios::{Config, positive_seconds, run};

#[derive(Parser)]
#[command(name = "udptrace-scenarios", about = "The scenario suite, against a udptrace binary")]
struct Args {
    /// The udptrace binary to test.
    #[arg(long, value_name = "PATH")]
    udptrace: PathBuf,
    /// The mode every udptrace of the suite is forced into.
    #[arg(long, value_enum, value_name = "MODE")]
    probe: Mode,
    /// udptrace's `--buffer`.
    #[arg(long, value_enum, default_value = "ring", value_name = "KIND")]
    buffer: Buffer,
    /// Only scenarios whose name contains NAME (or is NAME, written `=NAME`); several, separated by commas.
    #[arg(long, value_name = "NAME")]
    only: Option<String>,
    /// Leave out the scenario NAME, which reports `skip, because WHY` (another run of the same kernel proves
    /// it); repeatable.
    #[arg(long, value_name = "NAME=WHY", value_parser = name_and_why)]
    except: Vec<(String, String)>,
    /// How long to wait for each event (longer under emulation).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    event_timeout: u64,
    /// How long to watch for an event that must not come. It must outlast a second's counted drops and the
    /// slowest event of the run (each scenario's `took` line says its own).
    #[arg(long, value_name = "SECS", default_value_t = 3.0, value_parser = positive_seconds)]
    quiet_period: f64,
    /// Every hook must attach in MODE: a hook that cannot is a failure, not a skip.
    #[arg(long)]
    require_attach: bool,
    /// Also run the `udptrace check` scenarios (each loads udptrace's programs anew: a few runs are enough).
    #[arg(long)]
    with_check: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    #[value(name = "fentry")]
    FEntry,
    Kprobe,
    Tracepoint,
}

#[derive(Clone, Copy, ValueEnum)]
enum Buffer {
    Ring,
    Perf,
}

fn name_and_why(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, why)) if !name.is_empty() && !why.trim().is_empty() => Ok((name.to_owned(), why.to_owned())),
        _ => Err(format!("`{text}` is not NAME=WHY")),
    }
}

fn main() -> ExitCode {
    let all: Vec<String> = std::env::args().collect();
    if all.get(1).is_some_and(|a| a == "helper") {
        return udptrace_scenarios::helper::main(&all[2..]);
    }
    let args = Args::parse();
    let Ok(helper) = std::env::current_exe() else {
        eprintln!("udptrace-scenarios: cannot find this program's own path");
        return ExitCode::from(2);
    };
    let mode = args.probe.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
    let timeout = Duration::from_secs(args.event_timeout);
    let config = Config {
        udptrace: args.udptrace,
        helper,
        mode: mode.clone(),
        buffer: args.buffer.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default(),
        only: args.only,
        except: args.except,
        event_timeout: timeout,
        quiet_period: Duration::from_secs_f64(args.quiet_period),
        require_attach: args.require_attach,
        check_command: args.with_check,
    };
    let report = run(&config, &format!("{mode:<11} "));
    println!("{}", report.totals());
    if report.failed() == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
