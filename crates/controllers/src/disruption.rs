//! The disruption controller (upstream's `pkg/controller/disruption`): keeps each
//! PodDisruptionBudget's status — how many of its pods are healthy, how many must be, and
//! so how many evictions (`disruptionsAllowed`) the `pods/eviction` subresource may grant.
//!
//! Percentages and `maxUnavailable` are taken of the pods' controllers' scale
//! (Deployment, ReplicaSet, ReplicationController, StatefulSet), as upstream; a pod
//! without such a controller makes the budget fail safe (no disruptions allowed,
//! `SyncFailed`). Pods the eviction subresource recorded in `disruptedPods` count as gone
//! until they are, or for two minutes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::controller::{key_of, split_key, Reconcile};
use crate::deployment::util::scaled_value;
use crate::error::{is_status, Error, Result};
use crate::events::Events;
use crate::informer::InformerFactory;
use crate::owner;
use crate::pods;
use crate::queue::WorkQueue;

/// How long an eviction's entry in `disruptedPods` holds without the pod going
/// (upstream's `DeletionTimeout`).
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

pub struct DisruptionController {
    client: Client,
    budgets: Store<PodDisruptionBudget>,
    pods: Store<Pod>,
    scales: Scales,
    queue: Arc<WorkQueue>,
    events: Events,
}

/// The controllers whose `replicas` a budget's percentages are taken of.
struct Scales {
    replica_sets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    replication_controllers: Store<ReplicationController>,
    stateful_sets: Store<StatefulSet>,
}

impl DisruptionController {
    pub fn new(factory: &InformerFactory) -> Arc<DisruptionController> {
        let budget_informer = factory.informer::<PodDisruptionBudget>();
        let pod_informer = factory.informer::<Pod>();
        let controller = Arc::new(DisruptionController {
            client: factory.client_for("disruption-controller"),
            budgets: budget_informer.store(),
            pods: pod_informer.store(),
            scales: Scales {
                replica_sets: factory.informer::<ReplicaSet>().store(),
                deployments: factory.informer::<Deployment>().store(),
                replication_controllers: factory.informer::<ReplicationController>().store(),
                stateful_sets: factory.informer::<StatefulSet>().store(),
            },
            queue: factory.queue("disruption"),
            events: Events::new(
                factory.client_for("disruption-controller"),
                "controllermanager",
            ),
        });
        budget_informer.enqueue_into(controller.queue.clone());
        let me = Arc::downgrade(&controller);
        pod_informer.add_handler(move |old, new| {
            let Some(me) = me.upgrade() else { return };
            // The budgets of the pod's labels before and after the change.
            for pod in [old, new].into_iter().flatten() {
                for budget in me.budgets_of(pod) {
                    me.queue.add(key_of(budget.as_ref()));
                }
            }
        });
        controller
    }

    fn budgets_of(&self, pod: &Pod) -> Vec<Arc<PodDisruptionBudget>> {
        let ns = pod.metadata.namespace.as_deref();
        self.budgets
            .state()
            .into_iter()
            .filter(|b| b.metadata.namespace.as_deref() == ns)
            .filter(|b| selects(b, pod))
            .collect()
    }

    async fn write_status(
        &self,
        budget: &PodDisruptionBudget,
        status: PodDisruptionBudgetStatus,
    ) -> Result<()> {
        if budget.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<PodDisruptionBudget> =
            Api::namespaced(self.client.clone(), &budget.namespace().unwrap_or_default());
        let mut updated = budget.clone();
        updated.status = Some(status);
        match api
            .replace_status(&budget.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(()),
            // Behind the API (an eviction spent a disruption): the watch brings it back.
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether the budget's selector picks the pod (a missing selector picks nothing, an
/// empty one every pod of the namespace, as in policy/v1).
fn selects(budget: &PodDisruptionBudget, pod: &Pod) -> bool {
    let Some(selector) = budget.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    owner::selector(selector).is_ok_and(|s| owner::matches(&s, &pod.metadata))
}

impl Scales {
    /// Upstream's `getExpectedScale`: the summed `replicas` of the pods' controllers, each
    /// counted once (a Deployment's, not its ReplicaSets').
    fn expected(&self, pods: &[Arc<Pod>]) -> std::result::Result<i32, String> {
        let mut by_controller: HashMap<String, i32> = HashMap::new();
        for pod in pods {
            let Some(reference) = owner::controller_of(&pod.metadata) else {
                return Err(format!(
                    "found no controller ref for pod \"{}\"",
                    pod.name_any()
                ));
            };
            let ns = pod.namespace().unwrap_or_default();
            let (uid, replicas) = self
                .replicas_of(&ns, &reference.kind, &reference.name, &reference.uid)
                .ok_or_else(|| format!("found no controllers for pod \"{}\"", pod.name_any()))?;
            by_controller.insert(uid, replicas);
        }
        Ok(by_controller.values().sum())
    }

    fn replicas_of(&self, ns: &str, kind: &str, name: &str, uid: &str) -> Option<(String, i32)> {
        fn find<K>(store: &Store<K>, ns: &str, name: &str, uid: &str) -> Option<Arc<K>>
        where
            K: kube::Resource<DynamicType = ()> + Clone + 'static,
        {
            store
                .get(&ObjectRef::new(name).within(ns))
                .filter(|o| o.meta().uid.as_deref() == Some(uid))
        }
        match kind {
            "ReplicaSet" => {
                let rs = find(&self.replica_sets, ns, name, uid)?;
                // A Deployment's ReplicaSets come and go during a rollout; its scale holds.
                if let Some(d) =
                    owner::controller_of(&rs.metadata).filter(|r| r.kind == "Deployment")
                {
                    return self.replicas_of(ns, "Deployment", &d.name, &d.uid);
                }
                Some((uid.to_string(), rs.spec.replicas.unwrap_or(1)))
            }
            "Deployment" => find(&self.deployments, ns, name, uid)
                .map(|d| (uid.to_string(), d.spec.replicas.unwrap_or(1))),
            "ReplicationController" => {
                find(&self.replication_controllers, ns, name, uid).map(|rc| {
                    let replicas = rc.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    (uid.to_string(), replicas)
                })
            }
            "StatefulSet" => find(&self.stateful_sets, ns, name, uid)
                .map(|s| (uid.to_string(), s.spec.replicas.unwrap_or(1))),
            _ => None,
        }
    }
}

/// Pods still recorded as disrupted: present, not yet being deleted, recorded less than
/// [`DELETION_TIMEOUT`] ago. Also returns when the first entry expires.
fn live_disruptions(
    recorded: &BTreeMap<String, Time>,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Duration>) {
    let mut kept = BTreeMap::new();
    let mut next_expiry: Option<Duration> = None;
    for (name, at) in recorded {
        let pending = pods.iter().any(|p| {
            p.metadata.name.as_deref() == Some(name.as_str())
                && p.metadata.deletion_timestamp.is_none()
        });
        let expires = at.0 + DELETION_TIMEOUT;
        if pending && expires > now {
            let left = Duration::try_from(expires - now).unwrap_or_default();
            next_expiry = Some(next_expiry.map_or(left, |d| d.min(left)));
            kept.insert(name.clone(), at.clone());
        }
    }
    (kept, next_expiry)
}

/// `(expectedPods, desiredHealthy)` as upstream's `getExpectedPodCount` decides them.
fn expected_and_desired(
    budget: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    scales: &Scales,
) -> std::result::Result<(i32, i32), String> {
    let spec = budget.spec.clone().unwrap_or_default();
    if let Some(max_unavailable) = &spec.max_unavailable {
        let expected = scales.expected(pods)?;
        let unavailable = scaled_value(Some(max_unavailable), expected, true);
        return Ok((expected, (expected - unavailable).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok((pods.len() as i32, *n)),
        Some(percent @ IntOrString::String(_)) => {
            let expected = scales.expected(pods)?;
            Ok((expected, scaled_value(Some(percent), expected, true)))
        }
        None => Ok((0, 0)),
    }
}

fn allowed_condition(
    status: &str,
    reason: &str,
    message: &str,
    previous: &[Condition],
    now: Timestamp,
) -> Condition {
    let unchanged = previous
        .iter()
        .find(|c| c.type_ == "DisruptionAllowed" && c.status == status && c.reason == reason);
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: None,
        last_transition_time: unchanged
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now)),
    }
}

impl Reconcile for DisruptionController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(budget) = self.budgets.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        if budget.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let pods: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns) && selects(&budget, p))
            .collect();
        if pods.is_empty() {
            self.events
                .normal(budget.as_ref(), "NoPods", "No matching pods found".into())
                .await;
        }
        let now = Timestamp::now();
        let previous = budget.status.clone().unwrap_or_default();
        let previous_conditions = previous.conditions.clone().unwrap_or_default();
        let (expected, desired) = match expected_and_desired(&budget, &pods, &self.scales) {
            Ok(counts) => counts,
            Err(why) => {
                // Fail safe: nothing may be evicted while the budget cannot be computed.
                self.events
                    .warning(
                        budget.as_ref(),
                        "CalculateExpectedPodCountFailed",
                        format!("Failed to calculate the number of expected pods: {why}"),
                    )
                    .await;
                let status = PodDisruptionBudgetStatus {
                    disruptions_allowed: Some(0),
                    conditions: Some(vec![allowed_condition(
                        "False",
                        "SyncFailed",
                        &why,
                        &previous_conditions,
                        now,
                    )]),
                    ..previous
                };
                self.write_status(&budget, status).await?;
                return Err(Error::Other(why));
            }
        };
        let (disrupted, recheck) = live_disruptions(
            &previous.disrupted_pods.clone().unwrap_or_default(),
            &pods,
            now,
        );
        let current = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| !disrupted.contains_key(&p.name_any()))
            .filter(|p| pods::is_ready(p))
            .count() as i32;
        let allowed = if expected <= 0 {
            0
        } else {
            (current - desired).max(0)
        };
        let condition = if allowed > 0 {
            allowed_condition("True", "SufficientPods", "", &previous_conditions, now)
        } else {
            allowed_condition("False", "InsufficientPods", "", &previous_conditions, now)
        };
        let status = PodDisruptionBudgetStatus {
            observed_generation: budget.metadata.generation,
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            disruptions_allowed: Some(allowed),
            current_healthy: Some(current),
            desired_healthy: Some(desired),
            expected_pods: Some(expected),
            conditions: Some(vec![condition]),
        };
        self.write_status(&budget, status).await?;
        Ok(recheck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_named(name: &str, deleting: bool) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        if deleting {
            pod.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        }
        Arc::new(pod)
    }

    #[test]
    fn disruptions_expire_or_end_with_the_pod() {
        let now = Timestamp::from_second(1_000).unwrap();
        let recorded: BTreeMap<String, Time> = [
            (
                "fresh".to_string(),
                Time(Timestamp::from_second(990).unwrap()),
            ),
            (
                "old".to_string(),
                Time(Timestamp::from_second(800).unwrap()),
            ),
            (
                "deleting".to_string(),
                Time(Timestamp::from_second(990).unwrap()),
            ),
            (
                "gone".to_string(),
                Time(Timestamp::from_second(990).unwrap()),
            ),
        ]
        .into();
        let pods = vec![
            pod_named("fresh", false),
            pod_named("old", false),
            pod_named("deleting", true),
        ];
        let (kept, recheck) = live_disruptions(&recorded, &pods, now);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["fresh"]);
        assert_eq!(recheck, Some(Duration::from_secs(110)));
    }

    #[test]
    fn min_available_counts_pods_and_percentages_count_scale() {
        let scales = Scales {
            replica_sets: kube::runtime::reflector::store::Writer::default().as_reader(),
            deployments: kube::runtime::reflector::store::Writer::default().as_reader(),
            replication_controllers: kube::runtime::reflector::store::Writer::default().as_reader(),
            stateful_sets: kube::runtime::reflector::store::Writer::default().as_reader(),
        };
        let budget = |min: Option<IntOrString>, max: Option<IntOrString>| PodDisruptionBudget {
            spec: Some(k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = vec![pod_named("a", false), pod_named("b", false)];
        assert_eq!(
            expected_and_desired(&budget(Some(IntOrString::Int(1)), None), &pods, &scales),
            Ok((2, 1))
        );
        // Pods without a controller: percentages cannot be computed.
        let failed = expected_and_desired(
            &budget(None, Some(IntOrString::String("50%".into()))),
            &pods,
            &scales,
        );
        assert_eq!(
            failed,
            Err("found no controller ref for pod \"a\"".to_string())
        );
    }
}
