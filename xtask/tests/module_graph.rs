//! The workspace's module graph: in every crate, no module reaches back into one that reaches it, nor up into
//! the crate root that declares them all. The layout is a pipeline, not a web, in user space, in the programs,
//! in the scenario suite and in the build commands alike.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The crate roots (`lib.rs`, `main.rs` and every other binary's root beside them) in the graph: what
/// declares all the other modules.
const ROOT: &str = "crate";

/// Every crate of the workspace.
const CRATES: [&str; 5] = ["udptrace", "udptrace-common", "udptrace-ebpf", "udptrace-scenarios", "xtask"];

/// A module's graph: each module by path (`pipeline::session`; the roots are [`ROOT`]) and the modules of
/// the same crate it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The files of crate `directory` that are crate roots: `src/lib.rs`, `src/main.rs` and each `path =` of its
/// manifest (`src/bench_main.rs`), relative to `src`.
fn roots_of(directory: &Path) -> BTreeSet<PathBuf> {
    let manifest = std::fs::read_to_string(directory.join("Cargo.toml")).unwrap();
    let declared = manifest
        .lines()
        .filter_map(|line| line.trim().strip_prefix("path = \"src/"))
        .filter_map(|rest| rest.strip_suffix('"'))
        .map(PathBuf::from);
    ["lib.rs", "main.rs"].into_iter().map(PathBuf::from).chain(declared).collect()
}

/// The modules of the crate in `directory`, and the modules of that crate each one names, the root too
/// for an item of a crate root (a binary's root names the library's items by the crate's name,
/// `udptrace::cli`, as the others name them through `crate::`). The root depends on every module: it
/// declares them all, directly or through the modules above them.
fn module_graph(directory: &Path) -> Graph {
    let source = directory.join("src");
    let roots = roots_of(directory);
    let library = format!("{}::", directory.file_name().unwrap().to_string_lossy().replace('-', "_"));
    let mut files = vec![source.clone()];
    let mut sources = BTreeMap::new();
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(&source).unwrap();
        let is_root = roots.contains(relative);
        let mut module: Vec<String> =
            relative.with_extension("").components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        if is_root {
            module.clear();
        } else if module.last().is_some_and(|m| m == "mod") {
            module.pop();
        }
        let mut text = std::fs::read_to_string(&path).unwrap();
        if is_root {
            text = text.replace(&library, "crate::");
        }
        // Test code may reach anywhere; the modules' own code is what must not go in circles.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
        // Every crate root is the root.
        sources.entry(module).or_insert_with(String::new).push_str(&code);
    }
    let known: BTreeSet<String> = sources.keys().filter_map(|m| m.first().cloned()).collect();
    let mut graph: Graph =
        sources.iter().map(|(module, code)| (name_of(module), references(code, module, &known))).collect();
    // A path names the longest module it starts with (`kernel::tables::errno_name` is `kernel::tables`).
    let modules: Vec<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        *uses = uses
            .iter()
            .filter_map(|path| modules.iter().filter(|m| is_within(path, m)).max_by_key(|m| m.len()).cloned())
            .collect();
    }
    // The root holds every module, declared there or in the module above it.
    graph.insert(ROOT.to_owned(), modules.into_iter().filter(|m| m != ROOT).collect());
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
        // `a as b` names `a`: `@` ends the path as `,` does.
        .map(|line| line.replace(" as ", "@"))
        .flat_map(|line| line.chars().filter(|c| *c != ' ').collect::<Vec<_>>())
        .collect();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", here[..here.len().saturating_sub(1)].to_vec())] {
        let mut rest = flat.as_str();
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            for path in expand(rest) {
                let mut module = base.clone();
                module.extend(path.into_iter().take_while(|p| p.chars().next().is_some_and(char::is_lowercase)));
                let path =
                    if module.first().is_some_and(|m| known.contains(m)) { module.join("::") } else { ROOT.to_owned() };
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
    let end = rest.find([';', ')', ',', '}', '(', '<', '!', '.', '&', '=', '|', '[', '@']).unwrap_or(rest.len());
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
fn a_loop(graph: &Graph) -> Option<(String, String)> {
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

fn crate_directory(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

/// Checks the graph of crate `name`: no loop. Then puts a loop back in each module, naming an item of the
/// root, and the check must see it.
fn check_crate(name: &str) {
    let graph = module_graph(&crate_directory(name));
    assert!(graph.len() > 1, "{name}: {graph:?}");
    if let Some((start, through)) = a_loop(&graph) {
        panic!(
            "{name}: {start} depends on itself through {through}: {start} names {:?}, {through} {:?}",
            graph[&start], graph[&through]
        );
    }
    for module in graph.keys().filter(|m| *m != ROOT) {
        let mut put_back = graph.clone();
        put_back.get_mut(module).unwrap().insert(ROOT.to_owned());
        assert!(a_loop(&put_back).is_some(), "{name}: {module} naming the root is no loop");
    }
}

#[test]
fn udptrace_modules_do_not_go_in_circles() {
    check_crate("udptrace");
    let graph = module_graph(&crate_directory("udptrace"));
    // The domain types depend on nothing else of udptrace; clap stays in the command line.
    assert_eq!(graph["domain"], BTreeSet::new());
    for (module, _) in graph.iter().filter(|(m, _)| *m != ROOT && *m != "cli") {
        let text = std::fs::read_to_string(source_of("udptrace", module)).unwrap();
        assert!(!text.contains("clap::"), "{module} uses clap");
    }
}

#[test]
fn udptrace_common_modules_do_not_go_in_circles() {
    check_crate("udptrace-common");
}

#[test]
fn udptrace_ebpf_modules_do_not_go_in_circles() {
    check_crate("udptrace-ebpf");
}

#[test]
fn udptrace_scenarios_modules_do_not_go_in_circles() {
    check_crate("udptrace-scenarios");
}

#[test]
fn xtask_modules_do_not_go_in_circles() {
    check_crate("xtask");
}

/// Every crate of the workspace has its test above.
#[test]
fn every_crate_is_checked() {
    let manifest = std::fs::read_to_string(crate_directory("Cargo.toml")).unwrap();
    let members = manifest.lines().find_map(|l| l.strip_prefix("members = [")).expect("the workspace's members");
    let members: Vec<&str> = members.trim_end_matches(']').split(',').map(|m| m.trim().trim_matches('"')).collect();
    assert_eq!(members, CRATES, "a workspace member with no module-graph test, or one no longer there");
    for name in CRATES {
        assert!(crate_directory(name).join("Cargo.toml").exists(), "{name}");
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

/// A crate's binary roots are roots: a module naming an item of `src/bench_main.rs` names the root.
#[test]
fn every_binary_root_is_the_root() {
    let roots = roots_of(&crate_directory("udptrace-scenarios"));
    assert!(roots.contains(Path::new("bench_main.rs")) && roots.contains(Path::new("lib.rs")), "{roots:?}");
    let graph = module_graph(&crate_directory("udptrace-scenarios"));
    assert!(!graph.contains_key("bench_main") && !graph.contains_key("demo_main"), "{:?}", graph.keys());
}

fn source_of(name: &str, module: &str) -> PathBuf {
    let root = crate_directory(name).join("src");
    let file = root.join(format!("{}.rs", module.replace("::", "/")));
    if file.exists() { file } else { root.join(module.replace("::", "/")).join("mod.rs") }
}

#[test]
fn the_graph_reader_sees_use_trees() {
    let here = vec!["output".to_owned(), "text".to_owned()];
    let known: BTreeSet<String> = ["domain", "kernel", "output"].map(str::to_owned).into();
    let found = references(
        "use super::{Lines, explain::{icmp_name, proto_name}};\nuse crate::{domain::Event, kernel::tables::errno_name as name};",
        &here,
        &known,
    );
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(
        found,
        ["domain", "kernel::tables::errno_name", "output", "output::explain::icmp_name", "output::explain::proto_name"]
    );
    let graph = module_graph(&crate_directory("udptrace"));
    assert!(graph["output::text"].contains("events") && graph["events::socket_error"].contains("events::parts"));
}
