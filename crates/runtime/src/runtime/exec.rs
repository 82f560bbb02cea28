//! `ExecSync`: running a command in a container and collecting its output.

use std::time::Duration;

use super::Runtime;
use crate::error::{Error, IoContext, Result};
use crate::runc::ExecOutput;

/// A command ready for `runc exec`: its process file in the container's directory.
pub struct PreparedExec {
    pub container_id: String,
    pub process_json: std::path::PathBuf,
    pub pid_file: std::path::PathBuf,
}

impl Runtime {
    /// Writes the process `runc exec` runs: the container's own process settings
    /// (environment, user, working directory) with `cmd` as its arguments. The container
    /// must be running.
    pub async fn prepare_exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
    ) -> Result<PreparedExec> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec command is empty".into()));
        }
        let rec = self.running_container(id).await?;
        let dir = self.container_dir(&rec.id);
        let spec = oci_spec::runtime::Spec::load(dir.join("config.json"))?;
        let mut process = spec
            .process()
            .clone()
            .ok_or_else(|| Error::Internal("config.json has no process".into()))?;
        process.set_args(Some(cmd));
        process.set_terminal(Some(tty));
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let process_json = dir.join(format!("exec-{tag}.json"));
        let pid_file = dir.join(format!("exec-{tag}.pid"));
        let data =
            serde_json::to_vec(&process).map_err(|e| Error::json("encode exec process", e))?;
        std::fs::write(&process_json, data).path_ctx("write", &process_json)?;
        Ok(PreparedExec {
            container_id: rec.id,
            process_json,
            pid_file,
        })
    }

    /// Removes what [`Runtime::prepare_exec`] wrote.
    pub fn finish_exec(&self, prepared: &PreparedExec) {
        let _ = std::fs::remove_file(&prepared.process_json);
        let _ = std::fs::remove_file(&prepared.pid_file);
    }

    /// Runs `cmd` in the container with its environment, user and working
    /// directory (the process of its `config.json` with other args). A timeout
    /// of 0 waits forever.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout_secs: i64,
    ) -> Result<ExecOutput> {
        let prepared = self.prepare_exec(id, cmd, false).await?;
        let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs as u64));
        let res = self
            .runc
            .exec(
                &prepared.container_id,
                &prepared.process_json,
                &prepared.pid_file,
                timeout,
            )
            .await;
        self.finish_exec(&prepared);
        res
    }
}

impl Runtime {
    async fn running_container(&self, id: &str) -> Result<super::ContainerRecord> {
        let rec = self.container(id).await?;
        if !matches!(
            self.container_state(&rec.id),
            super::ContainerState::Running { .. }
        ) {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        Ok(rec)
    }

    /// Checks that a container can be attached to, without connecting (a connection
    /// that closes at once would close a `stdinOnce` container's stdin). Returns its id.
    pub async fn attachable(&self, id: &str) -> Result<String> {
        let rec = self.running_container(id).await?;
        let socket = self.container_dir(&rec.id).join(crate::shim::ATTACH_SOCKET);
        if !socket.exists() {
            return Err(Error::FailedPrecondition(format!(
                "container {} cannot be attached to: its monitor started before attach existed",
                rec.id
            )));
        }
        Ok(rec.id)
    }

    /// Connects to the monitor of a running container to attach to its stdio (see
    /// [`crate::shim::ATTACH_SOCKET`]), and for a container on a terminal to the socket
    /// that sets its size ([`crate::shim::RESIZE_SOCKET`]).
    pub async fn attach(&self, id: &str) -> Result<Attachment> {
        let id = self.attachable(id).await?;
        let dir = self.container_dir(&id);
        let shim: crate::shim::ShimConfig = super::load(&dir.join(crate::shim::SHIM_CONFIG))?;
        let connect = |name: &str| {
            let socket = dir.join(name);
            crate::sys::with_short_path(&socket, |path| {
                std::os::unix::net::UnixStream::connect(path)
            })
            .and_then(|c| {
                c.set_nonblocking(true)?;
                tokio::net::UnixStream::from_std(c)
            })
            .map_err(|e| Error::Internal(format!("attach to container {id}: {e}")))
        };
        Ok(Attachment {
            stdio: connect(crate::shim::ATTACH_SOCKET)?,
            stdin: shim.stdin,
            resize: if shim.tty {
                Some(connect(crate::shim::RESIZE_SOCKET)?)
            } else {
                None
            },
        })
    }
}

/// A connection to a running container's monitor.
pub struct Attachment {
    /// Framed output from the monitor; stdin to it.
    pub stdio: tokio::net::UnixStream,
    /// Whether the container reads stdin.
    pub stdin: bool,
    /// For a container on a terminal: where `<width> <height>` lines resize it.
    pub resize: Option<tokio::net::UnixStream>,
}
