//! The processes a benchmark run starts: etcd, `skiff apiserver`s, and the components a
//! case runs beside them.
//!
//! Every process sits in a [`Proc`] guard that kills (SIGKILL) and reaps it when dropped,
//! so an error or a panic anywhere in the run leaves nothing behind. Temp dirs are dropped
//! after the process that uses them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A child process that is killed and reaped when the guard is dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Proc> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file handle")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails (with the end of its log) if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("polling a child process")? {
            bail!(
                "{} exited early ({status}); end of its log {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
        }
        Ok(())
    }

    /// Resident set size in bytes, from `/proc/<pid>/status` (`VmRSS`).
    pub fn rss_bytes(&self) -> Result<u64> {
        rss_bytes(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes of all regular files under `path` (0 for a missing path).
pub fn disk_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| disk_bytes(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

pub fn rss_bytes(pid: u32) -> Result<u64> {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// The proportional set size of a process (each page it shares counted 1/n to each of
/// the n processes that map it).
pub fn pss_bytes(pid: u32) -> Result<u64> {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// The `<field> <n> kB` line of a `/proc` file, in bytes.
fn kib_field(path: &str, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} line in {path}"))?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unparsable {field} line in {path}: {line:?}"))?;
    Ok(kib * 1024)
}

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(4000)));
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// A free loopback TCP port: bind port 0, read the port, release it.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A single-member etcd in a temp dir on free loopback ports.
pub struct Etcd {
    pub proc: Proc,
    pub url: String,
    pub dir: TempDir,
}

impl Etcd {
    pub async fn start(binary: &Path) -> Result<Etcd> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-bench-etcd-")
            .tempdir()
            .context("creating the etcd temp dir")?;
        let client_port = free_port()?;
        let mut peer_port = free_port()?;
        while peer_port == client_port {
            peer_port = free_port()?;
        }
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(binary);
        cmd.arg("--name")
            .arg("bench")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&url)
            .arg("--advertise-client-urls")
            .arg(&url)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("bench={peer}"))
            .arg("--quota-backend-bytes")
            .arg((8u64 << 30).to_string())
            .arg("--log-level")
            .arg("warn");
        let mut proc = Proc::spawn("etcd", cmd, dir.path().join("etcd.log"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            proc.check_alive()?;
            if etcd_healthy(client_port).await {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd did not become healthy within 30 s; its log:\n{}",
                    log_tail(&proc.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Etcd { proc, url, dir })
    }
}

async fn etcd_healthy(port: u16) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok::<bool, std::io::Error>(body.contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}

/// One `skiff server` with its own data dir and port, and a kube client for it.
pub struct Server {
    // Dropped in order: the process dies before its data dir is removed.
    pub proc: Proc,
    pub client: Client,
    pub dir: TempDir,
}

impl Server {
    pub async fn start(skiff: &Path, label: &str, etcd_url: Option<&str>) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("skiff-bench-{label}-"))
            .tempdir()
            .context("creating the server temp dir")?;
        let port = free_port()?;
        let mut cmd = Command::new(skiff);
        // The API server alone: `skiff server` would add a scheduler, controllers and a
        // node agent, whose work is not what these numbers measure. Without the controller
        // manager no namespace gets a service account, so, as upstream's integration
        // setup, no ServiceAccount admission.
        cmd.arg("apiserver")
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--https-port")
            .arg(port.to_string());
        if let Some(url) = etcd_url {
            cmd.arg("--datastore")
                .arg("etcd")
                .arg("--etcd-endpoints")
                .arg(url);
        }
        let mut proc = Proc::spawn(
            &format!("skiff apiserver ({label})"),
            cmd,
            dir.path().join("server.log"),
        )?;
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            proc.check_alive()?;
            if kubeconfig.exists() {
                match ready_client(&kubeconfig).await {
                    Ok(client) => break client,
                    Err(e) if Instant::now() > deadline => {
                        return Err(e.context(format!(
                            "skiff server ({label}) not ready within 60 s; its log:\n{}",
                            log_tail(&proc.log)
                        )))
                    }
                    Err(_) => {}
                }
            } else if Instant::now() > deadline {
                bail!(
                    "skiff server ({label}) wrote no {} within 60 s; its log:\n{}",
                    kubeconfig.display(),
                    log_tail(&proc.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Ok(Server { proc, client, dir })
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.proc.check_alive()
    }
}

/// A kube client from the kubeconfig file, once `/readyz` answers `ok`.
async fn ready_client(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("building a client config from the kubeconfig")?;
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(300));
    let client = Client::try_from(config).context("building the kube client")?;
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .context("building /readyz request")?;
    let body = client.request_text(request).await.context("GET /readyz")?;
    if body.trim() != "ok" {
        bail!("/readyz answered {body:?}");
    }
    Ok(client)
}

/// The `skiff` binary: `--skiff`/`SKIFF_BIN`, else next to this executable.
pub fn find_skiff(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if !path.is_file() {
            bail!("skiff binary {} does not exist", path.display());
        }
        return Ok(path);
    }
    let me = std::env::current_exe().context("locating this executable")?;
    let dir = me.parent().context("this executable has no parent dir")?;
    let candidate = dir.join("skiff");
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "no skiff binary at {}; build it first (cargo build --release -p skiff) or pass --skiff PATH / SKIFF_BIN",
        candidate.display()
    )
}
