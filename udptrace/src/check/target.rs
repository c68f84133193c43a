//! What is checked: `HOST:PORT` and the payload as the command line gives them, the address the name
//! resolves to, and the probe's bytes.

use std::{
    net::{SocketAddr, ToSocketAddrs as _},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::domain::AttachMode;

/// `HOST:PORT` as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

/// `HOST:PORT`: a name, an IPv4 address, or `[IPv6]:PORT`.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, port) =
                rest.split_once("]:").ok_or_else(|| format!("`{text}` is not [ADDRESS]:PORT (an IPv6 target)"))?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| format!("`{host}` is not an IPv6 address"))?;
            (host, port)
        }
        None => {
            let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("`{text}` is not HOST:PORT"))?;
            if host.contains(':') {
                return Err(format!("`{text}`: write an IPv6 target as [ADDRESS]:PORT"));
            }
            (host, port)
        }
    };
    if host.is_empty() {
        return Err(format!("`{text}` names no host"));
    }
    let port: u16 = port.parse().map_err(|_| format!("`{port}` is not a port (1-65535)"))?;
    if port == 0 {
        return Err("port 0 is not a port a datagram can be sent to".to_owned());
    }
    Ok(Target { host: host.to_owned(), port })
}

/// `--payload HEX`: its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hex(pub Vec<u8>);

/// `--payload HEX`: bytes as hex digits, spaces and colons allowed between them.
pub fn parse_hex(text: &str) -> Result<Hex, String> {
    let digits: Vec<u8> = text.bytes().filter(|c| !matches!(c, b' ' | b':')).collect();
    // Checked byte by byte first: a multi-byte character must not be cut in a pair.
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!("`{text}` is not hex (0-9, a-f)"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!("`{text}`: hex bytes come in pairs of digits"));
    }
    let value = |digit: u8| char::from(digit).to_digit(16).unwrap_or(0) as u8;
    let bytes: Vec<u8> = digits.chunks_exact(2).map(|pair| value(pair[0]) << 4 | value(pair[1])).collect();
    if bytes.len() > MAX_PAYLOAD {
        return Err(format!("a payload of {} bytes is more than a probe carries ({MAX_PAYLOAD})", bytes.len()));
    }
    Ok(Hex(bytes))
}

/// The largest payload: what fits an IPv6 minimum MTU, so that a probe is never fragmented.
const MAX_PAYLOAD: usize = 1232;

/// What the probes carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    Bytes(Vec<u8>),
    /// A query for the name's A record.
    Dns(String),
}

/// One check, as the command line asks for it.
pub struct Check {
    pub target: Target,
    pub count: u32,
    /// How long to wait after the last probe.
    pub timeout: Duration,
    pub payload: Payload,
    /// `-4`, `-6`, or either.
    pub ipv4_only: bool,
    pub ipv6_only: bool,
    pub modes: &'static [AttachMode],
    pub asked: String,
    pub json: bool,
    pub verbose: bool,
}

pub fn resolve(target: &Target, ipv4_only: bool, ipv6_only: bool) -> Result<SocketAddr> {
    let wanted = |a: &SocketAddr| (!ipv4_only || a.is_ipv4()) && (!ipv6_only || a.is_ipv6());
    let found: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", target.host))?
        .collect();
    match found.iter().find(|a| wanted(a)) {
        Some(addr) => Ok(*addr),
        None if ipv4_only => bail!("{} has no IPv4 address", target.host),
        None if ipv6_only => bail!("{} has no IPv6 address", target.host),
        None => bail!("{} has no address", target.host),
    }
}

/// The probe's bytes, and for a DNS query its id.
pub fn payload_bytes(payload: &Payload) -> Result<(Vec<u8>, Option<u16>)> {
    match payload {
        Payload::Bytes(bytes) => Ok((bytes.clone(), None)),
        Payload::Dns(name) => {
            // An id that differs from run to run; nothing depends on it being unpredictable.
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let id = (nanos.subsec_nanos() ^ std::process::id()) as u16;
            let mut query = simple_dns::Packet::new_query(id);
            query.set_flags(simple_dns::PacketFlag::RECURSION_DESIRED);
            query.questions.push(simple_dns::Question::new(
                simple_dns::Name::new(name).context("the DNS name")?,
                simple_dns::TYPE::A.into(),
                simple_dns::CLASS::IN.into(),
                false,
            ));
            Ok((query.build_bytes_vec().context("building the DNS query")?, Some(id)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_names_and_brackets() {
        assert_eq!(parse_target("10.0.0.2:53"), Ok(Target { host: "10.0.0.2".to_owned(), port: 53 }));
        assert_eq!(parse_target("[fd00::2]:53"), Ok(Target { host: "fd00::2".to_owned(), port: 53 }));
        assert_eq!(parse_target("dns.example:5353").unwrap().host, "dns.example");
        for bad in ["10.0.0.2", "fd00::2:53", "[fd00::2]53", "[nope]:53", ":53", "host:0", "host:70000", "host:dns"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payloads_are_hex_pairs() {
        assert_eq!(parse_hex("de:ad be ef"), Ok(Hex(vec![0xde, 0xad, 0xbe, 0xef])));
        assert_eq!(parse_hex(""), Ok(Hex(vec![])));
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        // A character of more than one byte, which a pair of bytes would cut; a sign, which integer parsing takes.
        assert_eq!(parse_hex("aé0"), Err("`aé0` is not hex (0-9, a-f)".to_owned()));
        assert_eq!(parse_hex("éé"), Err("`éé` is not hex (0-9, a-f)".to_owned()));
        assert!(parse_hex("+f").is_err());
        assert!(parse_hex(&"00".repeat(MAX_PAYLOAD + 1)).is_err());
    }

    #[test]
    fn dns_names_and_the_query_they_make() {
        assert!(crate::dns::parse_dns_name("example.com").is_ok());
        assert!(crate::dns::parse_dns_name("example.com.").is_ok());
        for bad in ["", ".", "a..b", &"a".repeat(64), &"a.".repeat(130)] {
            assert!(crate::dns::parse_dns_name(bad).is_err(), "{bad}");
        }
        let (bytes, id) = payload_bytes(&Payload::Dns("example.com".to_owned())).unwrap();
        let query = simple_dns::Packet::parse(&bytes).unwrap();
        assert_eq!(Some(query.id()), id);
        assert_eq!(query.questions.len(), 1);
        assert_eq!(query.questions[0].qname.to_string(), "example.com");
    }
}
