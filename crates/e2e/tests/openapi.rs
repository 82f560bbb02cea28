//! The OpenAPI documents as kubectl 1.37 uses them, against one shared API server:
//! `kubectl explain` (OpenAPI v3, and v2 with `--output plaintext-openapiv2`) for every
//! served resource, and client-side `kubectl apply`, which computes its strategic merge
//! patch from the v3 schema's patch extensions once it finds the kind there.

use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::{eventually, shared};

#[test]
fn explain_prints_kinds_and_fields_with_their_types() {
    let s = shared();
    let pod = s.ok(&["explain", "pod"]);
    assert!(
        pod.starts_with("KIND:       Pod\nVERSION:    v1\n\n"),
        "{pod}"
    );
    assert!(
        pod.contains("DESCRIPTION:\n    Pod is a collection of containers that can run on a host."),
        "{pod}"
    );
    for field in [
        "  apiVersion\t<string>\n",
        "  metadata\t<ObjectMeta>\n",
        "  spec\t<PodSpec>\n",
        "  status\t<PodStatus>\n",
    ] {
        assert!(pod.contains(field), "{field:?} in {pod}");
    }

    let containers = s.ok(&["explain", "pod.spec.containers"]);
    assert!(
        containers.contains("FIELD: containers <[]Container>\n"),
        "{containers}"
    );
    // The field's own description, then its type's.
    assert!(
        containers.contains("    List of containers belonging to the pod.")
            && containers
                .contains("    A single application container that you want to run within a pod."),
        "{containers}"
    );
    for field in [
        "  name\t<string> -required-\n",
        "  image\t<string>\n",
        "  ports\t<[]ContainerPort>\n",
        "  resources\t<ResourceRequirements>\n",
    ] {
        assert!(containers.contains(field), "{field:?} in {containers}");
    }

    let port = s.ok(&["explain", "svc.spec.ports.port"]);
    assert_eq!(
        port,
        "KIND:       Service\nVERSION:    v1\n\nFIELD: port <integer>\n\n\n\
         DESCRIPTION:\n    The port that will be exposed by this service.\n    \n\n"
    );
    let target_port = s.ok(&["explain", "svc.spec.ports.targetPort"]);
    assert!(
        target_port.contains("FIELD: targetPort <IntOrString>\n"),
        "{target_port}"
    );

    let strategy = s.ok(&[
        "explain",
        "--api-version=apps/v1",
        "deployments.spec.strategy",
    ]);
    assert!(
        strategy.starts_with(
            "GROUP:      apps\nKIND:       Deployment\nVERSION:    v1\n\nFIELD: strategy <DeploymentStrategy>\n"
        ),
        "{strategy}"
    );
    assert!(
        strategy.contains("  rollingUpdate\t<RollingUpdateDeployment>\n")
            && strategy.contains("  type\t<string>\n"),
        "{strategy}"
    );
}

#[test]
fn explain_recursive_walks_the_whole_kind() {
    let s = shared();
    let out = s.ok(&["explain", "deployment", "--recursive"]);
    assert!(
        out.starts_with("GROUP:      apps\nKIND:       Deployment\n"),
        "{out}"
    );
    for line in [
        "\n  spec\t<DeploymentSpec> -required-\n",
        "\n    selector\t<LabelSelector> -required-\n",
        "\n    template\t<PodTemplateSpec> -required-\n",
        "\n        containers\t<[]Container> -required-\n",
        "\n          image\t<string>\n",
        "\n          ports\t<[]ContainerPort>\n",
        "\n            containerPort\t<integer> -required-\n",
        "\n    strategy\t<DeploymentStrategy>\n",
        "\n      rollingUpdate\t<RollingUpdateDeployment>\n",
    ] {
        assert!(out.contains(line), "{line:?} in recursive output");
    }
    // Recursive output names fields only.
    assert!(!out.contains("List of containers belonging to the pod"));
}

/// Every resource discovery lists can be explained, in its group's preferred version:
/// kubectl explain fails for a kind the documents miss, and client-side apply would fall
/// back to its built-in types for it.
#[test]
fn explain_covers_every_served_resource() {
    let s = shared();
    let groups: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/apis"])).unwrap();
    let preferred = |group: &str| -> String {
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == group)
            .and_then(|g| g["preferredVersion"]["groupVersion"].as_str())
            .unwrap_or_else(|| panic!("group {group} in /apis"))
            .to_string()
    };
    let resources = s.ok(&["api-resources", "-o", "name"]);
    let mut failures = Vec::new();
    for name in resources.lines() {
        let (resource, api_version) = match name.split_once('.') {
            Some((resource, group)) => (resource, preferred(group)),
            None => (name, "v1".to_string()),
        };
        let flag = format!("--api-version={api_version}");
        let out = s.kubectl(&["explain", resource, &flag]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("FIELDS:") {
            failures.push(format!(
                "{name}: {}{stdout}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(resources.lines().count() > 50, "{resources}");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn explain_from_the_v2_document() {
    let s = shared();
    let out = s.ok(&[
        "explain",
        "pod.spec.containers.ports",
        "--output",
        "plaintext-openapiv2",
    ]);
    assert!(out.starts_with("KIND:     Pod\nVERSION:  v1\n"), "{out}");
    assert!(out.contains("RESOURCE: ports <[]Object>"), "{out}");
    assert!(
        out.contains("   containerPort\t<integer> -required-\n"),
        "{out}"
    );
}

#[test]
fn documents_in_json() {
    let s = shared();
    let v2: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/openapi/v2"])).unwrap();
    assert_eq!(v2["swagger"], "2.0");
    let pod = &v2["definitions"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(
        pod["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "Pod", "version": "v1"}])
    );
    assert_eq!(
        pod["properties"]["spec"]["$ref"],
        "#/definitions/io.k8s.api.core.v1.PodSpec"
    );

    let index: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/openapi/v3"])).unwrap();
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
    let apps: Value = serde_json::from_str(&s.ok(&["get", "--raw", url])).unwrap();
    let containers =
        &apps["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    // An outdated hash is sent on to the current document.
    let stale: Value =
        serde_json::from_str(&s.ok(&["get", "--raw", "/openapi/v3/apis/apps/v1?hash=0123"]))
            .unwrap();
    assert_eq!(stale, apps);
}

fn two_containers(ns: &str, image: &str, with_command: bool, strategy: &str) -> String {
    let command = if with_command {
        "\n        command: [sleep, \"3600\"]"
    } else {
        ""
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  strategy: {strategy}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: app
        image: {image}{command}
        env: [{{name: MODE, value: fast}}]
        ports: [{{containerPort: 80}}]
      - name: sidecar
        image: busybox
"#
    )
}

/// Client-side apply finds the Deployment in `/openapi/v3/apis/apps/v1` and merges the
/// containers by name (`x-kubernetes-patch-merge-key`): changing one container and
/// dropping a field from it leaves the other alone; switching the strategy to `Recreate`
/// drops `rollingUpdate` (`retainKeys`).
#[test]
fn client_side_apply_patches_from_the_v3_schema() {
    let s = shared();
    let ns = s.namespace("openapi-apply");
    let first = two_containers(
        &ns,
        "nginx:1",
        true,
        "{type: RollingUpdate, rollingUpdate: {maxSurge: 2}}",
    );
    let out = s.ok_with_input(&["apply", "-f", "-"], &first);
    assert_eq!(out.trim(), "deployment.apps/web created");

    let second = two_containers(&ns, "nginx:2", false, "{type: Recreate}");
    let out = s.kubectl_with_input(&["apply", "-f", "-", "-v=6"], Some(&second));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deployment.apps/web configured"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The patch came from the v3 document: kubectl read it and did not fall back.
    assert!(
        stderr.contains("/openapi/v3/apis/apps/v1?hash="),
        "{stderr}"
    );
    assert!(
        !stderr.contains("does not support strategic merge patch"),
        "{stderr}"
    );
    assert!(!stderr.contains("error calculating patch"), "{stderr}");

    let object = s.json(&["deployment/web", "-n", &ns]);
    let containers = object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "sidecar"]);
    assert_eq!(containers[0]["image"], "nginx:2");
    assert!(containers[0].get("command").is_none(), "{}", containers[0]);
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "MODE", "value": "fast"}])
    );
    assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
    assert_eq!(containers[1]["image"], "busybox");
    assert_eq!(object["spec"]["strategy"], json!({"type": "Recreate"}));

    // Applying the same file again changes nothing.
    let out = s.ok_with_input(&["apply", "-f", "-"], &second);
    assert_eq!(out.trim(), "deployment.apps/web unchanged");
}

/// A volume's source is replaced, not merged, when the file changes it, even one the file
/// never set (`x-kubernetes-patch-strategy: merge,retainKeys` on `volumes`: kubectl names
/// the keys to keep), and a Service's ports merge by port.
#[test]
fn client_side_apply_retains_keys_of_volumes_and_merges_ports() {
    let s = shared();
    let ns = s.namespace("openapi-volumes");
    let pod_template = |volume: &str| {
        format!(
            r#"apiVersion: v1
kind: PodTemplate
metadata: {{name: t, namespace: {ns}}}
template:
  spec:
    containers:
    - name: app
      image: busybox
      volumeMounts: [{{name: data, mountPath: /data}}]
    volumes:
    - name: data
      {volume}
"#
        )
    };
    // Created without apply's record of the file: only `$retainKeys` can tell the
    // server that `emptyDir` goes.
    s.ok_with_input(&["create", "-f", "-"], &pod_template("emptyDir: {}"));
    let out = s.kubectl_with_input(
        &["apply", "-f", "-", "-v=8"],
        Some(&pod_template("configMap: {name: settings}")),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(r#"\"$retainKeys\":[\"configMap\",\"name\"]"#),
        "{stderr}"
    );
    let object = s.json(&["podtemplate/t", "-n", &ns]);
    let volume = &object["template"]["spec"]["volumes"][0];
    assert_eq!(volume["name"], "data");
    assert_eq!(volume["configMap"]["name"], "settings");
    assert!(volume.get("emptyDir").is_none(), "{volume}");

    let service = |ports: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  selector: {{app: web}}\n  ports: [{ports}]\n"
        )
    };
    s.ok_with_input(
        &["apply", "-f", "-"],
        &service("{name: http, port: 80}, {name: https, port: 443}"),
    );
    s.ok_with_input(
        &["apply", "-f", "-"],
        &service("{name: http, port: 80, targetPort: 8080}, {name: https, port: 443}"),
    );
    let object = s.json(&["service/web", "-n", &ns]);
    let ports = object["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert_eq!(ports[0]["targetPort"], 8080);
    assert_eq!(ports[1]["port"], 443);
}

/// `metadata.finalizers` is a set that patches merge into (`x-kubernetes-patch-strategy:
/// merge`): a client-side apply that changes its own finalizers keeps one that another
/// client added.
#[test]
fn client_side_apply_merges_finalizers() {
    let s = shared();
    let ns = s.namespace("openapi-finalizers");
    let config = |finalizer: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: {ns}, finalizers: [{finalizer}]}}\ndata: {{k: v}}\n"
        )
    };
    s.ok_with_input(&["apply", "-f", "-"], &config("example.com/a"));
    s.ok(&[
        "patch",
        "configmap/c",
        "-n",
        &ns,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/other"}]"#,
    ]);
    s.ok_with_input(&["apply", "-f", "-"], &config("example.com/b"));
    // kubectl's patch names `b` in `$setElementOrder`; the server's own `other` is not in
    // the patch, and `b` was not in the list before, so upstream's merge of the two
    // orders puts the patch's item first.
    let object = s.json(&["configmap/c", "-n", &ns]);
    assert_eq!(
        object["metadata"]["finalizers"],
        json!(["example.com/b", "example.com/other"])
    );
    s.ok(&[
        "patch",
        "configmap/c",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
}

/// A custom resource's schema joins its group-version's document once its CRD is
/// established: `kubectl explain` shows its fields, and client-side apply (which finds no
/// strategic merge patch offered for it) patches it with merge patches.
#[test]
fn custom_resources_are_explained_and_applied() {
    let s = shared();
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.openapi.example.com}
spec:
  group: openapi.example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the gadget should be.
            required: [size]
            properties:
              size: {type: integer, description: How big the gadget is.}
              tags: {type: array, items: {type: string}}
"#;
    s.ok_with_input(&["apply", "-f", "-"], crd);
    let out = eventually(
        "the gadget schema in /openapi/v3",
        Duration::from_secs(30),
        || {
            let out = s.kubectl(&["explain", "gadgets.spec"]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    assert!(
        out.starts_with("GROUP:      openapi.example.com\nKIND:       Gadget\nVERSION:    v1\n"),
        "{out}"
    );
    assert!(out.contains("FIELD: spec <Object>\n"), "{out}");
    assert!(out.contains("    What the gadget should be.\n"), "{out}");
    assert!(
        out.contains("  size\t<integer> -required-\n    How big the gadget is.\n"),
        "{out}"
    );
    let root = s.ok(&["explain", "gadgets"]);
    assert!(root.contains("  metadata\t<ObjectMeta>\n"), "{root}");

    let ns = s.namespace("openapi-cr");
    let gadget = |size: u32, tags: &str| {
        format!(
            "apiVersion: openapi.example.com/v1\nkind: Gadget\nmetadata: {{name: g, namespace: {ns}}}\nspec: {{size: {size}, tags: [{tags}]}}\n"
        )
    };
    s.ok_with_input(&["apply", "-f", "-"], &gadget(1, "a, b"));
    let out = s.kubectl_with_input(&["apply", "-f", "-", "-v=6"], Some(&gadget(2, "b")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("error calculating patch"), "{stderr}");
    let object = s.json(&["gadget/g", "-n", &ns]);
    assert_eq!(object["spec"], json!({"size": 2, "tags": ["b"]}));
}

/// The list metadata every built-in definition publishes (and the server merges by) is
/// upstream's v1.37, property by property: `scripts/compare-list-metadata.py` reads
/// upstream's schemas from the `kubernetes-validate` package that `scripts/setup` installs.
#[test]
fn published_list_metadata_is_upstreams() {
    let s = shared();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/compare-list-metadata.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .env("KUBECONFIG", s.kubeconfig())
        .output()
        .expect("python3");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = report.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("0 properties differ"),
        "list metadata differs from upstream's:\n{report}"
    );
    let annotated: usize = summary
        .split("annotates ")
        .nth(1)
        .and_then(|n| n.trim_end_matches(')').parse().ok())
        .unwrap_or(0);
    assert!(annotated > 300, "compared too little: {summary}");
}
