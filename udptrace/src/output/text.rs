//! Text output: one line per event, in aligned columns, with a sentence that says what it means.

use std::{
    fmt::Write as _,
    io::{self, Write},
    time::SystemTime,
};

use super::{
    Lines, Sink, endpoint, escape,
    explain::{
        explain_icmp_sent, explain_icmp_suppressed, explain_socket_error, explain_udp_dropped, icmp_name, proto_name,
    },
    rfc3339,
};
use crate::{
    domain::{Dns, Event, OwnerInfo, Packet, UdpDropped, Verdict},
    kernel::tables::errno_name,
};

/// A line per event on `out`, coloured or not.
pub struct TextSink<W: Write> {
    out: Lines<W>,
    color: bool,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, color: bool) -> Self {
        Self { out: Lines::new(out), color }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.out.line(styled_text(event, self.color))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The time of day in UTC, `HH:MM:SS.micros`, for the start of a text line.
fn clock_time(time: SystemTime) -> String {
    // Text output is for eyes; JSON carries the full date.
    let full = rfc3339(time);
    full.split_once('T').map_or(full.clone(), |(_, t)| t.trim_end_matches('Z').to_owned())
}

/// `pid 4711 dns-client` with, when known, the container (12 characters, as docker shows it) or else the
/// cgroup's last component.
fn owner_text(owner: Option<&OwnerInfo>) -> String {
    let Some(owner) = owner else {
        return "owner unknown".to_owned();
    };
    let mut text = format!("pid {} {}", owner.pid, owner.comm);
    if let Some(others) = owner.holders.and_then(|n| n.checked_sub(1)).filter(|&n| n > 0) {
        text.push_str(&format!(" (+{others} more holding it)"));
    }
    if let Some(container) = &owner.container {
        text.push_str(&format!(" container {}", &container[..container.len().min(12)]));
    } else if let Some(cgroup) = owner.cgroup.as_deref().filter(|c| *c != "/") {
        text.push_str(&format!(" cgroup {}", cgroup.rsplit('/').next().unwrap_or(cgroup)));
    }
    text
}

fn about(packet: Option<Packet>) -> String {
    packet.map_or_else(
        || "an unreadable packet".to_owned(),
        |p| format!("{} {} -> {}", proto_name(p.proto), endpoint(&p, true), endpoint(&p, false)),
    )
}

/// The query or answer after the flow: `dns A example.com`, `dns answer NXDOMAIN A example.com`; `?` for
/// what the bytes did not reach, `dns id 4660 ?` when only the ID is known, `dns ? (not DNS)` for a payload
/// that is not.
pub fn dns_text(d: &Dns) -> String {
    let mut text = String::from("dns");
    if d.response == Some(true) {
        text.push_str(&format!(" answer {}", d.rcode.as_deref().unwrap_or("?")));
    }
    match (&d.qtype, &d.qname) {
        (Some(qtype), Some(qname)) => text.push_str(&format!(" {qtype} {}", crate::dns::shown(qname))),
        _ => {
            if let Some(id) = d.id {
                text.push_str(&format!(" id {id}"));
            }
            text.push_str(if d.malformed { " ? (not DNS)" } else { " ?" });
        }
    }
    if d.truncated == Some(true) {
        text.push_str(" truncated");
    }
    text
}

/// A drop's datagrams; `*` for the source of drops from many sources, counted together.
fn dropped_flow(e: &UdpDropped) -> String {
    if e.sources_folded {
        format!("{} * -> {}", proto_name(e.packet.proto), endpoint(&e.packet, false))
    } else {
        about(Some(e.packet))
    }
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

    /// Appends `value`, escaped, padded to `width`, in `tone`. Every part of a line but the time and the
    /// colours passes here: whatever a column or sentence holds that came from a packet or a traced process,
    /// no control character reaches the terminal or the journal.
    fn column(&mut self, value: &str, width: usize, tone: Option<Tone>) -> &mut Self {
        let value = escape(value);
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
                Some(Verdict::Delivered) => Tone::Delivered,
                _ => Tone::Ignored,
            };
            let mut line = Line::new(color, e.meta.time);
            line.column(errno_name(e.errno).unwrap_or("-"), WHAT, Some(tone))
                .column(e.verdict.map_or("?", |v| v.as_str()), WHY, Some(tone))
                .column(&format!("{} -> {remote}", e.local), FLOW, None);
            if let Some(dns) = &e.dns {
                line.column(&dns_text(dns), 0, None);
            }
            line.column(&icmp, 0, None)
                .column(
                    &if e.kernel_socket { "kernel socket".to_owned() } else { owner_text(e.owner.as_ref()) },
                    0,
                    None,
                )
                .column(&format!("netns {}", e.meta.netns), 0, None)
                .explanation(&explain_socket_error(e))
        }
        Event::IcmpSuppressed(e) => {
            let (flow, icmp) = match &e.attempt {
                Some(a) => (about(a.packet), icmp_name(a.family, a.icmp.icmp_type, a.icmp.code)),
                None => {
                    let family = e.family.map_or_else(String::new, |f| format!(" {}", f.as_str()));
                    (format!("{}{family} ICMP errors", e.count), "any type".to_owned())
                }
            };
            let mut line = Line::new(color, e.meta.time);
            line.column(event.name(), WHAT, Some(Tone::Suppressed))
                .column(&format!("scope {}", e.scope.as_str()), WHY, Some(Tone::Suppressed))
                .column(&flow, FLOW, None);
            if let Some(dns) = e.attempt.as_ref().and_then(|a| a.dns.as_ref()) {
                line.column(&dns_text(dns), 0, None);
            }
            line.column(&format!("icmp {icmp}"), 0, None)
                .column(&format!("netns {}", e.meta.netns), 0, None)
                .explanation(&explain_icmp_suppressed(e))
        }
        Event::IcmpSent(e) => {
            let mut line = Line::new(color, e.meta.time);
            line.column(event.name(), WHAT, Some(Tone::Sent)).column(e.cause.as_str(), WHY, Some(Tone::Sent)).column(
                &about(e.packet),
                FLOW,
                None,
            );
            if let Some(dns) = &e.dns {
                line.column(&dns_text(dns), 0, None);
            }
            line.column(&format!("icmp {}", icmp_name(e.family, e.icmp.icmp_type, e.icmp.code)), 0, None)
                .column(&format!("netns {}", e.meta.netns), 0, None)
                .explanation(&explain_icmp_sent(e))
        }
        Event::UdpDropped(e) => {
            let mut line = Line::new(color, e.meta.time);
            line.column(event.name(), WHAT, Some(Tone::Ignored))
                .column(e.reason.as_deref().or(e.location.as_deref()).unwrap_or("?"), WHY, Some(Tone::Ignored))
                .column(&format!("{} {}", e.direction.as_str(), dropped_flow(e)), FLOW, None);
            if let Some(dns) = &e.dns {
                line.column(&dns_text(dns), 0, None);
            }
            if e.count > 1 {
                line.column(&format!("x{}", e.count), 0, None);
            }
            if let Some(local) = e.local {
                let owner = if e.kernel_socket { "kernel socket".to_owned() } else { owner_text(e.owner.as_ref()) };
                line.column(&format!("socket {local} {owner}"), 0, None);
            }
            line.column(&format!("netns {}", e.meta.netns), 0, None).explanation(&explain_udp_dropped(e))
        }
        Event::Lost { time, count } => Line::new(color, *time)
            .column("lost", WHAT, Some(Tone::Lost))
            .column(&format!("{count} events"), WHY, Some(Tone::Lost))
            .explanation("the kernel could not hand them over: the buffer was full; see the closing counts"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Cause, IcmpSent, SocketError, samples};

    fn text(event: &Event) -> String {
        styled_text(event, false)
    }

    fn socket_error() -> Event {
        Event::SocketError(samples::owned_socket_error())
    }

    fn icmp_sent() -> IcmpSent {
        IcmpSent { cause: Cause::NoListener, ..samples::icmp_sent() }
    }

    #[test]
    fn a_drop_line_says_why_where_and_whose() {
        let mut drop = samples::rcvbuf_drop();
        drop.count = 4711;
        assert_eq!(
            text(&Event::UdpDropped(drop)),
            "22:13:25.000000  udp_dropped      socket_rcvbuff       in udp 10.0.0.1:5000 -> 10.0.0.2:9996          \
             x4711  socket 0.0.0.0:9996 pid 700 slow-reader  netns 4026532001  (the socket's receive buffer was \
             full: its process reads too slowly; raise SO_RCVBUF (capped by net.core.rmem_max) or read faster \
             (213504 of 212992 bytes queued); 4711 such drops)"
        );
    }

    #[test]
    fn a_socket_error_about_a_dns_query_names_it_after_the_flow() {
        let mut refused = samples::owned_socket_error();
        refused.dns = samples::dns_drop().dns;
        let line = text(&Event::SocketError(refused));
        assert!(line.contains("10.0.0.2:40312 -> 10.0.0.9:8888"), "{line}");
        assert!(line.contains(" dns A www.example.com "), "{line}");
        assert!(line.find("dns A").unwrap() < line.find("pid 900").unwrap(), "{line}");
    }

    #[test]
    fn a_drop_on_a_dns_port_names_the_query_after_the_flow() {
        let line = text(&Event::UdpDropped(samples::dns_drop()));
        assert!(
            line.contains(" in udp 10.0.0.1:41234 -> 10.0.0.2:53           dns A www.example.com  netns "),
            "{line}"
        );
        let dns = |d: Dns| dns_text(&d);
        let answer = Dns {
            response: Some(true),
            rcode: Some("NXDOMAIN".to_owned()),
            truncated: Some(true),
            ..samples::dns_drop().dns.unwrap()
        };
        assert_eq!(dns(answer), "dns answer NXDOMAIN A www.example.com truncated");
        assert_eq!(
            dns(Dns { id: Some(7), response: Some(false), bytes: 8, payload: 40, ..Dns::default() }),
            "dns id 7 ?"
        );
        assert_eq!(dns(Dns { bytes: 3, payload: 3, malformed: true, ..Dns::default() }), "dns ? (not DNS)");
        let root = Dns { qname: Some(String::new()), qtype: Some("NS".to_owned()), ..Dns::default() };
        assert_eq!(dns(root), "dns NS .");
    }

    #[test]
    fn an_icmp_error_about_a_dns_query_names_it() {
        let sent = IcmpSent { cause: Cause::NoListener, dns: samples::dns_drop().dns, ..samples::icmp_sent() };
        let line = text(&Event::IcmpSent(sent));
        assert!(line.contains(" 10.0.0.2:40312 -> 10.0.0.9:8888 "), "{line}");
        assert!(line.contains(" dns A www.example.com  icmp "), "{line}");
        assert!(
            line.contains(
                "(the query for www.example.com A was answered with an ICMP error: no socket listens on udp/8888 here)"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_drop_from_many_sources_names_none() {
        let drop = UdpDropped { sources_folded: true, count: 9000, ..samples::rcvbuf_drop() };
        let line = text(&Event::UdpDropped(drop));
        assert!(line.contains(" in udp * -> 10.0.0.2:9996 "), "{line}");
        assert!(!line.contains("10.0.0.1"), "{line}");
        assert!(
            line.ends_with(
                "9000 such drops, from sources not shown one by one (more than 32 flows to it in a second))"
            ),
            "{line}"
        );
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
            text(&Event::IcmpSent(icmp_sent())),
            "22:13:25.000000  icmp_sent        no_listener          udp 10.0.0.2:40312 -> 10.0.0.9:8888            \
             icmp port-unreachable  netns 4026532001  (no socket listens on udp/8888 here)"
        );
    }

    #[test]
    fn icmp_suppressed_text() {
        let event = Event::IcmpSuppressed(samples::host_limited(icmp_sent()));
        let line = text(&event);
        assert!(line.contains("icmp_suppressed  scope host           udp 10.0.0.2:40312 -> 10.0.0.9:8888"), "{line}");
        assert!(line.contains("icmp port-unreachable"), "{line}");
        assert!(line.contains("net.ipv4.icmp_ratelimit"), "{line}");
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let e = SocketError {
            family: crate::domain::Family::Ipv6,
            local: "[fd00::2]:40312".parse().unwrap(),
            remote: Some("[fd00::9]:8888".parse().unwrap()),
            ..samples::socket_error()
        };
        assert!(text(&Event::SocketError(e)).contains("[fd00::2]:40312 -> [fd00::9]:8888"));
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
    fn an_unknown_owner_is_said() {
        assert!(text(&Event::SocketError(samples::socket_error())).contains("owner unknown"));
    }

    #[test]
    fn control_characters_in_a_comm_do_not_reach_the_terminal() {
        let mut e = samples::owned_socket_error();
        if let Some(owner) = &mut e.owner {
            owner.comm = "a\x1b\nb".to_owned();
        }
        let line = text(&Event::SocketError(e));
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
    }

    #[test]
    fn the_sink_writes_a_line_per_event() {
        let mut sink = TextSink::new(Vec::new(), false);
        sink.event(&socket_error()).unwrap();
        sink.event(&Event::IcmpSent(icmp_sent())).unwrap();
        let written = String::from_utf8(sink.out.into_inner()).unwrap();
        assert_eq!(written, format!("{}\n{}\n", text(&socket_error()), text(&Event::IcmpSent(icmp_sent()))));
    }
}
