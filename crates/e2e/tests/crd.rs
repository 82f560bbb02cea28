//! CustomResourceDefinitions with the real kubectl 1.37, against one shared control plane
//! (API server, controller manager: namespace deletion and garbage collection act on
//! custom objects too): a CRD applied and established, its objects created, listed with
//! the printer columns, validated, defaulted and pruned against its schema, patched,
//! scaled, watched, and deleted with their namespace or with the CRD. Each test has a
//! group of its own. The official Python client drives custom objects too
//! (`python/test_custom_objects.py`).

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{eventually, Server};

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start_control_plane(&[]))
}

/// The names of a test's widgets: tests run side by side, and kubectl resolves a
/// plural, short name or kind across groups, so each test's are its own
/// (`crud.example.com` → `crudwidgets`, `crudwd`, `CrudWidget`).
struct Names {
    plural: String,
    short: String,
    /// The category the widgets are in (`kubectl get <category>` lists them).
    category: String,
    kind: String,
    /// The CRD's name, `<plural>.<group>`.
    crd: String,
}

fn names(group: &str) -> Names {
    let prefix = group.split('.').next().unwrap_or(group);
    let mut kind = prefix.to_string();
    if let Some(first) = kind.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    Names {
        plural: format!("{prefix}widgets"),
        short: format!("{prefix}wd"),
        category: format!("{prefix}gadgets"),
        kind: format!("{kind}Widget"),
        crd: format!("{prefix}widgets.{group}"),
    }
}

/// A widget CRD in `group`: a schema with a required, bounded `size`, an enum
/// `color` defaulting to red, `replicas` behind the scale subresource, printer columns.
fn widget_crd(group: &str, scope: &str) -> String {
    let Names {
        plural,
        short,
        category,
        kind,
        crd,
    } = names(group);
    let singular = plural.trim_end_matches('s');
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {crd}
spec:
  group: {group}
  scope: {scope}
  names:
    plural: {plural}
    singular: {singular}
    kind: {kind}
    shortNames: [{short}]
    categories: [{category}]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {{}}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    selectableFields:
    - {{jsonPath: .spec.color}}
    additionalPrinterColumns:
    - {{name: Size, type: integer, jsonPath: .spec.size}}
    - {{name: Color, type: string, jsonPath: .spec.color}}
    - {{name: Age, type: date, jsonPath: .metadata.creationTimestamp}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            x-kubernetes-validations:
            - rule: "!has(self.replicas) || self.replicas <= self.size * 2"
              message: replicas must be at most twice the size
            properties:
              size: {{type: integer, minimum: 1, maximum: 10}}
              color: {{type: string, enum: [red, green], default: red}}
              name:
                type: string
                pattern: '^[a-z]+$'
                x-kubernetes-validations:
                - {{rule: self == oldSelf, message: name is immutable}}
              replicas: {{type: integer}}
              listeners:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {{type: string}}
                    port: {{type: integer}}
              extra:
                type: object
                x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            properties:
              replicas: {{type: integer}}
              selector: {{type: string}}
"#
    )
}

fn widget(group: &str, name: &str, spec: &str) -> String {
    let kind = names(group).kind;
    format!("apiVersion: {group}/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec: {spec}\n")
}

/// Applies a CRD and waits, as users do, for it to be established; returns its names.
fn establish(s: &Server, crd: &str, group: &str) -> Names {
    let names = names(group);
    let name = &names.crd;
    s.ok_with_input(&["apply", "-f", "-"], crd);
    s.ok(&[
        "wait",
        "--for",
        "condition=established",
        &format!("crd/{name}"),
        "--timeout=30s",
    ]);
    names
}

fn stderr_of(s: &Server, args: &[&str], input: &str) -> String {
    s.fails_with_input(args, input)
}

#[test]
fn crd_status_names_and_discovery() {
    let s = server();
    let group = "disc.example.com";
    let n = establish(s, &widget_crd(group, "Namespaced"), group);
    let crd = s.json(&["crd", &n.crd]);
    let conditions = crd["status"]["conditions"].as_array().expect("conditions");
    let condition = |kind: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap_or_else(|| panic!("{kind} condition in {conditions:?}"))
    };
    assert_eq!(condition("NamesAccepted")["status"], "True");
    assert_eq!(condition("NamesAccepted")["reason"], "NoConflicts");
    assert_eq!(condition("Established")["status"], "True");
    assert_eq!(condition("Established")["reason"], "InitialNamesAccepted");
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "DiscWidget");
    assert_eq!(crd["status"]["acceptedNames"]["listKind"], "DiscWidgetList");
    assert_eq!(crd["status"]["storedVersions"], serde_json::json!(["v1"]));
    assert_eq!(crd["spec"]["conversion"]["strategy"], "None");

    let resources = s.ok(&["api-resources", "--api-group", group]);
    let line = resources
        .lines()
        .find(|l| l.starts_with("discwidgets"))
        .unwrap_or_else(|| panic!("widgets in api-resources:\n{resources}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        fields,
        [
            "discwidgets",
            "discwd",
            &format!("{group}/v1"),
            "true",
            "DiscWidget"
        ]
    );
    let list: Value = serde_json::from_str(&s.ok(&["get", "--raw", &format!("/apis/{group}/v1")]))
        .expect("resource list");
    let names: Vec<&str> = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["discwidgets", "discwidgets/status", "discwidgets/scale"]
    );
}

#[test]
fn invalid_crds_are_refused_with_upstreams_messages() {
    let s = server();
    let bad_name = widget_crd("bad.example.com", "Namespaced").replace(
        "name: badwidgets.bad.example.com",
        "name: badwidget.bad.example.com",
    );
    let err = stderr_of(s, &["create", "-f", "-"], &bad_name);
    assert!(
        err.contains(r#"metadata.name: Invalid value: "badwidget.bad.example.com": must be spec.names.plural+"."+spec.group"#),
        "{err}"
    );
    let two_storage = widget_crd("bad.example.com", "Namespaced").replace(
        "  versions:\n  - name: v1\n    served: true\n    storage: true\n",
        "  versions:\n  - name: v2\n    served: true\n    storage: true\n    schema: {openAPIV3Schema: {type: object}}\n  - name: v1\n    served: true\n    storage: true\n",
    );
    let err = stderr_of(s, &["create", "-f", "-"], &two_storage);
    assert!(
        err.contains("must have exactly one version marked as storage version"),
        "{err}"
    );
    let bad_scope = widget_crd("bad.example.com", "Somewhere");
    let err = stderr_of(s, &["create", "-f", "-"], &bad_scope);
    assert!(
        err.contains(r#"spec.scope: Unsupported value: "Somewhere": supported values: "Cluster", "Namespaced""#),
        "{err}"
    );
    let untyped = widget_crd("bad.example.com", "Namespaced").replace(
        "              replicas: {type: integer}\n",
        "              replicas: {minimum: 1}\n",
    );
    let err = stderr_of(s, &["create", "-f", "-"], &untyped);
    assert!(
        err.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[replicas].type: Required value: must not be empty for specified object fields"),
        "{err}"
    );
}

#[test]
fn custom_objects_are_validated_defaulted_pruned_and_patched() {
    let s = server();
    let group = "crud.example.com";
    let n = establish(s, &widget_crd(group, "Namespaced"), group);
    let ns = s.namespace("crud");

    // Right after `wait`, kubectl finds the new type (its discovery cache refreshes).
    s.ok_with_input(
        &["apply", "-n", &ns, "-f", "-"],
        &widget(group, "w1", "{size: 3, extra: {free: [1, 2]}}"),
    );
    let w1 = s.json(&[&n.plural, "w1", "-n", &ns]);
    assert_eq!(w1["apiVersion"], format!("{group}/v1"));
    assert_eq!(w1["kind"], "CrudWidget");
    assert_eq!(w1["spec"]["color"], "red", "defaulted: {w1}");
    assert_eq!(w1["spec"]["extra"]["free"], serde_json::json!([1, 2]));
    assert_eq!(w1["metadata"]["generation"], 1);

    // Unknown fields: kubectl asks for strict validation by default ...
    let err = stderr_of(
        s,
        &["apply", "-n", &ns, "-f", "-"],
        &widget(group, "w2", "{size: 2, bogus: true}"),
    );
    assert!(
        err.contains(r#"CrudWidget in version "v1" cannot be handled as a CrudWidget: strict decoding error: unknown field "spec.bogus""#),
        "{err}"
    );
    // ... warns with --validate=warn, and the field is pruned either way.
    let out = s.kubectl_with_input(
        &["apply", "--validate=warn", "-n", &ns, "-f", "-"],
        Some(&widget(group, "w2", "{size: 2, bogus: true}")),
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(r#"unknown field "spec.bogus""#), "{stderr}");
    let w2 = s.json(&[&n.short, "w2", "-n", &ns]);
    assert!(w2["spec"].get("bogus").is_none(), "pruned: {w2}");
    // The same through the patch kubectl sends for an object that exists.
    let err = stderr_of(
        s,
        &["apply", "-n", &ns, "-f", "-"],
        &widget(group, "w2", "{size: 3, bogus: true}"),
    );
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{err}"
    );

    // Schema violations: 422 with upstream's texts.
    let err = stderr_of(
        s,
        &["create", "-n", &ns, "-f", "-"],
        &widget(group, "bad", "{size: 11, color: blue, name: ABC}"),
    );
    for expected in [
        r#"The CrudWidget "bad" is invalid"#,
        r#"spec.color: Unsupported value: "blue": supported values: "red", "green""#,
        r#"spec.name: Invalid value: "ABC": spec.name in body should match '^[a-z]+$'"#,
        "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10",
    ] {
        assert!(err.contains(expected), "{expected} in {err}");
    }
    // x-kubernetes-validations (CEL) rules.
    let err = stderr_of(
        s,
        &["create", "-n", &ns, "-f", "-"],
        &widget(group, "bad", "{size: 1, replicas: 3}"),
    );
    assert!(
        err.contains(r#"spec: Invalid value: "object": replicas must be at most twice the size"#),
        "{err}"
    );
    let err = stderr_of(
        s,
        &["create", "-n", &ns, "-f", "-"],
        &widget(group, "bad", "{color: green}"),
    );
    assert!(err.contains("spec.size: Required value"), "{err}");
    let err = stderr_of(
        s,
        &["create", "-n", &ns, "-f", "-"],
        &widget(group, "bad", "{size: many}"),
    );
    assert!(
        err.contains(r#"spec.size: Invalid value: "string": spec.size in body must be of type integer: "string""#),
        "{err}"
    );

    // Printer columns, by plural, short name and kind.
    for what in [
        &n.plural,
        &n.short,
        &n.kind,
        &format!("{}.{group}", n.plural),
    ] {
        let table = s.ok(&["get", what, "-n", &ns]);
        let header: Vec<&str> = table
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(header, ["NAME", "SIZE", "COLOR", "AGE"], "{table}");
        let row: Vec<&str> = table
            .lines()
            .find(|l| l.starts_with("w1 "))
            .unwrap_or_else(|| panic!("w1 in {table}"))
            .split_whitespace()
            .collect();
        assert_eq!(&row[..3], ["w1", "3", "red"]);
    }
    // By category: kubectl finds the category in discovery and lists its resources.
    let listed = s.ok(&["get", &n.category, "-n", &ns, "-o", "name"]);
    assert!(
        listed
            .lines()
            .any(|l| l == format!("{}.{group}/w1", n.kind.to_lowercase())),
        "{listed}"
    );
    let resources = s.ok(&["api-resources", "--categories", &n.category, "-o", "name"]);
    assert_eq!(resources.trim(), format!("{}.{group}", n.plural));

    // Patches: merge and JSON patch; strategic merge is refused as upstream refuses it.
    s.ok(&[
        "patch",
        &n.plural,
        "w1",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"size":4}}"#,
    ]);
    s.ok(&[
        "patch",
        &n.plural,
        "w1",
        "-n",
        &ns,
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/color","value":"green"}]"#,
    ]);
    let w1 = s.json(&[&n.plural, "w1", "-n", &ns]);
    assert_eq!(
        (w1["spec"]["size"].as_i64(), w1["spec"]["color"].as_str()),
        (Some(4), Some("green"))
    );
    let err = s.fails(&[
        "patch",
        &n.plural,
        "w1",
        "-n",
        &ns,
        "-p",
        r#"{"spec":{"size":5}}"#,
    ]);
    assert!(
        err.contains("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"),
        "{err}"
    );
    let err = s.fails(&[
        "patch",
        &n.plural,
        "w1",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"size":0}}"#,
    ]);
    assert!(
        err.contains("spec.size in body should be greater than or equal to 1"),
        "{err}"
    );

    // A transition rule: `name` may be set once, then not changed.
    s.ok(&[
        "patch",
        &n.plural,
        "w1",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"name":"abc"}}"#,
    ]);
    let err = s.fails(&[
        "patch",
        &n.plural,
        "w1",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"name":"xyz"}}"#,
    ]);
    assert!(
        err.contains(r#"spec.name: Invalid value: "string": name is immutable"#),
        "{err}"
    );

    // Server-side apply records the applier's fields.
    s.ok_with_input(
        &["apply", "--server-side", "-n", &ns, "-f", "-"],
        &widget(group, "w3", "{size: 5}"),
    );
    let w3 = s.json(&[&n.plural, "w3", "-n", &ns, "--show-managed-fields"]);
    let applied = w3["metadata"]["managedFields"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["operation"] == "Apply"))
        .unwrap_or_else(|| panic!("an Apply entry: {w3}"));
    assert_eq!(
        applied["fieldsV1"]["f:spec"]["f:size"],
        serde_json::json!({})
    );

    // Two appliers share a list the schema declares a map keyed by `name`.
    let listener = |name: &str, port: u16| {
        widget(
            group,
            "w3",
            &format!("{{size: 5, listeners: [{{name: {name}, port: {port}}}]}}"),
        )
    };
    s.ok_with_input(
        &[
            "apply",
            "--server-side",
            "--field-manager=a",
            "-n",
            &ns,
            "-f",
            "-",
        ],
        &listener("http", 80),
    );
    s.ok_with_input(
        &[
            "apply",
            "--server-side",
            "--field-manager=b",
            "--force-conflicts",
            "-n",
            &ns,
            "-f",
            "-",
        ],
        &listener("https", 443),
    );
    let w3 = s.json(&[&n.plural, "w3", "-n", &ns]);
    assert_eq!(
        w3["spec"]["listeners"],
        serde_json::json!([{"name": "http", "port": 80}, {"name": "https", "port": 443}]),
        "{w3}"
    );
    let err = s.fails_with_input(
        &[
            "apply",
            "--server-side",
            "--field-manager=b",
            "-n",
            &ns,
            "-f",
            "-",
        ],
        &listener("http", 8080),
    );
    assert!(
        err.contains(r#"conflict with "a": .spec.listeners[name="http"].port"#),
        "{err}"
    );

    // Selectors.
    s.ok(&["label", &n.plural, "w3", "-n", &ns, "tier=gold"]);
    assert_eq!(
        s.ok(&["get", &n.short, "-n", &ns, "-l", "tier=gold", "-o", "name"])
            .trim(),
        format!("{}.{group}/w3", n.kind.to_lowercase())
    );
    assert_eq!(
        s.ok(&[
            "get",
            &n.short,
            "-n",
            &ns,
            "--field-selector",
            "metadata.name=w2",
            "-o",
            "name"
        ])
        .trim(),
        format!("{}.{group}/w2", n.kind.to_lowercase())
    );
    // `selectableFields` (w1 turned green above; w2 and w3 are red).
    let green = s.ok(&[
        "get",
        &n.plural,
        "-n",
        &ns,
        "--field-selector",
        "spec.color=green",
        "-o",
        "name",
    ]);
    assert_eq!(
        green.trim(),
        format!("{}.{group}/w1", n.kind.to_lowercase())
    );
    let err = s.fails(&[
        "get",
        &n.plural,
        "-n",
        &ns,
        "--field-selector",
        "spec.size=4",
    ]);
    assert!(
        err.contains("field label not supported: spec.size"),
        "{err}"
    );

    // Deletion, one and all.
    s.ok(&["delete", &n.plural, "w3", "-n", &ns]);
    s.ok(&["delete", &n.plural, "--all", "-n", &ns]);
    assert_eq!(
        s.ok(&["get", &n.plural, "-n", &ns, "-o", "name"]).trim(),
        ""
    );
}

#[test]
fn status_and_scale_subresources() {
    let s = server();
    let group = "sub.example.com";
    let n = establish(s, &widget_crd(group, "Namespaced"), group);
    let ns = s.namespace("sub");
    s.ok_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &widget(group, "w", "{size: 1, replicas: 1}"),
    );

    // The main resource ignores status; the status subresource changes only status,
    // and neither moves the generation.
    s.ok(&[
        "patch",
        &n.plural,
        "w",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":7}}"#,
    ]);
    let w = s.json(&[&n.plural, "w", "-n", &ns]);
    assert!(
        w.get("status").is_none(),
        "status set through the main resource: {w}"
    );
    s.ok(&[
        "patch",
        &n.plural,
        "w",
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":1,"selector":"app=w"},"spec":{"size":9}}"#,
    ]);
    let w = s.json(&[&n.plural, "w", "-n", &ns]);
    assert_eq!(w["status"]["replicas"], 1);
    assert_eq!(w["spec"]["size"], 1, "spec changed through status: {w}");
    assert_eq!(w["metadata"]["generation"], 1);

    // A spec change moves it.
    s.ok(&[
        "patch",
        &n.plural,
        "w",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"size":2}}"#,
    ]);
    assert_eq!(
        s.json(&[&n.plural, "w", "-n", &ns])["metadata"]["generation"],
        2
    );

    // `kubectl scale` writes through the scale subresource's paths.
    s.ok(&["scale", &n.plural, "w", "-n", &ns, "--replicas=3"]);
    let w = s.json(&[&n.plural, "w", "-n", &ns]);
    assert_eq!(w["spec"]["replicas"], 3);
    assert_eq!(w["metadata"]["generation"], 3);
    let scale: Value = serde_json::from_str(&s.ok(&[
        "get",
        "--raw",
        &format!("/apis/{group}/v1/namespaces/{ns}/{}/w/scale", n.plural),
    ]))
    .expect("Scale");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["replicas"], 1);
    assert_eq!(scale["status"]["selector"], "app=w");
    // No Scale of an object without replicas, as upstream.
    s.ok_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &widget(group, "bare", "{size: 1}"),
    );
    let out = s.kubectl(&[
        "get",
        "--raw",
        &format!("/apis/{group}/v1/namespaces/{ns}/{}/bare/scale", n.plural),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"the spec replicas field \".spec.replicas\" does not exist"#)
            || err.contains(r#"the spec replicas field ".spec.replicas" does not exist"#),
        "{err}"
    );
}

#[test]
fn watches_see_custom_objects_change() {
    let s = server();
    let group = "watch.example.com";
    let n = establish(s, &widget_crd(group, "Namespaced"), group);
    let ns = s.namespace("watch");
    let out = s.watch_output(
        &[
            "get",
            &n.plural,
            "-n",
            &ns,
            "--watch",
            "--output-watch-events",
        ],
        || {
            s.ok_with_input(
                &["create", "-n", &ns, "-f", "-"],
                &widget(group, "w", "{size: 1}"),
            );
            s.ok(&[
                "patch",
                &n.plural,
                "w",
                "-n",
                &ns,
                "--type=merge",
                "-p",
                r#"{"spec":{"size":2}}"#,
            ]);
            s.ok(&["delete", &n.plural, "w", "-n", &ns]);
        },
    );
    // `EVENT NAME SIZE COLOR AGE` rows: the event and the size it saw.
    let events: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            (cells.get(1) == Some(&"w")).then(|| (cells[0].to_string(), cells[2].to_string()))
        })
        .collect();
    let expected: Vec<(String, String)> = [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]
        .iter()
        .map(|(e, size)| (e.to_string(), size.to_string()))
        .collect();
    assert_eq!(events, expected, "{out}");

    // A watch with a selectable field sees only the objects that match it.
    let out = s.watch_output(
        &[
            "get",
            &n.plural,
            "-n",
            &ns,
            "--watch",
            "--field-selector",
            "spec.color=green",
            "-o",
            "name",
        ],
        || {
            for (name, color) in [("red-one", "red"), ("green-one", "green")] {
                s.ok_with_input(
                    &["create", "-n", &ns, "-f", "-"],
                    &widget(group, name, &format!("{{size: 1, color: {color}}}")),
                );
            }
        },
    );
    assert_eq!(
        out.trim(),
        format!("{}.{group}/green-one", n.kind.to_lowercase()),
        "{out}"
    );
}

#[test]
fn cluster_scoped_resources_and_versions_without_conversion() {
    let s = server();
    let group = "ver.example.com";
    // v1beta1 served and stored; v1 served too: the same objects in both versions.
    let crd = widget_crd(group, "Cluster").replace(
        "  versions:\n  - name: v1\n    served: true\n    storage: true\n",
        "  versions:\n  - name: v1beta1\n    served: true\n    storage: true\n    deprecated: true\n    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n  - name: v1\n    served: true\n    storage: false\n",
    );
    let n = establish(s, &crd, group);
    s.ok_with_input(
        &["create", "-f", "-"],
        &format!("apiVersion: {group}/v1beta1\nkind: {}\nmetadata: {{name: old}}\nspec: {{anything: 1}}\n", n.kind),
    );
    s.ok_with_input(&["create", "-f", "-"], &widget(group, "new", "{size: 2}"));
    // kubectl prefers v1 (GA before beta).
    let list = s.json(&[&n.plural]);
    let versions: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["apiVersion"].as_str())
        .collect();
    assert_eq!(versions, [format!("{group}/v1"), format!("{group}/v1")]);
    let old = s.json(&[&format!("{}.v1beta1.{group}", n.plural), "old"]);
    assert_eq!(old["apiVersion"], format!("{group}/v1beta1"));
    assert!(old["metadata"].get("namespace").is_none());
    // v1beta1 is deprecated: every request to it says so.
    let out = s.kubectl(&["get", &format!("{}.v1beta1.{group}", n.plural), "old"]);
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(
        warning.contains(&format!(
            "Warning: {group}/v1beta1 {kind} is deprecated; use {group}/v1 {kind}",
            kind = n.kind
        )),
        "{warning}"
    );
    // Each version validates by its own schema: v1beta1 keeps what v1 would prune.
    assert_eq!(old["spec"]["anything"], 1);
    // Read through v1, the object gets v1's defaults, as upstream defaults on reads.
    let old_as_v1 = s.json(&[&n.plural, "old"]);
    assert_eq!(old_as_v1["apiVersion"], format!("{group}/v1"));
    assert_eq!(old_as_v1["spec"]["color"], "red", "{old_as_v1}");
    assert!(old["spec"].get("color").is_none(), "{old}");
    let crd = s.json(&["crd", &n.crd]);
    assert_eq!(
        crd["status"]["storedVersions"],
        serde_json::json!(["v1beta1"])
    );
    // Moving storage to v1 records it among the stored versions.
    let moved = crd_with_storage_v1(&s.ok(&["get", "crd", &n.crd, "-o", "json"]));
    s.ok_with_input(&["replace", "-f", "-"], &moved);
    let crd = s.json(&["crd", &n.crd]);
    assert_eq!(
        crd["status"]["storedVersions"],
        serde_json::json!(["v1beta1", "v1"])
    );
    // A version no longer served is not found; the other still is.
    s.ok(&[
        "patch",
        "crd",
        &n.crd,
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/versions/0/served", "value": false}]"#,
    ]);
    let gone = eventually(
        "v1beta1 to stop being served",
        Duration::from_secs(30),
        || {
            let out = s.kubectl(&[
                "get",
                "--raw",
                &format!("/apis/{group}/v1beta1/{}", n.plural),
            ]);
            (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
        },
    );
    assert!(
        gone.contains("NotFound") || gone.contains("not find"),
        "{gone}"
    );
    assert_eq!(
        s.json(&[&n.plural, "old"])["apiVersion"],
        format!("{group}/v1")
    );
    s.ok(&["delete", "crd", &n.crd]);
}

/// `x-kubernetes-int-or-string` takes either and nothing else; a `set` list refuses
/// a repeated item and a `map` list a repeated key, in upstream's words, through kubectl.
#[test]
fn int_or_string_fields_and_list_types_through_kubectl() {
    let s = server();
    let group = "lists.example.com";
    establish_single_version(
        s,
        group,
        "Namespaced",
        ("endpoints", "Endpoint"),
        "port: {x-kubernetes-int-or-string: true}
tags: {type: array, items: {type: string}, x-kubernetes-list-type: set}
backends:
  type: array
  x-kubernetes-list-type: map
  x-kubernetes-list-map-keys: [name]
  items: {type: object, required: [name], properties: {name: {type: string}, weight: {type: integer}}}",
    );
    let ns = s.namespace("lists");
    let endpoint = |name: &str, fields: &str| {
        format!(
            "apiVersion: {group}/v1
kind: Endpoint
metadata: {{name: {name}, namespace: {ns}}}
{fields}
"
        )
    };
    s.ok_with_input(&["create", "-f", "-"], &endpoint("number", "port: 8080"));
    s.ok_with_input(&["create", "-f", "-"], &endpoint("name", "port: http"));
    assert_eq!(
        s.json(&[&format!("endpoints.{group}"), "number", "-n", &ns])["port"],
        8080
    );
    assert_eq!(
        s.json(&[&format!("endpoints.{group}"), "name", "-n", &ns])["port"],
        "http"
    );
    let refused = s.fails_with_input(&["create", "-f", "-"], &endpoint("bad", "port: true"));
    assert!(
        refused.contains(r#"port: Invalid value: "boolean": port in body must be of type integer,string: "boolean""#),
        "{refused}"
    );
    let refused = s.fails_with_input(
        &["create", "-f", "-"],
        &endpoint("twice", "tags: [a, b, a]"),
    );
    assert!(
        refused.contains(r#"tags[2]: Duplicate value: "a""#),
        "{refused}"
    );
    let refused = s.fails_with_input(
        &["create", "-f", "-"],
        &endpoint(
            "keys",
            "backends: [{name: x, weight: 1}, {name: x, weight: 2}]",
        ),
    );
    assert!(
        refused.contains(r#"backends[1]: Duplicate value: map[string]interface {}{"name":"x"}"#),
        "{refused}"
    );
    s.ok(&["delete", "crd", &format!("endpoints.{group}")]);
}

/// Applies a CRD `<plural>.<group>` with one version, `v1`, whose schema's root has
/// `properties` (YAML), and waits until it is established.
fn establish_single_version(
    s: &Server,
    group: &str,
    scope: &str,
    (plural, kind): (&str, &str),
    properties: &str,
) {
    let singular = plural.trim_end_matches('s');
    let properties = properties.replace('\n', "\n          ");
    s.ok_with_input(
        &["apply", "-f", "-"],
        &format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.{group}}}
spec:
  group: {group}
  scope: {scope}
  names: {{plural: {plural}, singular: {singular}, kind: {kind}}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          {properties}
"#
        ),
    );
    s.ok(&[
        "wait",
        "--for=condition=established",
        &format!("crd/{plural}.{group}"),
        "--timeout=30s",
    ]);
}

/// Upstream's "Custom Resource Definition, defaulting": a default added to the schema
/// reaches objects stored before (defaulted when read) and objects created after
/// (defaulted and stored); when it is taken out again, what was stored keeps it, and a
/// default added for another field reaches the stored object when read.
#[test]
fn defaults_added_to_a_schema_later_apply_on_read_and_stay_once_stored() {
    let s = server();
    let group = "dflt.example.com";
    establish_single_version(
        s,
        group,
        "Cluster",
        ("defaulted", "Defaulted"),
        "a: {type: string}\nb: {type: string}",
    );
    let object = |name: &str| {
        format!("apiVersion: {group}/v1\nkind: Defaulted\nmetadata: {{name: {name}}}\n")
    };
    let field = |name: &str, field: &str| {
        s.ok(&[
            "get",
            &format!("defaulted.{group}"),
            name,
            "-o",
            &format!("jsonpath={{.{field}}}"),
        ])
    };
    let set_default = |patch: &str| {
        s.ok(&[
            "patch",
            "crd",
            &format!("defaulted.{group}"),
            "--type=json",
            "-p",
            patch,
        ]);
    };
    let schema = "/spec/versions/0/schema/openAPIV3Schema/properties";
    s.ok_with_input(&["create", "-f", "-"], &object("before"));
    assert_eq!(field("before", "a"), "");

    set_default(&format!(
        r#"[{{"op": "add", "path": "{schema}/a/default", "value": "A"}}]"#
    ));
    eventually(
        "the default on the stored object",
        Duration::from_secs(30),
        || (field("before", "a") == "A").then_some(()),
    );
    s.ok_with_input(&["create", "-f", "-"], &object("after"));
    assert_eq!(field("after", "a"), "A");

    set_default(&format!(
        r#"[{{"op": "remove", "path": "{schema}/a/default"}}, {{"op": "add", "path": "{schema}/b/default", "value": "B"}}]"#
    ));
    eventually(
        "the new default on the stored object",
        Duration::from_secs(30),
        || (field("after", "b") == "B").then_some(()),
    );
    assert_eq!(
        field("after", "a"),
        "A",
        "a default stored with the object stays"
    );
    assert_eq!(
        field("before", "a"),
        "",
        "a default only ever applied on reads goes"
    );
    s.ok(&["delete", "crd", &format!("defaulted.{group}")]);
}

fn crd_with_storage_v1(json: &str) -> String {
    let mut crd: Value = serde_json::from_str(json).expect("CRD JSON");
    if let Some(versions) = crd["spec"]["versions"].as_array_mut() {
        for v in versions {
            let is_v1 = v["name"] == "v1";
            v["storage"] = Value::Bool(is_v1);
        }
    }
    crd.to_string()
}

#[test]
fn deleting_a_crd_deletes_its_objects() {
    let s = server();
    let group = "gone.example.com";
    let n = establish(s, &widget_crd(group, "Namespaced"), group);
    let ns = s.namespace("gone");
    for name in ["a", "b"] {
        s.ok_with_input(
            &["create", "-n", &ns, "-f", "-"],
            &widget(group, name, "{size: 1}"),
        );
    }
    // One object holds on with a finalizer of its own: the CRD waits for it.
    s.ok(&[
        "patch",
        &n.plural,
        "a",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    s.ok(&["delete", "crd", &n.crd, "--wait=false"]);
    let crd = eventually("the CRD terminating", Duration::from_secs(20), || {
        let crd = s.json(&["crd", &n.crd]);
        let terminating = crd["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Terminating")?
            .clone();
        (terminating["reason"] == "InstanceDeletionInProgress").then_some(crd)
    });
    assert_eq!(
        crd["metadata"]["finalizers"],
        serde_json::json!(["customresourcecleanup.apiextensions.k8s.io"])
    );
    // Creates are refused while it terminates.
    let err = stderr_of(
        s,
        &["create", "-n", &ns, "-f", "-"],
        &widget(group, "c", "{size: 1}"),
    );
    assert!(
        err.contains("create not allowed while custom resource definition is terminating"),
        "{err}"
    );
    eventually("b deleted", Duration::from_secs(20), || {
        let names = s.ok(&["get", &n.plural, "-n", &ns, "-o", "name"]);
        (names.trim() == format!("{}.{group}/a", n.kind.to_lowercase())).then_some(())
    });
    s.ok(&[
        "patch",
        &n.plural,
        "a",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually("the CRD gone", Duration::from_secs(30), || {
        let out = s.kubectl(&["get", "crd", &n.crd]);
        (!out.status.success()).then_some(())
    });
    let raw = s.kubectl(&["get", "--raw", &format!("/apis/{group}/v1")]);
    assert!(!raw.status.success(), "the group version is still served");
}

#[test]
fn namespaced_objects_go_with_their_namespace() {
    let s = server();
    let group = "nsdel.example.com";
    let n = establish(s, &widget_crd(group, "Namespaced"), group);
    let ns = s.namespace("nsdel");
    s.ok_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &widget(group, "w", "{size: 1}"),
    );
    s.ok(&["delete", "namespace", &ns, "--timeout=60s"]);
    let all = s.ok(&["get", &n.plural, "-A", "-o", "name"]);
    assert_eq!(all.trim(), "", "{all}");
}

#[test]
fn owned_custom_objects_are_garbage_collected() {
    let s = server();
    let group = "gc.example.com";
    let n = establish(s, &widget_crd(group, "Namespaced"), group);
    let ns = s.namespace("gc");
    let owner = s.ok(&[
        "create",
        "configmap",
        "owner",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    s.ok_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &format!(
            "apiVersion: {group}/v1\nkind: {}\nmetadata:\n  name: owned\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: owner, uid: {owner}}}\nspec: {{size: 1}}\n",
            n.kind
        ),
    );
    s.ok(&["delete", "configmap", "owner", "-n", &ns]);
    // The collector re-discovers resources every 30 s; the new type may take that long.
    eventually(
        "the owned widget collected",
        Duration::from_secs(90),
        || {
            let names = s.ok(&["get", &n.plural, "-n", &ns, "-o", "name"]);
            names.trim().is_empty().then_some(())
        },
    );
}

#[test]
fn custom_resources_are_served_again_after_a_restart() {
    // A server of its own: it is killed and started again.
    let mut s = Server::start(&[]);
    let group = "restart.example.com";
    let n = establish(&s, &widget_crd(group, "Cluster"), group);
    s.ok_with_input(&["create", "-f", "-"], &widget(group, "kept", "{size: 2}"));
    s.restart();
    // Served from the first request: the CRD is read before the server listens.
    let kept = s.json(&[&n.plural, "kept"]);
    assert_eq!(kept["spec"], serde_json::json!({"size": 2, "color": "red"}));
    let err = s.fails_with_input(&["create", "-f", "-"], &widget(group, "bad", "{size: 0}"));
    assert!(
        err.contains("spec.size in body should be greater than or equal to 1"),
        "{err}"
    );
}

#[test]
fn names_taken_by_another_crd_are_not_accepted() {
    let s = server();
    let group = "clash.example.com";
    let n = establish(s, &widget_crd(group, "Namespaced"), group);
    // Another CRD of the group with the same kind under another plural.
    let other = widget_crd(group, "Namespaced")
        .replace(
            &format!("name: {}", n.crd),
            &format!("name: others.{group}"),
        )
        .replace(&format!("plural: {}", n.plural), "plural: others")
        .replace("singular: clashwidget", "singular: other")
        .replace(&format!("shortNames: [{}]", n.short), "shortNames: [oth]");
    s.ok_with_input(&["create", "-f", "-"], &other);
    let crd = eventually(
        "NamesAccepted on the second CRD",
        Duration::from_secs(20),
        || {
            let crd = s.json(&["crd", &format!("others.{group}")]);
            crd["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "NamesAccepted")
                .then_some(crd)
        },
    );
    let conditions = crd["status"]["conditions"].as_array().expect("conditions");
    let names = conditions
        .iter()
        .find(|c| c["type"] == "NamesAccepted")
        .expect("NamesAccepted");
    assert_eq!(names["status"], "False", "{crd}");
    assert_eq!(names["reason"], "ListKindConflict");
    assert_eq!(names["message"], "\"ClashWidgetList\" is already in use");
    assert!(
        !conditions
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True"),
        "{crd}"
    );
    let raw = s.ok(&["get", "--raw", &format!("/apis/{group}/v1")]);
    assert!(!raw.contains("\"others\""), "{raw}");
}

#[test]
fn the_python_client_drives_custom_objects() {
    let s = server();
    let ns = s.namespace("py");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/test_custom_objects.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .env("KUBECONFIG", s.kubeconfig())
        .env("SKIFF_NS", &ns)
        .output()
        .expect("python3 on PATH");
    assert!(
        out.status.success(),
        "python client test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}

#[test]
fn crds_are_listed_by_label_deleted_as_a_collection_and_have_a_status_subresource() {
    let s = server();
    let label = format!("e2e-list=l{}", skiff_e2e::free_port());
    for group in ["lista.example.com", "listb.example.com"] {
        let crd = widget_crd(group, "Cluster").replacen(
            "metadata:\n",
            &format!("metadata:\n  labels: {{{}}}\n", label.replace('=', ": ")),
            1,
        );
        establish(s, &crd, group);
    }
    let listed = s.ok(&["get", "crd", "-l", &label, "-o", "name"]);
    let names: Vec<&str> = listed.lines().collect();
    assert_eq!(
        names,
        [
            "customresourcedefinition.apiextensions.k8s.io/listawidgets.lista.example.com",
            "customresourcedefinition.apiextensions.k8s.io/listbwidgets.listb.example.com",
        ]
    );

    // The status subresource: read, and written without touching the spec.
    let name = "listawidgets.lista.example.com";
    let status: Value = serde_json::from_str(&s.ok(&[
        "get",
        "--raw",
        &format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}/status"),
    ]))
    .expect("the CRD through its status");
    assert_eq!(status["kind"], "CustomResourceDefinition");
    s.ok(&[
        "patch",
        "crd",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"storedVersions":["v1"]},"spec":{"scope":"Namespaced"}}"#,
    ]);
    let crd = s.json(&["crd", name]);
    assert_eq!(
        crd["spec"]["scope"], "Cluster",
        "spec changed through status"
    );

    s.ok(&["delete", "crd", "-l", &label]);
    let left = s.ok(&["get", "crd", "-l", &label, "-o", "name"]);
    assert_eq!(left.trim(), "");
}

/// The Rust ecosystem's client: a CRD through the typed API (the condition awaited with
/// kube's own `conditions::is_crd_established`), its objects found through discovery and
/// driven as `DynamicObject`s, and watched with kube's watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_dynamic_objects() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
    use kube::discovery::{Discovery, Scope};
    use kube::runtime::{conditions, wait::await_condition, watcher, WatchStreamExt};

    let s = server();
    let ns = s.namespace("kube-rs");
    let client = s.client().await;
    let group = "rs.example.com";
    let n = names(group);
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&widget_crd(group, "Namespaced")).expect("the CRD YAML");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("CRD created");
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds.clone(), &n.crd, conditions::is_crd_established()),
    )
    .await
    .expect("established in time")
    .expect("watching the CRD");

    let discovery = Discovery::new(client.clone())
        .filter(&[group])
        .run()
        .await
        .expect("discovery");
    let (resource, capabilities) = discovery
        .resolve_gvk(&kube::api::GroupVersionKind::gvk(group, "v1", &n.kind))
        .expect("the kind discovered");
    assert_eq!(resource.plural, n.plural);
    assert_eq!(capabilities.scope, Scope::Namespaced);
    let mut subresources: Vec<&str> = capabilities
        .subresources
        .iter()
        .map(|(r, _)| r.plural.as_str())
        .collect();
    subresources.sort();
    assert_eq!(subresources, ["scale", "status"]);

    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": format!("{group}/v1"), "kind": n.kind,
        "metadata": {"name": "dyn"}, "spec": {"size": 2},
    }))
    .expect("a dynamic object");
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .expect("created");
    assert_eq!(created.data["spec"]["color"], "red");

    let mut events = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .expect("an event in time")
        .expect("a watch event")
        .expect("the object");
    assert_eq!(first.metadata.name.as_deref(), Some("dyn"));
    api.delete("dyn", &DeleteParams::default())
        .await
        .expect("deleted");
    let listed = api.list(&Default::default()).await.expect("listed");
    assert!(listed.items.is_empty());
    crds.delete(&n.crd, &DeleteParams::default())
        .await
        .expect("CRD deleted");
}
