//! Node lifecycle against a real `skiff apiserver`: a node that stops renewing its Lease
//! turns Unknown and is tainted unreachable; its pods are evicted as their tolerations
//! say.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

fn pod(ns: &str, name: &str, tolerations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{nodeName: n1, tolerations: [{tolerations}], containers: [{{name: c, image: busybox}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_is_tainted_and_its_pods_evicted() {
    let cluster = cluster_with(skiff_controllers::ControllerManagerArgs {
        node_monitor_period: Duration::from_millis(300),
        node_monitor_grace_period: Duration::from_secs(2),
        ..Default::default()
    })
    .await;
    let client = cluster.client.clone();
    skiff_e2e::add_simulated_node(&client, "n1", "4", json!({}), json!({})).await;
    // One heartbeat, then silence.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "n1"},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
    }))
    .expect("lease");
    leases
        .create(&PostParams::default(), &lease)
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
    let node =
        eventually(
            "n1 Unknown and tainted",
            Duration::from_secs(20),
            || async {
                let node = nodes.get("n1").await.ok()?;
                let tainted =
                    node.spec.as_ref()?.taints.as_ref()?.iter().any(|t| {
                        t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute"
                    });
                tainted.then_some(node)
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
    let evicting = |name: &'static str| {
        let pods = pods.clone();
        async move {
            pods.get_opt(name)
                .await
                .ok()?
                .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
                .then_some(())
        }
    };
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
}
