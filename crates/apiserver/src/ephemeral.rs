//! A pod's ephemeral containers (`kubectl debug`): added only through the
//! `pods/ephemeralcontainers` subresource, never changed or removed once there, and held
//! to upstream's rules for what such a container may carry.

use serde_json::Value;

use crate::status::{quote, Cause};

const FIELD: &str = "spec.ephemeralContainers";

/// What an ephemeral container may not set, as upstream's validation forbids them.
const FORBIDDEN: &[&str] = &[
    "ports",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "resources",
];

fn list(pod: &Value, pointer: &str) -> Vec<Value> {
    pod.pointer(pointer)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn name(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// An update through the subresource: the stored pod with the new list of ephemeral
/// containers, or why the list may not be so.
pub fn prepare_update(new: &mut Value, old: &Value) -> Vec<Cause> {
    let wanted = list(new, "/spec/ephemeralContainers");
    let mut merged = old.clone();
    if let Some(spec) = merged.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("ephemeralContainers".into(), Value::Array(wanted.clone()));
    }
    *new = merged;
    let mut causes = Vec::new();
    for (i, existing) in list(old, "/spec/ephemeralContainers").iter().enumerate() {
        match wanted.iter().find(|c| name(c) == name(existing)) {
            None => causes.push(Cause::forbidden(
                FIELD,
                &format!(
                    "existing ephemeral containers {} may not be removed\n",
                    quote(name(existing))
                ),
            )),
            Some(now) if now != existing => causes.push(Cause::forbidden(
                format!("{FIELD}[{i}]"),
                &format!(
                    "existing ephemeral containers {} may not be changed\n",
                    quote(name(existing))
                ),
            )),
            Some(_) => {}
        }
    }
    causes.extend(validate(new));
    causes
}

/// Upstream's checks of each ephemeral container of a pod.
pub fn validate(pod: &Value) -> Vec<Cause> {
    let regular: Vec<Value> = list(pod, "/spec/containers")
        .into_iter()
        .chain(list(pod, "/spec/initContainers"))
        .collect();
    let mut seen: Vec<&str> = regular.iter().map(name).collect();
    let ephemeral = list(pod, "/spec/ephemeralContainers");
    let mut causes = Vec::new();
    for (i, c) in ephemeral.iter().enumerate() {
        let at = |field: &str| format!("{FIELD}[{i}].{field}");
        match name(c) {
            "" => causes.push(Cause::required(at("name"))),
            n if seen.contains(&n) => causes.push(Cause {
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: {}", quote(n)),
                field: at("name"),
            }),
            n => seen.push(n),
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(Cause::required(at("image")));
        }
        for field in FORBIDDEN {
            if c.get(*field).is_some_and(|v| !is_empty(v)) {
                causes.push(Cause::forbidden(
                    at(field),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        if let Some(target) = c.get("targetContainerName").and_then(Value::as_str) {
            if !regular.iter().any(|r| name(r) == target) {
                causes.push(Cause {
                    reason: "FieldValueNotFound",
                    message: format!("Not found: {}", quote(target)),
                    field: at("targetContainerName"),
                });
            }
        }
    }
    causes
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// An update of the pod itself keeps the ephemeral containers it had.
pub fn keep(new: &mut Value, old: &Value) {
    let kept = old.pointer("/spec/ephemeralContainers").cloned();
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        match kept {
            Some(list) => {
                spec.insert("ephemeralContainers".into(), list);
            }
            None => {
                spec.shift_remove("ephemeralContainers");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(ephemeral: Value) -> Value {
        json!({"spec": {"containers": [{"name": "app", "image": "x"}], "ephemeralContainers": ephemeral}})
    }

    #[test]
    fn containers_are_added_but_never_changed_or_removed() {
        let old = pod(json!([{"name": "debug", "image": "busybox"}]));
        let mut added = pod(json!([
            {"name": "debug", "image": "busybox"},
            {"name": "debug2", "image": "busybox", "targetContainerName": "app"}
        ]));
        assert!(prepare_update(&mut added, &old).is_empty());
        assert_eq!(added["spec"]["ephemeralContainers"][1]["name"], "debug2");

        let mut removed = pod(json!([]));
        let causes = prepare_update(&mut removed, &old);
        assert_eq!(
            causes[0].message,
            "Forbidden: existing ephemeral containers \"debug\" may not be removed\n"
        );
        let mut changed = pod(json!([{"name": "debug", "image": "alpine"}]));
        let causes = prepare_update(&mut changed, &old);
        assert_eq!(causes[0].field, "spec.ephemeralContainers[0]");
    }

    #[test]
    fn only_the_list_changes_through_the_subresource() {
        let old = pod(json!([]));
        let mut new = pod(json!([{"name": "debug", "image": "busybox"}]));
        new["spec"]["containers"][0]["image"] = json!("changed");
        new["metadata"] = json!({"labels": {"sneaky": "yes"}});
        assert!(prepare_update(&mut new, &old).is_empty());
        assert_eq!(new["spec"]["containers"][0]["image"], "x");
        assert!(new.get("metadata").is_none());
    }

    #[test]
    fn upstreams_rules_for_each_container() {
        let causes = validate(&pod(json!([
            {"name": "app", "image": "busybox"},
            {"name": "probe", "image": "busybox", "readinessProbe": {"exec": {"command": ["true"]}}},
            {"name": "lost", "image": "busybox", "targetContainerName": "nope"},
            {"name": "bare"}
        ])));
        let described: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            described,
            [
                "spec.ephemeralContainers[0].name: Duplicate value: \"app\"",
                "spec.ephemeralContainers[1].readinessProbe: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[2].targetContainerName: Not found: \"nope\"",
                "spec.ephemeralContainers[3].image: Required value",
            ]
        );
    }
}
