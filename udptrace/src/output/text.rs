//! Rendering: one text line per event, or one JSON object per line (`--json`, the schema of the README).

use std::{fmt::Write as _, net::SocketAddr, time::SystemTime};

use serde_json::{Value, json};

use crate::{
    event::{Event, IcmpSent, IcmpSuppressed, Packet, SocketError},
    explain::{errno_name, explain_icmp_sent, explain_icmp_suppressed, explain_socket_error, icmp_name, proto_name},
};

pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// Escapes what a traced process controls (its `comm`): no control character reaches the terminal.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// The packet's source (`src`) or destination, with its port when the packet has ports.
pub fn endpoint(packet: &Packet, src: bool) -> String {
    let ip = if src { packet.src } else { packet.dst };
    match packet.ports {
        Some((sport, dport)) => SocketAddr::new(ip, if src { sport } else { dport }).to_string(),
        None => ip.to_string(),
    }
}

pub fn json(event: &Event) -> Value {
    match event {
        Event::SocketError(e) => socket_error_json(e),
        Event::IcmpSent(e) => icmp_sent_json(e),
        Event::IcmpSuppressed(e) => icmp_suppressed_json(e),
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

fn icmp_suppressed_json(e: &IcmpSuppressed) -> Value {
    let attempt = e.attempt.as_ref();
    json!({
        "event": "icmp_suppressed",
        "time": rfc3339(e.meta.time),
        "netns": e.meta.netns,
        "probe": e.meta.probe.as_str(),
        "family": e.family.as_str(),
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
    })
}

/// The local time of day, `HH:MM:SS.micros`, for the start of a text line.
fn clock_time(time: SystemTime) -> String {
    // RFC 3339 in UTC: keep the time of day. Text output is for eyes; JSON carries the full date.
    let full = rfc3339(time);
    full.split_once('T').map_or(full.clone(), |(_, t)| t.trim_end_matches('Z').to_owned())
}

/// `pid 4711 dns-client` with, when known, the container (12 characters, as docker shows it) or else the
/// cgroup's last component.
fn owner_text(owner: Option<&crate::owner::OwnerInfo>) -> String {
    let Some(owner) = owner else {
        return "owner unknown".to_owned();
    };
    let mut text = format!("pid {} {}", owner.pid, escape(&owner.comm));
    if let Some(container) = &owner.container {
        text.push_str(&format!(" container {}", &container[..container.len().min(12)]));
    } else if let Some(cgroup) = owner.cgroup.as_deref().filter(|c| *c != "/") {
        text.push_str(&format!(" cgroup {}", escape(cgroup.rsplit('/').next().unwrap_or(cgroup))));
    }
    text
}

fn about(packet: Option<Packet>) -> String {
    packet.map_or_else(
        || "an unreadable packet".to_owned(),
        |p| format!("{} {} -> {}", proto_name(p.proto), endpoint(&p, true), endpoint(&p, false)),
    )
}

/// Text output is coloured when stdout is a terminal and `NO_COLOR` is unset or empty (no-color.org).
pub fn color_wanted() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// SGR sequences for the parts of a line.
#[derive(Clone, Copy)]
enum Tone {
    /// An error the application got.
    Delivered,
    /// An error the kernel dropped, or that found no socket.
    Ignored,
    Sent,
    Suppressed,
    Lost,
    /// The explanation.
    Quiet,
}

impl Tone {
    fn sgr(self) -> &'static str {
        match self {
            Tone::Delivered => "1;31",
            Tone::Ignored => "33",
            Tone::Sent => "36",
            Tone::Suppressed => "35",
            Tone::Lost => "1;7;31",
            Tone::Quiet => "2",
        }
    }
}

/// Column widths: what, verdict or cause, the flow. Longer values push the rest of the line.
const WHAT: usize = 15;
const WHY: usize = 19;
const FLOW: usize = 45;

struct Line {
    color: bool,
    text: String,
}

impl Line {
    fn new(color: bool, time: SystemTime) -> Self {
        Line { color, text: clock_time(time) }
    }

    /// Appends `value`, padded to `width`, in `tone`.
    fn column(&mut self, value: &str, width: usize, tone: Option<Tone>) -> &mut Self {
        let padded = format!("{value:<width$}");
        self.text.push_str("  ");
        match tone.filter(|_| self.color) {
            Some(tone) => {
                let _ = write!(self.text, "\x1b[{}m{}\x1b[0m{}", tone.sgr(), value, &padded[value.len()..]);
            }
            None => self.text.push_str(&padded),
        }
        self
    }

    fn explanation(&mut self, text: &str) -> String {
        let text = format!("({text})");
        self.column(&text, 0, Some(Tone::Quiet));
        std::mem::take(&mut self.text)
    }
}

/// One line per event, uncoloured.
#[cfg(test)]
pub fn text(event: &Event) -> String {
    styled_text(event, false)
}

/// One line per event: time, what (errno or event), verdict or cause, the flow, details, an explanation.
pub fn styled_text(event: &Event, color: bool) -> String {
    match event {
        Event::SocketError(e) => {
            let remote = e.remote.map_or_else(|| "?".to_owned(), |r| r.to_string());
            let icmp = match e.icmp {
                Some(i) => format!(
                    "icmp {}{}",
                    icmp_name(e.family, i.icmp_type, i.code),
                    i.from.map(|f| format!(" from {f}")).unwrap_or_default()
                ),
                None => "icmp unseen".to_owned(),
            };
            let tone = match e.verdict {
                Some(crate::event::Verdict::Delivered) => Tone::Delivered,
                _ => Tone::Ignored,
            };
            Line::new(color, e.meta.time)
                .column(errno_name(e.errno).unwrap_or("-"), WHAT, Some(tone))
                .column(e.verdict.map_or("?", |v| v.as_str()), WHY, Some(tone))
                .column(&format!("{} -> {remote}", e.local), FLOW, None)
                .column(&icmp, 0, None)
                .column(&owner_text(e.owner.as_ref()), 0, None)
                .column(&format!("netns {}", e.meta.netns), 0, None)
                .explanation(&explain_socket_error(e))
        }
        Event::IcmpSuppressed(e) => {
            let (flow, icmp) = match &e.attempt {
                Some(a) => (about(a.packet), icmp_name(a.family, a.icmp.icmp_type, a.icmp.code)),
                None => (format!("{} {} ICMP errors", e.count, e.family.as_str()), "any type".to_owned()),
            };
            Line::new(color, e.meta.time)
                .column("icmp_suppressed", WHAT, Some(Tone::Suppressed))
                .column(&format!("scope {}", e.scope.as_str()), WHY, Some(Tone::Suppressed))
                .column(&flow, FLOW, None)
                .column(&format!("icmp {icmp}"), 0, None)
                .column(&format!("netns {}", e.meta.netns), 0, None)
                .explanation(&explain_icmp_suppressed(e))
        }
        Event::IcmpSent(e) => Line::new(color, e.meta.time)
            .column("icmp_sent", WHAT, Some(Tone::Sent))
            .column(e.cause.as_str(), WHY, Some(Tone::Sent))
            .column(&about(e.packet), FLOW, None)
            .column(&format!("icmp {}", icmp_name(e.family, e.icmp.icmp_type, e.icmp.code)), 0, None)
            .column(&format!("netns {}", e.meta.netns), 0, None)
            .explanation(&explain_icmp_sent(e)),
        Event::Lost { time, count } => Line::new(color, *time)
            .column("lost", WHAT, Some(Tone::Lost))
            .column(&format!("{count} events"), WHY, Some(Tone::Lost))
            .explanation("the kernel could not hand them over: the buffer was full; see the closing counts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cause::Cause,
        event::{Clock, decode, tests as raw},
    };

    /// Booted at 2023-11-14T22:13:20Z; the sample events are stamped 5 s after boot.
    fn clock() -> Clock {
        Clock::with_boot_epoch_ns(1_700_000_000_000_000_000)
    }

    fn socket_error() -> Event {
        decode(&raw::bytes_of(&raw::raw_socket_error_v4_owned()), clock()).unwrap()
    }

    fn icmp_sent() -> Event {
        let mut event = decode(&raw::bytes_of(&raw::raw_icmp_sent_v4()), clock()).unwrap();
        if let Event::IcmpSent(e) = &mut event {
            e.cause = Cause::NoListener;
        }
        event
    }

    #[test]
    fn socket_error_json_has_the_schema_fields() {
        let value = json(&socket_error());
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
            })
        );
    }

    #[test]
    fn icmp_sent_json_has_the_schema_fields() {
        assert_eq!(
            json(&icmp_sent()),
            json!({
                "event": "icmp_sent",
                "time": "2023-11-14T22:13:25.000000Z",
                "netns": 4026532001u32,
                "probe": "tracepoint",
                "family": "ipv4",
                "icmp": {"type": 3, "code": 3},
                "packet": {"src": "10.0.0.2:40312", "dst": "10.0.0.9:8888", "proto": "udp"},
                "cause": "no_listener",
            })
        );
    }

    #[test]
    fn icmp_suppressed_json_and_text() {
        let Event::IcmpSent(sent) = icmp_sent() else { panic!() };
        let event = Event::IcmpSuppressed(crate::event::IcmpSuppressed {
            meta: sent.meta.clone(),
            family: sent.family,
            scope: crate::event::Scope::Host,
            count: 1,
            attempt: Some(sent),
        });
        let value = json(&event);
        assert_eq!(value["event"], "icmp_suppressed");
        assert_eq!(value["scope"], "host");
        assert_eq!(value["count"], 1);
        assert_eq!(value["packet"]["dst"], "10.0.0.9:8888");
        assert_eq!(value["cause"], "no_listener");
        let line = text(&event);
        assert!(line.contains("icmp_suppressed  scope host           udp 10.0.0.2:40312 -> 10.0.0.9:8888"), "{line}");
        assert!(line.contains("icmp port-unreachable"), "{line}");
        assert!(line.contains("net.ipv4.icmp_ratelimit"), "{line}");
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
        let mut raw_event = raw::raw_socket_error_v4();
        raw_event.header.family = udptrace_common::AF_INET6 as u8;
        raw_event.local_addr = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        raw_event.remote_addr = "fd00::9".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let event = decode(&raw::bytes_of(&raw_event), clock()).unwrap();
        let value = json(&event);
        assert_eq!(value["local"], "[fd00::2]:40312");
        assert_eq!(value["remote"], "[fd00::9]:8888");
        assert_eq!(value["family"], "ipv6");
        assert!(text(&event).contains("[fd00::2]:40312 -> [fd00::9]:8888"));
    }

    #[test]
    fn text_lines_carry_the_facts_and_an_explanation() {
        let line = text(&socket_error());
        assert_eq!(
            line,
            "22:13:25.000000  ECONNREFUSED     delivered            10.0.0.2:40312 -> 10.0.0.9:8888                \
             icmp unseen  pid 900 dns-client  netns 4026532001  (the peer refused udp/8888 at 10.0.0.9 (no \
             listener, or a firewall REJECT); the next send or receive fails with ECONNREFUSED)"
        );
        assert_eq!(
            text(&icmp_sent()),
            "22:13:25.000000  icmp_sent        no_listener          udp 10.0.0.2:40312 -> 10.0.0.9:8888            \
             icmp port-unreachable  netns 4026532001  (no socket listens on udp/8888 here)"
        );
    }

    #[test]
    fn colour_wraps_the_values_and_keeps_the_columns() {
        let plain = text(&socket_error());
        let coloured = styled_text(&socket_error(), true);
        assert!(coloured.contains("\x1b[1;31mECONNREFUSED\x1b[0m     "), "{coloured:?}");
        assert!(coloured.contains("\x1b[2m(the peer refused"), "{coloured:?}");
        let stripped = coloured.replace("\x1b[1;31m", "").replace("\x1b[2m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn an_unknown_owner_is_said_and_null() {
        let event = decode(&raw::bytes_of(&raw::raw_socket_error_v4()), clock()).unwrap();
        assert_eq!(json(&event)["pid"], Value::Null);
        assert_eq!(json(&event)["comm"], Value::Null);
        assert!(text(&event).contains("owner unknown"));
    }

    #[test]
    fn control_characters_from_the_traced_system_are_escaped() {
        assert_eq!(escape("evil\x1b[31m\nname\\"), "evil\\x1b[31m\\x0aname\\\\");
        let mut raw_event = raw::raw_socket_error_v4_owned();
        raw_event.owner.comm[..4].copy_from_slice(b"a\x1b\nb");
        let line = text(&decode(&raw::bytes_of(&raw_event), clock()).unwrap());
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
    }
}
