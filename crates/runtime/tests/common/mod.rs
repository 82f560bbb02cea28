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

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub runtime: Arc<Runtime>,
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
    pub cgroup_parent: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
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

impl Harness {
    /// A fresh runtime root with no images, served on a temp socket.
    pub async fn start_empty(registries: RegistriesConfig) -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("skiff-rt-test")
            .tempdir()
            .expect("tempdir");
        let cgroup_parent = format!(
            "/skiff-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self::serve(dir, cgroup_parent, registries).await
    }

    /// A fresh runtime root with busybox imported, served on a temp socket.
    pub async fn start() -> Harness {
        let archive = busybox_archive();
        let dir = tempfile::Builder::new()
            .prefix("skiff-rt-test")
            .tempdir()
            .expect("tempdir");
        let cgroup_parent = format!(
            "/skiff-test-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let h = Self::serve(dir, cgroup_parent, RegistriesConfig::default()).await;
        let st = h.runtime.images.clone();
        tokio::task::spawn_blocking(move || {
            skiff_runtime::images::archive::import_archive(&st, &archive).expect("import busybox")
        })
        .await
        .expect("join");
        h
    }

    /// Serves an existing root (used to restart the runtime).
    pub async fn serve(
        dir: tempfile::TempDir,
        cgroup_parent: String,
        registries: RegistriesConfig,
    ) -> Harness {
        let config = runtime_config(&dir.path().join("root"), &cgroup_parent);
        Self::serve_with(dir, cgroup_parent, registries, config).await
    }

    /// Serves `config` (whose root must be `dir/root`).
    pub async fn serve_with(
        dir: tempfile::TempDir,
        cgroup_parent: String,
        registries: RegistriesConfig,
        config: RuntimeConfig,
    ) -> Harness {
        let runtime = Arc::new(Runtime::open(config).expect("open runtime"));
        let socket = dir.path().join("cri.sock");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rt2 = runtime.clone();
        let sock2 = socket.clone();
        let server = tokio::spawn(async move {
            skiff_runtime::serve(rt2, registries, &sock2, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        let ch = connect(&socket).await;
        Harness {
            dir,
            runtime,
            rt: RuntimeServiceClient::new(ch.clone()),
            img: ImageServiceClient::new(ch),
            cgroup_parent,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops the server (not the containers) and hands back the root.
    pub async fn stop_server(mut self) -> (tempfile::TempDir, String) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = s.await;
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        (dir, self.cgroup_parent.clone())
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Asserts nothing of ours is left mounted or in cgroups, then removes the
    /// test's cgroup parent.
    pub fn assert_clean(&self) {
        let root = self.root().display().to_string();
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let leftovers: Vec<&str> = info.lines().filter(|l| l.contains(&root)).collect();
        assert!(leftovers.is_empty(), "mounts left behind: {leftovers:#?}");
        for h in ["memory", "cpu", "pids"] {
            let p = Path::new("/sys/fs/cgroup")
                .join(h)
                .join(self.cgroup_parent.trim_start_matches('/'));
            if p.exists() {
                let children: Vec<_> = std::fs::read_dir(&p)
                    .expect("read cgroup")
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect();
                assert!(children.is_empty(), "cgroups left behind: {children:?}");
            }
        }
        skiff_runtime::sys::remove_cgroup(&self.cgroup_parent);
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Best-effort cleanup if a test failed half-way: kill our containers
        // and sandboxes, and unmount everything under the root.
        let root = self.dir.path().join("root");
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
                        if pid > 0 && self.shutdown.is_some() {
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
        remove_cgroup_tree(&self.cgroup_parent);
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
