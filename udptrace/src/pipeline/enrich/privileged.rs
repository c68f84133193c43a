//! What the tracer asks of the privileged helper (`privsep`, once it has split), and `Local`, which answers
//! it in-process: in the helper, and in a process that has not split (the start, tests).

use std::{
    collections::HashMap,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
    path::PathBuf,
    time::Instant,
};

use super::owner::{self, Lookup, Resolver};
use crate::pipeline::{
    counters::{self, RateLimits},
    netns,
};

/// What the tracer asks of the helper.
pub trait Privileged {
    /// The process /proc names for socket `ino`, for an event that arrived at `seen` (see
    /// [`Resolver::by_socket_inode`]).
    fn owner(&mut self, ino: u64, seen: Instant, may_wait: bool) -> Lookup;
    /// The session is ending (see [`Resolver::end`]).
    fn owners_end(&mut self);
    /// Whether socket `ino` is a tunnel's; `None` where it cannot be asked.
    fn tunnel(&mut self, ino: u64, pid: Option<u32>) -> Option<bool>;
    /// A sock_diag socket of network namespace `netns`, opened inside it.
    fn diag_socket(&mut self, netns: u64) -> io::Result<OwnedFd>;
    /// The ICMP rate-limit counters of every network namespace in use, by inode; empty where they cannot be
    /// asked.
    fn rate_limits(&mut self) -> Vec<(u64, Result<RateLimits, String>)>;
}

/// The requests answered in this process: by the helper, and by a process that has not split (tests).
#[derive(Default)]
pub struct Local {
    owners: Resolver,
    /// Where the namespaces in use can be opened; read again when one cannot be.
    namespaces: HashMap<u64, PathBuf>,
}

impl Local {
    #[cfg(test)]
    pub fn with_owners(owners: Resolver) -> Self {
        Self { owners, namespaces: HashMap::new() }
    }

    /// A handle to `netns`, opened now. A path that no longer leads to it (its process exited, its name was
    /// deleted, its inode number went to a new namespace) is looked for again; a namespace no process is in
    /// and no name refers to is not entered.
    fn namespace(&mut self, netns: u64) -> io::Result<std::fs::File> {
        if let Some(path) = self.namespaces.get(&netns)
            && let Ok(file) = netns::open(netns, path)
        {
            return Ok(file);
        }
        self.namespaces = netns::paths();
        match self.namespaces.get(&netns) {
            Some(path) => netns::open(netns, path),
            None => Err(io::Error::other("no process is in it and no name refers to it any more")),
        }
    }
}

impl Privileged for Local {
    fn owner(&mut self, ino: u64, seen: Instant, may_wait: bool) -> Lookup {
        self.owners.by_socket_inode(ino, seen, may_wait)
    }

    fn owners_end(&mut self) {
        self.owners.end();
    }

    fn tunnel(&mut self, ino: u64, pid: Option<u32>) -> Option<bool> {
        let kind = self.owners.descriptor(ino, pid).and_then(|(pid, fd)| owner::encap_type(pid, fd, ino));
        Some(kind.is_some_and(|kind| kind != 0))
    }

    fn diag_socket(&mut self, netns: u64) -> io::Result<OwnedFd> {
        let namespace = self.namespace(netns)?;
        netns::inside(&namespace, || {
            // SAFETY: socket(2) with constant arguments; the descriptor it returns is owned at once.
            let fd =
                unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a descriptor just returned, owned by nothing else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
    }

    fn rate_limits(&mut self) -> Vec<(u64, Result<RateLimits, String>)> {
        counters::read_every_namespace()
    }
}
