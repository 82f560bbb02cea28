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
//! - [`vxlan`]: the other backend, for nodes on different networks: the same routes
//!   through a VXLAN device, with the neighbour and forwarding entries it needs
//!   (flannel's `vxlan` backend); each node publishes its device's MAC on its Node.
//! - [`masq`]: the masquerade rules (the CNI bridge plugin's own `ipMasq` would
//!   masquerade everything leaving the node's subnet, other nodes' pods included, so the
//!   runtime turns it off when this crate runs).
//!
//! Start reading at [`run`]. IPv4 only. With [`Backend::HostGw`] nodes must share an L2
//! network; with [`Backend::Vxlan`] their InternalIPs need only reach each other.

pub mod masq;
pub mod routes;
pub mod vxlan;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
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
    #[error("publishing this node's VXLAN address: {0}")]
    Publish(#[from] kube::Error),
}

/// The label of simulated nodes (`skiff hollow-nodes`, value `true`): Node objects with
/// no machine behind them, so no routes lead to their pod ranges.
pub const HOLLOW_NODE_LABEL: &str = "node.skiff.dev/hollow";

/// How packets reach other nodes' pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Routes via the other nodes' InternalIPs: nodes on one L2 network (flannel's
    /// `host-gw`).
    #[default]
    HostGw,
    /// A VXLAN tunnel between the nodes' InternalIPs (UDP 8472): any network that routes
    /// between them (flannel's `vxlan`).
    Vxlan,
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
    pub backend: Backend,
}

impl PodNetArgs {
    pub fn new(node_name: Option<String>, cluster_cidr: Ipv4Cidr, backend: Backend) -> PodNetArgs {
        PodNetArgs {
            node_name,
            cluster_cidr,
            sync_period: Duration::from_secs(30),
            backend,
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

/// Masquerades pods' traffic leaving `cluster` (see [`masq`]): all a node whose pods
/// reach no other node's needs, with `cluster` its own pod range.
pub async fn masquerade(cluster: Ipv4Cidr) -> Result<(), Error> {
    let rules = masq::ruleset(cluster);
    blocking(move || Ok(NftCommand::default().apply(&rules)?)).await?;
    tracing::info!(%cluster, "pod network: masquerading traffic leaving the pod range");
    Ok(())
}

/// Keeps this node's masquerade rules and routes to the other nodes' pod ranges until
/// the process ends.
pub async fn run(client: Client, args: PodNetArgs) -> Result<(), Error> {
    let node_name = args.node_name()?;
    masquerade(args.cluster_cidr).await?;
    let changed = Arc::new(Notify::new());
    let api = Api::<Node>::all(client);
    let nodes = skiff_proxy::watch(api.clone(), changed.clone());
    let mut pacer = SyncPacer::new(changed, MIN_SYNC_PERIOD, args.sync_period);
    loop {
        pacer.wait().await;
        let state = nodes.state();
        let result = match args.backend {
            Backend::HostGw => {
                let wanted = routes::desired(&state, &node_name);
                blocking(move || routes::sync(&mut routes::IpRoute::default(), &wanted)).await
            }
            Backend::Vxlan => sync_vxlan(&api, &state, &node_name).await,
        };
        pacer.done(result.is_ok());
        match result {
            Ok(changes) if changes.is_empty() => {}
            Ok(changes) => tracing::info!(?changes, "routes to other nodes' pods updated"),
            Err(error) => tracing::warn!(%error, "syncing routes to other nodes' pods; retrying"),
        }
    }
}

/// Runs a sync that calls `ip` off the async threads.
async fn blocking<T: Send + 'static>(
    sync: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(sync)
        .await
        .map_err(|e| Error::SyncTask(e.to_string()))?
}

/// One VXLAN sync: this node's device (once its Node has a range and an address) and
/// its MAC published, then the entries and routes for every peer that published its own.
async fn sync_vxlan(
    api: &Api<Node>,
    nodes: &[Arc<Node>],
    node_name: &str,
) -> Result<routes::Changes, Error> {
    let own = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node_name));
    let Some((own, range, address)) =
        own.and_then(|n| Some((n, routes::pod_cidr(n)?, routes::internal_ip(n)?)))
    else {
        // Not registered, or no range yet: nothing to tunnel from.
        return Ok(routes::Changes::default());
    };
    let mac = blocking(move || vxlan::ensure_device(range, address)).await?;
    let published = own
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(vxlan::MAC_ANNOTATION));
    if published != Some(&mac) {
        let patch = serde_json::json!({"metadata": {"annotations": {vxlan::MAC_ANNOTATION: mac}}});
        api.patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(%mac, device = vxlan::DEVICE, "published this node's VXLAN device");
    }
    let peers = vxlan::peers(nodes, node_name);
    let wanted = vxlan::routes(&peers);
    blocking(move || {
        vxlan::sync_entries(&peers)?;
        let mut table = routes::IpRoute {
            onlink_device: Some(vxlan::DEVICE),
        };
        routes::sync(&mut table, &wanted)
    })
    .await
}
