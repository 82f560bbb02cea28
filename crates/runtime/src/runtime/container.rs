//! Containers: `CreateContainer`, `StartContainer`, `StopContainer`,
//! `RemoveContainer`, status and listing.
//!
//! Create mounts an overlay of the image's unpacked layers, writes the OCI
//! bundle, and starts a monitor ([`crate::shim`]) that runs `runc create` and
//! holds the container's stdio. Start is `runc start`. The container's state is
//! read from files the monitor writes, never from memory, so it survives a
//! restart of the runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use super::{new_id, save, Runtime};
use crate::error::{Error, IoContext, Result};
use crate::proto;
use crate::shim::{ExitRecord, ShimConfig, EXIT_FILE, SHIM_CONFIG};
use crate::spec::{build_spec, SpecInput};
use crate::sys;

pub const RECORD: &str = "container.json";
const STARTED_FILE: &str = "started";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: i32,
    /// The image an image volume mounts (`host_path` is then empty).
    #[serde(default)]
    pub image: Option<super::image_volume::ImageVolume>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as requested.
    pub image: String,
    /// What it resolved to (a repo digest, else the image id).
    pub image_ref: String,
    pub image_id: String,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    pub log_path: String,
    pub created_at: i64,
    pub layers: Vec<String>,
    pub mounts: Vec<MountRecord>,
    pub cgroups_path: String,
    pub stop_signal: String,
}

impl ContainerRecord {
    /// The layers the container needs kept: its image's and its image volumes'.
    pub fn layers_in_use(&self) -> impl Iterator<Item = &String> {
        let volumes = self.mounts.iter().filter_map(|m| m.image.as_ref());
        self.layers
            .iter()
            .chain(volumes.flat_map(|v| v.layers.iter()))
    }
}

/// Unmounts everything the runtime mounted for the container in `dir`: its image
/// volumes, then its root filesystem.
fn unmount_all(dir: &Path) -> Result<()> {
    super::image_volume::unmount_image_volumes(dir)?;
    sys::unmount(&dir.join("rootfs"))
}

/// A container's state, derived from its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running { started_at: i64 },
    Exited { started_at: i64, exit: ExitRecord },
}

impl ContainerState {
    pub fn cri(&self) -> proto::ContainerState {
        match self {
            ContainerState::Created => proto::ContainerState::ContainerCreated,
            ContainerState::Running { .. } => proto::ContainerState::ContainerRunning,
            ContainerState::Exited { .. } => proto::ContainerState::ContainerExited,
        }
    }
}

/// CRI's reason for an exit, as containerd reports it.
pub fn exit_reason(e: &ExitRecord) -> &'static str {
    if e.oom_killed {
        "OOMKilled"
    } else if e.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

fn full_log_path(dir: &str, rel: &str) -> String {
    if rel.is_empty() {
        String::new()
    } else if dir.is_empty() || rel.starts_with('/') {
        rel.to_string()
    } else {
        Path::new(dir).join(rel).display().to_string()
    }
}

impl Runtime {
    pub fn container_state(&self, id: &str) -> ContainerState {
        let dir = self.container_dir(id);
        let started_at = std::fs::read_to_string(dir.join(STARTED_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        match (
            crate::runtime::load::<ExitRecord>(&dir.join(EXIT_FILE)).ok(),
            started_at,
        ) {
            (Some(exit), s) => ContainerState::Exited {
                started_at: s.unwrap_or(0),
                exit,
            },
            (None, Some(s)) => ContainerState::Running { started_at: s },
            (None, None) => ContainerState::Created,
        }
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: proto::ContainerConfig,
    ) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("container metadata is required".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument("container name is required".into()));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| Error::InvalidArgument("container image is required".into()))?;
        let sb = self.sandbox(sandbox_id).await?;
        if !sb.ready {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {} is not ready",
                sb.id
            )));
        }
        let image = self
            .images
            .resolve(&image_name)
            .ok_or_else(|| Error::NotFound(format!("image {image_name:?}")))?;
        let defaults = self.images.container_defaults(&image)?;
        let id = new_id();
        let rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sb.id.clone(),
            name: meta.name.clone(),
            attempt: meta.attempt,
            image: image_name.clone(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or(image.id.clone()),
            image_id: image.id.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            log_path: full_log_path(&sb.log_directory, &config.log_path),
            created_at: crate::shim::now_nanos(),
            layers: image.layers.iter().map(|l| l.digest.clone()).collect(),
            mounts: config
                .mounts
                .iter()
                .map(|m| {
                    Ok(MountRecord {
                        container_path: m.container_path.clone(),
                        host_path: m.host_path.clone(),
                        readonly: m.readonly,
                        propagation: m.propagation,
                        image: self.image_volume(m)?,
                    })
                })
                .collect::<Result<_>>()?,
            cgroups_path: format!("{}/{}", sb.cgroup_parent.trim_end_matches('/'), id),
            stop_signal: defaults.stop_signal.clone().unwrap_or_default(),
        };
        {
            let mut st = self.state.lock().await;
            if let Some(other) = st.containers.values().find(|c| {
                c.sandbox_id == rec.sandbox_id && c.name == rec.name && c.attempt == rec.attempt
            }) {
                return Err(Error::AlreadyExists(format!(
                    "container name {}_{} in sandbox {} (reserved for {})",
                    rec.name, rec.attempt, rec.sandbox_id, other.id
                )));
            }
            st.containers.insert(id.clone(), rec.clone());
        }
        match self.setup_container(&rec, &sb, &config, &defaults).await {
            Ok(()) => {
                tracing::info!(container = %id, sandbox = %sb.id, "container created");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "container create failed; cleaning up");
                let _ = self.runc.delete_force(&id).await;
                let _ = unmount_all(&self.container_dir(&id));
                let _ = std::fs::remove_dir_all(self.container_dir(&id));
                self.state.lock().await.containers.remove(&id);
                Err(e)
            }
        }
    }

    async fn setup_container(
        &self,
        rec: &ContainerRecord,
        sb: &super::SandboxRecord,
        config: &proto::ContainerConfig,
        defaults: &crate::images::store::ContainerDefaults,
    ) -> Result<()> {
        let dir = self.container_dir(&rec.id);
        let rootfs = dir.join("rootfs");
        for d in ["rootfs", "upper", "work"] {
            let p = dir.join(d);
            std::fs::create_dir_all(&p).path_ctx("create", &p)?;
        }
        save(&dir.join(RECORD), rec)?;
        // Top layer first, as overlayfs wants; an image with no layers gets an
        // empty lower dir.
        let mut lower: Vec<PathBuf> = Vec::new();
        for l in rec.layers.iter().rev() {
            lower.push(self.images.layer_dir(l)?);
        }
        if lower.is_empty() {
            let empty = dir.join("empty");
            std::fs::create_dir_all(&empty).path_ctx("create", &empty)?;
            lower.push(empty);
        }
        sys::mount_overlay(&lower, &dir.join("upper"), &dir.join("work"), &rootfs)?;
        let config = &self.mount_image_volumes(rec, &dir, config)?;
        let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).ok();
        let mut namespaces = self.sandbox_namespaces(sb);
        namespaces.pid = self.shared_pid_namespace(sb, config)?;
        let spec = build_spec(&SpecInput {
            config,
            image: defaults,
            rootfs: &rootfs,
            hostname: &sb.hostname,
            namespaces: &namespaces,
            sandbox_files: self.sandbox_files(sb),
            cgroups_path: rec.cgroups_path.clone(),
            sysctls: sb.sysctls.clone(),
            min_oom_score_adj: self.min_oom_score_adj,
            passwd: read("etc/passwd"),
            group: read("etc/group"),
        })?;
        // Bind-mount targets must exist in the rootfs for runc; it creates
        // missing ones itself, but the working directory it does not.
        let cwd = spec
            .process()
            .as_ref()
            .map(|p| p.cwd().clone())
            .unwrap_or_else(|| PathBuf::from("/"));
        let cwd_in_root = rootfs.join(cwd.strip_prefix("/").unwrap_or(&cwd));
        let _ = std::fs::create_dir_all(cwd_in_root);
        let data =
            serde_json::to_vec_pretty(&spec).map_err(|e| Error::json("encode config.json", e))?;
        std::fs::write(dir.join("config.json"), data)
            .path_ctx("write", &dir.join("config.json"))?;

        let shim_cfg = ShimConfig {
            id: rec.id.clone(),
            bundle: dir.clone(),
            runc_binary: self.runc.binary.clone(),
            runc_root: self.runc.root.clone(),
            log_path: (!rec.log_path.is_empty()).then(|| PathBuf::from(&rec.log_path)),
            memory_cgroup: Some(sys::memory_cgroup(&rec.cgroups_path)),
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            tty: config.tty,
        };
        save(&dir.join(SHIM_CONFIG), &shim_cfg)?;
        self.spawn_monitor(&rec.id, &dir).await
    }

    /// Starts the container's monitor and waits for it to report `runc create`.
    async fn spawn_monitor(&self, id: &str, dir: &Path) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let shim_log = std::fs::File::create(dir.join("shim.log"))
            .path_ctx("create", &dir.join("shim.log"))?;
        let mut cmd = tokio::process::Command::new(&self.config.shim);
        cmd.arg(crate::shim::SHIM_ARG)
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(shim_log)
            .kill_on_drop(false);
        // SAFETY: setsid is async-signal-safe. A new session keeps the monitor
        // out of the runtime's process group, so signals to it don't reach it.
        unsafe {
            cmd.as_std_mut().pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .ctx(|| format!("start monitor {}", self.config.shim.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Internal("monitor stdout".into()))?;
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stdout);
        let read = reader.read_line(&mut line);
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .map_err(|_| Error::Timeout(format!("runc create {id}")))?
            .ctx(|| format!("read monitor report for {id}"))?;
        let line = line.trim();
        if let Some(pid) = child.id() {
            let p = dir.join(crate::shim::SHIM_PID_FILE);
            std::fs::write(&p, pid.to_string()).path_ctx("write", &p)?;
        }
        if let Some(rest) = line.strip_prefix("ok ") {
            tracing::debug!(container = %id, pid = rest, "runc create done");
            // The handle is dropped; tokio reaps the monitor if it ends while we run.
            Ok(())
        } else if let Some(msg) = line.strip_prefix("error ") {
            let _ = child.wait().await;
            Err(Error::Runc {
                op: "create",
                id: id.into(),
                message: msg.to_string(),
            })
        } else {
            let _ = child.wait().await;
            let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
            Err(Error::Runc {
                op: "create",
                id: id.into(),
                message: format!("monitor failed: {}", log.trim()),
            })
        }
    }

    /// The PID namespace a container shares, if any: the pod's (CRI `POD` mode, from
    /// `shareProcessNamespace`) when its sandbox has one, or another container's (CRI
    /// `TARGET` mode, an ephemeral container's `targetContainerName`): that container's
    /// init process's, so the target must be running.
    fn shared_pid_namespace(
        &self,
        sb: &super::SandboxRecord,
        config: &proto::ContainerConfig,
    ) -> Result<Option<PathBuf>> {
        let options = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        // Without options the container takes the default mode, the pod's.
        let Some(options) = options.filter(|o| o.pid != proto::NamespaceMode::Pod as i32) else {
            return Ok(self.pod_pid_namespace(sb));
        };
        if options.pid != proto::NamespaceMode::Target as i32 {
            return Ok(None);
        }
        let pid_file = self
            .container_dir(&options.target_id)
            .join(crate::shim::PID_FILE);
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|pid| sys::process_alive(*pid))
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "target container {:?} is not running",
                    options.target_id
                ))
            })?;
        Ok(Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))))
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        let rec = {
            let st = self.state.lock().await;
            Self::find_container(&st, id)?
        };
        match self.container_state(&rec.id) {
            ContainerState::Created => {}
            other => {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is {:?}, not created",
                    rec.id,
                    other.cri()
                )))
            }
        }
        // Record the start time before starting: a short-lived container may
        // exit before `runc start` returns, and its finish time must not
        // precede its start time.
        let p = self.container_dir(&rec.id).join(STARTED_FILE);
        crate::images::store::write_atomic(&p, crate::shim::now_nanos().to_string().as_bytes())?;
        if let Err(e) = self.runc.start(&rec.id).await {
            let _ = std::fs::remove_file(&p);
            return Err(e);
        }
        tracing::info!(container = %rec.id, "container started");
        Ok(())
    }

    async fn wait_exit(&self, id: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if matches!(self.container_state(id), ContainerState::Exited { .. }) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops with the image's stop signal (default SIGTERM), then SIGKILL after
    /// `timeout` seconds. Stopping a stopped container is not an error.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let rec = {
            let st = self.state.lock().await;
            Self::find_container(&st, id)?
        };
        if matches!(self.container_state(&rec.id), ContainerState::Exited { .. }) {
            return Ok(());
        }
        if timeout > 0 {
            let sig = if rec.stop_signal.is_empty() {
                "SIGTERM".to_string()
            } else {
                rec.stop_signal.clone()
            };
            if let Err(e) = self.runc.kill(&rec.id, &sig, false).await {
                tracing::debug!(container = %rec.id, error = %e, "stop signal failed");
            }
            if self
                .wait_exit(&rec.id, Duration::from_secs(timeout as u64))
                .await
            {
                return Ok(());
            }
        }
        if let Err(e) = self.runc.kill(&rec.id, "SIGKILL", true).await {
            tracing::debug!(container = %rec.id, error = %e, "SIGKILL failed");
        }
        if self.wait_exit(&rec.id, Duration::from_secs(10)).await {
            Ok(())
        } else if !matches!(
            self.runc.status(&rec.id).await.as_deref(),
            Some("running" | "created" | "paused")
        ) {
            // No monitor recorded the exit (it died): record it ourselves.
            let exit = ExitRecord {
                exit_code: 137,
                finished_at: crate::shim::now_nanos(),
                oom_killed: false,
                signal: Some(9),
            };
            save(&self.container_dir(&rec.id).join(EXIT_FILE), &exit)
        } else {
            Err(Error::Timeout(format!(
                "container {} did not exit after SIGKILL",
                rec.id
            )))
        }
    }

    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let rec = {
            let st = self.state.lock().await;
            match Self::find_container(&st, id) {
                Ok(r) => r,
                Err(Error::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        };
        if !matches!(self.container_state(&rec.id), ContainerState::Exited { .. }) {
            self.stop_container(&rec.id, 0).await?;
        }
        self.runc.delete_force(&rec.id).await?;
        let dir = self.container_dir(&rec.id);
        unmount_all(&dir)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).path_ctx("remove", &dir)?;
        }
        self.state.lock().await.containers.remove(&rec.id);
        tracing::info!(container = %rec.id, "container removed");
        Ok(())
    }

    /// Asks the container's monitor to reopen its log file (after the kubelet
    /// renamed it) and waits until the new file exists.
    pub async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let rec = self.container(id).await?;
        if !matches!(
            self.container_state(&rec.id),
            ContainerState::Running { .. }
        ) {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        if rec.log_path.is_empty() {
            return Ok(());
        }
        let pid_file = self.container_dir(&rec.id).join(crate::shim::SHIM_PID_FILE);
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .path_ctx("read", &pid_file)?
            .trim()
            .parse()
            .map_err(|_| Error::Internal(format!("bad {}", pid_file.display())))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .ctx(|| format!("signal monitor {pid} of {}", rec.id))?;
        let log = PathBuf::from(&rec.log_path);
        for _ in 0..100 {
            if log.exists() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::Timeout(format!(
            "log {} was not reopened",
            log.display()
        )))
    }

    /// Applies new cpu/memory limits to a running container (`runc update`).
    pub async fn update_container_resources(
        &self,
        id: &str,
        res: &proto::LinuxContainerResources,
    ) -> Result<()> {
        let rec = self.container(id).await?;
        if matches!(self.container_state(&rec.id), ContainerState::Exited { .. }) {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited",
                rec.id
            )));
        }
        let v = crate::spec::resources_json(res);
        let f = self
            .container_dir(&rec.id)
            .join(format!("update-{}.json", uuid::Uuid::new_v4().simple()));
        let data = serde_json::to_vec(&v).map_err(|e| Error::json("encode resources", e))?;
        std::fs::write(&f, data).path_ctx("write", &f)?;
        let r = self.runc.update(&rec.id, &f).await;
        let _ = std::fs::remove_file(&f);
        r
    }

    pub async fn container(&self, id: &str) -> Result<ContainerRecord> {
        let st = self.state.lock().await;
        Self::find_container(&st, id)
    }

    pub async fn containers(&self) -> Vec<ContainerRecord> {
        self.state
            .lock()
            .await
            .containers
            .values()
            .cloned()
            .collect()
    }
}
