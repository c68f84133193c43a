//! Reading the programs' records (the `#[repr(C)]` records of `udptrace-common`, the buffer's bytes): what
//! every kind's decoding shares (the header, addresses, the owner, the DNS payload, the clock). Each kind
//! decodes its own record (`events::decode` hands it over).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime},
};

use udptrace_common::{
    AF_INET, AF_INET6, Conntrack, CtTuple, DnsPrefix, EventHeader, PACKET_MAX, PacketHead, conntrack_flags, ct_status,
    owner_flags, probe,
};

use crate::{
    dns,
    domain::{AttachMode, Captured, Dns, Family, Meta, Nat, OwnerInfo, Translation, Tuple},
};

/// The family of a record's `family` byte.
pub fn family_of(af: u8) -> Option<Family> {
    match u16::from(af) {
        AF_INET => Some(Family::Ipv4),
        AF_INET6 => Some(Family::Ipv6),
        _ => None,
    }
}

/// An address of `family` from the records' 16 bytes (IPv4 in the first four).
pub fn addr(family: Family, bytes: [u8; 16]) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(bytes)),
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

/// What the programs recorded of a socket's owner at its creation: the process's name when they could read
/// it, and the thread's when it is another.
pub fn recorded_owner(owner: &udptrace_common::Owner) -> OwnerInfo {
    let comm = (owner.flags & owner_flags::PROCESS_NAMED != 0).then(|| c_string(&owner.comm));
    let thread = Some(c_string(&owner.thread)).filter(|thread| Some(thread) != comm.as_ref());
    OwnerInfo {
        pid: owner.pid,
        tid: Some(owner.tid),
        comm,
        thread,
        cgroup_id: Some(owner.cgroup_id),
        cgroup: None,
        container: None,
        holders: None,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Short { kind: u8, len: usize, need: usize },
    UnknownKind(u8),
    UnknownFamily(u8),
    UnknownProbe(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { kind, len, need } => {
                write!(f, "record of kind {kind} is {len} bytes, expected {need}")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            DecodeError::UnknownFamily(af) => write!(f, "unknown address family {af}"),
            DecodeError::UnknownProbe(p) => write!(f, "unknown probe mode {p}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Converts the programs' CLOCK_BOOTTIME stamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Wall-clock time at boot, in nanoseconds since the epoch.
    boot_epoch_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let realtime = clock_ns(libc::CLOCK_REALTIME);
        let boottime = clock_ns(libc::CLOCK_BOOTTIME);
        Self { boot_epoch_ns: realtime - boottime }
    }

    /// A clock for which the machine booted `epoch_ns` after the epoch: the same times every run.
    pub const fn booted_at(epoch_ns: i128) -> Self {
        Self { boot_epoch_ns: epoch_ns }
    }

    pub fn wall(self, boot_ns: u64) -> SystemTime {
        let ns = (self.boot_epoch_ns + i128::from(boot_ns)).max(0);
        SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// CLOCK_BOOTTIME now, as the programs stamp records.
pub fn boot_time_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Reads a `T` from the start of `bytes`, which must be long enough.
pub fn read_record<T: Copy>(bytes: &[u8], kind: u8) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short { kind, len: bytes.len(), need });
    }
    // SAFETY: the length is checked; T is a plain #[repr(C)] record valid for every bit pattern;
    // read_unaligned copes with the ring buffer's 8-byte alignment.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// A NUL-terminated kernel string (a task's comm).
pub fn c_string(bytes: &[u8]) -> String {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}

pub fn meta(header: &EventHeader, clock: Clock) -> Result<Meta, DecodeError> {
    Ok(Meta {
        time: clock.wall(header.time_ns),
        netns: header.netns,
        probe: mode_of(header.probe).ok_or(DecodeError::UnknownProbe(header.probe))?,
        pod: None,
        packet: None,
    })
}

/// The packet a record of `layout` carries after its parts (`--pcap`), when its flags say so: no more bytes
/// than its head says were copied, nor than the record holds (a record cut short gives `Short`).
pub fn packet_of(bytes: &[u8], layout: &super::Layout, kind: u8) -> Result<Option<Captured>, DecodeError> {
    let flags = bytes.get(layout.flags_at).copied().unwrap_or(0);
    if flags & layout.packet_flag == 0 {
        return Ok(None);
    }
    let at = layout.base + if flags & layout.dns_flag != 0 { size_of::<DnsPrefix>() } else { 0 };
    let start = at + size_of::<PacketHead>();
    let Some(head) = bytes.get(at..start) else {
        return Err(DecodeError::Short { kind, len: bytes.len(), need: start });
    };
    let head: PacketHead = read_record(head, kind)?;
    let len = usize::from(head.len).min(PACKET_MAX);
    let Some(copied) = bytes.get(start..start + len) else {
        return Err(DecodeError::Short { kind, len: bytes.len(), need: start + len });
    };
    Ok(Some(Captured { bytes: copied.to_vec(), length: head.total.max(len as u32) }))
}

/// What the DNS payload a record carries says: its first `len` bytes, no more than the buffer holds, nor than
/// the UDP header says the payload holds (`total`; the programs copy no more, and bytes past it are not the
/// payload's), so that what is said to be read is never more than the payload.
pub fn dns_of(prefix: &DnsPrefix) -> Dns {
    let len = usize::from(prefix.len).min(prefix.bytes.len()).min(usize::from(prefix.total));
    dns::parse(&prefix.bytes[..len], usize::from(prefix.total))
}

/// A record's conntrack part as the translation it says, `None` when it holds none: not flagged, not a
/// translated connection, or of a family the record cannot be (a tuple whose bytes make no sense is no
/// translation).
pub fn translation_of(raw: &Conntrack) -> Option<Translation> {
    if raw.flags & conntrack_flags::KNOWN == 0 {
        return None;
    }
    let family = family_of(u8::try_from(raw.original.l3num).ok()?)?;
    let nat = Nat::of(raw.status & ct_status::DST_NAT != 0, raw.status & ct_status::SRC_NAT != 0)?;
    let tuple = |t: &CtTuple| Tuple {
        src: SocketAddr::new(addr(family, t.src_addr), u16::from_be_bytes(t.src_port)),
        dst: SocketAddr::new(addr(family, t.dst_addr), u16::from_be_bytes(t.dst_port)),
    };
    Some(Translation {
        original: tuple(&raw.original),
        reply: tuple(&raw.reply),
        nat,
        replied: raw.status & ct_status::SEEN_REPLY != 0,
        mark: (raw.flags & conntrack_flags::MARK_KNOWN != 0).then_some(raw.mark),
    })
}

/// Reading a record's bytes field by field, at the offsets of its type (`offset_of!`), not through the
/// decoder: what each kind's [`Kind::check_record`](super::Kind::check_record) holds its event to.
pub mod fields {
    use std::{mem::offset_of, net::IpAddr};

    use udptrace_common::{
        AF_INET, AF_INET6, Conntrack, CtTuple, DnsPrefix, EventHeader, Owner, conntrack_flags, ct_status, owner_flags,
        probe,
    };

    use super::{CHECK_CLOCK, addr, dns_of, read_record};
    use crate::domain::{AttachMode, Dns, Family, Meta, OwnerInfo, Translation};

    /// The header's namespace, time and mode are the event's: each mode back to the byte that says it, not
    /// through the decoder's reading of it.
    pub fn header_matches(meta: &Meta, input: &[u8]) {
        assert_eq!(meta.netns, u32_at(input, offset_of!(EventHeader, netns)));
        assert_eq!(meta.time, CHECK_CLOCK.wall(u64_at(input, offset_of!(EventHeader, time_ns))));
        let mode = match meta.probe {
            AttachMode::FEntry => Some(probe::FENTRY),
            AttachMode::Kprobe => Some(probe::KPROBE),
            AttachMode::Tracepoint => Some(probe::TRACEPOINT),
            AttachMode::Cgroup => None,
        };
        assert_eq!(mode, Some(input[offset_of!(EventHeader, probe)]), "{:?}", meta.probe);
    }

    /// The header's family byte is the event's family, likewise read back from the family.
    pub fn family_matches(family: Family, input: &[u8]) {
        let af = match family {
            Family::Ipv4 => AF_INET,
            Family::Ipv6 => AF_INET6,
        };
        assert_eq!(u16::from(input[offset_of!(EventHeader, family)]), af, "{family:?}");
    }

    /// A recorded owner against the bytes of its [`Owner`] at `at`: its names strings without NUL of at
    /// most the kernel's 16 bytes (each byte that is not UTF-8 one replacement character), the process's there
    /// exactly when flagged, the thread's only when it is another.
    pub fn owner_matches(owner: Option<&OwnerInfo>, input: &[u8], at: usize) {
        let Some(owner) = owner else { return };
        assert_eq!(owner.pid, u32_at(input, at + offset_of!(Owner, pid)));
        assert_eq!(owner.tid, Some(u32_at(input, at + offset_of!(Owner, tid))));
        assert_eq!(owner.cgroup_id, Some(u64_at(input, at + offset_of!(Owner, cgroup_id))));
        let named = input[at + offset_of!(Owner, flags)] & owner_flags::PROCESS_NAMED != 0;
        assert_eq!(owner.comm.is_some(), named, "comm {:?}", owner.comm);
        for name in owner.comm.iter().chain(&owner.thread) {
            assert!(!name.contains('\0') && name.chars().count() <= 16, "name {name:?}");
        }
        assert!(owner.thread.is_none() || owner.thread != owner.comm, "{owner:?}");
    }

    /// The DNS payload after a record of `base` bytes: there exactly when flagged, and what `dns_of` says of
    /// it.
    pub fn dns_matches(dns: &Option<Dns>, flagged: bool, input: &[u8], base: usize) {
        assert_eq!(dns.is_some(), flagged, "{dns:?}");
        if let Some(dns) = dns {
            let prefix: DnsPrefix = read_record(&input[base..], 0).expect("the payload after the record");
            assert_eq!(*dns, dns_of(&prefix));
        }
    }

    /// A conntrack part at `at`: a translation exactly when it is flagged and says NAT, each tuple's
    /// addresses and ports back to their bytes (ports in network order, as the kernel keeps them).
    /// `tracked`: what the event says of the `TRACKED` bit, for a kind that keeps it.
    pub fn conntrack_matches(translation: &Option<Translation>, tracked: Option<bool>, input: &[u8], at: usize) {
        let flags = input[at + offset_of!(Conntrack, flags)];
        if let Some(tracked) = tracked {
            assert_eq!(tracked, flags & conntrack_flags::TRACKED != 0);
        }
        let status = u16_at(input, at + offset_of!(Conntrack, status));
        let Some(t) = translation else {
            assert!(
                flags & conntrack_flags::KNOWN == 0 || status & ct_status::NAT == 0 || {
                    let l3num = u16_at(input, at + offset_of!(Conntrack, original) + offset_of!(CtTuple, l3num));
                    l3num != AF_INET && l3num != AF_INET6
                },
                "a translation was left out"
            );
            return;
        };
        assert!(flags & conntrack_flags::KNOWN != 0);
        let family = if t.original.src.is_ipv4() { Family::Ipv4 } else { Family::Ipv6 };
        for (tuple, base) in [(t.original, offset_of!(Conntrack, original)), (t.reply, offset_of!(Conntrack, reply))] {
            let base = at + base;
            let port = |o: usize| u16::from_be_bytes([input[base + o], input[base + o + 1]]);
            assert_eq!(tuple.src.ip(), addr_at(family, input, base + offset_of!(CtTuple, src_addr)));
            assert_eq!(tuple.dst.ip(), addr_at(family, input, base + offset_of!(CtTuple, dst_addr)));
            assert_eq!(tuple.src.port(), port(offset_of!(CtTuple, src_port)));
            assert_eq!(tuple.dst.port(), port(offset_of!(CtTuple, dst_port)));
        }
        assert_eq!(t.replied, status & ct_status::SEEN_REPLY != 0);
        assert_eq!(t.nat.as_str().contains("dnat"), status & ct_status::DST_NAT != 0);
        assert_eq!(t.nat.as_str().contains("snat"), status & ct_status::SRC_NAT != 0);
        let mark = u32_at(input, at + offset_of!(Conntrack, mark));
        assert_eq!(t.mark, (flags & conntrack_flags::MARK_KNOWN != 0).then_some(mark));
    }

    /// The 16 bytes of an address field: IPv4 in the first four.
    pub fn addr_at(family: Family, input: &[u8], at: usize) -> IpAddr {
        addr(family, input[at..at + 16].try_into().expect("16 bytes"))
    }

    pub fn u16_at(input: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(input[at..at + 2].try_into().expect("2 bytes"))
    }

    pub fn u32_at(input: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(input[at..at + 4].try_into().expect("4 bytes"))
    }

    pub fn u64_at(input: &[u8], at: usize) -> u64 {
        u64::from_ne_bytes(input[at..at + 8].try_into().expect("8 bytes"))
    }
}

/// The clock the property tests and fuzz targets decode with: the same events every run.
pub const CHECK_CLOCK: Clock = Clock::booted_at(1_700_000_000_000_000_000);

#[cfg(test)]
mod tests {
    use udptrace_common::{
        ICMP_STACK_DEPTH, IcmpSent as RawIcmpSent, SocketError as RawSocketError, UdpDropped as RawUdpDropped, WithDns,
        drops, icmp_sent_flags, kind, socket_error_flags, udp_dropped_flags, verdict,
    };

    use super::*;
    use crate::{
        domain::{Cause, Direction, Icmp, Scope},
        events::{Event, decode, samples},
    };

    fn bytes_of<T: aya::Pod>(value: &T) -> Vec<u8> {
        crate::kernel::maps::bytes_of(value).to_vec()
    }

    fn header(kind: u8, family: u16) -> EventHeader {
        EventHeader {
            kind,
            probe: probe::TRACEPOINT,
            family: family as u8,
            _pad0: 0,
            netns: 4026532001,
            time_ns: 5_000_000_000,
        }
    }

    /// What the programs record for `samples::socket_error()`.
    fn raw_socket_error_v4() -> RawSocketError {
        let mut raw = RawSocketError {
            header: header(kind::SOCKET_ERROR, AF_INET),
            local_port: 40312,
            remote_port: 8888,
            errno: libc::ECONNREFUSED,
            verdict: verdict::DELIVERED,
            flags: socket_error_flags::REMOTE_KNOWN,
            ..Default::default()
        };
        raw.local_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        raw.remote_addr[..4].copy_from_slice(&[10, 0, 0, 9]);
        raw
    }

    /// What the programs record for `samples::owned_socket_error()`.
    fn raw_socket_error_v4_owned() -> RawSocketError {
        let mut raw = raw_socket_error_v4();
        raw.sock_ino = 88001;
        raw.owner = udptrace_common::Owner {
            pid: 900,
            tid: 901,
            cgroup_id: 4242,
            comm: *b"dns-client\0\0\0\0\0\0",
            thread: *b"dns-worker\0\0\0\0\0\0",
            flags: owner_flags::PROCESS_NAMED,
            _pad0: [0; 7],
        };
        raw.flags |= socket_error_flags::OWNER_KNOWN;
        raw
    }

    /// What the programs record for `samples::icmp_sent()`.
    fn raw_icmp_sent_v4() -> RawIcmpSent {
        let mut raw = RawIcmpSent {
            header: header(kind::ICMP_SENT, AF_INET),
            src: [0; 16],
            dst: [0; 16],
            sport: 40312,
            dport: 8888,
            icmp_type: 3,
            icmp_code: 3,
            proto: 17,
            flags: icmp_sent_flags::PACKET_KNOWN | icmp_sent_flags::PORTS_KNOWN,
            stack_bytes: 16,
            _pad0: [0; 4],
            stack: [0; ICMP_STACK_DEPTH],
            conntrack: Default::default(),
        };
        raw.src[..4].copy_from_slice(&[10, 0, 0, 2]);
        raw.dst[..4].copy_from_slice(&[10, 0, 0, 9]);
        raw.stack[0] = 0xffff_ffff_8100_0010;
        raw.stack[1] = 0xffff_ffff_8200_0020;
        raw
    }

    const CLOCK: Clock = Clock { boot_epoch_ns: 1_700_000_000_000_000_000 };

    #[test]
    fn decodes_a_socket_error() {
        let event = decode(&bytes_of(&raw_socket_error_v4()), CLOCK).unwrap();
        assert_eq!(event, Event::SocketError(samples::socket_error()));
        let Event::SocketError(e) = event else { unreachable!() };
        assert_eq!(e.meta.time, SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_005_000_000_000));
        assert_eq!(e.meta.probe, AttachMode::Tracepoint);
    }

    #[test]
    fn decodes_the_socket_owner() {
        let event = decode(&bytes_of(&raw_socket_error_v4_owned()), CLOCK).unwrap();
        assert_eq!(event, Event::SocketError(samples::owned_socket_error()));
    }

    /// The process's name and the thread's: the thread's is left out where it is the process's (the main
    /// thread created the socket), and the process's is unknown where the programs could not read it, never
    /// the thread's in its place.
    #[test]
    fn names_the_process_and_the_thread_apart() {
        let mut owner = raw_socket_error_v4_owned().owner;
        let info = recorded_owner(&owner);
        assert_eq!((info.comm.as_deref(), info.thread.as_deref()), (Some("dns-client"), Some("dns-worker")));
        owner.thread = owner.comm;
        let info = recorded_owner(&owner);
        assert_eq!((info.comm.as_deref(), info.thread), (Some("dns-client"), None));
        owner.thread = *b"isc-net-0000\0\0\0\0";
        owner.comm = [0; 16];
        owner.flags = 0;
        let info = recorded_owner(&owner);
        assert_eq!((info.comm, info.thread.as_deref()), (None, Some("isc-net-0000")));
    }

    #[test]
    fn decodes_ipv6_addresses_and_optional_fields() {
        let mut raw = raw_socket_error_v4();
        raw.header.family = AF_INET6 as u8;
        raw.local_addr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        raw.remote_addr = [0; 16];
        raw.remote_port = 0;
        raw.icmp_from = "fd00::9".parse::<Ipv6Addr>().unwrap().octets();
        raw.icmp_type = 1;
        raw.icmp_code = 4;
        raw.flags = socket_error_flags::ICMP_KNOWN | socket_error_flags::RECVERR_KNOWN | socket_error_flags::RECVERR;
        let Event::SocketError(e) = decode(&bytes_of(&raw), CLOCK).unwrap() else { panic!() };
        assert_eq!(e.family, Family::Ipv6);
        assert_eq!(e.local, "[fd00::2]:40312".parse().unwrap());
        assert_eq!(e.remote, None);
        assert_eq!(e.icmp, Some(Icmp { icmp_type: 1, code: 4, from: Some("fd00::9".parse().unwrap()) }));
        assert_eq!(e.recverr, Some(true));
    }

    #[test]
    fn decodes_an_icmp_sent_with_its_stack() {
        let event = decode(&bytes_of(&raw_icmp_sent_v4()), CLOCK).unwrap();
        assert_eq!(event, Event::IcmpSent(samples::icmp_sent()));
    }

    #[test]
    fn decodes_a_suppressed_icmp_with_its_scope() {
        let mut raw = raw_icmp_sent_v4();
        raw.header.kind = kind::ICMP_SUPPRESSED;
        raw.flags |= icmp_sent_flags::SUPPRESSED_HOST;
        let Event::IcmpSuppressed(e) = decode(&bytes_of(&raw), CLOCK).unwrap() else { panic!() };
        assert_eq!((e.scope, e.count), (Scope::Host, 1));
        assert_eq!(e.attempt, Some(samples::icmp_sent()));
        raw.flags = icmp_sent_flags::SUPPRESSED_GLOBAL;
        let Event::IcmpSuppressed(e) = decode(&bytes_of(&raw), CLOCK).unwrap() else { panic!() };
        assert_eq!(e.scope, Scope::Global);
    }

    #[test]
    fn a_failed_stack_read_gives_no_frames() {
        let mut raw = raw_icmp_sent_v4();
        raw.stack_bytes = -libc::EFAULT;
        raw.flags = icmp_sent_flags::PACKET_KNOWN;
        let Event::IcmpSent(e) = decode(&bytes_of(&raw), CLOCK).unwrap() else { panic!() };
        assert!(e.stack.is_empty());
        assert_eq!(e.packet.unwrap().ports, None);
    }

    /// What the programs record for `samples::rcvbuf_drop()`.
    fn raw_rcvbuf_drop() -> RawUdpDropped {
        let mut raw = RawUdpDropped {
            header: header(kind::UDP_DROPPED, AF_INET),
            sport: 5000,
            dport: 9996,
            reason: 9,
            location: 0xffff_ffff_8300_0030,
            local_port: 9996,
            direction: drops::IN,
            proto: 17,
            flags: udp_dropped_flags::SOCKET_KNOWN | udp_dropped_flags::OWNER_KNOWN | udp_dropped_flags::RCVBUF_KNOWN,
            ifindex: 2,
            rcvbuf: 212992,
            queued: 213504,
            sock_ino: 88002,
            owner: udptrace_common::Owner {
                pid: 700,
                tid: 700,
                cgroup_id: 0,
                comm: *b"slow-reader\0\0\0\0\0",
                thread: *b"slow-reader\0\0\0\0\0",
                flags: owner_flags::PROCESS_NAMED,
                _pad0: [0; 7],
            },
            ..Default::default()
        };
        raw.src[..4].copy_from_slice(&[10, 0, 0, 1]);
        raw.dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        raw
    }

    #[test]
    fn decodes_a_drop_with_its_socket() {
        let Event::UdpDropped(mut e) = decode(&bytes_of(&raw_rcvbuf_drop()), CLOCK).unwrap() else {
            panic!()
        };
        // Names come later, from the kernel's BTF and symbols (`enrich`).
        assert_eq!((e.reason.take(), e.location.take()), (None, None));
        let mut want = samples::rcvbuf_drop();
        (want.reason, want.location) = (None, None);
        want.owner.as_mut().unwrap().cgroup_id = Some(0);
        assert_eq!(e, want);
    }

    #[test]
    fn a_drop_without_reason_or_socket_says_so() {
        let mut raw = raw_rcvbuf_drop();
        raw.reason = drops::NO_REASON;
        raw.direction = drops::OUT;
        raw.flags = 0;
        let Event::UdpDropped(e) = decode(&bytes_of(&raw), CLOCK).unwrap() else { panic!() };
        assert_eq!(e.reason_code, None);
        assert_eq!(e.direction, Direction::Out);
        assert_eq!((e.local, e.sock_ino, e.owner, e.rcvbuf, e.queued), (None, None, None, None, None));
        assert!(!e.sources_folded);
    }

    #[test]
    fn a_drop_from_many_sources_says_so() {
        let mut raw = raw_rcvbuf_drop();
        (raw.src, raw.sport) = ([0; 16], 0);
        raw.flags |= udp_dropped_flags::SOURCES_FOLDED;
        let Event::UdpDropped(e) = decode(&bytes_of(&raw), CLOCK).unwrap() else { panic!() };
        assert!(e.sources_folded);
        assert_eq!(e.packet.dst, samples::rcvbuf_drop().packet.dst);
    }

    /// A query for example.com A, ID 0x1234, recursion desired: 29 bytes.
    const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";

    fn raw_dns_drop(bytes: &[u8], total: u16) -> WithDns<RawUdpDropped> {
        let mut record = raw_rcvbuf_drop();
        record.flags |= udp_dropped_flags::DNS;
        record.sport = 53;
        let mut dns =
            DnsPrefix { len: bytes.len() as u16, total, _pad0: [0; 4], bytes: [0; udptrace_common::DNS_PREFIX] };
        dns.bytes[..bytes.len()].copy_from_slice(bytes);
        WithDns { record, dns }
    }

    #[test]
    fn a_drop_on_a_dns_port_carries_its_query() {
        let Event::UdpDropped(e) = decode(&bytes_of(&raw_dns_drop(QUERY, 29)), CLOCK).unwrap() else {
            panic!()
        };
        let dns = e.dns.unwrap();
        assert_eq!(
            (dns.id, dns.response, dns.qname.as_deref(), dns.qtype.as_deref()),
            (Some(0x1234), Some(false), Some("example.com"), Some("A"))
        );
        assert_eq!(
            (dns.rcode, dns.truncated, dns.bytes, dns.payload, dns.malformed),
            (None, Some(false), 29, 29, false)
        );
        // Without the flag the record is a plain drop: no payload is read past it.
        let plain = raw_rcvbuf_drop();
        let Event::UdpDropped(e) = decode(&bytes_of(&plain), CLOCK).unwrap() else { panic!() };
        assert_eq!(e.dns, None);
    }

    #[test]
    fn a_dns_payload_cut_short_says_what_it_reached() {
        // The first 14 bytes of a 29-byte query: the header whole, the name begun.
        let Event::UdpDropped(e) = decode(&bytes_of(&raw_dns_drop(&QUERY[..14], 29)), CLOCK).unwrap() else {
            panic!()
        };
        let dns = e.dns.unwrap();
        assert_eq!((dns.id, dns.response, dns.qname, dns.qtype), (Some(0x1234), Some(false), None, None));
        assert_eq!((dns.bytes, dns.payload, dns.malformed), (14, 29, false));
        // A flagged record cut before its payload is short, not misread.
        let bytes = bytes_of(&raw_dns_drop(QUERY, 29));
        let plain = size_of::<RawUdpDropped>();
        assert!(matches!(decode(&bytes[..plain], CLOCK), Err(DecodeError::Short { .. })));
        // A length past the buffer is held to it.
        let mut long = raw_dns_drop(QUERY, 1000);
        long.dns.len = u16::MAX;
        let Event::UdpDropped(e) = decode(&bytes_of(&long), CLOCK).unwrap() else { panic!() };
        assert_eq!(e.dns.unwrap().bytes, udptrace_common::DNS_PREFIX);
        // A length past what the UDP header says the payload holds is held to that: the bytes past it are
        // not the payload's, and no more bytes are said read than the payload has.
        let Event::UdpDropped(e) = decode(&bytes_of(&raw_dns_drop(QUERY, 14)), CLOCK).unwrap() else {
            panic!()
        };
        let dns = e.dns.unwrap();
        assert_eq!((dns.bytes, dns.payload, dns.malformed, dns.qname), (14, 14, true, None));
    }

    #[test]
    fn an_icmp_error_about_a_dns_datagram_carries_its_query() {
        let mut record = raw_icmp_sent_v4();
        record.dport = 53;
        record.flags |= icmp_sent_flags::DNS;
        let mut dns = DnsPrefix { len: 29, total: 29, _pad0: [0; 4], bytes: [0; udptrace_common::DNS_PREFIX] };
        dns.bytes[..29].copy_from_slice(QUERY);
        let with = WithDns { record, dns };
        let Event::IcmpSent(e) = decode(&bytes_of(&with), CLOCK).unwrap() else { panic!() };
        let dns = e.dns.unwrap();
        assert_eq!(
            (dns.id, dns.qname.as_deref(), dns.qtype.as_deref()),
            (Some(0x1234), Some("example.com"), Some("A"))
        );
        // A suppressed one's attempt carries it too.
        let mut suppressed = with;
        suppressed.record.header.kind = kind::ICMP_SUPPRESSED;
        let Event::IcmpSuppressed(e) = decode(&bytes_of(&suppressed), CLOCK).unwrap() else { panic!() };
        assert_eq!(e.attempt.unwrap().dns.unwrap().id, Some(0x1234));
        // Without the flag, none; a flagged record cut before its payload is short.
        let Event::IcmpSent(e) = decode(&bytes_of(&raw_icmp_sent_v4()), CLOCK).unwrap() else { panic!() };
        assert_eq!(e.dns, None);
        let bytes = bytes_of(&with);
        assert!(matches!(decode(&bytes[..size_of::<RawIcmpSent>()], CLOCK), Err(DecodeError::Short { .. })));
    }

    #[test]
    fn an_icmp_seen_at_its_drop_is_no_listener_and_rate_limits_unseen() {
        let mut raw = raw_icmp_sent_v4();
        raw.flags |= icmp_sent_flags::AT_DROP;
        let Event::IcmpSent(e) = decode(&bytes_of(&raw), CLOCK).unwrap() else { panic!() };
        assert_eq!((e.cause, e.rate_limited), (Cause::NoListener, None));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let bytes = bytes_of(&raw_socket_error_v4());
        assert!(matches!(decode(&bytes[..50], CLOCK), Err(DecodeError::Short { kind: 1, len: 50, .. })));
        assert!(matches!(decode(&bytes[..3], CLOCK), Err(DecodeError::Short { .. })));
        let mut raw = raw_socket_error_v4();
        raw.header.kind = 99;
        assert_eq!(decode(&bytes_of(&raw), CLOCK), Err(DecodeError::UnknownKind(99)));
        raw.header.kind = kind::SOCKET_ERROR;
        raw.header.family = 7;
        assert_eq!(decode(&bytes_of(&raw), CLOCK), Err(DecodeError::UnknownFamily(7)));
        raw.header.family = AF_INET as u8;
        raw.header.probe = 9;
        assert_eq!(decode(&bytes_of(&raw), CLOCK), Err(DecodeError::UnknownProbe(9)));
    }
}
