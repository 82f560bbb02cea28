//! Custom resources' schemas in the published OpenAPI documents as CRDs come, change and
//! go, with the real kubectl (upstream's `crd_publish_openapi.go`): CRDs of different
//! groups, versions and kinds all published, a renamed version and a version no longer
//! served taken out, and `x-kubernetes-preserve-unknown-fields` at the root, in an object
//! and in an embedded object honoured by kubectl's validation and `explain`. Each test
//! has a group of its own.

use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{eventually, shared, Server};

const WAIT: Duration = Duration::from_secs(30);

/// A cluster-scoped CRD of `kind` in `group` with `versions` (name, served), the first
/// stored, each with `schema` (YAML, indented for its place).
fn crd(group: &str, kind: &str, versions: &[(&str, bool)], schema: &str) -> String {
    let plural = format!("{}s", kind.to_lowercase());
    let mut text = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.{group}}}\nspec:\n  group: {group}\n  scope: Cluster\n  names: {{plural: {plural}, singular: {}, kind: {kind}}}\n  versions:\n",
        kind.to_lowercase()
    );
    for (i, (version, served)) in versions.iter().enumerate() {
        text.push_str(&format!(
            "  - name: {version}\n    served: {served}\n    storage: {}\n    schema:\n      openAPIV3Schema:\n{schema}",
            i == 0
        ));
    }
    text
}

/// A schema with a described `spec` holding a `bars` list.
const SCHEMA: &str = "        type: object
        description: Foo CRD for testing
        properties:
          spec:
            type: object
            description: Specification of Foo
            properties:
              bars:
                type: array
                description: List of Bars and their specs.
                items: {type: object, properties: {name: {type: string}, age: {type: string}}}
";

/// Whether `kind` of `group/version` has a definition in `/openapi/v2` and a schema in
/// its group-version's `/openapi/v3` document.
fn published(s: &Server, group: &str, version: &str, kind: &str) -> bool {
    let has_gvk = |schemas: &Value| {
        schemas
            .as_object()
            .into_iter()
            .flatten()
            .any(|(_, schema)| {
                schema["x-kubernetes-group-version-kind"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|gvk| {
                        gvk["group"] == group && gvk["version"] == version && gvk["kind"] == kind
                    })
            })
    };
    let v2 = s.kubectl(&["get", "--raw", "/openapi/v2"]);
    let v2: Value = serde_json::from_slice(&v2.stdout).unwrap_or(Value::Null);
    let v3 = s.kubectl(&[
        "get",
        "--raw",
        &format!("/openapi/v3/apis/{group}/{version}"),
    ]);
    let v3: Value = serde_json::from_slice(&v3.stdout).unwrap_or(Value::Null);
    has_gvk(&v2["definitions"]) && has_gvk(&v3["components"]["schemas"])
}

fn wait_published(s: &Server, group: &str, version: &str, kind: &str, wanted: bool) {
    eventually(
        &format!("{kind} {group}/{version} published: {wanted}"),
        WAIT,
        || (published(s, group, version, kind) == wanted).then_some(()),
    );
}

#[test]
fn crds_of_different_groups_are_all_published() {
    let s = shared();
    for group in ["groups-a.example.com", "groups-b.example.com"] {
        s.ok_with_input(
            &["apply", "-f", "-"],
            &crd(group, "Foo", &[("v1", true)], SCHEMA),
        );
    }
    wait_published(s, "groups-a.example.com", "v1", "Foo", true);
    wait_published(s, "groups-b.example.com", "v1", "Foo", true);
}

#[test]
fn crds_of_different_versions_are_all_published() {
    let s = shared();
    let group = "versions.example.com";
    s.ok_with_input(
        &["apply", "-f", "-"],
        &crd(group, "Foo", &[("v2", true), ("v3", true)], SCHEMA),
    );
    wait_published(s, group, "v2", "Foo", true);
    wait_published(s, group, "v3", "Foo", true);
    // Another CRD of the group in a version of its own.
    s.ok_with_input(
        &["apply", "-f", "-"],
        &crd(group, "Bar", &[("v4", true)], SCHEMA),
    );
    wait_published(s, group, "v4", "Bar", true);
    wait_published(s, group, "v2", "Foo", true);
}

#[test]
fn crds_of_different_kinds_are_all_published() {
    let s = shared();
    let group = "kinds.example.com";
    for kind in ["Foo", "Thud"] {
        s.ok_with_input(
            &["apply", "-f", "-"],
            &crd(group, kind, &[("v1", true)], SCHEMA),
        );
    }
    wait_published(s, group, "v1", "Foo", true);
    wait_published(s, group, "v1", "Thud", true);
}

/// A CRD with versions v2 and v3, then `v3` changed to `(changed, served)`: the changed
/// version published as it now stands, v3 gone, v2 kept.
fn change_second_version(group: &str, changed: &str, served: bool) {
    let s = shared();
    let apply = |second: (&str, bool)| {
        s.ok_with_input(
            &["apply", "-f", "-"],
            &crd(group, "Foo", &[("v2", true), second], SCHEMA),
        );
    };
    apply(("v3", true));
    wait_published(s, group, "v3", "Foo", true);
    apply((changed, served));
    if changed != "v3" {
        wait_published(s, group, changed, "Foo", served);
    }
    wait_published(s, group, "v3", "Foo", false);
    wait_published(s, group, "v2", "Foo", true);
}

#[test]
fn a_renamed_version_is_published_under_its_new_name() {
    change_second_version("rename.example.com", "v4", true);
}

#[test]
fn a_version_no_longer_served_is_taken_out() {
    change_second_version("unserved.example.com", "v3", false);
}

/// Creates a CRD of `kind` with `schema`, waits for its explanation, then creates `cr`
/// (a YAML object whose `{group}` is filled in) through kubectl's strict validation.
fn explained_and_created(group: &str, kind: &str, schema: &str, cr: &str) -> String {
    let s = shared();
    s.ok_with_input(
        &["apply", "-f", "-"],
        &crd(group, kind, &[("v1", true)], schema),
    );
    let plural = format!("{}s", kind.to_lowercase());
    let explained = eventually(&format!("kubectl explain {plural}"), WAIT, || {
        let out = s.kubectl(&["explain", &plural]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(
        explained.contains(&format!("KIND:       {kind}")),
        "{explained}"
    );
    s.ok_with_input(&["create", "-f", "-"], &cr.replace("{group}", group));
    explained
}

#[test]
fn unknown_fields_kept_at_the_root() {
    let explained = explained_and_created(
        "preserve-root.example.com",
        "Root",
        "        type: object\n        description: preserve-unknown-properties at root for Testing\n        x-kubernetes-preserve-unknown-fields: true\n",
        "apiVersion: {group}/v1\nkind: Root\nmetadata: {name: test-cr}\na: {key: value}\nb: [1, 2]\n",
    );
    assert!(
        explained.contains("preserve-unknown-properties at root for Testing"),
        "{explained}"
    );
    let s = shared();
    let object = s.json(&["roots", "test-cr"]);
    assert_eq!(object["a"]["key"], "value");
}

#[test]
fn unknown_fields_kept_in_an_object() {
    let schema = "        type: object
        properties:
          spec:
            type: object
            description: Specification of Waldo
            x-kubernetes-preserve-unknown-fields: true
            properties:
              dummy: {type: object, description: Dummy property.}
";
    explained_and_created(
        "preserve-object.example.com",
        "Waldo",
        schema,
        "apiVersion: {group}/v1\nkind: Waldo\nmetadata: {name: test-cr}\nspec: {a: {key: value}, b: [1]}\n",
    );
    let s = shared();
    assert_eq!(s.json(&["waldos", "test-cr"])["spec"]["a"]["key"], "value");
    let explained = s.ok(&["explain", "waldos.spec"]);
    assert!(explained.contains("Specification of Waldo"), "{explained}");
    // Outside that object, an unknown field is refused by kubectl's strict validation.
    let err = s.fails_with_input(
        &["create", "-f", "-"],
        "apiVersion: preserve-object.example.com/v1\nkind: Waldo\nmetadata: {name: other}\nunknown: x\n",
    );
    assert!(err.contains("unknown field \"unknown\""), "{err}");
}

#[test]
fn unknown_fields_kept_in_an_embedded_object() {
    let schema = "        type: object
        properties:
          spec:
            type: object
            properties:
              template:
                type: object
                description: An embedded object
                x-kubernetes-embedded-resource: true
                x-kubernetes-preserve-unknown-fields: true
";
    explained_and_created(
        "preserve-embedded.example.com",
        "Embed",
        schema,
        "apiVersion: {group}/v1\nkind: Embed\nmetadata: {name: test-cr}\nspec:\n  template:\n    apiVersion: v1\n    kind: Pod\n    metadata: {name: inside}\n    spec: {anything: [1, 2]}\n",
    );
    let s = shared();
    let object = s.json(&["embeds", "test-cr"]);
    assert_eq!(object["spec"]["template"]["kind"], "Pod");
    assert_eq!(object["spec"]["template"]["spec"]["anything"][1], 2);
}

#[test]
fn a_validation_schema_is_published_and_enforced() {
    let s = shared();
    let group = "validated.example.com";
    // SCHEMA with a required name and an enum in the list's items.
    let schema = SCHEMA.replace(
        "items: {type: object, properties: {name: {type: string}, age: {type: string}}}",
        "items:\n                  type: object\n                  required: [name]\n                  properties:\n                    name: {type: string, description: Name of Bar.}\n                    age: {type: string}\n                    feeling: {type: string, enum: [Great, Down]}",
    );
    let explained = explained_and_created(
        group,
        "Valid",
        &schema,
        "apiVersion: {group}/v1\nkind: Valid\nmetadata: {name: test-foo}\nspec:\n  bars:\n  - {name: test-bar, age: '1', feeling: Great}\n",
    );
    assert!(explained.contains("Foo CRD for testing"), "{explained}");
    let bars = s.ok(&["explain", "valids.spec.bars"]);
    assert!(bars.contains("List of Bars and their specs."), "{bars}");
    assert!(bars.contains("name\t<string> -required-"), "{bars}");
    let missing = s.fails(&["explain", "valids.spec.bars2"]);
    assert!(missing.contains("bars2"), "{missing}");
    // Unknown properties, a value outside the enum and a missing required property are
    // refused.
    let cr = |name: &str, bar: &str| {
        format!("apiVersion: {group}/v1\nkind: Valid\nmetadata: {{name: {name}}}\nspec:\n  bars:\n  - {bar}\n")
    };
    let err = s.fails_with_input(
        &["create", "-f", "-"],
        &cr("unknown", "{name: b, color: red}"),
    );
    assert!(
        err.contains("unknown field \"spec.bars[0].color\""),
        "{err}"
    );
    let err = s.fails_with_input(
        &["create", "-f", "-"],
        &cr("enum", "{name: b, feeling: Sad}"),
    );
    assert!(
        err.contains("spec.bars[0].feeling: Unsupported value: \"Sad\""),
        "{err}"
    );
    let err = s.fails_with_input(&["create", "-f", "-"], &cr("required", "{age: '2'}"));
    assert!(err.contains("spec.bars[0].name: Required value"), "{err}");
}
