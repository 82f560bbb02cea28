//! `skiff agent --server URL --token T`: a node joins a control plane started with
//! `--disable-agent`, trusting the server's CA only because its hash is the token's, gets
//! its kubelet's and proxy's certificates through CertificateSigningRequests, and runs a
//! real pod; a token naming another CA is refused before anything is sent.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use skiff_e2e::{eventually, skiff_binary, Server};

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1";

/// The agent process; its pods are stopped and it is killed when the test ends.
struct Agent<'a> {
    server: &'a Server,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        self.server.stop_pods(&self.dir.path().join("runtime"));
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "agent log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn agent_command(url: &str, token: &str, dir: &std::path::Path) -> Command {
    let mut command = Command::new(skiff_binary());
    command
        .args(["agent", "--server", url, "--token", token])
        .args(skiff_e2e::NODE_TEST_FLAGS)
        .arg("--data-dir")
        .arg(dir)
        .arg("--cni-conf-dir")
        .arg(dir.join("net.d"));
    command
}

#[test]
fn an_agent_joins_with_the_node_token() {
    let server = Server::start_cluster(&["--disable-agent"]);
    let _node = skiff_e2e::node_lock();
    let url = format!("https://127.0.0.1:{}", server.port);
    let token_path: PathBuf = server.data_dir.path().join("node-token");
    let token = std::fs::read_to_string(&token_path).expect("the server's node token");
    assert!(token.starts_with("K10"), "{token}");

    // A token for another CA: refused before the agent trusts or sends anything.
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let wrong = format!("K10{}::abcdef.0123456789abcdef", "0".repeat(64));
    let refused = agent_command(&url, &wrong, elsewhere.path())
        .output()
        .expect("skiff agent");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("not the one the token names"), "{said}");

    let dir = tempfile::tempdir().expect("temp dir");
    let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
    let child = agent_command(&url, token.trim(), dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("skiff agent");
    let agent = Agent {
        server: &server,
        child,
        dir,
    };
    eventually(
        "the agent's node to be Ready",
        Duration::from_secs(60),
        || {
            let ready = server.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[0].status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            (ready.stdout == b"True").then_some(())
        },
    );
    skiff_e2e::import_image(
        &agent.dir.path().join("runtime"),
        &skiff_e2e::busybox_archive(),
    );

    server.ok(&[
        "run",
        "joined",
        "--image",
        IMAGE,
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "echo hello from the agent; cat /etc/resolv.conf",
    ]);
    let logs = eventually("the pod's output", Duration::from_secs(60), || {
        let out = server.kubectl(&["logs", "joined"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("hello from the agent").then_some(text)
    });
    // The agent found the cluster DNS the server runs and gave it to the pod.
    assert!(logs.contains("nameserver 10.96.0.10"), "{logs}");
    // The token only bootstrapped: the kubelet acts with its own certificate, asked for
    // (with the proxy's) through CertificateSigningRequests the controller manager
    // approved and signed.
    let kubeconfig =
        std::fs::read_to_string(agent.dir.path().join("kubelet.kubeconfig")).expect("kubeconfig");
    assert!(kubeconfig.contains("client-certificate-data") && !kubeconfig.contains("token:"));
    let requests = server.ok(&[
        "get",
        "csr",
        "-o",
        "jsonpath={range .items[*]}{.spec.signerName} {.status.conditions[0].reason} {.spec.username}{\"\\n\"}{end}",
    ]);
    let id = token
        .trim()
        .split("::")
        .nth(1)
        .and_then(|t| t.split('.').next())
        .expect("token id");
    for signer in [
        "kubernetes.io/kube-apiserver-client-kubelet",
        "kubernetes.io/kube-apiserver-client",
    ] {
        assert!(
            requests.contains(&format!("{signer} AutoApproved system:bootstrap:{id}")),
            "{requests}"
        );
    }
}
