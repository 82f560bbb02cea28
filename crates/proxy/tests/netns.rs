//! The rules in a real kernel: a "node" network namespace routes to two "pod" namespaces
//! (one veth and one /24 each, as a routed CNI would), the proxy's transactions are
//! applied there with `ip netns exec NODE nft` (or `… iptables-restore`), and TCP
//! connections to the Service's addresses show which backend answered and which source
//! address it saw. The same scenario runs in both kernel modes; the userspace mode, whose
//! listeners must live in the node namespace, has a scenario of its own.
//!
//! Needs root, `ip` and `nft` (and the iptables tools for iptables mode); skipped with a
//! message otherwise. Touches only namespaces it creates, and deletes them even when an
//! assertion fails.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_e2e::netns::{enter, sh};
use skiff_proxy::{
    model, Apply, Backend, Iptables, IptablesCommand, NftCommand, Proxier, ProxyMode, RenderConfig,
    SyncKind, Userspace,
};

const CLUSTER_IP: &str = "10.96.0.50:80";
const NODE_IP: &str = "192.168.77.1";
const NODE_PORT: u16 = 30080;

fn skip_reason(mode: ProxyMode) -> Option<String> {
    let kernel_tool = match mode {
        ProxyMode::Nftables | ProxyMode::Userspace => ["nft", "--version"],
        ProxyMode::Iptables => ["iptables-restore", "--version"],
    };
    skiff_e2e::netns::unavailable(&[["ip", "-V"], kernel_tool])
}

/// The test's namespaces and responder threads; dropping it removes them all.
struct Lab {
    node: String,
    pods: Vec<String>,
    stop: Arc<AtomicBool>,
    servers: Vec<thread::JoinHandle<()>>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for server in self.servers.drain(..) {
            let _ = server.join();
        }
        for ns in std::iter::once(&self.node).chain(&self.pods) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    /// `tag` keeps the namespaces of tests running at once apart.
    fn new(tag: &str) -> Lab {
        let id = std::process::id();
        let mut lab = Lab {
            node: format!("skp-node-{tag}-{id}"),
            pods: vec![format!("skp-a-{tag}-{id}"), format!("skp-b-{tag}-{id}")],
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        let node = lab.node.clone();
        sh(&format!("ip netns add {node}"));
        sh(&format!("ip -n {node} link set lo up"));
        sh(&format!(
            "ip netns exec {node} sysctl -qw net.ipv4.ip_forward=1"
        ));
        // The node's own address (NodePorts) and a default route, which a real node has:
        // without a route, connecting to a cluster IP fails before any hook runs. A veth
        // pair with both ends in the node stands for its uplink.
        sh(&format!(
            "ip -n {node} link add up0 type veth peer name up1"
        ));
        sh(&format!("ip -n {node} link set up1 up"));
        sh(&format!("ip -n {node} link set up0 up"));
        sh(&format!("ip -n {node} addr add {NODE_IP}/24 dev up0"));
        sh(&format!("ip -n {node} route add default dev up0"));
        for (i, pod) in lab.pods.clone().iter().enumerate() {
            let n = i + 1;
            sh(&format!("ip netns add {pod}"));
            sh(&format!("ip -n {pod} link set lo up"));
            sh(&format!(
                "ip -n {node} link add veth{n} type veth peer name eth0 netns {pod}"
            ));
            sh(&format!("ip -n {node} addr add 10.88.{n}.1/24 dev veth{n}"));
            sh(&format!("ip -n {node} link set veth{n} up"));
            sh(&format!("ip -n {pod} addr add 10.88.{n}.2/24 dev eth0"));
            sh(&format!("ip -n {pod} link set eth0 up"));
            sh(&format!("ip -n {pod} route add default via 10.88.{n}.1"));
            lab.serve(pod, if i == 0 { "A" } else { "B" });
        }
        lab
    }

    /// A responder on port 8080 in `ns` that answers `NAME PEER-IP` and closes.
    fn serve(&mut self, namespace: &str, name: &'static str) {
        let (ns, stop) = (namespace.to_string(), self.stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        self.servers.push(thread::spawn(move || {
            enter(&ns).expect("enter pod netns");
            let listener = TcpListener::bind("0.0.0.0:8080").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).expect("ready");
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.write_all(format!("{name} {}\n", peer.ip()).as_bytes());
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server ready");
        // The same on UDP: every datagram answered with the name.
        let (ns, stop) = (namespace.to_string(), self.stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        self.servers.push(thread::spawn(move || {
            enter(&ns).expect("enter pod netns");
            let socket = UdpSocket::bind("0.0.0.0:8080").expect("bind udp");
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
            ready_tx.send(()).expect("ready");
            let mut buffer = [0u8; 512];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = socket.recv_from(&mut buffer) {
                    let _ = socket.send_to(name.as_bytes(), peer);
                }
            }
        }));
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("udp server ready");
    }

    /// Connects from namespace `ns` to `addr`; the backend's answer, as `(name, peer)`.
    fn connect(&self, ns: &str, addr: &str) -> io::Result<(String, String)> {
        let (ns, addr): (String, SocketAddr) = (ns.to_string(), addr.parse().expect("addr"));
        thread::spawn(move || {
            enter(&ns)?;
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            conn.set_read_timeout(Some(Duration::from_secs(3)))?;
            let mut answer = String::new();
            conn.read_to_string(&mut answer)?;
            let mut words = answer.split_whitespace().map(str::to_string);
            match (words.next(), words.next()) {
                (Some(name), Some(peer)) => Ok((name, peer)),
                _ => Err(io::Error::other(format!("odd answer {answer:?}"))),
            }
        })
        .join()
        .expect("client thread")
    }

    /// `n` connections; how many each (backend, peer address) pair answered.
    fn tally(&self, ns: &str, addr: &str, n: usize) -> BTreeMap<(String, String), usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let answer = self
                .connect(ns, addr)
                .unwrap_or_else(|e| panic!("connect {addr} from {ns}: {e}"));
            *seen.entry(answer).or_insert(0) += 1;
        }
        seen
    }

    fn backends(&self, ns: &str, addr: &str, n: usize) -> Vec<String> {
        let mut names: Vec<String> = self
            .tally(ns, addr, n)
            .into_keys()
            .map(|(name, _)| name)
            .collect();
        names.dedup();
        names
    }

    fn assert_refused(&self, ns: &str, addr: &str) {
        let start = Instant::now();
        let err = self
            .connect(ns, addr)
            .expect_err("a service without endpoints must refuse");
        assert_eq!(
            err.kind(),
            io::ErrorKind::ConnectionRefused,
            "{addr} from {ns}: {err}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "refused, not hung"
        );
    }

    /// One datagram from a new socket in `ns` to `addr`: the answer and where it came
    /// from.
    fn ask_udp(&self, ns: &str, addr: &str) -> io::Result<(String, SocketAddr)> {
        let (ns, addr): (String, SocketAddr) = (ns.to_string(), addr.parse().expect("addr"));
        thread::spawn(move || {
            enter(&ns)?;
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(Duration::from_secs(2)))?;
            socket.send_to(b"?", addr)?;
            let mut buffer = [0u8; 16];
            let (n, from) = socket.recv_from(&mut buffer)?;
            Ok((String::from_utf8_lossy(&buffer[..n]).into_owned(), from))
        })
        .join()
        .expect("client thread")
    }

    /// The output of `args` run in the node namespace.
    fn node_exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.node])
            .args(args)
            .output()
            .expect("run in the node namespace");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The proxy's rules as the kernel lists them.
    fn rules(&self, mode: ProxyMode) -> String {
        match mode {
            ProxyMode::Nftables => self.node_exec(&["nft", "list", "table", "ip", "skiff-proxy"]),
            ProxyMode::Iptables => self.node_exec(&["iptables-save"]),
            ProxyMode::Userspace => {
                self.node_exec(&["nft", "list", "table", "ip", "skiff-userspace"])
            }
        }
    }
}

fn web(affinity: bool) -> Service {
    let mut spec = json!({
        "type": "NodePort",
        "clusterIP": "10.96.0.50",
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": NODE_PORT}],
    });
    if affinity {
        spec["sessionAffinity"] = json!("ClientIP");
    }
    serde_json::from_value(json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec}))
        .expect("service")
}

/// The `web` Service's slice: its endpoints at `ips`, port 8080/TCP.
fn slice(ips: &[&str]) -> EndpointSlice {
    slice_of("web", "http", "TCP", ips)
}

/// The `dns` Service (cluster IP 10.96.0.53, port 53/UDP to 8080).
fn dns() -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": "dns"},
        "spec": {"clusterIP": "10.96.0.53", "ports": [{"name": "dns", "port": 53, "targetPort": 8080, "protocol": "UDP"}]},
    }))
    .expect("service")
}

fn dns_slice(ips: &[&str]) -> EndpointSlice {
    slice_of("dns", "dns", "UDP", ips)
}

/// A slice of `service` with ready endpoints at `ips` on the node, port 8080 named
/// `port_name`.
fn slice_of(service: &str, port_name: &str, protocol: &str, ips: &[&str]) -> EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "node", "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": format!("{service}-x"),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": 8080, "protocol": protocol}],
        "endpoints": endpoints,
    }))
    .expect("slice")
}

fn config() -> RenderConfig {
    RenderConfig {
        cluster_cidr: Some("10.88.0.0/16".parse().expect("cidr")),
        ..RenderConfig::default()
    }
}

fn sync<A: Apply, B: Backend>(
    proxier: &mut Proxier<A, B>,
    svc: &Service,
    ips: &[&str],
) -> SyncKind {
    let model = model::build([svc], [&slice(ips)], "node");
    proxier.sync(&model).expect("sync")
}

#[test]
fn nftables_cluster_ip_nodeport_hairpin_incremental_removal_and_reject() {
    let mode = ProxyMode::Nftables;
    if let Some(reason) = skip_reason(mode) {
        eprintln!("SKIPPED: the real-kernel proxy test needs root, ip and nft: {reason}");
        return;
    }
    let lab = Lab::new("nft");
    let nft = NftCommand::new(["ip", "netns", "exec", lab.node.as_str(), "nft"]);
    scenario(&lab, mode, &mut Proxier::new(config(), nft));
}

#[test]
fn iptables_cluster_ip_nodeport_hairpin_incremental_removal_and_reject() {
    let mode = ProxyMode::Iptables;
    if let Some(reason) = skip_reason(mode) {
        eprintln!("SKIPPED: the real-kernel proxy test needs root, ip and iptables: {reason}");
        return;
    }
    let lab = Lab::new("ipt");
    let prefix = ["ip", "netns", "exec", lab.node.as_str()];
    let mut proxier = Proxier::with_backend(Iptables, config(), IptablesCommand::new(prefix));
    scenario(&lab, mode, &mut proxier);

    // A restart: a new proxier knows nothing of the chains the last one wrote. Its full
    // sync finds the stale service chains with iptables-save and deletes them, and does
    // not duplicate the jumps from the built-in chains.
    let mut restarted = Proxier::with_backend(Iptables, config(), IptablesCommand::new(prefix));
    let other: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": "other"},
        "spec": {"clusterIP": "10.96.0.60", "ports": [{"name": "http", "port": 80}]},
    }))
    .expect("service");
    assert_eq!(sync(&mut restarted, &other, &[]), SyncKind::Full);
    let saved = lab.rules(mode);
    for gone in ["KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "10.96.0.50"] {
        assert!(!saved.contains(gone), "{gone} left in\n{saved}");
    }
    assert!(
        saved.contains(
            "-d 10.96.0.60/32 -p tcp -m comment --comment \"ns/other:http has no endpoints\""
        ),
        "{saved}"
    );
    for (table, chain) in [
        ("nat", "PREROUTING"),
        ("nat", "OUTPUT"),
        ("nat", "POSTROUTING"),
        ("filter", "INPUT"),
        ("filter", "OUTPUT"),
    ] {
        let listed = lab.node_exec(&["iptables", "-t", table, "-S", chain]);
        assert_eq!(
            listed.matches("-j KUBE-").count(),
            1,
            "{table} {chain}:\n{listed}"
        );
    }
    let forward = lab.node_exec(&["iptables", "-t", "filter", "-S", "FORWARD"]);
    assert_eq!(forward.matches("-j KUBE-").count(), 2, "{forward}");
    lab.assert_refused(&lab.node, "10.96.0.60:80");
}

/// Everything both modes must do, in one sequence of syncs: each step changes the rules
/// incrementally from the last.
fn scenario<A: Apply, B: Backend>(lab: &Lab, mode: ProxyMode, proxier: &mut Proxier<A, B>) {
    let (node, pod_a) = (lab.node.clone(), lab.pods[0].clone());
    let proxier = &mut *proxier;

    let both = ["10.88.1.2", "10.88.2.2"];
    assert_eq!(sync(proxier, &web(false), &both), SyncKind::Full);

    // From the node: both backends answer the cluster IP.
    assert_eq!(lab.backends(&node, CLUSTER_IP, 40), ["A", "B"]);

    // From pod A: B sees A's own address (pod to pod needs no masquerade); A reaching
    // itself (hairpin) sees the node's address, or its reply would bypass the NAT.
    let from_a = lab.tally(&pod_a, CLUSTER_IP, 40);
    let peers: BTreeMap<&str, &str> = from_a
        .keys()
        .map(|(name, peer)| (name.as_str(), peer.as_str()))
        .collect();
    assert_eq!(peers.get("B"), Some(&"10.88.1.2"), "{from_a:?}");
    assert_eq!(peers.get("A"), Some(&"10.88.1.1"), "{from_a:?}");

    // NodePort on the node's address, from the node and from a pod; external traffic
    // under policy Cluster is masqueraded, so no backend sees pod A's address.
    let node_port = format!("{NODE_IP}:{NODE_PORT}");
    assert_eq!(lab.backends(&node, &node_port, 30), ["A", "B"]);
    let via_node_port = lab.tally(&pod_a, &node_port, 30);
    assert!(
        via_node_port.keys().all(|(_, peer)| peer != "10.88.1.2"),
        "{via_node_port:?}"
    );

    // ClientIP affinity: every connection from one client sticks to one backend.
    assert_eq!(sync(proxier, &web(true), &both), SyncKind::Partial);
    let affinity = match mode {
        ProxyMode::Nftables => "flags dynamic,timeout",
        ProxyMode::Iptables => "--rcheck --seconds 10800 --reap",
        ProxyMode::Userspace => unreachable!("the userspace mode has its own scenario"),
    };
    assert!(lab.rules(mode).contains(affinity));
    assert_eq!(lab.backends(&node, CLUSTER_IP, 20).len(), 1);
    assert_eq!(sync(proxier, &web(false), &both), SyncKind::Partial);

    // One endpoint removed incrementally: only A answers, B's chain is gone.
    assert_eq!(
        sync(proxier, &web(false), &["10.88.1.2"]),
        SyncKind::Partial
    );
    assert_eq!(lab.backends(&node, CLUSTER_IP, 20), ["A"]);
    assert_eq!(lab.backends(&pod_a, CLUSTER_IP, 10), ["A"]);
    let listed = lab.rules(mode);
    assert!(!listed.contains("10.88.2.2"), "{listed}");

    // No endpoints: refused at once from the node (output hook), from a pod (forward
    // hook) and on the NodePort (input hook).
    assert_eq!(sync(proxier, &web(false), &[]), SyncKind::Partial);
    lab.assert_refused(&node, CLUSTER_IP);
    lab.assert_refused(&pod_a, CLUSTER_IP);
    lab.assert_refused(&pod_a, &node_port);

    // And back.
    assert_eq!(sync(proxier, &web(false), &both), SyncKind::Partial);
    assert_eq!(lab.backends(&node, CLUSTER_IP, 40), ["A", "B"]);
}

/// A UDP client keeps its source port, and with it its conntrack entry and the NAT
/// chosen when the entry was made: once its backend is removed, the proxy must delete
/// that entry, or the client keeps talking to a pod that is no longer an endpoint.
#[test]
fn udp_flows_leave_a_removed_endpoint() {
    if let Some(reason) = skip_reason(ProxyMode::Nftables) {
        eprintln!("SKIPPED: the real-kernel UDP test needs root, ip and nft: {reason}");
        return;
    }
    if Command::new("conntrack").arg("--version").output().is_err() {
        eprintln!("SKIPPED: the real-kernel UDP test needs the conntrack tool");
        return;
    }
    let lab = Lab::new("udp");
    let node = lab.node.clone();
    let nft = NftCommand::new(["ip", "netns", "exec", node.as_str(), "nft"]);
    let mut proxier = Proxier::new(config(), nft);
    let dns = dns();
    let both = ["10.88.1.2", "10.88.2.2"];
    proxier
        .sync(&model::build([&dns], [&dns_slice(&both)], "node"))
        .expect("sync");
    // One socket in the node's namespace, asking before and after the change.
    let (first, after) = thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(&node).expect("enter node netns");
                let socket = UdpSocket::bind("0.0.0.0:40053").expect("bind client");
                socket
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                let ask = || {
                    socket.send_to(b"?", "10.96.0.53:53").expect("send");
                    let mut buffer = [0u8; 16];
                    let (n, _) = socket.recv_from(&mut buffer).expect("an answer");
                    String::from_utf8_lossy(&buffer[..n]).into_owned()
                };
                let first: Vec<String> = (0..5).map(|_| ask()).collect();
                // Drop whichever backend the flow is pinned to.
                let keep = if first[0] == "A" {
                    "10.88.2.2"
                } else {
                    "10.88.1.2"
                };
                proxier
                    .sync(&model::build([&dns], [&dns_slice(&[keep])], "node"))
                    .expect("sync");
                let after: Vec<String> = (0..5).map(|_| ask()).collect();
                (first, after)
            })
            .join()
            .expect("client thread")
    });
    assert!(
        first.iter().all(|b| b == &first[0]),
        "one flow, one backend: {first:?}"
    );
    let other = if first[0] == "A" { "B" } else { "A" };
    assert!(
        after.iter().all(|b| b == other),
        "after removing {}: {after:?}",
        first[0]
    );
}

/// The userspace mode: the proxy's own listeners in the node namespace carry every TCP
/// connection and UDP session, round robin over the endpoints, pinned per client under
/// ClientIP affinity, following endpoint changes live; its table only redirects.
#[test]
fn userspace_relays_tcp_and_udp_round_robin_with_affinity_and_live_endpoints() {
    if let Some(reason) = skip_reason(ProxyMode::Userspace) {
        eprintln!("SKIPPED: the real-kernel userspace test needs root, ip and nft: {reason}");
        return;
    }
    let lab = Lab::new("usr");
    let (node, pod_a) = (lab.node.clone(), lab.pods[0].clone());
    let dns = dns();
    let model_of = |web: &Service, ips: &[&str]| {
        model::build([web, &dns], [&slice(ips), &dns_slice(ips)], "node")
    };
    let both = ["10.88.1.2", "10.88.2.2"];
    let dns_ip = "10.96.0.53:53";
    let node_port = format!("{NODE_IP}:{NODE_PORT}");

    thread::scope(|scope| {
        scope
            .spawn(|| {
                // The runtime's threads, and so the portals' sockets, live in the node.
                enter(&node).expect("enter node netns");
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                let nft = NftCommand::new(["ip", "netns", "exec", node.as_str(), "nft"]);
                // Long enough that only an endpoint's removal moves a UDP session.
                let mut proxier =
                    Userspace::new(config(), nft).with_udp_timeout(Duration::from_secs(30));
                let sync = |proxier: &mut Userspace<NftCommand>, web: &Service, ips: &[&str]| {
                    runtime
                        .block_on(proxier.sync(&model_of(web, ips)))
                        .expect("sync")
                };

                assert_eq!(sync(&mut proxier, &web(false), &both), SyncKind::Full);
                let listed = lab.rules(ProxyMode::Userspace);
                assert!(listed.contains("redirect to :"), "{listed}");

                // TCP from a pod, round robin over both backends; each sees the
                // proxy's address on its side, not the client's (10.88.1.2).
                let from_a = lab.tally(&pod_a, CLUSTER_IP, 20);
                let peers: BTreeMap<&str, &str> = from_a
                    .keys()
                    .map(|(name, peer)| (name.as_str(), peer.as_str()))
                    .collect();
                assert_eq!(peers.get("A"), Some(&"10.88.1.1"), "{from_a:?}");
                assert_eq!(peers.get("B"), Some(&"10.88.2.1"), "{from_a:?}");
                assert_eq!(from_a.values().copied().collect::<Vec<_>>(), [10, 10]);
                // From the node itself, and through the node port from both.
                assert_eq!(lab.backends(&node, CLUSTER_IP, 10), ["A", "B"]);
                assert_eq!(lab.backends(&node, &node_port, 10), ["A", "B"]);
                assert_eq!(lab.backends(&pod_a, &node_port, 10), ["A", "B"]);

                // UDP: each new client socket is a session of its own, round robin;
                // answers come back from the Service's address.
                let mut names = BTreeMap::new();
                for from in [&pod_a, &node] {
                    for _ in 0..6 {
                        let (name, source) = lab
                            .ask_udp(from, dns_ip)
                            .unwrap_or_else(|e| panic!("UDP from {from}: {e}"));
                        assert_eq!(source.to_string(), dns_ip);
                        *names.entry(name).or_insert(0) += 1;
                    }
                }
                assert_eq!(names.len(), 2, "{names:?}");

                // ClientIP affinity: one client, one backend, on every address.
                assert_eq!(sync(&mut proxier, &web(true), &both), SyncKind::Noop);
                assert_eq!(lab.backends(&pod_a, CLUSTER_IP, 12).len(), 1);
                assert_eq!(lab.backends(&node, CLUSTER_IP, 12).len(), 1);
                assert_eq!(lab.backends(&pod_a, &node_port, 12).len(), 1);
                assert_eq!(sync(&mut proxier, &web(false), &both), SyncKind::Noop);
                assert_eq!(lab.backends(&pod_a, CLUSTER_IP, 10), ["A", "B"]);

                // A UDP session keeps its endpoint; when that endpoint is removed, its
                // next datagram goes to the one left.
                let (first, after) = thread::scope(|inner| {
                    inner
                        .spawn(|| {
                            enter(&pod_a).expect("enter pod netns");
                            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
                            socket
                                .set_read_timeout(Some(Duration::from_secs(2)))
                                .expect("timeout");
                            let ask = || {
                                socket.send_to(b"?", dns_ip).expect("send");
                                let mut buffer = [0u8; 16];
                                let (n, _) = socket.recv_from(&mut buffer).expect("an answer");
                                String::from_utf8_lossy(&buffer[..n]).into_owned()
                            };
                            let first: Vec<String> = (0..4).map(|_| ask()).collect();
                            let keep = if first[0] == "A" {
                                "10.88.2.2"
                            } else {
                                "10.88.1.2"
                            };
                            sync(&mut proxier, &web(false), &[keep]);
                            let after: Vec<String> = (0..4).map(|_| ask()).collect();
                            (first, after)
                        })
                        .join()
                        .expect("client thread")
                });
                assert!(first.iter().all(|b| b == &first[0]), "{first:?}");
                let other = if first[0] == "A" { "B" } else { "A" };
                assert!(after.iter().all(|b| b == other), "{after:?}");

                // TCP after the removal: only the endpoint left.
                let only = if other == "A" {
                    "10.88.1.2"
                } else {
                    "10.88.2.2"
                };
                assert_eq!(lab.backends(&pod_a, CLUSTER_IP, 10), [other]);
                assert_eq!(lab.backends(&node, &node_port, 10), [other]);
                assert_eq!(sync(&mut proxier, &web(false), &[only]), SyncKind::Noop);

                // No endpoints: refused at once, from the node and from a pod.
                let ports = proxier.ports();
                assert_eq!(sync(&mut proxier, &web(false), &[]), SyncKind::Partial);
                assert_eq!(proxier.ports(), ports, "the portals stay open");
                lab.assert_refused(&node, CLUSTER_IP);
                lab.assert_refused(&pod_a, CLUSTER_IP);
                lab.assert_refused(&pod_a, &node_port);
                assert_eq!(sync(&mut proxier, &web(false), &both), SyncKind::Partial);
                assert_eq!(lab.backends(&node, CLUSTER_IP, 10), ["A", "B"]);

                // The Services gone: their portals close, and the table is empty.
                runtime
                    .block_on(proxier.sync(&model::Model::default()))
                    .expect("sync");
                assert!(proxier.ports().is_empty());
                let listed = lab.rules(ProxyMode::Userspace);
                assert!(!listed.contains("10.96.0.50"), "{listed}");
                for port in ports.values() {
                    let addr = format!("127.0.0.1:{port}");
                    let gone = lab.connect(&node, &addr).expect_err("closed");
                    assert_eq!(gone.kind(), io::ErrorKind::ConnectionRefused, "{addr}");
                }
            })
            .join()
            .expect("the node's thread")
    });
}
