//! DefaultPreemption (upstream's PostFilter plugin): when no node fits a pod, find the
//! node where evicting the fewest, least important lower-priority pods makes room, mark
//! those victims `DisruptionTarget`, delete them and nominate the node for the pod, which
//! is scheduled there once they are gone.
//!
//! Victims are chosen as upstream does: every lower-priority pod of the node is removed
//! (the filters' precomputed state follows through their `remove_pod` extensions), then
//! pods are put back one by one while the pod still fits, most important first — first
//! those whose eviction would violate a PodDisruptionBudget, then the others. Among
//! candidate nodes the winner has the fewest PDB violations, then the least important
//! highest victim, the smallest sum of victim priorities, the fewest victims, and the
//! latest start among its most important victims.

use std::cmp::Reverse;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::Client;
use serde_json::json;

use crate::cache::{NodeInfo, PodInfo, Snapshot};
use crate::framework::{Code, CycleState, FitError, PodChange, Profile};
use crate::plugins::helpers::label_selector_matches;

/// A node and the pods to evict from it.
#[derive(Debug)]
pub struct Candidate {
    pub node: String,
    /// Most important first.
    pub victims: Vec<Arc<PodInfo>>,
    /// Victims whose eviction violates a PodDisruptionBudget.
    pub pdb_violations: usize,
}

/// A pod's start time in nanoseconds; a pod not started yet counts as starting now, as
/// upstream's `GetPodStartTime`.
fn start_time(pod: &PodInfo, now: i128) -> i128 {
    pod.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map_or(now, |t| t.0.as_nanosecond())
}

/// Upstream's `MoreImportantPod` as a sort key: higher priority, then earlier start.
fn importance(pod: &PodInfo, now: i128) -> (Reverse<i32>, i128) {
    (Reverse(pod.priority), start_time(pod, now))
}

impl Candidate {
    /// Upstream's `pickOneNodeForPreemption` criteria as a key, smallest best.
    fn cost(&self, now: i128) -> (usize, i32, i64, usize, Reverse<i128>) {
        let highest = self.victims.iter().map(|v| v.priority).max();
        // Upstream shifts each priority by 2^31 so that sums of negative ones compare.
        let sum = self
            .victims
            .iter()
            .map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1)
            .sum();
        // The earliest start among the most important victims; later is better.
        let earliest = highest.map_or(i128::MIN, |top| {
            self.victims
                .iter()
                .filter(|v| v.priority == top)
                .map(|v| start_time(v, now))
                .min()
                .unwrap_or(i128::MIN)
        });
        (
            self.pdb_violations,
            highest.unwrap_or(i32::MIN),
            sum,
            self.victims.len(),
            Reverse(earliest),
        )
    }
}

/// Whether the pod may preempt at all.
pub fn eligible(pod: &PodInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        != Some("Never")
}

/// The best node to preempt on, if evicting lower-priority pods anywhere would help.
pub fn find_candidate(
    profile: &Profile,
    pod: &PodInfo,
    fit: &FitError,
    snapshot: &Snapshot,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> Option<Candidate> {
    if !eligible(pod) || waits_for_victims(pod, snapshot) {
        return None;
    }
    let mut state = CycleState::default();
    if !profile
        .run_pre_filters(&mut state, pod, snapshot)
        .is_success()
    {
        return None;
    }
    let mut names: Vec<&String> = fit
        .diagnosis
        .node_status
        .iter()
        .filter(|(_, status)| status.code == Code::Unschedulable)
        .map(|(name, _)| name)
        .collect();
    names.sort();
    let now = jiff::Timestamp::now().as_nanosecond();
    let offset = (now.unsigned_abs() % names.len().max(1) as u128) as usize;
    dry_run(&names, offset, |name| {
        let node = snapshot.get(name)?;
        victims_on(profile, &state, pod, node, snapshot, pdbs, now)
    })
    .into_iter()
    .min_by(|a, b| {
        a.cost(now)
            .cmp(&b.cost(now))
            .then_with(|| a.node.cmp(&b.node))
    })
}

/// Upstream's dry runs: the nodes in order from `offset` (wrapping round), until
/// [`candidates_wanted`] candidates are found, one of them violating no budget.
fn dry_run(
    names: &[&String],
    offset: usize,
    mut candidate_on: impl FnMut(&str) -> Option<Candidate>,
) -> Vec<Candidate> {
    let wanted = candidates_wanted(names.len());
    let mut found: Vec<Candidate> = Vec::new();
    let mut without_violations = 0;
    for name in names.iter().cycle().skip(offset).take(names.len()) {
        if let Some(candidate) = candidate_on(name) {
            without_violations += usize::from(candidate.pdb_violations == 0);
            found.push(candidate);
            if without_violations > 0 && found.len() >= wanted {
                break;
            }
        }
    }
    found
}

/// Upstream's DefaultPreemption defaults (`minCandidateNodesPercentage`,
/// `minCandidateNodesAbsolute`): how many candidate nodes to find among `potential`
/// nodes where evicting might help.
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

fn candidates_wanted(potential: usize) -> usize {
    (potential * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
        .max(MIN_CANDIDATE_NODES_ABSOLUTE)
        .min(potential)
}

/// Upstream's rule against preempting twice: a pod nominated to a node where pods of
/// lower priority are still terminating waits for them rather than choosing new victims.
fn waits_for_victims(pod: &PodInfo, snapshot: &Snapshot) -> bool {
    let Some(node) = snapshot
        .nominated
        .node_of(&pod.key)
        .and_then(|name| snapshot.get(name))
    else {
        return false;
    };
    node.pods
        .iter()
        .any(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_some())
}

/// Upstream's `filterPodsWithPDBViolation`: walking the pods in order, each one matching
/// a budget uses up one of its allowed disruptions; a pod for which some budget goes below
/// zero would violate it. Returns (violating, not violating), order kept.
pub fn split_by_pdb_violation(
    pods: Vec<Arc<PodInfo>>,
    pdbs: &[Arc<PodDisruptionBudget>],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = pdbs
        .iter()
        .map(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.disruptions_allowed)
                .unwrap_or(0)
        })
        .collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for pod in pods {
        let mut violated = false;
        let name = pod.pod.metadata.name.as_deref().unwrap_or("");
        // A pod without labels matches no budget.
        if !pod.labels().is_empty() {
            for (pdb, left) in pdbs.iter().zip(allowed.iter_mut()) {
                let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
                // A missing or empty selector matches nothing here, as upstream.
                let empty = selector.is_none_or(|s| {
                    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
                });
                if pdb.metadata.namespace.as_deref() != Some(pod.namespace())
                    || empty
                    || !label_selector_matches(selector, pod.labels())
                {
                    continue;
                }
                // Already counted by the API server's eviction: not a new violation.
                let disrupted = pdb
                    .status
                    .as_ref()
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .is_some_and(|d| d.contains_key(name));
                if disrupted {
                    continue;
                }
                *left -= 1;
                if *left < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(pod);
        } else {
            fine.push(pod);
        }
    }
    (violating, fine)
}

/// A node, and the cycle state, as they would be without the pods a pod may preempt.
pub struct WithoutLower {
    pub node: NodeInfo,
    pub state: CycleState,
    pub lower: Vec<Arc<PodInfo>>,
}

/// The node as it would be without the pods `pod` may preempt, and those pods; `None`
/// if there are none.
pub fn without_lower_priority(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Option<WithoutLower> {
    let lower: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    if lower.is_empty() {
        return None;
    }
    let mut without = node.clone();
    let mut state = state.clone();
    for victim in &lower {
        without.remove_pod(&victim.key);
        profile.run_pod_change(&mut state, pod, PodChange::Removed, victim, &without);
    }
    Some(WithoutLower {
        node: without,
        state,
        lower,
    })
}

/// The fewest, least important lower-priority pods of `node` whose eviction lets the pod
/// fit, or `None` if evicting them all would not.
///
/// Pods nominated to the node with no lower priority count as placed there (upstream's
/// `SelectVictimsOnNode`): a second preemptor does not pick the room a first one waits
/// for.
fn victims_on(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
    snapshot: &Snapshot,
    pdbs: &[Arc<PodDisruptionBudget>],
    now: i128,
) -> Option<Candidate> {
    let WithoutLower {
        node: mut without,
        mut state,
        mut lower,
    } = without_lower_priority(profile, state, pod, node)?;
    let nominated = &snapshot.nominated;
    let fits = |state: &CycleState, node: &NodeInfo| {
        profile
            .run_filters_with_nominated(state, pod, node, nominated)
            .is_success()
    };
    if !fits(&state, &without) {
        return None;
    }
    lower.sort_by_key(|p| importance(p, now));
    let (violating, fine) = split_by_pdb_violation(lower, pdbs);
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    // Most important first, budget-violating ones before the rest: each that can stay,
    // stays.
    for (candidate, violates) in violating
        .into_iter()
        .map(|p| (p, true))
        .chain(fine.into_iter().map(|p| (p, false)))
    {
        without.add_pod(candidate.clone());
        profile.run_pod_change(&mut state, pod, PodChange::Added, &candidate, &without);
        if !fits(&state, &without) {
            without.remove_pod(&candidate.key);
            profile.run_pod_change(&mut state, pod, PodChange::Removed, &candidate, &without);
            pdb_violations += usize::from(violates);
            victims.push(candidate);
        }
    }
    if victims.is_empty() {
        // It fits as the node is: nothing to preempt here.
        return None;
    }
    victims.sort_by_key(|p| importance(p, now));
    Some(Candidate {
        node: node.name.clone(),
        victims,
        pdb_violations,
    })
}

/// Carries out a preemption: the pod is nominated to the node, each victim is marked a
/// disruption target (so its controller can tell why it went) and deleted.
pub async fn preempt(client: &Client, scheduler_name: &str, pod: &PodInfo, candidate: Candidate) {
    let namespace = pod.namespace().to_string();
    let name = pod.pod.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let nominate = json!({"status": {"nominatedNodeName": candidate.node}});
    if let Err(e) = pods
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&nominate))
        .await
    {
        tracing::warn!(pod = %pod.key, error = %e, "could not nominate a node");
    }
    let events = skiff_events::Events::new(client.clone(), scheduler_name);
    for victim in &candidate.victims {
        let victim_ns = victim.namespace().to_string();
        let victim_name = victim.pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &victim_ns);
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": format!("{scheduler_name}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now()).to_string(),
        }]}});
        if let Err(e) = api
            .patch_status(
                &victim_name,
                &PatchParams::default(),
                &Patch::Strategic(condition),
            )
            .await
        {
            tracing::debug!(victim = %victim.key, error = %e, "could not mark the victim");
        }
        // Only the pod that was judged: a replacement with the same name is not a victim.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: victim.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&victim_name, &params).await {
            Ok(_) => {
                tracing::info!(victim = %victim.key, preemptor = %pod.key, node = %candidate.node, "preempted");
                events
                    .normal(
                        victim.pod.as_ref(),
                        "Preempted",
                        format!(
                            "Preempted by pod {} on node {}",
                            pod.pod.metadata.uid.as_deref().unwrap_or_default(),
                            candidate.node
                        ),
                    )
                    .await;
            }
            Err(e) => tracing::warn!(victim = %victim.key, error = %e, "could not preempt"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::plugins::default_profile;
    use crate::plugins::node_resources::NodeResourcesFit;
    use crate::plugins::testing::{node, sized};
    use serde_json::json;

    fn with_priority(name: &str, milli_cpu: i64, priority: i32) -> Arc<PodInfo> {
        let mut pod = sized(name, milli_cpu, 10);
        pod.priority = priority;
        Arc::new(pod)
    }

    #[test]
    fn candidates_wanted_as_upstream_counts_them() {
        // 10% of the nodes where preemption might help, at least 100, at most all.
        assert_eq!(candidates_wanted(3), 3);
        assert_eq!(candidates_wanted(100), 100);
        assert_eq!(candidates_wanted(500), 100);
        assert_eq!(candidates_wanted(5000), 500);
    }

    /// With more nodes than candidates wanted, the dry runs stop at upstream's count,
    /// starting at the offset; with no candidate free of budget violations, every node
    /// is tried.
    #[test]
    fn dry_runs_stop_once_enough_candidates_are_found() {
        let names: Vec<String> = (0..300).map(|i| format!("n{i:03}")).collect();
        let names: Vec<&String> = names.iter().collect();
        let candidate = |node: &str, pdb_violations| Candidate {
            node: node.to_string(),
            victims: Vec::new(),
            pdb_violations,
        };
        let mut tried = Vec::new();
        let found = dry_run(&names, 250, |name| {
            tried.push(name.to_string());
            Some(candidate(name, 0))
        });
        assert_eq!((found.len(), tried.len()), (100, 100));
        assert_eq!((tried[0].as_str(), tried[49].as_str()), ("n250", "n299"));
        assert_eq!(tried[50], "n000", "wraps round");
        let mut tried = 0;
        let found = dry_run(&names, 0, |name| {
            tried += 1;
            Some(candidate(name, 1))
        });
        assert_eq!((found.len(), tried), (300, 300));
    }

    /// At 300 full nodes with one victim each, the candidate returned is one of those
    /// tried, and its one victim is that node's pod.
    #[test]
    fn a_large_cluster_yields_a_consistent_candidate() {
        let mut cache = Cache::default();
        for i in 0..300 {
            let name = format!("n{i:03}");
            if let Some(n) = node(&name, json!({}), json!({})).node() {
                cache.apply_node(n.clone());
            }
            cache.assume(with_priority(&format!("low-{i}"), 4000, 1), &name);
        }
        let mut urgent = sized("urgent", 1000, 10);
        urgent.priority = 10;
        let (profile, snapshot, fit) = unschedulable(&mut cache, &urgent);
        let c = find_candidate(&profile, &urgent, &fit, &snapshot, &[]).expect("a candidate");
        let index: usize = c.node[1..].parse().expect("a node's index");
        let victims: Vec<&str> = c.victims.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(victims, [format!("default/low-{index}")]);
    }

    #[test]
    fn the_fewest_least_important_victims_on_the_cheapest_node() {
        let mut cache = Cache::default();
        for name in ["a", "b"] {
            if let Some(n) = node(name, json!({}), json!({})).node() {
                cache.apply_node(n.clone());
            }
        }
        // On a (4 cpu): the 1-cpu priority-5 pod can stay; both priority-1/2 pods must go.
        cache.assume(with_priority("a-mid", 1000, 5), "a");
        cache.assume(with_priority("a-low1", 1500, 1), "a");
        cache.assume(with_priority("a-low2", 1500, 2), "a");
        // On b: one victim, but a more important one.
        cache.assume(with_priority("b-high", 4000, 8), "b");
        let snapshot = cache.snapshot();
        let profile = default_profile("default-scheduler", NodeResourcesFit::default());
        let mut urgent = sized("urgent", 2500, 10);
        urgent.priority = 10;
        let (mut start, mut seed) = (0, 1);
        let fit = profile
            .schedule(&urgent, &snapshot, &mut start, &mut seed)
            .expect_err("full");
        let candidate =
            find_candidate(&profile, &urgent, &fit, &snapshot, &[]).expect("a candidate");
        assert_eq!(candidate.node, "a");
        let mut victims: Vec<&str> = candidate.victims.iter().map(|v| v.key.as_str()).collect();
        victims.sort();
        assert!(
            victims
                .iter()
                .all(|v| v.ends_with("a-low1") || v.ends_with("a-low2")),
            "{victims:?}"
        );
        assert_eq!(victims.len(), 2);

        // preemptionPolicy: Never never preempts.
        let mut polite = (*with_priority("polite", 2500, 10)).clone();
        let mut pod = (*polite.pod).clone();
        pod.spec
            .get_or_insert_with(Default::default)
            .preemption_policy = Some("Never".into());
        polite.pod = Arc::new(pod);
        assert!(find_candidate(&profile, &polite, &fit, &snapshot, &[]).is_none());
    }

    #[test]
    fn a_second_preemptor_does_not_choose_the_room_a_first_one_waits_for() {
        let mut cache = two_nodes();
        for node in ["a", "b"] {
            for i in 0..4 {
                cache.assume(with_priority(&format!("{node}-low-{i}"), 1000, 1), node);
            }
        }
        let first = with_priority("first", 1000, 10);
        let (profile, snapshot, fit) = unschedulable(&mut cache, &first);
        let chosen = find_candidate(&profile, &first, &fit, &snapshot, &[]).expect("a node");
        cache.nominate(first.clone(), &chosen.node);
        let second = with_priority("second", 1000, 10);
        let (profile, snapshot, fit) = unschedulable(&mut cache, &second);
        let other = find_candidate(&profile, &second, &fit, &snapshot, &[]).expect("a node");
        assert_ne!(other.node, chosen.node);
        assert_eq!(other.victims.len(), 1);
        // While its victim terminates, the first preemptor chooses no new victims.
        let victim = chosen.victims[0].clone();
        let mut terminating = (*victim.pod).clone();
        terminating.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let mut info = PodInfo::new(Arc::new(terminating));
        info.priority = victim.priority;
        cache.assume(Arc::new(info), &chosen.node);
        let (profile, snapshot, fit) = unschedulable(&mut cache, &first);
        assert!(find_candidate(&profile, &first, &fit, &snapshot, &[]).is_none());
    }

    #[test]
    fn a_nominated_pods_room_is_kept_from_pods_of_no_higher_priority() {
        let mut cache = Cache::default();
        if let Some(n) = node("a", json!({}), json!({})).node() {
            cache.apply_node(n.clone());
        }
        cache.assume(with_priority("resident", 1000, 3), "a");
        // The preemptor waits for the 3 CPUs its victims left.
        cache.nominate(with_priority("preemptor", 3000, 4), "a");
        let profile = default_profile("default-scheduler", NodeResourcesFit::default());
        let (mut start, mut seed) = (0, 1);
        let snapshot = cache.snapshot();
        let replacement = with_priority("replacement", 200, 1);
        let fit = profile
            .schedule(&replacement, &snapshot, &mut start, &mut seed)
            .expect_err("the room is the preemptor's");
        assert_eq!(fit.diagnosis.node_status["a"].reasons, ["Insufficient cpu"]);
        // The nominated pod itself, and a pod of higher priority, do fit.
        let preemptor = with_priority("preemptor", 3000, 4);
        assert!(profile
            .schedule(&preemptor, &snapshot, &mut start, &mut seed)
            .is_ok());
        let urgent = with_priority("urgent", 200, 9);
        assert!(profile
            .schedule(&urgent, &snapshot, &mut start, &mut seed)
            .is_ok());
        // Placed, the preemptor's nomination is gone.
        cache.assume(preemptor, "a");
        assert!(cache.snapshot().nominated.on("a").is_empty());
    }

    fn labelled(
        name: &str,
        labels: serde_json::Value,
        milli_cpu: i64,
        priority: i32,
    ) -> Arc<PodInfo> {
        let base = sized(name, milli_cpu, 10);
        let mut pod = (*base.pod).clone();
        pod.metadata.labels = serde_json::from_value(labels).expect("labels");
        let mut info = PodInfo::new(Arc::new(pod));
        info.priority = priority;
        Arc::new(info)
    }

    fn pdb(name: &str, selector: serde_json::Value, allowed: i32) -> Arc<PodDisruptionBudget> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"selector": selector},
                "status": {"disruptionsAllowed": allowed, "currentHealthy": 1,
                           "desiredHealthy": 1, "expectedPods": 1}
            }))
            .expect("pdb"),
        )
    }

    fn two_nodes() -> Cache {
        let mut cache = Cache::default();
        for name in ["a", "b"] {
            if let Some(n) = node(name, json!({}), json!({"kubernetes.io/hostname": name})).node() {
                cache.apply_node(n.clone());
            }
        }
        cache
    }

    /// The default profile, the cache's snapshot and the pod's failure to fit there.
    fn unschedulable(cache: &mut Cache, pod: &PodInfo) -> (Profile, Arc<Snapshot>, FitError) {
        let snapshot = cache.snapshot();
        let profile = default_profile("default-scheduler", NodeResourcesFit::default());
        let (mut start, mut seed) = (0, 1);
        let fit = profile
            .schedule(pod, &snapshot, &mut start, &mut seed)
            .expect_err("no node fits");
        (profile, snapshot, *fit)
    }

    #[test]
    fn budgets_are_used_up_in_order_and_empty_selectors_match_nothing() {
        let pods = vec![
            labelled("p1", json!({"app": "db"}), 100, 1),
            labelled("p2", json!({"app": "db"}), 100, 1),
            labelled("p3", json!({"app": "web"}), 100, 1),
            labelled("p4", json!({}), 100, 1),
        ];
        let pdbs = [
            pdb("db", json!({"matchLabels": {"app": "db"}}), 1),
            pdb("everything", json!({}), 0),
        ];
        let (violating, fine) = split_by_pdb_violation(pods, &pdbs);
        let names = |v: &[Arc<PodInfo>]| v.iter().map(|p| p.key.clone()).collect::<Vec<_>>();
        assert_eq!(names(&violating), ["default/p2"]);
        assert_eq!(names(&fine), ["default/p1", "default/p3", "default/p4"]);
        // A pod the API server already counted as disrupted uses no budget.
        let mut counted = (*pdbs[0]).clone();
        if let Some(s) = counted.status.as_mut() {
            s.disrupted_pods = Some(
                [(
                    "p1".to_string(),
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
                )]
                .into(),
            );
        }
        let (violating, _) = split_by_pdb_violation(
            vec![
                labelled("p1", json!({"app": "db"}), 100, 1),
                labelled("p2", json!({"app": "db"}), 100, 1),
            ],
            &[Arc::new(counted)],
        );
        assert!(violating.is_empty());
    }

    #[test]
    fn the_node_whose_victims_break_no_budget_wins() {
        let mut cache = two_nodes();
        // Without budgets, a (victim priority 1) beats b (victim priority 5).
        cache.assume(labelled("guarded", json!({"app": "db"}), 4000, 1), "a");
        cache.assume(labelled("free", json!({"app": "batch"}), 4000, 5), "b");
        let urgent = labelled("urgent", json!({}), 2000, 10);
        let (profile, snapshot, fit) = unschedulable(&mut cache, &urgent);
        let pick = |pdbs: &[Arc<PodDisruptionBudget>]| {
            find_candidate(&profile, &urgent, &fit, &snapshot, pdbs).expect("a candidate")
        };
        assert_eq!(pick(&[]).node, "a");
        let guarded = pick(&[pdb("db", json!({"matchLabels": {"app": "db"}}), 0)]);
        assert_eq!((guarded.node.as_str(), guarded.pdb_violations), ("b", 0));
        // If every node breaks a budget, the other criteria decide again.
        let both = pick(&[
            pdb("db", json!({"matchLabels": {"app": "db"}}), 0),
            pdb("batch", json!({"matchLabels": {"app": "batch"}}), 0),
        ]);
        assert_eq!((both.node.as_str(), both.pdb_violations), ("a", 1));
    }

    #[test]
    fn budget_violating_victims_are_reprieved_first() {
        let mut cache = two_nodes();
        // On a, evicting either 2-cpu pod makes room; the guarded one is more important
        // to keep, so the unguarded one goes even though its priority is higher.
        cache.assume(labelled("guarded", json!({"app": "db"}), 2000, 1), "a");
        cache.assume(labelled("plain", json!({"app": "web"}), 2000, 2), "a");
        cache.assume(labelled("big", json!({}), 4000, 9), "b");
        let urgent = labelled("urgent", json!({}), 2000, 10);
        let (profile, snapshot, fit) = unschedulable(&mut cache, &urgent);
        let pdbs = [pdb("db", json!({"matchLabels": {"app": "db"}}), 0)];
        let c = find_candidate(&profile, &urgent, &fit, &snapshot, &pdbs).expect("a candidate");
        let victims: Vec<&str> = c.victims.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(
            (c.node.as_str(), victims, c.pdb_violations),
            ("a", vec!["default/plain"], 0)
        );
        // Without the budget the lower-priority pod goes.
        let c = find_candidate(&profile, &urgent, &fit, &snapshot, &[]).expect("a candidate");
        assert_eq!(c.victims[0].key, "default/guarded");
    }

    #[test]
    fn evicting_a_pod_whose_anti_affinity_rejects_the_preemptor() {
        let mut cache = two_nodes();
        let term = json!({"labelSelector": {"matchLabels": {"app": "web"}},
                          "topologyKey": "kubernetes.io/hostname"});
        // a: a small low-priority pod that refuses "web" neighbours; b: a big pod that
        // leaves no room for the preemptor and outranks the one on a.
        let mut loner = (*labelled("loner", json!({"app": "loner"}), 100, 1)).clone();
        let mut pod = (*loner.pod).clone();
        pod.spec.get_or_insert_with(Default::default).affinity = Some(
            serde_json::from_value(json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [term]}}))
            .expect("affinity"),
        );
        loner = PodInfo {
            priority: 1,
            ..PodInfo::new(Arc::new(pod))
        };
        cache.assume(Arc::new(loner), "a");
        cache.assume(labelled("big", json!({}), 4000, 5), "b");
        let web = labelled("web", json!({"app": "web"}), 1000, 10);
        let (profile, snapshot, fit) = unschedulable(&mut cache, &web);
        let c = find_candidate(&profile, &web, &fit, &snapshot, &[]).expect("a candidate");
        let victims: Vec<&str> = c.victims.iter().map(|v| v.key.as_str()).collect();
        assert_eq!((c.node.as_str(), victims), ("a", vec!["default/loner"]));
    }
}
