//! A Kubernetes node as udptrace meets one, made without Kubernetes: the files the runtimes and the kubelet
//! leave (containerd's and CRI-O's bundles under `/run`, the kubelet's pod log directories under `/var/log`)
//! and the pods' cgroups, in both drivers' layouts, in the host's cgroup v2 hierarchy.
//!
//! The files live in a mount namespace of the node's own ([`Node`], held by `helper node`), whose `/run` and
//! `/var/log` are tmpfs with the host's entries bound back but the runtimes' (so the host's own are never
//! touched, nor a real runtime's files seen); host mounts propagate into it, so the network namespaces `ip
//! netns` adds later show in its `/run/netns`. A udptrace started in it (`Tracer::start_on`) reads the files
//! there; the suite writes them through `/proc/PID/root` of the process holding it. The cgroups are made in
//! the host's hierarchy (a cgroup path is what the kernel records), each pod's uid and each container's id
//! unique to the run and marked with its pid, and removed when the node goes; a killed run's are swept at the
//! next node's start.

use std::{
    cell::RefCell,
    fs, io,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::helper::HeldProcess;

/// containerd's bundles of the CRI plugin's containerd namespace (`k8s.io`).
const CONTAINERD_BUNDLES: &str = "/run/containerd/io.containerd.runtime.v2.task/k8s.io";
/// CRI-O's containers (and sandboxes): `<id>/userdata/config.json`.
const CRIO_CONTAINERS: &str = "/run/containers/storage/overlay-containers";
/// The kubelet's pod log directories: `<namespace>_<name>_<uid>/<container>/0.log`.
const POD_LOGS: &str = "/var/log/pods";
/// The second group of every pod uid the suite makes, and the 49th to 52nd digits of every container id:
/// with the pid of the run that made it after it, it tells a killed run's cgroups from anyone else's.
const MARK: &str = "7e57";

/// The cgroup v2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> Option<String> {
    fs::read_to_string("/proc/self/mountinfo").ok()?.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(str::to_owned))?
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Runtime {
    Containerd,
    CriO,
}

/// The kubelet's cgroup driver.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

/// The pod's QoS class, which picks its cgroup's parent.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// A pod: its names, the uid the kubelet gave it, and how the node runs it.
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub qos: Qos,
    pub driver: Driver,
    pub runtime: Runtime,
    /// Its sandbox's (pause container's) id.
    pub sandbox: String,
    /// Its network namespace as the CNI plugin named it (`/var/run/netns/cni-<uuid>`).
    netns_path: String,
}

impl Pod {
    pub fn new(namespace: &str, name: &str, qos: Qos, driver: Driver, runtime: Runtime) -> Result<Self> {
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: marked_uid()?,
            qos,
            driver,
            runtime,
            sandbox: marked_id()?,
            netns_path: format!("/var/run/netns/cni-{}", uuid()?),
        })
    }

    /// The event's `pod` for a process of `container` (`None`: of the pod, no container known).
    pub fn json(&self, container: Option<&str>) -> Value {
        json!({"namespace": self.namespace, "name": self.name, "container": container, "uid": self.uid})
    }

    /// What a text line says of it: `pod NS/NAME (CONTAINER)`, or `pod NS/NAME`.
    pub fn text(&self, container: Option<&str>) -> String {
        match container {
            Some(c) => format!("pod {}/{} ({c})", self.namespace, self.name),
            None => format!("pod {}/{}", self.namespace, self.name),
        }
    }

    /// `/var/log/pods/<namespace>_<name>_<uid>`.
    fn log_dir(&self) -> String {
        format!("{POD_LOGS}/{}_{}_{}", self.namespace, self.name, self.uid)
    }

    /// The pod's cgroup: systemd's slices (the uid's dashes as underscores) or cgroupfs's directories.
    fn slice(&self) -> String {
        let uid = &self.uid;
        let systemd = uid.replace('-', "_");
        match (self.driver, self.qos) {
            (Driver::Systemd, Qos::Guaranteed) => format!("/kubepods.slice/kubepods-pod{systemd}.slice"),
            (Driver::Systemd, Qos::Burstable) => {
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd}.slice")
            }
            (Driver::Systemd, Qos::BestEffort) => {
                format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{systemd}.slice")
            }
            (Driver::Cgroupfs, Qos::Guaranteed) => format!("/kubepods/pod{uid}"),
            (Driver::Cgroupfs, Qos::Burstable) => format!("/kubepods/burstable/pod{uid}"),
            (Driver::Cgroupfs, Qos::BestEffort) => format!("/kubepods/besteffort/pod{uid}"),
        }
    }

    /// The runtime's prefix in a systemd scope's name, and before an id under cgroupfs (CRI-O's alone).
    fn scope_prefix(&self) -> &'static str {
        match self.runtime {
            Runtime::Containerd => "cri-containerd",
            Runtime::CriO => "crio",
        }
    }

    /// The cgroup of container `id`, under the cgroup root.
    pub fn cgroup_of(&self, id: &str) -> String {
        let leaf = match (self.driver, self.runtime) {
            (Driver::Systemd, _) => format!("{}-{id}.scope", self.scope_prefix()),
            (Driver::Cgroupfs, Runtime::Containerd) => id.to_owned(),
            (Driver::Cgroupfs, Runtime::CriO) => format!("crio-{id}"),
        };
        format!("{}/{leaf}", self.slice())
    }

    /// The runtime spec's `linux.cgroupsPath`: `SLICE:PREFIX:ID` for systemd, the path for cgroupfs.
    fn cgroups_path(&self, id: &str) -> String {
        match self.driver {
            Driver::Systemd => {
                let slice = self.slice();
                let parent = slice.rsplit('/').next().unwrap_or_default();
                format!("{parent}:{}:{id}", self.scope_prefix())
            }
            Driver::Cgroupfs => self.cgroup_of(id),
        }
    }

    fn oom_score_adj(&self) -> i32 {
        match self.qos {
            Qos::Guaranteed => -997,
            Qos::Burstable => 968,
            Qos::BestEffort => 1000,
        }
    }

    /// `config.json` of container `id` (`name`, or the sandbox when `None`) as this pod's runtime writes it.
    pub fn spec(&self, id: &str, name: Option<&str>) -> Value {
        let annotations = match self.runtime {
            Runtime::Containerd => self.containerd_annotations(name),
            Runtime::CriO => self.crio_annotations(id, name),
        };
        let (args, user) = match name {
            None => (json!(["/pause"]), json!({"uid": 65535, "gid": 65535})),
            Some(name) => {
                (json!([format!("/usr/local/bin/{name}")]), json!({"uid": 0, "gid": 0, "additionalGids": [0]}))
            }
        };
        let capabilities = json!([
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE"
        ]);
        let mut spec = json!({
            "ociVersion": "1.1.0",
            "process": {
                "user": user,
                "args": args,
                "env": [
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    format!("HOSTNAME={}", self.name),
                    "KUBERNETES_SERVICE_HOST=10.96.0.1",
                    "KUBERNETES_SERVICE_PORT=443",
                ],
                "cwd": "/",
                "capabilities": {"bounding": capabilities, "effective": capabilities, "permitted": capabilities},
                "noNewPrivileges": name.is_none(),
                "oomScoreAdj": if name.is_none() { -998 } else { self.oom_score_adj() },
            },
            "root": {"path": "rootfs", "readonly": name.is_none()},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]},
                {"destination": "/etc/hosts", "type": "bind",
                 "source": format!("/var/lib/kubelet/pods/{}/etc-hosts", self.uid),
                 "options": ["rbind", "rprivate", "rw"]},
            ],
            "annotations": annotations,
            "linux": {
                "resources": {
                    "devices": [{"allow": false, "access": "rwm"}],
                    "cpu": {"shares": 2, "period": 100000},
                },
                "cgroupsPath": self.cgroups_path(id),
                "namespaces": [
                    {"type": "pid"},
                    {"type": "ipc"},
                    {"type": "uts"},
                    {"type": "mount"},
                    {"type": "network", "path": self.netns_path},
                ],
                "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
                "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
            },
        });
        // The sandbox owns the pod's UTS namespace, and names it.
        if name.is_none() {
            spec["hostname"] = json!(self.name);
        }
        spec
    }

    /// containerd's CRI annotations (`internal/cri/annotations`): the sandbox's, and a container's with its
    /// name and image.
    fn containerd_annotations(&self, name: Option<&str>) -> Value {
        let mut annotations = json!({
            "io.kubernetes.cri.sandbox-id": self.sandbox,
            "io.kubernetes.cri.sandbox-namespace": self.namespace,
            "io.kubernetes.cri.sandbox-uid": self.uid,
            "io.kubernetes.cri.sandbox-name": self.name,
        });
        match name {
            None => {
                annotations["io.kubernetes.cri.container-type"] = json!("sandbox");
                annotations["io.kubernetes.cri.sandbox-log-directory"] = json!(self.log_dir());
                annotations["io.kubernetes.cri.podsandbox.image-name"] = json!("registry.k8s.io/pause:3.10");
                annotations["io.kubernetes.cri.sandbox-cpu-period"] = json!("100000");
                annotations["io.kubernetes.cri.sandbox-cpu-quota"] = json!("0");
                annotations["io.kubernetes.cri.sandbox-cpu-shares"] = json!("2");
                annotations["io.kubernetes.cri.sandbox-memory"] = json!("0");
            }
            Some(name) => {
                annotations["io.kubernetes.cri.container-type"] = json!("container");
                annotations["io.kubernetes.cri.container-name"] = json!(name);
                annotations["io.kubernetes.cri.image-name"] = json!(image(name));
            }
        }
        annotations
    }

    /// CRI-O's annotations (`pkg/annotations`), with the kubelet's labels, which CRI-O copies in.
    fn crio_annotations(&self, id: &str, name: Option<&str>) -> Value {
        let mut labels = json!({
            "io.kubernetes.pod.name": self.name,
            "io.kubernetes.pod.namespace": self.namespace,
            "io.kubernetes.pod.uid": self.uid,
        });
        let sandbox_name = format!("k8s_{}_{}_{}_0", self.name, self.namespace, self.uid);
        let mut annotations = json!({
            "io.container.manager": "cri-o",
            "io.kubernetes.cri-o.Annotations": json!({"kubernetes.io/config.source": "api"}).to_string(),
            "io.kubernetes.cri-o.ContainerID": id,
            "io.kubernetes.cri-o.Created": "2025-03-04T09:12:27.183615472Z",
            "io.kubernetes.cri-o.SandboxID": self.sandbox,
            "io.kubernetes.cri-o.SandboxName": sandbox_name,
            "io.kubernetes.cri-o.Stdin": "false",
            "io.kubernetes.cri-o.StdinOnce": "false",
            "io.kubernetes.cri-o.TTY": "false",
            "io.kubernetes.pod.name": self.name,
            "io.kubernetes.pod.namespace": self.namespace,
            "io.kubernetes.pod.terminationGracePeriod": "30",
            "io.kubernetes.pod.uid": self.uid,
            "kubernetes.io/config.source": "api",
        });
        match name {
            None => {
                annotations["io.kubernetes.cri-o.ContainerType"] = json!("sandbox");
                annotations["io.kubernetes.cri-o.ContainerName"] = json!(sandbox_name);
                annotations["io.kubernetes.cri-o.KubeName"] = json!(self.name);
                annotations["io.kubernetes.cri-o.Namespace"] = json!(self.namespace);
                annotations["io.kubernetes.cri-o.Name"] = json!(sandbox_name);
                annotations["io.kubernetes.cri-o.HostName"] = json!(self.name);
                annotations["io.kubernetes.cri-o.CgroupParent"] =
                    json!(self.slice().rsplit('/').next().unwrap_or_default());
                annotations["io.kubernetes.cri-o.LogPath"] = json!(format!("{}/{id}.log", self.log_dir()));
                annotations["io.kubernetes.cri-o.Image"] = json!("registry.k8s.io/pause:3.10");
                annotations["io.kubernetes.cri-o.NamespaceOptions"] = json!(r#"{"pid":1}"#);
                annotations["io.kubernetes.cri-o.PortMappings"] = json!("[]");
            }
            Some(name) => {
                labels["io.kubernetes.container.name"] = json!(name);
                let full = format!("k8s_{name}_{}_{}_{}_0", self.name, self.namespace, self.uid);
                annotations["io.kubernetes.cri-o.ContainerType"] = json!("container");
                annotations["io.kubernetes.cri-o.ContainerName"] = json!(full);
                annotations["io.kubernetes.cri-o.Name"] = json!(full);
                annotations["io.kubernetes.cri-o.Metadata"] = json!(json!({"name": name}).to_string());
                annotations["io.kubernetes.cri-o.ImageName"] = json!(image(name));
                annotations["io.kubernetes.cri-o.LogPath"] = json!(format!("{}/{name}/0.log", self.log_dir()));
                annotations["io.kubernetes.cri-o.ResolvPath"] =
                    json!(format!("{CRIO_CONTAINERS}/{}/userdata/resolv.conf", self.sandbox));
                annotations["io.kubernetes.container.name"] = json!(name);
                annotations["io.kubernetes.container.restartCount"] = json!("0");
                annotations["io.kubernetes.container.terminationMessagePath"] = json!("/dev/termination-log");
                annotations["io.kubernetes.container.terminationMessagePolicy"] = json!("File");
            }
        }
        annotations["io.kubernetes.cri-o.Labels"] = json!(labels.to_string());
        annotations
    }
}

fn image(container: &str) -> String {
    format!("registry.example.com/{container}:1.4.2")
}

/// A container the node runs: its id, name (`None` for the sandbox) and cgroup.
pub struct Container {
    pub id: String,
    pub name: Option<String>,
    /// Its cgroup under the cgroup root, as `/proc/PID/cgroup` and udptrace's `cgroup` say it.
    pub cgroup: String,
    /// Its cgroup's directory, to join.
    pub dir: String,
}

/// The node: its mount namespace (held by a helper process) and the cgroups made for it.
pub struct Node {
    holder: HeldProcess,
    cgroup_root: String,
    /// The cgroup directories it made, in order: removed in reverse.
    made: RefCell<Vec<PathBuf>>,
}

impl Node {
    /// `helper` is a binary that runs `helper::main` when its first argument is `helper`.
    pub fn new(helper: &Path) -> Result<Self> {
        let cgroup_root = cgroup2_mount().context("no cgroup v2 hierarchy is mounted here")?;
        sweep_stale(Path::new(&cgroup_root));
        let holder = HeldProcess::node(helper)?;
        Ok(Self { holder, cgroup_root, made: RefCell::default() })
    }

    /// Its mount namespace, for udptrace to start in.
    pub fn mounts(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/mnt", self.holder.pid))
    }

    /// `path` (absolute, as the node sees it), from outside the node.
    fn at(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.holder.pid))
    }

    /// The directory `path` of the node, made with `mode` where missing (the parents must exist).
    fn dir(&self, path: &str, mode: u32) -> Result<()> {
        let at = self.at(path);
        match fs::DirBuilder::new().mode(mode).create(&at) {
            Ok(()) => fs::set_permissions(&at, fs::Permissions::from_mode(mode)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
        .with_context(|| format!("making {path} in the node"))
    }

    /// Writes the node's file `path` (its directory must exist).
    pub fn write(&self, path: &str, contents: &[u8], mode: u32) -> Result<()> {
        let at = self.at(path);
        fs::write(&at, contents).with_context(|| format!("writing {path} in the node"))?;
        fs::set_permissions(&at, fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {path}"))
    }

    /// Where the runtime of `pod` keeps the bundle of container `id`, made as it makes it (the bundle's
    /// directory 0700); returns the path of its `config.json`.
    pub fn bundle_dir(&self, pod: &Pod, id: &str) -> Result<String> {
        match pod.runtime {
            Runtime::Containerd => {
                for dir in ["/run/containerd", "/run/containerd/io.containerd.runtime.v2.task", CONTAINERD_BUNDLES] {
                    self.dir(dir, 0o711)?;
                }
                let bundle = format!("{CONTAINERD_BUNDLES}/{id}");
                self.dir(&bundle, 0o700)?;
                self.dir(&format!("{bundle}/rootfs"), 0o711)?;
                Ok(format!("{bundle}/config.json"))
            }
            Runtime::CriO => {
                for dir in ["/run/containers", "/run/containers/storage", CRIO_CONTAINERS] {
                    self.dir(dir, 0o700)?;
                }
                let bundle = format!("{CRIO_CONTAINERS}/{id}");
                self.dir(&bundle, 0o700)?;
                self.dir(&format!("{bundle}/userdata"), 0o700)?;
                Ok(format!("{bundle}/userdata/config.json"))
            }
        }
    }

    /// The bundle of container `id` of `pod` (`name`; the sandbox for `None`), as its runtime writes it.
    pub fn bundle(&self, pod: &Pod, id: &str, name: Option<&str>) -> Result<()> {
        let config = self.bundle_dir(pod, id)?;
        let spec = serde_json::to_vec_pretty(&pod.spec(id, name))?;
        self.write(&config, &spec, 0o644)
    }

    /// The kubelet's log directory of `pod`, with a log of each of `containers`.
    pub fn log_dir(&self, pod: &Pod, containers: &[&str]) -> Result<()> {
        self.dir(POD_LOGS, 0o755)?;
        self.dir(&pod.log_dir(), 0o755)?;
        for name in containers {
            let dir = format!("{}/{name}", pod.log_dir());
            self.dir(&dir, 0o755)?;
            let line = format!("2025-03-04T09:12:28.012345678Z stdout F {name} starting\n");
            self.write(&format!("{dir}/0.log"), line.as_bytes(), 0o640)?;
        }
        Ok(())
    }

    /// The cgroup `path` (under the root), made with its parents where missing; returns its directory.
    pub fn cgroup(&self, path: &str) -> Result<String> {
        let mut dir = PathBuf::from(&self.cgroup_root);
        for part in path.split('/').filter(|p| !p.is_empty()) {
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => self.made.borrow_mut().push(dir.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("making cgroup {}", dir.display())),
            }
        }
        Ok(dir.to_string_lossy().into_owned())
    }

    /// The pod's sandbox started: its log directory, its bundle and its cgroup.
    pub fn start_pod(&self, pod: &Pod) -> Result<Container> {
        self.log_dir(pod, &[])?;
        self.bundle(pod, &pod.sandbox, None)?;
        self.container_cgroup(pod, pod.sandbox.clone(), None)
    }

    /// A container of `pod` called `name` started: its log, its bundle and its cgroup.
    pub fn start_container(&self, pod: &Pod, name: &str) -> Result<Container> {
        let id = marked_id()?;
        self.log_dir(pod, &[name])?;
        self.bundle(pod, &id, Some(name))?;
        self.container_cgroup(pod, id, Some(name))
    }

    /// The cgroup of container `id` of `pod`, made.
    pub fn container_cgroup(&self, pod: &Pod, id: String, name: Option<&str>) -> Result<Container> {
        let cgroup = pod.cgroup_of(&id);
        let dir = self.cgroup(&cgroup)?;
        Ok(Container { id, name: name.map(str::to_owned), cgroup, dir })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The processes in them are gone by now (each scenario's drop before the node's).
        for dir in self.made.borrow().iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A fresh container id (64 hex digits) of this run: random, then [`MARK`] and the pid.
pub fn marked_id() -> Result<String> {
    Ok(format!("{}{MARK}{:012x}", hex(24)?, std::process::id()))
}

/// A fresh pod uid of this run: random, [`MARK`] second and the pid last.
fn marked_uid() -> Result<String> {
    let random = hex(7)?;
    Ok(format!("{}-{MARK}-4{}-8{}-{:012x}", &random[..8], &random[8..11], &random[11..14], std::process::id()))
}

/// A random uuid (version 4's layout).
fn uuid() -> Result<String> {
    let r = hex(16)?;
    Ok(format!("{}-{}-4{}-8{}-{}", &r[..8], &r[8..12], &r[13..16], &r[17..20], &r[20..32]))
}

/// `bytes` random bytes in hex.
fn hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    // SAFETY: a buffer of the length passed.
    let got = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if usize::try_from(got).ok() != Some(buf.len()) {
        return Err(io::Error::last_os_error()).context("getrandom");
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The pid of the run that made the cgroup called `name` (a pod's or a container's, marked), if one did.
fn marked_pid(name: &str) -> Option<u32> {
    let name = name.trim_end_matches(".scope").trim_end_matches(".slice");
    if let Some(at) = name.rfind("pod") {
        let uid = name[at + 3..].replace('_', "-");
        let groups: Vec<&str> = uid.split('-').collect();
        if let [_, MARK, _, _, pid] = groups[..] {
            return u32::from_str_radix(pid, 16).ok();
        }
    }
    let id = name.get(name.len().checked_sub(64)?..)?;
    (id.bytes().all(|b| b.is_ascii_hexdigit()) && &id[48..52] == MARK)
        .then(|| u32::from_str_radix(&id[52..], 16).ok())?
}

/// Removes the cgroups a killed run left: marked with a pid that is gone.
fn sweep_stale(root: &Path) {
    for top in ["kubepods.slice", "kubepods", "docker"] {
        sweep_under(&root.join(top));
    }
}

fn sweep_under(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        match marked_pid(&name) {
            Some(pid) if !Path::new(&format!("/proc/{pid}")).exists() => remove_tree(&path),
            Some(_) => {}
            None => sweep_under(&path),
        }
    }
}

/// rmdir of a cgroup and every cgroup under it, deepest first.
fn remove_tree(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(driver: Driver, qos: Qos, runtime: Runtime) -> Pod {
        let mut pod = Pod::new("kube-system", "coredns-7db6d8ff4d-x2x9k", qos, driver, runtime).unwrap();
        pod.uid = "9b1f0c2e-7e57-4a1b-8c2d-0000000004d2".to_owned();
        pod
    }

    const ID: &str = "4f9a1c0e2b7d8e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d7e5700000000162e";

    #[test]
    fn cgroups_are_laid_out_as_each_driver_lays_them_out() {
        let uid = "9b1f0c2e_7e57_4a1b_8c2d_0000000004d2";
        assert_eq!(
            pod(Driver::Systemd, Qos::Burstable, Runtime::Containerd).cgroup_of(ID),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope"
            )
        );
        assert_eq!(
            pod(Driver::Systemd, Qos::Guaranteed, Runtime::CriO).cgroup_of(ID),
            format!("/kubepods.slice/kubepods-pod{uid}.slice/crio-{ID}.scope")
        );
        assert_eq!(
            pod(Driver::Cgroupfs, Qos::BestEffort, Runtime::Containerd).cgroup_of(ID),
            format!("/kubepods/besteffort/pod9b1f0c2e-7e57-4a1b-8c2d-0000000004d2/{ID}")
        );
        assert_eq!(
            pod(Driver::Systemd, Qos::Burstable, Runtime::Containerd).cgroups_path(ID),
            format!("kubepods-burstable-pod{uid}.slice:cri-containerd:{ID}")
        );
    }

    #[test]
    fn a_killed_runs_cgroups_are_known_by_their_mark() {
        assert_eq!(marked_pid("kubepods-burstable-pod9b1f0c2e_7e57_4a1b_8c2d_0000000004d2.slice"), Some(1234));
        assert_eq!(marked_pid("pod9b1f0c2e-7e57-4a1b-8c2d-0000000004d2"), Some(1234));
        assert_eq!(marked_pid(&format!("cri-containerd-{ID}.scope")), Some(0x162e));
        assert_eq!(marked_pid("kubepods-burstable-pod9b1f0c2e_1234_4a1b_8c2d_0000000004d2.slice"), None);
        assert_eq!(marked_pid("kubepods-burstable.slice"), None);
        assert_eq!(marked_pid(&format!("crio-{}.scope", "a".repeat(64))), None);
        let fresh = marked_uid().unwrap();
        assert_eq!(marked_pid(&format!("pod{fresh}")), Some(std::process::id()));
        assert_eq!(marked_pid(&marked_id().unwrap()), Some(std::process::id()));
    }

    #[test]
    fn each_runtime_names_the_pod_in_its_own_annotations() {
        let containerd = pod(Driver::Systemd, Qos::Burstable, Runtime::Containerd);
        let spec = containerd.spec(ID, Some("coredns"));
        let annotations = &spec["annotations"];
        assert_eq!(annotations["io.kubernetes.cri.container-type"], "container");
        assert_eq!(annotations["io.kubernetes.cri.container-name"], "coredns");
        assert_eq!(annotations["io.kubernetes.cri.sandbox-namespace"], "kube-system");
        assert_eq!(annotations["io.kubernetes.cri.sandbox-uid"], containerd.uid);
        let sandbox = containerd.spec(&containerd.sandbox, None);
        assert_eq!(sandbox["annotations"]["io.kubernetes.cri.container-type"], "sandbox");
        assert!(sandbox["annotations"].get("io.kubernetes.cri.container-name").is_none());
        let crio = pod(Driver::Systemd, Qos::Guaranteed, Runtime::CriO).spec(ID, Some("coredns"));
        assert_eq!(crio["annotations"]["io.kubernetes.pod.name"], "coredns-7db6d8ff4d-x2x9k");
        assert_eq!(crio["annotations"]["io.kubernetes.container.name"], "coredns");
        assert_eq!(crio["annotations"]["io.kubernetes.cri-o.ContainerType"], "container");
        assert_eq!(spec["linux"]["namespaces"][4]["path"], containerd.netns_path);
    }
}
