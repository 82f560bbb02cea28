//! API aggregation, as upstream's "Aggregator supports the sample apiserver" conformance
//! test exercises it: an extension API server (the test's own, `python/aggregated_server.py`,
//! in place of the sample-apiserver image) registered with an APIService behind a
//! Service. The API server checks it and says `Available`; kubectl discovers its group
//! and drives its resources through the API server, which authorizes each request
//! itself and passes the user on in the request headers the extension server trusts
//! from the front-proxy CA the `extension-apiserver-authentication` ConfigMap publishes.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::aggregated::{authentication_config, wait_for_availability, ExtensionServer};
use skiff_e2e::{eventually, Server};

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start(&[]))
}

#[test]
fn local_api_services_say_where_each_group_is_served() {
    let server = server();
    let table = eventually("the local APIServices", Duration::from_secs(20), || {
        let table = server.ok(&["get", "apiservices"]);
        table.contains("v2.autoscaling").then_some(table)
    });
    for name in [
        "v1. ",
        "v1.apps ",
        "v1.apiregistration.k8s.io ",
        "v2.autoscaling ",
    ] {
        let row = table
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1..3], ["Local", "True"], "{row}");
    }
    let core = server.json(&["apiservice", "v1."]);
    assert_eq!(
        core["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"],
        "onstart"
    );
    assert_eq!(core["spec"]["groupPriorityMinimum"], 18000);
    let condition = &core["status"]["conditions"][0];
    assert_eq!(
        (
            &condition["type"],
            &condition["status"],
            &condition["reason"]
        ),
        (&"Available".into(), &"True".into(), &"Local".into())
    );

    // What extension servers trust: the cluster CA for clients, and for the
    // aggregator's headers a CA of its own, whose one client name is allowed.
    let data = authentication_config(server);
    assert!(data["client-ca-file"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert_ne!(data["client-ca-file"], data["requestheader-client-ca-file"]);
    assert_eq!(
        data["requestheader-allowed-names"],
        "[\"front-proxy-client\"]"
    );
    assert_eq!(
        data["requestheader-username-headers"],
        "[\"X-Remote-User\"]"
    );
    assert_eq!(data["requestheader-group-headers"], "[\"X-Remote-Group\"]");
    assert_eq!(
        data["requestheader-extra-headers-prefix"],
        "[\"X-Remote-Extra-\"]"
    );
    let reader = server.json(&[
        "role",
        "-n",
        "kube-system",
        "extension-apiserver-authentication-reader",
    ]);
    assert_eq!(
        reader["rules"][0]["resourceNames"][0],
        "extension-apiserver-authentication"
    );

    // APIServices are validated as upstream validates them.
    let refused = server.fails_with_input(
        &["create", "-f", "-"],
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1.wrong.example.com\nspec:\n  group: wardle.example.com\n  version: v1\n  groupPriorityMinimum: 0\n  versionPriority: 10\n  caBundle: Q0E=\n  insecureSkipTLSVerify: true\n  service: {namespace: default, name: api}\n",
    );
    for expected in [
        "metadata.name: Invalid value: \"v1.wrong.example.com\": must be `spec.version+\".\"+spec.group`: \"v1.wardle.example.com\"",
        "spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000",
        "spec.insecureSkipTLSVerify: Invalid value: true: may not be true if caBundle is present",
    ] {
        assert!(refused.contains(expected), "{refused}");
    }
}

#[test]
fn an_extension_api_server_serves_its_group_through_the_aggregator() {
    let server = server();
    let ns = server.namespace("wardle");
    let backend = ExtensionServer::start(server, &ns, "sample-api");
    let api_service = "v1alpha1.wardle.example.com";
    server.ok_with_input(
        &["apply", "-f", "-"],
        &backend.api_service("wardle.example.com", "v1alpha1"),
    );
    // No Service yet: unavailable, and requests for the group answer 503.
    let missing = wait_for_availability(server, api_service, "False", "ServiceNotFound");
    assert_eq!(
        missing["message"],
        format!("service/sample-api in \"{ns}\" is not present")
    );
    let refused = server.fails(&["get", "--raw", "/apis/wardle.example.com/v1alpha1"]);
    assert!(refused.contains("ServiceUnavailable"), "{refused}");
    // A Service without a selector, its endpoint named by hand (the test's server runs
    // on this machine, not in a pod).
    backend.expose(server);
    let passed = wait_for_availability(server, api_service, "True", "Passed");
    assert_eq!(passed["message"], "all checks passed");
    assert!(server
        .ok(&["get", "apiservice", api_service])
        .contains(&format!("{ns}/sample-api")));

    // Discovery: the legacy group list and kubectl's aggregated discovery both have it.
    let groups: Value =
        serde_json::from_str(&server.ok(&["get", "--raw", "/apis"])).expect("APIGroupList");
    assert!(groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "wardle.example.com"
            && g["preferredVersion"]["groupVersion"] == "wardle.example.com/v1alpha1"));
    let resources = eventually(
        "kubectl to discover flunders",
        Duration::from_secs(20),
        || {
            let out = server.ok(&["api-resources", "--api-group=wardle.example.com"]);
            out.contains("flunders").then_some(out)
        },
    );
    assert!(
        resources.contains("fl") && resources.contains("Flunder"),
        "{resources}"
    );

    // Resources, through the API server, as the admin.
    server.ok_with_input(
        &["create", "-n", &ns, "-f", "-"],
        "apiVersion: wardle.example.com/v1alpha1\nkind: Flunder\nmetadata:\n  name: rest-api\n",
    );
    let flunder = server.json(&["flunder", "rest-api", "-n", &ns]);
    assert_eq!(
        flunder["metadata"]["annotations"]["wardle.example.com/created-by"],
        "system:admin"
    );
    assert!(server
        .ok(&["get", "fl", "-n", &ns, "-o", "name"])
        .contains("flunder.wardle.example.com/rest-api"));
    let create = backend
        .requests()
        .into_iter()
        .find(|r| r["method"] == "POST")
        .expect("the create reached the extension server");
    let groups = create["identity"]["groups"].as_array().unwrap();
    assert!(groups.contains(&"system:masters".into()), "{create}");
    assert!(groups.contains(&"system:authenticated".into()), "{create}");
    // This server's credentials stay here.
    assert!(backend
        .requests()
        .iter()
        .all(|r| r["authorization"].is_null()));

    // Authorization is the API server's: a user without a role is refused before the
    // request goes anywhere; with one, the extension server sees that user.
    let forbidden = server.fails(&["get", "flunders", "-n", &ns, "--as", "jane"]);
    assert!(
        forbidden.contains(&format!("flunders.wardle.example.com is forbidden: User \"jane\" cannot list resource \"flunders\" in API group \"wardle.example.com\" in the namespace \"{ns}\"")),
        "{forbidden}"
    );
    assert!(backend
        .requests()
        .iter()
        .all(|r| r["identity"]["user"] != "jane"));
    server.ok(&[
        "create",
        "role",
        "flunder-reader",
        "-n",
        &ns,
        "--verb=get,list,watch",
        "--resource=flunders.wardle.example.com",
    ]);
    server.ok(&[
        "create",
        "rolebinding",
        "jane-reads",
        "-n",
        &ns,
        "--role=flunder-reader",
        "--user=jane",
    ]);
    eventually("jane to be allowed", Duration::from_secs(10), || {
        server
            .kubectl(&["get", "flunders", "-n", &ns, "--as", "jane"])
            .status
            .success()
            .then_some(())
    });
    let jane = backend
        .requests()
        .into_iter()
        .rev()
        .find(|r| r["method"] == "GET" && r["path"].as_str().unwrap().ends_with("/flunders"))
        .unwrap();
    assert_eq!(jane["identity"]["user"], "jane", "{jane}");

    // Answers stream: the watch's first event arrives while the extension server
    // still holds the response open (for 30 seconds).
    let mut watch = Command::new("kubectl")
        .args(["get", "flunders", "-n", &ns, "--watch-only", "-o", "name"])
        .env("KUBECONFIG", server.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl on PATH");
    let stdout = watch.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let first = received.recv_timeout(Duration::from_secs(15));
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(
        first.as_deref(),
        Ok("flunder.wardle.example.com/rest-api"),
        "the watch event did not arrive while the stream was open"
    );

    server.ok(&["delete", "flunder", "rest-api", "-n", &ns]);
    let gone = server.fails(&["get", "flunder", "rest-api", "-n", &ns]);
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );

    // Without endpoints it is unavailable again; without the APIService, the group is
    // no longer discovered.
    server.ok(&["delete", "endpointslice", "sample-api-1", "-n", &ns]);
    let missing = wait_for_availability(server, api_service, "False", "MissingEndpoints");
    assert_eq!(
        missing["message"],
        format!(
            "endpoints for service/sample-api in \"{ns}\" have no addresses with port name \"\""
        )
    );
    // The APIService's own lifecycle, as upstream's test walks it: labelled, listed by
    // label, a condition of the test's own patched into its status (kept beside the
    // server's), deleted by label.
    server.ok(&["label", "apiservice", api_service, "e2e-apiservice=patched"]);
    let listed = server.ok(&[
        "get",
        "apiservices",
        "-l",
        "e2e-apiservice=patched",
        "-o",
        "name",
    ]);
    assert_eq!(
        listed.trim(),
        format!("apiservice.apiregistration.k8s.io/{api_service}")
    );
    server.ok(&[
        "patch",
        "apiservice",
        api_service,
        "--subresource=status",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/status/conditions/-", "value": {"type": "StatusUpdated", "status": "True", "reason": "E2E", "message": "Set from an e2e test", "lastTransitionTime": "2026-01-01T00:00:00Z"}}]"#,
    ]);
    let patched = server.json(&["apiservice", api_service]);
    let types: Vec<&str> = patched["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, ["Available", "StatusUpdated"], "{patched}");
    server.ok(&["delete", "apiservices", "-l", "e2e-apiservice=patched"]);
    let groups = server.ok(&["get", "--raw", "/apis"]);
    assert!(!groups.contains("wardle.example.com"), "{groups}");
}
