//! Where each container runtime keeps a container's bundle (its OCI `config.json`), and what a container id
//! is: the one thing about the runtimes both the tracer (which parses a bundle, `pods`) and the privileged
//! helper (which opens it, `privileged`) know.

use std::path::PathBuf;

/// The runtime whose bundle a container has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Runtime {
    Containerd,
    CriO,
}

impl Runtime {
    /// Where `id`'s bundle is, for each runtime in turn. `id` must be a container id (64 hex digits):
    /// nothing else may reach a path.
    pub fn bundles(id: &str) -> Option<[(Runtime, PathBuf); 2]> {
        is_container_id(id).then(|| {
            [
                (
                    Runtime::Containerd,
                    PathBuf::from(format!("/run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json")),
                ),
                (
                    Runtime::CriO,
                    PathBuf::from(format!("/run/containers/storage/overlay-containers/{id}/userdata/config.json")),
                ),
            ]
        })
    }
}

pub fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}
