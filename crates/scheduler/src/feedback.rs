//! What users see: the `PodScheduled` condition and the `FailedScheduling` / `Scheduled`
//! events, with upstream's message forms.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::cache::{PodInfo, Snapshot};
use crate::framework::{Code, FitError, Profile, Status};

pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";
pub const REASON_SCHEDULER_ERROR: &str = "SchedulerError";
pub const ERR_NO_NODES: &str = "no nodes available to schedule pods";
pub const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// `count reason` strings, sorted as strings (so `10 …` sorts before `2 …`, as upstream).
fn histogram<'a>(statuses: impl Iterator<Item = &'a Status>) -> Vec<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in statuses {
        for r in &s.reasons {
            *counts.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut out: Vec<String> = counts
        .into_iter()
        .map(|(r, c)| format!("{c} {r}"))
        .collect();
    out.sort();
    out
}

/// Upstream's `FitError.Error()`.
pub fn fit_error_message(err: &FitError) -> String {
    let mut msg = format!("0/{} nodes are available:", err.num_all_nodes);
    if let Some(pre) = &err.diagnosis.pre_filter_msg {
        msg.push_str(&format!(" {pre}."));
    } else {
        let reasons = histogram(err.diagnosis.node_status.values());
        if !reasons.is_empty() {
            msg.push_str(&format!(" {}.", reasons.join(", ")));
        }
    }
    if let Some(post) = &err.post_filter_msg {
        msg.push(' ');
        msg.push_str(post);
    }
    msg
}

/// What DefaultPreemption reports when it finds no node where evicting lower-priority
/// pods would help. Nodes rejected for unresolvable reasons are "not helpful"; on the
/// others the filters are re-run as if every lower-priority pod were gone.
///
/// Returns `Err(node)` when preemption *would* help on `node` (the caller may preempt).
pub fn preemption_message(
    profile: &Profile,
    pod: &PodInfo,
    err: &FitError,
    snapshot: &Snapshot,
) -> Result<String, String> {
    if !crate::preemption::eligible(pod) {
        return Ok("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    let mut state = crate::framework::CycleState::default();
    let _ = profile.run_pre_filters(&mut state, pod, snapshot);
    let mut statuses: Vec<Status> = Vec::new();
    let mut names: Vec<&String> = err.diagnosis.node_status.keys().collect();
    names.sort();
    for name in names {
        let status = &err.diagnosis.node_status[name];
        if status.code != Code::Unschedulable {
            statuses.push(Status::new(
                Code::UnschedulableAndUnresolvable,
                "",
                PREEMPTION_NOT_HELPFUL,
            ));
            continue;
        }
        let Some(node) = snapshot.get(name) else {
            continue;
        };
        let Some(without) = crate::preemption::without_lower_priority(profile, &state, pod, node)
        else {
            statuses.push(Status::new(
                Code::UnschedulableAndUnresolvable,
                "",
                NO_VICTIMS,
            ));
            continue;
        };
        let again = profile.run_filters(&without.state, pod, &without.node);
        if again.is_success() {
            return Err(name.clone());
        }
        statuses.push(again);
    }
    let inner = FitError {
        num_all_nodes: err.num_all_nodes,
        diagnosis: crate::framework::Diagnosis {
            node_status: statuses
                .into_iter()
                .enumerate()
                .map(|(i, s)| (i.to_string(), s))
                .collect(),
            ..Default::default()
        },
        post_filter_msg: None,
    };
    Ok(format!("preemption: {}", fit_error_message(&inner)))
}

/// Writes events and pod status for one scheduler profile.
#[derive(Clone)]
pub struct Feedback {
    client: Client,
    events: skiff_events::Events,
}

impl Feedback {
    pub fn new(client: Client, scheduler_name: &str) -> Feedback {
        Feedback {
            events: skiff_events::Events::new(client.clone(), scheduler_name),
            client,
        }
    }

    pub async fn scheduled(&self, pod: &Pod, node: &str) {
        let note = format!(
            "Successfully assigned {}/{} to {node}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or("")
        );
        self.events.normal(pod, "Scheduled", note).await;
    }

    /// Event plus `PodScheduled=False` condition (patched only when it changes, as
    /// upstream avoids needless writes).
    pub async fn failed(&self, pod: &Pod, reason: &str, message: &str) {
        self.events
            .warning(pod, "FailedScheduling", message.to_string())
            .await;
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        if current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
        }) {
            return;
        }
        let transition = match current {
            Some(c) if c.status == "False" => {
                c.last_transition_time.as_ref().map(|t| t.0.to_string())
            }
            _ => None,
        }
        .unwrap_or_else(|| {
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_else(|_| jiff::Timestamp::now())
                .to_string()
        });
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": transition,
        }]}});
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.as_deref().unwrap_or("");
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            tracing::warn!(pod = name, error = %e, "could not update PodScheduled condition");
        }
    }
}

/// Reasons grouped by count, for logs.
pub fn summary(err: &FitError) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in err.diagnosis.node_status.values() {
        for r in &s.reasons {
            *out.entry(r.clone()).or_default() += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cache;
    use crate::framework::Diagnosis;
    use crate::plugins::testing::{node, sized};
    use crate::plugins::{default_profile, NodeResourcesFit};
    use serde_json::json;
    use std::sync::Arc;

    fn fit_error(statuses: Vec<(&str, Status)>) -> FitError {
        FitError {
            num_all_nodes: statuses.len(),
            diagnosis: Diagnosis {
                node_status: statuses
                    .into_iter()
                    .map(|(n, s)| (n.to_string(), s))
                    .collect(),
                ..Default::default()
            },
            post_filter_msg: None,
        }
    }

    #[test]
    fn message_form_is_upstreams() {
        let taint = || {
            Status::new(
                Code::UnschedulableAndUnresolvable,
                "TaintToleration",
                "node(s) had untolerated taint(s)",
            )
        };
        let mut err = fit_error(vec![
            (
                "a",
                Status::new(Code::Unschedulable, "NodeResourcesFit", "Insufficient cpu"),
            ),
            ("b", taint()),
            ("c", taint()),
        ]);
        err.post_filter_msg = Some(
            "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
                .into(),
        );
        assert_eq!(
            fit_error_message(&err),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint(s). \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn preemption_messages() {
        let mut cache = Cache::default();
        for name in ["a", "b"] {
            if let Some(n) = node(name, json!({}), json!({})).node() {
                cache.apply_node(n.clone());
            }
        }
        let c = node(
            "c",
            json!({"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}),
            json!({}),
        );
        if let Some(n) = c.node() {
            cache.apply_node(n.clone());
        }
        let snapshot = cache.snapshot();
        let profile = default_profile("default-scheduler", NodeResourcesFit::default());
        let big = sized("big", 8000, 10);
        let mut start = 0;
        let mut seed = 1;
        let err = profile
            .schedule(&big, &snapshot, &mut start, &mut seed)
            .expect_err("does not fit");
        assert_eq!(
            fit_error_message(&err),
            "0/3 nodes are available: 1 node(s) had untolerated taint(s), 2 Insufficient cpu."
        );
        let post = preemption_message(&profile, &big, &err, &snapshot).expect("no preemption");
        assert_eq!(
            post,
            "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
             2 No preemption victims found for incoming pod."
        );

        // A lower-priority pod whose eviction would make room: preemption would help.
        cache.assume(Arc::new(sized("small", 3000, 10)), "a");
        let snapshot = cache.snapshot();
        let mut urgent = sized("urgent", 2000, 10);
        urgent.priority = 10;
        let placed = profile
            .schedule(&urgent, &snapshot, &mut start, &mut seed)
            .expect("b still fits");
        assert_eq!(placed.node, "b");
        cache.assume(Arc::new(sized("other", 3000, 10)), "b");
        let snapshot = cache.snapshot();
        let err = profile
            .schedule(&urgent, &snapshot, &mut start, &mut seed)
            .expect_err("full");
        assert_eq!(
            preemption_message(&profile, &urgent, &err, &snapshot),
            Err("a".to_string())
        );
    }
}
