//! The filter options: `-p/--pid`, `--comm`, `--port`, `--addr IP[/LEN]`, `--errno`, `--netns`.
//!
//! Options combine with AND; an option given twice means either value (OR). Each option looks at the
//! fields an event has:
//! - `socket_error`: the owner's pid and comm, the local and remote ports, the local and remote addresses
//!   and who sent the ICMP, the errno;
//! - `icmp_sent`, `icmp_suppressed`: the offending packet's ports and addresses, the errno its ICMP error
//!   gives the sender; no process owns that packet, so `-p` and `--comm` select only `socket_error`;
//! - `udp_dropped`: the datagram's ports and addresses, the socket's address and owner; no errno;
//! - on a connection conntrack translated, `--addr` and `--port` also match the addresses and ports of both
//!   its tuples: `--addr` with a Service address selects the errors and drops of the datagrams sent to it,
//!   whichever backend conntrack sent them to, and one with the backend's those of the Service's datagrams;
//! - `--k8s-namespace` and `--pod` select an event by its pod (its socket owner's, else its network
//!   namespace's): an event in no pod has none to match;
//! - `lost` always passes: udptrace never hides that it missed something.
//!
//! A field that is not known fails the option. The programs apply the same rules before an event takes
//! buffer space (`udptrace-ebpf/src/filter.rs`), except that they let through what they cannot see yet
//! (an owner found later through /proc), which [`Filter::matches`] decides here.

use std::{net::IpAddr, os::unix::fs::MetadataExt as _, path::Path};

use udptrace_common::{AF_INET, AF_INET6, AddrFilter, FILTER_VALUES, IcmpMask, TASK_COMM_LEN};

use crate::{
    dns,
    domain::{Dns, Family, OwnerInfo, Pod, errno_name, errno_number, icmp_errno},
    events::Event,
};

/// `--addr IP[/LEN]`, host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => prefix_eq(&net.octets(), &a.octets(), self.len),
            (IpAddr::V6(net), IpAddr::V6(a)) => prefix_eq(&net.octets(), &a.octets(), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(net: &[u8], addr: &[u8], len: u8) -> bool {
    let masked = mask(addr, len);
    net == masked.as_slice()
}

fn mask(addr: &[u8], len: u8) -> Vec<u8> {
    addr.iter()
        .enumerate()
        .map(|(i, b)| {
            let covered = usize::from(len).saturating_sub(i * 8);
            if covered >= 8 { *b } else { b & !(0xffu8.checked_shr(covered as u32).unwrap_or(0)) }
        })
        .collect()
}

pub fn parse_prefix(text: &str) -> Result<Prefix, String> {
    let (ip, len) = match text.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text, None),
    };
    let addr: IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("`{ip}` is not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(len) => len
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("`{len}`: the prefix length of {ip} must be 0 to {max}"))?,
    };
    let addr = match addr {
        IpAddr::V4(a) => {
            let bytes: [u8; 4] = mask(&a.octets(), len).try_into().expect("4 bytes in, 4 out");
            IpAddr::from(bytes)
        }
        IpAddr::V6(a) => {
            let bytes: [u8; 16] = mask(&a.octets(), len).try_into().expect("16 bytes in, 16 out");
            IpAddr::from(bytes)
        }
    };
    Ok(Prefix { addr, len })
}

/// The errnos an ICMP error can give a UDP socket, from the kernel's tables.
fn icmp_errnos() -> Vec<i32> {
    let mut errnos = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        for icmp_type in 0..=255u8 {
            for code in 0..=255u8 {
                if let Some((errno, _)) = icmp_errno(family, icmp_type, code)
                    && !errnos.contains(&errno)
                {
                    errnos.push(errno);
                }
            }
        }
    }
    errnos.sort_unstable();
    errnos
}

/// `--errno NAME`: a name (any case) of an errno an ICMP error can give.
pub fn parse_errno(text: &str) -> Result<i32, String> {
    let possible = icmp_errnos();
    let names = || possible.iter().filter_map(|&e| errno_name(e)).collect::<Vec<_>>().join(", ");
    let errno = errno_number(&text.to_ascii_uppercase())
        .ok_or_else(|| format!("`{text}` is not an errno name; ICMP errors give {}", names()))?;
    if !possible.contains(&errno) {
        return Err(format!("no ICMP error gives {}; they give {}", text.to_ascii_uppercase(), names()));
    }
    Ok(errno)
}

/// `--netns`: an inode number, or a path to a namespace (`/proc/PID/ns/net`, `/run/netns/NAME`).
pub fn parse_netns(text: &str) -> Result<u32, String> {
    if let Ok(inode) = text.parse::<u32>() {
        return Ok(inode);
    }
    if !text.contains('/') {
        return Err(format!("`{text}` is neither a namespace inode number nor a path to a namespace"));
    }
    let meta = std::fs::metadata(Path::new(text)).map_err(|e| format!("{text}: {e}"))?;
    u32::try_from(meta.ino()).map_err(|_| format!("{text}: inode {} is not a namespace's", meta.ino()))
}

/// `--k8s-namespace NS` and `--pod NAME`: a Kubernetes name (lowercase letters, digits, `-`, `.`).
pub fn parse_k8s_name(text: &str) -> Result<String, String> {
    let valid = (1..=253).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !valid {
        return Err(format!("`{text}` is not a Kubernetes name (lowercase letters, digits, `-` and `.`)"));
    }
    Ok(text.to_owned())
}

/// `--comm NAME`: the kernel keeps 15 bytes of a task's name, so a longer one is cut there too.
pub fn parse_comm(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the process name is empty".to_owned());
    }
    let mut end = text.len().min(TASK_COMM_LEN - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Ok(text[..end].to_owned())
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub ports: Vec<u16>,
    pub addrs: Vec<Prefix>,
    pub errnos: Vec<i32>,
    pub netns: Vec<u32>,
    /// `--dns-name`: user space only (the programs do not read names).
    pub dns_names: Vec<String>,
    /// `--k8s-namespace` and `--pod` (a prefix of the pod's name): user space only, as are pods.
    pub k8s_namespaces: Vec<String>,
    pub pods: Vec<String>,
}

impl Filter {
    /// One line for a value list longer than the programs hold.
    pub fn check_sizes(&self) -> Result<(), String> {
        for (option, n) in [
            ("--pid", self.pids.len()),
            ("--comm", self.comms.len()),
            ("--port", self.ports.len()),
            ("--addr", self.addrs.len()),
            ("--errno", self.errnos.len()),
            ("--netns", self.netns.len()),
        ] {
            if n > FILTER_VALUES {
                return Err(format!("{option} is given {n} times; at most {FILTER_VALUES} values are kept"));
            }
        }
        Ok(())
    }

    /// The same filter for the programs.
    pub fn for_kernel(&self) -> udptrace_common::Filter {
        let mut k = udptrace_common::Filter::default();
        for (slot, pid) in k.pids.iter_mut().zip(&self.pids) {
            *slot = *pid;
        }
        for (slot, netns) in k.netns.iter_mut().zip(&self.netns) {
            *slot = *netns;
        }
        for (slot, errno) in k.errnos.iter_mut().zip(&self.errnos) {
            *slot = *errno;
        }
        for (slot, port) in k.ports.iter_mut().zip(&self.ports) {
            *slot = *port;
        }
        for (slot, comm) in k.comms.iter_mut().zip(&self.comms) {
            let mut bytes = [0u8; TASK_COMM_LEN];
            bytes[..comm.len()].copy_from_slice(comm.as_bytes());
            *slot = [
                u64::from_ne_bytes(bytes[..8].try_into().expect("8 bytes")),
                u64::from_ne_bytes(bytes[8..].try_into().expect("8 bytes")),
            ];
        }
        for (slot, prefix) in k.addrs.iter_mut().zip(&self.addrs) {
            let (octets, family) = match prefix.addr {
                IpAddr::V4(a) => (a.octets().to_vec(), AF_INET),
                IpAddr::V6(a) => (a.octets().to_vec(), AF_INET6),
            };
            let mut addr = [0; 16];
            addr[..octets.len()].copy_from_slice(&octets);
            let mut mask = [0; 16];
            mask[..octets.len()].copy_from_slice(&self::mask(&[0xff; 16][..octets.len()], prefix.len));
            *slot = AddrFilter { addr, mask, family, prefix_len: prefix.len, _pad0: [0; 5] };
        }
        k.icmp = [self.icmp_mask(Family::Ipv4), self.icmp_mask(Family::Ipv6)];
        k.n_pids = self.pids.len() as u8;
        k.n_netns = self.netns.len() as u8;
        k.n_errnos = self.errnos.len() as u8;
        k.n_ports = self.ports.len() as u8;
        k.n_comms = self.comms.len() as u8;
        k.n_addrs = self.addrs.len() as u8;
        k
    }

    /// Which ICMP errors of `family` give one of `--errno` (see [`IcmpMask`]).
    fn icmp_mask(&self, family: Family) -> IcmpMask {
        let gives = |t, c| icmp_errno(family, t, c).is_some_and(|(errno, _)| self.errnos.contains(&errno));
        let unreach = match family {
            Family::Ipv4 => udptrace_common::icmp::DEST_UNREACH,
            Family::Ipv6 => udptrace_common::icmpv6::DEST_UNREACH,
        };
        let mut mask = IcmpMask::default();
        for code in 0..=63u8 {
            // Bit 63 stands for every code from 63 up, which the tables treat alike.
            if gives(unreach, code) {
                mask.unreach_codes |= 1 << code;
            }
        }
        for icmp_type in (0..=255u8).filter(|&t| t != unreach) {
            if gives(icmp_type, 0) {
                mask.types[usize::from(icmp_type >> 6)] |= 1 << (icmp_type & 63);
            }
        }
        mask
    }

    /// Whether `event` passes every filter option, by what its kind says it is about
    /// (`events::Kind::facts`): an option given matches only an event that has what it selects by (a drop
    /// has no errno, an ICMP error sent no owner), and an event that no option can tell (`lost`) passes all.
    pub fn matches(&self, event: &Event) -> bool {
        let Some(facts) = event.kind().facts() else {
            return true;
        };
        let owner = facts.owner;
        let tuples = facts.conntrack.map(|t| [t.original.src, t.original.dst, t.reply.src, t.reply.dst]);
        let translated = || tuples.into_iter().flatten();
        let ports = || facts.ports.iter().copied().chain(translated().map(|a| a.port()));
        let addrs = || facts.addrs.iter().copied().chain(translated().map(|a| a.ip()));
        (self.netns.is_empty() || self.netns.contains(&facts.netns))
            && (self.pids.is_empty() || owner.is_some_and(|o| self.pids.contains(&o.pid)))
            && (self.comms.is_empty() || owner.is_some_and(|o| self.names_one(o)))
            && (self.ports.is_empty() || ports().any(|p| self.ports.contains(&p)))
            && (self.addrs.is_empty() || self.addrs.iter().any(|prefix| addrs().any(|a| prefix.contains(a))))
            && (self.errnos.is_empty() || facts.errno.is_some_and(|e| self.errnos.contains(&e)))
            && self.any_dns_name(facts.dns)
            && self.any_pod(event.kind().pod())
    }

    /// `--k8s-namespace` and `--pod`: each not given, or the pod's namespace is one, its name starts with one.
    fn any_pod(&self, pod: Option<&Pod>) -> bool {
        (self.k8s_namespaces.is_empty() || pod.is_some_and(|p| self.k8s_namespaces.contains(&p.namespace)))
            && (self.pods.is_empty() || pod.is_some_and(|p| self.pods.iter().any(|name| p.name.starts_with(name))))
    }

    /// `--comm`: the owner's process name or its thread's is one of its values (as the programs decide:
    /// `comm_passes`).
    fn names_one(&self, owner: &OwnerInfo) -> bool {
        owner.comm.iter().chain(&owner.thread).any(|name| self.comms.contains(name))
    }

    /// `--dns-name`: not given, or the event's DNS name is under one of its suffixes.
    fn any_dns_name(&self, dns: Option<&Dns>) -> bool {
        self.dns_names.is_empty()
            || dns
                .and_then(|d| d.qname.as_deref())
                .is_some_and(|name| self.dns_names.iter().any(|suffix| dns::is_under(name, suffix)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_select_events_about_a_name_under_a_suffix() {
        let names = |names: &[&str]| Filter {
            dns_names: names.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        };
        let query = Event::UdpDropped(crate::events::samples::dns_drop());
        assert!(names(&["example.com"]).matches(&query));
        assert!(names(&["org", "EXAMPLE.com."]).matches(&query));
        assert!(!names(&["ample.com"]).matches(&query));
        // An event without a name is not about one.
        assert!(!names(&["example.com"]).matches(&Event::UdpDropped(crate::events::samples::rcvbuf_drop())));
        assert!(Filter::default().matches(&Event::UdpDropped(crate::events::samples::rcvbuf_drop())));
    }

    /// `--k8s-namespace` and `--pod` (a prefix) select an event by its pod; an event in no pod matches
    /// neither, and `lost` passes both.
    #[test]
    fn pods_select_by_namespace_and_name_prefix() {
        let in_pod = |pod: Option<Pod>| {
            let mut e = crate::events::samples::icmp_sent();
            e.meta.pod = pod;
            Event::IcmpSent(e)
        };
        let coredns = in_pod(Some(crate::events::samples::pod("coredns-7db6d8ff4d-x2x9k")));
        let none = in_pod(None);
        let filter = |namespaces: &[&str], pods: &[&str]| Filter {
            k8s_namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
            pods: pods.iter().map(|n| (*n).to_owned()).collect(),
            ..Filter::default()
        };
        assert!(filter(&["kube-system"], &[]).matches(&coredns));
        assert!(filter(&["default", "kube-system"], &["coredns"]).matches(&coredns));
        assert!(filter(&[], &["web", "coredns-7db"]).matches(&coredns));
        assert!(!filter(&["default"], &[]).matches(&coredns));
        assert!(!filter(&[], &["dns"]).matches(&coredns));
        assert!(!filter(&["kube-system"], &["web"]).matches(&coredns));
        assert!(!filter(&["kube-system"], &[]).matches(&none));
        assert!(!filter(&[], &["coredns"]).matches(&none));
        assert!(filter(&[], &[]).matches(&none));
        let lost = Event::Lost(crate::events::Lost { time: std::time::UNIX_EPOCH, count: 1 });
        assert!(filter(&["kube-system"], &["coredns"]).matches(&lost));
        assert_eq!(parse_k8s_name("kube-system"), Ok("kube-system".to_owned()));
        assert!(parse_k8s_name("Kube").is_err() && parse_k8s_name("").is_err() && parse_k8s_name("a_b").is_err());
    }

    #[test]
    fn a_drop_is_selected_by_its_packet_and_its_socket_owner_but_has_no_errno() {
        let drop = Event::UdpDropped(crate::events::samples::rcvbuf_drop());
        let filter = |f: Filter| f.matches(&drop);
        assert!(filter(Filter::default()));
        assert!(filter(Filter { pids: vec![700], ..Default::default() }));
        assert!(!filter(Filter { pids: vec![701], ..Default::default() }));
        assert!(filter(Filter { ports: vec![5000], ..Default::default() }));
        assert!(!filter(Filter { ports: vec![53], ..Default::default() }));
        assert!(filter(Filter { addrs: vec![parse_prefix("10.0.0.1/32").unwrap()], ..Default::default() }));
        assert!(!filter(Filter { errnos: vec![libc::ECONNREFUSED], ..Default::default() }));
        assert!(!filter(Filter { netns: vec![1], ..Default::default() }));
    }
    use crate::domain::{AttachMode, Cause, Errno, Icmp, Meta, OwnerInfo, Packet, Verdict};
    use crate::events::{IcmpSent, Lost, SocketError, UdpDropped};

    fn meta(netns: u32) -> Meta {
        Meta { time: std::time::UNIX_EPOCH, netns, probe: AttachMode::FEntry, pod: None, packet: None }
    }

    fn refused(owner: Option<(u32, &str)>) -> Event {
        refused_by(owner.map(|(pid, comm)| OwnerInfo { pid, comm: Some(comm.to_owned()), ..Default::default() }))
    }

    fn refused_by(owner: Option<OwnerInfo>) -> Event {
        Event::SocketError(SocketError {
            meta: meta(4026532000),
            family: Family::Ipv4,
            local: "10.0.0.2:40312".parse().unwrap(),
            remote: Some("10.0.0.9:8888".parse().unwrap()),
            icmp: Some(Icmp { icmp_type: 3, code: 3, from: Some("10.0.0.1".parse().unwrap()) }),
            errno: Errno(libc::ECONNREFUSED),
            verdict: Some(Verdict::Delivered),
            recverr: Some(false),
            sock_ino: Some(77),
            unreported: false,
            kernel_socket: false,
            ifindex: 0,
            owner,
            count: 1,
            dns: None,
            conntrack: None,
            conntrack_tracked: false,
        })
    }

    fn sent(icmp_type: u8, code: u8) -> Event {
        Event::IcmpSent(IcmpSent {
            meta: meta(4026532001),
            family: Family::Ipv4,
            icmp: Icmp { icmp_type, code, from: None },
            packet: Some(Packet {
                src: "10.0.0.2".parse().unwrap(),
                dst: "10.0.0.9".parse().unwrap(),
                ports: Some((40312, 8888)),
                proto: 17,
            }),
            stack: Vec::new(),
            cause: Cause::NoListener,
            rate_limited: Some(false),
            count: 1,
            dns: None,
            conntrack: None,
        })
    }

    fn filter(edit: impl FnOnce(&mut Filter)) -> Filter {
        let mut f = Filter::default();
        edit(&mut f);
        f
    }

    #[test]
    fn no_option_lets_everything_through() {
        for event in [refused(None), sent(3, 3), Event::Lost(Lost { time: std::time::UNIX_EPOCH, count: 1 })] {
            assert!(Filter::default().matches(&event));
        }
    }

    #[test]
    fn each_option_looks_at_its_fields() {
        let event = refused(Some((4711, "dns-client")));
        assert!(filter(|f| f.pids = vec![1, 4711]).matches(&event));
        assert!(!filter(|f| f.pids = vec![1]).matches(&event));
        assert!(filter(|f| f.comms = vec!["dns-client".into()]).matches(&event));
        assert!(!filter(|f| f.comms = vec!["dns".into()]).matches(&event));
        assert!(filter(|f| f.ports = vec![8888]).matches(&event));
        assert!(filter(|f| f.ports = vec![40312]).matches(&event));
        assert!(!filter(|f| f.ports = vec![53]).matches(&event));
        assert!(filter(|f| f.addrs = vec![parse_prefix("10.0.0.0/24").unwrap()]).matches(&event));
        // Who sent the ICMP counts too: a router's address selects the errors it sent.
        assert!(filter(|f| f.addrs = vec![parse_prefix("10.0.0.1").unwrap()]).matches(&event));
        assert!(!filter(|f| f.addrs = vec![parse_prefix("10.0.1.0/24").unwrap()]).matches(&event));
        assert!(!filter(|f| f.addrs = vec![parse_prefix("::/0").unwrap()]).matches(&event));
        assert!(filter(|f| f.errnos = vec![libc::ECONNREFUSED]).matches(&event));
        assert!(!filter(|f| f.errnos = vec![libc::EHOSTUNREACH]).matches(&event));
        assert!(filter(|f| f.netns = vec![4026532000]).matches(&event));
        assert!(!filter(|f| f.netns = vec![4026532001]).matches(&event));
    }

    /// `--comm` selects a process by its name or by the name of the thread that made the socket: `dig` and
    /// `isc-net-0000` both select dig's sockets; a process whose name is not known by its thread alone.
    #[test]
    fn comm_matches_the_process_or_the_thread() {
        let owner = |comm: Option<&str>| OwnerInfo {
            pid: 4711,
            comm: comm.map(str::to_owned),
            thread: Some("isc-net-0000".to_owned()),
            ..Default::default()
        };
        let event = refused_by(Some(owner(Some("dig"))));
        assert!(filter(|f| f.comms = vec!["dig".into()]).matches(&event));
        assert!(filter(|f| f.comms = vec!["isc-net-0000".into()]).matches(&event));
        assert!(!filter(|f| f.comms = vec!["isc-net".into()]).matches(&event));
        let unnamed = refused_by(Some(owner(None)));
        assert!(filter(|f| f.comms = vec!["isc-net-0000".into()]).matches(&unnamed));
        assert!(!filter(|f| f.comms = vec!["dig".into()]).matches(&unnamed));
    }

    #[test]
    fn options_combine_with_and() {
        let event = refused(Some((4711, "dns-client")));
        assert!(
            filter(|f| {
                f.pids = vec![4711];
                f.ports = vec![8888];
            })
            .matches(&event)
        );
        assert!(
            !filter(|f| {
                f.pids = vec![4711];
                f.ports = vec![53];
            })
            .matches(&event)
        );
    }

    #[test]
    fn an_unknown_field_fails_its_option() {
        assert!(!filter(|f| f.pids = vec![4711]).matches(&refused(None)));
        // No process owns the packet an ICMP error answers.
        assert!(!filter(|f| f.pids = vec![4711]).matches(&sent(3, 3)));
        assert!(!filter(|f| f.comms = vec!["x".into()]).matches(&sent(3, 3)));
        // Lost events are never filtered.
        assert!(filter(|f| f.pids = vec![4711]).matches(&Event::Lost(Lost { time: std::time::UNIX_EPOCH, count: 2 })));
    }

    #[test]
    fn an_icmp_sent_matches_by_the_errno_its_error_gives() {
        let refused = filter(|f| f.errnos = vec![libc::ECONNREFUSED]);
        assert!(refused.matches(&sent(3, 3)));
        assert!(!refused.matches(&sent(11, 0)));
        assert!(filter(|f| f.errnos = vec![libc::EHOSTUNREACH]).matches(&sent(11, 0)));
        assert!(filter(|f| f.ports = vec![8888]).matches(&sent(3, 3)));
    }

    /// `--addr` and `--port` match either tuple of a translated connection: the Service's address finds the
    /// drop of a datagram already sent on to its backend, the backend's finds the error the client got from
    /// the Service.
    #[test]
    fn addresses_and_ports_match_either_tuple_of_a_translation() {
        use crate::events::samples;
        let refused = Event::SocketError(samples::refused_by_backend());
        let gone = Event::UdpDropped(samples::backend_gone());
        let snat = Event::SocketError(SocketError {
            remote: Some("198.51.100.7:53".parse().unwrap()),
            conntrack: Some(samples::snat()),
            ..samples::refused_by_backend()
        });
        let service = filter(|f| f.addrs = vec![parse_prefix("10.96.0.10").unwrap()]);
        let backend = filter(|f| f.addrs = vec![parse_prefix("10.244.1.7").unwrap()]);
        for event in [&refused, &gone] {
            assert!(service.matches(event) && backend.matches(event));
        }
        // Without the translation each names one of them only.
        let Event::SocketError(plain) = &refused else { panic!("a socket error") };
        assert!(!backend.matches(&Event::SocketError(SocketError { conntrack: None, ..plain.clone() })));
        let Event::UdpDropped(plain) = &gone else { panic!("a drop") };
        assert!(!service.matches(&Event::UdpDropped(UdpDropped { conntrack: None, ..plain.clone() })));
        // The address a router's SNAT gave the flow, and its port.
        assert!(filter(|f| f.addrs = vec![parse_prefix("192.0.2.0/24").unwrap()]).matches(&snat));
        assert!(!filter(|f| f.addrs = vec![parse_prefix("192.0.2.0/24").unwrap()]).matches(&refused));
        assert!(filter(|f| f.ports = vec![40000]).matches(&snat));
        assert!(!filter(|f| f.ports = vec![40000]).matches(&refused));
        // A backend on another port than the Service's.
        let mut moved = samples::refused_by_backend();
        moved.conntrack.as_mut().unwrap().reply.src = "10.244.1.7:5353".parse().unwrap();
        let moved = Event::SocketError(moved);
        assert!(filter(|f| f.ports = vec![5353]).matches(&moved));
        assert!(!filter(|f| f.ports = vec![5354]).matches(&moved));
        // Still AND with the other options.
        assert!(
            !filter(|f| {
                f.addrs = vec![parse_prefix("10.244.1.7").unwrap()];
                f.netns = vec![1];
            })
            .matches(&refused)
        );
    }

    #[test]
    fn the_kernel_masks_agree_with_the_tables() {
        let f = filter(|f| f.errnos = vec![libc::ECONNREFUSED, libc::EMSGSIZE]);
        let k = f.for_kernel();
        assert_eq!(k.icmp[0].unreach_codes, (1 << 3) | (1 << 4));
        assert_eq!(k.icmp[0].types, [0; 4]);
        // ICMPv6: port unreachable (1/4) and packet too big (type 2).
        assert_eq!(k.icmp[1].unreach_codes, 1 << 4);
        assert_eq!(k.icmp[1].types, [1 << 2, 0, 0, 0]);
        // EHOSTUNREACH: every IPv4 type the table does not name, so time exceeded (11) among them.
        let host = filter(|f| f.errnos = vec![libc::EHOSTUNREACH]).for_kernel();
        assert_ne!(host.icmp[0].types[0] & (1 << 11), 0);
        assert_eq!(host.icmp[0].types[0] & (1 << 12), 0);
        assert_eq!(host.n_errnos, 1);
    }

    #[test]
    fn kernel_values_are_laid_out_as_given() {
        let f = Filter {
            pids: vec![7, 8],
            comms: vec!["dns-client".into()],
            ports: vec![53],
            addrs: vec![parse_prefix("fd00::/8").unwrap(), parse_prefix("192.168.1.7/16").unwrap()],
            errnos: vec![],
            netns: vec![4026531840],
            ..Filter::default()
        };
        let k = f.for_kernel();
        assert_eq!((k.n_pids, k.n_comms, k.n_ports, k.n_addrs, k.n_errnos, k.n_netns), (2, 1, 1, 2, 0, 1));
        assert_eq!(&k.pids[..2], &[7, 8]);
        assert_eq!(&k.comms[0][0].to_ne_bytes(), b"dns-clie");
        assert_eq!(&k.comms[0][1].to_ne_bytes(), b"nt\0\0\0\0\0\0");
        assert_eq!(k.addrs[0].family, AF_INET6);
        assert_eq!(k.addrs[0].prefix_len, 8);
        assert_eq!(k.addrs[0].addr[0], 0xfd);
        assert_eq!(k.addrs[1].addr[..4], [192, 168, 0, 0]);
        assert_eq!(k.addrs[1].mask, [0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(k.addrs[1].family, AF_INET);
        assert_eq!(k.addrs[0].mask[..2], [0xff, 0]);
    }

    #[test]
    fn parses_prefixes() {
        assert_eq!(parse_prefix("10.1.2.3").unwrap(), Prefix { addr: "10.1.2.3".parse().unwrap(), len: 32 });
        assert_eq!(parse_prefix("10.1.2.3/20").unwrap(), Prefix { addr: "10.1.0.0".parse().unwrap(), len: 20 });
        assert_eq!(parse_prefix("[fd00::1]/64").unwrap().addr, "fd00::".parse::<IpAddr>().unwrap());
        assert_eq!(parse_prefix("0.0.0.0/0").unwrap().len, 0);
        for bad in ["10.0.0.300", "10.0.0.1/33", "fd00::/129", "10.0.0.1/", "host.example", "10.0.0.1/-1", ""] {
            assert!(parse_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_errno_names() {
        assert_eq!(parse_errno("ECONNREFUSED"), Ok(libc::ECONNREFUSED));
        assert_eq!(parse_errno("ehostunreach"), Ok(libc::EHOSTUNREACH));
        let unknown = parse_errno("EFOO").unwrap_err();
        assert!(unknown.contains("not an errno name") && unknown.contains("ECONNREFUSED"), "{unknown}");
        let impossible = parse_errno("ENOENT").unwrap_err();
        assert!(impossible.starts_with("no ICMP error gives ENOENT"), "{impossible}");
    }

    #[test]
    fn parses_namespaces_and_names() {
        assert_eq!(parse_netns("4026531840"), Ok(4026531840));
        assert!(parse_netns("blue").is_err());
        assert!(parse_netns("/nonexistent/ns").is_err());
        assert_eq!(parse_comm("a-very-long-process-name").unwrap(), "a-very-long-pro");
        assert!(parse_comm("").is_err());
    }
}
