//! Errors as the kernel names them: errno names and numbers, and the errno the kernel derives from each
//! ICMP error.

use udptrace_common::{icmp, icmpv6};

use super::Family;

/// A positive errno, as the kernel hands it to a socket; 0 for none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Its symbolic name (`ECONNREFUSED`); `None` for 0 and numbers Linux does not define.
    pub fn name(self) -> Option<&'static str> {
        errno_name(self.0)
    }

    /// Whether the kernel gave one.
    pub fn is_set(self) -> bool {
        self.0 != 0
    }
}

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
            icmp::DEST_UNREACH => Some(V4_UNREACH.get(usize::from(code)).copied().unwrap_or((EHOSTUNREACH, false))),
            icmp::SOURCE_QUENCH | icmp::REDIRECT => None,
            icmp::PARAMETERPROB => Some((EPROTO, true)),
            _ => Some((EHOSTUNREACH, false)),
        },
        Family::Ipv6 => match icmp_type {
            icmpv6::DEST_UNREACH => Some(V6_UNREACH.get(usize::from(code)).copied().unwrap_or((EPROTO, true))),
            icmpv6::PKT_TOOBIG => Some((EMSGSIZE, true)),
            icmpv6::PARAMPROB => Some((EPROTO, true)),
            icmpv6::TIME_EXCEED => Some((EHOSTUNREACH, false)),
            icmpv6::NDISC_REDIRECT => None,
            _ => Some((EPROTO, false)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Verdict;

    /// What `__udp4_lib_err` / `__udp6_lib_err` decide for a socket that matched, from the ICMP's hardness,
    /// whether the socket is connected and whether it has IP_RECVERR. udptrace reports what the kernel did
    /// (the hooks that fired); this mirror of the kernel's rule is what the tests check that against.
    pub fn kernel_verdict(hard: bool, connected: bool, recverr: bool) -> Verdict {
        if recverr || (hard && connected) {
            Verdict::Delivered
        } else if connected {
            Verdict::IgnoredSoftError
        } else {
            Verdict::IgnoredUnconnected
        }
    }

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

    /// `icmp_err_convert[]` (net/ipv4/icmp.c) and `icmpv6_err_convert()` (net/ipv6/icmp.c), entry by entry.
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
}
