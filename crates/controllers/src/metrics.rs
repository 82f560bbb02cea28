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
        ControllerManagerMetrics {
            adds,
            depth,
            queue_duration,
            work_duration,
            retries,
            leader,
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
        let text = skiff_metrics::render(&metrics.registry());
        for line in [
            "workqueue_adds_total{name=\"deployment\"} 2",
            "workqueue_depth{name=\"deployment\"} 1",
            "workqueue_retries_total{name=\"deployment\"} 1",
            "workqueue_queue_duration_seconds_count{name=\"deployment\"} 1",
            "workqueue_work_duration_seconds_sum{name=\"deployment\"} 0.02",
            "leader_election_master_status{name=\"kube-controller-manager\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
