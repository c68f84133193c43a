//! Where a probe left by, and whether the next hop answered ARP/ND: the kernel's route to the target
//! (`RTM_GETROUTE`, what `ip route get` asks) and the neighbour entry of its next hop (`RTM_GETNEIGH`, 5.0),
//! over rtnetlink, without privileges.

use std::{io, net::IpAddr, time::Duration};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::kernel::netlink;

/// The route the kernel picks for a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub ifindex: u32,
    /// The interface's name, when it still has one.
    pub interface: Option<String>,
    /// The router it goes through; `None` when the target is on the link.
    pub gateway: Option<IpAddr>,
    /// `local`: the target is an address of this host (it never leaves by an interface).
    pub local: bool,
}

impl Route {
    /// Who must answer ARP/ND for it to leave: the gateway, or the target itself.
    pub fn next_hop(&self, target: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(target)
    }
}

/// The route to `target`.
pub fn route_to(target: IpAddr) -> io::Result<Route> {
    let mut message = RouteMessage::default();
    message.header.address_family = family(target);
    message.header.destination_prefix_length = if target.is_ipv4() { 32 } else { 128 };
    message.attributes.push(RouteAttribute::Destination(RouteAddress::from(target)));
    let answer = ask(RouteNetlinkMessage::GetRoute(message))?;
    let RouteNetlinkMessage::NewRoute(route) = answer else {
        return Err(io::Error::other(format!("unexpected answer to a route lookup: {answer:?}")));
    };
    let mut found = Route { ifindex: 0, interface: None, gateway: None, local: route.header.kind == RouteType::Local };
    for attribute in route.attributes {
        match attribute {
            RouteAttribute::Oif(index) => found.ifindex = index,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => found.gateway = Some(IpAddr::V4(ip)),
            RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => found.gateway = Some(IpAddr::V6(ip)),
            _ => {}
        }
    }
    found.interface = interface_name(found.ifindex);
    Ok(found)
}

/// The state of `address`'s neighbour entry on interface `ifindex`; `None` when there is none.
pub fn neighbour(ifindex: u32, address: IpAddr) -> io::Result<Option<NeighbourState>> {
    let mut message = NeighbourMessage::default();
    message.header.family = family(address);
    message.header.ifindex = ifindex;
    let dst = match address {
        IpAddr::V4(ip) => NeighbourAddress::Inet(ip),
        IpAddr::V6(ip) => NeighbourAddress::Inet6(ip),
    };
    message.attributes.push(NeighbourAttribute::Destination(dst));
    match ask(RouteNetlinkMessage::GetNeighbour(message)) {
        Ok(RouteNetlinkMessage::NewNeighbour(entry)) => Ok(Some(entry.header.state)),
        Ok(other) => Err(io::Error::other(format!("unexpected answer to a neighbour lookup: {other:?}"))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// How a neighbour state reads: whether the next hop answered ARP/ND.
pub fn describe(state: NeighbourState) -> (&'static str, Option<bool>) {
    match state {
        NeighbourState::Reachable => ("reachable", Some(true)),
        NeighbourState::Stale => ("stale", Some(true)),
        NeighbourState::Delay => ("delay", Some(true)),
        NeighbourState::Probe => ("probe", Some(true)),
        NeighbourState::Permanent => ("permanent", Some(true)),
        NeighbourState::Noarp => ("noarp", None),
        NeighbourState::Incomplete => ("incomplete", None),
        NeighbourState::Failed => ("failed", Some(false)),
        NeighbourState::None => ("none", None),
        _ => ("unknown", None),
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

fn interface_name(ifindex: u32) -> Option<String> {
    if ifindex == 0 {
        return None;
    }
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: a buffer of IF_NAMESIZE bytes, as if_indextoname wants.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// Sends one request and reads its answer; the kernel's error comes back as an `io::Error` of its errno.
fn ask(request: RouteNetlinkMessage) -> io::Result<RouteNetlinkMessage> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    netlink::set_receive_timeout(&socket, Duration::from_secs(1))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(request));
    match netlink::exchange(&socket, &mut message)?.payload {
        NetlinkPayload::InnerMessage(inner) => Ok(inner),
        NetlinkPayload::Error(e) => Err(e.code.map_or_else(
            || io::Error::other("the kernel acknowledged instead of answering"),
            |code| io::Error::from_raw_os_error(-code.get()),
        )),
        other => Err(io::Error::other(format!("unexpected netlink answer: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_a_local_route_by_lo() {
        let route = route_to("127.0.0.1".parse().unwrap()).unwrap();
        assert!(route.local, "{route:?}");
        assert_eq!(route.interface.as_deref(), Some("lo"));
        assert_eq!(route.gateway, None);
    }

    #[test]
    fn a_next_hop_is_the_gateway_or_the_target() {
        let target: IpAddr = "192.0.2.7".parse().unwrap();
        let mut route = Route { ifindex: 2, interface: None, gateway: None, local: false };
        assert_eq!(route.next_hop(target), target);
        route.gateway = Some("192.0.2.1".parse().unwrap());
        assert_eq!(route.next_hop(target), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
