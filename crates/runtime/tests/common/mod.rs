//! Shared fixture for the CRI integration tests: prerequisites, the busybox
//! test image (built once by `scripts/build-test-images.sh` into
//! `target/test-images/`), and a CRI server on a temporary socket with a
//! tonic client connected to it, as a kubelet would be.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use skiff_runtime::images::registries::RegistriesConfig;
use skiff_runtime::proto::image_service_client::ImageServiceClient;
use skiff_runtime::proto::runtime_service_client::RuntimeServiceClient;
use skiff_runtime::runtime::{Runtime, RuntimeConfig};
use tonic::transport::Channel;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Panics with what to install when a prerequisite is missing.
pub fn require_prerequisites() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the runtime integration tests need root (mounts, namespaces, cgroups): run them as root, as CI does"
    );
    for (bin, pkg) in [("runc", "runc"), ("umoci", "umoci"), ("jq", "jq")] {
        assert!(
            skiff_runtime::server::find_binary(Path::new(bin)).is_ok(),
            "{bin} not found: install the Debian package '{pkg}' (apt-get install {pkg})"
        );
    }
    let linkage = std::process::Command::new("ldd")
        .arg("/bin/busybox")
        .output();
    let ok = Path::new("/bin/busybox").exists()
        && linkage
            .map(|o| {
                let s = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                s.contains("not a dynamic") || s.contains("statically linked")
            })
            .unwrap_or(false);
    assert!(
        ok,
        "/bin/busybox must be static: install the Debian package 'busybox-static'"
    );
}

/// Path of the busybox OCI archive, building it once per test process.
pub fn busybox_archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            require_prerequisites();
            let out = workspace().join("target/test-images");
            let status = std::process::Command::new("bash")
                .arg(workspace().join("scripts/build-test-images.sh"))
                .arg(&out)
                .status()
                .expect("run scripts/build-test-images.sh");
            assert!(status.success(), "scripts/build-test-images.sh failed");
            out.join("busybox.tar")
        })
        .clone()
}

/// Which CRI runtime a test drives: Skiff's own, or a containerd the test starts, so
/// that the same tests show they encode the CRI contract rather than Skiff's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Skiff,
    Containerd,
}

/// What a harness starts with besides the runtime.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// The test images' archive imported (busybox and agnhost).
    pub images: bool,
    /// Pods on a bridge network of the test's own (containerd always has one: its CRI
    /// plugin reports the network not ready without a CNI config).
    pub pod_network: bool,
    /// A plain-HTTP registry (`host:port`) that serves pulls of `docker.io` images.
    pub docker_io_mirror: Option<String>,
}

/// The runtime behind a harness's socket.
enum Engine {
    Skiff(Box<SkiffServer>),
    Containerd(skiff_e2e::containerd::Containerd),
}

/// Skiff's runtime served in-process on `dir/cri.sock`.
struct SkiffServer {
    runtime: Arc<Runtime>,
    config: RuntimeConfig,
    registries: RegistriesConfig,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl SkiffServer {
    async fn start(config: RuntimeConfig, registries: RegistriesConfig, socket: &Path) -> Self {
        let runtime = Arc::new(Runtime::open(config.clone()).expect("open runtime"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = runtime.clone();
        let socket = socket.to_path_buf();
        let serving = registries.clone();
        let server = tokio::spawn(async move {
            skiff_runtime::serve(served, serving, &socket, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        SkiffServer {
            runtime,
            config,
            registries,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops serving; the containers keep running under their monitors.
    async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
    }
}

/// A bridge and subnet of the test's own, the bridge deleted when the test ends (the
/// bridge plugin never deletes it).
pub struct PodNetwork {
    pub bridge: String,
    pub subnet: String,
}

impl PodNetwork {
    pub fn new() -> PodNetwork {
        assert!(
            Path::new("/usr/lib/cni/bridge").exists(),
            "CNI plugins missing: install the Debian package 'containernetworking-plugins'"
        );
        // Unique among the networks this process has alive at once (10.197/16 is this
        // suite's); the pid keeps two test processes apart most of the time.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        PodNetwork {
            bridge: format!("skr{:04x}", (pid * 8 + nth) % 0xffff),
            subnet: format!("10.197.{}.0/24", (pid + nth * 37) % 250),
        }
    }

    /// The first three octets and the dot, which every pod address starts with.
    pub fn prefix(&self) -> &str {
        self.subnet.trim_end_matches("0/24")
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

pub struct Harness {
    pub backend: Backend,
    /// The test's scratch dir: Skiff's root (`root/`), the pods' logs (`logs/`).
    pub dir: tempfile::TempDir,
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
    /// The test's cgroup, under which the pods' cgroups are (as the kubelet's).
    pub cgroup_parent: String,
    engine: Option<Engine>,
    /// Declared after `engine`, which must go first: the network's bridge is deleted
    /// once no pod uses it.
    pub network: Option<PodNetwork>,
}

pub fn runtime_config(root: &Path, cgroup_parent: &str) -> RuntimeConfig {
    RuntimeConfig {
        root: root.to_path_buf(),
        runc: skiff_runtime::server::find_binary(Path::new("runc")).expect("runc"),
        shim: PathBuf::from(env!("CARGO_BIN_EXE_skiff-runtime-shim")),
        cgroup_parent: cgroup_parent.to_string(),
        cni: None,
    }
}

async fn connect(socket: &Path) -> Channel {
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = socket.to_path_buf();
    tonic::transport::Endpoint::try_from("http://[::]:0")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(p).await?,
                ))
            }
        }))
        .await
        .expect("connect to CRI socket")
}

fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("skiff-rt-test")
        .tempdir()
        .expect("tempdir");
    // The kubelet makes a pod's log directory before it asks for the pod.
    std::fs::create_dir_all(dir.path().join("logs")).expect("log dir");
    dir
}

fn new_cgroup_parent() -> String {
    format!(
        "/skiff-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs blocking work (containerd's start and `ctr`) off the test's single-threaded
/// runtime.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("join")
}

impl Harness {
    /// `backend` with the test images, as most tests want it.
    pub async fn start(backend: Backend) -> Harness {
        Self::launch(
            backend,
            Setup {
                images: true,
                ..Setup::default()
            },
        )
        .await
    }

    /// `backend` as `setup` says.
    pub async fn launch(backend: Backend, setup: Setup) -> Harness {
        let dir = scratch_dir();
        let cgroup_parent = new_cgroup_parent();
        let network = (setup.pod_network || backend == Backend::Containerd).then(PodNetwork::new);
        let mut h = match backend {
            Backend::Skiff => {
                let mut registries = RegistriesConfig::default();
                if let Some(mirror) = &setup.docker_io_mirror {
                    registries = serde_yaml::from_str(&format!(
                        "mirrors:\n  docker.io:\n    endpoint: [\"http://{mirror}\"]\n"
                    ))
                    .expect("registries.yaml");
                }
                let root = dir.path().join("root");
                let mut config = runtime_config(&root, &cgroup_parent);
                if let Some(net) = network.as_ref().filter(|_| setup.pod_network) {
                    config.cni = Some(skiff_runtime::network::CniConfig {
                        conf_dir: dir.path().join("net.d"),
                        plugin_dirs: vec!["/usr/lib/cni".into()],
                        state_dir: root.join("cni"),
                        default_subnet: net.subnet.clone(),
                        default_bridge: net.bridge.clone(),
                        ip_masq: true,
                        subnet_from_node: false,
                        mtu: None,
                    });
                }
                let mut h = Self::serve_with(dir, cgroup_parent, registries, config).await;
                h.network = network;
                if setup.images {
                    h.import_test_images().await;
                }
                h
            }
            Backend::Containerd => {
                let net = network.as_ref().expect("containerd's pod network");
                let (bridge, subnet) = (net.bridge.clone(), net.subnet.clone());
                let images = busybox_archive();
                let containerd = blocking(move || {
                    skiff_e2e::containerd::Containerd::start_on(&images, &bridge, &subnet)
                })
                .await;
                if let Some(mirror) = &setup.docker_io_mirror {
                    containerd.mirror("docker.io", mirror);
                }
                let channel = connect(&containerd.socket()).await;
                let mut h = Harness {
                    backend,
                    dir,
                    rt: RuntimeServiceClient::new(channel.clone()),
                    img: ImageServiceClient::new(channel),
                    cgroup_parent,
                    engine: Some(Engine::Containerd(containerd)),
                    network,
                };
                if !setup.images {
                    // containerd runs each sandbox from its sandbox image (agnhost), so
                    // that one stays; busybox goes, as from a runtime that never had it.
                    h.img
                        .remove_image(skiff_runtime::proto::RemoveImageRequest {
                            image: Some(skiff_runtime::proto::ImageSpec {
                                image: "docker.io/library/busybox:latest".into(),
                                ..Default::default()
                            }),
                        })
                        .await
                        .expect("RemoveImage busybox");
                }
                h
            }
        };
        h.backend = backend;
        h
    }

    /// Serves Skiff's runtime with `config` (whose root must be `dir/root`).
    pub async fn serve_with(
        dir: tempfile::TempDir,
        cgroup_parent: String,
        registries: RegistriesConfig,
        config: RuntimeConfig,
    ) -> Harness {
        std::fs::create_dir_all(dir.path().join("logs")).expect("log dir");
        let socket = dir.path().join("cri.sock");
        let server = SkiffServer::start(config, registries, &socket).await;
        let channel = connect(&socket).await;
        Harness {
            backend: Backend::Skiff,
            dir,
            rt: RuntimeServiceClient::new(channel.clone()),
            img: ImageServiceClient::new(channel),
            cgroup_parent,
            engine: Some(Engine::Skiff(Box::new(server))),
            network: None,
        }
    }

    /// Skiff's runtime, for the parts of tests that look at its internals.
    pub fn skiff(&self) -> &Arc<Runtime> {
        match &self.engine {
            Some(Engine::Skiff(server)) => &server.runtime,
            _ => panic!("a Skiff-only check run on {:?}", self.backend),
        }
    }

    /// The test's containerd.
    pub fn containerd(&self) -> &skiff_e2e::containerd::Containerd {
        match &self.engine {
            Some(Engine::Containerd(containerd)) => containerd,
            _ => panic!("a containerd-only check run on {:?}", self.backend),
        }
    }

    /// Imports the test images' archive (again).
    pub async fn import_test_images(&self) {
        let archive = busybox_archive();
        match &self.engine {
            Some(Engine::Skiff(server)) => {
                let store = server.runtime.images.clone();
                blocking(move || {
                    skiff_runtime::images::archive::import_archive(&store, &archive)
                        .expect("import the test images")
                })
                .await;
            }
            Some(Engine::Containerd(containerd)) => containerd.import(&archive),
            None => panic!("no runtime"),
        }
    }

    /// Stops the runtime (not its containers) and starts it again on the same state, as
    /// after a crash or an upgrade, and reconnects.
    pub async fn restart_runtime(&mut self) {
        let socket = match self.engine.take().expect("a runtime") {
            Engine::Skiff(mut server) => {
                server.stop().await;
                // Stopped for a while, as a crashed runtime would be.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let socket = self.dir.path().join("cri.sock");
                let _ = std::fs::remove_file(&socket);
                let server = SkiffServer::start(server.config, server.registries, &socket).await;
                self.engine = Some(Engine::Skiff(Box::new(server)));
                socket
            }
            Engine::Containerd(mut containerd) => {
                let containerd = blocking(move || {
                    containerd.restart();
                    containerd
                })
                .await;
                let socket = containerd.socket();
                self.engine = Some(Engine::Containerd(containerd));
                socket
            }
        };
        let channel = connect(&socket).await;
        self.rt = RuntimeServiceClient::new(channel.clone());
        self.img = ImageServiceClient::new(channel);
    }

    /// Stops Skiff's server (not the containers) and hands back the root.
    pub async fn stop_server(mut self) -> (tempfile::TempDir, String) {
        if let Some(Engine::Skiff(server)) = self.engine.as_mut() {
            server.stop().await;
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        (dir, self.cgroup_parent.clone())
    }

    /// Skiff's root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The directory under which the runtime mounts containers' filesystems.
    fn state_dir(&self) -> PathBuf {
        match &self.engine {
            Some(Engine::Containerd(containerd)) => containerd.dir().to_path_buf(),
            _ => self.root(),
        }
    }

    /// Where the pod network's address allocations are kept (both write the network
    /// `skiff_runtime::network::default_conflist` makes, whose name is `skiff`).
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir().join("cni/networks/skiff")
    }

    /// Asserts what the CRI contract leaves after every pod is removed, on any runtime:
    /// no container or sandbox listed, nothing mounted under the runtime's state, no
    /// container cgroup under the pods' cgroups and no process in them. Then removes the
    /// test's cgroups (the pods' are the kubelet's to remove).
    pub async fn assert_clean(&mut self) {
        let containers = self
            .rt
            .list_containers(skiff_runtime::proto::ListContainersRequest::default())
            .await
            .expect("ListContainers")
            .into_inner()
            .containers;
        assert!(containers.is_empty(), "containers left: {containers:?}");
        let sandboxes = self
            .rt
            .list_pod_sandbox(skiff_runtime::proto::ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items;
        assert!(sandboxes.is_empty(), "sandboxes left: {sandboxes:?}");
        let state = self.state_dir().display().to_string();
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let leftovers: Vec<&str> = info
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&state)))
            .collect();
        assert!(leftovers.is_empty(), "mounts left behind: {leftovers:#?}");
        for hierarchy in ["memory", "cpu", "pids"] {
            let test_cgroup = Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join(self.cgroup_parent.trim_start_matches('/'));
            for pod in subdirs(&test_cgroup) {
                let containers = subdirs(&pod);
                assert!(containers.is_empty(), "cgroups left behind: {containers:?}");
                let procs = std::fs::read_to_string(pod.join("cgroup.procs")).unwrap_or_default();
                assert!(
                    procs.trim().is_empty(),
                    "processes left in {pod:?}: {procs}"
                );
            }
        }
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

/// The directories in `dir` (none if it does not exist).
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that the network namespace `ns` (as `/proc/PID/ns/net` links to it,
/// `net:[INODE]`) is gone within a few seconds: no process in it, no bind mount holding
/// it. containerd unmounts its namespace files (`/run/netns/cni-…`) a moment after
/// `RemovePodSandbox` has returned, now and then.
pub fn assert_network_namespace_gone(ns: &str) {
    let holders = || {
        let processes: Vec<String> = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter(|e| {
                std::fs::read_link(e.path().join("ns/net"))
                    .is_ok_and(|link| link.as_os_str() == std::ffi::OsStr::new(ns))
            })
            .map(|e| format!("process {}", e.file_name().to_string_lossy()))
            .collect();
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mounts = info
            .lines()
            .filter(|l| l.split(' ').nth(3) == Some(ns))
            .map(|l| format!("mount {l}"));
        processes.into_iter().chain(mounts).collect::<Vec<String>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut left = holders();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        left = holders();
    }
    assert!(left.is_empty(), "{ns} still held: {left:#?}");
}

impl Drop for Harness {
    fn drop(&mut self) {
        match self.engine.take() {
            Some(Engine::Skiff(server)) => self.clean_up_skiff(server.shutdown.is_some()),
            // Kills and removes what containerd still holds, then containerd.
            Some(Engine::Containerd(containerd)) => drop(containerd),
            None => {}
        }
        remove_cgroup_tree(&self.cgroup_parent);
    }
}

impl Harness {
    /// Best-effort cleanup if a test failed half-way: kill Skiff's containers and
    /// sandboxes (their holders only while it serves: once stopped, a test restarts it
    /// on the same root), and unmount everything under its root.
    fn clean_up_skiff(&self, serving: bool) {
        let root = self.root();
        let runc_root = root.join("runc");
        if let Ok(rd) = std::fs::read_dir(&runc_root) {
            for e in rd.flatten() {
                let _ = std::process::Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force"])
                    .arg(e.file_name())
                    .output();
            }
        }
        if let Ok(rd) = std::fs::read_dir(root.join("sandboxes")) {
            for e in rd.flatten() {
                if let Ok(r) = serde_json::from_slice::<serde_json::Value>(
                    &std::fs::read(e.path().join("sandbox.json")).unwrap_or_default(),
                ) {
                    if let Some(pid) = r.get("holder_pid").and_then(|p| p.as_i64()) {
                        if pid > 0 && serving {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
        }
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let root_s = root.display().to_string();
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
    }
}

/// Removes a cgroup directory and its children in every hierarchy, deepest
/// first (cgroupfs directories can only be removed with rmdir when empty).
pub fn remove_cgroup_tree(path: &str) {
    fn rm(dir: &Path) {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    rm(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in rd.flatten() {
            let d = h.path().join(rel);
            if d.exists() {
                rm(&d);
            }
        }
    }
}
