//! The roles and bindings every cluster has, as upstream's bootstrap policy defines them,
//! reconciled on every start: missing ones are created, changed ones put back, unless
//! an administrator opted out with `rbac.authorization.kubernetes.io/autoupdate: "false"`.

use serde_json::{json, Value};

use crate::object;
use crate::registry::{Action, Registry, SERVER_MANAGER};

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

pub(super) fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"verbs": verbs, "apiGroups": groups, "resources": resources})
}

/// Writing events in both groups, as every component's role allows.
pub(super) fn events_rule() -> Value {
    rule(
        &["", "events.k8s.io"],
        &["events"],
        &["create", "patch", "update"],
    )
}

/// `verb` (`approve`, `sign`) on the named certificate signers.
pub(super) fn signers_rule(verb: &str, signers: &[&str]) -> Value {
    json!({"verbs": [verb], "apiGroups": ["certificates.k8s.io"],
           "resources": ["signers"], "resourceNames": signers})
}

pub(super) fn url_rule(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"verbs": verbs, "nonResourceURLs": urls})
}

pub(super) fn cluster_role(
    name: &str,
    labels: Value,
    rules: Vec<Value>,
    aggregate_label: Option<&str>,
) -> Value {
    let mut labels = labels;
    labels["kubernetes.io/bootstrapping"] = json!("rbac-defaults");
    let mut role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": rules,
    });
    if let Some(label) = aggregate_label {
        role["aggregationRule"] =
            json!({"clusterRoleSelectors": [{"matchLabels": {label: "true"}}]});
        role["rules"] = json!([]);
    }
    role
}

fn cluster_role_binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": g}))
        .collect();
    cluster_role_binding_for(name, role, subjects)
}

pub(super) fn cluster_role_binding_for(name: &str, role: &str, subjects: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// Upstream's bootstrap Roles in `kube-system`: extension API servers read how to trust
/// the aggregator's requests with this one.
fn namespaced_bootstrap_roles() -> Vec<Value> {
    vec![json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {
            "name": "extension-apiserver-authentication-reader",
            "namespace": "kube-system",
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": [{
            "verbs": READ,
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [crate::aggregator::authentication::CONFIG_MAP],
        }],
    })]
}

/// Upstream's bootstrap ClusterRoles: the user-facing ones, the discovery roles and the
/// components' roles (`components.rs`).
pub fn cluster_roles() -> Vec<Value> {
    let mut roles = user_facing_roles();
    roles.extend(super::components::cluster_roles());
    roles
}

fn user_facing_roles() -> Vec<Value> {
    let view_core = [
        "bindings",
        "configmaps",
        "endpoints",
        "events",
        "limitranges",
        "namespaces",
        "namespaces/status",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "pods",
        "pods/log",
        "pods/status",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "resourcequotas",
        "resourcequotas/status",
        "serviceaccounts",
        "services",
        "services/status",
    ];
    let apps = [
        "controllerrevisions",
        "daemonsets",
        "daemonsets/status",
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "statefulsets/scale",
        "statefulsets/status",
    ];
    let edit_core = [
        "pods",
        "pods/attach",
        "pods/exec",
        "pods/portforward",
        "pods/proxy",
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "secrets",
        "serviceaccounts",
        "services",
        "services/proxy",
    ];
    let apps_write = [
        "daemonsets",
        "deployments",
        "deployments/rollback",
        "deployments/scale",
        "replicasets",
        "replicasets/scale",
        "statefulsets",
        "statefulsets/scale",
    ];
    let no_labels = json!({});
    vec![
        cluster_role(
            "cluster-admin",
            no_labels.clone(),
            vec![rule(&["*"], &["*"], &["*"]), url_rule(&["*"], &["*"])],
            None,
        ),
        cluster_role(
            "admin",
            no_labels.clone(),
            vec![],
            Some("rbac.authorization.k8s.io/aggregate-to-admin"),
        ),
        cluster_role(
            "edit",
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
            vec![],
            Some("rbac.authorization.k8s.io/aggregate-to-edit"),
        ),
        cluster_role(
            "view",
            json!({"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
            vec![],
            Some("rbac.authorization.k8s.io/aggregate-to-view"),
        ),
        cluster_role(
            "system:aggregate-to-admin",
            json!({"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                    &["create"],
                ),
                rule(
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                    &[
                        "create",
                        "delete",
                        "deletecollection",
                        "get",
                        "list",
                        "patch",
                        "update",
                        "watch",
                    ],
                ),
            ],
            None,
        ),
        cluster_role(
            "system:aggregate-to-edit",
            json!({"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
            vec![
                rule(&[""], &edit_core, WRITE),
                rule(
                    &[""],
                    &["pods/eviction", "serviceaccounts/token"],
                    &["create"],
                ),
                rule(&["apps"], &apps_write, WRITE),
                rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
                rule(&["batch"], &["cronjobs", "jobs"], WRITE),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                    WRITE,
                ),
                rule(&["policy"], &["poddisruptionbudgets"], WRITE),
                rule(&["coordination.k8s.io"], &["leases"], WRITE),
                rule(&[""], &["secrets"], READ),
            ],
            None,
        ),
        cluster_role(
            "system:aggregate-to-view",
            json!({"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
            vec![
                rule(&[""], &view_core, READ),
                rule(&["apps"], &apps, READ),
                rule(
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                    READ,
                ),
                rule(
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                    READ,
                ),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                rule(&["events.k8s.io"], &["events"], READ),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                    READ,
                ),
                rule(
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                    READ,
                ),
                rule(&["coordination.k8s.io"], &["leases"], READ),
            ],
            None,
        ),
        cluster_role(
            "system:basic-user",
            no_labels.clone(),
            vec![
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
            ],
            None,
        ),
        cluster_role(
            "system:discovery",
            no_labels.clone(),
            vec![url_rule(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
            None,
        ),
        cluster_role(
            "system:public-info-viewer",
            no_labels,
            vec![url_rule(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
            None,
        ),
    ]
}

pub fn cluster_role_bindings() -> Vec<Value> {
    let mut bindings = vec![
        cluster_role_binding("cluster-admin", "cluster-admin", &["system:masters"]),
        cluster_role_binding(
            "system:basic-user",
            "system:basic-user",
            &["system:authenticated"],
        ),
        cluster_role_binding(
            "system:discovery",
            "system:discovery",
            &["system:authenticated"],
        ),
        cluster_role_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ];
    bindings.extend(super::components::cluster_role_bindings());
    bindings
}

/// Creates what is missing and puts back what drifted (the rules of roles, the subjects
/// of bindings), leaving alone objects annotated `autoupdate: "false"`.
pub async fn reconcile(registry: &Registry) -> anyhow::Result<()> {
    let catalogue = &registry.catalogue;
    let roles = catalogue
        .get("rbac.authorization.k8s.io", "v1", "clusterroles")
        .ok_or_else(|| anyhow::anyhow!("clusterroles missing from the catalogue"))?;
    let bindings = catalogue
        .get("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
        .ok_or_else(|| anyhow::anyhow!("clusterrolebindings missing from the catalogue"))?;
    let namespaced_roles = catalogue
        .get("rbac.authorization.k8s.io", "v1", "roles")
        .ok_or_else(|| anyhow::anyhow!("roles missing from the catalogue"))?;
    let wanted = cluster_roles()
        .into_iter()
        .map(|r| (roles.clone(), r, ["rules", "aggregationRule"].as_slice()))
        .chain(
            namespaced_bootstrap_roles()
                .into_iter()
                .map(|r| (namespaced_roles.clone(), r, ["rules"].as_slice())),
        )
        .chain(
            cluster_role_bindings()
                .into_iter()
                .map(|b| (bindings.clone(), b, ["roleRef", "subjects"].as_slice())),
        );
    for (resource, desired, owned_fields) in wanted {
        let name = object::name(&desired).to_string();
        let namespace = object::namespace(&desired).map(str::to_string);
        let namespace = namespace.as_deref();
        match registry
            .create(&resource, namespace, desired.clone(), SERVER_MANAGER, false)
            .await
        {
            Ok(_) => continue,
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => anyhow::bail!("creating {} {name}: {e}", resource.kind),
        }
        registry
            .guaranteed_update(&resource, namespace, &name, false, |mut current| {
                let opted_out = object::metadata(&current)
                    .and_then(|m| m.get("annotations"))
                    .and_then(|a| a.get("rbac.authorization.kubernetes.io/autoupdate"))
                    .and_then(Value::as_str)
                    == Some("false");
                if opted_out {
                    return Ok(Action::Keep);
                }
                let mut changed = false;
                for field in owned_fields {
                    if current.get(*field) != desired.get(*field) {
                        changed = true;
                        match desired.get(*field) {
                            Some(v) => current[*field] = v.clone(),
                            None => {
                                if let Some(fields) = current.as_object_mut() {
                                    fields.shift_remove(*field);
                                }
                            }
                        }
                    }
                }
                Ok(if changed {
                    Action::Replace(current)
                } else {
                    Action::Keep
                })
            })
            .await
            .map_err(|e| anyhow::anyhow!("reconciling {} {name}: {e}", resource.kind))?;
    }
    Ok(())
}
