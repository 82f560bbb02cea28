//! The controllers' roles, as upstream's bootstrap policy defines them
//! (`system:controller:<name>`), each bound to the service account `kube-system/<name>`
//! that the controller manager acts as for that controller
//! (`--use-service-account-credentials`). Only the controllers Skiff runs are here.

use serde_json::{json, Value};

use super::bootstrap::{cluster_role, cluster_role_binding_for, events_rule, rule, signers_rule};

const READ: &[&str] = &["get", "list", "watch"];
/// (controller, its rules); all but [`NO_EVENTS`] also write events.
fn roles() -> Vec<(&'static str, Vec<Value>)> {
    let all = |verbs: &[&str]| rule(&["*"], &["*"], verbs);
    vec![
        (
            "certificate-controller",
            vec![
                rule(
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                    &["delete", "get", "list", "watch"],
                ),
                rule(
                    &["certificates.k8s.io"],
                    &[
                        "certificatesigningrequests/approval",
                        "certificatesigningrequests/status",
                    ],
                    &["update"],
                ),
                signers_rule("approve", &["kubernetes.io/kube-apiserver-client-kubelet"]),
                signers_rule(
                    "sign",
                    &[
                        "kubernetes.io/kube-apiserver-client",
                        "kubernetes.io/kube-apiserver-client-kubelet",
                        "kubernetes.io/kubelet-serving",
                        "kubernetes.io/legacy-unknown",
                    ],
                ),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        (
            "cronjob-controller",
            vec![
                rule(
                    &["batch"],
                    &["cronjobs"],
                    &["get", "list", "update", "watch"],
                ),
                rule(
                    &["batch"],
                    &["jobs"],
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                ),
                rule(
                    &["batch"],
                    &["cronjobs/status", "cronjobs/finalizers"],
                    &["update"],
                ),
                rule(&[""], &["pods"], &["delete", "list", "watch"]),
            ],
        ),
        (
            "daemon-set-controller",
            vec![
                rule(&["apps", "extensions"], &["daemonsets"], READ),
                rule(
                    &["apps", "extensions"],
                    &["daemonsets/status", "daemonsets/finalizers"],
                    &["update"],
                ),
                rule(&[""], &["nodes"], &["list", "watch"]),
                rule(
                    &[""],
                    &["pods"],
                    &["create", "delete", "list", "patch", "watch"],
                ),
                rule(&[""], &["pods/binding"], &["create"]),
                rule(
                    &["apps"],
                    &["controllerrevisions"],
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                ),
            ],
        ),
        (
            "deployment-controller",
            vec![
                rule(
                    &["apps", "extensions"],
                    &["deployments"],
                    &["get", "list", "update", "watch"],
                ),
                rule(
                    &["apps", "extensions"],
                    &["deployments/status", "deployments/finalizers"],
                    &["update"],
                ),
                rule(
                    &["apps", "extensions"],
                    &["replicasets"],
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                ),
                rule(&[""], &["pods"], &["get", "list", "update", "watch"]),
            ],
        ),
        (
            "disruption-controller",
            vec![
                rule(
                    &["apps", "extensions"],
                    &["deployments", "replicasets"],
                    READ,
                ),
                rule(&[""], &["replicationcontrollers"], READ),
                rule(&["policy"], &["poddisruptionbudgets"], READ),
                rule(&["apps"], &["statefulsets"], READ),
                rule(&["policy"], &["poddisruptionbudgets/status"], &["update"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&["*"], &["*/scale"], &["get"]),
            ],
        ),
        (
            "endpoint-controller",
            vec![
                rule(&[""], &["pods", "services"], READ),
                rule(
                    &[""],
                    &["endpoints"],
                    &["create", "delete", "get", "list", "update", "watch"],
                ),
                rule(&[""], &["endpoints/restricted"], &["create"]),
            ],
        ),
        (
            "endpointslice-controller",
            vec![
                rule(&[""], &["nodes", "pods", "services"], READ),
                rule(&[""], &["services/finalizers"], &["update"]),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["create", "delete", "get", "list", "update", "watch"],
                ),
            ],
        ),
        (
            "endpointslicemirroring-controller",
            vec![
                rule(&[""], &["endpoints", "services"], READ),
                rule(
                    &[""],
                    &["services/finalizers", "endpoints/finalizers"],
                    &["update"],
                ),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["create", "delete", "get", "list", "update", "watch"],
                ),
            ],
        ),
        (
            "generic-garbage-collector",
            vec![all(&["delete", "get", "list", "patch", "update", "watch"])],
        ),
        (
            "horizontal-pod-autoscaler",
            vec![
                rule(&["autoscaling"], &["horizontalpodautoscalers"], READ),
                rule(
                    &["autoscaling"],
                    &["horizontalpodautoscalers/status"],
                    &["update"],
                ),
                rule(&["*"], &["*/scale"], &["get", "update"]),
                rule(&[""], &["pods"], &["list", "watch"]),
                rule(&["metrics.k8s.io"], &["pods"], &["list", "watch"]),
                rule(
                    &["custom.metrics.k8s.io", "external.metrics.k8s.io"],
                    &["*"],
                    READ,
                ),
            ],
        ),
        (
            "job-controller",
            vec![
                rule(
                    &["batch"],
                    &["jobs"],
                    &["get", "list", "patch", "update", "watch"],
                ),
                rule(&["batch"], &["jobs/status", "jobs/finalizers"], &["update"]),
                rule(
                    &[""],
                    &["pods"],
                    &["create", "delete", "list", "patch", "watch"],
                ),
            ],
        ),
        (
            "namespace-controller",
            vec![
                rule(&[""], &["namespaces"], &["delete", "get", "list", "watch"]),
                rule(
                    &[""],
                    &["namespaces/finalize", "namespaces/status"],
                    &["update"],
                ),
                all(&["delete", "deletecollection", "get", "list", "watch"]),
            ],
        ),
        (
            "node-controller",
            vec![
                rule(
                    &[""],
                    &["nodes"],
                    &["delete", "get", "list", "patch", "update", "watch"],
                ),
                rule(&[""], &["nodes/status"], &["patch", "update"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&[""], &["pods"], &["delete", "get", "list", "watch"]),
            ],
        ),
        (
            "pod-garbage-collector",
            vec![
                rule(&[""], &["pods"], &["delete", "list", "watch"]),
                rule(&[""], &["nodes"], READ),
                rule(&[""], &["pods/status"], &["patch"]),
            ],
        ),
        (
            "replicaset-controller",
            vec![
                rule(
                    &["apps", "extensions"],
                    &["replicasets"],
                    &["get", "list", "update", "watch"],
                ),
                rule(
                    &["apps", "extensions"],
                    &["replicasets/status", "replicasets/finalizers"],
                    &["update"],
                ),
                rule(
                    &[""],
                    &["pods"],
                    &["create", "delete", "list", "patch", "watch"],
                ),
            ],
        ),
        (
            "replication-controller",
            vec![
                rule(
                    &[""],
                    &["replicationcontrollers"],
                    &["get", "list", "update", "watch"],
                ),
                rule(
                    &[""],
                    &[
                        "replicationcontrollers/status",
                        "replicationcontrollers/finalizers",
                    ],
                    &["update"],
                ),
                rule(
                    &[""],
                    &["pods"],
                    &["create", "delete", "list", "patch", "watch"],
                ),
            ],
        ),
        (
            "resourcequota-controller",
            vec![
                all(&["list", "watch"]),
                rule(&[""], &["resourcequotas/status"], &["update"]),
            ],
        ),
        (
            "root-ca-cert-publisher",
            vec![rule(&[""], &["configmaps"], &["create", "update"])],
        ),
        (
            "service-account-controller",
            vec![rule(&[""], &["serviceaccounts"], &["create"])],
        ),
        (
            "service-controller",
            vec![
                rule(&[""], &["services"], READ),
                rule(&[""], &["services/status"], &["patch", "update"]),
                rule(&[""], &["nodes"], &["list", "watch"]),
            ],
        ),
        (
            "statefulset-controller",
            vec![
                rule(&[""], &["pods"], &["list", "watch"]),
                rule(&["apps"], &["statefulsets"], READ),
                rule(
                    &["apps"],
                    &["statefulsets/status", "statefulsets/finalizers"],
                    &["update"],
                ),
                rule(
                    &[""],
                    &["pods"],
                    &["create", "delete", "get", "patch", "update"],
                ),
                rule(
                    &["apps"],
                    &["controllerrevisions"],
                    &[
                        "create", "delete", "get", "list", "patch", "update", "watch",
                    ],
                ),
                rule(
                    &[""],
                    &["persistentvolumeclaims"],
                    &["create", "get", "list", "watch"],
                ),
                rule(&[""], &["persistentvolumeclaims"], &["delete", "update"]),
                rule(&[""], &["pods/finalizers"], &["update"]),
            ],
        ),
        (
            "ttl-after-finished-controller",
            vec![rule(
                &["batch"],
                &["jobs"],
                &["delete", "get", "list", "watch"],
            )],
        ),
    ]
}

/// The controllers without event rights upstream.
const NO_EVENTS: &[&str] = &["namespace-controller", "pod-garbage-collector"];

/// The controllers Skiff runs, by the service-account names they act as.
pub fn controller_accounts() -> Vec<&'static str> {
    roles().into_iter().map(|(name, _)| name).collect()
}

pub fn cluster_roles() -> Vec<Value> {
    roles()
        .into_iter()
        .map(|(name, mut rules)| {
            if !NO_EVENTS.contains(&name) {
                rules.push(events_rule());
            }
            cluster_role(&format!("system:controller:{name}"), json!({}), rules, None)
        })
        .collect()
}

pub fn cluster_role_bindings() -> Vec<Value> {
    let mut bindings: Vec<Value> = roles()
        .into_iter()
        .map(|(name, _)| {
            let role = format!("system:controller:{name}");
            cluster_role_binding_for(
                &role,
                &role,
                vec![json!({"kind": "ServiceAccount", "name": name, "namespace": "kube-system"})],
            )
        })
        .collect();
    // Skiff's approver also approves its agents' kube-proxy client certificates.
    bindings.push(cluster_role_binding_for(
        "skiff:certificate-controller:kube-apiserver-client-approver",
        "system:certificates.k8s.io:kube-apiserver-client-approver",
        vec![json!({"kind": "ServiceAccount", "name": "certificate-controller", "namespace": "kube-system"})],
    ));
    bindings
}
