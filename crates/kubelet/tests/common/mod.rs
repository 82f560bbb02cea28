//! What the kubelet's integration tests share: a real `skiff runtime`
//! process with a CNI bridge of its own, a kubelet run in-process against a
//! real `skiff server`, and small kubectl helpers. Each test binary uses a
//! different subset, hence the `dead_code` allowance.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_e2e::containerd::Containerd;
pub use skiff_e2e::ContainerRuntime;
use skiff_e2e::Server;

pub const NODE: &str = "kubelet-e2e-node";
pub const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The runtime process (Skiff's, or a containerd of the test's own), its root, and
/// everything to clean up after it.
pub struct Runtime {
    pub kind: ContainerRuntime,
    child: Option<Child>,
    containerd: Option<Containerd>,
    pub dir: tempfile::TempDir,
    cgroup_parent: String,
    bridge: String,
    /// The CRI proxy the kubelet goes through, when the test hides what the runtime
    /// reports of containers' resources ([`Runtime::reporting_no_resources`]).
    proxy: Option<tokio::task::JoinHandle<()>>,
}

impl Runtime {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    /// The CRI socket the kubelet connects to.
    pub fn socket(&self) -> PathBuf {
        match (&self.proxy, &self.containerd) {
            (Some(_), _) => self.dir.path().join("cri-proxy.sock"),
            (None, Some(containerd)) => containerd.socket(),
            (None, None) => self.dir.path().join("cri.sock"),
        }
    }

    /// The runtime behind a CRI proxy that drops `ContainerStatus.resources`, as
    /// runtimes that report none do (containerd before 1.6.9, cri-dockerd): the kubelet
    /// can only go by what it actuated itself. Everything else passes unchanged.
    pub fn reporting_no_resources(mut self) -> Runtime {
        let proxy = self.dir.path().join("cri-proxy.sock");
        self.proxy = Some(hide_container_resources(self.socket(), &proxy));
        self
    }

    /// A CRI client of the runtime (connected lazily).
    pub fn cri(&self) -> skiff_kubelet::cri::Cri {
        skiff_kubelet::cri::Cri::connect(&self.socket().display().to_string())
            .expect("a CRI client")
    }

    /// What a pod's sandbox process shows in `ps` (a pod's PID 1 when it shares its
    /// process namespace): Skiff's holder, or containerd's sandbox image's command.
    pub fn sandbox_command(&self) -> &'static str {
        match self.kind {
            ContainerRuntime::Skiff => "__skiff-sandbox",
            ContainerRuntime::Containerd => "/agnhost pause",
        }
    }

    /// Skiff's runtime, as a process of its own.
    pub fn start() -> Runtime {
        Runtime::start_on(ContainerRuntime::Skiff)
    }

    /// `kind` of runtime, its pods on a CNI bridge and subnet of the test's own.
    pub fn start_on(kind: ContainerRuntime) -> Runtime {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the kubelet integration tests need root (containers): run them as root, as CI does"
        );
        let images = workspace().join("target/test-images");
        let status = Command::new("bash")
            .arg(workspace().join("scripts/build-test-images.sh"))
            .arg(&images)
            .status()
            .expect("run scripts/build-test-images.sh");
        assert!(status.success(), "scripts/build-test-images.sh failed");
        let dir = tempfile::Builder::new()
            .prefix("skiff-kubelet-test")
            .tempdir()
            .expect("tempdir");
        // Unique per runtime: a test binary may start several at once.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{:04x}", (std::process::id() * 8 + nth) % 0xffff);
        let bridge = format!("skl{tag}");
        let subnet = format!("10.198.{}.0/24", (std::process::id() + nth * 37) % 250);
        let cgroup_parent = format!("/skiff-kubelet-test-{tag}");
        if kind == ContainerRuntime::Containerd {
            let containerd = Containerd::start_on(&images.join("busybox.tar"), &bridge, &subnet);
            return Runtime {
                kind,
                child: None,
                containerd: Some(containerd),
                dir,
                cgroup_parent,
                bridge,
                proxy: None,
            };
        }
        let net_d = dir.path().join("net.d");
        std::fs::create_dir_all(&net_d).expect("net.d");
        std::fs::write(
            net_d.join("10-test.conflist"),
            serde_json::to_vec(&serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "skiff-kubelet-test",
                "plugins": [{
                    "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                              "dataDir": dir.path().join("root/cni/networks")},
                }],
            }))
            .expect("json"),
        )
        .expect("conflist");
        let skiff = skiff_e2e::skiff_binary();
        let root = dir.path().join("root");
        let out = Command::new(&skiff)
            .args(["images", "--root"])
            .arg(&root)
            .arg("import")
            .arg(images.join("busybox.tar"))
            .output()
            .expect("skiff images import");
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = Command::new(&skiff);
        cmd.arg("runtime")
            .arg("--root")
            .arg(&root)
            .arg("--socket")
            .arg(dir.path().join("cri.sock"))
            .arg("--cgroup-parent")
            .arg(&cgroup_parent)
            .arg("--cni-conf-dir")
            .arg(&net_d)
            .arg("--pod-cidr")
            .arg(&subnet)
            .arg("--registries-config")
            .arg(dir.path().join("registries.yaml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("runtime.log")).expect("log"));
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start skiff runtime");
        Runtime {
            kind,
            child: Some(child),
            containerd: None,
            dir,
            cgroup_parent,
            bridge,
            proxy: None,
        }
    }

    pub fn log(&self) -> String {
        match &self.containerd {
            Some(containerd) => containerd.log(),
            None => {
                std::fs::read_to_string(self.dir.path().join("runtime.log")).unwrap_or_default()
            }
        }
    }
}

/// Serves CRI on `socket`, passing every call to the runtime on `upstream` but for
/// `ContainerStatus`, whose answer loses its `resources`.
fn hide_container_resources(upstream: PathBuf, socket: &Path) -> tokio::task::JoinHandle<()> {
    use http_body_util::BodyExt;
    use prost::Message;
    use tower::ServiceExt;
    const CONTAINER_STATUS: &str = "/runtime.v1.RuntimeService/ContainerStatus";
    let listener = tokio::net::UnixListener::bind(socket).expect("the CRI proxy's socket");
    let channel = tonic::transport::Endpoint::from_static("http://[::]:0")
        .connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
            let upstream = upstream.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(upstream).await?,
                ))
            }
        }));
    // A unary answer, whole: one length-prefixed message, then the trailers (status).
    async fn without_resources(
        body: tonic::body::Body,
    ) -> Result<tonic::body::Body, Box<dyn std::error::Error + Send + Sync>> {
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        let framed = collected.to_bytes();
        let mut data = framed.clone();
        if framed.len() > 5 && framed[0] == 0 {
            let mut answer = skiff_runtime::proto::ContainerStatusResponse::decode(&framed[5..])?;
            if let Some(status) = answer.status.as_mut() {
                status.resources = None;
            }
            let message = answer.encode_to_vec();
            let mut out = Vec::with_capacity(5 + message.len());
            out.push(0);
            out.extend_from_slice(&(message.len() as u32).to_be_bytes());
            out.extend_from_slice(&message);
            data = out.into();
        }
        let frames = [Ok(hyper::body::Frame::data(data))]
            .into_iter()
            .chain(trailers.map(|t| Ok(hyper::body::Frame::trailers(t))));
        Ok(tonic::body::Body::new(http_body_util::StreamBody::new(
            futures::stream::iter(frames.collect::<Vec<Result<_, std::convert::Infallible>>>()),
        )))
    }
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let channel = channel.clone();
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let channel = channel.clone();
                    async move {
                        let hide = request.uri().path() == CONTAINER_STATUS;
                        let response = channel.oneshot(request.map(tonic::body::Body::new)).await?;
                        if !hide {
                            return Ok(response);
                        }
                        let (parts, body) = response.into_parts();
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                            http::Response::from_parts(parts, without_resources(body).await?),
                        )
                    }
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    })
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.abort();
        }
        // containerd kills and removes what the kubelet left before it stops.
        drop(self.containerd.take());
        // Best effort: kill what is left of containers and sandboxes, unmount
        // everything under the root, remove our cgroups and bridge.
        let root = self.root();
        let runc_root = root.join("runc");
        if let Ok(rd) = std::fs::read_dir(&runc_root) {
            for e in rd.flatten() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force"])
                    .arg(e.file_name())
                    .output();
            }
        }
        if let Ok(rd) = std::fs::read_dir(root.join("sandboxes")) {
            for e in rd.flatten() {
                let rec: Value = serde_json::from_slice(
                    &std::fs::read(e.path().join("sandbox.json")).unwrap_or_default(),
                )
                .unwrap_or(Value::Null);
                if let Some(pid) = rec.get("holder_pid").and_then(Value::as_i64) {
                    if pid > 0 {
                        unsafe {
                            libc::kill(pid as i32, libc::SIGKILL);
                        }
                    }
                }
            }
        }
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let root_s = self.dir.path().display().to_string();
            let mut mounts: Vec<String> = info
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|m| m.starts_with(&root_s))
                .map(str::to_string)
                .collect();
            mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
            for m in mounts {
                let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let rel = self.cgroup_parent.trim_start_matches('/');
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in rd.flatten() {
                remove_tree(&h.path().join(rel));
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Polls `f` until it returns Some, or panics with `what` after `secs`.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn pod_json(server: &Server, ns: &str, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", "pod", "-n", ns, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

pub fn condition(pod: &Value, t: &str) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

pub fn pod_yaml(name: &str, extra_spec: &str, containers: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {NODE}\n  terminationGracePeriodSeconds: 2\n{extra_spec}  containers:\n{containers}"
    )
}

pub fn container(name: &str, script: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    image: {IMAGE}\n    imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {script:?}]\n{extra}"
    )
}

/// The kubelet under test, run in-process (node [`NODE`], InternalIP
/// 127.0.0.1, its HTTPS server on a free port), with the kubeconfig whose CA
/// it trusts for client certificates. Returns the task and the pod-logs dir.
pub async fn start_kubelet(
    server: &Server,
    runtime: &Runtime,
) -> (tokio::task::JoinHandle<anyhow::Result<()>>, PathBuf) {
    start_kubelet_with(server, runtime, None).await
}

/// [`start_kubelet`], with static pods from `pod_manifest_path`.
pub async fn start_kubelet_with(
    server: &Server,
    runtime: &Runtime,
    pod_manifest_path: Option<PathBuf>,
) -> (tokio::task::JoinHandle<anyhow::Result<()>>, PathBuf) {
    let mut args = kubelet_args(server, runtime);
    args.pod_manifest_path = pod_manifest_path;
    start_kubelet_from(args).await
}

/// The arguments [`start_kubelet`] runs the kubelet with.
pub fn kubelet_args(server: &Server, runtime: &Runtime) -> skiff_kubelet::KubeletArgs {
    let mut args = skiff_kubelet::KubeletArgs::new(
        runtime.socket().display().to_string(),
        runtime.dir.path().join("kubelet"),
    );
    args.kubeconfig = Some(server.kubeconfig());
    args.node_name = Some(NODE.into());
    args.node_ip = Some("127.0.0.1".into());
    // Pods' cgroups under the test's own parent, which the runtime's drop removes.
    args.cgroup_root = runtime.cgroup_parent.clone();
    args
}

/// Starts the kubelet with `args`; returns its task and the pod-logs dir.
pub async fn start_kubelet_from(
    args: skiff_kubelet::KubeletArgs,
) -> (tokio::task::JoinHandle<anyhow::Result<()>>, PathBuf) {
    let client = skiff_kubelet::client(&args).await.expect("client");
    let logs_dir = args.pod_logs_dir.clone();
    (tokio::spawn(skiff_kubelet::run(client, args)), logs_dir)
}

/// Logs of tests to stderr (RUST_LOG, default: the kubelet at info).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "skiff_kubelet=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Runs a test's scenario against a started kubelet, then stops the kubelet whatever
/// happened, with the runtime's log shown when the scenario failed (the runtime
/// itself stops when the test drops it, on a panic too).
pub async fn run_scenario(
    runtime: &Runtime,
    kubelet: tokio::task::JoinHandle<anyhow::Result<()>>,
    scenario: impl std::future::Future<Output = ()>,
) {
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(scenario)).await;
    if outcome.is_err() {
        eprintln!("runtime log:\n{}", runtime.log());
    }
    kubelet.abort();
    let _ = kubelet.await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}
