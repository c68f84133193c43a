//! Loads the eBPF object and walks the attach ladder ([`super::hooks::HOOKS`]) for each logical hook.
//!
//! Nothing is pinned: every program and map belongs to this process, so the kernel detaches and frees
//! them when it exits, however it exits.

use std::{collections::HashSet, io, path::Path};

use anyhow::{Context as _, Result, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, CgroupSock, CgroupSockAddr, FEntry, FExit, KProbe, ProgramError},
};
use udptrace_common::names;

use super::{
    btf::KernelBtf,
    hooks::{CgroupHook, HOOKS, Hook, Program, Target, Variant},
};
use crate::domain::AttachMode;

/// The programs, built by `build.rs` from `udptrace-ebpf`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/udptrace"));

/// Why a variant did not attach.
#[derive(Debug, Clone)]
pub struct Failure {
    pub mode: AttachMode,
    pub reason: String,
    /// The verifier's log, when the verifier rejected a program (shown under `-v`).
    pub verifier_log: Option<String>,
}

/// What happened to one logical hook.
#[derive(Debug)]
pub struct HookOutcome {
    pub hook: &'static Hook,
    pub attached: Option<AttachMode>,
    /// The modes tried before (or instead of) the one that attached.
    pub failures: Vec<Failure>,
    /// Programs of the attached variant that went in through their fallback, and why.
    pub fallbacks: Vec<String>,
    /// Where the attached variant's programs went in, fallbacks included.
    pub targets: Vec<String>,
}

/// Facts about this kernel that decide which modes can work, gathered once. What they take from the kernel's
/// BTF is kept, not the BTF: a parsed BTF is tens of MiB.
pub struct KernelFacts {
    /// The offsets of the members the programs read.
    pub offsets: udptrace_common::KernelOffsets,
    /// The functions and tracepoints of the attach table this kernel has.
    functions: HashSet<&'static str>,
    tracepoints: HashSet<&'static str>,
    /// aya's view of the BTF, which fentry/fexit programs are loaded against; read on first use.
    aya_btf: std::cell::OnceCell<Result<Btf, String>>,
    /// The cgroup programs' links, made as they attach ([`cgroup_link`]); the session takes them.
    cgroup_links: std::cell::RefCell<Vec<std::os::fd::OwnedFd>>,
    /// `/sys/bus/event_source/devices/kprobe` exists only with CONFIG_KPROBES.
    pub has_kprobes: bool,
    /// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid
    /// hosts), if it is.
    pub cgroup2: Option<std::path::PathBuf>,
    pub release: String,
    /// How many arguments `skb:kfree_skb` passes (2 before 5.17, 3, 4 from 6.11; 0 if it is not there).
    pub kfree_skb_args: u8,
    /// `enum skb_drop_reason` (5.17+): each value's name, lower case without `SKB_DROP_REASON_`.
    pub drop_reasons: std::collections::HashMap<u32, String>,
    /// Where conntrack keeps a connection (`kernel::conntrack`): `None` while its module is not loaded; an
    /// error for a kernel whose entries cannot be read.
    pub conntrack: Result<Option<udptrace_common::ConntrackOffsets>, String>,
}

impl KernelFacts {
    pub fn gather() -> Result<Self> {
        let btf = KernelBtf::load()?;
        let targets = HOOKS
            .iter()
            .flat_map(|hook| hook.variants)
            .flat_map(|variant| variant.programs)
            .flat_map(Program::chain)
            .map(|program| program.target);
        let (mut functions, mut tracepoints) = (HashSet::new(), HashSet::new());
        for target in targets {
            match target {
                Target::FEntry(f) | Target::FExit(f) | Target::Kprobe(f) | Target::Kretprobe(f) => {
                    if btf.has_function(f) {
                        functions.insert(f);
                    }
                }
                Target::Tracepoint { name, .. } => {
                    if btf.has_tracepoint(name) {
                        tracepoints.insert(name);
                    }
                }
                Target::Cgroup(_) => {}
            }
        }
        let drop_reasons = btf
            .enum_values("skb_drop_reason")
            .into_iter()
            .filter_map(|(value, name)| {
                let name = name.strip_prefix("SKB_DROP_REASON_").or_else(|| name.strip_prefix("SKB_"))?;
                Some((u32::try_from(value).ok()?, name.to_ascii_lowercase()))
            })
            .collect();
        let kfree_skb_args = btf.tracepoint_args("kfree_skb").map_or(0, |n| n.min(4) as u8);
        let offsets = btf.kernel_offsets()?;
        // Last: a module's BTF is read on top of vmlinux's, which it consumes.
        let conntrack = super::conntrack::offsets(btf).map_err(|e| crate::errors::one_line(&e));
        Ok(Self {
            kfree_skb_args,
            drop_reasons,
            offsets,
            conntrack,
            functions,
            tracepoints,
            aya_btf: std::cell::OnceCell::new(),
            cgroup_links: std::cell::RefCell::default(),
            has_kprobes: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
            cgroup2: procfs::process::Process::myself()
                .and_then(|p| p.mountinfo())
                .ok()
                .and_then(|mounts| mounts.into_iter().find(|m| m.fs_type == "cgroup2"))
                .map(|m| m.mount_point),
            release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
        })
    }

    /// The cgroup programs' links: the programs stay attached while the caller holds them.
    pub fn take_cgroup_links(&mut self) -> Vec<std::os::fd::OwnedFd> {
        self.cgroup_links.take()
    }

    /// Frees aya's view of the BTF (tens of MiB): once the programs are attached nothing needs it.
    pub fn release_aya_btf(&mut self) {
        self.aya_btf = std::cell::OnceCell::new();
    }

    fn aya_btf(&self) -> Result<&Btf, String> {
        self.aya_btf
            .get_or_init(|| Btf::from_sys_fs().map_err(|e| format!("reading the kernel's BTF: {e}")))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Why `program` cannot attach here, found without loading anything; `None` if it may.
    fn precheck(&self, program: &Program, since: &str) -> Option<String> {
        match program.target {
            Target::Kprobe(_) | Target::Kretprobe(_) if !self.has_kprobes => {
                Some("no kprobes: this kernel was built without CONFIG_KPROBES".to_owned())
            }
            Target::Tracepoint { category, name } => (!self.tracepoints.contains(name))
                .then(|| format!("tracepoint {category}:{name} is absent (needs kernel {since})")),
            Target::Cgroup(_) if self.cgroup2.is_none() => Some("no cgroup v2 hierarchy is mounted here".to_owned()),
            Target::Cgroup(_) => (!super::privileges::may_attach_to_cgroups())
                .then(|| "cgroup programs need CAP_NET_ADMIN, which udptrace does not have".to_owned()),
            // A function missing from BTF is absent, or inlined everywhere: nothing can attach to it.
            Target::FEntry(function)
            | Target::FExit(function)
            | Target::Kprobe(function)
            | Target::Kretprobe(function) => (!self.functions.contains(function))
                .then(|| format!("kernel function {function} is not in this kernel's BTF (absent, or inlined)")),
        }
    }
}

/// aya-log's global in the object: the level of the messages the programs write (0: none).
const AYA_LOG_LEVEL: &str = "AYA_LOG_LEVEL";
/// aya-log's level for warnings (`aya_log_common::Level::Warn`): the programs' failed reads.
const LOG_WARNINGS: u8 = 2;

/// Loads the object with this kernel's structure offsets. Loads no program yet. With `logs`, the programs
/// say what they failed to read ([`program_logs`] reads it); without, they write nothing. `ring_size`: the
/// ring buffer's bytes, where not the object's 1 MiB; `owner_records`: how many sockets' owners the
/// programs record, where not the object's `OWNER_ENTRIES`.
pub fn load_object(
    facts: &KernelFacts,
    config: &udptrace_common::Config,
    logs: bool,
    ring_size: Option<u32>,
    owner_records: Option<u32>,
) -> Result<Ebpf> {
    raise_memlock_limit();
    let level = if logs { LOG_WARNINGS } else { 0 };
    let mut loader = EbpfLoader::new();
    if let Some(bytes) = ring_size {
        loader.map_max_entries(names::EVENTS, bytes);
    }
    if let Some(sockets) = owner_records {
        loader.map_max_entries(names::OWNERS, sockets);
    }
    loader
        // The programs carry no CO-RE relocations (offsets come through OFFSETS): the kernel's BTF, which
        // the loader would parse for them, is not needed here.
        .btf(None)
        .override_global(names::OFFSETS, &facts.offsets, true)
        .override_global(names::CONFIG, config, true)
        .override_global(AYA_LOG_LEVEL, &level, true)
        .load(EBPF_OBJECT)
        .map_err(|e| permission_hint(anyhow::Error::new(e)))
        .context("loading udptrace's eBPF object")
}

/// What the programs log, to stderr.
pub struct ProgramLog;

impl log::Log for ProgramLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        // The programs pad the names they log with NULs to one size (udptrace-ebpf's `report`).
        eprintln!("udptrace: program: {}", record.args().to_string().replace('\0', ""));
    }

    fn flush(&self) {}
}

/// Reads what the programs log (their failed reads, under `-v`), each time it is flushed.
pub fn program_logs(ebpf: &mut Ebpf) -> Result<aya_log::EbpfLogger<ProgramLog>> {
    aya_log::EbpfLogger::init_with_logger(ebpf, ProgramLog).context("reading the programs' log")
}

/// Walks the ladder for every hook: the first of `modes` (of the hook's own, see [`Hook::modes`]) that
/// attaches wins.
pub fn attach_all(ebpf: &mut Ebpf, facts: &KernelFacts, modes: &[AttachMode]) -> Vec<HookOutcome> {
    HOOKS
        .iter()
        .map(|hook| {
            let mut outcome =
                HookOutcome { hook, attached: None, failures: Vec::new(), fallbacks: Vec::new(), targets: Vec::new() };
            for mode in hook.modes(modes) {
                let Some(variant) = hook.variant(mode) else {
                    outcome.failures.push(Failure {
                        mode,
                        reason: format!("udptrace has no {mode} variant of this hook"),
                        verifier_log: None,
                    });
                    continue;
                };
                match attach_variant(ebpf, facts, variant) {
                    Ok((targets, fallbacks)) => {
                        outcome.attached = Some(mode);
                        outcome.targets = targets;
                        outcome.fallbacks = fallbacks;
                        break;
                    }
                    Err(failure) => outcome.failures.push(failure),
                }
            }
            outcome
        })
        .collect()
}

/// Attaches every program of `variant`, each through its fallbacks if it must. Returns where each went in,
/// and the fallbacks taken with the reasons.
fn attach_variant(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    variant: &Variant,
) -> Result<(Vec<String>, Vec<String>), Failure> {
    let (mut targets, mut fallbacks) = (Vec::new(), Vec::new());
    for program in variant.programs {
        let mut attached = checked_attach(ebpf, facts, program, variant.since);
        let mut tried = program;
        let mut reasons = Vec::new();
        let mut first = None;
        while let (Err((reason, _)), Some((fallback, why))) = (&attached, tried.fallback) {
            first.get_or_insert_with(|| reason.clone());
            reasons.push(format!("{why}: {}: {reason}", tried.target));
            attached = checked_attach(ebpf, facts, fallback, variant.since);
            tried = fallback;
        }
        match attached {
            Ok(()) => {
                targets.push(tried.target.to_string());
                if !reasons.is_empty() {
                    let what = if tried.target == program.target {
                        format!("{} instead of {} at {}", tried.name, program.name, tried.target)
                    } else {
                        format!("{} instead of {}", tried.target, program.target)
                    };
                    fallbacks.push(format!("{what} ({})", reasons.join("; ")));
                }
            }
            Err((reason, verifier_log)) => {
                // All or nothing: a half-attached variant would give half the story, and the next mode
                // would report the same events twice.
                unload_variant(ebpf, variant);
                // The program's own target first: a fallback's failure alone would hide why it was tried.
                let reason = match first {
                    None => format!("{}: {reason}", tried.target),
                    Some(first) => format!("{}: {first} (and {}: {reason})", program.target, tried.target),
                };
                return Err(Failure { mode: variant.mode, reason, verifier_log });
            }
        }
    }
    Ok((targets, fallbacks))
}

fn checked_attach(
    ebpf: &mut Ebpf,
    facts: &KernelFacts,
    program: &Program,
    since: &str,
) -> Result<(), (String, Option<String>)> {
    if let Some(reason) = facts.precheck(program, since) {
        return Err((reason, None));
    }
    attach_program(ebpf, facts, program)
}

/// Loads (once) and attaches one program. On failure: a one-line reason and the verifier log if any.
fn attach_program(ebpf: &mut Ebpf, facts: &KernelFacts, program: &Program) -> Result<(), (String, Option<String>)> {
    let Some(prog) = ebpf.program_mut(program.name) else {
        return Err((format!("program {} is missing from the eBPF object", program.name), None));
    };
    let wrong_kind = |e: ProgramError| (e.to_string(), None);
    match program.target {
        Target::FEntry(function) => {
            let fentry: &mut FEntry = prog.try_into().map_err(wrong_kind)?;
            let btf = facts.aya_btf().map_err(|e| (e, None))?;
            load_once(fentry.load(function, btf))?;
            fentry.attach().map_err(describe_trampoline_error)?;
        }
        Target::FExit(function) => {
            let fexit: &mut FExit = prog.try_into().map_err(wrong_kind)?;
            let btf = facts.aya_btf().map_err(|e| (e, None))?;
            load_once(fexit.load(function, btf))?;
            fexit.attach().map_err(describe_trampoline_error)?;
        }
        Target::Kprobe(function) | Target::Kretprobe(function) => {
            let kprobe: &mut KProbe = prog.try_into().map_err(wrong_kind)?;
            load_once(kprobe.load())?;
            kprobe.attach(function, 0).map_err(describe_program_error)?;
        }
        Target::Tracepoint { name, .. } => {
            let tp: &mut BtfTracePoint = prog.try_into().map_err(wrong_kind)?;
            let btf = facts.aya_btf().map_err(|e| (e, None))?;
            load_once(tp.load(name, btf))?;
            tp.attach().map_err(describe_program_error)?;
        }
        Target::Cgroup(hook) => {
            let root = facts.cgroup2.as_deref().ok_or(("no cgroup v2 hierarchy".to_owned(), None))?;
            let cgroup = std::fs::File::open(root).map_err(|e| (format!("opening {}: {e}", root.display()), None))?;
            // A bpf link (5.7+): beside the programs others attached, and detached by the kernel when udptrace
            // exits. Made here, not by aya, which falls back to BPF_PROG_ATTACH (an attachment that outlives a
            // SIGKILL) where it cannot parse the kernel's version: the kernel's answer decides, and a kernel
            // without links for cgroups is refused.
            use std::os::fd::AsFd as _;
            let fd = match hook {
                CgroupHook::SockCreate | CgroupHook::SockRelease => {
                    let sock: &mut CgroupSock = prog.try_into().map_err(wrong_kind)?;
                    load_once(sock.load())?;
                    sock.fd().map_err(describe_program_error)?.as_fd().try_clone_to_owned()
                }
                CgroupHook::Connect4 | CgroupHook::Connect6 => {
                    let addr: &mut CgroupSockAddr = prog.try_into().map_err(wrong_kind)?;
                    load_once(addr.load())?;
                    addr.fd().map_err(describe_program_error)?.as_fd().try_clone_to_owned()
                }
            };
            let fd = fd.map_err(|e| (format!("duplicating the program's descriptor: {e}"), None))?;
            let link = cgroup_link(&fd, &cgroup, hook.attach_type()).map_err(|e| {
                (format!("bpf link for the cgroup: {e} (udptrace attaches cgroup programs only by link, 5.7+)"), None)
            })?;
            facts.cgroup_links.borrow_mut().push(link);
        }
    }
    Ok(())
}

/// `BPF_LINK_CREATE` (include/uapi/linux/bpf.h `enum bpf_cmd`).
const BPF_LINK_CREATE: libc::c_long = 28;

/// The leading members of `union bpf_attr`'s `link_create` (include/uapi/linux/bpf.h, 5.7): the kernel zeroes
/// the rest of the union.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// Links `program` to `cgroup` for `attach_type`: the program stays attached while the link's descriptor is
/// open, and the kernel detaches it when the last holder of that descriptor exits, however it exits.
fn cgroup_link(
    program: &impl std::os::fd::AsFd,
    cgroup: &impl std::os::fd::AsFd,
    attach_type: u32,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let attr = LinkCreate {
        prog_fd: program.as_fd().as_raw_fd() as u32,
        target_fd: cgroup.as_fd().as_raw_fd() as u32,
        attach_type,
        flags: 0,
    };
    // SAFETY: the bpf syscall reads `size_of::<LinkCreate>()` bytes of `attr`, which lives across the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, &raw const attr, size_of::<LinkCreate>() as u32) };
    match i32::try_from(fd) {
        // SAFETY: a descriptor the kernel just returned, owned by nobody else.
        Ok(fd) if fd >= 0 => Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// A program shared by two targets is loaded for the first and only attached for the second.
fn load_once(result: Result<(), ProgramError>) -> Result<(), (String, Option<String>)> {
    match result {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(()),
        Err(e) => Err(describe_program_error(e)),
    }
}

/// Detaches and unloads every program of `variant` (those never loaded are left as they are).
fn unload_variant(ebpf: &mut Ebpf, variant: &Variant) {
    use aya::programs::Program as P;
    for program in variant.programs.iter().flat_map(Program::chain) {
        let _ = match ebpf.program_mut(program.name) {
            Some(P::FEntry(p)) => p.unload(),
            Some(P::FExit(p)) => p.unload(),
            Some(P::KProbe(p)) => p.unload(),
            Some(P::BtfTracePoint(p)) => p.unload(),
            Some(P::CgroupSock(p)) => p.unload(),
            Some(P::CgroupSockAddr(p)) => p.unload(),
            _ => Ok(()),
        };
    }
}

/// The kernel's internal `ENOTSUPP` (include/linux/errno.h), which no C library names.
const ENOTSUPP: i32 = 524;

/// An fentry or fexit attach that failed. ENOTSUPP is the kernel saying it cannot put a BPF trampoline on
/// this function: `register_fentry()` without ftrace direct calls (kernel/bpf/trampoline.c; arm64 before 6.4)
/// or an architecture's trampoline refusing the function's arguments (`arch_prepare_bpf_trampoline`: over six
/// on x86_64 before 6.5, over eight on arm64 before 6.16).
fn describe_trampoline_error(error: ProgramError) -> (String, Option<String>) {
    match &error {
        ProgramError::SyscallError(aya::sys::SyscallError { call, io_error })
            if io_error.raw_os_error() == Some(ENOTSUPP) =>
        {
            (
                format!(
                    "`{call}` failed with ENOTSUPP (524): this kernel cannot put a BPF trampoline on this function \
                     (arm64 before 6.4 has none for kernel functions; x86_64 before 6.5 takes at most six arguments)"
                ),
                None,
            )
        }
        _ => describe_program_error(error),
    }
}

fn describe_program_error(error: ProgramError) -> (String, Option<String>) {
    match error {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let reason = match io_error.raw_os_error() {
                // SAFETY: no arguments.
                Some(libc::EPERM) if unsafe { libc::geteuid() } == 0 => {
                    "the kernel refused to load it (EPERM) although udptrace runs as root: kernel lockdown or a \
                     security module forbids this program type here"
                        .to_owned()
                }
                Some(libc::EPERM) => "the kernel refused to load it (EPERM): udptrace needs CAP_BPF and \
                                      CAP_PERFMON, and CAP_NET_ADMIN for cgroup programs (run it as root)"
                    .to_owned(),
                _ if !log.trim().is_empty() => format!("the verifier rejected it ({io_error})"),
                _ => format!("loading failed: {io_error}"),
            };
            (reason, Some(log).filter(|l| !l.trim().is_empty()))
        }
        other => (crate::errors::one_line(&anyhow::Error::new(other)), None),
    }
}

/// Turns a permission error into what the user should do.
fn permission_hint(error: anyhow::Error) -> anyhow::Error {
    let denied = error.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(|e| matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)))
            || cause.to_string().contains("Operation not permitted")
    });
    if denied { error.context("udptrace needs CAP_BPF and CAP_PERFMON (run it as root)") } else { error }
}

/// Kernels before 5.11 charge BPF maps against RLIMIT_MEMLOCK; later ones ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit with a valid pointer; failure only matters on old kernels, where map creation
    // then reports it.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// The whole attach result as an error when no hook that reports events attached in the modes asked for
/// (said as `what`: `--probe fentry`). A hook that attaches whatever the mode (the cgroup program that
/// records owners) reports nothing by itself and does not count.
pub fn require_attached(outcomes: &[HookOutcome], what: &str) -> Result<()> {
    if outcomes.iter().any(|o| o.attached.is_some_and(|mode| mode != AttachMode::Cgroup)) {
        return Ok(());
    }
    let reasons: Vec<String> = outcomes
        .iter()
        .filter(|o| o.attached.is_none())
        .flat_map(|o| o.failures.iter().map(move |f| format!("{} ({}): {}", o.hook.name, f.mode, f.reason)))
        .collect();
    bail!("no hook could attach in {what}: {}", reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn a_trampoline_the_kernel_cannot_put_says_so_instead_of_an_unnamed_error() {
        let failed = |code| {
            ProgramError::SyscallError(aya::sys::SyscallError {
                call: "bpf_raw_tracepoint_open",
                io_error: io::Error::from_raw_os_error(code),
            })
        };
        let (reason, log) = describe_trampoline_error(failed(ENOTSUPP));
        assert!(reason.starts_with("`bpf_raw_tracepoint_open` failed with ENOTSUPP (524): this kernel cannot"));
        assert!(log.is_none());
        let (reason, _) = describe_trampoline_error(failed(libc::EBUSY));
        assert!(reason.contains("os error 16") && !reason.contains("ENOTSUPP"), "{reason}");
    }

    /// The owner hook attaches whatever the mode; alone it traces nothing, so a forced mode in which no other
    /// hook attaches is still an error.

    #[test]
    fn the_link_command_is_the_kernels() {
        assert_eq!(BPF_LINK_CREATE, aya_obj::generated::bpf_cmd::BPF_LINK_CREATE as libc::c_long);
    }
    #[test]
    fn the_owner_hook_alone_is_not_tracing() {
        let outcome = |name: &str, attached| HookOutcome {
            hook: HOOKS.iter().find(|h| h.name == name).expect("a hook of the table"),
            attached,
            failures: vec![Failure { mode: AttachMode::FEntry, reason: "refused".to_owned(), verifier_log: None }],
            fallbacks: Vec::new(),
            targets: Vec::new(),
        };
        let owner_only = [outcome("socket_owner", Some(AttachMode::Cgroup)), outcome("socket_error", None)];
        let error = require_attached(&owner_only, "--probe fentry").unwrap_err().to_string();
        assert!(error.starts_with("no hook could attach in --probe fentry: socket_error (fentry): refused"), "{error}");
        let traced =
            [outcome("socket_owner", Some(AttachMode::Cgroup)), outcome("socket_error", Some(AttachMode::FEntry))];
        assert!(require_attached(&traced, "--probe fentry").is_ok());
    }

    /// Every program the attach table names is in the object the build embedded, and every program in
    /// the object is in the table: a renamed or forgotten program fails here, not on a user's kernel.
    #[test]
    fn the_object_holds_exactly_the_programs_of_the_attach_table() {
        let object = aya_obj::Object::parse(EBPF_OBJECT).expect("the embedded eBPF object parses");
        let in_object: BTreeSet<&str> = object.programs.keys().map(String::as_str).collect();
        let in_table: BTreeSet<&str> = HOOKS
            .iter()
            .flat_map(|hook| hook.variants)
            .flat_map(|variant| variant.programs)
            .flat_map(|program| program.chain().map(|p| p.name))
            .collect();
        assert_eq!(in_object, in_table);
        // And the maps and globals user space opens by name.
        for name in names::MAPS {
            assert!(object.maps.contains_key(*name), "map {name} is not in the object: {:?}", object.maps.keys());
        }
        use object::{Object as _, ObjectSymbol as _};
        let elf = object::File::parse(EBPF_OBJECT).expect("the embedded eBPF object is ELF");
        let symbols: Vec<&str> = elf.symbols().filter_map(|s| s.name().ok()).collect();
        for global in [names::OFFSETS, names::CONFIG] {
            assert!(symbols.contains(&global), "global {global} is not in the object");
        }
    }
}
