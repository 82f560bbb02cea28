//! `skiff hollow-nodes` against a real control plane (API server, scheduler, controller
//! manager), read back with the real kubectl: the nodes register Ready with their
//! capacity, labels, addresses and pod ranges and keep their Leases fresh; Deployments'
//! pods run with addresses from their node's range; Jobs complete; scaled-down pods are
//! deleted for good; a restarted fleet adopts its running pods without reusing their
//! addresses. One test walks the steps so the suite pays once for start-up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{eventually, Server};

const NODES: usize = 6;
const FLEET: &[&str] = &[
    "--count=6",
    "--zones=3",
    "--cpu=4",
    "--memory=8Gi",
    "--labels=pool=hollow",
    // Renewed every 2 s, so that a renewal shows within the test.
    "--node-lease-duration-seconds=8",
];

fn items(list: Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// Whether `ip` lies in `cidr` (`a.b.c.d/n`).
fn within(ip: &str, cidr: &str) -> bool {
    let (Ok(ip), Some((network, prefix))) = (ip.parse::<Ipv4Addr>(), cidr.split_once('/')) else {
        return false;
    };
    let (Ok(network), Ok(prefix)) = (network.parse::<Ipv4Addr>(), prefix.parse::<u32>()) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

/// The hollow nodes by name, once all are Ready.
fn ready_nodes(server: &Server) -> BTreeMap<String, Value> {
    eventually("every hollow node Ready", Duration::from_secs(60), || {
        let nodes: BTreeMap<String, Value> = items(server.json(&["nodes", "-l", "pool=hollow"]))
            .into_iter()
            .map(|n| (text(&n["metadata"]["name"]).to_string(), n))
            .collect();
        let ready = nodes.values().all(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        });
        (nodes.len() == NODES && ready).then_some(nodes)
    })
}

/// The namespace's pods with `selector`, once exactly `count` of them are in `phase`.
fn pods_in_phase(
    server: &Server,
    ns: &str,
    selector: &str,
    phase: &str,
    count: usize,
) -> Vec<Value> {
    eventually(
        &format!("{count} pods {selector} {phase}"),
        Duration::from_secs(60),
        || {
            let pods = items(server.json(&["pods", "-n", ns, "-l", selector]));
            let matching: Vec<Value> = pods
                .iter()
                .filter(|p| p["status"]["phase"] == phase)
                .cloned()
                .collect();
            (pods.len() == count && matching.len() == count).then_some(matching)
        },
    )
}

/// Every running pod's address is in its node's range, its host address is the node's,
/// it is Ready, and no two pods share an address.
fn check_addresses(pods: &[Value], nodes: &BTreeMap<String, Value>) {
    let mut seen = BTreeSet::new();
    for pod in pods {
        let name = text(&pod["metadata"]["name"]);
        let node = &nodes[text(&pod["spec"]["nodeName"])];
        let pod_ip = text(&pod["status"]["podIP"]);
        assert!(
            within(pod_ip, text(&node["spec"]["podCIDR"])),
            "{name}: {pod_ip} outside {}",
            node["spec"]["podCIDR"]
        );
        let internal_ip = node["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
            .map(|a| text(&a["address"]).to_string());
        assert_eq!(
            Some(text(&pod["status"]["hostIP"]).to_string()),
            internal_ip,
            "{name}"
        );
        let ready = pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        assert!(ready, "{name} not Ready: {}", pod["status"]);
        assert!(seen.insert(pod_ip.to_string()), "{pod_ip} handed out twice");
    }
}

#[test]
fn hollow_nodes_register_heartbeat_and_run_pods() {
    let server = Server::start_control_plane(&[]);
    let metrics_port = skiff_e2e::free_port();
    let metrics_flag = format!("--metrics-bind-address=127.0.0.1:{metrics_port}");
    let fleet = server.start_hollow_nodes(&[FLEET, &[metrics_flag.as_str()]].concat());

    // Registered as a kubelet registers: Ready, capacity, labels, addresses, own ranges.
    let nodes = ready_nodes(&server);
    let zones: BTreeSet<&str> = nodes
        .values()
        .map(|n| text(&n["metadata"]["labels"]["topology.kubernetes.io/zone"]))
        .collect();
    assert_eq!(zones, BTreeSet::from(["zone-0", "zone-1", "zone-2"]));
    let ranges: BTreeSet<&str> = nodes
        .values()
        .map(|n| text(&n["spec"]["podCIDR"]))
        .collect();
    assert_eq!(ranges.len(), NODES, "every node has a range of its own");
    for node in nodes.values() {
        assert_eq!(node["status"]["capacity"]["cpu"], "4");
        assert_eq!(node["status"]["allocatable"]["pods"], "110");
        assert_eq!(node["metadata"]["labels"]["node.skiff.dev/hollow"], "true");
        assert_eq!(
            node["metadata"]["labels"]["kubernetes.io/hostname"],
            node["metadata"]["name"]
        );
    }
    let wide = server.ok(&["get", "nodes", "-l", "pool=hollow", "-o", "wide"]);
    assert!(wide.contains("198.18.0.1 "), "{wide}");

    // Leases renewed every quarter of their duration.
    let renew_time = || {
        let lease = server.json(&["lease", "-n", "kube-node-lease", "hollow-node-3"]);
        text(&lease["spec"]["renewTime"]).to_string()
    };
    let first = renew_time();
    eventually("the lease renewed", Duration::from_secs(15), || {
        (renew_time() != first).then_some(())
    });

    // A Deployment's pods run and become ready, with addresses from their node's range.
    let ns = server.namespace("hollow");
    server.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        &ns,
        "--image=nginx",
        "--replicas=12",
    ]);
    let running = pods_in_phase(&server, &ns, "app=web", "Running", 12);
    check_addresses(&running, &nodes);
    eventually("the Deployment available", Duration::from_secs(30), || {
        let deployment = server.json(&["deployment", "-n", &ns, "web"]);
        (deployment["status"]["availableReplicas"] == 12).then_some(())
    });

    // The fleet's metrics count what it did.
    let exposition = skiff_e2e::scrape_metrics(metrics_port);
    let value = |series: &str| skiff_e2e::metric_value(&exposition, series);
    assert_eq!(
        value("hollow_nodes_registered "),
        Some(NODES as f64),
        "{exposition}"
    );
    let started = "hollow_requests_total{operation=\"pod_running\",result=\"ok\"} ";
    assert_eq!(value(started), Some(12.0), "{exposition}");
    let renewed = "hollow_requests_total{operation=\"lease\",result=\"ok\"} ";
    assert!(value(renewed).is_some_and(|n| n >= 1.0), "{exposition}");

    // A Job's pods end: Succeeded with their containers exited 0; the Job completes.
    server.ok(&[
        "create",
        "job",
        "batch",
        "-n",
        &ns,
        "--image=busybox",
        "--",
        "true",
    ]);
    eventually("the Job complete", Duration::from_secs(60), || {
        let job = server.json(&["job", "-n", &ns, "batch"]);
        let complete = job["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
        });
        complete.then_some(())
    });
    let done = pods_in_phase(&server, &ns, "job-name=batch", "Succeeded", 1);
    let exited = &done[0]["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(exited["exitCode"], 0, "{exited}");
    assert_eq!(exited["reason"], "Completed", "{exited}");

    // Scaled down: the surplus pods are deleted gracefully and then gone for good.
    server.ok(&["scale", "deployment", "web", "-n", &ns, "--replicas=2"]);
    let kept = pods_in_phase(&server, &ns, "app=web", "Running", 2);

    // A restarted fleet adopts what runs: new pods get addresses the kept ones do not hold.
    fleet.kill();
    let _fleet = server.start_hollow_nodes(FLEET);
    server.ok(&["scale", "deployment", "web", "-n", &ns, "--replicas=12"]);
    let running = pods_in_phase(&server, &ns, "app=web", "Running", 12);
    check_addresses(&running, &nodes);
    for pod in &kept {
        let name = text(&pod["metadata"]["name"]);
        let now = running
            .iter()
            .find(|p| p["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{name} kept running across the restart"));
        assert_eq!(now["status"]["podIP"], pod["status"]["podIP"], "{name}");
    }

    // A host-network pod has its node's address.
    server.ok(&[
        "run",
        "host",
        "-n",
        &ns,
        "--image=nginx",
        "--labels=app=host",
        "--overrides={\"spec\":{\"hostNetwork\":true}}",
    ]);
    let host = pods_in_phase(&server, &ns, "app=host", "Running", 1);
    assert_eq!(host[0]["status"]["podIP"], host[0]["status"]["hostIP"]);
}
