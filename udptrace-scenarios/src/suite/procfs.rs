//! What `/proc` says of a udptrace's processes: each thread's identity, capabilities, no-new-privileges and
//! seccomp (`/proc/PID/task/TID/status`), and the tracer's helper, its child (`/proc/PID/stat`); and of the
//! running kernel, its version.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// The name (comm) of the tracer's privileged helper (`udptrace/src/privsep/`).
pub(super) const HELPER_NAME: &str = "udptrace-helper";

/// How long the helper may take to show up under its name once the tracer says it is tracing: it forks and
/// names itself (`PR_SET_NAME`) on its own, which under emulation may come a moment after the line.
const HELPER_APPEARS: Duration = Duration::from_secs(5);

/// One thread's `/proc/PID/task/TID/status`, and how the checks name it.
pub(super) struct ThreadStatus {
    /// `tracer thread 1234 (udptrace)`: the role, the thread id and its name.
    pub(super) label: String,
    text: String,
}

impl ThreadStatus {
    /// The status `text` of thread `tid` of a process playing `role`.
    pub(super) fn new(role: &str, tid: &str, text: String) -> Self {
        let mut status = Self { label: String::new(), text };
        status.label = format!("{role} thread {tid} ({})", status.field("Name").unwrap_or("?"));
        status
    }

    /// The value of `field` (`Name`, `CapEff`, `Groups`...), trimmed: an exact key, so that `Seccomp` is
    /// not `Seccomp_filters` (5.9 on).
    pub(super) fn field(&self, field: &str) -> Option<&str> {
        self.text.lines().find_map(|line| line.split_once(':').filter(|(key, _)| *key == field).map(|(_, v)| v.trim()))
    }

    /// A capability set (`CapEff`, ...), written in hex.
    pub(super) fn mask(&self, field: &str) -> Option<u64> {
        u64::from_str_radix(self.field(field)?, 16).ok()
    }

    /// A list of ids (`Uid`, `Gid`: real, effective, saved, filesystem; `Groups`: the supplementary
    /// groups, none for an empty line).
    pub(super) fn ids(&self, field: &str) -> Option<Vec<u32>> {
        self.field(field)?.split_whitespace().map(|id| id.parse().ok()).collect()
    }
}

/// Every thread of process `pid`, which plays `role` (`tracer`, `helper`) in the failure texts. A thread
/// that ends between the listing and its read (a runtime's idle worker) is left out.
pub(super) fn threads_of(pid: u32, role: &str) -> Result<Vec<ThreadStatus>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).with_context(|| format!("{role} {pid}'s threads"))?;
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        match std::fs::read_to_string(task.path().join("status")) {
            Ok(text) => threads.push(ThreadStatus::new(role, &tid, text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e).with_context(|| format!("{role} thread {tid}'s status")),
        }
    }
    if threads.is_empty() {
        bail!("{role} {pid} has no thread left");
    }
    Ok(threads)
}

/// What the checks read of a process's `/proc/PID/stat`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Stat {
    pub(super) comm: String,
    /// `R`, `S`, ... `Z` for a zombie: dead, not yet reaped.
    pub(super) state: char,
    pub(super) ppid: u32,
}

impl Stat {
    /// `1234 (name) S 1 ...`: the name is whatever the process set (spaces and parentheses too), so it
    /// ends at the last `)`.
    pub(super) fn parse(text: &str) -> Option<Self> {
        let (head, rest) = text.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_owned();
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        Some(Self { comm, state, ppid })
    }

    /// The stat of process `pid`, if it exists.
    pub(super) fn of(pid: u32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }
}

/// The living (not zombie) children of process `pid`, with their stat.
fn children_of(pid: u32) -> Result<Vec<(u32, Stat)>> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").context("listing /proc")?.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|name| name.parse().ok()) else { continue };
        // A process may end between the listing and its read.
        if let Some(stat) = Stat::of(child).filter(|s| s.ppid == pid && s.state != 'Z') {
            children.push((child, stat));
        }
    }
    Ok(children)
}

/// The helper of the tracer `pid`: its one child, named `udptrace-helper`.
pub(super) fn helper_of(pid: u32) -> Result<u32> {
    let deadline = Instant::now() + HELPER_APPEARS;
    loop {
        let children = children_of(pid)?;
        if let [(helper, stat)] = children.as_slice()
            && stat.comm == HELPER_NAME
        {
            return Ok(*helper);
        }
        if Instant::now() > deadline {
            let found: Vec<String> = children.iter().map(|(child, stat)| format!("{child} ({})", stat.comm)).collect();
            bail!("the tracer {pid} has {} children ({}), want one named {HELPER_NAME}", found.len(), found.join(", "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the helper `pid` still runs: a process of that id, named so, and not a zombie (an orphan
/// waits for its reaper).
pub(super) fn helper_alive(pid: u32) -> bool {
    Stat::of(pid).is_some_and(|stat| stat.comm == HELPER_NAME && stat.state != 'Z')
}

/// The running kernel's release, uname's (`5.10.0-35-amd64`).
pub(super) fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned()
}

/// A kernel's version, `(major, minor)`, from its `release`.
pub(super) fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The running kernel's version, `(major, minor)`: (0, 0), older than any, if its release has none.
pub(super) fn running_kernel() -> (u32, u32) {
    kernel_version(&kernel_release()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tudptrace\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t65534\t65534\t65534\t65534\n\
        Gid:\t65534\t65534\t65534\t65534\nGroups:\t\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n\
        CapInh:\t0000000000000000\nCapPrm:\t0000000000280004\nCapEff:\t0000000000280004\n\
        CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";

    #[test]
    fn reads_a_threads_status() {
        let status = ThreadStatus::new("tracer", "4321", STATUS.to_owned());
        assert_eq!(status.label, "tracer thread 4321 (udptrace)");
        assert_eq!(status.ids("Uid"), Some(vec![65534; 4]));
        assert_eq!(status.ids("Groups"), Some(vec![]));
        assert_eq!(status.mask("CapEff"), Some(1 << 2 | 1 << 19 | 1 << 21));
        assert_eq!(status.mask("CapBnd"), Some((1 << 41) - 1));
        assert_eq!(status.mask("CapInh"), Some(0));
        assert_eq!(status.field("Seccomp"), Some("2"));
        assert_eq!(status.field("NoNewPrivs"), Some("1"));
        assert_eq!(status.field("Cap"), None);
    }

    #[test]
    fn reads_supplementary_groups_and_refuses_garbage() {
        let status = ThreadStatus::new("helper", "1", "Groups:\t0 4 27 \nUid:\t0\tx\nCapEff:\tzz\n".to_owned());
        assert_eq!(status.label, "helper thread 1 (?)");
        assert_eq!(status.ids("Groups"), Some(vec![0, 4, 27]));
        assert_eq!(status.ids("Uid"), None);
        assert_eq!(status.mask("CapEff"), None);
        assert_eq!(status.ids("Gid"), None);
    }

    #[test]
    fn reads_a_stat_whatever_the_name() {
        assert_eq!(
            Stat::parse("77 (udptrace-helper) S 76 77 1 0 -1 4194560 93 0 0 0"),
            Some(Stat { comm: HELPER_NAME.to_owned(), state: 'S', ppid: 76 })
        );
        assert_eq!(
            Stat::parse("78 (a) Z (b) Z 1 78 1 0"),
            Some(Stat { comm: "a) Z (b".to_owned(), state: 'Z', ppid: 1 })
        );
        assert_eq!(Stat::parse("79 (cut"), None);
        assert_eq!(Stat::parse("80 (x) R"), None);
    }

    #[test]
    fn reads_the_kernel_version() {
        assert_eq!(kernel_version("5.10.0-35-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(kernel_version("7.0+deb14-amd64"), Some((7, 0)));
        assert_eq!(kernel_version("6.1-rc3"), Some((6, 1)));
        assert_eq!(kernel_version("linux"), None);
        assert_eq!(kernel_version("6"), None);
        let (major, _) = running_kernel();
        assert!(major >= 4, "{}", kernel_release());
    }
}
