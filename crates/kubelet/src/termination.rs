//! Termination messages, as upstream's kubelet reports them: every container gets an
//! empty file of its own mounted at its `terminationMessagePath`; when the container
//! has exited, what it wrote there (at most 4 KiB) becomes
//! `state.terminated.message`. Under `terminationMessagePolicy: FallbackToLogsOnError`,
//! a container that failed without writing anything is described by the end of its
//! log instead.

use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;
use skiff_runtime::proto;

use crate::cri::labels;
use crate::error::{Error, Result};
use crate::logs::{self, LogOptions};

/// The most of a message file that is reported.
pub const MAX_MESSAGE_BYTES: u64 = 4096;
/// How much of the log stands in for a missing message: its last lines, and of those
/// the last bytes.
const FALLBACK_LOG_LINES: usize = 80;
const FALLBACK_LOG_BYTES: usize = 2048;

/// The message file of one attempt of a container, under the pod's directory (removed
/// with it).
fn message_file(pod_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir
        .join("containers")
        .join(container)
        .join(format!("termination-log-{attempt}"))
}

/// Creates the attempt's empty message file and returns the mount that puts it at the
/// container's `terminationMessagePath` (none when the path is empty).
pub fn prepare_mount(pod_dir: &Path, c: &Container, attempt: u32) -> Result<Option<proto::Mount>> {
    let Some(path) = c
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    let file = message_file(pod_dir, &c.name, attempt);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    }
    std::fs::write(&file, b"").map_err(Error::io(format!("create {}", file.display())))?;
    // Whatever user the container runs as must be able to write it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))
        .map_err(Error::io(format!("chmod {}", file.display())))?;
    Ok(Some(proto::Mount {
        container_path: path.to_string(),
        host_path: file.display().to_string(),
        ..Default::default()
    }))
}

/// The termination message of an exited container, from its CRI status: the file
/// mounted at the path its annotations name, else (by policy, after a failure) the
/// end of its log.
pub fn message(status: &proto::ContainerStatus) -> String {
    let annotation = |key: &str| status.annotations.get(key).map(String::as_str);
    let from_file = annotation(labels::TERMINATION_MESSAGE_PATH)
        .and_then(|path| status.mounts.iter().find(|m| m.container_path == path))
        .and_then(|m| read_capped(Path::new(&m.host_path)))
        .unwrap_or_default();
    if !from_file.is_empty() {
        return from_file;
    }
    let fallback = annotation(labels::TERMINATION_MESSAGE_POLICY) == Some("FallbackToLogsOnError")
        && status.exit_code != 0;
    if !fallback || status.log_path.is_empty() {
        return String::new();
    }
    let opts = LogOptions {
        tail_lines: Some(FALLBACK_LOG_LINES),
        ..Default::default()
    };
    match logs::read_all(Path::new(&status.log_path), opts) {
        Ok(text) => {
            let start = text.len().saturating_sub(FALLBACK_LOG_BYTES);
            String::from_utf8_lossy(&text[start..]).into_owned()
        }
        Err(e) => format!("Error on reading termination message from logs: {e}"),
    }
}

fn read_capped(path: &Path) -> Option<String> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_MESSAGE_BYTES)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn exited(
        dir: &Path,
        mount: Option<proto::Mount>,
        policy: &str,
        exit_code: i32,
    ) -> proto::ContainerStatus {
        let log = dir.join("0.log");
        std::fs::write(
            &log,
            "2026-12-05T12:00:00.000000000Z stdout F first\n2026-12-05T12:00:01.000000000Z stderr F last words\n",
        )
        .expect("log");
        proto::ContainerStatus {
            exit_code,
            annotations: HashMap::from([
                (
                    labels::TERMINATION_MESSAGE_PATH.to_string(),
                    "/dev/termination-log".to_string(),
                ),
                (
                    labels::TERMINATION_MESSAGE_POLICY.to_string(),
                    policy.to_string(),
                ),
            ]),
            mounts: mount.into_iter().collect(),
            log_path: log.display().to_string(),
            ..Default::default()
        }
    }

    fn container(path: &str) -> Container {
        Container {
            name: "c".into(),
            termination_message_path: Some(path.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_file_is_the_message_capped_at_4_kib() {
        let dir = tempfile::tempdir().expect("tmp");
        let mount = prepare_mount(dir.path(), &container("/dev/termination-log"), 0)
            .expect("mount")
            .expect("a path is set");
        assert_eq!(mount.container_path, "/dev/termination-log");
        let status = exited(dir.path(), Some(mount.clone()), "File", 0);
        assert_eq!(message(&status), "", "a new file is empty");
        std::fs::write(&mount.host_path, "x".repeat(5000)).expect("write");
        assert_eq!(message(&status).len(), 4096);
        std::fs::write(&mount.host_path, "done").expect("write");
        assert_eq!(
            message(&exited(dir.path(), Some(mount), "FallbackToLogsOnError", 1)),
            "done"
        );
    }

    #[test]
    fn logs_stand_in_only_for_a_failure_without_a_message() {
        let dir = tempfile::tempdir().expect("tmp");
        let mount =
            prepare_mount(dir.path(), &container("/dev/termination-log"), 1).expect("mount");
        let failed = exited(dir.path(), mount.clone(), "FallbackToLogsOnError", 2);
        assert_eq!(message(&failed), "first\nlast words\n");
        let succeeded = exited(dir.path(), mount.clone(), "FallbackToLogsOnError", 0);
        assert_eq!(message(&succeeded), "");
        let file_policy = exited(dir.path(), mount, "File", 2);
        assert_eq!(message(&file_policy), "");
    }

    #[test]
    fn an_empty_path_mounts_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(prepare_mount(dir.path(), &container(""), 0)
            .expect("ok")
            .is_none());
    }
}
