//! The workload APIs through upstream's API conformance steps (`test/e2e/apps`), with
//! kube-rs against a real API server: status subresources and collection deletes of
//! DaemonSets, Deployments, ReplicaSets, StatefulSets and ReplicationControllers,
//! ControllerRevisions, CronJobs, Jobs' status and PodDisruptionBudgets. The shared API
//! server runs no controllers, so the steps where upstream waits for pods are left out;
//! the controllers' own tests (`crates/controllers/tests`) cover those.

use std::time::Duration;

use kube::api::Patch;
use serde_json::{json, Value};
use skiff_e2e::api::{names, Resource};
use skiff_e2e::shared;

fn apps(client: &kube::Client, kind: &str, plural: &str, ns: &str) -> Resource {
    Resource::new(client, "apps/v1", kind, plural, Some(ns))
}

fn template(app: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/httpd:2.4.38-4"}]}})
}

/// A workload's spec selecting `app` pods.
fn workload_spec(app: &str) -> Value {
    json!({"selector": {"matchLabels": {"app": app}}, "template": template(app)})
}

/// Upstream's status walk for a workload: a condition added by a PUT of `status` (seen by
/// a watch), another by a patch of `status`; neither moves the spec or the generation.
async fn status_walk(objects: &Resource, name: &str) {
    let before = objects.get(name).await;
    let rv = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut watch = objects.watch("", &rv).await;
    let mut status = objects.get_status(name).await;
    assert_eq!(status["metadata"]["uid"], before["metadata"]["uid"]);
    let updated = json!({"type": "StatusUpdate", "status": "True", "reason": "E2E",
        "message": "Set from e2e test", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    status["status"]["conditions"] = json!([updated]);
    // A spec change sent along is ignored.
    status["spec"]["minReadySeconds"] = json!(77);
    let replaced = objects.replace_status(status).await;
    assert_eq!(replaced["status"]["conditions"][0]["type"], "StatusUpdate");
    assert_eq!(replaced["spec"], before["spec"]);
    let seen = watch
        .next_events(
            1,
            |kind, o| {
                kind == "MODIFIED"
                    && o["metadata"]["name"] == name
                    && o["status"]["conditions"][0]["type"] == "StatusUpdate"
            },
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        seen[0].1["status"]["conditions"][0]["message"],
        "Set from e2e test"
    );

    let patched = objects
        .patch_status(
            name,
            Patch::Merge(json!({"status": {"conditions": [
                {"type": "StatusPatched", "status": "True", "reason": "E2E", "message": "Patched",
                 "lastTransitionTime": "2026-01-01T00:00:01Z"}]}})),
        )
        .await;
    assert_eq!(patched["status"]["conditions"][0]["type"], "StatusPatched");
    let got = objects.get(name).await;
    assert_eq!(got["status"]["conditions"][0]["type"], "StatusPatched");
    assert_eq!(
        got["metadata"]["generation"],
        before["metadata"]["generation"]
    );
}

/// Upstream's collection walk for a workload: found across namespaces by label, patched,
/// deleted as a collection.
async fn collection_walk(objects: &Resource, make: impl Fn(&str, Value) -> Value, label: &str) {
    let selector = format!("e2e-collection={label}");
    for name in ["coll-a", "coll-b"] {
        objects
            .create(make(name, json!({"e2e-collection": label})))
            .await;
    }
    assert_eq!(
        names(&objects.list_everywhere(&selector).await),
        ["coll-a", "coll-b"]
    );
    let patched = objects
        .merge(
            "coll-a",
            json!({"metadata": {"labels": {"e2e-patched": "true"}}}),
        )
        .await;
    assert_eq!(patched["metadata"]["labels"]["e2e-patched"], "true");
    objects.delete_collection(&selector).await;
    assert!(objects.list_everywhere(&selector).await.is_empty());
}

fn named(name: &str, labels: Value, spec: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "spec": spec})
}

/// A workload kind's API steps: the common walk, the collection walk, the status walk.
/// `extra` adds kind-specific spec fields to a plain selector and template.
async fn workload_api(kind: &str, plural: &str, extra: Value) {
    let s = shared();
    let ns = s.namespace(&format!("{}api", plural.trim_end_matches('s')));
    let client = s.client().await;
    let objects = apps(&client, kind, plural, &ns);
    let spec = || {
        let mut spec = workload_spec(plural);
        for (field, value) in extra.as_object().into_iter().flatten() {
            spec[field] = value.clone();
        }
        spec
    };
    objects.lifecycle(&ns, |n, l| named(n, l, spec())).await;
    collection_walk(&objects, |n, l| named(n, l, spec()), &ns).await;
    objects.create(named("status", json!({}), spec())).await;
    status_walk(&objects, "status").await;
}

#[tokio::test]
async fn daemon_sets() {
    workload_api("DaemonSet", "daemonsets", json!({})).await;
}

#[tokio::test]
async fn deployments() {
    workload_api("Deployment", "deployments", json!({"replicas": 1})).await;
}

#[tokio::test]
async fn replica_sets() {
    workload_api("ReplicaSet", "replicasets", json!({"replicas": 1})).await;
}

#[tokio::test]
async fn stateful_sets() {
    workload_api(
        "StatefulSet",
        "statefulsets",
        json!({"serviceName": "sts", "replicas": 1}),
    )
    .await;
}

#[tokio::test]
async fn replication_controllers() {
    let s = shared();
    let ns = s.namespace("rcapi");
    let client = s.client().await;
    let rcs = Resource::new(
        &client,
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        Some(&ns),
    );
    let spec = || json!({"replicas": 1, "selector": {"app": "rc"}, "template": template("rc")});
    rcs.lifecycle(&ns, |n, l| named(n, l, spec())).await;
    rcs.create(named("status", json!({}), spec())).await;
    status_walk(&rcs, "status").await;
    // The scale subresource reads and writes the replica count.
    let path = format!("/api/v1/namespaces/{ns}/replicationcontrollers/status/scale");
    let (code, scale) = skiff_e2e::api::raw(&client, "GET", &path, &[], None).await;
    assert_eq!(code, 200, "{scale}");
    assert_eq!(scale["spec"]["replicas"], 1);
    let (code, scale) = skiff_e2e::api::raw(
        &client,
        "PATCH",
        &path,
        &[("Content-Type", "application/merge-patch+json")],
        Some(json!({"spec": {"replicas": 2}}).to_string()),
    )
    .await;
    assert_eq!(code, 200, "{scale}");
    assert_eq!(rcs.get("status").await["spec"]["replicas"], 2);
}

#[tokio::test]
async fn controller_revisions() {
    let s = shared();
    let ns = s.namespace("crapi");
    let client = s.client().await;
    let revisions = apps(&client, "ControllerRevision", "controllerrevisions", &ns);
    let make = |name: &str, labels: Value, revision: i64| {
        json!({"metadata": {"name": name, "labels": labels},
            "data": {"spec": {"template": template("cr")}}, "revision": revision})
    };
    revisions.lifecycle(&ns, |n, l| make(n, l, 1)).await;

    // Listed by label, patched, a second revision created, one deleted, the other
    // updated, then deleted as a collection.
    let label = json!({"e2e-revision": ns});
    let selector = format!("e2e-revision={ns}");
    let first = revisions.create(make("rev-1", label.clone(), 1)).await;
    assert_eq!(first["revision"], 1);
    assert_eq!(
        first["data"]["spec"]["template"]["metadata"]["labels"]["app"],
        "cr"
    );
    let patched = revisions
        .merge(
            "rev-1",
            json!({"metadata": {"labels": {"patched": "true"}}}),
        )
        .await;
    assert_eq!(patched["metadata"]["labels"]["patched"], "true");
    revisions.create(make("rev-2", label, 2)).await;
    assert_eq!(
        names(&revisions.list(&selector).await.0),
        ["rev-1", "rev-2"]
    );
    revisions.delete("rev-1").await;
    let mut second = revisions.get("rev-2").await;
    second["metadata"]["labels"]["updated"] = json!("true");
    revisions.replace(second).await;
    assert_eq!(revisions.list("updated=true").await.0.len(), 1);
    revisions.delete_collection(&selector).await;
    assert!(revisions.list(&selector).await.0.is_empty());
}

#[tokio::test]
async fn cron_jobs() {
    let s = shared();
    let ns = s.namespace("cjapi");
    let client = s.client().await;
    let cron_jobs = Resource::new(&client, "batch/v1", "CronJob", "cronjobs", Some(&ns));
    let spec = json!({"schedule": "*/1 * * * ?", "concurrencyPolicy": "Allow",
        "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
            "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"}]}}}}});
    let created = cron_jobs
        .lifecycle(&ns, |n, l| named(n, l, spec.clone()))
        .await;
    assert_eq!(created["spec"]["suspend"], false, "defaulted");

    // The status subresource: read, patched, replaced; the spec untouched.
    cron_jobs
        .create(named("status", json!({}), spec.clone()))
        .await;
    let status = cron_jobs.get_status("status").await;
    assert_eq!(status["spec"]["schedule"], "*/1 * * * ?");
    let patched = cron_jobs
        .patch_status(
            "status",
            Patch::Merge(
                json!({"status": {"lastScheduleTime": "2026-01-01T00:00:00Z"},
                "spec": {"schedule": "@daily"}}),
            ),
        )
        .await;
    assert_eq!(
        patched["status"]["lastScheduleTime"],
        "2026-01-01T00:00:00Z"
    );
    assert_eq!(patched["spec"]["schedule"], "*/1 * * * ?");
    let mut status = cron_jobs.get_status("status").await;
    status["status"]["lastScheduleTime"] = json!("2026-01-01T00:01:00Z");
    let replaced = cron_jobs.replace_status(status).await;
    assert_eq!(
        replaced["status"]["lastScheduleTime"],
        "2026-01-01T00:01:00Z"
    );
}

#[tokio::test]
async fn job_status() {
    let s = shared();
    let ns = s.namespace("jobapi");
    let client = s.client().await;
    let jobs = Resource::new(&client, "batch/v1", "Job", "jobs", Some(&ns));
    let spec = json!({"suspend": true, "template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"}]}}});
    jobs.create(named("status", json!({}), spec)).await;
    // Patched through `status`: an annotation and the start time.
    let patched = jobs
        .patch_status(
            "status",
            Patch::Merge(
                json!({"metadata": {"annotations": {"patchedstatus": "true"}},
                "status": {"startTime": "2026-01-01T00:00:00Z"}}),
            ),
        )
        .await;
    assert_eq!(patched["metadata"]["annotations"]["patchedstatus"], "true");
    assert_eq!(patched["status"]["startTime"], "2026-01-01T00:00:00Z");
    // Replaced through `status`: a new start time, read back through `status`.
    let mut status = jobs.get_status("status").await;
    status["status"]["startTime"] = json!("2026-01-01T00:00:05Z");
    jobs.replace_status(status).await;
    let got = jobs.get_status("status").await;
    assert_eq!(got["status"]["startTime"], "2026-01-01T00:00:05Z");
    assert_eq!(got["metadata"]["annotations"]["patchedstatus"], "true");
}

#[tokio::test]
async fn pod_disruption_budgets() {
    let s = shared();
    let ns = s.namespace("pdbapi");
    let client = s.client().await;
    let budgets = Resource::new(
        &client,
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        Some(&ns),
    );
    let spec = json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "pdb"}}});
    budgets
        .lifecycle(&ns, |n, l| named(n, l, spec.clone()))
        .await;

    // Create, update, patch, delete.
    budgets
        .create(named("budget", json!({}), spec.clone()))
        .await;
    let mut current = budgets.get("budget").await;
    current["spec"]["minAvailable"] = json!(2);
    let updated = budgets.replace(current).await;
    assert_eq!(updated["spec"]["minAvailable"], 2);
    let patched = budgets
        .merge("budget", json!({"spec": {"minAvailable": "50%"}}))
        .await;
    assert_eq!(patched["spec"]["minAvailable"], "50%");
    // Update and patch status: a disrupted pod recorded, then the count patched.
    let mut status = budgets.get_status("budget").await;
    status["status"] = json!({"disruptedPods": {"pod-1": "2026-01-01T00:00:00Z"},
        "disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0});
    let replaced = budgets.replace_status(status).await;
    assert_eq!(
        replaced["status"]["disruptedPods"]["pod-1"],
        "2026-01-01T00:00:00Z"
    );
    let patched = budgets
        .patch_status(
            "budget",
            Patch::Merge(json!({"status": {"disruptionsAllowed": 1, "disruptedPods": null}})),
        )
        .await;
    assert_eq!(patched["status"]["disruptionsAllowed"], 1);
    assert!(patched["status"]["disruptedPods"].is_null());
    assert_eq!(patched["spec"]["minAvailable"], "50%");
    budgets.delete("budget").await;
    assert!(budgets.is_gone("budget").await);

    // List and delete a collection.
    collection_walk(&budgets, |n, l| named(n, l, spec.clone()), &ns).await;
}
