//! The scheduler's view of the cluster: one [`NodeInfo`] per node with the pods placed on
//! it (bound or merely assumed), and cheap per-cycle [`Snapshot`]s of it.
//!
//! Node infos are kept behind `Arc`s and changed with `Arc::make_mut`, so a snapshot is a
//! vector of pointers and a change copies only the node it touches (upstream gets the same
//! effect with generation numbers and an incremental snapshot update).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::plugins::interpod_affinity::AffinityTerms;
use crate::resources::{pod_requests, Resource};

/// `namespace/name`, the key pods are known by everywhere in the scheduler.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// A host port a container asks for; an empty IP means every address (`0.0.0.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream's conflict rule: same protocol and port, and the same IP or either one
    /// the wildcard.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// A pod with what the scheduler derives from it, computed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: String,
    pub requests: Resource,
    /// Requests with upstream's non-zero defaults, for scoring.
    pub non_zero: Resource,
    pub host_ports: Vec<HostPort>,
    pub priority: i32,
    /// Pod affinity and anti-affinity terms; `None` if the pod has neither.
    pub affinity: Option<Arc<AffinityTerms>>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let mut host_ports = Vec::new();
        if let Some(spec) = pod.spec.as_ref() {
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            for c in spec.containers.iter().chain(sidecars) {
                for p in c.ports.iter().flatten() {
                    match p.host_port {
                        Some(port) if port > 0 => host_ports.push(HostPort {
                            ip: p
                                .host_ip
                                .clone()
                                .filter(|ip| !ip.is_empty())
                                .unwrap_or_else(|| "0.0.0.0".into()),
                            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                            port,
                        }),
                        _ => {}
                    }
                }
            }
        }
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        let affinity = AffinityTerms::of(
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.labels.as_ref().unwrap_or(&EMPTY),
            pod.spec.as_ref().and_then(|s| s.affinity.as_ref()),
        )
        .map(Arc::new);
        PodInfo {
            affinity,
            key: pod_key(&pod),
            requests: pod_requests(&pod, false),
            non_zero: pod_requests(&pod, true),
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            host_ports,
            pod,
        }
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.pod.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// One node and what is placed on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// `None` while pods name a node the scheduler has not seen (yet).
    pub node: Option<Arc<Node>>,
    pub name: String,
    pub pods: Vec<Arc<PodInfo>>,
    pub requested: Resource,
    pub non_zero_requested: Resource,
    pub allocatable: Resource,
    pub used_ports: Vec<HostPort>,
    /// Normalised image name → size in bytes, from `status.images`.
    pub images: HashMap<String, i64>,
    /// Pods with any pod affinity or anti-affinity, and those with required
    /// anti-affinity: InterPodAffinity skips nodes without them.
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    pub fn new(node: Node) -> NodeInfo {
        let mut info = NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            ..NodeInfo::default()
        };
        info.set_node(node);
        info
    }

    pub fn set_node(&mut self, node: Node) {
        let status = node.status.as_ref();
        self.allocatable = Resource::from_list(
            status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())),
        );
        self.images.clear();
        for image in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for name in image.names.iter().flatten() {
                self.images
                    .insert(normalize_image(name), image.size_bytes.unwrap_or(0));
            }
        }
        self.node = Some(Arc::new(node));
    }

    pub fn node(&self) -> Option<&Node> {
        self.node.as_deref()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&EMPTY)
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.milli_cpu += pod.non_zero.milli_cpu;
        self.non_zero_requested.memory += pod.non_zero.memory;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        let (with, anti) = affinity_counts(&pod);
        self.pods_with_affinity += with;
        self.pods_with_required_anti_affinity += anti;
        self.pods.push(pod);
    }

    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(at) = self.pods.iter().position(|p| p.key == key) else {
            return false;
        };
        let pod = self.pods.swap_remove(at);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.milli_cpu -= pod.non_zero.milli_cpu;
        self.non_zero_requested.memory -= pod.non_zero.memory;
        let (with, anti) = affinity_counts(&pod);
        self.pods_with_affinity -= with;
        self.pods_with_required_anti_affinity -= anti;
        for port in &pod.host_ports {
            if let Some(i) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(i);
            }
        }
        true
    }
}

/// (has pod affinity terms, has required anti-affinity terms) as 0 or 1.
fn affinity_counts(pod: &PodInfo) -> (usize, usize) {
    match &pod.affinity {
        Some(a) => (1, usize::from(!a.required_anti_affinity.is_empty())),
        None => (0, 0),
    }
}

/// Image names as the kubelet reports them: `nginx` → `docker.io/library/nginx:latest`.
pub fn normalize_image(name: &str) -> String {
    let (repo, tag) = match name.rsplit_once('@') {
        Some((repo, digest)) => (repo.to_string(), format!("@{digest}")),
        None => {
            let last = name.rsplit('/').next().unwrap_or(name);
            if last.contains(':') {
                let (r, t) = name.rsplit_once(':').unwrap_or((name, "latest"));
                (r.to_string(), format!(":{t}"))
            } else {
                (name.to_string(), ":latest".to_string())
            }
        }
    };
    let first = repo.split('/').next().unwrap_or("");
    let has_domain =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let repo = if has_domain {
        repo
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{repo}{tag}")
}

/// Pods nominated to nodes by preemption and not yet bound: the room their victims
/// left is theirs, so a pod of no higher priority is judged as if they were in place
/// (upstream's nominator).
#[derive(Debug, Clone, Default)]
pub struct Nominations {
    by_node: HashMap<String, Vec<Arc<PodInfo>>>,
    node_of: HashMap<String, String>,
}

impl Nominations {
    /// The node the pod with this key is nominated to.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.node_of.get(key).map(String::as_str)
    }

    /// The pods nominated to `node`.
    pub fn on(&self, node: &str) -> &[Arc<PodInfo>] {
        self.by_node.get(node).map_or(&[], Vec::as_slice)
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some(node) = self.node_of.remove(key) else {
            return false;
        };
        if let Some(pods) = self.by_node.get_mut(&node) {
            pods.retain(|p| p.key != key);
            if pods.is_empty() {
                self.by_node.remove(&node);
            }
        }
        true
    }

    fn add(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove(&pod.key);
        self.node_of.insert(pod.key.clone(), node.to_string());
        self.by_node.entry(node.to_string()).or_default().push(pod);
    }
}

/// What one scheduling cycle sees: every known node, in name order.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub nodes: Vec<Arc<NodeInfo>>,
    /// Pods nominated to nodes, whose room a pod of no higher priority may not take.
    pub nominated: Arc<Nominations>,
    /// Normalised image name → how many nodes have it (for ImageLocality's spread factor).
    pub image_nodes: Arc<HashMap<String, usize>>,
    /// Namespace name → its labels (InterPodAffinity's `namespaceSelector`s).
    pub namespace_labels: Arc<NamespaceLabels>,
    /// Controllers' selectors (PodTopologySpread's default constraints).
    pub selectors: Arc<Selectors>,
}

pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// The controllers whose selectors upstream's default spreading reads, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectingKind {
    Service,
    ReplicationController,
    ReplicaSet,
    StatefulSet,
}

/// What upstream's default topology spreading reads to find a pod's siblings: the
/// selectors of Services, ReplicationControllers, ReplicaSets and StatefulSets, each by
/// `namespace/name`.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    by_kind: HashMap<SelectingKind, HashMap<String, LabelSelector>>,
}

impl Selectors {
    pub fn get(&self, kind: SelectingKind, key: &str) -> Option<&LabelSelector> {
        self.by_kind.get(&kind)?.get(key)
    }

    /// Every selector of `kind` in `namespace`.
    pub fn in_namespace<'a>(
        &'a self,
        kind: SelectingKind,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a LabelSelector> + 'a {
        self.by_kind.get(&kind).into_iter().flat_map(move |m| {
            m.iter()
                .filter(move |(key, _)| key.split_once('/').is_some_and(|(ns, _)| ns == namespace))
                .map(|(_, selector)| selector)
        })
    }
}

impl Snapshot {
    pub fn get(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[derive(Debug)]
struct PlacedPod {
    node: String,
    assumed: bool,
}

/// Nodes and the pods placed on them, fed by the informers and by the scheduler's own
/// assumptions (a pod counts on its node from the moment it is chosen, not when the
/// binding comes back through the watch).
#[derive(Debug, Default)]
pub struct Cache {
    /// In name order, so that a snapshot is taken without sorting (taken after every
    /// change, it was the scheduler's largest cost at thousands of nodes).
    nodes: BTreeMap<String, Arc<NodeInfo>>,
    /// Normalised image name → how many nodes report it, kept as nodes change.
    image_nodes: Arc<HashMap<String, usize>>,
    pods: HashMap<String, PlacedPod>,
    namespaces: Arc<NamespaceLabels>,
    /// PodDisruptionBudgets by `namespace/name`, for preemption.
    pdbs: HashMap<String, Arc<PodDisruptionBudget>>,
    selectors: Arc<Selectors>,
    nominations: Arc<Nominations>,
    snapshot: Option<Arc<Snapshot>>,
}

impl Cache {
    /// Records that `pod` waits for room on `node` (its victims are going).
    pub fn nominate(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.snapshot = None;
        Arc::make_mut(&mut self.nominations).add(pod, node);
    }

    /// The pod no longer waits for a node (placed, deleted, or its nomination cleared).
    pub fn forget_nomination(&mut self, key: &str) {
        if self.nominations.node_of.contains_key(key) {
            self.snapshot = None;
            Arc::make_mut(&mut self.nominations).remove(key);
        }
    }

    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        self.snapshot = None;
        let entry = self.nodes.entry(name.to_string()).or_insert_with(|| {
            Arc::new(NodeInfo {
                name: name.to_string(),
                ..NodeInfo::default()
            })
        });
        Arc::make_mut(entry)
    }

    /// Adds or updates a node; returns the previous node object, if any.
    pub fn apply_node(&mut self, node: Node) -> Option<Arc<Node>> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.node_mut(&name);
        let old = info.node.take();
        let old_images: Vec<String> = match old {
            Some(_) => info.images.keys().cloned().collect(),
            None => Vec::new(),
        };
        info.set_node(node);
        let new_images: Vec<String> = info.images.keys().cloned().collect();
        self.count_images(&old_images, -1);
        self.count_images(&new_images, 1);
        old
    }

    /// Adds `delta` to the node count of each image.
    fn count_images(&mut self, images: &[String], delta: isize) {
        if images.is_empty() {
            return;
        }
        let counts = Arc::make_mut(&mut self.image_nodes);
        for image in images {
            let count = counts.entry(image.clone()).or_default();
            *count = count.saturating_add_signed(delta);
            if *count == 0 {
                counts.remove(image);
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        self.snapshot = None;
        if let Some(info) = self.nodes.get(name).filter(|n| n.node.is_some()) {
            let images: Vec<String> = info.images.keys().cloned().collect();
            self.count_images(&images, -1);
        }
        let has_pods = self.nodes.get(name).is_some_and(|n| !n.pods.is_empty());
        if has_pods {
            // Keep the pods' accounting until they are deleted, as upstream does.
            self.node_mut(name).node = None;
        } else {
            self.nodes.remove(name);
        }
    }

    /// Records a namespace's labels; returns whether they changed.
    pub fn apply_namespace(&mut self, name: &str, labels: BTreeMap<String, String>) -> bool {
        if self.namespaces.get(name) == Some(&labels) {
            return false;
        }
        self.snapshot = None;
        Arc::make_mut(&mut self.namespaces).insert(name.to_string(), labels);
        true
    }

    pub fn remove_namespace(&mut self, name: &str) {
        if self.namespaces.contains_key(name) {
            self.snapshot = None;
            Arc::make_mut(&mut self.namespaces).remove(name);
        }
    }

    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    /// Records (or with `None` forgets) the selector of a Service or controller.
    pub fn apply_selector(
        &mut self,
        kind: SelectingKind,
        key: &str,
        selector: Option<LabelSelector>,
    ) {
        self.snapshot = None;
        let by_key = Arc::make_mut(&mut self.selectors)
            .by_kind
            .entry(kind)
            .or_default();
        match selector {
            Some(selector) => by_key.insert(key.to_string(), selector),
            None => by_key.remove(key),
        };
    }

    pub fn selector_keys(&self, kind: SelectingKind) -> Vec<String> {
        self.selectors
            .by_kind
            .get(&kind)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn apply_pdb(&mut self, pdb: PodDisruptionBudget) {
        let key = format!(
            "{}/{}",
            pdb.metadata.namespace.as_deref().unwrap_or(""),
            pdb.metadata.name.as_deref().unwrap_or("")
        );
        self.pdbs.insert(key, Arc::new(pdb));
    }

    pub fn remove_pdb(&mut self, key: &str) {
        self.pdbs.remove(key);
    }

    pub fn pdb_keys(&self) -> Vec<String> {
        self.pdbs.keys().cloned().collect()
    }

    /// The budgets, in key order (upstream lists them in an arbitrary order; a fixed one
    /// keeps victim choice reproducible).
    pub fn pdbs(&self) -> Vec<Arc<PodDisruptionBudget>> {
        let mut keys: Vec<&String> = self.pdbs.keys().collect();
        keys.sort();
        keys.into_iter().map(|k| self.pdbs[k].clone()).collect()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Records a pod the API says is bound (or confirms an assumed one). Pods that have
    /// finished no longer hold resources and are dropped.
    pub fn apply_assigned_pod(&mut self, pod: Arc<Pod>) {
        let key = pod_key(&pod);
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        self.remove_pod(&key);
        let (Some(node), false) = (node, matches!(phase, Some("Succeeded" | "Failed"))) else {
            return;
        };
        self.node_mut(&node).add_pod(Arc::new(PodInfo::new(pod)));
        self.pods.insert(
            key,
            PlacedPod {
                node,
                assumed: false,
            },
        );
    }

    pub fn remove_pod(&mut self, key: &str) -> bool {
        let Some(placed) = self.pods.remove(key) else {
            return false;
        };
        let node = self.node_mut(&placed.node);
        node.remove_pod(key);
        if node.node.is_none() && node.pods.is_empty() {
            self.nodes.remove(&placed.node);
        }
        true
    }

    /// Counts the pod on `node` before its binding is confirmed.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove_pod(&pod.key);
        self.forget_nomination(&pod.key);
        self.pods.insert(
            pod.key.clone(),
            PlacedPod {
                node: node.to_string(),
                assumed: true,
            },
        );
        self.node_mut(node).add_pod(pod);
    }

    /// Undoes [`Cache::assume`] after a failed binding (a confirmed pod stays).
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|p| p.assumed) {
            self.remove_pod(key);
        }
    }

    /// Keys of pods the API has confirmed (not merely assumed).
    pub fn pod_keys(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, p)| !p.assumed)
            .map(|(k, _)| k.clone())
            .collect()
    }

    pub fn is_placed(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    pub fn snapshot(&mut self) -> Arc<Snapshot> {
        if let Some(s) = &self.snapshot {
            return s.clone();
        }
        let nodes: Vec<Arc<NodeInfo>> = self
            .nodes
            .values()
            .filter(|n| n.node.is_some())
            .cloned()
            .collect();
        let s = Arc::new(Snapshot {
            nodes,
            nominated: self.nominations.clone(),
            image_nodes: self.image_nodes.clone(),
            namespace_labels: self.namespaces.clone(),
            selectors: self.selectors.clone(),
        });
        self.snapshot = Some(s.clone());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshots_list_nodes_in_name_order_and_count_their_images() {
        let node = |name: &str, images: serde_json::Value| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"allocatable": {"cpu": "1"}, "images": images}
            }))
            .expect("node")
        };
        let nginx = json!([{"names": ["nginx:1.27"], "sizeBytes": 100}]);
        let mut cache = Cache::default();
        for name in ["n3", "n1", "n2"] {
            cache.apply_node(node(name, nginx.clone()));
        }
        let snapshot = cache.snapshot();
        let names: Vec<&str> = snapshot.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3"]);
        let image = normalize_image("nginx:1.27");
        assert_eq!(snapshot.image_nodes.get(&image), Some(&3));
        cache.remove_node("n1");
        cache.apply_node(node("n2", json!([])));
        cache.apply_node(node("n3", nginx));
        assert_eq!(cache.snapshot().image_nodes.get(&image), Some(&1));
        cache.remove_node("n3");
        assert!(cache.snapshot().image_nodes.is_empty());
        assert_eq!(cache.snapshot().nodes.len(), 1);
    }

    #[test]
    fn image_names_normalise_like_the_kubelet() {
        assert_eq!(normalize_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize_image("nginx:1.2"), "docker.io/library/nginx:1.2");
        assert_eq!(normalize_image("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            normalize_image("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_image("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
    }

    #[test]
    fn assumed_pods_count_until_forgotten_and_snapshots_are_copy_on_write() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}
        }))
        .expect("node");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}
        }))
        .expect("pod");
        let mut cache = Cache::default();
        cache.apply_node(node);
        let before = cache.snapshot();
        cache.assume(Arc::new(PodInfo::new(Arc::new(pod))), "n1");
        let after = cache.snapshot();
        assert_eq!(before.nodes[0].requested.milli_cpu, 0);
        assert_eq!(after.nodes[0].requested.milli_cpu, 500);
        assert_eq!(after.nodes[0].non_zero_requested.memory, 200 << 20);
        cache.forget("ns/p");
        assert_eq!(cache.snapshot().nodes[0].requested.milli_cpu, 0);
    }
}
