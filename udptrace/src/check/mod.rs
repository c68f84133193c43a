//! `udptrace check HOST:PORT`: the answer `nc -vzu` cannot give. A few probe datagrams from one connected
//! socket with `IP_RECVERR` (`probe`), the route and the next hop's neighbour entry (`route`), and, as root,
//! udptrace's own hooks filtered to that socket (`trace`); the facts make one state (`state`).

pub mod probe;
pub mod route;
pub mod state;

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use self::{
    probe::{Heard, Probe, ProbeError},
    state::{Facts, LocalError, QueuedIcmp, SeenDrop, State},
};
use crate::{
    domain::{AttachMode, Direction, Packet, errno_name},
    errors::one_line,
    events::{Event, Lost},
    kernel::{loader::KernelFacts, privileges},
    output::{Sink, json as event_json},
    pipeline::{
        filter::{Filter, Prefix},
        netns, session,
        source::Buffer,
    },
    trace::{Setup, Tracing},
};

/// `HOST:PORT` as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// `HOST:PORT`: a name, an IPv4 address, or `[IPv6]:PORT`.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, port) =
                rest.split_once("]:").ok_or_else(|| format!("`{text}` is not [ADDRESS]:PORT (an IPv6 target)"))?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| format!("`{host}` is not an IPv6 address"))?;
            (host, port)
        }
        None => {
            let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("`{text}` is not HOST:PORT"))?;
            if host.contains(':') {
                return Err(format!("`{text}`: write an IPv6 target as [ADDRESS]:PORT"));
            }
            (host, port)
        }
    };
    if host.is_empty() {
        return Err(format!("`{text}` names no host"));
    }
    let port: u16 = port.parse().map_err(|_| format!("`{port}` is not a port (1-65535)"))?;
    if port == 0 {
        return Err("port 0 is not a port a datagram can be sent to".to_owned());
    }
    Ok(Target { host: host.to_owned(), port })
}

/// `--payload HEX`: its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hex(pub Vec<u8>);

/// `--payload HEX`: bytes as hex digits, spaces and colons allowed between them.
pub fn parse_hex(text: &str) -> Result<Hex, String> {
    let digits: Vec<u8> = text.bytes().filter(|c| !matches!(c, b' ' | b':')).collect();
    // Checked byte by byte first: a multi-byte character must not be cut in a pair.
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!("`{text}` is not hex (0-9, a-f)"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!("`{text}`: hex bytes come in pairs of digits"));
    }
    let value = |digit: u8| char::from(digit).to_digit(16).unwrap_or(0) as u8;
    let bytes: Vec<u8> = digits.chunks_exact(2).map(|pair| value(pair[0]) << 4 | value(pair[1])).collect();
    if bytes.len() > MAX_PAYLOAD {
        return Err(format!("a payload of {} bytes is more than a probe carries ({MAX_PAYLOAD})", bytes.len()));
    }
    Ok(Hex(bytes))
}

/// The largest payload: what fits an IPv6 minimum MTU, so that a probe is never fragmented.
const MAX_PAYLOAD: usize = 1232;

/// What the probes carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Bytes(Vec<u8>),
    /// A query for the name's A record.
    Dns(String),
}

/// One check, as the command line asks for it.
pub struct Check {
    pub target: Target,
    pub count: u32,
    /// How long to wait after the last probe.
    pub timeout: Duration,
    pub payload: Payload,
    /// `-4`, `-6`, or either.
    pub ipv4_only: bool,
    pub ipv6_only: bool,
    pub modes: &'static [AttachMode],
    pub asked: String,
    pub json: bool,
    pub verbose: bool,
}

/// Runs the check, prints its answer, and returns the state (the exit status is the state's).
pub fn run(check: &Check) -> Result<State> {
    let target = resolve(&check.target, check.ipv4_only, check.ipv6_only)?;
    let (payload, dns_id) = payload_bytes(&check.payload)?;
    let mut facts = Facts { target: Some(target), ..Facts::default() };
    let probe = match Probe::connect(target) {
        Ok(probe) => {
            facts.local = Some(probe.local_addr().context("reading the probe socket's address")?);
            Some(probe)
        }
        Err(ProbeError::Local(error)) => {
            facts.local_error = Some(error);
            None
        }
        Err(ProbeError::Io(e)) => return Err(e).context("opening the probe socket"),
    };
    let plan = Plan { count: check.count, timeout: check.timeout, payload };
    let (outcome, kernel) = match (probe, facts.local) {
        (Some(probe), Some(local)) => match kernel_side(check, local, target) {
            Ok(tracing) => {
                let (outcome, seen) = probe_with_kernel(tracing, probe, &plan)?;
                (outcome, seen)
            }
            Err(why) => {
                if check.verbose || !why.not_root {
                    eprintln!("udptrace: the error queue alone: {}", why.text);
                }
                (plan.run(&probe, &|| false, &AtomicBool::new(false))?, Kernel::Without(why.text))
            }
        },
        _ => (Outcome::default(), Kernel::Without("no probe was sent".to_owned())),
    };
    outcome.add_to(&mut facts);
    if let (Kernel::With { events, .. }, Some(local)) = (&kernel, facts.local) {
        from_kernel(events, local, target, &mut facts);
    }
    let (state, why) = state::decide(&facts);
    let report = Report { check, target, facts, outcome, kernel, state, why, dns_id, path: Path::find(target) };
    if check.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    Ok(state)
}

fn resolve(target: &Target, ipv4_only: bool, ipv6_only: bool) -> Result<SocketAddr> {
    let wanted = |a: &SocketAddr| (!ipv4_only || a.is_ipv4()) && (!ipv6_only || a.is_ipv6());
    let found: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", target.host))?
        .collect();
    match found.iter().find(|a| wanted(a)) {
        Some(addr) => Ok(*addr),
        None if ipv4_only => bail!("{} has no IPv4 address", target.host),
        None if ipv6_only => bail!("{} has no IPv6 address", target.host),
        None => bail!("{} has no address", target.host),
    }
}

/// The probe's bytes, and for a DNS query its id.
fn payload_bytes(payload: &Payload) -> Result<(Vec<u8>, Option<u16>)> {
    match payload {
        Payload::Bytes(bytes) => Ok((bytes.clone(), None)),
        Payload::Dns(name) => {
            // An id that differs from run to run; nothing depends on it being unpredictable.
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let id = (nanos.subsec_nanos() ^ std::process::id()) as u16;
            let mut query = simple_dns::Packet::new_query(id);
            query.set_flags(simple_dns::PacketFlag::RECURSION_DESIRED);
            query.questions.push(simple_dns::Question::new(
                simple_dns::Name::new(name).context("the DNS name")?,
                simple_dns::TYPE::A.into(),
                simple_dns::CLASS::IN.into(),
                false,
            ));
            Ok((query.build_bytes_vec().context("building the DNS query")?, Some(id)))
        }
    }
}

/// How the probes go.
struct Plan {
    count: u32,
    timeout: Duration,
    payload: Vec<u8>,
}

/// What the probes got.
#[derive(Debug, Default)]
struct Outcome {
    sent: u32,
    answered: u32,
    answer: Option<Vec<u8>>,
    /// From the last probe sent before the answer.
    round_trip: Option<Duration>,
    icmp: Option<QueuedIcmp>,
    local_error: Option<LocalError>,
    /// Ctrl-C or SIGTERM ended it.
    interrupted: bool,
}

impl Outcome {
    fn add_to(&self, facts: &mut Facts) {
        facts.answered = self.answer.as_ref().map(Vec::len);
        facts.icmp = self.icmp;
        if facts.local_error.is_none() {
            facts.local_error = self.local_error;
        }
    }
}

/// How often the wait looks at what the kernel's hooks saw.
const KERNEL_LOOK: Duration = Duration::from_millis(50);

impl Plan {
    /// Sends up to `count` probes, `probe::SPACING` apart, and waits `timeout` after the last; stops at the
    /// first answer, ICMP error or refusal, or when `decided` says the kernel's hooks saw enough.
    fn run(&self, probe: &Probe, decided: &dyn Fn() -> bool, cancel: &AtomicBool) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        for n in 1..=self.count {
            if cancel.load(Ordering::Relaxed) {
                outcome.interrupted = true;
                return Ok(outcome);
            }
            let sent_at = Instant::now();
            if let Err(refused) = probe.send(&self.payload) {
                // An error pending from an ICMP that came meanwhile fails the send: the queue says which.
                match probe.wait(Instant::now())? {
                    Heard::Icmp(icmp) => {
                        outcome.answered += 1;
                        outcome.icmp = Some(icmp);
                    }
                    _ => outcome.local_error = Some(refused),
                }
                return Ok(outcome);
            }
            outcome.sent += 1;
            let deadline = sent_at + if n == self.count { self.timeout } else { probe::SPACING };
            loop {
                let slice = deadline.min(Instant::now() + KERNEL_LOOK);
                match probe.wait(slice).context("waiting for an answer")? {
                    Heard::Answer(bytes) => {
                        outcome.answered += 1;
                        outcome.round_trip = Some(sent_at.elapsed());
                        outcome.answer = Some(bytes);
                        return Ok(outcome);
                    }
                    Heard::Icmp(icmp) => {
                        outcome.answered += 1;
                        outcome.icmp = Some(icmp);
                        return Ok(outcome);
                    }
                    Heard::Local(error) => {
                        outcome.local_error = Some(error);
                        return Ok(outcome);
                    }
                    Heard::Nothing if decided() => return Ok(outcome),
                    Heard::Nothing if cancel.load(Ordering::Relaxed) => {
                        outcome.interrupted = true;
                        return Ok(outcome);
                    }
                    Heard::Nothing if Instant::now() >= deadline => break,
                    Heard::Nothing => {}
                }
            }
        }
        Ok(outcome)
    }
}

/// Why the kernel's side is not there.
struct Without {
    text: String,
    /// Not root: the usual case, said only with `-v` (and in the answer).
    not_root: bool,
}

/// The kernel's side of a check.
enum Kernel {
    With { hooks: Vec<String>, events: Vec<Event>, lost: u64 },
    Without(String),
}

/// As root: udptrace's hooks, filtered to the probe socket's port, its namespace and the target.
fn kernel_side(check: &Check, local: SocketAddr, target: SocketAddr) -> Result<Tracing, Without> {
    let missing = |_| Without {
        text: "not root: the kernel hooks need CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN".to_owned(),
        not_root: true,
    };
    privileges::check().map_err(missing)?;
    let netns = netns::own().and_then(|ino| u32::try_from(ino).ok()).unwrap_or_default();
    let filter = Filter {
        ports: vec![local.port()],
        addrs: vec![Prefix { addr: target.ip(), len: if target.is_ipv4() { 32 } else { 128 } }],
        netns: if netns == 0 { Vec::new() } else { vec![netns] },
        ..Filter::default()
    };
    let setup = Setup {
        filter,
        buffer: Buffer::Ring,
        buffer_size: None,
        owner_records: udptrace_common::OWNER_ENTRIES,
        modes: check.modes,
        asked: check.asked.clone(),
        verbose: check.verbose,
        counts_only: false,
        dns_ports: vec![53],
    };
    let failed = |e: anyhow::Error| Without {
        text: format!("the kernel's hooks did not start: {}", one_line(&e)),
        not_root: false,
    };
    let facts = KernelFacts::gather().map_err(failed)?;
    let tracing = Tracing::start(setup, facts).map_err(failed)?;
    if check.verbose {
        for line in &tracing.not_traced {
            eprintln!("udptrace: {line}");
        }
    }
    Ok(tracing)
}

/// Hands every event to the check.
struct Collect(Arc<Mutex<Vec<Event>>>);

impl Sink for Collect {
    fn event(&mut self, event: &Event) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(event.clone());
        Ok(())
    }
}

/// The probes on a thread of their own, while the session reads the hooks' events on this one; the
/// session ends when the probes are done.
fn probe_with_kernel(tracing: Tracing, probe: Probe, plan: &Plan) -> Result<(Outcome, Kernel)> {
    let Tracing { runtime, source, stages, attached, programs: _programs, cgroup_links: _cgroup_links, .. } = tracing;
    let events = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(tokio::sync::Notify::new());
    let cancel = Arc::new(AtomicBool::new(false));
    let local = probe.local_addr()?;
    let target = probe.peer_addr()?;
    let (outcome, totals) = std::thread::scope(|scope| {
        let prober = {
            let (events, stop, cancel) = (events.clone(), stop.clone(), cancel.clone());
            scope.spawn(move || {
                let decided = || {
                    let seen = events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let mut facts = Facts::default();
                    from_kernel(&seen, local, target, &mut facts);
                    facts.own_icmp_suppressed || facts.drops.iter().any(|d| d.direction == Direction::Out)
                };
                let outcome = plan.run(&probe, &decided, &cancel);
                stop.notify_one();
                outcome
            })
        };
        let options = session::Options { duration: None, count: None, verbose: false, banner: None, stop: Some(stop) };
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(Collect(events.clone()))];
        let totals = runtime.block_on(session::run(source, stages, sinks, options));
        // A signal ended the session first: the probes stop too.
        cancel.store(true, Ordering::Relaxed);
        let outcome = prober.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the probe thread panicked")));
        (outcome, totals)
    });
    let outcome = outcome?;
    let totals = totals?;
    if outcome.interrupted {
        bail!("interrupted before the check was done");
    }
    let events = std::mem::take(&mut *events.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let lost = totals.lost
        + events.iter().map(|e| if let Event::Lost(Lost { count, .. }) = e { *count } else { 0 }).sum::<u64>();
    Ok((outcome, Kernel::With { hooks: attached, events, lost }))
}

/// Whether `packet` is the probe (`local` -> `target`), or, `reversed`, an answer to it.
fn is_probe(packet: &Packet, local: SocketAddr, target: SocketAddr, reversed: bool) -> bool {
    let (src, dst) = if reversed { (target, local) } else { (local, target) };
    packet.src == src.ip() && packet.dst == dst.ip() && packet.ports == Some((src.port(), dst.port()))
}

/// What the hooks add: drops of the probe or its answer, this host's own ICMP error about the probe, and a
/// rate limit that stopped one.
fn from_kernel(events: &[Event], local: SocketAddr, target: SocketAddr, facts: &mut Facts) {
    for event in events {
        match event {
            Event::UdpDropped(drop) => {
                let out = is_probe(&drop.packet, local, target, false);
                if out || is_probe(&drop.packet, local, target, true) {
                    facts.drops.push(SeenDrop {
                        direction: if out { Direction::Out } else { Direction::In },
                        reason: drop.reason.clone(),
                        location: drop.location.clone(),
                    });
                }
            }
            Event::IcmpSent(sent) if sent.packet.is_some_and(|p| is_probe(&p, local, target, false)) => {
                facts.own_icmp_cause = Some(sent.cause.as_str());
            }
            Event::IcmpSuppressed(suppressed)
                if suppressed
                    .attempt
                    .as_ref()
                    .and_then(|a| a.packet)
                    .is_some_and(|p| is_probe(&p, local, target, false)) =>
            {
                facts.own_icmp_suppressed = true;
            }
            _ => {}
        }
    }
}

/// The way out: the route, and whether its next hop answered ARP/ND.
struct Path {
    route: Option<route::Route>,
    next_hop: Option<IpAddr>,
    /// The neighbour entry's state, and whether it means an answer.
    neighbour: Option<(&'static str, Option<bool>)>,
}

impl Path {
    fn find(target: SocketAddr) -> Self {
        let route = route::route_to(target.ip()).ok();
        let next_hop = route.as_ref().filter(|r| !r.local).map(|r| r.next_hop(target.ip()));
        let neighbour = match (&route, next_hop) {
            (Some(route), Some(hop)) => route::neighbour(route.ifindex, hop).ok().flatten().map(route::describe),
            _ => None,
        };
        Self { route, next_hop, neighbour }
    }

    /// `by veth0, next hop 10.0.0.1 answered ARP`.
    fn text(&self, ipv4: bool) -> Option<String> {
        let route = self.route.as_ref()?;
        let interface = route.interface.clone().unwrap_or_else(|| format!("interface {}", route.ifindex));
        let arp = if ipv4 { "ARP" } else { "ND" };
        let hop = match (self.next_hop, self.neighbour) {
            (Some(hop), Some((_, Some(true)))) => format!(", next hop {hop} answered {arp}"),
            (Some(hop), Some((_, Some(false)))) => format!(", next hop {hop} did not answer {arp}"),
            (Some(hop), Some((state, None))) => format!(", next hop {hop} ({state})"),
            (Some(hop), None) => format!(", next hop {hop}"),
            (None, _) => String::new(),
        };
        Some(format!("by {interface}{hop}"))
    }

    fn json(&self) -> Value {
        json!({
            "interface": self.route.as_ref().and_then(|r| r.interface.clone()),
            "gateway": self.route.as_ref().and_then(|r| r.gateway).map(|g| g.to_string()),
            "neighbour": self.next_hop.map(|hop| json!({
                "address": hop.to_string(),
                "state": self.neighbour.map(|(state, _)| state),
                "answered": self.neighbour.and_then(|(_, answered)| answered),
            })),
        })
    }
}

/// Everything the answer shows.
struct Report<'a> {
    check: &'a Check,
    target: SocketAddr,
    facts: Facts,
    outcome: Outcome,
    kernel: Kernel,
    state: State,
    why: String,
    dns_id: Option<u16>,
    path: Path,
}

impl Report<'_> {
    /// What a DNS answer said: its response code, and how many records it held.
    fn dns(&self) -> Option<(String, usize)> {
        let bytes = self.outcome.answer.as_ref()?;
        // The decoder of the `dns` a traced event carries; the answer count is the header's.
        let answer = crate::dns::parse(bytes, bytes.len());
        let records = bytes.get(6..8).map(|n| usize::from(u16::from_be_bytes([n[0], n[1]])))?;
        (answer.response == Some(true) && answer.id == self.dns_id && !answer.malformed)
            .then(|| Some((answer.rcode?, records)))
            .flatten()
    }

    fn seen_with(&self) -> String {
        match &self.kernel {
            Kernel::With { hooks, .. } => format!("error queue and kernel hooks ({})", hooks.join(", ")),
            Kernel::Without(why) => format!("error queue only: {why}"),
        }
    }

    fn text(&self) -> String {
        let mut line = format!("{} {}: {}", self.target, self.state.as_str(), self.why);
        if let Some(rtt) = self.outcome.round_trip {
            line.push_str(&format!(" after {:.1} ms", rtt.as_secs_f64() * 1e3));
        }
        if let Some((rcode, records)) = self.dns() {
            line.push_str(&format!(" (a DNS answer: {rcode}, {records} records)"));
        }
        if self.state == State::OpenFiltered {
            if let Some(path) = self.path.text(self.target.is_ipv4()) {
                line.push_str(&format!(" ({path})"));
            }
            line.push_str(": a firewall that drops it, a host that is down, or a service that ignores this payload");
            if matches!(self.check.payload, Payload::Bytes(_)) {
                line.push_str(" (try --dns NAME or --payload HEX)");
            }
        }
        if let Kernel::With { lost, .. } = &self.kernel
            && *lost > 0
        {
            line.push_str(&format!("; {lost} kernel events lost"));
        }
        let probes = if self.outcome.sent == 1 { "probe" } else { "probes" };
        format!(
            "{line}. {} {probes} sent, {} answered; seen with the {}",
            self.outcome.sent,
            self.outcome.answered,
            self.seen_with()
        )
    }

    fn json(&self) -> Value {
        let icmp = self.facts.icmp.map(|i| {
            json!({
                "type": i.icmp_type,
                "code": i.code,
                "name": crate::domain::icmp_name(i.family, i.icmp_type, i.code),
                "from": i.from.map(|f| f.to_string()),
                "errno": errno_name(i.errno),
            })
        });
        let local_error = self.facts.local_error.map(|e| json!({"call": e.call, "errno": errno_name(e.errno)}));
        let drop = self
            .facts
            .drops
            .first()
            .map(|d| json!({"direction": d.direction.as_str(), "reason": d.reason, "location": d.location}));
        let answer = self.outcome.answer.as_ref().map(|bytes| {
            json!({
                "size": bytes.len(),
                "round_trip_ms": self.outcome.round_trip.map(|r| r.as_secs_f64() * 1e3),
                "dns": self.dns().map(|(rcode, records)| json!({"rcode": rcode, "records": records})),
            })
        });
        let path = self.path.json();
        let kernel = match &self.kernel {
            Kernel::With { hooks, events, lost } => json!({
                "hooks": hooks,
                "events": events.iter().map(event_json::json).collect::<Vec<_>>(),
                "lost": lost,
            }),
            Kernel::Without(_) => Value::Null,
        };
        json!({
            "target": self.target.to_string(),
            "host": self.check.target.host,
            "local": self.facts.local.map(|l| l.to_string()),
            "state": self.state.as_str(),
            "reason": self.why,
            "evidence": {
                "answer": answer,
                "icmp": icmp,
                "local_error": local_error,
                "drop": drop,
                "own_icmp": self.facts.own_icmp_cause,
                "rate_limited": self.facts.own_icmp_suppressed,
                "interface": path["interface"],
                "gateway": path["gateway"],
                "neighbour": path["neighbour"],
            },
            "probes": {"sent": self.outcome.sent, "answered": self.outcome.answered},
            "seen_with": if matches!(self.kernel, Kernel::With { .. }) { "error_queue+kernel" } else { "error_queue" },
            "without_kernel": if let Kernel::Without(why) = &self.kernel { Some(why.as_str()) } else { None },
            "kernel": kernel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_names_and_brackets() {
        assert_eq!(parse_target("10.0.0.2:53"), Ok(Target { host: "10.0.0.2".to_owned(), port: 53 }));
        assert_eq!(parse_target("[fd00::2]:53"), Ok(Target { host: "fd00::2".to_owned(), port: 53 }));
        assert_eq!(parse_target("dns.example:5353").unwrap().host, "dns.example");
        for bad in ["10.0.0.2", "fd00::2:53", "[fd00::2]53", "[nope]:53", ":53", "host:0", "host:70000", "host:dns"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payloads_are_hex_pairs() {
        assert_eq!(parse_hex("de:ad be ef"), Ok(Hex(vec![0xde, 0xad, 0xbe, 0xef])));
        assert_eq!(parse_hex(""), Ok(Hex(vec![])));
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        // A character of more than one byte, which a pair of bytes would cut; a sign, which integer parsing takes.
        assert_eq!(parse_hex("aé0"), Err("`aé0` is not hex (0-9, a-f)".to_owned()));
        assert_eq!(parse_hex("éé"), Err("`éé` is not hex (0-9, a-f)".to_owned()));
        assert!(parse_hex("+f").is_err());
        assert!(parse_hex(&"00".repeat(MAX_PAYLOAD + 1)).is_err());
    }

    #[test]
    fn dns_names_and_the_query_they_make() {
        assert!(crate::dns::parse_dns_name("example.com").is_ok());
        assert!(crate::dns::parse_dns_name("example.com.").is_ok());
        for bad in ["", ".", "a..b", &"a".repeat(64), &"a.".repeat(130)] {
            assert!(crate::dns::parse_dns_name(bad).is_err(), "{bad}");
        }
        let (bytes, id) = payload_bytes(&Payload::Dns("example.com".to_owned())).unwrap();
        let query = simple_dns::Packet::parse(&bytes).unwrap();
        assert_eq!(Some(query.id()), id);
        assert_eq!(query.questions.len(), 1);
        assert_eq!(query.questions[0].qname.to_string(), "example.com");
    }

    fn a_check(payload: Payload) -> Check {
        Check {
            target: Target { host: "10.0.0.2".to_owned(), port: 53 },
            count: 3,
            timeout: Duration::from_secs(3),
            payload,
            ipv4_only: false,
            ipv6_only: false,
            modes: &AttachMode::LADDER,
            asked: "any mode".to_owned(),
            json: false,
            verbose: false,
        }
    }

    /// The answer for `facts`, as `run` makes it.
    fn report<'a>(check: &'a Check, facts: Facts, outcome: Outcome, kernel: Kernel) -> Report<'a> {
        let (state, why) = state::decide(&facts);
        let route = route::Route { ifindex: 2, interface: Some("eth0".to_owned()), gateway: None, local: false };
        let path = Path {
            route: Some(route),
            next_hop: Some("10.0.0.2".parse().unwrap()),
            neighbour: Some(("reachable", Some(true))),
        };
        Report { check, target: "10.0.0.2:53".parse().unwrap(), facts, outcome, kernel, state, why, dns_id: None, path }
    }

    #[test]
    fn silence_names_the_way_out_and_what_to_try() {
        let check = a_check(Payload::Bytes(Vec::new()));
        let outcome = Outcome { sent: 3, ..Outcome::default() };
        let report = report(&check, Facts::default(), outcome, Kernel::Without("not root".to_owned()));
        let text = report.text();
        assert!(text.starts_with("10.0.0.2:53 open|filtered: "), "{text}");
        assert!(text.contains("by eth0, next hop 10.0.0.2 answered ARP"), "{text}");
        assert!(text.contains("try --dns NAME or --payload HEX"), "{text}");
        assert!(text.ends_with("3 probes sent, 0 answered; seen with the error queue only: not root"), "{text}");
        let json = report.json();
        assert_eq!(json["state"], "open|filtered");
        assert_eq!(json["seen_with"], "error_queue");
        assert_eq!(json["kernel"], Value::Null);
        assert_eq!(
            json["evidence"]["neighbour"],
            json!({"address": "10.0.0.2", "state": "reachable", "answered": true})
        );
        assert_eq!(json["probes"], json!({"sent": 3, "answered": 0}));
    }

    #[test]
    fn a_dns_answer_is_told_only_for_a_response_to_the_query() {
        let check = a_check(Payload::Dns("example.com".to_owned()));
        let (query, id) = payload_bytes(&check.payload).unwrap();
        let mut answer = query.clone();
        answer[2] |= 0x80;
        for (bytes, told) in [(answer, true), (query, false)] {
            let outcome = Outcome {
                sent: 1,
                answered: 1,
                answer: Some(bytes.clone()),
                round_trip: Some(Duration::from_millis(2)),
                ..Outcome::default()
            };
            let facts = Facts { answered: Some(bytes.len()), ..Facts::default() };
            let kernel = Kernel::With { hooks: vec!["udp_dropped=tracepoint".to_owned()], events: Vec::new(), lost: 0 };
            let mut report = report(&check, facts, outcome, kernel);
            report.dns_id = id;
            assert_eq!(report.dns().is_some(), told);
            let json = report.json();
            assert_eq!(json["state"], "open");
            assert_eq!(json["seen_with"], "error_queue+kernel");
            assert_eq!(json["evidence"]["answer"]["round_trip_ms"], 2.0);
            assert_eq!(json["evidence"]["answer"]["dns"].is_null(), !told);
        }
    }

    #[test]
    fn the_probe_and_its_answer_are_told_apart() {
        let local: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let target: SocketAddr = "10.0.0.2:53".parse().unwrap();
        let packet = |src: SocketAddr, dst: SocketAddr| Packet {
            src: src.ip(),
            dst: dst.ip(),
            ports: Some((src.port(), dst.port())),
            proto: 17,
        };
        assert!(is_probe(&packet(local, target), local, target, false));
        assert!(is_probe(&packet(target, local), local, target, true));
        assert!(!is_probe(&packet(target, local), local, target, false));
        assert!(!is_probe(&packet(local, "10.0.0.2:54".parse().unwrap()), local, target, false));
    }
}
