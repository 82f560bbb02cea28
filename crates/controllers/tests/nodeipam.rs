//! Node IPAM against a real `skiff apiserver`: with `--allocate-node-cidrs`, nodes
//! created at once get distinct subnets of `--cluster-cidr`, a node that came with one
//! keeps it (and nobody else gets it), a full range is a `CIDRNotAvailable` event, and a
//! deleted node's subnet goes to the node that waited for one. Checked with kubectl.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::json;
use skiff_controllers::ControllerManagerArgs;
use skiff_e2e::Server;

/// Each node's `spec.podCIDR` and `spec.podCIDRs`, as kubectl prints them.
async fn pod_cidrs(cluster: &Cluster) -> BTreeMap<String, (String, String)> {
    let out = cluster
        .kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.podCIDR} {.spec.podCIDRs}{\"\\n\"}{end}",
        ])
        .await;
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let name = fields.next()?.to_string();
            let cidr = fields.next().unwrap_or_default().to_string();
            let cidrs = fields.next().unwrap_or_default().to_string();
            Some((name, (cidr, cidrs)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_get_distinct_subnets_and_freed_ones_are_reused() {
    let server = tokio::task::spawn_blocking(|| Server::start(&[]))
        .await
        .expect("server");
    let client = client_for(&server).await;
    // A node that already has its subnet before the controller starts: it must be
    // counted in from the cache, not handed out again.
    let nodes: Api<Node> = Api::all(client.clone());
    let preset: Node = serde_json::from_value(json!({
        "metadata": {"name": "preset"},
        "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]},
    }))
    .expect("node");
    nodes
        .create(&PostParams::default(), &preset)
        .await
        .expect("create preset node");

    // Four /24s in a /22: the preset node and three more fill it.
    let args = ControllerManagerArgs {
        leader_elect: false,
        allocate_node_cidrs: true,
        cluster_cidr: Some("10.42.0.0/22".into()),
        node_cidr_mask_size: 24,
        ..Default::default()
    };
    let _controllers = tokio::spawn(skiff_controllers::run(client.clone(), args));
    let cluster = Cluster::attach(server, client.clone());

    // Created at once: the allocator must not give two of them one subnet.
    futures::future::join_all(["n1", "n2", "n3"].map(|name| {
        let client = client.clone();
        async move { skiff_e2e::add_simulated_node(&client, name, "4", json!({}), json!({})).await }
    }))
    .await;
    let all = eventually("n1..n3 get subnets", Duration::from_secs(20), || async {
        let all = pod_cidrs(&cluster).await;
        let assigned = ["n1", "n2", "n3"]
            .iter()
            .all(|n| all.get(*n).is_some_and(|(cidr, _)| !cidr.is_empty()));
        assigned.then_some(all)
    })
    .await;
    for (name, (cidr, cidrs)) in &all {
        assert_eq!(cidrs, &format!("[\"{cidr}\"]"), "{name}'s podCIDRs");
    }
    assert_eq!(all["preset"].0, "10.42.1.0/24");
    let used: BTreeSet<&str> = all.values().map(|(cidr, _)| cidr.as_str()).collect();
    assert_eq!(
        used,
        BTreeSet::from([
            "10.42.0.0/24",
            "10.42.1.0/24",
            "10.42.2.0/24",
            "10.42.3.0/24"
        ]),
        "distinct subnets: {all:?}"
    );

    // The range is full: n4 waits, with upstream's event saying why.
    skiff_e2e::add_simulated_node(&client, "n4", "4", json!({}), json!({})).await;
    eventually(
        "CIDRNotAvailable on n4",
        Duration::from_secs(20),
        || async {
            let out = cluster
                .kubectl(&[
                    "get",
                    "events",
                    "-n",
                    "default",
                    "--field-selector",
                    "involvedObject.name=n4",
                    "-o",
                    "jsonpath={range .items[*]}{.type}/{.reason}/{.message}{\"\\n\"}{end}",
                ])
                .await;
            out.lines()
                .any(|l| l == "Normal/CIDRNotAvailable/Node n4 status is now: CIDRNotAvailable")
                .then_some(())
        },
    )
    .await;
    assert_eq!(pod_cidrs(&cluster).await["n4"].0, "");

    // n2 goes: its subnet is freed and n4 gets it.
    let freed = all["n2"].0.clone();
    cluster.kubectl(&["delete", "node", "n2"]).await;
    let now = eventually("n4 gets n2's subnet", Duration::from_secs(30), || async {
        let all = pod_cidrs(&cluster).await;
        all.get("n4")
            .is_some_and(|(cidr, _)| !cidr.is_empty())
            .then_some(all)
    })
    .await;
    assert_eq!(now["n4"], (freed.clone(), format!("[\"{freed}\"]")));
    assert!(!now.contains_key("n2"));
    let used: BTreeSet<&str> = now.values().map(|(cidr, _)| cidr.as_str()).collect();
    assert_eq!(used.len(), now.len(), "distinct subnets: {now:?}");
}
