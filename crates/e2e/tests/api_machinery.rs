//! API machinery through upstream's conformance steps (`test/e2e/apimachinery`,
//! `test/e2e/kubectl`): kubectl's version and proxy, discovery of every group, the `406`
//! of a Table asked of a backend without one, watches (restarted, several at once,
//! label changes, the same order from any starting point) and server-side field
//! validation of custom objects.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use skiff_e2e::api::{raw, Resource, Watch};
use skiff_e2e::shared;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn kubectl_version_and_api_versions() {
    let s = shared();
    let out = s.ok(&["version"]);
    assert!(out.contains("Client Version: v1.37"), "{out}");
    assert!(out.contains("Server Version: v1.37"), "{out}");
    let versions = s.ok(&["api-versions"]);
    assert!(versions.lines().any(|l| l == "v1"), "{versions}");
}

/// `kubectl proxy` in the background, killed when dropped.
struct Proxy(std::process::Child);

impl Proxy {
    /// Starts `kubectl proxy` with `args` and returns it with the first line it printed.
    fn start(s: &skiff_e2e::Server, args: &[&str]) -> (Proxy, String) {
        let mut child = Command::new("kubectl")
            .arg("proxy")
            .args(args)
            .env("KUBECONFIG", s.kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl on PATH");
        let stdout = child.stdout.take().expect("kubectl's stdout");
        let proxy = Proxy(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("kubectl proxy's first line");
        (proxy, line)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The body of an HTTP/1.0 `GET /api/` answered on `stream`.
fn get_api(mut stream: impl Read + Write) -> String {
    stream
        .write_all(b"GET /api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

#[test]
fn kubectl_proxy_on_port_zero_and_a_unix_socket() {
    let s = shared();
    let (_proxy, line) = Proxy::start(s, &["-p", "0", "--disable-filter"]);
    let port: u16 = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let body =
        get_api(std::net::TcpStream::connect(("127.0.0.1", port)).expect("the proxy's port"));
    let api: Value = serde_json::from_str(&body).expect("JSON from /api/");
    assert_eq!(api["versions"], json!(["v1"]));

    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("kubectl.sock");
    let socket_arg = format!("--unix-socket={}", socket.display());
    let (_proxy, line) = Proxy::start(s, &[&socket_arg]);
    assert!(line.contains("Starting to serve on"), "{line}");
    let body =
        get_api(std::os::unix::net::UnixStream::connect(&socket).expect("the proxy's socket"));
    let api: Value = serde_json::from_str(&body).expect("JSON from /api/");
    assert_eq!(api["kind"], "APIVersions");
}

#[tokio::test]
async fn discovery_of_every_group_version() {
    let s = shared();
    let client = s.client().await;
    let (code, core) = raw(&client, "GET", "/api/v1", &[], None).await;
    assert_eq!(code, 200);
    assert_eq!(core["groupVersion"], "v1");
    let (code, groups) = raw(&client, "GET", "/apis", &[], None).await;
    assert_eq!(code, 200);
    let groups = groups["groups"].as_array().cloned().unwrap_or_default();
    assert!(groups.len() > 10, "{groups:?}");
    for group in &groups {
        let preferred = &group["preferredVersion"]["groupVersion"];
        let versions: Vec<&str> = group["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["groupVersion"].as_str())
            .collect();
        assert!(
            versions.iter().any(|v| preferred == *v),
            "{}'s preferred version is not among its versions",
            group["name"]
        );
        // The group's own document names the same preferred version.
        let (code, own) = raw(
            &client,
            "GET",
            &format!("/apis/{}", group["name"].as_str().unwrap_or_default()),
            &[],
            None,
        )
        .await;
        assert_eq!(code, 200, "{own}");
        assert_eq!(own["kind"], "APIGroup");
        assert_eq!(&own["preferredVersion"]["groupVersion"], preferred);
        for version in versions {
            let (code, list) = raw(&client, "GET", &format!("/apis/{version}"), &[], None).await;
            assert_eq!(code, 200, "{version}");
            assert_eq!(list["kind"], "APIResourceList");
            assert_eq!(list["groupVersion"], version);
            let resources = list["resources"].as_array().cloned().unwrap_or_default();
            assert!(!resources.is_empty(), "{version} lists no resources");
            for resource in resources {
                assert!(
                    resource["name"].is_string() && resource["verbs"].is_array(),
                    "{resource}"
                );
            }
        }
    }
    // One resource from each group upstream names.
    for (version, resource) in [
        ("v1", "configmaps"),
        (
            "admissionregistration.k8s.io/v1",
            "validatingwebhookconfigurations",
        ),
        (
            "admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
        ),
        ("apiextensions.k8s.io/v1", "customresourcedefinitions"),
        ("apps/v1", "deployments"),
        ("authentication.k8s.io/v1", "tokenreviews"),
        ("authorization.k8s.io/v1", "selfsubjectaccessreviews"),
        ("autoscaling/v1", "horizontalpodautoscalers"),
        ("autoscaling/v2", "horizontalpodautoscalers"),
        ("batch/v1", "jobs"),
        ("certificates.k8s.io/v1", "certificatesigningrequests"),
        ("coordination.k8s.io/v1", "leases"),
        ("discovery.k8s.io/v1", "endpointslices"),
        ("events.k8s.io/v1", "events"),
        ("networking.k8s.io/v1", "ingresses"),
        ("node.k8s.io/v1", "runtimeclasses"),
        ("policy/v1", "poddisruptionbudgets"),
        ("rbac.authorization.k8s.io/v1", "roles"),
        ("scheduling.k8s.io/v1", "priorityclasses"),
        ("storage.k8s.io/v1", "storageclasses"),
    ] {
        let path = if version == "v1" {
            "/api/v1".to_string()
        } else {
            format!("/apis/{version}")
        };
        let (_, list) = raw(&client, "GET", &path, &[], None).await;
        let found = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == resource);
        assert!(found, "{resource} not in {version}");
    }
}

#[tokio::test]
async fn aggregated_discovery_by_accept_header() {
    let s = shared();
    let client = s.client().await;
    let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    for (path, legacy) in [("/api", "APIVersions"), ("/apis", "APIGroupList")] {
        let (code, doc) = raw(&client, "GET", path, &[("Accept", v2)], None).await;
        assert_eq!(code, 200, "{doc}");
        assert_eq!(doc["kind"], "APIGroupDiscoveryList", "{path}");
        assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2");
        assert!(
            doc["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty()),
            "{path}"
        );
        // A version not served falls back to the next type the client takes.
        let unknown = "application/json;g=apidiscovery.k8s.io;v=v2beta9;as=APIGroupDiscoveryList,application/json";
        let (code, doc) = raw(&client, "GET", path, &[("Accept", unknown)], None).await;
        assert_eq!(code, 200, "{doc}");
        assert_eq!(doc["kind"], legacy, "{path}");
        let (_, doc) = raw(
            &client,
            "GET",
            path,
            &[("Accept", "application/json")],
            None,
        )
        .await;
        assert_eq!(doc["kind"], legacy, "{path}");
    }
}

#[tokio::test]
async fn a_table_of_a_review_is_not_acceptable() {
    let s = shared();
    let client = s.client().await;
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"nonResourceAttributes": {"path": "/", "verb": "get"}}});
    let (code, body) = raw(
        &client,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        &[("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")],
        Some(review.to_string()),
    )
    .await;
    assert_eq!(code, 406, "{body}");
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["code"], 406);
}

fn config_maps(client: &kube::Client, ns: &str) -> Resource {
    Resource::new(client, "v1", "ConfigMap", "configmaps", Some(ns))
}

/// The types and `data.mutation` values of the next `count` events of `watch`.
async fn mutations(watch: &mut Watch, count: usize) -> Vec<(String, Value)> {
    watch
        .next_events(count, |_, _| true, WAIT)
        .await
        .into_iter()
        .map(|(kind, object)| (kind, object["data"]["mutation"].clone()))
        .collect()
}

fn events(expected: &[(&str, i64)]) -> Vec<(String, Value)> {
    expected
        .iter()
        .map(|(kind, n)| (kind.to_string(), json!(n.to_string())))
        .collect()
}

#[tokio::test]
async fn watch_closed_and_restarted() {
    let s = shared();
    let ns = s.namespace("watchrestart");
    let client = s.client().await;
    let cms = config_maps(&client, &ns);
    let selector = "watch-this-configmap=watch-closed-and-restarted";
    let (_, rv) = cms.list(selector).await;
    let mut watch = cms.watch(selector, &rv).await;
    cms.create(json!({"metadata": {"name": "cm", "labels": {"watch-this-configmap": "watch-closed-and-restarted"}}, "data": {"mutation": "0"}}))
        .await;
    cms.merge("cm", json!({"data": {"mutation": "1"}})).await;
    cms.merge("cm", json!({"data": {"mutation": "2"}})).await;
    let seen = watch.next_events(2, |_, _| true, WAIT).await;
    assert_eq!(seen[1].0, "MODIFIED");
    let last = seen[1].1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    drop(watch);
    // While no one watches: one more change, and the deletion.
    cms.merge("cm", json!({"data": {"mutation": "3"}})).await;
    cms.delete("cm").await;
    let mut restarted = cms.watch(selector, &last).await;
    assert_eq!(
        mutations(&mut restarted, 3).await,
        events(&[("MODIFIED", 2), ("MODIFIED", 3), ("DELETED", 3)])
    );
}

#[tokio::test]
async fn watch_with_multiple_watchers() {
    let s = shared();
    let ns = s.namespace("watchmulti");
    let client = s.client().await;
    let cms = config_maps(&client, &ns);
    let (_, rv) = cms.list("").await;
    let mut a = cms
        .watch("watch-this-configmap=multiple-watchers-A", &rv)
        .await;
    let mut b = cms
        .watch("watch-this-configmap=multiple-watchers-B", &rv)
        .await;
    let mut either = cms
        .watch(
            "watch-this-configmap in (multiple-watchers-A,multiple-watchers-B)",
            &rv,
        )
        .await;
    for (name, label, watch) in [
        ("a", "multiple-watchers-A", &mut a),
        ("b", "multiple-watchers-B", &mut b),
    ] {
        cms.create(json!({"metadata": {"name": name, "labels": {"watch-this-configmap": label}}, "data": {"mutation": "0"}}))
            .await;
        cms.merge(name, json!({"data": {"mutation": "1"}})).await;
        cms.delete(name).await;
        let expected = events(&[("ADDED", 0), ("MODIFIED", 1), ("DELETED", 1)]);
        assert_eq!(mutations(watch, 3).await, expected, "the watch of {label}");
        assert_eq!(
            mutations(&mut either, 3).await,
            expected,
            "the watch of both, for {label}"
        );
    }
}

#[tokio::test]
async fn watch_label_changed() {
    let s = shared();
    let ns = s.namespace("watchlabel");
    let client = s.client().await;
    let cms = config_maps(&client, &ns);
    let selector = "watch-this-configmap=label-changed-and-restored";
    let (_, rv) = cms.list(selector).await;
    let mut watch = cms.watch(selector, &rv).await;
    let label = |value: &str| json!({"metadata": {"labels": {"watch-this-configmap": value}}});
    let mut first = json!({"metadata": {"name": "cm"}, "data": {"mutation": "0"}});
    first["metadata"]["labels"] = label("label-changed-and-restored")["metadata"]["labels"].clone();
    cms.create(first).await;
    cms.merge("cm", json!({"data": {"mutation": "1"}})).await;
    // Out of the selector: the watch sees it go; changes meanwhile are not seen.
    cms.merge("cm", label("wrong-value")).await;
    cms.merge("cm", json!({"data": {"mutation": "2"}})).await;
    // Back in: seen again as added.
    cms.merge("cm", label("label-changed-and-restored")).await;
    cms.merge("cm", json!({"data": {"mutation": "3"}})).await;
    cms.delete("cm").await;
    assert_eq!(
        mutations(&mut watch, 6).await,
        events(&[
            ("ADDED", 0),
            ("MODIFIED", 1),
            ("DELETED", 1),
            ("ADDED", 2),
            ("MODIFIED", 3),
            ("DELETED", 3),
        ])
    );
}

#[tokio::test]
async fn concurrent_watches_see_the_same_order() {
    let s = shared();
    let ns = s.namespace("watchorder");
    let client = s.client().await;
    let cms = config_maps(&client, &ns);
    let (_, rv) = cms.list("").await;
    let mut first = cms.watch("", &rv).await;
    // Creates, updates and deletes over a few names, interleaved.
    let mut ops = 0;
    for round in 0..5 {
        for name in ["x", "y", "z"] {
            match round % 3 {
                0 => {
                    cms.create(
                        json!({"metadata": {"name": name}, "data": {"round": round.to_string()}}),
                    )
                    .await
                }
                1 => {
                    cms.merge(name, json!({"data": {"round": round.to_string()}}))
                        .await
                }
                _ => {
                    cms.delete(name).await;
                    Value::Null
                }
            };
            ops += 1;
        }
    }
    let reference = first.next_events(ops, |_, _| true, WAIT).await;
    let version = |event: &(String, Value)| {
        event.1["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let order: Vec<String> = reference.iter().map(version).collect();
    // Watches started from each point of the history see the rest in the same order.
    for start in [0, 3, 7, ops - 2] {
        let mut watch = cms.watch("", &order[start]).await;
        let rest = watch.next_events(ops - start - 1, |_, _| true, WAIT).await;
        let rest: Vec<String> = rest.iter().map(version).collect();
        assert_eq!(rest, order[start + 1..], "from {}", order[start]);
    }
}

/// A cluster-scoped CRD in a group of its own, with `schema` for every version (none:
/// no schema, so everything is kept), established.
async fn noxu_crd(client: &kube::Client, group: &str, schema: Option<Value>) -> Resource {
    let crds = Resource::new(
        client,
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        None,
    );
    let schema = schema
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let name = format!("noxus.{group}");
    crds.create(json!({"metadata": {"name": name}, "spec": {"group": group, "scope": "Cluster",
        "names": {"plural": "noxus", "singular": "noxu", "kind": "WishIHadChosenNoxu", "listKind": "NoxuItemList"},
        "versions": [
            {"name": "v1beta1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}},
            {"name": "v1", "served": true, "storage": false, "schema": {"openAPIV3Schema": schema}}]}}))
        .await;
    crds.wait_established(&name).await;
    Resource::new(
        client,
        &format!("{group}/v1beta1"),
        "WishIHadChosenNoxu",
        "noxus",
        None,
    )
}

fn validated_schema(spec_extra: Value) -> Value {
    let mut spec = json!({"type": "object", "properties": {
        "foo": {"type": "string"},
        "cronSpec": {"type": "string", "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
        "ports": {"type": "array", "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
            "items": {"type": "object", "required": ["containerPort", "protocol"], "properties": {
                "containerPort": {"type": "integer", "format": "int32"},
                "hostIP": {"type": "string"},
                "hostPort": {"type": "integer", "format": "int32"},
                "name": {"type": "string"},
                "protocol": {"type": "string"}}}}}});
    for (k, v) in spec_extra.as_object().into_iter().flatten() {
        if k == "properties" {
            for (pk, pv) in v.as_object().into_iter().flatten() {
                spec["properties"][pk] = pv.clone();
            }
        } else {
            spec[k] = v.clone();
        }
    }
    json!({"type": "object", "properties": {"spec": spec}})
}

/// A server-side apply of `yaml` with `fieldValidation=Strict`: the status code and body.
async fn strict_apply(client: &kube::Client, group: &str, name: &str, yaml: &str) -> (u16, Value) {
    raw(
        client,
        "PATCH",
        &format!("/apis/{group}/v1beta1/noxus/{name}?fieldManager=field_validation_mgr&fieldValidation=Strict"),
        &[("Content-Type", "application/apply-patch+yaml")],
        Some(yaml.to_string()),
    )
    .await
}

const NOXU_SPEC: &str = "  cronSpec: \"* * * * */5\"\n  ports:\n  - name: x\n    containerPort: 80\n    protocol: TCP\n";

fn noxu_yaml(group: &str, metadata_extra: &str, top_extra: &str, spec: &str) -> String {
    format!(
        "\napiVersion: {group}/v1beta1\nkind: WishIHadChosenNoxu\nmetadata:\n  name: mytest\n{metadata_extra}  finalizers:\n  - test-finalizer\n{top_extra}spec:\n{spec}{NOXU_SPEC}"
    )
}

/// Lifts the finalizer the applied objects carry, so they go with the test.
async fn release(noxus: &Resource) {
    noxus
        .merge("mytest", json!({"metadata": {"finalizers": null}}))
        .await;
    noxus.delete("mytest").await;
}

#[tokio::test]
async fn field_validation_of_custom_objects() {
    let s = shared();
    let ns = s.namespace("fieldval");
    let client = s.client().await;

    // A valid object with a schema: applied.
    let group = format!("{ns}-valid.example.com");
    let noxus = noxu_crd(&client, &group, Some(validated_schema(json!({})))).await;
    let (code, body) = strict_apply(
        &client,
        &group,
        "mytest",
        &noxu_yaml(&group, "", "", "  foo: foo1\n"),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(noxus.get("mytest").await["spec"]["foo"], "foo1");

    // An unknown top-level field with a schema: refused.
    let (code, body) = strict_apply(
        &client,
        &group,
        "mytest",
        &noxu_yaml(&group, "", "unknownField: unknown\n", "  foo: foo1\n"),
    )
    .await;
    assert!(code >= 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(".unknownField: field not declared in schema"),
        "{message}"
    );
    release(&noxus).await;

    // No schema: unknown fields are kept.
    let group = format!("{ns}-open.example.com");
    let noxus = noxu_crd(&client, &group, None).await;
    let (code, body) = strict_apply(
        &client,
        &group,
        "mytest",
        &noxu_yaml(&group, "", "", "  unknown: uk1\n"),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(noxus.get("mytest").await["spec"]["unknown"], "uk1");
    release(&noxus).await;

    // Unknown metadata, at the root and in an embedded object: refused.
    let group = format!("{ns}-meta.example.com");
    noxu_crd(
        &client,
        &group,
        Some(validated_schema(
            json!({"x-kubernetes-preserve-unknown-fields": true, "properties": {
            "template": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {
                "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
                "spec": {"type": "object"}}}}}),
        )),
    )
    .await;
    let embedded = format!("  template:\n    apiVersion: foo/v1\n    kind: Sub\n    metadata:\n      unknownSubMeta: unknown\n      name: subobject\n      namespace: {ns}\n  foo: foo1\n");
    let (code, body) = strict_apply(
        &client,
        &group,
        "mytest",
        &noxu_yaml(&group, "  unknownMeta: unknown\n", "", &embedded),
    )
    .await;
    assert!(code >= 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(".spec.template.metadata.unknownSubMeta: field not declared in schema")
            || message.contains(".metadata.unknownMeta: field not declared in schema"),
        "{message}"
    );

    // Duplicate keys, even where unknown fields are kept: refused with the line.
    let group = format!("{ns}-dup.example.com");
    noxu_crd(
        &client,
        &group,
        Some(validated_schema(
            json!({"x-kubernetes-preserve-unknown-fields": true}),
        )),
    )
    .await;
    let (code, body) = strict_apply(
        &client,
        &group,
        "mytest",
        &noxu_yaml(&group, "", "", "  unknown: uk1\n  foo: foo1\n  foo: foo2\n"),
    )
    .await;
    assert!(code >= 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("line 11: key \"foo\" already set in map"),
        "{message}"
    );
}

/// A Deployment's JSON with `spec_extra` at the start of its spec and `meta_extra` at
/// the start of its metadata (raw text: a repeated key must reach the server as sent).
fn deployment_json(name: &str, meta_extra: &str, spec_extra: &str) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {{{meta_extra}"name": "{name}", "labels": {{"app": "nginx"}}}},
        "spec": {{{spec_extra}"selector": {{"matchLabels": {{"app": "nginx"}}}},
            "template": {{"metadata": {{"labels": {{"app": "nginx"}}}},
                "spec": {{"containers": [{{"name": "nginx", "image": "nginx:latest"}}]}}}}}}}}"#
    )
}

#[tokio::test]
async fn field_validation_of_typed_objects() {
    let s = shared();
    let ns = s.namespace("typedval");
    let client = s.client().await;
    let post = |body: String, mode: &'static str| {
        let client = client.clone();
        let path = format!(
            "/apis/apps/v1/namespaces/{ns}/deployments?fieldManager=field_validation_mgr&fieldValidation={mode}"
        );
        async move { raw(&client, "POST", &path, &[], Some(body)).await }
    };
    // Unknown and repeated fields of a typed object.
    let body = deployment_json(
        "my-dep",
        "",
        r#""unknownField": "foo", "replicas": 2, "replicas": 3, "#,
    );
    let (code, refused) = post(body.clone(), "Strict").await;
    assert_eq!(code, 400, "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#"strict decoding error: unknown field "spec.unknownField", duplicate field "spec.replicas""#),
        "{message}"
    );
    // Unknown metadata of a typed object.
    let (code, refused) = post(
        deployment_json("my-dep", r#""unknownMeta": "foo", "#, ""),
        "Strict",
    )
    .await;
    assert_eq!(code, 400, "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#"strict decoding error: unknown field "metadata.unknownMeta""#),
        "{message}"
    );
    // Warned about: created, each problem a warning of its own.
    let (code, warnings, created) = skiff_e2e::api::raw_with_warnings(
        &client,
        "POST",
        &format!("/apis/apps/v1/namespaces/{ns}/deployments?fieldValidation=Warn"),
        &[],
        Some(deployment_json(
            "warned",
            "",
            r#""unknownField": "foo", "replicas": 2, "replicas": 3, "#,
        )),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["replicas"], 3);
    assert_eq!(
        warnings,
        [
            r#"unknown field "spec.unknownField""#,
            r#"duplicate field "spec.replicas""#
        ],
        "{created}"
    );
    // Passed over when asked to: the last of the repeated values wins, the unknown
    // field is dropped.
    let (code, created) = post(body, "Ignore").await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["replicas"], 3);
    assert!(created["spec"].get("unknownField").is_none());
    // A valid object passes strictly.
    let (code, created) = post(deployment_json("valid", "", ""), "Strict").await;
    assert_eq!(code, 201, "{created}");

    // Patches are judged on what they produce: a merge patch's unknown field, and an
    // apply's in structured-merge-diff's words.
    let path = format!(
        "/apis/apps/v1/namespaces/{ns}/deployments/valid?fieldValidation=Strict&fieldManager=e2e"
    );
    let merge = [("Content-Type", "application/merge-patch+json")];
    let (code, refused) = raw(
        &client,
        "PATCH",
        &path,
        &merge,
        Some(r#"{"spec":{"unknownField":1}}"#.into()),
    )
    .await;
    assert_eq!(code, 400, "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(r#"strict decoding error: unknown field "spec.unknownField""#),
        "{message}"
    );
    let apply = [("Content-Type", "application/apply-patch+yaml")];
    let applied =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: valid}\nspec: {paused2: true}\n";
    let (code, refused) = raw(&client, "PATCH", &path, &apply, Some(applied.into())).await;
    assert_eq!(code, 400, "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(".spec.paused2: field not declared in schema"),
        "{message}"
    );
    // kubectl's patch asks for no validation: the default warns, and drops the field.
    let out = s.kubectl(&[
        "patch",
        "deployment",
        "valid",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"unknownField":1}}"#,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: unknown field \"spec.unknownField\""),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("patched (no change)"));

    // kubectl apply of a typed object with an unknown field: refused by default
    // (kubectl asks for strict validation), created with a warning when told to warn.
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: applied, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: a}}}}\n  bogus: 1\n  template:\n    metadata: {{labels: {{app: a}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    );
    let refused = s.fails_with_input(&["apply", "-f", "-"], &manifest);
    assert!(
        refused.contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{refused}"
    );
    let out = s.kubectl_with_input(&["apply", "--validate=warn", "-f", "-"], Some(&manifest));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(r#"Warning: unknown field "spec.bogus""#),
        "{stderr}"
    );
    let applied = s.json(&["deployment", "applied", "-n", &ns]);
    assert!(applied["spec"].get("bogus").is_none(), "{applied}");
}

/// One resource as discovery describes it: verbs (sorted), namespaced, kind, short
/// names (sorted), subresources (sorted).
type Described = (Vec<String>, bool, String, Vec<String>, Vec<String>);

fn strings(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    out.sort();
    out
}

/// The resources of a legacy `APIResourceList`, by name.
fn legacy_resources(list: &Value) -> std::collections::BTreeMap<String, Described> {
    let all = list["resources"].as_array().cloned().unwrap_or_default();
    let mut out = std::collections::BTreeMap::new();
    for r in &all {
        let name = r["name"].as_str().unwrap_or_default();
        if name.contains('/') {
            continue;
        }
        let mut subresources: Vec<String> = all
            .iter()
            .filter_map(|s| s["name"].as_str())
            .filter_map(|s| s.strip_prefix(&format!("{name}/")).map(String::from))
            .collect();
        subresources.sort();
        out.insert(
            name.to_string(),
            (
                strings(&r["verbs"]),
                r["namespaced"] == true,
                r["kind"].as_str().unwrap_or_default().to_string(),
                strings(&r["shortNames"]),
                subresources,
            ),
        );
    }
    out
}

/// The resources of an aggregated `APIVersionDiscovery`, by name.
fn aggregated_resources(version: &Value) -> std::collections::BTreeMap<String, Described> {
    let mut out = std::collections::BTreeMap::new();
    for r in version["resources"].as_array().into_iter().flatten() {
        let mut subresources: Vec<String> = r["subresources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["subresource"].as_str().map(String::from))
            .collect();
        subresources.sort();
        out.insert(
            r["resource"].as_str().unwrap_or_default().to_string(),
            (
                strings(&r["verbs"]),
                r["scope"] == "Namespaced",
                r["responseKind"]["kind"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                strings(&r["shortNames"]),
                subresources,
            ),
        );
    }
    out
}

/// The aggregated document (`apidiscovery.k8s.io/v2`) says what the legacy documents
/// say, group version by group version: resources, verbs, scope, kinds, short names,
/// subresources.
#[tokio::test]
async fn aggregated_discovery_matches_the_legacy_documents() {
    let s = shared();
    let client = s.client().await;
    // A CRD's group is among them, with both its versions.
    let ns = s.namespace("aggregated");
    let crd_group = format!("{ns}.example.com");
    noxu_crd(&client, &crd_group, None).await;
    let mut crd_versions = Vec::new();
    let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    let mut compared = 0;
    for root in ["/api", "/apis"] {
        let (code, doc) = raw(&client, "GET", root, &[("Accept", v2)], None).await;
        assert_eq!(code, 200, "{doc}");
        for group in doc["items"].as_array().into_iter().flatten() {
            let name = group["metadata"]["name"].as_str().unwrap_or_default();
            for version in group["versions"].as_array().into_iter().flatten() {
                let v = version["version"].as_str().unwrap_or_default();
                let path = if name.is_empty() {
                    format!("/api/{v}")
                } else {
                    format!("/apis/{name}/{v}")
                };
                let (code, legacy) = raw(&client, "GET", &path, &[], None).await;
                assert_eq!(code, 200, "{path}: {legacy}");
                if name == crd_group {
                    crd_versions.push(v.to_string());
                    let noxus = &aggregated_resources(version)["noxus"];
                    assert!(!noxus.1, "cluster-scoped");
                    assert_eq!(noxus.2, "WishIHadChosenNoxu");
                }
                assert_eq!(
                    aggregated_resources(version),
                    legacy_resources(&legacy),
                    "{path}"
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 15, "only {compared} group versions");
    crd_versions.sort();
    assert_eq!(crd_versions, ["v1", "v1beta1"]);
}
