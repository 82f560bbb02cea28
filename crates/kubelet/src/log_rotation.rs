//! Container log rotation, as upstream's kubelet does it (its container log manager).
//!
//! Every `--container-log-monitor-interval` the log file of each running container (the
//! path its runtime reports) is looked at; one of `--container-log-max-size` or more is
//! rotated:
//!
//! 1. leftovers of an interrupted rotation go (`*.tmp`, and a rotated file whose
//!    compressed copy exists);
//! 2. the oldest rotated files go until `--container-log-max-files` − 2 are left (the
//!    current file and the one about to be rotated make up the rest);
//! 3. rotated files not yet compressed are gzipped (`<log>.<time>.gz`);
//! 4. the current file is renamed `<log>.<YYYYMMDD-hhmmss>` and the runtime is asked
//!    (CRI `ReopenContainerLog`) to write to a new one; if it cannot, the file is put
//!    back.
//!
//! `kubectl logs` reads the current file only, as upstream's does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_runtime::proto;

use crate::cri::Cri;

/// Upstream's defaults (`containerLogMaxSize`, `containerLogMaxFiles`,
/// `containerLogMonitorInterval`).
pub const DEFAULT_MAX_SIZE: &str = "10Mi";
pub const DEFAULT_MAX_FILES: usize = 5;
pub const DEFAULT_MONITOR_INTERVAL: &str = "10s";

const TMP_SUFFIX: &str = ".tmp";
const GZ_SUFFIX: &str = ".gz";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// A log file this large or larger is rotated.
    pub max_bytes: u64,
    /// Most files a container's log may span: the current one and the rotated ones.
    pub max_files: usize,
}

impl RotationPolicy {
    /// Upstream's check: rotation needs room for the current and one rotated file.
    pub fn new(max_bytes: u64, max_files: usize) -> Result<RotationPolicy, String> {
        if max_files < 2 {
            return Err(format!(
                "--container-log-max-files must be greater than 1, got {max_files}"
            ));
        }
        if max_bytes == 0 {
            return Err("--container-log-max-size must be more than 0".into());
        }
        Ok(RotationPolicy {
            max_bytes,
            max_files,
        })
    }
}

/// Rotates the logs of the runtime's running containers.
pub struct LogRotator {
    cri: Cri,
    policy: RotationPolicy,
}

impl LogRotator {
    pub fn new(cri: Cri, policy: RotationPolicy) -> LogRotator {
        LogRotator { cri, policy }
    }

    pub async fn run(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.rotate_all().await;
        }
    }

    /// One pass over the running containers.
    async fn rotate_all(&self) {
        let containers = match self.cri.all_containers().await {
            Ok(containers) => containers,
            Err(e) => {
                tracing::warn!(error = %e, "log rotation: cannot list containers");
                return;
            }
        };
        let running = containers
            .iter()
            .filter(|c| c.state == proto::ContainerState::ContainerRunning as i32);
        for container in running {
            let log = match self.cri.container_status(&container.id).await {
                Ok(status) if !status.log_path.is_empty() => PathBuf::from(status.log_path),
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(container = %container.id, error = %e, "log rotation: no status");
                    continue;
                }
            };
            if let Err(e) = self.rotate_if_large(&container.id, &log).await {
                tracing::warn!(
                    container = %container.id,
                    log = %log.display(),
                    error = %e,
                    "log rotation failed"
                );
            }
        }
    }

    async fn rotate_if_large(&self, id: &str, log: &Path) -> std::io::Result<()> {
        let size = match std::fs::metadata(log) {
            Ok(meta) => meta.len(),
            // The runtime may have lost the file (removed by hand): ask for a new one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.reopen(id).await;
            }
            Err(e) => return Err(e),
        };
        if size < self.policy.max_bytes {
            return Ok(());
        }
        let rotated_logs = tidy_rotated(log, self.policy.max_files)?;
        for rotated in rotated_logs.iter().filter(|p| !has_suffix(p, GZ_SUFFIX)) {
            compress(rotated)?;
        }
        let rotated = rotated_name(log, jiff::Timestamp::now());
        std::fs::rename(log, &rotated)?;
        if let Err(e) = self.reopen(id).await {
            // Without a new file the container would write into the rotated one:
            // put it back, and try again next time.
            std::fs::rename(&rotated, log)?;
            return Err(e);
        }
        tracing::debug!(container = %id, log = %log.display(), rotated = %rotated.display(), "rotated container log");
        Ok(())
    }

    async fn reopen(&self, id: &str) -> std::io::Result<()> {
        self.cri
            .reopen_container_log(id)
            .await
            .map_err(|e| std::io::Error::other(format!("ReopenContainerLog: {e}")))
    }
}

fn has_suffix(path: &Path, suffix: &str) -> bool {
    path.to_string_lossy().ends_with(suffix)
}

/// `<log>.<YYYYMMDD-hhmmss>` (UTC), upstream's name for a rotated file.
fn rotated_name(log: &Path, at: jiff::Timestamp) -> PathBuf {
    let stamp = at.strftime("%Y%m%d-%H%M%S");
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{stamp}"));
    PathBuf::from(name)
}

/// The rotated files of `log` (`<log>.*`), oldest first: their names sort by time.
fn rotated_files(log: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (Some(dir), Some(name)) = (log.parent(), log.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect();
    files.sort();
    Ok(files)
}

/// Steps 1 and 2: leftovers removed, then the oldest rotated files beyond
/// `max_files` − 2. Returns the rotated files left, oldest first.
fn tidy_rotated(log: &Path, max_files: usize) -> std::io::Result<Vec<PathBuf>> {
    let files = rotated_files(log)?;
    let mut kept = Vec::new();
    for file in &files {
        let compressed_copy = {
            let mut name = file.as_os_str().to_owned();
            name.push(GZ_SUFFIX);
            PathBuf::from(name)
        };
        if has_suffix(file, TMP_SUFFIX) || files.contains(&compressed_copy) {
            remove(file)?;
        } else {
            kept.push(file.clone());
        }
    }
    let excess = kept.len().saturating_sub(max_files.saturating_sub(2));
    for file in kept.drain(..excess) {
        remove(&file)?;
    }
    Ok(kept)
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Gzips `path` into `path.gz` (written aside first, so a crash leaves a `.tmp` the
/// next rotation removes) and removes `path`.
fn compress(path: &Path) -> std::io::Result<()> {
    let mut gz = path.as_os_str().to_owned();
    gz.push(GZ_SUFFIX);
    let mut aside = gz.clone();
    aside.push(TMP_SUFFIX);
    let (gz, aside) = (PathBuf::from(gz), PathBuf::from(aside));
    {
        let mut input = std::fs::File::open(path)?;
        let output = std::fs::File::create(&aside)?;
        let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
        std::io::copy(&mut input, &mut encoder)?;
        encoder.finish()?.flush()?;
    }
    std::fs::rename(&aside, &gz)?;
    std::fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn policy_needs_two_files_and_a_size() {
        assert!(RotationPolicy::new(1024, 1).is_err());
        assert!(RotationPolicy::new(0, 5).is_err());
        assert_eq!(
            RotationPolicy::new(1024, 2),
            Ok(RotationPolicy {
                max_bytes: 1024,
                max_files: 2
            })
        );
    }

    #[test]
    fn rotated_files_are_named_by_time() {
        let at: jiff::Timestamp = "2026-12-06T12:34:56.789Z".parse().expect("time");
        assert_eq!(
            rotated_name(Path::new("/var/log/pods/x/c/0.log"), at),
            Path::new("/var/log/pods/x/c/0.log.20261206-123456")
        );
    }

    #[test]
    fn tidying_removes_leftovers_then_the_oldest_beyond_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("0.log");
        for name in [
            "0.log",
            "1.log",
            "0.log.20261206-100000.gz",
            "0.log.20261206-100100.gz",
            "0.log.20261206-100200",
            "0.log.20261206-100200.gz",
            "0.log.20261206-100300.gz.tmp",
            "0.log.20261206-100400",
        ] {
            std::fs::write(dir.path().join(name), name).expect("write");
        }
        // 5 files at most: 3 rotated ones may stay.
        let kept = tidy_rotated(&log, 5).expect("tidy");
        assert_eq!(
            names(dir.path()),
            [
                "0.log",
                "0.log.20261206-100100.gz",
                "0.log.20261206-100200.gz",
                "0.log.20261206-100400",
                "1.log"
            ]
        );
        assert_eq!(kept.len(), 3);
        // 2 files at most: no rotated one stays before the next rotation.
        assert!(tidy_rotated(&log, 2).expect("tidy").is_empty());
        assert_eq!(names(dir.path()), ["0.log", "1.log"]);
    }

    #[test]
    fn compression_replaces_the_file_with_its_gzip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rotated = dir.path().join("0.log.20261206-100000");
        let text = "2026-12-06T10:00:00.000000000Z stdout F hello\n".repeat(100);
        std::fs::write(&rotated, &text).expect("write");
        compress(&rotated).expect("compress");
        assert_eq!(names(dir.path()), ["0.log.20261206-100000.gz"]);
        let mut back = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(dir.path().join("0.log.20261206-100000.gz")).expect("open"),
        )
        .read_to_string(&mut back)
        .expect("gunzip");
        assert_eq!(back, text);
    }
}
