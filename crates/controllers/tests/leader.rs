//! Two controller managers at once: only the Lease holder acts, and when it stops, the
//! other takes over within the lease duration, as upstream's do. Each serves its metrics,
//! leader or not.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use skiff_controllers::ControllerManagerArgs;
use skiff_e2e::Server;

fn replica_set(ns: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    )
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("kube-controller-manager")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_the_other_takes_over() {
    let server = tokio::task::spawn_blocking(|| Server::start(&[]))
        .await
        .expect("server");
    let client = client_for(&server).await;
    let args = ControllerManagerArgs {
        leader_elect_lease_duration: Duration::from_secs(3),
        leader_elect_renew_deadline: Duration::from_secs(2),
        leader_elect_retry_period: Duration::from_millis(500),
        ..Default::default()
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let with_metrics = |port: u16| ControllerManagerArgs {
        metrics_bind_address: Some(([127, 0, 0, 1], port).into()),
        ..args.clone()
    };
    let (first_port, second_port) = (skiff_e2e::free_port(), skiff_e2e::free_port());

    let first = tokio::spawn(skiff_controllers::run(
        client.clone(),
        with_metrics(first_port),
    ));
    let leader = eventually(
        "the first manager leads",
        Duration::from_secs(20),
        || async { holder(&leases).await },
    )
    .await;
    let second = tokio::spawn(skiff_controllers::run(
        client.clone(),
        with_metrics(second_port),
    ));

    let cluster = Cluster::attach(server, client.clone());
    let ns = cluster.namespace("leader");
    let _node = cluster.run_node(&ns);
    cluster.apply(&replica_set(&ns, 3)).await;
    eventually("3 pods", Duration::from_secs(20), || async {
        (active_pods(&client, &ns).await.len() == 3).then_some(())
    })
    .await;
    // Two managers acting would make six.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(active_pods(&client, &ns).await.len(), 3);
    assert_eq!(holder(&leases).await.as_deref(), Some(leader.as_str()));
    let leading = r#"leader_election_master_status{name="kube-controller-manager"}"#;
    let leader_metrics = skiff_e2e::scrape_metrics(first_port);
    let standby_metrics = skiff_e2e::scrape_metrics(second_port);
    assert_eq!(
        skiff_e2e::metric_value(&leader_metrics, leading),
        Some(1.0),
        "{leader_metrics}"
    );
    assert_eq!(
        skiff_e2e::metric_value(&standby_metrics, leading),
        Some(0.0),
        "{standby_metrics}"
    );
    // The leader's ReplicaSet queue saw the ReplicaSet; the standby has no queues yet.
    let replicaset_adds = r#"workqueue_adds_total{name="replicaset"}"#;
    let adds = skiff_e2e::metric_value(&leader_metrics, replicaset_adds).unwrap_or(0.0);
    assert!(adds >= 1.0, "{leader_metrics}");
    assert_eq!(
        skiff_e2e::metric_value(&standby_metrics, replicaset_adds),
        None
    );

    // The leader stops without releasing (as a crash would): the other takes over.
    first.abort();
    let successor = eventually(
        "the second manager leads",
        Duration::from_secs(20),
        || async { holder(&leases).await.filter(|h| *h != leader) },
    )
    .await;
    assert_ne!(successor, leader);
    // It reports leading once it has started its controllers, just after taking the Lease.
    eventually(
        "the second manager's metrics say it leads",
        Duration::from_secs(5),
        || async {
            let metrics = skiff_e2e::scrape_metrics(second_port);
            (skiff_e2e::metric_value(&metrics, leading) == Some(1.0)).then_some(())
        },
    )
    .await;
    cluster.apply(&replica_set(&ns, 5)).await;
    eventually("5 pods", Duration::from_secs(20), || async {
        (active_pods(&client, &ns).await.len() == 5).then_some(())
    })
    .await;
    second.abort();
}
