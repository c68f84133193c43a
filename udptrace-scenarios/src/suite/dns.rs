//! DNS inside the errors and drops (`dns.rs` of udptrace-ebpf, the `dns` field): a query a firewall drops, a
//! query to a port 53 where nothing listens, and a datagram on port 53 that is not DNS.

use std::net::SocketAddr;

use anyhow::Result;
use serde_json::{Value, json};

use crate::{Config, Outcome, packets::udp_socket, tracer::Tracer};

use super::*;

/// A query for example.com A, ID 0x1234, recursion desired: 29 bytes.
const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";

/// What udptrace says of `QUERY`.
fn query_fields() -> Value {
    json!({
        "id": 0x1234,
        "response": false,
        "qname": "example.com",
        "qtype": "A",
        "rcode": null,
        "truncated": false,
        "payload_bytes": QUERY.len(),
        "payload_length": QUERY.len(),
    })
}

/// What udptrace says of a datagram on a DNS port whose 8 bytes do not parse as DNS: nothing but their count.
fn not_dns_fields() -> Value {
    json!({
        "id": null,
        "response": null,
        "qname": null,
        "qtype": null,
        "rcode": null,
        "truncated": null,
        "payload_bytes": 8,
        "payload_length": 8,
    })
}

/// Sends `payload` from a new client socket to the server's port 53; returns the client's address.
fn send_to_53(hosts: &TwoHosts, family: Family, payload: &[u8]) -> Result<(SocketAddr, SocketAddr)> {
    let server = SocketAddr::new(TwoHosts::server_ip(family), 53);
    let socket = udp_socket(&hosts.client, SocketAddr::new(TwoHosts::client_ip(family), 0))?;
    socket.send_to(payload, server)?;
    Ok((socket.local_addr()?, server))
}

/// The `dns` of the first event `about` matches, compared with `want`.
fn dns_of(config: &Config, tracer: &mut Tracer, what: &str, about: impl Fn(&Value) -> bool, want: Value) -> Outcome {
    outcome_of(tracer.expect(what, config.event_timeout, about).map(|e| compare(&e["dns"], &want)))
}

/// A DROP rule on the server's port 53: the `udp_dropped netfilter_drop` of each family's query names it; a
/// datagram on port 53 that is not DNS has `dns` fields `null`.
pub(super) fn dns_drop(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    nft_input_rule(&hosts.server, "udp dport 53 drop")?;
    let v4 = send_to_53(&hosts, Family::V4, QUERY)?;
    let v6 = send_to_53(&hosts, Family::V6, QUERY)?;
    let junk = send_to_53(&hosts, Family::V4, b"udptrace")?;
    let mut results: Results = Vec::new();
    match drops::drop_hook(config, tracer) {
        Err(skip) => results.extend([("ipv4", skip.clone()), ("ipv6", skip.clone()), ("not_dns", skip)]),
        Ok(_) => {
            let drop_of = |(src, dst): (SocketAddr, SocketAddr)| {
                let about = drops::is_drop_of(src, dst);
                move |e: &Value| about(e) && drops::NETFILTER_DROP.says(e)
            };
            results.push(("ipv4", dns_of(config, tracer, "the IPv4 query's drop", drop_of(v4), query_fields())));
            results.push(("ipv6", dns_of(config, tracer, "the IPv6 query's drop", drop_of(v6), query_fields())));
            let junk_drop = dns_of(config, tracer, "the drop of a datagram not DNS", drop_of(junk), not_dns_fields());
            results.push(("not_dns", junk_drop));
        }
    }
    Ok(results)
}

/// Nothing listens on the server's port 53: its `icmp_sent` about each family's query names the query.
pub(super) fn dns_refused(config: &Config, tracer: &mut Tracer) -> Result<Results> {
    let hosts = TwoHosts::new()?;
    let mut results: Results = Vec::new();
    for (name, family) in [("ipv4", Family::V4), ("ipv6", Family::V6)] {
        let (local, _) = send_to_53(&hosts, family, QUERY)?;
        let outcome = match icmp_send_unseen(config, tracer, family) {
            Some(why) => Outcome::Skip(why),
            None => dns_of(
                config,
                tracer,
                "the icmp_sent about the query",
                |e| {
                    e["event"] == "icmp_sent"
                        && e["netns"] == hosts.server.inode
                        && e["packet"]["src"] == local.to_string()
                },
                query_fields(),
            ),
        };
        results.push((name, outcome));
    }
    Ok(results)
}
