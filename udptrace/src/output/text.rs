//! Text output: one line per event, in aligned columns, with a sentence that says what it means. Each kind
//! says what its line holds (`events::Kind::line`); this lays it out, escapes it and colours it.

use std::{
    fmt::Write as _,
    io::{self, Write},
    time::SystemTime,
};

use super::{Lines, Sink, escape};
use crate::{
    domain::rfc3339,
    events::{Event, Tone},
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

/// Text output is coloured when it goes to a terminal (`out`) and `NO_COLOR` is unset or empty (no-color.org).
pub fn color_wanted(out: &impl std::io::IsTerminal) -> bool {
    out.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The SGR sequence of a line's tone.
fn sgr(tone: Tone) -> &'static str {
    match tone {
        Tone::Delivered => "1;31",
        Tone::Ignored => "33",
        Tone::Sent => "36",
        Tone::Suppressed => "35",
        Tone::Lost => "1;7;31",
    }
}

/// The explanation's SGR sequence.
const QUIET: &str = "2";

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

    /// Appends `value`, escaped, padded to `width`, in the colour `sgr`. Every part of a line but the time and
    /// the colours passes here: whatever a column or sentence holds that came from a packet or a traced
    /// process, no control character reaches the terminal or the journal.
    fn column(&mut self, value: &str, width: usize, sgr: Option<&str>) -> &mut Self {
        let value = escape(value);
        let padded = format!("{value:<width$}");
        self.text.push_str("  ");
        match sgr.filter(|_| self.color) {
            Some(sgr) => {
                let _ = write!(self.text, "\x1b[{sgr}m{value}\x1b[0m{}", &padded[value.len()..]);
            }
            None => self.text.push_str(&padded),
        }
        self
    }

    fn explanation(&mut self, text: &str) -> String {
        let text = format!("({text})");
        self.column(&text, 0, Some(QUIET));
        std::mem::take(&mut self.text)
    }
}

/// One line per event: time, what (errno or event), verdict or cause, the flow, details, the network
/// namespace, an explanation.
pub fn styled_text(event: &Event, color: bool) -> String {
    let shown = event.kind().line();
    let tone = Some(sgr(shown.tone));
    let mut line = Line::new(color, shown.time);
    line.column(&shown.what, WHAT, tone).column(&shown.why, WHY, tone);
    if let Some(flow) = &shown.flow {
        line.column(flow, FLOW, None);
    }
    for detail in &shown.details {
        line.column(detail, 0, None);
    }
    if let Some(netns) = shown.netns {
        line.column(&format!("netns {netns}"), 0, None);
    }
    line.explanation(&shown.sentence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Cause;
    use crate::events::{IcmpSent, SocketError, UdpDropped, samples};

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
             icmp unseen  pid 900 dns-client (dns-worker)  netns 4026532001  (the peer refused udp/8888 at 10.0.0.9 (no \
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
            owner.comm = Some("a\x1b\nb".to_owned());
            owner.thread = Some("c\x1b[2Jd".to_owned());
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
