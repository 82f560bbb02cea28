//! Upstream's NodeRestriction admission plugin: what a kubelet (`system:node:<name>`) may
//! write. The Node authorizer lets every kubelet write nodes and pods at all; this plugin
//! narrows that to its own Node object (no restricted labels, no taint changes), the
//! status and deletion of pods bound to it, mirror pods for its static pods, its own
//! lease and CSINode, and tokens for its own pods' service accounts.

use serde_json::Value;

use crate::authz::node::node_of;
use crate::object;
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult};

/// Labels under these prefixes are the cluster administrator's, for placing workloads on
/// trusted nodes: a kubelet may not set them on itself.
const RESTRICTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";

/// The requesting kubelet's node name, if the request comes from a kubelet.
fn requesting_node() -> Option<String> {
    let user = crate::warnings::user_info()?;
    node_of(&user).map(str::to_string)
}

fn forbidden(resource: &ResourceInfo, name: &str, why: String) -> ApiError {
    ApiError::admission_forbidden(resource, name, &why)
}

fn node_name_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn restricted_labels(node_object: &Value) -> Vec<String> {
    object::labels(node_object)
        .into_keys()
        .filter(|k| k.starts_with(RESTRICTED_LABEL_PREFIX))
        .collect()
}

pub fn admit_create(resource: &ResourceInfo, object: &Value) -> ApiResult<()> {
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    let name = object::name(object);
    match resource.builtin_kind() {
        "Pod" => admit_mirror_pod(resource, &node, object),
        "Node" => {
            if name != node {
                return Err(forbidden(
                    resource,
                    name,
                    format!("node \"{node}\" is not allowed to modify node \"{name}\""),
                ));
            }
            let restricted = restricted_labels(object);
            if !restricted.is_empty() {
                return Err(forbidden(
                    resource,
                    name,
                    format!(
                        "node \"{node}\" is not allowed to set the following labels: {}",
                        restricted.join(", ")
                    ),
                ));
            }
            Ok(())
        }
        "Lease" | "CSINode" => own_named(resource, name, &node),
        _ => Ok(()),
    }
}

/// Leases and CSINodes: a kubelet touches only the one named after its node.
fn own_named(resource: &ResourceInfo, name: &str, node: &str) -> ApiResult<()> {
    if name == node {
        return Ok(());
    }
    Err(forbidden(
        resource,
        name,
        format!(
            "can only access {} with the same name as the requesting node",
            resource.plural
        ),
    ))
}

/// A kubelet creates pods only as mirrors of its static pods: bound to itself, owned by
/// its Node, reaching for no credentials or volumes through the API.
fn admit_mirror_pod(resource: &ResourceInfo, node: &str, pod: &Value) -> ApiResult<()> {
    let name = object::name(pod);
    let refuse = |why: String| Err(forbidden(resource, name, why));
    let annotations = object::string_map(object::metadata(pod).and_then(|m| m.get("annotations")));
    if !annotations.contains_key("kubernetes.io/config.mirror") {
        return refuse(format!(
            "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"
        ));
    }
    if node_name_of(pod) != node {
        return refuse(format!(
            "node \"{node}\" can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = object::metadata(pod)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let owned_by_self = owners.iter().all(|owner| {
        owner.get("kind").and_then(Value::as_str) == Some("Node")
            && owner.get("name").and_then(Value::as_str) == Some(node)
    });
    if !owned_by_self {
        return refuse(format!(
            "node \"{node}\" can only create pods with an owner reference set to itself"
        ));
    }
    for (kind, what) in [
        ("secrets", "secrets"),
        ("configmaps", "configmaps"),
        ("persistentvolumeclaims", "persistentvolumeclaims"),
    ] {
        if !crate::authz::node::references(pod, kind).is_empty() {
            return refuse(format!(
                "node \"{node}\" can not create pods that use {what}"
            ));
        }
    }
    let account = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !account.is_empty() {
        return refuse(format!(
            "node \"{node}\" can not create pods that use service accounts"
        ));
    }
    Ok(())
}

pub fn admit_update(
    resource: &ResourceInfo,
    subresource: Option<&str>,
    new: &Value,
    old: &Value,
) -> ApiResult<()> {
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    let name = object::name(old);
    match (resource.builtin_kind(), subresource) {
        ("Pod", Some("status")) if node_name_of(old) != node => Err(forbidden(
            resource,
            name,
            format!(
                "node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"
            ),
        )),
        ("Pod", None) => Err(forbidden(
            resource,
            name,
            format!("unexpected operation \"UPDATE\", node \"{node}\" can only create and delete mirror pods"),
        )),
        ("Node", _) => {
            if name != node {
                return Err(forbidden(
                    resource,
                    name,
                    format!("node \"{node}\" is not allowed to modify node \"{name}\""),
                ));
            }
            let changed: Vec<String> = restricted_labels(new)
                .into_iter()
                .chain(restricted_labels(old))
                .filter(|k| object::labels(new).get(k) != object::labels(old).get(k))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            if !changed.is_empty() {
                return Err(forbidden(
                    resource,
                    name,
                    format!(
                        "node \"{node}\" is not allowed to modify labels: {}",
                        changed.join(", ")
                    ),
                ));
            }
            if new.pointer("/spec/taints") != old.pointer("/spec/taints") {
                return Err(forbidden(
                    resource,
                    name,
                    format!("node \"{node}\" is not allowed to modify taints"),
                ));
            }
            Ok(())
        }
        ("Lease" | "CSINode", _) => own_named(resource, name, &node),
        _ => Ok(()),
    }
}

pub fn admit_delete(resource: &ResourceInfo, current: &Value) -> ApiResult<()> {
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    let name = object::name(current);
    match resource.builtin_kind() {
        "Pod" if node_name_of(current) != node => Err(forbidden(
            resource,
            name,
            format!("node \"{node}\" can only delete pods with spec.nodeName set to itself"),
        )),
        "Node" | "Lease" | "CSINode" if name != node => Err(forbidden(
            resource,
            name,
            format!(
                "node \"{node}\" is not allowed to delete {} \"{name}\"",
                resource.plural
            ),
        )),
        _ => Ok(()),
    }
}

/// A kubelet asks for tokens only for its own pods: bound to a pod on its node.
/// `bound` is the object the token is bound to, as its claim names it (`pod`, `secret`).
pub fn admit_token(
    resource: &ResourceInfo,
    account: &str,
    bound: Option<(&str, &Value)>,
) -> ApiResult<()> {
    let Some(node) = requesting_node() else {
        return Ok(());
    };
    match bound {
        Some(("pod", pod)) if node_name_of(pod) == node => Ok(()),
        Some(("pod", _)) => Err(forbidden(
            resource,
            account,
            "node requested token bound to a pod scheduled on a different node".into(),
        )),
        _ => Err(forbidden(
            resource,
            account,
            "node requested token not bound to a pod".into(),
        )),
    }
}
