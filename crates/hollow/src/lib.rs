//! Simulated ("hollow") nodes, as kwok and upstream's kubemark make them: Node objects
//! that register, keep their Lease and status fresh, and take the pods bound to them
//! through their lifecycle — Pending → Running with an IP and ready conditions →
//! Succeeded for pods that end, and graceful deletion completed — without containers.
//! Scale tests and the scheduler benchmark run thousands of them in one process.
//!
//! Where to start reading:
//!
//! - [`run`] and [`HollowNodesArgs`]: the entry point `skiff hollow-nodes` calls.
//! - [`fleet`]: the nodes — their objects, registration, Lease renewals and status
//!   reports, spread over each period so that N nodes cost N/period requests a second.
//! - [`metrics`]: nodes registered and requests by operation and result.
//! - [`pods`]: one watch of every bound pod; what each pod needs next is decided by a
//!   pure function ([`pods::next_step`]) and written through `pods/status` or a delete.
//!
//! What a hollow node reports is computed by the kubelet's own pure functions
//! (`skiff_kubelet::node::node_status`, `skiff_kubelet::status::pod_status`), so a
//! hollow node's Node and pods look as a real node's do. Its pod addresses come from its
//! own `spec.podCIDR`, carved out of `--pod-cidr` (not the cluster's range: thousands of
//! hollow nodes would exhaust it); its InternalIP from `--node-ip-range`. Neither is
//! reachable: every hollow Node carries the [`HOLLOW_LABEL`], and the pod network leaves
//! such nodes out of its routes.

pub mod fleet;
pub mod metrics;
pub mod pods;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Taint;
use skiff_controllers::nodeipam::Cidr;

pub use fleet::Fleet;

/// The label every hollow Node carries (value `true`); the pod network leaves such
/// nodes out of its routes.
pub use skiff_podnet::HOLLOW_NODE_LABEL as HOLLOW_LABEL;

/// Command-line flags of `skiff hollow-nodes`.
#[derive(Debug, Clone, clap::Args)]
pub struct HollowNodesArgs {
    /// Kubeconfig to reach the API server (its user must be allowed to write Nodes,
    /// Leases, pod status and pod deletions: the admin kubeconfig is the simple choice).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// How many nodes to run.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Node names are this prefix and the node's ordinal (`hollow-node-0`, …).
    #[arg(long, default_value = "hollow-node-")]
    pub name_prefix: String,
    /// CPU cores of each node (capacity and allocatable).
    #[arg(long, default_value_t = 32)]
    pub cpu: u32,
    /// Memory of each node, as a quantity.
    #[arg(long, default_value = "256Gi", value_parser = parse_bytes)]
    pub memory: i64,
    /// Ephemeral storage of each node, as a quantity (allocatable is 90% of it, as a
    /// kubelet's default eviction threshold leaves).
    #[arg(long, default_value = "100Gi", value_parser = parse_bytes)]
    pub ephemeral_storage: i64,
    /// The most pods each node takes.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Labels of every node, `key=value` comma-separated (besides the kubelet's own
    /// and the hollow label).
    #[arg(long, value_parser = parse_labels, default_value = "")]
    pub labels: BTreeMap<String, String>,
    /// Taints of every node, `key[=value]:Effect` comma-separated; e.g.
    /// `hollow=true:NoSchedule` keeps ordinary workloads off them.
    #[arg(long, value_parser = parse_taints, default_value = "")]
    pub taints: Taints,
    /// Spread the nodes over this many zones (`topology.kubernetes.io/zone` =
    /// `zone-<ordinal mod N>`); 0 leaves the label off.
    #[arg(long, default_value_t = 0)]
    pub zones: usize,
    /// The nodes' InternalIPs, one per node in order from the range's second address
    /// (default: the benchmarking range of RFC 2544).
    #[arg(long, default_value = "198.18.0.0/15")]
    pub node_ip_range: Cidr,
    /// The range the nodes' own pod ranges are carved from.
    #[arg(long, default_value = "10.128.0.0/9")]
    pub pod_cidr: Cidr,
    /// Prefix length of each node's pod range.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Duration of each node's Lease; it is renewed every quarter of it, as a kubelet
    /// renews its own.
    #[arg(long, default_value_t = skiff_kubelet::node::LEASE_DURATION_SECONDS)]
    pub node_lease_duration_seconds: i32,
    /// How long a pod that ends (`restartPolicy` OnFailure or Never) runs before its
    /// containers exit 0 and it becomes Succeeded, e.g. `0s`, `500ms`, `1m`.
    #[arg(long, default_value = "0s", value_parser = skiff_quantity::parse_duration)]
    pub pod_run_duration: Duration,
    /// Most API requests in flight at once (registrations, renewals, pod status).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Where to serve Prometheus metrics (`/metrics`); not served when unset.
    #[arg(long)]
    pub metrics_bind_address: Option<std::net::SocketAddr>,
}

/// The taints flag's value (a newtype: clap takes a `Vec` for a repeated flag).
#[derive(Debug, Clone, Default)]
pub struct Taints(pub Vec<Taint>);

fn parse_bytes(text: &str) -> Result<i64, String> {
    skiff_quantity::parse_value(text).map_err(|e| format!("{text:?}: {e}"))
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("label {pair:?}: expected key=value"))
        })
        .collect()
}

/// `key[=value]:Effect`, as `kubectl taint` spells a taint.
fn parse_taints(text: &str) -> Result<Taints, String> {
    let parse = |spec: &str| {
        let (key_value, effect) = spec
            .rsplit_once(':')
            .ok_or_else(|| format!("taint {spec:?}: expected key[=value]:Effect"))?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(format!(
                "taint {spec:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
            ));
        }
        let (key, value) = match key_value.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (key_value, None),
        };
        if key.is_empty() {
            return Err(format!("taint {spec:?}: the key is empty"));
        }
        Ok(Taint {
            key: key.to_string(),
            value,
            effect: effect.to_string(),
            time_added: None,
        })
    };
    text.split(',')
        .map(str::trim)
        .filter(|spec| !spec.is_empty())
        .map(parse)
        .collect::<Result<_, _>>()
        .map(Taints)
}

/// Registers the nodes, then keeps them and their pods going until cancelled.
pub async fn run(client: kube::Client, args: HollowNodesArgs) -> anyhow::Result<()> {
    let fleet = Arc::new(Fleet::new(client, &args).context("planning the hollow nodes")?);
    if let Some(address) = args.metrics_bind_address {
        let mut registry = prometheus_client::registry::Registry::default();
        fleet.metrics.register(&mut registry);
        skiff_metrics::serve(
            "hollow-nodes",
            address,
            skiff_metrics::router(Arc::new(registry)),
        )
        .await
        .with_context(|| format!("serving metrics on {address}"))?;
    }
    fleet.register_all().await?;
    tokio::select! {
        () = fleet.clone().keep_leases() => Ok(()),
        () = fleet.clone().keep_statuses() => Ok(()),
        result = pods::run(fleet.clone(), args.pod_run_duration) => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_kubectl_spells_them() {
        assert_eq!(
            parse_labels("a=1, b = x,").expect("labels"),
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "x".into())])
        );
        assert!(parse_labels("novalue").is_err());
        let taints = parse_taints("hollow=true:NoSchedule,gpu:NoExecute")
            .expect("taints")
            .0;
        assert_eq!(taints.len(), 2);
        assert_eq!(taints[0].key, "hollow");
        assert_eq!(taints[0].value.as_deref(), Some("true"));
        assert_eq!(taints[1].value, None);
        assert_eq!(taints[1].effect, "NoExecute");
        assert!(parse_taints("a=b:Sometimes").is_err());
        assert!(parse_taints("a=b").is_err());
        assert_eq!(parse_bytes("1Ki"), Ok(1024));
    }
}
