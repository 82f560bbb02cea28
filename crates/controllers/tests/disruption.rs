//! PodDisruptionBudgets: the disruption controller's status and the `pods/eviction`
//! subresource honouring it, through the kube client and `kubectl drain`, against a real
//! API server (a simulated node; the test plays its kubelet). Follows upstream's
//! `disruption.go` conformance tests ("block an eviction until PDB updated", status).

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams};

const WAIT: Duration = Duration::from_secs(30);

/// Plays the node's kubelet: marks new pods Running and Ready, and finishes the graceful
/// deletion of pods being deleted.
fn play_kubelet(cluster: &Cluster, ns: &str) -> tokio::task::JoinHandle<()> {
    cluster.play_kubelet(ns, |api, pod| async move {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
        } else if !is_ready(&pod) {
            let _ = mark_ready(&api, &name).await;
        }
    })
}

async fn client_without_retries(server: &skiff_e2e::Server) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

async fn budget_status(
    budgets: &Api<PodDisruptionBudget>,
    name: &str,
) -> Option<(i32, i32, i32, i32)> {
    let status = budgets.get_status(name).await.ok()?.status?;
    Some((
        status.current_healthy?,
        status.desired_healthy?,
        status.expected_pods?,
        status.disruptions_allowed?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_and_drain_respect_the_budget() {
    let cluster = cluster().await;
    let ns = cluster.namespace("pdb");
    skiff_e2e::add_simulated_node(
        &cluster.client,
        "drain-me",
        "4",
        serde_json::json!({}),
        serde_json::json!({}),
    )
    .await;
    let _kubelet = play_kubelet(&cluster, &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(cluster.client.clone(), &ns);

    cluster
        .apply(&format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 3\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{nodeName: drain-me, containers: [{{name: c, image: busybox}}]}}\n"
        ))
        .await;
    // kubectl's typed create: a protobuf body.
    cluster
        .kubectl(&[
            "create",
            "pdb",
            "web",
            "-n",
            &ns,
            "--selector=app=web",
            "--min-available=3",
        ])
        .await;
    eventually("the budget counted 3 of 3 healthy", WAIT, || async {
        (budget_status(&budgets, "web").await? == (3, 3, 3, 0)).then_some(())
    })
    .await;
    let budget = budgets.get("web").await.expect("pdb");
    let status = budget.status.clone().expect("status");
    assert_eq!(status.observed_generation, budget.metadata.generation);
    let condition = &status.conditions.expect("conditions")[0];
    assert_eq!(
        (
            condition.type_.as_str(),
            condition.status.as_str(),
            condition.reason.as_str()
        ),
        ("DisruptionAllowed", "False", "InsufficientPods")
    );
    let table = cluster.kubectl(&["get", "pdb", "-n", &ns]).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header[..6],
        ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED"],
        "{table}"
    );
    assert_eq!(row[..4], ["web", "3", "N/A", "0"], "{table}");

    // No disruption allowed: the eviction is refused with upstream's 429, and the pod stays.
    let victim = active_pods(&cluster.client, &ns).await[0]
        .metadata
        .name
        .clone()
        .expect("name");
    // Asked once: kube's client would retry a 429 for minutes by default.
    let once: Api<Pod> = Api::namespaced(client_without_retries(&cluster.server).await, &ns);
    let refused = once.evict(&victim, &EvictParams::default()).await;
    match refused {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 429, "{status:?}");
            assert_eq!(status.reason, "TooManyRequests");
            assert_eq!(
                status.message,
                "Cannot evict pod as it would violate the pod's disruption budget."
            );
        }
        other => panic!("eviction should be refused, got {other:?}"),
    }
    assert!(pods
        .get(&victim)
        .await
        .expect("pod")
        .metadata
        .deletion_timestamp
        .is_none());

    // Loosened, the budget lets one pod go at a time: drain evicts all three pods, and
    // the ready pods never drop below the two the budget protects.
    budgets
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"minAvailable": 2}})),
        )
        .await
        .expect("patch pdb");
    eventually("one disruption allowed", WAIT, || async {
        (budget_status(&budgets, "web").await? == (3, 2, 3, 1)).then_some(())
    })
    .await;
    let fewest = track_fewest_ready(&cluster, &ns);
    let originals: Vec<String> = active_pods(&cluster.client, &ns)
        .await
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let drain =
        cluster
            .server
            .kubectl(&["drain", "drain-me", "--ignore-daemonsets", "--timeout=120s"]);
    let stderr = String::from_utf8_lossy(&drain.stderr);
    assert!(drain.status.success(), "drain failed: {stderr}");
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "drain never waited on the budget: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&drain.stdout);
    assert!(stdout.contains("node/drain-me drained"), "{stdout}");
    for name in &originals {
        assert!(
            pods.get_opt(name).await.expect("get").is_none(),
            "{name} still there"
        );
    }
    assert_eq!(
        *fewest.lock().unwrap(),
        Some(2),
        "ready pods dropped below the budget"
    );
    let node: Api<Node> = Api::all(cluster.client.clone());
    let cordoned = node
        .get("drain-me")
        .await
        .expect("node")
        .spec
        .and_then(|s| s.unschedulable);
    assert_eq!(cordoned, Some(true));
}
