//! Who owns a socket: the process that created it (or connected it), recorded by the `owner` programs and
//! carried in the records about the socket.

pub const TASK_COMM_LEN: usize = 16;

/// How many open sockets' owners the programs record (`OWNERS`).
pub const OWNER_ENTRIES: u32 = 65_536;

/// [`Owner::flags`].
pub mod owner_flags {
    /// `comm` holds the process's name (its thread group leader's); without it the leader's name could not be
    /// read and `comm` is zeros.
    pub const PROCESS_NAMED: u8 = 1 << 0;
}

/// The process that owns a socket: the one that created it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub tid: u32,
    /// `bpf_get_current_cgroup_id()`: the cgroup v2 id (the inode of its directory).
    pub cgroup_id: u64,
    /// The process's name: its thread group leader's `comm` (what `/proc/PID/comm` and `ps` show), if
    /// [`owner_flags::PROCESS_NAMED`].
    pub comm: [u8; TASK_COMM_LEN],
    /// The name of the thread that created or connected the socket (`bpf_get_current_comm()`): a runtime's
    /// or a library's worker (`isc-net-0000`), the same as `comm` for the main thread.
    pub thread: [u8; TASK_COMM_LEN],
    pub flags: u8,
    pub _pad0: [u8; 7],
}

// SAFETY: plain `#[repr(C)]` integers and arrays with explicit padding; every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Owner {}

/// No implicit padding: the size is the sum of the fields.
const _: () = assert!(size_of::<Owner>() == 16 + 2 * TASK_COMM_LEN + 8);
