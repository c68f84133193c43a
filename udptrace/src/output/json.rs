//! `--json`: one object per line (NDJSON), the schema of docs/events.md. Each kind writes its own object
//! (`events`).

use std::io::{self, Write};

use serde_json::Value;

use super::{Lines, Sink};
use crate::events::Event;

/// An object per event on `out`.
pub struct JsonSink<W: Write> {
    out: Lines<W>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        Self { out: Lines::new(out) }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.out.line(json(event))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The event as docs/events.md has it: the fields every event starts with (`event`, `time`, `netns`,
/// `probe`), then its own, in the schema's order.
pub fn json(event: &Event) -> Value {
    event.kind().json()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::json;

    use super::*;
    use crate::domain::Cause;
    use crate::events::{IcmpSent, Lost, UdpDropped, samples};

    fn icmp_sent() -> IcmpSent {
        IcmpSent { cause: Cause::NoListener, ..samples::icmp_sent() }
    }

    #[test]
    fn udp_dropped_json_has_the_schema_fields() {
        let value = json(&Event::UdpDropped(samples::rcvbuf_drop()));
        assert_eq!(
            value,
            json!({
                "event": "udp_dropped",
                "time": "2023-11-14T22:13:25.000000Z",
                "netns": 4026532001u32,
                "probe": "tracepoint",
                "pod": null,
                "family": "ipv4",
                "packet": {"src": "10.0.0.1:5000", "dst": "10.0.0.2:9996", "proto": "udp"},
                "reason": "socket_rcvbuff",
                "location": "udp_queue_rcv_one_skb",
                "direction": "in",
                "local": "0.0.0.0:9996",
                "pid": 700,
                "tid": 700,
                "comm": "slow-reader",
                "thread": null,
                "cgroup": null,
                "container": null,
                "holders": null,
                "rcvbuf": 212992,
                "queued": 213504,
                "count": 1,
                "dns": null,
                "conntrack": null,
            })
        );
    }

    #[test]
    fn a_drop_on_a_dns_port_names_its_query() {
        let value = json(&Event::UdpDropped(samples::dns_drop()));
        assert_eq!(
            value["dns"],
            json!({
                "id": 4660,
                "response": false,
                "qname": "www.example.com",
                "qtype": "A",
                "rcode": null,
                "truncated": false,
                "payload_bytes": 33,
                "payload_length": 33,
            })
        );
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys[keys.len() - 2..], ["dns", "conntrack"]);
    }

    #[test]
    fn an_icmp_error_about_a_dns_query_names_it() {
        let mut sent = samples::icmp_sent();
        assert_eq!(json(&Event::IcmpSent(sent.clone()))["dns"], Value::Null);
        sent.dns = samples::dns_drop().dns;
        let value = json(&Event::IcmpSent(sent.clone()));
        assert_eq!(value["dns"]["qname"], "www.example.com");
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys[keys.len() - 2..], ["dns", "conntrack"]);
        let value = json(&Event::IcmpSuppressed(samples::host_limited(sent)));
        assert_eq!(value["dns"]["qtype"], "A");
    }

    /// `conntrack`, after `dns`, in each kind that has a datagram: the two tuples, what NAT rewrote, whether
    /// conntrack saw a reply, the mark.
    #[test]
    fn a_translated_connection_shows_both_tuples() {
        let want = json!({
            "original": {"src": "10.0.0.5:41234", "dst": "10.96.0.10:53"},
            "reply": {"src": "10.244.1.7:53", "dst": "10.0.0.5:41234"},
            "nat": "dnat",
            "replied": false,
            "mark": 16384,
        });
        let sent = samples::refused_at_backend();
        for event in [
            Event::SocketError(samples::refused_by_backend()),
            Event::UdpDropped(samples::backend_gone()),
            Event::IcmpSent(sent.clone()),
            Event::IcmpSuppressed(samples::host_limited(sent)),
        ] {
            let value = json(&event);
            assert_eq!(value["conntrack"], want, "{}", event.name());
            let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys.last(), Some(&"conntrack"), "{}", event.name());
        }
        let both = UdpDropped { conntrack: Some(samples::dnat_snat()), ..samples::backend_gone() };
        let value = json(&Event::UdpDropped(both));
        assert_eq!(value["conntrack"]["nat"], "dnat+snat");
        assert_eq!(value["conntrack"]["reply"]["dst"], "192.0.2.1:40000");
        let snat = UdpDropped { conntrack: Some(samples::snat()), ..samples::backend_gone() };
        assert_eq!(json(&Event::UdpDropped(snat))["conntrack"]["mark"], Value::Null);
    }

    #[test]
    fn a_pod_is_an_object_or_null() {
        let mut e = samples::owned_socket_error();
        e.meta.pod = Some(samples::pod("coredns-7db6d8ff4d-x2x9k"));
        assert_eq!(
            json(&Event::SocketError(e))["pod"],
            json!({
                "namespace": "kube-system",
                "name": "coredns-7db6d8ff4d-x2x9k",
                "container": "coredns",
                "uid": "9b1f6c2e-8d4a-4f3b-a2c1-0e9d8c7b6a50",
            })
        );
    }

    #[test]
    fn drops_from_many_sources_have_no_source() {
        let drop = UdpDropped { sources_folded: true, count: 9000, ..samples::rcvbuf_drop() };
        let value = json(&Event::UdpDropped(drop));
        assert_eq!(value["packet"], json!({"src": null, "dst": "10.0.0.2:9996", "proto": "udp"}));
        assert_eq!(value["count"], 9000);
    }

    #[test]
    fn socket_error_json_has_the_schema_fields() {
        let value = json(&Event::SocketError(samples::owned_socket_error()));
        assert_eq!(
            value,
            json!({
                "event": "socket_error",
                "time": "2023-11-14T22:13:25.000000Z",
                "netns": 4026532001u32,
                "probe": "tracepoint",
                "pod": null,
                "family": "ipv4",
                "local": "10.0.0.2:40312",
                "remote": "10.0.0.9:8888",
                "icmp": null,
                "errno": "ECONNREFUSED",
                "verdict": "delivered",
                "recverr": null,
                "pid": 900,
                "tid": 901,
                "comm": "dns-client",
                "thread": "dns-worker",
                "cgroup": null,
                "container": null,
                "holders": null,
                "dns": null,
                "conntrack": null,
            })
        );
        let mut refused = samples::owned_socket_error();
        refused.dns = samples::dns_drop().dns;
        let value = json(&Event::SocketError(refused));
        assert_eq!(value["dns"]["qname"], "www.example.com");
        assert_eq!(value["dns"]["response"], false);
    }

    #[test]
    fn icmp_sent_json_has_the_schema_fields() {
        assert_eq!(
            json(&Event::IcmpSent(icmp_sent())),
            json!({
                "event": "icmp_sent",
                "time": "2023-11-14T22:13:25.000000Z",
                "netns": 4026532001u32,
                "probe": "tracepoint",
                "pod": null,
                "family": "ipv4",
                "icmp": {"type": 3, "code": 3},
                "packet": {"src": "10.0.0.2:40312", "dst": "10.0.0.9:8888", "proto": "udp"},
                "cause": "no_listener",
                "rate_limited": false,
                "dns": null,
                "conntrack": null,
            })
        );
    }

    #[test]
    fn icmp_suppressed_json() {
        let event = Event::IcmpSuppressed(samples::host_limited(icmp_sent()));
        let value = json(&event);
        assert_eq!(value["event"], "icmp_suppressed");
        assert_eq!(value["scope"], "host");
        assert_eq!(value["count"], 1);
        assert_eq!(value["packet"]["dst"], "10.0.0.9:8888");
        assert_eq!(value["cause"], "no_listener");
    }

    #[test]
    fn lost_json() {
        let event = Event::Lost(Lost { time: SystemTime::UNIX_EPOCH, count: 7 });
        assert_eq!(
            json(&event),
            json!({"event": "lost", "time": "1970-01-01T00:00:00.000000Z", "netns": null, "probe": null, "pod": null, "count": 7})
        );
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let mut e = samples::socket_error();
        e.family = crate::domain::Family::Ipv6;
        e.local = "[fd00::2]:40312".parse().unwrap();
        e.remote = Some("[fd00::9]:8888".parse().unwrap());
        let value = json(&Event::SocketError(e));
        assert_eq!(value["local"], "[fd00::2]:40312");
        assert_eq!(value["remote"], "[fd00::9]:8888");
        assert_eq!(value["family"], "ipv6");
    }

    #[test]
    fn an_unknown_owner_is_null() {
        let value = json(&Event::SocketError(samples::socket_error()));
        assert_eq!(value["pid"], Value::Null);
        assert_eq!(value["comm"], Value::Null);
        assert_eq!(value["thread"], Value::Null);
    }

    #[test]
    fn the_sink_writes_an_object_per_line() {
        let mut sink = JsonSink::new(Vec::new());
        sink.event(&Event::SocketError(samples::socket_error())).unwrap();
        sink.event(&Event::Lost(Lost { time: SystemTime::UNIX_EPOCH, count: 1 })).unwrap();
        let text = String::from_utf8(sink.out.into_inner()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!((lines[0]["event"].as_str(), lines[1]["event"].as_str()), (Some("socket_error"), Some("lost")));
    }
}
