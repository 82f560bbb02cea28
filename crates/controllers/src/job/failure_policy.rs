//! `spec.podFailurePolicy`: what a failed pod means for its Job. The first rule that
//! matches the pod (a container's non-zero exit code, or a pod condition) decides: fail
//! the whole Job at once, ignore the failure (it does not count toward `backoffLimit`,
//! the pod is replaced), or count it as usual.

use k8s_openapi::api::batch::v1::{Job, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::Pod;

/// The reason of the `FailureTarget`/`Failed` conditions a FailJob rule sets.
pub const REASON: &str = "PodFailurePolicy";

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fail the Job, with this message.
    FailJob(String),
    /// Fail the pod's index at once (`backoffLimitPerIndex` Jobs).
    FailIndex,
    Ignore,
    Count,
}

pub fn has_policy(job: &Job) -> bool {
    job.spec
        .as_ref()
        .is_some_and(|s| s.pod_failure_policy.is_some())
}

/// The verdict on a failed pod of `job`.
pub fn judge(job: &Job, pod: &Pod) -> Verdict {
    let rules = job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
        .map(|p| p.rules.as_slice())
        .unwrap_or_default();
    for (index, rule) in rules.iter().enumerate() {
        let Some(matched) = matches(rule, pod) else {
            continue;
        };
        return match rule.action.as_str() {
            "FailJob" => {
                Verdict::FailJob(format!("{matched} matching FailJob rule at index {index}"))
            }
            "Ignore" => Verdict::Ignore,
            "FailIndex" => Verdict::FailIndex,
            _ => Verdict::Count,
        };
    }
    Verdict::Count
}

/// How the rule matched the pod, in the words of upstream's messages; `None` if it did not.
fn matches(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<String> {
    let pod_name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    if let Some(requirement) = &rule.on_exit_codes {
        let status = pod.status.as_ref()?;
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for container in containers {
            if requirement
                .container_name
                .as_ref()
                .is_some_and(|name| *name != container.name)
            {
                continue;
            }
            let Some(code) = container
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
            else {
                continue;
            };
            // A container that succeeded never matches.
            if code == 0 {
                continue;
            }
            let listed = requirement.values.contains(&code);
            let hit = match requirement.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            if hit {
                return Some(format!(
                    "Container {} for pod {pod_name} failed with exit code {code}",
                    container.name
                ));
            }
        }
        return None;
    }
    let patterns = rule.on_pod_conditions.as_deref().unwrap_or_default();
    let conditions = pod
        .status
        .as_ref()?
        .conditions
        .as_deref()
        .unwrap_or_default();
    patterns.iter().find_map(|pattern| {
        let wanted = pattern.status.as_deref().unwrap_or("True");
        conditions
            .iter()
            .any(|c| c.type_ == pattern.type_ && c.status == wanted)
            .then(|| format!("Pod {pod_name} has condition {}", pattern.type_))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(rules: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "spec": {"template": {}, "podFailurePolicy": {"rules": rules}}
        }))
        .unwrap()
    }

    fn failed_pod(exit_code: i32, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {
                "phase": "Failed",
                "conditions": conditions,
                "containerStatuses": [{
                    "name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": exit_code}}
                }]
            }
        }))
        .unwrap()
    }

    #[test]
    fn first_matching_rule_decides() {
        let job = job(serde_json::json!([
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}}
        ]));
        assert_eq!(
            judge(&job, &failed_pod(42, serde_json::json!([]))),
            Verdict::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
                    .into()
            )
        );
        let disrupted = serde_json::json!([{"type": "DisruptionTarget", "status": "True"}]);
        assert_eq!(judge(&job, &failed_pod(42, disrupted)), Verdict::Ignore);
        assert_eq!(
            judge(&job, &failed_pod(1, serde_json::json!([]))),
            Verdict::Count
        );
    }

    #[test]
    fn exit_code_zero_and_other_containers_never_match() {
        let job = job(serde_json::json!([
            {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [5]}},
        ]));
        assert_eq!(
            judge(&job, &failed_pod(0, serde_json::json!([]))),
            Verdict::Count
        );
        let named = self::job(serde_json::json!([
            {"action": "FailJob", "onExitCodes": {"containerName": "sidecar", "operator": "In", "values": [3]}},
        ]));
        assert_eq!(
            judge(&named, &failed_pod(3, serde_json::json!([]))),
            Verdict::Count
        );
    }

    #[test]
    fn condition_rules_name_the_condition() {
        let job = job(serde_json::json!([
            {"action": "FailJob", "onPodConditions": [{"type": "ConfigIssue"}]},
        ]));
        let pod = failed_pod(
            1,
            serde_json::json!([{"type": "ConfigIssue", "status": "True"}]),
        );
        assert_eq!(
            judge(&job, &pod),
            Verdict::FailJob(
                "Pod ns/p has condition ConfigIssue matching FailJob rule at index 0".into()
            )
        );
    }
}
