//! Two controller managers at once: only the Lease holder acts, and when it stops, the
//! other takes over within the lease duration, as upstream's do.

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

    let first = tokio::spawn(skiff_controllers::run(client.clone(), args.clone()));
    let leader = eventually(
        "the first manager leads",
        Duration::from_secs(20),
        || async { holder(&leases).await },
    )
    .await;
    let second = tokio::spawn(skiff_controllers::run(client.clone(), args));

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

    // The leader stops without releasing (as a crash would): the other takes over.
    first.abort();
    let successor = eventually(
        "the second manager leads",
        Duration::from_secs(20),
        || async { holder(&leases).await.filter(|h| *h != leader) },
    )
    .await;
    assert_ne!(successor, leader);
    cluster.apply(&replica_set(&ns, 5)).await;
    eventually("5 pods", Duration::from_secs(20), || async {
        (active_pods(&client, &ns).await.len() == 5).then_some(())
    })
    .await;
    second.abort();
}
