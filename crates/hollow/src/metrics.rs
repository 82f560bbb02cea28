//! The fleet's Prometheus metrics: nodes registered, and the requests it sends by what
//! they do and how they ended — enough to see a fleet keep up (or not) with its server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Register,
    Lease,
    NodeStatus,
    PodRunning,
    PodSucceeded,
    PodDelete,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    result: &'static str,
}

#[derive(Debug, Default)]
pub struct Metrics {
    registered: Gauge,
    requests: Family<RequestLabels, Counter>,
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let hollow = registry.sub_registry_with_prefix("hollow");
        hollow.register(
            "nodes_registered",
            "Hollow nodes registered by this process",
            self.registered.clone(),
        );
        hollow.register(
            "requests",
            "API requests of the hollow nodes, by operation and result",
            self.requests.clone(),
        );
    }

    pub fn registered(&self) {
        self.registered.inc();
    }

    /// Counts one request for `operation` that succeeded or not.
    pub fn request(&self, operation: Operation, ok: bool) {
        let operation = match operation {
            Operation::Register => "register",
            Operation::Lease => "lease",
            Operation::NodeStatus => "node_status",
            Operation::PodRunning => "pod_running",
            Operation::PodSucceeded => "pod_succeeded",
            Operation::PodDelete => "pod_delete",
        };
        let result = if ok { "ok" } else { "error" };
        self.requests
            .get_or_create(&RequestLabels { operation, result })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_operation_and_result() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.registered();
        metrics.request(Operation::Lease, true);
        metrics.request(Operation::Lease, true);
        metrics.request(Operation::PodDelete, false);
        let text = skiff_metrics::render(&registry);
        for line in [
            "hollow_nodes_registered 1",
            "hollow_requests_total{operation=\"lease\",result=\"ok\"} 2",
            "hollow_requests_total{operation=\"pod_delete\",result=\"error\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
