//! What a DNS message says, from however many of its bytes are at hand: a whole datagram, the prefix a
//! record carries (`udptrace_common::DNS_PREFIX`), or the 8 bytes a router quotes in an ICMP error.
//!
//! The header and the first question are read here, field by field, because a message cut short must still
//! give what its bytes reach: `simple_dns::Packet::parse`, which `udptrace check --dns` builds its queries
//! with, takes a whole message or nothing, and refuses a question of a type it does not know
//! (`TYPE65280`). The names of types and response codes come from simple_dns's tables.

use crate::domain::Dns;

/// The header: ID, flags, four counts.
const HEADER: usize = 12;
/// RFC 1035 2.3.4: a label is at most 63 bytes, a name at most 255 in wire form.
const MAX_LABEL: usize = 63;
const MAX_NAME: usize = 255;

/// What `bytes`, the start of a payload of `payload` bytes, say. A field the bytes do not reach is `None`.
/// Bytes that reach far enough and break the rules (a label over 63 bytes, a name over 255, a compression
/// pointer that does not point before the last one, a whole payload that ends inside its header or
/// question) are `malformed`, and then every field is `None`: what they seemed to say is no DNS message's.
/// Never loops: each pointer must point before where the one that led to it pointed.
pub fn parse(bytes: &[u8], payload: usize) -> Dns {
    let dns = fields(bytes, payload);
    if dns.malformed { Dns { bytes: dns.bytes, payload, malformed: true, ..Dns::default() } } else { dns }
}

/// The fields as far as the bytes reach, and whether they broke the rules.
fn fields(bytes: &[u8], payload: usize) -> Dns {
    let whole = bytes.len() >= payload;
    let mut dns = Dns { bytes: bytes.len(), payload, ..Dns::default() };
    if let [a, b, ..] = bytes {
        dns.id = Some(u16::from_be_bytes([*a, *b]));
    }
    let Some(&[flags_hi, flags_lo]) = bytes.get(2..4) else {
        dns.malformed = whole && !bytes.is_empty();
        return dns;
    };
    let flags = u16::from_be_bytes([flags_hi, flags_lo]);
    let response = flags & 0x8000 != 0;
    dns.response = Some(response);
    dns.truncated = Some(flags & 0x0200 != 0);
    if response {
        dns.rcode = Some(rcode_name(flags & 0x000f));
    }
    let questions = bytes.get(4..6).map(|q| u16::from_be_bytes([q[0], q[1]]));
    match questions {
        None => dns.malformed = whole,
        // No question, yet the header itself must be whole.
        Some(0) => dns.malformed = whole && bytes.len() < HEADER,
        Some(_) => match question(bytes) {
            Ok((name, qtype)) => {
                dns.qname = Some(name);
                dns.qtype = Some(type_name(qtype));
            }
            // The bytes end inside the question: a datagram cut short is no fault of its sender's, unless
            // the longest question there is would have fitted.
            Err(Broken::Short) => dns.malformed = whole || bytes.len() >= HEADER + MAX_NAME + 1 + 4,
            Err(Broken::Invalid) => dns.malformed = true,
        },
    }
    dns
}

#[derive(Debug, PartialEq, Eq)]
enum Broken {
    /// The bytes ended first.
    Short,
    /// They break the rules.
    Invalid,
}

/// The first question's name (presentation form) and type.
fn question(bytes: &[u8]) -> Result<(String, u16), Broken> {
    let mut name = String::new();
    let mut wire = 0;
    let mut at = HEADER;
    // Where the question goes on after the name: past its end or its first pointer.
    let mut after = None;
    // Each pointer must point before where the previous one pointed (the first: before itself), so that
    // a chain of them ends.
    let mut floor = usize::MAX;
    loop {
        let len = usize::from(*bytes.get(at).ok_or(Broken::Short)?);
        match len & 0xc0 {
            0x00 if len == 0 => {
                after.get_or_insert(at + 1);
                break;
            }
            0x00 => {
                wire += 1 + len;
                if len > MAX_LABEL || wire + 1 > MAX_NAME {
                    return Err(Broken::Invalid);
                }
                let label = bytes.get(at + 1..at + 1 + len).ok_or(Broken::Short)?;
                if !name.is_empty() {
                    name.push('.');
                }
                escape(label, &mut name);
                at += 1 + len;
            }
            0xc0 => {
                let low = usize::from(*bytes.get(at + 1).ok_or(Broken::Short)?);
                let target = (len & 0x3f) << 8 | low;
                if target >= at.min(floor) {
                    return Err(Broken::Invalid);
                }
                after.get_or_insert(at + 2);
                floor = target;
                at = target;
            }
            // 0x40 and 0x80: extended label types (RFC 6891 retired them), not in a question.
            _ => return Err(Broken::Invalid),
        }
    }
    let at = after.unwrap_or(at);
    let qtype = bytes.get(at..at + 2).ok_or(Broken::Short)?;
    Ok((name, u16::from_be_bytes([qtype[0], qtype[1]])))
}

/// A label in presentation form: printable ASCII as it is, `.` and `\` escaped, anything else `\DDD`.
fn escape(label: &[u8], out: &mut String) {
    for &byte in label {
        match byte {
            b'.' | b'\\' => {
                out.push('\\');
                out.push(char::from(byte));
            }
            0x21..=0x7e => out.push(char::from(byte)),
            _ => out.push_str(&format!("\\{byte:03}")),
        }
    }
}

/// A type's mnemonic (RFC 3597's `TYPEnnn` for one simple_dns does not name).
pub fn type_name(code: u16) -> String {
    match simple_dns::QTYPE::try_from(code) {
        Ok(simple_dns::QTYPE::TYPE(simple_dns::TYPE::Unknown(_))) | Err(_) => format!("TYPE{code}"),
        Ok(simple_dns::QTYPE::TYPE(simple_dns::TYPE::RouteThrough)) => "RT".to_owned(),
        Ok(simple_dns::QTYPE::TYPE(simple_dns::TYPE::NSAP_PTR)) => "NSAP-PTR".to_owned(),
        Ok(simple_dns::QTYPE::TYPE(ty)) => format!("{ty:?}"),
        Ok(other) => format!("{other:?}"),
    }
}

/// A type as a metric label: its mnemonic, or `other` for one without (`TYPEnnn`): the label takes one of a
/// closed set of values, whatever types a sender writes.
pub fn type_label(qtype: &str) -> &str {
    if qtype.strip_prefix("TYPE").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) { "other" } else { qtype }
}

/// A response code as a metric label: its mnemonic, or `other` for one without (`RCODEn`).
pub fn rcode_label(rcode: &str) -> &str {
    if rcode.strip_prefix("RCODE").is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) { "other" } else { rcode }
}

/// A response code's mnemonic (RFC 6895's registry), `RCODEn` for one without.
pub fn rcode_name(code: u16) -> String {
    use simple_dns::RCODE::*;
    let name = match simple_dns::RCODE::from(code) {
        NoError => "NOERROR",
        FormatError => "FORMERR",
        ServerFailure => "SERVFAIL",
        NameError => "NXDOMAIN",
        NotImplemented => "NOTIMP",
        Refused => "REFUSED",
        YXDOMAIN => "YXDOMAIN",
        YXRRSET => "YXRRSET",
        NXRRSET => "NXRRSET",
        NOTAUTH => "NOTAUTH",
        NOTZONE => "NOTZONE",
        BADVERS => "BADVERS",
        Reserved => return format!("RCODE{code}"),
    };
    name.to_owned()
}

/// `udptrace check --dns NAME` and `--dns-name SUFFIX`: a name a DNS query can carry.
pub fn parse_dns_name(text: &str) -> Result<String, String> {
    simple_dns::Name::new(text).map_err(|e| format!("`{text}` is not a DNS name: {e}"))?;
    let labels = text.strip_suffix('.').unwrap_or(text);
    if labels.is_empty() || labels.len() > 253 || labels.split('.').any(|label| label.is_empty() || label.len() > 63) {
        return Err(format!("`{text}` is not a DNS name"));
    }
    Ok(text.to_owned())
}

/// A decoded name as the outputs show it: the root, whose name is empty, as `.`.
pub fn shown(name: &str) -> &str {
    if name.is_empty() { "." } else { name }
}

/// `name` (presentation form) is `suffix` or under it (`--dns-name`): label by label, without regard to ASCII
/// case, a trailing dot on the suffix ignored. A dot escaped inside a label (`foo\.example.com`, one label
/// `foo.example` then `com`) separates nothing: the dot before the suffix must follow an even number of
/// backslashes.
pub fn is_under(name: &str, suffix: &str) -> bool {
    // The decoder writes no trailing dot, and a name's last dot may be an escaped one: only the suffix's goes.
    let suffix = suffix.trim_end_matches('.');
    if suffix.is_empty() {
        return true;
    }
    let Some(start) = name.len().checked_sub(suffix.len()) else { return false };
    if !name.is_char_boundary(start) || !name[start..].eq_ignore_ascii_case(suffix) {
        return false;
    }
    if start == 0 {
        return true;
    }
    let before = &name.as_bytes()[..start];
    let escapes = before[..start - 1].iter().rev().take_while(|&&b| b == b'\\').count();
    before[start - 1] == b'.' && escapes % 2 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of `qtype`, with ID 0x1234, built by simple_dns.
    fn query(name: &str, qtype: simple_dns::TYPE) -> Vec<u8> {
        let mut packet = simple_dns::Packet::new_query(0x1234);
        packet.questions.push(simple_dns::Question::new(
            simple_dns::Name::new(name).unwrap(),
            qtype.into(),
            simple_dns::CLASS::IN.into(),
            false,
        ));
        packet.build_bytes_vec().unwrap()
    }

    #[test]
    fn a_whole_query() {
        let bytes = query("example.com", simple_dns::TYPE::A);
        let dns = parse(&bytes, bytes.len());
        assert_eq!(dns.id, Some(0x1234));
        assert_eq!(dns.response, Some(false));
        assert_eq!(dns.qname.as_deref(), Some("example.com"));
        assert_eq!(dns.qtype.as_deref(), Some("A"));
        assert_eq!(dns.rcode, None);
        assert_eq!(dns.truncated, Some(false));
        assert!(!dns.malformed);
        assert_eq!((dns.bytes, dns.payload), (bytes.len(), bytes.len()));
    }

    #[test]
    fn an_answer_and_its_code() {
        let mut bytes = query("missing.example", simple_dns::TYPE::AAAA);
        // QR, RD, RA, TC; rcode 3.
        bytes[2] = 0x83;
        bytes[3] = 0x83;
        let dns = parse(&bytes, bytes.len());
        assert_eq!(dns.response, Some(true));
        assert_eq!(dns.truncated, Some(true));
        assert_eq!(dns.rcode.as_deref(), Some("NXDOMAIN"));
        assert_eq!(dns.qtype.as_deref(), Some("AAAA"));
    }

    #[test]
    fn an_icmp_error_quoting_8_bytes_gives_the_id_only() {
        let bytes = query("example.com", simple_dns::TYPE::A);
        let dns = parse(&bytes[..8], bytes.len());
        assert_eq!(dns.id, Some(0x1234));
        assert_eq!(dns.response, Some(false));
        assert_eq!((dns.qname, dns.qtype), (None, None));
        assert!(!dns.malformed, "cut short is not malformed");
        let dns = parse(&bytes[..1], bytes.len());
        assert_eq!((dns.id, dns.response, dns.malformed), (None, None, false));
        let dns = parse(&[], 0);
        assert_eq!((dns.id, dns.malformed), (None, false));
    }

    #[test]
    fn a_query_cut_inside_its_name() {
        let bytes = query("a.very.long.name.example.com", simple_dns::TYPE::A);
        // The name and its type are said once the type is in; the class may be missing.
        for end in HEADER..bytes.len() {
            let dns = parse(&bytes[..end], bytes.len());
            let known = end >= bytes.len() - 2;
            assert_eq!(dns.qname.is_some(), known, "{end}");
            assert_eq!(dns.qtype.is_some(), known, "{end}");
            assert!(!dns.malformed, "{end}");
        }
        // The whole datagram, cut inside the question: not DNS.
        assert!(parse(&bytes[..20], 20).malformed);
    }

    /// A whole payload that ends inside the header is no DNS message, even one whose question count, the
    /// last field it reaches, says there is no question.
    #[test]
    fn a_whole_payload_shorter_than_the_header_is_malformed() {
        for len in 1..HEADER {
            let dns = parse(&[0; HEADER][..len], len);
            assert!(dns.malformed, "{len} bytes: {dns:?}");
            assert_eq!(dns.id, None);
            assert!(!parse(&[0; HEADER][..len], HEADER).malformed, "{len} bytes of 12");
        }
        assert!(!parse(&[0; HEADER], HEADER).malformed);
        assert!(!parse(&[], 0).malformed);
    }

    #[test]
    fn unknown_types_and_codes_by_number() {
        assert_eq!(type_name(65280), "TYPE65280");
        assert_eq!(type_name(65), "HTTPS");
        assert_eq!(type_name(33), "SRV");
        assert_eq!(type_name(12), "PTR");
        assert_eq!(type_name(255), "ANY");
        assert_eq!(rcode_name(5), "REFUSED");
        assert_eq!(rcode_name(2), "SERVFAIL");
        assert_eq!(rcode_name(0), "NOERROR");
        assert_eq!(rcode_name(15), "RCODE15");
        let mut bytes = query("example.com", simple_dns::TYPE::A);
        let at = bytes.len() - 4;
        bytes[at..at + 2].copy_from_slice(&65280u16.to_be_bytes());
        assert_eq!(parse(&bytes, bytes.len()).qtype.as_deref(), Some("TYPE65280"));
    }

    #[test]
    fn bytes_outside_printable_ascii_are_escaped() {
        let mut bytes = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&[4, b'a', b'.', 0xff, b' ', 3, b'c', b'\\', b'm', 0, 0, 1, 0, 1]);
        let dns = parse(&bytes, bytes.len());
        assert_eq!(dns.qname.as_deref(), Some("a\\.\\255\\032.c\\\\m"));
    }

    #[test]
    fn compression_pointers_back_are_followed_and_loops_refused() {
        // A pointer into bytes before the question (the header's last counts, here "com"), as a parser meets
        // one in an answer's name.
        let mut bytes = vec![0, 1, 0x81, 0x80, 0x00, 0x01, 3, b'c', b'o', b'm', 0, 0];
        bytes.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 6, 0, 1, 0, 1]);
        let dns = parse(&bytes, bytes.len());
        assert_eq!((dns.qname.as_deref(), dns.qtype.as_deref()), (Some("www.com"), Some("A")));
        assert!(!dns.malformed);
        // "www" then a pointer to its own start: each jump goes back, yet it would never end.
        let head = [0u8, 1, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        let mut cycle = head.to_vec();
        cycle.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 12, 0, 1, 0, 1]);
        // A pointer to itself.
        let mut itself = head.to_vec();
        itself.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        for bytes in [cycle, itself] {
            let dns = parse(&bytes, bytes.len());
            assert_eq!(dns.qname, None, "{bytes:?}");
            assert!(dns.malformed, "{bytes:?}");
        }
    }

    #[test]
    fn malformed_names_give_no_question_and_never_hang() {
        let head = [0u8, 1, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        // A label of 64 bytes.
        let mut long_label = head.to_vec();
        long_label.push(64);
        long_label.extend_from_slice(&[b'a'; 64]);
        long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
        // A name of 5 labels of 63 bytes: 320 bytes in wire form.
        let mut long_name = head.to_vec();
        for _ in 0..5 {
            long_name.push(63);
            long_name.extend_from_slice(&[b'b'; 63]);
        }
        long_name.extend_from_slice(&[0, 0, 1, 0, 1]);
        // Two pointers into each other: the second points forward.
        let mut pair = head.to_vec();
        pair.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
        // An extended label type.
        let mut extended = head.to_vec();
        extended.extend_from_slice(&[0x41, 0, 0, 1, 0, 1]);
        for bytes in [long_label, long_name, pair, extended] {
            let dns = parse(&bytes, bytes.len());
            assert_eq!(dns.qname, None, "{bytes:?}");
            assert!(dns.malformed, "{bytes:?}");
            assert_eq!((dns.id, dns.response, dns.truncated), (None, None, None), "{bytes:?}");
        }
        // Every prefix of random bytes, whole: no panic.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (state % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state & 0xff) as u8
                })
                .collect();
            let _ = parse(&bytes, bytes.len());
            let _ = parse(&bytes, bytes.len() + 10);
        }
    }

    #[test]
    fn names_under_a_suffix() {
        assert!(is_under("www.example.com", "example.com"));
        assert!(is_under("example.com", "example.com."));
        assert!(is_under("WWW.Example.COM", "example.com"));
        assert!(!is_under("badexample.com", "example.com"));
        assert!(!is_under("com", "example.com"));
        assert!(is_under("anything", "."));
        // `foo\.example.com` is the label `foo.example` under `com`, not a name under `example.com`.
        assert!(!is_under(r"foo\.example.com", "example.com"));
        assert!(is_under(r"foo\.example.com", "com"));
        // An escaped backslash ends its label: the dot after it separates.
        assert!(is_under(r"foo\\.example.com", "example.com"));
        assert!(!is_under(r"foo\\\.example.com", "example.com"));
        assert!(!is_under("caf\u{e9}.com", "\u{e9}.com"), "no panic inside a character");
    }
}
