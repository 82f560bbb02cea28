//! `skiff runtime`: serving the CRI on a unix socket.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::cri::Cri;
use crate::images::registries::RegistriesConfig;
use crate::proto::{
    image_service_server::ImageServiceServer, runtime_service_server::RuntimeServiceServer,
};
use crate::runtime::{Runtime, RuntimeConfig};

/// Flags of `skiff runtime`.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Where images, containers and sandboxes are kept.
    #[arg(long, default_value = "/var/lib/skiff/runtime")]
    pub root: PathBuf,
    /// The CRI socket the kubelet connects to.
    #[arg(long, default_value = "/run/skiff/cri.sock")]
    pub socket: PathBuf,
    /// The runc binary.
    #[arg(long, default_value = "runc")]
    pub runc: PathBuf,
    /// Executable run as the per-container monitor and sandbox holder
    /// (default: this executable, re-executed).
    #[arg(long)]
    pub shim: Option<PathBuf>,
    /// Parent cgroup of sandboxes whose config gives none.
    #[arg(long, default_value = "/kubepods")]
    pub cgroup_parent: String,
    /// CNI network configurations (the first *.conflist is used; a default
    /// bridge network is written there if there is none).
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// CNI plugin directories (colon-separated).
    #[arg(long, default_value = "/usr/lib/cni:/opt/cni/bin")]
    pub cni_bin_dir: String,
    /// Pod subnet of the default CNI network.
    #[arg(long, default_value = "10.88.0.0/16")]
    pub pod_cidr: String,
    /// Take the default network's subnet from the node's `spec.podCIDR`, which the
    /// kubelet sends (CRI UpdateRuntimeConfig); until it arrives the network is not
    /// ready, so the node is NotReady. The network written then does not masquerade:
    /// the node agent's pod-network controller does that, sparing the cluster's range.
    #[arg(long)]
    pub pod_cidr_from_node: bool,
    /// The default network does not masquerade pods' traffic leaving it: something else
    /// does (under `skiff server` and `skiff agent`, the node agent, with one nftables
    /// rule for the whole range rather than the bridge plugin's rules for every pod).
    #[arg(long)]
    pub no_masquerade: bool,
    /// MTU of pods' interfaces on the default network (default: the link's, 1500);
    /// lower it when pod traffic is tunnelled between nodes.
    #[arg(long)]
    pub pod_mtu: Option<u32>,
    /// Give pods loopback only (no CNI).
    #[arg(long)]
    pub disable_cni: bool,
    /// Registry mirrors and credentials, in k3s's registries.yaml format.
    #[arg(long, default_value = "/etc/skiff/registries.yaml")]
    pub registries_config: PathBuf,
}

/// Finds `name` in `$PATH` unless it already names a path.
pub fn find_binary(name: &Path) -> anyhow::Result<PathBuf> {
    if name.components().count() > 1 {
        return Ok(name.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
    {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!(
        "{} not found in PATH; install it (Debian: apt-get install {})",
        name.display(),
        name.display()
    )
}

impl RuntimeArgs {
    pub fn runtime_config(&self) -> anyhow::Result<RuntimeConfig> {
        let shim = match &self.shim {
            Some(s) => s.clone(),
            None => std::env::current_exe().context("locate own executable for the shim")?,
        };
        Ok(RuntimeConfig {
            root: self.root.clone(),
            runc: find_binary(&self.runc)?,
            shim,
            cgroup_parent: self.cgroup_parent.clone(),
            cni: (!self.disable_cni).then(|| crate::network::CniConfig {
                conf_dir: self.cni_conf_dir.clone(),
                plugin_dirs: std::env::split_paths(&self.cni_bin_dir).collect(),
                state_dir: self.root.join("cni"),
                default_subnet: self.pod_cidr.clone(),
                default_bridge: "skiff0".into(),
                ip_masq: !self.pod_cidr_from_node && !self.no_masquerade,
                subnet_from_node: self.pod_cidr_from_node,
                mtu: self.pod_mtu,
            }),
        })
    }
}

/// Runs the CRI server until SIGINT or SIGTERM. Containers keep running.
pub async fn run(args: RuntimeArgs) -> anyhow::Result<()> {
    let config = args.runtime_config()?;
    let runtime = Arc::new(Runtime::open(config).context("open runtime state")?);
    let registries = RegistriesConfig::load(&args.registries_config)?;
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    serve(runtime, registries, &args.socket, shutdown).await
}

/// Serves the CRI for `runtime` on the unix socket `socket` until `shutdown`.
pub async fn serve(
    runtime: Arc<Runtime>,
    registries: RegistriesConfig,
    socket: &Path,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove stale {}", socket.display())),
    }
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("listen on {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "CRI server listening");
    let streaming = crate::streaming::StreamingServer::start(runtime.clone())
        .await
        .context("starting the CRI streaming server")?;
    let cri = Cri {
        runtime,
        registries: Arc::new(registries),
        streaming,
    };
    tonic::transport::Server::builder()
        .add_service(RuntimeServiceServer::new(cri.clone()))
        .add_service(ImageServiceServer::new(cri))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(listener),
            shutdown,
        )
        .await
        .context("CRI server")?;
    let _ = std::fs::remove_file(socket);
    Ok(())
}
