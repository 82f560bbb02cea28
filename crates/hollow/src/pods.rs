//! The pods bound to hollow nodes: one watch of every bound pod (a real kubelet watches
//! its own node's; thousands of watches would only measure the watch fan-out), and for
//! each pod of ours the next step of its lifecycle:
//!
//! - bound and Pending → Running: an address from the node's pod range (the node's own
//!   for `hostNetwork` pods), every container started and ready, init containers
//!   completed (sidecars running), conditions as a kubelet writes them;
//! - Running and ending (`restartPolicy` other than Always) → after `--pod-run-duration`
//!   every container exits 0 and the pod is Succeeded;
//! - deleted gracefully → deleted for good (grace period 0, the pod's uid as
//!   precondition), as a kubelet does once its containers have stopped;
//! - ended or gone → its address is free again.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use skiff_kubelet::status::{is_sidecar, pod_status, Attempt, ContainerView, PodView, RunState};

use crate::fleet::{Fleet, RUNTIME};
use crate::metrics::Operation;

/// Where a pod of ours is in its life, as far as this process has taken it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Its Running status is being written.
    Starting,
    /// Running (written by us, or found so after a restart).
    Running,
    /// Succeeded or Failed: its address is free.
    Ended,
    /// Its final delete is being sent.
    Deleting,
}

/// What to do about a pod, given what it says and where we took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start it: write it Running (and, if it ends, Succeeded later).
    Start,
    /// It runs already (this process restarted): hold its address; end it if it ends.
    Adopt,
    /// Complete its graceful deletion.
    Delete,
    /// It reached a terminal phase: free its address.
    Release,
    Nothing,
}

/// The pure decision: a pod's next step from the pod and its recorded stage.
pub fn next_step(pod: &Pod, stage: Option<Stage>) -> Step {
    if pod.metadata.deletion_timestamp.is_some() {
        return if stage == Some(Stage::Deleting) {
            Step::Nothing
        } else {
            Step::Delete
        };
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    match (phase, stage) {
        (Some("Succeeded" | "Failed"), Some(Stage::Ended)) => Step::Nothing,
        (Some("Succeeded" | "Failed"), _) => Step::Release,
        (Some("Running"), None) => Step::Adopt,
        (_, None) => Step::Start,
        _ => Step::Nothing,
    }
}

/// Whether a pod's containers run to completion rather than forever.
fn ends(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .is_some_and(|policy| policy != "Always")
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The status a kubelet would write for the pod with every container running
/// (`exited == false`) or every container exited 0 (`exited == true`).
pub fn simulated_status(
    pod: &Pod,
    pod_ip: &str,
    host_ip: &str,
    exited: bool,
    now: jiff::Timestamp,
) -> PodStatus {
    let now_ns = now.as_nanosecond() as i64;
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let attempt = |c: &Container, running: bool| Attempt {
        id: format!("{uid}-{}", c.name),
        attempt: 0,
        state: if running {
            RunState::Running
        } else {
            RunState::Exited
        },
        started_at: now_ns,
        finished_at: if running { 0 } else { now_ns },
        exit_code: 0,
        reason: if running { "" } else { "Completed" }.to_string(),
        message: String::new(),
        image_ref: c.image.clone().unwrap_or_default(),
        // No cgroup: a hollow node cannot resize, and its pods say so.
        cgroup: None,
    };
    let view = |c: &Container, sidecar: bool, running: bool| ContainerView {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        current: Some(attempt(c, running)),
        previous: None,
        waiting: None,
        ready: running,
        started: running,
        sidecar,
        allocation: None,
        actuated: None,
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let view = PodView {
        sandbox_ready: !exited,
        pod_ips: vec![pod_ip.to_string()],
        host_ip: host_ip.to_string(),
        init: spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let sidecar = is_sidecar(c);
                view(c, sidecar, sidecar && !exited)
            })
            .collect(),
        containers: spec
            .containers
            .iter()
            .map(|c| view(c, false, !exited))
            .collect(),
        ephemeral: Vec::new(),
        runtime_name: RUNTIME.into(),
        terminal: exited,
        resize: Default::default(),
    };
    pod_status(pod, &view, false, now)
}

/// Each pod of ours by uid: its node, its address (none for host-network pods), stage.
#[derive(Default)]
struct Tracker {
    pods: Mutex<HashMap<String, Tracked>>,
}

#[derive(Clone)]
struct Tracked {
    node: String,
    ip: Option<Ipv4Addr>,
    stage: Stage,
}

impl Tracker {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Tracked>) -> T) -> T {
        f(&mut self.pods.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Moves the pod from stage `from` to `to`; a pod that moved on meanwhile (its
    /// deletion began while its status was being written) stays where it is.
    fn advance(&self, uid: &str, from: Stage, to: Stage) {
        self.with(|pods| {
            if let Some(tracked) = pods.get_mut(uid).filter(|t| t.stage == from) {
                tracked.stage = to;
            }
        });
    }
}

/// Watches every bound pod and takes ours through their lifecycle until cancelled.
pub async fn run(fleet: Arc<Fleet>, run_duration: Duration) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(fleet.client().clone());
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let tracker = Arc::new(Tracker::default());
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                seen(&fleet, &tracker, pod, run_duration);
            }
            Ok(Event::Delete(pod)) => gone(&fleet, &tracker, &pod),
            Ok(Event::Init | Event::InitDone) => {}
            Err(error) => tracing::warn!(%error, "watching pods; retrying"),
        }
    }
    anyhow::bail!("the pod watch ended")
}

fn seen(fleet: &Arc<Fleet>, tracker: &Arc<Tracker>, pod: Pod, run_duration: Duration) {
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return;
    };
    let Some(node) = fleet.node(&node_name) else {
        return;
    };
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let stage = tracker.with(|pods| pods.get(&uid).map(|t| t.stage));
    match next_step(&pod, stage) {
        Step::Nothing => {}
        Step::Release => release(fleet, tracker, &uid, Stage::Ended),
        Step::Delete => {
            tracker.with(|pods| {
                pods.entry(uid.clone())
                    .or_insert_with(|| Tracked {
                        node: node_name.clone(),
                        ip: None,
                        stage: Stage::Deleting,
                    })
                    .stage = Stage::Deleting
            });
            tokio::spawn(delete(fleet.clone(), pod, uid));
        }
        Step::Adopt => {
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok())
                .filter(|_| !host_network(&pod));
            if let Some(ip) = ip {
                node.claim_pod_ip(ip);
            }
            tracker.with(|pods| {
                pods.insert(
                    uid.clone(),
                    Tracked {
                        node: node_name,
                        ip,
                        stage: Stage::Running,
                    },
                )
            });
            if ends(&pod) {
                tokio::spawn(finish(fleet.clone(), tracker.clone(), pod, run_duration));
            }
        }
        Step::Start => {
            let ip = if host_network(&pod) {
                None
            } else {
                match node.allocate_pod_ip() {
                    Some(ip) => Some(ip),
                    None => {
                        tracing::warn!(node = node_name, "no free pod address on the node");
                        return;
                    }
                }
            };
            tracker.with(|pods| {
                pods.insert(
                    uid.clone(),
                    Tracked {
                        node: node_name,
                        ip,
                        stage: Stage::Starting,
                    },
                )
            });
            tokio::spawn(start(fleet.clone(), tracker.clone(), pod, run_duration));
        }
    }
}

fn gone(fleet: &Fleet, tracker: &Tracker, pod: &Pod) {
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return;
    };
    if let Some(tracked) = tracker.with(|pods| pods.remove(uid)) {
        free(fleet, &tracked);
    }
}

/// Frees the pod's address and records `stage`.
fn release(fleet: &Fleet, tracker: &Tracker, uid: &str, stage: Stage) {
    let tracked = tracker.with(|pods| {
        let tracked = pods.get_mut(uid)?;
        tracked.stage = stage;
        let released = tracked.clone();
        tracked.ip = None;
        Some(released)
    });
    if let Some(tracked) = tracked {
        free(fleet, &tracked);
    }
}

fn free(fleet: &Fleet, tracked: &Tracked) {
    if let (Some(ip), Some(node)) = (tracked.ip, fleet.node(&tracked.node)) {
        node.release_pod_ip(ip);
    }
}

/// Writes the status a kubelet would write for `pod` with every container running
/// (`exited == false`) or every container exited 0, at the address the pod holds (its
/// node's own for a host-network pod); `None` when the pod or its node is gone.
async fn write_simulated(
    fleet: &Fleet,
    tracker: &Tracker,
    pod: &Pod,
    exited: bool,
) -> Result<Option<Pod>, kube::Error> {
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let Some(node) = node_name.and_then(|n| fleet.node(n)) else {
        return Ok(None);
    };
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let host_ip = node.config.node_ip.clone();
    let pod_ip = tracker
        .with(|pods| pods.get(uid).and_then(|t| t.ip))
        .map_or_else(|| host_ip.clone(), |ip| ip.to_string());
    let status = simulated_status(pod, &pod_ip, &host_ip, exited, jiff::Timestamp::now());
    let written = write_status(fleet, pod, status).await;
    let operation = if exited {
        Operation::PodSucceeded
    } else {
        Operation::PodRunning
    };
    fleet.metrics.request(operation, written.is_ok());
    written
}

async fn start(fleet: Arc<Fleet>, tracker: Arc<Tracker>, pod: Pod, run_duration: Duration) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    match write_simulated(&fleet, &tracker, &pod, false).await {
        Ok(Some(running)) => {
            tracker.advance(&uid, Stage::Starting, Stage::Running);
            if ends(&running) {
                finish(fleet, tracker, running, run_duration).await;
            }
        }
        // Deleted meanwhile: its delete event frees the address.
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(pod = pod_key(&pod), %error, "writing the Running status");
            // Forgotten, so that the pod's next event starts it again.
            if let Some(tracked) = tracker.with(|pods| pods.remove(&uid)) {
                free(&fleet, &tracked);
            }
        }
    }
}

/// Ends a running pod after the run duration: every container exits 0.
async fn finish(fleet: Arc<Fleet>, tracker: Arc<Tracker>, pod: Pod, run_duration: Duration) {
    tokio::time::sleep(run_duration).await;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if tracker.with(|pods| pods.get(&uid).map(|t| t.stage)) != Some(Stage::Running) {
        return;
    }
    match write_simulated(&fleet, &tracker, &pod, true).await {
        Ok(Some(_)) => release(&fleet, &tracker, &uid, Stage::Ended),
        Ok(None) => {}
        Err(error) => tracing::warn!(pod = pod_key(&pod), %error, "writing the Succeeded status"),
    }
}

/// Writes the pod's status; `None` when the pod is gone.
async fn write_status(
    fleet: &Fleet,
    pod: &Pod,
    status: PodStatus,
) -> Result<Option<Pod>, kube::Error> {
    let api: Api<Pod> = Api::namespaced(
        fleet.client().clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let patch = serde_json::json!({ "status": status });
    let _permit = fleet.permit().await;
    match api
        .patch_status(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(written) => Ok(Some(written)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The final delete of a gracefully deleted pod: grace period 0, for this pod only.
async fn delete(fleet: Arc<Fleet>, pod: Pod, uid: String) {
    let api: Api<Pod> = Api::namespaced(
        fleet.client().clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    let _permit = fleet.permit().await;
    let result = api
        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &params)
        .await;
    match result {
        Ok(_) => fleet.metrics.request(Operation::PodDelete, true),
        // Gone already, or another pod of that name now.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
            fleet.metrics.request(Operation::PodDelete, true)
        }
        Err(error) => {
            fleet.metrics.request(Operation::PodDelete, false);
            tracing::warn!(pod = pod_key(&pod), %error, "deleting the pod");
        }
    }
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).expect("pod")
    }

    fn bound(phase: &str, restart_policy: &str) -> Pod {
        pod(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {
                "nodeName": "hollow-node-0",
                "restartPolicy": restart_policy,
                "initContainers": [
                    {"name": "setup", "image": "busybox"},
                    {"name": "proxy", "image": "envoy", "restartPolicy": "Always"}
                ],
                "containers": [{"name": "app", "image": "nginx"}]
            },
            "status": {"phase": phase, "conditions": [
                {"type": "PodScheduled", "status": "True"}
            ]}
        }))
    }

    #[test]
    fn steps_through_the_lifecycle() {
        let pending = bound("Pending", "Always");
        assert_eq!(next_step(&pending, None), Step::Start);
        assert_eq!(next_step(&pending, Some(Stage::Starting)), Step::Nothing);
        let running = bound("Running", "Always");
        assert_eq!(next_step(&running, None), Step::Adopt);
        assert_eq!(next_step(&running, Some(Stage::Running)), Step::Nothing);
        let done = bound("Succeeded", "Never");
        assert_eq!(next_step(&done, Some(Stage::Running)), Step::Release);
        assert_eq!(next_step(&done, None), Step::Release);
        assert_eq!(next_step(&done, Some(Stage::Ended)), Step::Nothing);
        let mut deleted = bound("Running", "Always");
        deleted.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        assert_eq!(next_step(&deleted, Some(Stage::Running)), Step::Delete);
        assert_eq!(next_step(&deleted, None), Step::Delete);
        assert_eq!(next_step(&deleted, Some(Stage::Deleting)), Step::Nothing);
        assert!(ends(&bound("Running", "Never")));
        assert!(ends(&bound("Running", "OnFailure")));
        assert!(!ends(&bound("Running", "Always")));
    }

    #[test]
    fn running_status_is_what_a_kubelet_writes() {
        let status = simulated_status(
            &bound("Pending", "Always"),
            "10.128.0.2",
            "198.18.0.1",
            false,
            jiff::Timestamp::now(),
        );
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.128.0.2"));
        assert_eq!(status.host_ip.as_deref(), Some("198.18.0.1"));
        let conditions: HashMap<String, String> = status
            .conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect();
        for kind in [
            "PodScheduled",
            "PodReadyToStartContainers",
            "Initialized",
            "ContainersReady",
            "Ready",
        ] {
            assert_eq!(
                conditions.get(kind).map(String::as_str),
                Some("True"),
                "{kind}"
            );
        }
        let app = &status.container_statuses.as_ref().expect("statuses")[0];
        assert!(app.ready);
        assert!(app
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some());
        assert_eq!(app.container_id.as_deref(), Some("hollow://u1-app"));
        let init = status.init_container_statuses.as_ref().expect("init");
        let terminated = init[0].state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(
            terminated.map(|t| t.reason.as_deref()),
            Some(Some("Completed"))
        );
        assert!(init[1]
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some());
    }

    #[test]
    fn an_ending_pod_succeeds_with_every_container_exited_zero() {
        let status = simulated_status(
            &bound("Running", "Never"),
            "10.128.0.2",
            "198.18.0.1",
            true,
            jiff::Timestamp::now(),
        );
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        let app = &status.container_statuses.as_ref().expect("statuses")[0];
        let terminated = app.state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(terminated.map(|t| t.exit_code), Some(0));
        let ready = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("PodCompleted"))
        );
    }
}
