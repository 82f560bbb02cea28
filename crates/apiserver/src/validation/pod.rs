//! What a pod spec holds besides its containers' basics: volumes (a DNS-label name, unique,
//! exactly one source), the containers' volume mounts (naming a volume, a unique mount
//! path), `envFrom` sources and probes (exactly one handler, non-negative timings), as
//! upstream's `ValidatePodSpec` words them. `super::pod_spec` and `super::container` call
//! in, in upstream's order.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::{list, nonnegative, number, port_name, port_number, text, PULL_POLICIES};
use crate::status::Cause;
use crate::strategy::{is_dns1123_label, is_dns1123_subdomain};
use crate::strategy::{DNS1123_LABEL_MSG, DNS1123_SUBDOMAIN_MSG};

/// A pod's volume sources, in the order upstream checks them.
const SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "downwardAPI",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "configMap",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// The valid volumes of a pod, which mounts and devices may name, with their source.
pub(super) type Volumes<'v> = HashMap<&'v str, &'static str>;

/// Upstream's `ValidateVolumes`: the valid volumes, by name. `is_pod` is upstream's
/// `ResourceIsPod`: templates may leave an image volume's reference to be filled in.
pub(super) fn volumes<'v>(
    spec: Option<&'v Value>,
    is_pod: bool,
    path: &str,
    causes: &mut Vec<Cause>,
) -> Volumes<'v> {
    let mut names = Volumes::new();
    for (i, volume) in list(spec, "volumes").iter().enumerate() {
        let at = format!("{path}.volumes[{i}]");
        let mut found = Vec::new();
        let source = volume_source(volume, is_pod, &at, &mut found);
        let name = text(Some(volume), "name");
        let field = format!("{at}.name");
        if name.is_empty() {
            found.push(Cause::required(&field));
        } else if !is_dns1123_label(name) {
            found.push(Cause::invalid(&field, name, DNS1123_LABEL_MSG));
        }
        if names.contains_key(name) {
            found.push(Cause::duplicate(&field, name));
        }
        if let (true, Some(source)) = (found.is_empty(), source) {
            names.insert(name, source);
        }
        causes.extend(found);
    }
    names
}

/// Checks the volume has exactly one valid source; returns the first it has.
fn volume_source(
    volume: &Value,
    is_pod: bool,
    at: &str,
    causes: &mut Vec<Cause>,
) -> Option<&'static str> {
    let mut first = None;
    for source in SOURCES {
        let Some(value) = volume.get(*source).filter(|v| !v.is_null()) else {
            continue;
        };
        let field = format!("{at}.{source}");
        if first.is_some() {
            causes.push(Cause::forbidden(
                field,
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        first = Some(*source);
        let required = match *source {
            "hostPath" => Some("path"),
            "secret" => Some("secretName"),
            "persistentVolumeClaim" => Some("claimName"),
            "configMap" => Some("name"),
            "nfs" => Some("server"),
            "csi" => Some("driver"),
            "image" if is_pod => Some("reference"),
            _ => None,
        };
        if let Some(key) = required {
            let value = text(Some(value), key);
            let name_field = format!("{field}.{key}");
            if value.is_empty() {
                causes.push(Cause::required(name_field));
            } else if matches!(*source, "secret" | "configMap") && !is_dns1123_subdomain(value) {
                causes.push(Cause::invalid(name_field, value, DNS1123_SUBDOMAIN_MSG));
            }
        }
        if *source == "image" {
            image_pull_policy(value, &field, causes);
        }
    }
    if first.is_none() {
        causes.push(Cause::required_detail(at, "must specify a volume type"));
    }
    first
}

/// An image volume's `pullPolicy`, as upstream's `validatePullPolicy` has it (defaulting
/// has set it unless the client sent something else).
fn image_pull_policy(image: &Value, at: &str, causes: &mut Vec<Cause>) {
    let field = format!("{at}.pullPolicy");
    match text(Some(image), "pullPolicy") {
        "" => causes.push(Cause::required(field)),
        policy if !PULL_POLICIES.contains(&policy) => {
            causes.push(Cause::unsupported(field, policy, PULL_POLICIES))
        }
        _ => {}
    }
}

/// Upstream's `ValidateEnvFrom`: each source names one ConfigMap or one Secret.
pub(super) fn env_from(container: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let field = format!("{path}.envFrom");
    for (i, source) in list(container, "envFrom").iter().enumerate() {
        let mut count = 0;
        for (key, name_key) in [("configMapRef", "name"), ("secretRef", "name")] {
            let Some(reference) = source.get(key).filter(|r| !r.is_null()) else {
                continue;
            };
            count += 1;
            let name = text(Some(reference), name_key);
            let name_field = format!("{field}[{i}].{key}.{name_key}");
            if name.is_empty() {
                causes.push(Cause::required(name_field));
            } else if !is_dns1123_subdomain(name) {
                causes.push(Cause::invalid(name_field, name, DNS1123_SUBDOMAIN_MSG));
            }
        }
        match count {
            0 => causes.push(Cause::invalid(
                &field,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            )),
            1 => {}
            _ => causes.push(Cause::invalid(
                &field,
                "",
                "may not have more than one field specified at a time",
            )),
        }
    }
}

/// Upstream's `ValidateVolumeMounts`: each names a valid volume and a unique path.
pub(super) fn volume_mounts(
    container: Option<&Value>,
    volumes: &Volumes,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let mut paths = HashSet::new();
    for (i, mount) in list(container, "volumeMounts").iter().enumerate() {
        let at = format!("{path}.volumeMounts[{i}]");
        let mount = Some(mount);
        let name = text(mount, "name");
        if name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        }
        if !volumes.contains_key(name) {
            causes.push(Cause::not_found(format!("{at}.name"), name));
        }
        let mount_path = text(mount, "mountPath");
        if mount_path.is_empty() {
            causes.push(Cause::required(format!("{at}.mountPath")));
        }
        if !paths.insert(mount_path) {
            causes.push(Cause::invalid(
                format!("{at}.mountPath"),
                mount_path,
                "must be unique",
            ));
        }
        let sub_path = text(mount, "subPath");
        if !sub_path.is_empty() {
            let field = format!("{path}.volumeMounts.subPath");
            if sub_path.starts_with('/') {
                causes.push(Cause::invalid(&field, sub_path, "must be a relative path"));
            }
            if sub_path.split('/').any(|part| part == "..") {
                causes.push(Cause::invalid(&field, sub_path, "must not contain '..'"));
            }
        }
    }
}

/// A container's probes (`init` containers may not have them unless they restart).
pub(super) fn probes(container: Option<&Value>, init: bool, path: &str, causes: &mut Vec<Cause>) {
    let restartable = text(container, "restartPolicy") == "Always";
    for kind in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(probe) = container.and_then(|c| c.get(kind)).filter(|p| !p.is_null()) else {
            continue;
        };
        let at = format!("{path}.{kind}");
        if init && !restartable {
            causes.push(Cause::forbidden(
                at,
                "may not be set for init containers without restartPolicy=Always",
            ));
            continue;
        }
        probe_causes(probe, &at, causes);
        let success = number(Some(probe), "successThreshold");
        if kind != "readinessProbe" {
            if let Some(success) = success.filter(|s| *s != 1) {
                causes.push(Cause::invalid(
                    format!("{at}.successThreshold"),
                    success,
                    "must be 1",
                ));
            }
        } else if let Some(grace) = number(Some(probe), "terminationGracePeriodSeconds") {
            causes.push(Cause::invalid(
                format!("{at}.terminationGracePeriodSeconds"),
                grace,
                "must not be set for readinessProbes",
            ));
        }
    }
}

/// What a probe may do.
const PROBE_HANDLERS: &[&str] = &["exec", "httpGet", "tcpSocket", "grpc"];
/// What a lifecycle hook may do.
const HOOK_HANDLERS: &[&str] = &["exec", "httpGet", "tcpSocket", "sleep"];

/// Upstream's `validateHandler` and `validateLifecycleHandler`: exactly one of `kinds`, each
/// complete. `grace` is the pod's termination grace period, which a hook's sleep may not
/// exceed.
fn handler(owner: &Value, kinds: &[&str], grace: Option<i64>, at: &str, causes: &mut Vec<Cause>) {
    let mut handlers = 0;
    for kind in kinds {
        let Some(handler) = owner.get(*kind).filter(|h| !h.is_null()) else {
            continue;
        };
        let field = format!("{at}.{kind}");
        if handlers > 0 {
            causes.push(Cause::forbidden(
                field,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        handlers += 1;
        match *kind {
            "exec" => {
                if list(Some(handler), "command").is_empty() {
                    causes.push(Cause::required(format!("{field}.command")));
                }
            }
            "httpGet" => {
                if text(Some(handler), "path").is_empty() {
                    causes.push(Cause::required(format!("{field}.path")));
                }
                port_or_name(handler.get("port"), &format!("{field}.port"), causes);
                let scheme = text(Some(handler), "scheme");
                if scheme != "HTTP" && scheme != "HTTPS" {
                    causes.push(Cause::unsupported(
                        format!("{field}.scheme"),
                        scheme,
                        &["HTTP", "HTTPS"],
                    ));
                }
            }
            "tcpSocket" => port_or_name(handler.get("port"), &format!("{field}.port"), causes),
            "sleep" => {
                let seconds = number(Some(handler), "seconds").unwrap_or(0);
                let grace = grace.unwrap_or(DEFAULT_GRACE_SECONDS);
                if seconds < 0 || seconds > grace {
                    causes.push(Cause::invalid(
                        field,
                        seconds,
                        &format!(
                            "must be non-negative and less than terminationGracePeriodSeconds ({grace})"
                        ),
                    ));
                }
            }
            _ => port_number(
                number(Some(handler), "port").unwrap_or(0),
                format!("{field}.port"),
                causes,
            ),
        }
    }
    if handlers == 0 {
        causes.push(Cause::required_detail(at, "must specify a handler type"));
    }
}

/// A pod's `terminationGracePeriodSeconds` when it gives none (upstream's default).
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Upstream's `validateLifecycle`: each hook a complete handler. Init containers that do
/// not restart run to completion and may have no hooks.
pub(super) fn lifecycle(
    container: Option<&Value>,
    init: bool,
    grace: Option<i64>,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let Some(lifecycle) = container
        .and_then(|c| c.get("lifecycle"))
        .filter(|l| !l.is_null())
    else {
        return;
    };
    let at = format!("{path}.lifecycle");
    if init && text(container, "restartPolicy") != "Always" {
        causes.push(Cause::forbidden(
            at,
            "may not be set for init containers without restartPolicy=Always",
        ));
        return;
    }
    for hook in ["postStart", "preStop"] {
        if let Some(hook_handler) = lifecycle.get(hook).filter(|h| !h.is_null()) {
            handler(
                hook_handler,
                HOOK_HANDLERS,
                grace,
                &format!("{at}.{hook}"),
                causes,
            );
        }
    }
}

/// Upstream's `ValidateVolumeDevices`: each names a PersistentVolumeClaim volume (block
/// mode) no mount uses, at a unique path no mount uses.
pub(super) fn volume_devices(
    container: Option<&Value>,
    volumes: &Volumes,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let mounts: Vec<(&str, &str)> = list(container, "volumeMounts")
        .iter()
        .map(|m| (text(Some(m), "name"), text(Some(m), "mountPath")))
        .collect();
    let mut names = HashSet::new();
    let mut paths = HashSet::new();
    for (i, device) in list(container, "volumeDevices").iter().enumerate() {
        let at = format!("{path}.volumeDevices[{i}]");
        let name = text(Some(device), "name");
        let device_path = text(Some(device), "devicePath");
        let name_field = format!("{at}.name");
        let path_field = format!("{at}.devicePath");
        if name.is_empty() {
            causes.push(Cause::required(&name_field));
        }
        if names.contains(name) {
            causes.push(Cause::invalid(&name_field, name, "must be unique"));
        }
        match volumes.get(name) {
            None => causes.push(Cause::not_found(&name_field, name)),
            Some(&"persistentVolumeClaim" | &"ephemeral") => {}
            Some(_) => causes.push(Cause::invalid(
                &name_field,
                name,
                "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            )),
        }
        if device_path.is_empty() {
            causes.push(Cause::required(&path_field));
        }
        if paths.contains(device_path) {
            causes.push(Cause::invalid(&path_field, device_path, "must be unique"));
        }
        if device_path.split('/').any(|part| part == "..") {
            causes.push(Cause::invalid(
                &path_field,
                device_path,
                "can not contain backsteps ('..')",
            ));
        } else {
            paths.insert(device_path);
        }
        if mounts.iter().any(|(mount, _)| *mount == name) {
            causes.push(Cause::invalid(
                &name_field,
                name,
                "must not already exist in volumeMounts",
            ));
        }
        if mounts
            .iter()
            .any(|(_, mount_path)| *mount_path == device_path)
        {
            causes.push(Cause::invalid(
                &path_field,
                device_path,
                "must not already exist as a path in volumeMounts",
            ));
        }
        if !name.is_empty() {
            names.insert(name);
        }
    }
}

fn probe_causes(probe: &Value, at: &str, causes: &mut Vec<Cause>) {
    handler(probe, PROBE_HANDLERS, None, at, causes);
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        nonnegative(Some(probe), key, at, causes);
    }
    if let Some(grace) = number(Some(probe), "terminationGracePeriodSeconds").filter(|g| *g <= 0) {
        causes.push(Cause::invalid(
            format!("{at}.terminationGracePeriodSeconds"),
            grace,
            "must be greater than 0",
        ));
    }
}

/// Upstream's `ValidatePortNumOrName`.
fn port_or_name(port: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    match port {
        Some(Value::String(name)) => port_name(name, field, causes),
        other => port_number(
            other.and_then(Value::as_i64).unwrap_or(0),
            field.to_string(),
            causes,
        ),
    }
}
