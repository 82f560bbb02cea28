//! Builders for the unit tests: API objects from compact descriptions.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

pub fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .expect("service")
}

/// An endpoint: (ip, node, ready, serving, terminating).
pub type Ep<'a> = (&'a str, &'a str, bool, bool, bool);

pub fn ready(ip: &str, node: &str) -> Ep<'static> {
    let ip: &'static str = Box::leak(ip.to_string().into_boxed_str());
    let node: &'static str = Box::leak(node.to_string().into_boxed_str());
    (ip, node, true, true, false)
}

pub fn slice(
    ns: &str,
    service: &str,
    name: &str,
    ports: serde_json::Value,
    endpoints: &[Ep<'_>],
) -> EndpointSlice {
    let endpoints: Vec<serde_json::Value> = endpoints
        .iter()
        .map(|(ip, node, ready, serving, terminating)| {
            json!({
                "addresses": [ip],
                "nodeName": node,
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "namespace": ns,
            "name": name,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .expect("slice")
}

use crate::model::{Endpoint, Model, Protocol, ServicePort, ServicePortName};

/// A TCP service port `ns/name` on `cluster_ip:80` with endpoints `ips` on port 8080.
pub fn service_port(ns: &str, name: &str, cluster_ip: &str, ips: &[&str]) -> ServicePort {
    let endpoints: Vec<Endpoint> = ips
        .iter()
        .map(|ip| Endpoint {
            ip: ip.parse().expect("ip"),
            port: 8080,
        })
        .collect();
    ServicePort {
        name: ServicePortName {
            namespace: ns.into(),
            name: name.into(),
            port: "http".into(),
            protocol: Protocol::Tcp,
        },
        cluster_ip: cluster_ip.parse().expect("ip"),
        port: 80,
        node_port: None,
        external_ips: Vec::new(),
        affinity_timeout: None,
        external_local: false,
        health_check_node_port: None,
        any_endpoints: !endpoints.is_empty(),
        cluster_endpoints: endpoints.clone(),
        external_endpoints: endpoints,
    }
}

pub fn model_of(ports: impl IntoIterator<Item = ServicePort>) -> Model {
    Model {
        services: ports.into_iter().map(|p| (p.name.clone(), p)).collect(),
    }
}
