//! Installing what the build and the tests need on a fresh machine, saying what it does as it goes.
//! `.ci/run` reaches this through `cargo xtask test`; nothing is installed twice.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::workspace::{cargo_bin_dir, is_root, path_with_cargo_bin, say, workspace_root};

/// The LLVM major that the preinstalled nightly uses; bpf-linker must link the same one.
pub const LLVM_MAJOR: &str = "22";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The validator of the Kubernetes manifests in deploy/ (PyPI), with the schemas of Kubernetes up to 1.37.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// Debian packages, by what needs them: LLVM for bpf-linker, and its `llvm-strip`, which strips the shipped
/// binary of either architecture; `musl-tools` (musl-gcc) for the static build's mimalloc, which is C.
pub const BUILD_PACKAGES: &[&str] =
    &["llvm-22-dev", "llvm-22", "libpolly-22-dev", "libzstd-dev", "zlib1g-dev", "musl-tools"];
/// `prometheus`: the metrics test scrapes udptrace with a real one; `bpftrace` and `tcpdump`: what the
/// benchmark compares udptrace with; `netcat-openbsd`: `nc -vzu` beside `udptrace check`; `bind9-dnsutils`:
/// dig, a DNS client whose refused query the suite names; `dnsmasq-base`: a DNS server and forwarder;
/// `strace`: the system calls udptrace makes, held against the service's filter; `conntrack`: the witness of
/// the entries the NAT scenarios' events name (`conntrack -L`); `python3-venv`: a Python environment of its own
/// for kubernetes-validate.
pub const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "procps",
    "nftables",
    "prometheus",
    "bpftrace",
    "tcpdump",
    "netcat-openbsd",
    "bind9-dnsutils",
    "dnsmasq-base",
    "strace",
    "conntrack",
    "python3-venv",
    // `--pcap`'s files read back: tshark's dissectors, capinfos (wireshark-common).
    "tshark",
];

pub fn ensure_build() -> Result<()> {
    ensure_packages(BUILD_PACKAGES)?;
    ensure_rust_src()?;
    ensure_bpf_linker()
}

pub fn ensure_test() -> Result<()> {
    ensure_build()?;
    ensure_packages(TEST_PACKAGES)?;
    ensure_kubernetes_validate()
}

/// Where kubernetes-validate lives: a Python environment of its own, kept with the other downloads.
fn kubernetes_validate_dir() -> std::path::PathBuf {
    workspace_root().join(format!(".vm-cache/kubernetes-validate-{KUBERNETES_VALIDATE_VERSION}"))
}

/// The `kubernetes-validate` command.
pub fn kubernetes_validate() -> std::path::PathBuf {
    kubernetes_validate_dir().join("bin/kubernetes-validate")
}

/// The Python of kubernetes-validate's environment, which has its YAML parser.
pub fn kubernetes_validate_python() -> std::path::PathBuf {
    kubernetes_validate_dir().join("bin/python3")
}

/// kubernetes-validate at the pinned version, from PyPI, in a Python environment of its own made with
/// Debian's Python (the system's own packages are left alone).
fn ensure_kubernetes_validate() -> Result<()> {
    let version = Command::new(kubernetes_validate()).arg("--version").output();
    if version.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == KUBERNETES_VALIDATE_VERSION) {
        return Ok(());
    }
    let dir = kubernetes_validate_dir();
    say(&format!("installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} into {}", dir.display()));
    let _ = std::fs::remove_dir_all(&dir);
    run_visible(Command::new("/usr/bin/python3").arg("-m").arg("venv").arg(&dir))?;
    run_visible(
        Command::new(dir.join("bin/pip"))
            .args(["install", "--disable-pip-version-check", "-q"])
            .arg(format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}")),
    )
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}: install them as root (apt-get install {})",
            missing.join(" "),
            missing.join(" ")
        );
    }
    say(&format!("installing Debian packages: {}", missing.join(" ")));
    run_visible(Command::new("apt-get").args(["update", "-q"]))?;
    run_visible(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The standard library for `target` in the toolchain that builds user space (the static build's musl).
pub fn ensure_rust_target(target: &str) -> Result<()> {
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(workspace_root())
        .output()
        .context("running rustup (is rustup installed?)")?;
    if String::from_utf8_lossy(&output.stdout).lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    say(&format!("adding Rust's standard library for {target} (the static binaries)"));
    run_visible(Command::new("rustup").args(["target", "add", target]).current_dir(workspace_root()))
}

fn ensure_rust_src() -> Result<()> {
    let output = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .context("running rustup (is rustup installed?)")?;
    if !output.status.success() {
        bail!(
            "rustup has no nightly toolchain: the eBPF programs need nightly (build-std), and no toolchain can be \
             downloaded here: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    if String::from_utf8_lossy(&output.stdout).lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    say("adding rust-src to the nightly toolchain (the eBPF build compiles core itself)");
    run_visible(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker at the pinned version, linked against LLVM 22.
fn bpf_linker_ok() -> bool {
    let binary = cargo_bin_dir().join("bpf-linker");
    let version = Command::new(&binary).arg("--version").output();
    let Ok(version) = version else { return false };
    if !String::from_utf8_lossy(&version.stdout).contains(BPF_LINKER_VERSION) {
        return false;
    }
    // A dynamically linked bpf-linker names its libLLVM; it must be LLVM 22's.
    let libs = Command::new("ldd").arg(&binary).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    match libs {
        Ok(libs) => libs
            .lines()
            .filter(|l| l.contains("libLLVM"))
            .all(|l| l.contains(&format!("libLLVM.so.{LLVM_MAJOR}")) || l.contains(&format!("libLLVM-{LLVM_MAJOR}"))),
        Err(_) => true,
    }
}

fn ensure_bpf_linker() -> Result<()> {
    if bpf_linker_ok() {
        return Ok(());
    }
    say(&format!("building bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM_MAJOR} (about a minute)"));
    let llvm = format!("/usr/lib/llvm-{LLVM_MAJOR}");
    let path = format!("{llvm}/bin:{}", path_with_cargo_bin());
    run_visible(
        Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{LLVM_MAJOR}")])
            .env("LLVM_PREFIX", &llvm)
            // /usr/bin/llvm-config may be another LLVM: the PATH decides which one the build finds.
            .env("PATH", path),
    )?;
    if !bpf_linker_ok() {
        bail!("bpf-linker was installed but does not report {BPF_LINKER_VERSION} linked against LLVM {LLVM_MAJOR}");
    }
    Ok(())
}

/// Runs a command with its output shown, failing on a non-zero exit.
pub fn run_visible(command: &mut Command) -> Result<()> {
    let shown = format!("{command:?}");
    let status = command.stdin(Stdio::null()).status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}
