//! `kubectl apply`, server-side and client-side, with the real kubectl 1.37 against one
//! shared API server: field ownership in `managedFields`, pruning of fields dropped from
//! the file, conflicts between managers, `--force-conflicts`, server dry runs.

use std::process::Command;

use serde_json::{json, Value};
use skiff_e2e::{shared, Server};

fn deployment(ns: &str, replicas: u32, env: &str, labels: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web{labels}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: nginx
        image: nginx
        ports: [{{containerPort: 80}}]
        env: [{env}]
"#
    )
}

fn configmap(ns: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {ns}\ndata: {{{data}}}\n"
    )
}

/// The object with its `managedFields` (kubectl hides them unless asked).
fn with_fields(s: &Server, kind: &str, ns: &str) -> Value {
    s.json(&[kind, "-n", ns, "--show-managed-fields"])
}

fn entry<'a>(object: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

#[test]
fn server_side_apply_creates_updates_and_prunes() {
    let s = shared();
    let ns = s.namespace("ssa");
    let first = deployment(
        &ns,
        2,
        r#"{name: A, value: "1"}, {name: B, value: "2"}"#,
        ", tier: web",
    );
    let out = s.ok_with_input(&["apply", "--server-side", "-f", "-"], &first);
    assert_eq!(out.trim(), "deployment.apps/web serverside-applied");

    let object = with_fields(s, "deployment/web", &ns);
    assert_eq!(object["spec"]["replicas"], 2);
    // Defaults are filled in, and owned by nobody.
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
    let applied = entry(&object, "kubectl", "Apply").expect("kubectl's Apply entry");
    assert_eq!(applied["apiVersion"], "apps/v1");
    assert_eq!(applied["fieldsType"], "FieldsV1");
    assert!(applied["time"].is_string());
    assert_eq!(
        applied["fieldsV1"],
        json!({
            "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                        ".": {},
                        "f:env": {
                            "k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}},
                            "k:{\"name\":\"B\"}": {".": {}, "f:name": {}, "f:value": {}},
                        },
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {},
                        }},
                    }}},
                },
            },
        })
    );
    // Without --show-managed-fields kubectl hides them, as it does against upstream.
    let plain = s.ok(&["get", "deployment/web", "-n", &ns, "-o", "yaml"]);
    assert!(!plain.contains("managedFields"));
    let shown = s.ok(&[
        "get",
        "deployment/web",
        "-n",
        &ns,
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(
        shown.contains("manager: kubectl\n    operation: Apply"),
        "{shown}"
    );

    // An env var and a label dropped from the file go from the object.
    let second = deployment(&ns, 3, r#"{name: A, value: "1"}"#, "");
    s.ok_with_input(&["apply", "--server-side", "-f", "-"], &second);
    let object = s.json(&["deployment/web", "-n", &ns]);
    assert_eq!(object["spec"]["replicas"], 3);
    assert_eq!(
        object["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}])
    );
    assert_eq!(object["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(object["metadata"]["generation"], 2);

    // A server dry run changes nothing.
    let third = deployment(&ns, 9, r#"{name: A, value: "1"}"#, "");
    let out = s.ok_with_input(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        &third,
    );
    assert!(out.contains("serverside-applied (server dry run)"), "{out}");
    assert_eq!(
        s.json(&["deployment/web", "-n", &ns])["spec"]["replicas"],
        3
    );
    // Nor does one that would create.
    s.ok_with_input(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        &configmap(&ns, "a: '1'"),
    );
    let err = s.fails(&["get", "configmap/settings", "-n", &ns]);
    assert!(err.contains(r#"configmaps "settings" not found"#), "{err}");
}

#[test]
fn conflicts_between_managers_and_forcing() {
    let s = shared();
    let ns = s.namespace("ssa-conflict");
    let file = deployment(&ns, 2, r#"{name: A, value: "1"}"#, "");
    s.ok_with_input(&["apply", "--server-side", "-f", "-"], &file);

    // kubectl scale takes spec.replicas through the scale subresource.
    s.ok(&["scale", "deployment/web", "-n", &ns, "--replicas=5"]);
    let object = with_fields(s, "deployment/web", &ns);
    let scaler = object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subresource"] == "scale")
        .expect("the scale entry");
    assert_eq!(scaler["operation"], "Update");
    assert_eq!(scaler["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    let applied = entry(&object, "kubectl", "Apply").unwrap();
    assert!(applied["fieldsV1"]["f:spec"].get("f:replicas").is_none());

    // Re-applying the file's replicas conflicts.
    let err = s.fails_with_input(&["apply", "--server-side", "-f", "-"], &file);
    assert!(
        err.contains(r#"error: Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas"#),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "{err}");
    assert_eq!(
        s.json(&["deployment/web", "-n", &ns])["spec"]["replicas"],
        5
    );

    // Forced, the file wins and the scaler, left with nothing, is dropped.
    s.ok_with_input(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &file,
    );
    let object = with_fields(s, "deployment/web", &ns);
    assert_eq!(object["spec"]["replicas"], 2);
    let managers: Vec<&Value> = object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["manager"])
        .collect();
    assert_eq!(managers, [&json!("kubectl")]);

    // Two appliers: the second one's different value conflicts with the first.
    s.ok_with_input(
        &["apply", "--server-side", "-f", "-"],
        &configmap(&ns, "a: '1', b: '2'"),
    );
    let err = s.fails_with_input(
        &["apply", "--server-side", "--field-manager=other", "-f", "-"],
        &configmap(&ns, "a: '9'"),
    );
    assert!(
        err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl": .data.a"#),
        "{err}"
    );
    // The same value is shared ownership, no conflict.
    s.ok_with_input(
        &["apply", "--server-side", "--field-manager=other", "-f", "-"],
        &configmap(&ns, "a: '1'"),
    );
    // The first applier drops `a`: the other manager still owns it, so it stays; `b`
    // is nobody's any more and goes.
    s.ok_with_input(
        &["apply", "--server-side", "-f", "-"],
        &configmap(&ns, "c: '3'"),
    );
    assert_eq!(
        s.json(&["configmap/settings", "-n", &ns])["data"],
        json!({"a": "1", "c": "3"})
    );
}

/// The exact `409` body an apply conflict returns, through the official Python client.
#[test]
fn conflict_status_body() {
    let s = shared();
    let ns = s.namespace("ssa-body");
    s.ok_with_input(
        &["apply", "--server-side", "-f", "-"],
        &configmap(&ns, "a: '1'"),
    );
    let script = r#"
import json, os
from kubernetes import client, config
config.load_kube_config()
api = client.CoreV1Api()
body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "2"}}
try:
    api.patch_namespaced_config_map("settings", os.environ["NS"], body, field_manager="other",
                                    _content_type="application/apply-patch+yaml")
    print("no conflict")
except client.exceptions.ApiException as e:
    print(e.status)
    print(e.body if isinstance(e.body, str) else e.body.decode())
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .env("KUBECONFIG", s.kubeconfig())
        .env("NS", &ns)
        .output()
        .expect("python3 on PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, body) = stdout.split_once('\n').unwrap();
    assert_eq!(code, "409");
    assert_eq!(
        body.trim_end(),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Apply failed with 1 conflict: conflict with \"kubectl\": .data.a","reason":"Conflict","details":{"causes":[{"reason":"FieldManagerConflict","message":"conflict with \"kubectl\"","field":".data.a"}]},"code":409}"#
    );
}

#[test]
fn client_side_apply_still_removes_dropped_fields() {
    let s = shared();
    let ns = s.namespace("csa");
    let out = s.ok_with_input(&["apply", "-f", "-"], &configmap(&ns, "a: '1', b: '2'"));
    assert_eq!(out.trim(), "configmap/settings created");
    s.ok_with_input(&["apply", "-f", "-"], &configmap(&ns, "a: '1'"));
    let object = with_fields(s, "configmap/settings", &ns);
    assert_eq!(object["data"], json!({"a": "1"}));
    assert!(
        object["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    let csa = entry(&object, "kubectl-client-side-apply", "Update").expect("CSA entry");
    assert_eq!(
        csa["fieldsV1"],
        json!({
            "f:data": {".": {}, "f:a": {}},
            "f:metadata": {"f:annotations": {
                ".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {},
            }},
        })
    );
    // Edits by other commands move the fields they change to their own entries.
    s.ok(&["label", "configmap/settings", "-n", &ns, "tier=web"]);
    let object = with_fields(s, "configmap/settings", &ns);
    let label = object["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["fieldsV1"]["f:metadata"].get("f:labels").is_some())
        .expect("an entry for the label");
    assert_eq!(label["operation"], "Update");
    assert_eq!(
        label["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}})
    );
}

#[test]
fn creates_record_their_manager() {
    let s = shared();
    let ns = s.namespace("mf");
    s.ok(&["create", "deployment", "d", "--image=nginx", "-n", &ns]);
    let object = with_fields(s, "deployment/d", &ns);
    let created = entry(&object, "kubectl-create", "Update").expect("kubectl-create's entry");
    assert_eq!(created["apiVersion"], "apps/v1");
    let spec = &created["fieldsV1"]["f:spec"];
    assert_eq!(spec["f:selector"], json!({}));
    assert_eq!(spec["f:strategy"]["f:rollingUpdate"]["."], json!({}));
    assert_eq!(
        spec["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]["f:imagePullPolicy"],
        json!({})
    );
    assert!(created["fieldsV1"]["f:metadata"]["f:labels"]
        .get(".")
        .is_some());

    // A manager name past upstream's 128 bytes is refused, and nothing is created.
    let long = format!("--field-manager={}", "m".repeat(129));
    let err = s.fails(&["create", "configmap", "long", "-n", &ns, &long]);
    assert!(
        err.contains(r#"CreateOptions.meta.k8s.io "" is invalid: fieldManager: Too long: may not be more than 128 bytes"#),
        "{err}"
    );
    s.fails(&["get", "configmap/long", "-n", &ns]);
}

/// Upstream's conformance test "Kubectl, server-side dry-run Pod": a patch sent with
/// `--dry-run=server` answers as if applied and changes nothing.
#[test]
fn server_side_dry_run_of_a_pod() {
    let s = shared();
    let ns = s.namespace("dry-run");
    let pod = "e2e-test-httpd-pod";
    s.ok(&[
        "run",
        pod,
        "-n",
        &ns,
        "--image=registry.k8s.io/e2e-test-images/httpd:2.4.38-4",
        "--pod-running-timeout=2m0s",
        &format!("--labels=run={pod}"),
    ]);
    let image = r#"{"spec":{"containers":[{"name": "e2e-test-httpd-pod","image": "registry.k8s.io/e2e-test-images/busybox:1.36.1-1"}]}}"#;
    let out = s.ok(&[
        "patch",
        "pod",
        pod,
        "-n",
        &ns,
        "-p",
        image,
        "--dry-run=server",
    ]);
    assert_eq!(out.trim(), format!("pod/{pod} patched"));
    let stored = s.json(&["pod", pod, "-n", &ns]);
    assert_eq!(
        stored["spec"]["containers"][0]["image"],
        "registry.k8s.io/e2e-test-images/httpd:2.4.38-4"
    );
    // The dry run recorded no manager either.
    let fields = with_fields(s, &format!("pod/{pod}"), &ns);
    let managers: Vec<&Value> = fields["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["manager"])
        .collect();
    assert_eq!(managers, [&json!("kubectl-run")]);
    s.ok(&["delete", "pods", pod, "-n", &ns]);
}

/// Moving from `kubectl apply` to `kubectl apply --server-side`, as upstream supports it.
#[test]
fn server_side_apply_takes_over_from_client_side_apply() {
    let s = shared();
    let ns = s.namespace("csa-to-ssa");
    s.ok_with_input(&["apply", "-f", "-"], &configmap(&ns, "a: '1', b: '2'"));
    // A changed value the client-side apply set is no conflict for kubectl.
    s.ok_with_input(
        &["apply", "--server-side", "-f", "-"],
        &configmap(&ns, "a: '9', b: '2'"),
    );
    let object = with_fields(s, "configmap/settings", &ns);
    assert_eq!(object["data"], json!({"a": "9", "b": "2"}));
    let annotation = object["metadata"]["annotations"]
        ["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .unwrap();
    let last: Value = serde_json::from_str(annotation).unwrap();
    assert_eq!(last["data"], json!({"a": "9", "b": "2"}));
    assert!(entry(&object, "kubectl", "Apply").is_some());
    // Another manager's change is a conflict for it all the same.
    let err = s.fails_with_input(
        &["apply", "--server-side", "--field-manager=other", "-f", "-"],
        &configmap(&ns, "a: '7'"),
    );
    assert!(err.contains(r#"conflict with "kubectl": .data.a"#), "{err}");
}

/// An apply through the status subresource owns the status only, in its own entry.
#[test]
fn server_side_apply_of_the_status() {
    let s = shared();
    let ns = s.namespace("ssa-status");
    s.ok_with_input(
        &["apply", "--server-side", "-f", "-"],
        &deployment(&ns, 2, r#"{name: A, value: "1"}"#, ""),
    );
    let status = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec: {{replicas: 99}}\nstatus: {{replicas: 7, observedGeneration: 1}}\n"
    );
    s.ok_with_input(
        &[
            "apply",
            "--server-side",
            "--subresource=status",
            "--field-manager=status-writer",
            "-f",
            "-",
        ],
        &status,
    );
    let object = with_fields(s, "deployment/web", &ns);
    assert_eq!(object["spec"]["replicas"], 2);
    assert_eq!(object["status"]["replicas"], 7);
    let entry = entry(&object, "status-writer", "Apply").expect("the status applier's entry");
    assert_eq!(entry["subresource"], "status");
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:status": {"f:observedGeneration": {}, "f:replicas": {}}})
    );
}

/// The Rust ecosystem's client: kube's `Patch::Apply`, forced, and on metadata alone.
#[tokio::test]
async fn kube_rs_server_side_apply() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, ObjectMeta, Patch, PatchParams};
    use kube::core::PartialObjectMetaExt;
    use kube::ResourceExt;

    let s = shared();
    let ns = s.namespace("kube-ssa");
    let client = s.client().await;
    let maps: Api<ConfigMap> = Api::namespaced(client, &ns);
    let config = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "rs"},
        "data": {"mode": "fast"},
    });
    let params = PatchParams::apply("operator");
    let created = maps
        .patch("rs", &params, &Patch::Apply(&config))
        .await
        .expect("apply creates");
    assert_eq!(created.data.unwrap()["mode"], "fast");
    let entry = &created.metadata.managed_fields.unwrap()[0];
    assert_eq!(entry.manager.as_deref(), Some("operator"));
    assert_eq!(entry.operation.as_deref(), Some("Apply"));

    // Another applier changing the value conflicts, then forces.
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rs"}, "data": {"mode": "slow"}});
    let err = maps
        .patch("rs", &PatchParams::apply("rival"), &Patch::Apply(&other))
        .await
        .expect_err("a conflict");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409);
            assert_eq!(
                status.message,
                r#"Apply failed with 1 conflict: conflict with "operator": .data.mode"#
            );
        }
        other => panic!("expected a 409, got {other}"),
    }
    let forced = maps
        .patch(
            "rs",
            &PatchParams::apply("rival").force(),
            &Patch::Apply(&other),
        )
        .await
        .expect("forced apply");
    assert_eq!(forced.data.unwrap()["mode"], "slow");
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|e| e.manager)
        .collect();
    assert_eq!(managers, ["rival"]);

    // Metadata alone, as kube's `patch_metadata` sends it.
    let labels = ObjectMeta {
        labels: Some([("team".to_string(), "a".to_string())].into()),
        ..Default::default()
    }
    .into_request_partial::<ConfigMap>();
    let meta = maps
        .patch_metadata(
            "rs",
            &PatchParams::apply("labeller"),
            &Patch::Apply(&labels),
        )
        .await
        .expect("metadata apply");
    assert_eq!(meta.labels()["team"], "a");
}

/// A Secret's write-only `stringData` lands in `data`, on create and on every apply.
#[test]
fn secret_string_data_through_apply() {
    let s = shared();
    let ns = s.namespace("ssa-secret");
    let secret = |password: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: sec, namespace: {ns}}}\nstringData: {{password: {password}}}\n")
    };
    for password in ["hunter2", "hunter3"] {
        s.ok_with_input(&["apply", "--server-side", "-f", "-"], &secret(password));
        let stored = s.json(&["secret/sec", "-n", &ns]);
        assert!(stored.get("stringData").is_none());
        let encoded = stored["data"]["password"].as_str().unwrap();
        let decoded = s.ok(&[
            "get",
            "secret/sec",
            "-n",
            &ns,
            "-o",
            "go-template={{.data.password | base64decode}}",
        ]);
        assert_eq!(decoded, password, "{encoded}");
    }
}

/// `kubectl diff` (a server-side dry run of the apply it would make), both kinds of apply.
#[test]
fn kubectl_diff_shows_the_change_and_changes_nothing() {
    let s = shared();
    let ns = s.namespace("diff");
    s.ok_with_input(&["apply", "-f", "-"], &configmap(&ns, "a: '1'"));
    for args in [
        &["diff", "-f", "-"][..],
        &["diff", "--server-side", "-f", "-"][..],
    ] {
        let out = s.kubectl_with_input(args, Some(&configmap(&ns, "a: '2'")));
        // kubectl diff exits 1 when there are differences.
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let diff = String::from_utf8_lossy(&out.stdout);
        assert!(diff.contains("-  a: \"1\"\n+  a: \"2\""), "{diff}");
        assert_eq!(s.json(&["configmap/settings", "-n", &ns])["data"]["a"], "1");
    }
    let same = s.kubectl_with_input(&["diff", "-f", "-"], Some(&configmap(&ns, "a: '1'")));
    assert_eq!(same.status.code(), Some(0), "{same:?}");

    // Upstream's "Kubectl, diff Deployment": a new image is the difference found.
    let web = deployment(&ns, 1, "", "");
    s.ok_with_input(&["apply", "-f", "-"], &web);
    let newer = web.replace("image: nginx", "image: nginx:1.27");
    let out = s.kubectl_with_input(&["diff", "-f", "-"], Some(&newer));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("-        image: nginx\n") && diff.contains("+        image: nginx:1.27\n"),
        "{diff}"
    );
    let stored = s.json(&["deployment/web", "-n", &ns]);
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx"
    );
}
