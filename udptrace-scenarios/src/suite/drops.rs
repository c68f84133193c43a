//! Datagrams the kernel drops (`udp_dropped`) at a full receive buffer, from one source and from many; and
//! what every drop scenario checks with (`path_drops.rs` and others): the hook, the reasons, the exact
//! counts, the kernel's own counters where it keeps one.

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{Family, Results, SERVER_V4, TwoHosts, compare, packet, procfs::running_kernel, settled};
use crate::{
    config::Config,
    helper::ClientProcess,
    netns::Netns,
    outcome::Outcome,
    packets::{set_int_option, udp_socket},
    tracer::{Tracer, closing_counts, lost_in},
};

/// The hook that reports `udp_dropped` (`skb:kfree_skb`).
const DROP_HOOK: &str = "udp_dropped";

/// Whether `skb:kfree_skb` gives a drop reason here (5.17): before, `reason` is null and only the location
/// tells where the kernel freed the datagram.
pub(super) fn has_drop_reasons() -> bool {
    running_kernel() >= (5, 17)
}

/// The mode the drop hook attached in, or why the drops cannot be checked.
pub(super) fn drop_hook(config: &Config, tracer: &Tracer) -> Result<String, Outcome> {
    tracer
        .mode_of(DROP_HOOK)
        .map(str::to_owned)
        .ok_or_else(|| Outcome::Skip(format!("the {DROP_HOOK} hook did not attach in {} mode here", config.mode)))
}

/// What a drop must say about why: its reason where the kernel gives reasons, else (reason null) one of the
/// functions that free it (any, when empty: which one depends on the kernel and its inlining).
pub(super) struct Why {
    pub reason: &'static str,
    pub locations: &'static [&'static str],
}

/// A netfilter `drop` verdict. Before 5.17 `nf_hook_slow` frees it, called from the chain's verdict; the
/// contract names `nft_do_chain`.
pub(super) const NETFILTER_DROP: Why = Why { reason: "netfilter_drop", locations: &["nft_do_chain", "nf_hook_slow"] };
pub(super) const RCVBUF: Why =
    Why { reason: "socket_rcvbuff", locations: &["__udp_queue_rcv_skb", "udp_queue_rcv_one_skb", "udp_queue_rcv_skb"] };
pub(super) const NEIGH_FAILED: Why = Why { reason: "neigh_failed", locations: &[] };
pub(super) const UDP_CSUM: Why = Why { reason: "udp_csum", locations: &["__udp4_lib_rcv", "udp_rcv"] };

impl Why {
    /// Whether `event` says this reason (or, without reasons, one of the locations).
    pub(super) fn says(&self, event: &Value) -> bool {
        if has_drop_reasons() {
            event["reason"] == self.reason
        } else {
            event["reason"].is_null()
                && (self.locations.is_empty() || self.locations.iter().any(|l| event["location"] == *l))
        }
    }

    fn describe(&self) -> String {
        if has_drop_reasons() {
            format!("reason {:?}", self.reason)
        } else if self.locations.is_empty() {
            "reason null (no reasons before 5.17)".to_owned()
        } else {
            format!("reason null and location one of {:?} (no reasons before 5.17)", self.locations)
        }
    }
}

/// A `udp_dropped` about the datagrams `src -> dst`, wherever it was seen.
pub(super) fn is_drop_of(src: SocketAddr, dst: SocketAddr) -> impl Fn(&Value) -> bool {
    move |e: &Value| {
        e["event"] == "udp_dropped" && e["packet"]["src"] == src.to_string() && e["packet"]["dst"] == dst.to_string()
    }
}

/// The drops the events matching `about` among `seen` stand for: the sum of their counts.
fn drops_in(seen: &[Value], about: impl Fn(&Value) -> bool) -> u64 {
    seen.iter().filter(|e| about(e)).map(|e| e["count"].as_u64().unwrap_or(0)).sum()
}

/// Waits until the drops matching `about` add up to `want` at least, or the event timeout; then watches a
/// quiet period, long enough for a second's counted drops to arrive, for more. Returns the sum.
pub(super) fn await_drops(config: &Config, tracer: &mut Tracer, want: u64, about: impl Fn(&Value) -> bool) -> u64 {
    let deadline = Instant::now() + config.event_timeout;
    while drops_in(&tracer.seen, &about) < want && Instant::now() < deadline {
        tracer.collect_for(Duration::from_millis(200));
    }
    tracer.collect_for(config.quiet_period);
    drops_in(&tracer.seen, &about)
}

/// Every one of `events` must have `fields`, a count of at least 1, and the reason `why`.
pub(super) fn each_drop(events: &[&Value], fields: &Value, why: &Why) -> Outcome {
    if events.is_empty() {
        return Outcome::Fail("no udp_dropped to check".to_owned());
    }
    let wrong: Vec<String> = events
        .iter()
        .filter_map(|event| {
            let outcome = match compare(event, fields) {
                Outcome::Pass if event["count"].as_u64().is_none_or(|n| n == 0) => {
                    Outcome::Fail(format!("count: got {}, want a positive number in {event}", event["count"]))
                }
                Outcome::Pass if !why.says(event) => Outcome::Fail(format!(
                    "got reason {} and location {}, want {} in {event}",
                    event["reason"],
                    event["location"],
                    why.describe()
                )),
                other => other,
            };
            match outcome {
                Outcome::Fail(why) => Some(why),
                _ => None,
            }
        })
        .collect();
    if wrong.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("{} of {} udp_dropped: {}", wrong.len(), events.len(), wrong.join(" | ")))
    }
}

/// The fields every drop of `src -> dst` (UDP, IPv4) seen in `ns` has, and `more`.
pub(super) fn drop_fields(
    ns: &Netns,
    mode: &str,
    src: SocketAddr,
    dst: SocketAddr,
    direction: &str,
    more: Value,
) -> Value {
    let mut fields = json!({
        "netns": ns.inode,
        "probe": mode,
        "family": "ipv4",
        "packet": packet(src, dst),
        "direction": direction,
    });
    for (key, value) in more.as_object().into_iter().flatten() {
        fields[key] = value.clone();
    }
    fields
}

/// The drops of `src -> dst` must add up to exactly `want`, each with `fields` and the reason `why`:
/// `(count, fields)` checks.
pub(super) fn exact_drops(
    config: &Config,
    tracer: &mut Tracer,
    (src, dst): (SocketAddr, SocketAddr),
    want: u64,
    fields: &Value,
    why: &Why,
) -> (Outcome, Outcome) {
    let about = is_drop_of(src, dst);
    let got = await_drops(config, tracer, want, &about);
    let events: Vec<&Value> = tracer.seen.iter().filter(|e| about(e)).collect();
    let counted = if got == want {
        Outcome::Pass
    } else {
        Outcome::Fail(format!(
            "{want} datagrams dropped, udptrace counted {got} in {} udp_dropped: {events:?}",
            events.len()
        ))
    };
    (counted, each_drop(&events, fields, why))
}

/// Nothing matching `about` among what `tracer` saw (collected for the quiet period first).
pub(super) fn none_of(config: &Config, tracer: &mut Tracer, what: &str, about: impl Fn(&Value) -> bool) -> Outcome {
    tracer.collect_for(config.quiet_period);
    match tracer.seen.iter().find(|e| about(e)) {
        None => Outcome::Pass,
        Some(e) => Outcome::Fail(format!("{what}, yet udptrace reported {e}")),
    }
}

/// The `table` counter `name` (`Udp` `RcvbufErrors`, say) of `ns`'s /proc/net/snmp.
pub(super) fn snmp(ns: &Netns, table: &str, name: &str) -> Result<u64> {
    let text = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
    let prefix = format!("{table}:");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    let [names, values] = lines[..] else {
        bail!("no {table} table in the snmp counters of {}", ns.name);
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no {table} {name} counter in {}", ns.name))
}

/// A socket option of `int` size.
fn get_int_option(socket: &UdpSocket, level: libc::c_int, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a valid socket and a c_int buffer of the length passed.
    let rc = unsafe { libc::getsockopt(socket.as_raw_fd(), level, option, (&raw mut value).cast(), &mut len) };
    if rc == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
}

/// A copy of the one socket the process `pid` holds (`pidfd_getfd`, 5.6), to set its options from here.
fn socket_of(pid: u32) -> Result<UdpSocket> {
    let dir = format!("/proc/{pid}/fd");
    let target: libc::c_int = std::fs::read_dir(&dir)?
        .flatten()
        .find(|entry| std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:[")))
        .and_then(|entry| entry.file_name().to_str()?.parse().ok())
        .with_context(|| format!("no socket in {dir}"))?;
    // SAFETY: plain syscalls; each descriptor returned is owned below.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if pidfd < 0 {
            return Err(io::Error::last_os_error()).context("pidfd_open");
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as libc::c_int);
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("pidfd_getfd");
        }
        Ok(UdpSocket::from(OwnedFd::from_raw_fd(fd as libc::c_int)))
    }
}

/// A receiver that never reads, in a process of its own in the server namespace (a helper client, connected
/// to the flooding socket so that it takes its datagrams), with a receive buffer of 4096 bytes (the kernel
/// doubles it: `sk_rcvbuf` 8192), flooded for a second by the client. Every datagram that finds the buffer
/// full is a drop (`socket_rcvbuff`; before 5.17 no reason, freed in `__udp_queue_rcv_skb` or its callers,
/// inlining varies): what udptrace counts (events' counts, plus what it reports lost) must equal the server
/// kernel's `Udp: RcvbufErrors` increase. Each drop names the socket (`local`), its owner (the helper's pid
/// and comm, not this process), `rcvbuf` (the receive buffer the socket reports), and `queued` (known at the
/// drop from 6.11; may be null before). A second udptrace, stopped right after the flood, must flush the
/// drops it was still counting before its closing line.
pub fn rcvbuf_full(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const RCVBUF_ASKED: libc::c_int = 4096;
    const FLOOD: Duration = Duration::from_secs(1);
    let mode = match drop_hook(config, tracer) {
        Ok(mode) => mode,
        Err(skip) => return Ok(vec![("all", skip)]),
    };
    let hosts = TwoHosts::new()?;
    let client = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    let client_local = client.local_addr()?.to_string();
    let args = ["--netns", hosts.server.name.as_str(), "--bind", SERVER_V4, "--connect", &client_local, "--no-send"];
    let receiver = ClientProcess::start(&config.helper, &args)?;
    let rcvbuf = {
        let socket = socket_of(receiver.pid)?;
        set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF_ASKED).context("setting SO_RCVBUF")?;
        get_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUF).context("reading SO_RCVBUF")?
        // The copy closes here: the helper alone holds the socket.
    };
    let comm =
        std::fs::read_to_string(format!("/proc/{}/comm", receiver.pid)).unwrap_or_default().trim_end().to_owned();
    let netns = hosts.server.inode.to_string();
    let mut second = Tracer::start(config, &["--netns", &netns])?;

    let before = snmp(&hosts.server, "Udp", "RcvbufErrors")?;
    let payload = [0x5au8; 64];
    let mut sent = 0u64;
    let end = Instant::now() + FLOOD;
    while Instant::now() < end {
        for _ in 0..64 {
            sent += u64::from(client.send_to(&payload, receiver.local).is_ok());
        }
    }
    let want = settled(config.event_timeout, || snmp(&hosts.server, "Udp", "RcvbufErrors"))? - before;
    eprintln!("rcvbuf_full: {sent} datagrams sent, RcvbufErrors +{want}, sk_rcvbuf {rcvbuf}");

    // Stopped at once: the drops of the last second are still being counted.
    let closing = second.stop();
    second.collect_for(Duration::from_millis(500));
    let src = client.local_addr()?;
    let about = {
        let is_ours = is_drop_of(src, receiver.local);
        move |e: &Value| is_ours(e) && RCVBUF.says(e)
    };
    let others = |seen: &[Value]| -> Vec<Value> {
        let is_ours = is_drop_of(src, receiver.local);
        seen.iter().filter(|e| is_ours(e) && !RCVBUF.says(e)).cloned().collect()
    };
    if want == 0 {
        return Ok(vec![(
            "kernel_dropped",
            Outcome::Fail(format!("{sent} datagrams to a full buffer and no RcvbufErrors: the case was not made")),
        )]);
    }

    let adds_up = |shown: u64, lost: u64| {
        if config.mode == "kprobe" { shown <= want && shown + lost >= want } else { shown + lost == want }
    };
    let deadline = Instant::now() + config.event_timeout;
    while !adds_up(drops_in(&tracer.seen, &about), lost_in(&tracer.seen)) && Instant::now() < deadline {
        tracer.collect_for(Duration::from_millis(200));
    }
    // A second's counted drops come about a second later: any more than the kernel's must show by then.
    tracer.collect_for(config.quiet_period);
    let (shown, lost) = (drops_in(&tracer.seen, &about), lost_in(&tracer.seen));
    let counted = if adds_up(shown, lost) {
        Outcome::Pass
    } else {
        Outcome::Fail(format!(
            "the kernel counted {want} RcvbufErrors; udptrace reported {shown} such drops and {lost} lost; \
             other drops of the flow: {:?}",
            others(&tracer.seen)
        ))
    };

    let (second_shown, second_lost) = (drops_in(&second.seen, &about), lost_in(&second.seen));
    let flushed = match closing.map(|line| (closing_counts(&line), line)) {
        Ok((Some((_, _, lost)), _)) if lost == second_lost && adds_up(second_shown, lost) => Outcome::Pass,
        Ok((_, line)) => Outcome::Fail(format!(
            "stopped after the flood, a udptrace with --netns reported {second_shown} drops and {second_lost} lost \
             (closing line {line:?}), the kernel counted {want}"
        )),
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };

    let events: Vec<&Value> = tracer.seen.iter().filter(|e| about(e)).collect();
    let more = json!({
        "local": receiver.local.to_string(),
        "pid": receiver.pid,
        "comm": comm,
        "rcvbuf": rcvbuf,
    });
    let fields = drop_fields(&hosts.server, &mode, src, receiver.local, "in", more);
    let named = each_drop(&events, &fields, &RCVBUF);
    let known_at_drop = running_kernel() >= (6, 11);
    let bad_queue: Vec<&&Value> = events
        .iter()
        .filter(|e| match e["queued"].as_u64() {
            Some(n) => n == 0,
            None => known_at_drop || !e["queued"].is_null(),
        })
        .collect();
    let queued = match (events.is_empty(), bad_queue.as_slice()) {
        (true, _) => Outcome::Fail("no udp_dropped to check".to_owned()),
        (false, []) => Outcome::Pass,
        (false, bad) => Outcome::Fail(format!(
            "queued must be the receive queue's bytes at the drop ({}): {bad:?}",
            if known_at_drop { "a positive number from 6.11" } else { "a positive number or null before 6.11" }
        )),
    };
    drop(receiver);
    Ok(vec![("drops_match", counted), ("flushed_on_stop", flushed), ("names_the_socket", named), ("queued", queued)])
}

/// A flood from many sources to one receiver that never reads: 64 client sockets (twice the flows udptrace
/// shows one by one per destination and second, `drops::FLOWS_SHOWN`) each send 24 datagrams, in turn, to a
/// socket of this process whose buffer holds a few. Every drop is still counted (the events' counts and the
/// lost add up to the kernel's `RcvbufErrors` increase), but no more than `FLOWS_SHOWN` sources (and two
/// more, which CPUs racing may show) are named; the rest are in events whose `packet.src` is null.
pub fn drops_from_many_sources(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    const SOURCES: usize = 64;
    const EACH: usize = 24;
    let shown_at_most = udptrace_common::drops::FLOWS_SHOWN as usize + 2;
    if let Err(skip) = drop_hook(config, tracer) {
        return Ok(vec![("all", skip)]);
    }
    let hosts = TwoHosts::new()?;
    let receiver = udp_socket(&hosts.server, SocketAddr::new(IpAddr::V4(SERVER_V4.parse()?), 0))?;
    set_int_option(&receiver, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096).context("setting SO_RCVBUF")?;
    let to = receiver.local_addr()?;
    let clients = (0..SOURCES)
        .map(|_| udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0)))
        .collect::<Result<Vec<_>>>()?;
    let before = snmp(&hosts.server, "Udp", "RcvbufErrors")?;
    for _ in 0..EACH {
        for client in &clients {
            client.send_to(&[0x5a; 64], to)?;
        }
    }
    let want = settled(config.event_timeout, || snmp(&hosts.server, "Udp", "RcvbufErrors"))? - before;
    if want <= shown_at_most as u64 {
        return Ok(vec![(
            "kernel_dropped",
            Outcome::Fail(format!("{} datagrams and only {want} RcvbufErrors: the case was not made", SOURCES * EACH)),
        )]);
    }
    let about = move |e: &Value| e["event"] == "udp_dropped" && e["packet"]["dst"] == to.to_string() && RCVBUF.says(e);
    let deadline = Instant::now() + config.event_timeout;
    while drops_in(&tracer.seen, about) + lost_in(&tracer.seen) < want && Instant::now() < deadline {
        tracer.collect_for(Duration::from_millis(200));
    }
    tracer.collect_for(config.quiet_period);
    let (shown, lost) = (drops_in(&tracer.seen, about), lost_in(&tracer.seen));
    let counted = if shown <= want && shown + lost >= want {
        Outcome::Pass
    } else {
        Outcome::Fail(format!(
            "the kernel counted {want} RcvbufErrors; udptrace reported {shown} such drops and {lost} lost"
        ))
    };
    let events: Vec<&Value> = tracer.seen.iter().filter(|e| about(e)).collect();
    let sources: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["packet"]["src"].as_str()).collect();
    let folded: u64 =
        events.iter().filter(|e| e["packet"]["src"].is_null()).map(|e| e["count"].as_u64().unwrap_or(0)).sum();
    let bounded = if (1..=shown_at_most).contains(&sources.len()) && folded > 0 {
        Outcome::Pass
    } else {
        Outcome::Fail(format!(
            "{SOURCES} sources: want 1 to {shown_at_most} named and the others' drops in events with src null; got \
             {} named and {folded} drops with src null ({} events)",
            sources.len(),
            events.len()
        ))
    };
    Ok(vec![("drops_match", counted), ("sources_bounded", bounded)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drop as this kernel reports one for `why`: its reason, or none and its first location.
    fn drop_event(why: &Why, count: u64) -> Value {
        let (reason, location) = if has_drop_reasons() {
            (json!(why.reason), json!("somewhere"))
        } else {
            (Value::Null, json!(why.locations.first().copied().unwrap_or("somewhere")))
        };
        json!({"event": "udp_dropped", "packet": {"src": "10.0.0.1:1", "dst": "10.0.0.2:2"}, "direction": "in",
               "reason": reason, "location": location, "count": count})
    }

    #[test]
    fn drops_add_up_the_counts_of_their_flow() {
        let seen = vec![drop_event(&UDP_CSUM, 1), drop_event(&UDP_CSUM, 2), json!({"event": "lost", "count": 5})];
        let flow = is_drop_of("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        assert_eq!(drops_in(&seen, &flow), 3);
        assert_eq!(drops_in(&seen, is_drop_of("10.0.0.1:1".parse().unwrap(), "10.0.0.2:3".parse().unwrap())), 0);
    }

    #[test]
    fn each_drop_wants_the_reason_the_fields_and_a_count() {
        let good = drop_event(&RCVBUF, 4);
        let fields = json!({"direction": "in"});
        assert_eq!(each_drop(&[&good], &fields, &RCVBUF), Outcome::Pass);
        assert!(matches!(each_drop(&[], &fields, &RCVBUF), Outcome::Fail(_)));
        assert!(matches!(each_drop(&[&good], &json!({"direction": "out"}), &RCVBUF), Outcome::Fail(_)));
        assert!(matches!(each_drop(&[&drop_event(&RCVBUF, 0)], &fields, &RCVBUF), Outcome::Fail(_)));
        let mut other = good.clone();
        other["reason"] = json!("netfilter_drop");
        other["location"] = json!("nf_hook_slow");
        assert!(matches!(each_drop(&[&good, &other], &fields, &RCVBUF), Outcome::Fail(_)));
    }
}
