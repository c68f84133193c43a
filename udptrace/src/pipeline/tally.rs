//! Counts kept in the kernel (`udptrace_common::tally`), for sessions that only count (`--summary`,
//! `--quiet` with or without `--metrics`): the programs count each distinct record in a per-CPU hash map
//! instead of handing it over, and this reads the counts once a period as events that stand for many.
//!
//! The maps come in two generations. To read one, the programs are switched to the other, and then user
//! space waits for an RCU grace period: `membarrier(MEMBARRIER_CMD_GLOBAL)` is `synchronize_rcu()`
//! (`kernel/sched/membarrier.c`, the same in 5.10 and 7.3), and every program of ours runs under
//! `rcu_read_lock()` (the trampolines of `kernel/bpf/trampoline.c`, `trace_call_bpf()` for kprobes,
//! `__bpf_trace_run()` for raw tracepoints). Once it returns, none can still be counting in the old
//! generation, which is then read and emptied without a race. With one CPU online the call returns at once:
//! the programs that count run in softirq or with bottom halves disabled, so none is half-way while this
//! runs, except on a fully preemptible kernel, where the fexit of an `__icmp_send` a process makes (a REJECT
//! in the OUTPUT chain) may be preempted while it counts, and one count may then be lost. Under `nohz_full` the kernel refuses the call, and records are handed over.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuHashMap},
};
use udptrace_common::{
    DropCount, IcmpSent as RawIcmpSent, SocketError as RawSocketError, UdpDropped as RawUdpDropped, drops, names, tally,
};

use super::decode::{Clock, boot_time_ns, decode};
use crate::domain::Event;

/// `include/uapi/linux/membarrier.h`.
const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL: libc::c_int = 1 << 0;

pub struct Tally {
    switch: Array<MapData, u32>,
    socket_errors: [PerCpuHashMap<MapData, RawSocketError, u64>; 2],
    icmp_sent: [PerCpuHashMap<MapData, RawIcmpSent, u64>; 2],
    /// The generation the programs count in, 0 or 1; `None` once they hand records over again.
    current: Option<usize>,
    /// When the counts were last read.
    pub last_read: Instant,
}

impl Tally {
    /// Takes the maps from `ebpf` and switches the programs to counting. An error leaves them handing
    /// records over, which is always right, only dearer.
    pub fn start(ebpf: &mut Ebpf) -> Result<Self> {
        grace_period_available()?;
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("the {name} map is missing"));
        let switch = Array::try_from(take(names::TALLY)?)?;
        let socket_errors = [
            PerCpuHashMap::try_from(take(names::SOCKET_ERROR_TALLIES[0])?)?,
            PerCpuHashMap::try_from(take(names::SOCKET_ERROR_TALLIES[1])?)?,
        ];
        let icmp_sent = [
            PerCpuHashMap::try_from(take(names::ICMP_SENT_TALLIES[0])?)?,
            PerCpuHashMap::try_from(take(names::ICMP_SENT_TALLIES[1])?)?,
        ];
        let mut this = Self { switch, socket_errors, icmp_sent, current: None, last_read: Instant::now() };
        this.switch_to(Some(0))?;
        Ok(this)
    }

    /// What the programs counted since the last read: one event per distinct record, carrying its count.
    pub fn read(&mut self, clock: Clock) -> Result<Vec<Event>> {
        let Some(old) = self.current else { return Ok(Vec::new()) };
        self.switch_to(Some(1 - old))?;
        self.collect(old, clock)
    }

    /// The programs hand records over again; what they counted until now is returned.
    pub fn stop(&mut self, clock: Clock) -> Result<Vec<Event>> {
        let Some(old) = self.current else { return Ok(Vec::new()) };
        self.switch_to(None)?;
        self.collect(old, clock)
    }

    fn switch_to(&mut self, generation: Option<usize>) -> Result<()> {
        let value = match generation {
            None => tally::STREAM,
            Some(0) => tally::GENERATION_0,
            Some(_) => tally::GENERATION_1,
        };
        self.switch.set(0, value, 0).context("switching the kernel's counts")?;
        self.current = generation;
        Ok(())
    }

    /// Waits until no program counts in `generation` any more, then reads and empties it.
    fn collect(&mut self, generation: usize, clock: Clock) -> Result<Vec<Event>> {
        grace_period()?;
        self.last_read = Instant::now();
        // Counted records carry no time: they are stamped with the time they were read.
        let now = boot_time_ns();
        let mut events = Vec::new();
        events.extend(drain(&mut self.socket_errors[generation], clock, |mut r| {
            r.header.time_ns = now;
            r
        })?);
        events.extend(drain(&mut self.icmp_sent[generation], clock, |mut r| {
            r.header.time_ns = now;
            r
        })?);
        Ok(events)
    }
}

/// The drops the program counted (`udptrace_common::drops`): read every second whatever the session shows,
/// for the program counts a flow's drops after the first of each second whether records are wanted or not.
pub struct DropCounts {
    control: Array<MapData, u32>,
    counts: [PerCpuHashMap<MapData, RawUdpDropped, DropCount>; 2],
    /// The generation the program counts in.
    current: usize,
}

impl DropCounts {
    /// Takes the maps from `ebpf`, and tells the program whether it reports IPv6 port unreachables
    /// (`at_drop`: the families whose ICMP errors no hook sees, `udptrace_common::drops::AT_DROP_*`).
    pub fn start(ebpf: &mut Ebpf, at_drop: u32) -> Result<Self> {
        grace_period_available()?;
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("the {name} map is missing"));
        let mut control = Array::try_from(take(names::DROP_CONTROL)?)?;
        let counts = [
            PerCpuHashMap::try_from(take(names::DROP_TALLIES[0])?)?,
            PerCpuHashMap::try_from(take(names::DROP_TALLIES[1])?)?,
        ];
        control.set(drops::GENERATION, 0, 0).context("setting the drop counts' generation")?;
        control.set(drops::ICMP_AT_DROP, at_drop, 0).context("configuring the drop program")?;
        Ok(Self { control, counts, current: 0 })
    }

    /// What the program counted since the last read, one event per flow with its count; nothing to do (no
    /// grace period waited for) when it counted nothing.
    pub fn read(&mut self, clock: Clock) -> Result<Vec<Event>> {
        let old = self.current;
        if self.counts[old].keys().next().is_none() {
            return Ok(Vec::new());
        }
        self.current = 1 - old;
        self.control.set(drops::GENERATION, self.current as u32, 0).context("switching the drop counts")?;
        grace_period()?;
        let now = boot_time_ns();
        let map = &mut self.counts[old];
        let keys: Vec<RawUdpDropped> = map.keys().collect::<Result<_, _>>().context("listing the drop counts")?;
        let mut read = Vec::with_capacity(keys.len());
        for key in keys {
            let values = map.get(&key, 0).context("reading a drop count")?;
            let count = values.iter().map(|v| v.count).sum::<u64>();
            let queued = values.iter().map(|v| v.queued).max().unwrap_or(0);
            read.push((key, count, queued));
        }
        for (key, ..) in &read {
            map.remove(key).context("emptying the drop counts")?;
        }
        let mut events = Vec::with_capacity(read.len());
        for (mut key, count, queued) in read {
            // Counted drops carry no time: they are stamped with the time they were read.
            key.header.time_ns = now;
            key.queued = queued;
            if let Ok(event) = decode(bytes_of(&key), clock)
                && count > 0
            {
                events.push(counted(event, count));
            }
        }
        Ok(events)
    }
}

fn bytes_of<K: aya::Pod>(record: &K) -> &[u8] {
    // SAFETY: `K` is one of the programs' plain `#[repr(C)]` records (`aya::Pod`).
    unsafe { std::slice::from_raw_parts((record as *const K).cast::<u8>(), size_of::<K>()) }
}

/// Every record of `map` as an event with its count summed over the CPUs; the map is left empty.
fn drain<K: aya::Pod>(
    map: &mut PerCpuHashMap<MapData, K, u64>,
    clock: Clock,
    stamp: impl Fn(K) -> K,
) -> Result<Vec<Event>> {
    let keys: Vec<K> = map.keys().collect::<Result<_, _>>().context("listing the kernel's counts")?;
    // Every count is read before any is removed: a read that fails leaves the generation as it was.
    let mut read = Vec::with_capacity(keys.len());
    for key in keys {
        read.push((map.get(&key, 0).context("reading a kernel count")?.iter().sum::<u64>(), key));
    }
    for (_, key) in &read {
        map.remove(key).context("emptying the kernel's counts")?;
    }
    let mut events = Vec::with_capacity(read.len());
    for (count, key) in read {
        let record = stamp(key);
        let bytes = bytes_of(&record);
        // A record the programs wrote decodes as it would from the buffer; one that does not is skipped
        // here as it is there, and the buffer's path says so.
        if let Ok(event) = decode(bytes, clock)
            && count > 0
        {
            events.push(counted(event, count));
        }
    }
    Ok(events)
}

/// `event` standing for `count` errors.
fn counted(mut event: Event, count: u64) -> Event {
    match &mut event {
        Event::SocketError(e) => e.count = count,
        Event::IcmpSent(e) => e.count = count,
        Event::IcmpSuppressed(e) => e.count = count,
        Event::UdpDropped(e) => e.count = count,
        Event::Lost { .. } => {}
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
    use crate::domain::samples;

    #[test]
    fn a_counted_event_stands_for_its_count() {
        let event = counted(Event::SocketError(samples::socket_error()), 4000);
        assert_eq!(event.count(), 4000);
        let event = counted(Event::IcmpSuppressed(samples::host_limited(samples::icmp_sent())), 7);
        assert_eq!(event.count(), 7);
        assert_eq!(counted(Event::Lost { time: std::time::UNIX_EPOCH, count: 3 }, 9).count(), 0);
    }
}
