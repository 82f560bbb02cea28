//! A containerd of the test's own, for running a node agent's pods through containerd
//! instead of Skiff's runtime (`skiff server --container-runtime-endpoint`).
//!
//! Each [`Containerd`] has its own root, state, socket and CNI config under a temp dir,
//! written here: no system service and no `/etc/containerd` is used. Its CRI plugin takes
//! pods onto the bridge network Skiff's runtime would make (`skiff0`, 10.88.0.0/16, the
//! same conflist), its sandbox ("pause") image is the test image agnhost, whose default
//! command is `pause`, and the test images are imported into its `k8s.io` namespace, the
//! one its CRI plugin serves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{die_with_parent, Supervised};

/// The sandbox image containerd's CRI plugin runs each pod's sandbox from: agnhost,
/// whose default command (`/agnhost pause`) waits until it is killed. The test images'
/// archive holds it, so nothing is pulled.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/e2e-test-images/agnhost:2.52";

/// How each pod's sandbox process shows in `/proc/PID/cmdline` (arguments joined by
/// spaces): the sandbox image's entrypoint and command.
pub const SANDBOX_COMMAND: &str = "/agnhost pause";

/// The containerd binary (Debian's `containerd` package).
const CONTAINERD: &str = "containerd";

/// A running containerd with its own directories, stopped (with whatever containers it
/// still holds) when dropped.
pub struct Containerd {
    process: Option<Supervised>,
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts containerd with a config of its own, its pods on the network a single
    /// `skiff server` node gives them (bridge `skiff0`, 10.88.0.0/16), waits until its
    /// socket answers and imports the image archive `images` (see
    /// [`crate::busybox_archive`]).
    pub fn start(images: &Path) -> Containerd {
        Containerd::start_on(images, "skiff0", "10.88.0.0/16")
    }

    /// [`Containerd::start`] with pods on a bridge and subnet of the caller's.
    pub fn start_on(images: &Path, bridge: &str, subnet: &str) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("skiff-containerd")
            .tempdir()
            .expect("temp dir");
        let net_d = dir.path().join("net.d");
        std::fs::create_dir_all(&net_d).expect("containerd's CNI config dir");
        std::fs::write(
            net_d.join("10-skiff.conflist"),
            serde_json::to_vec_pretty(&conflist(dir.path(), bridge, subnet))
                .expect("conflist JSON"),
        )
        .expect("writing containerd's CNI config");
        std::fs::write(dir.path().join("config.toml"), config(dir.path()))
            .expect("writing containerd's config");
        let mut containerd = Containerd { process: None, dir };
        containerd.spawn();
        containerd.import(images);
        containerd
    }

    /// Imports the images of the OCI archive `images` into the `k8s.io` namespace.
    pub fn import(&self, images: &Path) {
        let imported = self.ctr(&["images", "import", &images.display().to_string()]);
        assert!(
            imported.status.success(),
            "ctr images import {}: {}",
            images.display(),
            String::from_utf8_lossy(&imported.stderr)
        );
    }

    /// Starts the containerd process on this directory and waits until its socket answers.
    fn spawn(&mut self) {
        // Appended to, so that a restart keeps the first run's log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .expect("log file");
        let mut command = Command::new(CONTAINERD);
        command
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log);
        die_with_parent(&mut command);
        self.process = Some(Supervised::spawn(command));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not serve within 30 s (Debian: apt-get install containerd); log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills containerd and starts it again on the same directories, as after a crash
    /// or an upgrade: its containers keep running under their shims meanwhile.
    pub fn restart(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
        self.spawn();
    }

    /// Sends pulls from `registry` (a host as image references name it, `docker.io`
    /// say) to the plain-HTTP `mirror` (`host:port`) first, through a `hosts.toml` in
    /// the config dir containerd reads at each pull.
    pub fn mirror(&self, registry: &str, mirror: &str) {
        let hosts = self.dir.path().join("certs.d").join(registry);
        std::fs::create_dir_all(&hosts).expect("containerd's registry host dir");
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"https://{registry}\"\n\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .expect("writing containerd's hosts.toml");
    }

    /// The CRI endpoint for the kubelet's `--container-runtime-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The directory holding its config, state and socket: every process of this
    /// containerd (its shims too) names it on its command line.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's gRPC socket (CRI and its own API).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Runs `ctr` against this containerd, in the CRI plugin's `k8s.io` namespace.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .expect("ctr (Debian: apt-get install containerd)")
    }

    /// The containers containerd holds, pod sandboxes included (the kubelet removes a
    /// deleted pod's sandbox, so none are left once every pod is gone).
    pub fn containers(&self) -> Vec<String> {
        let listed = self.ctr(&["containers", "list", "--quiet"]);
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "containerd log tail (the test failed):\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        // Whatever the kubelet left: containers outlive containerd (their shims keep
        // them), so they are killed and removed while it still answers.
        for id in self.containers() {
            let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let deleted = self.ctr(&["tasks", "delete", &id]);
                if deleted.status.success()
                    || String::from_utf8_lossy(&deleted.stderr).contains("not found")
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.ctr(&["containers", "delete", &id]);
        }
        if let Some(process) = self.process.take() {
            process.kill();
        }
        // The snapshots' and sandboxes' mounts under its directories go before they do.
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            let under = self.dir.path().display().to_string();
            let mut mounts: Vec<&str> = info
                .lines()
                .filter_map(|line| line.split(' ').nth(4))
                .filter(|mount| mount.starts_with(&under))
                .collect();
            mounts.sort_by_key(|mount| std::cmp::Reverse(mount.len()));
            for mount in mounts {
                if let Ok(path) = std::ffi::CString::new(mount) {
                    // SAFETY: a NUL-terminated path that outlives the call.
                    unsafe {
                        libc::umount2(path.as_ptr(), libc::MNT_DETACH);
                    }
                }
            }
        }
    }
}

/// containerd's config (version 2, containerd 1.6's format): every directory under
/// `dir`; the CRI plugin with the network config beside it, the sandbox image, runc with
/// cgroupfs, `restrict_oom_score_adj` (this VM cannot lower an OOM score), registry
/// hosts from `certs.d` (see [`Containerd::mirror`]), and snapshot usage (image fs and
/// writable layer stats) measured every second rather than every ten, for tests to see
/// it soon.
fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  stats_collect_period = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#
    )
}

/// The network Skiff's runtime writes for a node (port mappings; the node agent
/// masquerades, as for Skiff's runtime) on `bridge` and `subnet`, its address
/// allocations kept under `dir`.
fn conflist(dir: &Path, bridge: &str, subnet: &str) -> serde_json::Value {
    skiff_runtime::network::default_conflist(&skiff_runtime::network::CniConfig {
        conf_dir: dir.join("net.d"),
        plugin_dirs: vec![PathBuf::from("/usr/lib/cni")],
        state_dir: dir.join("cni"),
        default_subnet: subnet.into(),
        default_bridge: bridge.into(),
        ip_masq: false,
        subnet_from_node: false,
        mtu: None,
    })
}
