//! A directory of a run's own under the temporary directory, removed when dropped, a failed scenario's too.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `udptrace-WHAT-PID`, emptied first, with `mode` (`0o1777`: one the unprivileged tracer may create files
    /// in, as it may in `/tmp`).
    pub fn new(what: &str, mode: u32) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("udptrace-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
