//! Resource arithmetic: what a node offers and what a pod asks for.
//!
//! A pod's effective request follows upstream's rules (`component-helpers` `PodRequests`):
//! the sum of its regular containers plus its sidecars (init containers with
//! `restartPolicy: Always`), or, if larger, the peak during init (each ordinary init
//! container runs alone beside the sidecars started before it), plus `spec.overhead`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::{parse_milli, parse_value};

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// Upstream's defaults for containers that request nothing, used only for scoring so that
/// zero-request pods still spread (`schedutil.DefaultMilliCPURequest` / `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of resources: CPU in millicores, the rest in units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pod_number: i64,
    /// Extended and hugepages resources, by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// Reads a `ResourceList`; unparsable quantities count as zero (the API server validates
    /// them, so this only guards against a misbehaving server).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resource {
        let mut r = Resource::default();
        for (name, q) in list.into_iter().flatten() {
            r.add_named(name, q);
        }
        r
    }

    fn add_named(&mut self, name: &str, q: &Quantity) {
        match name {
            CPU => self.milli_cpu += parse_milli(&q.0).unwrap_or(0),
            MEMORY => self.memory += parse_value(&q.0).unwrap_or(0),
            EPHEMERAL_STORAGE => self.ephemeral_storage += parse_value(&q.0).unwrap_or(0),
            PODS => self.allowed_pod_number += parse_value(&q.0).unwrap_or(0),
            other if is_scalar(other) => {
                *self.scalar.entry(other.to_string()).or_default() += parse_value(&q.0).unwrap_or(0)
            }
            _ => {}
        }
    }

    pub fn get(&self, name: &str) -> i64 {
        match name {
            CPU => self.milli_cpu,
            MEMORY => self.memory,
            EPHEMERAL_STORAGE => self.ephemeral_storage,
            PODS => self.allowed_pod_number,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    pub fn add(&mut self, other: &Resource) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pod_number += other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, other: &Resource) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pod_number -= other.allowed_pod_number;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each resource set to the larger of the two.
    pub fn max_with(&mut self, other: &Resource) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.allowed_pod_number = self.allowed_pod_number.max(other.allowed_pod_number);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// Extended resources (`example.com/gpu`), hugepages and attachable volumes: anything the
/// fit check compares that is not one of the native four.
pub fn is_scalar(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && !name.starts_with("kubernetes.io/"))
}

fn container_requests(c: &Container) -> Resource {
    let resources = c.resources.as_ref();
    // Upstream defaulting copies limits into missing requests; do the same in case the
    // API server did not.
    let mut r = Resource::from_list(resources.and_then(|r| r.requests.as_ref()));
    if let Some(limits) = resources.and_then(|r| r.limits.as_ref()) {
        let requests = resources.and_then(|r| r.requests.as_ref());
        for (name, q) in limits {
            if requests.is_none_or(|req| !req.contains_key(name)) {
                r.add_named(name, q);
            }
        }
    }
    r
}

/// A container's requests while an in-place resize is under way, as upstream counts them:
/// the most of what the spec asks, what the kubelet reports the container running with
/// and what it allocated; or, when the node found the resize infeasible, only the last
/// two (the spec's values will never be granted there).
fn with_resize(pod: &Pod, c: &Container, spec: Resource) -> Resource {
    let Some(status) = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|list| list.iter().find(|s| s.name == c.name))
        .filter(|s| s.resources.is_some())
    else {
        return spec;
    };
    let infeasible = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == "PodResizePending"
                    && c.status == "True"
                    && c.reason.as_deref() == Some("Infeasible")
            })
        });
    let mut r = Resource::from_list(status.resources.as_ref().and_then(|r| r.requests.as_ref()));
    r.max_with(&Resource::from_list(status.allocated_resources.as_ref()));
    if !infeasible {
        r.max_with(&spec);
    }
    r
}

fn non_zero(mut r: Resource) -> Resource {
    if r.milli_cpu == 0 {
        r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
    }
    if r.memory == 0 {
        r.memory = DEFAULT_MEMORY_REQUEST;
    }
    r
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's effective request. `non_zero` substitutes upstream's scoring defaults for
/// containers that request no cpu or memory.
pub fn pod_requests(pod: &Pod, non_zero_defaults: bool) -> Resource {
    let Some(spec) = pod.spec.as_ref() else {
        return Resource::default();
    };
    let per = |c: &Container| {
        let r = with_resize(pod, c, container_requests(c));
        if non_zero_defaults {
            non_zero(r)
        } else {
            r
        }
    };
    let mut total = Resource::default();
    for c in &spec.containers {
        total.add(&per(c));
    }
    let mut sidecars = Resource::default();
    let mut init_peak = Resource::default();
    for c in spec.init_containers.iter().flatten() {
        let r = per(c);
        if is_sidecar(c) {
            sidecars.add(&r);
            init_peak.max_with(&sidecars);
        } else {
            let mut during = r;
            during.add(&sidecars);
            init_peak.max_with(&during);
        }
    }
    total.add(&sidecars);
    total.max_with(&init_peak);
    // Pod-level resources (spec.resources) replace the container aggregate for the
    // resources they name, as upstream's PodLevelResources feature does.
    if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
        for name in [CPU, MEMORY] {
            if let Some(q) = pod_level.get(name) {
                let v = if name == CPU {
                    parse_milli(&q.0).unwrap_or(0)
                } else {
                    parse_value(&q.0).unwrap_or(0)
                };
                match name {
                    CPU => total.milli_cpu = v,
                    _ => total.memory = v,
                }
            }
        }
    }
    if let Some(overhead) = spec.overhead.as_ref() {
        total.add(&Resource::from_list(Some(overhead)));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
    }

    #[test]
    fn sums_containers_and_adds_overhead() {
        let p = pod(json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}}
            ],
            "overhead": {"cpu": "10m"}
        }));
        let r = pod_requests(&p, false);
        assert_eq!(r.milli_cpu, 310);
        assert_eq!(r.memory, 1 << 30);
        assert_eq!(r.scalar.get("example.com/gpu"), Some(&1));
    }

    #[test]
    fn init_containers_take_the_peak() {
        // Upstream's documented example: init peak 2 cpu beats the containers' 1.
        let p = pod(json!({
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "2"}}},
                {"name": "i2", "resources": {"requests": {"cpu": "1"}}}
            ],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]
        }));
        assert_eq!(pod_requests(&p, false).milli_cpu, 2000);
    }

    #[test]
    fn sidecars_add_to_containers_and_to_later_init_containers() {
        let p = pod(json!({
            "initContainers": [
                {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
                {"name": "i", "resources": {"requests": {"cpu": "2"}}}
            ],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]
        }));
        // max(1 + 0.5, 2 + 0.5)
        assert_eq!(pod_requests(&p, false).milli_cpu, 2500);
    }

    #[test]
    fn limits_stand_in_for_missing_requests_and_non_zero_defaults() {
        let p = pod(json!({"containers": [
            {"name": "a", "resources": {"limits": {"memory": "64Mi"}}},
            {"name": "b"}
        ]}));
        let r = pod_requests(&p, false);
        assert_eq!((r.milli_cpu, r.memory), (0, 64 << 20));
        let nz = pod_requests(&p, true);
        assert_eq!(nz.milli_cpu, 200);
        assert_eq!(nz.memory, (64 << 20) + DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn a_resize_counts_the_most_of_spec_and_status_unless_infeasible() {
        let resized = |reason: &str| {
            let mut p = pod(json!({"containers": [
                {"name": "a", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}}
            ]}));
            p.status = serde_json::from_value(json!({
                "containerStatuses": [{
                    "name": "a", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                    "resources": {"requests": {"cpu": "500m", "memory": "128Mi"}},
                    "allocatedResources": {"cpu": "500m", "memory": "128Mi"}
                }],
                "conditions": [{"type": "PodResizePending", "status": "True", "reason": reason}]
            }))
            .expect("status");
            pod_requests(&p, false)
        };
        // Deferred: the node may yet grant the spec, so it is counted.
        let r = resized("Deferred");
        assert_eq!((r.milli_cpu, r.memory), (2000, 128 << 20));
        // Infeasible: it never will; what runs is what counts.
        let r = resized("Infeasible");
        assert_eq!((r.milli_cpu, r.memory), (500, 128 << 20));
    }
}
