//! The two architectures udptrace ships for, and what differs between them for the build and the VMs: the
//! Rust target, Debian's name, the C cross compiler of the static build, QEMU's machine and the console.

use std::{fmt, path::Path, process::Command};

use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    #[default]
    X86_64,
    Aarch64,
}

impl Arch {
    /// Every architecture, this machine's first: its binary writes the package's pages and completions.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// `x86_64` or `aarch64`: the kernel's and Rust's name, and the folder in `target/dist/`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The Rust target every shipped binary of this architecture is built for (static, musl).
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's name: `amd64` or `arm64` (packages, kernels, apt).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// `x86_64`, `amd64`, `aarch64` or `arm64`.
    pub fn parse(name: &str) -> Result<Arch> {
        match name {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            _ => bail!("no architecture {name}: udptrace is built for x86_64 (amd64) and aarch64 (arm64)"),
        }
    }

    /// The emulator and its machine. arm64: QEMU's `virt` board with every CPU feature QEMU has, but with
    /// QEMU's own cheap pointer-authentication algorithm (`pauth-impdef`) in place of the architected one
    /// (QARMA), which TCG computes at every function's entry and return of a kernel built with
    /// `-mbranch-protection`, as Debian's are.
    pub fn qemu(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Arch::X86_64 => ("qemu-system-x86_64", &["-cpu", "max"]),
            Arch::Aarch64 => ("qemu-system-aarch64", &["-machine", "virt", "-cpu", "max,pauth-impdef=on"]),
        }
    }

    /// Debian's package with that emulator.
    pub fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Aarch64 => "qemu-system-arm",
        }
    }

    /// The kernel's console: the PC's first serial port, or the `virt` board's PL011.
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    /// Whether this machine runs this architecture's binaries itself.
    pub fn is_host(self) -> bool {
        std::env::consts::ARCH == self.name()
    }

    /// What cargo needs to build this architecture's static binaries from this machine. The C of the
    /// allocator (mimalloc, through cc-rs) is compiled by Debian's clang against musl's headers from
    /// Debian's `musl-dev` of that architecture (`sysroot`); Rust links with its own `rust-lld` and its own
    /// copy of musl (Rust's musl targets are self-contained). Nothing for this machine's own architecture,
    /// which `musl-gcc` builds.
    pub fn cross_env(self, command: &mut Command, sysroot: &Path) {
        if self.is_host() {
            return;
        }
        let target = self.target().replace('-', "_");
        let include = sysroot.join(format!("usr/include/{}-linux-musl", self.name()));
        command
            .env(format!("CC_{target}"), format!("clang-{}", crate::prereq::LLVM_MAJOR))
            .env(format!("AR_{target}"), format!("llvm-ar-{}", crate::prereq::LLVM_MAJOR))
            .env(format!("CFLAGS_{target}"), format!("-nostdlibinc -isystem {}", include.display()))
            .env(format!("CARGO_TARGET_{}_LINKER", target.to_uppercase()), "rust-lld");
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_architecture_has_one_name_per_world() {
        for arch in Arch::ALL {
            assert_eq!(Arch::parse(arch.name()).unwrap(), arch);
            assert_eq!(Arch::parse(arch.debian()).unwrap(), arch);
            assert!(arch.target().starts_with(arch.name()) && arch.target().ends_with("-linux-musl"));
        }
        assert!(Arch::parse("riscv64").unwrap_err().to_string().contains("x86_64 (amd64) and aarch64 (arm64)"));
    }
}
