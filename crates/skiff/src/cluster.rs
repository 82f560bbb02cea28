//! `skiff cluster create|delete`: a multi-node cluster on this one machine, as kind
//! makes one out of containers.
//!
//! Each node is a network namespace with a veth to a bridge on the host (one L2
//! network, as machines on one switch), running `skiff server` (the first node) or
//! `skiff agent` (the others) in a mount namespace of its own. Nothing a node programs
//! (its nftables tables, bridge `skiff0`, port 10250, routes, overlay mounts) is visible
//! on the host or on the other nodes. The host reaches every node on its address on the
//! bridge; the kubeconfig written to `DIR/kubeconfig` points at the server's.
//!
//! Every node has its own data dir (`DIR/nodes/<name>`: runtime root, CNI config and
//! state, kubelet dir, pod logs) and its own cgroup parent (`/skiff-<id>/<name>`), so
//! `cluster delete` can find and stop everything a node started: the processes of its
//! mount namespace (agent, container monitors, sandbox holders) and of its cgroups
//! (containers), then its cgroups, namespace and files.
//!
//! With `--servers N` (N > 1), the first N nodes run `skiff server`, sharing one etcd
//! (on this machine, on the bridge's address: the datastore outlives any one server)
//! and the first server's certificate authorities and signing keys, as the servers of
//! one cluster must; each server's controllers and scheduler take turns by leader
//! election, and the `kubernetes` Service's endpoints list every live API server.
//!
//! What was made is recorded in `DIR/cluster.json` as it is made, so `delete` also
//! cleans up after a `create` that failed halfway.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

#[derive(Args, Debug)]
pub struct ClusterCommand {
    #[command(subcommand)]
    action: ClusterAction,
}

#[derive(Subcommand, Debug)]
enum ClusterAction {
    /// Create a cluster: a server node and `--nodes`-1 agent nodes, each in its own
    /// network namespace on a bridge of this machine; writes `DATA_DIR/kubeconfig`.
    Create(CreateArgs),
    /// Stop every node of the cluster in DATA_DIR and remove its namespaces, bridge,
    /// cgroups and state (node logs stay in `DATA_DIR/logs`).
    Delete(DeleteArgs),
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// How many nodes, the servers included.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=50))]
    nodes: u8,
    /// How many of the nodes run the control plane (`skiff server`); more than one share
    /// an etcd this command starts.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=50))]
    servers: u8,
    /// Where the cluster's state, node data dirs, logs and kubeconfig go.
    #[arg(long)]
    data_dir: PathBuf,
    /// The pod range of the whole cluster; each node gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: skiff_proxy::Ipv4Cidr,
    /// How every node's service proxy programs Services.
    #[arg(long, value_enum, default_value = "nftables")]
    proxy_mode: skiff_proxy::ProxyMode,
    /// How pods reach other nodes' pods: routes via the nodes' addresses, or a VXLAN
    /// tunnel between them.
    #[arg(long, value_enum, default_value = "host-gw")]
    pod_network_backend: skiff_podnet::Backend,
    /// How long to wait for every node to be Ready.
    #[arg(long, default_value = "180s", value_parser = crate::parse_duration)]
    wait: Duration,
}

#[derive(Args, Debug)]
struct DeleteArgs {
    /// The data dir the cluster was created with.
    #[arg(long)]
    data_dir: PathBuf,
}

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!("a cluster's nodes need network namespaces and run containers: run as root");
    }
    match command.action {
        ClusterAction::Create(args) => create(args).await,
        ClusterAction::Delete(args) => {
            let dir = absolute(&args.data_dir)?;
            let state = State::load(&dir)?;
            delete(&dir, &state)?;
            println!("Deleted the cluster in {}", dir.display());
            Ok(())
        }
    }
}

/// What a cluster is made of, as recorded in `DIR/cluster.json`.
#[derive(Serialize, Deserialize, Debug, Default)]
struct State {
    /// Short name that makes this cluster's host-wide names (namespaces, bridge, cgroups)
    /// its own.
    id: String,
    bridge: String,
    /// The host's address on the bridge (`.1` of the nodes' /24).
    gateway: Option<Ipv4Addr>,
    nodes: Vec<NodeState>,
    /// The etcd the servers share, when there are several.
    #[serde(default)]
    etcd: Option<EtcdState>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct EtcdState {
    pid: u32,
    /// Its client URL, as the servers are given it.
    endpoint: String,
    data_dir: PathBuf,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct NodeState {
    name: String,
    netns: String,
    ip: Ipv4Addr,
    data_dir: PathBuf,
    /// The node process, once started.
    pid: Option<u32>,
    /// Its mount namespace (`/proc/PID/ns/mnt`), shared by everything the node starts
    /// except containers: how `delete` finds them.
    mount_ns: Option<String>,
}

impl NodeState {
    fn cgroup(&self, id: &str) -> String {
        format!("/{}/{}", cgroup_root(id), self.name)
    }
}

fn cgroup_root(id: &str) -> String {
    format!("skiff-{id}")
}

impl State {
    fn path(dir: &Path) -> PathBuf {
        dir.join("cluster.json")
    }

    fn load(dir: &Path) -> anyhow::Result<State> {
        let path = State::path(dir);
        let data = std::fs::read(&path).with_context(|| {
            format!(
                "no cluster in {}: reading {}",
                dir.display(),
                path.display()
            )
        })?;
        serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))
    }

    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = State::path(dir);
        let data = serde_json::to_vec_pretty(self)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))
}

/// Runs a command, failing with its stderr.
fn run_cmd(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A short id for the cluster in `dir`, unused by any network namespace or link here.
fn pick_id(dir: &Path) -> anyhow::Result<String> {
    use std::hash::{Hash, Hasher};
    let links = run_cmd("ip", &["-o", "link", "show"])?;
    for salt in 0u32..64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (dir, salt).hash(&mut hasher);
        let id = format!("{:06x}", hasher.finish() & 0xff_ffff);
        let taken = Path::new("/run/netns").join(format!("sk-{id}-0")).exists()
            || links.contains(&format!("skb-{id}"));
        if !taken {
            return Ok(id);
        }
    }
    bail!("no free cluster id")
}

/// A /24 in 10.250.0.0/16 no route of this machine covers: the nodes' network.
fn pick_subnet(id: &str) -> anyhow::Result<[u8; 3]> {
    let routes = run_cmd("ip", &["-4", "-o", "route", "show", "table", "all"])?;
    let addresses = run_cmd("ip", &["-4", "-o", "addr", "show"])?;
    let start = u8::from_str_radix(&id[..2], 16).unwrap_or(0);
    for step in 0..=255u8 {
        let third = start.wrapping_add(step);
        let prefix = format!("10.250.{third}.");
        if !routes.contains(&prefix) && !addresses.contains(&prefix) {
            return Ok([10, 250, third]);
        }
    }
    bail!("no free /24 in 10.250.0.0/16 for the nodes' network")
}

fn node_name(index: usize, servers: usize) -> String {
    match index {
        0 => "skiff-server".into(),
        _ if index < servers => format!("skiff-server-{index}"),
        _ => format!("skiff-agent-{index}"),
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    if args.servers > args.nodes {
        bail!(
            "--servers {} is more than --nodes {}: servers are nodes too",
            args.servers,
            args.nodes
        );
    }
    let dir = absolute(&args.data_dir)?;
    if State::path(&dir).exists() {
        bail!(
            "{} already holds a cluster: `skiff cluster delete --data-dir {}` first",
            dir.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let id = pick_id(&dir)?;
    let mut state = State {
        bridge: format!("skb-{id}"),
        id,
        ..Default::default()
    };
    state.save(&dir)?;
    match build(&dir, &args, &mut state).await {
        Ok(()) => Ok(()),
        Err(error) => {
            eprintln!("Creating the cluster failed: {error:#}");
            eprintln!(
                "Node logs are in {}; cleaning up.",
                dir.join("logs").display()
            );
            if let Err(cleanup) = delete(&dir, &state) {
                eprintln!("Cleaning up failed too: {cleanup:#}");
            }
            Err(error)
        }
    }
}

async fn build(dir: &Path, args: &CreateArgs, state: &mut State) -> anyhow::Result<()> {
    let started = Instant::now();
    let [a, b, c] = pick_subnet(&state.id)?;
    let gateway = Ipv4Addr::new(a, b, c, 1);
    println!(
        "Creating a {}-node cluster ({} server{}) in {} (nodes' network 10.250.{c}.0/24 on bridge {}, pods {})",
        args.nodes,
        args.servers,
        if args.servers == 1 { "" } else { "s" },
        dir.display(),
        state.bridge,
        args.cluster_cidr
    );
    let bridge = state.bridge.clone();
    run_cmd("ip", &["link", "add", &bridge, "type", "bridge"])?;
    state.gateway = Some(gateway);
    state.save(dir)?;
    run_cmd(
        "ip",
        &["addr", "add", &format!("{gateway}/24"), "dev", &bridge],
    )?;
    run_cmd("ip", &["link", "set", &bridge, "up"])?;
    let servers = usize::from(args.servers);
    for index in 0..usize::from(args.nodes) {
        let name = node_name(index, servers);
        let node = NodeState {
            netns: format!("sk-{}-{index}", state.id),
            ip: Ipv4Addr::new(a, b, c, 10 + index as u8),
            data_dir: dir.join("nodes").join(&name),
            name,
            pid: None,
            mount_ns: None,
        };
        state.nodes.push(node.clone());
        state.save(dir)?;
        plug_in(&node, &bridge, gateway, index)?;
        println!(
            "  node {} at {} (network namespace {})",
            node.name, node.ip, node.netns
        );
    }

    let mut server_role = vec![
        "server".to_string(),
        "--bind-address".into(),
        "0.0.0.0".into(),
    ];
    if servers > 1 {
        let endpoint = start_etcd(dir, state, gateway).await?;
        server_role.extend([
            "--datastore".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            endpoint,
        ]);
    }
    let server_role: Vec<&str> = server_role.iter().map(String::as_str).collect();
    let server = state.nodes[0].clone();
    let server_url = format!("https://{}:6443", server.ip);
    let command = node_command(&server, state, args, &server_role);
    start_node(dir, state, 0, command)?;
    println!("  starting the control plane on {}", server.name);
    let token_path = server.data_dir.join("node-token");
    let admin = server.data_dir.join("admin.kubeconfig");
    wait_for(args.wait, "the server's node token and kubeconfig", || {
        node_alive(state, 0)?;
        Ok(token_path.exists() && admin.exists())
    })
    .await?;
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("reading {}", token_path.display()))?;
    let kubeconfig = dir.join("kubeconfig");
    write_host_kubeconfig(&admin, &kubeconfig, &server_url)?;

    // The other servers: the first one's authorities and keys, their own serving
    // certificates (made for their own addresses when they start).
    for index in 1..servers {
        let node = state.nodes[index].clone();
        share_credentials(&server.data_dir, &node.data_dir)?;
        let command = node_command(&node, state, args, &server_role);
        start_node(dir, state, index, command)?;
        println!("  starting the control plane on {} too", node.name);
    }
    for index in servers..state.nodes.len() {
        let mut command = node_command(
            &state.nodes[index],
            state,
            args,
            &["agent", "--server", &server_url],
        );
        // Through the environment, so that it is not in every `ps` listing.
        command.env("SKIFF_TOKEN", token.trim());
        start_node(dir, state, index, command)?;
        println!("  starting {}", state.nodes[index].name);
    }

    let client = crate::kube_client(Some(&kubeconfig), "skiff-cluster").await?;
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
    let wanted = state.nodes.len();
    let mut reported = 0;
    let deadline = Instant::now() + args.wait;
    loop {
        for index in 0..state.nodes.len() {
            node_alive(state, index)?;
        }
        let ready = match nodes.list(&Default::default()).await {
            Ok(list) => list.items.iter().filter(|n| ready_with_range(n)).count(),
            Err(_) => 0,
        };
        if ready > reported {
            println!("  {ready}/{wanted} nodes Ready");
            reported = ready;
        }
        if ready >= wanted {
            break;
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for every node to be Ready ({ready}/{wanted})");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "Cluster ready in {:.0}s. Use it with:\n  export KUBECONFIG={}\n  kubectl get nodes -o wide\nDelete it with:\n  skiff cluster delete --data-dir {}",
        started.elapsed().as_secs_f64(),
        kubeconfig.display(),
        dir.display()
    );
    Ok(())
}

/// A node counts once the kubelet reports Ready (its runtime took the pod range), the
/// node has its range, and the node lifecycle controller has lifted the not-ready taint
/// it may have set in between (so pods can be scheduled there at once).
fn ready_with_range(node: &k8s_openapi::api::core::v1::Node) -> bool {
    let has_range = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_some_and(|c| !c.is_empty());
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .any(|t| t.key.starts_with("node.kubernetes.io/"));
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    has_range && ready && !tainted
}

/// What every server of one cluster must hold alike: the cluster CA (which signs and
/// verifies every certificate), the service-account signing key, the front proxy's CA
/// and client certificate, the admin's certificate and the agents' join token.
const SHARED_CREDENTIALS: &[&str] = &[
    "tls/ca.crt",
    "tls/ca.key",
    "tls/service-account.key",
    "tls/front-proxy-ca.crt",
    "tls/front-proxy-ca.key",
    "tls/front-proxy-client.crt",
    "tls/front-proxy-client.key",
    "tls/admin.crt",
    "tls/admin.key",
    "node-token",
];

fn share_credentials(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to.join("tls"))
        .with_context(|| format!("creating {}", to.join("tls").display()))?;
    for file in SHARED_CREDENTIALS {
        let (source, target) = (from.join(file), to.join(file));
        let contents =
            std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        skiff_pki::write_private_file(&target, &contents)
            .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

/// Starts the etcd the servers share, on the bridge's address (reachable from every
/// node), with its data and log in the cluster's dir; its client URL once it answers.
async fn start_etcd(dir: &Path, state: &mut State, gateway: Ipv4Addr) -> anyhow::Result<String> {
    let free_port = |ip: Ipv4Addr| -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind((ip, 0))
            .context("finding a free port for etcd")?
            .local_addr()?
            .port())
    };
    let (client, peer) = (free_port(gateway)?, free_port(Ipv4Addr::LOCALHOST)?);
    let endpoint = format!("http://{gateway}:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let data_dir = dir.join("etcd");
    let name = format!("skiff-{}", state.id);
    let log_path = dir.join("logs").join("etcd.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let child = Command::new("etcd")
        .args(["--name", &name])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen-client-urls", &endpoint])
        .args(["--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("{name}={peer_url}")])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting etcd (the Debian package etcd-server; scripts/setup installs it)")?;
    state.etcd = Some(EtcdState {
        pid: child.id(),
        endpoint: endpoint.clone(),
        data_dir,
    });
    // It outlives this command, as the nodes do.
    drop(child);
    state.save(dir)?;
    println!("  etcd for the servers at {endpoint}");
    let address = std::net::SocketAddr::from((gateway, client));
    wait_for(Duration::from_secs(30), "etcd to answer", || {
        Ok(std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok())
    })
    .await?;
    Ok(endpoint)
}

/// Stops the cluster's etcd, if it is still the process that was started.
fn stop_etcd(etcd: &EtcdState) {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", etcd.pid)).unwrap_or_default();
    let ours = String::from_utf8_lossy(&cmdline).contains(&*etcd.data_dir.to_string_lossy());
    if ours {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(etcd.pid as i32, libc::SIGTERM);
        }
        for _ in 0..50 {
            if !Path::new(&format!("/proc/{}", etcd.pid)).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Makes the node's network namespace and plugs it into the bridge.
fn plug_in(node: &NodeState, bridge: &str, gateway: Ipv4Addr, index: usize) -> anyhow::Result<()> {
    let ns = node.netns.as_str();
    let host_side = format!("{bridge}-{index}");
    run_cmd("ip", &["netns", "add", ns])?;
    run_cmd(
        "ip",
        &[
            "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    run_cmd("ip", &["link", "set", &host_side, "master", bridge, "up"])?;
    let in_ns = |args: &[&str]| {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        run_cmd("ip", &all)
    };
    in_ns(&["link", "set", "lo", "up"])?;
    in_ns(&["addr", "add", &format!("{}/24", node.ip), "dev", "eth0"])?;
    in_ns(&["link", "set", "eth0", "up"])?;
    in_ns(&["route", "add", "default", "via", &gateway.to_string()])?;
    Ok(())
}

/// `skiff <role…>` with the flags every node gets: its own name, data dir, CNI config,
/// pod logs and cgroup parent, and the cluster's pod range.
fn node_command(node: &NodeState, state: &State, args: &CreateArgs, role: &[&str]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap_or_else(|_| "skiff".into()));
    let dir = &node.data_dir;
    let backend = match args.pod_network_backend {
        skiff_podnet::Backend::HostGw => "host-gw",
        skiff_podnet::Backend::Vxlan => "vxlan",
    };
    let proxy_mode = match args.proxy_mode {
        skiff_proxy::ProxyMode::Nftables => "nftables",
        skiff_proxy::ProxyMode::Iptables => "iptables",
        skiff_proxy::ProxyMode::Userspace => "userspace",
    };
    command
        .args(role)
        .arg("--data-dir")
        .arg(dir)
        .args(["--node-name", &node.name])
        .args(["--cluster-cidr", &args.cluster_cidr.to_string()])
        .arg("--cni-conf-dir")
        .arg(dir.join("net.d"))
        .arg("--pod-logs-dir")
        .arg(dir.join("logs"))
        .args(["--cgroup-parent", &node.cgroup(&state.id)])
        .args(["--proxy-mode", proxy_mode])
        .args(["--pod-network-backend", backend])
        // Every node shares this machine's disk, so none may judge it (as kind
        // configures its nodes): disk-based eviction and image collection are off.
        .args(["--eviction-hard", "memory.available<100Mi"])
        .args(["--image-gc-high-threshold", "100"]);
    command
}

/// Starts a node's process in its network namespace and a mount namespace of its own,
/// detached from this one (it outlives `cluster create`), logging to `DIR/logs`.
fn start_node(
    dir: &Path,
    state: &mut State,
    index: usize,
    mut command: Command,
) -> anyhow::Result<()> {
    let node = &state.nodes[index];
    std::fs::create_dir_all(&node.data_dir)
        .with_context(|| format!("creating {}", node.data_dir.display()))?;
    let log_path = dir.join("logs").join(format!("{}.log", node.name));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let netns_path = format!("/run/netns/{}", node.netns);
    let netns =
        std::fs::File::open(&netns_path).with_context(|| format!("opening {netns_path}"))?;
    let netns_fd = netns.as_raw_fd();
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: between fork and exec only async-signal-safe system calls run: setsid,
    // setns on a descriptor opened before the fork, unshare, and mount with static
    // strings.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 || libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The host's mounts still reach the node; the node's (overlays, namespace
            // files, volumes) stay in it, and go when its last process does.
            let flags = libc::MS_REC | libc::MS_SLAVE;
            if libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting node {}", node.name))?;
    drop(netns);
    let pid = child.id();
    // The child is not waited for: it is the node, and outlives this command.
    drop(child);
    let mount_ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let node = &mut state.nodes[index];
    node.pid = Some(pid);
    node.mount_ns = mount_ns;
    state.save(dir)
}

/// Fails if the node's process has exited (pointing at its log).
fn node_alive(state: &State, index: usize) -> anyhow::Result<()> {
    let node = &state.nodes[index];
    let Some(pid) = node.pid else { return Ok(()) };
    if still_ours(pid, node) {
        return Ok(());
    }
    bail!(
        "node {} stopped; see its log, logs/{}.log",
        node.name,
        node.name
    )
}

/// Whether `pid` is still the node's process (alive, not a zombie, and in the node's
/// mount namespace: a reused pid would not be).
fn still_ours(pid: u32, node: &NodeState) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    !stat.is_empty() && !zombie && ns.is_some() && ns == node.mount_ns
}

async fn wait_for(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server's admin kubeconfig, pointing at the server's address on the bridge.
fn write_host_kubeconfig(admin: &Path, out: &Path, server_url: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(admin).with_context(|| format!("reading {}", admin.display()))?;
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", admin.display()))?;
    let clusters = config
        .get_mut("clusters")
        .and_then(|c| c.as_sequence_mut())
        .context("the admin kubeconfig has no clusters")?;
    for cluster in clusters {
        if let Some(c) = cluster.get_mut("cluster").and_then(|c| c.as_mapping_mut()) {
            c.insert("server".into(), server_url.into());
        }
    }
    let text = serde_yaml::to_string(&config)?;
    // It carries the cluster admin's credentials.
    skiff_pki::write_private_file(out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))
}

/// Everything of the cluster goes: node processes and all they started, cgroups,
/// namespaces, bridge, state. Each step is tried even when an earlier one failed.
fn delete(dir: &Path, state: &State) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    for node in &state.nodes {
        stop_node(node, &state.id);
    }
    if let Some(etcd) = &state.etcd {
        stop_etcd(etcd);
    }
    remove_cgroups(&cgroup_root(&state.id));
    for node in &state.nodes {
        if Path::new("/run/netns").join(&node.netns).exists() {
            if let Err(e) = run_cmd("ip", &["netns", "del", &node.netns]) {
                errors.push(e);
            }
        }
    }
    if !state.bridge.is_empty() && Path::new("/sys/class/net").join(&state.bridge).exists() {
        if let Err(e) = run_cmd("ip", &["link", "del", &state.bridge]) {
            errors.push(e);
        }
    }
    for path in [dir.join("nodes"), dir.join("kubeconfig"), dir.join("etcd")] {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                errors.push(anyhow::anyhow!("removing {}: {e}", path.display()))
            }
            _ => {}
        }
    }
    if errors.is_empty() {
        let _ = std::fs::remove_file(State::path(dir));
        Ok(())
    } else {
        let all: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
        bail!("{}", all.join("; "))
    }
}

/// Kills the node's processes until none is left: those of its mount namespace (the
/// agent, container monitors, sandbox holders, runc) and those in its cgroups
/// (containers, which have mount namespaces of their own).
fn stop_node(node: &NodeState, id: &str) {
    let cgroup = node.cgroup(id);
    for round in 0..50 {
        let mut pids: Vec<i32> = processes_in_cgroups(&cgroup);
        if let Some(ns) = &node.mount_ns {
            pids.extend(processes_in_mount_ns(ns));
        }
        pids.sort_unstable();
        pids.dedup();
        let own = std::process::id() as i32;
        pids.retain(|p| *p != own);
        if pids.is_empty() {
            return;
        }
        // The node process first asked nicely, so it can leave its state tidy.
        let signal = if round == 0 {
            libc::SIGTERM
        } else {
            libc::SIGKILL
        };
        for pid in &pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(*pid, signal);
            }
        }
        std::thread::sleep(Duration::from_millis(if round == 0 { 500 } else { 100 }));
    }
    eprintln!("some processes of node {} would not stop", node.name);
}

fn processes_in_mount_ns(ns: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                .is_ok_and(|p| p.to_string_lossy() == ns)
        })
        .collect()
}

/// The cgroup v1 hierarchies (and the v2 one) mounted here.
fn hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn processes_in_cgroups(cgroup: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for hierarchy in hierarchies() {
        let mut stack = vec![hierarchy.join(cgroup.trim_start_matches('/'))];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids
}

/// Removes the cgroup `root` and everything below it in every hierarchy, deepest first
/// (a cgroup directory goes only once it has no children and no processes).
fn remove_cgroups(root: &str) {
    for hierarchy in hierarchies() {
        let top = hierarchy.join(root);
        let mut dirs = Vec::new();
        let mut stack = vec![top];
        while let Some(dir) = stack.pop() {
            if !dir.is_dir() {
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(dir);
        }
        for dir in dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
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
        cluster: ClusterCommand,
    }

    #[test]
    fn flags() {
        let cli =
            Cli::try_parse_from(["cluster", "create", "--nodes", "3", "--data-dir", "/tmp/c"])
                .expect("parse");
        let ClusterAction::Create(args) = cli.cluster.action else {
            panic!("not create");
        };
        assert_eq!(args.nodes, 3);
        assert_eq!(args.cluster_cidr.to_string(), "10.42.0.0/16");
        assert!(
            Cli::try_parse_from(["cluster", "create", "--nodes", "0", "--data-dir", "/x"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["cluster", "create"]).is_err(),
            "--data-dir is required"
        );
        assert!(matches!(
            Cli::try_parse_from(["cluster", "delete", "--data-dir", "/tmp/c"])
                .expect("parse")
                .cluster
                .action,
            ClusterAction::Delete(_)
        ));
    }

    #[test]
    fn a_node_counts_once_ready_with_a_range_and_untainted() {
        use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Taint};
        let node = |range: Option<&str>, ready: &str, taint: Option<&str>| Node {
            spec: Some(NodeSpec {
                pod_cidr: range.map(str::to_string),
                taints: taint.map(|key| {
                    vec![Taint {
                        key: key.into(),
                        effect: "NoSchedule".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(ready_with_range(&node(Some("10.42.0.0/24"), "True", None)));
        assert!(!ready_with_range(&node(None, "True", None)));
        assert!(!ready_with_range(&node(
            Some("10.42.0.0/24"),
            "False",
            None
        )));
        assert!(!ready_with_range(&node(
            Some("10.42.0.0/24"),
            "True",
            Some("node.kubernetes.io/not-ready")
        )));
    }

    #[test]
    fn node_names_and_cgroups() {
        assert_eq!(node_name(0, 1), "skiff-server");
        assert_eq!(node_name(2, 1), "skiff-agent-2");
        assert_eq!(node_name(1, 2), "skiff-server-1");
        assert_eq!(node_name(2, 2), "skiff-agent-2");
        let node = NodeState {
            name: node_name(1, 1),
            netns: "sk-abc123-1".into(),
            ip: Ipv4Addr::new(10, 250, 1, 11),
            data_dir: "/d/nodes/skiff-agent-1".into(),
            pid: None,
            mount_ns: None,
        };
        assert_eq!(node.cgroup("abc123"), "/skiff-abc123/skiff-agent-1");
    }
}
