//! In-place pod resize, the kubelet's side (upstream's allocation manager and
//! `doPodResizeAction`): what the kubelet has *allocated* to each container may trail
//! the spec (`pods/resize` changes the spec); a new allocation is admitted only if the
//! node can hold it (else `PodResizePending`, `Infeasible` or `Deferred`), and running
//! containers are brought to their allocation through CRI `UpdateContainerResources`
//! (or restarted, where `resizePolicy` says `RestartContainer`); while a running
//! container does not hold its allocation the resize is `PodResizeInProgress`.
//!
//! What a container holds ([`Current`]) is what its runtime reports in
//! `ContainerStatus.resources` when it reports that (Skiff's reads the cgroup back;
//! containerd 1.6.9+ gives what it applied, from the container's spec), and otherwise
//! what the kubelet itself *actuated* last (at the container's creation, and by each
//! successful update; upstream's kubelet keeps that record since 1.33), all there is on
//! runtimes that report nothing (containerd before 1.6.9, cri-dockerd).
//!
//! Pure, so the rules are unit-tested, but for the checkpoints of the allocation and of
//! what was actuated in the pod's directory ([`save`], [`load`]), which let a restarted
//! kubelet carry on; the pod worker does the rest of the I/O.

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

/// Resources the kubelet gave one container (allocated to it, or actuated on it), and
/// the cgroup limits they come to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allocation {
    pub resources: ResourceRequirements,
    pub expected: CgroupLimits,
}

/// What a running container holds now, as far as the kubelet can tell.
#[derive(Debug, Clone, PartialEq)]
pub enum Current {
    /// The limits its runtime reports.
    Reported(CgroupLimits),
    /// What the kubelet actuated last, for a runtime that reports no resources.
    Actuated(Allocation),
    /// Neither: a container an earlier kubelet started without keeping a record.
    Unknown,
}

impl Current {
    /// The runtime's report when it gives one: it comes from the cgroup, or from what
    /// the runtime applied, which the kubelet's record can only trail (a container
    /// the runtime updated after a kubelet failed to record it, say).
    pub fn of(reported: Option<CgroupLimits>, actuated: Option<&Allocation>) -> Current {
        match (reported, actuated) {
            (Some(limits), _) => Current::Reported(limits),
            (None, Some(a)) => Current::Actuated(a.clone()),
            (None, None) => Current::Unknown,
        }
    }

    /// The cgroup limits the container holds, when known.
    pub fn limits(&self) -> Option<CgroupLimits> {
        match self {
            Current::Reported(limits) => Some(*limits),
            Current::Actuated(a) => Some(a.expected),
            Current::Unknown => None,
        }
    }

    /// Whether the container holds `allocation`: its cgroup enforces it, as reported;
    /// or what was actuated is that allocation. A record compares resources, not the
    /// limits they come to, so that a resize between values the cgroup holds alike
    /// (`2m` and `1m` are both the least CPU shares) is only done once recorded: the
    /// status reports the record.
    pub fn holds(&self, allocation: &Allocation) -> bool {
        match self {
            Current::Reported(limits) => limits.enforces(&allocation.expected),
            Current::Actuated(a) => same(&a.resources, &allocation.resources),
            Current::Unknown => false,
        }
    }

    /// What the container's status reports as its `resources`: see [`reported`] for
    /// a runtime's report; else what was actuated; else, with nothing known, the
    /// allocation (as upstream defaults it).
    pub fn reported(&self, allocation: &Allocation) -> ResourceRequirements {
        match self {
            Current::Reported(limits) => {
                reported(&allocation.resources, limits, &allocation.expected)
            }
            Current::Actuated(a) => a.resources.clone(),
            Current::Unknown => allocation.resources.clone(),
        }
    }
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

/// Resources by container name: what the kubelet has allocated to a pod's containers
/// (app and init), or what it has actuated on them.
pub type Allocated = HashMap<String, ResourceRequirements>;

/// The checkpoints kept in the pod's directory (which goes with the pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// What the node admitted for each container.
    Allocated,
    /// What the kubelet last applied to each container: the runtime took it at the
    /// container's creation or in an `UpdateContainerResources` that succeeded.
    Actuated,
}

impl Checkpoint {
    fn file(self) -> &'static str {
        match self {
            Checkpoint::Allocated => "allocated-resources.json",
            Checkpoint::Actuated => "actuated-resources.json",
        }
    }
}

/// Keeps a checkpoint, replacing it whole (written aside, then renamed).
pub fn save(pod_dir: &Path, checkpoint: Checkpoint, resources: &Allocated) -> std::io::Result<()> {
    std::fs::create_dir_all(pod_dir)?;
    let file = checkpoint.file();
    let aside = pod_dir.join(format!("{file}.tmp"));
    std::fs::write(&aside, serde_json::to_vec(resources)?)?;
    std::fs::rename(&aside, pod_dir.join(file))
}

/// The checkpoint an earlier kubelet kept, if any (and readable).
pub fn load(pod_dir: &Path, checkpoint: Checkpoint) -> Option<Allocated> {
    let data = std::fs::read(pod_dir.join(checkpoint.file())).ok()?;
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
        assert!(load(&pod_dir, Checkpoint::Allocated).is_none());
        let allocated: Allocated = [
            ("app".to_string(), req("100m", "64Mi", Some("200m"))),
            ("init".to_string(), req("1", "", None)),
            ("sidecar".to_string(), req("50m", "32Mi", None)),
        ]
        .into();
        save(&pod_dir, Checkpoint::Allocated, &allocated).expect("save");
        // What was actuated is kept beside the allocation, apart from it.
        assert!(load(&pod_dir, Checkpoint::Actuated).is_none());
        let actuated: Allocated = [("app".to_string(), req("50m", "64Mi", None))].into();
        save(&pod_dir, Checkpoint::Actuated, &actuated).expect("save");
        let back = load(&pod_dir, Checkpoint::Allocated).expect("load");
        assert!(allocated
            .iter()
            .all(|(name, r)| back.get(name).is_some_and(|b| same(b, r))));
        let app = &load(&pod_dir, Checkpoint::Actuated).expect("load")["app"];
        assert!(same(app, &actuated["app"]));
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

    #[test]
    fn without_a_reading_what_was_actuated_is_what_a_container_holds() {
        let limits = |shares, quota| CgroupLimits {
            cpu_shares: shares,
            cpu_quota: quota,
            cpu_period: 100_000,
            memory_limit: 0,
        };
        let given = |r: ResourceRequirements, expected| Allocation {
            resources: r,
            expected,
        };
        let allocation = given(req("1m", "", Some("5m")), limits(2, 1000));
        // The runtime's reading wins over the record.
        let old = given(req("2m", "", Some("10m")), limits(2, 1000));
        let read = Current::of(Some(limits(2, 1000)), Some(&old));
        assert_eq!(read.limits(), Some(limits(2, 1000)));
        assert!(read.holds(&allocation));
        assert_eq!(read.reported(&allocation), allocation.resources);
        // A record holds the allocation only once it is that allocation, even where
        // both come to the same cgroup; the status reports the record.
        let recorded = Current::of(None, Some(&old));
        assert_eq!(recorded.limits(), Some(limits(2, 1000)));
        assert!(!recorded.holds(&allocation));
        assert_eq!(recorded.reported(&allocation), old.resources);
        assert!(Current::of(None, Some(&allocation)).holds(&allocation));
        // Nothing known: not held (so it is updated), reported as allocated.
        let unknown = Current::of(None, None);
        assert_eq!(unknown.limits(), None);
        assert!(!unknown.holds(&allocation));
        assert_eq!(unknown.reported(&allocation), allocation.resources);
    }
}
