//! Where a test run's time goes: the stages of `cargo xtask test`, each VM's boot, modes, demo starts,
//! udptrace loads and benchmark, and the slowest scenarios, from the `took` and `loads` lines the suite
//! prints and the `clock` lines the VM's init prints.

use std::time::Duration;

/// One scenario's time, as the suite printed it: `PLACE SCENARIO took SECONDS s`, where PLACE is the mode
/// in a VM (`fentry`) or the mode and buffer on the host (`tracepoint/ring`).
#[derive(Debug, Clone, PartialEq)]
pub struct Took {
    /// Where it ran: the kernel (filled in by the caller) and the place.
    pub place: String,
    pub scenario: String,
    pub seconds: f64,
    /// The longest one of its events took from the kernel to the suite.
    pub slowest_event: Option<f64>,
}

/// Reads a suite line `PLACE SCENARIO took SECONDS s, slowest event SECONDS s`.
pub fn parse_took(line: &str) -> Option<Took> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let (place, scenario, seconds, rest) = match words.as_slice() {
        [place, scenario, "took", seconds, s, rest @ ..] if s.trim_end_matches(',') == "s" => {
            (place, scenario, seconds, rest)
        }
        _ => return None,
    };
    let slowest_event = match rest {
        ["slowest", "event", seconds, "s"] => seconds.parse().ok(),
        _ => None,
    };
    Some(Took {
        place: (*place).to_owned(),
        scenario: (*scenario).to_owned(),
        seconds: seconds.parse().ok()?,
        slowest_event,
    })
}

/// The slowest event of each place among `took`, and its scenario, leaving out `except` (the flood, whose
/// events wait behind each other by design).
pub fn slowest_events(took: &[Took], except: &str) -> String {
    let mut places: Vec<(&str, f64, &str)> = Vec::new();
    for t in took.iter().filter(|t| t.scenario != except && t.scenario != "suite") {
        let Some(late) = t.slowest_event else { continue };
        match places.iter_mut().find(|(p, _, _)| *p == t.place) {
            Some(entry) if entry.1 < late => *entry = (&t.place, late, &t.scenario),
            Some(_) => {}
            None => places.push((&t.place, late, &t.scenario)),
        }
    }
    let mut out = format!("the slowest event from the kernel to the suite, per run (but {except}):\n");
    for (place, late, scenario) in places {
        out.push_str(&format!("  {place:<40} {late:>6.2} s  in {scenario}\n"));
    }
    out
}

/// Reads a suite line `PLACE udptrace loads N in SECONDS s, and N check runs in SECONDS s`: the place and
/// what follows `loads`.
pub fn parse_loads(line: &str) -> Option<(String, String)> {
    let mut words = line.split_whitespace();
    let (place, who, what) = (words.next()?, words.next()?, words.next()?);
    (who == "udptrace" && what == "loads").then(|| (place.to_owned(), words.collect::<Vec<_>>().join(" ")))
}

/// The stages of one `cargo xtask test`, in order.
#[derive(Debug)]
pub struct Stages {
    started: std::time::Instant,
    stages: Vec<(String, Duration)>,
}

impl Default for Stages {
    fn default() -> Self {
        Self { started: std::time::Instant::now(), stages: Vec::new() }
    }
}

impl Stages {
    /// Records a stage timed elsewhere (one that ran beside others).
    pub fn add(&mut self, name: &str, took: Duration) {
        self.stages.push((name.to_owned(), took));
    }

    /// Runs `stage`, recording how long it took under `name`.
    pub fn time<T>(&mut self, name: &str, stage: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let result = stage();
        self.stages.push((name.to_owned(), started.elapsed()));
        result
    }

    /// The stages, and the whole run's time (less than their sum where some ran side by side).
    pub fn render(&self) -> String {
        let mut out = format!("the stages of this run ({:.0} s in all):\n", self.started.elapsed().as_secs_f64());
        for (name, took) in &self.stages {
            out.push_str(&format!("  {name:<48} {:>6.0} s\n", took.as_secs_f64()));
        }
        out
    }
}

/// The `clock` lines of one VM: (name, seconds the VM had been up).
pub fn clock(clocks: &[(String, f64)], name: &str) -> Option<f64> {
    clocks.iter().find(|(n, _)| n == name).map(|(_, at)| *at)
}

/// One VM's time, stage by stage: boot to init, modules, `udptrace probes`, each mode (the demo's start
/// within it), the benchmark, QEMU's own start and stop.
pub fn vm_row(kernel: &str, wall: Duration, clocks: &[(String, f64)], modes: &[&str]) -> String {
    let between = |from: &str, to: &str| match (clock(clocks, from), clock(clocks, to)) {
        (Some(a), Some(b)) => format!("{:.0} s", b - a),
        _ => "-".to_owned(),
    };
    let mut parts = vec![
        format!("boot {}", clock(clocks, "init").map_or("-".to_owned(), |at| format!("{at:.0} s"))),
        format!("modules {}", between("init", "modules")),
        format!("probes {}", between("modules", "probes")),
    ];
    for mode in modes {
        let (begin, end) = (format!("begin-{mode}"), format!("end-{mode}"));
        if clock(clocks, &begin).is_none() {
            continue;
        }
        let mut part = format!("{mode} {}", between(&begin, &end));
        if clock(clocks, &format!("demo-{mode}")).is_some() {
            part.push_str(&format!(" (demo start {})", between(&begin, &format!("demo-{mode}"))));
        }
        parts.push(part);
    }
    if clock(clocks, "bench").is_some() {
        parts.push(format!("bench {}", between("bench", "done")));
    }
    if let Some(done) = clock(clocks, "done") {
        parts.push(format!("qemu {:.0} s", (wall.as_secs_f64() - done).max(0.0)));
    }
    format!("  {kernel} ({:.0} s): {}\n", wall.as_secs_f64(), parts.join(", "))
}

/// The `count` slowest of `took`, slowest first, leaving out the whole-run lines (`suite`, `udptrace`).
pub fn slowest(took: &[Took], count: usize) -> String {
    let mut scenarios: Vec<&Took> = took.iter().filter(|t| t.scenario != "suite").collect();
    scenarios.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let mut out = format!("the {count} slowest scenarios:\n");
    for t in scenarios.into_iter().take(count) {
        out.push_str(&format!("  {:>6.1} s  {:<40} {}\n", t.seconds, t.place, t.scenario));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_suites_timing_lines() {
        assert_eq!(
            parse_took("fentry      check_no_arp           took             12.5 s"),
            Some(Took { place: "fentry".into(), scenario: "check_no_arp".into(), seconds: 12.5, slowest_event: None })
        );
        assert_eq!(
            parse_took("fentry  flood  took  12.5 s, slowest event 0.25 s").and_then(|t| t.slowest_event),
            Some(0.25)
        );
        assert_eq!(
            parse_took("tracepoint/ring  closed_port_ipv4  took  0.4 s").map(|t| t.place),
            Some("tracepoint/ring".into())
        );
        assert_eq!(parse_took("fentry      closed_port_ipv4       socket_error     pass"), None);
        assert_eq!(
            parse_loads("kprobe      udptrace               loads            9 in 80.0 s, and 0 check runs in 0.0 s"),
            Some(("kprobe".into(), "9 in 80.0 s, and 0 check runs in 0.0 s".into()))
        );
        assert_eq!(parse_loads("kprobe      udptrace               clean_stop       pass"), None);
    }

    #[test]
    fn a_vm_row_says_each_stage() {
        let clocks: Vec<(String, f64)> = [
            ("init", 6.0),
            ("modules", 8.0),
            ("probes", 20.0),
            ("begin-fentry", 20.0),
            ("demo-fentry", 50.0),
            ("end-fentry", 320.0),
            ("bench", 320.0),
            ("done", 400.0),
        ]
        .into_iter()
        .map(|(n, at)| (n.to_owned(), at))
        .collect();
        assert_eq!(
            vm_row("6.12", Duration::from_secs(403), &clocks, &["fentry", "kprobe"]),
            "  6.12 (403 s): boot 6 s, modules 2 s, probes 12 s, fentry 300 s (demo start 30 s), bench 80 s, qemu 3 s\n"
        );
    }

    #[test]
    fn lists_the_slowest_first() {
        let took = |scenario: &str, seconds| Took {
            place: "fentry".into(),
            scenario: scenario.into(),
            seconds,
            slowest_event: Some(seconds / 10.0),
        };
        let list = slowest(&[took("a", 1.0), took("suite", 99.0), took("b", 3.0), took("c", 2.0)], 2);
        assert_eq!(
            list,
            "the 2 slowest scenarios:\n     3.0 s  fentry                                   b\n     2.0 s  fentry                                   c\n"
        );
        assert!(
            slowest_events(&[took("a", 1.0), took("b", 3.0), took("flood", 9.0)], "flood").contains("0.30 s  in b")
        );
    }
}
