//! `--pcap FILE`: each event's packet as pcapng, for Wireshark and tshark. The packets are what the programs
//! copied from the IP header on (`LINKTYPE_RAW`), each with the event as its comments: its text line, then its
//! JSON object. A file is a whole capture: a section header, one interface, the packets, and the interface's
//! statistics at its close, which say what could not be written.
//!
//! A drop counted in the kernel after its flow's first is no packet: its count is kept for the flow, and is
//! said on the flow's next packet, or else in the statistics at the file's close. Never a made-up packet, and
//! no memory that a sender of packets can grow: past [`FLOWS_KEPT`] flows, counts go to one total.
//!
//! `-C` and `-W` rotate files as tcpdump does. `-` writes to standard output, flushed after each batch, so
//! that `| tshark -r -` sees packets as they come; never to a terminal, as payloads come from hosts udptrace
//! does not control.

use std::{
    borrow::Cow,
    collections::HashMap,
    fs::{File, OpenOptions, Permissions},
    io::{self, IsTerminal, Seek, SeekFrom, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use pcap_file::{
    DataLink, Endianness,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
            interface_statistics::{InterfaceStatisticsBlock, InterfaceStatisticsOption},
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
    },
};

use super::{Sink, escape, json::json, text::styled_text};
use crate::{
    cli::PcapTarget,
    domain::Captured,
    events::{Event, Lost},
};

/// Flows whose drops counted in the kernel are kept one by one, until their next packet or the file's close.
pub const FLOWS_KEPT: usize = 1024;

/// Bytes of blocks held before they are written out, besides after each batch.
const BUFFERED: usize = 64 * 1024;

/// The longest comment an option holds: its length is 16 bits.
const COMMENT_MAX: usize = u16::MAX as usize;

/// `if_tsresol` 9: the timestamps are nanoseconds, as pcap-file writes them.
const NANOSECONDS: u8 = 9;

/// `-C` and `-W`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Start a new file once the current one is larger than this many bytes.
    pub file_size: Option<u64>,
    /// Keep this many files, FILE0 to FILE<N-1>, overwriting the oldest.
    pub files: Option<u32>,
}

/// Packets as pcapng, to a file (rotated or not) or standard output.
pub struct PcapSink {
    target: PcapTarget,
    snaplen: u16,
    rotation: Rotation,
    /// The file or stream written now; `None` before [`PcapSink::open`], after the end, and while a next file
    /// could not be opened (tried again at the next packet).
    out: Option<Output>,
    /// `open` succeeded: files are opened from here on as rotation needs them.
    started: bool,
    /// The end came: nothing more is written.
    ended: bool,
    /// Files opened: the next one's number.
    files: u64,
    last_path: Option<PathBuf>,
    counted: Counted,
    /// The run's totals, for the closing line.
    written: u64,
    not_written: u64,
    first_error: Option<String>,
    lost: u64,
    counted_drops: u64,
}

impl PcapSink {
    /// Opens nothing: [`PcapSink::open`] does, once the process has given up its privileges.
    pub fn new(target: PcapTarget, snaplen: u16, rotation: Rotation) -> Self {
        Self {
            target,
            snaplen,
            rotation,
            out: None,
            started: false,
            ended: false,
            files: 0,
            last_path: None,
            counted: Counted::default(),
            written: 0,
            not_written: 0,
            first_error: None,
            lost: 0,
            counted_drops: 0,
        }
    }

    /// Opens the first file: called by main after the privilege split, by the unprivileged tracer.
    pub fn open(&mut self) -> Result<()> {
        match &self.target {
            PcapTarget::Stdout => {
                refuse_terminal(&io::stdout())?;
                self.stream_to(Box::new(io::stdout()))
            }
            PcapTarget::File(_) => {
                let out = self.next_file()?;
                self.out = Some(out);
                self.started = true;
                Ok(())
            }
        }
    }

    /// What the closing line says of the file, after its counts: packets written, files, what could not be
    /// written and why.
    pub fn closing_line(&self) -> String {
        let to = match (&self.target, &self.last_path) {
            (PcapTarget::Stdout, _) => "standard output".to_owned(),
            (PcapTarget::File(path), _) if self.files == 0 => format!("no file ({} not opened)", shown(path)),
            (PcapTarget::File(_), Some(last)) if self.files == 1 => shown(last),
            (PcapTarget::File(_), last) => {
                let last = last.as_deref().map(shown).unwrap_or_default();
                let overwritten = match self.rotation.files {
                    Some(n) if self.files > u64::from(n) => ", the oldest overwritten",
                    _ => "",
                };
                format!("{} files (the last {last}{overwritten})", self.files)
            }
        };
        let mut line = format!("--pcap: {} packets written to {to}", self.written);
        if self.not_written > 0 {
            let why = self.first_error.as_deref().unwrap_or("unknown");
            line.push_str(&format!(", {} not written ({why})", self.not_written));
        }
        if self.counted_drops > 0 {
            line.push_str(&format!(
                ", {} drops counted in the kernel without their packets (said in comments)",
                self.counted_drops
            ));
        }
        if self.lost > 0 {
            line.push_str(&format!(", {} events lost (isb_osdrop)", self.lost));
        }
        line
    }

    /// Writes to `out` (standard output, or a test's stream).
    fn stream_to(&mut self, out: Box<dyn Write>) -> Result<()> {
        let out = Output::start(To::Stream(out), self.snaplen).context("cannot write --pcap to standard output")?;
        self.out = Some(out);
        self.started = true;
        Ok(())
    }

    /// Creates the next file of the rotation and writes its header.
    fn next_file(&mut self) -> Result<Output> {
        let PcapTarget::File(path) = &self.target else { bail!("standard output is one stream") };
        let path = file_name(path, self.files, self.rotation);
        let out = create(&path)
            .and_then(|file| Output::start(To::File(file), self.snaplen))
            .with_context(|| format!("cannot write --pcap file {}", shown(&path)))?;
        self.files += 1;
        self.last_path = Some(path);
        Ok(out)
    }

    /// The output to write a packet to: the current one, or the next file when the current one is full or
    /// none is open; `None` when none could be opened.
    fn writable(&mut self) -> Option<&mut Output> {
        if !self.started || self.ended {
            return None;
        }
        if matches!(self.target, PcapTarget::File(_)) {
            let full = match (&self.out, self.rotation.file_size) {
                (Some(out), Some(size)) => out.size() > size,
                _ => false,
            };
            if full && let Some(out) = self.out.take() {
                // A file's error is remembered, never returned.
                let _ = self.close(out);
            }
            if self.out.is_none() {
                match self.next_file() {
                    Ok(out) => self.out = Some(out),
                    Err(e) => self.failed(crate::errors::one_line(&e)),
                }
            }
        }
        self.out.as_mut()
    }

    /// Writes the statistics at a file's close, with what is pending, and the file out. A stream's error
    /// is returned; a file's is remembered.
    fn close(&mut self, mut out: Output) -> io::Result<()> {
        let mut notes = Vec::new();
        if out.lost > 0 {
            notes.push(format!(
                "udptrace: {} events lost while this was written (the kernel could not hand them over): their \
                 packets are not here",
                out.lost
            ));
        }
        notes.extend(self.counted.drain());
        if out.not_written > 0 {
            let why = out.error.as_deref().unwrap_or("unknown");
            notes.push(format!("udptrace: {} packets could not be written here: {why}", out.not_written));
        }
        if let Err(e) = out.statistics(SystemTime::now(), &notes) {
            self.failed(e.to_string());
        }
        let result = out.write_out();
        self.account(&out, result)
    }

    /// Counts what a write-out did; a file's failure is remembered and not returned.
    fn account(&mut self, out: &Output, result: Result<Written, Failed>) -> io::Result<()> {
        match result {
            Ok(Written { packets }) => {
                self.written += packets;
                Ok(())
            }
            Err(Failed { packets, error }) => {
                self.not_written += packets;
                self.failed(error.to_string());
                match out.to {
                    // Its reader is gone: nothing more is written, at the end either.
                    To::Stream(_) => {
                        self.ended = true;
                        Err(error)
                    }
                    To::File(_) => Ok(()),
                }
            }
        }
    }

    fn failed(&mut self, error: String) {
        self.first_error.get_or_insert(error);
    }

    /// Writes out what is buffered.
    fn write_out(&mut self) -> io::Result<()> {
        let Some(mut out) = self.out.take() else { return Ok(()) };
        let result = out.write_out();
        let result = self.account(&out, result);
        if !self.ended {
            self.out = Some(out);
        }
        result
    }

    /// Closes the current output: at the end, or when the sink goes.
    fn end(&mut self) -> io::Result<()> {
        self.ended = true;
        match self.out.take() {
            Some(out) => self.close(out),
            None => Ok(()),
        }
    }

    fn packet(&mut self, event: &Event, packet: &Captured) -> io::Result<()> {
        // Taken before a rotation closes the file, which says the counts still kept: this one is the packet's.
        let key = (!self.counted.is_empty()).then(|| FlowKey::of(event));
        let pending = key.as_ref().and_then(|key| self.counted.take(key));
        let snaplen = self.snaplen;
        let Some(out) = self.writable() else {
            if let (Some(key), Some(n)) = (key, pending) {
                self.counted.add(key, n);
            }
            self.not_written += 1;
            return Ok(());
        };
        match out.packet(event, packet, snaplen, pending) {
            Ok(()) if out.buffered_bytes() >= BUFFERED => self.write_out(),
            Ok(()) => Ok(()),
            // pcap-file's check that the packet's interface was described: it was, with the header.
            Err(e) => {
                self.not_written += 1;
                self.failed(e.to_string());
                Ok(())
            }
        }
    }
}

impl Sink for PcapSink {
    /// A packet, written; a drop counted in the kernel, kept for its flow; lost events, summed. A write error is
    /// returned for standard output (its reader is gone); for a file, the packet is counted not written.
    fn event(&mut self, event: &Event) -> io::Result<()> {
        if self.ended {
            return Ok(());
        }
        if let Event::Lost(Lost { count, .. }) = event {
            self.lost += count;
            if let Some(out) = &mut self.out {
                out.lost += count;
            }
            return Ok(());
        }
        let Some(meta) = event.meta() else { return Ok(()) };
        match &meta.packet {
            Some(packet) => self.packet(event, packet),
            None if matches!(event, Event::UdpDropped(_)) => {
                self.counted_drops += event.count();
                self.counted.add(FlowKey::of(event), event.count());
                Ok(())
            }
            // A mode that sees no packet: nothing to write.
            None => Ok(()),
        }
    }

    fn finish(&mut self, _elapsed: Duration) -> io::Result<()> {
        self.end()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()
    }
}

impl Drop for PcapSink {
    /// A session that stopped because another output went away does not finish its sinks: the file is
    /// closed here, whole, all the same.
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.end();
        }
    }
}

/// A file, or a stream.
enum To {
    Stream(Box<dyn Write>),
    File(File),
}

/// What a write-out wrote.
struct Written {
    packets: u64,
}

/// What a write-out could not write, and why.
struct Failed {
    packets: u64,
    error: io::Error,
}

/// An open file or stream: its blocks not yet written out, and what was written to it.
struct Output {
    blocks: PcapNgWriter<Vec<u8>>,
    to: To,
    opened: SystemTime,
    /// Bytes written out: the file's size, where its next block goes.
    committed: u64,
    /// Packets in `blocks`.
    buffered: u64,
    /// Packets written out.
    packets: u64,
    not_written: u64,
    /// Its first write error.
    error: Option<String>,
    /// Lost events while it was open.
    lost: u64,
}

impl Output {
    /// The section header and the interface, written out at once: a file that cannot take them is not
    /// opened.
    fn start(to: To, snaplen: u16) -> io::Result<Self> {
        // Big-endian: pcap-file writes the statistics' timestamps as one 64-bit number, which pcapng has as
        // its high 32 bits, then its low ones; in a little-endian section they would come out swapped.
        let section = SectionHeaderBlock {
            endianness: Endianness::Big,
            options: vec![SectionHeaderOption::UserApplication(Cow::Borrowed(concat!(
                "udptrace ",
                env!("CARGO_PKG_VERSION")
            )))],
            ..SectionHeaderBlock::default()
        };
        let mut blocks = PcapNgWriter::with_section_header(Vec::new(), section).map_err(io::Error::other)?;
        let interface = InterfaceDescriptionBlock {
            linktype: DataLink::RAW,
            snaplen: u32::from(snaplen),
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed("udptrace")),
                InterfaceDescriptionOption::IfTsResol(NANOSECONDS),
            ],
        };
        blocks.write_pcapng_block(interface).map_err(io::Error::other)?;
        let mut out = Output {
            blocks,
            to,
            opened: SystemTime::now(),
            committed: 0,
            buffered: 0,
            packets: 0,
            not_written: 0,
            error: None,
            lost: 0,
        };
        out.write_out().map_err(|f| f.error)?;
        Ok(out)
    }

    /// Its size once what is buffered is written.
    fn size(&self) -> u64 {
        self.committed + self.buffered_bytes() as u64
    }

    fn buffered_bytes(&self) -> usize {
        self.blocks.get_ref().len()
    }

    /// The packet, with the event as its comments: the text line, the JSON object, and the drops of its flow
    /// counted in the kernel since its last packet.
    fn packet(
        &mut self,
        event: &Event,
        packet: &Captured,
        snaplen: u16,
        pending: Option<u64>,
    ) -> pcap_file::PcapResult<()> {
        let mut options = vec![
            EnhancedPacketOption::Comment(comment(styled_text(event, false))),
            EnhancedPacketOption::Comment(comment(json(event).to_string())),
        ];
        if let Some(n) = pending {
            options.push(EnhancedPacketOption::Comment(Cow::Owned(format!(
                "udptrace: {n} more drops of this flow counted in the kernel before this one"
            ))));
        }
        let data = &packet.bytes[..packet.bytes.len().min(usize::from(snaplen))];
        let time = event.meta().map_or(UNIX_EPOCH, |m| m.time);
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: time.duration_since(UNIX_EPOCH).unwrap_or_default(),
            original_len: packet.length.max(data.len() as u32),
            data: Cow::Borrowed(data),
            options,
        };
        self.blocks.write_pcapng_block(block)?;
        self.buffered += 1;
        Ok(())
    }

    /// The interface's statistics: the time it was opened and now, the packets written to it, the events
    /// lost meanwhile, and `notes` as comments.
    fn statistics(&mut self, now: SystemTime, notes: &[String]) -> pcap_file::PcapResult<()> {
        let mut options = vec![
            InterfaceStatisticsOption::IsbStartTime(nanos(self.opened)),
            InterfaceStatisticsOption::IsbEndTime(nanos(now)),
            InterfaceStatisticsOption::IsbOsDrop(self.lost),
            InterfaceStatisticsOption::IsbUsrDeliv(self.packets + self.buffered),
        ];
        options.extend(comments(notes).into_iter().map(InterfaceStatisticsOption::Comment));
        let block = InterfaceStatisticsBlock { interface_id: 0, timestamp: nanos(now), options };
        self.blocks.write_pcapng_block(block).map(drop)
    }

    /// Writes out the buffered blocks. After a failure a file goes back to the end of its last whole block, so
    /// that what follows is written over a block cut short.
    fn write_out(&mut self) -> Result<Written, Failed> {
        let bytes = self.blocks.get_ref();
        let packets = std::mem::take(&mut self.buffered);
        let result = if bytes.is_empty() {
            Ok(())
        } else {
            match &mut self.to {
                To::Stream(out) => out.write_all(bytes).and_then(|()| out.flush()),
                To::File(file) => file.write_all(bytes),
            }
        };
        let len = bytes.len() as u64;
        self.blocks.get_mut().clear();
        match result {
            Ok(()) => {
                self.committed += len;
                self.packets += packets;
                Ok(Written { packets })
            }
            Err(error) => {
                if let To::File(file) = &mut self.to {
                    let _ = file.seek(SeekFrom::Start(self.committed));
                }
                self.not_written += packets;
                self.error.get_or_insert_with(|| error.to_string());
                Err(Failed { packets, error })
            }
        }
    }
}

/// The drops of a flow the kernel counted after its first, until its next packet or the file's close.
#[derive(Debug, Default)]
struct Counted {
    flows: HashMap<FlowKey, u64>,
    /// Drops of flows past [`FLOWS_KEPT`].
    other: u64,
}

/// A flow, as its event's line says it: the event's name, why, and the flow.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FlowKey {
    event: &'static str,
    why: String,
    flow: Option<String>,
    /// The same addresses in two network namespaces are two flows.
    netns: Option<u32>,
}

impl FlowKey {
    fn of(event: &Event) -> Self {
        let line = event.kind().line();
        Self { event: event.name(), why: line.why, flow: line.flow, netns: event.meta().map(|m| m.netns) }
    }

    /// `udp_dropped socket_rcvbuff in udp 10.0.0.1:5000 -> 10.0.0.2:9996 netns 4026531833`, escaped.
    fn text(&self) -> String {
        let flow = self.flow.as_deref().map(|f| format!(" {}", escape(f))).unwrap_or_default();
        let netns = self.netns.map(|n| format!(" netns {n}")).unwrap_or_default();
        format!("{} {}{flow}{netns}", self.event, escape(&self.why))
    }
}

impl Counted {
    fn is_empty(&self) -> bool {
        self.flows.is_empty() && self.other == 0
    }

    fn add(&mut self, key: FlowKey, count: u64) {
        if self.flows.len() >= FLOWS_KEPT && !self.flows.contains_key(&key) {
            self.other += count;
        } else {
            *self.flows.entry(key).or_default() += count;
        }
    }

    fn take(&mut self, key: &FlowKey) -> Option<u64> {
        self.flows.remove(key)
    }

    /// A line per flow, largest counts first, then the other flows', emptying it.
    fn drain(&mut self) -> Vec<String> {
        let mut flows: Vec<(FlowKey, u64)> = self.flows.drain().collect();
        flows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut lines: Vec<String> = flows
            .into_iter()
            .map(|(key, n)| {
                format!(
                    "udptrace: {n} more drops of {} counted in the kernel, with no packet of it after them",
                    key.text()
                )
            })
            .collect();
        if self.other > 0 {
            lines.push(format!(
                "udptrace: {} more drops of other flows counted in the kernel (past {FLOWS_KEPT} flows, not kept one \
                 by one)",
                std::mem::take(&mut self.other)
            ));
        }
        lines
    }
}

/// Refuses a terminal: the packets' payloads come from hosts udptrace does not control.
fn refuse_terminal(out: &impl IsTerminal) -> Result<()> {
    if out.is_terminal() {
        bail!(
            "--pcap -: standard output is a terminal, and packets from hosts udptrace does not control must not \
             reach it: redirect it to a file or a pipe (| tshark -r -)"
        );
    }
    Ok(())
}

/// Creates (or truncates) `path`, 0600, not through a symbolic link: a regular file that existed with other
/// permissions is made 0600 too. Another kind of file (a FIFO, `/dev/null`) keeps its own.
fn create(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                io::Error::new(e.kind(), format!("{e}: a symbolic link, which --pcap does not follow"))
            }
            // The tracer writes as the user it became at the split, whose directories are few.
            Some(libc::EACCES) => io::Error::new(
                e.kind(),
                format!(
                    "{e}: the tracer writes it as the user it runs as once attached (udptrace, else nobody): choose \
                     a directory that user may write (/var/lib/udptrace from the package, /tmp)"
                ),
            ),
            _ => e,
        })?;
    let metadata = file.metadata()?;
    if metadata.is_file() && metadata.permissions().mode() & 0o7777 != 0o600 {
        file.set_permissions(Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// The name of file number `n` (from 0), as tcpdump names them: with `-W N`, FILE0 to FILE<N-1>, padded to the
/// digits of N-1, round again after the last; without, FILE, FILE1, FILE2, ...
fn file_name(path: &Path, n: u64, rotation: Rotation) -> PathBuf {
    let suffix = match rotation.files {
        Some(files) => {
            let width = (files.max(1) - 1).checked_ilog10().map_or(0, |d| d as usize + 1);
            format!("{:0width$}", n % u64::from(files.max(1)))
        }
        None if n == 0 => return path.to_owned(),
        None => n.to_string(),
    };
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// A path in a message: escaped, whatever bytes it holds.
fn shown(path: &Path) -> String {
    escape(&path.display().to_string())
}

/// Nanoseconds since the epoch.
fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A comment, cut at a character to the length an option holds.
fn comment(mut text: String) -> Cow<'static, str> {
    if text.len() > COMMENT_MAX {
        let mut end = COMMENT_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Cow::Owned(text)
}

/// Lines as comments, as few as hold them, each whole line in one.
fn comments(lines: &[String]) -> Vec<Cow<'static, str>> {
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        match out.last_mut() {
            Some(last) if last.len() + 1 + line.len() <= COMMENT_MAX => {
                last.push('\n');
                last.push_str(line);
            }
            _ => out.push(line.clone()),
        }
    }
    out.into_iter().map(comment).collect()
}

#[cfg(test)]
mod tests {
    use std::{
        cell::RefCell,
        fs,
        os::unix::fs::{PermissionsExt as _, symlink},
        rc::Rc,
    };

    use pcap_file::pcapng::{Block, PcapNgReader};
    use serde_json::Value;

    use super::*;
    use crate::{
        events::{UdpDropped, samples},
        temp_dir::TempDir,
    };

    /// An IPv4 UDP datagram of `total` bytes, `10.0.0.1:sport -> 10.0.0.2:dport`.
    fn ipv4(sport: u16, dport: u16, total: u16) -> Vec<u8> {
        let mut bytes = vec![0x45, 0];
        bytes.extend(total.to_be_bytes());
        bytes.extend([0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        bytes.extend(sport.to_be_bytes());
        bytes.extend(dport.to_be_bytes());
        bytes.extend((total - 20).to_be_bytes());
        bytes.extend([0, 0]);
        bytes.resize(usize::from(total), 0xab);
        bytes
    }

    /// `drop` with its packet: `bytes` of a datagram `length` long.
    fn dropped(mut drop: UdpDropped, bytes: Vec<u8>, length: u32) -> Event {
        drop.meta.packet = Some(Captured { bytes, length });
        Event::UdpDropped(drop)
    }

    /// The receive-buffer drop of `10.0.0.1:sport -> 10.0.0.2:9996`, with its packet.
    fn rcvbuf(sport: u16) -> Event {
        let mut drop = samples::rcvbuf_drop();
        drop.packet.ports = Some((sport, 9996));
        dropped(drop, ipv4(sport, 9996, 60), 60)
    }

    /// The same, counted in the kernel: `count` drops and no packet.
    fn rcvbuf_count(sport: u16, count: u64) -> Event {
        let mut drop = samples::rcvbuf_drop();
        drop.packet.ports = Some((sport, 9996));
        drop.count = count;
        Event::UdpDropped(drop)
    }

    /// A sink on `path`, opened.
    fn opened(path: &Path, rotation: Rotation) -> PcapSink {
        let mut sink = PcapSink::new(PcapTarget::File(path.to_owned()), 256, rotation);
        sink.open().unwrap();
        sink
    }

    /// Every block of a pcapng file, the section header first (which the reader requires).
    fn blocks(path: &Path) -> Vec<Block<'static>> {
        let bytes = fs::read(path).unwrap();
        assert_eq!(bytes[..4], [0x0a, 0x0d, 0x0d, 0x0a], "{} starts with a section header", path.display());
        read(&bytes)
    }

    /// The blocks of a capture in memory.
    fn read(bytes: &[u8]) -> Vec<Block<'static>> {
        let mut reader = PcapNgReader::new(bytes).unwrap();
        let mut all = vec![Block::SectionHeader(reader.section().clone())];
        while let Some(block) = reader.next_block() {
            all.push(block.unwrap().into_owned());
        }
        all
    }

    fn packets(blocks: &[Block<'static>]) -> Vec<EnhancedPacketBlock<'static>> {
        blocks.iter().filter_map(|b| if let Block::EnhancedPacket(p) = b { Some(p.clone()) } else { None }).collect()
    }

    fn comments_of(packet: &EnhancedPacketBlock) -> Vec<String> {
        packet
            .options
            .iter()
            .map(|o| match o {
                EnhancedPacketOption::Comment(c) => c.to_string(),
                other => panic!("only comments: {other:?}"),
            })
            .collect()
    }

    /// The last block, which must be the statistics.
    fn statistics(blocks: &[Block<'static>]) -> InterfaceStatisticsBlock<'static> {
        match blocks.last() {
            Some(Block::InterfaceStatistics(s)) => s.clone(),
            other => panic!("the statistics last: {other:?}"),
        }
    }

    /// The statistics' comments, a line each.
    fn notes(statistics: &InterfaceStatisticsBlock) -> Vec<String> {
        statistics
            .options
            .iter()
            .filter_map(|o| if let InterfaceStatisticsOption::Comment(c) = o { Some(c.to_string()) } else { None })
            .flat_map(|c| c.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    fn option<T>(statistics: &InterfaceStatisticsBlock, pick: fn(&InterfaceStatisticsOption) -> Option<T>) -> T {
        statistics.options.iter().find_map(pick).expect("the option")
    }

    #[test]
    fn a_file_holds_the_section_the_interface_the_packets_and_the_statistics() {
        let dir = TempDir::new("pcap-blocks");
        let path = dir.join("out.pcapng");
        let mut sink = opened(&path, Rotation::default());
        let mut drop = samples::rcvbuf_drop();
        drop.meta.time += Duration::from_nanos(123);
        let first = dropped(drop, ipv4(5000, 9996, 60), 60);
        let mut refused = samples::owned_socket_error();
        refused.meta.packet = Some(Captured { bytes: ipv4(8888, 40312, 56), length: 56 });
        let second = Event::SocketError(refused);
        for event in [&first, &second] {
            sink.event(event).unwrap();
        }
        sink.finish(Duration::from_secs(1)).unwrap();

        let blocks = blocks(&path);
        let kinds: Vec<&str> = blocks
            .iter()
            .map(|b| match b {
                Block::SectionHeader(_) => "shb",
                Block::InterfaceDescription(_) => "idb",
                Block::EnhancedPacket(_) => "epb",
                Block::InterfaceStatistics(_) => "isb",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["shb", "idb", "epb", "epb", "isb"]);
        let Block::SectionHeader(section) = &blocks[0] else { unreachable!() };
        let application = format!("udptrace {}", env!("CARGO_PKG_VERSION"));
        assert_eq!(section.options, [SectionHeaderOption::UserApplication(application.into())]);
        let Block::InterfaceDescription(interface) = &blocks[1] else { unreachable!() };
        assert_eq!((interface.linktype, interface.snaplen), (DataLink::RAW, 256));
        assert!(interface.options.contains(&InterfaceDescriptionOption::IfTsResol(9)), "{interface:?}");
        assert!(interface.options.contains(&InterfaceDescriptionOption::IfName("udptrace".into())), "{interface:?}");

        let packets = packets(&blocks);
        for (packet, event) in packets.iter().zip([&first, &second]) {
            let captured = event.meta().unwrap().packet.as_ref().unwrap();
            assert_eq!(
                (packet.interface_id, &*packet.data, packet.original_len),
                (0, &captured.bytes[..], captured.length)
            );
            let comments = comments_of(packet);
            assert_eq!(comments.len(), 2, "{comments:?}");
            assert_eq!(comments[0], styled_text(event, false));
            let object: Value = serde_json::from_str(&comments[1]).unwrap();
            assert_eq!(object["event"], event.name());
            assert_eq!(object, json(event));
        }
        assert_eq!(packets[0].timestamp, Duration::from_nanos(1_700_000_005_000_000_123));
        assert_eq!(packets[1].timestamp, Duration::from_nanos(1_700_000_005_000_000_000));

        let statistics = statistics(&blocks);
        assert_eq!(
            option(&statistics, |o| if let InterfaceStatisticsOption::IsbUsrDeliv(n) = o { Some(*n) } else { None }),
            2
        );
        assert_eq!(
            option(&statistics, |o| if let InterfaceStatisticsOption::IsbOsDrop(n) = o { Some(*n) } else { None }),
            0
        );
        let start =
            option(&statistics, |o| if let InterfaceStatisticsOption::IsbStartTime(t) = o { Some(*t) } else { None });
        let end =
            option(&statistics, |o| if let InterfaceStatisticsOption::IsbEndTime(t) = o { Some(*t) } else { None });
        assert!(nanos(SystemTime::now()) >= end && end >= start && start > 1_700_000_000_000_000_000, "{start} {end}");
        assert!(notes(&statistics).is_empty(), "{statistics:?}");
        assert_eq!(sink.closing_line(), format!("--pcap: 2 packets written to {}", path.display()));
    }

    #[test]
    fn a_short_capture_keeps_the_length_and_both_comments() {
        let dir = TempDir::new("pcap-short");
        let path = dir.join("short.pcapng");
        let mut sink = opened(&path, Rotation::default());
        let whole = ipv4(5000, 9996, 1200);
        sink.event(&dropped(samples::rcvbuf_drop(), whole[..40].to_vec(), 1200)).unwrap();
        // More than the snap length is cut to it.
        sink.event(&dropped(samples::rcvbuf_drop(), whole.clone(), 1200)).unwrap();
        sink.finish(Duration::ZERO).unwrap();
        let packets = packets(&blocks(&path));
        assert_eq!((&*packets[0].data, packets[0].original_len), (&whole[..40], 1200));
        assert_eq!(comments_of(&packets[0]).len(), 2);
        assert!(comments_of(&packets[0])[0].contains("socket_rcvbuff"));
        assert_eq!((&*packets[1].data, packets[1].original_len), (&whole[..256], 1200));
    }

    #[test]
    fn a_count_is_said_on_the_next_packet_of_its_flow_only() {
        let dir = TempDir::new("pcap-count");
        let path = dir.join("count.pcapng");
        let mut sink = opened(&path, Rotation::default());
        sink.event(&rcvbuf_count(5000, 5)).unwrap();
        // Another flow's packet: its port, then its reason.
        sink.event(&rcvbuf(5001)).unwrap();
        sink.event(&dropped(samples::dns_drop(), ipv4(41234, 53, 61), 61)).unwrap();
        sink.event(&rcvbuf(5000)).unwrap();
        sink.event(&rcvbuf(5000)).unwrap();
        sink.finish(Duration::ZERO).unwrap();
        let blocks = blocks(&path);
        let counts: Vec<usize> = packets(&blocks).iter().map(|p| comments_of(p).len()).collect();
        assert_eq!(counts, [2, 2, 3, 2]);
        assert_eq!(
            comments_of(&packets(&blocks)[2])[2],
            "udptrace: 5 more drops of this flow counted in the kernel before this one"
        );
        assert!(notes(&statistics(&blocks)).is_empty());
        assert!(
            sink.closing_line().contains(", 5 drops counted in the kernel without their packets"),
            "{}",
            sink.closing_line()
        );
    }

    #[test]
    fn counts_without_a_packet_after_them_are_in_the_closing_statistics() {
        let dir = TempDir::new("pcap-pending");
        let path = dir.join("pending.pcapng");
        let mut sink = opened(&path, Rotation::default());
        sink.event(&rcvbuf(5000)).unwrap();
        sink.event(&rcvbuf_count(5000, 7)).unwrap();
        sink.event(&rcvbuf_count(5000, 2)).unwrap();
        sink.event(&rcvbuf_count(5002, 1)).unwrap();
        // The same flow in another network namespace is another flow: its count is not this one's.
        let mut elsewhere = rcvbuf_count(5000, 3);
        if let Some(meta) = elsewhere.meta_mut() {
            meta.netns += 1;
        }
        sink.event(&elsewhere).unwrap();
        sink.finish(Duration::ZERO).unwrap();
        let blocks = blocks(&path);
        assert_eq!(packets(&blocks).len(), 1, "a count is no packet");
        assert_eq!(
            notes(&statistics(&blocks)),
            [
                "udptrace: 9 more drops of udp_dropped socket_rcvbuff in udp 10.0.0.1:5000 -> 10.0.0.2:9996 netns \
                 4026532001 counted in the kernel, with no packet of it after them",
                "udptrace: 3 more drops of udp_dropped socket_rcvbuff in udp 10.0.0.1:5000 -> 10.0.0.2:9996 netns \
                 4026532002 counted in the kernel, with no packet of it after them",
                "udptrace: 1 more drops of udp_dropped socket_rcvbuff in udp 10.0.0.1:5002 -> 10.0.0.2:9996 netns \
                 4026532001 counted in the kernel, with no packet of it after them",
            ]
        );
    }

    /// Past 1,024 flows a count goes to one total: a sender choosing flows cannot grow memory.
    #[test]
    fn counts_are_kept_for_1024_flows_and_the_rest_in_one_total() {
        let dir = TempDir::new("pcap-bound");
        let path = dir.join("bound.pcapng");
        let mut sink = opened(&path, Rotation::default());
        for port in 10_000..11_100 {
            sink.event(&rcvbuf_count(port, 2)).unwrap();
        }
        assert_eq!((sink.counted.flows.len(), sink.counted.other), (FLOWS_KEPT, 76 * 2));
        // A flow kept gets its count; one past the bound, none.
        sink.event(&rcvbuf(10_000)).unwrap();
        sink.event(&rcvbuf(11_050)).unwrap();
        assert_eq!(sink.counted.flows.len(), FLOWS_KEPT - 1);
        sink.finish(Duration::ZERO).unwrap();
        let blocks = blocks(&path);
        let counts: Vec<usize> = packets(&blocks).iter().map(|p| comments_of(p).len()).collect();
        assert_eq!(counts, [3, 2]);
        let statistics = statistics(&blocks);
        let comments = statistics.options.iter().filter(|o| matches!(o, InterfaceStatisticsOption::Comment(_)));
        assert!(comments.count() > 1, "more than one option holds");
        let notes = notes(&statistics);
        assert_eq!(notes.len(), FLOWS_KEPT);
        assert_eq!(
            notes.last().unwrap(),
            "udptrace: 152 more drops of other flows counted in the kernel (past 1024 flows, not kept one by one)"
        );
        assert!(notes.iter().any(|n| n.contains(" 10.0.0.1:11023 ")) && !notes.iter().any(|n| n.contains(":11024 ")));
    }

    /// Only drops are counts: another kind's event without a packet (a mode that sees none) is not written,
    /// nor counted.
    #[test]
    fn other_events_without_a_packet_are_left_out() {
        let dir = TempDir::new("pcap-none");
        let path = dir.join("none.pcapng");
        let mut sink = opened(&path, Rotation::default());
        sink.event(&Event::SocketError(samples::owned_socket_error())).unwrap();
        sink.event(&Event::IcmpSent(samples::icmp_sent())).unwrap();
        sink.event(&Event::IcmpSuppressed(samples::host_limited(samples::icmp_sent()))).unwrap();
        sink.finish(Duration::ZERO).unwrap();
        let blocks = blocks(&path);
        assert_eq!(blocks.len(), 3, "{blocks:?}");
        assert!(notes(&statistics(&blocks)).is_empty());
        assert_eq!(sink.closing_line(), format!("--pcap: 0 packets written to {}", path.display()));
    }

    #[test]
    fn lost_events_are_the_statistics_os_drops() {
        let dir = TempDir::new("pcap-lost");
        let path = dir.join("lost.pcapng");
        let mut sink = opened(&path, Rotation::default());
        sink.event(&Event::Lost(Lost { time: samples::time(), count: 3 })).unwrap();
        sink.event(&rcvbuf(5000)).unwrap();
        sink.event(&Event::Lost(Lost { time: samples::time(), count: 4 })).unwrap();
        sink.finish(Duration::ZERO).unwrap();
        let blocks = blocks(&path);
        let statistics = statistics(&blocks);
        let dropped =
            option(&statistics, |o| if let InterfaceStatisticsOption::IsbOsDrop(n) = o { Some(*n) } else { None });
        assert_eq!(dropped, 7);
        assert!(notes(&statistics)[0].starts_with("udptrace: 7 events lost"), "{:?}", notes(&statistics));
        assert!(sink.closing_line().ends_with(", 7 events lost (isb_osdrop)"), "{}", sink.closing_line());
    }

    #[test]
    fn files_are_named_as_tcpdump_names_them() {
        let path = Path::new("/x/out");
        let name = |n, files| file_name(path, n, Rotation { file_size: Some(1), files }).display().to_string();
        assert_eq!([name(0, None), name(1, None), name(12, None)], ["/x/out", "/x/out1", "/x/out12"]);
        assert_eq!([name(0, Some(1)), name(1, Some(1))], ["/x/out0", "/x/out0"]);
        assert_eq!([name(0, Some(10)), name(9, Some(10)), name(10, Some(10))], ["/x/out0", "/x/out9", "/x/out0"]);
        assert_eq!([name(0, Some(11)), name(10, Some(11)), name(11, Some(11))], ["/x/out00", "/x/out10", "/x/out00"]);
        assert_eq!(name(7, Some(1000)), "/x/out007");
    }

    /// The packets of file `path`, each file whole: a section, the interface, its packets, the statistics
    /// that count them.
    fn whole_file(path: &Path) -> Vec<EnhancedPacketBlock<'static>> {
        let blocks = blocks(path);
        assert!(matches!(blocks[1], Block::InterfaceDescription(_)), "{}", path.display());
        let packets = packets(&blocks);
        assert_eq!(blocks.len(), 3 + packets.len(), "{}: {blocks:?}", path.display());
        let delivered = statistics(&blocks).options.iter().find_map(|o| match o {
            InterfaceStatisticsOption::IsbUsrDeliv(n) => Some(*n),
            _ => None,
        });
        assert_eq!(delivered, Some(packets.len() as u64), "{}", path.display());
        packets
    }

    /// Packet `n` of a test: its timestamp says which.
    fn numbered(n: u64) -> Event {
        let mut drop = samples::rcvbuf_drop();
        drop.meta.time = UNIX_EPOCH + Duration::from_nanos(n);
        dropped(drop, ipv4(5000, 9996, 200), 200)
    }

    #[test]
    fn a_file_larger_than_the_size_is_followed_by_the_next() {
        let dir = TempDir::new("pcap-rotate");
        let path = dir.join("r.pcapng");
        let mut sink = opened(&path, Rotation { file_size: Some(2500), files: None });
        for n in 1..=9 {
            sink.event(&numbered(n)).unwrap();
        }
        sink.finish(Duration::ZERO).unwrap();
        let names = |n: u64| if n == 0 { path.clone() } else { dir.join(&format!("r.pcapng{n}")) };
        let files = (0..).take_while(|&n| names(n).exists()).count() as u64;
        assert!(files >= 3, "{files} files");
        assert!(!dir.join("r.pcapng0").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count() as u64, files);
        let mut seen = Vec::new();
        for n in 0..files {
            let packets = whole_file(&names(n));
            assert!(!packets.is_empty(), "{}", names(n).display());
            // Packets go on while the file is no larger than the size.
            let size = fs::metadata(names(n)).unwrap().len();
            assert!(n == files - 1 || size > 2500, "{size}");
            seen.extend(packets.iter().map(|p| p.timestamp.as_nanos() as u64));
        }
        assert_eq!(seen, (1..=9).collect::<Vec<u64>>());
        let last = names(files - 1).display().to_string();
        assert_eq!(sink.closing_line(), format!("--pcap: 9 packets written to {files} files (the last {last})"));
    }

    #[test]
    fn with_a_number_of_files_the_oldest_is_overwritten() {
        let dir = TempDir::new("pcap-ring");
        let path = dir.join("ring");
        // Every file is larger than a byte: each packet starts a file (and the first file has none).
        let mut sink = opened(&path, Rotation { file_size: Some(1), files: Some(3) });
        for n in 1..=10 {
            sink.event(&numbered(n)).unwrap();
        }
        sink.finish(Duration::ZERO).unwrap();
        let mut names: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["ring0", "ring1", "ring2"]);
        let held: Vec<Vec<u64>> = names
            .iter()
            .map(|name| whole_file(&dir.join(name)).iter().map(|p| p.timestamp.as_nanos() as u64).collect())
            .collect();
        // Packet n went to file n: 10 in ring1, 9 in ring0, 8 in ring2.
        assert_eq!(held, [vec![9], vec![10], vec![8]]);
        assert_eq!(
            sink.closing_line(),
            format!("--pcap: 10 packets written to 11 files (the last {}1, the oldest overwritten)", path.display())
        );
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn files_are_0600_and_no_link_is_followed() {
        let dir = TempDir::new("pcap-mode");
        let new = dir.join("new.pcapng");
        drop(opened(&new, Rotation::default()));
        assert_eq!(mode(&new), 0o600);
        let old = dir.join("old.pcapng");
        fs::write(&old, b"an older file, longer than a capture's header, that a reader could see").unwrap();
        fs::set_permissions(&old, Permissions::from_mode(0o644)).unwrap();
        drop(opened(&old, Rotation::default()));
        assert_eq!(mode(&old), 0o600);
        assert!(whole_file(&old).is_empty(), "truncated, then written whole");

        let target = dir.join("target");
        fs::write(&target, b"kept").unwrap();
        let link = dir.join("link.pcapng");
        symlink(&target, &link).unwrap();
        let mut sink = PcapSink::new(PcapTarget::File(link.clone()), 256, Rotation::default());
        let error = crate::errors::one_line(&sink.open().unwrap_err());
        assert!(error.starts_with(&format!("cannot write --pcap file {}: ", link.display())), "{error}");
        assert!(error.contains("symbolic link") && !error.contains('\n'), "{error}");
        assert_eq!(fs::read(&target).unwrap(), b"kept");
        assert_eq!(
            sink.closing_line(),
            format!("--pcap: 0 packets written to no file ({} not opened)", link.display())
        );
    }

    /// A sink whose stream is `out`.
    fn streaming(out: impl Write + 'static) -> PcapSink {
        let mut sink = PcapSink::new(PcapTarget::Stdout, 256, Rotation::default());
        sink.stream_to(Box::new(out)).unwrap();
        sink
    }

    /// A stream a test reads as it goes.
    #[derive(Clone, Default)]
    struct Shared(Rc<RefCell<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A reader that goes away after `accepted` writes.
    struct Gone {
        accepted: usize,
    }

    impl Write for Gone {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if self.accepted == 0 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.accepted -= 1;
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stream_has_each_batch_once_flushed() {
        let stream = Shared::default();
        let mut sink = streaming(stream.clone());
        let header = stream.0.borrow().len();
        assert!(header > 0, "the header at once");
        sink.event(&rcvbuf(5000)).unwrap();
        sink.event(&rcvbuf(5001)).unwrap();
        assert_eq!(stream.0.borrow().len(), header, "buffered until the batch ends");
        sink.flush().unwrap();
        assert_eq!(packets(&read(&stream.0.borrow())).len(), 2, "readable as it comes");
        sink.finish(Duration::ZERO).unwrap();
        let blocks = read(&stream.0.borrow());
        assert_eq!((packets(&blocks).len(), statistics(&blocks).interface_id), (2, 0));
        assert_eq!(sink.closing_line(), "--pcap: 2 packets written to standard output");
    }

    /// The stream's reader gone (`| head`), the session stops: the error is returned, from a flush or from an
    /// event that fills the buffer.
    #[test]
    fn a_stream_gone_is_an_error() {
        let mut sink = streaming(Gone { accepted: 1 });
        sink.event(&rcvbuf(5000)).unwrap();
        assert_eq!(sink.flush().unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        let mut sink = streaming(Gone { accepted: 1 });
        let failed = (0..1000).map(|_| sink.event(&numbered(1))).find_map(Result::err);
        assert_eq!(failed.map(|e| e.kind()), Some(io::ErrorKind::BrokenPipe));
        assert!(sink.closing_line().contains(" not written (broken pipe)"), "{}", sink.closing_line());
    }

    /// A file that cannot be written to loses the packets, said at the end, and the session goes on: what is
    /// written after is whole.
    #[test]
    fn a_file_that_fails_a_write_goes_on() {
        let dir = TempDir::new("pcap-failing");
        let path = dir.join("f.pcapng");
        let mut sink = opened(&path, Rotation::default());
        sink.event(&numbered(1)).unwrap();
        sink.flush().unwrap();
        // Its descriptor, read-only for a while: writes fail.
        let out = sink.out.as_mut().unwrap();
        let writable = std::mem::replace(&mut out.to, To::File(File::open(&path).unwrap()));
        sink.event(&numbered(2)).unwrap();
        sink.event(&numbered(3)).unwrap();
        sink.flush().unwrap();
        sink.out.as_mut().unwrap().to = writable;
        sink.event(&numbered(4)).unwrap();
        sink.finish(Duration::ZERO).unwrap();
        let packets = whole_file(&path);
        assert_eq!(packets.iter().map(|p| p.timestamp.as_nanos() as u64).collect::<Vec<_>>(), [1, 4]);
        let blocks = blocks(&path);
        let notes = notes(&statistics(&blocks));
        assert_eq!(notes, ["udptrace: 2 packets could not be written here: Bad file descriptor (os error 9)"]);
        assert_eq!(
            sink.closing_line(),
            format!(
                "--pcap: 2 packets written to {}, 2 not written (Bad file descriptor (os error 9))",
                path.display()
            )
        );
    }

    /// A session stopped by another output's going away finishes no sink: the file is closed whole anyway.
    #[test]
    fn a_file_dropped_unfinished_is_whole() {
        let dir = TempDir::new("pcap-dropped");
        let path = dir.join("d.pcapng");
        let mut sink = opened(&path, Rotation::default());
        sink.event(&rcvbuf(5000)).unwrap();
        drop(sink);
        assert_eq!(whole_file(&path).len(), 1);
    }

    #[test]
    fn a_terminal_is_refused() {
        let dir = TempDir::new("pcap-terminal");
        let plain = File::create(dir.join("plain")).unwrap();
        assert!(refuse_terminal(&plain).is_ok());
        // A pseudo-terminal's master side is a terminal.
        let terminal = OpenOptions::new().read(true).write(true).open("/dev/ptmx").unwrap();
        let error = refuse_terminal(&terminal).unwrap_err().to_string();
        assert!(error.starts_with("--pcap -: standard output is a terminal"), "{error}");
    }

    #[test]
    fn a_comment_is_cut_to_what_an_option_holds() {
        let long = "é".repeat(COMMENT_MAX);
        let cut = comment(long);
        assert!(cut.len() <= COMMENT_MAX && cut.len() > COMMENT_MAX - 2, "{}", cut.len());
        assert!(cut.chars().all(|c| c == 'é'));
        let lines = vec!["x".repeat(40_000), "y".repeat(40_000), "z".repeat(10)];
        let packed = comments(&lines);
        assert_eq!(packed.len(), 2);
        assert_eq!(packed[1], format!("{}\n{}", lines[1], lines[2]));
    }

    /// pcapng has a timestamp as its high 32 bits, then its low ones, each in the section's byte order:
    /// Wireshark reads the statistics' times so.
    #[test]
    fn the_statistics_times_are_high_word_first() {
        let dir = TempDir::new("pcap-words");
        let path = dir.join("w.pcapng");
        let mut sink = opened(&path, Rotation::default());
        sink.event(&rcvbuf(5000)).unwrap();
        let before = nanos(SystemTime::now());
        sink.finish(Duration::ZERO).unwrap();
        let after = nanos(SystemTime::now());
        let bytes = fs::read(&path).unwrap();
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(u32_at(8), 0x1a2b_3c4d, "a big-endian section");
        let length = u32_at(bytes.len() - 4) as usize;
        let isb = bytes.len() - length;
        assert_eq!(u32_at(isb), 5, "the statistics last");
        let time = (u64::from(u32_at(isb + 12)) << 32) | u64::from(u32_at(isb + 16));
        assert!((before..=after).contains(&time), "{before} <= {time} <= {after}");
        // isb_endtime, the second option: its code and length, then the time, high word first.
        let end = isb + 20 + 12;
        assert_eq!((u32_at(end) >> 16, u32_at(end) & 0xffff), (3, 8));
        let end = (u64::from(u32_at(end + 4)) << 32) | u64::from(u32_at(end + 8));
        assert_eq!(end, time);
    }

    /// A next file that cannot be opened loses the packets until one can, said at the end; a count taken for
    /// a packet not written waits for the next.
    #[test]
    fn a_next_file_not_opened_is_tried_again() {
        let dir = TempDir::new("pcap-reopen");
        let path = dir.join("r");
        let mut sink = opened(&path, Rotation { file_size: Some(1), files: None });
        let link = dir.join("r1");
        symlink(dir.join("elsewhere"), &link).unwrap();
        sink.event(&rcvbuf_count(5000, 5)).unwrap();
        sink.event(&rcvbuf(5000)).unwrap();
        sink.event(&rcvbuf(5000)).unwrap();
        fs::remove_file(&link).unwrap();
        sink.event(&rcvbuf(5000)).unwrap();
        sink.finish(Duration::ZERO).unwrap();
        assert!(whole_file(&path).is_empty());
        let packets = whole_file(&link);
        assert_eq!(packets.len(), 1);
        assert_eq!(
            comments_of(&packets[0])[2],
            "udptrace: 5 more drops of this flow counted in the kernel before this one"
        );
        let line = sink.closing_line();
        assert!(
            line.starts_with(&format!(
                "--pcap: 1 packets written to 2 files (the last {}), 2 not written (cannot write --pcap \
                 file {}: ",
                link.display(),
                link.display()
            )),
            "{line}"
        );
    }

    /// Once the stream's reader is gone nothing more is written to it, when the sink goes either.
    #[test]
    fn nothing_more_is_written_to_a_stream_gone() {
        let tries = Rc::new(RefCell::new(0));
        struct Counting(Rc<RefCell<usize>>);
        impl Write for Counting {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                *self.0.borrow_mut() += 1;
                if *self.0.borrow() > 1 { Err(io::ErrorKind::BrokenPipe.into()) } else { Ok(bytes.len()) }
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut sink = streaming(Counting(tries.clone()));
        sink.event(&rcvbuf(5000)).unwrap();
        assert!(sink.flush().is_err());
        let tried = *tries.borrow();
        sink.event(&rcvbuf(5000)).unwrap();
        sink.flush().unwrap();
        drop(sink);
        assert_eq!(*tries.borrow(), tried);
    }
}
