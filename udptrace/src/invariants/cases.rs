//! The invariants fed a fixed set of generated cases on every test run: seconds, the same cases every time.
//!
//! proptest, rather than a loop over a seeded generator of random bytes: its strategies compose the
//! generators that reach deep (a message built, then mutated: bits flipped, bytes set to a label length
//! over 63 or a pointer's first byte, cut, spliced), its runner takes a fixed seed and a number of cases,
//! and a failure is shrunk to a small case and printed whole, with the seed, to become a unit test.

use std::{fmt::Debug, mem::offset_of};

use proptest::{
    collection::vec,
    prelude::*,
    sample::Index,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use udptrace_common::{
    AF_INET, AF_INET6, DNS_PREFIX, DnsPrefix, IcmpSent as RawIcmpSent, SocketError as RawSocketError,
    UdpDropped as RawUdpDropped, icmp_sent_flags, kind, probe, socket_error_flags, udp_dropped_flags,
};

use crate::{dns as parser, invariants};

/// Every run draws the same cases from it.
const SEED: [u8; 32] = *b"udptrace parsers of untrusted by";

/// Runs `check` on `cases` values of `strategy`; a failure names the seed and the smallest failing value.
fn run<T: Debug>(name: &str, cases: u32, strategy: impl Strategy<Value = T>, check: impl Fn(&T)) {
    let config = Config { cases, failure_persistence: None, rng_algorithm: RngAlgorithm::ChaCha, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    if let Err(failure) = runner.run(&strategy, |value| {
        check(&value);
        Ok(())
    }) {
        panic!("{name}: {failure} (seed {SEED:?}, {cases} cases)");
    }
}

/// A piece of a name in wire form, as a message may hold one, well formed or not.
#[derive(Clone, Debug)]
enum Piece {
    Label(Vec<u8>),
    /// A compression pointer to this offset (14 bits).
    Pointer(u16),
    /// A length byte of an extended label type (0x40, 0x80) or over 63.
    Odd(u8),
}

fn label() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => vec(b'a'..=b'z', 1..=12),
        2 => vec(any::<u8>(), 1..=63),
        1 => Just(vec![b'x'; 63]),
    ]
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        6 => label().prop_map(Piece::Label),
        2 => prop_oneof![0..40u16, any::<u16>()].prop_map(|at| Piece::Pointer(at & 0x3fff)),
        1 => prop_oneof![Just(0x40u8), Just(0x80), 64..=0xbfu8].prop_map(Piece::Odd),
    ]
}

/// A message's header: any ID and flags, one question mostly, counts of other sections at random.
fn header() -> impl Strategy<Value = [u8; 12]> {
    (any::<[u8; 12]>(), prop_oneof![4 => Just(1u16), 1 => any::<u16>()]).prop_map(|(mut header, questions)| {
        header[4..6].copy_from_slice(&questions.to_be_bytes());
        header
    })
}

/// A message: a header, a name of `pieces` ended by the root (unless a pointer ends it), a type and class,
/// and what follows (answers, or bytes).
fn message(pieces: impl Strategy<Value = Vec<Piece>>) -> impl Strategy<Value = Vec<u8>> {
    (header(), pieces, any::<u16>(), vec(any::<u8>(), 0..24)).prop_map(|(header, pieces, qtype, rest)| {
        let mut bytes = header.to_vec();
        for piece in &pieces {
            match piece {
                Piece::Label(label) => {
                    bytes.push(u8::try_from(label.len()).expect("at most 63"));
                    bytes.extend_from_slice(label);
                }
                Piece::Pointer(at) => bytes.extend_from_slice(&(0xc000 | at).to_be_bytes()),
                Piece::Odd(byte) => bytes.push(*byte),
            }
        }
        if !matches!(pieces.last(), Some(Piece::Pointer(_))) {
            bytes.push(0);
        }
        bytes.extend_from_slice(&qtype.to_be_bytes());
        bytes.extend_from_slice(&[0, 1]);
        bytes.extend_from_slice(&rest);
        bytes
    })
}

/// A name of labels only, `wire` bytes in wire form (with the root): 63-byte labels, then what is left.
fn name_of_length(wire: usize) -> Vec<Piece> {
    let mut left = wire - 1;
    let mut pieces = Vec::new();
    while left > 0 {
        let len = (left - 1).min(63);
        pieces.push(Piece::Label(vec![b'n'; len.max(1)]));
        left -= 1 + len.max(1);
    }
    pieces
}

/// A change to a message: the ways a sender or the wire breaks one.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(Index, u8),
    /// A byte that means something to the parser: a root, a label length at or over 63, a pointer's
    /// first byte, an extended label type.
    Set(Index, u8),
    Cut(Index),
    Insert(Index, u8),
    Remove(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let meaningful = prop_oneof![Just(0u8), Just(63), Just(64), Just(0xc0), Just(0x40), Just(0xff), any::<u8>()];
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Mutation::Flip(at, bit)),
        (any::<Index>(), meaningful.clone()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        any::<Index>().prop_map(Mutation::Cut),
        (any::<Index>(), meaningful).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<Index>().prop_map(Mutation::Remove),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match mutation {
            Mutation::Flip(at, bit) => bytes[at.index(len)] ^= 1 << bit,
            Mutation::Set(at, byte) => bytes[at.index(len)] = *byte,
            Mutation::Cut(at) => bytes.truncate(at.index(len)),
            Mutation::Insert(at, byte) => bytes.insert(at.index(len), *byte),
            Mutation::Remove(at) => drop(bytes.remove(at.index(len))),
        }
    }
    bytes
}

/// DNS payloads of every kind: random bytes, messages built (well formed names, names of any pieces, names
/// at and just over 255 bytes), each mutated a few times or not at all.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let source = prop_oneof![
        1 => vec(any::<u8>(), 0..300),
        3 => message(vec(label().prop_map(Piece::Label), 0..6)),
        3 => message(vec(piece(), 0..6)),
        1 => message(prop_oneof![Just(name_of_length(255)), Just(name_of_length(256))]),
    ];
    (source, vec(mutation(), 0..4)).prop_map(|(bytes, mutations)| mutate(bytes, &mutations))
}

#[test]
fn dns_payloads_keep_the_parsers_promises() {
    run("dns", 6_000, payload(), |bytes| invariants::dns::check(bytes));
}

/// Built from labels, the name and type read back as they were written, whole or with the rest of the
/// message after them; at 255 bytes in wire form a name is whole, at 256 malformed.
#[test]
fn well_formed_questions_read_back() {
    let built = (header(), vec(label(), 0..5), any::<u16>(), vec(any::<u8>(), 0..24));
    run("questions", 2_000, built, |(header, labels, qtype, rest)| {
        let mut bytes = header.to_vec();
        bytes[4..6].copy_from_slice(&1u16.to_be_bytes());
        for label in labels {
            bytes.push(u8::try_from(label.len()).unwrap());
            bytes.extend_from_slice(label);
        }
        bytes.push(0);
        bytes.extend_from_slice(&qtype.to_be_bytes());
        bytes.extend_from_slice(&[0, 1]);
        bytes.extend_from_slice(rest);
        let dns = invariants::dns::fields(&bytes, bytes.len());
        let wire = labels.iter().map(|l| 1 + l.len()).sum::<usize>() + 1;
        if wire > 255 {
            assert!(dns.malformed, "{wire} bytes: {dns:?}");
            return;
        }
        let name: Vec<String> = labels.iter().map(|l| presented(l)).collect();
        assert_eq!(dns.qname, Some(name.join(".")));
        assert_eq!(dns.qtype, Some(parser::type_name(*qtype)));
        assert!(!dns.malformed);
    });
    for (wire, malformed) in [(255, false), (256, true)] {
        let mut bytes = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for piece in name_of_length(wire) {
            let Piece::Label(label) = piece else { unreachable!() };
            bytes.push(u8::try_from(label.len()).unwrap());
            bytes.extend_from_slice(&label);
        }
        bytes.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(bytes.len(), 12 + wire + 4);
        assert_eq!(invariants::dns::fields(&bytes, bytes.len()).malformed, malformed, "{wire}");
    }
}

/// A label's presentation form, from the RFC's rules rather than the parser's code.
fn presented(label: &[u8]) -> String {
    label
        .iter()
        .map(|&b| match b {
            b'.' | b'\\' => format!("\\{}", char::from(b)),
            b if b.is_ascii_graphic() => char::from(b).to_string(),
            _ => format!("\\{b:03}"),
        })
        .collect()
}

/// A record's DNS payload as `invariants::quote` reads it: `len` and `total` that tell the truth or lie
/// (past the buffer, past the payload, short of it, 8 bytes quoted of a long one), then the bytes.
fn quote() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![0..=12u16, 0..=DNS_PREFIX as u16, any::<u16>(), Just(u16::MAX)];
    let total = prop_oneof![Just(None), (0..600u16).prop_map(Some), any::<u16>().prop_map(Some)];
    (len, total, payload()).prop_map(|(len, total, bytes)| {
        // `None`: as the programs copy it, the payload's own length.
        let (len, total) = match total {
            None => {
                let total = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
                (len.min(total).min(DNS_PREFIX as u16), total)
            }
            Some(total) => (len, total),
        };
        let mut input = Vec::with_capacity(size_of::<DnsPrefix>());
        input.extend_from_slice(&len.to_ne_bytes());
        input.extend_from_slice(&total.to_ne_bytes());
        input.extend_from_slice(&[0; 4]);
        input.extend_from_slice(&bytes);
        input
    })
}

#[test]
fn quoted_dns_payloads_keep_the_parsers_promises() {
    run("quote", 4_000, quote(), |input| invariants::quote::check(input));
}

/// A record: a header of a known kind, family and probe mostly, random fields and flags, a DNS payload
/// after it (used when the flags say so), cut at, before or past the size its kind and flags call for.
fn record() -> impl Strategy<Value = Vec<u8>> {
    let known = |values: Vec<u8>| prop_oneof![4 => proptest::sample::select(values), 1 => any::<u8>()];
    let kinds = known(vec![kind::SOCKET_ERROR, kind::ICMP_SENT, kind::ICMP_SUPPRESSED, kind::UDP_DROPPED]);
    let families = known(vec![AF_INET as u8, AF_INET6 as u8]);
    let probes = known(vec![probe::FENTRY, probe::KPROBE, probe::TRACEPOINT]);
    let largest =
        [size_of::<RawSocketError>(), size_of::<RawIcmpSent>(), size_of::<RawUdpDropped>()].into_iter().max().unwrap();
    let length = prop_oneof![
        Just(0isize),
        Just(-1),
        (1..=8isize),
        (-16..0isize),
        any::<Index>().prop_map(|i| -(i.index(64) as isize))
    ];
    (kinds, probes, families, vec(any::<u8>(), largest), quote(), length, any::<bool>()).prop_map(
        move |(kind, probe, family, mut body, dns, length, flagged)| {
            body[..3].copy_from_slice(&[kind, probe, family]);
            let (base, flags_at, flag) = match kind {
                kind::SOCKET_ERROR => {
                    (size_of::<RawSocketError>(), offset_of!(RawSocketError, flags), socket_error_flags::DNS)
                }
                kind::UDP_DROPPED => {
                    (size_of::<RawUdpDropped>(), offset_of!(RawUdpDropped, flags), udp_dropped_flags::DNS)
                }
                _ => (size_of::<RawIcmpSent>(), offset_of!(RawIcmpSent, flags), icmp_sent_flags::DNS),
            };
            body.truncate(base);
            if flagged {
                body[flags_at] |= flag;
            } else {
                body[flags_at] &= !flag;
            }
            // The payload follows either way: unflagged, it is bytes past the record, to be ignored.
            body.extend_from_slice(&dns[..dns.len().min(size_of::<DnsPrefix>())]);
            body.resize(base + size_of::<DnsPrefix>(), 0);
            let need = if flagged { base + size_of::<DnsPrefix>() } else { base };
            body.resize(need.saturating_add_signed(length), 0xa5);
            body
        },
    )
}

#[test]
fn records_keep_the_decoders_promises() {
    run("record", 3_000, record(), |bytes| invariants::record::check(bytes));
    // Every length of a few bytes, and random bytes of any length.
    run("record bytes", 2_000, vec(any::<u8>(), 0..700), |bytes| invariants::record::check(bytes));
}
