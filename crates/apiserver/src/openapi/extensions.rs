//! The list, map and patch extensions on the fields of the built-in kinds
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`,
//! `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`), derived from
//! [`crate::schema`], the one table the server's own strategic merge patch and
//! server-side apply read: client-side `kubectl apply` computes its patches from these
//! extensions once it finds a kind's schema, so they must say what the server does.
//!
//! The table is keyed by field paths from an object's root, the definitions by type: each
//! kind's schema is walked path by path and every field's extensions are computed from its
//! path. A definition reached by several paths (a `Container` under a pod and under a pod
//! template) must come out the same from each; [`annotate`] reports the fields where the
//! table disagrees with itself.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::definitions::{ref_target, Definitions};
use crate::schema::{self, ListType, Structure};

/// Deeper than any built-in kind nests; stops the walk in self-referring schemas.
const MAX_DEPTH: usize = 32;

/// The extensions of one field, and of its list's items.
#[derive(Debug, Clone, PartialEq, Default)]
struct Annotation {
    field: Map<String, Value>,
    items: Map<String, Value>,
}

/// A field the table gives different extensions depending on the path it is reached by.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub definition: String,
    pub field: String,
    pub paths: [String; 2],
}

struct Walk<'a> {
    schemas: &'a BTreeMap<String, Value>,
    found: BTreeMap<(String, String), (Annotation, String)>,
    conflicts: Vec<Conflict>,
    stack: Vec<String>,
}

/// Puts the extensions on every field of the kinds' definitions; returns the fields whose
/// extensions depend on the path (the first path's win).
pub fn annotate(definitions: &mut Definitions) -> Vec<Conflict> {
    let mut walk = Walk {
        schemas: &definitions.schemas,
        found: BTreeMap::new(),
        conflicts: Vec::new(),
        stack: Vec::new(),
    };
    for kind in &definitions.kinds {
        walk.definition(&kind.name, &mut Vec::new());
    }
    let Walk {
        found, conflicts, ..
    } = walk;
    for ((definition, field), (annotation, _)) in found {
        let Some(property) = definitions
            .schemas
            .get_mut(&definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(&field))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        property.extend(annotation.field);
        if let Some(Value::Object(items)) = property.get_mut("items") {
            items.extend(annotation.items);
        }
    }
    conflicts
}

impl<'a> Walk<'a> {
    fn definition(&mut self, name: &str, path: &mut Vec<&'a str>) {
        if self.stack.iter().any(|n| n == name) || path.len() > MAX_DEPTH {
            return;
        }
        let schemas = self.schemas;
        let Some(properties) = schemas
            .get(name)
            .and_then(|d| d.get("properties"))
            .and_then(Value::as_object)
        else {
            return;
        };
        self.stack.push(name.to_string());
        for (field, property) in properties {
            path.push(field.as_str());
            self.record(name, field, annotation(path, property, schemas), path);
            let next = match property.get("items") {
                Some(items) => items,
                None => property,
            };
            if let Some(target) = next
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(ref_target)
            {
                self.definition(target, path);
            }
            path.pop();
        }
        self.stack.pop();
    }

    fn record(&mut self, definition: &str, field: &str, annotation: Annotation, path: &[&str]) {
        let key = (definition.to_string(), field.to_string());
        match self.found.get(&key) {
            Some((existing, first_path)) => {
                if *existing != annotation {
                    self.conflicts.push(Conflict {
                        definition: key.0,
                        field: key.1,
                        paths: [first_path.clone(), path.join(".")],
                    });
                }
            }
            None => {
                self.found.insert(key, (annotation, path.join(".")));
            }
        }
    }
}

/// What the table says about the field at `path`, whose schema is `property`.
fn annotation(path: &[&str], property: &Value, schemas: &BTreeMap<String, Value>) -> Annotation {
    let mut out = Annotation::default();
    let is_list = property.get("type").and_then(Value::as_str) == Some("array");
    if is_list {
        let list_type = schema::list_type(path);
        let name = match list_type {
            ListType::Atomic => "atomic",
            ListType::Set => "set",
            ListType::Map(_) => "map",
        };
        out.field
            .insert("x-kubernetes-list-type".into(), json!(name));
        if let ListType::Map(keys) = list_type {
            out.field
                .insert("x-kubernetes-list-map-keys".into(), json!(keys));
        }
        if let Some(key) = schema::merge_key(path) {
            out.field
                .insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        let items_are_objects = property
            .get("items")
            .is_some_and(|items| is_object(items, schemas));
        if items_are_objects && Structure::Builtin.is_atomic_map(path) {
            out.items
                .insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
        if let Some(strategy) = schema::patch_strategy(path) {
            out.field
                .insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
    } else if is_object(property, schemas) {
        if Structure::Builtin.is_atomic_map(path) {
            out.field
                .insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
        // Of the strategies only `retainKeys` means something for an object; the table
        // names fields, and a field of that name elsewhere may be a scalar (a Lease's
        // `spec.strategy`) or an object where it is a list elsewhere (`conditions`).
        if let Some(strategy @ "retainKeys") = schema::patch_strategy(path) {
            out.field
                .insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
    }
    out
}

/// Whether values of `schema` are JSON objects (inline or through a reference).
fn is_object(schema: &Value, schemas: &BTreeMap<String, Value>) -> bool {
    let resolved = match schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(ref_target)
    {
        Some(target) => match schemas.get(target) {
            Some(definition) => definition,
            None => return false,
        },
        None => schema,
    };
    resolved.get("type").and_then(Value::as_str) == Some("object")
}
