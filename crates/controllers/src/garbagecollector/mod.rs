//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! `Foreground` and `Orphan` deletion policies, as upstream's collector does.
//!
//! ```text
//! metadata watch of every deletable resource ──► graph (owner → dependents)
//!        │ after each change, the graph names what needs a look
//!        ▼
//! attempt-to-delete queue ──► delete a dependent whose owners are all gone (or waiting
//!                             in the foreground), drop references to gone owners, or
//!                             lift `foregroundDeletion` once no blocking dependent is left
//! attempt-to-orphan queue ──► strip the owner's references from its dependents, then
//!                             lift its `orphan` finalizer
//! ```
//!
//! Workers never trust the graph alone: before deleting anything they read the object
//! and each of its owners from the API server, so a lagging watch costs a retry, not a
//! wrong deletion. Deletions carry the dependent's UID as a precondition.

pub mod graph;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::discovery::verbs;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::watch;

use crate::controller::run_workers;
use crate::discovery::{served_resources, ServedResource as Resource};
use crate::error::{is_status, Error, Result};
use crate::informer::InformerFactory;
use crate::queue::WorkQueue;
use graph::{Graph, ObjectId, Observed, Work, FOREGROUND, ORPHAN};

/// How often discovery runs again, to start watching resources added since (CRDs).
const REDISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

/// The resources known from discovery, by key and by `(group, kind)`.
#[derive(Default)]
struct Resources {
    by_key: HashMap<String, Resource>,
    by_kind: HashMap<(String, String), String>,
}

impl Resources {
    /// The resource of an owner reference, at the version discovery prefers (any served
    /// version reaches the same object).
    fn for_owner(&self, owner: &OwnerReference) -> Option<&Resource> {
        let group = group_of(&owner.api_version);
        let key = self.by_kind.get(&(group.to_string(), owner.kind.clone()))?;
        self.by_key.get(key)
    }
}

/// The group of an `apiVersion` (`""` for the core group's `v1`).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

pub struct GarbageCollector {
    client: Client,
    graph: Mutex<Graph>,
    resources: RwLock<Resources>,
    attempt_to_delete: Arc<WorkQueue>,
    attempt_to_orphan: Arc<WorkQueue>,
    /// Resources whose first list has reached the graph.
    synced: watch::Sender<HashSet<String>>,
}

/// The owner references of a dependent, sorted by what their owners are doing.
#[derive(Debug, Default)]
struct Owners {
    solid: Vec<OwnerReference>,
    dangling: Vec<OwnerReference>,
    waiting_for_dependents: Vec<OwnerReference>,
}

impl GarbageCollector {
    /// The collector writes as its own service account; it watches through its own
    /// informers (every resource, found by discovery), not the factory's.
    pub fn new(factory: &InformerFactory) -> Arc<GarbageCollector> {
        Arc::new(GarbageCollector {
            client: factory.client_for("generic-garbage-collector"),
            graph: Mutex::new(Graph::default()),
            resources: RwLock::new(Resources::default()),
            attempt_to_delete: factory.queue("garbage_collector_attempt_to_delete"),
            attempt_to_orphan: factory.queue("garbage_collector_attempt_to_orphan"),
            synced: watch::Sender::new(HashSet::new()),
        })
    }

    /// Watches every deletable resource and runs `workers` workers per queue.
    pub async fn run(self: Arc<Self>, workers: usize) {
        self.discover_and_watch().await;
        // As upstream, wait for the watches to fill the graph, but not forever: a resource
        // that cannot be listed must not stop collection of all the others.
        let wanted: HashSet<String> = self.read_resources().by_key.keys().cloned().collect();
        let mut synced = self.synced.subscribe();
        let all_synced = synced.wait_for(|done| wanted.iter().all(|k| done.contains(k)));
        if tokio::time::timeout(Duration::from_secs(30), all_synced)
            .await
            .is_err()
        {
            tracing::warn!(
                "garbage collector: not every resource listed within 30 s; collecting anyway"
            );
        }
        tracing::info!(resources = wanted.len(), "garbage collector synced");

        let rediscover = {
            let me = self.clone();
            async move {
                loop {
                    tokio::time::sleep(REDISCOVERY_INTERVAL).await;
                    me.discover_and_watch().await;
                }
            }
        };
        let deleter = {
            let me = self.clone();
            run_workers(self.attempt_to_delete.clone(), workers, move |uid| {
                let me = me.clone();
                async move { me.attempt_to_delete_item(&uid).await.map(|()| None) }
            })
        };
        let orphaner = {
            let me = self.clone();
            run_workers(self.attempt_to_orphan.clone(), workers, move |uid| {
                let me = me.clone();
                async move { me.orphan_dependents(&uid).await.map(|()| None) }
            })
        };
        tokio::join!(rediscover, deleter, orphaner);
    }

    fn read_resources(&self) -> std::sync::RwLockReadGuard<'_, Resources> {
        self.resources.read().unwrap_or_else(|e| e.into_inner())
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds the deletable resources and starts a watch for each one not watched yet.
    async fn discover_and_watch(self: &Arc<Self>) {
        let discovered =
            match served_resources(&self.client, &[verbs::LIST, verbs::WATCH, verbs::DELETE]).await
            {
                Ok(found) => found,
                Err(error) => {
                    tracing::warn!(%error, "garbage collector: discovery failed; retrying later");
                    return;
                }
            };
        let mut fresh = Vec::new();
        {
            let mut resources = self.resources.write().unwrap_or_else(|e| e.into_inner());
            for resource in discovered {
                let key = resource.key();
                resources.by_kind.insert(
                    (resource.api.group.clone(), resource.api.kind.clone()),
                    key.clone(),
                );
                if let std::collections::hash_map::Entry::Vacant(slot) = resources.by_key.entry(key)
                {
                    slot.insert(resource.clone());
                    fresh.push(resource);
                }
            }
        }
        for resource in fresh {
            let me = self.clone();
            tokio::spawn(async move { me.monitor(resource).await });
        }
    }

    /// Feeds one resource's metadata watch into the graph.
    async fn monitor(self: Arc<Self>, resource: Resource) {
        let key = resource.key();
        // Metadata only: the graph needs nothing else, and it keeps the watch light.
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.client.clone(), &resource.api);
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut listed = HashSet::new();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::debug!(resource = %key, %error, "garbage collector: watch failed");
                    continue;
                }
            };
            let work = match event {
                Event::Init => {
                    listed.clear();
                    Work::default()
                }
                Event::InitApply(object) => {
                    listed.insert(object.metadata.uid.clone().unwrap_or_default());
                    self.graph().upsert(observed(&key, &object))
                }
                Event::Apply(object) => self.graph().upsert(observed(&key, &object)),
                Event::Delete(object) => {
                    let uid = object.metadata.uid.clone().unwrap_or_default();
                    self.graph().remove(&uid)
                }
                Event::InitDone => {
                    // What the re-list no longer shows was deleted meanwhile.
                    let mut graph = self.graph();
                    let mut work = Work::default();
                    for uid in graph.uids_of(&key) {
                        if !listed.contains(&uid) {
                            let gone = graph.remove(&uid);
                            work.attempt_to_delete.extend(gone.attempt_to_delete);
                        }
                    }
                    drop(graph);
                    self.synced.send_modify(|done| {
                        done.insert(key.clone());
                    });
                    work
                }
            };
            for uid in work.attempt_to_delete {
                self.attempt_to_delete.add(uid);
            }
            for uid in work.attempt_to_orphan {
                self.attempt_to_orphan.add(uid);
            }
        }
    }

    /// Looks at one object: deletes it if its owners are gone, drops references to gone
    /// owners, or finishes its own foreground deletion.
    async fn attempt_to_delete_item(&self, uid: &str) -> Result<()> {
        let Some(node) = self.graph().observed(uid).cloned() else {
            return Ok(());
        };
        // Already on its way out, and not waiting for anyone: nothing to do.
        if node.deleting && !node.deleting_dependents() {
            return Ok(());
        }
        let resource = self.resource(&node.id.resource)?;
        let api = resource.api(&self.client, node.id.namespace.as_deref());
        let Some(latest) = api.get_metadata_opt(&node.id.name).await? else {
            return Ok(());
        };
        if latest.metadata.uid.as_deref() != Some(uid) {
            // The name now belongs to another object; the watch will say the old one went.
            return Ok(());
        }
        let latest = observed(&node.id.resource, &latest);
        if latest.deleting_dependents() {
            return self.finish_foreground_deletion(&api, &latest).await;
        }
        if latest.owners.is_empty() {
            return Ok(());
        }

        let owners = self.classify_owners(&latest).await?;
        tracing::debug!(object = %describe(&latest.id), ?owners, "garbage collector: owners");
        if !owners.solid.is_empty() {
            let stale: HashSet<&str> = owners
                .dangling
                .iter()
                .chain(&owners.waiting_for_dependents)
                .map(|o| o.uid.as_str())
                .collect();
            if !stale.is_empty() {
                self.patch_owner_references(&api, &latest, |r| {
                    (!stale.contains(r.uid.as_str())).then(|| r.clone())
                })
                .await?;
            }
            return Ok(());
        }

        let has_dependents = !self.graph().dependents(uid).is_empty();
        let policy = if !owners.waiting_for_dependents.is_empty() && has_dependents {
            // An owner waits for this object, and this object has dependents of its own:
            // it must go in the foreground too. Stop blocking the owner first, or both
            // would wait on each other.
            let waiting: HashSet<&str> = owners
                .waiting_for_dependents
                .iter()
                .map(|o| o.uid.as_str())
                .collect();
            self.patch_owner_references(&api, &latest, |r| {
                let mut r = r.clone();
                if waiting.contains(r.uid.as_str()) {
                    r.block_owner_deletion = Some(false);
                }
                Some(r)
            })
            .await?;
            "Foreground"
        } else if latest.finalizers.iter().any(|f| f == ORPHAN) {
            "Orphan"
        } else if latest.finalizers.iter().any(|f| f == FOREGROUND) {
            "Foreground"
        } else {
            "Background"
        };
        tracing::info!(object = %describe(&latest.id), policy, "garbage collector: deleting an object whose owners are gone");
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            propagation_policy: Some(match policy {
                "Foreground" => kube::api::PropagationPolicy::Foreground,
                "Orphan" => kube::api::PropagationPolicy::Orphan,
                _ => kube::api::PropagationPolicy::Background,
            }),
            ..Default::default()
        };
        match api.delete(&latest.id.name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by a namesake: nothing of ours left to delete.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Sorts `dependent`'s owners by reading each from the API server.
    async fn classify_owners(&self, dependent: &Observed) -> Result<Owners> {
        let mut owners = Owners::default();
        for reference in &dependent.owners {
            let resource = self
                .read_resources()
                .for_owner(reference)
                .cloned()
                .ok_or_else(|| {
                    Error::Other(format!(
                        "owner kind {} {} is not served; cannot tell if {} is gone",
                        reference.api_version, reference.kind, reference.name
                    ))
                })?;
            // A namespaced dependent's namespaced owners live in its namespace; a
            // cluster-scoped dependent cannot have namespaced owners (upstream treats such
            // a reference as unresolvable, so it is dangling).
            let namespace = dependent.id.namespace.as_deref();
            if resource.namespaced() && namespace.is_none() {
                owners.dangling.push(reference.clone());
                continue;
            }
            let api = resource.api(&self.client, namespace);
            let owner = api.get_metadata_opt(&reference.name).await?;
            match owner {
                Some(owner) if owner.metadata.uid.as_deref() == Some(reference.uid.as_str()) => {
                    let owner = observed(&resource.key(), &owner);
                    if owner.deleting_dependents() {
                        owners.waiting_for_dependents.push(reference.clone());
                    } else {
                        owners.solid.push(reference.clone());
                    }
                }
                _ => owners.dangling.push(reference.clone()),
            }
        }
        Ok(owners)
    }

    /// An owner in foreground deletion: once no dependent blocks it, lift the finalizer;
    /// until then, make sure each blocking dependent is being deleted.
    async fn finish_foreground_deletion(
        &self,
        api: &Api<DynamicObject>,
        owner: &Observed,
    ) -> Result<()> {
        let blocking = self.graph().blocking_dependents(&owner.id.uid);
        if blocking.is_empty() {
            tracing::info!(object = %describe(&owner.id), "garbage collector: dependents gone; finishing foreground deletion");
            return self.remove_finalizer(api, owner, FOREGROUND).await;
        }
        for dependent in blocking {
            let deleting = self
                .graph()
                .observed(&dependent)
                .is_some_and(|d| d.deleting && !d.deleting_dependents());
            if !deleting {
                self.attempt_to_delete.add(dependent);
            }
        }
        Ok(())
    }

    /// Carries out the `Orphan` policy for the owner `uid`: its dependents lose their
    /// references to it, then the owner its `orphan` finalizer.
    async fn orphan_dependents(&self, uid: &str) -> Result<()> {
        let Some(owner) = self.graph().observed(uid).cloned() else {
            return Ok(());
        };
        let dependents = self.graph().dependents(uid);
        for dependent in dependents {
            let Some(node) = self.graph().observed(&dependent).cloned() else {
                continue;
            };
            let resource = self.resource(&node.id.resource)?;
            let api = resource.api(&self.client, node.id.namespace.as_deref());
            let Some(latest) = api.get_metadata_opt(&node.id.name).await? else {
                continue;
            };
            if latest.metadata.uid.as_deref() != Some(dependent.as_str()) {
                continue;
            }
            let latest = observed(&node.id.resource, &latest);
            self.patch_owner_references(&api, &latest, |r| (r.uid != uid).then(|| r.clone()))
                .await?;
        }
        let resource = self.resource(&owner.id.resource)?;
        let api = resource.api(&self.client, owner.id.namespace.as_deref());
        let Some(latest) = api.get_metadata_opt(&owner.id.name).await? else {
            return Ok(());
        };
        if latest.metadata.uid.as_deref() != Some(uid) {
            return Ok(());
        }
        tracing::info!(object = %describe(&owner.id), "garbage collector: dependents orphaned");
        self.remove_finalizer(&api, &observed(&owner.id.resource, &latest), ORPHAN)
            .await
    }

    fn resource(&self, key: &str) -> Result<Resource> {
        self.read_resources()
            .by_key
            .get(key)
            .cloned()
            .ok_or_else(|| Error::Other(format!("resource {key} is no longer served")))
    }

    /// Rewrites `object`'s owner references through `keep` (which may change or drop
    /// each), guarded by the object's UID and the references as they were read.
    async fn patch_owner_references(
        &self,
        api: &Api<DynamicObject>,
        object: &Observed,
        keep: impl Fn(&OwnerReference) -> Option<OwnerReference>,
    ) -> Result<()> {
        let remaining: Vec<OwnerReference> = object.owners.iter().filter_map(keep).collect();
        let value = if remaining.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::to_value(&remaining).map_err(|e| Error::Other(e.to_string()))?
        };
        let read = serde_json::to_value(&object.owners).map_err(|e| Error::Other(e.to_string()))?;
        let ops = if value.is_null() {
            serde_json::json!([
                {"op": "test", "path": "/metadata/uid", "value": object.id.uid},
                {"op": "test", "path": "/metadata/ownerReferences", "value": read},
                {"op": "remove", "path": "/metadata/ownerReferences"},
            ])
        } else {
            serde_json::json!([
                {"op": "test", "path": "/metadata/uid", "value": object.id.uid},
                {"op": "test", "path": "/metadata/ownerReferences", "value": read},
                {"op": "replace", "path": "/metadata/ownerReferences", "value": value},
            ])
        };
        let patch = serde_json::from_value(ops).map_err(|e| Error::Other(e.to_string()))?;
        self.json_patch(api, &object.id.name, patch).await
    }

    /// Removes one finalizer, guarded by the UID and the finalizers as they were read.
    async fn remove_finalizer(
        &self,
        api: &Api<DynamicObject>,
        object: &Observed,
        finalizer: &str,
    ) -> Result<()> {
        let Some(patch) =
            crate::owner::finalizer_removal(&object.id.uid, &object.finalizers, finalizer)
        else {
            return Ok(());
        };
        self.json_patch(api, &object.id.name, patch).await
    }

    async fn json_patch(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        patch: json_patch::Patch,
    ) -> Result<()> {
        // Gone: nothing left to change. A failed `test` (the object changed since it was
        // read) is an error: the key is looked at again.
        crate::error::ignore_not_found(
            api.patch_metadata(name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await,
        )
    }
}

/// The graph's view of an object from a metadata watch or read.
fn observed(resource: &str, object: &PartialObjectMeta<DynamicObject>) -> Observed {
    let meta = &object.metadata;
    Observed {
        id: ObjectId {
            resource: resource.to_string(),
            namespace: meta.namespace.clone().filter(|ns| !ns.is_empty()),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        },
        owners: meta.owner_references.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
    }
}

fn describe(id: &ObjectId) -> String {
    match &id.namespace {
        Some(ns) => format!("{} {ns}/{}", id.resource, id.name),
        None => format!("{} {}", id.resource, id.name),
    }
}
