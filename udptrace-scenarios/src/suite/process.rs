//! udptrace as a process the operator runs: what its tracer and its helper hold, no program run on the
//! healthy path, every program unloaded when it is killed, the tracer going on when its helper dies, and
//! owner records that go with their sockets.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde_json::json;

use super::{
    CLOSED_PORT, Family, Results, SERVER_V4, TwoHosts, compare, conntrack,
    fixtures::SERVER_V6,
    is_socket_error_of,
    operator::refused_socket,
    procfs::{ThreadStatus, helper_alive, helper_of, kernel_release, kernel_version, threads_of},
};
use crate::{
    config::Config,
    outcome::Outcome,
    packets::{set_int_option, udp_socket},
    tracer::Tracer,
};

/// The ids of udptrace's eBPF programs loaded on this host: its programs' names start with the mode they
/// serve, which keeps out what other loaders (systemd, say) load meanwhile.
pub fn program_ids() -> Result<std::collections::BTreeSet<u32>> {
    let ours = |name: &str| {
        ["fentry_", "fexit_", "kprobe_", "kretprobe_", "tp_", "cgroup_"].iter().any(|p| name.starts_with(p))
    };
    let mut ids = std::collections::BTreeSet::new();
    for info in aya::programs::loaded_programs() {
        // A program unloaded between its id being listed and opened (another tracer stopping) is gone.
        let Ok(info) = info else { continue };
        if info.name_as_str().is_some_and(ours) {
            ids.insert(info.id());
        }
    }
    Ok(ids)
}

/// Each udptrace program's run count, by id and name.
fn run_counts() -> Result<std::collections::BTreeMap<u32, (String, u64)>> {
    let ids = program_ids()?;
    Ok(aya::programs::loaded_programs()
        .flatten()
        .filter(|info| ids.contains(&info.id()))
        .map(|info| (info.id(), (info.name_as_str().unwrap_or("?").to_owned(), info.run_count())))
        .collect())
}

/// What the helper keeps (`udptrace/src/privsep/`): CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19) for
/// other processes' `/proc/PID/fd` and `pidfd_getfd`, CAP_SYS_ADMIN (21) for `setns` into another network
/// namespace, CAP_NET_ADMIN (12) for ctnetlink (conntrack's entry of a flow).
const HELPER_CAPABILITIES: u64 = 1 << 2 | 1 << 12 | 1 << 19 | 1 << 21;

/// CAP_BPF (39), which the helper keeps too where every `bpf()` command asks for it.
const CAP_BPF: u64 = 1 << 39;

/// How long after a SIGKILL the kernel may take to free what the dead process held, and its helper to follow
/// it: the last reference goes a moment after the exit.
const AFTERMATH: Duration = Duration::from_secs(10);

/// What the helper holds on kernel `release` whose `kernel.unprivileged_bpf_disabled` reads `disabled`, and
/// the reason, for the failure text. Before 5.19, with unprivileged BPF off, every `bpf()` command needs
/// CAP_BPF (kernel/bpf/syscall.c `__sys_bpf`), the map operations the helper makes for the tracer among them;
/// 5.19 (commit c8644cd0efe7) asks it only of BPF_MAP_CREATE and BPF_PROG_LOAD, which the tracer made before
/// it forked.
fn helper_capabilities(release: &str, disabled: &str) -> Result<(u64, String)> {
    let version = kernel_version(release).with_context(|| format!("no kernel version in the release {release:?}"))?;
    Ok(if version >= (5, 19) {
        (HELPER_CAPABILITIES, format!("kernel {release} is 5.19 or later: no CAP_BPF"))
    } else if disabled == "0" {
        (
            HELPER_CAPABILITIES,
            format!("kernel {release} is before 5.19, but unprivileged_bpf_disabled is 0: no CAP_BPF"),
        )
    } else {
        (
            HELPER_CAPABILITIES | CAP_BPF,
            format!("kernel {release} is before 5.19 and unprivileged_bpf_disabled is {disabled}: CAP_BPF too"),
        )
    })
}

/// The capabilities the helper holds on the running kernel, and why.
fn helper_capabilities_here() -> Result<(u64, String)> {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .context("kernel.unprivileged_bpf_disabled")?;
    helper_capabilities(&kernel_release(), disabled.trim())
}

/// While tracing, the shared udptrace's tracer holds nothing in any thread: a uid and gid (real, effective,
/// saved, filesystem) other than root's, no supplementary group, every capability set empty, no new
/// privileges and a seccomp filter. Its helper holds exactly what its requests need, effective, permitted
/// and bounding, nothing inheritable or ambient, and no new privileges either.
pub fn capabilities_dropped(_config: &Config, shared: &mut Tracer) -> Result<Results> {
    let mut rows = tracer_rows(&threads_of(shared.pid(), "tracer")?);
    let helper = helper_of(shared.pid()).and_then(|pid| Ok((threads_of(pid, "helper")?, helper_capabilities_here()?)));
    let row_of = |faults: &dyn Fn(&ThreadStatus, u64, &str) -> Vec<String>| match &helper {
        Ok((threads, (want, why))) => row(threads, |thread| faults(thread, *want, why)),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    rows.extend([
        (
            "helper_holds_only",
            row_of(&|t, want, why| {
                ["CapEff", "CapPrm"].iter().filter_map(|field| exact_set(t, field, want, why)).collect()
            }),
        ),
        ("helper_bounded", row_of(&|t, want, why| exact_set(t, "CapBnd", want, why).into_iter().collect())),
        (
            "helper_inherits_none",
            row_of(&|t, _, _| ["CapInh", "CapAmb"].iter().filter_map(|field| exact_set(t, field, 0, "")).collect()),
        ),
        ("helper_no_new_privs", row_of(&|t, _, _| flag(t, "NoNewPrivs", "1").into_iter().collect())),
    ]);
    Ok(rows)
}

/// What every thread of a tracer holds, one row per property.
pub(super) fn tracer_rows(threads: &[ThreadStatus]) -> Results {
    vec![
        ("tracer_unprivileged", row(threads, not_root)),
        (
            "tracer_no_capability",
            row(threads, |t| {
                ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"]
                    .iter()
                    .filter_map(|field| exact_set(t, field, 0, ""))
                    .collect()
            }),
        ),
        ("tracer_no_new_privs", row(threads, |t| flag(t, "NoNewPrivs", "1").into_iter().collect())),
        // 2 is SECCOMP_MODE_FILTER.
        ("tracer_seccomp", row(threads, |t| flag(t, "Seccomp", "2").into_iter().collect())),
    ]
}

/// Passes if `faults` finds nothing wrong with any of `threads`, else names each thread and what is wrong.
fn row(threads: &[ThreadStatus], faults: impl Fn(&ThreadStatus) -> Vec<String>) -> Outcome {
    let wrong: Vec<String> =
        threads.iter().flat_map(|t| faults(t).into_iter().map(move |fault| format!("{}: {fault}", t.label))).collect();
    if wrong.is_empty() { Outcome::Pass } else { Outcome::Fail(wrong.join("; ")) }
}

/// What is root's about a thread: a 0 among its uids or gids, or any supplementary group.
fn not_root(thread: &ThreadStatus) -> Vec<String> {
    let mut wrong = Vec::new();
    for field in ["Uid", "Gid"] {
        match thread.ids(field) {
            Some(ids) if ids.len() == 4 && !ids.contains(&0) => {}
            got => wrong.push(format!("{field} {got:?}, want no 0 (real, effective, saved, filesystem)")),
        }
    }
    match thread.ids("Groups") {
        Some(groups) if groups.is_empty() => {}
        got => wrong.push(format!("Groups {got:?}, want none")),
    }
    wrong
}

/// What is wrong with the capability set `field` of a thread that must hold exactly `want` (`why`).
fn exact_set(thread: &ThreadStatus, field: &str, want: u64, why: &str) -> Option<String> {
    let got = thread.mask(field);
    let because = if why.is_empty() { String::new() } else { format!(" ({why})") };
    match got {
        Some(got) if got == want => None,
        Some(got) => Some(format!(
            "{field} {got:#x}, want {want:#x}{because}: extra capabilities {:?}, missing {:?}",
            bits(got & !want),
            bits(want & !got)
        )),
        None => Some(format!("{field} unreadable")),
    }
}

/// The capability numbers of `set`.
fn bits(set: u64) -> Vec<u32> {
    (0..64).filter(|bit| set & 1 << bit != 0).collect()
}

/// What is wrong with a thread whose `field` must read `want`.
fn flag(thread: &ThreadStatus, field: &str, want: &str) -> Option<String> {
    let got = thread.field(field);
    (got != Some(want)).then(|| format!("{field} {}, want {want}", got.unwrap_or("missing")))
}

/// Nothing on the healthy path: 20,000 datagrams received without error, with BPF statistics on, run no
/// program of the shared udptrace's more than a few times (a program that ran per datagram would count
/// 20,000 runs). Then one refused datagram: the statistics must see the error path run, or they counted
/// nothing and the first check proved nothing.
pub fn healthy_path(_config: &Config, _shared: &mut Tracer) -> Result<Results> {
    healthy(false)
}

/// [`healthy_path`] on a translated flow: conntrack on at both ends (a `ct state` rule), the client sending
/// to a Service address its OUTPUT chain DNATs to the receiver. Every datagram's entry is read by nothing.
pub fn healthy_path_nat(_config: &Config, _shared: &mut Tracer) -> Result<Results> {
    healthy(true)
}

fn healthy(nat: bool) -> Result<Results> {
    const DATAGRAMS: u64 = 20_000;
    const OPEN_PORT: u16 = 7100;
    let hosts = TwoHosts::new()?;
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), OPEN_PORT);
    // Where the sender sends: the receiver, or a Service address translated to it.
    let to = if nat {
        let service = SocketAddr::new(conntrack::SERVICE_V4.parse()?, OPEN_PORT);
        conntrack::route_services(&hosts.client, SERVER_V4, SERVER_V6)?;
        conntrack::dnat(&hosts.client, "output", service, server)?;
        conntrack::track(&hosts.client)?;
        conntrack::track(&hosts.server)?;
        service
    } else {
        server
    };
    let receiver = udp_socket(&hosts.server, server)?;
    receiver.set_read_timeout(Some(Duration::from_millis(500)))?;
    // Room for every datagram, so that none is dropped at the socket either: each takes the healthy path.
    set_int_option(&receiver, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20)?;
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut received = 0u64;
        while received < DATAGRAMS && receiver.recv(&mut buf).is_ok() {
            received += 1;
        }
        received
    });
    let sender = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    sender.connect(to)?;
    let before = run_counts()?;
    for _ in 0..DATAGRAMS {
        sender.send(b"healthy")?;
    }
    let received = reader.join().unwrap_or(0);
    let after = run_counts()?;
    // A program that ran per datagram counts at least one run per datagram received (an emulated machine
    // may drop some at the veth backlog, before any socket).
    let per_datagram: Vec<String> = after
        .iter()
        .filter_map(|(id, (name, runs))| {
            let delta = runs - before.get(id).map_or(0, |(_, r)| *r);
            (delta >= received / 10).then(|| format!("{name} ran {delta} times"))
        })
        .collect();
    let quiet = match (after.is_empty(), per_datagram.as_slice()) {
        (true, _) => Outcome::Fail("no udptrace program is loaded".to_owned()),
        _ if received < DATAGRAMS / 2 => {
            Outcome::Fail(format!("only {received} of {DATAGRAMS} datagrams arrived: the check would prove little"))
        }
        (false, []) => Outcome::Pass,
        (false, ran) => {
            Outcome::Fail(format!("for {DATAGRAMS} datagrams sent ({received} received): {}", ran.join(", ")))
        }
    };
    let (_refused, _) = refused_socket(&hosts, CLOSED_PORT)?;
    std::thread::sleep(Duration::from_millis(200));
    let error_runs: u64 = run_counts()?.iter().map(|(id, (_, runs))| runs - after.get(id).map_or(0, |(_, r)| *r)).sum();
    let counted = if error_runs > 0 {
        Outcome::Pass
    } else {
        Outcome::Fail("a refused datagram ran no udptrace program: the statistics count nothing".to_owned())
    };
    Ok(vec![("no_program_per_datagram", quiet), ("statistics_count", counted)])
}

/// SIGKILL leaves udptrace no chance to detach anything. Nothing is pinned, so the kernel must unload
/// every program udptrace loaded when the tracer dies, and its helper must die with it (`PR_SET_PDEATHSIG`).
/// The helper's SIGKILL before the tracer's is `helper_killed`'s, which has a udptrace to kill that way.
///
/// The victim runs with `-v`: the programs then log (aya-log), and the verifier must accept the log calls'
/// code too (`verbose_verifier_accepts`), which a start of its own would cost seconds under emulation.
pub fn sigkill_unloads(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    let before = program_ids()?;
    let mut victim = match Tracer::start(config, &["-v"]) {
        Ok(victim) => victim,
        Err(e) => {
            let failed = Outcome::Fail(format!("udptrace -v did not start: {e:#}"));
            return Ok(vec![
                ("verbose_verifier_accepts", failed.clone()),
                ("unloaded", failed.clone()),
                ("helper_gone", failed),
            ]);
        }
    };
    let rejected: Vec<&str> =
        victim.not_traced.iter().filter(|l| l.contains("verifier rejected")).map(String::as_str).collect();
    let verbose = if rejected.is_empty() { Outcome::Pass } else { Outcome::Fail(rejected.join("; ")) };
    let loaded = new_programs(&before)?;
    let helper = helper_of(victim.pid());
    victim.kill_hard()?;
    let unloads = unloaded(&loaded, "the tracer's SIGKILL");
    let helper_gone = match helper {
        Ok(helper) if within(AFTERMATH, || !helper_alive(helper)) => Outcome::Pass,
        Ok(helper) => Outcome::Fail(format!("the helper {helper} still runs {AFTERMATH:?} after the tracer's SIGKILL")),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    Ok(vec![("verbose_verifier_accepts", verbose), ("unloaded", unloads), ("helper_gone", helper_gone)])
}

/// The helper may die (a bug, the OOM killer): the tracer says so on standard error and goes on with what
/// needs no helper, a refused datagram's `socket_error` among it (its record comes through the buffer the
/// tracer holds). Then the tracer's SIGKILL must still unload its programs, which the helper never held:
/// `sigkill_unloads` with the helper gone first, on this udptrace, a start costing seconds under emulation.
/// With `--require-helper` the tracer stops instead (`required_stops`, `required_says_why`).
pub fn helper_killed(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let before = program_ids()?;
    let mut tracer = Tracer::start(config, &[])?;
    let loaded = new_programs(&before)?;
    // Before 5.19 with unprivileged BPF off the maps are read through the helper: without it the counts
    // would be wrong, so the tracer must stop, as with --require-helper.
    let (capabilities, why) = helper_capabilities_here()?;
    sigkill(helper_of(tracer.pid())?)?;
    if capabilities & CAP_BPF != 0 {
        let (stops, says_why) = stops_saying_why(&mut tracer, config, "udptrace whose maps go through the helper");
        let unloads = unloaded(&loaded, "the tracer's exit, its helper killed before it");
        let only_there = Outcome::Skip(format!("{why}: tracing stops without the helper, checked by `stops`"));
        return Ok(vec![
            ("says_helper_exited", says_why),
            ("still_traces", only_there),
            ("stops", stops),
            ("sigkill_unloads", unloads),
        ]);
    }
    let still_traces = if tracer.mode_of("socket_error").is_none() {
        Outcome::Skip(format!("the socket_error hook did not attach in {} mode here", config.mode))
    } else {
        let (_socket, local) = refused_socket(&hosts, CLOSED_PORT)?;
        let what = "socket_error for the refused datagram after the helper's SIGKILL";
        match tracer.expect(what, config.event_timeout, is_socket_error_of(&hosts.client, local)) {
            Ok(event) => match (compare(&event, &json!({"errno": "ECONNREFUSED"})), tracer.exited()) {
                (Outcome::Pass, Some(status)) => Outcome::Fail(format!("udptrace ended ({status}) after the event")),
                (outcome, _) => outcome,
            },
            Err(e) => Outcome::Fail(format!("{e:#}")),
        }
    };
    // Looked for after the event too: a tracer may learn of the exit only when it next asks the helper.
    let says = match tracer.expect_stderr("line saying the helper exited", config.event_timeout, |line| {
        line.contains("helper") && line.contains("exited")
    }) {
        Ok(_) if tracer.exited().is_none() => Outcome::Pass,
        Ok(line) => Outcome::Fail(format!("udptrace said {line:?}, then ended")),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    tracer.kill_hard()?;
    let unloads = unloaded(&loaded, "the tracer's SIGKILL, its helper killed before it");
    let (stops, says_why) = required_helper(config).unwrap_or_else(|e| {
        let failed = Outcome::Fail(format!("{e:#}"));
        (failed.clone(), failed)
    });
    Ok(vec![
        ("says_helper_exited", says),
        ("still_traces", still_traces),
        ("sigkill_unloads", unloads),
        ("required_stops", stops),
        ("required_says_why", says_why),
    ])
}

/// A udptrace started with `--require-helper` whose helper is killed: it must exit non-zero within the
/// event timeout, and say why in one error line that names the helper.
fn required_helper(config: &Config) -> Result<(Outcome, Outcome)> {
    let mut tracer = Tracer::start(config, &["--require-helper"])?;
    sigkill(helper_of(tracer.pid())?)?;
    Ok(stops_saying_why(&mut tracer, config, "udptrace --require-helper"))
}

/// Whether `tracer`, whose helper was killed, exits non-zero within the event timeout, and says why in one
/// error line that names the helper.
fn stops_saying_why(tracer: &mut Tracer, config: &Config, what: &str) -> (Outcome, Outcome) {
    let (status, said) = tracer.wait_exit(config.event_timeout);
    let stops = match status {
        Some(status) if status.code().is_some_and(|code| code != 0) => Outcome::Pass,
        Some(status) => Outcome::Fail(format!("{what} ended ({status}), want a non-zero exit")),
        None => Outcome::Fail(format!("{what} still ran {:?} after its helper's SIGKILL", config.event_timeout)),
    };
    let errors: Vec<&String> = said.iter().filter(|line| line.starts_with("udptrace: error: ")).collect();
    let says_why = match errors.as_slice() {
        [line] if line.contains("helper") => Outcome::Pass,
        _ => Outcome::Fail(format!("want one `udptrace: error:` line naming the helper; it wrote {said:?}")),
    };
    (stops, says_why)
}

/// SIGKILL to process `pid`.
fn sigkill(pid: u32) -> Result<()> {
    // SAFETY: a signal to a process id; no memory is handed over.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("SIGKILL to {pid}"));
    }
    Ok(())
}

/// The udptrace programs loaded since `before` was listed: a tracer's started since.
fn new_programs(before: &std::collections::BTreeSet<u32>) -> Result<Vec<u32>> {
    Ok(program_ids()?.difference(before).copied().collect())
}

/// Whether every program of `loaded` leaves the kernel within [`AFTERMATH`] of `after`, what killed the
/// process that held them: the kernel frees them once the last reference (its fds and links) is gone.
fn unloaded(loaded: &[u32], after: &str) -> Outcome {
    if loaded.is_empty() {
        return Outcome::Fail("no new eBPF program appeared while udptrace ran".to_owned());
    }
    let left = || -> Vec<u32> {
        let now = program_ids().unwrap_or_default();
        loaded.iter().filter(|id| now.contains(id)).copied().collect()
    };
    if within(AFTERMATH, || left().is_empty()) {
        return Outcome::Pass;
    }
    let left = left();
    Outcome::Fail(format!(
        "{} of {} programs still loaded {AFTERMATH:?} after {after}: ids {left:?}",
        left.len(),
        loaded.len()
    ))
}

/// Whether `done` comes true within `timeout`, asked every 100 ms.
fn within(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Owner records go with their sockets: 300 UDP sockets opened while a udptrace runs add 300 records to its
/// `OWNERS` map, and closing them takes the records out again (`cgroup/sock_release`). The shared udptrace's
/// map: a start of its own would cost seconds under emulation and prove nothing more.
pub fn owner_records_freed(_config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const SOCKETS: usize = 300;
    if tracer.mode_of("socket_owner").is_none() {
        return Ok(vec![("freed", Outcome::Skip("the socket_owner hook did not attach".to_owned()))]);
    }
    let records = || owner_records(tracer.pid());
    let before = records()?;
    let sockets: Vec<UdpSocket> =
        (0..SOCKETS).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<std::io::Result<_>>()?;
    let open = records()?;
    drop(sockets);
    let after = records()?;
    // Other processes on the machine may open or close a few sockets meanwhile.
    let slack = SOCKETS / 10;
    let recorded = if open >= before + SOCKETS - slack {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("{SOCKETS} sockets opened: OWNERS went from {before} to {open} records"))
    };
    let freed = if after <= before + slack {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("{SOCKETS} sockets closed: OWNERS holds {after} records, {before} before they opened"))
    };
    Ok(vec![("recorded", recorded), ("freed", freed)])
}

/// The number of records in the `OWNERS` map of the udptrace process `pid`.
fn owner_records(pid: u32) -> Result<usize> {
    let fdinfo = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))?;
    for entry in fdinfo.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let Some(id) = text.lines().find_map(|l| l.strip_prefix("map_id:")).and_then(|v| v.trim().parse().ok()) else {
            continue;
        };
        let data = aya::maps::MapData::from_id(id)?;
        if data.info()?.name_as_str() != Some("OWNERS") {
            continue;
        }
        // Keys are counted; the values are read as the record's words, whatever it holds.
        let map = aya::maps::HashMap::<_, u64, [u64; size_of::<udptrace_common::Owner>() / 8]>::try_from(
            aya::maps::Map::HashMap(data),
        )?;
        return Ok(map.keys().filter(Result::is_ok).count());
    }
    anyhow::bail!("udptrace (pid {pid}) holds no OWNERS map")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helper_keeps_cap_bpf_only_where_every_bpf_command_needs_it() {
        let (set, why) = helper_capabilities("5.10.0-35-amd64", "2").unwrap();
        assert_eq!(set, 1 << 2 | 1 << 12 | 1 << 19 | 1 << 21 | 1 << 39);
        assert!(why.contains("5.10.0-35-amd64 is before 5.19") && why.contains("CAP_BPF too"), "{why}");
        let (set, why) = helper_capabilities("5.18.19", "0").unwrap();
        assert_eq!(set, HELPER_CAPABILITIES);
        assert!(why.contains("unprivileged_bpf_disabled is 0"), "{why}");
        assert_eq!(helper_capabilities("5.19.0", "2").unwrap().0, HELPER_CAPABILITIES);
        assert_eq!(helper_capabilities("6.12.48+deb13-amd64", "1").unwrap().0, HELPER_CAPABILITIES);
        assert!(helper_capabilities("unknown", "2").is_err());
    }

    #[test]
    fn names_the_thread_and_field_that_hold_too_much() {
        let status = "Name:\tudptrace\nUid:\t65534\t0\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n\
            Groups:\t27\nNoNewPrivs:\t0\nSeccomp:\t0\nCapInh:\t0000000000000000\nCapPrm:\t0000000000200000\n\
            CapEff:\t0000000000200000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n";
        let rows = tracer_rows(&[ThreadStatus::new("tracer", "12", status.to_owned())]);
        let why = |name: &str| match &rows.iter().find(|(row, _)| *row == name).unwrap().1 {
            Outcome::Fail(why) => why.clone(),
            other => panic!("{name}: {other:?}"),
        };
        let unprivileged = why("tracer_unprivileged");
        assert!(unprivileged.starts_with("tracer thread 12 (udptrace): Uid Some([65534, 0,"), "{unprivileged}");
        assert!(
            unprivileged.contains("Groups Some([27]), want none") && !unprivileged.contains("Gid"),
            "{unprivileged}"
        );
        let capabilities = why("tracer_no_capability");
        assert!(
            capabilities.contains("CapEff 0x200000, want 0x0: extra capabilities [21], missing []"),
            "{capabilities}"
        );
        assert!(capabilities.contains("CapBnd 0x1ffffffffff") && !capabilities.contains("CapInh"), "{capabilities}");
        assert_eq!(why("tracer_no_new_privs"), "tracer thread 12 (udptrace): NoNewPrivs 0, want 1");
        assert_eq!(why("tracer_seccomp"), "tracer thread 12 (udptrace): Seccomp 0, want 2");
    }

    #[test]
    fn an_unprivileged_thread_passes() {
        let status = "Name:\tmetrics\nUid:\t998\t998\t998\t998\nGid:\t998\t998\t998\t998\nGroups:\t\n\
            NoNewPrivs:\t1\nSeccomp:\t2\nCapInh:\t0\nCapPrm:\t0\nCapEff:\t0\nCapBnd:\t0\nCapAmb:\t0\n";
        for (row, outcome) in tracer_rows(&[ThreadStatus::new("tracer", "13", status.to_owned())]) {
            assert_eq!(outcome, Outcome::Pass, "{row}");
        }
        let helper = ThreadStatus::new("helper", "14", "CapEff:\t0000008000281004\n".to_owned());
        assert_eq!(exact_set(&helper, "CapEff", HELPER_CAPABILITIES | CAP_BPF, "why"), None);
        assert_eq!(
            exact_set(&helper, "CapEff", HELPER_CAPABILITIES, "kernel 6.12 is 5.19 or later: no CAP_BPF").unwrap(),
            "CapEff 0x8000281004, want 0x281004 (kernel 6.12 is 5.19 or later: no CAP_BPF): extra capabilities [39], \
             missing []"
        );
    }
}
