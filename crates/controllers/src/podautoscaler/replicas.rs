//! The replica count one resource metric asks for, as upstream's replica calculator
//! computes it: pods grouped into ready, unready, missing (no metrics) and ignored
//! (deleting or failed); the ratio of the ready pods' usage to the target; and, when pods
//! are unready or missing, a second ratio that assumes the least helpful usage for them
//! (nothing on a scale-up, the target on a scale-down), so that pods without a reading
//! never push the autoscaler further than the measured ones justify.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

/// Upstream's `--horizontal-pod-autoscaler-cpu-initialization-period`: a pod started
/// this recently has its CPU samples ignored until it is ready and has a full window.
const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// Upstream's `--horizontal-pod-autoscaler-initial-readiness-delay`.
const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);
/// Upstream's `--horizontal-pod-autoscaler-tolerance`.
pub const DEFAULT_TOLERANCE: f64 = 0.1;

/// One pod's usage as `metrics.k8s.io` reported it, in milli-units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub milli: i64,
    pub timestamp: Timestamp,
    pub window: Duration,
}

/// What the metric aims at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// A percentage of the pods' requests.
    Utilization(i32),
    /// An average per pod, in milli-units.
    AverageValue(i64),
}

/// How far the ratio may stray from 1 before the autoscaler acts, per direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    pub down: f64,
    pub up: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            down: DEFAULT_TOLERANCE,
            up: DEFAULT_TOLERANCE,
        }
    }
}

impl Tolerances {
    fn within(&self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

/// What the metric asks for and the reading the status reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub replicas: i32,
    /// The ready pods' usage as a percentage of their requests (utilization targets).
    pub utilization: Option<i32>,
    /// The ready pods' average usage, in milli-units.
    pub average_milli: i64,
}

#[derive(Debug, Default)]
struct Groups {
    ready: usize,
    unready: Vec<String>,
    missing: Vec<String>,
}

fn condition_ready(pod: &Pod) -> Option<(bool, Timestamp)> {
    let condition = crate::pods::ready_condition(pod)?;
    let since = condition.last_transition_time.as_ref()?.0;
    Some((condition.status == "True", since))
}

/// Upstream's grouping; `samples` loses the pods that do not count.
fn group(
    pods: &[Pod],
    samples: &mut BTreeMap<String, Sample>,
    cpu: bool,
    now: Timestamp,
) -> Groups {
    let mut groups = Groups::default();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = crate::pods::phase(pod);
        if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" {
            samples.remove(&name);
            continue;
        }
        if phase == "Pending" {
            samples.remove(&name);
            groups.unready.push(name);
            continue;
        }
        let Some(sample) = samples.get(&name) else {
            groups.missing.push(name);
            continue;
        };
        if cpu && cpu_unready(pod, sample, now) {
            samples.remove(&name);
            groups.unready.push(name);
            continue;
        }
        groups.ready += 1;
    }
    groups
}

/// Whether a pod's CPU sample is not to be trusted: no readiness yet; within the
/// initialization period, unready or sampled before a full window since it turned ready;
/// after it, unready and never ready since it started.
fn cpu_unready(pod: &Pod, sample: &Sample, now: Timestamp) -> bool {
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0);
    let (Some((ready, since)), Some(started)) = (condition_ready(pod), started) else {
        return true;
    };
    let after = |at: Timestamp, by: Duration| {
        jiff::SignedDuration::try_from(by)
            .ok()
            .and_then(|by| at.checked_add(by).ok())
            .unwrap_or(at)
    };
    if after(started, CPU_INITIALIZATION_PERIOD) > now {
        !ready || sample.timestamp < after(since, sample.window)
    } else {
        !ready && after(started, INITIAL_READINESS_DELAY) > since
    }
}

/// The ratio of usage to target over `samples`, and the current utilization (for a
/// utilization target) or average value; `None` when no sample has a request.
fn ratio(
    samples: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
    target: Target,
) -> Option<(f64, Option<i32>, i64)> {
    match target {
        Target::Utilization(goal) => {
            let (mut usage, mut requested, mut counted) = (0i64, 0i64, 0i64);
            for (name, milli) in samples {
                // A sample of a pod not in the list is extraneous.
                let Some(request) = requests.get(name) else {
                    continue;
                };
                usage += milli;
                requested += request;
                counted += 1;
            }
            if requested == 0 {
                return None;
            }
            let utilization = (usage * 100 / requested) as i32;
            Some((
                f64::from(utilization) / f64::from(goal.max(1)),
                Some(utilization),
                usage / counted,
            ))
        }
        Target::AverageValue(goal) => {
            if samples.is_empty() {
                return None;
            }
            let average = samples.values().sum::<i64>() / samples.len() as i64;
            Some((average as f64 / goal.max(1) as f64, None, average))
        }
    }
}

/// Each pod's total request of `resource` over its containers, in milli-units.
pub fn requests(pods: &[Pod], resource: &str) -> Result<BTreeMap<String, i64>, String> {
    let mut requests = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut total = 0;
        for container in pod.spec.iter().flat_map(|s| &s.containers) {
            let request = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .ok_or_else(|| {
                    format!(
                        "missing request for {resource} in container {} of Pod {name}",
                        container.name
                    )
                })?;
            total += skiff_quantity::parse_milli(&request.0).map_err(|e| e.to_string())?;
        }
        requests.insert(name, total);
    }
    Ok(requests)
}

/// What one resource metric asks for: `pods` are every pod the target's selector
/// matches, `samples` their usage, `current` the target's replicas.
pub fn resource_replicas(
    pods: &[Pod],
    mut samples: BTreeMap<String, Sample>,
    resource: &str,
    target: Target,
    current: i32,
    tolerances: Tolerances,
    now: Timestamp,
) -> Result<Reading, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups = group(pods, &mut samples, resource == "cpu", now);
    if samples.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let requests = match target {
        Target::Utilization(_) => requests(pods, resource)?,
        Target::AverageValue(_) => BTreeMap::new(),
    };
    let mut usage: BTreeMap<String, i64> =
        samples.iter().map(|(n, s)| (n.clone(), s.milli)).collect();
    let (first, utilization, average_milli) =
        ratio(&usage, &requests, target).ok_or("no metrics returned matched known pods")?;
    let reading = |replicas| Reading {
        replicas,
        utilization,
        average_milli,
    };
    let scale_up_with_unready = !groups.unready.is_empty() && first > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if tolerances.within(first) {
            return Ok(reading(current));
        }
        return Ok(reading((first * groups.ready as f64).ceil() as i32));
    }
    // Assume the least helpful usage for pods without a trusted sample.
    for name in &groups.missing {
        let assumed = if first < 1.0 {
            match target {
                // At least the whole request (or the target, if it is above 100 %).
                Target::Utilization(goal) => {
                    requests.get(name).copied().unwrap_or(0) * i64::from(goal.max(100)) / 100
                }
                Target::AverageValue(goal) => goal,
            }
        } else {
            0
        };
        usage.insert(name.clone(), assumed);
    }
    if scale_up_with_unready {
        for name in &groups.unready {
            usage.insert(name.clone(), 0);
        }
    }
    let Some((second, _, _)) = ratio(&usage, &requests, target) else {
        return Ok(reading(current));
    };
    let direction_flips = (first < 1.0 && second > 1.0) || (first > 1.0 && second < 1.0);
    if tolerances.within(second) || direction_flips {
        return Ok(reading(current));
    }
    let replicas = (second * usage.len() as f64).ceil() as i32;
    if (second < 1.0 && replicas > current) || (second > 1.0 && replicas < current) {
        return Ok(reading(current));
    }
    Ok(reading(replicas))
}

/// What a metric with one value for the whole target asks for (an Object or External
/// metric with a `Value` target): the ratio of `usage` to `target` applied to the ready
/// pods, unless within the tolerance; a target at 0 replicas gets the ratio itself.
pub fn value_replicas(
    usage: i64,
    target: i64,
    pods: &[Pod],
    current: i32,
    tolerances: Tolerances,
) -> Result<i32, String> {
    let ratio = usage as f64 / target.max(1) as f64;
    if current == 0 {
        return Ok(ratio.ceil() as i32);
    }
    if tolerances.within(ratio) {
        return Ok(current);
    }
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let ready = pods
        .iter()
        .filter(|p| crate::pods::phase(p) == "Running" && crate::pods::is_ready(p))
        .count();
    Ok((ratio * ready as f64).ceil() as i32)
}

/// What a metric with one value for the whole target asks for against an average per
/// pod (an Object or External metric with an `AverageValue` target): the replicas that
/// bring `usage` per pod to `target`, unless the current `status_replicas` are within
/// the tolerance. Also returns the usage per pod, for the status.
pub fn average_value_replicas(
    usage: i64,
    target: i64,
    status_replicas: i32,
    tolerances: Tolerances,
) -> (i32, i64) {
    let target = target.max(1);
    let replicas = status_replicas.max(1);
    let ratio = usage as f64 / (target as f64 * f64::from(replicas));
    let wanted = if tolerances.within(ratio) {
        status_replicas
    } else {
        (usage as f64 / target as f64).ceil() as i32
    };
    let per_pod = (usage as f64 / f64::from(replicas)).ceil() as i64;
    (wanted, per_pod)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const NOW: &str = "2026-12-05T10:00:00Z";

    /// A pod requesting 1 CPU, started `age` seconds ago, Ready since then (or not).
    fn pod(name: &str, phase: &str, ready: bool, age: i64) -> Pod {
        let now: Timestamp = NOW.parse().unwrap();
        let started = now - jiff::SignedDuration::from_secs(age);
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]},
            "status": {"phase": phase, "startTime": started.to_string(),
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                    "lastTransitionTime": started.to_string()}]}
        }))
        .unwrap()
    }

    fn samples(usage: &[(&str, i64)]) -> BTreeMap<String, Sample> {
        let now: Timestamp = NOW.parse().unwrap();
        usage
            .iter()
            .map(|(name, milli)| {
                let sample = Sample {
                    milli: *milli,
                    timestamp: now,
                    window: Duration::from_secs(5),
                };
                (name.to_string(), sample)
            })
            .collect()
    }

    fn try_replicas(
        pods: &[Pod],
        usage: &[(&str, i64)],
        target: Target,
        current: i32,
    ) -> Result<Reading, String> {
        resource_replicas(
            pods,
            samples(usage),
            "cpu",
            target,
            current,
            Tolerances::default(),
            NOW.parse().unwrap(),
        )
    }

    fn replicas(pods: &[Pod], usage: &[(&str, i64)], target: Target, current: i32) -> Reading {
        try_replicas(pods, usage, target, current).unwrap()
    }

    #[test]
    fn one_value_for_the_target_scales_the_ready_pods() {
        let pods = [
            pod("a", "Running", true, 600),
            pod("b", "Running", false, 600),
            pod("c", "Pending", false, 10),
        ];
        // 300 against 100: three times the one ready pod.
        assert_eq!(
            value_replicas(300, 100, &pods, 3, Tolerances::default()),
            Ok(3)
        );
        // Within the tolerance: unchanged.
        assert_eq!(
            value_replicas(105, 100, &pods, 3, Tolerances::default()),
            Ok(3)
        );
        // At zero replicas, the ratio itself.
        assert_eq!(
            value_replicas(250, 100, &pods, 0, Tolerances::default()),
            Ok(3)
        );
        // An average per pod: 900 over 3 pods against 100 each wants 9.
        assert_eq!(
            average_value_replicas(900, 100, 3, Tolerances::default()),
            (9, 300)
        );
        assert_eq!(
            average_value_replicas(310, 100, 3, Tolerances::default()),
            (3, 104)
        );
    }

    #[test]
    fn ready_pods_alone_scale_by_their_ratio() {
        let pods = [
            pod("a", "Running", true, 600),
            pod("b", "Running", true, 600),
        ];
        // Twice a 50 % goal on 2 pods: 4.
        let up = replicas(
            &pods,
            &[("a", 1000), ("b", 1000)],
            Target::Utilization(50),
            2,
        );
        assert_eq!(
            (up.replicas, up.utilization, up.average_milli),
            (4, Some(100), 1000)
        );
        // Within the tolerance: unchanged.
        let steady = replicas(&pods, &[("a", 520), ("b", 520)], Target::Utilization(50), 2);
        assert_eq!(steady.replicas, 2);
        // An average value target: 300m each against 100m.
        let value = replicas(
            &pods,
            &[("a", 300), ("b", 300)],
            Target::AverageValue(100),
            2,
        );
        assert_eq!((value.replicas, value.utilization), (6, None));
    }

    #[test]
    fn missing_pods_count_as_full_on_scale_down_and_empty_on_scale_up() {
        let pods = [
            pod("a", "Running", true, 600),
            pod("b", "Running", true, 600),
            pod("c", "Running", true, 600),
        ];
        // a and b at 10 % of a 50 % goal; c has no sample and counts as 100 %: the ratio
        // is (10+10+100)/3 = 40 % of 50 %, and ceil(0.8 * 3) = 3 pods stay.
        let down = replicas(&pods, &[("a", 100), ("b", 100)], Target::Utilization(50), 3);
        assert_eq!(down.replicas, 3);
        // a and b at 100 % of 50 %: c counts as 0 % → (100+100+0)/3 = 66 % → 1.33 → 4.
        let up = replicas(
            &pods,
            &[("a", 1000), ("b", 1000)],
            Target::Utilization(50),
            3,
        );
        assert_eq!(up.replicas, 4);
    }

    #[test]
    fn unready_pods_count_as_idle_on_a_scale_up_only() {
        // b is Pending: on a scale-up it counts as 0.
        let pods = [
            pod("a", "Running", true, 600),
            pod("b", "Pending", false, 10),
        ];
        let up = replicas(&pods, &[("a", 1000)], Target::Utilization(50), 2);
        // (100 + 0) / 2 = 50 % of 50 % → 1.0: within tolerance, unchanged.
        assert_eq!(up.replicas, 2);
        // On a scale-down unready pods are left out: a at 10 % of 50 % → ceil(0.2 * 1) = 1.
        let down = replicas(&pods, &[("a", 100)], Target::Utilization(50), 2);
        assert_eq!(down.replicas, 1);
    }

    #[test]
    fn cpu_of_a_starting_pod_counts_once_ready_for_a_window() {
        let now: Timestamp = NOW.parse().unwrap();
        // Started 60 s ago, not ready: its sample is ignored, it counts as unready.
        let starting = pod("b", "Running", false, 60);
        let sample = samples(&[("b", 1000)])["b"];
        assert!(cpu_unready(&starting, &sample, now));
        // Ready since 60 s, sampled now with a 5 s window: trusted.
        let ready = pod("b", "Running", true, 60);
        assert!(!cpu_unready(&ready, &sample, now));
        // Long started and unready, but it was ready once after the initial delay: its
        // sample counts.
        let mut flapped = pod("b", "Running", false, 3600);
        if let Some(c) = flapped
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|c| c.first_mut())
        {
            c.last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                now - jiff::SignedDuration::from_secs(60),
            ));
        }
        assert!(!cpu_unready(&flapped, &sample, now));
    }

    #[test]
    fn deleting_and_failed_pods_are_ignored_and_errors_say_why() {
        let mut gone = pod("b", "Running", true, 600);
        gone.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(NOW.parse().unwrap()),
        );
        let pods = [
            pod("a", "Running", true, 600),
            gone,
            pod("c", "Failed", false, 600),
        ];
        let reading = replicas(
            &pods,
            &[("a", 1000), ("b", 0), ("c", 0)],
            Target::Utilization(50),
            3,
        );
        // Only a counts: 200 % → ceil(2 * 1) = 2.
        assert_eq!(reading.replicas, 2);
        assert_eq!(
            try_replicas(&[], &[], Target::Utilization(50), 1).unwrap_err(),
            "no pods returned by selector while calculating replica count"
        );
        let unmeasured = try_replicas(
            &[pod("a", "Running", true, 600)],
            &[],
            Target::Utilization(50),
            1,
        );
        assert_eq!(
            unmeasured.unwrap_err(),
            "did not receive metrics for targeted pods (pods might be unready)"
        );
    }

    #[test]
    fn tolerances_apply_per_direction() {
        let pods = [pod("a", "Running", true, 600)];
        let tight_up = Tolerances {
            down: 0.1,
            up: 0.01,
        };
        // 105 % of the goal: beyond a 1 % scale-up tolerance.
        let reading = resource_replicas(
            &pods,
            samples(&[("a", 525)]),
            "cpu",
            Target::Utilization(50),
            1,
            tight_up,
            NOW.parse().unwrap(),
        )
        .unwrap();
        assert_eq!(reading.replicas, 2);
    }
}
