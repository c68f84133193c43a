//! The Kubernetes pod behind an event, named from the node's own files: no API server, no network.
//!
//! - The owner's cgroup path gives the pod's UID and the container's id, for both of kubelet's cgroup drivers
//!   and every QoS class ([`PodRef::of_cgroup`]).
//! - The container runtime's bundle names the pod: containerd's
//!   `/run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/config.json` (annotations of containerd's
//!   `pkg/cri/annotations`), CRI-O's `/run/containers/storage/overlay-containers/<id>/userdata/config.json`
//!   (CRI-O's `pkg/annotations`). The bundle directories are mode 0700: the privileged helper opens the file
//!   and hands the descriptor over; the tracer, which holds no capability, parses it.
//! - Any runtime: kubelet's `/var/log/pods/<namespace>_<name>_<uid>/` names the pod (not the container) when
//!   no bundle is there.
//!
//! An event about no socket owner (an `icmp_sent`, a drop with no socket) gets the pod whose network
//! namespace it happened in: the one pod whose processes are in it (the node's own namespace, where
//! host-network pods live, has none).
//!
//! Each container is looked up once and remembered; one that is gone is forgotten. A file that does not
//! parse, or a name that is not a Kubernetes name, gives no pod, never a guess.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::Read as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::{
    owner::{self, container_id},
    privileged::Privileged,
    runtime::Runtime,
};
use crate::domain::{OwnerInfo, Pod};

/// Where kubelet keeps each pod's logs, a directory named `<namespace>_<name>_<uid>`.
pub const POD_LOGS: &str = "/var/log/pods";
/// A bundle larger than this is no runtime's (containerd's and CRI-O's are a few kilobytes): not read.
const MAX_BUNDLE: u64 = 1 << 20;
/// At most this many containers and namespaces are remembered; a node runs a few hundred pods.
const MAX_REMEMBERED: usize = 8192;
/// A container or namespace found to have no pod is asked again after this long: a bundle written late, a
/// pod's first process not yet in its namespace.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What a cgroup path says of a pod: its UID, and the container's id when the path is a container's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub uid: String,
    pub container: Option<String>,
}

impl PodRef {
    /// The pod in a cgroup v2 (or v1) path, as kubelet lays them out:
    /// - systemd driver: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
    ///   cri-containerd-<id>.scope`, with `_` for each `-` of the UID (systemd reserves `-` for nesting);
    ///   Guaranteed pods directly under `kubepods.slice/kubepods-pod<uid>.slice`; `crio-<id>.scope`,
    ///   `docker-<id>.scope`; below a `--cgroup-root` as kind sets it (`kubelet-kubepods-...`);
    /// - cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>`.
    ///
    /// `None` for any other path, and for a pod directory outside a `kubepods` one.
    pub fn of_cgroup(path: &str) -> Option<PodRef> {
        // Every layout has a `kubepods` component: the path of a process outside Kubernetes, the common
        // case, is not split.
        if !path.contains("kubepods") {
            return None;
        }
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let (at, uid) = components.iter().enumerate().find_map(|(i, c)| {
            let uid = match c.strip_suffix(".slice") {
                Some(slice) => systemd_pod(slice)?,
                None => cgroupfs_pod(c, &components[..i])?,
            };
            Some((i, uid))
        })?;
        let container = components.get(at + 1).and_then(|c| container_id(c));
        Some(PodRef { uid, container })
    }
}

/// `kubepods-burstable-pod<uid>` (a slice's name without `.slice`): the UID, with its `-` back.
fn systemd_pod(slice: &str) -> Option<String> {
    let (parent, uid) = slice.rsplit_once("-pod")?;
    let parent = parent.strip_suffix("-burstable").or_else(|| parent.strip_suffix("-besteffort")).unwrap_or(parent);
    let uid = uid.replace('_', "-");
    (parent.ends_with("kubepods") && is_uid(&uid)).then_some(uid)
}

/// `pod<uid>` under `kubepods`, `kubepods/burstable` or `kubepods/besteffort`.
fn cgroupfs_pod(component: &str, above: &[&str]) -> Option<String> {
    let uid = component.strip_prefix("pod")?;
    let parent = matches!(above, [.., "kubepods", "burstable" | "besteffort"] | [.., "kubepods"]);
    (parent && is_uid(uid)).then(|| uid.to_owned())
}

/// A pod UID as kubelet makes them: a UUID, or a static pod's hash (32 hex digits).
fn is_uid(uid: &str) -> bool {
    (1..=64).contains(&uid.len()) && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A namespace or pod name (RFC 1123 subdomain: lowercase letters, digits, `-` and `.`, at most 253), or a
/// container name (an RFC 1123 label: no `.`, at most 63): anything else is not what kubelet wrote.
fn is_name(name: &str, max: usize, dots: bool) -> bool {
    (1..=max).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.'))
}

/// The annotations of a bundle's `config.json` that name the pod, both runtimes'.
#[derive(Deserialize)]
struct Bundle {
    #[serde(default)]
    annotations: Annotations,
}

#[derive(Default, Deserialize)]
struct Annotations {
    // containerd, pkg/cri/annotations/annotations.go.
    #[serde(rename = "io.kubernetes.cri.container-type")]
    cri_type: Option<String>,
    #[serde(rename = "io.kubernetes.cri.sandbox-namespace")]
    cri_namespace: Option<String>,
    #[serde(rename = "io.kubernetes.cri.sandbox-name")]
    cri_name: Option<String>,
    #[serde(rename = "io.kubernetes.cri.sandbox-uid")]
    cri_uid: Option<String>,
    #[serde(rename = "io.kubernetes.cri.container-name")]
    cri_container: Option<String>,
    // CRI-O, pkg/annotations (and the kubelet's `io.kubernetes.*` labels it copies).
    #[serde(rename = "io.kubernetes.cri-o.ContainerType")]
    crio_type: Option<String>,
    #[serde(rename = "io.kubernetes.pod.namespace")]
    crio_namespace: Option<String>,
    #[serde(rename = "io.kubernetes.pod.name")]
    crio_name: Option<String>,
    #[serde(rename = "io.kubernetes.pod.uid")]
    crio_uid: Option<String>,
    #[serde(rename = "io.kubernetes.container.name")]
    crio_container: Option<String>,
}

/// The pod a bundle names, if it is the pod with `uid` and every name is a Kubernetes name. A sandbox (the
/// pod's pause container) names no container.
pub fn parse_bundle(runtime: Runtime, json: &[u8], uid: &str) -> Option<Pod> {
    let a = serde_json::from_slice::<Bundle>(json).ok()?.annotations;
    let (kind, namespace, name, pod_uid, container) = match runtime {
        Runtime::Containerd => (a.cri_type, a.cri_namespace, a.cri_name, a.cri_uid, a.cri_container),
        Runtime::CriO => (a.crio_type, a.crio_namespace, a.crio_name, a.crio_uid, a.crio_container),
    };
    let sandbox = kind.as_deref() == Some("sandbox");
    let container = if sandbox { None } else { Some(container?) };
    let pod = Pod { namespace: namespace?, name: name?, container, uid: pod_uid? };
    (pod.uid == uid && pod.valid()).then_some(pod)
}

/// The pod kubelet's log directory names for `uid`: `<namespace>_<name>_<uid>` under `logs`. Neither name
/// may hold `_`, so the split is certain.
pub fn pod_of_logs(logs: &Path, uid: &str) -> Option<Pod> {
    let suffix = format!("_{uid}");
    fs::read_dir(logs).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        let (namespace, name) = name.strip_suffix(&suffix)?.split_once('_')?;
        let pod = Pod { namespace: namespace.to_owned(), name: name.to_owned(), container: None, uid: uid.to_owned() };
        pod.valid().then_some(pod)
    })
}

impl Pod {
    fn valid(&self) -> bool {
        is_name(&self.namespace, 63, false)
            && is_name(&self.name, 253, true)
            && self.container.as_deref().is_none_or(|c| is_name(c, 63, false))
            && is_uid(&self.uid)
    }
}

/// Reads a bundle the helper opened, at most [`MAX_BUNDLE`] bytes.
fn read_bundle(file: File) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(MAX_BUNDLE + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= MAX_BUNDLE).then_some(bytes)
}

/// What is known of a container or namespace: its pod, and since when.
struct Known {
    pod: Option<Pod>,
    at: Instant,
}

/// Pods by cgroup path and by network namespace, each looked up once.
pub struct Pods {
    /// Where the cgroup v2 hierarchy is mounted: a container whose cgroup is gone is forgotten.
    cgroup_root: Option<PathBuf>,
    logs: PathBuf,
    by_cgroup: HashMap<String, Known>,
    by_netns: HashMap<u32, Known>,
    /// The node's own network namespace: its pods are host-network ones, and name no pod.
    own_netns: Option<u64>,
    last_sweep: Instant,
    /// How many times a container's or namespace's pod was looked up, for the tests that it is once.
    pub lookups: u64,
}

impl Pods {
    pub fn new(cgroup_root: Option<PathBuf>, own_netns: Option<u64>) -> Self {
        Self::with_logs(cgroup_root, own_netns, PathBuf::from(POD_LOGS))
    }

    pub fn with_logs(cgroup_root: Option<PathBuf>, own_netns: Option<u64>, logs: PathBuf) -> Self {
        Self {
            cgroup_root,
            logs,
            by_cgroup: HashMap::new(),
            by_netns: HashMap::new(),
            own_netns,
            last_sweep: Instant::now(),
            lookups: 0,
        }
    }

    /// The pod of an event: its socket owner's, else its network namespace's.
    pub fn of_event(&mut self, helper: &mut dyn Privileged, owner: Option<&OwnerInfo>, netns: u32) -> Option<Pod> {
        match owner {
            Some(owner) => self.of_cgroup(helper, owner.cgroup.as_deref()?),
            None => self.of_netns(helper, netns),
        }
    }

    /// The pod of the process in cgroup `path`.
    pub fn of_cgroup(&mut self, helper: &mut dyn Privileged, path: &str) -> Option<Pod> {
        if let Some(known) = self.by_cgroup.get(path)
            && (known.pod.is_some() || known.at.elapsed() < RETRY_AFTER)
        {
            return known.pod.clone();
        }
        let pod_ref = PodRef::of_cgroup(path)?;
        self.lookups += 1;
        let pod = self.named(helper, &pod_ref);
        if self.by_cgroup.len() >= MAX_REMEMBERED {
            self.by_cgroup.clear();
        }
        self.by_cgroup.insert(path.to_owned(), Known { pod: pod.clone(), at: Instant::now() });
        pod
    }

    /// The pod whose network namespace `netns` is: the one pod its processes are in.
    fn of_netns(&mut self, helper: &mut dyn Privileged, netns: u32) -> Option<Pod> {
        if self.own_netns == Some(u64::from(netns)) {
            return None;
        }
        if let Some(known) = self.by_netns.get(&netns)
            && (known.pod.is_some() || known.at.elapsed() < RETRY_AFTER)
        {
            return known.pod.clone();
        }
        self.lookups += 1;
        let mut refs: Vec<PodRef> = helper
            .netns_members(u64::from(netns))
            .into_iter()
            .filter_map(|pid| PodRef::of_cgroup(&owner::cgroup_v2_of(pid)?))
            .collect();
        refs.sort_by(|a, b| (&a.uid, &a.container).cmp(&(&b.uid, &b.container)));
        refs.dedup_by(|a, b| a.uid == b.uid);
        let pod = match refs.as_slice() {
            [one] => self.named(helper, one).map(|pod| Pod { container: None, ..pod }),
            // No pod's process, or two pods' (not Kubernetes' doing): no pod is certain.
            _ => None,
        };
        if self.by_netns.len() >= MAX_REMEMBERED {
            self.by_netns.clear();
        }
        self.by_netns.insert(netns, Known { pod: pod.clone(), at: Instant::now() });
        pod
    }

    /// The names of the pod `pod_ref` points at: its container's bundle, else kubelet's log directory. A
    /// bundle that is there but does not name this pod names none.
    fn named(&self, helper: &mut dyn Privileged, pod_ref: &PodRef) -> Option<Pod> {
        if let Some(id) = &pod_ref.container
            && let Some((runtime, file)) = helper.bundle(id)
        {
            return parse_bundle(runtime, &read_bundle(file)?, &pod_ref.uid);
        }
        pod_of_logs(&self.logs, &pod_ref.uid)
    }

    /// Forgets the containers whose cgroup is gone, and what was looked up in vain long enough ago to ask
    /// again: at most every [`RETRY_AFTER`], however often it is called.
    pub fn sweep(&mut self) {
        if self.last_sweep.elapsed() < RETRY_AFTER {
            return;
        }
        self.last_sweep = Instant::now();
        let root = self.cgroup_root.clone();
        self.by_cgroup.retain(|path, known| {
            let gone = root.as_ref().is_some_and(|root| !root.join(path.trim_start_matches('/')).exists());
            !gone && (known.pod.is_some() || known.at.elapsed() < RETRY_AFTER)
        });
        // A namespace's pod is asked again once its answer is old: its inode may be another's by now.
        self.by_netns.retain(|_, known| known.at.elapsed() < RETRY_AFTER * 6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir::TempDir;

    const ID: &str = "4f9a1c0e2b7d8e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
    const UID: &str = "9b1f6c2e-8d4a-4f3b-a2c1-0e9d8c7b6a50";

    fn pod_ref(container: bool) -> Option<PodRef> {
        Some(PodRef { uid: UID.to_owned(), container: container.then(|| ID.to_owned()) })
    }

    #[test]
    fn finds_the_pod_in_both_drivers_layouts() {
        let under = UID.replace('-', "_");
        for path in [
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/crio-{ID}.scope"),
            format!("/kubepods.slice/kubepods-pod{under}.slice/docker-{ID}.scope"),
            format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/\
                 kubelet-kubepods-burstable-pod{under}.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
        ] {
            assert_eq!(PodRef::of_cgroup(&path), pod_ref(true), "{path}");
        }
        // The pod's own cgroup: the pod, no container.
        assert_eq!(PodRef::of_cgroup(&format!("/kubepods/burstable/pod{UID}")), pod_ref(false));
        assert_eq!(PodRef::of_cgroup(&format!("/kubepods.slice/kubepods-pod{under}.slice")), pod_ref(false));
        // A static pod's UID is a hash.
        let hash = "6d0c1b8e5f4a3b2c1d0e9f8a7b6c5d4e";
        assert_eq!(PodRef::of_cgroup(&format!("/kubepods/pod{hash}/{ID}")).unwrap().uid, hash);
    }

    #[test]
    fn other_cgroups_have_no_pod() {
        for path in [
            "/",
            "/system.slice/containerd.service",
            &format!("/system.slice/docker-{ID}.scope"),
            &format!("/pod{UID}/{ID}"),
            &format!("/user.slice/user-pod{}.slice", UID.replace('-', "_")),
            &format!("/kubepods/burstable/pod{UID}x/{ID}"),
            "/kubepods/burstable/pod/x",
            "/kubepods.slice/kubepods-burstable.slice",
        ] {
            assert_eq!(PodRef::of_cgroup(path), None, "{path}");
        }
    }

    fn containerd(kind: &str, container: Option<&str>, uid: &str) -> Vec<u8> {
        let mut annotations = serde_json::json!({
            "io.kubernetes.cri.container-type": kind,
            "io.kubernetes.cri.sandbox-id": ID,
            "io.kubernetes.cri.sandbox-namespace": "kube-system",
            "io.kubernetes.cri.sandbox-name": "coredns-7db6d8ff4d-x2x9k",
            "io.kubernetes.cri.sandbox-uid": uid,
        });
        if let Some(name) = container {
            annotations["io.kubernetes.cri.container-name"] = name.into();
        }
        serde_json::to_vec(
            &serde_json::json!({"ociVersion": "1.1.0", "process": {"args": ["/coredns"]}, "annotations": annotations}),
        )
        .unwrap()
    }

    fn coredns(container: Option<&str>) -> Pod {
        Pod {
            namespace: "kube-system".into(),
            name: "coredns-7db6d8ff4d-x2x9k".into(),
            container: container.map(Into::into),
            uid: UID.into(),
        }
    }

    #[test]
    fn reads_containerd_and_crio_bundles() {
        let bundle = containerd("container", Some("coredns"), UID);
        assert_eq!(parse_bundle(Runtime::Containerd, &bundle, UID), Some(coredns(Some("coredns"))));
        let sandbox = containerd("sandbox", None, UID);
        assert_eq!(parse_bundle(Runtime::Containerd, &sandbox, UID), Some(coredns(None)));
        let crio = serde_json::json!({"annotations": {
            "io.kubernetes.cri-o.ContainerType": "container",
            "io.kubernetes.pod.namespace": "kube-system",
            "io.kubernetes.pod.name": "coredns-7db6d8ff4d-x2x9k",
            "io.kubernetes.pod.uid": UID,
            "io.kubernetes.container.name": "coredns",
        }});
        let crio = serde_json::to_vec(&crio).unwrap();
        assert_eq!(parse_bundle(Runtime::CriO, &crio, UID), Some(coredns(Some("coredns"))));
        // The other runtime's keys name nothing.
        assert_eq!(parse_bundle(Runtime::Containerd, &crio, UID), None);
    }

    #[test]
    fn a_bundle_that_is_not_certain_names_no_pod() {
        // Not JSON, cut short, without the names, another pod's, a container without its name.
        assert_eq!(parse_bundle(Runtime::Containerd, b"{\"annotations\": {", UID), None);
        assert_eq!(parse_bundle(Runtime::Containerd, b"\xff\xfe", UID), None);
        assert_eq!(parse_bundle(Runtime::Containerd, b"{\"ociVersion\": \"1.1.0\"}", UID), None);
        assert_eq!(parse_bundle(Runtime::Containerd, &containerd("container", Some("coredns"), UID), "other"), None);
        assert_eq!(parse_bundle(Runtime::Containerd, &containerd("container", None, UID), UID), None);
        // Names no API server would have taken: a terminal escape, upper case, `_`, too long.
        for bad in ["core\u{1b}[2Jdns", "CoreDNS", "core_dns", &"a".repeat(64)] {
            let bundle = containerd("container", Some(bad), UID);
            assert_eq!(parse_bundle(Runtime::Containerd, &bundle, UID), None, "{bad:?}");
        }
        // Annotations of the wrong type.
        let wrong = br#"{"annotations": {"io.kubernetes.cri.sandbox-name": 7}}"#;
        assert_eq!(parse_bundle(Runtime::Containerd, wrong, UID), None);
    }

    /// A helper whose runtime has one bundle (`ID`'s, these bytes) and whose namespace 7 holds the given
    /// processes; it counts the bundles asked for.
    struct Runtimes {
        bundle: Vec<u8>,
        members: Vec<u32>,
        asked: std::rc::Rc<std::cell::Cell<u32>>,
    }

    impl Privileged for Runtimes {
        fn owner(&mut self, _: u64, _: Instant, _: bool) -> super::super::owner::Lookup {
            super::super::owner::Lookup::Unasked
        }
        fn owners_end(&mut self) {}
        fn tunnel(&mut self, _: u64, _: Option<u32>) -> Option<bool> {
            None
        }
        fn diag_socket(&mut self, _: u64) -> std::io::Result<std::os::fd::OwnedFd> {
            Err(std::io::Error::other("not here"))
        }
        fn rate_limits(&mut self) -> Vec<(u64, Result<crate::pipeline::counters::RateLimits, String>)> {
            Vec::new()
        }
        fn conntrack(&mut self, _: u64, _: super::super::conntrack::Flow) -> Option<crate::domain::Translation> {
            None
        }
        fn bundle(&mut self, id: &str) -> Option<(Runtime, File)> {
            self.asked.set(self.asked.get() + 1);
            if id != ID {
                return None;
            }
            let path =
                std::env::temp_dir().join(format!("udptrace-bundle-{}-{}", std::process::id(), self.asked.get()));
            fs::write(&path, &self.bundle).ok()?;
            let file = File::open(&path).ok();
            let _ = fs::remove_file(&path);
            Some((Runtime::Containerd, file?))
        }
        fn netns_members(&mut self, netns: u64) -> Vec<u32> {
            if netns == 7 { self.members.clone() } else { Vec::new() }
        }
    }

    /// A flood of events from one container reads its bundle once; a bundle larger than any runtime's is
    /// not read; a process outside Kubernetes asks nothing; a namespace's pod is its processes' one pod.
    #[test]
    fn a_container_is_looked_up_once() {
        let asked = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut helper = Runtimes {
            bundle: containerd("container", Some("coredns"), UID),
            members: vec![std::process::id()],
            asked: asked.clone(),
        };
        let mut pods = Pods::with_logs(None, Some(1), PathBuf::from("/nonexistent"));
        let path = format!("/kubepods/burstable/pod{UID}/{ID}");
        for _ in 0..1000 {
            assert_eq!(pods.of_cgroup(&mut helper, &path), Some(coredns(Some("coredns"))));
        }
        assert_eq!((asked.get(), pods.lookups), (1, 1));
        assert_eq!(pods.of_cgroup(&mut helper, "/system.slice/ssh.service"), None);
        assert_eq!(asked.get(), 1);
        // Too large: no pod, and not asked again at once.
        helper.bundle = vec![b' '; (MAX_BUNDLE + 1) as usize];
        let other = format!("/kubepods/pod{UID}/{ID}");
        assert_eq!(pods.of_cgroup(&mut helper, &other), None);
        assert_eq!(pods.of_cgroup(&mut helper, &other), None);
        assert_eq!(asked.get(), 2);
        // The node's own namespace names no pod; this test's process is in no pod's cgroup.
        assert_eq!(pods.of_netns(&mut helper, 1), None);
        assert_eq!(pods.of_netns(&mut helper, 7), None);
        assert_eq!(pods.of_netns(&mut helper, 8), None);
    }

    #[test]
    fn kubelets_log_directory_names_the_pod() {
        let dir = TempDir::new("pod-logs");
        for name in [format!("kube-system_coredns-7db6d8ff4d-x2x9k_{UID}"), "default_web-0_1234".to_owned()] {
            fs::create_dir_all(dir.join(&name)).unwrap();
        }
        assert_eq!(pod_of_logs(dir.path(), UID), Some(coredns(None)));
        assert_eq!(pod_of_logs(dir.path(), "5678"), None);
        // A directory that is not `<namespace>_<name>_<uid>` names none.
        fs::create_dir(dir.join("a_b_c_5678")).unwrap();
        assert_eq!(pod_of_logs(dir.path(), "5678"), None);
        assert_eq!(pod_of_logs(Path::new("/nonexistent"), UID), None);
    }
}
