//! Checking, before anything is loaded, that this process may load eBPF programs, so that the error says
//! what is missing instead of a raw EPERM from the first map. Once the programs are attached, the process
//! splits and gives its capabilities up (the privileged helper keeps a few).

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
