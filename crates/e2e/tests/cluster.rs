//! `skiff server` with its node agent: a real pod runs on this machine and goes away
//! again, driven by the real kubectl.

use std::process::Command;
use std::time::{Duration, Instant};

use skiff_e2e::Server;

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
    let server = Server::start_node();

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
    let terminal = Command::new("script")
        .env("KUBECONFIG", server.kubeconfig())
        .args([
            "-qec",
            "kubectl exec -it hello -- sh -c 'tty; echo on-a-terminal'",
            "/dev/null",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let shown = String::from_utf8_lossy(&terminal.stdout);
    assert!(
        shown.contains("/dev/pts/") && shown.contains("on-a-terminal"),
        "{shown}{}",
        String::from_utf8_lossy(&terminal.stderr)
    );
    assert!(terminal.status.success(), "{shown}");

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
