//! The programs a VM runs besides udptrace's own, with the shared libraries they load, taken from a root:
//! this machine's `/` for its own architecture, or Debian's packages of another architecture (bookworm,
//! the suite this machine's tools come from) downloaded with their dependencies and unpacked into
//! `.vm-cache/userland-arm64/root/`. Libraries are found from each ELF's `DT_NEEDED` and `PT_INTERP`, read
//! here, since `ldd` runs the loader and cannot for a foreign binary.

use std::{
    fs,
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    apt,
    arch::Arch,
    elf::{interpreter, needed},
};

/// What the scenarios run, where Debian puts it (the first path that exists), where the image puts it, and
/// the package it comes from. BusyBox is the image's shell and its small tools.
const TOOLS: &[(&[&str], &str, &str)] = &[
    (&["bin/busybox"], "/bin/busybox", "busybox-static"),
    (&["usr/sbin/ip", "sbin/ip", "bin/ip"], "/usr/local/sbin/ip", "iproute2"),
    // iproute2's ss, for the scenario that destroys a socket (`ss -K`).
    (&["usr/bin/ss", "bin/ss"], "/usr/local/sbin/ss", "iproute2"),
    (&["usr/sbin/nft"], "/usr/local/sbin/nft", "nftables"),
    // What the kernel says of the programs in a narrowed run (`--mode`, `--only`).
    (&["usr/sbin/bpftool"], "/usr/local/sbin/bpftool", "bpftool"),
    // OpenBSD's nc, for `nc -vzu` beside `udptrace check` (BusyBox's has no -z).
    (&["bin/nc.openbsd", "usr/bin/nc.openbsd"], "/usr/local/sbin/nc", "netcat-openbsd"),
    // DNS clients whose refused queries the suite names: dig, and glibc's resolver through getent.
    (&["usr/bin/dig"], "/usr/local/sbin/dig", "bind9-dnsutils"),
    (&["usr/bin/getent"], "/usr/local/sbin/getent", "libc-bin"),
    // A DNS server and forwarder.
    (&["usr/sbin/dnsmasq"], "/usr/local/sbin/dnsmasq", "dnsmasq-base"),
    // The witness of the entries the NAT scenarios' events name (`conntrack -L`).
    (&["usr/sbin/conntrack"], "/usr/local/sbin/conntrack", "conntrack"),
];

/// The Debian packages this machine needs for its own VMs' userland.
pub fn host_packages() -> Vec<&'static str> {
    let mut packages: Vec<&str> = TOOLS.iter().map(|(_, _, package)| *package).collect();
    packages.dedup();
    packages
}

/// A root holding the tools of one architecture.
pub struct Userland {
    root: PathBuf,
    arch: Arch,
}

impl Userland {
    /// This machine's own tools for its architecture; Debian's packages of the other, fetched once.
    pub fn of(arch: Arch) -> Result<Userland> {
        if arch.is_host() {
            return Ok(Userland { root: PathBuf::from("/"), arch });
        }
        let dir = apt::cache_dir().join(format!("userland-{}", arch.debian()));
        let root = dir.join("root");
        let packages = host_packages().join(" ");
        let marker = dir.join("packages");
        if fs::read_to_string(&marker).is_ok_and(|p| p == packages) && root.exists() {
            return Ok(Userland { root, arch });
        }
        crate::workspace::say(&format!(
            "downloading Debian's {} userland for the VMs into {}",
            arch.debian(),
            dir.display()
        ));
        let _ = fs::remove_dir_all(&dir);
        let debs = dir.join("debs");
        apt::Apt::new(arch)?.download_with_dependencies(&host_packages(), &debs)?;
        apt::unpack_all(&debs, &root)?;
        fs::remove_dir_all(&debs)?;
        fs::write(&marker, packages)?;
        Ok(Userland { root, arch })
    }

    /// Each tool and every shared library it loads, as (file here, path in the image).
    pub fn files(&self) -> Result<Vec<(PathBuf, String)>> {
        let mut files: Vec<(PathBuf, String)> = Vec::new();
        for (candidates, to, package) in TOOLS {
            let from = candidates
                .iter()
                .find_map(|c| self.resolve(c).ok().filter(|p| p.is_file()))
                .with_context(|| format!("{package}'s {} is not in {}", candidates[0], self.root.display()))?;
            files.push((from.clone(), (*to).to_owned()));
            for (library, name) in self.libraries(&from)? {
                if !files.iter().any(|(_, at)| *at == name) {
                    files.push((library, name));
                }
            }
        }
        Ok(files)
    }

    /// Where `path` (relative to the root) leads, its symbolic links followed inside the root.
    fn resolve(&self, path: &str) -> Result<PathBuf> {
        let mut left: Vec<String> = Vec::new();
        let mut pending: Vec<String> = path.split('/').filter(|c| !c.is_empty()).rev().map(str::to_owned).collect();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    left.pop();
                    continue;
                }
                _ => {}
            }
            let at = self.root.join(left.join("/")).join(&component);
            match fs::read_link(&at) {
                Ok(target) => {
                    hops += 1;
                    if hops > 40 {
                        bail!("{path}: too many symbolic links");
                    }
                    if target.is_absolute() {
                        left.clear();
                    }
                    let parts: Vec<String> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                            Component::ParentDir => Some("..".to_owned()),
                            _ => None,
                        })
                        .collect();
                    pending.extend(parts.into_iter().rev());
                }
                Err(_) => left.push(component),
            }
        }
        let resolved = self.root.join(left.join("/"));
        if !resolved.exists() {
            bail!("{path} is not in {}", self.root.display());
        }
        Ok(resolved)
    }

    /// The libraries `binary` loads, its loader first, each found where Debian's loader looks for it.
    fn libraries(&self, binary: &Path) -> Result<Vec<(PathBuf, String)>> {
        let triplet = format!("{}-linux-gnu", self.arch.name());
        let dirs = [format!("lib/{triplet}"), format!("usr/lib/{triplet}"), "lib".to_owned(), "usr/lib".to_owned()];
        let mut found: Vec<(PathBuf, String)> = Vec::new();
        let mut queue = vec![binary.to_owned()];
        while let Some(file) = queue.pop() {
            let (interpreter, needed) = (interpreter(&file)?, needed(&file)?);
            if let Some(interpreter) = interpreter.filter(|i| !found.iter().any(|(_, at)| at == i)) {
                found.push((self.resolve(&interpreter)?, interpreter));
            }
            for name in needed {
                if found.iter().any(|(_, at)| Path::new(at).file_name().is_some_and(|f| *f == *name)) {
                    continue;
                }
                let (dir, path) = dirs
                    .iter()
                    .find_map(|dir| self.resolve(&format!("{dir}/{name}")).ok().map(|p| (dir, p)))
                    .with_context(|| format!("{}: {name} is in none of {}", file.display(), dirs.join(", ")))?;
                found.push((path.clone(), format!("/{dir}/{name}")));
                queue.push(path);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_and_its_libraries_are_found_through_links_inside_the_root() {
        let dir = std::env::temp_dir().join(format!("udptrace-userland-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("usr/lib/x86_64-linux-gnu")).unwrap();
        fs::create_dir_all(dir.join("usr/bin")).unwrap();
        // An absolute link resolves inside the root, not on this machine.
        std::os::unix::fs::symlink("/usr/bin", dir.join("bin")).unwrap();
        std::os::unix::fs::symlink("../lib/x86_64-linux-gnu/real", dir.join("usr/bin/tool")).unwrap();
        fs::write(dir.join("usr/lib/x86_64-linux-gnu/real"), b"x").unwrap();
        let userland = Userland { root: dir.clone(), arch: Arch::X86_64 };
        assert_eq!(userland.resolve("bin/tool").unwrap(), dir.join("usr/lib/x86_64-linux-gnu/real"));
        assert!(userland.resolve("bin/absent").is_err());
        // This test's own binary: its loader and libc, as the loader would find them.
        fs::remove_dir_all(&dir).unwrap();
    }
}
