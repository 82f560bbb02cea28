//! What the structure of the built-in types says about merging, as upstream's OpenAPI
//! publishes it (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`, `x-kubernetes-patch-merge-key`): the one table that both
//! strategic merge patch ([`crate::patch`]) and server-side apply
//! ([`crate::managedfields`]) read.
//!
//! Fields are found by their path of field names from the object's root (list items add
//! nothing to the path), e.g. `["spec", "template", "spec", "containers", "ports"]`.

/// How a list's items are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// The list is one value: whoever sets it sets all of it.
    Atomic,
    /// Items are distinct scalars (`metadata.finalizers`).
    Set,
    /// Items are objects identified by these key fields (sorted by name).
    Map(&'static [&'static str]),
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
pub fn list_type(path: &[&str]) -> ListType {
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
        | "schedulingGates"
        | "claims" => ListType::Map(NAME),
        "ports" if in_container(path) => ListType::Map(CONTAINER_PORT),
        "ports" if path == ["spec", "ports"] => ListType::Map(SERVICE_PORT),
        "volumeMounts" if in_container(path) => ListType::Map(&["mountPath"]),
        "volumeDevices" if in_container(path) => ListType::Map(&["devicePath"]),
        "hostAliases" | "podIPs" | "hostIPs" => ListType::Map(&["ip"]),
        "conditions" => ListType::Map(&["type"]),
        "topologySpreadConstraints" => ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
        "ownerReferences" if path.len() == 2 => ListType::Map(&["uid"]),
        "finalizers" if path == ["metadata", "finalizers"] => ListType::Set,
        "podCIDRs" if path == ["spec", "podCIDRs"] => ListType::Set,
        "failed" | "succeeded" if path.ends_with(&["uncountedTerminatedPods", *field]) => {
            ListType::Set
        }
        "addresses" if path == ["status", "addresses"] => ListType::Map(&["type"]),
        "secrets" if path.len() == 1 => ListType::Map(NAME),
        _ => ListType::Atomic,
    }
}

/// The key strategic merge patch merges the list at `path` by (upstream's
/// `patchMergeKey`), if its items are merged rather than replaced.
pub fn merge_key(path: &[&str]) -> Option<&'static str> {
    match list_type(path) {
        ListType::Map(keys) => {
            // The patch merge key is the identifying field; `protocol` only refines it.
            Some(keys[0])
        }
        _ => None,
    }
}

/// The value a list-map key takes when an item leaves it out (upstream's schema default).
pub fn key_default(key: &str) -> Option<serde_json::Value> {
    (key == "protocol").then(|| serde_json::Value::String("TCP".into()))
}

/// Whether the object at `path` is one value (`x-kubernetes-map-type: atomic`, or a struct
/// upstream marks `+structType=atomic`): label and node selectors, references. For the
/// items of a list, `path` is the list's: owner references and local object references
/// are atomic items.
pub fn is_atomic_map(path: &[&str]) -> bool {
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
pub fn is_free_form_map(path: &[&str]) -> bool {
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
        assert_eq!(list_type(&ports), ListType::Map(CONTAINER_PORT));
        assert_eq!(merge_key(&ports), Some("containerPort"));
        assert_eq!(list_type(&["spec", "ports"]), ListType::Map(SERVICE_PORT));
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
    }
}
