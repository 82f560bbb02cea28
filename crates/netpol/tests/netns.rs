//! The rules in a real kernel, laid out as the CNI bridge plugin lays out a node: a
//! "node" network namespace with a Linux bridge `skiff0` (10.88.0.1/16, hairpin ports)
//! and three "pod" namespaces veth'd into it — two in namespace `a` (`app=web`,
//! `app=client`), one in namespace `b`. Each pod answers TCP on ports 8080 and 9090; the
//! enforcer's transactions are applied in the node with `ip netns exec NODE nft`, and
//! connections between the pods show what passes. Pod-to-pod traffic here is bridged,
//! so this also shows that the `inet` forward hook sees it (through `br_netfilter`).
//!
//! Needs root, `ip` and `nft`; skipped with a message otherwise. Touches only namespaces
//! it creates, and deletes them even when an assertion fails.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{json, Value};
use skiff_e2e::netns::{enter, sh};
use skiff_netpol::{model, Enforcer, NftCommand, SyncKind};

const WEB: &str = "10.88.0.11";
const CLIENT_A: &str = "10.88.0.12";
const CLIENT_B: &str = "10.88.0.21";

fn skip_reason() -> Option<String> {
    skiff_e2e::netns::unavailable(&[["ip", "-V"], ["nft", "--version"]])
}

/// The test's namespaces and responder threads; dropping it removes them all.
struct Lab {
    node: String,
    /// (netns, address)
    pods: Vec<(String, &'static str)>,
    stop: Arc<AtomicBool>,
    servers: Vec<thread::JoinHandle<()>>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for server in self.servers.drain(..) {
            let _ = server.join();
        }
        for ns in std::iter::once(&self.node).chain(self.pods.iter().map(|(ns, _)| ns)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Lab {
    fn new() -> Lab {
        let id = std::process::id();
        let mut lab = Lab {
            node: format!("sknp-node-{id}"),
            pods: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        let node = lab.node.clone();
        sh(&format!("ip netns add {node}"));
        sh(&format!("ip -n {node} link set lo up"));
        // What the enforcer's `run` ensures on a real node; per network namespace here.
        sh(&format!(
            "ip netns exec {node} sysctl -qw net.bridge.bridge-nf-call-iptables=1"
        ));
        sh(&format!("ip -n {node} link add skiff0 type bridge"));
        sh(&format!("ip -n {node} addr add 10.88.0.1/16 dev skiff0"));
        sh(&format!("ip -n {node} link set skiff0 up"));
        for (n, (short, ip)) in [("web", WEB), ("ca", CLIENT_A), ("cb", CLIENT_B)]
            .into_iter()
            .enumerate()
        {
            let pod = format!("sknp-{short}-{id}");
            lab.pods.push((pod.clone(), ip));
            sh(&format!("ip netns add {pod}"));
            sh(&format!("ip -n {pod} link set lo up"));
            sh(&format!(
                "ip -n {node} link add veth{n} type veth peer name eth0 netns {pod}"
            ));
            sh(&format!("ip -n {node} link set veth{n} master skiff0"));
            sh(&format!(
                "ip -n {node} link set veth{n} type bridge_slave hairpin on"
            ));
            sh(&format!("ip -n {node} link set veth{n} up"));
            sh(&format!("ip -n {pod} addr add {ip}/16 dev eth0"));
            sh(&format!("ip -n {pod} link set eth0 up"));
            sh(&format!("ip -n {pod} route add default via 10.88.0.1"));
            lab.serve(&pod, 8080);
            lab.serve(&pod, 9090);
        }
        lab
    }

    /// A responder in `ns` that answers `ok` and closes.
    fn serve(&mut self, ns: &str, port: u16) {
        let (ns, stop) = (ns.to_string(), self.stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        self.servers.push(thread::spawn(move || {
            enter(&ns).expect("enter pod netns");
            let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).expect("ready");
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.write_all(b"ok\n");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server ready");
    }

    /// The netns of the pod with address `ip`, or the node's for `node`.
    fn netns(&self, who: &str) -> String {
        if who == "node" {
            return self.node.clone();
        }
        self.pods
            .iter()
            .find(|(_, ip)| *ip == who)
            .map(|(ns, _)| ns.clone())
            .expect("known pod")
    }

    /// Whether a TCP connection from `from` (a pod address or `node`) to `to:port` gets
    /// its answer within a second.
    fn connects(&self, from: &str, to: &str, port: u16) -> bool {
        let ns = self.netns(from);
        let addr: SocketAddr = format!("{to}:{port}").parse().expect("addr");
        thread::spawn(move || -> io::Result<String> {
            enter(&ns)?;
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            conn.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut answer = String::new();
            conn.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .join()
        .expect("client thread")
        .is_ok_and(|a| a == "ok\n")
    }

    #[track_caller]
    fn expect(&self, cases: &[(&str, &str, u16, bool)]) {
        for &(from, to, port, allowed) in cases {
            assert_eq!(
                self.connects(from, to, port),
                allowed,
                "{from} -> {to}:{port} should be {}\n{}",
                if allowed { "allowed" } else { "blocked" },
                self.nft_list()
            );
        }
    }

    fn nft_list(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node,
                "nft",
                "list",
                "table",
                "inet",
                "skiff-netpol",
            ])
            .output()
            .expect("nft list");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"app": app}},
        "spec": {"nodeName": "node", "containers": [{"name": "c", "image": "i",
                 "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip},
    }))
    .expect("pod")
}

fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .expect("policy")
}

fn web_ingress_from(peers: Value) -> NetworkPolicy {
    policy(
        "a",
        "web-allow",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": peers}]}),
    )
}

#[test]
fn policies_filter_bridged_pod_traffic() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED: the real-kernel network policy test needs root, ip and nft: {reason}");
        return;
    }
    let lab = Lab::new();
    let pods = [
        pod("a", "web", "web", WEB),
        pod("a", "client", "client", CLIENT_A),
        pod("b", "client", "client", CLIENT_B),
    ];
    let namespaces: Vec<Namespace> = [("a", "x"), ("b", "y")]
        .iter()
        .map(|(name, team)| {
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"team": team}}}))
                .expect("namespace")
        })
        .collect();
    let mut enforcer = Enforcer::new(NftCommand::new([
        "ip",
        "netns",
        "exec",
        lab.node.as_str(),
        "nft",
    ]));
    let mut sync = |policies: &[NetworkPolicy]| {
        let m = model::build(policies, &pods, &namespaces, "node");
        enforcer.sync(&m).expect("sync")
    };

    // No policy: everything connects.
    assert_eq!(sync(&[]), SyncKind::Full);
    assert_eq!(sync(&[]), SyncKind::Noop);
    lab.expect(&[
        (CLIENT_A, WEB, 8080, true),
        (CLIENT_B, WEB, 8080, true),
        (WEB, CLIENT_B, 8080, true),
        (CLIENT_B, CLIENT_A, 9090, true),
    ]);

    // Default deny for web's ingress: nobody reaches web, except its own node (probes);
    // web still connects out (the replies pass as established), and others are open.
    let deny = policy(
        "a",
        "web-deny",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}),
    );
    // Every later change goes in as a partial transaction: the incremental path is what
    // the rest of this test exercises in the kernel.
    assert_eq!(sync(std::slice::from_ref(&deny)), SyncKind::Partial);
    lab.expect(&[
        (CLIENT_A, WEB, 8080, false),
        (CLIENT_B, WEB, 8080, false),
        ("node", WEB, 8080, true),
        (WEB, CLIENT_A, 8080, true),
        (CLIENT_B, CLIENT_A, 8080, true),
    ]);

    // Allowed by podSelector: only pods of web's namespace with app=client.
    let by_pod = web_ingress_from(json!([{"podSelector": {"matchLabels": {"app": "client"}}}]));
    sync(&[deny.clone(), by_pod]);
    lab.expect(&[(CLIENT_A, WEB, 8080, true), (CLIENT_B, WEB, 8080, false)]);

    // Allowed by namespaceSelector: every pod of namespaces with team=y.
    let by_ns = web_ingress_from(json!([{"namespaceSelector": {"matchLabels": {"team": "y"}}}]));
    sync(&[deny.clone(), by_ns]);
    lab.expect(&[(CLIENT_A, WEB, 8080, false), (CLIENT_B, WEB, 8080, true)]);

    // Allowed by ipBlock, less an exception.
    let by_block = web_ingress_from(
        json!([{"ipBlock": {"cidr": "10.88.0.0/24", "except": [format!("{CLIENT_A}/32")]}}]),
    );
    sync(&[deny.clone(), by_block]);
    lab.expect(&[(CLIENT_A, WEB, 8080, false), (CLIENT_B, WEB, 8080, true)]);

    // Allowed on one port only, named: `http` is 8080 in web's container.
    let by_port = policy(
        "a",
        "web-allow",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"ports": [{"port": "http"}]}]}),
    );
    sync(&[deny.clone(), by_port]);
    lab.expect(&[
        (CLIENT_A, WEB, 8080, true),
        (CLIENT_A, WEB, 9090, false),
        (CLIENT_B, WEB, 8080, true),
    ]);

    // Egress deny for namespace b: its pod reaches nobody, but is still reached (replies
    // of connections it accepts pass).
    let egress = policy(
        "b",
        "deny-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    sync(std::slice::from_ref(&egress));
    lab.expect(&[
        (CLIENT_B, WEB, 8080, false),
        (CLIENT_B, CLIENT_A, 9090, false),
        (CLIENT_A, CLIENT_B, 9090, true),
        (WEB, CLIENT_A, 9090, true),
    ]);

    // Egress opened towards web's port 8080 only, through a podSelector in another
    // namespace (namespaceSelector + podSelector together).
    let egress_allow = policy(
        "b",
        "to-web",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": "x"}},
                                   "podSelector": {"matchLabels": {"app": "web"}}}],
                           "ports": [{"port": 8080}]}]}),
    );
    sync(&[egress, egress_allow]);
    lab.expect(&[
        (CLIENT_B, WEB, 8080, true),
        (CLIENT_B, WEB, 9090, false),
        (CLIENT_B, CLIENT_A, 8080, false),
    ]);

    // Why `run` turns on br_netfilter: without it, bridged pod traffic skips the inet
    // hooks and the same rules filter nothing.
    sync(std::slice::from_ref(&deny));
    lab.expect(&[(CLIENT_A, WEB, 8080, false)]);
    let node = &lab.node;
    sh(&format!(
        "ip netns exec {node} sysctl -qw net.bridge.bridge-nf-call-iptables=0"
    ));
    lab.expect(&[(CLIENT_A, WEB, 8080, true)]);
    sh(&format!(
        "ip netns exec {node} sysctl -qw net.bridge.bridge-nf-call-iptables=1"
    ));
    lab.expect(&[(CLIENT_A, WEB, 9090, false)]);

    // Back to no policy.
    sync(&[]);
    lab.expect(&[(CLIENT_B, WEB, 9090, true), (CLIENT_A, WEB, 9090, true)]);
}
