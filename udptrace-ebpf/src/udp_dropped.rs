//! A UDP datagram the kernel drops: `udp_dropped`.
//!
//! Every mode hooks the tracepoint `skb:kfree_skb` (as `tp_btf`), which fires where the kernel frees a packet it
//! could not deliver (net/core/skbuff.c `kfree_skb_reason()`, `sk_skb_reason_drop()` from 6.11), never for
//! one it delivered or sent (`consume_skb()` and `__consume_stateless_skb()` fire `skb:consume_skb` or
//! nothing). Its arguments grew (include/trace/events/skb.h):
//! - 5.10 to 5.16: `(struct sk_buff *skb, void *location)`;
//! - 5.17: `enum skb_drop_reason reason`, whose numbers differ between kernels: user space names them from
//!   the running kernel's BTF;
//! - 6.11: `struct sock *rx_sk`, the socket that dropped it on receive (a full buffer, a socket filter).
//!
//! User space reads the count from BTF (`Config::kfree_skb_args`): the verifier refuses a read of an
//! argument the tracepoint does not pass, and the branches that read them are left out for it by that
//! constant.
//!
//! Only UDP and UDP-Lite are kept, from the packet's own IP header. A drop of a datagram this host just
//! answered with a port unreachable (no listener, a REJECT rule) is that `icmp_sent`'s story and is not
//! reported again: the ICMP programs note the packet (`icmp_sent::note_port_unreachable`) and this one checks
//! it first, which is all it does on the error path of a closed port.
//!
//! Floods: the first drop of a flow (reason, 5-tuple, socket) in a second is handed over; the next ones that
//! second are counted in the kernel (`udptrace_common::drops`), and user space reads the counts each second.

use core::intrinsics::AtomicOrdering;

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, map},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use udptrace_common::{
    AF_INET, AF_INET6, DropCount, FlowsShown, IPPROTO_UDP, IPPROTO_UDPLITE, Pending, UdpDropped, WithDns, drops, kind,
    probe, stat, udp_dropped_flags,
};

use crate::{
    conntrack, dns,
    filter::{self, config},
    icmp_sent,
    kernel::{
        Args, Btf, ETH_P_IP, ETH_P_IPV6, Mem, Probe, ReadResult, SKB_WINDOW, copy, header, ip_start, jiffies,
        netns_inum, offset, read, read_into, skb_network, sock_netns, ticks, zero,
    },
    output::{count, count_failure},
    owner::socket_owner,
    packet, tally,
};
/// IPv4 `frag_off`: the fragment offset bits. A later fragment carries no UDP header.
const IP_OFFSET_MASK: u16 = 0x1fff;

/// The epoch the program counts in (its low bit the generation below), and whether IPv6 port unreachables
/// are seen here (`udptrace_common::drops::EPOCH`, `ICMP_AT_DROP`). User space writes them.
#[map]
static DROP_CONTROL: Array<u32> = Array::with_max_entries(drops::CONTROL_ENTRIES, 0);

#[map]
static UDP_DROPS_0: PerCpuHashMap<UdpDropped, DropCount> = PerCpuHashMap::with_max_entries(drops::ENTRIES, 0);
#[map]
static UDP_DROPS_1: PerCpuHashMap<UdpDropped, DropCount> = PerCpuHashMap::with_max_entries(drops::ENTRIES, 0);

/// Each CPU's last counted flow per nesting level and generation (`level * 2 + generation`), with its
/// count: a flood of one flow is counted there, without hashing its 144-byte record per drop.
#[map]
static UDP_DROPS_PENDING: PerCpuArray<Pending<UdpDropped>> = PerCpuArray::with_max_entries(NESTING * 2, 0);

/// Flows whose first drop was handed over, and when. LRU: a flow pushed out only has its next drop handed
/// over at once again.
#[map]
static DROPS_SEEN: LruHashMap<UdpDropped, u64> = LruHashMap::with_max_entries(drops::SEEN_ENTRIES, 0);

/// Per destination (a record whose sources are folded), the flows whose drops the current period shows one by
/// one (`drops::FLOWS_SHOWN`).
#[map]
static DROP_DESTS: LruHashMap<UdpDropped, FlowsShown> = LruHashMap::with_max_entries(drops::DEST_ENTRIES, 0);

/// `skb:kfree_skb`: `TP_PROTO(struct sk_buff *skb, void *location[, enum skb_drop_reason reason[, struct sock
/// *rx_sk]])`. A `tp_btf` program (5.5): `skb` and `rx_sk` are typed, and the members this program reads
/// on a flood's path are plain loads (`kernel::Btf`), not helper calls.
#[btf_tracepoint(function = "kfree_skb")]
pub fn tp_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    if reported_by_icmp_hook(&ctx) {
        return 0;
    }
    // Two calls side by side, not one inside the other: the verifier adds up the stacks of nested calls
    // (and on 5.10 rounds each frame up to 32 bytes) against its 512-byte limit.
    let skb = kfree_skb(&ctx);
    if skb != 0 && icmp_at_drop(&ctx, skb) != 0 {
        count(stat::READ_ERROR);
    }
    0
}

/// Whether this is the drop of a datagram no socket took, whose port unreachable an ICMP hook reports: from
/// 5.17, `__udp4_lib_rcv` and `__udp6_lib_rcv` (net/ipv4/udp.c, net/ipv6/udp.c) free it with
/// `SKB_DROP_REASON_NO_SOCKET` right after `icmp_send()` / `icmpv6_send()`. The error path of a closed port
/// runs this program too, for every error: told from the reason and the packet's protocol alone, before any
/// slot is looked up or the packet read, it costs a few loads. The ICMP hook's note of the packet is used up
/// (`icmp_sent::forget_answered`). Where no hook sees the family's errors (`drops::ICMP_AT_DROP`), the drop
/// goes on to be reported as that error (`icmp_at_drop`).
#[inline(always)]
fn reported_by_icmp_hook(ctx: &BtfTracePointContext) -> bool {
    let no_socket = config!(reason_no_socket);
    if config!(kfree_skb_args) < 3 || no_socket == drops::NO_REASON {
        return false;
    }
    match ctx.get::<u64>(2) {
        Ok(reason) if reason as u32 == no_socket => {}
        _ => return false,
    }
    let Ok(skb) = ctx.get::<*const u8>(0) else { return false };
    if skb.is_null() {
        return false;
    }
    let Ok(protocol) = Btf::load::<u16>(skb, offset!(skb_protocol), "sk_buff.protocol") else {
        return false;
    };
    let bit = match u16::from_be(protocol) {
        ETH_P_IP => drops::AT_DROP_IPV4,
        ETH_P_IPV6 => drops::AT_DROP_IPV6,
        _ => return false,
    };
    if DROP_CONTROL.get(drops::ICMP_AT_DROP).copied().unwrap_or(0) & bit != 0 {
        return false;
    }
    icmp_sent::forget_answered(skb as u64);
    true
}

/// A port unreachable the kernel decided to send, seen at the drop (see `icmp_sent::icmp_at_no_socket_drop`).
/// Returns the failed read's error code, or 0; the caller counts it. The 0 is opaque to the compiler
/// (`black_box`): a function of its own whose return value is known (these reads cannot fail) is compiled
/// to leave its return register as it was, and the verifier refuses a return of what it then holds, a
/// pointer into the function's stack ("cannot return stack pointer to the caller").
#[inline(never)]
fn icmp_at_drop(ctx: &BtfTracePointContext, skb: u64) -> i64 {
    match icmp_sent::icmp_at_no_socket_drop(ctx, skb as *const u8) {
        Ok(()) => core::hint::black_box(0),
        Err(e) => e.code.min(-1),
    }
}

/// How deep runs of this program nest on one CPU: one in a process (a drop on the way out) may be
/// interrupted by one in a softirq, which runs to its end first. Each level builds its record in a slot of
/// its own (a record on the stack would not fit beside the reads).
const NESTING: u32 = 2;

/// The slots, per nesting level.
#[map]
static DROP_SLOTS: PerCpuArray<UdpDropped> = PerCpuArray::with_max_entries(NESTING, 0);

/// The level in use on this CPU.
#[map]
static DROP_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The last flow whose drop was built in full on this CPU and level: a flood of one flow is counted from the
/// packet and the socket pointer alone, without reading the socket, its owner and the device again (a dozen
/// kernel reads, most of the program's cost), nor the clock, until its period ends and it is built again.
#[repr(C)]
pub struct LastDrop {
    /// The counted record (time and queue length zeroed) of the flow, as the full path built it.
    record: UdpDropped,
    /// What identifies the flow besides the packet's 5-tuple, reason and place: the socket and the device.
    rx_sk: u64,
    dev: u64,
    /// Until which `jiffies` the fast path may count for it: the last whole tick before its period ends (the
    /// second its first drop was handed over in). `bpf_jiffies64` is a load, where the clock
    /// (`bpf_ktime_get_boot_ns`) was half the fast path's cost (tens of ns on a virtual machine).
    until_jiffies: u64,
    /// The epoch it was built in (`DROP_CONTROL`): a new one, each second user space reads the counts, builds
    /// it again, whatever `jiffies` says (a tick that stalled, a suspend).
    epoch: u32,
    _pad0: u32,
}

#[map]
static LAST_DROP: PerCpuArray<LastDrop> = PerCpuArray::with_max_entries(NESTING, 0);

/// Reports the drop; the datagram's `sk_buff` when it is instead an IPv6 port unreachable to report, else 0.
#[inline(never)]
fn kfree_skb(ctx: &BtfTracePointContext) -> u64 {
    let Some(depth) = DROP_DEPTH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's entry; a nested run restores it before the interrupted one goes on.
    let level = unsafe { *depth };
    if level >= NESTING {
        return 0;
    }
    let Some(event) = DROP_SLOTS.get_ptr_mut(level) else { return 0 };
    // SAFETY: as above; this level's slot is this run's alone.
    unsafe { *depth = level + 1 };
    let result = dropped(ctx, unsafe { &mut *event }, level);
    unsafe { *depth = level };
    match result {
        Ok(icmp6) => icmp6,
        Err(e) => {
            count_failure(Err(e));
            0
        }
    }
}

/// Builds and hands over (or counts) the drop; `Ok(skb)` when it is an IPv6 port unreachable instead.
#[inline(always)]
fn dropped(ctx: &BtfTracePointContext, event: &mut UdpDropped, level: u32) -> ReadResult<u64> {
    let skb: *const u8 = ctx.get(0)?;
    // Never null where the kernel fires it; a kernel that marks the argument nullable (the verifier's
    // `PTR_MAYBE_NULL`) has the loads below checked.
    if skb.is_null() || icmp_sent::answered_port_unreachable(skb as u64) {
        return Ok(0);
    }
    // The slot is scratch until it is cleared below: the sk_buff's bytes are read into it, not onto the
    // stack. 5.10 counts a call chain's stack as a whole against 512 bytes, and where filters are set, the
    // verifier walks their branches too (the constants of `CONFIG` decide which it walks).
    const { assert!(size_of::<UdpDropped>() >= SKB_WINDOW) };
    // SAFETY: the first SKB_WINDOW bytes of the plain record, from a pointer to the whole record.
    let scratch = unsafe { &mut *core::ptr::from_mut(event).cast::<[u8; SKB_WINDOW]>() };
    let (protocol, ip) = skb_network::<Btf>(skb, scratch)?;
    let family = match protocol {
        ETH_P_IP => AF_INET,
        ETH_P_IPV6 => AF_INET6,
        _ => return Ok(0),
    };
    let args = config!(kfree_skb_args);
    let reason = if args >= 3 { ctx.get::<u64>(2)? as u32 } else { drops::NO_REASON };
    // No socket: the kernel answered with a port unreachable (`__udp4_lib_rcv`, `__udp6_lib_rcv`), which the
    // ICMP hooks report, sent, stopped by a rate limit, or lost; where no hook sees the family's, it is
    // reported from here. A run of the ICMP hook the kernel skipped is then counted lost, not shown twice.
    // Decided before the packet is read: the error path of a closed port pays for nothing more.
    // Before 5.17 there is no reason, and `reason_no_socket` is NO_REASON too: nothing is known to be one.
    if reason != drops::NO_REASON && reason == config!(reason_no_socket) {
        let unseen = DROP_CONTROL.get(drops::ICMP_AT_DROP).copied().unwrap_or(0);
        let bit = if family == AF_INET { drops::AT_DROP_IPV4 } else { drops::AT_DROP_IPV6 };
        return Ok(if unseen & bit != 0 { skb as u64 } else { 0 });
    }
    // Cleared in place, not through a temporary on the stack.
    zero(event);
    let udp = read_datagram(ip, family, event)?;
    if udp.is_null() {
        return Ok(0);
    }
    // Only counts wanted, and no filter on addresses or ports: who sent the datagram is no part of its count
    // (as with `icmp_sent`, tally.rs; the summary and the metrics name the destination), so that a flood from
    // many source ports is one flow, counted on the fast path below.
    if tally::counting() && may_fold() {
        fold_sources(event);
    }
    event.reason = reason;
    event.location = ctx.get::<u64>(1)?;
    // The socket it was dropped at (6.11), else, on the way out, the one sending it.
    let rx_sk: *const u8 = if args >= 4 { ctx.get(3)? } else { core::ptr::null() };
    let dev = Btf::load::<u64>(skb, offset!(skb_dev), "sk_buff.dev").unwrap_or(0);
    let epoch = DROP_CONTROL.get(drops::EPOCH).copied().unwrap_or(0);
    let last = LAST_DROP.get_ptr_mut(level);
    if let Some(last) = last {
        // SAFETY: this CPU's entry for this level, this run's alone.
        let last = unsafe { &mut *last };
        if last.epoch == epoch
            && jiffies() < last.until_jiffies
            && last.rx_sk == rx_sk as u64
            && last.dev == dev
            && same_flow(&last.record, event, family)
        {
            let queued = if rx_sk.is_null() {
                0
            } else {
                Btf::load::<u32>(rx_sk, offset!(sk_rmem_alloc), "sock.sk_backlog.rmem_alloc").unwrap_or(0)
            };
            if add(level, &last.record, queued) {
                return Ok(0);
            }
        }
    }
    event.direction =
        if Btf::load::<u32>(skb, offset!(skb_iif), "sk_buff.skb_iif")? != 0 { drops::IN } else { drops::OUT };
    // A datagram queued on a socket, freed when the socket closes unread, no longer has a device: the field
    // holds UDP's own scratch data (`udp_skb_scratch`, net/ipv4/udp.c), which is not a pointer.
    let (ifindex, mut netns) = device_of(skb);
    event.ifindex = ifindex;
    // The datagram's connection, when conntrack translated it; a failed read is counted and the drop still
    // reported. Not on the fast path above: a flood of one flow is one connection.
    count_failure(conntrack::fill::<Btf>(skb, &mut event.conntrack));
    let sk = if !rx_sk.is_null() {
        rx_sk
    } else if event.direction == drops::OUT {
        Btf::load::<*const u8>(skb, offset!(skb_sk), "sk_buff.sk")?
    } else {
        core::ptr::null()
    };
    if !sk.is_null() && is_udp_socket(sk, family)? {
        fill_socket(sk, family, event)?;
        if sk == rx_sk {
            event.rcvbuf = Btf::load::<u32>(sk, offset!(sk_rcvbuf), "sock.sk_rcvbuf")?;
            event.queued = Btf::load::<u32>(sk, offset!(sk_rmem_alloc), "sock.sk_backlog.rmem_alloc")?;
            event.flags |= udp_dropped_flags::RCVBUF_KNOWN;
        }
        if netns == 0 {
            netns = sock_netns::<Btf>(sk)?;
        }
    } else if netns == 0 {
        let owner = Btf::load::<*const u8>(skb, offset!(skb_sk), "sk_buff.sk")?;
        if !owner.is_null() {
            netns = sock_netns::<Btf>(owner).unwrap_or(0);
        }
    }
    event.header = header(kind::UDP_DROPPED, probe::TRACEPOINT, family, netns);
    if !filter::udp_dropped_passes(event, args >= 4) {
        count(stat::FILTERED);
        return Ok(0);
    }
    // `jiffies` read after the clock (in `header`), as the bound below assumes.
    let (now, ticked) = (event.header.time_ns, jiffies());
    let until = hand_over_or_count(ctx, event, level, Datagram { skb, ip, udp });
    if let Some(last) = last {
        // SAFETY: as above.
        let last = unsafe { &mut *last };
        copy(&mut last.record, event);
        last.record.header.time_ns = 0;
        last.record.queued = 0;
        last.rx_sk = rx_sk as u64;
        last.dev = dev;
        last.until_jiffies = until_jiffies(until, now, ticked);
        last.epoch = epoch;
    }
    Ok(0)
}

/// The `jiffies` below which the clock is surely before `until`, from `jiffies` read just after the clock
/// read `now`: tick `j` begins at most a tick after `now` plus `(j - jiffies)` ticks, so every time within
/// it is before `now + (j - jiffies + 2)` ticks. 0 (never) if the tick is not known.
#[inline(always)]
fn until_jiffies(until: u64, now: u64, jiffies: u64) -> u64 {
    match ticks(until.saturating_sub(now)) {
        ticks @ 2.. => jiffies + ticks - 1,
        _ => 0,
    }
}

/// Whether `event`, as far as it is built (packet, reason, place; its header is not yet), is of the flow
/// `record` counts: for a record whose sources are folded, from any source.
#[inline(always)]
fn same_flow(record: &UdpDropped, event: &UdpDropped, family: u16) -> bool {
    (record.flags & udp_dropped_flags::SOURCES_FOLDED != 0 || record.src == event.src && record.sport == event.sport)
        && record.dst == event.dst
        && record.dport == event.dport
        && record.proto == event.proto
        && u16::from(record.header.family) == family
        && record.reason == event.reason
        && record.location == event.location
}

/// The index and namespace of the packet's device; zeros when it has none, or the field does not hold one.
/// Read through the helper (`kernel::Probe`): the field may hold a number (below), which a plain load would
/// take for a device.
#[inline(always)]
fn device_of(skb: *const u8) -> (u32, u32) {
    let Ok(dev) = read::<*const u8>(skb, offset!(skb_dev), "sk_buff.dev") else { return (0, 0) };
    if dev.is_null() {
        return (0, 0);
    }
    let Ok(ifindex) = read::<u32>(dev, offset!(dev_ifindex), "net_device.ifindex") else {
        return (0, 0);
    };
    let netns =
        read::<*const u8>(dev, offset!(dev_net), "net_device.nd_net").and_then(netns_inum::<Probe>).unwrap_or(0);
    (ifindex, netns)
}

/// Fills the addresses, ports and protocol from the packet's IP and UDP headers (`ip`: where the IP header
/// starts); returns where the UDP header starts, null if it is not a UDP datagram with its header (another
/// protocol, a later fragment, an IPv6 extension header first).
#[inline(always)]
fn read_datagram(ip: *const u8, family: u16, event: &mut UdpDropped) -> ReadResult<*const u8> {
    let (ports, udp) = if family == AF_INET {
        // struct iphdr: version/ihl at 0, frag_off at 6, protocol at 9, saddr at 12, daddr at 16; without
        // options, the ports follow at 20, in the same read.
        let h = ip_start(ip)?;
        let ihl = usize::from(h[0] & 0x0f) * 4;
        if h[0] >> 4 != 4 || ihl < 20 || u16::from_be_bytes([h[6], h[7]]) & IP_OFFSET_MASK != 0 {
            return Ok(core::ptr::null());
        }
        event.proto = h[9];
        event.src[..4].copy_from_slice(&h[12..16]);
        event.dst[..4].copy_from_slice(&h[16..20]);
        if event.proto != IPPROTO_UDP && event.proto != IPPROTO_UDPLITE {
            return Ok(core::ptr::null());
        }
        let ports = if ihl == 20 { [h[20], h[21], h[22], h[23]] } else { read::<[u8; 4]>(ip, ihl as u32, "udphdr")? };
        (ports, ip.wrapping_add(ihl))
    } else {
        // struct ipv6hdr: nexthdr at 6, saddr at 8, daddr at 24; the addresses read straight into the record.
        let h = read::<[u8; 8]>(ip, 0, "ipv6hdr")?;
        if h[0] >> 4 != 6 {
            return Ok(core::ptr::null());
        }
        event.proto = h[6];
        if event.proto != IPPROTO_UDP && event.proto != IPPROTO_UDPLITE {
            return Ok(core::ptr::null());
        }
        const { assert!(core::mem::offset_of!(UdpDropped, dst) == core::mem::offset_of!(UdpDropped, src) + 16) };
        // SAFETY: `src` and `dst` lie side by side in the `#[repr(C)]` record (above), 32 bytes in all; the
        // pointer comes from the whole record.
        let both = unsafe {
            &mut *core::ptr::from_mut(event).cast::<u8>().add(core::mem::offset_of!(UdpDropped, src)).cast::<[u8; 32]>()
        };
        read_into(ip, 8, both, "ipv6hdr.saddr, daddr")?;
        (read::<[u8; 4]>(ip, 40, "udphdr")?, ip.wrapping_add(40))
    };
    event.sport = u16::from_be_bytes([ports[0], ports[1]]);
    event.dport = u16::from_be_bytes([ports[2], ports[3]]);
    Ok(udp)
}

/// Whether `sk` is an inet UDP (or UDP-Lite) socket of the packet's family (a tunnel may send an IPv4
/// datagram from an IPv6 socket: that one is left out).
#[inline(always)]
fn is_udp_socket(sk: *const u8, family: u16) -> ReadResult<bool> {
    let sk_family = Btf::load::<u16>(sk, offset!(sk_family), "sock.__sk_common.skc_family")?;
    let protocol = Btf::load::<u16>(sk, offset!(sk_protocol), "sock.sk_protocol")?;
    Ok(sk_family == family && (protocol == u16::from(IPPROTO_UDP) || protocol == u16::from(IPPROTO_UDPLITE)))
}

/// The socket's bound address and port, inode and owner. The inode is behind `sock.sk_socket` in the
/// `struct socket_alloc` around it, beyond what the verifier lets a typed pointer reach, and the owner is
/// read through the helper with it (`owner::socket_owner`).
#[inline(always)]
fn fill_socket(sk: *const u8, family: u16, event: &mut UdpDropped) -> ReadResult<()> {
    if family == AF_INET {
        let addr = Btf::load::<u32>(sk, offset!(sk_rcv_saddr), "sock.skc_rcv_saddr")?;
        event.local_addr[..4].copy_from_slice(&addr.to_ne_bytes());
    } else {
        read_into(sk, offset!(sk_v6_rcv_saddr), &mut event.local_addr, "sock.skc_v6_rcv_saddr")?;
    }
    event.local_port = Btf::load::<u16>(sk, offset!(sk_num), "sock.skc_num")?;
    event.flags |= udp_dropped_flags::SOCKET_KNOWN;
    if socket_owner(sk, &mut event.sock_ino, &mut event.owner)? {
        event.flags |= udp_dropped_flags::OWNER_KNOWN;
    }
    Ok(())
}

/// The first drop of its flow this second is handed over; the others are counted. When only counts are
/// wanted, every one is counted. One that finds its generation full is handed over. Returns until when the
/// flow's next drops are counted (0: not, they are handed over).
#[inline(always)]
fn hand_over_or_count<C: EbpfContext>(ctx: &C, event: &mut UdpDropped, level: u32, datagram: Datagram) -> u64 {
    // The key: the record without what varies between two drops of one flow.
    let (time, queued) = (event.header.time_ns, event.queued);
    event.header.time_ns = 0;
    event.queued = 0;
    // Counting only: the record is built again each period, to see an owner change. A drop on a DNS port is
    // handed over as when streaming, the first of its flow each period: its payload names the query, which a
    // count would lose (the summary keys its rows by it).
    let mut since = time;
    if !tally::counting() || dns_datagram(event) {
        let shown = match folded(event, time) {
            // The destination's flows this period are all shown: this drop is counted with its others'.
            Ok(period) => {
                if add(level, &*event, queued) {
                    return period + drops::PERIOD_NS;
                }
                event.header.time_ns = time;
                event.queued = queued;
                hand_over(ctx, event, level, datagram);
                return 0;
            }
            Err(shown) => shown,
        };
        // SAFETY: a map lookup; the value is copied out.
        let seen = unsafe { DROPS_SEEN.get(&*event) }.copied();
        match seen {
            Some(at) if time.wrapping_sub(at) < drops::PERIOD_NS => since = at,
            _ => {
                if !shown.is_null() {
                    // SAFETY: the destination's value, from `folded`, valid for the program's run.
                    unsafe { (*shown).flows += 1 };
                }
                let _ = DROPS_SEEN.insert(&*event, &time, 0);
                event.header.time_ns = time;
                event.queued = queued;
                hand_over(ctx, event, level, datagram);
                return time + drops::PERIOD_NS;
            }
        }
    }
    if !add(level, &*event, queued) {
        event.header.time_ns = time;
        event.queued = queued;
        hand_over(ctx, event, level, datagram);
        return 0;
    }
    since + drops::PERIOD_NS
}

/// The dropped packet, and where its IP and UDP headers start.
#[derive(Clone, Copy)]
struct Datagram {
    skb: *const u8,
    ip: *const u8,
    udp: *const u8,
}

/// The records of drops on a DNS port, with their payload, per nesting level (as `DROP_SLOTS`).
#[map]
static DNS_DROP_SLOTS: PerCpuArray<WithDns<UdpDropped>> = PerCpuArray::with_max_entries(NESTING, 0);

/// Hands the record over; for a datagram to or from a DNS port, with the start of its payload; with
/// `--pcap`, with the datagram.
#[inline(always)]
fn hand_over<C: EbpfContext>(ctx: &C, event: &UdpDropped, level: u32, datagram: Datagram) {
    let at = packet::at::<Btf>(datagram.skb, datagram.ip);
    if !dns_datagram(event) {
        packet::output_with(ctx, event, at);
        return;
    }
    let Some(slot) = DNS_DROP_SLOTS.get_ptr_mut(level) else {
        packet::output_with(ctx, event, at);
        return;
    };
    // SAFETY: this CPU's slot for this level, this run's alone.
    let slot = unsafe { &mut *slot };
    copy(&mut slot.record, event);
    slot.record.flags |= udp_dropped_flags::DNS;
    // A payload that could not be read is said empty (`len` 0) and counted; the drop is still handed over.
    let _ = count_failure(dns::payload::<Btf>(datagram.skb, datagram.udp, &mut slot.dns));
    packet::output_with(ctx, slot, at);
}

/// Whether the datagram is to or from a DNS port: its record carries the start of its payload.
#[inline(always)]
fn dns_datagram(event: &UdpDropped) -> bool {
    event.proto == IPPROTO_UDP && filter::dns_port(event.sport, event.dport)
}

/// Whether drops from several sources may be counted as one: no filter on addresses or ports, which the
/// fast path (`LAST_DROP`) would no longer check for a new source.
#[inline(always)]
fn may_fold() -> bool {
    config!(filter.n_addrs) == 0 && config!(filter.n_ports) == 0
}

/// Leaves out who sent the datagram: `event` counts drops from any source to its destination.
#[inline(always)]
fn fold_sources(event: &mut UdpDropped) {
    zero(&mut event.src);
    event.sport = 0;
    event.flags |= udp_dropped_flags::SOURCES_FOLDED;
}

/// Where `event`'s destination already had `drops::FLOWS_SHOWN` flows shown this period, `event` is made the
/// destination's record with sources folded, and the period's start is returned (`Ok`). Else its count of
/// flows shown, to which the caller adds a new flow (`Err`; null when none is kept). A destination not yet
/// counted is entered with this drop's flow as its first.
#[inline(always)]
fn folded(event: &mut UdpDropped, time: u64) -> Result<u64, *mut FlowsShown> {
    if !may_fold() {
        return Err(core::ptr::null_mut());
    }
    let (src, sport, flags) = (event.src, event.sport, event.flags);
    fold_sources(event);
    let shown = match DROP_DESTS.get_ptr_mut(&*event) {
        None => {
            let first = FlowsShown { since: time, flows: 1, _pad0: 0 };
            let _ = DROP_DESTS.insert(&*event, &first, 0);
            core::ptr::null_mut()
        }
        Some(shown) => {
            // SAFETY: the map's value, valid for the program's run. Another CPU may count at once: a flow
            // more may then be shown, never one fewer.
            let counted = unsafe { &mut *shown };
            if time.wrapping_sub(counted.since) >= drops::PERIOD_NS {
                counted.since = time;
                counted.flows = 0;
            } else if counted.flows >= drops::FLOWS_SHOWN {
                return Ok(counted.since);
            }
            shown
        }
    };
    event.src = src;
    event.sport = sport;
    event.flags = flags;
    Err(shown)
}

/// Counts one drop of `key` in this CPU's pending slot of the current epoch (`tally::count_in_slot`), whose
/// other flow's count goes to the generation's hash first; `false` when that is full.
#[inline(always)]
fn add(level: u32, key: &UdpDropped, queued: u32) -> bool {
    let epoch = DROP_CONTROL.get(drops::EPOCH).copied().unwrap_or(0);
    let generation = udptrace_common::tally::generation(epoch);
    let map = if generation == 1 { &UDP_DROPS_1 } else { &UDP_DROPS_0 };
    match UDP_DROPS_PENDING.get_ptr_mut(level * 2 + generation) {
        // SAFETY: this CPU's slot for this nesting level, this run's alone.
        Some(slot) => tally::count_in_slot(unsafe { &mut *slot }, epoch, key, queued, |key, n, queued| {
            add_to(map, key, n, queued)
        }),
        None => add_to(map, key, 1, queued),
    }
}

/// Adds `n` drops of `key` to this CPU's value in `map`.
#[inline(always)]
fn add_to(map: &PerCpuHashMap<UdpDropped, DropCount>, key: &UdpDropped, n: u64, queued: u32) -> bool {
    if increment(map, key, n, queued) {
        return true;
    }
    // As in `tally::add`: another CPU may insert it first, and a full map fails both.
    let first = DropCount { count: n, queued, _pad0: 0 };
    map.insert(key, &first, u64::from(BPF_NOEXIST)).is_ok() || increment(map, key, n, queued)
}

#[inline(always)]
fn increment(map: &PerCpuHashMap<UdpDropped, DropCount>, key: &UdpDropped, n: u64, queued: u32) -> bool {
    match map.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: this CPU's value for `key`, valid for the program's run. Added atomically: a drop on the
            // way out in a process may be interrupted by one in a softirq on this CPU.
            unsafe {
                core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*value).count, n);
                if queued > (*value).queued {
                    (*value).queued = queued;
                }
            }
            true
        }
        None => false,
    }
}
