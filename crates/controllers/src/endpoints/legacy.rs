//! The Endpoints controller (upstream's `pkg/controller/endpoint`): the `v1` Endpoints
//! object of every Service with a selector, named as the Service. Ready pods go to
//! `addresses`, the others to `notReadyAddresses`; terminating pods are left out (unless
//! the Service publishes not-ready addresses). Addresses that reach the same ports share
//! one subset, as upstream's repacking does, and at most [`MAX_ADDRESSES`] are kept, the
//! object then marked `over-capacity`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use super::{
    endpoint_labels, pod_endpoint, pod_ports, pods_of, selector, ResolvedPort, ServicePods,
};
use crate::controller::{split_key, Reconcile};
use crate::error::{ignore_not_found, Result};
use crate::informer::InformerFactory;
use crate::queue::WorkQueue;

/// Keeps the EndpointSlice mirroring controller off Endpoints this controller writes.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Set when addresses were dropped to stay within [`MAX_ADDRESSES`].
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// Upstream's limit on the addresses of one Endpoints object.
pub const MAX_ADDRESSES: usize = 1000;

pub struct EndpointsController {
    client: Client,
    service_pods: ServicePods,
    endpoints: Store<Endpoints>,
    queue: Arc<WorkQueue>,
}

impl EndpointsController {
    pub fn new(factory: &InformerFactory) -> Arc<EndpointsController> {
        let queue = factory.queue("endpoint");
        let service_pods = ServicePods::watch(factory, &queue);
        let informer = factory.informer::<Endpoints>();
        // A changed or deleted Endpoints object is put back as its Service says.
        informer.enqueue_into(queue.clone());
        Arc::new(EndpointsController {
            client: factory.client_for("endpoint-controller"),
            service_pods,
            endpoints: informer.store(),
            queue,
        })
    }
}

impl Reconcile for EndpointsController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let existing = self.endpoints.get(&ObjectRef::new(name).within(ns));
        let Some(service) = self
            .service_pods
            .services
            .get(&ObjectRef::new(name).within(ns))
        else {
            if existing.is_some() {
                ignore_not_found(api.delete(name, &DeleteParams::default()).await)?;
            }
            return Ok(None);
        };
        if selector(&service).is_none() {
            // Someone else's to write (or an ExternalName Service's: none).
            return Ok(None);
        }
        let (subsets, truncated) = desired_subsets(&service, &self.service_pods.pods);
        let mut annotations = existing
            .as_ref()
            .and_then(|e| e.metadata.annotations.clone())
            .unwrap_or_default();
        match truncated {
            true => annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into()),
            false => annotations.remove(OVER_CAPACITY_ANNOTATION),
        };
        let desired = Endpoints {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(endpoint_labels(&service, &[(SKIP_MIRROR_LABEL, "true")])),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..Default::default()
            },
            subsets: (!subsets.is_empty()).then_some(subsets),
        };
        match existing {
            None => {
                api.create(&PostParams::default(), &desired).await?;
            }
            Some(existing) => {
                let same = existing.subsets.clone().unwrap_or_default()
                    == desired.subsets.clone().unwrap_or_default()
                    && existing.metadata.labels == desired.metadata.labels
                    && existing.metadata.annotations == desired.metadata.annotations;
                if !same {
                    let mut updated = Endpoints::clone(&existing);
                    updated.metadata.labels = desired.metadata.labels;
                    updated.metadata.annotations = desired.metadata.annotations;
                    updated.subsets = desired.subsets;
                    api.replace(&existing.name_any(), &PostParams::default(), &updated)
                        .await?;
                }
            }
        }
        Ok(None)
    }
}

/// Ready and not-ready addresses by the ports they reach.
type Repacked = BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)>;

/// The Service's subsets, and whether addresses were dropped to fit the limit.
fn desired_subsets(service: &Service, pods: &Store<Pod>) -> (Vec<EndpointSubset>, bool) {
    let publish_not_ready = service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let has_ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| !p.is_empty());
    let mut repacked: Repacked = BTreeMap::new();
    for pod in pods_of(pods, service) {
        let Some(endpoint) = pod_endpoint(service, &pod, publish_not_ready) else {
            continue;
        };
        let mut ports = pod_ports(service, &pod);
        if has_ports && ports.is_empty() {
            continue;
        }
        ports.sort();
        let address = EndpointAddress {
            ip: endpoint.ips[0].clone(),
            hostname: endpoint.hostname,
            node_name: endpoint.node_name,
            target_ref: Some(endpoint.target_ref),
        };
        let (ready, not_ready) = repacked.entry(ports).or_default();
        if endpoint.ready {
            ready.push(address);
        } else {
            not_ready.push(address);
        }
    }
    let count = |r: &Repacked| r.values().map(|(r, n)| r.len() + n.len()).sum::<usize>();
    let before = count(&repacked);
    truncate(&mut repacked, MAX_ADDRESSES);
    let truncated = count(&repacked) < before;
    let subsets = repacked
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| ports.into_iter().map(endpoint_port).collect()),
            }
        })
        .collect();
    (subsets, truncated)
}

/// Keeps at most `limit` addresses, ready ones first.
fn truncate(repacked: &mut Repacked, limit: usize) {
    let mut left = limit;
    for (ready, _) in repacked.values_mut() {
        ready.truncate(left);
        left -= ready.len();
    }
    for (_, not_ready) in repacked.values_mut() {
        not_ready.truncate(left);
        left -= not_ready.len();
    }
    repacked.retain(|_, (r, n)| !r.is_empty() || !n.is_empty());
}

fn endpoint_port(port: ResolvedPort) -> EndpointPort {
    EndpointPort {
        name: port.name,
        port: port.port,
        protocol: Some(port.protocol),
        app_protocol: port.app_protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(ip: &str) -> EndpointAddress {
        EndpointAddress {
            ip: ip.into(),
            ..Default::default()
        }
    }

    #[test]
    fn truncation_keeps_ready_addresses_first() {
        let port = |n| {
            vec![ResolvedPort {
                name: None,
                port: n,
                protocol: "TCP".into(),
                app_protocol: None,
            }]
        };
        let mut repacked: Repacked = BTreeMap::from([
            (
                port(80),
                (
                    vec![address("10.0.0.1"), address("10.0.0.2")],
                    vec![address("10.0.0.3")],
                ),
            ),
            (
                port(81),
                (vec![address("10.0.0.4")], vec![address("10.0.0.5")]),
            ),
        ]);
        truncate(&mut repacked, 4);
        let kept: Vec<(usize, usize)> =
            repacked.values().map(|(r, n)| (r.len(), n.len())).collect();
        assert_eq!(kept, [(2, 1), (1, 0)]);
    }
}
