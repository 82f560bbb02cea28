//! The ReplicaSet controller (upstream's `pkg/controller/replicaset`), which also runs
//! ReplicationControllers ([`kinds`]).
//!
//! `sync(key)`: claim the namespace's active pods (adopt matching orphans, release owned
//! pods that stop matching), then, if the expectations of the last sync are met, create
//! or delete pods to reach `spec.replicas`, and write `status` through `/status`.
//! Creations go in slow-start batches (1, 2, 4, …) so that a failing create (quota,
//! admission) costs one request, not hundreds; deletions pick pods by upstream's ranking
//! ([`crate::pods::pods_to_delete`]).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::controller::{key_of, split_key};
use crate::error::{is_status, Error, Result};
use crate::events::Events;
use crate::expectations::Expectations;
use crate::informer::InformerFactory;
use crate::owned_pods::PodEvents;
use crate::owner;
use crate::pods;
use crate::queue::WorkQueue;

pub mod kinds;
pub use kinds::Replicated;

/// At most this many pods are created or deleted in one sync (upstream's `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// Keeps each ReplicaSet's pods at its `replicas`.
pub type ReplicaSetController = ReplicaController<ReplicaSet>;
/// Upstream's replication manager: the same controller for ReplicationControllers.
pub type ReplicationManager = ReplicaController<ReplicationController>;

pub struct ReplicaController<K: Replicated> {
    client: Client,
    replica_sets: Store<K>,
    pods: Store<Pod>,
    queue: Arc<WorkQueue>,
    expectations: Arc<Expectations>,
    events: Events,
}

impl<K: Replicated> ReplicaController<K> {
    /// Registers the controller's handlers on the shared informers.
    pub fn new(factory: &InformerFactory) -> Arc<Self> {
        let rs_informer = factory.informer::<K>();
        let pod_informer = factory.informer::<Pod>();
        let controller = Arc::new(ReplicaController {
            client: factory.client_for(K::COMPONENT),
            replica_sets: rs_informer.store(),
            pods: pod_informer.store(),
            queue: factory.queue(K::QUEUE),
            expectations: Arc::new(Expectations::new()),
            events: Events::new(factory.client_for(K::COMPONENT), K::COMPONENT),
        });
        let me = Arc::downgrade(&controller);
        rs_informer.add_handler(move |old, new| {
            let Some(me) = me.upgrade() else { return };
            match (old, new) {
                (_, Some(rs)) => me.queue.add(key_of(rs)),
                (Some(rs), None) => {
                    let key = key_of(rs);
                    me.expectations.delete(&key);
                    me.queue.add(key);
                }
                (None, None) => {}
            }
        });
        PodEvents {
            owners: controller.replica_sets.clone(),
            queue: controller.queue.clone(),
            expectations: controller.expectations.clone(),
            selector: K::pod_selector,
        }
        .register(&pod_informer);
        controller
    }

    async fn manage_replicas(&self, key: &str, rs: &K, owned: &[&Pod]) -> Result<()> {
        let wanted = rs.replicas().max(0) as usize;
        let ns = rs.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if owned.len() < wanted {
            let count = (wanted - owned.len()).min(BURST_REPLICAS);
            // Expect them all before the first create: its watch event may come back
            // before the create call returns.
            self.expectations.expect_creations(key, count);
            let template = rs.template().cloned().unwrap_or_default();
            let pod = pod_from_template(&template, rs)?;
            tracing::info!(
                rs = key,
                need = wanted,
                creating = count,
                "too few replicas"
            );
            let names = std::sync::Mutex::new(Vec::new());
            let (created, error) = slow_start_batch(count, 1, || {
                let api = api.clone();
                let pod = pod.clone();
                let names = &names;
                async move {
                    let made = api.create(&PostParams::default(), &pod).await?;
                    names
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(made.name_any());
                    Ok::<(), kube::Error>(())
                }
            })
            .await;
            // The pods never asked for will never be observed.
            for _ in created..count {
                self.expectations.creation_observed(key);
            }
            for name in names.into_inner().unwrap_or_else(|e| e.into_inner()) {
                self.events
                    .normal(rs, "SuccessfulCreate", format!("Created pod: {name}"))
                    .await;
            }
            if let Some(error) = error {
                self.events
                    .warning(rs, "FailedCreate", format!("Error creating: {error}"))
                    .await;
                return Err(error.into());
            }
        } else if owned.len() > wanted {
            let count = (owned.len() - wanted).min(BURST_REPLICAS);
            let victims = pods::pods_to_delete(owned, owned, count, Timestamp::now());
            let victim_keys: Vec<String> = victims.iter().map(|p| key_of(*p)).collect();
            self.expectations.expect_deletions(key, victim_keys.clone());
            tracing::info!(
                rs = key,
                need = wanted,
                deleting = count,
                "too many replicas"
            );
            let results = join_all(victims.iter().map(|pod| {
                let api = api.clone();
                let name = pod.name_any();
                async move { api.delete(&name, &DeleteParams::default()).await }
            }))
            .await;
            let mut first_error = None;
            for ((result, pod_key), pod) in results.into_iter().zip(victim_keys).zip(&victims) {
                if result.is_ok() {
                    self.events
                        .normal(
                            rs,
                            "SuccessfulDelete",
                            format!("Deleted pod: {}", pod.name_any()),
                        )
                        .await;
                }
                if let Err(e) = result {
                    self.expectations.deletion_observed(key, &pod_key);
                    if !is_status(&e, 404) && first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
            if let Some(error) = first_error {
                return Err(error.into());
            }
        }
        Ok(())
    }

    async fn update_status(&self, rs: &K, status: ReplicaSetStatus) -> Result<()> {
        if rs.replica_status().as_ref() == Some(&status) {
            return Ok(());
        }
        let ns = rs.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let mut updated = rs.clone();
        updated.set_replica_status(status.clone());
        match api
            .replace_status(&rs.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => {
                // The cache was behind: one more try on the current object, as upstream.
                let mut fresh = api.get(&rs.name_any()).await?;
                fresh.set_replica_status(status);
                api.replace_status(&rs.name_any(), &PostParams::default(), &fresh)
                    .await?;
                Ok(())
            }
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs `count` calls of `make` in batches of 1, 2, 4, … while they all succeed;
/// returns how many succeeded and the first error.
pub async fn slow_start_batch<F, Fut, E>(
    count: usize,
    initial: usize,
    make: F,
) -> (usize, Option<E>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), E>>,
{
    let mut remaining = count;
    let mut successes = 0;
    let mut batch = remaining.min(initial.max(1));
    while batch > 0 {
        let results = join_all((0..batch).map(|_| make())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(()) => successes += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
        remaining -= batch;
        batch = remaining.min(2 * batch);
    }
    (successes, None)
}

/// The pod a ReplicaSet creates from its template (which must select it by labels).
pub fn pod_from_template<K: Replicated>(template: &PodTemplateSpec, rs: &K) -> Result<Pod> {
    let labelled = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .is_some_and(|l| !l.is_empty());
    if !labelled {
        return Err(Error::Other("unable to create pods, no labels".into()));
    }
    Ok(pods::from_template(
        template,
        rs,
        pods::PodName::Generated(format!("{}-", rs.name_any())),
    ))
}

/// The status a sync writes (upstream's `calculateStatus`).
pub fn calculate_status<K: Replicated>(
    rs: &K,
    owned: &[&Pod],
    manage_error: Option<&Error>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let template_labels = rs
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = rs.min_ready_seconds();
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for pod in owned {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            fully_labeled += 1;
        }
        if pods::is_ready(pod) {
            ready += 1;
            if pods::is_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }
    let previous = rs.replica_status().unwrap_or_default();
    let mut conditions = previous.conditions.clone().unwrap_or_default();
    let has_failure = conditions
        .iter()
        .any(|c| c.type_.as_deref() == Some("ReplicaFailure"));
    match manage_error {
        Some(error) if !has_failure => {
            let wanted = rs.replicas();
            let reason = if (owned.len() as i32) < wanted {
                "FailedCreate"
            } else {
                "FailedDelete"
            };
            conditions.push(ReplicaSetCondition {
                type_: Some("ReplicaFailure".into()),
                status: Some("True".into()),
                reason: Some(reason.into()),
                message: Some(error.to_string()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_.as_deref() != Some("ReplicaFailure")),
        _ => {}
    }
    ReplicaSetStatus {
        replicas: owned.len() as i32,
        fully_labeled_replicas: Some(fully_labeled),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        observed_generation: rs.meta().generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: previous.terminating_replicas,
    }
}

impl<K: Replicated> crate::controller::Reconcile for ReplicaController<K> {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    /// Reconciles one ReplicaSet.
    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(rs) = self.replica_sets.get(&ObjectRef::new(name).within(ns)) else {
            self.expectations.delete(key);
            return Ok(None);
        };
        let Some(pod_selector) = rs.pod_selector() else {
            return Ok(None);
        };
        let selector = owner::selector(&pod_selector)?;
        let needs_sync = self.expectations.satisfied(key);

        let candidates: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(ns) && pods::is_active(p))
            .collect();
        let owned = owner::claim_objects(&self.client, rs.as_ref(), &selector, candidates).await?;

        let owned_refs: Vec<&Pod> = owned.iter().map(AsRef::as_ref).collect();
        let manage_error = if needs_sync && rs.meta().deletion_timestamp.is_none() {
            self.manage_replicas(key, &rs, &owned_refs).await.err()
        } else {
            None
        };

        let now = Timestamp::now();
        let status = calculate_status(rs.as_ref(), &owned_refs, manage_error.as_ref(), now);
        self.update_status(&rs, status).await?;

        if let Some(error) = manage_error {
            return Err(error);
        }
        // Come back when the next ready pod becomes available.
        let min_ready = rs.min_ready_seconds();
        let wait = owned_refs
            .iter()
            .filter_map(|p| pods::until_available(p, min_ready, now))
            .min();
        Ok(wait.map(|s| Duration::from_secs(s.unsigned_abs())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::tests::pod;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn slow_start_doubles_and_stops_at_first_failure() {
        let calls = AtomicUsize::new(0);
        let (ok, err) = slow_start_batch(10, 1, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n >= 4 {
                    Err(n)
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // Batches 1, 2, then 4 of which the last fails... 1+2 = 3 ok, batch of 4: calls 3..6.
        assert_eq!(ok, 4);
        assert_eq!(err, Some(4));
        assert_eq!(calls.load(Ordering::SeqCst), 7);

        let (ok, err) = slow_start_batch(10, 1, || async { Ok::<(), ()>(()) }).await;
        assert_eq!((ok, err), (10, None));
    }

    fn rs(replicas: i32, min_ready: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("rs".into()),
                generation: Some(3),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: Some(min_ready),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "a".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            },
            status: None,
        }
    }

    #[test]
    fn status_counts() {
        let now = Timestamp::from_second(1000).unwrap();
        let mut a = pod("a", "", "Running", Some(900), 0);
        a.metadata.labels = Some([("app".to_string(), "a".to_string())].into());
        let b = pod("b", "", "Running", Some(995), 0);
        let c = pod("c", "", "Pending", None, 0);
        let set = rs(3, 10);
        let status = calculate_status(&set, &[&a, &b, &c], None, now);
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, Some(1));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.observed_generation, Some(3));
        assert!(status.conditions.is_none());

        let error = Error::Other("quota".into());
        let failed = calculate_status(&set, &[&a], Some(&error), now);
        let cond = &failed.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (
                cond.type_.as_deref().unwrap_or_default(),
                cond.reason.as_deref()
            ),
            ("ReplicaFailure", Some("FailedCreate"))
        );
        let mut set = set;
        set.status = Some(failed);
        assert!(calculate_status(&set, &[&a], None, now)
            .conditions
            .is_none());
    }
}
