//! The controller manager's Prometheus metrics, with upstream's names: the `workqueue_*`
//! families of every controller's queue (labelled by the queue's `name`, as upstream's
//! `workqueue` package registers them) and `leader_election_master_status`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ZoneLabel {
    zone: String,
}

/// Upstream's buckets for both queue latencies: 10 ns to 1,000 s by powers of ten.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-8, 10.0, 12))
}

type Latencies = Family<NameLabel, Histogram, fn() -> Histogram>;

/// Every family of the controller manager.
#[derive(Debug)]
pub struct ControllerManagerMetrics {
    adds: Family<NameLabel, Counter>,
    depth: Family<NameLabel, Gauge>,
    queue_duration: Latencies,
    work_duration: Latencies,
    retries: Family<NameLabel, Counter>,
    leader: Family<NameLabel, Gauge>,
    zone_health: Family<ZoneLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    zone_size: Family<ZoneLabel, Gauge>,
    zone_unhealthy: Family<ZoneLabel, Gauge>,
    zone_evictions: Family<ZoneLabel, Counter>,
    registry: Arc<Registry>,
}

impl Default for ControllerManagerMetrics {
    fn default() -> Self {
        let adds = Family::<NameLabel, Counter>::default();
        let depth = Family::<NameLabel, Gauge>::default();
        let queue_duration: Latencies = Family::new_with_constructor(latency_histogram);
        let work_duration: Latencies = Family::new_with_constructor(latency_histogram);
        let retries = Family::<NameLabel, Counter>::default();
        let leader = Family::<NameLabel, Gauge>::default();
        let zone_health = Family::<ZoneLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let zone_size = Family::<ZoneLabel, Gauge>::default();
        let zone_unhealthy = Family::<ZoneLabel, Gauge>::default();
        let zone_evictions = Family::<ZoneLabel, Counter>::default();
        let mut registry = Registry::default();
        let workqueue = registry.sub_registry_with_prefix("workqueue");
        workqueue.register(
            "adds",
            "Total number of adds handled by workqueue",
            adds.clone(),
        );
        workqueue.register("depth", "Current depth of workqueue", depth.clone());
        workqueue.register_with_unit(
            "queue_duration",
            "How long in seconds an item stays in workqueue before being requested",
            prometheus_client::registry::Unit::Seconds,
            queue_duration.clone(),
        );
        workqueue.register_with_unit(
            "work_duration",
            "How long in seconds processing an item from workqueue takes",
            prometheus_client::registry::Unit::Seconds,
            work_duration.clone(),
        );
        workqueue.register(
            "retries",
            "Total number of retries handled by workqueue",
            retries.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates \
             backup, 1 indicates master. 'name' is the string used to identify the lease",
            leader.clone(),
        );
        let nodes = registry.sub_registry_with_prefix("node_collector");
        nodes.register(
            "zone_health",
            "Gauge measuring percentage of healthy nodes per zone",
            zone_health.clone(),
        );
        nodes.register(
            "zone_size",
            "Gauge measuring number of registered Nodes per zones",
            zone_size.clone(),
        );
        nodes.register(
            "unhealthy_nodes_in_zone",
            "Gauge measuring number of not Ready Nodes per zones",
            zone_unhealthy.clone(),
        );
        nodes.register(
            "evictions",
            "Number of Node evictions (NoExecute taintings) that happened since current instance of NodeController started",
            zone_evictions.clone(),
        );
        ControllerManagerMetrics {
            adds,
            depth,
            queue_duration,
            work_duration,
            retries,
            leader,
            zone_health,
            zone_size,
            zone_unhealthy,
            zone_evictions,
            registry: Arc::new(registry),
        }
    }
}

impl ControllerManagerMetrics {
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// The handles one queue updates.
    pub fn queue(&self, name: &str) -> QueueMetrics {
        let label = NameLabel {
            name: name.to_string(),
        };
        QueueMetrics {
            adds: self.adds.get_or_create(&label).clone(),
            depth: self.depth.get_or_create(&label).clone(),
            queue_duration: self.queue_duration.get_or_create(&label).clone(),
            work_duration: self.work_duration.get_or_create(&label).clone(),
            retries: self.retries.get_or_create(&label).clone(),
        }
    }

    /// A zone's size and not-ready nodes, as the node lifecycle controller last saw them.
    pub fn zone_observed(&self, zone: &str, size: usize, unhealthy: usize) {
        let label = ZoneLabel {
            zone: zone.to_string(),
        };
        let healthy = if size == 0 {
            100.0
        } else {
            (size - unhealthy.min(size)) as f64 * 100.0 / size as f64
        };
        self.zone_health.get_or_create(&label).set(healthy);
        self.zone_size.get_or_create(&label).set(size as i64);
        self.zone_unhealthy
            .get_or_create(&label)
            .set(unhealthy as i64);
    }

    /// A node of `zone` was tainted `NoExecute` (its pods are being evicted).
    pub fn zone_tainted(&self, zone: &str) {
        self.zone_evictions
            .get_or_create(&ZoneLabel {
                zone: zone.to_string(),
            })
            .inc();
    }

    /// Marks the lease `name` held (1) or not (0) by this process.
    pub fn set_leader(&self, name: &str, leading: bool) {
        self.leader
            .get_or_create(&NameLabel {
                name: name.to_string(),
            })
            .set(i64::from(leading));
    }
}

/// One queue's metrics.
#[derive(Debug, Clone)]
pub struct QueueMetrics {
    adds: Counter,
    depth: Gauge,
    queue_duration: Histogram,
    work_duration: Histogram,
    retries: Counter,
}

impl QueueMetrics {
    /// A key became due for processing.
    pub(crate) fn added(&self) {
        self.adds.inc();
        self.depth.inc();
    }

    /// A worker took a key that had waited `waited`.
    pub(crate) fn taken(&self, waited: Duration) {
        self.depth.dec();
        self.queue_duration.observe(waited.as_secs_f64());
    }

    /// A worker finished a key after `worked`.
    pub(crate) fn finished(&self, worked: Duration) {
        self.work_duration.observe(worked.as_secs_f64());
    }

    pub(crate) fn retried(&self) {
        self.retries.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_upstream_names_per_queue() {
        let metrics = ControllerManagerMetrics::default();
        let deployment = metrics.queue("deployment");
        deployment.added();
        deployment.added();
        deployment.taken(Duration::from_millis(3));
        deployment.finished(Duration::from_millis(20));
        deployment.retried();
        metrics.set_leader("kube-controller-manager", true);
        metrics.zone_observed("r:z", 4, 1);
        metrics.zone_tainted("r:z");
        let text = skiff_metrics::render(&metrics.registry());
        for line in [
            "workqueue_adds_total{name=\"deployment\"} 2",
            "workqueue_depth{name=\"deployment\"} 1",
            "workqueue_retries_total{name=\"deployment\"} 1",
            "workqueue_queue_duration_seconds_count{name=\"deployment\"} 1",
            "workqueue_work_duration_seconds_sum{name=\"deployment\"} 0.02",
            "leader_election_master_status{name=\"kube-controller-manager\"} 1",
            "node_collector_zone_health{zone=\"r:z\"} 75.0",
            "node_collector_zone_size{zone=\"r:z\"} 4",
            "node_collector_unhealthy_nodes_in_zone{zone=\"r:z\"} 1",
            "node_collector_evictions_total{zone=\"r:z\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
