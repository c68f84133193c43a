//! udptrace: the kernel's UDP/ICMP error paths, traced.
//!
//! The modules follow the data: `kernel` (the attach table, BTF, loading and attaching the programs) ->
//! the programs' records in a buffer -> `pipeline` (source, decode, enrich, filter, the session loop) ->
//! `output` (the sinks: text, JSON, summary, metrics). `domain` holds the types they all speak; `cli` the
//! command line.

mod check;
mod cli;
mod domain;
mod kernel;
mod output;
mod pipeline;
mod trace;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;

use crate::{
    cli::{Cli, Command},
    kernel::{
        loader::{HookOutcome, KernelFacts},
        privileges, probes,
    },
    output::{Sink, json::JsonSink, metrics, summary::SummarySink, text::TextSink},
    pipeline::session,
};

fn main() -> ExitCode {
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

/// The error chain on one line.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain().map(ToString::to_string) {
        // Libraries often repeat their cause in their own message: say each thing once.
        if !parts.last().is_some_and(|previous| previous.ends_with(&cause) || previous.contains(&cause)) {
            parts.push(cause);
        }
    }
    parts.join(": ")
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Completions { shell }) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "udptrace", &mut std::io::stdout());
            Ok(())
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
        modes: cli.probe.modes(),
        asked: cli.probe.describe(),
        verbose: cli.verbose,
        counts_only: (cli.quiet || cli.summary.is_some()) && cli.count.is_none(),
    };
    let tracing = trace::Tracing::start(setup, facts)?;
    for line in &tracing.not_traced {
        eprintln!("udptrace: warning: {line}");
    }
    let trace::Tracing { runtime, source, stages, outcomes, attached, not_traced: _, programs: _programs } = tracing;
    let (sinks, server) = runtime.block_on(sinks(&cli, &outcomes))?;
    let serving = cli.metrics.map(|addr| format!("; metrics on http://{addr}/metrics")).unwrap_or_default();
    let options = session::Options {
        duration: cli.duration,
        count: cli.count,
        verbose: cli.verbose,
        banner: Some(format!("udptrace: tracing ({}){serving}; Ctrl-C to stop", attached.join(", "))),
        stop: None,
    };
    let totals = runtime.block_on(session::run(source, stages, sinks, options))?;
    if let Some(server) = server {
        server.abort();
    }
    eprintln!("{}", totals.closing_line());
    Ok(())
}

/// The outputs the options ask for; the metrics server is bound before tracing starts, so that a port in
/// use fails in one line.
async fn sinks(
    cli: &Cli,
    outcomes: &[HookOutcome],
) -> Result<(Vec<Box<dyn Sink>>, Option<tokio::task::JoinHandle<()>>)> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let mut server = None;
    if let Some(addr) = cli.metrics {
        let hooks: Vec<(&'static str, &'static str)> =
            outcomes.iter().filter_map(|o| o.attached.map(|mode| (o.hook.name, mode.as_str()))).collect();
        let counters = metrics::Metrics::new(&hooks, cli.metrics_addresses);
        server = Some(metrics::serve(addr, counters.clone()).await?);
        sinks.push(Box::new(metrics::MetricsSink(counters)));
    }
    if !cli.quiet {
        let stdout = std::io::stdout();
        let shown: Box<dyn Sink> = match (cli.summary, cli.json) {
            (Some(period), json) => Box::new(SummarySink::new(stdout, json, period)),
            (None, true) => Box::new(JsonSink::new(stdout)),
            (None, false) => Box::new(TextSink::new(stdout, output::text::color_wanted())),
        };
        sinks.push(shown);
    }
    Ok((sinks, server))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

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

    /// The modules, by path (`pipeline::session`), and the modules of this crate each one names.
    fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root.clone()];
        let mut graph = BTreeMap::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Vec<String> =
                relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "main")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Test code may reach anywhere; the modules' own code is what must not go in circles.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            graph.insert(module.join("::"), references(code, &module));
        }
        // A path names the longest module it starts with (`kernel::tables::errno_name` is `kernel::tables`).
        let modules: Vec<String> = graph.keys().cloned().collect();
        for uses in graph.values_mut() {
            *uses = uses
                .iter()
                .filter_map(|path| modules.iter().filter(|m| is_within(path, m)).max_by_key(|m| m.len()).cloned())
                .collect();
        }
        graph
    }

    /// `path` is `module` or something inside it.
    fn is_within(path: &str, module: &str) -> bool {
        !module.is_empty() && (path == module || path.starts_with(&format!("{module}::")))
    }

    /// The lower-case paths `code` (of module `here`) names through `crate::` and `super::`.
    fn references(code: &str, here: &[String]) -> BTreeSet<String> {
        let known = ["check", "cli", "domain", "kernel", "output", "pipeline", "trace"];
        let mut found = BTreeSet::new();
        let flat = code.replace(['\n', ' '], "");
        for (prefix, base) in [("crate::", Vec::new()), ("super::", here[..here.len().saturating_sub(1)].to_vec())] {
            let mut rest = flat.as_str();
            while let Some(at) = rest.find(prefix) {
                rest = &rest[at + prefix.len()..];
                for path in expand(rest) {
                    let mut module = base.clone();
                    module.extend(path.into_iter().take_while(|p| p.chars().next().is_some_and(char::is_lowercase)));
                    let path = module.join("::");
                    if module.first().is_some_and(|m| known.contains(&m.as_str())) && path != here.join("::") {
                        found.insert(path);
                    }
                }
            }
        }
        found
    }

    /// The paths of a `use` tree that starts `rest`: `a::{b, c::d}` -> [a::b, a::c::d] (module names only).
    fn expand(rest: &str) -> Vec<Vec<String>> {
        let end = rest.find([';', ')', ',', '}', '(', '<', '!', '.', '&', '=', '|', '[']).unwrap_or(rest.len());
        let (head, tail) = rest.split_at(end.min(rest.find('{').unwrap_or(usize::MAX)));
        let head: Vec<String> = head.split("::").filter(|p| !p.is_empty()).map(str::to_owned).collect();
        let Some(inner) = tail.strip_prefix('{') else {
            return vec![head];
        };
        let mut depth = 0;
        let mut parts = vec![String::new()];
        for c in inner.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(String::new());
                    continue;
                }
                _ => {}
            }
            parts.last_mut().expect("one part at least").push(c);
        }
        parts
            .iter()
            .filter(|p| !p.is_empty())
            .flat_map(|p| expand(p))
            .map(|tail| head.iter().cloned().chain(tail).collect())
            .collect()
    }

    /// No module reaches back into one that reaches it: the layout is a pipeline, not a web. A module
    /// counts as depending on another when it names it or something inside it.
    #[test]
    fn modules_do_not_depend_on_each_other_in_circles() {
        let graph = module_graph();
        let depends = |from: &str, to: &str| graph.get(from).is_some_and(|uses| uses.iter().any(|u| is_within(u, to)));
        // Every module reachable from each one, through its dependencies.
        for start in graph.keys() {
            let mut seen = BTreeSet::new();
            let mut stack = vec![start.clone()];
            while let Some(module) = stack.pop() {
                for next in graph.keys().filter(|m| depends(&module, m)) {
                    assert_ne!(next, start, "{start} depends on itself through {module}");
                    if seen.insert(next.clone()) {
                        stack.push(next.clone());
                    }
                }
            }
        }
        // The domain types depend on nothing else of udptrace; clap stays in the command line.
        assert_eq!(graph["domain"], BTreeSet::new());
        for (module, _) in graph.iter().filter(|(m, _)| !m.is_empty() && *m != "cli") {
            let text = std::fs::read_to_string(source_of(module)).unwrap();
            assert!(!text.contains("clap::"), "{module} uses clap");
        }
    }

    fn source_of(module: &str) -> std::path::PathBuf {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let file = root.join(format!("{}.rs", module.replace("::", "/")));
        if file.exists() { file } else { root.join(module.replace("::", "/")).join("mod.rs") }
    }

    #[test]
    fn the_graph_reader_sees_use_trees() {
        let here = vec!["output".to_owned(), "text".to_owned()];
        let found = references(
            "use super::{Lines, explain::{icmp_name, proto_name}};\nuse crate::{domain::Event, kernel::tables::errno_name};",
            &here,
        );
        let found: Vec<&str> = found.iter().map(String::as_str).collect();
        assert_eq!(
            found,
            [
                "domain",
                "kernel::tables::errno_name",
                "output",
                "output::explain::icmp_name",
                "output::explain::proto_name"
            ]
        );
        let graph = module_graph();
        assert!(graph["output::text"].contains("output::explain") && graph["output::text"].contains("kernel::tables"));
    }
}
