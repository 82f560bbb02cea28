//! PodTopologySpread. The filter holds `whenUnsatisfiable: DoNotSchedule` constraints
//! with `maxSkew`, `minDomains`, `matchLabelKeys`, `nodeAffinityPolicy` (default Honor)
//! and `nodeTaintsPolicy` (default Ignore). The score prefers the nodes whose domains
//! have fewest matching pods under `ScheduleAnyway` constraints, or, for a pod with no
//! constraints at all, under upstream's system defaults: at most 3 apart per node and 5
//! per zone among the pods its Services and controller select.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeSelector, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::helpers::{label_selector_matches, tolerated_by_any};
use super::simple::matches_required_node_affinity;
use super::tally::{Tallies, Total};

use crate::cache::{NodeInfo, PodInfo, SelectingKind, Selectors, Snapshot};
use crate::framework::{Code, CycleState, Plugin, Status, MAX_NODE_SCORE};

pub const ERR_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const ERR_SKEW: &str = "node(s) didn't match pod topology spread constraints";

const STATE_KEY: &str = "PreFilterPodTopologySpread";

#[derive(Clone, PartialEq)]
struct Constraint {
    key: String,
    max_skew: i64,
    min_domains: usize,
    selector: LabelSelector,
    honor_affinity: bool,
    honor_taints: bool,
}

/// One topology domain of a constraint: the matching pods in it, and how many of its
/// nodes count (a domain lasts as long as one node of it does, even with no pods).
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Domain {
    pods: i64,
    nodes: usize,
}

/// Per constraint: domain value → its counts.
type DomainCounts = Vec<HashMap<String, Domain>>;

#[derive(Clone)]
struct PreFilterState {
    constraints: Vec<Constraint>,
    /// Shared with the plugin's kept totals; copied only if a cycle changes it (nominated pods,
    /// preemption's simulations).
    counts: Arc<DomainCounts>,
    /// Per constraint: the fewest matching pods in a domain (0 while there are fewer
    /// domains than `minDomains`).
    min: Vec<i64>,
    /// Per constraint: 1 if the incoming pod matches its own selector.
    self_match: Vec<i64>,
}

fn declared(pod: &PodInfo) -> &[TopologySpreadConstraint] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or(&[])
}

/// The pod's constraints with this `whenUnsatisfiable`.
fn constraints_of(pod: &PodInfo, when_unsatisfiable: &str) -> Vec<Constraint> {
    declared(pod)
        .iter()
        .filter(|c| c.when_unsatisfiable == when_unsatisfiable)
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
    /// `counts` holds a map per constraint once a node was counted (every node adds a
    /// part per constraint); with no node, nothing is filtered.
    fn new(constraints: Vec<Constraint>, pod: &PodInfo, counts: Arc<DomainCounts>) -> Self {
        let self_match = constraints
            .iter()
            .map(|c| i64::from(label_selector_matches(Some(&c.selector), pod.labels())))
            .collect();
        let mut state = PreFilterState {
            min: vec![0; constraints.len()],
            constraints,
            counts,
            self_match,
        };
        state.find_minimums();
        state
    }

    fn find_minimums(&mut self) {
        for ((c, domains), min) in self
            .constraints
            .iter()
            .zip(self.counts.iter())
            .zip(&mut self.min)
        {
            *min = if domains.len() < c.min_domains {
                0
            } else {
                domains.values().map(|d| d.pods).min().unwrap_or(0)
            };
        }
    }

    /// Counts `other` on `node` in (`delta` 1) or out (`delta` -1), as pre_filter would.
    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        let labels = node.labels();
        if !self.constraints.iter().all(|c| labels.contains_key(&c.key)) {
            return;
        }
        let counts = Arc::make_mut(&mut self.counts);
        for (c, domains) in self.constraints.iter().zip(counts.iter_mut()) {
            if node_counts(c, pod, node) && counted_pod(c, pod, other) {
                domains.entry(labels[&c.key].clone()).or_default().pods += delta;
            }
        }
        self.find_minimums();
    }
}

/// Everything of the incoming pod that decides how the nodes count for its
/// `DoNotSchedule` constraints: pods alike in these get the same counts.
#[derive(PartialEq)]
struct CountKey {
    namespace: String,
    constraints: Vec<Constraint>,
    node_selector: Option<BTreeMap<String, String>>,
    required_node_affinity: Option<NodeSelector>,
    tolerations: Option<Vec<Toleration>>,
}

impl CountKey {
    fn of(pod: &PodInfo, constraints: &[Constraint]) -> CountKey {
        let spec = pod.pod.spec.as_ref();
        CountKey {
            namespace: pod.namespace().to_string(),
            constraints: constraints.to_vec(),
            node_selector: spec.and_then(|s| s.node_selector.clone()),
            required_node_affinity: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|na| {
                    na.required_during_scheduling_ignored_during_execution
                        .clone()
                }),
            tolerations: spec.and_then(|s| s.tolerations.clone()),
        }
    }
}

/// What `node` adds to each of `constraints`' domains, as upstream counts it: only a
/// node with every constraint's topology key, and for each constraint only if the
/// node passes its node inclusion policies.
fn count_node(
    constraints: &[Constraint],
    pod: &PodInfo,
    node: &NodeInfo,
) -> Vec<Option<(String, i64)>> {
    let labels = node.labels();
    let with_every_key = constraints.iter().all(|c| labels.contains_key(&c.key));
    constraints
        .iter()
        .map(|c| {
            if !with_every_key || !node_counts(c, pod, node) {
                return None;
            }
            let domain = labels.get(&c.key)?.clone();
            Some((domain, matching_pods(c, pod, node)))
        })
        .collect()
}

impl Total for DomainCounts {
    /// Per constraint, the node's domain and its matching pods, or `None` where the
    /// node does not count.
    type Part = Vec<Option<(String, i64)>>;

    fn add(&mut self, part: &Self::Part, sign: i64) {
        if self.len() < part.len() {
            self.resize_with(part.len(), HashMap::new);
        }
        for (domains, entry) in self.iter_mut().zip(part) {
            let Some((value, pods)) = entry else {
                continue;
            };
            let domain = domains.entry(value.clone()).or_default();
            domain.pods += sign * pods;
            domain.nodes = domain.nodes.saturating_add_signed(sign as isize);
            if domain.nodes == 0 {
                domains.remove(value);
            }
        }
    }
}

#[derive(Default)]
pub struct PodTopologySpread {
    /// Domain counts kept between cycles (see [`Tallies`]).
    counts: Tallies<CountKey, DomainCounts>,
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Status {
        let constraints = constraints_of(pod, "DoNotSchedule");
        if constraints.is_empty() {
            return Status::success();
        }
        let counts = self
            .counts
            .total(CountKey::of(pod, &constraints), &snapshot.nodes, |node| {
                count_node(&constraints, pod, node)
            });
        state.write(STATE_KEY, PreFilterState::new(constraints, pod, counts));
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

    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        feasible: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) {
        if let Some(s) = Self::pre_score_state(pod, feasible, snapshot) {
            state.write(SCORE_KEY, s);
        }
    }

    /// Each constraint adds `matching pods × its weight + (maxSkew − 1)`: fewer is better.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        let Some(s) = state.read::<PreScoreState>(SCORE_KEY) else {
            return 0;
        };
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = node.labels().get(&c.key) else {
                continue;
            };
            let count = if c.key == HOSTNAME {
                matching_pods(c, pod, node)
            } else {
                s.counts.get(&(i, value.clone())).copied().unwrap_or(0)
            };
            score += count as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    /// Upstream's normalisation: the lowest raw score gets the most, ignored nodes none.
    fn normalize(&self, state: &CycleState, scores: &mut [i64]) {
        let Some(s) = state.read::<PreScoreState>(SCORE_KEY) else {
            return;
        };
        let counted = || {
            scores
                .iter()
                .zip(&s.ignored)
                .filter(|(_, ignored)| !**ignored)
                .map(|(score, _)| *score)
        };
        let min = counted().min().unwrap_or(0);
        let max = counted().max().unwrap_or(0);
        for (score, ignored) in scores.iter_mut().zip(&s.ignored) {
            *score = if *ignored {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *score) / max
            };
        }
    }

    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(STATE_KEY) else {
            return Status::success();
        };
        let labels: &BTreeMap<String, String> = node.labels();
        for (i, (c, domains)) in s.constraints.iter().zip(s.counts.iter()).enumerate() {
            let Some(value) = labels.get(&c.key) else {
                return Status::new(
                    Code::UnschedulableAndUnresolvable,
                    self.name(),
                    ERR_MISSING_LABEL,
                );
            };
            let here = domains.get(value).map_or(0, |d| d.pods);
            if here + s.self_match[i] - s.min[i] > c.max_skew {
                return Status::new(Code::Unschedulable, self.name(), ERR_SKEW);
            }
        }
        Status::success()
    }
}

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";
/// Upstream's system default constraints: (topology key, maxSkew), both ScheduleAnyway.
const SYSTEM_DEFAULTS: [(&str, i64); 2] = [(HOSTNAME, 3), (ZONE, 5)];
const SCORE_KEY: &str = "PreScorePodTopologySpread";

/// Upstream's `DefaultSelector`: the pods that the Services selecting this pod select,
/// narrowed by its controller's selector (ReplicationController, ReplicaSet or
/// StatefulSet). `None` when nothing selects it.
fn default_selector(pod: &PodInfo, selectors: &Selectors) -> Option<LabelSelector> {
    let namespace = pod.namespace();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    let mut expressions: Vec<LabelSelectorRequirement> = Vec::new();
    for service in selectors.in_namespace(SelectingKind::Service, namespace) {
        if label_selector_matches(Some(service), pod.labels()) {
            labels.extend(service.match_labels.clone().unwrap_or_default());
        }
    }
    let owner = pod
        .pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if let Some(owner) = owner {
        let kind = match (owner.api_version.as_str(), owner.kind.as_str()) {
            ("v1", "ReplicationController") => Some(SelectingKind::ReplicationController),
            ("apps/v1", "ReplicaSet") => Some(SelectingKind::ReplicaSet),
            ("apps/v1", "StatefulSet") => Some(SelectingKind::StatefulSet),
            _ => None,
        };
        let key = format!("{namespace}/{}", owner.name);
        if let Some(selector) = kind.and_then(|k| selectors.get(k, &key)) {
            // Added as requirements, so that a value differing from a Service's still
            // narrows rather than replaces.
            for (k, v) in selector.match_labels.iter().flatten() {
                expressions.push(LabelSelectorRequirement {
                    key: k.clone(),
                    operator: "In".into(),
                    values: Some(vec![v.clone()]),
                });
            }
            expressions.extend(selector.match_expressions.clone().unwrap_or_default());
        }
    }
    (!labels.is_empty() || !expressions.is_empty()).then(|| LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!expressions.is_empty()).then_some(expressions),
    })
}

/// The constraints the score weighs: the pod's `ScheduleAnyway` ones, or the system
/// defaults for a pod that declares none at all. The flag says whether they are the
/// pod's own (then a node without every topology key is ignored).
fn soft_constraints(pod: &PodInfo, snapshot: &Snapshot) -> (Vec<Constraint>, bool) {
    if !declared(pod).is_empty() {
        return (constraints_of(pod, "ScheduleAnyway"), true);
    }
    let Some(selector) = default_selector(pod, &snapshot.selectors) else {
        return (Vec::new(), false);
    };
    let defaults = SYSTEM_DEFAULTS
        .iter()
        .map(|(key, max_skew)| Constraint {
            key: key.to_string(),
            max_skew: *max_skew,
            min_domains: 1,
            selector: selector.clone(),
            honor_affinity: true,
            honor_taints: false,
        })
        .collect();
    (defaults, false)
}

#[derive(Clone)]
struct PreScoreState {
    constraints: Vec<Constraint>,
    /// Per feasible node (in order): left out of scoring for lacking a topology key.
    ignored: Vec<bool>,
    /// (constraint, domain value) → matching pods; hostname domains are counted per node.
    counts: HashMap<(usize, String), i64>,
    /// Per constraint: ln(number of domains + 2), so that a spread over many domains
    /// weighs more than one over few.
    weights: Vec<f64>,
}

fn has_every_key(constraints: &[Constraint], node: &NodeInfo) -> bool {
    constraints
        .iter()
        .all(|c| node.labels().contains_key(&c.key))
}

fn matching_pods(c: &Constraint, pod: &PodInfo, node: &NodeInfo) -> i64 {
    node.pods.iter().filter(|p| counted_pod(c, pod, p)).count() as i64
}

impl PodTopologySpread {
    fn pre_score_state(
        pod: &PodInfo,
        feasible: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Option<PreScoreState> {
        let (constraints, own) = soft_constraints(pod, snapshot);
        if constraints.is_empty() {
            return None;
        }
        let ignored: Vec<bool> = feasible
            .iter()
            .map(|n| own && !has_every_key(&constraints, n))
            .collect();
        let mut counts: HashMap<(usize, String), i64> = HashMap::new();
        for node in feasible
            .iter()
            .zip(&ignored)
            .filter(|(_, i)| !**i)
            .map(|(n, _)| n)
        {
            for (i, c) in constraints.iter().enumerate() {
                if c.key == HOSTNAME {
                    continue;
                }
                if let Some(value) = node.labels().get(&c.key) {
                    counts.insert((i, value.clone()), 0);
                }
            }
        }
        let scored = ignored.iter().filter(|i| !**i).count();
        let weights = constraints
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let domains = if c.key == HOSTNAME {
                    scored
                } else {
                    counts.keys().filter(|(j, _)| *j == i).count()
                };
                ((domains + 2) as f64).ln()
            })
            .collect();
        for node in &snapshot.nodes {
            if own && !has_every_key(&constraints, node) {
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                let Some(value) = node.labels().get(&c.key) else {
                    continue;
                };
                if c.key == HOSTNAME || !node_counts(c, pod, node) {
                    continue;
                }
                if let Some(count) = counts.get_mut(&(i, value.clone())) {
                    *count += matching_pods(c, pod, node);
                }
            }
        }
        Some(PreScoreState {
            constraints,
            ignored,
            counts,
            weights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::plugins::testing::{node, pod_with};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
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
        assert!(PodTopologySpread::default()
            .pre_filter(&mut state, p, &snap)
            .is_success());
        snap.nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    PodTopologySpread::default()
                        .filter(&state, p, n)
                        .is_success(),
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

    /// The counts one plugin keeps across cycles equal a fresh plugin's recount after
    /// every kind of change: pods placed and removed, nodes added, relabelled (moving
    /// domains) and removed, and another pod kind counted in between.
    #[test]
    fn kept_counts_equal_a_recount_after_each_change() {
        fn counts(plugin: &PodTopologySpread, p: &PodInfo, cache: &mut Cache) -> DomainCounts {
            let mut state = CycleState::default();
            assert!(plugin
                .pre_filter(&mut state, p, &cache.snapshot())
                .is_success());
            let s = state.read::<PreFilterState>(STATE_KEY).expect("state");
            (*s.counts).clone()
        }
        let kept = PodTopologySpread::default();
        let web = spread(json!({}));
        let db = spread(json!({"labelSelector": {"matchLabels": {"app": "db"}}}));
        let mut cache = cluster();
        let check = |cache: &mut Cache, zone_pods: &[(&str, i64, usize)]| {
            let expected: HashMap<String, Domain> = zone_pods
                .iter()
                .map(|(zone, pods, nodes)| {
                    (
                        zone.to_string(),
                        Domain {
                            pods: *pods,
                            nodes: *nodes,
                        },
                    )
                })
                .collect();
            assert_eq!(counts(&kept, &web, cache), vec![expected]);
            assert_eq!(
                counts(&kept, &web, cache),
                counts(&PodTopologySpread::default(), &web, cache)
            );
            assert_eq!(
                counts(&kept, &db, cache),
                counts(&PodTopologySpread::default(), &db, cache)
            );
        };
        check(&mut cache, &[("a", 1, 2), ("b", 0, 1)]);
        cache.assume(
            Arc::new(pod_with("w2", json!({"app": "web"}), json!({}))),
            "b1",
        );
        check(&mut cache, &[("a", 1, 2), ("b", 1, 1)]);
        if let Some(n) = node("c1", json!({}), json!({"zone": "c"})).node() {
            cache.apply_node(n.clone());
        }
        check(&mut cache, &[("a", 1, 2), ("b", 1, 1), ("c", 0, 1)]);
        // a1 and its web pod move to zone c.
        if let Some(n) = node("a1", json!({}), json!({"zone": "c"})).node() {
            cache.apply_node(n.clone());
        }
        check(&mut cache, &[("a", 0, 1), ("b", 1, 1), ("c", 1, 2)]);
        cache.forget("default/w2");
        cache.remove_node("a2");
        check(&mut cache, &[("b", 0, 1), ("c", 1, 2)]);
    }

    #[test]
    fn no_node_with_the_key_refuses_every_node() {
        let mut cache = Cache::default();
        if let Some(n) = node("nozone", json!({}), json!({})).node() {
            cache.apply_node(n.clone());
        }
        assert_eq!(
            verdicts(&spread(json!({})), &mut cache),
            [("nozone".into(), false)]
        );
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
        PodTopologySpread::default().pre_filter(&mut state, &p, &snap);
        let missing = snap
            .get("nozone")
            .map(|n| PodTopologySpread::default().filter(&state, &p, n));
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

    fn normalized_scores(p: &PodInfo, cache: &mut Cache) -> Vec<(String, i64)> {
        let snap = cache.snapshot();
        let mut state = CycleState::default();
        PodTopologySpread::default().pre_score(&mut state, p, &snap.nodes, &snap);
        let mut scores: Vec<i64> = snap
            .nodes
            .iter()
            .map(|n| PodTopologySpread::default().score(&state, p, n, &snap))
            .collect();
        PodTopologySpread::default().normalize(&state, &mut scores);
        snap.nodes
            .iter()
            .map(|n| n.name.clone())
            .zip(scores)
            .collect()
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_zone_and_ignores_unlabelled_nodes() {
        let mut cache = cluster();
        let p = spread(json!({"whenUnsatisfiable": "ScheduleAnyway"}));
        assert_eq!(
            normalized_scores(&p, &mut cache),
            [
                ("a1".into(), 0),
                ("a2".into(), 0),
                ("b1".into(), 100),
                ("nozone".into(), 0)
            ]
        );
    }

    /// Nodes labelled as kubelets label them, three web pods' siblings placed.
    fn labelled_cluster() -> Cache {
        let mut cache = Cache::default();
        for (name, zone) in [
            ("a1", Some("a")),
            ("a2", Some("a")),
            ("b1", Some("b")),
            ("nozone", None),
        ] {
            let mut labels = json!({"kubernetes.io/hostname": name});
            if let Some(zone) = zone {
                labels[ZONE] = json!(zone);
            }
            if let Some(n) = node(name, json!({}), labels).node() {
                cache.apply_node(n.clone());
            }
        }
        cache.assume(
            Arc::new(pod_with("w1", json!({"app": "web"}), json!({}))),
            "a1",
        );
        cache
    }

    fn owned_by_replica_set(name: &str) -> PodInfo {
        let mut pod = (*pod_with(
            name,
            json!({"app": "web", "pod-template-hash": "x"}),
            json!({}),
        )
        .pod)
            .clone();
        pod.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-x", "uid": "u", "controller": true
        }))
        .expect("owner")]);
        PodInfo::new(Arc::new(pod))
    }

    #[test]
    fn system_defaults_spread_a_replica_sets_pods_by_node_then_zone() {
        let mut cache = labelled_cluster();
        let p = owned_by_replica_set("new");
        // Nothing selects the pod yet: no default constraints, no preference.
        let snap = cache.snapshot();
        let mut state = CycleState::default();
        PodTopologySpread::default().pre_score(&mut state, &p, &snap.nodes, &snap);
        assert!(state.read::<PreScoreState>(SCORE_KEY).is_none());

        cache.apply_selector(
            SelectingKind::ReplicaSet,
            "default/web-x",
            Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            }),
        );
        // Raw: a1 = 1·ln 6 + 2 + 1·ln 4 + 4 ≈ 9, a2 ≈ 7, b1 = 2 + 4 = 6, nozone = 2 (no
        // zone: only the hostname constraint); normalised 100·(9 + 2 − raw)/9.
        assert_eq!(
            normalized_scores(&p, &mut cache),
            [
                ("a1".into(), 22),
                ("a2".into(), 44),
                ("b1".into(), 55),
                ("nozone".into(), 100)
            ]
        );
    }

    #[test]
    fn the_default_selector_joins_services_and_the_controller() {
        let mut cache = labelled_cluster();
        cache.apply_selector(
            SelectingKind::Service,
            "default/web",
            Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            }),
        );
        cache.apply_selector(
            SelectingKind::Service,
            "default/db",
            Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".to_string(), "db".to_string())])),
                ..Default::default()
            }),
        );
        let snap = cache.snapshot();
        let lone = pod_with("lone", json!({"app": "web"}), json!({}));
        let selector = default_selector(&lone, &snap.selectors).expect("a Service selects it");
        assert_eq!(
            selector.match_labels,
            Some(BTreeMap::from([("app".to_string(), "web".to_string())]))
        );
        assert!(selector.match_expressions.is_none());
    }
}
