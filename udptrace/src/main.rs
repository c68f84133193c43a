//! udptrace: the kernel's UDP/ICMP error paths, traced. The modules live in the library (`lib.rs`), so that
//! the fuzz targets (`fuzz/`) reach the parsers; this file is the command.

use std::process::ExitCode;

/// In the static build (musl), mimalloc: musl's allocator made the error flood printing a line per event a
/// fifth slower than the glibc build, and the start slower (docs/benchmarks.md).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands the start's memory back to the kernel (parsing BTF and kallsyms peaks at tens of MiB): glibc's
/// allocator trims its heap as it frees, mimalloc keeps freed pages for reuse until told.
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
    cli::{Cli, Command},
    errors::one_line,
    kernel::{
        loader::{HookOutcome, KernelFacts},
        privileges, probes,
    },
    output::{self, Sink, json::JsonSink, metrics, summary::SummarySink, text::TextSink},
    pipeline::session,
    trace,
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
        counts_only: (cli.quiet || cli.summary.is_some()) && cli.count.is_none(),
        dns_ports: cli.dns_ports(),
    };
    let tracing = trace::Tracing::start(setup, facts)?;
    release_start_memory();
    for line in &tracing.not_traced {
        eprintln!("udptrace: warning: {line}");
    }
    let trace::Tracing {
        runtime,
        source,
        stages,
        outcomes,
        attached,
        not_traced: _,
        programs: _programs,
        cgroup_links: _cgroup_links,
    } = tracing;
    let (sinks, server) = sinks(&cli, &outcomes)?;
    // Attached and bound: what is left to do needs a few capabilities only. The metrics thread starts after,
    // and so holds no more than the rest (a thread takes its creator's capabilities).
    match privileges::keep_only_what_tracing_uses() {
        Ok(kept) if cli.verbose => {
            let names: Vec<String> = kept.iter().map(ToString::to_string).collect();
            eprintln!("udptrace: capabilities kept: {}", names.join(" "));
        }
        Ok(_) => {}
        Err(e) => eprintln!("udptrace: warning: cannot give up the capabilities tracing no longer uses: {e}"),
    }
    let _serving = server.map(metrics::Server::start).transpose()?;
    let serving = cli.metrics.map(|addr| format!("; metrics on http://{addr}/metrics")).unwrap_or_default();
    let options = session::Options {
        duration: cli.duration,
        count: cli.count,
        verbose: cli.verbose,
        banner: Some(format!("udptrace: tracing ({}){serving}; Ctrl-C to stop", attached.join(", "))),
        stop: None,
    };
    let totals = runtime.block_on(session::run(source, stages, sinks, options))?;
    eprintln!("{}", totals.closing_line());
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
            metrics::Cardinality { addresses: cli.metrics_addresses, dns_names: cli.metrics_dns_names },
        );
        server = Some(metrics::bind(addr, counters.clone())?);
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

    /// The crate root (`lib.rs`, and `main.rs` beside it) in the graph: the module that declares all the others.
    const ROOT: &str = "crate";

    /// The modules of the crate whose sources are in `root`, by path (`pipeline::session`; the root is
    /// [`ROOT`]), and the modules of that crate each one names, the root too for an item of `lib.rs` or
    /// `main.rs`. The root depends on every module it declares, and `main.rs` names the library's modules
    /// by the crate's name (`udptrace::cli`) as the others name them through `crate::`.
    fn module_graph(root: &std::path::Path) -> BTreeMap<String, BTreeSet<String>> {
        let library =
            format!("{}::", root.parent().and_then(|p| p.file_name()).unwrap().to_string_lossy().replace('-', "_"));
        let mut files = vec![root.to_path_buf()];
        let mut sources = BTreeMap::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(root).unwrap().with_extension("");
            let mut module: Vec<String> =
                relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "main" | "lib")) {
                module.pop();
            }
            let mut text = std::fs::read_to_string(&path).unwrap();
            if module.is_empty() {
                text = text.replace(&library, "crate::");
                let declared: Vec<String> = text
                    .lines()
                    .filter_map(|line| line.trim().trim_start_matches("pub ").strip_prefix("mod "))
                    .filter_map(|rest| rest.strip_suffix(';'))
                    .map(|name| format!("use crate::{name};"))
                    .collect();
                text = declared.join("\n") + "\n" + &text;
            }
            // Test code may reach anywhere; the modules' own code is what must not go in circles.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
            // `lib.rs` and `main.rs` are both the root.
            sources.entry(module).or_insert_with(String::new).push_str(&code);
        }
        let known: BTreeSet<String> = sources.keys().filter_map(|m| m.first().cloned()).collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> =
            sources.iter().map(|(module, code)| (name_of(module), references(code, module, &known))).collect();
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

    fn name_of(module: &[String]) -> String {
        if module.is_empty() { ROOT.to_owned() } else { module.join("::") }
    }

    /// `path` is `module` or something inside it.
    fn is_within(path: &str, module: &str) -> bool {
        path == module || path.starts_with(&format!("{module}::"))
    }

    /// The paths `code` (of module `here`) names through `crate::` and `super::`: a module of `known`
    /// (`kernel::tables::errno_name`), or [`ROOT`] for an item of the crate root (`crate::one_line`).
    fn references(code: &str, here: &[String], known: &BTreeSet<String>) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        // Comment lines (doc links among them) name nothing the code depends on.
        let flat: String = code
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .flat_map(|line| line.chars().filter(|c| *c != ' '))
            .collect();
        for (prefix, base) in [("crate::", Vec::new()), ("super::", here[..here.len().saturating_sub(1)].to_vec())] {
            let mut rest = flat.as_str();
            while let Some(at) = rest.find(prefix) {
                rest = &rest[at + prefix.len()..];
                for path in expand(rest) {
                    let mut module = base.clone();
                    module.extend(path.into_iter().take_while(|p| p.chars().next().is_some_and(char::is_lowercase)));
                    let path = if module.first().is_some_and(|m| known.contains(m)) {
                        module.join("::")
                    } else {
                        ROOT.to_owned()
                    };
                    if path != name_of(here) {
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

    /// A module that depends on itself through others: `(start, through)`, or `None`. A module counts as
    /// depending on another when it names it or something inside it.
    fn a_loop(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<(String, String)> {
        let depends = |from: &str, to: &str| graph.get(from).is_some_and(|uses| uses.iter().any(|u| is_within(u, to)));
        // Every module reachable from each one, through its dependencies.
        for start in graph.keys() {
            let mut seen = BTreeSet::new();
            let mut stack = vec![start.clone()];
            while let Some(module) = stack.pop() {
                for next in graph.keys().filter(|m| depends(&module, m)) {
                    if next == start {
                        return Some((start.clone(), module));
                    }
                    if seen.insert(next.clone()) {
                        stack.push(next.clone());
                    }
                }
            }
        }
        None
    }

    fn crate_sources(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name).join("src")
    }

    /// No module reaches back into one that reaches it, nor up into the crate root that declares them all:
    /// the layout is a pipeline, not a web. In user space and in the programs.
    #[test]
    fn modules_do_not_depend_on_each_other_in_circles() {
        for name in ["udptrace", "udptrace-ebpf"] {
            let graph = module_graph(&crate_sources(name));
            assert!(graph.len() > 5, "{name}: {graph:?}");
            if let Some((start, through)) = a_loop(&graph) {
                panic!(
                    "{name}: {start} depends on itself through {through}: {start} names {:?}, {through} {:?}",
                    graph[&start], graph[&through]
                );
            }
        }
        let graph = module_graph(&crate_sources("udptrace"));
        // The root declares every module, and so a module naming an item of the root is a loop.
        for module in graph.keys().filter(|m| *m != ROOT && !m.contains("::")) {
            assert!(graph[ROOT].contains(module), "the root does not declare {module}: {:?}", graph[ROOT]);
        }
        let mut put_back = graph.clone();
        put_back.get_mut("dns").unwrap().insert(ROOT.to_owned());
        assert!(a_loop(&put_back).is_some());
        // The domain types depend on nothing else of udptrace; clap stays in the command line.
        assert_eq!(graph["domain"], BTreeSet::new());
        for (module, _) in graph.iter().filter(|(m, _)| *m != ROOT && *m != "cli") {
            let text = std::fs::read_to_string(source_of(module)).unwrap();
            assert!(!text.contains("clap::"), "{module} uses clap");
        }
    }

    /// The check fails when a loop is put back: two modules naming each other, and a module naming an
    /// item of the root.
    #[test]
    fn a_loop_put_back_is_found() {
        let known: BTreeSet<String> = ["drop", "send", "kernel"].map(str::to_owned).into();
        let module = |m: &str| vec![m.to_owned()];
        let mut graph = BTreeMap::from([
            (ROOT.to_owned(), ["drop", "send", "kernel"].map(str::to_owned).into()),
            ("kernel".to_owned(), BTreeSet::new()),
            ("drop".to_owned(), references("use crate::{kernel::read, send};", &module("drop"), &known)),
            ("send".to_owned(), references("use crate::kernel::read;", &module("send"), &known)),
        ]);
        assert_eq!(a_loop(&graph), None);
        graph.insert("send".to_owned(), references("let v4 = crate::drop::ETH_P_IP;", &module("send"), &known));
        assert!(a_loop(&graph).is_some());
        graph.insert("send".to_owned(), references("use crate::{emit, kernel::read};", &module("send"), &known));
        assert_eq!(graph["send"], [ROOT, "kernel::read"].map(str::to_owned).into());
        assert!(a_loop(&graph).is_some());
    }

    fn source_of(module: &str) -> std::path::PathBuf {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let file = root.join(format!("{}.rs", module.replace("::", "/")));
        if file.exists() { file } else { root.join(module.replace("::", "/")).join("mod.rs") }
    }

    #[test]
    fn the_graph_reader_sees_use_trees() {
        let here = vec!["output".to_owned(), "text".to_owned()];
        let known: BTreeSet<String> = ["domain", "kernel", "output"].map(str::to_owned).into();
        let found = references(
            "use super::{Lines, explain::{icmp_name, proto_name}};\nuse crate::{domain::Event, kernel::tables::errno_name};",
            &here,
            &known,
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
        let graph = module_graph(&crate_sources("udptrace"));
        assert!(graph["output::text"].contains("events") && graph["events::socket_error"].contains("domain"));
    }
}
