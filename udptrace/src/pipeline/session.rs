//! A tracing session: records from the buffer are decoded, enriched, filtered and handed to the sinks,
//! until Ctrl-C, SIGTERM, `--duration` or `--count`; then it says how many events were seen and lost.

use std::{
    ops::ControlFlow,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval, interval_at},
};
use udptrace_common::stat;

use super::{
    counters,
    enrich::Enricher,
    filter::Filter,
    source::Source,
    tally::{DropCounts, Read, Tally},
};
use crate::{
    events::{Event, Lost, decode, record::Clock},
    kernel::maps::{Array, PerCpuArray},
    output::Sink,
};

/// How often the kernel's lost-event counters (and, where they stand in for hooks, the rate-limit
/// counters) are read while tracing.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(1);

/// How long the final drain may spend on the records left in the buffer: those still there after it are
/// counted lost without being read, so that a stop ends well within what a service manager waits before
/// it kills (systemd's 90 s, Kubernetes' 30 s) and the closing line is written.
const FINAL_DRAIN_TIME: Duration = Duration::from_secs(5);

/// Batches of the final drain, once the programs hand over nothing more: the buffer holds a bounded number
/// of records, and the drain ends when it is empty; bounded all the same.
const FINAL_BATCHES: usize = 4096;

/// Batches read and shown when the programs could not be told to stop (they go on handing records over):
/// after these, the records are counted lost, unread, up to [`FINAL_BATCHES`].
const FINAL_BATCHES_SHOWN_UNSTOPPED: usize = 64;

pub struct Options {
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    /// Say what could not be decoded.
    pub verbose: bool,
    /// The `udptrace: tracing` line, written once Ctrl-C and SIGTERM are handled: a signal right after it
    /// still ends with the closing counts. `None`: no line (`udptrace check` speaks for itself).
    pub banner: Option<String>,
    /// Ends the session like `--duration` when notified (`udptrace check`, once its probes are answered).
    pub stop: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// The privileged helper, looked at once a second so that its end is said even while nothing
    /// is asked of it.
    pub helper: Option<crate::privsep::client::Client>,
    /// `--require-helper`: the helper's end ends the session with an error.
    pub require_helper: bool,
}

/// What a session works with between the buffer and the sinks: the stages each event passes (the enricher,
/// the filter), and what it reads from and writes to the programs and the kernel besides the buffer (the
/// kernel's counters, `STATS`, the skipped runs, the programs' logs, the counts kept in the kernel, the drop
/// counts, the stop flag).
pub struct Parts {
    pub enricher: Enricher,
    /// Applied again here to what the programs could not decide.
    pub filter: Filter,
    /// Where no hook sees the ICMP rate limits: the kernel's counters.
    pub counters: Option<counters::Watcher>,
    /// The programs' per-CPU counters (`STATS`).
    pub stats: PerCpuArray<u64>,
    /// The runs of the programs the kernel skipped, each an event lost.
    pub misses: crate::kernel::misses::Misses,
    /// What the programs log (`-v`: the reads that failed).
    pub logs: Option<aya_log::EbpfLogger<crate::kernel::loader::ProgramLog>>,
    /// The counts the programs keep instead of records, when only counts are wanted.
    pub tally: Option<Tally>,
    /// The drops the drop program counted.
    pub drops: Option<DropCounts>,
    /// Set when the session stops (`names::OUTPUT_STOPPED`): the programs hand over nothing more, and count
    /// what they would have as lost.
    pub stop_output: Option<Array<u32>>,
    /// Hands the programs conntrack's offsets once its module is loaded.
    pub conntrack: Option<crate::kernel::conntrack::Watch>,
}

impl Parts {
    /// From now on what takes a privilege is asked of the privileged helper.
    pub fn use_helper(&mut self, helper: &crate::privsep::client::Client) {
        self.enricher.use_helper(Box::new(helper.clone()));
        if let Some(counters) = &mut self.counters {
            let mut helper = helper.clone();
            counters
                .read_with(Box::new(move || crate::pipeline::enrich::privileged::Privileged::rate_limits(&mut helper)));
        }
    }
}

/// What a session saw, for the closing line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Events that passed the filter options.
    pub events: u64,
    /// Events the filter options dropped, in the kernel or here.
    pub filtered: u64,
    /// Reported lost by the kernel (buffer full).
    pub lost: u64,
    /// Seen by a program that could not read what it needed.
    pub unreadable: u64,
    /// Records user space could not decode.
    pub undecodable: u64,
    /// Sockets whose creator or connector the programs could not record: the map of owners was full.
    pub owners_not_recorded: u64,
    /// Datagrams on a DNS port whose payload did not parse as DNS (said only when there were some).
    pub not_dns: u64,
    /// The programs could not be told to stop at the end: what they handed over after the final drain is
    /// counted nowhere (said only then).
    pub not_stopped: bool,
}

impl Totals {
    pub fn closing_line(&self) -> String {
        let mut line = format!(
            "udptrace: {} events seen, {} filtered out, {} lost, {} unreadable, {} undecodable, {} owners not recorded",
            self.events, self.filtered, self.lost, self.unreadable, self.undecodable, self.owners_not_recorded
        );
        if self.not_dns > 0 {
            line.push_str(&format!(", {} datagrams on a DNS port not DNS", self.not_dns));
        }
        if self.not_stopped {
            line.push_str(", events after the last read not counted (the programs could not be stopped)");
        }
        line
    }
}

/// Why the session ended.
enum Stop {
    Signal,
    Duration,
    Count,
    /// An output went away (e.g. `udptrace | head`).
    OutputClosed,
    /// The privileged helper is gone, and `--require-helper` was given or the maps are read through it: why.
    HelperGone(String),
}

struct Session {
    options: Options,
    parts: Parts,
    sinks: Vec<Box<dyn Sink>>,
    clock: Clock,
    totals: Totals,
    /// Events the filter options dropped here (the programs count theirs in `STATS`).
    filtered_here: u64,
    /// From this instant the records drained are counted lost, unread (the final drain's bounds).
    read_until: Option<Instant>,
    /// Records counted lost unread, in the final drain.
    unread: u64,
}

pub async fn run(mut source: Source, parts: Parts, sinks: Vec<Box<dyn Sink>>, options: Options) -> Result<Totals> {
    let mut session = Session {
        options,
        parts,
        sinks,
        clock: Clock::now(),
        totals: Totals::default(),
        filtered_here: 0,
        read_until: None,
        unread: 0,
    };
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    if let Some(banner) = &session.options.banner {
        eprintln!("{banner}");
    }
    let stop_signal = session.options.stop.clone();
    let started = Instant::now();
    let deadline = session.options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut housekeeping = interval(HOUSEKEEPING_PERIOD);
    housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The shortest period a sink asks for; every sink that asked is told when it ends.
    let period = session.sinks.iter().filter_map(|s| s.period()).min();
    let every = period.unwrap_or(Duration::MAX / 4);
    let mut period_tick = interval_at(tokio::time::Instant::now() + every, every);
    period_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let stop = loop {
        let step = tokio::select! {
            ready = source.ready() => {
                ready.context("waiting for events")?;
                session.drain(&mut source)
            }
            _ = sigint.recv() => ControlFlow::Break(Stop::Signal),
            _ = sigterm.recv() => ControlFlow::Break(Stop::Signal),
            () = sleep_until(deadline) => ControlFlow::Break(Stop::Duration),
            () = notified(stop_signal.as_deref()) => ControlFlow::Break(Stop::Duration),
            () = sleep_until(session.parts.enricher.wake_at().map(Into::into)) => session.pass_on(),
            _ = housekeeping.tick() => session.housekeeping(),
            _ = period_tick.tick(), if period.is_some() => {
                // A period's table includes what the kernel counted up to its end.
                match session.read_tally() {
                    ControlFlow::Continue(()) => session
                        .each_sink(|sink| if sink.period().is_some() { sink.end_period() } else { Ok(()) }),
                    stop => stop,
                }
            }
        };
        if let ControlFlow::Break(stop) = step {
            break stop;
        }
        if let ControlFlow::Break(stop) = session.flush() {
            break stop;
        }
    };
    // What arrived before the stop is still shown, unless an output is gone or the count is reached.
    if matches!(stop, Stop::Signal | Stop::Duration | Stop::HelperGone(_)) {
        // The drops counted until now, before the closing line: their first ones may still be in the buffer,
        // drained below.
        let _ = session.stop_tally();
        let stopped = session.stop_output();
        session.parts.enricher.end();
        session.final_drain(&mut source, stopped);
        let _ = session.pass_on();
    }
    if !matches!(stop, Stop::OutputClosed) {
        if let Some(logs) = &mut session.parts.logs {
            logs.flush();
        }
        let _ = session.read_lost();
        if !matches!(stop, Stop::Count) {
            let _ = session.read_counters();
        }
        let elapsed = started.elapsed();
        let _ = session.each_sink(|sink| sink.finish(elapsed));
        let _ = session.flush();
    }
    session.totals.filtered = session.stat(stat::FILTERED) + session.filtered_here;
    if let Stop::HelperGone(why) = stop {
        if session.options.helper.as_ref().is_some_and(crate::privsep::client::Client::essential) {
            // The counts are read through the helper here: a closing line would say zeros.
            anyhow::bail!("{why}, and on this kernel the programs' maps are read through it: their counts are lost");
        }
        // What was seen until then, before the error that ends the session.
        eprintln!("{}", session.totals.closing_line());
        anyhow::bail!("{why}, and --require-helper stops tracing then");
    }
    Ok(session.totals)
}

/// What happens after a read of the kernel's counts failed, given why the programs could not be told to
/// hand records over (`None`: they were told).
fn after_failed_read(not_switched: Option<&anyhow::Error>) -> String {
    match not_switched {
        None => "events are handed over one by one from now on".to_owned(),
        Some(e) => format!(
            "the programs could not be told to hand events over one by one ({}) and go on counting in the kernel: \
             they are told again each second, and what they count is shown once they are, or at the stop",
            crate::errors::one_line(e)
        ),
    }
}

async fn notified(stop: Option<&tokio::sync::Notify>) {
    match stop {
        Some(stop) => stop.notified().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How the final drain takes a record.
#[derive(Debug, PartialEq, Eq)]
enum Take {
    /// Decoded and shown.
    Read,
    /// Counted lost, unread: the drain's time is up, or the programs were not stopped and go on.
    Count,
}

/// Whether batch `batch` of the final drain is read or counted, and `None` once it is to end: counted after
/// [`FINAL_DRAIN_TIME`] (`late`), or after [`FINAL_BATCHES_SHOWN_UNSTOPPED`] when the programs were not
/// stopped; ended after [`FINAL_BATCHES`].
fn final_batch(batch: usize, stopped: bool, late: bool) -> Option<Take> {
    if batch >= FINAL_BATCHES {
        None
    } else if late || (!stopped && batch >= FINAL_BATCHES_SHOWN_UNSTOPPED) {
        Some(Take::Count)
    } else {
        Some(Take::Read)
    }
}

impl Session {
    /// Tells the programs to hand over nothing more, and count what they would have as lost; whether they
    /// were told.
    fn stop_output(&mut self) -> bool {
        let told = match &self.parts.stop_output {
            Some(stop) => stop.set(0, 1).context("writing the map that stops them"),
            None => Err(anyhow::anyhow!("the map that stops them is missing")),
        };
        if let Err(e) = &told {
            eprintln!(
                "udptrace: warning: the programs could not be told to stop ({}): what they hand over from now on \
                 is shown for a while, then counted lost, and what comes after that is not counted",
                crate::errors::one_line(e)
            );
            self.totals.not_stopped = true;
        }
        told.is_ok()
    }

    /// Reads what is left in the buffer once the programs were told to stop (`stopped`): to its end, unless
    /// that outlasts [`FINAL_DRAIN_TIME`] (an owner looked up in /proc, a slow output): what is left then
    /// is counted lost, unread. Unstopped programs hand records over until they are detached: bounded by
    /// [`final_batch`].
    fn final_drain(&mut self, source: &mut Source, stopped: bool) {
        let deadline = Instant::now() + FINAL_DRAIN_TIME;
        for batch in 0.. {
            let Some(take) = final_batch(batch, stopped, Instant::now() >= deadline) else { break };
            self.read_until = Some(if take == Take::Count { Instant::now() } else { deadline });
            if self.drain(source).is_break() || !source.has_more() {
                break;
            }
        }
        if self.unread > 0 && stopped {
            eprintln!(
                "udptrace: warning: the stop took {} s: the {} records left in the buffer are counted lost, unread",
                FINAL_DRAIN_TIME.as_secs(),
                self.unread
            );
        }
    }

    /// Decodes the waiting records and passes on what is complete.
    fn drain(&mut self, source: &mut Source) -> ControlFlow<Stop> {
        source.drain(|bytes| {
            if self.read_until.is_some_and(|until| Instant::now() >= until) {
                self.unread += 1;
                return ControlFlow::Continue(());
            }
            match decode(bytes, self.clock) {
                Ok(event) => {
                    if event.dns().is_some_and(|d| d.malformed) {
                        self.totals.not_dns += 1;
                    }
                    self.parts.enricher.push(event, Instant::now())
                }
                Err(e) => {
                    self.totals.undecodable += 1;
                    if self.options.verbose {
                        eprintln!("udptrace: warning: undecodable record: {e}");
                    }
                }
            }
            self.pass_on()
        })
    }

    /// Hands on the events the enricher has completed.
    fn pass_on(&mut self) -> ControlFlow<Stop> {
        while let Some(event) = self.parts.enricher.next_complete() {
            self.event(event)?;
        }
        ControlFlow::Continue(())
    }

    /// Filters, counts and hands one event to every sink.
    fn event(&mut self, event: Event) -> ControlFlow<Stop> {
        if !self.parts.filter.matches(&event) {
            self.filtered_here += event.count();
            return ControlFlow::Continue(());
        }
        self.totals.events += event.count();
        self.each_sink(|sink| sink.event(&event))?;
        if self.options.count.is_some_and(|n| self.totals.events >= n) {
            return ControlFlow::Break(Stop::Count);
        }
        ControlFlow::Continue(())
    }

    fn each_sink(&mut self, mut call: impl FnMut(&mut dyn Sink) -> std::io::Result<()>) -> ControlFlow<Stop> {
        for sink in &mut self.sinks {
            if call(sink.as_mut()).is_err() {
                return ControlFlow::Break(Stop::OutputClosed);
            }
        }
        ControlFlow::Continue(())
    }

    fn flush(&mut self) -> ControlFlow<Stop> {
        self.each_sink(|sink| sink.flush())
    }

    /// Once a second: what the programs logged and the kernel lost, and the rate-limit counters where no
    /// hook sees the limits.
    fn housekeeping(&mut self) -> ControlFlow<Stop> {
        if let Some(logs) = &mut self.parts.logs {
            logs.flush();
        }
        self.parts.enricher.housekeeping();
        if let Some(conntrack) = &mut self.parts.conntrack {
            conntrack.poll();
        }
        if let Some(helper) = &self.options.helper {
            helper.check();
            if (self.options.require_helper || helper.essential())
                && let Some(why) = helper.gone()
            {
                return ControlFlow::Break(Stop::HelperGone(why));
            }
        }
        self.read_lost()?;
        self.read_counters()?;
        self.read_tally()
    }

    /// Hands on what the programs counted since the last read. After a read that failed, the programs are
    /// told to hand records over; what the other generation holds is still handed on. Where they cannot be
    /// told, they go on counting, and each read tells them again ([`Tally::read`]); the session's end reads
    /// what they counted ([`Tally::finish`]).
    fn read_tally(&mut self) -> ControlFlow<Stop> {
        self.read_drops()?;
        let Some(tally) = &mut self.parts.tally else { return ControlFlow::Continue(()) };
        let read = tally.read(self.clock).unwrap_or_else(|e| {
            let (read, switched) = tally.stop(self.clock);
            eprintln!(
                "udptrace: warning: {}; {}",
                crate::errors::one_line(&e.context("reading the counts kept in the kernel")),
                after_failed_read(switched.as_ref().err())
            );
            read
        });
        self.counted(read)
    }

    /// The programs hand records over again, and what they counted is handed on.
    fn stop_tally(&mut self) -> ControlFlow<Stop> {
        // A generation of drop counts whose read failed is read first, then the current one.
        if self.parts.drops.as_ref().is_some_and(DropCounts::behind) {
            self.read_drops()?;
        }
        self.read_drops()?;
        let Some(tally) = &mut self.parts.tally else { return ControlFlow::Continue(()) };
        let read = tally.finish(self.clock);
        self.counted(read)
    }

    /// Hands on the drops counted since the last read. A failed read is said, and the drops the program
    /// counts meanwhile wait for the next.
    fn read_drops(&mut self) -> ControlFlow<Stop> {
        let Some(drops) = &mut self.parts.drops else { return ControlFlow::Continue(()) };
        let read = drops.read(self.clock).unwrap_or_else(|e| {
            eprintln!(
                "udptrace: warning: {}",
                crate::errors::one_line(&e.context("reading the drops counted in the kernel"))
            );
            Read::default()
        });
        self.counted(read)
    }

    /// Hands on what a read of the kernel's counts gave, and counts the records that did not decode.
    fn counted(&mut self, read: Read) -> ControlFlow<Stop> {
        for (e, count) in read.undecodable {
            self.totals.undecodable += count;
            if self.options.verbose {
                eprintln!("udptrace: warning: undecodable record, counted {count} times in the kernel: {e}");
            }
        }
        let now = Instant::now();
        for event in read.events {
            self.parts.enricher.push(event, now);
        }
        self.pass_on()
    }

    /// Emits a `lost` event for what the kernel dropped since the last read: records that did not fit, and
    /// errors whose programs the kernel skipped; and, at the end, records the final drain left unread.
    fn read_lost(&mut self) -> ControlFlow<Stop> {
        let lost = self.stat(stat::LOST) + self.parts.misses.total() + self.unread;
        self.totals.unreadable = self.stat(stat::READ_ERROR);
        let not_recorded = self.stat(stat::OWNER_NOT_RECORDED);
        if not_recorded > 0 && self.totals.owners_not_recorded == 0 {
            eprintln!(
                "udptrace: warning: the owner records are full (--owner-records): more UDP sockets created or \
                 connected since udptrace started are open, and the events of those beyond name the process \
                 holding the socket in /proc instead (the closing line counts them)"
            );
        }
        self.totals.owners_not_recorded = not_recorded;
        let new = lost.saturating_sub(self.totals.lost);
        if new == 0 {
            return ControlFlow::Continue(());
        }
        self.totals.lost = lost;
        // Behind the events that wait for an owner, so that the output keeps its order.
        self.parts.enricher.push(Event::Lost(Lost { time: std::time::SystemTime::now(), count: new }), Instant::now());
        self.pass_on()
    }

    /// Emits an `icmp_suppressed` event for each rate-limit counter that rose.
    fn read_counters(&mut self) -> ControlFlow<Stop> {
        let events = self.parts.counters.as_mut().map(counters::Watcher::poll).unwrap_or_default();
        for event in events {
            self.parts.enricher.push(event, Instant::now());
        }
        self.pass_on()
    }

    /// Sums a per-CPU counter.
    fn stat(&self, index: u32) -> u64 {
        self.parts.stats.get(index).map(|values| values.iter().sum()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_line_names_every_count() {
        let totals = Totals {
            events: 12,
            filtered: 4,
            lost: 3,
            unreadable: 1,
            undecodable: 0,
            owners_not_recorded: 2,
            not_dns: 0,
            not_stopped: false,
        };
        assert_eq!(
            totals.closing_line(),
            "udptrace: 12 events seen, 4 filtered out, 3 lost, 1 unreadable, 0 undecodable, 2 owners not recorded"
        );
        let not_stopped = Totals { not_stopped: true, ..totals };
        assert!(not_stopped.closing_line().starts_with(&totals.closing_line()));
        assert!(
            not_stopped
                .closing_line()
                .ends_with(", events after the last read not counted (the programs could not be stopped)")
        );
    }

    /// Stopped programs hand over what the buffer holds, read to its end within the drain's time, then
    /// counted; unstopped ones go on, and what they hand over past the shown batches is counted, up to a bound.
    #[test]
    fn the_final_drain_reads_then_counts_then_ends() {
        assert_eq!(final_batch(0, true, false), Some(Take::Read));
        assert_eq!(final_batch(FINAL_BATCHES - 1, true, false), Some(Take::Read));
        assert_eq!(final_batch(3, true, true), Some(Take::Count));
        assert_eq!(final_batch(FINAL_BATCHES, true, false), None);
        assert_eq!(final_batch(FINAL_BATCHES_SHOWN_UNSTOPPED - 1, false, false), Some(Take::Read));
        assert_eq!(final_batch(FINAL_BATCHES_SHOWN_UNSTOPPED, false, false), Some(Take::Count));
        assert_eq!(final_batch(FINAL_BATCHES, false, true), None);
    }

    /// The warning after a failed read says records are handed over only when the programs were told so.
    #[test]
    fn a_failed_read_says_whether_the_programs_still_count() {
        assert_eq!(after_failed_read(None), "events are handed over one by one from now on");
        let still = after_failed_read(Some(&anyhow::anyhow!("switching the kernel's counts: EPERM")));
        assert!(still.contains("go on counting in the kernel"), "{still}");
        assert!(!still.contains("from now on"), "{still}");
    }
}
