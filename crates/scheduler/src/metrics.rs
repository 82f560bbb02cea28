//! The scheduler's Prometheus metrics, with upstream kube-scheduler's names and labels:
//! attempts and their duration by result and profile, the end-to-end scheduling latency
//! of each bound pod (its SLI), preemption attempts and victims, and the pending pods of
//! each queue (read from the queue when scraped, never kept in step by hand).

use std::sync::{Arc, Weak};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::queue::SchedulingQueue;

/// How a scheduling attempt ended (upstream's `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Scheduled,
    Unschedulable,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptLabels {
    result: &'static str,
    profile: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AttemptsLabel {
    attempts: String,
}

fn result_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Scheduled => "scheduled",
        Outcome::Unschedulable => "unschedulable",
        Outcome::Error => "error",
    }
}

/// Every metric family; cheap to update from the scheduling loop.
#[derive(Debug)]
pub struct Metrics {
    attempts: Family<AttemptLabels, Counter>,
    attempt_duration: Family<AttemptLabels, Histogram>,
    sli_duration: Family<AttemptsLabel, Histogram>,
    preemption_attempts: Counter,
    preemption_victims: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            attempts: Family::default(),
            // Upstream's buckets: 1 ms doubling to about 16 s.
            attempt_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 15))
            }),
            sli_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 20))
            }),
            preemption_attempts: Counter::default(),
            preemption_victims: Histogram::new(exponential_buckets(1.0, 2.0, 7)),
        }
    }
}

impl Metrics {
    /// Registers the families (and the queue's pending pods, read at each scrape).
    pub fn register(self: &Arc<Self>, registry: &mut Registry, queue: Weak<SchedulingQueue>) {
        let scheduler = registry.sub_registry_with_prefix("scheduler");
        scheduler.register(
            "schedule_attempts",
            "Number of attempts to schedule pods, by the result and the profile",
            self.attempts.clone(),
        );
        scheduler.register(
            "scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
            self.attempt_duration.clone(),
        );
        scheduler.register(
            "pod_scheduling_sli_duration_seconds",
            "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue until it is bound, by the attempts it took",
            self.sli_duration.clone(),
        );
        scheduler.register(
            "preemption_attempts",
            "Total preemption attempts in the cluster till now",
            self.preemption_attempts.clone(),
        );
        scheduler.register(
            "preemption_victims",
            "Number of selected preemption victims",
            self.preemption_victims.clone(),
        );
        registry.register_collector(Box::new(PendingPods(queue)));
    }

    /// One attempt ended so, after `seconds`.
    pub fn attempt(&self, outcome: Outcome, profile: &str, seconds: f64) {
        let labels = AttemptLabels {
            result: result_label(outcome),
            profile: profile.to_string(),
        };
        self.attempts.get_or_create(&labels).inc();
        self.attempt_duration
            .get_or_create(&labels)
            .observe(seconds);
    }

    /// A pod bound `seconds` after it first entered the queue, at its `attempts`-th try.
    pub fn bound(&self, attempts: u32, seconds: f64) {
        let attempts = AttemptsLabel {
            attempts: attempts.to_string(),
        };
        self.sli_duration.get_or_create(&attempts).observe(seconds);
    }

    /// A preemption that evicts `victims` pods.
    pub fn preempting(&self, victims: usize) {
        self.preemption_attempts.inc();
        self.preemption_victims.observe(victims as f64);
    }

    /// Attempts of `profile` that ended so.
    pub fn attempts(&self, outcome: Outcome, profile: &str) -> u64 {
        let labels = AttemptLabels {
            result: result_label(outcome),
            profile: profile.to_string(),
        };
        self.attempts.get_or_create(&labels).get()
    }
}

/// `scheduler_pending_pods{queue}`: the queue's counts when scraped.
#[derive(Debug)]
struct PendingPods(Weak<SchedulingQueue>);

impl prometheus_client::collector::Collector for PendingPods {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(queue) = self.0.upgrade() else {
            return Ok(());
        };
        let (active, backoff, unschedulable, _in_flight) = queue.lengths();
        let mut family = encoder.encode_descriptor(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type",
            None,
            MetricType::Gauge,
        )?;
        for (name, count) in [
            ("active", active),
            ("backoff", backoff),
            ("unschedulable", unschedulable),
        ] {
            let gauge = ConstGauge::new(count as i64);
            gauge.encode(family.encode_family(&[("queue", name)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_names_and_labels() {
        let metrics = Arc::new(Metrics::default());
        let queue = Arc::new(SchedulingQueue::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry, Arc::downgrade(&queue));
        metrics.attempt(Outcome::Scheduled, "default-scheduler", 0.004);
        metrics.attempt(Outcome::Scheduled, "bin-packer", 0.002);
        metrics.attempt(Outcome::Unschedulable, "default-scheduler", 0.003);
        metrics.bound(1, 0.02);
        metrics.preempting(2);
        let text = skiff_metrics::render(&registry);
        for line in [
            "scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} 1",
            "scheduler_scheduling_attempt_duration_seconds_count{result=\"unschedulable\",profile=\"default-scheduler\"} 1",
            "scheduler_pod_scheduling_sli_duration_seconds_count{attempts=\"1\"} 1",
            "scheduler_preemption_attempts_total 1",
            "scheduler_pending_pods{queue=\"active\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(metrics.attempts(Outcome::Scheduled, "bin-packer"), 1);
        assert_eq!(metrics.attempts(Outcome::Error, "bin-packer"), 0);
    }
}
