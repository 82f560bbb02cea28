//! The StatefulSet controller against a real `skiff apiserver`, driven by real kubectl:
//! ordered creation and removal, stable identities and claims, rolling updates from the
//! highest ordinal down, and undo from its history.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;

fn stateful_set(ns: &str, replicas: u32, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  serviceName: web\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: {image}}}]}}\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
    )
}

/// Records, in order, the pods of `ns` as they appear and as they go.
fn record_pod_history(cluster: &Cluster, ns: &str) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    let log = seen.clone();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut known = std::collections::HashSet::new();
        while let Some(event) = stream.next().await {
            let entry = match event {
                Ok(Event::Apply(p) | Event::InitApply(p)) => {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    if p.metadata.deletion_timestamp.is_some() || !known.insert(uid) {
                        continue;
                    }
                    format!("+{}", p.metadata.name.unwrap_or_default())
                }
                Ok(Event::Delete(p)) => format!("-{}", p.metadata.name.unwrap_or_default()),
                _ => continue,
            };
            log.lock().unwrap().push(entry);
        }
    });
    seen
}

async fn images(cluster: &Cluster, ns: &str) -> Vec<(String, String)> {
    let mut pods: Vec<(String, String)> = active_pods(&cluster.client, ns)
        .await
        .into_iter()
        .filter_map(|p| {
            let image = p.spec?.containers[0].image.clone()?;
            Some((p.metadata.name?, image))
        })
        .collect();
    pods.sort();
    pods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_pods_stable_identity_rolling_update_and_undo() {
    let cluster = cluster().await;
    let ns = cluster.namespace("stateful");
    let _node = cluster.run_node(&ns);
    let history = record_pod_history(&cluster, &ns);

    cluster.apply(&stateful_set(&ns, 3, "busybox:a")).await;
    cluster.rollout_status("statefulset/web", &ns).await;
    assert_eq!(
        history.lock().unwrap().clone(),
        ["+web-0", "+web-1", "+web-2"]
    );
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let web1 = pods.get("web-1").await.expect("web-1");
    let spec = web1.spec.clone().expect("spec");
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("web"));
    let labels = web1.metadata.labels.clone().expect("labels");
    assert_eq!(
        labels
            .get("statefulset.kubernetes.io/pod-name")
            .map(String::as_str),
        Some("web-1")
    );
    assert_eq!(
        labels
            .get("apps.kubernetes.io/pod-index")
            .map(String::as_str),
        Some("1")
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &ns);
    let mut claim_names: Vec<String> = claims
        .list(&Default::default())
        .await
        .expect("claims")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    claim_names.sort();
    assert_eq!(claim_names, ["data-web-0", "data-web-1", "data-web-2"]);

    // A new template: replaced from the highest ordinal down.
    history.lock().unwrap().clear();
    cluster
        .kubectl(&["set", "image", "statefulset/web", "c=busybox:b", "-n", &ns])
        .await;
    cluster.rollout_status("statefulset/web", &ns).await;
    assert_eq!(
        images(&cluster, &ns).await,
        [
            ("web-0".into(), "busybox:b".into()),
            ("web-1".into(), "busybox:b".into()),
            ("web-2".into(), "busybox:b".into())
        ]
    );
    let replaced: Vec<String> = history
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with('-'))
        .cloned()
        .collect();
    assert_eq!(replaced, ["-web-2", "-web-1", "-web-0"]);

    // Undo, from the ControllerRevision history.
    cluster
        .kubectl(&["rollout", "undo", "statefulset/web", "-n", &ns])
        .await;
    eventually("back to busybox:a", Duration::from_secs(60), || async {
        let now = images(&cluster, &ns).await;
        (now.len() == 3 && now.iter().all(|(_, image)| image == "busybox:a")).then_some(())
    })
    .await;

    // Scale down: the highest ordinals go, in order.
    history.lock().unwrap().clear();
    cluster
        .kubectl(&["scale", "statefulset/web", "--replicas=1", "-n", &ns])
        .await;
    eventually("one pod left", Duration::from_secs(30), || async {
        (active_pods(&cluster.client, &ns).await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let removed: Vec<String> = history
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with('-'))
        .cloned()
        .collect();
    assert_eq!(removed, ["-web-2", "-web-1"]);
}

/// `persistentVolumeClaimRetentionPolicy` with both rules `Delete`: the claims of ordinals
/// scaled away go with their pods, the rest with the set (the garbage collector deletes
/// them through the owner references the controller sets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_retention_policy_deletes_claims_with_their_owners() {
    let cluster = cluster().await;
    let ns = cluster.namespace("sts-retention");
    let _node = cluster.run_node(&ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &ns);
    let claim_names = || async {
        let mut names: Vec<String> = claims
            .list(&Default::default())
            .await
            .expect("claims")
            .items
            .into_iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| c.metadata.name)
            .collect();
        names.sort();
        names
    };
    let policy =
        "  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}\n";
    cluster
        .apply(&(stateful_set(&ns, 3, "busybox") + policy))
        .await;
    eventually(
        "three claims owned by the set",
        Duration::from_secs(60),
        || async {
            let list = claims.list(&Default::default()).await.ok()?.items;
            (list.len() == 3
                && list.iter().all(|c| {
                    c.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|r| r.kind == "StatefulSet" && r.name == "web")
                }))
            .then_some(())
        },
    )
    .await;

    cluster
        .kubectl(&["scale", "statefulset", "web", "--replicas=1", "-n", &ns])
        .await;
    eventually(
        "the scaled-away claims gone",
        Duration::from_secs(60),
        || async { (claim_names().await == ["data-web-0"]).then_some(()) },
    )
    .await;

    cluster
        .kubectl(&["delete", "statefulset", "web", "-n", &ns])
        .await;
    eventually(
        "the last claim gone with the set",
        Duration::from_secs(60),
        || async { claim_names().await.is_empty().then_some(()) },
    )
    .await;
}

/// `maxUnavailable: 2`: a rolling update replaces two pods at a time, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_takes_max_unavailable_pods_at_a_time() {
    let cluster = cluster().await;
    let ns = cluster.namespace("sts-unavailable");
    let _node = cluster.run_node(&ns);
    let strategy = "  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 2}}\n";
    cluster
        .apply(&(stateful_set(&ns, 4, "busybox:1") + strategy))
        .await;
    cluster.rollout_status("statefulset/web", &ns).await;
    let fewest = track_fewest_ready(&cluster, &ns);
    cluster
        .kubectl(&["set", "image", "statefulset/web", "c=busybox:2", "-n", &ns])
        .await;
    cluster.rollout_status("statefulset/web", &ns).await;
    assert!(images(&cluster, &ns)
        .await
        .iter()
        .all(|(_, image)| image == "busybox:2"));
    assert_eq!(
        *fewest.lock().unwrap(),
        Some(2),
        "two pods at a time are replaced, never more"
    );
}
