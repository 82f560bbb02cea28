//! Background duties of the API server itself: the namespaces that exist from the start,
//! and store compaction. (Emptying a namespace being deleted is the namespace
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
