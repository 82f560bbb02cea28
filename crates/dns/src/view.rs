//! The in-memory view of the cluster that every answer is computed from: Services and
//! EndpointSlices reduced to the few fields DNS needs, plus a reverse index for PTR.
//!
//! The view knows nothing of DNS wire formats; [`crate::lookup()`] turns it into records.
//! It keeps slices whose Service is not (yet) known, since the two watches race.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `(namespace, name)`.
pub type Key = (String, String);

/// The view shared by the watchers (writers) and the DNS handler (readers). Writers hold
/// the lock only to apply one event; readers only to compute one answer.
pub type SharedView = Arc<RwLock<View>>;

/// What a Service contributes to DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub kind: ServiceKind,
    pub ports: Vec<PortInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// ClusterIP, NodePort and LoadBalancer: the name resolves to the cluster IPs (empty
    /// while none is allocated yet).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the name resolves to the ready endpoints.
    Headless,
    /// The name is an alias of `spec.externalName`.
    ExternalName(String),
}

/// A named or unnamed port of a Service or an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortInfo {
    pub name: String,
    /// Lower case, as it appears in SRV names (`tcp`, `udp`, `sctp`).
    pub protocol: String,
    pub port: u16,
}

/// What an EndpointSlice contributes to DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    pub service: String,
    pub ports: Vec<PortInfo>,
    pub endpoints: Vec<EndpointInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    /// `conditions.ready`, where an absent value counts as ready (as upstream reads it).
    pub ready: bool,
}

impl EndpointInfo {
    /// The first DNS label of this endpoint's name under its Service: the hostname if it
    /// has one, else the address with dashes.
    pub fn label(&self, address: IpAddr) -> String {
        match &self.hostname {
            Some(hostname) => hostname.to_ascii_lowercase(),
            None => dashed(address),
        }
    }
}

/// An address as one DNS label: `10-0-0-1`, `fd00--1`.
pub fn dashed(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The inverse of [`dashed`].
pub fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<std::net::Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// Who a reverse (PTR) name points at: a Service, or one endpoint of a headless Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReverseTarget {
    pub namespace: String,
    pub service: String,
    /// The endpoint's label ([`EndpointInfo::label`]) for headless endpoints.
    pub endpoint: Option<String>,
}

#[derive(Default, Debug)]
pub struct View {
    services: HashMap<Key, ServiceInfo>,
    /// Keyed by `(namespace, slice name)`.
    slices: HashMap<Key, SliceInfo>,
    /// `(namespace, service)` → names of its slices.
    slices_of: HashMap<Key, BTreeSet<String>>,
    /// How many Services each namespace holds, so `<ns>.svc.<zone>` can exist.
    namespaces: HashMap<String, usize>,
    reverse: HashMap<IpAddr, BTreeSet<ReverseTarget>>,
    /// What each Service put into `reverse`, to take it out again on change.
    reverse_of: HashMap<Key, Vec<(IpAddr, ReverseTarget)>>,
}

impl View {
    pub fn shared() -> SharedView {
        Arc::new(RwLock::new(View::default()))
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceInfo> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    pub fn reverse(&self, address: IpAddr) -> impl Iterator<Item = &ReverseTarget> + '_ {
        self.reverse.get(&address).into_iter().flatten()
    }

    /// The slices of one Service.
    pub fn slices<'a>(
        &'a self,
        namespace: &'a str,
        service: &str,
    ) -> impl Iterator<Item = &'a SliceInfo> + 'a {
        self.slices_of
            .get(&(namespace.to_string(), service.to_string()))
            .into_iter()
            .flatten()
            .filter_map(move |slice| self.slices.get(&(namespace.to_string(), slice.to_string())))
    }

    /// Ready endpoints of one Service, each address once, in address order, with the
    /// endpoint that holds it (the first one, if several claim the same address).
    pub fn ready_addresses<'a>(
        &'a self,
        namespace: &'a str,
        service: &str,
    ) -> Vec<(IpAddr, &'a EndpointInfo)> {
        let mut seen: BTreeMap<IpAddr, &EndpointInfo> = BTreeMap::new();
        for slice in self.slices(namespace, service) {
            for endpoint in slice.endpoints.iter().filter(|e| e.ready) {
                for address in &endpoint.addresses {
                    seen.entry(*address).or_insert(endpoint);
                }
            }
        }
        seen.into_iter().collect()
    }

    pub fn apply_service(&mut self, namespace: &str, name: &str, info: ServiceInfo) {
        let key = (namespace.to_string(), name.to_string());
        if self.services.insert(key.clone(), info).is_none() {
            *self.namespaces.entry(namespace.to_string()).or_default() += 1;
        }
        self.reindex(&key);
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if self.services.remove(&key).is_some() {
            if let Some(count) = self.namespaces.get_mut(namespace) {
                *count -= 1;
                if *count == 0 {
                    self.namespaces.remove(namespace);
                }
            }
        }
        self.reindex(&key);
    }

    pub fn apply_slice(&mut self, namespace: &str, name: &str, info: SliceInfo) {
        let key = (namespace.to_string(), name.to_string());
        let service = (namespace.to_string(), info.service.clone());
        if let Some(old) = self.slices.insert(key.clone(), info) {
            if old.service != service.1 {
                self.unlink_slice(namespace, &old.service, name);
            }
        }
        self.slices_of
            .entry(service.clone())
            .or_default()
            .insert(name.to_string());
        self.reindex(&service);
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(old) = self.slices.remove(&key) {
            self.unlink_slice(namespace, &old.service, name);
        }
    }

    /// Replaces every Service with `services` (after a re-list, objects deleted while the
    /// watch was down must go too).
    pub fn replace_services(&mut self, services: Vec<(Key, ServiceInfo)>) {
        let stale: Vec<Key> = self.services.keys().cloned().collect();
        for (namespace, name) in stale {
            self.delete_service(&namespace, &name);
        }
        for ((namespace, name), info) in services {
            self.apply_service(&namespace, &name, info);
        }
    }

    /// As [`View::replace_services`], for EndpointSlices.
    pub fn replace_slices(&mut self, slices: Vec<(Key, SliceInfo)>) {
        let stale: Vec<Key> = self.slices.keys().cloned().collect();
        for (namespace, name) in stale {
            self.delete_slice(&namespace, &name);
        }
        for ((namespace, name), info) in slices {
            self.apply_slice(&namespace, &name, info);
        }
    }

    fn unlink_slice(&mut self, namespace: &str, service: &str, slice: &str) {
        let service_key = (namespace.to_string(), service.to_string());
        if let Some(names) = self.slices_of.get_mut(&service_key) {
            names.remove(slice);
            if names.is_empty() {
                self.slices_of.remove(&service_key);
            }
        }
        self.reindex(&service_key);
    }

    /// Recomputes the PTR entries that one Service owns.
    fn reindex(&mut self, key: &Key) {
        for (address, target) in self.reverse_of.remove(key).unwrap_or_default() {
            if let Some(targets) = self.reverse.get_mut(&address) {
                targets.remove(&target);
                if targets.is_empty() {
                    self.reverse.remove(&address);
                }
            }
        }
        let (namespace, name) = key;
        let target = |endpoint: Option<String>| ReverseTarget {
            namespace: namespace.clone(),
            service: name.clone(),
            endpoint,
        };
        let entries: Vec<(IpAddr, ReverseTarget)> = match self.services.get(key).map(|s| &s.kind) {
            Some(ServiceKind::ClusterIp(ips)) => ips.iter().map(|ip| (*ip, target(None))).collect(),
            Some(ServiceKind::Headless) => self
                .ready_addresses(namespace, name)
                .into_iter()
                .map(|(ip, endpoint)| (ip, target(Some(endpoint.label(ip)))))
                .collect(),
            Some(ServiceKind::ExternalName(_)) | None => Vec::new(),
        };
        if entries.is_empty() {
            return;
        }
        for (address, target) in &entries {
            self.reverse
                .entry(*address)
                .or_default()
                .insert(target.clone());
        }
        self.reverse_of.insert(key.clone(), entries);
    }
}

/// The DNS-relevant part of a Service.
pub fn service_info(service: &Service) -> Option<ServiceInfo> {
    let spec = service.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName(spec.external_name.clone().unwrap_or_default())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        // `clusterIPs` holds both families for dual-stack Services; older objects may
        // carry only `clusterIP`.
        let mut ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                spec.cluster_ip
                    .as_ref()
                    .and_then(|ip| ip.parse::<IpAddr>().ok()),
            );
        }
        ServiceKind::ClusterIp(ips)
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|port| port_info(port.name.as_deref(), port.protocol.as_deref(), port.port))
        .collect();
    Some(ServiceInfo { kind, ports })
}

/// A Service's or a slice's port as SRV names spell it: lower-case name and protocol
/// (TCP when unset); `None` for a number no port can have.
fn port_info(name: Option<&str>, protocol: Option<&str>, port: i32) -> Option<PortInfo> {
    Some(PortInfo {
        name: name.unwrap_or_default().to_ascii_lowercase(),
        protocol: protocol.unwrap_or("TCP").to_ascii_lowercase(),
        port: u16::try_from(port).ok()?,
    })
}

/// The DNS-relevant part of an EndpointSlice; `None` for slices that belong to no Service
/// or that hold FQDNs.
pub fn slice_info(slice: &EndpointSlice) -> Option<SliceInfo> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    if slice.address_type == "FQDN" {
        return None;
    }
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|port| port_info(port.name.as_deref(), port.protocol.as_deref(), port.port?))
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .flatten()
        .map(|endpoint| EndpointInfo {
            addresses: endpoint
                .addresses
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
            hostname: endpoint.hostname.clone(),
            ready: endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true),
        })
        .collect();
    Some(SliceInfo {
        service: service.clone(),
        ports,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headless_slice(service: &str, addresses: &[(&str, bool)]) -> SliceInfo {
        SliceInfo {
            service: service.into(),
            ports: vec![],
            endpoints: addresses
                .iter()
                .map(|(a, ready)| EndpointInfo {
                    addresses: vec![a.parse().expect("ip")],
                    hostname: None,
                    ready: *ready,
                })
                .collect(),
        }
    }

    #[test]
    fn dashed_round_trips() {
        for ip in ["10.1.2.3", "fd00::1", "2001:db8::a:b"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(undashed(&dashed(ip)), Some(ip));
        }
        assert_eq!(undashed("not-an-ip"), None);
    }

    #[test]
    fn reverse_index_follows_changes() {
        let mut view = View::default();
        let ip: IpAddr = "10.0.0.9".parse().expect("ip");
        view.apply_slice("ns", "h-1", headless_slice("h", &[("10.0.0.9", true)]));
        // The slice came first: no Service, no PTR yet.
        assert_eq!(view.reverse(ip).count(), 0);
        view.apply_service(
            "ns",
            "h",
            ServiceInfo {
                kind: ServiceKind::Headless,
                ports: vec![],
            },
        );
        assert_eq!(view.reverse(ip).count(), 1);
        view.apply_slice("ns", "h-1", headless_slice("h", &[("10.0.0.9", false)]));
        assert_eq!(view.reverse(ip).count(), 0);
        view.apply_slice("ns", "h-1", headless_slice("h", &[("10.0.0.9", true)]));
        view.delete_slice("ns", "h-1");
        assert_eq!(view.reverse(ip).count(), 0);
        assert!(view.has_namespace("ns"));
        view.delete_service("ns", "h");
        assert!(!view.has_namespace("ns"));
    }

    #[test]
    fn replace_drops_what_the_relist_lacks() {
        let mut view = View::default();
        let info = ServiceInfo {
            kind: ServiceKind::ClusterIp(vec!["10.96.0.5".parse().expect("ip")]),
            ports: vec![],
        };
        view.apply_service("a", "gone", info.clone());
        view.replace_services(vec![(("a".into(), "kept".into()), info)]);
        assert!(view.service("a", "gone").is_none());
        assert!(view.service("a", "kept").is_some());
        assert_eq!(view.reverse("10.96.0.5".parse().expect("ip")).count(), 1);
    }
}
