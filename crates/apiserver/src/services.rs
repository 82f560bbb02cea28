//! Service address allocation: cluster IPs from the service CIDR and node ports from
//! their range, each held by a record in the store so that two API servers never hand
//! out the same one.
//!
//! A cluster IP is held by an `IPAddress` object named after the address (as upstream's
//! allocator keeps them since `MultiCIDRServiceAllocator`); a node port by a key under
//! `/registry/skiff/servicenodeports/`. Creating the record is the allocation (create
//! fails if it exists); deleting it is the release.

use std::net::Ipv4Addr;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::object;
use crate::registry::{Registry, SERVER_MANAGER};
use crate::status::{ApiError, ApiResult, Cause};

/// Upstream's default node port range.
const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;
const NODE_PORT_PREFIX: &str = "/registry/skiff/servicenodeports/";

/// An IPv4 CIDR such as `10.96.0.0/12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (ip, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR like 10.96.0.0/12"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("prefix length in {text:?} must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl Cidr {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & (u32::MAX << (32 - self.prefix)) == self.base
    }

    /// The `n`th address (0 is the network address).
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + n)
    }
}

fn random_u32() -> u32 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn service_type(service: &Value) -> &str {
    service
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn invalid(service: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid("Service", "", object::name(service), causes)
}

/// Allocates what a new Service needs and writes it into the object. On error nothing
/// stays allocated.
pub async fn allocate(registry: &Registry, service: &mut Value, dry_run: bool) -> ApiResult<()> {
    let kind = service_type(service).to_string();
    if kind == "ExternalName" {
        return Ok(());
    }
    let requested = service
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if requested != "None" {
        let ip = allocate_ip(registry, service, &requested, dry_run).await?;
        if let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    } else if let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("clusterIPs".into(), json!(["None"]));
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        if let Err(e) = allocate_node_ports(registry, service, &[], dry_run).await {
            release(registry, service).await;
            return Err(e);
        }
    }
    Ok(())
}

async fn allocate_ip(
    registry: &Registry,
    service: &Value,
    requested: &str,
    dry_run: bool,
) -> ApiResult<String> {
    let cidr = registry.service_cidr;
    let ipaddresses = registry
        .catalogue
        .get("networking.k8s.io", "v1", "ipaddresses")
        .ok_or_else(|| ApiError::internal("ipaddresses are not served"))?;
    let record = |ip: &str| {
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IPAddress",
            "metadata": {
                "name": ip,
                "labels": {
                    "ipaddress.kubernetes.io/ip-family": "IPv4",
                    "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
                },
            },
            "spec": {"parentRef": {
                "group": "",
                "resource": "services",
                "namespace": object::namespace(service).unwrap_or(""),
                "name": object::name(service),
            }},
        })
    };
    if !requested.is_empty() {
        let ip: Ipv4Addr = requested.parse().map_err(|_| {
            invalid(
                service,
                vec![Cause::invalid(
                    "spec.clusterIPs[0]",
                    requested,
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )],
            )
        })?;
        if !cidr.contains(ip) {
            return Err(invalid(service, vec![Cause::invalid(
                "spec.clusterIPs",
                requested,
                &format!("failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {cidr}"),
            )]));
        }
        return match Box::pin(registry.create(
            &ipaddresses,
            None,
            record(requested),
            SERVER_MANAGER,
            dry_run,
        ))
        .await
        {
            Ok(_) => Ok(requested.to_string()),
            Err(e) if e.reason == "AlreadyExists" => Err(invalid(
                service,
                vec![Cause::invalid(
                    "spec.clusterIPs",
                    requested,
                    &format!("failed to allocate IP {requested}: provided IP is already allocated"),
                )],
            )),
            Err(e) => Err(e),
        };
    }
    // Random probing from a random start. As upstream (KEP-3070), dynamic addresses come
    // from above a reserved lower band first, so that addresses chosen by hand there
    // (the cluster DNS's, say) stay free; the lower band is used when the upper is full.
    // Skipped: the network and broadcast addresses, and the first address (the
    // `kubernetes` Service's).
    let size = cidr.size();
    let reserved = (size / 16).clamp(16, 256).min(size - 1);
    for (first, end) in [(reserved, size - 1), (2, reserved)] {
        let usable = end.saturating_sub(first);
        if usable == 0 {
            continue;
        }
        let start = random_u32() % usable;
        for step in 0..usable.min(4096) {
            let ip = cidr.nth(first + (start + step) % usable).to_string();
            match Box::pin(registry.create(
                &ipaddresses,
                None,
                record(&ip),
                SERVER_MANAGER,
                dry_run,
            ))
            .await
            {
                Ok(_) => return Ok(ip),
                Err(e) if e.reason == "AlreadyExists" => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Err(ApiError::internal(format!(
        "failed to allocate a serviceIP: range {cidr} is full"
    )))
}

/// Gives every port a node port: a requested one is claimed unless `held` (the
/// Service's already), an unset one is chosen at random.
async fn allocate_node_ports(
    registry: &Registry,
    service: &mut Value,
    held: &[u64],
    dry_run: bool,
) -> ApiResult<()> {
    let owner = format!(
        "{}/{}",
        object::namespace(service).unwrap_or(""),
        object::name(service)
    );
    let value = Bytes::from(serde_json::to_vec(&json!({"service": owner})).unwrap_or_default());
    let count = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut fields: Vec<(String, String)> = (0..count)
        .map(|i| {
            (
                format!("/spec/ports/{i}/nodePort"),
                format!("spec.ports[{i}].nodePort"),
            )
        })
        .collect();
    // Upstream's health-check port, for load balancers to find the nodes with endpoints.
    if needs_health_check_port(service) {
        fields.push((
            "/spec/healthCheckNodePort".into(),
            "spec.healthCheckNodePort".into(),
        ));
    }
    for (pointer, field) in fields {
        let requested = service
            .pointer(&pointer)
            .and_then(Value::as_u64)
            .map(|p| p as u16);
        let port = match requested {
            Some(port) if held.contains(&u64::from(port)) => port,
            Some(port) => claim_node_port(registry, service, port, &field, &value, dry_run).await?,
            None => claim_free_node_port(registry, &value, dry_run).await?,
        };
        if let Some((parent, key)) = pointer.rsplit_once('/') {
            if let Some(fields) = service.pointer_mut(parent).and_then(Value::as_object_mut) {
                fields.insert(key.into(), json!(port));
            }
        }
    }
    Ok(())
}

/// Whether the Service is a load balancer sending external traffic only to local
/// endpoints: the kind upstream gives a health-check node port.
fn needs_health_check_port(service: &Value) -> bool {
    service_type(service) == "LoadBalancer"
        && service
            .pointer("/spec/externalTrafficPolicy")
            .and_then(Value::as_str)
            == Some("Local")
}

/// Claims `port`, asked for in `field`.
async fn claim_node_port(
    registry: &Registry,
    service: &Value,
    port: u16,
    field: &str,
    owner: &Bytes,
    dry_run: bool,
) -> ApiResult<u16> {
    if !NODE_PORTS.contains(&port) {
        return Err(invalid(
            service,
            vec![Cause::invalid(
                field,
                port.to_string(),
                &format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    NODE_PORTS.start(),
                    NODE_PORTS.end()
                ),
            )],
        ));
    }
    let key = format!("{NODE_PORT_PREFIX}{port}");
    if !dry_run && registry.store.create(&key, owner.clone()).await.is_err() {
        return Err(invalid(
            service,
            vec![Cause::invalid(
                field,
                port.to_string(),
                "provided port is already allocated",
            )],
        ));
    }
    Ok(port)
}

/// Claims a free node port, probing from a random start.
async fn claim_free_node_port(registry: &Registry, owner: &Bytes, dry_run: bool) -> ApiResult<u16> {
    let span = u32::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
    let start = random_u32() % span;
    for step in 0..span {
        let port = NODE_PORTS.start() + ((start + step) % span) as u16;
        let key = format!("{NODE_PORT_PREFIX}{port}");
        if dry_run || registry.store.create(&key, owner.clone()).await.is_ok() {
            return Ok(port);
        }
    }
    Err(ApiError::internal(
        "failed to allocate a nodePort: range is full",
    ))
}

/// Allocates what an updated Service needs and its old version did not hold: a cluster
/// IP when it stops being an ExternalName Service, node ports when it becomes a NodePort
/// or LoadBalancer Service or gains ports. On error nothing new stays allocated. Once
/// the update is stored, [`release_dropped`] gives back what only the old version held;
/// if it is not, the caller gives back what only the new one holds.
pub async fn allocate_for_update(
    registry: &Registry,
    new: &mut Value,
    old: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    let kind = service_type(new).to_string();
    if kind == "ExternalName" {
        return Ok(());
    }
    let requested = new
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if requested != "None" && !cluster_ips(old).contains(&requested) {
        let ip = allocate_ip(registry, new, &requested, dry_run).await?;
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
    if needs_node_ports(&kind) {
        let held = node_ports(old);
        if let Err(e) = allocate_node_ports(registry, new, &held, dry_run).await {
            release_dropped(registry, new, old).await;
            return Err(e);
        }
    }
    Ok(())
}

/// Gives back the cluster IPs and node ports `from` holds and `to` does not.
pub async fn release_dropped(registry: &Registry, from: &Value, to: &Value) {
    let kept_ips = cluster_ips(to);
    let kept_ports = node_ports(to);
    for ip in cluster_ips(from)
        .into_iter()
        .filter(|ip| !kept_ips.contains(ip))
    {
        let key = format!("/registry/ipaddresses/{ip}");
        if let Err(e) = registry.store.delete(&key, None).await {
            tracing::debug!(ip, error = %e, "releasing cluster IP");
        }
    }
    for port in node_ports(from)
        .into_iter()
        .filter(|p| !kept_ports.contains(p))
    {
        let _ = registry
            .store
            .delete(&format!("{NODE_PORT_PREFIX}{port}"), None)
            .await;
    }
}

/// Releases what a deleted Service held.
pub async fn release(registry: &Registry, service: &Value) {
    release_dropped(registry, service, &Value::Null).await;
}

fn needs_node_ports(service_type: &str) -> bool {
    matches!(service_type, "NodePort" | "LoadBalancer")
}

/// The node ports a Service holds: its ports' and its health-check port.
fn node_ports(service: &Value) -> Vec<u64> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .chain(
            service
                .pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_u64),
        )
        .collect()
}

fn cluster_ips(service: &Value) -> Vec<String> {
    service
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|ip| *ip != "None")
        .map(String::from)
        .collect()
}

fn drop_node_ports(spec: &mut serde_json::Map<String, Value>) {
    for port in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        port.remove("nodePort");
    }
}

/// An update keeps the addresses a Service holds: omitted ones are carried over,
/// changed cluster IPs are refused as upstream refuses them. What the new type has no
/// use for is dropped first, as upstream's `dropTypeDependentFields` does: everything
/// address-related for an ExternalName Service, node ports and the external traffic
/// policy for a ClusterIP one.
pub fn keep_allocations(new: &mut Value, old: &Value) -> Vec<Cause> {
    let new_type = service_type(new).to_string();
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        if new_type == "ExternalName" {
            for field in [
                "clusterIP",
                "clusterIPs",
                "ipFamilies",
                "ipFamilyPolicy",
                "internalTrafficPolicy",
                "externalTrafficPolicy",
                "healthCheckNodePort",
                "allocateLoadBalancerNodePorts",
            ] {
                spec.remove(field);
            }
            drop_node_ports(spec);
            return Vec::new();
        }
        if !needs_node_ports(&new_type) {
            spec.remove("externalTrafficPolicy");
            spec.remove("healthCheckNodePort");
            drop_node_ports(spec);
        }
    }
    if needs_health_check_port(new) {
        let kept = old
            .pointer("/spec/healthCheckNodePort")
            .cloned()
            .filter(|_| needs_health_check_port(old));
        let asked = new.pointer("/spec/healthCheckNodePort").is_some();
        if let (Some(port), Some(spec), false) = (
            kept,
            new.get_mut("spec").and_then(Value::as_object_mut),
            asked,
        ) {
            spec.insert("healthCheckNodePort".into(), port);
        }
    } else if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("healthCheckNodePort");
    }
    let old_ip = old
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let new_ip = new
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut causes = Vec::new();
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        if new_ip.is_empty() && !old_ip.is_empty() {
            spec.insert("clusterIP".into(), json!(old_ip));
            if let Some(ips) = old.pointer("/spec/clusterIPs") {
                spec.insert("clusterIPs".into(), ips.clone());
            }
        } else if new_ip != old_ip && !old_ip.is_empty() {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                &new_ip,
                "may not change once set",
            ));
        }
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ports = new
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .filter(|_| needs_node_ports(&new_type));
    if let Some(ports) = ports {
        for port in ports.iter_mut() {
            if port.get("nodePort").is_some() {
                continue;
            }
            let same = old_ports.iter().find(|o| {
                o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol")
            });
            if let (Some(node_port), Some(fields)) =
                (same.and_then(|o| o.get("nodePort")), port.as_object_mut())
            {
                fields.insert("nodePort".into(), node_port.clone());
            }
        }
    }
    causes
}

/// The `kubernetes` Service in `default` (its endpoints are the API servers', kept by
/// [`crate::endpoint_reconciler`]).
pub async fn ensure_kubernetes_service(registry: &Registry, port: u16) -> anyhow::Result<()> {
    let Some(services) = registry.catalogue.get("", "v1", "services") else {
        anyhow::bail!("services missing from the catalogue");
    };
    let ip = registry.service_cidr.nth(1).to_string();
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    });
    match registry
        .create(&services, Some("default"), service, SERVER_MANAGER, false)
        .await
    {
        Ok(_) => tracing::info!(%ip, "created the kubernetes service"),
        Err(e) if e.reason == "AlreadyExists" => {}
        Err(e) => anyhow::bail!("creating the kubernetes service: {e}"),
    }
    Ok(())
}

/// An address (`ip:port`) behind a Service's `port`: a ready endpoint of its
/// EndpointSlices, on the port the Service's port targets (as upstream's aggregator and
/// webhooks reach a Service's pods when told to route to endpoints).
pub fn resolve_endpoint(
    registry: &Registry,
    namespace: &str,
    name: &str,
    port: i64,
) -> Result<String, EndpointError> {
    let key = registry
        .core("services")
        .map(|services| services.key(Some(namespace), name))
        .unwrap_or_default();
    let service = registry
        .cache
        .get(&key)
        .and_then(|o| o.value().ok())
        .ok_or_else(|| EndpointError::ServiceNotFound {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })?;
    let service_port = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("port").and_then(Value::as_i64) == Some(port))
        .ok_or_else(|| EndpointError::NoSuchPort {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port,
        })?;
    let port_name = service_port
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let slices = registry
        .cache
        .snapshot(&format!("/registry/endpointslices/{namespace}/"), None)
        .objects
        .iter()
        .filter_map(|o| o.value().ok())
        .filter(|slice| {
            crate::object::labels(slice)
                .get("kubernetes.io/service-name")
                .map(String::as_str)
                == Some(name)
        })
        .collect::<Vec<_>>();
    for slice in &slices {
        let target = slice
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
            .and_then(|p| p.get("port").and_then(Value::as_i64));
        let Some(target) = target else { continue };
        let ready = slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false))
            .find_map(|e| e.pointer("/addresses/0").and_then(Value::as_str));
        if let Some(address) = ready {
            return Ok(if address.contains(':') {
                format!("[{address}]:{target}")
            } else {
                format!("{address}:{target}")
            });
        }
    }
    Err(EndpointError::NoEndpoints {
        name: name.to_string(),
        port_name: port_name.to_string(),
    })
}

/// Why a Service's port leads to no endpoint (the aggregator reports each differently).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EndpointError {
    #[error("service \"{name}\" not found in namespace {namespace}")]
    ServiceNotFound { namespace: String, name: String },
    #[error("service {namespace}/{name} has no port {port}")]
    NoSuchPort {
        namespace: String,
        name: String,
        port: i64,
    },
    #[error("no endpoints available for service \"{name}\"")]
    NoEndpoints { name: String, port_name: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let cidr: Cidr = "10.96.0.0/12".parse().unwrap();
        assert_eq!(cidr.nth(1), Ipv4Addr::new(10, 96, 0, 1));
        assert!(cidr.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert_eq!(cidr.size(), 1 << 20);
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }

    #[test]
    fn updates_keep_addresses() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"], "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}});
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        assert!(keep_allocations(&mut new, &old).is_empty());
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.5");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30001);
        let mut changed = json!({"spec": {"clusterIP": "10.96.0.6"}});
        assert_eq!(keep_allocations(&mut changed, &old).len(), 1);
        // A ClusterIP Service holds no node ports; an ExternalName one no address.
        let mut cluster = json!({"spec": {"type": "ClusterIP", "externalTrafficPolicy": "Cluster", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}});
        assert!(keep_allocations(&mut cluster, &old).is_empty());
        assert_eq!(cluster["spec"]["ports"][0].get("nodePort"), None);
        assert_eq!(cluster["spec"].get("externalTrafficPolicy"), None);
        assert_eq!(cluster["spec"]["clusterIP"], "10.96.0.5");
        let mut external = json!({"spec": {"type": "ExternalName", "externalName": "example.com", "clusterIP": "10.96.0.5", "ipFamilies": ["IPv4"]}});
        assert!(keep_allocations(&mut external, &old).is_empty());
        assert_eq!(external["spec"].get("clusterIP"), None);
        assert_eq!(external["spec"].get("ipFamilies"), None);
    }
}
