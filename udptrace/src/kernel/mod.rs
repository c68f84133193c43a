//! What udptrace asks of the kernel, and what it knows of it:
//!
//! - `hooks`: the attach table (each logical hook, per mode, its programs and targets);
//! - `btf`: the running kernel's structure layout and functions, from its BTF;
//! - `conntrack`: where conntrack keeps a connection, once its module is there;
//! - `kallsyms`: where a few kernel functions' text lies, for the programs that check their callers;
//! - `loader`: loading the eBPF object with those offsets and walking the attach ladder;
//! - `maps`: the programs' maps once loaded, read and written with this process's descriptors or the
//!   privileged helper's;
//! - `netlink`: a request and its answer on a netlink socket (sock_diag, rtnetlink, ctnetlink);
//! - `misses`: the runs of the programs the kernel skipped, counted as lost;
//! - `privileges`: the capabilities that takes;
//! - `probes`: `udptrace probes`, the table tried on this kernel;
//! - `syscalls`: the system calls udptrace makes, by side of the split: the service's filter allows
//!   them all, the tracer's own filter its side's;

pub mod btf;
pub mod conntrack;
pub mod hooks;
pub mod kallsyms;
pub mod loader;
pub mod maps;
pub mod misses;
pub mod netlink;
pub mod privileges;
pub mod probes;
pub mod syscalls;
