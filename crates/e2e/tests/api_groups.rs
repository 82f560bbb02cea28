//! The API groups Skiff serves and stores without acting on them yet, through upstream's
//! conformance steps: priority and fairness (`flowcontrol.go`), dynamic resource
//! allocation (`test/e2e/dra`: the CRUD tests of `resource.k8s.io/v1`) and storage
//! version migration (`storage_version_migration.go`), the last two through upstream's
//! generic resource test ([`Resource::crud`]).

use std::time::Duration;

use kube::api::Patch;
use serde_json::{json, Value};
use skiff_e2e::api::{names, raw, Case, Resource};
use skiff_e2e::shared;

/// A label added: the change the generic test makes where a spec is fixed or awkward.
fn relabel(object: &mut Value) {
    object["metadata"]["labels"]["e2e-updated"] = json!("true");
}

/// A case whose patches add a label.
fn labelled(initial: Value, status: Option<Value>) -> Case {
    Case {
        initial,
        update: relabel,
        status,
        patch: json!({"metadata": {"labels": {"e2e-patched": "true"}}}),
        json_patch: json!([{"op": "add", "path": "/metadata/labels/e2e-patched", "value": "true"}]),
    }
}

fn condition(kind: &str) -> Value {
    json!({"type": kind, "status": "True", "reason": "E2E", "message": "Set from an e2e test",
        "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

/// The group-version's discovery lists `resources` (subresources as `plural/status`).
async fn discovered(client: &kube::Client, group_version: &str, resources: &[&str]) {
    let (code, list) = raw(client, "GET", &format!("/apis/{group_version}"), &[], None).await;
    assert_eq!(code, 200, "{list}");
    let listed: Vec<&str> = list["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for resource in resources {
        assert!(
            listed.contains(resource),
            "{resource} not in {group_version}: {listed:?}"
        );
    }
}

/// Upstream's priority-and-fairness API walk: three objects created, read, listed,
/// watched, patched, replaced, their status read, patched and replaced, deleted one by
/// one and as a collection.
async fn flowcontrol_walk(objects: &Resource, label: &str, spec: Value) {
    let selector = format!("e2e-flowcontrol={label}");
    let (_, rv) = objects.list(&selector).await;
    let mut watch = objects.watch(&selector, &rv).await;
    let names_made: Vec<String> = (1..=3).map(|i| format!("{label}-{i}")).collect();
    for name in &names_made {
        objects
            .create(json!({"metadata": {"name": name, "labels": {"e2e-flowcontrol": label}}, "spec": spec}))
            .await;
    }
    let first = &names_made[0];
    assert!(contains_spec(&objects.get(first).await, &spec));
    assert_eq!(names(&objects.list(&selector).await.0), names_made);
    let patched = objects
        .merge(
            first,
            json!({"metadata": {"annotations": {"patched": "true"}}}),
        )
        .await;
    assert_eq!(patched["metadata"]["annotations"]["patched"], "true");
    let mut current = objects.get(first).await;
    current["metadata"]["annotations"]["updated"] = json!("true");
    let updated = objects.replace(current).await;
    assert_eq!(updated["metadata"]["annotations"]["updated"], "true");
    let seen = watch
        .next_events(
            1,
            |kind, o| kind == "MODIFIED" && o["metadata"]["annotations"]["updated"] == "true",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(seen[0].1["metadata"]["name"], first.as_str());

    let status = objects.get_status(first).await;
    assert_eq!(status["metadata"]["name"], first.as_str());
    let patched = objects
        .patch_status(
            first,
            Patch::Merge(json!({"status": {"conditions": [condition("StatusPatched")]}})),
        )
        .await;
    assert_eq!(patched["status"]["conditions"][0]["type"], "StatusPatched");
    let mut status = objects.get_status(first).await;
    status["status"]["conditions"] = json!([condition("StatusUpdated")]);
    let replaced = objects.replace_status(status).await;
    assert_eq!(replaced["status"]["conditions"][0]["type"], "StatusUpdated");
    assert!(
        contains_spec(&replaced, &spec),
        "a status write left the spec"
    );

    objects.delete(first).await;
    assert!(objects.is_gone(first).await);
    objects.delete_collection(&selector).await;
    assert!(objects.list(&selector).await.0.is_empty());
}

fn contains_spec(object: &Value, spec: &Value) -> bool {
    skiff_e2e::api::contains(&object["spec"], spec)
}

#[tokio::test]
async fn flow_schemas() {
    let s = shared();
    let label = s.namespace("fsapi");
    let client = s.client().await;
    discovered(
        &client,
        "flowcontrol.apiserver.k8s.io/v1",
        &[
            "flowschemas",
            "flowschemas/status",
            "prioritylevelconfigurations",
            "prioritylevelconfigurations/status",
        ],
    )
    .await;
    let schemas = Resource::new(
        &client,
        "flowcontrol.apiserver.k8s.io/v1",
        "FlowSchema",
        "flowschemas",
        None,
    );
    let spec = json!({"matchingPrecedence": 10000, "priorityLevelConfiguration": {"name": "global-default"},
        "distinguisherMethod": {"type": "ByUser"},
        "rules": [{"subjects": [{"kind": "Group", "group": {"name": "system:unauthenticated"}}],
            "resourceRules": [{"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"]}]}]});
    flowcontrol_walk(&schemas, &label, spec).await;
}

#[tokio::test]
async fn priority_level_configurations() {
    let s = shared();
    let label = s.namespace("plcapi");
    let client = s.client().await;
    let levels = Resource::new(
        &client,
        "flowcontrol.apiserver.k8s.io/v1",
        "PriorityLevelConfiguration",
        "prioritylevelconfigurations",
        None,
    );
    let spec = json!({"type": "Limited", "limited": {"nominalConcurrencyShares": 2,
        "limitResponse": {"type": "Reject"}}});
    flowcontrol_walk(&levels, &label, spec).await;
}

#[tokio::test]
async fn dra_device_classes() {
    let s = shared();
    let label = s.namespace("draclass");
    let client = s.client().await;
    discovered(
        &client,
        "resource.k8s.io/v1",
        &[
            "deviceclasses",
            "devicetaintrules",
            "resourceclaims",
            "resourceclaims/status",
            "resourceclaimtemplates",
            "resourceslices",
        ],
    )
    .await;
    let classes = Resource::new(
        &client,
        "resource.k8s.io/v1",
        "DeviceClass",
        "deviceclasses",
        None,
    );
    classes
        .crud(
            &label,
            labelled(
                json!({"spec": {"selectors": [{"cel": {"expression": "device.driver == \"e2e.example.com\""}}]}}),
                None,
            ),
        )
        .await;
}

#[tokio::test]
async fn dra_device_taint_rules() {
    let s = shared();
    let label = s.namespace("drataint");
    let client = s.client().await;
    let rules = Resource::new(
        &client,
        "resource.k8s.io/v1",
        "DeviceTaintRule",
        "devicetaintrules",
        None,
    );
    rules
        .crud(
            &label,
            labelled(
                json!({"spec": {"deviceSelector": {"driver": "e2e.example.com"},
                    "taint": {"key": "example.com/taint", "value": "tainted", "effect": "NoSchedule"}}}),
                Some(json!({"conditions": [condition("EvictionInProgress")]})),
            ),
        )
        .await;
}

fn device_requests() -> Value {
    json!({"devices": {"requests": [{"name": "req-0", "exactly": {"deviceClassName": "e2e-class"}}]}})
}

#[tokio::test]
async fn dra_resource_claims() {
    let s = shared();
    let ns = s.namespace("draclaim");
    let client = s.client().await;
    let claims = Resource::new(
        &client,
        "resource.k8s.io/v1",
        "ResourceClaim",
        "resourceclaims",
        Some(&ns),
    );
    claims
        .crud(
            &ns,
            labelled(
                json!({"spec": device_requests()}),
                Some(json!({"devices": [{"driver": "e2e.example.com", "pool": "pool", "device": "dev-0",
                    "conditions": [condition("Ready")]}]})),
            ),
        )
        .await;
}

#[tokio::test]
async fn dra_resource_claim_templates() {
    let s = shared();
    let ns = s.namespace("dratemplate");
    let client = s.client().await;
    let templates = Resource::new(
        &client,
        "resource.k8s.io/v1",
        "ResourceClaimTemplate",
        "resourceclaimtemplates",
        Some(&ns),
    );
    templates
        .crud(
            &ns,
            labelled(json!({"spec": {"spec": device_requests()}}), None),
        )
        .await;
}

#[tokio::test]
async fn dra_resource_slices() {
    let s = shared();
    let label = s.namespace("draslice");
    let client = s.client().await;
    let slices = Resource::new(
        &client,
        "resource.k8s.io/v1",
        "ResourceSlice",
        "resourceslices",
        None,
    );
    slices
        .crud(
            &label,
            labelled(
                json!({"spec": {"driver": "e2e.example.com", "nodeName": "node-1",
                    "pool": {"name": "pool", "generation": 1, "resourceSliceCount": 1},
                    "devices": [{"name": "dev-0"}]}}),
                None,
            ),
        )
        .await;
}

#[tokio::test]
async fn storage_version_migrations() {
    let s = shared();
    let label = s.namespace("svmapi");
    let client = s.client().await;
    discovered(
        &client,
        "storagemigration.k8s.io/v1",
        &[
            "storageversionmigrations",
            "storageversionmigrations/status",
        ],
    )
    .await;
    let migrations = Resource::new(
        &client,
        "storagemigration.k8s.io/v1",
        "StorageVersionMigration",
        "storageversionmigrations",
        None,
    );
    migrations
        .crud(
            &label,
            labelled(
                json!({"spec": {"resource": {"group": "", "resource": "foo"}}}),
                Some(json!({"conditions": [{"type": "TestCondition", "status": "True", "reason": "TestReason",
                    "message": "TestMessage", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})),
            ),
        )
        .await;
}
