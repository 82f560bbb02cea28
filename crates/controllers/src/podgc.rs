//! The pod garbage collector (upstream's `podgc`): every period, it removes the oldest
//! finished pods beyond `--terminated-pod-gc-threshold`, pods bound to nodes that no
//! longer exist (after a quarantine, and a check with the API server), and pods that
//! are being deleted but were never scheduled (no kubelet will finish them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::controller::key_of;
use crate::error::ignore_not_found;
use crate::informer::InformerFactory;

/// How PodGC runs (upstream's `gcCheckPeriod` and `quarantineTime`; the threshold is
/// `--terminated-pod-gc-threshold`).
#[derive(Debug, Clone)]
pub struct PodGcSettings {
    pub period: Duration,
    pub quarantine: Duration,
    /// At most this many finished pods are kept; 0 keeps them all.
    pub terminated_threshold: usize,
}

pub struct PodGcController {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    settings: PodGcSettings,
    /// Nodes found missing, and since when (the quarantine runs from there).
    missing_since: Mutex<HashMap<String, Instant>>,
}

impl PodGcController {
    pub fn new(factory: &InformerFactory, settings: PodGcSettings) -> Arc<PodGcController> {
        Arc::new(PodGcController {
            client: factory.client_for("pod-garbage-collector"),
            pods: factory.informer::<Pod>().store(),
            nodes: factory.informer::<Node>().store(),
            settings,
            missing_since: Mutex::new(HashMap::new()),
        })
    }

    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.settings.period).await;
            self.collect().await;
        }
    }

    async fn collect(&self) {
        let pods = self.pods.state();
        self.collect_terminated(&pods).await;
        self.collect_orphaned(&pods).await;
        self.collect_unscheduled_terminating(&pods).await;
    }

    /// The oldest finished pods beyond the threshold.
    async fn collect_terminated(&self, pods: &[Arc<Pod>]) {
        let threshold = self.settings.terminated_threshold;
        if threshold == 0 {
            return;
        }
        let mut finished: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| matches!(crate::pods::phase(p), "Succeeded" | "Failed"))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if finished.len() <= threshold {
            return;
        }
        finished.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let excess = finished.len() - threshold;
        tracing::info!(excess, threshold, "garbage collecting finished pods");
        for pod in finished.into_iter().take(excess) {
            self.delete(pod, "finished pods over the threshold").await;
        }
    }

    /// Pods bound to nodes that are gone: after the quarantine, and once the API server
    /// confirms the node is gone, marked `DisruptionTarget` and deleted at once.
    async fn collect_orphaned(&self, pods: &[Arc<Pod>]) {
        let mut missing: Vec<String> = pods
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .filter(|n| !n.is_empty() && self.nodes.get(&ObjectRef::new(n)).is_none())
            .collect();
        missing.sort();
        missing.dedup();
        let due: Vec<String> = {
            let mut since = self.missing_since.lock().unwrap_or_else(|e| e.into_inner());
            since.retain(|node, _| missing.contains(node));
            for node in &missing {
                since.entry(node.clone()).or_insert_with(Instant::now);
            }
            since
                .iter()
                .filter(|(_, t)| t.elapsed() >= self.settings.quarantine)
                .map(|(n, _)| n.clone())
                .collect()
        };
        let nodes: Api<Node> = Api::all(self.client.clone());
        for node in due {
            match nodes.get_opt(&node).await {
                Ok(None) => {}
                // There after all (the cache lagged), or the API cannot say: keep the pods.
                _ => continue,
            }
            for pod in pods.iter().filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str())
            }) {
                crate::pods::mark_disruption_target(
                    &self.client,
                    pod,
                    "DeletionByPodGC",
                    "PodGC: node no longer exists",
                )
                .await;
                self.delete(pod, "bound to a node that no longer exists")
                    .await;
            }
        }
    }

    /// Pods being deleted that were never scheduled: nothing else will finish them.
    async fn collect_unscheduled_terminating(&self, pods: &[Arc<Pod>]) {
        for pod in pods.iter().filter(|p| {
            p.metadata.deletion_timestamp.is_some()
                && p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_none_or(str::is_empty)
        }) {
            self.delete(pod, "unscheduled and terminating").await;
        }
    }

    /// Deletes at once (no grace: no kubelet will act), only the pod that was judged.
    async fn delete(&self, pod: &Pod, why: &str) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        tracing::info!(pod = %key_of(pod), why, "garbage collecting pod");
        if let Err(e) = ignore_not_found(api.delete(&pod.name_any(), &params).await) {
            tracing::warn!(pod = %key_of(pod), error = %e, "could not delete pod");
        }
    }
}
