//! The promises of `dns::parse`, which reads the header and first question of a DNS message from however many
//! of its bytes are at hand: a sender chooses every byte, a router how many of them an ICMP error quotes.

use udptrace_common::DNS_PREFIX;

use crate::{dns, domain::Dns};

/// RFC 1035 2.3.4: a name is at most 255 bytes in wire form, a label at most 63.
const MAX_NAME: usize = 255;
const MAX_LABEL: usize = 63;
/// The header: ID, flags, four counts.
const HEADER: usize = 12;

/// Parses `input` as a whole payload, as the start of a longer one, and some of its prefixes, and panics
/// unless:
/// - each parse keeps to [`fields`]' promises;
/// - the start of a longer payload is malformed only if the whole is, and when the whole is not, says the
///   same: a payload that goes on past the bytes can only leave a field unsaid (the whole one is also
///   malformed when the bytes end inside its header or question);
/// - a prefix never says more than the bytes it is a prefix of, nor anything else: each field is unsaid
///   or the same, and it is malformed only if they are (bytes that break a rule break it in any longer run);
/// - [`DNS_PREFIX`] bytes decide: the programs copy no more, so those say all that the whole would.
pub fn check(input: &[u8]) {
    let whole = fields(input, input.len());
    // A payload a little longer than the bytes, by how much the first byte says.
    let longer = input.len() + 1 + usize::from(input.first().copied().unwrap_or(0));
    let start = fields(input, longer);
    if start.malformed {
        assert!(whole.malformed, "the start of a longer payload is malformed, the whole is not: {whole:?}");
    }
    if !whole.malformed {
        assert_eq!(Dns { payload: longer, ..whole.clone() }, start, "the whole and the start of a longer payload");
    }
    for cut in cuts(input.len()) {
        let prefix = fields(&input[..cut], longer);
        if start.malformed {
            continue;
        }
        assert!(!prefix.malformed, "{cut} bytes of it are malformed, all {} are not: {prefix:?}", input.len());
        let said = |part: Option<String>, all: &Option<String>| part.is_none() || part == *all;
        assert!(prefix.id.is_none() || prefix.id == start.id, "{cut} bytes: {prefix:?}, all: {start:?}");
        assert!(prefix.response.is_none() || prefix.response == start.response, "{cut} bytes: {prefix:?}");
        assert!(prefix.truncated.is_none() || prefix.truncated == start.truncated, "{cut} bytes: {prefix:?}");
        assert!(said(prefix.rcode.clone(), &start.rcode), "{cut} bytes: {prefix:?}, all: {start:?}");
        assert!(said(prefix.qname.clone(), &start.qname), "{cut} bytes: {prefix:?}, all: {start:?}");
        assert!(said(prefix.qtype.clone(), &start.qtype), "{cut} bytes: {prefix:?}, all: {start:?}");
    }
    if input.len() >= DNS_PREFIX {
        let copied = fields(&input[..DNS_PREFIX], longer);
        assert_eq!(Dns { bytes: input.len(), ..copied }, start, "the first {DNS_PREFIX} bytes do not decide");
    }
}

/// Where to cut `len` bytes: everywhere in the header and just past it, then a spread and the last few, so
/// that a long input costs tens of parses, not hundreds.
fn cuts(len: usize) -> impl Iterator<Item = usize> {
    let head = 0..len.min(HEADER + 8);
    let spread = (HEADER + 8..len).step_by(7);
    let tail = len.saturating_sub(3).max(HEADER + 8)..len;
    head.chain(spread).chain(tail)
}

/// `dns::parse(bytes, payload)`, after checking that it:
/// - is deterministic, and says `bytes.len()` and `payload` as the bytes at hand and the payload's length;
/// - when malformed, says nothing else: every field `None`;
/// - says the ID, QR, TC and response code bits as the header's bytes hold them, each once its bytes are
///   there (the response code for an answer only);
/// - says a question's name and type together, only with a question counted and 15 bytes at least (the
///   header, the root, the type);
/// - says a name in presentation form that holds only printable ASCII (no space, no control byte, no
///   terminal escape), that reads back unambiguously into labels of 1 to 63 bytes, at most 255 bytes in wire
///   form, whose escaped form is the name again;
/// - says a type as a mnemonic or `TYPEn`: letters, digits and `-`;
/// - when the bytes end inside the header of a longer payload (the 8 bytes a router must quote), is never
///   malformed; when a whole payload of 1 to 11 bytes ends there, always is (an empty one says nothing).
pub fn fields(bytes: &[u8], payload: usize) -> Dns {
    let dns = dns::parse(bytes, payload);
    assert_eq!(dns::parse(bytes, payload), dns, "not deterministic");
    assert_eq!((dns.bytes, dns.payload), (bytes.len(), payload), "{bytes:?}");
    let whole = bytes.len() >= payload;
    if bytes.len() < HEADER && !whole {
        assert!(!dns.malformed, "a payload cut inside its header is malformed: {bytes:?}");
    }
    if whole && (1..HEADER).contains(&bytes.len()) {
        assert!(dns.malformed, "a whole payload of {} bytes is not malformed: {dns:?}", bytes.len());
    }
    if dns.malformed {
        let unsaid = Dns { bytes: dns.bytes, payload: dns.payload, malformed: true, ..Dns::default() };
        assert_eq!(dns, unsaid, "malformed, yet says something: {bytes:?}");
        return dns;
    }
    let flags = bytes.get(2..4).map(|f| u16::from_be_bytes([f[0], f[1]]));
    assert_eq!(dns.id, bytes.get(0..2).map(|i| u16::from_be_bytes([i[0], i[1]])), "{bytes:?}");
    assert_eq!(dns.response, flags.map(|f| f & 0x8000 != 0), "{bytes:?}");
    assert_eq!(dns.truncated, flags.map(|f| f & 0x0200 != 0), "{bytes:?}");
    let rcode = flags.filter(|f| f & 0x8000 != 0).map(|f| dns::rcode_name(f & 0x000f));
    assert_eq!(dns.rcode, rcode, "{bytes:?}");
    assert_eq!(dns.qname.is_some(), dns.qtype.is_some(), "a name without a type, or a type without: {dns:?}");
    if let Some(name) = &dns.qname {
        let questions = bytes.get(4..6).map(|q| u16::from_be_bytes([q[0], q[1]]));
        assert!(questions.is_some_and(|q| q > 0), "a question where none is counted: {bytes:?}");
        assert!(bytes.len() >= HEADER + 1 + 2, "a question in {} bytes", bytes.len());
        name_is_presentable(name);
    }
    if let Some(qtype) = &dns.qtype {
        assert!(!qtype.is_empty() && qtype.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "type {qtype:?}");
    }
    dns
}

/// A name in presentation form: printable ASCII only, labels that read back unambiguously and keep to the
/// limits, and escaped the one way `dns.rs` escapes.
fn name_is_presentable(name: &str) {
    assert!(name.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{name:?} holds more than printable ASCII");
    let labels = labels(name);
    let wire: usize = labels.iter().map(|l| 1 + l.len()).sum::<usize>() + 1;
    assert!(wire <= MAX_NAME, "{name:?} is {wire} bytes in wire form");
    assert!(labels.iter().all(|l| (1..=MAX_LABEL).contains(&l.len())), "{name:?} has a label of a wrong length");
    let again: Vec<String> = labels.iter().map(|l| escaped(l)).collect();
    assert_eq!(again.join("."), name, "{name:?} does not read back");
}

/// The labels of a name in presentation form (the root, the empty name, has none).
fn labels(name: &str) -> Vec<Vec<u8>> {
    if name.is_empty() {
        return Vec::new();
    }
    let mut labels = vec![Vec::new()];
    let mut bytes = name.bytes();
    while let Some(byte) = bytes.next() {
        match byte {
            b'.' => labels.push(Vec::new()),
            b'\\' => {
                let next = bytes.next().unwrap_or_else(|| panic!("{name:?} ends in an escape"));
                let byte = if next.is_ascii_digit() {
                    let digits = [next, bytes.next().unwrap_or(b'x'), bytes.next().unwrap_or(b'x')];
                    let text = std::str::from_utf8(&digits).unwrap_or_default();
                    text.parse::<u8>().unwrap_or_else(|_| panic!("{name:?}: escape \\{text:?}"))
                } else {
                    next
                };
                labels.last_mut().expect("one label at least").push(byte);
            }
            _ => labels.last_mut().expect("one label at least").push(byte),
        }
    }
    labels
}

/// A label as `dns.rs` escapes it: written here again, so that a change there is a change seen here.
fn escaped(label: &[u8]) -> String {
    label
        .iter()
        .map(|&b| match b {
            b'.' | b'\\' => format!("\\{}", char::from(b)),
            0x21..=0x7e => char::from(b).to_string(),
            _ => format!("\\{b:03}"),
        })
        .collect()
}
