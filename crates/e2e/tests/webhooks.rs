//! Admission webhooks (ValidatingWebhookConfiguration, MutatingWebhookConfiguration): the
//! API server calls a webhook the test serves over HTTPS (Python's `http.server` with a
//! certificate from a CA the test makes with openssl), verified against the
//! configuration's `caBundle`, and obeys its answers, selectors, match conditions,
//! timeouts and failure policy, as upstream's webhook conformance steps check.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::tls::ServingCertificate;
use skiff_e2e::{free_port, start_python_server, Server, Supervised};

struct Webhook {
    _child: Supervised,
    port: u16,
    ca_bundle: String,
    log: PathBuf,
    _certificate: ServingCertificate,
}

/// The test's webhook server, with its own CA, on a free port of 127.0.0.1.
fn webhook() -> &'static Webhook {
    static WEBHOOK: OnceLock<Webhook> = OnceLock::new();
    WEBHOOK.get_or_init(|| {
        let certificate = skiff_e2e::tls::serving_certificate("IP:127.0.0.1");
        let port = free_port();
        let log = certificate.dir.path().join("reviews.jsonl");
        let child = start_python_server(
            "webhook_server.py",
            &[certificate.cert.as_os_str(), certificate.key.as_os_str()],
            &[("WEBHOOK_LOG", &log)],
            port,
        );
        Webhook {
            _child: child,
            port,
            ca_bundle: certificate.ca_bundle(),
            log,
            _certificate: certificate,
        }
    })
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start(&[]))
}

/// A webhook configuration of `kind` with one webhook `name` calling `path`; `extra` is
/// more YAML for the webhook (indented by four spaces).
fn configuration(kind: &str, name: &str, path: &str, rules: &str, extra: &str) -> String {
    let hook = webhook();
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\nwebhooks:\n- name: {name}\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  clientConfig:\n    url: https://127.0.0.1:{port}{path}\n    caBundle: {ca}\n  rules:\n  - {rules}\n{extra}",
        port = hook.port,
        ca = hook.ca_bundle,
    )
}

const CONFIGMAPS: &str =
    "{operations: [CREATE, UPDATE], apiGroups: [\"\"], apiVersions: [v1], resources: [configmaps]}";
const PODS: &str =
    "{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}";

fn pod(name: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n")
}

/// The namespace selector part of a webhook that only sees namespaces labelled for `test`.
fn only_namespaces_labelled(test: &str) -> String {
    format!("  namespaceSelector:\n    matchLabels:\n      webhook-test: {test}\n")
}

fn labelled_namespace(server: &Server, test: &str) -> String {
    let ns = server.namespace(test);
    server.ok(&["label", "namespace", &ns, &format!("webhook-test={test}")]);
    ns
}

#[test]
fn a_validating_webhook_refuses_what_it_denies() {
    let server = server();
    let ns = labelled_namespace(server, "deny");
    server.ok_with_input(
        &["create", "-f", "-"],
        &configuration(
            "ValidatingWebhookConfiguration",
            "deny.configmaps.skiff.test",
            "/deny",
            CONFIGMAPS,
            &only_namespaces_labelled("deny"),
        ),
    );
    let refused = server.fails(&[
        "create",
        "configmap",
        "bad",
        "-n",
        &ns,
        "--from-literal=forbidden=x",
    ]);
    assert!(
        refused.contains("admission webhook \"deny.configmaps.skiff.test\" denied the request: the configmap contains forbidden data"),
        "{refused}"
    );
    server.ok(&[
        "create",
        "configmap",
        "good",
        "-n",
        &ns,
        "--from-literal=fine=x",
    ]);
    // Updates go through it too.
    let refused = server.fails(&[
        "patch",
        "configmap",
        "good",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        "{\"data\":{\"forbidden\":\"y\"}}",
    ]);
    assert!(refused.contains("denied the request"), "{refused}");
    // Outside the selected namespaces it is not called.
    let other = server.namespace("deny-other");
    server.ok(&[
        "create",
        "configmap",
        "bad",
        "-n",
        &other,
        "--from-literal=forbidden=x",
    ]);

    // The review it got: upstream's AdmissionReview request, with the user and object.
    let reviews = std::fs::read_to_string(&webhook().log).expect("review log");
    let review: serde_json::Value = reviews
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|r| r["request"]["name"] == "bad" && r["request"]["namespace"] == ns.as_str())
        .expect("the refused create was reviewed");
    let request = &review["request"];
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(request["kind"]["kind"], "ConfigMap");
    assert_eq!(request["resource"]["resource"], "configmaps");
    assert_eq!(request["userInfo"]["username"], "system:admin");
    assert_eq!(request["object"]["data"]["forbidden"], "x");
    server.ok(&[
        "delete",
        "validatingwebhookconfiguration",
        "deny.configmaps.skiff.test",
    ]);
}

#[test]
fn a_mutating_webhook_patches_pods_unless_a_match_condition_excludes_them() {
    let server = server();
    let ns = labelled_namespace(server, "mutate");
    let conditions = "  matchConditions:\n  - name: skip-me\n    expression: 'object.metadata.name != \"skip-me\"'\n";
    server.ok_with_input(
        &["create", "-f", "-"],
        &configuration(
            "MutatingWebhookConfiguration",
            "label.pods.skiff.test",
            "/mutate",
            PODS,
            &format!("{}{conditions}", only_namespaces_labelled("mutate")),
        ),
    );
    server.ok_with_input(&["create", "-n", &ns, "-f", "-"], &pod("web"));
    let label = server.ok(&[
        "get",
        "pod",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.labels.webhook-mutated}",
    ]);
    assert_eq!(label, "yes");
    // Defaults still apply after the webhook's patch.
    let policy = server.ok(&[
        "get",
        "pod",
        "web",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.restartPolicy}",
    ]);
    assert_eq!(policy, "Always");
    server.ok_with_input(&["create", "-n", &ns, "-f", "-"], &pod("skip-me"));
    let label = server.ok(&[
        "get",
        "pod",
        "skip-me",
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(!label.contains("webhook-mutated"), "{label}");
    server.ok(&[
        "delete",
        "mutatingwebhookconfiguration",
        "label.pods.skiff.test",
    ]);
}

#[test]
fn failure_policy_and_timeouts_decide_what_an_unreachable_webhook_means() {
    let server = server();
    let ns = labelled_namespace(server, "failing");
    let selector = only_namespaces_labelled("failing");
    server.ok_with_input(
        &["create", "-f", "-"],
        &configuration(
            "ValidatingWebhookConfiguration",
            "broken.skiff.test",
            "/broken",
            CONFIGMAPS,
            &format!("{selector}  failurePolicy: Fail\n"),
        ),
    );
    let refused = server.fails(&["create", "configmap", "a", "-n", &ns]);
    assert!(
        refused.contains("failed calling webhook \"broken.skiff.test\""),
        "{refused}"
    );
    server.ok(&[
        "patch",
        "validatingwebhookconfiguration",
        "broken.skiff.test",
        "--type=json",
        "-p",
        "[{\"op\":\"replace\",\"path\":\"/webhooks/0/failurePolicy\",\"value\":\"Ignore\"}]",
    ]);
    server.ok(&["create", "configmap", "a", "-n", &ns]);
    server.ok(&[
        "delete",
        "validatingwebhookconfiguration",
        "broken.skiff.test",
    ]);

    server.ok_with_input(
        &["create", "-f", "-"],
        &configuration(
            "ValidatingWebhookConfiguration",
            "slow.skiff.test",
            "/slow",
            CONFIGMAPS,
            &format!("{selector}  timeoutSeconds: 1\n"),
        ),
    );
    let started = std::time::Instant::now();
    let refused = server.fails(&["create", "configmap", "b", "-n", &ns]);
    assert!(refused.contains("context deadline exceeded"), "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the 1 s timeout held"
    );
    server.ok(&[
        "delete",
        "validatingwebhookconfiguration",
        "slow.skiff.test",
    ]);
}

#[test]
fn configurations_are_validated_and_never_sent_to_webhooks() {
    let server = server();
    let bad_cel =
        "  matchConditions:\n  - name: broken\n    expression: 'object.metadata.name =='\n";
    let refused = server.fails_with_input(
        &["create", "-f", "-"],
        &configuration(
            "ValidatingWebhookConfiguration",
            "cel.skiff.test",
            "/deny",
            CONFIGMAPS,
            bad_cel,
        ),
    );
    assert!(
        refused.contains("webhooks[0].matchConditions[0].expression"),
        "{refused}"
    );
    let refused = server.fails_with_input(
        &["create", "-f", "-"],
        &configuration(
            "ValidatingWebhookConfiguration",
            "short",
            "/deny",
            CONFIGMAPS,
            "",
        ),
    );
    assert!(
        refused.contains("should be a domain with at least three segments"),
        "{refused}"
    );

    // A webhook that refuses every change to webhook configurations cannot lock itself
    // (or any other) in place: they are never sent to webhooks.
    let configurations = "{operations: [\"*\"], apiGroups: [admissionregistration.k8s.io], apiVersions: [\"*\"], resources: [\"*\"]}";
    server.ok_with_input(
        &["create", "-f", "-"],
        &configuration(
            "ValidatingWebhookConfiguration",
            "deny-all.skiff.test",
            "/deny-all",
            configurations,
            "",
        ),
    );
    server.ok(&[
        "label",
        "validatingwebhookconfiguration",
        "deny-all.skiff.test",
        "touched=yes",
    ]);
    server.ok(&[
        "delete",
        "validatingwebhookconfiguration",
        "deny-all.skiff.test",
    ]);
}

/// A CRD whose versions differ in shape (`hostPort` in v1, `host` and `port` in v2),
/// converted by the test's webhook; stored in `storage`.
fn converted_crd(storage: &str) -> String {
    let hook = webhook();
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: hostports.stable.example.com\nspec:\n  group: stable.example.com\n  scope: Namespaced\n  names: {{plural: hostports, singular: hostport, kind: HostPort, listKind: HostPortList}}\n  conversion:\n    strategy: Webhook\n    webhook:\n      conversionReviewVersions: [v1]\n      clientConfig: {{url: \"https://127.0.0.1:{port}/convert\", caBundle: {ca}}}\n  versions:\n  - name: v1\n    served: true\n    storage: {v1}\n    schema: {{openAPIV3Schema: {{type: object, properties: {{hostPort: {{type: string}}}}}}}}\n  - name: v2\n    served: true\n    storage: {v2}\n    schema: {{openAPIV3Schema: {{type: object, properties: {{host: {{type: string}}, port: {{type: string}}}}}}}}\n",
        port = hook.port,
        ca = hook.ca_bundle,
        v1 = storage == "v1",
        v2 = storage == "v2",
    )
}

/// Each HostPort of the namespace as `version` shows it: name → (hostPort, host, port).
fn hostports(server: &Server, ns: &str, version: &str) -> Vec<(String, Value)> {
    let list = server.json(&[&format!("hostports.{version}.stable.example.com"), "-n", ns]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            assert_eq!(item["apiVersion"], format!("stable.example.com/{version}"));
            let fields = serde_json::json!([item["hostPort"], item["host"], item["port"]]);
            (
                item["metadata"]["name"].as_str().unwrap().to_string(),
                fields,
            )
        })
        .collect()
}

#[test]
fn a_conversion_webhook_converts_custom_objects_between_versions() {
    let server = server();
    // Webhook conversion needs a webhook that speaks ConversionReview v1.
    let refused = server.fails_with_input(
        &["create", "-f", "-"],
        &converted_crd("v1").replace(
            "conversionReviewVersions: [v1]",
            "conversionReviewVersions: [v9]",
        ),
    );
    assert!(
        refused.contains("spec.conversion.webhook.conversionReviewVersions: Invalid value"),
        "{refused}"
    );
    server.ok_with_input(&["apply", "-f", "-"], &converted_crd("v1"));
    server.ok(&[
        "wait",
        "--for=condition=established",
        "crd/hostports.stable.example.com",
        "--timeout=30s",
    ]);
    let ns = server.namespace("conversion");
    // Created in v1 (stored as is), read in v2: converted by the webhook.
    server.ok_with_input(
        &["apply", "-n", &ns, "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: HostPort\nmetadata: {name: first, labels: {kept: \"yes\"}}\nhostPort: \"localhost:8080\"\n",
    );
    let first = server.json(&["hostports.v2.stable.example.com", "first", "-n", &ns]);
    assert_eq!(first["apiVersion"], "stable.example.com/v2", "{first}");
    assert_eq!(
        (&first["host"], &first["port"]),
        (&"localhost".into(), &"8080".into())
    );
    assert!(first.get("hostPort").is_none(), "{first}");
    assert_eq!(first["metadata"]["labels"]["kept"], "yes");
    // Created in v2: converted to v1 to be stored (the v1 schema keeps hostPort).
    server.ok_with_input(
        &["apply", "-n", &ns, "-f", "-"],
        "apiVersion: stable.example.com/v2\nkind: HostPort\nmetadata: {name: second}\nhost: example.com\nport: \"80\"\n",
    );
    // A list in either version has every object in that version (upstream's "convert
    // mixed version list").
    assert_eq!(
        hostports(server, &ns, "v1"),
        [
            (
                "first".to_string(),
                serde_json::json!(["localhost:8080", null, null])
            ),
            (
                "second".to_string(),
                serde_json::json!(["example.com:80", null, null])
            ),
        ]
    );
    assert_eq!(
        hostports(server, &ns, "v2"),
        [
            (
                "first".to_string(),
                serde_json::json!([null, "localhost", "8080"])
            ),
            (
                "second".to_string(),
                serde_json::json!([null, "example.com", "80"])
            ),
        ]
    );
    // The storage version moves to v2: objects stored before still read in both.
    server.ok_with_input(&["apply", "-f", "-"], &converted_crd("v2"));
    server.ok_with_input(
        &["apply", "-n", &ns, "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: HostPort\nmetadata: {name: third}\nhostPort: \"10.0.0.1:53\"\n",
    );
    let v1: Vec<String> = hostports(server, &ns, "v1")
        .into_iter()
        .map(|(name, fields)| format!("{name}={}", fields[0].as_str().unwrap_or("?")))
        .collect();
    assert_eq!(
        v1,
        [
            "first=localhost:8080",
            "second=example.com:80",
            "third=10.0.0.1:53"
        ]
    );
    let reviews = std::fs::read_to_string(&webhook().log).expect("review log");
    assert!(
        reviews.contains("\"desiredAPIVersion\": \"stable.example.com/v2\""),
        "no ConversionReview asked for v2"
    );
    server.ok(&["delete", "crd", "hostports.stable.example.com"]);
}

/// `reinvocationPolicy: IfNeeded`: a webhook called before another one changed the
/// object is called once more and sees the change; with `Never` it is not. Also the
/// defaults upstream gives a webhook.
#[test]
fn mutating_webhooks_are_reinvoked_when_a_later_one_changes_the_object() {
    let server = server();
    let ns = labelled_namespace(server, "reinvoke");
    let observer = |policy: &str| {
        configuration(
            "MutatingWebhookConfiguration",
            "a-observer.skiff.test",
            "/observe",
            CONFIGMAPS,
            &format!(
                "  reinvocationPolicy: {policy}\n{}",
                only_namespaces_labelled("reinvoke")
            ),
        )
    };
    server.ok_with_input(&["apply", "-f", "-"], &observer("IfNeeded"));
    server.ok_with_input(
        &["apply", "-f", "-"],
        &configuration(
            "MutatingWebhookConfiguration",
            "b-mutator.skiff.test",
            "/mutate",
            CONFIGMAPS,
            &only_namespaces_labelled("reinvoke"),
        ),
    );
    // The mutator's webhook got upstream's defaults.
    let mutator = server.json(&["mutatingwebhookconfiguration", "b-mutator.skiff.test"]);
    let hook = &mutator["webhooks"][0];
    assert_eq!(
        (
            &hook["failurePolicy"],
            &hook["matchPolicy"],
            &hook["timeoutSeconds"],
            &hook["reinvocationPolicy"],
            &hook["rules"][0]["scope"],
        ),
        (
            &"Fail".into(),
            &"Equivalent".into(),
            &10.into(),
            &"Never".into(),
            &"*".into()
        ),
        "{hook}"
    );
    server.ok(&["create", "configmap", "seen", "-n", &ns]);
    let seen = server.json(&["configmap", "seen", "-n", &ns]);
    assert_eq!(seen["metadata"]["labels"]["webhook-mutated"], "yes");
    assert_eq!(
        seen["metadata"]["annotations"]["observed-labels"], "webhook-mutated",
        "the observer was not called again after the mutator: {seen}"
    );
    // Without reinvocation, the observer saw the object before the mutator only.
    server.ok_with_input(&["apply", "-f", "-"], &observer("Never"));
    server.ok(&["create", "configmap", "unseen", "-n", &ns]);
    let unseen = server.json(&["configmap", "unseen", "-n", &ns]);
    assert_eq!(unseen["metadata"]["labels"]["webhook-mutated"], "yes");
    assert_eq!(unseen["metadata"]["annotations"]["observed-labels"], "");
    server.ok(&[
        "delete",
        "mutatingwebhookconfiguration",
        "a-observer.skiff.test",
        "b-mutator.skiff.test",
    ]);
}

/// Names added and deleted as a watch or an informer saw them.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    added: std::collections::BTreeSet<String>,
    deleted: std::collections::BTreeSet<String>,
}

impl Seen {
    fn of(added: &[&str], deleted: &[&str]) -> Seen {
        Seen {
            added: added.iter().map(|n| n.to_string()).collect(),
            deleted: deleted.iter().map(|n| n.to_string()).collect(),
        }
    }
}

type Shared = std::sync::Arc<std::sync::Mutex<Seen>>;

fn record(seen: &Shared, added: bool, object: &kube::api::DynamicObject) {
    let name = object.metadata.name.clone().unwrap_or_default();
    if let Ok(mut seen) = seen.lock() {
        let set = if added {
            &mut seen.added
        } else {
            &mut seen.deleted
        };
        set.insert(name);
    }
}

/// Upstream's "CustomResourceFieldSelectors list/watch/informers with field selectors":
/// objects whose versions differ in shape (v1 `hostPort: "host:port"`, v2 `host` and
/// `port`, converted by a webhook), each version selectable by its own fields; lists,
/// watches and informers (kube's watcher: list, then watch) with field selectors in
/// either version see only what matches, and an object that stops matching (deleted, or
/// changed) leaves them as a deletion.
#[test]
fn custom_objects_are_listed_watched_and_informed_by_selectable_fields() {
    use futures::StreamExt;
    use kube::api::{Api, ApiResource, DynamicObject, WatchEvent, WatchParams};
    use kube::runtime::watcher;

    let server = server();
    let group = "fields.example.com";
    let crd = converted_crd("v1")
        .replace("hostports.stable.example.com", &format!("selectables.{group}"))
        .replace("group: stable.example.com", &format!("group: {group}"))
        .replace(
            "{plural: hostports, singular: hostport, kind: HostPort, listKind: HostPortList}",
            "{plural: selectables, singular: selectable, kind: Selectable}",
        )
        .replace(
            "properties: {hostPort: {type: string}}}}\n",
            "properties: {hostPort: {type: string}}}}\n    selectableFields: [{jsonPath: .hostPort}]\n",
        )
        .replace(
            "port: {type: string}}}}\n",
            "port: {type: string}}}}\n    selectableFields: [{jsonPath: .host}, {jsonPath: .port}]\n",
        );
    assert_eq!(crd.matches("selectableFields").count(), 2, "{crd}");
    server.ok_with_input(&["apply", "-f", "-"], &crd);
    server.ok(&[
        "wait",
        "--for=condition=established",
        &format!("crd/selectables.{group}"),
        "--timeout=30s",
    ]);
    let ns = server.namespace("selectable");
    let plural = |version: &str| format!("selectables.{version}.{group}");
    let resource = |version: &str| ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: "Selectable".into(),
        plural: "selectables".into(),
    };

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let client = runtime.block_on(server.client());
    let api = |version: &str| -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), &ns, &resource(version))
    };
    // Watches from now on, and informers, before anything exists.
    let watch = |version: &str, selector: &str| -> Shared {
        let seen = Shared::default();
        let (api, params, into) = (
            api(version),
            WatchParams::default().fields(selector),
            seen.clone(),
        );
        runtime.spawn(async move {
            let Ok(stream) = api.watch(&params, "0").await else {
                return;
            };
            let mut stream = stream.boxed();
            while let Some(Ok(event)) = stream.next().await {
                match event {
                    WatchEvent::Added(object) => record(&into, true, &object),
                    WatchEvent::Deleted(object) => record(&into, false, &object),
                    _ => {}
                }
            }
        });
        seen
    };
    let inform = |version: &str, selector: &str| -> Shared {
        let seen = Shared::default();
        let (api, into) = (api(version), seen.clone());
        let config = watcher::Config::default().fields(selector);
        runtime.spawn(async move {
            let mut events = watcher(api, config).boxed();
            while let Some(Ok(event)) = events.next().await {
                match event {
                    watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                        record(&into, true, &object)
                    }
                    watcher::Event::Delete(object) => record(&into, false, &object),
                    _ => {}
                }
            }
        });
        seen
    };
    let v2_host_watch = watch("v2", "host=host1");
    let v2_host_port_watch = watch("v2", "host=host1,port=80");
    let v1_host_port_watch = watch("v1", "hostPort=host1:80");
    let v2_host_informer = inform("v2", "host=host1");
    let v2_host_port_informer = inform("v2", "host=host1,port=80");

    let names = ["selectable-a", "selectable-b", "selectable-c"];
    for (name, fields) in names.iter().zip([
        "host: host1\nport: \"80\"",
        "host: host1\nport: \"8080\"",
        "host: host2",
    ]) {
        server.ok_with_input(
            &["create", "-n", &ns, "-f", "-"],
            &format!(
                "apiVersion: {group}/v2\nkind: Selectable\nmetadata: {{name: {name}}}\n{fields}\n"
            ),
        );
    }
    let listed = |version: &str, selector: &str| -> Vec<String> {
        let out = server.ok(&[
            "get",
            &plural(version),
            "-n",
            &ns,
            "--field-selector",
            selector,
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]);
        out.split_whitespace().map(str::to_string).collect()
    };
    assert_eq!(listed("v2", "host=host1"), ["selectable-a", "selectable-b"]);
    assert_eq!(listed("v2", "host=host1,port=80"), ["selectable-a"]);
    assert_eq!(listed("v1", "hostPort=host1:80"), ["selectable-a"]);
    assert_eq!(listed("v1", "hostPort=host1:8080"), ["selectable-b"]);
    // A field of the other version is not selectable in this one.
    let refused = server.fails(&[
        "get",
        &plural("v1"),
        "-n",
        &ns,
        "--field-selector",
        "host=host1",
    ]);
    assert!(refused.contains("host"), "{refused}");

    let settle = |what: &str, seen: &Shared, expected: Seen| {
        skiff_e2e::eventually(what, Duration::from_secs(30), || {
            let now = seen.lock().ok()?.clone();
            (now == expected).then_some(())
        });
    };
    let both = ["selectable-a", "selectable-b"];
    settle("v2 watch host=host1", &v2_host_watch, Seen::of(&both, &[]));
    settle(
        "v2 watch host=host1,port=80",
        &v2_host_port_watch,
        Seen::of(&both[..1], &[]),
    );
    settle(
        "v1 watch hostPort=host1:80",
        &v1_host_port_watch,
        Seen::of(&both[..1], &[]),
    );
    settle(
        "v2 informer host=host1",
        &v2_host_informer,
        Seen::of(&both, &[]),
    );
    settle(
        "v2 informer host=host1,port=80",
        &v2_host_port_informer,
        Seen::of(&both[..1], &[]),
    );

    // One deleted by selector, one changed so that it no longer matches.
    server.ok(&[
        "delete",
        &plural("v2"),
        "-n",
        &ns,
        "--field-selector",
        "host=host1,port=80",
        "--grace-period=0",
    ]);
    server.ok(&[
        "patch",
        &plural("v2"),
        "selectable-b",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"host": "host2"}"#,
    ]);
    assert!(listed("v2", "host=host1").is_empty());
    assert!(listed("v2", "host=host1,port=80").is_empty());
    settle(
        "v2 watch host=host1 after",
        &v2_host_watch,
        Seen::of(&both, &both),
    );
    settle(
        "v2 watch host=host1,port=80 after",
        &v2_host_port_watch,
        Seen::of(&both[..1], &both[..1]),
    );
    settle(
        "v1 watch hostPort=host1:80 after",
        &v1_host_port_watch,
        Seen::of(&both[..1], &both[..1]),
    );
    settle(
        "v2 informer host=host1 after",
        &v2_host_informer,
        Seen::of(&both, &both),
    );
    settle(
        "v2 informer host=host1,port=80 after",
        &v2_host_port_informer,
        Seen::of(&both[..1], &both[..1]),
    );
    server.ok(&["delete", "crd", &format!("selectables.{group}")]);
}
