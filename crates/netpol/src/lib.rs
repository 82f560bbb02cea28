//! NetworkPolicy enforcement (networking.k8s.io/v1) for the pods of one node, with
//! nftables.
//!
//! Every node runs one, as upstream's per-node enforcers (kube-router, Calico's Felix,
//! kube-network-policies) do: it filters what this node's pods send and receive.
//!
//! ```text
//!  watch NetworkPolicies ─┐
//!  watch Pods ────────────┼─► model::build ─► nftables::render ─► same as last applied?
//!  watch Namespaces ──────┘     (pure)          (a Ruleset)             │ no
//!        (reflector stores)                                             ▼
//!                                        Apply: one `nft -f -` transaction with what
//!                                        differs in table `inet skiff-netpol`
//! ```
//!
//! - [`model`] reduces the API objects to, for each pod of this node, whether it is
//!   isolated for ingress and egress and the clauses allowing traffic then;
//!   [`Model::allows`] evaluates a connection against it.
//! - [`nftables`] renders that into a forward-hook chain, per-pod chains dispatched by
//!   verdict maps keyed by pod address, and one set of peer addresses per rule; its
//!   module docs say why the hook sees bridged pod traffic (`br_netfilter`).
//! - [`Enforcer`] does one sync, writing only the chains, sets and map elements that
//!   changed (the whole table at start, after a failure and hourly); [`run`] watches the API and syncs at most every
//!   `--network-policy-min-sync-period`, and every `--network-policy-sync-period`.
//! - The kernel boundary is the proxy's [`skiff_proxy::Apply`]: [`NftCommand`] runs
//!   `nft`, [`Recorder`] captures transactions for tests.
//!
//! Start reading at [`run`]. Only IPv4 is enforced so far.

pub mod enforcer;
pub mod metrics;
pub mod model;
pub mod nftables;
pub mod selector;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use skiff_proxy::SyncPacer;
use tokio::sync::Notify;

pub use enforcer::{Enforcer, SyncKind};
pub use metrics::Metrics;
pub use model::Model;
pub use nftables::Ruleset;
pub use skiff_proxy::{metrics_router, Apply, NftCommand, Recorder};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot determine the node name: {0}; set the node name (--hostname-override)")]
    NodeName(std::io::Error),
    #[error(transparent)]
    Apply(#[from] skiff_proxy::Error),
    #[error("the {0} watch stopped before its first list")]
    WatchStopped(&'static str),
    #[error("sync task failed: {0}")]
    SyncTask(String),
    #[error("network policy metrics server on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(clap::Args, Clone, Debug)]
pub struct NetworkPolicyArgs {
    /// The node whose pods are enforced. Not a flag of its own: the binary fills it from
    /// the `--hostname-override` its node components share; the host name, lower-cased,
    /// when left empty.
    #[arg(skip)]
    pub node_name: Option<String>,

    /// Least time between two syncs of the network policy rules; a burst of changes
    /// within it becomes one sync.
    #[arg(
        long = "network-policy-min-sync-period",
        value_parser = skiff_proxy::parse_duration,
        default_value = "1s"
    )]
    pub min_sync_period: Duration,

    /// Longest time between two syncs of the network policy rules, even without changes
    /// (an unchanged table is rewritten only hourly).
    #[arg(
        long = "network-policy-sync-period",
        value_parser = skiff_proxy::parse_duration,
        default_value = "30s"
    )]
    pub sync_period: Duration,

    /// Where to serve the network policy enforcer's Prometheus metrics (`/metrics`); not
    /// served when unset (the binary may mount [`metrics_router`] elsewhere).
    #[arg(long = "network-policy-metrics-bind-address")]
    pub metrics_bind_address: Option<SocketAddr>,
}

impl Default for NetworkPolicyArgs {
    fn default() -> Self {
        NetworkPolicyArgs {
            node_name: None,
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            metrics_bind_address: None,
        }
    }
}

impl NetworkPolicyArgs {
    pub fn node_name(&self) -> Result<String, Error> {
        let name = match self.node_name.as_deref().filter(|n| !n.trim().is_empty()) {
            Some(name) => name.to_string(),
            None => {
                std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(Error::NodeName)?
            }
        };
        Ok(name.trim().to_lowercase())
    }
}

const BRIDGE_NF_CALL: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Makes bridged IPv4 traffic (pod to pod on the node's bridge) cross the `inet` hooks,
/// without which the rules would see only routed traffic. A warning, not an error, when
/// it cannot: the `br_netfilter` module may be missing, or the sysctl read-only.
pub fn ensure_bridge_netfilter() {
    match std::fs::read_to_string(BRIDGE_NF_CALL) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => {
            if let Err(error) = std::fs::write(BRIDGE_NF_CALL, "1") {
                tracing::warn!(%error, "cannot set {BRIDGE_NF_CALL}; network policies will not filter traffic between pods of this node");
            }
        }
        Err(error) => {
            tracing::warn!(%error, "no {BRIDGE_NF_CALL} (is br_netfilter loaded?); network policies will not filter traffic between pods of this node")
        }
    }
}

/// Runs the enforcer until the process ends: turns on `br_netfilter`'s call into the
/// `inet` hooks, watches NetworkPolicies, Pods and Namespaces, and keeps table
/// `inet skiff-netpol` in step; serves metrics if `--network-policy-metrics-bind-address`
/// is set.
pub async fn run(client: Client, args: NetworkPolicyArgs) -> Result<(), Error> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    if let Some(addr) = args.metrics_bind_address {
        skiff_metrics::serve("network-policy", addr, metrics_router(Arc::new(registry)))
            .await
            .map_err(|source| Error::Metrics { addr, source })?;
    }
    ensure_bridge_netfilter();
    run_with(client, args, NftCommand::default(), metrics).await
}

/// [`run`] with the kernel boundary and metrics supplied (and the host's sysctls left
/// alone): tests pass a [`Recorder`] or an [`NftCommand`] that enters a network namespace.
pub async fn run_with<A: Apply>(
    client: Client,
    args: NetworkPolicyArgs,
    applier: A,
    metrics: Metrics,
) -> Result<(), Error> {
    let node_name = args.node_name()?;
    let notify = Arc::new(Notify::new());
    let policies = skiff_proxy::watch::<NetworkPolicy>(Api::all(client.clone()), notify.clone());
    let pods = skiff_proxy::watch::<Pod>(Api::all(client.clone()), notify.clone());
    let namespaces = skiff_proxy::watch::<Namespace>(Api::all(client), notify.clone());
    // Syncing before every list arrived could open a policy's pods for a moment (no
    // policies yet) or shut out peers (no pods yet).
    policies
        .wait_until_ready()
        .await
        .map_err(|_| Error::WatchStopped("NetworkPolicy"))?;
    pods.wait_until_ready()
        .await
        .map_err(|_| Error::WatchStopped("Pod"))?;
    namespaces
        .wait_until_ready()
        .await
        .map_err(|_| Error::WatchStopped("Namespace"))?;
    tracing::info!(node = %node_name, "network policy enforcer started (nftables)");

    let mut enforcer = Some(Enforcer::new(applier).with_metrics(metrics));
    let mut pacer = SyncPacer::new(notify, args.min_sync_period, args.sync_period);
    loop {
        pacer.wait().await;
        let (policy_list, pod_list, namespace_list) =
            (policies.state(), pods.state(), namespaces.state());
        let model = model::build(
            policy_list.iter().map(|p| p.as_ref()),
            pod_list.iter().map(|p| p.as_ref()),
            namespace_list.iter().map(|n| n.as_ref()),
            &node_name,
        );
        let Some(mut e) = enforcer.take() else {
            return Err(Error::SyncTask("enforcer lost".into()));
        };
        // nft blocks; keep it off the async workers.
        let (e, result) = tokio::task::spawn_blocking(move || {
            let result = e.sync(&model);
            (e, result)
        })
        .await
        .map_err(|e| Error::SyncTask(e.to_string()))?;
        enforcer = Some(e);
        pacer.done(result.is_ok());
        match result {
            Ok(kind) => tracing::debug!(?kind, "network policy rules synced"),
            Err(error) => tracing::warn!(%error, "network policy rules sync failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        netpol: NetworkPolicyArgs,
    }

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["skiff"]).expect("defaults");
        assert_eq!(cli.netpol.min_sync_period, Duration::from_secs(1));
        assert_eq!(cli.netpol.sync_period, Duration::from_secs(30));
        assert!(cli.netpol.node_name.is_none());

        let mut cli = Cli::try_parse_from([
            "skiff",
            "--network-policy-min-sync-period=250ms",
            "--network-policy-sync-period=1m",
            "--network-policy-metrics-bind-address=127.0.0.1:10259",
        ])
        .expect("flags");
        assert_eq!(cli.netpol.min_sync_period, Duration::from_millis(250));
        assert_eq!(cli.netpol.sync_period, Duration::from_secs(60));
        cli.netpol.node_name = Some("Node-1".into());
        assert_eq!(cli.netpol.node_name().expect("name"), "node-1");
        assert!(Cli::try_parse_from(["skiff", "--hostname-override=x"]).is_err());
    }
}
