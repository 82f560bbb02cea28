//! Prometheus metrics, under the `skiff_netpol_` prefix.

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

/// The enforcer's metrics; register them in the registry the binary serves.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub syncs: Family<SyncLabels, Counter>,
    pub sync_duration: Histogram,
    pub policies: Gauge,
    pub isolated_pods: Gauge,
    pub rules: Gauge,
    pub elements: Gauge,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            syncs: Family::default(),
            // 1 ms … ~33 s.
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            policies: Gauge::default(),
            isolated_pods: Gauge::default(),
            rules: Gauge::default(),
            elements: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("skiff_netpol");
        r.register(
            "syncs",
            "Syncs of the network policy rules, by kind and result",
            m.syncs.clone(),
        );
        r.register(
            "sync_duration_seconds",
            "Time to compute and apply one sync of the network policy rules",
            m.sync_duration.clone(),
        );
        r.register(
            "policies",
            "NetworkPolicies in the last synced model",
            m.policies.clone(),
        );
        r.register(
            "isolated_pods",
            "Pods of this node isolated for ingress or egress after the last sync",
            m.isolated_pods.clone(),
        );
        r.register(
            "nftables_rules",
            "Rules in the network policy table after the last sync",
            m.rules.clone(),
        );
        r.register(
            "nftables_elements",
            "Set and verdict map elements in the network policy table after the last sync",
            m.elements.clone(),
        );
        m
    }
}
