//! What a pod spec holds besides its containers' basics: volumes (a DNS-label name, unique,
//! exactly one source), the containers' volume mounts (naming a volume, a unique mount
//! path), `envFrom` sources and probes (exactly one handler, non-negative timings), as
//! upstream's `ValidatePodSpec` words them. `super::pod_spec` and `super::container` call
//! in, in upstream's order.

use std::collections::HashSet;

use serde_json::Value;

use super::{list, nonnegative, number, port_name, port_number, text};
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

/// Upstream's `ValidateVolumes`: the names of the valid volumes, which mounts may name.
pub(super) fn volumes(
    spec: Option<&Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, volume) in list(spec, "volumes").iter().enumerate() {
        let at = format!("{path}.volumes[{i}]");
        let mut found = Vec::new();
        volume_source(volume, &at, &mut found);
        let name = text(Some(volume), "name");
        let field = format!("{at}.name");
        if name.is_empty() {
            found.push(Cause::required(&field));
        } else if !is_dns1123_label(name) {
            found.push(Cause::invalid(&field, name, DNS1123_LABEL_MSG));
        }
        if names.contains(name) {
            found.push(Cause::duplicate(&field, name));
        }
        if found.is_empty() {
            names.insert(name.to_string());
        }
        causes.extend(found);
    }
    names
}

fn volume_source(volume: &Value, at: &str, causes: &mut Vec<Cause>) {
    let mut count = 0;
    for source in SOURCES {
        let Some(value) = volume.get(*source).filter(|v| !v.is_null()) else {
            continue;
        };
        let field = format!("{at}.{source}");
        if count > 0 {
            causes.push(Cause::forbidden(
                field,
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        count += 1;
        let required = match *source {
            "hostPath" => Some("path"),
            "secret" => Some("secretName"),
            "persistentVolumeClaim" => Some("claimName"),
            "configMap" => Some("name"),
            "nfs" => Some("server"),
            "csi" => Some("driver"),
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
    }
    if count == 0 {
        causes.push(Cause::required_detail(at, "must specify a volume type"));
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
    volumes: &HashSet<String>,
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
        if !volumes.contains(name) {
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

fn probe_causes(probe: &Value, at: &str, causes: &mut Vec<Cause>) {
    let mut handlers = 0;
    for kind in ["exec", "httpGet", "tcpSocket", "grpc"] {
        let Some(handler) = probe.get(kind).filter(|h| !h.is_null()) else {
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
        match kind {
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
