//! What a run leaves: the kernels the suite last passed on (`xtask/kernels-passed.txt`), the matrix, and
//! the table of what the last full run proved in docs/kernels.md.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::workspace::workspace_root;

use super::*;

/// Where the kernels the suite last passed on are written, one line per series and architecture:
/// `SERIES PACKAGE RELEASE DEBIAN-VERSION SECONDS` (how long its VM ran, which orders the lanes), where
/// SERIES is [`machine`]'s name (`6.1` for amd64, `6.1/arm64`). The matrix resolves the newest kernel of each series, so a
/// kernel Debian publishes can fail a suite that did not change; a failure then says what last passed.
pub(super) fn passed_file() -> PathBuf {
    workspace_root().join("xtask/kernels-passed.txt")
}

/// `6.1.158-1` from `/proc/version`: its last `Debian` word (the first names the compiler's).
pub(super) fn debian_version(proc_version: &str) -> Option<&str> {
    let at = proc_version.rfind("Debian ")? + "Debian ".len();
    proc_version[at..].split_whitespace().next().map(|v| v.trim_end_matches(')'))
}

impl VmRun {
    /// `6.1.0-57-cloud-amd64 (Debian 6.1.158-1)`, as far as the VM said.
    pub fn kernel(&self, package: &str) -> String {
        let release = self.release.clone().unwrap_or_else(|| package.to_owned());
        match self.version.as_deref().and_then(debian_version) {
            Some(version) => format!("{release} (Debian {version})"),
            None => release,
        }
    }
}

/// The line `passed` holds for `series`, if any.
pub(super) fn last_passed<'a>(passed: &'a str, series: &str) -> Option<&'a str> {
    passed.lines().find(|l| l.split_whitespace().next() == Some(series))
}

/// How many seconds the VM of `part` of `series` ran when the suite last passed on it, if recorded (the fifth
/// word: `fentry=600,kprobe=400,tracepoint=440,bench=180`).
pub(super) fn last_seconds(passed: &str, series: &str, part: &str) -> Option<u64> {
    let parts = last_passed(passed, series)?.split_whitespace().nth(4)?;
    parts.split(',').find_map(|p| p.strip_prefix(part)?.strip_prefix('=')?.parse().ok())
}

/// What to say of a run that failed: which kernel it ran on and which one the suite last passed on.
pub fn kernel_note(package: &str, run: &VmRun) -> String {
    let passed = fs::read_to_string(passed_file()).unwrap_or_default();
    let key = run.machine();
    let last = match last_passed(&passed, &key).map(|l| l.split_whitespace().collect::<Vec<_>>()) {
        Some(words) if words.len() >= 3 => {
            let version = words.get(3).filter(|v| **v != "-").map(|v| format!(" (Debian {v})")).unwrap_or_default();
            if words[1] == package {
                format!("the suite last passed on this same kernel, {}{version}", words[2])
            } else {
                format!(
                    "the suite last passed on {}{version}: a newer kernel, not only this change, may be why",
                    words[2]
                )
            }
        }
        _ => "no earlier pass is recorded for this series".to_owned(),
    };
    format!("ran on {}; {last}", run.kernel(package))
}

/// Records that the suite passed on `run`'s kernel, and how long its VM ran (a file to commit with the change
/// that passed).
pub fn record_pass(package: &str, run: &VmRun) -> Result<()> {
    let path = passed_file();
    let passed = fs::read_to_string(&path).unwrap_or_default();
    let release = run.release.as_deref().unwrap_or(package);
    let version = run.version.as_deref().and_then(debian_version).unwrap_or("-");
    let parts: Vec<String> = run.parts.iter().map(|(part, wall)| format!("{part}={:.0}", wall.as_secs_f64())).collect();
    let key = run.machine();
    let line = format!("{key} {package} {release} {version} {}", parts.join(","));
    let mut lines: Vec<String> =
        passed.lines().filter(|l| l.split_whitespace().next() != Some(key.as_str())).map(str::to_owned).collect();
    lines.push(line);
    lines.sort_by_key(|l| natural_key(l));
    fs::write(&path, lines.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The matrix: per kernel, one row per check and one column per mode; what did not pass is listed under it.
pub fn matrix(runs: &[(String, VmRun)]) -> String {
    let mut out = String::new();
    for (package, run) in runs {
        out.push_str(&format!("{} ({:.0} s)\n", run.kernel(package), run.wall.as_secs_f64()));
        let mut rows: Vec<(&str, &str)> = Vec::new();
        for c in &run.checks {
            if !rows.contains(&(&c.scenario, &c.check)) {
                rows.push((&c.scenario, &c.check));
            }
        }
        let columns: Vec<&str> = MODES.iter().copied().chain(["bench"]).collect();
        out.push_str(&format!("  {:<44}", "scenario / check"));
        for mode in &columns {
            out.push_str(&format!(" {mode:<10}"));
        }
        out.push('\n');
        let mut notes = Vec::new();
        for (scenario, check) in rows {
            out.push_str(&format!("  {:<44}", format!("{scenario} {check}")));
            for mode in &columns {
                let cell = run.checks.iter().find(|c| c.mode == *mode && c.scenario == scenario && c.check == check);
                let word = cell.map_or("-", |c| c.outcome.split([',', ':']).next().unwrap_or(""));
                if let Some(c) = cell.filter(|_| word != "pass") {
                    notes.push(format!("  {mode} {scenario} {check}: {}", c.outcome));
                }
                out.push_str(&format!(" {word:<10}"));
            }
            out.push('\n');
        }
        for note in notes {
            out.push_str(&format!("{note}\n"));
        }
        out.push('\n');
    }
    out
}

/// What `udptrace probes` said of `mode` in `run`: the functions attached in place of others
/// (`udp_err for __udp4_lib_err`), and the hooks that did not attach, with the kernel's reason.
pub(super) fn probes_of(run: &VmRun, mode: &str) -> (Vec<String>, Vec<String>) {
    let (mut instead, mut missing) = (Vec::new(), Vec::new());
    let mut hook = "";
    for line in &run.probes {
        if !line.starts_with(' ') {
            if let Some((name, _)) = line.split_once(": ") {
                hook = name;
            }
            continue;
        }
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix(mode).filter(|r| r.starts_with(' ')).map(str::trim_start) else {
            continue;
        };
        if let Some(reason) = rest.strip_prefix("no: ") {
            missing.push(format!("{hook}: {reason}"));
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        for at in 1..words.len().saturating_sub(2) {
            if words[at] == "instead" && words[at + 1] == "of" {
                let name = |w: &str| w.split_once(':').map_or(w, |(_, f)| f).to_owned();
                let pair = format!("{} for {}", name(words[at - 1]), name(words[at + 2]));
                if !instead.contains(&pair) {
                    instead.push(pair);
                }
            }
        }
    }
    (instead, missing)
}

/// The table of what the last full matrix proved (docs/kernels.md): one row per kernel, one column per mode.
pub fn proven_table(runs: &[(String, VmRun)]) -> String {
    let mut out = String::from(
        "| arch | kernel | fentry (ring buffer) | kprobe (perf buffers) | tracepoint (ring buffer) |\n\
         |---|---|---|---|---|\n",
    );
    for (package, run) in runs {
        out.push_str(&format!(
            "| {} | Debian {} |",
            run.arch.debian(),
            run.kernel(package).trim_end_matches(')').replacen(" (Debian ", ", ", 1)
        ));
        for mode in MODES {
            let checks: Vec<&VmCheck> = run.checks.iter().filter(|c| c.mode == *mode).collect();
            let count = |word: &str| checks.iter().filter(|c| c.outcome.starts_with(word)).count();
            let (passed, failed, skipped) = (count("pass"), count("FAIL"), count("skip"));
            let (instead, missing) = probes_of(run, mode);
            if let Some(release) = run.on_host.as_ref().filter(|_| *mode == "tracepoint") {
                out.push_str(&format!(
                    " on this host's {release} instead, ring and perf buffers (the host suite, same series) |"
                ));
                continue;
            }
            let mut cell = if passed == 0 && failed == 0 {
                format!("cannot run: {}", missing.first().map_or("nothing attaches", String::as_str))
            } else if failed > 0 {
                format!("**{failed} failed**, {passed} passed")
            } else {
                format!("{passed} passed")
            };
            if skipped > 0 && passed + failed > 0 {
                cell.push_str(&format!(", {skipped} skipped"));
            }
            if !instead.is_empty() && passed + failed > 0 {
                cell.push_str(&format!("; {}", instead.join(", ")));
            }
            if passed + failed > 0 {
                for hook in &missing {
                    cell.push_str(&format!("; no {hook}"));
                }
            }
            out.push_str(&format!(" {} |", cell.replace('|', "/")));
        }
        out.push('\n');
    }
    out
}

/// The markers in docs/kernels.md around the table [`proven_table`] writes.
pub(super) const TABLE_BEGIN: &str = "<!-- kernel matrix: written by cargo xtask vm-test -->";
pub(super) const TABLE_END: &str = "<!-- end of kernel matrix -->";

/// Writes `table` into docs/kernels.md between its markers.
pub fn write_proven_table(table: &str) -> Result<()> {
    let path = workspace_root().join("docs/kernels.md");
    let page = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(begin), Some(end)) = (page.find(TABLE_BEGIN), page.find(TABLE_END)) else {
        bail!("docs/kernels.md has no kernel matrix markers");
    };
    let updated = format!("{}{TABLE_BEGIN}\n{table}{}", &page[..begin], &page[end..]);
    fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))
}
