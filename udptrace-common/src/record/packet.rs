//! The packet behind an event, for `--pcap`: what the programs copied of it, from its network header on,
//! after the record (and its DNS payload) of any kind whose flags say `PACKET`.

/// The most bytes of a packet a record carries (`--pcap-snaplen` at most): an Ethernet MTU's worth.
pub const PACKET_MAX: usize = 1500;

/// `--pcap-snaplen`'s default: the headers, a DNS question, a SIP request line, a QUIC long header.
pub const PACKET_SNAPLEN: u16 = 256;

/// Follows the record; `len` bytes of the packet follow it, and the record ends there (the buffer's size of
/// the record may add padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketHead {
    /// Bytes copied: no more than the snap length, the packet, or its linear data (a payload in pages is
    /// left out, and the capture said short).
    pub len: u16,
    pub _pad0: u16,
    /// The packet's length by its IP header (IPv4 `tot_len`; IPv6 40 + `payload_len`).
    pub total: u32,
}

// SAFETY: plain `#[repr(C)]` integers with explicit padding; every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PacketHead {}

/// No implicit padding: the size is the sum of the fields.
const _: () = assert!(size_of::<PacketHead>() == 8);
