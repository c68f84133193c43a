//! Processes of their own that the scenarios and the demo start: their binary runs itself as `helper ...`.
//!
//! - `helper udp-client --netns NAME --bind IP --connect IP:PORT [--fork | --no-send | --connect-in-child |
//!   --thread NAME] [--cgroup DIR] [--name NAME] [--count N] [--size BYTES | --dns NAME | --payload HEX]
//!   [--receive-for MS]`: joins the cgroup (if asked), enters the namespace, connects a UDP socket and sends
//!   once (`--count` times; not at all with `--no-send`: no send hook sees the socket); with `--fork` a child
//!   then sends on the same socket; with `--connect-in-child` the parent only creates the socket and a child
//!   connects it and sends; with `--thread` a second thread, named so, creates, connects and sends instead of
//!   the main one. With `--receive-for` it then waits that long for one datagram or error. The process (and
//!   thread) that sent last prints `ready LOCAL_ADDR PID TID [WHAT THE RECEIVE GOT]` and everything stays alive
//!   until its standard input closes.
//! - `helper udp-server --netns NAME --bind IP:PORT [--rcvbuf BYTES] [--cgroup DIR] [--name NAME]`: a socket
//!   that never reads; prints `ready LOCAL_ADDR PID TID` and waits as the client does.
//! - `helper hold --netns NAME [--cgroup DIR] [--name NAME]`: a process that only sits in the namespace and
//!   the cgroup (a pod's sandbox, `pause`); prints `ready PID` and waits.
//! - `helper node`: a mount namespace of its own with the host's `/run` and `/var/log` copied over tmpfs
//!   (`node_mounts::hold_node`); prints `ready PID` and waits.
//!
//! `--name` sets the process's name (`comm`, as `ps` and udptrace's owner show it) before anything else.

use std::{
    ffi::CString,
    fs::File,
    io::{self, BufRead as _, Read as _, Write as _},
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::{Child, ChildStdin, Command, ExitCode, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser};

/// `helper udp-client ...`, `helper udp-server ...`, `helper hold ...`, `helper node`.
#[derive(Parser)]
#[command(name = "udptrace-scenarios helper")]
enum Helper {
    UdpClient(UdpClient),
    UdpServer(UdpServer),
    Hold(Hold),
    Node,
}

/// Where a helper process lives, and what it is called.
#[derive(Args)]
struct Place {
    /// The network namespace (`ip netns` name) to enter.
    #[arg(long)]
    netns: String,
    /// Join this cgroup (its directory) first.
    #[arg(long)]
    cgroup: Option<String>,
    /// The process's name (`comm`).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args)]
struct UdpClient {
    #[command(flatten)]
    place: Place,
    #[arg(long)]
    bind: std::net::IpAddr,
    #[arg(long)]
    connect: SocketAddr,
    /// A child then sends on the same socket, last.
    #[arg(long, conflicts_with = "no_send")]
    fork: bool,
    /// Connect only: no send hook sees the socket.
    #[arg(long)]
    no_send: bool,
    /// The parent creates the socket; a child connects it and sends.
    #[arg(long, conflicts_with_all = ["fork", "no_send"])]
    connect_in_child: bool,
    /// How many datagrams the parent sends.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    count: u32,
    /// The size of each datagram (zeros), instead of the word `parent`.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1400))]
    size: Option<u16>,
    /// Each datagram a DNS query for NAME, type A.
    #[arg(long, conflicts_with = "size")]
    dns: Option<String>,
    /// After sending, wait up to MS milliseconds for one datagram or error, and say what came.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    receive_for: Option<u64>,
    /// A second thread, of this name, creates, connects and sends; the main thread waits for it.
    #[arg(long, conflicts_with_all = ["fork", "no_send", "connect_in_child", "receive_for"])]
    thread: Option<String>,
    /// What the main thread or `--thread` sends, in hex (a DNS query, say).
    #[arg(long, value_parser = parse_hex, conflicts_with_all = ["fork", "no_send", "connect_in_child", "size", "dns"])]
    payload: Option<Payload>,
}

/// `--payload`'s bytes (a type of its own: clap would take a `Vec` for a list of values).
#[derive(Clone)]
struct Payload(Vec<u8>);

/// `--payload`: two hex digits a byte.
fn parse_hex(text: &str) -> Result<Payload, String> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return Err(format!("`{text}` is not hex bytes"));
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).map_err(|_| format!("`{text}` is not hex bytes")))
        .collect::<Result<_, _>>()
        .map(Payload)
}

#[derive(Args)]
struct UdpServer {
    #[command(flatten)]
    place: Place,
    #[arg(long)]
    bind: SocketAddr,
    /// `SO_RCVBUF` (the kernel doubles it).
    #[arg(long)]
    rcvbuf: Option<libc::c_int>,
}

#[derive(Args)]
struct Hold {
    #[command(flatten)]
    place: Place,
}

pub fn main(args: &[String]) -> ExitCode {
    let parsed = Helper::try_parse_from(std::iter::once("helper").chain(args.iter().map(String::as_str)));
    let result = match parsed {
        Ok(Helper::UdpClient(client)) => udp_client(&client),
        Ok(Helper::UdpServer(server)) => udp_server(&server),
        Ok(Helper::Hold(hold)) => enter(&hold.place).and_then(|()| wait_announced(&std::process::id().to_string())),
        Ok(Helper::Node) => {
            crate::node_mounts::hold_node().and_then(|()| wait_announced(&std::process::id().to_string()))
        }
        Err(e) => e.exit(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Takes the name, joins the cgroup and enters the network namespace of `place`.
fn enter(place: &Place) -> Result<()> {
    if let Some(name) = &place.name {
        name_this_thread(name)?;
    }
    if let Some(cgroup) = &place.cgroup {
        std::fs::write(format!("{cgroup}/cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("joining cgroup {cgroup}"))?;
    }
    let netns = &place.netns;
    let ns = File::open(format!("/run/netns/{netns}")).with_context(|| format!("opening /run/netns/{netns}"))?;
    // SAFETY: a valid namespace fd; this process has a single thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

/// Sets the calling thread's name (`comm`, 15 bytes kept) with `prctl(PR_SET_NAME)`; for the main thread this
/// is the process's name.
fn name_this_thread(name: &str) -> Result<()> {
    let name = CString::new(name).context("a thread name with a NUL")?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string, which `name` is for the call's duration.
    if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error()).context("prctl(PR_SET_NAME)");
    }
    Ok(())
}

fn udp_client(args: &UdpClient) -> Result<()> {
    enter(&args.place)?;
    if let Some(name) = &args.thread {
        // The thread starts in this thread's network namespace and cgroup (clone copies them).
        let (name, payload) = (name.clone(), args.payload.clone().map_or_else(|| b"thread".to_vec(), |p| p.0));
        let (bind, connect) = (args.bind, args.connect);
        return std::thread::spawn(move || -> Result<()> {
            name_this_thread(&name)?;
            let socket = UdpSocket::bind(SocketAddr::new(bind, 0))?;
            socket.connect(connect)?;
            socket.send(&payload)?;
            announce(&socket, "")
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?;
    }
    let socket = UdpSocket::bind(SocketAddr::new(args.bind, 0))?;
    if args.connect_in_child {
        return in_child(|| {
            socket.connect(args.connect)?;
            socket.send(b"child")?;
            announce(&socket, "")
        });
    }
    socket.connect(args.connect)?;
    if args.no_send {
        return announce(&socket, "");
    }
    let payload = match (&args.payload, &args.dns, args.size) {
        (Some(payload), ..) => payload.0.clone(),
        (None, Some(name), _) => dns_query(name)?,
        (None, None, Some(size)) => vec![0; usize::from(size)],
        (None, None, None) => b"parent".to_vec(),
    };
    for _ in 0..args.count {
        socket.send(&payload)?;
    }
    if args.fork {
        return in_child(|| {
            socket.send(b"child")?;
            announce(&socket, "")
        });
    }
    let received = match args.receive_for {
        Some(ms) => {
            socket.set_read_timeout(Some(Duration::from_millis(ms)))?;
            let mut buf = [0u8; 512];
            match socket.recv(&mut buf) {
                Ok(n) => format!("{n} bytes"),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    format!("nothing within {ms} ms")
                }
                Err(e) => e.to_string(),
            }
        }
        None => String::new(),
    };
    announce(&socket, &received)
}

fn udp_server(args: &UdpServer) -> Result<()> {
    enter(&args.place)?;
    let socket = UdpSocket::bind(args.bind)?;
    if let Some(size) = args.rcvbuf {
        crate::packets::set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, size).context("SO_RCVBUF")?;
    }
    announce(&socket, "")
}

/// A DNS query for `name`, type A, class IN, recursion desired (RFC 1035 4.1).
fn dns_query(name: &str) -> Result<Vec<u8>> {
    let mut query = vec![0x4a, 0x11, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len()).ok().filter(|n| (1..64).contains(n));
        let Some(len) = len else {
            bail!("`{name}` is not a DNS name");
        };
        query.push(len);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(query)
}

/// Runs `child` in a forked child and waits for it.
fn in_child(child: impl FnOnce() -> Result<()>) -> Result<()> {
    // SAFETY: fork in a single-threaded process; the child only uses the socket, prints and waits.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()).context("fork"),
        0 => child(),
        pid => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            Ok(())
        }
    }
}

/// Prints `ready LOCAL PID TID [RECEIVED]`, then waits for standard input to close.
fn announce(socket: &UdpSocket, received: &str) -> Result<()> {
    // SAFETY: a syscall without arguments.
    let tid = unsafe { libc::gettid() };
    let line = format!("{} {} {tid} {received}", socket.local_addr()?, std::process::id());
    wait_announced(line.trim_end())
}

/// Prints `ready WHAT`, then waits for standard input to close.
fn wait_announced(what: &str) -> Result<()> {
    println!("ready {what}");
    io::stdout().flush()?;
    let mut sink = Vec::new();
    io::stdin().read_to_end(&mut sink)?;
    Ok(())
}

/// A helper process that said `ready ...`, kept alive until dropped.
struct Started {
    child: Child,
    stdin: Option<ChildStdin>,
    /// What followed `ready`.
    words: Vec<String>,
}

impl Started {
    fn spawn(helper: &Path, command: &str, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(helper)
            .args(["helper", command])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", helper.display()))?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        io::BufReader::new(child.stdout.take().context("helper stdout")?).read_line(&mut line)?;
        let mut words = line.split_whitespace().map(str::to_owned);
        if words.next().as_deref() != Some("ready") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the helper `{command}` did not start: {line:?}");
        }
        Ok(Self { child, stdin, words: words.collect() })
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // Closing its input ends it (and a forked child, which shares it).
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// A running helper client or server, from the suite's side.
pub struct ClientProcess {
    started: Started,
    pub local: SocketAddr,
    /// The process that sent last.
    pub pid: u32,
    /// Its thread that sent.
    pub tid: u32,
    /// What its receive got (`--receive-for`), as it said it.
    pub received: String,
}

impl ClientProcess {
    /// `helper udp-client ARGS`.
    pub fn start(helper: &Path, args: &[&str]) -> Result<Self> {
        Self::spawn(helper, "udp-client", args)
    }

    /// `helper udp-server ARGS`.
    pub fn serve(helper: &Path, args: &[&str]) -> Result<Self> {
        Self::spawn(helper, "udp-server", args)
    }

    fn spawn(helper: &Path, command: &str, args: &[&str]) -> Result<Self> {
        let started = Started::spawn(helper, command, args)?;
        let [local, pid, tid, ..] = started.words.as_slice() else {
            bail!("the helper `{command}` said no address, pid and tid: {:?}", started.words);
        };
        let (local, pid, tid) = (local.parse()?, pid.parse()?, tid.parse()?);
        let received = started.words.get(3..).unwrap_or_default().join(" ");
        Ok(Self { local, pid, tid, received, started })
    }

    /// The helper's own process: the parent when it forked.
    pub fn parent_pid(&self) -> u32 {
        self.started.child.id()
    }
}

/// A helper process that holds a place (`helper hold`, `helper node`), from the suite's side.
pub struct HeldProcess {
    _started: Started,
    pub pid: u32,
}

impl HeldProcess {
    /// `helper hold ARGS`: a process in a namespace and a cgroup, doing nothing.
    pub fn hold(helper: &Path, args: &[&str]) -> Result<Self> {
        Self::spawn(helper, "hold", args)
    }

    /// `helper node`: a mount namespace of its own (`node_mounts::hold_node`).
    pub fn node(helper: &Path) -> Result<Self> {
        Self::spawn(helper, "node", &[])
    }

    fn spawn(helper: &Path, command: &str, args: &[&str]) -> Result<Self> {
        let started = Started::spawn(helper, command, args)?;
        let pid = started.words.first().and_then(|p| p.parse().ok());
        let Some(pid) = pid else {
            bail!("the helper `{command}` said no pid: {:?}", started.words);
        };
        Ok(Self { _started: started, pid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_query_asks_for_the_name() {
        let query = dns_query("kube-dns.kube-system.svc").unwrap();
        assert_eq!(&query[4..6], &[0, 1], "one question");
        assert_eq!(&query[12..21], b"\x08kube-dns");
        assert!(query.ends_with(b"\x03svc\x00\x00\x01\x00\x01"));
        assert!(dns_query("a..b").is_err());
    }
}
