//! The metrics port: `GET /metrics` (the counters, OpenMetrics text) and `GET /healthz` (whether the tracing
//! loop still runs), served by hyper from a thread of its own.
//!
//! The port faces the network, so every client is held to limits: headers within [`HEADER_TIMEOUT`] and
//! [`MAX_REQUEST_BYTES`], a connection at most [`CONNECTION_TIMEOUT`], and a share of the connections
//! ([`Limits`]). A scrape's text is built once and shared by the requests of the same second, so that
//! concurrent requests do not each hold a copy.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
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
use tokio::{net::TcpListener, sync::oneshot};

use super::Metrics;

/// A request's headers must arrive within this, and fit in this many bytes; a connection lasts at most
/// `CONNECTION_TIMEOUT`. A stalled or oversized request is closed, and never holds up another.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST_BYTES: usize = 16 * 1024;
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A scrape's text is built at most once in this time, whatever the number of requests.
const SCRAPE_REUSE: Duration = Duration::from_secs(1);

/// Connections served at once, in all and from one address (an IPv6 client's /64, which one host commonly
/// holds whole). When all are taken, a newcomer takes the place of the oldest connection of the address that
/// holds the most, as long as that address holds more than the newcomer's would: a scraper with one
/// connection is never pushed out by clients that hold many, however many addresses they come from, unless
/// they come from as many addresses as there are places.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub total: usize,
    pub per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { total: 512, per_address: 8 }
    }
}

/// The connections open now, by client address, oldest first, each with what closes it.
#[derive(Default)]
struct Open {
    by_address: HashMap<IpAddr, VecDeque<(u64, oneshot::Sender<()>)>>,
    next: u64,
}

impl Open {
    /// How many are open, from all addresses.
    fn total(&self) -> usize {
        self.by_address.values().map(VecDeque::len).sum()
    }
}

/// A connection's place among the open ones, given back when it is dropped.
struct Admitted {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
    id: u64,
}

/// The address a client's connections are counted under: an IPv4 address, or an IPv6 address's /64.
fn counted_as(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

impl Admitted {
    /// A place for a connection from `address`, and what tells it to close early; `None`: refused.
    fn new(open: &Arc<Mutex<Open>>, address: IpAddr, limits: Limits) -> Option<(Self, oneshot::Receiver<()>)> {
        let address = counted_as(address);
        let mut guard = open.lock().unwrap_or_else(PoisonError::into_inner);
        let here = guard.by_address.get(&address).map_or(0, VecDeque::len);
        if here >= limits.per_address {
            return None;
        }
        if guard.total() >= limits.total {
            let (&busiest, held) = guard.by_address.iter().max_by_key(|(_, held)| held.len())?;
            if held.len() <= here + 1 {
                return None;
            }
            let held = guard.by_address.get_mut(&busiest)?;
            if let Some((_, close)) = held.pop_front() {
                let _ = close.send(());
            }
        }
        let (close, closed) = oneshot::channel();
        let id = guard.next;
        guard.next += 1;
        guard.by_address.entry(address).or_default().push_back((id, close));
        Some((Self { open: Arc::clone(open), address, id }, closed))
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut guard = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(held) = guard.by_address.get_mut(&self.address) else { return };
        // Gone already if it was pushed out.
        let Some(at) = held.iter().position(|(id, _)| *id == self.id) else { return };
        held.remove(at);
        if held.is_empty() {
            guard.by_address.remove(&self.address);
        }
    }
}

/// The metrics port, bound before tracing starts (so that a port in use fails in one line, and a port below
/// 1024 is bound while the capability for it is still held), served once tracing runs.
pub struct Server {
    listener: std::net::TcpListener,
    metrics: Metrics,
    limits: Limits,
}

pub fn bind(addr: SocketAddr, metrics: Metrics) -> Result<Server> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot serve metrics on {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(Server { listener, metrics, limits: Limits::default() })
}

impl Server {
    /// Serves on a thread of its own, with a runtime of its own: a flood of requests takes no time from
    /// draining the buffers, and a `/proc` scan or a `sock_diag` wait on the tracing thread stalls no scrape.
    /// The counters are shared; the thread lives as long as the process. Should it end (it does not return;
    /// a panic would end it), it says so: `/healthz` no longer answers, which a liveness probe acts on.
    pub fn start(self) -> Result<std::thread::JoinHandle<()>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let thread = std::thread::Builder::new().name("metrics".to_owned()).spawn(move || {
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(async move {
                    match TcpListener::from_std(self.listener) {
                        Ok(listener) => accept(listener, self.metrics, self.limits).await,
                        Err(e) => eprintln!("udptrace: warning: metrics not served: {e}"),
                    }
                });
            }));
            if served.is_err() {
                eprintln!("udptrace: error: the metrics server stopped; /metrics and /healthz no longer answer");
            }
        })?;
        Ok(thread)
    }

    #[cfg(test)]
    fn with_limits(self, limits: Limits) -> Self {
        Self { limits, ..self }
    }
}

async fn accept(listener: TcpListener, metrics: Metrics, limits: Limits) {
    let open = Arc::new(Mutex::new(Open::default()));
    let scrape = Arc::new(Scrape::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors, or the like: wait instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some((admitted, closed)) = Admitted::new(&open, peer.ip(), limits) else {
            continue;
        };
        let (metrics, scrape) = (metrics.clone(), Arc::clone(&scrape));
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = answer(&request, &metrics, &scrape);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => {}
                _ = closed => {}
            }
            drop(admitted);
        });
    }
}

/// The last scrape's text, shared by the requests that come within [`SCRAPE_REUSE`] of it.
#[derive(Default)]
struct Scrape(Mutex<Option<(Instant, Bytes)>>);

impl Scrape {
    fn text(&self, metrics: &Metrics) -> Bytes {
        // Held while the text is built: requests that come meanwhile wait for it instead of building their own.
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &*last {
            Some((built, text)) if built.elapsed() < SCRAPE_REUSE => text.clone(),
            _ => {
                let text = Bytes::from(metrics.encode());
                *last = Some((Instant::now(), text.clone()));
                text
            }
        }
    }
}

/// The answer to one request: the counters on `GET /metrics`, the tracing loop's health on `GET /healthz`.
fn answer(request: &Request<Incoming>, metrics: &Metrics, scrape: &Scrape) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", scrape.text(metrics))
        }
        (&Method::GET, "/healthz") => match metrics.stalled() {
            None => (StatusCode::OK, TEXT, Bytes::from_static(b"ok\n")),
            Some(stalled) => (
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                Bytes::from(format!("the tracing loop has not run for {} s\n", stalled.as_secs())),
            ),
        },
        (&Method::GET, "/") => (StatusCode::OK, TEXT, Bytes::from_static(b"udptrace: metrics on /metrics\n")),
        (&Method::GET, _) => (StatusCode::NOT_FOUND, TEXT, Bytes::from_static(b"not found; metrics are on /metrics\n")),
        _ => (StatusCode::METHOD_NOT_ALLOWED, TEXT, Bytes::from_static(b"only GET\n")),
    };
    let mut response = Response::new(Full::new(body));
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
    use crate::output::metrics::Cardinality;

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

    #[tokio::test]
    async fn healthz_fails_when_the_tracing_loop_stalls() {
        let metrics = Metrics::new(&[], Cardinality::default()).started_before(Duration::from_secs(60));
        let addr = free_address().await;
        bind(addr, metrics.clone()).unwrap().start().unwrap();
        metrics.beat();
        let answer = get(addr, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok\n"), "{answer}");
        metrics.beat_at(metrics.started);
        let answer = get(addr, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("the tracing loop has not run for 60 s"), "{answer}");
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

    /// Clients from as many addresses as it takes to hold every place, each holding its full share, cannot
    /// keep a scraper out: it takes the place of one of theirs.
    #[tokio::test]
    async fn every_place_taken_still_lets_a_scraper_in() {
        let addr = free_address().await;
        let limits = Limits { total: 32, per_address: 4 };
        let metrics = Metrics::new(&[("socket_error", "fentry")], Cardinality::default());
        bind(addr, metrics).unwrap().with_limits(limits).start().unwrap();
        let mut stalled = Vec::new();
        for client in 1..=8 {
            for _ in 0..limits.per_address {
                let mut stream = connect_from(&format!("127.0.2.{client}"), addr).await;
                stream.write_all(b"GET /metr").await.unwrap();
                stalled.push(stream);
            }
        }
        // One more from a holder is refused: it holds its share.
        let mut extra = connect_from("127.0.2.1", addr).await;
        let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut answer)).await;
        assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "over its share, answered");
        for _ in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(5), scrape_from("127.0.0.2", addr))
                .await
                .expect("a scraper must get in while every place is held");
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        }
        drop(stalled);
    }
}
