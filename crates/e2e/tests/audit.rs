//! The audit log (`--audit-policy-file`, `--audit-log-path`): requests made with the real
//! kubectl come out as upstream's `audit.k8s.io/v1` Events, one JSON object per line, at
//! the level the policy's first matching rule gives.

use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{eventually, kubectl_as, Server};

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/version"]
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets"]
- level: RequestResponse
  namespaces: ["audited"]
  resources:
  - group: ""
    resources: ["configmaps"]
- level: Request
  resources:
  - group: apps
    resources: ["deployments"]
- level: Metadata
"#;

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON event"))
        .collect()
}

/// The events for requests to `uri_part` with `verb`.
fn find<'a>(all: &'a [Value], verb: &str, uri_part: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|e| {
            e["verb"] == verb
                && e["requestURI"]
                    .as_str()
                    .is_some_and(|u| u.contains(uri_part))
        })
        .collect()
}

#[test]
fn requests_are_audited_at_their_policy_level() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.yaml");
    let log = dir.path().join("audit.log");
    std::fs::write(&policy, POLICY).expect("policy");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "eve-token,eve,1003\n").expect("tokens");
    let server = Server::start(&[
        "--audit-policy-file",
        policy.to_str().expect("path"),
        "--audit-log-path",
        log.to_str().expect("path"),
        "--token-auth-file",
        tokens.to_str().expect("path"),
    ]);
    server.ok(&["create", "namespace", "audited"]);
    let secret_value = format!("hunter2-{}", std::process::id());
    server.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={secret_value}"),
    ]);
    server.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "audited",
        "--from-literal=mode=fast",
    ]);
    server.ok(&["create", "deployment", "web", "--image=busybox"]);
    let eve = server.token_kubeconfig("eve", "eve-token");
    assert!(!kubectl_as(&eve, &["get", "secrets"]).status.success());
    server.ok(&[
        "get",
        "configmaps",
        "-n",
        "audited",
        "--as",
        "alice",
        "--as-group",
        "system:masters",
    ]);
    let watched = server.watch_output(&["get", "secrets", "--watch", "-o", "name"], || {
        server.ok(&["create", "secret", "generic", "later", "--from-literal=k=v"]);
    });
    assert!(watched.contains("secret/later"), "{watched}");

    let all = eventually(
        "the watch's ResponseComplete event",
        Duration::from_secs(10),
        || {
            let all = events(&log);
            let complete = all.iter().any(|e| {
                e["verb"] == "watch"
                    && e["stage"] == "ResponseComplete"
                    && e["objectRef"]["resource"] == "secrets"
            });
            complete.then_some(all)
        },
    );
    assert!(!all.is_empty());
    for event in &all {
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(event["kind"], "Event");
        assert_ne!(event["stage"], "RequestReceived", "omitted by the policy");
        assert!(!event["requestURI"]
            .as_str()
            .unwrap_or_default()
            .starts_with("/readyz"));
    }
    let log_text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !log_text.contains(&secret_value),
        "Metadata level keeps the secret's data out"
    );

    let created = find(&all, "create", "/api/v1/namespaces/default/secrets");
    let secret = created.first().expect("the secret's create is audited");
    assert_eq!(secret["level"], "Metadata");
    assert_eq!(secret["user"]["username"], "system:admin");
    assert_eq!(secret["responseStatus"]["code"], 201);
    assert_eq!(secret["objectRef"]["resource"], "secrets");
    assert_eq!(secret["objectRef"]["namespace"], "default");
    assert_eq!(
        secret["annotations"]["authorization.k8s.io/decision"],
        "allow"
    );
    assert!(secret.get("requestObject").is_none());
    assert!(secret["userAgent"]
        .as_str()
        .is_some_and(|a| a.starts_with("kubectl")));
    assert_eq!(secret["sourceIPs"][0], "127.0.0.1");

    let config = find(&all, "create", "/api/v1/namespaces/audited/configmaps");
    let config = config.first().expect("the config map's create");
    assert_eq!(config["level"], "RequestResponse");
    assert_eq!(config["requestObject"]["data"]["mode"], "fast");
    assert_eq!(config["responseObject"]["metadata"]["name"], "settings");
    assert!(config["responseObject"]["metadata"]["uid"].is_string());

    let deployment = find(
        &all,
        "create",
        "/apis/apps/v1/namespaces/default/deployments",
    );
    let deployment = deployment.first().expect("the deployment's create");
    assert_eq!(deployment["level"], "Request");
    assert_eq!(
        deployment["requestObject"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
    assert!(deployment.get("responseObject").is_none());

    let refused = find(&all, "list", "/api/v1/namespaces/default/secrets");
    let refused = refused
        .iter()
        .find(|e| e["user"]["username"] == "eve")
        .expect("eve's refused list");
    assert_eq!(refused["responseStatus"]["code"], 403);
    assert_eq!(
        refused["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );

    let impersonated = find(&all, "list", "/api/v1/namespaces/audited/configmaps");
    let impersonated = impersonated.first().expect("the impersonated list");
    assert_eq!(impersonated["user"]["username"], "system:admin");
    assert_eq!(impersonated["impersonatedUser"]["username"], "alice");

    let watch: Vec<&Value> = all
        .iter()
        .filter(|e| e["verb"] == "watch" && e["objectRef"]["resource"] == "secrets")
        .collect();
    let stages: Vec<&str> = watch.iter().filter_map(|e| e["stage"].as_str()).collect();
    assert_eq!(stages, ["ResponseStarted", "ResponseComplete"], "{watch:?}");
    assert_eq!(
        watch[0]["auditID"], watch[1]["auditID"],
        "one request, one audit ID"
    );
}
