//! The `LimitRanger` admission plugin: the LimitRanges of a pod's namespace fill in the
//! requests and limits its containers leave out (`defaultRequest`, `default`), then bound
//! what they ask for (`min`, `max`, `maxLimitRequestRatio`, per container and per pod),
//! refusing the pod with upstream's messages otherwise.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use skiff_quantity::parse_milli;

use crate::object;
use crate::registry::Registry;
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult};

/// The annotation upstream leaves on a pod whose resources it filled in.
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Applies the namespace's LimitRanges to a pod being created.
pub fn admit_pod(
    registry: &Registry,
    resource: &ResourceInfo,
    namespace: &str,
    pod: &mut Value,
) -> ApiResult<()> {
    let ranges = registry.core("limitranges")?;
    let snapshot = registry
        .cache
        .snapshot(&ranges.key_prefix(Some(namespace)), None);
    let mut items = Vec::new();
    for cached in &snapshot.objects {
        let range = cached.value()?;
        if let Some(limits) = range.pointer("/spec/limits").and_then(Value::as_array) {
            items.extend(limits.iter().cloned());
        }
    }
    if items.is_empty() {
        return Ok(());
    }
    let container_items: Vec<&Value> = items.iter().filter(|i| i["type"] == "Container").collect();
    let set = apply_defaults(pod, &container_items);
    if !set.is_empty() {
        let metadata = object::metadata_mut(pod);
        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
        if let Some(map) = annotations.as_object_mut() {
            map.insert(
                ANNOTATION.into(),
                json!(format!("LimitRanger plugin set: {}", set.join("; "))),
            );
        }
    }
    let mut errors = Vec::new();
    for item in &items {
        match item["type"].as_str() {
            Some("Container") => {
                for container in containers(pod) {
                    let (requests, limits) = resources_of(container);
                    check(item, "Container", &requests, &limits, &mut errors);
                }
            }
            Some("Pod") => {
                let (requests, limits) = pod_totals(pod);
                check(item, "Pod", &requests, &limits, &mut errors);
            }
            _ => {}
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(ApiError::admission_forbidden(
            resource,
            object::name(pod),
            &errors[0],
        )),
        _ => Err(ApiError::admission_forbidden(
            resource,
            object::name(pod),
            &format!("[{}]", errors.join(", ")),
        )),
    }
}

/// Resource name → quantity as written.
type List = BTreeMap<String, String>;

fn list(value: Option<&Value>) -> List {
    object::string_map(value)
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(move |field| {
            pod.pointer(&format!("/spec/{field}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
}

fn resources_of(container: &Value) -> (List, List) {
    (
        list(container.pointer("/resources/requests")),
        list(container.pointer("/resources/limits")),
    )
}

/// Fills in missing requests and limits; returns what was set, as upstream's annotation
/// words it (`cpu, memory request for container web`).
fn apply_defaults(pod: &mut Value, items: &[&Value]) -> Vec<String> {
    let mut defaults = List::new();
    let mut default_requests = List::new();
    for item in items {
        defaults.extend(list(item.get("default")));
        default_requests.extend(list(item.get("defaultRequest")));
    }
    let mut set = Vec::new();
    for (field, kind) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        let Some(list) = pod
            .pointer_mut(&format!("/spec/{field}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for container in list {
            let name = container["name"].as_str().unwrap_or_default().to_string();
            for (wanted, what) in [(&default_requests, "requests"), (&defaults, "limits")] {
                let filled = fill(container, what, wanted);
                if !filled.is_empty() {
                    let word = if what == "requests" {
                        "request"
                    } else {
                        "limit"
                    };
                    set.push(format!("{} {word} for {kind} {name}", filled.join(", ")));
                }
            }
        }
    }
    set
}

/// Sets each of `wanted` the container's `resources.<what>` lacks; returns their names.
fn fill(container: &mut Value, what: &str, wanted: &List) -> Vec<String> {
    if wanted.is_empty() {
        return Vec::new();
    }
    let Some(container) = container.as_object_mut() else {
        return Vec::new();
    };
    let resources = object::object_entry(container, "resources");
    let present = object::object_entry(resources, what);
    let mut filled = Vec::new();
    for (name, quantity) in wanted {
        if !present.contains_key(name) {
            present.insert(name.clone(), json!(quantity));
            filled.push(name.clone());
        }
    }
    filled
}

/// A pod's requests and limits, as the quota code totals them.
fn pod_totals(pod: &Value) -> (List, List) {
    let written = |kind: &str| -> List {
        skiff_quota::pod_resources(pod, kind)
            .into_iter()
            .map(|(name, amount)| (name, skiff_quantity::format_milli(amount)))
            .collect()
    };
    (written("requests"), written("limits"))
}

/// Upstream's min, max and ratio constraints of one LimitRange item.
fn check(item: &Value, scope: &str, requests: &List, limits: &List, errors: &mut Vec<String>) {
    let amount = |q: &str| parse_milli(q).unwrap_or(0);
    for (name, min) in list(item.get("min")) {
        match requests.get(&name) {
            None => errors.push(format!(
                "minimum {name} usage per {scope} is {min}.  No request is specified"
            )),
            Some(request) if amount(request) < amount(&min) => errors.push(format!(
                "minimum {name} usage per {scope} is {min}, but request is {request}"
            )),
            _ => {}
        }
        if let Some(limit) = limits.get(&name).filter(|l| amount(l) < amount(&min)) {
            errors.push(format!(
                "minimum {name} usage per {scope} is {min}, but limit is {limit}"
            ));
        }
    }
    for (name, max) in list(item.get("max")) {
        match limits.get(&name) {
            None => errors.push(format!(
                "maximum {name} usage per {scope} is {max}.  No limit is specified"
            )),
            Some(limit) if amount(limit) > amount(&max) => errors.push(format!(
                "maximum {name} usage per {scope} is {max}, but limit is {limit}"
            )),
            _ => {}
        }
        if let Some(request) = requests.get(&name).filter(|r| amount(r) > amount(&max)) {
            errors.push(format!(
                "maximum {name} usage per {scope} is {max}, but request is {request}"
            ));
        }
    }
    for (name, ratio) in list(item.get("maxLimitRequestRatio")) {
        let (Some(limit), Some(request)) = (limits.get(&name), requests.get(&name)) else {
            continue;
        };
        let (limit, request) = (amount(limit), amount(request));
        if request > 0 && limit as f64 / request as f64 > amount(&ratio) as f64 / 1000.0 {
            errors.push(format!(
                "{name} max limit to request ratio per {scope} is {ratio}, but provided ratio is {:.6}",
                limit as f64 / request as f64
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let item = json!({"type": "Container", "default": {"cpu": "500m", "memory": "500Mi"},
                          "defaultRequest": {"cpu": "100m", "memory": "200Mi"}});
        let mut pod = json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"requests": {"cpu": "300m"}, "limits": {"cpu": "300m"}}}
        ]}});
        let set = apply_defaults(&mut pod, &[&item]);
        assert_eq!(
            set,
            [
                "cpu, memory request for container a",
                "cpu, memory limit for container a",
                "memory request for container b",
                "memory limit for container b"
            ]
        );
        assert_eq!(
            pod["spec"]["containers"][1]["resources"]["requests"]["cpu"],
            "300m"
        );
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "500Mi"
        );
    }

    #[test]
    fn constraints_word_their_refusals_as_upstream() {
        let item = json!({"type": "Container", "min": {"cpu": "100m"}, "max": {"memory": "1Gi"},
                          "maxLimitRequestRatio": {"cpu": "4"}});
        let mut errors = Vec::new();
        let requests: List = [("cpu".to_string(), "50m".to_string())].into();
        let limits: List = [
            ("cpu".to_string(), "1".to_string()),
            ("memory".to_string(), "2Gi".to_string()),
        ]
        .into();
        check(&item, "Container", &requests, &limits, &mut errors);
        assert_eq!(
            errors,
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum memory usage per Container is 1Gi, but limit is 2Gi",
                "cpu max limit to request ratio per Container is 4, but provided ratio is 20.000000"
            ]
        );
    }

    #[test]
    fn pod_totals_take_the_larger_of_sum_and_init() {
        let pod = json!({"spec": {
            "containers": [{"resources": {"requests": {"cpu": "100m"}}}, {"resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [{"resources": {"requests": {"cpu": "1"}}}]
        }});
        let (requests, _) = pod_totals(&pod);
        assert_eq!(requests["cpu"], "1");
    }
}
