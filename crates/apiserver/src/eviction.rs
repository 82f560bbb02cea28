//! The `pods/eviction` subresource, as upstream's eviction REST storage behaves: a pod is
//! deleted only if the PodDisruptionBudget covering it allows one more disruption, and
//! the budget's `disruptionsAllowed` is spent (and the pod recorded in `disruptedPods`)
//! in the same compare-and-swap, so two evictions racing for the last allowed
//! disruption cannot both win. The disruption controller later recounts and frees the
//! entry. `kubectl drain` evicts through here and retries on `429`.

use serde_json::{json, Value};

use crate::object;
use crate::registry::{Action, DeleteOptions, Registry};
use crate::resources::ResourceInfo;
use crate::selectors::LabelSelector;
use crate::status::{ApiError, ApiResult};

/// Upstream's cap on evictions the disruption controller has not confirmed yet.
const MAX_DISRUPTED_PODS: usize = 2000;
/// Attempts when the budget changes under an eviction (upstream retries the same way).
const ATTEMPTS: usize = 5;

/// Evicts pod `namespace/name` as `eviction` (a `policy/v1` Eviction) asks.
pub async fn evict(
    registry: &Registry,
    namespace: &str,
    name: &str,
    eviction: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    let body_name = object::name(eviction);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let body_namespace = object::meta_str(eviction, "namespace").unwrap_or_default();
    if !body_namespace.is_empty() && body_namespace != namespace {
        return Err(ApiError::bad_request(
            "namespace in URL does not match namespace in Eviction object",
        ));
    }
    let options: DeleteOptions = match eviction.get("deleteOptions") {
        Some(options) if !options.is_null() => serde_json::from_value(options.clone())
            .map_err(|e| ApiError::bad_request(format!("invalid deleteOptions: {e}")))?,
        _ => DeleteOptions::default(),
    };
    let dry_run = dry_run || options.dry_run.iter().any(|d| d == "All");
    let pods = registry.core("pods")?;
    let budgets = registry
        .catalogue
        .get("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("poddisruptionbudgets are not served"))?;

    for _ in 0..ATTEMPTS {
        let pod = registry.get(&pods, Some(namespace), name).await?;
        if can_ignore_budget(&pod) {
            return delete_pod(registry, &pods, namespace, &pod, &options, dry_run).await;
        }
        let mut covering = budgets_covering(registry, &budgets, namespace, &pod).await?;
        if covering.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        let Some(budget) = covering.pop() else {
            return delete_pod(registry, &pods, namespace, &pod, &options, dry_run).await;
        };
        if !is_ready(&pod) && unready_may_go(&budget) {
            return delete_pod(registry, &pods, namespace, &pod, &options, dry_run).await;
        }
        match spend_disruption(registry, &budgets, namespace, &budget, name, dry_run).await? {
            Spent::Yes => {
                return delete_pod(registry, &pods, namespace, &pod, &options, dry_run).await
            }
            Spent::Raced => continue,
        }
    }
    Err(ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    ))
}

/// Finished, pending and already-terminating pods do not count toward any budget.
fn can_ignore_budget(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    matches!(phase, Some("Succeeded" | "Failed" | "Pending"))
        || object::metadata(pod).is_some_and(|m| m.get("deletionTimestamp").is_some())
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// An unready pod may go without spending the budget: always under `AlwaysAllow`, and under
/// the default `IfHealthyBudget` while the budget is met without it.
fn unready_may_go(budget: &Value) -> bool {
    if budget.pointer("/spec/unhealthyPodEvictionPolicy") == Some(&json!("AlwaysAllow")) {
        return true;
    }
    let status = |field: &str| {
        budget
            .pointer(&format!("/status/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    status("desiredHealthy") > 0 && status("currentHealthy") >= status("desiredHealthy")
}

/// The budgets of `namespace` whose selector matches the pod; read from the store, not the
/// cache, so a budget created just before the eviction counts.
async fn budgets_covering(
    registry: &Registry,
    budgets: &ResourceInfo,
    namespace: &str,
    pod: &Value,
) -> ApiResult<Vec<Value>> {
    let labels = object::labels(pod);
    let response = registry
        .store
        .range(skiff_store::RangeRequest::prefix(
            &budgets.key_prefix(Some(namespace)),
        ))
        .await?;
    let mut covering = Vec::new();
    for kv in &response.kvs {
        let mut budget: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
        object::set_resource_version(&mut budget, kv.mod_revision);
        // A missing selector selects nothing; an empty one, every pod (policy/v1).
        let Some(selector) = budget.pointer("/spec/selector") else {
            continue;
        };
        let Ok(selector) = LabelSelector::from_object(selector) else {
            continue;
        };
        if selector.matches(&labels) {
            covering.push(budget);
        }
    }
    Ok(covering)
}

enum Spent {
    Yes,
    /// The budget changed since it was read: read everything again.
    Raced,
}

/// Upstream's `checkAndDecrement`.
async fn spend_disruption(
    registry: &Registry,
    budgets: &ResourceInfo,
    namespace: &str,
    budget: &Value,
    pod_name: &str,
    dry_run: bool,
) -> ApiResult<Spent> {
    let budget_name = object::name(budget).to_string();
    let status = budget.get("status").cloned().unwrap_or_else(|| json!({}));
    let number = |field: &str| status.get(field).and_then(Value::as_i64).unwrap_or(0);
    let generation = object::metadata(budget)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if number("observedGeneration") < generation {
        return Err(too_many_requests(
            format!("The disruption budget {budget_name} is still being processed by the server."),
            Some(10),
        ));
    }
    if number("disruptionsAllowed") < 0 {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "poddisruptionbudgets.policy \"{budget_name}\" is forbidden: pdb disruptions allowed is negative"
            ),
        ));
    }
    let disrupted = status
        .get("disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "poddisruptionbudgets.policy \"{budget_name}\" is forbidden: DisruptedPods map too big - too many evictions not confirmed by PDB controller"
            ),
        ));
    }
    if number("disruptionsAllowed") == 0 {
        return Err(too_many_requests(
            format!(
                "The disruption budget {budget_name} needs {} healthy pods and has {} currently",
                number("desiredHealthy"),
                number("currentHealthy")
            ),
            None,
        ));
    }
    if dry_run {
        return Ok(Spent::Yes);
    }
    let read_rv = object::meta_str(budget, "resourceVersion").map(str::to_string);
    let result = registry
        .guaranteed_update(budgets, Some(namespace), &budget_name, false, |current| {
            // Only the version the decision was made on may be spent.
            if object::meta_str(&current, "resourceVersion").map(str::to_string) != read_rv {
                return Err(ApiError::new(409, "Conflict", "budget changed"));
            }
            let mut next = current;
            let status = object::field_object(&mut next, "status");
            let allowed = status
                .get("disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                - 1;
            status.insert("disruptionsAllowed".into(), json!(allowed));
            let now = jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string();
            let disrupted = status.entry("disruptedPods").or_insert_with(|| json!({}));
            if let Some(map) = disrupted.as_object_mut() {
                map.insert(pod_name.to_string(), json!(now));
            }
            if allowed == 0 {
                set_disruption_allowed_false(status, &now);
            }
            Ok(Action::Replace(next))
        })
        .await;
    match result {
        Ok(_) => Ok(Spent::Yes),
        Err(e) if e.code == 409 => Ok(Spent::Raced),
        Err(e) => Err(e),
    }
}

/// Upstream's `UpdateDisruptionAllowedCondition` once the last disruption is spent.
fn set_disruption_allowed_false(status: &mut serde_json::Map<String, Value>, now: &str) {
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    let condition = json!({
        "type": "DisruptionAllowed",
        "status": "False",
        "reason": "InsufficientPods",
        "message": "",
        "lastTransitionTime": now,
    });
    match list.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
        Some(existing) if existing["status"] == "False" => {}
        Some(existing) => *existing = condition,
        None => list.push(condition),
    }
}

fn too_many_requests(cause: String, retry_after: Option<u64>) -> ApiError {
    let mut error = ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    let mut details = json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]});
    if let Some(seconds) = retry_after {
        details["retryAfterSeconds"] = json!(seconds);
        error.retry_after = Some(seconds);
    }
    error.details = Some(Box::new(details));
    error
}

/// Marks the pod a disruption target (so its owner can tell why it went), then deletes it
/// with the eviction's options.
async fn delete_pod(
    registry: &Registry,
    pods: &ResourceInfo,
    namespace: &str,
    pod: &Value,
    options: &DeleteOptions,
    dry_run: bool,
) -> ApiResult<()> {
    let name = object::name(pod).to_string();
    let terminal = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    let deleting = object::metadata(pod).is_some_and(|m| m.get("deletionTimestamp").is_some());
    if !terminal && !deleting && !dry_run {
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        registry
            .guaranteed_update(pods, Some(namespace), &name, false, |mut current| {
                let status = object::field_object(&mut current, "status");
                let conditions = status.entry("conditions").or_insert_with(|| json!([]));
                if let Some(list) = conditions.as_array_mut() {
                    list.retain(|c| c["type"] != "DisruptionTarget");
                    list.push(json!({
                        "type": "DisruptionTarget",
                        "status": "True",
                        "reason": "EvictionByEvictionAPI",
                        "message": "Eviction API: evicting",
                        "lastTransitionTime": now,
                    }));
                }
                Ok(Action::Replace(current))
            })
            .await?;
    }
    registry
        .delete(pods, Some(namespace), &name, options, dry_run)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_pods_skip_the_budget() {
        assert!(can_ignore_budget(&json!({"status": {"phase": "Pending"}})));
        assert!(can_ignore_budget(
            &json!({"status": {"phase": "Succeeded"}})
        ));
        assert!(can_ignore_budget(
            &json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}})
        ));
        assert!(!can_ignore_budget(&json!({"status": {"phase": "Running"}})));
    }

    #[test]
    fn unready_pods_go_while_the_budget_is_met() {
        let budget = |policy: Option<&str>, current: i64, desired: i64| {
            json!({"spec": {"unhealthyPodEvictionPolicy": policy},
                   "status": {"currentHealthy": current, "desiredHealthy": desired}})
        };
        assert!(unready_may_go(&budget(None, 3, 2)));
        assert!(!unready_may_go(&budget(None, 2, 3)));
        assert!(!unready_may_go(&budget(None, 0, 0)));
        assert!(unready_may_go(&budget(Some("AlwaysAllow"), 0, 3)));
    }

    #[test]
    fn the_last_disruption_turns_the_condition_false() {
        let mut status = serde_json::Map::new();
        status.insert(
            "conditions".into(),
            json!([{"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods"}]),
        );
        set_disruption_allowed_false(&mut status, "2026-01-01T00:00:00Z");
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(status["conditions"][0]["reason"], "InsufficientPods");
    }
}
