//! What a run found: the rows of each table, and the report as Markdown.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use super::*;

/// One udptrace program's BPF statistics over a variant's rounds.
#[derive(Clone, Debug)]
pub struct ProgramCost {
    pub variant: String,
    /// As the kernel keeps it (15 characters), with `#2`... when one udptrace loads several of that name.
    pub name: String,
    pub runs: u64,
    pub run_time_ns: u64,
    /// Datagrams sent while these runs were counted.
    pub datagrams: u64,
    /// Its nanoseconds per run in each round (`None` where it did not run), in the order of the rounds: the
    /// variant is measured once in each.
    pub round_ns: Vec<Option<f64>>,
}

impl ProgramCost {
    pub fn runs_per_datagram(&self) -> f64 {
        self.runs as f64 / self.datagrams as f64
    }

    /// The median over rounds of its cost per run over `other`'s in the same round, where both ran.
    pub fn paired_ratio(&self, other: &ProgramCost) -> Option<f64> {
        let mut ratios: Vec<f64> =
            self.round_ns.iter().zip(&other.round_ns).filter_map(|(a, b)| Some(a.as_ref()? / b.as_ref()?)).collect();
        (!ratios.is_empty()).then(|| median(&mut ratios))
    }
}

/// One variant of the hot path: the median rate and ratio, and the datagrams over all its rounds.
#[derive(Clone, Debug, Default)]
pub struct HotRow {
    pub label: String,
    pub rate: f64,
    pub ratio: f64,
    pub rounds: usize,
    pub sent: u64,
    pub received: u64,
    /// The server's `Udp: RcvbufErrors` and `Udp: InErrors`, how much they moved.
    pub rcvbuf_errors: u64,
    pub in_errors: u64,
    /// Rounds in which the receiver got every datagram sent and no UDP error counter moved.
    pub healthy_rounds: usize,
}

impl HotRow {
    pub fn healthy(&self) -> bool {
        self.rounds > 0 && self.healthy_rounds == self.rounds
    }
}

/// One variant of the error path.
#[derive(Clone, Debug, Default)]
pub struct ErrorRow {
    pub label: String,
    pub rate: f64,
    pub ratio: f64,
    pub sent: u64,
    /// Port unreachables the server sent (`IcmpMsg: OutType3`), over all rounds.
    pub unreachables: u64,
}

/// How one udptrace variant accounted for the port unreachables, over its rounds.
#[derive(Clone, Debug, Default)]
pub struct Accounting {
    pub label: String,
    /// Where the counts come from: the closing line, the last summary table, its JSON events.
    pub source: &'static str,
    pub rounds: usize,
    pub accounted_rounds: usize,
    pub kernel: u64,
    pub events: u64,
    pub lost: u64,
    /// With `--netns CLIENT`: where its `socket_error` events' owners came from.
    pub owners: Option<SocketErrorOwners>,
    /// The CPU time udptrace and its helper used while the rounds sent and settled; `None` where it could
    /// not be read in some round.
    pub cpu: Option<Duration>,
}

impl Accounting {
    pub fn accounted(&self) -> bool {
        self.rounds > 0 && self.accounted_rounds == self.rounds
    }

    /// udptrace's CPU time per event shown, in microseconds, as the table says it.
    fn cpu_per_event(&self) -> String {
        match self.cpu {
            Some(cpu) if self.events > 0 => format!("{:.2}", cpu.as_secs_f64() * 1e6 / self.events as f64),
            _ => "-".to_owned(),
        }
    }
}

/// The `socket_error` events of a udptrace run with `--json`, by where their owners came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketErrorOwners {
    pub events: u64,
    /// Those that name an owner (`pid` set).
    pub owned: u64,
    /// Those whose owner /proc named: `holders` is set only then (or for a kernel socket, which these are
    /// not).
    pub from_proc: u64,
    /// Those that name a pod (`pod` set).
    pub in_pod: u64,
}

impl SocketErrorOwners {
    /// Reads one line of `udptrace --json`. Matched, not parsed: a line comes per datagram, and the harness
    /// shares the machine's CPUs with the sender and udptrace. A key in quotes cannot occur inside a string
    /// value, where JSON escapes the quotes.
    pub(super) fn add_json_line(&mut self, line: &str) {
        if !line.starts_with(r#"{"event":"socket_error""#) {
            return;
        }
        self.events += 1;
        self.owned += u64::from(!line.contains(r#""pid":null"#));
        self.from_proc += u64::from(!line.contains(r#""holders":null"#));
        self.in_pod += u64::from(!line.contains(r#""pod":null"#));
    }

    pub(super) fn add(&mut self, other: Self) {
        self.events += other.events;
        self.owned += other.owned;
        self.from_proc += other.from_proc;
        self.in_pod += other.in_pod;
    }
}

/// One variant of the drop flood.
#[derive(Clone, Debug, Default)]
pub struct DropRow {
    pub label: String,
    pub rate: f64,
    pub ratio: f64,
    pub rounds: usize,
    pub sent: u64,
    /// The server's `Udp: RcvbufErrors`, how much it moved: the datagrams dropped at the full socket.
    pub rcvbuf_errors: u64,
    /// What the receiver found queued at the end.
    pub drained: u64,
}

impl DropRow {
    /// Datagrams sent that were neither dropped at the socket nor read from it.
    pub fn elsewhere(&self) -> u64 {
        self.sent.saturating_sub(self.rcvbuf_errors + self.drained)
    }
}

/// What one udptrace run showed of the drops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Drops at the receiver: the sum of `count` of the `udp_dropped` events (or rows) about it.
    pub drops: u64,
    /// `udp_dropped` events read, when they were (`--json`).
    pub events: Option<u64>,
    /// The largest `count` of one event (`--json`).
    pub largest: u64,
    /// Drops by reason (or location, when the kernel has no reasons).
    pub reasons: BTreeMap<String, u64>,
    /// `udp_dropped` events about something else than the receiver (`--json`).
    pub elsewhere: u64,
}

impl DropCounts {
    /// Reads one line of `udptrace --json`: a `udp_dropped` event to `receiver` counts its `count`.
    pub(super) fn add_json_line(&mut self, line: &str, receiver: &str) {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { return };
        if value["event"] != "udp_dropped" {
            return;
        }
        if value["packet"]["dst"].as_str() != Some(receiver) {
            self.elsewhere += 1;
            return;
        }
        let count = value["count"].as_u64().unwrap_or(0);
        let reason = value["reason"].as_str().or_else(|| value["location"].as_str()).unwrap_or("?");
        *self.events.get_or_insert(0) += 1;
        self.drops += count;
        self.largest = self.largest.max(count);
        *self.reasons.entry(reason.to_owned()).or_default() += count;
    }

    /// The `udp_dropped` rows of a `--summary` table (`{"event":"summary","rows":[...]}`).
    pub(super) fn of_summary(table: &serde_json::Value) -> Self {
        let mut counts = Self::default();
        for row in table["rows"].as_array().into_iter().flatten().filter(|r| r["event"] == "udp_dropped") {
            let count = row["count"].as_u64().unwrap_or(0);
            counts.drops += count;
            *counts.reasons.entry(row["outcome"].as_str().unwrap_or("?").to_owned()).or_default() += count;
        }
        counts
    }
}

/// One drop flood: its variants, how udptrace accounted for its drops, and its programs' costs.
#[derive(Clone, Debug, Default)]
pub struct DropFlood {
    /// The flows (source ports) it came from.
    pub flows: u32,
    pub rows: Vec<DropRow>,
    pub accounting: Vec<DropAccounting>,
    pub programs: Vec<ProgramCost>,
    /// The receiver's receive buffer, as `SO_RCVBUF` read it back.
    pub rcvbuf: Option<u64>,
}

impl DropFlood {
    /// Whether every udptrace run that accounts (`--json`, `--quiet`, `--summary`) showed every drop the
    /// kernel counted at the socket.
    pub fn accounted(&self) -> bool {
        !self.accounting.is_empty() && self.accounting.iter().all(DropAccounting::accounted)
    }
}

/// How one udptrace variant accounted for the drops of the drop flood, over its rounds.
#[derive(Clone, Debug, Default)]
pub struct DropAccounting {
    pub label: String,
    /// Where the counts come from: its JSON events, its last summary table, the closing line.
    pub source: &'static str,
    pub rounds: usize,
    pub accounted_rounds: usize,
    /// `Udp: RcvbufErrors` of the server, how much it moved.
    pub kernel: u64,
    pub shown: DropCounts,
    pub lost: u64,
}

impl DropAccounting {
    pub fn accounted(&self) -> bool {
        self.rounds > 0 && self.accounted_rounds == self.rounds
    }
}

/// Start-up and memory of one way of running udptrace.
#[derive(Clone, Debug, Default)]
pub struct Startup {
    pub label: String,
    pub startups: Vec<Duration>,
    pub peak_rss_kib: Option<u64>,
    /// The proportional set size of udptrace and its privileged helper together, while tracing, in KiB.
    pub tracing_pss_kib: Option<u64>,
}

/// Issue 46's goals for the shipped binary: the tracer's peak resident memory from start to stop, and the
/// memory both processes hold while tracing (their PSS: what the fork shares is counted once), in KiB.
pub const PEAK_RSS_GOAL_KIB: u64 = 25 * 1024;
pub const TRACING_PSS_GOAL_KIB: u64 = 16 * 1024;

#[derive(Debug, Default)]
pub struct Report {
    pub hot: Vec<HotRow>,
    /// Every udptrace program loaded on the hot path, with the runs it made there.
    pub hot_programs: Vec<ProgramCost>,
    pub error: Vec<ErrorRow>,
    pub accounting: Vec<Accounting>,
    pub error_programs: Vec<ProgramCost>,
    pub startup: Vec<Startup>,
    /// The drop flood of one flow.
    pub drops: DropFlood,
    /// The drop flood over many flows, when it was measured.
    pub many_flows: Option<DropFlood>,
    /// Whether the error path and the drop flood were measured on tracked and translated flows too.
    pub conntrack_measured: bool,
    /// Modes or tools left out, and why.
    pub left_out: Vec<String>,
    /// What else happened that a reader of the figures should know (failed sends).
    pub notes: Vec<String>,
}

impl Report {
    /// Whether every udptrace run of the drop flood that accounts (`--json`, `--quiet`, `--summary`) showed
    /// every drop the kernel counted at the socket.
    pub fn drops_accounted(&self) -> bool {
        self.drops.accounted() && self.many_flows.as_ref().is_none_or(DropFlood::accounted)
    }

    /// Whether every udptrace run, with `--quiet` and with `--summary`, accounted for every error the kernel
    /// sent.
    pub fn accounted(&self) -> bool {
        !self.accounting.is_empty() && self.accounting.iter().all(Accounting::accounted)
    }

    pub fn markdown(&self, header: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{header}");

        let _ = writeln!(
            out,
            "\n### 1. Hot path: {DATAGRAM_BYTES}-byte datagrams to an open port, received by a process that keeps up\n\n\
             `send()` on a connected socket, in a process of its own; `recvmmsg()` into a 64 MiB buffer in another. \
             Sent, received and the server's `Udp:` error counters are summed over the rounds; a datagram took the \
             healthy path if it was received and neither `RcvbufErrors` nor `InErrors` moved.\n\n\
             | variant | datagrams/s (median) | ratio to no tracer (median of rounds) | sent | received | `RcvbufErrors` | `InErrors` | every datagram on the healthy path |\n\
             |---|---:|---:|---:|---:|---:|---:|---|"
        );
        for row in &self.hot {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.3} | {} | {} | {} | {} | {} |",
                row.label,
                row.rate,
                row.ratio,
                row.sent,
                row.received,
                row.rcvbuf_errors,
                row.in_errors,
                rounds_word(row.healthy_rounds, row.rounds)
            );
        }
        let _ = writeln!(
            out,
            "\nEvery program udptrace loaded, with what it ran while the hot path was measured (BPF statistics, all \
             rounds): a program that ran for every datagram would show about 1 run per datagram.\n"
        );
        programs(&mut out, &self.hot_programs);

        let _ = writeln!(
            out,
            "\n### 2. Error path: {DATAGRAM_BYTES}-byte datagrams to a closed port, ICMP rate limits off\n\n\
             `send_to()` on an unconnected socket, in a process of its own: each datagram draws a port unreachable, \
             and no error reaches the sender. `udptrace MODE` prints a text line per event to a pipe that is read \
             and dropped; `--quiet` and `--summary 1` only count. What naming a socket's owner costs: the \
             `connected sender` sends with `send()` on a socket connected to the closed port, so that the kernel \
             tells the socket of every port unreachable (and the next send fails with ECONNREFUSED, not counted \
             as sent); udptrace `--json --netns CLIENT` then shows a `socket_error` per datagram, read and \
             counted by the harness, whose owner the programs recorded (the socket opened after udptrace \
             started) or, `socket older than udptrace`, udptrace's privileged helper looked up in /proc, a \
             request per event: compare those two rows, and their ratios with the connected sender's without \
             a tracer. Where udptrace cannot keep up, its buffer fills and the records it loses cost the programs \
             less, so that a request's cost shows in the lost count and the CPU per event below rather than in \
             the rate. The variants ending `, tracked` and `, DNAT` run on flows conntrack tracks or translates \
             (section {CONNTRACK_SECTION}), each compared with no tracer on the same flows. Sent and port \
             unreachables (`IcmpMsg: OutType3`) over all rounds.\n\n\
             | variant | datagrams/s (median) | ratio to no tracer on the same flows (median of rounds) | sent | port unreachables sent |\n\
             |---|---:|---:|---:|---:|"
        );
        for row in &self.error {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.3} | {} | {} |",
                row.label, row.rate, row.ratio, row.sent, row.unreachables
            );
        }
        let _ = writeln!(
            out,
            "\nEvery port unreachable the kernel sent, as udptrace accounted for it, over all rounds (in tracepoint \
             mode the kernel's count includes those it failed to queue, which the tracepoint sees; a round accounts when \
             its events are no more than the kernel sent and its events and lost together no fewer: runs the kernel \
             skipped are counted lost before the `--netns` filter). With `--netns CLIENT` the kernel's count is the \
             port unreachables the client received (`IcmpMsg: InType3`), and a round accounts only if every event \
             names an owner and, as the variant claims, every one (socket older than udptrace) or none (the \
             programs' records) has the `holders` only /proc gives, and every one (`in a pod`) or none names a pod. \
             CPU per event: udptrace's CPU time (user and \
             system, its helper's included) from the sender's start to the end of the wait after it, per event \
             shown:\n\n\
             | variant | counted from | rounds | kernel sent | events | lost | owner from /proc | accounted | CPU per event (us) |\n\
             |---|---|---:|---:|---:|---:|---:|---|---:|"
        );
        for a in &self.accounting {
            let from_proc = a.owners.map_or_else(|| "-".to_owned(), |o| o.from_proc.to_string());
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {from_proc} | {} | {} |",
                a.label,
                a.source,
                a.rounds,
                a.kernel,
                a.events,
                a.lost,
                rounds_word(a.accounted_rounds, a.rounds),
                a.cpu_per_event()
            );
        }
        let _ = writeln!(
            out,
            "\nudptrace's programs on the error path, and the bpftrace script's (BPF statistics, all rounds):\n"
        );
        programs(&mut out, &self.error_programs);
        let _ = writeln!(out, "\n{}", error_cost_goal(&self.error_programs));

        let _ = writeln!(
            out,
            "\n### 3. Start-up and memory\n\n| udptrace | spawn to `udptrace: tracing` (median) | starts | peak RSS (largest) | PSS while tracing, both processes (largest) |\n|---|---:|---:|---:|---:|"
        );
        for s in &self.startup {
            let mut ms: Vec<f64> = s.startups.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
            let _ = writeln!(
                out,
                "| {} | {:.0} ms | {} | {} | {} |",
                s.label,
                median(&mut ms),
                s.startups.len(),
                mib(s.peak_rss_kib),
                mib(s.tracing_pss_kib)
            );
        }
        let _ = writeln!(out, "\n{}", memory_goals(&self.startup));

        drop_section(&mut out, "4", &self.drops);
        if let Some(many) = &self.many_flows {
            drop_section(&mut out, "5", many);
        }
        if self.conntrack_measured {
            let number = if self.many_flows.is_some() { "6" } else { "5" };
            conntrack_section(&mut out, number, self);
        }
        for (title, lines) in [("Left out here", &self.left_out), ("Also seen", &self.notes)] {
            if !lines.is_empty() {
                let _ = writeln!(out, "\n{title}:\n");
                for line in lines {
                    let _ = writeln!(out, "- {line}");
                }
            }
        }
        out
    }
}

/// Section `number`: a drop flood, its rates, udptrace's accounting and its programs.
fn drop_section(out: &mut String, number: &str, flood: &DropFlood) {
    // The goal: the one-liner's ratio where it was measured in the same run, else DROP_GOAL.
    let one_liner = flood.rows.iter().find(|r| r.label == Variant::BpftraceDrops.label()).map(|r| r.ratio);
    let goal = one_liner.filter(|r| r.is_finite()).unwrap_or(DROP_GOAL);
    let goal_name = if one_liner.is_some() { "the one-liner's".to_owned() } else { format!("{DROP_GOAL:.2}") };
    let (title, sender) = if flood.flows > 1 {
        (
            format!(
                "Drop flood over {} flows: {DATAGRAM_BYTES}-byte datagrams from as many source ports to a receiver that never reads",
                flood.flows
            ),
            format!(
                "A sender in a process of its own writing each datagram to a raw socket from the next of {} source \
                 ports in turn (no flow repeats within {} datagrams: more than the programs' per-CPU last-flow \
                 caches and their table of flows handed over this second hold)",
                flood.flows, flood.flows
            ),
        )
    } else {
        (
            format!("Drop flood: {DATAGRAM_BYTES}-byte datagrams to a receiver that never reads"),
            "The hot path's sender, `send()` on a connected socket to an open port in a process of its own".to_owned(),
        )
    };
    let rcvbuf = flood.rcvbuf.map_or_else(String::new, |n| format!(", which the kernel makes {n}"));
    let _ = writeln!(
        out,
        "\n### {number}. {title}\n\n\
         {sender}, to a \
         receiver whose socket has `SO_RCVBUF` {SINK_RCVBUF}{rcvbuf}, and which reads nothing until the end: \
         nearly every datagram finds its buffer full, is dropped and counted in the server's \
         `Udp: RcvbufErrors`, and passes `skb:kfree_skb`, where udptrace sees drops. udptrace counts such a \
         flood in the kernel, one `udp_dropped` event per reason, flow and socket a second with a count, so \
         the goal is a ratio to no tracer of at least {goal_name} ({goal:.3}). `udptrace MODE` prints a text line per \
         event to a pipe that is read and dropped; `--json` is read by the harness and accounted; `--quiet` and \
         `--summary 1` only count; the bpftrace one-liner `{}` counts the drops by reason; the variants ending \
         `, tracked` and `, DNAT` run on flows conntrack tracks or translates (section {CONNTRACK_SECTION}), each \
         compared with no tracer on the same flows. Sent, `RcvbufErrors`, what the receiver found queued at the \
         end, and what is left (neither dropped at the socket nor read), over all rounds.\n\n\
         | variant | datagrams/s (median) | ratio to no tracer on the same flows (median of rounds) | at least {goal_name} | sent | `RcvbufErrors` | read at the end | left |\n\
         |---|---:|---:|---|---:|---:|---:|---:|",
        super::paths::BPFTRACE_DROPS
    );
    for row in &flood.rows {
        let bare = [Variant::Bare.label(), Variant::BpftraceDrops.label()].contains(&row.label)
            || Ct::ALL.iter().any(|ct| row.label == Variant::Conntrack(*ct, Box::new(Variant::Bare)).label());
        let goal = if bare {
            "-"
        } else if row.ratio >= goal {
            "yes"
        } else {
            "NO"
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.3} | {goal} | {} | {} | {} | {} |",
            row.label,
            row.rate,
            row.ratio,
            row.sent,
            row.rcvbuf_errors,
            row.drained,
            row.elsewhere()
        );
    }
    let _ = writeln!(
        out,
        "\nEvery drop the kernel counted at the socket (`RcvbufErrors`), as udptrace showed it, over all rounds: \
         with `--json` the sum of `count` of the `udp_dropped` events to the receiver, with `--summary 1` of the \
         `udp_dropped` rows of the last table (the whole run's), with `--quiet` the closing line's events. A \
         round accounts when the drops shown are no more than the kernel counted and, with the lost count, no \
         fewer. Events: how many `udp_dropped` events stood for those drops (the largest `count` of one), \
         and how many were about another destination.\n\n\
         | variant | counted from | rounds | kernel `RcvbufErrors` | drops shown | events (largest count) | about others | lost | accounted | by reason |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for a in &flood.accounting {
        let events = a.shown.events.map_or_else(|| "-".to_owned(), |n| format!("{n} ({})", a.shown.largest));
        let reasons = if a.shown.reasons.is_empty() {
            "-".to_owned()
        } else {
            a.shown.reasons.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {events} | {} | {} | {} | {reasons} |",
            a.label,
            a.source,
            a.rounds,
            a.kernel,
            a.shown.drops,
            a.shown.elsewhere,
            a.lost,
            rounds_word(a.accounted_rounds, a.rounds)
        );
    }
    if flood.accounting.is_empty() {
        let _ = writeln!(out, "| (no udptrace variant was measured) | | | | | | | | | |");
    }
    let _ = writeln!(
        out,
        "\nudptrace's programs in the drop flood, and the bpftrace one-liner's (BPF statistics, all rounds): the \
         one on `skb:kfree_skb` runs for every datagram dropped, so about once per datagram sent.\n"
    );
    programs(out, &flood.programs);
    let _ = writeln!(out, "\n{}", drop_cost_goal(&flood.programs));
}

/// Issue 46's goals per event: an error costs at most this much in all of udptrace's programs together when
/// it is counted (`--quiet`, `--summary`), and a drop at most [`DROP_RUN_GOAL_NS`] in the drop program.
pub const ERROR_GOAL_NS: f64 = 300.0;
pub const DROP_RUN_GOAL_NS: f64 = 120.0;

/// What an error costs each counting variant in all its programs together (their time over the datagrams
/// sent, each of which drew one error), against [`ERROR_GOAL_NS`].
pub fn error_cost_goal(rows: &[ProgramCost]) -> String {
    let mut variants: BTreeMap<&str, (u64, u64, Vec<String>)> = BTreeMap::new();
    for p in rows.iter().filter(|p| p.variant.starts_with("udptrace") && counting(&p.variant) && p.runs > 0) {
        let entry = variants.entry(&p.variant).or_insert((0, p.datagrams, Vec::new()));
        entry.0 += p.run_time_ns;
        // A program that ran for a few sockets (the cgroup hooks) adds its time, not a name to the sum.
        let share = p.run_time_ns as f64 / p.datagrams.max(1) as f64;
        if share >= 0.5 {
            entry.2.push(format!("{} {share:.0}", p.name));
        }
    }
    let lines: Vec<String> = variants
        .iter()
        .map(|(variant, (ns, datagrams, parts))| {
            let per_error = *ns as f64 / (*datagrams).max(1) as f64;
            let verdict = if per_error <= ERROR_GOAL_NS { "met" } else { "not met" };
            format!("`{variant}` {per_error:.0} ns ({}): {verdict}", parts.join(" + "))
        })
        .collect();
    let found = if lines.is_empty() { "no counting variant was measured".to_owned() } else { lines.join("; ") };
    format!(
        "Goal: an error counted costs at most {ERROR_GOAL_NS:.0} ns in all of udptrace's programs together, per datagram sent: {found}."
    )
}

/// Whether a variant only counts (its programs count in the kernel).
fn counting(variant: &str) -> bool {
    variant.contains("--quiet") || variant.contains("--summary")
}

/// The drop program's cost per run in each udptrace variant, against [`DROP_RUN_GOAL_NS`] and the
/// one-liner's program on the same drops.
pub fn drop_cost_goal(rows: &[ProgramCost]) -> String {
    let per_run = |p: &ProgramCost| p.run_time_ns as f64 / p.runs.max(1) as f64;
    let one_liner = rows.iter().find(|p| p.variant == "bpftrace one-liner" && p.runs > 0).map(per_run);
    let goal = one_liner.map_or(DROP_RUN_GOAL_NS, |ns| ns.min(DROP_RUN_GOAL_NS));
    let lines: Vec<String> = rows
        .iter()
        .filter(|p| p.variant.starts_with("udptrace") && p.name.contains("kfree_skb") && p.runs > 0)
        .map(|p| {
            let ns = per_run(p);
            format!("`{}` {ns:.0} ns: {}", p.variant, if ns <= goal { "met" } else { "not met" })
        })
        .collect();
    let beside = one_liner.map_or_else(|| "not measured".to_owned(), |ns| format!("{ns:.0} ns"));
    let found = if lines.is_empty() { "no udptrace variant was measured".to_owned() } else { lines.join("; ") };
    format!(
        "Goal: the drop program at most {DROP_RUN_GOAL_NS:.0} ns a run, and below the bpftrace one-liner's \
         program on the same drops ({beside}): {found}."
    )
}

/// KiB as MiB, `?` where not measured.
fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
}

/// The memory goals ([`PEAK_RSS_GOAL_KIB`], [`TRACING_PSS_GOAL_KIB`]) against the largest of `startups`: met
/// where every way of running udptrace stayed within it.
pub fn memory_goals(startups: &[Startup]) -> String {
    let verdict = |goal: u64, largest: Option<u64>| match largest {
        Some(kib) if kib <= goal => format!("met ({} at most)", mib(Some(kib))),
        Some(kib) => format!("not met ({} at most)", mib(Some(kib))),
        None => "not measured".to_owned(),
    };
    let peak = startups.iter().filter_map(|s| s.peak_rss_kib).max();
    let tracing = startups.iter().filter_map(|s| s.tracing_pss_kib).max();
    format!(
        "Goals: peak RSS at most {}: {}; PSS while tracing, both processes, at most {}: {}.",
        mib(Some(PEAK_RSS_GOAL_KIB)),
        verdict(PEAK_RSS_GOAL_KIB, peak),
        mib(Some(TRACING_PSS_GOAL_KIB)),
        verdict(TRACING_PSS_GOAL_KIB, tracing)
    )
}

/// The section on conntrack, by its title: where the rate tables send the reader.
const CONNTRACK_SECTION: &str = "\"Conntrack\"";

/// How much more a program may cost per run on a tracked flow than on an untracked one: the goal.
pub const CONNTRACK_GOAL: f64 = 1.10;

/// One program of one udptrace variant, on untracked, tracked and translated flows (each over all rounds).
#[derive(Clone, Debug)]
pub struct ConntrackCost<'a> {
    /// The udptrace variant on untracked flows (`udptrace tracepoint`).
    pub variant: &'a str,
    pub program: &'a str,
    pub untracked: Option<&'a ProgramCost>,
    pub tracked: Option<&'a ProgramCost>,
    pub translated: Option<&'a ProgramCost>,
}

impl ConntrackCost<'_> {
    /// The cost per run on tracked flows over that on untracked ones: the median of the rounds' ratios.
    pub fn tracked_ratio(&self) -> Option<f64> {
        self.tracked?.paired_ratio(self.untracked?)
    }

    /// The same on translated flows.
    pub fn translated_ratio(&self) -> Option<f64> {
        self.translated?.paired_ratio(self.untracked?)
    }
}

/// A program runs on the path measured when it ran for at least this share of the datagrams sent; the others
/// ran for set-up or for other traffic, a few times, and their cost per run says nothing of the path.
const ON_THE_PATH: f64 = 0.5;

/// A program's nanoseconds per run, if it ran.
fn per_run(cost: &ProgramCost) -> Option<f64> {
    (cost.runs > 0).then(|| cost.run_time_ns as f64 / cost.runs as f64)
}

/// The programs of `rows` measured on tracked or translated flows, each beside its cost on untracked flows in
/// the variant of the same udptrace; only those on the path measured in one of the three ([`ON_THE_PATH`]).
pub fn conntrack_costs(rows: &[ProgramCost]) -> Vec<ConntrackCost<'_>> {
    let suffix = |ct: Ct| format!(", {}", ct.word());
    let find = |variant: &str, program: &str| rows.iter().find(|p| p.variant == variant && p.name == program);
    let mut costs: Vec<ConntrackCost> = Vec::new();
    for row in rows {
        let Some(base) = Ct::ALL.iter().find_map(|ct| row.variant.strip_suffix(&suffix(*ct))) else {
            continue;
        };
        if costs.iter().any(|c| c.variant == base && c.program == row.name) {
            continue;
        }
        let cost = ConntrackCost {
            variant: base,
            program: &row.name,
            untracked: find(base, &row.name),
            tracked: find(&format!("{base}{}", suffix(Ct::Tracked)), &row.name),
            translated: find(&format!("{base}{}", suffix(Ct::Translated)), &row.name),
        };
        if [cost.untracked, cost.tracked, cost.translated]
            .into_iter()
            .flatten()
            .any(|p| p.runs > 0 && p.runs_per_datagram() >= ON_THE_PATH)
        {
            costs.push(cost);
        }
    }
    costs
}

/// Section `number`: what the programs cost per run on tracked and translated flows, beside untracked ones.
fn conntrack_section(out: &mut String, number: &str, report: &Report) {
    let _ = writeln!(
        out,
        "\n### {number}. Conntrack: the programs' cost per run on tracked and translated flows\n\n\
         Some of the error path's and the drop flood's udptrace variants measured again, in the same rounds: \
         `--quiet`, whose programs read each error's entry as every variant's do but hand over no record (the \
         cost of a record handed over, and of waking its reader, varies by more than the entry's read costs), \
         the owner the programs recorded (a `socket_error` handed over per error), and the drop flood's \
         `--json`; on flows conntrack tracks but does not translate (`, tracked`: a `ct state` rule in the input and output chains \
         of both namespaces) and on flows it translates (`, DNAT`: the sender sends to the Service address \
         {SERVICE}, which the client's OUTPUT translates to {SERVICE_HOP} and the server's PREROUTING to \
         {SERVER}, so that the entries on both sides are translated ones). Each program that runs on the path \
         (for at least {ON_THE_PATH} of the datagrams sent), its runs and nanoseconds per run over all rounds (BPF \
         statistics: run time over runs), and the ratio of its cost per run to that on untracked flows, the median \
         of the rounds' ratios (each round measures the three); the goal on tracked flows is at most \
         {CONNTRACK_GOAL:.2}.\n\n\
         | path | variant | program | runs | ns per run | runs, tracked | ns per run, tracked | ratio (median of rounds) | at most {CONNTRACK_GOAL:.2} | runs, DNAT | ns per run, DNAT | ratio (median of rounds) |\n\
         |---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"
    );
    let cell = |cost: Option<&ProgramCost>| match cost {
        Some(p) => (p.runs.to_string(), per_run(p).map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0}"))),
        None => ("-".to_owned(), "-".to_owned()),
    };
    let ratio = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}"));
    let mut any = false;
    for (path, rows) in [("error path", &report.error_programs), ("drop flood", &report.drops.programs)] {
        for cost in conntrack_costs(rows) {
            any = true;
            let (untracked, tracked, translated) = (cell(cost.untracked), cell(cost.tracked), cell(cost.translated));
            let goal = match cost.tracked_ratio() {
                Some(r) if r <= CONNTRACK_GOAL => "yes",
                Some(_) => "NO",
                None => "-",
            };
            let _ = writeln!(
                out,
                "| {path} | {} | {} | {} | {} | {} | {} | {} | {goal} | {} | {} | {} |",
                cost.variant,
                cost.program,
                untracked.0,
                untracked.1,
                tracked.0,
                tracked.1,
                ratio(cost.tracked_ratio()),
                translated.0,
                translated.1,
                ratio(cost.translated_ratio())
            );
        }
    }
    if !any {
        let _ = writeln!(out, "| (no udptrace variant was measured) | | | | | | | | | | | |");
    }
}

fn rounds_word(ok: usize, all: usize) -> String {
    if ok == all && all > 0 { "yes".to_owned() } else { format!("NO ({ok} of {all} rounds)") }
}

/// The table of udptrace's programs and their runs.
fn programs(out: &mut String, rows: &[ProgramCost]) {
    let _ =
        writeln!(out, "| variant | program | runs | runs per datagram sent | ns per run |\n|---|---|---:|---:|---:|");
    for p in rows {
        let per_run = if p.runs == 0 { "-".to_owned() } else { format!("{:.0}", p.run_time_ns as f64 / p.runs as f64) };
        let _ = writeln!(out, "| {} | {} | {} | {:.3} | {per_run} |", p.variant, p.name, p.runs, p.runs_per_datagram());
    }
    if rows.is_empty() {
        let _ = writeln!(out, "| (no udptrace variant was measured) | | | | |");
    }
}
