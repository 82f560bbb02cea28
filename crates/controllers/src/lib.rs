//! The controller manager: upstream's control loops over the Kubernetes API.
//!
//! Start reading at [`run`]: it builds the shared informers ([`informer`]), creates each
//! controller, starts the watches, and runs every controller's workers. Each controller
//! is the same pattern, as upstream and kube-rs have it:
//!
//! ```text
//! watch (informer) ──handlers──► work queue of keys ──workers──► reconcile(key)
//!                                  (dedup, back-off)               (idempotent)
//! ```
//!
//! - [`queue`]: the rate-limited work queue (dedup, per-key exponential back-off, never
//!   one key in two workers).
//! - [`informer`]: one watch + cache per resource type, shared between controllers.
//! - [`expectations`]: creations/deletions asked for and not yet seen, so a burst of
//!   events never over-creates.
//! - [`owner`]: owner references and the adopt/release rules.
//! - one module per controller: [`replicaset`], [`deployment`], [`daemonset`], [`statefulset`], [`job`], [`cronjob`], [`garbagecollector`], …
//!
//! The controllers talk to the API server only through the `kube` client, as any other
//! client would.

pub mod certificates;
pub mod controller;
pub mod credentials;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod error;
pub use skiff_events as events;
pub mod disruption;
pub mod endpoints;
pub mod expectations;
pub mod garbagecollector;
pub mod history;
pub mod informer;
pub mod job;
pub mod metrics;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod owned_pods;
pub mod owner;
pub mod per_namespace;
pub mod podautoscaler;
pub mod podgc;
pub mod pods;
pub mod queue;
pub mod replicaset;
pub mod resourcequota;
pub mod servicelb;
pub mod statefulset;
pub mod ttlafterfinished;

pub use error::{Error, Result};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use informer::InformerFactory;

/// The controllers [`run`] knows, by the names `--controllers` takes.
pub const CONTROLLERS: &[&str] = &[
    "replicaset",
    "replicationcontroller",
    "deployment",
    "daemonset",
    "statefulset",
    "job",
    "cronjob",
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "root-ca-cert-publisher",
    "ttl-after-finished",
    "pod-garbage-collector",
    "nodelifecycle",
    "nodeipam",
    "disruption",
    "resourcequota",
    "endpoint",
    "endpointslice",
    "endpointslicemirroring",
    "service-lb",
    "horizontalpodautoscaling",
    "csrapproving",
    "csrsigning",
];

/// Flags of `skiff controller-manager` (and of the controller manager in `skiff server`).
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerManagerArgs {
    /// Kubeconfig to reach the API server (the binary builds the client from it).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Controllers to run: `*` for all, names to pick, `-name` to leave one out.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// The CA bundle published in every namespace as the `kube-root-ca.crt` ConfigMap;
    /// without it, the CA of the kubeconfig's cluster.
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,
    /// Act only while holding the `kube-system/kube-controller-manager` Lease, so that
    /// several controller managers can run and one acts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How long a lease holder that stopped renewing keeps it (upstream's 15s).
    #[arg(long, default_value = "15s", value_parser = parse_seconds)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up (upstream's 10s).
    #[arg(long, default_value = "10s", value_parser = parse_seconds)]
    pub leader_elect_renew_deadline: Duration,
    /// How often candidates try to acquire or renew (upstream's 2s).
    #[arg(long, default_value = "2s", value_parser = parse_seconds)]
    pub leader_elect_retry_period: Duration,
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_rc_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_deployment_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_disruption_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_resource_quota_syncs: usize,
    #[arg(long, default_value_t = 2)]
    pub concurrent_daemonset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_statefulset_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_job_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_horizontal_pod_autoscaler_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_cron_job_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_ttl_after_finished_syncs: usize,
    #[arg(long, default_value_t = 20)]
    pub concurrent_gc_syncs: usize,
    /// How often node heartbeats are checked.
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    pub node_monitor_period: Duration,
    /// How long a node may go without renewing its Lease before it is `Unknown`.
    #[arg(long, default_value = "50s", value_parser = parse_seconds)]
    pub node_monitor_grace_period: Duration,
    /// Nodes per second tainted `NoExecute` (so evicted) in a healthy zone.
    #[arg(long, default_value_t = 0.1)]
    pub node_eviction_rate: f64,
    /// Nodes per second tainted in an unhealthy zone larger than
    /// `--large-cluster-size-threshold`.
    #[arg(long, default_value_t = 0.01)]
    pub secondary_node_eviction_rate: f64,
    /// The share of not-ready nodes (more than 2) that makes a zone unhealthy.
    #[arg(long, default_value_t = 0.55)]
    pub unhealthy_zone_threshold: f64,
    /// Unhealthy zones of at most this many nodes stop tainting altogether.
    #[arg(long, default_value_t = 50)]
    pub large_cluster_size_threshold: usize,
    /// Finished pods kept before the oldest are deleted; 0 keeps them all.
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// How often the pod garbage collector runs (upstream's fixed 20s; for tests).
    #[arg(long, default_value = "20s", value_parser = parse_seconds, hide = true)]
    pub pod_gc_period: Duration,
    /// How long a pod's node must be missing before the pod goes (upstream's fixed 40s).
    #[arg(long, default_value = "40s", value_parser = parse_seconds, hide = true)]
    pub pod_gc_quarantine: Duration,
    #[arg(long, default_value_t = 10)]
    pub concurrent_namespace_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_endpoint_syncs: usize,
    #[arg(long, default_value_t = 5)]
    pub concurrent_service_endpoint_syncs: usize,
    /// Endpoints per EndpointSlice before another slice is started.
    #[arg(long, default_value_t = endpoints::slices::DEFAULT_MAX_ENDPOINTS_PER_SLICE)]
    pub max_endpoints_per_slice: usize,
    #[arg(long, default_value_t = 5)]
    pub mirroring_concurrent_service_endpoint_syncs: usize,
    /// Endpoints per mirrored EndpointSlice (upstream's default 1000).
    #[arg(long, default_value_t = 1000)]
    pub mirroring_max_endpoints_per_subset: usize,
    /// Give every Node a pod subnet of `--cluster-cidr` (upstream's default: off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub allocate_node_cidrs: bool,
    /// The range node pod subnets come from, e.g. `10.42.0.0/16` (IPv4).
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// The prefix length of each node's pod subnet.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Addresses for LoadBalancer Services: IPv4 CIDRs or `first-last` ranges, comma
    /// separated; empty leaves them `<pending>`, as upstream without a cloud provider.
    #[arg(long, default_value = "", value_parser = servicelb::Pool::parse)]
    pub service_lb_pool: servicelb::Pool,
    /// The CA certificate (PEM) that signs approved CertificateSigningRequests of the
    /// `kubernetes.io/kube-apiserver-client*` and `kubelet-serving` signers; without it
    /// and its key, nothing is signed.
    #[arg(long)]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// The CA's private key (PEM).
    #[arg(long)]
    pub cluster_signing_key_file: Option<PathBuf>,
    /// The longest a signed certificate is valid (a request may ask for less).
    #[arg(long, default_value = "8760h", value_parser = parse_seconds)]
    pub cluster_signing_duration: Duration,
    /// Each controller writes as its own service account in kube-system (bound by the
    /// bootstrap policy to its `system:controller:*` role), not as the controller manager.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub use_service_account_credentials: bool,
    /// Where to serve Prometheus metrics (`/metrics`: upstream's `workqueue_*` families
    /// and `leader_election_master_status`), leader or not.
    #[arg(long)]
    pub metrics_bind_address: Option<std::net::SocketAddr>,
}

impl Default for ControllerManagerArgs {
    fn default() -> Self {
        ControllerManagerArgs {
            kubeconfig: None,
            root_ca_file: None,
            controllers: vec!["*".into()],
            leader_elect: true,
            leader_elect_lease_duration: Duration::from_secs(15),
            leader_elect_renew_deadline: Duration::from_secs(10),
            leader_elect_retry_period: Duration::from_secs(2),
            concurrent_replicaset_syncs: 5,
            concurrent_rc_syncs: 5,
            concurrent_deployment_syncs: 5,
            concurrent_disruption_syncs: 5,
            concurrent_resource_quota_syncs: 5,
            concurrent_daemonset_syncs: 2,
            concurrent_statefulset_syncs: 5,
            concurrent_job_syncs: 5,
            concurrent_horizontal_pod_autoscaler_syncs: 5,
            concurrent_cron_job_syncs: 5,
            concurrent_ttl_after_finished_syncs: 5,
            concurrent_gc_syncs: 20,
            node_monitor_period: Duration::from_secs(5),
            node_monitor_grace_period: Duration::from_secs(50),
            node_eviction_rate: 0.1,
            secondary_node_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
            terminated_pod_gc_threshold: 12500,
            pod_gc_period: Duration::from_secs(20),
            pod_gc_quarantine: Duration::from_secs(40),
            concurrent_namespace_syncs: 10,
            concurrent_endpoint_syncs: 5,
            concurrent_service_endpoint_syncs: 5,
            max_endpoints_per_slice: endpoints::slices::DEFAULT_MAX_ENDPOINTS_PER_SLICE,
            mirroring_concurrent_service_endpoint_syncs: 5,
            mirroring_max_endpoints_per_subset: 1000,
            allocate_node_cidrs: false,
            cluster_cidr: None,
            node_cidr_mask_size: 24,
            service_lb_pool: servicelb::Pool::default(),
            cluster_signing_cert_file: None,
            cluster_signing_key_file: None,
            cluster_signing_duration: Duration::from_secs(365 * 24 * 3600),
            use_service_account_credentials: false,
            metrics_bind_address: None,
        }
    }
}

impl ControllerManagerArgs {
    /// Whether `--controllers` enables `name` (upstream's syntax).
    pub fn enabled(&self, name: &str) -> bool {
        if self.controllers.iter().any(|c| c == &format!("-{name}")) {
            return false;
        }
        self.controllers.iter().any(|c| c == "*" || c == name)
    }
}

/// `15s`, `500ms`, or bare seconds.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text.strip_suffix('s').unwrap_or(text), 1.0)
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|n| *n >= 0.0)
        .map(|n| Duration::from_secs_f64(n * unit))
        .ok_or_else(|| format!("invalid duration {text:?}: use e.g. 15s, 500ms, 5m or 8760h"))
}

/// Runs the enabled controllers until the task is cancelled (dropped); with
/// `--leader-elect`, only while holding the controller manager's Lease (losing it ends
/// the run with an error, as upstream's controller manager exits).
pub async fn run(client: kube::Client, args: ControllerManagerArgs) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(metrics::ControllerManagerMetrics::default());
    if let Some(address) = args.metrics_bind_address {
        skiff_metrics::serve(
            "controller-manager",
            address,
            skiff_metrics::router(metrics.registry()),
        )
        .await
        .with_context(|| format!("serving metrics on {address}"))?;
    }
    if !args.leader_elect {
        return run_controllers(client, args, metrics).await;
    }
    let mut lease = skiff_leaderelection::LeaseConfig::new(
        "kube-system",
        LEASE_NAME,
        skiff_leaderelection::identity(),
    );
    lease.lease_duration = args.leader_elect_lease_duration;
    lease.renew_deadline = args.leader_elect_renew_deadline;
    lease.retry_period = args.leader_elect_retry_period;
    tracing::info!(identity = %lease.identity, "waiting to lead (Lease kube-system/kube-controller-manager)");
    metrics.set_leader(LEASE_NAME, false);
    let leading = async {
        // Lost leadership drops this future: the guard turns the gauge back to 0.
        let _leading = LeaderGauge::set(&metrics);
        run_controllers(client.clone(), args, metrics.clone()).await
    };
    skiff_leaderelection::run_as_leader(client.clone(), lease, leading).await?
}

const LEASE_NAME: &str = "kube-controller-manager";

/// Holds `leader_election_master_status` at 1 while alive.
struct LeaderGauge<'a>(&'a metrics::ControllerManagerMetrics);

impl<'a> LeaderGauge<'a> {
    fn set(metrics: &'a metrics::ControllerManagerMetrics) -> LeaderGauge<'a> {
        metrics.set_leader(LEASE_NAME, true);
        LeaderGauge(metrics)
    }
}

impl Drop for LeaderGauge<'_> {
    fn drop(&mut self) {
        self.0.set_leader(LEASE_NAME, false);
    }
}

async fn run_controllers(
    client: kube::Client,
    args: ControllerManagerArgs,
    metrics: Arc<metrics::ControllerManagerMetrics>,
) -> anyhow::Result<()> {
    let factory = InformerFactory::with_metrics(client.clone(), metrics);
    if args.use_service_account_credentials {
        let config = client_config(&args).await?;
        let clients = credentials::service_account_clients(&client, &config).await?;
        factory.use_accounts(clients);
    }
    // Every controller registers its handlers before the watches start.
    let replicaset = args
        .enabled("replicaset")
        .then(|| replicaset::ReplicaSetController::new(&factory));
    let replication_manager = args
        .enabled("replicationcontroller")
        .then(|| replicaset::ReplicationManager::new(&factory));
    let resource_quota = args
        .enabled("resourcequota")
        .then(|| resourcequota::ResourceQuotaController::new(&factory));
    let disruption = args
        .enabled("disruption")
        .then(|| disruption::DisruptionController::new(&factory));
    let endpoints = args
        .enabled("endpoint")
        .then(|| endpoints::legacy::EndpointsController::new(&factory));
    let endpoint_slices = args.enabled("endpointslice").then(|| {
        endpoints::slices::EndpointSliceController::new(&factory, args.max_endpoints_per_slice)
    });
    let mirroring = args.enabled("endpointslicemirroring").then(|| {
        endpoints::slices::EndpointSliceController::mirroring(
            &factory,
            args.mirroring_max_endpoints_per_subset,
        )
    });
    let deployment = args
        .enabled("deployment")
        .then(|| deployment::DeploymentController::new(&factory));
    let job = args
        .enabled("job")
        .then(|| job::JobController::new(&factory));
    let daemon_set = args
        .enabled("daemonset")
        .then(|| daemonset::DaemonSetController::new(&factory));
    let stateful_set = args
        .enabled("statefulset")
        .then(|| statefulset::StatefulSetController::new(&factory));
    let cron_job = args
        .enabled("cronjob")
        .then(|| cronjob::CronJobController::new(&factory));
    let ttl = args
        .enabled("ttl-after-finished")
        .then(|| ttlafterfinished::TtlAfterFinishedController::new(&factory));
    let pod_gc = args.enabled("pod-garbage-collector").then(|| {
        podgc::PodGcController::new(
            &factory,
            podgc::PodGcSettings {
                period: args.pod_gc_period,
                quarantine: args.pod_gc_quarantine,
                terminated_threshold: args.terminated_pod_gc_threshold,
            },
        )
    });
    let node_lifecycle = args.enabled("nodelifecycle").then(|| {
        nodelifecycle::NodeLifecycleController::new(
            &factory,
            nodelifecycle::NodeLifecycleSettings {
                monitor_period: args.node_monitor_period,
                grace_period: args.node_monitor_grace_period,
                eviction_rates: nodelifecycle::EvictionRates {
                    healthy: args.node_eviction_rate,
                    secondary: args.secondary_node_eviction_rate,
                    unhealthy_zone_threshold: args.unhealthy_zone_threshold,
                    large_cluster_size_threshold: args.large_cluster_size_threshold,
                },
            },
        )
    });
    let node_ipam = (args.enabled("nodeipam") && args.allocate_node_cidrs)
        .then(|| {
            nodeipam::NodeIpamController::new(
                &factory,
                args.cluster_cidr.as_deref(),
                args.node_cidr_mask_size,
            )
        })
        .and_then(|made| {
            made.inspect_err(|error| tracing::error!(%error, "not allocating node CIDRs"))
                .ok()
        });
    let namespace = args
        .enabled("namespace")
        .then(|| namespace::NamespaceController::new(&factory));
    let service_accounts = args
        .enabled("serviceaccount")
        .then(|| per_namespace::service_accounts(&factory));
    let csr_approving = args
        .enabled("csrapproving")
        .then(|| certificates::CsrApprovingController::new(&factory));
    let csr_signing = match (
        args.enabled("csrsigning"),
        &args.cluster_signing_cert_file,
        &args.cluster_signing_key_file,
    ) {
        (true, Some(cert_file), Some(key_file)) => Some(certificates::CsrSigningController::new(
            &factory,
            certificates::SigningSettings {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                duration: args.cluster_signing_duration,
            },
        )),
        (true, _, _) => {
            tracing::warn!("not signing certificates: no --cluster-signing-cert-file and --cluster-signing-key-file");
            None
        }
        _ => None,
    };
    let root_ca = match args.enabled("root-ca-cert-publisher") {
        true => match root_ca_pem(&args) {
            Ok(pem) => Some(per_namespace::root_ca_config_maps(&factory, pem)),
            Err(error) => {
                tracing::warn!(%error, "not publishing kube-root-ca.crt: no CA bundle");
                None
            }
        },
        false => None,
    };
    let autoscaler = args
        .enabled("horizontalpodautoscaling")
        .then(|| podautoscaler::HorizontalController::new(&factory));
    let service_lb = (args.enabled("service-lb") && !args.service_lb_pool.is_empty())
        .then(|| servicelb::ServiceLbController::new(&factory, args.service_lb_pool.clone()));
    factory.start();
    factory.wait_synced().await;
    let mut tasks = tokio::task::JoinSet::new();
    spawn_reconciler(&mut tasks, replicaset, args.concurrent_replicaset_syncs);
    spawn_reconciler(&mut tasks, replication_manager, args.concurrent_rc_syncs);
    spawn_reconciler(
        &mut tasks,
        resource_quota,
        args.concurrent_resource_quota_syncs,
    );
    spawn_reconciler(&mut tasks, disruption, args.concurrent_disruption_syncs);
    spawn_reconciler(&mut tasks, endpoints, args.concurrent_endpoint_syncs);
    spawn_reconciler(
        &mut tasks,
        endpoint_slices,
        args.concurrent_service_endpoint_syncs,
    );
    spawn_reconciler(
        &mut tasks,
        mirroring,
        args.mirroring_concurrent_service_endpoint_syncs,
    );
    spawn_reconciler(&mut tasks, deployment, args.concurrent_deployment_syncs);
    spawn_reconciler(&mut tasks, job, args.concurrent_job_syncs);
    spawn_reconciler(
        &mut tasks,
        autoscaler,
        args.concurrent_horizontal_pod_autoscaler_syncs,
    );
    spawn_reconciler(&mut tasks, daemon_set, args.concurrent_daemonset_syncs);
    spawn_reconciler(&mut tasks, stateful_set, args.concurrent_statefulset_syncs);
    spawn_reconciler(&mut tasks, cron_job, args.concurrent_cron_job_syncs);
    spawn_reconciler(&mut tasks, ttl, args.concurrent_ttl_after_finished_syncs);
    spawn_reconciler(&mut tasks, namespace, args.concurrent_namespace_syncs);
    spawn_reconciler(&mut tasks, service_accounts, 1);
    spawn_reconciler(&mut tasks, root_ca, 1);
    spawn_reconciler(&mut tasks, csr_approving, 5);
    spawn_reconciler(&mut tasks, csr_signing, 5);
    spawn_reconciler(&mut tasks, node_ipam, nodeipam::WORKERS);
    spawn_reconciler(&mut tasks, service_lb, 2);
    if let Some(controller) = node_lifecycle {
        tasks.spawn(controller.run());
    }
    if let Some(controller) = pod_gc {
        tasks.spawn(controller.run());
    }
    if args.enabled("garbagecollector") {
        let collector = garbagecollector::GarbageCollector::new(&factory);
        tasks.spawn(collector.run(args.concurrent_gc_syncs));
    }
    tracing::info!(controllers = ?CONTROLLERS.iter().filter(|c| args.enabled(c)).collect::<Vec<_>>(), "controller manager running");
    while let Some(result) = tasks.join_next().await {
        result?;
    }
    Ok(())
}

/// Runs an enabled controller's reconcile workers in `tasks`.
fn spawn_reconciler<C>(
    tasks: &mut tokio::task::JoinSet<()>,
    controller: Option<Arc<C>>,
    workers: usize,
) where
    C: controller::Reconcile + Send + Sync + 'static,
{
    if let Some(controller) = controller {
        tasks.spawn(controller::run(controller, workers));
    }
}

/// The client configuration the controller manager reaches the API with (its server and
/// CA serve the controllers' own clients too).
async fn client_config(args: &ControllerManagerArgs) -> anyhow::Result<kube::Config> {
    Ok(match &args.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    })
}

/// The CA bundle to publish: `--root-ca-file`, else the kubeconfig's cluster CA.
fn root_ca_pem(args: &ControllerManagerArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.root_ca_file {
        return std::fs::read_to_string(path)
            .with_context(|| format!("reading --root-ca-file {}", path.display()));
    }
    let path = args
        .kubeconfig
        .as_ref()
        .context("neither --root-ca-file nor --kubeconfig given")?;
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let context_name = kubeconfig.current_context.clone().unwrap_or_default();
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .context("the kubeconfig's current context names no cluster")?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .context("the kubeconfig's cluster is missing")?;
    if let Some(data) = &cluster.certificate_authority_data {
        use base64::Engine;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("decoding certificate-authority-data")?;
        return String::from_utf8(pem).context("certificate-authority-data is not PEM text");
    }
    let file = cluster
        .certificate_authority
        .as_ref()
        .context("the kubeconfig's cluster has no CA")?;
    std::fs::read_to_string(file).with_context(|| format!("reading CA file {file}"))
}
