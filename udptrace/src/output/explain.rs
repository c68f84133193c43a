//! Names and plain-English explanations: errno names, ICMP types and codes, and what each verdict and
//! cause means for the application.

use crate::{
    cause::Cause,
    event::{Family, IcmpSent, IcmpSuppressed, Scope, SocketError, Verdict},
};

/// Linux errno names, index = errno (`include/uapi/asm-generic/errno-base.h`, `errno.h`).
const ERRNO_NAMES: [&str; 134] = [
    "",
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP",
    "",
    "ENOMSG",
    "EIDRM",
    "ECHRNG",
    "EL2NSYNC",
    "EL3HLT",
    "EL3RST",
    "ELNRNG",
    "EUNATCH",
    "ENOCSI",
    "EL2HLT",
    "EBADE",
    "EBADR",
    "EXFULL",
    "ENOANO",
    "EBADRQC",
    "EBADSLT",
    "",
    "EBFONT",
    "ENOSTR",
    "ENODATA",
    "ETIME",
    "ENOSR",
    "ENONET",
    "ENOPKG",
    "EREMOTE",
    "ENOLINK",
    "EADV",
    "ESRMNT",
    "ECOMM",
    "EPROTO",
    "EMULTIHOP",
    "EDOTDOT",
    "EBADMSG",
    "EOVERFLOW",
    "ENOTUNIQ",
    "EBADFD",
    "EREMCHG",
    "ELIBACC",
    "ELIBBAD",
    "ELIBSCN",
    "ELIBMAX",
    "ELIBEXEC",
    "EILSEQ",
    "ERESTART",
    "ESTRPIPE",
    "EUSERS",
    "ENOTSOCK",
    "EDESTADDRREQ",
    "EMSGSIZE",
    "EPROTOTYPE",
    "ENOPROTOOPT",
    "EPROTONOSUPPORT",
    "ESOCKTNOSUPPORT",
    "EOPNOTSUPP",
    "EPFNOSUPPORT",
    "EAFNOSUPPORT",
    "EADDRINUSE",
    "EADDRNOTAVAIL",
    "ENETDOWN",
    "ENETUNREACH",
    "ENETRESET",
    "ECONNABORTED",
    "ECONNRESET",
    "ENOBUFS",
    "EISCONN",
    "ENOTCONN",
    "ESHUTDOWN",
    "ETOOMANYREFS",
    "ETIMEDOUT",
    "ECONNREFUSED",
    "EHOSTDOWN",
    "EHOSTUNREACH",
    "EALREADY",
    "EINPROGRESS",
    "ESTALE",
    "EUCLEAN",
    "ENOTNAM",
    "ENAVAIL",
    "EISNAM",
    "EREMOTEIO",
    "EDQUOT",
    "ENOMEDIUM",
    "EMEDIUMTYPE",
    "ECANCELED",
    "ENOKEY",
    "EKEYEXPIRED",
    "EKEYREVOKED",
    "EKEYREJECTED",
    "EOWNERDEAD",
    "ENOTRECOVERABLE",
    "ERFKILL",
    "EHWPOISON",
];

/// The symbolic name of a positive errno; `None` for 0 and numbers Linux does not define.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    usize::try_from(errno).ok().and_then(|i| ERRNO_NAMES.get(i)).copied().filter(|n| !n.is_empty())
}

/// The number of an errno name (`ECONNREFUSED`); `None` for a name Linux does not define.
pub fn errno_number(name: &str) -> Option<i32> {
    ERRNO_NAMES.iter().position(|n| !n.is_empty() && *n == name).and_then(|i| i32::try_from(i).ok())
}

/// The errno the kernel derives from an ICMP error, and whether it is hard (reported to a connected socket
/// even without IP_RECVERR). IPv4: `icmp_err_convert[]` (`net/ipv4/icmp.c`) as `__udp4_lib_err` applies it;
/// IPv6: `icmpv6_err_convert()` (`net/ipv6/icmp.c`). Unchanged from 4.x to 6.18. Frag-needed and
/// packet-too-big are hard unless the socket disabled path MTU discovery (`IP_PMTUDISC_DONT`), which the
/// table cannot know. `None` for route updates (source quench, redirect), which are not errors.
pub fn icmp_errno(family: Family, icmp_type: u8, code: u8) -> Option<(i32, bool)> {
    use libc::{
        EACCES, ECONNREFUSED, EHOSTDOWN, EHOSTUNREACH, EMSGSIZE, ENETUNREACH, ENONET, ENOPROTOOPT, EOPNOTSUPP, EPROTO,
    };
    const V4_UNREACH: [(i32, bool); 16] = [
        (ENETUNREACH, false),
        (EHOSTUNREACH, false),
        (ENOPROTOOPT, true),
        (ECONNREFUSED, true),
        (EMSGSIZE, true),
        (EOPNOTSUPP, false),
        (ENETUNREACH, true),
        (EHOSTDOWN, true),
        (ENONET, true),
        (ENETUNREACH, true),
        (EHOSTUNREACH, true),
        (ENETUNREACH, false),
        (EHOSTUNREACH, false),
        (EHOSTUNREACH, true),
        (EHOSTUNREACH, true),
        (EHOSTUNREACH, true),
    ];
    const V6_UNREACH: [(i32, bool); 7] = [
        (ENETUNREACH, false),
        (EACCES, true),
        (EHOSTUNREACH, false),
        (EHOSTUNREACH, false),
        (ECONNREFUSED, true),
        (EACCES, true),
        (EACCES, true),
    ];
    match family {
        Family::Ipv4 => match icmp_type {
            3 => Some(V4_UNREACH.get(usize::from(code)).copied().unwrap_or((EHOSTUNREACH, false))),
            4 | 5 => None,
            12 => Some((EPROTO, true)),
            _ => Some((EHOSTUNREACH, false)),
        },
        Family::Ipv6 => match icmp_type {
            1 => Some(V6_UNREACH.get(usize::from(code)).copied().unwrap_or((EPROTO, true))),
            2 => Some((EMSGSIZE, true)),
            4 => Some((EPROTO, true)),
            3 => Some((EHOSTUNREACH, false)),
            137 => None,
            _ => Some((EPROTO, false)),
        },
    }
}

/// What `__udp4_lib_err` / `__udp6_lib_err` decide for a socket that matched, from the ICMP's hardness,
/// whether the socket is connected and whether it has IP_RECVERR. udptrace reports what the kernel did
/// (the hooks that fired); this mirror of the kernel's rule is what the tests check that against.
#[cfg(test)]
pub fn kernel_verdict(hard: bool, connected: bool, recverr: bool) -> Verdict {
    if recverr || (hard && connected) {
        Verdict::Delivered
    } else if connected {
        Verdict::IgnoredSoftError
    } else {
        Verdict::IgnoredUnconnected
    }
}

/// A short name for an ICMP (IPv4) or ICMPv6 type and code, as tcpdump would say it.
pub fn icmp_name(family: Family, icmp_type: u8, code: u8) -> String {
    let known = match family {
        Family::Ipv4 => match (icmp_type, code) {
            (3, 0) => Some("net-unreachable"),
            (3, 1) => Some("host-unreachable"),
            (3, 2) => Some("protocol-unreachable"),
            (3, 3) => Some("port-unreachable"),
            (3, 4) => Some("frag-needed"),
            (3, 5) => Some("source-route-failed"),
            (3, 6) => Some("net-unknown"),
            (3, 7) => Some("host-unknown"),
            (3, 9 | 10 | 13) => Some("admin-prohibited"),
            (3, 11) => Some("net-unreachable-for-tos"),
            (3, 12) => Some("host-unreachable-for-tos"),
            (3, 14) => Some("host-precedence-violation"),
            (3, 15) => Some("precedence-cutoff"),
            (4, _) => Some("source-quench"),
            (5, _) => Some("redirect"),
            (11, 0) => Some("ttl-exceeded"),
            (11, 1) => Some("reassembly-time-exceeded"),
            (12, _) => Some("parameter-problem"),
            _ => None,
        },
        Family::Ipv6 => match (icmp_type, code) {
            (1, 0) => Some("no-route"),
            (1, 1) => Some("admin-prohibited"),
            (1, 2) => Some("beyond-scope"),
            (1, 3) => Some("address-unreachable"),
            (1, 4) => Some("port-unreachable"),
            (1, 5) => Some("source-policy-failed"),
            (1, 6) => Some("reject-route"),
            (2, _) => Some("packet-too-big"),
            (3, 0) => Some("hop-limit-exceeded"),
            (3, 1) => Some("reassembly-time-exceeded"),
            (4, _) => Some("parameter-problem"),
            _ => None,
        },
    };
    known.map_or_else(|| format!("type-{icmp_type}-code-{code}"), str::to_owned)
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        58 => "icmpv6".to_owned(),
        132 => "sctp".to_owned(),
        136 => "udplite".to_owned(),
        other => format!("proto-{other}"),
    }
}

/// One short sentence: what happened to the socket and what the application sees.
pub fn explain_socket_error(e: &SocketError) -> String {
    let errno = errno_name(e.errno).unwrap_or("an error");
    let icmp = e.icmp.map(|i| icmp_name(e.family, i.icmp_type, i.code));
    let peer = e.remote.map(|r| format!("udp/{} at {}", r.port(), r.ip()));
    let queued = if e.recverr == Some(true) { "; also queued for MSG_ERRQUEUE (IP_RECVERR)" } else { "" };
    match e.verdict {
        Some(Verdict::Delivered) => match (e.errno, &peer) {
            (libc::ECONNREFUSED, Some(peer)) => format!(
                "the peer refused {peer} (no listener, or a firewall REJECT); the next send or receive fails with \
                 {errno}{queued}"
            ),
            (libc::EMSGSIZE, _) => format!(
                "the path MTU is smaller than the datagram and it may not be fragmented; the next send or receive \
                 fails with {errno}{queued}"
            ),
            _ => format!("the socket's next send or receive fails with {errno}{queued}"),
        },
        Some(Verdict::IgnoredSoftError) if e.icmp.is_some_and(|i| (i.icmp_type, i.code) == (3, 4)) => {
            "the socket turned path MTU discovery off (IP_PMTUDISC_DONT): Linux lowers the route's MTU and reports \
             nothing"
                .to_owned()
        }
        Some(Verdict::IgnoredSoftError) => format!(
            "{} is a soft error: Linux does not report it to a connected UDP socket without IP_RECVERR",
            icmp.unwrap_or_else(|| "this error".to_owned())
        ),
        Some(Verdict::IgnoredUnconnected) => format!(
            "the socket is not connected and has no IP_RECVERR: Linux drops {errno} and the application sees nothing"
        ),
        Some(Verdict::NoSocket) => "no socket on this host matches the packet the ICMP error quotes".to_owned(),
        None => format!("a UDP tunnel socket took the error ({errno})"),
    }
}

/// One short sentence: why this host sent the ICMP error.
pub fn explain_icmp_sent(e: &IcmpSent) -> String {
    let port = e.packet.and_then(|p| p.ports.map(|(_, dport)| (proto_name(p.proto), dport)));
    match e.cause {
        Cause::NoListener => match port {
            Some((proto, dport)) => format!("no socket listens on {proto}/{dport} here"),
            None => "no socket listens on that port here".to_owned(),
        },
        Cause::FirewallReject => "a firewall REJECT rule answered for the packet (nftables/iptables)".to_owned(),
        Cause::NoRoute => {
            "this host has no usable route to the packet's destination (an unreachable or prohibit route, no route, \
             or the next hop did not answer ARP/ND)"
                .to_owned()
        }
        Cause::TtlExceeded => "the packet's TTL ran out while this host forwarded it".to_owned(),
        Cause::FragNeeded => "the packet may not be fragmented (DF) and is larger than the next link's MTU".to_owned(),
        Cause::Other => "sent by another kernel path".to_owned(),
    }
}

/// Which limit stopped the error, and the sysctl that governs it.
pub fn explain_icmp_suppressed(e: &IcmpSuppressed) -> String {
    match (e.scope, e.family) {
        (Scope::Global, _) => "the global ICMP rate limit stopped it: sysctl net.ipv4.icmp_msgs_per_sec and \
                               net.ipv4.icmp_msgs_burst (IPv4 and IPv6), for the types in net.ipv4.icmp_ratemask"
            .to_owned(),
        (Scope::Host, Family::Ipv4) => {
            "the per-destination ICMP rate limit stopped it: sysctl net.ipv4.icmp_ratelimit (ms between errors to \
             one host), for the types in net.ipv4.icmp_ratemask"
                .to_owned()
        }
        (Scope::Host, Family::Ipv6) => {
            "the per-destination ICMPv6 rate limit stopped it: sysctl net.ipv6.icmp.ratelimit (ms between errors \
             to one host)"
                .to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_match_linux() {
        assert_eq!(errno_name(libc::ECONNREFUSED), Some("ECONNREFUSED"));
        assert_eq!(errno_name(libc::EHOSTUNREACH), Some("EHOSTUNREACH"));
        assert_eq!(errno_name(libc::ENETUNREACH), Some("ENETUNREACH"));
        assert_eq!(errno_name(libc::EMSGSIZE), Some("EMSGSIZE"));
        assert_eq!(errno_name(libc::ENOPROTOOPT), Some("ENOPROTOOPT"));
        assert_eq!(errno_name(libc::EPROTO), Some("EPROTO"));
        assert_eq!(errno_name(libc::EHWPOISON), Some("EHWPOISON"));
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(-1), None);
        assert_eq!(errno_name(41), None);
        assert_eq!(errno_name(500), None);
    }

    /// Every name in the table must be the libc constant of its index.
    #[test]
    fn errno_table_agrees_with_libc() {
        let checks = [
            (libc::EPERM, "EPERM"),
            (libc::EAGAIN, "EAGAIN"),
            (libc::ENOMSG, "ENOMSG"),
            (libc::EBFONT, "EBFONT"),
            (libc::ENONET, "ENONET"),
            (libc::EOPNOTSUPP, "EOPNOTSUPP"),
            (libc::EHOSTDOWN, "EHOSTDOWN"),
            (libc::EACCES, "EACCES"),
            (libc::ECANCELED, "ECANCELED"),
            (libc::ERFKILL, "ERFKILL"),
        ];
        for (errno, name) in checks {
            assert_eq!(errno_name(errno), Some(name), "errno {errno}");
        }
    }

    /// The tables of `kernel-paths.md`, entry by entry.
    #[test]
    fn icmp_errno_matches_the_kernel_tables() {
        use libc::*;
        let v4 = |code| icmp_errno(Family::Ipv4, 3, code);
        assert_eq!(v4(0), Some((ENETUNREACH, false)));
        assert_eq!(v4(1), Some((EHOSTUNREACH, false)));
        assert_eq!(v4(2), Some((ENOPROTOOPT, true)));
        assert_eq!(v4(3), Some((ECONNREFUSED, true)));
        assert_eq!(v4(4), Some((EMSGSIZE, true)));
        assert_eq!(v4(5), Some((EOPNOTSUPP, false)));
        assert_eq!(v4(7), Some((EHOSTDOWN, true)));
        assert_eq!(v4(8), Some((ENONET, true)));
        assert_eq!(v4(11), Some((ENETUNREACH, false)));
        assert_eq!(v4(12), Some((EHOSTUNREACH, false)));
        assert_eq!(v4(13), Some((EHOSTUNREACH, true)));
        assert_eq!(v4(99), Some((EHOSTUNREACH, false)));
        assert_eq!(icmp_errno(Family::Ipv4, 11, 0), Some((EHOSTUNREACH, false)));
        assert_eq!(icmp_errno(Family::Ipv4, 12, 0), Some((EPROTO, true)));
        assert_eq!(icmp_errno(Family::Ipv4, 5, 1), None);
        let v6 = |t, code| icmp_errno(Family::Ipv6, t, code);
        assert_eq!(v6(1, 0), Some((ENETUNREACH, false)));
        assert_eq!(v6(1, 1), Some((EACCES, true)));
        assert_eq!(v6(1, 3), Some((EHOSTUNREACH, false)));
        assert_eq!(v6(1, 4), Some((ECONNREFUSED, true)));
        assert_eq!(v6(2, 0), Some((EMSGSIZE, true)));
        assert_eq!(v6(3, 0), Some((EHOSTUNREACH, false)));
        assert_eq!(v6(4, 0), Some((EPROTO, true)));
    }

    /// The seed's puzzle: soft errors and unconnected sockets look like success without IP_RECVERR.
    #[test]
    fn the_kernel_rule_for_reporting_errors() {
        let soft = |t, c| !icmp_errno(Family::Ipv4, t, c).unwrap().1;
        assert_eq!(kernel_verdict(!soft(3, 3), true, false), Verdict::Delivered);
        assert_eq!(kernel_verdict(!soft(3, 1), true, false), Verdict::IgnoredSoftError);
        assert_eq!(kernel_verdict(!soft(11, 0), true, false), Verdict::IgnoredSoftError);
        assert_eq!(kernel_verdict(!soft(3, 3), false, false), Verdict::IgnoredUnconnected);
        assert_eq!(kernel_verdict(!soft(3, 1), false, true), Verdict::Delivered);
        assert_eq!(kernel_verdict(!soft(3, 1), true, true), Verdict::Delivered);
    }

    #[test]
    fn every_verdict_has_its_own_explanation() {
        use crate::event::tests::raw_socket_error_v4;
        let bytes = crate::event::tests::bytes_of(&raw_socket_error_v4());
        let crate::event::Event::SocketError(mut e) =
            crate::event::decode(&bytes, crate::event::Clock::with_boot_epoch_ns(0)).unwrap()
        else {
            panic!()
        };
        e.icmp = Some(crate::event::Icmp { icmp_type: 3, code: 1, from: None });
        e.verdict = Some(Verdict::IgnoredSoftError);
        assert_eq!(
            explain_socket_error(&e),
            "host-unreachable is a soft error: Linux does not report it to a connected UDP socket without IP_RECVERR"
        );
        let mut texts = Vec::new();
        for verdict in [Verdict::Delivered, Verdict::IgnoredSoftError, Verdict::IgnoredUnconnected, Verdict::NoSocket] {
            e.verdict = Some(verdict);
            texts.push(explain_socket_error(&e));
        }
        texts.dedup();
        assert_eq!(texts.len(), 4, "{texts:?}");
    }

    #[test]
    fn icmp_names() {
        assert_eq!(icmp_name(Family::Ipv4, 3, 3), "port-unreachable");
        assert_eq!(icmp_name(Family::Ipv4, 11, 0), "ttl-exceeded");
        assert_eq!(icmp_name(Family::Ipv6, 1, 4), "port-unreachable");
        assert_eq!(icmp_name(Family::Ipv6, 2, 0), "packet-too-big");
        assert_eq!(icmp_name(Family::Ipv4, 42, 7), "type-42-code-7");
    }
}
