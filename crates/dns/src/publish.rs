//! The `kube-system/kube-dns` Service that pods' `/etc/resolv.conf` points at: a fixed
//! cluster IP (the kubelet's `--cluster-dns`) in front of wherever this DNS server
//! listens. The server runs beside the control plane rather than in a pod, so the
//! Service has no selector and its Endpoints are written here (the EndpointSlice
//! mirroring controller turns them into the slices the service proxy reads).

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

pub const SERVICE_NAMESPACE: &str = "kube-system";
pub const SERVICE_NAME: &str = "kube-dns";

/// Creates the `kube-dns` Service at `cluster_ip` (or leaves an existing one as it is)
/// and points its Endpoints at `serving`, where this server answers UDP and TCP.
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
    let mut desired: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": SERVICE_NAME, "labels": {"k8s-app": "kube-dns"}},
        "subsets": [{
            "addresses": [{"ip": serving.ip().to_string()}],
            "ports": [
                {"name": "dns", "port": serving.port(), "protocol": "UDP"},
                {"name": "dns-tcp", "port": serving.port(), "protocol": "TCP"},
            ],
        }],
    }))
    .map_err(kube::Error::SerdeError)?;
    // Endpoints, unlike most kinds, are created by an update when absent.
    if let Some(existing) = endpoints.get_opt(SERVICE_NAME).await? {
        desired.metadata.resource_version = existing.metadata.resource_version;
    }
    endpoints
        .replace(SERVICE_NAME, &PostParams::default(), &desired)
        .await?;
    Ok(())
}
