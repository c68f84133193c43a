//! The records the programs hand to user space, one module per kind, each with its flags, its constants
//! and its `aya::Pod` impl beside it; the same names as the programs that produce them in `udptrace-ebpf`.

pub mod conntrack;
pub mod dns;
pub mod header;
pub mod icmp_sent;
pub mod owner;
pub mod packet;
pub mod socket_error;
pub mod udp_dropped;
