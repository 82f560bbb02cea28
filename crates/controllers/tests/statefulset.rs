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

const WAIT: Duration = Duration::from_secs(60);

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
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(cluster.client.clone(), &ns);
    let revisions = || async {
        let status = sets
            .get_status("web")
            .await
            .expect("status")
            .status
            .expect("status");
        (status.current_revision, status.update_revision)
    };
    let (first, first_update) = revisions().await;
    assert!(
        first.is_some() && first == first_update,
        "{first:?} {first_update:?}"
    );
    history.lock().unwrap().clear();
    cluster
        .kubectl(&["set", "image", "statefulset/web", "c=busybox:b", "-n", &ns])
        .await;
    cluster.rollout_status("statefulset/web", &ns).await;
    // Rolled out: the current revision is the update revision, a new one.
    let (current, update) = eventually("the revisions to settle", WAIT, || async {
        let (current, update) = revisions().await;
        (current == update).then_some((current, update))
    })
    .await;
    assert_ne!(current, first, "{update:?}");
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

/// A StatefulSet `name` of `replicas` pods with `policy` pod management and more spec in
/// `extra` (indented for the spec), without claims.
fn plain_set(name: &str, replicas: u32, policy: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  serviceName: {name}\n  podManagementPolicy: {policy}\n{extra}  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox:a}}]}}\n"
    )
}

/// A node that readies pods only while `healthy` is set (as upstream's tests break and
/// mend a readiness probe).
fn gated_node(
    cluster: &Cluster,
    ns: &str,
    healthy: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    cluster.play_kubelet(ns, move |api, pod| {
        let healthy = healthy.clone();
        async move {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if healthy.load(std::sync::atomic::Ordering::SeqCst)
                && pod.metadata.deletion_timestamp.is_none()
                && !is_ready(&pod)
            {
                let _ = mark_ready(&api, &name).await;
            }
        }
    })
}

async fn pod_names(cluster: &Cluster, ns: &str) -> Vec<String> {
    let mut names: Vec<String> = active_pods(&cluster.client, ns)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

async fn set_ready(cluster: &Cluster, ns: &str, name: &str, ready: bool) {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    if ready {
        mark_ready(&api, name).await.expect("ready");
        return;
    }
    let patch = serde_json::json!({"status": {"conditions": [{"type": "Ready", "status": "False",
        "lastTransitionTime": jiff::Timestamp::now().to_string()}]}});
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("unready");
}

/// Upstream's "StatefulSet, Scaling predictable order": with `OrderedReady`, an unready
/// pod halts scaling up and down; once ready, pods come in ordinal order and go in
/// reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_scaling_halts_on_an_unready_pod() {
    let cluster = cluster().await;
    let ns = cluster.namespace("ordered");
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _node = gated_node(&cluster, &ns, healthy.clone());
    let history = record_pod_history(&cluster, &ns);
    cluster
        .apply_in(&ns, &plain_set("web", 3, "OrderedReady", ""))
        .await;
    eventually("web-0", WAIT, || async {
        (pod_names(&cluster, &ns).await == ["web-0"]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        pod_names(&cluster, &ns).await,
        ["web-0"],
        "web-1 came before web-0 was ready"
    );
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    set_ready(&cluster, &ns, "web-0", true).await;
    cluster.rollout_status("statefulset/web", &ns).await;
    assert_eq!(
        history.lock().unwrap().clone(),
        ["+web-0", "+web-1", "+web-2"]
    );
    // Every pod unready: scaling down to 0 does not start (upstream deletes only the
    // lowest unready pod out of turn, so with all of them unready nothing goes).
    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    for pod in ["web-0", "web-1", "web-2"] {
        set_ready(&cluster, &ns, pod, false).await;
    }
    history.lock().unwrap().clear();
    cluster
        .kubectl(&["scale", "statefulset/web", "--replicas=0", "-n", &ns])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        pod_names(&cluster, &ns).await.len(),
        3,
        "scaled down past an unready pod"
    );
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    // Mended from the top: each goes as soon as it is ready, those below wait.
    for pod in ["web-2", "web-1", "web-0"] {
        set_ready(&cluster, &ns, pod, true).await;
    }
    eventually("every pod gone", WAIT, || async {
        pod_names(&cluster, &ns).await.is_empty().then_some(())
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
    assert_eq!(removed, ["-web-2", "-web-1", "-web-0"]);
}

/// Upstream's "StatefulSet, Burst Scaling": with `Parallel`, pods are made and removed
/// all at once, unready or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_scaling_does_not_wait_for_readiness() {
    let cluster = cluster().await;
    let ns = cluster.namespace("burst");
    gated_node(
        &cluster,
        &ns,
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    cluster
        .apply_in(&ns, &plain_set("web", 3, "Parallel", ""))
        .await;
    eventually("3 unready pods", WAIT, || async {
        (pod_names(&cluster, &ns).await == ["web-0", "web-1", "web-2"]).then_some(())
    })
    .await;
    cluster
        .kubectl(&["scale", "statefulset/web", "--replicas=0", "-n", &ns])
        .await;
    eventually("every pod gone", WAIT, || async {
        pod_names(&cluster, &ns).await.is_empty().then_some(())
    })
    .await;
}

/// Upstream's "StatefulSet, Rolling Update with Partition" and "scale subresource": a
/// partition keeps the ordinals below it on the old template (a canary), lowering it
/// rolls the rest; the replicas are read and set through `statefulsets/scale`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_rolling_update_and_scale_subresource() {
    let cluster = cluster().await;
    let ns = cluster.namespace("partition");
    let _node = cluster.run_node(&ns);
    let partition = "  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 2}}\n";
    cluster
        .apply_in(&ns, &plain_set("web", 3, "OrderedReady", partition))
        .await;
    cluster.rollout_status("statefulset/web", &ns).await;
    cluster
        .kubectl(&["set", "image", "statefulset/web", "c=busybox:b", "-n", &ns])
        .await;
    let canary = [
        ("web-0".to_string(), "busybox:a".to_string()),
        ("web-1".into(), "busybox:a".into()),
        ("web-2".into(), "busybox:b".into()),
    ];
    eventually("the canary", WAIT, || async {
        (images(&cluster, &ns).await == canary).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        images(&cluster, &ns).await,
        canary,
        "the partition was not kept"
    );
    cluster
        .kubectl(&[
            "patch",
            "statefulset/web",
            "-n",
            &ns,
            "-p",
            "{\"spec\": {\"updateStrategy\": {\"rollingUpdate\": {\"partition\": 0}}}}",
        ])
        .await;
    eventually("every pod on busybox:b", WAIT, || async {
        let now = images(&cluster, &ns).await;
        (now.len() == 3 && now.iter().all(|(_, image)| image == "busybox:b")).then_some(())
    })
    .await;

    let (scale, _) = cluster.read_scale(&ns, "statefulsets/web").await;
    assert_eq!(
        (&scale["spec"]["replicas"], &scale["status"]["selector"]),
        (&3.into(), &"app=web".into()),
        "{scale}"
    );
    cluster.patch_scale(&ns, "statefulset/web", 2).await;
    eventually("2 pods", WAIT, || async {
        (pod_names(&cluster, &ns).await == ["web-0", "web-1"]).then_some(())
    })
    .await;
}

/// Upstream's "StatefulSet, Recreate Failed Pod": a pod that fails is deleted and made
/// again under its name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pod_is_recreated_under_its_name() {
    let cluster = cluster().await;
    let ns = cluster.namespace("recreate");
    let _node = cluster.run_node(&ns);
    cluster
        .apply_in(&ns, &plain_set("web", 1, "OrderedReady", ""))
        .await;
    cluster.rollout_status("statefulset/web", &ns).await;
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let first = api.get("web-0").await.expect("web-0").metadata.uid;
    api.patch_status(
        "web-0",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&serde_json::json!({"status": {"phase": "Failed"}})),
    )
    .await
    .expect("failed");
    eventually("web-0 made again", WAIT, || async {
        let pod = api.get("web-0").await.ok()?;
        (pod.metadata.uid != first && pod.metadata.deletion_timestamp.is_none()).then_some(())
    })
    .await;
}
