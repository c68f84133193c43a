//! `cargo xtask vm-test`: the scenario suite in each mode inside Debian's cloud kernels, booted under QEMU
//! (TCG: KVM does not work on these machines), where kprobes and fentry exist: amd64's 5.10, 6.1, 6.12,
//! 6.18 and the newest 7.x, and arm64's 6.1 and newest 7.x (`qemu-system-aarch64`, the `virt` board).
//!
//! Kernels are resolved over apt lists of udptrace's own (`crate::apt`: bullseye, bookworm and its updates,
//! trixie-backports; the machine's own apt setup is not touched), downloaded once into `.vm-cache/`, and
//! booted from an initramfs holding busybox, iproute2's `ip` and `ss`, nftables' `nft`, OpenBSD's `nc`,
//! conntrack-tools' `conntrack`, the DNS tools, their shared libraries (this machine's for amd64, Debian's
//! arm64 packages for arm64), udptrace as its package holds it, the scenario binary and the kernel modules the
//! scenarios need (veth, nftables REJECT, conntrack and NAT). The VM prints one line per check; this side
//! collects them into a kernel x mode x check matrix. The VMs run in lanes, one more than the cores.
//!
//! `kernels.rs` resolves and fetches the kernels, `userland.rs` finds the tools, `initramfs.rs` builds what
//! they boot (`init.sh` its `/init`), `plan.rs` says what each VM runs, this file boots the VMs,
//! `console.rs` reads what they print, `record.rs` keeps what passed and writes the matrix and the table in
//! docs/kernels.md.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    apt::{Apt, cache_dir},
    arch::Arch,
    prereq,
    workspace::say,
};

mod console;
mod initramfs;
mod kernels;
mod plan;
mod record;
mod userland;

pub use self::{
    console::{VmCheck, VmRun},
    kernels::SERIES,
    plan::{Part, Plan, machine, major_minor, series_of},
    record::{kernel_note, matrix, proven_table, record_pass, write_proven_table},
};
use self::{
    initramfs::{add_with_dependencies, build_initramfs, decompress_module, find_file, module_file},
    kernels::{fetch, natural_key, resolve},
    record::{last_seconds, passed_file},
    userland::Userland,
};

/// What this machine needs for the VMs, besides each architecture's emulator: the image's tools
/// (`cpio`, `xz`, `zstd`, `modinfo`) and, for its own architecture, the userland the image takes from it.
fn vm_packages(arches: &[Arch]) -> Vec<&'static str> {
    let mut packages = vec!["cpio", "xz-utils", "zstd", "kmod"];
    for arch in arches {
        packages.push(arch.qemu_package());
        if arch.is_host() {
            packages.extend(userland::host_packages());
        }
    }
    packages
}

/// The static binaries a VM of one architecture runs: udptrace as its package holds it, the scenario suite
/// and the benchmark.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub udptrace: PathBuf,
    pub scenarios: PathBuf,
    pub bench: PathBuf,
}

/// Kernel modules the scenarios need (veth links; nftables DROP and REJECT; the UDP socket table through
/// sock_diag, which a full system loads on first use), loaded with their dependencies: the cloud kernels
/// build them as modules. VXLAN, for a socket that is the kernel's own. Conntrack and NAT behind the
/// scenarios' Services and masquerades: nftables' `ct` expression (`nft_ct`), its NAT chains, `dnat` and
/// `masquerade` (`nft_chain_nat`, `nft_nat`, `nft_masq`), with `nf_conntrack`, `nf_nat` and the
/// defragmenters among their dependencies; and ctnetlink (`nf_conntrack_netlink`), which the `conntrack` tool
/// and udptrace's lookups by flow ask. A full system loads them on first use (`request_module`), which this
/// initramfs, without modprobe, cannot.
const MODULES: &[&str] = &[
    "veth",
    "nft_reject_inet",
    "udp_diag",
    "vxlan",
    "nft_ct",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nf_conntrack_netlink",
];

pub const MODES: &[&str] = &["fentry", "kprobe", "tracepoint"];
/// A VM that has not powered off by then is killed and its run fails.
const VM_TIMEOUT: Duration = Duration::from_secs(25 * 60);

struct Kernel {
    package: String,
    arch: Arch,
    vmlinuz: PathBuf,
    /// Decompressed modules, dependencies before the modules that need them.
    modules: Vec<PathBuf>,
}

fn boot(kernel: &Kernel, initramfs: &Path, log: &Path, append: &str) -> Result<VmRun> {
    let (qemu, machine) = kernel.arch.qemu();
    let mut child = Command::new(qemu)
        .args(machine)
        .args(["-accel", "tcg", "-m", "1024", "-smp", "1", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {qemu}"))?;
    let stdout = child.stdout.take().context("qemu's console")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut run = VmRun::default();
    // Written as it comes, so that a VM still running can be followed (`tail -f`).
    let mut transcript = std::io::LineWriter::new(fs::File::create(log)?);
    let deadline = Instant::now() + VM_TIMEOUT;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                writeln!(transcript, "{line}")?;
                run.add_line(&line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                writeln!(transcript, "-- killed: the VM ran out of time")?;
                break;
            }
        }
    }
    let _ = child.wait();
    Ok(run)
}

pub fn vm_test(
    binaries: impl Fn(Arch) -> Result<Binaries>,
    only_series: Option<&str>,
    plan: &Plan,
) -> Result<Vec<(String, VmRun)>> {
    prereq::ensure_packages(&vm_packages(&plan.arches))?;
    fs::create_dir_all(cache_dir().join("logs"))?;
    let mut prepared = Vec::new();
    for &arch in &plan.arches {
        let wanted: Vec<&str> =
            series_of(arch).iter().copied().filter(|s| only_series.is_none_or(|o| o == *s)).collect();
        if wanted.is_empty() {
            continue;
        }
        let built = binaries(arch)?;
        let mut files = vec![
            (built.udptrace, "/usr/bin/udptrace".to_owned()),
            (built.scenarios, "/usr/bin/udptrace-scenarios".to_owned()),
            (built.bench, "/usr/bin/udptrace-bench".to_owned()),
        ];
        files.extend(Userland::of(arch)?.files()?);
        let apt = Apt::new(arch)?;
        for series in wanted {
            let kernel = fetch(&apt, &resolve(&apt, series, arch)?, arch)?;
            let initramfs = build_initramfs(&kernel, &files)?;
            prepared.push((series, kernel, initramfs));
        }
    }
    if prepared.is_empty() {
        let all: Vec<String> =
            plan.arches.iter().map(|a| format!("{}: {}", a.debian(), series_of(*a).join(", "))).collect();
        bail!("no kernel series {}: the matrix has {}", only_series.unwrap_or(""), all.join("; "));
    }
    // One VM per part of each kernel (a mode of the suite, or the benchmark), longest first by what it took
    // when the suite last passed on that kernel (a part with no such record first of all): each lane takes the
    // longest left, and the lanes end close together.
    let passed = fs::read_to_string(passed_file()).unwrap_or_default();
    let mut jobs: Vec<(&str, &Kernel, &PathBuf, Part, bool)> = Vec::new();
    let host_series = plan.host_tracepoint.as_deref().map(major_minor);
    let on_host = |kernel: &Kernel| {
        kernel.arch.is_host()
            && host_series.as_deref().is_some_and(|host| {
                kernel.package.strip_prefix("linux-image-").is_some_and(|version| major_minor(version) == host)
            })
    };
    for (series, kernel, initramfs) in &prepared {
        let parts = plan
            .parts(kernel.arch, series)
            .into_iter()
            .filter(|p| !(on_host(kernel) && *p == Part::Suite("tracepoint".into())));
        for (at, part) in parts.enumerate() {
            // The first VM of a kernel says what attaches there (`udptrace probes -v`), for the table in docs/kernels.md.
            jobs.push((series, kernel, initramfs, part, at == 0));
        }
    }
    // A part not yet timed on its kernel is taken to be as long as the longest it took on another of its
    // architecture.
    let longest = |arch: Arch, part: &str| {
        series_of(arch).iter().filter_map(|series| last_seconds(&passed, &machine(arch, series), part)).max()
    };
    jobs.sort_by_key(|(series, kernel, _, part, _)| {
        std::cmp::Reverse(
            last_seconds(&passed, &machine(kernel.arch, series), part.name())
                .or_else(|| longest(kernel.arch, part.name()))
                .unwrap_or(u64::MAX),
        )
    });
    let lanes = lanes().min(jobs.len());
    say(&format!(
        "booting {} under QEMU (TCG): {} VMs, {lanes} at a time, one per mode of the suite{}",
        prepared.iter().map(|(_, k, _)| k.package.as_str()).collect::<Vec<_>>().join(", "),
        jobs.len(),
        if jobs.iter().any(|(_, _, _, part, _)| *part == Part::Bench) {
            format!(" and one for the benchmark ({}) on {}", plan.bench, {
                let on: Vec<&str> = prepared
                    .iter()
                    .filter(|(s, k, _)| plan.bench_on(k.arch, s))
                    .map(|(_, k, _)| k.package.as_str())
                    .collect();
                on.join(" and ")
            })
        } else {
            String::new()
        }
    ));
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let finished = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..lanes {
            scope.spawn(|| {
                while let Some((series, kernel, initramfs, part, probes)) =
                    jobs.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let log = cache_dir().join("logs").join(format!("{}-{}.log", kernel.package, part.name()));
                    let vm_started = Instant::now();
                    let append = plan.append(kernel.arch, series, part, *probes);
                    let result = boot(kernel, initramfs, &log, &append).map(|mut run| {
                        run.series = (*series).to_owned();
                        run.arch = kernel.arch;
                        run.wall = vm_started.elapsed();
                        run.parts.push((part.name().to_owned(), run.wall));
                        let row = crate::timing::vm_row(
                            &format!("{} {}", run.kernel(&kernel.package), part.name()),
                            run.wall,
                            &run.clocks,
                            MODES,
                        );
                        run.timing.push(row);
                        say(&format!(
                            "{} {} finished in {:.0} s; console log in {}",
                            kernel.package,
                            part.name(),
                            run.wall.as_secs_f64(),
                            log.display()
                        ));
                        (kernel.package.clone(), run)
                    });
                    finished.lock().unwrap_or_else(|e| e.into_inner()).push(result);
                }
            });
        }
    });
    say(&format!("the kernel matrix took {:.0} s", started.elapsed().as_secs_f64()));
    let mut runs: Vec<(String, VmRun)> = Vec::new();
    let finished = finished.into_inner().unwrap_or_else(|e| e.into_inner());
    for (package, run) in finished.into_iter().collect::<Result<Vec<_>>>()? {
        match runs.iter_mut().find(|(p, _)| *p == package) {
            Some((_, kernel_run)) => kernel_run.merge(run),
            None => runs.push((package, run)),
        }
    }
    for (package, run) in &mut runs {
        if let Some(release) = plan
            .host_tracepoint
            .as_ref()
            .filter(|_| prepared.iter().any(|(_, k, _)| k.package == *package && on_host(k)))
        {
            run.on_host = Some(release.clone());
        }
    }
    // In the matrix's order, whichever VM finished first.
    runs.sort_by_key(|(_, run)| (run.arch, series_of(run.arch).iter().position(|s| *s == run.series)));
    Ok(runs)
}

/// How many VMs run at once: one more than this machine has cores. TCG runs each guest on one host thread,
/// and a guest of the suite spends about half its time waiting (on the network, on a timer, on another
/// process): a third VM uses what the waits leave.
fn lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) + 1
}

#[cfg(test)]
mod tests {
    use super::{
        kernels::newest_package,
        record::{debian_version, last_passed},
        *,
    };

    #[test]
    fn picks_the_newest_cloud_kernel_of_each_series() {
        let names = "linux-image-6.1.0-9-cloud-amd64 - Linux 6.1\n\
                     linux-image-6.1.0-56-cloud-amd64 - Linux 6.1\n\
                     linux-image-6.1.0-56-cloud-amd64-unsigned - Linux 6.1\n\
                     linux-image-6.1.0-56-cloud-amd64-dbg - debug\n\
                     linux-image-6.12.9+deb12-cloud-amd64 - Linux 6.12\n\
                     linux-image-6.12.117+deb12-cloud-amd64 - Linux 6.12\n\
                     linux-image-6.12.111+deb12-cloud-amd64 - Linux 6.12\n";
        assert_eq!(newest_package(names, "6.1", Arch::X86_64).as_deref(), Some("linux-image-6.1.0-56-cloud-amd64"));
        assert_eq!(
            newest_package(names, "6.12", Arch::X86_64).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(newest_package(names, "6.6", Arch::X86_64), None);
        let backports = "linux-image-5.10.0-46-cloud-amd64 - Linux 5.10\n\
                         linux-image-7.0.13+deb13-cloud-amd64 - Linux 7.0\n\
                         linux-image-7.3.4+deb13-cloud-amd64 - Linux 7.3\n\
                         linux-image-7.2.12+deb13-cloud-amd64 - Linux 7.2\n\
                         linux-image-6.18.15+deb13-cloud-amd64 - Linux 6.18\n";
        assert_eq!(
            newest_package(backports, "7", Arch::X86_64).as_deref(),
            Some("linux-image-7.3.4+deb13-cloud-amd64")
        );
        assert_eq!(
            newest_package(backports, "5.10", Arch::X86_64).as_deref(),
            Some("linux-image-5.10.0-46-cloud-amd64")
        );
        assert_eq!(newest_package(backports, "6.1", Arch::X86_64), None);
        let arm64 = "linux-image-6.1.0-57-cloud-arm64 - Linux 6.1\n\
                     linux-image-6.1.0-58-cloud-amd64 - Linux 6.1\n";
        assert_eq!(newest_package(arm64, "6.1", Arch::Aarch64).as_deref(), Some("linux-image-6.1.0-57-cloud-arm64"));
        assert_eq!(newest_package(arm64, "6.1", Arch::X86_64).as_deref(), Some("linux-image-6.1.0-58-cloud-amd64"));
    }

    #[test]
    fn says_which_kernel_ran_and_which_last_passed() {
        let version = "Linux version 6.1.0-57-cloud-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian \
                       12.2.0-14+deb12u1) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.158-1 (2026-11-20)";
        assert_eq!(debian_version(version), Some("6.1.158-1"));
        let passed = "6.1 linux-image-6.1.0-56-cloud-amd64 6.1.0-56-cloud-amd64 6.1.153-1\n\
                      6.12 linux-image-6.12.117+deb12-cloud-amd64 6.12.117+deb12-cloud-amd64 6.12.117-1\n";
        assert_eq!(
            last_passed(passed, "6.1").map(|l| l.split(' ').nth(1)),
            Some(Some("linux-image-6.1.0-56-cloud-amd64"))
        );
        assert_eq!(last_passed(passed, "6.6"), None);
        assert_eq!(last_seconds(passed, "6.1", "fentry"), None);
        let timed =
            "6.1 linux-image-6.1.0-56-cloud-amd64 6.1.0-56-cloud-amd64 6.1.153-1 fentry=600,kprobe=400,bench=180\n";
        assert_eq!(last_seconds(timed, "6.1", "kprobe"), Some(400));
        assert_eq!(last_seconds(timed, "6.1", "tracepoint"), None);
        let mut run = VmRun { series: "6.1".into(), ..VmRun::default() };
        run.add_line("@@udptrace-vm kernel 6.1.0-57-cloud-amd64");
        run.add_line(&format!("@@udptrace-vm version {version}"));
        assert_eq!(run.kernel("linux-image-6.1.0-57-cloud-amd64"), "6.1.0-57-cloud-amd64 (Debian 6.1.158-1)");
    }

    #[test]
    fn the_readme_table_says_what_each_mode_proved_and_through_what() {
        let mut run = VmRun { series: "7".into(), ..VmRun::default() };
        for line in [
            "@@udptrace-vm kernel 7.3.4+deb13-cloud-amd64",
            "@@udptrace-vm probes socket_error: an ICMP error reaching a UDP socket (socket_error)",
            "@@udptrace-vm probes   fentry      attached: fentry:udp_err, fexit:udp_err (every verdict); \
             fentry:udp_err instead of fentry:__udp4_lib_err (folded; absent); fexit:udp_err instead of \
             fexit:__udp4_lib_err (folded; absent)",
            "@@udptrace-vm probes   tracepoint  no: sock:inet_sk_error_report: tracepoint is absent (needs kernel 5.14)",
            "fentry      closed_port_ipv4       socket_error     pass",
            "fentry      closed_port_ipv6       icmp_sent        skip, because no hook",
            "kprobe      closed_port_ipv4       socket_error     FAIL: no event",
            "tracepoint  closed_port_ipv4       all              skip, because nothing attaches",
        ] {
            run.add_line(line);
        }
        let table = proven_table(&[("linux-image-7.3.4+deb13-cloud-amd64".into(), run)]);
        let row = table.lines().nth(2).unwrap();
        assert_eq!(
            row,
            "| amd64 | Debian 7.3.4+deb13-cloud-amd64 | 1 passed, 1 skipped; udp_err for __udp4_lib_err | **1 failed**, 0 passed | \
             cannot run: socket_error: sock:inet_sk_error_report: tracepoint is absent (needs kernel 5.14) |"
        );
    }

    #[test]
    fn the_hosts_own_series_is_proven_on_the_host() {
        assert_eq!(major_minor("6.18.44-fc-v1045"), "6.18");
        assert_eq!(major_minor("6.18.15+deb13-cloud-amd64"), "6.18");
        assert_eq!(major_minor("5.10.0-46-cloud-amd64"), "5.10");
        let mut run = VmRun { on_host: Some("6.18.44-fc".into()), done: true, ..VmRun::default() };
        run.add_line(&format!("@@udptrace-vm udptrace-version udptrace {}", env!("CARGO_PKG_VERSION")));
        run.add_line("fentry      closed_port_ipv4       socket_error     pass");
        run.add_line("kprobe      closed_port_ipv4       socket_error     pass");
        assert!(run.problems(&Plan { suite: true, ..Plan::default() }).is_empty());
        let table = proven_table(&[("linux-image-6.18.15+deb13-cloud-amd64".into(), run)]);
        assert!(
            table
                .lines()
                .nth(2)
                .unwrap()
                .ends_with("on this host's 6.18.44-fc instead, ring and perf buffers (the host suite, same series) |")
        );
    }
}
