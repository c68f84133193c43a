//! A Kubernetes node's mount namespace, made by the process that holds it (`helper node`): what [`crate::kube::Node`]
//! enters to start udptrace where the runtimes' and the kubelet's files are.

use std::{
    ffi::CString,
    fs::{self, File},
    io,
    os::{fd::AsRawFd as _, unix::fs::PermissionsExt as _},
    path::Path,
};

use anyhow::{Context as _, Result, bail};

/// What the runtimes' directories under `/run` are called: hidden from the node, which has its own.
const RUNTIME_DIRS: &[&str] = &["containerd", "containers"];

/// Makes this process's mount namespace the node's (`helper node`): a new one, slave to the host's (host
/// mounts propagate in, none out), whose `/run` and `/var/log` are tmpfs holding the host's entries bound back
/// but the runtimes' and the kubelet's. Where the host has no `/var/log` (the QEMU images), `/var` is covered
/// and `/var/log` made.
pub fn hold_node() -> Result<()> {
    // SAFETY: unshare of the mount namespace in a process with one thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io::Error::last_os_error()).context("unshare(CLONE_NEWNS)");
    }
    mount(None, "/", None, libc::MS_REC | libc::MS_SLAVE, None).context("making the node's mounts slaves")?;
    cover("/run", RUNTIME_DIRS)?;
    if Path::new("/var/log").is_dir() {
        cover("/var/log", &["pods"])
    } else {
        cover("/var", &[])?;
        fs::create_dir("/var/log").context("making the node's /var/log")
    }
}

/// Mounts a tmpfs over `dir` and binds each of its entries back (symbolic links copied), but `hidden`.
fn cover(dir: &str, hidden: &[&str]) -> Result<()> {
    let below = File::open(dir).with_context(|| format!("opening {dir}"))?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o7777;
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {dir}"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if hidden.contains(&name.as_str()) {
            continue;
        }
        let kind = entry.file_type()?;
        let link = kind.is_symlink().then(|| fs::read_link(entry.path())).transpose()?;
        entries.push((name, kind, link));
    }
    let options = format!("mode={mode:o}");
    mount(Some("tmpfs"), dir, Some("tmpfs"), libc::MS_NOSUID | libc::MS_NODEV, Some(&options))
        .with_context(|| format!("mounting a tmpfs over {dir}"))?;
    for (name, kind, link) in entries {
        let to = format!("{dir}/{name}");
        if let Some(link) = link {
            std::os::unix::fs::symlink(&link, &to).with_context(|| format!("linking {to}"))?;
            continue;
        }
        if kind.is_dir() { fs::create_dir(&to) } else { File::create(&to).map(drop) }
            .with_context(|| format!("making {to}"))?;
        // Through the descriptor: the path itself now leads into the tmpfs.
        let from = format!("/proc/self/fd/{}/{name}", below.as_raw_fd());
        mount(Some(&from), &to, None, libc::MS_BIND | libc::MS_REC, None)
            .with_context(|| format!("binding the host's {to} back"))?;
    }
    Ok(())
}

fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let c = |s: &str| CString::new(s).context("a path with a NUL");
    let source = source.map(c).transpose()?;
    let target = c(target)?;
    let fstype = fstype.map(c).transpose()?;
    let data = data.map(c).transpose()?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: NUL-terminated strings or null pointers, as mount(2) takes them.
    let rc = unsafe { libc::mount(ptr(&source), target.as_ptr(), ptr(&fstype), flags, ptr(&data).cast()) };
    if rc == 0 { Ok(()) } else { bail!("mount {}: {}", target.to_string_lossy(), io::Error::last_os_error()) }
}
