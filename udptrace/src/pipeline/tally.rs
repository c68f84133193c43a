//! Counts kept in the kernel (`udptrace_common::tally`), for sessions that only count (`--summary`,
//! `--quiet` with or without `--metrics`): the programs count each distinct record in a per-CPU hash map
//! instead of handing it over, and this reads the counts once a period as events that stand for many.
//!
//! The counts come in two generations, each a per-CPU hash map and each CPU's pending slot (its last key
//! and count, stamped with the epoch they were counted in). To read one, the programs are switched to the
//! next epoch, which counts in the other, and then user space waits for an RCU grace period: `membarrier(MEMBARRIER_CMD_GLOBAL)` is `synchronize_rcu()`
//! (`kernel/sched/membarrier.c`, the same in 5.10 and 7.3), and every program of ours runs under
//! `rcu_read_lock()` (the trampolines of `kernel/bpf/trampoline.c`, `trace_call_bpf()` for kprobes,
//! `__bpf_trace_run()` for tracepoints). Once it returns, none can still be counting in the old
//! generation, which is then read and emptied without a race. With one CPU online the call returns at once:
//! the programs that count run in softirq or with bottom halves disabled, so none is half-way while this
//! runs, except on a fully preemptible kernel, where the fexit of an `__icmp_send` a process makes (a REJECT
//! in the OUTPUT chain) may be preempted while it counts, and one count may then be lost. Under `nohz_full` the kernel refuses the call, and records are handed over.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use aya::Ebpf;
use udptrace_common::{
    DropCount, IcmpSent as RawIcmpSent, Pending, SocketError as RawSocketError, UdpDropped as RawUdpDropped, drops,
    names, tally,
};

use crate::{
    events::{
        Event, decode,
        record::{Clock, DecodeError, boot_time_ns},
    },
    kernel::maps::{self, Array, PerCpuArray, PerCpuHashMap, RawMap, bytes_of},
};

/// What a read of the kernel's counts gives.
#[derive(Debug, Default)]
pub struct Read {
    /// One event per distinct record, carrying its count.
    pub events: Vec<Event>,
    /// The counted records that did not decode, each with how many errors it counted: the closing line's
    /// `undecodable` counts them as it would have counted the records one by one.
    pub undecodable: Vec<(DecodeError, u64)>,
}

impl Read {
    fn extend(&mut self, other: Read) {
        self.events.extend(other.events);
        self.undecodable.extend(other.undecodable);
    }
}

/// `include/uapi/linux/membarrier.h`.
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1 << 0;

pub struct Tally {
    switch: Array<u32>,
    socket_errors: [PerCpuHashMap<RawSocketError, u64>; 2],
    icmp_sent: [PerCpuHashMap<RawIcmpSent, u64>; 2],
    icmp_sent_pending: PerCpuArray<Pending<RawIcmpSent>>,
    /// The epoch the programs count in (from 2: generation 0 first); `None` once they hand records over again.
    current: Option<u32>,
    /// An epoch switched away from whose read failed: read at [`Tally::stop`], once no program counts.
    unread: Option<u32>,
    /// [`Tally::stop`] could not switch the programs to handing records over: they still count, and each
    /// read tries again.
    stopping: bool,
    /// Per generation, records a failed removal left in the map, with the counts already handed on.
    socket_errors_left: [Vec<Counted<RawSocketError>>; 2],
    icmp_sent_left: [Vec<Counted<RawIcmpSent>>; 2],
    /// When the counts were last read.
    pub last_read: Instant,
}

impl Tally {
    /// Takes the maps from `ebpf` and switches the programs to counting; once it did, a clone of each map
    /// goes to `kept`. An error leaves them handing records over, which is always right, only dearer.
    pub fn start(ebpf: &mut Ebpf, kept: &mut Vec<RawMap>) -> Result<Self> {
        grace_period_available()?;
        let mut taken = Vec::new();
        let switch = maps::take(ebpf, names::TALLY, &mut taken)?;
        let socket_errors = [
            maps::take(ebpf, names::SOCKET_ERROR_TALLIES[0], &mut taken)?,
            maps::take(ebpf, names::SOCKET_ERROR_TALLIES[1], &mut taken)?,
        ];
        let icmp_sent = [
            maps::take(ebpf, names::ICMP_SENT_TALLIES[0], &mut taken)?,
            maps::take(ebpf, names::ICMP_SENT_TALLIES[1], &mut taken)?,
        ];
        let icmp_sent_pending = maps::take(ebpf, names::ICMP_SENT_PENDING, &mut taken)?;
        let mut this = Self {
            switch,
            socket_errors,
            icmp_sent,
            icmp_sent_pending,
            current: None,
            unread: None,
            stopping: false,
            socket_errors_left: Default::default(),
            icmp_sent_left: Default::default(),
            last_read: Instant::now(),
        };
        this.switch_to(Some(2))?;
        kept.append(&mut taken);
        Ok(this)
    }

    /// What the programs counted since the last read: one event per distinct record, carrying its count.
    /// A read that fails leaves the counts where they are, for [`Tally::stop`]. After a stop that could not
    /// switch the programs, each read tries the switch again, and reads nothing until it works.
    pub fn read(&mut self, clock: Clock) -> Result<Read> {
        if self.stopping {
            return Ok(self.stop(clock).0);
        }
        let Some(old) = self.current else { return Ok(Read::default()) };
        self.switch_to(Some(old + 1))?;
        self.unread = Some(old);
        let read = self.collect(old, clock)?;
        self.unread = None;
        Ok(read)
    }

    /// The programs hand records over again; what they counted until now is returned: the current epoch's
    /// counts, and those of an epoch whose read failed (the session stops counting in the kernel after
    /// one). With no program counting, neither generation's pending slots can be taken over any more.
    ///
    /// The second value says whether the programs were switched. A failed switch leaves them counting: the
    /// epoch whose read failed is read all the same (no program counts there), the current one is left to
    /// the next [`Tally::read`], which tries again, or to [`Tally::finish`].
    pub fn stop(&mut self, clock: Clock) -> (Read, Result<()>) {
        let Some(current) = self.current else { return (Read::default(), Ok(())) };
        let switched = self.switch_to(None);
        self.stopping = switched.is_err();
        (self.read_stopped(current, switched.is_ok(), clock), switched)
    }

    /// The session ends: as [`Tally::stop`], and where the programs cannot be switched, their current
    /// generation is read while they may still count in it (they are detached right after): a count added
    /// during the read may be missed, and that is said.
    pub fn finish(&mut self, clock: Clock) -> Read {
        let Some(current) = self.current else { return Read::default() };
        if let Err(e) = self.switch_to(None) {
            eprintln!(
                "udptrace: warning: {}: the counts are read while the programs may still count, and errors counted \
                 during the read may be missing",
                crate::errors::one_line(&e)
            );
        }
        self.stopping = false;
        let read = self.read_stopped(current, true, clock);
        self.current = None;
        read
    }

    /// Reads what [`stopped`] says is to be read once the programs were told to hand records over (or not).
    fn read_stopped(&mut self, current: u32, switched: bool, clock: Clock) -> Read {
        // Each generation on its own: what one read gives is kept whatever becomes of the other.
        let mut read = Read::default();
        for (epoch, which) in stopped(self.unread.take(), current, switched) {
            match self.collect(epoch, clock) {
                Ok(one) => read.extend(one),
                Err(e) => eprintln!(
                    "udptrace: warning: {}: the errors counted then are not shown",
                    crate::errors::one_line(&e.context(format!("reading the kernel's counts ({which})")))
                ),
            }
        }
        read
    }

    fn switch_to(&mut self, epoch: Option<u32>) -> Result<()> {
        self.switch.set(0, epoch.unwrap_or(tally::STREAM)).context("switching the kernel's counts")?;
        self.current = epoch;
        Ok(())
    }

    /// Waits until no program counts in `epoch` any more, then reads its generation and empties it.
    fn collect(&mut self, epoch: u32, clock: Clock) -> Result<Read> {
        grace_period()?;
        self.last_read = Instant::now();
        let generation = tally::generation(epoch) as usize;
        // Counted records carry no time: they are stamped with the time they were read.
        let now = boot_time_ns();
        // Everything is read before anything is removed: a read that fails leaves the generation as it was.
        // Socket errors are counted in the map alone (the programs' `Tallied::pending`).
        let socket_errors = counts(&self.socket_errors[generation])?;
        let icmp_sent = counts(&self.icmp_sent[generation])?;
        let icmp_sent_pending = pending(&self.icmp_sent_pending, &[generation as u32], epoch)?;
        // What was read is handed on even if a removal fails (see `settle`).
        let left = &mut self.socket_errors_left[generation];
        let (socket_errors, removed) = settle(socket_errors, left, |key| self.socket_errors[generation].remove(key));
        say_left(removed);
        let left = &mut self.icmp_sent_left[generation];
        let (mut icmp_sent, removed) = settle(icmp_sent, left, |key| self.icmp_sent[generation].remove(key));
        say_left(removed);
        for counted in icmp_sent_pending {
            merge(&mut icmp_sent, counted);
        }
        let mut read = decoded(socket_errors, clock, |r| r.header.time_ns = now);
        read.extend(decoded(icmp_sent, clock, |r| r.header.time_ns = now));
        Ok(read)
    }
}

/// The epochs a stop reads, each with how a failure names it: the one whose read failed (no program counts
/// there), and the current one once the programs were switched to handing records over: while they count
/// there, reading it would race with them, and its pending slots, read again later, would be counted twice.
fn stopped(unread: Option<u32>, current: u32, switched: bool) -> Vec<(u32, &'static str)> {
    let unread = unread.map(|u| (u, "a second's, read again"));
    unread.into_iter().chain(switched.then_some((current, "the last"))).collect()
}

/// The drops the program counted (`udptrace_common::drops`): read every second whatever the session shows,
/// for the program counts a flow's drops after the first of each second whether records are wanted or not.
pub struct DropCounts {
    control: Array<u32>,
    counts: [PerCpuHashMap<RawUdpDropped, DropCount>; 2],
    pending: PerCpuArray<Pending<RawUdpDropped>>,
    /// The epoch the program counts in, from 0 (the program's own start).
    current: u32,
    /// An epoch switched away from whose read failed. It is read before the program switches again: in
    /// the epoch after next, the program would take over that generation's pending slots.
    unread: Option<u32>,
    /// Per generation, drops a failed removal left in the map, with the counts already handed on.
    left: [Vec<Counted<RawUdpDropped>>; 2],
}

/// The drop program's nesting levels, each with a pending slot per generation (`udp_dropped.rs`, `NESTING`).
const DROP_LEVELS: u32 = 2;

impl DropCounts {
    /// Takes the maps from `ebpf`, and tells the program whether it reports IPv6 port unreachables
    /// (`at_drop`: the families whose ICMP errors no hook sees, `udptrace_common::drops::AT_DROP_*`); once
    /// it did, a clone of each map goes to `kept`.
    pub fn start(ebpf: &mut Ebpf, at_drop: u32, kept: &mut Vec<RawMap>) -> Result<Self> {
        grace_period_available()?;
        let mut taken = Vec::new();
        let control: Array<u32> = maps::take(ebpf, names::DROP_CONTROL, &mut taken)?;
        let counts = [
            maps::take(ebpf, names::DROP_TALLIES[0], &mut taken)?,
            maps::take(ebpf, names::DROP_TALLIES[1], &mut taken)?,
        ];
        let pending = maps::take(ebpf, names::DROP_PENDING, &mut taken)?;
        control.set(drops::ICMP_AT_DROP, at_drop).context("configuring the drop program")?;
        kept.append(&mut taken);
        Ok(Self { control, counts, pending, current: 0, unread: None, left: Default::default() })
    }

    /// The pending slots of `epoch`'s generation.
    fn slots(epoch: u32) -> Vec<u32> {
        (0..DROP_LEVELS).map(|level| level * 2 + tally::generation(epoch)).collect()
    }

    /// What the program counted since the last read, one event per flow with its count; nothing to do (no
    /// grace period waited for) when it counted nothing. After a read that failed, the next reads that
    /// generation only, and [`DropCounts::behind`] says so.
    pub fn read(&mut self, clock: Clock) -> Result<Read> {
        if let Some(unread) = self.unread {
            let read = self.collect(unread, clock)?;
            self.unread = None;
            return Ok(read);
        }
        let old = self.current;
        let generation = tally::generation(old) as usize;
        // A glance while the program may still count: anything at all means a switch.
        if self.counts[generation].keys().is_ok_and(|keys| keys.is_empty())
            && pending(&self.pending, &Self::slots(old), old)?.is_empty()
        {
            return Ok(Read::default());
        }
        self.control.set(drops::EPOCH, old.wrapping_add(1)).context("switching the drop counts")?;
        self.current = old.wrapping_add(1);
        self.unread = Some(old);
        let read = self.collect(old, clock)?;
        self.unread = None;
        Ok(read)
    }

    /// Whether a generation whose read failed waits to be read: the next [`DropCounts::read`] reads it,
    /// and the one after that the current generation.
    pub fn behind(&self) -> bool {
        self.unread.is_some()
    }

    /// Waits until the program no longer counts in `epoch`, then reads its generation and empties it;
    /// everything is read before anything is removed.
    fn collect(&mut self, epoch: u32, clock: Clock) -> Result<Read> {
        grace_period()?;
        let now = boot_time_ns();
        let generation = tally::generation(epoch) as usize;
        let map = &self.counts[generation];
        let keys = map.keys().context("listing the drop counts")?;
        let mut read = Vec::with_capacity(keys.len());
        for key in keys {
            let values = map.get(&key).context("reading a drop count")?;
            let count = values.iter().map(|v| v.count).sum::<u64>();
            let queued = values.iter().map(|v| v.queued).max().unwrap_or(0);
            read.push((key, count, queued));
        }
        let slots = pending(&self.pending, &Self::slots(epoch), epoch)?;
        let (mut read, removed) = settle(read, &mut self.left[generation], |key| map.remove(key));
        say_left(removed);
        for counted in slots {
            merge(&mut read, counted);
        }
        Ok(decoded(read, clock, |key| key.header.time_ns = now))
    }
}

/// A key read, its count summed over the CPUs, and the largest queue seen (drops; 0 for the others).
type Counted<K> = (K, u64, u32);

/// Adds `counted` to `read`, into the entry of the same key if there is one (a pending slot's key, found
/// among a map's: a few slots per CPU against at most a map's entries).
fn merge<K: aya::Pod>(read: &mut Vec<Counted<K>>, counted: Counted<K>) {
    match read.iter_mut().find(|(key, ..)| bytes_of(key) == bytes_of(&counted.0)) {
        Some(entry) => {
            entry.1 += counted.1;
            entry.2 = entry.2.max(counted.2);
        }
        None => read.push(counted),
    }
}

/// The counts the pending slots `indexes` hold for `epoch`, on every CPU, merged by key.
fn pending<K: aya::Pod>(slots: &PerCpuArray<Pending<K>>, indexes: &[u32], epoch: u32) -> Result<Vec<Counted<K>>> {
    let mut read = Vec::new();
    for &index in indexes {
        for slot in slots.get(index).context("reading the kernel's pending counts")? {
            if slot.epoch == epoch && slot.count > 0 {
                merge(&mut read, (slot.record, slot.count, slot.queued));
            }
        }
    }
    Ok(read)
}

/// Every record of `map` with its count summed over the CPUs.
fn counts<K: aya::Pod>(map: &PerCpuHashMap<K, u64>) -> Result<Vec<Counted<K>>> {
    let keys = map.keys().context("listing the kernel's counts")?;
    let mut read = Vec::with_capacity(keys.len());
    for key in keys {
        read.push((key, map.get(&key).context("reading a kernel count")?.iter().sum::<u64>(), 0));
    }
    Ok(read)
}

/// What to hand on of the records `read` from a map, which `remove` then removes from it: every count read,
/// less what an earlier read handed on already of the records its removal left in the map (`left`).
/// A record that cannot be removed stays counted there, and goes into `left` with its count as read, for
/// the next read of that generation to take off; every record is tried. Reading everything, removing, and
/// then handing on only what was removed would lose the counts removed before a removal that failed.
/// The second value: how many records stay in the map, and the first removal's error.
fn settle<K: aya::Pod, E: std::error::Error + Send + Sync + 'static>(
    read: Vec<Counted<K>>,
    left: &mut Vec<Counted<K>>,
    mut remove: impl FnMut(&K) -> Result<(), E>,
) -> (Vec<Counted<K>>, Option<(usize, anyhow::Error)>) {
    let mut new = read.clone();
    for (key, handed_on, _) in left.drain(..) {
        if let Some(entry) = new.iter_mut().find(|(k, ..)| bytes_of(k) == bytes_of(&key)) {
            entry.1 = entry.1.saturating_sub(handed_on);
        }
    }
    let mut failed = None;
    for counted in read {
        if let Err(e) = remove(&counted.0) {
            left.push(counted);
            failed.get_or_insert_with(|| anyhow::Error::new(e).context("emptying the kernel's counts"));
        }
    }
    (new, failed.map(|e| (left.len(), e)))
}

/// Says that records stay in the kernel's map after a failed removal (`settle`).
fn say_left(left: Option<(usize, anyhow::Error)>) {
    if let Some((records, e)) = left {
        eprintln!(
            "udptrace: warning: {}: {records} counted records stay in the kernel's map; their counts are shown, \
             and the next read shows only what they count after",
            crate::errors::one_line(&e)
        );
    }
}

/// The counted keys as events, each stamped by `stamp` (counted records carry no time). A record the
/// programs wrote decodes as it would from the buffer; one that does not is counted among the undecodable,
/// for as many errors as it counted, as the buffer's path counts each record it cannot decode.
fn decoded<K: aya::Pod + QueueLength>(read: Vec<Counted<K>>, clock: Clock, stamp: impl Fn(&mut K)) -> Read {
    let mut out = Read { events: Vec::with_capacity(read.len()), undecodable: Vec::new() };
    for (mut key, count, queued) in read {
        if count == 0 {
            continue;
        }
        stamp(&mut key);
        key.set_queued(queued);
        match decode(bytes_of(&key), clock) {
            Ok(event) => out.events.push(counted(event, count)),
            Err(e) => out.undecodable.push((e, count)),
        }
    }
    out
}

/// Where a counted record keeps the largest queue its count saw.
trait QueueLength {
    fn set_queued(&mut self, _queued: u32) {}
}

impl QueueLength for RawSocketError {}
impl QueueLength for RawIcmpSent {}
impl QueueLength for RawUdpDropped {
    fn set_queued(&mut self, queued: u32) {
        self.queued = queued;
    }
}

/// `event`, decoded from a record the programs counted, standing for `count` errors: the kinds whose
/// records they count (`RawSocketError`, `RawIcmpSent`, `RawUdpDropped` above); any other is as it was.
fn counted(mut event: Event, count: u64) -> Event {
    match &mut event {
        Event::SocketError(e) => e.count = count,
        Event::IcmpSent(e) => e.count = count,
        Event::IcmpSuppressed(e) => e.count = count,
        Event::UdpDropped(e) => e.count = count,
        _ => {}
    }
    event
}

fn membarrier(command: libc::c_int) -> libc::c_long {
    // SAFETY: membarrier takes two integers and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, command, 0, 0) }
}

/// The kernel offers the grace period `collect` waits for: not under `nohz_full`, where
/// `MEMBARRIER_CMD_GLOBAL` is refused.
fn grace_period_available() -> Result<()> {
    let commands = membarrier(MEMBARRIER_CMD_QUERY);
    if commands < 0 {
        bail!("membarrier: {}", std::io::Error::last_os_error());
    }
    if commands & libc::c_long::from(MEMBARRIER_CMD_GLOBAL) == 0 {
        bail!("membarrier offers no global barrier here (nohz_full?)");
    }
    Ok(())
}

fn grace_period() -> Result<()> {
    if membarrier(MEMBARRIER_CMD_GLOBAL) < 0 {
        bail!("waiting for an RCU grace period (membarrier): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Lost, samples};

    #[test]
    fn a_counted_event_stands_for_its_count() {
        let event = counted(Event::SocketError(samples::socket_error()), 4000);
        assert_eq!(event.count(), 4000);
        let event = counted(Event::IcmpSuppressed(samples::host_limited(samples::icmp_sent())), 7);
        assert_eq!(event.count(), 7);
        assert_eq!(counted(Event::Lost(Lost { time: std::time::UNIX_EPOCH, count: 3 }), 9).count(), 0);
    }

    fn socket_error(family: u16, port: u16) -> RawSocketError {
        let mut raw = RawSocketError { local_port: port, ..Default::default() };
        raw.header.kind = udptrace_common::kind::SOCKET_ERROR;
        raw.header.probe = udptrace_common::probe::TRACEPOINT;
        raw.header.family = family as u8;
        raw
    }

    /// A counted record that does not decode is counted undecodable for every error it counted, as the
    /// buffer's path would have counted each record.
    #[test]
    fn a_counted_record_that_does_not_decode_is_counted() {
        let good = socket_error(libc::AF_INET as u16, 1);
        let bad = socket_error(7, 2);
        let read = decoded(vec![(good, 40, 0), (bad, 3, 0), (bad, 0, 0)], Clock::now(), |_| {});
        assert_eq!(read.events.len(), 1);
        assert_eq!(read.events[0].count(), 40);
        assert_eq!(read.undecodable, vec![(DecodeError::UnknownFamily(7), 3)]);
    }

    /// A removal that fails part-way: what was read is handed on all the same, and what stays in the map is
    /// not handed on twice.
    #[test]
    fn counts_read_are_handed_on_when_a_removal_fails() {
        let (a, b, c) = (socket_error(2, 1), socket_error(2, 2), socket_error(2, 3));
        let mut left = Vec::new();
        let fails_on_b = |key: &RawSocketError| {
            if key.local_port == 2 { Err(std::io::Error::other("no memory")) } else { Ok(()) }
        };
        let (read, failed) = settle(vec![(a, 5, 0), (b, 7, 0), (c, 9, 0)], &mut left, fails_on_b);
        assert_eq!(read.iter().map(|r| r.1).collect::<Vec<_>>(), [5, 7, 9]);
        let (records, e) = failed.expect("the failure");
        assert_eq!(records, 1);
        assert!(e.to_string().contains("emptying"), "{e}");
        // The next read of that generation finds b at 7 + 4 and a anew: b's 7 were handed on already.
        let (read, failed) = settle(vec![(b, 11, 0), (a, 2, 0)], &mut left, |_| Ok::<(), std::io::Error>(()));
        assert!(failed.is_none());
        assert_eq!(read.iter().map(|r| (r.0.local_port, r.1)).collect::<Vec<_>>(), [(2, 4), (1, 2)]);
        assert!(left.is_empty());
    }

    /// A stop reads the generation whose read failed whatever happens, the current one only once the
    /// programs no longer count there.
    #[test]
    fn a_stop_reads_the_current_counts_only_once_the_programs_left_them() {
        assert_eq!(stopped(Some(4), 5, true), [(4, "a second's, read again"), (5, "the last")]);
        assert_eq!(stopped(None, 5, true), [(5, "the last")]);
        assert_eq!(stopped(Some(4), 5, false), [(4, "a second's, read again")]);
        assert!(stopped(None, 5, false).is_empty());
    }
}
