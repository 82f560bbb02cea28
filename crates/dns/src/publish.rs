//! The `kube-system/kube-dns` Service that pods' `/etc/resolv.conf` points at: a fixed
//! cluster IP (the kubelet's `--cluster-dns`) in front of wherever this DNS server
//! listens. The server runs beside the control plane rather than in a pod, so the
//! Service has no selector and its Endpoints are written here (the EndpointSlice
//! mirroring controller turns them into the slices the service proxy reads). With
//! several servers, each runs one: each keeps itself among the Endpoints' addresses,
//! and keeps the others' only while they are also among the API servers' (the
//! `kubernetes` Service's endpoints, which a server that stops drops out of).

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

pub const SERVICE_NAMESPACE: &str = "kube-system";
pub const SERVICE_NAME: &str = "kube-dns";

/// Creates the `kube-dns` Service at `cluster_ip` (or leaves an existing one as it is)
/// and makes `serving`, where this server answers UDP and TCP, one of its Endpoints'
/// addresses (with the other live servers').
pub async fn publish_service(
    client: &Client,
    cluster_ip: IpAddr,
    serving: SocketAddr,
) -> kube::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), SERVICE_NAMESPACE);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": SERVICE_NAME, "labels": {
            "k8s-app": "kube-dns",
            "kubernetes.io/cluster-service": "true",
            "kubernetes.io/name": "CoreDNS",
        }},
        "spec": {
            "clusterIP": cluster_ip.to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": serving.port()},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": serving.port()},
            ],
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    match services.create(&PostParams::default(), &service).await {
        Ok(_) => tracing::info!(%cluster_ip, "created Service kube-system/kube-dns"),
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => return Err(e),
    }
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), SERVICE_NAMESPACE);
    let existing = endpoints.get_opt(SERVICE_NAME).await?;
    let servers: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let live = addresses(servers.get_opt("kubernetes").await?.as_ref());
    let mut wanted: Vec<String> = addresses(existing.as_ref())
        .into_iter()
        .filter(|ip| live.contains(ip))
        .chain([serving.ip().to_string()])
        .collect();
    wanted.sort();
    wanted.dedup();
    let ports_match = existing.as_ref().and_then(|e| {
        e.subsets
            .as_ref()?
            .first()?
            .ports
            .as_ref()?
            .first()
            .map(|p| p.port)
    }) == Some(i32::from(serving.port()));
    if ports_match && addresses(existing.as_ref()) == wanted {
        return Ok(());
    }
    let mut desired: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": SERVICE_NAME, "labels": {"k8s-app": "kube-dns"}},
        "subsets": [{
            "addresses": wanted.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "ports": [
                {"name": "dns", "port": serving.port(), "protocol": "UDP"},
                {"name": "dns-tcp", "port": serving.port(), "protocol": "TCP"},
            ],
        }],
    }))
    .map_err(kube::Error::SerdeError)?;
    // Endpoints, unlike most kinds, are created by an update when absent; an existing
    // one is replaced only as read (another server may be writing it too).
    if let Some(existing) = existing {
        desired.metadata.resource_version = existing.metadata.resource_version;
    }
    endpoints
        .replace(SERVICE_NAME, &PostParams::default(), &desired)
        .await?;
    Ok(())
}

/// The addresses of an Endpoints object, sorted.
fn addresses(endpoints: Option<&Endpoints>) -> Vec<String> {
    let mut ips: Vec<String> = endpoints
        .and_then(|e| e.subsets.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|subset| subset.addresses.iter().flatten())
        .map(|address| address.ip.clone())
        .collect();
    ips.sort();
    ips
}
