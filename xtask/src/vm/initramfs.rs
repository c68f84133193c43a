//! What a VM boots: an initramfs around the release binaries, their shared libraries, the tools the
//! scenarios run and the kernel modules they need, with `init.sh` as its `/init`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::prereq;

use super::*;

pub(super) fn module_file(root: &Path, name: &str) -> Result<PathBuf> {
    find_file(root, |file| file == format!("{name}.ko") || file.starts_with(&format!("{name}.ko.")))
        .with_context(|| format!("module {name} is not in the kernel package (built in?)"))
}

/// Appends `name` to `order` after the modules it depends on (`modinfo -F depends`).
pub(super) fn add_with_dependencies(root: &Path, name: &str, order: &mut Vec<String>) -> Result<()> {
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

pub(super) fn find_file(dir: &Path, matches: impl Fn(&str) -> bool + Copy) -> Result<PathBuf> {
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
pub(super) fn decompress_module(from: &Path, to: &Path) -> Result<()> {
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

pub(super) fn copy_into(root: &Path, from: &Path, to: &str) -> Result<()> {
    let target = root.join(to.trim_start_matches('/'));
    fs::create_dir_all(target.parent().context("no parent")?)?;
    // Follow symlinks: the initramfs gets the real file under the name asked for.
    fs::copy(from, &target).with_context(|| format!("copying {} into the initramfs", from.display()))?;
    Ok(())
}

/// The VM's `/init`: what it runs is told on the kernel command line (`Job::append`).
pub(super) const INIT: &str = include_str!("init.sh");

/// Builds the initramfs for `kernel` (its own veth module) around `files` (file here, path in the image):
/// the release binaries of the kernel's architecture and the userland's tools with their libraries.
pub(super) fn build_initramfs(kernel: &Kernel, files: &[(PathBuf, String)]) -> Result<PathBuf> {
    let root = cache_dir().join(format!("initramfs-{}", kernel.package));
    let _ = fs::remove_dir_all(&root);
    for dir in ["bin", "dev", "proc", "sys", "run", "tmp", "lib/modules"] {
        fs::create_dir_all(root.join(dir))?;
    }
    let init = root.join("init");
    fs::write(&init, INIT)?;
    let mut order = Vec::new();
    for module in &kernel.modules {
        let name = module.file_stem().and_then(|n| n.to_str()).context("module name")?;
        copy_into(&root, module, &format!("/lib/modules/{name}.ko"))?;
        order.push(name.to_owned());
    }
    fs::write(root.join("lib/modules/order"), order.join("\n"))?;
    for (file, target) in files {
        copy_into(&root, file, target)?;
    }
    prereq::run_visible(Command::new("chmod").arg("755").arg(&init).arg(root.join("bin/busybox")))?;
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
