//! Builds the eBPF programs (udptrace-ebpf, with nightly and bpf-linker) and leaves the object in OUT_DIR,
//! where `src/loader.rs` embeds it.
//!
//! `UDPTRACE_EBPF_TOOLCHAIN` names another toolchain than `nightly` for the eBPF side (a dated nightly whose
//! LLVM matches bpf-linker's, as the container build pins one).
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=UDPTRACE_EBPF_TOOLCHAIN");
    let custom = std::env::var("UDPTRACE_EBPF_TOOLCHAIN").ok().filter(|t| !t.is_empty());
    let toolchain = match &custom {
        Some(name) => Toolchain::Custom(name),
        None => Toolchain::Nightly,
    };
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../udptrace-ebpf");
    aya_build::build_ebpf([Package { name: "udptrace-ebpf", root_dir, ..Default::default() }], toolchain)
}
