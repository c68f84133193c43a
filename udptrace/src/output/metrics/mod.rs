//! `--metrics ADDR:PORT`: the events as Prometheus counters, served as OpenMetrics text on `/metrics`
//! (`server`).
//!
//! Every label is bounded, whoever sends the packets. By default the labels are the kernel's own closed sets
//! (errno, verdict, ICMP type and code, cause, scope, drop reason, family), for DNS the question types and
//! response codes the decoder names (the rest `other`), and for a translated connection the event and whether
//! conntrack saw a reply (`udptrace_translated_total`, never a tuple). Addresses and DNS names become labels only with
//! `--metrics-addresses` and `--metrics-dns-names`, and then through `slots`: at most [`slots::MAX_VALUES`] per
//! counter, a value only once seen in two different seconds, a slot freed after ten idle minutes; the rest
//! count as `other`, and `udptrace_metrics_addresses_folded_total` says how many events were folded so. As a
//! backstop, each counter holds at most [`MAX_SERIES`] series; an event that would add one more is counted
//! in `udptrace_metrics_series_overflow_total` instead.

mod server;
mod slots;

use std::{
    io,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
pub use server::{Server, bind};
#[cfg(test)]
use slots::MAX_VALUES;
use slots::Slots;

use super::Sink;
use crate::{
    domain::{Dns, Pod},
    events::{Event, METRICS},
};

type Labels = Vec<(&'static str, String)>;

/// The series one counter holds at most, whatever its labels: a backstop behind the bounds of each label.
pub const MAX_SERIES: usize = 4000;
/// `/healthz` fails once the tracing loop has not run for this long (it runs at least once a second).
const STALL: Duration = Duration::from_secs(15);

/// `--metrics`: every event that passes the filters is counted.
pub struct MetricsSink(pub Metrics);

impl Sink for MetricsSink {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.0.count(event);
        Ok(())
    }

    /// Called after every turn of the tracing loop: the heartbeat `/healthz` reads.
    fn flush(&mut self) -> io::Result<()> {
        self.0.beat();
        Ok(())
    }
}

/// One counter and the slots of its label from outside (`None`: the option that adds it is off).
#[derive(Clone)]
struct Series {
    name: &'static str,
    family: Family<Labels, Counter>,
    /// How many series `family` holds (only the tracing loop adds and removes them).
    held: Arc<AtomicUsize>,
    slots: Option<Arc<Mutex<Slots>>>,
    /// The pods' slots, with `--metrics-pods`.
    pods: Option<Arc<Mutex<Slots>>>,
}

impl Series {
    /// Removes the series of freed slots.
    fn remove(&self, gone: Vec<Labels>) {
        for labels in gone {
            if self.family.remove(&labels) {
                self.held.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn new(registry: &mut Registry, name: &'static str, help: &str, outside: bool, pods: bool) -> Self {
        let family = Family::<Labels, Counter>::default();
        registry.register(name, help, family.clone());
        let pods = pods.then(|| Arc::new(Mutex::new(Slots::trusted())));
        Self { name, family, held: Arc::default(), slots: outside.then(Arc::default), pods }
    }
}

/// The counters, shared between the tracing loop and the HTTP server.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// The counters of the kinds' metrics (`events::METRICS`) that count by labels.
    kinds: Vec<Series>,
    dns_errors: Series,
    /// `translated`: errors and drops on connections conntrack translated.
    translated: Series,
    /// `lost_events`.
    lost: Counter,
    /// Events whose address (or name) was folded into `other`, by counter name.
    folded: Family<Labels, Counter>,
    /// Events not counted in their counter, which held [`MAX_SERIES`] series, by counter name.
    overflow: Family<Labels, Counter>,
    /// When the counters were made: the clock of the slots and the heartbeat.
    started: Instant,
    /// Milliseconds from `started` to the tracing loop's last turn.
    heartbeat: Arc<AtomicU64>,
}

/// The labels of unbounded values, which each option turns on (every distinct value is a series).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cardinality {
    /// `--metrics-addresses`.
    pub addresses: bool,
    /// `--metrics-dns-names`.
    pub dns_names: bool,
    /// `--metrics-pods`.
    pub pods: bool,
}

impl Metrics {
    /// `hooks`: each logical hook and the mode it attached in.
    pub fn new(hooks: &[(&'static str, &'static str)], cardinality: Cardinality) -> Self {
        let Cardinality { addresses, dns_names, pods } = cardinality;
        let mut registry = Registry::with_prefix("udptrace");
        // A counter per kind's metric, as the kind names and explains it.
        let mut kinds = Vec::new();
        let lost = Counter::default();
        for metric in METRICS {
            if metric.labelled {
                kinds.push(Series::new(&mut registry, metric.name, metric.help, addresses, pods));
            } else {
                registry.register(metric.name, metric.help, lost.clone());
            }
        }
        let dns_errors = Series::new(
            &mut registry,
            "dns_errors",
            "Events about a DNS query or answer (a datagram on a DNS port), by event, outcome (the errno, drop reason, ICMP \
             cause or rate-limit scope), question type and response code (\"none\" for a query; \"unknown\" where the \
             bytes did not reach; \"other\" for a type or code without a mnemonic)",
            dns_names,
            pods,
        );
        let translated = Series::new(
            &mut registry,
            "translated",
            "Errors and drops on connections conntrack translated (DNAT, SNAT), by event and whether conntrack ever \
             saw a reply on the connection (\"false\": the destination it was sent to never answered the flow)",
            false,
            false,
        );
        registry.register("build", "udptrace's version", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        let modes = Family::<Labels, Gauge>::default();
        for (hook, mode) in hooks {
            modes.get_or_create(&vec![("hook", (*hook).to_owned()), ("mode", (*mode).to_owned())]).set(1);
        }
        registry.register("hook_mode", "The mode each logical hook attached in (1 for the active one)", modes);
        let folded = Family::<Labels, Counter>::default();
        if addresses || dns_names || pods {
            registry.register(
                "metrics_addresses_folded",
                "Events counted with the address, DNS name or pod other: an address or name not seen in two different \
                 seconds yet, or their counter holding as many as it takes, by counter",
                folded.clone(),
            );
        }
        let overflow = Family::<Labels, Counter>::default();
        registry.register(
            "metrics_series_overflow",
            "Events left out of their counter, which held as many series as it takes, by counter",
            overflow.clone(),
        );
        Self {
            registry: Arc::new(registry),
            kinds,
            dns_errors,
            translated,
            lost,
            folded,
            overflow,
            started: Instant::now(),
            heartbeat: Arc::default(),
        }
    }

    /// Counts one event that passed the filters.
    pub fn count(&self, event: &Event) {
        self.count_at(event, self.started.elapsed().as_secs());
    }

    /// Counts one event at `now`, in seconds from `started`: in its kind's counter, for an event about a DNS
    /// datagram in `udptrace_dns_errors_total`, and for one on a translated connection in
    /// `udptrace_translated_total`.
    fn count_at(&self, event: &Event, now: u64) {
        let kind = event.kind();
        let sample = kind.sample();
        // The counter without labels: `lost_events`.
        let Some(series) = self.kinds.iter().find(|s| s.name == sample.metric.name) else {
            self.lost.inc_by(sample.count);
            return;
        };
        let pod = kind.pod();
        self.add(series, sample.labels, sample.address, pod, sample.count, now);
        if let Some(translation) = kind.conntrack() {
            let labels = vec![("event", kind.name().to_owned()), ("replied", translation.replied.to_string())];
            self.add(&self.translated, labels, None, None, sample.count, now);
        }
        if let Some(dns) = kind.dns() {
            self.dns(kind.name(), sample.outcome, dns, pod, sample.count, now);
        }
    }

    /// Counts an event about a DNS datagram in `udptrace_dns_errors_total`. The type and response code are
    /// mnemonics or `other`; the name is a label only with `--metrics-dns-names`.
    fn dns(&self, event: &'static str, outcome: String, dns: &Dns, pod: Option<&Pod>, count: u64, now: u64) {
        let rcode = match dns.response {
            Some(true) => dns.rcode.as_deref().map_or("unknown", crate::dns::rcode_label),
            Some(false) => "none",
            None => "unknown",
        };
        let labels = vec![
            ("event", event.to_owned()),
            ("outcome", outcome),
            ("qtype", dns.qtype.as_deref().map_or("unknown", crate::dns::type_label).to_owned()),
            ("rcode", rcode.to_owned()),
        ];
        let name = dns.qname.as_deref().map_or_else(|| "unknown".to_owned(), |n| crate::dns::shown(n).to_owned());
        self.add(&self.dns_errors, labels, Some(("name", name)), pod, count, now);
    }

    /// Adds `count` to `series` under `labels` and, when its option is on and the event has one, the label
    /// from outside (`other` until the value has a slot) and the pod's (`k8s_namespace_name`,
    /// `k8s_pod_name`: empty for an event in no pod, `other` past the slots); past [`MAX_SERIES`] series, to
    /// the overflow count instead.
    fn add(
        &self,
        series: &Series,
        mut labels: Labels,
        outside: Option<(&'static str, String)>,
        pod: Option<&Pod>,
        count: u64,
        now: u64,
    ) {
        let by_counter = || vec![("counter", series.name.to_owned())];
        let mut slots = series.slots.as_ref().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner));
        let mut held = None;
        if let (Some(slots), Some((key, value))) = (&mut slots, outside) {
            series.remove(slots.sweep(now));
            if slots.admit(&value, now) {
                labels.push((key, value.clone()));
                held = Some(value);
            } else {
                labels.push((key, "other".to_owned()));
                self.folded.get_or_create(&by_counter()).inc_by(count);
            }
        }
        let mut pods = series.pods.as_ref().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner));
        let mut pod_held = None;
        if let Some(pods) = &mut pods {
            series.remove(pods.sweep(now));
            let (namespace, name) = match pod {
                None => (String::new(), String::new()),
                Some(pod) if pods.admit(&format!("{}/{}", pod.namespace, pod.name), now) => {
                    pod_held = Some(format!("{}/{}", pod.namespace, pod.name));
                    (pod.namespace.clone(), pod.name.clone())
                }
                Some(_) => {
                    self.folded.get_or_create(&by_counter()).inc_by(count);
                    ("other".to_owned(), "other".to_owned())
                }
            };
            labels.push(("k8s_namespace_name", namespace));
            labels.push(("k8s_pod_name", name));
        }
        match series.family.get(&labels) {
            Some(counter) => {
                counter.inc_by(count);
            }
            None if series.held.load(Ordering::Relaxed) >= MAX_SERIES => {
                self.overflow.get_or_create(&by_counter()).inc_by(count);
                return;
            }
            None => {
                series.family.get_or_create(&labels).inc_by(count);
                series.held.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let (Some(slots), Some(value)) = (&mut slots, held) {
            slots.record(&value, &labels);
        }
        if let (Some(pods), Some(value)) = (&mut pods, pod_held) {
            pods.record(&value, &labels);
        }
    }

    /// The tracing loop ran now.
    pub fn beat(&self) {
        self.beat_at(Instant::now());
    }

    /// As if made `ago` earlier.
    #[cfg(test)]
    fn started_before(mut self, ago: Duration) -> Self {
        self.started -= ago;
        self
    }

    fn beat_at(&self, at: Instant) {
        let millis = at.saturating_duration_since(self.started).as_millis();
        self.heartbeat.store(u64::try_from(millis).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// How long the tracing loop has not run, when that is over [`STALL`].
    fn stalled(&self) -> Option<Duration> {
        let last = self.started + Duration::from_millis(self.heartbeat.load(Ordering::Relaxed));
        Some(last.elapsed()).filter(|since| *since > STALL)
    }

    fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use crate::events::{Lost, SocketError, samples};

    fn events() -> (Event, Event) {
        (Event::SocketError(samples::owned_socket_error()), Event::IcmpSent(samples::icmp_sent()))
    }

    #[test]
    fn counts_by_low_cardinality_labels() {
        let metrics = Metrics::new(&[("socket_error", "fentry"), ("icmp_send", "tracepoint")], Cardinality::default());
        let (refused, sent) = events();
        metrics.count(&refused);
        metrics.count(&refused);
        metrics.count(&sent);
        metrics.count(&Event::Lost(Lost { time: std::time::UNIX_EPOCH, count: 4 }));
        let mut flood = samples::rcvbuf_drop();
        flood.count = 300;
        metrics.count(&Event::UdpDropped(flood));
        let text = metrics.encode();
        assert!(
            text.contains("udptrace_udp_drops_total{reason=\"socket_rcvbuff\",direction=\"in\",family=\"ipv4\"} 300"),
            "{text}"
        );
        assert!(
            text.contains(
                "udptrace_socket_errors_total{errno=\"ECONNREFUSED\",verdict=\"delivered\",family=\"ipv4\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("udptrace_icmp_errors_sent_total{type=\"3\",code=\"3\",cause=\"other\",family=\"ipv4\"} 1"),
            "{text}"
        );
        assert!(text.contains("udptrace_lost_events_total 4"), "{text}");
        assert!(text.contains("udptrace_hook_mode{hook=\"socket_error\",mode=\"fentry\"} 1"), "{text}");
        assert!(
            text.contains(&format!("udptrace_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        assert!(!text.contains("remote=") && !text.contains("10.0.0.9"), "addresses only when asked: {text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// Errors and drops on translated connections count by event and whether conntrack saw a reply, never
    /// by a tuple: a thousand flows to a thousand backends are at most one series per event and answer.
    #[test]
    fn translated_flows_count_by_event_and_reply_only() {
        let metrics = Metrics::new(&[], Cardinality { addresses: true, ..Cardinality::default() });
        for n in 0..1000u16 {
            let mut refused = samples::refused_by_backend();
            let t = refused.conntrack.as_mut().unwrap();
            t.reply.src = SocketAddr::from(([10, 244, (n >> 8) as u8, n as u8], 53));
            t.replied = n % 4 == 0;
            metrics.count_at(&Event::SocketError(refused), 1);
        }
        let mut gone = samples::backend_gone();
        gone.count = 7;
        metrics.count(&Event::UdpDropped(gone));
        metrics.count(&Event::IcmpSuppressed(samples::host_limited(samples::refused_at_backend())));
        // Not translated: not counted there.
        metrics.count(&events().0);
        metrics.count(&events().1);
        let text = metrics.encode();
        assert!(text.contains("udptrace_translated_total{event=\"socket_error\",replied=\"false\"} 750"), "{text}");
        assert!(text.contains("udptrace_translated_total{event=\"socket_error\",replied=\"true\"} 250"), "{text}");
        assert!(text.contains("udptrace_translated_total{event=\"udp_dropped\",replied=\"false\"} 7"), "{text}");
        assert!(text.contains("udptrace_translated_total{event=\"icmp_suppressed\",replied=\"false\"} 1"), "{text}");
        assert_eq!(series(&text, "translated"), 4, "{text}");
        let translated: Vec<&str> = text.lines().filter(|l| l.starts_with("udptrace_translated_total")).collect();
        assert!(translated.iter().all(|l| !l.contains("10.")), "no address in a label: {translated:?}");
    }

    /// A socket error from `remote`.
    fn refused_from(remote: [u8; 4], port: u16) -> Event {
        let Event::SocketError(refused) = events().0 else { panic!("a socket error") };
        Event::SocketError(SocketError { remote: Some(SocketAddr::from((remote, port))), ..refused })
    }

    fn series(text: &str, family: &str) -> usize {
        text.lines().filter(|l| l.starts_with(&format!("udptrace_{family}_total{{"))).count()
    }

    #[test]
    fn a_counter_takes_so_many_addresses_and_folds_the_rest() {
        let metrics = Metrics::new(&[], Cardinality { addresses: true, ..Cardinality::default() });
        // Each address seen in seconds 1 and 2: a slot from its second sighting on.
        for now in [1, 2] {
            for n in 0..MAX_VALUES as u16 + 5 {
                metrics.count_at(&refused_from([10, 9, (n >> 8) as u8, n as u8], 53), now);
            }
        }
        let text = metrics.encode();
        assert_eq!(series(&text, "socket_errors"), MAX_VALUES + 1, "{MAX_VALUES} addresses and other");
        assert!(text.contains("remote=\"other\"} 1010"), "first sightings and the 5 over: {text}");
        assert!(text.contains("udptrace_metrics_addresses_folded_total{counter=\"socket_errors\"} 1010"), "{text}");
        // One already labelled keeps its own series.
        metrics.count_at(&refused_from([10, 9, 0, 0], 53), 3);
        assert!(metrics.encode().contains("remote=\"10.9.0.0:53\"} 2"));
    }

    #[test]
    fn a_spoofed_address_seen_once_takes_no_series_and_an_idle_one_is_freed() {
        let metrics = Metrics::new(&[], Cardinality { addresses: true, ..Cardinality::default() });
        // 100,000 spoofed sources, each seen once, over 100 seconds.
        for n in 0..100_000u32 {
            let [_, a, b, c] = n.to_be_bytes();
            metrics.count_at(&refused_from([10, a, b, c], 53), u64::from(n / 1000));
        }
        let text = metrics.encode();
        assert_eq!(series(&text, "socket_errors"), 1, "other alone: {text}");
        assert!(text.contains("remote=\"other\"} 100000"), "{text}");
        // A real peer, refused in two seconds, is labelled; ten idle minutes later its series is gone.
        metrics.count_at(&refused_from([192, 0, 2, 1], 53), 200);
        metrics.count_at(&refused_from([192, 0, 2, 1], 53), 201);
        assert!(metrics.encode().contains("remote=\"192.0.2.1:53\"} 1"));
        metrics.count_at(&refused_from([192, 0, 2, 2], 53), 801);
        let text = metrics.encode();
        assert!(!text.contains("192.0.2.1"), "idle 600 s: freed: {text}");
    }

    #[test]
    fn addresses_only_when_asked() {
        let metrics = Metrics::new(&[], Cardinality { addresses: true, ..Cardinality::default() });
        let (refused, sent) = events();
        for now in [1, 2] {
            metrics.count_at(&refused, now);
            metrics.count_at(&sent, now);
        }
        let text = metrics.encode();
        assert!(text.contains("remote=\"10.0.0.9:8888\"} 1"), "{text}");
        assert!(text.contains("dst=\"10.0.0.9:8888\"} 1"), "{text}");
    }

    /// A DNS socket error whose question is `qtype` `name`, and whose payload says `response` with `rcode`.
    fn dns_error(qtype: &str, name: &str, rcode: Option<&str>) -> Event {
        let Event::SocketError(refused) = events().0 else { panic!("a socket error") };
        let mut dns = samples::dns_drop().dns.expect("a DNS drop");
        dns.qtype = Some(qtype.to_owned());
        dns.qname = Some(name.to_owned());
        dns.response = Some(rcode.is_some());
        dns.rcode = rcode.map(str::to_owned);
        Event::SocketError(SocketError { dns: Some(dns), ..refused })
    }

    #[test]
    fn dns_errors_name_the_question_only_when_asked_and_so_many_names() {
        let Event::SocketError(refused) = events().0 else { panic!("a socket error") };
        let refused = SocketError { dns: samples::dns_drop().dns, ..refused };
        let plain = Metrics::new(&[], Cardinality::default());
        plain.count(&Event::SocketError(refused));
        plain.count(&Event::UdpDropped(samples::dns_drop()));
        let text = plain.encode();
        assert!(
            text.contains(
                "udptrace_dns_errors_total{event=\"socket_error\",outcome=\"ECONNREFUSED\",qtype=\"A\",rcode=\"none\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("event=\"udp_dropped\",outcome=\"netfilter_drop\""), "{text}");
        assert!(!text.contains("www.example.com"), "names only when asked: {text}");

        let named = Metrics::new(&[], Cardinality { dns_names: true, ..Cardinality::default() });
        for now in [1, 2] {
            for n in 0..MAX_VALUES + 3 {
                named.count_at(&dns_error("A", &format!("host{n}.example.com"), None), now);
            }
        }
        let text = named.encode();
        assert!(text.contains("name=\"host0.example.com\"} 1"), "{text}");
        assert_eq!(series(&text, "dns_errors"), MAX_VALUES + 1, "{MAX_VALUES} names and other");
        assert!(text.contains("udptrace_metrics_addresses_folded_total{counter=\"dns_errors\"} 1006"), "{text}");
    }

    /// Random question types and response codes, as anyone can send them, give the named ones and `other`.
    #[test]
    fn dns_types_and_codes_without_a_mnemonic_are_other() {
        let metrics = Metrics::new(&[], Cardinality::default());
        for code in 0..=u16::MAX {
            let rcode = crate::dns::rcode_name(code & 0xf);
            metrics.count(&dns_error(&crate::dns::type_name(code), "x.example", Some(&rcode)));
        }
        let text = metrics.encode();
        let labels: Vec<&str> = text.lines().filter(|l| l.starts_with("udptrace_dns_errors_total{")).collect();
        assert!(labels.len() < 150 * 13, "{} series", labels.len());
        assert!(text.contains("qtype=\"other\",rcode=\"other\"}"), "{text}");
        assert!(text.contains("qtype=\"A\",rcode=\"FORMERR\"}"), "{text}");
        assert!(!text.contains("qtype=\"TYPE") && !text.contains("rcode=\"RCODE"), "{text}");
    }

    /// However its labels grow, a counter stops at MAX_SERIES series and counts the rest apart.
    #[test]
    fn a_counter_holds_so_many_series_and_counts_the_rest() {
        let metrics = Metrics::new(&[], Cardinality::default());
        let labels = |n: usize| vec![("n", n.to_string())];
        let drops = metrics.kinds.iter().find(|s| s.name == "udp_drops").expect("the drops' counter");
        for n in 0..MAX_SERIES + 7 {
            metrics.add(drops, labels(n), None, None, 2, 1);
        }
        let text = metrics.encode();
        assert_eq!(series(&text, "udp_drops"), MAX_SERIES);
        assert!(text.contains("udptrace_metrics_series_overflow_total{counter=\"udp_drops\"} 14"), "{text}");
        // A series it holds still counts.
        metrics.add(drops, labels(0), None, None, 1, 1);
        assert!(metrics.encode().contains("udp_drops_total{n=\"0\"} 3"));
    }

    /// `--metrics-pods`: each counter labels the pod (empty for an event in none), a DNS event's counter too;
    /// past MAX_VALUES pods the rest count as other, and are said to be folded.
    #[test]
    fn pods_label_the_counters_up_to_so_many() {
        let metrics = Metrics::new(&[], Cardinality { pods: true, ..Cardinality::default() });
        let in_pod = |name: &str| {
            let mut e = samples::owned_socket_error();
            e.meta.pod = Some(samples::pod(name));
            Event::SocketError(e)
        };
        metrics.count_at(&in_pod("coredns-1"), 1);
        metrics.count_at(&in_pod("coredns-1"), 1);
        metrics.count_at(&Event::SocketError(samples::owned_socket_error()), 1);
        let mut query = samples::dns_drop();
        query.meta.pod = Some(samples::pod("coredns-1"));
        metrics.count_at(&Event::UdpDropped(query), 1);
        let text = metrics.encode();
        let refused = "udptrace_socket_errors_total{errno=\"ECONNREFUSED\",verdict=\"delivered\",family=\"ipv4\"";
        assert!(
            text.contains(&format!("{refused},k8s_namespace_name=\"kube-system\",k8s_pod_name=\"coredns-1\"}} 2")),
            "{text}"
        );
        assert!(text.contains(&format!("{refused},k8s_namespace_name=\"\",k8s_pod_name=\"\"}} 1")), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("udptrace_dns_errors_total{")
                && l.contains("k8s_namespace_name=\"kube-system\",k8s_pod_name=\"coredns-1\"")),
            "{text}"
        );
        for n in 0..MAX_VALUES + 5 {
            metrics.count_at(&in_pod(&format!("p{n}")), 2);
        }
        let text = metrics.encode();
        assert!(text.contains(&format!("{refused},k8s_namespace_name=\"other\",k8s_pod_name=\"other\"}} 6")), "{text}");
        assert!(text.contains("udptrace_metrics_addresses_folded_total{counter=\"socket_errors\"} 6"), "{text}");
        // Without the option, no pod label.
        let plain = Metrics::new(&[], Cardinality::default());
        plain.count_at(&in_pod("coredns-1"), 1);
        assert!(!plain.encode().contains("k8s_"), "{}", plain.encode());
    }
}
