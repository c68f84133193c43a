//! Adds up what the test runners report, so that `cargo xtask test` ends on one line that counts every
//! test: `N passed, N failed, N skipped`.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// The scenarios' times the runners printed (`took` lines).
    pub took: Vec<crate::timing::Took>,
}

impl Tally {
    /// Adds `other`'s counts and times to these.
    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.took.extend(other.took);
    }

    pub fn line(&self) -> String {
        format!("{} passed, {} failed, {} skipped", self.passed, self.failed, self.skipped)
    }

    /// Reads one line of runner output: libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...`
    /// or the scenario suite's `scenarios: 7 passed, 0 failed, 1 skipped`.
    pub fn add_line(&mut self, line: &str) {
        let line = line.trim();
        if let Some(took) = crate::timing::parse_took(line) {
            self.took.push(took);
            return;
        }
        let body = if let Some(rest) = line.strip_prefix("test result: ") {
            rest.split_once(". ").map_or(rest, |(_, counts)| counts)
        } else if let Some(rest) =
            ["scenarios: ", "bench: ", "demo: "].iter().find_map(|prefix| line.strip_prefix(prefix))
        {
            rest
        } else {
            return;
        };
        for part in body.split([';', ',']) {
            let mut words = part.split_whitespace();
            let (Some(number), Some(word)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match word {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                "ignored" | "skipped" => self.skipped += number,
                _ => {}
            }
        }
    }
}

/// Runs `command`, echoing its stdout and tallying it. Returns whether it exited 0.
pub fn run_and_tally(command: &mut Command, tally: &mut Tally) -> Result<bool> {
    let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).spawn().context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        tally.add_line(&line);
    }
    Ok(child.wait()?.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_libtest_and_scenario_lines() {
        let mut tally = Tally::default();
        tally
            .add_line("test result: ok. 23 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.44s");
        tally.add_line("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out");
        tally.add_line("scenarios: 7 passed, 0 failed, 1 skipped");
        tally.add_line("tracepoint  closed_port_ipv4 socket_error pass");
        assert_eq!((tally.passed, tally.failed, tally.skipped), (32, 1, 2));
        assert_eq!(tally.line(), "32 passed, 1 failed, 2 skipped");
    }
}
