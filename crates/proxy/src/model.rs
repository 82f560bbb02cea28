//! The model: Services and EndpointSlices reduced to what the rules need, one
//! [`ServicePort`] per (service, port), with endpoints already selected the way upstream's
//! kube-proxy selects them. Everything here is pure, so the rules can be tested without a
//! cluster or a kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// What rendering needs besides the model.
#[derive(Clone, Debug)]
pub struct RenderConfig {
    /// The pod network: traffic to a cluster IP from outside it is masqueraded, so replies
    /// come back through this node. Without it, only hairpin and external traffic is.
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// The bit of the packet mark that means "masquerade me" (upstream's default 14).
    pub masquerade_bit: u8,
    /// Local addresses NodePorts answer on; empty means every local address but loopback.
    pub nodeport_addresses: Vec<Ipv4Cidr>,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig {
            cluster_cidr: None,
            masquerade_bit: 14,
            nodeport_addresses: Vec::new(),
        }
    }
}

/// FNV-1a, base32-encoded to `len` characters (at most 13, the 64 bits): stable across
/// builds and Rust versions, unlike `DefaultHasher`, so chain names are the same after a
/// restart.
pub fn stable_hash(input: &str, len: usize) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..len.min(13))
        .map(|i| char::from(ALPHABET[((h >> (i * 5)) & 31) as usize]))
        .collect()
}

/// An IPv4 network such as `10.88.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        };
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, prefix),
            None => (s, "32"),
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("invalid IPv4 address in {s:?}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("invalid prefix length in {s:?}"))?;
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Kubernetes spells protocols upper case and defaults them to TCP.
    fn parse(s: Option<&str>) -> Option<Protocol> {
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

/// Identifies one port of one Service: `namespace/name/protocol/port-name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    /// The port's name; empty for a service's single unnamed port.
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.nft(),
            self.port
        )
    }
}

/// One backend address of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// What the rules need to know about one port of one Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and the LoadBalancer's ingress IPs, all treated like the cluster
    /// IP but as external traffic.
    pub external_ips: Vec<Ipv4Addr>,
    /// Client-IP session affinity timeout, when `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local`.
    pub external_local: bool,
    /// The port an external load balancer checks this node's endpoints on (a
    /// LoadBalancer Service with `externalTrafficPolicy: Local`).
    pub health_check_node_port: Option<u16>,
    /// Endpoints for traffic to the cluster IP (only this node's with
    /// `internalTrafficPolicy: Local`).
    pub cluster_endpoints: Vec<Endpoint>,
    /// Endpoints for NodePort and external-IP traffic (only this node's with
    /// `externalTrafficPolicy: Local`).
    pub external_endpoints: Vec<Endpoint>,
    /// Whether the service has usable endpoints anywhere; with none, even
    /// Local-policy traffic is rejected rather than dropped.
    pub any_endpoints: bool,
}

impl ServicePort {
    /// Whether anything reaches this port from outside the cluster IP.
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }
}

/// The desired state of the whole proxy: every service port, keyed by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub services: BTreeMap<ServicePortName, ServicePort>,
}

/// An endpoint with the conditions selection looks at.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    endpoint: Endpoint,
    local: bool,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// Builds the model of every Service from the Services and EndpointSlices the watches hold.
/// `node_name` decides which endpoints are local for the `Local` traffic policies.
pub fn build<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_name: &str,
) -> Model {
    let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        // The proxy is IPv4 only for now; FQDN and IPv6 slices carry nothing it can use.
        if slice.address_type != "IPv4" {
            continue;
        }
        let (Some(namespace), Some(service)) = (
            slice.metadata.namespace.as_deref(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        by_service
            .entry((namespace, service.as_str()))
            .or_default()
            .push(slice);
    }

    let mut model = Model::default();
    for service in services {
        let (Some(namespace), Some(name)) = (
            service.metadata.namespace.as_deref(),
            service.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let slices = by_service
            .get(&(namespace, name))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for port in service_ports(service, namespace, name, slices, node_name) {
            model.services.insert(port.name.clone(), port);
        }
    }
    model
}

fn service_ports(
    service: &Service,
    namespace: &str,
    name: &str,
    slices: &[&EndpointSlice],
    node_name: &str,
) -> Vec<ServicePort> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    // Headless services ("None") and IPv6-only services have no IPv4 address to proxy.
    let cluster_ip = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .find_map(|ip| ip.parse::<Ipv4Addr>().ok());
    let Some(cluster_ip) = cluster_ip else {
        return Vec::new();
    };

    let mut external_ips: Vec<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        // ipMode Proxy means the load balancer itself delivers to the node, not to the VIP.
        external_ips.extend(
            ingress
                .into_iter()
                .flatten()
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    external_ips.sort();
    external_ips.dedup();

    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let node_ports_apply = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));

    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(service_port) = u16::try_from(port.port) else {
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        let candidates = candidates(slices, &port_name, protocol, node_name);
        let cluster_endpoints = select(&candidates, internal_local);
        let external_endpoints = select(&candidates, external_local);
        let any_endpoints = !select(&candidates, false).is_empty();
        out.push(ServicePort {
            name: ServicePortName {
                namespace: namespace.to_string(),
                name: name.to_string(),
                port: port_name,
                protocol,
            },
            cluster_ip,
            port: service_port,
            node_port: port
                .node_port
                .filter(|_| node_ports_apply)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0),
            external_ips: external_ips.clone(),
            affinity_timeout,
            external_local,
            health_check_node_port: spec
                .health_check_node_port
                .filter(|_| external_local)
                .and_then(|p| u16::try_from(p).ok()),
            cluster_endpoints,
            external_endpoints,
            any_endpoints,
        });
    }
    out
}

/// Every endpoint of the slices that serves the port named `port_name`. Named target ports
/// are already resolved per pod by the EndpointSlice controller, so the slice's port with
/// the same name carries the number to use.
fn candidates(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    node_name: &str,
) -> Vec<Candidate> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for slice in slices {
        let target = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(target) = target.and_then(|p| u16::try_from(p.port?).ok()) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.as_ref();
            // The API says a missing `ready` means unknown and consumers treat it as ready;
            // a missing `serving` follows `ready`.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let local = endpoint.node_name.as_deref() == Some(node_name);
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<Ipv4Addr>() else {
                    continue;
                };
                let endpoint = Endpoint { ip, port: target };
                // The same pod may appear in two slices while the controller moves it.
                if seen.insert(endpoint) {
                    out.push(Candidate {
                        endpoint,
                        local,
                        ready,
                        serving,
                        terminating,
                    });
                }
            }
        }
    }
    out
}

/// Upstream's rule: ready endpoints; if none is ready, those still serving while they
/// terminate, so a rolling update of the last pods does not drop connections.
fn select(candidates: &[Candidate], local_only: bool) -> Vec<Endpoint> {
    let eligible = || candidates.iter().filter(|c| !local_only || c.local);
    let mut chosen: Vec<Endpoint> = eligible().filter(|c| c.ready).map(|c| c.endpoint).collect();
    if chosen.is_empty() {
        chosen = eligible()
            .filter(|c| c.serving && c.terminating)
            .map(|c| c.endpoint)
            .collect();
    }
    chosen.sort();
    chosen
}

/// A made-up model for benchmarks: `services` TCP services `bench/svc-N` on port 80,
/// cluster IPs from 10.96.0.0/12 (at most about a million), each with `endpoints`
/// endpoints on port 8080 in 10.64.0.0/10.
pub fn synthetic(services: usize, endpoints: usize) -> Model {
    let mut model = Model::default();
    for s in 0..services {
        let cluster_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + s as u32);
        let eps: Vec<Endpoint> = (0..endpoints)
            .map(|e| Endpoint {
                ip: Ipv4Addr::from(
                    u32::from(Ipv4Addr::new(10, 64, 0, 0)) + (s * endpoints + e) as u32,
                ),
                port: 8080,
            })
            .collect();
        let name = ServicePortName {
            namespace: "bench".into(),
            name: format!("svc-{s}"),
            port: "http".into(),
            protocol: Protocol::Tcp,
        };
        model.services.insert(
            name.clone(),
            ServicePort {
                name,
                cluster_ip,
                port: 80,
                node_port: None,
                external_ips: Vec::new(),
                affinity_timeout: None,
                external_local: false,
                health_check_node_port: None,
                any_endpoints: !eps.is_empty(),
                cluster_endpoints: eps.clone(),
                external_endpoints: eps,
            },
        );
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{ready, service, slice};
    use serde_json::json;

    fn ep(ip: &str, port: u16) -> Endpoint {
        Endpoint {
            ip: ip.parse().expect("ip"),
            port,
        }
    }

    fn one(model: &Model) -> &ServicePort {
        assert_eq!(model.services.len(), 1, "{model:#?}");
        model.services.values().next().expect("one")
    }

    #[test]
    fn matches_endpoint_ports_by_name_and_protocol() {
        let svc = service(
            "ns",
            "web",
            json!({"clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ]}),
        );
        let s = slice(
            "ns",
            "web",
            "web-1",
            json!([
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 5353, "protocol": "UDP"},
                // Same name, wrong protocol: must not be picked for the UDP port.
                {"name": "dns", "port": 9999, "protocol": "TCP"},
            ]),
            &[ready("10.88.0.2", "n1"), ready("10.88.0.3", "n2")],
        );
        let other = slice(
            "ns",
            "other",
            "other-1",
            json!([{"name": "http", "port": 1}]),
            &[ready("10.88.0.9", "n1")],
        );
        let model = build([&svc], [&s, &other], "n1");
        assert_eq!(model.services.len(), 2);
        let http = model
            .services
            .values()
            .find(|p| p.name.port == "http")
            .expect("http");
        assert_eq!(http.port, 80);
        assert_eq!(http.name.protocol, Protocol::Tcp);
        assert_eq!(
            http.cluster_endpoints,
            vec![ep("10.88.0.2", 8080), ep("10.88.0.3", 8080)]
        );
        let dns = model
            .services
            .values()
            .find(|p| p.name.port == "dns")
            .expect("dns");
        assert_eq!(dns.name.protocol, Protocol::Udp);
        assert_eq!(
            dns.cluster_endpoints,
            vec![ep("10.88.0.2", 5353), ep("10.88.0.3", 5353)]
        );
    }

    #[test]
    fn only_ready_endpoints_unless_none_then_serving_terminating() {
        let svc = service(
            "ns",
            "web",
            json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
        );
        let ports = json!([{"port": 8080}]);
        let mixed = slice(
            "ns",
            "web",
            "a",
            ports.clone(),
            &[
                ("10.88.0.2", "n1", true, true, false),
                ("10.88.0.3", "n1", false, true, true),
                ("10.88.0.4", "n1", false, false, false),
            ],
        );
        let model = build([&svc], [&mixed], "n1");
        assert_eq!(one(&model).cluster_endpoints, vec![ep("10.88.0.2", 8080)]);

        let terminating = slice(
            "ns",
            "web",
            "a",
            ports,
            &[
                ("10.88.0.3", "n1", false, true, true),
                // Terminating and no longer serving: never used.
                ("10.88.0.5", "n1", false, false, true),
                ("10.88.0.4", "n1", false, false, false),
            ],
        );
        let model = build([&svc], [&terminating], "n1");
        let sp = one(&model);
        assert_eq!(sp.cluster_endpoints, vec![ep("10.88.0.3", 8080)]);
        assert!(sp.any_endpoints);
    }

    #[test]
    fn local_traffic_policies_keep_this_nodes_endpoints() {
        let slices = [slice(
            "ns",
            "web",
            "a",
            json!([{"port": 8080}]),
            &[ready("10.88.0.2", "n1"), ready("10.88.1.2", "n2")],
        )];
        let itp = service(
            "ns",
            "web",
            json!({"clusterIP": "10.96.0.10", "internalTrafficPolicy": "Local",
                   "ports": [{"port": 80}]}),
        );
        let model = build([&itp], &slices, "n1");
        assert_eq!(one(&model).cluster_endpoints, vec![ep("10.88.0.2", 8080)]);
        let model = build([&itp], &slices, "n3");
        let sp = one(&model);
        assert!(sp.cluster_endpoints.is_empty());
        assert!(
            sp.any_endpoints,
            "others exist, so Local traffic is dropped"
        );

        let etp = service(
            "ns",
            "web",
            json!({"clusterIP": "10.96.0.10", "type": "NodePort",
                   "externalTrafficPolicy": "Local",
                   "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let model = build([&etp], &slices, "n2");
        let sp = one(&model);
        assert_eq!(sp.node_port, Some(30080));
        assert!(sp.external_local);
        assert_eq!(sp.cluster_endpoints.len(), 2);
        assert_eq!(sp.external_endpoints, vec![ep("10.88.1.2", 8080)]);
    }

    #[test]
    fn skips_headless_external_name_and_foreign_families() {
        let headless = service(
            "ns",
            "h",
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        );
        let external = service(
            "ns",
            "e",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        );
        let mut v6: EndpointSlice = slice(
            "ns",
            "web",
            "v6",
            json!([{"port": 8080}]),
            &[ready("fd00::1", "n1")],
        );
        v6.address_type = "IPv6".into();
        let web = service(
            "ns",
            "web",
            json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
        );
        let model = build([&headless, &external, &web], [&v6], "n1");
        let sp = one(&model);
        assert!(sp.cluster_endpoints.is_empty());
        assert!(!sp.any_endpoints);
    }

    #[test]
    fn external_ips_load_balancer_ingress_and_affinity() {
        let mut svc = service(
            "ns",
            "lb",
            json!({"clusterIP": "10.96.0.10", "type": "LoadBalancer",
                   "externalIPs": ["192.0.2.1"],
                   "sessionAffinity": "ClientIP",
                   "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                   "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        svc.status = Some(
            serde_json::from_value(json!({"loadBalancer": {"ingress": [
                {"ip": "198.51.100.7"}, {"ip": "198.51.100.8", "ipMode": "Proxy"}
            ]}}))
            .expect("status"),
        );
        let model = build([&svc], [], "n1");
        let sp = one(&model);
        assert_eq!(
            sp.external_ips,
            vec![
                "192.0.2.1".parse::<Ipv4Addr>().expect("ip"),
                "198.51.100.7".parse().expect("ip")
            ]
        );
        assert_eq!(sp.affinity_timeout, Some(60));
        assert_eq!(sp.node_port, Some(30080));
    }

    #[test]
    fn cidr_parsing_and_containment() {
        let c: Ipv4Cidr = "10.88.0.0/16".parse().expect("cidr");
        assert!(c.contains("10.88.200.1".parse().expect("ip")));
        assert!(!c.contains("10.89.0.1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert_eq!(
            "10.0.0.1".parse::<Ipv4Cidr>().expect("host").to_string(),
            "10.0.0.1/32"
        );
    }
}
