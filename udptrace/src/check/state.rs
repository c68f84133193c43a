//! What the evidence of a check says: one state, as UDP scanners name them, decided by the strongest
//! fact seen. Pure: the probe and the kernel's events come in, a state and its reason go out.

use std::net::{IpAddr, SocketAddr};

use strum::IntoStaticStr;

use udptrace_common::{icmp, icmpv6 as icmp6};

use crate::domain::{Direction, Family};

/// The answer `udptrace check` gives; each has an exit status of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoStaticStr)]
pub enum State {
    /// A datagram came back from the target.
    #[strum(serialize = "open")]
    Open,
    /// The target itself answered port unreachable: nothing listens there.
    #[strum(serialize = "closed")]
    Closed,
    /// A firewall answered or refused: another ICMP unreachable, a port unreachable from another address,
    /// or this host's firewall or routing policy refused the send.
    #[strum(serialize = "filtered")]
    Filtered,
    /// This host could not deliver it: no route, no answer to ARP/ND, the TTL ran out on the way.
    #[strum(serialize = "unreachable")]
    Unreachable,
    /// It left this host and nothing came back.
    #[strum(serialize = "open|filtered")]
    OpenFiltered,
}

impl State {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The exit status (README, `udptrace check --help`); 1 and 2 are runtime failure and bad usage.
    pub fn exit_code(self) -> u8 {
        match self {
            State::Open => 0,
            State::Closed => 3,
            State::Filtered => 4,
            State::Unreachable => 5,
            State::OpenFiltered => 6,
        }
    }
}

/// An ICMP error as the error queue gives it (`sock_extended_err`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuedIcmp {
    pub family: Family,
    pub icmp_type: u8,
    pub code: u8,
    pub errno: i32,
    /// Who sent it (`SO_EE_OFFENDER`); `None` when the kernel gave no address.
    pub from: Option<IpAddr>,
}

/// A local error the kernel queued (`SO_EE_ORIGIN_LOCAL`), or returned from `connect` or `send`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalError {
    /// `connect`, `send` or `error queue`.
    pub call: &'static str,
    pub errno: i32,
}

/// A drop of a probe, or of an answer to it, that the kernel's hooks saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenDrop {
    pub direction: Direction,
    pub reason: Option<String>,
    pub location: Option<String>,
}

impl SeenDrop {
    /// A netfilter verdict: the reason, or before 5.17 (no reasons) the function that frees on a drop
    /// verdict (`nf_hook_slow`, net/netfilter/core.c).
    pub fn by_firewall(&self) -> bool {
        match &self.reason {
            Some(reason) => reason.starts_with("netfilter") || reason.starts_with("ip_rpfilter"),
            None => self.location.as_deref() == Some("nf_hook_slow"),
        }
    }
}

/// Everything a check saw.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub target: Option<SocketAddr>,
    /// This end's address, as `connect` chose it.
    pub local: Option<SocketAddr>,
    pub answered: Option<usize>,
    pub icmp: Option<QueuedIcmp>,
    pub local_error: Option<LocalError>,
    /// From the kernel's hooks, as root.
    pub drops: Vec<SeenDrop>,
    /// This host's own kernel sent an ICMP error about the probe (it is what the error queue then holds),
    /// and why (`domain::Cause`).
    pub own_icmp_cause: Option<&'static str>,
    /// A rate limit stopped the ICMP error this host's kernel would have reported about the probe.
    pub own_icmp_suppressed: bool,
}

/// The state and the sentence that says why.
pub fn decide(facts: &Facts) -> (State, String) {
    if let Some(size) = facts.answered {
        let mut why = format!("a {size}-byte datagram came back");
        if let Some(drop) = facts.drops.iter().find(|d| d.direction == Direction::In) {
            why.push_str(&format!(", and this host dropped {}", describe_drop(drop)));
        }
        return (State::Open, why);
    }
    if let Some(icmp) = &facts.icmp {
        return from_icmp(icmp, facts);
    }
    if let Some(error) = &facts.local_error {
        return from_local_error(*error, facts);
    }
    if let Some(drop) = facts.drops.iter().find(|d| d.direction == Direction::Out) {
        let state = if drop.by_firewall() { State::Filtered } else { State::Unreachable };
        return (state, format!("this host dropped the probe: {}", describe_drop(drop)));
    }
    if facts.own_icmp_suppressed {
        return (
            State::Unreachable,
            "this host could not deliver it and a rate limit stopped the ICMP error that would have said why"
                .to_owned(),
        );
    }
    // The answer came back and this host dropped it: the service answered.
    if let Some(drop) = facts.drops.iter().find(|d| d.direction == Direction::In) {
        return (State::Open, format!("an answer came back and this host dropped it: {}", describe_drop(drop)));
    }
    (State::OpenFiltered, "it left this host and nothing came back".to_owned())
}

fn describe_drop(drop: &SeenDrop) -> String {
    match (&drop.reason, &drop.location) {
        (Some(reason), Some(at)) => format!("{reason} (in {at})"),
        (Some(reason), None) => reason.clone(),
        (None, Some(at)) => format!("in {at}"),
        (None, None) => "for a reason the kernel did not give".to_owned(),
    }
}

fn from_icmp(icmp: &QueuedIcmp, facts: &Facts) -> (State, String) {
    let target = facts.target.map(|t| t.ip());
    let name = crate::domain::icmp_name(icmp.family, icmp.icmp_type, icmp.code);
    let from = icmp.from.map_or_else(|| "an unknown sender".to_owned(), |f| f.to_string());
    let own = icmp.from.is_some() && icmp.from == facts.local.map(|l| l.ip());
    let (unreachable, port, prohibited, host_unreachable, time_exceeded) = match icmp.family {
        Family::Ipv4 => (
            icmp.icmp_type == icmp::DEST_UNREACH,
            icmp.code == icmp::PORT_UNREACH,
            matches!(icmp.code, icmp::NET_ANO | icmp::HOST_ANO | icmp::PKT_FILTERED),
            icmp.code == icmp::HOST_UNREACH,
            icmp.icmp_type == icmp::TIME_EXCEEDED,
        ),
        Family::Ipv6 => (
            icmp.icmp_type == icmp6::DEST_UNREACH,
            icmp.code == icmp6::PORT_UNREACH,
            icmp.code == icmp6::ADM_PROHIBITED,
            icmp.code == icmp6::ADDR_UNREACH,
            icmp.icmp_type == icmp6::TIME_EXCEED,
        ),
    };
    let state = if time_exceeded {
        State::Unreachable
    } else if !unreachable {
        // A redirect, a parameter problem, a packet-too-big: no answer about the port.
        return (State::OpenFiltered, format!("{name} from {from}, which says nothing of the port"));
    } else if port && icmp.from.is_some() && icmp.from == target {
        State::Closed
    } else if own && host_unreachable {
        // The kernel answers itself when the neighbour entry fails (ipv4_link_failure, ip6_link_failure).
        State::Unreachable
    } else if prohibited || icmp.from != target || port {
        State::Filtered
    } else {
        // The target itself says its host or network is unreachable: nothing listens at the address.
        State::Unreachable
    };
    let why = match state {
        State::Closed => format!("{name} from {from}: nothing listens there"),
        State::Unreachable if own => {
            let what = match (facts.own_icmp_cause, icmp.family) {
                (Some("no_route"), _) => "no route",
                (_, Family::Ipv4) => "the next hop did not answer ARP",
                (_, Family::Ipv6) => "the next hop did not answer neighbour discovery",
            };
            format!("{name} from this host ({from}): {what}")
        }
        State::Unreachable if time_exceeded => format!("{name} from {from}: the TTL ran out on the way"),
        State::Filtered if port => {
            format!("{name} from {from}, not from the target: a firewall on the path rejects it")
        }
        State::Filtered if prohibited => format!("{name} from {from}: a firewall rejects it"),
        State::Filtered => format!("{name} from {from}, a router on the path"),
        _ => format!("{name} from {from}"),
    };
    (state, why)
}

fn from_local_error(error: LocalError, facts: &Facts) -> (State, String) {
    let name = crate::domain::errno_name(error.errno).unwrap_or("an error");
    let firewall = facts.drops.iter().find(|d| d.direction == Direction::Out && d.by_firewall());
    match error.errno {
        libc::EPERM => {
            let how = firewall.map(|d| format!(": {}", describe_drop(d))).unwrap_or_default();
            (State::Filtered, format!("{} failed with {name}: this host's firewall refused it{how}", error.call))
        }
        libc::EACCES => (
            State::Filtered,
            format!("{} failed with {name}: a prohibit route or a firewall of this host refused it", error.call),
        ),
        libc::ENETUNREACH | libc::EHOSTUNREACH => {
            (State::Unreachable, format!("{} failed with {name}: this host has no route there", error.call))
        }
        libc::ECONNREFUSED => (State::Closed, format!("{} failed with {name}", error.call)),
        _ => {
            let drop = facts.drops.iter().find(|d| d.direction == Direction::Out);
            let how = drop.map(|d| format!(": this host dropped it, {}", describe_drop(d))).unwrap_or_default();
            (State::Unreachable, format!("{} failed with {name}{how}", error.call))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "10.0.0.2:53";
    const LOCAL: &str = "10.0.0.1:40000";

    fn facts() -> Facts {
        Facts { target: Some(TARGET.parse().unwrap()), local: Some(LOCAL.parse().unwrap()), ..Facts::default() }
    }

    fn with_icmp(icmp_type: u8, code: u8, from: &str) -> Facts {
        let from = Some(from.parse().unwrap());
        Facts {
            icmp: Some(QueuedIcmp { family: Family::Ipv4, icmp_type, code, errno: libc::EHOSTUNREACH, from }),
            ..facts()
        }
    }

    #[test]
    fn an_answer_is_open_whatever_else_came() {
        let mut f = with_icmp(3, 3, "10.0.0.2");
        f.answered = Some(12);
        assert_eq!(decide(&f).0, State::Open);
    }

    #[test]
    fn port_unreachable_is_closed_only_from_the_target() {
        assert_eq!(decide(&with_icmp(3, 3, "10.0.0.2")).0, State::Closed);
        let (state, why) = decide(&with_icmp(3, 3, "10.0.0.254"));
        assert_eq!(state, State::Filtered);
        assert!(why.contains("not from the target"), "{why}");
    }

    #[test]
    fn prohibited_and_routers_are_filtered() {
        for code in [9, 10, 13] {
            assert_eq!(decide(&with_icmp(3, code, "10.0.0.2")).0, State::Filtered, "code {code}");
        }
        assert_eq!(decide(&with_icmp(3, 1, "10.0.0.254")).0, State::Filtered);
        assert_eq!(decide(&with_icmp(3, 1, "10.0.0.2")).0, State::Unreachable);
    }

    #[test]
    fn this_hosts_own_host_unreachable_is_a_neighbour_failure() {
        let (state, why) = decide(&with_icmp(3, 1, "10.0.0.1"));
        assert_eq!(state, State::Unreachable);
        assert!(why.contains("did not answer ARP"), "{why}");
        let v6 = Facts {
            target: Some("[fd00::2]:53".parse().unwrap()),
            local: Some("[fd00::1]:40000".parse().unwrap()),
            icmp: Some(QueuedIcmp {
                family: Family::Ipv6,
                icmp_type: 1,
                code: 3,
                errno: libc::EHOSTUNREACH,
                from: Some("fd00::1".parse().unwrap()),
            }),
            ..Facts::default()
        };
        assert_eq!(decide(&v6).0, State::Unreachable);
    }

    #[test]
    fn time_exceeded_is_unreachable() {
        assert_eq!(decide(&with_icmp(11, 0, "10.0.0.254")).0, State::Unreachable);
    }

    #[test]
    fn local_errors() {
        let local = |errno| Facts { local_error: Some(LocalError { call: "send", errno }), ..facts() };
        assert_eq!(decide(&local(libc::EPERM)).0, State::Filtered);
        assert_eq!(decide(&local(libc::EACCES)).0, State::Filtered);
        assert_eq!(decide(&local(libc::ENETUNREACH)).0, State::Unreachable);
        let mut f = local(libc::EPERM);
        f.drops.push(SeenDrop {
            direction: Direction::Out,
            reason: Some("netfilter_drop".to_owned()),
            location: Some("nf_hook_slow".to_owned()),
        });
        assert!(decide(&f).1.contains("netfilter_drop"), "{}", decide(&f).1);
    }

    #[test]
    fn silence_is_open_filtered_unless_the_kernel_saw_a_drop() {
        assert_eq!(decide(&facts()).0, State::OpenFiltered);
        let mut f = facts();
        f.drops.push(SeenDrop { direction: Direction::Out, reason: Some("neigh_failed".to_owned()), location: None });
        assert_eq!(decide(&f).0, State::Unreachable);
        let mut f = facts();
        f.drops.push(SeenDrop { direction: Direction::Out, reason: None, location: Some("nf_hook_slow".to_owned()) });
        assert_eq!(decide(&f).0, State::Filtered);
        let mut f = facts();
        f.drops.push(SeenDrop { direction: Direction::In, reason: Some("netfilter_drop".to_owned()), location: None });
        assert_eq!(decide(&f).0, State::Open);
    }

    #[test]
    fn every_state_has_its_own_exit_status() {
        let states = [State::Open, State::Closed, State::Filtered, State::Unreachable, State::OpenFiltered];
        let mut codes: Vec<u8> = states.iter().map(|s| s.exit_code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), states.len());
        assert!(!codes.contains(&1) && !codes.contains(&2));
    }
}
