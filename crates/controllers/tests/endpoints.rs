//! The Endpoints and EndpointSlice controllers against a real API server, read back with
//! real kubectl: which pods a Service lists, their ready/serving/terminating conditions,
//! hostnames, named target ports, slices split at the limit, the placeholder slice of a
//! Service with no pods, and cleanup when the Service goes. A simulated node; the test
//! plays its kubelet, giving each pod an IP.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// Plays the node's kubelet: a new pod gets an IP (from its `ip` annotation) and is
/// Running, and Ready unless its `ready` label says `no`.
fn play_kubelet(cluster: &Cluster, ns: &str) -> tokio::task::JoinHandle<()> {
    cluster.play_kubelet(ns, |api, pod| async move {
        let running = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .is_some();
        if pod.metadata.deletion_timestamp.is_some() || running {
            return;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ip = pod.annotations().get("ip").cloned().unwrap_or_default();
        let ready = pod.labels().get("ready").map(String::as_str) != Some("no");
        let patch = json!({"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
        }});
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    })
}

fn pod_yaml(ns: &str, name: &str, ip: &str, extra_labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations: {{ip: \"{ip}\"}}\n  labels: {{app: web{extra_labels}}}\n  finalizers: [test.skiff.dev/hold]\nspec:\n  nodeName: ep-node\n  hostname: {name}\n  subdomain: web\n  containers:\n  - name: c\n    image: busybox\n    ports: [{{name: http, containerPort: 8080}}]\n"
    )
}

/// The Service's slices as kubectl lists them.
async fn slices(cluster: &Cluster, ns: &str) -> Vec<Value> {
    let out = cluster
        .kubectl(&[
            "get",
            "endpointslices",
            "-n",
            ns,
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "json",
        ])
        .await;
    let list: Value = serde_json::from_str(&out).expect("slice list");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Each endpoint of the Service's slices: (address, ready, serving, terminating).
async fn slice_endpoints(cluster: &Cluster, ns: &str) -> BTreeSet<(String, bool, bool, bool)> {
    slices(cluster, ns)
        .await
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            let c = &e["conditions"];
            (
                e["addresses"][0].as_str().unwrap_or_default().to_string(),
                c["ready"] == true,
                c["serving"] == true,
                c["terminating"] == true,
            )
        })
        .collect()
}

/// The Endpoints object's (ready, not ready) addresses.
async fn legacy_addresses(cluster: &Cluster, ns: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let out = cluster
        .kubectl(&["get", "endpoints", "web", "-n", ns, "-o", "json"])
        .await;
    let endpoints: Value = serde_json::from_str(&out).expect("endpoints");
    let collect = |field: &str| -> BTreeSet<String> {
        endpoints["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["ip"].as_str().map(String::from))
            .collect()
    };
    (collect("addresses"), collect("notReadyAddresses"))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn endpoint(ip: &str, ready: bool, serving: bool, terminating: bool) -> (String, bool, bool, bool) {
    (ip.to_string(), ready, serving, terminating)
}

/// Finishes a pod's graceful deletion, as its kubelet would once the containers stopped.
async fn finish_deletion(pods: &Api<Pod>, name: &str) {
    let patch = json!({"metadata": {"finalizers": null}});
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("finalizer removed");
    let _ = pods
        .delete(name, &DeleteParams::default().grace_period(0))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_the_pods_of_a_service() {
    let cluster = cluster_with(skiff_controllers::ControllerManagerArgs {
        max_endpoints_per_slice: 2,
        ..Default::default()
    })
    .await;
    let ns = cluster.namespace("endpoints");
    skiff_e2e::add_simulated_node(
        &cluster.client,
        "ep-node",
        "4",
        json!({"topology.kubernetes.io/zone": "zone-a"}),
        json!({}),
    )
    .await;
    let _kubelet = play_kubelet(&cluster, &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);

    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}, labels: {{tier: front}}}}\nspec:\n  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: http}}]\n"
        ))
        .await;
    // No pods yet: one empty placeholder slice, and Endpoints with no subsets.
    let placeholder = eventually("the placeholder slice", WAIT, || async {
        let slices = slices(&cluster, &ns).await;
        (slices.len() == 1).then(|| slices[0].clone())
    })
    .await;
    assert_eq!(placeholder["endpoints"], json!([]), "{placeholder}");
    assert_eq!(placeholder["addressType"], "IPv4");
    assert_eq!(
        placeholder["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(placeholder["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        placeholder["metadata"]["ownerReferences"][0]["kind"],
        "Service"
    );
    assert_eq!(
        placeholder["metadata"]["ownerReferences"][0]["controller"],
        true
    );

    for (name, ip, labels) in [
        ("a", "10.200.0.1", ""),
        ("b", "10.200.0.2", ""),
        ("c", "10.200.0.3", ", ready: \"no\""),
    ] {
        cluster.apply(&pod_yaml(&ns, name, ip, labels)).await;
    }
    let expected = BTreeSet::from([
        endpoint("10.200.0.1", true, true, false),
        endpoint("10.200.0.2", true, true, false),
        endpoint("10.200.0.3", false, false, false),
    ]);
    eventually("three endpoints in the slices", WAIT, || async {
        (slice_endpoints(&cluster, &ns).await == expected).then_some(())
    })
    .await;
    let all = slices(&cluster, &ns).await;
    assert_eq!(all.len(), 2, "three endpoints at two per slice");
    for slice in &all {
        assert_eq!(
            slice["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
            let pod = endpoint["targetRef"]["name"].as_str().unwrap_or_default();
            assert_eq!(
                endpoint["hostname"], pod,
                "hostname from the pod: {endpoint}"
            );
            assert_eq!(endpoint["nodeName"], "ep-node");
            assert_eq!(endpoint["zone"], "zone-a", "the node's zone: {endpoint}");
            assert_eq!(endpoint["targetRef"]["kind"], "Pod");
        }
    }
    let (ready, not_ready) = eventually("the Endpoints object", WAIT, || async {
        let addresses = legacy_addresses(&cluster, &ns).await;
        (addresses.0.len() == 2).then_some(addresses)
    })
    .await;
    assert_eq!(ready, set(&["10.200.0.1", "10.200.0.2"]));
    assert_eq!(not_ready, set(&["10.200.0.3"]));
    let legacy = cluster
        .kubectl(&["get", "endpoints", "web", "-n", &ns, "-o", "json"])
        .await;
    let legacy: Value = serde_json::from_str(&legacy).expect("endpoints");
    assert_eq!(
        legacy["subsets"][0]["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        legacy["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"],
        "true"
    );
    // kubectl describe reads the slices.
    let described = cluster
        .kubectl(&["describe", "service", "web", "-n", &ns])
        .await;
    assert!(
        described.contains("10.200.0.1:8080") && described.contains("10.200.0.2:8080"),
        "{described}"
    );

    // A pod being deleted stays in the slices as terminating (and serving while
    // ready), and leaves the Endpoints object at once.
    pods.delete("a", &DeleteParams::default().grace_period(30))
        .await
        .expect("delete a");
    let terminating = BTreeSet::from([
        endpoint("10.200.0.1", false, true, true),
        endpoint("10.200.0.2", true, true, false),
        endpoint("10.200.0.3", false, false, false),
    ]);
    eventually("a terminating endpoint", WAIT, || async {
        (slice_endpoints(&cluster, &ns).await == terminating).then_some(())
    })
    .await;
    eventually("a gone from Endpoints", WAIT, || async {
        (legacy_addresses(&cluster, &ns).await.0 == set(&["10.200.0.2"])).then_some(())
    })
    .await;

    // The last pods go: one placeholder again, and no subsets.
    for name in ["b", "c"] {
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for name in ["a", "b", "c"] {
        finish_deletion(&pods, name).await;
    }
    eventually("only the placeholder left", WAIT, || async {
        let slices = slices(&cluster, &ns).await;
        (slices.len() == 1 && slices[0]["endpoints"] == json!([])).then_some(())
    })
    .await;
    eventually("Endpoints emptied", WAIT, || async {
        let (ready, not_ready) = legacy_addresses(&cluster, &ns).await;
        (ready.is_empty() && not_ready.is_empty()).then_some(())
    })
    .await;

    // The Service goes: so do its slices (owner references) and Endpoints.
    cluster
        .kubectl(&["delete", "service", "web", "-n", &ns])
        .await;
    eventually("slices and Endpoints removed", WAIT, || async {
        let endpoints = cluster
            .server
            .kubectl(&["get", "endpoints", "web", "-n", &ns]);
        (slices(&cluster, &ns).await.is_empty() && !endpoints.status.success()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_of_services_without_selectors_are_mirrored() {
    let cluster = cluster().await;
    let ns = cluster.namespace("manual");
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: manual, namespace: {ns}}}\nspec:\n  ports: [{{port: 80}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: manual, namespace: {ns}}}\nsubsets: [{{addresses: [{{ip: 192.0.2.10}}], ports: [{{port: 80}}]}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  type: ExternalName\n  externalName: example.com\n  selector: {{app: web}}\n"
        ))
        .await;
    // The controllers have seen the Services by the time the mirror is made: nothing
    // was written over, and nothing made for the ExternalName Service.
    // Hand-written Endpoints are mirrored into a slice of their own.
    let mirrored = eventually("the mirrored slice", WAIT, || async {
        let out = cluster
            .kubectl(&[
                "get",
                "endpointslices",
                "-n",
                &ns,
                "-l",
                "kubernetes.io/service-name=manual",
                "-o",
                "json",
            ])
            .await;
        let list: Value = serde_json::from_str(&out).expect("slice list");
        list["items"]
            .as_array()
            .and_then(|items| items.first().cloned())
    })
    .await;
    assert_eq!(
        mirrored["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslicemirroring-controller.k8s.io"
    );
    assert_eq!(mirrored["endpoints"][0]["addresses"][0], "192.0.2.10");
    assert_eq!(mirrored["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(mirrored["ports"][0]["port"], 80);
    cluster
        .kubectl(&["patch", "endpoints", "manual", "-n", &ns, "--type=merge", "-p",
            r#"{"subsets": [{"addresses": [{"ip": "192.0.2.11"}], "notReadyAddresses": [{"ip": "192.0.2.12"}], "ports": [{"port": 80}]}]}"#])
        .await;
    eventually("the mirror to follow the Endpoints", WAIT, || async {
        let out = cluster
            .kubectl(&[
                "get",
                "endpointslices",
                "-n",
                &ns,
                "-l",
                "kubernetes.io/service-name=manual",
                "-o",
                "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready} {end}",
            ])
            .await;
        (out.trim() == "192.0.2.11=true 192.0.2.12=false").then_some(())
    })
    .await;
    let manual = cluster
        .kubectl(&[
            "get",
            "endpoints",
            "manual",
            "-n",
            &ns,
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}",
        ])
        .await;
    assert_eq!(manual, "192.0.2.11");
    assert!(
        slices(&cluster, &ns).await.is_empty(),
        "no slices for an ExternalName Service"
    );
    let none = cluster
        .server
        .kubectl(&["get", "endpoints", "web", "-n", &ns]);
    assert!(
        !none.status.success(),
        "no Endpoints for an ExternalName Service"
    );
}
