//! apt over lists of udptrace's own, one set per architecture in `.vm-cache/apt/` (amd64) and
//! `.vm-cache/apt-arm64/`: the machine's sources, lists, package cache and architectures are left as they
//! were. The kernels the matrix boots come through it, and for arm64 also the userland its VMs run and the
//! musl headers of the cross build.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{arch::Arch, prereq, workspace::say};

/// Where downloads are kept between runs.
pub fn cache_dir() -> PathBuf {
    crate::workspace::workspace_root().join(".vm-cache")
}

/// The Debian suites the cloud kernels come from: bullseye (5.10), bookworm and its updates (6.1, 6.12, and
/// the arm64 VMs' userland), trixie-backports (6.16 to the newest 7.x).
const APT_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
";

/// The suite whose userland an arm64 VM runs: the one this machine's own tools come from.
pub const USERLAND_SUITE: &str = "bookworm";

/// Lists older than this are fetched again before a kernel is resolved.
const APT_LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct Apt {
    dir: PathBuf,
    arch: Arch,
}

impl Apt {
    pub fn new(arch: Arch) -> Result<Apt> {
        let dir = match arch {
            Arch::X86_64 => cache_dir().join("apt"),
            _ => cache_dir().join(format!("apt-{}", arch.debian())),
        };
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("sources.list"), APT_SOURCES)?;
        Ok(Apt { dir, arch })
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
            format!("APT::Architecture={}", self.arch.debian()),
            format!("APT::Architectures::={}", self.arch.debian()),
        ] {
            command.args(["-o", &option]);
        }
        command
    }

    fn update(&self) -> Result<()> {
        say(&format!("fetching Debian's {} apt lists into {}", self.arch.debian(), self.dir.display()));
        prereq::run_visible(self.command("apt-get").args(["update", "-q"]))?;
        fs::write(self.dir.join("updated"), "")?;
        Ok(())
    }

    fn fresh(&self) -> bool {
        fs::metadata(self.dir.join("updated"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < APT_LISTS_MAX_AGE))
    }

    fn ensure_fresh(&self) -> Result<()> {
        if self.fresh() { Ok(()) } else { self.update() }
    }

    /// The cloud kernel packages of `series`, as `apt-cache search` names them.
    pub fn search(&self, series: &str) -> Result<String> {
        self.ensure_fresh()?;
        let output = self
            .command("apt-cache")
            .args([
                "search",
                "--names-only",
                &format!("^linux-image-{}\\.[0-9].*-cloud-{}$", series.replace('.', "\\."), self.arch.debian()),
            ])
            .output()
            .context("running apt-cache")?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Downloads `packages` into `dir`; once more after an update, since the lists may name a version the
    /// mirror no longer has.
    pub fn download(&self, packages: &[&str], dir: &Path) -> Result<()> {
        self.ensure_fresh()?;
        let mut command = self.command("apt-get");
        command.args(["download", "-q"]).args(packages).current_dir(dir);
        if command.status().is_ok_and(|s| s.success()) {
            return Ok(());
        }
        self.update()?;
        prereq::run_visible(self.command("apt-get").args(["download", "-q"]).args(packages).current_dir(dir))
    }

    /// Downloads `packages` of [`USERLAND_SUITE`] and everything they depend on into `dir`, as `.deb`s, as
    /// an install on an empty system would.
    pub fn download_with_dependencies(&self, packages: &[&str], dir: &Path) -> Result<()> {
        self.ensure_fresh()?;
        fs::create_dir_all(dir.join("partial"))?;
        let archives = format!("Dir::Cache::Archives={}", dir.display());
        let mut command = self.command("apt-get");
        command
            .args(["-o", &archives, "install", "-d", "-y", "-q", "--no-install-recommends", "-t", USERLAND_SUITE])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive");
        prereq::run_visible(&mut command)
    }
}

/// Unpacks every `.deb` in `dir` into `root`.
pub fn unpack_all(dir: &Path, root: &Path) -> Result<()> {
    let mut debs: Vec<PathBuf> =
        fs::read_dir(dir)?.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "deb")).collect();
    if debs.is_empty() {
        bail!("no .deb in {}", dir.display());
    }
    debs.sort();
    for deb in debs {
        prereq::run_visible(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(root))?;
    }
    Ok(())
}
