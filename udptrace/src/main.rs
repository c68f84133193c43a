//! udptrace: the kernel's UDP/ICMP error paths, traced.
//!
//! Data flow, one module per stage: `loader` (attach ladder of `hooks`, offsets from `btf`) ->
//! ring buffer -> `event` (decode) -> `cause` (enrich) -> `render` (text / JSON), driven by `trace`.

mod btf;
mod cause;
mod cli;
mod counters;
mod event;
mod explain;
mod filter;
mod hooks;
mod loader;
mod metrics;
mod owner;
mod privileges;
mod probes;
mod render;
mod summary;
mod trace;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;

use crate::{
    cli::{Cli, Command},
    loader::KernelFacts,
};

fn main() -> ExitCode {
    // Bad usage exits 2 here, with clap's message.
    let cli = Cli::parse();
    if let Err(error) = cli.validate() {
        error.exit();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("udptrace: error: {}", loader::one_line(&error));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Completions { shell }) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "udptrace", &mut std::io::stdout());
            Ok(())
        }
        Some(Command::Probes) => {
            privileges::check()?;
            probes::print(&KernelFacts::gather()?, cli.verbose)
        }
        None => {
            privileges::check()?;
            trace(cli, &KernelFacts::gather()?)
        }
    }
}

fn trace(cli: Cli, facts: &KernelFacts) -> Result<()> {
    let filter = cli.filter();
    let config = udptrace_common::Config {
        filter: filter.for_kernel(),
        buffer: match cli.buffer {
            cli::Buffer::Ring => udptrace_common::buffer::RING,
            cli::Buffer::Perf => udptrace_common::buffer::PERF,
        },
        _pad0: [0; 7],
    };
    let mut ebpf = loader::load_object(facts, &config)?;
    let outcomes = loader::attach_all(&mut ebpf, facts, cli.probe);
    loader::require_attached(&outcomes, cli.probe)?;

    let mut modes = Vec::new();
    for outcome in &outcomes {
        match outcome.attached {
            Some(mode) => modes.push(format!("{}={mode}", outcome.hook.name)),
            None => eprintln!("udptrace: warning: {} not traced: {}", outcome.hook.name, probes::why_not(outcome)),
        }
        if cli.verbose {
            probes::print_failures(outcome);
        }
    }

    // Tracepoint mode sees no rate limit: read the kernel's counters instead, from before `tracing` on.
    let icmp_send_mode = outcomes.iter().find(|o| o.hook.name == "icmp_send").and_then(|o| o.attached);
    let counters = (icmp_send_mode == Some(hooks::AttachMode::Tracepoint)).then(counters::Watcher::start);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let metrics = cli.metrics.map(|addr| {
        let hooks: Vec<(&'static str, &'static str)> =
            outcomes.iter().filter_map(|o| o.attached.map(|mode| (o.hook.name, mode.as_str()))).collect();
        (addr, metrics::Metrics::new(&hooks, cli.metrics_addresses))
    });
    let server = match &metrics {
        Some((addr, m)) => Some(runtime.block_on(metrics::serve(*addr, m.clone()))?),
        None => None,
    };
    let serving = cli.metrics.map(|addr| format!("; metrics on http://{addr}/metrics")).unwrap_or_default();
    let banner = format!("udptrace: tracing ({}){serving}; Ctrl-C to stop", modes.join(", "));
    let options = trace::Options {
        json: cli.json,
        duration: cli.duration,
        count: cli.count,
        verbose: cli.verbose,
        counters,
        filter,
        summary: cli.summary,
        buffer: cli.buffer,
        color: !cli.json && render::color_wanted(),
        quiet: cli.quiet,
        metrics: metrics.map(|(_, m)| m),
        banner,
    };
    let totals = runtime.block_on(trace::run(ebpf, options))?;
    if let Some(server) = server {
        server.abort();
    }
    eprintln!("{}", totals.closing_line());
    Ok(())
}
