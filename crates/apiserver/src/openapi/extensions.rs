//! The list, map and patch extensions on the built-in definitions
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`,
//! `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`), copied from
//! [`crate::schema::builtin`], upstream's type metadata that the server's own strategic
//! merge patch and server-side apply read: client-side `kubectl apply` computes its
//! patches from these extensions once it finds a kind's schema, so they must say what the
//! server does.

use serde_json::{json, Value};

use super::definitions::Definitions;
use crate::schema::builtin;

/// Puts upstream's extensions on every definition it describes, and on their fields.
pub fn annotate(definitions: &mut Definitions) {
    for (name, definition) in definitions.schemas.iter_mut() {
        let Some(metadata) = builtin::definition(name) else {
            continue;
        };
        let Some(definition) = definition.as_object_mut() else {
            continue;
        };
        if let Some(map_type) = &metadata.map_type {
            definition.insert("x-kubernetes-map-type".into(), json!(map_type));
        }
        let Some(properties) = definition
            .get_mut("properties")
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        for (field_name, field) in &metadata.fields {
            let Some(property) = properties
                .get_mut(field_name)
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let extensions = [
                (
                    "x-kubernetes-list-type",
                    field.list.as_ref().map(|l| json!(l)),
                ),
                (
                    "x-kubernetes-list-map-keys",
                    (!field.keys.is_empty()).then(|| json!(field.keys)),
                ),
                (
                    "x-kubernetes-patch-strategy",
                    field.strategy.as_ref().map(|s| json!(s)),
                ),
                (
                    "x-kubernetes-patch-merge-key",
                    field.merge_key.as_ref().map(|k| json!(k)),
                ),
                (
                    "x-kubernetes-map-type",
                    field.map_type.as_ref().map(|m| json!(m)),
                ),
            ];
            for (extension, value) in extensions {
                if let Some(value) = value {
                    property.insert(extension.into(), value);
                }
            }
        }
    }
}
