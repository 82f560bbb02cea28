//! Admission: plugins that change or refuse a write after authorization, before the
//! registry's strategy and storage, as upstream's admission chain does.
//!
//! Plugins are switched with upstream's flags, `--enable-admission-plugins` and
//! `--disable-admission-plugins`. Namespace lifecycle is enforced by the registry itself
//! (no writes into a terminating or missing namespace); `LimitRanger` is in
//! `limitranger.rs`, `ServiceAccount` here, `Priority` in `priority.rs`; the validating
//! ones run from the registry on the final object, after the strategy's validation:
//! `PodSecurity` (`podsecurity.rs`, on creates and updates), then `ResourceQuota`
//! (`quota.rs`).

use serde_json::{json, Value};

use crate::object;
use crate::registry::Registry;
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult};

/// The plugins Skiff implements, by upstream's names.
pub const PLUGINS: &[&str] = &[
    "NamespaceLifecycle",
    "LimitRanger",
    "ServiceAccount",
    "PodSecurity",
    "Priority",
    "ResourceQuota",
];

/// Where the service-account volume is mounted in every container.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The token lifetime the `ServiceAccount` plugin asks for: upstream's value, which the
/// API server honours with a longer-lived token that warns after this long.
pub const PROJECTED_TOKEN_SECONDS: i64 = 3607;

#[derive(Debug, Clone)]
pub struct Admission {
    limit_ranger: bool,
    service_account: bool,
    priority: bool,
    /// Run by the registry on creates and updates, after validation (`podsecurity.rs`).
    pub pod_security: Option<crate::podsecurity::PodSecurity>,
    /// Charged by the registry itself, last, once the object is final (`quota.rs`).
    pub resource_quota: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            limit_ranger: true,
            service_account: true,
            priority: true,
            pod_security: Some(Default::default()),
            resource_quota: true,
        }
    }
}

impl Admission {
    /// Every plugin on, except those `disable` names. `enable` may name only known
    /// plugins (they are on anyway).
    pub fn from_flags(enable: &[String], disable: &[String]) -> Result<Admission, String> {
        for name in enable.iter().chain(disable) {
            if !PLUGINS.contains(&name.as_str()) {
                return Err(format!(
                    "unknown admission plugin {name:?}; known plugins: {}",
                    PLUGINS.join(", ")
                ));
            }
        }
        let off = |plugin: &str| disable.iter().any(|d| d == plugin);
        Ok(Admission {
            limit_ranger: !off("LimitRanger"),
            service_account: !off("ServiceAccount"),
            priority: !off("Priority"),
            pod_security: (!off("PodSecurity")).then(Default::default),
            resource_quota: !off("ResourceQuota"),
        })
    }

    /// Admits the creation of `object` (mutating it as the plugins do).
    pub fn admit_create(
        &self,
        registry: &Registry,
        resource: &ResourceInfo,
        namespace: Option<&str>,
        object: &mut Value,
    ) -> ApiResult<()> {
        let (Some(ns), "Pod") = (namespace, resource.builtin_kind()) else {
            return Ok(());
        };
        if self.limit_ranger {
            crate::limitranger::admit_pod(registry, resource, ns, object)?;
        }
        if self.service_account {
            admit_service_account(registry, resource, ns, object)?;
        }
        if self.priority {
            crate::priority::admit_pod(registry, resource, object)?;
        }
        Ok(())
    }
}

/// The plugins that judge a create by who makes it: NodeRestriction, and
/// CertificateSubjectRestriction for CertificateSigningRequests.
pub fn admit_create_by_requester(resource: &ResourceInfo, object: &Value) -> ApiResult<()> {
    crate::noderestriction::admit_create(resource, object)?;
    if resource.builtin_kind() == "CertificateSigningRequest" {
        crate::certificates::admit_create(resource, object)?;
    }
    Ok(())
}

/// Upstream's `ServiceAccount` plugin: the pod runs as `default` unless it names an
/// account; the account must exist; unless automounting is off, every container gets the
/// account's token, the cluster CA and the namespace at [`SERVICE_ACCOUNT_MOUNT`].
fn admit_service_account(
    registry: &Registry,
    resource: &ResourceInfo,
    namespace: &str,
    pod: &mut Value,
) -> ApiResult<()> {
    let name = object::name(pod).to_string();
    let mirror = object::metadata(pod)
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get("kubernetes.io/config.mirror"))
        .is_some();
    if mirror {
        // A mirror pod's spec is the kubelet's copy of a file: left as it is (the kubelet
        // would see it differ), and refused where it would reach for the API's credentials.
        return match mirror_pod_refusal(pod) {
            Some(why) => Err(ApiError::admission_forbidden(resource, &name, why)),
            None => Ok(()),
        };
    }
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let account = match spec.get("serviceAccountName").and_then(Value::as_str) {
        Some(account) if !account.is_empty() => account.to_string(),
        _ => "default".to_string(),
    };
    spec.insert("serviceAccountName".into(), json!(account));
    spec.insert("serviceAccount".into(), json!(account));

    let accounts = registry.core("serviceaccounts")?;
    let Some(cached) = registry.cache.get(&accounts.key(Some(namespace), &account)) else {
        return Err(ApiError::admission_forbidden(
            resource,
            &name,
            &format!(
                "error looking up service account {namespace}/{account}: serviceaccount {} not found",
                crate::status::quote(&account)
            ),
        ));
    };
    let account = cached.value().ok();
    if let Some(account) = &account {
        add_image_pull_secrets(spec, account);
    }
    let account_automount = account.as_ref().and_then(|sa| {
        sa.get("automountServiceAccountToken")
            .and_then(Value::as_bool)
    });
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or(account_automount)
        .unwrap_or(true);
    if !automount || mounts_service_account_path(spec) {
        return Ok(());
    }

    let volume_name = format!("kube-api-access-{}", crate::registry::random_suffix());
    let volumes = spec
        .entry("volumes")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| ApiError::bad_request("spec.volumes must be a list"))?;
    volumes.push(json!({
        "name": volume_name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": PROJECTED_TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }));
    for list in ["initContainers", "containers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(container) = container.as_object_mut() else {
                continue;
            };
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            if let Some(mounts) = mounts.as_array_mut() {
                mounts.push(json!({
                    "name": volume_name,
                    "readOnly": true,
                    "mountPath": SERVICE_ACCOUNT_MOUNT,
                }));
            }
        }
    }
    Ok(())
}

/// A pod that names no pull secrets takes its account's, as upstream's plugin gives
/// them (whether or not the token is mounted).
fn add_image_pull_secrets(spec: &mut serde_json::Map<String, Value>, account: &Value) {
    let named = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_some_and(|l| !l.is_empty());
    let secrets: Vec<Value> = account
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| json!({"name": r.get("name").cloned().unwrap_or_else(|| json!(""))}))
        .collect();
    if !named && !secrets.is_empty() {
        spec.insert("imagePullSecrets".into(), Value::Array(secrets));
    }
}

/// Volume sources that name a Secret, and the field that does (upstream's list of pod
/// secret references).
const SECRET_REFERENCES: &[(&str, &str)] = &[
    ("secret", "secretName"),
    ("azureFile", "secretName"),
    ("cephfs", "secretRef"),
    ("cinder", "secretRef"),
    ("flexVolume", "secretRef"),
    ("rbd", "secretRef"),
    ("iscsi", "secretRef"),
    ("scaleIO", "secretRef"),
    ("storageos", "secretRef"),
    ("csi", "nodePublishSecretRef"),
];

/// Why upstream's ServiceAccount plugin refuses a mirror pod, if it does: it names a
/// service account, refers to a Secret anywhere, or projects a service-account token.
fn mirror_pod_refusal(pod: &Value) -> Option<&'static str> {
    let spec = pod.get("spec")?;
    let named = |v: Option<&Value>| v.and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    if named(spec.get("serviceAccountName")) {
        return Some("a mirror pod may not reference service accounts");
    }
    let list = |v: &Value, key: &str| -> Vec<Value> {
        v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let volumes = list(spec, "volumes");
    let in_volumes = volumes.iter().any(|v| {
        SECRET_REFERENCES
            .iter()
            .any(|(source, field)| v.get(*source).is_some_and(|s| s.get(*field).is_some()))
            || v.get("projected")
                .is_some_and(|p| list(p, "sources").iter().any(|s| s.get("secret").is_some()))
    });
    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|key| list(spec, key))
        .collect::<Vec<_>>();
    let in_containers = containers.iter().any(|c| {
        list(c, "envFrom")
            .iter()
            .any(|e| e.get("secretRef").is_some())
            || list(c, "env").iter().any(|e| {
                e.get("valueFrom")
                    .is_some_and(|f| f.get("secretKeyRef").is_some())
            })
    });
    if !list(spec, "imagePullSecrets").is_empty() || in_volumes || in_containers {
        return Some("a mirror pod may not reference secrets");
    }
    let projects_token = volumes.iter().any(|v| {
        v.get("projected").is_some_and(|p| {
            list(p, "sources")
                .iter()
                .any(|s| s.get("serviceAccountToken").is_some())
        })
    });
    projects_token.then_some("a mirror pod may not use ServiceAccountToken volume projections")
}

/// Whether some container already mounts something at the service-account path.
fn mounts_service_account_path(spec: &serde_json::Map<String, Value>) -> bool {
    ["initContainers", "containers"].iter().any(|list| {
        spec.get(*list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("volumeMounts").and_then(Value::as_array))
            .flatten()
            .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_MOUNT))
    })
}

/// The mutating admission of a create or update, in upstream's order: the mutating
/// admission policies, then the mutating webhooks; then, once, the policies and webhooks
/// with `reinvocationPolicy: IfNeeded` that ran before something changed the object.
pub fn mutate(
    registry: &Registry,
    request: &crate::webhooks::Request<'_>,
    object: &mut Value,
) -> ApiResult<()> {
    let mut policies = crate::policy::mutating::Reinvocation::default();
    let mut webhooks = crate::webhooks::Reinvocation::default();
    crate::policy::mutating::mutate(registry, request, object, &mut policies)?;
    crate::webhooks::mutate_in_place(registry, request, object, &mut webhooks)?;
    if policies.wanted(object) {
        crate::policy::mutating::reinvoke(registry, request, object, &mut policies)?;
    }
    crate::webhooks::reinvoke_in_place(registry, request, object, &mut webhooks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_name_known_plugins_only() {
        assert!(Admission::from_flags(&[], &["ServiceAccount".into()]).is_ok());
        let error = Admission::from_flags(&["NoSuchPlugin".into()], &[]).unwrap_err();
        assert!(error.contains("unknown admission plugin"), "{error}");
        assert!(
            !Admission::from_flags(&[], &["ServiceAccount".into()])
                .unwrap()
                .service_account
        );
    }

    #[test]
    fn mirror_pods_may_not_reach_for_credentials() {
        let mirror = |spec: Value| json!({"metadata": {"name": "m", "annotations": {"kubernetes.io/config.mirror": "h"}}, "spec": spec});
        let plain = json!({"containers": [{"name": "c", "image": "busybox"}], "volumes": [{"name": "v", "configMap": {"name": "cm"}}]});
        assert_eq!(mirror_pod_refusal(&mirror(plain)), None);
        let cases = [
            (
                json!({"serviceAccountName": "sa", "containers": []}),
                "service accounts",
            ),
            (
                json!({"imagePullSecrets": [{"name": "pull"}], "containers": []}),
                "secrets",
            ),
            (
                json!({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]}),
                "secrets",
            ),
            (
                json!({"volumes": [{"name": "v", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "s"}}}]}),
                "secrets",
            ),
            (
                json!({"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "s"}}]}}]}),
                "secrets",
            ),
            (
                json!({"initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s"}}]}]}),
                "secrets",
            ),
            (
                json!({"containers": [{"name": "c", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}),
                "secrets",
            ),
            (
                json!({"volumes": [{"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}]}),
                "ServiceAccountToken volume projections",
            ),
        ];
        for (spec, what) in cases {
            let why = mirror_pod_refusal(&mirror(spec.clone())).unwrap_or_else(|| panic!("{spec}"));
            assert!(why.ends_with(what), "{spec}: {why}");
        }
    }

    #[test]
    fn pods_take_their_accounts_pull_secrets() {
        let account = json!({"imagePullSecrets": [{"name": "a"}, {"name": "b"}]});
        let mut spec = json!({"containers": []});
        let spec_map = spec.as_object_mut().unwrap();
        add_image_pull_secrets(spec_map, &account);
        assert_eq!(
            spec["imagePullSecrets"],
            json!([{"name": "a"}, {"name": "b"}])
        );
        // The pod's own list wins whole.
        let mut spec = json!({"imagePullSecrets": [{"name": "mine"}]});
        add_image_pull_secrets(spec.as_object_mut().unwrap(), &account);
        assert_eq!(spec["imagePullSecrets"], json!([{"name": "mine"}]));
        // An account without any adds nothing.
        let mut spec = json!({"containers": []});
        add_image_pull_secrets(spec.as_object_mut().unwrap(), &json!({}));
        assert!(spec.get("imagePullSecrets").is_none());
    }

    #[test]
    fn existing_mounts_are_respected() {
        let spec = json!({"containers": [{"name": "c", "volumeMounts": [{"name": "mine", "mountPath": SERVICE_ACCOUNT_MOUNT}]}]});
        assert!(mounts_service_account_path(spec.as_object().unwrap()));
        let spec = json!({"containers": [{"name": "c"}]});
        assert!(!mounts_service_account_path(spec.as_object().unwrap()));
    }
}
