//! The report: the way out, and everything the answer shows, as a line of text or as JSON.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};

use super::{
    route,
    run::{Kernel, Outcome},
    state::{Facts, State},
    target::{Check, Payload},
};
use crate::{domain::errno_name, output::json as event_json};

/// The way out: the route, and whether its next hop answered ARP/ND.
pub struct Path {
    route: Option<route::Route>,
    next_hop: Option<IpAddr>,
    /// The neighbour entry's state, and whether it means an answer.
    neighbour: Option<(&'static str, Option<bool>)>,
}

impl Path {
    pub fn find(target: SocketAddr) -> Self {
        let route = route::route_to(target.ip()).ok();
        let next_hop = route.as_ref().filter(|r| !r.local).map(|r| r.next_hop(target.ip()));
        let neighbour = match (&route, next_hop) {
            (Some(route), Some(hop)) => route::neighbour(route.ifindex, hop).ok().flatten().map(route::describe),
            _ => None,
        };
        Self { route, next_hop, neighbour }
    }

    /// `by veth0, next hop 10.0.0.1 answered ARP`.
    fn text(&self, ipv4: bool) -> Option<String> {
        let route = self.route.as_ref()?;
        let interface = route.interface.clone().unwrap_or_else(|| format!("interface {}", route.ifindex));
        let arp = if ipv4 { "ARP" } else { "ND" };
        let hop = match (self.next_hop, self.neighbour) {
            (Some(hop), Some((_, Some(true)))) => format!(", next hop {hop} answered {arp}"),
            (Some(hop), Some((_, Some(false)))) => format!(", next hop {hop} did not answer {arp}"),
            (Some(hop), Some((state, None))) => format!(", next hop {hop} ({state})"),
            (Some(hop), None) => format!(", next hop {hop}"),
            (None, _) => String::new(),
        };
        Some(format!("by {interface}{hop}"))
    }

    fn json(&self) -> Value {
        json!({
            "interface": self.route.as_ref().and_then(|r| r.interface.clone()),
            "gateway": self.route.as_ref().and_then(|r| r.gateway).map(|g| g.to_string()),
            "neighbour": self.next_hop.map(|hop| json!({
                "address": hop.to_string(),
                "state": self.neighbour.map(|(state, _)| state),
                "answered": self.neighbour.and_then(|(_, answered)| answered),
            })),
        })
    }
}

/// Everything the answer shows.
pub struct Report<'a> {
    pub check: &'a Check,
    pub target: SocketAddr,
    pub facts: Facts,
    pub outcome: Outcome,
    pub kernel: Kernel,
    pub state: State,
    pub why: String,
    pub dns_id: Option<u16>,
    pub path: Path,
}

impl Report<'_> {
    /// What a DNS answer said: its response code, and how many records it held.
    fn dns(&self) -> Option<(String, usize)> {
        let bytes = self.outcome.answer.as_ref()?;
        // The decoder of the `dns` a traced event carries; the answer count is the header's.
        let answer = crate::dns::parse(bytes, bytes.len());
        let records = bytes.get(6..8).map(|n| usize::from(u16::from_be_bytes([n[0], n[1]])))?;
        (answer.response == Some(true) && answer.id == self.dns_id && !answer.malformed)
            .then(|| Some((answer.rcode?, records)))
            .flatten()
    }

    fn seen_with(&self) -> String {
        match &self.kernel {
            Kernel::With { hooks, .. } => format!("error queue and kernel hooks ({})", hooks.join(", ")),
            Kernel::Without(why) => format!("error queue only: {why}"),
        }
    }

    pub fn text(&self) -> String {
        let mut line = format!("{} {}: {}", self.target, self.state.as_str(), self.why);
        if let Some(rtt) = self.outcome.round_trip {
            line.push_str(&format!(" after {:.1} ms", rtt.as_secs_f64() * 1e3));
        }
        if let Some((rcode, records)) = self.dns() {
            line.push_str(&format!(" (a DNS answer: {rcode}, {records} records)"));
        }
        if self.state == State::OpenFiltered {
            if let Some(path) = self.path.text(self.target.is_ipv4()) {
                line.push_str(&format!(" ({path})"));
            }
            line.push_str(": a firewall that drops it, a host that is down, or a service that ignores this payload");
            if matches!(self.check.payload, Payload::Bytes(_)) {
                line.push_str(" (try --dns NAME or --payload HEX)");
            }
        }
        if let Kernel::With { lost, .. } = &self.kernel
            && *lost > 0
        {
            line.push_str(&format!("; {lost} kernel events lost"));
        }
        let probes = if self.outcome.sent == 1 { "probe" } else { "probes" };
        format!(
            "{line}. {} {probes} sent, {} answered; seen with the {}",
            self.outcome.sent,
            self.outcome.answered,
            self.seen_with()
        )
    }

    pub fn json(&self) -> Value {
        let icmp = self.facts.icmp.map(|i| {
            json!({
                "type": i.icmp_type,
                "code": i.code,
                "name": crate::domain::icmp_name(i.family, i.icmp_type, i.code),
                "from": i.from.map(|f| f.to_string()),
                "errno": errno_name(i.errno),
            })
        });
        let local_error = self.facts.local_error.map(|e| json!({"call": e.call, "errno": errno_name(e.errno)}));
        let drop = self
            .facts
            .drops
            .first()
            .map(|d| json!({"direction": d.direction.as_str(), "reason": d.reason, "location": d.location}));
        let answer = self.outcome.answer.as_ref().map(|bytes| {
            json!({
                "size": bytes.len(),
                "round_trip_ms": self.outcome.round_trip.map(|r| r.as_secs_f64() * 1e3),
                "dns": self.dns().map(|(rcode, records)| json!({"rcode": rcode, "records": records})),
            })
        });
        let path = self.path.json();
        let kernel = match &self.kernel {
            Kernel::With { hooks, events, lost } => json!({
                "hooks": hooks,
                "events": events.iter().map(event_json::json).collect::<Vec<_>>(),
                "lost": lost,
            }),
            Kernel::Without(_) => Value::Null,
        };
        json!({
            "target": self.target.to_string(),
            "host": self.check.target.host,
            "local": self.facts.local.map(|l| l.to_string()),
            "state": self.state.as_str(),
            "reason": self.why,
            "evidence": {
                "answer": answer,
                "icmp": icmp,
                "local_error": local_error,
                "drop": drop,
                "own_icmp": self.facts.own_icmp_cause,
                "rate_limited": self.facts.own_icmp_suppressed,
                "interface": path["interface"],
                "gateway": path["gateway"],
                "neighbour": path["neighbour"],
            },
            "probes": {"sent": self.outcome.sent, "answered": self.outcome.answered},
            "seen_with": if matches!(self.kernel, Kernel::With { .. }) { "error_queue+kernel" } else { "error_queue" },
            "without_kernel": if let Kernel::Without(why) = &self.kernel { Some(why.as_str()) } else { None },
            "kernel": kernel,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        check::{
            state,
            target::{Target, payload_bytes},
        },
        domain::AttachMode,
    };

    fn a_check(payload: Payload) -> Check {
        Check {
            target: Target { host: "10.0.0.2".to_owned(), port: 53 },
            count: 3,
            timeout: Duration::from_secs(3),
            payload,
            ipv4_only: false,
            ipv6_only: false,
            modes: &AttachMode::LADDER,
            asked: "any mode".to_owned(),
            json: false,
            verbose: false,
        }
    }

    /// The answer for `facts`, as `run` makes it.
    fn report<'a>(check: &'a Check, facts: Facts, outcome: Outcome, kernel: Kernel) -> Report<'a> {
        let (state, why) = state::decide(&facts);
        let route = route::Route { ifindex: 2, interface: Some("eth0".to_owned()), gateway: None, local: false };
        let path = Path {
            route: Some(route),
            next_hop: Some("10.0.0.2".parse().unwrap()),
            neighbour: Some(("reachable", Some(true))),
        };
        Report { check, target: "10.0.0.2:53".parse().unwrap(), facts, outcome, kernel, state, why, dns_id: None, path }
    }

    #[test]
    fn silence_names_the_way_out_and_what_to_try() {
        let check = a_check(Payload::Bytes(Vec::new()));
        let outcome = Outcome { sent: 3, ..Outcome::default() };
        let report = report(&check, Facts::default(), outcome, Kernel::Without("not root".to_owned()));
        let text = report.text();
        assert!(text.starts_with("10.0.0.2:53 open|filtered: "), "{text}");
        assert!(text.contains("by eth0, next hop 10.0.0.2 answered ARP"), "{text}");
        assert!(text.contains("try --dns NAME or --payload HEX"), "{text}");
        assert!(text.ends_with("3 probes sent, 0 answered; seen with the error queue only: not root"), "{text}");
        let json = report.json();
        assert_eq!(json["state"], "open|filtered");
        assert_eq!(json["seen_with"], "error_queue");
        assert_eq!(json["kernel"], Value::Null);
        assert_eq!(
            json["evidence"]["neighbour"],
            json!({"address": "10.0.0.2", "state": "reachable", "answered": true})
        );
        assert_eq!(json["probes"], json!({"sent": 3, "answered": 0}));
    }

    #[test]
    fn a_dns_answer_is_told_only_for_a_response_to_the_query() {
        let check = a_check(Payload::Dns("example.com".to_owned()));
        let (query, id) = payload_bytes(&check.payload).unwrap();
        let mut answer = query.clone();
        answer[2] |= 0x80;
        for (bytes, told) in [(answer, true), (query, false)] {
            let outcome = Outcome {
                sent: 1,
                answered: 1,
                answer: Some(bytes.clone()),
                round_trip: Some(Duration::from_millis(2)),
                ..Outcome::default()
            };
            let facts = Facts { answered: Some(bytes.len()), ..Facts::default() };
            let kernel = Kernel::With { hooks: vec!["udp_dropped=tracepoint".to_owned()], events: Vec::new(), lost: 0 };
            let mut report = report(&check, facts, outcome, kernel);
            report.dns_id = id;
            assert_eq!(report.dns().is_some(), told);
            let json = report.json();
            assert_eq!(json["state"], "open");
            assert_eq!(json["seen_with"], "error_queue+kernel");
            assert_eq!(json["evidence"]["answer"]["round_trip_ms"], 2.0);
            assert_eq!(json["evidence"]["answer"]["dns"].is_null(), !told);
        }
    }
}
