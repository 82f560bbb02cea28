//! `/openapi/v3/<group-version>`: one OpenAPI 3.0 document per group-version, with the
//! operations of its resources and the schemas they reach.
//!
//! kubectl reads these documents for three things: `kubectl explain` (it finds a kind by the
//! `x-kubernetes-group-version-kind` of a path's operation, then of a schema), client-side
//! `kubectl apply` (a `patch` operation accepting strategic merge patches means "compute the
//! patch from the schema's extensions"), and whether the server validates fields itself
//! (the `fieldValidation` parameter).

use serde_json::{json, Map, Value};

use super::definitions::{Definitions, REF_PREFIX, SHARED};
use crate::resources::ResourceInfo;

const STRATEGIC_MERGE_PATCH: &str = "application/strategic-merge-patch+json";
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    STRATEGIC_MERGE_PATCH,
];

/// The document of one group-version serving `resources`.
pub fn document(
    resources: &[&ResourceInfo],
    definitions: &Definitions,
    group: &str,
    version: &str,
) -> Value {
    let mut paths = Map::new();
    for r in resources {
        add_paths(&mut paths, r, definitions);
    }
    let roots = definitions
        .kinds
        .iter()
        .filter(|k| k.gvk.group == group && k.gvk.version == version)
        .map(|k| k.name.as_str())
        .chain(SHARED.iter().copied());
    let schemas: Map<String, Value> = definitions
        .reachable(roots)
        .into_iter()
        .filter_map(|name| {
            let schema = definitions.schemas.get(&name)?;
            Some((name, to_v3(schema)))
        })
        .collect();
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("{REF_PREFIX}{name}")})
}

fn add_paths(paths: &mut Map<String, Value>, r: &ResourceInfo, definitions: &Definitions) {
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let body = definitions
        .kind(&r.group, &r.version, &r.kind)
        .map(|k| schema_ref(&k.name))
        .unwrap_or_else(|| json!({"type": "object"}));
    let write_params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
    ]);
    let operation = |action: &str, request: Option<Value>| {
        let mut op = json!({
            "operationId": format!("{action}{}", r.kind),
            "responses": {"200": {
                "description": "OK",
                "content": {"application/json": {"schema": body}},
            }},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        });
        if let Some(content) = request {
            op["parameters"] = write_params.clone();
            op["requestBody"] = json!({"content": content, "required": true});
        }
        op
    };
    let whole_object = json!({"*/*": {"schema": body}});
    if r.create_only {
        paths.insert(
            collection,
            json!({"post": operation("post", Some(whole_object))}),
        );
        return;
    }
    // Lists answer with the list kind; the operation names the item's kind, as upstream's.
    let mut list = operation("list", None);
    if let Some(list_kind) = definitions.kind(&r.group, &r.version, &r.list_kind()) {
        list["responses"]["200"]["content"]["application/json"]["schema"] =
            schema_ref(&list_kind.name);
    }
    if r.metrics {
        paths.insert(collection.clone(), json!({"get": list}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"get": operation("get", None)}),
        );
        return;
    }
    paths.insert(
        collection.clone(),
        json!({"get": list, "post": operation("post", Some(whole_object.clone()))}),
    );
    // Custom resources take no strategic merge patch (upstream refuses it with 415):
    // without it here, kubectl's apply sends them JSON merge patches.
    let patch_body: Map<String, Value> = PATCH_TYPES
        .iter()
        .filter(|t| r.custom.is_none() || **t != STRATEGIC_MERGE_PATCH)
        .map(|t| {
            (
                t.to_string(),
                json!({"schema": schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch")}),
            )
        })
        .collect();
    paths.insert(
        format!("{collection}/{{name}}"),
        json!({
            "get": operation("get", None),
            "put": operation("put", Some(whole_object)),
            "patch": operation("patch", Some(Value::Object(patch_body))),
        }),
    );
}

/// A definition in OpenAPI 3.0's form: a `$ref` has no siblings there, so a field's own
/// description next to its type's reference moves the reference into an `allOf`, as
/// upstream writes it (`kubectl explain` then prints both descriptions).
pub fn to_v3(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), to_v3(v))).collect();
            if map.len() > 1 {
                if let Some(reference @ Value::String(_)) = out.get("$ref").cloned() {
                    out.shift_remove("$ref");
                    out.insert("allOf".into(), json!([{"$ref": reference}]));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_v3).collect()),
        other => other.clone(),
    }
}
