//! The maps the programs and user space share: their names, the counters' indexes, and the buffer records
//! go through.

/// The names user space finds the programs' maps and globals by: the statics of `udptrace-ebpf` carry these
/// names (a unit test of `udptrace` checks the object against them).
pub mod names {
    /// The BPF ring buffer (`--buffer ring`).
    pub const EVENTS: &str = "EVENTS";
    /// The per-CPU perf buffers (`--buffer perf`).
    pub const PERF_EVENTS: &str = "PERF_EVENTS";
    /// Per-CPU counters, indexed by [`stat`](crate::stat).
    pub const STATS: &str = "STATS";
    /// Sockets' creators, by socket cookie.
    pub const OWNERS: &str = "OWNERS";
    /// The read-only global of [`KernelOffsets`](crate::KernelOffsets).
    pub const OFFSETS: &str = "OFFSETS";
    /// One [`ConntrackOffsets`](crate::ConntrackOffsets), written when the `nf_conntrack` module's BTF is
    /// there.
    pub const CONNTRACK: &str = "CONNTRACK";
    /// The read-only global of [`Config`](crate::Config).
    pub const CONFIG: &str = "CONFIG";
    /// Whether the programs count records in the kernel, and in which generation ([`tally`](crate::tally)).
    pub const TALLY: &str = "TALLY";
    /// The counted records, two generations per record type: `[generation 0, generation 1]`.
    pub const SOCKET_ERROR_TALLIES: [&str; 2] = ["SOCKET_ERRORS_0", "SOCKET_ERRORS_1"];
    pub const ICMP_SENT_TALLIES: [&str; 2] = ["ICMP_SENT_0", "ICMP_SENT_1"];
    /// What user space tells the drop program while it runs, indexed by
    /// [`drops::EPOCH`](crate::drops::EPOCH) and [`drops::ICMP_AT_DROP`](crate::drops::ICMP_AT_DROP).
    pub const DROP_CONTROL: &str = "DROP_CONTROL";
    pub const DROP_TALLIES: [&str; 2] = ["UDP_DROPS_0", "UDP_DROPS_1"];
    /// The last record each CPU counted, per generation, with its count ([`Pending`](crate::Pending)).
    pub const ICMP_SENT_PENDING: &str = "ICMP_SENT_PENDING";
    /// Per nesting level and generation: index `level * 2 + generation`.
    pub const DROP_PENDING: &str = "UDP_DROPS_PENDING";
    /// One value, set to 1 when udptrace stops: the programs then count a record lost instead of handing
    /// it over, so that the buffer's last records can be drained to the end.
    pub const OUTPUT_STOPPED: &str = "OUTPUT_STOPPED";
    /// Every map user space opens by name.
    pub const MAPS: &[&str] = &[
        EVENTS,
        PERF_EVENTS,
        STATS,
        OWNERS,
        TALLY,
        SOCKET_ERROR_TALLIES[0],
        SOCKET_ERROR_TALLIES[1],
        ICMP_SENT_TALLIES[0],
        ICMP_SENT_TALLIES[1],
        DROP_CONTROL,
        DROP_TALLIES[0],
        DROP_TALLIES[1],
        ICMP_SENT_PENDING,
        DROP_PENDING,
        OUTPUT_STOPPED,
        CONNTRACK,
    ];
}

/// Indexes of the per-CPU `STATS` counters.
pub mod stat {
    /// The buffer was full: an event was lost.
    pub const LOST: u32 = 0;
    /// A kernel read failed: the event could not be built.
    pub const READ_ERROR: u32 = 1;
    /// The filter options dropped an event.
    pub const FILTERED: u32 = 2;
    /// A socket's creator or connector was not recorded: [`OWNER_ENTRIES`](crate::OWNER_ENTRIES) sockets
    /// were recorded and open.
    pub const OWNER_NOT_RECORDED: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Where records go.
pub mod buffer {
    /// The BPF ring buffer (`EVENTS`, 5.8+): one buffer shared by every CPU, records in order.
    pub const RING: u8 = 0;
    /// The per-CPU perf event array (`PERF_EVENTS`).
    pub const PERF: u8 = 1;
}
