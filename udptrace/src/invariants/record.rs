//! The promises of `events::decode`, which turns the programs' records, read from a buffer as raw
//! bytes, into events. What a record's fields hold is read by each kind from its record's type
//! (`offset_of!`, `events::Kind::check_record`), field by field, not through the decoder's own reading of
//! the whole record; what every record promises is checked here.

use udptrace_common::{AF_INET, AF_INET6, DnsPrefix, EventHeader, PACKET_MAX, PacketHead, probe};

use crate::{
    domain::{AttachMode, Family},
    events::{
        Event, Layout, decode, layout,
        record::{CHECK_CLOCK, Clock, DecodeError},
    },
};

/// A fixed clock: the same events every run.
const CLOCK: Clock = CHECK_CLOCK;

/// Decodes `input` as one record and panics unless:
/// - decoding is deterministic;
/// - an error is one the bytes call for: short only when they are shorter than the header or than the
///   record their kind and flags call for (that size named, and their own length), an unknown kind, family
///   or probe only when that byte is none of the known ones; and bytes that call for one always get one;
/// - a record of the wrong size is rejected when short, and bytes past its end are ignored: decoding the
///   record alone gives the same (a perf buffer pads its samples);
/// - an event's kind, family, namespace, time and probe are its header's, and its addresses, ports, ICMP
///   type and code, errno, socket inode, interface, stack frames and the fields its flags make known are
///   the bytes at their fields' offsets ([`event_matches`]);
/// - a DNS payload is there exactly when the flags say so, and is what `dns_of` says of the bytes after the
///   record (`invariants::quote`);
/// - a packet is there exactly when the flags say so: the bytes its head says follow it ([`packet_matches`]).
pub fn check(input: &[u8]) {
    let decoded = decode(input, CLOCK);
    assert_eq!(decode(input, CLOCK), decoded, "not deterministic");
    let [kind, probe, family] = [0, 1, 2].map(|at| input.get(at).copied().unwrap_or(0));
    let header = size_of::<EventHeader>();
    let known_family = family_of(family).is_some();
    let layout = layout(kind);
    let known_probe = mode_of(probe).is_some();
    let need = layout.as_ref().map_or(header, |l| need_of(l, input));
    match &decoded {
        Err(DecodeError::Short { kind: said, len, need: wanted }) => {
            assert_eq!(*len, input.len(), "{decoded:?}");
            assert!(input.len() < *wanted, "{decoded:?}");
            assert!(
                *wanted == header
                    || layout
                        .as_ref()
                        .is_some_and(|l| *wanted == l.base || *wanted == record_of(l, input) || *wanted == need),
                "{decoded:?}, need {need}"
            );
            assert!(input.len() < header || *said == kind, "{decoded:?}");
        }
        Err(DecodeError::UnknownFamily(said)) => assert!(!known_family && *said == family, "{decoded:?}"),
        Err(DecodeError::UnknownKind(said)) => assert!(layout.is_none() && *said == kind, "{decoded:?}"),
        Err(DecodeError::UnknownProbe(said)) => assert!(!known_probe && *said == probe, "{decoded:?}"),
        Ok(event) => {
            assert!(input.len() >= need && known_family && known_probe, "{input:?} decoded: {event:?}");
            event_matches(event, input, layout.as_ref().expect("a decoded kind has a layout"));
        }
    }
    if input.len() < need || !known_family || !known_probe || layout.is_none() {
        assert!(decoded.is_err(), "{input:?} decoded: {decoded:?}");
    }
    if input.len() > need && known_family && layout.is_some() {
        assert_eq!(decode(&input[..need], CLOCK), decoded, "the bytes past the record's {need} changed it");
    }
}

/// The whole record's size: with the DNS payload after it when its flags say so, and the packet after that
/// (its head, then as many bytes as the head says, at most `PACKET_MAX`; the head alone while it is cut short).
fn need_of(layout: &Layout, input: &[u8]) -> usize {
    let flags = input.get(layout.flags_at).copied().unwrap_or(0);
    let record = record_of(layout, input);
    if flags & layout.packet_flag == 0 {
        return record;
    }
    let start = record + size_of::<PacketHead>();
    match input.get(record..record + 2) {
        Some(len) if input.len() >= start => start + usize::from(u16::from_ne_bytes([len[0], len[1]])).min(PACKET_MAX),
        _ => start,
    }
}

/// The record's size with its DNS payload, when its flags say it has one: where a packet would start.
fn record_of(layout: &Layout, input: &[u8]) -> usize {
    let dns = input.get(layout.flags_at).is_some_and(|f| f & layout.dns_flag != 0);
    layout.base + if dns { size_of::<DnsPrefix>() } else { 0 }
}

/// The packet an event carries is the bytes after its head, as many as the head says, and its length the
/// head's `total` (never less than what was copied); none unless the flags say so.
fn packet_matches(event: &Event, input: &[u8], layout: &Layout) {
    let packet = event.meta().and_then(|m| m.packet.as_ref());
    let flags = input[layout.flags_at];
    assert_eq!(packet.is_some(), flags & layout.packet_flag != 0, "{packet:?}");
    if let Some(packet) = packet {
        let record = record_of(layout, input);
        let start = record + size_of::<PacketHead>();
        assert_eq!(packet.bytes, input[start..need_of(layout, input)]);
        let total = u32::from_ne_bytes(input[record + 4..record + 8].try_into().expect("4 bytes"));
        assert_eq!(packet.length, total.max(packet.bytes.len() as u32));
    }
}

/// Checks `event`, decoded from `input`, against the bytes at its record's fields, as its kind says them
/// (`events::Kind::check_record`), and the DNS payload after the record, when it has one, as a quote.
fn event_matches(event: &Event, input: &[u8], layout: &Layout) {
    event.kind().check_record(input);
    packet_matches(event, input, layout);
    if event.dns().is_some() {
        super::quote::check(&input[layout.base..layout.base + size_of::<DnsPrefix>()]);
    }
}

fn family_of(byte: u8) -> Option<Family> {
    match u16::from(byte) {
        AF_INET => Some(Family::Ipv4),
        AF_INET6 => Some(Family::Ipv6),
        _ => None,
    }
}

fn mode_of(byte: u8) -> Option<AttachMode> {
    match byte {
        probe::FENTRY => Some(AttachMode::FEntry),
        probe::KPROBE => Some(AttachMode::Kprobe),
        probe::TRACEPOINT => Some(AttachMode::Tracepoint),
        _ => None,
    }
}
