//! The CRD controller, in the API server as upstream's apiextensions controllers are:
//! for each CustomResourceDefinition it accepts the names (`NamesAccepted`,
//! `status.acceptedNames`), puts the served versions in the catalogue, and only then
//! says `Established`, so a client that waited for the condition finds the resources.
//! A deleted CRD (held by the `customresourcecleanup` finalizer) stops taking creates,
//! has every custom object deleted, and goes once they are all gone.
//!
//! Fed by the watch cache (the CRDs' prefix); terminating CRDs are looked at again
//! every few seconds, since objects with finalizers of their own go in their own time.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::definition::{self, condition_true, strings};
use super::CLEANUP_FINALIZER;
use crate::object::{self, set_condition, status_mut};
use crate::registry::{Action, DeleteOptions, Registry};
use crate::resources::ResourceInfo;
use crate::status::ApiResult;

const RETRY: Duration = Duration::from_secs(2);

fn crds(registry: &Registry) -> ApiResult<Arc<ResourceInfo>> {
    registry
        .catalogue
        .get(super::GROUP, "v1", "customresourcedefinitions")
        .ok_or_else(|| crate::status::ApiError::internal("CRDs are not served"))
}

/// Serves every CRD already stored (before the server listens, so custom resources are
/// routable from the first request), then follows changes in the background.
pub async fn start(registry: Arc<Registry>) -> anyhow::Result<()> {
    let resource = crds(&registry)?;
    let prefix = resource.key_prefix(None);
    let (snapshot, subscription) = registry.cache.subscribe_with_state(&prefix);
    for cached in &snapshot.objects {
        let name = cached.key.trim_start_matches(prefix.as_str()).to_string();
        if let Err(e) = reconcile(&registry, &name).await {
            tracing::warn!(crd = %name, error = %e.message, "CustomResourceDefinition not served yet");
        }
    }
    tokio::spawn(follow(registry, prefix, subscription.live));
    Ok(())
}

async fn follow(
    registry: Arc<Registry>,
    prefix: String,
    mut live: tokio::sync::broadcast::Receiver<Arc<crate::cache::CacheEvent>>,
) {
    let mut tick = tokio::time::interval(RETRY);
    loop {
        let names: Vec<String> = tokio::select! {
            event = live.recv() => match event {
                Ok(event) => match event.object.key.strip_prefix(prefix.as_str()) {
                    Some(name) => vec![name.to_string()],
                    None => continue,
                },
                // Missed events: look at every CRD again.
                Err(RecvError::Lagged(_)) => all_names(&registry, &prefix),
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => terminating_names(&registry, &prefix),
        };
        for name in names {
            if let Err(e) = reconcile(&registry, &name).await {
                tracing::warn!(crd = %name, error = %e.message, "reconciling CustomResourceDefinition");
            }
        }
    }
}

fn all_names(registry: &Registry, prefix: &str) -> Vec<String> {
    registry
        .cache
        .snapshot(prefix, None)
        .objects
        .iter()
        .map(|o| o.key.trim_start_matches(prefix).to_string())
        .collect()
}

fn terminating_names(registry: &Registry, prefix: &str) -> Vec<String> {
    registry
        .cache
        .snapshot(prefix, None)
        .objects
        .iter()
        .filter_map(|o| {
            let value = o.value().ok()?;
            object::meta_str(&value, "deletionTimestamp")?;
            Some(o.key.trim_start_matches(prefix).to_string())
        })
        .collect()
}

/// Brings one CRD's status and the catalogue in line with its spec.
async fn reconcile(registry: &Registry, name: &str) -> ApiResult<()> {
    let resource = crds(registry)?;
    let crd = match registry.get(&resource, None, name).await {
        Ok(crd) => crd,
        Err(e) if e.code == 404 => {
            registry.catalogue.set_custom(name, None);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if object::meta_str(&crd, "deletionTimestamp").is_some() {
        return clean_up(registry, &resource, name, crd).await;
    }
    let others: Vec<Value> = registry
        .cache
        .snapshot(&resource.key_prefix(None), None)
        .objects
        .iter()
        .filter_map(|o| o.value().ok())
        .filter(|o| object::name(o) != name)
        .collect();
    let mut desired = crd.clone();
    let accepted = accept_names(&mut desired, &others);
    let was_established = condition_true(&crd, "Established");
    if accepted || was_established {
        // Served before `Established` is written: whoever sees the condition can use it.
        registry
            .catalogue
            .set_custom(name, definition::served(&desired));
        set_condition(
            &mut desired,
            "Established",
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted",
        );
    } else {
        set_condition(
            &mut desired,
            "Established",
            "False",
            "NotAccepted",
            "not all names are accepted",
        );
    }
    if desired.get("status") != crd.get("status") {
        write_status(registry, &resource, name, desired.get("status").cloned()).await?;
    }
    Ok(())
}

/// Upstream's naming rules: each requested name is accepted unless another CRD of the
/// group already holds it (plurals, singulars and short names share one space, kinds and
/// list kinds another); a name in conflict keeps what was accepted before. Sets
/// `status.acceptedNames` and `NamesAccepted`; says whether every name was accepted.
fn accept_names(crd: &mut Value, others: &[Value]) -> bool {
    let group = crd.pointer("/spec/group").cloned().unwrap_or(Value::Null);
    let mut resources: Vec<String> = Vec::new();
    let mut kinds: Vec<String> = Vec::new();
    for other in others
        .iter()
        .filter(|o| o.pointer("/spec/group") == Some(&group))
    {
        let Some(accepted) = other.pointer("/status/acceptedNames") else {
            continue;
        };
        let text = |field: &str| {
            accepted
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        resources.extend(text("plural"));
        resources.extend(text("singular"));
        resources.extend(strings(accepted.get("shortNames")));
        kinds.extend(text("kind"));
        kinds.extend(text("listKind"));
    }
    let requested = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut accepted = crd
        .pointer("/status/acceptedNames")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut conflict: Option<(&str, String)> = None;
    for (field, reason) in [
        ("plural", "PluralConflict"),
        ("singular", "SingularConflict"),
    ] {
        if let Some(c) = claim(field, &requested, &mut accepted, &resources, reason) {
            conflict = Some(c);
        }
    }
    let held_short = strings(accepted.get("shortNames"));
    let clashes: Vec<String> = strings(requested.get("shortNames"))
        .into_iter()
        .filter(|s| !held_short.contains(s) && resources.contains(s))
        .map(|s| format!("{s:?} is already in use"))
        .collect();
    if clashes.is_empty() {
        if let Some(short) = requested.get("shortNames") {
            accepted["shortNames"] = short.clone();
        }
    } else {
        // Upstream's aggregate of several errors: `[a, b]`.
        let message = match clashes.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        conflict = Some(("ShortNamesConflict", message));
    }
    // Checked in upstream's order: the last conflict found is the one reported.
    for (field, reason) in [("kind", "KindConflict"), ("listKind", "ListKindConflict")] {
        if let Some(c) = claim(field, &requested, &mut accepted, &kinds, reason) {
            conflict = Some(c);
        }
    }
    if let Some(categories) = requested.get("categories") {
        accepted["categories"] = categories.clone();
    }
    if let Some(status) = status_mut(crd) {
        status.insert("acceptedNames".into(), accepted);
    }
    match conflict {
        None => {
            set_condition(
                crd,
                "NamesAccepted",
                "True",
                "NoConflicts",
                "no conflicts found",
            );
            true
        }
        Some((reason, message)) => {
            set_condition(crd, "NamesAccepted", "False", reason, &message);
            false
        }
    }
}

/// Accepts the requested `field` unless another CRD holds it: the conflict otherwise.
fn claim(
    field: &str,
    requested: &Value,
    accepted: &mut Value,
    taken: &[String],
    reason: &'static str,
) -> Option<(&'static str, String)> {
    let wanted = requested.get(field).and_then(Value::as_str).unwrap_or("");
    let held = accepted.get(field).and_then(Value::as_str).unwrap_or("");
    if wanted != held && taken.iter().any(|t| t == wanted) {
        return Some((reason, format!("{wanted:?} is already in use")));
    }
    accepted[field] = json!(wanted);
    None
}

async fn write_status(
    registry: &Registry,
    resource: &ResourceInfo,
    name: &str,
    status: Option<Value>,
) -> ApiResult<()> {
    registry
        .guaranteed_update(resource, None, name, false, |mut current| {
            match (&status, current.as_object_mut()) {
                (Some(s), Some(fields)) => {
                    fields.insert("status".into(), s.clone());
                    Ok(Action::Replace(current))
                }
                _ => Ok(Action::Keep),
            }
        })
        .await
        .map(|_| ())
}

/// What a DELETE of a CRD does first (upstream's CRD storage): hold it with the cleanup
/// finalizer and say it is terminating.
pub fn mark_terminating(crd: &mut Value) {
    let mut finalizers = object::finalizers(crd);
    if !finalizers.iter().any(|f| f == CLEANUP_FINALIZER) {
        finalizers.push(CLEANUP_FINALIZER.to_string());
    }
    object::metadata_mut(crd).insert("finalizers".into(), json!(finalizers));
    set_condition(
        crd,
        "Terminating",
        "True",
        "InstanceDeletionPending",
        "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
    );
}

/// A terminating CRD: creates refused (the catalogue says so), every object deleted,
/// and the finalizer lifted once none is left.
async fn clean_up(
    registry: &Registry,
    resource: &ResourceInfo,
    name: &str,
    crd: Value,
) -> ApiResult<()> {
    let served = definition::served(&crd);
    registry.catalogue.set_custom(name, served.clone());
    if !object::finalizers(&crd)
        .iter()
        .any(|f| f == CLEANUP_FINALIZER)
    {
        return Ok(());
    }
    let Some(storage) = served
        .as_ref()
        .and_then(|s| {
            s.resources
                .iter()
                .find(|r| r.api_version() == r.storage_version)
                .or(s.resources.first())
        })
        .cloned()
    else {
        // Never served: nothing can have been stored.
        return finish(registry, resource, name).await;
    };
    let mut in_progress = crd.clone();
    set_condition(
        &mut in_progress,
        "Terminating",
        "True",
        "InstanceDeletionInProgress",
        "CustomResource deletion is in progress",
    );
    if in_progress.get("status") != crd.get("status") {
        write_status(registry, resource, name, in_progress.get("status").cloned()).await?;
    }
    let prefix = storage.key_prefix(None);
    let remaining = registry.cache.snapshot(&prefix, None).objects;
    let options = DeleteOptions::default();
    for cached in &remaining {
        let rest = cached.key.trim_start_matches(prefix.as_str());
        let (namespace, object_name) = match rest.split_once('/') {
            Some((ns, n)) if storage.namespaced => (Some(ns), n),
            _ => (None, rest),
        };
        match registry
            .delete(&storage, namespace, object_name, &options, false)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let left = registry.cache.snapshot(&prefix, None).objects.len();
    if left > 0 && !remaining.is_empty() {
        // Some hold finalizers of their own (or the cache has not caught up): later.
        let current = registry.store.current_revision().await?;
        registry.cache.wait_for(current).await?;
        if !registry.cache.snapshot(&prefix, None).objects.is_empty() {
            return Ok(());
        }
    }
    finish(registry, resource, name).await
}

/// Lifts the cleanup finalizer; with no other finalizer the CRD then goes.
async fn finish(registry: &Registry, resource: &ResourceInfo, name: &str) -> ApiResult<()> {
    registry
        .guaranteed_update(resource, None, name, false, |mut current| {
            let finalizers: Vec<String> = object::finalizers(&current)
                .into_iter()
                .filter(|f| f != CLEANUP_FINALIZER)
                .collect();
            set_condition(
                &mut current,
                "Terminating",
                "True",
                "InstanceDeletionCompleted",
                "removed all instances",
            );
            object::metadata_mut(&mut current).insert("finalizers".into(), json!(finalizers));
            if finalizers.is_empty() {
                Ok(Action::Delete)
            } else {
                Ok(Action::Replace(current))
            }
        })
        .await?;
    Ok(())
}

/// Whether a CRD is established (for tests and callers that wait on it).
pub fn established(crd: &Value) -> bool {
    condition_true(crd, "Established")
}
