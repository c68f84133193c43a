//! `socket_error`: an ICMP error reached (or failed to reach) a UDP socket.

use super::{conntrack::Conntrack, header::EventHeader, owner::Owner};

/// What the kernel did with an ICMP error that reached the UDP layer.
pub mod verdict {
    /// Not known in this mode.
    pub const UNKNOWN: u8 = 0;
    /// `sk_err` set and the socket woken: the application's next call fails.
    pub const DELIVERED: u8 = 1;
    /// A soft error on a connected socket without `IP_RECVERR`: dropped.
    pub const IGNORED_SOFT_ERROR: u8 = 2;
    /// An unconnected socket without `IP_RECVERR`: every error is dropped.
    pub const IGNORED_UNCONNECTED: u8 = 3;
    /// No socket matched the quoted packet.
    pub const NO_SOCKET: u8 = 4;
}

/// Bits of [`SocketError::flags`].
pub mod socket_error_flags {
    /// `icmp_type`, `icmp_code` and `icmp_from` are filled in.
    pub const ICMP_KNOWN: u8 = 1 << 0;
    /// The `RECVERR` bit below was read.
    pub const RECVERR_KNOWN: u8 = 1 << 1;
    /// The error was also queued for `MSG_ERRQUEUE`.
    pub const RECVERR: u8 = 1 << 2;
    /// `remote_addr`/`remote_port` are filled in (a connected socket, or the quoted packet was read).
    pub const REMOTE_KNOWN: u8 = 1 << 3;
    /// `owner` holds the process that created the socket.
    pub const OWNER_KNOWN: u8 = 1 << 4;
    /// The kernel told no socket of the error, and did not say that none matched (it returned 0, or the
    /// mode does not see what it returned): user space looks the quoted 4-tuple up in the namespace's
    /// socket table to say which socket ignored it, and why.
    pub const UNREPORTED: u8 = 1 << 5;
    /// The record is a [`WithDns`](crate::WithDns): the quoted datagram is to or from a DNS port, and its
    /// payload is what the ICMP error quotes of it (fentry and kprobe modes).
    pub const DNS: u8 = 1 << 6;
    /// The ICMP error follows the record (and its DNS payload), from its IP header on, with its quote: a
    /// [`PacketHead`](crate::PacketHead) and its bytes (`--pcap`; fentry and kprobe modes).
    pub const PACKET: u8 = 1 << 7;
}

/// An ICMP error reached (or failed to reach) a UDP socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketError {
    pub header: EventHeader,
    /// Addresses in network byte order; IPv4 uses the first four bytes.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// Who sent the ICMP error (may be a router).
    pub icmp_from: [u8; 16],
    /// Ports in host byte order.
    pub local_port: u16,
    pub remote_port: u16,
    /// The positive errno the socket got (`sk->sk_err`), 0 for none.
    pub errno: i32,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub verdict: u8,
    pub flags: u8,
    /// The interface the ICMP error came in on (`skb->dev->ifindex`), 0 if unknown: the socket table is
    /// asked with it, so that a socket bound to a device (`SO_BINDTODEVICE`, a VRF) is the one found.
    pub ifindex: u32,
    /// The socket's inode number (what `/proc/PID/fd` shows as `socket:[N]`), 0 if there is no socket.
    pub sock_ino: u64,
    /// Valid with `OWNER_KNOWN`.
    pub owner: Owner,
    /// The ICMP error's conntrack entry, which is the quoted datagram's (fentry and kprobe modes).
    pub conntrack: Conntrack,
}

// SAFETY: plain `#[repr(C)]` integers and arrays with explicit padding; every bit pattern is valid (the
// tally maps' keys).
#[cfg(feature = "user")]
unsafe impl aya::Pod for SocketError {}

/// No implicit padding: the size is the sum of the fields.
const _: () = assert!(size_of::<SocketError>() == 16 + 48 + 4 + 4 + 4 + 4 + 8 + 56 + 88);
