//! `skiff server` with its node agent: a real pod runs on this machine and goes away
//! again, driven by the real kubectl.

use std::process::Command;
use std::time::{Duration, Instant};

use skiff_e2e::{ContainerRuntime, Server};

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1";

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn a_pod_runs_on_the_single_node_cluster() {
    a_pod_runs_on_the_single_node_cluster_on(ContainerRuntime::Skiff);
}

/// The same steps with containerd running the pods (`--container-runtime-endpoint`).
#[test]
fn a_pod_runs_on_the_single_node_cluster_with_containerd() {
    a_pod_runs_on_the_single_node_cluster_on(ContainerRuntime::Containerd);
}

fn a_pod_runs_on_the_single_node_cluster_on(runtime: ContainerRuntime) {
    let server = Server::start_node_on(runtime, &[]);

    wait_for("the node to be Ready", || {
        server
            .kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .stdout
            == b"True"
    });
    let node = server.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    // The node runs its pods with the runtime it was given, and says so.
    let runtime_version = server.ok(&[
        "get",
        "node",
        &node,
        "-o",
        "jsonpath={.status.nodeInfo.containerRuntimeVersion}",
    ]);
    assert!(
        runtime_version.starts_with(&format!("{}://", runtime.name())),
        "{runtime_version}"
    );
    // No nodeName: the scheduler places it.
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\n  namespace: default\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo hello from skiff; cd /var/run/secrets/kubernetes.io/serviceaccount && echo ns=$(cat namespace) && head -1 ca.crt && echo token=$(cat token); sleep 3600\"]\n"
    );
    server.ok_with_input(&["create", "-f", "-"], &pod);
    wait_for("the pod to run", || {
        server
            .kubectl(&["get", "pod", "hello", "-o", "jsonpath={.status.phase}"])
            .stdout
            == b"Running"
    });
    // The ServiceAccount admission gave the pod the `default` account's token, the
    // cluster CA and its namespace; the token is good for the API server.
    assert_eq!(
        server.ok(&[
            "get",
            "pod",
            "hello",
            "-o",
            "jsonpath={.spec.serviceAccountName}"
        ]),
        "default"
    );
    let mut logs = String::new();
    wait_for("the pod's output", || {
        logs = server.ok(&["logs", "hello"]);
        logs.contains("token=")
    });
    assert!(logs.contains("hello from skiff"), "{logs}");
    assert!(logs.contains("ns=default"), "{logs}");
    assert!(logs.contains("-----BEGIN CERTIFICATE-----"), "{logs}");
    let token = logs
        .lines()
        .find_map(|l| l.strip_prefix("token="))
        .expect("token line")
        .trim()
        .to_string();
    let whoami = Command::new("kubectl")
        .env("KUBECONFIG", "/dev/null")
        .args([
            &format!("--server=https://127.0.0.1:{}", server.port),
            &format!("--token={token}"),
            &format!(
                "--certificate-authority={}",
                server.data_dir.path().join("tls/ca.crt").display()
            ),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .expect("kubectl");
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "system:serviceaccount:default:default",
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );

    // kubectl exec: output on its streams, the exit code passed on, stdin passed in.
    let exec = server.kubectl(&[
        "exec",
        "hello",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "out\n");
    assert!(
        String::from_utf8_lossy(&exec.stderr).contains("err"),
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );
    assert_eq!(
        exec.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&exec.stderr)
    );
    let echoed =
        server.kubectl_with_input(&["exec", "-i", "hello", "--", "cat"], Some("piped in\n"));
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), "piped in\n");
    assert!(
        echoed.status.success(),
        "{}",
        String::from_utf8_lossy(&echoed.stderr)
    );

    // With a terminal (kubectl needs one of its own to ask for it: `script` gives it).
    let (terminal, shown) = on_a_terminal(
        &server,
        "kubectl exec -it hello -- sh -c 'tty; echo on-a-terminal'",
    );
    assert!(
        shown.contains("/dev/pts/") && shown.contains("on-a-terminal"),
        "{shown}{}",
        String::from_utf8_lossy(&terminal.stderr)
    );
    assert!(terminal.status.success(), "{shown}");

    port_forward_reaches_the_pod(&server);
    proxy_reaches_the_pod_and_its_service(&server);
    proxy_through_a_service_and_a_pod(&server);
    proxy_with_path_passes_every_method(&server);
    node_logs_through_the_node_proxy(&server, &node);
    attach_reaches_the_containers_own_process(&server);
    debug_joins_the_targets_processes(&server);
    logs_over_a_websocket(&server);
    static_pods_run_from_the_manifest_directory(&server, &node);
    top_shows_usage(&server, &node);
    kubelet_metrics_count_pods_and_runtime_calls(&server, &node);
    autoscaler_scales_a_busy_deployment(&server);

    let container_id = server.ok(&[
        "get",
        "pod",
        "hello",
        "-o",
        "jsonpath={.status.containerStatuses[0].containerID}",
    ]);
    assert!(
        container_id.starts_with(&format!("{}://", runtime.name())),
        "{container_id}"
    );
    let ip = server.ok(&["get", "pod", "hello", "-o", "jsonpath={.status.podIP}"]);
    assert!(
        ip.starts_with("10.88."),
        "pod IP {ip} from the default pod CIDR"
    );
    let events = server.ok(&[
        "get",
        "events",
        "-n",
        "default",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(events.contains("Scheduled"), "{events}");
    let table = server.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        table.contains("1/1") && table.contains("Running") && table.contains(&node),
        "{table}"
    );

    server.ok(&["delete", "pod", "hello", "--wait", "--timeout=60s"]);
    assert!(server.fails(&["get", "pod", "hello"]).contains("not found"));

    // A Deployment: the controller manager makes a ReplicaSet and its pods, the scheduler
    // places them, the kubelet runs them, and the Deployment reports them available.
    server.ok(&[
        "create",
        "deployment",
        "web",
        &format!("--image={IMAGE}"),
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]);
    wait_for("the deployment to be available", || {
        server
            .kubectl(&[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.status.availableReplicas}",
            ])
            .stdout
            == b"2"
    });
    let pods = server.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].status.phase}",
    ]);
    assert_eq!(pods, "Running Running");
    server.ok(&["scale", "deployment", "web", "--replicas=0"]);
    wait_for("the pods to go", || {
        server
            .kubectl(&["get", "pods", "-l", "app=web", "-o", "name"])
            .stdout
            .is_empty()
    });
}

/// The API server's `pods/proxy` and `services/proxy` to busybox's httpd: a page of the
/// web server that `port_forward_reaches_the_pod` left running on 8080, by pod and port,
/// by a named container port's absence refused, and through a Service's port to its
/// ready endpoint; the server's own 404 passes through. (Upstream's proxy conformance
/// steps, with agnhost's porter, are `proxy_through_a_service_and_a_pod` and
/// `proxy_with_path_passes_every_method`.)
fn proxy_reaches_the_pod_and_its_service(server: &Server) {
    let pod = "/api/v1/namespaces/default/pods";
    assert_eq!(
        server.ok(&["get", "--raw", &format!("{pod}/hello:8080/proxy/")]),
        "forwarded\n"
    );
    assert_eq!(
        server.ok(&[
            "get",
            "--raw",
            &format!("{pod}/http:hello:8080/proxy/index.html")
        ]),
        "forwarded\n"
    );
    let missing = server.fails(&["get", "--raw", &format!("{pod}/hello:8080/proxy/missing")]);
    assert!(missing.contains("NotFound"), "{missing}");
    let unnamed = server.fails(&["get", "--raw", &format!("{pod}/hello:web/proxy/")]);
    assert!(unnamed.contains("no container port named"), "{unnamed}");
    server.ok(&["label", "pod", "hello", "app=hello-web", "--overwrite"]);
    server.ok_with_input(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: hello-web, namespace: default}\nspec:\n  selector: {app: hello-web}\n  ports: [{name: web, port: 80, targetPort: 8080}]\n",
    );
    let service = "/api/v1/namespaces/default/services";
    let page = skiff_e2e::eventually(
        "the Service proxy to reach the pod",
        Duration::from_secs(60),
        || {
            let out = server.kubectl(&["get", "--raw", &format!("{service}/hello-web:web/proxy/")]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    );
    assert_eq!(page, "forwarded\n");
    assert_eq!(
        server.ok(&[
            "get",
            "--raw",
            &format!("{service}/http:hello-web:80/proxy/index.html")
        ]),
        "forwarded\n"
    );
    server.ok(&["delete", "service", "hello-web"]);

    // Upstream's "ReplicaSet, run basic image" and "ReplicationController, run basic
    // image": each replica serves its own name, read through its pod's proxy by the
    // container port's name.
    let serve = format!(
        "    metadata: {{labels: {{app: serve-hostname}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: {IMAGE}\n        command: [\"sh\", \"-c\", \"mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n        ports: [{{name: http, containerPort: 8080}}]\n"
    );
    for (kind, head) in [
        (
            "replicaset",
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: serve-hostname, namespace: default}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: serve-hostname}}\n  template:\n",
        ),
        (
            "replicationcontroller",
            "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: serve-hostname, namespace: default}\nspec:\n  replicas: 2\n  selector: {app: serve-hostname}\n  template:\n",
        ),
    ] {
        server.ok_with_input(&["apply", "-f", "-"], &format!("{head}{serve}"));
        server.ok(&[
            "wait",
            "--for=condition=Ready",
            "pod",
            "-l",
            "app=serve-hostname",
            "--timeout=90s",
        ]);
        let names = server.ok(&[
            "get",
            "pods",
            "-l",
            "app=serve-hostname",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]);
        let names: Vec<&str> = names.split_whitespace().collect();
        assert_eq!(names.len(), 2, "{kind}: {names:?}");
        for name in names {
            let served = skiff_e2e::eventually(
                &format!("{name} to serve its name"),
                Duration::from_secs(30),
                || {
                    let out = server.kubectl(&["get", "--raw", &format!("{pod}/{name}:http/proxy/")]);
                    out.status
                        .success()
                        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
                },
            );
            assert_eq!(served.trim(), name, "{kind}");
        }
        server.ok(&["delete", kind, "serve-hostname", "--wait", "--timeout=60s"]);
        wait_for("the replicas gone", || {
            server
                .ok(&["get", "pods", "-l", "app=serve-hostname", "-o", "name"])
                .trim()
                .is_empty()
        });
    }
}

/// Upstream's "Proxy, through a service and a pod": a ReplicationController's one pod
/// runs agnhost's `porter` with a text on each of several plain and TLS ports, behind a
/// Service with several ports (some targeting named container ports, some numbers);
/// every URL form upstream checks, through `services/proxy` by port name (with and
/// without `http:`, and `https:` for the TLS ports) and through `pods/proxy` by port
/// number (none: the first container port; with and without `http:`; `https:`),
/// answers with that port's text, on every one of several attempts, HTML links
/// rewritten through the proxy that served them.
fn proxy_through_a_service_and_a_pod(server: &Server) {
    let image = skiff_e2e::agnhost::IMAGE;
    server.ok_with_input(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: proxy-service, namespace: default}\nspec:\n  selector: {proxy-service-target: \"true\"}\n  ports:\n  - {name: portname1, port: 80, targetPort: dest1}\n  - {name: portname2, port: 81, targetPort: 162}\n  - {name: tlsportname1, port: 443, targetPort: tlsdest1}\n  - {name: tlsportname2, port: 444, targetPort: 462}\n",
    );
    let link = r#"<a href="/rewriteme">test</a>"#;
    let tls_link = r#"<a href="/tlsrewriteme">test</a>"#;
    server.ok_with_input(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: ReplicationController\nmetadata: {{name: proxy-service, namespace: default}}\nspec:\n  replicas: 1\n  selector: {{proxy-service-target: \"true\"}}\n  template:\n    metadata: {{labels: {{proxy-service-target: \"true\"}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: porter\n        image: {image}\n        command: [/agnhost, porter]\n        env:\n        - {{name: SERVE_PORT_80, value: '{link}'}}\n        - {{name: SERVE_PORT_1080, value: '{link}'}}\n        - {{name: SERVE_PORT_160, value: foo}}\n        - {{name: SERVE_PORT_162, value: bar}}\n        - {{name: SERVE_TLS_PORT_443, value: '{tls_link}'}}\n        - {{name: SERVE_TLS_PORT_460, value: tls baz}}\n        - {{name: SERVE_TLS_PORT_462, value: tls qux}}\n        ports: [{{containerPort: 80}}, {{name: dest1, containerPort: 160}}, {{name: dest2, containerPort: 162}}, {{name: tlsdest1, containerPort: 460}}, {{name: tlsdest2, containerPort: 462}}]\n        readinessProbe:\n          httpGet: {{port: 80}}\n          initialDelaySeconds: 1\n          periodSeconds: 2\n"
        ),
    );
    server.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "proxy-service-target=true",
        "--timeout=90s",
    ]);
    let pod = server.ok(&[
        "get",
        "pods",
        "-l",
        "proxy-service-target=true",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let service = |target: &str| format!("/api/v1/namespaces/default/services/{target}/proxy/");
    let pods = |target: &str| format!("/api/v1/namespaces/default/pods/{target}/proxy/");
    // The Service's endpoint is ready once its proxy answers.
    skiff_e2e::eventually("the Service's endpoint", Duration::from_secs(60), || {
        let out = server.kubectl(&["get", "--raw", &service("proxy-service:portname1")]);
        out.status.success().then_some(())
    });
    // The page's absolute link is rewritten to go through the proxy that served it,
    // as upstream's proxy does with HTML.
    let rewritten = |target: &str| {
        link.replace(
            "/rewriteme",
            &format!("/api/v1/namespaces/default/pods/{target}/proxy/rewriteme"),
        )
    };
    let expectations = [
        (service("proxy-service:portname1"), "foo".to_string()),
        (service("http:proxy-service:portname1"), "foo".into()),
        (service("proxy-service:portname2"), "bar".into()),
        (service("http:proxy-service:portname2"), "bar".into()),
        // No port: the pod's first declared container port, 80, as upstream's.
        (pods(&pod), rewritten(&pod)),
        (
            pods(&format!("{pod}:1080")),
            rewritten(&format!("{pod}:1080")),
        ),
        (
            pods(&format!("http:{pod}:1080")),
            rewritten(&format!("http:{pod}:1080")),
        ),
        (pods(&format!("{pod}:160")), "foo".into()),
        (pods(&format!("http:{pod}:160")), "foo".into()),
        (pods(&format!("{pod}:162")), "bar".into()),
        (pods(&format!("http:{pod}:162")), "bar".into()),
        // The TLS ports, through an https backend connection.
        (
            service("https:proxy-service:tlsportname1"),
            "tls baz".into(),
        ),
        (
            service("https:proxy-service:tlsportname2"),
            "tls qux".into(),
        ),
        (
            pods(&format!("https:{pod}:443")),
            tls_link.replace(
                "/tlsrewriteme",
                &format!("/api/v1/namespaces/default/pods/https:{pod}:443/proxy/tlsrewriteme"),
            ),
        ),
        (pods(&format!("https:{pod}:460")), "tls baz".into()),
        (pods(&format!("https:{pod}:462")), "tls qux".into()),
    ];
    for attempt in 0..3 {
        for (path, body) in &expectations {
            let started = Instant::now();
            assert_eq!(
                &server.ok(&["get", "--raw", path]),
                body,
                "{attempt}: {path}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{path} was slow"
            );
        }
    }
    server.ok(&[
        "delete",
        "replicationcontroller",
        "proxy-service",
        "--wait",
        "--timeout=60s",
    ]);
    server.ok(&["delete", "service", "proxy-service"]);
}

/// Upstream's "Proxy, validate ProxyWithPath responses": a pod running `agnhost porter
/// --json-response` with `SERVE_PORT_80=foo`, and a Service on port 80 in front of it;
/// every method through `pods/proxy` and `services/proxy` with a path answers 200, and
/// (but HEAD) with porter's JSON naming the method the pod received and the text.
fn proxy_with_path_passes_every_method(server: &Server) {
    let image = skiff_e2e::agnhost::IMAGE;
    server.ok_with_input(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: agnhost, namespace: default, labels: {{test: response}}}}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: agnhost\n    image: {image}\n    command: [/agnhost, porter, --json-response]\n    env: [{{name: SERVE_PORT_80, value: foo}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: test-service, namespace: default, labels: {{test: response}}}}\nspec:\n  selector: {{test: response}}\n  ports: [{{port: 80, targetPort: 80, protocol: TCP}}]\n"
        ),
    );
    server.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/agnhost",
        "--timeout=90s",
    ]);
    for base in [
        "/api/v1/namespaces/default/pods/agnhost/proxy",
        "/api/v1/namespaces/default/services/test-service/proxy",
    ] {
        for method in ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"] {
            let path = format!("{base}/some/path/with/{method}");
            // The Service's endpoint may take a moment to be published.
            let answer =
                skiff_e2e::eventually(&format!("{method} {path}"), Duration::from_secs(60), || {
                    try_api_request(server, method, &path)
                });
            if method == "HEAD" {
                let status = answer.lines().next().unwrap_or_default();
                assert!(
                    status.starts_with("HTTP/") && status.contains(" 200"),
                    "HEAD {path}: {answer}"
                );
            } else {
                assert_eq!(
                    answer,
                    format!(r#"{{"Method":"{method}","Body":"foo"}}"#),
                    "{method} {path}"
                );
            }
        }
    }
    // Upstream's "Proxy responses" variant: no path, the method in the query. GET and HEAD
    // are redirected to the proxied root (a client follows to porter's answer there); the
    // other methods reach the root directly.
    for base in [
        "/api/v1/namespaces/default/pods/agnhost/proxy",
        "/api/v1/namespaces/default/services/test-service/proxy",
    ] {
        for method in ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"] {
            let path = format!("{base}?method={method}");
            if matches!(method, "GET" | "HEAD") {
                let headers = try_api_request(server, "HEAD", &path).unwrap_or_default();
                let location = format!("location: {base}/?method={method}");
                assert!(
                    headers
                        .lines()
                        .next()
                        .is_some_and(|l| l.starts_with("HTTP/") && l.contains(" 301"))
                        && headers
                            .lines()
                            .any(|l| l.trim().eq_ignore_ascii_case(&location)),
                    "{method} {path}: {headers}"
                );
            }
            let answer = try_api_request_following(server, method, &path).unwrap_or_default();
            if method == "HEAD" {
                let last_status = answer.lines().rfind(|l| l.starts_with("HTTP/"));
                assert!(
                    last_status.is_some_and(|s| s.contains(" 200")),
                    "HEAD {path}: {answer}"
                );
            } else {
                assert_eq!(
                    answer,
                    format!(r#"{{"Method":"{method}","Body":"foo"}}"#),
                    "{method} {path}"
                );
            }
        }
    }
    server.ok(&["delete", "service", "test-service"]);
    server.ok(&["delete", "pod", "agnhost", "--wait", "--timeout=60s"]);
}

/// Upstream's node `/logs/` proxy step: the kubelet's listing of the node's log
/// directory (`/var/log`) and a file under it, through the API server's
/// `nodes/{name}/proxy/logs/`; a user without `nodes/proxy` is refused until granted it.
fn node_logs_through_the_node_proxy(server: &Server, node: &str) {
    let dir = std::path::PathBuf::from(format!("/var/log/skiff-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory under /var/log");
    std::fs::write(dir.join("node.log"), "a line of the node's log\n").expect("a log file");
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a name")
        .to_string();
    let logs = format!("/api/v1/nodes/{node}/proxy/logs/");
    for attempt in 0..5 {
        let listing = server.ok(&["get", "--raw", &logs]);
        assert!(
            listing.contains("<pre>")
                && listing.contains(&format!(r#"<a href="{name}/">{name}/</a>"#)),
            "{attempt}: {listing}"
        );
    }
    let sub = server.ok(&["get", "--raw", &format!("{logs}{name}/")]);
    assert!(sub.contains(r#"<a href="node.log">node.log</a>"#), "{sub}");
    assert_eq!(
        server.ok(&["get", "--raw", &format!("{logs}{name}/node.log")]),
        "a line of the node's log\n"
    );
    // The kubelet's port named explicitly reaches the kubelet too; another port is
    // proxied on the node's address (here the API server's own, over https).
    let port = server.ok(&[
        "get",
        "node",
        node,
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let explicit = server.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}:{port}/proxy/logs/{name}/node.log"),
    ]);
    assert_eq!(explicit, "a line of the node's log\n");
    let other = server.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/https:{node}:{}/proxy/healthz", server.port),
    ]);
    assert_eq!(other, "ok");
    let missing = server.fails(&["get", "--raw", &format!("{logs}{name}/nothing")]);
    assert!(
        missing.contains("NotFound") || missing.contains("not found"),
        "{missing}"
    );
    // Authorization: the API server asks for `nodes/proxy` on every node proxy path.
    let denied = server.fails(&["get", "--raw", &logs, "--as", "jane"]);
    assert!(denied.contains("nodes/proxy"), "{denied}");
    server.ok(&[
        "create",
        "clusterrole",
        "node-logs-reader",
        "--verb=get",
        "--resource=nodes/proxy",
    ]);
    server.ok(&[
        "create",
        "clusterrolebinding",
        "node-logs-reader",
        "--clusterrole=node-logs-reader",
        "--user=jane",
    ]);
    let listing = skiff_e2e::eventually(
        "jane to be granted nodes/proxy",
        Duration::from_secs(30),
        || server.try_ok(&["get", "--raw", &logs, "--as", "jane"]),
    );
    assert!(listing.contains(&format!("{name}/")), "{listing}");
    server.ok(&["delete", "clusterrolebinding", "node-logs-reader"]);
    server.ok(&["delete", "clusterrole", "node-logs-reader"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request to the API server with the admin's certificate: the answer's body (with
/// `HEAD`, its status line and headers), if it was a success.
fn try_api_request(server: &Server, method: &str, path: &str) -> Option<String> {
    curl_api(server, method, path, &[])
}

/// [`try_api_request`] following redirects, as Go's HTTP client does.
fn try_api_request_following(server: &Server, method: &str, path: &str) -> Option<String> {
    curl_api(server, method, path, &["--location"])
}

/// A request with any method to the API server, as the admin (curl with the admin's
/// client certificate: kubectl has no verb for every method); the response body.
fn curl_api(server: &Server, method: &str, path: &str, extra: &[&str]) -> Option<String> {
    let method_args = match method {
        "HEAD" => vec!["-I"],
        _ => vec!["-X", method],
    };
    let out = server.curl(
        &[&["-sS", "--fail-with-body"], extra, &method_args].concat(),
        path,
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kubectl port-forward` to a web server in the pod, the way kubectl 1.37 does it by
/// default (SPDY tunnelled in a WebSocket) and with plain SPDY: two requests on their own
/// connections (one large response, which no flow-control window may stall), then a port
/// nothing listens on, which kubectl reports.
fn port_forward_reaches_the_pod(server: &Server) {
    server.ok(&[
        "exec",
        "hello",
        "--",
        "sh",
        "-c",
        "mkdir -p /tmp/www && echo forwarded > /tmp/www/index.html && \
         dd if=/dev/zero of=/tmp/www/big bs=1024 count=2048 2>/dev/null && \
         httpd -p 8080 -h /tmp/www",
    ]);
    for websockets in ["true", "false"] {
        let local = skiff_e2e::free_port();
        let unused = skiff_e2e::free_port();
        let mut forward = Command::new("kubectl")
            .env("KUBECONFIG", server.kubeconfig())
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets)
            .args([
                "port-forward",
                "-v=4",
                "pod/hello",
                &format!("{local}:8080"),
                &format!("{unused}:9999"),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl port-forward");
        wait_for("kubectl port-forward to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", local)).is_ok()
        });
        let page = String::from_utf8_lossy(&http_get(local, "/")).into_owned();
        let big = http_get(local, "/big");
        // Nothing listens on 9999 in the pod: the connection closes empty, kubectl says why.
        let refused = http_get(unused, "/");
        let _ = forward.kill();
        let output = forward
            .wait_with_output()
            .expect("kubectl port-forward output");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            page.starts_with("HTTP/1.1 200 OK") && page.ends_with("forwarded\n"),
            "websockets={websockets}: {page}; kubectl: {stderr}"
        );
        let body = big
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| big.len() - at - 4);
        assert_eq!(body, Some(2048 * 1024), "the whole 2 MiB body came through");
        assert!(refused.is_empty());
        assert!(
            stderr.contains("error forwarding port 9999 to pod"),
            "kubectl's report of the refused port: {stderr}"
        );
        // The tunnel was taken, not refused and fallen back from.
        assert!(!stderr.contains("fallback"), "{stderr}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains(&format!("Forwarding from 127.0.0.1:{local} -> 8080")),
            "{stdout}"
        );
    }
}

/// An HTTP/1.0 GET on loopback `port`: the whole answer, or what came before the
/// connection closed.
fn http_get(port: u16, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut connection = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    connection
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(connection, "GET {path} HTTP/1.0\r\n\r\n").expect("request");
    let mut answer = Vec::new();
    let _ = connection.read_to_end(&mut answer);
    answer
}

/// `kubectl attach` to a running container's output, and `kubectl run -i --rm`, which
/// attaches to a `stdinOnce` container's stdin, then deletes the pod.
fn attach_reaches_the_containers_own_process(server: &Server) {
    let ticker = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ticker\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"sleep 4; for i in 1 2 3; do echo tick $i; echo tock $i >&2; sleep 0.3; done\"]\n"
    );
    server.ok_with_input(&["create", "-f", "-"], &ticker);
    wait_for("the ticker to run", || {
        server
            .kubectl(&["get", "pod", "ticker", "-o", "jsonpath={.status.phase}"])
            .stdout
            == b"Running"
    });
    let attached = server.kubectl(&["attach", "ticker"]);
    let (out, err) = (
        String::from_utf8_lossy(&attached.stdout),
        String::from_utf8_lossy(&attached.stderr),
    );
    assert!(attached.status.success(), "{out}{err}");
    assert!(out.contains("tick 1\ntick 2\ntick 3\n"), "{out}{err}");
    assert!(err.contains("tock 3"), "{out}{err}");

    let run = server.kubectl_with_input(
        &[
            "run",
            "-i",
            "--rm",
            "--restart=Never",
            &format!("--image={IMAGE}"),
            "reader",
            "--",
            "sh",
            "-c",
            "read line; echo got $line",
        ],
        Some("hello through attach\n"),
    );
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        out.contains("got hello through attach"),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success());
    assert!(server
        .fails(&["get", "pod", "reader"])
        .contains("not found"));

    // `run -it`: the container runs on a terminal of its own, which kubectl attaches to
    // and sizes as its own terminal (set by `stty` under `script`, which gives kubectl
    // one).
    let command = format!(
        "stty cols 123 rows 45; kubectl run -it --rm --restart=Never --image={IMAGE} shell -- sh -c 'sleep 3; tty; stty size; echo on-the-pod-terminal'"
    );
    let (terminal, shown) = on_a_terminal(server, &command);
    assert!(
        shown.contains("/dev/pts/")
            && shown.contains("45 123")
            && shown.contains("on-the-pod-terminal"),
        "{shown}{}",
        String::from_utf8_lossy(&terminal.stderr)
    );
    assert!(terminal.status.success(), "{shown}");
    assert!(server.fails(&["get", "pod", "shell"]).contains("not found"));
}

/// `pods/log` answers a WebSocket handshake (upstream's "logs over websocket", as the
/// official Python client's WebSocket support opens it) with the log as messages: raw
/// under `binary.k8s.io`, base64 text under `base64.binary.k8s.io`.
fn logs_over_a_websocket(server: &Server) {
    let script = r#"
import base64, sys
from kubernetes import client, config
from kubernetes.stream.ws_client import create_websocket
cfg = client.Configuration()
config.load_kube_config(config_file=sys.argv[1], client_configuration=cfg)
url = cfg.host.replace("https://", "wss://") + "/api/v1/namespaces/default/pods/hello/log?container=c"
for protocol in ["binary.k8s.io", "base64.binary.k8s.io"]:
    ws = create_websocket(cfg, url, headers={"sec-websocket-protocol": protocol})
    text = b""
    while True:
        opcode, data = ws.recv_data()
        if opcode == 8:
            break
        text += data if protocol == "binary.k8s.io" else base64.b64decode(data)
    print(protocol, ws.getheaders().get("sec-websocket-protocol"), repr(text.decode()), flush=True)
"#;
    let out = Command::new("python3")
        .args(["-c", script, &server.kubeconfig().display().to_string()])
        .output()
        .expect("python3");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "{shown}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (line, protocol) in lines.iter().zip(["binary.k8s.io", "base64.binary.k8s.io"]) {
        assert!(
            line.starts_with(&format!("{protocol} {protocol} ")),
            "{line}"
        );
        assert!(line.contains("hello from skiff"), "{line}");
    }
}

/// `skiff server` runs the pods of `DATA_DIR/pod-manifests`; each shows in the API as a
/// mirror pod named after the node, which comes back when deleted and goes with the file.
fn static_pods_run_from_the_manifest_directory(server: &Server, node: &str) {
    let manifest = server.data_dir.path().join("pod-manifests/static-web.yaml");
    std::fs::write(
        &manifest,
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {IMAGE}\n    command: [\"sh\", \"-c\", \"echo static; sleep 3600\"]\n"),
    )
    .expect("write the manifest");
    let mirror = format!("static-web-{node}");
    let phase = |server: &Server| {
        server
            .kubectl(&["get", "pod", &mirror, "-o", "jsonpath={.status.phase}"])
            .stdout
    };
    wait_for("the mirror pod to run", || phase(server) == b"Running");
    let annotations = server.ok(&[
        "get",
        "pod",
        &mirror,
        "-o",
        "jsonpath={.metadata.annotations.kubernetes\\.io/config\\.source} {.metadata.ownerReferences[0].kind}",
    ]);
    assert_eq!(annotations, "file Node");
    wait_for("the static pod's log", || {
        server.kubectl(&["logs", &mirror]).stdout == b"static\n"
    });
    let uid =
        |server: &Server| server.ok(&["get", "pod", &mirror, "-o", "jsonpath={.metadata.uid}"]);
    let first = uid(server);
    server.ok(&["delete", "pod", &mirror, "--wait=false"]);
    wait_for("a new mirror pod", || {
        server
            .kubectl(&["get", "pod", &mirror, "-o", "jsonpath={.metadata.uid}"])
            .stdout
            .as_slice()
            .ne(first.as_bytes())
            && phase(server) == b"Running"
    });
    std::fs::remove_file(&manifest).expect("remove the manifest");
    wait_for("the mirror pod gone", || {
        server.kubectl(&["get", "pod", &mirror]).status.code() == Some(1)
    });
}

/// Runs a shell command whose kubectl gets a terminal of its own (kubectl asks for one
/// with `-t` only when its stdin is a terminal): `script` gives it one. Returns the
/// output and what was shown on the terminal.
fn on_a_terminal(server: &Server, command: &str) -> (std::process::Output, String) {
    let output = Command::new("script")
        .env("KUBECONFIG", server.kubeconfig())
        .args(["-qec", command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let shown = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, shown)
}

/// `kubectl debug`: an ephemeral container added to the running pod through
/// `pods/ephemeralcontainers`, on a terminal kubectl attaches to, in the PID namespace of
/// the container it targets (its PID 1 is the target's `sleep 3600`).
fn debug_joins_the_targets_processes(server: &Server) {
    let command = format!(
        "kubectl debug -it hello --image={IMAGE} --image-pull-policy=IfNotPresent --target=c -c debugger -- sh -c 'sleep 3; cat /proc/1/cmdline; echo; echo debugged'"
    );
    let (terminal, shown) = on_a_terminal(server, &command);
    assert!(
        shown.contains("3600") && shown.contains("debugged"),
        "{shown}{}",
        String::from_utf8_lossy(&terminal.stderr)
    );
    wait_for("the ephemeral container's exit in the pod's status", || {
        server.ok(&[
            "get",
            "pod",
            "hello",
            "-o",
            "jsonpath={.status.ephemeralContainerStatuses[0].name} {.status.ephemeralContainerStatuses[0].state.terminated.exitCode}",
        ]) == "debugger 0"
    });

    // Upstream's ephemeral container steps: one that keeps printing `polo`, reached by
    // exec and logs; the pod's `ephemeralcontainers` subresource lists both, and another
    // is added by replacing it.
    server.ok(&[
        "debug",
        "hello",
        &format!("--image={IMAGE}"),
        "--image-pull-policy=IfNotPresent",
        "-c",
        "polo",
        "--",
        "sh",
        "-c",
        "while true; do echo polo; sleep 2; done",
    ]);
    let marco = skiff_e2e::eventually(
        "exec in the ephemeral container",
        Duration::from_secs(60),
        || server.try_ok(&["exec", "hello", "-c", "polo", "--", "/bin/echo", "marco"]),
    );
    assert_eq!(marco.trim(), "marco");
    wait_for("the ephemeral container's log", || {
        server.ok(&["logs", "hello", "-c", "polo"]).contains("polo")
    });
    let path = "/api/v1/namespaces/default/pods/hello/ephemeralcontainers";
    let names = |pod: &serde_json::Value| -> Vec<String> {
        pod["spec"]["ephemeralContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let mut pod: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "--raw", path])).expect("the pod");
    assert_eq!(names(&pod), ["debugger", "polo"]);
    if let Some(list) = pod["spec"]["ephemeralContainers"].as_array_mut() {
        list.push(serde_json::json!({
            "name": "debugger2", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "while true; do echo polo; sleep 2; done"],
            "stdin": true, "tty": true,
        }));
    }
    server.ok_with_input(&["replace", "--raw", path, "-f", "-"], &pod.to_string());
    let pod: serde_json::Value =
        serde_json::from_str(&server.ok(&["get", "--raw", path])).expect("the pod");
    assert_eq!(names(&pod), ["debugger", "polo", "debugger2"]);
    wait_for("the second ephemeral container running", || {
        let started = server.ok(&[
            "get",
            "pod",
            "hello",
            "-o",
            "jsonpath={.status.ephemeralContainerStatuses[?(@.name==\"debugger2\")].state.running.startedAt}",
        ]);
        !started.is_empty()
    });
}

/// `kubectl top`: the metrics API, made from the kubelet's usage summary, shows a
/// spinning container's CPU and its memory, and the node's.
fn top_shows_usage(server: &Server, node: &str) {
    server.ok(&[
        "exec",
        "hello",
        "--",
        "sh",
        "-c",
        "while :; do :; done >/dev/null 2>&1 &",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    // CPU rates need two samples after the spinner started.
    let (millicores, shown) = loop {
        let top = server.kubectl(&["top", "pod", "hello", "--no-headers"]);
        let shown = format!(
            "{}{}",
            String::from_utf8_lossy(&top.stdout),
            String::from_utf8_lossy(&top.stderr)
        );
        let cpu = shown
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.strip_suffix('m'))
            .and_then(|c| c.parse::<u64>().ok());
        match cpu {
            Some(m) if m >= 50 => break (m, shown),
            _ if Instant::now() > deadline => panic!("kubectl top pod hello: {shown}"),
            _ => std::thread::sleep(Duration::from_secs(2)),
        }
    };
    assert!(shown.starts_with("hello "), "{shown}");
    let memory = shown.split_whitespace().nth(2).unwrap_or_default();
    assert!(memory.ends_with("Mi"), "memory of hello in {shown}");
    assert!(
        millicores <= 2000,
        "at most the machine's two cores: {shown}"
    );
    let nodes = server.ok(&["top", "node", "--no-headers"]);
    assert!(nodes.starts_with(node), "{nodes}");
    let raw = server.ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/hello",
    ]);
    let metrics: serde_json::Value = serde_json::from_str(&raw).expect("PodMetrics JSON");
    assert_eq!(metrics["kind"], "PodMetrics");
    // Every running container, the ephemeral ones too, in no particular order (the
    // runtime's: containerd's differs from Skiff's).
    let containers: Vec<&str> = metrics["containers"]
        .as_array()
        .map(|all| all.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(containers.contains(&"c"), "{metrics}");
    // The kubelet's Summary, through the API server's node proxy.
    let raw = server.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
    ]);
    let summary: serde_json::Value = serde_json::from_str(&raw).expect("Summary JSON");
    assert_eq!(summary["node"]["nodeName"], node);
    let pod = summary["pods"]
        .as_array()
        .and_then(|pods| {
            pods.iter()
                .find(|p| p["podRef"]["name"] == "hello")
                .cloned()
        })
        .expect("hello in the summary");
    assert!(
        pod["containers"][0]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{pod}"
    );
}

/// The kubelet's `/metrics`, read through the API server's node proxy as Prometheus
/// scrapes it: the running pods the runtime has, its CRI calls, and the start-up
/// latency of the pods it started.
fn kubelet_metrics_count_pods_and_runtime_calls(server: &Server, node: &str) {
    let metrics = server.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/metrics"),
    ]);
    let value = |series: &str| {
        skiff_e2e::metric_value(&metrics, series)
            .unwrap_or_else(|| panic!("{series} missing from:\n{metrics}"))
    };
    let running = server.ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        &format!("spec.nodeName={node},status.phase=Running"),
        "--no-headers",
    ]);
    assert_eq!(
        value("kubelet_running_pods "),
        running.lines().count() as f64,
        "{running}"
    );
    assert!(value(r#"kubelet_runtime_operations_total{operation_type="run_podsandbox"}"#) >= 1.0);
    assert!(value(r#"kubelet_runtime_operations_total{operation_type="create_container"}"#) >= 1.0);
    assert!(value("kubelet_pod_start_duration_seconds_count ") >= 1.0);
    assert!(value(r#"kubelet_started_containers_total{container_type="container"}"#) >= 1.0);
    assert!(value(r#"kubelet_running_containers{container_state="running"}"#) >= 1.0);
    assert_eq!(
        value(&format!(r#"kubelet_node_name{{node="{node}"}}"#)),
        1.0
    );

    // The resource metrics metrics-server scrapes: samples carry their own timestamps.
    let resource = server.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/metrics/resource"),
    ]);
    let sample = |series: &str| -> (f64, i64) {
        let line = resource
            .lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("{series} missing from:\n{resource}"));
        let fields: Vec<&str> = line[series.len()..].split_whitespace().collect();
        match fields.as_slice() {
            [value] => (value.parse().unwrap_or(f64::NAN), 0),
            [value, at] => (value.parse().unwrap_or(f64::NAN), at.parse().unwrap_or(0)),
            _ => panic!("malformed sample {line:?}"),
        }
    };
    assert_eq!(sample("resource_scrape_error ").0, 0.0);
    let (cpu, at) = sample("node_cpu_usage_seconds_total ");
    assert!(cpu > 0.0 && at > 1_700_000_000_000, "{resource}");
    assert!(sample("node_memory_working_set_bytes ").0 > 0.0);
    let first = running.lines().next().unwrap_or_default();
    let (namespace, pod) = match first.split_whitespace().collect::<Vec<_>>()[..] {
        [namespace, pod, ..] => (namespace, pod),
        _ => panic!("no running pod: {running}"),
    };
    let labels = format!(r#"{{namespace="{namespace}",pod="{pod}"}}"#);
    assert!(sample(&format!("pod_memory_working_set_bytes{labels} ")).0 > 0.0);
    assert!(
        resource
            .lines()
            .any(|l| l.starts_with("container_start_time_seconds{")
                && l.contains(&format!(r#"namespace="{namespace}",pod="{pod}""#))),
        "{resource}"
    );
}

/// `kubectl autoscale`: a Deployment whose one pod spins far above half its CPU request
/// is scaled up to the autoscaler's maximum, which reports why. Then its pods go idle and
/// a `behavior` allowing one pod less per 10 minutes, without a stabilization window,
/// takes it down by exactly one.
fn autoscaler_scales_a_busy_deployment(server: &Server) {
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: burner\nspec:\n  selector:\n    matchLabels: {{app: burner}}\n  template:\n    metadata:\n      labels: {{app: burner}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: {IMAGE}\n        command: [\"sh\", \"-c\", \"while [ ! -e /tmp/idle ]; do :; done; exec sleep 3600\"]\n        resources:\n          requests: {{cpu: 100m}}\n"
    );
    server.ok_with_input(&["apply", "-f", "-"], &deployment);
    server.ok(&[
        "autoscale",
        "deployment",
        "burner",
        "--cpu=50%",
        "--min=1",
        "--max=3",
    ]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let replicas = server.ok(&[
            "get",
            "deployment",
            "burner",
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        if replicas == "3" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "burner has {replicas} replicas; autoscaler: {}",
            server.ok(&["get", "hpa", "burner", "-o", "yaml"])
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let hpa = server.ok(&["get", "hpa", "burner", "-o", "json"]);
    let hpa: serde_json::Value = serde_json::from_str(&hpa).expect("HPA JSON");
    let utilization = hpa["status"]["currentMetrics"][0]["resource"]["current"]
        ["averageUtilization"]
        .as_i64()
        .unwrap_or(0);
    assert!(utilization > 50, "{hpa}");
    let limited = hpa["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "ScalingLimited").cloned())
        .unwrap_or_default();
    assert_eq!(limited["reason"], "TooManyReplicas", "{hpa}");
    let events = server.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=burner",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(events.contains("SuccessfulRescale"), "{events}");

    server.ok(&[
        "patch",
        "hpa",
        "burner",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":0,"policies":[{"type":"Pods","value":1,"periodSeconds":600}]}}}}"#,
    ]);
    server.ok(&["rollout", "status", "deployment/burner", "--timeout=120s"]);
    let pods = server.ok(&[
        "get",
        "pods",
        "-l",
        "app=burner",
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    for pod in pods.split_whitespace() {
        server.ok(&["exec", pod, "--", "touch", "/tmp/idle"]);
    }
    let replicas = || {
        server.ok(&[
            "get",
            "deployment",
            "burner",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
    };
    wait_for("the idle burner scaled down by one", || replicas() == "2");
    let hpa = server.ok(&["get", "hpa", "burner", "-o", "json"]);
    let hpa: serde_json::Value = serde_json::from_str(&hpa).expect("HPA JSON");
    let condition = |type_: &str| {
        hpa["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
            .unwrap_or_default()
    };
    // The metrics ask for 1; the policy allows one pod less per period.
    assert_eq!(
        condition("ScalingLimited")["reason"],
        "ScaleDownLimit",
        "{hpa}"
    );
    assert_eq!(
        hpa["spec"]["behavior"]["scaleUp"]["selectPolicy"], "Max",
        "{hpa}"
    );
    // Two more evaluations within the period leave it at 2.
    std::thread::sleep(Duration::from_secs(35));
    assert_eq!(replicas(), "2");
    server.ok(&["delete", "hpa", "burner"]);
    server.ok(&["delete", "deployment", "burner", "--wait=false"]);
}
