//! The command line (README: a public contract, keep the spellings).

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    check, dns,
    domain::AttachMode,
    pipeline::{
        filter::{self, Filter, Prefix},
        source,
    },
};

const EXAMPLES: &str = "\
Examples:
  Who gets ECONNREFUSED, and from whom?
    udptrace --errno ECONNREFUSED
  Why does this host send port unreachable (no listener, firewall REJECT)?
    udptrace --errno ECONNREFUSED --port 53
  What happens to one process's sockets:
    udptrace -p 4711            udptrace --comm dns-client
  Errors to or from a subnet, in one container's network namespace:
    udptrace --addr 10.0.0.0/8 --netns /proc/4711/ns/net
  Every error and drop about a Kubernetes Service address, whichever backend conntrack sent it to:
    udptrace --addr 10.96.0.10
  Thousands of errors a second: a table every 10 seconds instead of a line each
    udptrace --summary 10
  Counters for Prometheus on every node, no per-event output:
    udptrace --metrics 0.0.0.0:9464 --quiet
  NDJSON for 30 seconds, then stop:
    udptrace --json --duration 30
  The dropped or refused SIP datagrams themselves, for Wireshark, each with its event as a comment:
    udptrace --pcap drops.pcapng --port 5060
  Which hooks attach on this kernel, in which mode, and why not:
    udptrace probes -v
  Is a UDP port open, closed, filtered or unreachable, and why:
    udptrace check 10.0.0.2:53 --dns example.com

Filters run in the kernel where the data is there. Options combine with AND; an option given again
adds an alternative (OR). -p and --comm select socket errors (the owner); icmp_sent events have none.

Text output is coloured on a terminal; NO_COLOR=1 turns that off.";

#[derive(Debug, Parser)]
#[command(
    name = "udptrace",
    version,
    about = "Which UDP socket got which ICMP error, which errno, whether the application saw it, and why the \
             other side sent it: traced in the kernel, without packet capture.",
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// One JSON object per line on stdout (NDJSON).
    #[arg(long, global = true)]
    pub json: bool,

    /// Attach mode: `auto` tries fentry, then kprobe, then tracepoint, per hook.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub probe: ProbeChoice,

    /// Stop after SECS seconds (a positive number, fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Only errors of sockets owned by process PID (the process that created the socket).
    #[arg(short, long = "pid", value_name = "PID", value_parser = clap::value_parser!(u32).range(1..),
          help_heading = "Filters")]
    pub pids: Vec<u32>,

    /// Only errors of sockets owned by a process of this name, or made by a thread of this name (dig's
    /// isc-net-0000): its first 15 bytes, as the kernel keeps.
    #[arg(long = "comm", value_name = "NAME", value_parser = filter::parse_comm, help_heading = "Filters")]
    pub comms: Vec<String>,

    /// Only events about a DNS name under SUFFIX (example.com: it and www.example.com), from the query or
    /// answer an event's datagram carries (`dns`).
    #[arg(long = "dns-name", value_name = "SUFFIX", value_parser = dns::parse_dns_name, help_heading = "Filters")]
    pub dns_names: Vec<String>,

    /// Only events in a pod of this Kubernetes namespace (named from the node's container runtime files).
    #[arg(long = "k8s-namespace", value_name = "NS", value_parser = filter::parse_k8s_name, help_heading = "Filters")]
    pub k8s_namespaces: Vec<String>,

    /// Only events in a pod whose name starts with NAME (`--pod coredns` selects every replica).
    #[arg(long = "pod", value_name = "NAME", value_parser = filter::parse_k8s_name, help_heading = "Filters")]
    pub pods: Vec<String>,

    /// Only events with this local or remote port (for icmp_sent: the offending packet's ports); on a
    /// connection conntrack translated, a port of either tuple too.
    #[arg(long = "port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..),
          help_heading = "Filters")]
    pub ports: Vec<u16>,

    /// Only events with an address in IP/LEN: local, remote, or who sent the ICMP (IPv4 or IPv6); on a
    /// connection conntrack translated, an address of either tuple too (a Service's and its backends').
    #[arg(long = "addr", value_name = "IP[/LEN]", value_parser = filter::parse_prefix, help_heading = "Filters")]
    pub addrs: Vec<Prefix>,

    /// Only this errno (ECONNREFUSED, EHOSTUNREACH, ...); icmp_sent: the errno its ICMP gives the sender.
    #[arg(long = "errno", value_name = "NAME", value_parser = filter::parse_errno, help_heading = "Filters")]
    pub errnos: Vec<i32>,

    /// Only this network namespace: its inode number or a path (/proc/PID/ns/net, /run/netns/NAME).
    #[arg(long = "netns", value_name = "INODE", value_parser = filter::parse_netns, help_heading = "Filters")]
    pub netns: Vec<u32>,

    /// A table of counts by (event, errno, verdict or cause, address, translation, DNS question, owner) every
    /// SECS seconds (default 5) and at exit, instead of one line per event.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "5", value_parser = parse_duration)]
    pub summary: Option<Duration>,

    /// Serve Prometheus/OpenMetrics counters on http://ADDR:PORT/metrics while tracing (e.g. 0.0.0.0:9464).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen_addr)]
    pub metrics: Option<std::net::SocketAddr>,

    /// Also label the metrics with addresses (socket errors: the remote; ICMP errors sent: the packet's
    /// destination). Off by default: every distinct address becomes a time series of its own, which can
    /// overload Prometheus on a busy host (cardinality).
    #[arg(long, requires = "metrics")]
    pub metrics_addresses: bool,

    /// Also label the DNS metric (udptrace_dns_errors_total) with the name asked. Off by default, for the same
    /// reason as --metrics-addresses; at most 1,000 names, the rest "other".
    #[arg(long, requires = "metrics")]
    pub metrics_dns_names: bool,

    /// Also label the metrics with the Kubernetes pod (k8s_namespace_name, k8s_pod_name: empty for an event in
    /// no pod). Off by default: every pod becomes series of its own; at most 1,000 pods, the rest "other".
    #[arg(long, requires = "metrics")]
    pub metrics_pods: bool,

    /// No event lines or tables on stdout (with --metrics: serve the counters only).
    #[arg(short, long)]
    pub quiet: bool,

    /// A port whose datagrams are DNS, besides 53 (a resolver on a high port, 5353 for mDNS); up to seven.
    /// An event about a datagram to or from one carries the start of its query or answer (`dns`).
    #[arg(long = "dns-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub dns_ports: Vec<u16>,

    /// How events reach udptrace: the BPF ring buffer (5.8+), or a perf buffer per CPU.
    #[arg(long, value_enum, default_value = "ring", value_name = "KIND")]
    pub buffer: Buffer,

    /// The buffer's size in bytes, a power of two from 128K to 256M (suffixes K and M: KiB, MiB); for
    /// `--buffer perf`, each CPU's. Default: 1M for the ring buffer, 256K per CPU for perf buffers.
    #[arg(long, value_name = "BYTES", value_parser = parse_buffer_size)]
    pub buffer_size: Option<u32>,

    /// How many open UDP sockets created or connected since udptrace started have their owner recorded,
    /// from 64 to 4194304 (suffixes K and M: thousands of 1024); beyond, an event names the socket's holder
    /// from /proc, and the closing line counts the sockets not recorded. About 110 bytes of kernel memory
    /// each, taken at start.
    #[arg(long, value_name = "SOCKETS", default_value_t = udptrace_common::OWNER_ENTRIES, value_parser = parse_owner_records)]
    pub owner_records: u32,

    /// Stop with an error if the privileged helper exits (it reads other processes' sockets and other
    /// network namespaces for the unprivileged tracer). Without it, tracing goes on without what the helper
    /// gave: owners only from the programs' records, and null verdicts where another namespace's socket
    /// table or a socket's tunnel type was needed.
    #[arg(long)]
    pub require_helper: bool,

    /// Also write each event's packet to FILE as pcapng, for Wireshark: the dropped datagram, the datagram an
    /// ICMP error answers, the ICMP error a socket got, each with the event as its comments. `-` writes to
    /// standard output (`| tshark -r -`), and the text or JSON then go to standard error. The file is 0600.
    #[arg(long, value_name = "FILE", value_parser = parse_pcap_target, help_heading = "Packets")]
    pub pcap: Option<PcapTarget>,

    /// How many bytes of each packet --pcap keeps, from its IP header on: 1 to 1500.
    #[arg(long, value_name = "BYTES", default_value_t = udptrace_common::PACKET_SNAPLEN, requires = "pcap",
          value_parser = clap::value_parser!(u16).range(1..=udptrace_common::PACKET_MAX as i64),
          help_heading = "Packets")]
    pub pcap_snaplen: u16,

    /// Start a new --pcap file once the current one is larger than SIZE (as tcpdump's -C): millions of bytes,
    /// or with K or M, KiB or MiB. FILE, then FILE1, FILE2, ...
    #[arg(short = 'C', long = "pcap-file-size", value_name = "SIZE", requires = "pcap",
          value_parser = parse_pcap_file_size, help_heading = "Packets")]
    pub pcap_file_size: Option<u64>,

    /// With -C, keep at most N files, overwriting the oldest (as tcpdump's -W): FILE0 to FILE<N-1>.
    #[arg(short = 'W', long = "pcap-files", value_name = "N", requires = "pcap_file_size",
          value_parser = clap::value_parser!(u32).range(1..=100_000), help_heading = "Packets")]
    pub pcap_files: Option<u32>,

    /// Verbose: attach details, verifier logs on failure, the kernel stack of each icmp_sent.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

/// `--probe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProbeChoice {
    /// fentry, else kprobe, else tracepoint, per hook.
    Auto,
    #[value(name = "fentry")]
    FEntry,
    Kprobe,
    Tracepoint,
}

impl ProbeChoice {
    /// The modes to try, in order.
    pub fn modes(self) -> &'static [AttachMode] {
        match self {
            ProbeChoice::Auto => &AttachMode::LADDER,
            ProbeChoice::FEntry => &[AttachMode::FEntry],
            ProbeChoice::Kprobe => &[AttachMode::Kprobe],
            ProbeChoice::Tracepoint => &[AttachMode::Tracepoint],
        }
    }

    /// How the user said it: `any mode`, `--probe fentry`.
    pub fn describe(self) -> String {
        match self {
            ProbeChoice::Auto => "any mode".to_owned(),
            _ => format!("--probe {}", self.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()),
        }
    }
}

/// `--pcap`: a file, or standard output (`-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PcapTarget {
    Stdout,
    File(std::path::PathBuf),
}

fn parse_pcap_target(value: &str) -> Result<PcapTarget, String> {
    match value {
        "" => Err("an empty file name".to_owned()),
        "-" => Ok(PcapTarget::Stdout),
        path if path.ends_with('/') => Err(format!("{path:?} names a directory, not a file")),
        path => Ok(PcapTarget::File(path.into())),
    }
}

/// `--buffer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Buffer {
    Ring,
    Perf,
}

impl From<Buffer> for source::Buffer {
    fn from(buffer: Buffer) -> Self {
        match buffer {
            Buffer::Ring => source::Buffer::Ring,
            Buffer::Perf => source::Buffer::Perf,
        }
    }
}

impl Cli {
    pub fn filter(&self) -> Filter {
        Filter {
            pids: self.pids.clone(),
            comms: self.comms.clone(),
            ports: self.ports.clone(),
            addrs: self.addrs.clone(),
            errnos: self.errnos.clone(),
            netns: self.netns.clone(),
            dns_names: self.dns_names.clone(),
            k8s_namespaces: self.k8s_namespaces.clone(),
            pods: self.pods.clone(),
        }
    }

    /// The DNS ports: 53 and `--dns-port`'s, each once.
    pub fn dns_ports(&self) -> Vec<u16> {
        let mut ports = vec![53];
        for port in &self.dns_ports {
            if !ports.contains(port) {
                ports.push(*port);
            }
        }
        ports
    }

    /// What clap cannot check alone; exits 2 like clap's own errors.
    pub fn validate(&self) -> Result<(), clap::Error> {
        use clap::CommandFactory as _;
        let too_many = |e: String| Cli::command().error(clap::error::ErrorKind::TooManyValues, e);
        if self.pcap == Some(PcapTarget::Stdout) && self.pcap_file_size.is_some() {
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "--pcap -: standard output is one stream, it cannot be rotated (-C)",
            ));
        }
        if self.dns_ports().len() > udptrace_common::DNS_PORTS {
            return Err(too_many(format!("--dns-port: at most {} ports besides 53", udptrace_common::DNS_PORTS - 1)));
        }
        self.filter().check_sizes().map_err(too_many)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Which hooks can attach here, in which mode, and why not.
    Probes,
    /// Is HOST:PORT open, closed, filtered or unreachable? Sends probe datagrams and says what came back
    /// and what the kernel did, where `nc -vzu` says "succeeded" to silence.
    #[command(after_help = CHECK_HELP)]
    Check(CheckArgs),
    /// Print a shell completion script: `udptrace completions bash > /etc/bash_completion.d/udptrace`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages, udptrace(1) and one per command (udptrace-check(1), ...), into DIR.
    #[command(hide = true)]
    Manpages { dir: std::path::PathBuf },
}

const CHECK_HELP: &str = "\
States and exit status:
  open           0  a datagram came back
  closed         3  port unreachable from the target itself: nothing listens there
  filtered       4  another ICMP unreachable (admin-prohibited, a router's host unreachable, a port
                    unreachable from another address: a REJECT on the path), or this host's firewall
                    refused the send
  unreachable    5  this host could not deliver it: no route, no answer to ARP/ND, TTL exceeded
  open|filtered  6  it left and nothing came back: a DROP, a silent host, a service ignoring the payload
  1: a runtime failure; 2: bad usage.

Without root the evidence is the socket's error queue (IP_RECVERR); as root udptrace's hooks, filtered
to the probe socket, add the kernel's side: this host's drop of the probe and why, its own ICMP error,
a rate limit that stopped one.

Examples:
  udptrace check 10.0.0.2:53 --dns example.com
  udptrace check [2001:db8::53]:53 --json
  udptrace check ntp.example:123 --payload e3000000 --count 1

The seed's cases beside nc -vzu (a closed port; a DROP rule for udp/8888; 172.16.0.47, a host that is down):
  $ nc -vzu -w 2 172.16.0.46 29999                 (prints nothing, exits 1)
  $ udptrace check 172.16.0.46:29999
  172.16.0.46:29999 closed: port-unreachable from 172.16.0.46: nothing listens there. 1 probe sent, ...
  $ nc -vzu -w 2 172.16.0.46 8888
  Connection to 172.16.0.46 8888 port [udp/*] succeeded!
  $ udptrace check 172.16.0.46:8888
  172.16.0.46:8888 open|filtered: it left this host and nothing came back (by dc, next hop 172.16.0.46
  answered ARP): a firewall that drops it, a host that is down, or a service that ignores this payload ...
  $ nc -vzu -w 2 172.16.0.47 29999
  Connection to 172.16.0.47 29999 port [udp/*] succeeded!
  $ udptrace check 172.16.0.47:29999
  172.16.0.47:29999 unreachable: host-unreachable from this host (172.16.44.62): the next hop did not
  answer ARP. 2 probes sent, 1 answered; ...";

/// `udptrace check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The target: a name, an IPv4 address, or [IPv6]:PORT.
    #[arg(value_name = "HOST:PORT", value_parser = check::parse_target)]
    pub target: check::Target,

    /// How many probes to send, 500 ms apart until something comes back.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub count: u32,

    /// How long to wait after the last probe (ARP and ND give up after 3 s).
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = parse_duration)]
    pub timeout: Duration,

    /// The probes' bytes, in hex (default: an empty datagram).
    #[arg(long, value_name = "HEX", value_parser = check::parse_hex, conflicts_with = "dns")]
    pub payload: Option<check::Hex>,

    /// Send a DNS query for NAME's A record, so that a DNS server answers.
    #[arg(long, value_name = "NAME", value_parser = dns::parse_dns_name)]
    pub dns: Option<String>,

    /// Use an IPv4 address of HOST.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Use an IPv6 address of HOST.
    #[arg(short = '6')]
    pub ipv6: bool,

    /// Attach mode of the kernel hooks, as root.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub probe: ProbeChoice,
}

impl CheckArgs {
    pub fn check(&self, json: bool, verbose: bool) -> check::Check {
        check::Check {
            target: self.target.clone(),
            count: self.count,
            timeout: self.timeout,
            payload: match (&self.dns, &self.payload) {
                (Some(name), _) => check::Payload::Dns(name.clone()),
                (None, bytes) => check::Payload::Bytes(bytes.as_ref().map(|b| b.0.clone()).unwrap_or_default()),
            },
            ipv4_only: self.ipv4,
            ipv6_only: self.ipv6,
            modes: self.probe.modes(),
            asked: self.probe.describe(),
            json,
            verbose,
        }
    }
}

fn parse_listen_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse().map_err(|_| format!("`{text}` is not ADDR:PORT (0.0.0.0:9464, 127.0.0.1:9464, [::]:9464)"))
}

/// The longest `--duration` or `--summary` period: ten years, far inside what a clock can add.
const MAX_SECONDS: f64 = 10.0 * 365.0 * 86_400.0;

/// `--buffer-size`: bytes, with K or M for KiB or MiB, a power of two (the kernel takes no other ring buffer
/// size, and perf buffers come in a power of two of pages).
fn parse_buffer_size(text: &str) -> Result<u32, String> {
    const MIN: u64 = 128 << 10;
    const MAX: u64 = 256 << 20;
    let bytes = with_binary_suffix(text)
        .ok_or_else(|| format!("`{text}` is not a size in bytes (such as 262144, 256K or 4M)"))?;
    if !(MIN..=MAX).contains(&bytes) || !bytes.is_power_of_two() {
        return Err(format!("`{text}`: the buffer size must be a power of two from 128K to 256M"));
    }
    u32::try_from(bytes).map_err(|_| format!("`{text}` is too large"))
}

/// `-C`: bytes. A bare number is millions of bytes, as tcpdump's; K and M are KiB and MiB. From 4K (a
/// file holds at least its headers and a packet) to 1,000,000 millions.
fn parse_pcap_file_size(text: &str) -> Result<u64, String> {
    const MIN: u64 = 4 << 10;
    const MAX: u64 = 1_000_000 * 1_000_000;
    let trimmed = text.trim();
    let bytes = if trimmed.ends_with(|c: char| c.is_ascii_digit()) {
        trimmed.parse::<u64>().ok().and_then(|n| n.checked_mul(1_000_000))
    } else {
        with_binary_suffix(trimmed)
    };
    let bytes = bytes.ok_or_else(|| format!("`{text}` is not a size (millions of bytes, such as 10, or 512K, 4M)"))?;
    if !(MIN..=MAX).contains(&bytes) {
        return Err(format!("`{text}`: a file size from 4K to 1000000 (millions of bytes)"));
    }
    Ok(bytes)
}

/// A whole number, times 1024 with a K, 1048576 with an M; `None` if it is not one or overflows.
fn with_binary_suffix(text: &str) -> Option<u64> {
    let trimmed = text.trim();
    let (digits, unit) = match trimmed.char_indices().last() {
        Some((at, 'K' | 'k')) => (&trimmed[..at], 1 << 10),
        Some((at, 'M' | 'm')) => (&trimmed[..at], 1 << 20),
        _ => (trimmed, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// `--owner-records`: a count, with K or M for 1024 or 1048576.
fn parse_owner_records(text: &str) -> Result<u32, String> {
    const MIN: u64 = 64;
    const MAX: u64 = 4 << 20;
    let count = with_binary_suffix(text)
        .ok_or_else(|| format!("`{text}` is not a number of sockets (such as 65536, 64K or 1M)"))?;
    if !(MIN..=MAX).contains(&count) {
        return Err(format!("`{text}`: the owner records must number from 64 to 4M"));
    }
    u32::try_from(count).map_err(|_| format!("`{text}` is too large"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("`{text}`: the duration must be a positive number of seconds"));
    }
    if secs > MAX_SECONDS {
        return Err(format!("`{text}` is too long a duration (at most {MAX_SECONDS} seconds)"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` is too long a duration"))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, error::ErrorKind};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("udptrace").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn accepts_the_documented_options() {
        let cli = parse(&["--json", "--probe", "tracepoint", "--duration", "2.5", "--count", "3", "-v"]).unwrap();
        assert!(cli.json && cli.verbose);
        assert_eq!(cli.probe, ProbeChoice::Tracepoint);
        assert_eq!(cli.duration, Some(Duration::from_millis(2500)));
        assert_eq!(cli.count, Some(3));
        assert!(matches!(parse(&["probes"]).unwrap().command, Some(Command::Probes)));
        assert_eq!(parse(&[]).unwrap().probe, ProbeChoice::Auto);
        assert_eq!(ProbeChoice::Auto.modes(), AttachMode::LADDER);
        assert_eq!(ProbeChoice::Kprobe.describe(), "--probe kprobe");
        assert_eq!(parse(&[]).unwrap().buffer, Buffer::Ring);
        assert!(matches!(parse(&["completions", "bash"]).unwrap().command, Some(Command::Completions { .. })));
    }

    #[test]
    fn filters_repeat_and_combine() {
        let cli = parse(&[
            "-p",
            "10",
            "--pid",
            "11",
            "--comm",
            "dns",
            "--port",
            "53",
            "--port",
            "8888",
            "--addr",
            "10.0.0.0/8",
            "--addr",
            "fd00::1",
            "--errno",
            "econnrefused",
            "--netns",
            "4026531840",
        ])
        .unwrap();
        let filter = cli.filter();
        assert_eq!(filter.pids, [10, 11]);
        assert_eq!(filter.comms, ["dns"]);
        assert_eq!(filter.ports, [53, 8888]);
        assert_eq!(filter.addrs.len(), 2);
        assert_eq!(filter.errnos, [libc::ECONNREFUSED]);
        assert_eq!(filter.netns, [4026531840]);
        assert!(cli.validate().is_ok());
        let many: Vec<String> = (1..=9).flat_map(|p| ["--port".to_owned(), p.to_string()]).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = parse(&many).unwrap().validate().unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn metrics_take_an_address() {
        let cli = parse(&["--metrics", "[::]:9464", "--metrics-addresses", "-q"]).unwrap();
        assert_eq!(cli.metrics, Some("[::]:9464".parse().unwrap()));
        assert!(cli.metrics_addresses && cli.quiet);
    }

    #[test]
    fn the_owner_records_are_a_count_in_bounds() {
        assert_eq!(parse(&[]).unwrap().owner_records, 65_536);
        assert_eq!(parse(&["--owner-records", "64"]).unwrap().owner_records, 64);
        assert_eq!(parse(&["--owner-records", "256K"]).unwrap().owner_records, 256 << 10);
        assert_eq!(parse(&["--owner-records", "4m"]).unwrap().owner_records, 4 << 20);
        for bad in ["63", "5M", "", "K", "-1", "1.5K", "99999999999999999999"] {
            assert!(parse(&["--owner-records", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn pcap_options_are_checked() {
        let cli = parse(&["--pcap", "drops.pcapng", "-C", "10", "-W", "3", "--pcap-snaplen", "1500"]).unwrap();
        assert_eq!(cli.pcap, Some(PcapTarget::File("drops.pcapng".into())));
        assert_eq!((cli.pcap_file_size, cli.pcap_files, cli.pcap_snaplen), (Some(10_000_000), Some(3), 1500));
        assert_eq!(parse(&["--pcap", "-"]).unwrap().pcap, Some(PcapTarget::Stdout));
        assert_eq!(parse(&["--pcap", "x", "-C", "64K"]).unwrap().pcap_file_size, Some(64 << 10));
        assert_eq!(parse(&["--pcap", "x"]).unwrap().pcap_snaplen, udptrace_common::PACKET_SNAPLEN);
        for bad in [
            &["--pcap", ""][..],
            &["--pcap", "dir/"],
            &["--pcap", "x", "--pcap-snaplen", "1501"],
            &["--pcap", "x", "--pcap-snaplen", "0"],
            &["--pcap-snaplen", "100"],
            &["--pcap", "x", "-C", "1K"],
            &["--pcap", "x", "-C", "ten"],
            &["--pcap", "x", "-W", "3"],
            &["-C", "10"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was taken");
        }
        let rotated_stdout = parse(&["--pcap", "-", "-C", "10"]).unwrap();
        assert!(rotated_stdout.validate().is_err());
    }

    #[test]
    fn the_buffer_size_is_a_power_of_two_in_bounds() {
        assert_eq!(parse(&[]).unwrap().buffer_size, None);
        assert_eq!(parse(&["--buffer-size", "128K"]).unwrap().buffer_size, Some(128 << 10));
        assert_eq!(parse(&["--buffer-size", "4m"]).unwrap().buffer_size, Some(4 << 20));
        assert_eq!(parse(&["--buffer-size", "262144"]).unwrap().buffer_size, Some(256 << 10));
        for bad in ["64K", "3M", "512M", "1G", "-1", "K", "", "99999999999999999999", "1.5M", "aé"] {
            assert!(parse(&["--buffer-size", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn summary_takes_an_optional_period() {
        assert_eq!(parse(&["--summary"]).unwrap().summary, Some(Duration::from_secs(5)));
        assert_eq!(parse(&["--summary", "2"]).unwrap().summary, Some(Duration::from_secs(2)));
        assert_eq!(parse(&[]).unwrap().summary, None);
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["--duration", "-1"][..],
            &["--duration", "0"],
            &["--duration", "soon"],
            &["--duration", "inf"],
            &["--duration", "1e19"],
            &["--summary", "1e19"],
            &["--count", "0"],
            &["--count", "-3"],
            &["--probe", "uprobe"],
            &["--no-such-option"],
            &["--port", "70000"],
            &["--port", "0"],
            &["--port", "http"],
            &["--addr", "10.0.0.300"],
            &["--addr", "10.0.0.0/40"],
            &["--errno", "ENOTANERRNO"],
            &["--errno", "ENOENT"],
            &["--pid", "-5"],
            &["--pid", "0"],
            &["--netns", "blue"],
            &["--summary", "0"],
            &["--buffer", "pipe"],
            &["completions", "cmd.exe"],
            &["--metrics", "9464"],
            &["--metrics", "localhost:9464"],
            &["--metrics", "127.0.0.1:70000"],
            &["--metrics-addresses"],
            &["--metrics-dns-names"],
            &["--metrics-pods"],
            &["--pod", "CoreDNS"],
            &["--pod", ""],
            &["--k8s-namespace", "kube_system"],
            &["--k8s-namespace", "kube-system\x1b[2J"],
        ] {
            let err = parse(args).unwrap_err();
            assert_ne!(err.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
