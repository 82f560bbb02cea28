//! The whole loop against a real API server (`skiff apiserver`, found through `SKIFF_BIN`
//! or the target directory): Services and EndpointSlices written with kubectl, the
//! watches, batching and diffing, with transactions captured instead of run through nft
//! or iptables-restore, in both kernel modes; and the userspace mode's portals following
//! the same objects.

use std::time::Duration;

use prometheus_client::registry::Registry;
use serde_json::json;
use skiff_e2e::Server;
use skiff_proxy::{run_with, Metrics, ProxyArgs, ProxyMode, Recorder};

fn slice(ns: &str, ips: &[&str]) -> String {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "node1", "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": "web-abc",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
    .to_string()
}

/// What each mode's transactions say about the test's service.
struct Texts {
    /// The cluster IP leads to the service's chain.
    service: String,
    /// A transaction that writes everything.
    full: &'static str,
    /// DNAT to an endpoint, followed by `IP:PORT`.
    dnat: &'static str,
    /// The NodePort leads to the external chain.
    node_port: String,
    /// The service's deletion.
    removed: [String; 2],
}

fn texts(mode: ProxyMode, cluster_ip: &str, node_port: i64) -> Texts {
    match mode {
        ProxyMode::Nftables => Texts {
            service: format!("{cluster_ip} . tcp . 80 : goto service-"),
            full: "delete table ip skiff-proxy",
            dnat: "dnat to ",
            node_port: format!("tcp . {node_port} : goto external-"),
            removed: [
                format!("delete element ip skiff-proxy service-ips {{ {cluster_ip} . tcp . 80 }}"),
                "delete chain ip skiff-proxy service-".into(),
            ],
        },
        ProxyMode::Iptables => Texts {
            service: format!("-d {cluster_ip}/32 --dport 80 -j KUBE-SVC-"),
            full: ":KUBE-MARK-MASQ - [0:0]",
            dnat: "-j DNAT --to-destination ",
            node_port: format!("--dport {node_port} -j KUBE-EXT-"),
            removed: ["-X KUBE-EXT-".into(), "-X KUBE-SVC-".into()],
        },
        ProxyMode::Userspace => unreachable!("the userspace mode has its own test below"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_services_and_endpoint_slices_nftables() {
    run_follows_services_and_endpoint_slices(ProxyMode::Nftables).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_services_and_endpoint_slices_iptables() {
    run_follows_services_and_endpoint_slices(ProxyMode::Iptables).await;
}

/// An API server holding the `web` NodePort Service of namespace `proxy-run` with one
/// endpoint (10.88.1.2); `None` (the test skipped) when there is no skiff binary.
struct WebService {
    server: Server,
    client: kube::Client,
    ns: &'static str,
    cluster_ip: String,
    node_port: i64,
}

async fn web_service() -> Option<WebService> {
    if std::env::var_os("SKIFF_BIN").is_none()
        && std::panic::catch_unwind(skiff_e2e::skiff_binary).is_err()
    {
        eprintln!("SKIPPED: no skiff binary; build it or set SKIFF_BIN");
        return None;
    }
    let server = tokio::task::spawn_blocking(|| Server::start(&[]))
        .await
        .expect("server");
    let client = server.client().await;
    let ns = "proxy-run";
    server.ok(&["create", "namespace", ns]);
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    });
    server.ok_with_input(&["apply", "-f", "-"], &service.to_string());
    server.ok_with_input(&["apply", "-f", "-"], &slice(ns, &["10.88.1.2"]));
    let svc = server.json(&["service", "-n", ns, "web"]);
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("cluster IP")
        .to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("node port");
    Some(WebService {
        server,
        client,
        ns,
        cluster_ip,
        node_port,
    })
}

async fn run_follows_services_and_endpoint_slices(mode: ProxyMode) {
    let Some(WebService {
        server,
        client,
        ns,
        cluster_ip,
        node_port,
    }) = web_service().await
    else {
        return;
    };

    let recorder = Recorder::default();
    let args = ProxyArgs {
        hostname_override: Some("node1".into()),
        cluster_cidr: Some("10.88.0.0/16".parse().expect("cidr")),
        min_sync_period: Duration::from_millis(2000),
        proxy_mode: mode,
        ..ProxyArgs::default()
    };
    let metrics = Metrics::new(&mut Registry::default());
    let proxy = tokio::spawn(run_with(client, args, recorder.clone(), metrics.clone()));

    // The first sync writes the whole table, with the service already in it.
    let want = texts(mode, &cluster_ip, node_port);
    let first = recorder
        .wait_for(0, "with the service", |tx| tx.contains(&want.service))
        .await;
    let tx = &recorder.transactions()[first];
    assert!(tx.contains(want.full), "{tx}");
    assert!(tx.contains(&format!("{}10.88.1.2:8080", want.dnat)), "{tx}");
    assert!(tx.contains(&want.node_port), "{tx}");

    // A burst of changes within the minimum sync period becomes at most two syncs (one
    // may already be due when the burst starts), and the result is incremental.
    let before = recorder.transactions().len();
    for ips in [
        &["10.88.1.2", "10.88.2.2"][..],
        &["10.88.1.2", "10.88.2.2", "10.88.3.2"],
        &["10.88.1.2", "10.88.2.2", "10.88.3.2", "10.88.4.2"],
    ] {
        server.ok_with_input(&["apply", "-f", "-"], &slice(ns, ips));
    }
    let i = recorder
        .wait_for(before, "with the fourth endpoint", |tx| {
            tx.contains(&format!("{}10.88.4.2:8080", want.dnat))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let txs = recorder.transactions();
    assert!(
        txs.len() - before <= 2,
        "{} syncs for a burst",
        txs.len() - before
    );
    assert!(!txs[i].contains(want.full), "{}", txs[i]);
    assert!(
        !txs[i].contains(&format!("{}10.88.1.2:8080", want.dnat)),
        "unchanged endpoint rewritten: {}",
        txs[i]
    );

    // Deleting the service removes its map elements and chains.
    let before = txs.len();
    server.ok(&["delete", "service", "-n", ns, "web"]);
    recorder
        .wait_for(before, "removing the service", |tx| {
            want.removed.iter().all(|text| tx.contains(text.as_str()))
        })
        .await;

    assert!(!proxy.is_finished(), "run returned early");
    proxy.abort();
}

/// The userspace mode through the same loop: a portal (a listener in this process) per
/// Service address, its table redirecting there, endpoints handed over without touching
/// the table, and the portal closed with the Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_services_in_userspace_mode() {
    let Some(WebService {
        server,
        client,
        ns,
        cluster_ip,
        node_port,
    }) = web_service().await
    else {
        return;
    };

    let recorder = Recorder::default();
    let args = ProxyArgs {
        hostname_override: Some("node1".into()),
        min_sync_period: Duration::from_millis(500),
        proxy_mode: ProxyMode::Userspace,
        ..ProxyArgs::default()
    };
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let proxy = tokio::spawn(run_with(client, args, recorder.clone(), metrics.clone()));

    let redirect = format!("ip daddr {cluster_ip} tcp dport 80 redirect to :");
    let first = recorder
        .wait_for(0, "with the service", |tx| tx.contains(&redirect))
        .await;
    let tx = &recorder.transactions()[first];
    assert!(tx.contains("delete table ip skiff-userspace"), "{tx}");
    assert!(
        tx.contains(&format!("tcp dport {node_port} redirect to :")),
        "{tx}"
    );
    // The cluster IP and node port, besides the `kubernetes` Service's cluster IP.
    let portals = metrics.userspace_portals.get();
    assert!(portals >= 2, "{portals} portals");

    // New endpoints reach the portal; the table stays as it is.
    let before = recorder.transactions().len();
    server.ok_with_input(
        &["apply", "-f", "-"],
        &slice(ns, &["10.88.1.2", "10.88.2.2"]),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(recorder.transactions().len(), before);

    // Deleting the service closes its portals and takes its rules out.
    server.ok(&["delete", "service", "-n", ns, "web"]);
    recorder
        .wait_for(before, "without the service", |tx| {
            !tx.contains(&cluster_ip)
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.userspace_portals.get() != portals - 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.userspace_portals.get(), portals - 2);
    assert!(!proxy.is_finished(), "run returned early");
    proxy.abort();
}
