use serde_json::{json, Value};

use super::definitions::{for_each_ref, ref_target, Definitions, GVK_EXTENSION};
use super::*;
use crate::resources::{builtin, Catalogue};

/// One catalogue for the tests that read the built-in documents, so they are rendered once.
fn api() -> Arc<OpenApi> {
    static CATALOGUE: OnceLock<(Catalogue, Documents)> = OnceLock::new();
    let (catalogue, documents) = CATALOGUE.get_or_init(Default::default);
    documents.get(catalogue)
}

fn v3(path: &str) -> Value {
    serde_json::from_slice(&api().v3[path].body).unwrap()
}

fn doc_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn property<'a>(doc: &'a Value, definition: &str, field: &str) -> &'a Value {
    &doc["components"]["schemas"][definition]["properties"][field]
}

#[test]
fn kinds_carry_upstream_names_and_their_group_version_kind() {
    let core = v3("api/v1");
    let pod = &core["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(
        pod[GVK_EXTENSION],
        json!([{"group": "", "kind": "Pod", "version": "v1"}])
    );
    assert!(pod["description"]
        .as_str()
        .unwrap()
        .starts_with("Pod is a collection of containers"));
    // Upstream requires no metadata of a pod; k8s-openapi's Rust types would.
    assert!(pod.get("required").is_none());
    assert_eq!(
        core["components"]["schemas"]["io.k8s.api.core.v1.Container"]["required"],
        json!(["name"])
    );
    let apps = v3("apis/apps/v1");
    assert_eq!(
        apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"][GVK_EXTENSION],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    // Each group-version's document has its own kinds and the shared meta types only.
    assert!(core["components"]["schemas"]
        .get("io.k8s.api.apps.v1.Deployment")
        .is_none());
    for shared in [
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
    ] {
        assert!(
            apps["components"]["schemas"].get(shared).is_some(),
            "{shared}"
        );
    }
}

#[test]
fn every_served_kind_has_a_schema_and_operations_with_its_gvk() {
    for r in builtin() {
        let doc = v3(&doc_path(&r.group, &r.version));
        let gvk = json!({"group": r.group, "kind": r.kind, "version": r.version});
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert!(
            schemas.values().any(|s| s[GVK_EXTENSION]
                .as_array()
                .is_some_and(|gvks| gvks.contains(&gvk))),
            "no schema for {gvk}"
        );
        // kubectl explain finds a resource's kind through its paths' operations.
        let operation_gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let found = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .any(|(path, item)| {
                path.ends_with(&format!("/{}", r.plural))
                    && item
                        .as_object()
                        .unwrap()
                        .values()
                        .any(|op| op["x-kubernetes-group-version-kind"] == operation_gvk)
            });
        assert!(found, "no operation for {gvk}");
    }
}

#[test]
fn references_resolve_within_each_document() {
    let api = api();
    for (path, rendered) in &api.v3 {
        let doc: Value = serde_json::from_slice(&rendered.body).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for_each_ref(&doc, &mut |reference| {
            let target = ref_target(reference).unwrap_or(reference);
            assert!(schemas.contains_key(target), "{path}: {reference}");
        });
        // OpenAPI 3.0 ignores a $ref's siblings: they go through allOf.
        fn no_ref_siblings(value: &Value) {
            match value {
                Value::Object(map) => {
                    if map.get("$ref").is_some_and(Value::is_string) {
                        assert_eq!(map.len(), 1, "{value}");
                    }
                    map.values().for_each(no_ref_siblings);
                }
                Value::Array(items) => items.iter().for_each(no_ref_siblings),
                _ => {}
            }
        }
        no_ref_siblings(&doc);
    }
    let v2: Value = serde_json::from_slice(&api.v2_json.body).unwrap();
    let definitions = v2["definitions"].as_object().unwrap();
    let text = v2.to_string();
    assert!(!text.contains("#/components/schemas/"));
    for (name, schema) in definitions {
        let mut check = |reference: &str| {
            let target = reference.strip_prefix("#/definitions/").unwrap();
            assert!(definitions.contains_key(target), "{name}: {target}");
        };
        for_each_ref(schema, &mut check);
    }
}

#[test]
fn merge_extensions_are_upstreams() {
    let core = v3("api/v1");
    let containers = property(&core, "io.k8s.api.core.v1.PodSpec", "containers");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    let ports = property(&core, "io.k8s.api.core.v1.Container", "ports");
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(
        ports["x-kubernetes-list-map-keys"],
        json!(["containerPort", "protocol"])
    );
    let service_ports = property(&core, "io.k8s.api.core.v1.ServiceSpec", "ports");
    assert_eq!(service_ports["x-kubernetes-patch-merge-key"], "port");
    let volumes = property(&core, "io.k8s.api.core.v1.PodSpec", "volumes");
    assert_eq!(volumes["x-kubernetes-patch-strategy"], "merge,retainKeys");
    let args = property(&core, "io.k8s.api.core.v1.Container", "args");
    assert_eq!(args["x-kubernetes-list-type"], "atomic");
    assert!(args.get("x-kubernetes-patch-strategy").is_none());
    let node_selector = property(&core, "io.k8s.api.core.v1.PodSpec", "nodeSelector");
    assert_eq!(node_selector["x-kubernetes-map-type"], "atomic");
    let owners = property(
        &core,
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
    );
    assert_eq!(owners["x-kubernetes-patch-merge-key"], "uid");
    let owner =
        &core["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference"];
    assert_eq!(owner["x-kubernetes-map-type"], "atomic");
    let finalizers = property(
        &core,
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
    );
    assert_eq!(finalizers["x-kubernetes-list-type"], "set");
    assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");

    let apps = v3("apis/apps/v1");
    let strategy = property(&apps, "io.k8s.api.apps.v1.DeploymentSpec", "strategy");
    assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    // The same definition reached through a pod template in another document.
    let template_containers = property(&apps, "io.k8s.api.core.v1.PodSpec", "containers");
    assert_eq!(template_containers, containers);
    // A scalar of the same name takes no strategy.
    let coordination = v3("apis/coordination.k8s.io/v1");
    let lease_strategy = property(
        &coordination,
        "io.k8s.api.coordination.v1.LeaseSpec",
        "strategy",
    );
    assert!(lease_strategy.get("x-kubernetes-patch-strategy").is_none());
    // Where upstream's strategy and list type disagree, both are published as they are.
    let batch = v3("apis/batch/v1");
    let job_conditions = property(&batch, "io.k8s.api.batch.v1.JobStatus", "conditions");
    assert_eq!(job_conditions["x-kubernetes-list-type"], "atomic");
    assert_eq!(job_conditions["x-kubernetes-patch-merge-key"], "type");
}

#[test]
fn extra_kinds_join_the_documents() {
    let mut definitions = Definitions::builtin();
    definitions.add_kind(
        Gvk::new("example.com", "v1", "Widget"),
        "com.example.v1.Widget".into(),
        json!({
            "type": "object",
            "properties": {
                "metadata": {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            },
        }),
    );
    let widget = definitions.kind("example.com", "v1", "Widget").unwrap();
    assert_eq!(widget.name, "com.example.v1.Widget");
    let reachable = definitions.reachable(["com.example.v1.Widget"]);
    assert!(reachable.contains("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
    assert_eq!(
        definitions.schemas["com.example.v1.Widget"][GVK_EXTENSION],
        json!([{"group": "example.com", "kind": "Widget", "version": "v1"}])
    );
}

#[test]
fn index_urls_carry_each_documents_hash() {
    let api = api();
    let index: Value = serde_json::from_slice(&api.v3_index.body).unwrap();
    let apps = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    assert_eq!(
        apps,
        format!(
            "/openapi/v3/apis/apps/v1?hash={}",
            api.v3["apis/apps/v1"].hash
        )
    );
    assert_eq!(api.v3["apis/apps/v1"].hash.len(), 128);
}

#[test]
fn v2_protobuf_holds_every_definition() {
    let api = api();
    let v2: Value = serde_json::from_slice(&api.v2_json.body).unwrap();
    let bytes = &api.v2_protobuf.body;
    // Document.swagger (field 1) first, then the info.
    assert_eq!(&bytes[..5], b"\x0a\x032.0");
    for name in v2["definitions"].as_object().unwrap().keys() {
        let needle = name.as_bytes();
        assert!(
            bytes.windows(needle.len()).any(|w| w == needle),
            "{name} missing"
        );
    }
}

#[test]
fn custom_resources_join_their_group_versions_document() {
    let crd = json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "description": "What the widget should be.",
                        "properties": {"size": {"type": "integer"}}},
                }}},
            }],
        },
        "status": {"acceptedNames": {"plural": "widgets", "kind": "Widget", "singular": "widget"}},
    });
    let catalogue = Catalogue::new();
    let documents = Documents::default();
    let before = documents.get(&catalogue);
    assert!(!before.v3.contains_key("apis/example.com/v1"));
    catalogue.set_custom("widgets.example.com", crate::crd::definition::served(&crd));
    let api = documents.get(&catalogue);
    // The same catalogue state is not rendered twice.
    assert!(Arc::ptr_eq(&api, &documents.get(&catalogue)));
    let doc: Value = serde_json::from_slice(&api.v3["apis/example.com/v1"].body).unwrap();
    let widget = &doc["components"]["schemas"]["com.example.v1.Widget"];
    assert_eq!(
        widget[GVK_EXTENSION],
        json!([{"group": "example.com", "kind": "Widget", "version": "v1"}])
    );
    assert_eq!(
        widget["properties"]["spec"]["description"],
        "What the widget should be."
    );
    assert_eq!(
        widget["properties"]["metadata"]["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}])
    );
    assert!(doc["components"]["schemas"]
        .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        .is_some());
    // No strategic merge patch for custom resources: kubectl then sends merge patches.
    let patch =
        &doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    let content = patch["requestBody"]["content"].as_object().unwrap();
    assert!(content.contains_key("application/merge-patch+json"));
    assert!(!content.contains_key("application/strategic-merge-patch+json"));
}

#[test]
fn serving_follows_the_hash() {
    let api = api();
    let document = &api.v3["apis/apps/v1"];
    let path = "/openapi/v3/apis/apps/v1";
    let none = http::HeaderMap::new();
    let current = serve(
        document,
        "application/json",
        Some(&document.hash),
        path,
        &none,
    );
    assert_eq!(current.status(), http::StatusCode::OK);
    assert_eq!(current.headers()["cache-control"], "public, immutable");
    let etag = current.headers()["etag"].clone();
    assert_eq!(etag.to_str().unwrap(), format!("\"{}\"", document.hash));

    let stale = serve(document, "application/json", Some("0123"), path, &none);
    assert_eq!(stale.status(), http::StatusCode::MOVED_PERMANENTLY);
    assert_eq!(
        stale.headers()["location"].to_str().unwrap(),
        format!("{path}?hash={}", document.hash)
    );

    let mut revalidate = http::HeaderMap::new();
    revalidate.insert(http::header::IF_NONE_MATCH, etag);
    let unchanged = serve(document, "application/json", None, path, &revalidate);
    assert_eq!(unchanged.status(), http::StatusCode::NOT_MODIFIED);

    let mut json = http::HeaderMap::new();
    json.insert(http::header::ACCEPT, "application/json".parse().unwrap());
    assert_eq!(
        serve_v2(&api, &json).headers()["content-type"],
        "application/json"
    );
    let mut protobuf = http::HeaderMap::new();
    protobuf.insert(
        http::header::ACCEPT,
        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
            .parse()
            .unwrap(),
    );
    assert_eq!(
        serve_v2(&api, &protobuf).headers()["content-type"],
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
}

#[test]
fn list_kinds_answer_the_list_operations() {
    let core = v3("api/v1");
    let list = &core["components"]["schemas"]["io.k8s.api.core.v1.PodList"];
    assert_eq!(
        list[GVK_EXTENSION],
        json!([{"group": "", "kind": "PodList", "version": "v1"}])
    );
    assert_eq!(
        list["properties"]["items"]["items"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.Pod"
    );
    assert_eq!(list["required"], json!(["items"]));
    let get = &core["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
    assert_eq!(get["x-kubernetes-action"], "list");
    assert_eq!(
        get["x-kubernetes-group-version-kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    assert_eq!(
        get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.PodList"
    );
    // Reviews are only created: no list.
    let authorization = v3("apis/authorization.k8s.io/v1");
    assert!(authorization["components"]["schemas"]
        .get("io.k8s.api.authorization.v1.SubjectAccessReviewList")
        .is_none());
}
