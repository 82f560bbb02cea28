//! The hollow nodes themselves: their Node objects, registration, Lease renewals, status
//! reports and pod addresses.
//!
//! Periodic work is spread evenly over its period (node `i` of `n` at `i/n` of it), so
//! that 5,000 nodes renewing every 10 s are a steady 500 requests a second, not a burst
//! of 5,000; and every request waits for one of `--concurrency` permits, so a slow API
//! server slows the fleet down instead of piling requests up.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use skiff_controllers::nodeipam::{Cidr, CidrSet};
use skiff_kubelet::node::{
    node_labels, node_lease, node_status, Machine, NodeConfig, KUBELET_PORT, NODE_LEASE_NAMESPACE,
    STATUS_REPORT_FREQUENCY,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::{Metrics, Operation};
use crate::{HollowNodesArgs, HOLLOW_LABEL};

/// What a hollow node reports as its container runtime.
pub const RUNTIME: &str = "hollow";
/// Requests that fail for a passing reason (the server restarting, a conflict) are
/// tried this often during registration before the whole run gives up.
const REGISTRATION_ATTEMPTS: u32 = 8;

/// One simulated node.
pub struct HollowNode {
    pub config: NodeConfig,
    machine: Machine,
    /// Its pods' addresses come from here (also its `spec.podCIDR`).
    pub pod_range: Cidr,
    state: Mutex<NodeState>,
}

#[derive(Default)]
struct NodeState {
    uid: Option<String>,
    status: Option<NodeStatus>,
    lease: Option<Lease>,
    /// Host numbers within the pod range that pods hold.
    pod_addresses: BTreeSet<u64>,
}

impl HollowNode {
    fn lock(&self) -> MutexGuard<'_, NodeState> {
        // Plain values, consistent after every statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A free address of the pod range: not the network address, not the first host
    /// (a bridge's gateway on a real node), not the broadcast address.
    pub fn allocate_pod_ip(&self) -> Option<Ipv4Addr> {
        let mut state = self.lock();
        let host = (2..self.pod_range.size().saturating_sub(1))
            .find(|h| !state.pod_addresses.contains(h))?;
        state.pod_addresses.insert(host);
        self.pod_range.address(host)
    }

    /// Marks `ip` as held (a pod that already ran here before a restart).
    pub fn claim_pod_ip(&self, ip: Ipv4Addr) {
        if let Some(host) = self.host_number(ip) {
            self.lock().pod_addresses.insert(host);
        }
    }

    pub fn release_pod_ip(&self, ip: Ipv4Addr) {
        if let Some(host) = self.host_number(ip) {
            self.lock().pod_addresses.remove(&host);
        }
    }

    fn host_number(&self, ip: Ipv4Addr) -> Option<u64> {
        let first = self.pod_range.address(0)?;
        let host = u64::from(u32::from(ip)).checked_sub(u64::from(u32::from(first)))?;
        (host < self.pod_range.size()).then_some(host)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }
}

/// Every hollow node of this process, and the client they share.
pub struct Fleet {
    client: Client,
    nodes: Vec<HollowNode>,
    by_name: HashMap<String, usize>,
    taints: Vec<Taint>,
    lease_duration_seconds: i32,
    gate: Arc<Semaphore>,
    pub metrics: Metrics,
}

impl Fleet {
    /// The fleet of `args.count` nodes (see [`plan`]).
    pub fn new(client: Client, args: &HollowNodesArgs) -> anyhow::Result<Fleet> {
        let nodes = plan(args)?;
        let by_name = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.config.name.clone(), i))
            .collect();
        Ok(Fleet {
            client,
            nodes,
            by_name,
            taints: args.taints.0.clone(),
            lease_duration_seconds: args.node_lease_duration_seconds.max(1),
            gate: Arc::new(Semaphore::new(args.concurrency.max(1))),
            metrics: Metrics::default(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The hollow node of that name, if it is one of ours.
    pub fn node(&self, name: &str) -> Option<&HollowNode> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    /// Waits for a permit to send one request.
    pub async fn permit(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed.
        self.gate
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the fleet's semaphore is never closed"))
    }

    /// Creates (or adopts) every Node, writes its status and its Lease; logs progress.
    pub async fn register_all(&self) -> anyhow::Result<()> {
        let total = self.nodes.len();
        let step = (total / 10).max(1);
        let started = std::time::Instant::now();
        tracing::info!(nodes = total, "registering hollow nodes");
        let parallel = self.gate.available_permits().max(1);
        futures::stream::iter(0..total)
            .map(|i| self.register_with_retries(i))
            .buffer_unordered(parallel)
            .enumerate()
            .map(|(done, result)| {
                if (done + 1) % step == 0 || done + 1 == total {
                    tracing::info!(
                        registered = done + 1,
                        of = total,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "hollow nodes registered"
                    );
                }
                result
            })
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn register_with_retries(&self, i: usize) -> anyhow::Result<()> {
        let name = self.nodes[i].name();
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=REGISTRATION_ATTEMPTS {
            let result = self.register(i).await;
            self.metrics.request(Operation::Register, result.is_ok());
            match result {
                Ok(()) => {
                    self.metrics.registered();
                    return Ok(());
                }
                Err(error) if attempt < REGISTRATION_ATTEMPTS && passing(&error) => {
                    tracing::warn!(node = name, %error, "registering; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("registering node {name}"));
                }
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn register(&self, i: usize) -> Result<(), kube::Error> {
        let node = &self.nodes[i];
        let nodes: Api<Node> = Api::all(self.client.clone());
        let object = Node {
            metadata: ObjectMeta {
                name: Some(node.config.name.clone()),
                labels: Some(node_labels(&node.config)),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(node.pod_range.to_string()),
                pod_cidrs: Some(vec![node.pod_range.to_string()]),
                taints: (!self.taints.is_empty()).then(|| self.taints.clone()),
                ..Default::default()
            }),
            status: None,
        };
        let _permit = self.permit().await;
        let created = match nodes.create(&PostParams::default(), &object).await {
            Ok(created) => created,
            // Registered by an earlier run: adopted as it is, as a kubelet does.
            Err(kube::Error::Api(s)) if s.code == 409 => nodes.get(node.name()).await?,
            Err(e) => return Err(e),
        };
        {
            let mut state = node.lock();
            state.uid = created.metadata.uid;
            state.status = created.status;
        }
        self.report_status(i).await?;
        self.renew_lease(i).await
    }

    /// Writes the node's status, as a kubelet computes it, keeping transition times.
    /// (The caller holds a permit.)
    async fn report_status(&self, i: usize) -> Result<(), kube::Error> {
        let node = &self.nodes[i];
        let old = node.lock().status.clone();
        let status = node_status(
            &node.config,
            &node.machine,
            RUNTIME,
            None,
            Default::default(),
            old.as_ref(),
            jiff::Timestamp::now(),
        );
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({ "status": status });
        let written = nodes
            .patch_status(node.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        node.lock().status = written.status;
        Ok(())
    }

    /// Renews the node's Lease (created when missing, read again after a conflict).
    /// (The caller holds a permit.)
    async fn renew_lease(&self, i: usize) -> Result<(), kube::Error> {
        let node = &self.nodes[i];
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        let now = MicroTime(jiff::Timestamp::now());
        let known = node.lock().lease.clone();
        let written = match known {
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.renew_time = Some(now);
                match leases
                    .replace(node.name(), &PostParams::default(), &lease)
                    .await
                {
                    Ok(written) => written,
                    Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                        // Someone else wrote it (or removed it): start again from the
                        // server's copy at the next renewal.
                        node.lock().lease = None;
                        return Err(kube::Error::Api(s));
                    }
                    Err(e) => return Err(e),
                }
            }
            None => match leases.get_opt(node.name()).await? {
                Some(mut lease) => {
                    let spec = lease.spec.get_or_insert_with(Default::default);
                    spec.holder_identity = Some(node.config.name.clone());
                    spec.lease_duration_seconds = Some(self.lease_duration_seconds);
                    spec.renew_time = Some(now);
                    leases
                        .replace(node.name(), &PostParams::default(), &lease)
                        .await?
                }
                None => {
                    let uid = node.lock().uid.clone();
                    let lease = node_lease(node.name(), uid, self.lease_duration_seconds, now);
                    leases.create(&PostParams::default(), &lease).await?
                }
            },
        };
        node.lock().lease = Some(written);
        Ok(())
    }

    /// Renews every Lease each quarter of its duration, spread over that quarter.
    pub async fn keep_leases(self: Arc<Self>) {
        let period = Duration::from_secs(self.lease_duration_seconds as u64) / 4;
        self.spread(period, |fleet, i| async move {
            let result = fleet.renew_lease(i).await;
            fleet.metrics.request(Operation::Lease, result.is_ok());
            if let Err(error) = result {
                tracing::warn!(node = fleet.nodes[i].name(), %error, "renewing the lease");
            }
        })
        .await
    }

    /// Reports every node's status at upstream's report frequency (the Lease is the
    /// heartbeat in between), spread over that period.
    pub async fn keep_statuses(self: Arc<Self>) {
        self.spread(STATUS_REPORT_FREQUENCY, |fleet, i| async move {
            let result = fleet.report_status(i).await;
            fleet.metrics.request(Operation::NodeStatus, result.is_ok());
            if let Err(error) = result {
                tracing::warn!(node = fleet.nodes[i].name(), %error, "reporting status");
            }
        })
        .await
    }

    /// Runs `work` for every node once per `period`, node `i` at `i/n` of it, each with a
    /// request permit; a round that falls behind (a slow server: no permit free) goes on
    /// at once rather than skipping nodes.
    async fn spread<F, Fut>(self: Arc<Self>, period: Duration, work: F)
    where
        F: Fn(Arc<Fleet>, usize) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let total = self.nodes.len().max(1) as u32;
        let mut round = tokio::time::Instant::now() + period;
        loop {
            for i in 0..self.nodes.len() {
                tokio::time::sleep_until(round + period * i as u32 / total).await;
                let permit = self.permit().await;
                let work = work(self.clone(), i);
                tokio::spawn(async move {
                    work.await;
                    drop(permit);
                });
            }
            round += period;
            let now = tokio::time::Instant::now();
            if round < now {
                round = now;
            }
        }
    }
}

/// The nodes `args` describe: names, labels, addresses and pod ranges; an error when
/// the ranges are too small for them.
fn plan(args: &HollowNodesArgs) -> anyhow::Result<Vec<HollowNode>> {
    let mut ranges = CidrSet::new(args.pod_cidr, args.node_cidr_mask_size)
        .map_err(anyhow::Error::msg)
        .context("--pod-cidr and --node-cidr-mask-size")?;
    let mut nodes = Vec::with_capacity(args.count);
    for ordinal in 0..args.count {
        let name = format!("{}{ordinal}", args.name_prefix);
        let node_ip = args
            .node_ip_range
            .address(ordinal as u64 + 1)
            .filter(|_| ordinal as u64 + 2 < args.node_ip_range.size())
            .with_context(|| {
                format!(
                    "--node-ip-range {} has no address for node {ordinal}",
                    args.node_ip_range
                )
            })?;
        let pod_range = ranges.allocate_next().with_context(|| {
            format!(
                "--pod-cidr {} has no range left for node {ordinal}",
                args.pod_cidr
            )
        })?;
        if u64::from(args.max_pods) + 3 > pod_range.size() {
            anyhow::bail!(
                "--max-pods {} does not fit a /{} pod range",
                args.max_pods,
                args.node_cidr_mask_size
            );
        }
        let mut labels = args.labels.clone();
        labels.insert(HOLLOW_LABEL.into(), "true".into());
        if args.zones > 0 {
            labels.insert(
                "topology.kubernetes.io/zone".into(),
                format!("zone-{}", ordinal % args.zones),
            );
        }
        let config = NodeConfig {
            name: name.clone(),
            node_ip: node_ip.to_string(),
            max_pods: i64::from(args.max_pods),
            reserved_memory: 0,
            root_dir: "/".into(),
            labels,
            kubelet_port: KUBELET_PORT,
        };
        let machine = Machine {
            cpus: i64::from(args.cpu),
            memory_bytes: args.memory,
            ephemeral_bytes: args.ephemeral_storage,
            kernel: "hollow".into(),
            os_image: "Skiff hollow node".into(),
            machine_id: format!("hollow-{name}"),
            boot_id: format!("hollow-{name}"),
            system_uuid: format!("hollow-{name}"),
        };
        nodes.push(HollowNode {
            config,
            machine,
            pod_range,
            state: Mutex::new(NodeState::default()),
        });
    }
    Ok(nodes)
}

/// Whether a failed request may work when tried again.
fn passing(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 409 || status.code == 429 || status.code >= 500,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: HollowNodesArgs,
    }

    fn args(flags: &[&str]) -> HollowNodesArgs {
        Cli::try_parse_from(std::iter::once("hollow").chain(flags.iter().copied()))
            .expect("flags")
            .args
    }

    #[test]
    fn plans_names_labels_addresses_and_ranges() {
        let nodes = plan(&args(&["--count=3", "--zones=2", "--labels=tier=gold"])).expect("plan");
        let names: Vec<&str> = nodes.iter().map(HollowNode::name).collect();
        assert_eq!(names, ["hollow-node-0", "hollow-node-1", "hollow-node-2"]);
        assert_eq!(nodes[2].config.node_ip, "198.18.0.3");
        assert_eq!(nodes[2].pod_range.to_string(), "10.128.2.0/24");
        let labels = node_labels(&nodes[2].config);
        assert_eq!(labels["topology.kubernetes.io/zone"], "zone-0");
        assert_eq!(labels[HOLLOW_LABEL], "true");
        assert_eq!(labels["tier"], "gold");
        assert_eq!(labels["kubernetes.io/hostname"], "hollow-node-2");
        let status = node_status(
            &nodes[0].config,
            &nodes[0].machine,
            RUNTIME,
            None,
            Default::default(),
            None,
            jiff::Timestamp::now(),
        );
        let capacity = status.capacity.expect("capacity");
        assert_eq!(capacity["cpu"].0, "32");
        assert_eq!(capacity["pods"].0, "110");
    }

    #[test]
    fn refuses_ranges_too_small_for_the_fleet() {
        let error = plan(&args(&["--count=3", "--node-ip-range=10.0.0.0/30"]))
            .err()
            .expect("too few node addresses");
        assert!(error.to_string().contains("node 2"), "{error}");
        assert!(plan(&args(&["--count=3", "--pod-cidr=10.0.0.0/23"])).is_err());
        assert!(plan(&args(&["--max-pods=300"])).is_err());
        assert!(plan(&args(&["--count=5000"])).is_ok());
    }

    #[test]
    fn pod_addresses_are_handed_out_held_and_freed() {
        let nodes = plan(&args(&[
            "--pod-cidr=10.128.0.0/24",
            "--node-cidr-mask-size=29",
            "--max-pods=4",
        ]))
        .expect("plan");
        let node = &nodes[0];
        let handed: Vec<Ipv4Addr> = std::iter::from_fn(|| node.allocate_pod_ip()).collect();
        // A /29 has 8 addresses: network, gateway and broadcast are never handed out.
        let expected: Vec<Ipv4Addr> = (2..7).map(|h| Ipv4Addr::new(10, 128, 0, h)).collect();
        assert_eq!(handed, expected);
        node.release_pod_ip(Ipv4Addr::new(10, 128, 0, 4));
        assert_eq!(node.allocate_pod_ip(), Some(Ipv4Addr::new(10, 128, 0, 4)));
        node.release_pod_ip(Ipv4Addr::new(10, 128, 0, 5));
        node.claim_pod_ip(Ipv4Addr::new(10, 128, 0, 5));
        assert_eq!(node.allocate_pod_ip(), None);
    }
}
