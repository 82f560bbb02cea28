//! Which pod goes first, and what it is told: upstream's ranking per signal and its
//! eviction message.

use super::thresholds::{Observation, Signal, Threshold};

/// A pod as eviction ranks it, measured in the resource being reclaimed.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub uid: String,
    pub priority: i32,
    pub usage: u64,
    pub request: u64,
    /// Per container: name, usage, request.
    pub containers: Vec<(String, u64, u64)>,
}

impl Candidate {
    fn exceeds_request(&self) -> bool {
        self.usage > self.request
    }

    fn beyond_request(&self) -> u64 {
        self.usage.saturating_sub(self.request)
    }
}

/// Upstream's order for the signal. Memory and disk: pods using more than they request
/// first, then lower priority, then more use beyond the request. Process IDs: lower
/// priority first, then more processes.
pub fn rank(signal: Signal, candidates: &mut [Candidate]) {
    if signal == Signal::PidAvailable {
        candidates.sort_by(|a, b| a.priority.cmp(&b.priority).then(b.usage.cmp(&a.usage)));
        return;
    }
    candidates.sort_by(|a, b| {
        b.exceeds_request()
            .cmp(&a.exceeds_request())
            .then(a.priority.cmp(&b.priority))
            .then(b.beyond_request().cmp(&a.beyond_request()))
    });
}

/// Upstream's eviction message: the resource, the threshold and what was available,
/// then each container using more of it than it requests.
pub fn message(threshold: &Threshold, observed: &Observation, victim: &Candidate) -> String {
    let signal = threshold.signal;
    let resource = signal.resource();
    let mut message = format!(
        "The node was low on resource: {resource}. Threshold quantity: {}, available: {}. ",
        signal.quantity(threshold.limit(observed.capacity)),
        signal.quantity(observed.available)
    );
    // Upstream names containers for memory and disk space only.
    if matches!(resource, "memory" | "ephemeral-storage") {
        for (name, usage, request) in &victim.containers {
            if usage > request {
                message.push_str(&format!(
                    "Container {name} was using {}, request is {}, has larger consumption of {resource}. ",
                    signal.quantity(*usage),
                    signal.quantity(*request)
                ));
            }
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::super::thresholds::{parse, ThresholdFlags};
    use super::*;

    fn pod(uid: &str, priority: i32, usage: u64, request: u64) -> Candidate {
        Candidate {
            uid: uid.into(),
            priority,
            usage,
            request,
            containers: vec![],
        }
    }

    fn order(signal: Signal, mut pods: Vec<Candidate>) -> Vec<String> {
        rank(signal, &mut pods);
        pods.into_iter().map(|p| p.uid).collect()
    }

    #[test]
    fn pods_over_their_requests_go_first_then_low_priority_then_the_greediest() {
        let pods = vec![
            pod("within-low", 0, 10, 100),
            pod("over-high", 1000, 200, 100),
            pod("over-low-small", 0, 110, 100),
            pod("over-low-big", 0, 500, 100),
        ];
        assert_eq!(
            order(Signal::MemoryAvailable, pods.clone()),
            ["over-low-big", "over-low-small", "over-high", "within-low"]
        );
        assert_eq!(
            order(Signal::NodeFsAvailable, pods),
            ["over-low-big", "over-low-small", "over-high", "within-low"]
        );
    }

    #[test]
    fn process_id_pressure_ranks_by_priority_then_process_count() {
        let pods = vec![
            pod("high-many", 1000, 500, 0),
            pod("low-few", 0, 2, 0),
            pod("low-many", 0, 40, 0),
        ];
        assert_eq!(
            order(Signal::PidAvailable, pods),
            ["low-many", "low-few", "high-many"]
        );
    }

    #[test]
    fn messages_name_the_resource_threshold_and_greedy_containers() {
        let flags = ThresholdFlags {
            hard: "memory.available<100Mi,pid.available<1000",
            ..Default::default()
        };
        let thresholds = parse(&flags).unwrap_or_default();
        let mib = 1 << 20;
        let victim = Candidate {
            containers: vec![("c".into(), 20 * mib, 0), ("d".into(), mib, 2 * mib)],
            ..pod("u", 0, 21 * mib, 2 * mib)
        };
        let observed = Observation {
            available: 50 * mib,
            capacity: 1 << 30,
        };
        assert_eq!(
            message(&thresholds[0], &observed, &victim),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container c was using 20Mi, request is 0, has larger consumption of memory. "
        );
        let observed = Observation {
            available: 700,
            capacity: 32768,
        };
        assert_eq!(
            message(&thresholds[1], &observed, &victim),
            "The node was low on resource: pids. Threshold quantity: 1k, available: 700. "
        );
    }
}
