//! Validation as upstream's API server does it, seen through the real kubectl 1.37 and a
//! raw request: `422 Invalid` with `details.causes`, upstream's field paths and messages,
//! a selector that must match its template, and one that may not change.

use serde_json::{json, Value};
use skiff_e2e::{shared, Server};

/// POSTs `body` to `path` as the admin (through kube-rs, below kubectl's own checks); the
/// status code and the body.
fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let client = server.client().await;
        skiff_e2e::api::raw(&client, "POST", path, &[], Some(body.to_string())).await
    })
}

fn deployment(ns: &str, selector: &str, labels: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{matchLabels: {{{selector}}}}}
  template:
    metadata: {{labels: {{{labels}}}}}
    spec:
      containers: [{{name: nginx, image: nginx}}]
"#
    )
}

#[test]
fn kubectl_and_raw_clients_see_upstreams_validation_errors() {
    let s = shared();
    let ns = s.namespace("validation");

    // A container without a name: kubectl's words for a 422 with one cause.
    let nameless = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: x, namespace: {ns}}}\nspec:\n  containers: [{{image: busybox}}]\n"
    );
    let err = s.fails_with_input(&["create", "-f", "-"], &nameless);
    assert!(
        err.contains(r#"The Pod "x" is invalid: spec.containers[0].name: Required value"#),
        "{err}"
    );

    // The same through a raw request: the Status and its causes.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
        "spec": {"containers": [{"image": "busybox"}]}});
    let (code, status) = post(s, &format!("/api/v1/namespaces/{ns}/pods"), &pod);
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["code"], 422);
    assert_eq!(status["details"]["name"], "x");
    assert_eq!(status["details"]["kind"], "Pod");
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldValueRequired", "message": "Required value",
                "field": "spec.containers[0].name"}])
    );

    // A Deployment whose selector does not select its own pods.
    let err = s.fails_with_input(
        &["apply", "-f", "-"],
        &deployment(&ns, "app: web", "app: db"),
    );
    assert!(
        err.contains(r#"The Deployment "web" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"db"}: `selector` does not match template `labels`"#),
        "{err}"
    );

    // Once created, its selector stays.
    s.ok_with_input(
        &["apply", "-f", "-"],
        &deployment(&ns, "app: web", "app: web"),
    );
    let err = s.fails_with_input(
        &["apply", "-f", "-"],
        &deployment(&ns, "app: web2", "app: web2"),
    );
    assert!(
        err.contains(r#"spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"web2"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"#),
        "{err}"
    );
    let kept = s.json(&["deployment", "web", "-n", &ns]);
    assert_eq!(kept["spec"]["selector"]["matchLabels"]["app"], "web");

    // Two ports, neither named: each name is required.
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: two, namespace: {ns}}}\nspec:\n  ports: [{{port: 80}}, {{port: 443}}]\n"
    );
    let err = s.fails_with_input(&["create", "-f", "-"], &service);
    // kubectl lists several causes a line each.
    assert!(
        err.contains(
            "The Service \"two\" is invalid: \n* spec.ports[0].name: Required value\n* spec.ports[1].name: Required value"
        ),
        "{err}"
    );
    assert!(s
        .kubectl(&["get", "service", "two", "-n", &ns])
        .stderr
        .starts_with(b"Error from server (NotFound)"));
}

/// One kind's refusal through kubectl: the object is not created and kubectl prints
/// upstream's `field: message`.
fn refused(s: &Server, yaml: &str, expected: &str) {
    let err = s.fails_with_input(&["create", "-f", "-"], yaml);
    assert!(err.contains(expected), "expected {expected:?} in: {err}");
}

#[test]
fn kubectl_sees_upstreams_refusals_of_other_kinds() {
    let s = shared();
    let ns = s.namespace("validation-kinds");

    refused(
        s,
        &format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: r, namespace: {ns}}}\nrules:\n- apiGroups: ['']\n  resources: [pods]\n"),
        r#"The Role "r" is invalid: rules[0].verbs: Required value: verbs must contain at least one value"#,
    );
    refused(
        s,
        &format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i, namespace: {ns}}}\nspec:\n  rules:\n  - http:\n      paths:\n      - path: /\n        pathType: Sometimes\n        backend: {{service: {{name: web, port: {{number: 80}}}}}}\n"),
        r#"The Ingress "i" is invalid: spec.rules[0].http.paths[0].pathType: Unsupported value: "Sometimes": supported values: "Exact", "ImplementationSpecific", "Prefix""#,
    );
    refused(
        s,
        &format!("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: p, namespace: {ns}}}\nspec:\n  minAvailable: 1\n  maxUnavailable: 1\n  selector: {{matchLabels: {{app: web}}}}\n"),
        "minAvailable and maxUnavailable cannot be both set",
    );
    refused(
        s,
        &format!("apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: h, namespace: {ns}}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  minReplicas: 5\n  maxReplicas: 2\n"),
        r#"The HorizontalPodAutoscaler "h" is invalid: spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"#,
    );
    // The same through autoscaling/v1, stored as v2.
    refused(
        s,
        &format!("apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {{name: h1, namespace: {ns}}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  minReplicas: 5\n  maxReplicas: 2\n"),
        "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
    );
    refused(
        s,
        &format!("apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: c, namespace: {ns}}}\nspec:\n  schedule: not a schedule\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{{name: c, image: busybox}}]\n"),
        r#"The CronJob "c" is invalid: spec.schedule: Invalid value: "not a schedule": expected exactly 5 fields, found 3: [not a schedule]"#,
    );
    let err = s.fails_with_input(
        &["create", "-f", "-"],
        &format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: c, namespace: {ns}}}\nspec:\n  resources: {{requests: {{storage: 1Gi}}}}\n"),
    );
    assert!(
        err.contains(r#"The PersistentVolumeClaim "c" is invalid: spec.accessModes: Required value: at least 1 access mode is required"#),
        "{err}"
    );
    refused(
        s,
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: m, namespace: {ns}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    volumeMounts: [{{name: missing, mountPath: /data}}]\n"),
        r#"The Pod "m" is invalid: spec.containers[0].volumeMounts[0].name: Not found: "missing""#,
    );

    // Upstream's "Sysctls should reject invalid sysctls": two names that are no sysctl
    // refused, the valid ones (safe or not) not named.
    let err = s.fails_with_input(
        &["create", "-f", "-"],
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: sysctls, namespace: {ns}}}\nspec:\n  securityContext:\n    sysctls:\n    - {{name: foo-, value: bar}}\n    - {{name: kernel.shmmax, value: '100000000'}}\n    - {{name: safe-and-unsafe, value: '100000000'}}\n    - {{name: bar.., value: '42'}}\n  containers: [{{name: c, image: busybox}}]\n"),
    );
    assert!(err.contains(r#"Invalid value: "foo-""#), "{err}");
    assert!(err.contains(r#"Invalid value: "bar..""#), "{err}");
    assert!(!err.contains("safe-and-unsafe"), "{err}");
    assert!(!err.contains("kernel.shmmax"), "{err}");
    assert!(s
        .fails(&["get", "pod", "sysctls", "-n", &ns])
        .contains("not found"));

    // A binding's role reference stays what it was.
    s.ok_with_input(
        &["create", "-f", "-"],
        &format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: b, namespace: {ns}}}\nroleRef: {{kind: ClusterRole, name: view, apiGroup: rbac.authorization.k8s.io}}\nsubjects: [{{kind: User, name: alice}}]\n"),
    );
    let err = s.fails_with_input(
        &["apply", "-f", "-"],
        &format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: b, namespace: {ns}}}\nroleRef: {{kind: ClusterRole, name: edit, apiGroup: rbac.authorization.k8s.io}}\nsubjects: [{{kind: User, name: alice}}]\n"),
    );
    assert!(
        err.contains(r#"roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"ClusterRole", Name:"edit"}: cannot change roleRef"#),
        "{err}"
    );

    for (kind, name) in [
        ("role", "r"),
        ("ingress", "i"),
        ("pdb", "p"),
        ("hpa", "h"),
        ("cronjob", "c"),
        ("pvc", "c"),
        ("pod", "m"),
    ] {
        assert!(
            s.kubectl(&["get", kind, name, "-n", &ns])
                .stderr
                .starts_with(b"Error from server (NotFound)"),
            "{kind} {name} was created"
        );
    }
}
