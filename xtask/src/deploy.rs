//! The manifests in deploy/, checked by the tools that read them:
//! - the alerting rules (`deploy/prometheus/rules.yaml`) by `promtool check rules`, and their tests
//!   (`rules.test.yaml`) by `promtool test rules`; and, so that the tests are seen to fail when a rule is wrong,
//!   a copy of the rules whose refused-errors alert counts with `increase()`, which misses a series' first
//!   count (udptrace creates a series with its first event): the tests must fail on it;
//! - the DaemonSet (`deploy/daemonset.yaml`) by kubernetes-validate against Kubernetes' own schemas, strict
//!   (a field the schema does not have fails), and a copy with one field misspelled, which must fail;
//! - the PodMonitor (`deploy/podmonitor.yaml`): the Prometheus Operator's CRD, of which kubernetes-validate has
//!   no schema (it says so, and the row says skipped, because); its selector and port must be the DaemonSet's
//!   pods' labels and port name, read with the validator's own YAML parser.
//!
//! The Grafana dashboard is checked against a real Prometheus by the suite's `dashboard` scenario.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail};

use crate::{prereq, results::Tally, workspace::workspace_root};

/// One check's outcome: passed with a detail, failed, or skipped with why.
enum Outcome {
    Pass(String),
    Fail(String),
    Skip(String),
}

fn outcome(result: Result<String>) -> Outcome {
    match result {
        Ok(detail) => Outcome::Pass(detail),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    }
}

/// Prints each check as the suite prints its rows, and counts it.
fn report(tally: &mut Tally, name: &str, outcome: Outcome) {
    match outcome {
        Outcome::Pass(detail) => {
            let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
            println!("deploy  {name:<34} pass{detail}");
            tally.passed += 1;
        }
        Outcome::Fail(why) => {
            println!("deploy  {name:<34} FAIL: {why}");
            tally.failed += 1;
        }
        Outcome::Skip(why) => {
            println!("deploy  {name:<34} skip, because {why}");
            tally.skipped += 1;
        }
    }
}

fn run(command: &mut Command) -> Result<Output> {
    let shown = format!("{command:?}");
    command.output().with_context(|| format!("running {shown}"))
}

/// stdout and stderr, one line.
fn said(output: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `promtool`, where Debian's prometheus package puts it or on the PATH.
fn promtool() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file())
}

/// Runs every check; each counts in the tally.
pub fn test() -> Result<Tally> {
    let mut tally = Tally::default();
    let deploy = workspace_root().join("deploy");
    let rules = deploy.join("prometheus/rules.yaml");
    let rules_test = deploy.join("prometheus/rules.test.yaml");
    match promtool() {
        None => {
            let why = "promtool is not installed (Debian's prometheus package has it; `cargo xtask test` installs it)";
            for name in ["promtool_check_rules", "promtool_test_rules", "promtool_tests_catch_increase"] {
                report(&mut tally, name, Outcome::Skip(why.to_owned()));
            }
        }
        Some(promtool) => {
            let check = run(Command::new(&promtool).arg("check").arg("rules").arg(&rules)).and_then(|o| {
                if o.status.success() { Ok(said(&o).replace("Checking ", "")) } else { bail!("{}", said(&o)) }
            });
            report(&mut tally, "promtool_check_rules", outcome(check));
            let tested = run(Command::new(&promtool).arg("test").arg("rules").arg(&rules_test))
                .and_then(|o| if o.status.success() { Ok(String::new()) } else { bail!("{}", said(&o)) });
            report(&mut tally, "promtool_test_rules", outcome(tested));
            report(
                &mut tally,
                "promtool_tests_catch_increase",
                outcome(tests_catch_increase(&promtool, &rules, &rules_test)),
            );
        }
    }

    let validator = prereq::kubernetes_validate();
    if !validator.is_file() {
        let why = format!("{} is not installed (`cargo xtask test` installs it)", validator.display());
        for name in ["daemonset_validates", "validation_is_strict", "podmonitor_validates"] {
            report(&mut tally, name, Outcome::Skip(why.clone()));
        }
    } else {
        let daemonset = deploy.join("daemonset.yaml");
        let validated = run(Command::new(&validator).arg("--strict").arg(&daemonset)).and_then(|o| {
            let text = said(&o);
            let passed = ["namespace/udptrace", "daemonset/udptrace"]
                .iter()
                .all(|resource| text.contains(&format!("passed for resource {resource}")));
            if o.status.success() && passed { Ok(text) } else { bail!("exit {}: {text}", o.status) }
        });
        report(&mut tally, "daemonset_validates", outcome(validated));
        report(&mut tally, "validation_is_strict", outcome(rejects_a_misspelled_field(&validator, &daemonset)));
        let podmonitor = deploy.join("podmonitor.yaml");
        let validated = run(Command::new(&validator).arg("--strict").arg(&podmonitor)).map(|o| {
            let text = said(&o);
            if !o.status.success() {
                Outcome::Fail(format!("exit {}: {text}", o.status))
            } else if text.contains("Couldn't find schema for kind PodMonitor") {
                Outcome::Skip(format!(
                    "kubernetes-validate has no schema for the Prometheus Operator's PodMonitor (a CRD) and says so: \
                     {text}; podmonitor_selects_the_daemonset checks what it must match"
                ))
            } else {
                Outcome::Pass(text)
            }
        });
        report(&mut tally, "podmonitor_validates", validated.unwrap_or_else(|e| Outcome::Fail(format!("{e:#}"))));
    }
    let selects = if prereq::kubernetes_validate_python().is_file() {
        outcome(podmonitor_selects_daemonset(&deploy))
    } else {
        Outcome::Skip("kubernetes-validate, whose YAML parser reads the manifests, is not installed".to_owned())
    };
    report(&mut tally, "podmonitor_selects_the_daemonset", selects);
    Ok(tally)
}

/// A copy of the rules whose refused-errors alert counts with `increase()`: the tests must fail on it, since
/// the alert must fire for a node's first refusal, a series born at its first count.
fn tests_catch_increase(promtool: &Path, rules: &Path, rules_test: &Path) -> Result<String> {
    let text = fs::read_to_string(rules)?;
    let alert = text.find("- alert: UdptraceRefusedErrors").context("no UdptraceRefusedErrors alert")?;
    let expr = alert + text[alert..].find("expr: |").context("the alert's expr is not a block")?;
    let labels = expr + text[expr..].find("labels:").context("the alert has no labels")?;
    let naive = "expr: sum by (instance) (increase(udptrace_socket_errors_total{errno=\"ECONNREFUSED\", \
                 verdict=\"delivered\"}[10m])) > 0\n        ";
    let dir = workspace_root().join("target/deploy-check");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("rules.yaml"), format!("{}{naive}{}", &text[..expr], &text[labels..]))?;
    fs::copy(rules_test, dir.join("rules.test.yaml"))?;
    let output = run(Command::new(promtool).arg("test").arg("rules").arg(dir.join("rules.test.yaml")))?;
    let text = said(&output);
    if output.status.success() {
        bail!("promtool test rules passed rules whose refused-errors alert misses a node's first refusal");
    }
    if !text.contains("UdptraceRefusedErrors") {
        bail!("the tests failed, but not on UdptraceRefusedErrors: {text}");
    }
    Ok("the tests fail on increase()".to_owned())
}

/// A copy of the DaemonSet with `readOnlyRootFilesystem` misspelled: strict validation must reject it.
fn rejects_a_misspelled_field(validator: &Path, daemonset: &Path) -> Result<String> {
    let text = fs::read_to_string(daemonset)?;
    if !text.contains("readOnlyRootFilesystem:") {
        bail!("the DaemonSet has no readOnlyRootFilesystem to misspell");
    }
    let dir = workspace_root().join("target/deploy-check");
    fs::create_dir_all(&dir)?;
    let copy = dir.join("daemonset.yaml");
    fs::write(&copy, text.replace("readOnlyRootFilesystem:", "readOnlyRootFilesytem:"))?;
    let output = run(Command::new(validator).arg("--strict").arg(&copy))?;
    let said = said(&output);
    if output.status.success() || !said.contains("readOnlyRootFilesytem") {
        bail!("a misspelled field passed: exit {}: {said}", output.status);
    }
    Ok("a misspelled field fails".to_owned())
}

/// The PodMonitor selects the DaemonSet's pods by their labels and scrapes the port it names; read with the
/// YAML parser kubernetes-validate brings (PyYAML), in its Python.
fn podmonitor_selects_daemonset(deploy: &Path) -> Result<String> {
    const SCRIPT: &str = r#"
import sys, yaml
daemonset = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "DaemonSet"][0]
monitor = yaml.safe_load(open(sys.argv[2]))
pod = daemonset["spec"]["template"]
labels = pod["metadata"]["labels"]
ports = [p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])]
wanted = monitor["spec"]["selector"]["matchLabels"]
problems = [f"label {k}={v} not on the pods" for k, v in wanted.items() if labels.get(k) != v]
problems += [f"port {e['port']} not among {ports}" for e in monitor["spec"]["podMetricsEndpoints"] if e["port"] not in ports]
if monitor["metadata"]["namespace"] != daemonset["metadata"]["namespace"]:
    problems.append("the PodMonitor is in another namespace than the DaemonSet")
print("; ".join(problems) or f"selects {wanted}, port {ports}")
sys.exit(1 if problems else 0)
"#;
    let output = run(Command::new(prereq::kubernetes_validate_python())
        .arg("-c")
        .arg(SCRIPT)
        .arg(deploy.join("daemonset.yaml"))
        .arg(deploy.join("podmonitor.yaml")))?;
    let text = said(&output);
    if output.status.success() { Ok(text) } else { bail!("{text}") }
}
