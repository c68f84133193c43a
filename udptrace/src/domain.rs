//! What udptrace reports, in its own terms: the events, the facts they carry, the attach modes. Every
//! other module speaks these types; this one depends on no other module of udptrace.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    time::SystemTime,
};

use strum::IntoStaticStr;

/// How a program attaches to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, IntoStaticStr)]
pub enum AttachMode {
    /// fentry/fexit: BPF trampolines on kernel functions (BTF, x86_64 5.5+). Cheapest, sees arguments
    /// and return values.
    #[strum(serialize = "fentry")]
    FEntry,
    /// kprobe/kretprobe: needs CONFIG_KPROBES.
    #[strum(serialize = "kprobe")]
    Kprobe,
    /// Tracepoints (stable ABI): the only mode on kernels without kprobes and fentry; sees less.
    #[strum(serialize = "tracepoint")]
    Tracepoint,
    /// A cgroup program on the root of the cgroup v2 hierarchy: runs in the process, for every cgroup,
    /// whatever `--probe` says.
    #[strum(serialize = "cgroup")]
    Cgroup,
}

impl AttachMode {
    /// The order `--probe auto` tries them in.
    pub const LADDER: [AttachMode; 3] = [AttachMode::FEntry, AttachMode::Kprobe, AttachMode::Tracepoint];

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What the kernel did with an ICMP error that reached the UDP layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Verdict {
    Delivered,
    IgnoredSoftError,
    IgnoredUnconnected,
    NoSocket,
    /// The socket is a tunnel's (`UDP_ENCAP` set: ESP-in-UDP, L2TP, or a kernel tunnel): the kernel hands the
    /// error to the tunnel, never to an application (`__udp4_lib_err`, `tunnel = true`).
    Tunnel,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Which rate limit stopped an ICMP error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Scope {
    /// The global token bucket (`icmp_global_allow`).
    Global,
    /// The per-destination limit (`inet_peer_xrlim_allow`).
    Host,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why this host sent an ICMP error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Cause {
    /// A UDP packet reached a port with no socket (`__udp4_lib_rcv`).
    NoListener,
    /// A netfilter REJECT rule (`nf_send_unreach`, iptables `REJECT` and nftables `reject`).
    FirewallReject,
    /// Routing failed: an unreachable/prohibit route, no route, a tunnel that could not route it.
    NoRoute,
    /// The next hop, or the destination on the link, did not answer ARP/ND (the neighbour entry failed):
    /// a host that is down or absent.
    NeighbourUnreachable,
    /// An IPVS virtual service had no usable real server (`ip_vs_leave`).
    NoBackend,
    /// Forwarding found the TTL exhausted.
    TtlExceeded,
    /// Forwarding a DF packet over a link with a smaller MTU.
    FragNeeded,
    Other,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Facts every event carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub time: SystemTime,
    pub netns: u32,
    pub probe: AttachMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmp {
    pub icmp_type: u8,
    pub code: u8,
    /// Who sent it; `None` for ICMP this host sends.
    pub from: Option<IpAddr>,
}

/// The process behind a socket, as the event reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerInfo {
    pub pid: u32,
    /// The creating thread, when the creation was seen.
    pub tid: Option<u32>,
    pub comm: String,
    /// The cgroup v2 id the kernel gave, when the creation was seen.
    pub cgroup_id: Option<u64>,
    /// The cgroup v2 path (`/system.slice/foo.service`).
    pub cgroup: Option<String>,
    /// The container id parsed from the cgroup path.
    pub container: Option<String>,
    /// How many processes hold the socket, when `/proc` was searched for it (a socket created before
    /// udptrace started); `None` when the owner came from the kernel's record.
    pub holders: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketError {
    pub meta: Meta,
    pub family: Family,
    pub local: SocketAddr,
    pub remote: Option<SocketAddr>,
    pub icmp: Option<Icmp>,
    /// Positive errno, 0 for none.
    pub errno: i32,
    pub verdict: Option<Verdict>,
    pub recverr: Option<bool>,
    /// The socket's inode number, when there is a socket.
    pub sock_ino: Option<u64>,
    /// The kernel told no socket of the error and did not say that none matched: which socket ignored it
    /// is for user space to look up (`pipeline::enrich::sockets`).
    pub unreported: bool,
    /// The interface the ICMP error came in on, 0 if unknown.
    pub ifindex: u32,
    /// The process that owns the socket (the one that created it, else the first holder /proc shows).
    pub owner: Option<OwnerInfo>,
    /// No process holds the socket: one the kernel made for itself (a VXLAN, WireGuard or L2TP tunnel's).
    pub kernel_socket: bool,
    /// How many such errors this event stands for: 1, or, when the programs count in the kernel
    /// (`pipeline::tally`), how many they counted since the last read.
    pub count: u64,
    /// What the ICMP error quotes of the datagram, as DNS, for one on a DNS port (fentry and kprobe modes:
    /// tracepoint mode sees no quoted packet).
    pub dns: Option<Dns>,
}

/// The packet an ICMP error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Ports, when the packet is UDP, UDP-Lite or TCP and not a later fragment.
    pub ports: Option<(u16, u16)>,
    pub proto: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpSent {
    pub meta: Meta,
    pub family: Family,
    pub icmp: Icmp,
    pub packet: Option<Packet>,
    /// Kernel return addresses at the hook, innermost first.
    pub stack: Vec<u64>,
    pub cause: Cause,
    /// `Some(false)`: the hook sits past the rate limits, the error went out; `None`: seen where the kernel
    /// decided to send it (a `no_socket` drop in tracepoint mode), before the rate limits.
    pub rate_limited: Option<bool>,
    /// How many such errors this event stands for (see `SocketError::count`).
    pub count: u64,
    /// What the offending datagram said as DNS, for one on a DNS port.
    pub dns: Option<Dns>,
}

/// Which way a dropped datagram was going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Direction {
    /// It came in on an interface of this host (to be received, or forwarded).
    In,
    /// This host was sending it.
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// What a DNS datagram's payload said, as far as the bytes at hand reach: a field they do not reach, or
/// that did not parse, is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Dns {
    /// The message ID.
    pub id: Option<u16>,
    /// An answer (the QR bit), not a query.
    pub response: Option<bool>,
    /// The first question's name, presentation form without the trailing dot, `\DDD` for bytes outside
    /// printable ASCII (and `\.`, `\\` for a dot or backslash inside a label), as in a master file.
    pub qname: Option<String>,
    /// The first question's type, its mnemonic (`A`, `AAAA`, `HTTPS`, `TYPE65280`).
    pub qtype: Option<String>,
    /// An answer's response code, its mnemonic (`NOERROR`, `NXDOMAIN`); `None` for a query.
    pub rcode: Option<String>,
    /// The TC bit.
    pub truncated: Option<bool>,
    /// Payload bytes at hand, and how long the payload was (by its UDP header).
    pub bytes: usize,
    pub payload: usize,
    /// The bytes reached far enough and did not parse as DNS.
    pub malformed: bool,
}

/// A UDP datagram the kernel dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpDropped {
    pub meta: Meta,
    pub family: Family,
    /// The datagram (its ports always known).
    pub packet: Packet,
    pub direction: Direction,
    /// The kernel's `enum skb_drop_reason` value; `None` on kernels without reasons (before 5.17).
    pub reason_code: Option<u32>,
    /// Its name, lower case without `SKB_DROP_REASON_`, from the running kernel's BTF; `None` without a
    /// reason, or for a value the enum does not name (a subsystem's).
    pub reason: Option<String>,
    /// The kernel text address that freed it, and its function.
    pub location_addr: u64,
    pub location: Option<String>,
    /// The socket it was dropped at (or, on the way out, sent from): its address, inode and owner.
    pub local: Option<SocketAddr>,
    pub sock_ino: Option<u64>,
    pub owner: Option<OwnerInfo>,
    /// No process holds the socket: the kernel's own.
    pub kernel_socket: bool,
    /// The socket's receive buffer and what was queued in it, for a drop on receive.
    pub rcvbuf: Option<u32>,
    pub queued: Option<u32>,
    /// The interface, 0 if none.
    pub ifindex: u32,
    /// How many drops of the same reason, flow and socket this event stands for.
    pub count: u64,
    /// The drops came from any source, counted together: only counts were wanted, or their destination had
    /// more flows dropped in a second than are shown one by one (`drops::FLOWS_SHOWN`). `packet.src` and the
    /// source port say nothing then.
    pub sources_folded: bool,
    /// The datagram is to or from a DNS port: what its payload said.
    pub dns: Option<Dns>,
}

/// ICMP errors this host wanted to send and a rate limit stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpSuppressed {
    pub meta: Meta,
    /// `None` for the global counter, which both families share (`icmpv6_global_allow` counts in the IPv4
    /// `OutRateLimitGlobal`, net/ipv6/icmp.c).
    pub family: Option<Family>,
    pub scope: Scope,
    /// 1 for an error a hook saw, or how many the programs counted (`pipeline::tally`); the counter's
    /// increase for counts read from the kernel's counters.
    pub count: u64,
    /// The error that was not sent, as the hook saw it; `None` for counts from counters.
    pub attempt: Option<IcmpSent>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    SocketError(SocketError),
    IcmpSent(IcmpSent),
    IcmpSuppressed(IcmpSuppressed),
    UdpDropped(UdpDropped),
    /// Events the kernel could not hand over (buffer full), or ran no program for (`kernel::misses`), since
    /// the last report.
    Lost {
        time: SystemTime,
        count: u64,
    },
}

impl Event {
    /// The event's name, the same in every output: JSON's `event`, the text's first column (where it has no
    /// errno), the summary's and the metrics' `event` label.
    pub fn name(&self) -> &'static str {
        match self {
            Event::SocketError(_) => "socket_error",
            Event::IcmpSent(_) => "icmp_sent",
            Event::IcmpSuppressed(_) => "icmp_suppressed",
            Event::UdpDropped(_) => "udp_dropped",
            Event::Lost { .. } => "lost",
        }
    }

    /// What the event's datagram said as DNS, for one on a DNS port whose payload the event carries.
    pub fn dns(&self) -> Option<&Dns> {
        match self {
            Event::UdpDropped(e) => e.dns.as_ref(),
            Event::IcmpSent(e) => e.dns.as_ref(),
            Event::IcmpSuppressed(e) => e.attempt.as_ref().and_then(|a| a.dns.as_ref()),
            Event::SocketError(e) => e.dns.as_ref(),
            Event::Lost { .. } => None,
        }
    }

    /// How many errors the event stands for (`Lost` stands for none that were seen).
    pub fn count(&self) -> u64 {
        match self {
            Event::SocketError(e) => e.count,
            Event::IcmpSent(e) => e.count,
            Event::IcmpSuppressed(e) => e.count,
            Event::UdpDropped(e) => e.count,
            Event::Lost { .. } => 0,
        }
    }
}

/// Sample events for the tests of every stage: the ones the programs' records in `pipeline::decode`'s
/// tests decode to.
#[cfg(test)]
pub mod samples {
    use std::time::{Duration, SystemTime};

    use super::*;

    /// 5 s after a boot at 2023-11-14T22:13:20Z.
    pub fn time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_005_000_000_000)
    }

    pub fn meta() -> Meta {
        Meta { time: time(), netns: 4026532001, probe: AttachMode::Tracepoint }
    }

    /// A delivered ECONNREFUSED on a connected IPv4 socket, its owner unknown.
    pub fn socket_error() -> SocketError {
        SocketError {
            meta: meta(),
            family: Family::Ipv4,
            local: "10.0.0.2:40312".parse().unwrap(),
            remote: Some("10.0.0.9:8888".parse().unwrap()),
            icmp: None,
            errno: libc::ECONNREFUSED,
            verdict: Some(Verdict::Delivered),
            recverr: None,
            sock_ino: None,
            unreported: false,
            kernel_socket: false,
            ifindex: 0,
            owner: None,
            count: 1,
            dns: None,
        }
    }

    /// The same, with the owner recorded at the socket's creation.
    pub fn owned_socket_error() -> SocketError {
        SocketError {
            sock_ino: Some(88001),
            owner: Some(OwnerInfo {
                pid: 900,
                tid: Some(901),
                comm: "dns-client".to_owned(),
                cgroup_id: Some(4242),
                cgroup: None,
                container: None,
                holders: None,
            }),
            ..socket_error()
        }
    }

    /// A port unreachable this host sent about a UDP packet, its cause not classified yet.
    pub fn icmp_sent() -> IcmpSent {
        IcmpSent {
            meta: meta(),
            family: Family::Ipv4,
            icmp: Icmp { icmp_type: 3, code: 3, from: None },
            packet: Some(Packet {
                src: "10.0.0.2".parse().unwrap(),
                dst: "10.0.0.9".parse().unwrap(),
                ports: Some((40312, 8888)),
                proto: 17,
            }),
            stack: vec![0xffff_ffff_8100_0010, 0xffff_ffff_8200_0020],
            cause: Cause::Other,
            rate_limited: Some(false),
            count: 1,
            dns: None,
        }
    }

    /// A datagram a full receive buffer dropped, the socket and its owner known.
    pub fn rcvbuf_drop() -> UdpDropped {
        UdpDropped {
            meta: meta(),
            family: Family::Ipv4,
            packet: Packet {
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                ports: Some((5000, 9996)),
                proto: 17,
            },
            direction: Direction::In,
            reason_code: Some(9),
            reason: Some("socket_rcvbuff".to_owned()),
            location_addr: 0xffff_ffff_8300_0030,
            location: Some("udp_queue_rcv_one_skb".to_owned()),
            local: Some("0.0.0.0:9996".parse().unwrap()),
            sock_ino: Some(88002),
            owner: Some(OwnerInfo {
                pid: 700,
                tid: Some(700),
                comm: "slow-reader".to_owned(),
                cgroup_id: None,
                cgroup: None,
                container: None,
                holders: None,
            }),
            kernel_socket: false,
            rcvbuf: Some(212992),
            queued: Some(213504),
            ifindex: 2,
            count: 1,
            sources_folded: false,
            dns: None,
        }
    }

    /// A DNS query for `example.com` A that a firewall DROP rule dropped.
    pub fn dns_drop() -> UdpDropped {
        let mut drop = rcvbuf_drop();
        drop.packet.ports = Some((41234, 53));
        drop.reason = Some("netfilter_drop".to_owned());
        drop.location = Some("nft_do_chain".to_owned());
        (drop.local, drop.sock_ino, drop.owner, drop.rcvbuf, drop.queued) = (None, None, None, None, None);
        drop.dns = Some(Dns {
            id: Some(4660),
            response: Some(false),
            qname: Some("www.example.com".to_owned()),
            qtype: Some("A".to_owned()),
            rcode: None,
            truncated: Some(false),
            bytes: 33,
            payload: 33,
            malformed: false,
        });
        drop
    }

    /// `attempt`, stopped by the per-destination rate limit.
    pub fn host_limited(attempt: IcmpSent) -> IcmpSuppressed {
        IcmpSuppressed {
            meta: attempt.meta.clone(),
            family: Some(attempt.family),
            scope: Scope::Host,
            count: 1,
            attempt: Some(attempt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spellings are the JSON contract of the README.
    #[test]
    fn names_are_the_public_spellings() {
        assert_eq!(AttachMode::FEntry.as_str(), "fentry");
        assert_eq!(AttachMode::Tracepoint.to_string(), "tracepoint");
        assert_eq!(AttachMode::Cgroup.as_str(), "cgroup");
        assert_eq!(Family::Ipv6.as_str(), "ipv6");
        assert_eq!(Verdict::IgnoredSoftError.as_str(), "ignored_soft_error");
        assert_eq!(Verdict::NoSocket.as_str(), "no_socket");
        assert_eq!(Scope::Global.as_str(), "global");
        assert_eq!(Cause::FirewallReject.as_str(), "firewall_reject");
        assert_eq!(Cause::TtlExceeded.as_str(), "ttl_exceeded");
        assert_eq!(Cause::NeighbourUnreachable.as_str(), "neighbour_unreachable");
        assert_eq!(Cause::NoBackend.as_str(), "no_backend");
        assert_eq!(Direction::In.as_str(), "in");
        assert_eq!(Direction::Out.as_str(), "out");
    }
}
