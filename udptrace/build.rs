//! Builds the eBPF programs (udptrace-ebpf, with nightly and bpf-linker) and leaves the object in OUT_DIR,
//! where `src/loader.rs` embeds it.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../udptrace-ebpf");
    aya_build::build_ebpf([Package { name: "udptrace-ebpf", root_dir, ..Default::default() }], Toolchain::default())
}
