//! The userspace mode's nftables table, `ip skiff-userspace`: every Service address the
//! proxy has a listener for is redirected to that listener's local port, from pods and
//! other hosts (`prerouting`) and from this host (`output`); addresses whose portal has
//! no endpoints are refused before they go anywhere. Upstream's userspace proxy did the
//! same with iptables `REDIRECT` (its `KUBE-PORTALS-*` and `KUBE-NODEPORT-*` chains).
//!
//! The table is small (a few rules per Service) and written whole in one atomic
//! transaction whenever it changes.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::PortalKey;
use crate::model::{Model, Protocol, RenderConfig, ServicePort};
use crate::nftables::nodeport_match;

/// The table the userspace mode owns.
pub const TABLE: &str = "skiff-userspace";

/// Where each portal's listener is, as [`render`] needs it.
pub type Ports = BTreeMap<PortalKey, u16>;

/// The transaction that replaces the table with the rules for `model`, whose portals
/// listen on `ports` (a portal without a port, whose listener could not be opened, gets
/// no rules).
pub fn render(model: &Model, ports: &Ports, config: &RenderConfig) -> String {
    let nodeports = nodeport_match(config);
    let mut redirects = Vec::new();
    let mut refusals = Vec::new();
    for sp in model.services.values() {
        if sp.name.protocol == Protocol::Sctp {
            // No SCTP sockets here, as upstream's userspace proxy had none.
            continue;
        }
        let proto = sp.name.protocol.nft();
        let verdict = refusal(sp);
        let cluster = PortalKey::cluster(&sp.name);
        if let Some(port) = ports.get(&cluster) {
            let matched = format!("ip daddr {} {proto} dport {}", sp.cluster_ip, sp.port);
            if sp.cluster_endpoints.is_empty() {
                refusals.push(format!("{matched} {verdict}"));
            } else {
                redirects.push(format!("{matched} redirect to :{port}"));
            }
        }
        let external = PortalKey::external(&sp.name);
        if let (Some(port), true) = (ports.get(&external), sp.has_external()) {
            let mut matches: Vec<String> = sp
                .external_ips
                .iter()
                .map(|ip| format!("ip daddr {ip} {proto} dport {}", sp.port))
                .collect();
            if let Some(node_port) = sp.node_port {
                matches.push(format!("{nodeports} {proto} dport {node_port}"));
            }
            for matched in matches {
                if sp.external_endpoints.is_empty() {
                    refusals.push(format!("{matched} {verdict}"));
                } else {
                    redirects.push(format!("{matched} redirect to :{port}"));
                }
            }
        }
    }

    let mut tx = String::new();
    let mut line = |args: std::fmt::Arguments<'_>| {
        let _ = tx.write_fmt(args);
        tx.push('\n');
    };
    // Creating it first makes the delete valid when the table is not there yet.
    line(format_args!("add table ip {TABLE}"));
    line(format_args!("delete table ip {TABLE}"));
    line(format_args!("add table ip {TABLE}"));
    for (chain, hook) in [
        (
            "nat-prerouting",
            "type nat hook prerouting priority dstnat ;",
        ),
        ("nat-output", "type nat hook output priority -100 ;"),
        // Before any DNAT, as the nftables mode's: without endpoints, refused at once.
        ("filter-input", "type filter hook input priority -110 ;"),
        ("filter-forward", "type filter hook forward priority -110 ;"),
        ("filter-output", "type filter hook output priority -110 ;"),
    ] {
        line(format_args!("add chain ip {TABLE} {chain} {{ {hook} }}"));
    }
    line(format_args!("add chain ip {TABLE} portals"));
    line(format_args!("add chain ip {TABLE} no-endpoints"));
    for chain in ["nat-prerouting", "nat-output"] {
        line(format_args!("add rule ip {TABLE} {chain} jump portals"));
    }
    for chain in ["filter-input", "filter-forward", "filter-output"] {
        line(format_args!(
            "add rule ip {TABLE} {chain} ct state new jump no-endpoints"
        ));
    }
    for rule in &redirects {
        line(format_args!("add rule ip {TABLE} portals {rule}"));
    }
    for rule in &refusals {
        line(format_args!("add rule ip {TABLE} no-endpoints {rule}"));
    }
    tx
}

/// How traffic to a portal without endpoints ends: refused when the Service has none at
/// all; dropped when it has some, but none this traffic policy may use (as the other
/// modes do: the client may succeed through another node).
fn refusal(sp: &ServicePort) -> &'static str {
    match (sp.any_endpoints, sp.name.protocol) {
        (true, _) => "drop",
        (false, Protocol::Tcp) => "reject with tcp reset",
        (false, _) => "reject",
    }
}

/// How many rules a transaction from [`render`] adds, for the rules gauge.
pub fn rule_count(transaction: &str) -> usize {
    transaction
        .lines()
        .filter(|l| l.starts_with("add rule "))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{model_of, service_port};

    #[test]
    fn redirects_cluster_ip_node_port_and_external_ips_to_their_listeners() {
        let mut web = service_port("ns", "web", "10.96.0.50", &["10.88.1.2", "10.88.2.2"]);
        web.node_port = Some(30080);
        web.external_ips = vec!["10.77.0.1".parse().expect("ip")];
        let mut dns = service_port("ns", "dns", "10.96.0.10", &["10.88.1.3"]);
        dns.name.protocol = Protocol::Udp;
        dns.port = 53;
        let model = model_of([web.clone(), dns.clone()]);
        let ports = Ports::from([
            (PortalKey::cluster(&web.name), 41000),
            (PortalKey::external(&web.name), 41001),
            (PortalKey::cluster(&dns.name), 41002),
        ]);
        let tx = render(&model, &ports, &RenderConfig::default());
        let rules: Vec<&str> = tx.lines().filter(|l| l.contains(" portals ")).collect();
        assert_eq!(
            rules,
            [
                "add rule ip skiff-userspace portals ip daddr 10.96.0.10 udp dport 53 redirect to :41002",
                "add rule ip skiff-userspace portals ip daddr 10.96.0.50 tcp dport 80 redirect to :41000",
                "add rule ip skiff-userspace portals ip daddr 10.77.0.1 tcp dport 80 redirect to :41001",
                "add rule ip skiff-userspace portals fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 30080 redirect to :41001",
            ]
        );
        assert!(tx.starts_with(
            "add table ip skiff-userspace\ndelete table ip skiff-userspace\nadd table ip skiff-userspace\n"
        ));
        assert!(tx.contains("add rule ip skiff-userspace nat-output jump portals"));
        assert!(tx.contains("add rule ip skiff-userspace nat-prerouting jump portals"));
        assert!(!tx.contains("add rule ip skiff-userspace no-endpoints"));
        assert_eq!(rule_count(&tx), 2 + 3 + 4);
    }

    #[test]
    fn without_endpoints_refused_and_with_only_remote_ones_dropped() {
        let mut web = service_port("ns", "web", "10.96.0.50", &[]);
        web.node_port = Some(30080);
        let mut local = service_port("ns", "local", "10.96.0.51", &["10.88.9.9"]);
        local.node_port = Some(30081);
        local.external_endpoints.clear();
        let model = model_of([web.clone(), local.clone()]);
        let ports = Ports::from([
            (PortalKey::cluster(&web.name), 41000),
            (PortalKey::external(&web.name), 41001),
            (PortalKey::cluster(&local.name), 41002),
            (PortalKey::external(&local.name), 41003),
        ]);
        let tx = render(&model, &ports, &RenderConfig::default());
        let refused: Vec<&str> = tx
            .lines()
            .filter_map(|l| l.strip_prefix("add rule ip skiff-userspace no-endpoints "))
            .collect();
        assert_eq!(
            refused,
            [
                "fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 30081 drop",
                "ip daddr 10.96.0.50 tcp dport 80 reject with tcp reset",
                "fib daddr type local ip daddr != 127.0.0.0/8 tcp dport 30080 reject with tcp reset",
            ]
        );
        let redirected: Vec<&str> = tx.lines().filter(|l| l.contains(" portals ")).collect();
        assert_eq!(
            redirected,
            ["add rule ip skiff-userspace portals ip daddr 10.96.0.51 tcp dport 80 redirect to :41002"]
        );
    }
}
