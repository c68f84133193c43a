//! `icmp_sent`: an ICMP error this host sent, about which packet, and why.

use std::mem::offset_of;

use serde::Serialize;
use udptrace_common::{ICMP_STACK_DEPTH, IcmpSent as RawIcmpSent, WithDns, icmp_sent_flags, kind};

use super::{
    Facts, Kind, Layout, Line, Metric, Row, Sample, Tone,
    parts::{
        ConntrackJson, DnsJson, Flow, Head, PacketJson, dns_text, flow_text, lookup, nat_sentence, pod_text, to_json,
    },
    record::{
        Clock, DecodeError, addr, dns_of,
        fields::{addr_at, conntrack_matches, dns_matches, family_matches, header_matches, u16_at, u32_at, u64_at},
        meta, read_record, translation_of,
    },
};
use crate::domain::{
    Cause, Dns, Family, Icmp, Meta, Packet, Pod, Translation, endpoint, errno_name, icmp_errno, icmp_name, proto_name,
};

/// An ICMP error this host sent.
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
    /// The connection's conntrack entry, when conntrack translated it.
    pub conntrack: Option<Translation>,
}

/// Its record's layout (`events::layout`), which `icmp_suppressed` shares.
pub const LAYOUT: Layout = Layout {
    base: size_of::<RawIcmpSent>(),
    flags_at: offset_of!(RawIcmpSent, flags),
    dns_flag: icmp_sent_flags::DNS,
    packet_flag: icmp_sent_flags::PACKET,
};

pub static METRIC: Metric = Metric {
    name: "icmp_errors_sent",
    help: "ICMP errors this host sent, by ICMP type and code, cause and family",
    labelled: true,
};

/// The JSON object, in the schema's order.
#[derive(Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    family: &'static str,
    icmp: IcmpJson,
    packet: Option<PacketJson>,
    cause: &'static str,
    rate_limited: Option<bool>,
    dns: Option<DnsJson<'a>>,
    conntrack: Option<ConntrackJson>,
}

/// An ICMP error's type and code.
#[derive(Serialize)]
pub(super) struct IcmpJson {
    #[serde(rename = "type")]
    icmp_type: u8,
    code: u8,
}

impl IcmpJson {
    pub(super) fn of(icmp: Icmp) -> Self {
        Self { icmp_type: icmp.icmp_type, code: icmp.code }
    }
}

impl Kind for IcmpSent {
    fn name(&self) -> &'static str {
        "icmp_sent"
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
            owner: None,
            ports: self.packet.and_then(|p| p.ports).map(|(s, d)| vec![s, d]).unwrap_or_default(),
            addrs: self.packet.map(|p| vec![p.src, p.dst]).unwrap_or_default(),
            errno: self.errno(),
            dns: self.dns.as_ref(),
            conntrack: self.conntrack.as_ref(),
        })
    }

    fn json(&self) -> serde_json::Value {
        to_json(&Json {
            head: Head::of(self.name(), &self.meta),
            family: self.family.as_str(),
            icmp: IcmpJson::of(self.icmp),
            packet: self.packet.as_ref().map(PacketJson::of),
            cause: self.cause.as_str(),
            rate_limited: self.rate_limited,
            dns: DnsJson::of(self.dns.as_ref()),
            conntrack: ConntrackJson::of(self.conntrack.as_ref()),
        })
    }

    fn line(&self) -> Line {
        Line {
            time: self.meta.time,
            tone: Tone::Sent,
            what: self.name().to_owned(),
            why: self.cause.as_str().to_owned(),
            flow: Some(flow_text(self.packet, self.conntrack.as_ref())),
            details: self
                .dns
                .as_ref()
                .map(dns_text)
                .into_iter()
                .chain([self.icmp_text()])
                .chain(self.meta.pod.as_ref().map(pod_text))
                .collect(),
            netns: Some(self.meta.netns),
            sentence: self.sentence(),
        }
    }

    fn row(&self) -> Option<Row> {
        Some(Row {
            errno: self.errno().and_then(errno_name),
            outcome: self.cause.as_str().to_owned(),
            address: self.destination(),
            owner: None,
        })
    }

    fn sample(&self) -> Sample {
        Sample {
            metric: &METRIC,
            count: self.count,
            labels: vec![
                ("type", self.icmp.icmp_type.to_string()),
                ("code", self.icmp.code.to_string()),
                ("cause", self.cause.as_str().to_owned()),
                ("family", self.family.as_str().to_owned()),
            ],
            address: Some(("dst", self.destination().unwrap_or_else(|| "unknown".to_owned()))),
            outcome: self.cause.as_str().to_owned(),
        }
    }

    fn check_record(&self, input: &[u8]) {
        assert_eq!(input[0], kind::ICMP_SENT);
        header_matches(&self.meta, input);
        self.matches_record(input);
    }
}

impl IcmpSent {
    /// Its record, which an ICMP error a rate limit stopped shares (`icmp_suppressed`): the error, the packet it
    /// is about, the kernel stack at the hook, and the DNS question of the packet when the record carries it.
    pub(super) fn decode(bytes: &[u8], family: Family, clock: Clock) -> Result<(Self, RawIcmpSent), DecodeError> {
        let kind = bytes.first().copied().unwrap_or_default();
        let raw: RawIcmpSent = read_record(bytes, kind)?;
        let dns = if raw.flags & icmp_sent_flags::DNS != 0 {
            let with: WithDns<RawIcmpSent> = read_record(bytes, kind)?;
            Some(dns_of(&with.dns))
        } else {
            None
        };
        let frames = usize::try_from(raw.stack_bytes.max(0)).unwrap_or(0) / 8;
        let sent = IcmpSent {
            meta: meta(&raw.header, clock)?,
            family,
            icmp: Icmp { icmp_type: raw.icmp_type, code: raw.icmp_code, from: None },
            packet: (raw.flags & icmp_sent_flags::PACKET_KNOWN != 0).then(|| Packet {
                src: addr(family, raw.src),
                dst: addr(family, raw.dst),
                ports: (raw.flags & icmp_sent_flags::PORTS_KNOWN != 0).then_some((raw.sport, raw.dport)),
                proto: raw.proto,
            }),
            stack: raw.stack[..frames.min(raw.stack.len())].to_vec(),
            // Seen at the drop that follows `icmpv6_send()` in `__udp6_lib_rcv`: no listener.
            cause: if raw.flags & icmp_sent_flags::AT_DROP != 0 { Cause::NoListener } else { Cause::Other },
            rate_limited: (raw.flags & icmp_sent_flags::AT_DROP == 0).then_some(false),
            count: 1,
            dns,
            conntrack: translation_of(&raw.conntrack),
        };
        Ok((sent, raw))
    }

    /// The error against its record's bytes (its own, or a suppressed one's): the packet it is about as its
    /// flags make it known, the stack's frames (none for a failed read, at most the record's).
    pub(super) fn matches_record(&self, input: &[u8]) {
        let family = self.family;
        family_matches(family, input);
        let flags = input[offset_of!(RawIcmpSent, flags)];
        let has = |bit: u8| flags & bit != 0;
        assert_eq!(
            (self.icmp.icmp_type, self.icmp.code, self.icmp.from),
            (input[offset_of!(RawIcmpSent, icmp_type)], input[offset_of!(RawIcmpSent, icmp_code)], None)
        );
        assert_eq!(self.packet.is_some(), has(icmp_sent_flags::PACKET_KNOWN));
        if let Some(packet) = self.packet {
            assert_eq!(packet.src, addr_at(family, input, offset_of!(RawIcmpSent, src)));
            assert_eq!(packet.dst, addr_at(family, input, offset_of!(RawIcmpSent, dst)));
            let ports = (u16_at(input, offset_of!(RawIcmpSent, sport)), u16_at(input, offset_of!(RawIcmpSent, dport)));
            assert_eq!(packet.ports, has(icmp_sent_flags::PORTS_KNOWN).then_some(ports));
            assert_eq!(packet.proto, input[offset_of!(RawIcmpSent, proto)]);
        }
        let stack_bytes = u32_at(input, offset_of!(RawIcmpSent, stack_bytes)).cast_signed();
        let frames = usize::try_from(stack_bytes.max(0) / 8).expect("positive").min(ICMP_STACK_DEPTH);
        let stack: Vec<u64> = (0..frames).map(|i| u64_at(input, offset_of!(RawIcmpSent, stack) + 8 * i)).collect();
        assert_eq!(self.stack, stack, "stack_bytes {stack_bytes}");
        dns_matches(&self.dns, has(icmp_sent_flags::DNS), input, size_of::<RawIcmpSent>());
        conntrack_matches(&self.conntrack, None, input, offset_of!(RawIcmpSent, conntrack));
    }

    /// The errno the error gives the application it reaches.
    pub fn errno(&self) -> Option<i32> {
        icmp_errno(self.family, self.icmp.icmp_type, self.icmp.code).map(|(errno, _)| errno)
    }

    /// The offending packet's destination: the local service an ICMP error is about.
    pub fn destination(&self) -> Option<String> {
        self.packet.map(|p| endpoint(&p, false))
    }

    /// `icmp port-unreachable`.
    pub(super) fn icmp_text(&self) -> String {
        format!("icmp {}", icmp_name(self.family, self.icmp.icmp_type, self.icmp.code))
    }

    /// One short sentence: why this host sent the ICMP error; on a translated connection, where conntrack sent
    /// the packet (`nat_sentence`).
    pub fn sentence(&self) -> String {
        let mut why = self.cause_sentence();
        if let Some(lookup) = self.dns.as_ref().and_then(|d| lookup(d, None)) {
            why = format!("{lookup} was answered with an ICMP error: {why}");
        }
        if self.rate_limited.is_none() {
            why = format!(
                "{why}; seen where the kernel decides to answer, before the rate limits, which tracepoint mode does \
                 not see: any they stopped are counted as icmp_suppressed"
            );
        }
        why + &self.nat_sentence()
    }

    /// What the packet's translated connection means (`parts::nat_sentence`), which an ICMP error a rate limit
    /// stopped says too; empty for a connection not translated.
    pub(super) fn nat_sentence(&self) -> String {
        let Some(packet) = self.packet else {
            return String::new();
        };
        let no_answer = matches!(self.cause, Cause::NoListener | Cause::NoRoute | Cause::NeighbourUnreachable);
        nat_sentence(self.conntrack.as_ref(), Flow::of(&packet), &proto_name(packet.proto), no_answer)
    }

    fn cause_sentence(&self) -> String {
        let port = self.packet.and_then(|p| p.ports.map(|(_, dport)| (proto_name(p.proto), dport)));
        match self.cause {
            Cause::NoListener => match port {
                Some((proto, dport)) => format!("no socket listens on {proto}/{dport} here"),
                None => "no socket listens on that port here".to_owned(),
            },
            Cause::FirewallReject => "a firewall REJECT rule answered for the packet (nftables/iptables)".to_owned(),
            Cause::NoRoute => "this host has no usable route to the packet's destination (an unreachable or \
                               prohibit route, no route, or a tunnel that could not route it)"
                .to_owned(),
            Cause::NeighbourUnreachable => {
                "the next hop did not answer ARP/ND: the host on the link is down or absent".to_owned()
            }
            Cause::NoBackend => "an IPVS virtual service has no usable real server for the packet".to_owned(),
            Cause::TtlExceeded => "the packet's TTL ran out while this host forwarded it".to_owned(),
            Cause::FragNeeded => {
                "the packet may not be fragmented (DF) and is larger than the next link's MTU".to_owned()
            }
            Cause::Other => "sent by another kernel path".to_owned(),
            Cause::Unknown => "why is not known: another tool's kretprobe on the sender hid its caller from this \
                               kernel's stack unwinder (before 5.15)"
                .to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::samples;

    #[test]
    fn an_untranslated_error_says_nothing_of_conntrack() {
        let sent = IcmpSent { cause: Cause::NoListener, ..samples::icmp_sent() };
        assert_eq!(sent.sentence(), "no socket listens on udp/8888 here");
        assert_eq!(sent.line().flow.as_deref(), Some("udp 10.0.0.2:40312 -> 10.0.0.9:8888"));
    }

    #[test]
    fn an_error_about_a_translated_datagram_names_the_service_and_the_entry() {
        let mut sent = samples::refused_at_backend();
        assert_eq!(sent.line().flow.as_deref(), Some("udp 10.0.0.5:41234 -> 10.244.1.7:53 (dnat from 10.96.0.10:53)"));
        assert_eq!(
            sent.sentence(),
            "no socket listens on udp/53 here; conntrack sent it, addressed to 10.96.0.10:53, on to 10.244.1.7:53, \
             which has never answered this flow; to delete the entry: conntrack -D -p udp -s 10.0.0.5 -d \
             10.96.0.10 --sport 41234 --dport 53"
        );
        sent.conntrack.as_mut().unwrap().replied = true;
        assert!(sent.sentence().contains("the entry is stale"), "{}", sent.sentence());
        // A REJECT rule answers whether or not the backend would.
        sent.cause = Cause::FirewallReject;
        assert!(!sent.sentence().contains("stale"), "{}", sent.sentence());
        // Where the programs saw it before the rate limits, that is said before conntrack.
        sent.rate_limited = None;
        assert!(sent.sentence().contains("counted as icmp_suppressed; conntrack sent it"), "{}", sent.sentence());
    }
}
