//! Node lifecycle and NoExecute taint eviction (upstream's `nodelifecycle` controller and
//! taint eviction controller).
//!
//! Every monitor period: a node whose Lease in `kube-node-lease` has not been renewed
//! for the grace period (measured on this controller's clock, as upstream does, so clock
//! skew does not matter) gets its conditions set to `Unknown` and its pods marked not
//! ready. Nodes are tainted from their `Ready` condition: `node.kubernetes.io/unreachable`
//! (Unknown) or `node.kubernetes.io/not-ready` (False), with `NoSchedule` at once and
//! `NoExecute` at the pace of the node's zone ([`zones`]); a tainted node's key swaps at
//! once when its condition does. Pods on a node with a `NoExecute` taint they do not
//! tolerate are evicted at once; those that tolerate it for `tolerationSeconds` are
//! evicted when that time has passed since the taint was added.

mod zones;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use skiff_scheduler::plugins::helpers::tolerates;

use crate::controller::key_of;
use crate::error::ignore_not_found;
use crate::informer::InformerFactory;
pub use zones::EvictionRates;
use zones::Zones;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

#[derive(Debug, Clone)]
pub struct NodeLifecycleSettings {
    /// `--node-monitor-period`.
    pub monitor_period: Duration,
    /// `--node-monitor-grace-period`.
    pub grace_period: Duration,
    pub eviction_rates: EvictionRates,
}

pub struct NodeLifecycleController {
    client: Client,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    settings: NodeLifecycleSettings,
    /// Per node: the last renew time seen on its Lease, and when this controller saw it.
    heartbeats: Mutex<HashMap<String, (Option<Timestamp>, Instant)>>,
    zones: Mutex<Zones>,
    /// When each NoExecute taint (node, key, value) was first seen, for those written
    /// without `timeAdded`.
    taints_seen: Arc<Mutex<HashMap<TaintKey, Timestamp>>>,
    metrics: Arc<crate::metrics::ControllerManagerMetrics>,
}

/// A NoExecute taint of a node: node, key, value.
type TaintKey = (String, String, Option<String>);

fn no_execute_keys(node: Option<&Node>) -> Vec<TaintKey> {
    let Some(node) = node else { return Vec::new() };
    let name = node.name_any();
    node.spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .filter(|t| t.effect == "NoExecute")
        .map(|t| (name.clone(), t.key.clone(), t.value.clone()))
        .collect()
}

impl NodeLifecycleController {
    pub fn new(factory: &InformerFactory, settings: NodeLifecycleSettings) -> Arc<Self> {
        let node_informer = factory.informer::<Node>();
        // As upstream's taint manager, from the node's events: a taint that goes is
        // forgotten, so the same taint put back counts afresh, however quickly.
        let taints_seen: Arc<Mutex<HashMap<TaintKey, Timestamp>>> = Arc::default();
        let seen = taints_seen.clone();
        node_informer.add_handler(move |old, new| {
            let (before, after) = (no_execute_keys(old), no_execute_keys(new));
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            for gone in before.iter().filter(|k| !after.contains(k)) {
                seen.remove(gone);
            }
            for added in after.into_iter().filter(|k| !before.contains(k)) {
                seen.insert(added, Timestamp::now());
            }
        });
        Arc::new(NodeLifecycleController {
            client: factory.client_for("node-controller"),
            nodes: node_informer.store(),
            leases: factory.informer::<Lease>().store(),
            pods: factory.informer::<Pod>().store(),
            settings,
            heartbeats: Mutex::new(HashMap::new()),
            zones: Mutex::new(Zones::default()),
            taints_seen,
            metrics: factory.metrics(),
        })
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.settings.monitor_period).await;
            let nodes = self.nodes.state();
            for node in &nodes {
                if let Err(e) = self.monitor(node).await {
                    tracing::warn!(node = %node.name_any(), error = %e, "node lifecycle");
                }
            }
            self.zones().observe(
                nodes.iter().map(|n| {
                    (
                        zones::zone_of(n),
                        ready_status(n).as_deref() == Some("True"),
                    )
                }),
                &self.settings.eviction_rates,
                Instant::now(),
            );
            for (zone, size, not_ready) in self.zones().sizes() {
                self.metrics.zone_observed(&zone, size, not_ready);
            }
            for node in &nodes {
                if let Err(e) = self.update_taints(node).await {
                    tracing::warn!(node = %node.name_any(), error = %e, "node lifecycle taints");
                }
            }
            self.evict().await;
        }
    }

    fn zones(&self) -> std::sync::MutexGuard<'_, Zones> {
        self.zones.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the node's heartbeat is overdue, by this controller's clock.
    fn overdue(&self, node: &str) -> bool {
        let renewed = self
            .leases
            .get(&ObjectRef::new(node).within("kube-node-lease"))
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        let mut beats = self.heartbeats.lock().unwrap_or_else(|e| e.into_inner());
        let entry = beats
            .entry(node.to_string())
            .or_insert_with(|| (renewed, Instant::now()));
        if entry.0 != renewed {
            *entry = (renewed, Instant::now());
        }
        entry.1.elapsed() > self.settings.grace_period
    }

    /// Marks a node whose heartbeat is overdue `Unknown`, and its pods not ready.
    async fn monitor(&self, node: &Node) -> crate::error::Result<()> {
        let name = node.name_any();
        let api: Api<Node> = Api::all(self.client.clone());
        let ready = ready_status(node);
        if self.overdue(&name) && ready.as_deref() != Some("Unknown") {
            tracing::warn!(node = %name, "node stopped posting status; marking it Unknown");
            let now = Time(Timestamp::now());
            let conditions: Vec<serde_json::Value> =
                ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
                    .iter()
                    .map(|t| {
                        let heartbeat = node
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .and_then(|c| c.iter().find(|c| c.type_ == *t))
                            .and_then(|c| c.last_heartbeat_time.clone());
                        serde_json::json!({
                            "type": t,
                            "status": "Unknown",
                            "reason": "NodeStatusUnknown",
                            "message": "Kubelet stopped posting node status.",
                            "lastHeartbeatTime": heartbeat,
                            "lastTransitionTime": now,
                        })
                    })
                    .collect();
            let patch = serde_json::json!({"status": {"conditions": conditions}});
            api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await?;
            self.mark_pods_not_ready(&name).await;
        }
        Ok(())
    }

    /// Brings the node's lifecycle taints in line with its `Ready` condition.
    async fn update_taints(&self, node: &Node) -> crate::error::Result<()> {
        let name = node.name_any();
        let wanted = match ready_status(node).as_deref() {
            Some("Unknown") => Some(UNREACHABLE),
            Some("False") => Some(NOT_READY),
            _ => None,
        };
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let zone = zones::zone_of(node);
        let all_disrupted = self.zones().all_disrupted();
        let may_add = || {
            let granted = self.zones().may_taint(&zone, Instant::now());
            if granted {
                self.metrics.zone_tainted(&zones::label(&zone));
            }
            granted
        };
        let lifecycle = lifecycle_taints(&taints, wanted, Timestamp::now(), may_add, all_disrupted);
        let updated = condition_taints(&lifecycle, &conditions_calling_for_taints(node));
        // Order aside: a patch only for a real change.
        if updated.len() != taints.len() || updated.iter().any(|t| !taints.contains(t)) {
            tracing::info!(node = %name, taint = ?wanted, "updating node lifecycle taints");
            let patch = serde_json::json!({"spec": {"taints": updated}});
            let api: Api<Node> = Api::all(self.client.clone());
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }

    async fn mark_pods_not_ready(&self, node: &str) {
        for pod in self
            .pods
            .state()
            .iter()
            .filter(|p| node_of(p) == Some(node))
        {
            let api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let patch = serde_json::json!({"status": {"conditions": [{
                "type": "Ready", "status": "False", "lastTransitionTime": Time(Timestamp::now()),
            }]}});
            if let Err(e) = api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                tracing::debug!(pod = %key_of(pod.as_ref()), error = %e, "could not mark pod not ready");
            }
        }
    }

    /// Evicts the pods whose node has a NoExecute taint they do not tolerate (any longer).
    async fn evict(&self) {
        let now = Timestamp::now();
        let mut work = Vec::new();
        for node in self.nodes.state() {
            let name = node.name_any();
            let taints: Vec<Taint> = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.effect == "NoExecute")
                .map(|mut taint| {
                    // A taint written without `timeAdded` counts from when this
                    // controller first saw it, as upstream's taint manager counts.
                    let key = (name.clone(), taint.key.clone(), taint.value.clone());
                    let since = *self
                        .taints_seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(key)
                        .or_insert(now);
                    taint.time_added.get_or_insert(Time(since));
                    taint
                })
                .collect();
            if !taints.is_empty() {
                work.push((name, taints));
            }
        }
        for (name, taints) in work {
            for pod in self.pods.state().iter().filter(|p| {
                node_of(p) == Some(name.as_str()) && p.metadata.deletion_timestamp.is_none()
            }) {
                if let Some(deadline) = eviction_time(pod, &taints) {
                    if deadline <= now {
                        self.evict_pod(pod).await;
                    }
                }
            }
        }
    }

    async fn evict_pod(&self, pod: &Pod) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        tracing::info!(pod = %key_of(pod), "evicting pod from a NoExecute-tainted node");
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        let _ = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await;
        if let Err(e) =
            ignore_not_found(api.delete(&pod.name_any(), &DeleteParams::default()).await)
        {
            tracing::warn!(pod = %key_of(pod), error = %e, "could not evict pod");
        }
    }
}

fn is_lifecycle_taint(taint: &Taint) -> bool {
    taint.key == UNREACHABLE || taint.key == NOT_READY
}

/// Upstream's `TaintNodesByCondition`: the `NoSchedule` taint each condition (or
/// cordoning) calls for.
const CONDITION_TAINTS: &[(&str, &str)] = &[
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "node.kubernetes.io/network-unavailable",
    ),
];
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The condition taints `node`'s conditions and `spec.unschedulable` call for.
fn conditions_calling_for_taints(node: &Node) -> Vec<&'static str> {
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let mut keys: Vec<&'static str> = CONDITION_TAINTS
        .iter()
        .filter(|(type_, _)| {
            conditions
                .iter()
                .any(|c| c.type_ == *type_ && c.status == "True")
        })
        .map(|(_, key)| *key)
        .collect();
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        keys.push(UNSCHEDULABLE);
    }
    keys
}

/// `taints` with exactly the condition taints in `wanted` (each `NoSchedule`).
fn condition_taints(taints: &[Taint], wanted: &[&str]) -> Vec<Taint> {
    let is_condition_taint = |t: &Taint| {
        t.effect == "NoSchedule"
            && (t.key == UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, key)| t.key == *key))
    };
    let mut updated: Vec<Taint> = taints
        .iter()
        .filter(|t| !is_condition_taint(t) || wanted.contains(&t.key.as_str()))
        .cloned()
        .collect();
    for key in wanted {
        if !updated
            .iter()
            .any(|t| t.key == *key && t.effect == "NoSchedule")
        {
            updated.push(Taint {
                key: (*key).into(),
                effect: "NoSchedule".into(),
                time_added: None,
                value: None,
            });
        }
    }
    updated
}

/// A node's taints with its lifecycle taints for `wanted` (the key its `Ready` condition
/// calls for, if any): `NoSchedule` at once; `NoExecute` swapped at once from the other
/// key, added only if `may_add` grants it, and lifted when nothing is wanted or every
/// zone is down (`all_disrupted`).
fn lifecycle_taints(
    taints: &[Taint],
    wanted: Option<&str>,
    now: Timestamp,
    may_add: impl FnOnce() -> bool,
    all_disrupted: bool,
) -> Vec<Taint> {
    let lifecycle = |effect: &str| {
        taints
            .iter()
            .find(|t| is_lifecycle_taint(t) && t.effect == effect)
    };
    let taint = |key: &str, effect: &str| Taint {
        key: key.into(),
        effect: effect.into(),
        time_added: (effect == "NoExecute").then_some(Time(now)),
        value: None,
    };
    let mut updated: Vec<Taint> = taints
        .iter()
        .filter(|t| !is_lifecycle_taint(t))
        .cloned()
        .collect();
    let Some(key) = wanted else {
        return updated;
    };
    updated.push(match lifecycle("NoSchedule") {
        Some(existing) if existing.key == key => existing.clone(),
        _ => taint(key, "NoSchedule"),
    });
    if all_disrupted {
        return updated;
    }
    match lifecycle("NoExecute") {
        Some(existing) if existing.key == key => updated.push(existing.clone()),
        Some(_) => updated.push(taint(key, "NoExecute")),
        None if may_add() => updated.push(taint(key, "NoExecute")),
        None => {}
    }
    updated
}

fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// When the pod must go because of `taints` (all NoExecute): now if one is not
/// tolerated; else the earliest end of a `tolerationSeconds`; `None` if tolerated for
/// ever.
pub fn eviction_time(pod: &Pod, taints: &[Taint]) -> Option<Timestamp> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut deadline: Option<Timestamp> = None;
    for taint in taints {
        let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(Timestamp::UNIX_EPOCH);
        }
        // The shortest time any matching toleration allows; none given means for ever.
        let seconds = matching.iter().filter_map(|t| t.toleration_seconds).min();
        let Some(seconds) =
            seconds.filter(|_| matching.iter().all(|t| t.toleration_seconds.is_some()))
        else {
            continue;
        };
        let since = taint
            .time_added
            .as_ref()
            .map(|t| t.0)
            .unwrap_or_else(Timestamp::now);
        let end = since
            .checked_add(jiff::SignedDuration::from_secs(seconds.max(0)))
            .unwrap_or(since);
        deadline = Some(deadline.map_or(end, |d| d.min(end)));
    }
    deadline
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            ..Default::default()
        }
    }

    fn lifecycle(key: &str, effect: &str, added: i64) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            time_added: (effect == "NoExecute")
                .then(|| Time(Timestamp::from_second(added).unwrap_or_default())),
            value: None,
        }
    }

    #[test]
    fn no_execute_waits_for_the_zones_budget_and_swaps_at_once() {
        let now = Timestamp::from_second(100).unwrap_or_default();
        let own = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            time_added: None,
            value: Some("gpu".into()),
        };
        // Not ready, no budget: NoSchedule only, the node's own taint kept.
        let held = lifecycle_taints(
            std::slice::from_ref(&own),
            Some(NOT_READY),
            now,
            || false,
            false,
        );
        assert_eq!(held, [own.clone(), lifecycle(NOT_READY, "NoSchedule", 0)]);
        // With budget: NoExecute too, stamped now.
        let tainted = lifecycle_taints(&held, Some(NOT_READY), now, || true, false);
        assert_eq!(tainted[2], lifecycle(NOT_READY, "NoExecute", 100));
        // Not ready → unreachable swaps without asking for budget.
        let swapped = lifecycle_taints(
            &tainted,
            Some(UNREACHABLE),
            now,
            || panic!("no budget asked"),
            false,
        );
        assert_eq!(
            swapped,
            [
                own.clone(),
                lifecycle(UNREACHABLE, "NoSchedule", 0),
                lifecycle(UNREACHABLE, "NoExecute", 100)
            ]
        );
        // Already tainted: kept as is (its time too), without asking.
        let later = Timestamp::from_second(500).unwrap_or_default();
        assert_eq!(
            lifecycle_taints(
                &swapped,
                Some(UNREACHABLE),
                later,
                || panic!("asked"),
                false
            ),
            swapped
        );
        // Every zone down: NoExecute lifted, NoSchedule kept.
        assert_eq!(
            lifecycle_taints(&swapped, Some(UNREACHABLE), later, || true, true),
            [own.clone(), lifecycle(UNREACHABLE, "NoSchedule", 0)]
        );
        // Ready again: every lifecycle taint goes.
        assert_eq!(
            lifecycle_taints(&swapped, None, later, || true, false),
            [own]
        );
    }

    #[test]
    fn conditions_and_cordoning_taint_as_upstream() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"unschedulable": true},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"},
                {"type": "Ready", "status": "True"}]}
        }))
        .unwrap_or_default();
        let wanted = conditions_calling_for_taints(&node);
        assert_eq!(
            wanted,
            ["node.kubernetes.io/memory-pressure", UNSCHEDULABLE]
        );
        let stale = Taint {
            key: "node.kubernetes.io/disk-pressure".into(),
            effect: "NoSchedule".into(),
            time_added: None,
            value: None,
        };
        let own = Taint {
            key: "gpu".into(),
            effect: "NoSchedule".into(),
            time_added: None,
            value: None,
        };
        let updated = condition_taints(&[stale, own.clone()], &wanted);
        let keys: Vec<&str> = updated.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            keys,
            ["gpu", "node.kubernetes.io/memory-pressure", UNSCHEDULABLE]
        );
        // Nothing called for: only the node's own taint is left.
        assert_eq!(condition_taints(&updated, &[]), [own]);
    }

    #[test]
    fn eviction_times_as_upstream() {
        let added = Timestamp::from_second(1_000).unwrap();
        let taint = Taint {
            key: UNREACHABLE.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(added)),
            value: None,
        };
        // Not tolerated: at once.
        assert_eq!(
            eviction_time(&pod(vec![]), std::slice::from_ref(&taint)),
            Some(Timestamp::UNIX_EPOCH)
        );
        // Tolerated for 300 s: 300 s after the taint came.
        assert_eq!(
            eviction_time(
                &pod(vec![toleration(UNREACHABLE, Some(300))]),
                std::slice::from_ref(&taint)
            ),
            Some(Timestamp::from_second(1_300).unwrap())
        );
        // Tolerated for ever: never.
        assert_eq!(
            eviction_time(&pod(vec![toleration(UNREACHABLE, None)]), &[taint]),
            None
        );
    }
}
