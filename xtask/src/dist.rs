//! `cargo xtask dist`: what ships. `target/dist/udptrace`, static (musl), with its programs embedded, and
//! `target/dist/udptrace_VERSION_amd64.deb` around it: the binary, its manual pages, shell completions, and a
//! systemd unit with its `/etc/default` file. The package is built with `dpkg-deb`, Debian's own tool, from a
//! tree laid out here.
//!
//! Static, not dynamic against an old glibc: the binary then runs on any x86_64 userland whatever its C
//! library (Debian 11, RHEL 8, Amazon Linux 2, Alpine, a distroless image), and the matrix's VMs prove the
//! very file that ships. The test binaries the VMs run (the suite, the benchmark) are built the same way.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    prereq,
    workspace::{cargo, say, workspace_root},
};

/// The target every shipped binary is built for.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// What `cargo xtask dist` wrote, and the test binaries built beside it.
#[derive(Clone, Debug)]
pub struct Dist {
    pub udptrace: PathBuf,
    pub scenarios: PathBuf,
    pub bench: PathBuf,
    pub demo: PathBuf,
    pub deb: PathBuf,
}

pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set (a second checkout sharing one), else the workspace's
/// `target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Builds the static binaries and the package.
pub fn build() -> Result<Dist> {
    prereq::ensure_build()?;
    prereq::ensure_rust_target(TARGET)?;
    say(&format!("building udptrace and the test binaries (release, static: {TARGET})"));
    prereq::run_visible(cargo().args([
        "build",
        "--release",
        "--locked",
        "--target",
        TARGET,
        "-p",
        "udptrace",
        "-p",
        "udptrace-scenarios",
    ]))?;
    let built = target_dir().join(TARGET).join("release");
    let (scenarios, bench) = (built.join("udptrace-scenarios"), built.join("udptrace-bench"));
    for binary in [&built.join("udptrace"), &scenarios, &bench] {
        if let Some(interpreter) = interpreter(binary)? {
            bail!("{} is not static: it asks for {interpreter}", binary.display());
        }
    }
    let dir = dist_dir();
    fs::create_dir_all(&dir)?;
    let udptrace = dir.join("udptrace");
    // Replaced, not written over: a VM or a test may still run the last one.
    let _ = fs::remove_file(&udptrace);
    fs::copy(built.join("udptrace"), &udptrace).context("copying udptrace into target/dist")?;
    // Without its symbols and debug sections (a tenth of it): the programs it embeds are data, untouched.
    prereq::run_visible(Command::new("strip").arg(&udptrace))?;
    let deb = package(&udptrace)?;
    say(&format!("wrote {} and {}", udptrace.display(), deb.display()));
    Ok(Dist { udptrace, scenarios, bench, demo: built.join("udptrace-demo"), deb })
}

/// The dynamic loader an ELF executable asks for (its `PT_INTERP`), `None` for a static one.
pub fn interpreter(binary: &Path) -> Result<Option<String>> {
    use object::read::elf::{ElfFile64, ProgramHeader as _};
    let data = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data).with_context(|| format!("{}", binary.display()))?;
    let endian = elf.endian();
    for header in elf.elf_program_headers() {
        if header.p_type(endian) == object::elf::PT_INTERP {
            let path = header.data(endian, &*data).map_err(|()| anyhow::anyhow!("a truncated PT_INTERP"))?;
            return Ok(Some(String::from_utf8_lossy(path).trim_end_matches('\0').to_owned()));
        }
    }
    Ok(None)
}

/// Where each file of the package goes, and the package's own scripts.
const UNIT: &str = include_str!("../../deploy/systemd/udptrace.service");
const DEFAULTS: &str = include_str!("../../deploy/systemd/udptrace.default");

/// `systemd` only when it runs: the unit is known to it, never enabled or started (loading programs into
/// every process's kernel is the operator's decision: `systemctl enable --now udptrace`). An upgrade
/// (`configure` with the version it replaces) restarts the service if it runs, so that the new binary and
/// unit take over; `try-restart` starts nothing that was stopped. Through `deb-systemd-invoke` where
/// Debian's helpers are, which asks policy-rc.d first (a chroot or an image build says no there).
const POSTINST: &str = "#!/bin/sh
set -e
# The user the tracer becomes once attached (udptrace falls back to nobody without it).
if [ \"$1\" = configure ] && ! getent passwd udptrace >/dev/null; then
  if command -v adduser >/dev/null 2>&1; then
    adduser --system --group --no-create-home --home /nonexistent --quiet udptrace || true
  elif command -v useradd >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin udptrace || true
  fi
fi
# Where that user may write --pcap's files (the unit lets the service write there alone).
if [ \"$1\" = configure ] && getent passwd udptrace >/dev/null && [ ! -d /var/lib/udptrace ]; then
  install -d -o udptrace -g udptrace -m 0750 /var/lib/udptrace
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  if [ \"$1\" = configure ] && [ -n \"$2\" ]; then
    if command -v deb-systemd-invoke >/dev/null 2>&1; then
      deb-systemd-invoke try-restart udptrace.service || true
    else
      systemctl try-restart udptrace.service || true
    fi
  fi
fi
";
const PRERM: &str = "#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then
  systemctl stop udptrace.service || true
fi
";
/// A purge takes the service's enable link too: the unit is gone by then, so `systemctl disable` could not
/// read its `[Install]` section (`WantedBy=multi-user.target`), and the link is removed by name, after
/// `deb-systemd-helper purge` forgets what Debian's helpers recorded of it. A removal keeps it, as it keeps
/// `/etc/default/udptrace`: installing again brings the service back as it was.
const POSTRM: &str = "#!/bin/sh
set -e
if [ \"$1\" = purge ]; then
  if command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper purge udptrace.service >/dev/null || true
  fi
  rm -f /etc/systemd/system/multi-user.target.wants/udptrace.service
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
";

const COPYRIGHT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: udptrace

Files: *
Copyright: the udptrace developers
License: MIT or Apache-2.0
 Either the MIT license or the Apache License, version 2.0, at your option. On Debian systems the Apache
 License 2.0 is in /usr/share/common-licenses/Apache-2.0.
";

/// Lays out the package's tree under `target/dist/deb/` and builds it with `dpkg-deb`.
fn package(udptrace: &Path) -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let root = dist_dir().join("deb");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let put = |path: &str, contents: &[u8], mode: u32| -> Result<()> {
        let file = root.join(path);
        fs::create_dir_all(file.parent().expect("a file in a folder"))?;
        fs::write(&file, contents).with_context(|| format!("writing {}", file.display()))?;
        fs::set_permissions(&file, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    put("usr/bin/udptrace", &fs::read(udptrace)?, 0o755)?;
    // Manual pages, from the command line itself, compressed as Debian wants them.
    let man = dist_dir().join("man");
    if man.exists() {
        fs::remove_dir_all(&man)?;
    }
    fs::create_dir_all(&man)?;
    prereq::run_visible(Command::new(udptrace).arg("manpages").arg(&man))?;
    let mut pages: Vec<PathBuf> = fs::read_dir(&man)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    pages.sort();
    if !pages.iter().any(|p| p.ends_with("udptrace.1")) {
        bail!("udptrace manpages wrote no udptrace.1");
    }
    for page in &pages {
        let name = page.file_name().expect("a file").to_string_lossy();
        put(&format!("usr/share/man/man1/{name}.gz"), &gzip(page)?, 0o644)?;
    }
    // Completions, where each shell looks for a package's.
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/udptrace"),
        ("zsh", "usr/share/zsh/vendor-completions/_udptrace"),
        ("fish", "usr/share/fish/vendor_completions.d/udptrace.fish"),
    ] {
        let output = Command::new(udptrace).args(["completions", shell]).output()?;
        if !output.status.success() || output.stdout.is_empty() {
            bail!("udptrace completions {shell} failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        put(path, &output.stdout, 0o644)?;
    }
    put("lib/systemd/system/udptrace.service", UNIT.as_bytes(), 0o644)?;
    put("etc/default/udptrace", DEFAULTS.as_bytes(), 0o644)?;
    put("usr/share/doc/udptrace/copyright", COPYRIGHT.as_bytes(), 0o644)?;
    put("DEBIAN/conffiles", b"/etc/default/udptrace\n", 0o644)?;
    put("DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    put("DEBIAN/prerm", PRERM.as_bytes(), 0o755)?;
    put("DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;
    let installed_kib = tree_bytes(&root)?.div_ceil(1024);
    let control = format!(
        "Package: udptrace
Version: {version}
Architecture: amd64
Maintainer: udptrace developers <noreply@udptrace.invalid>
Installed-Size: {installed_kib}
Section: net
Priority: optional
Description: trace the kernel's UDP and ICMP error paths
 Which socket got which ICMP error and errno, whether the kernel delivered or
 ignored it and why, which process owns the socket, why this host sent an ICMP
 error or suppressed it, and which datagrams were dropped and why: as it
 happens, from eBPF programs on the kernel's error paths, nothing on the
 healthy path. One static binary; a systemd unit serves Prometheus counters.
"
    );
    put("DEBIAN/control", control.as_bytes(), 0o644)?;
    for dir in dirs(&root)? {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }
    let deb = dist_dir().join(format!("udptrace_{version}_amd64.deb"));
    prereq::run_visible(Command::new("dpkg-deb").args(["--root-owner-group", "-Zxz", "--build"]).arg(&root).arg(&deb))?;
    Ok(deb)
}

/// `gzip -9n`: the page compressed, without a name or time in its header, so that builds repeat.
fn gzip(path: &Path) -> Result<Vec<u8>> {
    let output = Command::new("gzip").args(["-9n", "--stdout"]).arg(path).output().context("running gzip")?;
    if !output.status.success() {
        bail!("gzip {} failed", path.display());
    }
    Ok(output.stdout)
}

/// The bytes of every file under `root` but `DEBIAN/`.
fn tree_bytes(root: &Path) -> Result<u64> {
    let mut bytes = 0;
    for dir in dirs(root)? {
        if dir.starts_with(root.join("DEBIAN")) {
            continue;
        }
        for entry in fs::read_dir(&dir)? {
            let meta = entry?.metadata()?;
            if meta.is_file() {
                bytes += meta.len();
            }
        }
    }
    Ok(bytes)
}

/// `root` and every folder under it.
fn dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut all = vec![root.to_owned()];
    let mut at = 0;
    while at < all.len() {
        for entry in fs::read_dir(&all[at])? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                all.push(entry.path());
            }
        }
        at += 1;
    }
    Ok(all)
}
