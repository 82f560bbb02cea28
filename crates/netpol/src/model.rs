//! NetworkPolicies reduced to what one node enforces: for each pod on the node, whether
//! it is isolated for ingress and for egress, and the clauses that allow traffic then.
//!
//! The semantics are networking.k8s.io/v1's:
//! - a pod is isolated for ingress (egress) once a policy of its namespace selects it and
//!   lists `Ingress` (`Egress`) in `policyTypes`; without `policyTypes` a policy is of
//!   type `Ingress`, and also of type `Egress` if it has egress rules;
//! - traffic to (from) an isolated pod is allowed when any rule of any selecting policy
//!   allows it: policies only add;
//! - a rule's peers: none listed means every peer; `podSelector` alone means pods of the
//!   policy's namespace; `namespaceSelector` alone means every pod of the matching
//!   namespaces; both means the matching pods in the matching namespaces; `ipBlock` is a
//!   CIDR less its `except` CIDRs;
//! - a rule's ports: none listed means every port and protocol; a port without a number
//!   means every port of its protocol (TCP by default); `endPort` makes a range; a named
//!   port is resolved against the container ports of the pod receiving the traffic — the
//!   selected pod for ingress, each destination pod for egress.
//!
//! Peer pods are every pod of the cluster with an IPv4 address that is neither on the
//! host network nor finished; targets are those of them on this node.
//!
//! [`Model::allows`] answers "would this connection be allowed", which the unit tests
//! use to pin the semantics; [`crate::nftables::render`] turns the same model into rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_proxy::Ipv4Cidr;

use crate::selector;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Kubernetes spells protocols upper case and defaults them to TCP.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The name nftables uses.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// One protocol's ports: `None` for all of them, else an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortMatch {
    pub protocol: Protocol,
    pub range: Option<(u16, u16)>,
}

impl PortMatch {
    fn matches(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol == protocol
            && self
                .range
                .is_none_or(|(first, last)| first <= port && port <= last)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ports {
    /// The rule listed no ports.
    Any,
    /// Never empty: a rule whose ports all failed to resolve yields no clause.
    Only(Vec<PortMatch>),
}

impl Ports {
    fn matches(&self, protocol: Protocol, port: u16) -> bool {
        match self {
            Ports::Any => true,
            Ports::Only(list) => list.iter().any(|p| p.matches(protocol, port)),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Any,
    /// Pod addresses, in [`Model::peer_sets`] under this name (shared between the pods a
    /// policy selects).
    Pods(String),
    /// An `ipBlock`: `cidr` less every `except`.
    Block {
        cidr: Ipv4Cidr,
        except: Vec<Ipv4Cidr>,
    },
}

/// Traffic with `peer` on `ports` is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clause {
    pub peer: Peer,
    pub ports: Ports,
}

/// What one pod of this node is subject to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRules {
    pub ip: Ipv4Addr,
    /// `None`: not isolated for ingress; `Some(clauses)`: only what a clause allows
    /// (nothing, when empty).
    pub ingress: Option<Vec<Clause>>,
    pub egress: Option<Vec<Clause>>,
}

impl PodRules {
    pub fn rules(&self, direction: Direction) -> Option<&[Clause]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// Everything this node enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    /// This node's pods that some policy isolates, by `namespace/name`.
    pub pods: BTreeMap<String, PodRules>,
    /// Named sets of peer pod addresses.
    pub peer_sets: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// Policies seen, for metrics.
    pub policies: usize,
}

impl Model {
    /// Whether a new connection from `src` to `dst` on `protocol`/`port` is allowed by
    /// the policies this node enforces (its pods' egress and ingress).
    /// A pod reaching itself (through a Service) is always allowed.
    pub fn allows(&self, src: Ipv4Addr, dst: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        if src == dst {
            return true;
        }
        let permitted = |pod: Ipv4Addr, peer: Ipv4Addr, direction: Direction| {
            let Some(rules) = self.pods.values().find(|p| p.ip == pod) else {
                return true;
            };
            let Some(clauses) = rules.rules(direction) else {
                return true;
            };
            clauses
                .iter()
                .any(|c| c.ports.matches(protocol, port) && self.peer_matches(&c.peer, peer))
        };
        permitted(src, dst, Direction::Egress) && permitted(dst, src, Direction::Ingress)
    }

    fn peer_matches(&self, peer: &Peer, ip: Ipv4Addr) -> bool {
        match peer {
            Peer::Any => true,
            Peer::Pods(set) => self.peer_sets.get(set).is_some_and(|s| s.contains(&ip)),
            Peer::Block { cidr, except } => {
                cidr.contains(ip) && !except.iter().any(|e| e.contains(ip))
            }
        }
    }
}

/// A pod as policies see it.
#[derive(Clone, Copy)]
struct PodView<'a> {
    namespace: &'a str,
    name: &'a str,
    labels: Option<&'a BTreeMap<String, String>>,
    ip: Ipv4Addr,
    node: Option<&'a str>,
    pod: &'a Pod,
}

impl PodView<'_> {
    /// The number a named container port has in this pod, as upstream resolves it: the
    /// first container port of that name and protocol.
    fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        let spec = self.pod.spec.as_ref()?;
        spec.containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name)
                    && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
            })
            .and_then(|p| u16::try_from(p.container_port).ok())
    }
}

fn pod_view(pod: &Pod) -> Option<PodView<'_>> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .find_map(|ip| ip.parse::<Ipv4Addr>().ok())?;
    Some(PodView {
        namespace: pod.metadata.namespace.as_deref()?,
        name: pod.metadata.name.as_deref()?,
        labels: pod.metadata.labels.as_ref(),
        ip,
        node: spec.node_name.as_deref(),
        pod,
    })
}

/// `policyTypes`, defaulted as the API server does for objects stored without them.
pub fn policy_types(policy: &NetworkPolicy) -> BTreeSet<Direction> {
    let Some(spec) = &policy.spec else {
        return BTreeSet::from([Direction::Ingress]);
    };
    match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => types
            .iter()
            .filter_map(|t| match t.as_str() {
                "Ingress" => Some(Direction::Ingress),
                "Egress" => Some(Direction::Egress),
                _ => None,
            })
            .collect(),
        _ => {
            let mut types = BTreeSet::from([Direction::Ingress]);
            if spec.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                types.insert(Direction::Egress);
            }
            types
        }
    }
}

/// A CIDR with its host bits cleared, which nft insists on.
fn parse_cidr(s: &str) -> Option<Ipv4Cidr> {
    let cidr: Ipv4Cidr = s.parse().ok()?;
    let mask = if cidr.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(cidr.prefix))
    };
    Some(Ipv4Cidr {
        addr: Ipv4Addr::from(u32::from(cidr.addr) & mask),
        prefix: cidr.prefix,
    })
}

struct Builder<'a> {
    pods: Vec<PodView<'a>>,
    namespaces: BTreeMap<&'a str, Option<&'a BTreeMap<String, String>>>,
    peer_sets: BTreeMap<String, BTreeSet<Ipv4Addr>>,
}

/// How one peer of a rule reads.
enum PeerKind<'a> {
    Any,
    Selected(&'a NetworkPolicyPeer),
    Block(Ipv4Cidr, Vec<Ipv4Cidr>),
}

impl<'a> Builder<'a> {
    fn peer_kinds<'p>(peers: Option<&'p Vec<NetworkPolicyPeer>>) -> Vec<PeerKind<'p>> {
        let Some(peers) = peers.filter(|p| !p.is_empty()) else {
            return vec![PeerKind::Any];
        };
        peers
            .iter()
            .filter_map(|peer| match &peer.ip_block {
                Some(block) => {
                    // An IPv6 or malformed block cannot match IPv4 traffic; skipping it
                    // keeps the rest of the rule.
                    let cidr = parse_cidr(&block.cidr)?;
                    let except = block
                        .except
                        .iter()
                        .flatten()
                        .filter_map(|e| parse_cidr(e))
                        .collect();
                    Some(PeerKind::Block(cidr, except))
                }
                None => Some(PeerKind::Selected(peer)),
            })
            .collect()
    }

    /// Whether `pod` is one of the pods `peer` (a selector peer of a policy in
    /// `policy_ns`) names.
    fn selects(&self, policy_ns: &str, peer: &NetworkPolicyPeer, pod: &PodView<'_>) -> bool {
        let namespace_ok = match &peer.namespace_selector {
            None => pod.namespace == policy_ns,
            Some(sel) => {
                // A namespace the watch has not delivered yet has no labels we know of.
                let labels = self.namespaces.get(pod.namespace).copied().flatten();
                selector::matches(sel, labels)
            }
        };
        let pod_ok = peer
            .pod_selector
            .as_ref()
            .is_none_or(|sel| selector::matches(sel, pod.labels));
        namespace_ok && pod_ok && (peer.namespace_selector.is_some() || peer.pod_selector.is_some())
    }

    fn peer_pods(&self, policy_ns: &str, kind: &PeerKind<'_>) -> Vec<&PodView<'a>> {
        self.pods
            .iter()
            .filter(|pod| match kind {
                PeerKind::Any => true,
                PeerKind::Selected(peer) => self.selects(policy_ns, peer, pod),
                PeerKind::Block(cidr, except) => {
                    cidr.contains(pod.ip) && !except.iter().any(|e| e.contains(pod.ip))
                }
            })
            .collect()
    }

    /// The clauses one rule contributes for `target`.
    fn rule_clauses(
        &mut self,
        policy_ns: &str,
        set_base: &str,
        direction: Direction,
        peers: Option<&Vec<NetworkPolicyPeer>>,
        ports: Option<&Vec<NetworkPolicyPort>>,
        target: &PodView<'_>,
    ) -> Vec<Clause> {
        let kinds = Self::peer_kinds(peers);
        let mut numeric = Vec::new();
        let mut named = Vec::new();
        let listed = ports.is_some_and(|p| !p.is_empty());
        for port in ports.into_iter().flatten() {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                continue;
            };
            match &port.port {
                None => numeric.push(PortMatch {
                    protocol,
                    range: None,
                }),
                Some(IntOrString::Int(n)) => {
                    let Ok(first) = u16::try_from(*n) else {
                        continue;
                    };
                    let last = port
                        .end_port
                        .and_then(|e| u16::try_from(e).ok())
                        .filter(|e| *e >= first)
                        .unwrap_or(first);
                    numeric.push(PortMatch {
                        protocol,
                        range: Some((first, last)),
                    });
                }
                Some(IntOrString::String(name)) => match direction {
                    // The receiving pod is the target itself: resolve now.
                    Direction::Ingress => {
                        if let Some(n) = target.named_port(name, protocol) {
                            numeric.push(PortMatch {
                                protocol,
                                range: Some((n, n)),
                            });
                        }
                    }
                    Direction::Egress => named.push((protocol, name.as_str())),
                },
            }
        }

        let mut clauses = Vec::new();
        let numeric_ports = if !listed {
            Some(Ports::Any)
        } else if numeric.is_empty() {
            None
        } else {
            Some(Ports::Only(numeric))
        };
        if let Some(ports) = numeric_ports {
            let mut selected = BTreeSet::new();
            let mut any_selected = false;
            for kind in &kinds {
                match kind {
                    PeerKind::Any => clauses.push(Clause {
                        peer: Peer::Any,
                        ports: ports.clone(),
                    }),
                    PeerKind::Block(cidr, except) => clauses.push(Clause {
                        peer: Peer::Block {
                            cidr: *cidr,
                            except: except.clone(),
                        },
                        ports: ports.clone(),
                    }),
                    PeerKind::Selected(_) => {
                        any_selected = true;
                        selected.extend(self.peer_pods(policy_ns, kind).iter().map(|p| p.ip));
                    }
                }
            }
            if any_selected {
                let name = format!("{set_base}/peers");
                self.peer_sets.insert(name.clone(), selected);
                clauses.push(Clause {
                    peer: Peer::Pods(name),
                    ports,
                });
            }
        }

        // An egress named port means a different number at each destination pod: the
        // peers are grouped by the number their container port of that name has.
        for (protocol, port_name) in named {
            let mut by_number: BTreeMap<u16, BTreeSet<Ipv4Addr>> = BTreeMap::new();
            for kind in &kinds {
                for pod in self.peer_pods(policy_ns, kind) {
                    if let Some(n) = pod.named_port(port_name, protocol) {
                        by_number.entry(n).or_default().insert(pod.ip);
                    }
                }
            }
            for (n, ips) in by_number {
                let name = format!("{set_base}/{}-{port_name}-{n}", protocol.nft());
                self.peer_sets.insert(name.clone(), ips);
                clauses.push(Clause {
                    peer: Peer::Pods(name),
                    ports: Ports::Only(vec![PortMatch {
                        protocol,
                        range: Some((n, n)),
                    }]),
                });
            }
        }
        clauses
    }
}

/// Reduces the API objects to what `node` enforces.
pub fn build<'a>(
    policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    pods: impl IntoIterator<Item = &'a Pod>,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    node: &str,
) -> Model {
    let mut builder = Builder {
        pods: pods.into_iter().filter_map(pod_view).collect(),
        namespaces: namespaces
            .into_iter()
            .filter_map(|ns| Some((ns.metadata.name.as_deref()?, ns.metadata.labels.as_ref())))
            .collect(),
        peer_sets: BTreeMap::new(),
    };
    // Sorted, so the rendered rules do not depend on the order of the watch's cache.
    let mut policies: Vec<&NetworkPolicy> = policies.into_iter().collect();
    policies.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    builder
        .pods
        .sort_by(|a, b| (a.namespace, a.name).cmp(&(b.namespace, b.name)));

    let mut model = Model {
        policies: policies.len(),
        ..Model::default()
    };
    let mut taken_ips = BTreeSet::new();
    let targets: Vec<usize> = (0..builder.pods.len())
        .filter(|&i| builder.pods[i].node == Some(node))
        .collect();
    for i in targets {
        let target = builder.pods[i];
        // Two live pods cannot share an address; if the cache briefly says so, the
        // dispatch map can hold only one.
        if !taken_ips.insert(target.ip) {
            continue;
        }
        let mut ingress: Option<Vec<Clause>> = None;
        let mut egress: Option<Vec<Clause>> = None;
        for policy in &policies {
            let (Some(ns), Some(name)) = (&policy.metadata.namespace, &policy.metadata.name) else {
                continue;
            };
            if ns != target.namespace {
                continue;
            }
            let spec = policy.spec.clone().unwrap_or_default();
            let pod_selector = spec.pod_selector.clone().unwrap_or_default();
            if !selector::matches(&pod_selector, target.labels) {
                continue;
            }
            let types = policy_types(policy);
            if types.contains(&Direction::Ingress) {
                let clauses = ingress.get_or_insert_with(Vec::new);
                for (r, rule) in spec.ingress.iter().flatten().enumerate() {
                    clauses.extend(builder.rule_clauses(
                        ns,
                        &format!("{ns}/{name}/ingress/{r}"),
                        Direction::Ingress,
                        rule.from.as_ref(),
                        rule.ports.as_ref(),
                        &target,
                    ));
                }
            }
            if types.contains(&Direction::Egress) {
                let clauses = egress.get_or_insert_with(Vec::new);
                for (r, rule) in spec.egress.iter().flatten().enumerate() {
                    clauses.extend(builder.rule_clauses(
                        ns,
                        &format!("{ns}/{name}/egress/{r}"),
                        Direction::Egress,
                        rule.to.as_ref(),
                        rule.ports.as_ref(),
                        &target,
                    ));
                }
            }
        }
        if ingress.is_some() || egress.is_some() {
            model.pods.insert(
                format!("{}/{}", target.namespace, target.name),
                PodRules {
                    ip: target.ip,
                    ingress,
                    egress,
                },
            );
        }
    }
    model.peer_sets = builder.peer_sets;
    model
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{json, Value};

    pub(crate) fn pod(ns: &str, name: &str, labels: Value, ip: &str, node: &str) -> Pod {
        pod_with_ports(ns, name, labels, ip, node, json!([]))
    }

    pub(crate) fn pod_with_ports(
        ns: &str,
        name: &str,
        labels: Value,
        ip: &str,
        node: &str,
        ports: Value,
    ) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
        }))
        .expect("pod")
    }

    pub(crate) fn namespace(name: &str, labels: Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
            .expect("namespace")
    }

    pub(crate) fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
            .expect("policy")
    }

    const A1: &str = "10.88.0.11"; // ns a, app=web, on node1
    const A2: &str = "10.88.0.12"; // ns a, app=client, on node1
    const B1: &str = "10.88.0.21"; // ns b, app=client, on node1
    const C1: &str = "10.88.0.31"; // ns c, app=client, on node2
    const EXT: &str = "192.0.2.7";

    struct World {
        pods: Vec<Pod>,
        namespaces: Vec<Namespace>,
    }

    fn world() -> World {
        World {
            pods: vec![
                pod_with_ports(
                    "a",
                    "web",
                    json!({"app": "web"}),
                    A1,
                    "node1",
                    json!([{"name": "http", "containerPort": 8080},
                           {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]),
                ),
                pod_with_ports(
                    "a",
                    "client",
                    json!({"app": "client"}),
                    A2,
                    "node1",
                    json!([{"name": "http", "containerPort": 9090}]),
                ),
                pod("b", "client", json!({"app": "client"}), B1, "node1"),
                pod("c", "client", json!({"app": "client"}), C1, "node2"),
            ],
            namespaces: vec![
                namespace("a", json!({"team": "x"})),
                namespace("b", json!({"team": "y", "env": "prod"})),
                namespace("c", json!({"team": "x"})),
            ],
        }
    }

    impl World {
        fn model(&self, policies: &[NetworkPolicy]) -> Model {
            build(policies, &self.pods, &self.namespaces, "node1")
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn tcp(m: &Model, src: &str, dst: &str, port: u16) -> bool {
        m.allows(ip(src), ip(dst), Protocol::Tcp, port)
    }

    fn deny_web_ingress() -> NetworkPolicy {
        policy(
            "a",
            "deny",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}),
        )
    }

    #[test]
    fn without_policies_everything_is_allowed() {
        let m = world().model(&[]);
        assert!(m.pods.is_empty());
        for (src, dst) in [(A1, A2), (A2, A1), (B1, A1), (EXT, A1), (A1, EXT)] {
            assert!(tcp(&m, src, dst, 80));
        }
    }

    #[test]
    fn default_deny_ingress_isolates_only_the_selected_pod_and_only_inbound() {
        let m = world().model(&[deny_web_ingress()]);
        assert_eq!(m.pods.len(), 1);
        assert_eq!(m.pods["a/web"].ingress, Some(vec![]));
        assert_eq!(m.pods["a/web"].egress, None);
        for src in [A2, B1, C1, EXT] {
            assert!(!tcp(&m, src, A1, 8080), "{src} reached web");
        }
        assert!(tcp(&m, A1, A1, 8080), "web reaches itself (hairpin)");
        assert!(tcp(&m, A1, A2, 80), "web's egress is not isolated");
        assert!(tcp(&m, B1, A2, 80), "other pods stay open");
    }

    #[test]
    fn pod_selector_peers_are_of_the_policy_namespace_and_policies_add_up() {
        let from_clients = policy(
            "a",
            "from-clients",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        );
        let m = world().model(&[deny_web_ingress(), from_clients.clone()]);
        assert!(tcp(&m, A2, A1, 8080));
        assert!(!tcp(&m, B1, A1, 8080), "same labels, other namespace");
        assert!(!tcp(&m, EXT, A1, 8080));

        let from_ext = policy(
            "a",
            "from-ext",
            json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/24"}}]}]}),
        );
        let m = world().model(&[from_clients, from_ext]);
        assert!(tcp(&m, A2, A1, 8080), "union of both policies");
        assert!(tcp(&m, EXT, A1, 8080), "union of both policies");
        assert!(!tcp(&m, B1, A1, 8080));
        // The second policy selects every pod of namespace a: client is isolated too.
        assert!(!tcp(&m, A1, A2, 8080));
    }

    #[test]
    fn namespace_selector_alone_and_with_a_pod_selector() {
        let by_ns = policy(
            "a",
            "by-ns",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]}]}),
        );
        let m = world().model(&[by_ns]);
        assert!(tcp(&m, A2, A1, 80), "namespace a has team=x");
        assert!(
            tcp(&m, C1, A1, 80),
            "namespace c has team=x, pod on another node"
        );
        assert!(!tcp(&m, B1, A1, 80));

        let both = policy(
            "a",
            "both",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{
                       "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "Exists"}]},
                       "podSelector": {"matchLabels": {"app": "client"}}}]}]}),
        );
        let m = world().model(&[both]);
        assert!(tcp(&m, B1, A1, 80));
        assert!(!tcp(&m, A2, A1, 80), "client, but namespace a has no env");
        assert!(!tcp(&m, C1, A1, 80));

        let all_namespaces = policy(
            "a",
            "any-ns",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
        );
        let m = world().model(&[all_namespaces]);
        for src in [A2, B1, C1] {
            assert!(tcp(&m, src, A1, 80));
        }
        assert!(!tcp(&m, EXT, A1, 80), "pods only, not outside addresses");
    }

    #[test]
    fn ip_block_with_except() {
        let p = policy(
            "a",
            "block",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"from": [{"ipBlock": {"cidr": "10.88.0.0/16",
                                                      "except": ["10.88.0.16/28"]}}]}]}),
        );
        let m = world().model(&[p]);
        assert!(tcp(&m, A2, A1, 80), "10.88.0.12 is outside the exception");
        assert!(!tcp(&m, B1, A1, 80), "10.88.0.21 is in 10.88.0.16/28");
        assert!(!tcp(&m, EXT, A1, 80));
        assert_eq!(
            m.pods["a/web"].ingress.as_ref().expect("isolated")[0].peer,
            Peer::Block {
                cidr: "10.88.0.0/16".parse().expect("cidr"),
                except: vec!["10.88.0.16/28".parse().expect("cidr")],
            }
        );
    }

    #[test]
    fn ports_protocols_ranges_and_named_ports() {
        let p = policy(
            "a",
            "ports",
            json!({"podSelector": {},
            "ingress": [{"ports": [
                {"port": 80},
                {"protocol": "UDP", "port": 1000, "endPort": 1010},
                {"port": "http"},
                {"protocol": "SCTP"},
            ]}]}),
        );
        let m = world().model(&[p]);
        for (dst, named) in [(A1, 8080), (A2, 9090)] {
            assert!(tcp(&m, B1, dst, 80));
            assert!(!tcp(&m, B1, dst, 81));
            assert!(tcp(&m, B1, dst, named), "http is {named} at {dst}");
            assert!(!m.allows(ip(B1), ip(dst), Protocol::Udp, 80), "80 is TCP");
            assert!(m.allows(ip(B1), ip(dst), Protocol::Udp, 1000));
            assert!(m.allows(ip(B1), ip(dst), Protocol::Udp, 1010));
            assert!(!m.allows(ip(B1), ip(dst), Protocol::Udp, 1011));
            assert!(m.allows(ip(B1), ip(dst), Protocol::Sctp, 4242));
        }
        assert!(!tcp(&m, B1, A1, 9090), "web's http is 8080");
        assert!(!tcp(&m, B1, A2, 8080), "client's http is 9090");

        // A named port no container has matches nothing, leaving the pod isolated.
        let p = policy(
            "a",
            "nothing",
            json!({"podSelector": {"matchLabels": {"app": "web"}},
                   "ingress": [{"ports": [{"port": "metrics"}]}]}),
        );
        let m = world().model(&[p]);
        assert_eq!(m.pods["a/web"].ingress, Some(vec![]));
    }

    #[test]
    fn empty_rule_allows_everything_and_no_rules_deny() {
        let allow_all = policy("a", "all", json!({"podSelector": {}, "ingress": [{}]}));
        let m = world().model(&[deny_web_ingress(), allow_all]);
        for src in [A2, B1, C1, EXT] {
            assert!(tcp(&m, src, A1, 1234));
        }
        let deny_all = policy(
            "a",
            "none",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        );
        let m = world().model(&[deny_all]);
        assert!(!tcp(&m, A2, A1, 80));
        assert!(!tcp(&m, A1, A2, 80));
        assert!(tcp(&m, A1, B1, 80), "namespace b is untouched");
    }

    #[test]
    fn egress_isolation_defaulting_and_named_ports_at_the_destination() {
        let deny = policy(
            "a",
            "deny-egress",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        );
        let m = world().model(&[deny]);
        assert!(!tcp(&m, A1, B1, 80));
        assert!(!tcp(&m, A1, EXT, 80));
        assert!(tcp(&m, B1, A1, 80), "ingress of namespace a stays open");
        assert_eq!(m.pods["a/web"].ingress, None);

        // Without policyTypes, egress rules make it an Egress policy (and Ingress too).
        let dns = policy(
            "a",
            "dns",
            json!({"podSelector": {"matchLabels": {"app": "client"}},
                   "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}],
                               "ports": [{"protocol": "UDP", "port": 53}]}]}),
        );
        assert_eq!(
            policy_types(&dns),
            BTreeSet::from([Direction::Ingress, Direction::Egress])
        );
        let m = world().model(&[dns]);
        assert!(m.allows(ip(A2), ip(B1), Protocol::Udp, 53));
        assert!(!m.allows(ip(A2), ip(B1), Protocol::Tcp, 53));
        assert!(!m.allows(ip(A2), ip(C1), Protocol::Udp, 53));
        assert!(!tcp(&m, A1, A2, 80), "ingress isolated by default type");

        // Egress to a named port: the number is the destination's.
        let named = policy(
            "a",
            "to-http",
            json!({"podSelector": {}, "policyTypes": ["Egress"],
                   "egress": [{"ports": [{"port": "http"}]}]}),
        );
        let m = world().model(&[named]);
        assert!(tcp(&m, A1, A2, 9090));
        assert!(!tcp(&m, A1, A2, 8080));
        assert!(tcp(&m, A2, A1, 8080));
        assert!(!tcp(&m, A2, A1, 9090));
        assert!(!tcp(&m, A1, B1, 9090), "b/client has no port named http");
        assert!(!tcp(&m, A1, EXT, 8080));
    }

    #[test]
    fn only_this_nodes_running_pods_are_enforced() {
        let mut w = world();
        let mut host = pod("a", "host", json!({"app": "web"}), "192.168.1.5", "node1");
        host.spec.as_mut().expect("spec").host_network = Some(true);
        let mut done = pod("a", "done", json!({"app": "web"}), "10.88.0.99", "node1");
        done.status.as_mut().expect("status").phase = Some("Succeeded".into());
        w.pods.extend([host, done]);
        let deny_all = policy(
            "c",
            "none",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        );
        let m = w.model(&[deny_web_ingress(), deny_all]);
        assert_eq!(m.pods.keys().collect::<Vec<_>>(), ["a/web"]);
        assert!(tcp(&m, A1, C1, 80), "c/client is enforced by node2");
    }
}
