//! What crosses the socketpair between the tracer and the helper: typed requests and replies (postcard),
//! each framed by its length, and a descriptor beside a reply that hands one over (`SCM_RIGHTS`).

use std::{
    io::{self, Read as _},
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::net::UnixStream,
    },
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    domain::Translation,
    kernel::maps::{MapOp, MapReply},
    pipeline::{
        counters::RateLimits,
        enrich::{conntrack::Flow, owner::Holder, runtime::Runtime},
    },
};

/// What the tracer may ask. The helper checks each against what it holds before it acts.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// The process /proc names for socket `ino`, for an event that arrived `seen_ago_us` ago.
    Owner { ino: u64, seen_ago_us: u64, may_wait: bool },
    /// The session is ending: every owner asked for from now on was recorded before now.
    OwnersEnd,
    /// Whether socket `ino` is a tunnel's (`UDP_ENCAP` set), asked through a descriptor of its holder; `pid`:
    /// the owner the kernel recorded, searched when no /proc scan saw the socket.
    Tunnel { ino: u64, pid: Option<u32> },
    /// A sock_diag socket of network namespace `netns` (a namespace in use), handed over beside the reply.
    DiagSocket { netns: u64 },
    /// The ICMP rate-limit counters of every network namespace in use.
    RateLimits,
    /// The translated conntrack entry of network namespace `netns` (a namespace in use) holding `flow`, a
    /// UDP or UDP-Lite flow.
    Conntrack { netns: u64, flow: Flow },
    /// Container `id`'s runtime bundle, handed over beside the reply; `id` is 64 hex digits.
    Bundle { id: String },
    /// Some of the processes in network namespace `netns`.
    NetnsMembers { netns: u64 },
    /// A call on one of the programs' maps the helper holds (kernels before 5.19 only).
    Map { map: String, op: MapOp },
    /// The programs' runs the kernel skipped (kernels before 5.19 only).
    ProgramMisses,
}

/// A failed call, as `io::Error` says it: its errno, where there is one, and its words.
#[derive(Debug, Serialize, Deserialize)]
pub struct Failure {
    pub errno: Option<i32>,
    pub message: String,
}

impl From<&io::Error> for Failure {
    fn from(e: &io::Error) -> Self {
        Self { errno: e.raw_os_error(), message: e.to_string() }
    }
}

impl From<Failure> for io::Error {
    fn from(f: Failure) -> Self {
        match f.errno {
            Some(errno) => io::Error::from_raw_os_error(errno),
            None => io::Error::other(f.message),
        }
    }
}

/// What /proc said of a socket ([`crate::pipeline::enrich::owner::Lookup`], its instant as a delay).
#[derive(Debug, Serialize, Deserialize)]
pub enum Owner {
    Found(Holder),
    Unknown,
    Later { after_us: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Owner(Owner),
    Done,
    Tunnel(bool),
    /// The socket comes beside it when `Ok`.
    DiagSocket(Result<(), Failure>),
    RateLimits(Vec<(u64, Result<RateLimits, String>)>),
    Conntrack(Option<Translation>),
    /// The bundle's file comes beside it when `Some`.
    Bundle(Option<Runtime>),
    NetnsMembers(Vec<u32>),
    Map(Result<MapReply, Failure>),
    Misses(Result<u64, Failure>),
    /// A request the helper does not take: a map it does not hold, a call it does not make on this kernel.
    Refused(String),
}

/// The largest frame either side reads: a request is small; the largest reply, a map's keys, is bounded by
/// the map's entries (the tallies' 16,384 records of under 200 bytes).
const MAX_FRAME: usize = 16 << 20;

/// Sends `message`, with `fd` beside it when there is one.
pub fn send(stream: &UnixStream, message: &impl Serialize, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let body = postcard::to_stdvec(message).map_err(io::Error::other)?;
    let mut frame = u32::try_from(body.len()).map_err(io::Error::other)?.to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    let mut sent = 0;
    while sent < frame.len() {
        let mut iov = libc::iovec { iov_base: frame[sent..].as_ptr() as *mut _, iov_len: frame.len() - sent };
        // Room for one descriptor's control message, aligned as cmsghdr wants.
        let mut control = [0u64; 4];
        // SAFETY: a zeroed msghdr is valid; every pointer it gets points into locals that outlive the call.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &raw mut iov;
        header.msg_iovlen = 1;
        if let Some(fd) = fd.filter(|_| sent == 0) {
            // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; the control buffer holds CMSG_SPACE(4) bytes (24 of 32).
            unsafe {
                header.msg_control = control.as_mut_ptr().cast();
                header.msg_controllen = libc::CMSG_SPACE(size_of::<i32>() as u32) as _;
                let cmsg = libc::CMSG_FIRSTHDR(&header);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<i32>() as u32) as _;
                libc::CMSG_DATA(cmsg).cast::<i32>().write_unaligned(fd.as_raw_fd());
            }
        }
        // SAFETY: a valid socket and the message built above.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &header, libc::MSG_NOSIGNAL) };
        match n {
            n if n > 0 => sent += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Reads one message, and the descriptor that came with it if one did. The end of the stream (the other
/// side exited) is `UnexpectedEof`.
pub fn receive<T: DeserializeOwned>(stream: &UnixStream) -> io::Result<(T, Option<OwnedFd>)> {
    let mut length = [0u8; 4];
    let mut fd = None;
    let mut got = 0;
    while got < length.len() {
        let mut iov = libc::iovec { iov_base: length[got..].as_mut_ptr().cast(), iov_len: length.len() - got };
        let mut control = [0u64; 4];
        // SAFETY: as in `send`.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &raw mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = size_of_val(&control) as _;
        // SAFETY: a valid socket and a message whose buffers live through the call.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut header, libc::MSG_CMSG_CLOEXEC) };
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
        // SAFETY: the kernel filled the control buffer it was given; each header is read within it.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&header);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    // Every descriptor that came is owned, and all but the first closed here: a peer that
                    // sends more (never udptrace's own) cannot fill this process's table.
                    let data = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..data / size_of::<i32>() {
                        let received = libc::CMSG_DATA(cmsg).cast::<i32>().add(i).read_unaligned();
                        let owned = OwnedFd::from_raw_fd(received);
                        fd.get_or_insert(owned);
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&header, cmsg);
            }
        }
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_FRAME {
        return Err(io::Error::other(format!("a message of {length} bytes, more than any the other side sends")));
    }
    let mut body = vec![0; length];
    (&*stream).read_exact(&mut body)?;
    let message = postcard::from_bytes(&body).map_err(|e| io::Error::other(format!("an undecodable message: {e}")))?;
    Ok((message, fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd as _;

    /// A request and a reply with a descriptor cross a socketpair whole; the descriptor is a working copy.
    #[test]
    fn messages_and_descriptors_cross() {
        let (tracer, helper) = UnixStream::pair().unwrap();
        send(&tracer, &Request::Owner { ino: 7, seen_ago_us: 12, may_wait: true }, None).unwrap();
        let (request, fd) = receive::<Request>(&helper).unwrap();
        assert!(matches!(request, Request::Owner { ino: 7, seen_ago_us: 12, may_wait: true }));
        assert!(fd.is_none());
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        send(&helper, &Reply::DiagSocket(Ok(())), Some(socket.as_fd())).unwrap();
        let (reply, fd) = receive::<Reply>(&tracer).unwrap();
        assert!(matches!(reply, Reply::DiagSocket(Ok(()))));
        let copy = std::net::UdpSocket::from(fd.expect("the descriptor"));
        assert_eq!(copy.local_addr().unwrap(), socket.local_addr().unwrap());
        drop(helper);
        assert_eq!(receive::<Reply>(&tracer).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A length beyond the largest frame is refused before anything is allocated for it.
    #[test]
    fn an_oversized_frame_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &a, &u32::MAX.to_le_bytes()).unwrap();
        assert!(receive::<Request>(&b).unwrap_err().to_string().contains("more than any"));
    }
}
