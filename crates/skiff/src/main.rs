//! `skiff`: Kubernetes in one binary. Each subcommand starts one part of a cluster;
//! `skiff server` starts them all on one machine. The components live in their own
//! crates; this crate only parses the command line and starts them.

mod cluster;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use skiff_store::StoreConfig;

/// Every component allocates through mimalloc (see the crate's Cargo.toml for why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "Kubernetes, rewritten in Rust, in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole single-node cluster: the API server and, unless --disable-agent, this
    /// machine's node agent (container runtime and kubelet).
    Server(Box<ServerArgs>),
    /// Run a node agent that joins a running cluster: container runtime, kubelet,
    /// service proxy and NetworkPolicy enforcer for this machine.
    Agent(Box<AgentArgs>),
    /// Run a multi-node cluster on this machine, each node in network namespaces of its
    /// own (as kind does with containers): `cluster create`, `cluster delete`.
    Cluster(cluster::ClusterCommand),
    /// Run only the API server.
    Apiserver(ApiServerArgs),
    /// Run the controller manager: ReplicaSets and Deployments kept as declared.
    ControllerManager(Box<skiff_controllers::ControllerManagerArgs>),
    /// Run the scheduler: bind each unscheduled pod to the best node.
    Scheduler(skiff_scheduler::SchedulerArgs),
    /// Run the kubelet: register this node and run the pods bound to it.
    Kubelet(skiff_kubelet::KubeletArgs),
    /// Run the CRI container runtime (gRPC on a unix socket) for this node.
    Runtime(skiff_runtime::RuntimeArgs),
    /// Manage the runtime's images: import an archive, list, remove, pull.
    Images(skiff_runtime::ImagesArgs),
    /// Run the service proxy: this node's nftables rules for Services.
    Proxy(ProxyCommand),
    /// Run the cluster DNS server: Services and pods by name.
    Dns(DnsCommand),
    /// Run the NetworkPolicy enforcer: this node's pods' nftables rules.
    NetworkPolicy(NetworkPolicyCommand),
    /// Run simulated nodes (as kwok does): registered, heartbeating, taking their pods
    /// through their lifecycle without containers; for scale tests and benchmarks.
    HollowNodes(skiff_hollow::HollowNodesArgs),
}

#[derive(Args, Debug)]
struct NetworkPolicyCommand {
    /// Kubeconfig to reach the API server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The node whose pods are enforced (default: the host name).
    #[arg(long)]
    hostname_override: Option<String>,
    #[command(flatten)]
    policy: skiff_netpol::NetworkPolicyArgs,
}

#[derive(Args, Debug)]
struct ProxyCommand {
    /// Kubeconfig to reach the API server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    proxy: skiff_proxy::ProxyArgs,
}

#[derive(Args, Debug)]
struct DnsCommand {
    /// Kubeconfig to reach the API server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Also create the kube-system/kube-dns Service at this cluster IP, its Endpoints
    /// pointing at --dns-bind-address (which must then name a reachable address).
    #[arg(long)]
    publish_service_ip: Option<IpAddr>,
    #[command(flatten)]
    dns: skiff_dns::DnsArgs,
}

/// The flags of a node agent (in `skiff server` and `skiff agent`): what runs on every
/// node.
#[derive(Args, Debug)]
struct NodeArgs {
    #[command(flatten)]
    runtime: skiff_runtime::RuntimeArgs,
    #[command(flatten)]
    kubelet: skiff_kubelet::KubeletArgs,
    /// How the service proxy programs Services: nftables, iptables, or userspace (the
    /// proxy relays connections itself).
    #[arg(long, value_enum, default_value = "nftables")]
    proxy_mode: skiff_proxy::ProxyMode,
    /// The whole cluster's pod range (e.g. 10.42.0.0/16), for pod networking across
    /// nodes: `skiff server` gives each Node a part of it (`spec.podCIDR`), the runtime
    /// takes its pods' addresses from its node's part, every node routes the other nodes'
    /// parts to them and masquerades only pod traffic leaving the range. Without it, each
    /// node's pods get addresses from `--pod-cidr` and reach only their own node's pods.
    #[arg(long)]
    cluster_cidr: Option<skiff_proxy::Ipv4Cidr>,
    /// How pods reach other nodes' pods (with --cluster-cidr): `host-gw` routes via the
    /// nodes' addresses (nodes on one L2 network), `vxlan` tunnels between them (any
    /// network that routes between the nodes; UDP 8472).
    #[arg(long, value_enum, default_value = "host-gw")]
    pod_network_backend: skiff_podnet::Backend,
}

/// The agent's flags with nothing given: their defaults, to tell which ones were set.
#[derive(Parser)]
struct AgentDefaults {
    #[command(flatten)]
    node: NodeArgs,
}

impl NodeArgs {
    /// The agent keeps its state under the data dir (unless its flags say otherwise),
    /// reaches the API with `kubeconfig`, and gives pods `cluster_dns` unless told
    /// another.
    fn place_state(
        &mut self,
        data_dir: &std::path::Path,
        kubeconfig: &std::path::Path,
        cluster_dns: Option<IpAddr>,
    ) {
        let defaults = <AgentDefaults as clap::Parser>::parse_from(["skiff"]).node;
        if self.runtime.root == defaults.runtime.root {
            self.runtime.root = data_dir.join("runtime");
        }
        if self.runtime.socket == defaults.runtime.socket {
            self.runtime.socket = data_dir.join("cri.sock");
        }
        if self.kubelet.runtime_endpoint == defaults.kubelet.runtime_endpoint {
            self.kubelet.runtime_endpoint = format!("unix://{}", self.runtime.socket.display());
        }
        // Pods' cgroups go where this node's runtime keeps its own (`skiff cluster`
        // gives each node its own parent).
        if self.kubelet.cgroup_root == defaults.kubelet.cgroup_root
            && self.runtime.cgroup_parent != defaults.runtime.cgroup_parent
        {
            self.kubelet.cgroup_root = self.runtime.cgroup_parent.clone();
        }
        if self.kubelet.root_dir == defaults.kubelet.root_dir {
            self.kubelet.root_dir = data_dir.join("kubelet");
        }
        if self.kubelet.kubeconfig.is_none() {
            self.kubelet.kubeconfig = Some(kubeconfig.to_path_buf());
        }
        // Upstream's kubelet has no static pods without the flag; a server or agent of
        // its own data dir offers one to drop manifests in, as k3s does.
        if self.kubelet.pod_manifest_path.is_none() {
            let dir = data_dir.join("pod-manifests");
            if let Err(e) = std::fs::create_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "creating the static pod directory failed");
            }
            self.kubelet.pod_manifest_path = Some(dir);
        }
        if self.kubelet.cluster_dns.is_empty() {
            self.kubelet.cluster_dns = cluster_dns.iter().map(IpAddr::to_string).collect();
        }
    }

    /// The name this node registers as.
    fn node_name(&self) -> String {
        self.kubelet
            .node_name
            .clone()
            .unwrap_or_else(skiff_kubelet::node::hostname)
    }

    /// Starts the node's components: runtime, kubelet, service proxy and NetworkPolicy
    /// enforcer, each reaching the API with its own identity's kubeconfig.
    async fn spawn(
        self,
        components: &mut Components,
        identities: &NodeIdentities,
    ) -> anyhow::Result<()> {
        // With `--container-runtime-endpoint` naming another runtime (containerd, say),
        // the kubelet drives that one and Skiff's own does not start, as k3s's agent
        // leaves its embedded containerd off.
        let own_runtime =
            skiff_kubelet::cri::socket_path(&self.kubelet.runtime_endpoint) == self.runtime.socket;
        eprintln!(
            "skiff: starting the node agent (runtime {})",
            if own_runtime {
                format!("Skiff's, socket {}", self.runtime.socket.display())
            } else {
                self.kubelet.runtime_endpoint.clone()
            }
        );
        let mut runtime = self.runtime;
        // With a cluster range, the node's pod range is the Node's part of it.
        runtime.pod_cidr_from_node |= self.cluster_cidr.is_some();
        // The agent masquerades pods' traffic itself, in one nftables rule for the whole
        // range; the CNI bridge plugin would add rules for each pod (eight `iptables`
        // runs, a good part of a pod's start).
        runtime.no_masquerade = true;
        let node_pod_range: skiff_proxy::Ipv4Cidr = runtime
            .pod_cidr
            .parse()
            .map_err(|error| anyhow::anyhow!("--pod-cidr {:?}: {error}", runtime.pod_cidr))?;
        if self.pod_network_backend == skiff_podnet::Backend::Vxlan {
            // The tunnel's headers come out of every pod packet's room.
            runtime.pod_mtu = runtime.pod_mtu.or(Some(skiff_podnet::vxlan::MTU));
        }
        let proxy = skiff_proxy::ProxyArgs {
            proxy_mode: self.proxy_mode,
            hostname_override: self.kubelet.node_name.clone(),
            cluster_cidr: Some(self.cluster_cidr.unwrap_or(node_pod_range)),
            ..Default::default()
        };
        let policy = skiff_netpol::NetworkPolicyArgs {
            node_name: self.kubelet.node_name.clone(),
            ..Default::default()
        };
        if own_runtime {
            components.spawn("container runtime", skiff_runtime::run(runtime));
        } else {
            // What Skiff's runtime does for the host at start, the service proxy and the
            // NetworkPolicy enforcer need whichever runtime runs the pods.
            skiff_runtime::network::prepare_host();
        }
        let kubelet = skiff_kubelet::client(&self.kubelet).await?;
        match self.cluster_cidr {
            None => skiff_podnet::masquerade(node_pod_range)
                .await
                .context("masquerading pods' traffic leaving the node")?,
            Some(cluster_cidr) => {
                let podnet = skiff_podnet::PodNetArgs::new(
                    self.kubelet.node_name.clone(),
                    cluster_cidr,
                    self.pod_network_backend,
                );
                // The pod network writes only its own Node: the kubelet's identity suffices.
                components.spawn("pod network", skiff_podnet::run(kubelet.clone(), podnet));
            }
        }
        let client = kube_client(Some(&identities.proxy), "kube-proxy").await?;
        components.spawn("service proxy", skiff_proxy::run(client.clone(), proxy));
        components.spawn("network policy", skiff_netpol::run(client, policy));
        components.spawn("kubelet", skiff_kubelet::run(kubelet, self.kubelet));
        Ok(())
    }
}

/// The kubeconfigs a node's components act with: the kubelet (and the pod network) as
/// `system:node:<name>`, the service proxy and NetworkPolicy enforcer as
/// `system:kube-proxy`.
struct NodeIdentities {
    kubelet: PathBuf,
    proxy: PathBuf,
}

/// The kubelet's user name for a node, and its group, as the Node authorizer knows them.
fn kubelet_user(node_name: &str) -> String {
    format!("system:node:{node_name}")
}
const NODES_GROUP: &str = "system:nodes";
const KUBE_PROXY_USER: &str = "system:kube-proxy";

/// `skiff agent`: one more node for a running cluster.
#[derive(Args, Debug)]
struct AgentArgs {
    /// The cluster's API server, e.g. `https://192.0.2.2:6443`.
    #[arg(long, env = "SKIFF_URL")]
    server: String,
    /// The server's node token: the contents of its `DATA_DIR/node-token`.
    #[arg(long, env = "SKIFF_TOKEN", hide_env_values = true)]
    token: String,
    /// Where this node keeps its runtime, kubelet state and kubeconfig.
    #[arg(long, default_value = "/var/lib/skiff", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Datastore {
    /// One file under the data dir.
    Embedded,
    /// An etcd v3 cluster (see --etcd-endpoints).
    Etcd,
}

#[derive(Args, Debug)]
struct ServerArgs {
    #[command(flatten)]
    api: ApiServerArgs,
    /// Run no node agent (container runtime and kubelet) on this machine.
    #[arg(long)]
    disable_agent: bool,
    /// Addresses for LoadBalancer Services (IPv4 CIDRs or `first-last` ranges, comma
    /// separated); none leaves them `<pending>`.
    #[arg(long, default_value = "", value_parser = skiff_controllers::servicelb::Pool::parse)]
    service_lb_pool: skiff_controllers::servicelb::Pool,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Args, Debug, Clone)]
struct ApiServerArgs {
    /// Where certificates, the embedded datastore and admin.kubeconfig live.
    #[arg(long, default_value = "/var/lib/skiff", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// Address the API server listens on. With the default, every address: the
    /// `kubernetes` Service then leads pods to this host's address, as upstream's
    /// advertised address does.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Port the API server listens on (HTTPS).
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
    /// Where cluster state is kept.
    #[arg(long, value_enum, default_value_t = Datastore::Embedded)]
    datastore: Datastore,
    /// etcd client URLs, comma-separated (with --datastore etcd).
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Static bearer tokens, one `token,user,uid,"group1,group2"` per line.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// More host names or IP addresses for the serving certificate.
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// The range Services' cluster IPs come from.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: skiff_apiserver::services::Cidr,
    /// How often to compact store history older than one interval, e.g. `5m`, `30s`.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    etcd_compaction_interval: Duration,
    /// Admission plugins to run besides the default ones (all of Skiff's are on by
    /// default): NamespaceLifecycle, ServiceAccount.
    #[arg(long, value_delimiter = ',')]
    enable_admission_plugins: Vec<String>,
    /// Admission plugins to turn off, e.g. `ServiceAccount` for an API server with no
    /// controller manager to create service accounts.
    #[arg(long, value_delimiter = ',')]
    disable_admission_plugins: Vec<String>,
    /// Upstream's `AdmissionConfiguration` file; its `PodSecurity` entry sets the policy
    /// of unlabelled namespaces and the exempt users, runtime classes and namespaces.
    #[arg(long)]
    admission_control_config_file: Option<PathBuf>,
    /// Upstream's `EncryptionConfiguration` file: the resources (e.g. secrets) kept
    /// encrypted in the datastore, with aescbc, aesgcm or secretbox keys (the first key
    /// writes; every listed key reads, for rotation).
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// Upstream's audit `Policy` file: which requests are audited, at which level (None,
    /// Metadata, Request, RequestResponse). Needs --audit-log-path.
    #[arg(long, requires = "audit_log_path")]
    audit_policy_file: Option<PathBuf>,
    /// Where audit events (`audit.k8s.io/v1` Events, one JSON object per line) are
    /// appended; `-` for stdout. Needs --audit-policy-file.
    #[arg(long, requires = "audit_policy_file")]
    audit_log_path: Option<PathBuf>,
    /// CA certificates (PEM file) kubelets' serving certificates must lead to, for the
    /// node address dialled (kubelets with `--rotate-server-certificates` get theirs from
    /// the cluster CA, `DATA_DIR/tls/ca.crt`). Without it, as upstream, they are not
    /// checked.
    #[arg(long)]
    kubelet_certificate_authority: Option<PathBuf>,
}

/// A positive Go duration (`300ms`, `30s`, `5m`, `1h`), as these flags need one.
fn parse_duration(text: &str) -> Result<Duration, String> {
    match skiff_quantity::parse_duration(text)? {
        Duration::ZERO => Err(format!("{text:?} must be a positive duration")),
        duration => Ok(duration),
    }
}

impl ApiServerArgs {
    fn api_config(&self) -> anyhow::Result<skiff_apiserver::Config> {
        let store = match self.datastore {
            Datastore::Embedded => {
                StoreConfig::Embedded(self.data_dir.join("db").join("state.redb"))
            }
            Datastore::Etcd => {
                if self.etcd_endpoints.is_empty() {
                    anyhow::bail!("--datastore etcd needs --etcd-endpoints, e.g. --etcd-endpoints http://127.0.0.1:2379");
                }
                StoreConfig::Etcd(self.etcd_endpoints.clone())
            }
        };
        let mut admission = skiff_apiserver::admission::Admission::from_flags(
            &self.enable_admission_plugins,
            &self.disable_admission_plugins,
        )
        .map_err(anyhow::Error::msg)?;
        if let (Some(path), Some(plugin)) = (
            &self.admission_control_config_file,
            admission.pod_security.as_mut(),
        ) {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            *plugin =
                skiff_apiserver::podsecurity::PodSecurity::from_admission_configuration(&text)
                    .with_context(|| format!("in {}", path.display()))?;
        }
        Ok(skiff_apiserver::Config {
            data_dir: self.data_dir.clone(),
            bind_address: self.bind_address,
            https_port: self.https_port,
            store,
            token_auth_file: self.token_auth_file.clone(),
            tls_san: self.tls_san.clone(),
            compaction_interval: self.etcd_compaction_interval,
            service_cidr: self.service_cluster_ip_range,
            admission,
            encryption_provider_config: self.encryption_provider_config.clone(),
            audit_policy_file: self.audit_policy_file.clone(),
            audit_log_path: self.audit_log_path.clone(),
            kubelet_certificate_authority: self.kubelet_certificate_authority.clone(),
        })
    }
}

async fn run_server(api: &ApiServerArgs, mut agent: Option<ServerArgs>) -> anyhow::Result<()> {
    let config = api.api_config()?;
    if let StoreConfig::Embedded(path) = &config.store {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    // `skiff server` runs the whole control plane; `skiff apiserver` the API server alone.
    let control_plane = agent.is_some();
    let service_lb_pool = agent
        .as_ref()
        .map(|a| a.service_lb_pool.clone())
        .unwrap_or_default();
    // Nodes get their pod ranges from the cluster range when one is given.
    let cluster_cidr = agent.as_ref().and_then(|a| a.node.cluster_cidr);
    agent = agent.filter(|a| !a.disable_agent);
    if agent.is_some() && !is_root() {
        anyhow::bail!(
            "the node agent runs containers and needs root: run as root, or pass --disable-agent to run the control plane only"
        );
    }
    let server = skiff_apiserver::start(config).await?;
    eprintln!(
        "skiff: API server listening on https://{}; kubeconfig: {}",
        server.address,
        server.kubeconfig_path.display()
    );
    // Every component runs until the process ends; the first to stop stops the server.
    let mut components = Components::default();
    if control_plane {
        let kubeconfig = Some(server.kubeconfig_path.as_path());
        let scheduler_kubeconfig =
            server.component_kubeconfig("scheduler.kubeconfig", "system:kube-scheduler", &[])?;
        components.spawn(
            "scheduler",
            skiff_scheduler::run(
                kube_client(Some(&scheduler_kubeconfig), SCHEDULER).await?,
                skiff_scheduler::SchedulerArgs::default(),
            ),
        );
        // The controller manager reads as itself and each controller writes as its own
        // service account, as kubeadm and k3s run upstream's.
        let controller_manager_kubeconfig = server.component_kubeconfig(
            "controller-manager.kubeconfig",
            "system:kube-controller-manager",
            &[],
        )?;
        components.spawn(
            "controller manager",
            skiff_controllers::run(
                kube_client(Some(&controller_manager_kubeconfig), CONTROLLER_MANAGER).await?,
                skiff_controllers::ControllerManagerArgs {
                    kubeconfig: Some(controller_manager_kubeconfig.clone()),
                    use_service_account_credentials: true,
                    cluster_signing_cert_file: Some(server.pki.ca.cert_path.clone()),
                    cluster_signing_key_file: Some(server.pki.ca.key_path.clone()),
                    service_lb_pool,
                    allocate_node_cidrs: cluster_cidr.is_some(),
                    cluster_cidr: cluster_cidr.map(|c| c.to_string()),
                    ..Default::default()
                },
            ),
        );
        let cluster_domain = agent
            .as_ref()
            .map(|a| a.node.kubelet.cluster_domain.clone())
            .unwrap_or_else(|| "cluster.local".into());
        // On this machine's address, port 53: what the kube-dns Service points at.
        let dns = skiff_dns::DnsArgs {
            cluster_domain,
            dns_bind_address: std::net::SocketAddr::new(skiff_pki::default_host_ip(), 53),
            ..Default::default()
        };
        let dns_ip = cluster_dns_ip(api).into();
        // DNS reads Services and endpoints as itself; the server publishes its Service.
        let dns_kubeconfig =
            server.component_kubeconfig("coredns.kubeconfig", "system:coredns", &[])?;
        let publisher = (kube_client(kubeconfig, "kube-apiserver").await?, dns_ip);
        components.spawn(
            "cluster DNS",
            run_cluster_dns(
                kube_client(Some(&dns_kubeconfig), "coredns").await?,
                dns,
                Some(publisher),
                true,
            ),
        );
    }
    if let Some(args) = agent {
        let mut node = args.node;
        // The server holds the CA: its own node's identities are issued directly.
        let identities = NodeIdentities {
            kubelet: server.component_kubeconfig(
                "kubelet.kubeconfig",
                &kubelet_user(&node.node_name()),
                &[NODES_GROUP],
            )?,
            proxy: server.component_kubeconfig("kube-proxy.kubeconfig", KUBE_PROXY_USER, &[])?,
        };
        let dns = IpAddr::V4(cluster_dns_ip(api));
        node.place_state(&api.data_dir, &identities.kubelet, Some(dns));
        node.spawn(&mut components, &identities).await?;
    }
    tokio::select! {
        result = server.wait() => result,
        result = components.first_to_stop() => result,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            Ok(())
        }
    }
}

/// The components a `skiff server` runs beside the API server, by name.
#[derive(Default)]
struct Components {
    tasks: tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Components {
    fn spawn<E>(
        &mut self,
        name: &'static str,
        component: impl std::future::Future<Output = Result<(), E>> + Send + 'static,
    ) where
        E: Into<anyhow::Error> + 'static,
    {
        self.tasks
            .spawn(async move { (name, component.await.map_err(Into::into)) });
    }

    /// Waits for the first component to stop (never, if none runs): a component stops
    /// only on an error, or by panicking.
    async fn first_to_stop(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(Ok((name, result))) => result.with_context(|| format!("{name} stopped")),
            Some(Err(e)) => Err(anyhow::anyhow!("a component panicked: {e}")),
            None => std::future::pending().await,
        }
    }
}

/// `skiff agent`: fetches the cluster's CA (checked against the token), asks for the
/// node's certificates with the token's bootstrap token (TLS bootstrapping), and runs the
/// node's components with them until one stops.
async fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    if !is_root() {
        anyhow::bail!("the node agent runs containers and needs root: run it as root");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    eprintln!("skiff: joining the cluster at {}", args.server);
    let ca = skiff_pki::join::fetch_ca(&args.server, &args.token)
        .await
        .context("fetching the cluster CA")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let (_, bootstrap_token) = skiff_pki::join::parse_token(&args.token)
        .context("the token is not a node token (K10<CA hash>::<id>.<secret>)")?;
    let bootstrap_kubeconfig = args.data_dir.join("bootstrap.kubeconfig");
    let contents = skiff_pki::join::token_kubeconfig(&args.server, &ca, bootstrap_token);
    skiff_pki::write_private_file(&bootstrap_kubeconfig, contents.as_bytes())?;
    let bootstrap = kube_client(Some(&bootstrap_kubeconfig), "kubelet").await?;
    let mut node = args.node;
    let identities = NodeIdentities {
        kubelet: args.data_dir.join("kubelet.kubeconfig"),
        proxy: args.data_dir.join("kube-proxy.kubeconfig"),
    };
    let kubelet_user = kubelet_user(&node.node_name());
    let wanted = [
        skiff_kubelet::bootstrap::Identity {
            kubeconfig: &identities.kubelet,
            user: &kubelet_user,
            groups: &[NODES_GROUP],
            signer: "kubernetes.io/kube-apiserver-client-kubelet",
        },
        skiff_kubelet::bootstrap::Identity {
            kubeconfig: &identities.proxy,
            user: KUBE_PROXY_USER,
            groups: &[],
            signer: "kubernetes.io/kube-apiserver-client",
        },
    ];
    for identity in &wanted {
        skiff_kubelet::bootstrap::ensure_identity(&bootstrap, &args.server, &ca, identity)
            .await
            .with_context(|| format!("getting a certificate for {}", identity.user))?;
    }
    let client = kube_client(Some(&identities.kubelet), "kubelet").await?;
    // The cluster DNS's address, as its Service has it (none yet: pods use the host's).
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client, "kube-system");
    let dns = services
        .get_opt("kube-dns")
        .await
        .context("reaching the API server as the node")?
        .and_then(|s| s.spec?.cluster_ip)
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    node.place_state(&args.data_dir, &identities.kubelet, dns);
    let mut components = Components::default();
    node.spawn(&mut components, &identities).await?;
    tokio::select! {
        result = components.first_to_stop() => result,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            Ok(())
        }
    }
}

/// Runs the cluster DNS server; with `publish`, behind a `kube-dns` Service at that
/// cluster IP (written with that client) whose endpoints are the server's own address. With `fallback_port`, a
/// taken port (another resolver on this machine, say) is no failure: the server takes
/// any free port, which the Service's endpoints then name.
async fn run_cluster_dns(
    client: kube::Client,
    args: skiff_dns::DnsArgs,
    publish: Option<(kube::Client, std::net::IpAddr)>,
    fallback_port: bool,
) -> anyhow::Result<()> {
    let dns = args.build()?;
    let (udp, tcp) = match skiff_dns::bind(args.dns_bind_address).await {
        Err(error) if fallback_port => {
            let any_port = std::net::SocketAddr::new(args.dns_bind_address.ip(), 0);
            let bound = skiff_dns::bind(any_port).await?;
            tracing::warn!(%error, "cluster DNS on another port: the kube-dns Service points at it");
            bound
        }
        bound => bound?,
    };
    if let Some((client, cluster_ip)) = publish {
        let serving = udp.local_addr()?;
        tokio::spawn(async move {
            // At once, then again every few seconds: the API server may still be
            // starting, and with several servers the Endpoints follow those alive.
            let mut failures = 0u32;
            loop {
                match skiff_dns::publish::publish_service(&client, cluster_ip, serving).await {
                    Ok(()) => failures = 0,
                    Err(error) => {
                        failures += 1;
                        tracing::warn!(%error, failures, "publishing the kube-dns Service");
                    }
                }
                let pause = if failures > 0 { 1 } else { 10 };
                tokio::time::sleep(std::time::Duration::from_secs(pause)).await;
            }
        });
    }
    dns.run_on(client, &args, udp, tcp).await?;
    Ok(())
}

/// The names upstream's control-plane components give themselves (and so their writes).
const SCHEDULER: &str = "kube-scheduler";
const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// A client for the API from a kubeconfig file (or, without one, the usual defaults:
/// `$KUBECONFIG`, `~/.kube/config`, in-cluster), identifying itself as `component` in
/// its User-Agent, as upstream's components do (the API server records that name as the
/// field manager of what the component writes).
async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
    component: &str,
) -> anyhow::Result<kube::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    config.headers.push(skiff_kubelet::user_agent(component)?);
    kube::Client::try_from(config).context("building the API client")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn main() -> anyhow::Result<()> {
    // The runtime re-executes this binary as its per-container monitor and sandbox
    // holder; those roles must start before anything else (no async runtime, no logging).
    if let Some(code) = skiff_runtime::shim::main_if_shim() {
        std::process::exit(code);
    }
    // Those monitors and holders are this binary too, and mimalloc would back their
    // first arena with transparent huge pages: 4 MiB resident each, per container and
    // per pod, for a few KiB of heap. The variable reaches them (and only children:
    // this process's allocator has read its options already).
    // Set before any other thread exists, so none reads the environment meanwhile.
    std::env::set_var("MIMALLOC_ALLOW_THP", "0");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => run_server(&args.api.clone(), Some(*args)).await,
            Command::Apiserver(args) => run_server(&args, None).await,
            Command::Agent(args) => run_agent(*args).await,
            Command::Cluster(args) => cluster::run(args).await,
            Command::ControllerManager(args) => {
                let client = kube_client(args.kubeconfig.as_deref(), CONTROLLER_MANAGER).await?;
                skiff_controllers::run(client, *args).await
            }
            Command::Scheduler(args) => {
                let client = kube_client(args.kubeconfig.as_deref(), SCHEDULER).await?;
                skiff_scheduler::run(client, args).await
            }
            Command::Kubelet(args) => {
                let client = skiff_kubelet::client(&args).await?;
                skiff_kubelet::run(client, args).await
            }
            Command::HollowNodes(args) => {
                let client = kube_client(args.kubeconfig.as_deref(), "hollow-node").await?;
                skiff_hollow::run(client, args).await
            }
            Command::Runtime(args) => skiff_runtime::run(args).await,
            Command::Images(args) => skiff_runtime::images(args).await,
            Command::Proxy(args) => {
                let client = kube_client(args.kubeconfig.as_deref(), "kube-proxy").await?;
                Ok(skiff_proxy::run(client, args.proxy).await?)
            }
            Command::NetworkPolicy(args) => {
                let client = kube_client(args.kubeconfig.as_deref(), "kube-proxy").await?;
                let policy = skiff_netpol::NetworkPolicyArgs {
                    node_name: args.hostname_override,
                    ..args.policy
                };
                Ok(skiff_netpol::run(client, policy).await?)
            }
            Command::Dns(args) => {
                let client = kube_client(args.kubeconfig.as_deref(), "coredns").await?;
                let publish = args.publish_service_ip.map(|ip| (client.clone(), ip));
                run_cluster_dns(client, args.dns, publish, false).await
            }
        }
    })
}

/// The cluster DNS's Service address: the tenth of the service range, as kubeadm and k3s
/// choose it (10.96.0.10 by default), inside the band the allocator keeps for such
/// chosen addresses.
fn cluster_dns_ip(api: &ApiServerArgs) -> std::net::Ipv4Addr {
    api.service_cluster_ip_range.nth(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("3d").is_err());
    }

    /// The controller manager asks for a service account per controller, and the API
    /// server's bootstrap policy binds a role to each: the two lists are one set.
    #[test]
    fn every_controller_account_has_its_role() {
        let mut accounts: Vec<&str> = skiff_controllers::credentials::ACCOUNTS.to_vec();
        let mut roles = skiff_apiserver::authz::controller_roles::controller_accounts();
        accounts.sort_unstable();
        roles.sort_unstable();
        assert_eq!(accounts, roles);
    }
}
