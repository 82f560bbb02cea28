//! Background duties of the API server itself: the namespaces that exist from the start,
//! store compaction, and tearing down the contents of a namespace being deleted.
//!
//! Namespace teardown belongs to the controller manager upstream; it lives here until
//! that component exists, and talks to the registry exactly as a controller would talk to
//! the API (delete each object, then finalize the namespace).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::object;
use crate::registry::{Action, DeleteOptions, Registry};
use crate::resources::BUILTIN;

/// The namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that are missing.
pub async fn ensure_system_namespaces(registry: &Registry) -> anyhow::Result<()> {
    let namespaces = registry
        .catalogue
        .get("", "v1", "namespaces")
        .ok_or_else(|| anyhow::anyhow!("namespaces missing from the catalogue"))?;
    for name in SYSTEM_NAMESPACES {
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        match registry.create(namespaces, None, object, false).await {
            Ok(_) => tracing::info!(namespace = name, "created system namespace"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => anyhow::bail!("creating namespace {name}: {e}"),
        }
    }
    Ok(())
}

/// Compacts the store as upstream does: every interval, up to the revision seen one
/// interval earlier, so that history is kept for at least one interval.
pub async fn compact_periodically(registry: Arc<Registry>, interval: Duration) {
    let mut previous = None;
    loop {
        tokio::time::sleep(interval).await;
        if let Some(revision) = previous {
            if let Err(e) = registry.store.compact(revision).await {
                tracing::warn!(error = %e, revision, "compaction failed");
            } else {
                tracing::debug!(revision, "compacted store");
            }
        }
        previous = registry.store.current_revision().await.ok();
    }
}

/// Finishes the deletion of namespaces marked for deletion.
pub async fn finalize_namespaces(registry: Arc<Registry>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let snapshot = registry.cache.snapshot("/registry/namespaces/", None);
        for cached in snapshot.objects {
            let Ok(namespace) = cached.value() else {
                continue;
            };
            if object::meta_str(&namespace, "deletionTimestamp").is_none() {
                continue;
            }
            let name = object::name(&namespace).to_string();
            if let Err(e) = teardown(&registry, &name).await {
                tracing::warn!(namespace = %name, error = %e, "namespace teardown");
            }
        }
    }
}

/// Deletes what is in the namespace; once it is empty, removes the `kubernetes` finalizer.
async fn teardown(registry: &Registry, namespace: &str) -> anyhow::Result<()> {
    let mut remaining = 0usize;
    let mut seen_storage = Vec::new();
    for resource in BUILTIN.iter().filter(|r| r.namespaced && !r.create_only) {
        if seen_storage.contains(&resource.storage) {
            continue;
        }
        seen_storage.push(resource.storage);
        let prefix = resource.key_prefix(Some(namespace));
        let snapshot = registry.cache.snapshot(&prefix, None);
        for cached in snapshot.objects {
            remaining += 1;
            let Ok(object) = cached.value() else { continue };
            if object::meta_str(&object, "deletionTimestamp").is_some() {
                continue;
            }
            let result = registry
                .delete(
                    resource,
                    Some(namespace),
                    object::name(&object),
                    &DeleteOptions::default(),
                    false,
                )
                .await;
            if let Err(e) = result {
                if e.code != 404 {
                    tracing::warn!(namespace, resource = resource.plural, error = %e, "deleting namespace content");
                }
            }
        }
    }
    if remaining > 0 {
        return Ok(());
    }
    let namespaces = registry
        .catalogue
        .get("", "v1", "namespaces")
        .ok_or_else(|| anyhow::anyhow!("namespaces missing from the catalogue"))?;
    registry
        .guaranteed_update(namespaces, None, namespace, false, |mut current| {
            if let Some(finalizers) = current
                .pointer_mut("/spec/finalizers")
                .and_then(Value::as_array_mut)
            {
                finalizers.retain(|f| f != "kubernetes");
            }
            let spec_empty = current
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
            if spec_empty && object::finalizers(&current).is_empty() {
                Ok(Action::Delete)
            } else {
                Ok(Action::Replace(current))
            }
        })
        .await?;
    Ok(())
}
