//! Validation as upstream's API server does it, seen through the real kubectl 1.37 and a
//! raw request: `422 Invalid` with `details.causes`, upstream's field paths and messages,
//! a selector that must match its template, and one that may not change.

use std::process::Command;

use serde_json::{json, Value};
use skiff_e2e::{shared, Server};

/// POSTs `body` to `path` with the admin's certificate; the status code and the body.
fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let tls = server.data_dir.path().join("tls");
    let out = Command::new("curl")
        .args(["-sS", "-X", "POST", "-H", "Content-Type: application/json"])
        .args(["-w", "\n%{http_code}", "--data-binary"])
        .arg(body.to_string())
        .arg("--cacert")
        .arg(tls.join("ca.crt"))
        .arg("--cert")
        .arg(tls.join("admin.crt"))
        .arg("--key")
        .arg(tls.join("admin.key"))
        .arg(format!("https://127.0.0.1:{}{path}", server.port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text
        .rsplit_once('\n')
        .expect("a status code after the body");
    (
        code.trim().parse().expect("an HTTP status code"),
        serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {text}")),
    )
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
