//! Node-pressure eviction, as upstream's kubelet does it. Every 10 s the eviction
//! signals are observed: `memory.available` (capacity less the node's working set),
//! `nodefs.available` and `nodefs.inodesFree` (the kubelet's root directory's
//! filesystem), `imagefs.available` and `imagefs.inodesFree` (the runtime's image
//! filesystem) and `pid.available` (the node's process ID limit less the processes
//! running).
//!
//! - A met threshold sets the node's `MemoryPressure`, `DiskPressure` or `PIDPressure`
//!   condition, held for `--eviction-pressure-transition-period` after it clears, and
//!   the kubelet refuses new pods (BestEffort ones under memory pressure alone, all
//!   under any other; critical pods never).
//! - A hard threshold acts at once; a soft one once it has been met for its grace
//!   period. Once acted on, a threshold with a minimum reclaim stays met until that
//!   much more is available.
//! - Before evicting for disk, unused images are removed and the signals read again.
//! - One pod is evicted at a time, ranked as [`rank`] says, given 1 s to stop for a
//!   hard threshold and the lesser of its own grace period and
//!   `--eviction-max-pod-grace-period` for a soft one. Static, mirror and
//!   system-critical pods are never evicted.
//! - Whatever the thresholds, pods beyond their local storage limits are evicted
//!   ([`local_storage`]).

mod local_storage;
mod rank;
mod thresholds;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use serde_json::Value;

pub use local_storage::disk_usage;
pub use rank::{rank, Candidate};
pub use thresholds::{Condition, Observation, Signal, Threshold, ThresholdFlags};

/// How often signals are observed (upstream's fixed 10 s).
pub const MONITORING_PERIOD: Duration = Duration::from_secs(10);
/// Upstream's default hard thresholds on Linux.
pub const DEFAULT_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%,imagefs.inodesFree<5%";
/// Pods at or above this priority (`system-cluster-critical`'s) are never evicted.
const CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// How long a pod evicted for a hard threshold or a storage limit has to stop
/// (upstream's `immediateEvictionGracePeriodSeconds`).
const IMMEDIATE_GRACE_SECONDS: i64 = 1;
/// A pod's grace period when its spec gives none (the API server's default).
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Parses the kubelet's eviction flags into thresholds.
pub fn parse_thresholds(flags: &ThresholdFlags) -> Result<Vec<Threshold>, String> {
    thresholds::parse(flags)
}

/// The node's pressure conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pressure {
    conditions: BTreeSet<Condition>,
}

impl Pressure {
    pub fn has(&self, condition: Condition) -> bool {
        self.conditions.contains(&condition)
    }

    /// Upstream's admission under pressure: the refusal of a new pod, if it is
    /// refused. Critical pods are always admitted; under memory pressure alone, pods
    /// that are not BestEffort or that tolerate the memory-pressure taint are too.
    pub fn refuses(&self, pod: &Pod) -> Option<String> {
        if self.conditions.is_empty() || is_critical(pod) {
            return None;
        }
        if self.conditions.len() == 1 && self.has(Condition::MemoryPressure) {
            let best_effort = crate::spec::qos_class(pod) == "BestEffort";
            if !best_effort || tolerates_memory_pressure(pod) {
                return None;
            }
        }
        // Go prints the list of conditions space-separated.
        let names: Vec<&str> = self.conditions.iter().map(|c| c.name()).collect();
        Some(format!("The node had condition: [{}]. ", names.join(" ")))
    }
}

/// Whether the pod tolerates `node.kubernetes.io/memory-pressure:NoSchedule`.
fn tolerates_memory_pressure(pod: &Pod) -> bool {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    tolerations.into_iter().flatten().any(|t| {
        let key = t.key.as_deref().unwrap_or("");
        let effect = t.effect.as_deref().unwrap_or("");
        let value_matches = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("").is_empty(),
        };
        (key.is_empty() || key == "node.kubernetes.io/memory-pressure")
            && (effect.is_empty() || effect == "NoSchedule")
            && value_matches
    })
}

/// Upstream's critical pods: static, mirror, or at system-critical priority. They are
/// admitted under pressure and never evicted.
fn is_critical(pod: &Pod) -> bool {
    let critical_priority = pod
        .spec
        .as_ref()
        .and_then(|s| s.priority)
        .is_some_and(|p| p >= CRITICAL_PRIORITY);
    critical_priority || crate::static_pods::is_mirror(pod) || crate::static_pods::is_static(pod)
}

/// An eviction decided for a pod, which its worker carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub message: String,
    /// The grace period its containers get.
    pub grace_seconds: i64,
    /// Whether the pod gets the `DisruptionTarget` condition (threshold evictions do;
    /// storage limit ones do not).
    pub disruption: bool,
}

/// What the manager remembers between passes.
#[derive(Default)]
struct State {
    /// Threshold index → when it was first seen met in the current run of passes.
    first_observed: HashMap<usize, Instant>,
    /// Condition → the last pass that saw a threshold setting it met.
    condition_seen: HashMap<Condition, Instant>,
    /// Thresholds acted on (their grace periods over) and not yet reclaimed.
    acting: BTreeSet<usize>,
    /// Pod UID → the eviction its worker carries out.
    decided: HashMap<String, Decision>,
}

/// The eviction manager's configuration.
pub struct EvictionConfig {
    pub thresholds: Vec<Threshold>,
    pub transition: Duration,
    /// `--eviction-max-pod-grace-period`: the longest a pod evicted for a soft
    /// threshold gets.
    pub max_pod_grace_seconds: i64,
    pub root_dir: PathBuf,
}

pub struct EvictionManager {
    config: EvictionConfig,
    state: Mutex<State>,
}

impl EvictionManager {
    pub fn new(config: EvictionConfig) -> Self {
        EvictionManager {
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node's pressure conditions now.
    pub fn pressure(&self) -> Pressure {
        let state = self.state();
        Pressure {
            conditions: state
                .condition_seen
                .iter()
                .filter(|(_, seen)| seen.elapsed() < self.config.transition)
                .map(|(condition, _)| *condition)
                .collect(),
        }
    }

    /// The eviction decided for a pod, if any (its worker fails the pod with it).
    pub fn decided_for(&self, uid: &str) -> Option<Decision> {
        self.state().decided.get(uid).cloned()
    }

    /// Takes a pass's readings at `now`: notes the conditions they set and returns the
    /// thresholds to act on (their grace periods over), memory first.
    fn evaluate(&self, observed: &HashMap<Signal, Observation>, now: Instant) -> Vec<usize> {
        let thresholds = &self.config.thresholds;
        let mut state = self.state();
        let met: BTreeSet<usize> = (0..thresholds.len())
            .filter(|&i| {
                thresholds[i].met(observed, false)
                    || (state.acting.contains(&i) && thresholds[i].met(observed, true))
            })
            .collect();
        state.first_observed.retain(|i, _| met.contains(i));
        for &i in &met {
            state.first_observed.entry(i).or_insert(now);
            state
                .condition_seen
                .insert(thresholds[i].signal.condition(), now);
        }
        let acting: BTreeSet<usize> = met
            .into_iter()
            .filter(|i| {
                let since = state.first_observed.get(i).copied().unwrap_or(now);
                let grace = thresholds[*i].grace_period.unwrap_or_default();
                now.saturating_duration_since(since) >= grace
            })
            .collect();
        state.acting = acting.clone();
        let mut acting: Vec<usize> = acting.into_iter().collect();
        // Upstream reclaims memory before anything else.
        acting.sort_by_key(|&i| thresholds[i].signal != Signal::MemoryAvailable);
        acting
    }

    /// Observes every [`MONITORING_PERIOD`]; evicts one pod per pass when it must.
    pub async fn run(
        &self,
        shared: &crate::worker::Shared,
        stats: &crate::stats::Stats,
        image_gc: &crate::imagegc::SharedImageGc,
    ) {
        loop {
            if let Err(error) = self.pass(shared, stats, image_gc).await {
                tracing::warn!(%error, "eviction manager pass failed");
            }
            tokio::time::sleep(MONITORING_PERIOD).await;
        }
    }

    async fn pass(
        &self,
        shared: &crate::worker::Shared,
        stats: &crate::stats::Stats,
        image_gc: &crate::imagegc::SharedImageGc,
    ) -> crate::error::Result<()> {
        let summary = stats.summary().await?;
        let observed = self.observe(shared, &summary).await;
        let acting = self.evaluate(&observed, Instant::now());
        // One eviction at a time: the last must be carried out first.
        if !self.state().decided.is_empty() {
            self.forget_finished(shared).await;
            return Ok(());
        }
        let pods: Vec<Pod> = shared
            .pods
            .active()
            .iter()
            .filter(|p| !is_critical(p))
            .map(|p| Pod::clone(p))
            .collect();
        if self.evict_beyond_storage_limits(shared, &summary, &pods) {
            return Ok(());
        }
        let Some(&index) = acting.first() else {
            return Ok(());
        };
        let threshold = self.config.thresholds[index];
        let signal = threshold.signal;
        node_event(
            shared,
            "EvictionThresholdMet",
            format!("Attempting to reclaim {}", signal.resource()),
        );
        if self
            .reclaim_node_resources(shared, stats, image_gc, signal)
            .await
        {
            tracing::info!(
                signal = signal.name(),
                "pressure relieved without evicting pods"
            );
            return Ok(());
        }
        let Some(reading) = observed.get(&signal).copied() else {
            return Ok(());
        };
        let usage = if signal == Signal::PidAvailable {
            process_counts(&shared.settings.cgroup_root, &pods)
        } else {
            pod_usage(&summary, signal)
        };
        let mut candidates: Vec<Candidate> =
            pods.iter().map(|p| candidate(p, signal, &usage)).collect();
        rank(signal, &mut candidates);
        let Some(victim) = candidates.first() else {
            tracing::warn!(
                signal = signal.name(),
                "threshold met but no pod may be evicted"
            );
            return Ok(());
        };
        let grace_seconds = if threshold.is_hard() {
            IMMEDIATE_GRACE_SECONDS
        } else {
            let own = pods
                .iter()
                .find(|p| p.metadata.uid.as_deref() == Some(victim.uid.as_str()))
                .and_then(|p| p.spec.as_ref()?.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_GRACE_SECONDS);
            own.min(self.config.max_pod_grace_seconds)
        };
        let message = rank::message(&threshold, &reading, victim);
        self.decide(&victim.uid, message, grace_seconds, true);
        Ok(())
    }

    fn decide(&self, uid: &str, message: String, grace_seconds: i64, disruption: bool) {
        tracing::warn!(pod = %uid, %message, grace_seconds, "evicting pod");
        self.state().decided.insert(
            uid.to_string(),
            Decision {
                message,
                grace_seconds,
                disruption,
            },
        );
    }

    /// Reads every signal it can.
    async fn observe(
        &self,
        shared: &crate::worker::Shared,
        summary: &Value,
    ) -> HashMap<Signal, Observation> {
        let mut observed = HashMap::new();
        if let Some(available) = summary["node"]["memory"]["availableBytes"].as_u64() {
            let capacity = u64::try_from(shared.memory_capacity).unwrap_or(0);
            observed.insert(
                Signal::MemoryAvailable,
                Observation {
                    available,
                    capacity,
                },
            );
        }
        let rlimit = &summary["node"]["rlimit"];
        if let (Some(max), Some(running)) = (rlimit["maxpid"].as_u64(), rlimit["curproc"].as_u64())
        {
            observed.insert(
                Signal::PidAvailable,
                Observation {
                    available: max.saturating_sub(running),
                    capacity: max,
                },
            );
        }
        let image_fs = shared
            .cri
            .image_fs_mountpoint()
            .await
            .ok()
            .map(PathBuf::from);
        for (path, bytes, inodes) in [
            (
                Some(self.config.root_dir.clone()),
                Signal::NodeFsAvailable,
                Signal::NodeFsInodesFree,
            ),
            (
                image_fs,
                Signal::ImageFsAvailable,
                Signal::ImageFsInodesFree,
            ),
        ] {
            let Some((space, files)) = path.as_deref().and_then(filesystem) else {
                continue;
            };
            observed.insert(bytes, space);
            observed.insert(inodes, files);
        }
        observed
    }

    /// Upstream's node-level reclaim before evicting for disk: unused images go, and
    /// the thresholds are read again. Whether none is met any more (with its minimum
    /// reclaim).
    async fn reclaim_node_resources(
        &self,
        shared: &crate::worker::Shared,
        stats: &crate::stats::Stats,
        image_gc: &crate::imagegc::SharedImageGc,
        signal: Signal,
    ) -> bool {
        if signal.condition() != Condition::DiskPressure {
            return false;
        }
        match image_gc.lock().await.remove_all_unused().await {
            Ok(freed) => tracing::info!(freed, "removed unused images to relieve disk pressure"),
            Err(error) => tracing::warn!(%error, "removing unused images failed"),
        }
        let Ok(summary) = stats.summary().await else {
            return false;
        };
        let observed = self.observe(shared, &summary).await;
        !self
            .config
            .thresholds
            .iter()
            .any(|t| t.met(&observed, true))
    }

    /// Evicts the first pod found beyond a local storage limit; whether one was.
    fn evict_beyond_storage_limits(
        &self,
        shared: &crate::worker::Shared,
        summary: &Value,
        pods: &[Pod],
    ) -> bool {
        let rootfs = pod_usage(summary, Signal::NodeFsAvailable);
        for pod in pods.iter().filter(|p| local_storage::has_limits(p)) {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let root = &self.config.root_dir;
            let empty_dirs: HashMap<String, u64> = pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .filter(|v| {
                    v.empty_dir
                        .as_ref()
                        .is_some_and(|e| e.medium.as_deref() != Some("Memory"))
                })
                .map(|v| {
                    let path = crate::volumes::empty_dir_path(root, uid, &v.name);
                    (v.name.clone(), disk_usage(&path))
                })
                .collect();
            let logs = crate::spec::pod_log_dir(&shared.settings, pod);
            let containers: HashMap<String, u64> = pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .map(|c| {
                    let layer = rootfs.get(uid).and_then(|u| u.get(&c.name)).copied();
                    let used = layer.unwrap_or(0) + disk_usage(&logs.join(&c.name));
                    (c.name.clone(), used)
                })
                .collect();
            let usage = local_storage::Usage {
                empty_dirs: &empty_dirs,
                containers: &containers,
            };
            if let Some(message) = local_storage::exceeded(pod, &usage) {
                self.decide(uid, message, IMMEDIATE_GRACE_SECONDS, false);
                return true;
            }
        }
        false
    }

    /// Drops decisions whose pods are gone or finished.
    async fn forget_finished(&self, shared: &crate::worker::Shared) {
        let pods = shared.pods.active();
        let live: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.state()
            .decided
            .retain(|uid, _| live.contains(uid.as_str()));
    }
}

/// An event about the node, as upstream's eviction manager records one.
fn node_event(shared: &crate::worker::Shared, reason: &str, note: String) {
    let regarding = ObjectReference {
        kind: Some("Node".into()),
        api_version: Some("v1".into()),
        name: Some(shared.node_name.clone()),
        uid: Some(shared.node_name.clone()),
        ..Default::default()
    };
    let (events, reason) = (shared.events.clone(), reason.to_string());
    tokio::spawn(async move { events.about(regarding, true, &reason, note).await });
}

/// Space and inodes of the filesystem holding `path` (image collection reads it too).
pub(crate) fn filesystem(path: &Path) -> Option<(Observation, Observation)> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let fragment = stat.fragment_size();
    Some((
        Observation {
            available: stat.blocks_available().saturating_mul(fragment),
            capacity: stat.blocks().saturating_mul(fragment),
        },
        Observation {
            available: stat.files_available(),
            capacity: stat.files(),
        },
    ))
}

/// Per pod UID, its process count (from its `pids` cgroup) under the pseudo-container
/// `""`: what process ID pressure ranks by.
fn process_counts(cgroup_root: &str, pods: &[Pod]) -> HashMap<String, HashMap<String, u64>> {
    pods.iter()
        .map(|pod| {
            let uid = crate::spec::pod_uid(pod);
            let cgroup = crate::cgroups::pod_cgroup(cgroup_root, &crate::spec::qos_class(pod), uid);
            let count = crate::cgroups::process_count(&cgroup).unwrap_or(0);
            (uid.to_string(), HashMap::from([(String::new(), count)]))
        })
        .collect()
}

/// Per pod UID, per container: the usage a memory or disk signal reclaims, from the
/// Summary.
fn pod_usage(summary: &Value, signal: Signal) -> HashMap<String, HashMap<String, u64>> {
    let mut usage = HashMap::new();
    for pod in summary["pods"].as_array().into_iter().flatten() {
        let uid = pod["podRef"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let containers = pod["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                let used = match signal {
                    Signal::MemoryAvailable => c["memory"]["workingSetBytes"].as_u64(),
                    Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => {
                        c["rootfs"]["inodesUsed"].as_u64()
                    }
                    _ => c["rootfs"]["usedBytes"].as_u64(),
                };
                (name, used.unwrap_or(0))
            })
            .collect();
        usage.insert(uid, containers);
    }
    usage
}

fn candidate(
    pod: &Pod,
    signal: Signal,
    usage: &HashMap<String, HashMap<String, u64>>,
) -> Candidate {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    let used = usage.get(&uid);
    if signal == Signal::PidAvailable {
        let processes = used.and_then(|u| u.get("")).copied().unwrap_or(0);
        return Candidate {
            uid,
            priority,
            usage: processes,
            request: 0,
            containers: vec![],
        };
    }
    // Inodes have no requests: any use is beyond them.
    let requested = match signal.resource() {
        "memory" => Some("memory"),
        "ephemeral-storage" => Some("ephemeral-storage"),
        _ => None,
    };
    let containers: Vec<(String, u64, u64)> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            let request = requested
                .and_then(|resource| {
                    c.resources
                        .as_ref()
                        .and_then(|r| r.requests.as_ref())
                        .and_then(|r| r.get(resource))
                })
                .and_then(|q| skiff_quantity::parse_value(&q.0).ok())
                .map_or(0, |v| u64::try_from(v).unwrap_or(0));
            let using = used.and_then(|u| u.get(&c.name)).copied().unwrap_or(0);
            (c.name.clone(), using, request)
        })
        .collect();
    Candidate {
        uid,
        priority,
        usage: containers.iter().map(|c| c.1).sum(),
        request: containers.iter().map(|c| c.2).sum(),
        containers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(hard: &str, soft: &str, grace: &str, reclaim: &str) -> EvictionManager {
        let flags = ThresholdFlags {
            hard,
            soft,
            soft_grace_period: grace,
            minimum_reclaim: reclaim,
        };
        EvictionManager::new(EvictionConfig {
            thresholds: parse_thresholds(&flags).unwrap_or_else(|e| panic!("{e}")),
            transition: Duration::from_secs(300),
            max_pod_grace_seconds: 0,
            root_dir: PathBuf::from("/"),
        })
    }

    fn reading(signal: Signal, available: u64, capacity: u64) -> HashMap<Signal, Observation> {
        HashMap::from([(
            signal,
            Observation {
                available,
                capacity,
            },
        )])
    }

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn met_thresholds_set_pressure_held_for_the_transition_period() {
        let manager = manager("memory.available<100,pid.available<10%", "", "", "");
        let now = Instant::now();
        assert!(manager
            .evaluate(&reading(Signal::MemoryAvailable, 500, 1000), now)
            .is_empty());
        assert_eq!(manager.pressure(), Pressure::default());
        assert_eq!(
            manager.evaluate(&reading(Signal::MemoryAvailable, 50, 1000), now),
            [0]
        );
        assert!(manager.pressure().has(Condition::MemoryPressure));
        // Held after the memory is back, for the transition period.
        assert!(manager
            .evaluate(&reading(Signal::MemoryAvailable, 500, 1000), now)
            .is_empty());
        assert!(manager.pressure().has(Condition::MemoryPressure));
        assert_eq!(
            manager.evaluate(&reading(Signal::PidAvailable, 3000, 32768), now),
            [1]
        );
        let pressure = manager.pressure();
        assert!(pressure.has(Condition::PidPressure) && !pressure.has(Condition::DiskPressure));
    }

    #[test]
    fn soft_thresholds_act_after_their_grace_period_and_hold_until_reclaimed() {
        let manager = manager(
            "",
            "memory.available<100",
            "memory.available=30s",
            "memory.available=50",
        );
        let start = Instant::now();
        let low = reading(Signal::MemoryAvailable, 80, 1000);
        assert!(manager.evaluate(&low, start).is_empty());
        // The condition is set at once; eviction waits for the grace period.
        assert!(manager.pressure().has(Condition::MemoryPressure));
        assert!(manager
            .evaluate(&low, start + Duration::from_secs(29))
            .is_empty());
        assert_eq!(manager.evaluate(&low, start + Duration::from_secs(30)), [0]);
        // Above the threshold but short of the minimum reclaim: still acting.
        let partly = reading(Signal::MemoryAvailable, 120, 1000);
        assert_eq!(
            manager.evaluate(&partly, start + Duration::from_secs(40)),
            [0]
        );
        let reclaimed = reading(Signal::MemoryAvailable, 150, 1000);
        assert!(manager
            .evaluate(&reclaimed, start + Duration::from_secs(50))
            .is_empty());
        // A threshold met again starts its grace period anew; one that was never acted
        // on does not hold for its minimum reclaim.
        assert!(manager
            .evaluate(&low, start + Duration::from_secs(60))
            .is_empty());
        assert!(manager
            .evaluate(&partly, start + Duration::from_secs(95))
            .is_empty());
    }

    #[test]
    fn admission_under_pressure_is_upstreams() {
        let best_effort = pod("metadata: {name: b}\nstatus: {qosClass: BestEffort}");
        let burstable = pod("metadata: {name: b}\nstatus: {qosClass: Burstable}");
        let tolerating = pod(
            "metadata: {name: t}\nspec:\n  containers: []\n  tolerations:\n  - {key: node.kubernetes.io/memory-pressure, operator: Exists, effect: NoSchedule}\nstatus: {qosClass: BestEffort}",
        );
        let critical =
            pod("metadata: {name: c}\nspec: {containers: [], priority: 2000001000}\nstatus: {qosClass: BestEffort}");
        let pressure = |conditions: &[Condition]| Pressure {
            conditions: conditions.iter().copied().collect(),
        };
        let memory = pressure(&[Condition::MemoryPressure]);
        assert_eq!(
            memory.refuses(&best_effort).as_deref(),
            Some("The node had condition: [MemoryPressure]. ")
        );
        assert_eq!(memory.refuses(&burstable), None);
        assert_eq!(memory.refuses(&tolerating), None);
        let both = pressure(&[Condition::MemoryPressure, Condition::DiskPressure]);
        assert_eq!(
            both.refuses(&burstable).as_deref(),
            Some("The node had condition: [MemoryPressure DiskPressure]. ")
        );
        assert_eq!(both.refuses(&critical), None);
        assert_eq!(
            pressure(&[Condition::PidPressure])
                .refuses(&tolerating)
                .as_deref(),
            Some("The node had condition: [PIDPressure]. ")
        );
        assert_eq!(Pressure::default().refuses(&best_effort), None);
    }
}
