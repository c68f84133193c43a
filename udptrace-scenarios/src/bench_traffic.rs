//! The benchmark's traffic, each side in a process of its own, so that neither shares a process with the
//! harness or with the other: `udptrace-bench` runs itself again as `udptrace-bench __traffic ...`.
//!
//! - `__traffic send NETNS ADDR:PORT SECONDS BYTES connected|unconnected|flows=N [wait]`: enters the network
//!   namespace at the path NETNS, then sends datagrams of BYTES bytes in a tight loop for SECONDS, with
//!   `send()` on a socket connected to ADDR:PORT, with `send_to()` on an unconnected one, or (`flows=N`,
//!   IPv4) from N source ports in turn, each datagram a UDP header and payload written to a raw socket
//!   (checksum 0: none, which IPv4 allows). A failed send is counted and the loop goes on. Prints
//!   `sent=N failed=N elapsed_ns=N error=TEXT` (the first failure, or `-`). With `wait`, it opens its socket,
//!   prints `ready` and sends only once a line comes on its standard input, so that a tracer started in
//!   between finds a socket older than itself; and it keeps the socket until its input closes, so that the
//!   tracer still finds the socket's holder for the last events it reads.
//! - `__traffic receive NETNS ADDR:PORT`: enters NETNS, binds ADDR:PORT with a 64 MiB receive buffer
//!   (`SO_RCVBUFFORCE`), prints `ready`, and counts what `recvmmsg()` returns, 64 datagrams a call at most,
//!   until its standard input closes; then it drains until nothing has come for 200 ms and prints
//!   `received=N`.
//! - `__traffic sink NETNS ADDR:PORT RCVBUF`: enters NETNS, binds ADDR:PORT with `SO_RCVBUF` RCVBUF, prints
//!   `ready rcvbuf=N` (the `SO_RCVBUF` the kernel made of it) and reads nothing until its standard input
//!   closes, so that nearly every datagram finds the buffer full and is dropped; then it reads what is
//!   queued, without waiting, and prints `received=N`.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, UdpSocket},
    os::{fd::AsRawFd as _, unix::process::ExitStatusExt as _},
    process::{Child, ChildStdin, Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::Netns;

/// The first argument that makes `udptrace-bench` one side of the traffic.
pub const COMMAND: &str = "__traffic";

/// The receive buffer of the receiving socket: room for every datagram of a burst.
const RECEIVE_BUFFER: libc::c_int = 64 << 20;
/// Datagrams per `recvmmsg()` call, at most.
const BATCH: usize = 64;
/// How long the receiver goes on after its input closes, once nothing more arrives.
const DRAIN: Duration = Duration::from_millis(200);

/// `udptrace-bench __traffic ARGS`: one side of the traffic. `args` are those after `__traffic`.
pub fn main(args: &[String]) -> ExitCode {
    let result = match args.first().map(String::as_str) {
        Some("send") => send_main(&args[1..]),
        Some("receive") => receive_main(&args[1..]),
        Some("sink") => sink_main(&args[1..]),
        _ => Err(anyhow::anyhow!(
            "usage: {COMMAND} send NETNS ADDR:PORT SECONDS BYTES connected|unconnected|flows=N [wait], {COMMAND} \
             receive NETNS ADDR:PORT, or {COMMAND} sink NETNS ADDR:PORT RCVBUF"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udptrace-bench {COMMAND}: {}", crate::outcome::one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Moves this process (it has one thread yet) into the network namespace at `path`.
fn enter(path: &str) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {path}"))?;
    // SAFETY: a valid namespace fd; the process has no other thread to leave behind.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("entering {path}"));
    }
    Ok(())
}

fn address(text: &str) -> Result<SocketAddr> {
    text.parse().map_err(|_| anyhow::anyhow!("`{text}` is not an ADDR:PORT"))
}

/// How the sender sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    Connected,
    Unconnected,
    /// From this many source ports, in turn, through a raw socket.
    Flows(u16),
}

impl How {
    fn arg(self) -> String {
        match self {
            How::Connected => "connected".to_owned(),
            How::Unconnected => "unconnected".to_owned(),
            How::Flows(n) => format!("flows={n}"),
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "connected" => How::Connected,
            "unconnected" => How::Unconnected,
            _ => match text.strip_prefix("flows=").map(str::parse::<u16>) {
                Some(Ok(n)) if n > 0 && u32::from(n) <= u32::from(u16::MAX) - u32::from(FIRST_PORT) => How::Flows(n),
                _ => bail!("`{text}`: connected, unconnected or flows=N (N from 1 to {})", u16::MAX - FIRST_PORT),
            },
        })
    }
}

/// The first source port of `flows=N`.
const FIRST_PORT: u16 = 20000;

fn send_main(args: &[String]) -> Result<()> {
    let (wait, args) = match args {
        [rest @ .., last] if last == "wait" => (true, rest),
        _ => (false, args),
    };
    // A cgroup to run in (a pod's container), joined before anything is opened: the socket's owner is
    // recorded with the cgroup its creator is in.
    let args = match args {
        [rest @ .., last] if last.starts_with("cgroup=") => {
            let dir = &last["cgroup=".len()..];
            std::fs::write(format!("{dir}/cgroup.procs"), std::process::id().to_string())
                .with_context(|| format!("joining the cgroup {dir}"))?;
            rest
        }
        _ => args,
    };
    let [netns, to, seconds, bytes, how] = args else {
        bail!("usage: {COMMAND} send NETNS ADDR:PORT SECONDS BYTES connected|unconnected|flows=N [cgroup=DIR] [wait]");
    };
    let to = address(to)?;
    let seconds = match seconds.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 3600.0 => s,
        _ => bail!("`{seconds}` is not a number of seconds from 0 to 3600"),
    };
    let bytes = match bytes.parse::<usize>() {
        Ok(n) if n <= 1400 => n,
        _ => bail!("`{bytes}` is not a datagram size from 0 to 1400 bytes"),
    };
    let how = How::parse(how)?;
    enter(netns)?;
    if let How::Flows(flows) = how {
        return send_flows(to, seconds, bytes, flows, wait);
    }
    let connected = how == How::Connected;
    let socket = UdpSocket::bind(SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0)).context("binding")?;
    if connected {
        socket.connect(to).with_context(|| format!("connecting to {to}"))?;
    }
    if wait {
        ready_then_go()?;
    }
    let payload = vec![0u8; bytes];
    let deadline = Duration::from_secs_f64(seconds);
    let (mut sent, mut failed, mut first_error) = (0u64, 0u64, None);
    let start = Instant::now();
    while start.elapsed() < deadline {
        for _ in 0..64 {
            let result = if connected { socket.send(&payload) } else { socket.send_to(&payload, to) };
            match result {
                Ok(_) => sent += 1,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    said(sent, failed, start.elapsed(), first_error, wait)
}

/// `wait`: says the socket is open, then waits for the line that says to send.
fn ready_then_go() -> Result<()> {
    println!("ready");
    std::io::stdout().flush()?;
    let mut go = String::new();
    if std::io::stdin().read_line(&mut go)? == 0 {
        bail!("the input closed before the word to send");
    }
    Ok(())
}

/// Prints what the sender did; with `wait`, then holds its socket (the caller's) until the input closes.
fn said(sent: u64, failed: u64, elapsed: Duration, first_error: Option<std::io::Error>, wait: bool) -> Result<()> {
    let error = first_error.map_or_else(|| "-".to_owned(), |e| e.to_string());
    println!("sent={sent} failed={failed} elapsed_ns={} error={error}", elapsed.as_nanos());
    if wait {
        std::io::stdout().flush()?;
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    }
    Ok(())
}

/// `flows=N`: UDP datagrams from N source ports in turn, each written whole (header and payload) to a raw
/// IPv4 socket, which adds the IP header.
fn send_flows(to: SocketAddr, seconds: f64, bytes: usize, flows: u16, wait: bool) -> Result<()> {
    let SocketAddr::V4(to) = to else { bail!("flows=N sends IPv4 only") };
    // SAFETY: plain socket creation; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP) };
    if fd < 0 {
        bail!("a raw socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor of ours.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let address = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(to.ip().octets()) },
        sin_zero: [0; 8],
    };
    let mut datagram = vec![0u8; 8 + bytes];
    datagram[2..4].copy_from_slice(&to.port().to_be_bytes());
    datagram[4..6].copy_from_slice(&((8 + bytes) as u16).to_be_bytes());
    if wait {
        ready_then_go()?;
    }
    let deadline = Duration::from_secs_f64(seconds);
    let (mut sent, mut failed, mut first_error) = (0u64, 0u64, None);
    let mut port = 0u16;
    let start = Instant::now();
    while start.elapsed() < deadline {
        for _ in 0..64 {
            datagram[0..2].copy_from_slice(&(FIRST_PORT + port).to_be_bytes());
            port = if port + 1 == flows { 0 } else { port + 1 };
            // SAFETY: the buffer and the address are ours and of the lengths given.
            let n = unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    datagram.as_ptr().cast(),
                    datagram.len(),
                    0,
                    (&raw const address).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n < 0 {
                failed += 1;
                first_error.get_or_insert(std::io::Error::last_os_error());
            } else {
                sent += 1;
            }
        }
    }
    said(sent, failed, start.elapsed(), first_error, wait)
}

fn receive_main(args: &[String]) -> Result<()> {
    let [netns, bind] = args else {
        bail!("usage: {COMMAND} receive NETNS ADDR:PORT");
    };
    let bind = address(bind)?;
    enter(netns)?;
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    crate::packets::set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER)
        .context("SO_RCVBUFFORCE")?;
    // A blocked receive wakes this often to look whether the input closed.
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    let closed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&closed);
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        flag.store(true, Ordering::Relaxed);
    });
    println!("ready");
    std::io::stdout().flush()?;

    let mut buffers = vec![[0u8; 256]; BATCH];
    let mut iovecs: Vec<libc::iovec> =
        buffers.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
    // SAFETY: mmsghdr is plain data; zeroed is a valid (empty) value.
    let mut messages: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (message, iovec) in messages.iter_mut().zip(iovecs.iter_mut()) {
        message.msg_hdr.msg_iov = iovec;
        message.msg_hdr.msg_iovlen = 1;
    }
    let mut received = 0u64;
    let mut last = Instant::now();
    let mut closed_at: Option<Instant> = None;
    loop {
        // SAFETY: BATCH headers, each pointing at one live buffer of its length; no timeout argument.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                messages.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE as _,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            received += n as u64;
            last = Instant::now();
        } else if n < 0 {
            let error = std::io::Error::last_os_error();
            if !matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) {
                return Err(error).context("recvmmsg");
            }
        }
        if closed_at.is_none() && closed.load(Ordering::Relaxed) {
            closed_at = Some(Instant::now());
        }
        if let Some(at) = closed_at
            && ((at.elapsed() >= DRAIN && last.elapsed() >= DRAIN) || at.elapsed() >= Duration::from_secs(10))
        {
            break;
        }
    }
    println!("received={received}");
    Ok(())
}

fn sink_main(args: &[String]) -> Result<()> {
    let [netns, bind, rcvbuf] = args else {
        bail!("usage: {COMMAND} sink NETNS ADDR:PORT RCVBUF");
    };
    let bind = address(bind)?;
    let rcvbuf = match rcvbuf.parse::<libc::c_int>() {
        Ok(n) if n > 0 => n,
        _ => bail!("`{rcvbuf}` is not a receive buffer size in bytes"),
    };
    enter(netns)?;
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    crate::packets::set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf).context("SO_RCVBUF")?;
    let mut effective: libc::c_int = 0;
    let mut length = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket; a c_int out-value of the size passed.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut effective).cast(),
            &raw mut length,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("reading SO_RCVBUF back");
    }
    println!("ready rcvbuf={effective}");
    std::io::stdout().flush()?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    // What is queued: a few datagrams, read without waiting, so that the socket closes empty.
    socket.set_nonblocking(true)?;
    let mut buffer = [0u8; 2048];
    let mut received = 0u64;
    loop {
        match socket.recv(&mut buffer) {
            Ok(_) => received += 1,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e).context("recv"),
        }
    }
    println!("received={received}");
    Ok(())
}

/// A child process, killed if it is still running when this drops.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn traffic_command(args: &[&str]) -> Result<Command> {
    let exe = std::env::current_exe().context("finding the benchmark's own binary")?;
    let mut command = Command::new(exe);
    command.arg(COMMAND).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    Ok(command)
}

/// The first line the process wrote to stderr, once it has exited.
fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    crate::outcome::one_line(text.trim())
}

/// What a sender did.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    pub datagrams: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// The first failed send, if one failed.
    pub error: Option<String>,
}

impl Sent {
    pub fn rate(&self) -> f64 {
        self.datagrams as f64 / self.elapsed.as_secs_f64()
    }

    fn parse(line: &str) -> Option<Self> {
        let (counts, error) = line.split_once(" error=")?;
        let mut fields = counts.split(' ').map(|f| f.split_once('='));
        let mut next = |key: &str| match fields.next() {
            Some(Some((k, v))) if k == key => v.parse::<u64>().ok(),
            _ => None,
        };
        let (datagrams, failed, nanos) = (next("sent")?, next("failed")?, next("elapsed_ns")?);
        (nanos > 0).then(|| Sent {
            datagrams,
            failed,
            elapsed: Duration::from_nanos(nanos),
            error: (error != "-").then(|| error.to_owned()),
        })
    }
}

/// Sends from a process of its own in `ns` for `seconds`, to `to` as `how` says. Returns when the sender has
/// exited.
pub fn send(ns: &Netns, to: SocketAddr, seconds: f64, bytes: usize, how: How) -> Result<Sent> {
    let (path, to, secs, bytes) = (ns.path(), to.to_string(), seconds.to_string(), bytes.to_string());
    let mut command = traffic_command(&["send", &path, &to, &secs, &bytes, &how.arg()])?;
    let mut child = Process(command.stdin(Stdio::null()).spawn().context("starting the sender")?);
    // Emulated machines are slow to start a process; the sender ends by itself after `seconds`.
    let deadline = Instant::now() + Duration::from_secs_f64(seconds) + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            bail!("the sender did not finish within {seconds} s and a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.0.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    if !status.success() {
        let how = status.signal().map_or_else(|| format!("{status}"), |s| format!("signal {s}"));
        bail!("the sender failed ({how}): {}", stderr_of(&mut child.0));
    }
    Sent::parse(out.trim()).with_context(|| format!("the sender said {:?}", out.trim()))
}

/// A sender whose socket is open before it sends: opened by [`Sender::open`], sending on [`Sender::go`].
/// Its process holds the socket until this drops.
pub struct Sender {
    side: Side,
    seconds: f64,
}

impl Sender {
    /// Starts a sender in `ns` that opens its socket to `to` as `how` says, and returns once it has; in the
    /// cgroup whose directory is `cgroup`, joined before the socket is opened, where one is given.
    pub fn open(
        ns: &Netns,
        to: SocketAddr,
        seconds: f64,
        bytes: usize,
        how: How,
        cgroup: Option<&str>,
    ) -> Result<Self> {
        let (path, to, secs, bytes) = (ns.path(), to.to_string(), seconds.to_string(), bytes.to_string());
        let mut args = vec!["send", &path, &to, &secs, &bytes];
        let how = how.arg();
        args.push(&how);
        let joined = cgroup.map(|dir| format!("cgroup={dir}"));
        args.extend(joined.as_deref());
        args.push("wait");
        let (side, line) = Side::start(&args, "sender")?;
        if line != "ready" {
            bail!("the sender said {line:?}");
        }
        Ok(Self { side, seconds })
    }

    /// Sends for the seconds given; returns what was sent once it has. The socket stays open.
    pub fn go(&mut self) -> Result<Sent> {
        let told = self.side.stdin.as_mut().context("the sender's input")?.write_all(b"go\n");
        if told.is_err() {
            return self.side.failed("took no word to send");
        }
        // Emulated machines are slow; the sender ends by itself after `seconds`.
        match self.side.lines.recv_timeout(Duration::from_secs_f64(self.seconds) + Duration::from_secs(60)) {
            Ok(line) => Sent::parse(&line).with_context(|| format!("the sender said {line:?}")),
            Err(_) => self.side.failed("did not report"),
        }
    }
}

/// A traffic process that talks back: its input kept open, its output read line by line.
struct Side {
    child: Process,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// What it is, for errors: `sender`, `receiver`.
    what: &'static str,
}

impl Side {
    /// Starts `udptrace-bench __traffic ARGS`; returns it with its first line (it says it is ready).
    fn start(args: &[&str], what: &'static str) -> Result<(Self, String)> {
        let mut command = traffic_command(args)?;
        let mut child = Process(command.stdin(Stdio::piped()).spawn().with_context(|| format!("starting the {what}"))?);
        let stdin = child.0.stdin.take();
        let stdout = child.0.stdout.take().with_context(|| format!("the {what}'s stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut side = Self { child, stdin, lines, what };
        match side.lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => Ok((side, line)),
            Err(_) => side.failed("did not get ready"),
        }
    }

    fn failed<T>(&mut self, how: &str) -> Result<T> {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        bail!("the {} {how}: {}", self.what, stderr_of(&mut self.child.0))
    }
}

/// A receiver in a process of its own, counting what arrives until [`Receiver::finish`].
pub struct Receiver {
    side: Side,
    /// A sink's receive buffer, as `SO_RCVBUF` reads back (the kernel doubles what was asked).
    pub rcvbuf: Option<u64>,
}

impl Receiver {
    /// Starts the receiver bound to `bind` in `ns`; returns once it is ready to receive.
    pub fn start(ns: &Netns, bind: SocketAddr) -> Result<Self> {
        let (path, bind) = (ns.path(), bind.to_string());
        Self::spawn(&["receive", &path, &bind])
    }

    /// Starts a receiver bound to `bind` in `ns` that reads nothing until [`Receiver::finish`], with
    /// `SO_RCVBUF` `rcvbuf`: nearly every datagram is dropped at its socket (`Udp: RcvbufErrors`).
    pub fn start_sink(ns: &Netns, bind: SocketAddr, rcvbuf: u32) -> Result<Self> {
        let (path, bind, rcvbuf) = (ns.path(), bind.to_string(), rcvbuf.to_string());
        Self::spawn(&["sink", &path, &bind, &rcvbuf])
    }

    fn spawn(args: &[&str]) -> Result<Self> {
        let (side, line) = Side::start(args, "receiver")?;
        let mut receiver = Self { side, rcvbuf: None };
        match line.strip_prefix("ready") {
            Some("") => Ok(receiver),
            Some(rest) if rest.starts_with(" rcvbuf=") => {
                receiver.rcvbuf = rest[" rcvbuf=".len()..].parse().ok();
                Ok(receiver)
            }
            _ => bail!("the receiver said {line:?}"),
        }
    }

    /// Closes the receiver's input; it drains what is still on its way (a sink: what is queued) and says
    /// how many datagrams it received in all.
    pub fn finish(mut self) -> Result<u64> {
        drop(self.side.stdin.take());
        let line = match self.side.lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => return self.side.failed("did not report"),
        };
        let _ = self.side.child.0.wait();
        line.strip_prefix("received=")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("the receiver said {line:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_sender_says() {
        let sent = Sent::parse("sent=120 failed=2 elapsed_ns=1000000000 error=Connection refused (os error 111)")
            .expect("parses");
        assert_eq!((sent.datagrams, sent.failed, sent.elapsed), (120, 2, Duration::from_secs(1)));
        assert_eq!(sent.error.as_deref(), Some("Connection refused (os error 111)"));
        assert_eq!(sent.rate(), 120.0);
        assert!(Sent::parse("sent=1 failed=0 elapsed_ns=5 error=-").is_some_and(|s| s.error.is_none()));
        assert!(Sent::parse("sent=1 failed=0 elapsed_ns=0 error=-").is_none());
        assert!(Sent::parse("sent=x failed=0 elapsed_ns=5 error=-").is_none());
        assert!(Sent::parse("failed=0 sent=1 elapsed_ns=5 error=-").is_none());
        assert!(Sent::parse("").is_none());
    }
}
