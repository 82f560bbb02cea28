//! DefaultPreemption (upstream's PostFilter plugin): when no node fits a pod, find the
//! node where evicting the fewest, least important lower-priority pods makes room, mark
//! those victims `DisruptionTarget`, delete them and nominate the node for the pod, which
//! is scheduled there once they are gone.
//!
//! Victims are chosen as upstream does: every lower-priority pod of the node is removed,
//! then the most important are put back one by one while the pod still fits. Among
//! candidate nodes the one with the least important highest victim wins, then the
//! smallest sum of victim priorities, then the fewest victims. PodDisruptionBudgets are
//! not weighed yet.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::Client;
use serde_json::json;

use crate::cache::{NodeInfo, PodInfo, Snapshot};
use crate::framework::{Code, CycleState, FitError, Profile};

/// A node and the pods to evict from it.
#[derive(Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

impl Candidate {
    /// Upstream's ordering of candidates, smallest first.
    fn cost(&self) -> (i32, i64, usize) {
        let highest = self
            .victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN);
        let sum = self.victims.iter().map(|v| i64::from(v.priority)).sum();
        (highest, sum, self.victims.len())
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
) -> Option<Candidate> {
    if !eligible(pod) {
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
    names
        .into_iter()
        .filter_map(|name| snapshot.get(name))
        .filter_map(|node| victims_on(profile, &state, pod, node))
        .min_by_key(Candidate::cost)
}

/// The fewest, least important lower-priority pods of `node` whose eviction lets the pod
/// fit, or `None` if evicting them all would not.
fn victims_on(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Option<Candidate> {
    let (mut without, mut lower) = without_lower_priority(pod, node)?;
    if !profile.run_filters(state, pod, &without).is_success() {
        return None;
    }
    // Most important first: each one that can stay, stays.
    lower.sort_by_key(|p| std::cmp::Reverse(p.priority));
    let mut victims = Vec::new();
    for candidate in lower {
        without.add_pod(candidate.clone());
        if !profile.run_filters(state, pod, &without).is_success() {
            without.remove_pod(&candidate.key);
            victims.push(candidate);
        }
    }
    Some(Candidate {
        node: node.name.clone(),
        victims,
    })
}

/// The node as it would be without the pods `pod` may preempt, and those pods; `None`
/// if there are none.
pub fn without_lower_priority(
    pod: &PodInfo,
    node: &NodeInfo,
) -> Option<(NodeInfo, Vec<Arc<PodInfo>>)> {
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
    for victim in &lower {
        without.remove_pod(&victim.key);
    }
    Some((without, lower))
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
        let candidate = find_candidate(&profile, &urgent, &fit, &snapshot).expect("a candidate");
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
        assert!(find_candidate(&profile, &polite, &fit, &snapshot).is_none());
    }
}
