//! Where conntrack keeps a connection, for the programs that read a packet's entry: `struct nf_conn` lies in
//! the `nf_conntrack` module on most distribution kernels (Debian's among them), whose BTF is split on top of
//! vmlinux's (`/sys/kernel/btf/nf_conntrack`), and built in on others. The module may be loaded after
//! udptrace starts (kube-proxy, Docker or a firewall starting later): until then the programs read no entry,
//! and [`Watch`] hands them the offsets once it appears.

use std::path::Path;

use anyhow::{Context as _, Result};
use udptrace_common::ConntrackOffsets;

use super::{btf::KernelBtf, maps::Array};

/// The module's BTF, there while the module is loaded (kernel/bpf/btf.c, `btf_module_notify`, 5.11+; 5.10
/// has no module BTF, so a modular conntrack is not readable there).
pub const MODULE_BTF: &str = "/sys/kernel/btf/nf_conntrack";

/// The offsets from `vmlinux` (consumed: a module's BTF is read on top of it), where conntrack is built in
/// or its module is loaded; `None` while neither is.
pub fn offsets(vmlinux: KernelBtf) -> Result<Option<ConntrackOffsets>> {
    if vmlinux.has_struct("nf_conn") {
        return vmlinux.conntrack_offsets().map(Some);
    }
    let module = match std::fs::read(MODULE_BTF) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {MODULE_BTF}")),
    };
    let btf = vmlinux.with_split(&module).with_context(|| format!("reading {MODULE_BTF}"))?;
    btf.conntrack_offsets().map(Some)
}

/// Hands the programs conntrack's offsets: at start, or once its module's BTF appears.
pub struct Watch {
    map: Array<ConntrackOffsets>,
    /// Written, or given up on (said once on stderr).
    done: bool,
    verbose: bool,
}

impl Watch {
    /// With the offsets found at start, written now; without, watched for.
    pub fn start(map: Array<ConntrackOffsets>, found: Result<Option<ConntrackOffsets>>, verbose: bool) -> Self {
        let mut watch = Self { map, done: false, verbose };
        watch.settle(found);
        watch
    }

    /// Called every second: a look at whether the module is there, until it is.
    pub fn poll(&mut self) {
        if self.done || !Path::new(MODULE_BTF).exists() {
            return;
        }
        let found = KernelBtf::load().and_then(offsets);
        self.settle(found);
    }

    fn settle(&mut self, found: Result<Option<ConntrackOffsets>>) {
        let written = found.and_then(|found| {
            found.map(|o| self.map.set(0, o).map(|()| o).context("writing the CONNTRACK map")).transpose()
        });
        match written {
            Ok(None) => {}
            Ok(Some(o)) => {
                self.done = true;
                if self.verbose {
                    eprintln!(
                        "udptrace: conntrack entries are read (nf_conn.status at {}, tuples at {} and {}, mark at {})",
                        o.status,
                        o.original,
                        o.reply,
                        if o.mark == udptrace_common::CT_UNKNOWN { "none".to_owned() } else { o.mark.to_string() }
                    );
                }
            }
            Err(e) => {
                self.done = true;
                eprintln!(
                    "udptrace: warning: conntrack entries are not read from packets: {}",
                    crate::errors::one_line(&e)
                );
            }
        }
    }
}
