//! `kubectl logs` end to end, as root: real kubectl → the API server's
//! `pods/log` → the kubelet's HTTPS server → the runtime's CRI log files.
//! One test walks every scenario so the suite pays once for start-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use skiff_e2e::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_logs_end_to_end() {
    kubectl_logs_on(ContainerRuntime::Skiff).await;
}

/// The same steps with containerd running the pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_logs_end_to_end_with_containerd() {
    kubectl_logs_on(ContainerRuntime::Containerd).await;
}

async fn kubectl_logs_on(kind: ContainerRuntime) {
    init_tracing();
    let server = Server::start(&[]);
    let runtime = Runtime::start_on(kind);
    let (kubelet, _logs_dir) = start_kubelet(&server, &runtime).await;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tokio::task::block_in_place(|| scenarios(&server))
    }));
    if result.is_err() {
        eprintln!("runtime log:\n{}", runtime.log());
        eprintln!("server log:\n{}", server.log());
    }
    kubelet.abort();
    let _ = kubelet.await;
    drop(runtime);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn running(server: &Server, ns: &str, name: &str) -> Value {
    wait_for(60, &format!("{name} Running"), || {
        let p = pod_json(server, ns, name)?;
        (p["status"]["phase"] == "Running").then_some(p)
    })
}

/// The numbers of `line N` lines, in order.
fn numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.rsplit_once("line ").and_then(|(_, n)| n.parse().ok()))
        .collect()
}

fn scenarios(server: &Server) {
    let node = wait_for(60, "node Ready", || {
        let out = server.kubectl(&["get", "node", NODE, "-o", "json"]);
        let n: Value = serde_json::from_slice(&out.stdout).ok()?;
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(n)
    });
    // The kubelet reports the port it really listens on.
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap();
    assert!(port > 0 && port != 10250, "{port}");

    // Discovery lists pods/log with upstream's verbs.
    let resources =
        serde_json::from_str::<Value>(&server.ok(&["get", "--raw", "/api/v1"])).unwrap();
    let log = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/log")
        .expect("pods/log in discovery")
        .clone();
    assert_eq!(log["verbs"], serde_json::json!(["get"]));
    assert_eq!(log["kind"], "Pod");

    let ns = server.namespace("logs");
    let ns = ns.as_str();

    // A pod printing a numbered line every half second.
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml(
            "counter",
            "",
            &container(
                "c",
                "i=1; while true; do echo line $i; i=$((i+1)); sleep 0.5; done",
                "",
            ),
        ),
    );
    running(server, ns, "counter");
    let all = wait_for(30, "three lines", || {
        let out = server.ok(&["logs", "-n", ns, "counter"]);
        (numbers(&out).len() >= 3).then_some(out)
    });
    let n = numbers(&all);
    assert_eq!(n[..3], [1, 2, 3], "{all}");
    assert!(all.starts_with("line 1\nline 2\nline 3\n"), "{all}");

    // --tail: the last lines only, consecutive.
    let tail = server.ok(&["logs", "-n", ns, "counter", "--tail=2"]);
    let t = numbers(&tail);
    assert_eq!(t.len(), 2, "{tail}");
    assert_eq!(t[1], t[0] + 1, "{tail}");
    assert!(t[0] >= 2, "{tail}");

    // --timestamps: RFC3339Nano prefixes.
    let stamped = server.ok(&["logs", "-n", ns, "counter", "--timestamps", "--tail=3"]);
    for line in stamped.lines() {
        let (ts, rest) = line.split_once(' ').unwrap();
        assert!(rest.starts_with("line "), "{line}");
        assert!(ts.ends_with('Z'), "{line}");
        ts.parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }

    // --limit-bytes cuts the output.
    let limited = server.ok(&["logs", "-n", ns, "counter", "--limit-bytes=9"]);
    assert_eq!(limited, "line 1\nli");

    // No previous run yet: upstream's error.
    let err = server.fails(&["logs", "-n", ns, "counter", "--previous"]);
    assert!(
        err.contains(r#"previous terminated container "c" in pod "counter" not found"#),
        "{err}"
    );

    // -f: a line written after kubectl started arrives on its stdout.
    let mut follow = Command::new("kubectl")
        .args(["logs", "-f", "-n", ns, "counter", "--tail=1"])
        .env("KUBECONFIG", server.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("first line");
    let first_n = numbers(&first)[0];
    let mut later = None;
    while later.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("a line written after kubectl logs -f started");
        later = numbers(&line).first().copied().filter(|n| *n > first_n);
    }
    assert_eq!(later, Some(first_n + 1));
    let _ = follow.kill();
    let _ = follow.wait();
    drop(rx);
    let _ = reader.join();

    // -f ends when the container does, with everything it wrote.
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml(
            "short",
            "  restartPolicy: Never\n",
            &container("c", "echo a; sleep 3; echo b", ""),
        ),
    );
    running(server, ns, "short");
    let mut follow = Command::new("kubectl")
        .args(["logs", "-f", "-n", ns, "short"])
        .env("KUBECONFIG", server.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let status = wait_for(30, "kubectl logs -f to end with the container", || {
        follow.try_wait().ok().flatten()
    });
    let out = follow.wait_with_output().expect("output");
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\nb\n");

    // Two containers: -c picks one; a partial line is joined; stderr too.
    let spec = format!(
        "{}{}",
        container("c1", "echo from-c1; sleep 3600", ""),
        container(
            "c2",
            "printf 'from-'; sleep 1; echo c2; echo oops >&2; sleep 3600",
            ""
        )
    );
    server.ok_with_input(&["apply", "-n", ns, "-f", "-"], &pod_yaml("two", "", &spec));
    running(server, ns, "two");
    let c2 = wait_for(30, "c2 log", || {
        let out = server.ok(&["logs", "-n", ns, "two", "-c", "c2"]);
        out.contains("oops").then_some(out)
    });
    assert!(c2.lines().any(|l| l == "from-c2"), "{c2}");
    assert!(c2.lines().any(|l| l == "oops"), "{c2}");
    assert_eq!(
        server.ok(&["logs", "-n", ns, "two", "-c", "c1"]),
        "from-c1\n"
    );
    // Real kubectl picks the first container itself, and says so...
    let out = server.kubectl(&["logs", "-n", ns, "two"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-c1\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r#"Defaulted container "c1" out of: c1, c2"#)
    );
    // ...so the API server's own error shows on the raw request.
    let err = server.fails(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/two/log"),
    ]);
    assert!(
        err.contains("a container name must be specified for pod two, choose one of: [c1 c2]"),
        "{err}"
    );
    let err = server.fails(&["logs", "-n", ns, "two", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod two"),
        "{err}"
    );

    // --previous after a restart: the first run's log; the current run's without.
    let work = "    volumeMounts:\n    - name: work\n      mountPath: /work\n";
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml(
            "restarter",
            "  volumes:\n  - name: work\n    emptyDir: {}\n",
            &container(
                "c",
                "if [ -f /work/ran ]; then echo second; sleep 3600; else touch /work/ran; echo first; exit 1; fi",
                work,
            ),
        ),
    );
    wait_for(60, "restarter restarted and running", || {
        let p = pod_json(server, ns, "restarter")?;
        let cs = &p["status"]["containerStatuses"][0];
        (cs["restartCount"].as_i64()? >= 1 && cs["state"]["running"].is_object()).then_some(())
    });
    let current = wait_for(20, "second run's log", || {
        let out = server.ok(&["logs", "-n", ns, "restarter"]);
        (!out.is_empty()).then_some(out)
    });
    assert_eq!(current, "second\n");
    assert_eq!(
        server.ok(&["logs", "-n", ns, "restarter", "--previous"]),
        "first\n"
    );

    // Errors as upstream words them.
    let err = server.fails(&["logs", "-n", ns, "ghost"]);
    assert!(err.contains(r#"pods "ghost" not found"#), "{err}");
    let err = server.fails(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/counter/log?tailLines=-2"),
    ]);
    assert!(err.contains("must be greater than or equal to 0"), "{err}");
    // An unscheduled pod has an empty log, as upstream answers.
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pending\nspec:\n  nodeSelector:\n    nowhere: \"true\"\n  containers:\n{}",
            container("c", "true", "")
        ),
    );
    assert_eq!(server.ok(&["logs", "-n", ns, "pending"]), "");

    // The kubelet itself: no client certificate, no logs.
    let out = Command::new("curl")
        .args([
            "-sk",
            &format!("https://127.0.0.1:{port}/containerLogs/{ns}/counter/c"),
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Unauthorized");

    server.ok(&["delete", "pods", "-n", ns, "--all", "--timeout=60s"]);
}
