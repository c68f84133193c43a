//! The start of a tracing session: load and attach the programs, open the buffer, build the stages and the
//! rest of the session's parts (`Tracing::start`). `udptrace` then runs it into the sinks the command line
//! asks for, `udptrace check` into a sink of its own.

use anyhow::{Context as _, Result};
use udptrace_common::names;

use crate::{
    domain::AttachMode,
    errors::one_line,
    kernel::hooks,
    kernel::kallsyms::text_ranges,
    kernel::loader::{self, HookOutcome, KernelFacts},
    kernel::maps::{self, RawMap},
    kernel::misses::Misses,
    kernel::probes,
    pipeline::{
        counters,
        enrich::Enricher,
        filter::Filter,
        session,
        source::{Buffer, Source},
        tally::{DropCounts, Tally},
    },
};

/// What to trace and how.
pub struct Setup<'a> {
    pub filter: Filter,
    pub buffer: Buffer,
    /// `--buffer-size`: the ring buffer's bytes, or each CPU's perf buffer's; `None` for the defaults.
    pub buffer_size: Option<u32>,
    /// `--owner-records`: how many open sockets' owners the programs record.
    pub owner_records: u32,
    /// The modes to try, per hook, in order.
    pub modes: &'a [AttachMode],
    /// How the user asked for them (`any mode`, `--probe fentry`), for the error when nothing attaches.
    pub asked: String,
    pub verbose: bool,
    /// Only counts are wanted: the programs count in the kernel instead of handing over a record per error.
    pub counts_only: bool,
    /// The DNS ports (53 and `--dns-port`'s), at most `DNS_PORTS`.
    pub dns_ports: Vec<u16>,
    /// How many bytes of each event's packet the programs copy (`--pcap-snaplen` with `--pcap`); 0: none.
    pub pcap_snaplen: u16,
}

/// Programs attached, the buffer open, the session's parts ready: what `session::run` needs.
pub struct Tracing {
    pub runtime: tokio::runtime::Runtime,
    pub source: Source,
    pub parts: session::Parts,
    pub outcomes: Vec<HookOutcome>,
    /// `hook=mode` for each hook that attached.
    pub attached: Vec<String>,
    /// A line for each hook that did not: its name and why.
    pub not_traced: Vec<String>,
    /// The programs: they stay attached while this lives.
    pub programs: aya::Ebpf,
    /// The cgroup programs' links (`loader::cgroup_link`): those programs stay attached while these live.
    pub cgroup_links: Vec<std::os::fd::OwnedFd>,
    /// A clone of every map the session's parts hold: what the privileged helper answers for
    /// (`maps::go_through`), by the map's name.
    pub maps: Vec<RawMap>,
    /// A clone of `parts.misses`, for the helper too.
    pub misses: Misses,
}

impl Tracing {
    pub fn start(setup: Setup<'_>, mut facts: KernelFacts) -> Result<Self> {
        // Only tracepoint mode's socket_error program checks who reported (`NOT_ICMP_REPORTERS`), and the
        // addresses must be in its configuration before it loads. Where no hook may attach in tracepoint
        // mode, `/proc/kallsyms` waits for the first event that needs a symbol. The ranges are found line by
        // line and no table is kept: kept, the compact table (4 MiB) was resident while the kernel's BTF is
        // parsed (the start's peak 29.6 -> 34.9 MiB) and after the split for as long as udptrace traces
        // (13.9 -> 19.1 MiB in both processes where no event needs a symbol); the first event that needs one
        // reads it (through the descriptor `hold` keeps), as in the other modes.
        crate::kernel::kallsyms::hold();
        let ranges = setup
            .modes
            .contains(&AttachMode::Tracepoint)
            .then(|| text_ranges(udptrace_common::NOT_ICMP_REPORTERS).ok())
            .flatten();
        let kallsyms_shown = ranges.is_some();
        let not_icmp_reporters = ranges.unwrap_or_default();
        let config = udptrace_common::Config {
            filter: setup.filter.for_kernel(),
            buffer: setup.buffer.for_kernel(),
            _pad0: [0; 3],
            tick_ns: tick_ns(),
            not_icmp_reporters,
            reason_no_socket: facts
                .drop_reasons
                .iter()
                .find_map(|(&value, name)| (name == "no_socket").then_some(value))
                .unwrap_or(udptrace_common::drops::NO_REASON),
            kfree_skb_args: facts.kfree_skb_args,
            n_dns_ports: setup.dns_ports.len().min(udptrace_common::DNS_PORTS) as u8,
            pcap_snaplen: setup.pcap_snaplen,
            dns_ports: std::array::from_fn(|i| setup.dns_ports.get(i).copied().unwrap_or(0)),
        };
        if setup.verbose && kallsyms_shown && not_icmp_reporters.iter().any(|r| r.start == 0) {
            eprintln!(
                "udptrace: /proc/kallsyms does not show all of {:?}: in tracepoint mode, error-queue reads and \
                 aborts may be reported as socket errors",
                udptrace_common::NOT_ICMP_REPORTERS
            );
        }
        let ring_size = setup.buffer_size.filter(|_| setup.buffer == Buffer::Ring);
        let mut ebpf = loader::load_object(&facts, &config, setup.verbose, ring_size, Some(setup.owner_records))?;
        let outcomes = loader::attach_all(&mut ebpf, &facts, setup.modes);
        facts.release_aya_btf();
        loader::require_attached(&outcomes, &setup.asked)?;
        let mut attached = Vec::new();
        let mut not_traced = Vec::new();
        for outcome in &outcomes {
            match outcome.attached {
                Some(mode) => attached.push(format!("{}={mode}", outcome.hook.name)),
                None => not_traced.push(format!("{} not traced: {}", outcome.hook.name, probes::why_not(outcome))),
            }
            if setup.verbose {
                probes::print_failures(outcome);
            }
        }

        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        // The buffers register with the runtime's reactor.
        let entered = runtime.enter();
        let source = Source::open(&mut ebpf, setup.buffer, setup.buffer_size)?;
        let mut kept = Vec::new();
        let stats = maps::take(&mut ebpf, names::STATS, &mut kept)?;
        let stop_output = maps::take(&mut ebpf, names::OUTPUT_STOPPED, &mut kept).ok();
        let creators = maps::take(&mut ebpf, names::OWNERS, &mut kept).ok();
        let conntrack = maps::take(&mut ebpf, names::CONNTRACK, &mut kept).ok().map(|map| {
            let found = std::mem::replace(&mut facts.conntrack, Ok(None)).map_err(anyhow::Error::msg);
            crate::kernel::conntrack::Watch::start(map, found, setup.verbose)
        });
        // Tracepoint mode sees no rate limit: read the kernel's counters instead, from before `tracing` on.
        let icmp_send_mode = outcomes.iter().find(|o| o.hook.name == hooks::ICMP_SEND).and_then(|o| o.attached);
        let counters = (icmp_send_mode == Some(AttachMode::Tracepoint))
            .then(|| counters::Watcher::start(Box::new(counters::read_every_namespace)));
        let logs = match setup.verbose.then(|| loader::program_logs(&mut ebpf)) {
            Some(Err(e)) => {
                eprintln!("udptrace: warning: {}", one_line(&e));
                None
            }
            logs => logs.and_then(Result::ok),
        };
        let tally = match setup.counts_only.then(|| Tally::start(&mut ebpf, &mut kept)) {
            Some(Err(e)) => {
                if setup.verbose {
                    eprintln!("udptrace: counting in the kernel is off, events are handed over: {}", one_line(&e));
                }
                None
            }
            tally => tally.and_then(Result::ok),
        };
        // The drop program counts floods in the kernel whatever is shown; it reports the port unreachables of
        // the families no ICMP hook sees, at the drop of the datagram they answer.
        let drops = outcomes.iter().any(|o| o.hook.name == hooks::UDP_DROPPED && o.attached.is_some()).then(|| {
            use udptrace_common::drops::{AT_DROP_IPV4, AT_DROP_IPV6};
            let at_drop = match icmp_send_mode {
                Some(AttachMode::FEntry | AttachMode::Kprobe) => 0,
                Some(_) => AT_DROP_IPV6,
                None => AT_DROP_IPV4 | AT_DROP_IPV6,
            };
            DropCounts::start(&mut ebpf, at_drop, &mut kept)
        });
        let drops = match drops {
            Some(Err(e)) => {
                eprintln!(
                    "udptrace: warning: {}: drops after the first of each flow and second are not shown",
                    one_line(&e)
                );
                None
            }
            drops => drops.and_then(Result::ok),
        };
        let misses = Misses::new(&ebpf);
        let kept_misses = misses.try_clone().context("keeping the programs' descriptors")?;
        let parts = session::Parts {
            enricher: Enricher::new(
                creators,
                facts.cgroup2.clone(),
                std::mem::take(&mut facts.drop_reasons),
                setup.verbose,
            ),
            filter: setup.filter,
            counters,
            stats,
            misses,
            logs,
            tally,
            drops,
            stop_output,
            conntrack,
        };
        drop(entered);
        let cgroup_links = facts.take_cgroup_links();
        Ok(Self {
            runtime,
            source,
            parts,
            outcomes,
            attached,
            not_traced,
            programs: ebpf,
            cgroup_links,
            maps: kept,
            misses: kept_misses,
        })
    }
}

/// A tick of `jiffies` in ns: the resolution of `CLOCK_MONOTONIC_COARSE` is the kernel's `TICK_NSEC`
/// (kernel/time/posix-timers.c, `LOW_RES_NSEC`). 0 if it cannot be told: the drop program then takes its flood
/// path by the clock alone.
fn tick_ns() -> u32 {
    let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a timespec, written by the call.
    let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &raw mut res) } == 0;
    if !ok || res.tv_sec != 0 || res.tv_nsec <= 0 {
        return 0;
    }
    u32::try_from(res.tv_nsec).unwrap_or(0)
}
