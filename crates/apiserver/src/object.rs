//! Helpers for objects held as JSON: metadata access, canonical field order, timestamps.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// Upstream's order of the top-level fields: type, metadata, body, status last.
const LEADING: &[&str] = &["kind", "apiVersion", "metadata"];

/// Upstream's order of `ObjectMeta` fields.
const METADATA_ORDER: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Rewrites an object into upstream's field order, so that what clients read (and what
/// the store keeps) looks as an upstream server writes it. Unknown fields keep their order.
pub fn canonicalize(object: Value) -> Value {
    let Value::Object(mut fields) = object else {
        return object;
    };
    let mut ordered = Map::with_capacity(fields.len());
    for key in LEADING {
        if let Some(value) = fields.shift_remove(*key) {
            let value = if *key == "metadata" {
                order_metadata(value)
            } else {
                value
            };
            ordered.insert((*key).to_string(), value);
        }
    }
    let status = fields.shift_remove("status");
    ordered.extend(fields);
    if let Some(status) = status {
        ordered.insert("status".into(), status);
    }
    Value::Object(ordered)
}

fn order_metadata(metadata: Value) -> Value {
    let Value::Object(mut fields) = metadata else {
        return metadata;
    };
    let mut ordered = Map::with_capacity(fields.len());
    for key in METADATA_ORDER {
        if let Some(value) = fields.shift_remove(*key) {
            ordered.insert((*key).to_string(), value);
        }
    }
    ordered.extend(fields);
    // Upstream's metadata fields are `omitempty`: an emptied list or map (a patch that
    // removed the last finalizer, say) or a null is not stored or shown.
    ordered.retain(|_, value| match value {
        Value::Null => false,
        Value::Array(items) => !items.is_empty(),
        Value::Object(entries) => !entries.is_empty(),
        _ => true,
    });
    Value::Object(ordered)
}

/// Sets `metadata.resourceVersion`, keeping metadata in upstream's field order.
/// Whether two objects differ at most in the `time` of their `managedFields` entries.
/// Compared in place: this runs on every write that changes something.
pub fn equal_but_manager_times(a: &Value, b: &Value) -> bool {
    /// The maps are equal but for the value (not the presence) of `skip`.
    fn equal_but(a: &Map<String, Value>, b: &Map<String, Value>, skip: &str) -> bool {
        a.len() == b.len()
            && a.contains_key(skip) == b.contains_key(skip)
            && a.iter()
                .filter(|(key, _)| key.as_str() != skip)
                .all(|(key, value)| b.get(key) == Some(value))
    }
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return false;
    };
    let (Some(Value::Object(meta_a)), Some(Value::Object(meta_b))) =
        (a.get("metadata"), b.get("metadata"))
    else {
        return false;
    };
    let managers_alike = match (meta_a.get("managedFields"), meta_b.get("managedFields")) {
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len()
                && x.iter().zip(y).all(|pair| match pair {
                    (Value::Object(x), Value::Object(y)) => equal_but(x, y, "time"),
                    (x, y) => x == y,
                })
        }
        (x, y) => x == y,
    };
    managers_alike && equal_but(meta_a, meta_b, "managedFields") && equal_but(a, b, "metadata")
}

pub fn set_resource_version(object: &mut Value, rv: i64) {
    let metadata = metadata_mut(object);
    metadata.insert("resourceVersion".into(), Value::String(rv.to_string()));
    let ordered = order_metadata(Value::Object(std::mem::take(metadata)));
    if let Value::Object(ordered) = ordered {
        *metadata = ordered;
    }
}

pub fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

/// The metadata map, created if missing (or replaced if it is not an object).
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let fields = object.as_object_mut().expect("object ensured above");
    let entry = fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("metadata ensured above")
}

pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    metadata(object)?.get(field)?.as_str()
}

pub fn name(object: &Value) -> &str {
    meta_str(object, "name").unwrap_or("")
}

pub fn namespace(object: &Value) -> Option<&str> {
    meta_str(object, "namespace").filter(|ns| !ns.is_empty())
}

pub fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn labels(object: &Value) -> BTreeMap<String, String> {
    string_map(metadata(object).and_then(|m| m.get("labels")))
}

pub fn finalizers(object: &Value) -> Vec<String> {
    metadata(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Follows a dotted path (`spec.nodeName`) and renders the leaf as a field selector sees it.
pub fn field_value(object: &Value, path: &str) -> Option<String> {
    let mut current = object;
    for part in path.split('.') {
        current = current.get(part)?;
    }
    match current {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The current time as Kubernetes writes `metav1.Time` (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    format_time(jiff::Timestamp::now())
}

pub fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn parse_time(text: &str) -> Option<jiff::Timestamp> {
    text.parse().ok()
}

/// Upstream's short human duration (`45s`, `3m20s`, `5h`, `12d`) used in `AGE` columns.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of an object from its `creationTimestamp`, as a table cell.
pub fn age(object: &Value) -> String {
    age_of(meta_str(object, "creationTimestamp").unwrap_or(""))
}

/// How long ago a timestamp was, as kubectl shows ages (`5m`, `3d`).
pub fn age_of(timestamp: &str) -> String {
    match parse_time(timestamp) {
        Some(created) => {
            let seconds = jiff::Timestamp::now().as_second() - created.as_second();
            human_duration(seconds)
        }
        None => "<unknown>".into(),
    }
}

/// The object under `key` in `map`, made (or replaced, if not an object) when missing.
pub fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(inner) => inner,
        _ => unreachable!("made an object above"),
    }
}

/// [`object_entry`] at the top level of `object` (which is made an object if it is not).
pub fn field_object<'a>(object: &'a mut Value, field: &str) -> &'a mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    match object {
        Value::Object(map) => object_entry(map, field),
        _ => unreachable!("made an object above"),
    }
}

/// An object's status, made an object if it is missing (an object read from the store
/// is always an object; anything else has no status to set).
pub fn status_mut(object: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    object
        .as_object_mut()
        .map(|fields| object_entry(fields, "status"))
}

/// The condition of `status.conditions` of type `kind`.
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// Sets a condition of `status.conditions`, keeping its transition time unless its
/// status changes.
pub fn set_condition(object: &mut Value, kind: &str, status: &str, reason: &str, message: &str) {
    let Some(conditions) =
        status_mut(object).map(|s| s.entry("conditions").or_insert_with(|| json!([])))
    else {
        return;
    };
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    let existing = list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind));
    let since = match &existing {
        Some(c) if c.get("status").and_then(Value::as_str) == Some(status) => c
            .get("lastTransitionTime")
            .cloned()
            .unwrap_or_else(|| json!(now_rfc3339())),
        _ => json!(now_rfc3339()),
    };
    let condition = json!({
        "type": kind,
        "status": status,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    });
    match existing {
        Some(c) => *c = condition,
        None => list.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_metadata_collections_are_left_out() {
        let object = json!({"metadata": {"name": "a", "finalizers": [], "labels": {}, "annotations": null, "ownerReferences": [{"uid": "u"}]}});
        let object = canonicalize(object);
        assert_eq!(
            object["metadata"],
            json!({"name": "a", "ownerReferences": [{"uid": "u"}]})
        );
    }

    #[test]
    fn canonical_order() {
        let obj = json!({"status": {}, "data": {}, "metadata": {"labels": {"x": "y"}, "name": "a"}, "apiVersion": "v1", "kind": "ConfigMap"});
        let text = serde_json::to_string(&canonicalize(obj)).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a","labels":{"x":"y"}},"data":{},"status":{}}"#
        );
    }

    #[test]
    fn durations_as_upstream() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(20 * 86400), "20d");
    }

    #[test]
    fn field_values() {
        let pod = json!({"spec": {"nodeName": "n1", "hostNetwork": true}});
        assert_eq!(field_value(&pod, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(
            field_value(&pod, "spec.hostNetwork").as_deref(),
            Some("true")
        );
        assert_eq!(field_value(&pod, "status.phase"), None);
    }

    #[test]
    fn only_manager_times_may_differ() {
        let at = |time: &str, data: &str| {
            json!({"kind": "Secret", "metadata": {"name": "s", "managedFields": [
                {"manager": "kubectl", "operation": "Apply", "time": time}]}, "data": {"user": data}})
        };
        let first = at("2026-01-01T00:00:00Z", "YQ==");
        assert!(equal_but_manager_times(
            &first,
            &at("2026-01-01T00:00:09Z", "YQ==")
        ));
        assert!(!equal_but_manager_times(
            &first,
            &at("2026-01-01T00:00:09Z", "Yg==")
        ));
        let mut relabelled = at("2026-01-01T00:00:09Z", "YQ==");
        relabelled["metadata"]["labels"] = json!({"a": "b"});
        assert!(!equal_but_manager_times(&first, &relabelled));
        let mut other_manager = first.clone();
        other_manager["metadata"]["managedFields"][0]["manager"] = json!("other");
        assert!(!equal_but_manager_times(&first, &other_manager));
        let mut untimed = first.clone();
        untimed["metadata"]["managedFields"][0]
            .as_object_mut()
            .map(|entry| entry.shift_remove("time"));
        assert!(!equal_but_manager_times(&first, &untimed));
    }
}
