//! What user space adds to a decoded event: which socket ignored an error the kernel reported to nobody
//! (`sockets`, from the namespace's socket table), the errno an ignored error would have given, the
//! socket's owner where no program recorded one (`owner`, from /proc: a socket created before udptrace
//! started), why this host sent an ICMP error (`cause`, from the kernel stack), the conntrack entry of a
//! translated flow where the program had none to read (`conntrack`, from ctnetlink).
//!
//! Events leave in the order they came. An event whose socket /proc has not been scanned for yet waits for
//! the next scan (at most a second), and the events behind it wait with it.

pub mod cause;
pub mod conntrack;
pub mod owner;
pub mod pods;
pub mod privileged;
pub mod recent;
pub mod runtime;
pub mod sockets;

use std::{collections::VecDeque, time::Instant};

use self::{
    cause::Symbols,
    conntrack::Flow,
    owner::{Cgroups, Lookup},
    pods::Pods,
    privileged::{Local, Privileged},
    recent::Recent,
    sockets::SocketTable,
};
use udptrace_common::{icmp, icmpv6};

use crate::{
    domain::{Cause, Direction, Errno, Family, OwnerInfo, Translation, Verdict, icmp_errno},
    events::record::recorded_owner,
    events::{Event, SocketError, UdpDropped},
    kernel::maps::HashMap,
};

/// The programs' records of sockets' creators (`OWNERS`), by socket cookie.
pub type Creators = HashMap<u64, udptrace_common::Owner>;

/// Events that may wait for an owner scan; one more scans at once. A second of a flood of errors on
/// sockets opened since the last scan.
const MAX_WAITING: usize = 16_384;

/// How long a stack's cause is taken as classified: as long as the programs reuse a flow's stack
/// (`STACK_REUSE_NS` in udptrace-ebpf's icmp_sent.rs), so that a module loaded or unloaded since shows as soon.
const LAST_CAUSE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// A stack as classified: its ICMP error's family, type and code, the cause, and when.
struct Classified {
    stack: Box<[u64]>,
    of: (Family, u8, u8),
    cause: Cause,
    at: Instant,
}

pub struct Enricher {
    kallsyms: Symbols,
    /// The last stack classified, its cause, and when: a flood's errors share their flow's stack, which the
    /// programs walk once a second, and classifying it again (a table search per frame) was a tenth of the
    /// text output's time per error. Kept as long as the programs keep a stack (`LAST_CAUSE_FOR`).
    last_cause: Option<Classified>,
    /// What takes a privilege: /proc's owners, other namespaces' socket tables, a socket's tunnel type.
    helper: Box<dyn Privileged>,
    owners: Owners,
    sockets: SocketTable,
    /// Lately, by socket inode: whether a socket no process holds was still in the table (the kernel's own),
    /// and whether a socket's holder shows it a tunnel's. A flood of errors about one socket asks once.
    kernel_sockets: Recent<u64, bool>,
    tunnels: Recent<u64, Option<bool>>,
    /// Conntrack's entries of translated flows, for events whose program read none.
    conntracks: Conntracks,
    /// The Kubernetes pods of owners and network namespaces.
    pods: Pods,
    /// Sockets' creators as the programs recorded them, for sockets found in the socket table.
    creators: Option<Creators>,
    /// The names of this kernel's drop reasons (`enum skb_drop_reason`), by value.
    drop_reasons: std::collections::HashMap<u32, String>,
    /// When the module list was last compared with the symbols' (see `name_drop`).
    modules_checked: Instant,
    /// Print each `icmp_sent`'s kernel stack.
    verbose: bool,
    /// Events in arrival order, with when each arrived and whether its owner is still to be looked up.
    queue: VecDeque<(Event, Instant, bool)>,
    /// When the event at the front may ask /proc again, while it waits.
    wake_at: Option<Instant>,
    /// Once ending, nothing waits: /proc is scanned at once.
    ending: bool,
}

impl Enricher {
    /// The kernel's symbols are read when an event first needs one.
    pub fn new(
        creators: Option<Creators>,
        cgroup_root: Option<std::path::PathBuf>,
        drop_reasons: std::collections::HashMap<u32, String>,
        verbose: bool,
    ) -> Self {
        Self {
            kallsyms: Symbols::Unread,
            last_cause: None,
            helper: Box::new(Local::default()),
            pods: Pods::new(cgroup_root.clone(), crate::pipeline::netns::own()),
            owners: Owners { cgroups: Cgroups::new(cgroup_root), recent: Recent::default() },
            sockets: SocketTable::default(),
            kernel_sockets: Recent::default(),
            tunnels: Recent::default(),
            conntracks: Conntracks::new(crate::pipeline::netns::own()),
            creators,
            drop_reasons,
            modules_checked: Instant::now(),
            verbose,
            queue: VecDeque::new(),
            wake_at: None,
            ending: false,
        }
    }

    /// From now on what takes a privilege is asked of `helper` (the split).
    pub fn use_helper(&mut self, helper: Box<dyn Privileged>) {
        self.helper = helper;
    }

    /// Takes an event that arrived at `seen`; [`Enricher::next`] hands it back when it is complete.
    pub fn push(&mut self, mut event: Event, seen: Instant) {
        let mut needs_owner = false;
        match &mut event {
            Event::SocketError(e) => {
                if e.unreported {
                    self.find_socket(e);
                }
                fill_errno(e);
                if let Some(flows) = conntrack::flows_of_error(e) {
                    let netns = u64::from(e.meta.netns);
                    e.conntrack = self.conntracks.lookup(&mut *self.helper, netns, !e.conntrack_tracked, &flows);
                }
                match &mut e.owner {
                    Some(owner) => self.owners.cgroups.complete(owner),
                    None => needs_owner = e.sock_ino.is_some(),
                }
            }
            Event::IcmpSent(e) => self.classify(e),
            Event::IcmpSuppressed(e) => {
                if let Some(attempt) = &mut e.attempt {
                    self.classify(attempt);
                }
            }
            Event::UdpDropped(e) => {
                self.name_drop(e);
                if e.local.is_none() {
                    self.find_receiving_socket(e);
                }
                if let Some(flows) = conntrack::flows_of_drop(e) {
                    let netns = u64::from(e.meta.netns);
                    e.conntrack = self.conntracks.lookup(&mut *self.helper, netns, !e.conntrack_tracked, &flows);
                }
                match &mut e.owner {
                    Some(owner) => self.owners.cgroups.complete(owner),
                    None => needs_owner = e.sock_ino.is_some(),
                }
            }
            // The other kinds carry nothing to look up.
            _ => {}
        }
        self.queue.push_back((event, seen, needs_owner));
    }

    /// The next complete event, in arrival order; `None` while the front one waits for a /proc scan.
    pub fn next_complete(&mut self) -> Option<Event> {
        let may_wait = !self.ending && self.queue.len() < MAX_WAITING;
        let (event, seen, needs_owner) = self.queue.front_mut()?;
        if *needs_owner
            && let Event::UdpDropped(e) = event
            && let Some(ino) = e.sock_ino
        {
            match self.owners.of(&mut *self.helper, ino, *seen, may_wait) {
                Lookup::Found(owner) => e.owner = Some(owner),
                // No process holds it: a kernel socket (a tunnel's), or one closed since.
                Lookup::Unknown => e.kernel_socket = e.local.is_some(),
                Lookup::Unasked => {}
                Lookup::Later(at) => {
                    self.wake_at = Some(at);
                    return None;
                }
            }
        }
        if *needs_owner
            && let Event::SocketError(e) = event
            && let Some(ino) = e.sock_ino
        {
            match self.owners.of(&mut *self.helper, ino, *seen, may_wait) {
                Lookup::Found(owner) => e.owner = Some(owner),
                Lookup::Unknown => {
                    // No process holds a socket that is still there: the kernel's own.
                    if let Some(remote) = e.remote {
                        let (sockets, helper) = (&mut self.sockets, &mut *self.helper);
                        let flow = (u64::from(e.meta.netns), e.ifindex, e.local, remote);
                        e.kernel_socket =
                            self.kernel_sockets.get_or_ask(ino, || sockets.still_holds(helper, flow, ino));
                    }
                }
                // Whether a process holds it is not known: neither an owner nor the kernel's socket.
                Lookup::Unasked => {}
                Lookup::Later(at) => {
                    self.wake_at = Some(at);
                    return None;
                }
            }
        }
        if let Event::SocketError(e) = event {
            tunnel_or_kernel(&mut *self.helper, &mut self.tunnels, e);
        }
        let (meta, owner) = match event {
            Event::SocketError(e) => (&mut e.meta, e.owner.as_ref()),
            Event::UdpDropped(e) => (&mut e.meta, e.owner.as_ref()),
            Event::IcmpSent(e) => (&mut e.meta, None),
            Event::IcmpSuppressed(e) => (&mut e.meta, None),
            Event::Lost(_) => return self.pop(),
        };
        meta.pod = self.pods.of_event(&mut *self.helper, owner, meta.netns);
        self.pop()
    }

    fn pop(&mut self) -> Option<Event> {
        self.wake_at = None;
        self.queue.pop_front().map(|(event, ..)| event)
    }

    /// When to call [`Enricher::next`] again for an event that waits for /proc.
    pub fn wake_at(&self) -> Option<Instant> {
        self.wake_at
    }

    /// Once a second: closes what lookups left idle (see [`SocketTable::sweep`]), forgets the pods of
    /// containers that are gone.
    pub fn housekeeping(&mut self) {
        self.sockets.sweep();
        self.pods.sweep();
    }

    /// From now on nothing waits: the session is ending, and the programs hand over nothing more, so one
    /// /proc scan answers every owner still to look up (`Resolver::end`).
    pub fn end(&mut self) {
        self.ending = true;
        self.helper.owners_end();
    }

    /// The kernel told no socket of `e`: the socket table says which socket took it, and so why it was
    /// ignored (the kernel drops an error for a connected socket only if it is soft, and every error for an
    /// unconnected one, without IP_RECVERR). No socket found: the verdict stays unknown.
    fn find_socket(&mut self, e: &mut SocketError) {
        let Some(remote) = e.remote else {
            return;
        };
        let flow = (u64::from(e.meta.netns), e.ifindex, e.local, remote);
        let Some(found) = self.sockets.find(&mut *self.helper, flow) else {
            return;
        };
        // A frag-needed the kernel reported to nobody was dropped for the socket's path MTU setting
        // (IP_PMTUDISC_DONT), whatever IP_RECVERR says; a packet-too-big, for IPv6's (ip6_sk_accept_pmtu).
        // Only the first, on a connected socket, has a verdict that says so.
        let pmtu = e.icmp.map(|i| (e.family, i.icmp_type, i.code));
        let pmtu = matches!(
            pmtu,
            Some((Family::Ipv4, icmp::DEST_UNREACH, icmp::FRAG_NEEDED) | (Family::Ipv6, icmpv6::PKT_TOOBIG, _))
        );
        e.verdict = match pmtu {
            true if found.connected && e.family == Family::Ipv4 => Some(Verdict::IgnoredSoftError),
            true => None,
            false if found.connected => Some(Verdict::IgnoredSoftError),
            false => Some(Verdict::IgnoredUnconnected),
        };
        // The kernel ignores an error only without IP_RECVERR, except a frag-needed, which it drops before
        // that test: there the flag is not known.
        if e.recverr.is_none() {
            e.recverr = (!pmtu).then_some(false);
        }
        e.sock_ino = Some(found.inode);
        if e.owner.is_none()
            && let Some(creators) = &self.creators
            && let Ok(Some(owner)) = creators.get(&found.cookie)
        {
            e.owner = Some(recorded_owner(&owner));
        }
    }

    /// The reason's name from the kernel's BTF, and the function that freed the datagram.
    fn name_drop(&mut self, e: &mut UdpDropped) {
        e.reason = e.reason_code.and_then(|code| self.drop_reasons.get(&code).cloned());
        let Some(kallsyms) = self.kallsyms.get() else { return };
        // A module loaded since start-up (nf_tables for the first rule) is not in the table yet, and its
        // addresses would take the name of the last function before them: the module list is checked first,
        // at most every 100 ms.
        if self.modules_checked.elapsed() >= std::time::Duration::from_millis(100) {
            kallsyms.refresh_if_modules_changed();
            self.modules_checked = Instant::now();
        }
        e.location = kallsyms.function(e.location_addr).map(|n| crate::kernel::kallsyms::base_name(n).to_owned());
    }

    /// Before 6.11 the kernel does not say which socket dropped a datagram it received: for the drops that
    /// happen at a socket, the socket table names the one the datagram was for, and its receive buffer.
    /// What it held when the datagram was dropped is not known.
    fn find_receiving_socket(&mut self, e: &mut UdpDropped) {
        if e.direction != Direction::In || !at_a_socket(e) {
            return;
        }
        let Some((sport, dport)) = e.packet.ports else { return };
        let (local, remote) =
            (std::net::SocketAddr::new(e.packet.dst, dport), std::net::SocketAddr::new(e.packet.src, sport));
        let Some(found) = self.sockets.find(&mut *self.helper, (u64::from(e.meta.netns), e.ifindex, local, remote))
        else {
            return;
        };
        e.local = Some(found.local);
        e.sock_ino = Some(found.inode);
        e.rcvbuf = found.rcvbuf;
        if let Some(creators) = &self.creators
            && let Ok(Some(owner)) = creators.get(&found.cookie)
        {
            e.owner = Some(recorded_owner(&owner));
        }
    }

    fn classify(&mut self, e: &mut crate::events::IcmpSent) {
        // Seen at the drop that follows the kernel's decision (tracepoint mode, IPv6): its cause is known, and
        // its stack is the drop's, not the sender's.
        if e.rate_limited.is_none() {
            return;
        }
        let Some(kallsyms) = self.kallsyms.get() else {
            return;
        };
        let key = (e.family, e.icmp.icmp_type, e.icmp.code);
        if let Some(last) = &self.last_cause
            && last.of == key
            && *last.stack == *e.stack
            && last.at.elapsed() < LAST_CAUSE_FOR
            && !self.verbose
        {
            e.cause = last.cause;
            return;
        }
        e.cause = kallsyms.classify(&e.stack, e.family, e.icmp.icmp_type, e.icmp.code);
        if e.cause == Cause::Other {
            // A caller in a module loaded after start-up (nf_reject_ipv4 on the first REJECT) is not in the
            // table yet.
            kallsyms.refresh_if_modules_changed();
            e.cause = kallsyms.classify(&e.stack, e.family, e.icmp.icmp_type, e.icmp.code);
        }
        // `Other` is not kept: a module loaded since may name its caller (above).
        self.last_cause = (e.cause != Cause::Other).then(|| Classified {
            stack: e.stack.clone().into(),
            of: key,
            cause: e.cause,
            at: Instant::now(),
        });
        if self.verbose {
            let frames: Vec<&str> = e.stack.iter().map(|&a| kallsyms.function(a).unwrap_or("?")).collect();
            eprintln!("udptrace: icmp_sent stack: {}", frames.join(" <- "));
        }
    }
}

/// Owners: their cgroups, and lately, by socket inode, the owner /proc named, completed with its cgroup. A
/// flood of errors about a socket created before udptrace started asks the helper (and reads the owner's
/// cgroup) once a second, not once per error.
struct Owners {
    cgroups: Cgroups,
    recent: Recent<u64, OwnerInfo>,
}

impl Owners {
    /// The owner /proc names for socket `ino`, with its cgroup: one named less than a second ago, else the
    /// helper's answer (see `Resolver::by_socket_inode`), completed.
    fn of(&mut self, helper: &mut dyn Privileged, ino: u64, seen: Instant, may_wait: bool) -> Lookup<OwnerInfo> {
        if let Some(owner) = self.recent.recall(&ino) {
            return Lookup::Found(owner);
        }
        helper.owner(ino, seen, may_wait).map(|holder| {
            let owner = self.cgroups.completed(holder.owner());
            self.recent.remember(ino, owner.clone());
            owner
        })
    }
}

/// Conntrack's answers lately given, by the namespace of the event and its first flow: a flood of errors on
/// one flow asks once a second, and at most as many flows are remembered as [`Recent`] holds. The socket's
/// namespace is asked first, then udptrace's own: a pod's flow is translated in the node's namespace, by the
/// pod's addresses.
struct Conntracks {
    /// udptrace's own network namespace (the node's), read at start.
    own: Option<u64>,
    recent: Recent<(u64, Flow), Option<Translation>>,
}

impl Conntracks {
    fn new(own: Option<u64>) -> Self {
        Self { own, recent: Recent::default() }
    }

    /// The translated entry holding one of `flows` (tried in turn), in network namespace `netns` unless the
    /// program already read the packet's entry there and found it untranslated (`!ask_netns`), else in
    /// udptrace's own (a pod whose own namespace tracks its flows, for a sidecar's rules, is still
    /// translated in the node's); `None` where neither holds one, or the helper is gone.
    fn lookup(
        &mut self,
        helper: &mut dyn Privileged,
        netns: u64,
        ask_netns: bool,
        flows: &[Flow],
    ) -> Option<Translation> {
        let first = *flows.first()?;
        let own = self.own.filter(|&own| own != netns);
        let first_ns = Some(netns).filter(|_| ask_netns);
        if first_ns.is_none() && own.is_none() {
            return None;
        }
        self.recent.get_or_ask((netns, first), || {
            [first_ns, own].into_iter().flatten().find_map(|ns| flows.iter().find_map(|&f| helper.conntrack(ns, f)))
        })
    }
}

/// Whether a received datagram was dropped by the socket it reached: by reason (a full buffer, UDP's
/// memory limit, the socket's filter), or, on kernels without reasons, by the function that dropped it
/// (net/ipv4/udp.c, net/ipv6/udp.c: the socket's queue, where `__udp_queue_rcv_skb` may be inlined into
/// its callers).
fn at_a_socket(e: &UdpDropped) -> bool {
    match (e.reason.as_deref(), e.reason_code) {
        (Some(reason), _) => matches!(reason, "socket_rcvbuff" | "proto_mem" | "socket_filter"),
        (None, Some(_)) => false,
        (None, None) => matches!(
            e.location.as_deref(),
            Some(
                "__udp_queue_rcv_skb"
                    | "udp_queue_rcv_one_skb"
                    | "udp_queue_rcv_skb"
                    | "__udpv6_queue_rcv_skb"
                    | "udpv6_queue_rcv_one_skb"
                    | "udpv6_queue_rcv_skb"
            )
        ),
    }
}

/// A delivered error carries the socket's `sk_err`. For an ignored one (or one that matched no socket) the
/// kernel computed the errno but stored it nowhere: name the one its tables give, so that the user sees
/// which error the application did not get.
fn fill_errno(e: &mut SocketError) {
    if !e.errno.is_set()
        && e.verdict != Some(Verdict::Delivered)
        && let Some(icmp) = e.icmp
        && let Some((errno, _hard)) = icmp_errno(e.family, icmp.icmp_type, icmp.code)
    {
        e.errno = Errno(errno);
    }
}

/// An error the kernel reported to no socket, about a socket the table holds: a tunnel's socket
/// (`UDP_ENCAP` set, read through its holder's descriptor) hands it to the tunnel, whatever the socket's
/// state; a kernel socket (a VXLAN or WireGuard device's, held by no process) may be a tunnel's, which
/// udptrace cannot ask, so its verdict is unknown, as it is when the helper that asks is gone. Neither
/// depends on IP_RECVERR: a tunnel takes the error before the kernel looks at the flag.
fn tunnel_or_kernel(helper: &mut dyn Privileged, tunnels: &mut Recent<u64, Option<bool>>, e: &mut SocketError) {
    if !e.unreported || !matches!(e.verdict, Some(Verdict::IgnoredSoftError | Verdict::IgnoredUnconnected)) {
        return;
    }
    let Some(ino) = e.sock_ino else { return };
    if e.kernel_socket {
        (e.verdict, e.recverr) = (None, None);
        return;
    }
    let pid = e.owner.as_ref().map(|o| o.pid);
    match tunnels.get_or_ask(ino, || helper.tunnel(ino, pid)) {
        Some(true) => (e.verdict, e.recverr) = (Some(Verdict::Tunnel), None),
        Some(false) => {}
        None => (e.verdict, e.recverr) = (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Icmp;
    use crate::events::samples;

    #[test]
    fn an_ignored_error_names_the_errno_the_application_did_not_get() {
        let mut e = samples::socket_error();
        e.errno = Errno(0);
        e.verdict = Some(Verdict::IgnoredSoftError);
        e.icmp = Some(Icmp { icmp_type: 3, code: 1, from: None });
        fill_errno(&mut e);
        assert_eq!(e.errno, Errno(libc::EHOSTUNREACH));
        // A delivered error keeps the socket's own.
        let mut delivered = samples::socket_error();
        delivered.errno = Errno(0);
        delivered.icmp = Some(Icmp { icmp_type: 3, code: 3, from: None });
        fill_errno(&mut delivered);
        assert_eq!(delivered.errno, Errno(0));
    }

    /// Events leave in order; one whose owner /proc must name holds the ones behind it until it can.
    #[test]
    fn events_wait_in_order_for_an_owner_scan() {
        let mut enricher = Enricher::new(None, None, Default::default(), false);
        // The symbols are read when an event first needs them (the `icmp_sent` below): read them now, so that
        // the read does not outlast the owner scans' spacing between the pushes, on a loaded machine.
        let _ = enricher.kallsyms.get();
        let first = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ino = owner::tests::inode_of;
        let error_on = |ino: u64| Event::SocketError(SocketError { sock_ino: Some(ino), ..samples::socket_error() });
        enricher.push(error_on(ino(&first)), Instant::now());
        let Some(Event::SocketError(e)) = enricher.next_complete() else {
            panic!("the first event is complete")
        };
        assert_eq!(e.owner.map(|o| o.pid), Some(std::process::id()));
        // A socket newer than that scan, then an event that needs nothing.
        let second = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enricher.push(error_on(ino(&second)), Instant::now());
        enricher.push(Event::IcmpSent(samples::icmp_sent()), Instant::now());
        assert_eq!(enricher.next_complete(), None);
        assert!(enricher.wake_at().is_some());
        enricher.end();
        let Some(Event::SocketError(e)) = enricher.next_complete() else {
            panic!("the waiting event comes first")
        };
        assert_eq!(e.owner.map(|o| o.pid), Some(std::process::id()));
        assert!(matches!(enricher.next_complete(), Some(Event::IcmpSent(_))));
        assert_eq!(enricher.next_complete(), None);
        assert_eq!(enricher.wake_at(), None);
    }

    /// A helper that names one process for every socket, and counts how often it was asked.
    struct NamesOne(std::rc::Rc<std::cell::Cell<usize>>);

    impl Privileged for NamesOne {
        fn owner(&mut self, _: u64, _: Instant, _: bool) -> Lookup {
            self.0.set(self.0.get() + 1);
            Lookup::Found(owner::Holder { pid: std::process::id(), comm: "flood".to_owned(), holders: 1 })
        }
        fn owners_end(&mut self) {}
        fn tunnel(&mut self, _: u64, _: Option<u32>) -> Option<bool> {
            Some(false)
        }
        fn diag_socket(&mut self, _: u64) -> std::io::Result<std::os::fd::OwnedFd> {
            Err(std::io::Error::other("not here"))
        }
        fn rate_limits(&mut self) -> Vec<(u64, Result<crate::pipeline::counters::RateLimits, String>)> {
            Vec::new()
        }
        fn conntrack(&mut self, _: u64, _: Flow) -> Option<Translation> {
            None
        }
        fn bundle(&mut self, _: &str) -> Option<(runtime::Runtime, std::fs::File)> {
            None
        }
        fn netns_members(&mut self, _: u64) -> Vec<u32> {
            Vec::new()
        }
    }

    /// A flood of errors about one socket older than udptrace asks the helper once, not once per error, and
    /// every event names the owner; another socket is asked about on its own.
    #[test]
    fn a_flood_on_one_old_socket_asks_the_helper_once() {
        let asked = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut enricher = Enricher::new(None, None, Default::default(), false);
        enricher.use_helper(Box::new(NamesOne(asked.clone())));
        let error_on =
            |ino: u64| Event::SocketError(SocketError { sock_ino: Some(ino), owner: None, ..samples::socket_error() });
        for _ in 0..1_000 {
            enricher.push(error_on(7), Instant::now());
            let Some(Event::SocketError(e)) = enricher.next_complete() else { panic!("the event") };
            assert_eq!(e.owner.map(|o| (o.comm, o.holders)), Some((Some("flood".to_owned()), Some(1))));
        }
        assert_eq!(asked.get(), 1);
        enricher.push(error_on(8), Instant::now());
        assert!(enricher.next_complete().is_some());
        assert_eq!(asked.get(), 2);
    }

    /// The questions a helper was asked, namespace and flow.
    type Asked = std::rc::Rc<std::cell::RefCell<Vec<(u64, Flow)>>>;

    /// A helper whose conntrack holds one entry in one namespace, and records every question.
    struct HoldsOneEntry {
        asked: Asked,
        netns: u64,
        entry: Translation,
    }

    impl Privileged for HoldsOneEntry {
        fn owner(&mut self, _: u64, _: Instant, _: bool) -> Lookup {
            Lookup::Unasked
        }
        fn owners_end(&mut self) {}
        fn tunnel(&mut self, _: u64, _: Option<u32>) -> Option<bool> {
            None
        }
        fn diag_socket(&mut self, _: u64) -> std::io::Result<std::os::fd::OwnedFd> {
            Err(std::io::Error::other("not here"))
        }
        fn rate_limits(&mut self) -> Vec<(u64, Result<crate::pipeline::counters::RateLimits, String>)> {
            Vec::new()
        }
        fn conntrack(&mut self, netns: u64, flow: Flow) -> Option<Translation> {
            self.asked.borrow_mut().push((netns, flow));
            let e = &self.entry;
            (netns == self.netns
                && [e.original, e.reply].contains(&crate::domain::Tuple { src: flow.src, dst: flow.dst }))
            .then_some(*e)
        }
        fn bundle(&mut self, _: &str) -> Option<(runtime::Runtime, std::fs::File)> {
            None
        }
        fn netns_members(&mut self, _: u64) -> Vec<u32> {
            Vec::new()
        }
    }

    /// A Service address DNATed in the node's namespace to a backend, for a pod's flow.
    fn service_entry() -> Translation {
        use crate::domain::{Nat, Tuple};
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        Translation {
            original: Tuple { src: addr("10.0.0.2:40312"), dst: addr("10.0.0.9:8888") },
            reply: Tuple { src: addr("10.244.1.7:8888"), dst: addr("10.0.0.2:40312") },
            nat: Nat::Dnat,
            replied: false,
            mark: None,
        }
    }

    /// An enricher whose helper's conntrack holds [`service_entry`] in udptrace's own namespace; what it was
    /// asked; that namespace.
    fn enricher_asking() -> (Enricher, Asked, u64) {
        let asked = Asked::default();
        let mut enricher = Enricher::new(None, None, Default::default(), false);
        let own = crate::pipeline::netns::own().expect("this process's namespace");
        enricher.use_helper(Box::new(HoldsOneEntry { asked: asked.clone(), netns: own, entry: service_entry() }));
        (enricher, asked, own)
    }

    /// A pod's connected socket's error in tracepoint mode (no packet): the flow is asked of the pod's
    /// namespace, then of the node's (udptrace's own), where the translation is; a flood of errors on the flow
    /// asks once.
    #[test]
    fn an_error_without_an_entry_asks_the_sockets_namespace_then_the_nodes() {
        let (mut enricher, asked, own) = enricher_asking();
        let pod = own + 1;
        let error = || {
            let mut e = samples::socket_error();
            e.meta.netns = u32::try_from(pod).unwrap();
            Event::SocketError(e)
        };
        for _ in 0..100 {
            enricher.push(error(), Instant::now());
            let Some(Event::SocketError(e)) = enricher.next_complete() else { panic!("the event") };
            assert_eq!(e.conntrack, Some(service_entry()));
        }
        let flow = Flow::new("10.0.0.2:40312".parse().unwrap(), "10.0.0.9:8888".parse().unwrap(), 17).unwrap();
        assert_eq!(*asked.borrow(), [(pod, flow), (own, flow)]);
    }

    /// An error whose program read the packet's entry in the pod's namespace and found it untranslated (a
    /// sidecar's rules make the pod track its own flows): the pod's namespace is not asked again, the node's
    /// is, where the translation is; in the node's own namespace nothing is asked.
    #[test]
    fn a_tracked_untranslated_error_asks_only_the_nodes_namespace() {
        let (mut enricher, asked, own) = enricher_asking();
        let pod = own + 1;
        let mut e = samples::socket_error();
        e.conntrack_tracked = true;
        e.meta.netns = u32::try_from(pod).unwrap();
        enricher.push(Event::SocketError(e.clone()), Instant::now());
        let Some(Event::SocketError(found)) = enricher.next_complete() else { panic!("the event") };
        assert_eq!(found.conntrack, Some(service_entry()));
        let flow = Flow::new("10.0.0.2:40312".parse().unwrap(), "10.0.0.9:8888".parse().unwrap(), 17).unwrap();
        assert_eq!(*asked.borrow(), [(own, flow)]);
        asked.borrow_mut().clear();
        e.meta.netns = u32::try_from(own).unwrap();
        enricher.push(Event::SocketError(e), Instant::now());
        let Some(Event::SocketError(found)) = enricher.next_complete() else { panic!("the event") };
        assert_eq!(found.conntrack, None);
        assert!(asked.borrow().is_empty(), "asked {:?}", asked.borrow());
    }

    /// What is not asked: an error whose program read the entry, one with no remote (an unconnected socket in
    /// tracepoint mode), a drop on the way in.
    #[test]
    fn what_has_an_entry_or_no_flow_is_not_asked() {
        let (mut enricher, asked, _) = enricher_asking();
        let mut read = samples::socket_error();
        let from_packet = Translation { replied: true, ..service_entry() };
        read.conntrack = Some(from_packet);
        enricher.push(Event::SocketError(read), Instant::now());
        let Some(Event::SocketError(e)) = enricher.next_complete() else { panic!("the event") };
        assert_eq!(e.conntrack, Some(from_packet));
        let unconnected = SocketError { remote: None, ..samples::socket_error() };
        enricher.push(Event::SocketError(unconnected), Instant::now());
        let Some(Event::SocketError(e)) = enricher.next_complete() else { panic!("the event") };
        assert_eq!(e.conntrack, None);
        enricher.push(Event::UdpDropped(samples::rcvbuf_drop()), Instant::now());
        assert!(matches!(enricher.next_complete(), Some(Event::UdpDropped(d)) if d.conntrack.is_none()));
        assert!(asked.borrow().is_empty(), "asked {:?}", asked.borrow());
    }

    /// A drop on the way out after the destination was translated (the backend does not answer ARP), whose
    /// packet carried no entry: found by the flow the other way, the entry's reply tuple.
    #[test]
    fn a_drop_after_the_translation_finds_the_entry_by_its_reply() {
        let (mut enricher, asked, own) = enricher_asking();
        let mut drop = samples::rcvbuf_drop();
        drop.direction = Direction::Out;
        drop.meta.netns = u32::try_from(own).unwrap();
        drop.local = Some("10.0.0.2:40312".parse().unwrap());
        drop.packet.src = "10.0.0.2".parse().unwrap();
        drop.packet.dst = "10.244.1.7".parse().unwrap();
        drop.packet.ports = Some((40312, 8888));
        drop.packet.proto = 17;
        enricher.push(Event::UdpDropped(drop.clone()), Instant::now());
        let Some(Event::UdpDropped(d)) = enricher.next_complete() else { panic!("the event") };
        assert_eq!(d.conntrack.map(|t| t.original.dst), Some("10.0.0.9:8888".parse().unwrap()));
        assert_eq!(asked.borrow().len(), 2, "the flow as dropped, then the other way: {:?}", asked.borrow());
        // Folded sources say nothing of the source: not asked.
        asked.borrow_mut().clear();
        enricher.push(Event::UdpDropped(UdpDropped { sources_folded: true, ..drop }), Instant::now());
        assert!(matches!(enricher.next_complete(), Some(Event::UdpDropped(d)) if d.conntrack.is_none()));
        assert!(asked.borrow().is_empty());
    }

    /// The final drain of a flood of drops at sockets no process holds (a tunnel's, the kernel's own), each
    /// a socket of its own: one /proc scan answers them all, not one scan per record.
    #[test]
    fn the_end_of_a_flood_on_kernel_sockets_scans_proc_once() {
        let mut enricher = Enricher::new(None, None, Default::default(), false);
        let (resolver, scans) = owner::tests::counting_resolver();
        enricher.use_helper(Box::new(Local::with_owners(resolver)));
        let drop_at =
            |ino: u64| Event::UdpDropped(UdpDropped { sock_ino: Some(ino), owner: None, ..samples::rcvbuf_drop() });
        // While tracing: the first lookup scans; one after it waits for the next scan.
        enricher.push(drop_at(1), Instant::now());
        let mut out: Vec<Event> = enricher.next_complete().into_iter().collect();
        enricher.push(drop_at(2), Instant::now() + std::time::Duration::from_millis(1));
        assert_eq!(enricher.next_complete(), None);
        enricher.end();
        for ino in 3..=10_001 {
            enricher.push(drop_at(ino), Instant::now());
            out.extend(std::iter::from_fn(|| enricher.next_complete()));
        }
        assert_eq!(out.len(), 10_001);
        assert!(out.iter().all(|e| matches!(e, Event::UdpDropped(d) if d.kernel_socket && d.owner.is_none())));
        assert!(scans.get() <= 2, "{} scans of /proc for one drain", scans.get());
    }
}
