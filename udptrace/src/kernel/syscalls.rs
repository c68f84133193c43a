//! The system calls udptrace makes, by what makes them and on which side of the split: the one list that the
//! service's `SystemCallFilter=` allows the whole process (deploy/systemd/udptrace.service, one line per group,
//! kept equal by the test below), and whose tracer's groups are the filter the tracer puts on itself
//! ([`install_tracer_filter`]).
//!
//! udptrace loads and attaches its programs with the privileges it was given ([`Side::Start`]), then forks:
//! the parent, the tracer, gives up its user, its groups and its capabilities, then every call its groups do
//! not name ([`Side::Tracer`]); the child, the helper, keeps the few capabilities its answers need
//! ([`Side::Helper`]). The unit's filter holds for both, so it allows every side's calls; the tracer's own is
//! narrower: no perf event, no namespace entered, no pidfd, no change of privileges, no exec.
//!
//! Found by running the static (musl) and the glibc build under `strace -f -c` through every command
//! (tracing with text, `--json`, `--summary`, `--metrics` with a scrape, both buffers, `check`, `probes`, a
//! stop by SIGINT and by SIGTERM, events from other network namespaces), the tracer's side as what udptrace
//! called once it had given up its capabilities (`strace -f`, from its last `capset` on), and completed by
//! reading the code for what this host does not run: kprobe and fentry attachment (`perf_event_open`,
//! `bpf`), owners found through pidfds, abort's raise, a clock read without the vDSO, a wait restarted after
//! a stop, mimalloc's spins, the split itself (the fork, what each side gives up, the requests between them). The scenario `syscall_filter` runs udptrace
//! under strace and fails on a call missing here. Names, not numbers: systemd (through libseccomp) and
//! [`install_tracer_filter`] (through the `syscall_numbers` crate's tables) resolve each name for the
//! architecture at hand, and skip one it lacks: aarch64 has no `open`, `stat`, `access`, `poll`, `epoll_wait`,
//! `fork`, `dup2` or `arch_prctl`, only the `*at`, `ppoll`, `epoll_pwait`, `clone` and `dup3` forms, which are
//! here too.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::c_long,
};

use Side::{Helper, Start, Tracer};
use anyhow::{Context as _, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// Where in udptrace's life a group's calls are made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Before the tracer filters itself: loading and attaching with the privileges given, the fork, and the
    /// tracer giving its own up; and throughout, what does not split (`probes`, `check` without root).
    Start,
    /// The privileged helper, the child of the split, for as long as it runs.
    Helper,
    /// The tracer, the unprivileged parent, once its filter is on: what [`install_tracer_filter`] allows.
    Tracer,
}

/// A group of system calls, why udptrace makes them, and which sides do (each call of the group is made by
/// at least one of them, not necessarily by each).
pub struct Group {
    pub why: &'static str,
    pub sides: &'static [Side],
    pub calls: &'static [&'static str],
}

pub const SYSCALLS: &[Group] = &[
    Group {
        why: "The start: the C library's (TLS; the loader's preload check and its reads of the libraries), the \
              kernel's version for the loader, the memory's size for mimalloc in the static build",
        sides: &[Start],
        calls: &["execve", "arch_prctl", "access", "pread64", "uname", "sysinfo"],
    },
    Group {
        why: "Threads, signals and the end, on every side: threads (clone in musl, clone3 in glibc, which \
              registers each with set_robust_list and rseq; each reads its stack's bounds, sched_getaffinity in \
              glibc, and sets an alternate signal stack, hash keys and its name, prctl PR_SET_NAME: the metrics \
              server's thread starts in the tracer), mimalloc's spins (sched_yield), signals (tokio's; \
              restart_syscall: a wait with a timeout that a stop and continue interrupted), the end (exit; \
              abort's raise: getpid and tgkill in glibc, tkill in musl). prctl is the split's too, before the \
              tracer's filter: PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, and PR_SET_PDEATHSIG in \
              the helper",
        sides: &[Start, Helper, Tracer],
        calls: &[
            "clone",
            "clone3",
            "set_robust_list",
            "rseq",
            "sched_getaffinity",
            "sigaltstack",
            "sched_yield",
            "rt_sigaction",
            "rt_sigprocmask",
            "rt_sigreturn",
            "restart_syscall",
            "futex",
            "gettid",
            "getrandom",
            "prctl",
            "exit",
            "exit_group",
            "getpid",
            "tgkill",
            "tkill",
        ],
    },
    Group {
        why: "Memory: the allocators (glibc's; mimalloc in the static build, which purges with madvise), thread \
              stacks, the BPF ring and perf buffers mapped",
        sides: &[Start, Helper, Tracer],
        calls: &["brk", "mmap", "munmap", "mremap", "mprotect", "madvise"],
    },
    Group {
        why: "Time: a clock read where the vDSO falls back to the kernel (a clock source it cannot read)",
        sides: &[Start, Helper, Tracer],
        calls: &["clock_gettime"],
    },
    Group {
        why: "The length of a tick, for the drop program (the resolution of CLOCK_MONOTONIC_COARSE: a call in musl, \
              the vDSO in glibc)",
        sides: &[Start],
        calls: &["clock_getres"],
    },
    Group {
        why: "Files: BTF, tracefs, kallsyms (the tracer reads it again through the descriptor opened before the \
              split: lseek), cgroups, /proc/PID/stat and cgroup, /proc/PID/fd in the helper, the output (open \
              and stat in musl, openat and statx in glibc); ioctl: the perf events enabled, and disabled as the \
              tracer closes its perf buffers",
        sides: &[Start, Helper, Tracer],
        calls: &[
            "open",
            "openat",
            "read",
            "write",
            "writev",
            "close",
            "lseek",
            "fcntl",
            "ioctl",
            "stat",
            "fstat",
            "newfstatat",
            "statx",
            "getdents64",
        ],
    },
    Group {
        why: "Files of --pcap, which the tracer creates 0600: one that existed is made 0600 too",
        sides: &[Tracer],
        calls: &["fchmod"],
    },
    Group {
        why: "Links in /proc: /proc/self at start, other processes' /proc/PID/fd and ns/net links in the helper",
        sides: &[Start, Helper],
        calls: &["readlinkat"],
    },
    Group {
        why: "eBPF: maps, programs, BTF and links at start; then the maps read and written and the programs' \
              statistics, by the tracer from 5.19, and before it by the helper where unprivileged BPF is off \
              (every command needed CAP_BPF: kernel/bpf/syscall.c `__sys_bpf`, narrowed by commit c8644cd0efe7)",
        sides: &[Start, Helper, Tracer],
        calls: &["bpf"],
    },
    Group {
        why: "Perf events for kprobes, tracepoints and perf buffers, opened before the split",
        sides: &[Start],
        calls: &["perf_event_open"],
    },
    Group {
        why: "The event loop (tokio), the session's and the metrics server's: readiness (epoll_pwait in musl), \
              wake-ups; membarrier for the tally's switch of maps",
        sides: &[Start, Tracer],
        calls: &["epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "eventfd2", "membarrier"],
    },
    Group {
        why: "Sockets: the metrics port served, sock_diag netlink (the tracer opens its own namespace's, the \
              helper another's inside it), route netlink, ctnetlink (the helper's, conntrack's entry of a flow), \
              `check`'s probes, their peer, pending error and error queue, a socket's tunnel type (UDP_ENCAP); \
              the requests between the tracer and the helper and their answers (sendmsg, recvmsg: descriptors \
              passed by SCM_RIGHTS)",
        sides: &[Start, Helper, Tracer],
        calls: &[
            "socket",
            "bind",
            "connect",
            "getsockname",
            "getpeername",
            "getsockopt",
            "setsockopt",
            "sendto",
            "recvfrom",
            "sendmsg",
            "recvmsg",
            "accept4",
            "shutdown",
        ],
    },
    Group {
        why: "Sockets before the split and in the helper: the metrics port listened on",
        sides: &[Start, Helper],
        calls: &["listen"],
    },
    Group {
        why: "Privileges: checked, the memlock limit raised before 5.11; at the split, the tracer gives up its \
              user, groups and capabilities and puts its filter on, the helper gives up the capabilities it \
              does not use",
        sides: &[Start, Helper],
        calls: &["capget", "geteuid", "prlimit64", "capset", "setresuid", "setresgid", "setgroups", "seccomp"],
    },
    Group {
        why: "The split: the fork (clone in glibc and on aarch64), the socketpair between the sides (and tokio's \
              signal pipe); the helper points stdin and stdout at /dev/null (dup2, dup3 on aarch64) and checks \
              after PR_SET_PDEATHSIG that the tracer is still its parent (getppid); set_tid_address: the C \
              library's start, and musl's fork child",
        sides: &[Start, Helper],
        calls: &["fork", "socketpair", "dup2", "dup3", "getppid", "set_tid_address"],
    },
    Group {
        why: "Waits, and the helper's end: a descriptor polled (poll, ppoll on aarch64: the C library's check at \
              start that stdio is open, `check`'s probes, the tracer's look whether the helper closed its end), \
              the helper reaped by the tracer (wait4, sleeping between tries: nanosleep in musl, clock_nanosleep \
              in glibc)",
        sides: &[Start, Tracer],
        calls: &["poll", "ppoll", "nanosleep", "clock_nanosleep", "wait4"],
    },
    Group {
        why: "Other namespaces and processes, in the helper: a thread enters a network namespace; a socket's \
              owner by pidfd",
        sides: &[Helper],
        calls: &["setns", "pidfd_open", "pidfd_getfd"],
    },
];

/// The calls `side` makes, in the table's order.
pub fn calls_of(side: Side) -> impl Iterator<Item = &'static str> {
    SYSCALLS.iter().filter(move |group| group.sides.contains(&side)).flat_map(|group| group.calls.iter().copied())
}

/// One architecture's system calls by name, from the two functions of its `syscall_numbers` module (a
/// `c_long` is seccompiler's `i64` on the 64-bit architectures it filters).
fn by_name(valid: fn(c_long) -> bool, name: fn(c_long) -> Option<&'static str>) -> HashMap<&'static str, i64> {
    (0..).take_while(|&nr| valid(nr)).filter_map(|nr| Some((name(nr)?, nr))).collect()
}

/// The filter allowing the calls `side` makes, by their `numbers` on `arch`: a name the architecture lacks is
/// skipped, as systemd skips it. Any other call fails with EPERM, as the unit has it
/// (`SystemCallErrorNumber=`): a call of a path not met yet fails as that feature's error, said and gone on
/// from, where killing the tracer would count nothing. A call of another architecture's ABI (a 32-bit
/// `int 0x80` on x86_64) kills the process, as `SystemCallArchitectures=native` does. Each call is allowed
/// whatever its arguments, so the kernel decides once per call number (5.11+, kernel/seccomp.c
/// `seccomp_cache_prepare`) and the calls allowed cost nothing more, except the two of [`limits`].
fn filter(side: Side, arch: TargetArch, numbers: &HashMap<&str, i64>) -> Result<BpfProgram> {
    let mut rules = BTreeMap::new();
    for name in calls_of(side) {
        if let Some(&nr) = numbers.get(name) {
            rules.insert(nr, if side == Tracer { limits(name)? } else { Vec::new() });
        }
    }
    let filter = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
        .context("building the system call filter")?;
    BpfProgram::try_from(filter).context("building the system call filter")
}

/// `include/uapi/asm-generic/ioctls.h`: pushing a byte into a terminal's input, and the Linux console's own
/// requests (which can do the same).
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541c;
/// `include/uapi/linux/sched.h`: the flags that make a namespace (CLONE_NEWTIME, 5.6, only clone3 and
/// unshare take).
const CLONE_NEW: u64 = 0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// The arguments the tracer may pass where a call alone would allow too much (empty: any):
/// - `ioctl`: not `TIOCSTI` (nor `TIOCLINUX`). Run from a shell, the tracer keeps the operator's terminal as
///   its controlling terminal, and `tiocsti()` (drivers/tty/tty_io.c) lets its owner type into it whatever
///   uid it runs as: into a root shell, once udptrace exits.
/// - `clone`: no namespace. A new user namespace gives the child every capability inside it, from which
///   the kernel's netlink interfaces (nf_tables) are within reach; `no_new_privs` does not prevent it. `clone3`
///   passes its flags in memory a filter cannot read: [`install_tracer_filter`] answers it ENOSYS.
fn limits(name: &str) -> Result<Vec<SeccompRule>> {
    let condition = |arg, len, op, value| SeccompCondition::new(arg, len, op, value);
    let rule = match name {
        "ioctl" => SeccompRule::new(vec![
            condition(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, TIOCSTI)?,
            condition(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, TIOCLINUX)?,
        ])?,
        "clone" => {
            SeccompRule::new(vec![condition(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(CLONE_NEW), 0)?])?
        }
        _ => return Ok(Vec::new()),
    };
    Ok(vec![rule])
}

/// A filter that answers `clone3` ENOSYS and allows every other call: the C library then makes its
/// threads with `clone`, whose flags the tracer's filter reads (glibc 2.34+ falls back on ENOSYS; musl
/// does not use `clone3`). Its answer overrides the tracer's filter's, which allows `clone3` (kernel/seccomp.c
/// `seccomp_run_filters`: of the filters' answers the most restrictive is the call's).
fn without_clone3(arch: TargetArch, numbers: &HashMap<&str, i64>) -> Result<Option<BpfProgram>> {
    let Some(&nr) = numbers.get("clone3") else { return Ok(None) };
    let filter = SeccompFilter::new(
        BTreeMap::from([(nr, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .context("building the clone3 filter")?;
    Ok(Some(BpfProgram::try_from(filter).context("building the clone3 filter")?))
}

/// The tracer's filter for the architecture udptrace was built for.
fn tracer_filter() -> Result<BpfProgram> {
    let (arch, numbers) = native()?;
    filter(Tracer, arch, &numbers)
}

/// The architecture udptrace was built for, and its system calls by name.
fn native() -> Result<(TargetArch, HashMap<&'static str, i64>)> {
    use syscall_numbers::native;
    let arch = TargetArch::try_from(std::env::consts::ARCH).context("no system call filter for this architecture")?;
    Ok((arch, by_name(native::is_valid_sys_call_number, native::sys_call_name)))
}

/// Puts the tracer's filter on every thread of this process, for good: on those running already (TSYNC), and
/// on those started after, as a thread takes its creator's filters. From then on a call no tracer's group
/// names fails with EPERM, so the process must have given up its privileges before: `setresuid` and the others
/// are not allowed after. seccompiler sets PR_SET_NO_NEW_PRIVS first, which a process without CAP_SYS_ADMIN
/// needs to install a filter at all (kernel/seccomp.c `seccomp_prepare_filter`), and which it keeps.
pub fn install_tracer_filter() -> Result<()> {
    // The clone3 filter first: the tracer's does not let `seccomp` through.
    let (arch, numbers) = native()?;
    if let Some(clone3) = without_clone3(arch, &numbers)? {
        seccompiler::apply_filter_all_threads(&clone3).context("cannot install the clone3 filter")?;
    }
    let program = tracer_filter()?;
    seccompiler::apply_filter_all_threads(&program).context("cannot install the tracer's system call filter")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const UNIT: &str = include_str!("../../../deploy/systemd/udptrace.service");

    /// A side as the unit's comments say it.
    fn words(side: Side) -> &'static str {
        match side {
            Start => "at start",
            Helper => "by the helper",
            Tracer => "by the tracer",
        }
    }

    /// The unit's filter: per group, its why and its sides as a comment (wrapped as the unit's comments are)
    /// and its `SystemCallFilter=` line, systemd joining the lines into one allow list.
    fn unit_block() -> String {
        const WIDTH: usize = 110;
        let mut block = String::new();
        for group in SYSCALLS {
            let mut sides: Vec<&str> = group.sides.iter().map(|&side| words(side)).collect();
            let last = sides.pop().expect("a side");
            let sides = if sides.is_empty() { last.to_owned() } else { format!("{} and {last}", sides.join(", ")) };
            let comment = format!("{}; made {sides}", group.why);
            let mut line = String::from("#");
            for word in comment.split_whitespace() {
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

    /// Every name, in the table's order.
    fn names() -> impl Iterator<Item = &'static str> {
        SYSCALLS.iter().flat_map(|group| group.calls.iter().copied())
    }

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
        assert!(SYSCALLS.iter().all(|group| !group.sides.is_empty()), "a group no side makes");
    }

    /// What aarch64 lacks: it has only the `*at`, `ppoll`, `epoll_pwait`, `clone` and `dup3` forms of the
    /// first seven (`access` is glibc's loader's, and the aarch64 build is static); `arch_prctl` is x86's alone.
    const ABSENT_ON_AARCH64: &[&str] = &["open", "stat", "access", "poll", "epoll_wait", "fork", "dup2", "arch_prctl"];

    fn x86_64() -> HashMap<&'static str, i64> {
        use syscall_numbers::x86_64;
        by_name(x86_64::is_valid_sys_call_number, x86_64::sys_call_name)
    }

    fn aarch64() -> HashMap<&'static str, i64> {
        use syscall_numbers::aarch64;
        by_name(aarch64::is_valid_sys_call_number, aarch64::sys_call_name)
    }

    /// Every name is a system call of x86_64, and of aarch64 but the known absent: a misspelt name would be
    /// skipped in silence, by systemd as by the tracer's filter.
    #[test]
    fn every_name_is_a_system_call() {
        let (x86_64, aarch64) = (x86_64(), aarch64());
        // A few numbers as the kernel's tables have them (arch/x86/entry/syscalls/syscall_64.tbl,
        // include/uapi/asm-generic/unistd.h).
        assert_eq!((x86_64["read"], x86_64["bpf"], x86_64["newfstatat"]), (0, 321, 262));
        assert_eq!((aarch64["read"], aarch64["bpf"], aarch64["newfstatat"]), (63, 280, 79));
        for name in names() {
            assert!(x86_64.contains_key(name), "{name} is no x86_64 system call");
            assert_eq!(
                aarch64.contains_key(name),
                !ABSENT_ON_AARCH64.contains(&name),
                "{name}: aarch64 has it, or lacks it, against ABSENT_ON_AARCH64"
            );
        }
    }

    /// The tracer gets what it makes after the split and nothing that only loading or the helper needs.
    #[test]
    fn the_tracer_gets_only_its_own_calls() {
        let tracer: HashSet<&str> = calls_of(Tracer).collect();
        let made = [
            "bpf",
            "clone",
            "futex",
            "mmap",
            "openat",
            "lseek",
            "epoll_pwait",
            "accept4",
            "membarrier",
            "sendmsg",
            "recvmsg",
            "poll",
            "nanosleep",
            "wait4",
        ];
        for name in made {
            assert!(tracer.contains(name), "the tracer makes {name}");
        }
        let not_made = [
            "perf_event_open",
            "setns",
            "pidfd_open",
            "pidfd_getfd",
            "capset",
            "prlimit64",
            "execve",
            "setresuid",
            "setresgid",
            "setgroups",
            "seccomp",
            "fork",
            "dup2",
            "getppid",
            "readlinkat",
        ];
        for name in not_made {
            assert!(!tracer.contains(name), "the tracer does not make {name}");
        }
    }

    /// The tracer's filter builds here and for both architectures udptrace is built for.
    #[test]
    fn the_tracers_filter_builds() {
        assert!(tracer_filter().is_ok_and(|program| !program.is_empty()));
        let on_x86_64 = filter(Tracer, TargetArch::x86_64, &x86_64()).unwrap();
        let on_aarch64 = filter(Tracer, TargetArch::aarch64, &aarch64()).unwrap();
        // aarch64 lacks a few of the names: fewer calls, a shorter program.
        assert!(on_aarch64.len() < on_x86_64.len());
    }

    /// What the child of [`a_call_outside_the_list_fails_with_eperm`] found, as its exit status.
    const CHILD_OK: i32 = 0;
    const CHILD_NOT_INSTALLED: i32 = 10;
    const CHILD_NO_NEW_PRIVS_UNSET: i32 = 11;
    const CHILD_GETPID_FAILED: i32 = 12;
    const CHILD_SETNS_NOT_EPERM: i32 = 13;
    const CHILD_PERF_EVENT_OPEN_NOT_EPERM: i32 = 14;
    const CHILD_TIOCSTI_NOT_EPERM: i32 = 15;
    const CHILD_NAMESPACE_NOT_EPERM: i32 = 16;
    const CHILD_CLONE3_NOT_ENOSYS: i32 = 17;
    const CHILD_NO_THREAD: i32 = 18;

    /// In a child with the tracer's filter on: `getpid` reaches the kernel, and `setns` and `perf_event_open`
    /// fail with EPERM, where the kernel itself would have said EBADF and EFAULT to their arguments.
    fn filtered_child() -> i32 {
        if install_tracer_filter().is_err() {
            return CHILD_NOT_INSTALLED;
        }
        let errno = || std::io::Error::last_os_error().raw_os_error();
        // SAFETY: calls on integers and a null pointer the kernel checks.
        unsafe {
            if libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 {
                return CHILD_NO_NEW_PRIVS_UNSET;
            }
            if libc::syscall(libc::SYS_getpid) <= 0 {
                return CHILD_GETPID_FAILED;
            }
            if libc::setns(-1, libc::CLONE_NEWNET) != -1 || errno() != Some(libc::EPERM) {
                return CHILD_SETNS_NOT_EPERM;
            }
            if libc::syscall(libc::SYS_perf_event_open, std::ptr::null::<u8>(), 0, -1, -1, 0) != -1
                || errno() != Some(libc::EPERM)
            {
                return CHILD_PERF_EVENT_OPEN_NOT_EPERM;
            }
            // Refused by the filter, where the kernel would say ENOTTY (or type the byte into a terminal).
            let byte = b'x';
            if libc::ioctl(libc::STDIN_FILENO, libc::TIOCSTI, &raw const byte) != -1 || errno() != Some(libc::EPERM) {
                return CHILD_TIOCSTI_NOT_EPERM;
            }
            // A new user namespace: refused, where the kernel would make one (SIGCHLD: a fork-like clone).
            let flags = (libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::SIGCHLD) as libc::c_ulong;
            let cloned = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
            if cloned == 0 {
                libc::_exit(0);
            }
            if cloned != -1 || errno() != Some(libc::EPERM) {
                return CHILD_NAMESPACE_NOT_EPERM;
            }
            if libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0) != -1 || errno() != Some(libc::ENOSYS) {
                return CHILD_CLONE3_NOT_ENOSYS;
            }
        }
        // A thread, as the metrics server starts one after the split: clone without a namespace.
        if std::thread::spawn(|| 7).join().ok() != Some(7) {
            return CHILD_NO_THREAD;
        }
        CHILD_OK
    }

    /// The filter as the tracer installs it, in a forked child (a filter stays for the life of a process):
    /// no privilege needed, PR_SET_NO_NEW_PRIVS is enough.
    #[test]
    fn a_call_outside_the_list_fails_with_eperm() {
        // SAFETY: the child makes system calls and builds the filter (glibc's and musl's fork leave the
        // allocator usable in the child), then leaves by _exit, running nothing of the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(filtered_child()) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "the child did not exit: status {status:#x}");
        let code = libc::WEXITSTATUS(status);
        let found = match code {
            CHILD_OK => return,
            CHILD_NOT_INSTALLED => "the filter could not be installed",
            CHILD_NO_NEW_PRIVS_UNSET => "PR_SET_NO_NEW_PRIVS was not set",
            CHILD_GETPID_FAILED => "getpid failed",
            CHILD_SETNS_NOT_EPERM => "setns did not fail with EPERM",
            CHILD_PERF_EVENT_OPEN_NOT_EPERM => "perf_event_open did not fail with EPERM",
            CHILD_TIOCSTI_NOT_EPERM => "ioctl(TIOCSTI) did not fail with EPERM",
            CHILD_NAMESPACE_NOT_EPERM => "clone(CLONE_NEWUSER) did not fail with EPERM",
            CHILD_CLONE3_NOT_ENOSYS => "clone3 did not fail with ENOSYS",
            CHILD_NO_THREAD => "no thread could be started",
            _ => "an unknown exit status",
        };
        panic!("in the filtered child: {found} ({code})");
    }
}
