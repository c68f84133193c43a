//! Which socket an ICMP error was about, when the kernel told no socket of it: the namespace's UDP socket
//! table, asked through `sock_diag` for the quoted 4-tuple, as `ss` asks it. The kernel answers with the
//! socket its own receive path would pick (`udp_dump_one` calls `__udp4_lib_lookup`, `net/ipv4/udp_diag.c`,
//! 5.10 to 6.18): connected sockets by their exact peer, unconnected ones whatever the peer.
//!
//! Another namespace's table is asked through a socket opened inside it, which the helper opens
//! (entering a namespace takes CAP_SYS_ADMIN) and hands over; udptrace's own namespace's, the
//! tracer opens itself.
//!
//! The answer is the table as it is when udptrace asks, a few milliseconds after the error: a socket that
//! closed meanwhile is not found, and the verdict then stays unknown.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    os::fd::{IntoRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_UDP, IPPROTO_UDPLITE},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, protocols::NETLINK_SOCK_DIAG};

use super::{privileged::Privileged, recent::Recent};
use crate::{
    kernel::netlink::{exchange, set_receive_timeout},
    pipeline::netns,
};

/// `TCP_ESTABLISHED`: what `connect()` sets on a UDP socket (`TCP_CLOSE` otherwise).
const TCP_ESTABLISHED: u8 = 1;
/// A namespace's sock_diag socket is closed after this long unused: an open one keeps its namespace
/// alive, and a pod's namespace must go when the pod does.
const IDLE: Duration = Duration::from_secs(10);
/// A namespace whose socket could not be opened is tried again after this long: its inode number may
/// belong to a new namespace by then (the kernel reuses them).
const RETRY: Duration = Duration::from_secs(1);
/// How long the kernel may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(200);

/// The socket the table holds for a 4-tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub connected: bool,
    pub inode: u64,
    pub cookie: u64,
    /// The socket's own address (it may be bound to any address).
    pub local: SocketAddr,
    /// Its receive buffer's size (`sk_rcvbuf`, from `INET_DIAG_SKMEMINFO`).
    pub rcvbuf: Option<u32>,
}

/// What a lookup is for: the namespace, the interface, the quoted local and remote addresses.
pub type Flow = (u64, u32, SocketAddr, SocketAddr);

#[derive(Default)]
pub struct SocketTable {
    /// A sock_diag socket per network namespace, by inode, and when it was last used; `None` where one
    /// could not be opened.
    diag: HashMap<u64, (Instant, Option<Socket>)>,
    /// Namespaces whose table could not be read, said once each.
    said: std::collections::HashSet<u64>,
    /// Recent answers, and when each was given.
    recent: Recent<Flow, Option<Found>>,
}

/// Why a namespace's socket table cannot be read, said once per namespace.
fn say_unreadable(netns: u64, why: &io::Error) {
    eprintln!(
        "udptrace: warning: cannot read the UDP socket table of network namespace {netns} ({why}): errors the \
         kernel reported to no socket there have verdict null"
    );
}

impl SocketTable {
    /// The UDP (or UDP-Lite) socket of namespace `netns` that an error quoting `local -> remote`, come in on
    /// interface `ifindex` (0: unknown), matches.
    pub fn find(&mut self, helper: &mut dyn Privileged, (netns, ifindex, local, remote): Flow) -> Option<Found> {
        // Taken out while `ask` borrows the table.
        let mut recent = std::mem::take(&mut self.recent);
        let found =
            recent.get_or_ask((netns, ifindex, local, remote), || self.ask(helper, (netns, ifindex, local, remote)));
        self.recent = recent;
        found
    }

    /// Whether the table still holds the socket `inode` for the 4-tuple, asked now (not from the recent answers).
    pub fn still_holds(&mut self, helper: &mut dyn Privileged, flow: Flow, inode: u64) -> bool {
        self.ask(helper, flow).is_some_and(|found| found.inode == inode)
    }

    fn ask(&mut self, helper: &mut dyn Privileged, (netns, ifindex, local, remote): Flow) -> Option<Found> {
        let socket = self.socket(helper, netns)?;
        // A failed exchange (the kernel did not answer in time) leaves the verdict unknown, like no socket.
        [IPPROTO_UDP, IPPROTO_UDPLITE]
            .into_iter()
            .find_map(|protocol| query(socket, protocol, ifindex, local, remote).ok().flatten())
    }

    /// Closes the sock_diag sockets idle for [`IDLE`] (and forgets the failures older than [`RETRY`]): called
    /// from the session's housekeeping every second, so that a quiet node does not keep a deleted pod's
    /// namespace alive until the next lookup.
    pub fn sweep(&mut self) {
        self.diag.retain(|_, (used, socket)| used.elapsed() < if socket.is_some() { IDLE } else { RETRY });
    }

    /// The sock_diag socket of `netns`, opened inside it when there is none (or it was idle).
    fn socket(&mut self, helper: &mut dyn Privileged, netns: u64) -> Option<&Socket> {
        self.sweep();
        if !self.diag.contains_key(&netns) {
            let opened = if netns::own() == Some(netns) { open() } else { helper.diag_socket(netns).and_then(prepare) };
            if let Err(why) = &opened
                && self.said.len() < 4096
                && self.said.insert(netns)
            {
                say_unreadable(netns, why);
            }
            self.diag.insert(netns, (Instant::now(), opened.ok()));
        }
        let (used, socket) = self.diag.get_mut(&netns)?;
        if socket.is_some() {
            *used = Instant::now();
        }
        socket.as_ref()
    }
}

/// A sock_diag socket of the calling thread's namespace, once the kernel showed it can list UDP sockets:
/// without `udp_diag` (a module, loaded on first use where modprobe can) it answers every lookup "no such
/// socket", which must not pass for an answer.
fn open() -> io::Result<Socket> {
    prepare_socket(Socket::new(NETLINK_SOCK_DIAG)?)
}

/// A sock_diag socket opened in another namespace, made ready as [`open`] makes one.
fn prepare(fd: OwnedFd) -> io::Result<Socket> {
    // SAFETY: an owned netlink socket's descriptor, whose ownership passes to the `Socket`.
    prepare_socket(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd.into_raw_fd()) })
}

fn prepare_socket(mut socket: Socket) -> io::Result<Socket> {
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    set_receive_timeout(&socket, ANSWER_TIMEOUT)?;
    // A dump of no state lists nothing, but only a kernel that can list UDP sockets answers it with Done.
    let mut probe =
        request(IPPROTO_UDP, 0, "0.0.0.0:0".parse().expect("an address"), "0.0.0.0:0".parse().expect("an address"));
    probe.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    if let NetlinkPayload::InnerMessage(SockDiagMessage::InetRequest(request)) = &mut probe.payload {
        request.states = StateFlags::empty();
    }
    match exchange(&socket, &mut probe)?.payload {
        NetlinkPayload::Done(_) => Ok(socket),
        NetlinkPayload::Error(e) => Err(io::Error::other(format!("the kernel cannot list UDP sockets: {e}"))),
        other => Err(io::Error::other(format!("unexpected answer to a socket dump: {other:?}"))),
    }
}

/// The request for the socket an error quoting `local -> remote` would match. The kernel's fields are the
/// receive path's: `src` is the peer, `dst` the local socket ("swapped for historical reasons").
fn request(protocol: u8, ifindex: u32, local: SocketAddr, remote: SocketAddr) -> NetlinkMessage<SockDiagMessage> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: if local.is_ipv4() { AF_INET } else { AF_INET6 },
            protocol,
            extensions: ExtensionFlags::SKMEMINFO,
            states: StateFlags::all(),
            socket_id: SocketId {
                source_port: remote.port(),
                destination_port: local.port(),
                source_address: remote.ip(),
                destination_address: local.ip(),
                interface_id: ifindex,
                // INET_DIAG_NOCOOKIE: any socket, whatever its cookie.
                cookie: [0xff; 8],
            },
        })
        .into(),
    )
}

/// Asks once; `Ok(None)` when the table holds no such socket.
fn query(
    socket: &Socket,
    protocol: u8,
    ifindex: u32,
    local: SocketAddr,
    remote: SocketAddr,
) -> io::Result<Option<Found>> {
    let reply = exchange(socket, &mut request(protocol, ifindex, local, remote))?;
    Ok(match reply.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
            let cookie = response.header.socket_id.cookie;
            let id = &response.header.socket_id;
            Some(Found {
                local: SocketAddr::new(id.source_address, id.source_port),
                rcvbuf: response.nlas.iter().find_map(|nla| match nla {
                    Nla::MemInfo(m) => Some(m.receive_queue_max),
                    _ => None,
                }),
                connected: response.header.state == TCP_ESTABLISHED,
                inode: u64::from(response.header.inode),
                cookie: u64::from(u32::from_ne_bytes(cookie[..4].try_into().expect("4 bytes")))
                    | u64::from(u32::from_ne_bytes(cookie[4..].try_into().expect("4 bytes"))) << 32,
            })
        }
        // -ENOENT: no such socket.
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;
    use crate::pipeline::enrich::owner::tests::inode_of;

    #[test]
    fn the_sweep_closes_idle_sockets_and_keeps_busy_ones() {
        let mut table = SocketTable::default();
        let long_ago = Instant::now().checked_sub(IDLE + Duration::from_secs(1)).expect("a clock past boot");
        table.diag.insert(1, (long_ago, Some(open().expect("a sock_diag socket"))));
        table.diag.insert(2, (Instant::now(), Some(open().expect("a sock_diag socket"))));
        table.diag.insert(3, (long_ago, None));
        table.sweep();
        assert_eq!(table.diag.keys().copied().collect::<Vec<_>>(), [2]);
    }

    /// This process's own sockets, in its own namespace: a connected one by its peer, an unconnected one
    /// whatever the peer, and nothing for a 4-tuple no socket has.
    #[test]
    fn finds_connected_and_unconnected_sockets_by_the_quoted_tuple() {
        let here = netns::own().unwrap();
        let mut table = SocketTable::default();
        let mut helper = super::super::privileged::Local::default();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let connected = UdpSocket::bind("127.0.0.1:0").unwrap();
        connected.connect(peer).unwrap();
        // The interface the error came in on (loopback's is 1) does not matter to an unbound socket.
        let on_lo = table.find(&mut helper, (here, 1, connected.local_addr().unwrap(), peer));
        assert_eq!(on_lo.map(|f| f.inode), Some(inode_of(&connected)), "found through lo");
        let found =
            table.find(&mut helper, (here, 0, connected.local_addr().unwrap(), peer)).expect("the connected socket");
        assert!(found.connected);
        assert_eq!(found.inode, inode_of(&connected));
        assert_ne!(found.cookie, 0);
        let unconnected = UdpSocket::bind("127.0.0.1:0").unwrap();
        let found = table
            .find(&mut helper, (here, 0, unconnected.local_addr().unwrap(), peer))
            .expect("the unconnected socket");
        assert!(!found.connected);
        assert_eq!(found.inode, inode_of(&unconnected));
        let gone = unconnected.local_addr().unwrap();
        drop(unconnected);
        // Remembered for a second, then asked again.
        assert!(table.find(&mut helper, (here, 0, gone, peer)).is_some());
        table.recent.clear();
        assert_eq!(table.find(&mut helper, (here, 0, gone, peer)), None);
        let v6 = UdpSocket::bind("[::1]:0").unwrap();
        let found = table
            .find(&mut helper, (here, 0, v6.local_addr().unwrap(), "[::1]:9".parse().unwrap()))
            .expect("an IPv6 socket");
        assert_eq!(found.inode, inode_of(&v6));
    }
}
