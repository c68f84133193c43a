//! The three paths measured, each a function: the hot path, the error path, the drop flood.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    bench_traffic::{self, How},
    packets::icmp_counters,
    tracer::{Tracer, closing_counts},
};

use super::*;

/// 1. The hot path: a sender alone in its process, a receiver that keeps up, and whether it did.
pub(super) fn hot_path(
    options: &Options,
    hosts: &Hosts,
    modes: &[String],
    report: &mut Report,
    starts: &mut Starts,
) -> Result<()> {
    let to = Hosts::server(OPEN_PORT);
    let variants = with_bare(modes, &[Variant::Udptrace]);
    let mut totals: BTreeMap<String, HotRow> = BTreeMap::new();
    let mut costs = Costs::default();
    let mut notes = Vec::new();
    let rates = rounds(&variants, options.rounds, |variant| {
        let label = variant.label();
        let mut tracer = start_udptrace(options, variant, hosts, starts)?;
        let ids = tracer.as_ref().map(|(_, ids)| ids.clone()).unwrap_or_default();
        let receiver = bench_traffic::Receiver::start(&hosts.server, to)?;
        let udp_before = udp_counters(&hosts.server)?;
        let stats_before = stats_of(&ids);
        let sent = bench_traffic::send(&hosts.client, to, options.seconds, DATAGRAM_BYTES, How::Connected)?;
        let received = receiver.finish()?;
        let stats_after = stats_of(&ids);
        let udp_after = udp_counters(&hosts.server)?;
        if let Some((tracer, _)) = &mut tracer {
            starts.rss(&label, tracer);
            let line = tracer.stop()?;
            if let Some((seen, _, lost)) = closing_counts(&line)
                && seen + lost > 0
            {
                notes.push(format!("hot path, {label}: udptrace saw {seen} events and lost {lost}"));
            }
            costs.add(&label, &stats_before, &stats_after, sent.datagrams);
        }
        note_failures(&mut notes, &label, "hot path", &sent);
        let row = totals.entry(label.clone()).or_default();
        let rcvbuf_errors = udp_after.rcvbuf_errors.saturating_sub(udp_before.rcvbuf_errors);
        let in_errors = udp_after.in_errors.saturating_sub(udp_before.in_errors);
        row.rounds += 1;
        row.sent += sent.datagrams;
        row.received += received;
        row.rcvbuf_errors += rcvbuf_errors;
        row.in_errors += in_errors;
        row.healthy_rounds += usize::from(rcvbuf_errors == 0 && in_errors == 0 && received == sent.datagrams);
        Ok(sent.rate())
    })?;
    report.hot = rates
        .into_iter()
        .map(|(label, rate, ratio)| {
            let row = totals.remove(&label).unwrap_or_default();
            HotRow { label, rate, ratio, ..row }
        })
        .collect();
    report.hot_programs = costs.into_rows(&variants);
    report.notes.extend(notes);
    Ok(())
}

/// `--summary`'s last table, the whole run's, once udptrace has stopped.
fn last_table(tracer: &mut Tracer) -> Option<&serde_json::Value> {
    // The output is read to its end: udptrace has exited.
    tracer.collect_for(Duration::from_secs(2));
    tracer.seen.iter().rev().find(|v| v["event"] == "summary" && v["period"].is_null())
}

/// The whole run's counts from `--summary`'s last table: `(events, lost)`.
fn last_summary(tracer: &mut Tracer) -> Option<(u64, u64)> {
    let table = last_table(tracer)?;
    Some((table["events"].as_u64()?, table["lost"].as_u64()?))
}

/// The whole run's drops from `--summary`'s last table, with its lost count.
fn last_drop_summary(tracer: &mut Tracer) -> Option<(DropCounts, u64)> {
    let table = last_table(tracer)?;
    Some((DropCounts::of_summary(table), table["lost"].as_u64()?))
}

/// The row of `rows` that `is` picks, added with `new` if there is none yet.
fn row_of<T>(rows: &mut Vec<T>, is: impl Fn(&T) -> bool, new: impl FnOnce() -> T) -> &mut T {
    let at = match rows.iter().position(is) {
        Some(at) => at,
        None => {
            rows.push(new());
            rows.len() - 1
        }
    };
    &mut rows[at]
}

/// No tracer, then each of `kinds` in every mode.
fn with_bare(modes: &[String], kinds: &[fn(String) -> Variant]) -> Vec<Variant> {
    let mut variants = vec![Variant::Bare];
    for kind in kinds {
        variants.extend(modes.iter().cloned().map(kind));
    }
    variants
}

/// 2. The error path: every variant, udptrace's accounting, and its programs' costs.
///
/// What naming the owner of the socket an error reaches costs is measured in `socket_error_modes`, those
/// whose socket_error hook attached here. Each of `conntrack` adds `--quiet` (the programs' own cost, the
/// entry's read included, without a record handed over per error) and, in `socket_error_modes`, the owner the
/// programs recorded (a `socket_error` handed over per error, and looked up in conntrack by user space where
/// the program had no packet), on flows conntrack tracks or translates, each with its own no tracer.
pub(super) fn error_path(
    options: &Options,
    hosts: &Hosts,
    modes: &[String],
    socket_error_modes: &[String],
    conntrack: &[Ct],
    report: &mut Report,
    starts: &mut Starts,
) -> Result<()> {
    // Beside `udptrace MODE`, the same with every error about a DNS datagram: the cost of a DNS error.
    // Beside it too, the same with each error's datagram written to a pcapng file: the cost of `--pcap`.
    let mut variants =
        with_bare(modes, &[Variant::Udptrace, Variant::Dns, Variant::PcapText, Variant::Quiet, Variant::Summary]);
    // The owner of a socket opened before udptrace started, from /proc, beside one the programs recorded.
    if !socket_error_modes.is_empty() {
        variants.push(Variant::BareConnected);
    }
    for mode in socket_error_modes {
        variants.extend([Variant::OwnerRecorded(mode.clone()), Variant::OwnerFromProc(mode.clone())]);
        match &hosts.pod {
            Ok(_) => variants.push(Variant::OwnerInPod(mode.clone())),
            Err(why) => report.left_out.push(format!("udptrace {mode} --json --netns CLIENT, in a pod: {why}")),
        }
    }
    for ct in conntrack {
        let on = |variant: Variant| Variant::Conntrack(*ct, Box::new(variant));
        variants.push(on(Variant::Bare));
        variants.extend(modes.iter().cloned().map(Variant::Quiet).map(on));
        if !socket_error_modes.is_empty() {
            variants.push(on(Variant::BareConnected));
        }
        variants.extend(socket_error_modes.iter().cloned().map(Variant::OwnerRecorded).map(on));
    }
    for mode in modes.iter().filter(|m| !socket_error_modes.contains(m)) {
        report.left_out.push(format!(
            "udptrace {mode} --json --netns CLIENT, the socket owner's rows: its socket_error hook did not attach here"
        ));
    }
    if let Some(script) = &options.bpftrace_script {
        match Command::new("bpftrace").arg("--version").output() {
            Ok(out) if out.status.success() => variants.push(Variant::Bpftrace),
            _ => report.left_out.push(format!("bpftrace ({}): not installed", script.display())),
        }
    }
    if options.tcpdump {
        match Command::new("tcpdump").arg("--version").output() {
            Ok(out) if out.status.success() => variants.push(Variant::Tcpdump),
            _ => report.left_out.push("tcpdump: not installed".to_owned()),
        }
    }
    let _tracefs = variants.contains(&Variant::Bpftrace).then(Tracefs::ensure);
    let mut totals: BTreeMap<String, ErrorRow> = BTreeMap::new();
    let mut accounting: Vec<Accounting> = Vec::new();
    let mut costs = Costs::default();
    let mut failed_tools: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let rates = rounds(&variants, options.rounds, |variant| {
        let label = variant.label();
        let (ct, inner) = variant.split();
        let _rules = ct.map(|ct| ct.apply(hosts)).transpose()?;
        let to = Ct::to(ct, CLOSED_PORT);
        let send = || bench_traffic::send(&hosts.client, to, options.seconds, DATAGRAM_BYTES, How::Unconnected);
        // The `in a pod` variant's sender runs in its pod's container.
        let cgroup = match inner {
            Variant::OwnerInPod(_) => {
                Some(hosts.pod.as_ref().map_err(|why| anyhow::anyhow!("{why}"))?.container.dir.as_str())
            }
            _ => None,
        };
        let open_connected =
            || bench_traffic::Sender::open(&hosts.client, to, options.seconds, DATAGRAM_BYTES, How::Connected, cgroup);
        let before = icmp_counters(&hosts.server)?;
        let tool = |command: Command, ready: &str, scratch: Option<PathBuf>| {
            start_tool(command, ready, scratch)
                .map_err(|e| format!("{label}: {}", crate::outcome::one_line(&format!("{e:#}"))))
        };
        let sent = match inner {
            Variant::Bare => send()?,
            Variant::BareConnected => open_connected()?.go()?,
            Variant::Udptrace(mode)
            | Variant::Json(mode)
            | Variant::DnsJson(mode)
            | Variant::Dns(mode)
            | Variant::PcapText(mode)
            | Variant::PcapJson(mode)
            | Variant::Quiet(mode)
            | Variant::Summary(mode)
            | Variant::OwnerRecorded(mode)
            | Variant::OwnerFromProc(mode)
            | Variant::OwnerInPod(mode) => {
                let from_proc = matches!(inner, Variant::OwnerFromProc(_));
                let mut sender = if from_proc { Some(open_connected()?) } else { None };
                let (mut tracer, ids) = start_udptrace(options, variant, hosts, starts)?.context("udptrace")?;
                if variant.connected_sender() && sender.is_none() {
                    sender = Some(open_connected()?);
                }
                let client_before = variant.connected_sender().then(|| icmp_counters(&hosts.client)).transpose()?;
                let stats_before = stats_of(&ids);
                let cpu_before = cpu_time(tracer.pid());
                let sent = match &mut sender {
                    Some(sender) => sender.go()?,
                    None => send()?,
                };
                std::thread::sleep(SETTLE);
                let kernel = match client_before {
                    // The connected sender's errors are counted where its socket is told of them.
                    Some(client_before) => {
                        icmp_counters(&hosts.client)?.in_dest_unreach - client_before.in_dest_unreach
                    }
                    None => icmp_counters(&hosts.server)?.reported_by(mode) - before.reported_by(mode),
                };
                let cpu = cpu_before.zip(cpu_time(tracer.pid())).map(|(before, after)| after.saturating_sub(before));
                costs.add(&label, &stats_before, &stats_of(&ids), sent.datagrams);
                starts.rss(&label, &tracer);
                let line = tracer.stop()?;
                // Only now does the sender let its socket go: the helper names a process only while it still
                // holds the socket, and udptrace may still be reading the flood's last events after the sender.
                drop(sender);
                let (seen, _, lost) = closing_counts(&line).with_context(|| format!("no counts in {line:?}"))?;
                let mut owners = None;
                let (source, events, lost) = match &mut tracer {
                    Running::Counting(summary) if matches!(inner, Variant::Summary(_)) => match last_summary(summary) {
                        Some((events, lost)) => ("its last table", events, lost),
                        None => {
                            notes.push(format!(
                                "error path, {label}: no table for the whole run; counted from the closing line"
                            ));
                            ("closing line", seen, lost)
                        }
                    },
                    Running::Printing(printer) if variant.connected_sender() => match printer.take_socket_errors() {
                        Some(counts) => {
                            owners = Some(counts);
                            ("its JSON events", counts.events, lost)
                        }
                        None => bail!("{label}: the reader of udptrace's output failed"),
                    },
                    _ => ("closing line", seen, lost),
                };
                let entry = row_of(
                    &mut accounting,
                    |a| a.label == label,
                    || Accounting { label: label.clone(), source, ..Accounting::default() },
                );
                entry.rounds += 1;
                // Skipped kprobe runs are counted lost before the `--netns` filter (docs/events.md, "lost"), so a
                // round accounts when nothing was invented and nothing is missing beyond what was reported.
                let added_up = events <= kernel && kernel <= events + lost;
                // An owners' variant measures what it says only if every event names an owner, and /proc named
                // every one (the socket older than udptrace) or none (the programs recorded it).
                // The `in a pod` variant's, only if every event names the pod.
                let in_pod = matches!(inner, Variant::OwnerInPod(_));
                let as_claimed = owners.is_none_or(|o| {
                    o.owned == o.events
                        && o.from_proc == if from_proc { o.events } else { 0 }
                        && o.in_pod == if in_pod { o.events } else { 0 }
                });
                entry.accounted_rounds += usize::from(added_up && as_claimed);
                entry.kernel += kernel;
                entry.events += events;
                entry.lost += lost;
                if let Some(owners) = owners {
                    entry.owners.get_or_insert_default().add(owners);
                }
                entry.cpu = if entry.rounds == 1 { cpu } else { entry.cpu.zip(cpu).map(|(sum, cpu)| sum + cpu) };
                sent
            }
            Variant::BpftraceDrops => bail!("the drop flood's one-liner is not an error-path variant"),
            Variant::Conntrack(..) => bail!("{label}: a variant on flows conntrack sees holds another"),
            Variant::Bpftrace => {
                let script = options.bpftrace_script.as_ref().context("no script")?;
                let mut command = Command::new("bpftrace");
                command.arg(script);
                let (started, ids) =
                    tool_programs(|| tool(command, "Attaching", None), |t| t.as_ref().ok().map(|t| t.child.id()));
                match started {
                    // Its programs' runs and time, beside udptrace's: the cost per event of the tool an
                    // operator would use instead.
                    Ok(_tool) => {
                        let stats_before = stats_of(&ids);
                        let sent = send()?;
                        costs.add(&label, &stats_before, &stats_of(&ids), sent.datagrams);
                        sent
                    }
                    Err(e) => {
                        failed_tools.push(e);
                        return Ok(f64::NAN);
                    }
                }
            }
            Variant::Tcpdump => {
                let file = std::env::temp_dir().join(format!("udptrace-bench-{}.pcap", std::process::id()));
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", &hosts.server.name, "tcpdump", "-i", "any", "-w"])
                    .arg(&file)
                    .arg("icmp");
                match tool(command, "listening on", Some(file)) {
                    Ok(_tool) => send()?,
                    Err(e) => {
                        failed_tools.push(e);
                        return Ok(f64::NAN);
                    }
                }
            }
        };
        if variant.mode().is_none() {
            std::thread::sleep(SETTLE_SHORT);
        }
        let after = icmp_counters(&hosts.server)?;
        // The connected sender's next send after each error fails with the error its socket was told of:
        // expected, and said beside the table.
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED).to_string();
        if !(variant.connected_sender() && sent.error.as_deref() == Some(refused.as_str())) {
            note_failures(&mut notes, &label, "error path", &sent);
        }
        let row = totals.entry(label.clone()).or_default();
        row.sent += sent.datagrams;
        row.unreachables += after.out_dest_unreach.saturating_sub(before.out_dest_unreach);
        Ok(sent.rate())
    })?;
    report.error = rates
        .into_iter()
        .map(|(label, rate, ratio)| {
            let row = totals.remove(&label).unwrap_or_default();
            ErrorRow { label, rate, ratio, ..row }
        })
        .collect();
    failed_tools.sort();
    failed_tools.dedup();
    report.left_out.extend(failed_tools);
    report.accounting = accounting;
    report.error_programs = costs.into_rows(&variants);
    report.notes.extend(notes);
    Ok(())
}

/// The drop flood (4. and 5.): a sender to a receiver that never reads, from one flow (the hot path's
/// connected socket) or from many source ports; what udptrace costs while nearly every datagram is dropped,
/// beside a bpftrace one-liner that counts the drops' reasons, whether udptrace showed every drop, and its
/// programs' costs.
///
/// Each of `conntrack` adds `--json` on flows conntrack tracks or translates, with its own no tracer.
pub(super) fn drop_flood(
    options: &Options,
    hosts: &Hosts,
    modes: &[String],
    how: How,
    conntrack: &[Ct],
    report: &mut Report,
    starts: &mut Starts,
) -> Result<DropFlood> {
    let mut variants =
        with_bare(modes, &[Variant::Udptrace, Variant::Json, Variant::PcapJson, Variant::Quiet, Variant::Summary]);
    // From one flow, where each drop handed over is one more record: beside `--json`, the cost of a DNS one.
    if how == How::Connected {
        variants.extend(modes.iter().cloned().map(Variant::DnsJson));
    }
    for ct in conntrack {
        let on = |variant: Variant| Variant::Conntrack(*ct, Box::new(variant));
        variants.push(on(Variant::Bare));
        variants.extend(modes.iter().cloned().map(Variant::Json).map(on));
    }
    if options.bpftrace_script.is_some() {
        match Command::new("bpftrace").arg("--version").output() {
            Ok(out) if out.status.success() => variants.push(Variant::BpftraceDrops),
            _ => report.left_out.push("bpftrace (the drop flood's one-liner): not installed".to_owned()),
        }
    }
    let _tracefs = variants.contains(&Variant::BpftraceDrops).then(Tracefs::ensure);
    let mut failed_tools: Vec<String> = Vec::new();
    let mut totals: BTreeMap<String, DropRow> = BTreeMap::new();
    let mut accounting: Vec<DropAccounting> = Vec::new();
    // The text variants' closing lines, said but not accounted: rounds, seen, lost, kernel.
    let mut closing: BTreeMap<String, (usize, u64, u64, u64)> = BTreeMap::new();
    let mut costs = Costs::default();
    let mut notes = Vec::new();
    let mut rcvbuf = None;
    let flood = match how {
        How::Flows(n) => format!("drop flood over {n} flows"),
        _ => "drop flood".to_owned(),
    };
    let rates = rounds(&variants, options.rounds, |variant| {
        let label = variant.label();
        let (ct, inner) = variant.split();
        let _rules = ct.map(|ct| ct.apply(hosts)).transpose()?;
        // The receiver binds the server's address, which a translated flow reaches after its DNATs.
        let (to, sink_at) = (Ct::to(ct, DROP_PORT), Hosts::server(DROP_PORT));
        // The one-liner runs beside the flood as udptrace does; it accounts for nothing.
        let (bpftrace, tool_ids) = match inner {
            Variant::BpftraceDrops => {
                let mut command = Command::new("bpftrace");
                command.args(["-e", BPFTRACE_DROPS]);
                match tool_programs(
                    || start_tool(command, "Attaching", None),
                    |t| t.as_ref().ok().map(|t| t.child.id()),
                ) {
                    (Ok(tool), ids) => (Some(tool), ids),
                    (Err(e), _) => {
                        failed_tools.push(format!("{label}: {}", crate::outcome::one_line(&format!("{e:#}"))));
                        return Ok(f64::NAN);
                    }
                }
            }
            _ => (None, BTreeSet::new()),
        };
        let tracer = start_udptrace(options, variant, hosts, starts)?;
        // udptrace's programs, or the one-liner's: its cost per drop is shown beside udptrace's.
        let ids = match &tracer {
            Some((_, ids)) => ids.clone(),
            None => tool_ids,
        };
        let sink = bench_traffic::Receiver::start_sink(&hosts.server, sink_at, SINK_RCVBUF)?;
        rcvbuf = rcvbuf.or(sink.rcvbuf);
        let udp_before = udp_counters(&hosts.server)?;
        let stats_before = stats_of(&ids);
        let sent = bench_traffic::send(&hosts.client, to, options.seconds, DATAGRAM_BYTES, how)?;
        // What is still on its way is dropped, and what udptrace still holds reaches it.
        std::thread::sleep(if tracer.is_some() { SETTLE } else { SETTLE_SHORT });
        let udp_after = udp_counters(&hosts.server)?;
        let stats_after = stats_of(&ids);
        let drained = sink.finish()?;
        let kernel = udp_after.rcvbuf_errors.saturating_sub(udp_before.rcvbuf_errors);
        if bpftrace.is_some() {
            costs.add(&label, &stats_before, &stats_after, sent.datagrams);
        }
        if let Some((mut running, _)) = tracer {
            starts.rss(&label, &running);
            costs.add(&label, &stats_before, &stats_after, sent.datagrams);
            let line = running.stop()?;
            let (seen, _, lost) = closing_counts(&line).with_context(|| format!("no counts in {line:?}"))?;
            let from_closing_line = || DropCounts { drops: seen, ..DropCounts::default() };
            let shown = match (inner, &mut running) {
                (Variant::Json(_) | Variant::DnsJson(_) | Variant::PcapJson(_), Running::Printing(printer)) => {
                    match printer.take_drops() {
                        Some(counts) => Some(("its JSON events", counts, lost)),
                        None => bail!("{label}: the reader of udptrace's output failed"),
                    }
                }
                (Variant::Summary(_), Running::Counting(summary)) => match last_drop_summary(summary) {
                    Some((counts, lost)) => Some(("its last table", counts, lost)),
                    None => {
                        notes.push(format!(
                            "{flood}, {label}: no table for the whole run; counted from the closing line"
                        ));
                        Some(("closing line", from_closing_line(), lost))
                    }
                },
                (Variant::Quiet(_), _) => Some(("closing line", from_closing_line(), lost)),
                _ => {
                    let entry = closing.entry(label.clone()).or_default();
                    entry.0 += 1;
                    entry.1 += seen;
                    entry.2 += lost;
                    entry.3 += kernel;
                    None
                }
            };
            if let Some((source, counts, lost)) = shown {
                let entry = row_of(
                    &mut accounting,
                    |a| a.label == label,
                    || DropAccounting { label: label.clone(), source, ..DropAccounting::default() },
                );
                entry.rounds += 1;
                entry.accounted_rounds += usize::from(counts.drops <= kernel && kernel <= counts.drops + lost);
                entry.kernel += kernel;
                entry.lost += lost;
                let total = &mut entry.shown;
                total.drops += counts.drops;
                if let Some(events) = counts.events {
                    *total.events.get_or_insert(0) += events;
                }
                total.largest = total.largest.max(counts.largest);
                total.elsewhere += counts.elsewhere;
                for (reason, n) in counts.reasons {
                    *total.reasons.entry(reason).or_default() += n;
                }
            }
        }
        note_failures(&mut notes, &label, &flood, &sent);
        let row = totals.entry(label.clone()).or_default();
        row.rounds += 1;
        row.sent += sent.datagrams;
        row.rcvbuf_errors += kernel;
        row.drained += drained;
        Ok(sent.rate())
    })?;
    let rows = rates
        .into_iter()
        .map(|(label, rate, ratio)| {
            let row = totals.remove(&label).unwrap_or_default();
            DropRow { label, rate, ratio, ..row }
        })
        .collect();
    for (label, (rounds, seen, lost, kernel)) in closing {
        notes.push(format!(
            "{flood}, {label} (not accounted: it prints text): its closing lines said {seen} events seen and \
             {lost} lost over {rounds} rounds; the kernel counted {kernel} drops at the socket"
        ));
    }
    failed_tools.sort();
    failed_tools.dedup();
    report.left_out.extend(failed_tools);
    report.notes.extend(notes);
    let flows = match how {
        How::Flows(n) => u32::from(n),
        _ => 1,
    };
    Ok(DropFlood { flows, rows, accounting, programs: costs.into_rows(&variants), rcvbuf })
}

/// The one-liner an operator would run to see why datagrams are dropped: a count per drop reason.
pub(super) const BPFTRACE_DROPS: &str = "tracepoint:skb:kfree_skb { @[args->reason] = count(); }";
