//! The horizontal pod autoscaler on custom and external metrics: Pods and Object metrics
//! from `custom.metrics.k8s.io`, External ones from `external.metrics.k8s.io`, both
//! served by an extension API server (the e2e harness's, answering from fixtures) that
//! the API server aggregates, as a metrics adapter (prometheus-adapter, KEDA) would be.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use skiff_e2e::aggregated::{wait_for_availability, ExtensionServer};

const WAIT: Duration = Duration::from_secs(60);

fn deployment(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    )
}

/// An autoscaler of Deployment `name` (1 to 10 replicas) on one metric (YAML, indented
/// for the list).
fn autoscaler(name: &str, metric: &str) -> String {
    format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: {name}}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}\n  minReplicas: 1\n  maxReplicas: 10\n  metrics:\n{metric}"
    )
}

fn metric_value(ns: &str, kind: &str, object: &str, metric: &str, value: &str) -> Value {
    json!({
        "describedObject": {"kind": kind, "namespace": ns, "name": object, "apiVersion": "/v1"},
        "metric": {"name": metric},
        "timestamp": jiff::Timestamp::now().to_string(),
        "windowSeconds": 60,
        "value": value,
    })
}

async fn replicas(cluster: &Cluster, ns: &str, name: &str) -> i64 {
    let deployment = cluster.server.json(&["deployment", name, "-n", ns]);
    deployment["spec"]["replicas"].as_i64().unwrap_or(-1)
}

async fn wait_for_replicas(cluster: &Cluster, ns: &str, name: &str, wanted: i64) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        // The autoscaler writes its status after the scale: both must say `wanted`.
        let scaled = replicas(cluster, ns, name).await == wanted;
        let hpa = cluster.server.json(&["hpa", name, "-n", ns]);
        if scaled && hpa["status"]["desiredReplicas"] == wanted {
            return hpa;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} was not scaled to {wanted}; its autoscaler: {}",
            hpa["status"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_and_external_metrics_scale_deployments() {
    let cluster = cluster().await;
    let ns = cluster.namespace("hpa-metrics");
    let _node = cluster.run_node(&ns);
    let server = &cluster.server;
    let adapter = tokio::task::block_in_place(|| {
        let adapter = ExtensionServer::start(server, &ns, "metrics-adapter");
        adapter.set_fixture(
            "/apis/custom.metrics.k8s.io/v1beta2",
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "custom.metrics.k8s.io/v1beta2", "resources": [
                {"name": "pods/packets-per-second", "singularName": "", "namespaced": true, "kind": "MetricValueList", "verbs": ["get"]},
                {"name": "services/requests-per-second", "singularName": "", "namespaced": true, "kind": "MetricValueList", "verbs": ["get"]},
            ]}),
        );
        adapter.set_fixture(
            "/apis/external.metrics.k8s.io/v1beta1",
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "external.metrics.k8s.io/v1beta1", "resources": [
                {"name": "queue_messages_ready", "singularName": "", "namespaced": true, "kind": "ExternalMetricValueList", "verbs": ["get"]},
            ]}),
        );
        adapter.expose(server);
        for (group, version) in [
            ("custom.metrics.k8s.io", "v1beta2"),
            ("external.metrics.k8s.io", "v1beta1"),
        ] {
            server.ok_with_input(&["apply", "-f", "-"], &adapter.api_service(group, version));
            wait_for_availability(server, &format!("{version}.{group}"), "True", "Passed");
        }
        adapter
    });
    let custom = format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}");

    // Object: a Service's 250 requests per second against a target of 100 in total:
    // 2.5 times the one ready pod, so 3 replicas.
    adapter.set_fixture(
        &format!("{custom}/services/by-object/requests-per-second"),
        json!({"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta2",
               "items": [metric_value(&ns, "Service", "by-object", "requests-per-second", "250")]}),
    );
    // External: two series of a queue selected by label, 80 messages in all, against 20
    // per pod: 4 replicas.
    adapter.set_fixture(
        &format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/queue_messages_ready"),
        json!({"kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1", "items": [
            {"metricName": "queue_messages_ready", "metricLabels": {"queue": "jobs"}, "timestamp": jiff::Timestamp::now().to_string(), "value": "60"},
            {"metricName": "queue_messages_ready", "metricLabels": {"queue": "jobs"}, "timestamp": jiff::Timestamp::now().to_string(), "value": "20"},
        ]}),
    );
    for name in ["by-object", "by-external", "by-pods", "by-missing"] {
        cluster.apply_in(&ns, &deployment(name)).await;
    }
    // Pods: each pod's packets per second, against an average of 10: the one pod at 30
    // asks for 3.
    let pods = eventually("the by-pods pod", WAIT, || async {
        let pods = active_pods(&cluster.client, &ns).await;
        let names: Vec<String> = pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .filter(|n| n.starts_with("by-pods-"))
            .collect();
        (!names.is_empty()).then_some(names)
    })
    .await;
    adapter.set_fixture(
        &format!("{custom}/pods/*/packets-per-second"),
        json!({"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta2",
               "items": pods.iter().map(|p| metric_value(&ns, "Pod", p, "packets-per-second", "30")).collect::<Vec<_>>()}),
    );
    for (name, metric) in [
        ("by-object", "  - type: Object\n    object:\n      describedObject: {apiVersion: v1, kind: Service, name: by-object}\n      metric: {name: requests-per-second}\n      target: {type: Value, value: \"100\"}\n"),
        ("by-external", "  - type: External\n    external:\n      metric: {name: queue_messages_ready, selector: {matchLabels: {queue: jobs}}}\n      target: {type: AverageValue, averageValue: \"20\"}\n"),
        ("by-pods", "  - type: Pods\n    pods:\n      metric: {name: packets-per-second}\n      target: {type: AverageValue, averageValue: \"10\"}\n"),
        ("by-missing", "  - type: Pods\n    pods:\n      metric: {name: nothing-here}\n      target: {type: AverageValue, averageValue: \"10\"}\n"),
    ] {
        cluster.apply_in(&ns, &autoscaler(name, metric)).await;
    }

    let object = wait_for_replicas(&cluster, &ns, "by-object", 3).await;
    let current = &object["status"]["currentMetrics"][0];
    assert_eq!(current["type"], "Object", "{object}");
    assert_eq!(current["object"]["current"]["value"], "250", "{object}");
    assert_eq!(current["object"]["describedObject"]["name"], "by-object");

    let external = wait_for_replicas(&cluster, &ns, "by-external", 4).await;
    let current = &external["status"]["currentMetrics"][0];
    assert_eq!(current["type"], "External", "{external}");
    // 80 over the one replica there was when it was read.
    assert_eq!(
        current["external"]["current"]["averageValue"], "80",
        "{external}"
    );
    let asked = adapter
        .requests()
        .into_iter()
        .find(|r| {
            r["path"]
                .as_str()
                .unwrap_or("")
                .ends_with("/queue_messages_ready")
        })
        .expect("the external metric was asked for");
    assert_eq!(asked["query"], "labelSelector=queue%3Djobs", "{asked}");

    let by_pods = wait_for_replicas(&cluster, &ns, "by-pods", 3).await;
    let current = &by_pods["status"]["currentMetrics"][0];
    assert_eq!(current["type"], "Pods", "{by_pods}");
    assert_eq!(current["pods"]["metric"]["name"], "packets-per-second");
    assert_eq!(
        current["pods"]["current"]["averageValue"], "30",
        "{by_pods}"
    );
    let active = by_pods["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ScalingActive").cloned())
        .unwrap_or_default();
    assert_eq!(
        active["message"],
        "the HPA was able to successfully calculate a replica count from pods metric packets-per-second"
    );

    // A metric the adapter does not have: not scaled, and the autoscaler says why.
    let missing = eventually("by-missing to report its metric", WAIT, || async {
        let hpa = cluster.server.json(&["hpa", "by-missing", "-n", &ns]);
        let active = hpa["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "ScalingActive").cloned())?;
        (active["status"] == "False").then_some(active)
    })
    .await;
    assert_eq!(missing["reason"], "FailedGetPodsMetric", "{missing}");
    assert!(
        missing["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("unable to get metric nothing-here"),
        "{missing}"
    );
    assert_eq!(replicas(&cluster, &ns, "by-missing").await, 1);
}
