//! A tracing session: read the ring buffer, decode, enrich, render, until Ctrl-C, SIGTERM, `--duration`
//! or `--count`; then say how many events were seen and how many were lost.

use std::{
    collections::VecDeque,
    io::{self, Write as _},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{
        MapData, PerCpuArray, RingBuf,
        perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer},
    },
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use crate::{
    cause::Kallsyms,
    cli::Buffer,
    counters,
    event::{Clock, Event, decode},
    filter::Filter,
    owner, render,
    summary::Table,
};

/// Indexes of the programs' per-CPU `STATS` map (`udptrace-ebpf/src/main.rs`).
const STAT_LOST: u32 = 0;
const STAT_READ_ERROR: u32 = 1;
const STAT_FILTERED: u32 = 2;

/// Pages of each CPU's perf buffer (`--buffer perf`): 256 KiB, about 1,100 `icmp_sent` records (bpftrace's default).
const PERF_PAGES: usize = 64;

/// How often the ring buffer is drained without a wake-up: the programs wake udptrace only once 64 KiB
/// wait, so that a flood does not cost a wake-up per event; this bounds the delay of a quiet trickle.
const DRAIN_PERIOD: Duration = Duration::from_millis(50);

/// How often the kernel's lost-event counters are checked while tracing.
const LOST_CHECK_PERIOD: Duration = Duration::from_secs(1);

pub struct Options {
    pub json: bool,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub verbose: bool,
    /// Where no hook sees the ICMP rate limits: the kernel's counters, read every `counters::PERIOD`.
    pub counters: Option<counters::Watcher>,
    /// Applied again here to what the programs could not decide.
    pub filter: Filter,
    /// `--summary`: the period of the tables.
    pub summary: Option<Duration>,
    pub buffer: Buffer,
    pub color: bool,
    /// No event lines or tables.
    pub quiet: bool,
    /// `--metrics`: every event that passes the filters is counted.
    pub metrics: Option<crate::metrics::Metrics>,
    /// The `udptrace: tracing` line, written once Ctrl-C and SIGTERM are handled: a signal right after it
    /// still ends with the closing counts.
    pub banner: String,
}

/// What a session saw, for the closing line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Events that passed the filter options.
    pub events: u64,
    /// Events the filter options dropped, in the kernel or here.
    pub filtered: u64,
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
            "udptrace: {} events seen, {} filtered out, {} lost, {} unreadable, {} undecodable",
            self.events, self.filtered, self.lost, self.unreadable, self.undecodable
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
    /// Events that wait for the next /proc scan to name a socket's owner, with when each arrived; the
    /// events after them wait too, so that the output keeps the kernel's order.
    waiting: VecDeque<(Event, std::time::Instant)>,
    /// When the next /proc scan is allowed, while events wait for it.
    owner_scan_at: Option<std::time::Instant>,
    /// The programs' socket-owner records (`OWNERS`), read for errors that came before the send hook.
    recorded_owners: Option<aya::maps::HashMap<MapData, u64, udptrace_common::Owner>>,
    totals: Totals,
    /// Events the filter options dropped here (the programs count theirs in `STATS`).
    filtered_here: u64,
    /// `--summary`: this period's table and the whole run's.
    period: Table,
    run: Table,
    started: Instant,
    out: io::BufWriter<io::Stdout>,
}

/// Events that may wait for an owner scan; one more scans at once. A second of a flood of errors on
/// sockets opened since the last scan.
const MAX_WAITING: usize = 16_384;

/// Records handled in one go before the loop looks at signals, timers and the metrics server again: a
/// steady flood must not hold the loop in one drain.
const DRAIN_BATCH: usize = 4096;

/// Where the programs' records arrive.
enum Source {
    /// The ring buffer, and whether the last drain stopped at `DRAIN_BATCH` with records left.
    Ring(AsyncFd<RingBuf<MapData>>, bool),
    /// One buffer per online CPU.
    Perf(Vec<AsyncFd<PerfEventArrayBuffer<MapData>>>),
}

impl Source {
    fn open(ebpf: &mut Ebpf, buffer: Buffer) -> Result<Self> {
        match buffer {
            Buffer::Ring => {
                let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("the EVENTS map is missing")?)?;
                // SAFETY: the ring buffer's fd stays open and unchanged while the AsyncFd owns the RingBuf.
                let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                    .map_err(|e| e.into_parts().1)
                    .context("polling the ring buffer")?;
                Ok(Source::Ring(ring, false))
            }
            Buffer::Perf => {
                let mut array =
                    PerfEventArray::try_from(ebpf.take_map("PERF_EVENTS").context("the PERF_EVENTS map is missing")?)?;
                let cpus = aya::util::online_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
                let mut buffers = Vec::with_capacity(cpus.len());
                for cpu in cpus {
                    let buffer = array
                        .open(cpu, Some(PERF_PAGES))
                        .with_context(|| format!("opening the perf buffer of CPU {cpu}"))?;
                    // SAFETY: the buffer's fd stays open and unchanged while the AsyncFd owns the buffer.
                    let buffer = unsafe { AsyncFd::register_with_interest(buffer, Interest::READABLE) }
                        .map_err(|e| e.into_parts().1)
                        .context("polling a perf buffer")?;
                    buffers.push(buffer);
                }
                Ok(Source::Perf(buffers))
            }
        }
    }

    /// Waits until a buffer may have records. Readiness is cleared before the caller drains every
    /// buffer, so a record that arrives meanwhile is either drained now or signalled again.
    async fn readable(&mut self) -> io::Result<()> {
        match self {
            Source::Ring(ring, more) => {
                if std::mem::take(more) {
                    // Records are left from the last drain: ready at once, but after the other branches'
                    // turn (`select!` picks among ready branches at random).
                    tokio::task::yield_now().await;
                    return Ok(());
                }
                ring.readable_mut().await?.clear_ready();
                Ok(())
            }
            Source::Perf(buffers) => {
                std::future::poll_fn(|cx| {
                    let mut ready = false;
                    for buffer in buffers.iter_mut() {
                        if let std::task::Poll::Ready(guard) = buffer.poll_read_ready_mut(cx) {
                            guard?.clear_ready();
                            ready = true;
                        }
                    }
                    if ready { std::task::Poll::Ready(Ok(())) } else { std::task::Poll::Pending }
                })
                .await
            }
        }
    }

    /// Whether the last drain left records behind.
    fn has_more(&self) -> bool {
        matches!(self, Source::Ring(_, true))
    }

    /// Hands waiting records to `session` (at most `DRAIN_BATCH` from the ring buffer), until it says stop.
    fn drain(&mut self, session: &mut Session) -> Option<Stop> {
        let stop = match self {
            Source::Ring(ring, more) => {
                let ring = ring.get_mut();
                let mut stop = None;
                let mut handled = 0;
                while let Some(item) = ring.next() {
                    if let Some(s) = session.record(&item) {
                        stop = Some(s);
                        break;
                    }
                    handled += 1;
                    if handled == DRAIN_BATCH {
                        *more = true;
                        break;
                    }
                }
                stop
            }
            Source::Perf(buffers) => {
                let mut stop = None;
                let mut joined = Vec::new();
                for buffer in buffers.iter_mut() {
                    let flow = buffer.get_mut().try_fold((), |(), event| match event {
                        PerfEvent::Sample { head, tail } => {
                            let bytes = if tail.is_empty() {
                                head
                            } else {
                                joined.clear();
                                joined.extend_from_slice(head);
                                joined.extend_from_slice(tail);
                                &joined[..]
                            };
                            match session.record(bytes) {
                                Some(s) => std::ops::ControlFlow::Break(s),
                                None => std::ops::ControlFlow::Continue(()),
                            }
                        }
                        // The programs count every record that did not fit (`STAT_LOST`), when it happens;
                        // these reports of the same losses come late, with the next record that fits.
                        PerfEvent::Lost { .. } => std::ops::ControlFlow::Continue(()),
                    });
                    if let std::ops::ControlFlow::Break(s) = flow {
                        stop = Some(s);
                        break;
                    }
                }
                stop
            }
        };
        if session.out.flush().is_err() {
            return Some(Stop::OutputClosed);
        }
        stop
    }
}

pub async fn run(mut ebpf: Ebpf, options: Options) -> Result<Totals> {
    let mut source = Source::open(&mut ebpf, options.buffer)?;
    let stats = PerCpuArray::try_from(ebpf.take_map("STATS").context("the STATS map is missing")?)?;

    let kallsyms = match Kallsyms::load() {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("udptrace: warning: cannot read kernel symbols ({e}); icmp_sent causes will be \"other\"");
            None
        }
    };
    let mut session = Session {
        options,
        clock: Clock::now(),
        kallsyms,
        stats,
        owners: owner::Resolver::new(),
        waiting: VecDeque::new(),
        owner_scan_at: None,
        recorded_owners: ebpf.take_map("OWNERS").and_then(|m| aya::maps::HashMap::try_from(m).ok()),
        totals: Totals::default(),
        filtered_here: 0,
        period: Table::default(),
        run: Table::default(),
        started: Instant::now(),
        out: io::BufWriter::new(io::stdout()),
    };

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    eprintln!("{}", session.options.banner);
    let deadline = session.options.duration.map(|d| Instant::now() + d);
    let mut drain_tick = interval(DRAIN_PERIOD);
    drain_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut lost_check = interval(LOST_CHECK_PERIOD);
    lost_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut counter_check = interval(counters::PERIOD);
    counter_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let summary_period = session.options.summary;
    let mut summary_tick = tokio::time::interval_at(
        Instant::now() + summary_period.unwrap_or(Duration::MAX / 4),
        summary_period.unwrap_or(Duration::MAX / 4),
    );
    summary_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let stop = loop {
        tokio::select! {
            ready = source.readable() => {
                ready.context("waiting for events")?;
                if let Some(stop) = source.drain(&mut session) {
                    break stop;
                }
            }
            _ = drain_tick.tick() => {
                if let Some(stop) = source.drain(&mut session) {
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
            () = sleep_until_opt(session.owner_scan_at.map(Instant::from_std)), if session.owner_scan_at.is_some() => {
                if let Some(stop) = session.release_waiting(true) {
                    break stop;
                }
                if session.out.flush().is_err() {
                    break Stop::OutputClosed;
                }
            }
            _ = summary_tick.tick(), if summary_period.is_some() => {
                if let Some(stop) = session.print_period() {
                    break stop;
                }
            }
        }
    };
    // What arrived before the stop is still shown, unless the reader is gone or the count is reached.
    // Bounded: under a flood records keep coming until the programs are detached.
    if matches!(stop, Stop::Signal | Stop::Duration) {
        for _ in 0..64 {
            if source.drain(&mut session).is_some() || !source.has_more() {
                break;
            }
        }
        // Events waiting for an owner scan get it now.
        let _ = session.release_waiting(false);
        let _ = session.out.flush();
    }
    if !matches!(stop, Stop::OutputClosed) {
        let _ = session.report_lost();
        if !matches!(stop, Stop::Count) {
            let _ = session.report_counters();
        }
        session.print_run();
    }
    session.totals.filtered = session.counter(STAT_FILTERED) + session.filtered_here;
    Ok(session.totals)
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// Decodes, enriches and passes on one record.
    fn record(&mut self, bytes: &[u8]) -> Option<Stop> {
        match decode(bytes, self.clock) {
            Ok(event) => {
                let event = self.enrich(event);
                self.proceed(event, std::time::Instant::now())
            }
            Err(e) => {
                self.totals.undecodable += 1;
                if self.options.verbose {
                    eprintln!("udptrace: warning: undecodable record: {e}");
                }
                None
            }
        }
    }

    /// Passes on an event once /proc has named its socket's owner (if it must), in arrival order.
    fn proceed(&mut self, event: Event, seen: std::time::Instant) -> Option<Stop> {
        if !self.waiting.is_empty() {
            self.waiting.push_back((event, seen));
            return if self.waiting.len() >= MAX_WAITING { self.release_waiting(false) } else { None };
        }
        match self.with_owner(event, seen, true) {
            Ok(event) => self.event(event),
            Err((event, at)) => {
                self.waiting.push_back((event, seen));
                self.owner_scan_at = Some(at);
                None
            }
        }
    }

    /// Names the owner of a socket no program recorded, from /proc; gives the event back, with when to try
    /// again, if it must wait for the next scan.
    fn with_owner(
        &mut self,
        mut event: Event,
        seen: std::time::Instant,
        may_wait: bool,
    ) -> Result<Event, (Event, std::time::Instant)> {
        if let Event::SocketError(e) = &mut event
            && e.owner.is_none()
            && let Some(ino) = e.sock_ino
        {
            match self.owners.by_socket_inode(ino, seen, may_wait) {
                owner::Lookup::Found(owner) => e.owner = Some(owner),
                owner::Lookup::Unknown => {}
                owner::Lookup::Later(at) => return Err((event, at)),
            }
        }
        Ok(event)
    }

    /// Passes on the events that waited for an owner scan, in order; `may_wait: false` scans at once.
    fn release_waiting(&mut self, may_wait: bool) -> Option<Stop> {
        self.owner_scan_at = None;
        while let Some((event, seen)) = self.waiting.pop_front() {
            match self.with_owner(event, seen, may_wait) {
                Ok(event) => {
                    if let Some(stop) = self.event(event) {
                        return Some(stop);
                    }
                }
                Err((event, at)) => {
                    self.waiting.push_front((event, seen));
                    self.owner_scan_at = Some(at);
                    return None;
                }
            }
        }
        None
    }

    /// Filters, counts and shows (or tabulates) one event.
    fn event(&mut self, event: Event) -> Option<Stop> {
        if !self.options.filter.matches(&event) {
            self.filtered_here += 1;
            return None;
        }
        if !matches!(event, Event::Lost { .. }) {
            self.totals.events += 1;
        }
        if self.emit(event).is_err() {
            return Some(Stop::OutputClosed);
        }
        self.options.count.is_some_and(|n| self.totals.events >= n).then_some(Stop::Count)
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
            // A socket no program recorded is looked up in /proc by `with_owner`, in order.
            if let Some(owner) = &mut e.owner {
                self.owners.complete(owner);
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
        if let Some(metrics) = &self.options.metrics {
            metrics.count(&event);
        }
        if self.options.quiet {
            return Ok(());
        }
        if self.options.summary.is_some() {
            self.period.add(&event);
            self.run.add(&event);
            return Ok(());
        }
        let line = if self.options.json {
            render::json(&event).to_string()
        } else {
            render::styled_text(&event, self.options.color)
        };
        writeln!(self.out, "{line}").map_err(|_| Stop::OutputClosed)
    }

    /// `--summary`: this period's table, then a fresh one.
    fn print_period(&mut self) -> Option<Stop> {
        if self.options.quiet {
            return None;
        }
        let table = std::mem::take(&mut self.period);
        let period = self.options.summary.unwrap_or_default();
        let written = if self.options.json {
            writeln!(self.out, "{}", table.json(std::time::SystemTime::now(), Some(period.as_secs_f64())))
        } else {
            let now = render::rfc3339(std::time::SystemTime::now());
            writeln!(
                self.out,
                "{}",
                table.text(&format!("udptrace summary {now}, last {}", humantime::format_duration(period)))
            )
        };
        (written.is_err() || self.out.flush().is_err()).then_some(Stop::OutputClosed)
    }

    /// `--summary`: the whole run's table, at exit.
    fn print_run(&mut self) {
        if self.options.summary.is_none() || self.options.quiet {
            return;
        }
        let elapsed = Duration::from_secs(self.started.elapsed().as_secs());
        let _ = if self.options.json {
            writeln!(self.out, "{}", self.run.json(std::time::SystemTime::now(), None))
        } else {
            writeln!(
                self.out,
                "{}",
                self.run.text(&format!("udptrace summary, whole run ({})", humantime::format_duration(elapsed)))
            )
        };
        let _ = self.out.flush();
    }

    /// Emits an `icmp_suppressed` event for each rate-limit counter that rose.
    fn report_counters(&mut self) -> Option<Stop> {
        let events = self.options.counters.as_mut().map(counters::Watcher::poll).unwrap_or_default();
        for event in events {
            if let Some(stop) = self.event(event) {
                return Some(stop);
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
        let totals = Totals { events: 12, filtered: 4, lost: 3, unreadable: 1, undecodable: 0 };
        assert_eq!(
            totals.closing_line(),
            "udptrace: 12 events seen, 4 filtered out, 3 lost, 1 unreadable, 0 undecodable"
        );
    }
}
