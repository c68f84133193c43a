//! Numbers the kernel's network headers define, as the records carry them.

/// Address families as the kernel spells them (`include/linux/socket.h`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// IP protocol numbers (`include/uapi/linux/in.h`).
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_UDPLITE: u8 = 136;

/// ICMP (IPv4) types and codes (`include/uapi/linux/icmp.h`).
pub mod icmp {
    pub const DEST_UNREACH: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETERPROB: u8 = 12;
    /// Codes of `DEST_UNREACH`.
    pub const HOST_UNREACH: u8 = 1;
    pub const PORT_UNREACH: u8 = 3;
    pub const FRAG_NEEDED: u8 = 4;
    pub const NET_ANO: u8 = 9;
    pub const HOST_ANO: u8 = 10;
    pub const PKT_FILTERED: u8 = 13;
}

/// ICMPv6 types and codes (`include/uapi/linux/icmpv6.h`, `include/net/ndisc.h`).
pub mod icmpv6 {
    pub const DEST_UNREACH: u8 = 1;
    pub const PKT_TOOBIG: u8 = 2;
    pub const TIME_EXCEED: u8 = 3;
    pub const PARAMPROB: u8 = 4;
    /// A route update, not an error.
    pub const NDISC_REDIRECT: u8 = 137;
    /// Codes of `DEST_UNREACH`.
    pub const ADM_PROHIBITED: u8 = 1;
    pub const ADDR_UNREACH: u8 = 3;
    pub const PORT_UNREACH: u8 = 4;
}
