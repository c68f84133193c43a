//! The command line (README: a public contract, keep the spellings).

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::loader::ProbeChoice;

#[derive(Debug, Parser)]
#[command(
    name = "udptrace",
    version,
    about = "Which UDP socket got which ICMP error, which errno, whether the application saw it, and why the \
             other side sent it: traced in the kernel, without packet capture.",
    after_help = "Examples:\n  udptrace                      trace until Ctrl-C, one line per event\n  udptrace --json --duration 30 NDJSON events for 30 seconds\n  udptrace probes               which hooks attach on this kernel, in which mode"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// One JSON object per line on stdout (NDJSON).
    #[arg(long, global = true)]
    pub json: bool,

    /// Attach mode: `auto` tries fentry, then kprobe, then tracepoint, per hook.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub probe: ProbeChoice,

    /// Stop after SECS seconds (a positive number, fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Verbose: attach details, verifier logs on failure, the kernel stack of each icmp_sent.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Which hooks can attach here, in which mode, and why not.
    Probes,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("`{text}`: the duration must be a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` is too long a duration"))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, error::ErrorKind};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("udptrace").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn accepts_the_documented_options() {
        let cli = parse(&["--json", "--probe", "tracepoint", "--duration", "2.5", "--count", "3", "-v"]).unwrap();
        assert!(cli.json && cli.verbose);
        assert_eq!(cli.probe, ProbeChoice::Tracepoint);
        assert_eq!(cli.duration, Some(Duration::from_millis(2500)));
        assert_eq!(cli.count, Some(3));
        assert!(matches!(parse(&["probes"]).unwrap().command, Some(Command::Probes)));
        assert_eq!(parse(&[]).unwrap().probe, ProbeChoice::Auto);
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["--duration", "-1"][..],
            &["--duration", "0"],
            &["--duration", "soon"],
            &["--duration", "inf"],
            &["--count", "0"],
            &["--count", "-3"],
            &["--probe", "uprobe"],
            &["--no-such-option"],
        ] {
            let err = parse(args).unwrap_err();
            assert_ne!(err.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
