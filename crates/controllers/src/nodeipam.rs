//! Node IPAM: upstream's range allocator (`--allocate-node-cidrs`), which gives every
//! Node a pod subnet carved out of `--cluster-cidr`, `--node-cidr-mask-size` bits long,
//! so that each node's pods get addresses no other node hands out.
//!
//! One [`CidrSet`] holds which subnets are taken. It sits behind one mutex, is filled
//! from the informer's cache before the first allocation, and a subnet is reserved for
//! a node (under the lock) before the patch that writes it: two nodes created together
//! can never get the same subnet. A deleted node's subnet goes back to the set. IPv4
//! only, one cluster CIDR (upstream's single-stack mode).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;

use crate::error::{is_status, Error, Result};
use crate::events::Events;
use crate::informer::InformerFactory;
use crate::queue::WorkQueue;

/// Workers patching nodes: allocation itself is a short critical section, the patches
/// may overlap.
pub const WORKERS: usize = 4;

/// Upstream's limit on how many subnet bits the node mask may add to the cluster mask
/// (2^16 subnets).
const MAX_SUBNET_BITS: u8 = 16;

/// An IPv4 CIDR, kept as its (masked) network address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: u32,
    prefix: u8,
}

impl Cidr {
    fn mask(prefix: u8) -> u32 {
        match prefix {
            0 => 0,
            p => u32::MAX << (32 - u32::from(p)),
        }
    }

    /// The first and the last address.
    fn range(&self) -> (u32, u32) {
        (self.network, self.network | !Cidr::mask(self.prefix))
    }

    /// How many addresses the range holds.
    pub fn size(&self) -> u64 {
        1 << (32 - u32::from(self.prefix))
    }

    /// The range's `n`-th address (0 is the network address), if the range has one.
    pub fn address(&self, n: u64) -> Option<Ipv4Addr> {
        let n = u32::try_from(n)
            .ok()
            .filter(|n| u64::from(*n) < self.size())?;
        Some(Ipv4Addr::from(self.network | n))
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `a.b.c.d/n`; host bits are cleared, as Go's `net.ParseCIDR` reports the network.
    fn from_str(text: &str) -> Result<Cidr, String> {
        let invalid = || format!("invalid IPv4 CIDR {text:?}");
        let (address, prefix) = text.trim().split_once('/').ok_or_else(invalid)?;
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        if prefix > 32 {
            return Err(invalid());
        }
        Ok(Cidr {
            network: u32::from(address) & Cidr::mask(prefix),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

/// The subnets of a cluster CIDR and which of them are taken (upstream's `CidrSet`).
#[derive(Debug)]
pub struct CidrSet {
    cluster: Cidr,
    node_prefix: u8,
    used: Vec<bool>,
    /// Where the next search starts: upstream hands subnets out round-robin, so a
    /// released subnet is not reused at once while fresh ones remain (fewer stale
    /// routes to a node that just left).
    next_candidate: usize,
}

impl CidrSet {
    pub fn new(cluster: Cidr, node_prefix: u8) -> Result<CidrSet, String> {
        if node_prefix > 32 {
            return Err(format!("node CIDR mask size {node_prefix} is above 32"));
        }
        if node_prefix < cluster.prefix {
            return Err(format!(
                "node CIDR mask size {node_prefix} is smaller than the cluster CIDR's mask {}",
                cluster.prefix
            ));
        }
        if node_prefix - cluster.prefix > MAX_SUBNET_BITS {
            return Err(format!(
                "node CIDR mask size {node_prefix} is too big for cluster CIDR {cluster}: at most {MAX_SUBNET_BITS} bits more than its mask"
            ));
        }
        Ok(CidrSet {
            cluster,
            node_prefix,
            used: vec![false; 1 << (node_prefix - cluster.prefix)],
            next_candidate: 0,
        })
    }

    fn subnet(&self, index: usize) -> Cidr {
        // The index is below 2^16 and shifted into the cluster's host bits: no overflow.
        let offset = (index as u32).checked_shl(32 - u32::from(self.node_prefix));
        Cidr {
            network: self.cluster.network | offset.unwrap_or(0),
            prefix: self.node_prefix,
        }
    }

    /// The subnet indices `cidr` overlaps, or why it is not in the cluster CIDR.
    fn indices(&self, cidr: &Cidr) -> Result<std::ops::RangeInclusive<usize>, String> {
        let (first, last) = cidr.range();
        let (cluster_first, cluster_last) = self.cluster.range();
        if last < cluster_first || first > cluster_last {
            return Err(format!(
                "CIDR {cidr} is out of the range of cluster CIDR {}",
                self.cluster
            ));
        }
        let shift = 32 - u32::from(self.node_prefix);
        let index =
            |address: u32| (address - cluster_first).checked_shr(shift).unwrap_or(0) as usize;
        Ok(index(first.max(cluster_first))..=index(last.min(cluster_last)))
    }

    /// Takes the next free subnet after the last one handed out; `None` when all are taken.
    pub fn allocate_next(&mut self) -> Option<Cidr> {
        let count = self.used.len();
        let index = (0..count)
            .map(|step| (self.next_candidate + step) % count)
            .find(|&i| !self.used[i])?;
        self.used[index] = true;
        self.next_candidate = (index + 1) % count;
        Some(self.subnet(index))
    }

    /// Marks the subnets `cidr` covers as taken (a node that came with its own).
    pub fn occupy(&mut self, cidr: &Cidr) -> Result<(), String> {
        for index in self.indices(cidr)? {
            self.used[index] = true;
        }
        Ok(())
    }

    /// Frees the subnets `cidr` covers.
    pub fn release(&mut self, cidr: &Cidr) -> Result<(), String> {
        for index in self.indices(cidr)? {
            self.used[index] = false;
        }
        Ok(())
    }

    /// How many subnets are taken.
    pub fn used_count(&self) -> usize {
        self.used.iter().filter(|u| **u).count()
    }
}

/// What the allocator knows, behind one lock.
struct State {
    set: CidrSet,
    /// Each node's subnet: written to the node, or reserved for it and being written.
    by_node: HashMap<String, Cidr>,
    /// Whether the nodes in the cache at start have been counted in.
    initialised: bool,
    /// Nodes that found the range full, looked at again when a subnet is freed.
    waiting: BTreeSet<String>,
}

/// The range allocator: one key per Node name.
pub struct NodeIpamController {
    client: Client,
    nodes: Store<Node>,
    queue: Arc<WorkQueue>,
    events: Events,
    state: Mutex<State>,
}

/// The node's pod CIDR as written (`spec.podCIDRs[0]`, else `spec.podCIDR`).
fn pod_cidr(node: &Node) -> Option<&str> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .as_ref()
        .and_then(|cidrs| cidrs.first())
        .or(spec.pod_cidr.as_ref())
        .map(String::as_str)
        .filter(|cidr| !cidr.is_empty())
}

impl NodeIpamController {
    /// The allocator of `--cluster-cidr` in subnets of `--node-cidr-mask-size`; an error
    /// when the flags do not make a range (upstream refuses to start then).
    pub fn new(
        factory: &InformerFactory,
        cluster_cidr: Option<&str>,
        node_mask_size: u8,
    ) -> Result<Arc<NodeIpamController>, String> {
        let cluster_cidr = cluster_cidr
            .filter(|c| !c.trim().is_empty())
            .ok_or("--allocate-node-cidrs needs --cluster-cidr")?;
        if cluster_cidr.contains(',') {
            return Err(format!(
                "--cluster-cidr {cluster_cidr:?}: only one IPv4 cluster CIDR is supported"
            ));
        }
        let set = CidrSet::new(cluster_cidr.parse()?, node_mask_size)?;
        let informer = factory.informer::<Node>();
        let controller = Arc::new(NodeIpamController {
            client: factory.client_for("node-controller"),
            nodes: informer.store(),
            queue: factory.queue("node_ipam"),
            events: Events::new(factory.client_for("node-controller"), "cidrAllocator"),
            state: Mutex::new(State {
                set,
                by_node: HashMap::new(),
                initialised: false,
                waiting: BTreeSet::new(),
            }),
        });
        let queue = controller.queue.clone();
        informer.add_handler(move |old, new| {
            // Heartbeats change nodes all the time; only a new node, one deleted, one
            // still without a subnet or one whose subnet changed needs a look.
            let relevant = match (old, new) {
                (_, None) | (None, Some(_)) => true,
                (Some(old), Some(new)) => pod_cidr(new).is_none() || pod_cidr(old) != pod_cidr(new),
            };
            if let Some(node) = new.or(old).filter(|_| relevant) {
                queue.add(node.metadata.name.clone().unwrap_or_default());
            }
        });
        Ok(controller)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain collections, consistent after every statement.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !state.initialised {
            // Before anything is handed out, every subnet nodes already carry is taken:
            // the workers start only once the cache is synced.
            state.initialised = true;
            for node in self.nodes.state() {
                let name = node.metadata.name.clone().unwrap_or_default();
                occupy(&mut state, &name, pod_cidr(&node));
            }
        }
        state
    }

    /// Frees `name`'s subnet and wakes the nodes waiting for one.
    fn release(&self, name: &str) {
        let mut state = self.lock();
        let Some(cidr) = state.by_node.remove(name) else {
            return;
        };
        if let Err(error) = state.set.release(&cidr) {
            tracing::warn!(node = name, %error, "could not release pod CIDR");
        }
        tracing::info!(node = name, %cidr, "released pod CIDR");
        for waiting in std::mem::take(&mut state.waiting) {
            self.queue.add(waiting);
        }
    }

    async fn sync(&self, name: &str) -> Result<()> {
        let Some(node) = self.nodes.get(&ObjectRef::new(name)) else {
            self.release(name);
            return Ok(());
        };
        if let Some(cidr) = pod_cidr(&node) {
            let mut state = self.lock();
            state.waiting.remove(name);
            occupy(&mut state, name, Some(cidr));
            return Ok(());
        }
        let cidr = {
            let mut state = self.lock();
            // A subnet reserved earlier (a patch that failed, or one the cache has not
            // shown yet) is the one to write again: never a second one.
            let reserved = state.by_node.get(name).copied();
            let cidr = reserved.or_else(|| state.set.allocate_next());
            match cidr {
                Some(cidr) => {
                    state.by_node.insert(name.to_string(), cidr);
                    state.waiting.remove(name);
                }
                None => {
                    state.waiting.insert(name.to_string());
                }
            }
            cidr
        };
        let Some(cidr) = cidr else {
            // The range is full: say so on the node, as upstream does, and retry with
            // back-off (at once when a node goes and frees a subnet).
            self.events
                .normal(
                    node.as_ref(),
                    "CIDRNotAvailable",
                    format!("Node {name} status is now: CIDRNotAvailable"),
                )
                .await;
            return Err(Error::Other(format!(
                "no pod CIDR available for node {name}"
            )));
        };
        self.write(&node, name, cidr).await
    }

    async fn write(&self, node: &Node, name: &str, cidr: Cidr) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({
            "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = name, %cidr, "allocated pod CIDR");
                Ok(())
            }
            // Gone meanwhile: its delete event may already have been handled.
            Err(e) if is_status(&e, 404) => {
                self.release(name);
                Ok(())
            }
            Err(e) => {
                // The reservation stays: the retry writes the same subnet.
                self.events
                    .normal(
                        node,
                        "CIDRAssignmentFailed",
                        format!("Node {name} status is now: CIDRAssignmentFailed"),
                    )
                    .await;
                Err(e.into())
            }
        }
    }
}

/// Counts `cidr`, which node `name` carries, as taken (if it lies in the range).
fn occupy(state: &mut State, name: &str, cidr: Option<&str>) {
    let Some(text) = cidr else { return };
    let cidr = match text.parse::<Cidr>() {
        Ok(cidr) => cidr,
        Err(error) => {
            tracing::warn!(node = name, %error, "ignoring the node's pod CIDR");
            return;
        }
    };
    if state.by_node.get(name) == Some(&cidr) {
        return;
    }
    if let Err(error) = state.set.occupy(&cidr) {
        tracing::warn!(node = name, %error, "ignoring the node's pod CIDR");
        return;
    }
    // A reservation the node did not take (someone else set its CIDR first) is freed.
    if let Some(previous) = state.by_node.insert(name.to_string(), cidr) {
        let _ = state.set.release(&previous);
    }
}

impl crate::controller::Reconcile for NodeIpamController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, name: &str) -> Result<Option<Duration>> {
        self.sync(name).await.map(|()| None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cluster: &str, mask: u8) -> CidrSet {
        CidrSet::new(cluster.parse().expect("cidr"), mask).expect("set")
    }

    fn next(set: &mut CidrSet) -> String {
        set.allocate_next().expect("a free subnet").to_string()
    }

    #[test]
    fn parses_and_prints() {
        let cidr: Cidr = "10.42.3.7/16".parse().expect("cidr");
        assert_eq!(cidr.to_string(), "10.42.0.0/16");
        assert!("10.42.0.0".parse::<Cidr>().is_err());
        assert!("10.42.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/64".parse::<Cidr>().is_err());
        assert_eq!(
            "0.0.0.0/0".parse::<Cidr>().map(|c| c.range()),
            Ok((0, u32::MAX))
        );
    }

    #[test]
    fn addresses_within_a_range() {
        let cidr: Cidr = "10.42.3.0/24".parse().expect("cidr");
        assert_eq!(cidr.size(), 256);
        assert_eq!(cidr.address(0), Some(Ipv4Addr::new(10, 42, 3, 0)));
        assert_eq!(cidr.address(255), Some(Ipv4Addr::new(10, 42, 3, 255)));
        assert_eq!(cidr.address(256), None);
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert_eq!(all.size(), 1 << 32);
        assert_eq!(all.address(u64::from(u32::MAX)), Some(Ipv4Addr::BROADCAST));
    }

    #[test]
    fn hands_out_subnets_in_order() {
        let mut s = set("10.42.0.0/16", 24);
        assert_eq!(next(&mut s), "10.42.0.0/24");
        assert_eq!(next(&mut s), "10.42.1.0/24");
        assert_eq!(next(&mut s), "10.42.2.0/24");
        assert_eq!(s.used_count(), 3);
    }

    #[test]
    fn skips_occupied_subnets() {
        let mut s = set("10.42.0.0/16", 24);
        s.occupy(&"10.42.0.0/24".parse().expect("cidr"))
            .expect("occupy");
        s.occupy(&"10.42.2.0/24".parse().expect("cidr"))
            .expect("occupy");
        assert_eq!(next(&mut s), "10.42.1.0/24");
        assert_eq!(next(&mut s), "10.42.3.0/24");
        // Outside the cluster CIDR: refused, nothing taken.
        assert!(s.occupy(&"10.43.0.0/24".parse().expect("cidr")).is_err());
        assert_eq!(s.used_count(), 4);
        // A wider CIDR takes every subnet it covers.
        s.occupy(&"10.42.8.0/22".parse().expect("cidr"))
            .expect("occupy");
        assert_eq!(s.used_count(), 8);
    }

    #[test]
    fn released_subnets_come_back_and_full_range_says_none() {
        let mut s = set("10.42.0.0/22", 24);
        let all: Vec<String> = (0..4).map(|_| next(&mut s)).collect();
        assert_eq!(
            all,
            [
                "10.42.0.0/24",
                "10.42.1.0/24",
                "10.42.2.0/24",
                "10.42.3.0/24"
            ]
        );
        assert_eq!(s.allocate_next(), None);
        s.release(&"10.42.1.0/24".parse().expect("cidr"))
            .expect("release");
        assert_eq!(next(&mut s), "10.42.1.0/24");
        assert_eq!(s.allocate_next(), None);
    }

    #[test]
    fn round_robin_reuses_a_release_after_fresh_subnets() {
        let mut s = set("10.42.0.0/22", 24);
        assert_eq!(next(&mut s), "10.42.0.0/24");
        s.release(&"10.42.0.0/24".parse().expect("cidr"))
            .expect("release");
        assert_eq!(next(&mut s), "10.42.1.0/24");
        assert_eq!(next(&mut s), "10.42.2.0/24");
        assert_eq!(next(&mut s), "10.42.3.0/24");
        assert_eq!(next(&mut s), "10.42.0.0/24");
    }

    #[test]
    fn mask_sizes() {
        let mut s = set("10.0.0.0/8", 16);
        assert_eq!(next(&mut s), "10.0.0.0/16");
        assert_eq!(next(&mut s), "10.1.0.0/16");
        let mut s = set("192.168.0.0/24", 26);
        let all: Vec<String> = (0..4).map(|_| next(&mut s)).collect();
        assert_eq!(
            all,
            [
                "192.168.0.0/26",
                "192.168.0.64/26",
                "192.168.0.128/26",
                "192.168.0.192/26"
            ]
        );
        assert_eq!(s.allocate_next(), None);
        // One subnet: the whole range, then nothing.
        let mut s = set("10.42.0.0/24", 24);
        assert_eq!(next(&mut s), "10.42.0.0/24");
        assert_eq!(s.allocate_next(), None);
        let mut s = set("10.42.0.1/32", 32);
        assert_eq!(next(&mut s), "10.42.0.1/32");
        // Wider than the cluster, or more than 16 bits of subnets: refused.
        let cluster: Cidr = "10.42.0.0/16".parse().expect("cidr");
        assert!(CidrSet::new(cluster, 8).is_err());
        assert!(CidrSet::new(cluster, 33).is_err());
        assert!(CidrSet::new("10.0.0.0/8".parse().expect("cidr"), 25).is_err());
        assert!(CidrSet::new("10.0.0.0/8".parse().expect("cidr"), 24).is_ok());
    }

    /// The flags parse as upstream's: a bare `--allocate-node-cidrs` is true.
    #[test]
    fn flags() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: crate::ControllerManagerArgs,
        }
        let parse = |argv: &[&str]| {
            let cli = Cli::try_parse_from([&["cm"], argv].concat()).expect("flags parse");
            (
                cli.args.allocate_node_cidrs,
                cli.args.cluster_cidr,
                cli.args.node_cidr_mask_size,
            )
        };
        assert_eq!(parse(&[]), (false, None, 24));
        assert_eq!(
            parse(&["--allocate-node-cidrs", "--cluster-cidr", "10.42.0.0/16"]),
            (true, Some("10.42.0.0/16".into()), 24)
        );
        assert_eq!(
            parse(&["--allocate-node-cidrs=false", "--node-cidr-mask-size=26"]),
            (false, None, 26)
        );
        let defaults = crate::ControllerManagerArgs::default();
        assert!(!defaults.allocate_node_cidrs);
        assert_eq!(defaults.node_cidr_mask_size, 24);
    }
}
