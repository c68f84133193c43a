//! The attach ladder, as data: each logical hook and, per mode, the programs that implement it, what they
//! attach to and the kernel that first has it. The loader walks this table and `udptrace probes` prints
//! it; a test checks it against the programs in the eBPF object (`loader.rs`).

use std::fmt;

use crate::domain::AttachMode;

/// Where one program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A kernel function, on entry, through a BPF trampoline (needs the function in BTF).
    FEntry(&'static str),
    /// A kernel function, on return, through a BPF trampoline.
    FExit(&'static str),
    Kprobe(&'static str),
    Kretprobe(&'static str),
    /// A tracepoint, by its name without the category (`sock:inet_sk_error_report` is
    /// `inet_sk_error_report`); `category` is for display. Attached as `tp_btf` (5.5): a raw tracepoint
    /// whose arguments the verifier types from the kernel's BTF (`btf_trace_<name>`), so that a program
    /// loads their members without a helper call.
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// A socket's life, through the root of the cgroup v2 hierarchy.
    Cgroup(CgroupHook),
}

/// The cgroup attach points udptrace uses (`enum bpf_attach_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupHook {
    /// `socket()`: `BPF_CGROUP_INET_SOCK_CREATE` (4.10).
    SockCreate,
    /// The socket's last close: `BPF_CGROUP_INET_SOCK_RELEASE` (5.9).
    SockRelease,
    /// `connect()`: `BPF_CGROUP_INET4_CONNECT`, `BPF_CGROUP_INET6_CONNECT` (4.17).
    Connect4,
    Connect6,
}

impl CgroupHook {
    /// Its `enum bpf_attach_type` value (include/uapi/linux/bpf.h).
    pub const fn attach_type(self) -> u32 {
        match self {
            Self::SockCreate => 2,
            Self::Connect4 => 10,
            Self::Connect6 => 11,
            Self::SockRelease => 34,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::FEntry(func) => write!(f, "fentry:{func}"),
            Target::FExit(func) => write!(f, "fexit:{func}"),
            Target::Kprobe(func) => write!(f, "kprobe:{func}"),
            Target::Kretprobe(func) => write!(f, "kretprobe:{func}"),
            Target::Tracepoint { category, name } => write!(f, "{category}:{name}"),
            Target::Cgroup(CgroupHook::SockCreate) => write!(f, "cgroup/sock_create"),
            Target::Cgroup(CgroupHook::SockRelease) => write!(f, "cgroup/sock_release"),
            Target::Cgroup(CgroupHook::Connect4) => write!(f, "cgroup/connect4"),
            Target::Cgroup(CgroupHook::Connect6) => write!(f, "cgroup/connect6"),
        }
    }
}

/// One program of a variant: the name of the function in the eBPF object, and where it attaches. One
/// program may attach to several targets (a kretprobe shared by the IPv4 and IPv6 functions).
#[derive(Clone, Copy, Debug)]
pub struct Program {
    pub name: &'static str,
    pub target: Target,
    /// Attached instead when `target` cannot be, with the reason the kernel may refuse it. A fallback may
    /// have a fallback of its own: they are tried in order.
    pub fallback: Option<(&'static Program, &'static str)>,
}

const fn program(name: &'static str, target: Target) -> Program {
    Program { name, target, fallback: None }
}

impl Program {
    const fn or(self, fallback: &'static Program, why: &'static str) -> Program {
        Program { fallback: Some((fallback, why)), ..self }
    }

    /// This program and its fallbacks, in the order they are tried.
    pub fn chain(&'static self) -> impl Iterator<Item = &'static Program> {
        std::iter::successors(Some(self), |p| p.fallback.map(|(f, _)| f))
    }
}

/// 7.2 removed UDP-Lite and folded `__udp4_lib_err(skb, info, udptable)` into the protocol handler
/// `int udp_err(skb, info)`, and `__udp6_lib_err(skb, opt, type, code, offset, info, udptable)` into
/// `static int udpv6_err(skb, opt, type, code, offset, info)` (net/ipv4/udp.c, net/ipv6/udp.c): the same
/// leading arguments and the same return values, one argument fewer. Before 7.2 both are wrappers around the
/// `__udp*_lib_err` functions, which are tried first.
const FOLDED: &str = "__udp4_lib_err and __udp6_lib_err are folded into udp_err and udpv6_err from 7.2";
const FENTRY_UDP_ERR: Program = program("fentry_udp_err", FEntry("udp_err"));
const FEXIT_UDP_ERR: Program = program("fexit_udp_err", FExit("udp_err"));
const KPROBE_UDP_ERR: Program = program("kprobe_udp4_lib_err", Kprobe("udp_err"));
const KRETPROBE_UDP_ERR: Program = program("kretprobe_udp_lib_err", Kretprobe("udp_err"));
const KPROBE_UDPV6_ERR: Program = program("kprobe_udp6_lib_err", Kprobe("udpv6_err"));
const KRETPROBE_UDPV6_ERR: Program = program("kretprobe_udp_lib_err", Kretprobe("udpv6_err"));

/// BPF trampolines take at most six arguments on x86_64 before 6.5 ("bpf, x86: allow function arguments up
/// to 12 for TRACING", `arch/x86/net/bpf_jit_comp.c`); `__udp6_lib_err` takes seven. Its wrapper `udpv6_err`
/// takes six, but 5.10's BTF lacks it and 6.1 refuses to patch it (EBUSY); `icmpv6_notify`, which calls it
/// through the protocol table, takes four. arm64's take eight from 6.4, where they first attach to a kernel
/// function (`arch/arm64/net/bpf_jit_comp.c`).
const SEVEN_ARGUMENTS: &str = "a BPF trampoline cannot take a 7-argument function before 6.5 on x86_64";
const FENTRY_UDPV6_ERR: Program =
    program("fentry_udpv6_err", FEntry("udpv6_err")).or(&FENTRY_ICMPV6_NOTIFY, "udpv6_err cannot be traced");
const FEXIT_UDPV6_ERR: Program =
    program("fexit_udpv6_err", FExit("udpv6_err")).or(&FEXIT_ICMPV6_NOTIFY, "udpv6_err cannot be traced");
const FENTRY_ICMPV6_NOTIFY: Program = program("fentry_icmpv6_notify", FEntry("icmpv6_notify"));
const FEXIT_ICMPV6_NOTIFY: Program = program("fexit_icmpv6_notify", FExit("icmpv6_notify"));

/// `bool icmp_global_allow(struct net *net)` takes the namespace from 6.10 (and 6.1.y, 6.6.y backports;
/// net/ipv4/icmp.c), nothing before: fexit finds the return value after the arguments.
const GLOBAL_ALLOW_NOARGS: &str = "icmp_global_allow takes no argument before 6.10";
const FEXIT_GLOBAL_ALLOW_NOARGS: Program = program("fexit_global_allow_noargs", FExit("icmp_global_allow"));

/// fentry and fexit on a kernel function: x86_64 from 5.5 (`arch/x86/net/bpf_jit_comp.c`); arm64 from 6.4,
/// when ftrace first calls a BPF trampoline from a function's entry ("arm64: ftrace: Add direct call support",
/// arch/arm64/kernel/ftrace.c). Before, arm64's `register_fentry()` (kernel/bpf/trampoline.c) answers ENOTSUPP
/// (524), which `udptrace probes` shows.
const TRAMPOLINES: &str = "BPF trampolines on kernel functions: x86_64 5.5, arm64 6.4";

/// `void sk_error_report(struct sock *sk)` is 5.12 (net/core/sock.c); before, `__udp4_lib_err` calls
/// `sk->sk_error_report(sk)` directly, which is `sock_def_error_report` for every socket a process opened
/// (a kernel socket, such as SUNRPC's, may set its own).
const NO_SK_ERROR_REPORT: &str = "sk_error_report is 5.12: before, the kernel calls sock_def_error_report";
const FENTRY_SOCK_DEF_ERROR_REPORT: Program = program("fentry_sock_def_error_report", FEntry("sock_def_error_report"));
const KPROBE_SOCK_DEF_ERROR_REPORT: Program = program("kprobe_sk_error_report", Kprobe("sock_def_error_report"));

/// One way (mode) to implement a logical hook. All its programs attach, or none does.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub mode: AttachMode,
    pub programs: &'static [Program],
    /// The first kernel that has what this variant needs, with the stable backports.
    pub since: &'static str,
    /// What this mode cannot see for this hook, said in `udptrace probes` and docs/kernels.md.
    pub limits: &'static str,
}

/// A logical hook: one question udptrace asks the kernel, answerable in one or more modes.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    pub name: &'static str,
    /// What the hook observes, in the user's words.
    pub observes: &'static str,
    pub variants: &'static [Variant],
}

impl Hook {
    pub fn variant(&self, mode: AttachMode) -> Option<&'static Variant> {
        self.variants.iter().find(|v| v.mode == mode)
    }

    /// The modes to try for this hook when the user asked for `wanted`: a hook that exists in one mode only
    /// (a cgroup program; the tracepoint every kernel has for drops) is that, whatever the mode.
    pub fn modes(&self, wanted: &[AttachMode]) -> Vec<AttachMode> {
        match self.variants {
            [only] => vec![only.mode],
            _ => wanted.to_vec(),
        }
    }
}

use Target::{Cgroup, FEntry, FExit, Kprobe, Kretprobe, Tracepoint};

/// The hooks' names, for the code that asks which mode one attached in.
pub const SOCKET_ERROR: &str = "socket_error";
pub const SOCKET_OWNER: &str = "socket_owner";
pub const ICMP_SEND: &str = "icmp_send";
pub const UDP_DROPPED: &str = "udp_dropped";

pub static HOOKS: &[Hook] = &[
    Hook {
        name: SOCKET_ERROR,
        observes: "an ICMP error reaching a UDP socket (socket_error)",
        variants: &[
            Variant {
                mode: AttachMode::FEntry,
                programs: &[
                    program("fentry_udp4_lib_err", FEntry("__udp4_lib_err")).or(&FENTRY_UDP_ERR, FOLDED),
                    program("fexit_udp4_lib_err", FExit("__udp4_lib_err")).or(&FEXIT_UDP_ERR, FOLDED),
                    program("fentry_udp6_lib_err", FEntry("__udp6_lib_err")).or(&FENTRY_UDPV6_ERR, SEVEN_ARGUMENTS),
                    program("fexit_udp6_lib_err", FExit("__udp6_lib_err")).or(&FEXIT_UDPV6_ERR, SEVEN_ARGUMENTS),
                    program("fentry_sk_error_report", FEntry("sk_error_report"))
                        .or(&FENTRY_SOCK_DEF_ERROR_REPORT, NO_SK_ERROR_REPORT),
                ],
                since: TRAMPOLINES,
                limits: "every verdict, with the ICMP header, IPv4 and IPv6 (where neither __udp6_lib_err nor udpv6_err \
                         can be traced, as on 5.10 and 6.1: IPv6 through icmpv6_notify, which does not say that no \
                         socket matched, nor see quoted packets with extension headers); an error reported to no \
                         socket is named from the namespace's socket table (sock_diag)",
            },
            Variant {
                mode: AttachMode::Kprobe,
                programs: &[
                    program("kprobe_udp4_lib_err", Kprobe("__udp4_lib_err")).or(&KPROBE_UDP_ERR, FOLDED),
                    program("kprobe_udp6_lib_err", Kprobe("__udp6_lib_err")).or(&KPROBE_UDPV6_ERR, FOLDED),
                    program("kretprobe_udp_lib_err", Kretprobe("__udp4_lib_err")).or(&KRETPROBE_UDP_ERR, FOLDED),
                    program("kretprobe_udp_lib_err", Kretprobe("__udp6_lib_err")).or(&KRETPROBE_UDPV6_ERR, FOLDED),
                    program("kprobe_sk_error_report", Kprobe("sk_error_report"))
                        .or(&KPROBE_SOCK_DEF_ERROR_REPORT, NO_SK_ERROR_REPORT),
                ],
                since: "CONFIG_KPROBES",
                limits: "every verdict, with the ICMP header, IPv4 and IPv6 (no_socket for IPv6 too); an error reported \
                         to no socket is named from the namespace's socket table (sock_diag)",
            },
            Variant {
                mode: AttachMode::Tracepoint,
                programs: &[program(
                    "tp_inet_sk_error_report",
                    Tracepoint { category: "sock", name: "inet_sk_error_report" },
                )],
                since: "5.14",
                limits: "delivered errors only, without the ICMP header; no remote for unconnected sockets",
            },
        ],
    },
    Hook {
        name: SOCKET_OWNER,
        observes: "which process created or last connected each UDP socket (pid/comm/cgroup of socket_error)",
        // In socket(), connect() and the last close, in every mode: no program runs per datagram.
        variants: &[Variant {
            mode: AttachMode::Cgroup,
            programs: &[
                program("cgroup_sock_create", Cgroup(CgroupHook::SockCreate)),
                program("cgroup_connect4", Cgroup(CgroupHook::Connect4)),
                program("cgroup_connect6", Cgroup(CgroupHook::Connect6)),
                program("cgroup_sock_release", Cgroup(CgroupHook::SockRelease)),
            ],
            since: "5.9 (cgroup/sock_release; sock_create 4.10, connect4/6 4.17), 5.7 (bpf links, which the kernel \
                    detaches when udptrace exits); a cgroup v2 hierarchy; CAP_NET_ADMIN",
            limits: "the process that created or last connected each UDP socket while udptrace ran; sockets created \
                     before are found through /proc (the first holder that is not PID 1, and how many hold it)",
        }],
    },
    Hook {
        name: ICMP_SEND,
        observes: "an ICMP error this host sends (icmp_sent)",
        variants: &[
            Variant {
                mode: AttachMode::FEntry,
                // The exits go in first: a call already under way when udptrace starts then ends unseen,
                // rather than leaving its entry behind (`icmp_send_exit`).
                programs: &[
                    program("fexit_icmp_send", FExit("__icmp_send")),
                    program("fexit_icmp6_send", FExit("icmp6_send")),
                    program("fentry_icmp_send", FEntry("__icmp_send")),
                    program("fentry_icmp6_send", FEntry("icmp6_send")),
                    program("fentry_ip_push_pending_frames", FEntry("ip_push_pending_frames")),
                    program("fentry_ip6_push_pending_frames", FEntry("ip6_push_pending_frames")),
                    program("fexit_icmp_global_allow", FExit("icmp_global_allow"))
                        .or(&FEXIT_GLOBAL_ALLOW_NOARGS, GLOBAL_ALLOW_NOARGS),
                    program("fexit_inet_peer_xrlim_allow", FExit("inet_peer_xrlim_allow")),
                ],
                since: TRAMPOLINES,
                limits: "IPv4 and IPv6; each ICMP error a rate limit stopped, with its packet",
            },
            Variant {
                mode: AttachMode::Kprobe,
                // The kretprobes go in before the kprobes on the same functions. A kprobe added later runs
                // first (kernel/kprobes.c, add_new_kprobe: the newest at the head of the list), so it records
                // the kernel stack before the kretprobe replaces the return address: before 5.14 the x86
                // unwinder stops at kretprobe_trampoline (arch/x86/kernel/unwind_orc.c), and every cause
                // would read `other`. A return seen before its entry is ignored (`icmp_send_exit`).
                programs: &[
                    program("kretprobe_icmp_send", Kretprobe("__icmp_send")),
                    program("kretprobe_icmp_send", Kretprobe("icmp6_send")),
                    program("kprobe_icmp_send", Kprobe("__icmp_send")),
                    program("kprobe_icmp6_send", Kprobe("icmp6_send")),
                    program("kprobe_push_pending_frames", Kprobe("ip_push_pending_frames")),
                    program("kprobe_push_pending_frames", Kprobe("ip6_push_pending_frames")),
                    program("kretprobe_global_allow", Kretprobe("icmp_global_allow")),
                    program("kretprobe_inet_peer_xrlim_allow", Kretprobe("inet_peer_xrlim_allow")),
                ],
                since: "5.0 (__icmp_send); CONFIG_KPROBES",
                limits: "IPv4 and IPv6; each ICMP error a rate limit stopped, with its packet",
            },
            Variant {
                mode: AttachMode::Tracepoint,
                programs: &[program("tp_icmp_send", Tracepoint { category: "icmp", name: "icmp_send" })],
                since: "6.10 (backported to 6.1.130, 6.6.81)",
                limits: "IPv4, and IPv6 port unreachables where the kernel drops the datagram they answer (the \
                         udp_dropped hook, 5.17+); rate-limited errors as per-namespace counts from the kernel's \
                         OutRateLimit counters (6.3+, and 6.1.y), every second; also an error the kernel then fails to \
                         queue (Icmp: OutErrors, a full ICMP socket in a flood), since the tracepoint fires just before",
            },
        ],
    },
    Hook {
        name: UDP_DROPPED,
        observes: "a UDP datagram the kernel drops, with its reason (udp_dropped)",
        // skb:kfree_skb fires for packets the kernel drops, never for those it delivers or sends: one
        // tracepoint, in every mode (a kprobe or fentry on kfree_skb_reason would see the same, later
        // renamed sk_skb_reason_drop, at a higher cost).
        variants: &[Variant {
            mode: AttachMode::Tracepoint,
            programs: &[program("tp_kfree_skb", Tracepoint { category: "skb", name: "kfree_skb" })],
            since: "5.10 (the drop reason 5.17, the socket that dropped it on receive 6.11)",
            limits: "the reason from 5.17 (before, only where: the kernel function); the socket and its owner, \
                     rcvbuf and queue length at the drop from 6.11; before, a socket that drops on receive is \
                     looked up in the socket table by the datagram's addresses, and its queue length is not known",
        }],
    },
];

/// The modes table of docs/kernels.md, from `HOOKS`: a row per hook and mode, with what it attaches to (each
/// program's fallbacks after it, with why), what it needs and what it sees. The page holds it between the
/// markers [`TABLE_START`] and [`TABLE_END`]; a unit test keeps the two equal (and writes it).
#[cfg(test)]
pub fn markdown_table() -> String {
    let mut out = String::from("| hook | mode | attaches to | needs | what it sees |\n|---|---|---|---|---|\n");
    for hook in HOOKS {
        for variant in hook.variants {
            let programs: Vec<String> = variant
                .programs
                .iter()
                .map(|program| {
                    let mut text = format!("`{}`", program.target);
                    let mut at = program;
                    while let Some((fallback, why)) = at.fallback {
                        text.push_str(&format!(", else `{}` ({why})", fallback.target));
                        at = fallback;
                    }
                    text
                })
                .collect();
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                hook.name,
                variant.mode,
                programs.join("; "),
                variant.since,
                variant.limits
            ));
        }
    }
    out
}

/// Where the modes table of docs/kernels.md starts and ends.
#[cfg(test)]
pub const TABLE_START: &str = "<!-- modes table: written from HOOKS in udptrace/src/kernel/hooks.rs -->";
#[cfg(test)]
pub const TABLE_END: &str = "<!-- end of the modes table -->";

#[cfg(test)]
mod tests {
    use super::*;

    /// The modes table of docs/kernels.md is `markdown_table()`. `UDPTRACE_WRITE_MODES_TABLE=1 cargo test -p
    /// udptrace modes_table` writes it there after a change to `HOOKS`.
    #[test]
    fn docs_modes_table_is_the_attach_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/kernels.md");
        let page = std::fs::read_to_string(path).expect("docs/kernels.md");
        let start =
            page.find(TABLE_START).expect("the modes table's start marker in docs/kernels.md") + TABLE_START.len();
        let end = start + page[start..].find(TABLE_END).expect("the modes table's end marker in docs/kernels.md");
        let table = format!("\n{}", markdown_table());
        if std::env::var_os("UDPTRACE_WRITE_MODES_TABLE").is_some() {
            std::fs::write(path, format!("{}{table}{}", &page[..start], &page[end..]))
                .expect("docs/kernels.md written");
            return;
        }
        assert!(
            page[start..end] == table,
            "the modes table of docs/kernels.md differs from HOOKS: UDPTRACE_WRITE_MODES_TABLE=1 cargo test -p \
             udptrace modes_table writes it"
        );
        assert!(HOOKS.iter().flat_map(|h| h.variants).all(|v| !v.limits.contains('|') && !v.since.contains('|')));
    }

    /// The kernel keeps 15 bytes of a program's name (`bpftool prog`, BPF statistics, the benchmark): two
    /// programs must not look alike there.

    #[test]
    fn cgroup_attach_types_are_the_kernels() {
        use aya_obj::generated::bpf_attach_type as kernel;
        assert_eq!(CgroupHook::SockCreate.attach_type(), kernel::BPF_CGROUP_INET_SOCK_CREATE as u32);
        assert_eq!(CgroupHook::SockRelease.attach_type(), kernel::BPF_CGROUP_INET_SOCK_RELEASE as u32);
        assert_eq!(CgroupHook::Connect4.attach_type(), kernel::BPF_CGROUP_INET4_CONNECT as u32);
        assert_eq!(CgroupHook::Connect6.attach_type(), kernel::BPF_CGROUP_INET6_CONNECT as u32);
    }
    #[test]
    fn program_names_differ_in_their_first_15_bytes() {
        let mut names: Vec<&str> = HOOKS
            .iter()
            .flat_map(|hook| hook.variants)
            .flat_map(|variant| variant.programs.iter())
            .flat_map(|program| program.chain().map(|p| p.name))
            .collect();
        names.sort_unstable();
        names.dedup();
        for pair in names.windows(2) {
            let short = |n: &str| n[..n.len().min(15)].to_owned();
            assert_ne!(short(pair[0]), short(pair[1]), "{} and {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn every_hook_has_every_mode_and_no_program_serves_two_variants() {
        let mut owners: Vec<(&str, AttachMode, &str)> = Vec::new();
        for hook in HOOKS {
            for mode in hook.modes(&AttachMode::LADDER) {
                let variant = hook.variant(mode).unwrap_or_else(|| panic!("{} has no {mode} variant", hook.name));
                assert!(!variant.programs.is_empty());
                for program in variant.programs.iter().flat_map(Program::chain) {
                    // The program's kind must match the mode it serves.
                    let kind_ok = matches!(
                        (mode, program.target),
                        (AttachMode::FEntry, Target::FEntry(_) | Target::FExit(_))
                            | (AttachMode::Kprobe, Target::Kprobe(_) | Target::Kretprobe(_))
                            | (AttachMode::Tracepoint, Target::Tracepoint { .. })
                            | (AttachMode::Cgroup, Target::Cgroup(_))
                    );
                    assert!(kind_ok, "{} in {mode} attaches as {}", program.name, program.target);
                    if let Some((fallback, why)) = program.fallback {
                        assert!(
                            !why.is_empty() && (fallback.name, fallback.target) != (program.name, program.target),
                            "{} has a bad fallback",
                            program.name
                        );
                    }
                    if let Some((_, other_mode, other_hook)) = owners.iter().find(|(n, ..)| *n == program.name) {
                        assert_eq!(
                            (*other_mode, *other_hook),
                            (mode, hook.name),
                            "{} serves two variants",
                            program.name
                        );
                    }
                    owners.push((program.name, mode, hook.name));
                }
            }
        }
    }
}
