//! The Deployment controller against a real `skiff server`, driven by real kubectl.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;

fn deployment_yaml(ns: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 4\n  selector: {{matchLabels: {{app: web}}}}\n  strategy: {{type: RollingUpdate, rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: {image}}}]}}\n"
    )
}

fn annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<String> {
    meta.annotations.as_ref()?.get(key).cloned()
}

/// Caches the `K`s of `ns` and records, after every single change, what `check` finds
/// wrong with the whole set.
fn watch_invariant<K>(
    cluster: &Cluster,
    ns: &str,
    violations: Arc<Mutex<Vec<String>>>,
    check: impl Fn(&[Arc<K>]) -> Option<String> + Send + 'static,
) -> reflector::Store<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store::<K>();
    let api: Api<K> = Api::namespaced(cluster.client.clone(), ns);
    let state = reader.clone();
    tokio::spawn(async move {
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).default_backoff(),
        );
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            // Only single changes: during a (re-)list the cache is not yet whole.
            if !matches!(
                event,
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))
            ) {
                continue;
            }
            if let Some(problem) = check(&state.state()) {
                violations.lock().unwrap().push(problem);
            }
        }
    });
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_and_kubectl_rollout() {
    let cluster = cluster().await;
    let ns = cluster.namespace("deploy");
    let _node = cluster.run_node(&ns);
    let d_api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let rs_api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);

    cluster.apply(&deployment_yaml(&ns, "busybox:a")).await;
    cluster.rollout_status("deployment/web", &ns).await;

    // Through the rollout, as upstream's controller promises: the ReplicaSets never ask for
    // more than 4+1 pods, and never fewer than 4-1 pods are ready. (Pod counts themselves
    // may overshoot briefly: an old ReplicaSet's surplus pod can outlive its scale-down by
    // a moment, upstream too.)
    let violations = Arc::new(Mutex::new(Vec::new()));
    let pods = watch_invariant::<Pod>(&cluster, &ns, violations.clone(), |pods| {
        let ready = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
            .count();
        (ready < 3).then(|| format!("{ready} pods ready"))
    });
    let sets = watch_invariant::<ReplicaSet>(&cluster, &ns, violations.clone(), |sets| {
        let wanted: i32 = sets.iter().filter_map(|rs| rs.spec.replicas).sum();
        (wanted > 5).then(|| format!("ReplicaSets want {wanted} pods"))
    });
    for cache in [
        pods.wait_until_ready().boxed(),
        sets.wait_until_ready().boxed(),
    ] {
        tokio::time::timeout(Duration::from_secs(30), cache)
            .await
            .expect("the caches fill within 30 s")
            .expect("cache");
    }

    cluster
        .kubectl(&["set", "image", "deployment/web", "c=busybox:b", "-n", &ns])
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        violations.lock().unwrap().is_empty(),
        "budget violated: {:?}",
        violations.lock().unwrap()
    );

    let d = d_api.get("web").await.expect("deployment");
    assert_eq!(
        annotation(&d.metadata, "deployment.kubernetes.io/revision").as_deref(),
        Some("2")
    );
    // What the controllers did, as kubectl describe shows it.
    let described = cluster
        .kubectl(&["describe", "deployment", "web", "-n", &ns])
        .await;
    assert!(
        described.contains("ScalingReplicaSet") && described.contains("Scaled up replica set web-"),
        "{described}"
    );
    let events = cluster
        .kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .await;
    assert!(events.contains("SuccessfulCreate"), "{events}");
    let status = d.status.clone().expect("status");
    let cond = |t: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_.as_deref() == Some(t))
            .map(|c| {
                (
                    c.status.clone().unwrap_or_default(),
                    c.reason.clone().unwrap_or_default(),
                )
            })
    };
    assert_eq!(
        cond("Available"),
        Some(("True".into(), "MinimumReplicasAvailable".into()))
    );
    assert_eq!(
        cond("Progressing"),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.available_replicas
        ),
        (Some(4), Some(4), Some(4))
    );

    let sets = rs_api
        .list(&Default::default())
        .await
        .expect("rs list")
        .items;
    assert_eq!(sets.len(), 2);
    for rs in &sets {
        let hash = rs
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
            .cloned()
            .expect("hash label");
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        let revision = annotation(&rs.metadata, "deployment.kubernetes.io/revision");
        let replicas = rs.spec.replicas;
        match revision.as_deref() {
            Some("1") => assert_eq!(replicas, Some(0)),
            Some("2") => assert_eq!(replicas, Some(4)),
            other => panic!("revision {other:?}"),
        }
        assert_eq!(
            annotation(&rs.metadata, "deployment.kubernetes.io/desired-replicas").as_deref(),
            Some("4")
        );
        assert_eq!(
            annotation(&rs.metadata, "deployment.kubernetes.io/max-replicas").as_deref(),
            Some("5")
        );
    }

    // kubectl rollout history / undo / pause / resume / restart, kubectl scale.
    let history = cluster
        .kubectl(&["rollout", "history", "deployment/web", "-n", &ns])
        .await;
    assert!(history.contains('1') && history.contains('2'), "{history}");
    cluster
        .kubectl(&["rollout", "undo", "deployment/web", "-n", &ns])
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    let d = d_api.get("web").await.expect("deployment");
    assert_eq!(
        annotation(&d.metadata, "deployment.kubernetes.io/revision").as_deref(),
        Some("3")
    );
    assert_eq!(
        d.spec
            .template
            .spec
            .as_ref()
            .map(|s| s.containers[0].image.clone()),
        Some(Some("busybox:a".into()))
    );
    assert_eq!(
        rs_api
            .list(&Default::default())
            .await
            .expect("rs")
            .items
            .len(),
        2,
        "undo reuses the old RS"
    );

    cluster
        .kubectl(&["rollout", "pause", "deployment/web", "-n", &ns])
        .await;
    cluster
        .kubectl(&["set", "image", "deployment/web", "c=busybox:c", "-n", &ns])
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        rs_api
            .list(&Default::default())
            .await
            .expect("rs")
            .items
            .len(),
        2,
        "paused: no new RS"
    );
    cluster
        .kubectl(&["rollout", "resume", "deployment/web", "-n", &ns])
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    cluster
        .kubectl(&["rollout", "restart", "deployment/web", "-n", &ns])
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    let d = d_api.get("web").await.expect("deployment");
    assert_eq!(
        annotation(&d.metadata, "deployment.kubernetes.io/revision").as_deref(),
        Some("5")
    );

    cluster
        .kubectl(&["scale", "deployment/web", "--replicas=6", "-n", &ns])
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    eventually("6 pods", Duration::from_secs(30), || async {
        (active_pods(&cluster.client, &ns).await.len() == 6).then_some(())
    })
    .await;
}
