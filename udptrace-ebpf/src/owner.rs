//! Who owns a socket. ICMP errors are processed in softirq context, where the current task is whoever was
//! interrupted; the owner is recorded instead where the process itself runs: when it creates the socket,
//! and again when a process connects it. Nothing here runs per datagram.
//!
//! Cgroup programs, attached to the root of the cgroup v2 hierarchy beside any others, run for every
//! process in every cgroup: `cgroup/sock_create` in `socket()`, `cgroup/connect4` and `cgroup/connect6` in
//! `connect()` (before the kernel connects: a connect that then fails still counts), `cgroup/sock_release`
//! when the socket is closed for good. They record the process by the socket's cookie, which asking for it
//! fixes in `sk->__sk_common.skc_cookie`; the error path reads the cookie back from the `struct sock` and
//! looks the record up. A socket handed to another process (fork, SCM_RIGHTS) keeps the process that
//! created or last connected it. The event also carries the socket's inode number to user space, which
//! looks up sockets created before udptrace started in `/proc/PID/fd`.
//!
//! The record names the process and the thread apart: `bpf_get_current_comm()` is the thread's name, which
//! for a worker thread is whatever its runtime or library called it (dig's `isc-net-0000`); the process's
//! name is its thread group leader's, read through `current->group_leader` (`bpf_get_current_task()` and
//! `bpf_probe_read_kernel()`, offered to cgroup sock and sock_addr programs by `bpf_base_func_proto` to a
//! CAP_PERFMON loader since 5.8: net/core/filter.c `sock_filter_func_proto`, `sock_addr_func_proto` via
//! `bpf_sk_base_func_proto`, kernel/bpf/helpers.c; `bpf_probe_read_kernel_str()` as well). The leader's
//! `comm` is read without its task lock, as `bpf_get_current_comm()` reads the thread's: a rename at that
//! very moment may read half done.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_socket_cookie, generated::bpf_probe_read_kernel_str,
    },
    macros::{cgroup_sock, cgroup_sock_addr, map},
    maps::HashMap,
    programs::{SockAddrContext, SockContext},
};
use udptrace_common::{
    AF_INET, AF_INET6, IPPROTO_UDP, IPPROTO_UDPLITE, OWNER_ENTRIES, Owner, SocketError, TASK_COMM_LEN, owner_flags,
    socket_error_flags, stat,
};

use crate::{
    kernel::{ReadError, ReadResult, copy, offset, offsets, read},
    output::count,
};

/// Sockets' creators (or last connectors), by socket cookie; a record goes with its socket. The map is this
/// udptrace's own, so it holds only sockets created or connected since it attached, each until its close:
/// it fills only when more than [`OWNER_ENTRIES`] of those are open at once. Then a new record is refused
/// and counted (`stat::OWNER_NOT_RECORDED`), never one of an open socket pushed out, as an LRU map would
/// do without a word.
#[map]
static OWNERS: HashMap<u64, Owner> = HashMap::with_max_entries(OWNER_ENTRIES, 0);

/// `socket()` of any family and type, in the creating process, after the socket is set up
/// (`inet_create` / `inet6_create`, for user sockets only). Records the creator of a UDP socket.
#[cgroup_sock(sock_create)]
pub fn cgroup_sock_create(ctx: SockContext) -> i32 {
    record_creator(&ctx);
    // 1 lets the socket be created; 0 would make socket() fail with EPERM.
    1
}

/// The last close of a socket (`inet_release`). Its record goes with it.
#[cgroup_sock(sock_release)]
pub fn cgroup_sock_release(ctx: SockContext) -> i32 {
    if is_udp(&ctx) {
        // SAFETY: the helper takes this program's context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
        let _ = OWNERS.remove(&cookie);
    }
    1
}

/// `connect()` on an IPv4 socket (`__inet_stream_connect` / `inet_dgram_connect`), before the kernel
/// connects it. The connecting process becomes the socket's owner.
#[cgroup_sock_addr(connect4)]
pub fn cgroup_connect4(ctx: SockAddrContext) -> i32 {
    record_connector(&ctx);
    // 1 lets the connect go ahead.
    1
}

/// `connect()` on an IPv6 socket.
#[cgroup_sock_addr(connect6)]
pub fn cgroup_connect6(ctx: SockAddrContext) -> i32 {
    record_connector(&ctx);
    1
}

#[inline(always)]
fn is_udp(ctx: &SockContext) -> bool {
    // SAFETY: the kernel hands the program its `struct bpf_sock`, whose fields it may read.
    let (family, protocol) = unsafe { ((*ctx.sock).family, (*ctx.sock).protocol) };
    is_inet_udp(family, protocol)
}

#[inline(always)]
fn is_inet_udp(family: u32, protocol: u32) -> bool {
    let udp = protocol == u32::from(IPPROTO_UDP) || protocol == u32::from(IPPROTO_UDPLITE);
    udp && (family == u32::from(AF_INET) || family == u32::from(AF_INET6))
}

#[inline(always)]
fn record_connector(ctx: &SockAddrContext) {
    // SAFETY: the kernel hands the program its `struct bpf_sock_addr`, whose fields it may read.
    let (family, protocol) = unsafe { ((*ctx.sock_addr).family, (*ctx.sock_addr).protocol) };
    if !is_inet_udp(family, protocol) {
        return;
    }
    // SAFETY: the helper takes this program's context.
    record(unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) });
}

#[inline(always)]
fn record_creator(ctx: &SockContext) {
    if !is_udp(ctx) {
        return;
    }
    // SAFETY: the helper takes this program's context.
    record(unsafe { bpf_get_socket_cookie(ctx.sock.cast()) });
}

/// Records the current process as the owner of the socket with `cookie`.
#[inline(always)]
fn record(cookie: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let thread = bpf_get_current_comm().unwrap_or_default();
    let mut owner = Owner {
        pid,
        tid,
        // SAFETY: a helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        // The thread group leader is the thread whose id is the process's: then its name is the process's.
        comm: thread,
        thread,
        flags: owner_flags::PROCESS_NAMED,
        _pad0: [0; 7],
    };
    if pid != tid && leader_comm(&mut owner.comm).is_err() {
        // Not the thread's name in its place: comm says the process's name or nothing.
        owner.comm = [0; TASK_COMM_LEN];
        owner.flags = 0;
    }
    // A preallocated hash map replaces an existing key's value through the CPU's spare element
    // (`alloc_htab_elem`, kernel/bpf/hashtab.c, 5.10 to 7.3), not a free one: only a new socket can find
    // the map full.
    if OWNERS.insert(&cookie, &owner, 0).is_err() {
        count(stat::OWNER_NOT_RECORDED);
    }
}

/// Reads the current thread's process's name (`current->group_leader->comm`) into `comm`. The leader's
/// `task_struct` outlives every thread of its group (a leader that exits before them stays a zombie until
/// the last one goes: kernel/exit.c `release_task`), so the pointer is good while the current thread runs.
///
/// Up to its NUL, the rest zeros, as `bpf_get_current_comm()` gives the thread's: `--comm` compares all 16
/// bytes. A rename on older kernels does not clear what follows the new name's NUL (`__set_task_comm` is
/// `strlcpy`, fs/exec.c, 5.10; `strscpy_pad` later), so a process renamed from a longer name keeps that
/// name's tail in the array.
#[inline(always)]
fn leader_comm(comm: &mut [u8; TASK_COMM_LEN]) -> ReadResult<()> {
    // SAFETY: a helper without arguments; the task is only read through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let leader = read::<*const u8>(task, offset!(task_group_leader), "task_struct.group_leader")?;
    let name = leader.wrapping_add(offset!(task_comm) as usize);
    *comm = [0; TASK_COMM_LEN];
    // SAFETY: the helper writes at most `TASK_COMM_LEN` bytes into `comm` and checks the kernel address.
    let copied = unsafe { bpf_probe_read_kernel_str(comm.as_mut_ptr().cast(), TASK_COMM_LEN as u32, name.cast()) };
    if copied < 0 {
        return Err(ReadError { what: "task_struct.comm", code: copied });
    }
    Ok(())
}

/// The inode number of the socket `sk` belongs to (what `/proc/PID/fd` shows as `socket:[N]`); 0 for a
/// sock without a socket.
#[inline(always)]
fn socket_inode(sk: *const u8) -> ReadResult<u64> {
    let off = offsets();
    let socket = read::<*const u8>(sk, off.sk_socket, "sock.sk_socket")?;
    if socket.is_null() {
        return Ok(0);
    }
    read::<u64>(socket.wrapping_add(off.socket_to_inode as usize), off.inode_ino, "inode.i_ino")
}

/// Writes the socket's inode and, when its creation was seen, its owner (then `true`) into the record.
#[inline(always)]
pub fn socket_owner(sk: *const u8, ino: &mut u64, owner: &mut Owner) -> ReadResult<bool> {
    *ino = socket_inode(sk)?;
    let cookie = read::<u64>(sk, offsets().sk_cookie, "sock.__sk_common.skc_cookie")?;
    if cookie == 0 {
        // Nothing asked for the cookie: the socket was created before udptrace started.
        return Ok(false);
    }
    // SAFETY: a map lookup; the value is copied out.
    match unsafe { OWNERS.get(&cookie) } {
        Some(recorded) => {
            copy(owner, recorded);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Fills `event`'s socket inode and, when its creation was seen, its owner.
#[inline(always)]
pub fn fill_owner(sk: *const u8, event: &mut SocketError) -> ReadResult<()> {
    if socket_owner(sk, &mut event.sock_ino, &mut event.owner)? {
        event.flags |= socket_error_flags::OWNER_KNOWN;
    }
    Ok(())
}
