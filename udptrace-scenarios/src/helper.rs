//! A client in a process of its own, for the owner scenarios: the suite's binary runs itself as
//! `helper udp-client --netns NAME --bind IP --connect IP:PORT [--fork | --no-send | --connect-in-child |
//! --thread NAME] [--cgroup DIR] [--name NAME] [--payload HEX]`.
//!
//! It names itself (if asked), joins the cgroup (if asked), enters the namespace, connects a UDP socket and
//! sends once (not at all with `--no-send`: no send hook sees the socket); with `--fork` a child then sends on
//! the same socket; with `--connect-in-child` the parent only creates the socket and a child connects it and
//! sends; with `--thread` a second thread, named so, creates, connects and sends instead of the main one. The
//! process (and thread) that sent last prints `ready LOCAL_ADDR PID TID` and everything stays alive until its
//! standard input closes.

use std::{
    fs::File,
    io::{self, BufRead as _, Read as _, Write as _},
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    process::{Child, ChildStdin, Command, ExitCode, Stdio},
};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser};

/// `helper udp-client ...`.
#[derive(Parser)]
#[command(name = "udptrace-scenarios helper")]
enum Helper {
    UdpClient(UdpClient),
}

#[derive(Args)]
struct UdpClient {
    /// The network namespace (`ip netns` name) to open the socket in.
    #[arg(long)]
    netns: String,
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
    /// Join this cgroup first.
    #[arg(long)]
    cgroup: Option<String>,
    /// Name the process (its main thread) so first.
    #[arg(long)]
    name: Option<String>,
    /// A second thread, of this name, creates, connects and sends; the main thread waits for it.
    #[arg(long, conflicts_with_all = ["fork", "no_send", "connect_in_child"])]
    thread: Option<String>,
    /// What the main thread or `--thread` sends, in hex (a DNS query, say).
    #[arg(long, value_parser = parse_hex, conflicts_with_all = ["fork", "no_send", "connect_in_child"])]
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

pub fn main(args: &[String]) -> ExitCode {
    let parsed = Helper::try_parse_from(std::iter::once("helper").chain(args.iter().map(String::as_str)));
    let result = match parsed {
        Ok(Helper::UdpClient(client)) => udp_client(&client),
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

fn udp_client(args: &UdpClient) -> Result<()> {
    if let Some(name) = &args.name {
        name_this_thread(name)?;
    }
    if let Some(cgroup) = &args.cgroup {
        std::fs::write(format!("{cgroup}/cgroup.procs"), std::process::id().to_string())
            .with_context(|| format!("joining cgroup {cgroup}"))?;
    }
    let netns = &args.netns;
    let ns = File::open(format!("/run/netns/{netns}"))?;
    // SAFETY: a valid namespace fd; this process has a single thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error()).context("setns");
    }
    if let Some(name) = &args.thread {
        // The thread starts in this thread's network namespace (clone copies it).
        let (name, payload) = (name.clone(), args.payload.clone().map_or_else(|| b"thread".to_vec(), |p| p.0));
        let (bind, connect) = (args.bind, args.connect);
        return std::thread::spawn(move || -> Result<()> {
            name_this_thread(&name)?;
            let socket = UdpSocket::bind(SocketAddr::new(bind, 0))?;
            socket.connect(connect)?;
            socket.send(&payload)?;
            announce(&socket)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))?;
    }
    let socket = UdpSocket::bind(SocketAddr::new(args.bind, 0))?;
    if args.connect_in_child {
        return in_child(|| {
            socket.connect(args.connect)?;
            socket.send(b"child")?;
            announce(&socket)
        });
    }
    socket.connect(args.connect)?;
    if args.no_send {
        return announce(&socket);
    }
    socket.send(args.payload.as_ref().map_or(b"parent", |p| &p.0))?;
    if args.fork {
        return in_child(|| {
            socket.send(b"child")?;
            announce(&socket)
        });
    }
    announce(&socket)
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

/// Sets the calling thread's name (`comm`, 15 bytes kept) with `prctl(PR_SET_NAME)`; for the main thread this
/// is the process's name.
fn name_this_thread(name: &str) -> Result<()> {
    let name = std::ffi::CString::new(name).context("a thread name with a NUL")?;
    // SAFETY: PR_SET_NAME reads a NUL-terminated string, which `name` is for the call's duration.
    if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error()).context("prctl(PR_SET_NAME)");
    }
    Ok(())
}

/// Prints `ready LOCAL PID TID`, then waits for standard input to close.
fn announce(socket: &UdpSocket) -> Result<()> {
    // SAFETY: a syscall without arguments.
    let tid = unsafe { libc::gettid() };
    println!("ready {} {} {tid}", socket.local_addr()?, std::process::id());
    io::stdout().flush()?;
    let mut sink = Vec::new();
    io::stdin().read_to_end(&mut sink)?;
    Ok(())
}

/// A running helper client, from the suite's side.
pub struct ClientProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    pub local: SocketAddr,
    /// The process that sent last.
    pub pid: u32,
    /// Its thread that sent.
    pub tid: u32,
}

impl ClientProcess {
    pub fn start(helper: &std::path::Path, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(helper)
            .args(["helper", "udp-client"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", helper.display()))?;
        let stdin = child.stdin.take();
        let mut line = String::new();
        io::BufReader::new(child.stdout.take().context("helper stdout")?).read_line(&mut line)?;
        let mut words = line.split_whitespace();
        let (Some("ready"), Some(local), Some(pid), Some(tid)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            let _ = child.kill();
            bail!("the helper client did not start: {line:?}");
        };
        Ok(Self { local: local.parse()?, pid: pid.parse()?, tid: tid.parse()?, child, stdin })
    }
}

impl ClientProcess {
    /// The helper's own process: the parent when it forked.
    pub fn parent_pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        // Closing its input ends it (and a forked child, which shares it).
        self.stdin.take();
        let _ = self.child.wait();
    }
}
