//! Pods' cgroups, named as upstream's kubelet names them with the cgroupfs driver:
//! `<cgroup root>/kubepods/pod<uid>` for Guaranteed pods, `…/kubepods/burstable/pod<uid>`
//! and `…/kubepods/besteffort/pod<uid>` for the others. The kubelet gives each sandbox
//! its pod's cgroup as `cgroup_parent`, as upstream's does: a CRI runtime such as
//! containerd puts the sandbox and containers under it and reports their stats from it
//! (it reports none for a sandbox without one). The runtime's OCI runtime makes the
//! directories; the kubelet removes the pod's once its sandboxes are gone.

use std::path::Path;

/// Where cgroup hierarchies are mounted (cgroups v1, one directory per controller, or
/// the v2 hierarchy).
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// The QoS classes' parts of the path, the Guaranteed class's being none.
fn qos_dir(qos_class: &str) -> Option<&'static str> {
    match qos_class {
        "Guaranteed" => None,
        "Burstable" => Some("burstable"),
        _ => Some("besteffort"),
    }
}

/// The cgroup of the pod `uid` of `qos_class`, under `root` (upstream's `--cgroup-root`).
pub fn pod_cgroup(root: &str, qos_class: &str, uid: &str) -> String {
    let mut path = format!("{}/kubepods", root.trim_end_matches('/'));
    if let Some(qos) = qos_dir(qos_class) {
        path = format!("{path}/{qos}");
    }
    format!("{path}/pod{uid}")
}

/// Removes the cgroup of the pod `uid` (whichever QoS class it had) from every
/// hierarchy, with what the runtime left below it (its containers' cgroups), deepest
/// first. A cgroup that still holds processes stays (and is logged).
pub fn remove_pod_cgroup(root: &str, uid: &str) {
    remove_pod_cgroup_under(Path::new(CGROUP_MOUNT), root, uid);
}

fn remove_pod_cgroup_under(mount: &Path, root: &str, uid: &str) {
    let Ok(hierarchies) = std::fs::read_dir(mount) else {
        return;
    };
    let paths: Vec<String> = ["Guaranteed", "Burstable", "BestEffort"]
        .iter()
        .map(|qos| pod_cgroup(root, qos, uid))
        .collect();
    for hierarchy in hierarchies.flatten() {
        for path in &paths {
            let top = hierarchy.path().join(path.trim_start_matches('/'));
            let mut dirs = Vec::new();
            let mut stack = vec![top];
            while let Some(dir) = stack.pop() {
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                    dirs.push(dir);
                }
            }
            for dir in dirs.iter().rev() {
                if let Err(e) = std::fs::remove_dir(dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a pod's cgroup");
                }
            }
        }
    }
}

/// How many processes (threads, as the pids controller counts them) run in the cgroup
/// at `path`, from the pids controller's hierarchy (cgroups v1) or the unified one.
pub fn process_count(path: &str) -> Option<u64> {
    let relative = path.trim_start_matches('/');
    ["pids", ""].iter().find_map(|hierarchy| {
        let file = Path::new(CGROUP_MOUNT)
            .join(hierarchy)
            .join(relative)
            .join("pids.current");
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pod_cgroups_by_qos_class() {
        assert_eq!(pod_cgroup("/", "Guaranteed", "u1"), "/kubepods/podu1");
        assert_eq!(
            pod_cgroup("/", "Burstable", "u1"),
            "/kubepods/burstable/podu1"
        );
        assert_eq!(
            pod_cgroup("/skiff-x/node-1/", "BestEffort", "u1"),
            "/skiff-x/node-1/kubepods/besteffort/podu1"
        );
    }

    #[test]
    fn removes_the_pods_cgroup_in_every_hierarchy() {
        let mount = tempfile::tempdir().expect("temp dir");
        for hierarchy in ["cpu", "memory"] {
            std::fs::create_dir_all(
                mount
                    .path()
                    .join(hierarchy)
                    .join("kubepods/burstable/podu1/container-1"),
            )
            .expect("cgroup dirs");
        }
        std::fs::create_dir_all(mount.path().join("memory/kubepods/burstable/podu2"))
            .expect("another pod's");
        remove_pod_cgroup_under(mount.path(), "/", "u1");
        for hierarchy in ["cpu", "memory"] {
            let qos = mount.path().join(hierarchy).join("kubepods/burstable");
            assert!(qos.exists(), "the QoS class's cgroup stays");
            assert!(!qos.join("podu1").exists());
        }
        assert!(mount
            .path()
            .join("memory/kubepods/burstable/podu2")
            .exists());
    }
}
