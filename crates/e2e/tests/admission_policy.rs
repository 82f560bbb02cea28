//! ValidatingAdmissionPolicy with CEL, driven by the real kubectl: upstream's conformance
//! steps (a policy against a Deployment's replicas, variables) and what the issue asks
//! (a labelled Deployment refused), with Warn bindings, parameters and bad expressions.

use skiff_e2e::{shared, Server};

fn labelled_namespace(server: &Server, prefix: &str) -> String {
    let ns = server.namespace(prefix);
    server.ok(&["label", "namespace", &ns, &format!("{ns}=true")]);
    ns
}

/// A policy on Deployments in namespaces labelled `<ns>=true`, with `body` (YAML under
/// `spec`, indented two spaces), and its binding with `actions` (and `binding_extra`).
fn policy_and_binding(
    ns: &str,
    name: &str,
    body: &str,
    actions: &str,
    binding_extra: &str,
) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata:\n  name: {name}.policy.skiff.test\nspec:\n  failurePolicy: Fail\n  matchConstraints:\n    namespaceSelector:\n      matchLabels: {{{ns}: \"true\"}}\n    resourceRules:\n    - {{operations: [CREATE, UPDATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}}\n{body}---\napiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: {name}.binding.skiff.test\nspec:\n  policyName: {name}.policy.skiff.test\n  validationActions: [{actions}]\n  matchResources:\n    namespaceSelector:\n      matchLabels: {{{ns}: \"true\"}}\n{binding_extra}"
    )
}

fn deployment(name: &str, replicas: u32, labels: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels: {{app: web{labels}}}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n"
    )
}

fn cleanup(server: &Server, name: &str) {
    server.ok(&[
        "delete",
        "validatingadmissionpolicybinding",
        &format!("{name}.binding.skiff.test"),
    ]);
    server.ok(&[
        "delete",
        "validatingadmissionpolicy",
        &format!("{name}.policy.skiff.test"),
    ]);
}

#[test]
fn a_policy_validates_deployments_with_messages_and_variables() {
    let server = shared();
    let ns = labelled_namespace(server, "vap");
    let body = "  variables:\n  - name: replicas\n    expression: object.spec.replicas\n  validations:\n  - expression: variables.replicas > 1\n    messageExpression: \"'wants replicas > 1, got ' + string(variables.replicas)\"\n  - expression: \"!has(object.metadata.labels) || !('forbidden' in object.metadata.labels)\"\n    message: labelled forbidden\n    reason: Forbidden\n";
    server.ok_with_input(
        &["create", "-f", "-"],
        &policy_and_binding(&ns, "replicas", body, "Deny", ""),
    );

    let refused = server.fails_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &deployment("single", 1, ""),
    );
    assert!(
        refused.contains("ValidatingAdmissionPolicy 'replicas.policy.skiff.test' with binding 'replicas.binding.skiff.test' denied request: wants replicas > 1, got 1"),
        "{refused}"
    );
    server.ok_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &deployment("replicated", 2, ""),
    );
    // Updates are checked too.
    let refused = server.fails(&[
        "scale",
        "deployment",
        "replicated",
        "-n",
        &ns,
        "--replicas=1",
    ]);
    assert!(refused.contains("wants replicas > 1, got 1"), "{refused}");
    // A labelled Deployment is refused, with the validation's reason.
    let refused = server.fails_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &deployment("marked", 2, ", forbidden: \"yes\""),
    );
    assert!(
        refused.contains("denied request: labelled forbidden"),
        "{refused}"
    );
    // Other kinds, and other namespaces, are not matched.
    server.ok(&[
        "create",
        "deployment",
        "elsewhere",
        "--image=busybox",
        "--replicas=1",
        "-n",
        &server.namespace("vap-other"),
    ]);
    let replica_set = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: rs\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: rs}\n  template:\n    metadata:\n      labels: {app: rs}\n    spec:\n      containers:\n      - name: c\n        image: busybox\n";
    server.ok_with_input(&["create", "-n", &ns, "-f", "-"], replica_set);
    cleanup(server, "replicas");
    server.ok_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &deployment("single", 1, ""),
    );
}

#[test]
fn warn_bindings_warn_and_parameters_come_from_the_binding() {
    let server = shared();
    let ns = labelled_namespace(server, "vap-warn");
    let body = "  validations:\n  - expression: object.spec.replicas <= 3\n";
    server.ok_with_input(
        &["create", "-f", "-"],
        &policy_and_binding(&ns, "warned", body, "Warn", ""),
    );
    let out = server.kubectl_with_input(
        &["create", "-n", &ns, "-f", "-"],
        Some(&deployment("big", 5, "")),
    );
    assert!(out.status.success(), "Warn does not refuse");
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'warned.policy.skiff.test' with binding 'warned.binding.skiff.test': failed expression: object.spec.replicas <= 3"),
        "{warning}"
    );
    cleanup(server, "warned");

    // The limit from a ConfigMap the binding names.
    server.ok(&[
        "create",
        "configmap",
        "limits",
        "-n",
        &ns,
        "--from-literal=maxReplicas=2",
    ]);
    let body = "  paramKind:\n    apiVersion: v1\n    kind: ConfigMap\n  validations:\n  - expression: object.spec.replicas <= int(params.data.maxReplicas)\n    messageExpression: \"'at most ' + params.data.maxReplicas + ' replicas'\"\n";
    let extra = format!(
        "  paramRef:\n    name: limits\n    namespace: {ns}\n    parameterNotFoundAction: Deny\n"
    );
    server.ok_with_input(
        &["create", "-f", "-"],
        &policy_and_binding(&ns, "limited", body, "Deny", &extra),
    );
    let refused = server.fails_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &deployment("three", 3, ""),
    );
    assert!(
        refused.contains("denied request: at most 2 replicas"),
        "{refused}"
    );
    server.ok_with_input(&["create", "-n", &ns, "-f", "-"], &deployment("two", 2, ""));
    cleanup(server, "limited");
}

#[test]
fn policies_and_bindings_are_validated() {
    let server = shared();
    let ns = labelled_namespace(server, "vap-bad");
    let body = "  validations:\n  - expression: object.spec.replicas >\n";
    let refused = server.fails_with_input(
        &["create", "-f", "-"],
        &policy_and_binding(&ns, "broken", body, "Deny", ""),
    );
    assert!(
        refused.contains("spec.validations[0].expression"),
        "{refused}"
    );
    assert!(refused.contains("compilation failed"), "{refused}");
    let binding = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata:\n  name: both.binding.skiff.test\nspec:\n  policyName: p\n  validationActions: [Deny, Warn]\n";
    let refused = server.fails_with_input(&["create", "-f", "-"], binding);
    assert!(
        refused.contains("must not contain both Deny and Warn"),
        "{refused}"
    );
}

/// Upstream's "ValidatingAdmissionPolicy API" and "…Binding API" steps: both kinds through
/// the lifecycle walk (create, get, list, watch, patch, replace, delete, delete a
/// collection), and the policy's `status` read, patched and replaced.
#[tokio::test]
async fn policies_and_bindings_through_the_api_verbs() {
    use serde_json::json;
    use skiff_e2e::api::Resource;
    let server = shared();
    let label = server.namespace("vap-api");
    let client = server.client().await;
    let policies = Resource::new(
        &client,
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        None,
    );
    let policy = |name: &str, labels: serde_json::Value| {
        json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "matchConstraints": {"resourceRules": [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]},
                "validations": [{"expression": "object.spec.replicas < 100"}],
            },
        })
    };
    policies.lifecycle(&format!("{label}-p"), policy).await;

    let name = format!("{label}-status");
    policies.create(policy(&name, json!({}))).await;
    let status = policies.get_status(&name).await;
    assert_eq!(status["metadata"]["name"], name.as_str());
    let condition = json!({"type": "StatusUpdated", "status": "True", "reason": "E2E", "message": "Set from an e2e test", "lastTransitionTime": "2026-01-01T00:00:00Z"});
    let patched = policies
        .patch_status(
            &name,
            kube::api::Patch::Merge(json!({"status": {"conditions": [condition]}})),
        )
        .await;
    assert_eq!(patched["status"]["conditions"][0]["type"], "StatusUpdated");
    let mut replaced = patched.clone();
    replaced["status"]["conditions"][0]["reason"] = json!("E2EReplaced");
    let replaced = policies.replace_status(replaced).await;
    assert_eq!(replaced["status"]["conditions"][0]["reason"], "E2EReplaced");
    assert_eq!(
        replaced["spec"]["validations"][0]["expression"], "object.spec.replicas < 100",
        "status writes keep the spec"
    );
    policies.delete(&name).await;

    let bindings = Resource::new(
        &client,
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        None,
    );
    bindings
        .lifecycle(&format!("{label}-b"), |name, labels| {
            json!({
                "metadata": {"name": name, "labels": labels},
                "spec": {"policyName": "absent.policy.skiff.test", "validationActions": ["Deny"]},
            })
        })
        .await;
}
