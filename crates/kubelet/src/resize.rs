//! In-place pod resize, the kubelet's side (upstream's allocation manager and
//! `doPodResizeAction`): what the kubelet has *allocated* to each container may trail
//! the spec (`pods/resize` changes the spec); a new allocation is admitted only if the
//! node can hold it (else `PodResizePending`, `Infeasible` or `Deferred`), and running
//! containers are brought to their allocation through CRI `UpdateContainerResources`
//! (or restarted, where `resizePolicy` says `RestartContainer`); while a running
//! container's cgroup differs from its allocation the resize is `PodResizeInProgress`.
//! Pure, so the rules are unit-tested, but for the allocation's checkpoint in the pod's
//! directory ([`save`], [`load`]), which lets a restarted kubelet carry on; the pod
//! worker does the rest of the I/O.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_runtime::proto;

/// The limits a container's cgroup enforces (or should): CRI's CPU shares, CFS quota
/// and period, memory limit; 0 where there is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub cpu_shares: i64,
    pub cpu_quota: i64,
    pub cpu_period: i64,
    pub memory_limit: i64,
}

impl CgroupLimits {
    pub fn of(r: &proto::LinuxContainerResources) -> CgroupLimits {
        CgroupLimits {
            cpu_shares: r.cpu_shares,
            cpu_quota: r.cpu_quota,
            // A period without a quota limits nothing.
            cpu_period: if r.cpu_quota > 0 { r.cpu_period } else { 0 },
            memory_limit: r.memory_limit_in_bytes,
        }
    }

    fn cpu(&self) -> (i64, i64, i64) {
        (self.cpu_shares, self.cpu_quota, self.cpu_period)
    }

    /// Whether a cgroup holding these limits enforces `expected`: the same CPU values,
    /// and the memory limit asked for, or what the kernel makes of it (see
    /// [`memory_holds`]).
    pub fn enforces(&self, expected: &CgroupLimits) -> bool {
        self.cpu() == expected.cpu() && memory_holds(self.memory_limit, expected.memory_limit)
    }
}

/// The unit the kernel keeps a v1 memory limit in.
const PAGE: i64 = 4096;

/// Whether a container's memory limit, as its runtime reports it, is what setting
/// `expected` makes of it: a runtime reading the cgroup (Skiff's) finds the limit
/// rounded down to whole pages, one reporting what it applied (containerd 1.6.9+,
/// from the container's spec) the limit asked for.
fn memory_holds(actual: i64, expected: i64) -> bool {
    actual == expected || actual == expected / PAGE * PAGE
}

/// What the kubelet has allocated to one container: its resources, and the cgroup
/// limits they come to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allocation {
    pub resources: ResourceRequirements,
    pub expected: CgroupLimits,
}

/// Why a resize waits: the `PodResizePending` condition's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub reason: &'static str,
    pub message: String,
}

/// What the pod worker knows of a resize beyond its containers' cgroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResizeView {
    pub pending: Option<Pending>,
    /// Why actuating failed (the `PodResizeInProgress` condition's `Error` message).
    pub error: Option<String>,
}

fn quantity(list: &Option<BTreeMap<String, Quantity>>, name: &str) -> Option<i64> {
    let q = list.as_ref()?.get(name)?;
    if name == "cpu" {
        skiff_quantity::parse_milli(&q.0).ok()
    } else {
        skiff_quantity::parse_value(&q.0).ok()
    }
}

/// A container's (cpu millicores, memory bytes) requests; a missing request is its
/// limit, as API defaulting makes it.
pub fn requests(r: &ResourceRequirements) -> (i64, i64) {
    let get = |name| {
        quantity(&r.requests, name)
            .or_else(|| quantity(&r.limits, name))
            .unwrap_or(0)
    };
    (get("cpu"), get("memory"))
}

/// What the kubelet has allocated to a pod's containers (app and init), by name.
pub type Allocated = HashMap<String, ResourceRequirements>;

/// The allocation's checkpoint in the pod's directory (which goes with the pod).
const CHECKPOINT: &str = "allocated-resources.json";

/// Keeps the allocation, replacing the checkpoint whole (written aside, then renamed).
pub fn save(pod_dir: &Path, allocated: &Allocated) -> std::io::Result<()> {
    std::fs::create_dir_all(pod_dir)?;
    let aside = pod_dir.join(format!("{CHECKPOINT}.tmp"));
    std::fs::write(&aside, serde_json::to_vec(allocated)?)?;
    std::fs::rename(&aside, pod_dir.join(CHECKPOINT))
}

/// The allocation an earlier kubelet kept, if any (and readable).
pub fn load(pod_dir: &Path) -> Option<Allocated> {
    let data = std::fs::read(pod_dir.join(CHECKPOINT)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// The pod's (cpu millicores, memory bytes) requests under `allocated`: its app
/// containers' and the sidecars running beside them.
pub fn pod_requests(spec: &PodSpec, allocated: &Allocated) -> (i64, i64) {
    spec.containers
        .iter()
        .chain(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always")),
        )
        .filter_map(|c| allocated.get(&c.name))
        .map(requests)
        .fold((0, 0), |t, r| (t.0 + r.0, t.1 + r.1))
}

/// Whether two resource requirements are one (quantities compared by amount, so
/// `0.1` is `100m`).
pub fn same(a: &ResourceRequirements, b: &ResourceRequirements) -> bool {
    let same_list = |x: &Option<BTreeMap<String, Quantity>>,
                     y: &Option<BTreeMap<String, Quantity>>| {
        let keys = |l: &Option<BTreeMap<String, Quantity>>| {
            l.iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()
        };
        keys(x) == keys(y)
            && x.iter()
                .flatten()
                .all(|(k, v)| match (quantity(x, k), quantity(y, k)) {
                    (Some(p), Some(q)) => p == q,
                    _ => y.as_ref().and_then(|y| y.get(k)) == Some(v),
                })
    };
    same_list(&a.requests, &b.requests) && same_list(&a.limits, &b.limits)
}

/// Whether the node can hold the pod's new requests (`wanted`, summed over its
/// containers) beside what its other pods hold (`others`): `None` if so, else why
/// not — `Infeasible` when the node could never, `Deferred` when others are in the way.
pub fn admit(wanted: (i64, i64), others: (i64, i64), allocatable: (i64, i64)) -> Option<Pending> {
    let named = [
        ("cpu", wanted.0, others.0, allocatable.0),
        ("memory", wanted.1, others.1, allocatable.1),
    ];
    // Upstream names memory first when both are short.
    if let Some((name, want, _, cap)) = named.iter().rev().find(|(_, w, _, c)| w > c) {
        return Some(Pending {
            reason: "Infeasible",
            message: format!(
                "Node didn't have enough capacity: {name}, requested: {want}, capacity: {cap}"
            ),
        });
    }
    named
        .iter()
        .find(|(_, w, used, c)| w + used > *c)
        .map(|(name, want, used, cap)| Pending {
            reason: "Deferred",
            message: format!(
                "Node didn't have enough resource: {name}, requested: {want}, used: {used}, capacity: {cap}"
            ),
        })
}

/// Whether bringing a running container from `actual` to `expected` means restarting
/// it: a changed resource whose `resizePolicy` is `RestartContainer`.
pub fn needs_restart(c: &Container, actual: &CgroupLimits, expected: &CgroupLimits) -> bool {
    let restarts = |resource: &str| {
        c.resize_policy
            .iter()
            .flatten()
            .any(|p| p.resource_name == resource && p.restart_policy == "RestartContainer")
    };
    (actual.cpu() != expected.cpu() && restarts("cpu"))
        || (!memory_holds(actual.memory_limit, expected.memory_limit) && restarts("memory"))
}

/// Whether lowering a container's memory limit to `expected` needs its usage checked
/// first (a limit added is lowered from none).
pub fn lowers_memory(actual: &CgroupLimits, expected: &CgroupLimits) -> bool {
    expected.memory_limit > 0
        && (actual.memory_limit == 0 || expected.memory_limit < actual.memory_limit)
}

/// Why a container's memory limit may not go down to `limit` while it uses `usage`
/// bytes (the kernel could not reclaim the difference): upstream's refusal, which the
/// `PodResizeInProgress` condition then carries as an `Error`.
pub fn below_usage(container: &str, limit: i64, usage: u64) -> Option<String> {
    (usage > limit.max(0) as u64).then(|| {
        format!(
            "attempting to set container {container:?} memory limit ({limit}) below current usage ({usage})"
        )
    })
}

/// What a running container's status reports as its `resources`: its allocation once
/// the cgroup enforces it; while it does not, the allocated requests with the limits
/// the cgroup enforces now (as upstream reads them back from the runtime).
pub fn reported(
    allocated: &ResourceRequirements,
    actual: &CgroupLimits,
    expected: &CgroupLimits,
) -> ResourceRequirements {
    if actual.enforces(expected) {
        return allocated.clone();
    }
    let mut limits = allocated.limits.clone().unwrap_or_default();
    if actual.cpu_quota > 0 && actual.cpu_period > 0 {
        let milli = actual.cpu_quota * 1000 / actual.cpu_period;
        limits.insert("cpu".into(), Quantity(skiff_quantity::format_milli(milli)));
    }
    if actual.memory_limit > 0 {
        limits.insert(
            "memory".into(),
            Quantity(skiff_quantity::format_binary(actual.memory_limit)),
        );
    }
    ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        requests: allocated.requests.clone(),
        ..Default::default()
    }
}

/// What `allocatedResources` reports: the allocated requests.
pub fn allocated_resources(allocated: &ResourceRequirements) -> Option<BTreeMap<String, Quantity>> {
    allocated.requests.clone().filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerResizePolicy;

    fn req(cpu: &str, mem: &str, cpu_limit: Option<&str>) -> ResourceRequirements {
        let list = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        ResourceRequirements {
            requests: list(&[("cpu", cpu), ("memory", mem)]),
            limits: cpu_limit.and_then(|l| list(&[("cpu", l)])),
            ..Default::default()
        }
    }

    #[test]
    fn requests_default_to_limits_and_compare_by_amount() {
        let only_limit = ResourceRequirements {
            limits: Some([("cpu".to_string(), Quantity("500m".into()))].into()),
            ..Default::default()
        };
        assert_eq!(requests(&only_limit), (500, 0));
        assert_eq!(requests(&req("0.1", "1Mi", None)), (100, 1 << 20));
        assert!(same(
            &req("0.1", "1Mi", None),
            &req("100m", "1048576", None)
        ));
        assert!(!same(
            &req("100m", "1Mi", None),
            &req("100m", "1Mi", Some("200m"))
        ));
        assert!(!same(&req("100m", "1Mi", None), &req("101m", "1Mi", None)));
    }

    #[test]
    fn too_big_for_the_node_is_infeasible_and_too_big_beside_others_deferred() {
        let cap = (2000, 4 << 30);
        assert_eq!(admit((1500, 1 << 30), (400, 1 << 30), cap), None);
        assert_eq!(
            admit((3000, 1 << 30), (0, 0), cap),
            Some(Pending {
                reason: "Infeasible",
                message: "Node didn't have enough capacity: cpu, requested: 3000, capacity: 2000"
                    .into()
            })
        );
        assert_eq!(
            admit((3000, 8 << 30), (0, 0), cap).map(|p| p.message),
            Some(format!(
                "Node didn't have enough capacity: memory, requested: {}, capacity: {}",
                8u64 << 30,
                4u64 << 30
            ))
        );
        assert_eq!(
            admit((1500, 1 << 30), (1000, 0), cap),
            Some(Pending {
                reason: "Deferred",
                message: "Node didn't have enough resource: cpu, requested: 1500, used: 1000, capacity: 2000".into()
            })
        );
    }

    #[test]
    fn restart_only_for_a_changed_resource_whose_policy_says_so() {
        let policy = |cpu: &str, mem: &str| Container {
            resize_policy: Some(vec![
                ContainerResizePolicy {
                    resource_name: "cpu".into(),
                    restart_policy: cpu.into(),
                },
                ContainerResizePolicy {
                    resource_name: "memory".into(),
                    restart_policy: mem.into(),
                },
            ]),
            ..Default::default()
        };
        let now = CgroupLimits {
            cpu_shares: 20,
            cpu_quota: 2000,
            cpu_period: 100_000,
            memory_limit: 35 << 20,
        };
        let more_cpu = CgroupLimits {
            cpu_shares: 25,
            cpu_quota: 2500,
            ..now
        };
        assert!(needs_restart(
            &policy("RestartContainer", "NotRequired"),
            &now,
            &more_cpu
        ));
        assert!(!needs_restart(
            &policy("NotRequired", "RestartContainer"),
            &now,
            &more_cpu
        ));
        assert!(!needs_restart(&Container::default(), &now, &more_cpu));
        let more_memory = CgroupLimits {
            memory_limit: 40 << 20,
            ..now
        };
        assert!(needs_restart(
            &policy("NotRequired", "RestartContainer"),
            &now,
            &more_memory
        ));
    }

    #[test]
    fn status_shows_the_allocation_once_enforced_else_what_is_enforced() {
        let allocated = req("1m", "", Some("5m"));
        // 5m and 10m both come to the smallest CFS quota: the allocation is enforced.
        let enforced = CgroupLimits {
            cpu_shares: 2,
            cpu_quota: 1000,
            cpu_period: 100_000,
            memory_limit: 0,
        };
        assert_eq!(reported(&allocated, &enforced, &enforced), allocated);
        let old = CgroupLimits {
            cpu_shares: 2,
            cpu_quota: 3000,
            ..enforced
        };
        let shown = reported(&allocated, &old, &enforced);
        assert_eq!(shown.requests, allocated.requests);
        assert_eq!(
            shown.limits.and_then(|l| l.get("cpu").cloned()),
            Some(Quantity("30m".into()))
        );
    }

    #[test]
    fn the_allocation_survives_in_the_pod_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod_dir = dir.path().join("pods").join("uid");
        assert!(load(&pod_dir).is_none());
        let allocated: Allocated = [
            ("app".to_string(), req("100m", "64Mi", Some("200m"))),
            ("init".to_string(), req("1", "", None)),
            ("sidecar".to_string(), req("50m", "32Mi", None)),
        ]
        .into();
        save(&pod_dir, &allocated).expect("save");
        let back = load(&pod_dir).expect("load");
        assert!(allocated
            .iter()
            .all(|(name, r)| back.get(name).is_some_and(|b| same(b, r))));
        // The init container has finished; the sidecar runs beside the app.
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [{"name": "app"}],
            "initContainers": [{"name": "init"}, {"name": "sidecar", "restartPolicy": "Always"}]
        }))
        .expect("spec");
        assert_eq!(pod_requests(&spec, &back), (150, 96 << 20));
    }

    #[test]
    fn a_memory_limit_is_enforced_in_whole_pages() {
        let expected = CgroupLimits {
            cpu_shares: 102,
            memory_limit: 100_000_000,
            ..Default::default()
        };
        let kernel = CgroupLimits {
            memory_limit: 100_000_000 / 4096 * 4096,
            ..expected
        };
        assert!(kernel.enforces(&expected));
        // containerd reports the limit it was asked to apply, not the kernel's.
        assert!(expected.enforces(&expected));
        let old = CgroupLimits {
            memory_limit: 64 << 20,
            ..expected
        };
        assert!(!old.enforces(&expected));
        let other_shares = CgroupLimits {
            cpu_shares: 51,
            ..kernel
        };
        assert!(!other_shares.enforces(&expected));
    }

    #[test]
    fn a_memory_limit_goes_below_what_is_used_never() {
        let at = |memory_limit| CgroupLimits {
            memory_limit,
            ..Default::default()
        };
        assert!(lowers_memory(&at(64 << 20), &at(32 << 20)));
        assert!(lowers_memory(&at(0), &at(32 << 20)));
        assert!(!lowers_memory(&at(32 << 20), &at(64 << 20)));
        assert!(!lowers_memory(&at(32 << 20), &at(0)));
        assert_eq!(below_usage("c", 10240, 9000), None);
        assert_eq!(
            below_usage("c", 10240, 300_000).as_deref(),
            Some("attempting to set container \"c\" memory limit (10240) below current usage (300000)")
        );
    }
}
