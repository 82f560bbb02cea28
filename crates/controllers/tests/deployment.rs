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

const WAIT: Duration = Duration::from_secs(60);

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

/// A Deployment `name` of `replicas` pods of `image` (YAML), with `strategy` (YAML
/// flow) and more spec fields in `extra` (indented for the spec).
fn deployment(name: &str, replicas: i32, image: &str, strategy: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, labels: {{test: {name}}}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  strategy: {strategy}\n{extra}  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: {image}}}]}}\n"
    )
}

/// The ReplicaSets of `ns`, by the image of their template: (image, spec replicas,
/// ready replicas).
async fn replica_sets(cluster: &Cluster, ns: &str) -> Vec<(String, i32, i32)> {
    let api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), ns);
    let mut sets: Vec<_> = api
        .list(&Default::default())
        .await
        .expect("ReplicaSets")
        .items
        .into_iter()
        .map(|rs| {
            let image = rs
                .spec
                .template
                .as_ref()
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let replicas = rs.spec.replicas.unwrap_or(0);
            let ready = rs
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            (image, replicas, ready)
        })
        .collect();
    sets.sort();
    sets
}

/// Upstream's "Deployment Recreate": a Recreate rollout never runs old and new pods
/// together — the Deployment's status never counts updated and other replicas at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_never_mixes_old_and_new_pods() {
    let cluster = cluster().await;
    let ns = cluster.namespace("recreate");
    let _node = cluster.run_node(&ns);
    cluster
        .apply_in(
            &ns,
            &deployment("web", 3, "busybox:a", "{type: Recreate}", ""),
        )
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    let violations = Arc::new(Mutex::new(Vec::new()));
    let deployments = watch_invariant::<Deployment>(&cluster, &ns, violations.clone(), |all| {
        all.iter().find_map(|d| {
            let status = d.status.as_ref()?;
            let (updated, total) = (
                status.updated_replicas.unwrap_or(0),
                status.replicas.unwrap_or(0),
            );
            (updated > 0 && updated != total)
                .then(|| format!("mixed old and new pods: {updated} updated of {total}"))
        })
    });
    tokio::time::timeout(Duration::from_secs(30), deployments.wait_until_ready())
        .await
        .expect("the cache fills within 30 s")
        .expect("cache");
    cluster
        .kubectl(&["set", "image", "deployment/web", "c=busybox:b", "-n", &ns])
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        violations.lock().unwrap().is_empty(),
        "{:?}",
        violations.lock().unwrap()
    );
    assert_eq!(
        replica_sets(&cluster, &ns).await,
        [
            ("busybox:a".to_string(), 0, 0),
            ("busybox:b".to_string(), 3, 3)
        ]
    );
}

/// Upstream's "Deployment RevisionHistoryLimit": old ReplicaSets beyond the limit are
/// deleted; with a limit of 0 none is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let cluster = cluster().await;
    let ns = cluster.namespace("history");
    let _node = cluster.run_node(&ns);
    let strategy = "{type: RollingUpdate}";
    cluster
        .apply_in(
            &ns,
            &deployment(
                "web",
                2,
                "busybox:a",
                strategy,
                "  revisionHistoryLimit: 1\n",
            ),
        )
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    for image in ["busybox:b", "busybox:c"] {
        cluster
            .kubectl(&[
                "set",
                "image",
                "deployment/web",
                &format!("c={image}"),
                "-n",
                &ns,
            ])
            .await;
        cluster.rollout_status("deployment/web", &ns).await;
    }
    let sets = eventually("one old ReplicaSet kept", WAIT, || async {
        let sets = replica_sets(&cluster, &ns).await;
        (sets.len() == 2).then_some(sets)
    })
    .await;
    assert_eq!(
        sets,
        [
            ("busybox:b".to_string(), 0, 0),
            ("busybox:c".to_string(), 2, 2)
        ]
    );
    cluster
        .kubectl(&[
            "patch",
            "deployment/web",
            "-n",
            &ns,
            "-p",
            "{\"spec\": {\"revisionHistoryLimit\": 0}}",
        ])
        .await;
    let sets = eventually("no old ReplicaSet kept", WAIT, || async {
        let sets = replica_sets(&cluster, &ns).await;
        (sets.len() == 1).then_some(sets)
    })
    .await;
    assert_eq!(sets, [("busybox:c".to_string(), 2, 2)]);
}

/// Upstream's "Deployment Proportional Scaling": scaled in the middle of a rollout that
/// cannot finish (its new pods never turn ready), the Deployment spreads the new
/// replicas over its ReplicaSets in proportion to their sizes (8 and 5 of 10 become 20
/// and 13 of 30, with `maxSurge: 3`, `maxUnavailable: 2`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_during_a_rollout_is_proportional() {
    let cluster = cluster().await;
    let ns = cluster.namespace("proportional");
    // The node readies every pod but those of the image that cannot run.
    let _node = cluster.play_kubelet(&ns, |api, pod| async move {
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        if image != "webserver:404" && pod.metadata.deletion_timestamp.is_none() && !is_ready(&pod)
        {
            let _ = mark_ready(&api, &pod.metadata.name.clone().unwrap_or_default()).await;
        }
    });
    let strategy = "{type: RollingUpdate, rollingUpdate: {maxSurge: 3, maxUnavailable: 2}}";
    cluster
        .apply_in(&ns, &deployment("web", 10, "busybox:a", strategy, ""))
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    cluster
        .kubectl(&[
            "set",
            "image",
            "deployment/web",
            "c=webserver:404",
            "-n",
            &ns,
        ])
        .await;
    // The rollout goes as far as the budget allows: 8 old pods stay available, 5 new
    // ones wait.
    eventually("the rollout to stall at 8 + 5", WAIT, || async {
        let sets = replica_sets(&cluster, &ns).await;
        (sets
            == [
                ("busybox:a".to_string(), 8, 8),
                ("webserver:404".to_string(), 5, 0),
            ])
        .then_some(())
    })
    .await;
    cluster
        .kubectl(&["scale", "deployment/web", "--replicas=30", "-n", &ns])
        .await;
    eventually("the new replicas spread as 20 + 13", WAIT, || async {
        let sets = replica_sets(&cluster, &ns).await;
        let sizes: Vec<(String, i32)> = sets.into_iter().map(|(i, r, _)| (i, r)).collect();
        (sizes
            == [
                ("busybox:a".to_string(), 20),
                ("webserver:404".to_string(), 13),
            ])
        .then_some(())
    })
    .await;
}

/// Upstream's "Deployment, scale subresource": the scale is read, replaced and patched
/// through `deployments/scale`, and the Deployment follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_subresource_reads_and_sets_replicas() {
    let cluster = cluster().await;
    let ns = cluster.namespace("scale");
    let _node = cluster.run_node(&ns);
    cluster
        .apply_in(
            &ns,
            &deployment("web", 1, "busybox:a", "{type: RollingUpdate}", ""),
        )
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    let (scale, path) = cluster.read_scale(&ns, "deployments/web").await;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 1);
    assert_eq!(scale["status"]["replicas"], 1);
    assert_eq!(scale["status"]["selector"], "app=web");
    // Replaced: 2 replicas.
    cluster.replace_scale(&path, &scale, 2);
    let d_api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let replicas = |d: Deployment| d.spec.replicas;
    assert_eq!(replicas(d_api.get("web").await.expect("web")), Some(2));
    // Patched: 4 replicas, which the Deployment brings up.
    cluster.patch_scale(&ns, "deployment/web", 4).await;
    assert_eq!(replicas(d_api.get("web").await.expect("web")), Some(4));
    cluster.rollout_status("deployment/web", &ns).await;
    assert_eq!(active_pods(&cluster.client, &ns).await.len(), 4);
}

/// Upstream's "Deployment, lifecycle": created and seen by a watch, patched (labels,
/// template, replicas) and rolled out, its status replaced and patched with conditions
/// of the test's own, then deleted as a collection by label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_lives_through_patches_status_writes_and_collection_deletion() {
    let cluster = cluster().await;
    let ns = cluster.namespace("lifecycle");
    let _node = cluster.run_node(&ns);
    let watched = cluster.server.watch_output(
        &["get", "deployments", "-n", &ns, "--watch", "-o", "name"],
        || {
            cluster.server.ok_with_input(
                &["apply", "-n", &ns, "-f", "-"],
                &deployment("web", 1, "busybox:a", "{type: RollingUpdate}", ""),
            );
        },
    );
    assert!(watched.contains("deployment.apps/web"), "{watched}");
    cluster.rollout_status("deployment/web", &ns).await;
    cluster
        .kubectl(&[
            "patch",
            "deployment/web",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            "{\"metadata\": {\"labels\": {\"test-deployment\": \"patched\"}}, \"spec\": {\"replicas\": 2, \"template\": {\"spec\": {\"terminationGracePeriodSeconds\": 1, \"containers\": [{\"name\": \"c\", \"image\": \"busybox:b\"}]}}}}",
        ])
        .await;
    cluster.rollout_status("deployment/web", &ns).await;
    let d_api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let d = d_api.get("web").await.expect("web");
    let status = d.status.clone().expect("status");
    assert_eq!(
        (
            status.replicas,
            status.ready_replicas,
            status.updated_replicas
        ),
        (Some(2), Some(2), Some(2))
    );
    // Status written by hand: a condition replaced in, another patched in.
    let mut object = serde_json::to_value(&d).expect("json");
    object["status"]["conditions"]
        .as_array_mut()
        .expect("conditions")
        .push(serde_json::json!({"type": "StatusUpdate", "status": "True", "reason": "E2E", "message": "Set from e2e test"}));
    // Unconditional: the controller may write the status meanwhile.
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    cluster.server.ok_with_input(
        &["replace", "--subresource=status", "-f", "-"],
        &object.to_string(),
    );
    cluster
        .kubectl(&[
            "patch",
            "deployment/web",
            "-n",
            &ns,
            "--subresource=status",
            "--type=json",
            "-p",
            "[{\"op\": \"add\", \"path\": \"/status/conditions/-\", \"value\": {\"type\": \"StatusPatched\", \"status\": \"True\"}}]",
        ])
        .await;
    let conditions: Vec<String> = d_api
        .get_status("web")
        .await
        .expect("status")
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.type_)
        .collect();
    for wanted in ["Available", "Progressing", "StatusUpdate", "StatusPatched"] {
        assert!(conditions.iter().any(|c| c == wanted), "{conditions:?}");
    }
    cluster
        .kubectl(&[
            "delete",
            "deployments",
            "-n",
            &ns,
            "-l",
            "test-deployment=patched",
        ])
        .await;
    eventually("the Deployment gone", WAIT, || async {
        d_api.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
}

/// Upstream's "Deployment Rollover": a Deployment adopts the orphan ReplicaSet its
/// selector matches; updated again while a rollout is stuck, it scales the stuck
/// ReplicaSet away and rolls over to the newest template.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_during_a_stuck_rollout_rolls_over() {
    let cluster = cluster().await;
    let ns = cluster.namespace("rollover");
    let _node = cluster.play_kubelet(&ns, |api, pod| async move {
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        if image != "webserver:404" && pod.metadata.deletion_timestamp.is_none() && !is_ready(&pod)
        {
            let _ = mark_ready(&api, &pod.metadata.name.clone().unwrap_or_default()).await;
        }
    });
    // Labelled like its pods, as upstream's test makes it: a Deployment adopts a
    // ReplicaSet by the ReplicaSet's own labels.
    cluster
        .apply_in(
            &ns,
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rollover-controller, labels: {name: rollover-pod}}\nspec:\n  replicas: 1\n  selector: {matchLabels: {name: rollover-pod}}\n  template:\n    metadata: {labels: {name: rollover-pod}}\n    spec: {containers: [{name: c, image: busybox:a}]}\n",
        )
        .await;
    eventually("the orphan ReplicaSet ready", WAIT, || async {
        (replica_sets(&cluster, &ns).await == [("busybox:a".to_string(), 1, 1)]).then_some(())
    })
    .await;
    cluster
        .apply_in(
            &ns,
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: rollover}\nspec:\n  replicas: 1\n  minReadySeconds: 3\n  selector: {matchLabels: {name: rollover-pod}}\n  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}\n  template:\n    metadata: {labels: {name: rollover-pod}}\n    spec: {containers: [{name: c, image: webserver:404}]}\n",
        )
        .await;
    eventually("the rollout stuck on the bad image", WAIT, || async {
        let sets = replica_sets(&cluster, &ns).await;
        (sets
            == [
                ("busybox:a".to_string(), 1, 1),
                ("webserver:404".to_string(), 1, 0),
            ])
        .then_some(())
    })
    .await;
    let rs_api: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), &ns);
    eventually("the orphan adopted", WAIT, || async {
        let adopted = rs_api.get("rollover-controller").await.ok()?;
        let owner = adopted
            .metadata
            .owner_references?
            .into_iter()
            .find(|r| r.controller == Some(true))?;
        (owner.kind == "Deployment" && owner.name == "rollover").then_some(())
    })
    .await;
    cluster
        .kubectl(&[
            "set",
            "image",
            "deployment/rollover",
            "c=busybox:c",
            "-n",
            &ns,
        ])
        .await;
    cluster.rollout_status("deployment/rollover", &ns).await;
    eventually("rolled over", WAIT, || async {
        let sets = replica_sets(&cluster, &ns).await;
        (sets
            == [
                ("busybox:a".to_string(), 0, 0),
                ("busybox:c".to_string(), 1, 1),
                ("webserver:404".to_string(), 0, 0),
            ])
        .then_some(())
    })
    .await;
}
