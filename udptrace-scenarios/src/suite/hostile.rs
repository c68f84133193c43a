//! What hosts and processes udptrace does not control write into its outputs: a process and its thread named
//! with a newline, an escape sequence and a right-to-left override whose DNS query is refused (the text, the
//! sentence and the summary show them escaped), and a flood of DNS datagrams from spoofed sources with random
//! names, types and codes (the metrics hold a bounded number of series, and udptrace's memory stays put).

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::*;
use crate::{config::Config, helper::ClientProcess, netns::exec_in, tracer::Tracer};

/// A process name (15 bytes at most) a local user can give: a newline that would forge a log line, a screen
/// clear, and a right-to-left override.
const HOSTILE_COMM: &str = "q\n\x1b[2J\u{202e}evil";
/// How the text and the summary must show it.
const ESCAPED_COMM: &str = "q\\x0a\\x1b[2J\\u{202e}evil";
/// The name of the process's thread that sends: a carriage return, a bold, a left-to-right isolate.
const HOSTILE_THREAD: &str = "t\r\x1b[1m\u{2066}bad";
/// How the text must show it.
const ESCAPED_THREAD: &str = "t\\x0d\\x1b[1m\\u{2066}bad";

/// A query for example.com A, ID 0x2233.
const QUERY: &[u8] = b"\x22\x33\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";

/// Whether `line` holds a character a terminal acts on: a control character or a bidirectional override.
fn raw(line: &str) -> bool {
    line.chars()
        .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c))
}

/// A process named [`HOSTILE_COMM`] sends [`QUERY`] from its thread named [`HOSTILE_THREAD`], on a socket
/// connected to the server's closed port 53: the socket's owner is recorded under those names. The process
/// stays, its socket open, until it is dropped.
fn hostile_query(config: &Config, hosts: &TwoHosts) -> Result<ClientProcess> {
    let server = SocketAddr::new(TwoHosts::server_ip(Family::V4), 53).to_string();
    let payload: String = QUERY.iter().map(|b| format!("{b:02x}")).collect();
    ClientProcess::start(
        &config.helper,
        &[
            "--netns",
            &hosts.client.name,
            "--bind",
            CLIENT_V4,
            "--connect",
            &server,
            "--name",
            HOSTILE_COMM,
            "--thread",
            HOSTILE_THREAD,
            "--payload",
            &payload,
        ],
    )
}

/// The refused query of a process and a thread with hostile names, in the text (every mode: both names),
/// the sentence that names whose query it was (where the socket error carries `dns`: fentry, kprobe; the
/// process's name) and the summary (the process's name): escaped, on one line, with no character a terminal
/// acts on. The shared JSON tracer shows the names whole.
pub(super) fn hostile_names(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let netns = hosts.client.inode.to_string();
    let mut text = Tracer::start_text(config, &["--netns", &netns])?;
    let mut summary = Tracer::start_text(config, &["--netns", &netns, "--summary", "60"])?;
    let client = hostile_query(config, &hosts)?;
    let local = client.local;
    let json = outcome_of(
        tracer
            .expect(
                "the socket_error of the hostile thread's query",
                config.event_timeout,
                is_socket_error_of(&hosts.client, local),
            )
            .map(|e| compare(&e, &serde_json::json!({"comm": HOSTILE_COMM, "thread": HOSTILE_THREAD}))),
    );
    let with_dns = tracer
        .seen
        .iter()
        .rev()
        .find(|e| is_socket_error_of(&hosts.client, local)(e))
        .is_some_and(|e| !e["dns"].is_null());
    let line = text.expect("the text line of the refused query", config.event_timeout, |v| {
        v.as_str().is_some_and(|l| l.contains("ECONNREFUSED") && l.contains(&local.to_string()))
    });
    text.collect_for(config.quiet_period);
    let lines: Vec<String> = text.seen.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    let text_outcome = match line {
        Ok(Value::String(line)) if raw(&line) || lines.iter().any(|l| raw(l)) => {
            Outcome::Fail(format!("a character a terminal acts on reached the text: {lines:?}"))
        }
        Ok(Value::String(line)) if !line.contains(&format!("pid {} {ESCAPED_COMM} ({ESCAPED_THREAD})", client.pid)) => {
            Outcome::Fail(format!("want the owner `{ESCAPED_COMM} ({ESCAPED_THREAD})` in {line:?}"))
        }
        Ok(Value::String(line))
            if with_dns && !line.contains(&format!("({ESCAPED_COMM}'s query for example.com A")) =>
        {
            Outcome::Fail(format!("want the sentence to name `{ESCAPED_COMM}`'s query in {line:?}"))
        }
        Ok(_) => Outcome::Pass,
        Err(e) => Outcome::Fail(format!("{e:#}")),
    };
    let sentence = if with_dns {
        text_outcome.clone()
    } else {
        Outcome::Skip(format!("the socket error carries no dns in {} mode: no sentence names whose query", config.mode))
    };
    summary.stop()?;
    summary.collect_for(Duration::from_secs(1));
    let table: Vec<String> = summary.seen.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    let summary_outcome = if table.iter().any(|l| raw(l)) {
        Outcome::Fail(format!("a character a terminal acts on reached the summary: {table:?}"))
    } else if !table.iter().any(|l| l.contains("socket_error") && l.contains(ESCAPED_COMM)) {
        Outcome::Fail(format!("want a socket_error row owned by `{ESCAPED_COMM}`: {table:?}"))
    } else {
        Outcome::Pass
    };
    drop(client);
    Ok(vec![
        ("json_whole", json),
        ("text_escaped", text_outcome),
        ("sentence_escaped", sentence),
        ("summary_escaped", summary_outcome),
    ])
}

/// Datagrams in the flood, and the spoofed sources' networks: those from the first are refused (port 53
/// is closed), those from the second dropped by a firewall rule.
const FLOOD: u32 = 100_000;
const REFUSED_FROM: [u8; 2] = [10, 200];
const DROPPED_FROM: [u8; 2] = [10, 201];
/// The series the metrics hold at most, all options on: 5 counters of at most 4,000 (udptrace's
/// `MAX_SERIES`) and the fixed ones.
const SERIES_BOUND: usize = 5 * 4000 + 50;
/// How much udptrace's resident memory may grow under the flood.
const RSS_GROWTH_KIB: u64 = 8 * 1024;

/// xorshift64*: the flood's names, types and sources, the same in every run.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A DNS message: a random ID, query or answer with a random code, one question of a random name (now
    /// and then with bytes outside printable ASCII) and a random type.
    fn dns(&mut self) -> Vec<u8> {
        let bits = self.next();
        let flags = (bits as u16 & 0x800f) | 0x0100;
        let mut message = vec![(bits >> 16) as u8, (bits >> 24) as u8];
        message.extend_from_slice(&flags.to_be_bytes());
        message.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for _ in 0..1 + bits % 3 {
            let len = 1 + (self.next() % 20) as usize;
            message.push(len as u8);
            for _ in 0..len {
                let byte = self.next() as u8;
                message.push(if bits & 0x10_0000 == 0 { b'a' + byte % 26 } else { byte });
            }
        }
        message.push(0);
        message.extend_from_slice(&(self.next() as u16).to_be_bytes());
        message.extend_from_slice(&[0, 1]);
        message
    }
}

/// An IPv4 header and a UDP header around `payload`, from `src:sport` to `dst:53` (the kernel fills in the
/// IP checksum and length; a UDP checksum of 0 is none).
fn datagram(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(&sport.to_be_bytes());
    packet.extend_from_slice(&53u16.to_be_bytes());
    packet.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    packet
}

/// Sends the flood from the client's namespace through a raw socket that writes its own IP headers.
fn send_flood(hosts: &TwoHosts) -> Result<u32> {
    let server: Ipv4Addr = SERVER_V4.parse()?;
    hosts.client.run(move || -> Result<u32> {
        // SAFETY: plain socket creation; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW) };
        if fd < 0 {
            bail!("a raw socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor of ours.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(server.octets()) },
            sin_zero: [0; 8],
        };
        let mut random = Random(0x5eed_2026_1207_0040);
        let mut sent = 0;
        for i in 0..FLOOD {
            let bits = random.next();
            let net = if i % 2 == 0 { REFUSED_FROM } else { DROPPED_FROM };
            let src = Ipv4Addr::new(net[0], net[1], (bits >> 8) as u8, bits as u8 | 1);
            let packet = datagram(src, 1024 + (bits >> 16) as u16 % 60000, server, &random.dns());
            // SAFETY: the buffer and the address are ours and of the lengths given.
            let n = unsafe {
                libc::sendto(
                    socket.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const to).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if n > 0 {
                sent += 1;
            }
            // Paced, so that the server's backlog (1,000 packets) is not what drops them.
            if i % 200 == 199 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(sent)
    })?
}

/// `GET /metrics` from udptrace at `addr`: the body.
fn scrape(addr: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (_, body) = answer.split_once("\r\n\r\n").context("an HTTP answer without a header end")?;
    Ok(body.to_owned())
}

/// The series a scrape holds, and the sum of one counter's.
fn series_and_sum(text: &str, counter: &str) -> (usize, f64) {
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let sum = samples
        .iter()
        .filter(|l| l.starts_with(&format!("{counter}{{")) || l.starts_with(&format!("{counter} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    (samples.len(), sum)
}

/// The resident memory of `pid` (`VmRSS`), in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    line.split_whitespace().nth(1).context("no VmRSS value")?.parse().context("VmRSS")
}

/// 100,000 DNS datagrams from spoofed sources, with random names, types, flags and codes, half to the
/// server's closed port 53 and half through a DROP rule, traced with every metrics label on: the scrape holds
/// at most [`SERIES_BOUND`] series, the random names and types fold into `other`, and udptrace's resident
/// memory grows by at most [`RSS_GROWTH_KIB`].
pub(super) fn hostile_flood(config: &Config, _shared: &mut Tracer) -> Result<Results> {
    if config.buffer != "ring" {
        let why = "the metrics do not depend on the buffer; checked with the ring buffer";
        return Ok(vec![("all", Outcome::Skip(why.to_owned()))]);
    }
    let hosts = TwoHosts::new()?;
    nft_input_rule(
        &hosts.server,
        &format!("ip saddr {}.{}.0.0/16 udp dport 53 drop", DROPPED_FROM[0], DROPPED_FROM[1]),
    )?;
    // The port unreachables go back toward the spoofed sources, and no reverse-path check drops them first.
    hosts.server.ip(&["route", "add", "default", "via", CLIENT_V4])?;
    // Every port unreachable goes out, each an event with its DNS question: no rate limit for them.
    hosts.server.sysctl("net.ipv4.icmp_ratemask", "0")?;
    exec_in(&hosts.server, "sh", &["-c", "for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > $f; done"])?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let netns = hosts.server.inode.to_string();
    let metrics = addr.to_string();
    let tracer = Tracer::start(
        config,
        &["--netns", &netns, "--metrics", &metrics, "--metrics-addresses", "--metrics-dns-names", "--quiet"],
    )?;
    let pid = tracer.pid();
    scrape(addr)?;
    let rss_before = rss_kib(pid)?;
    let sent = send_flood(&hosts)?;
    // Counted once the count stops rising (the scrape's text is at most a second old).
    let deadline = Instant::now() + config.event_timeout.max(Duration::from_secs(30));
    let mut last = (0, -1.0);
    let text = loop {
        std::thread::sleep(Duration::from_millis(1500));
        let text = scrape(addr)?;
        let now = series_and_sum(&text, "udptrace_dns_errors_total");
        if now.1 == last.1 || Instant::now() > deadline {
            break text;
        }
        last = now;
    };
    let rss_after = rss_kib(pid)?;
    let (series, dns_errors) = series_and_sum(&text, "udptrace_dns_errors_total");
    let lost = series_and_sum(&text, "udptrace_lost_events_total").1;
    let events = series_and_sum(&text, "udptrace_udp_drops_total").1
        + series_and_sum(&text, "udptrace_icmp_errors_sent_total").1;
    eprintln!(
        "hostile_flood: {sent} datagrams sent, {events} drops and ICMP errors sent counted, {dns_errors} DNS errors counted, {lost} events lost, {series} series, \
         RSS {rss_before} KiB before, {rss_after} KiB after"
    );
    // Drops past the first flows of a second are counted together, without a question (`drops::FLOWS_SHOWN`);
    // every refused query is an event of its own, with its question, and a tenth of them find the buffer full
    // (counted lost: the counts and the losses add up to what was sent).
    let counted = if events + lost >= f64::from(FLOOD) * 0.9 && dns_errors >= f64::from(FLOOD) * 0.2 {
        Outcome::Pass
    } else {
        Outcome::Fail(format!(
            "{sent} datagrams sent: {events} drops and ICMP errors counted, {lost} lost, {dns_errors} DNS errors: the \
             case was not made"
        ))
    };
    let bounded = if series <= SERIES_BOUND && text.contains("qtype=\"other\"") && text.contains("name=\"other\"") {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("{series} series (at most {SERIES_BOUND}, the random types and names in other)"))
    };
    let memory = if rss_after <= rss_before + RSS_GROWTH_KIB {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("RSS grew from {rss_before} KiB to {rss_after} KiB (at most {RSS_GROWTH_KIB} KiB more)"))
    };
    drop(tracer);
    Ok(vec![("counted", counted), ("series_bounded", bounded), ("memory_bounded", memory)])
}
