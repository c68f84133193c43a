//! What each check came to, and what a suite run came to: the lines the suite prints and `cargo xtask`
//! counts.

use std::fmt;

/// What one check came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Cannot run here; the reason says why.
    Skip(String),
}

#[derive(Debug, Clone)]
pub struct Check {
    pub scenario: &'static str,
    pub name: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.checks.iter().filter(|c| f(&c.outcome)).count()
    }
    pub fn passed(&self) -> usize {
        self.count(|o| *o == Outcome::Pass)
    }
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }
    /// The closing line: `N passed, N failed, N skipped`.
    pub fn totals(&self) -> String {
        format!("{} passed, {} failed, {} skipped", self.passed(), self.failed(), self.skipped())
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, why) = match &self.outcome {
            Outcome::Pass => ("pass", String::new()),
            Outcome::Fail(why) => ("FAIL", format!(": {why}")),
            Outcome::Skip(why) => ("skip", format!(", because {why}")),
        };
        write!(f, "{:<22} {:<16} {word}{why}", self.scenario, self.name)
    }
}

/// The first line of an error message, for a one-line report.
pub fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_owned()
}
