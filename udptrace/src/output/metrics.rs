//! `--metrics ADDR:PORT`: the events as Prometheus counters, served as OpenMetrics text on `/metrics`.
//!
//! Labels are low-cardinality by default: errno, verdict, ICMP type and code, cause, scope, family. Addresses
//! and ports become labels only with `--metrics-addresses`: on a busy host every peer would otherwise be a
//! time series of its own. Even then each counter takes at most [`MAX_ADDRESSES`] addresses: spoofed ICMP
//! errors quoting random tuples, or drops of forwarded traffic, would grow it without bound. The rest count
//! as `other`, and `udptrace_metrics_addresses_folded_total` says how many events were folded so.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
use tokio::net::TcpListener;

use super::{Sink, endpoint};
use crate::{
    domain::{Dns, Event, IcmpSent},
    kernel::tables::errno_name,
};

type Labels = Vec<(&'static str, String)>;

/// `--metrics`: every event that passes the filters is counted.
pub struct MetricsSink(pub Metrics);

impl Sink for MetricsSink {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.0.count(event);
        Ok(())
    }
}

/// The counters, shared between the tracing loop and the HTTP server.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    socket_errors: Family<Labels, Counter>,
    icmp_sent: Family<Labels, Counter>,
    icmp_suppressed: Family<Labels, Counter>,
    udp_drops: Family<Labels, Counter>,
    dns_errors: Family<Labels, Counter>,
    lost: Counter,
    /// Label events with addresses (`--metrics-addresses`).
    addresses: bool,
    /// Label DNS errors with the name asked (`--metrics-dns-names`).
    dns_names: bool,
    /// The addresses (names, for `dns_errors`) each counter labels so far, by counter name.
    labelled: Arc<Mutex<HashMap<&'static str, HashSet<String>>>>,
    /// Events whose address was folded into `other`, by counter name.
    folded: Family<Labels, Counter>,
}

/// The addresses (DNS names) one counter labels at most (`--metrics-addresses`, `--metrics-dns-names`); more
/// count as `other`.
pub const MAX_ADDRESSES: usize = 1000;

/// The labels of unbounded values, which each option turns on (every distinct value is a series).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cardinality {
    /// `--metrics-addresses`.
    pub addresses: bool,
    /// `--metrics-dns-names`.
    pub dns_names: bool,
}

impl Metrics {
    /// `hooks`: each logical hook and the mode it attached in.
    pub fn new(hooks: &[(&'static str, &'static str)], cardinality: Cardinality) -> Self {
        let Cardinality { addresses, dns_names } = cardinality;
        let mut registry = Registry::with_prefix("udptrace");
        let socket_errors = Family::<Labels, Counter>::default();
        registry.register(
            "socket_errors",
            "ICMP errors that reached (or failed to reach) a UDP socket on this host, by errno, verdict and family",
            socket_errors.clone(),
        );
        let icmp_sent = Family::<Labels, Counter>::default();
        registry.register(
            "icmp_errors_sent",
            "ICMP errors this host sent, by ICMP type and code, cause and family",
            icmp_sent.clone(),
        );
        let icmp_suppressed = Family::<Labels, Counter>::default();
        registry.register(
            "icmp_errors_suppressed",
            "ICMP errors this host would have sent and a rate limit stopped, by scope and family",
            icmp_suppressed.clone(),
        );
        let udp_drops = Family::<Labels, Counter>::default();
        registry.register(
            "udp_drops",
            "UDP datagrams the kernel dropped, by drop reason (\"unknown\" on kernels without reasons), direction and \
             family",
            udp_drops.clone(),
        );
        let dns_errors = Family::<Labels, Counter>::default();
        registry.register(
            "dns_errors",
            "Events about a DNS query or answer (a datagram on a DNS port), by event, outcome (the errno, drop reason, ICMP \
             cause or rate-limit scope), question type and response code (\"none\" for a query; \"unknown\" where the \
             bytes did not reach)",
            dns_errors.clone(),
        );
        let lost = Counter::default();
        registry.register(
            "lost_events",
            "Events the kernel could not hand over to udptrace (buffer full) or ran no program for: the counters above \
             miss them",
            lost.clone(),
        );
        registry.register("build", "udptrace's version", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        let modes = Family::<Labels, Gauge>::default();
        for (hook, mode) in hooks {
            modes.get_or_create(&vec![("hook", (*hook).to_owned()), ("mode", (*mode).to_owned())]).set(1);
        }
        registry.register("hook_mode", "The mode each logical hook attached in (1 for the active one)", modes);
        let folded = Family::<Labels, Counter>::default();
        if addresses || dns_names {
            registry.register(
                "metrics_addresses_folded",
                "Events counted with the address (or DNS name) other, their counter holding as many as it takes, by \
                 counter",
                folded.clone(),
            );
        }
        Self {
            registry: Arc::new(registry),
            socket_errors,
            icmp_sent,
            icmp_suppressed,
            udp_drops,
            dns_errors,
            lost,
            addresses,
            dns_names,
            labelled: Arc::default(),
            folded,
        }
    }

    /// `address` as `counter`'s label: itself while the counter holds fewer than [`MAX_ADDRESSES`] others,
    /// else `other`, counted folded.
    fn address(&self, counter: &'static str, address: String, count: u64) -> String {
        let mut labelled = self.labelled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = labelled.entry(counter).or_default();
        if seen.contains(&address) || seen.len() < MAX_ADDRESSES {
            seen.insert(address.clone());
            return address;
        }
        self.folded.get_or_create(&vec![("counter", counter.to_owned())]).inc_by(count);
        "other".to_owned()
    }

    /// Counts one event that passed the filters.
    pub fn count(&self, event: &Event) {
        match event {
            Event::SocketError(e) => {
                let mut labels = vec![
                    ("errno", errno_name(e.errno).unwrap_or("none").to_owned()),
                    ("verdict", e.verdict.map_or("unknown", |v| v.as_str()).to_owned()),
                    ("family", e.family.as_str().to_owned()),
                ];
                if self.addresses {
                    let remote = e.remote.map_or_else(|| "unknown".to_owned(), |r| r.to_string());
                    labels.push(("remote", self.address("socket_errors", remote, e.count)));
                }
                self.socket_errors.get_or_create(&labels).inc_by(e.count);
                if let Some(dns) = &e.dns {
                    self.dns(event.name(), errno_name(e.errno).unwrap_or("none").to_owned(), dns, e.count);
                }
            }
            Event::IcmpSent(e) => {
                self.icmp_sent.get_or_create(&self.sent_labels(e, e.count)).inc_by(e.count);
                if let Some(dns) = &e.dns {
                    self.dns(event.name(), e.cause.as_str().to_owned(), dns, e.count);
                }
            }
            Event::IcmpSuppressed(e) => {
                let family = e.family.map_or("unknown", |f| f.as_str());
                let mut labels = vec![("scope", e.scope.as_str().to_owned()), ("family", family.to_owned())];
                if self.addresses {
                    let dst = e.attempt.as_ref().map_or_else(|| "unknown".to_owned(), destination);
                    labels.push(("dst", self.address("icmp_errors_suppressed", dst, e.count)));
                }
                self.icmp_suppressed.get_or_create(&labels).inc_by(e.count);
                if let Some(dns) = e.attempt.as_ref().and_then(|a| a.dns.as_ref()) {
                    self.dns(event.name(), e.scope.as_str().to_owned(), dns, e.count);
                }
            }
            Event::UdpDropped(e) => {
                let mut labels = vec![
                    ("reason", e.reason.clone().unwrap_or_else(|| "unknown".to_owned())),
                    ("direction", e.direction.as_str().to_owned()),
                    ("family", e.family.as_str().to_owned()),
                ];
                if self.addresses {
                    labels.push(("dst", self.address("udp_drops", endpoint(&e.packet, false), e.count)));
                }
                self.udp_drops.get_or_create(&labels).inc_by(e.count);
                if let Some(dns) = &e.dns {
                    self.dns(event.name(), e.reason.clone().unwrap_or_else(|| "unknown".to_owned()), dns, e.count);
                }
            }
            Event::Lost { count, .. } => {
                self.lost.inc_by(*count);
            }
        }
    }

    /// Counts an event about a DNS datagram in `udptrace_dns_errors_total`: the name is a label only with
    /// `--metrics-dns-names` (a series per name is unbounded), and then at most [`MAX_ADDRESSES`] of them.
    fn dns(&self, event: &'static str, outcome: String, dns: &Dns, count: u64) {
        let unknown = || "unknown".to_owned();
        let rcode = match dns.response {
            Some(true) => dns.rcode.clone().unwrap_or_else(unknown),
            Some(false) => "none".to_owned(),
            None => unknown(),
        };
        let mut labels = vec![
            ("event", event.to_owned()),
            ("outcome", outcome),
            ("qtype", dns.qtype.clone().unwrap_or_else(unknown)),
            ("rcode", rcode),
        ];
        if self.dns_names {
            let name = dns.qname.as_deref().map_or_else(unknown, |name| crate::dns::shown(name).to_owned());
            labels.push(("name", self.address("dns_errors", name, count)));
        }
        self.dns_errors.get_or_create(&labels).inc_by(count);
    }

    fn sent_labels(&self, e: &IcmpSent, count: u64) -> Labels {
        let mut labels = vec![
            ("type", e.icmp.icmp_type.to_string()),
            ("code", e.icmp.code.to_string()),
            ("cause", e.cause.as_str().to_owned()),
            ("family", e.family.as_str().to_owned()),
        ];
        if self.addresses {
            labels.push(("dst", self.address("icmp_errors_sent", destination(e), count)));
        }
        labels
    }

    fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// The offending packet's destination: the local service an ICMP error is about.
fn destination(e: &IcmpSent) -> String {
    e.packet.map_or_else(|| "unknown".to_owned(), |p| endpoint(&p, false))
}

/// Connections served at once, from all clients and from one address (an IPv6 client's /64, which one
/// host commonly holds whole): a scraper needs one, and a client that opens many cannot crowd the others
/// out.
const MAX_CONNECTIONS: usize = 512;
const MAX_CONNECTIONS_PER_ADDRESS: usize = 8;
/// A request's headers must arrive within this, and fit in this many bytes; a connection lasts at most
/// `CONNECTION_TIMEOUT`. A stalled or oversized request is closed, and never holds up another.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST_BYTES: usize = 16 * 1024;
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The connections open now, in all and by client address.
#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A connection's place among the open ones, given back when it is dropped.
struct Admitted {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
}

impl Admitted {
    fn new(open: &Arc<Mutex<Open>>, address: IpAddr) -> Option<Self> {
        let address = match address {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
            },
            v4 => v4,
        };
        let mut guard = open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let here = guard.by_address.get(&address).copied().unwrap_or(0);
        if guard.total >= MAX_CONNECTIONS || here >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        guard.total += 1;
        guard.by_address.insert(address, here + 1);
        Some(Self { open: Arc::clone(open), address })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut guard = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.total -= 1;
        if let Some(n) = guard.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                guard.by_address.remove(&self.address);
            }
        }
    }
}

/// The metrics port, bound before tracing starts (so that a port in use fails in one line, and a port below
/// 1024 is bound while the capability for it is still held), served once tracing runs.
pub struct Server {
    listener: std::net::TcpListener,
    metrics: Metrics,
}

pub fn bind(addr: SocketAddr, metrics: Metrics) -> Result<Server> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot serve metrics on {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(Server { listener, metrics })
}

impl Server {
    /// Serves on a thread of its own, with a runtime of its own: a flood of requests takes no time from
    /// draining the buffers, and a `/proc` scan or a `sock_diag` wait on the tracing thread stalls no scrape.
    /// The counters are shared; the thread lives as long as the process.
    pub fn start(self) -> Result<std::thread::JoinHandle<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("metrics".to_owned()).spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(self.listener) {
                    Ok(listener) => accept(listener, self.metrics).await,
                    Err(e) => eprintln!("udptrace: warning: metrics not served: {e}"),
                }
            });
        })?;
        Ok(thread)
    }
}

async fn accept(listener: TcpListener, metrics: Metrics) {
    let open = Arc::new(Mutex::new(Open::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors, or the like: wait instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(admitted) = Admitted::new(&open, peer.ip()) else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = answer(&request, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
            drop(admitted);
        });
    }
}

/// The answer to one request: the counters on `GET /metrics`.
fn answer(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode())
        }
        (&Method::GET, "/") => (StatusCode::OK, TEXT, "udptrace: metrics on /metrics\n".to_owned()),
        (&Method::GET, _) => (StatusCode::NOT_FOUND, TEXT, "not found; metrics are on /metrics\n".to_owned()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpStream,
    };

    use super::*;
    use crate::domain::{SocketError, samples};

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
        metrics.count(&Event::Lost { time: std::time::UNIX_EPOCH, count: 4 });
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

    #[test]
    fn a_counter_takes_so_many_addresses_and_folds_the_rest() {
        let metrics = Metrics::new(&[], Cardinality { addresses: true, ..Cardinality::default() });
        let (refused, _) = events();
        let Event::SocketError(refused) = refused else { panic!("a socket error") };
        for n in 0..MAX_ADDRESSES as u16 + 5 {
            let remote = Some(SocketAddr::from(([10, 9, (n >> 8) as u8, n as u8], 53)));
            metrics.count(&Event::SocketError(SocketError { remote, ..refused.clone() }));
        }
        let text = metrics.encode();
        let series = text.lines().filter(|l| l.starts_with("udptrace_socket_errors_total{")).count();
        assert_eq!(series, MAX_ADDRESSES + 1, "{MAX_ADDRESSES} addresses and other");
        assert!(text.contains("remote=\"other\"} 5"), "{text}");
        assert!(text.contains("udptrace_metrics_addresses_folded_total{counter=\"socket_errors\"} 5"), "{text}");
        // One already labelled keeps its own series.
        metrics
            .count(&Event::SocketError(SocketError { remote: Some(SocketAddr::from(([10, 9, 0, 0], 53))), ..refused }));
        assert!(metrics.encode().contains("remote=\"10.9.0.0:53\"} 2"));
    }

    #[test]
    fn addresses_only_when_asked() {
        let metrics = Metrics::new(&[], Cardinality { addresses: true, ..Cardinality::default() });
        let (refused, sent) = events();
        metrics.count(&refused);
        metrics.count(&sent);
        let text = metrics.encode();
        assert!(text.contains("remote=\"10.0.0.9:8888\""), "{text}");
        assert!(text.contains("dst=\"10.0.0.9:8888\""), "{text}");
    }

    #[test]
    fn dns_errors_name_the_question_only_when_asked_and_so_many_names() {
        let dns = samples::dns_drop().dns;
        let Event::SocketError(refused) = events().0 else { panic!("a socket error") };
        let refused = SocketError { dns: dns.clone(), ..refused };
        let plain = Metrics::new(&[], Cardinality::default());
        plain.count(&Event::SocketError(refused.clone()));
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
        for n in 0..MAX_ADDRESSES + 3 {
            let mut dns = dns.clone();
            dns.as_mut().unwrap().qname = Some(format!("host{n}.example.com"));
            named.count(&Event::SocketError(SocketError { dns, ..refused.clone() }));
        }
        let text = named.encode();
        assert!(text.contains("name=\"host0.example.com\"} 1"), "{text}");
        let series = text.lines().filter(|l| l.starts_with("udptrace_dns_errors_total{")).count();
        assert_eq!(series, MAX_ADDRESSES + 1, "{MAX_ADDRESSES} names and other");
        assert!(text.contains("udptrace_metrics_addresses_folded_total{counter=\"dns_errors\"} 3"), "{text}");
    }

    async fn free_address() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let metrics = Metrics::new(&[("icmp_send", "kprobe")], Cardinality::default());
        let addr = free_address().await;
        bind(addr, metrics).unwrap().start().unwrap();
        let answer = get(addr, "/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("application/openmetrics-text"), "{answer}");
        assert!(answer.contains("udptrace_hook_mode{hook=\"icmp_send\",mode=\"kprobe\"} 1"), "{answer}");
        assert!(get(addr, "/metrics?x=1").await.starts_with("HTTP/1.1 200 OK"));
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
        // A second udptrace on the same address says so, in one line.
        let Err(taken) = bind(addr, Metrics::new(&[], Cardinality::default())) else {
            panic!("bound twice")
        };
        assert!(format!("{taken:#}").starts_with(&format!("cannot serve metrics on {addr}")), "{taken:#}");
    }

    /// A connection from `from`, a loopback address of its own.
    async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
        socket.connect(addr).await.unwrap()
    }

    async fn scrape_from(from: &str, addr: SocketAddr) -> String {
        let mut stream = connect_from(from, addr).await;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer
    }

    /// Clients that stall mid-request or send a huge one cannot keep a scraper from its counters.
    #[tokio::test]
    async fn stalled_and_oversized_requests_do_not_block_a_scrape() {
        let addr = free_address().await;
        bind(addr, Metrics::new(&[("socket_error", "fentry")], Cardinality::default())).unwrap().start().unwrap();
        // 64 clients, each from an address of its own, that send half a request line and wait.
        let mut stalled = Vec::new();
        for client in 1..=64 {
            let mut stream = connect_from(&format!("127.0.1.{client}"), addr).await;
            stream.write_all(b"GET /metr").await.unwrap();
            stalled.push(stream);
        }
        let scraper = "127.0.0.2";
        let answer = tokio::time::timeout(Duration::from_secs(5), scrape_from(scraper, addr))
            .await
            .expect("a scrape must be answered while others stall");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        // Requests with headers over the 16 KiB limit are refused, not answered: 20 KiB (which hyper's own
        // default limit would still take) and 10 MB.
        for size in [20 << 10, 10 << 20] {
            let mut huge = connect_from("127.0.0.3", addr).await;
            let (mut read, mut write) = huge.split();
            let header = format!("GET /metrics HTTP/1.1\r\nX-Padding: {}\r\n\r\n", "a".repeat(size));
            let (_, answer) = tokio::join!(write.write_all(header.as_bytes()), async {
                let mut answer = Vec::new();
                let _ = read.read_to_end(&mut answer).await;
                String::from_utf8_lossy(&answer).into_owned()
            });
            let start = &answer[..answer.len().min(80)];
            assert!(!answer.starts_with("HTTP/1.1 200"), "a {size}-byte header was answered: {start}");
        }
        // And it keeps serving.
        let answer = tokio::time::timeout(Duration::from_secs(5), scrape_from(scraper, addr)).await.unwrap();
        assert!(answer.contains("udptrace_hook_mode{hook=\"socket_error\",mode=\"fentry\"} 1"), "{answer}");
        drop(stalled);
    }
}
