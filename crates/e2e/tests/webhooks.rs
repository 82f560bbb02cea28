//! Admission webhooks (ValidatingWebhookConfiguration, MutatingWebhookConfiguration): the
//! API server calls a webhook the test serves over HTTPS (Python's `http.server` with a
//! certificate from a CA the test makes with openssl), verified against the
//! configuration's `caBundle`, and obeys its answers, selectors, match conditions,
//! timeouts and failure policy, as upstream's webhook conformance steps check.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

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
