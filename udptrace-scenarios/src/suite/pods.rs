//! Which pod an event is about (`pod`, beside the owner): on a node made without Kubernetes (`kube.rs`: the
//! runtimes' and the kubelet's files in a mount namespace of the node's own, the pods' cgroups in the host's
//! hierarchy), with a udptrace started in that mount namespace, printing JSON, and another printing text.
//! One case per source of a name: a containerd container's bundle (a refused datagram), a CRI-O container's
//! (a drop at its full receive buffer), the kubelet's log directory alone (no bundle: no container), the
//! network namespace of a pod whose sandbox sits in it (an `icmp_sent`, which has no owner), a container
//! started after udptrace; and where there must be none: a bundle that does not parse or names another pod's
//! uid (never a guess, not even from the log directory), a process that is no pod's. Then the filters
//! `--pod` (a prefix of the name) and `--k8s-namespace`.
//!
//! The naming is user space's, the same in every mode: it runs in tracepoint mode, which the host's suite
//! runs.

use std::net::SocketAddr;

use anyhow::Result;
use serde_json::{Value, json};

use super::{
    CLIENT_V4, CLOSED_PORT, Family, Results, SERVER_V4, TwoHosts, check_icmp_sent, check_socket_error,
    drops::{RCVBUF, await_drops, drop_hook, each_drop, is_drop_of, snmp},
    no_option, packet, send_and_receive, settled,
};
use crate::{
    config::Config,
    helper::{ClientProcess, HeldProcess},
    kube::{Container, Driver, Node, Pod, Qos, Runtime, marked_id},
    outcome::Outcome,
    packets::udp_socket,
    tracer::Tracer,
};

/// The mode the naming is checked in.
const MODE: &str = "tracepoint";

/// The skip for every other mode: of the `pod` check, which the mode does not repeat (not of `all`, which
/// says a scenario could not run in a mode that must run it).
fn elsewhere(config: &Config) -> Option<Results> {
    (config.mode != MODE)
        .then(|| vec![("pod", Outcome::Skip(format!("the naming is user space and {MODE} mode proves it")))])
}

/// What the event's `pod` must be: the pod and its container (`None`: no container known), or no pod.
type Want<'a> = Option<(&'a Pod, Option<&'a str>)>;

fn pod_json(want: Want) -> Value {
    want.map_or(Value::Null, |(pod, container)| pod.json(container))
}

/// The two udptraces on `node`, JSON and text, for the namespaces of `hosts`.
fn tracers(config: &Config, node: &Node, hosts: &TwoHosts) -> Result<(Tracer, Tracer)> {
    let (client, server) = (hosts.client.inode.to_string(), hosts.server.inode.to_string());
    let only = ["--netns", client.as_str(), "--netns", server.as_str()];
    Ok((Tracer::start_on(config, node, &only, true)?, Tracer::start_on(config, node, &only, false)?))
}

/// A client process called `name` in `container`'s cgroup (none: where the suite is), in the client
/// namespace, whose connected socket sends once to the server's closed port.
pub(super) fn client_in(
    config: &Config,
    hosts: &TwoHosts,
    container: Option<&Container>,
    name: &str,
) -> Result<ClientProcess> {
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT).to_string();
    let mut args =
        vec!["--netns", hosts.client.name.as_str(), "--bind", CLIENT_V4, "--connect", &server, "--name", name];
    if let Some(container) = container {
        args.extend(["--cgroup", container.dir.as_str()]);
    }
    ClientProcess::start(&config.helper, &args)
}

/// The refused datagram of `client` (called `name`, in `cgroup`): its `socket_error` must have `pod`, and its
/// text line say it. Returns the JSON check and the text check.
fn refused(
    config: &Config,
    (json_out, text_out): (&mut Tracer, &mut Tracer),
    hosts: &TwoHosts,
    client: &ClientProcess,
    (name, cgroup): (&str, Option<&str>),
    want: Want,
) -> (Outcome, Outcome) {
    let mut expected = json!({
        "local": client.local.to_string(),
        "errno": "ECONNREFUSED",
        "verdict": "delivered",
        "pid": client.pid,
        "comm": name,
        "pod": pod_json(want),
    });
    if let Some(cgroup) = cgroup {
        expected["cgroup"] = json!(cgroup);
    }
    let named = check_socket_error(config, json_out, &hosts.client, client.local, expected.clone(), Some(expected));
    let said = match &named {
        Outcome::Skip(why) => Outcome::Skip(why.clone()),
        _ => says(text_line(config, text_out, &["ECONNREFUSED", &client.local.to_string()]), want),
    };
    (named, said)
}

/// The first text line holding every one of `holds`.
fn text_line(config: &Config, text: &mut Tracer, holds: &[&str]) -> Result<String> {
    let line = text.expect("the text line of the event", config.event_timeout, |v| {
        v.as_str().is_some_and(|l| holds.iter().all(|h| l.contains(h)))
    })?;
    Ok(line.as_str().unwrap_or_default().to_owned())
}

/// Whether the text `line` names the pod as `want` says: `pod NS/NAME (CONTAINER)`, `pod NS/NAME` with no
/// container after it, or no pod at all. A pod takes the place of the container id (`container <12 hex>`).
fn says(line: Result<String>, want: Want) -> Outcome {
    let line = match line {
        Ok(line) => line,
        Err(e) => return Outcome::Fail(format!("{e:#}")),
    };
    let Some((pod, container)) = want else {
        return if line.contains(" pod ") {
            Outcome::Fail(format!("want no pod named in {line:?}"))
        } else {
            Outcome::Pass
        };
    };
    let named = pod.text(container);
    let id_too = line
        .match_indices(" container ")
        .any(|(at, word)| line[at + word.len()..].chars().take(12).filter(char::is_ascii_hexdigit).count() == 12);
    match line.find(&named) {
        None => Outcome::Fail(format!("want `{named}` in {line:?}")),
        Some(_) if id_too => Outcome::Fail(format!("want `{named}` in place of the container id in {line:?}")),
        Some(at) if container.is_none() && line[at + named.len()..].starts_with(" (") => {
            Outcome::Fail(format!("want `{named}` with no container after it in {line:?}"))
        }
        Some(_) => Outcome::Pass,
    }
}

/// A containerd container (systemd driver, Burstable: `cri-containerd-<id>.scope`) whose connected socket is
/// refused: its `socket_error` names the pod and the container, from the bundle's annotations.
pub(super) fn pod_containerd(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    let pod =
        Pod::new("kube-system", "coredns-7db6d8ff4d-x2x9k", Qos::Burstable, Driver::Systemd, Runtime::Containerd)?;
    refused_in_pod(config, pod, "coredns", Started::BeforeUdptrace)
}

/// When a pod's container starts, beside udptrace.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Started {
    BeforeUdptrace,
    AfterUdptrace,
}

/// `pod`, with a container `name` started `when`, whose connected socket is refused: its
/// `socket_error` names the pod and the container.
fn refused_in_pod(config: &Config, pod: Pod, name: &str, when: Started) -> Result<Results> {
    if let Some(skip) = elsewhere(config) {
        return Ok(skip);
    }
    let hosts = TwoHosts::new()?;
    let node = Node::new(&config.helper)?;
    let mut outputs = (when == Started::AfterUdptrace).then(|| tracers(config, &node, &hosts)).transpose()?;
    node.start_pod(&pod)?;
    let container = node.start_container(&pod, name)?;
    let (mut json_out, mut text_out) = match outputs.take() {
        Some(outputs) => outputs,
        None => tracers(config, &node, &hosts)?,
    };
    let client = client_in(config, &hosts, Some(&container), name)?;
    let (named, said) = refused(
        config,
        (&mut json_out, &mut text_out),
        &hosts,
        &client,
        (name, Some(&container.cgroup)),
        Some((&pod, Some(name))),
    );
    Ok(vec![("pod", named), ("text", said)])
}

/// A CRI-O container (systemd driver, Guaranteed: `crio-<id>.scope`) whose socket's receive buffer is full:
/// every drop at it names the pod and the container, from CRI-O's `userdata/config.json`.
pub(super) fn pod_crio_drop(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    const DATAGRAMS: usize = 64;
    if let Some(skip) = elsewhere(config) {
        return Ok(skip);
    }
    let hosts = TwoHosts::new()?;
    let node = Node::new(&config.helper)?;
    let pod = Pod::new("logging", "fluentd-5x7kq", Qos::Guaranteed, Driver::Systemd, Runtime::CriO)?;
    node.start_pod(&pod)?;
    let fluentd = node.start_container(&pod, "fluentd")?;
    let (mut json_out, mut text_out) = tracers(config, &node, &hosts)?;
    if let Err(skip) = drop_hook(config, &json_out) {
        return Ok(vec![("all", skip)]);
    }
    let bind = format!("{SERVER_V4}:0");
    let args = ["--netns", hosts.server.name.as_str(), "--bind", &bind, "--rcvbuf", "2048"];
    let receiver = ClientProcess::serve(
        &config.helper,
        &[&args[..], &["--cgroup", fluentd.dir.as_str(), "--name", "fluentd"]].concat(),
    )?;
    let sender = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    let before = snmp(&hosts.server, "Udp", "RcvbufErrors")?;
    for _ in 0..DATAGRAMS {
        sender.send_to(&[0x5a; 1000], receiver.local)?;
    }
    let dropped = settled(config.event_timeout, || snmp(&hosts.server, "Udp", "RcvbufErrors"))? - before;
    if dropped == 0 {
        return Ok(vec![(
            "kernel_dropped",
            Outcome::Fail(format!("{DATAGRAMS} datagrams to a full buffer and no RcvbufErrors: the case was not made")),
        )]);
    }
    let about = {
        let flow = is_drop_of(sender.local_addr()?, receiver.local);
        move |e: &Value| flow(e) && RCVBUF.says(e)
    };
    await_drops(config, &mut json_out, dropped, &about);
    let events: Vec<&Value> = json_out.seen.iter().filter(|e| about(e)).collect();
    let want = Some((&pod, Some("fluentd")));
    let fields = json!({
        "local": receiver.local.to_string(),
        "pid": receiver.pid,
        "comm": "fluentd",
        "cgroup": fluentd.cgroup,
        "pod": pod_json(want),
    });
    let named = each_drop(&events, &fields, &RCVBUF);
    let said = says(text_line(config, &mut text_out, &["udp_dropped", &receiver.local.to_string()]), want);
    Ok(vec![("pod", named), ("text", said)])
}

/// A pod whose runtime left no bundle for the container in its cgroup (cgroupfs driver, BestEffort:
/// `kubepods/besteffort/pod<uid>/<id>`), only the kubelet's log directory: the pod is named from it, with no
/// container.
pub(super) fn pod_log_only(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    if let Some(skip) = elsewhere(config) {
        return Ok(skip);
    }
    let hosts = TwoHosts::new()?;
    let node = Node::new(&config.helper)?;
    let pod = Pod::new("batch", "report-28391740-7xk2q", Qos::BestEffort, Driver::Cgroupfs, Runtime::Containerd)?;
    node.log_dir(&pod, &["report"])?;
    let report = node.container_cgroup(&pod, marked_id()?, Some("report"))?;
    let (mut json_out, mut text_out) = tracers(config, &node, &hosts)?;
    let client = client_in(config, &hosts, Some(&report), "report")?;
    let (named, said) = refused(
        config,
        (&mut json_out, &mut text_out),
        &hosts,
        &client,
        ("report", Some(&report.cgroup)),
        Some((&pod, None)),
    );
    Ok(vec![("pod", named), ("text", said)])
}

/// A port unreachable a pod's own kernel sends (`icmp_sent`, no socket owner): the pod is the one whose
/// network namespace it is, known by its sandbox (`pause`, in the sandbox's cgroup, systemd driver,
/// BestEffort), with no container. The refused client, a process of the node's, has no pod.
pub(super) fn pod_netns_icmp(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    if let Some(skip) = elsewhere(config) {
        return Ok(skip);
    }
    let hosts = TwoHosts::new()?;
    let node = Node::new(&config.helper)?;
    let pod = Pod::new("shop", "cart-5d8f7c9b6-q7z2p", Qos::BestEffort, Driver::Systemd, Runtime::Containerd)?;
    let sandbox = node.start_pod(&pod)?;
    let place = ["--netns", hosts.server.name.as_str(), "--cgroup", sandbox.dir.as_str(), "--name", "pause"];
    let _pause = HeldProcess::hold(&config.helper, &place)?;
    let (mut json_out, mut text_out) = tracers(config, &node, &hosts)?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let (local, _, _socket) =
        send_and_receive(&hosts.client, TwoHosts::client_ip(Family::V4), server, no_option, true, b"udptrace")?;
    let want = Some((&pod, None));
    let sent = json!({"packet": packet(local, server), "cause": "no_listener", "pod": pod_json(want)});
    let named = check_icmp_sent(config, &mut json_out, &hosts.server, Family::V4, local, sent);
    let said = match &named {
        Outcome::Skip(why) => Outcome::Skip(why.clone()),
        _ => says(text_line(config, &mut text_out, &["icmp_sent", &local.to_string()]), want),
    };
    let client_side = json!({"errno": "ECONNREFUSED", "pod": null});
    let client =
        check_socket_error(config, &mut json_out, &hosts.client, local, client_side.clone(), Some(client_side));
    Ok(vec![("pod", named), ("text", said), ("client_no_pod", client)])
}

/// A container started after udptrace (containerd, cgroupfs driver, Burstable:
/// `kubepods/burstable/pod<uid>/<id>`): its bundle and cgroup are new to the running udptrace, which still
/// names it.
pub(super) fn pod_late_container(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    let pod = Pod::new("shop", "checkout-7c9f8b6d4-x2x9k", Qos::Burstable, Driver::Cgroupfs, Runtime::Containerd)?;
    refused_in_pod(config, pod, "checkout", Started::AfterUdptrace)
}

/// Bundles that cannot be believed, each in a pod whose log directory names it: one cut short (a runtime
/// still writing it), one whose pod uid is not the one in the container's cgroup. Neither event has a pod: a
/// name from the log directory would be a guess.
pub(super) fn pod_bad_bundle(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    if let Some(skip) = elsewhere(config) {
        return Ok(skip);
    }
    let hosts = TwoHosts::new()?;
    let node = Node::new(&config.helper)?;
    let cut = Pod::new("shop", "api-6f8d9c7b5-m4n7p", Qos::Burstable, Driver::Systemd, Runtime::Containerd)?;
    node.start_pod(&cut)?;
    node.log_dir(&cut, &["api"])?;
    let cut_id = marked_id()?;
    let config_json = node.bundle_dir(&cut, &cut_id)?;
    let whole = serde_json::to_string_pretty(&cut.spec(&cut_id, Some("api")))?;
    node.write(&config_json, &whole.as_bytes()[..whole.len() / 2], 0o644)?;
    let api = node.container_cgroup(&cut, cut_id, Some("api"))?;

    let other = Pod::new("shop", "worker-7b9c8d6f4-r2s5t", Qos::Burstable, Driver::Systemd, Runtime::Containerd)?;
    node.start_pod(&other)?;
    node.log_dir(&other, &["worker"])?;
    // A bundle of another pod with the same names (a uid the kubelet gave before the pod was recreated).
    let stale = Pod::new(&other.namespace, &other.name, other.qos, other.driver, other.runtime)?;
    let worker_id = marked_id()?;
    node.bundle(&stale, &worker_id, Some("worker"))?;
    let worker = node.container_cgroup(&other, worker_id, Some("worker"))?;

    let (mut json_out, mut text_out) = tracers(config, &node, &hosts)?;
    let api_client = client_in(config, &hosts, Some(&api), "api")?;
    let worker_client = client_in(config, &hosts, Some(&worker), "worker")?;
    let out = (&mut json_out, &mut text_out);
    let (cut_named, cut_said) = refused(config, out, &hosts, &api_client, ("api", Some(&api.cgroup)), None);
    let out = (&mut json_out, &mut text_out);
    let (other_named, other_said) =
        refused(config, out, &hosts, &worker_client, ("worker", Some(&worker.cgroup)), None);
    Ok(vec![
        ("cut_short", cut_named),
        ("cut_short_text", cut_said),
        ("uid_differs", other_named),
        ("uid_differs_text", other_said),
    ])
}

/// Processes that are no pod's, on a node with pods: one where the suite runs, one in a Docker container's
/// cgroup (`/docker/<id>`, an id with no bundle of the CRI's). Neither has a pod; nor has the port unreachable
/// that refuses the first, sent from a network namespace no pod's process is in (`icmp_sent`, no owner).
pub(super) fn pod_none(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    if let Some(skip) = elsewhere(config) {
        return Ok(skip);
    }
    let hosts = TwoHosts::new()?;
    let node = Node::new(&config.helper)?;
    let pod =
        Pod::new("kube-system", "coredns-7db6d8ff4d-x2x9k", Qos::Burstable, Driver::Systemd, Runtime::Containerd)?;
    node.start_pod(&pod)?;
    let _coredns = node.start_container(&pod, "coredns")?;
    let docker_id = marked_id()?;
    let docker = node.cgroup(&format!("/docker/{docker_id}"))?;
    let (mut json_out, mut text_out) = tracers(config, &node, &hosts)?;
    let plain = client_in(config, &hosts, None, "ntpdate")?;
    let in_docker = {
        let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT).to_string();
        let args = ["--netns", hosts.client.name.as_str(), "--bind", CLIENT_V4, "--connect", &server];
        ClientProcess::start(
            &config.helper,
            &[&args[..], &["--cgroup", docker.as_str(), "--name", "syslog-ng"]].concat(),
        )?
    };
    let out = (&mut json_out, &mut text_out);
    let (plain_named, plain_said) = refused(config, out, &hosts, &plain, ("ntpdate", None), None);
    let out = (&mut json_out, &mut text_out);
    let docker_cgroup = format!("/docker/{docker_id}");
    let (docker_named, docker_said) =
        refused(config, out, &hosts, &in_docker, ("syslog-ng", Some(&docker_cgroup)), None);
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
    let sent = json!({"packet": packet(plain.local, server), "cause": "no_listener", "pod": null});
    let no_pods_netns = check_icmp_sent(config, &mut json_out, &hosts.server, Family::V4, plain.local, sent);
    Ok(vec![
        ("plain_process", plain_named),
        ("plain_process_text", plain_said),
        ("docker_container", docker_named),
        ("docker_container_text", docker_said),
        ("netns_of_no_pod", no_pods_netns),
    ])
}

/// `--pod checkout` (a prefix of the pod's name) and `--k8s-namespace shop`, each on a udptrace of its own,
/// against the refused datagrams of four processes: shop/checkout-... (containerd, systemd driver),
/// shop/web-checkout-... (CRI-O, cgroupfs driver: `crio-<id>`), payments/checkout-... (containerd, cgroupfs
/// driver, Guaranteed: `kubepods/pod<uid>/<id>`) and one that is no pod's. Each udptrace must show exactly its
/// pods' errors.
pub(super) fn pod_filters(config: &Config, shared: &mut Tracer) -> Result<Results> {
    if let Some(skip) = elsewhere(config) {
        return Ok(skip);
    }
    if shared.mode_of("socket_error").is_none() {
        let why = format!("the socket_error hook did not attach in {} mode here", config.mode);
        return Ok(vec![("all", Outcome::Skip(why))]);
    }
    let hosts = TwoHosts::new()?;
    let node = Node::new(&config.helper)?;
    let shop = Pod::new("shop", "checkout-7c9f8b6d4-x2x9k", Qos::Burstable, Driver::Systemd, Runtime::Containerd)?;
    let web = Pod::new("shop", "web-checkout-6b7d9c8f5-k4m2n", Qos::BestEffort, Driver::Cgroupfs, Runtime::CriO)?;
    let payments =
        Pod::new("payments", "checkout-5f6d7c8b9-p3q8r", Qos::Guaranteed, Driver::Cgroupfs, Runtime::Containerd)?;
    let mut containers = Vec::new();
    for pod in [&shop, &web, &payments] {
        node.start_pod(pod)?;
        containers.push(node.start_container(pod, "app")?);
    }
    let netns = hosts.client.inode.to_string();
    let mut by_name = Tracer::start_on(config, &node, &["--netns", &netns, "--pod", "checkout"], true)?;
    let mut by_namespace = Tracer::start_on(config, &node, &["--netns", &netns, "--k8s-namespace", "shop"], true)?;
    let mut clients = Vec::new();
    for container in &containers {
        clients.push(client_in(config, &hosts, Some(container), "app")?);
    }
    let no_pod = client_in(config, &hosts, None, "app")?;
    let local = |client: &ClientProcess| client.local.to_string();
    let [shop_at, web_at, payments_at] = [local(&clients[0]), local(&clients[1]), local(&clients[2])];
    let shown = |tracer: &mut Tracer, want: &[&str]| -> Outcome {
        let errors = |e: &Value| e["event"] == "socket_error" && e["netns"] == hosts.client.inode;
        let all_there = tracer.expect_count("refused datagrams", config.event_timeout, want.len(), |e| {
            errors(e) && want.iter().any(|w| e["local"] == *w)
        });
        tracer.collect_for(config.quiet_period);
        let mut got: Vec<String> =
            tracer.seen.iter().filter(|e| errors(e)).filter_map(|e| e["local"].as_str().map(str::to_owned)).collect();
        got.sort();
        let mut wanted: Vec<String> = want.iter().map(|w| (*w).to_owned()).collect();
        wanted.sort();
        match all_there {
            Ok(()) if got == wanted => Outcome::Pass,
            Ok(()) => Outcome::Fail(format!(
                "want the errors of {wanted:?} only, got {got:?} (the process of no pod is {})",
                local(&no_pod)
            )),
            Err(e) => Outcome::Fail(format!("{e:#}; got the errors of {got:?}")),
        }
    };
    let pod_prefix = shown(&mut by_name, &[&shop_at, &payments_at]);
    let k8s_namespace = shown(&mut by_namespace, &[&shop_at, &web_at]);
    drop(no_pod);
    drop(clients);
    Ok(vec![("pod_prefix", pod_prefix), ("k8s_namespace", k8s_namespace)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_line_names_the_pod_as_wanted() {
        let pod = Pod::new("shop", "cart-1", Qos::BestEffort, Driver::Systemd, Runtime::Containerd).unwrap();
        let line = |l: &str| Ok(l.to_owned());
        let owned = "... pid 7 cart (cart) pod shop/cart-1 (cart)  netns 1  (...)";
        assert_eq!(says(line(owned), Some((&pod, Some("cart")))), Outcome::Pass);
        assert!(matches!(says(line(owned), Some((&pod, None))), Outcome::Fail(_)));
        assert!(matches!(says(line(owned), None), Outcome::Fail(_)));
        let unowned = "... icmp port-unreachable pod shop/cart-1  netns 1  (...)";
        assert_eq!(says(line(unowned), Some((&pod, None))), Outcome::Pass);
        assert!(matches!(says(line(unowned), Some((&pod, Some("cart")))), Outcome::Fail(_)));
        let both = "... pid 7 cart container 4f9a4f9a4f9a pod shop/cart-1 (cart)  netns 1  (...)";
        assert!(matches!(says(line(both), Some((&pod, Some("cart")))), Outcome::Fail(_)));
        assert_eq!(says(line("... pid 7 ntpdate  netns 1  (...)"), None), Outcome::Pass);
        assert!(matches!(says(Err(anyhow::anyhow!("no line")), None), Outcome::Fail(_)));
    }
}
