//! Conversion between the versions of a resource that share one storage.
//!
//! `events.k8s.io/v1` events are stored as `v1` events (upstream does the same), and
//! `autoscaling/v1` horizontal pod autoscalers as `autoscaling/v2`. Custom objects are
//! converted as their CRD says ([`crate::crd::conversion`]). Everything else is stored in
//! the version it is served in, and passes through untouched.

use serde_json::{json, Map, Value};

use crate::registry::Registry;
use crate::resources::ResourceInfo;
use crate::status::ApiResult;

/// Field renames between core `v1` events (left) and `events.k8s.io/v1` events (right).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn rename(object: Value, api_version: &str, pairs: &[(&str, &str)], forward: bool) -> Value {
    let Value::Object(fields) = object else {
        return object;
    };
    let mut out = Map::with_capacity(fields.len());
    for (key, value) in fields {
        let renamed = pairs
            .iter()
            .find(|(from, to)| if forward { from == &key } else { to == &key })
            .map(|(from, to)| if forward { *to } else { *from })
            .unwrap_or(key.as_str())
            .to_string();
        out.insert(renamed, value);
    }
    out.insert("apiVersion".into(), json!(api_version));
    Value::Object(out)
}

/// From the served version of `resource` to its storage version. Only a custom
/// resource's conversion (through its CRD's webhook) can fail.
pub fn to_storage(registry: &Registry, resource: &ResourceInfo, object: Value) -> ApiResult<Value> {
    if let Some(custom) = &resource.custom {
        return crate::crd::conversion::convert(
            registry,
            custom,
            object,
            &resource.storage_version,
        );
    }
    Ok(builtin_to_storage(resource, object))
}

fn builtin_to_storage(resource: &ResourceInfo, object: Value) -> Value {
    match (
        resource.group.as_str(),
        resource.version.as_str(),
        resource.builtin_kind(),
    ) {
        ("events.k8s.io", _, "Event") => {
            let mut event = rename(object, "v1", EVENT_FIELDS, false);
            // The `null` served for a missing time (see `builtin_from_storage`) is not
            // stored.
            if let Some(fields) = event.as_object_mut() {
                if fields.get("eventTime").is_some_and(Value::is_null) {
                    fields.shift_remove("eventTime");
                }
            }
            event
        }
        ("autoscaling", "v1", _) => hpa_v1_to_v2(object),
        _ => object,
    }
}

/// From the storage version to the version `resource` serves.
pub fn from_storage(
    registry: &Registry,
    resource: &ResourceInfo,
    object: Value,
) -> ApiResult<Value> {
    if let Some(custom) = &resource.custom {
        let mut object =
            crate::crd::conversion::convert(registry, custom, object, &resource.api_version())?;
        // Upstream defaults custom objects when they are read too, so a default added to
        // the schema later shows on objects stored before.
        if let Some(schema) = &custom.schema {
            crate::crd::schema::apply_defaults(&mut object, schema);
        }
        return Ok(object);
    }
    Ok(builtin_from_storage(resource, object))
}

fn builtin_from_storage(resource: &ResourceInfo, object: Value) -> Value {
    match (
        resource.group.as_str(),
        resource.version.as_str(),
        resource.builtin_kind(),
    ) {
        ("events.k8s.io", _, "Event") => {
            let mut event = rename(object, "events.k8s.io/v1", EVENT_FIELDS, true);
            // The field is required in events.k8s.io/v1; upstream serves a core event
            // recorded without one with `"eventTime": null`.
            if let Some(fields) = event.as_object_mut() {
                fields.entry("eventTime").or_insert(Value::Null);
            }
            event
        }
        ("autoscaling", "v1", _) => hpa_v2_to_v1(object),
        _ => object,
    }
}

/// Whether objects of `resource` need converting on their way in and out.
pub fn needs_conversion(resource: &ResourceInfo) -> bool {
    // A custom object may have been stored in an earlier storage version.
    resource.custom.is_some()
        || !resource.storage_version.is_empty()
            && resource.storage_version != resource.api_version()
}

fn hpa_v1_to_v2(mut object: Value) -> Value {
    if let Some(fields) = object.as_object_mut() {
        fields.insert("apiVersion".into(), json!("autoscaling/v2"));
    }
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(target) = spec.shift_remove("targetCPUUtilizationPercentage") {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]),
            );
        }
    }
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(current) = status.shift_remove("currentCPUUtilizationPercentage") {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]),
            );
        }
    }
    object
}

fn cpu_utilization(metrics: Option<&Value>, field: &str) -> Option<Value> {
    metrics?.as_array()?.iter().find_map(|m| {
        let resource = m.get("resource")?;
        (resource.get("name")?.as_str()? == "cpu")
            .then(|| resource.get(field)?.get("averageUtilization").cloned())
            .flatten()
    })
}

fn hpa_v2_to_v1(mut object: Value) -> Value {
    if let Some(fields) = object.as_object_mut() {
        fields.insert("apiVersion".into(), json!("autoscaling/v1"));
    }
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        let target = cpu_utilization(spec.get("metrics"), "target");
        spec.shift_remove("metrics");
        spec.shift_remove("behavior");
        if let Some(target) = target {
            spec.insert("targetCPUUtilizationPercentage".into(), target);
        }
    }
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        let current = cpu_utilization(status.get("currentMetrics"), "current");
        status.shift_remove("currentMetrics");
        status.shift_remove("conditions");
        if let Some(current) = current {
            status.insert("currentCPUUtilizationPercentage".into(), current);
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Catalogue;

    #[test]
    fn events_round_trip() {
        let catalogue = Catalogue::new();
        let new_events = catalogue.get("events.k8s.io", "v1", "events").unwrap();
        let stored = json!({"kind": "Event", "apiVersion": "v1", "metadata": {"name": "e"}, "involvedObject": {"name": "p"}, "message": "hi", "reason": "X"});
        let served = builtin_from_storage(&new_events, stored.clone());
        assert_eq!(served["apiVersion"], "events.k8s.io/v1");
        assert_eq!(served["regarding"]["name"], "p");
        assert_eq!(served["eventTime"], Value::Null);
        assert!(served
            .as_object()
            .is_some_and(|o| o.contains_key("eventTime")));
        assert_eq!(served["note"], "hi");
        assert_eq!(builtin_to_storage(&new_events, served), stored);
    }

    #[test]
    fn hpa_versions() {
        let catalogue = Catalogue::new();
        let v1 = catalogue
            .get("autoscaling", "v1", "horizontalpodautoscalers")
            .unwrap();
        let old = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "spec": {"maxReplicas": 5, "targetCPUUtilizationPercentage": 80}});
        let stored = builtin_to_storage(&v1, old.clone());
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(builtin_from_storage(&v1, stored), old);
    }
}
