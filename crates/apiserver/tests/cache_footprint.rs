//! What an object costs in the watch cache beyond its JSON: the cache holds every object
//! of the cluster, so its per-object overhead decides the server's memory at scale.
//!
//! A counting allocator (this test binary's global allocator) measures the bytes still
//! allocated after caching many copies of a typical controller-made pod.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use skiff_apiserver::cache::CachedObject;

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A pod as a ReplicaSet makes it and the API server stores it, defaults filled in.
fn pod(i: usize) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": format!("web-7c9f8d6b5d-{i:05}"),
            "generateName": "web-7c9f8d6b5d-",
            "namespace": "bench-bulk",
            "uid": format!("0d3b9a52-4c1e-4f0a-9b7d-{i:012x}"),
            "creationTimestamp": "2026-11-27T10:00:00Z",
            "labels": {
                "app.kubernetes.io/name": "web",
                "app.kubernetes.io/instance": format!("web-{}", i % 100),
                "pod-template-hash": "7c9f8d6b5d",
                "tier": "frontend"
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-7c9f8d6b5d", "uid": "6f1c2e4a-0b7d-4c1e-9a3f-000000000001",
                "controller": true, "blockOwnerDeletion": true
            }],
            // What the ReplicaSet controller's create and the kubelet's status writes
            // record, as upstream's would.
            "managedFields": [{
                "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-27T10:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:generateName": {}, "f:labels": {".": {}, "f:app.kubernetes.io/instance": {}, "f:app.kubernetes.io/name": {}, "f:pod-template-hash": {}, "f:tier": {}}, "f:ownerReferences": {".": {}, "k:{\"uid\":\"6f1c2e4a-0b7d-4c1e-9a3f-000000000001\"}": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {}, "f:ports": {".": {}, "k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:name": {}, "f:protocol": {}}}, "f:resources": {".": {}, "f:requests": {".": {}, "f:cpu": {}, "f:memory": {}}}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}}, "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {}, "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}
                }
            }, {
                "manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-27T10:00:05Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:phase": {}, "f:podIP": {}}},
                "subresource": "status"
            }]
        },
        "spec": {
            "containers": [{
                "name": "web",
                "image": "registry.example.com/team/web:1.27.3",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "nodeName": format!("node-{}", i % 50),
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {"phase": "Running", "qosClass": "Burstable", "podIP": "10.42.0.17"}
    })
}

#[test]
fn a_cached_pod_costs_little_beyond_its_json() {
    const COUNT: usize = 2_000;
    // Counted from before the source values exist, and after they are dropped, so that
    // what caching changes in them (it moves the type fields out) does not count.
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut values: Vec<(String, Value)> = (0..COUNT)
        .map(|i| {
            let value = pod(i);
            let key = format!(
                "/registry/pods/bench-bulk/{}",
                value["metadata"]["name"].as_str().unwrap()
            );
            (key, value)
        })
        .collect();

    let cached: Vec<Arc<CachedObject>> = values
        .iter_mut()
        .enumerate()
        .map(|(i, (key, value))| Arc::new(CachedObject::from_value(key, i as i64 + 1, value)))
        .collect();
    drop(values);
    let held = (LIVE_BYTES.load(Ordering::Relaxed) - before) as usize
        - cached.capacity() * std::mem::size_of::<Arc<CachedObject>>();

    let json: usize = cached.iter().map(|c| c.body.len()).sum();
    let overhead = (held - json) / COUNT;
    eprintln!(
        "per pod: {} bytes held, {} of them JSON, {overhead} overhead",
        held / COUNT,
        json / COUNT
    );
    assert!(
        overhead <= 550,
        "a cached pod holds {overhead} bytes beyond its {} bytes of JSON",
        json / COUNT
    );
}
