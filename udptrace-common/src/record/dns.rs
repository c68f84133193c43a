//! A DNS datagram's payload, carried in the record of an event about it (any kind whose flags say `DNS`).

/// The ports (host byte order) whose datagrams are DNS: `--dns-port`, 53 by default.
pub const DNS_PORTS: usize = 8;

/// The bytes of a DNS datagram's payload a record carries: the 12-byte header and the longest first question
/// there is (a 255-byte name, its type and class), 271, rounded up to a word. A prefix this long that does
/// not parse is not DNS; a shorter one (a short datagram, or an ICMP error quoting less) may just end early.
pub const DNS_PREFIX: usize = 272;

/// The start of a DNS datagram's UDP payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsPrefix {
    /// Bytes of `bytes` filled.
    pub len: u16,
    /// The payload's length by its UDP header.
    pub total: u16,
    pub _pad0: [u8; 4],
    pub bytes: [u8; DNS_PREFIX],
}

/// No implicit padding: the size is the sum of the fields.
const _: () = assert!(size_of::<DnsPrefix>() == 8 + DNS_PREFIX);

/// A record and the DNS payload of its datagram, for a datagram on a DNS port (its flags say `DNS`): only
/// these pay for the copy, and a record of any other datagram keeps its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WithDns<T> {
    pub record: T,
    pub dns: DnsPrefix,
}

// SAFETY: a Pod record followed by plain `#[repr(C)]` integers and arrays with explicit padding (the sizes
// below); every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl<T: aya::Pod> aya::Pod for WithDns<T> {}

/// The payload follows the record without a hole.
const _: () = {
    assert!(
        size_of::<WithDns<super::udp_dropped::UdpDropped>>()
            == size_of::<super::udp_dropped::UdpDropped>() + 8 + DNS_PREFIX
    );
    assert!(
        size_of::<WithDns<super::icmp_sent::IcmpSent>>() == size_of::<super::icmp_sent::IcmpSent>() + 8 + DNS_PREFIX
    );
};
