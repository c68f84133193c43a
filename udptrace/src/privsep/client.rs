//! The tracer's side of the socketpair: each [`Privileged`] request sent and its reply awaited, one at a
//! time. When the helper is gone (it exited, was killed, or did not answer in time), that is said once, and
//! every later request gets what is known without it: nothing ([`Lookup::Unasked`], `None`, an error).

use std::{
    io,
    os::{fd::OwnedFd, unix::net::UnixStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::wire::{self, Owner, Reply, Request};
use crate::{
    domain::Translation,
    kernel::maps::{MapOp, MapReply, Remote},
    pipeline::{
        counters::RateLimits,
        enrich::{
            conntrack::Flow,
            owner::Lookup,
            privileged::{MAX_NETNS_MEMBERS, Privileged},
            runtime::Runtime,
        },
    },
};

/// How long an answer may take: a /proc scan of a large host takes well under a second. A helper that
/// takes longer is stuck (a /proc read of a process stuck in the kernel), and is let go.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle to the helper; clones share it.
#[derive(Clone)]
pub struct Client(Arc<Connection>);

struct Connection {
    stream: Mutex<UnixStream>,
    helper: libc::pid_t,
    /// The programs' maps are read through the helper (kernels before 5.19): without it the counts,
    /// the losses and the stop would be wrong, not merely unknown.
    carries_maps: bool,
    gone: AtomicBool,
    /// Why it is gone, once it is.
    why: Mutex<Option<String>>,
}

impl Client {
    pub fn new(stream: UnixStream, helper: libc::pid_t, carries_maps: bool) -> io::Result<Self> {
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        let connection = Connection {
            stream: Mutex::new(stream),
            helper,
            carries_maps,
            gone: AtomicBool::new(false),
            why: Mutex::new(None),
        };
        Ok(Self(Arc::new(connection)))
    }

    /// Whether tracing cannot go on without the helper: it reads the programs' maps for the tracer.
    pub fn essential(&self) -> bool {
        self.0.carries_maps
    }

    /// Why the helper is gone, once it is.
    pub fn gone(&self) -> Option<String> {
        self.0.why.lock().ok()?.clone()
    }

    /// Looks whether the helper is still there without asking it anything: its end of the socketpair
    /// closes when it exits. Called once a second, so that its end is said even while nothing is asked.
    pub fn check(&self) {
        if self.0.gone.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = self.0.stream.lock() else { return };
        let mut poll = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&*stream),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a zero timeout.
        let ready = unsafe { libc::poll(&raw mut poll, 1, 0) };
        drop(stream);
        // Nothing is asked: anything to read is the end of the stream (or a message out of turn).
        if ready > 0 {
            self.lost(&io::Error::from(io::ErrorKind::UnexpectedEof));
        }
    }

    /// Closes the tracer's end, which ends the helper, and reaps it.
    pub fn finish(&self) {
        if let Ok(stream) = self.0.stream.lock() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        self.0.gone.store(true, Ordering::Relaxed);
        reap(self.0.helper, Duration::from_secs(2));
    }

    fn call(&self, request: &Request) -> Option<(Reply, Option<OwnedFd>)> {
        if self.0.gone.load(Ordering::Relaxed) {
            return None;
        }
        let stream = self.0.stream.lock().ok()?;
        let answered = wire::send(&stream, request, None).and_then(|()| wire::receive::<Reply>(&stream));
        drop(stream);
        match answered {
            Ok(answer) => Some(answer),
            Err(e) => {
                self.lost(&e);
                None
            }
        }
    }

    /// The helper is gone: said once, with how it ended. One that did not answer in time is let go: no
    /// request is sent after it (a late answer is never read as another's), and its end of the socketpair is
    /// shut, so that it ends once it tries to answer. The tracer may not signal it: the helper is root.
    fn lost(&self, e: &io::Error) {
        if self.0.gone.swap(true, Ordering::Relaxed) {
            return;
        }
        let timed_out = matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut);
        if timed_out && let Ok(stream) = self.0.stream.lock() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let how = match reap(self.0.helper, Duration::from_secs(1)) {
            _ if timed_out => format!("did not answer in {} s and was let go", ANSWER_TIMEOUT.as_secs()),
            Some(status) => status,
            None => format!("closed its end: {e}"),
        };
        let why = format!("the privileged helper exited ({how})");
        if self.0.carries_maps {
            eprintln!("udptrace: warning: {why}: on this kernel the programs' maps are read through it; tracing stops");
        } else {
            eprintln!(
                "udptrace: warning: {why}: from now on owners come only from the programs' records, a verdict that \
                 needs another namespace's socket table or a socket's tunnel type is null, and so is a conntrack \
                 entry the program did not read"
            );
        }
        if let Ok(mut slot) = self.0.why.lock() {
            *slot = Some(why);
        }
    }

    fn unexpected(&self, reply: &Reply) {
        self.lost(&io::Error::other(format!("answered out of turn: {reply:?}")));
    }
}

/// Waits up to `patience` for the helper's exit; how it ended, if it did.
fn reap(pid: libc::pid_t, patience: Duration) -> Option<String> {
    let deadline = Instant::now() + patience;
    loop {
        let mut status = 0;
        // SAFETY: waits for udptrace's own child, without blocking.
        let reaped = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG) };
        if reaped == pid {
            return Some(if libc::WIFSIGNALED(status) {
                format!("killed by signal {}", libc::WTERMSIG(status))
            } else {
                format!("exit status {}", libc::WEXITSTATUS(status))
            });
        }
        if reaped < 0 || Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn gone_error() -> io::Error {
    io::Error::other("the privileged helper is gone")
}

impl Privileged for Client {
    fn owner(&mut self, ino: u64, seen: Instant, may_wait: bool) -> Lookup {
        let seen_ago_us = u64::try_from(seen.elapsed().as_micros()).unwrap_or(u64::MAX);
        match self.call(&Request::Owner { ino, seen_ago_us, may_wait }) {
            Some((Reply::Owner(Owner::Found(holder)), _)) => Lookup::Found(holder),
            Some((Reply::Owner(Owner::Unknown), _)) => Lookup::Unknown,
            Some((Reply::Owner(Owner::Later { after_us }), _)) => {
                Lookup::Later(Instant::now() + Duration::from_micros(after_us))
            }
            Some((other, _)) => {
                self.unexpected(&other);
                Lookup::Unasked
            }
            None => Lookup::Unasked,
        }
    }

    fn owners_end(&mut self) {
        match self.call(&Request::OwnersEnd) {
            Some((Reply::Done, _)) | None => {}
            Some((other, _)) => self.unexpected(&other),
        }
    }

    fn tunnel(&mut self, ino: u64, pid: Option<u32>) -> Option<bool> {
        match self.call(&Request::Tunnel { ino, pid })? {
            (Reply::Tunnel(tunnel), _) => Some(tunnel),
            (other, _) => {
                self.unexpected(&other);
                None
            }
        }
    }

    fn diag_socket(&mut self, netns: u64) -> io::Result<OwnedFd> {
        match self.call(&Request::DiagSocket { netns }).ok_or_else(gone_error)? {
            (Reply::DiagSocket(Ok(())), Some(fd)) => Ok(fd),
            (Reply::DiagSocket(Err(failure)), _) => Err(failure.into()),
            (other, _) => {
                self.unexpected(&other);
                Err(gone_error())
            }
        }
    }

    fn rate_limits(&mut self) -> Vec<(u64, Result<RateLimits, String>)> {
        match self.call(&Request::RateLimits) {
            Some((Reply::RateLimits(read), _)) => read,
            Some((other, _)) => {
                self.unexpected(&other);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    fn conntrack(&mut self, netns: u64, flow: Flow) -> Option<Translation> {
        match self.call(&Request::Conntrack { netns, flow })? {
            (Reply::Conntrack(answer), _) => answer,
            (Reply::Refused(_), _) => None,
            (other, _) => {
                self.unexpected(&other);
                None
            }
        }
    }

    fn bundle(&mut self, id: &str) -> Option<(Runtime, std::fs::File)> {
        match self.call(&Request::Bundle { id: id.to_owned() })? {
            (Reply::Bundle(Some(runtime)), Some(fd)) => Some((runtime, fd.into())),
            (Reply::Bundle(None) | Reply::Refused(_), _) => None,
            (other, _) => {
                self.unexpected(&other);
                None
            }
        }
    }

    fn netns_members(&mut self, netns: u64) -> Vec<u32> {
        match self.call(&Request::NetnsMembers { netns }) {
            Some((Reply::NetnsMembers(pids), _)) => pids.into_iter().take(MAX_NETNS_MEMBERS).collect(),
            Some((other, _)) => {
                self.unexpected(&other);
                Vec::new()
            }
            None => Vec::new(),
        }
    }
}

impl Remote for Client {
    fn map_call(&self, map: &str, op: MapOp) -> io::Result<MapReply> {
        match self.call(&Request::Map { map: map.to_owned(), op }).ok_or_else(gone_error)? {
            (Reply::Map(reply), _) => reply.map_err(Into::into),
            (Reply::Refused(why), _) => Err(io::Error::other(why)),
            (other, _) => {
                self.unexpected(&other);
                Err(gone_error())
            }
        }
    }

    fn program_misses(&self) -> io::Result<u64> {
        match self.call(&Request::ProgramMisses).ok_or_else(gone_error)? {
            (Reply::Misses(misses), _) => misses.map_err(Into::into),
            (Reply::Refused(why), _) => Err(io::Error::other(why)),
            (other, _) => {
                self.unexpected(&other);
                Err(gone_error())
            }
        }
    }
}
