//! What the structure of a kind says about merging: the list types and keys
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`), which structs and maps are one
//! value (`x-kubernetes-map-type`) and how strategic merge patch treats lists
//! (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`): the one source that
//! strategic merge patch ([`crate::patch`]), server-side apply ([`crate::managedfields`])
//! and the OpenAPI documents read. Built-in kinds take it from upstream's type metadata
//! ([`builtin`]), custom resources from their CRD's structural schema.
//!
//! Fields are found by their path of field names from the object's root (list items add
//! nothing to the path; a free-form map's key is one name), e.g. `["spec", "template",
//! "spec", "containers", "ports"]`.

pub mod builtin;

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
    /// A built-in kind: upstream's definitions, from the kind's own (`None` for a kind they
    /// do not describe: all its lists atomic, all its maps granular).
    Builtin(Option<&'static builtin::Type>),
    /// A custom resource: its version's structural schema, if it has one. As upstream
    /// treats CRDs, a list is atomic unless `x-kubernetes-list-type` says otherwise, and
    /// an object is granular unless `x-kubernetes-map-type: atomic`.
    Custom(Option<&'a Value>),
}

impl<'a> Structure<'a> {
    pub fn of(resource: &'a ResourceInfo) -> Self {
        match &resource.custom {
            Some(custom) => Structure::Custom(custom.schema.as_ref()),
            None => Structure::builtin(&resource.group, &resource.version, &resource.kind),
        }
    }

    /// The structure of a built-in kind.
    pub fn builtin(group: &str, version: &str, kind: &str) -> Structure<'static> {
        Structure::Builtin(builtin::kind(group, version, kind))
    }

    /// The field at `path` of a built-in kind, with what it holds.
    fn builtin_node(root: Option<&'static builtin::Type>, path: &[&str]) -> builtin::Node {
        root.and_then(|root| builtin::node(root, path))
            .unwrap_or_default()
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
        let (list, keys): (Option<&'a str>, Vec<&'a str>) = match self {
            Structure::Builtin(root) => match Self::builtin_node(*root, path).field {
                Some(field) => (
                    field.list.as_deref(),
                    field.keys.iter().map(String::as_str).collect(),
                ),
                None => (None, Vec::new()),
            },
            Structure::Custom(schema) => match schema.and_then(|s| Self::node(s, path)) {
                Some(node) => (
                    node.get("x-kubernetes-list-type").and_then(Value::as_str),
                    node.get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|k| k.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default(),
                ),
                None => (None, Vec::new()),
            },
        };
        match list {
            Some("set") => ListType::Set,
            Some("map") => {
                let mut keys = keys;
                keys.sort();
                ListType::Map(keys)
            }
            _ => ListType::Atomic,
        }
    }

    /// Upstream's `patchStrategy` of the field at `path` (`merge`, `retainKeys` or
    /// `merge,retainKeys`), which kubectl reads from the OpenAPI documents to compute
    /// client-side apply patches. Custom resources have none: strategic merge patch is
    /// not served for them.
    pub fn patch_strategy(&self, path: &[&str]) -> Option<&'a str> {
        match self {
            Structure::Builtin(root) => Self::builtin_node(*root, path)
                .field
                .and_then(|f| f.strategy.as_deref()),
            Structure::Custom(_) => None,
        }
    }

    /// The key strategic merge patch merges the list at `path` by (upstream's
    /// `patchMergeKey`).
    pub fn merge_key(&self, path: &[&str]) -> Option<&'a str> {
        match self {
            Structure::Builtin(root) => Self::builtin_node(*root, path)
                .field
                .and_then(|f| f.merge_key.as_deref()),
            Structure::Custom(_) => None,
        }
    }

    /// Whether strategic merge patch merges the items of the list at `path` into the
    /// current ones rather than replacing the list: lists of objects by their merge key,
    /// lists of scalars by value. Upstream's strategy decides, not the list type: a Job's
    /// `status.conditions` are merged by `type` yet atomic to server-side apply.
    pub fn merges_items(&self, path: &[&str]) -> bool {
        self.patch_strategy(path)
            .is_some_and(|s| s.split(',').any(|s| s == "merge"))
    }

    /// Whether the object at `path` (for list items: the list's path) is one value.
    pub fn is_atomic_map(&self, path: &[&str]) -> bool {
        match self {
            Structure::Builtin(root) => {
                let node = Self::builtin_node(*root, path);
                // A field's own map type wins over its definition's.
                let field = node.field.and_then(|f| f.map_type.as_deref());
                field.or(node.held.and_then(|t| t.map_type.as_deref())) == Some("atomic")
            }
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
            Structure::Builtin(root) => {
                Self::builtin_node(*root, path).field.is_some_and(|f| f.map)
            }
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
            Structure::Builtin(_) => key_default(key),
            Structure::Custom(_) => None,
        }
    }
}

/// The value a list-map key takes when an item leaves it out (upstream's schema default).
fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_structures_follow_upstreams_definitions() {
        let deployment = Structure::builtin("apps", "v1", "Deployment");
        let ports = ["spec", "template", "spec", "containers", "ports"];
        assert_eq!(
            deployment.list_type(&ports),
            ListType::Map(vec!["containerPort", "protocol"])
        );
        assert_eq!(deployment.merge_key(&ports), Some("containerPort"));
        assert_eq!(
            deployment.list_type(&["metadata", "finalizers"]),
            ListType::Set
        );
        assert_eq!(
            deployment.patch_strategy(&["metadata", "finalizers"]),
            Some("merge")
        );
        let args = ["spec", "template", "spec", "containers", "args"];
        assert_eq!(deployment.list_type(&args), ListType::Atomic);
        assert!(!deployment.merges_items(&args));
        assert!(deployment.is_atomic_map(&["spec", "selector"]));
        assert!(deployment.is_atomic_map(&["spec", "template", "spec", "nodeSelector"]));
        assert!(deployment.is_atomic_map(&["metadata", "ownerReferences"]));
        assert!(!deployment.is_atomic_map(&["spec", "template"]));
        assert!(deployment.is_free_form_map(&["metadata", "labels"]));
        assert!(!deployment.is_free_form_map(&["spec", "template"]));
        assert_eq!(
            deployment.patch_strategy(&["spec", "template", "spec", "volumes"]),
            Some("merge,retainKeys")
        );
        assert_eq!(
            deployment.patch_strategy(&["spec", "strategy"]),
            Some("retainKeys")
        );

        // The same field name means different things in different types.
        let service = Structure::builtin("", "v1", "Service");
        assert_eq!(
            service.list_type(&["spec", "ports"]),
            ListType::Map(vec!["port", "protocol"])
        );
        let job = Structure::builtin("batch", "v1", "Job");
        assert_eq!(job.list_type(&["status", "conditions"]), ListType::Atomic);
        assert!(job.merges_items(&["status", "conditions"]));
        assert_eq!(job.merge_key(&["status", "conditions"]), Some("type"));
        let failed = ["status", "uncountedTerminatedPods", "failed"];
        assert_eq!(job.list_type(&failed), ListType::Set);
        assert!(!job.merges_items(&failed));
        let pod = Structure::builtin("", "v1", "Pod");
        assert_eq!(
            pod.list_type(&["status", "conditions"]),
            ListType::Map(vec!["type"])
        );
        assert_eq!(pod.list_type(&["status", "hostIPs"]), ListType::Atomic);
        assert_eq!(pod.merge_key(&["status", "hostIPs"]), Some("ip"));
        let account = Structure::builtin("", "v1", "ServiceAccount");
        assert_eq!(account.list_type(&["imagePullSecrets"]), ListType::Atomic);
        assert_eq!(account.list_type(&["secrets"]), ListType::Map(vec!["name"]));
        assert!(!account.is_free_form_map(&["secrets"]));

        // A kind upstream does not describe: lists atomic, maps granular.
        let unknown = Structure::builtin("example.com", "v1", "Nonsense");
        assert_eq!(unknown.list_type(&["spec", "containers"]), ListType::Atomic);
        assert!(!unknown.is_atomic_map(&["spec", "selector"]));
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
