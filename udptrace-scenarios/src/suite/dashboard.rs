//! The Grafana dashboard (`deploy/grafana/udptrace.json`) against a real Prometheus (Debian's): Prometheus
//! scrapes `udptrace --metrics` every second while the scenario causes a known number of each event, and
//! every panel's query, read from the dashboard with its Grafana variables set, must answer through
//! Prometheus's query API exactly the count caused, per label set.
//!
//! What is caused, after a first refusal that the panels' time range leaves out (so that both ways a panel
//! counts are used: a series' rise since the range's start, and a series born in the range, whole):
//! - two connected clients refused by a closed port, two by a firewall REJECT with a listener, two through a
//!   Service address DNATed to a closed backend port (`udptrace_translated_total`, `replied` false);
//! - a connected `IP_RECVERR` client behind a router with an unreachable route: EHOSTUNREACH delivered, the
//!   router's host unreachable (`no_route`) and its drop of the datagram (`ip_error`, no reason given);
//! - two DNS A queries to a closed port 53 and an AAAA query dropped by a firewall, three datagrams dropped by it;
//! - a flood to a closed port against the ICMP rate limits (the kernel's counters say how many were sent and
//!   how many each limit stopped);
//! - a flood to a closed port while udptrace is stopped (`SIGSTOP`), its buffer 128 KiB: the kernel's count
//!   of port unreachables is what udptrace shows plus what it reports lost.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{
    CLOSED_PORT, Family, Results, Routed, TwoHosts, conntrack,
    errors::nft_input_rule,
    metrics::{LabelSet, Prometheus, free_loopback_port, prometheus_here},
    no_option,
    operator::{Stopped, refused_socket},
    pods, send_and_receive, settled,
};
use crate::{
    config::Config,
    kube::{Driver, Node, Pod, Qos, Runtime},
    outcome::Outcome,
    packets::{icmp_counters, set_recverr, udp_socket},
    tracer::{Tracer, lost_in},
};

/// The dashboard, as it ships.
const DASHBOARD: &str = include_str!("../../../deploy/grafana/udptrace.json");

/// How long the panels may take to show every count.
const PANELS_TIMEOUT: Duration = Duration::from_secs(60);

/// A DNS query for `example.com` of type `qtype` (1: A, 28: AAAA), ID 0x1234.
fn query(qtype: u8) -> Vec<u8> {
    let mut query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00".to_vec();
    query.extend_from_slice(&[qtype, 0, 1]);
    query
}

/// Events the scenario caused, as one counter counts them: its labels (those the scenario knows) and how many.
struct Caused {
    /// The counter's name without `udptrace_` and `_total`.
    metric: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    count: u64,
    /// The pod it happened in, namespace and name: the labels of `--metrics-pods`.
    pod: Option<(&'static str, &'static str)>,
}

fn caused(metric: &'static str, labels: &[(&'static str, &'static str)], count: u64) -> Caused {
    Caused { metric, labels: labels.to_vec(), count, pod: None }
}

/// The pod of the scenario's pod client.
const POD: (&str, &str) = ("shop", "checkout-7c9f8b6d4-x2x9k");
/// How many times the pod's client is refused.
const POD_REFUSALS: u64 = 2;

/// One panel's query, as the dashboard has it.
struct PanelQuery {
    title: String,
    expr: String,
}

/// Every panel's queries, rows' panels included.
fn panel_queries(dashboard: &Value) -> Result<Vec<PanelQuery>> {
    fn walk(panels: &[Value], into: &mut Vec<PanelQuery>) -> Result<()> {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            if panel["type"] == "row" {
                walk(panel["panels"].as_array().map(Vec::as_slice).unwrap_or_default(), into)?;
                continue;
            }
            let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
            if targets.is_empty() {
                bail!("panel {title:?} has no query");
            }
            for target in targets {
                let expr =
                    target["expr"].as_str().with_context(|| format!("panel {title:?}: a target without expr"))?;
                into.push(PanelQuery { title: title.to_owned(), expr: expr.to_owned() });
            }
        }
        Ok(())
    }
    let mut queries = Vec::new();
    walk(dashboard["panels"].as_array().context("the dashboard has no panels")?, &mut queries)?;
    Ok(queries)
}

/// `expr` with Grafana's variables set (`$name` and `${name}`); a variable left unset is an error.
fn substitute(expr: &str, variables: &[(&str, &str)]) -> Result<String> {
    let mut out = expr.to_owned();
    // Longest first: `$__range` before a shorter name that starts it.
    let mut sorted = variables.to_vec();
    sorted.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in sorted {
        out = out.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    match out.find('$') {
        Some(at) => bail!("a variable the test does not set: {}", &out[at..].chars().take(20).collect::<String>()),
        None => Ok(out),
    }
}

/// The one udptrace counter `expr` reads (`udptrace_NAME_total`), as NAME.
fn metric_of(expr: &str) -> Result<String> {
    let mut names: Vec<&str> = expr
        .match_indices("udptrace_")
        .map(|(at, _)| {
            let rest = &expr[at..];
            &rest[..rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len())]
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    match names.as_slice() {
        [one] => one
            .strip_prefix("udptrace_")
            .and_then(|n| n.strip_suffix("_total"))
            .map(str::to_owned)
            .with_context(|| format!("{one} is not a udptrace counter")),
        _ => bail!("want one udptrace counter in the query, found {names:?}"),
    }
}

/// The labels of the outermost `sum by (...)`.
fn grouping(expr: &str) -> Result<Vec<String>> {
    let inside = expr
        .trim_start()
        .strip_prefix("sum by (")
        .and_then(|rest| rest.split_once(')'))
        .map(|(labels, _)| labels)
        .context("the query does not start with `sum by (...)`, the form whose answer the test can foresee")?;
    Ok(inside.split(',').map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect())
}

/// What a query grouped `by` these labels over counter `metric` must answer: the caused counts summed by
/// those labels, `instance` being the scrape's. A label the scenario does not know fails; the pod's are
/// empty for an event in no pod, and Prometheus leaves an empty label out.
fn expected(all: &[Caused], metric: &str, by: &[String], instance: &str) -> Result<BTreeMap<LabelSet, u64>> {
    let mut rows = BTreeMap::new();
    for one in all.iter().filter(|c| c.metric == metric && c.count > 0) {
        let mut labels = LabelSet::new();
        for label in by {
            let value = match label.as_str() {
                "instance" => instance,
                "k8s_namespace_name" => one.pod.map_or("", |(namespace, _)| namespace),
                "k8s_pod_name" => one.pod.map_or("", |(_, name)| name),
                other => one
                    .labels
                    .iter()
                    .find(|(name, _)| *name == other)
                    .map(|(_, value)| *value)
                    .with_context(|| format!("the scenario does not know the label {other} of {metric}"))?,
            };
            if !value.is_empty() {
                labels.insert(label.clone(), value.to_owned());
            }
        }
        *rows.entry(labels).or_default() += one.count;
    }
    Ok(rows)
}

/// Seconds since the Unix epoch, to the millisecond (Prometheus's precision).
fn now() -> f64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (since.as_millis() as f64) / 1000.0
}

/// The label sets and values Prometheus answered, against those wanted; `None` when they are the same.
fn difference(got: &[(LabelSet, f64)], want: &BTreeMap<LabelSet, u64>) -> Option<String> {
    let got: BTreeMap<&LabelSet, f64> = got.iter().map(|(l, v)| (l, *v)).collect();
    let same = got.len() == want.len() && want.iter().all(|(labels, count)| got.get(labels) == Some(&(*count as f64)));
    (!same).then(|| format!("got {got:?}, want {want:?}"))
}

/// The flows and their hosts: the case of each kind of event has namespaces of its own.
struct Hosts {
    /// Closed port, REJECT, DROP, DNS; the ICMP rate limits off on its server.
    refused: TwoHosts,
    /// A router with an unreachable route.
    routed: Routed,
    /// A Service address DNATed to its server's closed port.
    nat: TwoHosts,
    /// The flood against the ICMP rate limits.
    limited: TwoHosts,
    /// The flood while udptrace is stopped; the ICMP rate limits off on its server.
    flooded: TwoHosts,
}

const REJECT_PORT: u16 = CLOSED_PORT + 1;
const DROP_PORT: u16 = CLOSED_PORT + 2;

impl Hosts {
    fn new() -> Result<Self> {
        let refused = TwoHosts::new()?;
        refused.server.sysctl("net.ipv4.icmp_ratemask", "0")?;
        nft_input_rule(&refused.server, &format!("udp dport {REJECT_PORT} reject"))?;
        nft_input_rule(&refused.server, &format!("udp dport {DROP_PORT} drop"))?;
        nft_input_rule(&refused.server, "meta nfproto ipv6 udp dport 53 drop")?;
        let routed = Routed::new(None)?;
        routed.router.ip(&["route", "add", "unreachable", "10.233.0.0/24"])?;
        let nat = TwoHosts::new()?;
        conntrack::route_services(&nat.client, super::SERVER_V4, "fd00:231::2")?;
        let backend = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
        conntrack::dnat(&nat.client, "output", conntrack::service(Family::V4), backend)?;
        conntrack::track(&nat.server)?;
        let limited = TwoHosts::new()?;
        let flooded = TwoHosts::new()?;
        flooded.server.sysctl("net.ipv4.icmp_ratemask", "0")?;
        Ok(Self { refused, routed, nat, limited, flooded })
    }

    /// The namespaces whose events count: where each error is delivered or sent, or each datagram dropped
    /// (udptrace takes at most 8 `--netns`).
    fn traced(&self) -> [u64; 8] {
        [
            self.refused.client.inode,
            self.refused.server.inode,
            self.routed.client.inode,
            self.routed.router.inode,
            self.nat.client.inode,
            self.nat.server.inode,
            self.limited.server.inode,
            self.flooded.server.inode,
        ]
    }
}

/// A row's name for a panel: the names of a report live as long as the run.
fn row_name(index: usize, metric: &str, pods: bool) -> &'static str {
    let name = format!("panel_{index:02}_{metric}{}", if pods { "_by_pod" } else { "" });
    Box::leak(name.into_boxed_str())
}

pub fn dashboard(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    let binary = match prometheus_here(config, "panels") {
        Ok(binary) => binary,
        Err(skip) => return Ok(skip),
    };
    let dashboard: Value = serde_json::from_str(DASHBOARD).context("deploy/grafana/udptrace.json is not JSON")?;
    let queries = panel_queries(&dashboard)?;
    let hosts = Hosts::new()?;
    let metrics_addr = free_loopback_port()?;
    let mut args = vec![
        "--metrics".to_owned(),
        metrics_addr.to_string(),
        "--buffer-size".to_owned(),
        "128K".to_owned(),
        "--metrics-pods".to_owned(),
    ];
    for inode in hosts.traced() {
        args.extend(["--netns".to_owned(), inode.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A node whose pod's client is refused too: the per-pod panels count it by its pod.
    let node = Node::new(&config.helper)?;
    let pod = Pod::new(POD.0, POD.1, Qos::Burstable, Driver::Systemd, Runtime::Containerd)?;
    node.start_pod(&pod)?;
    let checkout = node.start_container(&pod, "checkout")?;
    let mut tracer = Tracer::start_on(config, &node, &args, true)?;
    let Some(send_mode) = tracer.mode_of("icmp_send").map(str::to_owned) else {
        return Ok(vec![("panels", Outcome::Skip("the icmp_send hook did not attach".to_owned()))]);
    };
    let tracepoint = tracer.mode_of("socket_error") == Some("tracepoint");
    let prometheus = Prometheus::start(&binary, metrics_addr)?;
    prometheus.wait_for("scraping udptrace", |p| Ok(p.query("up{job=\"udptrace\"}")? == 1.0))?;
    let instance = metrics_addr.to_string();

    // Before the panels' range: a first refusal, its series born before the range starts.
    let mut sockets = vec![refused_socket(&hosts.refused, CLOSED_PORT)?];
    let first = "sum(udptrace_socket_errors_total{errno=\"ECONNREFUSED\",verdict=\"delivered\"}) \
                 + sum(udptrace_icmp_errors_sent_total{cause=\"no_listener\"})";
    prometheus.wait_for("showing the first refusal", |p| {
        let at = now();
        let (_, result) = p.instant(first, Some(at))?;
        Ok(matches!(result.as_slice(), [(_, v)] if *v == 2.0))
    })?;
    // The range starts once a query saw it; a scrape started before then has its text within its 1 s
    // timeout, so that what follows counts in the range only.
    let range_start = now();
    std::thread::sleep(Duration::from_millis(1500));

    let refused = &hosts.refused;
    for _ in 0..2 {
        sockets.push(refused_socket(refused, CLOSED_PORT)?);
    }
    let _listener = udp_socket(&refused.server, SocketAddr::new(TwoHosts::server_ip(Family::V4), REJECT_PORT))?;
    for _ in 0..2 {
        sockets.push(refused_socket(refused, REJECT_PORT)?);
    }
    let mut pod_clients = Vec::new();
    for _ in 0..POD_REFUSALS {
        pod_clients.push(pods::client_in(config, refused, Some(&checkout), "checkout")?);
    }
    let dns_client = udp_socket(&refused.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    for _ in 0..2 {
        dns_client.send_to(&query(1), SocketAddr::new(TwoHosts::server_ip(Family::V4), 53))?;
    }
    let dropped = udp_socket(&refused.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    for _ in 0..3 {
        dropped.send_to(b"udptrace", SocketAddr::new(TwoHosts::server_ip(Family::V4), DROP_PORT))?;
    }
    let dns_v6 = udp_socket(&refused.client, SocketAddr::new(TwoHosts::client_ip(Family::V6), 0))?;
    dns_v6.send_to(&query(28), SocketAddr::new(TwoHosts::server_ip(Family::V6), 53))?;

    let far = SocketAddr::new(Family::V4.pick("10.233.0.9", "fd00:233::9"), CLOSED_PORT);
    let recverr = |s: &std::net::UdpSocket| set_recverr(s, false);
    let (_, _, routed_socket) =
        send_and_receive(&hosts.routed.client, TwoHosts::client_ip(Family::V4), far, recverr, true, b"udptrace")?;

    let service = conntrack::service(Family::V4);
    let mut nat_sockets = Vec::new();
    for _ in 0..2 {
        let (_, _, socket) = send_and_receive(
            &hosts.nat.client,
            TwoHosts::client_ip(Family::V4),
            service,
            no_option,
            true,
            b"udptrace",
        )?;
        nat_sockets.push(socket);
    }

    // Against the rate limits: what the kernel sent and stopped is what its counters say.
    let limited = &hosts.limited;
    let before = icmp_counters(&limited.server)?;
    let client = udp_socket(&limited.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    for _ in 0..300 {
        client.send_to(b"flood", SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT))?;
    }
    let after = settled(config.event_timeout, || icmp_counters(&limited.server))?;
    let limited_sent = after.reported_by(&send_mode) - before.reported_by(&send_mode);
    let limited_host = after.rate_limit_host - before.rate_limit_host;
    let limited_global = after.rate_limit_global - before.rate_limit_global;
    let limits_counted = after.has_rate_limit_counters;

    // udptrace stopped for a flood its 128 KiB buffer cannot hold: it loses some, and says how many.
    let flooded = &hosts.flooded;
    let before = icmp_counters(&flooded.server)?;
    {
        let _stopped = Stopped::new(tracer.pid());
        let client = udp_socket(&flooded.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
        for _ in 0..2_000 {
            client.send_to(b"flood", SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT))?;
        }
        settled(config.event_timeout, || icmp_counters(&flooded.server))?;
    }
    let flood_sent = icmp_counters(&flooded.server)?.reported_by(&send_mode) - before.reported_by(&send_mode);
    let flooded_ns = flooded.server.inode;
    let shown = |seen: &[Value]| -> u64 {
        seen.iter()
            .filter(|e| e["event"] == "icmp_sent" && e["netns"] == flooded_ns)
            .map(|e| e["count"].as_u64().unwrap_or(1))
            .sum()
    };
    let deadline = Instant::now() + config.event_timeout * 3;
    while shown(&tracer.seen) + lost_in(&tracer.seen) < flood_sent && Instant::now() < deadline {
        tracer.collect_for(Duration::from_millis(500));
    }
    // A second more: the lost count comes once a second.
    tracer.collect_for(Duration::from_millis(1500));
    let lost = lost_in(&tracer.seen);
    let flood_shown = shown(&tracer.seen);
    let flood_accounted = if flood_shown + lost == flood_sent && lost > 0 {
        Outcome::Pass
    } else {
        Outcome::Fail(format!(
            "the kernel sent {flood_sent} port unreachables while udptrace was stopped; it showed {flood_shown} and \
             reported {lost} lost: want the sum, with some lost"
        ))
    };

    let ipv4 = ("family", "ipv4");
    let unreachable_drop = if super::drops::has_drop_reasons() { "not_specified" } else { "in ip_error" };
    let mut all = vec![
        caused("socket_errors", &[("errno", "ECONNREFUSED"), ("verdict", "delivered"), ipv4], 6),
        Caused {
            pod: Some(POD),
            ..caused("socket_errors", &[("errno", "ECONNREFUSED"), ("verdict", "delivered"), ipv4], POD_REFUSALS)
        },
        caused("socket_errors", &[("errno", "EHOSTUNREACH"), ("verdict", "delivered"), ipv4], 1),
        caused(
            "icmp_errors_sent",
            &[("type", "3"), ("code", "3"), ("cause", "no_listener"), ipv4],
            2 + 2 + 2 + POD_REFUSALS + limited_sent + flood_shown,
        ),
        caused("icmp_errors_sent", &[("type", "3"), ("code", "3"), ("cause", "firewall_reject"), ipv4], 2),
        caused("icmp_errors_sent", &[("type", "3"), ("code", "1"), ("cause", "no_route"), ipv4], 1),
        caused("icmp_errors_suppressed", &[("scope", "host")], limited_host),
        caused("icmp_errors_suppressed", &[("scope", "global")], limited_global),
        caused("udp_drops", &[("reason", "netfilter_drop"), ("direction", "in"), ipv4], 3),
        caused("udp_drops", &[("reason", "netfilter_drop"), ("direction", "in"), ("family", "ipv6")], 1),
        // The router frees the datagram it answers with host unreachable (`ip_error`), for no given reason.
        caused("udp_drops", &[("reason", unreachable_drop), ("direction", "in"), ipv4], 1),
        caused(
            "dns_errors",
            &[("event", "icmp_sent"), ("outcome", "no_listener"), ("qtype", "A"), ("rcode", "none")],
            2,
        ),
        caused(
            "dns_errors",
            &[("event", "udp_dropped"), ("outcome", "netfilter_drop"), ("qtype", "AAAA"), ("rcode", "none")],
            1,
        ),
        caused("translated", &[("event", "socket_error"), ("replied", "false")], 2),
        caused("lost_events", &[], lost),
    ];
    // The DNS clients' sockets are unconnected: fentry and kprobe modes see the refusals Linux drops there,
    // each naming its query; tracepoint mode sees delivered errors only.
    let ignored = if tracepoint {
        Outcome::Skip(
            "tracepoint mode (this host's) sees delivered errors only: the kernel reports an ignored one to no \
             tracepoint, and the QEMU kernels that run fentry and kprobe have no Prometheus"
                .to_owned(),
        )
    } else {
        all.push(caused("socket_errors", &[("errno", "ECONNREFUSED"), ("verdict", "ignored_unconnected"), ipv4], 2));
        all.push(caused(
            "dns_errors",
            &[("event", "socket_error"), ("outcome", "ECONNREFUSED"), ("qtype", "A"), ("rcode", "none")],
            2,
        ));
        Outcome::Pass
    };
    let limits = if limits_counted && limited_host + limited_global > 0 {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("the flood against the rate limits: {after:?}, want the kernel's counters to rise"))
    };

    // Every panel's query, against what was caused, until they all agree or time runs out.
    struct Check {
        name: &'static str,
        title: String,
        expr: String,
        want: Result<BTreeMap<LabelSet, u64>, String>,
        last: Option<String>,
    }
    let mut checks = Vec::new();
    for (index, panel) in queries.iter().enumerate() {
        let metric = metric_of(&panel.expr).unwrap_or_else(|_| "unknown".to_owned());
        let by_pod = panel.expr.contains("k8s_");
        let name = row_name(index + 1, &metric, by_pod);
        let want = metric_of(&panel.expr)
            .and_then(|metric| expected(&all, &metric, &grouping(&panel.expr)?, &instance))
            .map_err(|e| format!("{e:#}"));
        checks.push(Check { name, title: panel.title.clone(), expr: panel.expr.clone(), want, last: None });
    }
    let deadline = Instant::now() + PANELS_TIMEOUT;
    loop {
        // The range from its start to now, in whole milliseconds, as Grafana sets `$__range` and
        // `$__interval` (the query's time and the range's start are then the same instant).
        let at = now();
        let range = format!("{}ms", ((at - range_start) * 1000.0).round() as u64);
        let variables = [
            ("__range", range.as_str()),
            ("__interval", range.as_str()),
            ("node", instance.as_str()),
            ("namespace", ".*"),
            ("pod", ".*"),
        ];
        let mut agreed = true;
        for check in &mut checks {
            let Ok(want) = &check.want else { continue };
            let outcome = substitute(&check.expr, &variables)
                .and_then(|expr| prometheus.instant(&expr, Some(at)))
                .map(|(_, got)| difference(&got, want));
            check.last = match outcome {
                Ok(None) => None,
                Ok(Some(why)) => Some(why),
                Err(e) => Some(format!("{e:#}")),
            };
            agreed &= check.last.is_none();
        }
        if agreed || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    drop((sockets, routed_socket, nat_sockets));
    let stopped = match tracer.stop() {
        Ok(_) => Outcome::Pass,
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };

    let mut results: Results =
        vec![("rate_limited", limits), ("flood_accounted", flood_accounted), ("ignored_errors", ignored)];
    for check in checks {
        let outcome = match (check.want, check.last) {
            (Err(why), _) => Outcome::Fail(format!("{:?}: {why}", check.title)),
            (Ok(_), None) => Outcome::Pass,
            (Ok(_), Some(why)) => {
                Outcome::Fail(format!("{:?} ({}): {why}", check.title, check.expr.replace('\n', " ")))
            }
        };
        results.push((check.name, outcome));
    }

    results.push(("clean_stop", stopped));
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_panel_reads_one_counter_grouped() {
        let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
        let queries = panel_queries(&dashboard).expect("every panel has a query");
        assert!(queries.len() >= 14, "{} queries", queries.len());
        for query in &queries {
            let metric = metric_of(&query.expr).expect(&query.title);
            let by = grouping(&query.expr).expect(&query.title);
            assert!(by.first().is_some_and(|l| l == "instance"), "{}: per node first: {by:?}", query.title);
            assert!(query.expr.contains("instance=~\"$node\""), "{}: filtered by $node", query.title);
            assert!(!metric.is_empty());
        }
    }

    #[test]
    fn substitutes_every_variable_or_says_which_is_left() {
        let vars = [("__range", "5m"), ("node", "n:9464")];
        let expr = "sum by (instance) (x{instance=~\"$node\"} offset $__range) or y{instance=~\"${node}\"}";
        assert_eq!(
            substitute(expr, &vars).unwrap(),
            "sum by (instance) (x{instance=~\"n:9464\"} offset 5m) or y{instance=~\"n:9464\"}"
        );
        let err = substitute("x offset $__interval", &vars).unwrap_err().to_string();
        assert!(err.contains("$__interval"), "{err}");
    }

    #[test]
    fn expected_rows_sum_by_the_panel_labels() {
        let all = [
            caused("socket_errors", &[("errno", "ECONNREFUSED"), ("verdict", "delivered")], 2),
            caused("socket_errors", &[("errno", "ECONNREFUSED"), ("verdict", "ignored_unconnected")], 3),
            caused("socket_errors", &[("errno", "EHOSTUNREACH"), ("verdict", "delivered")], 0),
            caused("udp_drops", &[("reason", "netfilter_drop")], 7),
        ];
        let by = |labels: &[&str]| labels.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
        let rows = expected(&all, "socket_errors", &by(&["instance", "errno"]), "n:1").unwrap();
        let key: LabelSet = [("instance", "n:1"), ("errno", "ECONNREFUSED")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(rows, BTreeMap::from([(key, 5)]), "a count of 0 makes no series");
        let pods = expected(&all, "udp_drops", &by(&["instance", "k8s_pod_name", "reason"]), "n:1").unwrap();
        assert!(pods.keys().all(|l| !l.contains_key("k8s_pod_name")), "{pods:?}");
        assert!(expected(&all, "udp_drops", &by(&["instance", "direction"]), "n:1").is_err());
    }

    #[test]
    fn a_difference_names_both_sides() {
        let labels: LabelSet = [("cause".to_owned(), "no_listener".to_owned())].into();
        let want = BTreeMap::from([(labels.clone(), 3)]);
        assert_eq!(difference(&[(labels.clone(), 3.0)], &want), None);
        assert!(difference(&[(labels.clone(), 3.05)], &want).is_some());
        assert!(difference(&[], &want).is_some());
        assert!(difference(&[(labels, 3.0), (LabelSet::new(), 1.0)], &want).is_some());
    }
}
