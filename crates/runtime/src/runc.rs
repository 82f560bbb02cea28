//! Invoking runc. Every call goes through [`Runc`], which adds the runtime's own
//! `--root` so our containers never mix with other runc users on the host.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    /// runc's state directory (`runc --root`).
    pub root: PathBuf,
}

/// Output of a finished `runc exec`.
#[derive(Debug)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub timed_out: bool,
}

impl Runc {
    pub fn command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c.stdin(Stdio::null()).kill_on_drop(false);
        c
    }

    /// The same arguments for a synchronous `std` command (used by the shim).
    pub fn std_command(&self) -> std::process::Command {
        let mut c = std::process::Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c
    }

    async fn run(&self, op: &'static str, id: &str, args: &[&str]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .output()
            .await
            .map_err(|e| Error::Runc {
                op,
                id: id.into(),
                message: format!("spawn {}: {e}", self.binary.display()),
            })?;
        if !out.status.success() {
            return Err(Error::Runc {
                op,
                id: id.into(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.run("start", id, &["start", id]).await.map(drop)
    }

    /// Sends `signal` to the container's init (or every process with `all`).
    pub async fn kill(&self, id: &str, signal: &str, all: bool) -> Result<()> {
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, signal]);
        self.run("kill", id, &args).await.map(drop)
    }

    /// `runc update --resources FILE`: changes a running container's cgroup limits.
    pub async fn update(&self, id: &str, resources_json: &Path) -> Result<()> {
        let path = resources_json.display().to_string();
        self.run("update", id, &["update", "--resources", &path, id])
            .await
            .map(drop)
    }

    pub async fn delete_force(&self, id: &str) -> Result<()> {
        match self.run("delete", id, &["delete", "--force", id]).await {
            Ok(_) => Ok(()),
            Err(Error::Runc { message, .. }) if message.contains("does not exist") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `runc state`: the container's status string (`created`, `running`,
    /// `stopped`), or `None` if runc does not know it.
    pub async fn status(&self, id: &str) -> Option<String> {
        let out = self.run("state", id, &["state", id]).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.get("status").and_then(|s| s.as_str()).map(str::to_string)
    }

    /// Runs a process described by `process_json` inside container `id`,
    /// collecting its output; on timeout kills it and reports `timed_out`.
    pub async fn exec(
        &self,
        id: &str,
        process_json: &Path,
        pid_file: &Path,
        timeout: Option<Duration>,
    ) -> Result<ExecOutput> {
        let child = self
            .command()
            .arg("exec")
            .arg("--process")
            .arg(process_json)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Runc {
                op: "exec",
                id: id.into(),
                message: format!("spawn: {e}"),
            })?;
        let fut = child.wait_with_output();
        let out = match timeout {
            Some(t) if !t.is_zero() => {
                tokio::pin!(fut);
                match tokio::time::timeout(t, &mut fut).await {
                    Ok(r) => r,
                    Err(_) => {
                        // runc exec proxies signals, but SIGKILL cannot be proxied:
                        // kill the process itself through its host pid.
                        if let Ok(pid) = std::fs::read_to_string(pid_file) {
                            if let Ok(pid) = pid.trim().parse::<i32>() {
                                let _ = nix::sys::signal::kill(
                                    nix::unistd::Pid::from_raw(pid),
                                    nix::sys::signal::Signal::SIGKILL,
                                );
                            }
                        }
                        let out = fut.await.map_err(|e| Error::Runc {
                            op: "exec",
                            id: id.into(),
                            message: e.to_string(),
                        })?;
                        return Ok(ExecOutput {
                            stdout: out.stdout,
                            stderr: out.stderr,
                            exit_code: out.status.code().unwrap_or(137),
                            timed_out: true,
                        });
                    }
                }
            }
            _ => fut.await,
        }
        .map_err(|e| Error::Runc {
            op: "exec",
            id: id.into(),
            message: e.to_string(),
        })?;
        use std::os::unix::process::ExitStatusExt;
        let exit_code = out
            .status
            .code()
            .or_else(|| out.status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Ok(ExecOutput {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code,
            timed_out: false,
        })
    }
}
