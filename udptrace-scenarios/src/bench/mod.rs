//! `udptrace-bench`: what it costs to leave udptrace on, measured side by side in one run.
//!
//! Two network namespaces joined by a veth pair. The traffic runs in processes of its own (see
//! `bench_traffic`): a sender in the client's namespace that sends 32-byte datagrams in a tight loop and
//! times itself, and on the hot path a receiver in the server's namespace. The harness only starts and
//! stops them, and reads counters before and after. Every figure is a ratio or a paired comparison from the
//! same run: each round measures every variant once, in a rotating order, and the median over rounds is
//! reported, because these machines are noisy. Nothing here asserts a time; `--smoke` checks only that
//! every part ran and that the error path's events add up.
//!
//! 1. Hot path: datagrams per second with `send()` on a connected socket to an open port, with no tracer
//!    and with udptrace in each mode, started as a user starts it (a text line per event). The receiver
//!    takes them with `recvmmsg()`, 64 at a time, into a 64 MiB receive buffer, so that it keeps up;
//!    whether every datagram took the healthy path is checked, not assumed: the server's
//!    `Udp: RcvbufErrors` and `InErrors` must not move, and the receiver must have every datagram sent.
//!    BPF statistics give every udptrace program's runs per datagram: a program that runs per datagram
//!    shows about 1.
//! 2. Error path: datagrams per second with `send_to()` on an unconnected socket to a closed port, with the
//!    ICMP rate limits off (`icmp_ratemask` 0), so that every datagram draws a port unreachable and no
//!    error stops the sender: no tracer; udptrace per mode printing a line per event, with `--quiet`, and
//!    with `--summary 1` (the last two count in the kernel instead of handing over a record per error); a
//!    bpftrace script on the same tracepoints (`bench/errors.bt`), and `tcpdump -i any icmp -w FILE` in the
//!    server's namespace. udptrace's events plus its lost count must equal the port unreachables the
//!    kernel counted; and the per-program cost, from BPF statistics. Beside them, what naming a socket's
//!    owner costs: the sender connected to the closed port, so that the kernel tells its socket of every
//!    port unreachable (and its next send fails), with no tracer and with udptrace `--json` on the client's
//!    namespace, a `socket_error` per error, in each mode that sees them: once with the socket opened after
//!    udptrace started, whose owner the programs recorded, and once with it opened before, whose owner
//!    udptrace looks up in /proc through its privileged helper, a request per event. Each event's `holders`
//!    (set only by /proc) is read to hold each run to the way it claims; and udptrace's CPU time per event,
//!    with its helper's. And once more with the sender in a Kubernetes pod's container (its cgroup, and its
//!    runtime's bundle on the node udptrace runs on, `kube::Node`): what naming the pod adds per event.
//! 3. Start-up (spawn to `udptrace: tracing`) and peak RSS.
//! 4. Drop flood: the hot path's sender (`send()` on a connected socket to an open port, as fast as it
//!    goes) to a receiver that reads nothing until the end and has a small receive buffer (`SO_RCVBUF`
//!    4096), so that nearly every datagram is dropped at its socket, counted in the server's
//!    `Udp: RcvbufErrors`, and passes `skb:kfree_skb`, where udptrace's `udp_dropped` is. Variants: no
//!    tracer; udptrace per mode printing text lines; `--json`, read by the harness; `--quiet`; `--summary 1`.
//!    udptrace counts a flood in the kernel (one event per reason, flow and socket a second, with a count),
//!    so the goal is a ratio to no tracer of at least 0.95. The drops it shows (the `count`s of the
//!    `udp_dropped` events to the receiver with `--json`, the `udp_dropped` rows of the last table with
//!    `--summary`, the closing line's events with `--quiet`) must be no more than the kernel counted, and
//!    with the lost count no fewer; and the per-program cost, from BPF statistics.
//! 5. Conntrack: some of the error path's and the drop flood's udptrace variants (`--quiet`, which reads
//!    the entry of every error but hands over no record for it; the owner the programs recorded; `--json`
//!    in the drop flood) again on flows conntrack tracks (`, tracked`: a `ct state` rule in both
//!    namespaces) and on flows it translates (`, DNAT`: sent to a Service address that the client's OUTPUT
//!    and then the server's PREROUTING translate, so that the entries on both sides are translated ones),
//!    each beside no tracer on the same flows, in the same rounds. The programs' cost per run on those
//!    flows is set beside their cost on untracked ones.

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::{
    bench_traffic::{How, Sent},
    netns::{Netns, veth},
};

const CLIENT: &str = "10.241.0.1";
const SERVER: &str = "10.241.0.2";
const OPEN_PORT: u16 = 9000;
const CLOSED_PORT: u16 = 9001;
/// The drop flood's receiver, which reads nothing.
const DROP_PORT: u16 = 9002;
/// The drop flood receiver's `SO_RCVBUF`: room for a few datagrams (the kernel doubles it).
const SINK_RCVBUF: u32 = 4096;
/// The drop flood's goal: udptrace keeps at least this share of the rate with no tracer.
pub const DROP_GOAL: f64 = 0.95;
/// The size of every datagram sent: small, so that the per-datagram path is measured, not copying.
pub const DATAGRAM_BYTES: usize = 32;
/// How long the error path waits after the sender before it reads the counters and stops a tracer: what
/// is still in the buffers reaches udptrace.
const SETTLE: Duration = Duration::from_millis(1500);
/// The same for the variants that account for nothing: the last port unreachables go out.
const SETTLE_SHORT: Duration = Duration::from_millis(200);

#[derive(Clone, Debug)]
pub struct Options {
    pub udptrace: PathBuf,
    /// Modes to measure; those that do not attach here are reported as such.
    pub modes: Vec<String>,
    pub rounds: usize,
    pub seconds: f64,
    /// The bpftrace script for the comparison; `None` leaves bpftrace out.
    pub bpftrace_script: Option<PathBuf>,
    /// Compare with tcpdump.
    pub tcpdump: bool,
    /// The parts to measure (`hot`, `errors`, `drops`, `many-flows`); empty: all.
    pub paths: Vec<String>,
}

/// The Service address the `, DNAT` variants send to, which the client's OUTPUT translates to
/// [`SERVICE_HOP`], routed to the server, whose PREROUTING translates it to [`SERVER`]; ports are kept.
const SERVICE: &str = "10.96.0.10";
const SERVICE_HOP: &str = "10.96.0.20";
/// The nft table the conntrack variants add to both namespaces, and delete after each measurement.
const CT_TABLE: &str = "udptrace_bench";

/// How a variant's flows meet conntrack, beyond untracked (the other variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ct {
    /// Tracked, translated by nothing: a `ct state` rule in the input and output chains of both namespaces.
    Tracked,
    /// Translated: sent to [`SERVICE`], DNATed in the client's OUTPUT and again in the server's PREROUTING.
    Translated,
}

impl Ct {
    const ALL: [Ct; 2] = [Ct::Tracked, Ct::Translated];

    fn word(self) -> &'static str {
        match self {
            Ct::Tracked => "tracked",
            Ct::Translated => "DNAT",
        }
    }

    /// The rules of each namespace, as nft scripts.
    fn rules(self) -> (String, String) {
        match self {
            Ct::Tracked => {
                let mut script = format!("add table inet {CT_TABLE}");
                for hook in ["input", "output"] {
                    script.push_str(&format!(
                        "; add chain inet {CT_TABLE} {hook} {{ type filter hook {hook} priority 0; }}; \
                         add rule inet {CT_TABLE} {hook} ct state established,related,new accept"
                    ));
                }
                (script.clone(), script)
            }
            Ct::Translated => {
                let nat = |hook: &str, from: &str, to: &str| {
                    format!(
                        "add table inet {CT_TABLE}; \
                         add chain inet {CT_TABLE} {hook} {{ type nat hook {hook} priority -100; }}; \
                         add rule inet {CT_TABLE} {hook} ip daddr {from} dnat ip to {to}"
                    )
                };
                (nat("output", SERVICE, SERVICE_HOP), nat("prerouting", SERVICE_HOP, SERVER))
            }
        }
    }

    /// Adds this setting's rules to both namespaces until the guard drops.
    fn apply(self, hosts: &Hosts) -> Result<CtRules<'_>> {
        let guard = CtRules(hosts);
        let (client, server) = self.rules();
        for (ns, script) in [(&hosts.client, client), (&hosts.server, server)] {
            crate::netns::exec_in(ns, "nft", &[&script])
                .with_context(|| format!("conntrack {} (nf_conntrack, nft_ct, nft_nat)", self.word()))?;
        }
        Ok(guard)
    }

    /// Where the sender sends for `port`: the server, or the Service.
    fn to(ct: Option<Ct>, port: u16) -> SocketAddr {
        match ct {
            Some(Ct::Translated) => SocketAddr::new(SERVICE.parse().expect("an IPv4 address"), port),
            _ => Hosts::server(port),
        }
    }
}

/// The conntrack rules of a measurement, deleted from both namespaces on drop. The entries they made stay
/// until they time out, but nothing looks them up once no rule needs conntrack in the namespace
/// (`nf_ct_netns_put` unregisters its hooks).
struct CtRules<'a>(&'a Hosts);

impl Drop for CtRules<'_> {
    fn drop(&mut self) {
        for ns in [&self.0.client, &self.0.server] {
            let _ = crate::netns::exec_in(ns, "nft", &["delete", "table", "inet", CT_TABLE]);
        }
    }
}

/// Whether the conntrack variants can run here: each setting applied once and taken away.
fn conntrack_usable(hosts: &Hosts) -> Result<(), String> {
    for ct in Ct::ALL {
        ct.apply(hosts).map(drop).map_err(|e| crate::outcome::one_line(&format!("{e:#}")))?;
    }
    Ok(())
}

/// The source ports of the drop flood over many flows: more than the per-CPU last-flow caches and the
/// kernel's first-drop table (`udptrace_common::drops::SEEN_ENTRIES`) hold.
const MANY_FLOWS: u16 = 10_000;

/// A variant of one measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Variant {
    Bare,
    /// udptrace in this mode as a user starts it: a text line per event, to a pipe that is read and dropped.
    Udptrace(String),
    /// udptrace in this mode, `--json`: an object per event, read and counted by the harness (drop flood).
    Json(String),
    /// As `Json`, with the flood's port a DNS port (`--dns-port`): each drop handed over carries the start of
    /// its payload, so that a DNS drop's cost is measured beside another's (the one-flow drop flood).
    DnsJson(String),
    /// As `Udptrace`, with the error path's closed port a DNS port (`--dns-port`): each error carries the start
    /// of its datagram's payload, so that a DNS error's cost is measured beside another's.
    Dns(String),
    /// As `Udptrace`, with `--pcap`: each error handed over carries its datagram, written with its event to a
    /// pcapng file (rotated: `-C 10 -W 2`), so that the cost of the copy is measured beside the event's.
    PcapText(String),
    /// As `Json`, with `--pcap` as `PcapText`: the drops handed over carry their datagram.
    PcapJson(String),
    /// udptrace in this mode, `--quiet`: nothing printed; the programs count in the kernel.
    Quiet(String),
    /// udptrace in this mode, `--summary 1`: counted in the kernel, a table a second on a pipe that is read.
    Summary(String),
    /// No tracer, the error path's sender connected to the closed port (the baseline of the two below).
    BareConnected,
    /// udptrace in this mode, `--json --netns CLIENT`, the sender connected to the closed port: a
    /// `socket_error` per port unreachable, about a socket opened after udptrace started, whose owner the
    /// programs recorded.
    OwnerRecorded(String),
    /// As `OwnerRecorded`, with the socket opened before udptrace started: each event's owner is looked up
    /// in /proc by the privileged helper, a request per event.
    OwnerFromProc(String),
    /// As `OwnerRecorded`, with the sender in a Kubernetes pod's container (its cgroup, its runtime's bundle
    /// on the node udptrace runs on): each event names the pod, looked up once for the container.
    OwnerInPod(String),
    Bpftrace,
    /// `bpftrace -e` with [`paths::BPFTRACE_DROPS`], in the drop floods.
    BpftraceDrops,
    Tcpdump,
    /// Another variant on flows conntrack tracks or translates.
    Conntrack(Ct, Box<Variant>),
}

impl Variant {
    fn label(&self) -> String {
        match self {
            Variant::Bare => "no tracer".to_owned(),
            Variant::Udptrace(mode) => format!("udptrace {mode}"),
            Variant::Json(mode) => format!("udptrace {mode} --json"),
            Variant::DnsJson(mode) => format!("udptrace {mode} --json --dns-port {DROP_PORT}"),
            Variant::Dns(mode) => format!("udptrace {mode} --dns-port {CLOSED_PORT}"),
            Variant::PcapText(mode) => format!("udptrace {mode} --pcap FILE"),
            Variant::PcapJson(mode) => format!("udptrace {mode} --json --pcap FILE"),
            Variant::Quiet(mode) => format!("udptrace {mode} --quiet"),
            Variant::Summary(mode) => format!("udptrace {mode} --summary 1"),
            Variant::BareConnected => "no tracer, connected sender".to_owned(),
            Variant::OwnerRecorded(mode) => format!("udptrace {mode} --json --netns CLIENT"),
            Variant::OwnerInPod(mode) => format!("udptrace {mode} --json --netns CLIENT, in a pod"),
            Variant::OwnerFromProc(mode) => {
                format!("udptrace {mode} --json --netns CLIENT, socket older than udptrace")
            }
            Variant::Bpftrace => "bpftrace script".to_owned(),
            Variant::BpftraceDrops => "bpftrace one-liner".to_owned(),
            Variant::Tcpdump => "tcpdump -i any icmp -w".to_owned(),
            Variant::Conntrack(ct, inner) => format!("{}, {}", inner.label(), ct.word()),
        }
    }

    /// How its flows meet conntrack (`None`: untracked), and the variant it is on them.
    fn split(&self) -> (Option<Ct>, &Variant) {
        match self {
            Variant::Conntrack(ct, inner) => (Some(*ct), inner),
            other => (None, other),
        }
    }

    /// What its rate is compared with, in each round: no tracer, on the same flows.
    fn baseline(&self) -> Variant {
        match self {
            Variant::Conntrack(ct, _) => Variant::Conntrack(*ct, Box::new(Variant::Bare)),
            _ => Variant::Bare,
        }
    }

    /// udptrace's mode in this variant, if it runs udptrace.
    fn mode(&self) -> Option<&str> {
        match self {
            Variant::Conntrack(_, inner) => inner.mode(),
            Variant::Udptrace(mode)
            | Variant::Json(mode)
            | Variant::DnsJson(mode)
            | Variant::Dns(mode)
            | Variant::PcapText(mode)
            | Variant::PcapJson(mode)
            | Variant::Quiet(mode)
            | Variant::Summary(mode)
            | Variant::OwnerRecorded(mode)
            | Variant::OwnerFromProc(mode)
            | Variant::OwnerInPod(mode) => Some(mode),
            _ => None,
        }
    }

    /// Whether the error path's sender is connected to the closed port, so that its socket is told of
    /// every error: the variants that measure the socket owner's lookup, and their baseline.
    fn connected_sender(&self) -> bool {
        matches!(
            self.split().1,
            Variant::BareConnected | Variant::OwnerRecorded(_) | Variant::OwnerFromProc(_) | Variant::OwnerInPod(_)
        )
    }
}

mod paths;
mod processes;
use self::paths::{drop_flood, error_path, hot_path};
use self::processes::{Running, Starts, Tracefs, cpu_time, start_tool, start_udptrace};
mod report;
mod stats;
use self::stats::{Costs, loaded_program_ids, programs_of, stats_of, tool_programs};

pub use self::report::*;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

struct Hosts {
    client: Netns,
    server: Netns,
    /// A Kubernetes node for the `in a pod` variants, with the container the sender runs in; why not, where
    /// none could be made.
    pod: std::result::Result<PodSender, String>,
}

/// A node (its runtime's files in a mount namespace of its own) and a pod's container on it.
struct PodSender {
    node: crate::kube::Node,
    container: crate::kube::Container,
}

impl PodSender {
    /// containerd, the systemd cgroup driver, a Burstable pod: the layout of most managed clusters.
    fn new() -> Result<Self> {
        use crate::kube::{Driver, Node, Pod, Qos, Runtime};
        let node = Node::new(&std::env::current_exe()?)?;
        let pod = Pod::new("bench", "sender-5d8f7c9b4-q7w2x", Qos::Burstable, Driver::Systemd, Runtime::Containerd)?;
        node.start_pod(&pod)?;
        let container = node.start_container(&pod, "sender")?;
        Ok(Self { node, container })
    }
}

impl Hosts {
    fn new() -> Result<Self> {
        let client = Netns::new("bclient")?;
        let server = Netns::new("bserver")?;
        veth(&client, &[&format!("{CLIENT}/24")], &server, &[&format!("{SERVER}/24")])?;
        // The Service addresses of the `, DNAT` variants are reached through the server.
        client.ip(&["route", "add", "10.96.0.0/24", "via", SERVER])?;
        // No ICMP type is rate-limited in the server: every datagram to the closed port draws an error.
        server.sysctl("net.ipv4.icmp_ratemask", "0")?;
        let pod = PodSender::new().map_err(|e| crate::outcome::one_line(&format!("{e:#}")));
        Ok(Self { client, server, pod })
    }

    fn server(port: u16) -> SocketAddr {
        SocketAddr::new(SERVER.parse().expect("an IPv4 address"), port)
    }
}

/// The UDP counters of a namespace that say a datagram did not reach its socket.
#[derive(Clone, Copy, Debug, Default)]
struct UdpCounters {
    in_errors: u64,
    rcvbuf_errors: u64,
}

fn udp_counters(ns: &Netns) -> Result<UdpCounters> {
    let snmp = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
    let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let [names, values] = lines[..] else {
        bail!("no Udp counters in /proc/net/snmp of {}", ns.name);
    };
    let mut counters = UdpCounters::default();
    for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
        match name {
            "InErrors" => counters.in_errors = value.parse().unwrap_or(0),
            "RcvbufErrors" => counters.rcvbuf_errors = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok(counters)
}

/// Which of `modes` attach here, each with its start-up time, and why not for the others; and of those, the
/// ones whose socket_error hook attached.
fn usable_modes(
    options: &Options,
    hosts: &Hosts,
    report: &mut Report,
    starts: &mut Starts,
) -> (Vec<String>, Vec<String>) {
    let (mut usable, mut socket_errors) = (Vec::new(), Vec::new());
    for mode in &options.modes {
        let variant = Variant::Udptrace(mode.clone());
        match start_udptrace(options, &variant, hosts, starts) {
            Ok(Some((mut tracer, _))) => {
                // A hook this kernel lacks in this mode is said; the mode is measured with the others.
                for missing in tracer.not_traced() {
                    report.left_out.push(format!("udptrace {mode}, measured without: {missing}"));
                }
                // udptrace's warning names the hook (kernel/hooks.rs SOCKET_ERROR).
                if !tracer.not_traced().iter().any(|l| l.contains("socket_error not traced")) {
                    socket_errors.push(mode.clone());
                }
                // Measured once its start has settled: what it holds while tracing, before any traffic.
                std::thread::sleep(Duration::from_secs(1));
                starts.rss(&variant.label(), &tracer);
                let _ = tracer.stop();
                usable.push(mode.clone());
            }
            Ok(None) => {}
            Err(e) => report.left_out.push(format!("udptrace {mode}: {}", crate::outcome::one_line(&format!("{e:#}")))),
        }
    }
    (usable, socket_errors)
}

/// Runs `measure` for every variant, `rounds` times, each round in another order; returns per variant the
/// median rate and the median of its per-round ratio to its baseline's rate in the same round (no tracer on
/// the same flows; the first variant where that is not measured).
fn rounds(
    variants: &[Variant],
    rounds: usize,
    mut measure: impl FnMut(&Variant) -> Result<f64>,
) -> Result<Vec<(String, f64, f64)>> {
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let baselines: Vec<usize> =
        variants.iter().map(|v| variants.iter().position(|b| *b == v.baseline()).unwrap_or(0)).collect();
    for round in 0..rounds {
        let mut this_round = vec![f64::NAN; variants.len()];
        for k in 0..variants.len() {
            let index = (k + round) % variants.len();
            this_round[index] = measure(&variants[index])?;
        }
        for (index, rate) in this_round.iter().enumerate() {
            rates[index].push(*rate);
            ratios[index].push(rate / this_round[baselines[index]]);
        }
    }
    Ok(variants
        .iter()
        .zip(rates.iter_mut().zip(ratios.iter_mut()))
        .map(|(v, (rates, ratios))| (v.label(), median(rates), median(ratios)))
        .collect())
}

/// Failed sends are not measured datagrams; they are said.
fn note_failures(notes: &mut Vec<String>, label: &str, path: &str, sent: &Sent) {
    if sent.failed > 0 {
        let error = sent.error.as_deref().unwrap_or("?");
        notes.push(format!("{path}, {label}: {} sends failed ({error}); not counted as sent", sent.failed));
    }
}

/// Bad input, said in one line before anything is set up.
fn check_inputs(options: &Options) -> Result<()> {
    if !options.udptrace.is_file() {
        bail!("--udptrace {}: no such file", options.udptrace.display());
    }
    if let Some(script) = &options.bpftrace_script
        && !script.is_file()
    {
        bail!("--bpftrace {}: no such file", script.display());
    }
    if options.rounds == 0 || !(options.seconds > 0.0 && options.seconds <= 3600.0) {
        bail!("rounds must be at least 1 and seconds from 0 to 3600");
    }
    Ok(())
}

pub fn run(options: &Options) -> Result<Report> {
    check_inputs(options)?;
    crate::netns::sweep_stale();
    let mut options = options.clone();
    let mut once = BTreeSet::new();
    options.modes.retain(|mode| once.insert(mode.clone()));
    let hosts = Hosts::new()?;
    let mut report = Report::default();
    let mut starts = Starts::default();
    // On for both paths: a program that runs per healthy datagram shows in the hot path's run counts.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time statistics")?;
    let (modes, socket_error_modes) = usable_modes(&options, &hosts, &mut report, &mut starts);
    let wanted = |path: &str| options.paths.is_empty() || options.paths.iter().any(|p| p == path);
    let conntrack = if wanted("errors") || wanted("drops") { conntrack_usable(&hosts) } else { Err(String::new()) };
    match &conntrack {
        Err(why) if !why.is_empty() => report.left_out.push(format!("the conntrack variants: {why}")),
        _ => {}
    }
    report.conntrack_measured = conntrack.is_ok();
    let ct = if conntrack.is_ok() { &Ct::ALL[..] } else { &[] };
    if wanted("hot") {
        hot_path(&options, &hosts, &modes, &mut report, &mut starts)?;
    }
    if wanted("errors") {
        error_path(&options, &hosts, &modes, &socket_error_modes, ct, &mut report, &mut starts)?;
    }
    if wanted("drops") {
        let flood = drop_flood(&options, &hosts, &modes, How::Connected, ct, &mut report, &mut starts)?;
        report.drops = flood;
    }
    if wanted("many-flows") {
        let flood = drop_flood(&options, &hosts, &modes, How::Flows(MANY_FLOWS), &[], &mut report, &mut starts)?;
        report.many_flows = Some(flood);
    }
    drop(stats);
    report.startup = std::mem::take(&mut starts.startups);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_goals_follow_the_largest_numbers() {
        let startup = |peak, pss| report::Startup {
            label: "udptrace tracepoint".to_owned(),
            peak_rss_kib: Some(peak),
            tracing_pss_kib: pss,
            ..report::Startup::default()
        };
        let within = [startup(20 * 1024, Some(15 * 1024)), startup(25 * 1024, Some(16 * 1024))];
        assert_eq!(
            report::memory_goals(&within),
            "Goals: peak RSS at most 25.0 MiB: met (25.0 MiB at most); PSS while tracing, both processes, at most \
             16.0 MiB: met (16.0 MiB at most)."
        );
        let over = [startup(20 * 1024, None), startup(34 * 1024, None)];
        let line = report::memory_goals(&over);
        assert!(line.contains("25.0 MiB: not met (34.0 MiB at most)"), "{line}");
        assert!(line.ends_with("16.0 MiB: not measured."), "{line}");
    }

    #[test]
    fn medians_and_verdicts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
        let row = HotRow { rounds: 3, healthy_rounds: 2, ..HotRow::default() };
        assert!(!row.healthy());
        assert!(HotRow { rounds: 3, healthy_rounds: 3, ..HotRow::default() }.healthy());
        assert!(!Report::default().accounted());
    }

    #[test]
    fn each_ratio_is_to_no_tracer_on_the_same_flows() {
        let tracked = |v: Variant| Variant::Conntrack(Ct::Tracked, Box::new(v));
        let variants = [
            Variant::Bare,
            Variant::Udptrace("tracepoint".into()),
            tracked(Variant::Bare),
            tracked(Variant::Udptrace("tracepoint".into())),
        ];
        let rates = [100.0, 80.0, 50.0, 45.0];
        let got = rounds(&variants, 3, |v| Ok(rates[variants.iter().position(|w| w == v).unwrap()])).unwrap();
        let ratios: Vec<f64> = got.iter().map(|(_, _, ratio)| *ratio).collect();
        assert_eq!(ratios, vec![1.0, 0.8, 1.0, 0.9]);
        assert_eq!(got[3].0, "udptrace tracepoint, tracked");
        assert!(variants[3].connected_sender() == variants[1].connected_sender());
        assert_eq!(variants[3].mode(), Some("tracepoint"));
    }

    #[test]
    fn the_conntrack_section_sets_each_program_beside_its_untracked_cost() {
        // Two rounds: the first costs `ns` per run, the second twice that.
        let cost = |variant: &str, name: &str, runs: u64, ns: u64| ProgramCost {
            variant: variant.into(),
            name: name.into(),
            runs: 2 * runs,
            run_time_ns: 3 * runs * ns,
            datagrams: 2 * runs,
            round_ns: if runs == 0 { vec![None, None] } else { vec![Some(ns as f64), Some(2.0 * ns as f64)] },
        };
        let rows = vec![
            cost("udptrace tracepoint", "tp_icmp_send", 100, 100),
            cost("udptrace tracepoint", "tp_sock_error", 0, 0),
            cost("udptrace tracepoint, tracked", "tp_icmp_send", 100, 105),
            cost("udptrace tracepoint, tracked", "tp_sock_error", 0, 0),
            cost("udptrace tracepoint, DNAT", "tp_icmp_send", 100, 200),
            cost("udptrace tracepoint, DNAT", "tp_sock_error", 0, 0),
            // Set-up: a run per round for 200 datagrams, not on the path.
            ProgramCost { datagrams: 200, ..cost("udptrace tracepoint", "cgroup_sock_cre", 1, 1000) },
            ProgramCost { datagrams: 200, ..cost("udptrace tracepoint, tracked", "cgroup_sock_cre", 1, 3000) },
        ];
        let costs = conntrack_costs(&rows);
        assert_eq!(costs.len(), 1, "a program that never ran, or not on the path, is left out: {costs:?}");
        assert_eq!(costs[0].tracked_ratio(), Some(1.05));
        assert_eq!(costs[0].translated_ratio(), Some(2.0));
        let report = Report { error_programs: rows, conntrack_measured: true, ..Report::default() };
        let text = report.markdown("## header");
        assert!(text.contains("### 5. Conntrack"), "{text}");
        assert!(
            text.contains(
                "| error path | udptrace tracepoint | tp_icmp_send | 200 | 150 | 200 | 158 | 1.050 | yes | 200 | 300 | 2.000 |"
            ),
            "{text}"
        );
        let worse = vec![
            cost("udptrace fentry --json", "tp_kfree_skb", 10, 100),
            cost("udptrace fentry --json, tracked", "tp_kfree_skb", 10, 120),
        ];
        let report = Report {
            drops: DropFlood { programs: worse, ..DropFlood::default() },
            conntrack_measured: true,
            ..Report::default()
        };
        let text = report.markdown("## header");
        assert!(
            text.contains(
                "| drop flood | udptrace fentry --json | tp_kfree_skb | 20 | 150 | 20 | 180 | 1.200 | NO | - | - | - |"
            ),
            "{text}"
        );
    }

    #[test]
    fn drops_are_the_counts_of_the_events_to_the_receiver() {
        let receiver = "10.241.0.2:9002";
        let mut counts = DropCounts::default();
        for line in [
            r#"{"event":"udp_dropped","packet":{"src":"10.241.0.1:40000","dst":"10.241.0.2:9002","proto":"udp"},"reason":"socket_rcvbuff","location":"__udp_queue_rcv_skb","count":1}"#,
            r#"{"event":"udp_dropped","packet":{"src":"10.241.0.1:40000","dst":"10.241.0.2:9002","proto":"udp"},"reason":"socket_rcvbuff","location":"__udp_queue_rcv_skb","count":41000}"#,
            // 5.10: no reason; the location says where.
            r#"{"event":"udp_dropped","packet":{"src":"10.241.0.1:40000","dst":"10.241.0.2:9002","proto":"udp"},"reason":null,"location":"__udp_queue_rcv_skb","count":9}"#,
            r#"{"event":"udp_dropped","packet":{"src":"10.241.0.1:40000","dst":"10.241.0.2:9999","proto":"udp"},"reason":"no_socket","count":3}"#,
            r#"{"event":"icmp_sent","count":5}"#,
            "not json",
        ] {
            counts.add_json_line(line, receiver);
        }
        assert_eq!((counts.drops, counts.events, counts.largest, counts.elsewhere), (41010, Some(3), 41000, 1));
        assert_eq!(counts.reasons["socket_rcvbuff"], 41001);
        assert_eq!(counts.reasons["__udp_queue_rcv_skb"], 9);

        let table: serde_json::Value = serde_json::from_str(
            r#"{"event":"summary","period":null,"events":60,"lost":0,"rows":[
                {"count":50,"event":"udp_dropped","outcome":"socket_rcvbuff","address":"10.241.0.2:9002"},
                {"count":7,"event":"udp_dropped","outcome":"udp_csum","address":"10.241.0.2:9002"},
                {"count":3,"event":"icmp_sent","outcome":"no_listener","address":"10.241.0.2:9001"}]}"#,
        )
        .unwrap();
        let summary = DropCounts::of_summary(&table);
        assert_eq!((summary.drops, summary.events), (57, None));
        assert_eq!(summary.reasons.len(), 2);
    }

    #[test]
    fn the_per_event_goals_add_up_each_variants_programs() {
        let cost = |variant: &str, name: &str, runs: u64, ns: u64, datagrams: u64| report::ProgramCost {
            variant: variant.into(),
            name: name.into(),
            runs,
            run_time_ns: runs * ns,
            datagrams,
            round_ns: vec![],
        };
        let errors = [
            cost("udptrace tracepoint --quiet", "tp_icmp_send", 1000, 190, 1000),
            cost("udptrace tracepoint --quiet", "tp_kfree_skb", 1000, 60, 1000),
            cost("udptrace tracepoint --quiet", "cgroup_sock_cre", 2, 200, 1000),
            cost("udptrace tracepoint --summary 1", "tp_icmp_send", 1000, 290, 1000),
            cost("udptrace tracepoint --summary 1", "tp_kfree_skb", 1000, 60, 1000),
            cost("udptrace tracepoint", "tp_icmp_send", 1000, 900, 1000),
        ];
        let line = report::error_cost_goal(&errors);
        assert!(
            line.contains("`udptrace tracepoint --quiet` 250 ns (tp_icmp_send 190 + tp_kfree_skb 60): met"),
            "{line}"
        );
        assert!(line.contains("`udptrace tracepoint --summary 1` 350 ns"), "{line}");
        assert!(line.contains("350 ns (tp_icmp_send 290 + tp_kfree_skb 60): not met"), "{line}");
        assert!(!line.contains("900"), "printing is not held to it: {line}");
        assert!(!line.contains("cgroup"), "a program that ran for a few sockets is not named: {line}");

        let drops = [
            cost("udptrace tracepoint --quiet", "tp_kfree_skb", 1000, 110, 1000),
            cost("udptrace tracepoint --json", "tp_kfree_skb", 1000, 130, 1000),
            cost("bpftrace one-liner", "kfree_skb", 1000, 115, 1000),
        ];
        let line = report::drop_cost_goal(&drops);
        assert!(line.contains("(115 ns)"), "{line}");
        assert!(line.contains("`udptrace tracepoint --quiet` 110 ns: met"), "{line}");
        assert!(line.contains("`udptrace tracepoint --json` 130 ns: not met"), "{line}");
        assert!(report::drop_cost_goal(&drops[..1]).contains("not measured"));
    }

    #[test]
    fn the_markdown_has_the_drop_flood() {
        let row = |label: &str, ratio: f64| DropRow {
            label: label.into(),
            rate: 1000.0 * ratio,
            ratio,
            rounds: 1,
            sent: 100,
            rcvbuf_errors: 100,
            drained: 0,
        };
        let many = DropFlood {
            flows: 10_000,
            rows: vec![row("no tracer", 1.0), row("bpftrace one-liner", 0.85), row("udptrace tracepoint --quiet", 0.9)],
            ..DropFlood::default()
        };
        let report = Report {
            drops: DropFlood {
                flows: 1,
                rows: vec![
                    DropRow {
                        label: "no tracer".into(),
                        rate: 1000.0,
                        ratio: 1.0,
                        rounds: 1,
                        sent: 1000,
                        rcvbuf_errors: 990,
                        drained: 8,
                    },
                    DropRow {
                        label: "udptrace tracepoint --json".into(),
                        rate: 900.0,
                        ratio: 0.9,
                        rounds: 1,
                        sent: 900,
                        rcvbuf_errors: 892,
                        drained: 8,
                    },
                ],
                accounting: vec![DropAccounting {
                    label: "udptrace tracepoint --json".into(),
                    source: "its JSON events",
                    rounds: 1,
                    accounted_rounds: 1,
                    kernel: 892,
                    shown: DropCounts {
                        drops: 892,
                        events: Some(2),
                        largest: 891,
                        reasons: [("socket_rcvbuff".to_owned(), 892)].into(),
                        elsewhere: 0,
                    },
                    lost: 0,
                }],
                rcvbuf: Some(8192),
                ..DropFlood::default()
            },
            many_flows: Some(many),
            ..Report::default()
        };
        let text = report.markdown("## header");
        assert!(text.contains("### 4. Drop flood"), "{text}");
        // The one-liner measured in the same flood is the goal: 0.9 is above its 0.85.
        assert!(text.contains("### 5. Drop flood over 10000 flows"), "{text}");
        assert!(text.contains("| udptrace tracepoint --quiet | 900 | 0.900 | yes |"), "{text}");
        assert!(text.contains("| bpftrace one-liner | 850 | 0.850 | - |"), "{text}");
        assert!(text.contains("`SO_RCVBUF` 4096, which the kernel makes 8192"), "{text}");
        assert!(text.contains("| no tracer | 1000 | 1.000 | - | 1000 | 990 | 8 | 2 |"), "{text}");
        assert!(text.contains("| udptrace tracepoint --json | 900 | 0.900 | NO | 900 | 892 | 8 | 0 |"), "{text}");
        assert!(
            text.contains(
                "| udptrace tracepoint --json | its JSON events | 1 | 892 | 892 | 2 (891) | 0 | 0 | yes | socket_rcvbuff 892 |"
            ),
            "{text}"
        );
        assert!(report.drops.accounted());
        // The flood over many flows accounted for nothing: the report as a whole does not account.
        assert!(!report.drops_accounted());
    }

    #[test]
    fn socket_errors_are_counted_by_where_their_owners_came_from() {
        let mut owners = SocketErrorOwners::default();
        for line in [
            // /proc named it: `holders` set. A name that quotes a key does not hide it.
            r#"{"event":"socket_error","time":"2026-12-07T08:08:12.624622Z","netns":4026532174,"probe":"tracepoint","pod":null,"family":"ipv4","local":"10.241.0.1:54482","remote":"10.241.0.2:9001","icmp":null,"errno":"ECONNREFUSED","verdict":"delivered","recverr":false,"pid":30677,"tid":null,"comm":"a\"holders\":null","cgroup":"/init.scope","container":null,"holders":1,"dns":null,"conntrack":null}"#,
            // The programs recorded it.
            r#"{"event":"socket_error","time":"2026-12-07T08:08:12.626881Z","netns":4026532174,"probe":"tracepoint","pod":null,"family":"ipv4","local":"10.241.0.1:54482","remote":"10.241.0.2:9001","icmp":null,"errno":"ECONNREFUSED","verdict":"delivered","recverr":false,"pid":30677,"tid":30677,"comm":"udptrace-bench","cgroup":"/init.scope","container":null,"holders":null,"dns":null,"conntrack":null}"#,
            // Recorded, in a pod.
            r#"{"event":"socket_error","time":"2026-12-07T08:08:12.627881Z","netns":4026532174,"probe":"tracepoint","pod":{"namespace":"bench","name":"sender-5d8f7c9b4-q7w2x","container":"sender","uid":"1b2c"},"family":"ipv4","local":"10.241.0.1:54482","remote":"10.241.0.2:9001","icmp":null,"errno":"ECONNREFUSED","verdict":"delivered","recverr":false,"pid":30678,"tid":30678,"comm":"udptrace-bench","cgroup":"/kubepods.slice","container":null,"holders":null,"dns":null,"conntrack":null}"#,
            // Nobody.
            r#"{"event":"socket_error","time":"2026-12-07T08:08:12.629099Z","netns":4026532174,"probe":"tracepoint","pod":null,"family":"ipv4","local":"10.241.0.1:54482","remote":"10.241.0.2:9001","icmp":null,"errno":"ECONNREFUSED","verdict":"delivered","recverr":false,"pid":null,"tid":null,"comm":null,"cgroup":null,"container":null,"holders":null,"dns":null,"conntrack":null}"#,
            r#"{"event":"icmp_sent","count":5}"#,
            "not json",
        ] {
            owners.add_json_line(line);
        }
        assert_eq!(owners, SocketErrorOwners { events: 4, owned: 3, from_proc: 1, in_pod: 1 });

        let report = Report {
            accounting: vec![Accounting {
                label: "udptrace tracepoint --json --netns CLIENT, socket older than udptrace".into(),
                source: "its JSON events",
                rounds: 1,
                accounted_rounds: 1,
                kernel: 10,
                events: 4,
                lost: 6,
                owners: Some(SocketErrorOwners { events: 4, owned: 4, from_proc: 4, in_pod: 0 }),
                cpu: Some(Duration::from_micros(10)),
            }],
            ..Report::default()
        };
        let text = report.markdown("## header");
        assert!(
            text.contains(
                "| udptrace tracepoint --json --netns CLIENT, socket older than udptrace | its JSON events | 1 | 10 | 4 | 6 | 4 | yes | 2.50 |"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_markdown_lists_programs_that_did_not_run() {
        let report = Report {
            hot: vec![HotRow {
                label: "udptrace tracepoint".into(),
                rate: 1000.0,
                ratio: 0.99,
                rounds: 1,
                sent: 1000,
                received: 990,
                rcvbuf_errors: 10,
                in_errors: 10,
                healthy_rounds: 0,
            }],
            hot_programs: vec![ProgramCost {
                variant: "udptrace tracepoint".into(),
                name: "tp_icmp_send".into(),
                runs: 0,
                run_time_ns: 0,
                datagrams: 1000,
                round_ns: vec![None],
            }],
            ..Report::default()
        };
        let text = report.markdown("## header");
        assert!(
            text.contains("| udptrace tracepoint | 1000 | 0.990 | 1000 | 990 | 10 | 10 | NO (0 of 1 rounds) |"),
            "{text}"
        );
        assert!(text.contains("| udptrace tracepoint | tp_icmp_send | 0 | 0.000 | - |"), "{text}");
    }
}
