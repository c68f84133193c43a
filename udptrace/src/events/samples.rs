//! Sample events for the tests of every stage: the ones the programs' records in `pipeline::decode`'s
//! tests decode to.
use std::time::{Duration, SystemTime};

use super::{IcmpSent, IcmpSuppressed, SocketError, UdpDropped};
use crate::domain::{
    AttachMode, Cause, Direction, Dns, Errno, Family, Icmp, Meta, Nat, OwnerInfo, Packet, Scope, Translation, Tuple,
    Verdict,
};

/// 5 s after a boot at 2023-11-14T22:13:20Z.
pub fn time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_005_000_000_000)
}

/// A pod of kube-system, by name.
pub fn pod(name: &str) -> crate::domain::Pod {
    crate::domain::Pod {
        namespace: "kube-system".to_owned(),
        name: name.to_owned(),
        container: Some("coredns".to_owned()),
        uid: "9b1f6c2e-8d4a-4f3b-a2c1-0e9d8c7b6a50".to_owned(),
    }
}

pub fn meta() -> Meta {
    Meta { time: time(), netns: 4026532001, probe: AttachMode::Tracepoint, pod: None, packet: None }
}

/// A delivered ECONNREFUSED on a connected IPv4 socket, its owner unknown.
pub fn socket_error() -> SocketError {
    SocketError {
        meta: meta(),
        family: Family::Ipv4,
        local: "10.0.0.2:40312".parse().unwrap(),
        remote: Some("10.0.0.9:8888".parse().unwrap()),
        icmp: None,
        errno: Errno(libc::ECONNREFUSED),
        verdict: Some(Verdict::Delivered),
        recverr: None,
        sock_ino: None,
        unreported: false,
        kernel_socket: false,
        ifindex: 0,
        owner: None,
        count: 1,
        dns: None,
        conntrack: None,
        conntrack_tracked: false,
    }
}

/// The same, with the owner recorded at the socket's creation.
pub fn owned_socket_error() -> SocketError {
    SocketError {
        sock_ino: Some(88001),
        owner: Some(OwnerInfo {
            pid: 900,
            tid: Some(901),
            comm: Some("dns-client".to_owned()),
            thread: Some("dns-worker".to_owned()),
            cgroup_id: Some(4242),
            cgroup: None,
            container: None,
            holders: None,
        }),
        ..socket_error()
    }
}

/// A port unreachable this host sent about a UDP packet, its cause not classified yet.
pub fn icmp_sent() -> IcmpSent {
    IcmpSent {
        meta: meta(),
        family: Family::Ipv4,
        icmp: Icmp { icmp_type: 3, code: 3, from: None },
        packet: Some(Packet {
            src: "10.0.0.2".parse().unwrap(),
            dst: "10.0.0.9".parse().unwrap(),
            ports: Some((40312, 8888)),
            proto: 17,
        }),
        stack: vec![0xffff_ffff_8100_0010, 0xffff_ffff_8200_0020],
        cause: Cause::Other,
        rate_limited: Some(false),
        count: 1,
        dns: None,
        conntrack: None,
    }
}

/// A datagram a full receive buffer dropped, the socket and its owner known.
pub fn rcvbuf_drop() -> UdpDropped {
    UdpDropped {
        meta: meta(),
        family: Family::Ipv4,
        packet: Packet {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            ports: Some((5000, 9996)),
            proto: 17,
        },
        direction: Direction::In,
        reason_code: Some(9),
        reason: Some("socket_rcvbuff".to_owned()),
        location_addr: 0xffff_ffff_8300_0030,
        location: Some("udp_queue_rcv_one_skb".to_owned()),
        local: Some("0.0.0.0:9996".parse().unwrap()),
        sock_ino: Some(88002),
        owner: Some(OwnerInfo {
            pid: 700,
            tid: Some(700),
            comm: Some("slow-reader".to_owned()),
            thread: None,
            cgroup_id: None,
            cgroup: None,
            container: None,
            holders: None,
        }),
        kernel_socket: false,
        rcvbuf: Some(212992),
        queued: Some(213504),
        ifindex: 2,
        count: 1,
        sources_folded: false,
        dns: None,
        conntrack: None,
        conntrack_tracked: false,
    }
}

/// A DNS query for `example.com` A that a firewall DROP rule dropped.
pub fn dns_drop() -> UdpDropped {
    let mut drop = rcvbuf_drop();
    drop.packet.ports = Some((41234, 53));
    drop.reason = Some("netfilter_drop".to_owned());
    drop.location = Some("nft_do_chain".to_owned());
    (drop.local, drop.sock_ino, drop.owner, drop.rcvbuf, drop.queued) = (None, None, None, None, None);
    drop.dns = Some(Dns {
        id: Some(4660),
        response: Some(false),
        qname: Some("www.example.com".to_owned()),
        qtype: Some("A".to_owned()),
        rcode: None,
        truncated: Some(false),
        bytes: 33,
        payload: 33,
        malformed: false,
    });
    drop
}

/// `attempt`, stopped by the per-destination rate limit.
pub fn host_limited(attempt: IcmpSent) -> IcmpSuppressed {
    IcmpSuppressed {
        meta: attempt.meta.clone(),
        family: Some(attempt.family),
        scope: Scope::Host,
        count: 1,
        attempt: Some(attempt),
    }
}

/// A client's flow to a Service address, `10.0.0.5:41234 -> 10.96.0.10:53`, that conntrack sent on to the
/// backend `10.244.1.7:53`; never answered.
pub fn dnat() -> Translation {
    Translation {
        original: Tuple { src: "10.0.0.5:41234".parse().unwrap(), dst: "10.96.0.10:53".parse().unwrap() },
        reply: Tuple { src: "10.244.1.7:53".parse().unwrap(), dst: "10.0.0.5:41234".parse().unwrap() },
        nat: Nat::Dnat,
        replied: false,
        mark: Some(0x4000),
    }
}

/// A client's flow to `198.51.100.7:53` that a router sent on from `192.0.2.1:40000` (masquerade).
pub fn snat() -> Translation {
    Translation {
        original: Tuple { src: "10.0.0.5:41234".parse().unwrap(), dst: "198.51.100.7:53".parse().unwrap() },
        reply: Tuple { src: "198.51.100.7:53".parse().unwrap(), dst: "192.0.2.1:40000".parse().unwrap() },
        nat: Nat::Snat,
        replied: false,
        mark: None,
    }
}

/// The Service flow of [`dnat`], sent on to its backend from `192.0.2.1:40000` too.
pub fn dnat_snat() -> Translation {
    let mut both = dnat();
    both.reply.dst = "192.0.2.1:40000".parse().unwrap();
    both.nat = Nat::Both;
    both
}

/// The client's ECONNREFUSED from the Service of [`dnat`] (conntrack translated the port unreachable back),
/// whose backend's port is closed.
pub fn refused_by_backend() -> SocketError {
    SocketError {
        local: "10.0.0.5:41234".parse().unwrap(),
        remote: Some("10.96.0.10:53".parse().unwrap()),
        icmp: Some(Icmp { icmp_type: 3, code: 3, from: Some("10.96.0.10".parse().unwrap()) }),
        conntrack: Some(dnat()),
        ..owned_socket_error()
    }
}

/// The client's datagram to the Service of [`dnat`], translated to its backend, dropped on the way out: the
/// backend did not answer ARP.
pub fn backend_gone() -> UdpDropped {
    UdpDropped {
        packet: Packet {
            src: "10.0.0.5".parse().unwrap(),
            dst: "10.244.1.7".parse().unwrap(),
            ports: Some((41234, 53)),
            proto: 17,
        },
        direction: Direction::Out,
        reason_code: Some(73),
        reason: Some("neigh_failed".to_owned()),
        location: Some("neigh_invalidate".to_owned()),
        local: Some("10.0.0.5:41234".parse().unwrap()),
        rcvbuf: None,
        queued: None,
        conntrack: Some(dnat()),
        ..rcvbuf_drop()
    }
}

/// A port unreachable this host sent about a datagram to the Service of [`dnat`], which conntrack sent on to
/// a backend port of this host where nothing listens.
pub fn refused_at_backend() -> IcmpSent {
    IcmpSent {
        packet: Some(Packet {
            src: "10.0.0.5".parse().unwrap(),
            dst: "10.244.1.7".parse().unwrap(),
            ports: Some((41234, 53)),
            proto: 17,
        }),
        cause: Cause::NoListener,
        conntrack: Some(dnat()),
        ..icmp_sent()
    }
}
