//! `--json`: one object per line (NDJSON), the schema of the README.

use std::io::{self, Write};

use serde_json::{Value, json};

use super::{Lines, Sink, endpoint, explain::proto_name, rfc3339};
use crate::{
    domain::{Dns, Event, Family, Meta, OwnerInfo, Packet},
    kernel::tables::errno_name,
};

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

/// The event as the README's schema has it: the fields every event starts with (`event`, `time`, `netns`,
/// `probe`), then its own, in the schema's order.
pub fn json(event: &Event) -> Value {
    let object = Object::new(event.name());
    match event {
        Event::SocketError(e) => object
            .meta(&e.meta)
            .field("family", e.family.as_str())
            .field("local", e.local.to_string())
            .field("remote", e.remote.map(|r| r.to_string()))
            .field(
                "icmp",
                e.icmp.map(|i| json!({ "type": i.icmp_type, "code": i.code, "from": i.from.map(|f| f.to_string()) })),
            )
            .field("errno", errno_name(e.errno))
            .field("verdict", e.verdict.map(|v| v.as_str()))
            .field("recverr", e.recverr)
            .owner(e.owner.as_ref(), e.kernel_socket)
            .field("dns", e.dns.as_ref().map(dns)),
        Event::IcmpSent(e) => object
            .meta(&e.meta)
            .field("family", e.family.as_str())
            .field("icmp", json!({ "type": e.icmp.icmp_type, "code": e.icmp.code }))
            .field("packet", packet_json(e.packet))
            .field("cause", e.cause.as_str())
            .field("rate_limited", e.rate_limited)
            .field("dns", e.dns.as_ref().map(dns)),
        Event::IcmpSuppressed(e) => {
            let attempt = e.attempt.as_ref();
            object
                .meta(&e.meta)
                .field("family", e.family.map(Family::as_str))
                .field("icmp", attempt.map(|a| json!({ "type": a.icmp.icmp_type, "code": a.icmp.code })))
                .field("packet", packet_json(attempt.and_then(|a| a.packet)))
                .field("scope", e.scope.as_str())
                .field("count", e.count)
                .field("cause", attempt.map(|a| a.cause.as_str()))
                .field("dns", attempt.and_then(|a| a.dns.as_ref()).map(dns))
        }
        Event::UdpDropped(e) => object
            .meta(&e.meta)
            .field("family", e.family.as_str())
            .field("packet", if e.sources_folded { folded_packet_json(&e.packet) } else { packet_json(Some(e.packet)) })
            .field("reason", e.reason.as_deref())
            .field("location", e.location.as_deref())
            .field("direction", e.direction.as_str())
            .field("local", e.local.map(|l| l.to_string()))
            .owner(e.owner.as_ref(), e.kernel_socket)
            .field("rcvbuf", e.rcvbuf)
            .field("queued", e.queued)
            .field("count", e.count)
            .field("dns", e.dns.as_ref().map(dns)),
        Event::Lost { time, count } => object
            .field("time", rfc3339(*time))
            .field("netns", Value::Null)
            .field("probe", Value::Null)
            .field("count", *count),
    }
    .0
}

/// An event's JSON object, built field by field in the schema's order (`serde_json`'s `preserve_order`).
struct Object(Value);

impl Object {
    fn new(event: &str) -> Self {
        Self(json!({ "event": event }))
    }

    fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0[key] = value.into();
        self
    }

    /// `time`, `netns` and `probe`.
    fn meta(self, meta: &Meta) -> Self {
        self.field("time", rfc3339(meta.time)).field("netns", meta.netns).field("probe", meta.probe.as_str())
    }

    /// The socket's owner: `pid`, `tid`, `comm`, `cgroup`, `container`, `holders` (0 for a kernel socket,
    /// which no process holds).
    fn owner(self, owner: Option<&OwnerInfo>, kernel_socket: bool) -> Self {
        self.field("pid", owner.map(|o| o.pid))
            .field("tid", owner.and_then(|o| o.tid))
            .field("comm", owner.map(|o| o.comm.as_str()))
            .field("cgroup", owner.and_then(|o| o.cgroup.as_deref()))
            .field("container", owner.and_then(|o| o.container.as_deref()))
            .field("holders", if kernel_socket { Some(0) } else { owner.and_then(|o| o.holders) })
    }
}

/// `dns`: what the datagram's payload said; `payload_bytes` of `payload_length` were at hand.
fn dns(d: &Dns) -> Value {
    json!({
        "id": d.id,
        "response": d.response,
        "qname": d.qname,
        "qtype": d.qtype,
        "rcode": d.rcode,
        "truncated": d.truncated,
        "payload_bytes": d.bytes,
        "payload_length": d.payload,
    })
}

fn packet_json(packet: Option<Packet>) -> Value {
    packet.map_or(Value::Null, |p| {
        json!({
            "src": endpoint(&p, true),
            "dst": endpoint(&p, false),
            "proto": proto_name(p.proto),
        })
    })
}

/// A packet whose source is not known: the drops of many sources counted together.
fn folded_packet_json(p: &Packet) -> Value {
    json!({ "src": null, "dst": endpoint(p, false), "proto": proto_name(p.proto) })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::domain::{Cause, IcmpSent, UdpDropped, samples};

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
                "family": "ipv4",
                "packet": {"src": "10.0.0.1:5000", "dst": "10.0.0.2:9996", "proto": "udp"},
                "reason": "socket_rcvbuff",
                "location": "udp_queue_rcv_one_skb",
                "direction": "in",
                "local": "0.0.0.0:9996",
                "pid": 700,
                "tid": 700,
                "comm": "slow-reader",
                "cgroup": null,
                "container": null,
                "holders": null,
                "rcvbuf": 212992,
                "queued": 213504,
                "count": 1,
                "dns": null,
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
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys.last().map(|k| k.as_str()), Some("dns"));
    }

    #[test]
    fn an_icmp_error_about_a_dns_query_names_it() {
        let mut sent = samples::icmp_sent();
        assert_eq!(json(&Event::IcmpSent(sent.clone()))["dns"], Value::Null);
        sent.dns = samples::dns_drop().dns;
        let value = json(&Event::IcmpSent(sent.clone()));
        assert_eq!(value["dns"]["qname"], "www.example.com");
        let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
        assert_eq!(keys.last().map(|k| k.as_str()), Some("dns"));
        let value = json(&Event::IcmpSuppressed(samples::host_limited(sent)));
        assert_eq!(value["dns"]["qtype"], "A");
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
                "cgroup": null,
                "container": null,
                "holders": null,
                "dns": null,
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
                "family": "ipv4",
                "icmp": {"type": 3, "code": 3},
                "packet": {"src": "10.0.0.2:40312", "dst": "10.0.0.9:8888", "proto": "udp"},
                "cause": "no_listener",
                "rate_limited": false,
                "dns": null,
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
        let event = Event::Lost { time: SystemTime::UNIX_EPOCH, count: 7 };
        assert_eq!(
            json(&event),
            json!({"event": "lost", "time": "1970-01-01T00:00:00.000000Z", "netns": null, "probe": null, "count": 7})
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
    }

    #[test]
    fn the_sink_writes_an_object_per_line() {
        let mut sink = JsonSink::new(Vec::new());
        sink.event(&Event::SocketError(samples::socket_error())).unwrap();
        sink.event(&Event::Lost { time: SystemTime::UNIX_EPOCH, count: 1 }).unwrap();
        let text = String::from_utf8(sink.out.into_inner()).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!((lines[0]["event"].as_str(), lines[1]["event"].as_str()), (Some("socket_error"), Some("lost")));
    }
}
