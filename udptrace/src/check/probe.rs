//! The probe socket: one connected UDP socket with `IP_RECVERR`/`IPV6_RECVERR`, so that every ICMP error
//! about it, soft ones too, is queued with its sender (`sock_extended_err`, ip(7)), readable without
//! privileges.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use super::state::{LocalError, QueuedIcmp};
use crate::domain::Family;

/// What the socket said while waiting.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    /// A datagram, as it came.
    Answer(Vec<u8>),
    Icmp(QueuedIcmp),
    Local(LocalError),
    /// Nothing until the deadline.
    Nothing,
}

pub struct Probe {
    socket: UdpSocket,
}

impl Probe {
    /// A socket connected to `target`; the kernel chooses the route and the source address here, so an
    /// unroutable target fails now (`connect` in the returned error).
    pub fn connect(target: SocketAddr) -> Result<Self, ProbeError> {
        let (any, family) = match target {
            SocketAddr::V4(_) => (SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), Family::Ipv4),
            SocketAddr::V6(_) => (SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0), Family::Ipv6),
        };
        let socket = UdpSocket::bind(any).map_err(ProbeError::Io)?;
        let (level, name) = match family {
            Family::Ipv4 => (libc::SOL_IP, libc::IP_RECVERR),
            Family::Ipv6 => (libc::SOL_IPV6, libc::IPV6_RECVERR),
        };
        set_int(socket.as_raw_fd(), level, name, 1).map_err(ProbeError::Io)?;
        match socket.connect(target) {
            Ok(()) => Ok(Self { socket }),
            Err(e) => match e.raw_os_error() {
                Some(errno) => Err(ProbeError::Local(LocalError { call: "connect", errno })),
                None => Err(ProbeError::Io(e)),
            },
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket.peer_addr()
    }

    /// Sends one probe; a refusal is the kernel's answer (`Err(Local)`), not a failure of the check.
    pub fn send(&self, payload: &[u8]) -> Result<(), LocalError> {
        match self.socket.send(payload) {
            Ok(_) => Ok(()),
            Err(e) => Err(LocalError { call: "send", errno: e.raw_os_error().unwrap_or(libc::EIO) }),
        }
    }

    /// Waits until `deadline` for an answer or an error; the error queue is read first, so that the ICMP
    /// behind an errno is what is reported.
    pub fn wait(&self, deadline: Instant) -> io::Result<Heard> {
        let fd = self.socket.as_raw_fd();
        loop {
            if let Some(heard) = self.read_error_queue()? {
                return Ok(heard);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&raw mut poll, 1, ms) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if ready == 0 {
                return Ok(Heard::Nothing);
            }
            if poll.revents & libc::POLLERR != 0 {
                continue;
            }
            let mut buf = [0u8; 65536];
            match self.socket.recv(&mut buf) {
                Ok(size) => return Ok(Heard::Answer(buf[..size].to_vec())),
                // The error queue is read above; what is left is an errno without a queued error.
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => continue,
                    Some(errno) => return Ok(Heard::Local(LocalError { call: "recv", errno })),
                    None => return Err(e),
                },
            }
        }
    }

    /// One error from the queue, if any; the socket's pending errno it also set is cleared with it.
    fn read_error_queue(&self) -> io::Result<Option<Heard>> {
        let fd = self.socket.as_raw_fd();
        let mut data = [0u8; 2048];
        // Room for a `sock_extended_err` and its offender's address, aligned for cmsghdr.
        let mut control = [0u64; 64];
        let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
        // SAFETY: zero is a valid msghdr; its pointers are set to live buffers below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control) as _;
        // SAFETY: a valid socket and a msghdr whose buffers outlive the call.
        let got = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                _ => Err(e),
            };
        }
        // The errno the error also left pending (sk_err) would fail the next send: it is this one.
        let _ = take_socket_error(fd);
        // SAFETY: the kernel filled msg_control up to msg_controllen; CMSG_* walk within it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            while !cmsg.is_null() {
                let header = &*cmsg;
                let ours = matches!(
                    (header.cmsg_level, header.cmsg_type),
                    (libc::SOL_IP, libc::IP_RECVERR) | (libc::SOL_IPV6, libc::IPV6_RECVERR)
                );
                let len = header.cmsg_len as usize;
                if ours && len >= libc::CMSG_LEN(size_of::<libc::sock_extended_err>() as u32) as usize {
                    let data = libc::CMSG_DATA(cmsg);
                    let ee = std::ptr::read_unaligned(data.cast::<libc::sock_extended_err>());
                    let rest = len - libc::CMSG_LEN(size_of::<libc::sock_extended_err>() as u32) as usize;
                    let offender = offender(data.add(size_of::<libc::sock_extended_err>()), rest);
                    return Ok(Some(heard(&ee, offender)));
                }
                cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
            }
        }
        // A queued error without the control message: its errno is all there is.
        Ok(Some(Heard::Local(LocalError { call: "error queue", errno: libc::EIO })))
    }
}

/// What a queued error says.
fn heard(ee: &libc::sock_extended_err, from: Option<IpAddr>) -> Heard {
    let errno = ee.ee_errno as i32;
    match ee.ee_origin {
        libc::SO_EE_ORIGIN_ICMP => Heard::Icmp(QueuedIcmp {
            family: Family::Ipv4,
            icmp_type: ee.ee_type,
            code: ee.ee_code,
            errno,
            from: from.map(unmapped),
        }),
        libc::SO_EE_ORIGIN_ICMP6 => {
            Heard::Icmp(QueuedIcmp { family: Family::Ipv6, icmp_type: ee.ee_type, code: ee.ee_code, errno, from })
        }
        _ => Heard::Local(LocalError { call: "error queue", errno }),
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The offender's address after a `sock_extended_err` (`SO_EE_OFFENDER`); `None` for `AF_UNSPEC`, which
/// the kernel sends when it has no address.
///
/// # Safety
/// `at` points to `len` readable bytes.
unsafe fn offender(at: *const u8, len: usize) -> Option<IpAddr> {
    if len < size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: the caller's bounds; unaligned reads of plain structs.
    unsafe {
        let family = std::ptr::read_unaligned(at.cast::<libc::sa_family_t>());
        match i32::from(family) {
            libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
                let sin = std::ptr::read_unaligned(at.cast::<libc::sockaddr_in>());
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
            }
            libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
                let sin6 = std::ptr::read_unaligned(at.cast::<libc::sockaddr_in6>());
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

fn take_socket_error(fd: RawFd) -> io::Result<i32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket and an int-sized buffer.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&raw mut value).cast(), &raw mut len) };
    if rc == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
}

fn set_int(fd: RawFd, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid socket and an int-sized value.
    let rc = unsafe {
        libc::setsockopt(fd, level, name, (&raw const value).cast(), size_of::<libc::c_int>() as libc::socklen_t)
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Why no probe could be sent.
#[derive(Debug)]
pub enum ProbeError {
    /// The kernel refused the connect: that is the answer.
    Local(LocalError),
    /// The socket itself failed.
    Io(io::Error),
}

/// How long to wait between probes when nothing came back.
pub const SPACING: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed port on loopback: the kernel's port unreachable comes back through the error queue, from
    /// the target itself, without privileges.
    #[test]
    fn a_closed_loopback_port_queues_a_port_unreachable() {
        // A port that was just free: bind, note, close.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let probe = Probe::connect(target).map_err(|e| format!("{e:?}")).unwrap();
        probe.send(b"").unwrap();
        let heard = probe.wait(Instant::now() + Duration::from_secs(2)).unwrap();
        let Heard::Icmp(icmp) = heard else { panic!("{heard:?}") };
        assert_eq!((icmp.family, icmp.icmp_type, icmp.code), (Family::Ipv4, 3, 3));
        assert_eq!(icmp.errno, libc::ECONNREFUSED);
        assert_eq!(icmp.from, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        // The pending errno went with it: the next send works.
        probe.send(b"").unwrap();
    }

    #[test]
    fn an_answer_is_heard() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let probe = Probe::connect(server.local_addr().unwrap()).map_err(|e| format!("{e:?}")).unwrap();
        probe.send(b"ping").unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(&buf[..n], from).unwrap();
        assert_eq!(probe.wait(Instant::now() + Duration::from_secs(2)).unwrap(), Heard::Answer(b"ping".to_vec()));
    }

    #[test]
    fn mapped_addresses_are_told_as_ipv4() {
        assert_eq!(unmapped("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(unmapped("fd00::1".parse().unwrap()), "fd00::1".parse::<IpAddr>().unwrap());
    }
}
