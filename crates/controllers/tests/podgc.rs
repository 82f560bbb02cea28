//! The pod garbage collector against a real `skiff apiserver`: finished pods beyond the
//! threshold go oldest first; pods bound to a node that is gone go after the quarantine.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

fn pod(ns: &str, name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{nodeName: {node}, containers: [{{name: c, image: busybox}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_and_orphaned_pods_are_collected() {
    let cluster = cluster_with(skiff_controllers::ControllerManagerArgs {
        terminated_pod_gc_threshold: 2,
        pod_gc_period: Duration::from_millis(300),
        pod_gc_quarantine: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let client = cluster.client.clone();
    skiff_e2e::add_simulated_node(&client, "here", "4", json!({}), json!({})).await;
    let ns = cluster.namespace("podgc");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Four finished pods, made one after the other: the two oldest go.
    for name in ["done-1", "done-2", "done-3", "done-4"] {
        cluster.apply(&pod(&ns, name, "here")).await;
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .expect("finish");
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let left = eventually(
        "two finished pods left",
        Duration::from_secs(20),
        || async {
            let mut names: Vec<String> = pods
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|p| {
                    p.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("done-"))
                })
                .filter_map(|p| p.metadata.name)
                .collect();
            names.sort();
            (names.len() == 2).then_some(names)
        },
    )
    .await;
    assert_eq!(left, ["done-3", "done-4"]);

    // Bound to a node that does not exist: gone after the quarantine; a pod on a real
    // node stays.
    cluster.apply(&pod(&ns, "stranded", "ghost")).await;
    cluster.apply(&pod(&ns, "settled", "here")).await;
    eventually(
        "the stranded pod collected",
        Duration::from_secs(20),
        || async { pods.get_opt("stranded").await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert!(pods.get_opt("settled").await.expect("get").is_some());
}
