//! The roles of the cluster's own components, as upstream's bootstrap policy grants them:
//! kubelets (`system:node`, applied by the Node authorizer rather than a binding), the
//! service proxy, the scheduler, the controller manager, cluster DNS, node bootstrapping
//! and certificate approval; and the few of Skiff's own that its agents need.

use serde_json::{json, Value};

use super::bootstrap::{cluster_role, events_rule, rule, signers_rule, url_rule};

/// The group of the node token's bootstrap token: joining agents, which may ask for their
/// node's certificates and nothing else.
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:skiff:node-token";

/// What upstream's Node authorizer lets every kubelet do (its `NodeRules`); reads of
/// secrets, config maps, volumes and pods are further limited to the node's own pods.
pub fn node_rules() -> Vec<Value> {
    let read = &["get", "list", "watch"][..];
    vec![
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews", "subjectaccessreviews"],
            &["create"],
        ),
        rule(&[""], &["services"], read),
        rule(&[""], &["nodes"], &["create", "get", "list", "watch"]),
        rule(&[""], &["nodes/status"], &["patch", "update"]),
        rule(&[""], &["nodes"], &["patch", "update"]),
        rule(&[""], &["events"], &["create", "patch", "update"]),
        rule(
            &["events.k8s.io"],
            &["events"],
            &["create", "patch", "update"],
        ),
        rule(&[""], &["pods"], read),
        rule(&[""], &["pods"], &["create", "delete"]),
        rule(&[""], &["pods/status"], &["patch", "update"]),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(&[""], &["configmaps", "secrets"], read),
        rule(
            &[""],
            &["persistentvolumeclaims", "persistentvolumes"],
            &["get"],
        ),
        rule(&[""], &["endpoints"], &["get"]),
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            &["create", "get", "list", "watch"],
        ),
        rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["create", "delete", "get", "patch", "update"],
        ),
        rule(&["storage.k8s.io"], &["volumeattachments"], &["get"]),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(
            &[""],
            &["persistentvolumeclaims/status"],
            &["get", "patch", "update"],
        ),
        rule(&["storage.k8s.io"], &["csidrivers"], read),
        rule(
            &["storage.k8s.io"],
            &["csinodes"],
            &["create", "delete", "get", "patch", "update"],
        ),
        rule(&["node.k8s.io"], &["runtimeclasses"], read),
    ]
}

fn own_lease(name: &str) -> [Value; 2] {
    [
        rule(&["coordination.k8s.io"], &["leases"], &["create"]),
        json!({"verbs": ["get", "update"], "apiGroups": ["coordination.k8s.io"],
               "resources": ["leases"], "resourceNames": [name]}),
    ]
}

/// The components' ClusterRoles (the controllers' included).
pub fn cluster_roles() -> Vec<Value> {
    let mut roles = component_roles();
    roles.extend(super::controller_roles::cluster_roles());
    roles
}

fn component_roles() -> Vec<Value> {
    let read = &["get", "list", "watch"][..];
    let none = || json!({});
    let role = |name: &str, rules: Vec<Value>| cluster_role(name, none(), rules, None);
    let [lease_create, scheduler_lease] = own_lease("kube-scheduler");
    let [cm_lease_create, cm_lease] = own_lease("kube-controller-manager");
    vec![
        role("system:node", node_rules()),
        role(
            "system:node-proxier",
            vec![
                rule(&[""], &["endpoints", "services"], &["list", "watch"]),
                rule(&[""], &["nodes"], read),
                events_rule(),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["list", "watch"],
                ),
            ],
        ),
        role(
            "system:node-bootstrapper",
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
                &["create", "get", "list", "watch"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
                &["create"],
            )],
        ),
        role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
                &["create"],
            )],
        ),
        role(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            vec![signers_rule(
                "approve",
                &["kubernetes.io/kube-apiserver-client"],
            )],
        ),
        role(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            vec![signers_rule(
                "approve",
                &["kubernetes.io/kube-apiserver-client-kubelet"],
            )],
        ),
        role(
            "system:certificates.k8s.io:kubelet-serving-approver",
            vec![signers_rule("approve", &["kubernetes.io/kubelet-serving"])],
        ),
        role(
            "system:certificates.k8s.io:legacy-unknown-approver",
            vec![signers_rule("approve", &["kubernetes.io/legacy-unknown"])],
        ),
        role(
            "system:kube-scheduler",
            vec![
                events_rule(),
                lease_create,
                scheduler_lease,
                rule(&[""], &["nodes"], read),
                rule(&[""], &["pods"], &["delete", "get", "list", "watch"]),
                rule(&[""], &["bindings", "pods/binding"], &["create"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&[""], &["replicationcontrollers", "services"], read),
                rule(&["apps", "extensions"], &["replicasets"], read),
                rule(&["apps"], &["statefulsets"], read),
                rule(&["policy"], &["poddisruptionbudgets"], read),
                rule(
                    &[""],
                    &["persistentvolumeclaims", "persistentvolumes"],
                    read,
                ),
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
                rule(&["storage.k8s.io"], &["csinodes"], read),
                rule(&[""], &["namespaces"], read),
                rule(&["storage.k8s.io"], &["csidrivers"], read),
                rule(&["storage.k8s.io"], &["csistoragecapacities"], read),
            ],
        ),
        role(
            "system:volume-scheduler",
            vec![
                rule(
                    &[""],
                    &["persistentvolumes"],
                    &["get", "list", "patch", "update", "watch"],
                ),
                rule(&["storage.k8s.io"], &["storageclasses"], read),
                rule(
                    &[""],
                    &["persistentvolumeclaims"],
                    &["get", "list", "patch", "update", "watch"],
                ),
            ],
        ),
        role(
            "system:kube-controller-manager",
            vec![
                events_rule(),
                cm_lease_create,
                cm_lease,
                rule(&[""], &["secrets", "serviceaccounts"], &["create"]),
                rule(&[""], &["secrets"], &["delete"]),
                rule(
                    &[""],
                    &["configmaps", "namespaces", "secrets", "serviceaccounts"],
                    &["get"],
                ),
                rule(&[""], &["secrets", "serviceaccounts"], &["update"]),
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
                rule(&["*"], &["*"], &["list", "watch"]),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
            ],
        ),
        role(
            "system:kube-dns",
            vec![rule(&[""], &["endpoints", "services"], &["list", "watch"])],
        ),
        role(
            "system:auth-delegator",
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        role(
            "system:kubelet-api-admin",
            vec![
                rule(&[""], &["nodes"], read),
                rule(&[""], &["nodes"], &["proxy"]),
                rule(
                    &[""],
                    &["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"],
                    &["*"],
                ),
            ],
        ),
        role(
            "system:monitoring",
            vec![url_rule(
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/metrics/slis",
                    "/readyz",
                    "/readyz/*",
                ],
                &["get"],
            )],
        ),
        role(
            "system:service-account-issuer-discovery",
            vec![url_rule(
                &["/.well-known/openid-configuration", "/openid/v1/jwks"],
                &["get"],
            )],
        ),
        role(
            "system:node-problem-detector",
            vec![
                rule(&[""], &["nodes"], &["get"]),
                rule(&[""], &["nodes/status"], &["patch"]),
                events_rule(),
            ],
        ),
        role(
            "system:persistent-volume-provisioner",
            vec![
                rule(
                    &[""],
                    &["persistentvolumes"],
                    &["create", "delete", "get", "list", "watch"],
                ),
                rule(
                    &[""],
                    &["persistentvolumeclaims"],
                    &["get", "list", "update", "watch"],
                ),
                rule(&["storage.k8s.io"], &["storageclasses"], read),
                rule(&[""], &["events"], &["watch"]),
                events_rule(),
            ],
        ),
        // CoreDNS's role, as its manifests define it.
        role(
            "system:coredns",
            vec![
                rule(
                    &[""],
                    &["endpoints", "services", "pods", "namespaces"],
                    &["list", "watch"],
                ),
                rule(
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                    &["list", "watch"],
                ),
            ],
        ),
        // Skiff's own: what its agents need beyond upstream's roles.
        role(
            "skiff:certificatesigningrequests:kubeproxyclient",
            vec![rule(
                &["certificates.k8s.io"],
                &["certificatesigningrequests/kubeproxyclient"],
                &["create"],
            )],
        ),
        role(
            "skiff:network-policy",
            vec![
                rule(&["networking.k8s.io"], &["networkpolicies"], read),
                rule(&[""], &["pods", "namespaces"], read),
            ],
        ),
    ]
}

fn subject(kind: &str, name: &str) -> Value {
    match kind {
        "ServiceAccount" => {
            let (namespace, name) = name.split_once('/').unwrap_or(("default", name));
            json!({"kind": kind, "name": name, "namespace": namespace})
        }
        _ => json!({"kind": kind, "apiGroup": "rbac.authorization.k8s.io", "name": name}),
    }
}

/// A binding's subject: (kind, name), a service account's name as `namespace/name`.
type Subject = (&'static str, &'static str);

/// The components' ClusterRoleBindings (the controllers' included).
pub fn cluster_role_bindings() -> Vec<Value> {
    let mut bindings = component_bindings();
    bindings.extend(super::controller_roles::cluster_role_bindings());
    bindings
}

/// (binding name, role, subjects).
fn component_bindings() -> Vec<Value> {
    let bindings: &[(&str, &str, &[Subject])] = &[
        ("system:node", "system:node", &[]),
        (
            "system:node-proxier",
            "system:node-proxier",
            &[("User", "system:kube-proxy")],
        ),
        (
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        (
            "system:volume-scheduler",
            "system:volume-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        (
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        (
            "system:kube-dns",
            "system:kube-dns",
            &[("ServiceAccount", "kube-system/kube-dns")],
        ),
        (
            "system:coredns",
            "system:coredns",
            &[("User", "system:coredns")],
        ),
        (
            "system:monitoring",
            "system:monitoring",
            &[("Group", "system:monitoring")],
        ),
        (
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            &[("Group", "system:serviceaccounts")],
        ),
        (
            "skiff:kubelet-bootstrap",
            "system:node-bootstrapper",
            &[("Group", NODE_TOKEN_GROUP)],
        ),
        (
            "skiff:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[("Group", NODE_TOKEN_GROUP)],
        ),
        (
            "skiff:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[("Group", "system:nodes")],
        ),
        (
            "skiff:kube-proxy-autoapprove-bootstrap",
            "skiff:certificatesigningrequests:kubeproxyclient",
            &[("Group", NODE_TOKEN_GROUP)],
        ),
        (
            "skiff:network-policy",
            "skiff:network-policy",
            &[("User", "system:kube-proxy")],
        ),
    ];
    bindings
        .iter()
        .map(|(name, role, subjects)| {
            let subjects: Vec<Value> = subjects.iter().map(|(k, n)| subject(k, n)).collect();
            super::bootstrap::cluster_role_binding_for(name, role, subjects)
        })
        .collect()
}
