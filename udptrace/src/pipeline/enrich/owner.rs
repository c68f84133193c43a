//! The process, cgroup and container behind a socket.
//!
//! The programs record the process that created or last connected each socket. For a socket created before
//! udptrace started (or where the cgroup programs could not attach), the socket's inode is looked up in
//! `/proc/*/fd`, as `ss -p` does: cached, and rescanned at most once a second; an event whose socket the last
//! scan could not have seen waits for the next one. The lowest pid holding it is named, unless that is PID 1
//! and another process holds it too, and the event says how many hold it. Unknown stays unknown.
//!
//! Other users' `/proc/PID/fd` take CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH: the [`Resolver`] runs in the
//! privileged helper, which answers the tracer's lookups. The cgroups ([`Cgroups`]) every user
//! may read: the tracer completes the owner itself.

use std::{
    collections::HashMap,
    fs,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::PathBuf,
    time::{Duration, Instant},
};

use procfs::process::{FDTarget, Process};

use super::recent::Recent;
use crate::domain::OwnerInfo;

/// What /proc says of a socket: its [`Holder`], or, once completed with its cgroup, its owner.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T = Holder> {
    Found(T),
    /// No process holds it.
    Unknown,
    /// Not in the last scan, which is too recent to repeat: ask again from this instant.
    Later(Instant),
    /// /proc could not be asked: the privileged helper that reads it is gone. Nothing is known, not even
    /// whether a process holds the socket.
    Unasked,
}

impl<T> Lookup<T> {
    /// The same answer, what was found made into `found(it)`.
    pub fn map<U>(self, found: impl FnOnce(T) -> U) -> Lookup<U> {
        match self {
            Lookup::Found(it) => Lookup::Found(found(it)),
            Lookup::Unknown => Lookup::Unknown,
            Lookup::Later(at) => Lookup::Later(at),
            Lookup::Unasked => Lookup::Unasked,
        }
    }
}

/// The process /proc names for a socket: the lowest pid holding it (see [`Holders`]), its name, and how
/// many processes hold it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    pub holders: u32,
}

impl Holder {
    /// The owner an event shows; [`Cgroups::complete`] adds its cgroup and container.
    pub fn owner(self) -> OwnerInfo {
        // `/proc/PID/stat` names the process (its leader); which thread made the socket is not known here.
        OwnerInfo { pid: self.pid, comm: Some(self.comm), holders: Some(self.holders), ..OwnerInfo::default() }
    }
}

/// `UDP_ENCAP` (include/uapi/linux/udp.h): the tunnel type of a UDP socket, 0 for none.
const UDP_ENCAP: libc::c_int = 100;

/// The tunnel type (`UDP_ENCAP`) of the socket `ino` that process `pid` holds as descriptor `fd`: the descriptor
/// is duplicated through `pidfd_getfd` (5.6; root may, as a debugger would), asked, and closed. `None` where it
/// cannot be, or where the copy is not that socket: `(pid, fd)` comes from a /proc scan, and since then the
/// process may have closed the descriptor and opened another, or exited and left its pid to another process,
/// in another container.
pub fn encap_type(pid: i32, fd: i32, ino: u64) -> Option<libc::c_int> {
    // SAFETY: plain syscalls on integers; every descriptor they return is owned below and closed.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        let pidfd = OwnedFd::from_raw_fd(i32::try_from(pidfd).ok().filter(|&f| f >= 0)?);
        let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        let copy = OwnedFd::from_raw_fd(i32::try_from(copy).ok().filter(|&f| f >= 0)?);
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(copy.as_raw_fd(), &mut stat) != 0 || stat.st_ino != ino {
            return None;
        }
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        let got = libc::getsockopt(copy.as_raw_fd(), libc::SOL_UDP, UDP_ENCAP, (&raw mut value).cast(), &mut len);
        (got == 0).then_some(value)
    }
}

/// At most this many sockets are remembered from a /proc scan; a larger host is rescanned on demand.
const MAX_CACHED_SOCKETS: usize = 200_000;
const RESCAN_AFTER: Duration = Duration::from_secs(1);

/// The processes that hold one socket, as a /proc scan found them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holders {
    /// The one named: the lowest pid, but not PID 1 when another holds it too (a service manager that
    /// passed the socket to the service it started, systemd's socket activation, keeps its copy).
    named: i32,
    /// How many processes hold it.
    count: u32,
    /// The last pid counted (the scan goes in pid order, so a process's several fds count once).
    last: i32,
    /// One of the named process's descriptors for the socket.
    fd: i32,
}

impl Holders {
    /// The named process, if it still holds the socket `ino` as the descriptor the scan found.
    fn holding(&self, ino: u64) -> Option<Process> {
        let process = Process::new(self.named).ok()?;
        (process.fd_from_fd(self.fd).ok()?.target == FDTarget::Socket(ino)).then_some(process)
    }

    fn note(sockets: &mut HashMap<u64, Holders>, ino: u64, pid: i32, fd: i32) {
        let holders = sockets.entry(ino).or_insert(Holders { named: pid, count: 0, last: 0, fd });
        if holders.last != pid {
            holders.count += 1;
            holders.last = pid;
        }
        if holders.named == 1 && pid != 1 {
            holders.named = pid;
            holders.fd = fd;
        }
    }
}

/// Fills a map of socket inodes to their holders: [`scan_proc`], or a test's stand-in.
type Scan = Box<dyn FnMut(&mut HashMap<u64, Holders>)>;

pub struct Resolver {
    /// socket inode -> its holders, from the last /proc scan.
    sockets: HashMap<u64, Holders>,
    last_scan: Option<Instant>,
    scan: Scan,
    /// When the session began to end: every event still to come happened before it (the programs were
    /// told to hand over nothing more), so the first scan after it answers them all.
    ended: Option<Instant>,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::with_scan(Box::new(scan_proc))
    }
}

impl Resolver {
    fn with_scan(scan: Scan) -> Self {
        Self { sockets: HashMap::new(), last_scan: None, scan, ended: None }
    }

    /// The session is ending: what is looked up from now on happened before now (see
    /// [`Resolver::by_socket_inode`]).
    pub fn end(&mut self) {
        self.ended.get_or_insert_with(Instant::now);
    }

    /// The owner of the socket with inode `ino`, from /proc, for an event that arrived at `seen`.
    ///
    /// A socket missing from the last scan is only unknown if that scan began after the event arrived
    /// (the socket existed throughout, so no process held it). Otherwise /proc is scanned again, at most
    /// once every `RESCAN_AFTER`: until then the answer is `Later`, unless `may_wait` is false (the
    /// session is ending, or too many events wait), which scans at once. A scan that began after the event
    /// answers it even for a socket whose holder let it go since, when it may not wait: one scan answers
    /// every event that arrived before it, however many sockets no process holds (the kernel's own: a
    /// tunnel's), instead of one scan per socket. Once the session ends, an event counts as arrived by then
    /// (it was recorded before the programs were told to stop), so the final drain scans at most once.
    ///
    /// A holder from a scan is named only while it still holds the socket: its descriptor is read again
    /// through the process's own `/proc/PID` directory, which refers to that process alone (once it exits, a
    /// new process given its pid is not reached through it), and the name is read through the same directory.
    /// Since the scan, the process may have closed the descriptor, or exited and left its pid to another.
    pub fn by_socket_inode(&mut self, ino: u64, seen: Instant, may_wait: bool) -> Lookup {
        let seen = self.ended.map_or(seen, |ended| seen.min(ended));
        let cached = self.sockets.get(&ino).copied();
        let (holders, process) = match cached.and_then(|h| Some((h, h.holding(ino)?))) {
            Some(found) => found,
            None => {
                match self.last_scan {
                    Some(scan) if scan >= seen && (cached.is_none() || !may_wait) => return Lookup::Unknown,
                    Some(scan) if may_wait && scan.elapsed() < RESCAN_AFTER => {
                        return Lookup::Later(scan + RESCAN_AFTER);
                    }
                    _ => self.scan_proc(),
                }
                match self.sockets.get(&ino).copied().and_then(|h| Some((h, h.holding(ino)?))) {
                    Some(found) => found,
                    None => return Lookup::Unknown,
                }
            }
        };
        let (Ok(stat), Ok(pid)) = (process.stat(), u32::try_from(holders.named)) else {
            return Lookup::Unknown;
        };
        Lookup::Found(Holder { pid, comm: stat.comm, holders: holders.count })
    }

    /// A process and one of its descriptors for the socket `ino`: the holder the last scan named, else the
    /// process `pid` (the owner the kernel recorded), searched now.
    pub fn descriptor(&self, ino: u64, pid: Option<u32>) -> Option<(i32, i32)> {
        if let Some(holders) = self.sockets.get(&ino) {
            return Some((holders.named, holders.fd));
        }
        let pid = i32::try_from(pid?).ok()?;
        let fds = Process::new(pid).ok()?.fd().ok()?;
        fds.flatten().find(|fd| fd.target == FDTarget::Socket(ino)).map(|fd| (pid, fd.fd))
    }

    fn scan_proc(&mut self) {
        self.last_scan = Some(Instant::now());
        self.sockets.clear();
        (self.scan)(&mut self.sockets);
    }
}

/// Maps every socket inode in /proc/*/fd to the processes holding it.
fn scan_proc(sockets: &mut HashMap<u64, Holders>) {
    let mut processes: Vec<Process> = procfs::process::all_processes().into_iter().flatten().flatten().collect();
    processes.sort_unstable_by_key(Process::pid);
    for process in processes {
        // A process that exited, or whose fds this user may not read, holds nothing we can see.
        let Ok(fds) = process.fd() else {
            continue;
        };
        for fd in fds.flatten() {
            if let FDTarget::Socket(ino) = fd.target
                && (sockets.len() < MAX_CACHED_SOCKETS || sockets.contains_key(&ino))
            {
                Holders::note(sockets, ino, process.pid(), fd.fd);
            }
        }
    }
}

/// The cgroup path and container of a socket's owner: read from the cgroup2 mount and /proc/PID/cgroup,
/// which every user may read.
#[derive(Default)]
pub struct Cgroups {
    /// cgroup v2 id -> path, from the cgroup2 mount.
    paths: HashMap<u64, String>,
    root: Option<PathBuf>,
    last_scan: Option<Instant>,
    /// Lately, by pid: what `/proc/PID/cgroup` says (its v2 path, and a container id in any hierarchy's).
    /// A flood of errors on one process's socket reads it once a second, not once per error.
    by_pid: Recent<u32, (Option<String>, Option<String>)>,
}

impl Cgroups {
    /// `root`: where the cgroup v2 hierarchy is mounted (`KernelFacts::cgroup2`).
    pub fn new(root: Option<PathBuf>) -> Self {
        Self { root, ..Self::default() }
    }

    /// `owner`, completed.
    pub fn completed(&mut self, mut owner: OwnerInfo) -> OwnerInfo {
        self.complete(&mut owner);
        owner
    }

    /// Completes an owner: its cgroup path and container.
    pub fn complete(&mut self, owner: &mut OwnerInfo) {
        if owner.cgroup.is_none() {
            owner.cgroup = owner.cgroup_id.and_then(|id| self.cgroup_path(id)).or_else(|| self.of_pid(owner.pid).0);
        }
        if owner.container.is_none() {
            // Hybrid hosts: the container runtime may only show in a v1 hierarchy's path.
            owner.container = owner.cgroup.as_deref().and_then(container_id).or_else(|| self.of_pid(owner.pid).1);
        }
    }

    /// `/proc/PID/cgroup`'s v2 path (hierarchy 0), and a container id in any hierarchy's path.
    fn of_pid(&mut self, pid: u32) -> (Option<String>, Option<String>) {
        self.by_pid.get_or_ask(pid, || {
            let cgroups = cgroups_of(pid).unwrap_or_default();
            let v2 = cgroups.iter().find(|c| c.hierarchy == 0).map(|c| c.pathname.clone());
            (v2, cgroups.iter().find_map(|c| container_id(&c.pathname)))
        })
    }

    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        if let Some(path) = self.paths.get(&id) {
            return Some(path.clone());
        }
        if self.last_scan.is_some_and(|t| t.elapsed() < RESCAN_AFTER) {
            return None;
        }
        self.last_scan = Some(Instant::now());
        let root = self.root.clone()?;
        self.paths.clear();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            let relative = dir.strip_prefix(&root).map(|p| format!("/{}", p.display())).unwrap_or_default();
            self.paths.insert(meta.ino(), relative);
            for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        self.paths.get(&id).cloned()
    }
}

/// The cgroup v2 path of process `pid` (hierarchy 0 of `/proc/PID/cgroup`, which every user may read).
pub fn cgroup_v2_of(pid: u32) -> Option<String> {
    cgroups_of(pid)?.into_iter().find(|c| c.hierarchy == 0).map(|c| c.pathname)
}

/// The cgroups `pid` is in, one per hierarchy.
fn cgroups_of(pid: u32) -> Option<Vec<procfs::ProcessCGroup>> {
    Process::new(i32::try_from(pid).ok()?).and_then(|p| p.cgroups()).ok().map(|c| c.0)
}

/// The container id in a cgroup path: the 64-hex-digit id of docker (`docker-<id>.scope`, `/docker/<id>`),
/// containerd (`cri-containerd-<id>.scope`), cri-o (`crio-<id>.scope`) and kubepods layouts.
pub fn container_id(cgroup: &str) -> Option<String> {
    let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    cgroup.rsplit('/').find_map(|component| {
        let name = component.strip_suffix(".scope").unwrap_or(component);
        let candidate = ["docker-", "cri-containerd-", "crio-", "containerd-", "libpod-"]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
            .unwrap_or(name);
        is_id(candidate).then(|| candidate.to_owned())
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    const ID: &str = "4f9a1c0e2b7d8e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

    #[test]
    fn finds_container_ids_in_the_usual_layouts() {
        assert_eq!(container_id(&format!("/system.slice/docker-{ID}.scope")).as_deref(), Some(ID));
        assert_eq!(container_id(&format!("/docker/{ID}")).as_deref(), Some(ID));
        assert_eq!(
            container_id(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
            ))
            .as_deref(),
            Some(ID)
        );
        assert_eq!(container_id(&format!("/kubepods/besteffort/pod5678/{ID}")).as_deref(), Some(ID));
        assert_eq!(container_id(&format!("/machine.slice/crio-{ID}.scope")).as_deref(), Some(ID));
        assert_eq!(container_id("/user.slice/user-1000.slice/session-2.scope"), None);
        assert_eq!(container_id("/"), None);
        // Not 64 hex digits: not an id.
        assert_eq!(container_id("/docker/abc123"), None);
    }

    #[test]
    fn the_service_manager_is_named_only_when_it_alone_holds_the_socket() {
        let mut sockets = HashMap::new();
        // In pid order, as the scan goes: PID 1 passed socket 7 to pid 812, which holds it on two fds.
        for (fd, (ino, pid)) in [(7, 1), (9, 1), (7, 812), (7, 812), (7, 900)].into_iter().enumerate() {
            Holders::note(&mut sockets, ino, pid, fd as i32 + 3);
        }
        assert_eq!((sockets[&7].named, sockets[&7].count, sockets[&7].fd), (812, 3, 5));
        assert_eq!((sockets[&9].named, sockets[&9].count), (1, 1));
    }

    /// A socket set up as an ESP-in-UDP tunnel endpoint reads as one through its holder's descriptor; a plain
    /// one does not.
    #[test]
    fn reads_a_sockets_tunnel_type_through_its_holder() {
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tunnel = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tunnel);
        let espinudp: libc::c_int = 2;
        // SAFETY: sets an int option on a socket this test owns.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_UDP,
                UDP_ENCAP,
                (&raw const espinudp).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        let me = std::process::id() as i32;
        let plain_fd = std::os::fd::AsRawFd::as_raw_fd(&plain);
        // pidfd_getfd needs 5.6 and ptrace rights over the holder (itself, here).
        if let Some(plain_type) = encap_type(me, plain_fd, inode_of(&plain)) {
            assert_eq!(plain_type, 0);
            if set == 0 {
                assert_eq!(encap_type(me, fd, inode_of(&tunnel)), Some(espinudp));
            }
            // The descriptor now holds another socket than the one a scan saw there: nothing is said of it.
            assert_eq!(encap_type(me, fd, inode_of(&plain)), None);
        }
    }

    /// A socket this test opens is found in /proc, with this process as owner.
    #[test]
    fn finds_its_own_socket_through_proc() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ino = inode_of(&socket);
        let Lookup::Found(holder) = Resolver::default().by_socket_inode(ino, Instant::now(), true) else {
            panic!("the socket's owner")
        };
        assert_eq!((holder.pid, holder.holders), (std::process::id(), 1));
        let mut owner = holder.owner();
        Cgroups::new(None).complete(&mut owner);
        let own = fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(owner.cgroup.as_deref(), own.lines().find_map(|l| l.strip_prefix("0::")));
    }

    /// A resolver whose /proc holds no socket, and how many times it was scanned.
    pub fn counting_resolver() -> (Resolver, std::rc::Rc<std::cell::Cell<usize>>) {
        let scans = std::rc::Rc::new(std::cell::Cell::new(0));
        let counted = scans.clone();
        (Resolver::with_scan(Box::new(move |_| counted.set(counted.get() + 1))), scans)
    }

    /// Too many events wait (`may_wait` false): a scan that began after an event answers it, whatever
    /// sockets it asks about; only an event newer than the last scan scans again.
    #[test]
    fn one_scan_answers_every_event_before_it() {
        let (mut resolver, scans) = counting_resolver();
        let before = Instant::now();
        assert_eq!(resolver.by_socket_inode(1, before, false), Lookup::Unknown);
        for ino in 2..1_000 {
            assert_eq!(resolver.by_socket_inode(ino, before, false), Lookup::Unknown);
        }
        assert_eq!(scans.get(), 1);
        let after = Instant::now() + Duration::from_millis(1);
        assert_eq!(resolver.by_socket_inode(1_000, after, false), Lookup::Unknown);
        assert_eq!(scans.get(), 2);
        // Ending: what comes counts as arrived by the end, which the first scan after it answers.
        std::thread::sleep(Duration::from_millis(1));
        resolver.end();
        for ino in 1_001..2_000 {
            assert_eq!(resolver.by_socket_inode(ino, Instant::now(), false), Lookup::Unknown);
        }
        assert_eq!(scans.get(), 3);
    }

    /// The inode number of one of this process's sockets, as `/proc/self/fd` shows it.
    pub fn inode_of(socket: &std::net::UdpSocket) -> u64 {
        let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
        fs::metadata(format!("/proc/self/fd/{fd}")).unwrap().ino()
    }

    /// A socket opened after the last scan, with an error within the second after it: it waits for the
    /// next scan instead of going without an owner; a socket no scan since its event has seen is unknown.
    #[test]
    fn a_socket_newer_than_the_last_scan_waits_for_the_next() {
        let mut resolver = Resolver::default();
        let first = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(matches!(resolver.by_socket_inode(inode_of(&first), Instant::now(), true), Lookup::Found(_)));
        let second = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let seen = Instant::now();
        let Lookup::Later(at) = resolver.by_socket_inode(inode_of(&second), seen, true) else {
            panic!("a socket the last scan could not see must wait for the next")
        };
        assert!(at > seen && at <= seen + RESCAN_AFTER);
        // Ending (or too much waiting): scan at once.
        let Lookup::Found(owner) = resolver.by_socket_inode(inode_of(&second), seen, false) else {
            panic!("the second socket's owner")
        };
        assert_eq!(owner.pid, std::process::id());
        // Gone before the scan that followed its event: no process holds it, and no scan is repeated.
        let third = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ino, seen) = (inode_of(&third), Instant::now());
        drop(third);
        let _ = resolver.by_socket_inode(ino, seen, false);
        assert_eq!(resolver.by_socket_inode(ino, seen, true), Lookup::Unknown);
    }

    /// A holder the last scan found is named only while it still holds the socket: once its descriptor is
    /// closed (and perhaps given to another socket), the cached holder is not trusted.
    #[test]
    fn a_holder_that_let_the_socket_go_is_not_named() {
        let mut resolver = Resolver::default();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ino, seen) = (inode_of(&socket), Instant::now());
        assert!(matches!(resolver.by_socket_inode(ino, seen, true), Lookup::Found(_)));
        drop(socket);
        // Most likely the same descriptor number, now another socket.
        let _other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            resolver.by_socket_inode(ino, seen, true),
            Lookup::Later(resolver.last_scan.unwrap() + RESCAN_AFTER)
        );
        assert_eq!(resolver.by_socket_inode(ino, seen, false), Lookup::Unknown);
    }
}
