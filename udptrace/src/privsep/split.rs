//! The split itself: once the programs are attached and the metrics port bound, the process forks. The
//! child becomes the helper and never returns; the parent becomes the unprivileged tracer and gets a
//! [`Client`] to it.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, RawFd},
        unix::net::UnixStream,
    },
};

use anyhow::{Context as _, Result, bail};
use caps::{CapSet, Capability, CapsHashSet};

use super::{
    client::Client,
    helper::{self, Bpf},
};
use crate::kernel::{
    maps::{self, RawMap},
    misses::Misses,
    syscalls,
};
use crate::pipeline::enrich::privileged::Local;

/// `include/uapi/linux/securebits.h`: root's uid no longer grants capabilities on exec (`NOROOT`), a uid
/// change cannot keep them (`KEEP_CAPS` off, locked), and no ambient capability can be raised; each
/// locked, so that nothing this process runs may undo them.
const SECBIT_NOROOT: u64 = 1 << 0;
const SECBIT_NOROOT_LOCKED: u64 = 1 << 1;
const SECBIT_KEEP_CAPS_LOCKED: u64 = 1 << 5;
const SECBIT_NO_CAP_AMBIENT_RAISE: u64 = 1 << 6;
const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: u64 = 1 << 7;

/// Who the tracer becomes: the package's system user, else `nobody`, else the conventional 65534.
#[derive(Clone, Copy, Debug)]
pub struct User {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

impl User {
    pub fn unprivileged() -> Self {
        for name in ["udptrace", "nobody"] {
            let name = CString::new(name).expect("a name without NUL");
            // SAFETY: getpwnam returns a pointer into static storage, read at once, before any other call;
            // the process is single-threaded here.
            let entry = unsafe { libc::getpwnam(name.as_ptr()) };
            // SAFETY: a non-null result points to a valid passwd.
            if let Some(entry) = unsafe { entry.as_ref() }
                && entry.pw_uid != 0
                && entry.pw_gid != 0
            {
                return Self { uid: entry.pw_uid, gid: entry.pw_gid };
            }
        }
        Self { uid: 65534, gid: 65534 }
    }
}

/// Splits a session whose programs are attached: the helper holds, for kernels whose `bpf()` wants a
/// capability for every call, the maps (`maps`) and the programs' descriptors (`misses`), which the tracer
/// closes; elsewhere both are closed.
pub fn after_attach(maps: Vec<RawMap>, misses: Misses, verbose: bool) -> Result<Client> {
    split(helper::bpf_through_helper().then(|| Bpf { maps, misses }), verbose)
}

/// Forks the helper. `bpf`: the maps and statistics it holds for the tracer (kernels before 5.19),
/// `None` where the tracer calls them itself. Returns, in the tracer, a client to the helper; the tracer
/// then holds nothing. Must be called while the process has one thread: a thread would keep what the
/// process gives up, and a fork copies only the calling thread.
pub fn split(bpf: Option<Bpf>, verbose: bool) -> Result<Client> {
    // A thread joined a moment ago (the namespaces' counters are read from threads that enter them) may
    // still be listed until the kernel has reaped it.
    let threads = || std::fs::read_dir("/proc/self/task").map(Iterator::count).unwrap_or(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    while threads() != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    if threads() != 1 {
        bail!("udptrace has {} threads where it must have one to give up its privileges", threads());
    }
    let user = User::unprivileged();
    let (tracer_end, helper_end) = UnixStream::pair().context("making the helper's socketpair")?;
    // What is buffered would be written twice.
    std::io::Write::flush(&mut std::io::stdout())?;
    // SAFETY: a single-threaded process forks; each side goes on with its own copy.
    let parent = unsafe { libc::getpid() };
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).context("forking the privileged helper");
    }
    if pid == 0 {
        drop(tracer_end);
        become_helper(&helper_end, parent, bpf);
    }
    drop(helper_end);
    let through_helper = bpf.is_some();
    let client = Client::new(tracer_end, pid, through_helper).context("setting up the helper's socket")?;
    // The tracer's copies of what the helper holds for it: it calls them through the helper from now on.
    drop(bpf);
    if let Err(e) = become_tracer(user) {
        client.finish();
        return Err(e);
    }
    if through_helper {
        maps::go_through(Box::new(client.clone()));
    }
    if verbose {
        eprintln!(
            "udptrace: tracing as uid {} gid {} with no capability; the helper (pid {pid}) keeps {}",
            user.uid,
            user.gid,
            names(&helper::capabilities(through_helper))
        );
    }
    Ok(client)
}

fn names(caps: &[Capability]) -> String {
    caps.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
}

/// The tracer gives up everything: the bounding set, root (its uid and gids, which would still own every
/// root-owned file), every capability, new privileges through exec; and then installs its system-call
/// filter. Already running as another user, it keeps that user and gives up the rest.
fn become_tracer(user: User) -> Result<()> {
    let may_bound = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false);
    if may_bound {
        for cap in caps::read(None, CapSet::Bounding).unwrap_or_default() {
            caps::drop(None, CapSet::Bounding, cap).context("emptying the capability bounding set")?;
        }
        let bits = SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED
            | SECBIT_NO_CAP_AMBIENT_RAISE
            | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        prctl(libc::PR_SET_SECUREBITS, bits).context("locking the secure bits")?;
    } else {
        eprintln!(
            "udptrace: warning: without CAP_SETPCAP the tracer keeps its capability bounding set and cannot lock \
             its secure bits (it still gives up its user and every capability)"
        );
    }
    // SAFETY: plain calls on integers.
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = (user.uid, user.gid);
        // SAFETY: setgroups with no groups; setresgid/setresuid with ids; single-threaded.
        unsafe {
            check(libc::setgroups(0, std::ptr::null())).context("dropping the supplementary groups")?;
            check(libc::setresgid(gid, gid, gid)).with_context(|| format!("becoming gid {gid}"))?;
            check(libc::setresuid(uid, uid, uid)).with_context(|| format!("becoming uid {uid}"))?;
        }
    }
    // A uid change from root clears the effective and permitted sets (KEEP_CAPS is off); a process that
    // was never root clears them here.
    for set in [CapSet::Ambient, CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        caps::clear(None, set).with_context(|| format!("clearing the {set:?} capabilities"))?;
    }
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).context("setting no_new_privs")?;
    syscalls::install_tracer_filter().context("installing the system-call filter")?;
    Ok(())
}

/// The child: the helper. Never returns: it exits when the tracer's end closes (the tracer finished, or
/// died). Nothing the parent built is dropped here (`_exit`): its destructors would detach the programs
/// and deregister the tracer's event sources, which the two processes share.
fn become_helper(stream: &UnixStream, parent: libc::pid_t, bpf: Option<Bpf>) -> ! {
    // A panic must not unwind out of here, into the parent's frames and their destructors.
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| helper_main(stream, parent, bpf.as_ref())))
        .unwrap_or(101);
    // SAFETY: ends this process without running anything the parent set up.
    unsafe { libc::_exit(code) }
}

/// The helper's life, and its exit status.
fn helper_main(stream: &UnixStream, parent: libc::pid_t, bpf: Option<&Bpf>) -> i32 {
    match helper_setup(stream, parent, bpf) {
        Ok(()) => {
            let mut local = Local::default();
            match helper::serve(stream, &mut local, bpf) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("udptrace: helper: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("udptrace: helper: {}", crate::errors::one_line(&e));
            1
        }
    }
}

fn helper_setup(stream: &UnixStream, parent: libc::pid_t, bpf: Option<&Bpf>) -> Result<()> {
    // Killed if the tracer dies while it is still root (before it drops its credentials; after, the end
    // of the socketpair ends the helper); a tracer gone before this was set leaves it orphaned: it stops.
    prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as u64).context("asking to die with the tracer")?;
    // SAFETY: plain calls.
    if unsafe { libc::getppid() } != parent {
        bail!("the tracer is gone");
    }
    prctl(libc::PR_SET_NAME, c"udptrace-helper".as_ptr() as u64).context("naming the helper")?;
    // A Ctrl-C reaches the whole process group: the helper goes on answering while the tracer drains, and
    // ends when the tracer closes its end.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: ignoring a signal installs no handler.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    let mut keep: Vec<RawFd> = vec![libc::STDERR_FILENO, stream.as_raw_fd()];
    if let Some(bpf) = bpf {
        keep.extend(bpf.maps.iter().map(|map| map.as_raw_fd()));
        keep.extend(bpf.misses.raw_fds());
    }
    close_all_but(&keep).context("closing the tracer's descriptors")?;
    let kept: CapsHashSet = helper::capabilities(bpf.is_some()).into_iter().collect();
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::read(None, CapSet::Bounding)?.difference(&kept) {
            caps::drop(None, CapSet::Bounding, *cap)?;
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let effective: CapsHashSet = caps::read(None, CapSet::Effective)?.intersection(&kept).copied().collect();
    caps::set(None, CapSet::Effective, &effective)?;
    caps::set(None, CapSet::Permitted, &effective)?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).context("setting no_new_privs")?;
    Ok(())
}

/// Closes every descriptor but `keep`, stdin and stdout included (pointed at /dev/null, so that nothing
/// opened later takes their numbers): the links, programs, buffers and the metrics port stay the tracer's
/// alone.
fn close_all_but(keep: &[RawFd]) -> io::Result<()> {
    let null = std::fs::File::options().read(true).write(true).open("/dev/null")?;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: dup2 onto the standard descriptors of this process.
        check(unsafe { libc::dup2(null.as_raw_fd(), fd) })?;
    }
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if fd > libc::STDERR_FILENO && !keep.contains(&fd) && fd != null.as_raw_fd() {
            // SAFETY: closes a descriptor this process no longer uses; nothing here refers to it again (the
            // directory's own descriptor, listed too, is already closed and fails harmlessly).
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

fn prctl(option: libc::c_int, value: u64) -> io::Result<()> {
    // SAFETY: prctl with an option and an integer (or a pointer to a static C string, PR_SET_NAME).
    check(unsafe { libc::prctl(option, value, 0, 0, 0) }).map(drop)
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}
