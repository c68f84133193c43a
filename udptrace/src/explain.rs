//! Names and plain-English explanations: errno names, ICMP types and codes, and what each verdict and
//! cause means for the application.

use crate::{
    cause::Cause,
    event::{Family, IcmpSent, SocketError, Verdict},
};

/// Linux errno names, index = errno (`include/uapi/asm-generic/errno-base.h`, `errno.h`).
const ERRNO_NAMES: [&str; 134] = [
    "", "EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "ENXIO", "E2BIG", "ENOEXEC", "EBADF", "ECHILD", "EAGAIN",
    "ENOMEM", "EACCES", "EFAULT", "ENOTBLK", "EBUSY", "EEXIST", "EXDEV", "ENODEV", "ENOTDIR", "EISDIR", "EINVAL",
    "ENFILE", "EMFILE", "ENOTTY", "ETXTBSY", "EFBIG", "ENOSPC", "ESPIPE", "EROFS", "EMLINK", "EPIPE", "EDOM",
    "ERANGE", "EDEADLK", "ENAMETOOLONG", "ENOLCK", "ENOSYS", "ENOTEMPTY", "ELOOP", "", "ENOMSG", "EIDRM",
    "ECHRNG", "EL2NSYNC", "EL3HLT", "EL3RST", "ELNRNG", "EUNATCH", "ENOCSI", "EL2HLT", "EBADE", "EBADR",
    "EXFULL", "ENOANO", "EBADRQC", "EBADSLT", "", "EBFONT", "ENOSTR", "ENODATA", "ETIME", "ENOSR", "ENONET",
    "ENOPKG", "EREMOTE", "ENOLINK", "EADV", "ESRMNT", "ECOMM", "EPROTO", "EMULTIHOP", "EDOTDOT", "EBADMSG",
    "EOVERFLOW", "ENOTUNIQ", "EBADFD", "EREMCHG", "ELIBACC", "ELIBBAD", "ELIBSCN", "ELIBMAX", "ELIBEXEC",
    "EILSEQ", "ERESTART", "ESTRPIPE", "EUSERS", "ENOTSOCK", "EDESTADDRREQ", "EMSGSIZE", "EPROTOTYPE",
    "ENOPROTOOPT", "EPROTONOSUPPORT", "ESOCKTNOSUPPORT", "EOPNOTSUPP", "EPFNOSUPPORT", "EAFNOSUPPORT",
    "EADDRINUSE", "EADDRNOTAVAIL", "ENETDOWN", "ENETUNREACH", "ENETRESET", "ECONNABORTED", "ECONNRESET",
    "ENOBUFS", "EISCONN", "ENOTCONN", "ESHUTDOWN", "ETOOMANYREFS", "ETIMEDOUT", "ECONNREFUSED", "EHOSTDOWN",
    "EHOSTUNREACH", "EALREADY", "EINPROGRESS", "ESTALE", "EUCLEAN", "ENOTNAM", "ENAVAIL", "EISNAM",
    "EREMOTEIO", "EDQUOT", "ENOMEDIUM", "EMEDIUMTYPE", "ECANCELED", "ENOKEY", "EKEYEXPIRED", "EKEYREVOKED",
    "EKEYREJECTED", "EOWNERDEAD", "ENOTRECOVERABLE", "ERFKILL", "EHWPOISON",
];

/// The symbolic name of a positive errno; `None` for 0 and numbers Linux does not define.
pub fn errno_name(errno: i32) -> Option<&'static str> {
    usize::try_from(errno).ok().and_then(|i| ERRNO_NAMES.get(i)).copied().filter(|n| !n.is_empty())
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
    let peer = e.remote.map(|r| format!("udp/{} at {}", r.port(), r.ip()));
    match e.verdict {
        Some(Verdict::Delivered) => match (e.errno, &peer) {
            (libc::ECONNREFUSED, Some(peer)) => {
                format!("no process listens on {peer}; the next send or receive fails with {errno}")
            }
            (libc::ECONNREFUSED, None) => {
                format!("the peer has no process on that port; the next send or receive fails with {errno}")
            }
            _ => format!("the socket's next send or receive fails with {errno}"),
        },
        Some(Verdict::IgnoredSoftError) => format!(
            "{} is a soft error: Linux does not report it to a connected UDP socket without IP_RECVERR",
            e.icmp.map_or_else(|| "this error".to_owned(), |i| icmp_name(e.family, i.icmp_type, i.code))
        ),
        Some(Verdict::IgnoredUnconnected) => {
            "the socket is not connected and has no IP_RECVERR: Linux reports no ICMP error to it".to_owned()
        }
        Some(Verdict::NoSocket) => "no socket on this host matches the packet the ICMP error quotes".to_owned(),
        None => format!("the socket was given {errno}"),
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
        Cause::FirewallReject => "a firewall REJECT rule answered for the packet".to_owned(),
        Cause::NoRoute => "this host has no usable route to the packet's destination".to_owned(),
        Cause::TtlExceeded => "the packet's TTL ran out while this host forwarded it".to_owned(),
        Cause::FragNeeded => "the packet has DF set and is larger than the next link's MTU".to_owned(),
        Cause::Other => "sent by another kernel path".to_owned(),
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

    #[test]
    fn icmp_names() {
        assert_eq!(icmp_name(Family::Ipv4, 3, 3), "port-unreachable");
        assert_eq!(icmp_name(Family::Ipv4, 11, 0), "ttl-exceeded");
        assert_eq!(icmp_name(Family::Ipv6, 1, 4), "port-unreachable");
        assert_eq!(icmp_name(Family::Ipv6, 2, 0), "packet-too-big");
        assert_eq!(icmp_name(Family::Ipv4, 42, 7), "type-42-code-7");
    }
}
