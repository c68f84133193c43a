//! udptrace: the kernel's UDP/ICMP error paths, traced.
//!
//! The modules follow the data: `kernel` (the attach table, BTF, loading and attaching the programs) ->
//! the programs' records in a buffer -> `pipeline` (source, decode, enrich, filter, the session loop) ->
//! `output` (the sinks: text, JSON, summary, metrics). `domain` holds the types they all speak, `events` the kinds of event, a file each, `errors` how
//! an error is said; `cli` the command line; `invariants` what the parsers of untrusted bytes promise, for
//! their tests and the fuzz targets; `temp_dir` a directory of a test's own. Nothing imports back up into this file. The command (`main.rs`) uses
//! the modules it names, the fuzz targets `invariants`; the others stay private.

pub mod check;
pub mod cli;
mod dns;
mod domain;
pub mod errors;
mod events;
pub mod invariants;
pub mod kernel;
pub mod output;
pub mod pipeline;
pub mod privsep;
#[cfg(test)]
mod temp_dir;
pub mod trace;
