//! Template history as ControllerRevisions, shared by DaemonSets and StatefulSets as
//! upstream's `controller/history` is: one revision per template (named
//! `<owner>-<hash>`), numbered in the order templates were used, its data the strategic
//! merge patch that restores the template (so `kubectl rollout undo` can apply it).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};

use crate::error::{is_status, Error, Result};
use crate::owner;

/// The label that ties a pod (and a ControllerRevision) to a template version.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// The revisions `owner` controls, from the cache.
pub fn revisions_of<K: Resource>(
    revisions: &Store<ControllerRevision>,
    owner: &K,
) -> Vec<Arc<ControllerRevision>> {
    let uid = owner.meta().uid.as_deref();
    revisions
        .state()
        .into_iter()
        .filter(|r| {
            r.metadata.namespace == owner.meta().namespace
                && owner::controller_of(&r.metadata).is_some_and(|o| Some(o.uid.as_str()) == uid)
        })
        .collect()
}

/// The owner's current template as a revision: its hash (with the owner's collision
/// count) and its name, recorded as the newest revision unless the owner is being deleted.
pub async fn current<K>(
    client: &Client,
    revisions: &Store<ControllerRevision>,
    owner: &K,
    template: &PodTemplateSpec,
    labels: &BTreeMap<String, String>,
    collision_count: Option<i32>,
) -> Result<(String, String)>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    let hash = crate::deployment::util::compute_hash(template, collision_count);
    let name = match owner.meta().deletion_timestamp {
        None => record(client, revisions, owner, template, labels, &hash).await?,
        Some(_) => format!("{}-{hash}", owner.name_any()),
    };
    Ok((hash, name))
}

/// Makes sure `template` (whose hash is `hash`) is recorded as `owner`'s newest revision;
/// returns the revision's name.
pub async fn record<K>(
    client: &Client,
    revisions: &Store<ControllerRevision>,
    owner: &K,
    template: &PodTemplateSpec,
    labels: &BTreeMap<String, String>,
    hash: &str,
) -> Result<String>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    let ns = owner.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let name = format!("{}-{hash}", owner.name_any());
    let ours = revisions_of(revisions, owner);
    let newest = ours.iter().filter_map(|r| r.revision).max().unwrap_or(0);
    if let Some(existing) = ours
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
    {
        if existing.revision != Some(newest) {
            // Back to an older template (a rollback): it becomes the newest revision.
            let mut bumped = existing.as_ref().clone();
            bumped.revision = Some(newest + 1);
            api.replace(&name, &PostParams::default(), &bumped).await?;
        }
        return Ok(name);
    }
    let mut template_json =
        serde_json::to_value(template).map_err(|e| Error::Other(e.to_string()))?;
    template_json["$patch"] = serde_json::json!("replace");
    let mut revision_labels = labels.clone();
    revision_labels.insert(REVISION_HASH.into(), hash.to_string());
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns),
            labels: Some(revision_labels),
            owner_references: Some(vec![owner::controller_ref(owner)]),
            ..Default::default()
        },
        data: RawExtension(serde_json::json!({"spec": {"template": template_json}})),
        revision: Some(newest + 1),
    };
    match api.create(&PostParams::default(), &revision).await {
        Ok(_) => Ok(name),
        // Made by an earlier sync whose cache had not caught up.
        Err(e) if is_status(&e, 409) => Ok(name),
        Err(e) => Err(e.into()),
    }
}
