//! `metrics.k8s.io/v1beta1`, served by the API server itself where upstream runs
//! metrics-server behind an aggregated API: `NodeMetrics` and `PodMetrics`, made when
//! asked from each node's kubelet Summary (`/stats/summary`), so `kubectl top` works.
//!
//! The kubelet samples every few seconds; CPU is the rate over its last sampling
//! period (the `window`), memory the working set, as metrics-server reports them. A pod
//! whose CPU has no rate yet (sampled once) is left out, as metrics-server leaves it.

use serde_json::{json, Value};

use crate::handlers::AppState;
use crate::registry::ListOptions;
use crate::resources::ResourceInfo;
use crate::selectors::LabelSelector;
use crate::status::{ApiError, ApiResult};

pub const GROUP: &str = "metrics.k8s.io";
const API_VERSION: &str = "metrics.k8s.io/v1beta1";
/// The kubelet's sampling period, which CPU rates span.
const WINDOW: &str = "5s";

/// A usage in metrics-server's quantities: CPU in nanocores, memory in KiB.
fn usage(cpu_nano_cores: u64, memory_bytes: u64) -> Value {
    json!({"cpu": format!("{cpu_nano_cores}n"), "memory": format!("{}Ki", memory_bytes / 1024)})
}

/// `(nanocores, working set bytes, sample time)` of a Summary entry with both known.
fn reading(entry: &Value) -> Option<(u64, u64, String)> {
    let cpu = entry["cpu"]["usageNanoCores"].as_u64()?;
    let memory = entry["memory"]["workingSetBytes"].as_u64()?;
    let time = entry["cpu"]["time"].as_str()?.to_string();
    Some((cpu, memory, time))
}

fn metadata(object: &Value) -> Value {
    let meta = &object["metadata"];
    let mut out = json!({
        "name": meta["name"],
        "creationTimestamp": jiff::Timestamp::now().to_string(),
    });
    if meta["namespace"].is_string() {
        out["namespace"] = meta["namespace"].clone();
    }
    if let Some(labels) = meta.get("labels").filter(|l| l.is_object()) {
        out["labels"] = labels.clone();
    }
    out
}

/// The node's metrics from its Summary, `None` if the kubelet has no rate yet.
fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let (cpu, memory, time) = reading(&summary["node"])?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata(node),
        "timestamp": time,
        "window": WINDOW,
        "usage": usage(cpu, memory),
    }))
}

/// A pod's metrics from its Summary entry, `None` while a container has no rate yet.
fn pod_metrics(pod: &Value, entry: &Value) -> Option<Value> {
    let mut containers = Vec::new();
    let mut time = None;
    for container in entry["containers"].as_array()? {
        let (cpu, memory, at) = reading(container)?;
        time.get_or_insert(at);
        containers.push(json!({"name": container["name"], "usage": usage(cpu, memory)}));
    }
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata(pod),
        "timestamp": time?,
        "window": WINDOW,
        "containers": containers,
    }))
}

async fn objects(
    state: &AppState,
    plural: &str,
    namespace: Option<&str>,
    selector: LabelSelector,
) -> ApiResult<Vec<Value>> {
    let resource = state.registry.core(plural)?;
    let options = ListOptions {
        label_selector: selector,
        ..Default::default()
    };
    let page = state.registry.list(&resource, namespace, &options).await?;
    page.items.iter().map(|o| o.value()).collect()
}

/// The Summary of every node, by node name; nodes whose kubelet cannot be reached are
/// left out (their metrics are unavailable, as with metrics-server).
async fn summaries(state: &AppState, nodes: &[String]) -> Vec<(String, Value)> {
    let reads = nodes.iter().map(|node| async move {
        match crate::proxy::kubelet_get_json(state, node, "/stats/summary").await {
            Ok(summary) => Some((node.clone(), summary)),
            Err(e) => {
                tracing::debug!(%node, error = %e.message, "no usage summary from the kubelet");
                None
            }
        }
    });
    futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// `GET` of `nodes` or `pods` in `metrics.k8s.io/v1beta1`, listed or by name.
pub async fn serve(
    state: &AppState,
    resource: &ResourceInfo,
    namespace: Option<&str>,
    name: Option<&str>,
    label_selector: LabelSelector,
) -> ApiResult<Value> {
    let items = if resource.plural == "nodes" {
        let nodes = objects(state, "nodes", None, label_selector).await?;
        let wanted: Vec<String> = nodes
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .filter(|n| name.is_none_or(|wanted| wanted == *n))
            .map(str::to_string)
            .collect();
        let summaries = summaries(state, &wanted).await;
        nodes
            .iter()
            .filter_map(|node| {
                let node_name = node["metadata"]["name"].as_str()?;
                let (_, summary) = summaries.iter().find(|(n, _)| n == node_name)?;
                node_metrics(node, summary)
            })
            .collect::<Vec<_>>()
    } else {
        let pods = objects(state, "pods", namespace, label_selector).await?;
        let pods: Vec<Value> = pods
            .into_iter()
            .filter(|p| name.is_none_or(|wanted| p["metadata"]["name"] == wanted))
            .collect();
        let mut nodes: Vec<String> = pods
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .map(str::to_string)
            .collect();
        nodes.sort();
        nodes.dedup();
        let summaries = summaries(state, &nodes).await;
        pods.iter()
            .filter_map(|pod| {
                let node = pod["spec"]["nodeName"].as_str()?;
                let (_, summary) = summaries.iter().find(|(n, _)| n == node)?;
                let entry = summary["pods"]
                    .as_array()?
                    .iter()
                    .find(|e| e["podRef"]["uid"] == pod["metadata"]["uid"])?;
                pod_metrics(pod, entry)
            })
            .collect()
    };
    match name {
        Some(name) => items
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::not_found(resource, name)),
        None => Ok(json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": API_VERSION,
            "metadata": {},
            "items": items,
        })),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pod_metrics_come_from_the_summary_as_metrics_server_writes_them() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1",
                                      "labels": {"app": "web"}}});
        let entry = json!({"podRef": {"uid": "u1"}, "containers": [
            {"name": "c", "cpu": {"time": "2026-12-05T10:00:00Z", "usageNanoCores": 1500000},
             "memory": {"workingSetBytes": 2097152}}]});
        let metrics = pod_metrics(&pod, &entry).unwrap();
        assert_eq!(
            metrics["containers"][0]["usage"],
            json!({"cpu": "1500000n", "memory": "2048Ki"})
        );
        assert_eq!(metrics["metadata"]["labels"]["app"], "web");
        assert_eq!(metrics["timestamp"], "2026-12-05T10:00:00Z");
        // A container sampled once has no CPU rate: the pod is left out.
        let first = json!({"containers": [{"name": "c", "cpu": {"usageCoreNanoSeconds": 5},
                                           "memory": {"workingSetBytes": 1}}]});
        assert!(pod_metrics(&pod, &first).is_none());
    }
}
