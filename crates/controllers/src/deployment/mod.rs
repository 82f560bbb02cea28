//! The Deployment controller (upstream's `pkg/controller/deployment`).
//!
//! A deployment owns replica sets, one per pod template it has had; the one whose
//! template equals the deployment's (ignoring `pod-template-hash`) is the *new* RS, the
//! others are *old*. `sync(key)` claims the replica sets, then:
//! - being deleted, or paused, or a pure scale change: [`DeploymentController::scale`]
//!   the replica sets (proportionally during a rollout), no rollout step;
//! - `Recreate`: old RSs to zero, wait for their pods to go, then the new RS up;
//! - `RollingUpdate`: new RS up within `maxSurge`, old ones down within `maxUnavailable`;
//!
//! and writes the status with the `Progressing`/`Available` conditions. `kubectl rollout
//! undo` copies an old RS's template into the deployment: that RS becomes the new one
//! again and gets the next revision, so rollback needs nothing special here.

pub mod util;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::controller::{key_of, split_key};
use crate::error::{is_status, Error, Result};
use crate::informer::InformerFactory;
use crate::owner;
use crate::queue::WorkQueue;
use util::*;

pub struct DeploymentController {
    client: Client,
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    queue: Arc<WorkQueue>,
    events: crate::events::Events,
}

/// The replica sets of one deployment, split.
struct Family {
    new_rs: Option<ReplicaSet>,
    old: Vec<ReplicaSet>,
}

impl Family {
    fn all(&self) -> Vec<&ReplicaSet> {
        self.old.iter().chain(self.new_rs.as_ref()).collect()
    }
}

impl DeploymentController {
    pub fn new(factory: &InformerFactory) -> Arc<DeploymentController> {
        let d_informer = factory.informer::<Deployment>();
        let rs_informer = factory.informer::<ReplicaSet>();
        let pod_informer = factory.informer::<Pod>();
        let controller = Arc::new(DeploymentController {
            client: factory.client_for("deployment-controller"),
            deployments: d_informer.store(),
            replica_sets: rs_informer.store(),
            pods: pod_informer.store(),
            queue: factory.queue("deployment"),
            events: crate::events::Events::new(
                factory.client_for("deployment-controller"),
                "deployment-controller",
            ),
        });
        let me = Arc::downgrade(&controller);
        d_informer.add_handler(move |old, new| {
            if let (Some(me), Some(d)) = (me.upgrade(), new.or(old)) {
                me.queue.add(key_of(d));
            }
        });
        let me = Arc::downgrade(&controller);
        rs_informer.add_handler(move |old, new| {
            let Some(me) = me.upgrade() else { return };
            for rs in [old, new].into_iter().flatten() {
                match owner::controller_of(&rs.metadata) {
                    Some(reference) => {
                        me.enqueue_owner(rs.metadata.namespace.as_deref(), reference)
                    }
                    // An orphan RS: the deployments that select it may adopt it.
                    None => me.enqueue_selecting(rs),
                }
            }
        });
        let me = Arc::downgrade(&controller);
        pod_informer.add_handler(move |old, new| {
            // Only a Recreate rollout waits on pods: it goes on once the old ones are gone.
            let (Some(me), Some(pod), None) = (me.upgrade(), old, new) else {
                return;
            };
            let Some(reference) = owner::controller_of(&pod.metadata) else {
                return;
            };
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            if let Some(rs) = me
                .replica_sets
                .get(&ObjectRef::new(&reference.name).within(ns))
            {
                if let Some(d_ref) = owner::controller_of(&rs.metadata) {
                    me.enqueue_owner(Some(ns), d_ref);
                }
            }
        });
        controller
    }

    fn enqueue_owner(&self, ns: Option<&str>, reference: &OwnerReference) {
        if reference.kind != "Deployment" {
            return;
        }
        let ns = ns.unwrap_or_default();
        if let Some(d) = self
            .deployments
            .get(&ObjectRef::new(&reference.name).within(ns))
        {
            if d.metadata.uid.as_deref() == Some(reference.uid.as_str()) {
                self.queue.add(key_of(d.as_ref()));
            }
        }
    }

    fn enqueue_selecting(&self, rs: &ReplicaSet) {
        for d in self.deployments.state() {
            if d.metadata.namespace != rs.metadata.namespace {
                continue;
            }
            let Some(selector) = Some(&d.spec.selector) else {
                continue;
            };
            if let Ok(selector) = owner::selector(selector) {
                if !selector.selects_all() && owner::matches(&selector, &rs.metadata) {
                    self.queue.add(key_of(d.as_ref()));
                }
            }
        }
    }

    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn d_api(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Adopts and releases replica sets as the RS controller does pods.
    async fn claim_replica_sets(&self, d: &Deployment) -> Result<Vec<ReplicaSet>> {
        let ns = d.namespace().unwrap_or_default();
        let selector = owner::selector(&d.spec.selector.clone())?;
        let candidates = self
            .replica_sets
            .state()
            .into_iter()
            .filter(|rs| rs.metadata.namespace.as_deref() == Some(ns.as_str()));
        let owned = owner::claim_objects(&self.client, d, &selector, candidates).await?;
        Ok(owned.iter().map(|rs| (**rs).clone()).collect())
    }

    /// Splits the replica sets into new and old, creating the new one if asked, and
    /// syncs revisions (`getAllReplicaSetsAndSyncRevision`).
    async fn family(
        &self,
        d: &mut Deployment,
        mut rs_list: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<Family> {
        rs_list.sort_by(by_creation);
        let template = d.spec.template.clone();
        let new_index = rs_list.iter().position(|rs| {
            rs.spec
                .template
                .as_ref()
                .is_some_and(|t| equal_ignore_hash(t, &template))
        });
        let existing_new = new_index.map(|i| rs_list.remove(i));
        let old = rs_list;
        let max_old_revision = old.iter().map(revision).max().unwrap_or(0);
        let new_revision = max_old_revision + 1;
        let ns = d.namespace().unwrap_or_default();
        let now = Timestamp::now();

        if let Some(mut rs) = existing_new {
            let mut updated = rs.clone();
            let annotations_changed = set_new_rs_annotations(d, &mut updated, new_revision, true);
            let min_ready = d.spec.min_ready_seconds;
            let min_ready_changed = updated.spec.min_ready_seconds != min_ready;
            if annotations_changed || min_ready_changed {
                {
                    let spec = &mut updated.spec;
                    spec.min_ready_seconds = min_ready;
                }
                rs = self
                    .rs_api(&ns)
                    .replace(&rs.name_any(), &PostParams::default(), &updated)
                    .await?;
            }
            let rs_revision = annotation(&rs, REVISION).unwrap_or_default().to_string();
            self.set_revision(d, &rs_revision).await?;
            let mut status = d.status.clone().unwrap_or_default();
            if condition(&status, "Progressing").is_none() && progress_deadline(d).is_some() {
                let message = format!("Found new replica set \"{}\"", rs.name_any());
                set_condition(
                    &mut status,
                    new_condition("Progressing", "True", FOUND_NEW_RS, message, now),
                );
                self.write_status(d, status).await?;
            }
            return Ok(Family {
                new_rs: Some(rs),
                old,
            });
        }
        if !create {
            return Ok(Family { new_rs: None, old });
        }

        // A new template: a new RS named after its hash.
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&template, collision_count);
        let mut rs_template = template.clone();
        rs_template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = d.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: Some(ns.clone()),
                labels: rs_template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: Some(vec![owner::controller_ref(d)]),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d.spec.min_ready_seconds,
                selector,
                template: Some(rs_template),
            },
            status: None,
        };
        set_new_rs_annotations(d, &mut new_rs, new_revision, false);
        let all: Vec<&ReplicaSet> = old.iter().chain(Some(&new_rs)).collect();
        let count = new_rs_new_replicas(d, &all, &new_rs);
        {
            let spec = &mut new_rs.spec;
            spec.replicas = Some(count);
        }
        let (created, already_existed) = match self
            .rs_api(&ns)
            .create(&PostParams::default(), &new_rs)
            .await
        {
            Ok(rs) => (rs, false),
            Err(e) if is_status(&e, 409) => {
                let existing = self.rs_api(&ns).get(&new_rs.name_any()).await?;
                let ours = owner::controller_of(&existing.metadata).map(|r| &r.uid)
                    == d.metadata.uid.as_ref();
                let same = existing
                    .spec
                    .template
                    .as_ref()
                    .is_some_and(|t| equal_ignore_hash(t, &template));
                if ours && same {
                    // Our own, not yet in the cache.
                    (existing, true)
                } else {
                    // A hash collision: the next hash differs by the collision count.
                    let mut status = d.status.clone().unwrap_or_default();
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    self.write_status(d, status).await?;
                    return Err(Error::Other(format!(
                        "hash collision for replica set {}",
                        new_rs.name_any()
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        };
        if !already_existed && count > 0 {
            tracing::info!(deployment = %key_of(d), rs = %created.name_any(), "Scaled up replica set {} from 0 to {count}", created.name_any());
        }
        self.set_revision(d, &new_revision.to_string()).await?;
        if !already_existed && progress_deadline(d).is_some() {
            let mut status = d.status.clone().unwrap_or_default();
            let message = format!("Created new replica set \"{}\"", created.name_any());
            set_condition(
                &mut status,
                new_condition("Progressing", "True", NEW_RS_CREATED, message, now),
            );
            self.write_status(d, status).await?;
        }
        Ok(Family {
            new_rs: Some(created),
            old,
        })
    }

    /// Sets the deployment's revision annotation to its new RS's.
    async fn set_revision(&self, d: &mut Deployment, revision: &str) -> Result<()> {
        let current = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION));
        if revision.is_empty() || current.map(String::as_str) == Some(revision) {
            return Ok(());
        }
        // An update, as upstream's role allows the deployment controller (no patch).
        let mut annotated = d.clone();
        annotated
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(REVISION.to_string(), revision.to_string());
        let ns = d.namespace().unwrap_or_default();
        let updated = self
            .d_api(&ns)
            .replace(&d.name_any(), &PostParams::default(), &annotated)
            .await?;
        // Keep the spec this sync works on; take the new metadata.
        d.metadata = updated.metadata;
        Ok(())
    }

    /// Writes the status through `/status` if it changed.
    async fn write_status(&self, d: &mut Deployment, status: DeploymentStatus) -> Result<()> {
        if d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let ns = d.namespace().unwrap_or_default();
        let mut updated = d.clone();
        updated.status = Some(status);
        let written = self
            .d_api(&ns)
            .replace_status(&d.name_any(), &PostParams::default(), &updated)
            .await?;
        d.metadata = written.metadata;
        d.status = written.status;
        Ok(())
    }

    async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<()> {
        if progress_deadline(d).is_none() {
            return Ok(());
        }
        let paused = d.spec.paused == Some(true);
        let mut status = d.status.clone().unwrap_or_default();
        let reason = condition(&status, "Progressing").and_then(|c| c.reason.clone());
        let now = Timestamp::now();
        if paused && reason.as_deref() != Some(PAUSED) {
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "Unknown",
                    PAUSED,
                    "Deployment is paused".into(),
                    now,
                ),
            );
        } else if !paused && reason.as_deref() == Some(PAUSED) {
            set_condition(
                &mut status,
                new_condition(
                    "Progressing",
                    "Unknown",
                    RESUMED,
                    "Deployment is resumed".into(),
                    now,
                ),
            );
        } else {
            return Ok(());
        }
        self.write_status(d, status).await
    }

    /// A change of `replicas` alone (`isScalingEvent`): some active RS was last sized
    /// for another count.
    async fn is_scaling_event(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<bool> {
        let family = self.family(d, rs_list.to_vec(), false).await?;
        let want = replicas(d);
        Ok(family
            .all()
            .into_iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| desired_annotation(rs).is_some_and(|desired| desired != want)))
    }

    /// Scaling only: paused, or a replica count change (`sync`).
    async fn sync_scale(
        &self,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let mut family = self.family(d, rs_list, false).await?;
        self.scale(d, &mut family).await?;
        if d.spec.paused == Some(true) {
            self.cleanup(d, &family.old).await?;
        }
        self.sync_status_only(d, &family).await
    }

    async fn sync_status_only(&self, d: &Deployment, family: &Family) -> Result<Option<Duration>> {
        let mut d = d.clone();
        let status = calculate_status(&family.all(), family.new_rs.as_ref(), &d, Timestamp::now());
        self.write_status(&mut d, status).await?;
        Ok(None)
    }

    /// Sizes the replica sets to the deployment's count (`scale`): the one active RS
    /// takes it all; during a rollout, the difference is shared in proportion.
    async fn scale(&self, d: &Deployment, family: &mut Family) -> Result<()> {
        let want = replicas(d);
        let mut active: Vec<&ReplicaSet> = family
            .all()
            .into_iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .collect();
        let target = match active.len() {
            0 => family
                .new_rs
                .as_ref()
                .or_else(|| family.old.iter().max_by(|a, b| by_creation(a, b))),
            1 => active.first().copied(),
            _ => None,
        };
        if let Some(rs) = target {
            if rs_replicas(rs) != want {
                let rs = rs.clone();
                self.scale_rs(&rs, want, d).await?;
            }
            return Ok(());
        }
        // The new RS saturated: the old ones go.
        if let Some(new_rs) = family.new_rs.as_ref() {
            if rs_replicas(new_rs) == want
                && desired_annotation(new_rs) == Some(want)
                && available(new_rs) == want
            {
                for rs in family.old.clone().iter().filter(|rs| rs_replicas(rs) > 0) {
                    self.scale_rs(rs, 0, d).await?;
                }
                return Ok(());
            }
        }
        if !is_rolling(d) {
            return Ok(());
        }
        let current: i32 = active.iter().map(|rs| rs_replicas(rs)).sum();
        let allowed = if want > 0 { want + max_surge(d) } else { 0 };
        let to_add = allowed - current;
        if to_add > 0 {
            // Larger first, then newer.
            active.sort_by(|a, b| {
                rs_replicas(b)
                    .cmp(&rs_replicas(a))
                    .then_with(|| by_creation(b, a))
            });
        } else {
            // Larger first, then older.
            active.sort_by(|a, b| {
                rs_replicas(b)
                    .cmp(&rs_replicas(a))
                    .then_with(|| by_creation(a, b))
            });
        }
        let mut added = 0;
        let mut sizes: HashMap<String, i32> = HashMap::new();
        for rs in &active {
            let share = if to_add != 0 {
                proportion(rs, d, to_add, added)
            } else {
                0
            };
            added += share;
            sizes.insert(rs.name_any(), rs_replicas(rs) + share);
        }
        if to_add != 0 {
            // Rounding leftovers go to the largest.
            if let Some(first) = active.first() {
                let size = sizes.entry(first.name_any()).or_insert(0);
                *size = (*size + to_add - added).max(0);
            }
        }
        let active: Vec<ReplicaSet> = active.into_iter().cloned().collect();
        for rs in &active {
            let size = sizes
                .get(&rs.name_any())
                .copied()
                .unwrap_or(rs_replicas(rs));
            self.scale_rs(rs, size, d).await?;
        }
        Ok(())
    }

    /// Sets an RS's size and its desired/max annotations.
    async fn scale_rs(&self, rs: &ReplicaSet, size: i32, d: &Deployment) -> Result<ReplicaSet> {
        let want = replicas(d);
        let max = want + max_surge(d);
        let size_changed = rs_replicas(rs) != size;
        if !size_changed && !replicas_annotations_need_update(rs, want, max) {
            return Ok(rs.clone());
        }
        let mut updated = rs.clone();
        {
            let spec = &mut updated.spec;
            spec.replicas = Some(size);
        }
        set_replicas_annotations(&mut updated, want, max);
        let ns = rs.namespace().unwrap_or_default();
        let written = self
            .rs_api(&ns)
            .replace(&rs.name_any(), &PostParams::default(), &updated)
            .await?;
        if size_changed {
            let direction = if size > rs_replicas(rs) { "up" } else { "down" };
            let note = format!(
                "Scaled {direction} replica set {} from {} to {size}",
                rs.name_any(),
                rs_replicas(rs)
            );
            tracing::info!(deployment = %key_of(d), "{note}");
            self.events.normal(d, "ScalingReplicaSet", note).await;
        }
        Ok(written)
    }

    async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let family = self.family(d, rs_list, true).await?;
        let Some(new_rs) = family.new_rs.clone() else {
            return Err(Error::Other("no new replica set".into()));
        };
        let all = family.all();
        let want = replicas(d);

        // Scale the new RS up (or down to the desired count).
        if rs_replicas(&new_rs) != want {
            let size = if rs_replicas(&new_rs) > want {
                want
            } else {
                new_rs_new_replicas(d, &all, &new_rs)
            };
            if size != rs_replicas(&new_rs) {
                self.scale_rs(&new_rs, size, d).await?;
                return self.sync_rollout_status(d, &family).await;
            }
        }

        // Scale old RSs down: first unhealthy pods, then available ones within budget.
        let budget = max_scaled_down(d, &all, Some(&new_rs));
        let mut old: Vec<ReplicaSet> = family
            .old
            .iter()
            .filter(|rs| rs_replicas(rs) > 0)
            .cloned()
            .collect();
        if !old.is_empty() && budget > 0 {
            old.sort_by(by_creation);
            let mut cleaned = 0;
            for rs in old.iter_mut() {
                if cleaned >= budget {
                    break;
                }
                let unhealthy = rs_replicas(rs) - available(rs);
                if rs_replicas(rs) == 0 || unhealthy <= 0 {
                    continue;
                }
                let down = (budget - cleaned).min(unhealthy);
                *rs = self.scale_rs(rs, rs_replicas(rs) - down, d).await?;
                cleaned += down;
            }
            let all_now: Vec<&ReplicaSet> = old.iter().chain(Some(&new_rs)).collect();
            let total = available_scale_down(d, &all_now);
            let mut scaled = 0;
            for rs in old.iter() {
                if scaled >= total {
                    break;
                }
                if rs_replicas(rs) == 0 {
                    continue;
                }
                let down = rs_replicas(rs).min(total - scaled);
                self.scale_rs(rs, rs_replicas(rs) - down, d).await?;
                scaled += down;
            }
            if cleaned + scaled > 0 {
                return self.sync_rollout_status(d, &family).await;
            }
        }

        let status = calculate_status(&all, Some(&new_rs), d, Timestamp::now());
        if complete(d, &status) {
            self.cleanup(d, &family.old).await?;
        }
        self.sync_rollout_status(d, &family).await
    }

    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Result<Option<Duration>> {
        let mut family = self.family(d, rs_list.clone(), false).await?;
        let mut scaled_down = false;
        for rs in family.old.clone().iter().filter(|rs| rs_replicas(rs) > 0) {
            self.scale_rs(rs, 0, d).await?;
            scaled_down = true;
        }
        if scaled_down || self.old_pods_running(&family) {
            return self.sync_rollout_status(d, &family).await;
        }
        if family.new_rs.is_none() {
            family = self.family(d, rs_list, true).await?;
        }
        if let Some(new_rs) = family.new_rs.clone() {
            self.scale_rs(&new_rs, replicas(d), d).await?;
        }
        let status = calculate_status(&family.all(), family.new_rs.as_ref(), d, Timestamp::now());
        if complete(d, &status) {
            self.cleanup(d, &family.old).await?;
        }
        self.sync_rollout_status(d, &family).await
    }

    /// Whether any pod of an old RS may still run (Recreate waits for none).
    fn old_pods_running(&self, family: &Family) -> bool {
        if family
            .old
            .iter()
            .any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return true;
        }
        let old_uids: Vec<&str> = family
            .old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        self.pods.state().iter().any(|pod| {
            owner::controller_of(&pod.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
                && !matches!(crate::pods::phase(pod), "Failed" | "Succeeded")
        })
    }

    /// Deletes the oldest unused replica sets beyond `revisionHistoryLimit`.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<()> {
        let Some(limit) = d.spec.revision_history_limit else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            revision(a)
                .cmp(&revision(b))
                .then_with(|| by_creation(a, b))
        });
        let ns = d.namespace().unwrap_or_default();
        for rs in cleanable.into_iter().take(excess as usize) {
            let status = rs.status.clone().unwrap_or_default();
            if status.replicas != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation > status.observed_generation
            {
                continue;
            }
            tracing::info!(deployment = %key_of(d), rs = %rs.name_any(), "deleting old replica set");
            crate::error::ignore_not_found(
                self.rs_api(&ns)
                    .delete(&rs.name_any(), &DeleteParams::default())
                    .await,
            )?;
        }
        Ok(())
    }

    /// Status with the Progressing condition (`syncRolloutStatus`); asks to come back
    /// when the progress deadline would pass.
    async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        family: &Family,
    ) -> Result<Option<Duration>> {
        let now = Timestamp::now();
        let mut status = calculate_status(&family.all(), family.new_rs.as_ref(), d, now);
        let new_name = family
            .new_rs
            .as_ref()
            .map(|rs| rs.name_any())
            .unwrap_or_default();
        match progress_deadline(d) {
            None => remove_condition(&mut status, "Progressing"),
            Some(_) => {
                let current = condition(&status, "Progressing").cloned();
                if current.as_ref().and_then(|c| c.reason.as_deref()) != Some(TIMED_OUT) {
                    if complete(d, &status) {
                        let message =
                            format!("ReplicaSet \"{new_name}\" has successfully progressed.");
                        set_condition(
                            &mut status,
                            new_condition("Progressing", "True", NEW_RS_AVAILABLE, message, now),
                        );
                    } else if progressing(d, &status) {
                        let message = format!("ReplicaSet \"{new_name}\" is progressing.");
                        let mut cond =
                            new_condition("Progressing", "True", RS_UPDATED, message, now);
                        if let Some(current) =
                            current.filter(|c| c.status.as_deref() == Some("True"))
                        {
                            cond.last_transition_time = current.last_transition_time;
                        }
                        // Always refresh: the update time is the deadline's start.
                        remove_condition(&mut status, "Progressing");
                        set_condition(&mut status, cond);
                    } else if timed_out(d, &status, now) {
                        let message =
                            format!("ReplicaSet \"{new_name}\" has timed out progressing.");
                        set_condition(
                            &mut status,
                            new_condition("Progressing", "False", TIMED_OUT, message, now),
                        );
                    }
                }
            }
        }
        // The replica sets' failures show on the deployment.
        let failure = family.all().into_iter().find_map(|rs| {
            rs.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_.as_deref() == Some("ReplicaFailure"))
                .cloned()
        });
        match failure {
            Some(c) => set_condition(
                &mut status,
                new_condition(
                    "ReplicaFailure",
                    c.status.as_deref().unwrap_or("True"),
                    c.reason.as_deref().unwrap_or_default(),
                    c.message.unwrap_or_default(),
                    now,
                ),
            ),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        let requeue = requeue_after(d, &status, now);
        self.write_status(d, status).await?;
        Ok(requeue)
    }
}

/// When a stuck rollout should be looked at again to time it out.
fn requeue_after(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let current = condition(status, "Progressing")?;
    if complete(d, status) || current.reason.as_deref() == Some(TIMED_OUT) {
        return None;
    }
    let from = current.last_update_time.as_ref()?.0.as_second();
    let left = from + i64::from(deadline) - now.as_second();
    Some(Duration::from_secs(left.max(0).unsigned_abs() + 1))
}

impl crate::controller::Reconcile for DeploymentController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    /// Reconciles one deployment.
    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(cached) = self.deployments.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        let mut d = (*cached).clone();
        let spec = d.spec.clone();
        if spec.selector == LabelSelector::default() {
            // Upstream: a deployment selecting everything is left alone, only observed.
            tracing::warn!(deployment = key, "selecting all pods is not allowed");
            return Ok(None);
        }
        let rs_list = self.claim_replica_sets(&d).await?;

        if d.metadata.deletion_timestamp.is_some() {
            let family = self.family(&mut d, rs_list, false).await?;
            return self.sync_status_only(&d, &family).await;
        }
        self.check_paused_conditions(&mut d).await?;
        if spec.paused == Some(true) {
            return self.sync_scale(&mut d, rs_list).await;
        }
        if self.is_scaling_event(&mut d, &rs_list).await? {
            return self.sync_scale(&mut d, rs_list).await;
        }
        if is_rolling(&d) {
            self.rollout_rolling(&mut d, rs_list).await
        } else {
            self.rollout_recreate(&mut d, rs_list).await
        }
    }
}
