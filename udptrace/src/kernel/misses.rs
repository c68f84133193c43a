//! Runs of udptrace's programs that the kernel skipped.
//!
//! The kernel runs no kprobe program on a CPU where another BPF program of the kind, or a BPF syscall on a map
//! (`bpf_disable_instrumentation()`, kernel/bpf/syscall.c), is under way: a softirq that an interrupt starts
//! inside that window runs whole without the programs, and its ICMP error is never seen. fentry and raw
//! tracepoint programs skip only when they recur on one CPU. The kernel counts each skipped run in the
//! program's `recursion_misses` (5.12, `struct bpf_prog_info`), which udptrace reports as lost.
//!
//! Only the programs that open an event are counted: a window covers a whole softirq, so the other programs
//! of the same error skip with them, and one error would be counted several times.
//!
//! Where the tracer goes through the privileged helper for its map calls (`maps::go_through`), it reads these
//! there too: `BPF_OBJ_GET_INFO_BY_FD` needs CAP_BPF where a map call does.

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};

use aya::Ebpf;

use super::maps;

/// The programs that open an event: an ICMP error's entry into UDP, an ICMP error being sent, and the
/// tracepoints, which are an event each. A skipped `tp_kfree_skb` may have been the drop of any packet,
/// not only a UDP datagram: it is counted lost all the same, as what udptrace could not see.
const OPENERS: &[&str] = &[
    "fentry_udp4_lib_err",
    "fentry_udp_err",
    "fentry_udp6_lib_err",
    "fentry_udpv6_err",
    "fentry_icmpv6_notify",
    "kprobe_udp4_lib_err",
    "kprobe_udp6_lib_err",
    "tp_inet_sk_error_report",
    "fentry_icmp_send",
    "fentry_icmp6_send",
    "kprobe_icmp_send",
    "kprobe_icmp6_send",
    "tp_icmp_send",
    "tp_kfree_skb",
];

/// Where `recursion_misses` lies in `struct bpf_prog_info` (after `run_time_ns` and `run_cnt`, 5.12+).
const RECURSION_MISSES_AT: usize = 208;

/// The loaded programs that open events, to read their skipped runs from.
pub struct Misses {
    programs: Vec<OwnedFd>,
}

impl Misses {
    pub fn new(ebpf: &Ebpf) -> Misses {
        let programs = ebpf
            .programs()
            .filter(|(name, _)| OPENERS.contains(name))
            .filter_map(|(_, program)| program.fd().ok()?.as_fd().try_clone_to_owned().ok())
            .collect();
        Misses { programs }
    }

    /// The programs' descriptors, which the privileged helper keeps open before 5.19.
    pub fn raw_fds(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        self.programs.iter().map(std::os::fd::AsRawFd::as_raw_fd)
    }

    /// The same programs, by descriptors of their own.
    pub fn try_clone(&self) -> std::io::Result<Misses> {
        let programs = self.programs.iter().map(OwnedFd::try_clone).collect::<std::io::Result<_>>()?;
        Ok(Misses { programs })
    }

    /// The runs the kernel skipped so far, summed over the programs (0 where the kernel does not say, and
    /// where the helper does not answer, which its client reports).
    pub fn total(&self) -> u64 {
        match maps::remote() {
            Some(remote) => remote.program_misses().unwrap_or(0),
            None => self.direct(),
        }
    }

    /// [`Misses::total`] read with this process's own descriptors: what the helper runs for a request.
    pub fn direct(&self) -> u64 {
        self.programs.iter().filter_map(recursion_misses).sum()
    }
}

/// A program's `recursion_misses`; `None` where the kernel's `struct bpf_prog_info` ends before it.
fn recursion_misses(program: &OwnedFd) -> Option<u64> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = [0u8; 256];
    let mut attr =
        InfoAttr { bpf_fd: program.as_raw_fd() as u32, info_len: info.len() as u32, info: info.as_mut_ptr() as u64 };
    // SAFETY: the attribute names a buffer of `info_len` bytes that lives across the call; the kernel writes
    // at most that many and sets `info_len` to what it wrote.
    let ret = unsafe { maps::bpf(maps::BPF_OBJ_GET_INFO_BY_FD, &mut attr) };
    if ret.is_err() || (attr.info_len as usize) < RECURSION_MISSES_AT + 8 {
        return None;
    }
    Some(u64::from_ne_bytes(info[RECURSION_MISSES_AT..RECURSION_MISSES_AT + 8].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offset is the kernel's, as aya's bindings of `struct bpf_prog_info` place it.
    #[test]
    fn recursion_misses_is_where_the_kernel_writes_it() {
        assert_eq!(std::mem::offset_of!(aya_obj::generated::bpf_prog_info, recursion_misses), RECURSION_MISSES_AT);
    }

    /// Every program named here is one of the attach table's.
    #[test]
    fn the_openers_are_programs_of_the_table() {
        let names: Vec<&str> = crate::kernel::hooks::HOOKS
            .iter()
            .flat_map(|h| h.variants)
            .flat_map(|v| v.programs.iter())
            .flat_map(crate::kernel::hooks::Program::chain)
            .map(|p| p.name)
            .collect();
        for opener in OPENERS {
            assert!(names.contains(opener), "{opener}");
        }
    }
}
