//! `--metrics` against a real Prometheus (Debian's), on loopback: Prometheus scrapes udptrace every second,
//! errors are provoked in the test's namespaces, and Prometheus's query API must show the counters risen
//! by exactly as many.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{CLOSED_PORT, Results, TwoHosts, operator::refused_socket};
use crate::{config::Config, outcome::Outcome, tracer::Tracer};

/// How long Prometheus may take to start, scrape, and show a change.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(60);

/// A Prometheus process with its own configuration and storage in a directory of its own; stopped and
/// removed on drop, also when a check fails.
pub(super) struct Prometheus {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SIGTERM lets it close its storage.
        crate::child::stop_child(&mut self.child, libc::SIGTERM, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(super) fn free_loopback_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Debian's Prometheus, for a metrics scenario: the metrics do not depend on the buffer, so only the
/// ring-buffer run asks, on a machine that has it; else the skip of the scenario's `check`, saying why.
pub(super) fn prometheus_here(config: &Config, check: &'static str) -> std::result::Result<PathBuf, Results> {
    let skip = |why: &str| vec![(check, Outcome::Skip(why.to_owned()))];
    if config.buffer != "ring" {
        return Err(skip("the metrics do not depend on the buffer; checked with the ring buffer"));
    }
    find_prometheus().ok_or_else(|| {
        skip(
            "no prometheus binary on this machine (the host suite runs this check: `cargo xtask test` installs \
             Debian's)",
        )
    })
}

fn find_prometheus() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|p| p.is_file())
}

/// A series' labels, as a query answers them.
pub(super) type LabelSet = BTreeMap<String, String>;

impl Prometheus {
    pub(super) fn start(binary: &Path, target: SocketAddr) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("udptrace-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: udptrace\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let addr = free_loopback_port()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let prometheus = Self { child, dir, addr };
        prometheus.wait_for("ready", |p| Ok(p.get("/-/ready")?.0 == 200))?;
        Ok(prometheus)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    /// `GET path` over HTTP/1.0 (no chunked answers): the status and the body.
    fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        let (head, body) = answer.split_once("\r\n\r\n").context("an HTTP answer without a header end")?;
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status")?;
        Ok((status, body.to_owned()))
    }

    /// The value of an instant query that sums to one number; 0 when nothing matches yet.
    pub(super) fn query(&self, promql: &str) -> Result<f64> {
        let (_, result) = self.instant(promql, None)?;
        match result.as_slice() {
            [] => Ok(0.0),
            [(_, value)] => Ok(*value),
            _ => bail!("query {promql} gave more than one series: {result:?}"),
        }
    }

    /// An instant query evaluated at `time` (Unix seconds; `None`: now): the time it was evaluated at, and
    /// each series' labels and value.
    pub(super) fn instant(&self, promql: &str, time: Option<f64>) -> Result<(f64, Vec<(LabelSet, f64)>)> {
        let encoded: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let at = time.map_or_else(String::new, |t| format!("&time={t:.3}"));
        let (status, body) = self.get(&format!("/api/v1/query?query={encoded}{at}"))?;
        let value: Value = serde_json::from_str(&body).with_context(|| format!("HTTP {status}: {body}"))?;
        if value["status"] != "success" {
            bail!("query {promql}: {body}");
        }
        let mut evaluated = time;
        let mut series = Vec::new();
        for one in value["data"]["result"].as_array().context("a query answer without a result vector")? {
            let labels = one["metric"]
                .as_object()
                .context("a series without labels")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            evaluated = one["value"][0].as_f64().or(evaluated);
            let sample = one["value"][1].as_str().and_then(|v| v.parse().ok()).context("a sample without a value")?;
            series.push((labels, sample));
        }
        Ok((evaluated.unwrap_or(0.0), series))
    }

    pub(super) fn wait_for(&self, what: &str, done: impl Fn(&Self) -> Result<bool>) -> Result<()> {
        let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
        loop {
            let last = done(self);
            if matches!(last, Ok(true)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Prometheus: not {what} within {PROMETHEUS_TIMEOUT:?} (last: {last:?}); its log: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Three connected clients refused by the server's kernel: udptrace (`--metrics --quiet`, filtered to the
/// two namespaces) must count three delivered ECONNREFUSED and, where the send hook sees them, three
/// port-unreachables sent for no listener; Prometheus must show exactly that rise.
pub fn prometheus(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    let binary = match prometheus_here(config, "scraped") {
        Ok(binary) => binary,
        Err(skip) => return Ok(skip),
    };
    let hosts = TwoHosts::new()?;
    let metrics_addr = free_loopback_port()?;
    let (client_ns, server_ns) = (hosts.client.inode.to_string(), hosts.server.inode.to_string());
    let mut tracer = Tracer::start(
        config,
        &["--metrics", &metrics_addr.to_string(), "--quiet", "--netns", &client_ns, "--netns", &server_ns],
    )?;
    let sends_seen = tracer.mode_of("icmp_send").is_some();
    let prometheus = Prometheus::start(&binary, metrics_addr)?;
    prometheus.wait_for("scraping udptrace", |p| Ok(p.query("up{job=\"udptrace\"}")? == 1.0))?;

    let refused = "sum(udptrace_socket_errors_total{errno=\"ECONNREFUSED\",verdict=\"delivered\",family=\"ipv4\"})";
    let sent = "sum(udptrace_icmp_errors_sent_total{type=\"3\",code=\"3\",cause=\"no_listener\",family=\"ipv4\"})";
    let (refused_before, sent_before) = (prometheus.query(refused)?, prometheus.query(sent)?);
    let mut sockets = Vec::new();
    for port in [CLOSED_PORT, CLOSED_PORT + 1, CLOSED_PORT + 2] {
        sockets.push(refused_socket(&hosts, port)?);
    }

    let rose = |query: &str, before: f64| match prometheus
        .wait_for("showing the rise", |p| Ok(p.query(query)? >= before + 3.0))
    {
        Ok(()) => match prometheus.query(query) {
            Ok(now) if now == before + 3.0 => Outcome::Pass,
            Ok(now) => Outcome::Fail(format!("{query} went from {before} to {now}, want +3")),
            Err(e) => Outcome::Fail(format!("{e:#}")),
        },
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    let socket_errors = rose(refused, refused_before);
    let icmp_sent = if sends_seen {
        rose(sent, sent_before)
    } else {
        Outcome::Skip("the icmp_send hook did not attach".to_owned())
    };
    // Served from a thread of its own (a request flood takes no time from the tracing loop), which holds no
    // more than the tracer's others: nothing.
    let own_thread = match super::procfs::threads_of(tracer.pid(), "tracer") {
        Ok(threads) => {
            let names: Vec<&str> = threads.iter().filter_map(|t| t.field("Name")).collect();
            let wrong: Vec<String> = super::process::tracer_rows(&threads)
                .into_iter()
                .filter_map(|(row, outcome)| match outcome {
                    Outcome::Fail(why) => Some(format!("{row}: {why}")),
                    _ => None,
                })
                .collect();
            if names.contains(&"metrics") && wrong.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail(format!(
                    "want a thread named metrics among {names:?}, holding nothing: {}",
                    wrong.join("; ")
                ))
            }
        }
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    let mode = tracer.mode_of("socket_error").unwrap_or("none").to_owned();
    let hook_mode = match prometheus.query(&format!("udptrace_hook_mode{{hook=\"socket_error\",mode=\"{mode}\"}}")) {
        Ok(1.0) => Outcome::Pass,
        other => Outcome::Fail(format!("udptrace_hook_mode for socket_error in {mode} mode: {other:?}")),
    };
    let stopped = match tracer.stop() {
        Ok(_) => Outcome::Pass,
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    drop(sockets);
    Ok(vec![
        ("socket_errors_rose", socket_errors),
        ("icmp_sent_rose", icmp_sent),
        ("hook_mode", hook_mode),
        ("served_from_its_own_thread", own_thread),
        ("clean_stop", stopped),
    ])
}
