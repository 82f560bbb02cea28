//! Every namespace gets a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap,
//! re-made when deleted and repaired when changed, as upstream's controllers keep them.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_service_account_and_root_ca_in_every_namespace() {
    let cluster = cluster().await;
    let ns = cluster.namespace("fresh");
    let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), &ns);
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), &ns);
    let ca = std::fs::read_to_string(cluster.server.data_dir.path().join("tls/ca.crt"))
        .expect("cluster CA");

    let listed = eventually(
        "default service account",
        Duration::from_secs(20),
        || async {
            let out = cluster
                .kubectl(&["get", "serviceaccounts", "-n", &ns])
                .await;
            out.contains("default").then_some(out)
        },
    )
    .await;
    assert!(listed.starts_with("NAME"), "{listed}");
    let published = eventually("kube-root-ca.crt", Duration::from_secs(20), || async {
        maps.get_opt("kube-root-ca.crt").await.ok().flatten()
    })
    .await;
    assert_eq!(
        published.data.as_ref().and_then(|d| d.get("ca.crt")),
        Some(&ca)
    );
    assert!(published
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/description"))
        .is_some_and(|d| d.starts_with("Contains a CA bundle")));

    // Deleted: made again, with a new UID.
    let first = accounts.get("default").await.expect("sa").metadata.uid;
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .expect("delete sa");
    eventually(
        "default service account again",
        Duration::from_secs(20),
        || async {
            let again = accounts.get_opt("default").await.ok().flatten()?;
            (again.metadata.uid != first).then_some(())
        },
    )
    .await;

    // Tampered with: repaired.
    maps.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"ca.crt": "forged"}})),
    )
    .await
    .expect("patch");
    eventually("root CA repaired", Duration::from_secs(20), || async {
        let map = maps.get("kube-root-ca.crt").await.ok()?;
        (map.data?.get("ca.crt") == Some(&ca)).then_some(())
    })
    .await;
}
