//! The arithmetic of rollouts (upstream's `pkg/controller/deployment/util`): surge and
//! unavailability budgets, the pod-template hash, revisions, proportional scaling and the
//! status and conditions a deployment reports. Pure functions, unit-tested without a server.

use std::cmp::Ordering;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";

// Condition reasons, as upstream spells them.
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// An int-or-percent of `total`, percentages rounded up or down (upstream's
/// `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let Some(percent) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return s.parse().unwrap_or(0);
            };
            let product = percent * i64::from(total);
            let value = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            i32::try_from(value).unwrap_or(i32::MAX)
        }
    }
}

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

pub fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// `(maxSurge, maxUnavailable)`: surge rounded up, unavailable down, and never both zero.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let desired = replicas(d);
    let rolling = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let default = IntOrString::String("25%".into());
    let surge_value = rolling
        .and_then(|r| r.max_surge.as_ref())
        .unwrap_or(&default);
    let unavailable_value = rolling
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&default);
    let surge = scaled_value(Some(surge_value), desired, true);
    let mut unavailable = scaled_value(Some(unavailable_value), desired, false);
    if surge == 0 && unavailable == 0 {
        // Otherwise the rollout could never make progress.
        unavailable = 1;
    }
    (surge, unavailable)
}

pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).0
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

pub fn available(rs: &ReplicaSet) -> i32 {
    rs_status(rs).2
}

/// The new RS's replica count for the next step of a rollout (`NewRSNewReplicas`).
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if !is_rolling(d) {
        return replicas(d);
    }
    let current: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let max_total = replicas(d) + max_surge(d);
    let new_replicas = rs_replicas(new_rs);
    if current >= max_total {
        return new_replicas;
    }
    let up = (max_total - current).min(replicas(d) - new_replicas);
    new_replicas + up.max(0)
}

/// How many old pods a rolling update may remove now (`reconcileOldReplicaSets`):
/// what is above the minimum available, minus the new RS's pods not yet available.
pub fn max_scaled_down(d: &Deployment, all: &[&ReplicaSet], new_rs: Option<&ReplicaSet>) -> i32 {
    let all_pods: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = new_rs.map_or(0, |rs| rs_replicas(rs) - available(rs));
    all_pods - min_available - new_unavailable
}

/// How many available old pods may go, keeping the minimum available.
pub fn available_scale_down(d: &Deployment, all: &[&ReplicaSet]) -> i32 {
    let min_available = replicas(d) - max_unavailable(d);
    let available_pods: i32 = all.iter().map(|rs| available(rs)).sum();
    (available_pods - min_available).max(0)
}

/// fnv-1a, 32 bits.
fn fnv32a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x01000193);
    }
    hash
}

/// The `pod-template-hash` of a template: fnv-1a of the template (with the collision
/// count appended) in upstream's safe alphabet (no vowels, so no words).
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(&count.to_le_bytes());
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    fnv32a(&bytes)
        .to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// A template without the `pod-template-hash` label, empty label maps as none.
fn without_hash(template: &PodTemplateSpec) -> serde_json::Value {
    let mut template = template.clone();
    if let Some(meta) = template.metadata.as_mut() {
        if let Some(labels) = meta.labels.as_mut() {
            labels.remove(POD_TEMPLATE_HASH);
            if labels.is_empty() {
                meta.labels = None;
            }
        }
    }
    serde_json::to_value(template).unwrap_or_default()
}

/// Templates equal but for the hash label (`EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

pub fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(rs, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(rs, key).and_then(|v| v.parse().ok())
}

/// Sets the desired/max replica annotations; whether they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.to_string(), value);
            changed = true;
        }
    }
    changed
}

pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    int_annotation(rs, DESIRED_REPLICAS) != Some(desired)
        || int_annotation(rs, MAX_REPLICAS) != Some(max)
}

pub fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    int_annotation(rs, DESIRED_REPLICAS)
}

/// Copies the deployment's annotations onto its new RS and raises the RS's revision to
/// `new_revision` (`SetNewReplicaSetAnnotations`); whether anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
    for (key, value) in d.metadata.annotations.iter().flatten() {
        if [
            LAST_APPLIED,
            REVISION,
            REVISION_HISTORY,
            DESIRED_REPLICAS,
            MAX_REPLICAS,
            ROLLBACK_TO,
        ]
        .contains(&key.as_str())
        {
            continue;
        }
        if annotations.get(key) != Some(value) {
            annotations.insert(key.clone(), value.clone());
            changed = true;
        }
    }
    let old: Option<String> = annotations.get(REVISION).cloned();
    let old_number: i64 = old.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
    if old_number < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        // A reused RS (a rollback) remembers the revisions it had before.
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = match annotations.get(REVISION_HISTORY) {
                Some(h) if !h.is_empty() => format!("{h},{old}"),
                _ => old,
            };
            annotations.insert(REVISION_HISTORY.into(), history);
        }
    }
    if !exists {
        let desired = replicas(d);
        changed |= set_replicas_annotations(rs, desired, desired + max_surge(d));
    }
    changed
}

/// Upstream's `ReplicaSetsByCreationTimestamp` (oldest first, then by name).
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    a.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The share of `to_add` for one RS, in proportion to its size at the last rollout
/// step (`GetProportion`).
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    let size = rs_replicas(rs);
    if size == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas(d) == 0 {
        -size
    } else {
        let deployment_replicas = replicas(d) + max_surge(d);
        let annotated = int_annotation(rs, MAX_REPLICAS)
            .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if annotated == 0 {
            0
        } else {
            let new_size = f64::from(size) * f64::from(deployment_replicas) / f64::from(annotated);
            new_size.round() as i32 - size
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some(type_))
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition; a condition of the same status and reason stays as it is, and one
/// of the same status keeps its transition time (`SetDeploymentCondition`).
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter().find(|c| c.type_ == condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_.as_deref() != Some(type_));
    }
}

/// The status of a deployment from its replica sets (`calculateStatus`).
pub fn calculate_status(
    all: &[&ReplicaSet],
    new_rs: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let available_replicas: i32 = all.iter().map(|rs| available(rs)).sum();
    let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let previous = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|rs| rs_status(rs).0).sum()),
        updated_replicas: Some(new_rs.map_or(0, |rs| rs_status(rs).0)),
        ready_replicas: Some(all.iter().map(|rs| rs_status(rs).1).sum()),
        available_replicas: Some(available_replicas),
        unavailable_replicas: Some((total - available_replicas).max(0)),
        collision_count: previous.collision_count,
        conditions: previous.conditions.clone(),
        terminating_replicas: previous.terminating_replicas,
    };
    let condition = if available_replicas >= replicas(d) - max_unavailable(d) {
        new_condition(
            "Available",
            "True",
            MIN_AVAILABLE,
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        new_condition(
            "Available",
            "False",
            MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    set_condition(&mut status, condition);
    status
}

/// The rollout is done: every replica updated and available (`DeploymentComplete`).
pub fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let want = replicas(d);
    status.updated_replicas == Some(want)
        && status.replicas == Some(want)
        && status.available_replicas == Some(want)
        && status.observed_generation >= d.metadata.generation
}

/// Something moved since the last status (`DeploymentProgressing`).
pub fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let get = |v: Option<i32>| v.unwrap_or(0);
    let old_old = get(old.replicas) - get(old.updated_replicas);
    let new_old = get(new.replicas) - get(new.updated_replicas);
    get(new.updated_replicas) > get(old.updated_replicas)
        || new_old < old_old
        || get(new.ready_replicas) > get(old.ready_replicas)
        || get(new.available_replicas) > get(old.available_replicas)
}

pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec.progress_deadline_seconds.filter(|s| *s != i32::MAX)
}

/// No progress for `progressDeadlineSeconds` since the last Progressing update.
pub fn timed_out(d: &Deployment, new: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(condition) = condition(new, "Progressing") else {
        return false;
    };
    match condition.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => condition
            .last_update_time
            .as_ref()
            .is_some_and(|from| from.0.as_second() + i64::from(deadline) < now.as_second()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus,
        RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(replicas: i32, surge: &str, unavailable: &str) -> Deployment {
        let value = |s: &str| {
            Some(match s.parse::<i32>() {
                Ok(i) => IntOrString::Int(i),
                Err(_) => IntOrString::String(s.into()),
            })
        };
        Deployment {
            spec: DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: value(surge),
                        max_unavailable: value(unavailable),
                    }),
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn rs(replicas: i32, available: i32, max_annotation: Option<i32>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                annotations: max_annotation
                    .map(|m| [(MAX_REPLICAS.to_string(), m.to_string())].into()),
                ..Default::default()
            },
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            },
            status: Some(ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn percentages_round_surge_up_unavailable_down() {
        assert_eq!(fenceposts(&deployment(10, "25%", "25%")), (3, 2));
        assert_eq!(fenceposts(&deployment(3, "25%", "25%")), (1, 0));
        assert_eq!(fenceposts(&deployment(1, "0", "0")), (0, 1));
        assert_eq!(fenceposts(&deployment(4, "1", "50%")), (1, 2));
        assert_eq!(max_unavailable(&deployment(2, "0", "5")), 2);
        assert_eq!(
            scaled_value(Some(&IntOrString::String("33%".into())), 10, true),
            4
        );
        assert_eq!(
            scaled_value(Some(&IntOrString::String("33%".into())), 10, false),
            3
        );
    }

    #[test]
    fn rolling_steps() {
        let d = deployment(10, "25%", "25%");
        let old = rs(10, 10, None);
        let new = rs(0, 0, None);
        // Surge: up to 13 pods in all.
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 3);
        let new = rs(3, 0, None);
        // 13 pods, 8 must stay available, 3 new unavailable: 2 old may go.
        assert_eq!(max_scaled_down(&d, &[&old, &new], Some(&new)), 2);
        assert_eq!(available_scale_down(&d, &[&old, &new]), 2);
        // Never beyond the desired count for the new RS.
        let new = rs(9, 9, None);
        let old = rs(1, 1, None);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 10);
    }

    #[test]
    fn proportional_scaling() {
        // Scaled from 10 (max 13) to 20 (max 25) mid-rollout: shares follow sizes.
        let d = deployment(20, "25%", "25%");
        let old = rs(8, 8, Some(13));
        let new = rs(5, 0, Some(13));
        let to_add = 25 - 13;
        let a = proportion(&old, &d, to_add, 0);
        let b = proportion(&new, &d, to_add, a);
        assert_eq!((a, b), (7, 5));
    }

    #[test]
    fn hash_is_stable_and_safe() {
        let t = PodTemplateSpec::default();
        let h = compute_hash(&t, None);
        assert_eq!(h, compute_hash(&t, None));
        assert_ne!(h, compute_hash(&t, Some(1)));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn revisions_and_history() {
        let d = Deployment {
            metadata: ObjectMeta {
                annotations: Some(
                    [
                        ("team".to_string(), "x".to_string()),
                        (REVISION.to_string(), "9".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..deployment(3, "1", "0")
        };
        let mut new = rs(0, 0, None);
        assert!(set_new_rs_annotations(&d, &mut new, 1, false));
        assert_eq!(annotation(&new, REVISION), Some("1"));
        assert_eq!(annotation(&new, "team"), Some("x"));
        assert_eq!(annotation(&new, DESIRED_REPLICAS), Some("3"));
        assert_eq!(annotation(&new, MAX_REPLICAS), Some("4"));
        // A rollback to this RS later: it takes revision 3, remembering 1.
        assert!(set_new_rs_annotations(&d, &mut new, 3, true));
        assert_eq!(annotation(&new, REVISION), Some("3"));
        assert_eq!(annotation(&new, REVISION_HISTORY), Some("1"));
        assert!(!set_new_rs_annotations(&d, &mut new, 3, true));
    }

    #[test]
    fn conditions_keep_transition_times() {
        let t0 = Timestamp::from_second(100).unwrap();
        let t1 = Timestamp::from_second(200).unwrap();
        let mut status = DeploymentStatus::default();
        set_condition(
            &mut status,
            new_condition("Progressing", "True", NEW_RS_CREATED, "a".into(), t0),
        );
        set_condition(
            &mut status,
            new_condition("Progressing", "True", RS_UPDATED, "b".into(), t1),
        );
        let c = condition(&status, "Progressing").unwrap();
        assert_eq!(c.reason.as_deref(), Some(RS_UPDATED));
        assert_eq!(c.last_transition_time.as_ref().map(|t| t.0), Some(t0));
        assert_eq!(c.last_update_time.as_ref().map(|t| t.0), Some(t1));
    }

    #[test]
    fn status_and_completion() {
        let mut d = deployment(3, "1", "0");
        d.metadata.generation = Some(2);
        let new = rs(3, 3, None);
        let old = rs(0, 0, None);
        let now = Timestamp::from_second(100).unwrap();
        let status = calculate_status(&[&old, &new], Some(&new), &d, now);
        assert_eq!(status.updated_replicas, Some(3));
        assert_eq!(status.unavailable_replicas, Some(0));
        assert_eq!(
            condition(&status, "Available").unwrap().reason.as_deref(),
            Some(MIN_AVAILABLE)
        );
        assert!(complete(&d, &status));
        let new = rs(3, 1, None);
        let status = calculate_status(&[&new], Some(&new), &d, now);
        assert_eq!(
            condition(&status, "Available").unwrap().status.as_deref(),
            Some("False")
        );
        assert!(!complete(&d, &status));
        assert!(progressing(&d, &status));
    }
}
