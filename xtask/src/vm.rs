//! `cargo xtask vm-test`: the scenario suite in each mode inside Debian's cloud kernels (5.10, 6.1, 6.12,
//! 6.18 and the newest 7.x), booted under QEMU (TCG: KVM does not work on these machines), where kprobes
//! and fentry exist.
//!
//! Kernels are resolved over apt lists kept in `.vm-cache/apt/` (bullseye, bookworm and its updates,
//! trixie-backports; the machine's own apt setup is not touched), downloaded once into `.vm-cache/`, and
//! booted from an initramfs holding busybox, iproute2's `ip` and `ss`, nftables' `nft`, OpenBSD's `nc`,
//! udptrace, the scenario binary, their shared libraries and the kernel modules the scenarios need (veth,
//! nftables REJECT). The VM
//! prints one line per check; this side collects them into a kernel x mode x check matrix. The VMs run one
//! per core.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{prereq, say, workspace_root};

pub const VM_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "zstd",
    "iproute2",
    "nftables",
    "kmod",
    "bpftool",
    "netcat-openbsd",
];

/// Kernel modules the scenarios need (veth links; nftables DROP and REJECT; the UDP socket table through
/// sock_diag, which a full system loads on first use), loaded with their dependencies: the cloud kernels
/// build them as modules. VXLAN, for a socket that is the kernel's own.
const MODULES: &[&str] = &["veth", "nft_reject_inet", "udp_diag", "vxlan"];

pub const MODES: &[&str] = &["fentry", "kprobe", "tracepoint"];
/// A VM that has not powered off by then is killed and its run fails.
const VM_TIMEOUT: Duration = Duration::from_secs(25 * 60);
/// Marks the lines the VM's init prints for this side.
const MARK: &str = "@@udptrace-vm";

struct Kernel {
    package: String,
    vmlinuz: PathBuf,
    /// Decompressed modules, dependencies before the modules that need them.
    modules: Vec<PathBuf>,
}

fn cache_dir() -> PathBuf {
    workspace_root().join(".vm-cache")
}

/// Natural order on package names: numbers compare as numbers (`6.1.0-9` < `6.1.0-56`).
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((std::mem::take(&mut text), digits.parse().unwrap_or(u64::MAX)));
                digits.clear();
            }
            text.push(c);
        }
    }
    key.push((text, digits.parse().unwrap_or(0)));
    key
}

/// The newest signed cloud kernel package of `series` in the apt lists, from names like
/// `linux-image-6.1.0-56-cloud-amd64` and `linux-image-6.12.117+deb12-cloud-amd64`.
pub fn newest_package(apt_names: &str, series: &str) -> Option<String> {
    let prefix = format!("linux-image-{series}.");
    apt_names
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            name.strip_prefix(&prefix).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                && name.ends_with("-cloud-amd64")
                && !name.contains("unsigned")
                && !name.contains("dbg")
        })
        .max_by_key(|name| natural_key(name))
        .map(str::to_owned)
}

/// The kernel series the matrix covers: the LTS kernels fleets run, and the newest 7.x (`7`), resolved at
/// run time so that the matrix follows Debian's newest kernel without a code change.
pub const SERIES: &[&str] = &["5.10", "6.1", "6.12", "6.18", "7"];

/// The Debian suites the cloud kernels come from: bullseye (5.10), bookworm and its updates (6.1, 6.12),
/// trixie-backports (6.16 to the newest 7.x).
const APT_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
";

/// Lists older than this are fetched again before a kernel is resolved.
const APT_LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// apt over lists of udptrace's own, in `.vm-cache/apt/`: the machine's sources, lists and package cache
/// are left as they were.
struct Apt {
    dir: PathBuf,
}

impl Apt {
    fn new() -> Result<Apt> {
        let dir = cache_dir().join("apt");
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("sources.list"), APT_SOURCES)?;
        Ok(Apt { dir })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let dir = self.dir.display();
        for option in [
            format!("Dir::Etc::SourceList={dir}/sources.list"),
            "Dir::Etc::SourceParts=/nonexistent".to_owned(),
            format!("Dir::State::Lists={dir}/lists"),
            format!("Dir::Cache={dir}/cache"),
            "Dir::State::status=/dev/null".to_owned(),
        ] {
            command.args(["-o", &option]);
        }
        command
    }

    fn update(&self) -> Result<()> {
        say("fetching the apt lists of Debian's kernel suites into .vm-cache/apt/");
        prereq::run_visible(self.command("apt-get").args(["update", "-q"]))?;
        fs::write(self.dir.join("updated"), "")?;
        Ok(())
    }

    fn fresh(&self) -> bool {
        fs::metadata(self.dir.join("updated"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < APT_LISTS_MAX_AGE))
    }

    fn search(&self, series: &str) -> Result<String> {
        let output = self
            .command("apt-cache")
            .args([
                "search",
                "--names-only",
                &format!("^linux-image-{}\\.[0-9].*-cloud-amd64$", series.replace('.', "\\.")),
            ])
            .output()
            .context("running apt-cache")?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The newest cloud kernel package of `series`.
    fn resolve(&self, series: &str) -> Result<String> {
        if !self.fresh() {
            self.update()?;
        }
        newest_package(&self.search(series)?, series)
            .with_context(|| format!("no linux-image-{series}*-cloud-amd64 package in Debian's kernel suites"))
    }

    /// Downloads `package` into `dir`; once more after an update, since the lists may name a version the
    /// mirror no longer has.
    fn download(&self, package: &str, dir: &Path) -> Result<()> {
        let mut command = self.command("apt-get");
        command.args(["download", "-q", package]).current_dir(dir);
        if command.status().is_ok_and(|s| s.success()) {
            return Ok(());
        }
        self.update()?;
        prereq::run_visible(self.command("apt-get").args(["download", "-q", package]).current_dir(dir))
    }
}

/// Downloads and unpacks `package` once; later runs reuse `.vm-cache/<package>/`.
fn fetch(apt: &Apt, package: &str) -> Result<Kernel> {
    let dir = cache_dir().join(package);
    let order = dir.join("modules.order");
    let vmlinuz = dir.join("vmlinuz");
    // A cache made before a module joined MODULES is made again.
    if let (true, Ok(names)) = (vmlinuz.exists(), fs::read_to_string(&order))
        && MODULES.iter().all(|wanted| names.lines().any(|name| name == *wanted))
    {
        let modules = names.lines().map(|name| dir.join(format!("{name}.ko"))).collect();
        return Ok(Kernel { package: package.to_owned(), vmlinuz, modules });
    }
    say(&format!("downloading {package} (cached in .vm-cache/ for later runs)"));
    let work = cache_dir().join(format!("download-{package}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let tree = work.join("tree");
    let unpack = |package: &str| -> Result<()> {
        apt.download(package, &work)?;
        let deb = fs::read_dir(&work)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        prereq::run_visible(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
        fs::remove_file(&deb)?;
        Ok(())
    };
    unpack(package)?;
    // From 7.x (and 6.19 in trixie-backports) Debian's linux-image package is empty and depends on
    // linux-binary-VERSION (the vmlinuz, in usr/lib/modules/VERSION/) and linux-modules-VERSION.
    let kernel_file = |tree: &Path| {
        find_file(&tree.join("boot"), |name| name.starts_with("vmlinuz-"))
            .or_else(|_| find_file(&tree.join("usr/lib/modules"), |name| name == "vmlinuz"))
    };
    if kernel_file(&tree).is_err() {
        let version = package.strip_prefix("linux-image-").context("not a linux-image package")?;
        unpack(&format!("linux-binary-{version}"))?;
        unpack(&format!("linux-modules-{version}"))?;
    }
    fs::create_dir_all(&dir)?;
    fs::copy(kernel_file(&tree)?, &vmlinuz)?;
    let modules_root = [tree.join("lib/modules"), tree.join("usr/lib/modules")]
        .into_iter()
        .find(|p| p.exists())
        .context("the package has no lib/modules")?;
    let mut names = Vec::new();
    for wanted in MODULES {
        add_with_dependencies(&modules_root, wanted, &mut names)?;
    }
    for name in &names {
        let file = module_file(&modules_root, name)?;
        decompress_module(&file, &dir.join(format!("{name}.ko")))?;
    }
    fs::write(&order, names.join("\n"))?;
    fs::remove_dir_all(&work)?;
    let modules = names.iter().map(|name| dir.join(format!("{name}.ko"))).collect();
    Ok(Kernel { package: package.to_owned(), vmlinuz, modules })
}

fn module_file(root: &Path, name: &str) -> Result<PathBuf> {
    find_file(root, |file| file == format!("{name}.ko") || file.starts_with(&format!("{name}.ko.")))
        .with_context(|| format!("module {name} is not in the kernel package (built in?)"))
}

/// Appends `name` to `order` after the modules it depends on (`modinfo -F depends`).
fn add_with_dependencies(root: &Path, name: &str, order: &mut Vec<String>) -> Result<()> {
    if order.iter().any(|n| n == name) {
        return Ok(());
    }
    let file = module_file(root, name)?;
    let output = Command::new("modinfo").args(["-F", "depends"]).arg(&file).output().context("running modinfo")?;
    for dependency in String::from_utf8_lossy(&output.stdout).trim().split(',').filter(|d| !d.is_empty()) {
        add_with_dependencies(root, dependency, order)?;
    }
    order.push(name.to_owned());
    Ok(())
}

fn find_file(dir: &Path, matches: impl Fn(&str) -> bool + Copy) -> Result<PathBuf> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Ok(found) = find_file(&path, matches) {
                return Ok(found);
            }
        } else if entry.file_name().to_str().is_some_and(matches) {
            return Ok(path);
        }
    }
    bail!("nothing matching in {}", dir.display())
}

/// Debian compresses modules with xz from 6.x on (`veth.ko.xz`); busybox's insmod wants them plain.
fn decompress_module(from: &Path, to: &Path) -> Result<()> {
    if from.extension().is_some_and(|e| e == "xz") {
        let output = Command::new("xz").arg("-dc").arg(from).output().context("running xz")?;
        if !output.status.success() {
            bail!("xz could not decompress {}", from.display());
        }
        fs::write(to, output.stdout)?;
    } else {
        fs::copy(from, to)?;
    }
    Ok(())
}

/// The shared libraries `binary` needs, with the dynamic loader, as absolute paths.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = Command::new("ldd").arg(binary).output().context("running ldd")?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().find(|word| word.starts_with('/')))
        .map(PathBuf::from)
        .collect())
}

fn copy_into(root: &Path, from: &Path, to: &str) -> Result<()> {
    let target = root.join(to.trim_start_matches('/'));
    fs::create_dir_all(target.parent().context("no parent")?)?;
    // Follow symlinks: the initramfs gets the real file under the name asked for.
    fs::copy(from, &target).with_context(|| format!("copying {} into the initramfs", from.display()))?;
    Ok(())
}

/// The VM's `/init`: what it runs is told on the kernel command line (`Job::append`).
const INIT: &str = include_str!("vm-init.sh");

/// Builds the initramfs for `kernel` (its own veth module) around the release binaries.
fn build_initramfs(kernel: &Kernel, binaries: &[(PathBuf, &str)]) -> Result<PathBuf> {
    let root = cache_dir().join(format!("initramfs-{}", kernel.package));
    let _ = fs::remove_dir_all(&root);
    for dir in ["bin", "dev", "proc", "sys", "run", "tmp", "lib/modules"] {
        fs::create_dir_all(root.join(dir))?;
    }
    copy_into(&root, Path::new("/bin/busybox"), "/bin/busybox")?;
    let init = root.join("init");
    fs::write(&init, INIT)?;
    prereq::run_visible(Command::new("chmod").arg("755").arg(&init).arg(root.join("bin/busybox")))?;
    let mut order = Vec::new();
    for module in &kernel.modules {
        let name = module.file_stem().and_then(|n| n.to_str()).context("module name")?;
        copy_into(&root, module, &format!("/lib/modules/{name}.ko"))?;
        order.push(name.to_owned());
    }
    fs::write(root.join("lib/modules/order"), order.join("\n"))?;
    for (binary, target) in binaries {
        copy_into(&root, binary, target)?;
        for library in shared_libraries(binary)? {
            copy_into(&root, &library, &library.to_string_lossy())?;
        }
    }
    // The kernel opens /dev/console for init before anything is mounted.
    let _ = Command::new("mknod").arg(root.join("dev/console")).args(["c", "5", "1"]).status();
    let image = cache_dir().join(format!("initramfs-{}.cpio.gz", kernel.package));
    let script = format!(
        "cd '{}' && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > '{}'",
        root.display(),
        image.display()
    );
    prereq::run_visible(Command::new("sh").arg("-c").arg(script))?;
    Ok(image)
}

/// One check as the VM printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmCheck {
    pub mode: String,
    pub scenario: String,
    pub check: String,
    /// `pass`, `FAIL: ...` or `skip, because ...`.
    pub outcome: String,
}

/// What one VM run printed that matters.
#[derive(Debug, Default)]
pub struct VmRun {
    /// The series the kernel was resolved for (`6.1`).
    pub series: String,
    pub release: Option<String>,
    /// `/proc/version`, which names Debian's package version (`Debian 6.1.158-1`).
    pub version: Option<String>,
    pub checks: Vec<VmCheck>,
    /// Exit status per mode of the scenario binary.
    pub mode_status: BTreeMap<String, String>,
    pub probes: Vec<String>,
    /// What the benchmark printed (Markdown and its smoke checks).
    pub bench: Vec<String>,
    pub done: bool,
    /// How long the VM ran, from boot to power-off.
    pub wall: Duration,
    /// The init's `clock` lines: (name, seconds the VM had been up).
    pub clocks: Vec<(String, f64)>,
    /// Each scenario's time, per mode.
    pub took: Vec<crate::timing::Took>,
    /// Per mode, the suite's udptrace loads and their time.
    pub loads: Vec<(String, String)>,
    /// How long each VM of the kernel ran: (part, wall).
    pub parts: Vec<(String, Duration)>,
    /// Where each VM's time went, a line per VM.
    pub timing: Vec<String>,
    /// This host's release, where its suite proves tracepoint mode on this series instead of a VM.
    pub on_host: Option<String>,
}

impl VmRun {
    /// Adds what another VM of the same kernel printed. The kernel's run is done when every VM finished.
    fn merge(&mut self, other: VmRun) {
        self.release = self.release.take().or(other.release);
        self.version = self.version.take().or(other.version);
        self.checks.extend(other.checks);
        self.mode_status.extend(other.mode_status);
        self.probes.extend(other.probes);
        self.bench.extend(other.bench);
        self.done &= other.done;
        self.wall += other.wall;
        self.clocks.extend(other.clocks);
        self.took.extend(other.took);
        self.loads.extend(other.loads);
        self.parts.extend(other.parts);
        self.timing.extend(other.timing);
    }
}

impl VmRun {
    /// Reads one console line.
    pub fn add_line(&mut self, line: &str) {
        let line = line.trim_end_matches('\r');
        // The console may put terminal escapes (a reset when the VM starts) before a marked line.
        if let Some(rest) = line.find(MARK).map(|at| &line[at + MARK.len()..]) {
            let rest = rest.trim_start();
            if let Some(release) = rest.strip_prefix("kernel ") {
                self.release = Some(release.to_owned());
            } else if let Some(version) = rest.strip_prefix("version ") {
                self.version = Some(version.to_owned());
            } else if let Some(probes) = rest.strip_prefix("probes ") {
                self.probes.push(probes.to_owned());
            } else if let Some(bench) = rest.strip_prefix("bench") {
                let bench = bench.strip_prefix(' ').unwrap_or(bench);
                // `bench  smoke  CHECK  OUTCOME`: the smoke run's checks count like the suite's.
                let words: Vec<&str> = bench.split_whitespace().collect();
                if let ["bench", "smoke", check, outcome @ ..] = words.as_slice() {
                    self.checks.push(VmCheck {
                        mode: "bench".into(),
                        scenario: "smoke".into(),
                        check: (*check).into(),
                        outcome: outcome.join(" "),
                    });
                }
                self.bench.push(bench.to_owned());
            } else if let Some(end) = rest.strip_prefix("end ") {
                if let Some((mode, status)) = end.split_once(' ') {
                    self.mode_status.insert(mode.to_owned(), status.to_owned());
                }
            } else if let Some(clock) = rest.strip_prefix("clock ") {
                if let Some((name, at)) = clock.split_once(' ')
                    && let Ok(at) = at.trim().parse()
                {
                    self.clocks.push((name.to_owned(), at));
                }
            } else if rest == "done" {
                self.done = true;
            }
            return;
        }
        if let Some(took) = crate::timing::parse_took(line).filter(|t| MODES.contains(&t.place.as_str())) {
            self.took.push(took);
            return;
        }
        if let Some(loads) = crate::timing::parse_loads(line).filter(|(mode, _)| MODES.contains(&mode.as_str())) {
            self.loads.push(loads);
            return;
        }
        // `MODE  SCENARIO  CHECK  OUTCOME`, as udptrace-scenarios prints them.
        let mut words = line.split_whitespace();
        let (Some(mode), Some(scenario), Some(check)) = (words.next(), words.next(), words.next()) else {
            return;
        };
        if !MODES.contains(&mode) {
            return;
        }
        let outcome = words.collect::<Vec<_>>().join(" ");
        if outcome.starts_with("pass") || outcome.starts_with("FAIL") || outcome.starts_with("skip") {
            self.checks.push(VmCheck { mode: mode.into(), scenario: scenario.into(), check: check.into(), outcome });
        }
    }

    /// Why this run is not a success, if it is not: a failed check, a missing mode, a skip in a mode
    /// that must work (fentry and kprobe), or a VM that never finished.
    pub fn problems(&self, plan: &Plan) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.done {
            problems.push("the VM did not finish".to_owned());
        }
        for mode in plan.expected_modes() {
            if mode == "tracepoint" && self.on_host.is_some() {
                continue;
            }
            if !self.checks.iter().any(|c| c.mode == *mode) {
                problems.push(format!("no result for {mode}"));
            }
        }
        for c in &self.checks {
            let must_run = c.mode != "tracepoint";
            if c.outcome.starts_with("FAIL") || (must_run && c.outcome.starts_with("skip") && c.check == "all") {
                problems.push(format!("{} {} {}: {}", c.mode, c.scenario, c.check, c.outcome));
            }
        }
        problems
    }
}

/// What the VMs run.
#[derive(Default)]
pub struct Plan {
    /// The scenario suite in every mode.
    pub suite: bool,
    /// The benchmark: `smoke`, or `ROUNDS,SECONDS`.
    pub bench: String,
    /// Only these modes (all when empty), and only the scenarios whose names contain `only`.
    pub modes: Vec<String>,
    pub only: Option<String>,
    /// The release of this host's kernel (`6.18.44-...`) when its suite runs in the same `cargo xtask test`,
    /// in tracepoint mode with both buffers: the QEMU kernel of that series then runs no tracepoint VM, which
    /// would run the same programs on the same series again.
    pub host_tracepoint: Option<String>,
}

/// `6.18` from a release or a package's version (`6.18.44-fc`, `6.18.15+deb13-cloud-amd64`).
pub fn major_minor(release: &str) -> String {
    release.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).take(2).collect::<Vec<_>>().join(".")
}

/// What one VM runs: the suite in one mode, or the benchmark. A kernel's work is split so, so that the lanes
/// share it out evenly: one VM of a kernel is a third of its time or less.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Suite(String),
    Bench,
}

impl Part {
    /// `fentry`, `kprobe`, `tracepoint` or `bench`: the name in logs, timing and `kernels-passed.txt`.
    pub fn name(&self) -> &str {
        match self {
            Part::Suite(mode) => mode,
            Part::Bench => "bench",
        }
    }
}

impl Plan {
    /// The VMs of one kernel, in the order of [`MODES`], the benchmark last.
    fn parts(&self) -> Vec<Part> {
        let mut parts: Vec<Part> = if self.suite {
            self.expected_modes().into_iter().filter(|m| *m != "bench").map(|m| Part::Suite(m.to_owned())).collect()
        } else {
            Vec::new()
        };
        if !self.bench.is_empty() && self.bench != "none" {
            parts.push(Part::Bench);
        }
        parts
    }

    /// The kernel command line that tells the VM's init what to run for `part`; `probes`: the one VM of a
    /// kernel that runs `udptrace probes -v` first.
    fn append(&self, part: &Part, probes: bool) -> String {
        let mut append = "console=ttyS0 quiet loglevel=3 panic=-1".to_owned();
        if probes {
            append.push_str(" udptrace.probes=1");
        }
        match part {
            Part::Suite(mode) => append.push_str(&format!(" udptrace.modes={mode}")),
            Part::Bench => append.push_str(&format!(" udptrace.bench={}", self.bench)),
        }
        if let Some(only) = &self.only {
            append.push_str(&format!(" udptrace.only={only}"));
        }
        if self.narrowed() {
            append.push_str(" udptrace.narrowed=1");
        }
        append
    }

    /// `--mode` or `--only`: a look at some of the suite, not a pass of it.
    pub fn narrowed(&self) -> bool {
        !self.modes.is_empty() || self.only.is_some()
    }

    /// The modes whose results a full run must have.
    fn expected_modes(&self) -> Vec<&str> {
        let mut modes: Vec<&str> = match (self.suite, self.modes.is_empty()) {
            (false, _) => Vec::new(),
            (true, true) => MODES.to_vec(),
            (true, false) => self.modes.iter().map(String::as_str).collect(),
        };
        if self.bench == "smoke" {
            modes.push("bench");
        }
        modes
    }
}

fn boot(kernel: &Kernel, initramfs: &Path, log: &Path, append: &str) -> Result<VmRun> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", append])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")?;
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
    build_release: impl Fn() -> Result<(PathBuf, PathBuf, PathBuf)>,
    only_series: Option<&str>,
    plan: &Plan,
) -> Result<Vec<(String, VmRun)>> {
    prereq::ensure_packages(VM_PACKAGES)?;
    let (udptrace, scenarios, bench) = build_release()?;
    let ip = fs::canonicalize("/usr/sbin/ip").or_else(|_| fs::canonicalize("/sbin/ip")).context("iproute2's ip")?;
    let nft = fs::canonicalize("/usr/sbin/nft").context("nftables' nft")?;
    // iproute2's ss, for the scenario that destroys a socket (`ss -K`).
    let ss = fs::canonicalize("/usr/bin/ss").or_else(|_| fs::canonicalize("/bin/ss")).context("iproute2's ss")?;
    // bpftool, for what the kernel says of the programs in a narrowed run (`--mode`, `--only`).
    let bpftool = fs::canonicalize("/usr/sbin/bpftool").context("bpftool")?;
    // OpenBSD's nc, for `nc -vzu` beside `udptrace check` (BusyBox's has no -z).
    let nc = fs::canonicalize("/bin/nc.openbsd").context("netcat-openbsd's nc")?;
    let binaries = [
        (udptrace, "/usr/bin/udptrace"),
        (scenarios, "/usr/bin/udptrace-scenarios"),
        (bench, "/usr/bin/udptrace-bench"),
        (ip, "/usr/local/sbin/ip"),
        (nft, "/usr/local/sbin/nft"),
        (ss, "/usr/local/sbin/ss"),
        (bpftool, "/usr/local/sbin/bpftool"),
        (nc, "/usr/local/sbin/nc"),
    ];
    fs::create_dir_all(cache_dir().join("logs"))?;

    let apt = Apt::new()?;
    let mut prepared = Vec::new();
    for series in SERIES.iter().filter(|s| only_series.is_none_or(|o| o == **s)) {
        let kernel = fetch(&apt, &apt.resolve(series)?)?;
        let initramfs = build_initramfs(&kernel, &binaries)?;
        prepared.push((*series, kernel, initramfs));
    }
    if prepared.is_empty() {
        bail!("no kernel series {}: the matrix has {}", only_series.unwrap_or(""), SERIES.join(", "));
    }
    // One VM per part of each kernel (a mode of the suite, or the benchmark), longest first by what it took
    // when the suite last passed on that kernel (a part with no such record first of all): each lane takes the
    // longest left, and the lanes end close together.
    let passed = fs::read_to_string(passed_file()).unwrap_or_default();
    let mut jobs: Vec<(&str, &Kernel, &PathBuf, Part, bool)> = Vec::new();
    let host_series = plan.host_tracepoint.as_deref().map(major_minor);
    let on_host = |kernel: &Kernel| {
        host_series.as_deref().is_some_and(|host| {
            kernel.package.strip_prefix("linux-image-").is_some_and(|version| major_minor(version) == host)
        })
    };
    for (series, kernel, initramfs) in &prepared {
        let parts = plan.parts().into_iter().filter(|p| !(on_host(kernel) && *p == Part::Suite("tracepoint".into())));
        for (at, part) in parts.enumerate() {
            // The first VM of a kernel says what attaches there (`udptrace probes -v`), for the README's table.
            jobs.push((series, kernel, initramfs, part, at == 0));
        }
    }
    // A part not yet timed on its kernel is taken to be as long as the longest it took on another.
    let longest = |part: &str| SERIES.iter().filter_map(|series| last_seconds(&passed, series, part)).max();
    jobs.sort_by_key(|(series, _, _, part, _)| {
        std::cmp::Reverse(
            last_seconds(&passed, series, part.name()).or_else(|| longest(part.name())).unwrap_or(u64::MAX),
        )
    });
    let lanes = lanes().min(jobs.len());
    say(&format!(
        "booting {} under QEMU (TCG): {} VMs, {lanes} at a time, one per mode of the suite{}",
        prepared.iter().map(|(_, k, _)| k.package.as_str()).collect::<Vec<_>>().join(", "),
        jobs.len(),
        if plan.parts().contains(&Part::Bench) {
            format!(" and one for the benchmark ({})", plan.bench)
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
                    let result = boot(kernel, initramfs, &log, &plan.append(part, *probes)).map(|mut run| {
                        run.series = (*series).to_owned();
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
    runs.sort_by_key(|(_, run)| SERIES.iter().position(|s| *s == run.series));
    Ok(runs)
}

/// How many VMs run at once: one more than this machine has cores. TCG runs each guest on one host thread,
/// and a guest of the suite spends about half its time waiting (on the network, on a timer, on another
/// process): a third VM uses what the waits leave.
fn lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) + 1
}

/// Where the kernels the suite last passed on are written, one line per series:
/// `SERIES PACKAGE RELEASE DEBIAN-VERSION SECONDS` (how long its VM ran, which orders the lanes). The matrix resolves the newest kernel of each series, so a
/// kernel Debian publishes can fail a suite that did not change; a failure then says what last passed.
fn passed_file() -> PathBuf {
    workspace_root().join("xtask/kernels-passed.txt")
}

/// `6.1.158-1` from `/proc/version`: its last `Debian` word (the first names the compiler's).
fn debian_version(proc_version: &str) -> Option<&str> {
    let at = proc_version.rfind("Debian ")? + "Debian ".len();
    proc_version[at..].split_whitespace().next().map(|v| v.trim_end_matches(')'))
}

impl VmRun {
    /// `6.1.0-57-cloud-amd64 (Debian 6.1.158-1)`, as far as the VM said.
    pub fn kernel(&self, package: &str) -> String {
        let release = self.release.clone().unwrap_or_else(|| package.to_owned());
        match self.version.as_deref().and_then(debian_version) {
            Some(version) => format!("{release} (Debian {version})"),
            None => release,
        }
    }
}

/// The line `passed` holds for `series`, if any.
fn last_passed<'a>(passed: &'a str, series: &str) -> Option<&'a str> {
    passed.lines().find(|l| l.split_whitespace().next() == Some(series))
}

/// How many seconds the VM of `part` of `series` ran when the suite last passed on it, if recorded (the fifth
/// word: `fentry=600,kprobe=400,tracepoint=440,bench=180`).
fn last_seconds(passed: &str, series: &str, part: &str) -> Option<u64> {
    let parts = last_passed(passed, series)?.split_whitespace().nth(4)?;
    parts.split(',').find_map(|p| p.strip_prefix(part)?.strip_prefix('=')?.parse().ok())
}

/// What to say of a run that failed: which kernel it ran on and which one the suite last passed on.
pub fn kernel_note(package: &str, run: &VmRun) -> String {
    let passed = fs::read_to_string(passed_file()).unwrap_or_default();
    let last = match last_passed(&passed, &run.series).map(|l| l.split_whitespace().collect::<Vec<_>>()) {
        Some(words) if words.len() >= 3 => {
            let version = words.get(3).filter(|v| **v != "-").map(|v| format!(" (Debian {v})")).unwrap_or_default();
            if words[1] == package {
                format!("the suite last passed on this same kernel, {}{version}", words[2])
            } else {
                format!(
                    "the suite last passed on {}{version}: a newer kernel, not only this change, may be why",
                    words[2]
                )
            }
        }
        _ => "no earlier pass is recorded for this series".to_owned(),
    };
    format!("ran on {}; {last}", run.kernel(package))
}

/// Records that the suite passed on `run`'s kernel, and how long its VM ran (a file to commit with the change
/// that passed).
pub fn record_pass(package: &str, run: &VmRun) -> Result<()> {
    let path = passed_file();
    let passed = fs::read_to_string(&path).unwrap_or_default();
    let release = run.release.as_deref().unwrap_or(package);
    let version = run.version.as_deref().and_then(debian_version).unwrap_or("-");
    let parts: Vec<String> = run.parts.iter().map(|(part, wall)| format!("{part}={:.0}", wall.as_secs_f64())).collect();
    let line = format!("{} {package} {release} {version} {}", run.series, parts.join(","));
    let mut lines: Vec<String> = passed
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(run.series.as_str()))
        .map(str::to_owned)
        .collect();
    lines.push(line);
    lines.sort_by_key(|l| natural_key(l));
    fs::write(&path, lines.join("\n") + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The matrix: per kernel, one row per check and one column per mode; what did not pass is listed under it.
pub fn matrix(runs: &[(String, VmRun)]) -> String {
    let mut out = String::new();
    for (package, run) in runs {
        out.push_str(&format!("{} ({:.0} s)\n", run.kernel(package), run.wall.as_secs_f64()));
        let mut rows: Vec<(&str, &str)> = Vec::new();
        for c in &run.checks {
            if !rows.contains(&(&c.scenario, &c.check)) {
                rows.push((&c.scenario, &c.check));
            }
        }
        let columns: Vec<&str> = MODES.iter().copied().chain(["bench"]).collect();
        out.push_str(&format!("  {:<44}", "scenario / check"));
        for mode in &columns {
            out.push_str(&format!(" {mode:<10}"));
        }
        out.push('\n');
        let mut notes = Vec::new();
        for (scenario, check) in rows {
            out.push_str(&format!("  {:<44}", format!("{scenario} {check}")));
            for mode in &columns {
                let cell = run.checks.iter().find(|c| c.mode == *mode && c.scenario == scenario && c.check == check);
                let word = cell.map_or("-", |c| c.outcome.split([',', ':']).next().unwrap_or(""));
                if let Some(c) = cell.filter(|_| word != "pass") {
                    notes.push(format!("  {mode} {scenario} {check}: {}", c.outcome));
                }
                out.push_str(&format!(" {word:<10}"));
            }
            out.push('\n');
        }
        for note in notes {
            out.push_str(&format!("{note}\n"));
        }
        out.push('\n');
    }
    out
}

/// What `udptrace probes` said of `mode` in `run`: the functions attached in place of others
/// (`udp_err for __udp4_lib_err`), and the hooks that did not attach, with the kernel's reason.
fn probes_of(run: &VmRun, mode: &str) -> (Vec<String>, Vec<String>) {
    let (mut instead, mut missing) = (Vec::new(), Vec::new());
    let mut hook = "";
    for line in &run.probes {
        if !line.starts_with(' ') {
            if let Some((name, _)) = line.split_once(": ") {
                hook = name;
            }
            continue;
        }
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix(mode).filter(|r| r.starts_with(' ')).map(str::trim_start) else {
            continue;
        };
        if let Some(reason) = rest.strip_prefix("no: ") {
            missing.push(format!("{hook}: {reason}"));
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        for at in 1..words.len().saturating_sub(2) {
            if words[at] == "instead" && words[at + 1] == "of" {
                let name = |w: &str| w.split_once(':').map_or(w, |(_, f)| f).to_owned();
                let pair = format!("{} for {}", name(words[at - 1]), name(words[at + 2]));
                if !instead.contains(&pair) {
                    instead.push(pair);
                }
            }
        }
    }
    (instead, missing)
}

/// The README's table of what the last full matrix proved: one row per kernel, one column per mode.
pub fn proven_table(runs: &[(String, VmRun)]) -> String {
    let mut out = String::from(
        "| kernel | fentry (ring buffer) | kprobe (perf buffers) | tracepoint (ring buffer) |\n|---|---|---|---|\n",
    );
    for (package, run) in runs {
        out.push_str(&format!(
            "| Debian {} |",
            run.kernel(package).trim_end_matches(')').replacen(" (Debian ", ", ", 1)
        ));
        for mode in MODES {
            let checks: Vec<&VmCheck> = run.checks.iter().filter(|c| c.mode == *mode).collect();
            let count = |word: &str| checks.iter().filter(|c| c.outcome.starts_with(word)).count();
            let (passed, failed, skipped) = (count("pass"), count("FAIL"), count("skip"));
            let (instead, missing) = probes_of(run, mode);
            if let Some(release) = run.on_host.as_ref().filter(|_| *mode == "tracepoint") {
                out.push_str(&format!(
                    " on this host's {release} instead, ring and perf buffers (the host suite, same series) |"
                ));
                continue;
            }
            let mut cell = if passed == 0 && failed == 0 {
                format!("cannot run: {}", missing.first().map_or("nothing attaches", String::as_str))
            } else if failed > 0 {
                format!("**{failed} failed**, {passed} passed")
            } else {
                format!("{passed} passed")
            };
            if skipped > 0 && passed + failed > 0 {
                cell.push_str(&format!(", {skipped} skipped"));
            }
            if !instead.is_empty() && passed + failed > 0 {
                cell.push_str(&format!("; {}", instead.join(", ")));
            }
            if passed + failed > 0 {
                for hook in &missing {
                    cell.push_str(&format!("; no {hook}"));
                }
            }
            out.push_str(&format!(" {} |", cell.replace('|', "/")));
        }
        out.push('\n');
    }
    out
}

/// The README's markers around the table [`proven_table`] writes.
const TABLE_BEGIN: &str = "<!-- kernel matrix: written by cargo xtask vm-test -->";
const TABLE_END: &str = "<!-- end of kernel matrix -->";

/// Writes `table` into the README between its markers.
pub fn write_proven_table(table: &str) -> Result<()> {
    let path = workspace_root().join("README.md");
    let readme = fs::read_to_string(&path)?;
    let (Some(begin), Some(end)) = (readme.find(TABLE_BEGIN), readme.find(TABLE_END)) else {
        bail!("README.md has no kernel matrix markers");
    };
    let updated = format!("{}{TABLE_BEGIN}\n{table}{}", &readme[..begin], &readme[end..]);
    fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_cloud_kernel_of_each_series() {
        let names = "linux-image-6.1.0-9-cloud-amd64 - Linux 6.1\n\
                     linux-image-6.1.0-56-cloud-amd64 - Linux 6.1\n\
                     linux-image-6.1.0-56-cloud-amd64-unsigned - Linux 6.1\n\
                     linux-image-6.1.0-56-cloud-amd64-dbg - debug\n\
                     linux-image-6.12.9+deb12-cloud-amd64 - Linux 6.12\n\
                     linux-image-6.12.117+deb12-cloud-amd64 - Linux 6.12\n\
                     linux-image-6.12.111+deb12-cloud-amd64 - Linux 6.12\n";
        assert_eq!(newest_package(names, "6.1").as_deref(), Some("linux-image-6.1.0-56-cloud-amd64"));
        assert_eq!(newest_package(names, "6.12").as_deref(), Some("linux-image-6.12.117+deb12-cloud-amd64"));
        assert_eq!(newest_package(names, "6.6"), None);
        let backports = "linux-image-5.10.0-46-cloud-amd64 - Linux 5.10\n\
                         linux-image-7.0.13+deb13-cloud-amd64 - Linux 7.0\n\
                         linux-image-7.3.4+deb13-cloud-amd64 - Linux 7.3\n\
                         linux-image-7.2.12+deb13-cloud-amd64 - Linux 7.2\n\
                         linux-image-6.18.15+deb13-cloud-amd64 - Linux 6.18\n";
        assert_eq!(newest_package(backports, "7").as_deref(), Some("linux-image-7.3.4+deb13-cloud-amd64"));
        assert_eq!(newest_package(backports, "5.10").as_deref(), Some("linux-image-5.10.0-46-cloud-amd64"));
        assert_eq!(newest_package(backports, "6.1"), None);
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
    fn reads_the_console() {
        let mut run = VmRun::default();
        for line in [
            "\x1bc\x1b[?7l\x1b[2J@@udptrace-vm kernel 6.12.117+deb12-cloud-amd64",
            "[    1.234] random kernel message",
            "fentry      closed_port_ipv4       socket_error     pass",
            "fentry      closed_port_ipv6       icmp_sent        FAIL: no icmp_sent within 30s",
            "@@udptrace-vm end fentry rc=1",
            "kprobe      udptrace               all_hooks_attach pass",
            "tracepoint  soft_error             icmp_sent        skip, because no hook\r",
            "@@udptrace-vm bench | udptrace fentry | 1234 | 0.981 |",
            "@@udptrace-vm bench bench  smoke  error_path_accounted     pass",
            "@@udptrace-vm done",
        ] {
            run.add_line(line);
        }
        assert_eq!(run.release.as_deref(), Some("6.12.117+deb12-cloud-amd64"));
        assert_eq!(run.checks.len(), 5);
        assert_eq!(run.checks[3].outcome, "skip, because no hook");
        assert_eq!((run.checks[4].mode.as_str(), run.checks[4].check.as_str()), ("bench", "error_path_accounted"));
        assert_eq!(run.bench[0], "| udptrace fentry | 1234 | 0.981 |");
        assert!(run.done);
        let problems = run.problems(&Plan { suite: true, bench: "smoke".into(), ..Plan::default() });
        assert_eq!(problems, vec!["fentry closed_port_ipv6 icmp_sent: FAIL: no icmp_sent within 30s".to_owned()]);
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
            "| Debian 7.3.4+deb13-cloud-amd64 | 1 passed, 1 skipped; udp_err for __udp4_lib_err | **1 failed**, 0 passed | \
             cannot run: socket_error: sock:inet_sk_error_report: tracepoint is absent (needs kernel 5.14) |"
        );
    }

    #[test]
    fn the_hosts_own_series_is_proven_on_the_host() {
        assert_eq!(major_minor("6.18.44-fc-v1045"), "6.18");
        assert_eq!(major_minor("6.18.15+deb13-cloud-amd64"), "6.18");
        assert_eq!(major_minor("5.10.0-46-cloud-amd64"), "5.10");
        let mut run = VmRun { on_host: Some("6.18.44-fc".into()), done: true, ..VmRun::default() };
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

    #[test]
    fn a_vm_that_never_finished_or_skipped_a_required_mode_fails() {
        let mut run = VmRun::default();
        run.add_line("fentry      closed_port_ipv4       all              skip, because nothing attaches");
        let problems = run.problems(&Plan { suite: true, bench: "smoke".into(), ..Plan::default() });
        assert!(problems.iter().any(|p| p.contains("no result for bench")));
        assert!(problems.iter().any(|p| p.contains("did not finish")));
        assert!(problems.iter().any(|p| p.contains("no result for kprobe")));
        assert!(problems.iter().any(|p| p.contains("fentry closed_port_ipv4 all")));
    }
}
