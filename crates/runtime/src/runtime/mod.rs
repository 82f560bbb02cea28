//! The runtime proper: sandboxes and containers, their state on disk, and
//! the operations the CRI RuntimeService maps onto (one file per concept:
//! [`sandbox`], [`container`], [`exec`]).
//!
//! Everything a running pod needs is on disk under the root, so that
//! [`Runtime::open`] after a restart recovers it:
//!
//! ```text
//! ROOT/sandboxes/ID/{sandbox.json, hostname, resolv.conf, hosts, ns/{net,ipc,uts}}
//! ROOT/containers/ID/{container.json, config.json, rootfs/, upper/, work/, image-volumes/,
//!                     shim.json, init.pid, started, exit.json}
//! ROOT/runc/            runc's own state (runc --root)
//! ```

pub mod container;
pub mod exec;
pub mod image_volume;
pub mod sandbox;
pub mod stats;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::Mutex;

use crate::error::{Error, IoContext, Result};
use crate::images::ImageStore;
use crate::runc::Runc;

pub use container::{ContainerRecord, ContainerState};
pub use exec::PreparedExec;
pub use sandbox::SandboxRecord;

/// Settings of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub root: PathBuf,
    pub runc: PathBuf,
    /// Executable started as the container monitor and sandbox holder (it must
    /// call [`crate::shim::main_if_shim`] first thing).
    pub shim: PathBuf,
    /// Parent cgroup for sandboxes whose config names none.
    pub cgroup_parent: String,
    /// Pod networking; `None` leaves pods with loopback only.
    pub cni: Option<crate::network::CniConfig>,
}

pub struct Runtime {
    pub config: RuntimeConfig,
    pub images: Arc<ImageStore>,
    pub runc: Runc,
    pub(crate) state: Mutex<State>,
    pub(crate) min_oom_score_adj: i64,
    pub cni: Option<crate::network::PodNetwork>,
    pub(crate) cpu_samples: stats::CpuSamples,
}

#[derive(Default)]
pub(crate) struct State {
    pub sandboxes: HashMap<String, SandboxRecord>,
    pub containers: HashMap<String, ContainerRecord>,
}

pub(crate) fn new_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

pub(crate) fn save<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(v).map_err(|e| Error::json("encode record", e))?;
    crate::images::store::write_atomic(path, &data)
}

pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let data = std::fs::read(path).path_ctx("read", path)?;
    serde_json::from_slice(&data).map_err(|e| Error::json(format!("parse {}", path.display()), e))
}

impl Runtime {
    /// Opens the runtime's state under `config.root`, recovering sandboxes and
    /// containers left by a previous run.
    pub fn open(config: RuntimeConfig) -> Result<Self> {
        for d in ["sandboxes", "containers", "runc", "images"] {
            let p = config.root.join(d);
            std::fs::create_dir_all(&p).path_ctx("create", &p)?;
        }
        let images = Arc::new(ImageStore::open(&config.root.join("images"))?);
        let runc = Runc {
            binary: config.runc.clone(),
            root: config.root.join("runc"),
        };
        let mut state = State::default();
        for (dir, file) in [
            ("sandboxes", sandbox::RECORD),
            ("containers", container::RECORD),
        ] {
            let base = config.root.join(dir);
            for e in std::fs::read_dir(&base).path_ctx("read", &base)?.flatten() {
                let p = e.path().join(file);
                if !p.exists() {
                    continue;
                }
                let res = if dir == "sandboxes" {
                    load::<SandboxRecord>(&p).map(|r| {
                        state.sandboxes.insert(r.id.clone(), r);
                    })
                } else {
                    load::<ContainerRecord>(&p).map(|r| {
                        state.containers.insert(r.id.clone(), r);
                    })
                };
                if let Err(e) = res {
                    tracing::warn!(path = %p.display(), error = %e, "skipping unreadable record");
                }
            }
        }
        // A container whose monitor is gone (killed, or the host rebooted)
        // will never get an exit record from it: write one now, so it shows as
        // exited instead of running forever.
        for c in state.containers.values() {
            let dir = config.root.join("containers").join(&c.id);
            if dir.join(crate::shim::EXIT_FILE).exists() {
                continue;
            }
            let shim_alive = std::fs::read_to_string(dir.join(crate::shim::SHIM_PID_FILE))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
                .is_some_and(|pid| {
                    crate::sys::process_alive(pid)
                        && crate::sys::process_runs(pid, crate::shim::SHIM_ARG)
                });
            let runc_status = runc
                .std_command()
                .args(["state", &c.id])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                .and_then(|v| v.get("status").and_then(|s| s.as_str()).map(str::to_string));
            let process_left = matches!(
                runc_status.as_deref(),
                Some("running" | "created" | "paused")
            );
            if !shim_alive && process_left {
                // Its exit can no longer be observed; stop/remove still work
                // through runc.
                tracing::warn!(container = %c.id, "monitor gone but container still runs");
            } else if !shim_alive {
                tracing::warn!(container = %c.id, "monitor gone; marking container exited");
                let rec = crate::shim::ExitRecord {
                    exit_code: 255,
                    finished_at: crate::shim::now_nanos(),
                    oom_killed: false,
                    signal: None,
                };
                save(&dir.join(crate::shim::EXIT_FILE), &rec)?;
            }
        }
        tracing::info!(
            sandboxes = state.sandboxes.len(),
            containers = state.containers.len(),
            "runtime state recovered"
        );
        let cni = match &config.cni {
            Some(c) => {
                crate::network::prepare_host();
                Some(crate::network::PodNetwork::open(c.clone())?)
            }
            None => None,
        };
        Ok(Runtime {
            cni,
            images,
            runc,
            state: Mutex::new(state),
            min_oom_score_adj: crate::sys::own_oom_score_adj().max(0),
            cpu_samples: stats::CpuSamples::default(),
            config,
        })
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("sandboxes").join(id)
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("containers").join(id)
    }

    /// Finds a sandbox by full id or unique prefix.
    pub(crate) fn find_sandbox(state: &State, id: &str) -> Result<SandboxRecord> {
        find(&state.sandboxes, id, "pod sandbox")
    }

    pub(crate) fn find_container(state: &State, id: &str) -> Result<ContainerRecord> {
        find(&state.containers, id, "container")
    }

    /// Layer digests used by containers, which image removal must keep.
    pub async fn layers_in_use(&self) -> Vec<String> {
        let st = self.state.lock().await;
        st.containers
            .values()
            .flat_map(|c| c.layers_in_use().cloned())
            .collect()
    }
}

fn find<T: Clone>(map: &HashMap<String, T>, id: &str, what: &str) -> Result<T> {
    if id.is_empty() {
        return Err(Error::InvalidArgument(format!("{what} id is empty")));
    }
    if let Some(v) = map.get(id) {
        return Ok(v.clone());
    }
    let mut hits = map.iter().filter(|(k, _)| k.starts_with(id));
    match (hits.next(), hits.next()) {
        (Some((_, v)), None) => Ok(v.clone()),
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "{what} id {id:?} is ambiguous"
        ))),
        _ => Err(Error::NotFound(format!("{what} {id:?}"))),
    }
}
