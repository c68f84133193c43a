//! The promises of `events::record::dns_of`, which reads the DNS payload a record carries. For an ICMP
//! error, that is the quote: the router chose how much of the datagram to quote (`len`, as copied), and
//! the quoted UDP header's length (`total`) is whatever the datagram, or the router, wrote there.

use udptrace_common::{DNS_PREFIX, DnsPrefix};

use crate::events::record::dns_of;

/// The bytes of a [`DnsPrefix`] before its payload: `len`, `total`, padding.
const FIELDS: usize = size_of::<DnsPrefix>() - DNS_PREFIX;

/// Reads `input` as a record's DNS payload (`len` and `total` in its first four bytes, host order, then the
/// bytes, cut or padded with zeros to [`DNS_PREFIX`]) and panics unless what it says:
/// - is what `dns::parse` says of the bytes at hand, and keeps to its promises (`invariants::dns::fields`);
/// - was read from no more bytes than the buffer holds, nor than `total`, whatever `len` claims: a `len`
///   past the buffer reads as the buffer, a `len` past `total` as `total`;
/// - says the payload's length as `total`, and never more bytes at hand than that;
/// - when the quote ends inside the header of a longer payload (a router quotes 8 bytes of it at least),
///   is not malformed: the sender wrote nothing wrong in a quote that short.
pub fn check(input: &[u8]) {
    let prefix = prefix_of(input);
    let dns = dns_of(&prefix);
    let at_hand = usize::from(prefix.len).min(DNS_PREFIX).min(usize::from(prefix.total));
    assert_eq!((dns.bytes, dns.payload), (at_hand, usize::from(prefix.total)), "len {}", prefix.len);
    assert!(dns.bytes <= dns.payload, "{dns:?}");
    let said = super::dns::fields(&prefix.bytes[..at_hand], usize::from(prefix.total));
    assert_eq!(dns, said, "len {}, total {}", prefix.len, prefix.total);
    let told = DnsPrefix { len: u16::try_from(at_hand).expect("at most DNS_PREFIX"), ..prefix };
    assert_eq!(dns_of(&told), dns, "a len of {} over what is at hand", prefix.len);
    if dns.bytes < 12 && dns.bytes < dns.payload {
        assert!(!dns.malformed, "a quote of {} bytes of {} is malformed", dns.bytes, dns.payload);
    }
}

/// `input` as a [`DnsPrefix`].
pub fn prefix_of(input: &[u8]) -> DnsPrefix {
    let field = |at: usize| u16::from_ne_bytes([byte(input, at), byte(input, at + 1)]);
    let mut prefix = DnsPrefix { len: field(0), total: field(2), _pad0: [0; 4], bytes: [0; DNS_PREFIX] };
    let body = input.get(FIELDS..).unwrap_or_default();
    let body = &body[..body.len().min(DNS_PREFIX)];
    prefix.bytes[..body.len()].copy_from_slice(body);
    prefix
}

fn byte(input: &[u8], at: usize) -> u8 {
    input.get(at).copied().unwrap_or(0)
}
