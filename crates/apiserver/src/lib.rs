//! The Skiff API server: the Kubernetes API over HTTPS, backed by a [`skiff_store::Store`].
//!
//! Start with [`run`]. A request flows: [`server`] (TLS, authentication) →
//! [`handlers`] (path parsing, content negotiation) → [`registry`] (the generic
//! create/get/list/update/patch/delete with per-type [`strategy`] hooks) → the store for
//! writes and single reads, the [`cache`] for lists and watches. [`resources`] is the
//! catalogue every layer reads; [`status`] renders errors as upstream does.

pub mod admission;
pub mod aggregator;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod cache;
pub mod certificates;
pub mod convert;
pub mod crd;
pub mod defaults;
pub mod discovery;
pub mod encoding;
pub mod encryption;
pub mod endpoint_reconciler;
pub mod ephemeral;
pub mod eviction;
pub mod expressions;
pub mod field_validation;
pub mod handlers;
pub mod lifecycle;
pub mod limitranger;
pub mod managedfields;
pub mod metrics;
pub mod metrics_api;
pub mod noderestriction;
pub mod object;
pub mod openapi;
pub mod patch;
pub mod pod_resize;
pub mod pod_update;
pub mod podsecurity;
pub mod policy;
pub mod priority;
pub mod proxy;
pub mod proxy_links;
pub mod quota;
pub mod registry;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod server;
pub mod service_client;
pub mod services;
pub mod status;
pub mod strategy;
pub mod table;
pub mod tokens;
pub mod validation;
pub mod warnings;
pub mod watch;
pub mod webhooks;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skiff_pki::ClusterPki;
use skiff_store::StoreConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub https_port: u16,
    pub store: StoreConfig,
    /// Static bearer tokens (`token,user,uid,"groups"` per line).
    pub token_auth_file: Option<PathBuf>,
    /// Extra names and addresses for the serving certificate.
    pub tls_san: Vec<String>,
    /// How often store history older than one interval is compacted away
    /// (upstream's `--etcd-compaction-interval`, 5 minutes by default).
    pub compaction_interval: Duration,
    /// Where Services get their cluster IPs (`--service-cluster-ip-range`).
    pub service_cidr: services::Cidr,
    /// The admission plugins that run (`--enable/disable-admission-plugins`).
    pub admission: admission::Admission,
    /// Upstream's `EncryptionConfiguration` file: which resources are encrypted in the
    /// store, with which keys (`--encryption-provider-config`).
    pub encryption_provider_config: Option<PathBuf>,
    /// Upstream's audit `Policy` file (`--audit-policy-file`); with `audit_log_path`,
    /// requests are audited.
    pub audit_policy_file: Option<PathBuf>,
    /// Where audit events go, one JSON object per line (`-` for stdout).
    pub audit_log_path: Option<PathBuf>,
    /// CA certificates (PEM) that kubelets' serving certificates must lead to
    /// (`--kubelet-certificate-authority`); without them, as upstream, kubelets'
    /// certificates are not checked.
    pub kubelet_certificate_authority: Option<PathBuf>,
}

/// A running API server.
pub struct ApiServer {
    pub address: SocketAddr,
    pub kubeconfig_path: PathBuf,
    /// The cluster's certificates: the controller manager signs with its CA.
    pub pki: skiff_pki::ClusterPki,
    server_url: String,
    pub registry: Arc<registry::Registry>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Writes `DATA_DIR/<file>`, a kubeconfig for one of this server's own components,
    /// acting as `user` in `groups` with a client certificate from the cluster CA: each
    /// component holds only its own identity's rights. Returns the file's path.
    pub fn component_kubeconfig(
        &self,
        file: &str,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<PathBuf> {
        let (cert, key) = self
            .pki
            .issue_client(&skiff_pki::ClientIdentity { user, groups })
            .with_context(|| format!("a client certificate for {user}"))?;
        let contents =
            skiff_pki::kubeconfig(&self.server_url, &self.pki.ca.cert_pem, user, &cert, &key);
        let path = self
            .kubeconfig_path
            .parent()
            .map_or_else(|| PathBuf::from(file), |dir| dir.join(file));
        skiff_pki::write_private_file(&path, contents.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Waits until the server stops (it serves until the process ends).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("API server task")?;
        Ok(())
    }
}

/// The address the `kubernetes` Service's endpoints name: the bind address, or this
/// machine's own when bound to every address.
fn advertise_address(config: &Config) -> std::net::IpAddr {
    if config.bind_address.is_unspecified() {
        skiff_pki::default_host_ip()
    } else {
        config.bind_address
    }
}

fn serving_names(config: &Config) -> Vec<String> {
    let mut names = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = hostname() {
        names.push(host);
    }
    names.push(advertise_address(config).to_string());
    // In-cluster clients reach the API server through the `kubernetes` Service.
    names.push(config.service_cidr.nth(1).to_string());
    for name in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ] {
        names.push(name.into());
    }
    names.extend(config.tls_san.iter().cloned());
    names.dedup();
    names
}

fn hostname() -> std::io::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}

/// Starts the API server: certificates, store, watch cache, system namespaces, then the
/// listener; writes `DATA_DIR/admin.kubeconfig` once it serves.
pub async fn start(config: Config) -> anyhow::Result<ApiServer> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let pki = ClusterPki::load_or_create(&config.data_dir, &serving_names(&config))
        .context("preparing certificates")?;

    tracing::info!(store = ?config.store, "opening datastore");
    let store = skiff_store::open(&config.store)
        .await
        .context("opening datastore")?;
    let store = match &config.encryption_provider_config {
        Some(path) => encryption::EncryptionConfig::from_file(path)
            .context("--encryption-provider-config")?
            .wrap(store, &resources::Catalogue::new().all()),
        None => store,
    };
    let cache = cache::WatchCache::start(store.clone())
        .await
        .context("filling watch cache")?;
    let mut registry = registry::Registry::new(store, cache, config.service_cidr);
    registry.admission = config.admission.clone();
    let registry = Arc::new(registry);
    lifecycle::ensure_system_namespaces(&registry).await?;
    lifecycle::ensure_system_priority_classes(&registry).await?;
    lifecycle::ensure_default_service_cidr(&registry).await?;
    authz::bootstrap::reconcile(&registry)
        .await
        .context("reconciling bootstrap RBAC policy")?;
    crd::controller::start(registry.clone())
        .await
        .context("serving CustomResourceDefinitions")?;
    aggregator::authentication::publish(&registry, &pki)
        .await
        .context("publishing how extension API servers authenticate the aggregator")?;
    let aggregator = Arc::new(aggregator::Aggregator::new(
        registry.clone(),
        pki.front_proxy_client.clone(),
    ));
    aggregator::availability::start(aggregator.clone());
    tokio::spawn(lifecycle::compact_periodically(
        registry.clone(),
        config.compaction_interval,
    ));

    let tokens = match &config.token_auth_file {
        Some(path) => auth::TokenAuthenticator::from_file(path)?,
        None => auth::TokenAuthenticator::default(),
    };
    // Agents join with the node token (`skiff agent --server URL --token T`), whose
    // bootstrap token may only ask for the node's certificates.
    let node_token = skiff_pki::join::node_token(&config.data_dir, &pki.ca.cert_pem)
        .context("the node join token")?;
    if let Some((_, bootstrap)) = skiff_pki::join::parse_token(&node_token) {
        lifecycle::ensure_node_bootstrap_token(&registry, bootstrap)
            .await
            .context("storing the node token's bootstrap token")?;
    }
    let listen = SocketAddr::new(config.bind_address, config.https_port);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}: is another server already using the port?"))?;
    let address = listener.local_addr()?;
    let client_host = if config.bind_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        match config.bind_address {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        }
    };
    let server_address = format!("{client_host}:{}", address.port());
    let signer = Arc::new(
        tokens::TokenSigner::from_pem(&pki.service_account_key_pem)
            .context("loading the service-account signing key")?,
    );
    let authenticator = Arc::new(server::Authenticator {
        tokens,
        service_accounts: signer.clone(),
        cache: registry.cache.clone(),
    });
    let state = Arc::new(handlers::AppState {
        registry: registry.clone(),
        server_address: server_address.clone(),
        metrics: Arc::new(metrics::Metrics::new()),
        signer: signer.clone(),
        kubelet: Arc::new(proxy::KubeletClient::new(
            &pki,
            config.kubelet_certificate_authority.as_deref(),
        )?),
        authenticator: authenticator.clone(),
        openapi: Arc::new(openapi::Documents::default()),
        aggregator,
    });
    // Rendered ahead of kubectl's first `explain` or `apply`, which would wait for it.
    let warm = state.clone();
    tokio::task::spawn_blocking(move || warm.openapi.get(&warm.registry.catalogue));
    let audit = match (&config.audit_policy_file, &config.audit_log_path) {
        (Some(policy), Some(path)) => Some(Arc::new(
            audit::AuditLog::open(policy, path).context("--audit-policy-file")?,
        )),
        (None, None) => None,
        _ => anyhow::bail!("auditing needs both --audit-policy-file and --audit-log-path"),
    };
    let app = server::router(state, authenticator, audit, pki.ca.cert_pem.clone());
    let tls = server::tls_config(
        &pki.serving.cert_pem,
        &pki.serving.key_pem,
        &pki.ca.cert_pem,
    )?;
    let task = tokio::spawn(server::serve(listener, tls, app));
    let advertised = std::net::SocketAddr::new(advertise_address(&config), address.port());
    services::ensure_kubernetes_service(&registry, advertised.port())
        .await
        .context("creating the kubernetes service")?;
    if !crate::validation::special_ip(advertised.ip()).is_empty() {
        tracing::warn!(
            address = %advertised.ip(),
            "the advertised address is the host's own: pods cannot reach this API server \
             through the kubernetes Service; start it with --bind-address set to an address \
             of the node"
        );
    }
    // Its endpoints: this server and every other one sharing the datastore.
    endpoint_reconciler::reconcile(&registry, advertised)
        .await
        .map_err(|e| anyhow::anyhow!("writing the kubernetes service's endpoints: {e}"))?;
    tokio::spawn(endpoint_reconciler::run(registry.clone(), advertised));

    let kubeconfig_path = config.data_dir.join("admin.kubeconfig");
    let server_url = format!("https://{server_address}");
    let kubeconfig = pki.admin_kubeconfig(&server_url);
    skiff_pki::write_private_file(&kubeconfig_path, kubeconfig.as_bytes())
        .context("writing admin kubeconfig")?;
    tracing::info!(%address, kubeconfig = %kubeconfig_path.display(), "API server ready");
    Ok(ApiServer {
        address,
        kubeconfig_path,
        pki,
        server_url,
        registry,
        task,
    })
}
