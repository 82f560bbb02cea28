//! Skiff's scheduler: upstream kube-scheduler's behaviour, through the API server only.
//!
//! It watches pods that name one of its profiles in `spec.schedulerName` (default
//! `default-scheduler`) and have no `spec.nodeName`, picks a node for each, and binds it
//! with a `pods/binding` POST. Where to start reading:
//!
//! - [`run`] and [`SchedulerArgs`]: the entry point the `skiff` binary calls.
//! - [`scheduler`]: informers → [`queue`] → one scheduling cycle per pod → binding task.
//! - [`framework`]: the plugin trait (PreFilter, Filter, PreScore, Score, NormalizeScore),
//!   profiles with score weights, and `schedule` (filter, score, select).
//! - [`plugins`]: one module per group of upstream plugins, each with unit tests that pin
//!   upstream's verdicts and scores.
//! - [`cache`]: nodes with the pods placed on them, and per-cycle snapshots.
//! - [`feedback`]: the `PodScheduled` condition and events, in upstream's words.
//! - [`leader`]: Lease-based leader election (the `skiff-leaderelection` crate, shared
//!   with the controller manager).
//! - [`config`]: the `KubeSchedulerConfiguration` file.
//! - [`metrics`]: upstream's `scheduler_*` Prometheus metrics.

pub mod cache;
pub mod config;
pub mod feedback;
pub mod framework;
pub use skiff_leaderelection as leader;
pub mod metrics;
pub mod plugins;
pub mod preemption;
pub use skiff_quantity as quantity;
pub mod queue;
pub mod resources;
pub mod scheduler;

use std::path::PathBuf;

use anyhow::Context;

pub use framework::{Plugin, Profile};
pub use scheduler::Scheduler;

/// Command-line flags of `skiff scheduler` (and of the scheduler inside `skiff server`).
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// Kubeconfig to reach the API server (the binary builds the client from it).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The `spec.schedulerName` this scheduler serves when no config file names profiles.
    #[arg(long, default_value = "default-scheduler")]
    pub scheduler_name: String,
    /// Run only while holding the `kube-system/kube-scheduler` Lease.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
    /// Namespace of the leader election Lease.
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "kube-scheduler")]
    pub leader_elect_resource_name: String,
    /// A `KubeSchedulerConfiguration` file (profiles, plugin weights, scoring strategy).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`/metrics`, upstream's `scheduler_*`
    /// families); not served when unset.
    #[arg(long)]
    pub metrics_bind_address: Option<std::net::SocketAddr>,
}

impl Default for SchedulerArgs {
    fn default() -> Self {
        SchedulerArgs {
            kubeconfig: None,
            scheduler_name: "default-scheduler".into(),
            leader_elect: true,
            leader_elect_resource_namespace: "kube-system".into(),
            leader_elect_resource_name: "kube-scheduler".into(),
            config: None,
            metrics_bind_address: None,
        }
    }
}

/// This process's leader-election identity: host name plus a unique suffix, as upstream.
/// Runs the scheduler until cancelled (or until it loses its lease, which is an error, as
/// upstream exits then).
pub async fn run(client: kube::Client, args: SchedulerArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => config::FileConfig::load(path)?,
        None => config::FileConfig::default(),
    };
    let profiles = file.profiles(&args.scheduler_name)?;
    tracing::info!(
        profiles = ?profiles.iter().map(|p| p.scheduler_name.as_str()).collect::<Vec<_>>(),
        leader_elect = args.leader_elect,
        "starting scheduler"
    );
    let scheduler = Scheduler::new(client.clone(), profiles);
    if let Some(address) = args.metrics_bind_address {
        skiff_metrics::serve(
            "scheduler",
            address,
            skiff_metrics::router(scheduler.registry()),
        )
        .await
        .with_context(|| format!("serving metrics on {address}"))?;
    }
    if !args.leader_elect {
        return scheduler.run().await;
    }
    let lease = leader::LeaseConfig::new(
        &args.leader_elect_resource_namespace,
        &args.leader_elect_resource_name,
        leader::identity(),
    );
    leader::run_as_leader(client, lease, scheduler.run()).await?
}
