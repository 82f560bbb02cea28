//! Strategic merge patch with the real kubectl 1.37: client-side `kubectl apply`, whose
//! patches carry `$setElementOrder` and `$patch: delete`, and `kubectl patch
//! --type=strategic` on lists merged by key (containers by `name`, their ports by
//! `containerPort`, their env by `name`).

use serde_json::Value;
use skiff_e2e::{shared, Server};

/// A Deployment named `web` whose pod template has `containers`, given as YAML list items.
fn deployment(ns: &str, tier: &str, containers: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web, tier: {tier}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
{containers}"#
    )
}

fn container(name: &str, env: &str) -> String {
    format!("      - name: {name}\n        image: nginx\n        env: [{env}]\n")
}

fn template_spec(s: &Server, ns: &str) -> Value {
    let object = s.json(&["deployment/web", "-n", ns]);
    object["spec"]["template"]["spec"].clone()
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| match &item[key] {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn container_named<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec["containers"]
        .as_array()
        .and_then(|items| items.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {spec}"))
}

#[test]
fn client_side_apply_inserts_in_the_files_order() {
    let s = shared();
    let ns = s.namespace("smp-apply");
    let first = deployment(
        &ns,
        "v1",
        &[
            container("a", r#"{name: X, value: "1"}, {name: "Y", value: "2"}"#),
            container("c", ""),
        ]
        .concat(),
    );
    let out = s.ok_with_input(&["apply", "-f", "-"], &first);
    assert_eq!(out.trim(), "deployment.apps/web created");

    // A container inserted between the two, an env var removed, a label changed.
    let second = deployment(
        &ns,
        "v2",
        &[
            container("a", r#"{name: X, value: "1"}"#),
            container("b", ""),
            container("c", ""),
        ]
        .concat(),
    );
    let out = s.ok_with_input(&["apply", "-f", "-"], &second);
    assert_eq!(out.trim(), "deployment.apps/web configured");
    let object = s.json(&["deployment/web", "-n", &ns]);
    assert_eq!(object["metadata"]["labels"]["tier"], "v2");
    let spec = &object["spec"]["template"]["spec"];
    assert_eq!(names(&spec["containers"], "name"), ["a", "b", "c"]);
    assert_eq!(names(&container_named(spec, "a")["env"], "name"), ["X"]);

    // Reordering alone is sent as `$setElementOrder` with no list: the order follows.
    let third = deployment(
        &ns,
        "v2",
        &[
            container("c", ""),
            container("a", r#"{name: X, value: "1"}"#),
            container("b", ""),
        ]
        .concat(),
    );
    s.ok_with_input(&["apply", "-f", "-"], &third);
    let spec = template_spec(s, &ns);
    assert_eq!(names(&spec["containers"], "name"), ["c", "a", "b"]);
}

#[test]
fn strategic_patches_merge_lists_by_key() {
    let s = shared();
    let ns = s.namespace("smp-patch");
    let created = deployment(
        &ns,
        "v1",
        &[
            "      - name: a\n        image: nginx\n        ports: [{containerPort: 80}]\n        env: [{name: X, value: \"1\"}]\n",
            &container("b", ""),
            &container("c", ""),
        ]
        .concat(),
    );
    s.ok_with_input(&["create", "-f", "-"], &created);
    let patch = |body: &str| {
        s.ok(&[
            "patch",
            "deployment/web",
            "-n",
            &ns,
            "--type=strategic",
            "-p",
            body,
        ])
    };

    // Containers by name: one added, one changed, one deleted. The patch's items come in
    // its order, the untouched `b` after the `a` it followed.
    patch(
        r#"{"spec":{"template":{"spec":{"containers":[
            {"name":"d","image":"busybox"},
            {"name":"a","image":"nginx:1.27"},
            {"name":"c","$patch":"delete"}]}}}}"#,
    );
    let spec = template_spec(s, &ns);
    assert_eq!(names(&spec["containers"], "name"), ["d", "a", "b"]);
    let a = container_named(&spec, "a");
    assert_eq!(a["image"], "nginx:1.27");
    // Fields the patch does not name are kept.
    assert_eq!(names(&a["env"], "name"), ["X"]);
    assert_eq!(names(&a["ports"], "containerPort"), ["80"]);
    assert_eq!(container_named(&spec, "b")["image"], "nginx");

    // Ports by containerPort: a new one, and a name on the existing one.
    patch(
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"a","ports":[
            {"containerPort":8080,"name":"alt"},{"containerPort":80,"name":"http"}]}]}}}}"#,
    );
    let spec = template_spec(s, &ns);
    let ports = &container_named(&spec, "a")["ports"];
    assert_eq!(names(ports, "containerPort"), ["8080", "80"]);
    assert_eq!(names(ports, "name"), ["alt", "http"]);
    assert_eq!(ports[1]["protocol"], "TCP");
    patch(
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"a","ports":[
            {"containerPort":8080,"$patch":"delete"}]}]}}}}"#,
    );
    let spec = template_spec(s, &ns);
    let ports = &container_named(&spec, "a")["ports"];
    assert_eq!(names(ports, "containerPort"), ["80"]);
    assert_eq!(ports[0]["name"], "http");

    // Env by name: a new var first, the existing one changed; then one deleted, and one
    // added where `$setElementOrder` puts it.
    patch(
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"a","env":[
            {"name":"Y","value":"2"},{"name":"X","value":"10"}]}]}}}}"#,
    );
    let spec = template_spec(s, &ns);
    let env = &container_named(&spec, "a")["env"];
    assert_eq!(names(env, "name"), ["Y", "X"]);
    assert_eq!(names(env, "value"), ["2", "10"]);
    patch(
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"a",
            "$setElementOrder/env":[{"name":"X"},{"name":"Z"}],
            "env":[{"name":"Y","$patch":"delete"},{"name":"Z","value":"3"}]}]}}}}"#,
    );
    let spec = template_spec(s, &ns);
    let env = &container_named(&spec, "a")["env"];
    assert_eq!(names(env, "name"), ["X", "Z"]);
    assert_eq!(names(env, "value"), ["10", "3"]);

    // Merging a list item by directive is refused, as upstream refuses it.
    let refused = s.fails(&[
        "patch",
        "deployment/web",
        "-n",
        &ns,
        "--type=strategic",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"a","$patch":"merge"}]}}}}"#,
    ]);
    assert!(
        refused.contains("merging lists cannot yet be specified in the patch"),
        "{refused}"
    );
    assert_eq!(
        names(&template_spec(s, &ns)["containers"], "name"),
        ["d", "a", "b"]
    );
}
