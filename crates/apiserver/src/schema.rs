//! What the structure of the built-in types says about merging, as upstream's OpenAPI
//! publishes it (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`, `x-kubernetes-patch-merge-key`): the one table that both
//! strategic merge patch ([`crate::patch`]) and server-side apply
//! ([`crate::managedfields`]) read.
//!
//! Fields are found by their path of field names from the object's root (list items add
//! nothing to the path), e.g. `["spec", "template", "spec", "containers", "ports"]`.

use serde_json::Value;

use crate::resources::ResourceInfo;

/// How a list's items are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType<'a> {
    /// The list is one value: whoever sets it sets all of it.
    Atomic,
    /// Items are distinct scalars (`metadata.finalizers`).
    Set,
    /// Items are objects identified by these key fields (sorted by name).
    Map(Vec<&'a str>),
}

/// Where the list and map semantics of an object's fields come from.
#[derive(Debug, Clone, Copy)]
pub enum Structure<'a> {
    /// The built-in types: the table in this module.
    Builtin,
    /// A custom resource: its version's structural schema, if it has one. As upstream
    /// treats CRDs, a list is atomic unless `x-kubernetes-list-type` says otherwise, and
    /// an object is granular unless `x-kubernetes-map-type: atomic`.
    Custom(Option<&'a Value>),
}

impl<'a> Structure<'a> {
    pub fn of(resource: &'a ResourceInfo) -> Self {
        match &resource.custom {
            Some(custom) => Structure::Custom(custom.schema.as_ref()),
            None => Structure::Builtin,
        }
    }

    /// The schema of the field at `path` (list items add nothing to the path).
    fn node(schema: &'a Value, path: &[&str]) -> Option<&'a Value> {
        let mut node = schema;
        for name in path {
            while node.get("type").and_then(Value::as_str) == Some("array") {
                node = node.get("items")?;
            }
            node = node
                .get("properties")
                .and_then(|p| p.get(*name))
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?;
        }
        Some(node)
    }

    /// The schema an object at `path` has: the field's, or its items' for a list.
    fn object_node(schema: &'a Value, path: &[&str]) -> Option<&'a Value> {
        let node = Self::node(schema, path)?;
        match node.get("type").and_then(Value::as_str) {
            Some("array") => node.get("items"),
            _ => Some(node),
        }
    }

    /// The list type of the list field at `path`.
    pub fn list_type(&self, path: &[&str]) -> ListType<'a> {
        let schema = match self {
            Structure::Builtin => return list_type(path),
            Structure::Custom(schema) => schema.and_then(|s| Self::node(s, path)),
        };
        let Some(node) = schema else {
            return ListType::Atomic;
        };
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => {
                let mut keys: Vec<&'a str> = node
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                keys.sort();
                ListType::Map(keys)
            }
            _ => ListType::Atomic,
        }
    }

    /// Whether the object at `path` (for list items: the list's path) is one value.
    pub fn is_atomic_map(&self, path: &[&str]) -> bool {
        match self {
            Structure::Builtin => is_atomic_map(path),
            Structure::Custom(schema) => {
                schema
                    .and_then(|s| Self::object_node(s, path))
                    .and_then(|n| n.get("x-kubernetes-map-type"))
                    .and_then(Value::as_str)
                    == Some("atomic")
            }
        }
    }

    /// Whether the object at `path` is a free-form map: keys that are data (a schema's
    /// `additionalProperties`, or fields it keeps without naming them).
    pub fn is_free_form_map(&self, path: &[&str]) -> bool {
        match self {
            Structure::Builtin => is_free_form_map(path),
            Structure::Custom(schema) => {
                if path == ["metadata", "labels"] || path == ["metadata", "annotations"] {
                    return true;
                }
                schema
                    .and_then(|s| Self::object_node(s, path))
                    .is_some_and(|n| {
                        n.get("properties").is_none()
                            && (n.get("additionalProperties").is_some_and(Value::is_object)
                                || n.get("x-kubernetes-preserve-unknown-fields")
                                    == Some(&Value::Bool(true)))
                    })
            }
        }
    }

    /// The value a list-map key takes when an item leaves it out.
    pub fn key_default(&self, key: &str) -> Option<Value> {
        match self {
            Structure::Builtin => key_default(key),
            Structure::Custom(_) => None,
        }
    }
}

const NAME: &[&str] = &["name"];
const CONTAINER_PORT: &[&str] = &["containerPort", "protocol"];
const SERVICE_PORT: &[&str] = &["port", "protocol"];

fn in_container(path: &[&str]) -> bool {
    path.len() >= 2
        && matches!(
            path[path.len() - 2],
            "containers" | "initContainers" | "ephemeralContainers"
        )
}

/// The list type of the list field at `path`.
pub fn list_type(path: &[&str]) -> ListType<'static> {
    let Some(field) = path.last() else {
        return ListType::Atomic;
    };
    match *field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "resourceClaimStatuses"
        | "schedulingGates"
        | "claims"
        | "evictionResponders"
        | "webhooks"
        | "matchConditions"
        | "variables" => ListType::Map(NAME.to_vec()),
        "drivers" if path == ["spec", "drivers"] => ListType::Map(NAME.to_vec()),
        "ports" if in_container(path) => ListType::Map(CONTAINER_PORT.to_vec()),
        "ports" if path == ["spec", "ports"] => ListType::Map(SERVICE_PORT.to_vec()),
        "volumeMounts" if in_container(path) => ListType::Map(vec!["mountPath"]),
        "volumeDevices" if in_container(path) => ListType::Map(vec!["devicePath"]),
        "hostAliases" | "podIPs" | "hostIPs" => ListType::Map(vec!["ip"]),
        "conditions" => ListType::Map(vec!["type"]),
        "topologySpreadConstraints" => ListType::Map(vec!["topologyKey", "whenUnsatisfiable"]),
        // Any object's metadata, templates' included: `ObjectMeta` is one type.
        "ownerReferences" if path.ends_with(&["metadata", "ownerReferences"]) => {
            ListType::Map(vec!["uid"])
        }
        "finalizers" if path.ends_with(&["metadata", "finalizers"]) => ListType::Set,
        "podCIDRs" if path == ["spec", "podCIDRs"] => ListType::Set,
        "failed" | "succeeded" if path.ends_with(&["uncountedTerminatedPods", *field]) => {
            ListType::Set
        }
        "addresses" if path == ["status", "addresses"] => ListType::Map(vec!["type"]),
        "secrets" if path.len() == 1 => ListType::Map(NAME.to_vec()),
        _ => ListType::Atomic,
    }
}

/// The key strategic merge patch merges the list at `path` by (upstream's
/// `patchMergeKey`), if its items are merged rather than replaced.
pub fn merge_key(path: &[&str]) -> Option<&'static str> {
    match list_type(path) {
        ListType::Map(keys) => {
            // The patch merge key is the identifying field; `protocol` only refines it.
            keys.first().copied()
        }
        _ => None,
    }
}

/// Upstream's `patchStrategy` of the field at `path`, which kubectl reads from the OpenAPI
/// documents to compute client-side apply patches: `merge` for the lists merged by key
/// and for sets of scalars (`metadata.finalizers`: a patch adds its items and deletes
/// through `$deleteFromPrimitiveList`), `retainKeys` where a patch names the keys to keep
/// (a volume's source, a Deployment's strategy: switching to `Recreate` drops
/// `rollingUpdate`).
pub fn patch_strategy(path: &[&str]) -> Option<&'static str> {
    let retain_keys =
        matches!(path.last(), Some(&"volumes" | &"resourceClaims")) || path == ["spec", "strategy"];
    match (merges_items(path), retain_keys) {
        (true, true) => Some("merge,retainKeys"),
        (true, false) => Some("merge"),
        (false, true) => Some("retainKeys"),
        (false, false) => None,
    }
}

/// Whether strategic merge patch merges the items of the list at `path` into the current
/// ones rather than replacing the list: list-maps by their key, sets of scalars by value.
/// The Job controller's `uncountedTerminatedPods` are sets for field management but
/// replaced whole by patches, as upstream declares them.
pub fn merges_items(path: &[&str]) -> bool {
    match list_type(path) {
        ListType::Map(_) => true,
        ListType::Set => !path.contains(&"uncountedTerminatedPods"),
        ListType::Atomic => false,
    }
}

/// The value a list-map key takes when an item leaves it out (upstream's schema default).
fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".into()))
}

/// Whether the object at `path` is one value (`x-kubernetes-map-type: atomic`, or a struct
/// upstream marks `+structType=atomic`): label and node selectors, references. For the
/// items of a list, `path` is the list's: owner references and local object references
/// are atomic items.
fn is_atomic_map(path: &[&str]) -> bool {
    let Some(field) = path.last() else {
        return false;
    };
    matches!(
        *field,
        "selector"
            | "labelSelector"
            | "namespaceSelector"
            | "podSelector"
            | "nodeSelector"
            | "scopeSelector"
            | "fieldRef"
            | "configMapKeyRef"
            | "secretKeyRef"
            | "resourceFieldRef"
            | "fileKeyRef"
            | "secretRef"
            | "claimRef"
            | "targetRef"
            | "roleRef"
            | "dataSource"
            | "involvedObject"
            | "regarding"
            | "related"
            | "ownerReferences"
            | "imagePullSecrets"
    ) || path == ["secrets"]
}

/// Whether the object at `path` is a free-form map (its keys are data, not the type's named
/// fields): labels, annotations, a ConfigMap's data, resource lists.
fn is_free_form_map(path: &[&str]) -> bool {
    let Some(field) = path.last() else {
        return false;
    };
    matches!(
        *field,
        "labels"
            | "annotations"
            | "data"
            | "binaryData"
            | "stringData"
            | "matchLabels"
            | "limits"
            | "requests"
            | "capacity"
            | "allocatable"
            | "hard"
            | "used"
            | "parameters"
            | "overhead"
            | "volumeAttributes"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_types_by_path() {
        let ports = ["spec", "template", "spec", "containers", "ports"];
        assert_eq!(list_type(&ports), ListType::Map(CONTAINER_PORT.to_vec()));
        assert_eq!(merge_key(&ports), Some("containerPort"));
        assert_eq!(
            list_type(&["spec", "ports"]),
            ListType::Map(SERVICE_PORT.to_vec())
        );
        assert_eq!(merge_key(&["spec", "ports"]), Some("port"));
        assert_eq!(list_type(&["ports"]), ListType::Atomic);
        assert_eq!(list_type(&["metadata", "finalizers"]), ListType::Set);
        assert_eq!(list_type(&["spec", "finalizers"]), ListType::Atomic);
        assert_eq!(list_type(&["spec", "containers", "args"]), ListType::Atomic);
        assert!(is_atomic_map(&["spec", "selector"]));
        assert!(is_atomic_map(&["spec", "template", "spec", "nodeSelector"]));
        assert!(is_atomic_map(&["metadata", "ownerReferences"]));
        assert!(!is_atomic_map(&["spec", "template"]));
        assert!(is_free_form_map(&["metadata", "labels"]));
        assert_eq!(patch_strategy(&["spec", "containers"]), Some("merge"));
        assert_eq!(
            patch_strategy(&["spec", "template", "spec", "volumes"]),
            Some("merge,retainKeys")
        );
        assert_eq!(patch_strategy(&["spec", "strategy"]), Some("retainKeys"));
        assert_eq!(patch_strategy(&["metadata", "finalizers"]), Some("merge"));
        assert_eq!(
            patch_strategy(&["status", "uncountedTerminatedPods", "failed"]),
            None
        );
        assert_eq!(patch_strategy(&["spec", "containers", "args"]), None);
        assert_eq!(merge_key(&["webhooks"]), Some("name"));
    }

    #[test]
    fn custom_structures_follow_the_schema() {
        let schema = serde_json::json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "name"],
                "items": {"type": "object", "x-kubernetes-map-type": "atomic"}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "containers": {"type": "array", "items": {"type": "object"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "selector": {"type": "object", "x-kubernetes-map-type": "atomic"},
        }}}});
        let s = Structure::Custom(Some(&schema));
        assert_eq!(
            s.list_type(&["spec", "ports"]),
            ListType::Map(vec!["name", "port"])
        );
        assert_eq!(s.list_type(&["spec", "tags"]), ListType::Set);
        // Unlike the built-in `containers`, a CRD's list is atomic unless it says otherwise.
        assert_eq!(s.list_type(&["spec", "containers"]), ListType::Atomic);
        assert!(s.is_free_form_map(&["spec", "labels"]));
        assert!(s.is_free_form_map(&["metadata", "labels"]));
        assert!(s.is_atomic_map(&["spec", "selector"]));
        assert!(s.is_atomic_map(&["spec", "ports"]));
        assert!(!s.is_atomic_map(&["spec"]));
        assert_eq!(
            Structure::Custom(None).list_type(&["spec", "ports"]),
            ListType::Atomic
        );
    }
}
