//! udptrace as a process the operator runs: the capabilities it keeps, no program run on the healthy path,
//! every program unloaded when it is killed, and owner records that go with their sockets.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::Result;

use super::{CLOSED_PORT, Family, Results, TwoHosts, operator::refused_socket};
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

/// The capabilities udptrace keeps once attached (`kernel/privileges.rs` `KEPT`): CAP_DAC_READ_SEARCH (2),
/// CAP_SYS_PTRACE (19), CAP_SYS_ADMIN (21), CAP_SYSLOG (34).
const KEPT_CAPABILITIES: u64 = 1 << 2 | 1 << 19 | 1 << 21 | 1 << 34;

/// While tracing, every thread of the shared udptrace holds in its effective, permitted and bounding sets
/// no capability but those it still uses, and nothing inheritable or ambient; and, being root, still
/// CAP_SYS_ADMIN, which the namespace lookups of the scenarios before this one used after the drop.
pub fn capabilities_dropped(_config: &Config, shared: &mut Tracer) -> Result<Results> {
    let (threads, wrong) = capability_faults(shared.pid())?;
    let outcome = if !threads.is_empty() && wrong.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("{} threads; want only {KEPT_CAPABILITIES:#x}: {}", threads.len(), wrong.join("; ")))
    };
    Ok(vec![("only_what_it_uses", outcome)])
}

/// The names of process `pid`'s threads, and what any of them holds beyond what udptrace keeps.
pub(super) fn capability_faults(pid: u32) -> Result<(Vec<String>, Vec<String>)> {
    let mut wrong = Vec::new();
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
        let status = std::fs::read_to_string(task.path().join("status"))?;
        let name = status.lines().find_map(|l| l.strip_prefix("Name:")).unwrap_or("?").trim().to_owned();
        let set = |field: &str| {
            status.lines().find_map(|l| l.strip_prefix(field)).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        };
        for (field, allowed) in [
            ("CapEff:", KEPT_CAPABILITIES),
            ("CapPrm:", KEPT_CAPABILITIES),
            ("CapBnd:", KEPT_CAPABILITIES),
            ("CapInh:", 0),
            ("CapAmb:", 0),
        ] {
            match set(field) {
                Some(bits) if bits & !allowed == 0 => {}
                got => wrong.push(format!("thread {name} {field} {got:x?}")),
            }
        }
        if set("CapEff:").is_none_or(|bits| bits & 1 << 21 == 0) {
            wrong.push(format!("thread {name} lost CAP_SYS_ADMIN, which namespace lookups use"));
        }
        threads.push(name);
    }
    Ok((threads, wrong))
}

/// Nothing on the healthy path: 20,000 datagrams received without error, with BPF statistics on, run no
/// program of the shared udptrace's more than a few times (a program that ran per datagram would count
/// 20,000 runs). Then one refused datagram: the statistics must see the error path run, or they counted
/// nothing and the first check proved nothing.
pub fn healthy_path(_config: &Config, _shared: &mut Tracer) -> Result<Results> {
    const DATAGRAMS: u64 = 20_000;
    const OPEN_PORT: u16 = 7100;
    let hosts = TwoHosts::new()?;
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), OPEN_PORT);
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
    sender.connect(server)?;
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
/// every program udptrace loaded when the process dies.
///
/// The victim runs with `-v`: the programs then log (aya-log), and the verifier must accept the log calls'
/// code too (`verbose_verifier_accepts`), which a start of its own would cost seconds under emulation.
pub fn sigkill_unloads(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    let before = program_ids()?;
    let mut victim = match Tracer::start(config, &["-v"]) {
        Ok(victim) => victim,
        Err(e) => {
            let failed = Outcome::Fail(format!("udptrace -v did not start: {e:#}"));
            return Ok(vec![("verbose_verifier_accepts", failed.clone()), ("unloaded", failed)]);
        }
    };
    let rejected: Vec<&str> =
        victim.not_traced.iter().filter(|l| l.contains("verifier rejected")).map(String::as_str).collect();
    let verbose = if rejected.is_empty() { Outcome::Pass } else { Outcome::Fail(rejected.join("; ")) };
    let loaded: Vec<u32> = program_ids()?.difference(&before).copied().collect();
    if loaded.is_empty() {
        let none = Outcome::Fail("no new eBPF program appeared while udptrace ran".to_owned());
        return Ok(vec![("verbose_verifier_accepts", verbose), ("unloaded", none)]);
    }
    victim.kill_hard()?;
    // The kernel frees them once the last reference (the process's fds and links) is gone, which may take
    // a moment after the exit.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> =
            loaded.iter().filter(|id| program_ids().is_ok_and(|now| now.contains(id))).copied().collect();
        if left.is_empty() {
            return Ok(vec![("verbose_verifier_accepts", verbose), ("unloaded", Outcome::Pass)]);
        }
        if std::time::Instant::now() > deadline {
            return Ok(vec![
                ("verbose_verifier_accepts", verbose),
                (
                    "unloaded",
                    Outcome::Fail(format!(
                        "{} of {} programs still loaded 10 s after SIGKILL: ids {left:?}",
                        left.len(),
                        loaded.len()
                    )),
                ),
            ]);
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
        let map = aya::maps::HashMap::<_, u64, [u64; 4]>::try_from(aya::maps::Map::HashMap(data))?;
        return Ok(map.keys().filter(Result::is_ok).count());
    }
    anyhow::bail!("udptrace (pid {pid}) holds no OWNERS map")
}
