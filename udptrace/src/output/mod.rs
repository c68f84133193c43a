//! Where events go: each output is a [`Sink`]. The session hands every event that passed the filters to
//! every sink, tells those that ask when a period of theirs ends and all of them when the run is over; it
//! knows none of them by name.
//!
//! - `text`: a line per event, with its sentence;
//! - `json`: an object per line (NDJSON, the README's schema);
//! - `summary`: tables of counts per period and for the run;
//! - `metrics`: Prometheus counters, served over HTTP;
//! - `pcap`: each event's packet as pcapng, the event in its comments.

pub mod json;
pub mod metrics;
pub mod pcap;
pub mod summary;
pub mod text;

use std::{
    fmt::Write as _,
    io::{self, Write},
    time::Duration,
};

use crate::events::Event;

/// One output of a session.
pub trait Sink {
    /// An event that passed the filters. An error means the output is gone (`udptrace | head`).
    fn event(&mut self, event: &Event) -> io::Result<()>;

    /// How often this sink wants to be told that a period ended (`--summary SECS`); `None`: never.
    fn period(&self) -> Option<Duration> {
        None
    }

    /// A period of this sink's ended.
    fn end_period(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The session ended after `elapsed` (not because the output went away).
    fn finish(&mut self, _elapsed: Duration) -> io::Result<()> {
        Ok(())
    }

    /// Writes out what is buffered: called after each batch of events.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A sink the caller keeps a handle to (`--pcap`'s, whose closing line main prints after the session).
impl<S: Sink> Sink for std::rc::Rc<std::cell::RefCell<S>> {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.borrow_mut().event(event)
    }

    fn period(&self) -> Option<Duration> {
        self.borrow().period()
    }

    fn end_period(&mut self) -> io::Result<()> {
        self.borrow_mut().end_period()
    }

    fn finish(&mut self, elapsed: Duration) -> io::Result<()> {
        self.borrow_mut().finish(elapsed)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.borrow_mut().flush()
    }
}

/// Lines on a buffered writer: the text, JSON and summary sinks write to stdout through one of these.
pub struct Lines<W: Write> {
    out: io::BufWriter<W>,
}

impl<W: Write> Lines<W> {
    pub fn new(out: W) -> Self {
        Self { out: io::BufWriter::new(out) }
    }

    pub fn line(&mut self, line: impl std::fmt::Display) -> io::Result<()> {
        writeln!(self.out, "{line}")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|_| panic!("flushing into memory cannot fail"))
    }
}

/// Escapes what a traced process controls (its `comm`, its cgroup's name): no control character reaches the
/// terminal, and no format character that reorders or hides what follows it on the line.
pub fn escape(text: &str) -> String {
    // Printable ASCII but the backslash, the common case, is its own escape: copied as it is.
    if text.bytes().all(|b| matches!(b, b' '..=b'~') && b != b'\\') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_format(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// Unicode's invisible format characters a terminal acts on: the bidirectional embeddings, overrides and
/// isolates (U+202A-U+202E, U+2066-U+2069) and marks (U+200E, U+200F, U+061C), which reorder the rest of a
/// line, and the zero-width ones (U+200B-U+200D, U+2060, U+FEFF, U+00AD), which hide between what they join.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200b}'..='\u{200f}'
            | '\u{061c}'
            | '\u{2060}'
            | '\u{feff}'
            | '\u{00ad}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerInfo;
    use crate::events::{IcmpSuppressed, Lost, SocketError, UdpDropped, samples};

    /// What a local user can name a process, or a remote one write into a DNS question: a newline (a forged
    /// log line), an escape sequence (a recoloured terminal), a right-to-left override, a quote.
    const HOSTILE: &str = "x\nforged: ok\x1b[31m\u{202e}gnp.exe\"'";

    /// Every kind of event, every string field of it set to [`HOSTILE`].
    fn hostile_events() -> Vec<Event> {
        let owner = OwnerInfo {
            pid: 900,
            tid: Some(901),
            comm: Some(HOSTILE.to_owned()),
            thread: Some(HOSTILE.to_owned()),
            cgroup_id: Some(4242),
            cgroup: Some(format!("/kubepods/{HOSTILE}")),
            container: Some(HOSTILE.to_owned()),
            holders: None,
        };
        let without_container = OwnerInfo { container: None, ..owner.clone() };
        let mut dns = samples::dns_drop().dns.expect("a DNS drop");
        dns.qname = Some(HOSTILE.to_owned());
        dns.qtype = Some(HOSTILE.to_owned());
        dns.rcode = Some(HOSTILE.to_owned());
        dns.response = Some(true);
        let refused =
            SocketError { owner: Some(owner.clone()), dns: Some(dns.clone()), ..samples::owned_socket_error() };
        let sent = crate::events::IcmpSent { dns: Some(dns.clone()), ..samples::icmp_sent() };
        let dropped = UdpDropped {
            reason: Some(HOSTILE.to_owned()),
            location: Some(HOSTILE.to_owned()),
            owner: Some(without_container),
            local: Some("10.0.0.9:53".parse().unwrap()),
            dns: Some(dns),
            ..samples::dns_drop()
        };
        let located = UdpDropped { reason: None, ..dropped.clone() };
        let suppressed: IcmpSuppressed = samples::host_limited(sent.clone());
        vec![
            Event::SocketError(refused.clone()),
            Event::SocketError(SocketError { owner: Some(OwnerInfo { container: None, ..owner }), ..refused }),
            Event::IcmpSent(sent),
            Event::UdpDropped(dropped),
            Event::UdpDropped(located),
            Event::IcmpSuppressed(suppressed),
            Event::Lost(Lost { time: samples::time(), count: 3 }),
        ]
    }

    /// Characters a terminal acts on: controls, and the invisible format characters `escape` takes.
    fn acted_on(c: char) -> bool {
        c.is_control() || (c != ' ' && escape(&c.to_string()) != c.to_string() && c != '\\')
    }

    /// No control or format character from any field reaches the text (plain or coloured, where the only
    /// escape sequences are the colours') or the summary; no control character the JSON, where the values
    /// come back whole.
    #[test]
    fn no_field_reaches_an_output_raw() {
        let colours = ["\x1b[1;31m", "\x1b[33m", "\x1b[36m", "\x1b[35m", "\x1b[1;7;31m", "\x1b[2m", "\x1b[0m"];
        let mut table = summary::Table::default();
        for event in hostile_events() {
            for color in [false, true] {
                let mut line = text::styled_text(&event, color);
                for sgr in colours {
                    line = line.replace(sgr, "");
                }
                assert!(!line.chars().any(acted_on), "{}: {line:?}", event.name());
            }
            table.add(&event);
            let json = json::json(&event);
            let text = json.to_string();
            assert!(!text.chars().any(char::is_control), "{text}");
            if !matches!(event, Event::Lost(_)) {
                assert!(text.contains(&serde_json::to_string(HOSTILE).unwrap()), "the value whole in JSON: {text}");
            }
        }
        let summary = table.text("summary");
        for row in summary.lines() {
            assert!(!row.chars().any(acted_on), "{row:?}");
        }
        // The owner's name is in the summary and in the socket error's sentence, escaped.
        let escaped = escape(HOSTILE);
        assert!(summary.contains(&escaped), "{summary}");
        let refused = text::styled_text(&hostile_events()[0], false);
        assert!(refused.contains(&format!("({escaped}'s {escaped} answer for")), "{refused}");
    }

    #[test]
    fn control_characters_from_the_traced_system_are_escaped() {
        assert_eq!(escape("evil\x1b[31m\nname\\"), "evil\\x1b[31m\\x0aname\\\\");
        // A right-to-left override would show `exe.txt` as `txt.exe`; a zero-width space hides in a name.
        assert_eq!(escape("a\u{202e}txt.exe\u{200b}"), "a\\u{202e}txt.exe\\u{200b}");
        assert_eq!(escape("d\u{e9}j\u{e0} vu"), "d\u{e9}j\u{e0} vu");
    }
}
