//! A 3-node `skiff cluster` on this machine (each node in network namespaces of its own):
//! pods on different nodes reach each other by pod IP and see the true source pod IP; a
//! ClusterIP Service and the cluster DNS work from a node other than the server's and the
//! endpoints'; a Service by each of its names spreads requests over backends on every
//! node; a NodePort answers on every node's address (with `externalTrafficPolicy:
//! Local`, only on the endpoint's, keeping the client's address); a NetworkPolicy on one
//! node blocks and then admits a client on another; pod traffic leaving the cluster
//! range is masqueraded to its node's address; UDP (through agnhost's `/dial`) reaches
//! pods on other nodes, from pods and from nodes, by pod IP, Service and host port;
//! a Deployment scaled and rolled under a client's steady requests fails none of them;
//! `cluster delete` leaves nothing behind; with two servers, the control plane survives
//! the loss of one.
//! Both proxy modes, and both pod network backends (host-gw routes, VXLAN tunnel).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skiff_e2e::agnhost::{self, Dial, Dialed};
use skiff_e2e::{eventually, skiff_binary, wait_with_deadline};

/// Busybox and `/agnhost`: shells and `nc` for TCP, agnhost for UDP.
const IMAGE: &str = agnhost::IMAGE;
/// Where the client pods' `agnhost netexec` serves `/dial` (the node client's is in its
/// node's network namespace).
const CLIENT_NETEXEC_PORT: u16 = 18080;

/// A cluster made by `skiff cluster create`; deleted when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    deleted: bool,
}

impl Cluster {
    fn create(nodes: u8, extra_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new(skiff_binary())
            .args([
                "cluster",
                "create",
                "--nodes",
                &nodes.to_string(),
                "--data-dir",
            ])
            .arg(dir.path())
            .args(["--wait", "90s"])
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("skiff cluster create");
        let mut cluster = Cluster {
            dir,
            deleted: false,
        };
        let out = wait_with_deadline(child, Duration::from_secs(150))
            .expect("skiff cluster create finishes");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            cluster.deleted = true; // a failed create cleans up after itself
            panic!("skiff cluster create failed:\n{said}");
        }
        assert!(
            said.contains(&format!("{nodes}/{nodes} nodes Ready")),
            "{said}"
        );
        cluster
    }

    fn state(&self) -> Value {
        let data = std::fs::read(self.dir.path().join("cluster.json")).expect("cluster.json");
        serde_json::from_slice(&data).expect("cluster.json parses")
    }

    fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.path().join("nodes").join(node)
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        let child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl on PATH");
        wait_with_deadline(child, skiff_e2e::KUBECTL_DEADLINE).expect("kubectl finishes")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, manifest: &str) {
        let out = skiff_e2e::kubectl_as_with_input(
            &self.dir.path().join("kubeconfig"),
            &["apply", "-f", "-"],
            Some(manifest),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a shell line in a pod; its stdout.
    fn sh(&self, pod: &str, line: &str) -> String {
        self.ok(&["exec", pod, "--", "sh", "-c", line])
    }

    /// `from` (a client pod) sends `request` over UDP to `host:port` once; what its
    /// agnhost's `/dial` reported, if it answered.
    fn dial_udp(&self, from: &str, request: &str, host: &str, port: u16) -> Option<Dialed> {
        let dial = Dial {
            netexec_port: CLIENT_NETEXEC_PORT,
            request,
            protocol: "udp",
            host,
            port,
            tries: 1,
        };
        agnhost::parse(&self.sh(from, &dial.script()))
    }

    /// The answer [`Cluster::dial_udp`] got, which must be its only one.
    fn udp_answer(&self, from: &str, request: &str, host: &str, port: u16) -> String {
        match self.dial_udp(from, request, host, port) {
            Some(Dialed { responses, errors }) if responses.len() == 1 && errors.is_empty() => {
                responses[0].clone()
            }
            dialed => panic!("{from} → {host}:{port} over UDP: {dialed:?}"),
        }
    }

    fn delete(&mut self) -> Output {
        self.deleted = true;
        Command::new(skiff_binary())
            .args(["cluster", "delete", "--data-dir"])
            .arg(self.dir.path())
            .output()
            .expect("skiff cluster delete")
    }

    fn log_tails(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path().join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            out += &format!(
                "--- {}\n{}\n",
                entry.path().display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        if !self.deleted {
            let out = self.delete();
            if !out.status.success() {
                eprintln!("cluster delete: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    let (net, prefix) = cidr.split_once('/').expect("a CIDR");
    let (ip, net): (Ipv4Addr, Ipv4Addr) = (ip.parse().expect("ip"), net.parse().expect("net"));
    let prefix: u32 = prefix.parse().expect("prefix");
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

const GET: &str = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3";

/// A pod serving its own name over HTTP on 8080 (busybox httpd logs each peer) and UDP
/// on 8081 (agnhost), pinned to `node`.
fn web_pod(name: &str, node: &str, labels: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
  "metadata": {{"name": "{name}", "labels": {labels}}},
  "spec": {{"nodeName": "{node}", "terminationGracePeriodSeconds": 1,
    "containers": [{{"name": "web", "image": "{IMAGE}", "ports": [{{"containerPort": 8080}}],
      "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && {{ /agnhost netexec --http-port=9090 --udp-port=8081 & }} && exec httpd -f -vv -p 8080 -h /www"]}}]}}}}
"#
    )
}

/// A pod on `node` with one host port.
fn host_port_pod(name: &str, node_selector: &str, port: &str, command: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
  "spec": {{"nodeSelector": {{"kubernetes.io/hostname": "{node_selector}"}}, "terminationGracePeriodSeconds": 1,
    "containers": [{{"name": "c", "image": "{IMAGE}", "ports": [{port}],
      "command": ["sh", "-c", "{command}"]}}]}}}}"#
    )
}

/// Upstream's "HostPort no conflict with different hostIP/protocol" and "hostPort
/// conflict with 0.0.0.0 hostIP": one host port taken by three pods on one node (TCP on
/// 127.0.0.1, TCP on the node's address, UDP on the node's address), each reached there
/// from the node; a pod whose port clashes with a 0.0.0.0 one is not scheduled.
fn host_ports(cluster: &Cluster, node: &str, node_ip: &str) {
    let serve = |text: &str| {
        format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www")
    };
    let tcp = |host_ip: &str| {
        format!(r#"{{"containerPort": 8080, "hostPort": 54323, "hostIP": "{host_ip}"}}"#)
    };
    cluster.apply(&host_port_pod(
        "hp-local",
        node,
        &tcp("127.0.0.1"),
        &serve("hp-local"),
    ));
    cluster.apply(&host_port_pod(
        "hp-node",
        node,
        &tcp(node_ip),
        &serve("hp-node"),
    ));
    cluster.apply(&host_port_pod(
        "hp-udp",
        node,
        &format!(
            r#"{{"containerPort": 8081, "hostPort": 54323, "hostIP": "{node_ip}", "protocol": "UDP"}}"#
        ),
        "exec /agnhost netexec --http-port=9090 --udp-port=8081",
    ));
    cluster.apply(&host_port_pod(
        "hp-any",
        node,
        r#"{"containerPort": 8080, "hostPort": 54322}"#,
        "exec sleep 3600",
    ));
    for pod in ["hp-local", "hp-node", "hp-udp", "hp-any"] {
        cluster.ok(&[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{pod}"),
            "--timeout=60s",
        ]);
    }
    let nodes = cluster.ok(&[
        "get",
        "pods",
        "hp-local",
        "hp-node",
        "hp-udp",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    assert_eq!(
        nodes.split_whitespace().filter(|n| *n == node).count(),
        3,
        "{nodes}"
    );
    // From the node itself (a host-network pod there).
    let local = cluster.sh("node-client", &format!("{GET} 127.0.0.1 54323 | tail -1"));
    assert_eq!(local.trim(), "hp-local");
    let on_node = cluster.sh("node-client", &format!("{GET} {node_ip} 54323 | tail -1"));
    assert_eq!(on_node.trim(), "hp-node");
    let udp = cluster.udp_answer("node-client", "hostname", node_ip, 54323);
    assert_eq!(udp, "hp-udp");
    // 54322 on every address is taken: the same port on 127.0.0.1 cannot go there.
    cluster.apply(&host_port_pod(
        "hp-clash",
        node,
        r#"{"containerPort": 8080, "hostPort": 54322, "hostIP": "127.0.0.1"}"#,
        "exec sleep 3600",
    ));
    let reason = eventually(
        "the clashing pod to be refused",
        Duration::from_secs(20),
        || {
            let message = cluster.ok(&[
                "get",
                "pod",
                "hp-clash",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
            ]);
            (!message.is_empty()).then_some(message)
        },
    );
    assert!(reason.contains("free ports"), "{reason}");
    assert_eq!(
        cluster.ok(&["get", "pod", "hp-clash", "-o", "jsonpath={.spec.nodeName}"]),
        ""
    );
}

/// Upstream's expectation of a Service in front of a Deployment: a client that keeps
/// sending requests through it sees none fail while the Deployment is scaled up, scaled
/// down and rolled to a new template. Pods leave gracefully: a `preStop` pause keeps a
/// terminating pod serving until every node's proxy has stopped sending it new
/// connections (its endpoint no longer ready), as upstream's guidance has it.
fn changes_without_failed_requests(cluster: &Cluster) {
    cluster.apply(&format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "steady"}},
  "spec": {{"replicas": 3, "selector": {{"matchLabels": {{"app": "steady"}}}},
    "strategy": {{"rollingUpdate": {{"maxSurge": 1, "maxUnavailable": 0}}}},
    "template": {{"metadata": {{"labels": {{"app": "steady"}}}},
      "spec": {{"terminationGracePeriodSeconds": 30,
        "containers": [{{"name": "web", "image": "{IMAGE}",
          "args": ["netexec", "--http-port=8080", "--udp-port=-1"],
          "env": [{{"name": "GENERATION", "value": "1"}}],
          "readinessProbe": {{"tcpSocket": {{"port": 8080}}, "periodSeconds": 1}},
          "lifecycle": {{"preStop": {{"exec": {{"command": ["sleep", "5"]}}}}}}}}]}}}}}}}}"#
    ));
    cluster.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "steady"},
  "spec": {"selector": {"app": "steady"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    cluster.ok(&["rollout", "status", "deployment/steady", "--timeout=90s"]);
    // The client's node programs the new Service first.
    eventually(
        "the Service on the client's node",
        Duration::from_secs(30),
        || {
            let page = cluster.sh(
                "client",
                "printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 3 steady 80 | tail -n 1; true",
            );
            page.contains("steady-").then_some(())
        },
    );
    // Every request's answer on a line of its own (`got:` and the backend's name; a
    // failed one leaves `got:` alone), for as long as the changes take.
    let requests = "end=$(( $(date +%s) + 45 )); while [ $(date +%s) -lt $end ]; do \
        r=$(printf 'GET /hostname HTTP/1.0\r\n\r\n' | nc -w 3 steady 80 | tail -n 1); echo \"got:$r\"; sleep 0.2; done";
    let answers = std::thread::scope(|scope| {
        let client = scope.spawn(|| cluster.sh("client", requests));
        std::thread::sleep(Duration::from_secs(3));
        cluster.ok(&["scale", "deployment/steady", "--replicas=5"]);
        cluster.ok(&["rollout", "status", "deployment/steady", "--timeout=60s"]);
        cluster.ok(&["scale", "deployment/steady", "--replicas=2"]);
        cluster.ok(&["set", "env", "deployment/steady", "GENERATION=2"]);
        cluster.ok(&["rollout", "status", "deployment/steady", "--timeout=60s"]);
        client.join().expect("the client's loop")
    });
    let lines: Vec<&str> = answers.lines().filter(|l| l.starts_with("got:")).collect();
    let failed = lines
        .iter()
        .filter(|l| !l.starts_with("got:steady-"))
        .count();
    assert!(lines.len() > 50, "too few requests: {answers}");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed:\n{answers}",
        lines.len()
    );
    // The requests reached the new generation's pods by the end.
    let newest = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=steady",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let last = lines
        .last()
        .map(|l| l.trim_start_matches("got:"))
        .unwrap_or_default();
    assert!(
        newest.split_whitespace().any(|name| name == last),
        "{last} not among {newest}"
    );
    cluster.ok(&["delete", "deployment/steady", "service/steady"]);
}

/// The routes Skiff's pod network controller made (protocol 94) in a node's namespace.
fn skiff_routes(netns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", netns, "route", "show", "proto", "94"])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET /` from the host; the response, if one came within `timeout`.
fn http_get(addr: SocketAddr, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).ok()?;
    (!page.is_empty()).then_some(page)
}

#[test]
fn pods_reach_each_other_across_nodes_without_nat() {
    across_nodes("nftables", "host-gw");
}

#[test]
fn pods_reach_each_other_across_nodes_in_iptables_mode() {
    across_nodes("iptables", "host-gw");
}

#[test]
fn pods_reach_each_other_across_nodes_through_vxlan() {
    across_nodes("nftables", "vxlan");
}

fn across_nodes(proxy_mode: &str, backend: &str) {
    if let Some(why) = skiff_e2e::netns::unavailable(&[["ip", "-V"], ["nft", "--version"]]) {
        eprintln!("skipped: {why}");
        return;
    }
    let started = Instant::now();
    let mut cluster = Cluster::create(
        3,
        &["--proxy-mode", proxy_mode, "--pod-network-backend", backend],
    );
    let state = cluster.state();
    let nodes: Vec<(String, String)> = state["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().expect("name").to_string(),
                n["ip"].as_str().expect("ip").to_string(),
            )
        })
        .collect();
    let [(server, _), (agent1, agent1_ip), (agent2, _)] = &nodes[..] else {
        panic!("three nodes: {nodes:?}");
    };
    // Upstream's conformance suite wants at least two untainted nodes.
    let taints = cluster.ok(&["get", "nodes", "-o", "jsonpath={.items[*].spec.taints}"]);
    assert_eq!(taints.trim(), "", "tainted nodes");
    let archive = skiff_e2e::busybox_archive();
    for (name, _) in &nodes {
        skiff_e2e::import_image(&cluster.node_dir(name).join("runtime"), &archive);
    }

    // Every node has its own part of the cluster range, and the others route it to it.
    let ranges: Vec<String> = cluster
        .ok(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.podCIDR} {end}",
        ])
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let range_of = |node: &str| -> String {
        ranges
            .iter()
            .find_map(|r| r.strip_prefix(&format!("{node}=")))
            .unwrap_or_else(|| panic!("{node} has no pod range: {ranges:?}"))
            .to_string()
    };
    let mut distinct: Vec<String> = nodes.iter().map(|(n, _)| range_of(n)).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{ranges:?}");
    assert!(distinct
        .iter()
        .all(|r| in_cidr(&r[..r.find('/').expect("/")], "10.42.0.0/16")));

    // The other nodes' ranges go through the backend's device.
    let device = if backend == "vxlan" {
        "dev skiff.vxlan"
    } else {
        "dev eth0"
    };
    let netns = state["nodes"][1]["netns"].as_str().expect("netns");
    let routes = eventually(
        "routes to the other nodes' pods",
        Duration::from_secs(20),
        || {
            let text = skiff_routes(netns);
            (text.lines().filter(|l| l.contains(device)).count() == 2).then_some(text)
        },
    );
    for (name, _) in [&nodes[0], &nodes[2]] {
        assert!(routes.contains(&range_of(name)), "{routes}");
    }

    cluster.apply(&web_pod("web-server", server, r#"{"app": "on-server"}"#));
    cluster.apply(&web_pod("web-agent2", agent2, r#"{"app": "web"}"#));
    // The clients serve agnhost's `/dial` (UDP requests are made through it).
    let netexec =
        format!(r#""args": ["netexec", "--http-port={CLIENT_NETEXEC_PORT}", "--udp-port=-1"]"#);
    cluster.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "client", "labels": {{"role": "client"}}}},
  "spec": {{"nodeName": "{agent1}", "terminationGracePeriodSeconds": 1,
    "containers": [{{"name": "c", "image": "{IMAGE}", {netexec}}}]}}}}"#
    ));
    cluster.apply(&format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "node-client"}},
  "spec": {{"nodeName": "{agent1}", "hostNetwork": true, "terminationGracePeriodSeconds": 1,
    "containers": [{{"name": "c", "image": "{IMAGE}", {netexec}}}]}}}}"#
    ));
    cluster.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
  "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    cluster.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-udp"},
  "spec": {"selector": {"app": "web"}, "ports": [{"port": 81, "targetPort": 8081, "protocol": "UDP"}]}}"#,
    );
    cluster.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-local"},
  "spec": {"type": "NodePort", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
    "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    // Three web servers, one per node, behind one Service.
    cluster.apply(&format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "spread"}},
  "spec": {{"replicas": 3, "selector": {{"matchLabels": {{"app": "spread"}}}},
    "template": {{"metadata": {{"labels": {{"app": "spread"}}}},
      "spec": {{"terminationGracePeriodSeconds": 1,
        "topologySpreadConstraints": [{{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
          "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {{"matchLabels": {{"app": "spread"}}}}}}],
        "containers": [{{"name": "web", "image": "{IMAGE}",
          "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"]}}]}}}}}}}}"#
    ));
    cluster.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "spread"},
  "spec": {"selector": {"app": "spread"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    cluster.ok(&["rollout", "status", "deployment/spread", "--timeout=90s"]);
    cluster.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod",
        "--all",
        "--timeout=90s",
    ]);
    let pods: Value =
        serde_json::from_str(&cluster.ok(&["get", "pods", "-o", "json"])).expect("pod list");
    let ip_of = |pod: &str| -> String {
        let found = pods["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|p| p["metadata"]["name"] == pod)
            .unwrap_or_else(|| panic!("pod {pod}"));
        let ip = found["status"]["podIP"]
            .as_str()
            .expect("pod IP")
            .to_string();
        let node = found["spec"]["nodeName"].as_str().expect("node");
        // Each pod's address comes from its own node's range.
        assert!(in_cidr(&ip, &range_of(node)), "{pod} on {node} has {ip}");
        ip
    };
    let (server_pod, agent2_pod, client) =
        (ip_of("web-server"), ip_of("web-agent2"), ip_of("client"));

    // Pod to pod across nodes by pod IP; the server sees the client pod's own address.
    for (pod, ip) in [("web-server", &server_pod), ("web-agent2", &agent2_pod)] {
        let page = cluster.sh("client", &format!("{GET} {ip} 8080"));
        assert!(
            page.trim_end().ends_with(pod),
            "{pod} at {ip} answered {page:?}"
        );
        let log = cluster.ok(&["logs", pod]);
        assert!(
            log.contains(&format!("[::ffff:{client}]")),
            "{pod} saw another source than the client pod {client}:\n{log}"
        );
    }

    // The same over UDP: each pod answers, and sees the client pod's own address.
    for (pod, ip) in [("web-server", &server_pod), ("web-agent2", &agent2_pod)] {
        assert_eq!(cluster.udp_answer("client", "hostname", ip, 8081), pod);
        let seen = cluster.udp_answer("client", "clientip", ip, 8081);
        assert_eq!(
            seen.rsplit_once(':').map(|(ip, _)| ip),
            Some(client.as_str()),
            "{pod} saw {seen}"
        );
    }

    // Pods' interfaces leave room for the tunnel's headers.
    let mtu = cluster.sh("client", "cat /sys/class/net/eth0/mtu");
    let wanted_mtu = if backend == "vxlan" { "1450" } else { "1500" };
    assert_eq!(mtu.trim(), wanted_mtu);

    // From a node (host network) to a pod on another node: the node's own address (its
    // InternalIP, or with VXLAN its tunnel device's, its range's network address).
    let page = cluster.sh("node-client", &format!("{GET} {server_pod} 8080"));
    assert!(page.trim_end().ends_with("web-server"), "{page:?}");
    let log = cluster.ok(&["logs", "web-server"]);
    let agent1_range = range_of(agent1);
    let node_source = match backend {
        "vxlan" => agent1_range.split('/').next().expect("network address"),
        _ => agent1_ip.as_str(),
    };
    assert!(log.contains(&format!("[::ffff:{node_source}]")), "{log}");
    let seen = cluster.udp_answer("node-client", "clientip", &server_pod, 8081);
    assert_eq!(
        seen.rsplit_once(':').map(|(ip, _)| ip),
        Some(node_source),
        "{seen}"
    );

    // The Service by name, from a node that is neither the server's (where the DNS
    // runs) nor the endpoint's.
    let cluster_ip = cluster.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let lookup = cluster.sh("client", "nslookup web.default.svc.cluster.local");
    assert!(
        lookup.contains(&format!("Address: {cluster_ip}")),
        "{lookup}"
    );
    let page = cluster.sh("client", &format!("{GET} web 80"));
    assert!(page.trim_end().ends_with("web-agent2"), "{page:?}");
    let udp_ip = cluster.ok(&[
        "get",
        "service",
        "web-udp",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    eventually("UDP through the Service", Duration::from_secs(20), || {
        let dialed = cluster.dial_udp("client", "hostname", &udp_ip, 81)?;
        (dialed.responses == ["web-agent2"]).then_some(())
    });

    // The NodePort on every node's address, from the host.
    let node_port: u16 = cluster
        .ok(&[
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .expect("node port");
    for (name, ip) in &nodes {
        let addr = SocketAddr::new(ip.parse().expect("node ip"), node_port);
        let page = eventually(
            &format!("the NodePort on {name}"),
            Duration::from_secs(20),
            || http_get(addr, Duration::from_secs(3)),
        );
        assert!(page.trim_end().ends_with("web-agent2"), "{name}: {page:?}");
        // And from a pod, as upstream's test reaches it.
        let page = cluster.sh("client", &format!("{GET} {ip} {node_port}"));
        assert!(
            page.trim_end().ends_with("web-agent2"),
            "{name} from a pod: {page:?}"
        );
    }

    // externalTrafficPolicy Local: answered only on the endpoint's node, where the
    // server sees the real client (the host's address on the bridge).
    let gateway = state["gateway"].as_str().expect("gateway");
    let local_port: u16 = cluster
        .ok(&[
            "get",
            "service",
            "web-local",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .expect("node port");
    let agent2_ip = &nodes[2].1;
    let addr = SocketAddr::new(agent2_ip.parse().expect("ip"), local_port);
    let page = eventually("the Local NodePort", Duration::from_secs(20), || {
        http_get(addr, Duration::from_secs(3))
    });
    assert!(page.trim_end().ends_with("web-agent2"), "{page:?}");
    let log = cluster.ok(&["logs", "web-agent2"]);
    assert!(log.contains(&format!("[::ffff:{gateway}]")), "{log}");
    let elsewhere = SocketAddr::new(nodes[0].1.parse().expect("ip"), local_port);
    assert_eq!(http_get(elsewhere, Duration::from_secs(2)), None);

    // The Service by each of its names reaches all three backends, one per node.
    let names = cluster.sh(
        "client",
        &format!(
            "for i in $(seq 15); do for n in spread spread.default spread.default.svc.cluster.local; do {GET} $n 80 | tail -1; echo; done; done"
        ),
    );
    let backends: std::collections::BTreeSet<&str> = names
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("spread-"))
        .collect();
    assert_eq!(backends.len(), 3, "{names}");
    assert_eq!(
        names.lines().filter(|l| l.starts_with("spread-")).count(),
        45,
        "{names}"
    );
    let spread_nodes = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=spread",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    let distinct: std::collections::BTreeSet<&str> = spread_nodes.split_whitespace().collect();
    assert_eq!(distinct.len(), 3, "{spread_nodes}");

    // Leaving the cluster range, a pod's traffic takes its node's address.
    let listener = TcpListener::bind((gateway, 0)).expect("listen on the nodes' bridge");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let peer = std::thread::scope(|scope| {
        let sent =
            scope.spawn(|| cluster.sh("client", &format!("echo hi | nc -w 3 {gateway} {port}")));
        let (stream, peer) = eventually(
            "the pod's connection to the host",
            Duration::from_secs(10),
            || listener.accept().ok(),
        );
        // Closing the connection ends the pod's nc.
        drop(stream);
        sent.join().expect("the pod's nc");
        peer
    });
    assert_eq!(
        peer.ip().to_string(),
        *agent1_ip,
        "masqueraded to the client's node"
    );

    // NetworkPolicy, enforced on the endpoint's node for a client on another node:
    // default deny, then allowed from the client's label.
    cluster.apply(
        r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny"},
  "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}"#,
    );
    let get_agent2 = format!("{GET} {agent2_pod} 8080 | tail -1; true");
    eventually(
        "the policy to block the client",
        Duration::from_secs(20),
        || {
            cluster
                .sh("client", &get_agent2)
                .trim()
                .is_empty()
                .then_some(())
        },
    );
    cluster.apply(
        r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "allow-client"},
  "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}}"#,
    );
    eventually(
        "the policy to let the client in",
        Duration::from_secs(20),
        || {
            cluster
                .sh("client", &get_agent2)
                .contains("web-agent2")
                .then_some(())
        },
    );

    // Scaling and a rolling update under a client's steady requests, in both proxy modes
    // (the backend makes no difference to it).
    if backend == "host-gw" {
        changes_without_failed_requests(&cluster);
    }

    // HostPorts are the portmap plugin's, the same under every mode and backend: once.
    if proxy_mode == "nftables" && backend == "host-gw" {
        host_ports(&cluster, agent1, agent1_ip);
    }

    // A node leaves: the others stop routing (and tunnelling) to its range.
    cluster.ok(&["delete", "node", agent2]);
    let gone = range_of(agent2);
    eventually(
        "the routes to the deleted node to go",
        Duration::from_secs(20),
        || {
            let text = skiff_routes(netns);
            (!text.contains(&gone) && text.contains(&range_of(server))).then_some(())
        },
    );
    if backend == "vxlan" {
        let neighbours = Command::new("ip")
            .args(["-n", netns, "neigh", "show", "dev", "skiff.vxlan"])
            .output()
            .expect("ip neigh");
        let neighbours = String::from_utf8_lossy(&neighbours.stdout);
        let tunnel = gone.split('/').next().expect("network address");
        assert!(!neighbours.contains(&format!("{tunnel} ")), "{neighbours}");
        assert_eq!(neighbours.lines().count(), 1, "{neighbours}");
    }

    // Delete: no namespace, bridge, cgroup, mount or process of the cluster is left.
    let id = state["id"].as_str().expect("id").to_string();
    let dir = cluster.dir.path().to_path_buf();
    let out = cluster.delete();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip");
    assert!(!String::from_utf8_lossy(&netns.stdout).contains(&format!("sk-{id}-")));
    assert!(!Path::new("/sys/class/net")
        .join(format!("skb-{id}"))
        .exists());
    assert!(!Path::new("/sys/fs/cgroup/pids")
        .join(format!("skiff-{id}"))
        .exists());
    let mounts = std::fs::read_to_string("/proc/mounts").expect("mounts");
    assert!(!mounts.contains(dir.to_str().expect("utf-8")));
    let processes = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(dir.to_str().unwrap_or("-")))
        })
        .count();
    assert_eq!(processes, 0, "processes of the cluster left running");
    eprintln!(
        "multi-node test ({proxy_mode}, {backend}) took {:?}",
        started.elapsed()
    );
}

/// `skiff cluster create --servers 2`: two servers share one etcd and one set of
/// credentials; both are the `kubernetes` Service's endpoints and both DNS servers the
/// `kube-dns` one's; either answers kubectl with the same state. The server leading the
/// controller manager is then killed: its endpoints go once its lease runs out, and the
/// other carries the cluster alone — its controller manager and scheduler hold the
/// leader leases and a new Deployment's pods run on its node.
#[test]
fn several_servers_share_the_control_plane() {
    if let Some(why) = skiff_e2e::netns::unavailable(&[["ip", "-V"], ["etcd", "--version"]]) {
        eprintln!("skipped: {why}");
        return;
    }
    let mut cluster = Cluster::create(3, &["--servers", "2"]);
    let state = cluster.state();
    assert!(state["etcd"]["endpoint"].as_str().is_some(), "{state}");
    // Each server: its name, address, process and a kubeconfig that reaches it.
    let admin = std::fs::read_to_string(cluster.dir.path().join("kubeconfig")).expect("kubeconfig");
    let first_ip = state["nodes"][0]["ip"].as_str().expect("ip").to_string();
    let servers: Vec<(String, String, u64, PathBuf)> = (0..2)
        .map(|i| {
            let node = &state["nodes"][i];
            let ip = node["ip"].as_str().expect("ip").to_string();
            let kubeconfig = cluster.dir.path().join(format!("server-{i}.kubeconfig"));
            let text = admin.replace(
                &format!("https://{first_ip}:6443"),
                &format!("https://{ip}:6443"),
            );
            std::fs::write(&kubeconfig, text).expect("write a server's kubeconfig");
            (
                node["name"].as_str().expect("name").to_string(),
                ip,
                node["pid"].as_u64().expect("pid"),
                kubeconfig,
            )
        })
        .collect();
    assert_eq!(servers[0].0, "skiff-server");
    assert_eq!(servers[1].0, "skiff-server-1");
    let on = |server: usize, args: &[&str]| -> String {
        let out = skiff_e2e::kubectl_as(&servers[server].3, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} on {}: {}",
            servers[server].0,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let addresses = |server: usize, ns: &str, name: &str| -> String {
        let ips = on(
            server,
            &[
                "get",
                "endpoints",
                name,
                "-n",
                ns,
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ],
        );
        let mut ips: Vec<&str> = ips.split_whitespace().collect();
        ips.sort();
        ips.join(" ")
    };
    let mut both = [servers[0].1.as_str(), servers[1].1.as_str()];
    both.sort();
    let both = both.join(" ");
    eventually(
        "both API servers as endpoints",
        Duration::from_secs(30),
        || (addresses(0, "default", "kubernetes") == both).then_some(()),
    );
    eventually(
        "both DNS servers as endpoints",
        Duration::from_secs(30),
        || (addresses(0, "kube-system", "kube-dns") == both).then_some(()),
    );
    let names = |server: usize| {
        on(
            server,
            &["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"],
        )
    };
    assert_eq!(names(0).split_whitespace().count(), 3, "{}", names(0));
    assert_eq!(names(0), names(1));

    // Which server leads the controller manager (a leader's identity carries its pid).
    let holder = |server: usize, lease: &str| {
        on(
            server,
            &[
                "get",
                "lease",
                lease,
                "-n",
                "kube-system",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
        )
    };
    let marker = |server: usize| format!("_{}_", servers[server].2);
    let leader = holder(0, "kube-controller-manager");
    let victim = (0..2)
        .find(|&s| leader.contains(&marker(s)))
        .unwrap_or_else(|| panic!("the controller manager's leader {leader:?} is neither server"));
    let survivor = 1 - victim;

    // The leader goes (its kubelet with it).
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(servers[victim].2 as i32, libc::SIGKILL);
    }
    eventually(
        "the killed server to leave the endpoints",
        Duration::from_secs(60),
        || (addresses(survivor, "default", "kubernetes") == servers[survivor].1).then_some(()),
    );
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        eventually(
            &format!("the survivor to hold {lease}"),
            Duration::from_secs(60),
            || {
                holder(survivor, lease)
                    .contains(&marker(survivor))
                    .then_some(())
            },
        );
    }
    let node = &servers[survivor].0;
    skiff_e2e::import_image(
        &cluster.node_dir(node).join("runtime"),
        &skiff_e2e::busybox_archive(),
    );
    let deployment = format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "after", "namespace": "default"}},
  "spec": {{"replicas": 2, "selector": {{"matchLabels": {{"app": "after"}}}},
    "template": {{"metadata": {{"labels": {{"app": "after"}}}},
      "spec": {{"nodeSelector": {{"kubernetes.io/hostname": "{node}"}}, "terminationGracePeriodSeconds": 1,
        "containers": [{{"name": "c", "image": "{IMAGE}", "args": ["pause"]}}]}}}}}}}}"#
    );
    let out = skiff_e2e::kubectl_as_with_input(
        &servers[survivor].3,
        &["apply", "-f", "-"],
        Some(&deployment),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    on(
        survivor,
        &["rollout", "status", "deployment/after", "--timeout=120s"],
    );
    eventually(
        "the killed server's DNS to leave the endpoints",
        Duration::from_secs(60),
        || (addresses(survivor, "kube-system", "kube-dns") == servers[survivor].1).then_some(()),
    );

    let etcd_pid = state["etcd"]["pid"].as_u64().expect("etcd pid");
    let out = cluster.delete();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !Path::new(&format!("/proc/{etcd_pid}")).exists(),
        "etcd left running"
    );
}
