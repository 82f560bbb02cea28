//! The core (`v1`) API's kinds through upstream's API conformance steps, with kube-rs
//! against a real API server: ConfigMaps and Secrets (`configmap.go`, `secrets.go`,
//! `configmap_volume.go`, `secrets_volume.go`), PodTemplates, Pods' collection delete,
//! LimitRanges, ServiceAccounts, Events (`core_events.go`, `events.go`), Nodes, Leases,
//! ResourceQuotas and Namespaces.

use std::time::Duration;

use kube::api::Patch;
use serde_json::{json, Value};
use skiff_e2e::api::{names, raw, Resource};
use skiff_e2e::shared;

fn core(client: &kube::Client, kind: &str, plural: &str, ns: Option<&str>) -> Resource {
    Resource::new(client, "v1", kind, plural, ns)
}

fn meta(name: &str, labels: Value) -> Value {
    json!({"name": name, "labels": labels})
}

fn pod_spec() -> Value {
    json!({"containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"}]})
}

#[tokio::test]
async fn config_maps() {
    let s = shared();
    let ns = s.namespace("cmapi");
    let client = s.client().await;
    let cms = core(&client, "ConfigMap", "configmaps", Some(&ns));
    let created = cms
        .lifecycle(
            &ns,
            |name, labels| json!({"metadata": meta(name, labels), "data": {"valueName": "value"}}),
        )
        .await;
    assert_eq!(created["data"]["valueName"], "value");

    // Lifecycle: a strategic merge patch of labels and data, found across namespaces by
    // the patched label, then deleted as a collection by the static one.
    cms.create(json!({"metadata": meta("life", json!({"test-configmap-static": "true"})), "data": {"valueName": "value"}}))
        .await;
    cms.patch(
        "life",
        Patch::Strategic(
            json!({"metadata": {"labels": {"test-configmap": "patched"}}, "data": {"valueName": "value1"}}),
        ),
    )
    .await;
    let found = cms.list_everywhere("test-configmap=patched").await;
    let found: Vec<&Value> = found
        .iter()
        .filter(|c| c["metadata"]["namespace"] == ns.as_str())
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0]["metadata"]["labels"]["test-configmap-static"],
        "true"
    );
    assert_eq!(found[0]["data"]["valueName"], "value1");
    cms.delete_collection("test-configmap-static=true").await;
    assert!(cms.list("test-configmap-static=true").await.0.is_empty());

    // Update: the data replaced by a PUT reads back.
    let mut cm = cms
        .create(json!({"metadata": {"name": "upd"}, "data": {"data-1": "value-1", "data-2": "value-2"}}))
        .await;
    cm["data"] = json!({"data": "value"});
    cms.replace(cm).await;
    assert_eq!(cms.get("upd").await["data"], json!({"data": "value"}));

    // An empty key is refused.
    let refused = cms
        .refused_create(json!({"metadata": {"name": "empty-key"}, "data": {"": "value-1"}}))
        .await;
    assert_eq!(refused.code, 422, "{refused:?}");
    assert!(cms.is_gone("empty-key").await);

    immutability(&cms, |data| json!({"data": data})).await;
}

/// An immutable ConfigMap's or Secret's data cannot change, nor can it become mutable
/// again; a mutable one can be made immutable, and either can be deleted.
async fn immutability(objects: &Resource, data: impl Fn(Value) -> Value) {
    let mut body = data(json!({"k": "dmFsdWU="}));
    body["metadata"] = json!({"name": "frozen"});
    body["immutable"] = json!(true);
    objects.create(body).await;
    let mut frozen = objects.get("frozen").await;
    let changed = data(json!({"k": "Y2hhbmdlZA=="}));
    for (field, value) in changed.as_object().into_iter().flatten() {
        frozen[field] = value.clone();
    }
    let refused = objects
        .try_replace(frozen)
        .await
        .expect_err("data of an immutable object changed");
    assert_eq!(refused.code, 422);
    assert!(
        refused
            .message
            .contains("field is immutable when `immutable` is set"),
        "{}",
        refused.message
    );
    let refused = objects
        .try_patch("frozen", Patch::Merge(json!({"immutable": false})))
        .await
        .expect_err("an immutable object made mutable");
    assert_eq!(refused.code, 422, "{refused:?}");

    let mut body = data(json!({"k": "dmFsdWU="}));
    body["metadata"] = json!({"name": "thawed"});
    objects.create(body).await;
    objects.merge("thawed", json!({"immutable": true})).await;
    let refused = objects
        .try_patch("thawed", Patch::Merge(data(json!({"k": "Y2hhbmdlZA=="}))))
        .await
        .expect_err("data changed once made immutable");
    assert_eq!(refused.code, 422);
    // Labels may still change.
    objects
        .merge(
            "frozen",
            json!({"metadata": {"labels": {"relabelled": "yes"}}}),
        )
        .await;
    objects.delete("frozen").await;
    objects.delete("thawed").await;
    assert!(objects.is_gone("frozen").await && objects.is_gone("thawed").await);
}

#[tokio::test]
async fn secrets() {
    let s = shared();
    let ns = s.namespace("secretapi");
    let client = s.client().await;
    let secrets = core(&client, "Secret", "secrets", Some(&ns));
    secrets
        .create(json!({"metadata": meta("patch-me", json!({"testsecret-constant": "true"})), "type": "Opaque", "data": {"key": "dmFsdWU="}}))
        .await;
    let found = secrets.list_everywhere("testsecret-constant=true").await;
    assert!(found
        .iter()
        .any(|s| s["metadata"]["namespace"] == ns.as_str()));
    secrets
        .patch(
            "patch-me",
            Patch::Strategic(json!({"metadata": {"labels": {"testsecret": "true"}}, "data": {"key": "dmFsdWUy"}})),
        )
        .await;
    let got = secrets.get("patch-me").await;
    assert_eq!(got["data"]["key"], "dmFsdWUy");
    assert_eq!(got["metadata"]["labels"]["testsecret"], "true");
    secrets.delete_collection("testsecret-constant=true").await;
    assert!(secrets.is_gone("patch-me").await);

    let refused = secrets
        .refused_create(json!({"metadata": {"name": "empty-key"}, "data": {"": "dmFsdWU="}}))
        .await;
    assert_eq!(refused.code, 422, "{refused:?}");

    immutability(&secrets, |data| json!({"data": data})).await;
}

#[tokio::test]
async fn pod_templates() {
    let s = shared();
    let ns = s.namespace("ptapi");
    let client = s.client().await;
    let templates = core(&client, "PodTemplate", "podtemplates", Some(&ns));
    let make = |name: &str, labels: Value| json!({"metadata": meta(name, labels), "template": {"metadata": {"labels": {"app": "x"}}, "spec": pod_spec()}});
    templates.lifecycle(&ns, make).await;

    // Replace: the template's grace period changed through a PUT.
    let created = templates.create(make("replace-me", json!({}))).await;
    assert_eq!(
        created["template"]["spec"]["terminationGracePeriodSeconds"], 30,
        "defaulted inside the template"
    );
    let mut current = templates.get("replace-me").await;
    current["template"]["spec"]["terminationGracePeriodSeconds"] = json!(1);
    templates.replace(current).await;
    assert_eq!(
        templates.get("replace-me").await["template"]["spec"]["terminationGracePeriodSeconds"],
        1
    );

    // Delete a collection of three.
    for i in 1..=3 {
        templates
            .create(make(
                &format!("set-{i}"),
                json!({"podtemplate-set": "true"}),
            ))
            .await;
    }
    assert_eq!(templates.list("podtemplate-set=true").await.0.len(), 3);
    templates.delete_collection("podtemplate-set=true").await;
    assert!(templates.list("podtemplate-set=true").await.0.is_empty());
    assert!(!templates.is_gone("replace-me").await);
}

#[tokio::test]
async fn pods_delete_a_collection() {
    let s = shared();
    let ns = s.namespace("podcoll");
    let client = s.client().await;
    let pods = core(&client, "Pod", "pods", Some(&ns));
    for i in 1..=3 {
        pods.create(json!({"metadata": meta(&format!("pod-{i}"), json!({"type": "Testing"})), "spec": pod_spec()}))
            .await;
    }
    pods.create(json!({"metadata": meta("keep", json!({})), "spec": pod_spec()}))
        .await;
    assert_eq!(pods.list("type=Testing").await.0.len(), 3);
    pods.delete_collection("type=Testing").await;
    // Pods on no node go at once.
    assert!(pods.list("type=Testing").await.0.is_empty());
    assert_eq!(names(&pods.list("").await.0), ["keep"]);
}

#[tokio::test]
async fn limit_ranges() {
    let s = shared();
    let ns = s.namespace("lrapi");
    let client = s.client().await;
    let ranges = core(&client, "LimitRange", "limitranges", Some(&ns));
    let limits = json!({"limits": [{"type": "Container",
        "default": {"cpu": "500m", "memory": "500Mi"},
        "defaultRequest": {"cpu": "100m", "memory": "200Mi"},
        "min": {"cpu": "50m", "memory": "100Mi"},
        "max": {"cpu": "1", "memory": "1Gi"}}]});
    ranges
        .lifecycle(
            &ns,
            |name, labels| json!({"metadata": meta(name, labels), "spec": limits}),
        )
        .await;

    // Listed across namespaces by label, patched, deleted as a collection.
    ranges
        .create(
            json!({"metadata": meta("e2e-limitrange", json!({"e2e-test": ns})), "spec": limits}),
        )
        .await;
    let found = ranges.list_everywhere(&format!("e2e-test={ns}")).await;
    assert_eq!(names(&found), ["e2e-limitrange"]);
    let patched = ranges
        .patch(
            "e2e-limitrange",
            Patch::Strategic(json!({"metadata": {"labels": {"e2e-patched": "true"}},
                "spec": {"limits": [{"type": "Container", "default": {"cpu": "600m", "memory": "600Mi"},
                    "defaultRequest": {"cpu": "200m", "memory": "300Mi"}}]}})),
        )
        .await;
    assert_eq!(patched["metadata"]["labels"]["e2e-patched"], "true");
    assert_eq!(patched["spec"]["limits"][0]["default"]["memory"], "600Mi");
    ranges.delete_collection(&format!("e2e-test={ns}")).await;
    assert!(ranges
        .list_everywhere(&format!("e2e-test={ns}"))
        .await
        .is_empty());
}

#[tokio::test]
async fn service_accounts() {
    let s = shared();
    let ns = s.namespace("saapi");
    let client = s.client().await;
    let accounts = core(&client, "ServiceAccount", "serviceaccounts", Some(&ns));
    accounts
        .lifecycle(&ns, |name, labels| json!({"metadata": meta(name, labels)}))
        .await;

    // Lifecycle: created, watched, patched, found across namespaces, deleted as a
    // collection.
    let selector = format!("test-serviceaccount-static={ns}");
    let (_, rv) = accounts.list(&selector).await;
    let mut watch = accounts.watch(&selector, &rv).await;
    accounts
        .create(json!({"metadata": meta("e2e-sa", json!({"test-serviceaccount-static": ns})), "automountServiceAccountToken": false}))
        .await;
    let patched = accounts
        .merge("e2e-sa", json!({"automountServiceAccountToken": true}))
        .await;
    assert_eq!(patched["automountServiceAccountToken"], true);
    assert_eq!(
        names(&accounts.list_everywhere(&selector).await),
        ["e2e-sa"]
    );
    accounts.delete_collection(&selector).await;
    let seen = watch
        .next_events(3, |_, _| true, Duration::from_secs(20))
        .await;
    let kinds: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    assert_eq!(seen[1].1["automountServiceAccountToken"], true);

    // Update: an account replaced with new labels and a secret reference.
    let mut sa = accounts.create(json!({"metadata": {"name": "upd"}})).await;
    sa["metadata"]["labels"] = json!({"updated": "true"});
    sa["secrets"] = json!([{"name": "some-secret"}]);
    accounts.replace(sa).await;
    let got = accounts.get("upd").await;
    assert_eq!(got["metadata"]["labels"]["updated"], "true");
    assert_eq!(got["secrets"][0]["name"], "some-secret");
}

fn event(name: &str, labels: Value, ns: &str) -> Value {
    json!({
        "metadata": meta(name, labels),
        "involvedObject": {"kind": "Pod", "namespace": ns, "name": "some-pod", "apiVersion": "v1"},
        "reason": "Testing", "message": "This is a test event", "type": "Normal",
        "count": 1, "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z",
        "source": {"component": "e2e"}, "reportingComponent": "e2e", "reportingInstance": "e2e-1",
    })
}

#[tokio::test]
async fn core_events() {
    let s = shared();
    let ns = s.namespace("evapi");
    let client = s.client().await;
    let events = core(&client, "Event", "events", Some(&ns));
    events
        .lifecycle(&ns, |name, labels| event(name, labels, &ns))
        .await;

    // Manage lifecycle: the message patched, the series count updated, then deleted.
    let label = format!("testevent-constant={ns}");
    events
        .create(event("test-event", json!({"testevent-constant": ns}), &ns))
        .await;
    assert_eq!(names(&events.list_everywhere(&label).await), ["test-event"]);
    let patched = events
        .patch(
            "test-event",
            Patch::Strategic(json!({"message": "This is a patched event"})),
        )
        .await;
    assert_eq!(patched["message"], "This is a patched event");
    let mut current = events.get("test-event").await;
    current["count"] = json!(2);
    current["series"] = json!({"count": 100, "lastObservedTime": "2026-01-01T00:00:10.000000Z"});
    events.replace(current).await;
    let got = events.get("test-event").await;
    assert_eq!(got["count"], 2);
    assert_eq!(got["series"]["count"], 100);
    events.delete("test-event").await;
    assert!(events.list(&label).await.0.is_empty());

    // Delete a collection of three.
    for i in 1..=3 {
        events
            .create(event(
                &format!("coll-{i}"),
                json!({"testevent-set": "true"}),
                &ns,
            ))
            .await;
    }
    assert_eq!(events.list("testevent-set=true").await.0.len(), 3);
    events.delete_collection("testevent-set=true").await;
    assert!(events.list("testevent-set=true").await.0.is_empty());
}

fn new_event(name: &str, labels: Value, ns: &str) -> Value {
    json!({
        "metadata": meta(name, labels),
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "test-controller", "reportingInstance": "test-node",
        "action": "Do", "reason": "Testing", "note": "This is a test event", "type": "Normal",
        "regarding": {"kind": "Pod", "namespace": ns, "name": "some-pod", "apiVersion": "v1"},
    })
}

#[tokio::test]
async fn events_k8s_io_events() {
    let s = shared();
    let ns = s.namespace("evk8sapi");
    let client = s.client().await;
    let events = Resource::new(&client, "events.k8s.io/v1", "Event", "events", Some(&ns));
    events
        .lifecycle(&ns, |name, labels| new_event(name, labels, &ns))
        .await;

    // Fetch, patch, update, list, delete.
    let label = format!("testevent-constant={ns}");
    events
        .create(new_event(
            "test-event",
            json!({"testevent-constant": ns}),
            &ns,
        ))
        .await;
    let got = events.get("test-event").await;
    assert_eq!(got["note"], "This is a test event");
    assert_eq!(got["regarding"]["name"], "some-pod");
    let patched = events
        .patch(
            "test-event",
            Patch::Strategic(json!({"note": "This is a patched event"})),
        )
        .await;
    assert_eq!(patched["note"], "This is a patched event");
    // The same event through core/v1: events.k8s.io/v1 is another view of it.
    let as_core = core(&client, "Event", "events", Some(&ns))
        .get("test-event")
        .await;
    assert_eq!(as_core["message"], "This is a patched event");
    let mut current = events.get("test-event").await;
    current["series"] = json!({"count": 100, "lastObservedTime": "2026-01-01T00:00:10.000000Z"});
    events.replace(current).await;
    assert_eq!(events.get("test-event").await["series"]["count"], 100);
    assert_eq!(names(&events.list_everywhere(&label).await), ["test-event"]);
    events.delete("test-event").await;
    assert!(events.is_gone("test-event").await);

    for i in 1..=3 {
        events
            .create(new_event(
                &format!("coll-{i}"),
                json!({"testevent-set": "true"}),
                &ns,
            ))
            .await;
    }
    events.delete_collection("testevent-set=true").await;
    assert!(events.list("testevent-set=true").await.0.is_empty());
}

#[tokio::test]
async fn nodes() {
    let s = shared();
    let label = s.namespace("nodeapi");
    let client = s.client().await;
    let nodes = core(&client, "Node", "nodes", None);
    nodes
        .lifecycle(
            &label,
            |name, labels| json!({"metadata": meta(name, labels), "spec": {}}),
        )
        .await;

    // A fake node: created, read, patched, its status updated, listed, deleted.
    let name = format!("{label}-fake");
    let created = nodes
        .create(json!({"metadata": meta(&name, json!({"e2e-node": label})), "spec": {"unschedulable": true}}))
        .await;
    assert_eq!(created["spec"]["unschedulable"], true);
    let patched = nodes
        .merge(&name, json!({"metadata": {"labels": {"patched": "true"}}}))
        .await;
    assert_eq!(patched["metadata"]["labels"]["patched"], "true");
    let mut status = nodes.get_status(&name).await;
    status["status"]["addresses"] = json!([{"type": "InternalIP", "address": "203.0.113.9"}]);
    nodes.replace_status(status).await;
    let got = nodes.get(&name).await;
    assert_eq!(got["status"]["addresses"][0]["address"], "203.0.113.9");
    assert_eq!(got["spec"]["unschedulable"], true);
    assert_eq!(
        names(&nodes.list(&format!("e2e-node={label}")).await.0),
        [name.as_str()]
    );
    nodes.delete(&name).await;
    assert!(nodes.is_gone(&name).await);
}

#[tokio::test]
async fn leases() {
    let s = shared();
    let ns = s.namespace("leaseapi");
    let client = s.client().await;
    let leases = Resource::new(
        &client,
        "coordination.k8s.io/v1",
        "Lease",
        "leases",
        Some(&ns),
    );
    let spec = json!({"holderIdentity": "holder", "leaseDurationSeconds": 30,
        "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:00.000000Z",
        "leaseTransitions": 0});
    let created = leases
        .lifecycle(
            &ns,
            |name, labels| json!({"metadata": meta(name, labels), "spec": spec}),
        )
        .await;
    assert_eq!(created["spec"]["holderIdentity"], "holder");

    // Updated and patched spec fields read back; listed across namespaces.
    leases
        .create(json!({"metadata": meta("lease", json!({})), "spec": spec}))
        .await;
    let mut current = leases.get("lease").await;
    current["spec"]["holderIdentity"] = json!("holder2");
    current["spec"]["leaseTransitions"] = json!(1);
    leases.replace(current).await;
    let patched = leases
        .patch(
            "lease",
            Patch::Strategic(
                json!({"spec": {"holderIdentity": "holder3", "leaseDurationSeconds": 60}}),
            ),
        )
        .await;
    assert_eq!(patched["spec"]["holderIdentity"], "holder3");
    assert_eq!(patched["spec"]["leaseDurationSeconds"], 60);
    assert_eq!(patched["spec"]["leaseTransitions"], 1);
    assert!(leases
        .list_everywhere("")
        .await
        .iter()
        .any(|l| l["metadata"]["namespace"] == ns.as_str()));
    leases.delete("lease").await;
    assert!(leases.is_gone("lease").await);
}

#[tokio::test]
async fn resource_quotas() {
    let s = shared();
    let ns = s.namespace("rqapi");
    let client = s.client().await;
    let quotas = core(&client, "ResourceQuota", "resourcequotas", Some(&ns));
    quotas
        .lifecycle(
            &ns,
            |name, labels| json!({"metadata": meta(name, labels), "spec": {"hard": {"pods": "5"}}}),
        )
        .await;

    // Update and delete: the hard limits replaced, then the quota deleted.
    let mut quota = quotas
        .create(json!({"metadata": {"name": "test-quota"}, "spec": {"hard": {"cpu": "1", "memory": "500Mi"}}}))
        .await;
    quota["spec"]["hard"]["cpu"] = json!("2");
    quotas.replace(quota).await;
    assert_eq!(quotas.get("test-quota").await["spec"]["hard"]["cpu"], "2");
    quotas.delete("test-quota").await;
    assert!(quotas.is_gone("test-quota").await);

    // Apply changes to status: status replaced and patched through the subresource,
    // the spec untouched.
    quotas
        .create(json!({"metadata": meta("status-quota", json!({"e2e-rq": "status"})), "spec": {"hard": {"cpu": "500m", "memory": "500Mi"}}}))
        .await;
    let mut status = quotas.get_status("status-quota").await;
    status["status"] =
        json!({"hard": {"cpu": "500m", "memory": "500Mi"}, "used": {"cpu": "0", "memory": "0"}});
    let replaced = quotas.replace_status(status).await;
    assert_eq!(replaced["status"]["hard"]["memory"], "500Mi");
    let patched = quotas
        .patch_status(
            "status-quota",
            Patch::Merge(
                json!({"status": {"hard": {"cpu": "1", "memory": "1Gi"}, "used": {"cpu": "100m"}},
                "spec": {"hard": {"cpu": "9"}}}),
            ),
        )
        .await;
    assert_eq!(patched["status"]["hard"]["cpu"], "1");
    assert_eq!(patched["status"]["used"]["cpu"], "100m");
    assert_eq!(
        patched["spec"]["hard"]["cpu"], "500m",
        "a status write left the spec"
    );
    let read = quotas.get_status("status-quota").await;
    assert_eq!(read["status"]["hard"]["memory"], "1Gi");
}

#[tokio::test]
async fn namespaces() {
    let s = shared();
    let label = s.namespace("nsapi");
    let client = s.client().await;
    let namespaces = core(&client, "Namespace", "namespaces", None);

    // Patching: a label added by a strategic merge patch.
    let name = format!("{label}-patched");
    namespaces.create(json!({"metadata": {"name": name}})).await;
    namespaces
        .patch(
            &name,
            Patch::Strategic(json!({"metadata": {"labels": {"testLabel": "testValue"}}})),
        )
        .await;
    assert_eq!(
        namespaces.get(&name).await["metadata"]["labels"]["testLabel"],
        "testValue"
    );

    // Apply update: a label added through a PUT.
    let mut current = namespaces.get(&name).await;
    current["metadata"]["labels"]["e2e-updated"] = json!("true");
    namespaces.replace(current).await;
    assert_eq!(
        namespaces.get(&name).await["metadata"]["labels"]["e2e-updated"],
        "true"
    );

    // Apply changes to status: a condition patched, then replaced, through `status`.
    let condition = json!({"type": "StatusUpdate", "status": "True", "reason": "E2E",
        "message": "Set from an e2e test", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    let patched = namespaces
        .patch_status(
            &name,
            Patch::Merge(json!({"status": {"conditions": [condition]}})),
        )
        .await;
    assert_eq!(patched["status"]["conditions"][0]["reason"], "E2E");
    assert_eq!(patched["status"]["phase"], "Active");
    let mut status = namespaces.get_status(&name).await;
    status["status"]["conditions"][0]["message"] = json!("Updated by an e2e test");
    let replaced = namespaces.replace_status(status).await;
    assert_eq!(
        replaced["status"]["conditions"][0]["message"],
        "Updated by an e2e test"
    );

    // Apply finalizer: `finalize` adds a finalizer to the spec, and takes it away.
    let mut ns = namespaces.get(&name).await;
    ns["spec"]["finalizers"] = json!(["kubernetes", "e2e.example.com/fakeFinalizer"]);
    let path = format!("/api/v1/namespaces/{name}/finalize");
    let (code, finalized) = raw(&client, "PUT", &path, &[], Some(ns.to_string())).await;
    assert_eq!(code, 200, "{finalized}");
    assert_eq!(
        namespaces.get(&name).await["spec"]["finalizers"],
        json!(["kubernetes", "e2e.example.com/fakeFinalizer"])
    );
    let mut ns = namespaces.get(&name).await;
    ns["spec"]["finalizers"] = json!(["kubernetes"]);
    let (code, finalized) = raw(&client, "PUT", &path, &[], Some(ns.to_string())).await;
    assert_eq!(code, 200, "{finalized}");
    assert_eq!(
        namespaces.get(&name).await["spec"]["finalizers"],
        json!(["kubernetes"])
    );
}
