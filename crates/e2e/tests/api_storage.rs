//! The storage APIs and RuntimeClasses through upstream's API conformance steps
//! (`test/e2e/storage`, `test/e2e/common/storage`, `test/e2e/common/node/runtimeclass.go`),
//! with kube-rs against a real API server: StorageClasses, PersistentVolumes and claims
//! with their status, VolumeAttachments, CSIDrivers, CSINodes, CSIStorageCapacities,
//! VolumeAttributesClasses, pods with inline CSI volumes, RuntimeClasses.

use kube::api::Patch;
use serde_json::{json, Value};
use skiff_e2e::api::{raw, Resource};
use skiff_e2e::shared;

fn storage(client: &kube::Client, kind: &str, plural: &str, ns: Option<&str>) -> Resource {
    Resource::new(client, "storage.k8s.io/v1", kind, plural, ns)
}

fn meta(name: &str, labels: Value) -> Value {
    json!({"name": name, "labels": labels})
}

/// Creates `object`, checks that `patch` is refused (`422`: a field fixed once created),
/// and deletes it.
async fn fixed_once_created(objects: &Resource, object: Value, patch: Value) {
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    objects.create(object).await;
    let refused = objects
        .try_patch(&name, Patch::Merge(patch.clone()))
        .await
        .expect_err("a field fixed once created changed");
    assert_eq!(refused.code, 422, "{patch}: {refused:?}");
    objects.delete(&name).await;
}

#[tokio::test]
async fn storage_classes() {
    let s = shared();
    let label = s.namespace("scapi");
    let client = s.client().await;
    let classes = storage(&client, "StorageClass", "storageclasses", None);
    let created = classes
        .lifecycle(&label, |name, labels| {
            json!({"metadata": meta(name, labels), "provisioner": "e2e-fake-provisioner",
                "parameters": {"type": "fast"}})
        })
        .await;
    assert_eq!(created["reclaimPolicy"], "Delete", "defaulted");
    assert_eq!(created["volumeBindingMode"], "Immediate", "defaulted");
    // The provisioner cannot change.
    fixed_once_created(
        &classes,
        json!({"metadata": {"name": format!("{label}-fixed")}, "provisioner": "e2e-fake-provisioner"}),
        json!({"provisioner": "other"}),
    )
    .await;
}

#[tokio::test]
async fn persistent_volumes_and_claims() {
    let s = shared();
    let ns = s.namespace("pvapi");
    let client = s.client().await;
    let volumes = Resource::new(&client, "v1", "PersistentVolume", "persistentvolumes", None);
    let claims = Resource::new(
        &client,
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        Some(&ns),
    );
    let pv_spec = json!({"capacity": {"storage": "3Gi"}, "accessModes": ["ReadWriteOnce"],
        "storageClassName": "manual", "hostPath": {"path": "/tmp/e2e"}});
    let pvc_spec = json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
        "resources": {"requests": {"storage": "1Gi"}}});
    let created = volumes
        .lifecycle(
            &ns,
            |name, labels| json!({"metadata": meta(name, labels), "spec": pv_spec}),
        )
        .await;
    assert_eq!(
        created["spec"]["persistentVolumeReclaimPolicy"], "Retain",
        "defaulted"
    );
    assert_eq!(created["status"]["phase"], "Pending");
    let created = claims
        .lifecycle(
            &ns,
            |name, labels| json!({"metadata": meta(name, labels), "spec": pvc_spec}),
        )
        .await;
    assert_eq!(created["spec"]["volumeMode"], "Filesystem", "defaulted");
    assert_eq!(created["status"]["phase"], "Pending");

    // Apply changes to status: a PV's phase and a PVC's conditions through `status`.
    let pv = format!("{ns}-pv");
    volumes
        .create(json!({"metadata": {"name": pv}, "spec": pv_spec}))
        .await;
    let patched = volumes
        .patch_status(
            &pv,
            Patch::Merge(json!({"status": {"phase": "Available", "message": "patched"}})),
        )
        .await;
    assert_eq!(patched["status"]["message"], "patched");
    let mut status = volumes.get_status(&pv).await;
    status["status"]["message"] = json!("updated");
    status["spec"]["capacity"]["storage"] = json!("9Gi");
    let replaced = volumes.replace_status(status).await;
    assert_eq!(replaced["status"]["message"], "updated");
    assert_eq!(
        replaced["spec"]["capacity"]["storage"], "3Gi",
        "a status write left the spec"
    );
    volumes.delete(&pv).await;

    claims
        .create(json!({"metadata": {"name": "claim"}, "spec": pvc_spec}))
        .await;
    let condition = json!({"type": "StatusUpdate", "status": "True", "reason": "E2E",
        "message": "Set from an e2e test"});
    let patched = claims
        .patch_status(
            "claim",
            Patch::Merge(json!({"status": {"conditions": [condition]}})),
        )
        .await;
    assert_eq!(patched["status"]["conditions"][0]["type"], "StatusUpdate");
    let mut status = claims.get_status("claim").await;
    status["status"]["conditions"][0]["message"] = json!("Updated by an e2e test");
    let replaced = claims.replace_status(status).await;
    assert_eq!(
        replaced["status"]["conditions"][0]["message"],
        "Updated by an e2e test"
    );
    assert_eq!(replaced["spec"]["resources"]["requests"]["storage"], "1Gi");
}

#[tokio::test]
async fn volume_attachments() {
    let s = shared();
    let label = s.namespace("vaapi");
    let client = s.client().await;
    let attachments = storage(&client, "VolumeAttachment", "volumeattachments", None);
    let spec = json!({"attacher": "e2e-test.storage.k8s.io", "nodeName": "some-node",
        "source": {"persistentVolumeName": "some-pv"}});
    attachments
        .lifecycle(
            &label,
            |name, labels| json!({"metadata": meta(name, labels), "spec": spec}),
        )
        .await;

    // Status: attached through a patch of `status`, its metadata through a PUT.
    let name = format!("{label}-status");
    attachments
        .create(json!({"metadata": {"name": name}, "spec": spec}))
        .await;
    let patched = attachments
        .patch_status(&name, Patch::Merge(json!({"status": {"attached": true}})))
        .await;
    assert_eq!(patched["status"]["attached"], true);
    let mut status = attachments.get_status(&name).await;
    status["status"]["attachmentMetadata"] = json!({"device": "/dev/e2e"});
    let replaced = attachments.replace_status(status).await;
    assert_eq!(
        replaced["status"]["attachmentMetadata"]["device"],
        "/dev/e2e"
    );
    assert_eq!(replaced["status"]["attached"], true);
    attachments.delete(&name).await;
    // The spec is fixed once created.
    fixed_once_created(
        &attachments,
        json!({"metadata": {"name": name}, "spec": spec}),
        json!({"spec": {"nodeName": "other-node"}}),
    )
    .await;
}

#[tokio::test]
async fn csi_drivers_nodes_and_capacities() {
    let s = shared();
    let ns = s.namespace("csiapi");
    let client = s.client().await;
    let drivers = storage(&client, "CSIDriver", "csidrivers", None);
    let created = drivers
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels), "spec": {"attachRequired": true,
                "volumeLifecycleModes": ["Ephemeral"]}})
        })
        .await;
    assert_eq!(created["spec"]["podInfoOnMount"], false, "defaulted");
    assert_eq!(
        created["spec"]["volumeLifecycleModes"],
        json!(["Ephemeral"])
    );

    let nodes = storage(&client, "CSINode", "csinodes", None);
    let created = nodes
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels), "spec": {"drivers": [
                {"name": "e2e.example.com", "nodeID": "node-1", "topologyKeys": ["zone"]}]}})
        })
        .await;
    assert_eq!(created["spec"]["drivers"][0]["nodeID"], "node-1");

    let capacities = storage(
        &client,
        "CSIStorageCapacity",
        "csistoragecapacities",
        Some(&ns),
    );
    let created = capacities
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels), "storageClassName": "e2e-class",
                "capacity": "1Gi", "nodeTopology": {"matchLabels": {"zone": "a"}}})
        })
        .await;
    assert_eq!(created["capacity"], "1Gi");
}

#[tokio::test]
async fn volume_attributes_classes() {
    let s = shared();
    let label = s.namespace("vacapi");
    let client = s.client().await;
    let classes = storage(
        &client,
        "VolumeAttributesClass",
        "volumeattributesclasses",
        None,
    );
    classes
        .lifecycle(&label, |name, labels| {
            json!({"metadata": meta(name, labels), "driverName": "e2e.example.com",
                "parameters": {"iops": "100"}})
        })
        .await;
    // The parameters cannot change.
    fixed_once_created(
        &classes,
        json!({"metadata": {"name": format!("{label}-fixed")}, "driverName": "e2e.example.com",
            "parameters": {"iops": "100"}}),
        json!({"parameters": {"iops": "200"}}),
    )
    .await;
}

#[tokio::test]
async fn csi_volume_source_in_a_pod() {
    let s = shared();
    let ns = s.namespace("csipod");
    let client = s.client().await;
    let pods = Resource::new(&client, "v1", "Pod", "pods", Some(&ns));
    let created = pods
        .lifecycle(&ns, |name, labels| {
            json!({"metadata": meta(name, labels), "spec": {
                "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1",
                    "volumeMounts": [{"name": "inline", "mountPath": "/data"}]}],
                "volumes": [{"name": "inline", "csi": {"driver": "e2e.example.com",
                    "volumeAttributes": {"foo": "bar"}}}]}})
        })
        .await;
    assert_eq!(
        created["spec"]["volumes"][0]["csi"]["driver"],
        "e2e.example.com"
    );
    assert_eq!(
        created["spec"]["volumes"][0]["csi"]["volumeAttributes"]["foo"],
        "bar"
    );
}

#[tokio::test]
async fn runtime_classes() {
    let s = shared();
    let label = s.namespace("rcapi");
    let client = s.client().await;
    // The group is discoverable with the resource in it.
    let (code, group) = raw(&client, "GET", "/apis/node.k8s.io/v1", &[], None).await;
    assert_eq!(code, 200);
    let resources: Vec<&str> = group["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(resources.contains(&"runtimeclasses"), "{group}");

    let classes = Resource::new(
        &client,
        "node.k8s.io/v1",
        "RuntimeClass",
        "runtimeclasses",
        None,
    );
    let created = classes
        .lifecycle(
            &label,
            |name, labels| json!({"metadata": meta(name, labels), "handler": "runc"}),
        )
        .await;
    assert_eq!(created["handler"], "runc");
    // The handler is fixed.
    fixed_once_created(
        &classes,
        json!({"metadata": {"name": format!("{label}-fixed")}, "handler": "runc"}),
        json!({"handler": "other"}),
    )
    .await;
}
