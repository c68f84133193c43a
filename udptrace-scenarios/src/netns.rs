//! Network namespaces the scenarios create, and code run inside them.
//!
//! Every namespace is named `ut-<pid>-<tag>` and deleted when its handle drops, on success, failure or
//! panic alike; namespaces left by a killed run (their pid is gone) are swept at the start of the next.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail};

const PREFIX: &str = "ut-";

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !output.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Runs a command inside `ns` (`ip netns exec`), failing with its stderr.
pub fn exec_in(ns: &Netns, program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(["netns", "exec", &ns.name, program])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} in {}", ns.name))?;
    if !output.status.success() {
        bail!("{program} {} in {} failed: {}", args.join(" "), ns.name, String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
    /// Its inode number: what udptrace reports as `netns`.
    pub inode: u64,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Self> {
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let name = format!("{PREFIX}{}-{}{tag}", std::process::id(), SERIAL.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name])?;
        let mut ns = Self { inode: 0, name };
        ns.inode = std::fs::metadata(ns.path()).map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        exec_in(self, "sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
    }

    /// Runs `f` on a thread that has entered this namespace: sockets it creates live here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(self.path()).with_context(|| format!("opening {}", self.path()))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: a valid namespace fd; setns(CLONE_NEWNET) changes only this thread.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error()).context("setns");
                    }
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the thread in the namespace panicked"))?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// A veth pair from `a` to `b`, addressed `a_addrs` / `b_addrs` (CIDR), up. IPv6 addresses skip DAD
/// so that they are usable at once.
pub fn veth(a: &Netns, a_addrs: &[&str], b: &Netns, b_addrs: &[&str]) -> Result<()> {
    // Interface names are per namespace: the same short names serve every pair.
    let (a_if, b_if) = ("veth-a", "veth-b");
    let a_tmp = format!("u{}a", std::process::id());
    let b_tmp = format!("u{}b", std::process::id());
    ip(&["link", "add", &a_tmp, "type", "veth", "peer", "name", &b_tmp])
        .context("creating a veth pair (is the veth module available?)")?;
    ip(&["link", "set", &a_tmp, "netns", &a.name, "name", a_if])?;
    ip(&["link", "set", &b_tmp, "netns", &b.name, "name", b_if])?;
    for (ns, ifname, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", ifname, "nodad"])?;
            } else {
                ns.ip(&["addr", "add", addr, "dev", ifname])?;
            }
        }
        ns.ip(&["link", "set", ifname, "up"])?;
    }
    // Up is not yet passing packets: until the kernel's link watch has seen the carrier (a work item, which a
    // loaded host runs late, up to seconds), the device's queue discards what is sent, without an error.
    // Its operational state turns UP in the same step.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        while !exec_in(ns, "ip", &["-o", "link", "show", ifname])?.contains("state UP") {
            if std::time::Instant::now() > deadline {
                bail!("{ifname} in {} is not up 10 s after it was set up", ns.name);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    Ok(())
}

/// Deletes namespaces that earlier runs left behind when they were killed.
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "delete", &name]);
        }
    }
}
