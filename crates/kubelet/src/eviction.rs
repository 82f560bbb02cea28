//! Node-pressure eviction, as upstream's kubelet does it: every 10 s the eviction
//! signals are observed — `memory.available` (capacity less the node's working set),
//! `nodefs.available` and `nodefs.inodesFree` (the kubelet's root directory's
//! filesystem), `imagefs.available` and `imagefs.inodesFree` (the runtime's image
//! filesystem) — against the `--eviction-hard` thresholds. A met threshold sets the
//! node's `MemoryPressure` or `DiskPressure` condition (held for
//! `--eviction-pressure-transition-period` after it clears), makes the kubelet refuse
//! new pods (BestEffort ones under memory pressure, all under disk pressure), and evicts
//! one pod per pass: those using more than they request first, then the lowest
//! priority, then the largest use beyond the request. Static and system-critical pods
//! are never evicted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

/// How often signals are observed (upstream's fixed 10 s).
pub const MONITORING_PERIOD: Duration = Duration::from_secs(10);
/// Upstream's default hard thresholds on Linux.
pub const DEFAULT_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%,imagefs.inodesFree<5%";
/// Pods at or above this priority (`system-cluster-critical`'s) are never evicted.
const CRITICAL_PRIORITY: i32 = 2_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodeFsAvailable,
    NodeFsInodesFree,
    ImageFsAvailable,
    ImageFsInodesFree,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
        }
    }

    fn parse(name: &str) -> Option<Signal> {
        [
            Signal::MemoryAvailable,
            Signal::NodeFsAvailable,
            Signal::NodeFsInodesFree,
            Signal::ImageFsAvailable,
            Signal::ImageFsInodesFree,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// The resource a pod is evicted to reclaim, as upstream names it in messages.
    fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => "ephemeral-storage",
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => "inodes",
        }
    }

    fn is_memory(self) -> bool {
        self == Signal::MemoryAvailable
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Amount {
    Quantity(u64),
    Percent(f64),
}

/// One `signal<amount` threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    signal: Signal,
    amount: Amount,
}

/// Parses `--eviction-hard` (`signal<quantity` or `signal<percent%`, comma-separated).
pub fn parse_thresholds(text: &str) -> Result<Vec<Threshold>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|item| {
            let (name, amount) = item
                .split_once('<')
                .ok_or_else(|| format!("eviction threshold {item:?}: expected signal<amount"))?;
            let signal = Signal::parse(name.trim())
                .ok_or_else(|| format!("eviction threshold {item:?}: unknown signal {name:?}"))?;
            let amount = amount.trim();
            let amount = match amount.strip_suffix('%') {
                Some(percent) => {
                    let percent: f64 = percent
                        .parse()
                        .map_err(|_| format!("eviction threshold {item:?}: bad percentage"))?;
                    if !(0.0..=100.0).contains(&percent) {
                        return Err(format!(
                            "eviction threshold {item:?}: percentage out of range"
                        ));
                    }
                    Amount::Percent(percent)
                }
                None => {
                    let milli = skiff_quantity::parse_milli(amount)
                        .map_err(|e| format!("eviction threshold {item:?}: {e}"))?;
                    Amount::Quantity(u64::try_from(milli / 1000).unwrap_or(0))
                }
            };
            Ok(Threshold { signal, amount })
        })
        .collect()
}

/// One signal's reading: what is available of how much.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

impl Threshold {
    fn limit(&self, capacity: u64) -> u64 {
        match self.amount {
            Amount::Quantity(q) => q,
            Amount::Percent(p) => (capacity as f64 * p / 100.0) as u64,
        }
    }

    fn met(&self, observed: &HashMap<Signal, Observation>) -> bool {
        observed
            .get(&self.signal)
            .is_some_and(|o| o.available < self.limit(o.capacity))
    }
}

/// The node's pressure conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
}

impl Pressure {
    /// Upstream's refusal of a new pod under pressure, if it is refused.
    pub fn refuses(&self, best_effort: bool) -> Option<String> {
        let mut conditions = Vec::new();
        if self.memory && best_effort {
            conditions.push("MemoryPressure");
        }
        if self.disk {
            conditions.push("DiskPressure");
        }
        (!conditions.is_empty())
            .then(|| format!("The node had condition: [{}]. ", conditions.join(", ")))
    }
}

/// A pod as eviction ranks it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub uid: String,
    pub priority: i32,
    /// Usage and request of the resource being reclaimed, in bytes.
    pub usage: u64,
    pub request: u64,
    /// Per container: name, usage, request.
    pub containers: Vec<(String, u64, u64)>,
}

/// Upstream's order: usage beyond the request first, then lower priority, then more
/// usage beyond the request.
pub fn rank(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        let exceeds = |c: &Candidate| c.usage > c.request;
        exceeds(b)
            .cmp(&exceeds(a))
            .then(a.priority.cmp(&b.priority))
            .then(
                (b.usage.saturating_sub(b.request) as i128)
                    .cmp(&(a.usage.saturating_sub(a.request) as i128)),
            )
    });
}

/// Upstream's eviction message.
fn message(
    signal: Signal,
    threshold: &Threshold,
    observed: &Observation,
    victim: &Candidate,
) -> String {
    let resource = signal.resource();
    let mut message = format!(
        "The node was low on resource: {resource}. Threshold quantity: {}, available: {}. ",
        quantity(threshold.limit(observed.capacity)),
        quantity(observed.available)
    );
    for (name, usage, request) in &victim.containers {
        if usage > request {
            message.push_str(&format!(
                "Container {name} was using {}, request is {}, has larger consumption of {resource}. ",
                quantity(*usage),
                quantity(*request)
            ));
        }
    }
    message
}

/// Bytes as a Kubernetes quantity (in Ki, as upstream's messages show memory).
fn quantity(bytes: u64) -> String {
    if bytes == 0 {
        "0".into()
    } else if bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// Whether a pod may be evicted at all.
fn evictable(pod: &Pod) -> bool {
    let mirror = crate::static_pods::is_mirror(pod);
    let critical = pod
        .spec
        .as_ref()
        .and_then(|s| s.priority)
        .is_some_and(|p| p >= CRITICAL_PRIORITY);
    !mirror && !critical && !crate::static_pods::is_static(pod)
}

/// The eviction manager: thresholds, the last time each pressure was seen, and the
/// evictions decided but not yet carried out by the pods' workers.
pub struct EvictionManager {
    thresholds: Vec<Threshold>,
    transition: Duration,
    last_met: Mutex<(Option<Instant>, Option<Instant>)>,
    /// Pod UID → the eviction message its worker acts on.
    decided: Mutex<HashMap<String, String>>,
    root_dir: PathBuf,
}

impl EvictionManager {
    pub fn new(thresholds: Vec<Threshold>, transition: Duration, root_dir: PathBuf) -> Self {
        EvictionManager {
            thresholds,
            transition,
            last_met: Mutex::new((None, None)),
            decided: Mutex::new(HashMap::new()),
            root_dir,
        }
    }

    /// The node's pressure conditions now.
    pub fn pressure(&self) -> Pressure {
        let last = *self.last_met.lock().unwrap_or_else(|e| e.into_inner());
        let recent = |at: Option<Instant>| at.is_some_and(|at| at.elapsed() < self.transition);
        Pressure {
            memory: recent(last.0),
            disk: recent(last.1),
        }
    }

    /// The eviction decided for a pod, if any (its worker fails the pod with it).
    pub fn decided_for(&self, uid: &str) -> Option<String> {
        self.decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
    }

    /// Records the met thresholds' pressure; returns the first met, with its reading.
    fn observe(&self, observed: &HashMap<Signal, Observation>) -> Option<(Threshold, Observation)> {
        let met: Vec<&Threshold> = self.thresholds.iter().filter(|t| t.met(observed)).collect();
        let now = Instant::now();
        let mut last = self.last_met.lock().unwrap_or_else(|e| e.into_inner());
        if met.iter().any(|t| t.signal.is_memory()) {
            last.0 = Some(now);
        }
        if met.iter().any(|t| !t.signal.is_memory()) {
            last.1 = Some(now);
        }
        let first = met.first()?;
        Some((**first, *observed.get(&first.signal)?))
    }

    /// Observes every [`MONITORING_PERIOD`]; evicts one pod per pass while a threshold
    /// is met.
    pub async fn run(&self, shared: &crate::worker::Shared, stats: &crate::stats::Stats) {
        loop {
            if let Err(error) = self.pass(shared, stats).await {
                tracing::warn!(%error, "eviction manager pass failed");
            }
            tokio::time::sleep(MONITORING_PERIOD).await;
        }
    }

    async fn pass(
        &self,
        shared: &crate::worker::Shared,
        stats: &crate::stats::Stats,
    ) -> crate::error::Result<()> {
        let summary = stats.summary().await?;
        let mut observed = HashMap::new();
        let memory_available = summary["node"]["memory"]["availableBytes"].as_u64();
        if let Some(available) = memory_available {
            let capacity = u64::try_from(shared.memory_capacity).unwrap_or(0);
            observed.insert(
                Signal::MemoryAvailable,
                Observation {
                    available,
                    capacity,
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
                Some(self.root_dir.clone()),
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
        let Some((threshold, reading)) = self.observe(&observed) else {
            return Ok(());
        };
        // One eviction at a time: wait for the last to be carried out.
        let pending = !self
            .decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if pending {
            self.forget_finished(shared).await;
            return Ok(());
        }
        let pods = crate::pods::node_pods(shared).await?;
        let usage = pod_usage(&summary, threshold.signal);
        let mut candidates: Vec<Candidate> = pods
            .iter()
            .filter(|p| evictable(p))
            .map(|p| candidate(p, threshold.signal, &usage))
            .collect();
        rank(&mut candidates);
        let Some(victim) = candidates.first() else {
            tracing::warn!(
                signal = threshold.signal.name(),
                "threshold met but no pod may be evicted"
            );
            return Ok(());
        };
        let message = message(threshold.signal, &threshold, &reading, victim);
        tracing::warn!(pod = %victim.uid, signal = threshold.signal.name(), %message, "evicting pod");
        self.decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(victim.uid.clone(), message);
        Ok(())
    }

    /// Drops decisions whose pods are gone or finished.
    async fn forget_finished(&self, shared: &crate::worker::Shared) {
        let Ok(pods) = crate::pods::node_pods(shared).await else {
            return;
        };
        let live: std::collections::HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|uid, _| live.contains(uid.as_str()));
    }
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

/// Per pod UID, per container: the usage a signal reclaims, from the Summary.
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
                let used = if signal.is_memory() {
                    c["memory"]["workingSetBytes"].as_u64()
                } else {
                    c["rootfs"]["usedBytes"].as_u64()
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
    let used = usage.get(&uid);
    let resource = if signal.is_memory() {
        "memory"
    } else {
        "ephemeral-storage"
    };
    let containers: Vec<(String, u64, u64)> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            let request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| skiff_quantity::parse_milli(&q.0).ok())
                .map_or(0, |milli| u64::try_from(milli / 1000).unwrap_or(0));
            let using = used.and_then(|u| u.get(&c.name)).copied().unwrap_or(0);
            (c.name.clone(), using, request)
        })
        .collect();
    Candidate {
        uid,
        priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
        usage: containers.iter().map(|c| c.1).sum(),
        request: containers.iter().map(|c| c.2).sum(),
        containers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_as_upstream_writes_them() {
        let parsed = parse_thresholds(DEFAULT_HARD).unwrap_or_default();
        assert_eq!(parsed.len(), 5);
        assert_eq!(
            parsed[0],
            Threshold {
                signal: Signal::MemoryAvailable,
                amount: Amount::Quantity(100 * 1024 * 1024)
            }
        );
        assert_eq!(parsed[1].amount, Amount::Percent(10.0));
        assert!(parse_thresholds("memory.free<1Gi").is_err());
        assert!(parse_thresholds("memory.available>1Gi").is_err());
        assert!(parse_thresholds("nodefs.available<120%").is_err());
    }

    #[test]
    fn met_thresholds_set_pressure_and_refuse_pods() {
        let manager = EvictionManager::new(
            parse_thresholds("memory.available<100Mi,nodefs.available<10%").unwrap_or_default(),
            Duration::from_secs(300),
            PathBuf::from("/"),
        );
        let mib = 1024 * 1024;
        let mut observed = HashMap::from([
            (
                Signal::MemoryAvailable,
                Observation {
                    available: 500 * mib,
                    capacity: 1000 * mib,
                },
            ),
            (
                Signal::NodeFsAvailable,
                Observation {
                    available: 50,
                    capacity: 100,
                },
            ),
        ]);
        assert!(manager.observe(&observed).is_none());
        assert_eq!(manager.pressure(), Pressure::default());
        observed.insert(
            Signal::MemoryAvailable,
            Observation {
                available: 50 * mib,
                capacity: 1000 * mib,
            },
        );
        let (threshold, _) = manager
            .observe(&observed)
            .unwrap_or_else(|| panic!("memory threshold met"));
        assert_eq!(threshold.signal, Signal::MemoryAvailable);
        let pressure = manager.pressure();
        assert_eq!(
            pressure,
            Pressure {
                memory: true,
                disk: false
            }
        );
        // Held after the memory is back, for the transition period.
        observed.insert(
            Signal::MemoryAvailable,
            Observation {
                available: 500 * mib,
                capacity: 1000 * mib,
            },
        );
        manager.observe(&observed);
        assert!(manager.pressure().memory);
        assert_eq!(
            pressure.refuses(true).as_deref(),
            Some("The node had condition: [MemoryPressure]. ")
        );
        assert_eq!(pressure.refuses(false), None);
        assert_eq!(
            Pressure {
                memory: true,
                disk: true
            }
            .refuses(false)
            .as_deref(),
            Some("The node had condition: [DiskPressure]. ")
        );
    }

    #[test]
    fn pods_over_their_requests_go_first_then_low_priority_then_the_greediest() {
        let pod = |uid: &str, priority, usage, request| Candidate {
            uid: uid.into(),
            priority,
            usage,
            request,
            containers: vec![],
        };
        let mut pods = vec![
            pod("within-low", 0, 10, 100),
            pod("over-high", 1000, 200, 100),
            pod("over-low-small", 0, 110, 100),
            pod("over-low-big", 0, 500, 100),
        ];
        rank(&mut pods);
        let order: Vec<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        assert_eq!(
            order,
            ["over-low-big", "over-low-small", "over-high", "within-low"]
        );
    }

    #[test]
    fn messages_name_the_resource_threshold_and_greedy_containers() {
        let threshold = parse_thresholds("memory.available<100Mi").unwrap_or_default()[0];
        let victim = Candidate {
            uid: "u".into(),
            priority: 0,
            usage: 20 * 1024 * 1024,
            request: 0,
            containers: vec![("c".into(), 20 * 1024 * 1024, 0)],
        };
        let observed = Observation {
            available: 50 * 1024 * 1024,
            capacity: 1 << 30,
        };
        assert_eq!(
            message(Signal::MemoryAvailable, &threshold, &observed, &victim),
            "The node was low on resource: memory. Threshold quantity: 102400Ki, available: 51200Ki. \
             Container c was using 20480Ki, request is 0, has larger consumption of memory. "
        );
    }
}
