//! NodeResourcesFit (filter and scoring strategies) and NodeResourcesBalancedAllocation.

use serde::Deserialize;

use crate::cache::{NodeInfo, PodInfo, Snapshot};
use crate::framework::{ClusterEvent, Code, CycleState, Plugin, Status, MAX_NODE_SCORE};
use crate::resources::{CPU, EPHEMERAL_STORAGE, MEMORY};

/// Scores of `RequestedToCapacityRatio` shape points are 0..=10 and scaled by this.
const MAX_CUSTOM_PRIORITY_SCORE: i64 = 10;

/// A resource the scoring strategy looks at, with its weight.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ResourceSpec {
    pub name: String,
    #[serde(default = "one")]
    pub weight: i64,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ShapePoint {
    pub utilization: i64,
    pub score: i64,
}

/// Upstream's `ScoringStrategy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    LeastAllocated,
    MostAllocated,
    RequestedToCapacityRatio(Vec<ShapePoint>),
}

/// NodeResourcesFit: the pod's requests must fit in what the node has left; scoring
/// prefers emptier (`LeastAllocated`, the default) or fuller (`MostAllocated`) nodes.
pub struct NodeResourcesFit {
    pub strategy: Strategy,
    pub resources: Vec<ResourceSpec>,
}

impl Default for NodeResourcesFit {
    fn default() -> Self {
        NodeResourcesFit {
            strategy: Strategy::LeastAllocated,
            resources: default_resources(),
        }
    }
}

pub fn default_resources() -> Vec<ResourceSpec> {
    vec![
        ResourceSpec {
            name: CPU.into(),
            weight: 1,
        },
        ResourceSpec {
            name: MEMORY.into(),
            weight: 1,
        },
    ]
}

/// The reasons NodeResourcesFit gives, in upstream's words.
pub fn insufficient_reasons(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    let mut reasons = Vec::new();
    let alloc = &node.allocatable;
    if node.pods.len() as i64 + 1 > alloc.allowed_pod_number {
        reasons.push("Too many pods".to_string());
    }
    let req = &pod.requests;
    if req.is_zero() {
        return reasons;
    }
    let used = &node.requested;
    let short = |want: i64, have: i64, used: i64| want > 0 && want > have - used;
    if short(req.milli_cpu, alloc.milli_cpu, used.milli_cpu) {
        reasons.push(format!("Insufficient {CPU}"));
    }
    if short(req.memory, alloc.memory, used.memory) {
        reasons.push(format!("Insufficient {MEMORY}"));
    }
    if short(
        req.ephemeral_storage,
        alloc.ephemeral_storage,
        used.ephemeral_storage,
    ) {
        reasons.push(format!("Insufficient {EPHEMERAL_STORAGE}"));
    }
    for (name, want) in &req.scalar {
        if short(*want, alloc.get(name), used.get(name)) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

/// `(requested after placing the pod, allocatable)` for scoring. CPU and memory use the
/// non-zero defaults so that pods without requests still spread; other resources count
/// only when the pod asks for them.
fn requested_and_allocatable(
    pod: &PodInfo,
    node: &NodeInfo,
    name: &str,
    non_zero: bool,
) -> (i64, i64) {
    let alloc = node.allocatable.get(name);
    match name {
        CPU | MEMORY if non_zero => (
            node.non_zero_requested.get(name) + pod.non_zero.get(name),
            alloc,
        ),
        CPU | MEMORY => (node.requested.get(name) + pod.requests.get(name), alloc),
        _ => {
            let want = pod.requests.get(name);
            if want == 0 {
                (0, 0)
            } else {
                (node.requested.get(name) + want, alloc)
            }
        }
    }
}

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

/// The piecewise-linear function through the shape points (upstream's
/// `buildBrokenLinearFunction`), on scores already scaled to 0..=100.
fn broken_linear(shape: &[ShapePoint], p: i64) -> i64 {
    for (i, point) in shape.iter().enumerate() {
        if p <= point.utilization {
            if i == 0 {
                return point.score;
            }
            let prev = shape[i - 1];
            return prev.score
                + (point.score - prev.score) * (p - prev.utilization)
                    / (point.utilization - prev.utilization);
        }
    }
    shape.last().map(|s| s.score).unwrap_or(0)
}

impl NodeResourcesFit {
    pub fn score_node(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let mut total = 0i64;
        let mut weights = 0i64;
        for r in &self.resources {
            let (requested, alloc) = requested_and_allocatable(pod, node, &r.name, true);
            if alloc == 0 {
                continue;
            }
            let s = match &self.strategy {
                Strategy::LeastAllocated => least_requested(requested, alloc),
                Strategy::MostAllocated => most_requested(requested, alloc),
                Strategy::RequestedToCapacityRatio(shape) => {
                    let scaled: Vec<ShapePoint> = shape
                        .iter()
                        .map(|p| ShapePoint {
                            utilization: p.utilization,
                            score: p.score * (MAX_NODE_SCORE / MAX_CUSTOM_PRIORITY_SCORE),
                        })
                        .collect();
                    let utilization = if requested > alloc {
                        100
                    } else {
                        requested * 100 / alloc
                    };
                    broken_linear(&scaled, utilization)
                }
            };
            total += s * r.weight;
            weights += r.weight;
        }
        if weights == 0 {
            return 0;
        }
        match self.strategy {
            Strategy::RequestedToCapacityRatio(_) => (total as f64 / weights as f64).round() as i64,
            _ => total / weights,
        }
    }
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeUpdate,
            ClusterEvent::AssignedPodDelete,
            ClusterEvent::AssignedPodUpdate,
        ]
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = insufficient_reasons(pod, node);
        if reasons.is_empty() {
            return Status::success();
        }
        Status {
            code: Code::Unschedulable,
            reasons,
            plugin: self.name(),
        }
    }
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        self.score_node(pod, node)
    }
}

/// NodeResourcesBalancedAllocation: prefers nodes whose cpu and memory would be used in
/// equal proportion after placing the pod.
pub struct BalancedAllocation {
    pub resources: Vec<ResourceSpec>,
}

impl Default for BalancedAllocation {
    fn default() -> Self {
        BalancedAllocation {
            resources: default_resources(),
        }
    }
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        // Pods that request nothing are skipped upstream; 0 everywhere is the same ranking.
        if pod.requests.is_zero() {
            return 0;
        }
        let fractions: Vec<f64> = self
            .resources
            .iter()
            .filter_map(|r| {
                let (requested, alloc) = requested_and_allocatable(pod, node, &r.name, false);
                (alloc > 0).then(|| (requested as f64 / alloc as f64).min(1.0))
            })
            .collect();
        let std = match fractions.len() {
            0 | 1 => 0.0,
            2 => (fractions[0] - fractions[1]).abs() / 2.0,
            n => {
                let mean = fractions.iter().sum::<f64>() / n as f64;
                (fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / n as f64).sqrt()
            }
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod, sized, NodeInfoExt};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn fit_reasons_follow_upstream() {
        let mut n = node("n1", json!({}), json!({}));
        n.add_pod(Arc::new(sized("a", 3000, 1024)));
        let s =
            NodeResourcesFit::default().filter(&CycleState::default(), &sized("p", 1500, 8192), &n);
        assert_eq!(s.code, Code::Unschedulable);
        assert_eq!(s.reasons, ["Insufficient cpu", "Insufficient memory"]);
        assert!(NodeResourcesFit::default()
            .filter(&CycleState::default(), &sized("p", 1000, 1024), &n)
            .is_success());
    }

    #[test]
    fn pod_count_and_extended_resources() {
        let n = node("n1", json!({}), json!({})).with_status(json!({
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "1", "example.com/gpu": "1"}}));
        let mut full = n.clone();
        full.add_pod(Arc::new(pod(json!({}))));
        let fit = NodeResourcesFit::default();
        let s = fit.filter(&CycleState::default(), &pod(json!({})), &full);
        assert_eq!(s.reasons, ["Too many pods"]);
        let gpus = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "2"}}}]}),
        );
        assert_eq!(
            fit.filter(&CycleState::default(), &gpus, &n).reasons,
            ["Insufficient example.com/gpu"]
        );
    }

    #[test]
    fn least_and_most_allocated_scores() {
        // Upstream's least_allocated_test: node 4000m/10000, pod 3000m/5000 on an empty
        // node: cpu (4000-3000)*100/4000 = 25, memory 50 → 37.
        let n = node("n1", json!({}), json!({})).with_status(json!({
            "allocatable": {"cpu": "4", "memory": "10000", "pods": "110"}}));
        let p = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "3", "memory": "5000"}}}]}),
        );
        assert_eq!(NodeResourcesFit::default().score_node(&p, &n), 37);
        let most = NodeResourcesFit {
            strategy: Strategy::MostAllocated,
            resources: default_resources(),
        };
        assert_eq!(most.score_node(&p, &n), 62);
        // Pods without requests count as 100m / 200Mi for scoring.
        let empty = pod(json!({}));
        let big = node("n2", json!({}), json!({}));
        assert_eq!(
            NodeResourcesFit::default().score_node(&empty, &big),
            (97 + 97) / 2
        );
    }

    #[test]
    fn requested_to_capacity_ratio() {
        let shape = vec![
            ShapePoint {
                utilization: 0,
                score: 10,
            },
            ShapePoint {
                utilization: 100,
                score: 0,
            },
        ];
        let fit = NodeResourcesFit {
            strategy: Strategy::RequestedToCapacityRatio(shape),
            resources: default_resources(),
        };
        let n = node("n1", json!({}), json!({})).with_status(json!({
            "allocatable": {"cpu": "4", "memory": "10000", "pods": "110"}}));
        let p = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1", "memory": "5000"}}}]}),
        );
        // cpu 25% → 75, memory 50% → 50; mean 62.5 rounds to 63.
        assert_eq!(fit.score_node(&p, &n), 63);
        assert_eq!(
            broken_linear(
                &[ShapePoint {
                    utilization: 10,
                    score: 30
                }],
                0
            ),
            30
        );
    }

    #[test]
    fn balanced_allocation() {
        let n = node("n1", json!({}), json!({})).with_status(json!({
            "allocatable": {"cpu": "4", "memory": "4000", "pods": "110"}}));
        let balanced = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "2000"}}}]}),
        );
        let skewed = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "0"}}}]}),
        );
        let snap = Snapshot::default();
        let b = BalancedAllocation::default();
        assert_eq!(b.score(&CycleState::default(), &balanced, &n, &snap), 100);
        assert_eq!(b.score(&CycleState::default(), &skewed, &n, &snap), 75);
    }
}
