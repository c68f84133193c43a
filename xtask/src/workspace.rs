//! Where the workspace is and how its commands are run: the workspace's root, cargo with bpf-linker on its
//! PATH, and the lines xtask says on the way.

use std::{path::PathBuf, process::Command};

/// A line of progress on stderr, marked as xtask's.
pub fn say(message: &str) {
    eprintln!("xtask: {message}");
}

/// Whether xtask runs as root, which installing packages and the scenario suite need.
pub fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// The workspace's directory, where every command runs.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_owned()
}

/// The cargo that runs xtask, in the workspace, with bpf-linker on its PATH.
pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.current_dir(workspace_root()).env("PATH", path_with_cargo_bin());
    command
}

/// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker.
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// PATH with `$CARGO_HOME/bin` first, so that aya-build's nightly cargo finds bpf-linker.
pub fn path_with_cargo_bin() -> String {
    let current = std::env::var("PATH").unwrap_or_default();
    format!("{}:{current}", cargo_bin_dir().display())
}
