//! The ReplicaSet controller against a real `skiff server`.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;

fn rs_yaml(ns: &str, name: &str, replicas: i32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    )
}

const WAIT: Duration = Duration::from_secs(30);

async fn wait_pods(cluster: &Cluster, ns: &str, count: usize) -> Vec<Pod> {
    eventually(&format!("{count} pods in {ns}"), WAIT, || async {
        let pods = active_pods(&cluster.client, ns).await;
        (pods.len() == count).then_some(pods)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_lifecycle() {
    let cluster = cluster().await;
    let ns = cluster.namespace("rs");
    let pods_api: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let rs_api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);

    // Creates N pods named from the RS, controlled by it.
    cluster.apply(&rs_yaml(&ns, "web", 3)).await;
    let rs = rs_api.get("web").await.expect("rs");
    let pods = wait_pods(&cluster, &ns, 3).await;
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        assert!(
            name.starts_with("web-") && name.len() == "web-".len() + 5,
            "{name}"
        );
        let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.uid, rs.metadata.uid.clone().unwrap());
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        assert_eq!(owner.kind, "ReplicaSet");
    }

    // Replaces a deleted pod.
    let victim = pods[0].metadata.name.clone().unwrap();
    pods_api
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("delete");
    let pods = eventually("a replacement", WAIT, || async {
        let pods = active_pods(&cluster.client, &ns).await;
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| p.metadata.name.as_deref() != Some(victim.as_str())))
        .then_some(pods)
    })
    .await;

    // Status: ready replicas counted once the "node" marks them.
    let ready: Vec<String> = pods[..2]
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    for name in &ready {
        mark_ready(&pods_api, name).await.expect("mark ready");
    }
    eventually("status", WAIT, || async {
        let rs = rs_api.get("web").await.ok()?;
        let s = rs.status?;
        (s.replicas == 3
            && s.ready_replicas == Some(2)
            && s.available_replicas == Some(2)
            && s.fully_labeled_replicas == Some(3)
            && s.observed_generation == rs.metadata.generation)
            .then_some(())
    })
    .await;

    // Scaling down removes the not-ready pod first.
    cluster
        .kubectl(&["scale", "rs", "web", "--replicas=2", "-n", &ns])
        .await;
    let pods = wait_pods(&cluster, &ns, 2).await;
    let mut left: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    left.sort();
    let mut expected = ready.clone();
    expected.sort();
    assert_eq!(left, expected);

    // A pod relabelled out of the selector is released (and replaced).
    let released = left[0].clone();
    cluster
        .kubectl(&[
            "label",
            "pod",
            &released,
            "app=other",
            "--overwrite",
            "-n",
            &ns,
        ])
        .await;
    eventually("release", WAIT, || async {
        let pod = pods_api.get(&released).await.ok()?;
        pod.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
            .then_some(())
    })
    .await;
    wait_pods(&cluster, &ns, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_orphans_and_never_over_creates() {
    let cluster = cluster().await;
    let ns = cluster.namespace("adopt");
    let pods_api: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);

    // Count every pod ever created in the namespace.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    {
        let seen = seen.clone();
        let api = pods_api.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(Event::Apply(pod) | Event::InitApply(pod)) = event {
                    seen.lock()
                        .unwrap()
                        .insert(pod.metadata.uid.unwrap_or_default());
                }
            }
        });
    }

    // An orphan that matches: adopted rather than a new pod made.
    cluster
        .server
        .ok_with_input(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: orphan, namespace: {ns}, labels: {{app: burst}}}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n"),
        );
    cluster.apply(&rs_yaml(&ns, "burst", 1)).await;
    eventually("adoption", WAIT, || async {
        let pod = pods_api.get("orphan").await.ok()?;
        let owner = pod.metadata.owner_references?.first()?.clone();
        (owner.name == "burst" && owner.controller == Some(true)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(active_pods(&cluster.client, &ns).await.len(), 1);

    // A burst: scale to 40 while pod events stream in; exactly 40 pods, ever.
    cluster
        .kubectl(&["scale", "rs", "burst", "--replicas=40", "-n", &ns])
        .await;
    wait_pods(&cluster, &ns, 40).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(active_pods(&cluster.client, &ns).await.len(), 40);
    assert_eq!(
        seen.lock().unwrap().len(),
        40,
        "pods were created and deleted again"
    );
}

/// Upstream's "ReplicaSet, scale subresource" and "ReplicaSet, Replace and Patch": the
/// replicas set through `replicasets/scale` (read, replaced, patched), then by replacing
/// and patching the ReplicaSet itself, each followed by its pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_subresource_replace_and_patch() {
    let cluster = cluster().await;
    let ns = cluster.namespace("rs-scale");
    let _node = cluster.run_node(&ns);
    let rs_api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);
    cluster.apply(&rs_yaml(&ns, "web", 1)).await;
    wait_pods(&cluster, &ns, 1).await;
    let (scale, path) = cluster.read_scale(&ns, "replicasets/web").await;
    assert_eq!(
        (
            &scale["kind"],
            &scale["spec"]["replicas"],
            &scale["status"]["selector"]
        ),
        (&"Scale".into(), &1.into(), &"app=web".into()),
        "{scale}"
    );
    cluster.replace_scale(&path, &scale, 2);
    wait_pods(&cluster, &ns, 2).await;
    cluster.patch_scale(&ns, "rs/web", 3).await;
    wait_pods(&cluster, &ns, 3).await;

    // The ReplicaSet itself replaced (a label, 1 replica), then patched (2 replicas).
    let mut rs = serde_json::to_value(rs_api.get("web").await.expect("web")).expect("json");
    rs["metadata"]["labels"] = serde_json::json!({"replaced": "yes"});
    rs["spec"]["replicas"] = 1.into();
    // Unconditional: the controller keeps writing the status meanwhile.
    if let Some(meta) = rs["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    cluster
        .server
        .ok_with_input(&["replace", "-f", "-"], &rs.to_string());
    wait_pods(&cluster, &ns, 1).await;
    cluster
        .kubectl(&[
            "patch",
            "rs/web",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            "{\"spec\": {\"replicas\": 2}}",
        ])
        .await;
    wait_pods(&cluster, &ns, 2).await;
    let rs = rs_api.get("web").await.expect("web");
    assert_eq!(
        rs.metadata.labels.and_then(|l| l.get("replaced").cloned()),
        Some("yes".to_string())
    );
    eventually("2 ready replicas", WAIT, || async {
        let status = rs_api.get_status("web").await.ok()?.status?;
        (status.ready_replicas == Some(2)).then_some(())
    })
    .await;
}
