//! Checking, before anything is loaded, that this process may load eBPF programs, so that the error says
//! what is missing instead of a raw EPERM from the first map.

use anyhow::{Result, bail};

/// Capability numbers (`include/uapi/linux/capability.h`).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set from `/proc/self/status` text (`CapEff:` in hex).
pub fn effective_capabilities(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// What is missing from `caps` to trace: CAP_BPF and CAP_PERFMON (5.8+), or CAP_SYS_ADMIN, which
/// covers both on every kernel.
pub fn missing(caps: u64) -> Vec<&'static str> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Fails with one line naming the missing capabilities.
pub fn check() -> Result<()> {
    let Some(caps) = std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(effective_capabilities)
    else {
        // Without /proc the kernel's own refusal will have to speak.
        return Ok(());
    };
    let missing = missing(caps);
    if !missing.is_empty() {
        bail!("udptrace needs {} (or CAP_SYS_ADMIN) to load its eBPF programs: run it as root", missing.join(" and "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_set() {
        let status =
            "Name:\tudptrace\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(effective_capabilities(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }

    #[test]
    fn names_what_is_missing() {
        assert!(missing(0x1ff_ffff_ffff).is_empty());
        assert!(missing(1 << CAP_SYS_ADMIN).is_empty());
        assert!(missing((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing(1 << CAP_BPF), vec!["CAP_PERFMON"]);
    }
}
