//! A translated connection as conntrack keeps it: the flow as its sender addressed it and as conntrack
//! expects it back, which NAT rewrote, whether it was ever answered, and its mark.

use std::{fmt, net::SocketAddr};

/// One direction of a connection: who sends to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Tuple {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src, self.dst)
    }
}

/// What NAT rewrote: the destination (DNAT: a Service address, a published port), the source (SNAT,
/// masquerade), or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Nat {
    Dnat,
    Snat,
    Both,
}

impl Nat {
    pub fn as_str(self) -> &'static str {
        match self {
            Nat::Dnat => "dnat",
            Nat::Snat => "snat",
            Nat::Both => "dnat+snat",
        }
    }

    /// From conntrack's `IPS_DST_NAT` and `IPS_SRC_NAT`; `None` for a connection neither translated.
    pub fn of(dst: bool, src: bool) -> Option<Nat> {
        match (dst, src) {
            (true, true) => Some(Nat::Both),
            (true, false) => Some(Nat::Dnat),
            (false, true) => Some(Nat::Snat),
            (false, false) => None,
        }
    }
}

/// A translated connection's conntrack entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Translation {
    /// The flow as its sender addressed it: `dst` is the Service address.
    pub original: Tuple,
    /// What conntrack expects back: its `src` is where the datagrams really go (the backend).
    pub reply: Tuple,
    pub nat: Nat,
    /// Whether conntrack saw a reply on this entry (`[UNREPLIED]` in `conntrack -L` is `false`).
    pub replied: bool,
    /// The entry's mark, where the kernel keeps one.
    pub mark: Option<u32>,
}

impl Translation {
    /// Where the sender's datagrams really go, when the destination is translated.
    pub fn backend(&self) -> Option<SocketAddr> {
        matches!(self.nat, Nat::Dnat | Nat::Both).then_some(self.reply.src)
    }

    /// The `conntrack -D` command that deletes exactly this entry (in the namespace that holds it).
    pub fn delete_command(&self, proto: &str) -> String {
        let o = &self.original;
        let family = if o.src.is_ipv6() { " -f ipv6" } else { "" };
        format!(
            "conntrack -D{family} -p {proto} -s {} -d {} --sport {} --dport {}",
            o.src.ip(),
            o.dst.ip(),
            o.src.port(),
            o.dst.port()
        )
    }
}
