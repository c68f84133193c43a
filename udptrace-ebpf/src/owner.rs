//! Who owns a socket. ICMP errors are processed in softirq context, where the current task is whoever was
//! interrupted; the owner is recorded instead where the process itself runs: when it sends.
//!
//! The record is keyed by the socket's inode number (`sk->sk_socket->file->f_inode->i_ino`), which
//! `/proc/PID/fd` also shows, so user space can resolve sockets no send was seen for. A map keyed this way
//! works from every mode; socket-local storage (`BPF_MAP_TYPE_SK_STORAGE`) would need BTF-typed socket
//! pointers, which kprobes and plain raw tracepoints do not have.
//!
//! On the send path the common case costs one map lookup: the record is only written when another task
//! sends on the socket than last time.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{fentry, kprobe, map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::{FEntryContext, ProbeContext, RawTracePointContext},
};
use udptrace_common::{AF_INET, AF_INET6, IPPROTO_UDP, IPPROTO_UDPLITE, Owner, SocketError, socket_error_flags};

use crate::{
    kernel::{Args, ReadResult, offsets, read, slot},
    report,
};

/// Sockets' last senders, by socket inode. LRU: the oldest records go first when it is full.
#[map]
static OWNERS: LruHashMap<u64, Owner> = LruHashMap::with_max_entries(65536, 0);

/// The last (socket, task) this CPU recorded: a task sending again on the socket it sent on last, the common
/// case on a busy socket, skips the protocol checks. The inode is read again all the same (a new socket at a
/// freed one's address has a new inode), and the record is looked up (another process may have sent on the
/// socket meanwhile, from another CPU).
#[repr(C)]
pub struct LastSender {
    sk: u64,
    pid_tgid: u64,
}

#[map]
static LAST_SENDER: PerCpuArray<LastSender> = PerCpuArray::with_max_entries(1, 0);

/// The inode number of the socket `sk` belongs to (what `/proc/PID/fd` shows as `socket:[N]`); 0 for a
/// sock without a socket.
#[inline(always)]
pub fn socket_inode(sk: *const u8) -> ReadResult<u64> {
    let off = offsets();
    let socket = read::<*const u8>(sk, off.sk_socket, "sock.sk_socket")?;
    if socket.is_null() {
        return Ok(0);
    }
    read::<u64>(socket.wrapping_add(off.socket_to_inode as usize), off.inode_ino, "inode.i_ino")
}

/// Records the current task as the owner of the socket the send (argument 0, a `struct sock *`) is on, if
/// it is a UDP socket and the task changed.
#[inline(always)]
fn record_sender<C: Args>(ctx: &C) -> ReadResult<()> {
    let sk: *const u8 = ctx.get(0)?;
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // A send hook does not nest on one CPU.
    let last = slot(&LAST_SENDER);
    let sent_here_last = last.as_ref().is_some_and(|last| last.sk == sk as u64 && last.pid_tgid == pid_tgid);
    if !sent_here_last {
        let off = offsets();
        let protocol = read::<u16>(sk, off.sk_protocol, "sock.sk_protocol")?;
        if protocol != IPPROTO_UDP as u16 && protocol != IPPROTO_UDPLITE as u16 {
            return Ok(());
        }
        let family = read::<u16>(sk, off.sk_family, "sock.__sk_common.skc_family")?;
        if family != AF_INET && family != AF_INET6 {
            return Ok(());
        }
    }
    let ino = socket_inode(sk)?;
    if ino == 0 {
        return Ok(());
    }
    if let Some(last) = last {
        *last = LastSender { sk: sk as u64, pid_tgid };
    }
    // SAFETY: a map lookup; the value is only read.
    if let Some(known) = unsafe { OWNERS.get(&ino) }
        && known.pid == pid
        && known.tid == tid
    {
        return Ok(());
    }
    let owner = Owner {
        pid,
        tid,
        // SAFETY: a helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    };
    let _ = OWNERS.insert(&ino, &owner, 0);
    Ok(())
}

/// Fills `event`'s socket inode and, when a send was seen on the socket, its owner.
#[inline(always)]
pub fn fill_owner(sk: *const u8, event: &mut SocketError) -> ReadResult<()> {
    let ino = socket_inode(sk)?;
    event.sock_ino = ino;
    if ino == 0 {
        return Ok(());
    }
    // SAFETY: a map lookup; the value is copied out.
    if let Some(owner) = unsafe { OWNERS.get(&ino) } {
        event.owner = *owner;
        event.flags |= socket_error_flags::OWNER_KNOWN;
    }
    Ok(())
}

/// `int udp_sendmsg(struct sock *sk, struct msghdr *msg, size_t len)`.
#[fentry(function = "udp_sendmsg")]
pub fn fentry_udp_sendmsg(ctx: FEntryContext) -> u32 {
    report(&ctx, "fentry_udp_sendmsg", record_sender(&ctx))
}

/// `int udpv6_sendmsg(struct sock *sk, struct msghdr *msg, size_t len)`.
#[fentry(function = "udpv6_sendmsg")]
pub fn fentry_udpv6_sendmsg(ctx: FEntryContext) -> u32 {
    report(&ctx, "fentry_udpv6_sendmsg", record_sender(&ctx))
}

/// Both `udp_sendmsg` and `udpv6_sendmsg`.
#[kprobe]
pub fn kprobe_udp_sendmsg(ctx: ProbeContext) -> u32 {
    report(&ctx, "kprobe_udp_sendmsg", record_sender(&ctx))
}

/// `sock:sock_send_length` (6.3+): `TP_PROTO(struct sock *sk, int ret, int flags)`, in the sending
/// process, for every socket type (filtered to UDP above).
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn tp_sock_send_length(ctx: RawTracePointContext) -> i32 {
    report(&ctx, "tp_sock_send_length", record_sender(&ctx)) as i32
}
