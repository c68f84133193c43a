//! `udptrace-demo`: the seed's cases played one after another in two network namespaces of its own, a
//! client and a server joined by veth, and a Kubernetes case in two more, a pod and its node, with udptrace's
//! text output live and one line of narration before each case. Every socket lives in a process named for
//! what it plays (`syslog-client`, `syslog-server`, `dns-client`, ...), so the owner in each line tells them
//! apart; the pod's process is in its container's cgroup, and udptrace runs in a mount namespace where
//! containerd's and the kubelet's files name it (`kube::Node`). On a terminal it waits for Enter between cases
//! (`--no-pause` never does). Each case must show its event: the closing lines say which did, and the exit
//! status is 1 if one did not. Everything it made goes when it ends, Ctrl-C included: the namespaces (and the
//! firewall rules and sockets in them), the processes it started, the node's files and cgroups, and udptrace.

use std::{
    io::{BufRead as _, BufReader, IsTerminal as _, Write as _},
    net::SocketAddr,
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

use crate::{
    helper::ClientProcess,
    kube::{Container, Driver, Node, Pod, Qos, Runtime},
    netns::{Netns, exec_in, veth},
};

const CLIENT: &str = "10.239.0.1";
const SERVER: &str = "10.239.0.2";
/// On the client's link, answered by nobody.
const ABSENT: &str = "10.239.0.99";
/// The pod's address, its node's end of the veth, and a CoreDNS pod's address that is gone.
const POD: &str = "10.244.1.5";
const NODE: &str = "10.244.1.1";
const GONE_BACKEND: &str = "10.244.1.9";
/// kube-dns's Service address (a ClusterIP).
const KUBE_DNS: &str = "10.96.0.10";
const POD_NAMESPACE: &str = "shop";
const POD_NAME: &str = "checkout-7c9f8b6d4-x2x9k";

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
        narration: "A syslog client sends to port 514 on the server, where nothing listens. The server's kernel \
                    answers with a port unreachable, and the client's kernel matches it to the socket: its next \
                    call fails with ECONNREFUSED.",
        shows: &["ECONNREFUSED", "delivered", "syslog-client"],
        in_tracepoint_mode: None,
    },
    Case {
        name: "soft_error_ignored",
        narration: "The server's firewall rejects NTP (port 123) with a host unreachable. That is a soft error: \
                    Linux drops it for a connected socket without IP_RECVERR, and the NTP client never hears of it.",
        shows: &["EHOSTUNREACH", "ignored", "ntp-client"],
        in_tracepoint_mode: Some((
            &["icmp_sent", "firewall_reject", "host-unreachable"],
            "in tracepoint mode udptrace sees the errors a socket is told of, not those it ignores: here the \
             host-unreachable the server sent shows, and the client's call timing out says it was ignored",
        )),
    },
    Case {
        name: "firewall_drop",
        narration: "The server's firewall drops statsd (port 8125) without a word: no ICMP comes back, the client's \
                    send succeeds. Only the server's kernel knows, and udptrace says where it dropped the datagram.",
        shows: &["udp_dropped", "netfilter_drop"],
        in_tracepoint_mode: None,
    },
    Case {
        name: "rcvbuf_overflow",
        narration: "A syslog server on port 1514 that never reads, with a 2 KiB receive buffer: a log shipper sends \
                    100 datagrams, the buffer fills, and the kernel drops the rest, silently to both ends.",
        shows: &["udp_dropped", "socket_rcvbuff", "syslog-server"],
        in_tracepoint_mode: None,
    },
    Case {
        name: "host_down",
        narration: "A DNS client asks 10.239.0.99, a resolver on its link that is gone: nobody answers ARP for it. \
                    After 3 s of asking, its own kernel gives up: it drops the query and tells the socket the host \
                    is unreachable, a soft error again.",
        shows: &["neigh_failed", "dns-client"],
        in_tracepoint_mode: None,
    },
    Case {
        name: "check_beside_nc",
        narration: "`nc -vzu` on the dropped port 8125 says \"succeeded\" to silence; `udptrace check` sends its \
                    probes, watches the kernel, and says what happened to them.",
        shows: &["filtered"],
        in_tracepoint_mode: None,
    },
    Case {
        name: "service_backend_gone",
        narration: "On a Kubernetes node, the pod shop/checkout-7c9f8b6d4-x2x9k asks kube-dns at its Service \
                    address 10.96.0.10:53. The Service's rule still sends it to 10.244.1.9, a CoreDNS pod that was \
                    deleted: nobody answers ARP for it, and the pod's kernel drops the query on its way out. \
                    udptrace names the pod and its container from containerd's files, as on a node.",
        shows: &["neigh_failed", "pod shop/checkout-7c9f8b6d4-x2x9k (checkout)"],
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
    let helper = std::env::current_exe().context("finding this program's own path")?;
    let stage = Stage::new(&helper)?;
    let (client_ns, server_ns, pod_ns) =
        (stage.client.inode.to_string(), stage.server.inode.to_string(), stage.pod.inode.to_string());
    let only = ["--netns", &client_ns, "--netns", &server_ns, "--netns", &pod_ns];
    let mut udptrace = Udptrace::start(&options.udptrace, &only, &stage.node.mounts())?;
    say(&format!(
        "two hosts in network namespaces: the client {CLIENT} (netns {client_ns}) and the server {SERVER} (netns \
         {server_ns}); and a Kubernetes node's pod {POD_NAMESPACE}/{POD_NAME} at {POD} (netns {pod_ns}), its \
         container `checkout` run by containerd; udptrace traces the three, from the node's mount namespace, where \
         containerd's and the kubelet's files are"
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
        let played = play(case.name, &stage, &options.udptrace);
        // The processes a case started live until its line is shown: its owner is theirs.
        let outcome = match played {
            Ok((extra, _actors)) => match udptrace.wait_for(since, shows, extra, Duration::from_secs(10)) {
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
        say("interrupted: the namespaces, the processes, the node's files and cgroups, and udptrace are gone");
        return Ok(false);
    }
    let failed = shown.iter().filter(|(_, o)| o.is_err()).count();
    println!("demo: {} passed, {failed} failed, 0 skipped", shown.len() - failed);
    Ok(all)
}

fn say(line: &str) {
    println!("==> {line}");
}

/// Where the cases play: the client and the server, the pod and its node, and the node's runtime files.
struct Stage {
    /// The node's mount namespace and cgroups (each case's processes are gone with the case).
    node: Node,
    client: Netns,
    server: Netns,
    pod: Netns,
    _node_ns: Netns,
    /// The pod's container (`checkout`), whose cgroup its process joins.
    checkout: Container,
    /// This binary, which plays each process (`helper udp-client --name ...`).
    helper: PathBuf,
}

impl Stage {
    fn new(helper: &Path) -> Result<Self> {
        let node = Node::new(helper)?;
        let client = Netns::new("demo-client")?;
        let server = Netns::new("demo-server")?;
        veth(&client, &[&format!("{CLIENT}/24")], &server, &[&format!("{SERVER}/24")])?;
        // The pod and its node, the Service routed through the node, and the Service's rule in the pod's own
        // OUTPUT (a socket-level load balancer's place), which still names the gone backend.
        let pod = Netns::new("demo-pod")?;
        let node_ns = Netns::new("demo-node")?;
        veth(&pod, &[&format!("{POD}/24")], &node_ns, &[&format!("{NODE}/24")])?;
        pod.ip(&["route", "add", "10.96.0.0/12", "via", NODE])?;
        exec_in(
            &pod,
            "nft",
            &[&format!(
                "add table inet demo_nat; \
                 add chain inet demo_nat output {{ type nat hook output priority -100; }}; \
                 add rule inet demo_nat output ip daddr {KUBE_DNS} udp dport 53 dnat ip to {GONE_BACKEND}:53"
            )],
        )
        .context("adding the Service's DNAT rule (are nf_nat and nft_nat available?)")?;
        let checkout_pod = Pod::new(POD_NAMESPACE, POD_NAME, Qos::Burstable, Driver::Systemd, Runtime::Containerd)?;
        node.start_pod(&checkout_pod)?;
        let checkout = node.start_container(&checkout_pod, "checkout")?;
        Ok(Self { node, client, server, pod, _node_ns: node_ns, checkout, helper: helper.to_owned() })
    }

    /// A process called `name` in `ns` (and `more`), whose socket, bound to `bind`, is connected to `to` and
    /// sends (`more`: how).
    fn client(&self, name: &str, ns: &Netns, bind: &str, to: SocketAddr, more: &[&str]) -> Result<ClientProcess> {
        let to = to.to_string();
        let args = ["--name", name, "--netns", ns.name.as_str(), "--bind", bind, "--connect", to.as_str()];
        ClientProcess::start(&self.helper, &[&args[..], more].concat())
    }
}

/// Does what the case says. Returns lines of output that are not udptrace's but show the case too (what
/// `udptrace check` printed), and the processes it started, which must live until its line shows.
fn play(name: &str, stage: &Stage, udptrace: &Path) -> Result<(Vec<String>, Vec<ClientProcess>)> {
    let server_at = |port: u16| SocketAddr::new(SERVER.parse().expect("an address"), port);
    let client = &stage.client;
    let actors = match name {
        "closed_port" => {
            let syslog = stage.client("syslog-client", client, CLIENT, server_at(514), &["--receive-for", "2000"])?;
            say(&format!("the client's next call: {}", syslog.received));
            vec![syslog]
        }
        "soft_error_ignored" => {
            nft(&stage.server, "udp dport 123 reject with icmp type host-unreachable")?;
            let ntp = stage.client("ntp-client", client, CLIENT, server_at(123), &["--receive-for", "500"])?;
            say(&format!("the client's next call: {}", ntp.received));
            vec![ntp]
        }
        "firewall_drop" => {
            nft(&stage.server, "udp dport 8125 drop")?;
            let statsd = stage.client("statsd-client", client, CLIENT, server_at(8125), &[])?;
            say("the client's send succeeded");
            vec![statsd]
        }
        "rcvbuf_overflow" => {
            let bind = server_at(1514).to_string();
            let args = ["--name", "syslog-server", "--netns", &stage.server.name, "--bind", &bind, "--rcvbuf", "2048"];
            let server = ClientProcess::serve(&stage.helper, &args)?;
            let shipper =
                stage.client("log-shipper", client, CLIENT, server_at(1514), &["--count", "100", "--size", "200"])?;
            vec![server, shipper]
        }
        "host_down" => {
            let gone = SocketAddr::new(ABSENT.parse().expect("an address"), 53);
            let dns = stage.client("dns-client", client, CLIENT, gone, &["--dns", "example.com"])?;
            say("the client's send succeeded; ARP asks for 10.239.0.99, three times a second apart");
            wait(Duration::from_secs(5));
            vec![dns]
        }
        "check_beside_nc" => {
            let target = format!("{SERVER}:8125");
            let nc = Command::new("ip")
                .args(["netns", "exec", &client.name, "nc", "-vzu", "-w", "1", SERVER, "8125"])
                .stdin(Stdio::null())
                .output();
            match nc {
                // nc says what it thinks on stderr.
                Ok(out) => say(&format!("nc -vzu {SERVER} 8125: {}", String::from_utf8_lossy(&out.stderr).trim())),
                Err(e) => say(&format!("nc -vzu {SERVER} 8125 did not run: {e}")),
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
            return Ok((text.lines().map(str::to_owned).collect(), Vec::new()));
        }
        "service_backend_gone" => {
            let service = SocketAddr::new(KUBE_DNS.parse().expect("an address"), 53);
            let more = ["--dns", "payments.shop.svc.cluster.local", "--cgroup", stage.checkout.dir.as_str()];
            let checkout = stage.client("checkout", &stage.pod, POD, service, &more)?;
            say(&format!(
                "the pod's send succeeded; its kernel sent the query to {GONE_BACKEND} instead, and ARP asks for it, \
                 three times a second apart"
            ));
            wait(Duration::from_secs(5));
            vec![checkout]
        }
        other => bail!("no case {other}"),
    };
    Ok((Vec::new(), actors))
}

/// Waits `period`, or until Ctrl-C.
fn wait(period: Duration) {
    let deadline = Instant::now() + period;
    while Instant::now() < deadline && !INTERRUPTED.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
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
    /// udptrace with `args`, in the mount namespace `mounts` (the node's).
    fn start(binary: &Path, args: &[&str], mounts: &Path) -> Result<Self> {
        let mounts = std::fs::File::open(mounts).with_context(|| format!("opening {}", mounts.display()))?;
        let fd = mounts.as_raw_fd();
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A process group of its own: the demo's Ctrl-C reaches it through the demo, which stops it.
            .process_group(0);
        // SAFETY: setns is async-signal-safe, and the closure touches nothing but the descriptor, which outlives
        // the spawn; the child's fs_struct is its own after fork, as setns(CLONE_NEWNS) needs.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNS) == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            });
        }
        let mut child = command.spawn().with_context(|| format!("starting {}", binary.display()))?;
        drop(mounts);
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
