//! The Job controller's pure rules: completion indexes, how many pods to run, back-off
//! after failures, and the conditions it writes.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The annotation (and label) that gives an Indexed Job's pod its index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// How many times a pod's index failed before it (`backoffLimitPerIndex` Jobs).
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";

/// The Job limits failures per index (`backoffLimitPerIndex`), not in total.
pub fn per_index_limit(job: &Job) -> Option<i32> {
    job.spec.as_ref()?.backoff_limit_per_index
}

/// The failures of a pod's index before this pod, from its annotation.
pub fn index_failures_before(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_FAILURE_COUNT))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Per index, the failures so far: the most of any of its pods (a failed pod adds its own).
pub fn index_failures(pods: &[std::sync::Arc<Pod>]) -> std::collections::BTreeMap<i32, i32> {
    let mut failures = std::collections::BTreeMap::new();
    for pod in pods {
        let Some(index) = pod_index(pod) else {
            continue;
        };
        let own = i32::from(crate::pods::phase(pod) == "Failed");
        let count = index_failures_before(pod) + own;
        let slot = failures.entry(index).or_insert(0);
        *slot = (*slot).max(count);
    }
    failures
}

/// Upstream's pod failure back-off: 10 s, doubled per failure, at most 6 minutes.
pub fn backoff_delay(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let exponent = (failures - 1).min(16) as u32;
    Duration::from_secs(10u64.saturating_mul(1 << exponent).min(360))
}

/// Parses `status.completedIndexes` (`"1,3-5"`).
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut indexes = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                if let (Ok(first), Ok(last)) = (first.parse::<i32>(), last.parse::<i32>()) {
                    indexes.extend(first..=last);
                }
            }
            None => {
                if let Ok(index) = part.parse() {
                    indexes.insert(index);
                }
            }
        }
    }
    indexes
}

/// Formats indexes as upstream does: ascending, with each run of consecutive indexes
/// as `first-last`.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    parts.join(",")
}

/// The completion index of an Indexed Job's pod.
pub fn pod_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
}

pub fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

/// A pod that will not run again: it finished, or is being deleted without having
/// succeeded (upstream counts that as a failure).
pub fn finished(pod: &Pod, job: &Job) -> Option<bool> {
    match crate::pods::phase(pod) {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        // A pod failure policy judges how the pod ended, so it waits for the end.
        _ if pod.metadata.deletion_timestamp.is_some()
            && !super::failure_policy::has_policy(job) =>
        {
            Some(false)
        }
        _ => None,
    }
}

/// How many pods the Job should have active, and (Indexed Jobs) the indexes of the
/// pods to start.
#[derive(Debug, PartialEq, Eq)]
pub struct Want {
    pub count: usize,
    pub indexes: Vec<i32>,
}

/// How many pods should be active: upstream's rules for NonIndexed (with or without
/// `completions`) and Indexed Jobs.
pub fn wanted_active(
    job: &Job,
    succeeded: i32,
    completed: &BTreeSet<i32>,
    active_indexes: &BTreeSet<i32>,
    active: usize,
) -> Want {
    let spec = job.spec.as_ref();
    let parallelism = spec.and_then(|s| s.parallelism).unwrap_or(1).max(0) as usize;
    let completions = spec.and_then(|s| s.completions);
    if is_indexed(job) {
        let total = completions.unwrap_or(0).max(0);
        let pending: Vec<i32> = (0..total)
            .filter(|i| !completed.contains(i) && !active_indexes.contains(i))
            .collect();
        let room = parallelism.saturating_sub(active);
        let indexes: Vec<i32> = pending.into_iter().take(room).collect();
        return Want {
            count: active + indexes.len(),
            indexes,
        };
    }
    let count = match completions {
        Some(completions) => parallelism.min((completions - succeeded).max(0) as usize),
        // A work queue: once one pod succeeded, no new pods; the others finish.
        None if succeeded > 0 => active.min(parallelism),
        None => parallelism,
    };
    Want {
        count,
        indexes: Vec::new(),
    }
}

/// Whether the Job met its success criteria.
pub fn succeeded(job: &Job, succeeded: i32, completed: &BTreeSet<i32>, active: usize) -> bool {
    let completions = job.spec.as_ref().and_then(|s| s.completions);
    if is_indexed(job) {
        return completed.len() as i32 >= completions.unwrap_or(0);
    }
    match completions {
        Some(completions) => succeeded >= completions,
        None => succeeded > 0 && active == 0,
    }
}

/// The first `successPolicy` rule the completed indexes meet (Indexed Jobs): enough of
/// the rule's `succeededIndexes` (all of them without a `succeededCount`), or at least
/// `succeededCount` indexes of any.
pub fn success_policy_rule(job: &Job, completed: &BTreeSet<i32>) -> Option<usize> {
    if !is_indexed(job) {
        return None;
    }
    let rules = &job.spec.as_ref()?.success_policy.as_ref()?.rules;
    rules.iter().position(
        |rule| match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(indexes), count) => {
                let wanted = parse_indexes(indexes);
                let done = wanted.intersection(completed).count() as i32;
                done >= count.unwrap_or(wanted.len() as i32)
            }
            (None, Some(count)) => completed.len() as i32 >= count,
            (None, None) => false,
        },
    )
}

/// Why the Job succeeded, as the reason and message of `SuccessCriteriaMet` and
/// `Complete`; `None` while it has not.
pub fn success(
    job: &Job,
    count: i32,
    completed: &BTreeSet<i32>,
    active: usize,
) -> Option<(String, String)> {
    if let Some(rule) = success_policy_rule(job, completed) {
        return Some((
            "SuccessPolicy".into(),
            format!("Matched rules at index {rule}"),
        ));
    }
    succeeded(job, count, completed, active).then(|| {
        (
            "CompletionsReached".into(),
            "Reached expected number of succeeded pods".into(),
        )
    })
}

pub fn condition(job: &Job, type_: &str) -> Option<JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

pub fn has_true_condition(job: &Job, type_: &str) -> bool {
    condition(job, type_).is_some_and(|c| c.status == "True")
}

/// Finished: `Complete` or `Failed`.
pub fn is_finished(job: &Job) -> bool {
    has_true_condition(job, "Complete") || has_true_condition(job, "Failed")
}

/// Sets a condition, keeping the transition time when the status does not change.
pub fn set_condition(
    conditions: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let time = Some(Time(now));
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = time.clone();
            }
            existing.status = status.into();
            existing.reason = Some(reason.into());
            existing.message = Some(message.into());
            existing.last_probe_time = time;
        }
        None => conditions.push(JobCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_probe_time: time.clone(),
            last_transition_time: time,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;

    fn job(parallelism: i32, completions: Option<i32>, indexed: bool) -> Job {
        Job {
            spec: Some(JobSpec {
                parallelism: Some(parallelism),
                completions,
                completion_mode: Some(if indexed { "Indexed" } else { "NonIndexed" }.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn index_sets_round_trip_in_upstream_form() {
        let indexes = parse_indexes("0,2-4,7");
        assert_eq!(indexes, BTreeSet::from([0, 2, 3, 4, 7]));
        assert_eq!(format_indexes(&indexes), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::from([1, 2])), "1-2");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn backoff_doubles_to_six_minutes() {
        assert_eq!(backoff_delay(0), Duration::ZERO);
        assert_eq!(backoff_delay(1), Duration::from_secs(10));
        assert_eq!(backoff_delay(3), Duration::from_secs(40));
        assert_eq!(backoff_delay(10), Duration::from_secs(360));
        assert_eq!(backoff_delay(100), Duration::from_secs(360));
    }

    #[test]
    fn how_many_pods_run() {
        let none = BTreeSet::new();
        // Fixed completions: parallelism, but never more than completions left.
        let fixed = job(3, Some(5), false);
        assert_eq!(
            wanted_active(&fixed, 0, &none, &none, 0),
            Want {
                count: 3,
                indexes: vec![]
            }
        );
        assert_eq!(
            wanted_active(&fixed, 4, &none, &none, 1),
            Want {
                count: 1,
                indexes: vec![]
            }
        );
        // Work queue: once one succeeded, no new pods.
        let queue = job(3, None, false);
        assert_eq!(
            wanted_active(&queue, 0, &none, &none, 0),
            Want {
                count: 3,
                indexes: vec![]
            }
        );
        assert_eq!(
            wanted_active(&queue, 1, &none, &none, 2),
            Want {
                count: 2,
                indexes: vec![]
            }
        );
        // Indexed: the lowest indexes neither completed nor running.
        let indexed = job(2, Some(4), true);
        assert_eq!(
            wanted_active(&indexed, 1, &BTreeSet::from([0]), &BTreeSet::from([1]), 1),
            Want {
                count: 2,
                indexes: vec![2]
            }
        );
    }

    #[test]
    fn success_criteria() {
        let none = BTreeSet::new();
        assert!(succeeded(&job(1, Some(2), false), 2, &none, 0));
        assert!(!succeeded(&job(1, Some(2), false), 1, &none, 0));
        assert!(!succeeded(&job(2, None, false), 1, &none, 1));
        assert!(succeeded(&job(2, None, false), 1, &none, 0));
        assert!(succeeded(
            &job(2, Some(2), true),
            0,
            &BTreeSet::from([0, 1]),
            0
        ));
    }

    #[test]
    fn success_policy_rules() {
        let mut indexed = job(3, Some(5), true);
        indexed.spec.as_mut().unwrap().success_policy = Some(
            serde_json::from_value(serde_json::json!({
                "rules": [{"succeededIndexes": "0,2-3"}, {"succeededCount": 4}]
            }))
            .unwrap(),
        );
        assert_eq!(success_policy_rule(&indexed, &BTreeSet::from([0, 2])), None);
        assert_eq!(
            success_policy_rule(&indexed, &BTreeSet::from([0, 2, 3])),
            Some(0)
        );
        assert_eq!(
            success_policy_rule(&indexed, &BTreeSet::from([0, 1, 3, 4])),
            Some(1)
        );
        let counted = serde_json::from_value(serde_json::json!({
            "rules": [{"succeededIndexes": "1-4", "succeededCount": 2}]
        }))
        .unwrap();
        indexed.spec.as_mut().unwrap().success_policy = Some(counted);
        assert_eq!(success_policy_rule(&indexed, &BTreeSet::from([0, 4])), None);
        assert_eq!(
            success_policy_rule(&indexed, &BTreeSet::from([0, 3, 4])),
            Some(0)
        );
        assert_eq!(
            success(&indexed, 3, &BTreeSet::from([0, 3, 4]), 2),
            Some(("SuccessPolicy".into(), "Matched rules at index 0".into()))
        );
    }

    #[test]
    fn conditions_keep_transition_times() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            t0,
        );
        set_condition(
            &mut conditions,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            t1,
        );
        assert_eq!(conditions[0].last_transition_time, Some(Time(t0)));
        set_condition(
            &mut conditions,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            t1,
        );
        assert_eq!(conditions[0].last_transition_time, Some(Time(t1)));
        assert_eq!(conditions.len(), 1);
    }
}
