//! The helper's side: each request checked against what the helper holds, answered, and nothing else.
//! A request for a map it does not hold, or a call it does not make on this kernel, is refused; so is a
//! conntrack question about anything but a UDP or UDP-Lite flow of one family; a
//! namespace is entered only if a process is in it or a name refers to it (`Local::namespace`); a
//! descriptor is copied out of a process only to read its tunnel type, and only if it is the socket asked
//! about (`owner::encap_type`). The end of the stream (the tracer exited) ends the helper.

use std::{
    io,
    os::{fd::AsFd as _, unix::net::UnixStream},
    time::{Duration, Instant},
};

use caps::Capability;

use super::wire::{self, Failure, Owner, Reply, Request};
use crate::{
    kernel::{maps::RawMap, misses::Misses},
    pipeline::enrich::{
        owner::Lookup,
        privileged::{Local, Privileged},
        runtime,
    },
};

/// The programs' maps and statistics, held by the helper on kernels whose `bpf()` wants CAP_BPF for every
/// call (before 5.19, see [`bpf_through_helper`]); `None` elsewhere, where the tracer calls them itself.
pub struct Bpf {
    pub maps: Vec<RawMap>,
    pub misses: Misses,
}

/// Whether the tracer's map calls must go through the helper: before 5.19, `__sys_bpf()` refuses every
/// command to a caller without CAP_BPF (or CAP_SYS_ADMIN) while `kernel.unprivileged_bpf_disabled` is set
/// (kernel/bpf/syscall.c); 5.19 (commit c8644cd0efe7) refuses only the commands that create maps and load
/// programs, and from then on calls through descriptors already held need no capability.
pub fn bpf_through_helper() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|release| bpf_through_helper_on(&release))
}

fn bpf_through_helper_on(release: &str) -> bool {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let disabled =
        std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled").map_or(true, |value| value.trim() != "0");
    version < (5, 19) && disabled
}

/// What the helper keeps: CAP_SYS_ADMIN (`setns` into another network namespace, for its socket table and
/// counters), CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (other processes' `/proc/PID/fd`, `pidfd_getfd` for a
/// socket's tunnel type), CAP_NET_ADMIN (ctnetlink: every netfilter netlink message, a conntrack lookup
/// too, needs it of the socket's opener and of the sender, `nfnetlink_rcv`, net/netfilter/nfnetlink.c, 5.10
/// to 6.18), and, before 5.19, CAP_BPF for the map calls it makes for the tracer.
pub fn capabilities(bpf: bool) -> Vec<Capability> {
    let mut kept = vec![
        Capability::CAP_DAC_READ_SEARCH,
        Capability::CAP_NET_ADMIN,
        Capability::CAP_SYS_PTRACE,
        Capability::CAP_SYS_ADMIN,
    ];
    if bpf {
        kept.push(Capability::CAP_BPF);
    }
    kept
}

/// Answers the tracer's requests until it closes its end; how the helper's loop ended.
pub fn serve(stream: &UnixStream, local: &mut Local, bpf: Option<&Bpf>) -> io::Result<()> {
    loop {
        let request = match wire::receive::<Request>(stream) {
            Ok((request, _)) => request,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        match answer(local, bpf, request) {
            (reply, Some(fd)) => wire::send(stream, &reply, Some(fd.as_fd()))?,
            (reply, None) => wire::send(stream, &reply, None)?,
        }
    }
}

/// One request's reply, and the descriptor that goes with it.
fn answer(local: &mut Local, bpf: Option<&Bpf>, request: Request) -> (Reply, Option<std::os::fd::OwnedFd>) {
    let reply = match request {
        Request::Owner { ino, seen_ago_us, may_wait } => {
            let now = Instant::now();
            let seen = now.checked_sub(Duration::from_micros(seen_ago_us)).unwrap_or(now);
            Reply::Owner(match local.owner(ino, seen, may_wait) {
                Lookup::Found(holder) => Owner::Found(holder),
                Lookup::Later(at) => {
                    Owner::Later { after_us: u64::try_from(at.saturating_duration_since(now).as_micros()).unwrap_or(0) }
                }
                Lookup::Unknown | Lookup::Unasked => Owner::Unknown,
            })
        }
        Request::OwnersEnd => {
            local.owners_end();
            Reply::Done
        }
        Request::Tunnel { ino, pid } => Reply::Tunnel(local.tunnel(ino, pid).unwrap_or(false)),
        Request::DiagSocket { netns } => match local.diag_socket(netns) {
            Ok(fd) => return (Reply::DiagSocket(Ok(())), Some(fd)),
            Err(e) => Reply::DiagSocket(Err(Failure::from(&e))),
        },
        Request::RateLimits => Reply::RateLimits(local.rate_limits()),
        Request::Conntrack { netns, flow } if flow.valid() => Reply::Conntrack(local.conntrack(netns, flow)),
        Request::Conntrack { flow, .. } => Reply::Refused(format!("conntrack holds no flow {flow:?}")),
        Request::Bundle { id } if runtime::is_container_id(&id) => match local.bundle(&id) {
            Some((runtime, file)) => return (Reply::Bundle(Some(runtime)), Some(file.into())),
            None => Reply::Bundle(None),
        },
        Request::Bundle { id } => Reply::Refused(format!("{id:?} is not a container id")),
        Request::NetnsMembers { netns } => Reply::NetnsMembers(local.netns_members(netns)),
        Request::Map { map, op } => match bpf.and_then(|bpf| bpf.maps.iter().find(|held| held.name() == map)) {
            Some(held) => Reply::Map(held.direct(op).map_err(|e| Failure::from(&e))),
            None => Reply::Refused(format!("no map {map:?} is held for the tracer")),
        },
        Request::ProgramMisses => match bpf {
            Some(bpf) => Reply::Misses(Ok(bpf.misses.total())),
            None => Reply::Refused("the tracer reads the programs' statistics itself on this kernel".to_owned()),
        },
    };
    (reply, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::enrich::conntrack::Flow;

    #[test]
    fn map_calls_go_through_the_helper_before_5_19_only() {
        // The sysctl is set on every kernel the matrix boots; where it is not, nothing goes through.
        let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
            .map_or(true, |value| value.trim() != "0");
        assert_eq!(bpf_through_helper_on("5.10.0-46-cloud-amd64"), disabled);
        assert_eq!(bpf_through_helper_on("5.18.19"), disabled);
        assert!(!bpf_through_helper_on("5.19.0"));
        assert!(!bpf_through_helper_on("6.1.0-57-cloud-amd64"));
        assert!(!bpf_through_helper_on("7.3.4+deb13-cloud-amd64"));
    }

    /// A request for a map the helper does not hold, or a statistic it does not read on this kernel, is
    /// refused, not answered.
    #[test]
    fn refuses_what_it_does_not_hold() {
        let mut local = Local::default();
        let (reply, _) =
            answer(&mut local, None, Request::Map { map: "OWNERS".to_owned(), op: crate::kernel::maps::MapOp::Keys });
        assert!(matches!(reply, Reply::Refused(_)), "{reply:?}");
        let (reply, _) = answer(&mut local, None, Request::ProgramMisses);
        assert!(matches!(reply, Reply::Refused(_)), "{reply:?}");
        // A conntrack question about TCP, or about a flow of two families.
        let (src, dst) = ("10.0.0.5:41234".parse().unwrap(), "10.96.0.10:53".parse().unwrap());
        for flow in [Flow { src, dst, proto: 6 }, Flow { src, dst: "[fd00::10]:53".parse().unwrap(), proto: 17 }] {
            let (reply, _) = answer(&mut local, None, Request::Conntrack { netns: 1, flow });
            assert!(matches!(reply, Reply::Refused(_)), "{reply:?}");
        }
    }

    /// The tracer's requests answered by a helper on the other end of a socketpair, as after the split: this
    /// process's own socket's owner, and a namespace no process is in refused.
    #[test]
    fn answers_over_a_socketpair() {
        let (tracer, helper) = UnixStream::pair().unwrap();
        let serving = std::thread::spawn(move || serve(&helper, &mut Local::default(), None));
        let mut client = super::super::client::Client::new(tracer, 0, false).unwrap();
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ino = crate::pipeline::enrich::owner::tests::inode_of(&socket);
        let Lookup::Found(holder) = client.owner(ino, Instant::now(), false) else {
            panic!("the socket's owner")
        };
        assert_eq!(holder.pid, std::process::id());
        assert!(client.diag_socket(1).is_err());
        // A flow no entry holds, in this process's namespace: asked and answered, none.
        let flow = Flow::new("127.0.0.1:9".parse().unwrap(), "127.0.0.1:7".parse().unwrap(), 17).unwrap();
        assert_eq!(client.conntrack(crate::pipeline::netns::own().unwrap(), flow), None);
        assert_eq!(client.gone(), None);
        drop(client);
        serving.join().unwrap().unwrap();
    }
}
