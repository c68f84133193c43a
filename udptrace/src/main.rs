//! udptrace: the kernel's UDP/ICMP error paths, traced. The modules live in the library (`lib.rs`), so that
//! the fuzz targets (`fuzz/`) reach the parsers; this file is the command.

use std::process::ExitCode;

/// In the static build (musl), mimalloc: musl's allocator made the error flood printing a line per event a
/// fifth slower than the glibc build, and the start slower (docs/benchmarks.md).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's options, by their number in its `mimalloc.h` (`mi_option_e`, mimalloc 3.x), which
/// libmimalloc-sys does not name: `_mi_option_last` pins the numbering.
#[cfg(target_env = "musl")]
mod mi_option {
    pub const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    pub const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
    const _: () = assert!(libmimalloc_sys::_mi_option_last == 47, "mimalloc's options were renumbered");
}

/// mimalloc, told to keep little: the start parses the kernel's BTF twice (aya's loader, then its view for
/// the tracepoint and fentry programs), tens of MiB freed at once. By default mimalloc purges what is freed
/// 10 ms later and backs its arena with transparent huge pages: the second parse then lands beside the
/// first's pages still resident, and every 2 MiB page touched is resident whole, in the tracer and in the
/// helper that forks from it. Purged at once (MADV_DONTNEED, which the system-call filter allows) and in
/// 4 KiB pages: peak 73 -> 35 MiB, both processes while tracing 30 -> 19 MiB (on the development host).
/// mimalloc decides on huge pages when it starts, before `main`: the process asks the kernel for none.
fn keep_little_memory() {
    #[cfg(target_env = "musl")]
    // SAFETY: options set by value, and a prctl on this process; no thread runs yet.
    unsafe {
        libmimalloc_sys::mi_option_set(mi_option::PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(mi_option::ALLOW_THP, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Hands the start's memory back to the kernel before the helper forks (what the fork copies stays resident
/// in both): glibc's allocator trims its heap as it frees, mimalloc keeps freed pages for reuse until told.
fn release_start_memory() {
    #[cfg(target_env = "musl")]
    // SAFETY: a call without pointers; every thread's heap stays valid.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

use anyhow::{Context as _, Result};
use clap::Parser as _;

use udptrace::{
    check,
    cli::{Cli, Command, PcapTarget},
    errors::one_line,
    kernel::{
        loader::{HookOutcome, KernelFacts},
        privileges, probes,
    },
    output::{self, Sink, json::JsonSink, metrics, summary::SummarySink, text::TextSink},
    pipeline::session,
    privsep, trace,
};

fn main() -> ExitCode {
    keep_little_memory();
    keep_large_allocations_apart();
    // Bad usage exits 2 here, with clap's message on one line.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => usage_error(&error),
    };
    if let Err(error) = cli.validate() {
        usage_error(&error);
    }
    if let Some(Command::Check(args)) = &cli.command {
        // The state is the exit status.
        return match check::run(&args.check(cli.json, cli.verbose)) {
            Ok(state) => ExitCode::from(state.exit_code()),
            Err(error) => {
                eprintln!("udptrace: error: {}", one_line(&error));
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("udptrace: error: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// Start-up reads the kernel's BTF twice (udptrace's reader, then aya's loader, which parses it whatever
/// it is told), a few MiB each, and frees it. glibc serves such blocks with their own mappings, but after
/// the first is freed it raises that threshold, and the next ones come from the heap: there a growing
/// vector is copied (old and new both resident) and what is freed stays resident. A fixed threshold keeps
/// every large block in its own mapping, returned to the kernel when freed: a third less peak memory.
fn keep_large_allocations_apart() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt changes a tunable of glibc's allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Help and the version as clap prints them; a usage error on one line (clap's message without its usage
/// and hint lines), exit status 2.
fn usage_error(error: &clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        error.exit();
    }
    eprintln!("udptrace: {}", usage_line(&error.render().to_string()));
    std::process::exit(2);
}

/// `error: ...` and the lines that continue it, up to clap's `Usage:` or its hint, joined.
fn usage_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Completions { shell }) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "udptrace", &mut std::io::stdout());
            Ok(())
        }
        Some(Command::Manpages { dir }) => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing manual pages into {}", dir.display()))
        }
        Some(Command::Check(_)) => unreachable!("main runs the check"),
        Some(Command::Probes) => {
            privileges::check()?;
            probes::print(&KernelFacts::gather()?, cli.verbose)
        }
        None => {
            privileges::check()?;
            trace(cli, KernelFacts::gather()?)
        }
    }
}

/// `udptrace` without a command: trace until Ctrl-C, `--duration` or `--count`.
fn trace(cli: Cli, facts: KernelFacts) -> Result<()> {
    // Where only counts are wanted, the programs count in the kernel instead of handing over a record per
    // error; `--count` stops after a number of events, so it needs them one by one.
    let setup = trace::Setup {
        filter: cli.filter(),
        buffer: cli.buffer.into(),
        buffer_size: cli.buffer_size,
        owner_records: cli.owner_records,
        modes: cli.probe.modes(),
        asked: cli.probe.describe(),
        verbose: cli.verbose,
        counts_only: (cli.quiet || cli.summary.is_some()) && cli.count.is_none() && cli.pcap.is_none(),
        dns_ports: cli.dns_ports(),
        pcap_snaplen: if cli.pcap.is_some() { cli.pcap_snaplen } else { 0 },
    };
    let tracing = trace::Tracing::start(setup, facts)?;
    release_start_memory();
    for line in &tracing.not_traced {
        eprintln!("udptrace: warning: {line}");
    }
    let trace::Tracing {
        runtime,
        source,
        mut parts,
        outcomes,
        attached,
        not_traced: _,
        programs: _programs,
        cgroup_links: _cgroup_links,
        maps,
        misses,
    } = tracing;
    let (mut sinks, server) = sinks(&cli, &outcomes)?;
    // Attached and bound: from here on this process parses what the network sends and serves HTTP, as a
    // user of no privilege; what still needs one is asked of the helper. The metrics thread starts after.
    let helper = privsep::split::after_attach(maps, misses, cli.verbose)?;
    parts.use_helper(&helper);
    // The packets' file is the unprivileged tracer's: created by it, 0600.
    let pcap = match cli.pcap.clone() {
        Some(target) => {
            let rotation = output::pcap::Rotation { file_size: cli.pcap_file_size, files: cli.pcap_files };
            let mut pcap = output::pcap::PcapSink::new(target, cli.pcap_snaplen, rotation);
            pcap.open()?;
            let pcap = std::rc::Rc::new(std::cell::RefCell::new(pcap));
            sinks.push(Box::new(pcap.clone()));
            Some(pcap)
        }
        None => None,
    };
    let _serving = server.map(metrics::Server::start).transpose()?;
    let serving = cli.metrics.map(|addr| format!("; metrics on http://{addr}/metrics")).unwrap_or_default();
    let options = session::Options {
        duration: cli.duration,
        count: cli.count,
        verbose: cli.verbose,
        banner: Some(format!("udptrace: tracing ({}){serving}; Ctrl-C to stop", attached.join(", "))),
        stop: None,
        helper: Some(helper.clone()),
        require_helper: cli.require_helper,
    };
    let totals = runtime.block_on(session::run(source, parts, sinks, options));
    helper.finish();
    let totals = totals?;
    match pcap {
        Some(pcap) => {
            // Closed whole first, if the session stopped without finishing its sinks (an output went away).
            let _ = output::Sink::finish(&mut *pcap.borrow_mut(), std::time::Duration::ZERO);
            eprintln!("{}; {}", totals.closing_line(), pcap.borrow().closing_line());
        }
        None => eprintln!("{}", totals.closing_line()),
    }
    Ok(())
}

/// The sinks the session hands each event to.
type Sinks = Vec<Box<dyn Sink>>;

/// The outputs the options ask for; the metrics server is bound before tracing starts, so that a port in
/// use fails in one line.
fn sinks(cli: &Cli, outcomes: &[HookOutcome]) -> Result<(Sinks, Option<metrics::Server>)> {
    let mut sinks: Sinks = Vec::new();
    let mut server = None;
    if let Some(addr) = cli.metrics {
        let hooks: Vec<(&'static str, &'static str)> =
            outcomes.iter().filter_map(|o| o.attached.map(|mode| (o.hook.name, mode.as_str()))).collect();
        let counters = metrics::Metrics::new(
            &hooks,
            metrics::Cardinality {
                addresses: cli.metrics_addresses,
                dns_names: cli.metrics_dns_names,
                pods: cli.metrics_pods,
            },
        );
        server = Some(metrics::bind(addr, counters.clone())?);
        sinks.push(Box::new(metrics::MetricsSink(counters)));
    }
    if !cli.quiet {
        // With `--pcap -` standard output carries the pcapng alone: the lines go to standard error.
        if cli.pcap == Some(PcapTarget::Stdout) {
            sinks.push(shown(cli, std::io::stderr()));
        } else {
            sinks.push(shown(cli, std::io::stdout()));
        }
    }
    Ok((sinks, server))
}

/// The text, JSON or summary output, on `out`.
fn shown<W: std::io::Write + std::io::IsTerminal + 'static>(cli: &Cli, out: W) -> Box<dyn Sink> {
    match (cli.summary, cli.json) {
        (Some(period), json) => Box::new(SummarySink::new(out, json, period)),
        (None, true) => Box::new(JsonSink::new(out)),
        (None, false) => {
            let color = output::text::color_wanted(&out);
            Box::new(TextSink::new(out, color))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    #[test]
    fn usage_errors_are_one_line() {
        for args in [&["udptrace", "check"][..], &["udptrace", "check", "host"], &["udptrace", "--port", "0"]] {
            let error = super::Cli::try_parse_from(args).unwrap_err();
            let line = super::usage_line(&error.render().to_string());
            assert!(line.starts_with("error: ") && !line.contains('\n'), "{args:?}: {line}");
            assert!(!line.contains("For more information"), "{line}");
        }
        let missing = super::Cli::try_parse_from(["udptrace", "check"]).unwrap_err();
        assert!(super::usage_line(&missing.render().to_string()).contains("<HOST:PORT>"));
    }

    /// Every option's value parser, fed many hostile values (multi-byte and format characters, signs, huge
    /// numbers, control characters, separators), through clap as `main` parses: no panic, and each error one line
    /// starting `error: `. Deterministic: the same inputs every run.
    #[test]
    fn hostile_values_get_one_line_errors() {
        const PIECES: &[&str] = &[
            "0",
            "1",
            "9",
            "a",
            "f",
            "F",
            "x",
            "z",
            ".",
            ":",
            "/",
            "[",
            "]",
            "-",
            "+",
            " ",
            "\t",
            "\n",
            "\0",
            "é",
            "€",
            "𝄞",
            "\u{202e}",
            "K",
            "M",
            "e",
            "inf",
            "NaN",
            "ECONNREFUSED",
            "::1",
            "10.0.0.1",
            "255",
            "65535",
            "4294967296",
            "99999999999999999999",
            "%",
            "\\",
            "'",
            "\"",
        ];
        let options: &[&[&str]] = &[
            &["--port"],
            &["--pid"],
            &["--addr"],
            &["--errno"],
            &["--netns"],
            &["--comm"],
            &["--duration"],
            &["--summary"],
            &["--metrics"],
            &["--buffer-size"],
            &["--count"],
            &["check"],
            &["check", "10.0.0.1:53", "--payload"],
            &["check", "10.0.0.1:53", "--dns"],
            &["check", "10.0.0.1:53", "--count"],
            &["check", "10.0.0.1:53", "--timeout"],
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..400 {
            let length = next() % 12;
            let value: String = (0..length).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
            for option in options {
                let args: Vec<&str> =
                    std::iter::once("udptrace").chain(option.iter().copied()).chain([value.as_str()]).collect();
                let error = match super::Cli::try_parse_from(&args) {
                    Ok(cli) => match cli.validate() {
                        Ok(()) => continue,
                        Err(error) => error,
                    },
                    Err(error) => error,
                };
                let line = super::usage_line(&error.render().to_string());
                assert!(line.starts_with("error: ") && !line.contains('\n'), "{args:?}: {line:?}");
            }
        }
    }
}
