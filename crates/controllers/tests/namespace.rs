//! The namespace controller against a real `skiff apiserver`, driven by real kubectl:
//! deleting a namespace deletes what is in it, reports what remains, and removes the
//! namespace once it is empty.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_empties_then_removes_it() {
    let cluster = cluster().await;
    let ns = cluster.namespace("doomed");
    cluster
        .kubectl(&["create", "configmap", "plain", "-n", &ns])
        .await;
    cluster
        .kubectl(&["create", "secret", "generic", "s", "-n", &ns])
        .await;
    cluster
        .kubectl(&["create", "deployment", "web", "--image=busybox", "-n", &ns])
        .await;
    // An object held by a finalizer keeps the namespace until the finalizer goes.
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: held, namespace: {ns}, finalizers: [example.com/hold]}}\n"
        ))
        .await;

    cluster
        .kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .await;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let message = |ns: &Namespace, t: &str| {
        ns.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == t && c.status == "True")?
            .message
            .clone()
    };
    let (remaining, finalizers) = eventually(
        "only the held config map left",
        Duration::from_secs(30),
        || async {
            let current = namespaces.get(&ns).await.ok()?;
            let remaining = message(&current, "NamespaceContentRemaining")?;
            let finalizers = message(&current, "NamespaceFinalizersRemaining")?;
            remaining
                .contains("configmaps. has 1 resource instances")
                .then_some((remaining, finalizers))
        },
    )
    .await;
    assert_eq!(
        remaining,
        "Some resources are remaining: configmaps. has 1 resource instances"
    );
    assert_eq!(
        finalizers,
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    );
    let left = cluster
        .kubectl(&["get", "all,configmaps,secrets", "-n", &ns, "-o", "name"])
        .await;
    assert_eq!(left.trim(), "configmap/held");

    // The finalizer goes: so does the config map, then the namespace.
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cluster.client.clone(), &ns);
    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("lifting the finalizer");
    eventually("namespace removed", Duration::from_secs(30), || async {
        namespaces
            .get_opt(&ns)
            .await
            .ok()
            .and_then(|n| n.is_none().then_some(()))
    })
    .await;
}
