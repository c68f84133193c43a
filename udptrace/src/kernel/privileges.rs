//! Checking, before anything is loaded, that this process may load eBPF programs, so that the error says
//! what is missing instead of a raw EPERM from the first map; and, once the programs are attached, giving
//! up every capability that only loading and attaching needed.

use anyhow::{Result, bail};
use caps::{CapSet, Capability, CapsHashSet};

/// What is missing from `effective` to trace: CAP_BPF and CAP_PERFMON (5.8+), or CAP_SYS_ADMIN, which
/// covers both on every kernel.
pub fn missing(effective: &CapsHashSet) -> Vec<&'static str> {
    if effective.contains(&Capability::CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !effective.contains(&Capability::CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !effective.contains(&Capability::CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Whether this process may load and attach cgroup programs: CAP_NET_ADMIN (or CAP_SYS_ADMIN). Unknown
/// counts as yes: the kernel's refusal then speaks.
pub fn may_attach_to_cgroups() -> bool {
    caps::read(None, CapSet::Effective)
        .map_or(true, |e| e.contains(&Capability::CAP_NET_ADMIN) || e.contains(&Capability::CAP_SYS_ADMIN))
}

/// Fails with one line naming the missing capabilities.
pub fn check() -> Result<()> {
    let Ok(effective) = caps::read(None, CapSet::Effective) else {
        // Without a readable capability set the kernel's own refusal will have to speak.
        return Ok(());
    };
    let missing = missing(&effective);
    if !missing.is_empty() {
        bail!("udptrace needs {} (or CAP_SYS_ADMIN) to load its eBPF programs: run it as root", missing.join(" and "));
    }
    Ok(())
}

/// What tracing still uses once the programs are attached and the metrics port is bound:
/// - CAP_SYS_ADMIN: `setns` into another network namespace, to ask its socket table (sock_diag) and read
///   its counters (`netns_install` wants it in the namespace's user namespace and in its own). The kernel
///   counts it as CAP_BPF and CAP_PERFMON too (`bpf_capable`, `perfmon_capable`): on 5.10 to 6.4 every
///   `bpf()` call, map reads through descriptors held included, needs one of them where unprivileged BPF is
///   off (kernel/bpf/syscall.c `__sys_bpf`; moved to map and program creation in 6.5).
/// - CAP_SYS_PTRACE: another process's `/proc/PID/fd` and `/proc/PID/ns/net` links, and `pidfd_getfd`
///   (the socket's owner and its namespace).
/// - CAP_DAC_READ_SEARCH: those `/proc/PID/fd` directories when another user owns them.
/// - CAP_SYSLOG: `/proc/kallsyms` with its addresses, read again when a module is loaded.
pub const KEPT: [Capability; 4] =
    [Capability::CAP_SYS_ADMIN, Capability::CAP_SYS_PTRACE, Capability::CAP_DAC_READ_SEARCH, Capability::CAP_SYSLOG];

/// Gives up every capability but [`KEPT`], from the bounding, permitted, effective, inheritable and ambient
/// sets, and returns the ones kept that this process had. Called on the thread that runs the session,
/// before any other starts (a thread takes its creator's sets), so that every thread holds at most these.
pub fn keep_only_what_tracing_uses() -> Result<Vec<Capability>> {
    let keep: CapsHashSet = KEPT.into_iter().collect();
    // The bounding set first: dropping from it takes CAP_SETPCAP, which goes with the others below. A
    // process without CAP_SETPCAP cannot, and its bounding set is then left as it is.
    let bounding = caps::read(None, CapSet::Bounding).unwrap_or_default();
    let may_bound = caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false);
    for cap in bounding.difference(&keep) {
        if may_bound {
            caps::drop(None, CapSet::Bounding, *cap)?;
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let effective: CapsHashSet = caps::read(None, CapSet::Effective)?.intersection(&keep).copied().collect();
    let permitted: CapsHashSet = caps::read(None, CapSet::Permitted)?.intersection(&keep).copied().collect();
    // Effective within permitted at every step: the effective set shrinks first.
    caps::set(None, CapSet::Effective, &effective)?;
    caps::set(None, CapSet::Permitted, &permitted)?;
    let mut kept: Vec<Capability> = effective.into_iter().collect();
    kept.sort_by_key(|c| c.index());
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        let set = |caps: &[Capability]| caps.iter().copied().collect::<CapsHashSet>();
        assert!(missing(&caps::all()).is_empty());
        assert!(missing(&set(&[Capability::CAP_SYS_ADMIN])).is_empty());
        assert!(missing(&set(&[Capability::CAP_BPF, Capability::CAP_PERFMON])).is_empty());
        assert_eq!(missing(&set(&[])), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing(&set(&[Capability::CAP_BPF, Capability::CAP_NET_ADMIN])), vec!["CAP_PERFMON"]);
    }

    /// The set read from this process agrees with /proc/self/status.
    #[test]
    fn reads_this_process_set() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
        let bits = u64::from_str_radix(hex, 16).unwrap();
        let effective = caps::read(None, CapSet::Effective).unwrap();
        assert_eq!(effective.contains(&Capability::CAP_SYS_ADMIN), bits & (1 << 21) != 0);
        assert_eq!(effective.contains(&Capability::CAP_BPF), bits & (1 << 39) != 0);
    }
}
