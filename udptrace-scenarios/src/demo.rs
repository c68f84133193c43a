//! `udptrace-demo`: the seed's cases played one after another in two network namespaces of its own, a
//! client and a server joined by veth, with udptrace's text output live and one line of narration before
//! each case. On a terminal it waits for Enter between cases (`--no-pause` never does). Each case must show
//! its event: the closing lines say which did, and the exit status is 1 if one did not. Everything it made
//! goes when it ends, Ctrl-C included: the namespaces (and the firewall rules and sockets in them) and the
//! udptrace it started.

use std::{
    io::{BufRead as _, BufReader, IsTerminal as _, Write as _},
    net::{SocketAddr, UdpSocket},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, channel},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::{Netns, exec_in, veth};

const CLIENT: &str = "10.239.0.1";
const SERVER: &str = "10.239.0.2";
/// On the client's link, answered by nobody.
const ABSENT: &str = "10.239.0.99";

/// Set by SIGINT: every wait gives up, and what was made is removed on the way out.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

pub struct Options {
    pub udptrace: PathBuf,
    /// Wait for Enter between cases (only on a terminal).
    pub pause: bool,
}

/// One case: what is said before it, what it does, and what in udptrace's output shows it.
struct Case {
    name: &'static str,
    narration: &'static str,
    /// Every one of these in one line of udptrace's output.
    shows: &'static [&'static str],
    /// What shows it instead where the socket_error hook is a tracepoint, which fires only for an error the
    /// socket is told of (`sock:inet_sk_error_report`), with the line said then.
    in_tracepoint_mode: Option<(&'static [&'static str], &'static str)>,
}

const CASES: &[Case] = &[
    Case {
        name: "closed_port",
        narration: "A connected client sends to port 7777 on the server, where nothing listens. The server's kernel \
                    answers with a port unreachable, and the client's kernel matches it to the socket: its next \
                    call fails with ECONNREFUSED.",
        shows: &["ECONNREFUSED", "delivered"],
        in_tracepoint_mode: None,
    },
    Case {
        name: "soft_error_ignored",
        narration: "The server's firewall rejects port 7001 with a host unreachable. That is a soft error: Linux drops \
                    it for a connected socket without IP_RECVERR, and the client never hears of it.",
        shows: &["EHOSTUNREACH", "ignored"],
        in_tracepoint_mode: Some((
            &["icmp_sent", "firewall_reject", "host-unreachable"],
            "in tracepoint mode udptrace sees the errors a socket is told of, not those it ignores: here the \
             host-unreachable the server sent shows, and the client's call timing out says it was ignored",
        )),
    },
    Case {
        name: "firewall_drop",
        narration: "The server's firewall drops port 7002 without a word: no ICMP comes back, the client's send \
                    succeeds. Only the server's kernel knows, and udptrace says where it dropped the datagram.",
        shows: &["udp_dropped", "netfilter_drop"],
        in_tracepoint_mode: None,
    },
    Case {
        name: "rcvbuf_overflow",
        narration: "A server on port 7003 that never reads, with a 2 KiB receive buffer: the client sends 100 \
                    datagrams, the buffer fills, and the kernel drops the rest, silently to both ends.",
        shows: &["udp_dropped", "socket_rcvbuff"],
        in_tracepoint_mode: None,
    },
    Case {
        name: "host_down",
        narration: "The client sends to 10.239.0.99, an address on its link that nobody answers ARP for. After 3 s of \
                    asking, its own kernel gives up: it drops the datagram and tells the socket the host is \
                    unreachable, a soft error again.",
        shows: &["neigh_failed"],
        in_tracepoint_mode: None,
    },
    Case {
        name: "check_beside_nc",
        narration: "`nc -vzu` on the dropped port 7002 says \"succeeded\" to silence; `udptrace check` sends its \
                    probes, watches the kernel, and says what happened to them.",
        shows: &["filtered"],
        in_tracepoint_mode: None,
    },
];

/// Plays every case; `Ok(false)` if one did not show its event.
pub fn run(options: &Options) -> Result<bool> {
    // SAFETY: a handler that stores to an atomic; without SA_RESTART, so that a wait is interrupted.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_interrupt as *const () as usize;
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
    crate::netns::sweep_stale();
    let client = Netns::new("demo-client")?;
    let server = Netns::new("demo-server")?;
    veth(&client, &[&format!("{CLIENT}/24")], &server, &[&format!("{SERVER}/24")])?;
    let (client_ns, server_ns) = (client.inode.to_string(), server.inode.to_string());
    let mut udptrace = Udptrace::start(&options.udptrace, &["--netns", &client_ns, "--netns", &server_ns])?;
    say(&format!(
        "two hosts in network namespaces: the client {CLIENT} (netns {client_ns}) and the server {SERVER} (netns \
         {server_ns}); udptrace traces both"
    ));
    let mut shown = Vec::new();
    for case in CASES {
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
        println!();
        say(&format!("{}: {}", case.name, case.narration));
        let shows = match case.in_tracepoint_mode {
            Some((shows, why))
                if udptrace.socket_error_mode.as_deref() != Some("fentry")
                    && udptrace.socket_error_mode.as_deref() != Some("kprobe") =>
            {
                say(why);
                shows
            }
            _ => case.shows,
        };
        let since = udptrace.lines.len();
        let played = play(case.name, &client, &server, &options.udptrace);
        let outcome = match played {
            Ok(extra) => match udptrace.wait_for(since, shows, extra, Duration::from_secs(10)) {
                true => Ok(()),
                false => Err(anyhow::anyhow!("no line with {}", shows.join(" and "))),
            },
            Err(e) => Err(e),
        };
        shown.push((case.name, outcome));
        if options.pause && !INTERRUPTED.load(Ordering::Relaxed) && !std::ptr::eq(case, CASES.last().expect("cases")) {
            say("Enter for the next case, Ctrl-C to stop");
            wait_for_enter();
        }
    }
    udptrace.stop();
    println!();
    let mut all = true;
    for (name, outcome) in &shown {
        match outcome {
            Ok(()) => println!("demo  {name:<20} pass"),
            Err(e) => {
                all = false;
                println!("demo  {name:<20} FAIL: {e:#}");
            }
        }
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        say("interrupted: the namespaces and udptrace are gone");
        return Ok(false);
    }
    let failed = shown.iter().filter(|(_, o)| o.is_err()).count();
    println!("demo: {} passed, {failed} failed, 0 skipped", shown.len() - failed);
    Ok(all)
}

fn say(line: &str) {
    println!("==> {line}");
}

/// Does what the case says. Returns lines of output that are not udptrace's but show the case too (what
/// `udptrace check` printed).
fn play(name: &str, client: &Netns, server: &Netns, udptrace: &Path) -> Result<Vec<String>> {
    let server_at = |port: u16| SocketAddr::new(SERVER.parse().expect("an address"), port);
    let connected = |to: SocketAddr| -> Result<UdpSocket> {
        let socket = client.run(|| UdpSocket::bind(format!("{CLIENT}:0")))??;
        socket.connect(to)?;
        Ok(socket)
    };
    match name {
        "closed_port" => {
            let socket = connected(server_at(7777))?;
            socket.send(b"hello")?;
            next_call(&socket, Duration::from_secs(2))?;
        }
        "soft_error_ignored" => {
            nft(server, "udp dport 7001 reject with icmp type host-unreachable")?;
            let socket = connected(server_at(7001))?;
            socket.send(b"hello")?;
            next_call(&socket, Duration::from_millis(500))?;
        }
        "firewall_drop" => {
            nft(server, "udp dport 7002 drop")?;
            let socket = connected(server_at(7002))?;
            socket.send(b"hello")?;
            say("the client's send succeeded");
        }
        "rcvbuf_overflow" => {
            let receiver = server.run(|| -> Result<UdpSocket> {
                let socket = UdpSocket::bind(format!("{SERVER}:7003"))?;
                let size: libc::c_int = 2048;
                // SAFETY: a valid socket and option value.
                unsafe {
                    libc::setsockopt(
                        socket.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVBUF,
                        (&raw const size).cast(),
                        size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                Ok(socket)
            })??;
            let socket = connected(server_at(7003))?;
            for _ in 0..100 {
                socket.send(&[0u8; 200])?;
            }
            // Held until the drops are shown.
            std::thread::sleep(Duration::from_millis(1500));
            drop(receiver);
        }
        "host_down" => {
            let socket = connected(SocketAddr::new(ABSENT.parse().expect("an address"), 8125))?;
            socket.send(b"hello")?;
            say("the client's send succeeded; ARP asks for 10.239.0.99, three times a second apart");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !INTERRUPTED.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        "check_beside_nc" => {
            let target = format!("{SERVER}:7002");
            let nc = Command::new("ip")
                .args(["netns", "exec", &client.name, "nc", "-vzu", "-w", "1", SERVER, "7002"])
                .stdin(Stdio::null())
                .output();
            match nc {
                // nc says what it thinks on stderr.
                Ok(out) => say(&format!("nc -vzu {SERVER} 7002: {}", String::from_utf8_lossy(&out.stderr).trim())),
                Err(e) => say(&format!("nc -vzu {SERVER} 7002 did not run: {e}")),
            }
            let output = Command::new("ip")
                .args(["netns", "exec", &client.name])
                .arg(udptrace)
                .args(["check", &target])
                .stdin(Stdio::null())
                .output()
                .context("running udptrace check")?;
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            for line in text.lines() {
                println!("    {line}");
            }
            return Ok(text.lines().map(str::to_owned).collect());
        }
        other => bail!("no case {other}"),
    }
    Ok(Vec::new())
}

/// The client's next call, a receive of up to `wait`, and what it returned, said.
fn next_call(socket: &UdpSocket, wait: Duration) -> Result<()> {
    socket.set_read_timeout(Some(wait))?;
    let mut buf = [0u8; 16];
    let got = socket.recv(&mut buf);
    say(&format!("the client's next call: {}", got.map_or_else(|e| e.to_string(), |n| format!("{n} bytes"))));
    Ok(())
}

fn nft(ns: &Netns, rule: &str) -> Result<()> {
    exec_in(ns, "nft", &["add", "table", "inet", "demo"])?;
    exec_in(ns, "nft", &["add chain inet demo input { type filter hook input priority 0 ; }"])?;
    let mut args = vec!["add", "rule", "inet", "demo", "input"];
    args.extend(rule.split_whitespace());
    exec_in(ns, "nft", &args).map(drop)
}

/// Waits for a line on stdin, giving up at Ctrl-C.
fn wait_for_enter() {
    let stdin = std::io::stdin();
    loop {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return;
        }
        let mut poll = libc::pollfd { fd: stdin.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut poll, 1, 200) } > 0 {
            let mut line = String::new();
            let _ = stdin.lock().read_line(&mut line);
            return;
        }
    }
}

/// The udptrace the demo started: its stdout and stderr shown as they come, its stdout's lines kept.
struct Udptrace {
    child: Child,
    incoming: Receiver<String>,
    lines: Vec<String>,
    /// How the socket_error hook attached (`fentry`, `kprobe`, `tracepoint`), from the line that says so.
    socket_error_mode: Option<String>,
}

impl Udptrace {
    fn start(binary: &Path, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A process group of its own: the demo's Ctrl-C reaches it through the demo, which stops it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let (tx, incoming) = channel();
        let stdout = child.stdout.take().context("udptrace's stdout")?;
        let stderr = child.stderr.take().context("udptrace's stderr")?;
        let started = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{line}");
                let _ = std::io::stdout().flush();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if line.starts_with("udptrace: tracing") {
                    let mode = line.split(['(', ',', ')']).find_map(|part| part.trim().strip_prefix("socket_error="));
                    let _ = started.send(format!("\0tracing {}", mode.unwrap_or("-")));
                }
            }
        });
        let mut this = Self { child, incoming, lines: Vec::new(), socket_error_mode: None };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match this.incoming.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.starts_with("\0tracing ") => {
                    this.socket_error_mode = line.strip_prefix("\0tracing ").map(str::to_owned);
                    return Ok(this);
                }
                Ok(line) => this.lines.push(line),
                Err(_) if INTERRUPTED.load(Ordering::Relaxed) => bail!("interrupted"),
                Err(_) if Instant::now() > deadline => bail!("udptrace did not start tracing within 120 s"),
                Err(_) => {
                    if let Ok(Some(status)) = this.child.try_wait() {
                        bail!("udptrace exited with {status} before it traced");
                    }
                }
            }
        }
    }

    /// Whether a line from `since` on (or one of `extra`) holds every one of `words`, waiting up to `timeout`.
    fn wait_for(&mut self, since: usize, words: &[&str], extra: Vec<String>, timeout: Duration) -> bool {
        let holds = |line: &str| words.iter().all(|w| line.contains(w));
        if extra.iter().any(|l| holds(l)) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if self.lines[since.min(self.lines.len())..].iter().any(|l| holds(l)) {
                return true;
            }
            if Instant::now() > deadline || INTERRUPTED.load(Ordering::Relaxed) {
                return false;
            }
            if let Ok(line) = self.incoming.recv_timeout(Duration::from_millis(200)) {
                self.lines.push(line);
            }
        }
    }

    fn stop(&mut self) {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Udptrace {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether to pause between cases: asked for, and on a terminal.
pub fn pausing(asked: bool) -> bool {
    asked && std::io::stdin().is_terminal()
}
