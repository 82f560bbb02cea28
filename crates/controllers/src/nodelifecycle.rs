//! Node lifecycle and NoExecute taint eviction (upstream's `nodelifecycle` controller and
//! taint eviction controller).
//!
//! Every monitor period: a node whose Lease in `kube-node-lease` has not been renewed
//! for the grace period (measured on this controller's clock, as upstream does, so clock
//! skew does not matter) gets its conditions set to `Unknown` and its pods marked not
//! ready. Nodes are tainted from their `Ready` condition: `node.kubernetes.io/unreachable`
//! (Unknown) or `node.kubernetes.io/not-ready` (False), with `NoSchedule` and `NoExecute`.
//! Pods on a node with a `NoExecute` taint they do not tolerate are evicted at once; those
//! that tolerate it for `tolerationSeconds` are evicted when that time has passed since
//! the taint was added.

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

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

#[derive(Debug, Clone)]
pub struct NodeLifecycleSettings {
    /// `--node-monitor-period`.
    pub monitor_period: Duration,
    /// `--node-monitor-grace-period`.
    pub grace_period: Duration,
}

pub struct NodeLifecycleController {
    client: Client,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    settings: NodeLifecycleSettings,
    /// Per node: the last renew time seen on its Lease, and when this controller saw it.
    heartbeats: Mutex<HashMap<String, (Option<Timestamp>, Instant)>>,
}

impl NodeLifecycleController {
    pub fn new(factory: &InformerFactory, settings: NodeLifecycleSettings) -> Arc<Self> {
        Arc::new(NodeLifecycleController {
            client: factory.client_for("node-controller"),
            nodes: factory.informer::<Node>().store(),
            leases: factory.informer::<Lease>().store(),
            pods: factory.informer::<Pod>().store(),
            settings,
            heartbeats: Mutex::new(HashMap::new()),
        })
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.settings.monitor_period).await;
            for node in self.nodes.state() {
                if let Err(e) = self.monitor(&node).await {
                    tracing::warn!(node = %node.name_any(), error = %e, "node lifecycle");
                }
            }
            self.evict().await;
        }
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
            return Ok(());
        }
        // Taints follow the Ready condition.
        let wanted = match ready.as_deref() {
            Some("Unknown") => Some(UNREACHABLE),
            Some("False") => Some(NOT_READY),
            _ => None,
        };
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let mut updated: Vec<Taint> = taints
            .iter()
            .filter(|t| !is_lifecycle_taint(t) || Some(t.key.as_str()) == wanted)
            .cloned()
            .collect();
        if let Some(key) = wanted {
            for effect in ["NoSchedule", "NoExecute"] {
                if !updated.iter().any(|t| t.key == key && t.effect == effect) {
                    updated.push(Taint {
                        key: key.into(),
                        effect: effect.into(),
                        time_added: (effect == "NoExecute").then(|| Time(Timestamp::now())),
                        value: None,
                    });
                }
            }
        }
        if updated != taints {
            tracing::info!(node = %name, taint = ?wanted, "updating node lifecycle taints");
            let patch = serde_json::json!({"spec": {"taints": updated}});
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
        for node in self.nodes.state() {
            let taints: Vec<Taint> = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|t| t.effect == "NoExecute")
                .collect();
            if taints.is_empty() {
                continue;
            }
            let name = node.name_any();
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
