//! What a CustomResourceDefinition says: the catalogue entries it makes, its
//! version order, and the validation of the CRD object itself (upstream's
//! `ValidateCustomResourceDefinition`, with its messages for the common mistakes).

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::Value;

use crate::resources::{group_version, resource, CustomGroup, ResourceInfo};
use crate::status::{quote, Cause};
use crate::strategy::{is_dns1123_subdomain, DNS1123_SUBDOMAIN_MSG};

/// One served version of a custom resource, as the registry, tables and the scale
/// subresource need it.
#[derive(Debug)]
pub struct CustomVersion {
    /// The CRD's name (`<plural>.<group>`).
    pub definition: String,
    pub list_kind: String,
    /// The version's `openAPIV3Schema` (structural), if any.
    pub schema: Option<Value>,
    pub scale: Option<ScalePaths>,
    pub columns: Vec<PrinterColumn>,
    /// `selectableFields`, as field selectors name them (`spec.color`).
    pub selectable_fields: Vec<String>,
    /// The CRD is being deleted: creates are refused.
    pub terminating: bool,
    /// The warning every request to a deprecated version gets.
    pub deprecation: Option<String>,
    /// `spec.conversion.webhook` when the strategy is `Webhook`: objects read or written
    /// in another version than they are stored in go through it.
    pub conversion_webhook: Option<Value>,
    /// The storage version's schema: writes are converted to the storage version first,
    /// then pruned, defaulted and validated with it (as upstream prunes what it stores).
    pub storage_schema: Option<Value>,
}

/// The `scale` subresource's paths (`.spec.replicas` and the like).
#[derive(Debug, Clone)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One of `additionalPrinterColumns`.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// The `Age` column every custom resource table has unless its columns name one.
pub const AGE_COLUMN: &str = "Age";

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Upstream's kube-aware version order: GA before beta before alpha, higher numbers
/// first; versions that do not look like Kubernetes versions last, alphabetically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u64, u8, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let major: u64 = rest.get(..digits)?.parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((major, 2, 0));
        }
        let (stage, minor) = if let Some(m) = tail.strip_prefix("beta") {
            (1, m)
        } else if let Some(m) = tail.strip_prefix("alpha") {
            (0, m)
        } else {
            return None;
        };
        Some((major, stage, minor.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((ma, sa, na)), Some((mb, sb, nb))) => sb.cmp(&sa).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// The version objects are stored in.
pub fn storage_version(crd: &Value) -> Option<String> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v.get("name")?.as_str())
        .map(str::to_string)
}

/// Whether a condition of the CRD's status is `True`.
pub fn condition_true(crd: &Value, kind: &str) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// The catalogue entries an established CRD serves: one per served version, named by
/// its accepted names.
pub fn served(crd: &Value) -> Option<CustomGroup> {
    let group = text(crd, "/spec/group").to_string();
    let names = crd.pointer("/status/acceptedNames")?;
    let plural = names
        .get("plural")?
        .as_str()
        .filter(|p| !p.is_empty())?
        .to_string();
    let kind = names
        .get("kind")?
        .as_str()
        .filter(|k| !k.is_empty())?
        .to_string();
    let storage = group_version(&group, &storage_version(crd)?);
    let namespaced = text(crd, "/spec/scope") != "Cluster";
    let terminating = crate::object::meta_str(crd, "deletionTimestamp").is_some();
    let storage_name = storage_version(crd)?;
    let storage_schema = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|versions| {
            versions
                .iter()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(storage_name.as_str()))
        })
        .and_then(|v| v.pointer("/schema/openAPIV3Schema"))
        .cloned();
    let conversion_webhook = crd
        .pointer("/spec/conversion")
        .filter(|c| c.get("strategy").and_then(Value::as_str) == Some("Webhook"))
        .and_then(|c| c.get("webhook"))
        .cloned();
    let mut versions = Vec::new();
    let mut resources = Vec::new();
    for version in crd.pointer("/spec/versions")?.as_array()? {
        if version.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let name = version.get("name")?.as_str()?;
        versions.push(name.to_string());
        let mut info: ResourceInfo = resource(
            &group,
            name,
            &kind,
            &plural,
            names.get("singular").and_then(Value::as_str).unwrap_or(""),
            namespaced,
        );
        info.short_names = strings(names.get("shortNames"));
        info.categories = strings(names.get("categories"));
        let subresources = version.get("subresources");
        let status = subresources.and_then(|s| s.get("status")).is_some();
        let scale = subresources
            .and_then(|s| s.get("scale"))
            .map(|s| ScalePaths {
                spec_replicas: text(s, "/specReplicasPath").to_string(),
                status_replicas: text(s, "/statusReplicasPath").to_string(),
                label_selector: s
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        if status {
            info.subresources.push("status".into());
        }
        if scale.is_some() {
            info.subresources.push("scale".into());
        }
        // Upstream's objects are stored under `/registry/<group>/<plural>/`.
        info.storage = format!("{group}/{plural}");
        info.storage_version = storage.clone();
        info.tracks_generation = true;
        info.custom = Some(Arc::new(CustomVersion {
            definition: crate::object::name(crd).to_string(),
            list_kind: names
                .get("listKind")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("{kind}List")),
            schema: version.pointer("/schema/openAPIV3Schema").cloned(),
            scale,
            columns: printer_columns(version),
            selectable_fields: version
                .get("selectableFields")
                .and_then(Value::as_array)
                .map(|fields| {
                    fields
                        .iter()
                        .map(|f| text(f, "/jsonPath").trim_start_matches('.').to_string())
                        .collect()
                })
                .unwrap_or_default(),
            terminating,
            deprecation: deprecation(crd, version, &group, name, &kind),
            conversion_webhook: conversion_webhook.clone(),
            storage_schema: storage_schema.clone(),
        }));
        resources.push(info);
    }
    versions.sort_by(|a, b| compare_versions(a, b));
    Some(CustomGroup {
        group,
        versions,
        resources,
    })
}

/// A deprecated version's warning: its own, or upstream's default, which names the
/// most preferred served version that is newer and not deprecated.
fn deprecation(
    crd: &Value,
    version: &Value,
    group: &str,
    name: &str,
    kind: &str,
) -> Option<String> {
    if version.get("deprecated").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    if let Some(own) = version.get("deprecationWarning").and_then(Value::as_str) {
        return Some(own.to_string());
    }
    let mut warning = format!("{group}/{name} {kind} is deprecated");
    let newer = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| {
            v.get("served").and_then(Value::as_bool) == Some(true)
                && v.get("deprecated").and_then(Value::as_bool) != Some(true)
        })
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .filter(|v| compare_versions(v, name) == Ordering::Less)
        .min_by(|a, b| compare_versions(a, b));
    if let Some(newer) = newer {
        warning.push_str(&format!("; use {group}/{newer} {kind}"));
    }
    Some(warning)
}

fn printer_columns(version: &Value) -> Vec<PrinterColumn> {
    let Some(columns) = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    columns
        .iter()
        .map(|c| PrinterColumn {
            name: text(c, "/name").to_string(),
            kind: text(c, "/type").to_string(),
            format: text(c, "/format").to_string(),
            description: text(c, "/description").to_string(),
            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
            json_path: text(c, "/jsonPath").to_string(),
        })
        .collect()
}

/// Upstream's defaults for a CRD (`SetDefaults_CustomResourceDefinitionSpec`): the
/// singular name and list kind from the kind, conversion strategy `None`.
pub fn apply_defaults(crd: &mut Value) {
    let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !kind.is_empty() {
            if names
                .get("singular")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                names.insert("singular".into(), Value::String(kind.to_lowercase()));
            }
            if names
                .get("listKind")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                names.insert("listKind".into(), Value::String(format!("{kind}List")));
            }
        }
    }
    if !spec.contains_key("conversion") {
        spec.insert("conversion".into(), serde_json::json!({"strategy": "None"}));
    }
}

/// Upstream's `CustomResourceDefinition` strategy on create: status starts empty but
/// for the stored versions, which name the storage version.
pub fn prepare_for_create(crd: &mut Value) {
    let stored: Vec<String> = storage_version(crd).into_iter().collect();
    if let Some(fields) = crd.as_object_mut() {
        fields.insert(
            "status".into(),
            serde_json::json!({
                "conditions": [],
                "acceptedNames": {"plural": "", "kind": ""},
                "storedVersions": stored,
            }),
        );
    }
}

/// On update: a new storage version joins the stored versions.
pub fn prepare_for_update(crd: &mut Value) {
    let Some(storage) = storage_version(crd) else {
        return;
    };
    let Some(status) = crd.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    let stored = status
        .entry("storedVersions")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = stored.as_array_mut() {
        if !list.iter().any(|v| v.as_str() == Some(&storage)) {
            list.push(Value::String(storage));
        }
    }
}

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_dns1035_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn dns1035_errors(s: &str) -> Option<String> {
    if is_dns1035_label(s) {
        return None;
    }
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    Some(DNS1035_MSG.into())
}

/// `spec.conversion`: a strategy upstream knows, and a webhook exactly when it is
/// `Webhook`, speaking a ConversionReview version this server sends (`v1`).
fn validate_conversion(crd: &Value, causes: &mut Vec<Cause>) {
    let Some(conversion) = crd.pointer("/spec/conversion") else {
        return;
    };
    let webhook = conversion.get("webhook").filter(|w| !w.is_null());
    match text(conversion, "/strategy") {
        "Webhook" => {
            let Some(webhook) = webhook else {
                causes.push(Cause {
                    reason: "FieldValueRequired",
                    message: "Required value: required when strategy is set to Webhook".into(),
                    field: "spec.conversion.webhook".into(),
                });
                return;
            };
            let versions = strings(webhook.get("conversionReviewVersions"));
            if !versions.iter().any(|v| v == "v1") {
                causes.push(Cause::invalid(
                    "spec.conversion.webhook.conversionReviewVersions",
                    format!("{versions:?}"),
                    "must include at least one of v1",
                ));
            }
            let client = webhook.get("clientConfig");
            let url = client.and_then(|c| c.get("url")).filter(|u| !u.is_null());
            let service = client
                .and_then(|c| c.get("service"))
                .filter(|s| !s.is_null());
            if url.is_some() == service.is_some() {
                causes.push(Cause {
                    reason: "FieldValueRequired",
                    message: "Required value: exactly one of url or service is required".into(),
                    field: "spec.conversion.webhook.clientConfig".into(),
                });
            }
        }
        "None" => {
            if webhook.is_some() {
                causes.push(Cause::forbidden(
                    "spec.conversion.webhook",
                    "should not be set when strategy is not set to Webhook",
                ));
            }
        }
        "" => causes.push(Cause::required("spec.conversion.strategy")),
        other => causes.push(Cause::unsupported(
            "spec.conversion.strategy",
            other,
            &["None", "Webhook"],
        )),
    }
}

/// Validation of a CRD: the causes, in upstream's order and words.
pub fn validate(crd: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let group = text(crd, "/spec/group");
    let plural = text(crd, "/spec/names/plural");
    let name = crate::object::name(crd);
    if name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    } else if !is_dns1123_subdomain(group) {
        causes.push(Cause::invalid("spec.group", group, DNS1123_SUBDOMAIN_MSG));
    } else if group.split('.').count() < 2 {
        causes.push(Cause::invalid(
            "spec.group",
            group,
            "should be a domain with at least one dot",
        ));
    }
    if is_protected(group) {
        check_approval(crd, &mut causes);
    }
    validate_conversion(crd, &mut causes);
    match text(crd, "/spec/scope") {
        "Cluster" | "Namespaced" => {}
        "" => causes.push(Cause::required("spec.scope")),
        other => causes.push(Cause::unsupported(
            "spec.scope",
            other,
            &["Cluster", "Namespaced"],
        )),
    }
    if crd.pointer("/spec/preserveUnknownFields") == Some(&Value::Bool(true)) {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: "Invalid value: true: cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead".into(),
            field: "spec.preserveUnknownFields".into(),
        });
    }
    validate_names(crd.pointer("/spec/names"), "spec.names", &mut causes);
    validate_versions(crd, &mut causes);
    validate_stored_versions(crd, &mut causes);
    causes
}

/// `status.storedVersions` names the storage version and only versions still listed:
/// objects may be stored in any of them.
fn validate_stored_versions(crd: &Value, causes: &mut Vec<Cause>) {
    let stored = strings(crd.pointer("/status/storedVersions"));
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if stored.is_empty() {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: "Invalid value: []string{}: must have at least one stored version".into(),
            field: "status.storedVersions".into(),
        });
    }
    for version in &versions {
        let name = text(version, "/name");
        if version.get("storage").and_then(Value::as_bool) == Some(true)
            && !stored.iter().any(|s| s == name)
        {
            causes.push(Cause::invalid(
                "status.storedVersions",
                name,
                &format!("must have the storage version {name}"),
            ));
        }
    }
    for (i, version) in stored.iter().enumerate() {
        if !versions.iter().any(|v| text(v, "/name") == version) {
            causes.push(Cause::invalid(
                format!("status.storedVersions[{i}]"),
                version,
                "must appear in spec.versions",
            ));
        }
    }
}

/// What an update of a CRD may not change.
pub fn validate_update(crd: &Value, old: &Value) -> Vec<Cause> {
    // Objects are stored under the group and laid out by scope: neither may change.
    [("/spec/group", "spec.group"), ("/spec/scope", "spec.scope")]
        .into_iter()
        .filter(|(pointer, _)| crd.pointer(pointer) != old.pointer(pointer))
        .map(|(pointer, field)| Cause::invalid(field, text(crd, pointer), "field is immutable"))
        .collect()
}

/// Groups of the Kubernetes project itself (`*.k8s.io`, `*.kubernetes.io`).
fn is_protected(group: &str) -> bool {
    ["k8s.io", "kubernetes.io"]
        .iter()
        .any(|domain| group == *domain || group.ends_with(&format!(".{domain}")))
}

const APPROVAL: &str = "api-approved.kubernetes.io";

/// A CRD in a protected group names the API review that approved it (a URL), or says
/// why it has none (`unapproved, …`), as upstream requires.
fn check_approval(crd: &Value, causes: &mut Vec<Cause>) {
    let field = format!("metadata.annotations[{APPROVAL}]");
    let see = "see https://github.com/kubernetes/enhancements/pull/1111";
    let value = crd
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(APPROVAL))
        .and_then(Value::as_str);
    match value {
        None => causes.push(Cause {
            reason: "FieldValueRequired",
            message: format!(
                "Required value: protected groups must have approval annotation {}, {see}",
                quote(APPROVAL)
            ),
            field,
        }),
        Some(v) if v.starts_with("unapproved") || v.starts_with("https://") || v.starts_with("http://") => {}
        Some(v) => causes.push(Cause::invalid(
            field,
            v,
            &format!(
                "protected groups must have approval annotation {} with either a URL or a reason starting with \"unapproved\", {see}",
                quote(APPROVAL)
            ),
        )),
    }
}

fn validate_names(names: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let empty = Value::Null;
    let names = names.unwrap_or(&empty);
    let plural = text(names, "/plural");
    let singular = text(names, "/singular");
    let kind = text(names, "/kind");
    let list_kind = text(names, "/listKind");
    if let Some(e) = (!plural.is_empty())
        .then(|| dns1035_errors(plural))
        .flatten()
    {
        causes.push(Cause::invalid(format!("{path}.plural"), plural, &e));
    }
    if let Some(e) = (!singular.is_empty())
        .then(|| dns1035_errors(singular))
        .flatten()
    {
        causes.push(Cause::invalid(format!("{path}.singular"), singular, &e));
    }
    let kind_error = |value: &str| {
        dns1035_errors(&value.to_lowercase())
            .map(|e| format!("may have mixed case, but should otherwise match: {e}"))
    };
    if let Some(e) = (!kind.is_empty()).then(|| kind_error(kind)).flatten() {
        causes.push(Cause::invalid(format!("{path}.kind"), kind, &e));
    }
    if let Some(e) = (!list_kind.is_empty())
        .then(|| kind_error(list_kind))
        .flatten()
    {
        causes.push(Cause::invalid(format!("{path}.listKind"), list_kind, &e));
    }
    for (i, short) in strings(names.get("shortNames")).iter().enumerate() {
        if let Some(e) = dns1035_errors(short) {
            causes.push(Cause::invalid(format!("{path}.shortNames[{i}]"), short, &e));
        }
    }
    if !kind.is_empty() && kind == list_kind {
        causes.push(Cause::invalid(
            format!("{path}.listKind"),
            list_kind,
            "kind and listKind may not be the same or empty",
        ));
    }
    for (i, category) in strings(names.get("categories")).iter().enumerate() {
        if let Some(e) = dns1035_errors(category) {
            causes.push(Cause::invalid(
                format!("{path}.categories[{i}]"),
                category,
                &e,
            ));
        }
    }
    if plural.is_empty() {
        causes.push(Cause::required(format!("{path}.plural")));
    }
    if singular.is_empty() {
        causes.push(Cause::required(format!("{path}.singular")));
    }
    if kind.is_empty() {
        causes.push(Cause::required(format!("{path}.kind")));
    }
    if list_kind.is_empty() {
        causes.push(Cause::required(format!("{path}.listKind")));
    }
}

fn validate_versions(crd: &Value, causes: &mut Vec<Cause>) {
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message:
                "Invalid value: \"null\": must have exactly one version marked as storage version"
                    .into(),
            field: "spec.versions".into(),
        });
        return;
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: "Invalid value: []apiextensions.CustomResourceDefinitionVersion{...}: must have exactly one version marked as storage version".into(),
            field: "spec.versions".into(),
        });
    }
    if !versions
        .iter()
        .any(|v| v.get("served").and_then(Value::as_bool) == Some(true))
    {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: "Invalid value: []apiextensions.CustomResourceDefinitionVersion{...}: must have at least one version marked as served".into(),
            field: "spec.versions".into(),
        });
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, version) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let name = text(version, "/name");
        if name.is_empty() {
            causes.push(Cause::required(format!("{path}.name")));
        } else if let Some(e) = dns1035_errors(name) {
            causes.push(Cause::invalid(format!("{path}.name"), name, &e));
        } else if seen.contains(&name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: {}", quote(name)),
                field: format!("{path}.name"),
            });
        }
        seen.push(name);
        match version.pointer("/schema/openAPIV3Schema") {
            None => causes.push(Cause {
                reason: "FieldValueRequired",
                message: "Required value: schemas are required".into(),
                field: format!("{path}.schema.openAPIV3Schema"),
            }),
            Some(schema) => {
                let schema_path = format!("{path}.schema.openAPIV3Schema");
                super::schema::validate_structural(schema, &schema_path, causes);
                super::schema::validate_defaults(schema, &schema_path, causes);
                super::cel::check_rules(schema, &schema_path, causes);
            }
        }
        if let Some(scale) = version.pointer("/subresources/scale") {
            validate_scale(scale, &format!("{path}.subresources.scale"), causes);
        }
        if let Some(columns) = version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
        {
            for (j, column) in columns.iter().enumerate() {
                let path = format!("{path}.additionalPrinterColumns[{j}]");
                if text(column, "/name").is_empty() {
                    causes.push(Cause::required(format!("{path}.name")));
                }
                match text(column, "/type") {
                    "integer" | "number" | "string" | "boolean" | "date" => {}
                    other => causes.push(Cause::unsupported(
                        format!("{path}.type"),
                        other,
                        &["integer", "number", "string", "boolean", "date"],
                    )),
                }
                if text(column, "/jsonPath").is_empty() {
                    causes.push(Cause::required(format!("{path}.JSONPath")));
                }
            }
        }
    }
}

fn validate_scale(scale: &Value, path: &str, causes: &mut Vec<Cause>) {
    let spec = text(scale, "/specReplicasPath");
    if spec.is_empty() {
        causes.push(Cause::required(format!("{path}.specReplicasPath")));
    } else if !spec.starts_with(".spec.") {
        causes.push(Cause::invalid(
            format!("{path}.specReplicasPath"),
            spec,
            "should be a json path under .spec",
        ));
    }
    let status = text(scale, "/statusReplicasPath");
    if status.is_empty() {
        causes.push(Cause::required(format!("{path}.statusReplicasPath")));
    } else if !status.starts_with(".status.") {
        causes.push(Cause::invalid(
            format!("{path}.statusReplicasPath"),
            status,
            "should be a json path under .status",
        ));
    }
    if let Some(selector) = scale.get("labelSelectorPath").and_then(Value::as_str) {
        if !selector.starts_with(".spec.") && !selector.starts_with(".status.") {
            causes.push(Cause::invalid(
                format!("{path}.labelSelectorPath"),
                selector,
                "should be a json path under either .spec or .status",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}}],
            },
        })
    }

    #[test]
    fn versions_order_as_upstream() {
        let mut v = vec!["v1alpha1", "foo", "v2", "v1beta2", "v1", "v1beta1", "v10"];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            ["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn a_valid_crd_passes() {
        let mut crd = crd();
        prepare_for_create(&mut crd);
        assert_eq!(validate(&crd), vec![]);
    }

    #[test]
    fn stored_versions_hold_the_storage_version_and_listed_ones_only() {
        let mut crd = crd();
        crd["status"] = json!({"storedVersions": ["v0"]});
        let messages: Vec<String> = validate(&crd)
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            messages,
            [
                "status.storedVersions: Invalid value: \"v1\": must have the storage version v1",
                "status.storedVersions[0]: Invalid value: \"v0\": must appear in spec.versions",
            ]
        );
    }

    #[test]
    fn common_mistakes_are_named() {
        let mut bad = crd();
        bad["metadata"]["name"] = json!("widget.example.com");
        bad["spec"]["versions"][0]["storage"] = json!(false);
        bad["spec"]["names"]["kind"] = json!("");
        let messages: Vec<String> = validate(&bad)
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert!(messages.contains(&"metadata.name: Invalid value: \"widget.example.com\": must be spec.names.plural+\".\"+spec.group".to_string()), "{messages:?}");
        assert!(messages
            .iter()
            .any(|m| m.starts_with("spec.versions: Invalid value")
                && m.ends_with("must have exactly one version marked as storage version")));
        assert!(messages.contains(&"spec.names.kind: Required value".to_string()));
    }

    #[test]
    fn deprecated_versions_warn_as_upstream() {
        let mut crd = crd();
        crd["spec"]["versions"] = json!([
            {"name": "v1alpha1", "served": true, "storage": false, "deprecated": true},
            {"name": "v1beta1", "served": true, "storage": false, "deprecated": true, "deprecationWarning": "use v1"},
            {"name": "v1", "served": true, "storage": true},
        ]);
        crd["status"] = json!({"acceptedNames": {"plural": "widgets", "kind": "Widget"}});
        let served = served(&crd).unwrap();
        let warnings: Vec<Option<String>> = served
            .resources
            .iter()
            .map(|r| r.custom.as_ref().unwrap().deprecation.clone())
            .collect();
        assert_eq!(
            warnings,
            [
                Some("example.com/v1alpha1 Widget is deprecated; use example.com/v1 Widget".into()),
                Some("use v1".into()),
                None,
            ]
        );
    }

    #[test]
    fn protected_groups_need_an_approval() {
        let mut crd = crd();
        prepare_for_create(&mut crd);
        crd["metadata"]["name"] = json!("widgets.x.k8s.io");
        crd["spec"]["group"] = json!("x.k8s.io");
        let causes = validate(&crd);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            causes[0].field,
            "metadata.annotations[api-approved.kubernetes.io]"
        );
        assert!(causes[0]
            .message
            .starts_with("Required value: protected groups must have approval annotation"));
        crd["metadata"]["annotations"] =
            json!({"api-approved.kubernetes.io": "unapproved, testing"});
        assert_eq!(validate(&crd), vec![]);
        crd["metadata"]["annotations"] = json!({"api-approved.kubernetes.io": "yes"});
        assert_eq!(validate(&crd).len(), 1);
    }

    #[test]
    fn served_entries_follow_accepted_names() {
        let mut crd = crd();
        crd["status"] = json!({"acceptedNames": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList", "shortNames": ["wd"]}});
        let served = served(&crd).unwrap();
        assert_eq!(served.versions, ["v1"]);
        let r = &served.resources[0];
        assert_eq!(r.key(Some("ns"), "a"), "/registry/example.com/widgets/ns/a");
        assert_eq!(r.short_names, ["wd"]);
        assert_eq!(r.list_kind(), "WidgetList");
    }
}
