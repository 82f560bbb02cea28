//! The `PodSecurity` admission plugin, as upstream's (`k8s.io/pod-security-admission`):
//! a namespace's `pod-security.kubernetes.io/<mode>[-version]` labels choose a level
//! for each mode. Pods are refused in `enforce` mode; pods and the pod templates of
//! workload resources get `Warning` headers in `warn` mode and a log line in `audit`
//! mode (templates are never refused). Raising a namespace's enforce level warns about
//! the pods already there that it would refuse. The checks themselves are in the
//! `skiff-podsecurity` crate.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};
use skiff_podsecurity::{self as pss, LabelError, Level, LevelVersion, Policy};

use crate::object;
use crate::registry::Registry;
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult, Cause};

/// Upstream's cap on the pods checked when a namespace's enforce level changes.
const MAX_PODS_TO_CHECK: usize = 3000;

/// Pod subresources upstream never checks.
const IGNORED_POD_SUBRESOURCES: &[&str] = &[
    "exec",
    "attach",
    "binding",
    "eviction",
    "log",
    "portforward",
    "proxy",
    "status",
];

/// The plugin's configuration (upstream's `PodSecurityConfiguration`): the policy of
/// unlabelled namespaces and what is exempt.
#[derive(Debug, Clone, Default)]
pub struct PodSecurity {
    pub defaults: Policy,
    pub exempt_usernames: HashSet<String>,
    pub exempt_namespaces: HashSet<String>,
    pub exempt_runtime_classes: HashSet<String>,
}

/// Why an admission configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("admission configuration is not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("PodSecurity configuration: defaults.{field}: {value:?}: {error}")]
    Default {
        field: String,
        value: String,
        error: pss::ParseError,
    },
}

impl PodSecurity {
    /// The `PodSecurity` entry of upstream's `AdmissionConfiguration` file
    /// (`--admission-control-config-file`), with its `PodSecurityConfiguration` inline:
    /// `defaults` (`enforce`, `enforce-version`, … as the labels) and `exemptions`
    /// (`usernames`, `runtimeClasses`, `namespaces`). No entry: upstream's defaults.
    pub fn from_admission_configuration(text: &str) -> Result<PodSecurity, ConfigError> {
        let file: Value = serde_yaml::from_str(text)?;
        let configuration = file
            .get("plugins")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str) == Some("PodSecurity"))
            .and_then(|p| p.get("configuration"));
        let Some(configuration) = configuration else {
            return Ok(PodSecurity::default());
        };
        // The defaults read as labels would, but a bad value is an error here.
        let mut labels = Map::new();
        let defaults = configuration.get("defaults").and_then(Value::as_object);
        for (field, value) in defaults.into_iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            let label = format!("pod-security.kubernetes.io/{field}");
            let error = if field.ends_with("-version") {
                text.parse::<pss::Version>().err()
            } else {
                text.parse::<Level>().err()
            };
            if let Some(error) = error {
                return Err(ConfigError::Default {
                    field: field.clone(),
                    value: text.to_string(),
                    error,
                });
            }
            labels.insert(label, Value::String(text.to_string()));
        }
        let (defaults, _) = pss::policy_from_labels(Some(&labels), &Policy::default());
        let exempt = |list: &str| -> HashSet<String> {
            configuration
                .pointer(&format!("/exemptions/{list}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        Ok(PodSecurity {
            defaults,
            exempt_usernames: exempt("usernames"),
            exempt_namespaces: exempt("namespaces"),
            exempt_runtime_classes: exempt("runtimeClasses"),
        })
    }
}

/// Where a kind keeps its pod template: (metadata, spec) paths.
fn template_paths(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "Pod" => Some(("/metadata", "/spec")),
        "PodTemplate" => Some(("/template/metadata", "/template/spec")),
        "ReplicationController"
        | "ReplicaSet"
        | "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "Job" => Some(("/spec/template/metadata", "/spec/template/spec")),
        "CronJob" => Some((
            "/spec/jobTemplate/spec/template/metadata",
            "/spec/jobTemplate/spec/template/spec",
        )),
        _ => None,
    }
}

fn labels(object: &Value) -> Option<&Map<String, Value>> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
}

impl PodSecurity {
    /// Whether this plugin looks at writes of `resource` at all.
    pub fn watches(resource: &ResourceInfo) -> bool {
        resource.builtin_kind() == "Namespace" || template_paths(&resource.kind).is_some()
    }

    fn policy(&self, namespace: &Value) -> (Policy, Vec<LabelError>) {
        pss::policy_from_labels(labels(namespace), &self.defaults)
    }

    /// Admits a write of a pod, a workload with a pod template, or a namespace. `old`
    /// is the current object on updates; `namespace` the object's namespace (for
    /// namespaced kinds).
    pub fn admit(
        &self,
        registry: &Registry,
        resource: &ResourceInfo,
        subresource: Option<&str>,
        namespace: Option<&Value>,
        object: &Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        if resource.builtin_kind() == "Namespace" {
            if subresource.is_some() {
                return Ok(());
            }
            return self.admit_namespace(registry, resource, object, old);
        }
        let Some((metadata_path, spec_path)) = template_paths(&resource.kind) else {
            return Ok(());
        };
        let is_pod = resource.builtin_kind() == "Pod";
        match subresource {
            Some(sub) if is_pod && IGNORED_POD_SUBRESOURCES.contains(&sub) => return Ok(()),
            Some(_) if !is_pod => return Ok(()),
            _ => {}
        }
        let Some(namespace) = namespace else {
            return Ok(());
        };
        let namespace_name = object::name(namespace);
        if self.exempt_namespaces.contains(namespace_name)
            || crate::warnings::user().is_some_and(|u| self.exempt_usernames.contains(&u))
        {
            return Ok(());
        }
        let (policy, errors) = self.policy(namespace);
        let quiet = if is_pod {
            errors.is_empty() && policy.fully_privileged()
        } else {
            errors.is_empty()
                && policy.warn.level == Level::Privileged
                && policy.audit.level == Level::Privileged
        };
        if quiet {
            return Ok(());
        }
        if let (true, Some(old)) = (is_pod, old) {
            if !significant_pod_update(object, old) {
                return Ok(());
            }
        }
        let Some(spec) = object.pointer(spec_path) else {
            // No template: nothing to check (and a pod without a spec fails validation).
            return Ok(());
        };
        let empty = Value::Object(Map::new());
        let metadata = object.pointer(metadata_path).unwrap_or(&empty);
        let runtime_class = spec.get("runtimeClassName").and_then(Value::as_str);
        if runtime_class.is_some_and(|rc| self.exempt_runtime_classes.contains(rc)) {
            return Ok(());
        }
        if !errors.is_empty() {
            tracing::info!(
                namespace = namespace_name,
                "PodSecurity: failed to parse policy: {}",
                describe_label_errors(&errors)
            );
        }
        let mut results: BTreeMap<String, Vec<pss::Violation>> = BTreeMap::new();
        let mut evaluate = |lv: LevelVersion| {
            results
                .entry(lv.to_string())
                .or_insert_with(|| pss::evaluate(lv, metadata, spec))
                .clone()
        };
        if is_pod {
            let violations = evaluate(policy.enforce);
            if !violations.is_empty() {
                return Err(ApiError::admission_forbidden(
                    resource,
                    object::name(object),
                    &format!(
                        "violates PodSecurity {}: {}",
                        crate::status::quote(&policy.enforce.to_string()),
                        pss::describe(&violations)
                    ),
                ));
            }
        }
        let audited = evaluate(policy.audit);
        if !audited.is_empty() {
            tracing::info!(
                namespace = namespace_name,
                kind = resource.kind,
                name = object::name(object),
                "would violate PodSecurity {}: {}",
                crate::status::quote(&policy.audit.to_string()),
                pss::describe(&audited)
            );
        }
        let warned = evaluate(policy.warn);
        if !warned.is_empty() {
            crate::warnings::add(format!(
                "would violate PodSecurity {}: {}",
                crate::status::quote(&policy.warn.to_string()),
                pss::describe(&warned)
            ));
        }
        Ok(())
    }

    fn admit_namespace(
        &self,
        registry: &Registry,
        resource: &ResourceInfo,
        namespace: &Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        let name = object::name(namespace);
        let (policy, errors) = self.policy(namespace);
        let old_policy = old.map(|old| self.policy(old));
        let new_errors = match &old_policy {
            None => !errors.is_empty(),
            Some((_, old_errors)) => !errors.is_empty() && *old_errors != errors,
        };
        if new_errors {
            let causes = errors
                .iter()
                .map(|e| {
                    Cause::invalid(
                        format!("metadata.labels[{}]", e.label),
                        &e.value,
                        &e.error.to_string(),
                    )
                })
                .collect();
            return Err(ApiError::invalid(
                &resource.kind,
                &resource.group,
                name,
                causes,
            ));
        }
        let exempt = self.exempt_namespaces.contains(name);
        let Some((old_policy, _)) = old_policy else {
            if exempt {
                self.warn_exempt(namespace, &policy);
            }
            return Ok(());
        };
        let unchanged = policy.enforce == old_policy.enforce
            || policy.enforce.level == Level::Privileged
            || (policy.enforce.version == old_policy.enforce.version
                && policy.enforce.level <= old_policy.enforce.level);
        if unchanged {
            return Ok(());
        }
        if exempt {
            self.warn_exempt(namespace, &policy);
            return Ok(());
        }
        for warning in self.existing_pods(registry, name, policy.enforce)? {
            crate::warnings::add(warning);
        }
        Ok(())
    }

    /// Upstream's warning for labels on an exempt namespace.
    fn warn_exempt(&self, namespace: &Value, policy: &Policy) {
        if policy.fully_privileged() || *policy == self.defaults {
            return;
        }
        let has = |a: &str, b: &str| {
            labels(namespace).is_some_and(|l| l.contains_key(a) || l.contains_key(b))
        };
        let modes = [
            (
                "enforce",
                policy.enforce,
                pss::ENFORCE_LABEL,
                pss::ENFORCE_VERSION_LABEL,
            ),
            (
                "audit",
                policy.audit,
                pss::AUDIT_LABEL,
                pss::AUDIT_VERSION_LABEL,
            ),
            (
                "warn",
                policy.warn,
                pss::WARN_LABEL,
                pss::WARN_VERSION_LABEL,
            ),
        ];
        let set: Vec<String> = modes
            .iter()
            .filter(|(_, lv, level, version)| lv.level != Level::Privileged && has(level, version))
            .map(|(mode, lv, _, _)| format!("{mode}={lv}"))
            .collect();
        crate::warnings::add(format!(
            "namespace {} is exempt from Pod Security, and the policy ({}) will be ignored",
            crate::status::quote(object::name(namespace)),
            set.join(", ")
        ));
    }

    /// What upstream says about a namespace's pods when its enforce level rises: one
    /// line per distinct set of reasons, naming the first pod (by name) and how many
    /// others share it. Pods of one controller are checked once before their siblings.
    fn existing_pods(
        &self,
        registry: &Registry,
        namespace: &str,
        enforce: LevelVersion,
    ) -> ApiResult<Vec<String>> {
        let pods = registry.core("pods")?;
        let snapshot = registry
            .cache
            .snapshot(&pods.key_prefix(Some(namespace)), None);
        let mut first = Vec::new();
        let mut siblings = Vec::new();
        let mut controllers = HashSet::new();
        for cached in &snapshot.objects {
            let pod = cached.value()?;
            let runtime_class = pod
                .pointer("/spec/runtimeClassName")
                .and_then(Value::as_str);
            if runtime_class.is_some_and(|rc| self.exempt_runtime_classes.contains(rc)) {
                continue;
            }
            match controller_uid(&pod) {
                Some(uid) if !controllers.insert(uid.clone()) => siblings.push(pod),
                _ => first.push(pod),
            }
        }
        first.extend(siblings);
        let total = first.len();
        first.truncate(MAX_PODS_TO_CHECK);
        let checked = first.len();

        // reasons → (first pod by name, count)
        let mut by_reasons: BTreeMap<String, (String, usize)> = BTreeMap::new();
        let empty = Value::Object(Map::new());
        for pod in &first {
            let metadata = pod.get("metadata").unwrap_or(&empty);
            let spec = pod.get("spec").unwrap_or(&empty);
            let violations = pss::evaluate(enforce, metadata, spec);
            if violations.is_empty() {
                continue;
            }
            let name = object::name(pod).to_string();
            let entry = by_reasons
                .entry(pss::reasons(&violations))
                .or_insert_with(|| (name.clone(), 0));
            if name < entry.0 {
                entry.0 = name;
            }
            entry.1 += 1;
        }
        let mut warnings = Vec::new();
        if checked < total {
            warnings.push(format!(
                "new PodSecurity enforce level only checked against the first {checked} of {total} existing pods"
            ));
        }
        if !by_reasons.is_empty() {
            warnings.push(format!(
                "existing pods in namespace {} violate the new PodSecurity enforce level {}",
                crate::status::quote(namespace),
                crate::status::quote(&enforce.to_string())
            ));
        }
        let mut pod_warnings: Vec<String> = by_reasons
            .into_iter()
            .map(|(reasons, (pod, count))| match count {
                1 => format!("{pod}: {reasons}"),
                2 => format!("{pod} (and 1 other pod): {reasons}"),
                n => format!("{pod} (and {} other pods): {reasons}", n - 1),
            })
            .collect();
        pod_warnings.sort();
        warnings.extend(pod_warnings);
        Ok(warnings)
    }
}

fn describe_label_errors(errors: &[LabelError]) -> String {
    errors
        .iter()
        .map(|e| format!("metadata.labels[{}]: {:?}: {}", e.label, e.value, e.error))
        .collect::<Vec<_>>()
        .join(", ")
}

fn controller_uid(pod: &Value) -> Option<String> {
    object::metadata(pod)?
        .get("ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|r| r.get("uid").and_then(Value::as_str))
        .map(str::to_string)
}

/// Upstream re-checks a pod update only when it could change what runs: a container
/// added or removed, an image changed, an ephemeral container added or changed.
/// Metadata-only updates (labels, annotations, finalizers) never are.
fn significant_pod_update(new: &Value, old: &Value) -> bool {
    let list = |pod: &Value, name: &str| -> Vec<Value> {
        pod.pointer(&format!("/spec/{name}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let image = |c: &Value| c.get("image").cloned().unwrap_or(Value::Null);
    for name in ["containers", "initContainers"] {
        let (new, old) = (list(new, name), list(old, name));
        if new.len() != old.len() || new.iter().zip(&old).any(|(n, o)| image(n) != image(o)) {
            return true;
        }
    }
    let old_ephemeral = list(old, "ephemeralContainers");
    list(new, "ephemeralContainers").iter().any(|c| {
        match old_ephemeral
            .iter()
            .find(|o| o.get("name") == c.get("name"))
        {
            None => true,
            Some(o) => image(o) != image(c),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn admission_configuration_sets_defaults_and_exemptions() {
        let text = r#"
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults: {enforce: baseline, enforce-version: v1.30, warn: restricted}
    exemptions: {usernames: [ci], runtimeClasses: [kata], namespaces: [kube-system]}
"#;
        let config = PodSecurity::from_admission_configuration(text).unwrap();
        assert_eq!(config.defaults.enforce.to_string(), "baseline:v1.30");
        assert_eq!(config.defaults.warn.to_string(), "restricted:latest");
        assert_eq!(config.defaults.audit.to_string(), "privileged:latest");
        assert!(config.exempt_usernames.contains("ci"));
        assert!(config.exempt_runtime_classes.contains("kata"));
        assert!(config.exempt_namespaces.contains("kube-system"));

        let bad = text.replace("enforce: baseline", "enforce: strict");
        let error = PodSecurity::from_admission_configuration(&bad).unwrap_err();
        assert!(error.to_string().contains("defaults.enforce"), "{error}");
        let none = PodSecurity::from_admission_configuration("plugins: []").unwrap();
        assert!(none.defaults.fully_privileged());
    }

    #[test]
    fn only_spec_changes_that_matter_are_rechecked() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let mut relabelled = pod.clone();
        relabelled["metadata"]["labels"] = json!({"x": "y"});
        assert!(!significant_pod_update(&relabelled, &pod));
        let mut new_image = pod.clone();
        new_image["spec"]["containers"][0]["image"] = json!("b");
        assert!(significant_pod_update(&new_image, &pod));
        let mut debugged = pod.clone();
        debugged["spec"]["ephemeralContainers"] = json!([{"name": "d", "image": "busybox"}]);
        assert!(significant_pod_update(&debugged, &pod));
        assert!(!significant_pod_update(&debugged, &debugged));
    }

    #[test]
    fn templates_are_found_for_every_workload_kind() {
        let cronjob =
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}});
        let (_, spec) = template_paths("CronJob").unwrap();
        assert!(cronjob.pointer(spec).is_some());
        for kind in [
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "DaemonSet",
            "Job",
            "ReplicationController",
            "PodTemplate",
            "Pod",
        ] {
            assert!(template_paths(kind).is_some(), "{kind}");
        }
        assert!(template_paths("ConfigMap").is_none());
    }

    #[test]
    fn controllers_are_found_by_their_controller_reference() {
        let pod = json!({"metadata": {"ownerReferences": [
            {"uid": "u1", "controller": false}, {"uid": "u2", "controller": true}
        ]}});
        assert_eq!(controller_uid(&pod).as_deref(), Some("u2"));
        assert_eq!(controller_uid(&json!({"metadata": {}})), None);
    }
}
