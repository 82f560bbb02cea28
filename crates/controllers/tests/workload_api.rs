//! Upstream's API conformance steps for Deployments, ReplicaSets, StatefulSets and
//! DaemonSets with their controllers running and pods made ready by a simulated node
//! (`deployment.go`, `replica_set.go`, `statefulset.go`, `daemon_set.go`,
//! `controller_revision.go`): the workload reaches its ready replicas first, then its
//! status is updated and patched (each seen by a watch, as upstream waits for them), and
//! the collection steps run on a live workload; a DaemonSet's ControllerRevisions go
//! through their lifecycle.

mod common;

use std::time::Duration;

use common::*;
use kube::api::Patch;
use serde_json::{json, Value};
use skiff_e2e::api::{names, Resource};

const WAIT: Duration = Duration::from_secs(30);

fn workload(name: &str, app: &str, extra: Value) -> Value {
    let mut spec = json!({"replicas": 1, "selector": {"matchLabels": {"app": app}},
        "template": {"metadata": {"labels": {"app": app}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}});
    for (field, value) in extra.as_object().into_iter().flatten() {
        spec[field] = value.clone();
    }
    json!({"metadata": {"name": name, "labels": {"e2e-workload": app}}, "spec": spec})
}

/// Waits until `name` reports `replicas` ready replicas in `status.<field>`.
async fn ready_in(objects: &Resource, name: &str, field: &str, replicas: i64) {
    eventually(&format!("{name} with {replicas} ready"), WAIT, || async {
        let object = objects.try_get(name).await.ok()?;
        (object["status"][field] == replicas).then_some(())
    })
    .await;
}

/// Upstream's status steps on a live workload: a condition added by a PUT of `status`
/// and another by a patch of it, each seen by a watch.
async fn status_steps(objects: &Resource, name: &str) {
    let current = objects.get(name).await;
    let rv = current["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut watch = objects.watch("", &rv).await;
    let condition = |kind: &str| {
        json!({"type": kind, "status": "True", "reason": "E2E", "message": "Set from e2e test",
            "lastTransitionTime": "2026-01-01T00:00:00Z"})
    };
    // The controller writes the status too: a conflict is tried again, as upstream does.
    let mut written = false;
    for _ in 0..5 {
        let mut status = objects.get_status(name).await;
        let mut conditions = status["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions.push(condition("StatusUpdate"));
        status["status"]["conditions"] = json!(conditions);
        if objects.try_replace_status(status).await.is_ok() {
            written = true;
            break;
        }
    }
    assert!(written, "the status update of {name}");
    let has = |object: &Value, kind: &str| {
        object["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == kind)
    };
    watch
        .next_events(
            1,
            |_, o| o["metadata"]["name"] == name && has(o, "StatusUpdate"),
            WAIT,
        )
        .await;
    let patched = objects
        .patch_status(
            name,
            Patch::Merge(
                json!({"metadata": {"annotations": {"patchedstatus": "true"}},
                "status": {"conditions": [condition("StatusPatched")]}}),
            ),
        )
        .await;
    assert!(has(&patched, "StatusPatched"), "{patched}");
    watch
        .next_events(
            1,
            |_, o| o["metadata"]["name"] == name && has(o, "StatusPatched"),
            WAIT,
        )
        .await;
}

/// Upstream's collection steps on live workloads: listed across namespaces by label,
/// patched, deleted as a collection.
async fn collection_steps(objects: &Resource, app: &str) {
    let selector = format!("e2e-workload={app}");
    let listed = objects.list_everywhere(&selector).await;
    assert!(!listed.is_empty(), "{selector}");
    let name = names(&listed)[0].clone();
    let patched = objects
        .merge(
            &name,
            json!({"metadata": {"labels": {"e2e-patched": "true"}}}),
        )
        .await;
    assert_eq!(patched["metadata"]["labels"]["e2e-patched"], "true");
    objects.delete_collection(&selector).await;
    eventually("the collection deleted", WAIT, || async {
        objects.list(&selector).await.0.is_empty().then_some(())
    })
    .await;
}

async fn workload_steps(kind: &str, plural: &str, extra: Value) {
    let cluster = cluster().await;
    let ns = cluster.namespace(plural.trim_end_matches('s'));
    let _node = cluster.run_node(&ns);
    let objects = Resource::new(&cluster.client, "apps/v1", kind, plural, Some(&ns));
    objects
        .create(workload("status", "status", extra.clone()))
        .await;
    ready_in(&objects, "status", "readyReplicas", 1).await;
    status_steps(&objects, "status").await;
    objects.create(workload("coll", "coll", extra)).await;
    ready_in(&objects, "coll", "readyReplicas", 1).await;
    collection_steps(&objects, "coll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments() {
    workload_steps("Deployment", "deployments", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_sets() {
    workload_steps("ReplicaSet", "replicasets", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_sets() {
    workload_steps("StatefulSet", "statefulsets", json!({"serviceName": "sts"})).await;
}

/// A DaemonSet named `name` selecting `app=<name>` pods.
fn daemon(name: &str) -> Value {
    let mut object = workload(name, name, json!({}));
    if let Some(spec) = object["spec"].as_object_mut() {
        spec.shift_remove("replicas");
    }
    object
}

/// A cluster with the scheduler and one simulated node playing its kubelet in a fresh
/// namespace, and the DaemonSets of that namespace.
async fn daemon_sets_on_a_node(
    prefix: &str,
) -> (Cluster, String, Resource, tokio::task::JoinHandle<()>) {
    let cluster = cluster().await;
    tokio::spawn(skiff_scheduler::run(
        cluster.client.clone(),
        Default::default(),
    ));
    skiff_e2e::add_simulated_node(&cluster.client, "n1", "4", json!({}), json!({})).await;
    let ns = cluster.namespace(prefix);
    let node = cluster.run_node(&ns);
    let sets = Resource::new(
        &cluster.client,
        "apps/v1",
        "DaemonSet",
        "daemonsets",
        Some(&ns),
    );
    (cluster, ns, sets, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sets() {
    let (_cluster, _ns, sets, _node) = daemon_sets_on_a_node("daemonset").await;
    sets.create(daemon("status")).await;
    ready_in(&sets, "status", "numberReady", 1).await;
    status_steps(&sets, "status").await;
    sets.create(daemon("coll")).await;
    ready_in(&sets, "coll", "numberReady", 1).await;
    collection_steps(&sets, "coll").await;
}

/// Upstream's ControllerRevision lifecycle: a DaemonSet's revision found by its labels,
/// patched, a second revision created, the first deleted, the second updated, then all
/// deleted as a collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_revisions_of_a_daemon_set() {
    let (cluster, ns, sets, _node) = daemon_sets_on_a_node("revisions").await;
    sets.create(daemon("e2e-ds")).await;
    ready_in(&sets, "e2e-ds", "numberReady", 1).await;
    let revisions = Resource::new(
        &cluster.client,
        "apps/v1",
        "ControllerRevision",
        "controllerrevisions",
        Some(&ns),
    );
    let selector = "app=e2e-ds";
    let found = revisions.list(selector).await.0;
    assert_eq!(found.len(), 1, "{found:?}");
    let first = found[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(found[0]["revision"], 1);
    assert_eq!(
        found[0]["metadata"]["ownerReferences"][0]["kind"],
        "DaemonSet"
    );
    let patched = revisions
        .merge(
            &first,
            json!({"metadata": {"labels": {"e2e-patched": "true"}}}),
        )
        .await;
    assert_eq!(patched["metadata"]["labels"]["e2e-patched"], "true");
    let mut second = found[0].clone();
    second["metadata"] = json!({"name": format!("{first}-2"),
        "labels": {"app": "e2e-ds", "e2e-revision": "test"}});
    second["revision"] = json!(found[0]["revision"].as_i64().unwrap_or(1) + 1);
    revisions.create(second).await;
    revisions.delete(&first).await;
    let mut current = revisions.get(&format!("{first}-2")).await;
    current["metadata"]["labels"]["e2e-updated"] = json!("true");
    let updated = revisions.replace(current).await;
    assert_eq!(updated["metadata"]["labels"]["e2e-updated"], "true");
    // The test's revisions go as a collection (the DaemonSet keeps one of its own).
    revisions.delete_collection("e2e-revision=test").await;
    assert!(revisions.list("e2e-revision=test").await.0.is_empty());
}
