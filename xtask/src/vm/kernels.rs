//! Which kernels: the newest cloud kernel of each series and architecture over apt lists of udptrace's own
//! (`crate::apt`: the machine's own apt setup is not touched), downloaded and unpacked once.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result};

use crate::{apt::Apt, arch::Arch, prereq, workspace::say};

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

/// The newest signed cloud kernel package of `series` for `arch` in the apt lists, from names like
/// `linux-image-6.1.0-56-cloud-amd64` and `linux-image-6.12.117+deb12-cloud-arm64`.
pub fn newest_package(apt_names: &str, series: &str, arch: Arch) -> Option<String> {
    let prefix = format!("linux-image-{series}.");
    let suffix = format!("-cloud-{}", arch.debian());
    apt_names
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            name.strip_prefix(&prefix).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                && name.ends_with(&suffix)
                && !name.contains("unsigned")
                && !name.contains("dbg")
        })
        .max_by_key(|name| natural_key(name))
        .map(str::to_owned)
}

/// The kernel series the matrix covers: the LTS kernels fleets run, and the newest 7.x (`7`), resolved at
/// run time so that the matrix follows Debian's newest kernel without a code change.
pub const SERIES: &[&str] = &["5.10", "6.1", "6.12", "6.18", "7"];

/// The newest cloud kernel package of `series` for `arch`.
pub(super) fn resolve(apt: &Apt, series: &str, arch: Arch) -> Result<String> {
    newest_package(&apt.search(series)?, series, arch)
        .with_context(|| format!("no linux-image-{series}*-cloud-{} package in Debian's kernel suites", arch.debian()))
}

/// Downloads and unpacks `package` once; later runs reuse `.vm-cache/<package>/`.
pub(super) fn fetch(apt: &Apt, package: &str, arch: Arch) -> Result<Kernel> {
    let dir = cache_dir().join(package);
    let order = dir.join("modules.order");
    let vmlinuz = dir.join("vmlinuz");
    // A cache made before a module joined MODULES is made again.
    if let (true, Ok(names)) = (vmlinuz.exists(), fs::read_to_string(&order))
        && MODULES.iter().all(|wanted| names.lines().any(|name| name == *wanted))
    {
        let modules = names.lines().map(|name| dir.join(format!("{name}.ko"))).collect();
        return Ok(Kernel { package: package.to_owned(), arch, vmlinuz, modules });
    }
    say(&format!("downloading {package} (cached in .vm-cache/ for later runs)"));
    let work = cache_dir().join(format!("download-{package}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let tree = work.join("tree");
    let unpack = |package: &str| -> Result<()> {
        apt.download(&[package], &work)?;
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
    Ok(Kernel { package: package.to_owned(), arch, vmlinuz, modules })
}
