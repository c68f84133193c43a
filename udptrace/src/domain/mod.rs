//! What udptrace speaks of, in its own terms: the facts events carry (addresses, packets, owners, DNS
//! questions, errnos), the attach modes, and how each is named (`names`). The events themselves, a file per
//! kind, are in `events`. Every other module speaks these types; this one depends on no other module of
//! udptrace.

mod conntrack;
mod errno;
mod names;

pub use conntrack::{Nat, Translation, Tuple};
pub use errno::{Errno, errno_name, errno_number, icmp_errno};
pub use names::{endpoint, icmp_name, proto_name, rfc3339};

use std::{fmt, net::IpAddr, time::SystemTime};

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
    /// The stack does not reach the caller: another tool's kretprobe on the sender had replaced its return
    /// address before udptrace's hook ran, and the kernel's unwinder stops at the trampoline (before 5.15).
    Unknown,
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
    /// The Kubernetes pod it happened in: its socket owner's, else its network namespace's.
    pub pod: Option<Pod>,
    /// Its packet as the programs copied it, with `--pcap`; `None` without, for an event whose mode sees no
    /// packet, and for a count.
    pub packet: Option<Captured>,
}

/// What the programs copied of an event's packet (`--pcap`), from its network header on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// No more than `--pcap-snaplen` bytes, the packet, or its linear data (a payload in pages is left out).
    pub bytes: Vec<u8>,
    /// The packet's length by its IP header: more than `bytes` holds when the capture is short.
    pub length: u32,
}

/// A Kubernetes pod, as the node's own files name it (`pipeline::enrich::pods`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// The container, where the event's owner is in one (not the pod's sandbox) and its runtime names it.
    pub container: Option<String>,
    pub uid: String,
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
    /// The process's name (its thread group leader's, as `/proc/PID/comm` shows it); `None` when the kernel
    /// could not read it.
    pub comm: Option<String>,
    /// The creating thread's name, when the creation was seen and it differs from the process's.
    pub thread: Option<String>,
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

/// The packet an ICMP error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Ports, when the packet is UDP, UDP-Lite or TCP and not a later fragment.
    pub ports: Option<(u16, u16)>,
    pub proto: u8,
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
