//! The Node object: registration, status and the heartbeat Lease.
//!
//! As upstream's kubelet with node leases: the Lease in `kube-node-lease` is
//! renewed every 10 s (40 s duration); the node status is computed every
//! 10 s and written when it changed, or at least every 5 minutes.
//!
//! The Node's `spec.podCIDR` (given by the node IPAM controller) goes to the runtime
//! through CRI `UpdateRuntimeConfig`, as upstream's kubelet sends it: the runtime's
//! pod network takes its addresses from that range ([`follow_pod_cidr`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::Notify;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::cri::Cri;
use crate::error::Result;

pub const KUBELET_VERSION: &str = "v1.37.0";
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Where nodes' heartbeat Leases live.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
pub const STATUS_UPDATE_FREQUENCY: Duration = Duration::from_secs(10);
pub const STATUS_REPORT_FREQUENCY: Duration = Duration::from_secs(300);
/// Upstream's default for the kubelet's HTTPS port (`--kubelet-port`).
pub const KUBELET_PORT: u16 = 10250;

/// What the node reports about itself.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub node_ip: String,
    pub max_pods: i64,
    /// Memory kept back from allocatable (upstream's default hard eviction
    /// threshold `memory.available<100Mi`).
    pub reserved_memory: i64,
    pub root_dir: std::path::PathBuf,
    pub labels: BTreeMap<String, String>,
    /// The port the kubelet's HTTPS server is bound to, for
    /// `status.daemonEndpoints` (the API server proxies `pods/log` there).
    pub kubelet_port: u16,
}

/// Facts read from the machine (`/proc`, `statvfs`).
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cpus: i64,
    pub memory_bytes: i64,
    pub ephemeral_bytes: i64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub system_uuid: String,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Machine {
    pub fn probe(root_dir: &std::path::Path) -> Machine {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as i64);
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_meminfo_total(&s))
            .unwrap_or(0);
        let ephemeral_bytes = nix::sys::statvfs::statvfs(root_dir)
            .or_else(|_| nix::sys::statvfs::statvfs("/"))
            .map(|s| s.blocks() as i64 * s.fragment_size() as i64)
            .unwrap_or(0);
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| parse_os_release(&s))
            .unwrap_or_else(|| "Linux".into());
        Machine {
            cpus,
            memory_bytes,
            ephemeral_bytes,
            kernel: read_trim("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read_trim("/etc/machine-id"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            system_uuid: read_trim("/sys/class/dmi/id/product_uuid"),
        }
    }
}

/// `MemTotal` in bytes.
pub fn parse_meminfo_total(s: &str) -> Option<i64> {
    s.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        .map(|kb| kb * 1024)
}

/// `PRETTY_NAME` of os-release.
pub fn parse_os_release(s: &str) -> Option<String> {
    s.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

/// Go's `GOARCH` name for this machine, as `kubernetes.io/arch` uses.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The host name as the kernel reports it, lowercased (upstream lowercases
/// node names).
pub fn hostname() -> String {
    read_trim("/proc/sys/kernel/hostname").to_lowercase()
}

fn condition(
    old: &[NodeCondition],
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) -> NodeCondition {
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| Some(now.clone()));
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time,
    }
}

/// The node status (pure). `runtime_problem` is why the runtime is not ready
/// (None when it is), shown in the Ready condition as upstream does.
pub fn node_status(
    cfg: &NodeConfig,
    m: &Machine,
    runtime_version: &str,
    runtime_problem: Option<&str>,
    pressure: crate::eviction::Pressure,
    old: Option<&NodeStatus>,
    now: jiff::Timestamp,
) -> NodeStatus {
    let now = Time(now.round(jiff::Unit::Second).unwrap_or(now));
    let old_conditions = old.and_then(|s| s.conditions.clone()).unwrap_or_default();
    let q = |s: String| Quantity(s);
    let capacity = BTreeMap::from([
        ("cpu".to_string(), q(m.cpus.to_string())),
        (
            "memory".to_string(),
            q(format!("{}Ki", m.memory_bytes / 1024)),
        ),
        ("pods".to_string(), q(cfg.max_pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            q(format!("{}Ki", m.ephemeral_bytes / 1024)),
        ),
        ("hugepages-2Mi".to_string(), q("0".into())),
    ]);
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "memory".into(),
        q(format!(
            "{}Ki",
            (m.memory_bytes - cfg.reserved_memory).max(0) / 1024
        )),
    );
    // Upstream's default hard eviction threshold nodefs.available<10%.
    allocatable.insert(
        "ephemeral-storage".into(),
        q(format!(
            "{}Ki",
            ((m.ephemeral_bytes as f64) * 0.9) as i64 / 1024
        )),
    );
    let (ready, ready_reason, ready_message) = match runtime_problem {
        None => (
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_string(),
        ),
        Some(p) => ("False", "KubeletNotReady", p.to_string()),
    };
    use crate::eviction::Condition;
    // Each pressure condition's (reason, message) when set and when clear.
    let pressures = [
        (
            Condition::MemoryPressure,
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        ),
        (
            Condition::DiskPressure,
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ),
        (
            Condition::PidPressure,
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ),
    ];
    let mut conditions: Vec<NodeCondition> = pressures
        .iter()
        .map(|(kind, set, clear)| {
            let (status, (reason, message)) = if pressure.has(*kind) {
                ("True", set)
            } else {
                ("False", clear)
            };
            condition(&old_conditions, kind.name(), status, reason, message, &now)
        })
        .collect();
    conditions.push(condition(
        &old_conditions,
        "Ready",
        ready,
        ready_reason,
        &ready_message,
        &now,
    ));
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.node_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(cfg.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().into(),
            boot_id: m.boot_id.clone(),
            container_runtime_version: runtime_version.into(),
            kernel_version: m.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: m.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: m.os_image.clone(),
            system_uuid: m.system_uuid.clone(),
            swap: None,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// True when two statuses differ in more than heartbeat times.
pub fn status_changed(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s.images = None;
        s
    };
    strip(a) != strip(b)
}

/// The labels a kubelet puts on its node.
pub fn node_labels(cfg: &NodeConfig) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), cfg.name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), go_arch().to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), go_arch().to_string()),
    ]);
    labels.extend(cfg.labels.clone());
    labels
}

/// A new heartbeat Lease for node `name` in `kube-node-lease`, owned by its Node (whose
/// `uid` is known once it is registered), as upstream's kubelet makes it.
pub fn node_lease(name: &str, uid: Option<String>, duration_seconds: i32, now: MicroTime) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(NODE_LEASE_NAMESPACE.into()),
            owner_references: uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.to_string(),
                    uid,
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.to_string()),
            lease_duration_seconds: Some(duration_seconds),
            renew_time: Some(now),
            ..Default::default()
        }),
    }
}

/// Runs the node's registration and heartbeats until cancelled.
pub struct NodeAgent {
    pub client: kube::Client,
    pub cfg: NodeConfig,
    pub cri: Cri,
    pub machine: Machine,
    pub runtime_version: String,
    /// The node's pressure conditions come from here (none without one).
    pub eviction: Option<std::sync::Arc<crate::eviction::EvictionManager>>,
}

impl NodeAgent {
    fn pressure(&self) -> crate::eviction::Pressure {
        self.eviction
            .as_ref()
            .map(|e| e.pressure())
            .unwrap_or_default()
    }

    /// Creates the Node, or updates the labels and status of an existing one.
    pub async fn register(&self) -> Result<Node> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = match nodes.get_opt(&self.cfg.name).await? {
            Some(n) => n,
            None => {
                let node = Node {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        labels: Some(node_labels(&self.cfg)),
                        annotations: Some(BTreeMap::from([(
                            "volumes.kubernetes.io/controller-managed-attach-detach".to_string(),
                            "true".to_string(),
                        )])),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(n) => {
                        tracing::info!(node = %self.cfg.name, "registered node");
                        n
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => nodes.get(&self.cfg.name).await?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let patch = serde_json::json!({"metadata": {"labels": node_labels(&self.cfg)}});
        nodes
            .patch(
                &self.cfg.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        self.update_status(node.status.as_ref()).await
    }

    async fn runtime_problem(&self) -> Option<String> {
        let mut rt = self.cri.rt.clone();
        match rt
            .status(skiff_runtime::proto::StatusRequest { verbose: false })
            .await
        {
            Err(e) => Some(format!("container runtime is down: {}", e.message())),
            Ok(r) => {
                let conditions = r
                    .into_inner()
                    .status
                    .map(|s| s.conditions)
                    .unwrap_or_default();
                let bad: Vec<String> = conditions
                    .iter()
                    .filter(|c| !c.status)
                    .map(|c| {
                        let what = if c.r#type == "NetworkReady" {
                            "container runtime network not ready"
                        } else {
                            "container runtime not ready"
                        };
                        format!(
                            "{what}: {}=false reason:{} message:{}",
                            c.r#type, c.reason, c.message
                        )
                    })
                    .collect();
                (!bad.is_empty()).then(|| bad.join(", "))
            }
        }
    }

    async fn update_status(&self, old: Option<&NodeStatus>) -> Result<Node> {
        let problem = self.runtime_problem().await;
        let status = node_status(
            &self.cfg,
            &self.machine,
            &self.runtime_version,
            problem.as_deref(),
            self.pressure(),
            old,
            jiff::Timestamp::now(),
        );
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({ "status": status });
        Ok(nodes
            .patch_status(
                &self.cfg.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?)
    }

    async fn renew_lease(&self, node: &Node) -> Result<()> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        let now = MicroTime(jiff::Timestamp::now());
        match leases.get_opt(&self.cfg.name).await? {
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.renew_time = Some(now);
                spec.holder_identity = Some(self.cfg.name.clone());
                spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
                leases
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await?;
            }
            None => {
                let lease = node_lease(
                    &self.cfg.name,
                    node.metadata.uid.clone(),
                    LEASE_DURATION_SECONDS,
                    now,
                );
                leases.create(&PostParams::default(), &lease).await?;
            }
        }
        Ok(())
    }

    /// Registers (retrying until it works), then keeps lease and status fresh, and the
    /// runtime's pod range the Node's.
    pub async fn run(self) {
        let pod_cidr_applied = Arc::new(Notify::new());
        tokio::select! {
            _ = self.heartbeat(pod_cidr_applied.clone()) => {}
            _ = follow_pod_cidr(self.client.clone(), self.cfg.name.clone(), self.cri.clone(), pod_cidr_applied) => {}
        }
    }

    /// Registers (retrying until it works), then keeps lease and status fresh: every
    /// status period, and at once when `nudge` fires (the runtime took a pod range, so
    /// its network may just have become ready).
    async fn heartbeat(&self, nudge: Arc<Notify>) {
        let mut delay = Duration::from_millis(200);
        let mut node = loop {
            match self.register().await {
                Ok(n) => break n,
                Err(e) => {
                    tracing::warn!(error = %e, "node registration failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(7));
                }
            }
        };
        let mut last_report = Instant::now();
        let mut tick = tokio::time::interval(STATUS_UPDATE_FREQUENCY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(e) = self.renew_lease(&node).await {
                tracing::warn!(error = %e, "renewing the node lease failed");
            }
            let problem = self.runtime_problem().await;
            let status = node_status(
                &self.cfg,
                &self.machine,
                &self.runtime_version,
                problem.as_deref(),
                self.pressure(),
                node.status.as_ref(),
                jiff::Timestamp::now(),
            );
            let changed = node
                .status
                .as_ref()
                .is_none_or(|old| status_changed(old, &status));
            if changed || last_report.elapsed() >= STATUS_REPORT_FREQUENCY {
                match self.update_status(node.status.as_ref()).await {
                    Ok(n) => {
                        node = n;
                        last_report = Instant::now();
                    }
                    Err(e) => tracing::warn!(error = %e, "updating node status failed"),
                }
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = nudge.notified() => {}
            }
        }
    }
}

/// How often a pod range the runtime refused (pods still hold addresses from the old
/// one) is offered again.
const POD_CIDR_RETRY: Duration = Duration::from_secs(5);

/// The pod CIDRs of a Node as the kubelet sends them to the runtime: `spec.podCIDRs`
/// joined by commas (upstream's form), else `spec.podCIDR`.
pub fn pod_cidrs(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    match spec.pod_cidrs.as_deref() {
        Some(all) if !all.is_empty() => Some(all.join(",")),
        _ => spec.pod_cidr.clone().filter(|c| !c.is_empty()),
    }
}

/// Watches this node's Node and sends each new pod range to the runtime until it takes
/// it; notifies `applied` each time it does. Runs until cancelled (the heartbeat it runs
/// beside ends with it).
pub async fn follow_pod_cidr(client: kube::Client, name: String, cri: Cri, applied: Arc<Notify>) {
    let nodes: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(nodes, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut retry = tokio::time::interval(POD_CIDR_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut wanted, mut sent): (Option<String>, Option<String>) = (None, None);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(node)) => wanted = pod_cidrs(&node),
                Some(Err(error)) => tracing::warn!(%error, "watching this node for its pod CIDR"),
                // The watch retries forever; were it to end, the range last seen is
                // still offered until the runtime takes it.
                None => events = futures::stream::pending().boxed(),
            },
            _ = retry.tick() => {}
        }
        let Some(cidr) = wanted.as_ref().filter(|w| sent.as_ref() != Some(*w)) else {
            continue;
        };
        match cri.update_pod_cidr(cidr).await {
            Ok(()) => {
                tracing::info!(pod_cidr = %cidr, "runtime given the node's pod CIDR");
                sent = Some(cidr.clone());
                applied.notify_one();
            }
            Err(error) => {
                tracing::warn!(%error, pod_cidr = %cidr, "the runtime did not take the node's pod CIDR; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeConfig {
        NodeConfig {
            name: "n1".into(),
            node_ip: "192.168.0.9".into(),
            max_pods: 110,
            reserved_memory: 100 * 1024 * 1024,
            root_dir: "/tmp".into(),
            labels: BTreeMap::new(),
            kubelet_port: KUBELET_PORT,
        }
    }

    #[test]
    fn status_reports_capacity_and_upstream_conditions() {
        let m = Machine {
            cpus: 2,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            ephemeral_bytes: 1000 * 1024,
            ..Default::default()
        };
        let t = jiff::Timestamp::from_second(1_800_000_000).expect("ts");
        let s = node_status(
            &cfg(),
            &m,
            "skiff://0.1.0",
            None,
            Default::default(),
            None,
            t,
        );
        let cap = s.capacity.as_ref().expect("capacity");
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(cap["pods"].0, "110");
        let alloc = s.allocatable.as_ref().expect("allocatable");
        assert_eq!(
            alloc["memory"].0,
            format!("{}Ki", 4 * 1024 * 1024 - 100 * 1024)
        );
        let conds = s.conditions.as_ref().expect("conditions");
        let types: Vec<&str> = conds.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        assert_eq!(conds[3].reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            conds[3].message.as_deref(),
            Some("kubelet is posting ready status")
        );
        // A later heartbeat with nothing new is not a change.
        let later = node_status(
            &cfg(),
            &m,
            "skiff://0.1.0",
            None,
            Default::default(),
            Some(&s),
            t + jiff::SignedDuration::from_secs(10),
        );
        assert!(!status_changed(&s, &later));
        let down = node_status(
            &cfg(),
            &m,
            "skiff://0.1.0",
            Some("container runtime is down"),
            Default::default(),
            Some(&s),
            t,
        );
        assert!(status_changed(&s, &down));
        assert_eq!(
            down.conditions.expect("c")[3].reason.as_deref(),
            Some("KubeletNotReady")
        );
    }

    #[test]
    fn pod_cidrs_as_the_runtime_gets_them() {
        let node = |cidr: Option<&str>, cidrs: Option<Vec<&str>>| Node {
            spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                pod_cidr: cidr.map(str::to_string),
                pod_cidrs: cidrs.map(|c| c.into_iter().map(str::to_string).collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_cidrs(&Node::default()), None);
        assert_eq!(pod_cidrs(&node(Some(""), None)), None);
        assert_eq!(
            pod_cidrs(&node(Some("10.42.1.0/24"), None)).as_deref(),
            Some("10.42.1.0/24")
        );
        assert_eq!(
            pod_cidrs(&node(
                Some("10.42.1.0/24"),
                Some(vec!["10.42.1.0/24", "fd00:1::/64"])
            ))
            .as_deref(),
            Some("10.42.1.0/24,fd00:1::/64")
        );
    }

    #[test]
    fn proc_parsers() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384 * 1024)
        );
        assert_eq!(
            parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n")
                .as_deref(),
            Some("Debian GNU/Linux 13 (trixie)")
        );
    }
}
