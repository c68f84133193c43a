//! The attach ladder, as data: each logical hook and, per mode, the programs that implement it, what they
//! attach to and the kernel that first has it. The loader walks this table; `udptrace probes` prints it;
//! the README's mode table is written from it.

use std::fmt;

use clap::ValueEnum;

/// How a program attaches to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum AttachMode {
    /// fentry/fexit: BPF trampolines on kernel functions (BTF, x86_64 5.5+). Cheapest, sees arguments
    /// and return values.
    #[value(name = "fentry")]
    FEntry,
    /// kprobe/kretprobe: needs CONFIG_KPROBES.
    Kprobe,
    /// Tracepoints (stable ABI): the only mode on kernels without kprobes and fentry; sees less.
    Tracepoint,
}

impl AttachMode {
    /// The order `--probe auto` tries them in.
    pub const LADDER: [AttachMode; 3] = [AttachMode::FEntry, AttachMode::Kprobe, AttachMode::Tracepoint];

    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::FEntry => "fentry",
            AttachMode::Kprobe => "kprobe",
            AttachMode::Tracepoint => "tracepoint",
        }
    }

    pub fn from_probe_byte(byte: u8) -> Option<Self> {
        match byte {
            udptrace_common::probe::FENTRY => Some(AttachMode::FEntry),
            udptrace_common::probe::KPROBE => Some(AttachMode::Kprobe),
            udptrace_common::probe::TRACEPOINT => Some(AttachMode::Tracepoint),
            _ => None,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A raw tracepoint, by its name without the category (`sock:inet_sk_error_report` is
    /// `inet_sk_error_report`); `category` is for display.
    RawTracepoint { category: &'static str, name: &'static str },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::RawTracepoint { category, name } => write!(f, "{category}:{name}"),
        }
    }
}

/// One program of a variant: the name of the function in the eBPF object, and where it attaches.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    pub name: &'static str,
    pub target: Target,
}

/// One way (mode) to implement a logical hook. All its programs attach, or none does.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub mode: AttachMode,
    pub programs: &'static [Program],
    /// The first kernel that has what this variant needs, with the stable backports.
    pub since: &'static str,
    /// What this mode cannot see for this hook, said in `udptrace probes` and the README.
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
}

pub static HOOKS: &[Hook] = &[
    Hook {
        name: "socket_error",
        observes: "an ICMP error reaching a UDP socket (socket_error)",
        variants: &[Variant {
            mode: AttachMode::Tracepoint,
            programs: &[Program {
                name: "tp_inet_sk_error_report",
                target: Target::RawTracepoint { category: "sock", name: "inet_sk_error_report" },
            }],
            since: "5.14",
            limits: "only delivered errors; no ICMP header (icmp: null); remote unknown for unconnected sockets",
        }],
    },
    Hook {
        name: "icmp_send",
        observes: "an ICMP error this host sends (icmp_sent)",
        variants: &[Variant {
            mode: AttachMode::Tracepoint,
            programs: &[Program {
                name: "tp_icmp_send",
                target: Target::RawTracepoint { category: "icmp", name: "icmp_send" },
            }],
            since: "6.10 (backported to 6.1.130, 6.6.81)",
            limits: "IPv4 only; errors suppressed by rate limits are not seen",
        }],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_has_a_tracepoint_variant_and_unique_program_names() {
        let mut names = Vec::new();
        for hook in HOOKS {
            assert!(hook.variant(AttachMode::Tracepoint).is_some(), "{} has no tracepoint variant", hook.name);
            for variant in hook.variants {
                assert!(!variant.programs.is_empty());
                names.extend(variant.programs.iter().map(|p| p.name));
            }
        }
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a program is named by two variants");
    }
}
