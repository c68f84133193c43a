//! Plain English: names for ICMP types and codes and IP protocols, and what each verdict, cause and rate
//! limit means for the application.

use udptrace_common::{icmp, icmpv6};

use crate::{
    domain::{Cause, Dns, Family, IcmpSent, IcmpSuppressed, Scope, SocketError, UdpDropped, Verdict},
    kernel::tables::errno_name,
};

/// A short name for an ICMP (IPv4) or ICMPv6 type and code, as tcpdump would say it.
pub fn icmp_name(family: Family, icmp_type: u8, code: u8) -> String {
    let known = match family {
        Family::Ipv4 => match (icmp_type, code) {
            (icmp::DEST_UNREACH, 0) => Some("net-unreachable"),
            (icmp::DEST_UNREACH, 1) => Some("host-unreachable"),
            (icmp::DEST_UNREACH, 2) => Some("protocol-unreachable"),
            (icmp::DEST_UNREACH, 3) => Some("port-unreachable"),
            (icmp::DEST_UNREACH, 4) => Some("frag-needed"),
            (icmp::DEST_UNREACH, 5) => Some("source-route-failed"),
            (icmp::DEST_UNREACH, 6) => Some("net-unknown"),
            (icmp::DEST_UNREACH, 7) => Some("host-unknown"),
            (icmp::DEST_UNREACH, 9 | 10 | 13) => Some("admin-prohibited"),
            (icmp::DEST_UNREACH, 11) => Some("net-unreachable-for-tos"),
            (icmp::DEST_UNREACH, 12) => Some("host-unreachable-for-tos"),
            (icmp::DEST_UNREACH, 14) => Some("host-precedence-violation"),
            (icmp::DEST_UNREACH, 15) => Some("precedence-cutoff"),
            (icmp::SOURCE_QUENCH, _) => Some("source-quench"),
            (icmp::REDIRECT, _) => Some("redirect"),
            (icmp::TIME_EXCEEDED, 0) => Some("ttl-exceeded"),
            (icmp::TIME_EXCEEDED, 1) => Some("reassembly-time-exceeded"),
            (icmp::PARAMETERPROB, _) => Some("parameter-problem"),
            _ => None,
        },
        Family::Ipv6 => match (icmp_type, code) {
            (icmpv6::DEST_UNREACH, 0) => Some("no-route"),
            (icmpv6::DEST_UNREACH, 1) => Some("admin-prohibited"),
            (icmpv6::DEST_UNREACH, 2) => Some("beyond-scope"),
            (icmpv6::DEST_UNREACH, 3) => Some("address-unreachable"),
            (icmpv6::DEST_UNREACH, 4) => Some("port-unreachable"),
            (icmpv6::DEST_UNREACH, 5) => Some("source-policy-failed"),
            (icmpv6::DEST_UNREACH, 6) => Some("reject-route"),
            (icmpv6::PKT_TOOBIG, _) => Some("packet-too-big"),
            (icmpv6::TIME_EXCEED, 0) => Some("hop-limit-exceeded"),
            (icmpv6::TIME_EXCEED, 1) => Some("reassembly-time-exceeded"),
            (icmpv6::PARAMPROB, _) => Some("parameter-problem"),
            _ => None,
        },
    };
    known.map_or_else(|| format!("type-{icmp_type}-code-{code}"), str::to_owned)
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        58 => "icmpv6".to_owned(),
        132 => "sctp".to_owned(),
        136 => "udplite".to_owned(),
        other => format!("proto-{other}"),
    }
}

/// One short sentence: what happened to the socket and what the application sees; for a DNS query, which
/// one, and whose.
pub fn explain_socket_error(e: &SocketError) -> String {
    let what = socket_error_outcome(e);
    let whose = e.owner.as_ref().filter(|_| !e.kernel_socket).map(|o| o.comm.as_str());
    match e.dns.as_ref().and_then(|d| lookup(d, whose)) {
        Some(lookup) => format!("{lookup} was answered with an ICMP error: {what}"),
        None => what,
    }
}

fn socket_error_outcome(e: &SocketError) -> String {
    let errno = errno_name(e.errno).unwrap_or("an error");
    let icmp = e.icmp.map(|i| icmp_name(e.family, i.icmp_type, i.code));
    let peer = e.remote.map(|r| format!("udp/{} at {}", r.port(), r.ip()));
    let queued = if e.recverr == Some(true) {
        "; the socket has IP_RECVERR, so it is also queued for MSG_ERRQUEUE unless that queue is full"
    } else {
        ""
    };
    match e.verdict {
        Some(Verdict::Delivered) => match (e.errno, &peer) {
            (libc::ECONNREFUSED, Some(peer)) => format!(
                "the peer refused {peer} (no listener, or a firewall REJECT); the next send or receive fails with \
                 {errno}{queued}"
            ),
            (libc::EMSGSIZE, _) => format!(
                "the path MTU is smaller than the datagram and it may not be fragmented; the next send or receive \
                 fails with {errno}{queued}"
            ),
            _ => format!("the socket's next send or receive fails with {errno}{queued}"),
        },
        Some(Verdict::IgnoredSoftError)
            if e.icmp.is_some_and(|i| (i.icmp_type, i.code) == (icmp::DEST_UNREACH, icmp::FRAG_NEEDED)) =>
        {
            "the socket turned path MTU discovery off (IP_PMTUDISC_DONT): Linux lowers the route's MTU and reports \
             nothing"
                .to_owned()
        }
        Some(Verdict::IgnoredSoftError) => format!(
            "{} is a soft error: Linux does not report it to a connected UDP socket without IP_RECVERR",
            icmp.unwrap_or_else(|| "this error".to_owned())
        ),
        Some(Verdict::IgnoredUnconnected) => format!(
            "the socket is not connected and has no IP_RECVERR: Linux drops {errno} and the application sees nothing"
        ),
        Some(Verdict::NoSocket) => "no socket on this host matches the packet the ICMP error quotes".to_owned(),
        Some(Verdict::Tunnel) => format!(
            "the socket is a UDP tunnel's (UDP_ENCAP): Linux hands {errno} to the tunnel, never to the application"
        ),
        None if e.kernel_socket => format!(
            "the socket is the kernel's own, held by no process (a VXLAN, WireGuard or L2TP tunnel's): a tunnel takes \
             {errno} itself, and whether it did is not visible"
        ),
        None => format!(
            "the kernel told no socket of it ({errno}), and none matching the quoted packet was found: a UDP tunnel may \
             have taken it, or the socket has closed"
        ),
    }
}

/// One short sentence: why this host sent the ICMP error.
pub fn explain_icmp_sent(e: &IcmpSent) -> String {
    let mut why = icmp_sent_cause(e);
    if let Some(lookup) = e.dns.as_ref().and_then(|d| lookup(d, None)) {
        why = format!("{lookup} was answered with an ICMP error: {why}");
    }
    if e.rate_limited.is_none() {
        return format!(
            "{why}; seen where the kernel decides to answer, before the rate limits, which tracepoint mode does not \
             see: any they stopped are counted as icmp_suppressed"
        );
    }
    why
}

fn icmp_sent_cause(e: &IcmpSent) -> String {
    let port = e.packet.and_then(|p| p.ports.map(|(_, dport)| (proto_name(p.proto), dport)));
    match e.cause {
        Cause::NoListener => match port {
            Some((proto, dport)) => format!("no socket listens on {proto}/{dport} here"),
            None => "no socket listens on that port here".to_owned(),
        },
        Cause::FirewallReject => "a firewall REJECT rule answered for the packet (nftables/iptables)".to_owned(),
        Cause::NoRoute => {
            "this host has no usable route to the packet's destination (an unreachable or prohibit route, no route, \
             or a tunnel that could not route it)"
                .to_owned()
        }
        Cause::NeighbourUnreachable => {
            "the next hop did not answer ARP/ND: the host on the link is down or absent".to_owned()
        }
        Cause::NoBackend => "an IPVS virtual service has no usable real server for the packet".to_owned(),
        Cause::TtlExceeded => "the packet's TTL ran out while this host forwarded it".to_owned(),
        Cause::FragNeeded => "the packet may not be fragmented (DF) and is larger than the next link's MTU".to_owned(),
        Cause::Other => "sent by another kernel path".to_owned(),
    }
}

/// What a drop reason means, and what to do about it: the reasons UDP meets, by their names in `enum
/// skb_drop_reason` (include/net/dropreason-core.h from 6.4, include/net/dropreason.h in 6.0 to 6.3,
/// include/linux/skbuff.h in 5.17 to 5.19). A reason not listed here is named, not explained.
fn reason_sentence(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "socket_rcvbuff" => {
            "the socket's receive buffer was full: its process reads too slowly; raise SO_RCVBUF (capped by net.core.rmem_max) or read faster"
        }
        "proto_mem" => "UDP's memory limit was reached (net.ipv4.udp_mem): the host's UDP sockets hold too much unread",
        "socket_filter" => "the socket's filter (SO_ATTACH_FILTER, a BPF program) refused it",
        "socket_close" => "its socket closed with it still queued, unread",
        "netfilter_drop" => "a firewall DROP rule (nftables/iptables): the sender gets no error",
        "neigh_failed" => {
            "the next hop did not answer ARP/ND: the host is down or not on this link; the sender may get EHOSTUNREACH"
        }
        "neigh_queuefull" => "too many datagrams waited for ARP/ND to answer (net.ipv4.neigh.*.unres_qlen_bytes)",
        "udp_csum" => "its UDP checksum was wrong: damaged on the way, or a NIC offload bug",
        "xfrm_policy" => "an IPsec policy refused it",
        "ip_noproto" => "no protocol handler for it",
        "otherhost" => "it was addressed to another host's MAC address",
        "ip_csum" | "ip_inhdr" => "its IP header was bad",
        "ip_rpfilter" => {
            "reverse-path filtering dropped it (net.ipv4.conf.*.rp_filter): the route back to its source is elsewhere"
        }
        "unicast_in_l2_multicast" => "a unicast IP packet in a link-layer multicast frame",
        "ip_outnoroutes" | "ip_inaddrerrors" | "ip_innoroutes" => "no route for it",
        "pkt_too_small" => "it was shorter than its headers say",
        "tc_drop" | "tc_ingress" | "tc_egress" => "a tc filter or action dropped it",
        "qdisc_drop" => "the interface's queue (qdisc) was full",
        "cpu_backlog" => "the CPU's receive backlog was full (net.core.netdev_max_backlog)",
        "dev_ready" => "the interface was down",
        "full_ring" => "the device's ring was full",
        "not_specified" => "the kernel gave no reason at this place",
        _ => return None,
    })
}

/// The DNS message an event is about, as a phrase: "the query for example.com A", "the NXDOMAIN answer for
/// example.com A"; `None` when the bytes did not reach the question.
fn lookup(d: &Dns, whose: Option<&str>) -> Option<String> {
    let (name, qtype) = (d.qname.as_deref()?, d.qtype.as_deref()?);
    let name = crate::dns::shown(name);
    let whose = whose.map_or_else(|| "the".to_owned(), |comm| format!("{comm}'s"));
    Some(match (d.response, d.rcode.as_deref()) {
        (Some(true), Some(rcode)) => format!("{whose} {rcode} answer for {name} {qtype}"),
        (Some(true), None) => format!("{whose} answer for {name} {qtype}"),
        _ => format!("{whose} query for {name} {qtype}"),
    })
}

/// One short sentence: what dropping this datagram means, and what to do.
pub fn explain_udp_dropped(e: &UdpDropped) -> String {
    let at = e.location.as_deref().map(|l| format!(" in {l}")).unwrap_or_default();
    let mut text = match e.reason.as_deref() {
        Some(reason) => match reason_sentence(reason) {
            Some(sentence) => sentence.to_owned(),
            None => format!("the kernel's reason is {reason}{at}"),
        },
        None if e.reason_code.is_some() => format!("a reason this kernel's BTF does not name{at}"),
        None => format!("this kernel gives no drop reason (before 5.17); it was dropped{at}"),
    };
    if let Some(lookup) = e.dns.as_ref().and_then(|d| lookup(d, None)) {
        text = format!("{lookup} was dropped: {text}");
    }
    if e.reason.as_deref() == Some("socket_rcvbuff")
        && let (Some(rcvbuf), Some(queued)) = (e.rcvbuf, e.queued)
    {
        text.push_str(&format!(" ({queued} of {rcvbuf} bytes queued)"));
    }
    if e.count > 1 {
        text.push_str(&format!("; {} such drops", e.count));
    }
    if e.sources_folded {
        text.push_str(&format!(
            ", from sources not shown one by one (more than {} flows to it in a second)",
            udptrace_common::drops::FLOWS_SHOWN
        ));
    }
    text
}

/// Which limit stopped the error, and the sysctl that governs it.
pub fn explain_icmp_suppressed(e: &IcmpSuppressed) -> String {
    let from_counter = e.attempt.is_none();
    match (e.scope, e.family) {
        (Scope::Global, Some(Family::Ipv4)) => "the global ICMP rate limit stopped it: sysctl \
                                                 net.ipv4.icmp_msgs_per_sec and net.ipv4.icmp_msgs_burst, for the \
                                                 types in net.ipv4.icmp_ratemask"
            .to_owned(),
        (Scope::Global, Some(Family::Ipv6)) => "the global ICMP rate limit stopped it: sysctl \
                                                 net.ipv4.icmp_msgs_per_sec and net.ipv4.icmp_msgs_burst (shared \
                                                 with IPv6), for the types in net.ipv6.icmp.ratemask"
            .to_owned(),
        (Scope::Global, None) => "the global ICMP rate limit stopped them (IPv4 and IPv6 together: the kernel counts \
                                  both in one counter): sysctl net.ipv4.icmp_msgs_per_sec and \
                                  net.ipv4.icmp_msgs_burst, for the types in net.ipv4.icmp_ratemask and \
                                  net.ipv6.icmp.ratemask"
            .to_owned(),
        (Scope::Host, Some(Family::Ipv6)) if from_counter => {
            "the per-destination ICMPv6 rate limit stopped them, or no route led back to the packet's source (the \
             kernel counts both in Icmp6OutRateLimitHost): sysctl net.ipv6.icmp.ratelimit (ms between errors to one \
             host), for the types in net.ipv6.icmp.ratemask"
                .to_owned()
        }
        (Scope::Host, Some(Family::Ipv6)) => {
            "the per-destination ICMPv6 rate limit stopped it: sysctl net.ipv6.icmp.ratelimit (ms between errors \
             to one host), for the types in net.ipv6.icmp.ratemask"
                .to_owned()
        }
        (Scope::Host, _) => {
            "the per-destination ICMP rate limit stopped it: sysctl net.ipv4.icmp_ratelimit (ms between errors to \
             one host), for the types in net.ipv4.icmp_ratemask"
                .to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Icmp, samples};

    #[test]
    fn a_refused_dns_query_names_its_lookup_and_whose() {
        let mut refused = samples::owned_socket_error();
        refused.dns = samples::dns_drop().dns;
        assert!(
            explain_socket_error(&refused).starts_with(
                "dns-client's query for www.example.com A was answered with an ICMP error: the peer refused udp/8888"
            ),
            "{}",
            explain_socket_error(&refused)
        );
        refused.owner = None;
        assert!(explain_socket_error(&refused).starts_with("the query for www.example.com A was answered"));
    }

    #[test]
    fn a_dropped_dns_datagram_names_its_lookup() {
        assert_eq!(
            explain_udp_dropped(&samples::dns_drop()),
            "the query for www.example.com A was dropped: a firewall DROP rule (nftables/iptables): the sender gets no error"
        );
        let mut answer = samples::dns_drop();
        let dns = answer.dns.as_mut().unwrap();
        (dns.response, dns.rcode) = (Some(true), Some("NOERROR".to_owned()));
        assert!(explain_udp_dropped(&answer).starts_with("the NOERROR answer for www.example.com A was dropped: "));
        // The bytes did not reach the question: nothing is said about it.
        let dns = answer.dns.as_mut().unwrap();
        dns.qname = None;
        assert!(explain_udp_dropped(&answer).starts_with("a firewall DROP rule"));
    }

    #[test]
    fn a_rate_limit_names_its_family_sysctls_and_what_the_counter_cannot_tell() {
        let counted = |scope, family| IcmpSuppressed { meta: samples::meta(), family, scope, count: 3, attempt: None };
        let global = explain_icmp_suppressed(&counted(Scope::Global, None));
        assert!(global.contains("IPv4 and IPv6 together") && global.contains("net.ipv6.icmp.ratemask"), "{global}");
        let host6 = explain_icmp_suppressed(&counted(Scope::Host, Some(Family::Ipv6)));
        assert!(host6.contains("no route led back") && host6.contains("net.ipv6.icmp.ratemask"), "{host6}");
        assert!(!host6.contains("net.ipv4"), "{host6}");
        let seen = IcmpSuppressed { family: Some(Family::Ipv6), ..samples::host_limited(samples::icmp_sent()) };
        assert!(!explain_icmp_suppressed(&seen).contains("no route"), "a hook saw the limit say no");
    }

    #[test]
    fn every_verdict_has_its_own_explanation() {
        let mut e = samples::socket_error();
        e.icmp = Some(Icmp { icmp_type: 3, code: 1, from: None });
        e.verdict = Some(Verdict::IgnoredSoftError);
        assert_eq!(
            explain_socket_error(&e),
            "host-unreachable is a soft error: Linux does not report it to a connected UDP socket without IP_RECVERR"
        );
        let mut texts = Vec::new();
        for verdict in [
            Verdict::Delivered,
            Verdict::IgnoredSoftError,
            Verdict::IgnoredUnconnected,
            Verdict::NoSocket,
            Verdict::Tunnel,
        ] {
            e.verdict = Some(verdict);
            texts.push(explain_socket_error(&e));
        }
        e.verdict = None;
        texts.push(explain_socket_error(&e));
        e.kernel_socket = true;
        texts.push(explain_socket_error(&e));
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), 7, "{texts:?}");
    }

    #[test]
    fn icmp_names() {
        assert_eq!(icmp_name(Family::Ipv4, 3, 3), "port-unreachable");
        assert_eq!(icmp_name(Family::Ipv4, 11, 0), "ttl-exceeded");
        assert_eq!(icmp_name(Family::Ipv6, 1, 4), "port-unreachable");
        assert_eq!(icmp_name(Family::Ipv6, 2, 0), "packet-too-big");
        assert_eq!(icmp_name(Family::Ipv4, 42, 7), "type-42-code-7");
    }
}
