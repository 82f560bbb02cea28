//! The `Priority` admission plugin: a pod's `priorityClassName` (or the cluster's
//! `globalDefault` class) decides its `priority` and `preemptionPolicy`, which the
//! scheduler orders and preempts by. The two system classes exist from the start.

use serde_json::{json, Value};

use crate::object;
use crate::registry::Registry;
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult};

/// Upstream's built-in classes: name, value, description.
pub const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The class objects [`SYSTEM_CLASSES`] describe.
pub fn system_class_objects() -> impl Iterator<Item = Value> {
    SYSTEM_CLASSES.iter().map(|(name, value, description)| {
        json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": description,
        })
    })
}

const DEFAULT_POLICY: &str = "PreemptLowerPriority";

/// Sets the pod's priority from its class, refusing unknown classes and contradicting
/// values as upstream does.
pub fn admit_pod(registry: &Registry, resource: &ResourceInfo, pod: &mut Value) -> ApiResult<()> {
    let classes = registry
        .catalogue
        .get("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(|| ApiError::internal("priorityclasses are not served"))?;
    let name = object::name(pod).to_string();
    let forbidden = |why: String| ApiError::admission_forbidden(resource, &name, &why);
    let requested = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let class = match &requested {
        Some(class_name) => match registry.cache.get(&classes.key(None, class_name)) {
            Some(cached) => Some(cached.value()?),
            None => {
                return Err(forbidden(format!(
                    "no PriorityClass with name {class_name} was found"
                )))
            }
        },
        None => registry
            .cache
            .snapshot(&classes.key_prefix(None), None)
            .objects
            .iter()
            // Every pod create without a class comes here: look at the cached JSON
            // before decoding any class.
            .filter(|c| contains(&c.body, br#""globalDefault":true"#))
            .filter_map(|c| c.value().ok())
            .filter(|c| c["globalDefault"] == json!(true))
            .min_by_key(|c| c["value"].as_i64().unwrap_or(0)),
    };
    let priority = class
        .as_ref()
        .and_then(|c| c["value"].as_i64())
        .unwrap_or(0);
    let policy = class
        .as_ref()
        .and_then(|c| c["preemptionPolicy"].as_str())
        .unwrap_or(DEFAULT_POLICY)
        .to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != priority {
            return Err(forbidden(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            )));
        }
    }
    if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
        if class.is_some() && given != policy {
            return Err(forbidden(format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
    }
    if let Some(class) = &class {
        spec.insert("priorityClassName".into(), json!(object::name(class)));
    }
    spec.insert("priority".into(), json!(priority));
    spec.entry("preemptionPolicy")
        .or_insert_with(|| json!(policy));
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
