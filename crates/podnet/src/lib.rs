//! # skiff-podnet: pod networking between nodes
//!
//! Kubernetes' network model: every pod has its own address, and pods reach each other
//! across nodes without NAT. The runtime gives each pod an address from its node's pod
//! range (`spec.podCIDR`, from the node IPAM controller) on the node's bridge; this crate
//! does the rest on each node, as flannel's host-gw backend (what k3s runs on nodes that
//! share one L2 network) does:
//!
//! ```text
//!  watch Nodes ─► routes::desired ─► routes::sync ─► `ip route replace <podCIDR> via <InternalIP>`
//!  (reflector)     (pure: every other       (RouteTable: ours are the routes with
//!                   node's range → its IP)   protocol ROUTE_PROTOCOL; stale ones deleted)
//!
//!  --cluster-cidr ─► masq::ruleset ─► table `ip skiff-podnet`: pods' traffic leaving the
//!                                     cluster range is masqueraded, pod-to-pod keeps its source
//! ```
//!
//! - [`routes`]: the route table wanted from the Nodes, and its sync behind the
//!   [`routes::RouteTable`] trait ([`routes::IpRoute`] runs `ip`).
//! - [`masq`]: the masquerade rules (the CNI bridge plugin's own `ipMasq` would
//!   masquerade everything leaving the node's subnet, other nodes' pods included, so the
//!   runtime turns it off when this crate runs).
//!
//! Start reading at [`run`]. IPv4 only; nodes must share an L2 network (no VXLAN yet).

pub mod masq;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use skiff_proxy::{Apply, Ipv4Cidr, NftCommand, SyncPacer};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot determine the node name: {0}; set the node name")]
    NodeName(std::io::Error),
    #[error(transparent)]
    Nft(#[from] skiff_proxy::Error),
    #[error("`{command}`: {message}")]
    Ip { command: String, message: String },
    #[error("sync task failed: {0}")]
    SyncTask(String),
}

/// What the pod network of one node needs to know.
#[derive(Clone, Debug)]
pub struct PodNetArgs {
    /// This node's name (its own range is on its bridge, not routed); the host name,
    /// lower-cased, when `None`.
    pub node_name: Option<String>,
    /// The whole cluster's pod range, of which every node's `podCIDR` is a part.
    pub cluster_cidr: Ipv4Cidr,
    /// Longest time between two route syncs, even without Node changes (routes someone
    /// deleted come back).
    pub sync_period: Duration,
}

impl PodNetArgs {
    pub fn new(node_name: Option<String>, cluster_cidr: Ipv4Cidr) -> PodNetArgs {
        PodNetArgs {
            node_name,
            cluster_cidr,
            sync_period: Duration::from_secs(30),
        }
    }

    fn node_name(&self) -> Result<String, Error> {
        let name = match &self.node_name {
            Some(name) => name.clone(),
            None => {
                std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(Error::NodeName)?
            }
        };
        Ok(name.trim().to_lowercase())
    }
}

/// Least time between two route syncs: a burst of Node updates becomes one sync.
const MIN_SYNC_PERIOD: Duration = Duration::from_millis(500);

/// Keeps this node's masquerade rules and routes to the other nodes' pod ranges until
/// the process ends.
pub async fn run(client: Client, args: PodNetArgs) -> Result<(), Error> {
    let node_name = args.node_name()?;
    let rules = masq::ruleset(args.cluster_cidr);
    tokio::task::spawn_blocking(move || NftCommand::default().apply(&rules))
        .await
        .map_err(|e| Error::SyncTask(e.to_string()))??;
    tracing::info!(cluster_cidr = %args.cluster_cidr, node = %node_name, "pod network: masquerading traffic leaving the cluster range");
    let changed = Arc::new(Notify::new());
    let nodes = skiff_proxy::watch(Api::<Node>::all(client), changed.clone());
    let mut pacer = SyncPacer::new(changed, MIN_SYNC_PERIOD, args.sync_period);
    loop {
        pacer.wait().await;
        let wanted = routes::desired(&nodes.state(), &node_name);
        let result =
            tokio::task::spawn_blocking(move || routes::sync(&mut routes::IpRoute, &wanted))
                .await
                .map_err(|e| Error::SyncTask(e.to_string()))?;
        pacer.done(result.is_ok());
        match result {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => tracing::info!(?changes, "routes to other nodes' pods updated"),
            Err(error) => tracing::warn!(%error, "syncing routes to other nodes' pods; retrying"),
        }
    }
}
