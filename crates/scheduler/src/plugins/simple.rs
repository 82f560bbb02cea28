//! The small node-local plugins: NodeName, NodeUnschedulable, NodePorts, TaintToleration,
//! NodeAffinity and ImageLocality.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::helpers::{term_matches, tolerated_by_any};
use crate::cache::{normalize_image, NodeInfo, PodInfo, Snapshot};
use crate::framework::{
    default_normalize, ClusterEvent, Code, CycleState, Plugin, Status, MAX_NODE_SCORE,
};

fn tolerations(pod: &PodInfo) -> &[Toleration] {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node()
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// `spec.nodeName`, if set, must name the node.
pub struct NodeName;

pub const ERR_NODE_NAME: &str = "node(s) didn't match the requested node name";

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd]
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(name) if !name.is_empty() && name != node.name => Status::new(
                Code::UnschedulableAndUnresolvable,
                self.name(),
                ERR_NODE_NAME,
            ),
            _ => Status::success(),
        }
    }
}

/// Cordoned nodes (`spec.unschedulable`) take only pods that tolerate
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub struct NodeUnschedulable;

pub const ERR_UNSCHEDULABLE: &str = "node(s) were unschedulable";

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let cordoned = node
            .node()
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        if cordoned && !tolerated_by_any(tolerations(pod), &taint) {
            return Status::new(
                Code::UnschedulableAndUnresolvable,
                self.name(),
                ERR_UNSCHEDULABLE,
            );
        }
        Status::success()
    }
}

/// Host ports the pod asks for must be free on the node.
pub struct NodePorts;

pub const ERR_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::AssignedPodDelete]
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let conflict = pod
            .host_ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if conflict {
            return Status::new(Code::Unschedulable, self.name(), ERR_PORTS);
        }
        Status::success()
    }
}

pub const ERR_TAINT: &str = "node(s) had untolerated taint(s)";

/// NoSchedule and NoExecute taints must be tolerated; untolerated PreferNoSchedule taints
/// lower the score.
pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let tolerations = tolerations(pod);
        let untolerated = taints(node).iter().find(|t| {
            matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
                && !tolerated_by_any(tolerations, t)
        });
        match untolerated {
            Some(t) => {
                // Upstream stopped naming the taint in the user-facing reason (it leaked
                // node configuration to anyone who can read pods); it logs it instead.
                tracing::trace!(node = %node.name, taint = %t.key, "untolerated taint");
                Status::new(Code::UnschedulableAndUnresolvable, self.name(), ERR_TAINT)
            }
            None => Status::success(),
        }
    }
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        // Only tolerations that can apply to PreferNoSchedule count (empty effect = all).
        let prefer: Vec<Toleration> = tolerations(pod)
            .iter()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .cloned()
            .collect();
        taints(node)
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule" && !tolerated_by_any(&prefer, t))
            .count() as i64
    }
    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        default_normalize(MAX_NODE_SCORE, true, scores);
    }
}

/// `nodeSelector` and required node affinity filter; preferred terms score.
pub struct NodeAffinity;

pub const ERR_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";

/// Whether the node satisfies the pod's `nodeSelector` and required node affinity
/// (also used by PodTopologySpread's `nodeAffinityPolicy: Honor`).
pub fn matches_required_node_affinity(pod: &PodInfo, node: &NodeInfo) -> bool {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return true;
    };
    let labels = node.labels();
    if let Some(selector) = spec.node_selector.as_ref() {
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match (required, node.node()) {
        (Some(sel), Some(n)) => sel.node_selector_terms.iter().any(|t| term_matches(t, n)),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
    fn events(&self) -> &'static [ClusterEvent] {
        &[ClusterEvent::NodeAdd, ClusterEvent::NodeUpdate]
    }
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if matches_required_node_affinity(pod, node) {
            Status::success()
        } else {
            Status::new(
                Code::UnschedulableAndUnresolvable,
                self.name(),
                ERR_AFFINITY,
            )
        }
    }
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot) -> i64 {
        let preferred = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        let (Some(preferred), Some(n)) = (preferred, node.node()) else {
            return 0;
        };
        preferred
            .iter()
            .filter(|t| t.weight != 0 && term_matches(&t.preference, n))
            .map(|t| i64::from(t.weight))
            .sum()
    }
    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        default_normalize(MAX_NODE_SCORE, false, scores);
    }
}

/// Prefers nodes that already have the pod's images, weighted by size and by how widely
/// the image is spread (so one node holding an image does not attract everything).
pub struct ImageLocality;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        "ImageLocality"
    }
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> i64 {
        let Some(spec) = pod.pod.spec.as_ref() else {
            return 0;
        };
        let total_nodes = snapshot.nodes.len().max(1) as f64;
        let containers: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .collect();
        let mut sum: i64 = 0;
        for c in &containers {
            let Some(image) = c.image.as_deref() else {
                continue;
            };
            let name = normalize_image(image);
            if let Some(size) = node.images.get(&name) {
                let spread = *snapshot.image_nodes.get(&name).unwrap_or(&1) as f64 / total_nodes;
                sum += (*size as f64 * spread) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * containers.len().max(1) as i64;
        let sum = sum.clamp(MIN_THRESHOLD, max);
        MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
    }
}

/// Kept for the plugin registry: every plugin constructor by upstream name.
pub fn arc<P: Plugin + 'static>(p: P) -> Arc<dyn Plugin> {
    Arc::new(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod, NodeInfoExt};
    use serde_json::json;

    fn filter(p: &dyn Plugin, pod: &PodInfo, node: &NodeInfo) -> Status {
        p.filter(&CycleState::default(), pod, node)
    }

    #[test]
    fn node_name() {
        let n = node("n1", json!({}), json!({}));
        assert!(filter(&NodeName, &pod(json!({"nodeName": "n1"})), &n).is_success());
        let s = filter(&NodeName, &pod(json!({"nodeName": "n2"})), &n);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, [ERR_NODE_NAME]);
    }

    #[test]
    fn unschedulable_unless_tolerated() {
        let n = node("n1", json!({"unschedulable": true}), json!({}));
        let s = filter(&NodeUnschedulable, &pod(json!({})), &n);
        assert_eq!(s.reasons, [ERR_UNSCHEDULABLE]);
        let tolerant = pod(json!({"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}));
        assert!(filter(&NodeUnschedulable, &tolerant, &n).is_success());
    }

    #[test]
    fn host_port_conflicts() {
        let mut n = node("n1", json!({}), json!({}));
        let used = pod(json!({"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}]}]}));
        n.add_pod(Arc::new(used));
        let same_ip = pod(json!({"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}]}]}));
        let other_ip = pod(json!({"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.2"}]}]}));
        let wildcard = pod(json!({"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "hostPort": 8080}]}]}));
        let udp = pod(json!({"containers": [{"name": "c", "ports": [
            {"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]}]}));
        assert_eq!(filter(&NodePorts, &same_ip, &n).reasons, [ERR_PORTS]);
        assert!(filter(&NodePorts, &other_ip, &n).is_success());
        assert!(!filter(&NodePorts, &wildcard, &n).is_success());
        assert!(filter(&NodePorts, &udp, &n).is_success());
    }

    #[test]
    fn taints_filter_and_score() {
        let n = node(
            "n1",
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
            json!({}),
        );
        let s = filter(&TaintToleration, &pod(json!({})), &n);
        assert_eq!(s.code, Code::UnschedulableAndUnresolvable);
        assert_eq!(s.reasons, [ERR_TAINT]);
        let ok = pod(
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu"}]}),
        );
        assert!(filter(&TaintToleration, &ok, &n).is_success());

        // PreferNoSchedule never filters; the node with more untolerated ones scores lower.
        let soft = |count: usize| {
            let taints: Vec<_> = (0..count)
                .map(|i| json!({"key": format!("k{i}"), "effect": "PreferNoSchedule"}))
                .collect();
            node("n", json!({"taints": taints}), json!({}))
        };
        let p = pod(
            json!({"tolerations": [{"key": "k0", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        let nodes = [soft(0), soft(1), soft(2)];
        assert!(filter(&TaintToleration, &p, &nodes[2]).is_success());
        let snap = Snapshot::default();
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| TaintToleration.score(&CycleState::default(), &p, n, &snap))
            .collect();
        assert_eq!(scores, [0, 1, 2]);
        TaintToleration.normalize(&CycleState::default(), &mut scores);
        assert_eq!(scores, [100, 50, 0]);
    }

    #[test]
    fn node_selector_and_affinity() {
        let n = node("n1", json!({}), json!({"zone": "a", "disk": "ssd"}));
        assert!(filter(
            &NodeAffinity,
            &pod(json!({"nodeSelector": {"zone": "a"}})),
            &n
        )
        .is_success());
        let s = filter(
            &NodeAffinity,
            &pod(json!({"nodeSelector": {"zone": "b"}})),
            &n,
        );
        assert_eq!(s.reasons, [ERR_AFFINITY]);
        let required = |terms: serde_json::Value| {
            pod(json!({"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}))
        };
        // Terms are ORed, expressions within a term ANDed.
        let p = required(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                  {"key": "disk", "operator": "Exists"}]}
        ]));
        assert!(filter(&NodeAffinity, &p, &n).is_success());
        let p = required(
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]),
        );
        assert!(!filter(&NodeAffinity, &p, &n).is_success());
        let p = required(json!([{}]));
        assert!(
            !filter(&NodeAffinity, &p, &n).is_success(),
            "an empty term matches nothing"
        );

        let preferred = pod(json!({"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 2, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 8, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}}
        ]}}}));
        let other = node("n2", json!({}), json!({"zone": "b", "disk": "hdd"}));
        let snap = Snapshot::default();
        let mut scores = vec![
            NodeAffinity.score(&CycleState::default(), &preferred, &n, &snap),
            NodeAffinity.score(&CycleState::default(), &preferred, &other, &snap),
        ];
        assert_eq!(scores, [2, 8]);
        NodeAffinity.normalize(&CycleState::default(), &mut scores);
        assert_eq!(scores, [25, 100]);
    }

    #[test]
    fn image_locality() {
        let with_image = |name: &str, size: i64| {
            node(name, json!({}), json!({})).with_status(json!({"images": [
                {"names": ["docker.io/library/big:1"], "sizeBytes": size}]}))
        };
        let a = with_image("a", 500 * MB);
        let b = node("b", json!({}), json!({}));
        let mut cache = crate::cache::Cache::default();
        for n in [&a, &b] {
            if let Some(node) = n.node() {
                cache.apply_node(node.clone());
            }
        }
        let snap = cache.snapshot();
        let p = pod(json!({"containers": [{"name": "c", "image": "big:1"}]}));
        let score = |n: &NodeInfo| ImageLocality.score(&CycleState::default(), &p, n, &snap);
        // 500MB spread over half the nodes = 250MB; (250-23)/(1000-23) of 100.
        assert_eq!(
            score(&a),
            100 * (250 * MB - MIN_THRESHOLD) / (MAX_CONTAINER_THRESHOLD - MIN_THRESHOLD)
        );
        assert_eq!(score(&b), 0);
    }
}
