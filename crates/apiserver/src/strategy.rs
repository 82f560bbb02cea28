//! Per-type behaviour plugged into the generic registry, as upstream's `RESTStrategy`s:
//! what a create or update resets, what counts as a spec change, which fields selectors
//! may name, and the validation every object of a kind gets.
//!
//! The registry calls these hooks for every resource; a kind that needs nothing special
//! gets the defaults. Full per-type defaulting and validation grow here.

use serde_json::{json, Map, Value};

use crate::object;
use crate::resources::{builtin, ResourceInfo};
use crate::status::{BadValue, Cause};

/// Field selectors every resource supports.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// The fields a field selector may name for objects of `kind`.
pub fn selectable_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Event" => &[
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Secret" => &["metadata.name", "metadata.namespace", "type"],
        "Namespace" => &["metadata.name", "status.phase"],
        "Node" => &["metadata.name", "spec.unschedulable"],
        "ReplicaSet" | "ReplicationController" => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        "Job" => &["metadata.name", "metadata.namespace", "status.successful"],
        "Service" => &[
            "metadata.name",
            "metadata.namespace",
            "spec.clusterIP",
            "spec.type",
        ],
        "CertificateSigningRequest" => &["metadata.name", "spec.signerName"],
        _ => COMMON_FIELDS,
    }
}

/// The selectable fields of whatever resource is stored under `key`; custom resources
/// (stored under `<group>/<plural>`, which no built-in storage name starts) have the
/// common ones.
pub fn selectable_fields_for_key(key: &str) -> &'static [&'static str] {
    /// Each built-in storage name with its kind, longest first, so that the first
    /// prefix that matches is the most specific (`services/endpoints` before `services`).
    static STORAGE: std::sync::LazyLock<Vec<(String, String)>> = std::sync::LazyLock::new(|| {
        let mut storage: Vec<(String, String)> = builtin()
            .into_iter()
            .filter(|r| r.storage_version.is_empty() || r.storage_version == r.api_version())
            .map(|r| (r.storage, r.kind))
            .collect();
        storage.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        storage
    });
    let Some(rest) = key.strip_prefix("/registry/") else {
        return COMMON_FIELDS;
    };
    STORAGE
        .iter()
        .find(|(storage, _)| {
            rest.strip_prefix(storage.as_str())
                .is_some_and(|tail| tail.starts_with('/'))
        })
        .map(|(_, kind)| selectable_fields(kind))
        .unwrap_or(COMMON_FIELDS)
}

/// The fields a field selector may name for objects of `resource`: a custom resource's
/// `selectableFields` besides the common ones.
pub fn selectable_fields_of(resource: &ResourceInfo) -> Vec<&str> {
    let mut fields = selectable_fields(resource.builtin_kind()).to_vec();
    if let Some(custom) = &resource.custom {
        fields.extend(custom.selectable_fields.iter().map(String::as_str));
    }
    fields
}

/// The value of a selectable field; fields not held at their path are derived here.
pub fn field_value(object: &Value, field: &str) -> Option<String> {
    match field {
        // Events select on `source` by the reporting component's name.
        "source" => object::field_value(object, "source.component"),
        "spec.unschedulable" | "spec.hostNetwork" => {
            Some(object::field_value(object, field).unwrap_or_else(|| "false".into()))
        }
        _ => object::field_value(object, field),
    }
}

/// Resets what a create may not set and fills in what the server owns.
pub fn prepare_for_create(resource: &ResourceInfo, object: &mut Value) {
    let has_status = resource.has_subresource("status");
    match resource.builtin_kind() {
        "Namespace" => {
            set(object, "spec", json!({"finalizers": ["kubernetes"]}));
            set(object, "status", json!({"phase": "Active"}));
        }
        "Job" => {
            generate_job_selector(object);
            if let Some(fields) = object.as_object_mut() {
                fields.shift_remove("status");
            }
        }
        "CustomResourceDefinition" => crate::crd::definition::prepare_for_create(object),
        "CertificateSigningRequest" => crate::certificates::prepare_for_create(object),
        "Pod" => {
            let qos = qos_class(object);
            set(
                object,
                "status",
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
        _ if has_status => {
            if let Some(fields) = object.as_object_mut() {
                fields.shift_remove("status");
            }
        }
        _ => {}
    }
    apply_defaults(resource, object);
}

/// Upstream's Job strategy: unless the user manages the selector, a Job selects its pods
/// by its own uid, and its pod template carries the labels that make that true.
fn generate_job_selector(job: &mut Value) {
    let manual = job.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
    let uid = object::meta_str(job, "uid").unwrap_or("").to_string();
    let name = object::name(job).to_string();
    if manual || uid.is_empty() {
        return;
    }
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = spec.entry("template").or_insert_with(|| json!({}));
    let Some(template) = template.as_object_mut() else {
        return;
    };
    let metadata = template.entry("metadata").or_insert_with(|| json!({}));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let labels = metadata.entry("labels").or_insert_with(|| json!({}));
    if let Some(labels) = labels.as_object_mut() {
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.insert(key.into(), json!(value));
        }
    }
}

/// Carries over what an update of the main resource may not change: the status, for
/// resources whose status has its own endpoint.
pub fn prepare_for_update(resource: &ResourceInfo, new: &mut Value, old: &Value) {
    if resource.has_subresource("status") || resource.builtin_kind() == "Namespace" {
        copy_field(new, old, "status");
    }
    if resource.builtin_kind() == "Namespace" {
        copy_field(new, old, "spec");
    }
    if resource.builtin_kind() == "Pod" {
        crate::ephemeral::keep(new, old);
    }
    if resource.builtin_kind() == "CustomResourceDefinition" {
        crate::crd::definition::prepare_for_update(new);
    }
    apply_defaults(resource, new);
}

/// Fields an update may not change, by kind (as upstream's `ValidateUpdate`s refuse
/// them), as (JSON pointer, field path, detail of a `Forbidden` cause where upstream
/// words it so; an `Invalid` "field is immutable" otherwise).
type Immutable = (&'static str, &'static str, Option<&'static str>);

fn immutable_fields(kind: &str, old: &Value) -> Vec<Immutable> {
    let mut fields = match kind {
        "EndpointSlice" => vec![("/addressType", "addressType", None)],
        // A pod's certificate request never changes; its status says what became of it.
        "PodCertificateRequest" => vec![("/spec", "spec", None)],
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            vec![("/spec/selector", "spec.selector", None)]
        }
        "Job" => vec![
            ("/spec/selector", "spec.selector", None),
            ("/spec/completionMode", "spec.completionMode", None),
            ("/spec/podFailurePolicy", "spec.podFailurePolicy", None),
            (
                "/spec/backoffLimitPerIndex",
                "spec.backoffLimitPerIndex",
                None,
            ),
        ],
        "Secret" => vec![("/type", "type", None)],
        "StorageClass" => vec![
            (
                "/parameters",
                "parameters",
                Some("updates to parameters are forbidden."),
            ),
            (
                "/provisioner",
                "provisioner",
                Some("updates to provisioner are forbidden."),
            ),
            (
                "/reclaimPolicy",
                "reclaimPolicy",
                Some("updates to reclaimPolicy are forbidden."),
            ),
            ("/volumeBindingMode", "volumeBindingMode", None),
        ],
        "VolumeAttributesClass" => vec![
            ("/driverName", "driverName", None),
            ("/parameters", "parameters", Some("field is immutable")),
        ],
        "VolumeAttachment" => vec![("/spec", "spec", None)],
        "RuntimeClass" => vec![("/handler", "handler", None)],
        "PriorityClass" => vec![
            ("/value", "value", Some("may not be changed in an update.")),
            ("/preemptionPolicy", "preemptionPolicy", None),
        ],
        _ => Vec::new(),
    };
    // An immutable ConfigMap or Secret keeps its data (and stays immutable).
    if matches!(kind, "ConfigMap" | "Secret") && old.get("immutable") == Some(&Value::Bool(true)) {
        let frozen = Some("field is immutable when `immutable` is set");
        fields.extend([
            ("/immutable", "immutable", frozen),
            ("/data", "data", frozen),
            ("/binaryData", "binaryData", frozen),
        ]);
    }
    fields
}

/// What an update of a custom object is checked against besides the object itself: its
/// schema's transition rules (through the main resource and `status` alike).
pub fn validate_transition(resource: &ResourceInfo, new: &Value, old: &Value) -> Vec<Cause> {
    match resource
        .custom
        .as_ref()
        .and_then(|c| c.storage_schema.as_ref())
    {
        Some(schema) => crate::crd::cel::validate_transition(new, old, schema),
        None => Vec::new(),
    }
}

/// What an update changes that may not change: one `field is immutable` cause each.
pub fn validate_update(resource: &ResourceInfo, new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = match resource.builtin_kind() {
        "CustomResourceDefinition" => return crate::crd::definition::validate_update(new, old),
        "Pod" => return crate::pod_update::validate(new, old),
        "Job" => job_update(new, old),
        "StatefulSet" => stateful_set_update(new, old),
        "RoleBinding" | "ClusterRoleBinding" => crate::validation::role_ref_update(new, old),
        _ => Vec::new(),
    };
    causes.extend(
        immutable_fields(resource.builtin_kind(), old)
            .into_iter()
            .filter(|(pointer, _, _)| new.pointer(pointer) != old.pointer(pointer))
            .map(|(pointer, field, forbidden)| {
                if let Some(detail) = forbidden {
                    return Cause::forbidden(field, detail);
                }
                let value: BadValue = match new.pointer(pointer) {
                    // A selector shows as upstream's `metav1.LabelSelector` does.
                    Some(selector) if field == "spec.selector" && selector.is_object() => {
                        crate::validation::go::label_selector(selector)
                    }
                    Some(Value::String(s)) => s.into(),
                    Some(other) => other.to_string().into(),
                    None => "".into(),
                };
                Cause::invalid(field, value, "field is immutable")
            }),
    );
    causes
}

/// Upstream's StatefulSet update: only these fields of the spec may change.
fn stateful_set_update(new: &Value, old: &Value) -> Vec<Cause> {
    const MUTABLE: [&str; 6] = [
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ];
    let without_mutable = |object: &Value| {
        let mut spec = object.get("spec").cloned().unwrap_or(Value::Null);
        if let Some(fields) = spec.as_object_mut() {
            fields.retain(|key, _| !MUTABLE.contains(&key.as_str()));
        }
        spec
    };
    if without_mutable(new) == without_mutable(old) {
        return Vec::new();
    }
    vec![Cause::forbidden(
        "spec",
        "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
    )]
}

/// What upstream's Job validation refuses beyond plain immutable fields: `completions`
/// changes only for an Indexed Job, in tandem with `parallelism` (an elastic Job); the
/// pod template not at all, except the scheduling directives, labels and annotations of
/// a Job that is suspended and has never started (so a queue can place it).
fn job_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let completions = new.pointer("/spec/completions");
    if completions != old.pointer("/spec/completions") {
        let indexed =
            new.pointer("/spec/completionMode").and_then(Value::as_str) == Some("Indexed");
        let invalid = |detail: &str| match completions.and_then(Value::as_i64) {
            Some(n) => Cause::invalid("spec.completions", n, detail),
            None => Cause::invalid("spec.completions", "null", detail),
        };
        if !indexed {
            causes.push(invalid("field is immutable"));
        } else if completions.is_some_and(|c| !c.is_null())
            && completions != new.pointer("/spec/parallelism")
        {
            causes.push(invalid(
                "can only be modified in tandem with spec.parallelism",
            ));
        }
    }
    let suspended = old.pointer("/spec/suspend") == Some(&Value::Bool(true));
    let never_started = old.pointer("/status/startTime").is_none_or(Value::is_null);
    let mut template = old
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    if suspended && never_started {
        const MUTABLE: [&str; 6] = [
            "/metadata/labels",
            "/metadata/annotations",
            "/spec/nodeSelector",
            "/spec/tolerations",
            "/spec/affinity",
            "/spec/schedulingGates",
        ];
        for pointer in MUTABLE {
            let wanted = new.pointer(&format!("/spec/template{pointer}")).cloned();
            let (parent, key) = pointer.rsplit_once('/').unwrap_or_default();
            if let Some(fields) = template.pointer_mut(parent).and_then(Value::as_object_mut) {
                match wanted {
                    Some(value) => fields.insert(key.to_string(), value),
                    None => fields.shift_remove(key),
                };
            }
        }
    }
    let wanted = new.pointer("/spec/template");
    if wanted != Some(&template) {
        let value = wanted.map(Value::to_string).unwrap_or_default();
        causes.push(Cause::invalid(
            "spec.template",
            &value,
            "field is immutable",
        ));
    }
    causes
}

/// A status update changes the status only: everything else comes from the stored object,
/// except labels and annotations, which upstream's status strategies let through (the
/// workload controllers' kinds keep their labels, as upstream resets them there).
pub fn prepare_for_status_update(kind: &str, new: &mut Value, old: &Value) {
    let status = new.get("status").cloned();
    let mut merged = old.clone();
    match status {
        Some(status) => set(&mut merged, "status", status),
        None => {
            if let Some(fields) = merged.as_object_mut() {
                fields.shift_remove("status");
            }
        }
    }
    let keeps_labels = matches!(
        kind,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
    );
    let passed: &[&str] = if keeps_labels {
        &["annotations"]
    } else {
        &["labels", "annotations"]
    };
    for field in passed {
        let value = new.pointer(&format!("/metadata/{field}")).cloned();
        if let Some(meta) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
            match value {
                Some(value) => {
                    meta.insert(field.to_string(), value);
                }
                None => {
                    meta.shift_remove(*field);
                }
            }
        }
    }
    *new = merged;
}

/// Whether an update changed anything a controller acts on (so `generation` moves).
/// A custom resource without a `status` subresource counts its status too, as upstream.
pub fn spec_changed(resource: &ResourceInfo, new: &Value, old: &Value) -> bool {
    let status_apart = resource.custom.is_none() || resource.has_subresource("status");
    let strip = |v: &Value| -> Map<String, Value> {
        let mut fields = v.as_object().cloned().unwrap_or_default();
        for skipped in ["metadata", "status", "kind", "apiVersion"] {
            if skipped == "status" && !status_apart {
                continue;
            }
            fields.shift_remove(skipped);
        }
        fields
    };
    strip(new) != strip(old)
}

/// Fills in upstream's defaults (what decoding a request body does upstream).
pub fn apply_defaults(resource: &ResourceInfo, object: &mut Value) {
    if let Some(custom) = &resource.custom {
        if let Some(schema) = &custom.storage_schema {
            crate::crd::schema::prune(object, schema);
            crate::crd::schema::apply_defaults(object, schema);
        }
        return;
    }
    if resource.builtin_kind() == "CustomResourceDefinition" {
        crate::crd::definition::apply_defaults(object);
    }
    if resource.builtin_kind() == "Secret" {
        if object.get("type").is_none() {
            set(object, "type", json!("Opaque"));
        }
        merge_string_data(object);
    }
    // Upstream's `SetDefaults_Namespace`: a namespace is labelled with its name.
    let name = object::name(object).to_string();
    if resource.builtin_kind() == "Namespace" && !name.is_empty() {
        let labels = object::metadata_mut(object)
            .entry("labels")
            .or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    crate::defaults::apply(&resource.kind, object);
}

/// A Secret's `stringData` is write-only: upstream's conversion merges it into `data`
/// (base64, overriding keys `data` has) before anything else sees the object.
fn merge_string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(fields) = secret.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = fields.shift_remove("stringData") else {
        return;
    };
    let data = fields.entry("data").or_insert_with(|| json!({}));
    if let Some(data) = data.as_object_mut() {
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data.insert(key, Value::String(encoded));
        }
    }
}

fn set(object: &mut Value, field: &str, value: Value) {
    if let Some(fields) = object.as_object_mut() {
        fields.insert(field.to_string(), value);
    }
}

fn copy_field(new: &mut Value, old: &Value, field: &str) {
    if let Some(fields) = new.as_object_mut() {
        match old.get(field) {
            Some(value) => {
                fields.insert(field.to_string(), value.clone());
            }
            None => {
                fields.shift_remove(field);
            }
        }
    }
}

/// Whether two quantities of a resource are one amount (`0.1` and `100m` are).
fn same_quantity(resource: &str, a: &Value, b: &Value) -> bool {
    let parse = |v: &Value| {
        let text = v.as_str()?;
        let parsed = if resource == "cpu" {
            skiff_quantity::parse_milli(text)
        } else {
            skiff_quantity::parse_value(text)
        };
        parsed.ok()
    };
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// The pod's QoS class, from its containers' requests and limits (upstream's rules).
pub fn qos_class(pod: &Value) -> &'static str {
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.get("spec")?.get(*f)?.as_array())
        .flatten();
    let mut any_set = false;
    let mut guaranteed = true;
    for container in containers {
        let resources = container.get("resources");
        let requests = resources
            .and_then(|r| r.get("requests"))
            .and_then(Value::as_object);
        let limits = resources
            .and_then(|r| r.get("limits"))
            .and_then(Value::as_object);
        for name in ["cpu", "memory"] {
            let request = requests.and_then(|r| r.get(name));
            let limit = limits.and_then(|l| l.get(name));
            if request.is_some() || limit.is_some() {
                any_set = true;
            }
            // A missing request defaults to the limit.
            match (request, limit) {
                (_, None) => guaranteed = false,
                (Some(r), Some(l)) if !same_quantity(name, r, l) => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any_set {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

pub(crate) const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub(crate) const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub fn is_dns1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

/// Names some kinds allow beyond DNS subdomains (RBAC roles may contain `:`).
fn name_is_valid(kind: &str, name: &str) -> Result<(), String> {
    match kind {
        "Namespace" | "Service" => {
            if is_dns1123_label(name) {
                Ok(())
            } else {
                Err(DNS1123_LABEL_MSG.into())
            }
        }
        // The core group's APIService is `v1.`, no DNS name.
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" | "APIService" => {
            if name.contains('/') || name.contains('%') || name == "." || name == ".." {
                Err("may not contain '/' or '%'".into())
            } else {
                Ok(())
            }
        }
        _ => {
            if is_dns1123_subdomain(name) {
                Ok(())
            } else {
                Err(DNS1123_SUBDOMAIN_MSG.into())
            }
        }
    }
}

/// Validation common to every object, plus what this kind checks.
pub fn validate(resource: &ResourceInfo, object: &Value) -> Vec<Cause> {
    validate_object(resource, object, true)
}

/// What a status update is checked against: the spec came from the stored object, so
/// what `crate::validation` checks of it is not checked again (upstream's status
/// strategies validate the status and metadata only); an object stored before a check
/// existed keeps taking its controllers' status.
pub fn validate_for_status(resource: &ResourceInfo, object: &Value) -> Vec<Cause> {
    validate_object(resource, object, false)
}

fn validate_object(resource: &ResourceInfo, object: &Value, with_spec: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = object::name(object);
    if name.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: name or generateName is required".into(),
            field: "metadata.name".into(),
        });
    } else if let Err(detail) = name_is_valid(resource.builtin_kind(), name) {
        causes.push(Cause::invalid("metadata.name", name, &detail));
    }
    for (key, value) in object::labels(object) {
        if crate::selectors::LabelSelector::parse(&format!("{key}={value}")).is_err() {
            causes.push(Cause::invalid(
                "metadata.labels",
                &value,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ));
        }
    }
    match resource.builtin_kind() {
        "ConfigMap" | "Secret" => {
            for field in ["data", "binaryData", "stringData"] {
                if let Some(data) = object.get(field).and_then(Value::as_object) {
                    for key in data.keys() {
                        if !is_config_key(key) {
                            causes.push(Cause::invalid(
                                format!("{field}[{key}]"),
                                key,
                                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                            ));
                        }
                    }
                }
            }
            if with_spec && resource.builtin_kind() == "Secret" {
                causes.extend(crate::validation::validate("Secret", object));
            }
        }
        "CustomResourceDefinition" => causes.extend(crate::crd::definition::validate(object)),
        "CertificateSigningRequest" => causes.extend(crate::certificates::validate(object)),
        "PodCertificateRequest" => {
            for field in [
                "signerName",
                "podName",
                "podUID",
                "serviceAccountName",
                "serviceAccountUID",
                "nodeName",
                "nodeUID",
            ] {
                if object
                    .pointer(&format!("/spec/{field}"))
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!("spec.{field}")));
                }
            }
        }
        "ValidatingAdmissionPolicy" => {
            causes.extend(crate::policy::validating::validate_policy(object))
        }
        "ValidatingAdmissionPolicyBinding" => {
            causes.extend(crate::policy::validating::validate_binding(object))
        }
        "MutatingAdmissionPolicy" => {
            causes.extend(crate::policy::mutating::validate_policy(object))
        }
        "MutatingAdmissionPolicyBinding" => {
            causes.extend(crate::policy::mutating::validate_binding(object))
        }
        "APIService" => causes.extend(crate::aggregator::validation::validate(object)),
        "ValidatingWebhookConfiguration" => {
            causes.extend(crate::webhooks::validate_configuration(object, false))
        }
        "MutatingWebhookConfiguration" => {
            causes.extend(crate::webhooks::validate_configuration(object, true))
        }
        "" => {
            if let Some(schema) = resource
                .custom
                .as_ref()
                .and_then(|c| c.storage_schema.as_ref())
            {
                causes.extend(crate::crd::schema::validate(object, schema));
                causes.extend(crate::crd::cel::validate(object, schema));
            }
        }
        kind if with_spec => causes.extend(crate::validation::validate(kind, object)),
        _ => {}
    }
    causes
}

fn is_config_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        && key != "."
        && key != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_goes_into_data() {
        let mut secret = json!({"kind": "Secret", "data": {"a": "eA==", "b": "eQ=="},
            "stringData": {"b": "hunter2", "c": "z"}});
        merge_string_data(&mut secret);
        assert_eq!(
            secret,
            json!({"kind": "Secret", "data": {"a": "eA==", "b": "aHVudGVyMg==", "c": "eg=="}})
        );
    }

    #[test]
    fn fields_by_key() {
        assert!(selectable_fields_for_key("/registry/pods/default/a").contains(&"spec.nodeName"));
        assert!(selectable_fields_for_key("/registry/events/default/a").contains(&"reason"));
        assert_eq!(
            selectable_fields_for_key("/registry/configmaps/default/a"),
            COMMON_FIELDS
        );
    }

    #[test]
    fn qos() {
        let best = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(qos_class(&best), "BestEffort");
        let guaranteed = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burst = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&burst), "Burstable");
    }

    #[test]
    fn a_jobs_completions_and_template_change_only_as_upstream_allows() {
        let catalogue = crate::resources::Catalogue::new();
        let jobs = catalogue.get("batch", "v1", "jobs").expect("served");
        let job = |completions: i64, parallelism: i64, mode: &str, suspend: bool, zone: &str| {
            json!({"spec": {
                "completions": completions, "parallelism": parallelism,
                "completionMode": mode, "suspend": suspend,
                "template": {"metadata": {"labels": {"job-name": "j"}},
                             "spec": {"nodeSelector": {"zone": zone},
                                      "containers": [{"name": "c", "image": "busybox"}]}}
            }})
        };
        let fields = |new: &Value, old: &Value| -> Vec<String> {
            validate_update(&jobs, new, old)
                .into_iter()
                .map(|c| c.field)
                .collect()
        };
        let old = job(3, 1, "NonIndexed", false, "a");
        assert_eq!(
            fields(&job(4, 1, "NonIndexed", false, "a"), &old),
            ["spec.completions"]
        );
        assert!(fields(&job(3, 2, "NonIndexed", false, "a"), &old).is_empty());
        assert_eq!(
            fields(&job(3, 1, "NonIndexed", false, "b"), &old),
            ["spec.template"]
        );
        assert_eq!(
            fields(&job(3, 1, "Indexed", false, "a"), &old),
            ["spec.completionMode"]
        );
        // Elastic Indexed Jobs: completions move with parallelism.
        let indexed = job(3, 3, "Indexed", false, "a");
        assert!(fields(&job(5, 5, "Indexed", false, "a"), &indexed).is_empty());
        let causes = validate_update(&jobs, &job(5, 3, "Indexed", false, "a"), &indexed);
        assert_eq!(
            causes[0].message,
            "Invalid value: 5: can only be modified in tandem with spec.parallelism"
        );
        // A suspended Job that never started may be placed elsewhere, nothing more.
        let queued = job(3, 1, "NonIndexed", true, "a");
        assert!(fields(&job(3, 1, "NonIndexed", true, "b"), &queued).is_empty());
        let mut image = job(3, 1, "NonIndexed", true, "a");
        image["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx");
        assert_eq!(fields(&image, &queued), ["spec.template"]);
        let mut started = queued.clone();
        started["status"] = json!({"startTime": "2026-01-01T00:00:00Z"});
        assert_eq!(
            fields(&job(3, 1, "NonIndexed", true, "b"), &started),
            ["spec.template"]
        );
    }

    #[test]
    fn fields_that_may_not_change() {
        let catalogue = crate::resources::Catalogue::new();
        let resource = |group, plural| catalogue.get(group, "v1", plural).expect("served");
        let slice = resource("discovery.k8s.io", "endpointslices");
        let old = json!({"addressType": "IPv4", "endpoints": []});
        let moved = json!({"addressType": "IPv6", "endpoints": []});
        let causes = validate_update(&slice, &moved, &old);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "addressType");
        assert!(validate_update(
            &slice,
            &json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]}),
            &old
        )
        .is_empty());

        let deployments = resource("apps", "deployments");
        let old = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "replicas": 1}});
        let scaled = json!({"spec": {"selector": {"matchLabels": {"app": "a"}}, "replicas": 3}});
        assert!(validate_update(&deployments, &scaled, &old).is_empty());
        let reselected = json!({"spec": {"selector": {"matchLabels": {"app": "b"}}}});
        let refused = &validate_update(&deployments, &reselected, &old)[0];
        assert_eq!(refused.field, "spec.selector");
        assert_eq!(
            refused.message,
            "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"b\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"
        );
        // A StatefulSet's spec changes only in the fields upstream lets change.
        let sets = catalogue.get("apps", "v1", "statefulsets").expect("served");
        let set = |replicas: i64, service: &str| {
            json!({"spec": {"replicas": replicas, "serviceName": service,
                "selector": {"matchLabels": {"app": "a"}}}})
        };
        assert!(validate_update(&sets, &set(3, "db"), &set(1, "db")).is_empty());
        let renamed = validate_update(&sets, &set(1, "other"), &set(1, "db"));
        assert_eq!(
            format!("{}: {}", renamed[0].field, renamed[0].message),
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        );

        let config_maps = resource("", "configmaps");
        let frozen = json!({"immutable": true, "data": {"k": "v"}});
        assert_eq!(
            validate_update(
                &config_maps,
                &json!({"immutable": true, "data": {"k": "w"}}),
                &frozen
            )
            .len(),
            1
        );
        let thawed = validate_update(&config_maps, &json!({"data": {"k": "v"}}), &frozen);
        assert_eq!(thawed[0].field, "immutable");
        assert_eq!(
            thawed[0].message,
            "Forbidden: field is immutable when `immutable` is set"
        );
        let open = json!({"data": {"k": "v"}});
        assert!(validate_update(&config_maps, &json!({"data": {"k": "w"}}), &open).is_empty());
        let classes = resource("storage.k8s.io", "storageclasses");
        let refused = validate_update(
            &classes,
            &json!({"provisioner": "b", "reclaimPolicy": "Delete"}),
            &json!({"provisioner": "a", "reclaimPolicy": "Delete"}),
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(
            refused[0].message,
            "Forbidden: updates to provisioner are forbidden."
        );
        let runtime = resource("node.k8s.io", "runtimeclasses");
        assert_eq!(
            validate_update(&runtime, &json!({"handler": "b"}), &json!({"handler": "a"}))[0]
                .message,
            "Invalid value: \"b\": field is immutable"
        );
        let priorities = resource("scheduling.k8s.io", "priorityclasses");
        assert_eq!(
            validate_update(&priorities, &json!({"value": 2}), &json!({"value": 1}))[0].message,
            "Forbidden: may not be changed in an update."
        );
        let secrets = resource("", "secrets");
        let opaque = json!({"type": "Opaque"});
        assert_eq!(
            validate_update(&secrets, &json!({"type": "kubernetes.io/tls"}), &opaque)[0].field,
            "type"
        );
    }

    #[test]
    fn status_updates_let_labels_and_annotations_through() {
        let old = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}});
        let sent = json!({"metadata": {"labels": {"a": "2"}, "annotations": {"n": "v"}},
            "spec": {"x": 2}, "status": {"ok": true}});
        let mut job = sent.clone();
        prepare_for_status_update("Job", &mut job, &old);
        assert_eq!(
            job,
            json!({"metadata": {"labels": {"a": "2"}, "annotations": {"n": "v"}},
                "spec": {"x": 1}, "status": {"ok": true}})
        );
        let mut deployment = sent;
        prepare_for_status_update("Deployment", &mut deployment, &old);
        assert_eq!(deployment["metadata"]["labels"]["a"], "1");
        assert_eq!(deployment["metadata"]["annotations"]["n"], "v");
    }

    #[test]
    fn names() {
        assert!(is_dns1123_label("web-1"));
        assert!(!is_dns1123_label("Web"));
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("a..b"));
    }
}
