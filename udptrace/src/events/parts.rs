//! What the kinds share, written once: the owner of a socket, the packet, the DNS question, the connection's
//! translation, and how each is shown in the JSON and the text.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::domain::{Dns, Meta, Nat, OwnerInfo, Packet, Pod, Translation, Tuple, endpoint, proto_name, rfc3339};

/// The fields every JSON object starts with.
#[derive(Serialize)]
pub struct Head<'a> {
    pub event: &'static str,
    pub time: String,
    pub netns: Option<u32>,
    pub probe: Option<&'static str>,
    pub pod: Option<&'a Pod>,
}

impl<'a> Head<'a> {
    pub fn of(event: &'static str, meta: &'a Meta) -> Self {
        Self {
            event,
            time: rfc3339(meta.time),
            netns: Some(meta.netns),
            probe: Some(meta.probe.as_str()),
            pod: meta.pod.as_ref(),
        }
    }
}

/// The socket's owner: `pid`, `tid`, `comm` (the process's name), `thread` (the thread's, when another),
/// `cgroup`, `container`, `holders` (0 for a kernel socket, which no process holds).
#[derive(Serialize)]
pub struct OwnerJson<'a> {
    pid: Option<u32>,
    tid: Option<u32>,
    comm: Option<&'a str>,
    thread: Option<&'a str>,
    cgroup: Option<&'a str>,
    container: Option<&'a str>,
    holders: Option<u32>,
}

impl<'a> OwnerJson<'a> {
    pub fn of(owner: Option<&'a OwnerInfo>, kernel_socket: bool) -> Self {
        Self {
            pid: owner.map(|o| o.pid),
            tid: owner.and_then(|o| o.tid),
            comm: owner.and_then(|o| o.comm.as_deref()),
            thread: owner.and_then(|o| o.thread.as_deref()),
            cgroup: owner.and_then(|o| o.cgroup.as_deref()),
            container: owner.and_then(|o| o.container.as_deref()),
            holders: if kernel_socket { Some(0) } else { owner.and_then(|o| o.holders) },
        }
    }
}

/// `pid 4711 dns-client`, the thread's name after the process's when it is another (`pid 4711 dig
/// (isc-net-0000)`), with, when known, its pod (`pod_text`), else the container (12 characters, as docker
/// shows it), else the cgroup's last component; `kernel socket` for one no process holds.
pub fn owner_text(owner: Option<&OwnerInfo>, kernel_socket: bool, pod: Option<&Pod>) -> String {
    if kernel_socket {
        return "kernel socket".to_owned();
    }
    let Some(owner) = owner else {
        return "owner unknown".to_owned();
    };
    let mut text = format!("pid {}", owner.pid);
    if let Some(comm) = &owner.comm {
        text.push_str(&format!(" {comm}"));
    }
    if let Some(thread) = &owner.thread {
        text.push_str(&format!(" ({thread})"));
    }
    if let Some(others) = owner.holders.and_then(|n| n.checked_sub(1)).filter(|&n| n > 0) {
        text.push_str(&format!(" (+{others} more holding it)"));
    }
    if let Some(pod) = pod {
        text.push_str(&format!(" {}", pod_text(pod)));
    } else if let Some(container) = &owner.container {
        text.push_str(&format!(" container {}", container.chars().take(12).collect::<String>()));
    } else if let Some(cgroup) = owner.cgroup.as_deref().filter(|c| *c != "/") {
        text.push_str(&format!(" cgroup {}", cgroup.rsplit('/').next().unwrap_or(cgroup)));
    }
    text
}

/// `pod kube-system/coredns-7db6d8ff4d-x2x9k (coredns)`; without the container where only the pod is known.
pub fn pod_text(pod: &Pod) -> String {
    match &pod.container {
        Some(container) => format!("pod {}/{} ({container})", pod.namespace, pod.name),
        None => format!("pod {}/{}", pod.namespace, pod.name),
    }
}

/// The owner's pid and process name, for a summary row: a row per process, whichever of its threads.
pub fn owner_row(owner: Option<&OwnerInfo>) -> Option<(u32, Option<String>)> {
    owner.map(|o| (o.pid, o.comm.clone()))
}

/// `packet`: source, destination and protocol.
#[derive(Serialize)]
pub struct PacketJson {
    src: Option<String>,
    dst: String,
    proto: String,
}

impl PacketJson {
    pub fn of(packet: &Packet) -> Self {
        Self { src: Some(endpoint(packet, true)), dst: endpoint(packet, false), proto: proto_name(packet.proto) }
    }

    /// A packet whose source is not known: the drops of many sources counted together.
    pub fn without_source(packet: &Packet) -> Self {
        Self { src: None, ..Self::of(packet) }
    }
}

/// `udp 10.0.0.2:40312 -> 10.0.0.9:8888`, and what conntrack made of it when it translated the connection
/// (`nat_text`).
pub fn flow_text(packet: Option<Packet>, conntrack: Option<&Translation>) -> String {
    packet.map_or_else(
        || "an unreadable packet".to_owned(),
        |p| {
            let nat = nat_text(conntrack, Flow::of(&p));
            format!("{} {} -> {}{nat}", proto_name(p.proto), endpoint(&p, true), endpoint(&p, false))
        },
    )
}

/// One end of a flow as an event shows it: an address and, when known, its port. An unspecified address (a
/// socket bound to any) stands for any.
#[derive(Clone, Copy, Debug)]
pub struct End {
    ip: IpAddr,
    port: Option<u16>,
}

impl End {
    /// A socket's address; an IPv4-mapped IPv6 one as the IPv4 address conntrack tracks.
    pub fn socket(addr: SocketAddr) -> Self {
        Self { ip: addr.ip().to_canonical(), port: Some(addr.port()) }
    }

    fn is(self, addr: SocketAddr) -> bool {
        (self.ip.is_unspecified() || self.ip == addr.ip()) && self.port.is_none_or(|p| p == addr.port())
    }
}

/// A datagram's flow as an event shows it: from `src` to `dst`, either `None` where not known (the sources
/// of drops counted together, an unconnected socket's remote).
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub src: Option<End>,
    pub dst: Option<End>,
}

/// Which way a datagram goes on a translated connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leg {
    /// From the sender toward the destination it addressed (the Service), before or after the translation.
    Toward,
    /// Back from the destination (the backend) to the sender.
    Back,
}

impl Flow {
    pub fn of(packet: &Packet) -> Self {
        let end = |ip, port| Some(End { ip, port });
        Self { src: end(packet.src, packet.ports.map(|(s, _)| s)), dst: end(packet.dst, packet.ports.map(|(_, d)| d)) }
    }

    /// Whether the flow has `addr` at either end.
    fn shows(&self, addr: SocketAddr) -> bool {
        [self.src, self.dst].into_iter().flatten().any(|end| end.is(addr))
    }

    /// Which way the datagram goes on `t`'s connection: by its destination (the Service or the backend, or the
    /// sender before or after SNAT), else by its source; `None` for a flow that is neither.
    fn leg(&self, t: &Translation) -> Option<Leg> {
        let toward = [t.original.dst, t.reply.src];
        let back = [t.original.src, t.reply.dst];
        let by = |end: Option<End>, (first, then): (Leg, Leg)| {
            let end = end?;
            if toward.iter().any(|a| end.is(*a)) {
                Some(first)
            } else if back.iter().any(|a| end.is(*a)) {
                Some(then)
            } else {
                None
            }
        };
        by(self.dst, (Leg::Toward, Leg::Back)).or_else(|| by(self.src, (Leg::Back, Leg::Toward)))
    }
}

/// What conntrack made of a flow, after it: ` (dnat 10.244.1.7:53)` for a flow to the Service, the backend
/// it went to; ` (snat 192.0.2.1:40000)`, the source it went out from; ` (dnat 10.244.1.7:53, snat
/// 192.0.2.1:40000)` for both. A flow seen after the translation says what it was before: ` (dnat from
/// 10.96.0.10:53)`; one that shows neither address, both: ` (dnat 10.96.0.10:53 -> 10.244.1.7:53)`. Empty
/// for a connection not translated.
pub fn nat_text(conntrack: Option<&Translation>, flow: Flow) -> String {
    let Some(t) = conntrack else {
        return String::new();
    };
    // Each rewritten address: as the sender addressed it, as conntrack rewrote it.
    let part = |nat: &str, before: SocketAddr, after: SocketAddr| {
        if flow.shows(before) {
            format!("{nat} {after}")
        } else if flow.shows(after) {
            format!("{nat} from {before}")
        } else {
            format!("{nat} {before} -> {after}")
        }
    };
    let dnat = || part("dnat", t.original.dst, t.reply.src);
    let snat = || part("snat", t.original.src, t.reply.dst);
    let parts = match t.nat {
        Nat::Dnat => dnat(),
        Nat::Snat => snat(),
        Nat::Both => format!("{}, {}", dnat(), snat()),
    };
    format!(" ({parts})")
}

/// What a translated connection means for an error or drop of a datagram on `flow`, after the kind's own
/// sentence: empty for a connection not translated. Toward a translated destination: that conntrack sent the
/// datagram for the Service address on to the backend, whether the backend ever answered this flow, and the
/// `conntrack -D` command that deletes exactly that entry; the entry is stale when the backend answered before
/// and `no_answer`, the event says the backend no longer does (refused, unreachable, no neighbour). Else, what
/// conntrack translated the connection to. `proto` is the protocol as `conntrack -p` names it.
pub fn nat_sentence(conntrack: Option<&Translation>, flow: Flow, proto: &str, no_answer: bool) -> String {
    let Some(t) = conntrack else {
        return String::new();
    };
    let (Some(backend), Some(Leg::Toward)) = (t.backend(), flow.leg(t)) else {
        let (o, r) = (&t.original, &t.reply);
        return format!(
            "; conntrack translated its connection ({}): {o} is sent as {} -> {}",
            t.nat.as_str(),
            r.dst,
            r.src
        );
    };
    let from = if t.nat == Nat::Both { format!(" from {}", t.reply.dst) } else { String::new() };
    let delete = t.delete_command(proto);
    let answered = match (t.replied, no_answer) {
        (false, _) => format!("which has never answered this flow; to delete the entry: {delete}"),
        (true, true) => format!(
            "which answered this flow before and no longer does: the entry is stale; deleting it translates the \
             next datagram anew: {delete}"
        ),
        (true, false) => format!("which has answered this flow; to delete the entry: {delete}"),
    };
    format!("; conntrack sent it, addressed to {}, on to {backend}{from}, {answered}", t.original.dst)
}

/// `conntrack`: the translated connection's two tuples, what NAT rewrote, whether it was ever answered,
/// and its mark.
#[derive(Serialize)]
pub struct ConntrackJson {
    original: TupleJson,
    reply: TupleJson,
    nat: &'static str,
    replied: bool,
    mark: Option<u32>,
}

#[derive(Serialize)]
struct TupleJson {
    src: String,
    dst: String,
}

impl ConntrackJson {
    pub fn of(translation: Option<&Translation>) -> Option<Self> {
        let tuple = |t: &Tuple| TupleJson { src: t.src.to_string(), dst: t.dst.to_string() };
        translation.map(|t| Self {
            original: tuple(&t.original),
            reply: tuple(&t.reply),
            nat: t.nat.as_str(),
            replied: t.replied,
            mark: t.mark,
        })
    }
}

/// `dns`: what the datagram's payload said; `payload_bytes` of `payload_length` were at hand.
#[derive(Serialize)]
pub struct DnsJson<'a> {
    id: Option<u16>,
    response: Option<bool>,
    qname: Option<&'a str>,
    qtype: Option<&'a str>,
    rcode: Option<&'a str>,
    truncated: Option<bool>,
    payload_bytes: usize,
    payload_length: usize,
}

impl<'a> DnsJson<'a> {
    pub fn of(dns: Option<&'a Dns>) -> Option<Self> {
        dns.map(|d| Self {
            id: d.id,
            response: d.response,
            qname: d.qname.as_deref(),
            qtype: d.qtype.as_deref(),
            rcode: d.rcode.as_deref(),
            truncated: d.truncated,
            payload_bytes: d.bytes,
            payload_length: d.payload,
        })
    }
}

/// The query or answer after the flow: `dns A example.com`, `dns answer NXDOMAIN A example.com`; `?` for
/// what the bytes did not reach, `dns id 4660 ?` when only the ID is known, `dns ? (not DNS)` for a payload
/// that is not.
pub fn dns_text(d: &Dns) -> String {
    let mut text = String::from("dns");
    if d.response == Some(true) {
        text.push_str(&format!(" answer {}", d.rcode.as_deref().unwrap_or("?")));
    }
    match (&d.qtype, &d.qname) {
        (Some(qtype), Some(qname)) => text.push_str(&format!(" {qtype} {}", crate::dns::shown(qname))),
        _ => {
            if let Some(id) = d.id {
                text.push_str(&format!(" id {id}"));
            }
            text.push_str(if d.malformed { " ? (not DNS)" } else { " ?" });
        }
    }
    if d.truncated == Some(true) {
        text.push_str(" truncated");
    }
    text
}

/// The DNS message an event is about, as a phrase: "the query for example.com A", "the NXDOMAIN answer for
/// example.com A", "dig's query ..." when `whose` names the process; `None` when the bytes did not reach
/// the question.
pub fn lookup(d: &Dns, whose: Option<&str>) -> Option<String> {
    let (name, qtype) = (d.qname.as_deref()?, d.qtype.as_deref()?);
    let name = crate::dns::shown(name);
    let whose = whose.map_or_else(|| "the".to_owned(), |comm| format!("{comm}'s"));
    Some(match (d.response, d.rcode.as_deref()) {
        (Some(true), Some(rcode)) => format!("{whose} {rcode} answer for {name} {qtype}"),
        (Some(true), None) => format!("{whose} answer for {name} {qtype}"),
        _ => format!("{whose} query for {name} {qtype}"),
    })
}

/// An object serialized as JSON; what it holds cannot fail to serialize.
pub fn to_json(object: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::samples;

    #[test]
    fn a_dns_question_is_shown_as_far_as_the_bytes_reach() {
        let dns = |d: Dns| dns_text(&d);
        let answer = Dns {
            response: Some(true),
            rcode: Some("NXDOMAIN".to_owned()),
            truncated: Some(true),
            ..samples::dns_drop().dns.unwrap()
        };
        assert_eq!(dns(answer), "dns answer NXDOMAIN A www.example.com truncated");
        assert_eq!(
            dns(Dns { id: Some(7), response: Some(false), bytes: 8, payload: 40, ..Dns::default() }),
            "dns id 7 ?"
        );
        assert_eq!(dns(Dns { bytes: 3, payload: 3, malformed: true, ..Dns::default() }), "dns ? (not DNS)");
        let root = Dns { qname: Some(String::new()), qtype: Some("NS".to_owned()), ..Dns::default() };
        assert_eq!(dns(root), "dns NS .");
    }

    /// The process's name, then the thread's in parentheses when another thread created the socket; a process
    /// whose name was not read is shown by its pid and its thread alone.
    #[test]
    fn names_the_process_then_the_thread() {
        let owner = |comm: Option<&str>, thread: Option<&str>| OwnerInfo {
            pid: 4711,
            comm: comm.map(str::to_owned),
            thread: thread.map(str::to_owned),
            ..OwnerInfo::default()
        };
        let text = |o: OwnerInfo| owner_text(Some(&o), false, None);
        assert_eq!(text(owner(Some("dig"), Some("isc-net-0000"))), "pid 4711 dig (isc-net-0000)");
        assert_eq!(text(owner(Some("dig"), None)), "pid 4711 dig");
        assert_eq!(text(owner(None, Some("isc-net-0000"))), "pid 4711 (isc-net-0000)");
        let json = |o: OwnerInfo| serde_json::to_value(OwnerJson::of(Some(&o), false)).unwrap();
        let value = json(owner(Some("dig"), Some("isc-net-0000")));
        assert_eq!((value["comm"].as_str(), value["thread"].as_str()), (Some("dig"), Some("isc-net-0000")));
        let value = json(owner(Some("dig"), None));
        assert_eq!((value["comm"].as_str(), value["thread"].is_null()), (Some("dig"), true));
        assert_eq!(owner_row(Some(&owner(Some("dig"), Some("isc-net-0000")))), Some((4711, Some("dig".to_owned()))));
    }

    /// A container id is cut to 12 characters, not 12 bytes: one that a traced process wrote with a wide
    /// character there must not stop the line.
    #[test]
    fn a_container_is_cut_at_a_character() {
        let owner = OwnerInfo { container: Some("é".repeat(20)), ..OwnerInfo::default() };
        assert!(owner_text(Some(&owner), false, None).ends_with(&format!("container {}", "é".repeat(12))));
    }

    /// A pod takes the container id's place; a pod's sandbox, or a pod known by its log directory alone,
    /// names no container.
    #[test]
    fn the_pod_names_the_owner() {
        let owner = OwnerInfo {
            pid: 4711,
            comm: Some("coredns".into()),
            container: Some("4f9a".repeat(16)),
            ..OwnerInfo::default()
        };
        let mut pod = Pod {
            namespace: "kube-system".into(),
            name: "coredns-7db6d8ff4d-x2x9k".into(),
            container: Some("coredns".into()),
            uid: "9b1f".into(),
        };
        assert_eq!(
            owner_text(Some(&owner), false, Some(&pod)),
            "pid 4711 coredns pod kube-system/coredns-7db6d8ff4d-x2x9k (coredns)"
        );
        pod.container = None;
        assert_eq!(pod_text(&pod), "pod kube-system/coredns-7db6d8ff4d-x2x9k");
        assert_eq!(owner_text(Some(&owner), false, None), "pid 4711 coredns container 4f9a4f9a4f9a");
    }

    fn end(addr: &str) -> Option<End> {
        Some(End::socket(addr.parse().unwrap()))
    }

    fn flow(src: &str, dst: &str) -> Flow {
        Flow { src: end(src), dst: end(dst) }
    }

    #[test]
    fn a_translated_flow_names_the_other_side_of_each_rewritten_address() {
        let dnat = samples::dnat();
        assert_eq!(nat_text(None, flow("10.0.0.5:41234", "10.96.0.10:53")), "");
        // As the sender addressed it; as it left, to the backend; neither address (a folded source).
        assert_eq!(nat_text(Some(&dnat), flow("10.0.0.5:41234", "10.96.0.10:53")), " (dnat 10.244.1.7:53)");
        assert_eq!(nat_text(Some(&dnat), flow("10.0.0.5:41234", "10.244.1.7:53")), " (dnat from 10.96.0.10:53)");
        assert_eq!(
            nat_text(Some(&dnat), Flow { src: None, dst: end("10.0.0.9:53") }),
            " (dnat 10.96.0.10:53 -> 10.244.1.7:53)"
        );
        let snat = samples::snat();
        assert_eq!(nat_text(Some(&snat), flow("10.0.0.5:41234", "198.51.100.7:53")), " (snat 192.0.2.1:40000)");
        assert_eq!(nat_text(Some(&snat), flow("192.0.2.1:40000", "198.51.100.7:53")), " (snat from 10.0.0.5:41234)");
        let both = samples::dnat_snat();
        assert_eq!(
            nat_text(Some(&both), flow("10.0.0.5:41234", "10.96.0.10:53")),
            " (dnat 10.244.1.7:53, snat 192.0.2.1:40000)"
        );
        assert_eq!(
            nat_text(Some(&both), flow("192.0.2.1:40000", "10.244.1.7:53")),
            " (dnat from 10.96.0.10:53, snat from 10.0.0.5:41234)"
        );
        // A socket bound to any address, an IPv4-mapped remote: the port and the IPv4 address still tell.
        assert_eq!(nat_text(Some(&dnat), flow("0.0.0.0:41234", "[::ffff:10.96.0.10]:53")), " (dnat 10.244.1.7:53)");
    }

    #[test]
    fn the_way_a_datagram_goes_is_told_by_its_destination_else_its_source() {
        let t = samples::dnat_snat();
        for (src, dst, leg) in [
            ("10.0.0.5:41234", "10.96.0.10:53", Some(Leg::Toward)),
            ("192.0.2.1:40000", "10.244.1.7:53", Some(Leg::Toward)),
            ("10.244.1.7:53", "192.0.2.1:40000", Some(Leg::Back)),
            ("10.96.0.10:53", "10.0.0.5:41234", Some(Leg::Back)),
            ("10.0.0.5:41234", "10.0.0.9:53", Some(Leg::Toward)),
            ("10.244.1.7:53", "10.0.0.9:53", Some(Leg::Back)),
            ("10.0.0.8:1", "10.0.0.9:53", None),
        ] {
            assert_eq!(flow(src, dst).leg(&t), leg, "{src} -> {dst}");
        }
        assert_eq!(Flow { src: None, dst: end("10.244.1.7:53") }.leg(&t), Some(Leg::Toward));
        assert_eq!(Flow { src: None, dst: None }.leg(&t), None);
    }

    #[test]
    fn an_entry_is_stale_only_once_answered_and_no_longer_answering() {
        let toward = flow("10.0.0.5:41234", "10.96.0.10:53");
        let mut t = samples::dnat();
        assert_eq!(nat_sentence(None, toward, "udp", true), "");
        let unreplied = nat_sentence(Some(&t), toward, "udp", true);
        assert!(unreplied.contains("which has never answered this flow") && !unreplied.contains("stale"));
        t.replied = true;
        assert!(nat_sentence(Some(&t), toward, "udp", true).contains("the entry is stale"));
        assert!(!nat_sentence(Some(&t), toward, "udp", false).contains("stale"));
        // IPv6: the command names the family.
        t.original = Tuple { src: "[fd00::5]:41234".parse().unwrap(), dst: "[fd00:96::10]:53".parse().unwrap() };
        t.reply = Tuple { src: "[fd00:244::7]:53".parse().unwrap(), dst: "[fd00::5]:41234".parse().unwrap() };
        let v6 = nat_sentence(Some(&t), flow("[fd00::5]:41234", "[fd00:96::10]:53"), "udplite", true);
        assert!(
            v6.ends_with("conntrack -D -f ipv6 -p udplite -s fd00::5 -d fd00:96::10 --sport 41234 --dport 53"),
            "{v6}"
        );
    }
}
