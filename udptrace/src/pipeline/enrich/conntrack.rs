//! A flow's conntrack entry asked of conntrack itself (ctnetlink), where the program that saw the event had no
//! packet to read it from (tracepoint mode's `socket_error`), or the packet no longer carried it: a pod's
//! datagram is translated in the node's namespace, and the packet that crosses the veth back into the pod has
//! had its entry reset (`skb_scrub_packet` -> `nf_reset_ct`, net/core/skbuff.c, 5.10 to 6.18). So the flow is
//! looked up in the socket's own namespace, then in udptrace's (the node's).
//!
//! The request is an `IPCTNL_MSG_CT_GET` of subsystem `NFNL_SUBSYS_CTNETLINK` with the flow as
//! `CTA_TUPLE_ORIG`; the kernel (`ctnetlink_get_conntrack`, net/netfilter/nf_conntrack_netlink.c, 5.10 to
//! 6.18) looks the tuple up with `nf_conntrack_find_get` in the default zone, which finds an entry by either
//! of its tuples, and answers with the entry (`ctnetlink_fill_info`: `CTA_TUPLE_ORIG`, `CTA_TUPLE_REPLY`,
//! `CTA_STATUS`, `CTA_MARK`, ...) or `ENOENT`. Every message of `NETLINK_NETFILTER` needs `CAP_NET_ADMIN`
//! of both the socket's opener and the sender (`nfnetlink_rcv` -> `netlink_net_capable`,
//! net/netfilter/nfnetlink.c and net/netlink/af_netlink.c `__netlink_ns_capable`): the tracer, which holds
//! no capability, asks the helper.
//!
//! The messages are `netlink-packet-netfilter`'s, of the same family of crates as the sock_diag and
//! route messages udptrace already speaks; this module checks what the answer says against the flow asked.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple as CtaTuple},
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};
use udptrace_common::{IPPROTO_UDP, IPPROTO_UDPLITE, ct_status};

use crate::{
    domain::{Direction, Nat, Translation, Tuple},
    events::{SocketError, UdpDropped},
    kernel::netlink,
};

/// How long the kernel may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(200);

/// A flow to look up: a UDP or UDP-Lite datagram from `src` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Flow {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub proto: u8,
}

impl Flow {
    /// The flow from `src` to `dst`, an IPv4-mapped IPv6 address pair (an IPv6 socket's IPv4 peer) as the
    /// IPv4 flow conntrack tracks; `None` for one conntrack cannot hold: another protocol, two families, an
    /// unspecified address, or port 0.
    pub fn new(src: SocketAddr, dst: SocketAddr, proto: u8) -> Option<Self> {
        let (src, dst) = (unmapped(src), unmapped(dst));
        let flow = Self { src, dst, proto };
        flow.valid().then_some(flow)
    }

    /// Whether conntrack could hold it (see [`Flow::new`]).
    pub fn valid(&self) -> bool {
        matches!(self.proto, IPPROTO_UDP | IPPROTO_UDPLITE)
            && self.src.is_ipv4() == self.dst.is_ipv4()
            && [self.src, self.dst].iter().all(|a| !a.ip().is_unspecified() && a.port() != 0)
    }

    /// The other way: a datagram from `dst` to `src`.
    pub fn reversed(self) -> Self {
        Self { src: self.dst, dst: self.src, proto: self.proto }
    }

    fn tuple(&self) -> Tuple {
        Tuple { src: self.src, dst: self.dst }
    }
}

fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, |v4| SocketAddr::new(IpAddr::V4(v4), addr.port())),
        IpAddr::V4(_) => addr,
    }
}

/// The flow a `socket_error` is about, when it names a remote (a connected socket's peer, or the quoted
/// datagram's destination), and has no entry from its packet: the socket's datagram, local to remote.
/// UDP: the event does not say UDP-Lite, which next to nobody uses.
pub fn flows_of_error(e: &SocketError) -> Option<Vec<Flow>> {
    if e.conntrack.is_some() {
        return None;
    }
    Some(vec![Flow::new(e.local, e.remote?, IPPROTO_UDP)?])
}

/// The flows a drop on the way out may be about, when a socket sent it and the packet carried no entry:
/// the datagram as dropped, and the other way round, which finds the entry by its reply tuple when the drop
/// came after the destination was translated (a backend nobody answers ARP for).
pub fn flows_of_drop(e: &UdpDropped) -> Option<Vec<Flow>> {
    if e.conntrack.is_some() || e.direction != Direction::Out || e.local.is_none() || e.sources_folded {
        return None;
    }
    let (sport, dport) = e.packet.ports?;
    let flow = Flow::new(SocketAddr::new(e.packet.src, sport), SocketAddr::new(e.packet.dst, dport), e.packet.proto)?;
    Some(vec![flow, flow.reversed()])
}

/// Whether conntrack is in this kernel at all: its `hashsize` parameter (net/netfilter/nf_conntrack_proto.c,
/// 5.10 to 6.18) puts it in /sys/module whether it is a module or built in. Without it no entry exists, and
/// asking would load it (nfnetlink loads the subsystem a message is for).
pub fn in_kernel() -> bool {
    std::path::Path::new("/sys/module/nf_conntrack").exists()
}

/// A ctnetlink socket of the calling thread's network namespace.
pub fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    netlink::set_receive_timeout(&socket, ANSWER_TIMEOUT)?;
    Ok(socket)
}

/// Asks the namespace of `socket` for the entry holding `flow`: `Ok(None)` when there is none or it is not
/// translated.
pub fn query(socket: &Socket, flow: &Flow) -> io::Result<Option<Translation>> {
    answer(flow, netlink::exchange(socket, &mut request(flow))?)
}

/// `IPCTNL_MSG_CT_GET` for `flow` (include/uapi/linux/netfilter/nfnetlink_conntrack.h): the flow as
/// `CTA_TUPLE_ORIG`, {`CTA_TUPLE_IP` {source, destination}, `CTA_TUPLE_PROTO` {protocol, ports}}, the
/// family in the `nfgenmsg` header.
fn request(flow: &Flow) -> NetlinkMessage<NetfilterMessage> {
    let family = if flow.src.is_ipv4() { NetfilterProtoFamily::IPv4 } else { NetfilterProtoFamily::IPv6 };
    let tuple = vec![
        CtaTuple::Ip(vec![IPTuple::SourceAddress(flow.src.ip()), IPTuple::DestinationAddress(flow.dst.ip())]),
        CtaTuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::from(flow.proto)),
            ProtoTuple::SourcePort(flow.src.port()),
            ProtoTuple::DestinationPort(flow.dst.port()),
        ]),
    ];
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let message = NetfilterMessage::new(
        NetfilterHeader::new(family, 0, 0),
        ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple)]),
    );
    NetlinkMessage::new(header, NetlinkPayload::from(message))
}

/// What the kernel's answer to the request for `flow` says.
fn answer(flow: &Flow, message: NetlinkMessage<NetfilterMessage>) -> io::Result<Option<Translation>> {
    match message.payload {
        NetlinkPayload::InnerMessage(NetfilterMessage { inner: NetfilterMessageInner::Conntrack(ct), .. }) => {
            match ct {
                ConntrackMessage::Get(attributes) | ConntrackMessage::New(attributes) => {
                    translation_of(flow, &attributes)
                        .map_err(|why| io::Error::other(format!("conntrack's answer {why}")))
                }
                other => Err(io::Error::other(format!("conntrack answered {:?}", other.message_type()))),
            }
        }
        NetlinkPayload::Error(e) if e.raw_code() == -libc::ENOENT => Ok(None),
        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
        other => Err(io::Error::other(format!("unexpected answer to a conntrack request: {other:?}"))),
    }
}

/// The entry's translation, `Ok(None)` for an entry neither translated; an error for an answer that is not
/// an entry holding `flow`. `CTA_MARK` is absent where the kernel keeps no mark (without
/// CONFIG_NF_CONNTRACK_MARK): 5.10 and 6.18 send it for every entry, 0 included (`ctnetlink_dump_mark`;
/// commit 1feeae071507, in the stable kernels of December 2022, left a mark of 0 out until a later fix put it
/// back, and there a mark of 0 reads as unknown).
fn translation_of(flow: &Flow, attributes: &[ConntrackAttribute]) -> Result<Option<Translation>, &'static str> {
    let (mut original, mut reply, mut status, mut mark) = (None, None, None, None);
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(parts) => original = Some(tuple_of(parts)?),
            ConntrackAttribute::CtaTupleReply(parts) => reply = Some(tuple_of(parts)?),
            ConntrackAttribute::CtaStatus(bits) => status = Some(bits.bits()),
            ConntrackAttribute::CtaMark(value) => mark = Some(*value),
            _ => {}
        }
    }
    let (original, reply) = (original.ok_or("has no original tuple")?, reply.ok_or("has no reply tuple")?);
    let status = status.ok_or("has no status")?;
    if [original, reply].iter().any(|(tuple, proto)| *proto != flow.proto || tuple.src.is_ipv4() != flow.src.is_ipv4())
    {
        return Err("is of another protocol or family");
    }
    let (original, reply) = (original.0, reply.0);
    if ![original, reply].contains(&flow.tuple()) {
        return Err("holds another flow");
    }
    let bit = |b: u16| status & u32::from(b) != 0;
    let Some(nat) = Nat::of(bit(ct_status::DST_NAT), bit(ct_status::SRC_NAT)) else {
        return Ok(None);
    };
    Ok(Some(Translation { original, reply, nat, replied: bit(ct_status::SEEN_REPLY), mark }))
}

/// One direction of an entry, with its protocol: every part present, the addresses of one family.
fn tuple_of(parts: &[CtaTuple]) -> Result<(Tuple, u8), &'static str> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, None, None);
    for part in parts {
        match part {
            CtaTuple::Ip(addresses) => {
                for address in addresses {
                    match address {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            CtaTuple::Proto(fields) => {
                for field in fields {
                    match field {
                        ProtoTuple::Protocol(p) => proto = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => sport = Some(*p),
                        ProtoTuple::DestinationPort(p) => dport = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (src, dst) = (src.ok_or("has a tuple with no source")?, dst.ok_or("has a tuple with no destination")?);
    if src.is_ipv4() != dst.is_ipv4() {
        return Err("has a tuple of two families");
    }
    let (sport, dport) = (sport.ok_or("has a tuple with no ports")?, dport.ok_or("has a tuple with no ports")?);
    let tuple = Tuple { src: SocketAddr::new(src, sport), dst: SocketAddr::new(dst, dport) };
    Ok((tuple, proto.ok_or("has a tuple with no protocol")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NLA_F_NESTED: u16 = 1 << 15;

    /// An attribute: its header, its value, padded to 4 bytes.
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(4 + value.len()).unwrap().to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        nla(kind | NLA_F_NESTED, &parts.concat())
    }

    fn ip(addr: IpAddr) -> Vec<u8> {
        match addr {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    /// `CTA_TUPLE_*` {`CTA_TUPLE_IP` {src, dst}, `CTA_TUPLE_PROTO` {num, sport, dport}}, as
    /// `ctnetlink_dump_tuples` lays it out.
    fn tuple(kind: u16, src: SocketAddr, dst: SocketAddr, proto: u8) -> Vec<u8> {
        let (s, d) = if src.is_ipv4() { (1, 2) } else { (3, 4) };
        nested(
            kind,
            &[
                nested(1, &[nla(s, &ip(src.ip())), nla(d, &ip(dst.ip()))]),
                nested(2, &[nla(1, &[proto]), nla(2, &src.port().to_be_bytes()), nla(3, &dst.port().to_be_bytes())]),
            ],
        )
    }

    /// A netlink message of type `kind` carrying `body`.
    fn message(kind: u16, sequence: u32, body: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(16 + body.len()).unwrap().to_ne_bytes().to_vec();
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&sequence.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(body);
        out
    }

    /// The kernel's answer to a GET: the entry, with the attributes a 6.18 kernel adds around the ones read.
    fn entry(family: u8, original: (SocketAddr, SocketAddr), reply: (SocketAddr, SocketAddr), status: u32) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        body.extend(tuple(1, original.0, original.1, 17));
        body.extend(tuple(2, reply.0, reply.1, 17));
        body.extend(nla(3, &status.to_be_bytes()));
        body.extend(nla(7, &30u32.to_be_bytes()));
        body.extend(nla(8, &0x4000u32.to_be_bytes()));
        body.extend(nla(12, &0x1234_5678u32.to_be_bytes()));
        body.extend(nested(9, &[nla(1, &1u64.to_be_bytes())]));
        message(1 << 8 | 1, 7, &body)
    }

    fn parse(bytes: &[u8]) -> Result<NetlinkMessage<NetfilterMessage>, netlink_packet_core::DecodeError> {
        NetlinkMessage::<NetfilterMessage>::deserialize(bytes)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn client_flow() -> Flow {
        Flow::new(addr("10.0.0.5:41234"), addr("10.96.0.10:53"), IPPROTO_UDP).unwrap()
    }

    /// DNAT of the Service to a backend, replied: the entry as `conntrack -L` shows it.
    fn dnat_entry(status: u32) -> Vec<u8> {
        entry(
            2,
            (addr("10.0.0.5:41234"), addr("10.96.0.10:53")),
            (addr("10.244.1.7:53"), addr("10.0.0.5:41234")),
            status,
        )
    }

    const IPS_SEEN_REPLY: u32 = 1 << 1;
    const IPS_CONFIRMED: u32 = 1 << 3;
    const IPS_SRC_NAT: u32 = 1 << 4;
    const IPS_DST_NAT: u32 = 1 << 5;

    #[test]
    fn the_request_is_the_kernels_layout() {
        let mut request = request(&client_flow());
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        let tuple = tuple(1, addr("10.0.0.5:41234"), addr("10.96.0.10:53"), 17);
        let mut body = vec![2, 0, 0, 0];
        body.extend(tuple);
        let mut expected = message(1 << 8 | 1, 0, &body);
        expected[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        assert_eq!(bytes, expected);
        let v6 = Flow::new(addr("[fd00::5]:41234"), addr("[fd00::10]:53"), IPPROTO_UDPLITE).unwrap();
        let mut request = super::request(&v6);
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        assert_eq!(bytes[16], 10, "NFPROTO_IPV6");
        assert_eq!(&bytes[16 + 4 + 4 + 4..][..4], &nla(3, &[0; 16])[..4], "CTA_IP_V6_SRC");
    }

    #[test]
    fn a_translated_entry_is_read_whole() {
        let flow = client_flow();
        let status = IPS_SEEN_REPLY | IPS_CONFIRMED | IPS_DST_NAT;
        let got = answer(&flow, parse(&dnat_entry(status)).unwrap()).unwrap().expect("a translation");
        assert_eq!(got.original, Tuple { src: addr("10.0.0.5:41234"), dst: addr("10.96.0.10:53") });
        assert_eq!(got.reply, Tuple { src: addr("10.244.1.7:53"), dst: addr("10.0.0.5:41234") });
        assert_eq!((got.nat, got.replied, got.mark), (Nat::Dnat, true, Some(0x4000)));
        assert_eq!(got.backend(), Some(addr("10.244.1.7:53")));
        // Unreplied, and translated both ways.
        let got = answer(&flow, parse(&dnat_entry(IPS_DST_NAT | IPS_SRC_NAT)).unwrap()).unwrap().unwrap();
        assert_eq!((got.nat, got.replied), (Nat::Both, false));
        // Found by its reply tuple: the flow the other way, after the translation.
        let back = Flow::new(addr("10.244.1.7:53"), addr("10.0.0.5:41234"), IPPROTO_UDP).unwrap();
        assert!(answer(&back, parse(&dnat_entry(IPS_DST_NAT)).unwrap()).unwrap().is_some());
    }

    #[test]
    fn no_entry_and_an_untranslated_one_are_none() {
        let flow = client_flow();
        assert_eq!(answer(&flow, parse(&dnat_entry(IPS_SEEN_REPLY | IPS_CONFIRMED)).unwrap()).unwrap(), None);
        // NLMSG_ERROR with -ENOENT, quoting the request's header.
        let mut body = (-libc::ENOENT).to_ne_bytes().to_vec();
        body.extend(message(1 << 8 | 1, 7, &[])[..16].iter());
        assert_eq!(answer(&flow, parse(&message(2, 7, &body)).unwrap()).unwrap(), None);
        let mut body = (-libc::EPERM).to_ne_bytes().to_vec();
        body.extend(message(1 << 8 | 1, 7, &[])[..16].iter());
        let e = answer(&flow, parse(&message(2, 7, &body)).unwrap()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    }

    /// An answer that is not an entry holding the flow asked is an error, never a translation.
    #[test]
    fn an_answer_about_something_else_is_refused() {
        let flow = client_flow();
        let nat = IPS_DST_NAT;
        let other =
            entry(2, (addr("10.0.0.6:1"), addr("10.96.0.10:53")), (addr("10.244.1.7:53"), addr("10.0.0.6:1")), nat);
        assert!(answer(&flow, parse(&other).unwrap()).is_err());
        let mixed = entry(
            2,
            (addr("10.0.0.5:41234"), addr("[fd00::10]:53")),
            (addr("10.244.1.7:53"), addr("10.0.0.5:41234")),
            nat,
        );
        assert!(answer(&flow, parse(&mixed).unwrap()).is_err());
        // Without a reply tuple, or without a status.
        let mut body = vec![2, 0, 0, 0];
        body.extend(tuple(1, flow.src, flow.dst, 17));
        body.extend(nla(3, &nat.to_be_bytes()));
        assert!(answer(&flow, parse(&message(1 << 8 | 1, 7, &body)).unwrap()).is_err());
        let mut body = vec![2, 0, 0, 0];
        body.extend(tuple(1, flow.src, flow.dst, 17));
        body.extend(tuple(2, addr("10.244.1.7:53"), flow.src, 17));
        assert!(answer(&flow, parse(&message(1 << 8 | 1, 7, &body)).unwrap()).is_err());
        // TCP's entry for the same addresses.
        let mut body = vec![2, 0, 0, 0];
        body.extend(tuple(1, flow.src, flow.dst, 6));
        body.extend(tuple(2, addr("10.244.1.7:53"), flow.src, 6));
        body.extend(nla(3, &nat.to_be_bytes()));
        assert!(answer(&flow, parse(&message(1 << 8 | 1, 7, &body)).unwrap()).is_err());
        // Another subsystem's message, an acknowledgement.
        assert!(answer(&flow, parse(&message(2 << 8, 7, &[2, 0, 0, 0])).unwrap()).is_err());
        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend(message(1 << 8 | 1, 7, &[])[..16].iter());
        assert!(answer(&flow, parse(&message(2, 7, &ack)).unwrap()).is_err());
    }

    /// Every prefix of an answer, and every answer with one byte changed to every value, parses or fails
    /// without a panic, and never reads as a translation of another flow.
    #[test]
    fn truncated_and_corrupted_answers_never_panic() {
        let flow = client_flow();
        let whole = dnat_entry(IPS_SEEN_REPLY | IPS_DST_NAT);
        for cut in 0..whole.len() {
            let mut bytes = whole[..cut].to_vec();
            // The header's length as the kernel sent it, and as the prefix has it.
            for length in [whole.len(), cut] {
                if bytes.len() >= 4 {
                    bytes[..4].copy_from_slice(&u32::try_from(length).unwrap().to_ne_bytes());
                }
                if let Ok(message) = parse(&bytes)
                    && let Ok(Some(t)) = answer(&flow, message)
                {
                    assert!(t.original == flow.tuple() || t.reply == flow.tuple());
                }
            }
        }
        for at in 0..whole.len() {
            for value in 0..=u8::MAX {
                let mut bytes = whole.clone();
                bytes[at] = value;
                if let Ok(message) = parse(&bytes)
                    && let Ok(Some(t)) = answer(&flow, message)
                {
                    assert!(t.original == flow.tuple() || t.reply == flow.tuple(), "{t:?} from byte {at} = {value}");
                }
            }
        }
    }

    /// Attribute lengths that point past their parent, or below their own header, are refused.
    #[test]
    fn hostile_lengths_are_refused() {
        let flow = client_flow();
        for bad in [0u16, 1, 3, 0xffff] {
            let mut body = vec![2, 0, 0, 0];
            let mut t = tuple(1, flow.src, flow.dst, 17);
            t[..2].copy_from_slice(&bad.to_ne_bytes());
            body.extend(t);
            let bytes = message(1 << 8 | 1, 7, &body);
            assert!(parse(&bytes).map_or(true, |m| answer(&flow, m).is_err()), "length {bad}");
        }
        // An IPv4 attribute of IPv6's length, a status of two bytes.
        let mut body = vec![2, 0, 0, 0];
        body.extend(nested(1, &[nested(1, &[nla(1, &[0; 16]), nla(2, &[10, 96, 0, 10])])]));
        assert!(parse(&message(1 << 8 | 1, 7, &body)).map_or(true, |m| answer(&flow, m).is_err()));
        let mut body = vec![2, 0, 0, 0];
        body.extend(nla(3, &[0, 1]));
        assert!(parse(&message(1 << 8 | 1, 7, &body)).is_err());
    }

    #[test]
    fn flows_conntrack_cannot_hold_are_not_asked() {
        let (a, b) = (addr("10.0.0.5:41234"), addr("10.96.0.10:53"));
        assert!(Flow::new(a, b, IPPROTO_UDP).is_some());
        assert_eq!(Flow::new(a, b, 6), None);
        assert_eq!(Flow::new(a, addr("[fd00::1]:53"), IPPROTO_UDP), None);
        assert_eq!(Flow::new(addr("0.0.0.0:41234"), b, IPPROTO_UDP), None);
        assert_eq!(Flow::new(a, addr("10.96.0.10:0"), IPPROTO_UDP), None);
        // An IPv6 socket's IPv4 peer is conntrack's IPv4 flow.
        let mapped = Flow::new(addr("[::ffff:10.0.0.5]:41234"), addr("[::ffff:10.96.0.10]:53"), IPPROTO_UDP);
        assert_eq!(mapped, Flow::new(a, b, IPPROTO_UDP));
    }
}
