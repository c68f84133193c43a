//! The filter options (`-p`, `--comm`, `--port`, `--addr`, `--errno`, `--netns`), applied before an event
//! takes ring-buffer space. User space writes them into the read-only global `CONFIG` before load; the
//! verifier then sees them as constants, and an option that is not given costs one compare.
//!
//! An event is dropped here only when it is known to fail. What the program cannot see (an owner no record
//! was recorded for yet) passes, and user space decides with the same rules
//! (`udptrace/src/pipeline/filter.rs`).

use udptrace_common::{
    AF_INET, AddrFilter, Config, Conntrack, FILTER_VALUES, IcmpSent, Owner, SocketError, UdpDropped, conntrack_flags,
    drops, icmp, icmp_sent_flags, icmpv6, socket_error_flags, udp_dropped_flags,
};

#[unsafe(no_mangle)]
pub(crate) static CONFIG: Config = unsafe { core::mem::zeroed() };

/// A field of `CONFIG`, read without letting the compiler fold the zeroed initialiser.
macro_rules! config {
    ($($field:tt)+) => {
        // SAFETY: CONFIG is a valid static; the loader rewrites its bytes before the program runs.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!($crate::filter::CONFIG.$($field)+)) }
    };
}
pub(crate) use config;

/// Whether `$test` holds for one of the first `$n` slots, `$i` being the slot's index. Written out slot by
/// slot: the verifier must prove that a loop ends, and it rejected the loop the compiler makes of a
/// `while` over the slots ("back-edge", on 6.1); the unrolled tests are as cheap.
macro_rules! any_slot {
    ($n:expr, |$i:ident| $test:expr) => {{
        const _: () = assert!(FILTER_VALUES == 8);
        let n = $n as usize;
        (n > 0 && {
            let $i = 0;
            $test
        }) || (n > 1 && {
            let $i = 1;
            $test
        }) || (n > 2 && {
            let $i = 2;
            $test
        }) || (n > 3 && {
            let $i = 3;
            $test
        }) || (n > 4 && {
            let $i = 4;
            $test
        }) || (n > 5 && {
            let $i = 5;
            $test
        }) || (n > 6 && {
            let $i = 6;
            $test
        }) || (n > 7 && {
            let $i = 7;
            $test
        })
    }};
}

/// An option not given lets everything through; given, one of its values must match.
macro_rules! option_passes {
    ($count:ident, |$i:ident| $test:expr) => {{
        let n = config!(filter.$count);
        n == 0 || any_slot!(n, |$i| $test)
    }};
}

#[inline(always)]
fn pid_passes(pid: u32) -> bool {
    option_passes!(n_pids, |i| config!(filter.pids[i]) == pid)
}

#[inline(always)]
fn netns_passes(netns: u32) -> bool {
    option_passes!(n_netns, |i| config!(filter.netns[i]) == netns)
}

#[inline(always)]
fn errno_passes(errno: i32) -> bool {
    option_passes!(n_errnos, |i| config!(filter.errnos[i]) == errno)
}

/// Either port (`None` for one not known) is one of `--port`.
#[inline(always)]
fn ports_pass(a: Option<u16>, b: Option<u16>) -> bool {
    option_passes!(n_ports, |i| {
        let port = config!(filter.ports[i]);
        a == Some(port) || b == Some(port)
    })
}

/// Either port is one of `--dns-port` (53 unless given): the datagram's record carries its DNS payload.
#[inline(always)]
pub fn dns_port(a: u16, b: u16) -> bool {
    const { assert!(udptrace_common::DNS_PORTS == FILTER_VALUES) };
    any_slot!(config!(n_dns_ports), |i| {
        let port = config!(dns_ports[i]);
        a == port || b == port
    })
}

/// 16 bytes as two words, compared without a byte loop.
#[inline(always)]
fn words(bytes: [u8; 16]) -> [u64; 2] {
    // SAFETY: 16 bytes, every bit pattern a valid pair of u64.
    unsafe { core::mem::transmute(bytes) }
}

/// `--comm` names the process or the thread: one of its values is the owner's process name or its thread's
/// (a name not read is zeros, which no value is).
#[inline(always)]
fn comm_passes(owner: &Owner) -> bool {
    let (comm, thread) = (words(owner.comm), words(owner.thread));
    option_passes!(n_comms, |i| {
        let name = config!(filter.comms[i]);
        name == comm || name == thread
    })
}

/// `addr` is inside the prefix of `filter`.
#[inline(always)]
fn in_prefix(filter: &AddrFilter, family: u16, addr: &[u8; 16]) -> bool {
    let (addr, mask, net) = (words(*addr), words(filter.mask), words(filter.addr));
    filter.family == family && addr[0] & mask[0] == net[0] && addr[1] & mask[1] == net[1]
}

/// One of the addresses (`None` for one not known) is inside one of the `--addr` prefixes.
#[inline(always)]
fn addrs_pass(family: u16, a: Option<&[u8; 16]>, b: Option<&[u8; 16]>, c: Option<&[u8; 16]>) -> bool {
    option_passes!(n_addrs, |i| {
        let filter = config!(filter.addrs[i]);
        a.is_some_and(|a| in_prefix(&filter, family, a))
            || b.is_some_and(|b| in_prefix(&filter, family, b))
            || c.is_some_and(|c| in_prefix(&filter, family, c))
    })
}

/// Whether `--addr` and `--port` are left to user space for a connection conntrack may have translated:
/// they match either tuple there, which user space has in full (`pipeline/filter.rs`): a translated
/// connection, or one user space may yet find translated by asking conntrack (`may_ask`: the packet carried no
/// entry in its namespace, or the node's namespace translates a pod's flows whether or not the pod's own
/// tracks them). Otherwise, or without such an option, the packet decides here. The tuples are not matched
/// here: their eight more tests per `--addr` and `--port` slot would weigh on every program's verification
/// (5.10's most of all) for events that are few.
#[inline(always)]
fn left_to_user_space(ct: &Conntrack, may_ask: bool) -> bool {
    (config!(filter.n_addrs) != 0 || config!(filter.n_ports) != 0)
        && (ct.flags & conntrack_flags::KNOWN != 0 || may_ask)
}

/// The ICMP error maps to one of `--errno` (the masks user space built from the kernel's tables).
#[inline(always)]
fn icmp_errno_passes(family: u16, icmp_type: u8, code: u8) -> bool {
    if config!(filter.n_errnos) == 0 {
        return true;
    }
    let v6 = family != AF_INET;
    let mask = config!(filter.icmp[v6 as usize]);
    // The type whose codes the masks tell apart: destination unreachable.
    let unreach = if v6 { icmpv6::DEST_UNREACH } else { icmp::DEST_UNREACH };
    if icmp_type == unreach {
        mask.unreach_codes & (1 << code.min(63)) != 0
    } else {
        mask.types[(icmp_type >> 6) as usize & 3] & (1 << (icmp_type & 63)) != 0
    }
}

#[inline(always)]
pub fn socket_error_passes(e: &SocketError) -> bool {
    let family = u16::from(e.header.family);
    let owner = e.flags & socket_error_flags::OWNER_KNOWN != 0;
    let remote = e.flags & socket_error_flags::REMOTE_KNOWN != 0;
    let icmp = e.flags & socket_error_flags::ICMP_KNOWN != 0;
    netns_passes(e.header.netns)
        && (!owner || pid_passes(e.owner.pid) && comm_passes(&e.owner))
        && (left_to_user_space(&e.conntrack, true)
            || ports_pass(Some(e.local_port), remote.then_some(e.remote_port))
                && addrs_pass(
                    family,
                    Some(&e.local_addr),
                    remote.then_some(&e.remote_addr),
                    icmp.then_some(&e.icmp_from),
                ))
        && if e.errno != 0 {
            errno_passes(e.errno)
        } else {
            !icmp || icmp_errno_passes(family, e.icmp_type, e.icmp_code)
        }
}

/// For `icmp_sent` and `icmp_suppressed`. No process owns the packet an ICMP error answers: `-p` and
/// `--comm` select only `socket_error` events.
#[inline(always)]
pub fn icmp_sent_passes(e: &IcmpSent) -> bool {
    let family = u16::from(e.header.family);
    let packet = e.flags & icmp_sent_flags::PACKET_KNOWN != 0;
    let ports = e.flags & icmp_sent_flags::PORTS_KNOWN != 0;
    config!(filter.n_pids) == 0
        && config!(filter.n_comms) == 0
        && netns_passes(e.header.netns)
        && (left_to_user_space(&e.conntrack, false)
            || ports_pass(ports.then_some(e.sport), ports.then_some(e.dport))
                && addrs_pass(family, packet.then_some(&e.src), packet.then_some(&e.dst), None))
        && icmp_errno_passes(family, e.icmp_type, e.icmp_code)
}

/// For `udp_dropped`. A drop carries no errno: `--errno` leaves it out. `-p` and `--comm` select the socket's
/// owner; a drop without a known owner passes to user space, which may find one, unless `socket_final` (the
/// kernel names the socket of every drop at one, 6.11) and there is no socket.
#[inline(always)]
pub fn udp_dropped_passes(e: &UdpDropped, socket_final: bool) -> bool {
    let family = u16::from(e.header.family);
    let socket = e.flags & udp_dropped_flags::SOCKET_KNOWN != 0;
    let owner = e.flags & udp_dropped_flags::OWNER_KNOWN != 0;
    let by_process = config!(filter.n_pids) != 0 || config!(filter.n_comms) != 0;
    config!(filter.n_errnos) == 0
        && netns_passes(e.header.netns)
        && if owner {
            pid_passes(e.owner.pid) && comm_passes(&e.owner)
        } else {
            !(by_process && socket_final && !socket)
        }
        // User space asks conntrack for a datagram a socket sent (a pod's, whose entry the veth crossing reset).
        && (left_to_user_space(&e.conntrack, socket && e.direction == drops::OUT)
            || ports_pass(Some(e.sport), Some(e.dport))
                && addrs_pass(family, Some(&e.src), Some(&e.dst), socket.then_some(&e.local_addr)))
}
