//! A request and its answer on a netlink socket, for every family udptrace speaks: sock_diag (the socket
//! tables), rtnetlink (`check`'s route and neighbour), ctnetlink (conntrack's entries).

use std::{io, time::Duration};

use netlink_packet_core::NetlinkMessage;
use netlink_sys::Socket;

/// The sequence numbers of this process's netlink requests.
static SEQUENCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Late answers to earlier requests (one that came after its receive timeout) read past before giving up.
const LATE_ANSWERS: usize = 16;

/// Sends `message` on a netlink socket and reads its answer: the kernel echoes the request's sequence number,
/// and an answer to an earlier request, which arrived after that one gave up, is read past.
pub fn exchange<T>(socket: &Socket, message: &mut NetlinkMessage<T>) -> io::Result<NetlinkMessage<T>>
where
    T: netlink_packet_core::NetlinkSerializable + netlink_packet_core::NetlinkDeserializable + std::fmt::Debug,
{
    let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    message.header.sequence_number = sequence;
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut answer = Vec::with_capacity(8192);
    answer_to(sequence, || {
        answer.clear();
        socket.recv(&mut answer, 0)?;
        NetlinkMessage::<T>::deserialize(&answer).map_err(io::Error::other)
    })
}

/// The first of the messages `read` gives that answers request `sequence`.
fn answer_to<T>(
    sequence: u32,
    mut read: impl FnMut() -> io::Result<NetlinkMessage<T>>,
) -> io::Result<NetlinkMessage<T>> {
    for _ in 0..=LATE_ANSWERS {
        let message = read()?;
        if message.header.sequence_number == sequence {
            return Ok(message);
        }
    }
    Err(io::Error::other(format!("no answer to netlink request {sequence} among {LATE_ANSWERS} late ones")))
}

/// How long a netlink socket waits for the kernel's answer.
pub fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval { tv_sec: timeout.as_secs() as _, tv_usec: timeout.subsec_micros() as _ };
    // SAFETY: a valid socket and a valid timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NetlinkHeader, NetlinkPayload};

    use super::*;

    #[test]
    fn a_late_answer_to_an_earlier_request_is_read_past() {
        let message = |sequence: u32| {
            let mut header = NetlinkHeader::default();
            header.sequence_number = sequence;
            NetlinkMessage::new(header, NetlinkPayload::<netlink_packet_route::RouteNetlinkMessage>::Noop)
        };
        let mut queued = vec![message(7), message(6)];
        let answer = answer_to(7, || queued.pop().ok_or_else(|| io::Error::other("none left"))).unwrap();
        assert_eq!(answer.header.sequence_number, 7);
        let mut late = (0..).map(message);
        assert!(answer_to(1_000, || Ok(late.next().unwrap())).is_err());
    }
}
