//! `--summary [SECS]`: counts by (event, errno, verdict or cause, address, owner) instead of a line per
//! event. A table every period, for that period, and a final one at exit for the whole run.
//!
//! The address is the socket's remote for a `socket_error`, the offending packet's destination for an
//! `icmp_sent` (the local service that answered with an error); ephemeral source ports would make every
//! row unique. An event about a DNS datagram counts by its question too (`DnsKey`): the name, its type, and
//! for an answer its response code; the message ID would make every row unique. An event on a connection
//! conntrack translated counts by the destination its sender addressed and the backend conntrack sent it to
//! (`NatKey`): two backends behind one Service are two rows; the translated source's port would make every
//! row unique. Memory is bounded: past `MAX_ROWS` distinct rows in a table, new ones are counted in one
//! `(other)` row.

use std::{
    collections::HashMap,
    io::{self, Write},
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use serde_json::{Value, json};

use super::{Lines, Sink, escape};
use crate::{
    domain::{Dns, Translation, rfc3339},
    events::{Event, Lost},
};

/// `--summary SECS`: a table every `length`, and the whole run's at the end, as text or JSON on `out`.
pub struct SummarySink<W: Write> {
    out: Lines<W>,
    json: bool,
    length: Duration,
    period: Table,
    run: Table,
}

impl<W: Write> SummarySink<W> {
    pub fn new(out: W, json: bool, length: Duration) -> Self {
        Self { out: Lines::new(out), json, length, period: Table::default(), run: Table::default() }
    }
}

impl<W: Write> Sink for SummarySink<W> {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        self.period.add(event);
        self.run.add(event);
        Ok(())
    }

    fn period(&self) -> Option<Duration> {
        Some(self.length)
    }

    /// This period's table, then a fresh one.
    fn end_period(&mut self) -> io::Result<()> {
        let length = self.length;
        let table = std::mem::take(&mut self.period);
        let now = SystemTime::now();
        if self.json {
            self.out.line(table.json(now, Some(length.as_secs_f64())))?;
        } else {
            let title = format!("udptrace summary {}, last {}", rfc3339(now), humantime::format_duration(length));
            self.out.line(table.text(&title))?;
        }
        self.out.flush()
    }

    /// The whole run's table.
    fn finish(&mut self, elapsed: Duration) -> io::Result<()> {
        let elapsed = Duration::from_secs(elapsed.as_secs());
        if self.json {
            self.out.line(self.run.json(SystemTime::now(), None))?;
        } else {
            let title = format!("udptrace summary, whole run ({})", humantime::format_duration(elapsed));
            self.out.line(self.run.text(&title))?;
        }
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Distinct rows one table keeps.
const MAX_ROWS: usize = 10_000;
/// Rows a table shows, largest counts first.
const SHOWN_ROWS: usize = 20;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub event: &'static str,
    pub errno: Option<&'static str>,
    /// The verdict of a `socket_error`, the cause of an `icmp_sent`, the scope of an `icmp_suppressed`.
    pub outcome: String,
    pub address: Option<String>,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The question of a DNS datagram's event.
    pub dns: Option<DnsKey>,
    /// The translation of its datagram's connection.
    pub nat: Option<NatKey>,
    /// Its pod, `namespace/name`.
    pub pod: Option<String>,
}

/// What a row keeps of a translated connection: what NAT rewrote, the destination the sender addressed (the
/// Service), and, when the destination was translated, where conntrack sent it (the backend).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NatKey {
    pub nat: &'static str,
    pub original_dst: SocketAddr,
    pub backend: Option<SocketAddr>,
}

impl NatKey {
    fn of(t: &Translation) -> Self {
        Self { nat: t.nat.as_str(), original_dst: t.original.dst, backend: t.backend() }
    }

    /// `dnat 10.96.0.10:53 -> 10.244.1.7:53`; `snat` alone, whose destination is the row's address.
    fn text(&self) -> String {
        match self.backend {
            Some(backend) => format!("{} {} -> {backend}", self.nat, self.original_dst),
            None => self.nat.to_owned(),
        }
    }
}

/// What a row keeps of a DNS message: what was asked, and for an answer, how it was answered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsKey {
    pub response: Option<bool>,
    pub rcode: Option<String>,
    pub qtype: Option<String>,
    pub qname: Option<String>,
}

impl DnsKey {
    fn of(d: &Dns) -> Self {
        Self { response: d.response, rcode: d.rcode.clone(), qtype: d.qtype.clone(), qname: d.qname.clone() }
    }

    /// `A example.com`, `answer NXDOMAIN A example.com`; `?` for what the bytes did not reach.
    fn text(&self) -> String {
        let answer = match (self.response, &self.rcode) {
            (Some(true), rcode) => format!("answer {} ", rcode.as_deref().unwrap_or("?")),
            _ => String::new(),
        };
        let name = self.qname.as_deref().map_or("?", crate::dns::shown);
        format!("{answer}{} {name}", self.qtype.as_deref().unwrap_or("?"))
    }
}

impl Key {
    fn other() -> Self {
        Key {
            event: "(other)",
            errno: None,
            outcome: String::new(),
            address: None,
            pid: None,
            comm: None,
            dns: None,
            nat: None,
            pod: None,
        }
    }

    /// The row an event counts in, and how many it counts for; `None` for one counted apart (`lost`).
    fn of(event: &Event) -> Option<(Key, u64)> {
        let kind = event.kind();
        let row = kind.row()?;
        let (pid, comm) = row.owner.unzip();
        let comm = comm.flatten();
        let key = Key {
            event: kind.name(),
            errno: row.errno,
            outcome: row.outcome,
            address: row.address,
            pid,
            comm,
            dns: kind.dns().map(DnsKey::of),
            nat: kind.conntrack().map(NatKey::of),
            pod: kind.pod().map(|p| format!("{}/{}", p.namespace, p.name)),
        };
        Some((key, kind.count()))
    }
}

/// Counts for one table.
#[derive(Debug, Default)]
pub struct Table {
    rows: HashMap<Key, u64>,
    pub events: u64,
    pub lost: u64,
}

impl Table {
    pub fn add(&mut self, event: &Event) {
        let Some((key, count)) = Key::of(event) else {
            if let Event::Lost(Lost { count, .. }) = event {
                self.lost += count;
            }
            return;
        };
        self.events += count;
        let key = if self.rows.len() >= MAX_ROWS && !self.rows.contains_key(&key) { Key::other() } else { key };
        *self.rows.entry(key).or_default() += count;
    }

    /// Rows, largest counts first (ties in key order, so the output is stable).
    fn sorted(&self) -> Vec<(&Key, u64)> {
        let mut rows: Vec<(&Key, u64)> = self.rows.iter().map(|(k, &n)| (k, n)).collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        rows
    }

    /// A plain-text table. `title` says which period it covers.
    pub fn text(&self, title: &str) -> String {
        let mut out = format!("{title}: {} events, {} lost\n", self.events, self.lost);
        let rows = self.sorted();
        if rows.is_empty() {
            return out;
        }
        // The NAT, DNS and POD columns only when a row shown has a translation, a question, a pod.
        let nat = rows.iter().take(SHOWN_ROWS).any(|(key, _)| key.nat.is_some());
        let dns = rows.iter().take(SHOWN_ROWS).any(|(key, _)| key.dns.is_some());
        let pod = rows.iter().take(SHOWN_ROWS).any(|(key, _)| key.pod.is_some());
        out.push_str(&row(
            "COUNT",
            ["EVENT", "ERRNO", "VERDICT/CAUSE", "ADDRESS"],
            [nat.then_some("NAT"), dns.then_some("DNS"), pod.then_some("POD")],
            "OWNER",
        ));
        for (key, count) in rows.iter().take(SHOWN_ROWS) {
            let owner = match (key.pid, &key.comm) {
                (Some(pid), Some(comm)) => format!("pid {pid} {comm}"),
                (Some(pid), None) => format!("pid {pid}"),
                _ => "-".to_owned(),
            };
            let translation = key.nat.as_ref().map_or_else(|| "-".to_owned(), NatKey::text);
            let question = key.dns.as_ref().map_or_else(|| "-".to_owned(), DnsKey::text);
            out.push_str(&row(
                &count.to_string(),
                [key.event, key.errno.unwrap_or("-"), &key.outcome, key.address.as_deref().unwrap_or("-")],
                [nat.then_some(&translation), dns.then_some(&question), pod.then(|| key.pod.as_deref().unwrap_or("-"))],
                &owner,
            ));
        }
        if rows.len() > SHOWN_ROWS {
            let rest: u64 = rows[SHOWN_ROWS..].iter().map(|(_, n)| n).sum();
            out.push_str(&format!("{rest:>9}  in {} more rows\n", rows.len() - SHOWN_ROWS));
        }
        out
    }

    /// One JSON object: `{"event":"summary", ...}`, every row (not only the shown ones).
    pub fn json(&self, time: SystemTime, period_secs: Option<f64>) -> Value {
        let rows: Vec<Value> = self
            .sorted()
            .into_iter()
            .map(|(key, count)| {
                json!({
                    "count": count,
                    "event": key.event,
                    "errno": key.errno,
                    "outcome": key.outcome,
                    "address": key.address,
                    "pid": key.pid,
                    "comm": key.comm,
                    "pod": key.pod,
                    "dns": key.dns.as_ref().map(|d| json!({
                        "response": d.response,
                        "qname": d.qname,
                        "qtype": d.qtype,
                        "rcode": d.rcode,
                    })),
                    "conntrack": key.nat.as_ref().map(|n| json!({
                        "nat": n.nat,
                        "original_dst": n.original_dst.to_string(),
                        "backend": n.backend.map(|b| b.to_string()),
                    })),
                })
            })
            .collect();
        json!({
            "event": "summary",
            "time": rfc3339(time),
            "period": period_secs,
            "events": self.events,
            "lost": self.lost,
            "rows": rows,
        })
    }
}

/// One line of the table, each cell escaped (owners' names and DNS names come from traced processes and
/// packets) and padded: the count, the event, errno, verdict or cause, address, the translation and the DNS
/// question and the pod when the table has those columns, the owner.
fn row(count: &str, cells: [&str; 4], optional: [Option<&str>; 3], owner: &str) -> String {
    let [event, errno, outcome, address] = cells.map(escape);
    let [nat, dns, pod] = optional;
    let nat = nat.map(|translation| format!("{:<45}  ", escape(translation))).unwrap_or_default();
    let dns = dns.map(|question| format!("{:<40}  ", escape(question))).unwrap_or_default();
    let pod = pod.map(|pod| format!("{:<40}  ", escape(pod))).unwrap_or_default();
    format!("{count:>9}  {event:<15}  {errno:<13}  {outcome:<20}  {address:<45}  {nat}{dns}{pod}{}\n", escape(owner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{SocketError, samples};

    fn refused() -> Event {
        Event::SocketError(samples::owned_socket_error())
    }

    fn sent() -> Event {
        Event::IcmpSent(samples::icmp_sent())
    }

    #[test]
    fn counts_rows_largest_first() {
        let mut table = Table::default();
        for _ in 0..3 {
            table.add(&refused());
        }
        table.add(&sent());
        table.add(&Event::Lost(Lost { time: SystemTime::UNIX_EPOCH, count: 5 }));
        assert_eq!((table.events, table.lost), (4, 5));
        let text = table.text("last 5 s");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "last 5 s: 4 events, 5 lost");
        assert!(lines[1].trim_start().starts_with("COUNT"));
        assert!(lines[2].trim_start().starts_with("3  socket_error     ECONNREFUSED   delivered"), "{}", lines[2]);
        assert!(lines[2].contains("10.0.0.9:8888") && lines[2].ends_with("pid 900 dns-client"), "{}", lines[2]);
        // The ICMP error this host sent counts by the service it is about and the errno it gives.
        assert!(lines[3].trim_start().starts_with("1  icmp_sent        ECONNREFUSED"), "{}", lines[3]);
        assert!(lines[3].contains("10.0.0.9:8888"), "{}", lines[3]);
        let value = table.json(SystemTime::UNIX_EPOCH, Some(5.0));
        assert_eq!(value["event"], "summary");
        assert_eq!(value["rows"][0]["count"], 3);
        assert_eq!(value["rows"][0]["pid"], 900);
        assert_eq!(value["rows"][1]["outcome"], "other");
        assert_eq!(value["lost"], 5);
    }

    /// Two pods' errors are two rows, with a POD column; a table whose rows have no pod has none.
    #[test]
    fn an_event_in_a_pod_counts_by_its_pod() {
        let mut table = Table::default();
        for name in ["coredns-1", "coredns-2", "coredns-2"] {
            let mut e = samples::owned_socket_error();
            e.meta.pod = Some(samples::pod(name));
            table.add(&Event::SocketError(e));
        }
        table.add(&refused());
        let text = table.text("last 5 s");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains(" POD "), "{text}");
        assert!(lines[2].contains("  kube-system/coredns-2  ") && lines[2].trim_start().starts_with('2'), "{text}");
        assert!(lines.iter().any(|l| l.contains("  kube-system/coredns-1  ")), "{text}");
        assert!(lines.iter().any(|l| l.trim_start().starts_with('1') && l.contains("  -  ")), "{text}");
        let value = table.json(SystemTime::UNIX_EPOCH, None);
        assert_eq!(value["rows"][0]["pod"], "kube-system/coredns-2");
        let mut plain = Table::default();
        plain.add(&refused());
        assert!(!plain.text("t").contains("POD"));
    }

    #[test]
    fn a_dns_event_counts_by_its_question() {
        let mut table = Table::default();
        let drop = samples::dns_drop();
        for name in ["www.example.com", "www.example.com", "api.example.com"] {
            let mut drop = drop.clone();
            let dns = drop.dns.as_mut().unwrap();
            // The ID of each query differs: it is not part of the row.
            dns.id = dns.id.map(|id| id + name.len() as u16 + table.events as u16);
            dns.qname = Some(name.to_owned());
            table.add(&Event::UdpDropped(drop));
        }
        table.add(&refused());
        let text = table.text("t");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains(" DNS ") && lines[1].ends_with("OWNER"), "{text}");
        assert!(
            lines[2].trim_start().starts_with("2  udp_dropped") && lines[2].contains(" A www.example.com "),
            "{text}"
        );
        assert!(lines.iter().any(|l| l.contains(" A api.example.com ")), "{text}");
        let refused_row = lines.iter().find(|l| l.contains("socket_error")).unwrap();
        assert!(refused_row.contains("  -  ") && refused_row.ends_with("pid 900 dns-client"), "{refused_row}");
        let value = table.json(SystemTime::UNIX_EPOCH, None);
        assert_eq!(
            value["rows"][0]["dns"],
            json!({"response": false, "qname": "www.example.com", "qtype": "A", "rcode": null})
        );
        assert_eq!(value["rows"][1]["event"], "socket_error");
        assert_eq!(value["rows"][1]["dns"], Value::Null);
        // Without a question in the table, no DNS column.
        let mut plain = Table::default();
        plain.add(&refused());
        assert!(!plain.text("t").contains("DNS"));
    }

    /// Two backends behind one Service are two rows, each showing both; the client's port is in no row.
    #[test]
    fn a_translated_event_counts_by_its_service_and_backend() {
        let mut table = Table::default();
        for (port, backend) in [(41234, "10.244.1.7:53"), (41235, "10.244.1.7:53"), (41236, "10.244.2.9:53")] {
            let mut refused = samples::refused_by_backend();
            refused.local.set_port(port);
            let t = refused.conntrack.as_mut().unwrap();
            t.original.src.set_port(port);
            t.reply.dst.set_port(port);
            t.reply.src = backend.parse().unwrap();
            table.add(&Event::SocketError(refused));
        }
        table.add(&Event::UdpDropped(samples::backend_gone()));
        table.add(&refused());
        let text = table.text("t");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains(" NAT ") && !lines[1].contains(" DNS "), "{text}");
        assert!(
            lines[2].trim_start().starts_with("2  socket_error     ECONNREFUSED   delivered             10.96.0.10:53")
                && lines[2].contains("  dnat 10.96.0.10:53 -> 10.244.1.7:53  "),
            "{text}"
        );
        let other = lines.iter().filter(|l| l.contains("dnat 10.96.0.10:53 -> 10.244.2.9:53")).count();
        assert_eq!(other, 1, "{text}");
        let drop = lines.iter().find(|l| l.contains("udp_dropped")).unwrap();
        assert!(drop.contains("10.244.1.7:53") && drop.contains("dnat 10.96.0.10:53 -> 10.244.1.7:53"), "{drop}");
        let plain = lines.iter().find(|l| l.contains("10.0.0.9:8888")).unwrap();
        assert!(plain.contains("  -  "), "{plain}");
        assert_eq!(table.rows.len(), 4);
        let value = table.json(SystemTime::UNIX_EPOCH, None);
        assert_eq!(
            value["rows"][0]["conntrack"],
            json!({"nat": "dnat", "original_dst": "10.96.0.10:53", "backend": "10.244.1.7:53"})
        );
        let untranslated = value["rows"].as_array().unwrap().iter().find(|r| r["address"] == "10.0.0.9:8888");
        assert_eq!(untranslated.unwrap()["conntrack"], Value::Null);
        // A source NAT has no backend: its row says so.
        let mut snat = Table::default();
        snat.add(&Event::SocketError(SocketError {
            conntrack: Some(samples::snat()),
            ..samples::refused_by_backend()
        }));
        let value = snat.json(SystemTime::UNIX_EPOCH, None);
        assert_eq!(
            value["rows"][0]["conntrack"],
            json!({"nat": "snat", "original_dst": "198.51.100.7:53", "backend": null})
        );
        assert!(snat.text("t").lines().nth(2).unwrap().contains("  snat  "), "{}", snat.text("t"));
        // Without a translation in the table, no NAT column.
        let mut plain = Table::default();
        plain.add(&refused());
        assert!(!plain.text("t").contains("NAT"));
    }

    #[test]
    fn rows_are_bounded() {
        let mut table = Table::default();
        let Event::SocketError(base) = refused() else { panic!() };
        for port in 0..(MAX_ROWS as u16 + 50) {
            let mut e = base.clone();
            e.remote = Some(std::net::SocketAddr::new(e.local.ip(), port));
            table.add(&Event::SocketError(e));
        }
        assert_eq!(table.rows.len(), MAX_ROWS + 1);
        assert_eq!(table.rows[&Key::other()], 50);
        assert_eq!(table.events, MAX_ROWS as u64 + 50);
        let text = table.text("t");
        assert!(text.lines().count() == 2 + SHOWN_ROWS + 1, "{text}");
        assert!(text.ends_with(&format!("in {} more rows\n", MAX_ROWS + 1 - SHOWN_ROWS)), "{text}");
    }

    #[test]
    fn the_sink_writes_a_table_per_period_and_one_for_the_run() {
        let mut sink = SummarySink::new(Vec::new(), true, Duration::from_secs(5));
        assert_eq!(sink.period(), Some(Duration::from_secs(5)));
        sink.event(&refused()).unwrap();
        sink.end_period().unwrap();
        sink.event(&sent()).unwrap();
        sink.finish(Duration::from_secs(7)).unwrap();
        let text = String::from_utf8(sink.out.into_inner()).unwrap();
        let tables: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(tables.len(), 2);
        assert_eq!((tables[0]["period"].as_f64(), tables[0]["events"].as_u64()), (Some(5.0), Some(1)));
        assert_eq!((tables[1]["period"].clone(), tables[1]["events"].as_u64()), (Value::Null, Some(2)));
    }
}
