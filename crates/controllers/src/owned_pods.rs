//! Routes pod events to the controller that owns (or may adopt) each pod, as upstream's
//! ReplicaSet and Job controllers both do: creations and deletions settle the owner's
//! expectations, any change queues the owner, and an orphan queues every owner whose
//! selector matches it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::NamespaceResourceScope;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;

use crate::controller::key_of;
use crate::expectations::Expectations;
use crate::owner;
use crate::queue::WorkQueue;

pub struct PodEvents<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub owners: Store<K>,
    pub queue: Arc<WorkQueue>,
    pub expectations: Arc<Expectations>,
    /// The owner's pod selector (`None`: it adopts nothing).
    pub selector: fn(&K) -> Option<LabelSelector>,
}

impl<K> PodEvents<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + 'static,
{
    /// Routes the pod informer's events through this router.
    pub fn register(self, pods: &crate::informer::Informer<Pod>)
    where
        K: Send + Sync,
    {
        pods.add_handler(move |old, new| self.handle(old, new));
    }

    /// The handler for the pod informer: `(old, new)` as the informer gives them.
    pub fn handle(&self, old: Option<&Pod>, new: Option<&Pod>) {
        match (old, new) {
            (None, Some(pod)) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    return self.pod_deleted(pod);
                }
                match owner::controller_of(&pod.metadata) {
                    Some(reference) => {
                        if let Some(owner) = self.owner_of(pod, reference) {
                            let key = key_of(owner.as_ref());
                            self.expectations.creation_observed(&key);
                            self.queue.add(key);
                        }
                    }
                    None => self.enqueue_matching(pod),
                }
            }
            (Some(old), Some(pod)) => {
                if old.metadata.resource_version == pod.metadata.resource_version {
                    return;
                }
                if pod.metadata.deletion_timestamp.is_some()
                    && old.metadata.deletion_timestamp.is_none()
                {
                    // A pod marked for deletion counts as deleted: its replacement may start.
                    self.pod_deleted(pod);
                }
                let old_ref = owner::controller_of(&old.metadata);
                let new_ref = owner::controller_of(&pod.metadata);
                if old_ref.map(|r| &r.uid) != new_ref.map(|r| &r.uid) {
                    if let Some(owner) = old_ref.and_then(|r| self.owner_of(old, r)) {
                        self.queue.add(key_of(owner.as_ref()));
                    }
                }
                match new_ref {
                    Some(reference) => {
                        if let Some(owner) = self.owner_of(pod, reference) {
                            self.queue.add(key_of(owner.as_ref()));
                        }
                    }
                    None => {
                        if old.metadata.labels != pod.metadata.labels || old_ref.is_some() {
                            self.enqueue_matching(pod);
                        }
                    }
                }
            }
            (Some(pod), None) => self.pod_deleted(pod),
            (None, None) => {}
        }
    }

    /// The owner `reference` names, if it is in the cache with the same UID.
    pub fn owner_of(&self, pod: &Pod, reference: &OwnerReference) -> Option<Arc<K>> {
        if reference.kind != K::kind(&()) {
            return None;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let owner = self
            .owners
            .get(&ObjectRef::new(&reference.name).within(ns))?;
        (owner.meta().uid.as_deref() == Some(reference.uid.as_str())).then_some(owner)
    }

    /// Queues every owner whose selector matches an orphan pod, so one of them adopts it.
    fn enqueue_matching(&self, pod: &Pod) {
        for owner in self.owners.state() {
            if owner.meta().namespace != pod.metadata.namespace {
                continue;
            }
            let Some(Ok(selector)) = (self.selector)(&owner).map(|s| owner::selector(&s)) else {
                continue;
            };
            if !selector.selects_all() && owner::matches(&selector, &pod.metadata) {
                self.queue.add(key_of(owner.as_ref()));
            }
        }
    }

    fn pod_deleted(&self, pod: &Pod) {
        let Some(reference) = owner::controller_of(&pod.metadata) else {
            return;
        };
        if let Some(owner) = self.owner_of(pod, reference) {
            let key = key_of(owner.as_ref());
            self.expectations.deletion_observed(&key, &key_of(pod));
            self.queue.add(key);
        }
    }
}
