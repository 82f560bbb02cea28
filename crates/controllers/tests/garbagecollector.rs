//! The garbage collector against a real `skiff apiserver`, driven by real kubectl:
//! background, foreground and orphan deletion, dangling and partial ownership.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::Api;

/// A ConfigMap whose owners are the given `(name, uid)` ConfigMaps.
fn owned_config_map(ns: &str, name: &str, owners: &[(&str, &str)], block: bool) -> String {
    let refs: Vec<String> = owners
        .iter()
        .map(|(owner, uid)| {
            format!("{{apiVersion: v1, kind: ConfigMap, name: {owner}, uid: {uid}, blockOwnerDeletion: {block}}}")
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}, ownerReferences: [{}]}}\n",
        refs.join(", ")
    )
}

/// `kubectl create configmap NAME`; returns its UID.
async fn create_map(cluster: &Cluster, maps: &Api<ConfigMap>, ns: &str, name: &str) -> String {
    cluster
        .kubectl(&["create", "configmap", name, "-n", ns])
        .await;
    maps.get(name)
        .await
        .expect("config map")
        .metadata
        .uid
        .expect("uid")
}

/// `kubectl delete configmap NAME --cascade=CASCADE` (which waits for it to be gone).
async fn delete_map(cluster: &Cluster, ns: &str, name: &str, cascade: &str) {
    cluster
        .kubectl(&[
            "delete",
            "configmap",
            name,
            "-n",
            ns,
            &format!("--cascade={cascade}"),
            "--timeout=60s",
        ])
        .await;
}

async fn gone(api: &Api<ConfigMap>, name: &str) -> bool {
    api.get_opt(name).await.expect("get").is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_foreground_and_orphan_deletion() {
    let cluster = cluster().await;
    let ns = cluster.namespace("gc");
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);

    // Background (kubectl's default): the owner goes at once, its dependents after.
    let owner = create_map(&cluster, &maps, &ns, "owner").await;
    for name in ["dep-1", "dep-2"] {
        cluster
            .apply(&owned_config_map(&ns, name, &[("owner", &owner)], false))
            .await;
    }
    delete_map(&cluster, &ns, "owner", "background").await;
    eventually(
        "background dependents deleted",
        Duration::from_secs(30),
        || async { (gone(&maps, "dep-1").await && gone(&maps, "dep-2").await).then_some(()) },
    )
    .await;

    // Foreground: kubectl waits until the owner is gone, and by then its blocking
    // dependents are gone too.
    let fg = create_map(&cluster, &maps, &ns, "fg").await;
    cluster
        .apply(&owned_config_map(&ns, "fg-dep", &[("fg", &fg)], true))
        .await;
    delete_map(&cluster, &ns, "fg", "foreground").await;
    assert!(gone(&maps, "fg").await);
    assert!(
        gone(&maps, "fg-dep").await,
        "a blocking dependent outlived its owner"
    );

    // Orphan: the owner goes, the dependent stays without the reference.
    let parent = create_map(&cluster, &maps, &ns, "parent").await;
    cluster
        .apply(&owned_config_map(
            &ns,
            "child",
            &[("parent", &parent)],
            true,
        ))
        .await;
    delete_map(&cluster, &ns, "parent", "orphan").await;
    assert!(gone(&maps, "parent").await);
    let child = maps.get("child").await.expect("orphaned child stays");
    assert_eq!(child.metadata.owner_references, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangling_and_partial_ownership() {
    let cluster = cluster().await;
    let ns = cluster.namespace("gc-refs");
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);

    // Created with an owner that never existed: collected.
    cluster
        .apply(&owned_config_map(
            &ns,
            "stray",
            &[("nobody", "4e0e0b8c-0000-4000-8000-000000000000")],
            false,
        ))
        .await;
    eventually("stray collected", Duration::from_secs(30), || async {
        gone(&maps, "stray").await.then_some(())
    })
    .await;

    // One owner left of two: the object stays, the reference to the gone one goes.
    let a = create_map(&cluster, &maps, &ns, "a").await;
    let b = create_map(&cluster, &maps, &ns, "b").await;
    cluster
        .apply(&owned_config_map(
            &ns,
            "shared",
            &[("a", &a), ("b", &b)],
            false,
        ))
        .await;
    delete_map(&cluster, &ns, "a", "background").await;
    let remaining = eventually(
        "reference to a removed",
        Duration::from_secs(30),
        || async {
            let refs = maps.get("shared").await.ok()?.metadata.owner_references?;
            (refs.len() == 1).then_some(refs)
        },
    )
    .await;
    assert_eq!(remaining[0].uid, b);
    // It stays: b still owns it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!gone(&maps, "shared").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_deletes_its_replica_sets_and_pods() {
    let cluster = cluster().await;
    let ns = cluster.namespace("gc-deploy");
    let _node = cluster.run_node(&ns);
    cluster
        .kubectl(&[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--replicas=3",
            "-n",
            &ns,
        ])
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    cluster
        .kubectl(&["delete", "deployment", "web", "-n", &ns])
        .await;
    let sets: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);
    eventually(
        "replica sets and pods collected",
        Duration::from_secs(30),
        || async {
            let no_sets = sets.list(&Default::default()).await.ok()?.items.is_empty();
            let no_pods = active_pods(&cluster.client, &ns).await.is_empty();
            (no_sets && no_pods).then_some(())
        },
    )
    .await;

    // With --cascade=orphan the ReplicaSet and its pods stay, released.
    cluster
        .kubectl(&[
            "create",
            "deployment",
            "kept",
            "--image=busybox",
            "--replicas=2",
            "-n",
            &ns,
        ])
        .await;
    cluster.rollout_status("deployment/kept", &ns).await;
    cluster
        .kubectl(&[
            "delete",
            "deployment",
            "kept",
            "-n",
            &ns,
            "--cascade=orphan",
            "--timeout=60s",
        ])
        .await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    assert!(deployments.get_opt("kept").await.expect("get").is_none());
    let kept = sets.list(&Default::default()).await.expect("list").items;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].metadata.owner_references, None);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    assert_eq!(
        pods.list(&Default::default())
            .await
            .expect("pods")
            .items
            .len(),
        2
    );
}

/// Upstream's "Garbage Collector, dependency cycle": objects owning each other in a
/// circle (a → c, b → a, c → b, each blocking) are all collected once one is deleted.
/// (ConfigMaps in place of upstream's pods: the collector treats them alike.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_cycle_does_not_block_collection() {
    let cluster = cluster().await;
    let ns = cluster.namespace("gc-cycle");
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let mut uids = std::collections::HashMap::new();
    for name in ["a", "b", "c"] {
        uids.insert(name, create_map(&cluster, &maps, &ns, name).await);
    }
    for (name, owner) in [("a", "c"), ("b", "a"), ("c", "b")] {
        let patch = serde_json::json!({"metadata": {"ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uids[owner],
            "blockOwnerDeletion": true}]}});
        maps.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("owner set");
    }
    delete_map(&cluster, &ns, "a", "background").await;
    eventually(
        "the whole cycle collected",
        Duration::from_secs(30),
        || async {
            for name in ["a", "b", "c"] {
                if !gone(&maps, name).await {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// Upstream's "Garbage Collector, delete RC, propagation background / orphan": the
/// pods of a deleted ReplicationController go with it, or stay, released, when it is
/// deleted with `--cascade=orphan`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controllers_pods_go_or_stay_as_the_cascade_says() {
    let cluster = cluster().await;
    let ns = cluster.namespace("gc-rc");
    let _node = cluster.run_node(&ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    for (name, cascade) in [("collected", "background"), ("orphaned", "orphan")] {
        cluster
            .apply_in(
                &ns,
                &format!("apiVersion: v1\nkind: ReplicationController\nmetadata: {{name: {name}}}\nspec:\n  replicas: 2\n  selector: {{app: {name}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"),
            )
            .await;
        let selector = format!("app={name}");
        let of_rc = || async {
            pods.list(&kube::api::ListParams::default().labels(&selector))
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect::<Vec<Pod>>()
        };
        eventually(
            &format!("{name}'s 2 pods"),
            Duration::from_secs(30),
            || async { (of_rc().await.len() == 2).then_some(()) },
        )
        .await;
        cluster
            .kubectl(&[
                "delete",
                "rc",
                name,
                "-n",
                &ns,
                &format!("--cascade={cascade}"),
            ])
            .await;
        if cascade == "orphan" {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let left = of_rc().await;
            assert_eq!(left.len(), 2, "orphaned pods were deleted");
            assert!(left.iter().all(|p| p
                .metadata
                .owner_references
                .as_ref()
                .is_none_or(|r| r.is_empty())));
        } else {
            eventually("the pods collected", Duration::from_secs(30), || async {
                of_rc().await.is_empty().then_some(())
            })
            .await;
        }
    }
}
