//! Who owns the socket an error reaches (`owner.rs`): the process that created it, before or after
//! udptrace started, a forked child, back-to-back sockets, the process and the thread that made it.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::{
    config::Config,
    helper::ClientProcess,
    kube::cgroup2_mount,
    outcome::Outcome,
    packets::{port_unreachable_quoting, send_raw_icmp, udp_socket},
    tracer::Tracer,
};

use super::*;

/// A client process in the client namespace whose connected socket points at a listening server (so no
/// ICMP comes back on its own), and a port-unreachable quoting that socket crafted in the server
/// namespace: the error is processed in the injecting task's context, never the client's.
pub(super) struct OwnerCase {
    pub(super) hosts: TwoHosts,
    pub(super) _listener: UdpSocket,
    pub(super) server: SocketAddr,
}

impl OwnerCase {
    pub(super) fn new() -> Result<Self> {
        let hosts = TwoHosts::new()?;
        let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT);
        let listener = udp_socket(&hosts.server, server)?;
        Ok(Self { hosts, _listener: listener, server })
    }

    pub(super) fn client(&self, config: &Config, extra: &[&str]) -> Result<ClientProcess> {
        let server = self.server.to_string();
        let mut args = vec!["--netns", self.hosts.client.name.as_str(), "--bind", CLIENT_V4, "--connect", &server];
        args.extend_from_slice(extra);
        ClientProcess::start(&config.helper, &args)
    }

    pub(super) fn inject(&self, client: &ClientProcess) -> Result<()> {
        let (IpAddr::V4(client_ip), IpAddr::V4(server_ip)) = (client.local.ip(), self.server.ip()) else {
            bail!("IPv4 expected");
        };
        let icmp = port_unreachable_quoting(client_ip, client.local.port(), server_ip, self.server.port());
        self.hosts.server.run(move || send_raw_icmp(client_ip, &icmp))?
    }

    /// The event must name `pid` (its comm and cgroup as /proc shows them), not the injecting process, and
    /// no thread of another name: each of these clients made its socket in its main thread.
    pub(super) fn check(&self, config: &Config, tracer: &mut Tracer, client: &ClientProcess, pid: u32) -> Outcome {
        self.check_with(config, tracer, client, pid, json!({"thread": null}))
    }

    /// [`OwnerCase::check`], with `more` fields expected as well.
    pub(super) fn check_with(
        &self,
        config: &Config,
        tracer: &mut Tracer,
        client: &ClientProcess,
        pid: u32,
        more: Value,
    ) -> Outcome {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim_end().to_owned();
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned));
        let mut expected = json!({
            "local": client.local.to_string(),
            "remote": self.server.to_string(),
            "errno": "ECONNREFUSED",
            "verdict": "delivered",
            "pid": pid,
            "comm": comm,
            "cgroup": cgroup,
        });
        for (key, value) in more.as_object().into_iter().flatten() {
            expected[key] = value.clone();
        }
        let tracepoint = as_tracepoint_sees(&expected, true);
        check_socket_error(config, tracer, &self.hosts.client, client.local, expected, Some(tracepoint))
    }
}

/// A cgroup of the test's own, removed when dropped (after the processes in it are gone).
pub(super) struct TestCgroup(String);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The owner, not the interrupted task: a client process in a cgroup of its own sends; another
/// process (this one) injects an ICMP error quoting its socket. The event names the client, with its
/// cgroup as /proc/PID/cgroup says.
pub(super) fn owner(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let case = OwnerCase::new()?;
    let cgroup = match cgroup2_mount() {
        Some(mount) => {
            let dir = format!("{mount}/udptrace-test-{}", std::process::id());
            std::fs::create_dir_all(&dir).ok().map(|()| TestCgroup(dir))
        }
        None => None,
    };
    let mut extra = Vec::new();
    if let Some(TestCgroup(dir)) = &cgroup {
        extra.extend(["--cgroup", dir.as_str()]);
    }
    let client = case.client(config, &extra)?;
    case.inject(&client)?;
    let named = case.check(config, tracer, &client, client.pid);
    let in_cgroup = match &cgroup {
        None => Outcome::Skip("no writable cgroup v2 hierarchy here".to_owned()),
        Some(TestCgroup(dir)) => {
            let proc_says = std::fs::read_to_string(format!("/proc/{}/cgroup", client.pid)).unwrap_or_default();
            let leaf = dir.rsplit('/').next().unwrap_or_default();
            if proc_says.lines().any(|l| l.starts_with("0::") && l.ends_with(leaf)) {
                Outcome::Pass
            } else {
                Outcome::Fail(format!("the client is not in {dir}: /proc says {proc_says:?}"))
            }
        }
    };
    drop(client);
    Ok(vec![("names_the_owner", named), ("own_cgroup", in_cgroup)])
}

/// A socket opened and used before udptrace started: no send was seen, so the owner comes from
/// /proc/*/fd through the socket's inode.
pub(super) fn owner_before_start(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    let case = OwnerCase::new()?;
    let client = case.client(config, &[])?;
    let mut late = Tracer::start(config, &[])?;
    case.inject(&client)?;
    let named = case.check(config, &mut late, &client, client.pid);
    // Found through /proc, which also says how many processes hold it: the helper alone.
    let event = late.seen.iter().rev().find(|e| e["event"] == "socket_error" && e["local"] == client.local.to_string());
    let holders = match (&named, event.map(|e| &e["holders"])) {
        (Outcome::Skip(why), _) => Outcome::Skip(why.clone()),
        (_, Some(n)) if *n == 1 => Outcome::Pass,
        (_, other) => Outcome::Fail(format!("holders: got {other:?}, want 1")),
    };
    let stop = match late.stop() {
        Ok(_) => Outcome::Pass,
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    Ok(vec![("names_the_owner", named), ("holders", holders), ("clean_stop", stop)])
}

/// A forked child sends on its parent's socket, last. The event names the parent, which created the
/// socket: recorded at `socket()`, or, without that hook, the first of its holders /proc shows.
pub(super) fn owner_forked_child(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let case = OwnerCase::new()?;
    let client = case.client(config, &["--fork"])?;
    let parent = client.parent_pid();
    case.inject(&client)?;
    Ok(vec![("names_the_creator", case.check(config, tracer, &client, parent))])
}

/// A parent creates the socket, a forked child connects it and sends: the event names the child, which
/// connected it last (`cgroup/connect4`). Without that hook there is no connector to name.
pub(super) fn owner_connected_by_child(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    if tracer.mode_of("socket_owner").is_none() {
        return Ok(vec![("names_the_connector", Outcome::Skip("the socket_owner hook did not attach".to_owned()))]);
    }
    let case = OwnerCase::new()?;
    let client = case.client(config, &["--connect-in-child"])?;
    case.inject(&client)?;
    Ok(vec![("names_the_connector", case.check(config, tracer, &client, client.pid))])
}

/// Two sockets that never send get errors back to back, each named. Where the creation hook attaches it
/// names them; without it /proc is scanned for the first, and the second, opened after that scan within
/// the second in which /proc is not scanned again, waits for the next scan (the resolver's unit tests
/// check that wait on every host).
pub(super) fn owner_back_to_back(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let case = OwnerCase::new()?;
    let first = case.client(config, &["--no-send"])?;
    case.inject(&first)?;
    let first_named = case.check(config, tracer, &first, first.pid);
    let second = case.client(config, &["--no-send"])?;
    case.inject(&second)?;
    let second_named = case.check(config, tracer, &second, second.pid);
    Ok(vec![("names_the_first", first_named), ("names_the_second", second_named)])
}

/// More open sockets than the owner records (`--owner-records 64`): a socket created once they are full
/// is not recorded, and its owner still comes from /proc (`holders` 1); the closing line counts at least
/// the sockets beyond the records. Once those close, the next socket is recorded by the kernel again.
pub(super) fn owner_records_full(config: &Config, shared: &mut Tracer) -> Result<Results> {
    const RECORDS: usize = 64;
    const HELD: usize = 80;
    if shared.mode_of("socket_owner").is_none() {
        return Ok(vec![("all", Outcome::Skip("the socket_owner hook did not attach".to_owned()))]);
    }
    let mut tracer = Tracer::start(config, &["--owner-records", &RECORDS.to_string()])?;
    let held: Vec<UdpSocket> = (0..HELD).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<std::io::Result<_>>()?;
    let case = OwnerCase::new()?;
    let beyond = case.client(config, &[])?;
    case.inject(&beyond)?;
    let named = case.check(config, &mut tracer, &beyond, beyond.pid);
    let holders_of = |tracer: &Tracer, client: &ClientProcess| {
        let local = client.local.to_string();
        tracer
            .seen
            .iter()
            .rev()
            .find(|e| e["event"] == "socket_error" && e["local"] == local)
            .map(|e| e["holders"].clone())
    };
    let from_proc = match holders_of(&tracer, &beyond) {
        Some(n) if n == 1 => Outcome::Pass,
        other => Outcome::Fail(format!("holders: got {other:?}, want 1 (the owner from /proc, not recorded)")),
    };
    drop(held);
    drop(beyond);
    let recorded_again = case.client(config, &[])?;
    case.inject(&recorded_again)?;
    let named_again = case.check(config, &mut tracer, &recorded_again, recorded_again.pid);
    let recorded = match holders_of(&tracer, &recorded_again) {
        Some(serde_json::Value::Null) => Outcome::Pass,
        other => Outcome::Fail(format!("holders: got {other:?}, want null (the owner the kernel recorded)")),
    };
    let counted = match tracer.stop() {
        Ok(line) => {
            let not_recorded = line
                .split(',')
                .find_map(|part| part.trim().strip_suffix(" owners not recorded"))
                .and_then(|n| n.parse::<usize>().ok());
            // Beyond the records: at least this process's held sockets past them and the client's.
            match not_recorded {
                Some(n) if n > HELD - RECORDS => Outcome::Pass,
                _ => Outcome::Fail(format!("want more than {} owners not recorded: {line}", HELD - RECORDS)),
            }
        }
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    Ok(vec![
        ("names_the_owner", named),
        ("from_proc", from_proc),
        ("counted", counted),
        ("names_the_next", named_again),
        ("recorded_again", recorded),
    ])
}

/// The process's name for the owner scenarios' threads: its main thread's, set before anything else.
const PROCESS_NAME: &str = "owner-main";
/// The name of the second thread that makes the socket.
const THREAD_NAME: &str = "owner-worker";

/// A process named `owner-main` makes its socket in a second thread named `owner-worker` (`prctl(PR_SET_NAME)`
/// there), which connects, sends and gets ECONNREFUSED: the event names the process by its own name (its
/// thread group leader's, not the thread's), the thread by its name and id. `--comm` selects it by either name:
/// tracers filtering on each, started before the socket, see it too (the kernel's filter and user space's).
/// Without the cgroup programs no thread is known (`/proc` names processes), and there is nothing to check.
pub(super) fn owner_thread(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    if tracer.mode_of("socket_owner").is_none() {
        return Ok(vec![("all", Outcome::Skip("the socket_owner hook did not attach".to_owned()))]);
    }
    let mut by_thread = Tracer::start(config, &["--comm", THREAD_NAME])?;
    let mut by_process = Tracer::start(config, &["--comm", PROCESS_NAME])?;
    let case = OwnerCase::new()?;
    let client = case.client(config, &["--name", PROCESS_NAME, "--thread", THREAD_NAME])?;
    case.inject(&client)?;
    let expected = json!({"comm": PROCESS_NAME, "thread": THREAD_NAME, "tid": client.tid});
    let in_thread = if client.tid == client.pid {
        Outcome::Fail(format!("the client's socket thread is its main thread ({})", client.tid))
    } else {
        Outcome::Pass
    };
    let named = case.check_with(config, tracer, &client, client.pid, expected.clone());
    let selected_by_thread = case.check_with(config, &mut by_thread, &client, client.pid, expected.clone());
    let selected_by_process = case.check_with(config, &mut by_process, &client, client.pid, expected);
    drop(client);
    let stopped = |mut tracer: Tracer| match tracer.stop() {
        Ok(_) => Outcome::Pass,
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    Ok(vec![
        ("second_thread", in_thread),
        ("names_both", named),
        ("comm_thread", selected_by_thread),
        ("comm_process", selected_by_process),
        ("clean_stop_thread", stopped(by_thread)),
        ("clean_stop_process", stopped(by_process)),
    ])
}

/// The same process makes its socket in its main thread: the process's name, the main thread's id, and no
/// thread name (it is the process's).
pub(super) fn owner_main_thread(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let case = OwnerCase::new()?;
    let client = case.client(config, &["--name", PROCESS_NAME])?;
    case.inject(&client)?;
    // The thread that made the socket is known only from the cgroup programs' record; /proc names the process.
    let tid = if tracer.mode_of("socket_owner").is_some() { json!(client.pid) } else { Value::Null };
    let expected = json!({"comm": PROCESS_NAME, "thread": null, "tid": tid});
    Ok(vec![("names_the_process", case.check_with(config, tracer, &client, client.pid, expected))])
}
