//! How the things every event speaks of are named, the same in every output: ICMP types and codes, IP
//! protocols, endpoints, times.

use std::{net::SocketAddr, time::SystemTime};

use udptrace_common::{icmp, icmpv6};

use super::{Family, Packet};

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

/// The packet's source (`src`) or destination, with its port when the packet has ports.
pub fn endpoint(packet: &Packet, src: bool) -> String {
    let ip = if src { packet.src } else { packet.dst };
    match packet.ports {
        Some((sport, dport)) => SocketAddr::new(ip, if src { sport } else { dport }).to_string(),
        None => ip.to_string(),
    }
}

/// UTC, to the microsecond.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}
