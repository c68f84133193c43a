//! The promises of `events::decode`, which turns the programs' records, read from a buffer as raw
//! bytes, into events. The layout is read here from the records' types (`offset_of!`), field by field, not
//! through the decoder's own reading of the whole record.

use std::{
    mem::offset_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use udptrace_common::{
    AF_INET, AF_INET6, DnsPrefix, EventHeader, ICMP_STACK_DEPTH, IcmpSent as RawIcmpSent, Owner,
    SocketError as RawSocketError, UdpDropped as RawUdpDropped, drops, icmp_sent_flags, kind, probe,
    socket_error_flags, udp_dropped_flags,
};

use crate::{
    domain::{AttachMode, Family, OwnerInfo},
    events::{Event, IcmpSent},
    events::{
        decode,
        record::{Clock, DecodeError, dns_of},
    },
};

/// A fixed clock: the same events every run.
const CLOCK: Clock = Clock::booted_at(1_700_000_000_000_000_000);

/// What the bytes of a record call for, read from its header: its kind's record size without and with the
/// DNS payload, where its flags byte is, and the flag that says a payload follows.
struct Layout {
    base: usize,
    flags_at: usize,
    dns_flag: u8,
}

impl Layout {
    fn of(kind: u8) -> Option<Layout> {
        let (base, flags_at, dns_flag) = match kind {
            kind::SOCKET_ERROR => {
                (size_of::<RawSocketError>(), offset_of!(RawSocketError, flags), socket_error_flags::DNS)
            }
            kind::ICMP_SENT | kind::ICMP_SUPPRESSED => {
                (size_of::<RawIcmpSent>(), offset_of!(RawIcmpSent, flags), icmp_sent_flags::DNS)
            }
            kind::UDP_DROPPED => (size_of::<RawUdpDropped>(), offset_of!(RawUdpDropped, flags), udp_dropped_flags::DNS),
            _ => return None,
        };
        Some(Layout { base, flags_at, dns_flag })
    }

    /// The whole record's size: with the DNS payload after it when its flags say so.
    fn need(&self, input: &[u8]) -> usize {
        let dns = input.get(self.flags_at).is_some_and(|f| f & self.dns_flag != 0);
        self.base + if dns { size_of::<DnsPrefix>() } else { 0 }
    }
}

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
///   record (`invariants::quote`).
pub fn check(input: &[u8]) {
    let decoded = decode(input, CLOCK);
    assert_eq!(decode(input, CLOCK), decoded, "not deterministic");
    let [kind, probe, family] = [0, 1, 2].map(|at| input.get(at).copied().unwrap_or(0));
    let header = size_of::<EventHeader>();
    let known_family = family_of(family).is_some();
    let layout = Layout::of(kind);
    let known_probe = mode_of(probe).is_some();
    let need = layout.as_ref().map_or(header, |l| l.need(input));
    match &decoded {
        Err(DecodeError::Short { kind: said, len, need: wanted }) => {
            assert_eq!(*len, input.len(), "{decoded:?}");
            assert!(input.len() < *wanted, "{decoded:?}");
            assert!(*wanted == header || layout.as_ref().is_some_and(|l| *wanted == l.base || *wanted == need));
            assert!(input.len() < header || *said == kind, "{decoded:?}");
        }
        Err(DecodeError::UnknownFamily(said)) => assert!(!known_family && *said == family, "{decoded:?}"),
        Err(DecodeError::UnknownKind(said)) => assert!(layout.is_none() && *said == kind, "{decoded:?}"),
        Err(DecodeError::UnknownProbe(said)) => assert!(!known_probe && *said == probe, "{decoded:?}"),
        Ok(event) => {
            assert!(input.len() >= need && known_family && known_probe, "{input:?} decoded: {event:?}");
            event_matches(event, input);
        }
    }
    if input.len() < need || !known_family || !known_probe || layout.is_none() {
        assert!(decoded.is_err(), "{input:?} decoded: {decoded:?}");
    }
    if input.len() > need && known_family && layout.is_some() {
        assert_eq!(decode(&input[..need], CLOCK), decoded, "the bytes past the record's {need} changed it");
    }
}

/// Checks `event`, decoded from `input`, against the bytes at its record's fields.
fn event_matches(event: &Event, input: &[u8]) {
    let family = family_of(input[2]).expect("decoded");
    let header = |meta: &crate::domain::Meta| {
        assert_eq!(meta.netns, u32_at(input, offset_of!(EventHeader, netns)));
        assert_eq!(meta.time, CLOCK.wall(u64_at(input, offset_of!(EventHeader, time_ns))));
        assert_eq!(Some(meta.probe), mode_of(input[1]));
    };
    let addr = |at: usize| addr_at(family, input, at);
    match event {
        Event::SocketError(e) => {
            assert_eq!(input[0], kind::SOCKET_ERROR);
            header(&e.meta);
            assert_eq!(e.family, family);
            let flags = input[offset_of!(RawSocketError, flags)];
            let has = |bit: u8| flags & bit != 0;
            let port = |at: usize| u16_at(input, at);
            assert_eq!(
                e.local,
                SocketAddr::new(
                    addr(offset_of!(RawSocketError, local_addr)),
                    port(offset_of!(RawSocketError, local_port))
                )
            );
            let remote = SocketAddr::new(
                addr(offset_of!(RawSocketError, remote_addr)),
                port(offset_of!(RawSocketError, remote_port)),
            );
            assert_eq!(e.remote, has(socket_error_flags::REMOTE_KNOWN).then_some(remote));
            let icmp = e.icmp.as_ref().map(|i| (i.icmp_type, i.code, i.from));
            let quoted = (
                input[offset_of!(RawSocketError, icmp_type)],
                input[offset_of!(RawSocketError, icmp_code)],
                Some(addr(offset_of!(RawSocketError, icmp_from))),
            );
            assert_eq!(icmp, has(socket_error_flags::ICMP_KNOWN).then_some(quoted));
            assert_eq!(e.errno.0, u32_at(input, offset_of!(RawSocketError, errno)).cast_signed());
            let ino = u64_at(input, offset_of!(RawSocketError, sock_ino));
            assert_eq!(e.sock_ino, (ino != 0).then_some(ino));
            assert_eq!(e.ifindex, u32_at(input, offset_of!(RawSocketError, ifindex)));
            assert_eq!(e.unreported, has(socket_error_flags::UNREPORTED));
            assert_eq!(e.owner.is_some(), has(socket_error_flags::OWNER_KNOWN));
            owner_matches(e.owner.as_ref(), input, offset_of!(RawSocketError, owner));
            dns_matches(&e.dns, has(socket_error_flags::DNS), input, size_of::<RawSocketError>());
        }
        Event::IcmpSent(e) => {
            assert_eq!(input[0], kind::ICMP_SENT);
            sent_matches(e, input, family);
            header(&e.meta);
        }
        Event::IcmpSuppressed(e) => {
            assert_eq!(input[0], kind::ICMP_SUPPRESSED);
            header(&e.meta);
            assert_eq!(e.family, Some(family));
            sent_matches(e.attempt.as_ref().expect("a decoded suppression carries its attempt"), input, family);
        }
        Event::UdpDropped(e) => {
            assert_eq!(input[0], kind::UDP_DROPPED);
            header(&e.meta);
            assert_eq!(e.family, family);
            let flags = input[offset_of!(RawUdpDropped, flags)];
            let has = |bit: u8| flags & bit != 0;
            assert_eq!(e.packet.src, addr(offset_of!(RawUdpDropped, src)));
            assert_eq!(e.packet.dst, addr(offset_of!(RawUdpDropped, dst)));
            let ports =
                (u16_at(input, offset_of!(RawUdpDropped, sport)), u16_at(input, offset_of!(RawUdpDropped, dport)));
            assert_eq!(e.packet.ports, Some(ports));
            assert_eq!(e.packet.proto, input[offset_of!(RawUdpDropped, proto)]);
            let reason = u32_at(input, offset_of!(RawUdpDropped, reason));
            assert_eq!(e.reason_code, (reason != drops::NO_REASON).then_some(reason));
            assert_eq!(e.location_addr, u64_at(input, offset_of!(RawUdpDropped, location)));
            let socket = has(udp_dropped_flags::SOCKET_KNOWN);
            let local = SocketAddr::new(
                addr(offset_of!(RawUdpDropped, local_addr)),
                u16_at(input, offset_of!(RawUdpDropped, local_port)),
            );
            assert_eq!(e.local, socket.then_some(local));
            let ino = u64_at(input, offset_of!(RawUdpDropped, sock_ino));
            assert_eq!(e.sock_ino, (socket && ino != 0).then_some(ino));
            let rcvbuf = has(udp_dropped_flags::RCVBUF_KNOWN);
            assert_eq!(e.rcvbuf, rcvbuf.then(|| u32_at(input, offset_of!(RawUdpDropped, rcvbuf))));
            assert_eq!(e.queued, rcvbuf.then(|| u32_at(input, offset_of!(RawUdpDropped, queued))));
            assert_eq!(e.ifindex, u32_at(input, offset_of!(RawUdpDropped, ifindex)));
            assert_eq!(e.sources_folded, has(udp_dropped_flags::SOURCES_FOLDED));
            assert_eq!(e.owner.is_some(), has(udp_dropped_flags::OWNER_KNOWN));
            owner_matches(e.owner.as_ref(), input, offset_of!(RawUdpDropped, owner));
            dns_matches(&e.dns, has(udp_dropped_flags::DNS), input, size_of::<RawUdpDropped>());
        }
        other => panic!("no record decodes as {other:?}"),
    }
}

/// An ICMP error sent (or the attempt of one suppressed) against its record's bytes: the packet it is about
/// as its flags make it known, the stack's frames (none for a failed read, at most the record's).
fn sent_matches(e: &IcmpSent, input: &[u8], family: Family) {
    assert_eq!(e.family, family);
    let flags = input[offset_of!(RawIcmpSent, flags)];
    let has = |bit: u8| flags & bit != 0;
    assert_eq!(
        (e.icmp.icmp_type, e.icmp.code, e.icmp.from),
        (input[offset_of!(RawIcmpSent, icmp_type)], input[offset_of!(RawIcmpSent, icmp_code)], None)
    );
    assert_eq!(e.packet.is_some(), has(icmp_sent_flags::PACKET_KNOWN));
    if let Some(packet) = e.packet {
        assert_eq!(packet.src, addr_at(family, input, offset_of!(RawIcmpSent, src)));
        assert_eq!(packet.dst, addr_at(family, input, offset_of!(RawIcmpSent, dst)));
        let ports = (u16_at(input, offset_of!(RawIcmpSent, sport)), u16_at(input, offset_of!(RawIcmpSent, dport)));
        assert_eq!(packet.ports, has(icmp_sent_flags::PORTS_KNOWN).then_some(ports));
        assert_eq!(packet.proto, input[offset_of!(RawIcmpSent, proto)]);
    }
    let stack_bytes = u32_at(input, offset_of!(RawIcmpSent, stack_bytes)).cast_signed();
    let frames = usize::try_from(stack_bytes.max(0) / 8).expect("positive").min(ICMP_STACK_DEPTH);
    let stack: Vec<u64> = (0..frames).map(|i| u64_at(input, offset_of!(RawIcmpSent, stack) + 8 * i)).collect();
    assert_eq!(e.stack, stack, "stack_bytes {stack_bytes}");
    dns_matches(&e.dns, has(icmp_sent_flags::DNS), input, size_of::<RawIcmpSent>());
}

/// A recorded owner against the bytes of its [`Owner`] at `at`: its comm a string without NUL of at most
/// the kernel's 16 bytes (each byte that is not UTF-8 one replacement character).
fn owner_matches(owner: Option<&OwnerInfo>, input: &[u8], at: usize) {
    let Some(owner) = owner else { return };
    assert_eq!(owner.pid, u32_at(input, at + offset_of!(Owner, pid)));
    assert_eq!(owner.tid, Some(u32_at(input, at + offset_of!(Owner, tid))));
    assert_eq!(owner.cgroup_id, Some(u64_at(input, at + offset_of!(Owner, cgroup_id))));
    assert!(!owner.comm.contains('\0') && owner.comm.chars().count() <= 16, "comm {:?}", owner.comm);
}

/// The DNS payload after a record of `base` bytes: there exactly when flagged, and what `dns_of` says of it.
fn dns_matches(dns: &Option<crate::domain::Dns>, flagged: bool, input: &[u8], base: usize) {
    assert_eq!(dns.is_some(), flagged, "{dns:?}");
    if let Some(dns) = dns {
        let bytes = &input[base..base + size_of::<DnsPrefix>()];
        super::quote::check(bytes);
        assert_eq!(*dns, dns_of(&super::quote::prefix_of(bytes)));
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

/// The 16 bytes of an address field: IPv4 in the first four.
fn addr_at(family: Family, input: &[u8], at: usize) -> IpAddr {
    let bytes: [u8; 16] = input[at..at + 16].try_into().expect("16 bytes");
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(bytes)),
    }
}

fn u16_at(input: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(input[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(input: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(input[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(input: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(input[at..at + 8].try_into().expect("8 bytes"))
}
