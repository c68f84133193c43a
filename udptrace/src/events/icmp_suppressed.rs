//! `icmp_suppressed`: ICMP errors this host wanted to send and a rate limit stopped, and which limit.

use serde::Serialize;
use udptrace_common::{icmp_sent_flags, kind};

use super::{
    Facts, IcmpSent, Kind, Line, Metric, Row, Sample, Tone,
    icmp_sent::IcmpJson,
    parts::{ConntrackJson, DnsJson, Head, PacketJson, dns_text, flow_text, pod_text, to_json},
    record::{
        Clock, DecodeError,
        fields::{family_matches, header_matches},
    },
};
use crate::domain::{Dns, Family, Meta, Pod, Scope, Translation, errno_name};

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

pub static METRIC: Metric = Metric {
    name: "icmp_errors_suppressed",
    help: "ICMP errors this host would have sent and a rate limit stopped, by scope and family",
    labelled: true,
};

/// The JSON object, in the schema's order.
#[derive(Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    head: Head<'a>,
    family: Option<&'static str>,
    icmp: Option<IcmpJson>,
    packet: Option<PacketJson>,
    scope: &'static str,
    count: u64,
    cause: Option<&'static str>,
    dns: Option<DnsJson<'a>>,
    conntrack: Option<ConntrackJson>,
}

impl Kind for IcmpSuppressed {
    fn name(&self) -> &'static str {
        "icmp_suppressed"
    }

    fn count(&self) -> u64 {
        self.count
    }

    fn dns(&self) -> Option<&Dns> {
        self.attempt.as_ref().and_then(|a| a.dns.as_ref())
    }

    fn conntrack(&self) -> Option<&Translation> {
        self.attempt.as_ref().and_then(|a| a.conntrack.as_ref())
    }

    fn pod(&self) -> Option<&Pod> {
        self.meta.pod.as_ref()
    }

    /// An error a hook saw is selected as that error; a count from the kernel's counters has no packet, no
    /// ICMP type, no owner.
    fn facts(&self) -> Option<Facts<'_>> {
        match &self.attempt {
            Some(attempt) => attempt.facts(),
            None => Some(Facts {
                netns: self.meta.netns,
                owner: None,
                ports: Vec::new(),
                addrs: Vec::new(),
                errno: None,
                dns: None,
                conntrack: None,
            }),
        }
    }

    fn json(&self) -> serde_json::Value {
        let attempt = self.attempt.as_ref();
        to_json(&Json {
            head: Head::of(self.name(), &self.meta),
            family: self.family.map(Family::as_str),
            icmp: attempt.map(|a| IcmpJson::of(a.icmp)),
            packet: attempt.and_then(|a| a.packet.as_ref()).map(PacketJson::of),
            scope: self.scope.as_str(),
            count: self.count,
            cause: attempt.map(|a| a.cause.as_str()),
            dns: DnsJson::of(self.dns()),
            conntrack: ConntrackJson::of(self.conntrack()),
        })
    }

    fn line(&self) -> Line {
        let (flow, icmp) = match &self.attempt {
            Some(a) => (flow_text(a.packet, a.conntrack.as_ref()), a.icmp_text()),
            None => {
                let family = self.family.map_or_else(String::new, |f| format!(" {}", f.as_str()));
                (format!("{}{family} ICMP errors", self.count), "icmp any type".to_owned())
            }
        };
        Line {
            time: self.meta.time,
            tone: Tone::Suppressed,
            what: self.name().to_owned(),
            why: format!("scope {}", self.scope.as_str()),
            flow: Some(flow),
            details: self
                .dns()
                .map(dns_text)
                .into_iter()
                .chain([icmp])
                .chain(self.meta.pod.as_ref().map(pod_text))
                .collect(),
            netns: Some(self.meta.netns),
            sentence: self.sentence(),
        }
    }

    fn row(&self) -> Option<Row> {
        let attempt = self.attempt.as_ref();
        Some(Row {
            errno: attempt.and_then(IcmpSent::errno).and_then(errno_name),
            outcome: format!("scope {}", self.scope.as_str()),
            address: attempt.and_then(IcmpSent::destination),
            owner: None,
        })
    }

    fn sample(&self) -> Sample {
        let dst = self.attempt.as_ref().and_then(IcmpSent::destination);
        Sample {
            metric: &METRIC,
            count: self.count,
            labels: vec![
                ("scope", self.scope.as_str().to_owned()),
                ("family", self.family.map_or("unknown", Family::as_str).to_owned()),
            ],
            address: Some(("dst", dst.unwrap_or_else(|| "unknown".to_owned()))),
            outcome: self.scope.as_str().to_owned(),
        }
    }

    fn check_record(&self, input: &[u8]) {
        assert_eq!(input[0], kind::ICMP_SUPPRESSED);
        header_matches(&self.meta, input);
        family_matches(self.family.expect("a decoded suppression has its family"), input);
        self.attempt.as_ref().expect("a decoded suppression carries its attempt").matches_record(input);
    }
}

impl IcmpSuppressed {
    /// Its record, an `icmp_sent`'s with the limit that stopped it.
    pub(super) fn decode(bytes: &[u8], family: Family, clock: Clock) -> Result<Self, DecodeError> {
        let (attempt, raw) = IcmpSent::decode(bytes, family, clock)?;
        let scope = if raw.flags & icmp_sent_flags::SUPPRESSED_GLOBAL != 0 { Scope::Global } else { Scope::Host };
        Ok(IcmpSuppressed { meta: attempt.meta.clone(), family: Some(family), scope, count: 1, attempt: Some(attempt) })
    }

    /// Which limit stopped the error, and the sysctl that governs it; on a translated connection, where
    /// conntrack sent the packet.
    pub fn sentence(&self) -> String {
        self.limit_sentence() + &self.attempt.as_ref().map(IcmpSent::nat_sentence).unwrap_or_default()
    }

    fn limit_sentence(&self) -> String {
        let from_counter = self.attempt.is_none();
        match (self.scope, self.family) {
            (Scope::Global, Some(Family::Ipv4)) => "the global ICMP rate limit stopped it: sysctl \
                                                     net.ipv4.icmp_msgs_per_sec and net.ipv4.icmp_msgs_burst, for \
                                                     the types in net.ipv4.icmp_ratemask"
                .to_owned(),
            (Scope::Global, Some(Family::Ipv6)) => "the global ICMP rate limit stopped it: sysctl \
                                                     net.ipv4.icmp_msgs_per_sec and net.ipv4.icmp_msgs_burst \
                                                     (shared with IPv6), for the types in net.ipv6.icmp.ratemask"
                .to_owned(),
            (Scope::Global, None) => "the global ICMP rate limit stopped them (IPv4 and IPv6 together: the kernel \
                                      counts both in one counter): sysctl net.ipv4.icmp_msgs_per_sec and \
                                      net.ipv4.icmp_msgs_burst, for the types in net.ipv4.icmp_ratemask and \
                                      net.ipv6.icmp.ratemask"
                .to_owned(),
            (Scope::Host, Some(Family::Ipv6)) if from_counter => {
                "the per-destination ICMPv6 rate limit stopped them, or no route led back to the packet's source \
                 (the kernel counts both in Icmp6OutRateLimitHost): sysctl net.ipv6.icmp.ratelimit (ms between \
                 errors to one host), for the types in net.ipv6.icmp.ratemask"
                    .to_owned()
            }
            (Scope::Host, Some(Family::Ipv6)) => {
                "the per-destination ICMPv6 rate limit stopped it: sysctl net.ipv6.icmp.ratelimit (ms between \
                 errors to one host), for the types in net.ipv6.icmp.ratemask"
                    .to_owned()
            }
            (Scope::Host, _) => {
                "the per-destination ICMP rate limit stopped it: sysctl net.ipv4.icmp_ratelimit (ms between errors \
                 to one host), for the types in net.ipv4.icmp_ratemask"
                    .to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::samples;

    #[test]
    fn a_rate_limit_names_its_family_sysctls_and_what_the_counter_cannot_tell() {
        let counted = |scope, family| IcmpSuppressed { meta: samples::meta(), family, scope, count: 3, attempt: None };
        let global = counted(Scope::Global, None).sentence();
        assert!(global.contains("IPv4 and IPv6 together") && global.contains("net.ipv6.icmp.ratemask"), "{global}");
        let host6 = counted(Scope::Host, Some(Family::Ipv6)).sentence();
        assert!(host6.contains("no route led back") && host6.contains("net.ipv6.icmp.ratemask"), "{host6}");
        assert!(!host6.contains("net.ipv4"), "{host6}");
        let seen = IcmpSuppressed { family: Some(Family::Ipv6), ..samples::host_limited(samples::icmp_sent()) };
        assert!(!seen.sentence().contains("no route"), "a hook saw the limit say no");
    }

    #[test]
    fn a_suppressed_error_says_its_limit_then_its_translation() {
        let suppressed = samples::host_limited(samples::refused_at_backend());
        let limit = samples::host_limited(IcmpSent { conntrack: None, ..samples::refused_at_backend() }).sentence();
        assert_eq!(
            limit,
            "the per-destination ICMP rate limit stopped it: sysctl net.ipv4.icmp_ratelimit (ms between errors to \
             one host), for the types in net.ipv4.icmp_ratemask"
        );
        assert_eq!(suppressed.sentence(), format!("{limit}{}", samples::refused_at_backend().nat_sentence()));
        assert!(suppressed.sentence().contains("; conntrack sent it, addressed to 10.96.0.10:53"));
        assert_eq!(
            suppressed.line().flow.as_deref(),
            Some("udp 10.0.0.5:41234 -> 10.244.1.7:53 (dnat from 10.96.0.10:53)")
        );
    }
}
