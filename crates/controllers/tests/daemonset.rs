//! The DaemonSet controller with the real scheduler, against a real `skiff apiserver`,
//! driven by real kubectl, over simulated nodes: one pod per eligible node, rolling
//! updates, history and undo.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn daemon_set(ns: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec: {{containers: [{{name: c, image: {image}}}]}}\n"
    )
}

/// Node name → image of the daemon pod there (bound pods only).
async fn placement(cluster: &Cluster, ns: &str) -> Vec<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let mut placed: Vec<(String, String)> = pods
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let spec = p.spec?;
            Some((spec.node_name?, spec.containers[0].image.clone()?))
        })
        .collect();
    placed.sort();
    placed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_node_rolling_update_and_undo() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    tokio::spawn(skiff_scheduler::run(client.clone(), Default::default()));
    for name in ["n1", "n2"] {
        skiff_e2e::add_simulated_node(&client, name, "4", json!({}), json!({})).await;
    }
    // A tainted node the daemon does not tolerate.
    skiff_e2e::add_simulated_node(
        &client,
        "n3",
        "4",
        json!({}),
        json!({"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}),
    )
    .await;
    let ns = cluster.namespace("daemons");
    let _node = cluster.run_node(&ns);

    cluster.apply(&daemon_set(&ns, "busybox:a")).await;
    cluster.rollout_status("daemonset/agent", &ns).await;
    assert_eq!(
        placement(&cluster, &ns).await,
        [
            ("n1".into(), "busybox:a".into()),
            ("n2".into(), "busybox:a".into())
        ]
    );

    // A new template rolls out node by node; history has both revisions.
    cluster
        .kubectl(&["set", "image", "daemonset/agent", "c=busybox:b", "-n", &ns])
        .await;
    cluster.rollout_status("daemonset/agent", &ns).await;
    eventually("all daemons updated", Duration::from_secs(30), || async {
        let placed = placement(&cluster, &ns).await;
        (placed
            == [
                ("n1".into(), "busybox:b".into()),
                ("n2".into(), "busybox:b".into()),
            ])
        .then_some(())
    })
    .await;
    let history = cluster
        .kubectl(&["rollout", "history", "daemonset/agent", "-n", &ns])
        .await;
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo: the first template comes back (from its ControllerRevision).
    cluster
        .kubectl(&["rollout", "undo", "daemonset/agent", "-n", &ns])
        .await;
    eventually("undone", Duration::from_secs(45), || async {
        let placed = placement(&cluster, &ns).await;
        (placed
            == [
                ("n1".into(), "busybox:a".into()),
                ("n2".into(), "busybox:a".into()),
            ])
        .then_some(())
    })
    .await;

    // The taint goes: the daemon follows to n3.
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            "n3",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await
        .expect("untaint");
    eventually("a daemon on n3", Duration::from_secs(30), || async {
        placement(&cluster, &ns)
            .await
            .iter()
            .any(|(node, _)| node == "n3")
            .then_some(())
    })
    .await;
    let status = cluster
        .kubectl(&[
            "get",
            "daemonset",
            "agent",
            "-n",
            &ns,
            "-o",
            "jsonpath={.status.desiredNumberScheduled}",
        ])
        .await;
    assert_eq!(status, "3");
}

/// Upstream's "DaemonSet-NodeSelection": a daemon with a node selector runs only on the
/// nodes labelled for it, leaves a node relabelled away, and follows a changed selector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_selector_picks_the_daemons_nodes() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    tokio::spawn(skiff_scheduler::run(client.clone(), Default::default()));
    for name in ["n1", "n2"] {
        skiff_e2e::add_simulated_node(&client, name, "4", json!({}), json!({})).await;
    }
    let ns = cluster.namespace("daemon-select");
    let _node = cluster.run_node(&ns);
    cluster
        .apply_in(
            &ns,
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec:\n      nodeSelector: {color: blue}\n      containers: [{name: c, image: busybox:a}]\n",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        placement(&cluster, &ns).await.is_empty(),
        "no node is blue yet"
    );
    cluster
        .kubectl(&["label", "node", "n1", "color=blue"])
        .await;
    eventually("a daemon on n1", WAIT, || async {
        (placement(&cluster, &ns).await == [("n1".into(), "busybox:a".into())]).then_some(())
    })
    .await;
    cluster
        .kubectl(&["label", "node", "n1", "color=green", "--overwrite"])
        .await;
    eventually("the daemon gone from n1", WAIT, || async {
        placement(&cluster, &ns).await.is_empty().then_some(())
    })
    .await;
    cluster
        .kubectl(&[
            "patch",
            "daemonset/agent",
            "-n",
            &ns,
            "-p",
            "{\"spec\": {\"template\": {\"spec\": {\"nodeSelector\": {\"color\": \"green\"}}}}}",
        ])
        .await;
    eventually("a daemon on n1 again", WAIT, || async {
        (placement(&cluster, &ns).await == [("n1".into(), "busybox:a".into())]).then_some(())
    })
    .await;
}

/// Upstream's "DaemonSet-FailedPodCreation": a daemon pod that fails is deleted and
/// made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_daemon_pod_is_replaced() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    tokio::spawn(skiff_scheduler::run(client.clone(), Default::default()));
    skiff_e2e::add_simulated_node(&client, "n1", "4", json!({}), json!({})).await;
    let ns = cluster.namespace("daemon-retry");
    let _node = cluster.run_node(&ns);
    cluster.apply(&daemon_set(&ns, "busybox:a")).await;
    cluster.rollout_status("daemonset/agent", &ns).await;
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let first = active_pods(&cluster.client, &ns)
        .await
        .into_iter()
        .next()
        .expect("the daemon pod");
    let name = first.metadata.name.clone().unwrap_or_default();
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Failed"}})),
    )
    .await
    .expect("failed");
    eventually("a new daemon pod", WAIT, || async {
        let now = active_pods(&cluster.client, &ns).await;
        (now.len() == 1 && now[0].metadata.uid != first.metadata.uid).then_some(())
    })
    .await;
    cluster.rollout_status("daemonset/agent", &ns).await;
}
