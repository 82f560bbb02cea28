//! Static pods end to end, as root: a real `skiff server`, a real `skiff
//! runtime` and this kubelet in-process with a manifest directory. One test
//! walks a static pod's life: started from its file, mirrored in the API,
//! left running across a kubelet restart, surviving the deletion of its mirror, replaced when its file changes,
//! stopped when its file goes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;
use skiff_e2e::Server;
use skiff_kubelet::cri::Cri;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_pods_run_from_files_with_mirror_pods() {
    init_tracing();
    let server = Server::start(&[]);
    let runtime = Runtime::start();
    let manifests = runtime.dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let (kubelet, _) = start_kubelet_with(&server, &runtime, Some(manifests.clone())).await;
    run_scenario(&runtime, kubelet, start(&server, &runtime, &manifests)).await;
    // A kubelet restart: the same files are the same pods, left running.
    let (kubelet, _) = start_kubelet_with(&server, &runtime, Some(manifests.clone())).await;
    run_scenario(&runtime, kubelet, scenario(&server, &runtime, &manifests)).await;
}

/// A web server in the pod, to reach through `kubectl port-forward`.
const SERVE: &str =
    "echo v1; mkdir -p /tmp/www && echo static > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";

fn manifest(script: &str) -> String {
    let yaml = pod_yaml("web", "", &container("c", script, ""));
    // A static pod names no node: the kubelet's own is set.
    yaml.replace(&format!("  nodeName: {NODE}\n"), "")
}

/// The mirror pod once it reports a running container, with the annotation
/// `kubernetes.io/config.mirror` other than `not_hash`.
fn running_mirror(server: &Server, not_hash: Option<&str>) -> Value {
    let name = format!("web-{NODE}");
    wait_for(90, "mirror pod Running", || {
        let p = pod_json(server, "default", &name)?;
        let hash = p["metadata"]["annotations"]["kubernetes.io/config.mirror"].as_str()?;
        let running = p["status"]["phase"] == "Running"
            && p["status"]["containerStatuses"][0]["state"]["running"].is_object();
        (running && Some(hash) != not_hash).then_some(p)
    })
}

fn container_id(pod: &Value) -> String {
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap();
    id.trim_start_matches("skiff://").to_string()
}

/// `GET /` on the pod's port 8080 through `kubectl port-forward`.
fn port_forward_get(server: &Server, pod: &str) -> String {
    use std::io::{Read, Write};
    let local = skiff_e2e::free_port();
    let mut forward = std::process::Command::new("kubectl")
        .env("KUBECONFIG", server.kubeconfig())
        .args([
            "port-forward",
            "-n",
            "default",
            &format!("pod/{pod}"),
            &format!("{local}:8080"),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl port-forward");
    let mut stream = wait_for(30, "kubectl port-forward to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", local)).ok()
    });
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let read = stream.read_to_string(&mut answer);
    let _ = forward.kill();
    let _ = forward.wait();
    read.expect("read through port-forward");
    answer
}

/// The static pod's containers in the runtime with their state (CRI enum value).
async fn containers(runtime: &Runtime, uid: &str) -> Vec<(String, i32)> {
    let cri = Cri::connect(&runtime.socket().display().to_string()).unwrap();
    cri.containers(uid)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect()
}

/// The first kubelet: the static pod starts from its file, mirrored in the API.
async fn start(server: &Server, runtime: &Runtime, manifests: &Path) {
    let file = manifests.join("web.yaml");
    // Not a pod, and not parseable: skipped without stopping the rest.
    std::fs::write(manifests.join("broken.yaml"), "kind: Pod\nmetadata: [").unwrap();
    std::fs::write(manifests.join("readme.txt"), "not a manifest").unwrap();
    std::fs::write(&file, manifest(SERVE)).unwrap();

    // The pod runs and its mirror shows it, with upstream's annotations and owner.
    let mirror = tokio::task::block_in_place(|| running_mirror(server, None));
    let annotations = &mirror["metadata"]["annotations"];
    let hash = annotations["kubernetes.io/config.hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(annotations["kubernetes.io/config.mirror"], hash.as_str());
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    assert!(annotations["kubernetes.io/config.seen"].is_string());
    assert_eq!(hash.len(), 32);
    assert_eq!(mirror["spec"]["nodeName"], NODE);
    let owner = &mirror["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Node");
    assert_eq!(owner["name"], NODE);
    assert_eq!(owner["controller"], true);
    let node_uid = server.json(&["node", NODE])["metadata"]["uid"].clone();
    assert_eq!(owner["uid"], node_uid);
    // The runtime's pod is the static pod (UID = hash), not the mirror.
    assert_ne!(mirror["metadata"]["uid"], hash.as_str());
    let running = containers(runtime, &hash).await;
    assert_eq!(
        running,
        vec![(container_id(&mirror), 1)],
        "one running container"
    );
}

/// After a kubelet restart: the pod and its mirror go on; deleting the mirror, changing
/// and removing the file.
async fn scenario(server: &Server, runtime: &Runtime, manifests: &Path) {
    let name = format!("web-{NODE}");
    let file = manifests.join("web.yaml");
    let before = pod_json(server, "default", &name).unwrap();
    let hash = before["metadata"]["annotations"]["kubernetes.io/config.mirror"]
        .as_str()
        .unwrap()
        .to_string();
    let first_id = container_id(&before);
    // Let the new kubelet sync a few times: nothing is restarted or recreated.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let mirror = tokio::task::block_in_place(|| running_mirror(server, None));
    assert_eq!(mirror["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(container_id(&mirror), first_id);
    assert_eq!(mirror["status"]["startTime"], before["status"]["startTime"]);
    assert_eq!(mirror["status"]["containerStatuses"][0]["restartCount"], 0);
    let running = containers(runtime, &hash).await;
    assert_eq!(running, vec![(first_id.clone(), 1)], "the same container");

    // Logs, exec and port-forward through the API server reach the static pod by its
    // mirror's name.
    tokio::task::block_in_place(|| {
        let logs = server.ok(&["logs", "-n", "default", &name]);
        assert_eq!(logs, "v1\n");
        let page = server.ok(&[
            "exec",
            "-n",
            "default",
            &name,
            "--",
            "cat",
            "/tmp/www/index.html",
        ]);
        assert_eq!(page, "static\n");
        assert!(port_forward_get(server, &name).ends_with("static\n"));
    });

    // Deleting the mirror does not stop the pod: the mirror comes back, with the status
    // of the very same container.
    let old_mirror_uid = mirror["metadata"]["uid"].clone();
    tokio::task::block_in_place(|| {
        server.ok(&["delete", "pod", "-n", "default", &name]);
    });
    let back = tokio::task::block_in_place(|| {
        wait_for(60, "mirror pod back", || {
            let p = pod_json(server, "default", &name)?;
            (p["metadata"]["uid"] != old_mirror_uid
                && p["status"]["containerStatuses"][0]["state"]["running"].is_object())
            .then_some(p)
        })
    });
    assert_eq!(container_id(&back), first_id);
    assert_eq!(back["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(containers(runtime, &hash).await, running);

    // A changed file is a new pod: the old one stops, the new one runs, the mirror
    // carries the new hash.
    std::fs::write(&file, manifest("echo v2; sleep 3600")).unwrap();
    let replaced = tokio::task::block_in_place(|| running_mirror(server, Some(&hash)));
    let new_hash = replaced["metadata"]["annotations"]["kubernetes.io/config.hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_hash, hash);
    assert_eq!(
        replaced["metadata"]["annotations"]["kubernetes.io/config.mirror"],
        new_hash.as_str()
    );
    assert_ne!(container_id(&replaced), first_id);
    assert!(
        containers(runtime, &hash).await.is_empty(),
        "old version removed"
    );
    assert_eq!(containers(runtime, &new_hash).await.len(), 1);

    // The file goes: the container stops and the mirror is deleted.
    std::fs::remove_file(&file).unwrap();
    tokio::task::block_in_place(|| {
        wait_for(60, "mirror pod gone", || {
            pod_json(server, "default", &name).is_none().then_some(())
        })
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !containers(runtime, &new_hash).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "static pod's container left"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
