//! The `pods/resize` subresource (in-place pod resize): the one way to change a running
//! pod's container resources. As upstream's resize strategy, a write through it takes
//! from the new pod only each container's `resources` and `resizePolicy` (the rest comes
//! from the stored pod), and is held to upstream's rules: containers keep their names
//! and order, only cpu and memory change, nothing is removed, and the QoS class stays.
//! The kubelet then actuates the new values and reports them in the pod's status.

use serde_json::Value;

use crate::status::Cause;

const RESIZABLE: &[&str] = &["cpu", "memory"];
const LISTS: &[&str] = &["containers", "initContainers"];

fn containers<'a>(pod: &'a Value, list: &str) -> &'a [Value] {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn name(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// A write through the subresource: `new` becomes the stored pod with the new
/// containers' resources and resize policies, or the causes why it may not.
pub fn prepare_update(new: &mut Value, old: &Value) -> Vec<Cause> {
    let mut causes = renamed_or_reordered(new, old);
    if !causes.is_empty() {
        return causes;
    }
    let mut merged = old.clone();
    for list in LISTS {
        let wanted = containers(new, list).to_vec();
        if let Some(stored) = merged
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        {
            for (c, w) in stored.iter_mut().zip(&wanted) {
                if let Some(fields) = c.as_object_mut() {
                    for field in ["resources", "resizePolicy"] {
                        match w.get(field) {
                            Some(v) => fields.insert(field.into(), v.clone()),
                            None => fields.shift_remove(field),
                        };
                    }
                }
            }
        }
    }
    *new = merged;
    causes.extend(validate(new, old));
    causes
}

/// Containers may not be added, removed, renamed or reordered through a resize.
fn renamed_or_reordered(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for list in LISTS {
        let (now, before) = (containers(new, list), containers(old, list));
        if now.len() != before.len() {
            causes.push(Cause::forbidden(
                format!("spec.{list}"),
                "containers may not be added or removed on resize",
            ));
            continue;
        }
        for (i, (n, b)) in now.iter().zip(before).enumerate() {
            if name(n) != name(b) {
                causes.push(Cause::forbidden(
                    format!("spec.{list}[{i}].name"),
                    "containers may not be renamed or reordered on resize",
                ));
            }
        }
    }
    causes
}

fn resource_list<'a>(
    container: &'a Value,
    kind: &str,
) -> Option<&'a serde_json::Map<String, Value>> {
    container
        .get("resources")
        .and_then(|r| r.get(kind))
        .and_then(Value::as_object)
}

/// Upstream's `ValidatePodResize` on a pod that differs from `old` only in its
/// containers' resources and resize policies.
pub fn validate(new: &Value, old: &Value) -> Vec<Cause> {
    let pod_level = |pod: &Value| {
        ["requests", "limits"].iter().any(|k| {
            pod.pointer(&format!("/spec/resources/{k}"))
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
        })
    };
    if pod_level(old) || pod_level(new) {
        return vec![Cause::forbidden(
            "",
            "pods with pod-level resources cannot be resized",
        )];
    }
    if old
        .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
    {
        return vec![Cause::forbidden("", "static pods cannot be resized")];
    }
    if old.pointer("/spec/os/name").and_then(Value::as_str) == Some("windows") {
        return vec![Cause::forbidden("", "windows pods cannot be resized")];
    }
    let mut causes = Vec::new();
    let old_qos = crate::strategy::qos_class(old);
    if old_qos != crate::strategy::qos_class(new) {
        let shown = new
            .pointer("/status/qosClass")
            .and_then(Value::as_str)
            .unwrap_or(old_qos);
        causes.push(Cause::invalid(
            "spec",
            shown,
            "Pod QOS Class may not change as a result of resizing",
        ));
    }
    if !node_supports_resize(old) {
        causes.push(Cause::forbidden(
            "spec",
            "Pod running on node without support for resize",
        ));
    }
    let mut only_cpu_memory = true;
    for list in LISTS {
        for (i, (n, o)) in containers(new, list)
            .iter()
            .zip(containers(old, list))
            .enumerate()
        {
            let path = format!("spec.{list}[{i}].resources");
            for (kind, what) in [("requests", "requests"), ("limits", "limits")] {
                let now = resource_list(n, kind);
                let removed = resource_list(o, kind)
                    .into_iter()
                    .flatten()
                    .any(|(k, _)| now.is_none_or(|m| !m.contains_key(k)));
                if removed {
                    causes.push(Cause::forbidden(
                        format!("{path}.{kind}"),
                        &format!("resource {what} cannot be removed"),
                    ));
                }
                let others = |list: Option<&serde_json::Map<String, Value>>| {
                    list.into_iter()
                        .flatten()
                        .filter(|(k, _)| !RESIZABLE.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<Vec<_>>()
                };
                if others(now) != others(resource_list(o, kind)) {
                    only_cpu_memory = false;
                }
            }
            // Non-sidecar init containers have run (or are running) once: their
            // resources are what they ran with.
            if *list == "initContainers"
                && o.get("restartPolicy").and_then(Value::as_str) != Some("Always")
                && n.get("resources") != o.get("resources")
            {
                causes.push(Cause::forbidden(
                    "spec",
                    "resources for non-sidecar init containers are immutable",
                ));
            }
        }
    }
    if !only_cpu_memory {
        causes.push(Cause::forbidden(
            "spec",
            "only cpu and memory resources are mutable",
        ));
    }
    causes
}

/// Upstream's version-skew guard: a pod whose running containers report no
/// `resources` runs on a kubelet that cannot resize.
fn node_supports_resize(pod: &Value) -> bool {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|s| s.pointer("/state/running").is_some())
        .is_none_or(|s| s.get("resources").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(resources: Value) -> Value {
        json!({
            "metadata": {"name": "p", "labels": {"a": "b"}},
            "spec": {"containers": [
                {"name": "c1", "image": "busybox", "resources": resources},
                {"name": "c2", "image": "busybox"}
            ]},
            "status": {"qosClass": crate::strategy::qos_class(&json!({"spec": {"containers": [{"resources": resources}, {}]}}))}
        })
    }

    fn messages(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn only_resources_and_policies_are_taken_from_the_new_pod() {
        let old = pod(json!({"requests": {"cpu": "20m"}}));
        let mut new = pod(json!({"requests": {"cpu": "25m"}, "limits": {"cpu": "35m"}}));
        new["spec"]["containers"][0]["image"] = json!("changed");
        new["spec"]["containers"][0]["resizePolicy"] =
            json!([{"resourceName": "cpu", "restartPolicy": "RestartContainer"}]);
        new["metadata"]["labels"] = json!({"sneaky": "yes"});
        assert!(prepare_update(&mut new, &old).is_empty());
        assert_eq!(new["spec"]["containers"][0]["image"], "busybox");
        assert_eq!(
            new["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "35m"
        );
        assert_eq!(
            new["spec"]["containers"][0]["resizePolicy"][0]["restartPolicy"],
            "RestartContainer"
        );
        assert_eq!(new["metadata"]["labels"], json!({"a": "b"}));
    }

    #[test]
    fn the_qos_class_may_not_change() {
        let old = pod(json!({}));
        let mut new = pod(json!({"requests": {"memory": "35Mi"}}));
        assert_eq!(
            messages(&prepare_update(&mut new, &old)),
            ["spec: Invalid value: \"BestEffort\": Pod QOS Class may not change as a result of resizing"]
        );
        // Requests raised to the limits (in other words: `0.03` is `30m`) make the pod
        // Guaranteed.
        let burstable = json!({"requests": {"cpu": "20m", "memory": "35Mi"}, "limits": {"cpu": "30m", "memory": "45Mi"}});
        let equal = json!({"requests": {"cpu": "0.03", "memory": "45Mi"}, "limits": {"cpu": "30m", "memory": "45Mi"}});
        let mut old = pod(burstable);
        old["spec"]["containers"][1]["resources"] = equal.clone();
        let mut new = pod(equal.clone());
        new["spec"]["containers"][1]["resources"] = equal;
        let causes = prepare_update(&mut new, &old);
        assert_eq!(
            messages(&causes),
            ["spec: Invalid value: \"Burstable\": Pod QOS Class may not change as a result of resizing"]
        );
    }

    #[test]
    fn requests_and_limits_are_never_removed() {
        let old = pod(
            json!({"requests": {"cpu": "20m", "memory": "35Mi"}, "limits": {"cpu": "30m", "memory": "45Mi"}}),
        );
        let mut new = pod(json!({"requests": {"cpu": "25m", "memory": "40Mi"}}));
        assert_eq!(
            messages(&prepare_update(&mut new, &old)),
            ["spec.containers[0].resources.limits: Forbidden: resource limits cannot be removed"]
        );
        let old = pod(json!({"requests": {"cpu": "20m"}}));
        let mut new = pod(json!({}));
        let causes = prepare_update(&mut new, &old);
        assert!(messages(&causes)
            .contains(&"spec.containers[0].resources.requests: Forbidden: resource requests cannot be removed".to_string()));
    }

    #[test]
    fn only_cpu_and_memory_change() {
        let old = pod(json!({"requests": {"cpu": "20m", "ephemeral-storage": "1"}}));
        let mut new = pod(json!({"requests": {"cpu": "20m", "ephemeral-storage": "3"}}));
        assert_eq!(
            messages(&prepare_update(&mut new, &old)),
            ["spec: Forbidden: only cpu and memory resources are mutable"]
        );
    }

    #[test]
    fn containers_keep_their_names_and_order() {
        let old = pod(json!({"requests": {"cpu": "20m"}}));
        let mut new = old.clone();
        new["spec"]["containers"] = json!([{"name": "c2"}, {"name": "c1"}]);
        assert_eq!(
            messages(&prepare_update(&mut new, &old)),
            [
                "spec.containers[0].name: Forbidden: containers may not be renamed or reordered on resize",
                "spec.containers[1].name: Forbidden: containers may not be renamed or reordered on resize",
            ]
        );
    }

    #[test]
    fn static_pods_and_old_kubelets_refuse_resizes() {
        let mut old = pod(json!({"requests": {"cpu": "20m"}}));
        old["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
        let mut new = pod(json!({"requests": {"cpu": "25m"}}));
        assert_eq!(
            messages(&prepare_update(&mut new, &old)),
            [": Forbidden: static pods cannot be resized"]
        );
        let mut old = pod(json!({"requests": {"cpu": "20m"}}));
        old["status"]["containerStatuses"] = json!([{"name": "c1", "state": {"running": {}}}]);
        let mut new = pod(json!({"requests": {"cpu": "25m"}}));
        assert_eq!(
            messages(&prepare_update(&mut new, &old)),
            ["spec: Forbidden: Pod running on node without support for resize"]
        );
    }
}
