//! The `kubernetes` Service's endpoints when several API servers share one datastore
//! (upstream's `--endpoint-reconciler-type=lease`): each server keeps a Lease in
//! `kube-system` naming its advertised address, renewed well within its duration, and
//! writes the Service's Endpoints and EndpointSlice as the addresses of the Leases still
//! held. A server that stops renewing drops out of them once its Lease runs out; one
//! that starts adds itself before anything else is known (so one server alone is never
//! without its endpoint).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::object;
use crate::registry::{ListOptions, Registry, SERVER_MANAGER};
use crate::resources::ResourceInfo;
use crate::selectors::LabelSelector;
use crate::status::{ApiError, ApiResult};

/// How long a server's Lease holds without renewal (upstream's master lease TTL).
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often each server renews and reconciles.
const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// Marks the Leases of this mechanism among kube-system's.
const LEASE_LABEL: &str = "apiserver.skiff.dev/endpoint";

/// Renews this server's Lease and reconciles the endpoints, every few seconds after the
/// [`reconcile`] the server does as it starts, for as long as the server runs. Failures (a datastore hiccup, a lost race with another
/// server) are logged and retried at the next tick.
pub async fn run(registry: Arc<Registry>, address: SocketAddr) {
    let mut ticks = tokio::time::interval(RENEW_INTERVAL);
    // The first tick is at once, and the server has just reconciled before serving.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(error) = reconcile(&registry, address).await {
            tracing::warn!(%error, "reconciling the kubernetes service's endpoints");
        }
    }
}

/// One round: this server's Lease renewed, the endpoints written from the live ones.
pub async fn reconcile(registry: &Registry, address: SocketAddr) -> ApiResult<()> {
    let leases = resource(registry, "coordination.k8s.io", "leases")?;
    renew(registry, &leases, address).await?;
    let mut live = live_addresses(registry, &leases).await?;
    if !live.contains(&address.ip()) {
        live.push(address.ip());
    }
    live.sort();
    live.dedup();
    // A host's own addresses are no endpoints (Endpoints validation refuses them, as
    // upstream's does): a server advertising one is left out (it says so as it starts).
    live.retain(|ip| crate::validation::special_ip(*ip).is_empty());
    write_endpoints(registry, &live, address.port()).await
}

fn resource(registry: &Registry, group: &str, plural: &str) -> ApiResult<Arc<ResourceInfo>> {
    registry
        .catalogue
        .get(group, "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))
}

fn lease_name(address: SocketAddr) -> String {
    let ip = address.ip().to_string().replace([':', '.'], "-");
    format!("apiserver-endpoint-{ip}")
}

async fn renew(registry: &Registry, leases: &ResourceInfo, address: SocketAddr) -> ApiResult<()> {
    let name = lease_name(address);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-system", "labels": {LEASE_LABEL: "true"}},
        "spec": {
            "holderIdentity": address.to_string(),
            "leaseDurationSeconds": LEASE_DURATION.as_secs(),
            "renewTime": now,
        },
    });
    match registry.get(leases, Some("kube-system"), &name).await {
        Ok(_) => registry
            .update(
                leases,
                Some("kube-system"),
                &name,
                None,
                lease,
                SERVER_MANAGER,
                false,
            )
            .await
            .map(|_| ()),
        Err(e) if e.code == 404 => registry
            .create(leases, Some("kube-system"), lease, SERVER_MANAGER, false)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// The addresses of the Leases renewed within their duration.
async fn live_addresses(registry: &Registry, leases: &ResourceInfo) -> ApiResult<Vec<IpAddr>> {
    let options = ListOptions {
        label_selector: LabelSelector::parse(LEASE_LABEL)?,
        ..Default::default()
    };
    let page = registry.list(leases, Some("kube-system"), &options).await?;
    let now = jiff::Timestamp::now();
    let mut live = Vec::new();
    for item in &page.items {
        let lease = item.value()?;
        if let Some(ip) = held_address(&lease, now) {
            live.push(ip);
        }
    }
    Ok(live)
}

/// The address a Lease names, if it is still held at `now`.
fn held_address(lease: &Value, now: jiff::Timestamp) -> Option<IpAddr> {
    let spec = lease.get("spec")?;
    let renewed = object::parse_time(spec.get("renewTime")?.as_str()?)?;
    let duration = spec.get("leaseDurationSeconds")?.as_i64()?;
    let expires = renewed
        .checked_add(jiff::SignedDuration::from_secs(duration))
        .ok()?;
    if expires < now {
        return None;
    }
    let holder: SocketAddr = spec.get("holderIdentity")?.as_str()?.parse().ok()?;
    Some(holder.ip())
}

/// The `kubernetes` Endpoints and EndpointSlice as `addresses` on `port`; untouched
/// when they already say so.
async fn write_endpoints(registry: &Registry, addresses: &[IpAddr], port: u16) -> ApiResult<()> {
    let endpoints = resource(registry, "", "endpoints")?;
    let slices = resource(registry, "discovery.k8s.io", "endpointslices")?;
    let ips: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    // A subset names at least one address.
    let subsets = if ips.is_empty() {
        json!([])
    } else {
        json!([{
            "addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }])
    };
    let current = registry
        .get(&endpoints, Some("default"), "kubernetes")
        .await
        .ok();
    if current.as_ref().and_then(|c| c.get("subsets")) != Some(&subsets) {
        let endpoint = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": subsets,
        });
        registry
            .update(
                &endpoints,
                Some("default"),
                "kubernetes",
                None,
                endpoint,
                SERVER_MANAGER,
                false,
            )
            .await?;
    }
    // The slice the service proxy and DNS read; nothing but this manages it.
    let slice_endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}))
        .collect();
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": slice_endpoints,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    match registry.get(&slices, Some("default"), "kubernetes").await {
        Ok(current) => {
            if current.get("endpoints") == slice.get("endpoints")
                && current.get("ports") == slice.get("ports")
            {
                return Ok(());
            }
            registry
                .update(
                    &slices,
                    Some("default"),
                    "kubernetes",
                    None,
                    slice,
                    SERVER_MANAGER,
                    false,
                )
                .await
                .map(|_| ())
        }
        // Unlike Endpoints, slices are not created by an update.
        Err(e) if e.code == 404 => registry
            .create(&slices, Some("default"), slice, SERVER_MANAGER, false)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_its_address_until_it_runs_out() {
        let lease = json!({"spec": {"holderIdentity": "10.250.1.11:6443", "leaseDurationSeconds": 15,
            "renewTime": "2026-12-06T10:00:00.000000Z"}});
        let at = |time: &str| time.parse::<jiff::Timestamp>().expect("a time");
        assert_eq!(
            held_address(&lease, at("2026-12-06T10:00:14Z")),
            Some("10.250.1.11".parse().expect("an ip"))
        );
        assert_eq!(held_address(&lease, at("2026-12-06T10:00:16Z")), None);
        let unnamed = json!({"spec": {"holderIdentity": "someone", "leaseDurationSeconds": 15,
            "renewTime": "2026-12-06T10:00:00.000000Z"}});
        assert_eq!(held_address(&unnamed, at("2026-12-06T10:00:01Z")), None);
        assert_eq!(
            lease_name("10.250.1.11:6443".parse().expect("addr")),
            "apiserver-endpoint-10-250-1-11"
        );
    }
}
