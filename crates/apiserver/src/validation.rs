//! What upstream's validation checks inside built-in objects: pod specs (of pods and of
//! every template), the workload controllers' specs, Jobs' and Services', with upstream's
//! field paths, cause types and messages (its `core`, `apps` and `batch` validation).
//! `strategy::validate` calls in by kind, after defaulting, as upstream validates the
//! defaulted object; what an update may not change is `strategy::validate_update`'s.
//!
//! Every check reports through the few `Cause` constructors (`required`, `invalid`,
//! `unsupported`, `duplicate`, `forbidden`); values that upstream prints in Go syntax
//! (maps, structs) are rendered by `go`.

use std::collections::HashSet;

mod autoscaling;
mod core;
mod cron;
mod networking;
mod pod;
mod rbac;
mod storage;
#[cfg(test)]
mod tests;

pub(crate) use core::special_ip;
pub use rbac::role_ref_update;

use serde_json::Value;

use crate::object::string_map;
use crate::selectors::LabelSelector;
use crate::status::{BadValue, Cause};
use crate::strategy::{is_dns1123_label, is_dns1123_subdomain};
use crate::strategy::{DNS1123_LABEL_MSG, DNS1123_SUBDOMAIN_MSG};

const NEGATIVE: &str = "must be greater than or equal to 0";
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const SELECTOR_MISMATCH: &str = "`selector` does not match template `labels`";
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
pub(crate) const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SESSION_AFFINITIES: &[&str] = &["ClientIP", "None"];
const ENV_NAME_MSG: &str =
    "a valid environment variable name must consist only of printable ASCII characters other than '='";
const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

/// Upstream's checks of what an object of `kind` holds.
pub fn validate(kind: &str, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = object.get("spec");
    match kind {
        "Pod" => pod_spec(spec, "spec", &mut causes),
        "PodTemplate" => pod_spec(
            object.pointer("/template/spec"),
            "template.spec",
            &mut causes,
        ),
        "Deployment" => deployment(spec, &mut causes),
        "ReplicaSet" => {
            nonnegative(spec, "replicas", "spec", &mut causes);
            nonnegative(spec, "minReadySeconds", "spec", &mut causes);
            let selector = structured_selector(spec, "deployment", &mut causes);
            replicated_template(spec, selector, "ReplicaSet", &mut causes);
        }
        "StatefulSet" => stateful_set(spec, &mut causes),
        "DaemonSet" => daemon_set(spec, &mut causes),
        "ReplicationController" => replication_controller(spec, &mut causes),
        "Job" => job(spec, &mut causes),
        "Service" => service(spec, &mut causes),
        "CronJob" => cron::cron_job(spec, &mut causes),
        "Role" => rbac::role(object, true, &mut causes),
        "ClusterRole" => rbac::role(object, false, &mut causes),
        "RoleBinding" => rbac::binding(object, true, &mut causes),
        "ClusterRoleBinding" => rbac::binding(object, false, &mut causes),
        "Ingress" => networking::ingress(spec, &mut causes),
        "IngressClass" => networking::ingress_class(spec, &mut causes),
        "NetworkPolicy" => networking::network_policy(spec, &mut causes),
        "PodDisruptionBudget" => autoscaling::pod_disruption_budget(spec, &mut causes),
        "HorizontalPodAutoscaler" => autoscaling::horizontal_pod_autoscaler(spec, &mut causes),
        "PersistentVolumeClaim" => storage::claim_spec(spec, "spec", &mut causes),
        "PersistentVolume" => storage::persistent_volume(spec, &mut causes),
        "StorageClass" => storage::storage_class(object, &mut causes),
        "ResourceQuota" => core::resource_quota(spec, &mut causes),
        "LimitRange" => core::limit_range(spec, &mut causes),
        "Secret" => core::secret(object, &mut causes),
        "Endpoints" => core::endpoints(object, &mut causes),
        "EndpointSlice" => core::endpoint_slice(object, &mut causes),
        "Lease" => core::lease(spec, &mut causes),
        "PriorityClass" => core::priority_class(object, &mut causes),
        _ => {}
    }
    causes
}

fn text<'a>(value: Option<&'a Value>, key: &str) -> &'a str {
    value
        .and_then(|v| v.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn number(value: Option<&Value>, key: &str) -> Option<i64> {
    value.and_then(|v| v.get(key)).and_then(Value::as_i64)
}

fn list<'a>(value: Option<&'a Value>, key: &str) -> &'a [Value] {
    value
        .and_then(|v| v.get(key))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn given(value: Option<&Value>, key: &str) -> bool {
    value.and_then(|v| v.get(key)).is_some_and(|v| !v.is_null())
}

/// Upstream's `ValidateNonnegativeField` of `parent.key`, where set.
fn nonnegative(parent: Option<&Value>, key: &str, path: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = number(parent, key).filter(|n| *n < 0) {
        causes.push(Cause::invalid(format!("{path}.{key}"), n, NEGATIVE));
    }
}

/// An enumerated field: empty is `Required`, anything unknown `NotSupported`.
fn one_of(value: &str, supported: &[&str], field: String, causes: &mut Vec<Cause>) {
    if value.is_empty() {
        causes.push(Cause::required(field));
    } else if !supported.contains(&value) {
        causes.push(Cause::unsupported(field, value, supported));
    }
}

/// Upstream's `IsValidPortNum`.
fn port_number(port: i64, field: String, causes: &mut Vec<Cause>) {
    if !(1..=65535).contains(&port) {
        causes.push(Cause::invalid(field, port, PORT_RANGE));
    }
}

/// Upstream's `IsValidPortName` (an IANA service name): one cause per rule broken.
fn port_name(name: &str, field: &str, causes: &mut Vec<Cause>) {
    let mut broken = Vec::new();
    if name.len() > 15 {
        broken.push("must be no more than 15 characters");
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        broken.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        broken.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        broken.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        broken.push("must not begin or end with a hyphen");
    }
    causes.extend(broken.into_iter().map(|m| Cause::invalid(field, name, m)));
}

/// A reference's `kind` and `name` at `at`, as upstream's
/// `ValidateCrossVersionObjectReference` and typed local references check them: each
/// required, each a path segment.
fn kind_and_name(reference: Option<&Value>, at: &str, causes: &mut Vec<Cause>) {
    for key in ["kind", "name"] {
        let value = text(reference, key);
        let field = format!("{at}.{key}");
        if value.is_empty() {
            causes.push(Cause::required(field));
        } else {
            for message in path_segment(value) {
                causes.push(Cause::invalid(&field, value, message));
            }
        }
    }
}

/// Upstream's `IsValidPathSegmentName` (names that become a URL's path segment).
fn path_segment(name: &str) -> Vec<&'static str> {
    match name {
        "." => return vec!["may not be '.'"],
        ".." => return vec!["may not be '..'"],
        _ => {}
    }
    let mut broken = Vec::new();
    if name.contains('/') {
        broken.push("may not contain '/'");
    }
    if name.contains('%') {
        broken.push("may not contain '%'");
    }
    broken
}

const QUALIFIED_NAME_FORMAT: &str = "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'";

/// Upstream's `ValidateQualifiedName`: an optional DNS-subdomain prefix and `/`, then a
/// name of at most 63 alphanumerics, '-', '_' or '.'.
fn qualified_name(value: &str, field: &str, causes: &mut Vec<Cause>) {
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                causes.push(Cause::invalid(
                    field,
                    value,
                    "prefix part must be non-empty",
                ));
            } else if !is_dns1123_subdomain(prefix) {
                causes.push(Cause::invalid(
                    field,
                    value,
                    &format!("prefix part {DNS1123_SUBDOMAIN_MSG}"),
                ));
            }
            *name
        }
        _ => {
            causes.push(Cause::invalid(
                field,
                value,
                &format!("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is {QUALIFIED_NAME_FORMAT}) with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
            ));
            return;
        }
    };
    if name.is_empty() {
        causes.push(Cause::invalid(field, value, "name part must be non-empty"));
    } else if name.len() > 63 {
        causes.push(Cause::invalid(
            field,
            value,
            "name part must be no more than 63 characters",
        ));
    }
    let edges_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    let well_formed = edges_ok(name.bytes().next())
        && edges_ok(name.bytes().last())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name.is_empty() && !well_formed {
        causes.push(Cause::invalid(
            field,
            value,
            &format!("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is {QUALIFIED_NAME_FORMAT})"),
        ));
    }
}

/// The structured selector of the apps kinds: required, and not empty (`for` names the
/// kind as upstream's message does). The parsed selector, when there is one to match.
fn structured_selector(
    spec: Option<&Value>,
    kind: &str,
    causes: &mut Vec<Cause>,
) -> Option<LabelSelector> {
    let Some(selector) = spec
        .and_then(|s| s.get("selector"))
        .filter(|s| !s.is_null())
    else {
        causes.push(Cause::required("spec.selector"));
        return None;
    };
    if empty_selector(selector) {
        causes.push(Cause::invalid(
            "spec.selector",
            go::label_selector(selector),
            &format!("empty selector is invalid for {kind}"),
        ));
    }
    match LabelSelector::from_object(selector) {
        Ok(parsed) => Some(parsed),
        Err(_) => {
            causes.push(Cause::invalid(
                "spec.selector",
                go::label_selector(selector),
                "invalid label selector",
            ));
            None
        }
    }
}

/// Neither labels nor expressions to match.
fn empty_selector(selector: &Value) -> bool {
    selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty())
        && list(Some(selector), "matchExpressions").is_empty()
}

/// The template's labels must satisfy the selector.
fn template_matches(spec: Option<&Value>, selector: &LabelSelector, causes: &mut Vec<Cause>) {
    let labels = spec.and_then(|s| s.pointer("/template/metadata/labels"));
    if !selector.matches(&string_map(labels)) {
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            go::string_map(labels),
            SELECTOR_MISMATCH,
        ));
    }
}

/// Upstream's `ValidatePodTemplateSpecForReplicaSet` (and its siblings): the labels
/// match a non-empty selector, the pod spec is valid, pods always restart and have no
/// deadline. `kind` names the controller in the deadline's message.
fn replicated_template(
    spec: Option<&Value>,
    selector: Option<LabelSelector>,
    kind: &str,
    causes: &mut Vec<Cause>,
) {
    if let Some(selector) = selector.filter(|s| !s.is_empty()) {
        template_matches(spec, &selector, causes);
    }
    let pod = spec.and_then(|s| s.pointer("/template/spec"));
    pod_spec(pod, "spec.template.spec", causes);
    always_restarts(pod, kind, causes);
}

/// The controllers that keep pods running: `restartPolicy: Always`, no deadline.
fn always_restarts(pod: Option<&Value>, kind: &str, causes: &mut Vec<Cause>) {
    let policy = text(pod, "restartPolicy");
    if policy != "Always" {
        causes.push(Cause::unsupported(
            "spec.template.spec.restartPolicy",
            policy,
            &["Always"],
        ));
    }
    if given(pod, "activeDeadlineSeconds") {
        causes.push(Cause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            &format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

fn deployment(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    nonnegative(spec, "replicas", "spec", causes);
    let selector = structured_selector(spec, "deployment", causes);
    replicated_template(spec, selector, "ReplicaSet", causes);
    deployment_strategy(spec.and_then(|s| s.get("strategy")), causes);
    nonnegative(spec, "minReadySeconds", "spec", causes);
    nonnegative(spec, "revisionHistoryLimit", "spec", causes);
    if let Some(deadline) = number(spec, "progressDeadlineSeconds") {
        nonnegative(spec, "progressDeadlineSeconds", "spec", causes);
        if deadline <= number(spec, "minReadySeconds").unwrap_or(0) {
            causes.push(Cause::invalid(
                "spec.progressDeadlineSeconds",
                deadline,
                "must be greater than minReadySeconds",
            ));
        }
    }
}

fn deployment_strategy(strategy: Option<&Value>, causes: &mut Vec<Cause>) {
    let kind = text(strategy, "type");
    let rolling = strategy
        .and_then(|s| s.get("rollingUpdate"))
        .filter(|r| !r.is_null());
    match (kind, rolling) {
        ("Recreate", Some(_)) => causes.push(Cause::forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        )),
        ("Recreate", None) => {}
        ("RollingUpdate", None) => causes.push(Cause::required_detail(
            "spec.strategy.rollingUpdate",
            "this should be defaulted and never be nil",
        )),
        ("RollingUpdate", Some(rolling)) => {
            let path = "spec.strategy.rollingUpdate";
            let unavailable = rolling.get("maxUnavailable");
            let surge = rolling.get("maxSurge");
            int_or_percent(unavailable, &format!("{path}.maxUnavailable"), causes);
            int_or_percent(surge, &format!("{path}.maxSurge"), causes);
            if int_or_percent_value(unavailable) == 0 && int_or_percent_value(surge) == 0 {
                causes.push(Cause::invalid(
                    format!("{path}.maxUnavailable"),
                    go::int_or_string(unavailable),
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            not_over_100_percent(unavailable, &format!("{path}.maxUnavailable"), causes);
        }
        _ => causes.push(Cause::unsupported(
            "spec.strategy",
            go::update_strategy(
                "apps.DeploymentStrategy",
                "RollingUpdateDeployment",
                strategy,
            ),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// Upstream's `ValidatePositiveIntOrPercent`: a non-negative number or `<digits>%`.
fn int_or_percent(value: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    match value {
        Some(Value::String(s)) if percent(s).is_none() => {
            causes.push(Cause::invalid(field, go::int_or_string(value), PERCENT_MSG));
        }
        Some(Value::Number(n)) => {
            if let Some(n) = n.as_i64().filter(|n| *n < 0) {
                causes.push(Cause::invalid(field, n, NEGATIVE));
            }
        }
        _ => {}
    }
}

fn percent(text: &str) -> Option<i64> {
    let digits = text.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The number an int-or-percent stands for, as upstream compares them with zero.
fn int_or_percent_value(value: Option<&Value>) -> i64 {
    match value {
        Some(Value::String(s)) => percent(s).or_else(|| s.parse().ok()).unwrap_or(0),
        Some(v) => v.as_i64().unwrap_or(0),
        None => 0,
    }
}

fn not_over_100_percent(value: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    if let Some(Value::String(s)) = value {
        if percent(s).is_some_and(|p| p > 100) {
            causes.push(Cause::invalid(
                field,
                go::int_or_string(value),
                "must not be greater than 100%",
            ));
        }
    }
}

fn stateful_set(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    match text(spec, "podManagementPolicy") {
        "" => causes.push(Cause::required("spec.podManagementPolicy")),
        "OrderedReady" | "Parallel" => {}
        other => causes.push(Cause::invalid(
            "spec.podManagementPolicy",
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = spec.and_then(|s| s.get("updateStrategy"));
    let rolling = strategy
        .and_then(|s| s.get("rollingUpdate"))
        .filter(|r| !r.is_null());
    match text(strategy, "type") {
        "" => causes.push(Cause::required("spec.updateStrategy")),
        "OnDelete" if rolling.is_some() => causes.push(Cause::invalid(
            "spec.updateStrategy.rollingUpdate",
            BadValue::Go(go::pointer("apps.RollingUpdateStatefulSetStrategy")),
            "only allowed for updateStrategy 'RollingUpdate'",
        )),
        "OnDelete" => {}
        "RollingUpdate" => nonnegative(
            rolling,
            "partition",
            "spec.updateStrategy.rollingUpdate",
            causes,
        ),
        _ => causes.push(Cause::invalid(
            "spec.updateStrategy",
            go::update_strategy(
                "apps.StatefulSetUpdateStrategy",
                "RollingUpdateStatefulSetStrategy",
                strategy,
            ),
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    nonnegative(spec, "replicas", "spec", causes);
    nonnegative(spec, "minReadySeconds", "spec", causes);
    if let Some(selector) = structured_selector(spec, "statefulset", causes) {
        if !selector.is_empty() {
            template_matches(spec, &selector, causes);
        }
    }
    // Upstream leaves a StatefulSet's pod spec unchecked (its volumes come partly from
    // the claim templates); only how its pods restart.
    always_restarts(
        spec.and_then(|s| s.pointer("/template/spec")),
        "StatefulSet",
        causes,
    );
}

fn daemon_set(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let selector = spec
        .and_then(|s| s.get("selector"))
        .filter(|s| !s.is_null());
    // No selector selects nothing, so no template matches it.
    match selector.map(LabelSelector::from_object) {
        Some(Ok(parsed)) => template_matches(spec, &parsed, causes),
        Some(Err(_)) => {}
        None => {
            let labels = spec.and_then(|s| s.pointer("/template/metadata/labels"));
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                go::string_map(labels),
                SELECTOR_MISMATCH,
            ));
        }
    }
    if let Some(selector) = selector {
        if empty_selector(selector) {
            causes.push(Cause::invalid(
                "spec.selector",
                go::label_selector(selector),
                "empty selector is invalid for daemonset",
            ));
        }
    }
    let pod = spec.and_then(|s| s.pointer("/template/spec"));
    pod_spec(pod, "spec.template.spec", causes);
    always_restarts(pod, "DaemonSet", causes);
    nonnegative(spec, "minReadySeconds", "spec", causes);
    nonnegative(spec, "templateGeneration", "spec", causes);
    let strategy = spec.and_then(|s| s.get("updateStrategy"));
    let path = "spec.updateStrategy.rollingUpdate";
    match text(strategy, "type") {
        "OnDelete" => {}
        "RollingUpdate" => match strategy.and_then(|s| s.get("rollingUpdate")) {
            None | Some(Value::Null) => causes.push(Cause::required(path)),
            Some(rolling) => {
                let unavailable = rolling.get("maxUnavailable");
                let surge = rolling.get("maxSurge");
                int_or_percent(unavailable, &format!("{path}.maxUnavailable"), causes);
                int_or_percent(surge, &format!("{path}.maxSurge"), causes);
                not_over_100_percent(unavailable, &format!("{path}.maxUnavailable"), causes);
                not_over_100_percent(surge, &format!("{path}.maxSurge"), causes);
                match (
                    int_or_percent_value(unavailable) != 0,
                    int_or_percent_value(surge) != 0,
                ) {
                    (true, true) => causes.push(Cause::invalid(
                        format!("{path}.maxSurge"),
                        go::int_or_string(surge),
                        "may not be set when maxUnavailable is non-zero",
                    )),
                    (false, false) => causes.push(Cause::required_detail(
                        format!("{path}.maxUnavailable"),
                        "cannot be 0 when maxSurge is 0",
                    )),
                    _ => {}
                }
            }
        },
        _ => causes.push(Cause::unsupported(
            "spec.updateStrategy",
            go::update_strategy(
                "apps.DaemonSetUpdateStrategy",
                "RollingUpdateDaemonSet",
                strategy,
            ),
            &["RollingUpdate", "OnDelete"],
        )),
    }
    nonnegative(spec, "revisionHistoryLimit", "spec", causes);
}

fn replication_controller(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    nonnegative(spec, "minReadySeconds", "spec", causes);
    let selector = string_map(spec.and_then(|s| s.get("selector")));
    if selector.is_empty() {
        causes.push(Cause::required("spec.selector"));
    }
    nonnegative(spec, "replicas", "spec", causes);
    if !given(spec, "template") {
        causes.push(Cause::required("spec.template"));
        return;
    }
    let selector = LabelSelector::parse(
        &selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    )
    .ok();
    replicated_template(spec, selector, "ReplicationController", causes);
}

fn job(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    job_spec(spec, "spec", causes);
    let selector = spec
        .and_then(|s| s.get("selector"))
        .filter(|s| !s.is_null());
    match selector.map(LabelSelector::from_object) {
        None => causes.push(Cause::required("spec.selector")),
        Some(Ok(selector)) => template_matches(spec, &selector, causes),
        Some(Err(_)) => {}
    }
}

/// Upstream's `validateJobSpec`, of a Job (at `spec`) or a CronJob's job template (at
/// `spec.jobTemplate.spec`).
fn job_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    for field in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        nonnegative(spec, field, path, causes);
    }
    let mode = text(spec, "completionMode");
    if given(spec, "completionMode") && !["NonIndexed", "Indexed"].contains(&mode) {
        causes.push(Cause::unsupported(
            format!("{path}.completionMode"),
            mode,
            &["NonIndexed", "Indexed"],
        ));
    }
    let pod = spec.and_then(|s| s.pointer("/template/spec"));
    pod_spec(pod, &format!("{path}.template.spec"), causes);
    let field = format!("{path}.template.spec.restartPolicy");
    match text(pod, "restartPolicy") {
        "Always" | "" => causes.push(Cause::required_detail(
            field,
            "valid values: \"OnFailure\", \"Never\"",
        )),
        "OnFailure" if given(spec, "podFailurePolicy") => causes.push(Cause::invalid(
            field,
            "OnFailure",
            "only \"Never\" is supported when podFailurePolicy is specified",
        )),
        "OnFailure" | "Never" => {}
        other => causes.push(Cause::unsupported(field, other, &["OnFailure", "Never"])),
    }
}

/// Upstream's `ValidatePodSpec`, the parts people meet: containers (and init
/// containers), the restart and DNS policies, sysctls.
pub(crate) fn pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    // A pod's own spec is the only one at `spec`; templates' are at `….template.spec`.
    let is_pod = path == "spec";
    let volumes = pod::volumes(spec, is_pod, path, causes);
    let grace = number(spec, "terminationGracePeriodSeconds");
    let containers = list(spec, "containers");
    if containers.is_empty() {
        causes.push(Cause::required(format!("{path}.containers")));
    }
    let mut names = HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let at = format!("{path}.containers[{i}]");
        container(c, &volumes, false, grace, &at, causes);
        let name = text(Some(c), "name");
        if !names.insert(name) {
            causes.push(Cause::duplicate(format!("{at}.name"), name));
        }
    }
    for (i, c) in list(spec, "initContainers").iter().enumerate() {
        let at = format!("{path}.initContainers[{i}]");
        container(c, &volumes, true, grace, &at, causes);
        let name = text(Some(c), "name");
        if names.contains(name) {
            causes.push(Cause::duplicate(format!("{at}.name"), name));
        } else if !name.is_empty() {
            names.insert(name);
        }
    }
    one_of(
        text(spec, "restartPolicy"),
        RESTART_POLICIES,
        format!("{path}.restartPolicy"),
        causes,
    );
    one_of(
        text(spec, "dnsPolicy"),
        DNS_POLICIES,
        format!("{path}.dnsPolicy"),
        causes,
    );
    if let Some(spec) = spec {
        validate_sysctls(spec, &format!("{path}.securityContext.sysctls"), causes);
    }
}

/// Upstream's `validateContainerCommon`, in its order, then the hooks and probes. `grace`
/// is the pod's termination grace period.
fn container(
    c: &Value,
    volumes: &pod::Volumes,
    init: bool,
    grace: Option<i64>,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let c = Some(c);
    let name = text(c, "name");
    if name.is_empty() {
        causes.push(Cause::required(format!("{path}.name")));
    } else if !is_dns1123_label(name) {
        causes.push(Cause::invalid(
            format!("{path}.name"),
            name,
            DNS1123_LABEL_MSG,
        ));
    }
    if text(c, "image").is_empty() {
        causes.push(Cause::required(format!("{path}.image")));
    }
    container_ports(list(c, "ports"), &format!("{path}.ports"), causes);
    for (i, var) in list(c, "env").iter().enumerate() {
        let field = format!("{path}.env[{i}].name");
        let name = text(Some(var), "name");
        if name.is_empty() {
            causes.push(Cause::required(&field));
            causes.push(Cause::invalid(
                &field,
                name,
                "environment variable name must be non-empty",
            ));
        } else if name
            .bytes()
            .any(|b| !(b' '..=b'~').contains(&b) || b == b'=')
        {
            causes.push(Cause::invalid(&field, name, ENV_NAME_MSG));
        }
    }
    pod::env_from(c, path, causes);
    pod::volume_mounts(c, volumes, path, causes);
    pod::volume_devices(c, volumes, path, causes);
    let pull = text(c, "imagePullPolicy");
    if !pull.is_empty() && !PULL_POLICIES.contains(&pull) {
        causes.push(Cause::unsupported(
            format!("{path}.imagePullPolicy"),
            pull,
            PULL_POLICIES,
        ));
    }
    resources(
        c.and_then(|c| c.get("resources")),
        &format!("{path}.resources"),
        causes,
    );
    pod::lifecycle(c, init, grace, path, causes);
    pod::probes(c, init, path, causes);
}

fn container_ports(ports: &[Value], path: &str, causes: &mut Vec<Cause>) {
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let port = Some(port);
        let name = text(port, "name");
        if !name.is_empty() {
            let before = causes.len();
            port_name(name, &format!("{at}.name"), causes);
            if causes.len() == before && !names.insert(name) {
                causes.push(Cause::duplicate(format!("{at}.name"), name));
            }
        }
        match number(port, "containerPort").unwrap_or(0) {
            0 => causes.push(Cause::required(format!("{at}.containerPort"))),
            n => port_number(n, format!("{at}.containerPort"), causes),
        }
        if let Some(host) = number(port, "hostPort").filter(|p| *p != 0) {
            port_number(host, format!("{at}.hostPort"), causes);
        }
        one_of(
            text(port, "protocol"),
            PROTOCOLS,
            format!("{at}.protocol"),
            causes,
        );
    }
}

/// Requests within limits; resources the node cannot overcommit (extended ones,
/// huge pages) with a limit their request equals.
fn resources(resources: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let requests = resources
        .and_then(|r| r.get("requests"))
        .and_then(Value::as_object);
    let limits = string_map(resources.and_then(|r| r.get("limits")));
    for (name, request) in requests.into_iter().flatten() {
        let Some(request) = request.as_str() else {
            continue;
        };
        let overcommit = !name.starts_with("hugepages-")
            && (!name.contains('/') || name.starts_with("kubernetes.io/"));
        let Some(limit) = limits.get(name) else {
            if !overcommit {
                causes.push(Cause::required_detail(
                    format!("{path}.limits"),
                    "Limit must be set for non overcommitable resources",
                ));
            }
            continue;
        };
        let (Ok(asked), Ok(most)) = (
            skiff_quantity::parse_milli(request),
            skiff_quantity::parse_milli(limit),
        ) else {
            continue;
        };
        let detail = if asked != most && !overcommit {
            format!("must be equal to {name} limit of {}", canonical(limit))
        } else if asked > most {
            format!(
                "must be less than or equal to {name} limit of {}",
                canonical(limit)
            )
        } else {
            continue;
        };
        causes.push(Cause::invalid(
            format!("{path}.requests"),
            canonical(request),
            &detail,
        ));
    }
}

/// A quantity as upstream's `Quantity.String()` writes it back: binary quantities with
/// the largest binary suffix that divides them, decimal ones with the largest SI suffix.
fn canonical(quantity: &str) -> String {
    let binary = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
        .iter()
        .any(|s| quantity.ends_with(s));
    let parsed = if binary {
        skiff_quantity::parse_value(quantity).map(skiff_quantity::format_binary)
    } else {
        skiff_quantity::parse_milli(quantity).map(skiff_quantity::format_milli)
    };
    parsed.unwrap_or_else(|_| quantity.to_string())
}

fn service(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let kind = text(spec, "type");
    let ports = list(spec, "ports");
    let headless = text(spec, "clusterIP") == "None"
        || list(spec, "clusterIPs").first().and_then(Value::as_str) == Some("None");
    if ports.is_empty() && !headless && kind != "ExternalName" {
        causes.push(Cause::required("spec.ports"));
    }
    if kind == "ExternalName" {
        let name = text(spec, "externalName");
        let cname = name.strip_suffix('.').unwrap_or(name);
        if cname.is_empty() {
            causes.push(Cause::required("spec.externalName"));
        } else if !is_dns1123_subdomain(cname) {
            causes.push(Cause::invalid(
                "spec.externalName",
                cname,
                DNS1123_SUBDOMAIN_MSG,
            ));
        }
    }
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let port = Some(port);
        let name = text(port, "name");
        if name.is_empty() && ports.len() > 1 {
            causes.push(Cause::required(format!("{at}.name")));
        } else if !name.is_empty() {
            if !is_dns1123_label(name) {
                causes.push(Cause::invalid(
                    format!("{at}.name"),
                    name,
                    DNS1123_LABEL_MSG,
                ));
            }
            if !names.insert(name) {
                causes.push(Cause::duplicate(format!("{at}.name"), name));
            }
        }
        port_number(
            number(port, "port").unwrap_or(0),
            format!("{at}.port"),
            causes,
        );
        one_of(
            text(port, "protocol"),
            PROTOCOLS,
            format!("{at}.protocol"),
            causes,
        );
        match port.and_then(|p| p.get("targetPort")) {
            Some(Value::String(target)) => port_name(target, &format!("{at}.targetPort"), causes),
            Some(target) => port_number(
                target.as_i64().unwrap_or(0),
                format!("{at}.targetPort"),
                causes,
            ),
            None => {}
        }
    }
    one_of(
        text(spec, "sessionAffinity"),
        SESSION_AFFINITIES,
        "spec.sessionAffinity".into(),
        causes,
    );
    one_of(kind, SERVICE_TYPES, "spec.type".into(), causes);
    if kind == "ClusterIP" {
        for (i, port) in ports.iter().enumerate() {
            if number(Some(port), "nodePort").is_some_and(|p| p != 0) {
                causes.push(Cause::forbidden(
                    format!("spec.ports[{i}].nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
        }
    }
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let Some(node_port) = number(Some(port), "nodePort").filter(|p| *p != 0) else {
            continue;
        };
        if !node_ports.insert((text(Some(port), "protocol"), node_port)) {
            causes.push(Cause::duplicate(
                format!("spec.ports[{i}].nodePort"),
                node_port,
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let protocol = text(Some(port), "protocol");
        let number = number(Some(port), "port").unwrap_or(0);
        if !seen.insert((protocol, number)) {
            causes.push(Cause::duplicate(
                format!("spec.ports[{i}]"),
                go::service_port(protocol, number),
            ));
        }
    }
}

const SYSCTL_MAX_LENGTH: usize = 253;
const SYSCTL_PATTERN: &str =
    r"^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$";

/// Upstream's checks of a pod's sysctls: well-formed names, no repeats, and no
/// namespaced sysctl of a namespace the pod shares with the host.
fn validate_sysctls(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    static NAME: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let Some(pattern) = NAME.get_or_init(|| regex::Regex::new(SYSCTL_PATTERN).ok()) else {
        return;
    };
    let sysctls = spec
        .pointer("/securityContext/sysctls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let host = |field: &str| spec.get(field).and_then(Value::as_bool) == Some(true);
    let mut seen = HashSet::new();
    for (i, sysctl) in sysctls.iter().enumerate() {
        let field = format!("{path}[{i}].name");
        let name = sysctl.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(field));
            continue;
        }
        if name.len() > SYSCTL_MAX_LENGTH || !pattern.is_match(name) {
            causes.push(Cause::invalid(
                field,
                name,
                &format!("must have at most {SYSCTL_MAX_LENGTH} characters and match regex {SYSCTL_PATTERN}"),
            ));
            continue;
        }
        if !seen.insert(name) {
            causes.push(Cause::duplicate(field, name));
            continue;
        }
        let shared = if host("hostNetwork") && name.starts_with("net.") {
            Some("hostNetwork")
        } else if host("hostIPC")
            && (name.starts_with("kernel.shm")
                || name.starts_with("kernel.msg")
                || name.starts_with("kernel.sem")
                || name.starts_with("fs.mqueue."))
        {
            Some("hostIPC")
        } else {
            None
        };
        if let Some(shared) = shared {
            causes.push(Cause::invalid(
                field,
                name,
                &format!("may not be specified when '{shared}' is true"),
            ));
        }
    }
}

/// Values as Go's `%#v` prints the upstream types that hold them, which is how
/// upstream's messages show maps and structs.
pub(crate) mod go {
    use serde_json::Value;

    use crate::status::{quote, BadValue};

    /// A `map[string]string` (labels, a selector's `matchLabels`); keys sorted, as Go
    /// prints maps.
    pub fn string_map(value: Option<&Value>) -> BadValue {
        BadValue::Go(map(value))
    }

    fn map(value: Option<&Value>) -> String {
        let Some(fields) = value.and_then(Value::as_object) else {
            return "map[string]string(nil)".into();
        };
        let mut pairs: Vec<(&String, &str)> = fields
            .iter()
            .map(|(k, v)| (k, v.as_str().unwrap_or("")))
            .collect();
        pairs.sort();
        let inner: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
            .collect();
        format!("map[string]string{{{}}}", inner.join(", "))
    }

    fn strings(value: Option<&Value>) -> String {
        let Some(items) = value.and_then(Value::as_array) else {
            return "[]string(nil)".into();
        };
        let inner: Vec<String> = items
            .iter()
            .map(|v| quote(v.as_str().unwrap_or("")))
            .collect();
        format!("[]string{{{}}}", inner.join(", "))
    }

    /// A `metav1.LabelSelector`.
    pub fn label_selector(selector: &Value) -> BadValue {
        let expressions = match selector.get("matchExpressions").and_then(Value::as_array) {
            None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
            Some(list) => {
                let inner: Vec<String> = list
                    .iter()
                    .map(|e| {
                        format!(
                            "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                            quote(e["key"].as_str().unwrap_or("")),
                            quote(e["operator"].as_str().unwrap_or("")),
                            strings(e.get("values"))
                        )
                    })
                    .collect();
                format!("[]v1.LabelSelectorRequirement{{{}}}", inner.join(", "))
            }
        };
        BadValue::Go(format!(
            "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{expressions}}}",
            map(selector.get("matchLabels"))
        ))
    }

    /// An `intstr.IntOrString` (type 0 a number, 1 a string).
    pub fn int_or_string(value: Option<&Value>) -> BadValue {
        BadValue::Go(match value {
            Some(Value::String(s)) => {
                format!(
                    "intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}",
                    quote(s)
                )
            }
            other => format!(
                "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
                other.and_then(Value::as_i64).unwrap_or(0)
            ),
        })
    }

    /// A pointer Go prints by its address, which no one can reproduce: shown as zero.
    pub fn pointer(target: &str) -> String {
        format!("(*{target})(0x0)")
    }

    /// An update strategy struct (`Type` and a `RollingUpdate` pointer).
    pub fn update_strategy(kind: &str, rolling: &str, strategy: Option<&Value>) -> BadValue {
        let kind_value = strategy
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let package = kind.split('.').next().unwrap_or("apps");
        let target = format!("{package}.{rolling}");
        let rolling_update = match strategy.and_then(|s| s.get("rollingUpdate")) {
            None | Some(Value::Null) => format!("(*{target})(nil)"),
            Some(_) => pointer(&target),
        };
        BadValue::Go(format!(
            "{kind}{{Type:{}, RollingUpdate:{rolling_update}}}",
            quote(kind_value)
        ))
    }

    /// A `resource.Quantity` as Go's `%#v` shows one parsed from `text` (and printed
    /// once, which caches its string).
    pub fn quantity(text: &str) -> String {
        let binary = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        let (number, suffix) = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
            .map(|i| text.split_at(i))
            .unwrap_or((text, ""));
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let digits: i64 = format!("{whole}{fraction}").parse().unwrap_or(0);
        let (value, scale, format) = if let Some(power) = binary.iter().position(|b| *b == suffix) {
            (digits << (10 * (power + 1)), 0, "BinarySI")
        } else {
            let exponent = match suffix {
                "n" => -9,
                "u" => -6,
                "m" => -3,
                "k" => 3,
                "M" => 6,
                "G" => 9,
                "T" => 12,
                "P" => 15,
                "E" => 18,
                _ => 0,
            };
            (digits, exponent - fraction.len() as i64, "DecimalSI")
        };
        format!(
            "resource.Quantity{{i:resource.int64Amount{{value:{value}, scale:{scale}}}, d:resource.infDecAmount{{Dec:(*inf.Dec)(nil)}}, s:{}, Format:{}}}",
            quote(text),
            quote(format)
        )
    }

    /// The `core.ServicePort` key upstream finds repeated: protocol and port only.
    pub fn service_port(protocol: &str, port: i64) -> BadValue {
        BadValue::Go(format!(
            "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
            quote(protocol)
        ))
    }
}

#[cfg(test)]
mod pod_tests {
    use super::*;
    use serde_json::json;

    /// The causes of a `kind` object once defaulted, as `field: message` lines.
    fn refused(kind: &str, mut object: Value) -> Vec<String> {
        crate::defaults::apply(kind, &mut object);
        validate(kind, &object)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    fn reasons(kind: &str, mut object: Value) -> Vec<&'static str> {
        crate::defaults::apply(kind, &mut object);
        validate(kind, &object)
            .into_iter()
            .map(|c| c.reason)
            .collect()
    }

    fn pod(containers: Value) -> Value {
        json!({"spec": {"containers": containers}})
    }

    fn template(labels: Value, spec: Value) -> Value {
        json!({"metadata": {"labels": labels}, "spec": spec})
    }

    fn web() -> Value {
        json!({"containers": [{"name": "web", "image": "nginx"}]})
    }

    #[test]
    fn a_container_without_a_name_is_required_to_have_one() {
        let nameless = pod(json!([{"image": "nginx"}]));
        assert_eq!(
            refused("Pod", nameless.clone()),
            ["spec.containers[0].name: Required value"]
        );
        assert_eq!(reasons("Pod", nameless), ["FieldValueRequired"]);
        assert!(refused("Pod", pod(json!([{"name": "a", "image": "nginx"}]))).is_empty());
        assert_eq!(
            refused("Pod", json!({"spec": {}})),
            ["spec.containers: Required value"]
        );
    }

    #[test]
    fn pod_specs_are_checked_as_upstream_checks_them() {
        let spec = json!({"restartPolicy": "Sometimes", "dnsPolicy": "Nearest",
            "containers": [
                {"name": "a", "image": "nginx", "imagePullPolicy": "Sometimes",
                 "ports": [{"containerPort": 0}, {"containerPort": 70000, "protocol": "ICMP"},
                           {"name": "http", "containerPort": 80},
                           {"name": "http", "containerPort": 81, "hostPort": -1},
                           {"name": "Web--", "containerPort": 82}],
                 "env": [{"name": "GOOD_1"}, {"name": "has=sign"}, {"name": ""}],
                 "resources": {"requests": {"cpu": "2000m", "memory": "1Gi"},
                               "limits": {"cpu": "1", "memory": "2Gi"}}},
                {"name": "a", "image": "busybox"}],
            "initContainers": [{"name": "a", "image": "busybox"}]});
        assert_eq!(
            refused("Pod", json!({ "spec": spec })),
            [
                "spec.containers[0].ports[0].containerPort: Required value",
                "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[0].ports[3].name: Duplicate value: \"http\"",
                "spec.containers[0].ports[3].hostPort: Invalid value: -1: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[4].name: Invalid value: \"Web--\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.containers[0].ports[4].name: Invalid value: \"Web--\": must not contain consecutive hyphens",
                "spec.containers[0].ports[4].name: Invalid value: \"Web--\": must not begin or end with a hyphen",
                "spec.containers[0].env[1].name: Invalid value: \"has=sign\": a valid environment variable name must consist only of printable ASCII characters other than '='",
                "spec.containers[0].env[2].name: Required value",
                "spec.containers[0].env[2].name: Invalid value: \"\": environment variable name must be non-empty",
                "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
                "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
                "spec.containers[1].name: Duplicate value: \"a\"",
                "spec.initContainers[0].name: Duplicate value: \"a\"",
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                "spec.dnsPolicy: Unsupported value: \"Nearest\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
            ]
        );
        let gpu = pod(json!([{"name": "a", "image": "x",
            "resources": {"requests": {"example.com/gpu": "1", "memory": "512Mi"},
                          "limits": {"memory": "0.25Gi"}}}]));
        assert_eq!(
            refused("Pod", gpu),
            [
                "spec.containers[0].resources.limits: Required value: Limit must be set for non overcommitable resources",
                "spec.containers[0].resources.requests: Invalid value: \"512Mi\": must be less than or equal to memory limit of 256Mi",
            ]
        );
    }

    #[test]
    fn workload_templates_match_their_selectors_and_always_restart() {
        let deployment = |selector: Value, labels: Value, replicas: i64, restart: &str| {
            let mut spec = web();
            spec["restartPolicy"] = json!(restart);
            json!({"spec": {"replicas": replicas, "selector": selector,
                            "template": template(labels, spec)}})
        };
        let app = json!({"matchLabels": {"app": "web"}});
        assert!(refused(
            "Deployment",
            deployment(app.clone(), json!({"app": "web", "x": "y"}), 1, "Always")
        )
        .is_empty());
        assert_eq!(
            refused(
                "Deployment",
                deployment(app.clone(), json!({"tier": "b", "app": "db"}), -1, "Never")
            ),
            [
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\", \"tier\":\"b\"}: `selector` does not match template `labels`",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            ]
        );
        assert_eq!(
            refused(
                "Deployment",
                deployment(json!({}), json!({"app": "web"}), 1, "Always")
            ),
            ["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"]
        );
        let no_selector = json!({"spec": {"template": template(json!({"app": "web"}), web())}});
        assert_eq!(
            refused("Deployment", no_selector.clone()),
            ["spec.selector: Required value"]
        );
        assert_eq!(
            refused("ReplicaSet", no_selector.clone()),
            ["spec.selector: Required value"]
        );
        assert_eq!(
            refused("DaemonSet", no_selector),
            ["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"]
        );
        let mut empty_set = deployment(
            json!({"matchLabels": {}}),
            json!({"app": "web"}),
            1,
            "Always",
        );
        assert_eq!(
            refused("StatefulSet", empty_set.clone()),
            ["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for statefulset"]
        );
        empty_set["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
        assert_eq!(
            refused("DaemonSet", empty_set)[1],
            "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in DaemonSet is not Supported"
        );
        // A StatefulSet's pod spec is not checked upstream, only its labels and restarts.
        let stateful = json!({"spec": {"selector": app, "template": template(
            json!({"app": "db"}), json!({"restartPolicy": "OnFailure", "containers": [{"image": "x"}]}))}});
        assert_eq!(
            refused("StatefulSet", stateful),
            [
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`",
                "spec.template.spec.restartPolicy: Unsupported value: \"OnFailure\": supported values: \"Always\"",
            ]
        );
        let controller = json!({"spec": {"selector": {"app": "web"},
            "template": template(json!({"app": "other"}), web())}});
        assert_eq!(
            refused("ReplicationController", controller),
            ["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"]
        );
        assert_eq!(
            refused(
                "ReplicationController",
                json!({"spec": {"template": template(json!({}), web())}})
            ),
            ["spec.selector: Required value"]
        );
    }

    #[test]
    fn deployment_strategies_as_upstream() {
        let with = |strategy: Value| {
            json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, "strategy": strategy,
                "template": template(json!({"app": "web"}), web())}})
        };
        assert_eq!(
            refused("Deployment", with(json!({"type": "Canary"}))),
            ["spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:\"Canary\", RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: \"Recreate\", \"RollingUpdate\""]
        );
        let reasons_of = reasons("Deployment", with(json!({"type": "Canary"})));
        assert_eq!(reasons_of, ["FieldValueNotSupported"]);
        assert_eq!(
            refused(
                "Deployment",
                with(json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}))
            ),
            ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}: may not be 0 when `maxSurge` is 0"]
        );
        assert_eq!(
            refused(
                "Deployment",
                with(json!({"rollingUpdate": {"maxSurge": "x", "maxUnavailable": "150%"}}))
            ),
            [
                "spec.strategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"x\"}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"150%\"}: must not be greater than 100%",
            ]
        );
        assert_eq!(
            refused(
                "Deployment",
                with(json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}))
            ),
            ["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]
        );
        assert!(refused("Deployment", with(json!({"type": "Recreate"}))).is_empty());
    }

    #[test]
    fn jobs_never_restart_always_and_select_their_template() {
        let job = |restart: Option<&str>, labels: Value| {
            let mut spec = web();
            if let Some(restart) = restart {
                spec["restartPolicy"] = json!(restart);
            }
            json!({"spec": {"selector": {"matchLabels": {"job-name": "j"}},
                            "template": template(labels, spec)}})
        };
        assert!(refused("Job", job(Some("Never"), json!({"job-name": "j"}))).is_empty());
        assert_eq!(
            refused("Job", job(None, json!({"job-name": "j"}))),
            ["spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""]
        );
        assert_eq!(
            refused("Job", job(Some("OnFailure"), json!({"job-name": "k"}))),
            ["spec.template.metadata.labels: Invalid value: map[string]string{\"job-name\":\"k\"}: `selector` does not match template `labels`"]
        );
        let mut negative = job(Some("Never"), json!({"job-name": "j"}));
        negative["spec"]["parallelism"] = json!(-2);
        assert_eq!(
            refused("Job", negative),
            ["spec.parallelism: Invalid value: -2: must be greater than or equal to 0"]
        );
    }

    #[test]
    fn services_as_upstream() {
        let service = |spec: Value| json!({ "spec": spec });
        assert!(refused("Service", service(json!({"ports": [{"port": 80}]}))).is_empty());
        assert_eq!(
            refused("Service", service(json!({}))),
            ["spec.ports: Required value"]
        );
        assert!(refused("Service", service(json!({"clusterIP": "None"}))).is_empty());
        assert_eq!(
            refused(
                "Service",
                service(json!({"ports": [{"port": 80}, {"port": 443}]}))
            ),
            [
                "spec.ports[0].name: Required value",
                "spec.ports[1].name: Required value",
            ]
        );
        assert_eq!(
            refused(
                "Service",
                service(json!({"type": "Balanced", "sessionAffinity": "Sticky", "ports": [
                    {"name": "a", "port": 80},
                    {"name": "a", "port": 80, "targetPort": "Http"},
                    {"name": "b", "port": 0, "protocol": "ICMP", "targetPort": 70000},
                ]}))
            ),
            [
                "spec.ports[1].name: Duplicate value: \"a\"",
                "spec.ports[1].targetPort: Invalid value: \"Http\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ports[2].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[2].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.ports[2].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.sessionAffinity: Unsupported value: \"Sticky\": supported values: \"ClientIP\", \"None\"",
                "spec.type: Unsupported value: \"Balanced\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
                "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
            ]
        );
        assert_eq!(
            refused("Service", service(json!({"type": "ExternalName"}))),
            ["spec.externalName: Required value"]
        );
        assert!(refused(
            "Service",
            service(json!({"type": "ExternalName", "externalName": "example.com."}))
        )
        .is_empty());
        assert_eq!(
            refused(
                "Service",
                service(json!({"ports": [{"port": 80, "nodePort": 30001}]}))
            ),
            ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
        );
        // A target port of 0 is defaulted to the port, as upstream.
        assert!(refused(
            "Service",
            service(json!({"ports": [{"port": 80, "targetPort": 0}]}))
        )
        .is_empty());
    }

    #[test]
    fn sysctl_names_are_checked_as_upstream_checks_them() {
        let spec = json!({"securityContext": {"sysctls": [
            {"name": "foo-", "value": "bar"},
            {"name": "kernel.shmmax", "value": "1"},
            {"name": "safe-and-unsafe", "value": "1"},
            {"name": "bar..", "value": "42"},
            {"name": "kernel.shmmax", "value": "2"},
        ]}, "hostNetwork": true});
        let mut causes = Vec::new();
        validate_sysctls(&spec, "spec.securityContext.sysctls", &mut causes);
        let described: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(described.len(), 3, "{described:?}");
        assert!(described[0].starts_with("spec.securityContext.sysctls[0].name: Invalid value: \"foo-\": must have at most 253 characters"));
        assert!(described[1]
            .starts_with("spec.securityContext.sysctls[3].name: Invalid value: \"bar..\""));
        assert_eq!(
            described[2],
            "spec.securityContext.sysctls[4].name: Duplicate value: \"kernel.shmmax\""
        );
        let mut causes = Vec::new();
        let net = json!({"hostNetwork": true, "securityContext": {"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}});
        validate_sysctls(&net, "p", &mut causes);
        assert_eq!(causes[0].message, "Invalid value: \"net.ipv4.tcp_syncookies\": may not be specified when 'hostNetwork' is true");
    }
}
