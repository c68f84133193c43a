//! `udp_dropped`: a UDP datagram the kernel dropped, where and why, and at whose socket.

use std::{mem::offset_of, net::SocketAddr};

use serde::Serialize;
use udptrace_common::{UdpDropped as RawUdpDropped, WithDns, conntrack_flags, drops, kind, udp_dropped_flags};

use super::{
    Facts, Kind, Layout, Line, Metric, Row, Sample, Tone,
    parts::{
        ConntrackJson, DnsJson, Flow, Head, OwnerJson, PacketJson, dns_text, flow_text, lookup, nat_sentence, nat_text,
        owner_row, owner_text, pod_text, to_json,
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
use crate::domain::{Direction, Dns, Family, Meta, OwnerInfo, Packet, Pod, Translation, endpoint, proto_name};

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
    /// The connection's conntrack entry, when conntrack translated it.
    pub conntrack: Option<Translation>,
    /// The program read the packet's conntrack entry (`conntrack_flags::TRACKED`): where `conntrack` is
    /// `None`, conntrack tracked the packet and did not translate it, and there is nothing to ask it.
    pub conntrack_tracked: bool,
}

/// Its record's layout (`events::layout`).
pub const LAYOUT: Layout = Layout {
    base: size_of::<RawUdpDropped>(),
    flags_at: offset_of!(RawUdpDropped, flags),
    dns_flag: udp_dropped_flags::DNS,
    packet_flag: udp_dropped_flags::PACKET,
};

pub static METRIC: Metric = Metric {
    name: "udp_drops",
    help: "UDP datagrams the kernel dropped, by drop reason (where the kernel gives none, \"in\" the function that \
           dropped it, else \"unknown\"), direction and family",
    labelled: true,
};

/// The JSON object, in the schema's order.
#[derive(Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    family: &'static str,
    packet: PacketJson,
    reason: Option<&'a str>,
    location: Option<&'a str>,
    direction: &'static str,
    local: Option<String>,
    #[serde(flatten)]
    owner: OwnerJson<'a>,
    rcvbuf: Option<u32>,
    queued: Option<u32>,
    count: u64,
    dns: Option<DnsJson<'a>>,
    conntrack: Option<ConntrackJson>,
}

impl Kind for UdpDropped {
    fn name(&self) -> &'static str {
        "udp_dropped"
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

    /// A drop gives no errno: `--errno` leaves it out. `-p` and `--comm` select the socket's owner.
    fn facts(&self) -> Option<Facts<'_>> {
        let (sport, dport) = self.packet.ports.unwrap_or_default();
        Some(Facts {
            netns: self.meta.netns,
            owner: self.owner.as_ref(),
            ports: vec![sport, dport],
            addrs: [self.packet.src, self.packet.dst].into_iter().chain(self.local.map(|l| l.ip())).collect(),
            errno: None,
            dns: self.dns.as_ref(),
            conntrack: self.conntrack.as_ref(),
        })
    }

    fn json(&self) -> serde_json::Value {
        to_json(&Json {
            head: Head::of(self.name(), &self.meta),
            family: self.family.as_str(),
            packet: if self.sources_folded {
                PacketJson::without_source(&self.packet)
            } else {
                PacketJson::of(&self.packet)
            },
            reason: self.reason.as_deref(),
            location: self.location.as_deref(),
            direction: self.direction.as_str(),
            local: self.local.map(|l| l.to_string()),
            owner: OwnerJson::of(self.owner.as_ref(), self.kernel_socket),
            rcvbuf: self.rcvbuf,
            queued: self.queued,
            count: self.count,
            dns: DnsJson::of(self.dns.as_ref()),
            conntrack: ConntrackJson::of(self.conntrack.as_ref()),
        })
    }

    fn line(&self) -> Line {
        let mut details: Vec<String> = self.dns.as_ref().map(dns_text).into_iter().collect();
        if self.count > 1 {
            details.push(format!("x{}", self.count));
        }
        let pod = self.meta.pod.as_ref();
        if let Some(local) = self.local {
            details.push(format!("socket {local} {}", owner_text(self.owner.as_ref(), self.kernel_socket, pod)));
        } else if let Some(pod) = pod {
            details.push(pod_text(pod));
        }
        Line {
            time: self.meta.time,
            tone: Tone::Ignored,
            what: self.name().to_owned(),
            why: self.outcome(),
            flow: Some(format!("{} {}", self.direction.as_str(), self.flow())),
            details,
            netns: Some(self.meta.netns),
            sentence: self.sentence(),
        }
    }

    fn row(&self) -> Option<Row> {
        Some(Row {
            errno: None,
            outcome: self.outcome(),
            address: Some(endpoint(&self.packet, false)),
            owner: owner_row(self.owner.as_ref()),
        })
    }

    fn sample(&self) -> Sample {
        Sample {
            metric: &METRIC,
            count: self.count,
            labels: vec![
                ("reason", self.outcome()),
                ("direction", self.direction.as_str().to_owned()),
                ("family", self.family.as_str().to_owned()),
            ],
            address: Some(("dst", endpoint(&self.packet, false))),
            outcome: self.outcome(),
        }
    }

    fn check_record(&self, input: &[u8]) {
        let family = self.family;
        family_matches(family, input);
        let addr = |at: usize| addr_at(family, input, at);
        assert_eq!(input[0], kind::UDP_DROPPED);
        header_matches(&self.meta, input);
        let flags = input[offset_of!(RawUdpDropped, flags)];
        let has = |bit: u8| flags & bit != 0;
        assert_eq!(self.packet.src, addr(offset_of!(RawUdpDropped, src)));
        assert_eq!(self.packet.dst, addr(offset_of!(RawUdpDropped, dst)));
        let ports = (u16_at(input, offset_of!(RawUdpDropped, sport)), u16_at(input, offset_of!(RawUdpDropped, dport)));
        assert_eq!(self.packet.ports, Some(ports));
        assert_eq!(self.packet.proto, input[offset_of!(RawUdpDropped, proto)]);
        let reason = u32_at(input, offset_of!(RawUdpDropped, reason));
        assert_eq!(self.reason_code, (reason != drops::NO_REASON).then_some(reason));
        assert_eq!(self.location_addr, u64_at(input, offset_of!(RawUdpDropped, location)));
        let socket = has(udp_dropped_flags::SOCKET_KNOWN);
        let local = SocketAddr::new(
            addr(offset_of!(RawUdpDropped, local_addr)),
            u16_at(input, offset_of!(RawUdpDropped, local_port)),
        );
        assert_eq!(self.local, socket.then_some(local));
        let ino = u64_at(input, offset_of!(RawUdpDropped, sock_ino));
        assert_eq!(self.sock_ino, (socket && ino != 0).then_some(ino));
        let rcvbuf = has(udp_dropped_flags::RCVBUF_KNOWN);
        assert_eq!(self.rcvbuf, rcvbuf.then(|| u32_at(input, offset_of!(RawUdpDropped, rcvbuf))));
        assert_eq!(self.queued, rcvbuf.then(|| u32_at(input, offset_of!(RawUdpDropped, queued))));
        assert_eq!(self.ifindex, u32_at(input, offset_of!(RawUdpDropped, ifindex)));
        assert_eq!(self.sources_folded, has(udp_dropped_flags::SOURCES_FOLDED));
        assert_eq!(self.owner.is_some(), has(udp_dropped_flags::OWNER_KNOWN));
        owner_matches(self.owner.as_ref(), input, offset_of!(RawUdpDropped, owner));
        dns_matches(&self.dns, has(udp_dropped_flags::DNS), input, size_of::<RawUdpDropped>());
        conntrack_matches(&self.conntrack, Some(self.conntrack_tracked), input, offset_of!(RawUdpDropped, conntrack));
    }
}

impl UdpDropped {
    /// Its record: the datagram, where and why it was dropped, the socket and its owner, and the DNS payload
    /// when the record carries it. The reason's and the place's names come later, from the kernel's BTF and
    /// kallsyms (`pipeline::enrich`).
    pub(super) fn decode(bytes: &[u8], family: Family, clock: Clock) -> Result<Self, DecodeError> {
        let raw: RawUdpDropped = read_record(bytes, kind::UDP_DROPPED)?;
        let mut dropped = Self::of(&raw, family, clock)?;
        if raw.flags & udp_dropped_flags::DNS != 0 {
            let with: WithDns<RawUdpDropped> = read_record(bytes, kind::UDP_DROPPED)?;
            dropped.dns = Some(dns_of(&with.dns));
        }
        Ok(dropped)
    }

    fn of(raw: &RawUdpDropped, family: Family, clock: Clock) -> Result<Self, DecodeError> {
        let has = |bit: u8| raw.flags & bit != 0;
        let socket = has(udp_dropped_flags::SOCKET_KNOWN);
        let rcvbuf = has(udp_dropped_flags::RCVBUF_KNOWN);
        Ok(UdpDropped {
            meta: meta(&raw.header, clock)?,
            family,
            packet: Packet {
                src: addr(family, raw.src),
                dst: addr(family, raw.dst),
                ports: Some((raw.sport, raw.dport)),
                proto: raw.proto,
            },
            direction: if raw.direction == drops::OUT { Direction::Out } else { Direction::In },
            reason_code: (raw.reason != drops::NO_REASON).then_some(raw.reason),
            reason: None,
            location_addr: raw.location,
            location: None,
            local: socket.then(|| SocketAddr::new(addr(family, raw.local_addr), raw.local_port)),
            sock_ino: (socket && raw.sock_ino != 0).then_some(raw.sock_ino),
            owner: has(udp_dropped_flags::OWNER_KNOWN).then(|| recorded_owner(&raw.owner)),
            kernel_socket: false,
            rcvbuf: rcvbuf.then_some(raw.rcvbuf),
            queued: rcvbuf.then_some(raw.queued),
            ifindex: raw.ifindex,
            count: 1,
            sources_folded: has(udp_dropped_flags::SOURCES_FOLDED),
            dns: None,
            conntrack: translation_of(&raw.conntrack),
            conntrack_tracked: raw.conntrack.flags & conntrack_flags::TRACKED != 0,
        })
    }

    /// Why it was dropped, in one word as every output names it: the kernel's reason; on a kernel without
    /// reasons (before 5.17) or for one its BTF does not name, `in` the function that dropped it; `unknown`
    /// without either.
    pub fn outcome(&self) -> String {
        match (&self.reason, &self.location) {
            (Some(reason), _) => reason.clone(),
            (None, Some(location)) => format!("in {location}"),
            (None, None) => "unknown".to_owned(),
        }
    }

    /// The datagrams' flow; `*` for the source of drops from many sources, counted together.
    fn flow(&self) -> String {
        if self.sources_folded {
            let nat = nat_text(self.conntrack.as_ref(), self.packet_flow());
            format!("{} * -> {}{nat}", proto_name(self.packet.proto), endpoint(&self.packet, false))
        } else {
            flow_text(Some(self.packet), self.conntrack.as_ref())
        }
    }

    /// The datagram's flow, without the source of drops counted together.
    fn packet_flow(&self) -> Flow {
        let flow = Flow::of(&self.packet);
        if self.sources_folded { Flow { src: None, ..flow } } else { flow }
    }

    /// Whether the drop says its destination does not answer: the next hop did not answer ARP/ND, or there is
    /// no route to it.
    fn no_answer(&self) -> bool {
        matches!(self.reason.as_deref(), Some("neigh_failed" | "neigh_dead" | "ip_outnoroutes" | "ip_innoroutes"))
    }

    /// One short sentence: what dropping this datagram means, and what to do.
    pub fn sentence(&self) -> String {
        let at = self.location.as_deref().map(|l| format!(" in {l}")).unwrap_or_default();
        let mut text = match self.reason.as_deref() {
            Some(reason) => match reason_sentence(reason) {
                Some(sentence) => sentence.to_owned(),
                None => format!("the kernel's reason is {reason}{at}"),
            },
            None if self.reason_code.is_some() => format!("a reason this kernel's BTF does not name{at}"),
            None => format!("this kernel gives no drop reason (before 5.17); it was dropped{at}"),
        };
        if let Some(lookup) = self.dns.as_ref().and_then(|d| lookup(d, None)) {
            text = format!("{lookup} was dropped: {text}");
        }
        if self.reason.as_deref() == Some("socket_rcvbuff")
            && let (Some(rcvbuf), Some(queued)) = (self.rcvbuf, self.queued)
        {
            text.push_str(&format!(" ({queued} of {rcvbuf} bytes queued)"));
        }
        if self.count > 1 {
            text.push_str(&format!("; {} such drops", self.count));
        }
        if self.sources_folded {
            text.push_str(&format!(
                ", from sources not shown one by one (more than {} flows to it in a second)",
                udptrace_common::drops::FLOWS_SHOWN
            ));
        }
        let proto = proto_name(self.packet.proto);
        text + &nat_sentence(self.conntrack.as_ref(), self.packet_flow(), &proto, self.no_answer())
    }
}

/// What a drop reason means, and what to do about it: the reasons UDP meets, by their names in `enum
/// skb_drop_reason` (include/net/dropreason-core.h from 6.4, include/net/dropreason.h in 6.0 to 6.3,
/// include/linux/skbuff.h in 5.17 to 5.19). A reason not listed here is named, not explained.
fn reason_sentence(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "socket_rcvbuff" => {
            "the socket's receive buffer was full: its process reads too slowly; raise SO_RCVBUF (capped by net.core.rmem_max) or read faster"
        }
        "proto_mem" => "UDP's memory limit was reached (net.ipv4.udp_mem): the host's UDP sockets hold too much unread",
        "socket_filter" => "the socket's filter (SO_ATTACH_FILTER, a BPF program) refused it",
        "socket_close" => "its socket closed with it still queued, unread",
        "netfilter_drop" => "a firewall DROP rule (nftables/iptables): the sender gets no error",
        "neigh_failed" => {
            "the next hop did not answer ARP/ND: the host is down or not on this link; the sender may get EHOSTUNREACH"
        }
        "neigh_queuefull" => "too many datagrams waited for ARP/ND to answer (net.ipv4.neigh.*.unres_qlen_bytes)",
        "udp_csum" => "its UDP checksum was wrong: damaged on the way, or a NIC offload bug",
        "xfrm_policy" => "an IPsec policy refused it",
        "ip_noproto" => "no protocol handler for it",
        "otherhost" => "it was addressed to another host's MAC address",
        "ip_csum" | "ip_inhdr" => "its IP header was bad",
        "ip_rpfilter" => {
            "reverse-path filtering dropped it (net.ipv4.conf.*.rp_filter): the route back to its source is elsewhere"
        }
        "unicast_in_l2_multicast" => "a unicast IP packet in a link-layer multicast frame",
        "ip_outnoroutes" | "ip_inaddrerrors" | "ip_innoroutes" => "no route for it",
        "pkt_too_small" => "it was shorter than its headers say",
        "tc_drop" | "tc_ingress" | "tc_egress" => "a tc filter or action dropped it",
        "qdisc_drop" => "the interface's queue (qdisc) was full",
        "cpu_backlog" => "the CPU's receive backlog was full (net.core.netdev_max_backlog)",
        "dev_ready" => "the interface was down",
        "full_ring" => "the device's ring was full",
        "not_specified" => "the kernel gave no reason at this place",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::samples;

    #[test]
    fn a_dropped_dns_datagram_names_its_lookup() {
        assert_eq!(
            samples::dns_drop().sentence(),
            "the query for www.example.com A was dropped: a firewall DROP rule (nftables/iptables): the sender gets no error"
        );
        let mut answer = samples::dns_drop();
        let dns = answer.dns.as_mut().unwrap();
        (dns.response, dns.rcode) = (Some(true), Some("NOERROR".to_owned()));
        assert!(answer.sentence().starts_with("the NOERROR answer for www.example.com A was dropped: "));
        // The bytes did not reach the question: nothing is said about it.
        let dns = answer.dns.as_mut().unwrap();
        dns.qname = None;
        assert!(answer.sentence().starts_with("a firewall DROP rule"));
    }

    /// One name for why, in the text, the summary and the metrics.
    #[test]
    fn a_drop_is_named_by_its_reason_else_where_else_unknown() {
        let mut drop = samples::rcvbuf_drop();
        assert_eq!(drop.outcome(), "socket_rcvbuff");
        drop.reason = None;
        assert_eq!(drop.outcome(), "in udp_queue_rcv_one_skb");
        assert_eq!(drop.line().why, drop.outcome());
        assert_eq!(drop.row().map(|r| r.outcome), Some(drop.outcome()));
        assert!(drop.sample().labels.contains(&("reason", drop.outcome())));
        drop.location = None;
        assert_eq!(drop.outcome(), "unknown");
    }

    #[test]
    fn a_drop_toward_a_gone_backend_names_the_service_and_the_entry() {
        let mut drop = samples::backend_gone();
        let untranslated = UdpDropped { conntrack: None, ..drop.clone() };
        assert_eq!(untranslated.line().flow.as_deref(), Some("out udp 10.0.0.5:41234 -> 10.244.1.7:53"));
        assert_eq!(
            untranslated.sentence(),
            "the next hop did not answer ARP/ND: the host is down or not on this link; the sender may get EHOSTUNREACH"
        );
        assert_eq!(
            drop.line().flow.as_deref(),
            Some("out udp 10.0.0.5:41234 -> 10.244.1.7:53 (dnat from 10.96.0.10:53)")
        );
        assert_eq!(
            drop.sentence(),
            format!(
                "{}; conntrack sent it, addressed to 10.96.0.10:53, on to 10.244.1.7:53, which has never answered \
                 this flow; to delete the entry: conntrack -D -p udp -s 10.0.0.5 -d 10.96.0.10 --sport 41234 \
                 --dport 53",
                untranslated.sentence()
            )
        );
        drop.conntrack.as_mut().unwrap().replied = true;
        assert!(drop.sentence().contains("no longer does: the entry is stale"), "{}", drop.sentence());
        // A firewall's drop says nothing of whether the backend answers.
        drop.reason = Some("netfilter_drop".to_owned());
        let dropped = drop.sentence();
        assert!(dropped.contains("which has answered this flow; to delete") && !dropped.contains("stale"));
        // Drops from many sources still tell their way by their destination.
        drop.sources_folded = true;
        assert_eq!(drop.line().flow.as_deref(), Some("out udp * -> 10.244.1.7:53 (dnat from 10.96.0.10:53)"));
        assert!(drop.sentence().contains("conntrack -D"));
    }

    /// A reply dropped at the client's full socket buffer, after conntrack gave it the Service's address back.
    #[test]
    fn a_reply_dropped_on_its_way_back_is_not_called_stale() {
        let drop = UdpDropped {
            packet: Packet {
                src: "10.96.0.10".parse().unwrap(),
                dst: "10.0.0.5".parse().unwrap(),
                ports: Some((53, 41234)),
                proto: 17,
            },
            conntrack: Some(Translation { replied: true, ..samples::dnat() }),
            ..samples::rcvbuf_drop()
        };
        assert_eq!(drop.line().flow.as_deref(), Some("in udp 10.96.0.10:53 -> 10.0.0.5:41234 (dnat 10.244.1.7:53)"));
        let sentence = drop.sentence();
        assert!(
            sentence.ends_with(
                "; conntrack translated its connection (dnat): 10.0.0.5:41234 -> 10.96.0.10:53 is sent as \
                 10.0.0.5:41234 -> 10.244.1.7:53"
            ),
            "{sentence}"
        );
    }
}
