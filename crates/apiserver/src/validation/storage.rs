//! Storage: PersistentVolumeClaims (access modes, the storage request), PersistentVolumes
//! (capacity, access modes, exactly one source) and StorageClasses (provisioner, reclaim
//! policy, binding mode), as upstream's `core` and `storage` validation word them.

use serde_json::Value;

use super::{canonical, list, text};
use crate::status::Cause;

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// A claim's spec (of a PersistentVolumeClaim, or a StatefulSet's claim template at `path`).
pub(super) fn claim_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let modes = list(spec, "accessModes");
    if modes.is_empty() {
        causes.push(Cause::required_detail(
            format!("{path}.accessModes"),
            "at least 1 access mode is required",
        ));
    }
    access_modes(modes, path, causes);
    let field = format!("{path}.resources[storage]");
    match spec
        .and_then(|s| s.pointer("/resources/requests/storage"))
        .and_then(Value::as_str)
    {
        None => causes.push(Cause::required(field)),
        Some(storage) => quantity_positive(storage, &field, causes),
    }
    if let Some(class) = spec
        .and_then(|s| s.get("storageClassName"))
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    {
        if !crate::strategy::is_dns1123_subdomain(class) {
            causes.push(Cause::invalid(
                format!("{path}.storageClassName"),
                class,
                crate::strategy::DNS1123_SUBDOMAIN_MSG,
            ));
        }
    }
}

fn access_modes(modes: &[Value], path: &str, causes: &mut Vec<Cause>) {
    let mut once_pod = false;
    for mode in modes {
        let mode = mode.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&mode) {
            causes.push(Cause::unsupported(
                format!("{path}.accessModes"),
                mode,
                ACCESS_MODES,
            ));
        }
        once_pod |= mode == "ReadWriteOncePod";
    }
    if once_pod && modes.len() > 1 {
        causes.push(Cause::forbidden(
            format!("{path}.accessModes"),
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

/// Non-negative, then greater than zero (upstream's two checks of a storage size).
fn quantity_positive(quantity: &str, field: &str, causes: &mut Vec<Cause>) {
    let Ok(milli) = skiff_quantity::parse_milli(quantity) else {
        return;
    };
    if milli < 0 {
        causes.push(Cause::invalid(
            field,
            canonical(quantity),
            "must be greater than or equal to 0",
        ));
    }
    if milli <= 0 {
        causes.push(Cause::invalid(
            field,
            canonical(quantity),
            "must be greater than zero",
        ));
    }
}

/// The sources a PersistentVolume may have, in upstream's order of checking.
const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "flocker",
    "nfs",
    "rbd",
    "quobyte",
    "cephfs",
    "iscsi",
    "cinder",
    "fc",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

pub(super) fn persistent_volume(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let modes = list(spec, "accessModes");
    if modes.is_empty() {
        causes.push(Cause::required("spec.accessModes"));
    }
    access_modes(modes, "spec", causes);
    let capacity = spec
        .and_then(|s| s.get("capacity"))
        .and_then(Value::as_object);
    if capacity.is_none_or(|c| c.is_empty()) {
        causes.push(Cause::required("spec.capacity"));
    }
    for (name, quantity) in capacity.into_iter().flatten() {
        if let Some(quantity) = quantity.as_str() {
            quantity_positive(quantity, &format!("spec.capacity[{name}]"), causes);
        }
    }
    let mut sources = 0;
    for source in VOLUME_SOURCES {
        let Some(value) = spec.and_then(|s| s.get(*source)).filter(|v| !v.is_null()) else {
            continue;
        };
        if sources > 0 {
            causes.push(Cause::forbidden(
                format!("spec.{source}"),
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        sources += 1;
        let required = match *source {
            "hostPath" | "local" => Some("path"),
            "nfs" => Some("server"),
            "csi" => Some("driver"),
            _ => None,
        };
        if let Some(key) = required {
            if text(Some(value), key).is_empty() {
                causes.push(Cause::required(format!("spec.{source}.{key}")));
            }
        }
        if *source == "nfs" && text(Some(value), "path").is_empty() {
            causes.push(Cause::required("spec.nfs.path"));
        }
        if *source == "csi" && text(Some(value), "volumeHandle").is_empty() {
            causes.push(Cause::required("spec.csi.volumeHandle"));
        }
    }
    if sources == 0 {
        causes.push(Cause::required_detail("spec", "must specify a volume type"));
    }
    let policy = text(spec, "persistentVolumeReclaimPolicy");
    if !policy.is_empty() && !["Delete", "Recycle", "Retain"].contains(&policy) {
        causes.push(Cause::unsupported(
            "spec.persistentVolumeReclaimPolicy",
            policy,
            &["Delete", "Recycle", "Retain"],
        ));
    }
}

pub(super) fn storage_class(object: &Value, causes: &mut Vec<Cause>) {
    let object = Some(object);
    let provisioner = text(object, "provisioner");
    if provisioner.is_empty() {
        causes.push(Cause::required("provisioner"));
    } else {
        super::qualified_name(&provisioner.to_ascii_lowercase(), "provisioner", causes);
    }
    let policy = text(object, "reclaimPolicy");
    if !policy.is_empty() && !["Delete", "Retain"].contains(&policy) {
        causes.push(Cause::unsupported(
            "reclaimPolicy",
            policy,
            &["Delete", "Retain"],
        ));
    }
    let mode = text(object, "volumeBindingMode");
    if mode.is_empty() {
        causes.push(Cause::required("volumeBindingMode"));
    } else if !["Immediate", "WaitForFirstConsumer"].contains(&mode) {
        causes.push(Cause::unsupported(
            "volumeBindingMode",
            mode,
            &["Immediate", "WaitForFirstConsumer"],
        ));
    }
}
