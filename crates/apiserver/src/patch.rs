//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7396) and strategic merge patch.
//!
//! Strategic merge patch here covers what kubectl's `edit`, `label` and `annotate` send:
//! maps merge, `null` deletes, lists of objects merge by their merge key where the
//! field is known to have one, sets of scalars (`metadata.finalizers`) take the patch's
//! items in, other lists are replaced, and the `$patch`,
//! `$retainKeys`, `$deleteFromPrimitiveList` and `$setElementOrder` directives are
//! honoured. Which lists merge, and by which key, comes from [`crate::schema`].

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies `patch` to `original`, returning the patched object.
pub fn apply(patch_type: PatchType, original: &Value, patch: &[u8]) -> ApiResult<Value> {
    match patch_type {
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut target = original.clone();
            json_patch::patch(&mut target, &operations).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(target)
        }
        PatchType::Merge => {
            let patch = parse_object(patch)?;
            let mut target = original.clone();
            json_patch::merge(&mut target, &patch);
            Ok(target)
        }
        PatchType::StrategicMerge => {
            let patch = parse_object(patch)?;
            Ok(strategic_merge(original, &patch, &mut Vec::new()))
        }
        // The merge alone, for previews: the registry applies through
        // `crate::managedfields::apply`, which also prunes and checks ownership.
        PatchType::Apply => Ok(crate::managedfields::merge(
            original,
            &parse_apply(patch)?,
            crate::schema::Structure::Builtin,
        )),
    }
}

/// An apply patch's body: the configuration, in YAML or JSON.
pub fn parse_apply(patch: &[u8]) -> ApiResult<Value> {
    // Duplicate keys are refused, as upstream's YAML decoder refuses them; a JSON value
    // would silently keep the last.
    if let Err(e) = serde_yaml::from_slice::<serde_yaml::Value>(patch) {
        let text = String::from_utf8_lossy(patch);
        if let Some(message) = duplicate_key(&text, &e) {
            return Err(ApiError::bad_request(message));
        }
    }
    let value = serde_yaml::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    require_object(
        value,
        "error decoding YAML: the applied configuration must be an object",
    )
}

/// go-yaml's words for a duplicate key, which name the line of its second occurrence:
/// serde_yaml names the key and where its mapping starts, so the mapping's lines at that
/// indentation are searched for the key (a block mapping; a flow mapping is named by its
/// start). `None` for other errors.
fn duplicate_key(text: &str, error: &serde_yaml::Error) -> Option<String> {
    let message = error.to_string();
    let key = message
        .split_once("duplicate entry with key \"")?
        .1
        .split_once('"')?
        .0
        .to_string();
    let location = error.location()?;
    let indent = location.column().saturating_sub(1);
    let at_key = |line: &str| {
        line.len() > indent
            && line[..indent].trim().is_empty()
            && [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("'{key}':"),
            ]
            .iter()
            .any(|k| line[indent..].starts_with(k.as_str()))
    };
    let line = text
        .lines()
        .enumerate()
        .skip(location.line().saturating_sub(1))
        .filter(|(_, line)| at_key(line))
        .nth(1)
        .map_or(location.line(), |(index, _)| index + 1);
    Some(format!(
        "error converting YAML to JSON: yaml: unmarshal errors:\n  line {line}: key {} already set in map",
        crate::status::quote(&key)
    ))
}

fn parse_object(patch: &[u8]) -> ApiResult<Value> {
    let value = serde_json::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    require_object(
        value,
        "error decoding patch: the patch must be a JSON object",
    )
}

fn require_object(value: Value, message: &str) -> ApiResult<Value> {
    match value {
        Value::Object(_) => Ok(value),
        _ => Err(ApiError::bad_request(message)),
    }
}

/// Merges `patch` into `original`, the object at `path` (field names from the root).
fn strategic_merge<'a>(original: &Value, patch: &'a Value, path: &mut Vec<&'a str>) -> Value {
    let (Some(orig), Some(patch_map)) = (original.as_object(), patch.as_object()) else {
        return patch.clone();
    };
    if let Some(directive) = patch_map.get("$patch").and_then(Value::as_str) {
        match directive {
            "replace" => {
                let mut replaced = patch_map.clone();
                replaced.shift_remove("$patch");
                return Value::Object(replaced);
            }
            "delete" => return Value::Null,
            _ => {}
        }
    }
    let mut result = orig.clone();
    if let Some(retain) = patch_map.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        result.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch_map {
        if let Some(list_field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) =
                (result.get_mut(list_field), value.as_array())
            {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        // `$setElementOrder` and the directives handled above change no field by themselves.
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            result.shift_remove(key);
            continue;
        }
        path.push(key);
        let merged = match (result.get(key), value) {
            (Some(existing @ Value::Object(_)), Value::Object(_)) => {
                strategic_merge(existing, value, path)
            }
            (Some(Value::Array(existing)), Value::Array(patch_items)) => {
                merge_list(existing, patch_items, path)
            }
            _ => strip_directives(value),
        };
        path.pop();
        if merged.is_null() {
            result.shift_remove(key);
        } else {
            result.insert(key.clone(), merged);
        }
    }
    Value::Object(result)
}

fn merge_list<'a>(existing: &[Value], patch: &'a [Value], path: &mut Vec<&'a str>) -> Value {
    let Some(key) = crate::schema::merge_key(path) else {
        if crate::schema::merges_items(path) {
            // A set of scalars: the patch's items join the current ones (removals come
            // as `$deleteFromPrimitiveList`).
            let mut merged = existing.to_vec();
            for item in patch {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            return Value::Array(merged);
        }
        return Value::Array(patch.iter().map(strip_directives).collect());
    };
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Value::Array(
            patch
                .iter()
                .filter(|p| p.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
    }
    let mut result: Vec<Value> = existing.to_vec();
    for item in patch {
        let id = item.get(key);
        let position = id.and_then(|id| result.iter().position(|e| e.get(key) == Some(id)));
        let deleting = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, deleting) {
            (Some(i), true) => {
                result.remove(i);
            }
            (Some(i), false) => {
                result[i] = strategic_merge(&result[i], item, path);
            }
            (None, true) => {}
            (None, false) => result.push(strip_directives(item)),
        }
    }
    Value::Array(result)
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_keys_in_an_apply_are_refused_with_their_line() {
        let applied = b"\napiVersion: v1\nspec:\n  foo: a\n  bar: b\n  foo: c\n";
        let refused = parse_apply(applied).unwrap_err();
        assert_eq!(
            refused.message,
            "error converting YAML to JSON: yaml: unmarshal errors:\n  line 6: key \"foo\" already set in map"
        );
        assert!(parse_apply(b"spec:\n  foo: a\nother:\n  foo: b\n").is_ok());
    }

    #[test]
    fn json_patch_and_merge() {
        let obj = json!({"metadata": {"labels": {"a": "1"}}, "data": {"x": "1"}});
        let patched = apply(
            PatchType::Json,
            &obj,
            br#"[{"op":"add","path":"/data/y","value":"2"}]"#,
        )
        .unwrap();
        assert_eq!(patched["data"]["y"], "2");
        let merged = apply(PatchType::Merge, &obj, br#"{"data":{"x":null,"z":"3"}}"#).unwrap();
        assert_eq!(merged["data"], json!({"z": "3"}));
        assert!(apply(PatchType::Merge, &obj, b"[1]").is_err());
        let bad = apply(
            PatchType::Json,
            &obj,
            br#"[{"op":"remove","path":"/nope"}]"#,
        );
        assert_eq!(bad.unwrap_err().code, 422);
    }

    #[test]
    fn strategic_merges_lists_by_key() {
        let obj = json!({"spec": {"containers": [
            {"name": "a", "image": "x"}, {"name": "b", "image": "y"}
        ]}});
        let patch = br#"{"spec":{"$setElementOrder/containers":[{"name":"a"},{"name":"b"}],"containers":[{"name":"b","image":"z"}]}}"#;
        let out = apply(PatchType::StrategicMerge, &obj, patch).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "x");
        assert_eq!(out["spec"]["containers"][1]["image"], "z");
        let delete = br#"{"spec":{"containers":[{"name":"a","$patch":"delete"}]}}"#;
        let out = apply(PatchType::StrategicMerge, &obj, delete).unwrap();
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn strategic_merges_sets_of_scalars() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"finalizers": ["x"]}});
        // kubectl's apply adds `c` and removes `a`, keeping `b` that someone else added.
        let patch =
            br#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a"],"finalizers":["b","c"]}}"#;
        let out = apply(PatchType::StrategicMerge, &obj, patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        // A namespace's spec.finalizers is atomic: replaced.
        let patch = br#"{"spec":{"finalizers":["y"]}}"#;
        let out = apply(PatchType::StrategicMerge, &obj, patch).unwrap();
        assert_eq!(out["spec"]["finalizers"], json!(["y"]));
    }

    #[test]
    fn strategic_directives() {
        let obj = json!({"metadata": {"finalizers": ["a", "b"]}, "data": {"k": "v", "j": "w"}});
        let patch = br#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]},"data":{"$patch":"replace","n":"1"}}"#;
        let out = apply(PatchType::StrategicMerge, &obj, patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["data"], json!({"n": "1"}));
    }
}
