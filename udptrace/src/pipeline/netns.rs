//! Network namespaces: every one in use, and doing something inside one. The rate-limit counters and the
//! socket-table lookups read what a namespace shows only to its own members.

use std::{
    collections::HashMap,
    fs::{self, File},
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

/// Every network namespace in use (a process is in it, or `ip netns` named it), by inode, with a handle
/// to enter it. Holding the handles keeps the namespaces alive: drop them soon.
pub fn namespaces() -> HashMap<u64, File> {
    paths().into_iter().filter_map(|(ino, path)| Some((ino, open(ino, &path).ok()?))).collect()
}

/// Where each network namespace in use can be opened, by inode. Nothing is held open.
pub fn paths() -> HashMap<u64, PathBuf> {
    let mut found = HashMap::new();
    let procs = procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
        .map(|p| PathBuf::from(format!("/proc/{}/ns/net", p.pid())));
    let named = fs::read_dir("/run/netns").into_iter().flatten().flatten().map(|e| e.path());
    for path in procs.chain(named) {
        if let Ok(meta) = fs::metadata(&path) {
            found.entry(meta.ino()).or_insert(path);
        }
    }
    found
}

/// Up to `max` processes in network namespace `ino`, lowest pids first (reading another process's
/// `ns/net` takes CAP_SYS_PTRACE).
pub fn members(ino: u64, max: usize) -> Vec<u32> {
    let mut pids: Vec<i32> =
        procfs::process::all_processes().into_iter().flatten().flatten().map(|p| p.pid()).collect();
    pids.sort_unstable();
    pids.into_iter()
        .filter(|pid| fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino))
        .filter_map(|pid| u32::try_from(pid).ok())
        .take(max)
        .collect()
}

/// Opens the namespace `ino` at `path`, if `path` still is that namespace.
pub fn open(ino: u64, path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    if file.metadata()?.ino() != ino {
        return Err(io::Error::other(format!("{} is another namespace now", path.display())));
    }
    Ok(file)
}

/// The inode of udptrace's own network namespace.
pub fn own() -> Option<u64> {
    fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
}

/// Runs `work` on a short-lived thread that entered `ns` (CAP_SYS_ADMIN): what it opens there (a file in
/// `/proc/thread-self/net`, a socket) belongs to that namespace.
pub fn inside<T: Send>(ns: &File, work: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: a valid namespace fd; setns changes only this thread.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                work()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the thread in the namespace panicked")))
    })
}
