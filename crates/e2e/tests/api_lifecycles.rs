//! The lifecycle steps (with their watches) of kinds whose other conformance steps live
//! elsewhere: PriorityClasses (`preemption.go`), Jobs (`job.go`), EndpointSlices,
//! Ingresses and IngressClasses (`endpointslice.go`, `ingress.go`, `ingressclass.go`),
//! and a CustomResourceDefinition's status replaced (`custom_resource_definition.go`).

use kube::api::Patch;
use serde_json::{json, Value};
use skiff_e2e::api::Resource;
use skiff_e2e::shared;

fn meta(name: &str, labels: Value) -> Value {
    json!({"name": name, "labels": labels})
}

#[tokio::test]
async fn priority_classes() {
    let s = shared();
    let label = s.namespace("pcapi");
    let client = s.client().await;
    let classes = Resource::new(
        &client,
        "scheduling.k8s.io/v1",
        "PriorityClass",
        "priorityclasses",
        None,
    );
    let created = classes
        .lifecycle(&label, |name, labels| {
            json!({"metadata": meta(name, labels), "value": 1000, "description": "e2e"})
        })
        .await;
    assert_eq!(
        created["preemptionPolicy"], "PreemptLowerPriority",
        "defaulted"
    );

    // The description changes by PUT and by patch; the value may not change.
    let name = format!("{label}-fixed");
    classes
        .create(json!({"metadata": {"name": name}, "value": 2000, "description": "before"}))
        .await;
    let mut current = classes.get(&name).await;
    current["description"] = json!("updated");
    classes.replace(current).await;
    let patched = classes
        .patch(&name, Patch::Strategic(json!({"description": "patched"})))
        .await;
    assert_eq!(patched["description"], "patched");
    let refused = classes
        .try_patch(&name, Patch::Merge(json!({"value": 2001})))
        .await
        .expect_err("a PriorityClass's value changed");
    assert_eq!(refused.code, 422, "{refused:?}");
    assert!(refused.message.contains("value"), "{}", refused.message);
    // The system classes are listed with the others.
    let all: Vec<String> = classes
        .list("")
        .await
        .0
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(String::from))
        .collect();
    for expected in [
        "system-cluster-critical",
        "system-node-critical",
        name.as_str(),
    ] {
        assert!(
            all.iter().any(|n| n == expected),
            "{expected} not in {all:?}"
        );
    }
    classes.delete(&name).await;
}

#[tokio::test]
async fn jobs() {
    let s = shared();
    let ns = s.namespace("joblife");
    let client = s.client().await;
    let jobs = Resource::new(&client, "batch/v1", "Job", "jobs", Some(&ns));
    let created = jobs
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels), "spec": {"suspend": true, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"}]}}}})
        })
        .await;
    // Defaults and the selector the server generates.
    assert_eq!(created["spec"]["backoffLimit"], 6);
    let uid = created["metadata"]["uid"].as_str().unwrap_or_default();
    assert_eq!(
        created["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
}

#[tokio::test]
async fn endpoint_slices() {
    let s = shared();
    let ns = s.namespace("slicelife");
    let client = s.client().await;
    let slices = Resource::new(
        &client,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "endpointslices",
        Some(&ns),
    );
    slices
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels), "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
        })
        .await;
}

#[tokio::test]
async fn ingresses_and_ingress_classes() {
    let s = shared();
    let ns = s.namespace("inglife");
    let client = s.client().await;
    let classes = Resource::new(
        &client,
        "networking.k8s.io/v1",
        "IngressClass",
        "ingressclasses",
        None,
    );
    classes
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels), "spec": {"controller": "example.com/ingress"}})
        })
        .await;
    let ingresses = Resource::new(
        &client,
        "networking.k8s.io/v1",
        "Ingress",
        "ingresses",
        Some(&ns),
    );
    let created = ingresses
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels), "spec": {"rules": [{"host": "web.example.com",
                "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}})
        })
        .await;
    assert_eq!(created["metadata"]["generation"], 1);
}

/// The CRDs' resource, and a namespaced CRD `<plural>.<group>` of `kind` with version
/// `version` and `schema`, established.
async fn established_crd(
    client: &kube::Client,
    group: &str,
    (plural, kind): (&str, &str),
    version: &str,
    schema: Value,
) -> (Resource, String) {
    let crds = Resource::new(
        client,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        None,
    );
    let name = format!("{plural}.{group}");
    let singular = plural.trim_end_matches('s');
    crds.create(
        json!({"metadata": {"name": name}, "spec": {"group": group, "scope": "Namespaced",
        "names": {"plural": plural, "singular": singular, "kind": kind},
        "versions": [{"name": version, "served": true, "storage": true,
            "schema": {"openAPIV3Schema": schema}}]}}),
    )
    .await;
    crds.wait_established(&name).await;
    (crds, name)
}

#[tokio::test]
async fn a_crds_status_is_replaced() {
    let s = shared();
    let ns = s.namespace("crdstatus");
    let client = s.client().await;
    let group = format!("{ns}.example.com");
    // The CRD controller writes the status first; the test's write comes after it.
    let (crds, name) = established_crd(
        &client,
        &group,
        ("gizmos", "Gizmo"),
        "v1",
        json!({"type": "object"}),
    )
    .await;
    let mut status = crds.get_status(&name).await;
    let mut conditions = status["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    conditions.push(
        json!({"type": "StatusUpdate", "status": "True", "reason": "E2E",
        "message": "Set from an e2e test", "lastTransitionTime": "2026-01-01T00:00:00Z"}),
    );
    status["status"]["conditions"] = json!(conditions);
    status["spec"]["scope"] = json!("Cluster");
    let replaced = crds.replace_status(status).await;
    let has_update = |crd: &Value| {
        crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "StatusUpdate" && c["reason"] == "E2E")
    };
    assert!(has_update(&replaced), "{replaced}");
    let got = crds.get(&name).await;
    assert!(has_update(&got), "{got}");
    assert_eq!(
        got["spec"]["scope"], "Namespaced",
        "a status write left the spec"
    );
    crds.delete(&name).await;
}

/// Custom objects through the common lifecycle walk, whose watch sees two objects
/// added, one modified, both deleted (`crd_watch.go`).
#[tokio::test]
async fn custom_objects_are_watched() {
    let s = shared();
    let ns = s.namespace("crdwatch");
    let client = s.client().await;
    let group = format!("{ns}.example.com");
    let (crds, name) = established_crd(
        &client,
        &group,
        ("noxus", "WishIHadChosenNoxu"),
        "v1beta1",
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    )
    .await;
    let noxus = Resource::new(
        &client,
        &format!("{group}/v1beta1"),
        "WishIHadChosenNoxu",
        "noxus",
        Some(&ns),
    );
    let created = noxus
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels), "content": {"key": "value"}, "num": {"num1": 9223372036854775807_i64}})
        })
        .await;
    assert_eq!(created["num"]["num1"], 9223372036854775807_i64);
    crds.delete(&name).await;
}

/// Services and Endpoints through the common walk: its collection delete is one
/// `DELETE` on the collection (`service.go`, `endpoints.go`).
#[tokio::test]
async fn services_and_endpoints() {
    let s = shared();
    let ns = s.namespace("svclife");
    let client = s.client().await;
    let services = Resource::new(&client, "v1", "Service", "services", Some(&ns));
    let created = services
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels), "spec": {"ports": [{"port": 80}]}})
        })
        .await;
    assert!(created["spec"]["clusterIP"].is_string(), "{created}");
    let endpoints = Resource::new(&client, "v1", "Endpoints", "endpoints", Some(&ns));
    endpoints
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels),
                "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"name": "http", "port": 80}]}]})
        })
        .await;
}
