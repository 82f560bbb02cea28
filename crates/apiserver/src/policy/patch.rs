//! What a mutation's result does to the object, as upstream's mutating policy patchers
//! apply it:
//!
//! - `ApplyConfiguration`: the expression builds an `Object{…}`, merged into the object
//!   with server-side apply's merge ([`crate::managedfields::merge`]: granular maps by
//!   field, list-maps by key, sets by value) and no field ownership. A configuration
//!   that sets an atomic list or struct is refused, since it would silently replace
//!   the whole of it.
//! - `JSONPatch`: the expression builds a list of `JSONPatch{op, path, from, value}`,
//!   applied as RFC 6902 says; a failed `test` operation leaves the object as it was.
//!
//! In both, the `Object` types must name the field path they stand for
//! (`Object{spec: Object.spec{…}}`), which upstream checks in place of a schema.

use serde_json::{json, Value};

use crate::expressions::{to_json, JSON_PATCH, OBJECT};
use crate::schema::{ListType, Structure};

/// Merges an apply configuration (the value of an `ApplyConfiguration` expression) into
/// `object`.
pub(super) fn apply_configuration(
    object: &Value,
    result: &cel::Value,
    structure: Structure,
) -> Result<Value, String> {
    let is_object = matches!(result, cel::Value::Struct(s) if s.name() == OBJECT);
    if !is_object {
        return Err(format!(
            "unsupported return type from ApplyConfiguration expression: {}",
            type_name(result)
        ));
    }
    check_type_names(result)?;
    let mut configuration = to_json(result)?;
    // The configuration is of the object's kind, whatever it says.
    for field in ["apiVersion", "kind"] {
        configuration[field] = object.get(field).cloned().unwrap_or(Value::Null);
    }
    let mut atomics = Vec::new();
    find_atomics(
        &configuration,
        structure,
        &mut Vec::new(),
        String::new(),
        &mut atomics,
    );
    if !atomics.is_empty() {
        return Err(format!(
            "error applying patch: invalid ApplyConfiguration: may not mutate atomic arrays, maps or structs: {}",
            atomics.join(", ")
        ));
    }
    Ok(crate::managedfields::merge(
        object,
        &configuration,
        structure,
    ))
}

/// Applies a JSON patch (the value of a `JSONPatch` expression) to `object`.
pub(super) fn json_patch(object: &Value, result: &cel::Value) -> Result<Value, String> {
    let cel::Value::List(operations) = result else {
        return Err("type mismatch: JSONPatchType.expression should evaluate to array".to_string());
    };
    let mut patch = Vec::with_capacity(operations.len());
    for operation in operations.iter() {
        let cel::Value::Struct(fields) = operation else {
            return Err(format!(
                "type mismatch: JSONPatchType.expression should evaluate to array of JSONPatch, got element of {}",
                type_name(operation)
            ));
        };
        if fields.name() != JSON_PATCH {
            return Err(format!(
                "type mismatch: JSONPatchType.expression should evaluate to array of JSONPatch, got element of {}",
                fields.name()
            ));
        }
        let field = |name: &str| -> Result<Option<cel::Value>, String> {
            fields
                .field_value(name)
                .map(cel::Value::try_from)
                .transpose()
                .map_err(|e| e.to_string())
        };
        let text = |name: &str| -> Result<String, String> {
            Ok(match field(name)? {
                Some(cel::Value::String(s)) => s.to_string(),
                _ => String::new(),
            })
        };
        let mut op = json!({"op": text("op")?, "path": text("path")?});
        let from = text("from")?;
        if !from.is_empty() {
            op["from"] = json!(from);
        }
        if let Some(value) = field("value")? {
            check_type_names(&value)?;
            op["value"] = to_json(&value).map_err(|e| {
                format!("JSONPath valueExpression evaluated to a type that could not marshal to JSON: {e}")
            })?;
        }
        patch.push(op);
    }
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(patch)).map_err(|e| format!("JSONPath: {e}"))?;
    let mut patched = object.clone();
    match json_patch::patch(&mut patched, &patch) {
        Ok(()) => Ok(patched),
        // A failed test keeps the object as it was, the patch's other operations unapplied.
        Err(e) if matches!(e.kind, json_patch::PatchErrorKind::TestFailed) => Ok(object.clone()),
        Err(e) => Err(format!("JSONPath: {e}")),
    }
}

fn type_name(value: &cel::Value) -> String {
    match value {
        cel::Value::Struct(s) => s.name().to_string(),
        other => format!("{:?}", other.type_of()),
    }
}

/// Upstream's check of `Object` type names: an object literal under field `f` of one named
/// `T` must be named `T.f` (lists and maps in between add nothing).
fn check_type_names(value: &cel::Value) -> Result<(), String> {
    let mut errors = Vec::new();
    if let cel::Value::Struct(s) = value {
        walk_type_names(value, s.name(), &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("type mismatch: {}", errors.join("\n")))
    }
}

fn walk_type_names(value: &cel::Value, expected: &str, errors: &mut Vec<String>) {
    match value {
        cel::Value::Struct(s) => {
            if s.name() != expected {
                errors.push(format!(
                    "unexpected type name \"{}\", expected \"{expected}\", which matches field name path from root Object type",
                    s.name()
                ));
            }
            for (field, v) in s.field_values() {
                if let Ok(v) = cel::Value::try_from(v.as_ref()) {
                    walk_type_names(&v, &format!("{expected}.{field}"), errors);
                }
            }
        }
        cel::Value::List(items) => {
            for item in items.iter() {
                walk_type_names(item, expected, errors);
            }
        }
        cel::Value::Map(map) => {
            for item in map.map.values() {
                walk_type_names(item, expected, errors);
            }
        }
        _ => {}
    }
}

/// The paths (upstream's form: `.spec.selector`, `.args[0]`) of the atomic lists and
/// structs a configuration sets.
fn find_atomics<'a>(
    value: &'a Value,
    s: Structure,
    fields: &mut Vec<&'a str>,
    shown: String,
    out: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            if !fields.is_empty() && s.is_atomic_map(fields) {
                out.push(shown.clone());
            }
            if !fields.is_empty() && s.is_free_form_map(fields) {
                return;
            }
            for (name, child) in map {
                fields.push(name);
                find_atomics(child, s, fields, format!("{shown}.{name}"), out);
                fields.pop();
            }
        }
        Value::Array(items) => {
            if s.list_type(fields) == ListType::Atomic {
                out.push(shown.clone());
            }
            for (i, item) in items.iter().enumerate() {
                let item_shown = format!("{shown}[{i}]");
                match item {
                    // An item's struct: atomic items are known by their list's path.
                    Value::Object(map) => {
                        if s.is_atomic_map(fields) {
                            out.push(item_shown.clone());
                        }
                        for (name, child) in map {
                            fields.push(name);
                            find_atomics(child, s, fields, format!("{item_shown}.{name}"), out);
                            fields.pop();
                        }
                    }
                    other => find_atomics(other, s, fields, item_shown, out),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expressions::compile_mutation;

    fn evaluate(source: &str, object: &Value) -> cel::Value {
        match compile_mutation(source).and_then(|e| e.run(&[("object", object)])) {
            Ok(value) => value,
            Err(e) => panic!("{source}: {e}"),
        }
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "annotations": {"kept": "yes"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [
                    {"name": "a", "image": "one"},
                    {"name": "b", "image": "two", "args": ["x"]},
                ]}},
            },
        })
    }

    fn applied(source: &str) -> Result<Value, String> {
        let object = deployment();
        apply_configuration(
            &object,
            &evaluate(source, &object),
            Structure::builtin("apps", "v1", "Deployment"),
        )
    }

    #[test]
    fn an_apply_configuration_merges_as_server_side_apply() {
        let merged = applied(
            r#"Object{metadata: Object.metadata{annotations: {"mutated-by": "policy"}}, spec: Object.spec{replicas: 1337}}"#,
        );
        let Ok(merged) = merged else {
            panic!("{merged:?}")
        };
        assert_eq!(merged["spec"]["replicas"], 1337);
        assert_eq!(
            merged["metadata"]["annotations"],
            json!({"kept": "yes", "mutated-by": "policy"})
        );
        assert_eq!(merged["spec"]["selector"], deployment()["spec"]["selector"]);
        // Containers merge by name: `b` changes, `a` stays, `c` is added.
        let merged = applied(
            "Object{spec: Object.spec{template: Object.spec.template{spec: Object.spec.template.spec{containers: [Object.spec.template.spec.containers{name: 'b', image: 'three'}, Object.spec.template.spec.containers{name: 'c', image: 'four'}]}}}}",
        );
        let Ok(merged) = merged else {
            panic!("{merged:?}")
        };
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "a", "image": "one"},
                {"name": "b", "image": "three", "args": ["x"]},
                {"name": "c", "image": "four"},
            ])
        );
    }

    #[test]
    fn atomic_fields_and_wrong_type_names_are_refused() {
        assert_eq!(
            applied("Object{spec: Object.spec{selector: Object.spec.selector{matchLabels: {'app': 'db'}}}}"),
            Err("error applying patch: invalid ApplyConfiguration: may not mutate atomic arrays, maps or structs: .spec.selector".to_string())
        );
        assert_eq!(
            applied("Object{spec: Object.spec{template: Object.spec.template{spec: Object.spec.template.spec{containers: [Object.spec.template.spec.containers{name: 'b', args: ['y']}]}}}}"),
            Err("error applying patch: invalid ApplyConfiguration: may not mutate atomic arrays, maps or structs: .spec.template.spec.containers[0].args".to_string())
        );
        assert_eq!(
            applied("Object{spec: Object.spec{template: Object.spec.wrong{}}}"),
            Err("type mismatch: unexpected type name \"Object.spec.wrong\", expected \"Object.spec.template\", which matches field name path from root Object type".to_string())
        );
        let object = deployment();
        let not_object = evaluate("[1]", &object);
        assert!(apply_configuration(
            &object,
            &not_object,
            Structure::builtin("apps", "v1", "Deployment")
        )
        .is_err());
    }

    #[test]
    fn json_patches_apply_and_a_failed_test_changes_nothing() {
        let object = deployment();
        let patch = evaluate(
            r#"[JSONPatch{op: "replace", path: "/spec/replicas", value: object.spec.replicas * 2}, JSONPatch{op: "add", path: "/metadata/labels", value: {"team": "web"}}]"#,
            &object,
        );
        let patched = json_patch(&object, &patch);
        let Ok(patched) = patched else {
            panic!("{patched:?}")
        };
        assert_eq!(patched["spec"]["replicas"], 4);
        assert_eq!(patched["metadata"]["labels"], json!({"team": "web"}));
        let tested = evaluate(
            r#"[JSONPatch{op: "test", path: "/spec/replicas", value: 3}, JSONPatch{op: "replace", path: "/spec/replicas", value: 9}]"#,
            &object,
        );
        assert_eq!(json_patch(&object, &tested), Ok(object.clone()));
        let broken = evaluate(
            r#"[JSONPatch{op: "remove", path: "/spec/nothing"}]"#,
            &object,
        );
        assert!(
            json_patch(&object, &broken).is_err_and(|e| e.starts_with("JSONPath: ")),
            "a patch that cannot apply is an error"
        );
    }
}
