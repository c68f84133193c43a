//! Privilege separation. udptrace parses what any host on the network chooses to send (ICMP quotes, DNS
//! payloads) and serves `/metrics`: once the programs are attached, that work runs in a process that holds
//! nothing, and the little that still needs a privilege is asked of a helper that does nothing else.
//!
//! - The **tracer** (the process the operator started) consumes the buffers, decodes, enriches, filters,
//!   prints and serves HTTP. At the split it becomes the `udptrace` system user (else `nobody`), with no
//!   supplementary group, every capability set empty, `SECBIT_NOROOT` locked, `PR_SET_NO_NEW_PRIVS`, and a
//!   seccomp filter of the system calls it makes (`kernel/syscalls.rs`). It keeps the links: the programs
//!   stay attached while it lives, whatever becomes of the helper.
//! - The **helper** (its child, `udptrace-helper`) answers the tracer's requests over a socketpair,
//!   each checked against what it holds ([`helper`]), and keeps only the capabilities they need
//!   ([`helper::capabilities`]). It ends when the tracer's end of the socketpair closes, which the tracer's
//!   death does (`PR_SET_PDEATHSIG` cannot: the kernel sends that signal with the dying parent's credentials,
//!   which may not signal a root process once the tracer has dropped them, kernel/exit.c). It holds no link,
//!   and the programs' descriptors only before 5.19 (their statistics): with the helper ended, nothing of
//!   it keeps a program loaded.
//!
//! The requests are `pipeline::enrich::privileged`'s; tests, and the start before the split, answer them
//! in-process (its `Local`).

pub mod client;
pub mod helper;
pub mod split;
pub mod wire;
