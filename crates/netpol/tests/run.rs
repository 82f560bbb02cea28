//! The whole loop against a real API server (`skiff apiserver`, found through `SKIFF_BIN`
//! or the target directory): namespaces, pods and NetworkPolicies written with kubectl,
//! the watches and batching, with transactions captured instead of run through nft.

use std::time::Duration;

use prometheus_client::registry::Registry;
use serde_json::json;
use skiff_e2e::Server;
use skiff_netpol::model::Direction;
use skiff_netpol::nftables::{peer_set, pod_chain};
use skiff_netpol::{run_with, Metrics, NetworkPolicyArgs, Recorder};

/// A pod bound to `node` with `ip`, as a kubelet would have reported it.
fn create_pod(server: &Server, ns: &str, name: &str, app: &str, node: &str, ip: &str) {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    });
    server.ok_with_input(&["create", "-f", "-"], &pod.to_string());
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    server.ok(&[
        "patch",
        "pod",
        "-n",
        ns,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_policies_pods_and_namespaces() {
    if std::env::var_os("SKIFF_BIN").is_none()
        && std::panic::catch_unwind(skiff_e2e::skiff_binary).is_err()
    {
        eprintln!("SKIPPED: no skiff binary; build it or set SKIFF_BIN");
        return;
    }
    let server = tokio::task::spawn_blocking(|| Server::start(&[]))
        .await
        .expect("server");
    let client = server.client().await;
    server.ok(&["create", "namespace", "np-a"]);
    server.ok(&["create", "namespace", "np-b"]);
    create_pod(&server, "np-a", "web", "web", "node1", "10.88.0.11");
    create_pod(&server, "np-b", "client", "client", "node2", "10.88.0.21");

    let recorder = Recorder::default();
    let args = NetworkPolicyArgs {
        node_name: Some("node1".into()),
        min_sync_period: Duration::from_millis(500),
        ..NetworkPolicyArgs::default()
    };
    let metrics = Metrics::new(&mut Registry::default());
    let enforcer = tokio::spawn(run_with(client, args, recorder.clone(), metrics.clone()));

    // The first sync writes the table, with nothing isolated yet.
    let first = recorder
        .wait_for(0, "creating the table", |tx| {
            tx.contains("add table inet skiff-netpol")
        })
        .await;
    assert!(!recorder.transactions()[first].contains(": jump "));

    // A policy isolating web, open to namespaces labelled team=y (none yet).
    let ingress = pod_chain(Direction::Ingress, "np-a/web");
    let peers = peer_set("np-a/web-allow/ingress/0/peers");
    let policy = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "np-a", "name": "web-allow"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "y"}}}],
                              "ports": [{"port": "http"}]}]},
    });
    let before = recorder.transactions().len();
    server.ok_with_input(&["apply", "-f", "-"], &policy.to_string());
    let i = recorder
        .wait_for(before, "isolating web", |tx| {
            tx.contains(&format!(
                "add element inet skiff-netpol ingress-pods {{ 10.88.0.11 : jump {ingress} }}"
            ))
        })
        .await;
    let tx = &recorder.transactions()[i];
    assert!(
        tx.contains(&format!(
            "add rule inet skiff-netpol {ingress} ip saddr @{peers} meta l4proto tcp th dport {{ 8080 }} accept"
        )),
        "{tx}"
    );
    assert!(
        !tx.contains(&format!("add element inet skiff-netpol {peers}")),
        "no namespace has team=y yet: {tx}"
    );

    // Labelling namespace b puts its pod (on another node) into the peer set.
    let before = recorder.transactions().len();
    server.ok(&["label", "namespace", "np-b", "team=y"]);
    recorder
        .wait_for(before, "with client as a peer", |tx| {
            tx.contains(&format!(
                "add element inet skiff-netpol {peers} {{ 10.88.0.21 }}"
            ))
        })
        .await;

    // A new pod in a matching namespace joins the set once it has an address; changes
    // that leave the rules as they were (the pod without an address, a label no policy
    // reads) write nothing.
    let before = recorder.transactions().len();
    create_pod(&server, "np-b", "client2", "client", "node2", "10.88.0.22");
    server.ok(&["label", "pod", "-n", "np-b", "client2", "extra=1"]);
    recorder
        .wait_for(before, "with client2 as a peer", |tx| {
            tx.contains(&format!(
                "add element inet skiff-netpol {peers} {{ 10.88.0.22 }}"
            ))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = recorder.transactions().len();
    assert_eq!(
        after - before,
        1,
        "{:#?}",
        &recorder.transactions()[before..]
    );

    // Deleting the policy opens web again.
    let before = recorder.transactions().len();
    server.ok(&["delete", "networkpolicy", "-n", "np-a", "web-allow"]);
    let i = recorder
        .wait_for(before, "without web's chain", |tx| {
            tx.contains(&format!("delete chain inet skiff-netpol {ingress}"))
        })
        .await;
    let tx = &recorder.transactions()[i];
    assert!(
        tx.contains("delete element inet skiff-netpol ingress-pods { 10.88.0.11 }"),
        "{tx}"
    );
    assert!(
        tx.contains(&format!("delete set inet skiff-netpol {peers}")),
        "{tx}"
    );
    assert!(!tx.contains("delete table"), "{tx}");

    assert!(!enforcer.is_finished(), "run returned early");
    enforcer.abort();
    assert_eq!(metrics.isolated_pods.get(), 0);
    assert_eq!(metrics.policies.get(), 0);
}
