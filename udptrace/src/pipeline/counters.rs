//! Rate-limited ICMP errors from the kernel's own counters, for tracepoint mode, where no hook sees the
//! rate limits: `Icmp: OutRateLimitGlobal OutRateLimitHost` in `/proc/net/snmp` (6.3+, backported to
//! 6.1.y) and `Icmp6OutRateLimitHost` in `/proc/net/snmp6`, per network namespace.
//!
//! What the counters cannot tell is not guessed: `icmpv6_global_allow()` counts in the IPv4
//! `OutRateLimitGlobal` (net/ipv6/icmp.c, 6.3 to 7.3), so the global count has no family; and
//! `icmpv6_xrlim_allow()` counts `Icmp6OutRateLimitHost` also when no route leads back to the packet's
//! source, which the explanation of an IPv6 per-host count says.
//!
//! Every namespace a process is in (`/proc/*/ns/net`) or that `ip netns` named (`/run/netns/*`) is read
//! each period from a thread that enters it (`/proc/thread-self/net/...` shows the reading thread's
//! namespace). Increases become `icmp_suppressed` events with a `count`.

use std::{
    collections::HashMap,
    fs::{self, File},
    time::SystemTime,
};

use super::netns;
use crate::domain::{AttachMode, Family, Meta, Scope};
use crate::events::{Event, IcmpSuppressed};

/// One namespace's rate-limit counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimits {
    /// IPv4 and IPv6 errors stopped by the global token bucket.
    pub global: u64,
    pub host: u64,
    pub host6: u64,
}

impl RateLimits {
    /// Reads the counters from `/proc/net/snmp` and `/proc/net/snmp6` text. Kernels without them read 0.
    pub fn parse(snmp: &str, snmp6: &str) -> Self {
        let mut limits = RateLimits::default();
        // /proc/net/snmp: a header line and a value line per protocol, both starting with `Icmp:`.
        let icmp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Icmp:")).collect();
        if let [names, values] = icmp[..] {
            for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                let value = value.parse().unwrap_or(0);
                match name {
                    "OutRateLimitGlobal" => limits.global = value,
                    "OutRateLimitHost" => limits.host = value,
                    _ => {}
                }
            }
        }
        for line in snmp6.lines() {
            let mut words = line.split_whitespace();
            if words.next() == Some("Icmp6OutRateLimitHost") {
                limits.host6 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        limits
    }

    /// What rose since `before`, as (family, scope, count); the global counter is both families'.
    pub fn increases(&self, before: &RateLimits) -> Vec<(Option<Family>, Scope, u64)> {
        [
            (None, Scope::Global, self.global.saturating_sub(before.global)),
            (Some(Family::Ipv4), Scope::Host, self.host.saturating_sub(before.host)),
            (Some(Family::Ipv6), Scope::Host, self.host6.saturating_sub(before.host6)),
        ]
        .into_iter()
        .filter(|(_, _, n)| *n > 0)
        .collect()
    }
}

/// Reads the counters of udptrace's own namespace, which needs no `setns` (nor CAP_SYS_ADMIN).
fn read_here() -> std::io::Result<RateLimits> {
    let snmp = fs::read_to_string("/proc/self/net/snmp")?;
    let snmp6 = fs::read_to_string("/proc/self/net/snmp6").unwrap_or_default();
    Ok(RateLimits::parse(&snmp, &snmp6))
}

/// Reads `ns`'s counters from a thread that enters it.
fn read_in(ns: &File) -> std::io::Result<RateLimits> {
    netns::inside(ns, || {
        let snmp = fs::read_to_string("/proc/thread-self/net/snmp")?;
        let snmp6 = fs::read_to_string("/proc/thread-self/net/snmp6").unwrap_or_default();
        Ok(RateLimits::parse(&snmp, &snmp6))
    })
}

/// Every namespace's counters, by inode (entering another takes CAP_SYS_ADMIN: the helper's work).
pub fn read_every_namespace() -> Vec<(u64, Result<RateLimits, String>)> {
    let own = netns::own();
    netns::namespaces()
        .iter()
        .map(|(&inode, ns)| {
            let read = if own == Some(inode) { read_here() } else { read_in(ns) };
            (inode, read.map_err(|e| e.to_string()))
        })
        .collect()
}

/// Every namespace's counters, by inode: [`read_every_namespace`] in a process that may enter them, the
/// helper's answer after the split.
pub type Reader = Box<dyn FnMut() -> Vec<(u64, Result<RateLimits, String>)>>;

/// Watches every namespace's counters.
pub struct Watcher {
    read: Reader,
    last: HashMap<u64, RateLimits>,
    /// Namespaces whose counters could not be read, said once each.
    unreadable: std::collections::HashSet<u64>,
}

impl Watcher {
    /// Takes the starting values: what was suppressed before udptrace started is not reported.
    pub fn start(read: Reader) -> Self {
        let mut watcher = Self { read, last: HashMap::new(), unreadable: Default::default() };
        watcher.last = watcher.read();
        watcher
    }

    /// From now on the counters are read by `read`.
    pub fn read_with(&mut self, read: Reader) {
        self.read = read;
    }

    /// Every namespace's counters; a namespace that cannot be entered is said once, not skipped in silence.
    fn read(&mut self) -> HashMap<u64, RateLimits> {
        let mut read = HashMap::new();
        for (inode, limits) in (self.read)() {
            match limits {
                Ok(limits) => {
                    read.insert(inode, limits);
                }
                Err(e) => {
                    if self.unreadable.len() < 4096 && self.unreadable.insert(inode) {
                        eprintln!(
                            "udptrace: warning: cannot read the ICMP rate-limit counters of network namespace \
                             {inode} ({e}; entering it needs CAP_SYS_ADMIN): its suppressed errors are not reported"
                        );
                    }
                }
            }
        }
        read
    }

    /// Reads every namespace again; returns an event per counter that rose. A namespace first seen now
    /// was created since the last poll, so its counters started at zero.
    pub fn poll(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let now = self.read();
        for (&inode, limits) in &now {
            let before = self.last.get(&inode).copied().unwrap_or_default();
            for (family, scope, count) in limits.increases(&before) {
                events.push(Event::IcmpSuppressed(IcmpSuppressed {
                    meta: Meta {
                        time: SystemTime::now(),
                        netns: u32::try_from(inode).unwrap_or(u32::MAX),
                        probe: AttachMode::Tracepoint,
                        pod: None,
                        packet: None,
                    },
                    family,
                    scope,
                    count,
                    attempt: None,
                }));
            }
        }
        self.last = now;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &str = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
        Icmp: InMsgs InErrors OutMsgs OutRateLimitGlobal OutRateLimitHost OutErrors\n\
        Icmp: 5 0 9 40 194 0\n\
        IcmpMsg: OutType3\nIcmpMsg: 9\n";
    const SNMP6: &str = "Icmp6InMsgs                     \t2\nIcmp6OutRateLimitHost           \t7\n";

    #[test]
    fn reads_the_rate_limit_counters() {
        assert_eq!(RateLimits::parse(SNMP, SNMP6), RateLimits { global: 40, host: 194, host6: 7 });
        // A kernel without the counters.
        assert_eq!(RateLimits::parse("Icmp: InMsgs\nIcmp: 3\n", ""), RateLimits::default());
    }

    #[test]
    fn reports_only_what_rose() {
        let before = RateLimits { global: 40, host: 194, host6: 7 };
        let now = RateLimits { global: 40, host: 200, host6: 9 };
        assert_eq!(
            now.increases(&before),
            vec![(Some(Family::Ipv4), Scope::Host, 6), (Some(Family::Ipv6), Scope::Host, 2)]
        );
        assert!(before.increases(&before).is_empty());
        // The global counter is both families': IPv6's global limit counts in the IPv4 counter.
        let global = RateLimits { global: 45, ..before };
        assert_eq!(global.increases(&before), vec![(None, Scope::Global, 5)]);
    }

    /// The namespaces of this machine can be listed and read where /proc allows it (root, or our own).
    #[test]
    fn reads_this_namespace() {
        let Ok(own) = File::open("/proc/self/ns/net") else {
            return;
        };
        let limits = read_in(&own);
        assert!(limits.is_ok() || unsafe { libc::geteuid() } != 0);
    }
}
