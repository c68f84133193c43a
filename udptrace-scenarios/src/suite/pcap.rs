//! `--pcap`: the packets behind the events, read back. The frames of a udptrace's files must be exactly its
//! events that have a packet, in the order of its JSON stream, each with its event's addresses, ports, lengths
//! and time, and the event in its comments (its text line, then its JSON). A pcapng reader crate checks every
//! file; where Debian's `tshark` and `capinfos` are installed (the host; the QEMU kernels carry none),
//! Wireshark's own reading must agree: the frames, the comments `frame.comment` filters on, the DNS name its
//! dissector finds.

use std::{
    io::Read,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use pcap_file::pcapng::{
    Block, PcapNgReader,
    blocks::{
        enhanced_packet::EnhancedPacketOption, interface_description::InterfaceDescriptionOption,
        interface_statistics::InterfaceStatisticsOption,
    },
};
use serde_json::Value;

use super::{
    CLOSED_PORT, Family, Results, TwoHosts,
    drops::{self, NETFILTER_DROP},
    errors::nft_input_rule,
    fixtures::{outcome_of, which},
};
use crate::{config::Config, outcome::Outcome, packets::udp_socket, scratch::ScratchDir, tracer::Tracer};

/// `LINKTYPE_RAW`: IPv4 and IPv6 in one interface, from the IP header on.
const LINKTYPE_RAW: u32 = 101;

/// A SIP request, 1,000 bytes with its padding: longer than the default snap length.
fn sip_invite() -> Vec<u8> {
    let mut invite =
        b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP client;branch=z9hG4bK-udptrace\r\n".to_vec();
    invite.resize(1000, b'.');
    invite
}

/// A query for example.com A (as `dns.rs`'s).
const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";

const SIP_PORT: u16 = 5060;
/// Dropped too, but left out by `--port`: in neither the JSON nor the file.
const OTHER_PORT: u16 = 9999;

/// A frame as read back.
#[derive(Debug)]
struct Frame {
    time_ns: u128,
    data: Vec<u8>,
    original_len: u32,
    comments: Vec<String>,
}

/// What a pcapng stream holds, as udptrace writes it: one interface per section, its frames, and the
/// statistics that close it.
#[derive(Debug, Default)]
struct Capture {
    sections: usize,
    /// Each interface's (link type, snap length, `if_tsresol`).
    interfaces: Vec<(u32, u32, Option<u8>)>,
    frames: Vec<Frame>,
    statistics: usize,
    /// The closing statistics' comments and `isb_osdrop`, of every section.
    closing_comments: Vec<String>,
    os_drops: u64,
}

fn read_capture(input: impl Read) -> Result<Capture> {
    let mut reader = PcapNgReader::new(input).context("reading a pcapng section header")?;
    let mut capture = Capture { sections: 1, ..Capture::default() };
    while let Some(block) = reader.next_block() {
        match block.context("reading a pcapng block")? {
            Block::SectionHeader(_) => capture.sections += 1,
            Block::InterfaceDescription(idb) => {
                let resolution = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                    _ => None,
                });
                capture.interfaces.push((u32::from(idb.linktype), idb.snaplen, resolution));
            }
            Block::EnhancedPacket(epb) => capture.frames.push(Frame {
                time_ns: epb.timestamp.as_nanos(),
                data: epb.data.to_vec(),
                original_len: epb.original_len,
                comments: epb
                    .options
                    .iter()
                    .filter_map(|o| match o {
                        EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                        _ => None,
                    })
                    .collect(),
            }),
            Block::InterfaceStatistics(isb) => {
                capture.statistics += 1;
                for option in &isb.options {
                    match option {
                        InterfaceStatisticsOption::Comment(c) => capture.closing_comments.push(c.to_string()),
                        InterfaceStatisticsOption::IsbOsDrop(n) => capture.os_drops += n,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(capture)
}

fn read_file(path: &Path) -> Result<Capture> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_capture(std::io::BufReader::new(file)).with_context(|| format!("reading {}", path.display()))
}

/// Every file is udptrace's: one section, one raw-IP interface of `snaplen` with nanosecond times, and the
/// statistics block at its end.
fn well_formed(capture: &Capture, snaplen: u32) -> Result<()> {
    ensure!(capture.sections == 1, "{} sections, want 1", capture.sections);
    ensure!(
        capture.interfaces == [(LINKTYPE_RAW, snaplen, Some(9))],
        "interfaces {:?}, want one raw-IP interface of snap length {snaplen}, if_tsresol 9",
        capture.interfaces
    );
    ensure!(capture.statistics == 1, "{} interface statistics blocks, want 1 at the end", capture.statistics);
    Ok(())
}

/// The file was created by the unprivileged tracer, 0600.
fn private(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    ensure!(meta.mode() & 0o7777 == 0o600, "{} has mode {:o}, want 600", path.display(), meta.mode() & 0o7777);
    ensure!(meta.uid() != 0, "{} belongs to root, not to the unprivileged tracer", path.display());
    Ok(())
}

/// The `(src, dst)` of an IPv4 or IPv6 packet's UDP datagram, and its IP protocol.
fn udp_of(data: &[u8]) -> Option<(SocketAddr, SocketAddr, u8)> {
    let (src, dst, proto, at): (IpAddr, IpAddr, u8, usize) = match data.first()? >> 4 {
        4 => {
            let ihl = usize::from(data[0] & 0x0f) * 4;
            let a: [u8; 4] = data.get(12..16)?.try_into().ok()?;
            let b: [u8; 4] = data.get(16..20)?.try_into().ok()?;
            (Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into(), *data.get(9)?, ihl)
        }
        6 => {
            let a: [u8; 16] = data.get(8..24)?.try_into().ok()?;
            let b: [u8; 16] = data.get(24..40)?.try_into().ok()?;
            (Ipv6Addr::from(a).into(), Ipv6Addr::from(b).into(), *data.get(6)?, 40)
        }
        _ => return None,
    };
    let ports = data.get(at..at + 4)?;
    Some((
        SocketAddr::new(src, u16::from_be_bytes([ports[0], ports[1]])),
        SocketAddr::new(dst, u16::from_be_bytes([ports[2], ports[3]])),
        proto,
    ))
}

/// The event's time in nanoseconds since the epoch, as JSON writes it (to the microsecond).
fn micros_of(event: &Value) -> Option<u128> {
    let time = humantime::parse_rfc3339(event["time"].as_str()?).ok()?;
    Some(time.duration_since(std::time::UNIX_EPOCH).ok()?.as_micros())
}

/// Whether an event has a packet of its own: not a count of drops after a flow's first (`count` > 1 in
/// these scenarios, whose floods are of more than one), nor a `socket_error` in tracepoint mode, which sees
/// no ICMP error, nor a `lost`.
fn has_packet(event: &Value) -> bool {
    match event["event"].as_str() {
        Some("udp_dropped") => event["count"] == 1,
        Some("icmp_sent" | "icmp_suppressed") => true,
        Some("socket_error") => event["probe"] != "tracepoint",
        _ => false,
    }
}

/// What a frame must hold of its event: its time, its comments (the text line naming it, then its JSON),
/// and the packet's addresses and ports as the event says them.
fn frame_says(frame: &Frame, event: &Value) -> Result<()> {
    let json: Value = serde_json::from_str(frame.comments.get(1).map_or("", String::as_str))
        .with_context(|| format!("the frame's second comment is not JSON: {:?}", frame.comments))?;
    ensure!(json == *event, "the frame's JSON comment {json} is not the event {event}");
    let line = &frame.comments[0];
    ensure!(line.contains(event["event"].as_str().unwrap_or("?")) || event["event"] == "socket_error", "{line}");
    ensure!(micros_of(event) == Some(frame.time_ns / 1000), "frame time {} ns, event {}", frame.time_ns, event["time"]);
    ensure!(frame.data.len() <= frame.original_len as usize, "captured {} of {}", frame.data.len(), frame.original_len);
    if event["event"] == "socket_error" {
        // The ICMP error, from its IP header, with its quote: the quoted datagram is the socket's.
        let (outer_at, icmp) = match frame.data.first().map(|b| b >> 4) {
            Some(4) => (usize::from(frame.data[0] & 0x0f) * 4, 1),
            Some(6) => (40, 58),
            _ => bail!("the frame is not IP: {:?}", &frame.data[..frame.data.len().min(8)]),
        };
        let proto = if icmp == 1 { frame.data[9] } else { frame.data[6] };
        ensure!(proto == icmp, "the socket_error's frame is protocol {proto}, not ICMP");
        let quote = frame.data.get(outer_at + 8..).context("no quote")?;
        let (src, dst, _) = udp_of(quote).context("the quote holds no UDP datagram")?;
        ensure!(
            event["local"] == src.to_string() && event["remote"] == dst.to_string(),
            "the quote is {src} -> {dst}, the event's {} -> {}",
            event["local"],
            event["remote"]
        );
    } else {
        let (src, dst, _) = udp_of(&frame.data).context("the frame holds no UDP datagram")?;
        ensure!(
            event["packet"]["src"] == src.to_string() && event["packet"]["dst"] == dst.to_string(),
            "the frame is {src} -> {dst}, the event's {}",
            event["packet"]
        );
    }
    Ok(())
}

/// The frames are exactly the events with a packet, in order.
fn frames_are_events(frames: &[Frame], events: &[Value]) -> Result<()> {
    let wanted: Vec<&Value> = events.iter().filter(|e| has_packet(e)).collect();
    ensure!(
        frames.len() == wanted.len(),
        "{} frames for {} events with a packet: {}",
        frames.len(),
        wanted.len(),
        wanted.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" ")
    );
    for (i, (frame, event)) in frames.iter().zip(&wanted).enumerate() {
        frame_says(frame, event).with_context(|| format!("frame {}", i + 1))?;
    }
    Ok(())
}

/// The files of a `-C` run without `-W`, in order: FILE, FILE1, FILE2, ...
fn rotated(first: &Path) -> Vec<PathBuf> {
    let mut files = vec![first.to_owned()];
    for n in 1.. {
        let next = PathBuf::from(format!("{}{n}", first.display()));
        if !next.exists() {
            break;
        }
        files.push(next);
    }
    files
}

/// What `tshark -T json` says of a file: per frame, its layers.
fn tshark_frames(tshark: &Path, file: &Path) -> Result<Vec<Value>> {
    // Duplicate keys merged: a frame's comments are one array, not keys of which a JSON reader keeps the last.
    let out = Command::new(tshark)
        .arg("-r")
        .arg(file)
        .args(["-T", "json", "--no-duplicate-keys"])
        .stderr(Stdio::piped())
        .output()
        .context("running tshark")?;
    ensure!(out.status.success(), "tshark -r {}: {}", file.display(), String::from_utf8_lossy(&out.stderr).trim());
    let frames: Value = serde_json::from_slice(&out.stdout).context("tshark's JSON")?;
    Ok(frames.as_array().cloned().unwrap_or_default().into_iter().map(|f| f["_source"]["layers"].clone()).collect())
}

/// A field of tshark's layers, wherever it is nested.
fn tshark_field<'a>(layers: &'a Value, name: &str) -> Vec<&'a Value> {
    let mut found = Vec::new();
    let mut stack = vec![layers];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == name {
                        found.push(v);
                    }
                    stack.push(v);
                }
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found
}

/// Strings of a tshark field, a value or an array of them.
fn strings(values: Vec<&Value>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
            Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        })
        .collect()
}

/// Wireshark's reading of the files agrees with the events: one frame each, the lengths, the comments (the
/// text line and the JSON `frame.comment` filters on), the DNS name. `None` where tshark is not installed.
fn tshark_agrees(files: &[PathBuf], events: &[Value]) -> Option<Result<()>> {
    let tshark = which("tshark")?;
    Some((|| {
        let mut frames = Vec::new();
        for file in files {
            frames.extend(tshark_frames(&tshark, file)?);
        }
        let wanted: Vec<&Value> = events.iter().filter(|e| has_packet(e)).collect();
        ensure!(frames.len() == wanted.len(), "tshark reads {} frames, want {}", frames.len(), wanted.len());
        for (layers, event) in frames.iter().zip(&wanted) {
            let comments = strings(tshark_field(layers, "frame.comment"));
            ensure!(comments.len() >= 2, "tshark shows comments {comments:?}");
            ensure!(serde_json::from_str::<Value>(&comments[1]).ok().as_ref() == Some(*event), "{}", comments[1]);
            if let Some(reason) = event["reason"].as_str() {
                ensure!(comments[0].contains(reason), "frame.comment {:?} does not say {reason}", comments[0]);
            }
            if let Some(name) = event["dns"]["qname"].as_str() {
                let names = strings(tshark_field(layers, "dns.qry.name"));
                ensure!(names.iter().any(|n| n == name), "tshark's DNS dissector names {names:?}, the event {name}");
            }
        }
        // `frame.comment` filters on the reason: the drops alone.
        let drops = wanted.iter().filter(|e| e["event"] == "udp_dropped").count();
        let mut filtered = 0;
        for file in files {
            let out = Command::new(&tshark)
                .arg("-r")
                .arg(file)
                .args(["-Y", "frame.comment contains \"udp_dropped\""])
                .stderr(Stdio::piped())
                .output()
                .context("running tshark -Y")?;
            filtered += String::from_utf8_lossy(&out.stdout).lines().count();
        }
        ensure!(filtered == drops, "frame.comment contains \"udp_dropped\" selects {filtered} frames, want {drops}");
        Ok(())
    })())
}

/// `capinfos` of a file: its type, encapsulation, timestamp precision, packet count and writer, as Wireshark's
/// tools read them (a table: `-T`, one line of names, one of values).
fn capinfos_agrees(file: &Path, packets: usize) -> Option<Result<()>> {
    let capinfos = which("capinfos")?;
    Some((|| {
        let out = Command::new(capinfos).args(["-T", "-M", "-t", "-E", "-c", "-F"]).arg(file).output()?;
        ensure!(out.status.success(), "capinfos: {}", String::from_utf8_lossy(&out.stderr).trim());
        let text = String::from_utf8_lossy(&out.stdout);
        let values: Vec<&str> = text.lines().nth(1).unwrap_or_default().split('\t').collect();
        // Type, encapsulation, precision, packets, hardware, OS, application.
        let count = packets.to_string();
        ensure!(
            values.get(1..5) == Some(&["pcapng", "rawip", "nanoseconds", count.as_str()][..])
                && values.get(7).is_some_and(|app| app.starts_with("udptrace ")),
            "capinfos says {values:?}, want pcapng, Raw IP, nanoseconds, {packets} packets, by udptrace"
        );
        Ok(())
    })())
}

/// What read `--pcap -`'s stream: the crate, or tshark (its frames' layers).
enum Reading {
    Crate(Capture),
    Tshark(Vec<Value>),
}

/// Sends `payload` from a new client socket to the server's `port`.
fn send(hosts: &TwoHosts, family: Family, port: u16, payload: &[u8]) -> Result<(UdpSocket, SocketAddr)> {
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(family), 0))?;
    let server = SocketAddr::new(TwoHosts::server_ip(family), port);
    socket.send_to(payload, server)?;
    Ok((socket, server))
}

/// Waits for `what` in `tracer`'s events.
fn wait(config: &Config, tracer: &mut Tracer, what: &str, about: impl Fn(&Value) -> bool) -> Result<Value> {
    tracer.expect(what, config.event_timeout, about)
}

/// The file: a SIP INVITE and a DNS query dropped by a firewall (the INVITE cut at the snap length), a flood of
/// one flow (its first drop a frame, its count a comment), a refused datagram (its `icmp_sent`, and its
/// `socket_error` where the mode sees the ICMP error), a drop on a port `--port` leaves out; rotated by `-C`.
pub(super) fn pcap_file(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    if let Err(skip) = drops::drop_hook(config, tracer) {
        return Ok(vec![("pcap_file", skip)]);
    }
    let hosts = TwoHosts::new()?;
    nft_input_rule(&hosts.server, &format!("udp dport {{ 53, {SIP_PORT}, {OTHER_PORT} }} drop"))?;
    let scratch = ScratchDir::new("pcap", 0o1777)?;
    let file = scratch.join("drops.pcapng");
    let (server, client) = (hosts.server.inode.to_string(), hosts.client.inode.to_string());
    let closed = CLOSED_PORT.to_string();
    let mut pcap = Tracer::start(
        config,
        &[
            "--netns",
            &server,
            "--netns",
            &client,
            "--port",
            "5060",
            "--port",
            "53",
            "--port",
            &closed,
            "--pcap",
            &file.display().to_string(),
            "-C",
            "4K",
        ],
    )?;
    let (_sip, sip_server) = send(&hosts, Family::V4, SIP_PORT, &sip_invite())?;
    // Four more SIP requests, each a flow: enough frames for `-C 4K` to start a second file.
    let registers: Vec<UdpSocket> = (0..4)
        .map(|_| send(&hosts, Family::V4, SIP_PORT, b"REGISTER sip:example.com SIP/2.0\r\n").map(|(s, _)| s))
        .collect::<Result<_>>()?;
    let (_dns, _) = send(&hosts, Family::V6, 53, QUERY)?;
    let (_other, _) = send(&hosts, Family::V4, OTHER_PORT, b"left out by --port")?;
    let refused = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    refused.connect(SocketAddr::new(TwoHosts::server_ip(Family::V4), CLOSED_PORT))?;
    refused.send(b"refused")?;
    let flood = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    for _ in 0..5 {
        flood.send_to(b"flood", sip_server)?;
    }
    let flood_src = flood.local_addr()?;
    let result = (|| {
        pcap.expect_count("REGISTER drops", config.event_timeout, 5, |e| {
            e["event"] == "udp_dropped" && e["packet"]["dst"] == sip_server.to_string()
        })?;
        drop(registers);
        let sip = wait(config, &mut pcap, "the INVITE's drop", |e| {
            e["event"] == "udp_dropped" && e["packet"]["dst"] == sip_server.to_string() && e["count"] == 1
        })?;
        ensure!(NETFILTER_DROP.says(&sip), "{sip}");
        wait(config, &mut pcap, "the query's drop", |e| {
            e["event"] == "udp_dropped" && e["dns"]["qname"] == "example.com"
        })?;
        wait(config, &mut pcap, "the refused datagram's icmp_sent", |e| e["event"] == "icmp_sent")?;
        // The flood's drops after its first, counted in the kernel; then one more of the flow, a second later.
        let about_flood = drops::is_drop_of(flood_src, sip_server);
        let counted = drops::await_drops(config, &mut pcap, 5, &about_flood);
        ensure!(counted == 5, "the flood's drops add up to {counted}, want 5");
        std::thread::sleep(Duration::from_millis(1100));
        flood.send_to(b"flood", sip_server)?;
        let again = drops::await_drops(config, &mut pcap, 6, &about_flood);
        ensure!(again == 6, "the flood's drops add up to {again}, want 6");
        pcap.collect_for(config.quiet_period);
        let closing = pcap.stop()?;
        let events: Vec<Value> = pcap.seen.iter().filter(|e| e["event"] != "lost").cloned().collect();
        ensure!(
            events.iter().all(|e| e["packet"]["dst"] != format!("{}:{OTHER_PORT}", super::fixtures::SERVER_V4)),
            "an event of the port --port leaves out"
        );
        let files = rotated(&file);
        ensure!(files.len() >= 2, "-C 4K wrote one file: {files:?}");
        let mut frames = Vec::new();
        let mut closing_comments = Vec::new();
        for path in &files {
            private(path)?;
            let capture = read_file(path)?;
            well_formed(&capture, u32::from(udptrace_common::PACKET_SNAPLEN))
                .with_context(|| format!("{}", path.display()))?;
            closing_comments.extend(capture.closing_comments);
            frames.extend(capture.frames);
        }
        frames_are_events(&frames, &events)?;
        // The INVITE cut at 256 bytes of its 1,028 (the REGISTERs and the flood go to the same port).
        let invite = frames.iter().find(|f| f.data.get(28..).is_some_and(|p| p.starts_with(b"INVITE ")));
        let invite = invite.context("no frame of the INVITE")?;
        ensure!(
            invite.data.len() == 256 && invite.original_len == 20 + 8 + 1000,
            "the INVITE's frame holds {} of {} bytes, want 256 of 1028",
            invite.data.len(),
            invite.original_len
        );
        ensure!(
            udp_of(&invite.data).is_some_and(|(_, dst, _)| dst == sip_server),
            "the INVITE's frame is not to {sip_server}"
        );
        // The flood's 4 counted drops: a comment on its next frame, or in the closing statistics.
        let of_flood = |f: &&Frame| udp_of(&f.data).is_some_and(|(src, dst, _)| src == flood_src && dst == sip_server);
        let on_frame = frames.iter().filter(of_flood).flat_map(|f| f.comments.iter().skip(2));
        let on_frame = on_frame.filter(|c| c.starts_with("udptrace: 4 more drops of this flow")).count();
        let in_closing = closing_comments.iter().filter(|c| {
            c.starts_with("udptrace: 4 more drops of udp_dropped") && c.contains(&format!(" {flood_src} -> "))
        });
        ensure!(
            on_frame + in_closing.count() == 1,
            "no comment, or more than one, counts the flood's 4 drops: {:?}, closing {closing_comments:?}",
            frames.iter().map(|f| &f.comments[2..]).collect::<Vec<_>>()
        );
        ensure!(closing.contains("pcap"), "the closing line says nothing of the file: {closing}");
        if let Some(agrees) = tshark_agrees(&files, &events) {
            agrees.context("tshark")?;
        }
        if let Some(agrees) = capinfos_agrees(&files[0], read_file(&files[0])?.frames.len()) {
            agrees.context("capinfos")?;
        }
        Ok(Outcome::Pass)
    })();
    Ok(vec![("pcap_file", outcome_of(result))])
}

/// `--pcap -`: the pcapng on standard output alone (the JSON goes to standard error), piped into a reader:
/// `tshark -r -` where installed, else the reader crate; the same frames as the events, a snap length of 100.
pub(super) fn pcap_stdout(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    if let Err(skip) = drops::drop_hook(config, tracer) {
        return Ok(vec![("pcap_stdout", skip)]);
    }
    let hosts = TwoHosts::new()?;
    nft_input_rule(&hosts.server, &format!("udp dport {SIP_PORT} drop"))?;
    let server = hosts.server.inode.to_string();
    let mut udptrace = Command::new(&config.udptrace)
        .args(["--probe", &config.mode, "--buffer", &config.buffer, "--json", "--netns", &server])
        .args(["--pcap", "-", "--pcap-snaplen", "100", "--duration", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting udptrace --pcap -")?;
    let stdout = udptrace.stdout.take().context("udptrace's stdout")?;
    // The reader: tshark straight from the pipe where installed, else the crate, on a thread of its own.
    let reader = std::thread::spawn(move || -> Result<Reading> {
        let Some(tshark) = which("tshark") else { return Ok(Reading::Crate(read_capture(stdout)?)) };
        let out = Command::new(tshark)
            .args(["-r", "-", "-T", "json", "--no-duplicate-keys"])
            .stdin(Stdio::from(stdout))
            .stderr(Stdio::null())
            .output()?;
        ensure!(out.status.success(), "tshark -r - failed");
        let frames: Value = serde_json::from_slice(&out.stdout).context("tshark's JSON")?;
        let layers = frames.as_array().cloned().unwrap_or_default();
        Ok(Reading::Tshark(layers.into_iter().map(|f| f["_source"]["layers"].clone()).collect()))
    });
    let stderr = udptrace.stderr.take().context("udptrace's stderr")?;
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let result = (|| {
        let deadline = Instant::now() + config.event_timeout.max(Duration::from_secs(60));
        let mut stderr_lines = Vec::new();
        while !stderr_lines.iter().any(|l: &String| l.starts_with("udptrace: tracing")) {
            let line =
                lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).context("no tracing line")?;
            stderr_lines.push(line);
        }
        let (_a, to) = send(&hosts, Family::V4, SIP_PORT, &sip_invite())?;
        let (_b, to6) = send(&hosts, Family::V6, SIP_PORT, b"REGISTER sip:example.com SIP/2.0\r\n")?;
        let wanted = [to, to6];
        let mut events: Vec<Value> = Vec::new();
        let until = Instant::now() + config.event_timeout;
        while events.iter().filter(|e| e["event"] == "udp_dropped").count() < 2 && Instant::now() < until {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(event) => events.push(event),
                    Err(_) => stderr_lines.push(line),
                }
            }
        }
        // SAFETY: a signal to the child.
        unsafe { libc::kill(udptrace.id() as libc::pid_t, libc::SIGINT) };
        let _ = udptrace.wait();
        events.extend(lines.try_iter().filter_map(|l| serde_json::from_str::<Value>(&l).ok()));
        ensure!(
            wanted.iter().all(|w| events.iter().any(|e| e["packet"]["dst"] == w.to_string())),
            "the JSON on standard error lacks a drop: {events:?} ({stderr_lines:?})"
        );
        let events: Vec<Value> = events.into_iter().filter(|e| e["event"] != "lost").collect();
        match reader.join().map_err(|_| anyhow::anyhow!("the reader panicked"))?? {
            Reading::Crate(capture) => {
                well_formed(&capture, 100)?;
                frames_are_events(&capture.frames, &events)?;
                ensure!(capture.frames.iter().all(|f| f.data.len() <= 100), "a frame longer than the snap length");
            }
            Reading::Tshark(layers) => {
                let wanted: Vec<&Value> = events.iter().filter(|e| has_packet(e)).collect();
                ensure!(
                    layers.len() == wanted.len(),
                    "tshark -r - reads {} frames, want {}",
                    layers.len(),
                    wanted.len()
                );
                for (layer, event) in layers.iter().zip(&wanted) {
                    let comments = strings(tshark_field(layer, "frame.comment"));
                    let json = comments.get(1).and_then(|c| serde_json::from_str::<Value>(c).ok());
                    ensure!(json.as_ref() == Some(*event), "tshark -r - shows comments {comments:?} for {event}");
                    let caplen = strings(tshark_field(layer, "frame.cap_len"));
                    ensure!(
                        caplen.len() == 1 && caplen[0].parse::<usize>().is_ok_and(|n| n <= 100),
                        "frame.cap_len {caplen:?}"
                    );
                }
            }
        }
        Ok(Outcome::Pass)
    })();
    let _ = udptrace.kill();
    let _ = udptrace.wait();
    Ok(vec![("pcap_stdout", outcome_of(result))])
}

/// `-C 4K -W 3`: a flood of distinct flows rotates through three files, FILE0 to FILE2, each a whole
/// pcapng, and no fourth.
pub(super) fn pcap_rotation(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    if let Err(skip) = drops::drop_hook(config, tracer) {
        return Ok(vec![("pcap_rotation", skip)]);
    }
    let hosts = TwoHosts::new()?;
    nft_input_rule(&hosts.server, "udp dport 20000-20099 drop")?;
    let scratch = ScratchDir::new("pcap-ring", 0o1777)?;
    let server = hosts.server.inode.to_string();
    let mut pcap = Tracer::start(
        config,
        &["--netns", &server, "--pcap", &scratch.join("ring.pcapng").display().to_string(), "-C", "4K", "-W", "3"],
    )?;
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(Family::V4), 0))?;
    // Each port a flow of its own, each drop a frame of about 1.3 KB with its comments: a file every few.
    for port in 20000..20030u16 {
        socket.send_to(&[b'r'; 200], SocketAddr::new(TwoHosts::server_ip(Family::V4), port))?;
    }
    let result = (|| {
        pcap.expect_count("drops", config.event_timeout, 30, |e| e["event"] == "udp_dropped")?;
        pcap.stop()?;
        let names: Vec<PathBuf> = (0..3).map(|i| scratch.join(&format!("ring.pcapng{i}"))).collect();
        for name in &names {
            private(name)?;
            let capture = read_file(name)?;
            well_formed(&capture, 256).with_context(|| format!("{}", name.display()))?;
            ensure!(!capture.frames.is_empty(), "{} holds no frame", name.display());
        }
        let mut all: Vec<String> =
            std::fs::read_dir(scratch.path())?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
        all.sort();
        ensure!(all == ["ring.pcapng0", "ring.pcapng1", "ring.pcapng2"], "the directory holds {all:?}");
        Ok(Outcome::Pass)
    })();
    Ok(vec![("pcap_rotation", outcome_of(result))])
}
