//! Pod facts controllers share (active, ready, available) and upstream's ranking of pods
//! to delete first when scaling down (`ActivePodsWithRanks`).

use std::cmp::Ordering;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

/// What a controller calls the pods it makes.
pub enum PodName {
    /// `generateName`: the API server appends a random suffix.
    Generated(String),
    /// A fixed name (a StatefulSet's `<set>-<ordinal>`).
    Fixed(String),
}

/// A pod made from `template` and controlled by `owner`: the template's labels,
/// annotations, finalizers and spec, the owner's controller reference. Callers add what
/// is theirs (revision labels, node affinity, …).
pub fn from_template<K>(
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
    owner: &K,
    name: PodName,
) -> Pod
where
    K: kube::Resource<DynamicType = ()>,
{
    let meta = template.metadata.clone().unwrap_or_default();
    let (name, generate_name) = match name {
        PodName::Generated(prefix) => (None, Some(prefix)),
        PodName::Fixed(name) => (Some(name), None),
    };
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name,
            generate_name,
            namespace: owner.meta().namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![crate::owner::controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Upstream's `DisruptionTarget` condition, set before a controller deletes a pod, so
/// that its owner (a Job's failure policy, say) can tell why it went. Best effort.
pub async fn mark_disruption_target(client: &kube::Client, pod: &Pod, reason: &str, message: &str) {
    use kube::ResourceExt;
    let api: kube::Api<Pod> =
        kube::Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let patch = serde_json::json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": Timestamp::now().to_string(),
    }]}});
    if let Err(e) = api
        .patch_status(
            &pod.name_any(),
            &Default::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await
    {
        tracing::debug!(pod = %pod.name_any(), error = %e, "could not set DisruptionTarget");
    }
}

/// The annotation that lowers or raises a pod's cost of deletion.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Neither finished nor being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The pod's `Ready` condition, if it has one.
pub fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// When the pod became ready, if it is.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let condition = ready_condition(pod)?;
    (condition.status == "True").then(|| condition.last_transition_time.as_ref().map(|t| t.0))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => now.as_second() - since.as_second() >= i64::from(min_ready_seconds),
    }
}

/// How long until a ready pod becomes available, if it is not yet.
pub fn until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<i64> {
    match ready_since(pod) {
        Some(Some(since)) if min_ready_seconds > 0 => {
            let left = i64::from(min_ready_seconds) - (now.as_second() - since.as_second());
            (left > 0).then_some(left)
        }
        _ => None,
    }
}

fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// log2 of the age in nanoseconds, so that pods of about the same age tie (upstream's
/// `LogarithmicScaleDown`); -1 for no age.
fn log_age(time: Timestamp, now: Timestamp) -> i64 {
    let nanos = now.as_nanosecond() - time.as_nanosecond();
    if nanos <= 0 {
        -1
    } else {
        (nanos as f64).log2().floor() as i64
    }
}

/// Compares two times, newer (or missing) first.
fn newer_first(a: Option<Timestamp>, b: Option<Timestamp>, now: Timestamp) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => log_age(a, now).cmp(&log_age(b, now)),
    }
}

/// A pod with its rank: how many related pods share its node.
pub struct Ranked<'a> {
    pub pod: &'a Pod,
    pub rank: usize,
}

/// Upstream's deletion order: the pod to delete first sorts first.
pub fn deletion_order(a: &Ranked, b: &Ranked, now: Timestamp) -> Ordering {
    let (pa, pb) = (a.pod, b.pod);
    // 1. Unassigned before assigned.
    (!node_name(pa).is_empty())
        .cmp(&!node_name(pb).is_empty())
        // 2. Pending < Unknown < Running.
        .then_with(|| phase_rank(pa).cmp(&phase_rank(pb)))
        // 3. Not ready before ready.
        .then_with(|| is_ready(pa).cmp(&is_ready(pb)))
        // 4. Lower deletion cost first.
        .then_with(|| deletion_cost(pa).cmp(&deletion_cost(pb)))
        // 5. Pods doubled up on a node first.
        .then_with(|| b.rank.cmp(&a.rank))
        // 6. Both ready: ready for less time first.
        .then_with(|| match (ready_since(pa), ready_since(pb)) {
            (Some(ta), Some(tb)) => newer_first(ta, tb, now),
            _ => Ordering::Equal,
        })
        // 7. More restarts first.
        .then_with(|| max_restarts(pb).cmp(&max_restarts(pa)))
        // 8. Newer first.
        .then_with(|| {
            newer_first(
                pa.metadata.creation_timestamp.as_ref().map(|t| t.0),
                pb.metadata.creation_timestamp.as_ref().map(|t| t.0),
                now,
            )
        })
        // Ties broken by uid, so the order is stable.
        .then_with(|| pa.metadata.uid.cmp(&pb.metadata.uid))
}

/// The `count` pods to delete first among `pods`; `related` (pods of the same controller
/// family) decide how crowded each node is.
pub fn pods_to_delete<'a>(
    pods: &[&'a Pod],
    related: &[&Pod],
    count: usize,
    now: Timestamp,
) -> Vec<&'a Pod> {
    let mut ranked: Vec<Ranked<'a>> = pods
        .iter()
        .map(|pod| {
            let node = node_name(pod);
            let rank = if node.is_empty() {
                0
            } else {
                related.iter().filter(|r| node_name(r) == node).count()
            };
            Ranked { pod, rank }
        })
        .collect();
    ranked.sort_by(|a, b| deletion_order(a, b, now));
    ranked.into_iter().take(count).map(|r| r.pod).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    pub fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn deletion_preference() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let ready_old = pod("ready-old", "n1", "Running", Some(1000), 100);
        let ready_new = pod("ready-new", "n1", "Running", Some(999_990), 999_980);
        let running_not_ready = pod("running", "n1", "Running", None, 100);
        let pending = pod("pending", "n1", "Pending", None, 100);
        let unknown = pod("unknown", "n1", "Unknown", None, 100);
        let unscheduled = pod("unscheduled", "", "Pending", None, 100);
        let all = [
            &ready_old,
            &ready_new,
            &running_not_ready,
            &pending,
            &unknown,
            &unscheduled,
        ];
        let order = pods_to_delete(&all, &all, 6, now);
        assert_eq!(
            names(&order),
            [
                "unscheduled",
                "pending",
                "unknown",
                "running",
                "ready-new",
                "ready-old"
            ]
        );
    }

    #[test]
    fn crowded_nodes_restarts_and_cost() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let a = pod("a", "n1", "Running", Some(500), 100);
        let b = pod("b", "n2", "Running", Some(500), 100);
        let c = pod("c", "n2", "Running", Some(500), 100);
        // b and c share n2: one of them goes first.
        let all = [&a, &b, &c];
        assert_ne!(names(&pods_to_delete(&all, &all, 1, now)), ["a"]);

        let mut restarted = pod("restarted", "n1", "Running", Some(500), 100);
        restarted.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            restart_count: 3,
            ..Default::default()
        }]);
        let calm = pod("calm", "n2", "Running", Some(500), 100);
        let both = [&calm, &restarted];
        assert_eq!(names(&pods_to_delete(&both, &both, 1, now)), ["restarted"]);

        let mut cheap = pod("cheap", "n1", "Running", Some(500), 100);
        cheap.metadata.annotations = Some([(DELETION_COST.to_string(), "-5".to_string())].into());
        let both = [&calm, &cheap];
        assert_eq!(names(&pods_to_delete(&both, &both, 1, now)), ["cheap"]);
    }

    #[test]
    fn availability() {
        let now = Timestamp::from_second(1000).unwrap();
        let p = pod("p", "", "Running", Some(990), 0);
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 10, now));
        assert!(!is_available(&p, 11, now));
        assert_eq!(until_available(&p, 15, now), Some(5));
        assert!(!is_available(&pod("q", "", "Running", None, 0), 0, now));
        let _ = PodSpec::default();
    }
}
