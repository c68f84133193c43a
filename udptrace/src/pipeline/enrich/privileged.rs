//! What the tracer asks of the privileged helper (`privsep`, once it has split), and `Local`, which answers
//! it in-process: in the helper, and in a process that has not split (the start, tests).

use std::{
    collections::HashMap,
    fs::File,
    io,
    os::fd::{FromRawFd as _, OwnedFd},
    path::PathBuf,
    time::Instant,
};

use super::{
    conntrack::{self, Flow},
    owner::{self, Lookup, Resolver},
    runtime::Runtime,
};
use crate::{
    domain::Translation,
    pipeline::{
        counters::{self, RateLimits},
        netns,
    },
};

/// A network namespace's pod is looked up among at most this many of its processes.
pub const MAX_NETNS_MEMBERS: usize = 64;

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
    /// The translated conntrack entry of network namespace `netns` that holds `flow` (ctnetlink, which takes
    /// CAP_NET_ADMIN); `None` where there is none, or it cannot be asked.
    fn conntrack(&mut self, netns: u64, flow: Flow) -> Option<Translation>;
    /// Container `id`'s runtime bundle (`config.json`), opened for reading, and whose it is: the
    /// directories are the runtime's, mode 0700. `None` where neither runtime has one.
    fn bundle(&mut self, id: &str) -> Option<(Runtime, File)>;
    /// Some of the processes in network namespace `netns` (at most [`MAX_NETNS_MEMBERS`]).
    fn netns_members(&mut self, netns: u64) -> Vec<u32>;
}

/// The requests answered in this process: by the helper, and by a process that has not split (tests).
#[derive(Default)]
pub struct Local {
    owners: Resolver,
    /// Where the namespaces in use can be opened; read again when one cannot be.
    namespaces: HashMap<u64, PathBuf>,
    /// A ctnetlink socket of this process's own namespace, kept; another namespace's is opened for each
    /// question, so that none keeps a deleted pod's namespace alive.
    ctnetlink: Option<netlink_sys::Socket>,
    /// Whether a failed conntrack question was said.
    conntrack_failure_said: bool,
}

impl Local {
    #[cfg(test)]
    pub fn with_owners(owners: Resolver) -> Self {
        Self { owners, ..Self::default() }
    }

    /// The entry holding `flow` in `netns`, asked through a ctnetlink socket opened there. A namespace no
    /// longer in use has none to ask about (`Ok(None)`).
    fn ask_conntrack(&mut self, netns: u64, flow: &Flow) -> io::Result<Option<Translation>> {
        if !flow.valid() || !conntrack::in_kernel() {
            return Ok(None);
        }
        if netns::own() == Some(netns) {
            let socket = match self.ctnetlink.take() {
                Some(socket) => socket,
                None => conntrack::open()?,
            };
            let answer = conntrack::query(&socket, flow);
            // A socket that failed (the kernel did not answer in time) is opened anew next time.
            if answer.is_ok() {
                self.ctnetlink = Some(socket);
            }
            return answer;
        }
        let Ok(namespace) = self.namespace(netns) else {
            return Ok(None);
        };
        let socket = netns::inside(&namespace, conntrack::open)?;
        conntrack::query(&socket, flow)
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

    fn conntrack(&mut self, netns: u64, flow: Flow) -> Option<Translation> {
        match self.ask_conntrack(netns, &flow) {
            Ok(answer) => answer,
            Err(why) => {
                if !std::mem::replace(&mut self.conntrack_failure_said, true) {
                    eprintln!(
                        "udptrace: warning: cannot ask conntrack of network namespace {netns} ({why}): conntrack is \
                         null where the program had no entry to read"
                    );
                }
                None
            }
        }
    }

    fn bundle(&mut self, id: &str) -> Option<(Runtime, File)> {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Only a regular file, not a link a container's writer could have put there.
        let open = |path| std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path);
        Runtime::bundles(id)?.into_iter().find_map(|(runtime, path)| {
            let file = open(path).ok()?;
            file.metadata().ok()?.is_file().then_some((runtime, file))
        })
    }

    fn netns_members(&mut self, netns: u64) -> Vec<u32> {
        netns::members(netns, MAX_NETNS_MEMBERS)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{SocketAddr, UdpSocket},
        process::Command,
        time::Duration,
    };

    use udptrace_scenarios::netns::{Netns, exec_in};

    use super::*;
    use crate::domain::{Nat, Tuple};

    /// Why this host cannot run the conntrack test, if it cannot.
    fn cannot_run() -> Option<&'static str> {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root: network namespaces and nft rules take it");
        }
        if !conntrack::in_kernel() {
            return Some("this kernel has no conntrack");
        }
        let found = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        if !found("nft") || !found("conntrack") {
            return Some("nft or conntrack (Debian's nftables and conntrack packages) is missing");
        }
        None
    }

    /// A namespace whose OUTPUT DNATs a "Service" to a "backend" on its loopback, as kube-proxy does for a
    /// host-network client: 10.96.0.10:53 to 10.77.0.2:5353 (marking the entry 0x2a), and fd00:96::10 to
    /// [fd00:77::2]:5353; the client is 10.77.0.1 and fd00:77::1. Deleted when dropped.
    fn translating_namespace() -> anyhow::Result<Netns> {
        let ns = Netns::new("ct")?;
        for addr in ["10.77.0.1/32", "10.77.0.2/32"] {
            ns.ip(&["addr", "add", addr, "dev", "lo"])?;
        }
        for addr in ["fd00:77::1/128", "fd00:77::2/128"] {
            ns.ip(&["addr", "add", addr, "dev", "lo", "nodad"])?;
        }
        ns.ip(&["route", "add", "10.96.0.0/16", "dev", "lo"])?;
        ns.ip(&["-6", "route", "add", "fd00:96::/64", "dev", "lo"])?;
        exec_in(&ns, "nft", &["add table inet ut"])?;
        exec_in(&ns, "nft", &["add chain inet ut out { type nat hook output priority -100; }"])?;
        exec_in(
            &ns,
            "nft",
            &["add rule inet ut out ip daddr 10.96.0.10 udp dport 53 ct mark set 0x2a dnat ip to 10.77.0.2:5353"],
        )?;
        exec_in(
            &ns,
            "nft",
            &["add rule inet ut out ip6 daddr fd00:96::10 udp dport 53 dnat ip6 to [fd00:77::2]:5353"],
        )?;
        Ok(ns)
    }

    /// `conntrack -L`'s line for the entry whose original source port is `port`, in `ns`: its original
    /// and reply tuples, whether it was replied, its mark.
    fn listed(ns: &Netns, family: &str, port: u16) -> anyhow::Result<(Tuple, Tuple, bool, Option<u32>)> {
        let out = exec_in(ns, "conntrack", &["-L", "-f", family, "-p", "udp", "--sport", &port.to_string()])?;
        let line = out.lines().find(|l| l.contains(&format!("sport={port} "))).context("no entry listed")?;
        let values = |key: &str| -> Vec<&str> { line.split_whitespace().filter_map(|w| w.strip_prefix(key)).collect() };
        let (src, dst, sport, dport) = (values("src="), values("dst="), values("sport="), values("dport="));
        let at = |i: usize| -> anyhow::Result<Tuple> {
            let addr = |ip: &str, port: &str| -> anyhow::Result<SocketAddr> {
                Ok(SocketAddr::new(ip.parse()?, port.parse()?))
            };
            Ok(Tuple { src: addr(src[i], sport[i])?, dst: addr(dst[i], dport[i])? })
        };
        let mark = values("mark=").first().map(|m| m.parse()).transpose()?;
        Ok((at(0)?, at(1)?, !line.contains("[UNREPLIED]"), mark))
    }

    use anyhow::Context as _;

    /// The real kernel's answer, through `Local` as the helper asks it (entering the namespace): a DNATed
    /// flow's entry, IPv4 and IPv6, unreplied then replied, the same as `conntrack -L` lists; no entry and an
    /// untranslated entry are `None`; and a thread without CAP_NET_ADMIN is refused, which is why the tracer
    /// cannot ask itself.
    #[test]
    fn asks_the_kernel_for_a_translated_flow() {
        if let Some(why) = cannot_run() {
            eprintln!("skipped: {why}");
            return;
        }
        let ns = translating_namespace().expect("a namespace that translates");
        let mut local = Local::default();
        for (family, client, service, backend) in [
            ("ipv4", "10.77.0.1:0", "10.96.0.10:53", "10.77.0.2:5353"),
            ("ipv6", "[fd00:77::1]:0", "[fd00:96::10]:53", "[fd00:77::2]:5353"),
        ] {
            let (service, backend): (SocketAddr, SocketAddr) = (service.parse().unwrap(), backend.parse().unwrap());
            // Unreplied: nothing listens on the backend's port.
            let sent = ns
                .run(|| -> std::io::Result<SocketAddr> {
                    let socket = UdpSocket::bind(client)?;
                    socket.connect(service)?;
                    socket.send(b"q")?;
                    socket.local_addr()
                })
                .unwrap()
                .unwrap();
            let flow = Flow::new(sent, service, udptrace_common::IPPROTO_UDP).unwrap();
            let got = local.conntrack(ns.inode, flow).expect("the translated entry");
            let (original, reply, replied, mark) = listed(&ns, family, sent.port()).unwrap();
            assert_eq!(got.original, Tuple { src: sent, dst: service });
            assert_eq!(got.reply, Tuple { src: backend, dst: sent });
            assert_eq!((got.original, got.reply, got.replied, got.mark), (original, reply, replied, mark));
            assert_eq!((got.nat, got.replied), (Nat::Dnat, false));
            assert_eq!(got.mark, Some(if family == "ipv4" { 0x2a } else { 0 }));
            // The same entry by its reply tuple, the flow the other way after the translation.
            let back = Flow::new(backend, sent, udptrace_common::IPPROTO_UDP).unwrap();
            assert_eq!(local.conntrack(ns.inode, back), Some(got));
            // Replied: the backend answers, and conntrack translates its answer back.
            let answered = ns
                .run(|| -> std::io::Result<(SocketAddr, SocketAddr)> {
                    let server = UdpSocket::bind(backend)?;
                    let socket = UdpSocket::bind(client)?;
                    socket.connect(service)?;
                    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
                    socket.send(b"q")?;
                    let mut buf = [0; 8];
                    let (_, from) = server.recv_from(&mut buf)?;
                    server.send_to(b"a", from)?;
                    let (_, answered_from) = socket.recv_from(&mut buf)?;
                    Ok((socket.local_addr()?, answered_from))
                })
                .unwrap()
                .unwrap();
            assert_eq!(answered.1, service, "the answer comes from the Service address");
            let flow = Flow::new(answered.0, service, udptrace_common::IPPROTO_UDP).unwrap();
            let got = local.conntrack(ns.inode, flow).expect("the replied entry");
            let (original, reply, replied, mark) = listed(&ns, family, answered.0.port()).unwrap();
            assert_eq!((got.original, got.reply, got.replied, got.mark), (original, reply, replied, mark));
            assert!(got.replied);
            // An untranslated entry (to the backend directly), and a flow with none.
            let direct = ns
                .run(|| -> std::io::Result<SocketAddr> {
                    let socket = UdpSocket::bind(client)?;
                    socket.connect(backend)?;
                    socket.send(b"q")?;
                    socket.local_addr()
                })
                .unwrap()
                .unwrap();
            assert!(listed(&ns, family, direct.port()).is_ok(), "conntrack tracks the direct flow");
            let flow = Flow::new(direct, backend, udptrace_common::IPPROTO_UDP).unwrap();
            assert_eq!(local.conntrack(ns.inode, flow), None);
            let none = Flow::new(sent, "10.96.0.11:53".parse().unwrap(), udptrace_common::IPPROTO_UDP);
            if let Some(none) = none.filter(|f| f.src.is_ipv4()) {
                assert_eq!(local.conntrack(ns.inode, none), None);
            }
        }
        // This process's own namespace holds none of them, and asking it fails nothing.
        let own = netns::own().unwrap();
        let flow = Flow::new("10.77.0.1:40000".parse().unwrap(), "10.96.0.10:53".parse().unwrap(), 17).unwrap();
        assert_eq!(local.conntrack(own, flow), None);
        assert!(!local.conntrack_failure_said, "a question failed");
        // A namespace no process is in and no name refers to is not entered.
        assert_eq!(local.conntrack(1, flow), None);
        assert!(!local.conntrack_failure_said);
        // Without CAP_NET_ADMIN (this thread's, as the socket's opener and the sender) the kernel refuses.
        let refused = std::thread::spawn(move || {
            caps::drop(None, caps::CapSet::Effective, caps::Capability::CAP_NET_ADMIN).unwrap();
            conntrack::query(&conntrack::open()?, &flow)
        })
        .join()
        .unwrap();
        assert_eq!(refused.unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
}
