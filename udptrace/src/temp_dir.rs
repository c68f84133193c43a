//! For tests: a directory of a test's own under the temporary directory, removed when dropped, a failed
//! test's too.

use std::path::{Path, PathBuf};

pub struct TempDir(PathBuf);

impl TempDir {
    /// `udptrace-NAME-PID`, emptied first: `name` tells the tests of one run apart.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("udptrace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory under the temporary directory");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
