//! The scenario suite: each of the seed article's cases set up in network namespaces, with a real
//! udptrace attached in one forced mode, asserting the exact events. The same suite runs on the host
//! (`cargo test`, tracepoint mode) and inside each QEMU kernel (`cargo xtask vm-test`).

pub mod bench;
pub mod bench_traffic;
mod child;
mod config;
pub mod demo;
pub mod helper;
pub mod kube;
pub mod netns;
mod node_mounts;
mod outcome;
mod packets;
mod run;
mod scratch;
pub mod suite;
pub mod tracer;

pub use self::{
    child::stop_child,
    config::Config,
    outcome::{Check, Outcome, Report, one_line},
    run::{LOADS, TOOK, loads_line, run, took_line},
};

/// A command-line number of seconds: above 0 and below an hour, so that it always makes a `Duration` (a
/// huge one would panic there).
pub fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s < 3600.0 => Ok(s),
        _ => Err(format!("`{text}` is not a number of seconds (above 0, below 3600)")),
    }
}
