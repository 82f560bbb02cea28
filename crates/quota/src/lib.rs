//! ResourceQuota accounting, shared by the API server's `ResourceQuota` admission plugin
//! (which charges each create against its namespace's quotas, so that none is exceeded)
//! and the controller manager's quota controller (which recounts `status.used`, giving
//! back what deleted objects held). Both must count alike, so the rules live here once.
//!
//! Usage is kept in thousandths of a unit (CPU is fractional); counts are whole units.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_quantity::{format_binary, format_milli, parse_milli};

/// Resource name → amount in thousandths of a unit.
pub type Usage = BTreeMap<String, i64>;

/// The names a quota may hold for objects of `group`/`plural`, and each one's amount for
/// `object`: the object count (`count/<plural>[.<group>]`, and the legacy name for core
/// kinds), plus, for pods, their compute requests and limits, and for services, load
/// balancers and node ports. Finished pods hold nothing.
pub fn usage(group: &str, plural: &str, object: &Value) -> Usage {
    let mut usage = Usage::new();
    if plural == "pods" && matches!(phase(object), "Succeeded" | "Failed") {
        return usage;
    }
    let count_name = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    usage.insert(count_name, 1000);
    if group.is_empty() && LEGACY_COUNTS.contains(&plural) {
        usage.insert(plural.to_string(), 1000);
    }
    match plural {
        "pods" if group.is_empty() => pod_compute(object, &mut usage),
        "services" if group.is_empty() => {
            let kind = object.pointer("/spec/type").and_then(Value::as_str);
            if kind == Some("LoadBalancer") {
                usage.insert("services.loadbalancers".into(), 1000);
            }
            if matches!(kind, Some("NodePort" | "LoadBalancer")) {
                let ports = object
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                usage.insert("services.nodeports".into(), 1000 * ports as i64);
            }
        }
        _ => {}
    }
    usage
}

/// Core kinds a quota may count by their plain plural, as upstream allows.
const LEGACY_COUNTS: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "replicationcontrollers",
    "resourcequotas",
    "persistentvolumeclaims",
];

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// A pod's requests and limits: the sum over its containers, or the largest init
/// container's if that is more (init containers run one at a time, before the others).
fn pod_compute(pod: &Value, usage: &mut Usage) {
    for kind in ["requests", "limits"] {
        let totals = pod_resources(pod, kind);
        for resource in ["cpu", "memory"] {
            let Some(total) = totals.get(resource).copied().filter(|t| *t > 0) else {
                continue;
            };
            usage.insert(format!("{kind}.{resource}"), total);
            // `cpu` and `memory` are upstream's older names for the requests.
            if kind == "requests" {
                usage.insert(resource.to_string(), total);
            }
        }
    }
}

/// What a pod asks for in `resources.<kind>` (`requests` or `limits`), per resource: its
/// containers' sum, or an init container's amount if larger (init containers run one
/// at a time, before the others), as upstream's `PodRequests` computes it.
pub fn pod_resources(pod: &Value, kind: &str) -> Usage {
    let containers = |field: &str| {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(move |c| c.pointer(&format!("/resources/{kind}"))?.as_object())
    };
    let amounts = |list: &serde_json::Map<String, Value>| {
        list.iter()
            .map(|(name, q)| {
                let amount = q.as_str().and_then(|q| parse_milli(q).ok()).unwrap_or(0);
                (name.clone(), amount)
            })
            .collect::<Vec<_>>()
    };
    let mut totals = Usage::new();
    for list in containers("containers") {
        for (name, amount) in amounts(list) {
            *totals.entry(name).or_insert(0) += amount;
        }
    }
    for list in containers("initContainers") {
        for (name, amount) in amounts(list) {
            let slot = totals.entry(name).or_insert(0);
            *slot = (*slot).max(amount);
        }
    }
    totals
}

/// Whether the quota's scopes (`spec.scopes`) select the object. Scopes describe pods;
/// a quota with scopes counts nothing else, as upstream.
pub fn scopes_select(quota: &Value, group: &str, plural: &str, object: &Value) -> bool {
    let scopes: Vec<&str> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if scopes.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    let terminating = object
        .pointer("/spec/activeDeadlineSeconds")
        .is_some_and(|v| v.as_i64().is_some_and(|s| s >= 0));
    let best_effort = is_best_effort(object);
    scopes.iter().all(|scope| match *scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        _ => false,
    })
}

/// No container (init containers included) requests or limits CPU or memory.
fn is_best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|field| {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .is_none_or(|containers| {
                containers.iter().all(|c| {
                    ["requests", "limits"].iter().all(|kind| {
                        c.pointer(&format!("/resources/{kind}"))
                            .and_then(Value::as_object)
                            .is_none_or(|m| !m.contains_key("cpu") && !m.contains_key("memory"))
                    })
                })
            })
    })
}

/// A quota's resource list (`spec.hard`, `status.hard`, `status.used`) as amounts;
/// unparsable entries are left out.
pub fn read_list(list: Option<&Value>) -> Usage {
    list.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(name, q)| Some((name.clone(), parse_milli(q.as_str()?).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Amounts written as quantities: memory-like resources with binary suffixes, the rest
/// decimal.
pub fn write_list(usage: &Usage) -> Value {
    Value::Object(
        usage
            .iter()
            .map(|(name, amount)| (name.clone(), Value::String(quantity(name, *amount))))
            .collect(),
    )
}

/// One amount as upstream writes it for the resource `name`.
pub fn quantity(name: &str, amount: i64) -> String {
    let memory_like = name.ends_with("memory") || name.ends_with("storage");
    if memory_like && amount % 1000 == 0 {
        format_binary(amount / 1000)
    } else {
        format_milli(amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_count_and_hold_their_compute() {
        let pod = json!({"spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
                {"resources": {"requests": {"cpu": "200m"}}}
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "500m"}}}]
        }});
        let usage = usage("", "pods", &pod);
        assert_eq!(usage["count/pods"], 1000);
        assert_eq!(usage["pods"], 1000);
        assert_eq!(
            usage["requests.cpu"], 500,
            "the init container's request is larger"
        );
        assert_eq!(usage["cpu"], 500);
        assert_eq!(usage["requests.memory"], 64 * 1024 * 1024 * 1000);
        assert_eq!(usage["limits.cpu"], 1000);
        assert!(!usage.contains_key("limits.memory"));
        let finished = json!({"status": {"phase": "Succeeded"}});
        assert!(super::usage("", "pods", &finished).is_empty());
    }

    #[test]
    fn other_kinds_count_by_group() {
        let usage = usage("apps", "replicasets", &json!({}));
        assert_eq!(usage.keys().collect::<Vec<_>>(), ["count/replicasets.apps"]);
        let lb = super::usage(
            "",
            "services",
            &json!({"spec": {"type": "LoadBalancer", "ports": [{}, {}]}}),
        );
        assert_eq!(lb["services.loadbalancers"], 1000);
        assert_eq!(lb["services.nodeports"], 2000);
    }

    #[test]
    fn scopes_select_pods_only() {
        let quota = json!({"spec": {"scopes": ["BestEffort", "NotTerminating"]}});
        let best_effort = json!({"spec": {"containers": [{}]}});
        assert!(scopes_select(&quota, "", "pods", &best_effort));
        let burstable =
            json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert!(!scopes_select(&quota, "", "pods", &burstable));
        let deadline = json!({"spec": {"activeDeadlineSeconds": 10, "containers": [{}]}});
        assert!(!scopes_select(&quota, "", "pods", &deadline));
        assert!(!scopes_select(&quota, "", "configmaps", &json!({})));
        assert!(scopes_select(
            &json!({"spec": {}}),
            "",
            "configmaps",
            &json!({})
        ));
    }

    #[test]
    fn lists_round_trip() {
        let list = json!({"pods": "2", "requests.cpu": "1500m", "requests.memory": "1Gi"});
        let usage = read_list(Some(&list));
        assert_eq!(write_list(&usage), list);
    }
}
