//! What the kinds share, written once: the owner of a socket, the packet, the DNS question, and how each is
//! shown in the JSON and the text.

use serde::Serialize;

use crate::domain::{Dns, Meta, OwnerInfo, Packet, Translation, Tuple, endpoint, proto_name, rfc3339};

/// The fields every JSON object starts with.
#[derive(Serialize)]
pub struct Head {
    pub event: &'static str,
    pub time: String,
    pub netns: Option<u32>,
    pub probe: Option<&'static str>,
}

impl Head {
    pub fn of(event: &'static str, meta: &Meta) -> Self {
        Self { event, time: rfc3339(meta.time), netns: Some(meta.netns), probe: Some(meta.probe.as_str()) }
    }
}

/// The socket's owner: `pid`, `tid`, `comm`, `cgroup`, `container`, `holders` (0 for a kernel socket, which
/// no process holds).
#[derive(Serialize)]
pub struct OwnerJson<'a> {
    pid: Option<u32>,
    tid: Option<u32>,
    comm: Option<&'a str>,
    cgroup: Option<&'a str>,
    container: Option<&'a str>,
    holders: Option<u32>,
}

impl<'a> OwnerJson<'a> {
    pub fn of(owner: Option<&'a OwnerInfo>, kernel_socket: bool) -> Self {
        Self {
            pid: owner.map(|o| o.pid),
            tid: owner.and_then(|o| o.tid),
            comm: owner.map(|o| o.comm.as_str()),
            cgroup: owner.and_then(|o| o.cgroup.as_deref()),
            container: owner.and_then(|o| o.container.as_deref()),
            holders: if kernel_socket { Some(0) } else { owner.and_then(|o| o.holders) },
        }
    }
}

/// `pid 4711 dns-client` with, when known, the container (12 characters, as docker shows it) or else the
/// cgroup's last component; `kernel socket` for one no process holds.
pub fn owner_text(owner: Option<&OwnerInfo>, kernel_socket: bool) -> String {
    if kernel_socket {
        return "kernel socket".to_owned();
    }
    let Some(owner) = owner else {
        return "owner unknown".to_owned();
    };
    let mut text = format!("pid {} {}", owner.pid, owner.comm);
    if let Some(others) = owner.holders.and_then(|n| n.checked_sub(1)).filter(|&n| n > 0) {
        text.push_str(&format!(" (+{others} more holding it)"));
    }
    if let Some(container) = &owner.container {
        text.push_str(&format!(" container {}", container.chars().take(12).collect::<String>()));
    } else if let Some(cgroup) = owner.cgroup.as_deref().filter(|c| *c != "/") {
        text.push_str(&format!(" cgroup {}", cgroup.rsplit('/').next().unwrap_or(cgroup)));
    }
    text
}

/// The owner's pid and name, for a summary row.
pub fn owner_row(owner: Option<&OwnerInfo>) -> Option<(u32, String)> {
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

/// `udp 10.0.0.2:40312 -> 10.0.0.9:8888`.
pub fn flow_text(packet: Option<Packet>) -> String {
    packet.map_or_else(
        || "an unreadable packet".to_owned(),
        |p| format!("{} {} -> {}", proto_name(p.proto), endpoint(&p, true), endpoint(&p, false)),
    )
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

    /// A container id is cut to 12 characters, not 12 bytes: one that a traced process wrote with a wide
    /// character there must not stop the line.
    #[test]
    fn a_container_is_cut_at_a_character() {
        let owner = OwnerInfo { container: Some("é".repeat(20)), ..OwnerInfo::default() };
        assert!(owner_text(Some(&owner), false).ends_with(&format!("container {}", "é".repeat(12))));
    }
}
