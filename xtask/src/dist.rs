//! `cargo xtask dist`: what ships, for x86_64 and aarch64. `target/dist/ARCH/udptrace`, static (musl), with
//! its programs embedded (aya-build compiles them for the target's architecture: a kprobe reads its arguments
//! from that architecture's `struct pt_regs`), and `target/dist/udptrace_VERSION_DEBARCH.deb` around it: the
//! binary, its manual pages, shell completions, and a systemd unit with its `/etc/default` file. The package
//! is built with `dpkg-deb`, Debian's own tool, from a tree laid out here.
//!
//! Static, not dynamic against an old glibc: the binary then runs on any userland of its architecture
//! whatever its C library (Debian 11, RHEL 8, Amazon Linux 2, Alpine, a distroless image), and the matrix's
//! VMs prove the very file the package holds. The test binaries the VMs run (the suite, the benchmark) are
//! built the same way. aarch64 is cross-built from x86_64 (`Arch::cross_env`); its package's manual pages
//! and completions are those the x86_64 binary writes, from the same command line.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    apt,
    arch::Arch,
    elf::{interpreter, machine},
    prereq,
    results::Tally,
    vm::Binaries,
    workspace::{cargo, say, workspace_root},
};

/// What `cargo xtask dist` wrote for one architecture, and the test binaries built beside it.
#[derive(Clone, Debug)]
pub struct Dist {
    pub arch: Arch,
    pub udptrace: PathBuf,
    pub scenarios: PathBuf,
    pub bench: PathBuf,
    pub demo: PathBuf,
    pub deb: PathBuf,
    /// The udptrace the package holds, unpacked from it: what the VMs run.
    pub packaged: PathBuf,
}

impl Dist {
    /// What a VM of this architecture runs.
    pub fn binaries(&self) -> Binaries {
        Binaries { udptrace: self.packaged.clone(), scenarios: self.scenarios.clone(), bench: self.bench.clone() }
    }
}

pub fn dist_dir() -> PathBuf {
    target_dir().join("dist")
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set (a second checkout sharing one), else the workspace's
/// `target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// Builds the static binaries and the package of each of `arches`.
pub fn build(arches: &[Arch]) -> Result<Vec<Dist>> {
    prereq::ensure_build()?;
    let mut built: Vec<Dist> = Vec::new();
    // The pages and completions are written by running a udptrace: this machine's, built first, or alone
    // when only another architecture is asked for.
    let mut arches = arches.to_vec();
    arches.sort_by_key(|arch| !arch.is_host());
    let writer = match arches.first().filter(|arch| arch.is_host()) {
        Some(_) => None,
        None => {
            let host = Arch::ALL.into_iter().find(|a| a.is_host()).context("no architecture of this machine")?;
            Some(compile(host, &["udptrace"])?.join("udptrace"))
        }
    };
    for arch in arches {
        let dir = compile(arch, &["udptrace", "udptrace-scenarios"])?;
        let (scenarios, bench) = (dir.join("udptrace-scenarios"), dir.join("udptrace-bench"));
        for binary in [&dir.join("udptrace"), &scenarios, &bench] {
            if let Some(interpreter) = interpreter(binary)? {
                bail!("{} is not static: it asks for {interpreter}", binary.display());
            }
        }
        let out = dist_dir().join(arch.name());
        fs::create_dir_all(&out)?;
        let udptrace = out.join("udptrace");
        // Replaced, not written over: a VM or a test may still run the last one.
        let _ = fs::remove_file(&udptrace);
        fs::copy(dir.join("udptrace"), &udptrace).context("copying udptrace into target/dist")?;
        // Without its symbols and debug sections (a tenth of it): the programs it embeds are data, untouched.
        // LLVM's strip, which reads every architecture's ELF.
        prereq::run_visible(Command::new(format!("llvm-strip-{}", prereq::LLVM_MAJOR)).arg(&udptrace))?;
        let pages_from = writer.clone().or_else(|| built.first().map(|host| host.udptrace.clone()));
        let deb = package(arch, &udptrace, pages_from.as_deref().unwrap_or(&udptrace))?;
        let packaged = unpack_binary(arch, &deb)?;
        say(&format!("wrote {} and {}", udptrace.display(), deb.display()));
        built.push(Dist { arch, udptrace, scenarios, bench, demo: dir.join("udptrace-demo"), deb, packaged });
    }
    Ok(built)
}

/// Builds `packages` in release for `arch`; the folder the binaries are in.
fn compile(arch: Arch, packages: &[&str]) -> Result<PathBuf> {
    prereq::ensure_rust_target(arch.target())?;
    let sysroot = ensure_cross(arch)?;
    say(&format!("building {} (release, static: {})", packages.join(", "), arch.target()));
    let mut command = cargo();
    command.args(["build", "--release", "--locked", "--target", arch.target()]);
    for package in packages {
        command.args(["-p", package]);
    }
    arch.cross_env(&mut command, &sysroot);
    prereq::run_visible(&mut command)?;
    Ok(target_dir().join(arch.target()).join("release"))
}

/// What building for `arch` from this machine needs besides Rust's standard library for it: for another
/// architecture, Debian's clang (the C of the allocator) and musl's headers of that architecture, from
/// Debian's `musl-dev` unpacked into `.vm-cache/sysroot-ARCH/` (the machine's own architectures and
/// packages are left as they were). The sysroot, empty for this machine's own architecture.
fn ensure_cross(arch: Arch) -> Result<PathBuf> {
    if arch.is_host() {
        return Ok(PathBuf::new());
    }
    prereq::ensure_packages(&[&format!("clang-{}", prereq::LLVM_MAJOR)])?;
    let sysroot = apt::cache_dir().join(format!("sysroot-{}", arch.debian()));
    if sysroot.join(format!("usr/include/{}-linux-musl/stdlib.h", arch.name())).exists() {
        return Ok(sysroot);
    }
    say(&format!("fetching musl's {} headers (Debian's musl-dev) into {}", arch.debian(), sysroot.display()));
    let download = apt::cache_dir().join(format!("download-musl-dev-{}", arch.debian()));
    let _ = fs::remove_dir_all(&download);
    fs::create_dir_all(&download)?;
    apt::Apt::new(arch)?.download(&["musl-dev"], &download)?;
    apt::unpack_all(&download, &sysroot)?;
    fs::remove_dir_all(&download)?;
    Ok(sysroot)
}

/// `usr/bin/udptrace` as the package holds it, unpacked beside the package.
fn unpack_binary(arch: Arch, deb: &Path) -> Result<PathBuf> {
    let dir = dist_dir().join(arch.name()).join("packaged");
    let _ = fs::remove_dir_all(&dir);
    prereq::run_visible(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir))?;
    Ok(dir.join("usr/bin/udptrace"))
}

/// What the package of `dist` holds, checked from the `.deb` itself: its architecture and files, and that
/// its udptrace is a static executable of that architecture. Each check counts in the tally; the binary runs
/// in the matrix's VMs of the architecture (`--version`, `probes`, the suite).
pub fn check_package(dist: &Dist) -> Tally {
    let mut tally = Tally::default();
    let arch = dist.arch;
    let mut report = |name: &str, outcome: Result<String>| {
        let line = match outcome {
            Ok(detail) => {
                tally.passed += 1;
                format!("pass: {detail}")
            }
            Err(e) => {
                tally.failed += 1;
                format!("FAIL: {e:#}")
            }
        };
        println!("dist  {:<8}  {name:<26} {line}", arch.debian());
    };
    let field = |name: &str| -> Result<String> {
        let output = Command::new("dpkg-deb").arg("-f").arg(&dist.deb).arg(name).output()?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    report(
        "architecture",
        field("Architecture").and_then(|a| if a == arch.debian() { Ok(a) } else { bail!("Architecture: {a}") }),
    );
    report(
        "contents",
        Command::new("dpkg-deb").arg("-c").arg(&dist.deb).output().map_err(anyhow::Error::from).and_then(|o| {
            let listing = String::from_utf8_lossy(&o.stdout);
            let missing: Vec<&str> =
                PACKAGE_FILES.iter().copied().filter(|f| !listing.lines().any(|l| l.ends_with(f))).collect();
            if o.status.success() && missing.is_empty() {
                Ok(format!("{} entries, every expected file", listing.lines().count()))
            } else {
                bail!("missing {}", missing.join(", "))
            }
        }),
    );
    report(
        "static_executable",
        machine(&dist.packaged).and_then(|machine| {
            let wanted = match arch {
                Arch::X86_64 => object::elf::EM_X86_64,
                Arch::Aarch64 => object::elf::EM_AARCH64,
            };
            match interpreter(&dist.packaged)? {
                Some(loader) => bail!("asks for {loader}"),
                None if machine == wanted => Ok(format!("{} ELF, no PT_INTERP", arch.name())),
                None => bail!("ELF machine {machine}, not {}", arch.name()),
            }
        }),
    );
    tally
}

/// What each package must hold, by path.
const PACKAGE_FILES: &[&str] = &[
    "./usr/bin/udptrace",
    "./usr/share/man/man1/udptrace.1.gz",
    "./usr/share/bash-completion/completions/udptrace",
    "./usr/share/zsh/vendor-completions/_udptrace",
    "./usr/share/fish/vendor_completions.d/udptrace.fish",
    "./lib/systemd/system/udptrace.service",
    "./etc/default/udptrace",
    "./usr/share/doc/udptrace/copyright",
];

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

/// Lays out the package's tree under `target/dist/ARCH/deb/` and builds it with `dpkg-deb`; the pages and
/// completions are written by `writer`, a udptrace that runs here.
fn package(arch: Arch, udptrace: &Path, writer: &Path) -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let root = dist_dir().join(arch.name()).join("deb");
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
    let man = dist_dir().join(arch.name()).join("man");
    if man.exists() {
        fs::remove_dir_all(&man)?;
    }
    fs::create_dir_all(&man)?;
    prereq::run_visible(Command::new(writer).arg("manpages").arg(&man))?;
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
        let output = Command::new(writer).args(["completions", shell]).output()?;
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
    let debian_arch = arch.debian();
    let control = format!(
        "Package: udptrace
Version: {version}
Architecture: {debian_arch}
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
    let deb = dist_dir().join(format!("udptrace_{version}_{debian_arch}.deb"));
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
