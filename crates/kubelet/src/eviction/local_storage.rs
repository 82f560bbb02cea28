//! Local ephemeral storage limits, which upstream's eviction manager enforces on every
//! pass whatever the node's thresholds: a disk `emptyDir` used beyond its `sizeLimit`,
//! a container's writable layer and logs beyond its `ephemeral-storage` limit, or a
//! pod's containers, logs and disk `emptyDir`s beyond the sum of its containers'
//! limits get the pod evicted.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

/// Bytes of disk the files under `path` take (their allocated blocks, as `du` counts
/// them); nothing for a path that is not there.
pub fn disk_usage(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        total += metadata.blocks() * 512;
        if metadata.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

fn bytes(quantity: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<u64> {
    skiff_quantity::parse_value(&quantity.0)
        .ok()
        .and_then(|v| u64::try_from(v).ok())
}

/// Whether the pod sets any limit [`exceeded`] checks: only such pods are measured.
pub fn has_limits(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let sized_empty_dir = spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.empty_dir.as_ref().is_some_and(|e| e.size_limit.is_some()));
    let limited_container = spec.containers.iter().any(|c| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some_and(|l| l.contains_key("ephemeral-storage"))
    });
    sized_empty_dir || limited_container
}

/// What a pod uses of local storage, measured by the caller.
pub struct Usage<'a> {
    /// Per disk `emptyDir` volume name.
    pub empty_dirs: &'a HashMap<String, u64>,
    /// Per container name: writable layer and logs.
    pub containers: &'a HashMap<String, u64>,
}

/// Upstream's message for the first limit the pod exceeds, if it exceeds one: its
/// `emptyDir`s, then the pod's total, then each container.
pub fn exceeded(pod: &Pod, usage: &Usage) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    for volume in spec.volumes.iter().flatten() {
        let Some(empty_dir) = &volume.empty_dir else {
            continue;
        };
        let Some(limit) = empty_dir.size_limit.as_ref() else {
            continue;
        };
        let used = usage.empty_dirs.get(&volume.name).copied().unwrap_or(0);
        if bytes(limit).is_some_and(|limit| limit > 0 && used > limit) {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                volume.name, limit.0
            ));
        }
    }
    let limit = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("ephemeral-storage"))
            .and_then(bytes)
    };
    let limits: Vec<u64> = spec.containers.iter().filter_map(limit).collect();
    if !limits.is_empty() {
        let pod_limit: u64 = limits.iter().sum();
        let used: u64 =
            usage.empty_dirs.values().sum::<u64>() + usage.containers.values().sum::<u64>();
        if used > pod_limit {
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                skiff_quantity::format_binary(i64::try_from(pod_limit).unwrap_or(i64::MAX))
            ));
        }
    }
    for container in &spec.containers {
        let Some(limit) = limit(container).filter(|l| *l > 0) else {
            continue;
        };
        if usage.containers.get(&container.name).copied().unwrap_or(0) > limit {
            let written = container
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get("ephemeral-storage"))
                .map(|q| q.0.clone())
                .unwrap_or_default();
            return Some(format!(
                "Container {} exceeded its local ephemeral storage limit {written:?}. ",
                container.name
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap_or_default()
    }

    const POD: &str = r#"
metadata: {name: p, uid: u}
spec:
  containers:
  - name: a
    resources: {limits: {ephemeral-storage: 10Mi}}
  - name: b
    resources: {limits: {ephemeral-storage: 20Mi}}
  volumes:
  - name: scratch
    emptyDir: {sizeLimit: 1Mi}
  - name: unbounded
    emptyDir: {}
"#;

    #[test]
    fn only_pods_with_limits_are_measured() {
        assert!(has_limits(&pod(POD)));
        assert!(!has_limits(&pod(
            "metadata: {name: p}\nspec:\n  containers: [{name: a}]\n  volumes: [{name: v, emptyDir: {}}]"
        )));
    }

    #[test]
    fn limits_are_checked_in_upstreams_order_with_its_messages() {
        let pod = pod(POD);
        let mib = 1 << 20;
        let check = |empty_dirs: &[(&str, u64)], containers: &[(&str, u64)]| {
            let empty_dirs = empty_dirs
                .iter()
                .map(|(n, u)| (n.to_string(), *u))
                .collect();
            let containers = containers
                .iter()
                .map(|(n, u)| (n.to_string(), *u))
                .collect();
            exceeded(
                &pod,
                &Usage {
                    empty_dirs: &empty_dirs,
                    containers: &containers,
                },
            )
        };
        assert_eq!(
            check(&[("scratch", mib), ("unbounded", 5 * mib)], &[("a", mib)]),
            None
        );
        assert_eq!(
            check(&[("scratch", mib + 1)], &[]).as_deref(),
            Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"1Mi\". ")
        );
        assert_eq!(
            check(&[("unbounded", 25 * mib)], &[("b", 6 * mib)]).as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 30Mi. ")
        );
        assert_eq!(
            check(&[], &[("a", 11 * mib), ("b", mib)]).as_deref(),
            Some("Container a exceeded its local ephemeral storage limit \"10Mi\". ")
        );
    }

    #[test]
    fn disk_usage_counts_allocated_blocks_below_a_directory() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(disk_usage(&dir.path().join("missing")) == 0);
        let nested = dir.path().join("a/b");
        std::fs::create_dir_all(&nested).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(nested.join("f"), vec![1u8; 1 << 20]).unwrap_or_else(|e| panic!("{e}"));
        let used = disk_usage(dir.path());
        assert!((1 << 20..(1 << 20) + (64 << 10)).contains(&used), "{used}");
    }
}
