//! `--metrics ADDR:PORT`: the events as Prometheus counters, served as OpenMetrics text on `/metrics`.
//!
//! Labels are low-cardinality by default: errno, verdict, ICMP type and code, cause, scope, family. Addresses
//! and ports become labels only with `--metrics-addresses`: on a busy host every peer would otherwise be a
//! time series of its own.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{
    event::{Event, IcmpSent},
    explain::errno_name,
    render::endpoint,
};

type Labels = Vec<(&'static str, String)>;

/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;

/// The counters, shared between the tracing loop and the HTTP server.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    socket_errors: Family<Labels, Counter>,
    icmp_sent: Family<Labels, Counter>,
    icmp_suppressed: Family<Labels, Counter>,
    lost: Counter,
    /// Label events with addresses (`--metrics-addresses`).
    addresses: bool,
}

impl Metrics {
    /// `hooks`: each logical hook and the mode it attached in.
    pub fn new(hooks: &[(&'static str, &'static str)], addresses: bool) -> Self {
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
        let lost = Counter::default();
        registry.register(
            "lost_events",
            "Events the kernel could not hand over to udptrace (buffer full): the counters above miss them",
            lost.clone(),
        );
        registry.register("build", "udptrace's version", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));
        let modes = Family::<Labels, Gauge>::default();
        for (hook, mode) in hooks {
            modes.get_or_create(&vec![("hook", (*hook).to_owned()), ("mode", (*mode).to_owned())]).set(1);
        }
        registry.register("hook_mode", "The mode each logical hook attached in (1 for the active one)", modes);
        Self { registry: Arc::new(registry), socket_errors, icmp_sent, icmp_suppressed, lost, addresses }
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
                    labels.push(("remote", e.remote.map_or_else(|| "unknown".to_owned(), |r| r.to_string())));
                }
                self.socket_errors.get_or_create(&labels).inc();
            }
            Event::IcmpSent(e) => {
                self.icmp_sent.get_or_create(&self.sent_labels(e)).inc();
            }
            Event::IcmpSuppressed(e) => {
                let mut labels = vec![("scope", e.scope.as_str().to_owned()), ("family", e.family.as_str().to_owned())];
                if self.addresses {
                    labels.push(("dst", e.attempt.as_ref().map_or_else(|| "unknown".to_owned(), destination)));
                }
                self.icmp_suppressed.get_or_create(&labels).inc_by(e.count);
            }
            Event::Lost { count, .. } => {
                self.lost.inc_by(*count);
            }
        }
    }

    fn sent_labels(&self, e: &IcmpSent) -> Labels {
        let mut labels = vec![
            ("type", e.icmp.icmp_type.to_string()),
            ("code", e.icmp.code.to_string()),
            ("cause", e.cause.as_str().to_owned()),
            ("family", e.family.as_str().to_owned()),
        ];
        if self.addresses {
            labels.push(("dst", destination(e)));
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

/// Binds `addr` now, so that a port in use fails before tracing starts; serves from the returned task.
pub async fn serve(addr: SocketAddr, metrics: Metrics) -> Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot serve metrics on {addr}"))?;
    let open = Arc::new(AtomicUsize::new(0));
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of file descriptors, or the like: wait instead of spinning on the tracing thread.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // A scraper needs one connection; more than a few at once are not served.
            if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                continue;
            }
            open.fetch_add(1, Ordering::Relaxed);
            let (metrics, open) = (metrics.clone(), Arc::clone(&open));
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &metrics)).await;
                open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }))
}

/// One HTTP/1.1 request, one answer, then the connection closes.
async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (status, content_type, body) = match (words.next(), words.next()) {
        (Some("GET"), Some(path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.encode())
        }
        (Some("GET"), Some("/")) => {
            ("200 OK", "text/plain; charset=utf-8", "udptrace: metrics on /metrics\n".to_owned())
        }
        (Some("GET"), _) => {
            ("404 Not Found", "text/plain; charset=utf-8", "not found; metrics are on /metrics\n".to_owned())
        }
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Clock, decode, tests as raw};

    fn events() -> (Event, Event) {
        let clock = Clock::with_boot_epoch_ns(0);
        let refused = decode(&raw::bytes_of(&raw::raw_socket_error_v4_owned()), clock).unwrap();
        let sent = decode(&raw::bytes_of(&raw::raw_icmp_sent_v4()), clock).unwrap();
        (refused, sent)
    }

    #[test]
    fn counts_by_low_cardinality_labels() {
        let metrics = Metrics::new(&[("socket_error", "fentry"), ("icmp_send", "tracepoint")], false);
        let (refused, sent) = events();
        metrics.count(&refused);
        metrics.count(&refused);
        metrics.count(&sent);
        metrics.count(&Event::Lost { time: std::time::UNIX_EPOCH, count: 4 });
        let text = metrics.encode();
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
    fn addresses_only_when_asked() {
        let metrics = Metrics::new(&[], true);
        let (refused, sent) = events();
        metrics.count(&refused);
        metrics.count(&sent);
        let text = metrics.encode();
        assert!(text.contains("remote=\"10.0.0.9:8888\""), "{text}");
        assert!(text.contains("dst=\"10.0.0.9:8888\""), "{text}");
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let metrics = Metrics::new(&[("icmp_send", "kprobe")], false);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = serve(addr, metrics).await.unwrap();
        let get = |path: &'static str| async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let answer = get("/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("application/openmetrics-text"), "{answer}");
        assert!(answer.contains("udptrace_hook_mode{hook=\"icmp_send\",mode=\"kprobe\"} 1"), "{answer}");
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
        // A second udptrace on the same address says so, in one line.
        let taken = serve(addr, Metrics::new(&[], false)).await.unwrap_err();
        assert!(format!("{taken:#}").starts_with(&format!("cannot serve metrics on {addr}")), "{taken:#}");
        server.abort();
    }
}
