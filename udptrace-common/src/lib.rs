//! The records udptrace's eBPF programs hand to user space, and the kernel layout facts user space hands
//! to the programs. Plain `#[repr(C)]` data with explicit padding: no pointers, no enums, no implicit holes,
//! so that both sides agree on every byte whatever the compiler does.
//!
//! Each record has a module named after its kind, as its program in `udptrace-ebpf` is (`record/`), with its
//! flags, its `aya::Pod` impl (feature `user`) and a compile-time check of its size beside it. Everything is
//! re-exported here: user space and the programs name it `udptrace_common::X` wherever it lives; a new record
//! is reached as `udptrace_common::record::NAME::X`, its kind number (`KIND`) beside it.
#![no_std]

mod config;
mod filter;
mod maps;
mod net;
mod offsets;
pub mod record;
pub mod tally;

pub use config::{Config, NOT_ICMP_REPORTERS, TextRange};
pub use filter::{AddrFilter, FILTER_VALUES, Filter, IcmpMask};
pub use maps::{buffer, names, stat};
pub use net::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, icmp, icmpv6};
pub use offsets::{KernelOffsets, RECVERR_UNKNOWN};
pub use record::{
    conntrack::{
        CT_TUPLE_LAYOUT, CT_UNKNOWN, Conntrack, ConntrackOffsets, CtTuple, NFCT_INFOMASK, conntrack_flags, ct_status,
    },
    dns::{DNS_PORTS, DNS_PREFIX, DnsPrefix, WithDns},
    header::{EventHeader, kind, probe},
    icmp_sent::{ICMP_STACK_DEPTH, IcmpSent, icmp_sent_flags},
    owner::{OWNER_ENTRIES, Owner, TASK_COMM_LEN, owner_flags},
    packet::{PACKET_MAX, PACKET_SNAPLEN, PacketHead},
    socket_error::{SocketError, socket_error_flags, verdict},
    udp_dropped::{DropCount, FlowsShown, UdpDropped, drops, udp_dropped_flags},
};
pub use tally::Pending;
