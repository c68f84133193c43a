//! Sockets the scenarios use: UDP sockets created inside a namespace (they stay in it wherever they are
//! used from), socket options, counters, and a crafted ICMP error sent from a raw socket.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
};

use anyhow::{Context as _, Result};

use crate::netns::Netns;

/// A UDP socket bound in `ns` to `local` (port 0: any).
pub fn udp_socket(ns: &Netns, local: SocketAddr) -> Result<UdpSocket> {
    ns.run(move || UdpSocket::bind(local))?.with_context(|| format!("binding {local} in {}", ns.name))
}

pub fn set_int_option(
    socket: &UdpSocket,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid socket and a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

pub fn set_recverr(socket: &UdpSocket, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int_option(socket, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1)
    } else {
        set_int_option(socket, libc::IPPROTO_IP, libc::IP_RECVERR, 1)
    }
}

/// The ICMP rate-limit counters of `ns` (`Icmp: OutRateLimitGlobal OutRateLimitHost`), and how many
/// destination-unreachable errors it sent and received (`IcmpMsg: OutType3`, `InType3`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IcmpCounters {
    pub rate_limit_global: u64,
    pub rate_limit_host: u64,
    pub out_dest_unreach: u64,
    pub in_dest_unreach: u64,
    /// ICMP messages received and dropped as malformed (`Icmp: InErrors`).
    pub in_errors: u64,
    /// ICMP errors `__icmp_send` built but could not queue (`Icmp: OutErrors`, e.g. the ICMP socket's send
    /// buffer full in a flood).
    pub out_errors: u64,
    /// Datagrams to a port nothing listens on (`Udp: NoPorts`): each made `__udp4_lib_rcv` call `icmp_send`.
    pub no_ports: u64,
    /// Whether the kernel has the `OutRateLimit*` counters (6.3, backported to 6.1.y;
    /// include/uapi/linux/snmp.h): without them, a suppressed error shows only as a `NoPorts` without its
    /// `OutType3`.
    pub has_rate_limit_counters: bool,
}

impl IcmpCounters {
    /// The port-unreachables a hook in `mode` reports: those the kernel sent; in tracepoint mode also those
    /// it failed to queue, since `icmp:icmp_send` fires before the reply is appended (net/ipv4/icmp.c).
    pub fn reported_by(&self, mode: &str) -> u64 {
        if mode == "tracepoint" { self.out_dest_unreach + self.out_errors } else { self.out_dest_unreach }
    }
}

pub fn icmp_counters(ns: &Netns) -> Result<IcmpCounters> {
    let snmp = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
    let mut counters = IcmpCounters::default();
    for prefix in ["Icmp:", "IcmpMsg:", "Udp:"] {
        let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with(prefix)).collect();
        if let [names, values] = lines[..] {
            for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                let value = value.parse().unwrap_or(0);
                match name {
                    "OutRateLimitGlobal" => {
                        counters.rate_limit_global = value;
                        counters.has_rate_limit_counters = true;
                    }
                    "NoPorts" if prefix == "Udp:" => counters.no_ports = value,
                    "OutRateLimitHost" => counters.rate_limit_host = value,
                    "OutType3" => counters.out_dest_unreach = value,
                    "InType3" => counters.in_dest_unreach = value,
                    "InErrors" if prefix == "Icmp:" => counters.in_errors = value,
                    "OutErrors" if prefix == "Icmp:" => counters.out_errors = value,
                    _ => {}
                }
            }
        }
    }
    Ok(counters)
}

/// An ICMP destination-unreachable/port-unreachable message (header and quoted IPv4+UDP headers) about a
/// datagram `src:sport -> dst:dport`.
pub fn port_unreachable_quoting(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    crafted_port_unreachable(src, sport, dst, dport, Quote::default())
}

/// How the quoted packet of a crafted port-unreachable is (mis)shaped.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quote {
    /// 4-byte words of IP options (NOPs) after the 20-byte header: the UDP header moves back.
    pub option_words: u8,
    /// The header length field, when it should lie (`None`: the true length).
    pub ihl: Option<u8>,
    /// The total length field, when it should lie.
    pub total_length: Option<u16>,
    /// Bytes of the UDP header kept (`None`: all 8).
    pub udp_bytes: Option<usize>,
    /// Quoted bytes after the UDP header (a tunnel's header, the start of a DNS query), when not empty.
    pub payload: [u8; 8],
    pub payload_len: usize,
    /// The UDP length field, when the datagram was longer than the quote (`None`: 16, a header and 8 bytes).
    pub udp_length: Option<u16>,
}

pub fn crafted_port_unreachable(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, quote: Quote) -> Vec<u8> {
    let header_len = 20 + 4 * usize::from(quote.option_words);
    let ihl = quote.ihl.unwrap_or((header_len / 4) as u8);
    let total = quote.total_length.unwrap_or((header_len + 8 + 8) as u16);
    let mut quoted = vec![0x40 | (ihl & 0x0f), 0];
    quoted.extend_from_slice(&total.to_be_bytes());
    quoted.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    quoted.extend_from_slice(&src.octets());
    quoted.extend_from_slice(&dst.octets());
    quoted.resize(header_len, 1);
    let ip_checksum = checksum(&quoted);
    quoted[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
    let mut udp = sport.to_be_bytes().to_vec();
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&quote.udp_length.unwrap_or(16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.truncate(quote.udp_bytes.unwrap_or(8));
    quoted.extend_from_slice(&udp);
    quoted.extend_from_slice(&quote.payload[..quote.payload_len.min(8)]);
    let mut message = vec![3, 3, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&quoted);
    let icmp_checksum = checksum(&message);
    message[2..4].copy_from_slice(&icmp_checksum.to_be_bytes());
    message
}

/// The Internet checksum (RFC 1071).
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn send_raw_icmp(to: Ipv4Addr, message: &[u8]) -> Result<()> {
    // SAFETY: plain socket calls with valid arguments; the fd is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("raw ICMP socket");
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(to.octets()) },
            sin_zero: [0; 8],
        };
        let sent = libc::sendto(
            fd,
            message.as_ptr().cast(),
            message.len(),
            0,
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        let error = io::Error::last_os_error();
        libc::close(fd);
        if sent < 0 {
            return Err(error).context("sending the crafted ICMP");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_icmp_has_valid_checksums() {
        let message = port_unreachable_quoting(Ipv4Addr::new(10, 0, 0, 1), 4000, Ipv4Addr::new(10, 0, 0, 2), 53);
        assert_eq!(message.len(), 8 + 20 + 8);
        // A correct checksum makes the sum over the data (checksum included) come out as zero.
        assert_eq!(checksum(&message), 0);
        assert_eq!(checksum(&message[8..28]), 0);
        assert_eq!(&message[28..32], &[0x0f, 0xa0, 0, 53]);
    }

    #[test]
    fn misshapen_quotes_are_built_as_asked() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let options = crafted_port_unreachable(a, 4000, b, 53, Quote { option_words: 1, ..Quote::default() });
        assert_eq!(options[8], 0x46);
        assert_eq!(&options[28..32], &[1, 1, 1, 1]);
        assert_eq!(&options[32..36], &[0x0f, 0xa0, 0, 53]);
        assert_eq!(checksum(&options[8..32]), 0);
        let short = crafted_port_unreachable(a, 4000, b, 53, Quote { udp_bytes: Some(4), ..Quote::default() });
        assert_eq!(short.len(), 8 + 20 + 4);
        let liar =
            crafted_port_unreachable(a, 4000, b, 53, Quote { ihl: Some(4), total_length: Some(9), ..Quote::default() });
        assert_eq!((liar[8], &liar[10..12]), (0x44, &[0u8, 9][..]));
        assert_eq!(checksum(&liar), 0);
    }
}
