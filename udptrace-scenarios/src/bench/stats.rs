//! BPF statistics: which programs a udptrace holds, what each ran (runs and run time) between two reads,
//! summed per variant over rounds.

use std::collections::{BTreeMap, BTreeSet};

use super::{ProgramCost, Variant};

/// The eBPF programs process `pid` holds, through a program or a link fd (`prog_id:` in its fdinfo).
pub(super) fn programs_of(pid: u32) -> BTreeSet<u32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:").and_then(|id| id.trim().parse().ok()))
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The ids of the loaded programs named as udptrace names its own. A program unloaded while the list is
/// read (another udptrace stopping) is left out, not an error.
pub(super) fn loaded_program_ids() -> BTreeSet<u32> {
    let ours = |name: &str| {
        ["fentry_", "fexit_", "kprobe_", "kretprobe_", "tp_", "cgroup_"].iter().any(|p| name.starts_with(p))
    };
    aya::programs::loaded_programs()
        .flatten()
        .filter(|info| info.name_as_str().is_some_and(ours))
        .map(|info| info.id())
        .collect()
}

/// The ids of every loaded program: those a tool loaded are the ones that appear while it starts (bpftrace
/// attaches through perf events and keeps no program fd for `programs_of` to find).
pub(super) fn all_program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs().flatten().map(|info| info.id()).collect()
}

/// The programs of a tool that `start` starts: those it holds, else those loaded meanwhile (none if it did
/// not start).
pub(super) fn tool_programs<T>(start: impl FnOnce() -> T, pid: impl Fn(&T) -> Option<u32>) -> (T, BTreeSet<u32>) {
    let before = all_program_ids();
    let tool = start();
    let Some(pid) = pid(&tool) else { return (tool, BTreeSet::new()) };
    // bpftrace says it is attaching before it loads: its programs are waited for, a few seconds at most.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let held = programs_of(pid);
        let new: BTreeSet<u32> = all_program_ids().difference(&before).copied().collect();
        if !held.is_empty() || !new.is_empty() || std::time::Instant::now() > deadline {
            return (tool, if held.is_empty() { new } else { held });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Per program id: its name, run count and run time (ns) now.
pub(super) type Stats = BTreeMap<u32, (String, u64, u64)>;

pub(super) fn stats_of(ids: &BTreeSet<u32>) -> Stats {
    aya::programs::loaded_programs()
        .flatten()
        .filter(|info| ids.contains(&info.id()))
        .map(|info| {
            let name = info.name_as_str().unwrap_or("?").to_owned();
            (info.id(), (name, info.run_count(), info.run_time().as_nanos() as u64))
        })
        .collect()
}

/// Program costs summed over rounds, by variant and program.
#[derive(Default)]
pub(super) struct Costs(BTreeMap<(String, String), ProgramCost>);

impl Costs {
    /// Adds what each program did between `before` and `after`, while `datagrams` were sent.
    pub(super) fn add(&mut self, label: &str, before: &Stats, after: &Stats, datagrams: u64) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, (name, runs, time)) in after {
            let (runs_before, time_before) = before.get(id).map_or((0, 0), |(_, r, t)| (*r, *t));
            let nth = seen.entry(name).or_default();
            *nth += 1;
            let name = if *nth == 1 { name.clone() } else { format!("{name} #{nth}") };
            let cost = self.0.entry((label.to_owned(), name.clone())).or_insert_with(|| ProgramCost {
                variant: label.to_owned(),
                name,
                runs: 0,
                run_time_ns: 0,
                datagrams: 0,
                round_ns: Vec::new(),
            });
            let (runs, time) = (runs.saturating_sub(runs_before), time.saturating_sub(time_before));
            cost.runs += runs;
            cost.run_time_ns += time;
            cost.datagrams += datagrams;
            cost.round_ns.push((runs > 0).then(|| time as f64 / runs as f64));
        }
    }

    pub(super) fn into_rows(self, order: &[Variant]) -> Vec<ProgramCost> {
        let mut rows: Vec<ProgramCost> = self.0.into_values().collect();
        let rank = |label: &str| order.iter().position(|v| v.label() == label).unwrap_or(usize::MAX);
        rows.sort_by(|a, b| (rank(&a.variant), &a.name).cmp(&(rank(&b.variant), &b.name)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(entries: &[(u32, &str, u64, u64)]) -> Stats {
        entries.iter().map(|(id, name, runs, ns)| (*id, ((*name).to_owned(), *runs, *ns))).collect()
    }

    #[test]
    fn program_costs_add_up_over_rounds_and_keep_namesakes_apart() {
        let mut costs = Costs::default();
        let label = "udptrace fentry";
        // Round 1: two programs of one (truncated) name, one that never runs.
        costs.add(
            label,
            &stats(&[(10, "kretprobe_looku", 5, 50), (11, "kretprobe_looku", 0, 0), (12, "tp_icmp_send", 0, 0)]),
            &stats(&[
                (10, "kretprobe_looku", 105, 1050),
                (11, "kretprobe_looku", 100, 2000),
                (12, "tp_icmp_send", 0, 0),
            ]),
            100,
        );
        // Round 2: the same programs loaded again, under new ids.
        costs.add(
            label,
            &Stats::new(),
            &stats(&[(20, "kretprobe_looku", 300, 3000), (21, "kretprobe_looku", 0, 0), (22, "tp_icmp_send", 0, 0)]),
            300,
        );
        let rows = costs.into_rows(&[Variant::Bare, Variant::Udptrace("fentry".into())]);
        let got: Vec<(&str, u64, u64, u64)> =
            rows.iter().map(|p| (p.name.as_str(), p.runs, p.run_time_ns, p.datagrams)).collect();
        assert_eq!(
            got,
            vec![
                ("kretprobe_looku", 400, 4000, 400),
                ("kretprobe_looku #2", 100, 2000, 400),
                ("tp_icmp_send", 0, 0, 400)
            ]
        );
        assert_eq!(rows[0].runs_per_datagram(), 1.0);
        assert_eq!(rows[0].round_ns, vec![Some(10.0), Some(10.0)]);
        assert_eq!(rows[2].round_ns, vec![None, None]);
    }
}
