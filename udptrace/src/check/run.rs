//! The run: the probes, sent as planned from one socket, and as root udptrace's hooks beside them, filtered
//! to that socket; what each side saw.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    probe::{self, Heard, Probe},
    state::{Facts, LocalError, QueuedIcmp, SeenDrop},
    target::Check,
};
use crate::{
    domain::{Direction, Packet},
    errors::one_line,
    events::{Event, Lost},
    kernel::{loader::KernelFacts, privileges},
    output::Sink,
    pipeline::{
        filter::{Filter, Prefix},
        netns, session,
        source::Buffer,
    },
    trace::{Setup, Tracing},
};

/// How the probes go.
pub struct Plan {
    pub count: u32,
    pub timeout: Duration,
    pub payload: Vec<u8>,
}

/// What the probes got.
#[derive(Debug, Default)]
pub struct Outcome {
    pub sent: u32,
    pub answered: u32,
    pub answer: Option<Vec<u8>>,
    /// From the last probe sent before the answer.
    pub round_trip: Option<Duration>,
    pub icmp: Option<QueuedIcmp>,
    pub local_error: Option<LocalError>,
    /// Ctrl-C or SIGTERM ended it.
    pub interrupted: bool,
}

impl Outcome {
    pub fn add_to(&self, facts: &mut Facts) {
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
    pub fn run(&self, probe: &Probe, decided: &dyn Fn() -> bool, cancel: &AtomicBool) -> Result<Outcome> {
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
pub struct Without {
    pub text: String,
    /// Not root: the usual case, said only with `-v` (and in the answer).
    pub not_root: bool,
}

/// The kernel's side of a check.
pub enum Kernel {
    With { hooks: Vec<String>, events: Vec<Event>, lost: u64 },
    Without(String),
}

/// As root: udptrace's hooks, filtered to the probe socket's port, its namespace and the target.
pub fn kernel_side(check: &Check, local: SocketAddr, target: SocketAddr) -> Result<Tracing, Without> {
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
        pcap_snaplen: 0,
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
pub fn probe_with_kernel(tracing: Tracing, probe: Probe, plan: &Plan) -> Result<(Outcome, Kernel)> {
    let Tracing {
        runtime,
        source,
        mut parts,
        attached,
        programs: _programs,
        cgroup_links: _cgroup_links,
        maps,
        misses,
        ..
    } = tracing;
    // The probe's answers are parsed as a user of no privilege, as the tracer's events are (`privsep`).
    let helper = crate::privsep::split::after_attach(maps, misses, false)?;
    parts.use_helper(&helper);
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
        let options = session::Options {
            duration: None,
            count: None,
            verbose: false,
            banner: None,
            stop: Some(stop),
            helper: Some(helper.clone()),
            require_helper: false,
        };
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(Collect(events.clone()))];
        let totals = runtime.block_on(session::run(source, parts, sinks, options));
        // A signal ended the session first: the probes stop too.
        cancel.store(true, Ordering::Relaxed);
        let outcome = prober.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the probe thread panicked")));
        (outcome, totals)
    });
    helper.finish();
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
pub fn from_kernel(events: &[Event], local: SocketAddr, target: SocketAddr, facts: &mut Facts) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
