//! The service proxy: kube-proxy's job, in nftables, iptables or userspace mode.
//!
//! Every node runs one. It makes a Service's virtual addresses (cluster IP, NodePorts,
//! external and load-balancer IPs) lead to the Service's endpoints, by programming the
//! node's kernel.
//!
//! ```text
//!  watch Services ───────┐                  Backend::render
//!  watch EndpointSlices ─┴─► model::build ─► (nftables | iptables) ─► diff with last applied
//!        (reflector stores)   (pure)           (a Ruleset / Tables value)      │
//!                                                                              ▼
//!                          Apply: one `nft -f -` transaction, or `iptables-restore --noflush`
//! ```
//!
//! - [`model`] reduces the API objects to one [`model::ServicePort`] per service port,
//!   with endpoints chosen as upstream does (ready ones; serving-and-terminating ones when
//!   none is ready; only this node's under a `Local` traffic policy). Both modes render
//!   the same model.
//! - [`nftables`] (the default mode) renders the model into a [`nftables::Ruleset`] in
//!   table `ip skiff-proxy` (upstream's layout: verdict maps keyed by address, protocol
//!   and port, one chain per service and per endpoint, random load balancing with
//!   `numgen`), and writes transactions: the whole table at start and after a failure,
//!   otherwise only the chains and map elements that differ from the last applied ruleset.
//! - [`iptables`] (`--proxy-mode iptables`) renders upstream's `KUBE-SERVICES`,
//!   `KUBE-SVC-*`, `KUBE-SEP-*`… chains of the nat and filter tables into
//!   [`iptables::Tables`], written the same way: every chain, or only those that differ.
//! - [`userspace`] (`--proxy-mode userspace`) is upstream's first proxy: the proxy
//!   listens on a local port per Service port, relays every TCP connection and UDP
//!   session itself (round robin, ClientIP affinity), and its table `ip skiff-userspace`
//!   only redirects the Services' addresses to those ports.
//! - [`proxier::Proxier`] holds the last applied rules and does one sync, for either
//!   [`proxier::Backend`]; [`run`] watches the API, batches bursts of events into one sync
//!   at most every `--min-sync-period`, and syncs every `--sync-period` regardless.
//! - [`apply::Apply`] is the kernel boundary: [`apply::NftCommand`] runs `nft`,
//!   [`apply::IptablesCommand`] runs `iptables-restore` (and keeps the built-in chains'
//!   jumps to ours), [`apply::Recorder`] captures transactions for tests.
//!
//! Start reading at [`run`]. For benchmarks, [`model::synthetic`], [`full_sync`] and
//! [`incremental_sync`] (or a backend's `render` and the transaction functions it feeds)
//! are the pure pieces. Only IPv4 exists so far.

pub mod apply;
pub mod conntrack;
pub mod healthcheck;
pub mod iptables;
pub mod metrics;
pub mod model;
pub mod nftables;
pub mod pacer;
pub mod proxier;
#[cfg(test)]
mod testutil;
pub mod userspace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

pub use apply::{Apply, IptablesCommand, NftCommand, Recorder};
pub use iptables::{Iptables, Tables};
pub use metrics::Metrics;
pub use model::RenderConfig;
pub use model::{Ipv4Cidr, Model};
pub use nftables::{Nftables, Ruleset};
pub use pacer::SyncPacer;
pub use proxier::{Backend, Proxier, SyncKind};
pub use userspace::Userspace;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot determine the node name: {0}; pass --hostname-override")]
    NodeName(std::io::Error),
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("nft refused the transaction ({status}): {stderr}")]
    Nft { status: String, stderr: String },
    #[error("`{command}` failed ({status}): {stderr}")]
    Iptables {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("the {0} watch stopped before its first list")]
    WatchStopped(&'static str),
    #[error("sync task failed: {0}")]
    SyncTask(String),
    #[error("listening for {portal}: {source}")]
    Listen {
        portal: String,
        source: std::io::Error,
    },
    #[error("metrics server on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    Nftables,
    Iptables,
    Userspace,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ProxyArgs {
    /// How Services are programmed: `nftables` (table `ip skiff-proxy`), `iptables`
    /// (upstream's `KUBE-*` chains in the nat and filter tables) or `userspace` (the
    /// proxy relays every connection itself; table `ip skiff-userspace` redirects to it).
    #[arg(long = "proxy-mode", value_enum, default_value = "nftables")]
    pub proxy_mode: ProxyMode,

    /// The name of this node, deciding which endpoints are local for the `Local` traffic
    /// policies. Defaults to the host name, lower-cased.
    #[arg(long = "hostname-override")]
    pub hostname_override: Option<String>,

    /// The pod network (e.g. 10.88.0.0/16). Traffic to a cluster IP from outside it is
    /// masqueraded; without it, only hairpin and NodePort/external traffic is.
    #[arg(long = "cluster-cidr")]
    pub cluster_cidr: Option<Ipv4Cidr>,

    /// Comma-separated CIDRs of the local addresses NodePorts answer on. Empty: every
    /// local address except 127.0.0.0/8.
    #[arg(long = "nodeport-addresses", value_delimiter = ',')]
    pub nodeport_addresses: Vec<Ipv4Cidr>,

    /// Least time between two syncs; a burst of changes within it becomes one sync.
    #[arg(long = "min-sync-period", value_parser = parse_duration, default_value = "1s")]
    pub min_sync_period: Duration,

    /// Longest time between two syncs, even without changes.
    #[arg(long = "sync-period", value_parser = parse_duration, default_value = "30s")]
    pub sync_period: Duration,

    /// The bit of the packet mark used to flag packets for masquerading (0-31).
    #[arg(long = "masquerade-bit", default_value_t = 14, value_parser = clap::value_parser!(u8).range(0..=31))]
    pub masquerade_bit: u8,

    /// How long a UDP session of the userspace mode lives without a datagram either way.
    #[arg(long = "udp-timeout", value_parser = parse_duration, default_value = "250ms")]
    pub udp_timeout: Duration,

    /// Where to serve Prometheus metrics (`/metrics`); not served when unset.
    #[arg(long = "proxy-metrics-bind-address")]
    pub metrics_bind_address: Option<SocketAddr>,
}

impl Default for ProxyArgs {
    fn default() -> Self {
        ProxyArgs {
            proxy_mode: ProxyMode::Nftables,
            hostname_override: None,
            cluster_cidr: None,
            nodeport_addresses: Vec::new(),
            min_sync_period: Duration::from_secs(1),
            sync_period: Duration::from_secs(30),
            masquerade_bit: 14,
            udp_timeout: userspace::DEFAULT_UDP_TIMEOUT,
            metrics_bind_address: None,
        }
    }
}

impl ProxyArgs {
    pub fn render_config(&self) -> RenderConfig {
        RenderConfig {
            cluster_cidr: self.cluster_cidr,
            masquerade_bit: self.masquerade_bit,
            nodeport_addresses: self.nodeport_addresses.clone(),
        }
    }

    pub fn node_name(&self) -> Result<String, Error> {
        let name = match &self.hostname_override {
            Some(name) => name.clone(),
            None => {
                std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(Error::NodeName)?
            }
        };
        Ok(name.trim().to_lowercase())
    }
}

/// Go durations (`1s`, `1m30s`), as upstream's flags take them.
pub use skiff_quantity::parse_duration;

/// An axum router serving `registry` at `/metrics`, for the binary to mount.
pub use skiff_metrics::router as metrics_router;

/// The transaction that writes everything for `model` in `mode` (what a first sync
/// sends): an `nft -f -` script, or `iptables-restore --noflush` input. The userspace
/// mode's listeners are numbered from 40000 ([`userspace::placeholder_ports`]).
pub fn full_sync(mode: ProxyMode, model: &Model, config: &RenderConfig) -> String {
    match mode {
        ProxyMode::Nftables => Nftables.full_transaction(&Nftables.render(model, config)),
        ProxyMode::Iptables => Iptables.full_transaction(&Iptables.render(model, config)),
        ProxyMode::Userspace => {
            userspace::rules::render(model, &userspace::placeholder_ports(model), config)
        }
    }
}

/// The transaction that moves the kernel from `old` to `new` in `mode`, touching only
/// what differs (what a later sync sends); `None` when they render the same.
pub fn incremental_sync(
    mode: ProxyMode,
    old: &Model,
    new: &Model,
    config: &RenderConfig,
) -> Option<String> {
    fn diff<B: Backend>(b: B, old: &Model, new: &Model, config: &RenderConfig) -> Option<String> {
        b.update_transaction(&b.render(old, config), &b.render(new, config), false)
    }
    match mode {
        ProxyMode::Nftables => diff(Nftables, old, new, config),
        ProxyMode::Iptables => diff(Iptables, old, new, config),
        // The userspace table is small and always written whole.
        ProxyMode::Userspace => {
            let new_tx = full_sync(mode, new, config);
            (full_sync(mode, old, config) != new_tx).then_some(new_tx)
        }
    }
}

/// Runs the proxy until the process ends: watches Services and EndpointSlices and keeps
/// the node's nftables table (or iptables chains, with `--proxy-mode iptables`) in step,
/// serving metrics if `--proxy-metrics-bind-address` is set.
pub async fn run(client: Client, args: ProxyArgs) -> Result<(), Error> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    if let Some(addr) = args.metrics_bind_address {
        skiff_metrics::serve("proxy", addr, metrics_router(Arc::new(registry)))
            .await
            .map_err(|source| Error::Metrics { addr, source })?;
    }
    remove_other_mode(args.proxy_mode);
    match args.proxy_mode {
        ProxyMode::Nftables | ProxyMode::Userspace => {
            run_with(client, args, NftCommand::default(), metrics).await
        }
        ProxyMode::Iptables => run_with(client, args, IptablesCommand::default(), metrics).await,
    }
}

/// Removes what the other mode left on this host (a node that switched modes), as
/// upstream's proxy cleans up after its other modes: two sets of rules for the same
/// Services would both match, the stale one first perhaps. Best effort: nothing there,
/// or no tool for it, is no error.
fn remove_other_mode(mode: ProxyMode) {
    let quiet = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
    };
    for (table, owner) in [
        (nftables::TABLE, ProxyMode::Nftables),
        (userspace::rules::TABLE, ProxyMode::Userspace),
    ] {
        if mode != owner {
            let _ = quiet("nft", &["delete", "table", "ip", table]);
        }
    }
    if mode != ProxyMode::Iptables {
        for jump in iptables::JUMPS {
            let mut args = vec!["-w", "-t", jump.table, "-D", jump.chain];
            args.extend_from_slice(jump.rule);
            while quiet("iptables", &args).is_some() {}
        }
        for table in ["nat", "filter"] {
            let Some(saved) = quiet("iptables-save", &["-t", table]) else {
                continue;
            };
            let chains: Vec<String> = String::from_utf8_lossy(&saved.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix(':'))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| c.starts_with("KUBE-"))
                .map(String::from)
                .collect();
            for flag in ["-F", "-X"] {
                for chain in &chains {
                    let _ = quiet("iptables", &["-w", "-t", table, flag, chain]);
                }
            }
        }
    }
}

/// [`run`] with the kernel boundary and metrics supplied: tests pass a [`Recorder`], or
/// an [`NftCommand`] / [`IptablesCommand`] that enters a network namespace. The applier
/// must match `args.proxy_mode` (the userspace mode writes its table with nft).
pub async fn run_with<A: Apply>(
    client: Client,
    args: ProxyArgs,
    applier: A,
    metrics: Metrics,
) -> Result<(), Error> {
    let config = args.render_config();
    match args.proxy_mode {
        ProxyMode::Nftables => {
            let proxier = Proxier::with_backend(Nftables, config, applier);
            sync_loop(client, args, Blocking(Some(proxier.with_metrics(metrics)))).await
        }
        ProxyMode::Iptables => {
            let proxier = Proxier::with_backend(Iptables, config, applier);
            sync_loop(client, args, Blocking(Some(proxier.with_metrics(metrics)))).await
        }
        ProxyMode::Userspace => {
            let proxier = Userspace::new(config, applier)
                .with_udp_timeout(args.udp_timeout)
                .with_metrics(metrics);
            sync_loop(client, args, proxier).await
        }
    }
}

/// One way of bringing the node to a model, for [`sync_loop`]: a kernel [`Proxier`], or
/// the [`Userspace`] proxier and its portals. The outer error ends the loop; the inner
/// one is a failed sync, retried.
trait Syncer: Send + 'static {
    const NAME: &'static str;

    fn sync(
        &mut self,
        model: Model,
    ) -> impl std::future::Future<Output = Result<Result<SyncKind, Error>, Error>> + Send;
}

/// A kernel proxier, lent to a blocking thread for each sync: the kernel tools and the
/// rendering of large rulesets block, and must stay off the async workers.
struct Blocking<A: Apply, B: Backend>(Option<Proxier<A, B>>);

impl<A: Apply, B: Backend> Syncer for Blocking<A, B> {
    const NAME: &'static str = B::NAME;

    async fn sync(&mut self, model: Model) -> Result<Result<SyncKind, Error>, Error> {
        let Some(mut proxier) = self.0.take() else {
            return Err(Error::SyncTask("proxier lost".into()));
        };
        let (proxier, result) = tokio::task::spawn_blocking(move || {
            let result = proxier.sync(&model);
            (proxier, result)
        })
        .await
        .map_err(|e| Error::SyncTask(e.to_string()))?;
        self.0 = Some(proxier);
        Ok(result)
    }
}

impl<A: Apply> Syncer for Userspace<A> {
    const NAME: &'static str = "userspace";

    async fn sync(&mut self, model: Model) -> Result<Result<SyncKind, Error>, Error> {
        Ok(Userspace::sync(self, &model).await)
    }
}

async fn sync_loop<S: Syncer>(
    client: Client,
    args: ProxyArgs,
    mut proxier: S,
) -> Result<(), Error> {
    let node_name = args.node_name()?;
    let notify = Arc::new(Notify::new());
    let services = watch::<Service>(Api::all(client.clone()), notify.clone());
    let slices = watch::<EndpointSlice>(Api::all(client), notify.clone());
    // Syncing before both lists arrived would briefly reject every service.
    services
        .wait_until_ready()
        .await
        .map_err(|_| Error::WatchStopped("Service"))?;
    slices
        .wait_until_ready()
        .await
        .map_err(|_| Error::WatchStopped("EndpointSlice"))?;
    tracing::info!(node = %node_name, mode = S::NAME, "service proxy started");

    let mut health_checks = healthcheck::HealthChecks::default();
    let mut pacer = SyncPacer::new(notify, args.min_sync_period, args.sync_period);
    loop {
        pacer.wait().await;
        let model = model::build(
            services.state().iter().map(|s| s.as_ref()),
            slices.state().iter().map(|s| s.as_ref()),
            &node_name,
        );
        health_checks.update(&model).await;
        let result = proxier.sync(model).await?;
        pacer.done(result.is_ok());
        match result {
            Ok(kind) => tracing::debug!(?kind, "proxy rules synced"),
            Err(error) => {
                tracing::warn!(%error, "proxy rules sync failed; retrying with a full sync")
            }
        }
    }
}

/// A cache of `K` kept by a watch (retrying with back-off), waking `notify` on every
/// change: what a node program that resyncs everything on any change needs. Shared with
/// the NetworkPolicy enforcer.
pub fn watch<K>(api: Api<K>, notify: Arc<Notify>) -> Store<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let kind = K::kind(&Default::default()).to_string();
    let (store, writer) = reflector::store::<K>();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                // The backoff retries; the store keeps its last state meanwhile.
                tracing::warn!(%error, %kind, "watch failed");
                continue;
            }
            notify.notify_one();
        }
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        proxy: ProxyArgs,
    }

    #[test]
    fn flags_parse_with_upstream_defaults() {
        let cli = Cli::try_parse_from(["skiff"]).expect("defaults");
        assert_eq!(cli.proxy.proxy_mode, ProxyMode::Nftables);
        assert_eq!(cli.proxy.min_sync_period, Duration::from_secs(1));
        assert_eq!(cli.proxy.sync_period, Duration::from_secs(30));
        assert_eq!(cli.proxy.masquerade_bit, 14);

        let cli = Cli::try_parse_from([
            "skiff",
            "--proxy-mode=iptables",
            "--hostname-override=Node-1",
            "--cluster-cidr=10.88.0.0/16",
            "--nodeport-addresses=192.168.0.0/16,10.0.0.1/32",
            "--min-sync-period=250ms",
            "--sync-period=1m30s",
        ])
        .expect("flags");
        assert_eq!(cli.proxy.proxy_mode, ProxyMode::Iptables);
        assert_eq!(cli.proxy.node_name().expect("name"), "node-1");
        assert_eq!(cli.proxy.nodeport_addresses.len(), 2);
        assert_eq!(cli.proxy.min_sync_period, Duration::from_millis(250));
        assert_eq!(cli.proxy.sync_period, Duration::from_secs(90));
        assert!(Cli::try_parse_from(["skiff", "--cluster-cidr=10.88.0.0/40"]).is_err());
    }
}
