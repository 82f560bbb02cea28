//! Upstream's type metadata for the built-in kinds, as its v1.37 OpenAPI publishes it: for
//! each definition, whether it is one value, and for each of its object, list and map
//! fields the definition it holds and the list, map and patch extensions upstream declares.
//! `builtin-v1.37.json` is generated from upstream's schemas by
//! `scripts/generate-list-metadata.py`; `scripts/compare-list-metadata.py` checks what the
//! server publishes against the same schemas.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use rustc_hash::FxHashMap;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Table {
    /// `group/version/Kind` (core: `version/Kind`) to the definition of its objects.
    kinds: HashMap<String, String>,
    /// Definitions by upstream's name (`io.k8s.api.core.v1.Pod`).
    types: HashMap<String, Type>,
}

/// One definition: a struct of named fields.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Type {
    /// `atomic` for structs set as one value (label selectors, object references).
    pub map_type: Option<String>,
    /// Its fields that hold objects, lists or maps; scalars are left out. (Every write
    /// walks an object's fields through these maps: a fast hash for short names.)
    #[serde(default)]
    pub fields: FxHashMap<String, Field>,
}

/// One field of a definition, with upstream's extensions on it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Field {
    /// The definition it holds: the object's, its list's items' or its map's values'.
    #[serde(rename = "type")]
    pub holds: Option<String>,
    /// `x-kubernetes-list-type`: `atomic`, `set` or `map` (absent: atomic).
    pub list: Option<String>,
    /// `x-kubernetes-list-map-keys`, in upstream's order.
    #[serde(default)]
    pub keys: Vec<String>,
    /// `x-kubernetes-patch-strategy`: `merge`, `retainKeys` or both, comma-separated.
    pub strategy: Option<String>,
    /// `x-kubernetes-patch-merge-key`.
    pub merge_key: Option<String>,
    /// `x-kubernetes-map-type` of the field itself (an inline map).
    pub map_type: Option<String>,
    /// A free-form map: its keys are data (`additionalProperties`).
    #[serde(default)]
    pub map: bool,
    /// `holds`, looked up once.
    #[serde(skip)]
    held: OnceLock<Option<&'static Type>>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    // Embedded at build time and parsed by a unit test: it cannot fail at run time.
    serde_json::from_str(include_str!("builtin-v1.37.json"))
        .expect("schema/builtin-v1.37.json is generated valid")
});

/// The definition of a kind's objects.
pub fn kind(group: &str, version: &str, kind: &str) -> Option<&'static Type> {
    let key = if group.is_empty() {
        format!("{version}/{kind}")
    } else {
        format!("{group}/{version}/{kind}")
    };
    TABLE.kinds.get(&key).and_then(|name| definition(name))
}

/// A definition by upstream's name.
pub fn definition(name: &str) -> Option<&'static Type> {
    TABLE.types.get(name)
}

impl Field {
    fn held(&'static self) -> Option<&'static Type> {
        *self
            .held
            .get_or_init(|| self.holds.as_deref().and_then(definition))
    }
}

/// What a path from a kind's root reaches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Node {
    /// The field named last; `None` at the root and at a free-form map's value.
    pub field: Option<&'static Field>,
    /// The definition of what is there (for a list: of its items).
    pub held: Option<&'static Type>,
}

/// Walks `path` (field names from the root; list items add nothing, a free-form map's key
/// is one name) from `root`. `None` when the path leaves what the definitions describe.
pub fn node(root: &'static Type, path: &[&str]) -> Option<Node> {
    let mut node = Node {
        field: None,
        held: Some(root),
    };
    for name in path {
        node = match node.field {
            Some(map) if map.map => Node {
                field: None,
                held: map.held(),
            },
            _ => {
                let field = node.held?.fields.get(*name)?;
                Node {
                    field: Some(field),
                    held: field.held(),
                }
            }
        };
    }
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_every_kind_has_a_definition() {
        assert!(TABLE.kinds.len() > 300);
        for name in TABLE.kinds.values() {
            assert!(TABLE.types.contains_key(name), "{name}");
        }
    }

    #[test]
    fn paths_walk_through_objects_lists_and_maps() {
        let deployment = kind("apps", "v1", "Deployment").expect("Deployment");
        let ports = node(
            deployment,
            &["spec", "template", "spec", "containers", "ports"],
        )
        .and_then(|n| n.field)
        .expect("container ports");
        assert_eq!(ports.keys, ["containerPort", "protocol"]);
        assert_eq!(ports.merge_key.as_deref(), Some("containerPort"));
        let labels = node(deployment, &["metadata", "labels"]).and_then(|n| n.field);
        assert!(labels.is_some_and(|f| f.map));
        // A label's value is a string: nothing below it.
        let label = node(deployment, &["metadata", "labels", "app"]).expect("a label");
        assert!(label.field.is_none() && label.held.is_none());
        assert!(node(deployment, &["spec", "nonsense"]).is_none());
        assert!(kind("", "v1", "Pod").is_some());
        assert!(kind("", "v1", "Nonsense").is_none());
    }
}
