//! PodTopologySpread, filter half: `whenUnsatisfiable: DoNotSchedule` constraints with
//! `maxSkew`, `minDomains`, `matchLabelKeys`, `nodeAffinityPolicy` (default Honor) and
//! `nodeTaintsPolicy` (default Ignore). Scoring (`ScheduleAnyway` and the system default
//! constraints) is still to do.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::helpers::{label_selector_matches, tolerated_by_any};
use super::simple::matches_required_node_affinity;
use crate::cache::{NodeInfo, PodInfo, Snapshot};
use crate::framework::{Code, CycleState, Plugin, Status};

pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const ERR_SKEW: &str = "node(s) didn't match pod topology spread constraints";

const STATE_KEY: &str = "PreFilterPodTopologySpread";

#[derive(Clone)]
struct Constraint {
    key: String,
    max_skew: i64,
    min_domains: usize,
    selector: LabelSelector,
    honor_affinity: bool,
    honor_taints: bool,
}

#[derive(Clone)]
struct PreFilterState {
    constraints: Vec<Constraint>,
    /// Per constraint: domain value → matching pods.
    counts: Vec<HashMap<String, i64>>,
}

fn hard_constraints(pod: &PodInfo) -> Vec<Constraint> {
    let list: &[TopologySpreadConstraint] = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or(&[]);
    list.iter()
        .filter(|c| c.when_unsatisfiable == "DoNotSchedule")
        .map(|c| {
            let mut selector = c.label_selector.clone().unwrap_or_default();
            // matchLabelKeys: the pod's own values for these keys narrow the selector.
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = pod.labels().get(key) {
                    selector
                        .match_expressions
                        .get_or_insert_with(Vec::new)
                        .push(LabelSelectorRequirement {
                            key: key.clone(),
                            operator: "In".into(),
                            values: Some(vec![v.clone()]),
                        });
                }
            }
            Constraint {
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew),
                min_domains: c.min_domains.unwrap_or(1).max(1) as usize,
                selector,
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect()
}

fn node_counts(c: &Constraint, pod: &PodInfo, node: &NodeInfo) -> bool {
    if c.honor_affinity && !matches_required_node_affinity(pod, node) {
        return false;
    }
    if c.honor_taints {
        let tolerations = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        let taints = node
            .node()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[]);
        if taints.iter().any(|t| {
            matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
                && !tolerated_by_any(tolerations, t)
        }) {
            return false;
        }
    }
    true
}

/// Whether `other` counts towards the incoming pod's constraint `c`.
fn counted_pod(c: &Constraint, pod: &PodInfo, other: &PodInfo) -> bool {
    other.namespace() == pod.namespace()
        && other.pod.metadata.deletion_timestamp.is_none()
        && label_selector_matches(Some(&c.selector), other.labels())
}

impl PreFilterState {
    /// Counts `other` on `node` in (`delta` 1) or out (`delta` -1), as pre_filter would.
    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        let labels = node.labels();
        if !self.constraints.iter().all(|c| labels.contains_key(&c.key)) {
            return;
        }
        for (c, counts) in self.constraints.iter().zip(self.counts.iter_mut()) {
            if node_counts(c, pod, node) && counted_pod(c, pod, other) {
                *counts.entry(labels[&c.key].clone()).or_default() += delta;
            }
        }
    }
}

pub struct PodTopologySpread;

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Status {
        let constraints = hard_constraints(pod);
        if constraints.is_empty() {
            return Status::success();
        }
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
        for node in &snapshot.nodes {
            let labels = node.labels();
            // Upstream counts a node only if it has every constraint's topology key.
            if !constraints.iter().all(|c| labels.contains_key(&c.key)) {
                continue;
            }
            for (c, count) in constraints.iter().zip(counts.iter_mut()) {
                if !node_counts(c, pod, node) {
                    continue;
                }
                let matching = node.pods.iter().filter(|p| counted_pod(c, pod, p)).count() as i64;
                *count.entry(labels[&c.key].clone()).or_default() += matching;
            }
        }
        state.write(
            STATE_KEY,
            PreFilterState {
                constraints,
                counts,
            },
        );
        Status::success()
    }

    fn add_pod(&self, state: &mut CycleState, pod: &PodInfo, other: &PodInfo, node: &NodeInfo) {
        if let Some(s) = state.read_mut::<PreFilterState>(STATE_KEY) {
            s.update(pod, other, node, 1);
        }
    }

    fn remove_pod(&self, state: &mut CycleState, pod: &PodInfo, other: &PodInfo, node: &NodeInfo) {
        if let Some(s) = state.read_mut::<PreFilterState>(STATE_KEY) {
            s.update(pod, other, node, -1);
        }
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(STATE_KEY) else {
            return Status::success();
        };
        let labels: &BTreeMap<String, String> = node.labels();
        for (c, counts) in s.constraints.iter().zip(&s.counts) {
            let Some(value) = labels.get(&c.key) else {
                return Status::new(
                    Code::UnschedulableAndUnresolvable,
                    self.name(),
                    ERR_MISSING_LABEL,
                );
            };
            let self_match = i64::from(label_selector_matches(Some(&c.selector), pod.labels()));
            let min = if counts.len() < c.min_domains {
                0
            } else {
                counts.values().copied().min().unwrap_or(0)
            };
            let here = counts.get(value).copied().unwrap_or(0);
            if here + self_match - min > c.max_skew {
                return Status::new(Code::Unschedulable, self.name(), ERR_SKEW);
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::plugins::testing::{node, pod_with};
    use serde_json::json;
    use std::sync::Arc;

    fn spread(extra: serde_json::Value) -> PodInfo {
        let mut c = json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                           "labelSelector": {"matchLabels": {"app": "web"}}});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        pod_with(
            "new",
            json!({"app": "web"}),
            json!({"topologySpreadConstraints": [c]}),
        )
    }

    fn verdicts(p: &PodInfo, cache: &mut Cache) -> Vec<(String, bool)> {
        let snap = cache.snapshot();
        let mut state = CycleState::default();
        assert!(PodTopologySpread
            .pre_filter(&mut state, p, &snap)
            .is_success());
        snap.nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    PodTopologySpread.filter(&state, p, n).is_success(),
                )
            })
            .collect()
    }

    fn cluster() -> Cache {
        let mut cache = Cache::default();
        for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            if let Some(n) = node(name, json!({}), json!({"zone": zone})).node() {
                cache.apply_node(n.clone());
            }
        }
        if let Some(n) = node("nozone", json!({}), json!({})).node() {
            cache.apply_node(n.clone());
        }
        cache.assume(
            Arc::new(pod_with("w1", json!({"app": "web"}), json!({}))),
            "a1",
        );
        cache.assume(
            Arc::new(pod_with("other", json!({"app": "db"}), json!({}))),
            "b1",
        );
        cache
    }

    #[test]
    fn max_skew_keeps_zones_balanced() {
        // zone a has 1 web pod, zone b none: a would reach skew 2, b is fine.
        let mut cache = cluster();
        assert_eq!(
            verdicts(&spread(json!({})), &mut cache),
            [
                ("a1".into(), false),
                ("a2".into(), false),
                ("b1".into(), true),
                ("nozone".into(), false)
            ]
        );
        let snap = cache.snapshot();
        let mut state = CycleState::default();
        let p = spread(json!({}));
        PodTopologySpread.pre_filter(&mut state, &p, &snap);
        let missing = snap
            .get("nozone")
            .map(|n| PodTopologySpread.filter(&state, &p, n));
        assert_eq!(
            missing.map(|s| s.reasons),
            Some(vec![ERR_MISSING_LABEL.to_string()])
        );
    }

    #[test]
    fn min_domains_treats_missing_domains_as_empty() {
        // With minDomains 3 and only two zones, the global minimum is 0: zone b (0 pods)
        // still fits, zone a (1 pod) does not at maxSkew 1.
        let mut cache = cluster();
        let v = verdicts(&spread(json!({"minDomains": 3})), &mut cache);
        assert_eq!(v[2], ("b1".into(), true));
        assert_eq!(v[0], ("a1".into(), false));
        let mut cache = cluster();
        let v = verdicts(&spread(json!({"maxSkew": 2})), &mut cache);
        assert_eq!(v[0], ("a1".into(), true));
    }
}
