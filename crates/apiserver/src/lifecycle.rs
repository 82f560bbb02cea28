//! Background duties of the API server itself: the namespaces and priority classes that
//! exist from the start, and store compaction. (Emptying a namespace being deleted is the namespace
//! controller's work, in the controller manager, as upstream.)

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::registry::Registry;

/// The namespaces every cluster has.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces that are missing.
pub async fn ensure_system_namespaces(registry: &Registry) -> anyhow::Result<()> {
    let namespaces = SYSTEM_NAMESPACES
        .iter()
        .map(|name| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
    ensure_objects(registry, ("", "v1", "namespaces"), namespaces).await
}

/// Creates the built-in PriorityClasses that are missing.
pub async fn ensure_system_priority_classes(registry: &Registry) -> anyhow::Result<()> {
    let classes = crate::priority::system_class_objects();
    ensure_objects(
        registry,
        ("scheduling.k8s.io", "v1", "priorityclasses"),
        classes,
    )
    .await
}

/// Creates each of `objects` (cluster-scoped, of the resource `group/version/plural`)
/// unless it exists.
async fn ensure_objects(
    registry: &Registry,
    (group, version, plural): (&str, &str, &str),
    objects: impl Iterator<Item = serde_json::Value>,
) -> anyhow::Result<()> {
    let resource = registry
        .catalogue
        .get(group, version, plural)
        .ok_or_else(|| anyhow::anyhow!("{plural} missing from the catalogue"))?;
    for object in objects {
        let name = crate::object::name(&object).to_string();
        match registry.create(resource, None, object, false).await {
            Ok(_) => tracing::info!(%name, kind = resource.kind, "created system object"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => anyhow::bail!("creating {plural} {name}: {e}"),
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
