//! The scenarios: the seed article's cases. Each sets up its own namespaces, provokes its case, and
//! checks the exact events (every field but the time and the context task) that one shared udptrace
//! reports for those namespaces.
//!
//! This file is the table; the cases live by area, beside the program files they prove: `errors.rs` (one
//! ICMP error from both ends: `socket_error.rs`, `icmp_sent.rs`), `delivery.rs` (where an error goes or does not),
//! `drops.rs` and `path_drops.rs` (`udp_dropped.rs`), `owner.rs` (`owner.rs`), `check.rs` (`udptrace check`),
//! `metrics.rs` (`--metrics`), `dashboard.rs` (the Grafana dashboard's every panel, through Prometheus),
//! `syscalls.rs` (the service's system call filter), `conntrack.rs` (behind NAT:
//! the `conntrack` field of errors and drops, against `conntrack -L`), `operator.rs` (what an
//! operator relies on under load: filters, floods, malformed ICMP), `process.rs` (udptrace as a process:
//! what its tracer and helper hold, the healthy path, unloading, the helper's death, owner records freed),
//! `pods.rs` (which pod an event is about, on a node `kube.rs` makes), `pcap.rs` (`--pcap`'s files, read back);
//! `fixtures.rs` is what they share, `procfs.rs` what `/proc` says of a udptrace's processes.

use anyhow::Result;

use crate::{config::Config, outcome::Outcome, tracer::Tracer};

mod check;
mod conntrack;
mod dashboard;
mod delivery;
mod dns;
mod drops;
mod errors;
mod fixtures;
mod hostile;
mod metrics;
mod operator;
mod owner;
mod path_drops;
mod pcap;
mod pods;
mod process;
mod procfs;
mod syscalls;

use self::{
    delivery::{kernel_socket, no_route_back_ipv6, no_socket, no_socket_gro, rate_limit, tunnel_socket},
    errors::{
        closed_port, error_queue, error_queue_full, firewall_drop, firewall_reject, frag_needed, host_down,
        nested_send, nft_input_rule, nft_rule, server_restart, socket_destroyed, ttl_exceeded, unconnected,
        unreachable,
    },
    fixtures::{
        CLIENT_V4, CLIENT_V6, CLOSED_PORT, FAR_SERVER_V4, Family, ROUTER_IN_V4, ROUTER_IN_V6, Routed, SERVER_V4,
        TwoHosts, as_tracepoint_sees, check_icmp_sent, check_socket_error, compare, errno_check, icmp_send_unseen,
        is_socket_error_of, no_option, outcome_of, packet, send_and_receive, settled, which,
    },
    owner::{
        owner, owner_back_to_back, owner_before_start, owner_connected_by_child, owner_forked_child, owner_main_thread,
        owner_records_full, owner_thread,
    },
};

pub use process::program_ids;

pub type Results = Vec<(&'static str, Outcome)>;

pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&Config, &mut Tracer) -> Result<Results>,
}

/// The scenarios that check something with the drop hook alone (`udp_dropped`, BPF statistics).
pub const WITH_DROPS_ONLY: &[&str] = &[
    "firewall_drop",
    "dns_drop",
    "dns_dnsmasq",
    "rcvbuf_full",
    "drops_from_many_sources",
    "neighbour_failed",
    "bad_checksum",
    "closed_port_ipv6_once",
    "healthy_path",
    "healthy_path_nat",
    "nat_backend_gone_ipv4",
    "nat_backend_gone_ipv6",
    "nat_router_masquerade",
    "capabilities_dropped",
    "pod_crio_drop",
    // Its udptrace runs with `-v`: the verifier must accept the programs with their log calls wherever any load.
    "sigkill_unloads",
    // `udptrace check` starts hooks of its own; with the drop hook alone it still has the error queue.
    "check_open",
    "check_closed_ipv4",
    "check_closed_ipv6",
    "check_reject",
    "check_drop",
    "check_no_arp",
    "check_no_nd",
    "check_output_drop",
    "check_unprivileged",
    "check_bad_usage",
];

pub static SCENARIOS: &[Scenario] = &[
    Scenario { name: "closed_port_ipv4", run: |c, t| closed_port(c, t, Family::V4) },
    Scenario { name: "closed_port_ipv6", run: |c, t| closed_port(c, t, Family::V6) },
    Scenario { name: "unconnected", run: |c, t| unconnected(c, t, false) },
    Scenario { name: "unconnected_recverr", run: |c, t| unconnected(c, t, true) },
    Scenario { name: "error_queue", run: error_queue },
    Scenario { name: "error_queue_full", run: error_queue_full },
    Scenario { name: "socket_destroyed", run: socket_destroyed },
    Scenario { name: "unreachable_ipv4", run: |c, t| unreachable(c, t, Family::V4) },
    Scenario { name: "unreachable_ipv6", run: |c, t| unreachable(c, t, Family::V6) },
    Scenario { name: "host_down_ipv4", run: |c, t| host_down(c, t, Family::V4) },
    Scenario { name: "host_down_ipv6", run: |c, t| host_down(c, t, Family::V6) },
    Scenario { name: "firewall_drop", run: firewall_drop },
    Scenario { name: "dns_drop", run: dns::dns_drop },
    Scenario { name: "dns_refused", run: dns::dns_refused },
    Scenario { name: "dns_clients", run: dns::dns_clients },
    Scenario { name: "dns_short_quote", run: dns::dns_short_quote },
    Scenario { name: "dns_summary", run: dns::dns_summary },
    Scenario { name: "dns_dnsmasq", run: dns::dns_dnsmasq },
    Scenario { name: "rcvbuf_full", run: drops::rcvbuf_full },
    Scenario { name: "drops_from_many_sources", run: drops::drops_from_many_sources },
    Scenario { name: "neighbour_failed", run: path_drops::neighbour_failed },
    Scenario { name: "bad_checksum", run: path_drops::bad_checksum },
    Scenario { name: "closed_port_ipv6_once", run: path_drops::closed_port_ipv6_once },
    Scenario { name: "check_open", run: check::check_open },
    Scenario { name: "check_closed_ipv4", run: |c, t| check::check_closed(c, t, Family::V4) },
    Scenario { name: "check_closed_ipv6", run: |c, t| check::check_closed(c, t, Family::V6) },
    Scenario { name: "check_reject", run: check::check_reject },
    Scenario { name: "check_drop", run: check::check_drop },
    Scenario { name: "check_no_arp", run: |c, t| check::check_no_neighbour(c, t, Family::V4) },
    Scenario { name: "check_no_nd", run: |c, t| check::check_no_neighbour(c, t, Family::V6) },
    Scenario { name: "check_output_drop", run: check::check_output_drop },
    Scenario { name: "check_unprivileged", run: check::check_unprivileged },
    Scenario { name: "check_bad_usage", run: check::check_bad_usage },
    Scenario { name: "firewall_reject_ipv4", run: |c, t| firewall_reject(c, t, Family::V4) },
    Scenario { name: "firewall_reject_ipv6", run: |c, t| firewall_reject(c, t, Family::V6) },
    Scenario { name: "nested_send_ipv4", run: |c, t| nested_send(c, t, Family::V4) },
    Scenario { name: "nested_send_ipv6", run: |c, t| nested_send(c, t, Family::V6) },
    Scenario { name: "ttl_exceeded", run: ttl_exceeded },
    Scenario { name: "frag_needed", run: frag_needed },
    Scenario { name: "server_restart", run: server_restart },
    Scenario { name: "rate_limit", run: rate_limit },
    Scenario { name: "no_socket", run: no_socket },
    Scenario { name: "no_socket_gro", run: no_socket_gro },
    Scenario { name: "no_route_back_ipv6", run: no_route_back_ipv6 },
    Scenario { name: "tunnel_socket", run: tunnel_socket },
    Scenario { name: "kernel_socket", run: kernel_socket },
    Scenario { name: "owner", run: owner },
    Scenario { name: "owner_before_start", run: owner_before_start },
    Scenario { name: "owner_forked_child", run: owner_forked_child },
    Scenario { name: "owner_connected_by_child", run: owner_connected_by_child },
    Scenario { name: "owner_back_to_back", run: owner_back_to_back },
    Scenario { name: "owner_records_full", run: owner_records_full },
    Scenario { name: "owner_thread", run: owner_thread },
    Scenario { name: "owner_main_thread", run: owner_main_thread },
    Scenario { name: "filters", run: operator::filters },
    Scenario { name: "flood", run: operator::flood },
    Scenario { name: "malformed_icmp", run: operator::malformed_icmp },
    Scenario { name: "sigkill_unloads", run: process::sigkill_unloads },
    Scenario { name: "healthy_path", run: process::healthy_path },
    Scenario { name: "healthy_path_nat", run: process::healthy_path_nat },
    Scenario { name: "owner_records_freed", run: process::owner_records_freed },
    Scenario { name: "capabilities_dropped", run: process::capabilities_dropped },
    Scenario { name: "helper_killed", run: process::helper_killed },
    Scenario { name: "prometheus", run: metrics::prometheus },
    Scenario { name: "dashboard", run: dashboard::dashboard },
    Scenario { name: "hostile_names", run: hostile::hostile_names },
    Scenario { name: "hostile_flood", run: hostile::hostile_flood },
    Scenario { name: "syscall_filter", run: syscalls::syscall_filter },
    Scenario { name: "nat_service_ipv4", run: |c, t| conntrack::nat_service(c, t, Family::V4) },
    Scenario { name: "nat_service_ipv6", run: |c, t| conntrack::nat_service(c, t, Family::V6) },
    Scenario { name: "nat_pod_ipv4", run: |c, t| conntrack::nat_pod(c, t, Family::V4) },
    Scenario { name: "nat_pod_ipv6", run: |c, t| conntrack::nat_pod(c, t, Family::V6) },
    Scenario { name: "nat_backend_gone_ipv4", run: |c, t| conntrack::nat_backend_gone(c, t, Family::V4) },
    Scenario { name: "nat_backend_gone_ipv6", run: |c, t| conntrack::nat_backend_gone(c, t, Family::V6) },
    Scenario { name: "nat_stale_entry", run: conntrack::nat_stale_entry },
    Scenario { name: "nat_router_masquerade", run: conntrack::nat_router_masquerade },
    Scenario { name: "nat_host_masquerade", run: conntrack::nat_host_masquerade },
    Scenario { name: "nat_none_tracked", run: conntrack::nat_none_tracked },
    Scenario { name: "pod_containerd", run: pods::pod_containerd },
    Scenario { name: "pod_crio_drop", run: pods::pod_crio_drop },
    Scenario { name: "pod_log_only", run: pods::pod_log_only },
    Scenario { name: "pod_netns_icmp", run: pods::pod_netns_icmp },
    Scenario { name: "pod_late_container", run: pods::pod_late_container },
    Scenario { name: "pod_bad_bundle", run: pods::pod_bad_bundle },
    Scenario { name: "pod_none", run: pods::pod_none },
    Scenario { name: "pod_filters", run: pods::pod_filters },
    Scenario { name: "pcap_file", run: pcap::pcap_file },
    Scenario { name: "pcap_stdout", run: pcap::pcap_stdout },
    Scenario { name: "pcap_rotation", run: pcap::pcap_rotation },
];

#[cfg(test)]
mod tests {
    use std::io;

    use serde_json::json;

    use super::*;

    #[test]
    fn the_drop_only_scenarios_are_scenarios() {
        for name in WITH_DROPS_ONLY {
            assert!(SCENARIOS.iter().any(|s| s.name == *name), "{name} is not a scenario");
        }
    }

    #[test]
    fn compare_names_every_differing_field() {
        let event = json!({"errno": "ECONNREFUSED", "verdict": "delivered", "icmp": null});
        assert_eq!(compare(&event, &json!({"errno": "ECONNREFUSED", "icmp": null})), Outcome::Pass);
        let Outcome::Fail(why) = compare(&event, &json!({"errno": "EHOSTUNREACH", "remote": "10.0.0.9:1"})) else {
            panic!("a mismatch must fail")
        };
        assert!(why.contains("errno: got \"ECONNREFUSED\", want \"EHOSTUNREACH\""), "{why}");
        assert!(why.contains("remote: got null"), "{why}");
    }

    #[test]
    fn errno_check_wants_the_exact_error_or_silence() {
        let refused: io::Result<usize> = Err(io::Error::from_raw_os_error(libc::ECONNREFUSED));
        let timeout: io::Result<usize> = Err(io::Error::from(io::ErrorKind::WouldBlock));
        assert_eq!(errno_check(&refused, Some(libc::ECONNREFUSED)), Outcome::Pass);
        assert!(matches!(errno_check(&refused, None), Outcome::Fail(_)));
        assert_eq!(errno_check(&timeout, None), Outcome::Pass);
        assert!(matches!(errno_check(&Ok(3), Some(libc::EMSGSIZE)), Outcome::Fail(_)));
    }
}
