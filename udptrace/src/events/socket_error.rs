//! `socket_error`: an ICMP error that reached (or failed to reach) a UDP socket on this host, what the kernel
//! did with it, and what the application sees.

use std::{mem::offset_of, net::SocketAddr};

use serde::Serialize;
use udptrace_common::{
    SocketError as RawSocketError, WithDns, conntrack_flags, icmp, kind, socket_error_flags, verdict,
};

use super::{
    Facts, Kind, Layout, Line, Metric, Row, Sample, Tone,
    parts::{
        ConntrackJson, DnsJson, End, Flow, Head, OwnerJson, dns_text, lookup, nat_sentence, nat_text, owner_row,
        owner_text, to_json,
    },
    record::{
        Clock, DecodeError, addr, dns_of,
        fields::{
            addr_at, conntrack_matches, dns_matches, family_matches, header_matches, owner_matches, u16_at, u32_at,
            u64_at,
        },
        meta, read_record, recorded_owner, translation_of,
    },
};
use crate::domain::{Dns, Errno, Family, Icmp, Meta, OwnerInfo, Pod, Translation, Verdict, errno_name, icmp_name};

/// An ICMP error that reached (or failed to reach) a UDP socket on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketError {
    pub meta: Meta,
    pub family: Family,
    pub local: SocketAddr,
    pub remote: Option<SocketAddr>,
    pub icmp: Option<Icmp>,
    /// The errno, 0 for none.
    pub errno: Errno,
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
    /// The connection's conntrack entry, when conntrack translated it: from the ICMP error's packet, or asked
    /// of conntrack by the flow.
    pub conntrack: Option<Translation>,
    /// The program read the packet's conntrack entry (`conntrack_flags::TRACKED`): where `conntrack` is
    /// `None`, conntrack tracked the packet and did not translate it, and there is nothing to ask it.
    pub conntrack_tracked: bool,
}

/// Its record's layout (`events::layout`).
pub const LAYOUT: Layout = Layout {
    base: size_of::<RawSocketError>(),
    flags_at: offset_of!(RawSocketError, flags),
    dns_flag: socket_error_flags::DNS,
    packet_flag: socket_error_flags::PACKET,
};

pub static METRIC: Metric = Metric {
    name: "socket_errors",
    help: "ICMP errors that reached (or failed to reach) a UDP socket on this host, by errno, verdict and family",
    labelled: true,
};

/// The JSON object, in the schema's order.
#[derive(Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    family: &'static str,
    local: String,
    remote: Option<String>,
    icmp: Option<IcmpJson>,
    errno: Option<&'static str>,
    verdict: Option<&'static str>,
    recverr: Option<bool>,
    #[serde(flatten)]
    owner: OwnerJson<'a>,
    dns: Option<DnsJson<'a>>,
    conntrack: Option<ConntrackJson>,
}

/// The ICMP error: its type and code, and who sent it.
#[derive(Serialize)]
struct IcmpJson {
    #[serde(rename = "type")]
    icmp_type: u8,
    code: u8,
    from: Option<String>,
}

impl Kind for SocketError {
    fn name(&self) -> &'static str {
        "socket_error"
    }

    fn count(&self) -> u64 {
        self.count
    }

    fn dns(&self) -> Option<&Dns> {
        self.dns.as_ref()
    }

    fn conntrack(&self) -> Option<&Translation> {
        self.conntrack.as_ref()
    }

    fn pod(&self) -> Option<&Pod> {
        self.meta.pod.as_ref()
    }

    fn facts(&self) -> Option<Facts<'_>> {
        Some(Facts {
            netns: self.meta.netns,
            owner: self.owner.as_ref(),
            ports: std::iter::once(self.local.port()).chain(self.remote.map(|r| r.port())).collect(),
            addrs: std::iter::once(self.local.ip())
                .chain(self.remote.map(|r: SocketAddr| r.ip()))
                .chain(self.icmp.and_then(|i| i.from))
                .collect(),
            errno: self.errno.is_set().then_some(self.errno.0),
            dns: self.dns.as_ref(),
            conntrack: self.conntrack.as_ref(),
        })
    }

    fn json(&self) -> serde_json::Value {
        to_json(&Json {
            head: Head::of(self.name(), &self.meta),
            family: self.family.as_str(),
            local: self.local.to_string(),
            remote: self.remote.map(|r| r.to_string()),
            icmp: self.icmp.map(|i| IcmpJson {
                icmp_type: i.icmp_type,
                code: i.code,
                from: i.from.map(|f| f.to_string()),
            }),
            errno: self.errno.name(),
            verdict: self.verdict.map(Verdict::as_str),
            recverr: self.recverr,
            owner: OwnerJson::of(self.owner.as_ref(), self.kernel_socket),
            dns: DnsJson::of(self.dns.as_ref()),
            conntrack: ConntrackJson::of(self.conntrack.as_ref()),
        })
    }

    fn line(&self) -> Line {
        let remote = self.remote.map_or_else(|| "?".to_owned(), |r| r.to_string());
        let icmp = match self.icmp {
            Some(i) => format!(
                "icmp {}{}",
                icmp_name(self.family, i.icmp_type, i.code),
                i.from.map(|f| format!(" from {f}")).unwrap_or_default()
            ),
            None => "icmp unseen".to_owned(),
        };
        let details = self.dns.as_ref().map(dns_text).into_iter();
        Line {
            time: self.meta.time,
            tone: if self.verdict == Some(Verdict::Delivered) { Tone::Delivered } else { Tone::Ignored },
            what: self.errno.name().unwrap_or("-").to_owned(),
            why: self.verdict.map_or("?", Verdict::as_str).to_owned(),
            flow: Some(format!("{} -> {remote}{}", self.local, nat_text(self.conntrack.as_ref(), self.flow()))),
            details: details
                .chain([icmp, owner_text(self.owner.as_ref(), self.kernel_socket, self.meta.pod.as_ref())])
                .collect(),
            netns: Some(self.meta.netns),
            sentence: self.sentence(),
        }
    }

    fn row(&self) -> Option<Row> {
        Some(Row {
            errno: self.errno.name(),
            outcome: self.verdict.map_or("?", Verdict::as_str).to_owned(),
            address: self.remote.map(|r| r.to_string()),
            owner: owner_row(self.owner.as_ref()),
        })
    }

    fn sample(&self) -> Sample {
        let errno = self.errno.name().unwrap_or("none").to_owned();
        Sample {
            metric: &METRIC,
            count: self.count,
            labels: vec![
                ("errno", errno.clone()),
                ("verdict", self.verdict.map_or("unknown", Verdict::as_str).to_owned()),
                ("family", self.family.as_str().to_owned()),
            ],
            address: Some(("remote", self.remote.map_or_else(|| "unknown".to_owned(), |r| r.to_string()))),
            outcome: errno,
        }
    }

    fn check_record(&self, input: &[u8]) {
        let family = self.family;
        family_matches(family, input);
        assert_eq!(input[0], kind::SOCKET_ERROR);
        header_matches(&self.meta, input);
        let addr = |at: usize| addr_at(family, input, at);
        let flags = input[offset_of!(RawSocketError, flags)];
        let has = |bit: u8| flags & bit != 0;
        let port = |at: usize| u16_at(input, at);
        assert_eq!(
            self.local,
            SocketAddr::new(addr(offset_of!(RawSocketError, local_addr)), port(offset_of!(RawSocketError, local_port)))
        );
        let remote = SocketAddr::new(
            addr(offset_of!(RawSocketError, remote_addr)),
            port(offset_of!(RawSocketError, remote_port)),
        );
        assert_eq!(self.remote, has(socket_error_flags::REMOTE_KNOWN).then_some(remote));
        let icmp = self.icmp.as_ref().map(|i| (i.icmp_type, i.code, i.from));
        let quoted = (
            input[offset_of!(RawSocketError, icmp_type)],
            input[offset_of!(RawSocketError, icmp_code)],
            Some(addr(offset_of!(RawSocketError, icmp_from))),
        );
        assert_eq!(icmp, has(socket_error_flags::ICMP_KNOWN).then_some(quoted));
        assert_eq!(self.errno.0, u32_at(input, offset_of!(RawSocketError, errno)).cast_signed());
        let ino = u64_at(input, offset_of!(RawSocketError, sock_ino));
        assert_eq!(self.sock_ino, (ino != 0).then_some(ino));
        assert_eq!(self.ifindex, u32_at(input, offset_of!(RawSocketError, ifindex)));
        assert_eq!(self.unreported, has(socket_error_flags::UNREPORTED));
        assert_eq!(self.owner.is_some(), has(socket_error_flags::OWNER_KNOWN));
        owner_matches(self.owner.as_ref(), input, offset_of!(RawSocketError, owner));
        dns_matches(&self.dns, has(socket_error_flags::DNS), input, size_of::<RawSocketError>());
        conntrack_matches(&self.conntrack, Some(self.conntrack_tracked), input, offset_of!(RawSocketError, conntrack));
    }
}

impl SocketError {
    /// Its record: the socket, the ICMP error, what the kernel did, the owner, and the DNS query the error
    /// quotes when the record carries it.
    pub(super) fn decode(bytes: &[u8], family: Family, clock: Clock) -> Result<Self, DecodeError> {
        let raw: RawSocketError = read_record(bytes, kind::SOCKET_ERROR)?;
        let dns = if raw.flags & socket_error_flags::DNS != 0 {
            let with: WithDns<RawSocketError> = read_record(bytes, kind::SOCKET_ERROR)?;
            Some(dns_of(&with.dns))
        } else {
            None
        };
        let flags = raw.flags;
        let has = |bit: u8| flags & bit != 0;
        Ok(SocketError {
            meta: meta(&raw.header, clock)?,
            family,
            local: SocketAddr::new(addr(family, raw.local_addr), raw.local_port),
            remote: has(socket_error_flags::REMOTE_KNOWN)
                .then(|| SocketAddr::new(addr(family, raw.remote_addr), raw.remote_port)),
            icmp: has(socket_error_flags::ICMP_KNOWN).then(|| Icmp {
                icmp_type: raw.icmp_type,
                code: raw.icmp_code,
                from: Some(addr(family, raw.icmp_from)),
            }),
            errno: Errno(raw.errno),
            verdict: verdict_of(raw.verdict),
            recverr: has(socket_error_flags::RECVERR_KNOWN).then(|| has(socket_error_flags::RECVERR)),
            sock_ino: (raw.sock_ino != 0).then_some(raw.sock_ino),
            unreported: has(socket_error_flags::UNREPORTED),
            kernel_socket: false,
            ifindex: raw.ifindex,
            owner: has(socket_error_flags::OWNER_KNOWN).then(|| recorded_owner(&raw.owner)),
            count: 1,
            dns,
            conntrack: translation_of(&raw.conntrack),
            conntrack_tracked: raw.conntrack.flags & conntrack_flags::TRACKED != 0,
        })
    }
}

fn verdict_of(byte: u8) -> Option<Verdict> {
    match byte {
        verdict::DELIVERED => Some(Verdict::Delivered),
        verdict::IGNORED_SOFT_ERROR => Some(Verdict::IgnoredSoftError),
        verdict::IGNORED_UNCONNECTED => Some(Verdict::IgnoredUnconnected),
        verdict::NO_SOCKET => Some(Verdict::NoSocket),
        _ => None,
    }
}

impl SocketError {
    /// One short sentence: what happened to the socket and what the application sees; for a DNS query,
    /// which one, and whose; on a translated connection, where conntrack sent the datagram (`nat_sentence`).
    pub fn sentence(&self) -> String {
        let what = self.outcome();
        let whose = self.owner.as_ref().filter(|_| !self.kernel_socket).and_then(|o| o.comm.as_deref());
        let nat = nat_sentence(self.conntrack.as_ref(), self.flow(), "udp", self.no_answer());
        match self.dns.as_ref().and_then(|d| lookup(d, whose)) {
            Some(lookup) => format!("{lookup} was answered with an ICMP error: {what}{nat}"),
            None => format!("{what}{nat}"),
        }
    }

    /// The datagram the error is about: the socket's, to its remote.
    fn flow(&self) -> Flow {
        Flow { src: Some(End::socket(self.local)), dst: self.remote.map(End::socket) }
    }

    /// Whether the error says its destination does not answer: the port refused, the host or network
    /// unreachable (a frag-needed or a firewall's prohibition says something else).
    fn no_answer(&self) -> bool {
        matches!(
            self.errno.0,
            libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENONET
        )
    }

    fn outcome(&self) -> String {
        let errno = errno_name(self.errno.0).unwrap_or("an error");
        let icmp = self.icmp.map(|i| icmp_name(self.family, i.icmp_type, i.code));
        let peer = self.remote.map(|r| format!("udp/{} at {}", r.port(), r.ip()));
        let queued = if self.recverr == Some(true) {
            "; the socket has IP_RECVERR, so it is also queued for MSG_ERRQUEUE unless that queue is full"
        } else {
            ""
        };
        match self.verdict {
            Some(Verdict::Delivered) => match (self.errno.0, &peer) {
                (libc::ECONNREFUSED, Some(peer)) => format!(
                    "the peer refused {peer} (no listener, or a firewall REJECT); the next send or receive fails \
                     with {errno}{queued}"
                ),
                (libc::EMSGSIZE, _) => format!(
                    "the path MTU is smaller than the datagram and it may not be fragmented; the next send or \
                     receive fails with {errno}{queued}"
                ),
                _ => format!("the socket's next send or receive fails with {errno}{queued}"),
            },
            Some(Verdict::IgnoredSoftError)
                if self.icmp.is_some_and(|i| (i.icmp_type, i.code) == (icmp::DEST_UNREACH, icmp::FRAG_NEEDED)) =>
            {
                "the socket turned path MTU discovery off (IP_PMTUDISC_DONT): Linux lowers the route's MTU and \
                 reports nothing"
                    .to_owned()
            }
            Some(Verdict::IgnoredSoftError) => format!(
                "{} is a soft error: Linux does not report it to a connected UDP socket without IP_RECVERR",
                icmp.unwrap_or_else(|| "this error".to_owned())
            ),
            Some(Verdict::IgnoredUnconnected) => format!(
                "the socket is not connected and has no IP_RECVERR: Linux drops {errno} and the application sees \
                 nothing"
            ),
            Some(Verdict::NoSocket) => "no socket on this host matches the packet the ICMP error quotes".to_owned(),
            Some(Verdict::Tunnel) => format!(
                "the socket is a UDP tunnel's (UDP_ENCAP): Linux hands {errno} to the tunnel, never to the \
                 application"
            ),
            None if self.kernel_socket => format!(
                "the socket is the kernel's own, held by no process (a VXLAN, WireGuard or L2TP tunnel's): a tunnel \
                 takes {errno} itself, and whether it did is not visible"
            ),
            None => format!(
                "the kernel told no socket of it ({errno}), and none matching the quoted packet was found: a UDP \
                 tunnel may have taken it, or the socket has closed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::samples;

    #[test]
    fn a_refused_dns_query_names_its_lookup_and_whose() {
        let mut refused = samples::owned_socket_error();
        refused.dns = samples::dns_drop().dns;
        assert!(
            refused.sentence().starts_with(
                "dns-client's query for www.example.com A was answered with an ICMP error: the peer refused udp/8888"
            ),
            "{}",
            refused.sentence()
        );
        refused.owner = None;
        assert!(refused.sentence().starts_with("the query for www.example.com A was answered"));
    }

    #[test]
    fn every_verdict_has_its_own_explanation() {
        let mut e = samples::socket_error();
        e.icmp = Some(Icmp { icmp_type: 3, code: 1, from: None });
        e.verdict = Some(Verdict::IgnoredSoftError);
        assert_eq!(
            e.sentence(),
            "host-unreachable is a soft error: Linux does not report it to a connected UDP socket without IP_RECVERR"
        );
        let mut texts = Vec::new();
        for verdict in [
            Verdict::Delivered,
            Verdict::IgnoredSoftError,
            Verdict::IgnoredUnconnected,
            Verdict::NoSocket,
            Verdict::Tunnel,
        ] {
            e.verdict = Some(verdict);
            texts.push(e.sentence());
        }
        e.verdict = None;
        texts.push(e.sentence());
        e.kernel_socket = true;
        texts.push(e.sentence());
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), 7, "{texts:?}");
    }

    /// Without a translation the sentence and the flow are as they always were.
    #[test]
    fn an_untranslated_error_says_nothing_of_conntrack() {
        let e = samples::socket_error();
        assert_eq!(
            e.sentence(),
            "the peer refused udp/8888 at 10.0.0.9 (no listener, or a firewall REJECT); the next send or receive \
             fails with ECONNREFUSED"
        );
        assert_eq!(e.line().flow.as_deref(), Some("10.0.0.2:40312 -> 10.0.0.9:8888"));
    }

    #[test]
    fn a_refusal_from_a_backend_names_it_whether_it_ever_answered_and_the_entry() {
        let mut e = samples::refused_by_backend();
        let untranslated = SocketError { conntrack: None, ..e.clone() }.sentence();
        assert_eq!(e.line().flow.as_deref(), Some("10.0.0.5:41234 -> 10.96.0.10:53 (dnat 10.244.1.7:53)"));
        assert_eq!(
            e.sentence(),
            format!(
                "{untranslated}; conntrack sent it, addressed to 10.96.0.10:53, on to 10.244.1.7:53, which has never \
                 answered this flow; to delete the entry: conntrack -D -p udp -s 10.0.0.5 -d 10.96.0.10 --sport \
                 41234 --dport 53"
            )
        );
        // Answered once, refused now: the backend is gone and the entry still points at it.
        e.conntrack.as_mut().unwrap().replied = true;
        let stale = e.sentence();
        assert!(
            stale.ends_with(
                "on to 10.244.1.7:53, which answered this flow before and no longer does: the entry is stale; \
                 deleting it translates the next datagram anew: conntrack -D -p udp -s 10.0.0.5 -d 10.96.0.10 \
                 --sport 41234 --dport 53"
            ),
            "{stale}"
        );
        // A frag-needed says nothing of whether the backend answers.
        e.errno = Errno(libc::EMSGSIZE);
        let answered = e.sentence();
        assert!(answered.contains("which has answered this flow; to delete the entry: conntrack -D"), "{answered}");
        assert!(!answered.contains("stale"), "{answered}");
    }

    #[test]
    fn source_nat_shows_the_source_it_went_out_from() {
        let e = SocketError {
            remote: Some("198.51.100.7:53".parse().unwrap()),
            conntrack: Some(samples::snat()),
            ..samples::refused_by_backend()
        };
        assert_eq!(e.line().flow.as_deref(), Some("10.0.0.5:41234 -> 198.51.100.7:53 (snat 192.0.2.1:40000)"));
        assert!(
            e.sentence().ends_with(
                "; conntrack translated its connection (snat): 10.0.0.5:41234 -> 198.51.100.7:53 is sent as \
                 192.0.2.1:40000 -> 198.51.100.7:53"
            ),
            "{}",
            e.sentence()
        );
        let both = SocketError { conntrack: Some(samples::dnat_snat()), ..samples::refused_by_backend() };
        assert_eq!(
            both.line().flow.as_deref(),
            Some("10.0.0.5:41234 -> 10.96.0.10:53 (dnat 10.244.1.7:53, snat 192.0.2.1:40000)")
        );
        assert!(both.sentence().contains("on to 10.244.1.7:53 from 192.0.2.1:40000, which has never"));
    }

    /// The backend's own socket, whose reply drew the error, is not the one conntrack sent anything to.
    #[test]
    fn an_error_on_the_way_back_is_not_called_the_backends() {
        let e = SocketError {
            local: "10.244.1.7:53".parse().unwrap(),
            remote: Some("10.0.0.5:41234".parse().unwrap()),
            ..samples::refused_by_backend()
        };
        let sentence = e.sentence();
        assert!(
            sentence.ends_with(
                "; conntrack translated its connection (dnat): 10.0.0.5:41234 -> 10.96.0.10:53 is sent as \
                 10.0.0.5:41234 -> 10.244.1.7:53"
            ),
            "{sentence}"
        );
        assert!(!sentence.contains("conntrack -D"), "{sentence}");
        assert_eq!(e.line().flow.as_deref(), Some("10.244.1.7:53 -> 10.0.0.5:41234 (dnat from 10.96.0.10:53)"));
    }
}
