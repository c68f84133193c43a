//! Where events go: each output is a [`Sink`]. The session hands every event that passed the filters to
//! every sink, tells those that ask when a period of theirs ends and all of them when the run is over; it
//! knows none of them by name.
//!
//! - `text`: a line per event, with an explanation (`explain`);
//! - `json`: an object per line (NDJSON, the README's schema);
//! - `summary`: tables of counts per period and for the run;
//! - `metrics`: Prometheus counters, served over HTTP.

pub mod explain;
pub mod json;
pub mod metrics;
pub mod summary;
pub mod text;

use std::{
    fmt::Write as _,
    io::{self, Write},
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use crate::domain::{Event, Packet};

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

/// UTC, to the microsecond.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// Escapes what a traced process controls (its `comm`, its cgroup's name): no control character reaches the
/// terminal, and no format character that reorders or hides what follows it on the line.
pub fn escape(text: &str) -> String {
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

/// The packet's source (`src`) or destination, with its port when the packet has ports.
pub fn endpoint(packet: &Packet, src: bool) -> String {
    let ip = if src { packet.src } else { packet.dst };
    match packet.ports {
        Some((sport, dport)) => SocketAddr::new(ip, if src { sport } else { dport }).to_string(),
        None => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_from_the_traced_system_are_escaped() {
        assert_eq!(escape("evil\x1b[31m\nname\\"), "evil\\x1b[31m\\x0aname\\\\");
        // A right-to-left override would show `exe.txt` as `txt.exe`; a zero-width space hides in a name.
        assert_eq!(escape("a\u{202e}txt.exe\u{200b}"), "a\\u{202e}txt.exe\\u{200b}");
        assert_eq!(escape("d\u{e9}j\u{e0} vu"), "d\u{e9}j\u{e0} vu");
    }
}
