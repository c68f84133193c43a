//! `--json`: one object per line (NDJSON), the schema of the README.

use std::io::{self, Write};

use serde_json::{Value, json};

use super::{Lines, Sink, endpoint, explain::proto_name, rfc3339};
use crate::{
    domain::{Event, Family, IcmpSent, IcmpSuppressed, Packet, SocketError, UdpDropped},
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

pub fn json(event: &Event) -> Value {
    match event {
        Event::SocketError(e) => socket_error_json(e),
        Event::IcmpSent(e) => icmp_sent_json(e),
        Event::IcmpSuppressed(e) => icmp_suppressed_json(e),
        Event::UdpDropped(e) => udp_dropped_json(e),
        Event::Lost { time, count } => json!({
            "event": "lost",
            "time": rfc3339(*time),
            "netns": null,
            "probe": null,
            "count": count,
        }),
    }
}

fn socket_error_json(e: &SocketError) -> Value {
    json!({
        "event": "socket_error",
        "time": rfc3339(e.meta.time),
        "netns": e.meta.netns,
        "probe": e.meta.probe.as_str(),
        "family": e.family.as_str(),
        "local": e.local.to_string(),
        "remote": e.remote.map(|r| r.to_string()),
        "icmp": e.icmp.map(|i| json!({
            "type": i.icmp_type,
            "code": i.code,
            "from": i.from.map(|f| f.to_string()),
        })),
        "errno": errno_name(e.errno),
        "verdict": e.verdict.map(|v| v.as_str()),
        "recverr": e.recverr,
        "pid": e.owner.as_ref().map(|o| o.pid),
        "tid": e.owner.as_ref().and_then(|o| o.tid),
        "comm": e.owner.as_ref().map(|o| o.comm.as_str()),
        "cgroup": e.owner.as_ref().and_then(|o| o.cgroup.as_deref()),
        "container": e.owner.as_ref().and_then(|o| o.container.as_deref()),
        // A kernel socket: no process holds it.
        "holders": if e.kernel_socket { Some(0) } else { e.owner.as_ref().and_then(|o| o.holders) },
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

fn icmp_suppressed_json(e: &IcmpSuppressed) -> Value {
    let attempt = e.attempt.as_ref();
    json!({
        "event": "icmp_suppressed",
        "time": rfc3339(e.meta.time),
        "netns": e.meta.netns,
        "probe": e.meta.probe.as_str(),
        "family": e.family.map(Family::as_str),
        "icmp": attempt.map(|a| json!({ "type": a.icmp.icmp_type, "code": a.icmp.code })),
        "packet": packet_json(attempt.and_then(|a| a.packet)),
        "scope": e.scope.as_str(),
        "count": e.count,
        "cause": attempt.map(|a| a.cause.as_str()),
    })
}

fn icmp_sent_json(e: &IcmpSent) -> Value {
    json!({
        "event": "icmp_sent",
        "time": rfc3339(e.meta.time),
        "netns": e.meta.netns,
        "probe": e.meta.probe.as_str(),
        "family": e.family.as_str(),
        "icmp": { "type": e.icmp.icmp_type, "code": e.icmp.code },
        "packet": packet_json(e.packet),
        "cause": e.cause.as_str(),
        "rate_limited": e.rate_limited,
    })
}

fn udp_dropped_json(e: &UdpDropped) -> Value {
    let owner = e.owner.as_ref();
    json!({
        "event": "udp_dropped",
        "time": rfc3339(e.meta.time),
        "netns": e.meta.netns,
        "probe": e.meta.probe.as_str(),
        "family": e.family.as_str(),
        "packet": if e.sources_folded { folded_packet_json(&e.packet) } else { packet_json(Some(e.packet)) },
        "reason": e.reason.as_deref(),
        "location": e.location.as_deref(),
        "direction": e.direction.as_str(),
        "local": e.local.map(|l| l.to_string()),
        "pid": owner.map(|o| o.pid),
        "tid": owner.and_then(|o| o.tid),
        "comm": owner.map(|o| o.comm.as_str()),
        "cgroup": owner.and_then(|o| o.cgroup.as_deref()),
        "container": owner.and_then(|o| o.container.as_deref()),
        "holders": if e.kernel_socket { Some(0) } else { owner.and_then(|o| o.holders) },
        "rcvbuf": e.rcvbuf,
        "queued": e.queued,
        "count": e.count,
    })
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::domain::{Cause, samples};

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
            })
        );
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
