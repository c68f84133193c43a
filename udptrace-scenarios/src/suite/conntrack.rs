//! Behind NAT: the `conntrack` field of `socket_error`, `icmp_sent` and `udp_dropped` (`events/parts.rs`
//! `ConntrackJson`), held against the entry the kernel keeps, as `conntrack -L` (Debian's `conntrack`
//! package) lists it in the namespace that translated. A Service address DNATed in the client's own OUTPUT
//! (a host-network client of kube-proxy) and in a node's PREROUTING (a pod behind a veth); a backend nobody
//! answers ARP or ND for; a stale entry; masquerade on a router and on the host itself; no NAT with
//! conntrack on. The healthy path of a translated flow is `process.rs`'s `healthy_path_nat`.
//!
//! Every NAT rule sets the entry's mark ([`MARK`]), as kube-proxy and CNI plugins mark flows, so that the
//! mark is checked too; the host masquerade sets none, and its entry's mark is 0.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    CLIENT_V4, CLOSED_PORT, FAR_SERVER_V4, Family, Results, Routed, SERVER_V4, TwoHosts, check_icmp_sent,
    check_socket_error, compare,
    drops::{NEIGH_FAILED, await_drops, drop_hook, has_drop_reasons, is_drop_of},
    errno_check,
    fixtures::{SERVER_V6, hidden_caller},
    icmp_send_unseen, no_option, outcome_of, packet, send_and_receive, which,
};
use crate::{
    config::Config,
    netns::{Netns, exec_in, veth},
    outcome::Outcome,
    packets::udp_socket,
    tracer::Tracer,
};

/// The Service address (a ClusterIP) and port the clients send to: on no link, reached only through NAT.
pub(super) const SERVICE_V4: &str = "10.96.0.10";
const SERVICE_V6: &str = "fd00:96::10";
const SERVICE_PORT: u16 = 7000;
/// Where the clients route the Service addresses (the server, or the router).
const SERVICE_NET_V4: &str = "10.96.0.0/24";
const SERVICE_NET_V6: &str = "fd00:96::/64";
/// The mark the NAT rules set on the entries they translate.
const MARK: u32 = 43;

pub(super) fn service(family: Family) -> SocketAddr {
    SocketAddr::new(family.pick(SERVICE_V4, SERVICE_V6), SERVICE_PORT)
}

/// Routes the Service addresses of `ns` through `via_v4` and `via_v6`.
pub(super) fn route_services(ns: &Netns, via_v4: &str, via_v6: &str) -> Result<()> {
    ns.ip(&["route", "add", SERVICE_NET_V4, "via", via_v4])?;
    ns.ip(&["-6", "route", "add", SERVICE_NET_V6, "via", via_v6])
}

/// Runs one nft script (commands separated by `;`) in `ns`.
fn nft(ns: &Netns, script: &str) -> Result<()> {
    exec_in(ns, "nft", &[script]).map(drop)
}

/// Adds `rule` to the NAT chain `hook` (`output`, `prerouting`, `postrouting`) of `ns`'s table
/// `inet udptrace_nat`, made if missing. Loading it turns conntrack on in `ns` (`nf_ct_netns_get`).
fn nat_rule(ns: &Netns, hook: &str, rule: &str) -> Result<()> {
    // Destination NAT before the filter chains, source NAT after them (the kernel's own priorities).
    let priority = if hook == "postrouting" { 100 } else { -100 };
    nft(
        ns,
        &format!(
            "add table inet udptrace_nat; \
             add chain inet udptrace_nat {hook} {{ type nat hook {hook} priority {priority}; }}; \
             add rule inet udptrace_nat {hook} {rule}"
        ),
    )
    .with_context(|| format!("adding the NAT rule `{rule}` (are nf_nat and nft_nat available?)"))
}

/// The rule that sends what goes to `service` to `backend` instead, and marks the entry.
fn dnat_rule(service: SocketAddr, backend: SocketAddr) -> String {
    let ip = if service.is_ipv4() { "ip" } else { "ip6" };
    format!("{ip} daddr {} udp dport {} ct mark set {MARK} dnat {ip} to {backend}", service.ip(), service.port())
}

/// DNAT of `service` to `backend` in `ns`'s chain `hook` (`output` or `prerouting`).
pub(super) fn dnat(ns: &Netns, hook: &str, service: SocketAddr, backend: SocketAddr) -> Result<()> {
    nat_rule(ns, hook, &dnat_rule(service, backend))
}

/// Conntrack on in `ns` without any NAT: a `ct state` rule in its input and output chains (table
/// `inet udptrace_ct`), which accepts everything it sees.
pub(super) fn track(ns: &Netns) -> Result<()> {
    let mut script = "add table inet udptrace_ct".to_owned();
    for hook in ["input", "output"] {
        script.push_str(&format!(
            "; add chain inet udptrace_ct {hook} {{ type filter hook {hook} priority 0; }}; \
             add rule inet udptrace_ct {hook} ct state established,related,new accept"
        ));
    }
    nft(ns, &script).context("adding a ct state rule (is nft_ct available?)")
}

/// A translated entry as the event's `conntrack` field shows it: the flow as its sender addressed it
/// (`original`), as conntrack expects it back (`reply`), what NAT rewrote (told by the tuples: a reply from
/// elsewhere than the original destination is DNAT, one to elsewhere than the original source SNAT; `null`
/// for neither), whether a reply was seen, the mark.
fn entry(
    original: (SocketAddr, SocketAddr),
    reply: (SocketAddr, SocketAddr),
    replied: bool,
    mark: Option<u32>,
) -> Value {
    let nat = match (reply.0 != original.1, reply.1 != original.0) {
        (true, true) => json!("dnat+snat"),
        (true, false) => json!("dnat"),
        (false, true) => json!("snat"),
        (false, false) => Value::Null,
    };
    json!({
        "original": {"src": original.0.to_string(), "dst": original.1.to_string()},
        "reply": {"src": reply.0.to_string(), "dst": reply.1.to_string()},
        "nat": nat,
        "replied": replied,
        "mark": mark,
    })
}

/// One line of `conntrack -L` as [`entry`] shows it, if it is one: the original tuple's `src= dst= sport=
/// dport=`, then the reply's, `[UNREPLIED]` until a reply was seen, `mark=` where the kernel keeps marks.
fn entry_of_line(line: &str) -> Option<Value> {
    let (mut ips, mut ports) = (Vec::new(), Vec::new());
    let (mut replied, mut mark) = (true, None);
    for word in line.split_whitespace() {
        match word.split_once('=') {
            Some(("src" | "dst", ip)) => ips.push(ip.parse::<IpAddr>().ok()?),
            Some(("sport" | "dport", port)) => ports.push(port.parse::<u16>().ok()?),
            Some(("mark", value)) => mark = Some(value.parse::<u32>().ok()?),
            None if word == "[UNREPLIED]" => replied = false,
            _ => {}
        }
    }
    let (&[os, od, rs, rd], &[osp, odp, rsp, rdp]) = (ips.as_slice(), ports.as_slice()) else {
        return None;
    };
    let at = SocketAddr::new;
    Some(entry((at(os, osp), at(od, odp)), (at(rs, rsp), at(rd, rdp)), replied, mark))
}

/// What `conntrack -L` lists of UDP in `ns` for `family`, each entry as [`entry`] shows it; listed right
/// after the traffic, before the events are awaited, so that no entry has timed out meanwhile. `Err` is the
/// outcome of every check against it: a skip where the tool is missing, a failure where it did not run.
fn listed(ns: &Netns, family: Family) -> Result<Vec<Value>, Outcome> {
    if which("conntrack").is_none() {
        return Err(Outcome::Skip("the conntrack tool is not installed (Debian's conntrack)".to_owned()));
    }
    let text = exec_in(ns, "conntrack", &["-L", "-p", "udp", "-f", family.name()])
        .map_err(|e| Outcome::Fail(format!("{e:#}")))?;
    Ok(text.lines().filter_map(entry_of_line).collect())
}

/// The kernel holds `want`: among what `conntrack -L` listed, the entry of `want`'s original tuple is `want`.
fn witness(listed: &Result<Vec<Value>, Outcome>, want: &Value) -> Outcome {
    let entries = match listed {
        Ok(entries) => entries,
        Err(outcome) => return outcome.clone(),
    };
    match entries.iter().find(|e| e["original"] == want["original"]) {
        Some(found) if found == want => Outcome::Pass,
        Some(found) => Outcome::Fail(format!("conntrack -L has {found}, want {want}")),
        None => Outcome::Fail(format!("conntrack -L has no entry for {}: {entries:?}", want["original"])),
    }
}

/// How long the neighbour subsystem of `ns` tries `ifname` before it gives up: one probe, 100 ms.
fn give_up_fast(ns: &Netns, ifname: &str) -> Result<()> {
    for table in ["ipv4", "ipv6"] {
        for (key, value) in [("mcast_solicit", "1"), ("ucast_solicit", "1"), ("retrans_time_ms", "100")] {
            ns.sysctl(&format!("net.{table}.neigh.{ifname}.{key}"), value)?;
        }
    }
    Ok(())
}

/// The client of kube-proxy's host network: its OUTPUT chain DNATs the Service to a backend on the
/// server, whose port is closed (the server tracks its flows, and translates none). The client's
/// `socket_error` names the Service in `remote` and the backend in `conntrack.reply.src` (the ICMP error,
/// translated back by the client's conntrack, comes from the Service address); the server's `icmp_sent` is
/// about the datagram as it arrived, untranslated: `conntrack` null.
pub(super) fn nat_service(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let service = service(family);
    let backend = SocketAddr::new(TwoHosts::server_ip(family), CLOSED_PORT);
    route_services(&hosts.client, SERVER_V4, SERVER_V6)?;
    dnat(&hosts.client, "output", service, backend)?;
    track(&hosts.server)?;
    let (local, received, _socket) =
        send_and_receive(&hosts.client, TwoHosts::client_ip(family), service, no_option, true, b"udptrace")?;
    let kernel = listed(&hosts.client, family);
    let translated = entry((local, service), (backend, local), false, Some(MARK));
    let (icmp_type, code) = family.port_unreachable();
    let expected = json!({
        "family": family.name(),
        "local": local.to_string(),
        "remote": service.to_string(),
        "icmp": {"type": icmp_type, "code": code, "from": service.ip().to_string()},
        "errno": "ECONNREFUSED",
        "verdict": "delivered",
        "recverr": false,
        "conntrack": translated,
    });
    let mut tracepoint = expected.clone();
    tracepoint["icmp"] = Value::Null;
    let sent = json!({
        "icmp": {"type": icmp_type, "code": code},
        "packet": packet(local, backend),
        "cause": "no_listener",
        "conntrack": null,
    });
    Ok(vec![
        ("client_errno", errno_check(&received, Some(libc::ECONNREFUSED))),
        ("kernel_entry", witness(&kernel, &translated)),
        ("socket_error", check_socket_error(config, tracer, &hosts.client, local, expected, Some(tracepoint))),
        ("backend_icmp_sent", check_icmp_sent(config, tracer, &hosts.server, family, local, sent)),
    ])
}

/// A pod, a node, a backend: pod -- 10.235.0.0/24 -- node -- 10.236.0.0/24 -- backend (and fd00:235::/64,
/// fd00:236::/64). The node forwards, and its PREROUTING DNATs the Service to the backend.
struct Pod {
    pod: Netns,
    node: Netns,
    backend: Netns,
}

impl Pod {
    fn new() -> Result<Self> {
        let pod = Netns::new("pod")?;
        let node = Netns::new("node")?;
        let backend = Netns::new("backend")?;
        veth(&pod, &["10.235.0.2/24", "fd00:235::2/64"], &node, &["10.235.0.1/24", "fd00:235::1/64"])?;
        veth(&node, &["10.236.0.1/24", "fd00:236::1/64"], &backend, &["10.236.0.2/24", "fd00:236::2/64"])?;
        node.sysctl("net.ipv4.ip_forward", "1")?;
        node.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        pod.ip(&["route", "add", "default", "via", "10.235.0.1"])?;
        pod.ip(&["-6", "route", "add", "default", "via", "fd00:235::1"])?;
        backend.ip(&["route", "add", "default", "via", "10.236.0.1"])?;
        backend.ip(&["-6", "route", "add", "default", "via", "fd00:236::1"])?;
        Ok(Self { pod, node, backend })
    }
}

/// Kubernetes' pod case: the pod sends to the Service, the node's PREROUTING DNATs it to a backend in a
/// third namespace, whose port is closed. The port unreachable comes back through the node (translated
/// back: from the Service address) and over the veth into the pod, which resets the packet's entry
/// (`skb_scrub_packet` -> `nf_reset_ct`), and the pod tracks nothing itself. udptrace runs on the node, in
/// its namespace (a DaemonSet on the host network): in every mode the pod socket's `conntrack` is the node's
/// entry, found by the pod's flow. The backend's `icmp_sent` is untranslated.
pub(super) fn nat_pod(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    let net = Pod::new()?;
    let service = service(family);
    let backend = SocketAddr::new(family.pick("10.236.0.2", "fd00:236::2"), CLOSED_PORT);
    dnat(&net.node, "prerouting", service, backend)?;
    let pod_ns = net.pod.inode.to_string();
    let mut on_node = Tracer::start_in(config, &net.node, &["--netns", &pod_ns])?;
    let pod_ip = family.pick("10.235.0.2", "fd00:235::2");
    let (local, received, _socket) = send_and_receive(&net.pod, pod_ip, service, no_option, true, b"udptrace")?;
    let kernel = listed(&net.node, family);
    let translated = entry((local, service), (backend, local), false, Some(MARK));
    let (icmp_type, code) = family.port_unreachable();
    let expected = json!({
        "family": family.name(),
        "local": local.to_string(),
        "remote": service.to_string(),
        "icmp": {"type": icmp_type, "code": code, "from": service.ip().to_string()},
        "errno": "ECONNREFUSED",
        "verdict": "delivered",
        "conntrack": translated,
    });
    let mut tracepoint = expected.clone();
    tracepoint["icmp"] = Value::Null;
    let sent = json!({"packet": packet(local, backend), "cause": "no_listener", "conntrack": null});
    Ok(vec![
        ("client_errno", errno_check(&received, Some(libc::ECONNREFUSED))),
        ("node_entry", witness(&kernel, &translated)),
        ("pod_socket_error", check_socket_error(config, &mut on_node, &net.pod, local, expected, Some(tracepoint))),
        ("backend_icmp_sent", check_icmp_sent(config, tracer, &net.backend, family, local, sent)),
    ])
}

/// A `udp_dropped` must say `fields`; where the kernel gives reasons, an IPv4 drop at a failed neighbour says
/// `neigh_failed` (`arp_error_report`, net/ipv4/arp.c); IPv6's `ndisc_error_report` frees with none
/// (net/ipv6/ndisc.c, 5.10 to 7.3), so there only the fields are checked.
fn neighbour_drops(events: &[&Value], fields: &Value, family: Family) -> Outcome {
    if events.is_empty() {
        return Outcome::Fail("no udp_dropped to check".to_owned());
    }
    let wrong: Vec<String> = events
        .iter()
        .filter_map(|event| match compare(event, fields) {
            Outcome::Fail(why) => Some(why),
            _ if family == Family::V4 && !NEIGH_FAILED.says(event) => Some(format!(
                "reason {} and location {}, want neigh_failed{} in {event}",
                event["reason"],
                event["location"],
                if has_drop_reasons() { "" } else { " or none (no reasons before 5.17)" }
            )),
            _ => None,
        })
        .collect();
    if wrong.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("{} of {} udp_dropped: {}", wrong.len(), events.len(), wrong.join(" | ")))
    }
}

/// The drops about `src -> dst` seen in `ns`: at least one, at most `sent` (each datagram is dropped once;
/// the kernel may count several in one event), each with `fields`. `(count, fields)` checks.
fn check_drops(
    config: &Config,
    tracer: &mut Tracer,
    (src, dst): (SocketAddr, SocketAddr),
    sent: u64,
    fields: &Value,
    family: Family,
) -> (Outcome, Outcome) {
    let mode = match drop_hook(config, tracer) {
        Ok(mode) => mode,
        Err(skip) => return (skip.clone(), skip),
    };
    let about = is_drop_of(src, dst);
    let got = await_drops(config, tracer, 1, &about);
    let events: Vec<&Value> = tracer.seen.iter().filter(|e| about(e)).collect();
    let counted = if (1..=sent).contains(&got) {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("{sent} datagrams waited for the neighbour, udptrace counted {got} drops: {events:?}"))
    };
    let mut fields = fields.clone();
    fields["probe"] = json!(mode);
    (counted, neighbour_drops(&events, &fields, family))
}

/// The backend is gone: the client's OUTPUT DNATs the Service to an address of its own link that nobody has,
/// and nobody answers ARP or ND for it (given up after 100 ms). The datagrams that waited are dropped on the
/// way out, each drop naming the Service in `conntrack.original.dst` and the dead backend in `reply.src`;
/// the client's own host unreachable about them (`icmp_sent`) carries the same entry.
pub(super) fn nat_backend_gone(config: &Config, tracer: &mut Tracer, family: Family) -> Result<Results> {
    const DATAGRAMS: u64 = 3;
    let hosts = TwoHosts::new()?;
    give_up_fast(&hosts.client, "veth-a")?;
    let service = service(family);
    let gone = SocketAddr::new(family.pick("10.231.0.77", "fd00:231::77"), CLOSED_PORT);
    route_services(&hosts.client, SERVER_V4, SERVER_V6)?;
    dnat(&hosts.client, "output", service, gone)?;
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(family), 0))?;
    socket.connect(service)?;
    for _ in 0..DATAGRAMS {
        socket.send(b"udptrace")?;
    }
    let local = socket.local_addr()?;
    // Resolution gives up after about 100 ms.
    std::thread::sleep(Duration::from_millis(500));
    let kernel = listed(&hosts.client, family);
    let translated = entry((local, service), (gone, local), false, Some(MARK));
    let fields = json!({
        "netns": hosts.client.inode,
        "family": family.name(),
        "packet": packet(local, gone),
        "direction": "out",
        "conntrack": translated,
    });
    let (counted, dropped) = check_drops(config, tracer, (local, gone), DATAGRAMS, &fields, family);
    let icmp = match family {
        Family::V4 => (3, 1),
        Family::V6 => (1, 3),
    };
    let sent = json!({
        "icmp": {"type": icmp.0, "code": icmp.1},
        "packet": packet(local, gone),
        "cause": "neighbour_unreachable",
        "conntrack": translated,
    });
    let own_icmp = check_icmp_sent(config, tracer, &hosts.client, family, local, sent);
    drop(socket);
    Ok(vec![
        ("kernel_entry", witness(&kernel, &translated)),
        ("drops_counted", counted),
        ("udp_dropped", dropped),
        ("icmp_sent", own_icmp),
    ])
}

/// The text line of the socket error of `local` that a udptrace printing text showed, or why none.
fn text_line(config: &Config, text: &mut Tracer, local: SocketAddr) -> Result<String> {
    let line = text.expect("the text line of the error", config.event_timeout, |v| {
        v.as_str().is_some_and(|l| l.contains("ECONNREFUSED") && l.contains(&local.to_string()))
    })?;
    Ok(line.as_str().unwrap_or_default().to_owned())
}

/// A stale entry, kube-proxy's long-running UDP bug: the client's flow to the Service is answered by backend
/// A (its entry has seen a reply), then the rule moves to backend B and A's port closes. The next datagram of
/// the same flow (same socket, same 5-tuple) still follows the old entry to A and is refused: the client's
/// `socket_error` names A in `conntrack.reply.src`, `replied` true; its text line calls the entry stale and
/// gives the `conntrack -D` command that deletes it.
pub(super) fn nat_stale_entry(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let family = Family::V4;
    let service = service(family);
    let backend_a = SocketAddr::new(TwoHosts::server_ip(family), 7101);
    let backend_b = SocketAddr::new(TwoHosts::server_ip(family), 7102);
    let netns = hosts.client.inode.to_string();
    let mut text = Tracer::start_text(config, &["--netns", &netns])?;
    route_services(&hosts.client, SERVER_V4, SERVER_V6)?;
    dnat(&hosts.client, "output", service, backend_a)?;
    let server_a = udp_socket(&hosts.server, backend_a)?;
    let _server_b = udp_socket(&hosts.server, backend_b)?;
    server_a.set_read_timeout(Some(Duration::from_secs(2)))?;
    let client = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(family), 0))?;
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    client.connect(service)?;
    let local = client.local_addr()?;
    let mut buf = [0u8; 64];

    client.send(b"first")?;
    let answered = outcome_of((|| {
        let (n, from) = server_a.recv_from(&mut buf).context("backend A received nothing")?;
        server_a.send_to(&buf[..n], from)?;
        client.recv(&mut buf).context("the client got no answer through the Service")?;
        Ok(Outcome::Pass)
    })());
    // The Service moves to B; A goes away. The flow's entry stays as it was.
    nft(
        &hosts.client,
        &format!(
            "flush chain inet udptrace_nat output; add rule inet udptrace_nat output {}",
            dnat_rule(service, backend_b)
        ),
    )?;
    drop(server_a);
    client.send(b"second")?;
    let refused = errno_check(&client.recv(&mut buf), Some(libc::ECONNREFUSED));
    let kernel = listed(&hosts.client, family);
    let stale = entry((local, service), (backend_a, local), true, Some(MARK));
    let expected = json!({"remote": service.to_string(), "errno": "ECONNREFUSED", "conntrack": stale});
    let socket_error = check_socket_error(config, tracer, &hosts.client, local, expected.clone(), Some(expected));
    let said = match text_line(config, &mut text, local) {
        Ok(line) if line.contains("stale") && line.contains("conntrack -D") => Outcome::Pass,
        Ok(line) => Outcome::Fail(format!("want the entry called stale and its `conntrack -D` command in {line:?}")),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    drop(text);
    Ok(vec![
        ("answered_by_a", answered),
        ("client_errno", refused),
        ("kernel_entry", witness(&kernel, &stale)),
        ("socket_error", socket_error),
        ("text_says_stale", said),
    ])
}

/// Masquerade on a router: client -- router -- server, the router masquerading what leaves towards the
/// server. A datagram to an address of the server's link that nobody has is forwarded, masqueraded (from the
/// router's address, the client's port kept), and dropped at the router when ARP gives up: the router's
/// `udp_dropped` and its host unreachable (`icmp_sent`) carry the entry, `nat` "snat". A datagram to the
/// server's closed port is refused beyond the router: the client, which tracks nothing itself, gets the error
/// over its veth, and to a udptrace running on the router, in its namespace, its `socket_error` carries the
/// router's entry, found by the client's flow as a pod's is on its node.
pub(super) fn nat_router_masquerade(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const DATAGRAMS: u64 = 3;
    let net = Routed::new(None)?;
    give_up_fast(&net.router, "veth-a")?;
    nat_rule(&net.router, "postrouting", &format!("oifname \"veth-a\" ct mark set {MARK} masquerade"))?;
    let client_ns = net.client.inode.to_string();
    let mut on_router = Tracer::start_in(config, &net.router, &["--netns", &client_ns])?;
    let router_out: IpAddr = "10.232.0.1".parse()?;
    let client_ip: IpAddr = CLIENT_V4.parse()?;

    let far = SocketAddr::new("10.232.0.77".parse()?, CLOSED_PORT);
    let socket = udp_socket(&net.client, SocketAddr::new(client_ip, 0))?;
    socket.connect(far)?;
    for _ in 0..DATAGRAMS {
        socket.send(b"udptrace")?;
    }
    let local = socket.local_addr()?;
    let masqueraded = SocketAddr::new(router_out, local.port());

    let server = SocketAddr::new(FAR_SERVER_V4.parse()?, CLOSED_PORT);
    let (refused_local, received, _refused) =
        send_and_receive(&net.client, client_ip, server, no_option, true, b"udptrace")?;
    let refused_masqueraded = SocketAddr::new(router_out, refused_local.port());
    let kernel = listed(&net.router, Family::V4);

    let dropped_entry = entry((local, far), (far, masqueraded), false, Some(MARK));
    let fields = json!({
        "netns": net.router.inode,
        "family": "ipv4",
        "packet": packet(masqueraded, far),
        "direction": "in",
        "conntrack": dropped_entry,
    });
    let (counted, dropped) = check_drops(config, tracer, (masqueraded, far), DATAGRAMS, &fields, Family::V4);
    let router_icmp = match icmp_send_unseen(config, tracer, Family::V4) {
        Some(why) => Outcome::Skip(why),
        None => outcome_of(
            tracer
                .expect("the router's icmp_sent about the masqueraded datagram", config.event_timeout, |e| {
                    e["event"] == "icmp_sent" && e["netns"] == net.router.inode && e["packet"]["dst"] == far.to_string()
                })
                .map(|e| {
                    let expected = json!({"cause": "neighbour_unreachable", "conntrack": dropped_entry});
                    hidden_caller(&e, &expected).unwrap_or_else(|| compare(&e, &expected))
                }),
        ),
    };

    let refused_entry = entry((refused_local, server), (server, refused_masqueraded), false, Some(MARK));
    let expected = json!({
        "remote": server.to_string(),
        "errno": "ECONNREFUSED",
        "verdict": "delivered",
        "conntrack": refused_entry,
    });
    let socket_error =
        check_socket_error(config, &mut on_router, &net.client, refused_local, expected.clone(), Some(expected));
    drop(socket);
    Ok(vec![
        ("router_entry", witness(&kernel, &dropped_entry)),
        ("drops_counted", counted),
        ("router_udp_dropped", dropped),
        ("router_icmp_sent", router_icmp),
        ("client_errno", errno_check(&received, Some(libc::ECONNREFUSED))),
        ("refused_entry", witness(&kernel, &refused_entry)),
        ("refused_socket_error", socket_error),
    ])
}

/// Masquerade on the host itself (Docker's, a node's for its own traffic): the client's socket is bound to a
/// second address of its link, and its POSTROUTING masquerades what leaves from there to the link's primary
/// address. The server refuses; the client's conntrack translates the error back to the socket, whose
/// `socket_error` carries the entry, `nat` "snat" (no mark set: 0).
pub(super) fn nat_host_masquerade(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const SECOND_V4: &str = "10.231.0.3";
    let hosts = TwoHosts::new()?;
    hosts.client.ip(&["addr", "add", &format!("{SECOND_V4}/24"), "dev", "veth-a"])?;
    nat_rule(&hosts.client, "postrouting", &format!("ip saddr {SECOND_V4} masquerade"))?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let (local, received, _socket) =
        send_and_receive(&hosts.client, SECOND_V4.parse()?, server, no_option, true, b"udptrace")?;
    let kernel = listed(&hosts.client, Family::V4);
    let masqueraded = SocketAddr::new(CLIENT_V4.parse()?, local.port());
    let translated = entry((local, server), (server, masqueraded), false, Some(0));
    let expected = json!({
        "family": "ipv4",
        "local": local.to_string(),
        "remote": server.to_string(),
        "icmp": {"type": 3, "code": 3, "from": server.ip().to_string()},
        "errno": "ECONNREFUSED",
        "verdict": "delivered",
        "recverr": false,
        "conntrack": translated,
    });
    let mut tracepoint = expected.clone();
    tracepoint["icmp"] = Value::Null;
    Ok(vec![
        ("client_errno", errno_check(&received, Some(libc::ECONNREFUSED))),
        ("kernel_entry", witness(&kernel, &translated)),
        ("socket_error", check_socket_error(config, tracer, &hosts.client, local, expected, Some(tracepoint))),
    ])
}

/// No NAT, conntrack on at both ends (a `ct state` rule): the refused flow is tracked, as `conntrack -L`
/// shows (an entry whose reply is the original turned round), and neither end's event has a `conntrack`.
pub(super) fn nat_none_tracked(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    track(&hosts.client)?;
    track(&hosts.server)?;
    let family = Family::V4;
    let server = SocketAddr::new(TwoHosts::server_ip(family), CLOSED_PORT);
    let (local, received, _socket) =
        send_and_receive(&hosts.client, TwoHosts::client_ip(family), server, no_option, true, b"udptrace")?;
    let kernel = listed(&hosts.client, family);
    let untranslated = entry((local, server), (server, local), false, Some(0));
    let expected = json!({"remote": server.to_string(), "errno": "ECONNREFUSED", "conntrack": null});
    let sent = json!({"packet": packet(local, server), "cause": "no_listener", "conntrack": null});
    Ok(vec![
        ("client_errno", errno_check(&received, Some(libc::ECONNREFUSED))),
        ("kernel_tracked", witness(&kernel, &untranslated)),
        ("socket_error", check_socket_error(config, tracer, &hosts.client, local, expected.clone(), Some(expected))),
        ("icmp_sent", check_icmp_sent(config, tracer, &hosts.server, family, local, sent)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_conntrack_lines_as_the_event_shows_them() {
        let line = "udp      17 29 src=10.231.0.1 dst=10.96.0.10 sport=53212 dport=7000 [UNREPLIED] \
                    src=10.231.0.2 dst=10.231.0.1 sport=7777 dport=53212 mark=43 use=1";
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            entry_of_line(line),
            Some(entry(
                (at("10.231.0.1:53212"), at("10.96.0.10:7000")),
                (at("10.231.0.2:7777"), at("10.231.0.1:53212")),
                false,
                Some(43)
            ))
        );
        let v6 = "udp      17 117 src=fd00:231::3 dst=fd00:231::2 sport=40000 dport=7777 src=fd00:231::2 \
                  dst=fd00:231::1 sport=7777 dport=40000 [ASSURED] use=1";
        let got = entry_of_line(v6).unwrap();
        assert_eq!(got["nat"], "snat");
        assert_eq!(got["replied"], true);
        assert_eq!(got["mark"], Value::Null);
        assert_eq!(got["original"]["src"], "[fd00:231::3]:40000");
        assert_eq!(entry_of_line("conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown."), None);
        let both = entry((at("10.0.0.1:1"), at("10.96.0.1:2")), (at("10.0.0.9:3"), at("10.0.0.8:1")), true, None);
        assert_eq!(both["nat"], "dnat+snat");
    }

    #[test]
    fn the_witness_wants_the_same_entry() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        let want = entry((at("10.0.0.1:1"), at("10.96.0.1:2")), (at("10.0.0.2:3"), at("10.0.0.1:1")), false, Some(43));
        let mut other = want.clone();
        other["replied"] = json!(true);
        assert_eq!(witness(&Ok(vec![want.clone()]), &want), Outcome::Pass);
        assert!(matches!(witness(&Ok(vec![other]), &want), Outcome::Fail(_)));
        assert!(matches!(witness(&Ok(vec![]), &want), Outcome::Fail(_)));
        assert!(matches!(witness(&Err(Outcome::Skip("no tool".into())), &want), Outcome::Skip(_)));
    }
}
