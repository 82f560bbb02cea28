//! Admission policies with CEL, driven by the real kubectl and kube-rs.
//!
//! ValidatingAdmissionPolicy: upstream's conformance steps (a policy against a
//! Deployment's replicas, variables) and what the issue asks (a labelled Deployment
//! refused), with Warn bindings, parameters and bad expressions.
//!
//! MutatingAdmissionPolicy: upstream's conformance steps (a Deployment's replicas and
//! annotations set by apply configurations, both kinds through the API verbs), JSON
//! patches with variables, parameters and match conditions, failures and validation.

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

/// A MutatingAdmissionPolicy on Deployments of namespaces labelled `<ns>=true` with the
/// mutations `mutations` (YAML list items under `mutations:`, indented four spaces) and
/// `extra` (more of its spec), and its binding to those namespaces with `binding_extra`,
/// as upstream's test builds them.
fn mutating_policy_and_binding(
    ns: &str,
    name: &str,
    mutations: &str,
    extra: &str,
    binding_extra: &str,
) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicy\nmetadata:\n  name: {name}.policy.skiff.test\nspec:\n  reinvocationPolicy: Never\n  matchConstraints:\n    namespaceSelector:\n      matchLabels: {{{ns}: \"true\"}}\n    resourceRules:\n    - {{operations: [CREATE, UPDATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}}\n  mutations:\n{mutations}{extra}---\napiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicyBinding\nmetadata:\n  name: {name}.binding.skiff.test\nspec:\n  policyName: {name}.policy.skiff.test\n  matchResources:\n    namespaceSelector:\n      matchLabels: {{{ns}: \"true\"}}\n{binding_extra}"
    )
}

fn apply_configuration(expression: &str) -> String {
    format!("  - patchType: ApplyConfiguration\n    applyConfiguration:\n      expression: '{expression}'\n")
}

fn remove_mutating(server: &Server, name: &str) {
    server.ok(&[
        "delete",
        "mutatingadmissionpolicybinding",
        &format!("{name}.binding.skiff.test"),
    ]);
    server.ok(&[
        "delete",
        "mutatingadmissionpolicy",
        &format!("{name}.policy.skiff.test"),
    ]);
}

/// Upstream's "waiting until the marker is mutated": creates (and deletes) the marker
/// Deployment until the created object passes `mutated`, as a policy takes effect once
/// the server has seen it.
fn until_marker_mutated(server: &Server, ns: &str, mutated: impl Fn(&serde_json::Value) -> bool) {
    let marker = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: marker-deployment\n  labels: {app: nginx}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: nginx}\n  template:\n    metadata:\n      labels: {app: nginx}\n    spec:\n      containers:\n      - name: nginx\n        image: nginx:latest\n";
    skiff_e2e::eventually(
        "the marker mutated",
        std::time::Duration::from_secs(30),
        || {
            let created =
                server.ok_with_input(&["create", "-n", ns, "-o", "json", "-f", "-"], marker);
            server.ok(&[
                "delete",
                "deployment",
                "marker-deployment",
                "-n",
                ns,
                "--wait=false",
            ]);
            let created: serde_json::Value = serde_json::from_str(&created).ok()?;
            mutated(&created).then_some(())
        },
    );
}

/// Upstream's "MutatingAdmissionPolicy should mutate a Deployment": `replicas` set by an
/// apply configuration.
#[test]
fn a_mutating_policy_mutates_a_deployment() {
    let server = shared();
    let ns = labelled_namespace(server, "map-replicas");
    server.ok_with_input(
        &["create", "-f", "-"],
        &mutating_policy_and_binding(
            &ns,
            "replicas",
            &apply_configuration("Object{spec: Object.spec{replicas: 1337}}"),
            "",
            "",
        ),
    );
    until_marker_mutated(server, &ns, |d| d["spec"]["replicas"] == 1337);
    // kubectl shows upstream's columns.
    for (resource, header, row) in [
        (
            "mutatingadmissionpolicy/replicas.policy.skiff.test",
            ["NAME", "MUTATIONS", "PARAMKIND", "AGE"],
            ["replicas.policy.skiff.test", "1", "<unset>"],
        ),
        (
            "mutatingadmissionpolicybinding/replicas.binding.skiff.test",
            ["NAME", "POLICYNAME", "PARAMREF", "AGE"],
            [
                "replicas.binding.skiff.test",
                "replicas.policy.skiff.test",
                "<unset>",
            ],
        ),
    ] {
        let table = server.ok(&["get", resource]);
        let columns: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(columns[0], header, "{table}");
        assert_eq!(columns[1][..3], row, "{table}");
    }
    remove_mutating(server, "replicas");
}

/// Upstream's "MutatingAdmissionPolicy should mutate a Deployment with annotations".
#[test]
fn a_mutating_policy_mutates_a_deployment_with_annotations() {
    let server = shared();
    let ns = labelled_namespace(server, "map-annotations");
    let expression =
        "Object{metadata: Object.metadata{annotations: {\"mutated-by\": \"admission-policy\"}}}";
    server.ok_with_input(
        &["create", "-f", "-"],
        &mutating_policy_and_binding(&ns, "annotations", &apply_configuration(expression), "", ""),
    );
    until_marker_mutated(server, &ns, |d| {
        d["metadata"]["annotations"]["mutated-by"] == "admission-policy"
    });
    // Other namespaces are not matched; updates are mutated too.
    let elsewhere = server.namespace("map-other");
    server.ok(&[
        "create",
        "deployment",
        "plain",
        "--image=busybox",
        "-n",
        &elsewhere,
    ]);
    let annotations = server.ok(&[
        "get",
        "deployment",
        "plain",
        "-n",
        &elsewhere,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(!annotations.contains("mutated-by"), "{annotations}");
    server.ok_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &deployment("kept", 1, ""),
    );
    server.ok(&["annotate", "deployment", "kept", "-n", &ns, "mutated-by-"]);
    let annotation = server.ok(&[
        "get",
        "deployment",
        "kept",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.annotations.mutated-by}",
    ]);
    assert_eq!(annotation, "admission-policy", "the update is mutated back");
    remove_mutating(server, "annotations");
}

/// JSON patches with variables, parameters and match conditions; a mutation that fails
/// fails the request with upstream's message unless the policy ignores failures.
#[test]
fn json_patches_parameters_conditions_and_failures() {
    let server = shared();
    let ns = labelled_namespace(server, "map-json");
    server.ok(&[
        "create",
        "configmap",
        "team",
        "-n",
        &ns,
        "--from-literal=name=web",
    ]);
    let mutations = "  - patchType: JSONPatch\n    jsonPatch:\n      expression: '[JSONPatch{op: \"add\", path: \"/metadata/labels/\" + jsonpatch.escapeKey(\"team.skiff.test/name\"), value: params.data.name}, JSONPatch{op: \"replace\", path: \"/spec/replicas\", value: variables.doubled}]'\n";
    let extra = "  paramKind: {apiVersion: v1, kind: ConfigMap}\n  variables:\n  - name: doubled\n    expression: object.spec.replicas * 2\n  matchConditions:\n  - name: not-skipped\n    expression: '!has(object.metadata.labels) || !(\"skip\" in object.metadata.labels)'\n";
    let binding_extra = format!(
        "  paramRef:\n    name: team\n    namespace: {ns}\n    parameterNotFoundAction: Deny\n"
    );
    server.ok_with_input(
        &["create", "-f", "-"],
        &mutating_policy_and_binding(&ns, "json", mutations, extra, &binding_extra),
    );
    skiff_e2e::eventually(
        "the JSON patch applied",
        std::time::Duration::from_secs(30),
        || {
            let created = server.ok_with_input(
                &["create", "-n", &ns, "-o", "json", "-f", "-"],
                &deployment("patched", 3, ""),
            );
            server.ok(&["delete", "deployment", "patched", "-n", &ns, "--wait=false"]);
            let created: serde_json::Value = serde_json::from_str(&created).ok()?;
            (created["spec"]["replicas"] == 6).then_some(created)
        },
    );
    let created = server.ok_with_input(
        &["create", "-n", &ns, "-o", "json", "-f", "-"],
        &deployment("labelled", 2, ""),
    );
    let created: serde_json::Value = serde_json::from_str(&created).expect("JSON");
    assert_eq!(created["metadata"]["labels"]["team.skiff.test/name"], "web");
    assert_eq!(created["spec"]["replicas"], 4);
    let skipped = server.ok_with_input(
        &[
            "create",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.replicas}",
            "-f",
            "-",
        ],
        &deployment("skipped", 2, ", skip: \"yes\""),
    );
    assert_eq!(skipped, "2", "the match condition leaves it alone");
    remove_mutating(server, "json");

    // Setting an atomic struct is refused, and the refusal is the request's answer.
    let atomic = apply_configuration(
        "Object{spec: Object.spec{selector: Object.spec.selector{matchLabels: {\"app\": \"db\"}}}}",
    );
    server.ok_with_input(
        &["create", "-f", "-"],
        &mutating_policy_and_binding(&ns, "atomic", &atomic, "", ""),
    );
    let refused = skiff_e2e::eventually(
        "the atomic mutation refused",
        std::time::Duration::from_secs(30),
        || {
            let out = server.kubectl_with_input(
                &["create", "-n", &ns, "-f", "-"],
                Some(&deployment("atomic", 1, "")),
            );
            if out.status.success() {
                server.ok(&["delete", "deployment", "atomic", "-n", &ns]);
                return None;
            }
            Some(String::from_utf8_lossy(&out.stderr).into_owned())
        },
    );
    assert!(
        refused.contains("policy 'atomic.policy.skiff.test' with binding 'atomic.binding.skiff.test' denied request: error applying patch: invalid ApplyConfiguration: may not mutate atomic arrays, maps or structs: .spec.selector"),
        "{refused}"
    );
    // Ignored when the policy says so.
    server.ok(&[
        "patch",
        "mutatingadmissionpolicy",
        "atomic.policy.skiff.test",
        "--type=merge",
        "-p",
        "{\"spec\":{\"failurePolicy\":\"Ignore\"}}",
    ]);
    skiff_e2e::eventually(
        "the failure ignored",
        std::time::Duration::from_secs(30),
        || {
            let out = server.kubectl_with_input(
                &["create", "-n", &ns, "-f", "-"],
                Some(&deployment("ignored", 1, "")),
            );
            out.status.success().then_some(())
        },
    );
    remove_mutating(server, "atomic");
}

#[test]
fn mutating_policies_and_bindings_are_validated() {
    let server = shared();
    let policy = "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicy\nmetadata:\n  name: bad.policy.skiff.test\nspec:\n  matchConstraints:\n    resourceRules:\n    - {operations: [DELETE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}\n  mutations:\n  - patchType: ApplyConfiguration\n    applyConfiguration:\n      expression: 'Object{spec: '\n";
    let refused = server.fails_with_input(&["create", "-f", "-"], policy);
    for expected in [
        "spec.matchConstraints.resourceRules.operations: Unsupported value: \"DELETE\"",
        "spec.mutations[0].applyConfiguration.expression: Invalid value",
        "spec.reinvocationPolicy: Required value",
    ] {
        assert!(refused.contains(expected), "{expected}: {refused}");
    }
    // Their schema is published: kubectl explains it.
    let explained = server.ok(&["explain", "mutatingadmissionpolicy.spec.mutations"]);
    assert!(explained.contains("patchType"), "{explained}");
    let binding = "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingAdmissionPolicyBinding\nmetadata:\n  name: bad.binding.skiff.test\nspec:\n  paramRef: {name: p}\n";
    let refused = server.fails_with_input(&["create", "-f", "-"], binding);
    assert!(
        refused.contains("spec.policyName: Required value"),
        "{refused}"
    );
    assert!(
        refused.contains("spec.paramRef.parameterNotFoundAction: Required value"),
        "{refused}"
    );
}

/// Upstream's "MutatingAdmissionPolicy API" and "MutatingAdmissionPolicyBinding API"
/// steps, one kind at a time: discovery, three objects created from one template
/// (`generateName`), get, list by label, a watch from the list, a merge patch and an
/// update (of an annotation and the spec), the watch seeing the patch, a delete, a
/// delete of the collection.
async fn upstream_api_steps(
    client: &kube::Client,
    kind: &str,
    plural: &str,
    spec: serde_json::Value,
    patched_spec: serde_json::Value,
    updated_spec: serde_json::Value,
) {
    use serde_json::json;
    use skiff_e2e::api::{raw, Resource};
    let serves_v1 = |group: &serde_json::Value| {
        group["versions"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["version"] == "v1"))
    };
    let (code, groups) = raw(client, "GET", "/apis", &[], None).await;
    assert_eq!(code, 200);
    let listed = groups["groups"].as_array().and_then(|g| {
        g.iter()
            .find(|g| g["name"] == "admissionregistration.k8s.io")
    });
    assert!(listed.is_some_and(serves_v1), "{groups}");
    let path = "/apis/admissionregistration.k8s.io";
    let (_, group) = raw(client, "GET", path, &[], None).await;
    assert!(serves_v1(&group), "{group}");
    let (_, resources) = raw(client, "GET", &format!("{path}/v1"), &[], None).await;
    let names = resources["resources"].as_array();
    assert!(
        names.is_some_and(|r| r.iter().any(|r| r["name"] == plural)),
        "{resources}"
    );

    let objects = Resource::new(
        client,
        "admissionregistration.k8s.io/v1",
        kind,
        plural,
        None,
    );
    let label_value = format!("{}", skiff_e2e::free_port());
    let label = format!("example-e2e-{plural}-label={label_value}");
    let template = json!({
        "metadata": {"generateName": "e2e-example-", "labels": {format!("example-e2e-{plural}-label"): label_value}},
        "spec": spec,
    });
    // As upstream's test sends it (client-go's protobuf), then as JSON.
    let mut typed = template.clone();
    typed["apiVersion"] = json!("admissionregistration.k8s.io/v1");
    typed["kind"] = json!(kind);
    let body = skiff_protobuf::encode(&typed).expect("a protobuf body");
    let protobuf = "application/vnd.kubernetes.protobuf";
    let collection = format!("/apis/admissionregistration.k8s.io/v1/{plural}");
    let (code, answer) = skiff_e2e::api::raw_bytes(
        client,
        "POST",
        &collection,
        &[("Content-Type", protobuf), ("Accept", protobuf)],
        Some(body),
    )
    .await;
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&answer));
    let answer = skiff_protobuf::decode(&answer).expect("a protobuf answer");
    assert_eq!(
        answer["spec"],
        objects
            .get(answer["metadata"]["name"].as_str().unwrap_or_default())
            .await["spec"]
    );
    objects.create(template.clone()).await;
    let created = objects.create(template).await;
    let name = created["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let read = objects.get(&name).await;
    assert_eq!(read["metadata"]["uid"], created["metadata"]["uid"]);
    let rv = |o: &serde_json::Value| -> u64 {
        o["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(rv(&read) > 0, "a valid resourceVersion: {read}");

    let (listed, list_rv) = objects.list(&label).await;
    assert_eq!(listed.len(), 3);
    let mut watch = objects.watch(&label, &list_rv).await;

    let patched = objects
        .merge(
            &name,
            json!({"metadata": {"annotations": {"patched": "true"}}, "spec": patched_spec}),
        )
        .await;
    assert_eq!(patched["metadata"]["annotations"]["patched"], "true");
    assert!(
        skiff_e2e::api::contains(&patched["spec"], &patched_spec),
        "{patched}"
    );
    assert!(
        rv(&patched) > rv(&read),
        "the patch moves the resourceVersion"
    );

    let mut current = objects.get(&name).await;
    current["metadata"]["annotations"]["updated"] = json!("true");
    for (field, value) in updated_spec.as_object().into_iter().flatten() {
        current["spec"][field] = value.clone();
    }
    let updated = objects.replace(current).await;
    assert_eq!(updated["metadata"]["annotations"]["updated"], "true");
    assert!(
        skiff_e2e::api::contains(&updated["spec"], &updated_spec),
        "{updated}"
    );

    let events = watch
        .next_events(
            1,
            |_, o| o["metadata"]["annotations"]["patched"] == "true",
            std::time::Duration::from_secs(30),
        )
        .await;
    assert_eq!(events[0].0, "MODIFIED");

    objects.delete(&name).await;
    assert!(objects.is_gone(&name).await, "{name} deleted");
    assert_eq!(objects.list(&label).await.0.len(), 2);
    objects.delete_collection(&label).await;
    assert!(objects.list(&label).await.0.is_empty());
}

#[tokio::test]
async fn mutating_policies_and_bindings_through_upstreams_api_steps() {
    use serde_json::json;
    let server = shared();
    let client = server.client().await;
    upstream_api_steps(
        &client,
        "MutatingAdmissionPolicy",
        "mutatingadmissionpolicies",
        json!({
            "reinvocationPolicy": "Never",
            "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": "Object{spec: Object.spec{replicas: 100}}"}}],
            "matchConstraints": {"resourceRules": [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]},
        }),
        json!({"reinvocationPolicy": "IfNeeded"}),
        json!({"reinvocationPolicy": "Never"}),
    )
    .await;
    upstream_api_steps(
        &client,
        "MutatingAdmissionPolicyBinding",
        "mutatingadmissionpolicybindings",
        json!({"policyName": "replicalimit-policy.example.com"}),
        json!({"policyName": "new-policy.example.com"}),
        json!({"policyName": "replicalimit-policy.example.com"}),
    )
    .await;
}

/// Reinvocation: a policy with `reinvocationPolicy: IfNeeded` runs again when a later one
/// changed the object, and sees the change; with `Never` it does not.
#[test]
fn if_needed_policies_run_again_after_a_later_change() {
    let server = shared();
    let ns = labelled_namespace(server, "map-reinvoke");
    let seen = apply_configuration(
        "Object{metadata: Object.metadata{annotations: {\"seen-team\": \"team\" in object.metadata.labels ? object.metadata.labels[\"team\"] : \"none\"}}}",
    );
    let labels =
        apply_configuration("Object{metadata: Object.metadata{labels: {\"team\": \"web\"}}}");
    for (name, mutations) in [("reinvoke-a", &seen), ("reinvoke-b", &labels)] {
        server.ok_with_input(
            &["create", "-f", "-"],
            &mutating_policy_and_binding(&ns, name, mutations, "", ""),
        );
    }
    let seen_team = |name: &str| {
        let created = server.ok_with_input(
            &["create", "-n", &ns, "-o", "json", "-f", "-"],
            &deployment(name, 1, ""),
        );
        let created: serde_json::Value = serde_json::from_str(&created).expect("JSON");
        (
            created["metadata"]["labels"]["team"]
                .as_str()
                .map(String::from),
            created["metadata"]["annotations"]["seen-team"]
                .as_str()
                .map(String::from),
        )
    };
    // The first policy runs before the second labels the object, and only once.
    skiff_e2e::eventually("both policies", std::time::Duration::from_secs(30), || {
        let (team, seen) = seen_team(&format!("never-{}", skiff_e2e::free_port()));
        (team.as_deref() == Some("web") && seen.as_deref() == Some("none")).then_some(())
    });
    server.ok(&[
        "patch",
        "mutatingadmissionpolicy",
        "reinvoke-a.policy.skiff.test",
        "--type=merge",
        "-p",
        "{\"spec\":{\"reinvocationPolicy\":\"IfNeeded\"}}",
    ]);
    skiff_e2e::eventually(
        "the first policy reinvoked",
        std::time::Duration::from_secs(30),
        || {
            let (_, seen) = seen_team(&format!("if-needed-{}", skiff_e2e::free_port()));
            (seen.as_deref() == Some("web")).then_some(())
        },
    );
    remove_mutating(server, "reinvoke-a");
    remove_mutating(server, "reinvoke-b");
}
