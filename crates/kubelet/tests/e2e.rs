//! End to end, as root: a real `skiff server`, a real `skiff runtime`
//! (process, CNI bridge of the test's own) and this kubelet in-process,
//! driven with the real kubectl. One test walks every scenario in turn so
//! the suite pays once for start-up; each step names what it checks. Image
//! garbage collection, which needs a kubelet configured for it, is a second;
//! in-place resize, which restarts the kubelet, another (on each runtime, and on
//! containerd with its report of containers' resources hidden).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use skiff_e2e::Server;
use skiff_kubelet::resize::Checkpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubelet_runs_pods_end_to_end() {
    kubelet_runs_pods_on(ContainerRuntime::Skiff).await;
}

/// The same steps with containerd running the pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubelet_runs_pods_end_to_end_with_containerd() {
    kubelet_runs_pods_on(ContainerRuntime::Containerd).await;
}

async fn kubelet_runs_pods_on(kind: ContainerRuntime) {
    init_tracing();
    let server = Server::start(&[]);
    let runtime = Runtime::start_on(kind);
    let (kubelet, logs_dir) = start_kubelet(&server, &runtime).await;

    run_scenario(&runtime, kubelet, scenarios(&server, &runtime, &logs_dir)).await;
}

/// In-place resize (`pods/resize`) on Skiff's runtime, which reads each container's
/// cgroup back in `ContainerStatus.resources`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_resize_in_place() {
    pods_resize_in_place_with(Runtime::start()).await;
}

/// The same steps on containerd (Debian's 1.6.20), which reports the resources it
/// applied (from the container's spec, so a memory limit as asked, not in whole pages).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_resize_in_place_with_containerd() {
    pods_resize_in_place_with(Runtime::start_on(ContainerRuntime::Containerd)).await;
}

/// The same steps on containerd behind a proxy that drops `ContainerStatus.resources`,
/// as runtimes that report none do: only what the kubelet recorded tells it what each
/// container holds, before and after its restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_resize_in_place_with_a_runtime_reporting_no_resources() {
    let runtime = Runtime::start_on(ContainerRuntime::Containerd).reporting_no_resources();
    pods_resize_in_place_with(runtime).await;
}

/// The resize steps, then a kubelet restart in the middle of a resize that cannot be
/// actuated: the new kubelet still knows what each container holds.
async fn pods_resize_in_place_with(runtime: Runtime) {
    init_tracing();
    let server = Server::start(&[]);
    let ns = server.namespace("resize");
    let ns = ns.as_str();
    let (kubelet, _logs_dir) = start_kubelet(&server, &runtime).await;
    run_scenario(&runtime, kubelet, async {
        tokio::task::block_in_place(|| {
            node_ready(&server);
            in_place_resize(&server, ns);
            upstream_resize_cases(&server, ns);
            stuck_resize_before_kubelet_restart(&server, ns, &runtime.dir.path().join("kubelet"));
        })
    })
    .await;
    let (kubelet, _logs_dir) = start_kubelet(&server, &runtime).await;
    run_scenario(&runtime, kubelet, async {
        tokio::task::block_in_place(|| {
            node_ready(&server);
            stuck_resize_after_kubelet_restart(&server, ns);
        })
    })
    .await;
}

/// Container log rotation at 4 KiB, at most 3 files, checked every second, on a
/// container writing ~500 numbered lines a second: the log never spans more than 3
/// files, rotated ones are gzipped CRI logs, `kubectl logs` shows the current file,
/// and `kubectl logs -f` follows across rotations without losing a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn container_logs_rotate() {
    container_logs_rotate_on(Runtime::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn container_logs_rotate_with_containerd() {
    container_logs_rotate_on(Runtime::start_on(ContainerRuntime::Containerd)).await;
}

async fn container_logs_rotate_on(runtime: Runtime) {
    init_tracing();
    let server = Server::start(&[]);
    let mut args = kubelet_args(&server, &runtime);
    args.container_log_max_size = 4096;
    args.container_log_max_files = 3;
    args.container_log_monitor_interval = Duration::from_secs(1);
    let (kubelet, logs_dir) = start_kubelet_from(args).await;
    run_scenario(&runtime, kubelet, async {
        tokio::task::block_in_place(|| {
            node_ready(&server);
            let script = "i=0; while true; do echo line $i; i=$((i+1)); usleep 2000; done";
            server.ok_with_input(
                &["apply", "-f", "-"],
                &pod_yaml("chatty", "", &container("c", script, "")),
            );
            wait_for_phase(&server, "default", "chatty", "Running");
            let uid = server.ok(&["get", "pod", "chatty", "-o", "jsonpath={.metadata.uid}"]);
            let dir = logs_dir.join(format!("default_chatty_{uid}")).join("c");
            let files = || -> Vec<String> {
                let mut names: Vec<String> = std::fs::read_dir(&dir)
                    .map(|entries| {
                        entries
                            .filter_map(|e| e.ok())
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| n.starts_with("0.log"))
                            .collect()
                    })
                    .unwrap_or_default();
                names.sort();
                names
            };
            // Rotation goes on every second; the limit holds throughout.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut compressed_seen = 0;
            while compressed_seen < 3 {
                let now = files();
                assert!(now.len() <= 3, "the log spans more than 3 files: {now:?}");
                compressed_seen += usize::from(now.iter().any(|n| n.ends_with(".gz")));
                assert!(
                    std::time::Instant::now() < deadline,
                    "no compressed rotated log: {now:?}"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
            // The newest compressed file, read before a later rotation removes it.
            let text = wait_for(10, "a compressed rotated log to read", || {
                let newest = files().into_iter().rev().find(|n| n.ends_with(".gz"))?;
                let gz = std::fs::File::open(dir.join(newest)).ok()?;
                let mut text = String::new();
                std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text)
                    .ok()?;
                Some(text)
            });
            let cri_line = |line: &str| {
                let fields: Vec<&str> = line.split(' ').collect();
                matches!(fields.as_slice(), [time, "stdout", "F", "line", n]
                    if time.parse::<jiff::Timestamp>().is_ok() && n.parse::<u64>().is_ok())
            };
            assert!(
                !text.is_empty() && text.lines().all(cri_line),
                "a rotated log in CRI format: {text:?}"
            );
            let numbers = |text: &str| -> Vec<u64> {
                text.lines()
                    .filter_map(|l| l.strip_prefix("line "))
                    .filter_map(|n| n.trim().parse().ok())
                    .collect()
            };
            let consecutive = |n: &[u64]| n.windows(2).all(|w| w[1] == w[0] + 1);
            // The current file only: the first lines were rotated away.
            let current = numbers(&server.ok(&["logs", "chatty"]));
            assert!(
                current.first().is_some_and(|first| *first > 0) && consecutive(&current),
                "kubectl logs shows the current file: {current:?}"
            );
            let followed = numbers(&server.watch_output(&["logs", "-f", "chatty"], || {
                std::thread::sleep(Duration::from_secs(3))
            }));
            assert!(
                followed.len() > 1000 && consecutive(&followed),
                "kubectl logs -f follows across rotations: {} lines, gaps at {:?}",
                followed.len(),
                followed
                    .windows(2)
                    .filter(|w| w[1] != w[0] + 1)
                    .collect::<Vec<_>>()
            );
        })
    })
    .await;
}

/// Image garbage collection with every threshold at 0: an image stays while a container
/// made from it exists, and goes once its pod is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unused_images_are_collected() {
    init_tracing();
    let server = Server::start(&[]);
    let runtime = Runtime::start();
    let mut args = kubelet_args(&server, &runtime);
    args.image_gc_high_threshold = 0;
    args.image_gc_low_threshold = 0;
    // Long enough for the pod below to make a container first.
    args.minimum_image_ttl_duration = Duration::from_secs(15);
    args.image_gc_period = Duration::from_secs(1);
    let started = std::time::Instant::now();
    let (kubelet, _logs_dir) = start_kubelet_from(args).await;
    let cri = runtime.cri();
    let scenario = async {
        cri.wait_ready(&runtime.socket()).await;
        let images = || async { cri.images().await.expect("ListImages") };
        // The test archive holds busybox and agnhost; the pod below uses busybox.
        let tags = || async {
            let images = images().await;
            images
                .into_iter()
                .flat_map(|i| i.repo_tags)
                .collect::<Vec<String>>()
        };
        let busybox = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1";
        let agnhost = "registry.k8s.io/e2e-test-images/agnhost:2.52";
        let imported = tags().await;
        assert!(
            imported.iter().any(|t| t == busybox) && imported.iter().any(|t| t == agnhost),
            "both test images are imported: {imported:?}"
        );
        tokio::task::block_in_place(|| {
            server.ok_with_input(
                &["apply", "-f", "-"],
                &pod_yaml("keeper", "", &container("c", "sleep 3600", "")),
            );
            wait_for_phase(&server, "default", "keeper", "Running");
        });
        // Past the minimum age and several collections: in use, so kept.
        let past_minimum_age = Duration::from_secs(20).saturating_sub(started.elapsed());
        tokio::time::sleep(past_minimum_age).await;
        // In use, kept; unused and past the minimum age, collected.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let now = tags().await;
            assert!(
                now.iter().any(|t| t == busybox),
                "an image in use was collected: {now:?}"
            );
            if !now.iter().any(|t| t == agnhost) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the unused image is still there: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::task::block_in_place(|| {
            server.ok(&["delete", "pod", "keeper", "--timeout=60s"]);
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !images().await.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the unused image is still there: {:?}",
                images().await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    run_scenario(&runtime, kubelet, scenario).await;
}

/// Upstream's ImageVolume tests (`test/e2e/common/node/image_volume.go`, the conformance
/// "should succeed with pod and pull policy of Always", and `test/e2e_node/image_volume.go`)
/// on Skiff's runtime, with the kitten image in a local registry: a busybox container
/// reads the image's files through an image volume pulled with policy Always, read-only;
/// a valid subPath mounts that directory; a missing one fails with CreateContainerError;
/// an image that cannot be pulled keeps the mounting container in ImagePullBackOff; an
/// unused one does not stop the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_volumes() {
    init_tracing();
    let registry = skiff_e2e::registry::LocalRegistry::start();
    let kitten = registry.push(
        &skiff_e2e::kitten_archive(),
        skiff_e2e::KITTEN,
        "e2e-test-images/kitten:1.7",
    );
    // With the controller manager: the test ends by deleting its namespace.
    let server = Server::start_control_plane(&[]);
    let runtime = Runtime::start();
    let (kubelet, _logs_dir) = start_kubelet(&server, &runtime).await;
    let scenario = async {
        tokio::task::block_in_place(|| image_volume_cases(&server, &runtime.root(), &kitten));
    };
    run_scenario(&runtime, kubelet, scenario).await;
}

fn image_volume_cases(server: &Server, runtime_root: &Path, kitten: &str) {
    let ns = &server.namespace("image-volume");
    // Upstream's pod: one container looping forever with the volume at /volume.
    let create = |name: &str, volume: &str, mount: Option<&str>| {
        let spec = format!("  restartPolicy: Always\n  volumes:\n  - name: volume\n{volume}");
        let extra = mount.map_or(String::new(), |more| {
            format!("    volumeMounts:\n    - name: volume\n      mountPath: /volume\n{more}")
        });
        let loop_forever = "while true; do echo test; sleep 1; done";
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(
                name,
                &spec,
                &container("test-container", loop_forever, &extra),
            ),
        );
    };
    let exec = |pod: &str, args: &[&str]| {
        let mut all = vec!["exec", "-n", ns, pod, "-c", "test-container", "--"];
        all.extend(args);
        server.kubectl(&all)
    };
    let cat = |pod: &str, path: &str| {
        let out = exec(pod, &["/bin/cat", path]);
        assert!(out.status.success(), "cat {path}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let waiting = |pod: &str, reason: &str| {
        wait_for(60, &format!("{pod} waiting with {reason}"), || {
            let p = pod_json(server, ns, pod)?;
            let state = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            (state["reason"] == reason).then(|| state["message"].as_str().unwrap_or("").to_string())
        })
    };

    // The conformance test: pull policy Always, the pod Running, the files there.
    create(
        "test-pod",
        &format!("    image:\n      reference: {kitten}\n      pullPolicy: Always\n"),
        Some(""),
    );
    wait_for_phase(server, ns, "test-pod", "Running");
    assert!(cat("test-pod", "/volume/data.json").contains("kitten.jpg"));
    assert!(cat("test-pod", "/volume/etc/os-release").contains("Skiff kitten"));
    let write = exec("test-pod", &["touch", "/volume/new"]);
    assert!(
        !write.status.success()
            && String::from_utf8_lossy(&write.stderr).contains("Read-only file system"),
        "{write:?}"
    );
    // Always means a pull, seen in the pod's events (the volume's, so no container's).
    let pulled = wait_for(30, "the volume's Pulling event", || {
        let events = server.ok(&["get", "events", "-n", ns, "-o", "json"]);
        let events: Value = serde_json::from_str(&events).ok()?;
        events["items"]
            .as_array()?
            .iter()
            .find(|e| {
                e["reason"] == "Pulling"
                    && e["involvedObject"]["name"] == "test-pod"
                    && e["message"].as_str() == Some(&format!("Pulling image \"{kitten}\""))
            })
            .cloned()
    });
    assert!(
        pulled["involvedObject"].get("fieldPath").is_none(),
        "{pulled}"
    );
    let pod = pod_json(server, ns, "test-pod").expect("pod");
    assert_eq!(pod["spec"]["volumes"][0]["image"]["pullPolicy"], "Always");

    // A sub path mounts that directory of the image.
    let defaulted = format!("    image:\n      reference: {kitten}\n");
    create("sub-path", &defaulted, Some("      subPath: etc\n"));
    wait_for_phase(server, ns, "sub-path", "Running");
    assert!(cat("sub-path", "/volume/os-release").contains("Skiff kitten"));
    let pod = pod_json(server, ns, "sub-path").expect("pod");
    assert_eq!(
        pod["spec"]["volumes"][0]["image"]["pullPolicy"],
        "IfNotPresent"
    );

    // A sub path the image lacks: the container cannot be created.
    create(
        "missing-sub-path",
        &defaulted,
        Some("      subPath: not-existing\n"),
    );
    let message = waiting("missing-sub-path", "CreateContainerError");
    assert!(message.contains("not-existing"), "{message}");

    // An image that cannot be pulled: the container mounting it backs off.
    let invalid = "    image:\n      reference: localhost/invalid\n";
    create("invalid-image", invalid, Some(""));
    waiting("invalid-image", "ImagePullBackOff");
    // Unused, the same volume stops nothing.
    create("unused-invalid-image", invalid, None);
    wait_for_phase(server, ns, "unused-invalid-image", "Running");
    let ls = exec("unused-invalid-image", &["/bin/ls", "/"]);
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains("volume"),
        "{ls:?}"
    );

    // As upstream's test ends: the namespace goes, and its pods with it.
    server.delete_namespace(ns, 120);
    // Every image volume went with its container.
    wait_for(60, "image volumes unmounted", || {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let ours = format!("{}/containers/", runtime_root.display());
        let left = mounts
            .lines()
            .any(|l| l.contains(&ours) && l.contains("image-volumes"));
        (!left).then_some(())
    });
}

/// Pulls from a registry that wants a login, after upstream's "should be able to pull
/// from private registry with secret" (`test/e2e/common/node/runtime.go`): without
/// credentials the pull fails with the registry's 401; a secret the pod names but that
/// does not exist is a `FailedToRetrieveImagePullSecret` warning and no credential; a
/// `kubernetes.io/dockerconfigjson` secret in `imagePullSecrets` lets the pod run, its
/// image volume pulled with it too (Skiff's runtime only: containerd 1.6 has no image
/// volumes); a ServiceAccount's pull secrets reach its pods through admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_pull_secrets() {
    image_pull_secrets_on(ContainerRuntime::Skiff).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_pull_secrets_with_containerd() {
    image_pull_secrets_on(ContainerRuntime::Containerd).await;
}

async fn image_pull_secrets_on(kind: ContainerRuntime) {
    init_tracing();
    let registry = skiff_e2e::registry::LocalRegistry::start_with_basic_auth();
    let busybox = registry.push(
        &skiff_e2e::busybox_archive(),
        "docker.io/library/busybox:latest",
        "private/busybox:latest",
    );
    let kitten = (kind == ContainerRuntime::Skiff).then(|| {
        registry.push(
            &skiff_e2e::kitten_archive(),
            skiff_e2e::KITTEN,
            "private/kitten:1.7",
        )
    });
    // With the controller manager: the ServiceAccount admission plugin, and the
    // namespace controller the test ends with.
    let server = Server::start_control_plane(&[]);
    let runtime = Runtime::start_on(kind);
    let (kubelet, _logs_dir) = start_kubelet(&server, &runtime).await;
    let scenario = async {
        tokio::task::block_in_place(|| {
            pull_secret_cases(&server, &registry.addr, &busybox, kitten.as_deref())
        });
    };
    run_scenario(&runtime, kubelet, scenario).await;
}

fn pull_secret_cases(server: &Server, registry: &str, image: &str, kitten: Option<&str>) {
    let ns = &server.namespace("pull-secrets");
    server.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "-n",
        ns,
        &format!("--docker-server={registry}"),
        &format!("--docker-username={}", skiff_e2e::registry::USER),
        &format!("--docker-password={}", skiff_e2e::registry::PASSWORD),
    ]);
    let private_pod = |name: &str, extra_spec: &str, extra_container: &str| {
        let containers = format!(
            "  - name: c\n    image: {image}\n    imagePullPolicy: Always\n    command: [\"sh\", \"-c\", \"sleep 3600\"]\n{extra_container}"
        );
        pod_yaml(name, extra_spec, &containers)
    };
    // The message of `pod`'s first `reason` event that starts with `prefix`.
    let event = |pod: &str, reason: &str, prefix: &str| {
        wait_for(60, &format!("a {reason} event for {pod}: {prefix}"), || {
            let events = server.ok(&["get", "events", "-n", ns, "-o", "json"]);
            let events: Value = serde_json::from_str(&events).ok()?;
            events["items"].as_array()?.iter().find_map(|e| {
                let message = e["message"].as_str()?;
                (e["involvedObject"]["name"] == pod
                    && e["reason"] == reason
                    && message.starts_with(prefix))
                .then(|| message.to_string())
            })
        })
    };
    let refused = |pod: &str| {
        let reason = wait_for(60, &format!("{pod} failing to pull"), || {
            let p = pod_json(server, ns, pod)?;
            let reason = p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
                .as_str()?
                .to_string();
            ["ErrImagePull", "ImagePullBackOff"]
                .contains(&reason.as_str())
                .then_some(reason)
        });
        let failed = event(pod, "Failed", &format!("Failed to pull image \"{image}\""));
        assert!(
            failed.contains("401 Unauthorized"),
            "{pod} ({reason}): {failed}"
        );
    };

    // No credentials: the registry's refusal.
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &private_pod("no-secret", "", ""),
    );
    refused("no-secret");

    // A secret that is not there: a warning, then the same refusal.
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &private_pod(
            "missing-secret",
            "  imagePullSecrets:\n  - name: nope\n",
            "",
        ),
    );
    assert_eq!(
        event("missing-secret", "FailedToRetrieveImagePullSecret", ""),
        "Unable to retrieve some image pull secrets (nope); attempting to pull the image may not succeed."
    );
    refused("missing-secret");

    // The secret: the image and the image volume are pulled with it.
    let (volume, mount) = match kitten {
        Some(kitten) => (
            format!("  volumes:\n  - name: kitten\n    image:\n      reference: {kitten}\n      pullPolicy: Always\n"),
            "    volumeMounts:\n    - name: kitten\n      mountPath: /kitten\n".to_string(),
        ),
        None => (String::new(), String::new()),
    };
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &private_pod(
            "with-secret",
            &format!("  imagePullSecrets:\n  - name: nope\n  - name: regcred\n{volume}"),
            &mount,
        ),
    );
    wait_for_phase(server, ns, "with-secret", "Running");
    for pulled in std::iter::once(image).chain(kitten) {
        event(
            "with-secret",
            "Pulled",
            &format!("Successfully pulled image \"{pulled}\""),
        );
    }
    if kitten.is_some() {
        let out = server.kubectl(&[
            "exec",
            "-n",
            ns,
            "with-secret",
            "--",
            "cat",
            "/kitten/data.json",
        ]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("kitten.jpg"),
            "{out:?}"
        );
    }

    // The account's pull secrets, given to its pod by admission.
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: puller\nimagePullSecrets:\n- name: regcred\n",
    );
    let by_account = private_pod("by-account", "  serviceAccountName: puller\n", "");
    // Admission reads the account from the watch cache, which may lag the create.
    wait_for(30, "the pod of the new account admitted", || {
        let out = server.kubectl_with_input(&["apply", "-n", ns, "-f", "-"], Some(&by_account));
        out.status.success().then_some(())
    });
    let pod = pod_json(server, ns, "by-account").expect("pod");
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
    wait_for_phase(server, ns, "by-account", "Running");

    server.delete_namespace(ns, 120);
}

/// Node-pressure eviction with a memory threshold no machine meets: the node reports
/// `MemoryPressure`, refuses a new BestEffort pod, and evicts a running one with
/// upstream's reason, message and `DisruptionTarget` condition.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_pressure_refuses_and_evicts_pods() {
    init_tracing();
    let server = Server::start(&[]);
    let runtime = Runtime::start();
    let mut args = kubelet_args(&server, &runtime);
    args.eviction_hard = "memory.available<1Pi".into();
    let (kubelet, _logs_dir) = start_kubelet_from(args).await;
    let scenario = async {
        tokio::task::block_in_place(|| {
            wait_for(60, "MemoryPressure", || {
                // The node may not be registered yet.
                let out = server.kubectl(&["get", "node", NODE, "-o", "json"]);
                let node: Value = serde_json::from_slice(&out.stdout).ok()?;
                let conditions = node["status"]["conditions"].as_array()?.clone();
                conditions
                    .iter()
                    .find(|c| c["type"] == "MemoryPressure" && c["status"] == "True")
                    .filter(|c| c["reason"] == "KubeletHasInsufficientMemory")
                    .map(|_| ())
            });
            // BestEffort: refused before it starts.
            server.ok_with_input(
                &["apply", "-f", "-"],
                &pod_yaml("refused", "", &container("c", "sleep 3600", "")),
            );
            let refused = wait_for_phase(&server, "default", "refused", "Failed");
            assert_eq!(refused["status"]["reason"], "Evicted", "{refused}");
            assert_eq!(
                refused["status"]["message"], "The node had condition: [MemoryPressure]. ",
                "{refused}"
            );
            // Burstable: admitted, then evicted.
            let requests = "    resources:\n      requests: {memory: 1Mi}\n";
            server.ok_with_input(
                &["apply", "-f", "-"],
                &pod_yaml("victim", "", &container("c", "sleep 3600", requests)),
            );
            let victim = wait_for_phase(&server, "default", "victim", "Failed");
            assert_eq!(victim["status"]["reason"], "Evicted", "{victim}");
            let message = victim["status"]["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with("The node was low on resource: memory. Threshold quantity: "),
                "{victim}"
            );
            let disruption = victim["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "DisruptionTarget").cloned())
                .unwrap_or_default();
            assert_eq!(disruption["reason"], "TerminationByKubelet", "{victim}");
        });
    };
    run_scenario(&runtime, kubelet, scenario).await;
}

/// The pod's condition `type_`, as JSON.
fn pod_condition(pod: &Value, type_: &str) -> Value {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default()
}

/// The node's condition `type_` once it is `True` with `reason`.
fn node_condition_true(server: &Server, type_: &str, reason: &str) -> Value {
    wait_for(60, type_, || {
        // The node may not be registered yet.
        let out = server.kubectl(&["get", "node", NODE, "-o", "json"]);
        let node: Value = serde_json::from_slice(&out.stdout).ok()?;
        node["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_ && c["status"] == "True")
            .filter(|c| c["reason"] == reason)
            .cloned()
    })
}

fn timestamp(value: &Value) -> jiff::Timestamp {
    value
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {value}"))
}

/// A soft threshold sets its pressure condition at once but evicts only once met for
/// its grace period; under memory pressure alone a BestEffort pod tolerating the
/// memory-pressure taint is admitted (and, using more than it requests, goes first).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soft_memory_threshold_evicts_after_its_grace_period() {
    init_tracing();
    let server = Server::start(&[]);
    let runtime = Runtime::start();
    let mut args = kubelet_args(&server, &runtime);
    args.eviction_soft = "memory.available<1Pi".into();
    args.eviction_soft_grace_period = "memory.available=20s".into();
    args.eviction_max_pod_grace_period = 5;
    let (kubelet, _logs_dir) = start_kubelet_from(args).await;
    let scenario = async {
        tokio::task::block_in_place(|| {
            let pressure =
                node_condition_true(&server, "MemoryPressure", "KubeletHasInsufficientMemory");
            let pressure_since = timestamp(&pressure["lastTransitionTime"]);
            let toleration = "  tolerations:\n  - {key: node.kubernetes.io/memory-pressure, operator: Exists, effect: NoSchedule}\n";
            server.ok_with_input(
                &["apply", "-f", "-"],
                &pod_yaml("tolerating", toleration, &container("c", "sleep 3600", "")),
            );
            let evicted = wait_for_phase(&server, "default", "tolerating", "Failed");
            assert_eq!(evicted["status"]["reason"], "Evicted", "{evicted}");
            let message = evicted["status"]["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with(
                    "The node was low on resource: memory. Threshold quantity: 1Pi, available: "
                ),
                "{evicted}"
            );
            let disruption = pod_condition(&evicted, "DisruptionTarget");
            assert_eq!(disruption["reason"], "TerminationByKubelet", "{evicted}");
            // It ran before the grace period was over: it was admitted, then evicted.
            assert!(
                evicted["status"]["containerStatuses"][0]["state"]["terminated"]["startedAt"]
                    .is_string(),
                "{evicted}"
            );
            let waited =
                timestamp(&disruption["lastTransitionTime"]).duration_since(pressure_since);
            assert!(
                waited >= jiff::SignedDuration::from_secs(19),
                "evicted {waited:?} after the threshold was first met, within its 20 s grace period"
            );
        });
    };
    run_scenario(&runtime, kubelet, scenario).await;
}

/// Process IDs running low: the node reports `PIDPressure`, the pod with the most
/// processes (counted in its cgroup) is evicted with upstream's message, the quiet one
/// stays, and new pods are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pid_pressure_evicts_the_pod_with_most_processes() {
    init_tracing();
    let server = Server::start(&[]);
    let runtime = Runtime::start();
    // The threshold sits 400 process IDs below what is available now; the forking
    // pod takes 1,500.
    let read = |path: &str| -> u64 {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let max = read("/proc/sys/kernel/pid_max").min(read("/proc/sys/kernel/threads-max"));
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap();
    let running: u64 = loadavg
        .split_whitespace()
        .nth(3)
        .unwrap()
        .split_once('/')
        .unwrap()
        .1
        .parse()
        .unwrap();
    // Ending in 1, it prints as plain digits (a multiple of 1,000 would print as `32k`).
    let threshold = (max - running - 400) / 10 * 10 + 1;
    let mut args = kubelet_args(&server, &runtime);
    args.eviction_hard = format!("pid.available<{threshold}");
    let (kubelet, _logs_dir) = start_kubelet_from(args).await;
    let scenario = async {
        tokio::task::block_in_place(|| {
            server.ok_with_input(
                &["apply", "-f", "-"],
                &pod_yaml("quiet", "", &container("c", "sleep 3600", "")),
            );
            wait_for_phase(&server, "default", "quiet", "Running");
            let forks = "for i in $(seq 1500); do sleep 3600 & done; wait";
            server.ok_with_input(
                &["apply", "-f", "-"],
                &pod_yaml("forker", "", &container("c", forks, "")),
            );
            node_condition_true(&server, "PIDPressure", "KubeletHasInsufficientPID");
            let evicted = wait_for_phase(&server, "default", "forker", "Failed");
            assert_eq!(evicted["status"]["reason"], "Evicted", "{evicted}");
            let message = evicted["status"]["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with(&format!(
                    "The node was low on resource: pids. Threshold quantity: {threshold}, available: "
                )),
                "{evicted}"
            );
            let quiet = pod_json(&server, "default", "quiet").unwrap_or_default();
            assert_eq!(quiet["status"]["phase"], "Running", "{quiet}");
            server.ok_with_input(
                &["apply", "-f", "-"],
                &pod_yaml("refused", "", &container("c", "sleep 3600", "")),
            );
            let refused = wait_for_phase(&server, "default", "refused", "Failed");
            assert_eq!(
                refused["status"]["message"], "The node had condition: [PIDPressure]. ",
                "{refused}"
            );
        });
    };
    run_scenario(&runtime, kubelet, scenario).await;
}

/// Local storage limits, enforced whatever the node's thresholds: a disk `emptyDir`
/// beyond its `sizeLimit` and a container's writable layer beyond its
/// `ephemeral-storage` limit get their pods evicted with upstream's messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_storage_limits_evict_pods() {
    init_tracing();
    let server = Server::start(&[]);
    let runtime = Runtime::start();
    let (kubelet, _logs_dir) = start_kubelet(&server, &runtime).await;
    let scenario = async {
        tokio::task::block_in_place(|| {
            let volume = "    volumeMounts:\n    - {name: scratch, mountPath: /scratch}\n";
            let volumes = "  volumes:\n  - name: scratch\n    emptyDir: {sizeLimit: 1Mi}\n";
            server.ok_with_input(
                &["apply", "-f", "-"],
                &format!(
                    "{}{volumes}",
                    pod_yaml(
                        "scratch",
                        "",
                        &container(
                            "c",
                            "head -c 3145728 /dev/zero > /scratch/f; sleep 3600",
                            volume
                        )
                    )
                ),
            );
            // Two containers, so that the pod's total (12Mi) is not what is exceeded.
            let limit =
                |size| format!("    resources:\n      limits: {{ephemeral-storage: {size}}}\n");
            let containers = container(
                "c",
                "head -c 4194304 /dev/zero > /f; sleep 3600",
                &limit("2Mi"),
            ) + &container("d", "sleep 3600", &limit("10Mi"));
            server.ok_with_input(&["apply", "-f", "-"], &pod_yaml("layer", "", &containers));
            let scratch = wait_for_phase(&server, "default", "scratch", "Failed");
            assert_eq!(scratch["status"]["reason"], "Evicted", "{scratch}");
            assert_eq!(
                scratch["status"]["message"],
                "Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ",
                "{scratch}"
            );
            let layer = wait_for_phase(&server, "default", "layer", "Failed");
            assert_eq!(layer["status"]["reason"], "Evicted", "{layer}");
            assert_eq!(
                layer["status"]["message"],
                "Container c exceeded its local ephemeral storage limit \"2Mi\". ",
                "{layer}"
            );
            // Storage limits are not the node's pressure: no disruption condition.
            assert!(
                pod_condition(&layer, "DisruptionTarget").is_null(),
                "{layer}"
            );
        });
    };
    run_scenario(&runtime, kubelet, scenario).await;
}

/// `curl` to the kubelet's `/healthz` on `port`, trusting only the cluster CA and
/// presenting the admin's certificate: the HTTP status, or curl's failure.
fn kubelet_healthz(server: &Server, port: u16) -> Result<String, String> {
    kubelet_get(
        server,
        port,
        "/healthz",
        &["-o", "/dev/null", "-w", "%{http_code}"],
    )
}

/// `curl` to the kubelet's `path` on `port` as [`kubelet_healthz`] does, with more
/// `args`: its output, or curl's failure.
fn kubelet_get(server: &Server, port: u16, path: &str, args: &[&str]) -> Result<String, String> {
    let args = [&["-sS", "--fail", "--max-time", "5"], args].concat();
    let out = server.curl_url(&args, &format!("https://127.0.0.1:{port}{path}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The cluster's kubelet-serving certificate requests, as JSON.
fn serving_requests(server: &Server) -> Vec<Value> {
    let csrs = server.json(&["csr"]);
    csrs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["spec"]["signerName"] == "kubernetes.io/kubelet-serving")
        .cloned()
        .collect()
}

/// `--rotate-server-certificates`, as upstream's `serverTLSBootstrap`: the kubelet asks
/// for a serving certificate, refuses TLS until it is approved, asks again within
/// seconds of a denial (upstream's certificate manager backs off from 2 s), then serves
/// the one the cluster CA signed (curl verifies it against that CA and the node's
/// address). An API server given the cluster CA as `--kubelet-certificate-authority`
/// reaches it; given another CA, it refuses the kubelet's certificate. After a restart
/// the kubelet serves the kept certificate without asking again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serving_certificate_comes_from_an_approved_request() {
    init_tracing();
    let mut server = Server::start_control_plane(&[]);
    let runtime = Runtime::start();
    let mut args = kubelet_args(&server, &runtime);
    args.rotate_server_certificates = true;
    // A fixed port, so that the restarted kubelet is found where the first was.
    args.kubelet_port = free_port();
    let port = args.kubelet_port;
    let (kubelet, _logs_dir) = start_kubelet_from(args.clone()).await;
    let scenario = async {
        tokio::task::block_in_place(|| {
            let csr = wait_for(60, "a kubelet-serving request", || {
                serving_requests(&server).into_iter().next()
            });
            assert_eq!(
                csr["spec"]["usages"],
                json!(["digital signature", "server auth"]),
                "{csr}"
            );
            let name = csr["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(name.starts_with("csr-"), "{csr}");
            // Not approved by anyone but an administrator: no certificate, no TLS.
            std::thread::sleep(Duration::from_secs(3));
            let pending = server.json(&["csr", &name]);
            assert!(pending["status"]["certificate"].is_null(), "{pending}");
            let refused = kubelet_healthz(&server, port);
            assert!(refused.is_err(), "TLS before approval: {refused:?}");
            server.ok(&["certificate", "deny", &name]);
            let denied_at = std::time::Instant::now();
            let again = wait_for(20, "a request after the denial", || {
                serving_requests(&server)
                    .into_iter()
                    .find(|c| c["metadata"]["name"] != name.as_str())
            });
            // The first retry comes 2 s (plus up to 10%) after the denial is seen.
            assert!(
                denied_at.elapsed() < Duration::from_secs(10),
                "asked again only after {:?}",
                denied_at.elapsed()
            );
            let name = again["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            server.ok(&["certificate", "approve", &name]);
            let status = wait_for(30, "the kubelet serving the issued certificate", || {
                kubelet_healthz(&server, port).ok()
            });
            assert_eq!(status, "200");
            let pods = kubelet_get(&server, port, "/pods", &[]).unwrap_or_default();
            let pods: Value = serde_json::from_str(&pods).unwrap_or_default();
            assert_eq!(pods["kind"], "PodList", "{pods}");
            assert!(pods["items"].is_array(), "{pods}");

            let node = server.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
            let through_api_server = format!("/api/v1/nodes/{node}/proxy/healthz");
            let tls = server.data_dir.path().join("tls");
            let cluster_ca = tls.join("ca.crt").display().to_string();
            server.restart_with(&["--kubelet-certificate-authority", &cluster_ca]);
            let healthz = wait_for(30, "the kubelet through the API server", || {
                server.try_ok(&["get", "--raw", &through_api_server])
            });
            assert_eq!(healthz.trim(), "ok");
            // A CA that signed nothing of the kubelet's: the kubelet's certificate is
            // refused, and no request reaches it.
            let other_ca = tls.join("front-proxy-ca.crt").display().to_string();
            server.restart_with(&["--kubelet-certificate-authority", &other_ca]);
            let refused = server.kubectl(&["get", "--raw", &through_api_server]);
            let said = String::from_utf8_lossy(&refused.stderr);
            assert!(
                !refused.status.success() && said.contains("certificate"),
                "a kubelet certificate from an untrusted CA: {said}"
            );
        });
    };
    run_scenario(&runtime, kubelet, scenario).await;

    let (kubelet, _logs_dir) = start_kubelet_from(args).await;
    let scenario = async {
        tokio::task::block_in_place(|| {
            let status = wait_for(
                30,
                "the restarted kubelet serving the kept certificate",
                || kubelet_healthz(&server, port).ok(),
            );
            assert_eq!(status, "200");
            assert_eq!(
                serving_requests(&server).len(),
                2,
                "asked again after a restart (the denied request and the approved one)"
            );
        });
    };
    run_scenario(&runtime, kubelet, scenario).await;
}

/// A port free now on the loopback, for a kubelet that must keep its port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A request to the kubelet's API with a bearer token and no client certificate (the
/// kubelet's own certificate is self-signed): status code and body.
fn kubelet_with_token(port: u16, path: &str, token: &str) -> (String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "-k", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.to_string(), body.to_string())
}

/// The kubelet's API authenticates bearer tokens through TokenReview and authorizes
/// every request through SubjectAccessReview of `nodes/<subresource>`, with upstream's
/// fine-grained subresources and messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubelet_api_is_authorized_by_the_api_server() {
    init_tracing();
    let server = Server::start(&[]);
    let runtime = Runtime::start();
    let mut args = kubelet_args(&server, &runtime);
    args.kubelet_port = free_port();
    let port = args.kubelet_port;
    let (kubelet, _logs_dir) = start_kubelet_from(args).await;
    let scenario = async {
        tokio::task::block_in_place(|| {
            node_ready(&server);
            server.ok(&["create", "serviceaccount", "watcher"]);
            let token = server
                .ok(&["create", "token", "watcher"])
                .trim()
                .to_string();
            let user = "system:serviceaccount:default:watcher";
            assert_eq!(kubelet_with_token(port, "/pods", "not-a-token").0, "401");
            assert_eq!(
                kubelet_with_token(port, "/pods", &token),
                (
                    "403".to_string(),
                    format!("Forbidden (user={user}, verb=get, resource=nodes, subresource(s)=[pods proxy])\n")
                )
            );
            server.ok(&[
                "create",
                "clusterrole",
                "kubelet-reader",
                "--verb=get",
                "--resource=nodes/stats,nodes/healthz",
            ]);
            server.ok(&[
                "create",
                "clusterrolebinding",
                "kubelet-reader",
                "--clusterrole=kubelet-reader",
                "--serviceaccount=default:watcher",
            ]);
            let (code, summary) = kubelet_with_token(port, "/stats/summary", &token);
            assert_eq!(code, "200", "{summary}");
            let summary: Value = serde_json::from_str(&summary).unwrap_or_default();
            assert_eq!(summary["node"]["nodeName"], NODE, "{summary}");
            assert!(
                summary["node"]["rlimit"]["maxpid"].as_u64().unwrap_or(0) > 0,
                "{summary}"
            );
            // The fine-grained subresource is enough for its paths, not for others.
            assert_eq!(
                kubelet_with_token(port, "/healthz", &token),
                ("200".to_string(), "ok".to_string())
            );
            assert_eq!(
                kubelet_with_token(port, "/containerLogs/default/p/c", &token),
                (
                    "403".to_string(),
                    format!("Forbidden (user={user}, verb=get, resource=nodes, subresource(s)=[proxy])\n")
                )
            );
        });
    };
    run_scenario(&runtime, kubelet, scenario).await;
}

async fn scenarios(server: &Server, runtime: &Runtime, logs_dir: &Path) {
    let cri = runtime.cri();
    // The node registers Ready with upstream's reasons and a lease.
    let node = tokio::task::block_in_place(|| node_ready(server));
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], NODE);
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
    assert_eq!(node["status"]["nodeInfo"]["kubeletVersion"], "v1.37.0");
    let scheme = format!("{}://", runtime.kind.name());
    assert!(node["status"]["nodeInfo"]["containerRuntimeVersion"]
        .as_str()
        .unwrap()
        .starts_with(&scheme));
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    let lease0 = server.json(&["lease", "-n", "kube-node-lease", NODE]);
    let renew0 = lease0["spec"]["renewTime"].as_str().unwrap().to_string();
    assert_eq!(lease0["spec"]["leaseDurationSeconds"], 40);

    let ns = server.namespace("kubelet");
    let ns = ns.as_str();
    // They need a minute or more: they run while the other cases do.
    let grpc_pods_created = tokio::task::block_in_place(|| grpc_liveness_pods(server, ns));
    tokio::task::block_in_place(|| {
        // A long-running pod: Running, with podIP and a running container.
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml("sleeper", "", &container("c", "echo hi; sleep 3600", "")),
        );
        let pod = wait_for(60, "sleeper Running", || {
            let p = pod_json(server, ns, "sleeper")?;
            (p["status"]["phase"] == "Running" && condition(&p, "Ready").as_deref() == Some("True"))
                .then_some(p)
        });
        let st = &pod["status"];
        assert!(
            st["podIP"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("10.198.")),
            "{st}"
        );
        assert_eq!(st["hostIP"], "127.0.0.1");
        assert!(st["startTime"].is_string());
        assert_eq!(st["qosClass"], "BestEffort");
        let cs = &st["containerStatuses"][0];
        assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
        assert!(cs["containerID"].as_str().unwrap().starts_with(&scheme));
        assert_eq!(cs["ready"], true);
        assert_eq!(cs["restartCount"], 0);
        for t in [
            "PodScheduled",
            "Initialized",
            "ContainersReady",
            "PodReadyToStartContainers",
        ] {
            assert_eq!(condition(&pod, t).as_deref(), Some("True"), "{t}");
        }
        // Its log, in CRI format, where the kubelet put it.
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        let log = logs_dir.join(format!("{ns}_sleeper_{uid}/c/0.log"));
        let text = wait_for(10, "container log", || {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("hi"))
        });
        assert!(text.contains(" stdout F hi"), "{text}");

        // Exit 0 under restartPolicy Never: Succeeded.
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(
                "once",
                "  restartPolicy: Never\n",
                &container("c", "exit 0", ""),
            ),
        );
        let pod = wait_for_phase(server, ns, "once", "Succeeded");
        let term = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(term["reason"], "Completed");
        assert_eq!(term["exitCode"], 0);
        assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));

        // A crashing container: restarts, then CrashLoopBackOff.
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml("crasher", "", &container("c", "exit 3", "")),
        );
        let pod = wait_for(60, "crasher CrashLoopBackOff", || {
            let p = pod_json(server, ns, "crasher")?;
            let cs = &p["status"]["containerStatuses"][0];
            (cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
                && cs["restartCount"].as_i64()? >= 1)
                .then_some(p)
        });
        let cs = &pod["status"]["containerStatuses"][0];
        assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3, "{cs}");
        assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
        assert!(cs["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 10s restarting failed container=c pod=crasher_"));
        // What `kubectl describe pod` shows: the kubelet's events about the container,
        // with upstream's reasons and messages.
        let events = wait_for(30, "the kubelet's events about crasher", || {
            let out = server.kubectl(&[
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                "involvedObject.name=crasher",
                "-o",
                "json",
            ]);
            let list: Value = serde_json::from_slice(&out.stdout).ok()?;
            let items = list["items"].as_array()?.clone();
            items
                .iter()
                .any(|e| e["reason"] == "BackOff")
                .then_some(items)
        });
        let by_reason = |reason: &str| {
            events
                .iter()
                .find(|e| e["reason"] == reason)
                .cloned()
                .unwrap_or_else(|| panic!("no {reason} event: {events:?}"))
        };
        for (reason, kind, message) in [
            (
                "Pulled",
                "Normal",
                format!("Container image \"{IMAGE}\" already present on machine"),
            ),
            ("Created", "Normal", "Created container: c".to_string()),
            ("Started", "Normal", "Started container c".to_string()),
        ] {
            let event = by_reason(reason);
            assert_eq!(event["type"], kind, "{event}");
            assert_eq!(event["message"], message.as_str(), "{event}");
            assert_eq!(event["involvedObject"]["fieldPath"], "spec.containers{c}");
            assert_eq!(event["source"]["component"], "kubelet");
            assert_eq!(event["source"]["host"], NODE);
        }
        let backoff = by_reason("BackOff");
        assert_eq!(backoff["type"], "Warning");
        assert!(backoff["message"]
            .as_str()
            .unwrap()
            .starts_with("Back-off restarting failed container c in pod crasher_"));
        let described = server.ok(&["describe", "pod", "crasher", "-n", ns]);
        assert!(described.contains("Started container c"), "{described}");

        // Env from a ConfigMap, with $(VAR) expansion and the downward API.
        server.ok(&[
            "create",
            "configmap",
            "-n",
            ns,
            "settings",
            "--from-literal=GREETING=hello",
        ]);
        let env = "    envFrom:\n    - configMapRef:\n        name: settings\n    env:\n    - name: MSG\n      value: $(GREETING) world\n    - name: POD\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name\n    - name: IP\n      valueFrom:\n        fieldRef:\n          fieldPath: status.podIP\n";
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(
                "env",
                "  restartPolicy: Never\n",
                &container("c", "echo \"$MSG from $POD at $IP\"", env),
            ),
        );
        let pod = wait_for_phase(server, ns, "env", "Succeeded");
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let log = std::fs::read_to_string(logs_dir.join(format!("{ns}_env_{uid}/c/0.log")))
            .expect("env log");
        assert!(
            log.contains(&format!("hello world from env at {ip}")),
            "{log}"
        );

        // An init container runs to completion before the app container.
        let spec = format!(
            "  volumes:\n  - name: work\n    emptyDir: {{}}\n  initContainers:\n{}",
            container(
                "init",
                "echo done > /work/init",
                "    volumeMounts:\n    - name: work\n      mountPath: /work\n"
            )
        );
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(
                "init",
                &spec,
                &container(
                    "app",
                    "cat /work/init; sleep 3600",
                    "    volumeMounts:\n    - name: work\n      mountPath: /work\n",
                ),
            ),
        );
        let pod = wait_for(60, "init pod Running", || {
            let p = pod_json(server, ns, "init")?;
            (p["status"]["phase"] == "Running").then_some(p)
        });
        let init = &pod["status"]["initContainerStatuses"][0];
        assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
        assert_eq!(condition(&pod, "Initialized").as_deref(), Some("True"));
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        let log_path = logs_dir.join(format!("{ns}_init_{uid}/app/0.log"));
        let log = wait_for(10, "app log", || {
            std::fs::read_to_string(&log_path)
                .ok()
                .filter(|l| l.contains("done"))
        });
        assert!(log.contains(" stdout F done"), "{log}");

        // A readiness probe flips Ready once it passes.
        let probe = "    readinessProbe:\n      exec:\n        command: [\"test\", \"-f\", \"/tmp/ready\"]\n      periodSeconds: 1\n";
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(
                "probed",
                "",
                &container("c", "sleep 4; touch /tmp/ready; sleep 3600", probe),
            ),
        );
        let p = wait_for(60, "probed Running", || {
            let p = pod_json(server, ns, "probed")?;
            (p["status"]["phase"] == "Running").then_some(p)
        });
        if condition(&p, "Ready").as_deref() == Some("False") {
            assert_eq!(p["status"]["containerStatuses"][0]["ready"], false);
        }
        wait_for(30, "probed Ready", || {
            let p = pod_json(server, ns, "probed")?;
            (condition(&p, "Ready").as_deref() == Some("True")
                && p["status"]["containerStatuses"][0]["ready"] == true)
                .then_some(())
        });
        // Each failed run before that is an `Unhealthy` event, in the prober's words
        // (`test` prints nothing).
        let unhealthy = server.ok(&[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "involvedObject.name=probed,reason=Unhealthy",
            "-o",
            "jsonpath={.items[0].type}/{.items[0].message}/{.items[0].involvedObject.fieldPath}",
        ]);
        assert_eq!(
            unhealthy,
            "Warning/Readiness probe failed: /spec.containers{c}"
        );

        sidecars(server, ns, logs_dir);
        termination_messages(server, ns);
        active_deadline(server, ns);
        seccomp(server, ns, logs_dir);
        memory_volumes_and_sub_path_expressions(server, ns, logs_dir);
        empty_dir_modes(server, ns, logs_dir);
        http_hooks(server, ns, logs_dir);
        sysctls(server, ns, logs_dir);
        shared_process_namespace(server, ns, logs_dir, runtime.sandbox_command());
        pod_generation_cases(server, ns);
        grpc_liveness_verdicts(server, ns, grpc_pods_created);

        // Deleting a pod stops its containers and removes the API object.
        let sleeper_uid = pod_json(server, ns, "sleeper").unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        let started = Instant::now();
        server.ok(&["delete", "pod", "-n", ns, "sleeper", "--timeout=60s"]);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "graceful delete took {:?}",
            started.elapsed()
        );
        assert!(pod_json(server, ns, "sleeper").is_none());
        let left = tokio::runtime::Handle::current()
            .block_on(cri.containers(&sleeper_uid))
            .expect("ListContainers");
        assert!(
            left.is_empty(),
            "containers of the deleted pod remain: {left:?}"
        );
    });

    // The lease is renewed (every 10 s).
    tokio::task::block_in_place(|| {
        wait_for(30, "lease renewal", || {
            let l = server.json(&["lease", "-n", "kube-node-lease", NODE]);
            (l["spec"]["renewTime"].as_str()? != renew0).then_some(())
        })
    });

    // Clean up: every pod deleted, so the kubelet removes every container.
    tokio::task::block_in_place(|| {
        server.ok(&["delete", "pods", "-n", ns, "--all", "--timeout=60s"]);
        wait_for(30, "all sandboxes removed", || {
            let sandboxes = tokio::runtime::Handle::current()
                .block_on(cri.sandboxes(None))
                .ok()?;
            sandboxes.is_empty().then_some(())
        });
    });
}

/// Waits until the node is Ready, with upstream's reason; returns it.
fn node_ready(server: &Server) -> Value {
    wait_for(60, "node Ready", || {
        let out = server.kubectl(&["get", "node", NODE, "-o", "json"]);
        let n: Value = serde_json::from_slice(&out.stdout).ok()?;
        let ready = n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready" && c["status"] == "True")?
            .clone();
        assert_eq!(ready["reason"], "KubeletReady");
        Some(n)
    })
}

/// Sidecars (init containers with `restartPolicy: Always`): started before the init
/// containers after them, kept running beside the app, stopped after it.
fn sidecars(server: &Server, ns: &str, logs_dir: &Path) {
    let work = "    volumeMounts:\n    - name: work\n      mountPath: /work\n";
    // The sidecar's startup probe passes only once it has written its file: the init
    // container after it may start only then, and finds the file.
    let sidecar = format!(
        "{}    restartPolicy: Always\n    startupProbe:\n      exec:\n        command: [\"test\", \"-f\", \"/work/up\"]\n      periodSeconds: 1\n{work}",
        container(
            "proxy",
            "trap 'echo proxy-term; exit 0' TERM; sleep 2; echo up > /work/up; sleep 3600 & wait",
            ""
        )
    );
    let spec = format!(
        "  volumes:\n  - name: work\n    emptyDir: {{}}\n  initContainers:\n{sidecar}{}",
        container("check", "cat /work/up", work)
    );
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml(
            "mesh",
            &spec,
            &container(
                "app",
                "trap 'echo app-term; exit 0' TERM; sleep 3600 & wait",
                "",
            ),
        ),
    );
    let pod = wait_for(60, "mesh Running and Ready", || {
        let p = pod_json(server, ns, "mesh")?;
        (p["status"]["phase"] == "Running" && condition(&p, "Ready").as_deref() == Some("True"))
            .then_some(p)
    });
    let proxy = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(proxy["name"], "proxy");
    assert!(proxy["state"]["running"].is_object(), "{proxy}");
    assert_eq!(proxy["started"], true, "{proxy}");
    assert_eq!(proxy["ready"], true, "{proxy}");
    let check = &pod["status"]["initContainerStatuses"][1];
    assert_eq!(
        check["state"]["terminated"]["reason"], "Completed",
        "{check}"
    );
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let check_log = std::fs::read_to_string(logs_dir.join(format!("{ns}_mesh_{uid}/check/0.log")))
        .expect("check log");
    assert!(check_log.contains(" stdout F up"), "{check_log}");

    // On deletion the app stops first, then the sidecar.
    server.ok(&["delete", "pod", "-n", ns, "mesh", "--timeout=60s"]);
    let stamp_of = |container: &str, line: &str| {
        let path = logs_dir.join(format!("{ns}_mesh_{uid}/{container}/0.log"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .find(|l| l.ends_with(line))
            .and_then(|l| l.split(' ').next())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{container} did not log {line:?}: {text}"))
    };
    let app_stopped = stamp_of("app", "app-term");
    let proxy_stopped = stamp_of("proxy", "proxy-term");
    let parse = |t: &str| t.parse::<jiff::Timestamp>().expect("CRI log timestamp");
    assert!(
        parse(&app_stopped) <= parse(&proxy_stopped),
        "the sidecar stopped at {proxy_stopped}, before the app at {app_stopped}"
    );

    // A run-to-completion pod finishes when its app containers do; its sidecar, which
    // would run forever, is stopped and does not count.
    let spec = format!(
        "  restartPolicy: Never\n  initContainers:\n{}    restartPolicy: Always\n",
        container("logger", "sleep 3600", "")
    );
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml("job", &spec, &container("work", "sleep 1; exit 0", "")),
    );
    let pod = wait_for_phase(server, ns, "job", "Succeeded");
    let logger = &pod["status"]["initContainerStatuses"][0];
    assert!(logger["state"]["terminated"].is_object(), "{logger}");
    let work = &pod["status"]["containerStatuses"][0];
    assert_eq!(work["state"]["terminated"]["exitCode"], 0, "{work}");
}

/// What a container leaves in its termination message file (or, by policy after a
/// failure, at the end of its log) is its terminated state's message.
fn termination_messages(server: &Server, ns: &str) {
    let cases = [
        ("msg-file", "echo -n DONE > /dev/termination-log", "", "DONE"),
        (
            "msg-nonroot",
            "echo -n custom > /dev/termination-custom-log",
            "    terminationMessagePath: /dev/termination-custom-log\n    securityContext:\n      runAsUser: 1000\n",
            "custom",
        ),
        (
            "msg-logs",
            "echo to the log; exit 1",
            "    terminationMessagePolicy: FallbackToLogsOnError\n",
            "to the log\n",
        ),
        (
            "msg-none",
            "echo only logged",
            "    terminationMessagePolicy: FallbackToLogsOnError\n",
            "",
        ),
    ];
    for (name, script, extra, _) in cases {
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(
                name,
                "  restartPolicy: Never\n",
                &container("c", script, extra),
            ),
        );
    }
    for (name, _, _, expected) in cases {
        let pod = wait_for(60, &format!("{name} finished"), || {
            let p = pod_json(server, ns, name)?;
            matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")).then_some(p)
        });
        let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            terminated["message"].as_str().unwrap_or_default(),
            expected,
            "{name}: {terminated}"
        );
    }
}

/// `activeDeadlineSeconds`, set on a running pod, ends it as upstream does: Failed,
/// `DeadlineExceeded`, its container stopped.
fn active_deadline(server: &Server, ns: &str) {
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml("bounded", "", &container("c", "sleep 3600", "")),
    );
    wait_for(60, "bounded Running", || {
        let p = pod_json(server, ns, "bounded")?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    server.ok(&[
        "patch",
        "pod",
        "-n",
        ns,
        "bounded",
        "-p",
        r#"{"spec":{"activeDeadlineSeconds":5}}"#,
    ]);
    // The spec changed: generation 2, which the kubelet's status says it has seen.
    wait_for(30, "bounded observed at generation 2", || {
        let p = pod_json(server, ns, "bounded")?;
        (p["metadata"]["generation"] == 2 && p["status"]["observedGeneration"] == 2).then_some(())
    });
    let pod = wait_for_phase(server, ns, "bounded", "Failed");
    assert_eq!(
        pod["status"]["reason"], "DeadlineExceeded",
        "{}",
        pod["status"]
    );
    assert_eq!(
        pod["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    let state = &pod["status"]["containerStatuses"][0]["state"];
    assert!(state["terminated"].is_object(), "{state}");
}

/// Upstream's "Probing container should *not* be restarted / should be restarted with a
/// GRPC liveness probe": its `gRPCServerPodSpec` (agnhost `grpc-health-checking`, ports
/// 5000 and 8080), probed on 5000 (initial delay 15 s) and on 2333, where nothing
/// listens (initial delay 60 s), each with a 5 s timeout and a failure threshold of 1.
/// Returns when they were created.
fn grpc_liveness_pods(server: &Server, ns: &str) -> Instant {
    const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.52";
    for (name, port, delay) in [
        ("grpc-not-restarted", 5000, 15),
        ("grpc-restarted", 2333, 60),
    ] {
        let agnhost = format!(
            "  - name: agnhost\n    image: {AGNHOST}\n    imagePullPolicy: IfNotPresent\n    \
             command: [\"/agnhost\", \"grpc-health-checking\"]\n    ports:\n    \
             - containerPort: 5000\n    - containerPort: 8080\n    livenessProbe:\n      \
             grpc:\n        port: {port}\n      initialDelaySeconds: {delay}\n      \
             timeoutSeconds: 5\n      failureThreshold: 1\n"
        );
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(name, "", &agnhost),
        );
    }
    Instant::now()
}

/// The verdicts of [`grpc_liveness_pods`]: the probe on the wrong port restarts its
/// container (upstream waits up to 4 minutes for it), and the one the health service
/// answers has not restarted its own after at least 75 s, six or more probes (upstream
/// watches it for 4 minutes).
fn grpc_liveness_verdicts(server: &Server, ns: &str, created: Instant) {
    let restarts = |name: &str| {
        pod_json(server, ns, name)
            .and_then(|p| p["status"]["containerStatuses"][0]["restartCount"].as_i64())
    };
    let remaining = Duration::from_secs(240).saturating_sub(created.elapsed());
    wait_for(
        remaining.as_secs().max(1),
        "grpc-restarted restarted",
        || restarts("grpc-restarted").filter(|n| *n >= 1),
    );
    std::thread::sleep(Duration::from_secs(75).saturating_sub(created.elapsed()));
    let pod = pod_json(server, ns, "grpc-not-restarted").expect("grpc-not-restarted");
    assert_eq!(pod["status"]["phase"], "Running", "{}", pod["status"]);
    assert_eq!(restarts("grpc-not-restarted"), Some(0), "{}", pod["status"]);
}

/// A `RuntimeDefault` seccomp profile refuses what the default profiles refuse (a new
/// namespace, here a user namespace), which the same container does unconfined.
fn seccomp(server: &Server, ns: &str, logs_dir: &Path) {
    let script = "unshare -U true && echo unshared || echo refused";
    for (name, profile) in [("unconfined", "Unconfined"), ("confined", "RuntimeDefault")] {
        let spec = format!(
            "  restartPolicy: Never\n  securityContext:\n    seccompProfile:\n      type: {profile}\n"
        );
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(name, &spec, &container("c", script, "")),
        );
    }
    for (name, expected) in [("unconfined", "unshared"), ("confined", "refused")] {
        let pod = wait_for_phase(server, ns, name, "Succeeded");
        let log = container_log(logs_dir, ns, &pod, "c");
        assert!(
            log.contains(&format!(" stdout F {expected}")),
            "{name}: {log}"
        );
    }
}

/// `shareProcessNamespace`: each container sees the others' processes, under the pod's
/// own PID 1 (the runtime's sandbox process, `sandbox_command`, as upstream's pause).
fn shared_process_namespace(server: &Server, ns: &str, logs_dir: &Path, sandbox_command: &str) {
    let containers = format!(
        "{}{}",
        container("worker", "exec sleep 6", ""),
        container("looker", "sleep 2; ps -o pid,args", "")
    );
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml(
            "shared-pids",
            "  restartPolicy: Never\n  shareProcessNamespace: true\n",
            &containers,
        ),
    );
    let pod = wait_for_phase(server, ns, "shared-pids", "Succeeded");
    let log = container_log(logs_dir, ns, &pod, "looker");
    assert!(log.contains("sleep 6"), "the worker is not seen: {log}");
    let pid_1 = log
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some("1"))
        .unwrap_or_default();
    assert!(
        pid_1.contains(sandbox_command),
        "PID 1 is not the pod's: {log}"
    );
}

/// An `emptyDir` with `medium: Memory` is a tmpfs of its `sizeLimit`; a `subPathExpr`
/// mounts the subdirectory the container's environment names.
fn memory_volumes_and_sub_path_expressions(server: &Server, ns: &str, logs_dir: &Path) {
    let spec = "  restartPolicy: Never\n  volumes:\n  - name: cache\n    emptyDir:\n      medium: Memory\n      sizeLimit: 8Mi\n  - name: work\n    emptyDir: {}\n";
    let extra = "    env:\n    - name: POD_NAME\n      valueFrom:\n        fieldRef:\n          fieldPath: metadata.name\n    volumeMounts:\n    - name: cache\n      mountPath: /cache\n    - name: work\n      mountPath: /all\n    - name: work\n      mountPath: /mine\n      subPathExpr: $(POD_NAME)\n";
    let script = "grep ' /cache ' /proc/mounts; df -k /cache | tail -1; echo hi > /mine/f; cat /all/tmpfs-pod/f";
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml("tmpfs-pod", spec, &container("c", script, extra)),
    );
    let pod = wait_for_phase(server, ns, "tmpfs-pod", "Succeeded");
    let log = container_log(logs_dir, ns, &pod, "c");
    assert!(log.contains("tmpfs /cache tmpfs"), "{log}");
    // df's size column, in KiB: the 8Mi limit.
    assert!(log.contains(" 8192 "), "{log}");
    assert!(log.contains(" stdout F hi"), "{log}");
    // Once the pod is gone, so is its tmpfs.
    server.ok(&["delete", "pod", "-n", ns, "tmpfs-pod"]);
    wait_for(30, "the tmpfs unmounted", || {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        (!mounts.contains(pod["metadata"]["uid"].as_str().unwrap())).then_some(())
    });
}

/// Upstream's EmptyDir tests (`empty_dir.go`): on the default medium and on tmpfs, as root
/// and as a non-root user (1001), the volume is a world-writable directory (mode 0777)
/// and files made there with modes 0644, 0666 and 0777 keep them and their content; a
/// second container sees what the first wrote.
fn empty_dir_modes(server: &Server, ns: &str, logs_dir: &Path) {
    let volumes = "  volumes:\n  - name: default\n    emptyDir: {}\n  - name: tmpfs\n    emptyDir:\n      medium: Memory\n";
    let mounts = "    volumeMounts:\n    - {name: default, mountPath: /default}\n    - {name: tmpfs, mountPath: /tmpfs}\n";
    let script = "for v in default tmpfs; do \
        echo \"$v type $(stat -f -c %T /$v) dir $(stat -c %a /$v)\"; \
        for m in 0644 0666 0777; do f=/$v/file-$m; echo mount-tester new file > $f; chmod $m $f; \
        echo \"$v $m $(stat -c %A $f) $(cat $f)\"; done; done";
    for (name, user) in [
        ("emptydir-root", ""),
        (
            "emptydir-non-root",
            "  securityContext: {runAsUser: 1001}\n",
        ),
    ] {
        let spec = format!("  restartPolicy: Never\n{user}{volumes}");
        let reader = format!(
            "  - name: reader\n    image: {IMAGE}\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"until test -f /tmpfs/file-0777; do sleep 0.2; done; sleep 1; cat /tmpfs/file-0777\"]\n{mounts}"
        );
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(name, &spec, &(container("c", script, mounts) + &reader)),
        );
        let pod = wait_for_phase(server, ns, name, "Succeeded");
        let log = container_log(logs_dir, ns, &pod, "c");
        let lines: Vec<&str> = log
            .lines()
            .filter_map(|l| l.split_once(" stdout F ").map(|(_, text)| text))
            .collect();
        let default_type = lines
            .first()
            .and_then(|l| l.strip_prefix("default type "))
            .unwrap_or_default();
        assert!(
            !default_type.starts_with("tmpfs") && default_type.ends_with(" dir 777"),
            "{name}: {log}"
        );
        assert!(lines.contains(&"tmpfs type tmpfs dir 777"), "{name}: {log}");
        for volume in ["default", "tmpfs"] {
            for (mode, shown) in [
                ("0644", "-rw-r--r--"),
                ("0666", "-rw-rw-rw-"),
                ("0777", "-rwxrwxrwx"),
            ] {
                let expected = format!("{volume} {mode} {shown} mount-tester new file");
                assert!(
                    lines.contains(&expected.as_str()),
                    "{name}: {expected} in {log}"
                );
            }
        }
        // The other container of the pod reads what this one wrote.
        let read = container_log(logs_dir, ns, &pod, "reader");
        assert!(
            read.contains(" stdout F mount-tester new file"),
            "{name}: {read}"
        );
        server.ok(&["delete", "pod", "-n", ns, name, "--wait=false"]);
    }
}

/// `httpGet` lifecycle hooks: the kubelet calls postStart after the container starts
/// and preStop before it stops it, here at another pod's web server, which logs both.
fn http_hooks(server: &Server, ns: &str, logs_dir: &Path) {
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml(
            "hook-server",
            "",
            &container("c", "httpd -f -vv -p 8080 -h /tmp", ""),
        ),
    );
    let web = wait_for(60, "hook-server Running", || {
        let p = pod_json(server, ns, "hook-server")?;
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let ip = web["status"]["podIP"].as_str().unwrap().to_string();
    let hooks = format!(
        "    lifecycle:\n      postStart:\n        httpGet:\n          host: {ip}\n          port: 8080\n          path: /hello\n      preStop:\n        httpGet:\n          host: {ip}\n          port: 8080\n          path: /goodbye\n"
    );
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml("hooked", "", &container("c", "sleep 3600", &hooks)),
    );
    wait_for(60, "hooked Running", || {
        let p = pod_json(server, ns, "hooked")?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    server.ok(&["delete", "pod", "-n", ns, "hooked"]);
    let uid = web["metadata"]["uid"].as_str().unwrap();
    let log_path = logs_dir.join(format!("{ns}_hook-server_{uid}/c/0.log"));
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(read().contains("/hello") && read().contains("/goodbye")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = read();
    assert!(log.contains("/hello") && log.contains("/goodbye"), "{log}");
    assert!(log.find("/hello") < log.find("/goodbye"), "{log}");
}

/// A safe sysctl is set in the pod's namespaces; an unsafe one fails the pod at the
/// kubelet's admission.
fn sysctls(server: &Server, ns: &str, logs_dir: &Path) {
    for (name, sysctl) in [
        ("safe-sysctl", "kernel.shm_rmid_forced"),
        ("unsafe-sysctl", "kernel.msgmax"),
    ] {
        let spec = format!(
            "  restartPolicy: Never\n  securityContext:\n    sysctls:\n    - name: {sysctl}\n      value: \"1\"\n"
        );
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(
                name,
                &spec,
                &container("c", "cat /proc/sys/kernel/shm_rmid_forced", ""),
            ),
        );
    }
    let pod = wait_for_phase(server, ns, "safe-sysctl", "Succeeded");
    let log = container_log(logs_dir, ns, &pod, "c");
    assert!(log.contains(" stdout F 1"), "{log}");
    let pod = wait_for_phase(server, ns, "unsafe-sysctl", "Failed");
    assert_eq!(
        pod["status"]["reason"], "SysctlForbidden",
        "{}",
        pod["status"]
    );
    assert_eq!(
        pod["status"]["message"],
        "Pod forbidden sysctl: \"kernel.msgmax\" not allowlisted"
    );
}

/// In-place resize through `pods/resize`: the running containers' cgroups take the new
/// limits (seen from inside them), `resizePolicy: RestartContainer` restarts just its
/// container, the status reports what is allocated and enforced, and a resize the node
/// can never hold stays `PodResizePending`/`Infeasible`.
fn in_place_resize(server: &Server, ns: &str) {
    let resources = |cpu_req: &str, cpu_lim: &str, mem_req: &str, mem_lim: &str| {
        let list = |cpu: &str, mem: &str| {
            [("cpu", cpu), ("memory", mem)]
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("\"{k}\":\"{v}\""))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "{{\"requests\":{{{}}},\"limits\":{{{}}}}}",
            list(cpu_req, mem_req),
            list(cpu_lim, mem_lim)
        )
    };
    let with = |res: String, policy: &str| format!("    resources: {res}\n{policy}");
    let restart_on_memory =
        "    resizePolicy:\n    - resourceName: memory\n      restartPolicy: RestartContainer\n";
    let sleep = "sleep 3600";
    let guaranteed = resources("100m", "100m", "64Mi", "64Mi");
    let pods = [
        (
            "guaranteed",
            container("c1", sleep, &with(guaranteed.clone(), ""))
                + &container("c2", sleep, &with(guaranteed, restart_on_memory)),
        ),
        (
            "burstable",
            container("c", sleep, &with(resources("50m", "200m", "32Mi", ""), "")),
        ),
        (
            "equivalents",
            container("c", sleep, &with(resources("2m", "10m", "", "100M"), "")),
        ),
    ];
    for (name, containers) in &pods {
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(name, "", containers),
        );
    }
    for name in ["guaranteed", "burstable", "equivalents"] {
        wait_for(60, &format!("{name} Running"), || {
            let p = pod_json(server, ns, name)?;
            (condition(&p, "Ready").as_deref() == Some("True")).then_some(())
        });
    }
    let cgroup = |pod: &str, c: &str| cgroup_of(server, ns, pod, c);
    let unlimited = cgroup("burstable", "c")[2].clone();
    assert_eq!(cgroup("burstable", "c")[..2], ["20000", "51"]);
    assert_eq!(cgroup("guaranteed", "c1"), ["10000", "102", "67108864"]);
    let pod = pod_json(server, ns, "guaranteed").unwrap();
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["resources"]["limits"]["cpu"], "100m", "{status}");
    assert_eq!(status["allocatedResources"]["memory"], "64Mi", "{status}");

    // A strategic merge patch of containers' resources, sent to the pod itself or
    // through `pods/resize`; what kubectl prints (its error, when `ok` is false).
    let patch = |containers: &[(&str, &str)]| {
        let list: Vec<String> = containers
            .iter()
            .map(|(name, res)| format!("{{\"name\":\"{name}\",\"resources\":{res}}}"))
            .collect();
        format!("{{\"spec\":{{\"containers\":[{}]}}}}", list.join(","))
    };
    let send = |pod: &str, subresource: Option<&str>, body: String, ok: bool| {
        let mut args = vec!["patch", "pod", "-n", ns, pod, "-p", &body];
        args.extend(subresource.iter().flat_map(|s| ["--subresource", *s]));
        if ok {
            server.ok(&args)
        } else {
            server.fails(&args)
        }
    };

    let resize =
        |pod: &str, containers: &[(&str, &str)]| send(pod, Some("resize"), patch(containers), true);

    // A pod update may not change resources; the subresource may not change the QoS
    // class, nor take a limit away.
    let bigger = resources("200m", "200m", "96Mi", "96Mi");
    let err = send("guaranteed", None, patch(&[("c1", &bigger)]), false);
    assert!(err.contains("pod updates may not change fields"), "{err}");
    let burst = resources("200m", "300m", "96Mi", "96Mi");
    let err = send(
        "guaranteed",
        Some("resize"),
        patch(&[("c1", &burst)]),
        false,
    );
    assert!(
        err.contains("Pod QOS Class may not change as a result of resizing"),
        "{err}"
    );
    let no_limits = r#"{"limits":{"cpu":null}}"#;
    let err = send(
        "burstable",
        Some("resize"),
        patch(&[("c", no_limits)]),
        false,
    );
    assert!(err.contains("resource limits cannot be removed"), "{err}");

    // Guaranteed, through a strategic merge patch: c1 in place, c2 restarted (its memory
    // policy says so).
    resize("guaranteed", &[("c1", &bigger), ("c2", &bigger)]);
    // Waits until the kubelet has seen `generation` and brought every container to
    // its allocation, its status showing the limits (`cpu`, `memory`) given in order;
    // returns the pod.
    let settled = |name: &str, generation: i64, limits: &[(&str, &str)]| {
        wait_for(
            60,
            &format!("{name} resized to generation {generation}"),
            || {
                let p = pod_json(server, ns, name)?;
                let done = p["metadata"]["generation"] == generation
                    && p["status"]["observedGeneration"] == generation
                    && condition(&p, "PodResizeInProgress").is_none()
                    && condition(&p, "PodResizePending").is_none()
                    && p["status"]["containerStatuses"]
                        .as_array()?
                        .iter()
                        .zip(limits)
                        .all(|(s, (cpu, memory))| {
                            let l = &s["resources"]["limits"];
                            l["cpu"].as_str().unwrap_or("") == *cpu
                                && l["memory"].as_str().unwrap_or("") == *memory
                                && s["state"]["running"].is_object()
                        });
                done.then_some(p)
            },
        )
    };
    let pod = settled("guaranteed", 2, &[("200m", "96Mi"), ("200m", "96Mi")]);
    let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
    assert_eq!(statuses[0]["restartCount"], 0, "{}", statuses[0]);
    assert_eq!(statuses[1]["restartCount"], 1, "{}", statuses[1]);
    assert_eq!(statuses[0]["allocatedResources"]["cpu"], "200m");
    for c in ["c1", "c2"] {
        assert_eq!(
            cgroup("guaranteed", c),
            ["20000", "204", "100663296"],
            "{c}"
        );
    }

    // What `pods/resize` reads is the pod.
    let through_resize = server.json(&["pod", "-n", ns, "guaranteed", "--subresource", "resize"]);
    assert_eq!(through_resize["spec"], pod["spec"]);
    assert_eq!(through_resize["metadata"]["uid"], pod["metadata"]["uid"]);
    let table = server.ok(&[
        "get",
        "pod",
        "-n",
        ns,
        "guaranteed",
        "--subresource",
        "resize",
    ]);
    assert!(
        table.starts_with("NAME") && table.contains("guaranteed") && table.contains("Running"),
        "{table}"
    );

    // Back down (c1 only): less CPU and memory, in place.
    let original = resources("100m", "100m", "64Mi", "64Mi");
    resize("guaranteed", &[("c1", &original)]);
    let pod = settled("guaranteed", 3, &[("100m", "64Mi"), ("200m", "96Mi")]);
    let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
    assert_eq!(statuses[0]["restartCount"], 0, "{}", statuses[0]);
    assert_eq!(statuses[1]["restartCount"], 1, "{}", statuses[1]);
    assert_eq!(cgroup("guaranteed", "c1"), ["10000", "102", "67108864"]);
    assert_eq!(cgroup("guaranteed", "c2"), ["20000", "204", "100663296"]);

    // Less memory than c1 uses: allocated, never enforced, the condition says why; going
    // back ends it.
    let tiny = resources("100m", "100m", "10Ki", "10Ki");
    resize("guaranteed", &[("c1", &tiny)]);
    let refused = wait_for(30, "c1's lower limit refused", || {
        let p = pod_json(server, ns, "guaranteed")?;
        let conditions = p["status"]["conditions"].as_array()?;
        let c = conditions
            .iter()
            .find(|c| c["type"] == "PodResizeInProgress")?;
        (c["reason"] == "Error").then(|| c.clone())
    });
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("memory limit (10240) below current usage"),
        "{refused}"
    );
    assert_eq!(cgroup("guaranteed", "c1")[2], "67108864");
    resize("guaranteed", &[("c1", &original)]);
    settled("guaranteed", 5, &[("100m", "64Mi"), ("200m", "96Mi")]);

    // Equivalents: 2m and 1m are both the smallest shares, 10m and 5m the smallest CFS
    // quota. The cgroup holds at once, and the status shows the new values. (Its
    // memory limit, 100M, is not whole pages: the kernel's rounding is no resize.)
    assert_eq!(cgroup("equivalents", "c"), ["1000", "2", "99999744"]);
    let smaller = resources("1m", "5m", "", "100M");
    resize("equivalents", &[("c", &smaller)]);
    let pod = settled("equivalents", 2, &[("5m", "100M")]);
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["resources"]["requests"]["cpu"], "1m", "{status}");
    assert_eq!(status["allocatedResources"]["cpu"], "1m", "{status}");
    assert_eq!(cgroup("equivalents", "c")[..2], ["1000", "2"]);

    let mut pod = pod_json(server, ns, "burstable").unwrap();
    pod["spec"]["containers"][0]["resources"] =
        serde_json::from_str(&resources("100m", "300m", "48Mi", "128Mi")).unwrap();
    server.ok_with_input(
        &["replace", "-n", ns, "--subresource", "resize", "-f", "-"],
        &pod.to_string(),
    );
    settled("burstable", 2, &[("300m", "128Mi")]);
    assert_eq!(cgroup("burstable", "c"), ["30000", "102", "134217728"]);
    assert_ne!(unlimited, "134217728");

    // Waits for the pod's `PodResizePending` condition; returns the pod and it.
    let pending_resize = |name: &str| {
        wait_for(30, &format!("{name}'s resize pending"), || {
            let p = pod_json(server, ns, name)?;
            let c = p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "PodResizePending" && c["status"] == "True")?
                .clone();
            Some((p, c))
        })
    };

    // More CPU than the node has: accepted, never actuated.
    let huge = resources("1000", "1000", "48Mi", "128Mi");
    resize("burstable", &[("c", &huge)]);
    let (pod, pending) = pending_resize("burstable");
    assert_eq!(pending["reason"], "Infeasible", "{pending}");
    assert!(
        pending["message"]
            .as_str()
            .unwrap()
            .starts_with("Node didn't have enough capacity: cpu, requested: 1000000"),
        "{pending}"
    );
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["resources"]["requests"]["cpu"], "100m", "{status}");
    assert_eq!(cgroup("burstable", "c")[0], "30000");

    // A resize that fits the node but not beside another pod's requests is Deferred,
    // and goes through once that pod is gone.
    let node = server.json(&["node", NODE]);
    let cpus: i64 = node["status"]["capacity"]["cpu"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let hog = format!("{}m", cpus * 1000 - 500);
    for (name, cpu) in [("hog", hog.as_str()), ("small", "10m")] {
        let res = resources(cpu, "", "", "");
        server.ok_with_input(
            &["apply", "-n", ns, "-f", "-"],
            &pod_yaml(name, "", &container("c", sleep, &with(res, ""))),
        );
        wait_for(60, &format!("{name} Running"), || {
            let p = pod_json(server, ns, name)?;
            (condition(&p, "Ready").as_deref() == Some("True")).then_some(())
        });
    }
    resize("small", &[("c", &resources("600m", "", "", ""))]);
    let (_, pending) = pending_resize("small");
    assert_eq!(pending["reason"], "Deferred", "{pending}");
    assert!(
        pending["message"]
            .as_str()
            .unwrap()
            .starts_with("Node didn't have enough resource: cpu, requested: 600, used: "),
        "{pending}"
    );
    server.ok(&["delete", "pod", "-n", ns, "hog", "--timeout=60s"]);
    let pod = settled("small", 2, &[("", "")]);
    assert_eq!(
        pod["status"]["containerStatuses"][0]["resources"]["requests"]["cpu"],
        "600m"
    );
    assert_eq!(cgroup("small", "c")[1], "614");

    server.ok(&[
        "delete",
        "pod",
        "-n",
        ns,
        "guaranteed",
        "burstable",
        "equivalents",
        "small",
        "--wait=false",
    ]);
}

/// What a container's cgroup (v1) enforces, read inside it: CFS quota, CPU shares,
/// memory limit.
fn cgroup_of(server: &Server, ns: &str, pod: &str, container: &str) -> Vec<String> {
    server
        .ok(&[
            "exec",
            "-n",
            ns,
            pod,
            "-c",
            container,
            "--",
            "cat",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            "/sys/fs/cgroup/cpu/cpu.shares",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// A resize that cannot be actuated, left for a kubelet restart: memory below what the
/// container uses, allocated but refused. The pod's directory under `kubelet_root`
/// keeps both what was allocated and what was actuated.
fn stuck_resize_before_kubelet_restart(server: &Server, ns: &str, kubelet_root: &Path) {
    let original = Sized::guaranteed("c", "100m", "64Mi");
    let containers = container(
        "c",
        "sleep 3600",
        &format!("    resources: {}\n", original.resources()),
    );
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml("stuck", "", &containers),
    );
    wait_for(60, "stuck Ready", || {
        let p = pod_json(server, ns, "stuck")?;
        (condition(&p, "Ready").as_deref() == Some("True")).then_some(())
    });
    let pod = resize_stuck(server, ns, "10Ki", 2);
    let pod_dir =
        skiff_kubelet::volumes::pod_dir(kubelet_root, pod["metadata"]["uid"].as_str().unwrap());
    let memory_limit = |checkpoint| {
        let kept = skiff_kubelet::resize::load(&pod_dir, checkpoint).expect("a checkpoint");
        kept["c"].limits.as_ref().expect("limits")["memory"]
            .0
            .clone()
    };
    assert_eq!(memory_limit(Checkpoint::Allocated), "10Ki");
    assert_eq!(memory_limit(Checkpoint::Actuated), "64Mi");
}

/// The restarted kubelet goes on from what the one before it allocated and actuated: a
/// new refused resize is allocated, the status still shows the memory limit the
/// container holds (as its runtime reports it, or, from a runtime reporting nothing,
/// as the kubelet before recorded it), and going back needs no restart.
fn stuck_resize_after_kubelet_restart(server: &Server, ns: &str) {
    resize_stuck(server, ns, "20Ki", 3);
    let original = Sized::guaranteed("c", "100m", "64Mi");
    resize_pod(server, ns, "stuck", &[original]);
    let pod = wait_for(60, "stuck back at 64Mi", || {
        let p = pod_json(server, ns, "stuck")?;
        let s = &p["status"]["containerStatuses"][0];
        let done = p["status"]["observedGeneration"] == 4
            && condition(&p, "PodResizeInProgress").is_none()
            && s["resources"] == original.resources();
        done.then_some(p)
    });
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(cgroup_of(server, ns, "stuck", "c"), original.cgroup());
    server.ok(&["delete", "pod", "-n", ns, "stuck", "--wait=false"]);
}

/// Resizes pod `stuck` to a memory limit of `memory`, below what it uses, as
/// `generation`: allocated, refused, and the container keeps its 64Mi. Returns the pod.
fn resize_stuck(server: &Server, ns: &str, memory: &'static str, generation: i64) -> Value {
    resize_pod(
        server,
        ns,
        "stuck",
        &[Sized::guaranteed("c", "100m", memory)],
    );
    let bytes = skiff_quantity::parse_value(memory).expect("a quantity");
    let pod = wait_for(30, &format!("stuck's {memory} refused"), || {
        let p = pod_json(server, ns, "stuck")?;
        let refused = p["status"]["conditions"].as_array()?.iter().any(|c| {
            c["type"] == "PodResizeInProgress"
                && c["reason"] == "Error"
                && c["message"].as_str().is_some_and(|m| {
                    m.contains(&format!("memory limit ({bytes}) below current usage"))
                })
        });
        (refused && p["status"]["observedGeneration"] == generation).then_some(p)
    });
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["allocatedResources"]["memory"], memory, "{status}");
    assert_eq!(status["resources"]["limits"]["memory"], "64Mi", "{status}");
    assert_eq!(status["restartCount"], 0, "{status}");
    assert_eq!(cgroup_of(server, ns, "stuck", "c")[2], "67108864");
    pod
}

/// Waits for the pod to reach `phase`; returns it.
fn wait_for_phase(server: &Server, ns: &str, name: &str, phase: &str) -> Value {
    wait_for(60, &format!("{name} {phase}"), || {
        let p = pod_json(server, ns, name)?;
        (p["status"]["phase"] == phase).then_some(p)
    })
}

/// One container of upstream's resize cases (`pod_resize.go`): its requests and limits
/// (`""`: not set).
#[derive(Clone, Copy)]
struct Sized {
    name: &'static str,
    cpu_request: &'static str,
    cpu_limit: &'static str,
    memory_request: &'static str,
    memory_limit: &'static str,
}

impl Sized {
    /// Requests equal to limits (a guaranteed container).
    const fn guaranteed(name: &'static str, cpu: &'static str, memory: &'static str) -> Self {
        Sized {
            name,
            cpu_request: cpu,
            cpu_limit: cpu,
            memory_request: memory,
            memory_limit: memory,
        }
    }

    const fn requests(name: &'static str, cpu: &'static str, memory: &'static str) -> Self {
        Sized {
            name,
            cpu_request: cpu,
            cpu_limit: "",
            memory_request: memory,
            memory_limit: "",
        }
    }

    /// The `resources` of its container, as JSON.
    fn resources(&self) -> Value {
        let list = |cpu: &str, memory: &str| {
            let mut map = serde_json::Map::new();
            for (name, value) in [("cpu", cpu), ("memory", memory)] {
                if !value.is_empty() {
                    map.insert(name.into(), Value::String(value.into()));
                }
            }
            map
        };
        let mut resources = serde_json::Map::new();
        for (key, map) in [
            ("requests", list(self.cpu_request, self.memory_request)),
            ("limits", list(self.cpu_limit, self.memory_limit)),
        ] {
            if !map.is_empty() {
                resources.insert(key.into(), Value::Object(map));
            }
        }
        Value::Object(resources)
    }

    /// What its cgroup (v1) enforces: CFS quota, CPU shares, memory limit, as upstream's
    /// test computes them (quota at least 1 ms a period, shares at least 2).
    fn cgroup(&self) -> [String; 3] {
        let milli = |cpu: &str| match cpu.strip_suffix('m') {
            Some(m) => m.parse::<i64>().expect("millicores"),
            None => cpu.parse::<i64>().expect("cores") * 1000,
        };
        let quota = match self.cpu_limit {
            "" => -1,
            limit => (milli(limit) * 100).max(1000),
        };
        let request = if self.cpu_request.is_empty() {
            self.cpu_limit
        } else {
            self.cpu_request
        };
        let shares = match request {
            "" => 2,
            request => (milli(request) * 1024 / 1000).max(2),
        };
        let memory = match self.memory_limit {
            // What the kernel reports for no limit (the page counter's maximum).
            "" => "9223372036854771712".to_string(),
            limit => {
                let mebibytes = limit.strip_suffix("Mi").expect("a limit in Mi");
                (mebibytes.parse::<i64>().expect("mebibytes") << 20).to_string()
            }
        };
        [quota.to_string(), shares.to_string(), memory]
    }
}

/// Upstream's resize cases (`pod_resize.go`, the conformance ones): a pod of busybox
/// containers with these resources, resized through `pods/resize` to `resized` (by a
/// strategic merge patch, or by replacing the pod) and, with `roll_back`, back again;
/// after each step the spec, each container's status resources and its cgroup (read
/// inside it) say the same, no container restarted, and the generation counts each
/// resize.
fn resize_case(
    server: &Server,
    ns: &str,
    name: &str,
    original: &[Sized],
    resized: &[Sized],
    replace: bool,
    roll_back: bool,
) {
    let containers: String = original
        .iter()
        .map(|c| {
            container(
                c.name,
                "sleep 3600",
                &format!("    resources: {}\n", c.resources()),
            )
        })
        .collect();
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml(name, "", &containers),
    );
    let verified = |sizes: &[Sized], generation: i64| {
        let pod = wait_for(90, &format!("{name} at generation {generation}"), || {
            let p = pod_json(server, ns, name)?;
            let statuses = p["status"]["containerStatuses"].as_array()?;
            let settled = p["metadata"]["generation"] == generation
                && p["status"]["observedGeneration"] == generation
                && condition(&p, "Ready").as_deref() == Some("True")
                && condition(&p, "PodResizeInProgress").is_none()
                && condition(&p, "PodResizePending").is_none()
                && sizes.iter().all(|c| {
                    statuses.iter().any(|s| {
                        s["name"] == c.name
                            && s["resources"] == c.resources()
                            && s["state"]["running"].is_object()
                    })
                });
            settled.then_some(p)
        });
        for (spec, c) in pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(sizes)
        {
            assert_eq!(spec["name"], c.name);
            assert_eq!(
                spec["resources"],
                c.resources(),
                "{name}: spec of {}",
                c.name
            );
        }
        for status in pod["status"]["containerStatuses"].as_array().unwrap() {
            assert_eq!(status["restartCount"], 0, "{name}: {status}");
        }
        for c in sizes {
            let read = cgroup_of(server, ns, name, c.name);
            assert_eq!(read, c.cgroup(), "{name}: cgroup of {}", c.name);
        }
        pod
    };
    verified(original, 1);
    let resize = |to: &[Sized]| {
        if replace {
            let mut pod = server.json(&["pod", "-n", ns, name]);
            for (spec, c) in pod["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .zip(to)
            {
                spec["resources"] = c.resources();
            }
            server.ok_with_input(
                &["replace", "--subresource", "resize", "-f", "-"],
                &pod.to_string(),
            );
        } else {
            resize_pod(server, ns, name, to);
        }
    };
    resize(resized);
    let pod = verified(resized, 2);
    if replace {
        // What `pods/resize` reads is the pod, once resized.
        let through_resize = server.json(&["pod", "-n", ns, name, "--subresource", "resize"]);
        assert_eq!(through_resize["spec"], pod["spec"]);
        assert_eq!(through_resize["status"], pod["status"]);
    }
    if roll_back {
        resize(original);
        verified(original, 3);
    }
    server.ok(&["delete", "pod", "-n", ns, name, "--wait=false"]);
}

/// Resizes the pod's containers to `to` by a strategic merge patch of `pods/resize`.
fn resize_pod(server: &Server, ns: &str, name: &str, to: &[Sized]) {
    let containers: Vec<Value> = to
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "resources": c.resources()}))
        .collect();
    let patch = serde_json::json!({"spec": {"containers": containers}}).to_string();
    server.ok(&[
        "patch",
        "pod",
        "-n",
        ns,
        name,
        "--subresource",
        "resize",
        "-p",
        &patch,
    ]);
}

/// Upstream's conformance resize cases, with its values: containers `c1`… offset by 2m
/// and 2Mi each so that no two are alike.
fn upstream_resize_cases(server: &Server, ns: &str) {
    const C: [&str; 3] = ["c1", "c2", "c3"];
    let guaranteed = |cpu: [&'static str; 3], memory: [&'static str; 3]| {
        (0..3)
            .map(|i| Sized::guaranteed(C[i], cpu[i], memory[i]))
            .collect::<Vec<_>>()
    };
    let original = guaranteed(["20m", "22m", "24m"], ["35Mi", "37Mi", "39Mi"]);
    // Increase c1 and c2, decrease c3: a net increase.
    let net_increase = guaranteed(["25m", "27m", "19m"], ["40Mi", "42Mi", "34Mi"]);
    resize_case(
        server,
        ns,
        "net-increase",
        &original,
        &net_increase,
        false,
        true,
    );
    // Increase c1, decrease c2 and c3: a net decrease.
    let net_decrease = guaranteed(["25m", "17m", "19m"], ["40Mi", "32Mi", "34Mi"]);
    resize_case(
        server,
        ns,
        "net-decrease",
        &original,
        &net_decrease,
        false,
        true,
    );
    // Increase CPU of c1 and c3, memory of c2 and c3; decrease CPU of c2.
    let various = guaranteed(["25m", "17m", "29m"], ["35Mi", "42Mi", "44Mi"]);
    resize_case(server, ns, "various", &original, &various, false, true);

    // Burstable containers gaining limits and requests they did not have.
    let burstable = [
        Sized::requests("c1", "20m", ""),
        Sized::requests("c2", "", "35Mi"),
        Sized::requests("c3", "20m", "35Mi"),
        Sized::requests("c4", "20m", ""),
        Sized::requests("c5", "", "35Mi"),
    ];
    let grown = [
        Sized {
            cpu_limit: "35m",
            ..Sized::requests("c1", "25m", "")
        },
        Sized {
            memory_limit: "50Mi",
            ..Sized::requests("c2", "", "30Mi")
        },
        Sized::requests("c3", "20m", "30Mi"),
        Sized::requests("c4", "15m", "35Mi"),
        Sized::requests("c5", "20m", "40Mi"),
    ];
    resize_case(
        server,
        ns,
        "burstable-various",
        &burstable,
        &grown,
        false,
        false,
    );

    // Equivalent values (the same cgroup settings) still show as resized.
    let equivalents = [Sized {
        cpu_limit: "10m",
        ..Sized::requests("c1", "2m", "")
    }];
    let halved = [Sized {
        cpu_limit: "5m",
        ..Sized::requests("c1", "1m", "")
    }];
    resize_case(
        server,
        ns,
        "equivalents",
        &equivalents,
        &halved,
        false,
        true,
    );

    // Through the replace endpoint.
    let requests = [Sized::requests("c1", "20m", "35Mi")];
    let more = [Sized::requests("c1", "25m", "40Mi")];
    resize_case(server, ns, "replaced", &requests, &more, true, false);
}

/// `curl -sS` with the admin's credentials against the server: its output.
fn curl(server: &Server, args: &[&str], path: &str) -> String {
    let out = server.curl(&[&["-sS"], args].concat(), path);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Upstream's pod generation tests (`pods.go`, "Pods Extended (pod generation)"): the
/// generation starts at 1 whatever the client sends, counts spec changes (not empty
/// updates, metadata, or a generation the client sets), counts a graceful deletion, and
/// the kubelet's `status.observedGeneration` follows it, through 500 updates too.
fn pod_generation_cases(server: &Server, ns: &str) {
    const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost:2.52";
    let generations = |name: &str| {
        let pod = pod_json(server, ns, name).expect("the pod");
        (
            pod["metadata"]["generation"].as_i64().unwrap_or(0),
            pod["status"]["observedGeneration"].as_i64().unwrap_or(0),
        )
    };
    let observed = |name: &str, generation: i64, secs: u64| {
        wait_for(secs, &format!("{name} observed at {generation}"), || {
            (generations(name) == (generation, generation)).then_some(())
        });
    };
    // A strategic merge patch: containers merge by name, as an update of the pod would
    // keep the rest.
    let patch = |name: &str, body: &str| {
        server.ok(&["patch", "pod", "-n", ns, name, "-p", body]);
    };

    // Starts at 1 and counts each spec change.
    let name = "generation";
    let init = format!(
        "  initContainers:\n  - name: init-container\n    image: {IMAGE}\n    imagePullPolicy: IfNotPresent\n    command: [\"true\"]\n"
    );
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml(name, &init, &container("c", "sleep 3600", "")),
    );
    wait_for_phase(server, ns, name, "Running");
    observed(name, 1, 20);
    // Each step: a patch (none: the pod replaced as it is), and whether it is a
    // change of the spec.
    let container_image =
        format!(r#"{{"spec":{{"containers":[{{"name":"c","image":"{AGNHOST}"}}]}}}}"#);
    let init_image = format!(
        r#"{{"spec":{{"initContainers":[{{"name":"init-container","image":"{AGNHOST}"}}]}}}}"#
    );
    let steps = [
        ("empty update", None, false),
        (
            "tolerations",
            Some(
                r#"{"spec":{"tolerations":[{"key":"foo-1","operator":"Equal","value":"bar","effect":"NoSchedule"}]}}"#,
            ),
            true,
        ),
        (
            "activeDeadlineSeconds",
            Some(r#"{"spec":{"activeDeadlineSeconds":5000}}"#),
            true,
        ),
        ("container image", Some(container_image.as_str()), true),
        ("init container image", Some(init_image.as_str()), true),
        (
            "metadata",
            Some(r#"{"metadata":{"annotations":{"key":"value"}}}"#),
            false,
        ),
        (
            "a generation the client sets",
            Some(r#"{"metadata":{"generation":1}}"#),
            false,
        ),
    ];
    let mut expected = 1;
    for (step, change, bumps) in steps {
        match change {
            Some(body) => patch(name, body),
            None => {
                let pod = server.ok(&["get", "pod", "-n", ns, name, "-o", "json"]);
                server.ok_with_input(&["replace", "-f", "-"], &pod);
            }
        }
        if bumps {
            expected += 1;
        }
        assert_eq!(generations(name).0, expected, "after {step}");
        observed(name, expected, 20);
    }

    // A generation sent on create is not kept; a graceful deletion counts.
    let name = "generation-delete";
    // Its container ends on SIGTERM, so that the 60 s grace period need not run out.
    let yaml = pod_yaml(
        name,
        "",
        &container("c", "trap 'exit 0' TERM; sleep 3600 & wait", ""),
    )
    .replace(
        "  name: generation-delete\n",
        "  name: generation-delete\n  generation: 100\n",
    );
    server.ok_with_input(&["apply", "-n", ns, "-f", "-"], &yaml);
    assert_eq!(generations(name).0, 1);
    wait_for_phase(server, ns, name, "Running");
    // A graceful DELETE answers 200 with the pod as it now is. (Its container ends on
    // SIGTERM at once, so the pod may be gone before another read.)
    let deleted = curl(
        server,
        &["-X", "DELETE", "-w", "\n%{http_code}"],
        &format!("/api/v1/namespaces/{ns}/pods/{name}?gracePeriodSeconds=60"),
    );
    let (body, code) = deleted.rsplit_once('\n').unwrap_or_default();
    assert_eq!(code, "200", "{deleted}");
    let deleting: Value = serde_json::from_str(body).expect("the deleted pod");
    assert_eq!(deleting["metadata"]["generation"], 2, "{deleting}");
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    wait_for(30, &format!("{name} gone"), || {
        pod_json(server, ns, name).is_none().then_some(())
    });

    // 499 updates of the spec: generation and observed generation meet at 500.
    let name = "generation-500";
    server.ok_with_input(
        &["apply", "-n", ns, "-f", "-"],
        &pod_yaml(
            name,
            "  activeDeadlineSeconds: 5000\n",
            &container("c", "sleep 3600", ""),
        ),
    );
    wait_for_phase(server, ns, name, "Running");
    let url = format!("/api/v1/namespaces/{ns}/pods/{name}");
    let mut codes = String::new();
    for i in 1..=499 {
        let body = format!(r#"{{"spec":{{"activeDeadlineSeconds":{}}}}}"#, 5000 - i);
        codes.push_str(&curl(
            server,
            &[
                "-X",
                "PATCH",
                "-H",
                "Content-Type: application/merge-patch+json",
                "-d",
                &body,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} ",
            ],
            &url,
        ));
    }
    assert!(codes.split_whitespace().all(|c| c == "200"), "{codes}");
    observed(name, 500, 120);
    server.ok(&[
        "delete",
        "pod",
        "-n",
        ns,
        "generation",
        "generation-500",
        "--wait=false",
    ]);
}

/// The CRI log of the pod's container's first attempt, where the kubelet writes it.
fn container_log(logs_dir: &Path, ns: &str, pod: &Value, container: &str) -> String {
    let name = pod["metadata"]["name"].as_str().unwrap();
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    std::fs::read_to_string(logs_dir.join(format!("{ns}_{name}_{uid}/{container}/0.log")))
        .expect("container log")
}
