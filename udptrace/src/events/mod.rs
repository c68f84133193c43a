//! The events udptrace reports, a file per kind. Each holds what udptrace knows of its kind: its type, its
//! JSON object, its text line and sentence, its summary row, its metric, and what the filter options select
//! it by, behind [`Kind`], which the outputs and the filter call. [`Event`] is the closed set of kinds,
//! matched in one place ([`Event::kind`]): a new kind is a file, a variant and an arm there, and the
//! compiler names whatever of [`Kind`] it lacks. What the kinds share is written once, in `parts`: the
//! owner, the packet, the DNS question, the connection's translation, and how each is shown.

mod icmp_sent;
mod icmp_suppressed;
mod lost;
mod parts;
pub mod record;
#[cfg(test)]
pub mod samples;
mod socket_error;
mod udp_dropped;

use std::{net::IpAddr, time::SystemTime};

pub use icmp_sent::IcmpSent;
pub use icmp_suppressed::IcmpSuppressed;
pub use lost::Lost;
pub use socket_error::SocketError;
pub use udp_dropped::UdpDropped;
use udptrace_common::{EventHeader, kind};

use self::record::{Clock, DecodeError, family_of, read_record};
use crate::domain::{Dns, Meta, OwnerInfo, Pod, Translation};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    SocketError(SocketError),
    IcmpSent(IcmpSent),
    IcmpSuppressed(IcmpSuppressed),
    UdpDropped(UdpDropped),
    Lost(Lost),
}

impl Event {
    /// The event's kind, which every stage asks what it needs of it: the one place the kinds are matched.
    pub fn kind(&self) -> &dyn Kind {
        match self {
            Event::SocketError(e) => e,
            Event::IcmpSent(e) => e,
            Event::IcmpSuppressed(e) => e,
            Event::UdpDropped(e) => e,
            Event::Lost(e) => e,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    pub fn dns(&self) -> Option<&Dns> {
        self.kind().dns()
    }

    pub fn count(&self) -> u64 {
        self.kind().count()
    }

    /// The facts it shares with every kind; `None` for `lost`, which is about no event seen.
    pub fn meta(&self) -> Option<&Meta> {
        match self {
            Event::SocketError(e) => Some(&e.meta),
            Event::IcmpSent(e) => Some(&e.meta),
            Event::IcmpSuppressed(e) => Some(&e.meta),
            Event::UdpDropped(e) => Some(&e.meta),
            Event::Lost(_) => None,
        }
    }

    pub fn meta_mut(&mut self) -> Option<&mut Meta> {
        match self {
            Event::SocketError(e) => Some(&mut e.meta),
            Event::IcmpSent(e) => Some(&mut e.meta),
            Event::IcmpSuppressed(e) => Some(&mut e.meta),
            Event::UdpDropped(e) => Some(&mut e.meta),
            Event::Lost(_) => None,
        }
    }
}

/// A record from the programs, as the event of its kind: each kind decodes its own.
pub fn decode(bytes: &[u8], clock: Clock) -> Result<Event, DecodeError> {
    let header: EventHeader = read_record(bytes, bytes.first().copied().unwrap_or(0))?;
    let family = family_of(header.family).ok_or(DecodeError::UnknownFamily(header.family))?;
    let mut event = match header.kind {
        kind::SOCKET_ERROR => Event::SocketError(SocketError::decode(bytes, family, clock)?),
        kind::ICMP_SENT => Event::IcmpSent(IcmpSent::decode(bytes, family, clock)?.0),
        kind::ICMP_SUPPRESSED => Event::IcmpSuppressed(IcmpSuppressed::decode(bytes, family, clock)?),
        kind::UDP_DROPPED => Event::UdpDropped(UdpDropped::decode(bytes, family, clock)?),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if let (Some(layout), Some(meta)) = (layout(header.kind), event.meta_mut()) {
        meta.packet = record::packet_of(bytes, &layout, header.kind)?;
    }
    Ok(event)
}

/// What the bytes of a record of `kind` call for: its size without the DNS payload, where its flags byte is,
/// and the flags that say a DNS payload and a packet follow; `None` for a kind no record has. For the decoder's promises
/// (`invariants::record`), beside the decoding it describes.
pub fn layout(kind: u8) -> Option<Layout> {
    match kind {
        kind::SOCKET_ERROR => Some(socket_error::LAYOUT),
        kind::ICMP_SENT | kind::ICMP_SUPPRESSED => Some(icmp_sent::LAYOUT),
        kind::UDP_DROPPED => Some(udp_dropped::LAYOUT),
        _ => None,
    }
}

/// Where a record's parts are ([`layout`]).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub base: usize,
    pub flags_at: usize,
    pub dns_flag: u8,
    pub packet_flag: u8,
}

/// The counters of `--metrics` the kinds count in, in the order they are registered.
pub const METRICS: [&Metric; 5] =
    [&socket_error::METRIC, &icmp_sent::METRIC, &icmp_suppressed::METRIC, &udp_dropped::METRIC, &lost::METRIC];

/// What the outputs and the filter ask of an event, whatever its kind.
pub trait Kind {
    /// The name, the same in every output: JSON's `event`, the text's first column (where it has no errno),
    /// the summary's and the metrics' `event` label.
    fn name(&self) -> &'static str;

    /// How many errors or drops it stands for (`lost` stands for none that were seen).
    fn count(&self) -> u64;

    /// What its datagram said as DNS, for one on a DNS port whose payload it carries.
    fn dns(&self) -> Option<&Dns>;

    /// Its datagram's connection, when conntrack translated it: what the summary counts it by besides its
    /// row, and what `udptrace_translated_total` counts.
    fn conntrack(&self) -> Option<&Translation>;

    /// The Kubernetes pod it happened in: what `--k8s-namespace` and `--pod` select, the summary's `POD`
    /// column, the pod labels of `--metrics-pods`.
    fn pod(&self) -> Option<&Pod>;

    /// What the filter options select it by; `None`: every filter passes it.
    fn facts(&self) -> Option<Facts<'_>>;

    /// Its JSON object (docs/events.md): `event`, `time`, `netns` and `probe`, then its own fields.
    fn json(&self) -> serde_json::Value;

    /// Its text line.
    fn line(&self) -> Line;

    /// Its row in a summary table; `None` for one counted apart.
    fn row(&self) -> Option<Row>;

    /// Its count in the metrics.
    fn sample(&self) -> Sample;

    /// Panics unless it says what `record`, the bytes it was decoded from, hold at its fields' offsets: its
    /// decoding's promise, which the property tests and the fuzz targets check (`invariants::record`).
    fn check_record(&self, record: &[u8]);
}

/// What the filter options select an event by.
pub struct Facts<'a> {
    pub netns: u32,
    /// The process that owns its socket (`-p`, `--comm`); `None` for no owner, or none known.
    pub owner: Option<&'a OwnerInfo>,
    pub ports: Vec<u16>,
    pub addrs: Vec<IpAddr>,
    /// The errno it gives or would give an application; `None` for none.
    pub errno: Option<i32>,
    pub dns: Option<&'a Dns>,
    /// Its datagram's translated connection: `--addr` and `--port` match either tuple too.
    pub conntrack: Option<&'a Translation>,
}

/// What an event's text line says at a glance, which the text output colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// An error the application got.
    Delivered,
    /// An error the kernel dropped, or that found no socket; a dropped datagram.
    Ignored,
    Sent,
    Suppressed,
    Lost,
}

/// An event's text line: `what` and `why` (in `tone`), the flow, the other columns in order, the network
/// namespace, and the sentence that says what it means.
pub struct Line {
    pub time: SystemTime,
    pub tone: Tone,
    /// The errno, or the event's name.
    pub what: String,
    /// The verdict, cause, scope or reason.
    pub why: String,
    pub flow: Option<String>,
    pub details: Vec<String>,
    pub netns: Option<u32>,
    pub sentence: String,
}

/// What an event's summary row is keyed by, beside its name and DNS question.
pub struct Row {
    pub errno: Option<&'static str>,
    /// The verdict of a `socket_error`, the cause of an `icmp_sent`, the scope of an `icmp_suppressed`, the
    /// outcome of a `udp_dropped`.
    pub outcome: String,
    pub address: Option<String>,
    /// The socket owner's pid and process name (`None` where not read).
    pub owner: Option<(u32, Option<String>)>,
}

/// A counter of `--metrics`: `udptrace_NAME_total`.
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    /// Counted by labels; `false` for a counter of its own (`lost_events`).
    pub labelled: bool,
}

/// An event's count in the metrics.
pub struct Sample {
    pub metric: &'static Metric,
    /// How much it adds: the events it stands for (for `lost`, the events lost).
    pub count: u64,
    /// Its labels, each of a closed set.
    pub labels: Vec<(&'static str, String)>,
    /// The address it is about, a label only with `--metrics-addresses`; `None` for an event about none.
    pub address: Option<(&'static str, String)>,
    /// Its `outcome` in `udptrace_dns_errors_total`, for an event about a DNS datagram.
    pub outcome: String,
}
