//! A tracing session: read the ring buffer, decode, enrich, render, until Ctrl-C, SIGTERM, `--duration`
//! or `--count`; then say how many events were seen and how many were lost.

use std::{
    io::{self, Write as _},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use crate::{
    cause::Kallsyms,
    counters, owner,
    event::{Clock, Event, decode},
    render,
};

/// Indexes of the programs' per-CPU `STATS` map (`udptrace-ebpf/src/main.rs`).
const STAT_LOST: u32 = 0;
const STAT_READ_ERROR: u32 = 1;

/// How often the kernel's lost-event counters are checked while tracing.
const LOST_CHECK_PERIOD: Duration = Duration::from_secs(1);

pub struct Options {
    pub json: bool,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub verbose: bool,
    /// Where no hook sees the ICMP rate limits: the kernel's counters, read every `counters::PERIOD`.
    pub counters: Option<counters::Watcher>,
}

/// What a session saw, for the closing line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub events: u64,
    /// Reported lost by the kernel (ring buffer full).
    pub lost: u64,
    /// Seen by a program that could not read what it needed.
    pub unreadable: u64,
    /// Records user space could not decode.
    pub undecodable: u64,
}

impl Totals {
    pub fn closing_line(&self) -> String {
        format!(
            "udptrace: {} events seen, {} lost, {} unreadable, {} undecodable",
            self.events, self.lost, self.unreadable, self.undecodable
        )
    }
}

/// Why the session ended.
enum Stop {
    Signal,
    Duration,
    Count,
    /// stdout went away (e.g. `udptrace | head`).
    OutputClosed,
}

struct Session {
    options: Options,
    clock: Clock,
    kallsyms: Option<Kallsyms>,
    stats: PerCpuArray<MapData, u64>,
    owners: owner::Resolver,
    /// The programs' socket-owner records (`OWNERS`), read for errors that came before the send hook.
    recorded_owners: Option<aya::maps::HashMap<MapData, u64, udptrace_common::Owner>>,
    totals: Totals,
    out: io::BufWriter<io::Stdout>,
}

pub async fn run(mut ebpf: Ebpf, options: Options) -> Result<Totals> {
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("the EVENTS map is missing")?)?;
    let stats = PerCpuArray::try_from(ebpf.take_map("STATS").context("the STATS map is missing")?)?;
    // SAFETY: the ring buffer's fd stays open and unchanged while the AsyncFd owns the RingBuf.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("polling the ring buffer")?;

    let kallsyms = match Kallsyms::load() {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("udptrace: warning: cannot read kernel symbols ({e}); icmp_sent causes will be \"other\"");
            None
        }
    };
    let mut session =
        Session {
        options,
        clock: Clock::now(),
        kallsyms,
        stats,
        owners: owner::Resolver::new(),
        recorded_owners: ebpf.take_map("OWNERS").and_then(|m| aya::maps::HashMap::try_from(m).ok()),
        totals: Totals::default(),
        out: io::BufWriter::new(io::stdout()),
    };

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let deadline = session.options.duration.map(|d| Instant::now() + d);
    let mut lost_check = interval(LOST_CHECK_PERIOD);
    lost_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut counter_check = interval(counters::PERIOD);
    counter_check.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let stop = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for events")?;
                let stop = session.drain(guard.get_inner_mut());
                guard.clear_ready();
                if let Some(stop) = stop {
                    break stop;
                }
            }
            _ = sigint.recv() => break Stop::Signal,
            _ = sigterm.recv() => break Stop::Signal,
            () = sleep_until_opt(deadline) => break Stop::Duration,
            _ = lost_check.tick() => {
                if let Some(stop) = session.report_lost() {
                    break stop;
                }
            }
            _ = counter_check.tick(), if session.options.counters.is_some() => {
                if let Some(stop) = session.report_counters() {
                    break stop;
                }
            }
        }
    };
    // What arrived before the stop is still shown, unless the reader is gone or the count is reached.
    if matches!(stop, Stop::Signal | Stop::Duration) {
        let _ = session.drain(ring.get_mut());
    }
    if !matches!(stop, Stop::OutputClosed) {
        let _ = session.report_lost();
        if !matches!(stop, Stop::Count) {
            let _ = session.report_counters();
        }
    }
    Ok(session.totals)
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// Handles every record waiting in the ring buffer.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> Option<Stop> {
        let mut stop = None;
        while let Some(item) = ring.next() {
            match decode(&item, self.clock) {
                Ok(event) => {
                    self.totals.events += 1;
                    let event = self.enrich(event);
                    if let Err(stop_now) = self.emit(event) {
                        stop = Some(stop_now);
                        break;
                    }
                    if self.options.count.is_some_and(|n| self.totals.events >= n) {
                        stop = Some(Stop::Count);
                        break;
                    }
                }
                Err(e) => {
                    self.totals.undecodable += 1;
                    if self.options.verbose {
                        eprintln!("udptrace: warning: undecodable record: {e}");
                    }
                }
            }
        }
        if self.out.flush().is_err() {
            return Some(Stop::OutputClosed);
        }
        stop
    }

    /// Adds what user space knows: the errno an ignored error would have been, the cause of an ICMP this
    /// host sent.
    fn enrich(&mut self, mut event: Event) -> Event {
        if let Event::SocketError(e) = &mut event {
            fill_errno(e);
            if e.owner.is_none()
                && let (Some(ino), Some(recorded)) = (e.sock_ino, &self.recorded_owners)
                && let Ok(owner) = recorded.get(&ino, 0)
            {
                // The send hook ran after the error: sock:sock_send_length fires when the send returns,
                // and on loopback or veth the ICMP error comes back inside that send.
                e.owner = Some(owner::OwnerInfo::recorded(&owner));
            }
            match (&mut e.owner, e.sock_ino) {
                (Some(owner), _) => self.owners.complete(owner),
                (None, Some(ino)) => e.owner = self.owners.by_socket_inode(ino),
                (None, None) => {}
            }
        }
        let sent = match &mut event {
            Event::IcmpSent(e) => Some(e),
            Event::IcmpSuppressed(e) => e.attempt.as_mut(),
            _ => None,
        };
        if let (Some(e), Some(kallsyms)) = (sent, &mut self.kallsyms) {
            e.cause = kallsyms.classify(&e.stack, e.icmp.icmp_type, e.icmp.code);
            if e.cause == crate::cause::Cause::Other {
                // A caller in a module loaded after start-up (nf_reject_ipv4 on the first REJECT) is not in
                // the table yet.
                kallsyms.refresh_if_modules_changed();
                e.cause = kallsyms.classify(&e.stack, e.icmp.icmp_type, e.icmp.code);
            }
            if self.options.verbose {
                let frames: Vec<&str> = e.stack.iter().map(|&a| kallsyms.function(a).unwrap_or("?")).collect();
                eprintln!("udptrace: icmp_sent stack: {}", frames.join(" <- "));
            }
        }
        event
    }

    fn emit(&mut self, event: Event) -> Result<(), Stop> {
        let line = if self.options.json { render::json(&event).to_string() } else { render::text(&event) };
        writeln!(self.out, "{line}").map_err(|_| Stop::OutputClosed)
    }

    /// Emits an `icmp_suppressed` event for each rate-limit counter that rose.
    fn report_counters(&mut self) -> Option<Stop> {
        let events = self.options.counters.as_mut().map(counters::Watcher::poll).unwrap_or_default();
        for event in events {
            self.totals.events += 1;
            if self.emit(event).is_err() {
                return Some(Stop::OutputClosed);
            }
            if self.options.count.is_some_and(|n| self.totals.events >= n) {
                return Some(Stop::Count);
            }
        }
        if self.out.flush().is_err() {
            return Some(Stop::OutputClosed);
        }
        None
    }

    /// Sums a per-CPU counter.
    fn counter(&self, index: u32) -> u64 {
        self.stats.get(&index, 0).map(|values| values.iter().sum()).unwrap_or(0)
    }

    /// Emits a `lost` event for what the kernel dropped since the last check.
    fn report_lost(&mut self) -> Option<Stop> {
        let lost = self.counter(STAT_LOST);
        self.totals.unreadable = self.counter(STAT_READ_ERROR);
        let new = lost.saturating_sub(self.totals.lost);
        if new == 0 {
            return None;
        }
        self.totals.lost = lost;
        let event = Event::Lost { time: std::time::SystemTime::now(), count: new };
        if self.emit(event).is_err() || self.out.flush().is_err() {
            return Some(Stop::OutputClosed);
        }
        None
    }
}

/// A delivered error carries the socket's `sk_err`. For an ignored one (or one that matched no socket) the
/// kernel computed the errno but stored it nowhere: name the one its tables give, so that the user sees
/// which error the application did not get.
fn fill_errno(e: &mut crate::event::SocketError) {
    if e.errno == 0
        && e.verdict != Some(crate::event::Verdict::Delivered)
        && let Some(icmp) = e.icmp
        && let Some((errno, _hard)) = crate::explain::icmp_errno(e.family, icmp.icmp_type, icmp.code)
    {
        e.errno = errno;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_line_names_every_count() {
        let totals = Totals { events: 12, lost: 3, unreadable: 1, undecodable: 0 };
        assert_eq!(totals.closing_line(), "udptrace: 12 events seen, 3 lost, 1 unreadable, 0 undecodable");
    }
}
