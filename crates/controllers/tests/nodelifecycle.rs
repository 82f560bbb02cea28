//! Node lifecycle against a real `skiff apiserver`: a node that stops renewing its Lease
//! turns Unknown and is tainted unreachable; its pods are evicted as their tolerations
//! say. When every node has gone silent, the controller blames itself (or the network)
//! and lifts the NoExecute taints, as upstream's does.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

fn pod(ns: &str, name: &str, tolerations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{nodeName: n1, tolerations: [{tolerations}], containers: [{{name: c, image: busybox}}]}}\n"
    )
}

fn lease(name: &str) -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
    }))
    .expect("lease")
}

/// Renews `name`'s Lease twice a second, as a live kubelet would (more often).
fn keep_renewing(client: &kube::Client, name: &'static str) -> tokio::task::JoinHandle<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    tokio::spawn(async move {
        let _ = leases.create(&PostParams::default(), &lease(name)).await;
        loop {
            let patch = json!({"spec": {"renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
            let _ = leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// `Some` once the pod is gone or being deleted.
async fn evicted(pods: Api<Pod>, name: &str) -> Option<()> {
    pods.get_opt(name)
        .await
        .ok()?
        .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
        .then_some(())
}

fn has_no_execute(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == key && t.effect == "NoExecute"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_tainted_and_its_pods_evicted() {
    let metrics_port = skiff_e2e::free_port();
    let cluster = cluster_with(skiff_controllers::ControllerManagerArgs {
        node_monitor_period: Duration::from_millis(300),
        node_monitor_grace_period: Duration::from_secs(2),
        metrics_bind_address: Some(([127, 0, 0, 1], metrics_port).into()),
        ..Default::default()
    })
    .await;
    let client = cluster.client.clone();
    skiff_e2e::add_simulated_node(&client, "n1", "4", json!({}), json!({})).await;
    // A node that stays alive: with every node silent, nothing would be evicted.
    skiff_e2e::add_simulated_node(&client, "n2", "4", json!({}), json!({})).await;
    let alive = keep_renewing(&client, "n2");
    // One heartbeat, then silence.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    leases
        .create(&PostParams::default(), &lease("n1"))
        .await
        .expect("lease");

    let ns = cluster.namespace("lifecycle");
    let unreachable = "{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute";
    cluster
        .apply(&pod(
            &ns,
            "fleeting",
            &format!("{unreachable}, tolerationSeconds: 1}}"),
        ))
        .await;
    cluster
        .apply(&pod(&ns, "loyal", &format!("{unreachable}}}")))
        .await;
    // No toleration of its own: the API server's default gives it five minutes.
    cluster.apply(&pod(&ns, "plain", "")).await;

    let nodes: Api<Node> = Api::all(client.clone());
    let node = eventually(
        "n1 Unknown and tainted",
        Duration::from_secs(20),
        || async {
            let node = nodes.get("n1").await.ok()?;
            has_no_execute(&node, "node.kubernetes.io/unreachable").then_some(node)
        },
    )
    .await;
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
        .expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("Unknown", Some("NodeStatusUnknown"))
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let evicting = |name: &'static str| evicted(pods.clone(), name);
    eventually("fleeting evicted", Duration::from_secs(20), || {
        evicting("fleeting")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for stays in ["loyal", "plain"] {
        let pod = pods.get(stays).await.expect("pod");
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "{stays} was evicted"
        );
    }
    // The zone (no zone labels: one zone, "") as upstream's metrics report it.
    let metrics = skiff_e2e::scrape_metrics(metrics_port);
    let value = |series: &str| skiff_e2e::metric_value(&metrics, series);
    assert_eq!(
        value(r#"node_collector_zone_size{zone=""}"#),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        value(r#"node_collector_unhealthy_nodes_in_zone{zone=""}"#),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(r#"node_collector_zone_health{zone=""}"#),
        Some(50.0),
        "{metrics}"
    );
    assert_eq!(
        value(r#"node_collector_evictions_total{zone=""}"#),
        Some(1.0),
        "{metrics}"
    );
    let alive_node = nodes.get("n2").await.expect("n2");
    assert!(!has_no_execute(
        &alive_node,
        "node.kubernetes.io/unreachable"
    ));

    // n2 goes silent too: every zone is down, so the NoExecute taint is lifted and the
    // pods left stay.
    alive.abort();
    eventually(
        "n1's NoExecute taint lifted",
        Duration::from_secs(20),
        || async {
            let n1 = nodes.get("n1").await.ok()?;
            let n2 = nodes.get("n2").await.ok()?;
            let n2_unknown = n2
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "Unknown");
            (n2_unknown && !has_no_execute(&n1, "node.kubernetes.io/unreachable")).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in ["n1", "n2"] {
        let node = nodes.get(node).await.expect("node");
        assert!(!has_no_execute(&node, "node.kubernetes.io/unreachable"));
    }
    let plain = pods.get("plain").await.expect("pod");
    assert!(plain.metadata.deletion_timestamp.is_none());
}

/// Upstream's NoExecuteTaintManager conformance tests, on a live simulated node: a
/// NoExecute taint (written without `timeAdded`, so counted from when the controller
/// sees it) evicts each pod when its own `tolerationSeconds` runs out, the shortest
/// first; removing the taint before then cancels the eviction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_execute_taints_evict_on_time_and_untainting_cancels() {
    let cluster = cluster_with(skiff_controllers::ControllerManagerArgs {
        node_monitor_period: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let client = cluster.client.clone();
    skiff_e2e::add_simulated_node(&client, "n1", "4", json!({}), json!({})).await;
    let _alive = keep_renewing(&client, "n1");
    let ns = cluster.namespace("taints");
    let tolerating = |seconds: u32| {
        format!("{{key: kubernetes.io/e2e-evict-taint-key, operator: Equal, value: evictTaintVal, effect: NoExecute, tolerationSeconds: {seconds}}}")
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let nodes: Api<Node> = Api::all(client.clone());
    let taint = |on: bool| {
        let taints = if on {
            json!([{"key": "kubernetes.io/e2e-evict-taint-key", "value": "evictTaintVal", "effect": "NoExecute"}])
        } else {
            json!(null)
        };
        json!({"spec": {"taints": taints}})
    };
    let gone = |name: &'static str| evicted(pods.clone(), name);

    // Two pods tolerating the taint for 5 s and 25 s: the first goes first.
    cluster.apply(&pod(&ns, "short", &tolerating(5))).await;
    cluster.apply(&pod(&ns, "long", &tolerating(25))).await;
    let tainted_at = std::time::Instant::now();
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&taint(true)))
        .await
        .expect("taint n1");
    eventually("short evicted", Duration::from_secs(20), || gone("short")).await;
    let short_after = tainted_at.elapsed();
    assert!(
        short_after >= Duration::from_secs(4),
        "short went after {short_after:?}"
    );
    assert!(gone("long").await.is_none(), "long went with short");
    eventually("long evicted", Duration::from_secs(40), || gone("long")).await;
    let long_after = tainted_at.elapsed();
    assert!(
        long_after >= Duration::from_secs(24),
        "long went after {long_after:?}"
    );

    // Untainted before its time is up, a pod stays.
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&taint(false)))
        .await
        .expect("untaint n1");
    cluster.apply(&pod(&ns, "spared", &tolerating(10))).await;
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&taint(true)))
        .await
        .expect("taint n1 again");
    tokio::time::sleep(Duration::from_secs(4)).await;
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&taint(false)))
        .await
        .expect("untaint n1 again");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        gone("spared").await.is_none(),
        "spared was evicted after the taint went"
    );
}
