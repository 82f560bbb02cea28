//! Background duties of the API server itself: the namespaces and priority classes that
//! exist from the start, and store compaction. (Emptying a namespace being deleted is the namespace
//! controller's work, in the controller manager, as upstream.)

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::registry::{Registry, SERVER_MANAGER};

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

/// The `bootstrap-token-<id>` Secret behind the node token: it authenticates joining
/// agents (for authentication only, never expiring) in the group the bootstrap policy
/// lets ask for node certificates.
pub async fn ensure_node_bootstrap_token(registry: &Registry, token: &str) -> anyhow::Result<()> {
    use base64::Engine;
    let parts = skiff_pki::join::BootstrapToken::parse(token)
        .ok_or_else(|| anyhow::anyhow!("the node token's bootstrap part is malformed"))?;
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{}", parts.id), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "data": {
            "description": encode("the node token in the server's DATA_DIR/node-token: skiff agents join with it"),
            "token-id": encode(parts.id),
            "token-secret": encode(parts.secret),
            "usage-bootstrap-authentication": encode("true"),
            "auth-extra-groups": encode(crate::authz::components::NODE_TOKEN_GROUP),
        },
    });
    ensure_objects(registry, ("", "v1", "secrets"), std::iter::once(secret)).await
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

/// The `kubernetes` ServiceCIDR, as upstream's API server keeps it: the range its
/// `--service-cluster-ip-range` gives, reported Ready.
pub async fn ensure_default_service_cidr(registry: &Registry) -> anyhow::Result<()> {
    let cidr = registry.service_cidr.to_string();
    let object = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": "kubernetes"},
        "spec": {"cidrs": [cidr]},
    });
    ensure_objects(
        registry,
        ("networking.k8s.io", "v1", "servicecidrs"),
        std::iter::once(object),
    )
    .await?;
    let resource = registry
        .catalogue
        .get("networking.k8s.io", "v1", "servicecidrs")
        .ok_or_else(|| anyhow::anyhow!("servicecidrs missing from the catalogue"))?;
    let current = registry
        .get(&resource, None, "kubernetes")
        .await
        .map_err(|e| anyhow::anyhow!("reading the kubernetes ServiceCIDR: {e}"))?;
    if current.pointer("/status/conditions").is_some() {
        return Ok(());
    }
    let mut ready = current;
    ready["status"] = json!({"conditions": [{
        "type": "Ready", "status": "True", "reason": "", "message": "Kubernetes Service CIDR is ready",
        "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    }]});
    registry
        .update(
            &resource,
            None,
            "kubernetes",
            Some("status"),
            ready,
            SERVER_MANAGER,
            false,
        )
        .await
        .map_err(|e| anyhow::anyhow!("marking the kubernetes ServiceCIDR ready: {e}"))?;
    Ok(())
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
        let namespace = crate::object::namespace(&object).map(str::to_string);
        match registry
            .create(
                &resource,
                namespace.as_deref(),
                object,
                SERVER_MANAGER,
                false,
            )
            .await
        {
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
