//! `udptrace-demo --udptrace PATH [--no-pause]`: the seed's cases, played live (`udptrace_scenarios::demo`).
//! `cargo xtask demo` builds udptrace and runs this as root.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use udptrace_scenarios::demo;

#[derive(Parser)]
#[command(name = "udptrace-demo", about = "The seed's cases played live, with udptrace's output")]
struct Args {
    /// The udptrace binary to show.
    #[arg(long, value_name = "PATH")]
    udptrace: PathBuf,
    /// Go on from case to case without waiting for Enter (the default when stdin is not a terminal).
    #[arg(long)]
    no_pause: bool,
}

fn main() -> ExitCode {
    // The processes the cases play (`helper udp-client --name syslog-client ...`) and the node's mount
    // namespace (`helper node`) are this binary too.
    let all: Vec<String> = std::env::args().collect();
    if all.get(1).is_some_and(|a| a == "helper") {
        return udptrace_scenarios::helper::main(&all[2..]);
    }
    let args = Args::parse();
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("udptrace-demo: it needs root (network namespaces and eBPF)");
        return ExitCode::from(2);
    }
    let options = demo::Options { udptrace: args.udptrace, pause: demo::pausing(!args.no_pause) };
    match demo::run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("udptrace-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}
