//! The system calls udptrace makes, by what makes them: the one list that the service's
//! `SystemCallFilter=` (deploy/systemd/udptrace.service, one line per group, kept equal by the test below)
//! allows, and that a filter installed by udptrace itself would allow.
//!
//! Found by running the static (musl) and the glibc build under `strace -f -c` through every command
//! (tracing with text, `--json`, `--summary`, `--metrics` with a scrape, both buffers, `check`, `probes`, a
//! stop by SIGINT and by SIGTERM, events from other network namespaces), and completed by reading the code
//! for what this host does not run: kprobe and fentry attachment (`perf_event_open`, `bpf`), owners found
//! through pidfds, abort's raise, a clock read without the vDSO. The scenario `syscall_filter` runs
//! udptrace under strace and fails on a call missing here. Names, not numbers: systemd and libseccomp
//! resolve each name for the architecture at hand, and skip one it lacks (aarch64 has no `open`, `stat`
//! or `epoll_wait`, only their `*at` and `epoll_pwait` forms, which are here too).

/// A group of system calls and why udptrace makes them.
pub struct Group {
    pub why: &'static str,
    pub calls: &'static [&'static str],
}

pub const SYSCALLS: &[Group] = &[
    Group {
        why: "The process: the C library's start (TLS, the stack guard, stdio checked open), threads (clone in musl, \
              clone3 in glibc), signals, the end (exit; abort's raise: getpid and tgkill in glibc, tkill in musl)",
        calls: &[
            "execve",
            "arch_prctl",
            "set_tid_address",
            "set_robust_list",
            "rseq",
            "access",
            "poll",
            "sigaltstack",
            "rt_sigaction",
            "rt_sigprocmask",
            "rt_sigreturn",
            "clone",
            "clone3",
            "futex",
            "gettid",
            "sched_getaffinity",
            "getrandom",
            "uname",
            "exit",
            "exit_group",
            "getpid",
            "tgkill",
            "tkill",
        ],
    },
    Group {
        why: "Memory: the allocators (glibc's; mimalloc in the static build, which asks sysinfo for the memory's \
              size), the BPF ring and perf buffers mapped",
        calls: &["brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "sysinfo"],
    },
    Group {
        why: "Time: a clock read where the vDSO falls back to the kernel (a clock source it cannot read)",
        calls: &["clock_gettime"],
    },
    Group {
        why: "Files: BTF, kallsyms, tracefs, cgroups, /proc/PID/fd and ns links, the output (open and stat in \
              musl, openat and statx in glibc)",
        calls: &[
            "open",
            "openat",
            "read",
            "pread64",
            "write",
            "writev",
            "close",
            "fcntl",
            "ioctl",
            "stat",
            "fstat",
            "newfstatat",
            "statx",
            "getdents64",
            "readlinkat",
        ],
    },
    Group {
        why: "eBPF: maps, programs, BTF, links; perf events for kprobes, tracepoints and perf buffers",
        calls: &["bpf", "perf_event_open"],
    },
    Group {
        why: "Privileges: checked, the memlock limit raised before 5.11, then all but what tracing keeps given up",
        calls: &["capget", "capset", "prctl", "geteuid", "prlimit64"],
    },
    Group {
        why: "The event loop (tokio): readiness (epoll_pwait in musl), wake-ups, signals; membarrier for the \
              tally's switch of maps",
        calls: &["epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "eventfd2", "socketpair", "membarrier"],
    },
    Group {
        why: "Sockets: the metrics port, sock_diag and route netlink, `check`'s probes and their error queue",
        calls: &[
            "socket",
            "bind",
            "listen",
            "accept4",
            "connect",
            "getsockname",
            "getpeername",
            "getsockopt",
            "setsockopt",
            "sendto",
            "recvfrom",
            "recvmsg",
            "shutdown",
        ],
    },
    Group {
        why: "Other namespaces and processes: a thread enters a network namespace; a socket's owner by pidfd",
        calls: &["setns", "pidfd_open", "pidfd_getfd"],
    },
];

/// Every name, in the table's order.
pub fn names() -> impl Iterator<Item = &'static str> {
    SYSCALLS.iter().flat_map(|group| group.calls.iter().copied())
}

/// The unit's filter: per group, its why as a comment (wrapped as the unit's comments are) and its
/// `SystemCallFilter=` line, systemd joining the lines into one allow list.
pub fn unit_block() -> String {
    const WIDTH: usize = 110;
    let mut block = String::new();
    for group in SYSCALLS {
        let mut line = String::from("#");
        for word in group.why.split_whitespace() {
            if line.len() + 1 + word.len() > WIDTH {
                block.push_str(&line);
                block.push('\n');
                line = String::from("#");
            }
            line.push(' ');
            line.push_str(word);
        }
        block.push_str(&line);
        block.push_str(&format!("\nSystemCallFilter={}\n", group.calls.join(" ")));
    }
    block
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const UNIT: &str = include_str!("../../../deploy/systemd/udptrace.service");

    /// The unit allows exactly the table, group by group: after a change here, copy the block this prints.
    #[test]
    fn the_unit_filters_with_this_table() {
        let block = unit_block();
        let lines = UNIT.lines().filter(|l| l.starts_with("SystemCallFilter=")).count();
        assert!(
            UNIT.contains(&block) && lines == SYSCALLS.len(),
            "deploy/systemd/udptrace.service's SystemCallFilter= lines differ from udptrace/src/kernel/syscalls.rs; \
             they should read, with nothing else of the kind:\n{block}"
        );
    }

    #[test]
    fn each_name_once() {
        let mut seen = HashSet::new();
        for name in names() {
            assert!(seen.insert(name), "{name} is listed twice");
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
        }
    }
}
