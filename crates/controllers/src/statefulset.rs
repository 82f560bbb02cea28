//! The StatefulSet controller (upstream's `pkg/controller/statefulset`): pods with stable
//! names (`<set>-<ordinal>`), hostnames and claims, made and removed in order.
//!
//! `sync(key)`: record the template as a ControllerRevision; then, with `OrderedReady`
//! (the default), create the lowest missing ordinal only once every lower pod is running
//! and ready, and remove surplus pods from the highest ordinal down, one at a time and
//! only while the set is healthy (upstream's monotonic rule, [`may_remove_in_order`]);
//! with `Parallel`, all at once. A `RollingUpdate` replaces pods of an older revision
//! from the highest ordinal down to `partition`, as many at a time as `maxUnavailable`
//! allows (one by default) counting pods not yet available; `OnDelete` only when they
//! are deleted. PVCs from `volumeClaimTemplates` are made before their pod (bound later
//! by the storage work); `persistentVolumeClaimRetentionPolicy` hands them to the garbage
//! collector through owner references: to the set (`whenDeleted: Delete`) and, for
//! ordinals scaled away, to their pod (`whenScaled: Delete`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::controller::{key_of, split_key, Reconcile};
use crate::error::{ignore_not_found, is_status, Result};
use crate::events::Events;
use crate::expectations::Expectations;
use crate::history::{self, REVISION_HASH};
use crate::informer::InformerFactory;
use crate::owned_pods::PodEvents;
use crate::owner;
use crate::pods;
use crate::queue::WorkQueue;

/// The labels upstream puts on every StatefulSet pod.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub struct StatefulSetController {
    client: Client,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    revisions: Store<ControllerRevision>,
    claims: Store<PersistentVolumeClaim>,
    queue: Arc<WorkQueue>,
    expectations: Arc<Expectations>,
    events: Events,
}

impl StatefulSetController {
    pub fn new(factory: &InformerFactory) -> Arc<StatefulSetController> {
        let set_informer = factory.informer::<StatefulSet>();
        let pod_informer = factory.informer::<Pod>();
        let controller = Arc::new(StatefulSetController {
            client: factory.client_for("statefulset-controller"),
            sets: set_informer.store(),
            pods: pod_informer.store(),
            revisions: factory.informer::<ControllerRevision>().store(),
            claims: factory.informer::<PersistentVolumeClaim>().store(),
            queue: factory.queue("statefulset"),
            expectations: Arc::new(Expectations::new()),
            events: Events::new(
                factory.client_for("statefulset-controller"),
                "statefulset-controller",
            ),
        });
        set_informer.enqueue_into(controller.queue.clone());
        PodEvents {
            owners: controller.sets.clone(),
            queue: controller.queue.clone(),
            expectations: controller.expectations.clone(),
            selector: |set: &StatefulSet| Some(set.spec.selector.clone()),
        }
        .register(&pod_informer);
        controller
    }

    async fn create_pod(
        &self,
        key: &str,
        set: &StatefulSet,
        pod_api: &Api<Pod>,
        ordinal: i32,
        revision: &str,
    ) -> Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let pod_name = format!("{}-{ordinal}", set.name_any());
        // The claims first: a pod must find its volumes.
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        for template in set.spec.volume_claim_templates.iter().flatten() {
            let claim = claim_for(set, template, ordinal);
            match claims.create(&PostParams::default(), &claim).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 409) => {}
                Err(e) => {
                    self.events
                        .warning(set, "FailedCreate", format!("create Claim {} for Pod {pod_name} in StatefulSet {} failed error: {e}", claim.name_any(), set.name_any()))
                        .await;
                    return Err(e.into());
                }
            }
        }
        let pod = pod_for(set, ordinal, revision);
        self.expectations.expect_creations(key, 1);
        match pod_api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.events
                    .normal(
                        set,
                        "SuccessfulCreate",
                        format!(
                            "create Pod {pod_name} in StatefulSet {} successful",
                            set.name_any()
                        ),
                    )
                    .await;
                Ok(())
            }
            Err(e) => {
                self.expectations.creation_observed(key);
                if is_status(&e, 409) {
                    // Still there under that name (terminating): next time.
                    return Ok(());
                }
                self.events
                    .warning(
                        set,
                        "FailedCreate",
                        format!(
                            "create Pod {pod_name} in StatefulSet {} failed error: {e}",
                            set.name_any()
                        ),
                    )
                    .await;
                Err(e.into())
            }
        }
    }

    async fn delete_pod(
        &self,
        key: &str,
        set: &StatefulSet,
        pod_api: &Api<Pod>,
        pod: &Pod,
    ) -> Result<()> {
        self.expectations.expect_deletions(key, vec![key_of(pod)]);
        let result = ignore_not_found(
            pod_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await,
        );
        if result.is_err() {
            self.expectations.deletion_observed(key, &key_of(pod));
        } else {
            self.events
                .normal(
                    set,
                    "SuccessfulDelete",
                    format!(
                        "delete Pod {} in StatefulSet {} successful",
                        pod.name_any(),
                        set.name_any()
                    ),
                )
                .await;
        }
        result
    }
}

impl StatefulSetController {
    /// Keeps each live pod's claims owned as the retention policy says.
    async fn apply_claim_retention(
        &self,
        set: &StatefulSet,
        by_ordinal: &BTreeMap<i32, Arc<Pod>>,
        wanted: &std::ops::Range<i32>,
    ) -> Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        for (ordinal, pod) in by_ordinal {
            let condemned = (!wanted.contains(ordinal)).then_some(pod.as_ref());
            for template in set.spec.volume_claim_templates.iter().flatten() {
                let name = claim_name(set, template, *ordinal);
                let Some(claim) = self.claims.get(&ObjectRef::new(&name).within(&ns)) else {
                    continue;
                };
                let current = claim.metadata.owner_references.clone().unwrap_or_default();
                let desired = retained_owner_refs(set, condemned, *ordinal, &current);
                if desired == current {
                    continue;
                }
                // An update of the cached claim (its version guards it), as upstream's
                // role allows the statefulset controller on claims (no patch).
                let mut owned = claim.as_ref().clone();
                owned.metadata.owner_references = Some(desired);
                match api.replace(&name, &PostParams::default(), &owned).await {
                    Ok(_) => {}
                    // Changed or gone since the cache saw it: the next sync decides again.
                    Err(e) if is_status(&e, 404) || is_status(&e, 409) || is_status(&e, 422) => {
                        tracing::debug!(claim = %name, error = %e, "claim changed; next sync");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

/// The owner references a claim of `ordinal` should carry: its others, plus its pod if
/// the pod is condemned under `whenScaled: Delete`, else the set under
/// `whenDeleted: Delete` (upstream's rules).
fn retained_owner_refs(
    set: &StatefulSet,
    condemned: Option<&Pod>,
    ordinal: i32,
    current: &[OwnerReference],
) -> Vec<OwnerReference> {
    let policy = set.spec.persistent_volume_claim_retention_policy.as_ref();
    let deletes = |rule: Option<&String>| rule.is_some_and(|r| r == "Delete");
    let pod_name = format!("{}-{ordinal}", set.name_any());
    let set_uid = set.metadata.uid.clone().unwrap_or_default();
    let mut refs: Vec<OwnerReference> = current
        .iter()
        .filter(|r| r.uid != set_uid && !(r.kind == "Pod" && r.name == pod_name))
        .cloned()
        .collect();
    // A condemned pod's claim belongs to the pod alone: with the set still there as an
    // owner, the garbage collector would only drop the pod's reference, not the claim.
    match condemned.filter(|_| deletes(policy.and_then(|p| p.when_scaled.as_ref()))) {
        Some(pod) => refs.push(owner::plain_ref(pod)),
        None if deletes(policy.and_then(|p| p.when_deleted.as_ref())) => {
            refs.push(owner::plain_ref(set))
        }
        None => {}
    }
    refs
}

impl Reconcile for StatefulSetController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(set) = self.sets.get(&ObjectRef::new(name).within(ns)) else {
            self.expectations.delete(key);
            return Ok(None);
        };
        let spec = set.spec.clone();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let labels = spec.selector.match_labels.clone().unwrap_or_default();
        let (_, update_revision) = history::current(
            &self.client,
            &self.revisions,
            set.as_ref(),
            &spec.template,
            &labels,
            set.status.as_ref().and_then(|s| s.collision_count),
        )
        .await?;
        // Ordinal → the live pod with it.
        let mut by_ordinal: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        let mut terminating = 0;
        for pod in owner::controlled_by(&self.pods, ns, &uid) {
            if pod.metadata.deletion_timestamp.is_some() {
                terminating += 1;
                continue;
            }
            if let Some(ordinal) = ordinal_of(&set.name_any(), &pod.name_any()) {
                by_ordinal.insert(ordinal, pod);
            }
        }
        let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
        let replicas = spec.replicas.unwrap_or(1);
        let wanted = start..start + replicas;
        let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = Timestamp::now();
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);

        if set.metadata.deletion_timestamp.is_none() && self.expectations.satisfied(key) {
            // Failed pods go first: they are made again below.
            if let Some(pod) = by_ordinal.values().find(|p| pods::phase(p) == "Failed") {
                self.delete_pod(key, &set, &pod_api, pod).await?;
                return Ok(None);
            }
            // Scale down: the highest surplus ordinal first; in order, one at a time, and
            // only once nothing else is terminating.
            let surplus: Vec<(i32, &Arc<Pod>)> = by_ordinal
                .iter()
                .rev()
                .filter(|(o, _)| !wanted.contains(o))
                .map(|(o, p)| (*o, p))
                .collect();
            if !surplus.is_empty() {
                if parallel {
                    for (_, pod) in surplus {
                        self.delete_pod(key, &set, &pod_api, pod).await?;
                    }
                } else if terminating == 0 && may_remove_in_order(&by_ordinal, &wanted, surplus[0])
                {
                    self.delete_pod(key, &set, &pod_api, surplus[0].1).await?;
                }
            } else {
                // Scale up: the missing ordinals, lowest first.
                for ordinal in wanted.clone() {
                    if let Some(pod) = by_ordinal.get(&ordinal) {
                        if !parallel && !pods::is_available(pod, min_ready, now) {
                            // OrderedReady: wait for this one before the next.
                            break;
                        }
                        continue;
                    }
                    if !parallel && terminating > 0 {
                        break;
                    }
                    self.create_pod(key, &set, &pod_api, ordinal, &update_revision)
                        .await?;
                    if !parallel {
                        break;
                    }
                }
                // Rolling update: out-of-date ordinals at or above the partition, highest
                // first, while fewer than `maxUnavailable` (default 1) pods are
                // unavailable, missing or terminating.
                let rolling = spec
                    .update_strategy
                    .as_ref()
                    .and_then(|s| s.type_.as_deref())
                    .is_none_or(|t| t == "RollingUpdate");
                let rolling_update = spec
                    .update_strategy
                    .as_ref()
                    .and_then(|s| s.rolling_update.as_ref());
                let partition = rolling_update.and_then(|r| r.partition).unwrap_or(0);
                let max_unavailable = crate::deployment::util::scaled_value(
                    rolling_update.and_then(|r| r.max_unavailable.as_ref()),
                    replicas,
                    true,
                )
                .max(1) as usize;
                let unavailable = terminating
                    + wanted
                        .clone()
                        .filter(|o| {
                            by_ordinal
                                .get(o)
                                .is_none_or(|p| !pods::is_available(p, min_ready, now))
                        })
                        .count();
                if rolling {
                    let stale = by_ordinal
                        .iter()
                        .rev()
                        .filter(|(o, _)| wanted.contains(o) && **o >= start + partition)
                        .filter(|(_, p)| revision_of(p) != Some(update_revision.as_str()))
                        // An unavailable stale pod costs nothing more to replace.
                        .take(max_unavailable.saturating_sub(unavailable));
                    for (_, pod) in stale {
                        self.delete_pod(key, &set, &pod_api, pod).await?;
                    }
                }
            }
        }

        if set.metadata.deletion_timestamp.is_none() {
            self.apply_claim_retention(&set, &by_ordinal, &wanted)
                .await?;
        }
        let status = calculate_status(&set, &by_ordinal, &update_revision, min_ready, now);
        if set.status.as_ref() != Some(&status) {
            let mut updated = (*set).clone();
            updated.status = Some(status);
            let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
            api.replace_status(&set.name_any(), &PostParams::default(), &updated)
                .await?;
        }
        let wait = by_ordinal
            .values()
            .filter_map(|p| pods::until_available(p, min_ready, now))
            .min();
        Ok(wait.map(|s| Duration::from_secs(s.unsigned_abs())))
    }
}

/// Upstream's monotonic scale-down: the highest surplus pod goes only while every pod
/// kept is running and ready, and only if it is running and ready itself or is the
/// lowest unhealthy pod of the set (so an unhealthy set is not torn down under the
/// pods that need attention).
fn may_remove_in_order(
    by_ordinal: &BTreeMap<i32, Arc<Pod>>,
    wanted: &std::ops::Range<i32>,
    (target, pod): (i32, &Arc<Pod>),
) -> bool {
    let healthy = |p: &Pod| pods::phase(p) == "Running" && pods::is_ready(p);
    let kept_healthy = by_ordinal
        .iter()
        .filter(|(o, _)| wanted.contains(o))
        .all(|(_, p)| healthy(p));
    let first_unhealthy = by_ordinal
        .iter()
        .find(|(_, p)| !healthy(p))
        .map(|(o, _)| *o);
    kept_healthy && (healthy(pod) || first_unhealthy == Some(target))
}

/// The ordinal in `<set>-<ordinal>`.
fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok()
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_HASH)
        .map(String::as_str)
}

/// The claim of `template` for `ordinal`: `<template>-<set>-<ordinal>`.
fn claim_for(
    set: &StatefulSet,
    template: &PersistentVolumeClaim,
    ordinal: i32,
) -> PersistentVolumeClaim {
    let mut labels = template.metadata.labels.clone().unwrap_or_default();
    labels.extend(set.spec.selector.match_labels.clone().unwrap_or_default());
    let owner_references = retained_owner_refs(set, None, ordinal, &[]);
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(set, template, ordinal)),
            owner_references: (!owner_references.is_empty()).then_some(owner_references),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template.metadata.annotations.clone(),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// `<template>-<set>-<ordinal>`, as upstream names claims.
fn claim_name(set: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> String {
    format!("{}-{}-{ordinal}", template.name_any(), set.name_any())
}

/// The pod of `ordinal`: the template, with its stable identity (name, hostname,
/// subdomain, labels) and its claims as volumes.
fn pod_for(set: &StatefulSet, ordinal: i32, revision: &str) -> Pod {
    let template = set.spec.template.clone();
    let meta = template.metadata.clone().unwrap_or_default();
    let name = format!("{}-{ordinal}", set.name_any());
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH.into(), revision.to_string());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    if !set.spec.service_name.as_deref().unwrap_or("").is_empty() {
        spec.subdomain = set.spec.service_name.clone();
    }
    for claim in set.spec.volume_claim_templates.iter().flatten() {
        let volume = Volume {
            name: claim.name_any(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{}-{}-{ordinal}", claim.name_any(), set.name_any()),
                read_only: None,
            }),
            ..Default::default()
        };
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != volume.name);
        volumes.push(volume);
    }
    let mut pod = pods::from_template(&template, set, pods::PodName::Fixed(name));
    pod.metadata.labels = Some(labels);
    pod.spec = Some(spec);
    pod
}

/// Upstream's StatefulSet status counts and revisions.
fn calculate_status(
    set: &StatefulSet,
    by_ordinal: &BTreeMap<i32, Arc<Pod>>,
    update_revision: &str,
    min_ready: i32,
    now: Timestamp,
) -> StatefulSetStatus {
    let previous = set.status.clone().unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| by_ordinal.values().filter(|p| f(p)).count() as i32;
    let replicas = by_ordinal.len() as i32;
    let ready = count(&|p| pods::is_ready(p));
    let available = count(&|p| pods::is_available(p, min_ready, now));
    let updated = count(&|p| revision_of(p) == Some(update_revision));
    let mut current_revision = previous
        .current_revision
        .clone()
        .unwrap_or_else(|| update_revision.to_string());
    let desired = set.spec.replicas.unwrap_or(1);
    // The update is complete: the update revision becomes the current one.
    if updated == desired && replicas == desired && ready == desired {
        current_revision = update_revision.to_string();
    }
    let current = count(&|p| revision_of(p) == Some(current_revision.as_str()));
    StatefulSetStatus {
        replicas,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update_revision.to_string()),
        observed_generation: set.metadata.generation,
        collision_count: previous.collision_count,
        conditions: previous.conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
    }
}
