//! The package on the oldest userland of the matrix's kernels: Debian 11 (glibc 2.31, older than the 2.34
//! a build here would ask for). A minimal root is bootstrapped once (`debootstrap --variant=minbase`) into
//! `.vm-cache/bullseye-root/`; each run installs the .deb in it with `dpkg -i` and, from inside it (chroot,
//! with /proc, /sys and /dev bound), runs `udptrace --version`, `udptrace probes`, `udptrace check` of a closed
//! loopback port and a trace of a datagram bash sends there, and systemd 247's `systemd-analyze verify` of
//! the unit (the root has systemd and man-db, not running: for the verifier and `man`), and last that
//! `dpkg --purge` takes away the link `systemctl enable` made. Every command runs in a mount namespace of
//! its own, so that its binds go with it, whatever becomes of the test.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::UdpSocket,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    prereq,
    results::Tally,
    workspace::{say, workspace_root},
};

const MIRROR: &str = "http://deb.debian.org/debian";
/// Beside minbase: what `systemd-analyze verify` needs (the unit's targets, and `man` for its
/// `Documentation=`).
const INCLUDE: &str = "systemd,man-db";

fn root_dir() -> PathBuf {
    workspace_root().join(".vm-cache/bullseye-root")
}

/// Installs `deb` in the Debian 11 root and checks it from inside; each check counts in the tally.
pub fn test(deb: &Path) -> Result<Tally> {
    prereq::ensure_packages(&["debootstrap"])?;
    let root = bootstrapped()?;
    let mut tally = Tally::default();
    let mut report = |name: &str, outcome: Result<String>| match outcome {
        Ok(detail) => {
            let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
            println!("dist  bullseye  {name:<26} pass{detail}");
            tally.passed += 1;
        }
        Err(e) => {
            println!("dist  bullseye  {name:<26} FAIL: {e:#}");
            tally.failed += 1;
        }
    };

    fs::copy(deb, root.join("tmp/udptrace.deb")).context("copying the package into the root")?;
    let installed = run_in(&root, &["dpkg", "-i", "/tmp/udptrace.deb"]).and_then(|out| {
        let status = run_in(&root, &["dpkg-query", "-W", "-f=${Status} ${Version}", "udptrace"])?;
        let status = String::from_utf8_lossy(&status.stdout).into_owned();
        if !out.status.success() || !status.starts_with("install ok installed") {
            bail!("dpkg -i: {}; dpkg-query: {status}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(status)
    });
    let ok = installed.is_ok();
    report("installs", installed);
    if !ok {
        return Ok(tally);
    }
    report("files_in_place", files_in_place(&root));
    report(
        "glibc_is_older",
        run_in(&root, &["ldd", "--version"])
            .map(|o| first_line(&o.stdout))
            .and_then(|line| if line.contains("2.31") { Ok(line) } else { bail!("this root's glibc: {line}") }),
    );
    report(
        "version",
        run_in(&root, &["udptrace", "--version"]).and_then(|o| {
            let line = first_line(&o.stdout);
            if o.status.success() && line == format!("udptrace {}", env!("CARGO_PKG_VERSION")) {
                Ok(line)
            } else {
                bail!("{line} {}", String::from_utf8_lossy(&o.stderr).trim())
            }
        }),
    );
    report(
        "probes",
        run_in(&root, &["udptrace", "probes"]).and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            if o.status.success() && text.contains("socket_error") && text.contains("udp_dropped") {
                Ok(String::new())
            } else {
                bail!("exit {}: {}", o.status, String::from_utf8_lossy(&o.stderr).trim())
            }
        }),
    );
    let port = closed_port()?;
    report(
        "check_closed_port",
        run_in(&root, &["udptrace", "check", &format!("127.0.0.1:{port}")]).and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            // 3: closed (`udptrace check --help`).
            if o.status.code() == Some(3) && text.contains("closed") {
                Ok(first_line(text.as_bytes()))
            } else {
                bail!("exit {}: {} {}", o.status, text.trim(), String::from_utf8_lossy(&o.stderr).trim())
            }
        }),
    );
    report("traces_a_refused_datagram", trace(&root, port));
    report(
        "unit_verifies",
        run_in(&root, &["systemd-analyze", "verify", "/lib/systemd/system/udptrace.service"]).and_then(|o| {
            let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            if o.status.success() && said.trim().is_empty() {
                Ok(first_line(&run_in(&root, &["systemd-analyze", "--version"])?.stdout))
            } else {
                bail!("exit {}: {}", o.status, said.trim().replace('\n', " | "))
            }
        }),
    );
    // Last: it takes the package away (the next run installs it again).
    report("purge_removes_enable_link", purge_removes_enable_link(&root));
    Ok(tally)
}

/// `systemctl enable` (offline, as in a chroot) makes the unit's link; `dpkg --purge` must take it away.
fn purge_removes_enable_link(root: &Path) -> Result<String> {
    const LINK: &str = "etc/systemd/system/multi-user.target.wants/udptrace.service";
    let enabled = run_in(root, &["systemctl", "enable", "udptrace.service"])?;
    if !root.join(LINK).is_symlink() {
        bail!("systemctl enable made no /{LINK}: {}", String::from_utf8_lossy(&enabled.stderr).trim());
    }
    let purged = run_in(root, &["dpkg", "--purge", "udptrace"])?;
    if !purged.status.success() {
        bail!("dpkg --purge: {}", String::from_utf8_lossy(&purged.stderr).trim());
    }
    if root.join(LINK).is_symlink() {
        bail!("/{LINK} is still there after dpkg --purge");
    }
    Ok(String::new())
}

/// The root, bootstrapped if it is not yet: into a folder beside it first, so that an interrupted
/// bootstrap is never taken for a root.
fn bootstrapped() -> Result<PathBuf> {
    let root = root_dir();
    if root.join("usr/bin/systemd-analyze").exists() && root.join("usr/bin/man").exists() {
        return Ok(root);
    }
    let partial = root.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(partial.parent().expect("in .vm-cache"))?;
    say("bootstrapping a Debian 11 root (debootstrap --variant=minbase bullseye, once; cached in .vm-cache/)");
    prereq::run_visible(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}"), "bullseye"])
            .arg(&partial)
            .arg(MIRROR),
    )?;
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    fs::rename(&partial, &root)?;
    Ok(root)
}

/// `args` run inside `root`, in a mount namespace of its own with /proc, /sys and /dev bound.
fn in_root(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "r=$1; shift; mount -t proc proc \"$r/proc\" && mount --rbind /sys \"$r/sys\" && \
             mount --rbind /dev \"$r/dev\" && exec chroot \"$r\" \"$@\"",
        )
        .arg("sh")
        .arg(root)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C");
    command
}

fn run_in(root: &Path, args: &[&str]) -> Result<Output> {
    in_root(root, args).stdin(Stdio::null()).output().with_context(|| format!("running {} in the root", args.join(" ")))
}

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).lines().next().unwrap_or_default().trim().to_owned()
}

/// What the package put in place, where each tool looks for it.
fn files_in_place(root: &Path) -> Result<String> {
    let want = [
        "usr/bin/udptrace",
        "usr/share/man/man1/udptrace.1.gz",
        "usr/share/man/man1/udptrace-check.1.gz",
        "usr/share/bash-completion/completions/udptrace",
        "usr/share/zsh/vendor-completions/_udptrace",
        "usr/share/fish/vendor_completions.d/udptrace.fish",
        "lib/systemd/system/udptrace.service",
        "etc/default/udptrace",
    ];
    let missing: Vec<&str> = want.iter().copied().filter(|f| !root.join(f).is_file()).collect();
    if !missing.is_empty() {
        bail!("missing: {}", missing.join(", "));
    }
    Ok(String::new())
}

/// A loopback UDP port nothing listens on: one the kernel just gave and took back.
fn closed_port() -> Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?.port())
}

/// `udptrace --json --port PORT` inside the root; bash, also inside, writes a datagram to the closed port
/// through `/dev/udp` (a connected socket): the port unreachable must come back as a `socket_error`,
/// `ECONNREFUSED`, delivered, owned by bash.
fn trace(root: &Path, port: u16) -> Result<String> {
    let mut child = in_root(root, &["udptrace", "--json", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting udptrace in the root")?;
    let result = traced(root, port, &mut child);
    // SAFETY: signals our own child (unshare, sh and chroot exec into udptrace: one pid).
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.wait();
    result
}

fn traced(root: &Path, port: u16, child: &mut Child) -> Result<String> {
    let lines = |stream: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let stdout = lines(Box::new(child.stdout.take().context("udptrace's stdout")?));
    let stderr = lines(Box::new(child.stderr.take().context("udptrace's stderr")?));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match stderr.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.starts_with("udptrace: tracing") => break,
            Ok(_) => {}
            Err(_) => bail!("udptrace did not say it was tracing within 60 s"),
        }
    }
    let sent = run_in(root, &["bash", "-c", &format!("echo refused >/dev/udp/127.0.0.1/{port}")])?;
    if !sent.status.success() {
        bail!("bash could not send: {}", String::from_utf8_lossy(&sent.stderr).trim());
    }
    let remote = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Ok(line) = stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            bail!("not JSON: {line}");
        };
        if event["event"] == "socket_error" && event["remote"] == remote.as_str() {
            let (errno, verdict, comm) = (&event["errno"], &event["verdict"], &event["comm"]);
            if errno == "ECONNREFUSED" && verdict == "delivered" && comm == "bash" {
                return Ok(format!("{errno} {verdict}, owned by {comm} (pid {})", event["pid"]));
            }
            bail!("the event: {line}");
        }
    }
    bail!("no socket_error about {remote} within 15 s")
}
