//! Resource usage of containers and sandboxes, read from their cgroups (the v1
//! hierarchies this machine has): what the CRI stats RPCs report and the kubelet's
//! summary and `kubectl top` are built on.
//!
//! CPU comes as the cumulative `cpuacct.usage`; the rate (`usage_nano_cores`) is taken
//! against the previous sample of the same cgroup, as containerd does, so the first
//! reading of a cgroup has none.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use super::Runtime;
use crate::sys::CGROUP_ROOT;

/// One reading of a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Unix nanoseconds.
    pub timestamp: i64,
    pub cpu_core_nanoseconds: u64,
    /// CPU use since the previous reading of this cgroup, in billionths of a core.
    pub cpu_nano_cores: Option<u64>,
    pub memory_usage_bytes: u64,
    /// Usage less inactive file pages: what the kubelet evicts on and `kubectl top`
    /// shows.
    pub memory_working_set_bytes: u64,
    pub memory_rss_bytes: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

/// The previous CPU sample of each cgroup read, for rates.
#[derive(Default)]
pub struct CpuSamples(Mutex<HashMap<String, (i64, u64)>>);

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// What a v1 memory cgroup reports as its limit when it has none (the largest page
/// multiple below `i64::MAX`); anything at least this large is "no limit".
const UNLIMITED_MEMORY: u64 = 0x7FFF_FFFF_FFFF_F000;

/// The limits a container's cgroup enforces now (CPU shares, CFS quota and period,
/// memory limit), as CRI `ContainerStatus` reports them; a field without a limit is 0.
/// `None` when the cgroup is gone.
pub fn cgroup_limits(cgroups_path: &str) -> Option<crate::proto::LinuxContainerResources> {
    let relative = cgroups_path.trim_start_matches('/');
    let root = Path::new(CGROUP_ROOT);
    let cpu = root.join("cpu").join(relative);
    let signed = |file: &str| -> Option<i64> {
        std::fs::read_to_string(cpu.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let shares = signed("cpu.shares")?;
    let quota = signed("cpu.cfs_quota_us").unwrap_or(-1).max(0);
    let memory = read_number(
        &root
            .join("memory")
            .join(relative)
            .join("memory.limit_in_bytes"),
    )
    .filter(|m| *m < UNLIMITED_MEMORY)
    .unwrap_or(0);
    Some(crate::proto::LinuxContainerResources {
        cpu_shares: shares,
        cpu_quota: quota,
        cpu_period: if quota > 0 {
            signed("cpu.cfs_period_us").unwrap_or(0)
        } else {
            0
        },
        memory_limit_in_bytes: memory as i64,
        ..Default::default()
    })
}

/// The fields of a v1 `memory.stat`.
fn memory_stat(dir: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(dir.join("memory.stat"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The working set as the kubelet (cAdvisor) computes it: usage less inactive file
/// pages, never below zero.
pub fn working_set(usage: u64, stat: &HashMap<String, u64>) -> u64 {
    usage.saturating_sub(stat.get("total_inactive_file").copied().unwrap_or(0))
}

/// CPU rate between two cumulative samples `(unix nanos, core nanoseconds)`.
pub fn nano_cores(previous: (i64, u64), now: (i64, u64)) -> Option<u64> {
    let elapsed = now.0.checked_sub(previous.0).filter(|e| *e > 0)? as u128;
    let used = now.1.checked_sub(previous.1)? as u128;
    Some((used * 1_000_000_000 / elapsed) as u64)
}

impl CpuSamples {
    /// Reads the cgroup at `path` (as in an OCI `cgroupsPath`); `None` when it is gone.
    pub fn read(&self, path: &str) -> Option<Usage> {
        let relative = path.trim_start_matches('/');
        let root = Path::new(CGROUP_ROOT);
        let cpu = read_number(&root.join("cpuacct").join(relative).join("cpuacct.usage"))?;
        let memory_dir = root.join("memory").join(relative);
        let memory = read_number(&memory_dir.join("memory.usage_in_bytes")).unwrap_or(0);
        let stat = memory_stat(&memory_dir);
        let timestamp = crate::shim::now_nanos();
        let previous = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(relative.to_string(), (timestamp, cpu));
        Some(Usage {
            timestamp,
            cpu_core_nanoseconds: cpu,
            cpu_nano_cores: previous.and_then(|p| nano_cores(p, (timestamp, cpu))),
            memory_usage_bytes: memory,
            memory_working_set_bytes: working_set(memory, &stat),
            memory_rss_bytes: stat.get("total_rss").copied().unwrap_or(0),
            page_faults: stat.get("total_pgfault").copied().unwrap_or(0),
            major_page_faults: stat.get("total_pgmajfault").copied().unwrap_or(0),
        })
    }

    /// Forgets a cgroup that is gone.
    pub fn forget(&self, path: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path.trim_start_matches('/'));
    }
}

/// Bytes and inodes used under `dir` (a container's writable layer), not following
/// links or crossing into other file systems' mounts.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let device = top.dev();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != device {
                continue;
            }
            inodes += 1;
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    (bytes, inodes)
}

impl Runtime {
    /// The usage of a container's cgroup and the size of its writable layer.
    pub fn container_usage(&self, cgroups_path: &str, id: &str) -> Option<(Usage, (u64, u64))> {
        let usage = self.cpu_samples.read(cgroups_path)?;
        Some((usage, disk_usage(&self.container_dir(id).join("upper"))))
    }

    /// The usage of a sandbox's (pod-level) cgroup.
    pub fn sandbox_usage(&self, cgroup_parent: &str) -> Option<Usage> {
        if cgroup_parent.trim_matches('/').is_empty() {
            return None;
        }
        self.cpu_samples.read(cgroup_parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_working_set() {
        assert_eq!(
            nano_cores((0, 0), (1_000_000_000, 500_000_000)),
            Some(500_000_000)
        );
        assert_eq!(nano_cores((10, 5), (10, 9)), None, "no time passed");
        assert_eq!(nano_cores((0, 9), (10, 5)), None, "counter went back");
        let stat = HashMap::from([("total_inactive_file".to_string(), 300)]);
        assert_eq!(working_set(1000, &stat), 700);
        assert_eq!(working_set(100, &stat), 0);
    }

    #[test]
    fn disk_usage_counts_files_and_directories() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("d")).expect("mkdir");
        std::fs::write(dir.path().join("d/f"), vec![1u8; 10_000]).expect("write");
        let (bytes, inodes) = disk_usage(dir.path());
        assert_eq!(inodes, 2);
        assert!(bytes >= 10_000, "{bytes}");
    }
}
