//! The kubelet's Prometheus metrics, with upstream's names, served at `/metrics` on the
//! kubelet's own HTTPS port (so `kubectl get --raw /api/v1/nodes/<node>/proxy/metrics`
//! reads them): every CRI call by operation (count, errors, duration), pod start-up
//! latency, pod worker sync durations, containers started, and the running pods and
//! containers, counted from the runtime when scraped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabel {
    operation_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContainerTypeLabel {
    container_type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContainerStateLabel {
    container_state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

type Durations = Family<OperationLabel, Histogram, fn() -> Histogram>;

/// Upstream's runtime-operation buckets: 5 ms, growing by 2.5 times, 14 of them.
fn operation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 14))
}

/// Every family of the kubelet.
#[derive(Debug)]
pub struct KubeletMetrics {
    runtime_operations: Family<OperationLabel, Counter>,
    runtime_errors: Family<OperationLabel, Counter>,
    runtime_durations: Durations,
    pod_start: Histogram,
    pod_worker: Durations,
    started_pods: Counter,
    started_containers: Family<ContainerTypeLabel, Counter>,
    running_pods: Gauge,
    running_containers: Family<ContainerStateLabel, Gauge>,
    registry: Registry,
}

impl KubeletMetrics {
    pub fn new(node_name: &str) -> KubeletMetrics {
        let runtime_operations = Family::<OperationLabel, Counter>::default();
        let runtime_errors = Family::<OperationLabel, Counter>::default();
        let runtime_durations: Durations = Family::new_with_constructor(operation_histogram);
        // Upstream's pod start-up buckets: 0.5 s to 1 h.
        let pod_start = Histogram::new([
            0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0,
            240.0, 300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
        ]);
        let pod_worker: Durations = Family::new_with_constructor(operation_histogram);
        let started_pods = Counter::default();
        let started_containers = Family::<ContainerTypeLabel, Counter>::default();
        let running_pods = Gauge::default();
        let running_containers = Family::<ContainerStateLabel, Gauge>::default();
        let node = Family::<NodeLabel, Gauge>::default();
        node.get_or_create(&NodeLabel {
            node: node_name.to_string(),
        })
        .set(1);
        let mut registry = Registry::default();
        let kubelet = registry.sub_registry_with_prefix("kubelet");
        kubelet.register(
            "runtime_operations",
            "Cumulative number of runtime operations by operation type",
            runtime_operations.clone(),
        );
        kubelet.register(
            "runtime_operations_errors",
            "Cumulative number of runtime operation errors by operation type",
            runtime_errors.clone(),
        );
        kubelet.register_with_unit(
            "runtime_operations_duration",
            "Duration in seconds of runtime operations, by operation type",
            Unit::Seconds,
            runtime_durations.clone(),
        );
        kubelet.register_with_unit(
            "pod_start_duration",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
            Unit::Seconds,
            pod_start.clone(),
        );
        kubelet.register_with_unit(
            "pod_worker_duration",
            "Duration in seconds to sync a single pod, by operation type: create, sync or kill",
            Unit::Seconds,
            pod_worker.clone(),
        );
        kubelet.register(
            "started_pods",
            "Cumulative number of pods started (sandboxes run)",
            started_pods.clone(),
        );
        kubelet.register(
            "started_containers",
            "Cumulative number of containers started, by container type",
            started_containers.clone(),
        );
        kubelet.register(
            "running_pods",
            "Number of pods that have a running pod sandbox",
            running_pods.clone(),
        );
        kubelet.register(
            "running_containers",
            "Number of containers currently running, by state",
            running_containers.clone(),
        );
        kubelet.register("node_name", "The node's name. The count is always 1.", node);
        KubeletMetrics {
            runtime_operations,
            runtime_errors,
            runtime_durations,
            pod_start,
            pod_worker,
            started_pods,
            started_containers,
            running_pods,
            running_containers,
            registry,
        }
    }

    /// Records one CRI call.
    fn runtime_call(&self, operation: String, took: Duration, failed: bool) {
        let label = OperationLabel {
            operation_type: operation,
        };
        self.runtime_operations.get_or_create(&label).inc();
        if failed {
            self.runtime_errors.get_or_create(&label).inc();
        }
        self.runtime_durations
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// A pod seen `since` ago runs for the first time.
    pub fn pod_started_running(&self, since: Duration) {
        self.pod_start.observe(since.as_secs_f64());
    }

    /// One pass of a pod's worker (`create` the first, `sync` later ones, `kill` to stop).
    pub fn pod_worker_pass(&self, operation: &str, took: Duration) {
        self.pod_worker
            .get_or_create(&OperationLabel {
                operation_type: operation.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn sandbox_started(&self) {
        self.started_pods.inc();
    }

    /// A container started: `container` (app), `init_container` or `ephemeral_container`.
    pub fn container_started(&self, container_type: &'static str) {
        self.started_containers
            .get_or_create(&ContainerTypeLabel { container_type })
            .inc();
    }

    /// The text exposition, with the running pods and containers as the runtime lists
    /// them now (sandboxes ready; containers by state).
    pub async fn render(&self, cri: &crate::cri::Cri) -> String {
        match cri.sandboxes(None).await {
            Ok(sandboxes) => {
                let ready = sandboxes
                    .iter()
                    .filter(|s| {
                        s.state == skiff_runtime::proto::PodSandboxState::SandboxReady as i32
                    })
                    .count();
                self.running_pods.set(ready as i64);
            }
            Err(error) => tracing::debug!(%error, "metrics: listing sandboxes failed"),
        }
        match cri.all_containers().await {
            Ok(containers) => {
                use skiff_runtime::proto::ContainerState;
                for state in [
                    ("created", ContainerState::ContainerCreated),
                    ("running", ContainerState::ContainerRunning),
                    ("exited", ContainerState::ContainerExited),
                    ("unknown", ContainerState::ContainerUnknown),
                ] {
                    let count = containers
                        .iter()
                        .filter(|c| c.state == state.1 as i32)
                        .count();
                    self.running_containers
                        .get_or_create(&ContainerStateLabel {
                            container_state: state.0,
                        })
                        .set(count as i64);
                }
            }
            Err(error) => tracing::debug!(%error, "metrics: listing containers failed"),
        }
        skiff_metrics::render(&self.registry)
    }
}

/// Upstream's `operation_type` for a CRI method path (`/runtime.v1.RuntimeService/RunPodSandbox`
/// → `run_podsandbox`).
fn operation_type(path: &str) -> String {
    let method = path.rsplit('/').next().unwrap_or_default();
    let mut snake = String::with_capacity(method.len() + 4);
    for (i, c) in method.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake.replace("pod_sandbox", "podsandbox")
}

/// A CRI channel that records every call in the kubelet's metrics.
#[derive(Clone)]
pub struct InstrumentedChannel {
    inner: tonic::transport::Channel,
    metrics: Option<Arc<KubeletMetrics>>,
}

impl InstrumentedChannel {
    pub fn new(inner: tonic::transport::Channel, metrics: Option<Arc<KubeletMetrics>>) -> Self {
        InstrumentedChannel { inner, metrics }
    }
}

type ResponseFuture = Pin<
    Box<
        dyn Future<Output = Result<http::Response<tonic::body::Body>, tonic::transport::Error>>
            + Send,
    >,
>;

impl tower::Service<http::Request<tonic::body::Body>> for InstrumentedChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let operation = operation_type(request.uri().path());
        let call = self.inner.call(request);
        let Some(metrics) = self.metrics.clone() else {
            return Box::pin(call);
        };
        let started = Instant::now();
        Box::pin(async move {
            let outcome = call.await;
            // A failed unary call answers with its status in the headers (a
            // trailers-only response); a transport failure is an error too.
            let failed = match &outcome {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .is_some_and(|status| status != "0"),
                Err(_) => true,
            };
            metrics.runtime_call(operation, started.elapsed(), failed);
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_types_as_upstream_names_them() {
        for (path, name) in [
            ("/runtime.v1.RuntimeService/RunPodSandbox", "run_podsandbox"),
            (
                "/runtime.v1.RuntimeService/ListPodSandbox",
                "list_podsandbox",
            ),
            (
                "/runtime.v1.RuntimeService/PodSandboxStatus",
                "podsandbox_status",
            ),
            (
                "/runtime.v1.RuntimeService/CreateContainer",
                "create_container",
            ),
            ("/runtime.v1.RuntimeService/ExecSync", "exec_sync"),
            ("/runtime.v1.ImageService/PullImage", "pull_image"),
            ("/runtime.v1.ImageService/ImageFsInfo", "image_fs_info"),
        ] {
            assert_eq!(operation_type(path), name);
        }
    }

    #[test]
    fn records_calls_and_pod_starts() {
        let metrics = KubeletMetrics::new("node-a");
        metrics.runtime_call("run_podsandbox".into(), Duration::from_millis(30), false);
        metrics.runtime_call("pull_image".into(), Duration::from_millis(5), true);
        metrics.pod_started_running(Duration::from_millis(1500));
        metrics.container_started("container");
        let text = skiff_metrics::render(&metrics.registry);
        for line in [
            r#"kubelet_runtime_operations_total{operation_type="run_podsandbox"} 1"#,
            r#"kubelet_runtime_operations_errors_total{operation_type="pull_image"} 1"#,
            r#"kubelet_runtime_operations_duration_seconds_count{operation_type="run_podsandbox"} 1"#,
            "kubelet_pod_start_duration_seconds_count 1",
            r#"kubelet_started_containers_total{container_type="container"} 1"#,
            r#"kubelet_node_name{node="node-a"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
