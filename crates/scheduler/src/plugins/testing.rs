//! Builders for plugin unit tests.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{json, Value};

use crate::cache::{NodeInfo, PodInfo};

/// A node with 4 cpu, 8Gi memory, 110 pods unless `with_status` replaces its status.
pub fn node(name: &str, spec: Value, labels: Value) -> NodeInfo {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
    }))
    .expect("node");
    NodeInfo::new(node)
}

pub trait NodeInfoExt {
    fn with_status(self, status: Value) -> NodeInfo;
}

impl NodeInfoExt for NodeInfo {
    fn with_status(self, status: Value) -> NodeInfo {
        let mut node = self.node().cloned().expect("node");
        node.status = Some(serde_json::from_value(status).expect("status"));
        let mut info = NodeInfo::new(node);
        for p in self.pods {
            info.add_pod(p);
        }
        info
    }
}

pub fn pod(spec: Value) -> PodInfo {
    pod_with("p", json!({}), spec)
}

pub fn pod_with(name: &str, labels: Value, spec: Value) -> PodInfo {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c"}]);
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": spec
    }))
    .expect("pod");
    PodInfo::new(Arc::new(pod))
}

/// A pod with the given cpu (millicores) and memory (MiB) requests.
pub fn sized(name: &str, milli_cpu: i64, mem_mib: i64) -> PodInfo {
    pod_with(
        name,
        json!({}),
        json!({"containers": [{"name": "c", "resources": {"requests": {
            "cpu": format!("{milli_cpu}m"), "memory": format!("{mem_mib}Mi")}}}]}),
    )
}
