//! InterPodAffinity: pod affinity and anti-affinity, required (filter) and preferred
//! (score), as upstream's plugin of that name.
//!
//! - Filter: every required affinity term must find a matching pod in the node's domain
//!   of the term's topology key (a pod whose terms match itself may start a group when no
//!   pod matches yet); no required anti-affinity term of the pod may find one; and no
//!   existing pod's required anti-affinity term may match the pod in the node's domain
//!   (symmetry).
//! - Score: per topology domain, the weights of the pod's preferred terms its matching
//!   pods satisfy (anti-affinity subtracts), plus existing pods' preferred terms matching
//!   the pod and their required affinity terms at `hardPodAffinityWeight`; normalised
//!   min–max onto 0..=100.
//!
//! A term's namespaces are its `namespaces` plus those its `namespaceSelector` selects
//! (an empty selector selects all); with neither, the owning pod's namespace.
//! `matchLabelKeys`/`mismatchLabelKeys` narrow the selector with the owner's own values.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::tally::{Tallies, Total};

use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::helpers::label_selector_matches;
use crate::cache::{NamespaceLabels, NodeInfo, PodInfo, Snapshot};
use crate::framework::{ClusterEvent, Code, CycleState, Plugin, Status, MAX_NODE_SCORE};

pub const ERR_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

const PRE_FILTER_KEY: &str = "PreFilterInterPodAffinity";
const PRE_SCORE_KEY: &str = "PreScoreInterPodAffinity";

/// One affinity term, parsed once per pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// `None` (no selector) matches no pod.
    selector: Option<LabelSelector>,
    namespaces: BTreeSet<String>,
    /// `None` selects no namespace; an empty selector selects every namespace.
    namespace_selector: Option<LabelSelector>,
    pub topology_key: String,
    pub weight: i64,
}

impl Term {
    fn new(
        owner_ns: &str,
        owner_labels: &BTreeMap<String, String>,
        t: &PodAffinityTerm,
        weight: i64,
    ) -> Term {
        let mut selector = t.label_selector.clone();
        // Upstream's API server folds these keys into the selector when the pod is
        // created; doing it here as well is harmless (the same requirement twice).
        if let Some(sel) = selector.as_mut() {
            let narrowing = [
                ("In", &t.match_label_keys),
                ("NotIn", &t.mismatch_label_keys),
            ];
            for (operator, keys) in narrowing {
                for key in keys.iter().flatten() {
                    if let Some(value) = owner_labels.get(key) {
                        sel.match_expressions.get_or_insert_with(Vec::new).push(
                            LabelSelectorRequirement {
                                key: key.clone(),
                                operator: operator.into(),
                                values: Some(vec![value.clone()]),
                            },
                        );
                    }
                }
            }
        }
        let mut namespaces: BTreeSet<String> = t.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.insert(owner_ns.to_string());
        }
        Term {
            selector,
            namespaces,
            namespace_selector: t.namespace_selector.clone(),
            topology_key: t.topology_key.clone(),
            weight,
        }
    }

    /// Whether `pod` is one of the pods this term selects.
    pub fn matches(&self, pod: &PodInfo, namespaces: &NamespaceLabels) -> bool {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        let ns = pod.namespace();
        let in_namespace = self.namespaces.contains(ns)
            || self.namespace_selector.as_ref().is_some_and(|sel| {
                label_selector_matches(Some(sel), namespaces.get(ns).unwrap_or(&EMPTY))
            });
        in_namespace && label_selector_matches(self.selector.as_ref(), pod.labels())
    }
}

/// A pod's inter-pod affinity terms (upstream keeps the same on its `PodInfo`).
#[derive(Debug, Clone, Default)]
pub struct AffinityTerms {
    pub required_affinity: Vec<Term>,
    pub required_anti_affinity: Vec<Term>,
    pub preferred_affinity: Vec<Term>,
    pub preferred_anti_affinity: Vec<Term>,
}

impl AffinityTerms {
    /// The pod's terms, or `None` if it has no pod affinity or anti-affinity at all.
    pub fn of(
        namespace: &str,
        labels: &BTreeMap<String, String>,
        affinity: Option<&Affinity>,
    ) -> Option<AffinityTerms> {
        let affinity = affinity?;
        if affinity.pod_affinity.is_none() && affinity.pod_anti_affinity.is_none() {
            return None;
        }
        let parse = |required: Option<&Vec<PodAffinityTerm>>,
                     preferred: Option<&Vec<WeightedPodAffinityTerm>>| {
            let term = |t: &PodAffinityTerm, w: i32| Term::new(namespace, labels, t, i64::from(w));
            let required = required.into_iter().flatten().map(|t| term(t, 1));
            let preferred = preferred
                .into_iter()
                .flatten()
                .map(|w| term(&w.pod_affinity_term, w.weight));
            (required.collect(), preferred.collect())
        };
        let mut out = AffinityTerms::default();
        if let Some(a) = &affinity.pod_affinity {
            (out.required_affinity, out.preferred_affinity) = parse(
                a.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
            );
        }
        if let Some(a) = &affinity.pod_anti_affinity {
            (out.required_anti_affinity, out.preferred_anti_affinity) = parse(
                a.required_during_scheduling_ignored_during_execution
                    .as_ref(),
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref(),
            );
        }
        Some(out)
    }
}

fn terms_of(pod: &PodInfo) -> &AffinityTerms {
    static NONE: AffinityTerms = AffinityTerms {
        required_affinity: Vec::new(),
        required_anti_affinity: Vec::new(),
        preferred_affinity: Vec::new(),
        preferred_anti_affinity: Vec::new(),
    };
    pod.affinity.as_deref().unwrap_or(&NONE)
}

/// Upstream's `podMatchesAllAffinityTerms`: no terms match nothing.
fn matches_all(terms: &[Term], pod: &PodInfo, namespaces: &NamespaceLabels) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches(pod, namespaces))
}

/// Topology key → value → matching pods (or terms); no zeros are kept.
type Counts = HashMap<String, HashMap<String, i64>>;

fn add_count(counts: &mut Counts, key: &str, value: &str, delta: i64) {
    let values = match counts.get_mut(key) {
        Some(values) => values,
        None => counts.entry(key.to_string()).or_default(),
    };
    let count = match values.get_mut(value) {
        Some(count) => count,
        None => values.entry(value.to_string()).or_default(),
    };
    *count += delta;
    // Preemption removes pods, so counts fall as well as rise; zero means absent.
    if *count == 0 {
        values.remove(value);
        if values.is_empty() {
            counts.remove(key);
        }
    }
}

fn bump(counts: &mut Counts, node: &NodeInfo, key: &str, delta: i64) {
    if let Some(value) = node.labels().get(key) {
        add_count(counts, key, value, delta);
    }
}

fn count_in(counts: &Counts, key: &str, value: &str) -> i64 {
    counts
        .get(key)
        .and_then(|values| values.get(value))
        .copied()
        .unwrap_or(0)
}

/// What the filter counts for one incoming pod.
#[derive(Clone, Default)]
struct AffinityCounts {
    /// Pods whose required anti-affinity terms match the incoming pod.
    existing_anti: Counts,
    /// Pods matching all of the incoming pod's required affinity terms.
    affinity: Counts,
    /// Pods matching the incoming pod's required anti-affinity terms.
    anti: Counts,
}

impl AffinityCounts {
    /// Counts `other` on `node` in (`delta` 1) or out (-1) for the incoming `pod`.
    fn count(
        &mut self,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        delta: i64,
        namespaces: &NamespaceLabels,
    ) {
        let mine = terms_of(pod);
        for t in &terms_of(other).required_anti_affinity {
            if t.matches(pod, namespaces) {
                bump(&mut self.existing_anti, node, &t.topology_key, delta);
            }
        }
        if matches_all(&mine.required_affinity, other, namespaces) {
            for t in &mine.required_affinity {
                bump(&mut self.affinity, node, &t.topology_key, delta);
            }
        }
        for t in &mine.required_anti_affinity {
            if t.matches(other, namespaces) {
                bump(&mut self.anti, node, &t.topology_key, delta);
            }
        }
    }

    /// What `node`'s pods count for `pod`: all of them when the pod has required terms
    /// of its own, else only those with terms (whose anti-affinity may refuse it).
    fn of_node(pod: &PodInfo, node: &NodeInfo, namespaces: &NamespaceLabels) -> AffinityCounts {
        let mut counts = AffinityCounts::default();
        let mine = terms_of(pod);
        let incoming =
            !mine.required_affinity.is_empty() || !mine.required_anti_affinity.is_empty();
        if incoming || node.pods_with_required_anti_affinity > 0 {
            for other in node
                .pods
                .iter()
                .filter(|p| incoming || p.affinity.is_some())
            {
                counts.count(pod, other, node, 1, namespaces);
            }
        }
        counts
    }
}

impl Total for AffinityCounts {
    type Part = AffinityCounts;

    fn add(&mut self, part: &AffinityCounts, sign: i64) {
        let pairs = [
            (&mut self.existing_anti, &part.existing_anti),
            (&mut self.affinity, &part.affinity),
            (&mut self.anti, &part.anti),
        ];
        for (total, part) in pairs {
            for (key, values) in part {
                for (value, n) in values {
                    add_count(total, key, value, sign * n);
                }
            }
        }
    }
}

/// Everything of an incoming pod with required terms that decides how the nodes count
/// for it: pods alike in these share one kept total (see [`Tallies`]).
struct CountKey {
    namespace: String,
    labels: BTreeMap<String, String>,
    required_affinity: Vec<Term>,
    required_anti_affinity: Vec<Term>,
    /// Compared by address: the cache copies the namespaces' labels on every change.
    namespaces: Arc<NamespaceLabels>,
}

impl PartialEq for CountKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.namespaces, &other.namespaces)
            && self.namespace == other.namespace
            && self.labels == other.labels
            && self.required_affinity == other.required_affinity
            && self.required_anti_affinity == other.required_anti_affinity
    }
}

#[derive(Clone)]
struct PreFilterState {
    /// Shared with the plugin's kept totals; copied only if a cycle changes it
    /// (nominated pods, preemption's simulations).
    counts: Arc<AffinityCounts>,
    namespaces: Arc<NamespaceLabels>,
}

impl PreFilterState {
    /// Counts `other` on `node` in (`delta` 1) or out (-1) of the incoming pod's state.
    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        Arc::make_mut(&mut self.counts).count(pod, other, node, delta, &self.namespaces);
    }

    fn satisfies_affinity(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        let terms = &terms_of(pod).required_affinity;
        let labels = node.labels();
        let affinity = &self.counts.affinity;
        let mut pods_exist = true;
        for t in terms {
            let Some(value) = labels.get(&t.topology_key) else {
                // Every term's topology key must be on the node.
                return false;
            };
            if count_in(affinity, &t.topology_key, value) <= 0 {
                pods_exist = false;
            }
        }
        // The first pod of a group whose terms select itself may go anywhere, as long as
        // no pod in the cluster matches yet (else it would never start).
        pods_exist || (affinity.is_empty() && matches_all(terms, pod, &self.namespaces))
    }

    fn satisfies_anti_affinity(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        let labels = node.labels();
        let anti = &self.counts.anti;
        anti.is_empty()
            || !terms_of(pod).required_anti_affinity.iter().any(|t| {
                labels
                    .get(&t.topology_key)
                    .is_some_and(|v| count_in(anti, &t.topology_key, v) > 0)
            })
    }

    fn satisfies_existing_anti_affinity(&self, node: &NodeInfo) -> bool {
        let existing = &self.counts.existing_anti;
        existing.is_empty()
            || !node
                .labels()
                .iter()
                .any(|(k, v)| count_in(existing, k, v) > 0)
    }
}

/// Per topology key, per value: the score every node in that domain gets.
#[derive(Clone, Default)]
struct ScoreState {
    topology_score: HashMap<String, HashMap<String, i64>>,
}

impl ScoreState {
    fn add(
        &mut self,
        terms: &[Term],
        sign: i64,
        weight: Option<i64>,
        target: &PodInfo,
        node: &NodeInfo,
        ns: &NamespaceLabels,
    ) {
        for t in terms {
            if !t.matches(target, ns) {
                continue;
            }
            if let Some(value) = node.labels().get(&t.topology_key) {
                *self
                    .topology_score
                    .entry(t.topology_key.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_default() += weight.unwrap_or(t.weight) * sign;
            }
        }
    }
}

/// The plugin, with its `InterPodAffinityArgs`.
#[derive(Debug, Clone)]
pub struct InterPodAffinity {
    /// Weight of existing pods' required affinity terms in scoring (0..=100, default 1).
    pub hard_pod_affinity_weight: i64,
    /// Score only the incoming pod's own preferences.
    pub ignore_preferred_terms_of_existing_pods: bool,
    /// The filter's counts kept between cycles (see [`Tallies`]).
    counts: Tallies<CountKey, AffinityCounts>,
}

impl InterPodAffinity {
    pub fn new(
        hard_pod_affinity_weight: i64,
        ignore_preferred_terms_of_existing_pods: bool,
    ) -> Self {
        InterPodAffinity {
            hard_pod_affinity_weight,
            ignore_preferred_terms_of_existing_pods,
            counts: Tallies::default(),
        }
    }
}

impl Default for InterPodAffinity {
    fn default() -> Self {
        InterPodAffinity::new(1, false)
    }
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn events(&self) -> &'static [ClusterEvent] {
        &[
            ClusterEvent::NodeAdd,
            ClusterEvent::NodeUpdate,
            ClusterEvent::AssignedPodAdd,
            ClusterEvent::AssignedPodUpdate,
            ClusterEvent::AssignedPodDelete,
            ClusterEvent::NamespaceChange,
        ]
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Status {
        let mine = terms_of(pod);
        let namespaces = &snapshot.namespace_labels;
        let counts = if mine.required_affinity.is_empty() && mine.required_anti_affinity.is_empty()
        {
            // Only pods with terms count, usually few: a direct sum is cheaper than a
            // kept total per such pod's labels.
            let mut counts = AffinityCounts::default();
            for node in snapshot
                .nodes
                .iter()
                .filter(|n| n.pods_with_required_anti_affinity > 0)
            {
                counts.add(&AffinityCounts::of_node(pod, node, namespaces), 1);
            }
            Arc::new(counts)
        } else {
            let key = CountKey {
                namespace: pod.namespace().to_string(),
                labels: pod.labels().clone(),
                required_affinity: mine.required_affinity.clone(),
                required_anti_affinity: mine.required_anti_affinity.clone(),
                namespaces: namespaces.clone(),
            };
            self.counts.total(key, &snapshot.nodes, |node| {
                AffinityCounts::of_node(pod, node, namespaces)
            })
        };
        state.write(
            PRE_FILTER_KEY,
            PreFilterState {
                counts,
                namespaces: namespaces.clone(),
            },
        );
        Status::success()
    }

    fn add_pod(&self, state: &mut CycleState, pod: &PodInfo, other: &PodInfo, node: &NodeInfo) {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update(pod, other, node, 1);
        }
    }

    fn remove_pod(&self, state: &mut CycleState, pod: &PodInfo, other: &PodInfo, node: &NodeInfo) {
        if let Some(s) = state.read_mut::<PreFilterState>(PRE_FILTER_KEY) {
            s.update(pod, other, node, -1);
        }
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<PreFilterState>(PRE_FILTER_KEY) else {
            return Status::success();
        };
        if !s.satisfies_affinity(pod, node) {
            // Evicting pods never creates the pods an affinity term asks for.
            return Status::new(
                Code::UnschedulableAndUnresolvable,
                self.name(),
                ERR_AFFINITY,
            );
        }
        if !s.satisfies_anti_affinity(pod, node) {
            return Status::new(Code::Unschedulable, self.name(), ERR_ANTI_AFFINITY);
        }
        if !s.satisfies_existing_anti_affinity(node) {
            return Status::new(Code::Unschedulable, self.name(), ERR_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }

    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _feasible: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) {
        let mine = terms_of(pod);
        let has_preferences =
            !mine.preferred_affinity.is_empty() || !mine.preferred_anti_affinity.is_empty();
        if self.ignore_preferred_terms_of_existing_pods && !has_preferences {
            return;
        }
        let ns = &snapshot.namespace_labels;
        let mut s = ScoreState::default();
        for node in &snapshot.nodes {
            if node.labels().is_empty() || (!has_preferences && node.pods_with_affinity == 0) {
                continue;
            }
            for existing in &node.pods {
                if has_preferences {
                    s.add(&mine.preferred_affinity, 1, None, existing, node, ns);
                    s.add(&mine.preferred_anti_affinity, -1, None, existing, node, ns);
                }
                let Some(theirs) = existing.affinity.as_deref() else {
                    continue;
                };
                if self.hard_pod_affinity_weight > 0 {
                    let weight = Some(self.hard_pod_affinity_weight);
                    s.add(&theirs.required_affinity, 1, weight, pod, node, ns);
                }
                s.add(&theirs.preferred_affinity, 1, None, pod, node, ns);
                s.add(&theirs.preferred_anti_affinity, -1, None, pod, node, ns);
            }
        }
        if !s.topology_score.is_empty() {
            state.write(PRE_SCORE_KEY, s);
        }
    }

    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        let Some(s) = state.read::<ScoreState>(PRE_SCORE_KEY) else {
            return 0;
        };
        let labels = node.labels();
        s.topology_score
            .iter()
            .filter_map(|(key, values)| labels.get(key).and_then(|v| values.get(v)))
            .sum()
    }

    fn normalize(&self, state: &CycleState, scores: &mut [i64]) {
        if state.read::<ScoreState>(PRE_SCORE_KEY).is_none() {
            return;
        }
        let (Some(min), Some(max)) = (scores.iter().min().copied(), scores.iter().max().copied())
        else {
            return;
        };
        for s in scores.iter_mut() {
            *s = if max > min {
                // Upstream computes this in floating point and truncates.
                (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / (max - min) as f64)) as i64
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::plugins::testing::{node, pod_with};
    use serde_json::{json, Value};

    fn pod_in(ns: &str, name: &str, labels: Value, spec: Value) -> PodInfo {
        let mut p = pod_with(name, labels, spec);
        let mut pod = (*p.pod).clone();
        pod.metadata.namespace = Some(ns.into());
        p = PodInfo::new(Arc::new(pod));
        p
    }

    fn term(selector: Value, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": selector}, "topologyKey": key})
    }

    /// n1, n2 in zone a; n3 in zone b; "bare" has no labels but a hostname.
    fn cluster() -> Cache {
        let mut cache = Cache::default();
        for (name, zone) in [
            ("n1", Some("a")),
            ("n2", Some("a")),
            ("n3", Some("b")),
            ("bare", None),
        ] {
            let mut labels = json!({"kubernetes.io/hostname": name});
            if let Some(z) = zone {
                labels["zone"] = json!(z);
            }
            if let Some(n) = node(name, json!({}), labels).node() {
                cache.apply_node(n.clone());
            }
        }
        cache
    }

    fn place(cache: &mut Cache, pod: PodInfo, node: &str) {
        cache.assume(Arc::new(pod), node);
    }

    fn verdicts(cache: &mut Cache, pod: &PodInfo) -> Vec<(String, Option<&'static str>)> {
        verdicts_of(&InterPodAffinity::default(), cache, pod)
    }

    fn verdicts_of(
        plugin: &InterPodAffinity,
        cache: &mut Cache,
        pod: &PodInfo,
    ) -> Vec<(String, Option<&'static str>)> {
        let snap = cache.snapshot();
        let mut state = CycleState::default();
        assert!(plugin.pre_filter(&mut state, pod, &snap).is_success());
        snap.nodes
            .iter()
            .map(|n| {
                let s = plugin.filter(&state, pod, n);
                let reason = match s.reasons.first().map(String::as_str) {
                    None => None,
                    Some(ERR_AFFINITY) => {
                        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
                        Some(ERR_AFFINITY)
                    }
                    Some(ERR_ANTI_AFFINITY) => {
                        assert_eq!(s.code, Code::Unschedulable);
                        Some(ERR_ANTI_AFFINITY)
                    }
                    Some(ERR_EXISTING_ANTI_AFFINITY) => Some(ERR_EXISTING_ANTI_AFFINITY),
                    Some(other) => panic!("unexpected reason {other}"),
                };
                (n.name.clone(), reason)
            })
            .collect()
    }

    fn rejected<'a>(v: &'a [(String, Option<&'static str>)]) -> Vec<(&'a str, &'static str)> {
        v.iter()
            .filter_map(|(n, r)| r.map(|r| (n.as_str(), r)))
            .collect()
    }

    /// One plugin's counts kept across cycles give the verdicts a fresh plugin's
    /// recount gives, after pods are placed and forgotten and a namespace relabelled.
    #[test]
    fn kept_counts_judge_as_a_recount_after_each_change() {
        let kept = InterPodAffinity::default();
        let mut cache = cluster();
        cache.apply_namespace("default", BTreeMap::new());
        let apart = |key: &str, extra: Value| {
            let mut t = term(json!({"app": "web"}), key);
            if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
                t.extend(extra.clone());
            }
            pod_with(
                "new",
                json!({}),
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}}),
            )
        };
        let by_host = apart("kubernetes.io/hostname", json!({}));
        let team_a_zone = apart(
            "zone",
            json!({"namespaceSelector": {"matchLabels": {"team": "a"}}}),
        );
        let check = |cache: &mut Cache, p: &PodInfo, expected: &[&str]| {
            let v = verdicts_of(&kept, cache, p);
            assert_eq!(v, verdicts(cache, p));
            let nodes: Vec<&str> = rejected(&v).into_iter().map(|(n, _)| n).collect();
            assert_eq!(nodes, expected);
        };
        check(&mut cache, &by_host, &[]);
        place(
            &mut cache,
            pod_with("web-1", json!({"app": "web"}), json!({})),
            "n1",
        );
        check(&mut cache, &by_host, &["n1"]);
        place(
            &mut cache,
            pod_with("web-2", json!({"app": "web"}), json!({})),
            "n3",
        );
        check(&mut cache, &by_host, &["n1", "n3"]);
        check(&mut cache, &team_a_zone, &[]);
        cache.forget("default/web-1");
        check(&mut cache, &by_host, &["n3"]);
        cache.apply_namespace("default", [("team".to_string(), "a".to_string())].into());
        check(&mut cache, &team_a_zone, &["n3"]);
        check(&mut cache, &by_host, &["n3"]);
    }

    #[test]
    fn required_anti_affinity_keeps_replicas_apart() {
        let mut cache = cluster();
        place(
            &mut cache,
            pod_with("web-1", json!({"app": "web"}), json!({})),
            "n1",
        );
        let web = pod_with(
            "web-2",
            json!({"app": "web"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term(json!({"app": "web"}), "kubernetes.io/hostname")]}}}),
        );
        assert_eq!(
            rejected(&verdicts(&mut cache, &web)),
            [("n1", ERR_ANTI_AFFINITY)]
        );
        // Across zones instead: the whole zone is taken; a node without the key is not.
        let zonal = pod_with(
            "web-3",
            json!({"app": "web"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term(json!({"app": "web"}), "zone")]}}}),
        );
        assert_eq!(
            rejected(&verdicts(&mut cache, &zonal)),
            [("n1", ERR_ANTI_AFFINITY), ("n2", ERR_ANTI_AFFINITY)]
        );
    }

    #[test]
    fn existing_pods_anti_affinity_is_symmetric() {
        let mut cache = cluster();
        // A pod on n3 that wants no "db" pod in its zone.
        place(
            &mut cache,
            pod_with(
                "loner",
                json!({"app": "loner"}),
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    term(json!({"app": "db"}), "zone")]}}}),
            ),
            "n3",
        );
        let db = pod_with("db", json!({"app": "db"}), json!({}));
        assert_eq!(
            rejected(&verdicts(&mut cache, &db)),
            [("n3", ERR_EXISTING_ANTI_AFFINITY)]
        );
        // A pod it does not select goes anywhere.
        let other = pod_with("web", json!({"app": "web"}), json!({}));
        assert!(rejected(&verdicts(&mut cache, &other)).is_empty());
    }

    #[test]
    fn required_affinity_colocates_and_the_first_pod_may_start_a_group() {
        let mut cache = cluster();
        let follower = |name: &str| {
            pod_with(
                name,
                json!({"app": "web"}),
                json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    term(json!({"app": "cache"}), "zone")]}}}),
            )
        };
        // No cache pod anywhere, and the pod does not match its own term: nowhere.
        let v = verdicts(&mut cache, &follower("w1"));
        assert_eq!(rejected(&v).len(), 4);
        assert!(rejected(&v).iter().all(|(_, r)| *r == ERR_AFFINITY));
        place(
            &mut cache,
            pod_with("cache", json!({"app": "cache"}), json!({})),
            "n2",
        );
        assert_eq!(
            rejected(&verdicts(&mut cache, &follower("w2"))),
            [("bare", ERR_AFFINITY), ("n3", ERR_AFFINITY)]
        );

        // A pod whose term selects itself may go to any node with the key while no pod
        // matches; once one does, only to its domain.
        let mut cache = cluster();
        let selfish = |name: &str| {
            pod_with(
                name,
                json!({"app": "group"}),
                json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    term(json!({"app": "group"}), "zone")]}}}),
            )
        };
        assert_eq!(
            rejected(&verdicts(&mut cache, &selfish("g1"))),
            [("bare", ERR_AFFINITY)]
        );
        place(&mut cache, selfish("g1"), "n3");
        assert_eq!(
            rejected(&verdicts(&mut cache, &selfish("g2"))),
            [
                ("bare", ERR_AFFINITY),
                ("n1", ERR_AFFINITY),
                ("n2", ERR_AFFINITY)
            ]
        );
    }

    #[test]
    fn namespaces_and_namespace_selectors() {
        let mut cache = cluster();
        cache.apply_namespace("default", BTreeMap::new());
        cache.apply_namespace("team-a", [("team".to_string(), "a".to_string())].into());
        cache.apply_namespace("team-b", [("team".to_string(), "b".to_string())].into());
        place(
            &mut cache,
            pod_in("team-a", "a", json!({"app": "web"}), json!({})),
            "n1",
        );
        place(
            &mut cache,
            pod_in("team-b", "b", json!({"app": "web"}), json!({})),
            "n3",
        );
        let anti = |extra: Value| {
            let mut t = term(json!({"app": "web"}), "kubernetes.io/hostname");
            if let (Some(t), Some(extra)) = (t.as_object_mut(), extra.as_object()) {
                t.extend(extra.clone());
            }
            pod_in(
                "team-a",
                "new",
                json!({}),
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}}),
            )
        };
        let nodes = |p: PodInfo, cache: &mut Cache| -> Vec<String> {
            rejected(&verdicts(cache, &p))
                .into_iter()
                .map(|(n, _)| n.to_string())
                .collect()
        };
        // Neither field: the pod's own namespace only.
        assert_eq!(nodes(anti(json!({})), &mut cache), ["n1"]);
        // An explicit list.
        assert_eq!(
            nodes(anti(json!({"namespaces": ["team-b"]})), &mut cache),
            ["n3"]
        );
        // An empty selector: every namespace.
        assert_eq!(
            nodes(anti(json!({"namespaceSelector": {}})), &mut cache),
            ["n1", "n3"]
        );
        // A selector over namespace labels, together with a list.
        assert_eq!(
            nodes(
                anti(json!({"namespaceSelector": {"matchLabels": {"team": "b"}}})),
                &mut cache
            ),
            ["n3"]
        );
        assert_eq!(
            nodes(
                anti(
                    json!({"namespaces": ["team-a"], "namespaceSelector": {"matchLabels": {"team": "b"}}})
                ),
                &mut cache
            ),
            ["n1", "n3"]
        );
    }

    #[test]
    fn match_label_keys_narrow_to_the_owners_values() {
        let mut cache = cluster();
        place(
            &mut cache,
            pod_with("v1", json!({"app": "web", "rev": "1"}), json!({})),
            "n1",
        );
        place(
            &mut cache,
            pod_with("v2", json!({"app": "web", "rev": "2"}), json!({})),
            "n3",
        );
        let with = |field: &str| {
            let mut t = term(json!({"app": "web"}), "kubernetes.io/hostname");
            t[field] = json!(["rev"]);
            pod_with(
                "new",
                json!({"app": "web", "rev": "2"}),
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}}),
            )
        };
        assert_eq!(
            rejected(&verdicts(&mut cache, &with("matchLabelKeys"))),
            [("n3", ERR_ANTI_AFFINITY)]
        );
        assert_eq!(
            rejected(&verdicts(&mut cache, &with("mismatchLabelKeys"))),
            [("n1", ERR_ANTI_AFFINITY)]
        );
    }

    fn scores(cache: &mut Cache, plugin: &InterPodAffinity, pod: &PodInfo) -> Vec<(String, i64)> {
        let snap = cache.snapshot();
        let mut state = CycleState::default();
        plugin.pre_score(&mut state, pod, &snap.nodes, &snap);
        let mut raw: Vec<i64> = snap
            .nodes
            .iter()
            .map(|n| plugin.score(&state, pod, n, &snap))
            .collect();
        plugin.normalize(&state, &mut raw);
        snap.nodes.iter().map(|n| n.name.clone()).zip(raw).collect()
    }

    #[test]
    fn preferred_terms_score_by_weight_and_normalise_min_max() {
        let mut cache = cluster();
        place(
            &mut cache,
            pod_with("cache", json!({"app": "cache"}), json!({})),
            "n1",
        );
        place(
            &mut cache,
            pod_with("noisy", json!({"app": "noisy"}), json!({})),
            "n3",
        );
        let pod = pod_with(
            "web",
            json!({"app": "web"}),
            json!({"affinity": {
                "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "podAffinityTerm": term(json!({"app": "cache"}), "zone")}]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 5, "podAffinityTerm": term(json!({"app": "noisy"}), "kubernetes.io/hostname")}]}}}),
        );
        // Raw: zone a +10 (n1, n2), n3 -5, bare 0 → min -5, max 10.
        assert_eq!(
            scores(&mut cache, &InterPodAffinity::default(), &pod),
            [
                ("bare".into(), 33),
                ("n1".into(), 100),
                ("n2".into(), 100),
                ("n3".into(), 0)
            ]
        );
        // Without any terms anywhere, every node scores 0.
        let plain = pod_with("plain", json!({"app": "web"}), json!({}));
        assert!(scores(&mut cache, &InterPodAffinity::default(), &plain)
            .iter()
            .all(|(_, s)| *s == 0));
    }

    #[test]
    fn existing_pods_terms_score_the_incoming_pod() {
        let mut cache = cluster();
        // On n1: a pod that requires "web" pods in its zone (hard weight applies), on n3 one
        // that prefers no "web" pod on its host.
        place(
            &mut cache,
            pod_with(
                "needs-web",
                json!({}),
                json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    term(json!({"app": "web"}), "zone")]}}}),
            ),
            "n1",
        );
        place(
            &mut cache,
            pod_with(
                "shy",
                json!({}),
                json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 3, "podAffinityTerm": term(json!({"app": "web"}), "kubernetes.io/hostname")}]}}}),
            ),
            "n3",
        );
        let web = pod_with("web", json!({"app": "web"}), json!({}));
        let heavy = InterPodAffinity {
            hard_pod_affinity_weight: 6,
            ..InterPodAffinity::default()
        };
        // Raw: zone a +6, n3 -3, bare 0 → (x+3)/9.
        assert_eq!(
            scores(&mut cache, &heavy, &web),
            [
                ("bare".into(), 33),
                ("n1".into(), 100),
                ("n2".into(), 100),
                ("n3".into(), 0)
            ]
        );
        // hardPodAffinityWeight 0 ignores required terms; ignoring existing pods'
        // preferences leaves nothing to score for a pod without terms.
        let none = InterPodAffinity {
            hard_pod_affinity_weight: 0,
            ..InterPodAffinity::default()
        };
        assert_eq!(scores(&mut cache, &none, &web)[3], ("n3".into(), 0));
        assert_eq!(scores(&mut cache, &none, &web)[1], ("n1".into(), 100));
        let ignoring = InterPodAffinity {
            ignore_preferred_terms_of_existing_pods: true,
            ..InterPodAffinity::default()
        };
        assert!(scores(&mut cache, &ignoring, &web)
            .iter()
            .all(|(_, s)| *s == 0));
    }

    #[test]
    fn add_and_remove_pod_update_the_counts() {
        let mut cache = cluster();
        let blocker = Arc::new(pod_with("web-1", json!({"app": "web"}), json!({})));
        cache.assume(blocker.clone(), "n1");
        let web = pod_with(
            "web-2",
            json!({"app": "web"}),
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                term(json!({"app": "web"}), "kubernetes.io/hostname")]}}}),
        );
        let snap = cache.snapshot();
        let plugin = InterPodAffinity::default();
        let mut state = CycleState::default();
        plugin.pre_filter(&mut state, &web, &snap);
        let n1 = snap.get("n1").expect("n1");
        assert!(!plugin.filter(&state, &web, n1).is_success());
        let mut without = state.clone();
        plugin.remove_pod(&mut without, &web, &blocker, n1);
        assert!(plugin.filter(&without, &web, n1).is_success());
        // The original state is untouched by the copy's change.
        assert!(!plugin.filter(&state, &web, n1).is_success());
        plugin.add_pod(&mut without, &web, &blocker, n1);
        assert!(!plugin.filter(&without, &web, n1).is_success());
    }
}
