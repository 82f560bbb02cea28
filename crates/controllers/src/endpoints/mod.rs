//! The controllers that publish which pods back a Service: the EndpointSlice controller
//! ([`slices`], what the service proxy and DNS read) and the legacy Endpoints controller
//! ([`legacy`], `v1` Endpoints, which upstream still keeps for old clients).
//!
//! Both follow the same rules, kept here: which pods a Service selects, which of them
//! belong in its endpoints at all, whether each is ready, serving or terminating, its
//! hostname, and which port each Service port reaches on it (named target ports are
//! resolved per pod, so pods of one Service can listen on different numbers).

pub mod legacy;
pub mod slices;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::Store;
use kube::ResourceExt;

use crate::controller::key_of;
use crate::informer::InformerFactory;
use crate::pods;
use crate::queue::WorkQueue;

/// The label that ties an EndpointSlice (and the proxy's and DNS's view) to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label upstream puts on the endpoints of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The Services and pods an endpoints controller reads, with the handlers that queue a
/// Service whenever it or one of the pods it selects (before or after a change) changes.
pub(crate) struct ServicePods {
    pub services: Store<Service>,
    pub pods: Store<Pod>,
}

impl ServicePods {
    pub fn watch(factory: &InformerFactory, queue: &Arc<WorkQueue>) -> ServicePods {
        let service_informer = factory.informer::<Service>();
        let pod_informer = factory.informer::<Pod>();
        service_informer.enqueue_into(queue.clone());
        let services = service_informer.store();
        let pod_queue = queue.clone();
        let pod_services = services.clone();
        pod_informer.add_handler(move |old, new| {
            for pod in [old, new].into_iter().flatten() {
                for service in selecting(&pod_services, pod) {
                    pod_queue.add(key_of(service.as_ref()));
                }
            }
        });
        ServicePods {
            services,
            pods: pod_informer.store(),
        }
    }
}

/// The pods of the Service's namespace its selector picks.
pub(crate) fn pods_of(pods: &Store<Pod>, service: &Service) -> Vec<Arc<Pod>> {
    let ns = service.metadata.namespace.as_deref();
    pods.state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == ns && selects(service, p))
        .collect()
}

fn selecting(services: &Store<Service>, pod: &Pod) -> Vec<Arc<Service>> {
    let ns = pod.metadata.namespace.as_deref();
    services
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == ns && selects(s, pod))
        .collect()
}

/// The Service's selector, when it has one the endpoint controllers act on: Services
/// without one have their endpoints written by someone else, and ExternalName Services
/// have none.
pub fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = selector(service) else {
        return false;
    };
    let labels = pod.labels();
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn publishes_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// What the endpoint controllers publish about one pod of a Service.
#[derive(Debug, Clone)]
pub struct PodEndpoint {
    /// The pod's IPs, IPv4 and IPv6 alike (the caller picks its family).
    pub ips: Vec<String>,
    /// Ready to take new traffic: ready and not terminating (or the Service publishes
    /// not-ready addresses).
    pub ready: bool,
    /// Ready, terminating or not: the proxy falls back to serving, terminating endpoints
    /// when none is ready.
    pub serving: bool,
    pub terminating: bool,
    /// Set when the pod's `subdomain` names this Service, so DNS gives the pod a name.
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    pub target_ref: ObjectReference,
}

/// The endpoint of `pod` for `service`, if the pod belongs in its endpoints at all: it
/// has an IP, has not finished, and is not terminating unless `include_terminating`
/// (upstream's `ShouldPodBeInEndpoints`).
pub fn pod_endpoint(
    service: &Service,
    pod: &Pod,
    include_terminating: bool,
) -> Option<PodEndpoint> {
    let status = pod.status.as_ref()?;
    let mut ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if ips.is_empty() {
        ips.extend(status.pod_ip.clone().filter(|ip| !ip.is_empty()));
    }
    if ips.is_empty() || matches!(pods::phase(pod), "Succeeded" | "Failed") {
        return None;
    }
    let terminating = pod.metadata.deletion_timestamp.is_some();
    if terminating && !include_terminating {
        return None;
    }
    let publish = publishes_not_ready(service);
    let serving = publish || pods::is_ready(pod);
    let spec = pod.spec.as_ref();
    let hostname = spec
        .filter(|s| s.subdomain.as_deref() == service.metadata.name.as_deref())
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    Some(PodEndpoint {
        ips,
        ready: publish || (serving && !terminating),
        serving,
        terminating,
        hostname,
        node_name: spec.and_then(|s| s.node_name.clone()),
        target_ref: ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        },
    })
}

/// One Service port as it reaches one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResolvedPort {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

/// The Service's ports as they reach `pod`; a named target port the pod does not declare
/// leaves that port out (upstream's `FindPort`), as upstream does.
pub fn pod_ports(service: &Service, pod: &Pod) -> Vec<ResolvedPort> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter_map(|port| {
            Some(ResolvedPort {
                name: port.name.clone().filter(|n| !n.is_empty()),
                port: target_port(port, pod)?,
                protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

fn target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None | Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            // Sidecars (restartable init containers) serve too.
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// Labels every endpoints object of a Service carries: the Service's own, plus the
/// headless marker; `extra` adds the controller's own.
pub fn endpoint_labels(service: &Service, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = service
        .labels()
        .iter()
        .filter(|(k, _)| k.as_str() != SERVICE_NAME_LABEL && k.as_str() != slices::MANAGED_BY_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    for (k, v) in extra {
        labels.insert((*k).into(), (*v).into());
    }
    labels
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "svc-uid", "labels": {"app": "web"}},
            "spec": spec,
        }))
        .expect("service")
    }

    pub fn pod(name: &str, ip: &str, ready: bool, extra_spec: serde_json::Value) -> Pod {
        let mut spec = json!({"nodeName": "node-1", "containers": [{"name": "c", "image": "i",
            "ports": [{"name": "http", "containerPort": 8080}]}]});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid"), "labels": {"app": "web"}},
            "spec": spec,
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .expect("pod")
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [
            {"name": "web", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090, "targetPort": "metrics"},
            {"name": "plain", "port": 81},
        ]}));
        let ports = pod_ports(&svc, &pod("a", "10.0.0.1", true, json!({})));
        let numbers: Vec<(Option<&str>, i32)> =
            ports.iter().map(|p| (p.name.as_deref(), p.port)).collect();
        // "metrics" is not declared by the pod, so that port is left out.
        assert_eq!(numbers, [(Some("web"), 8080), (Some("plain"), 81)]);
    }

    #[test]
    fn readiness_terminating_and_hostnames() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let ready = pod_endpoint(
            &svc,
            &pod(
                "a",
                "10.0.0.1",
                true,
                json!({"hostname": "a", "subdomain": "web"}),
            ),
            true,
        )
        .expect("endpoint");
        assert!(ready.ready && ready.serving && !ready.terminating);
        assert_eq!(ready.hostname.as_deref(), Some("a"));
        assert_eq!(ready.node_name.as_deref(), Some("node-1"));

        let mut going = pod(
            "b",
            "10.0.0.2",
            true,
            json!({"hostname": "b", "subdomain": "other"}),
        );
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let endpoint = pod_endpoint(&svc, &going, true).expect("terminating endpoint");
        assert!(!endpoint.ready && endpoint.serving && endpoint.terminating);
        assert_eq!(endpoint.hostname, None, "subdomain names another service");
        assert!(pod_endpoint(&svc, &going, false).is_none());

        let not_ready =
            pod_endpoint(&svc, &pod("c", "10.0.0.3", false, json!({})), true).expect("endpoint");
        assert!(!not_ready.ready && !not_ready.serving);
        let publishing =
            service(json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true}));
        let published = pod_endpoint(&publishing, &pod("c", "10.0.0.3", false, json!({})), true)
            .expect("endpoint");
        assert!(published.ready && published.serving);

        let no_ip = pod("d", "", true, json!({}));
        assert!(pod_endpoint(&svc, &no_ip, true).is_none());
        let mut done = pod("e", "10.0.0.5", false, json!({}));
        if let Some(status) = done.status.as_mut() {
            status.phase = Some("Succeeded".into());
        }
        assert!(pod_endpoint(&svc, &done, true).is_none());
    }

    #[test]
    fn selectors_and_labels() {
        let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        assert!(selects(&svc, &pod("a", "10.0.0.1", true, json!({}))));
        let external = service(
            json!({"type": "ExternalName", "externalName": "example.com", "selector": {"app": "web"}}),
        );
        assert!(selector(&external).is_none());
        let manual = service(json!({"ports": [{"port": 80}]}));
        assert!(!selects(&manual, &pod("a", "10.0.0.1", true, json!({}))));
        let labels = endpoint_labels(&svc, &[(SERVICE_NAME_LABEL, "web")]);
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(labels.get(HEADLESS_LABEL).map(String::as_str), Some(""));
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
    }
}
