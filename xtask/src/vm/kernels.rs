//! Which kernels: the newest cloud kernel of each series over apt lists kept in `.vm-cache/apt/` (the
//! machine's own apt setup is not touched), downloaded and unpacked once.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{prereq, workspace::say};

use super::*;

/// Natural order on package names: numbers compare as numbers (`6.1.0-9` < `6.1.0-56`).
pub(super) fn natural_key(name: &str) -> Vec<(String, u64)> {
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
pub(super) const APT_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
";

/// Lists older than this are fetched again before a kernel is resolved.
pub(super) const APT_LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// apt over lists of udptrace's own, in `.vm-cache/apt/`: the machine's sources, lists and package cache
/// are left as they were.
pub(super) struct Apt {
    pub(super) dir: PathBuf,
}

impl Apt {
    pub(super) fn new() -> Result<Apt> {
        let dir = cache_dir().join("apt");
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("sources.list"), APT_SOURCES)?;
        Ok(Apt { dir })
    }

    pub(super) fn command(&self, program: &str) -> Command {
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

    pub(super) fn update(&self) -> Result<()> {
        say("fetching the apt lists of Debian's kernel suites into .vm-cache/apt/");
        prereq::run_visible(self.command("apt-get").args(["update", "-q"]))?;
        fs::write(self.dir.join("updated"), "")?;
        Ok(())
    }

    pub(super) fn fresh(&self) -> bool {
        fs::metadata(self.dir.join("updated"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < APT_LISTS_MAX_AGE))
    }

    pub(super) fn search(&self, series: &str) -> Result<String> {
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
    pub(super) fn resolve(&self, series: &str) -> Result<String> {
        if !self.fresh() {
            self.update()?;
        }
        newest_package(&self.search(series)?, series)
            .with_context(|| format!("no linux-image-{series}*-cloud-amd64 package in Debian's kernel suites"))
    }

    /// Downloads `package` into `dir`; once more after an update, since the lists may name a version the
    /// mirror no longer has.
    pub(super) fn download(&self, package: &str, dir: &Path) -> Result<()> {
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
pub(super) fn fetch(apt: &Apt, package: &str) -> Result<Kernel> {
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
