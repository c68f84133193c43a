//! Why this host sent an ICMP error, read from the kernel's own call chain at `__icmp_send`.
//!
//! The ICMP type alone cannot tell: a firewall REJECT and a port without a listener both send
//! port-unreachable. The function that called `icmp_send()` can: the programs record the kernel stack,
//! and the frames above `__icmp_send` are symbolised through `/proc/kallsyms`.

use std::{fs, io};

use udptrace_common::{icmp, icmpv6};

use crate::{
    domain::{Cause, Family},
    kernel::kallsyms::{Snapshot, Table, base_name},
};

/// The function that sends the ICMP; the caller that decided to is above it. `icmp_ndo_send` and
/// `icmpv6_ndo_send` (net/ipv4/icmp.c, net/ipv6/ip6_icmp.c, 5.6+) are what tunnel drivers call.
const SENDERS: &[&str] = &["__icmp_send", "icmp_send", "icmp6_send", "icmpv6_send", "icmp_ndo_send", "icmpv6_ndo_send"];

/// Whether `name` is the frame of the traced function itself, or of the program tracing it (the stack starts
/// there, so what follows is above). A BPF trampoline stands in the place of the function it traces: up to
/// 6.x the stack shows both (`bpf_trampoline_N <- __icmp_send <- udp_rcv`), from 7.x only the trampoline
/// (`bpf_trampoline_N <- udp_rcv`; arch/x86/net/bpf_jit_comp.c). A trampoline is built anew, at a new address,
/// when another program attaches to the function (a second udptrace): its frame then names whatever symbol
/// the table read at start-up has before that address, which the program's own frame makes harmless.
fn is_sender(name: &str) -> bool {
    SENDERS.contains(&name) || name.starts_with("bpf_trampoline_") || name.starts_with("bpf_prog_")
}

/// What a link failure (`ipv4_link_failure`, `ip6_link_failure`) was: neighbour resolution giving up calls
/// it from these (net/ipv4/arp.c, net/ipv6/ndisc.c, net/core/neighbour.c), a tunnel or IPVS through
/// `dst_link_failure()` from elsewhere.
const NEIGHBOUR_FAILURE: &[&str] =
    &["arp_error_report", "ndisc_error_report", "neigh_invalidate", "neigh_timer_handler"];

/// Callers of `icmp_send()` and what they mean. The first one found above the sender decides.
/// Names are those of `net/ipv4/` and `net/netfilter/` from 5.x to 6.18; `.isra`/`.constprop` clones are
/// matched by their base name.
fn cause_of_caller(function: &str, icmp_type: u8, code: u8) -> Option<Cause> {
    let cause = match function {
        // net/ipv4/netfilter/nf_reject_ipv4.c, net/ipv6/netfilter/nf_reject_ipv6.c
        "nf_send_unreach" | "nf_send_unreach6" | "nft_reject_ipv4_eval" | "nft_reject_inet_eval" | "reject_tg" => {
            Cause::FirewallReject
        }
        // net/ipv4/udp.c: no socket for the destination port.
        "__udp4_lib_rcv" | "udp_rcv" | "udplite_rcv" | "__udp6_lib_rcv" | "udpv6_rcv" => Cause::NoListener,
        // net/ipv4/route.c: ip_error() for unreachable/prohibit/blackhole routes and no route.
        "ip_error" => Cause::NoRoute,
        // net/ipv4/ipvs/ip_vs_core.c: a virtual service without a usable real server.
        "ip_vs_leave" => Cause::NoBackend,
        // drivers/net/wireguard/device.c: no peer's allowed IPs hold the destination.
        "wg_xmit" => Cause::NoRoute,
        // net/ipv6/route.c: unreachable and prohibit routes (ip6_pkt_drop may be inlined into these).
        "ip6_pkt_drop" | "ip6_pkt_discard" | "ip6_pkt_discard_out" | "ip6_pkt_prohibit" | "ip6_pkt_prohibit_out" => {
            Cause::NoRoute
        }
        // net/ipv4/ip_forward.c
        "ip_forward" => match (icmp_type, code) {
            (icmp::TIME_EXCEEDED, _) => Cause::TtlExceeded,
            (icmp::DEST_UNREACH, icmp::FRAG_NEEDED) => Cause::FragNeeded,
            _ => Cause::Other,
        },
        // net/ipv6/ip6_output.c
        "ip6_forward" => match icmp_type {
            icmpv6::TIME_EXCEED => Cause::TtlExceeded,
            icmpv6::PKT_TOOBIG => Cause::FragNeeded,
            _ => Cause::Other,
        },
        // net/ipv4/ip_output.c: a local DF packet larger than the route's MTU.
        "ip_fragment" | "ip_do_fragment" | "ip_finish_output_gso" => Cause::FragNeeded,
        _ => return None,
    };
    Some(cause)
}

/// Classifies one `icmp_sent` from its symbolised stack (innermost first). When no caller is recognised,
/// the ICMP type says what it can: frag-needed and packet-too-big are about the MTU, time-exceeded (code 0)
/// about the TTL, whoever sent them (tunnels, IPVS, xfrm, `ip6_fragment`).
pub fn classify<'a>(
    frames: impl IntoIterator<Item = Option<&'a str>>,
    family: Family,
    icmp_type: u8,
    code: u8,
) -> Cause {
    let mut above_sender = false;
    let mut frames = frames.into_iter().flatten().map(base_name);
    while let Some(name) = frames.next() {
        if is_sender(name) {
            above_sender = true;
            continue;
        }
        if !above_sender {
            continue;
        }
        // arch/x86/kernel/kprobes/core.c: a kretprobe's entry handler puts its trampoline where the return
        // address was; the unwinder recovers it only from 5.15 (arch/x86/include/asm/unwind.h,
        // `unwind_recover_kretprobe`), and 5.10's `add_new_kprobe` runs the newest probe of an address first.
        if matches!(name, "kretprobe_trampoline" | "__kretprobe_trampoline") {
            return type_cause(family, icmp_type, code).unwrap_or(Cause::Unknown);
        }
        // net/ipv4/route.c: ipv4_link_failure() -> ipv4_send_dest_unreach(); net/ipv6/route.c.
        if matches!(name, "ipv4_link_failure" | "ipv4_send_dest_unreach" | "ip6_link_failure") {
            return if frames.any(|caller| NEIGHBOUR_FAILURE.contains(&caller)) {
                Cause::NeighbourUnreachable
            } else {
                Cause::NoRoute
            };
        }
        if let Some(cause) = cause_of_caller(name, icmp_type, code) {
            return cause;
        }
    }
    type_cause(family, icmp_type, code).unwrap_or(Cause::Other)
}

/// What the ICMP type says whoever sent it: frag-needed and packet-too-big are about the MTU,
/// time-exceeded (code 0) about the TTL.
fn type_cause(family: Family, icmp_type: u8, code: u8) -> Option<Cause> {
    match (family, icmp_type, code) {
        (Family::Ipv4, icmp::DEST_UNREACH, icmp::FRAG_NEEDED) | (Family::Ipv6, icmpv6::PKT_TOOBIG, _) => {
            Some(Cause::FragNeeded)
        }
        (Family::Ipv4, icmp::TIME_EXCEEDED, 0) | (Family::Ipv6, icmpv6::TIME_EXCEED, 0) => Some(Cause::TtlExceeded),
        _ => None,
    }
}

/// The symbol table, read and parsed when an event first needs a symbol: a udptrace that sees no ICMP error
/// and no drop never pays for it (hundreds of thousands of lines, each written by the kernel as it is read).
pub enum Symbols {
    /// Not read yet.
    Unread,
    Table(Kallsyms),
    /// Could not be read; said once.
    Unreadable,
}

impl Symbols {
    pub fn get(&mut self) -> Option<&mut Kallsyms> {
        if let Self::Unread = self {
            let loaded = Kallsyms::load();
            release_freed();
            *self = match loaded {
                Ok(table) => Self::Table(table),
                Err(e) => {
                    eprintln!(
                        "udptrace: warning: cannot read kernel symbols ({e}); icmp_sent causes will be \"other\" and \
                         drop locations null"
                    );
                    Self::Unreadable
                }
            };
        }
        match self {
            Self::Table(table) => Some(table),
            _ => None,
        }
    }
}

/// Hands back to the kernel what reading the symbols freed (its buffers as they grew, a table replaced):
/// mimalloc keeps freed pages for reuse until told, in the tracer about 2 MiB beside the table.
fn release_freed() {
    #[cfg(target_env = "musl")]
    // SAFETY: a call without pointers; every thread's heap stays valid.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

/// Kernel text symbols, for symbolising return addresses.
pub struct Kallsyms {
    symbols: Table,
    /// `/proc/modules` when the table was read: a change means a module (e.g. nf_reject_ipv4) came or went.
    modules: String,
}

impl Kallsyms {
    pub fn load() -> io::Result<Self> {
        Self::from_snapshot(Snapshot::read()?)
    }

    /// The table from `/proc/kallsyms` as read already.
    pub fn from_snapshot(snapshot: Snapshot) -> io::Result<Self> {
        if snapshot.table.is_empty() {
            return Err(io::Error::other(
                "/proc/kallsyms shows no addresses (kernel.kptr_restrict hides them from this user)",
            ));
        }
        Ok(Self { symbols: snapshot.table, modules: snapshot.modules })
    }

    /// Reads the table again if a module was loaded or unloaded since: a REJECT rule loads
    /// `nf_reject_ipv4` on first use, which may be after udptrace started.
    pub fn refresh_if_modules_changed(&mut self) {
        let modules = fs::read_to_string("/proc/modules").unwrap_or_default();
        if modules != self.modules
            && let Ok(fresh) = Self::load()
        {
            *self = fresh;
        }
        release_freed();
    }

    /// The function containing `addr`, if it is above the first known symbol.
    pub fn function(&self, addr: u64) -> Option<&str> {
        self.symbols.function(addr)
    }

    pub fn classify(&self, stack: &[u64], family: Family, icmp_type: u8, code: u8) -> Cause {
        classify(stack.iter().map(|&addr| self.function(addr)), family, icmp_type, code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Kallsyms {
        parse(
            "ffffffff81000000 T _stext\n\
             ffffffff81100000 t bpf_trace_run3\n\
             ffffffff81200000 T __icmp_send\n\
             ffffffff81300000 T __udp4_lib_rcv\n\
             ffffffff81400000 t ip_error\n\
             ffffffff81500000 T ip_forward\n\
             ffffffff81600000 d some_data\n\
             ffffffffa0000000 t nf_send_unreach\t[nf_reject_ipv4]\n\
             ffffffffa0001000 t ip_do_fragment.constprop.0\n",
            String::new(),
        )
    }

    #[test]
    fn symbolises_addresses_inside_functions() {
        let k = table();
        assert_eq!(k.function(0xffffffff81200010), Some("__icmp_send"));
        assert_eq!(k.function(0xffffffff81300000), Some("__udp4_lib_rcv"));
        // Data symbols are skipped: the address belongs to the text symbol before it.
        assert_eq!(k.function(0xffffffff81600010), Some("ip_forward"));
        assert_eq!(k.function(0xffffffffa0000044), Some("nf_send_unreach"));
        assert_eq!(k.function(0x1000), None);
    }

    /// Another tool's kretprobe on the sender had replaced its return address (5.10 to 5.14 cannot unwind
    /// past its trampoline): the caller is unknown, not some other path; the ICMP type still says what it can.
    #[test]
    fn a_kretprobe_trampoline_above_the_sender_leaves_the_cause_unknown() {
        let frames = |caller: &'static str| [Some("__icmp_send"), Some(caller), Some("__udp4_lib_rcv")];
        assert_eq!(classify(frames("kretprobe_trampoline"), Family::Ipv4, 3, 3), Cause::Unknown);
        assert_eq!(classify(frames("__kretprobe_trampoline"), Family::Ipv4, 3, 3), Cause::Unknown);
        assert_eq!(classify(frames("kretprobe_trampoline"), Family::Ipv4, 11, 0), Cause::TtlExceeded);
        assert_eq!(classify(frames("ip_local_deliver_finish"), Family::Ipv4, 3, 3), Cause::NoListener);
    }

    #[test]
    fn the_caller_of_icmp_send_decides_the_cause() {
        let k = table();
        let stack = |caller: u64| [0xffffffff81100010, 0xffffffff81200010, caller, 0xffffffff81000010];
        assert_eq!(k.classify4(&stack(0xffffffff81300050), 3, 3), Cause::NoListener);
        assert_eq!(k.classify4(&stack(0xffffffffa0000050), 3, 3), Cause::FirewallReject);
        assert_eq!(k.classify4(&stack(0xffffffff81400050), 3, 1), Cause::NoRoute);
        assert_eq!(k.classify4(&stack(0xffffffff81500050), 11, 0), Cause::TtlExceeded);
        assert_eq!(k.classify4(&stack(0xffffffff81500050), 3, 4), Cause::FragNeeded);
        assert_eq!(k.classify4(&stack(0xffffffffa0001050), 3, 4), Cause::FragNeeded);
    }

    #[test]
    fn frames_below_the_sender_and_unknown_frames_do_not_decide() {
        let k = table();
        // A REJECT frame below __icmp_send (tracing glue side) is ignored.
        assert_eq!(k.classify4(&[0xffffffffa0000050, 0xffffffff81200010, 0xffffffff81000010], 3, 3), Cause::Other);
        // No __icmp_send frame at all: nothing decides.
        assert_eq!(k.classify4(&[0xffffffff81300050], 3, 3), Cause::Other);
        assert_eq!(k.classify4(&[], 3, 3), Cause::Other);
        assert_eq!(classify([Some("__icmp_send"), None, Some("ip_error.cold")], Family::Ipv4, 3, 0), Cause::NoRoute);
    }

    #[test]
    fn a_trampoline_stands_for_the_function_it_traces() {
        // 7.x: fentry's stack has no __icmp_send frame, only the trampoline's.
        let stack = ["bpf_prog_070e6e4707be90c2_fentry_icmp_send", "bpf_trampoline_6442537206", "udp_rcv"];
        assert_eq!(by_names(&stack, Family::Ipv4, 3, 3), Cause::NoListener);
        let stack = ["bpf_prog_1_fentry_icmp_send", "bpf_trampoline_72030_0", "__icmp_send", "__udp4_lib_rcv"];
        assert_eq!(by_names(&stack, Family::Ipv4, 3, 3), Cause::NoListener);
        // A trampoline rebuilt since the symbols were read: its address takes the name before it.
        let stack =
            ["bpf_prog_1_fentry_icmp_send", "nf_conntrack_helper_fini", "ipv4_link_failure", "arp_error_report"];
        assert_eq!(by_names(&stack, Family::Ipv4, 3, 1), Cause::NeighbourUnreachable);
    }

    fn parse(text: &str, modules: String) -> Kallsyms {
        Kallsyms { symbols: Table::parse(text.as_bytes()).unwrap(), modules }
    }

    impl Kallsyms {
        fn classify4(&self, stack: &[u64], icmp_type: u8, code: u8) -> Cause {
            self.classify(stack, Family::Ipv4, icmp_type, code)
        }
    }

    fn by_names(names: &[&'static str], family: Family, icmp_type: u8, code: u8) -> Cause {
        classify(names.iter().map(|&n| Some(n)), family, icmp_type, code)
    }

    #[test]
    fn a_link_failure_is_the_neighbour_when_neighbour_resolution_gave_up() {
        let arp = ["bpf_trace_run3", "__icmp_send", "ipv4_send_dest_unreach", "ipv4_link_failure", "arp_error_report"];
        assert_eq!(by_names(&arp, Family::Ipv4, 3, 1), Cause::NeighbourUnreachable);
        let nd = ["icmp6_send", "icmpv6_send", "ip6_link_failure", "ndisc_error_report", "neigh_invalidate"];
        assert_eq!(by_names(&nd, Family::Ipv6, 1, 3), Cause::NeighbourUnreachable);
        // A tunnel's dst_link_failure(): a route that failed, not a neighbour.
        let tunnel = ["__icmp_send", "ipv4_link_failure", "ip_tunnel_xmit", "ipgre_xmit"];
        assert_eq!(by_names(&tunnel, Family::Ipv4, 3, 1), Cause::NoRoute);
    }

    #[test]
    fn tunnel_senders_and_unknown_callers_fall_back_on_the_icmp_type() {
        // WireGuard without a peer for the address, through icmp_ndo_send().
        assert_eq!(by_names(&["__icmp_send", "icmp_ndo_send", "wg_xmit"], Family::Ipv4, 3, 1), Cause::NoRoute);
        assert_eq!(by_names(&["__icmp_send", "ip_vs_leave"], Family::Ipv4, 3, 3), Cause::NoBackend);
        // A PMTU error from a tunnel or xfrm: no known caller, the type decides.
        assert_eq!(
            by_names(&["__icmp_send", "icmp_ndo_send", "ip_md_tunnel_xmit"], Family::Ipv4, 3, 4),
            Cause::FragNeeded
        );
        assert_eq!(by_names(&["icmp6_send", "ip6_fragment"], Family::Ipv6, 2, 0), Cause::FragNeeded);
        assert_eq!(by_names(&["__icmp_send", "decrement_ttl"], Family::Ipv4, 11, 0), Cause::TtlExceeded);
        assert_eq!(by_names(&["icmp6_send", "decrement_ttl"], Family::Ipv6, 3, 0), Cause::TtlExceeded);
        // IPv4 3/0 is a network unreachable, not a time exceeded.
        assert_eq!(by_names(&["__icmp_send", "somewhere"], Family::Ipv4, 3, 0), Cause::Other);
        assert_eq!(by_names(&["__icmp_send", "somewhere"], Family::Ipv4, 11, 1), Cause::Other);
    }
}
