//! From the programs' records to events the sinks can show, in the order data flows:
//!
//! - `source`: the ring buffer or the per-CPU perf buffers the programs write to;
//! - the records become events in `events` (each kind decodes its own);
//! - `enrich`: what user space adds (errno, owner, cause), in arrival order;
//! - `tally`: the counts the programs keep instead of records, when only counts are wanted;
//! - `counters`: the kernel's rate-limit counters, for modes whose hooks do not see the limits;
//! - `netns`: the network namespaces, and work done inside one;
//! - `filter`: the filter options, again, for what the programs could not decide;
//! - `session`: the loop that drives them and hands each event to the sinks.

pub mod counters;
pub mod enrich;
pub mod filter;
pub mod netns;
pub mod session;
pub mod source;
pub mod tally;
