//! Prometheus metrics, named after upstream kube-proxy's where one exists.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// `full` (whole table), `partial` (only changes) or `noop` (nothing to apply).
    pub kind: String,
    /// `ok` or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// `nat` or `filter`.
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `ok`, `no_endpoints` or `error` (no endpoint answered).
    pub result: String,
}

/// The proxy's metrics; register them in the registry the binary serves.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub syncs: Family<SyncLabels, Counter>,
    pub sync_duration: Histogram,
    pub chains: Gauge,
    pub rules: Gauge,
    pub map_elements: Gauge,
    pub iptables_rules: Family<TableLabels, Gauge>,
    pub services: Gauge,
    /// Userspace mode: connections (TCP) and sessions (UDP) relayed, by outcome.
    pub userspace_connections: Family<ConnectionLabels, Counter>,
    /// Userspace mode: UDP sessions open now.
    pub userspace_udp_sessions: Gauge,
    /// Userspace mode: portals (local listeners) open now.
    pub userspace_portals: Gauge,
}

impl Metrics {
    /// One sync of the rules: its kind (`SyncKind::label`), whether it was applied, and
    /// how long it took since `started`.
    pub fn record_sync(&self, kind: &str, applied: bool, started: std::time::Instant) {
        self.syncs
            .get_or_create(&SyncLabels {
                kind: kind.into(),
                result: if applied { "ok" } else { "error" }.into(),
            })
            .inc();
        self.sync_duration.observe(started.elapsed().as_secs_f64());
    }

    /// New metrics, registered under the `skiff_proxy_` prefix.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            syncs: Family::default(),
            // 1 ms … ~33 s.
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            chains: Gauge::default(),
            rules: Gauge::default(),
            map_elements: Gauge::default(),
            iptables_rules: Family::default(),
            services: Gauge::default(),
            userspace_connections: Family::default(),
            userspace_udp_sessions: Gauge::default(),
            userspace_portals: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("skiff_proxy");
        r.register(
            "sync_proxy_rules",
            "Syncs of the proxy rules, by kind and result",
            m.syncs.clone(),
        );
        r.register(
            "sync_proxy_rules_duration_seconds",
            "Time to compute and apply one sync of the proxy rules",
            m.sync_duration.clone(),
        );
        r.register(
            "nftables_chains",
            "Chains in the proxy's nftables table after the last sync",
            m.chains.clone(),
        );
        r.register(
            "nftables_rules",
            "Rules in the proxy's nftables table after the last sync",
            m.rules.clone(),
        );
        r.register(
            "nftables_map_elements",
            "Verdict map elements in the proxy's nftables table after the last sync",
            m.map_elements.clone(),
        );
        r.register(
            "sync_proxy_rules_iptables",
            "Rules in the proxy's chains of each iptables table after the last sync",
            m.iptables_rules.clone(),
        );
        r.register(
            "service_ports",
            "Service ports in the last synced model",
            m.services.clone(),
        );
        r.register(
            "userspace_connections",
            "Userspace mode: connections (TCP) and sessions (UDP) relayed, by outcome",
            m.userspace_connections.clone(),
        );
        r.register(
            "userspace_udp_sessions",
            "Userspace mode: UDP sessions open",
            m.userspace_udp_sessions.clone(),
        );
        r.register(
            "userspace_portals",
            "Userspace mode: local listeners open for Service ports",
            m.userspace_portals.clone(),
        );
        m
    }
}
