//! The service's system call filter against what udptrace calls: udptrace runs under `strace -f -c` while
//! it traces a refused datagram and serves a scrape, and every call strace counted must be one the unit's
//! `SystemCallFilter=` lines allow (deploy/systemd/udptrace.service; a unit test in udptrace keeps them
//! equal to udptrace/src/kernel/syscalls.rs, which says why each is made).

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{CLOSED_PORT, Results, TwoHosts, operator::refused_socket, which};
use crate::{config::Config, outcome::Outcome, tracer::Tracer};

const UNIT: &str = include_str!("../../../deploy/systemd/udptrace.service");

/// How long udptrace under strace may take to say it is tracing.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// The calls the unit allows.
fn allowed() -> BTreeSet<&'static str> {
    UNIT.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")).flat_map(str::split_whitespace).collect()
}

/// The calls of a `strace -c` summary: the last column of each row between the rules, but the total.
fn counted(summary: &str) -> BTreeSet<String> {
    summary
        .lines()
        .skip_while(|l| !l.starts_with("------"))
        .skip(1)
        .take_while(|l| !l.starts_with("------"))
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .collect()
}

pub fn syscall_filter(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    let Some(strace) = which("strace") else {
        return Ok(vec![(
            "every_call_allowed",
            Outcome::Skip("strace is not installed (`cargo xtask test` installs Debian's)".to_owned()),
        )]);
    };
    let hosts = TwoHosts::new()?;
    let metrics = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let summary = std::env::temp_dir().join(format!("udptrace-syscalls-{}.txt", std::process::id()));
    let (client_ns, server_ns) = (hosts.client.inode.to_string(), hosts.server.inode.to_string());
    let mut strace = Command::new(strace)
        .args(["-f", "-qq", "-c", "-o"])
        .arg(&summary)
        .arg("--")
        .arg(&config.udptrace)
        .args(["--json", "--probe", &config.mode, "--buffer", &config.buffer])
        .args(["--metrics", &metrics.to_string(), "--netns", &client_ns, "--netns", &server_ns])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting udptrace under strace")?;
    let exercised = exercise(&mut strace, &hosts, metrics);
    let stopped = stop(&mut strace);
    let calls = std::fs::read_to_string(&summary).map(|s| counted(&s));
    let _ = std::fs::remove_file(&summary);
    exercised?;
    let stopped = match stopped {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    let calls = calls.with_context(|| format!("strace wrote no summary to {}", summary.display()))?;
    let allowed = allowed();
    // The exec that starts udptrace is strace's (systemd allows it in any filter).
    let missing: Vec<&String> = calls.iter().filter(|c| *c != "execve" && !allowed.contains(c.as_str())).collect();
    let every_call = if calls.len() < 10 {
        Outcome::Fail(format!("strace counted only {calls:?}"))
    } else if missing.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(format!(
            "{} of {} calls are not in the unit's SystemCallFilter= (udptrace/src/kernel/syscalls.rs): {}",
            missing.len(),
            calls.len(),
            missing.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" ")
        ))
    };
    Ok(vec![("clean_stop", stopped), ("every_call_allowed", every_call)])
}

/// Waits for udptrace to trace, has the server refuse a datagram and waits for its `socket_error`, then
/// scrapes the metrics port.
fn exercise(strace: &mut Child, hosts: &TwoHosts, metrics: std::net::SocketAddr) -> Result<()> {
    let stderr = lines(strace.stderr.take().context("udptrace's stderr")?);
    let stdout = lines(strace.stdout.take().context("udptrace's stdout")?);
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.starts_with("udptrace: tracing") => break,
            Ok(_) => {}
            Err(_) => bail!("udptrace under strace did not say it was tracing within {ATTACH_TIMEOUT:?}"),
        }
    }
    let (_socket, local) = refused_socket(hosts, CLOSED_PORT)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("\"socket_error\"") && line.contains(&local.to_string()) => break,
            Ok(_) => {}
            Err(_) => bail!("no socket_error from {local} within 15 s"),
        }
    }
    let mut stream = TcpStream::connect(metrics)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: udptrace\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    if !response.starts_with("HTTP/1.0 200") && !response.starts_with("HTTP/1.1 200") {
        bail!("the scrape: {}", response.lines().next().unwrap_or(""));
    }
    Ok(())
}

/// SIGTERM to udptrace, strace's child, as systemd stops it; strace writes its summary as it exits. Both
/// are killed if they are not gone within 15 s.
fn stop(strace: &mut Child) -> Result<()> {
    let udptrace: Option<libc::pid_t> = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id()))
        .ok()
        .and_then(|children| children.split_whitespace().next()?.parse().ok());
    let signal = |signal| {
        if let Some(pid) = udptrace {
            // SAFETY: signals a process this test started (through strace), still strace's child.
            unsafe { libc::kill(pid, signal) };
        }
    };
    signal(libc::SIGTERM);
    // Signal 0: strace is only waited for, as it follows udptrace out.
    let status = crate::child::stop_child(strace, 0, Duration::from_secs(15));
    match (udptrace, status) {
        (None, _) => bail!("udptrace had exited before the test stopped it"),
        (Some(_), Some(status)) if status.success() => Ok(()),
        (Some(_), Some(status)) => bail!("udptrace under strace exited with {status}"),
        (Some(_), None) => {
            signal(libc::SIGKILL);
            bail!("udptrace under strace did not stop within 15 s of SIGTERM")
        }
    }
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_strace_summary() {
        let summary = "% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ------------------
 45.03    0.140226          25      5463           read
 38.95    0.121299         739       164        27 bpf
  0.00    0.000000           0         1           execve
------ ----------- ----------- --------- --------- ------------------
100.00    0.311399          41      7542        50 total
";
        assert_eq!(counted(summary), ["bpf", "execve", "read"].map(str::to_owned).into());
    }

    #[test]
    fn reads_the_units_filter() {
        let allowed = allowed();
        assert!(allowed.contains("bpf") && allowed.contains("perf_event_open") && allowed.len() > 50);
    }
}
