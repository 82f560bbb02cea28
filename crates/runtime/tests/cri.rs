//! End-to-end tests of the CRI server with real runc, driven over its gRPC
//! socket the way the kubelet drives a runtime. They need root; see
//! `common::require_prerequisites` for the packages they need.
//!
//! The tests of CRI contract behaviour run twice, on Skiff's runtime and on a containerd
//! of the test's own (Debian's 1.6, see `skiff_e2e::containerd`): they encode the
//! contract, not Skiff's implementation. Parts that look at Skiff's internals, and tests
//! of features containerd 1.6 lacks, run on Skiff only and say why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Harness, Setup};
use skiff_e2e::registry::LocalRegistry;
use skiff_runtime::proto;

/// Runs each named test, an `async fn(Backend)`, on both runtimes, as
/// `NAME::on_skiff` and `NAME::on_containerd`.
macro_rules! on_both_runtimes {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test]
            async fn on_skiff() {
                super::$test(super::Backend::Skiff).await
            }

            #[tokio::test]
            async fn on_containerd() {
                super::$test(super::Backend::Containerd).await
            }
        }
    )*};
}

on_both_runtimes!(
    version_status_and_runtime_config,
    images_list_status_fsinfo_remove,
    container_echoes_logs_and_completes,
    stop_with_timeout_and_exec_sync,
    containers_in_a_sandbox_share_its_network_namespace,
    a_pod_can_share_one_process_namespace,
    containers_outlive_a_runtime_restart,
    pull_from_a_local_registry_through_a_mirror,
    resource_limits_apply_and_oom_is_reported,
    reopen_container_log_after_rotation,
    pods_reach_each_other_over_cni,
    stats_come_from_the_cgroups_and_the_writable_layer,
);

/// A pod as the kubelet asks for one: its log directory made, its cgroup under the
/// test's (containerd, as upstream's runtimes, needs the kubelet's pod cgroup).
fn sandbox_config(h: &Harness, name: &str) -> proto::PodSandboxConfig {
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: h.dir.path().join("logs").display().to_string(),
        linux: Some(proto::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod-{name}", h.cgroup_parent),
            security_context: Some(proto::LinuxSandboxSecurityContext {
                namespace_options: Some(own_process_namespace()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, command: &[&str]) -> proto::ContainerConfig {
    proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(proto::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(proto::LinuxContainerConfig {
            security_context: Some(proto::LinuxContainerSecurityContext {
                namespace_options: Some(own_process_namespace()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The namespaces the kubelet asks for a pod without `shareProcessNamespace`: a PID
/// namespace per container. It always says so: the CRI's default, `POD`, would put
/// every container in the sandbox's.
fn own_process_namespace() -> proto::NamespaceOption {
    proto::NamespaceOption {
        pid: proto::NamespaceMode::Container as i32,
        ..Default::default()
    }
}

async fn run_sandbox(h: &mut Harness, name: &str) -> (String, proto::PodSandboxConfig) {
    let cfg = sandbox_config(h, name);
    let id =
        h.rt.run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    (id, cfg)
}

async fn create_and_start(
    h: &mut Harness,
    sandbox: &str,
    sb_cfg: &proto::PodSandboxConfig,
    cfg: proto::ContainerConfig,
) -> String {
    let id =
        h.rt.create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sandbox.into(),
            config: Some(cfg),
            sandbox_config: Some(sb_cfg.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    h.rt.start_container(proto::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("StartContainer");
    id
}

async fn status(h: &mut Harness, id: &str) -> proto::ContainerStatus {
    h.rt.container_status(proto::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("status")
}

async fn wait_exited(h: &mut Harness, id: &str) -> proto::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(h, id).await;
        if s.state == proto::ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn remove_sandbox(h: &mut Harness, id: &str) {
    h.rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("StopPodSandbox");
    h.rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("RemovePodSandbox");
}

async fn exec(
    h: &mut Harness,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<proto::ExecSyncResponse, tonic::Status> {
    h.rt.exec_sync(proto::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

async fn version_status_and_runtime_config(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let v =
        h.rt.version(proto::VersionRequest::default())
            .await
            .expect("Version")
            .into_inner();
    let name = match backend {
        Backend::Skiff => "skiff",
        Backend::Containerd => "containerd",
    };
    assert_eq!(v.runtime_name, name);
    assert!(!v.runtime_version.is_empty(), "{v:?}");
    assert_eq!(v.runtime_api_version, "v1");
    let s =
        h.rt.status(proto::StatusRequest { verbose: false })
            .await
            .expect("Status")
            .into_inner();
    let conds = s.status.expect("status").conditions;
    for t in ["RuntimeReady", "NetworkReady"] {
        assert!(
            conds.iter().any(|c| c.r#type == t && c.status),
            "{t} in {conds:?}"
        );
    }
    let c = h.rt.runtime_config(proto::RuntimeConfigRequest {}).await;
    match backend {
        Backend::Skiff => assert_eq!(
            c.expect("RuntimeConfig")
                .into_inner()
                .linux
                .expect("linux")
                .cgroup_driver,
            proto::CgroupDriver::Cgroupfs as i32
        ),
        // containerd 1.6 predates the call (CRI of Kubernetes 1.28); the kubelet then
        // keeps the cgroup driver of its own configuration.
        Backend::Containerd => assert_eq!(
            c.expect_err("RuntimeConfig is not in containerd 1.6")
                .code(),
            tonic::Code::Unimplemented
        ),
    }
    h.assert_clean().await;
}

async fn list_images(h: &mut Harness) -> Vec<proto::Image> {
    h.img
        .list_images(proto::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

async fn images_list_status_fsinfo_remove(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let list = list_images(&mut h).await;
    // The test archive holds busybox and agnhost (busybox and one more layer).
    assert_eq!(list.len(), 2, "{list:?}");
    let tagged = |tag: &str| {
        list.iter()
            .find(|image| image.repo_tags.iter().any(|t| t == tag))
            .unwrap_or_else(|| panic!("{tag} in {list:?}"))
            .clone()
    };
    let busybox = tagged("docker.io/library/busybox:latest");
    assert!(busybox
        .repo_tags
        .contains(&"registry.k8s.io/e2e-test-images/busybox:1.36.1-1".to_string()));
    assert!(busybox.id.starts_with("sha256:"));
    let agnhost = tagged("registry.k8s.io/e2e-test-images/agnhost:2.52");
    assert_ne!(agnhost.id, busybox.id);
    let st = |name: &str| proto::ImageStatusRequest {
        image: Some(proto::ImageSpec {
            image: name.into(),
            ..Default::default()
        }),
        verbose: false,
    };
    let found = h
        .img
        .image_status(st("busybox:latest"))
        .await
        .expect("ImageStatus")
        .into_inner();
    assert_eq!(
        found.image.as_ref().map(|i| i.id.clone()),
        Some(busybox.id.clone())
    );
    let by_id = h
        .img
        .image_status(st(&busybox.id))
        .await
        .expect("ImageStatus")
        .into_inner();
    assert!(by_id.image.is_some());
    let missing = h
        .img
        .image_status(st("nginx"))
        .await
        .expect("ImageStatus")
        .into_inner();
    assert!(missing.image.is_none());
    // containerd measures its snapshots every `stats_collect_period`, so its first
    // answers may predate the import.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fs = h
            .img
            .image_fs_info(proto::ImageFsInfoRequest {})
            .await
            .expect("ImageFsInfo")
            .into_inner();
        let used = fs.image_filesystems[0]
            .used_bytes
            .as_ref()
            .expect("used")
            .value;
        if used > 1_000_000 {
            break;
        }
        assert!(Instant::now() < deadline, "{fs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Re-importing is idempotent: the same images, by the same ids.
    h.import_test_images().await;
    let ids = |images: &[proto::Image]| {
        let mut ids: Vec<String> = images.iter().map(|i| i.id.clone()).collect();
        ids.sort();
        ids
    };
    let again = list_images(&mut h).await;
    assert_eq!(ids(&again), ids(&list), "{again:?}");

    h.img
        .remove_image(proto::RemoveImageRequest {
            image: Some(proto::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage");
    let gone = h
        .img
        .image_status(st("busybox"))
        .await
        .expect("ImageStatus")
        .into_inner();
    assert!(gone.image.is_none());
    // Skiff only, its store's layout: busybox's layer is agnhost's first, and stays
    // while agnhost does.
    let layers_dir = h.root().join("images/layers/sha256");
    let layers = || std::fs::read_dir(&layers_dir).expect("layers").count();
    if backend == Backend::Skiff {
        assert_eq!(layers(), 2, "agnhost's layers, busybox's among them, stay");
    }
    h.img
        .remove_image(proto::RemoveImageRequest {
            image: Some(proto::ImageSpec {
                image: agnhost.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage");
    let images = list_images(&mut h).await;
    assert!(images.is_empty(), "{images:?}");
    if backend == Backend::Skiff {
        assert_eq!(
            layers(),
            0,
            "unused layers are removed with the last image using them"
        );
    }
    h.assert_clean().await;
}

async fn container_echoes_logs_and_completes(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let (sb, sb_cfg) = run_sandbox(&mut h, "echo").await;
    let id = create_and_start(
        &mut h,
        &sb,
        &sb_cfg,
        container_config(
            "echo",
            &["sh", "-c", "echo hello world; echo oops >&2; hostname"],
        ),
    )
    .await;
    let s = wait_exited(&mut h, &id).await;
    assert_eq!(s.exit_code, 0);
    assert_eq!(s.reason, "Completed");
    assert!(
        s.started_at >= s.created_at && s.finished_at >= s.created_at,
        "{s:?}"
    );
    // Skiff only: containerd stamps `started_at` once its start call returns, which may
    // be after a container this quick has exited.
    if backend == Backend::Skiff {
        assert!(s.finished_at >= s.started_at, "{s:?}");
    }
    let log = std::fs::read_to_string(&s.log_path).expect("read log");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    let check = |stream: &str, text: &str| {
        let l = lines
            .iter()
            .find(|l| l.ends_with(&format!(" {stream} F {text}")))
            .unwrap_or_else(|| panic!("no {stream} line {text:?} in {log}"));
        let ts = l.split(' ').next().expect("ts");
        ts.parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("bad timestamp {ts}: {e}"));
    };
    check("stdout", "hello world");
    check("stderr", "oops");
    check("stdout", "echo");

    // A failing container reports Error with its exit code.
    let bad = create_and_start(
        &mut h,
        &sb,
        &sb_cfg,
        container_config("bad", &["sh", "-c", "exit 7"]),
    )
    .await;
    let s = wait_exited(&mut h, &bad).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"));

    let listed =
        h.rt.list_containers(proto::ListContainersRequest {
            filter: Some(proto::ContainerFilter {
                pod_sandbox_id: sb.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);
    h.rt.remove_container(proto::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    let err =
        h.rt.container_status(proto::ContainerStatusRequest {
            container_id: id,
            verbose: false,
        })
        .await
        .expect_err("removed");
    assert_eq!(err.code(), tonic::Code::NotFound);
    remove_sandbox(&mut h, &sb).await;
    let sandboxes =
        h.rt.list_pod_sandbox(proto::ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
    assert!(sandboxes.is_empty());
    h.assert_clean().await;
}

async fn stop_with_timeout_and_exec_sync(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let (sb, sb_cfg) = run_sandbox(&mut h, "sleeper").await;
    // PID 1 ignores SIGTERM without a handler, so stop must escalate to SIGKILL.
    let id = create_and_start(
        &mut h,
        &sb,
        &sb_cfg,
        container_config("sleep", &["sleep", "1000"]),
    )
    .await;
    let s = status(&mut h, &id).await;
    assert_eq!(s.state, proto::ContainerState::ContainerRunning as i32);

    let out = exec(
        &mut h,
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        10,
    )
    .await
    .expect("ExecSync");
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, 3);
    let env = exec(
        &mut h,
        &id,
        &["sh", "-c", "echo $HOSTNAME:$PATH; pwd; id -u"],
        0,
    )
    .await
    .expect("ExecSync");
    assert_eq!(
        String::from_utf8_lossy(&env.stdout),
        "sleeper:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/\n0\n"
    );
    let t0 = Instant::now();
    let err = exec(&mut h, &id, &["sleep", "30"], 1)
        .await
        .expect_err("timeout");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));

    let t0 = Instant::now();
    h.rt.stop_container(proto::StopContainerRequest {
        container_id: id.clone(),
        timeout: 2,
    })
    .await
    .expect("StopContainer");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let s = status(&mut h, &id).await;
    assert_eq!(s.state, proto::ContainerState::ContainerExited as i32);
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"));

    // A container that handles SIGTERM stops at once.
    let trap = create_and_start(
        &mut h,
        &sb,
        &sb_cfg,
        container_config(
            "trap",
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM; while true; do sleep 0.1; done",
            ],
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    h.rt.stop_container(proto::StopContainerRequest {
        container_id: trap.clone(),
        timeout: 30,
    })
    .await
    .expect("StopContainer");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let s = status(&mut h, &trap).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    remove_sandbox(&mut h, &sb).await;
    h.assert_clean().await;
}

async fn containers_in_a_sandbox_share_its_network_namespace(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let (sb, sb_cfg) = run_sandbox(&mut h, "shared").await;
    let a = create_and_start(
        &mut h,
        &sb,
        &sb_cfg,
        container_config("a", &["sleep", "1000"]),
    )
    .await;
    let b = create_and_start(
        &mut h,
        &sb,
        &sb_cfg,
        container_config("b", &["sleep", "1000"]),
    )
    .await;
    let ns = |o: proto::ExecSyncResponse| String::from_utf8_lossy(&o.stdout).trim().to_string();
    let na = ns(exec(&mut h, &a, &["readlink", "/proc/self/ns/net"], 10)
        .await
        .expect("exec a"));
    let nb = ns(exec(&mut h, &b, &["readlink", "/proc/self/ns/net"], 10)
        .await
        .expect("exec b"));
    let host = std::fs::read_link("/proc/self/ns/net")
        .expect("host ns")
        .display()
        .to_string();
    assert!(na.starts_with("net:["), "{na}");
    assert_eq!(na, nb);
    assert_ne!(na, host);
    // And reach each other on localhost: b serves, a connects.
    exec(
        &mut h,
        &b,
        &[
            "sh",
            "-c",
            "echo pong > /tmp/index.html; httpd -p 127.0.0.1:8080 -h /tmp",
        ],
        10,
    )
    .await
    .expect("start httpd");
    // busybox's httpd puts itself in the background before it listens: ask until it
    // answers.
    let got = exec(
        &mut h,
        &a,
        &[
            "sh",
            "-c",
            "for i in $(seq 50); do wget -q -O - http://127.0.0.1:8080/index.html && exit; sleep 0.1; done; exit 1",
        ],
        10,
    )
    .await
    .expect("wget");
    assert_eq!(String::from_utf8_lossy(&got.stdout), "pong\n", "{got:?}");
    // Different sandboxes get different namespaces.
    let (sb2, sb2_cfg) = run_sandbox(&mut h, "other").await;
    let c = create_and_start(
        &mut h,
        &sb2,
        &sb2_cfg,
        container_config("c", &["sleep", "1000"]),
    )
    .await;
    let nc = ns(exec(&mut h, &c, &["readlink", "/proc/self/ns/net"], 10)
        .await
        .expect("exec c"));
    assert_ne!(na, nc);
    remove_sandbox(&mut h, &sb).await;
    remove_sandbox(&mut h, &sb2).await;
    common::assert_network_namespace_gone(&na);
    common::assert_network_namespace_gone(&nc);
    h.assert_clean().await;
}

/// `shareProcessNamespace`: the sandbox's PID namespace, whose PID 1 is the runtime's own
/// holder (as upstream's pause), seen by every container of the pod that asks for it.
async fn a_pod_can_share_one_process_namespace(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let pod_pid = |mut cfg: proto::ContainerConfig| {
        cfg.linux = Some(proto::LinuxContainerConfig {
            security_context: Some(proto::LinuxContainerSecurityContext {
                namespace_options: Some(proto::NamespaceOption {
                    pid: proto::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        cfg
    };
    let mut sb_cfg = sandbox_config(&h, "pidshare");
    sb_cfg.linux.as_mut().expect("linux").security_context =
        Some(proto::LinuxSandboxSecurityContext {
            namespace_options: Some(proto::NamespaceOption {
                pid: proto::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    let sb =
        h.rt.run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(sb_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let a = create_and_start(
        &mut h,
        &sb,
        &sb_cfg,
        pod_pid(container_config("a", &["sleep", "1000"])),
    )
    .await;
    // b names no namespace mode at all: the CRI's default is the pod's.
    let mut b_cfg = container_config("b", &["sleep", "1001"]);
    b_cfg.linux = None;
    let b = create_and_start(&mut h, &sb, &sb_cfg, b_cfg).await;
    let run = |o: proto::ExecSyncResponse| String::from_utf8_lossy(&o.stdout).to_string();
    let seen_by_b = run(exec(&mut h, &b, &["ps", "-o", "pid,args"], 10)
        .await
        .expect("ps in b"));
    assert!(
        seen_by_b.contains("sleep 1000"),
        "b does not see a:\n{seen_by_b}"
    );
    // PID 1 of the pod is the sandbox's process, no container's.
    let init = run(exec(&mut h, &a, &["cat", "/proc/1/cmdline"], 10)
        .await
        .expect("cat in a"));
    assert!(
        !init.is_empty() && !init.contains("sleep"),
        "PID 1 of the pod is {init:?}"
    );
    // Skiff only: its sandbox process is its own holder (containerd's runs the sandbox
    // image).
    if backend == Backend::Skiff {
        assert!(
            init.contains("__skiff-sandbox"),
            "PID 1 of the pod is {init:?}"
        );
    }
    // Without the option, a container of another pod has a namespace of its own.
    let (other, other_cfg) = run_sandbox(&mut h, "pidalone").await;
    let c = create_and_start(
        &mut h,
        &other,
        &other_cfg,
        container_config("c", &["sleep", "1002"]),
    )
    .await;
    let seen_by_c = run(exec(&mut h, &c, &["ps", "-o", "pid,args"], 10)
        .await
        .expect("ps in c"));
    assert!(!seen_by_c.contains("sleep 1000"), "{seen_by_c}");
    let pid_1 = seen_by_c
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_default();
    assert!(pid_1.contains("sleep 1002"), "{seen_by_c}");
    remove_sandbox(&mut h, &sb).await;
    remove_sandbox(&mut h, &other).await;
    h.assert_clean().await;
}

async fn containers_outlive_a_runtime_restart(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let (sb, sb_cfg) = run_sandbox(&mut h, "survivor").await;
    let id = create_and_start(
        &mut h,
        &sb,
        &sb_cfg,
        container_config(
            "ticker",
            &["sh", "-c", "echo before; sleep 2; echo after; exit 5"],
        ),
    )
    .await;
    // While the runtime is gone, the container keeps running under its monitor.
    h.restart_runtime().await;
    let s = status(&mut h, &id).await;
    assert_eq!(
        s.state,
        proto::ContainerState::ContainerRunning as i32,
        "{s:?}"
    );
    let s = wait_exited(&mut h, &id).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (5, "Error"));
    let log = std::fs::read_to_string(&s.log_path).expect("log");
    assert!(
        log.contains(" stdout F before\n") && log.contains(" stdout F after\n"),
        "{log}"
    );
    let sbs =
        h.rt.pod_sandbox_status(proto::PodSandboxStatusRequest {
            pod_sandbox_id: sb.clone(),
            verbose: false,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("status");
    assert_eq!(sbs.state, proto::PodSandboxState::SandboxReady as i32);
    remove_sandbox(&mut h, &sb).await;
    h.assert_clean().await;
}

async fn pull_from_a_local_registry_through_a_mirror(backend: Backend) {
    let reg = LocalRegistry::start_with_busybox();
    let mut h = Harness::launch(
        backend,
        Setup {
            docker_io_mirror: Some(reg.addr.clone()),
            ..Setup::default()
        },
    )
    .await;
    let pull = |image: &str| proto::PullImageRequest {
        image: Some(proto::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: None,
    };
    // A short name goes to docker.io, which the mirror serves.
    let r = h
        .img
        .pull_image(pull("busybox"))
        .await
        .expect("PullImage")
        .into_inner();
    assert!(r.image_ref.starts_with("sha256:"), "{r:?}");
    let st = h
        .img
        .image_status(proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image: "docker.io/library/busybox:latest".into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .expect("pulled image is known");
    assert_eq!(st.id, r.image_ref);
    assert!(st
        .repo_digests
        .iter()
        .any(|d| d.starts_with("docker.io/library/busybox@sha256:")));
    // A loopback registry is reachable by its own name over plain HTTP.
    let direct = format!("{}/library/busybox:latest", reg.addr);
    let r2 = h
        .img
        .pull_image(pull(&direct))
        .await
        .expect("PullImage direct")
        .into_inner();
    assert_eq!(r2.image_ref, r.image_ref, "same content, same image id");
    // An unknown image fails cleanly.
    let err = h
        .img
        .pull_image(pull(&format!("{}/nope:1", reg.addr)))
        .await
        .expect_err("missing");
    assert_ne!(err.code(), tonic::Code::Ok);
    // And the pulled image runs.
    let (sb, sb_cfg) = run_sandbox(&mut h, "pulled").await;
    let mut cfg = container_config("hi", &["echo", "pulled"]);
    cfg.image = Some(proto::ImageSpec {
        image: direct.clone(),
        ..Default::default()
    });
    let id = create_and_start(&mut h, &sb, &sb_cfg, cfg).await;
    let s = wait_exited(&mut h, &id).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    remove_sandbox(&mut h, &sb).await;
    h.assert_clean().await;
}

async fn resource_limits_apply_and_oom_is_reported(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let (sb, sb_cfg) = run_sandbox(&mut h, "limits").await;
    let limited = |name: &str, command: &[&str], mem: i64| {
        let mut cfg = container_config(name, command);
        cfg.linux.as_mut().expect("linux").resources = Some(proto::LinuxContainerResources {
            memory_limit_in_bytes: mem,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            // Negative values can't be set here (no CAP_SYS_RESOURCE): clamped.
            oom_score_adj: -997,
            ..Default::default()
        });
        cfg
    };
    let mut cfg = limited("limited", &["sleep", "1000"], 64 << 20);
    let read = |f: &str| format!("cat /sys/fs/cgroup/{f}");
    let mut reads = vec![
        read("memory/memory.limit_in_bytes"),
        read("cpu/cpu.cfs_quota_us"),
        read("cpu/cpu.shares"),
        "cat /proc/self/oom_score_adj".into(),
    ];
    let mut expected = format!("{}\n50000\n512\n0\n", 64 << 20);
    // Skiff only: a container's own PID limit is a Skiff annotation (the CRI has
    // none; upstream's kubelet limits the pod's cgroup).
    if backend == Backend::Skiff {
        cfg.annotations.insert(
            skiff_runtime::spec::PIDS_LIMIT_ANNOTATION.into(),
            "50".into(),
        );
        reads.push(read("pids/pids.max"));
        expected.push_str("50\n");
    }
    let id = create_and_start(&mut h, &sb, &sb_cfg, cfg).await;
    let out = exec(&mut h, &id, &["sh", "-c", &reads.join("; ")], 10)
        .await
        .expect("exec");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Limits change on a running container.
    h.rt.update_container_resources(proto::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(proto::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    let out = exec(
        &mut h,
        &id,
        &[
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
        ],
        10,
    )
    .await
    .expect("exec");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n20000\n", 128 << 20)
    );
    // ContainerStatus reports what the cgroup now enforces.
    let linux = status(&mut h, &id)
        .await
        .resources
        .and_then(|r| r.linux)
        .expect("ContainerStatus reports resources");
    assert_eq!(
        (
            linux.memory_limit_in_bytes,
            linux.cpu_quota,
            linux.cpu_period,
            linux.cpu_shares
        ),
        (128 << 20, 20_000, 100_000, 512)
    );

    // A container that outgrows its memory limit is OOM-killed.
    let hog = limited(
        "hog",
        &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ],
        32 << 20,
    );
    let hog = create_and_start(&mut h, &sb, &sb_cfg, hog).await;
    let s = wait_exited(&mut h, &hog).await;
    assert_eq!(s.reason, "OOMKilled", "{s:?}");
    assert_eq!(s.exit_code, 137);
    remove_sandbox(&mut h, &sb).await;
    h.assert_clean().await;
}

async fn reopen_container_log_after_rotation(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let (sb, sb_cfg) = run_sandbox(&mut h, "rotate").await;
    let id = create_and_start(
        &mut h,
        &sb,
        &sb_cfg,
        container_config(
            "tick",
            &[
                "sh",
                "-c",
                "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done",
            ],
        ),
    )
    .await;
    let log = std::path::PathBuf::from(status(&mut h, &id).await.log_path);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    h.rt.reopen_container_log(proto::ReopenContainerLogRequest {
        container_id: id.clone(),
    })
    .await
    .expect("ReopenContainerLog");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = std::fs::read_to_string(&rotated).expect("old log");
    let new = std::fs::read_to_string(&log).expect("new log");
    assert!(old.contains(" stdout F line0\n"), "{old}");
    assert!(
        new.lines().count() >= 2,
        "new log gets the later lines: {new}"
    );
    assert!(!new.contains(" stdout F line0\n"));
    remove_sandbox(&mut h, &sb).await;
    h.assert_clean().await;
}

/// The bridge plugin never deletes its bridge: a test deletes it when done, even if it
/// panics.
struct DelBridge(String);

impl Drop for DelBridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

/// What a test with a CNI network of its own needs: a state dir, a random tag, a cgroup
/// parent and a bridge name of its own (the bridge deleted when the test ends).
struct CniTest {
    dir: tempfile::TempDir,
    tag: String,
    cgroup_parent: String,
    bridge: String,
    _bridge_guard: DelBridge,
}

impl CniTest {
    fn new() -> CniTest {
        common::require_prerequisites();
        assert!(
            std::path::Path::new("/usr/lib/cni/bridge").exists(),
            "CNI plugins missing: install the Debian package 'containernetworking-plugins'"
        );
        let dir = tempfile::Builder::new()
            .prefix("skiff-rt-test")
            .tempdir()
            .expect("tempdir");
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let bridge = format!("skt{}", &tag[..8]);
        CniTest {
            dir,
            cgroup_parent: format!("/skiff-test-{}", &tag[..8]),
            _bridge_guard: DelBridge(bridge.clone()),
            bridge,
            tag,
        }
    }
}

async fn network_ready(h: &mut Harness) -> proto::RuntimeCondition {
    h.rt.status(proto::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner()
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady")
}

async fn update_pod_cidr(h: &mut Harness, cidr: &str) -> Result<(), tonic::Status> {
    h.rt.update_runtime_config(proto::UpdateRuntimeConfigRequest {
        runtime_config: Some(proto::RuntimeConfig {
            network_config: Some(proto::NetworkConfig {
                pod_cidr: cidr.into(),
            }),
        }),
    })
    .await
    .map(drop)
}

async fn sandbox_ip(h: &mut Harness, id: &str) -> String {
    h.rt.pod_sandbox_status(proto::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    })
    .await
    .expect("PodSandboxStatus")
    .into_inner()
    .status
    .and_then(|s| s.network)
    .map(|n| n.ip)
    .unwrap_or_default()
}

/// `--pod-cidr-from-node`: no pod gets a network until the kubelet sends the node's pod
/// CIDR (UpdateRuntimeConfig); then pods get addresses from it; a new range waits until
/// no pod holds an address from the old one.
///
/// Skiff only: a mode of its own; containerd uses the pod CIDR only to fill in a CNI
/// config template, and is network-ready from its static config.
#[tokio::test]
async fn pod_network_follows_the_node_pod_cidr() {
    let test = CniTest::new();
    // The bridge guard stays in `test` until the end.
    let (dir, tag, cgroup_parent, bridge) = (test.dir, test.tag, test.cgroup_parent, test.bridge);
    let third = u8::from_str_radix(&tag[..2], 16).expect("hex") % 200;
    let (first, second) = (
        format!("10.198.{third}.0/24"),
        format!("10.198.{}.0/24", third + 1),
    );
    let mut config = common::runtime_config(&dir.path().join("root"), &cgroup_parent);
    config.cni = Some(skiff_runtime::network::CniConfig {
        conf_dir: dir.path().join("net.d"),
        plugin_dirs: vec!["/usr/lib/cni".into()],
        state_dir: dir.path().join("root/cni"),
        default_subnet: "10.88.0.0/16".into(),
        default_bridge: bridge.clone(),
        ip_masq: false,
        subnet_from_node: true,
        mtu: None,
    });
    let mut h = Harness::serve_with(dir, cgroup_parent, Default::default(), config).await;

    let waiting = network_ready(&mut h).await;
    assert!(!waiting.status, "{waiting:?}");
    assert_eq!(waiting.reason, "NetworkPluginNotReady");
    assert!(waiting.message.contains("pod CIDR"), "{waiting:?}");
    let refused =
        h.rt.run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(sandbox_config(&h, "early")),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("no network yet");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    // Dual-stack form: the IPv4 range is the one used.
    update_pod_cidr(&mut h, &format!("{first},fd00:42::/64"))
        .await
        .expect("UpdateRuntimeConfig");
    assert!(network_ready(&mut h).await.status);
    let (a, _) = run_sandbox(&mut h, "net-a").await;
    let ip_a = sandbox_ip(&mut h, &a).await;
    assert!(
        ip_a.starts_with(first.trim_end_matches("0/24")),
        "{ip_a} not in {first}"
    );

    let busy = update_pod_cidr(&mut h, &second)
        .await
        .expect_err("a pod still has an address of the old range");
    assert_eq!(busy.code(), tonic::Code::FailedPrecondition, "{busy:?}");
    remove_sandbox(&mut h, &a).await;
    update_pod_cidr(&mut h, &second)
        .await
        .expect("UpdateRuntimeConfig once no pod holds an old address");
    let (b, _) = run_sandbox(&mut h, "net-b").await;
    let ip_b = sandbox_ip(&mut h, &b).await;
    assert!(
        ip_b.starts_with(second.trim_end_matches("0/24")),
        "{ip_b} not in {second}"
    );
    remove_sandbox(&mut h, &b).await;
    h.assert_clean().await;
}

async fn pods_reach_each_other_over_cni(backend: Backend) {
    let mut h = Harness::launch(
        backend,
        Setup {
            images: true,
            pod_network: true,
            ..Setup::default()
        },
    )
    .await;
    let subnet = h.network.as_ref().expect("pod network").subnet.clone();
    let (a, a_cfg) = run_sandbox(&mut h, "net-a").await;
    let (b, b_cfg) = run_sandbox(&mut h, "net-b").await;
    let ip_a = sandbox_ip(&mut h, &a).await;
    let ip_b = sandbox_ip(&mut h, &b).await;
    let prefix = h
        .network
        .as_ref()
        .expect("pod network")
        .prefix()
        .to_string();
    assert!(
        ip_a.starts_with(&prefix) && ip_b.starts_with(&prefix),
        "{ip_a} {ip_b} in {subnet}"
    );
    assert_ne!(ip_a, ip_b);
    let server = create_and_start(
        &mut h,
        &b,
        &b_cfg,
        container_config("web", &["sleep", "1000"]),
    )
    .await;
    exec(
        &mut h,
        &server,
        &[
            "sh",
            "-c",
            "echo from-b > /tmp/index.html; httpd -p 8080 -h /tmp",
        ],
        10,
    )
    .await
    .expect("httpd");
    let client = create_and_start(
        &mut h,
        &a,
        &a_cfg,
        container_config("client", &["sleep", "1000"]),
    )
    .await;
    // busybox-static's wget crashes resolving non-loopback addresses (static
    // glibc and NSS); nc speaks plain HTTP just as well.
    let got = exec(
        &mut h,
        &client,
        &[
            "sh",
            "-c",
            &format!("printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip_b} 8080"),
        ],
        15,
    )
    .await
    .expect("nc");
    let body = String::from_utf8_lossy(&got.stdout);
    assert!(
        body.starts_with("HTTP/1.1 200") && body.ends_with("\r\n\r\nfrom-b\n"),
        "{got:?}"
    );
    // Skiff only: it writes the pod's own name and address into /etc/hosts; with
    // containerd, upstream's kubelet writes that file and mounts it.
    if backend == Backend::Skiff {
        let hosts = exec(&mut h, &client, &["cat", "/etc/hosts"], 5)
            .await
            .expect("hosts");
        assert!(String::from_utf8_lossy(&hosts.stdout).contains(&format!("{ip_a}\tnet-a")));
    }

    remove_sandbox(&mut h, &a).await;
    remove_sandbox(&mut h, &b).await;
    // The pods' addresses are released.
    let leases: Vec<_> = std::fs::read_dir(h.ipam_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10."))
                .collect()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "IP leases left: {leases:?}");
    // Skiff only: no results cached in its own CNI state.
    if backend == Backend::Skiff {
        let results = h.root().join("cni/results");
        assert_eq!(std::fs::read_dir(results).expect("results").count(), 0);
    }
    h.assert_clean().await;
}

/// Skiff only: its monitors (`skiff-runtime-shim`) and their pid files are its own.
#[tokio::test]
async fn containers_whose_monitor_died_are_reported_exited() {
    let mut h = Harness::start(Backend::Skiff).await;
    let (sb, sb_cfg) = run_sandbox(&mut h, "orphan").await;
    let id = create_and_start(
        &mut h,
        &sb,
        &sb_cfg,
        container_config("c", &["sleep", "1000"]),
    )
    .await;
    let root = h.root();
    let (dir, cg) = h.stop_server().await;
    // As after a crash or reboot: monitor and container both gone, no exit record.
    let shim_pid: i32 = std::fs::read_to_string(root.join("containers").join(&id).join("shim.pid"))
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("pid");
    let kill = |pid: i32| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    let init: i32 = std::fs::read_to_string(root.join("containers").join(&id).join("init.pid"))
        .expect("init.pid")
        .trim()
        .parse()
        .expect("pid");
    kill(shim_pid);
    kill(init);
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{shim_pid}")).exists()
            && !std::path::Path::new(&format!("/proc/{init}")).exists()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config = common::runtime_config(&dir.path().join("root"), &cg);
    let mut h = Harness::serve_with(dir, cg, Default::default(), config).await;
    let s = status(&mut h, &id).await;
    assert_eq!(
        s.state,
        proto::ContainerState::ContainerExited as i32,
        "{s:?}"
    );
    assert_eq!(s.exit_code, 255);
    remove_sandbox(&mut h, &sb).await;
    h.assert_clean().await;
}

async fn stats_come_from_the_cgroups_and_the_writable_layer(backend: Backend) {
    let mut h = Harness::start(backend).await;
    let (sb, sb_cfg) = run_sandbox(&mut h, "stats").await;
    let spinner = container_config(
        "spinner",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/ballast bs=1024 count=5120 2>/dev/null; while :; do :; done",
        ],
    );
    let id = create_and_start(&mut h, &sb, &sb_cfg, spinner).await;
    let stats = |h: &mut Harness| {
        let mut rt = h.rt.clone();
        let id = id.clone();
        async move {
            rt.container_stats(proto::ContainerStatsRequest { container_id: id })
                .await
                .expect("ContainerStats")
                .into_inner()
                .stats
                .expect("stats")
        }
    };
    let value = |v: &Option<proto::UInt64Value>| v.as_ref().map(|v| v.value);
    // The ballast lands in the writable layer before long.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let first = loop {
        let s = stats(&mut h).await;
        let layer = value(&s.writable_layer.as_ref().expect("layer").used_bytes).unwrap_or(0);
        if layer >= 5 << 20 || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(first.attributes.as_ref().expect("attributes").id, id);
    let layer = first.writable_layer.as_ref().expect("layer");
    assert!(
        value(&layer.used_bytes).unwrap_or(0) >= 5 << 20,
        "{layer:?}"
    );
    let memory = first.memory.as_ref().expect("memory");
    assert!(
        value(&memory.working_set_bytes).unwrap_or(0) > 0,
        "{memory:?}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let second = stats(&mut h).await;
    let cpu = second.cpu.as_ref().expect("cpu");
    let (total_before, total_after) = (
        value(&first.cpu.as_ref().expect("cpu").usage_core_nano_seconds).unwrap_or(0),
        value(&cpu.usage_core_nano_seconds).unwrap_or(0),
    );
    assert!(
        total_after > total_before,
        "{total_before} -> {total_after}"
    );
    // A spinning shell uses a good part of a core (even on a busy machine).
    assert!(
        value(&cpu.usage_nano_cores).unwrap_or(0) > 50_000_000,
        "{cpu:?}"
    );

    let listed =
        h.rt.list_container_stats(proto::ListContainerStatsRequest {
            filter: Some(proto::ContainerStatsFilter {
                pod_sandbox_id: sb.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    let pod =
        h.rt.pod_sandbox_stats(proto::PodSandboxStatsRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .expect("stats");
    let linux = pod.linux.expect("linux");
    assert_eq!(linux.containers.len(), 1);
    // The pod's cgroup holds its container's usage.
    let pod_cpu = value(&linux.cpu.expect("pod cpu").usage_core_nano_seconds).unwrap_or(0);
    assert!(pod_cpu >= total_after, "{pod_cpu} < {total_after}");

    h.rt.stop_container(proto::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    remove_sandbox(&mut h, &sb).await;
    h.assert_clean().await;
}

/// Pulls `image`; its image ref.
async fn pull(h: &mut Harness, image: &str) -> String {
    h.img
        .pull_image(proto::PullImageRequest {
            image: Some(proto::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .expect("PullImage")
        .into_inner()
        .image_ref
}

/// Runs `cmd` in the container: its exit code, and its stdout and stderr together.
async fn exec_output(h: &mut Harness, id: &str, cmd: &[&str]) -> (i32, String) {
    let out = exec(h, id, cmd, 10).await.expect("exec");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.exit_code,
        String::from_utf8_lossy(&out.stdout).into_owned() + &stderr,
    )
}

/// Image volumes (KEP-4639) as the kubelet asks for them: an image pulled from a
/// registry, mounted whole and by a sub path through CRI `Mount.image`, read-only; a
/// missing sub path fails the create; removing the image keeps what is mounted; the
/// mounts go with the container.
///
/// Skiff only: containerd supports image volumes from 2.1 on, Debian's is 1.6.
#[tokio::test]
async fn image_volumes_mount_an_image_read_only() {
    let registry = LocalRegistry::start();
    let kitten = registry.push(
        &skiff_e2e::kitten_archive(),
        skiff_e2e::KITTEN,
        "e2e-test-images/kitten:1.7",
    );
    let mut h = Harness::start(Backend::Skiff).await;
    let image_ref = pull(&mut h, &kitten).await;
    let image_mount = |path: &str, sub_path: &str| proto::Mount {
        container_path: path.into(),
        readonly: true,
        image: Some(proto::ImageSpec {
            image: image_ref.clone(),
            user_specified_image: kitten.clone(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    };
    let (sb, sb_cfg) = run_sandbox(&mut h, "image-volume").await;
    let mut cfg = container_config("reader", &["sleep", "3600"]);
    cfg.mounts = vec![image_mount("/volume", ""), image_mount("/etc-only", "etc")];
    let id = create_and_start(&mut h, &sb, &sb_cfg, cfg).await;
    let (code, out) = exec_output(&mut h, &id, &["cat", "/volume/data.json"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kitten.jpg"), "{out}");
    let (code, out) = exec_output(&mut h, &id, &["cat", "/volume/etc/os-release"]).await;
    assert!(code == 0 && out.contains("Skiff kitten"), "{out}");
    // The sub path's directory is the mount's root.
    let (code, out) = exec_output(&mut h, &id, &["cat", "/etc-only/os-release"]).await;
    assert!(code == 0 && out.contains("Skiff kitten"), "{out}");
    let (code, out) = exec_output(&mut h, &id, &["ls", "/etc-only/data.json"]).await;
    assert_ne!(code, 0, "only etc is mounted: {out}");
    for target in ["/volume/new", "/etc-only/new"] {
        let (code, out) = exec_output(&mut h, &id, &["touch", target]).await;
        assert!(
            code != 0 && out.contains("Read-only file system"),
            "{target}: {code} {out}"
        );
    }
    let mounts = status(&mut h, &id).await.mounts;
    assert_eq!(mounts.len(), 2, "{mounts:?}");
    assert_eq!(
        mounts[1].image.as_ref().map(|i| i.image.as_str()),
        Some(image_ref.as_str())
    );
    assert_eq!(mounts[1].image_sub_path, "etc");

    // Removing the image leaves what a container mounts.
    h.img
        .remove_image(proto::RemoveImageRequest {
            image: Some(proto::ImageSpec {
                image: image_ref.clone(),
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage");
    let (code, out) = exec_output(&mut h, &id, &["cat", "/volume/kitten.jpg"]).await;
    assert!(code == 0 && out.contains("kitten"), "{out}");

    // A sub path the image lacks fails the create, and leaves nothing behind.
    pull(&mut h, &kitten).await;
    let mut cfg = container_config("missing", &["sleep", "3600"]);
    cfg.mounts = vec![image_mount("/volume", "not-existing")];
    let err =
        h.rt.create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(cfg),
            sandbox_config: Some(sb_cfg.clone()),
        })
        .await
        .expect_err("a missing sub path");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains("not-existing"), "{err:?}");

    h.rt.stop_container(proto::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    h.rt.remove_container(proto::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("RemoveContainer");
    remove_sandbox(&mut h, &sb).await;
    h.assert_clean().await;
}
