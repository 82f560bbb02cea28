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

/// Upstream's "OrderedNamespaceDeletion deletes pods first" and
/// "namespace-deletion-removes-services": while a pod of the namespace remains (held
/// here by a finalizer), nothing else is deleted; once it goes, the rest (a Service, a
/// ConfigMap) goes, then the namespace, and a namespace made again under the name is
/// empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_go_first_then_services_and_the_rest() {
    let cluster = cluster().await;
    let ns = cluster.namespace("ordered");
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: held, namespace: {ns}, finalizers: [example.com/hold]}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n"
        ))
        .await;
    cluster
        .kubectl(&["create", "configmap", "settings", "-n", &ns])
        .await;
    cluster
        .kubectl(&[
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80:80",
            "-n",
            &ns,
        ])
        .await;
    cluster
        .kubectl(&["delete", "namespace", &ns, "--wait=false"])
        .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cluster.client.clone(), &ns);
    eventually("the pod being deleted", Duration::from_secs(30), || async {
        pods.get("held")
            .await
            .ok()?
            .metadata
            .deletion_timestamp
            .map(|_| ())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = cluster
        .kubectl(&["get", "configmaps,services", "-n", &ns, "-o", "name"])
        .await;
    assert!(
        kept.contains("configmap/settings") && kept.contains("service/web"),
        "deleted before the pod was gone: {kept}"
    );
    pods.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("finalizer lifted");
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    eventually("the namespace gone", Duration::from_secs(30), || async {
        namespaces.get_opt(&ns).await.ok()?.is_none().then_some(())
    })
    .await;
    cluster.kubectl(&["create", "namespace", &ns]).await;
    let left = cluster
        .kubectl(&["get", "services,configmaps", "-n", &ns, "-o", "name"])
        .await;
    // Only what a new namespace gets (the controller's kube-root-ca.crt).
    assert!(
        !left.contains("service/web") && !left.contains("configmap/settings"),
        "{left}"
    );
}
