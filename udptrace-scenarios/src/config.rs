//! Where and how the suite runs.

use std::{path::PathBuf, time::Duration};

/// Where and how the suite runs.
pub struct Config {
    pub udptrace: PathBuf,
    /// A binary that runs `helper::main` when its first argument is `helper` (the suite's own).
    pub helper: PathBuf,
    /// `fentry`, `kprobe` or `tracepoint`.
    pub mode: String,
    /// udptrace's `--buffer`: `ring` or `perf`.
    pub buffer: String,
    /// Only scenarios whose name contains this.
    pub only: Option<String>,
    /// Scenarios left out of this run, each with why (another run of the same kernel proves it): they
    /// report `skip, because WHY`.
    pub except: Vec<(String, String)>,
    /// How long to wait for each event: longer under emulation.
    pub event_timeout: Duration,
    /// How long to watch for an event that must not come.
    pub quiet_period: Duration,
    /// Every hook must attach in `mode` (the QEMU matrix for fentry and kprobe): a hook that cannot is a
    /// failure, not a skip.
    pub require_attach: bool,
    /// Run the `udptrace check` scenarios: every run of `udptrace check` as root loads udptrace's programs,
    /// which under emulation takes a score of seconds, so they run in one suite run per kernel (see
    /// `suite/check.rs`).
    pub check_command: bool,
}
