//! Clearing UDP connection-tracking entries that would keep traffic on a stale path, as
//! upstream's proxy does after each sync. UDP has no connection to end: a client that
//! keeps sending from one port (a DNS resolver, say) matches its conntrack entry, and
//! so the NAT decided when the entry was made, for as long as it keeps sending. Two
//! cases need clearing:
//!
//! - an endpoint went away: entries NATed to it would black-hole the client;
//! - a Service port gained its first endpoints: entries made while it was rejected
//!   (no NAT) would keep the client from reaching them.
//!
//! TCP needs none of this: a reset or a timeout ends the connection, and the next one
//! is NATed afresh.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::model::{Model, Protocol, ServicePort};

/// One `conntrack -D` deletion: its arguments after `-D`.
pub type Deletion = Vec<String>;

/// The deletions that moving from `old` to `new` calls for.
pub fn stale_entries(old: &Model, new: &Model) -> Vec<Deletion> {
    let mut deletions = Vec::new();
    for (name, port) in &new.services {
        if name.protocol != Protocol::Udp {
            continue;
        }
        let before = old.services.get(name);
        let had_endpoints = before.is_some_and(|b| !endpoints(b).is_empty());
        if !had_endpoints && !endpoints(port).is_empty() {
            for destination in destinations(port) {
                deletions.push(args(&[
                    "--orig-dst",
                    &destination.to_string(),
                    "--orig-port-dst",
                    &port.port.to_string(),
                ]));
            }
            if let Some(node_port) = port.node_port {
                deletions.push(args(&["--orig-port-dst", &node_port.to_string()]));
            }
        }
    }
    for (name, port) in &old.services {
        if name.protocol != Protocol::Udp {
            continue;
        }
        let kept = new.services.get(name).map(endpoints).unwrap_or_default();
        for gone in endpoints(port).difference(&kept) {
            for destination in destinations(port) {
                deletions.push(args(&[
                    "--orig-dst",
                    &destination.to_string(),
                    "--dst-nat",
                    &gone.to_string(),
                ]));
            }
            if let Some(node_port) = port.node_port {
                deletions.push(args(&[
                    "--orig-port-dst",
                    &node_port.to_string(),
                    "--dst-nat",
                    &gone.to_string(),
                ]));
            }
        }
    }
    deletions
}

/// The addresses traffic to the port is NATed to.
fn endpoints(port: &ServicePort) -> BTreeSet<Ipv4Addr> {
    port.cluster_endpoints
        .iter()
        .chain(&port.external_endpoints)
        .map(|e| e.ip)
        .collect()
}

/// The addresses clients send the port's traffic to.
fn destinations(port: &ServicePort) -> impl Iterator<Item = Ipv4Addr> + '_ {
    std::iter::once(port.cluster_ip).chain(port.external_ips.iter().copied())
}

fn args(filter: &[&str]) -> Deletion {
    ["-p", "udp"]
        .iter()
        .chain(filter)
        .map(|s| s.to_string())
        .collect()
}

/// Runs the deletions with the `conntrack` tool, after `prefix` (e.g. `ip netns exec
/// NAME`, empty for this host). Best effort: "no entry matched" is the usual answer,
/// and a missing tool is logged once per sync.
pub fn delete(prefix: &[String], deletions: &[Deletion]) {
    for deletion in deletions {
        let mut argv = prefix.iter().map(String::as_str).chain(["conntrack", "-D"]);
        let Some(program) = argv.next() else { return };
        let run = std::process::Command::new(program)
            .args(argv)
            .args(deletion)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Err(error) = run {
            tracing::warn!(%error, "conntrack not run: stale UDP flows may linger");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{model_of, service_port};

    fn udp(mut port: ServicePort) -> ServicePort {
        port.name.protocol = Protocol::Udp;
        port
    }

    #[test]
    fn gone_endpoints_and_first_endpoints_are_cleared_for_udp_only() {
        let old = model_of([
            udp(service_port(
                "ns",
                "dns",
                "10.96.0.10",
                &["10.88.0.2", "10.88.0.3"],
            )),
            service_port("ns", "web", "10.96.0.20", &["10.88.0.4"]),
            udp(service_port("ns", "empty", "10.96.0.30", &[])),
        ]);
        let new = model_of([
            udp(service_port("ns", "dns", "10.96.0.10", &["10.88.0.2"])),
            service_port("ns", "web", "10.96.0.20", &[]),
            udp(service_port("ns", "empty", "10.96.0.30", &["10.88.0.9"])),
        ]);
        let deletions = stale_entries(&old, &new);
        let as_text: Vec<String> = deletions.iter().map(|d| d.join(" ")).collect();
        assert!(
            as_text.contains(&"-p udp --orig-dst 10.96.0.10 --dst-nat 10.88.0.3".to_string()),
            "{as_text:?}"
        );
        assert!(
            as_text
                .iter()
                .any(|d| d.starts_with("-p udp --orig-dst 10.96.0.30 --orig-port-dst")),
            "{as_text:?}"
        );
        assert!(
            !as_text.iter().any(|d| d.contains("10.96.0.20")),
            "TCP is left alone: {as_text:?}"
        );
        assert!(
            !as_text.iter().any(|d| d.contains("10.88.0.2 ")),
            "{as_text:?}"
        );
        assert!(stale_entries(&new, &new).is_empty());
    }
}
