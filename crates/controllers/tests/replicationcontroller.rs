//! ReplicationControllers (the ReplicaSet code behind the older kind) against a real API
//! server and real kubectl, following upstream's `rc.go` conformance tests: lifecycle and
//! scale, adopting matching pods, releasing pods that stop matching.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(30);

fn rc_yaml(ns: &str, name: &str, replicas: i32) -> String {
    // No selector: the API server defaults it (and the RC's labels) from the template.
    format!(
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  template:\n    metadata: {{labels: {{name: {name}}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    )
}

fn owner_uid(pod: &Pod) -> Option<String> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_status_and_scale() {
    let cluster = cluster().await;
    let ns = cluster.namespace("rc");
    let _node = cluster.run_node(&ns);
    let rcs: Api<ReplicationController> = Api::namespaced(cluster.client.clone(), &ns);

    cluster.apply(&rc_yaml(&ns, "web", 2)).await;
    let rc = rcs.get("web").await.expect("rc");
    let spec = rc.spec.clone().expect("spec");
    let template_labels = Some([("name".to_string(), "web".to_string())].into());
    assert_eq!(spec.selector, template_labels, "selector defaulted");
    assert_eq!(rc.metadata.labels, template_labels, "labels defaulted");

    let uid = rc.metadata.uid.clone();
    let pods = eventually("2 pods owned by the RC", WAIT, || async {
        let pods = active_pods(&cluster.client, &ns).await;
        (pods.len() == 2 && pods.iter().all(|p| owner_uid(p) == uid)).then_some(pods)
    })
    .await;
    for pod in &pods {
        let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.api_version.as_str()),
            ("ReplicationController", "v1")
        );
        assert!(pod
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .starts_with("web-"));
    }

    // Status, as upstream writes it for RCs.
    eventually("2 available replicas", WAIT, || async {
        let status = rcs.get_status("web").await.ok()?.status?;
        (status.replicas == 2
            && status.ready_replicas == Some(2)
            && status.available_replicas == Some(2)
            && status.fully_labeled_replicas == Some(2)
            && status.observed_generation == rc.metadata.generation)
            .then_some(())
    })
    .await;
    let wide = cluster.kubectl(&["get", "rc", "web", "-n", &ns]).await;
    assert!(
        wide.lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>()[1..4] == ["2", "2", "2"]),
        "{wide}"
    );

    // The scale subresource, through kubectl and directly.
    cluster
        .kubectl(&["scale", "rc", "web", "--replicas=3", "-n", &ns])
        .await;
    // Settled (status written for all 3), so the scale read below is not overtaken by
    // a status write and its resourceVersion stays current.
    eventually("3 available replicas", WAIT, || async {
        let status = rcs.get_status("web").await.ok()?.status?;
        (status.available_replicas == Some(3)).then_some(())
    })
    .await;
    let mut scale = rcs.get_scale("web").await.expect("scale");
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(3));
    scale.spec.as_mut().expect("spec").replicas = Some(1);
    rcs.replace_scale("web", &PostParams::default(), &scale)
        .await
        .expect("update scale");
    eventually("1 pod", WAIT, || async {
        (active_pods(&cluster.client, &ns).await.len() == 1).then_some(())
    })
    .await;
    let events = cluster
        .kubectl(&["events", "-n", &ns, "--for", "rc/web"])
        .await;
    assert!(
        events.contains("SuccessfulCreate") && events.contains("SuccessfulDelete"),
        "{events}"
    );

    // Foreground deletion (upstream's "delete RC after owned pods"): kubectl waits for the
    // RC to be gone, and the garbage collector removes it only after its pods.
    cluster
        .kubectl(&["delete", "rc", "web", "-n", &ns, "--cascade=foreground"])
        .await;
    assert!(rcs.get_opt("web").await.expect("get").is_none());
    assert!(active_pods(&cluster.client, &ns).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_matching_pods_and_releases_pods_that_stop_matching() {
    let cluster = cluster().await;
    let ns = cluster.namespace("rc-adopt");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let rcs: Api<ReplicationController> = Api::namespaced(cluster.client.clone(), &ns);

    // An orphan that the RC's selector matches is adopted, not duplicated.
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod-adoption, namespace: {ns}, labels: {{name: pod-adoption}}}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n"
        ))
        .await;
    cluster.apply(&rc_yaml(&ns, "pod-adoption", 1)).await;
    let uid = rcs.get("pod-adoption").await.expect("rc").metadata.uid;
    eventually("the orphan adopted", WAIT, || async {
        let pod = pods.get("pod-adoption").await.ok()?;
        (owner_uid(&pod) == uid).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        active_pods(&cluster.client, &ns).await.len(),
        1,
        "no extra pod"
    );

    // A pod relabelled out of the selector is released and replaced.
    pods.patch(
        "pod-adoption",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"labels": {"name": "not-matching"}}})),
    )
    .await
    .expect("relabel");
    eventually("the pod released", WAIT, || async {
        let pod = pods.get("pod-adoption").await.ok()?;
        owner_uid(&pod).is_none().then_some(())
    })
    .await;
    eventually("a replacement", WAIT, || async {
        let active = active_pods(&cluster.client, &ns).await;
        (active.len() == 2 && active.iter().filter(|p| owner_uid(p) == uid).count() == 1)
            .then_some(())
    })
    .await;
}

/// Upstream's "lifecycle of a ReplicationController", step by step on a simulated node:
/// created and watched, its replica ready, labels patched, status patched, the scale
/// patched to two ready replicas, status replaced, listed across namespaces, deleted as a
/// collection; the watch sees ADDED, the modifications and DELETED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_lifecycle_steps() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{DeleteParams, ListParams, WatchEvent, WatchParams};
    let cluster = cluster().await;
    let ns = cluster.namespace("rclife");
    let _node = cluster.run_node(&ns);
    let rcs: Api<ReplicationController> = Api::namespaced(cluster.client.clone(), &ns);
    let selector = "test-rc-static=true";
    let listed = rcs
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list");
    let rv = listed.metadata.resource_version.clone().unwrap_or_default();
    let mut watch = rcs
        .watch(&WatchParams::default().labels(selector).timeout(120), &rv)
        .await
        .expect("watch")
        .boxed();
    let rc: ReplicationController = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "rc-test", "labels": {"test-rc-static": "true"}},
        "spec": {"replicas": 1, "selector": {"test-rc-static": "true"},
            "template": {"metadata": {"name": "rc-test", "labels": {"test-rc-static": "true"}},
                "spec": {"containers": [{"name": "rc-test", "image": "busybox"}]}}}
    }))
    .expect("rc");
    rcs.create(&PostParams::default(), &rc)
        .await
        .expect("create");

    // Events until one of `kind` for which `done` holds; returns the kinds seen.
    let mut seen: Vec<&'static str> = Vec::new();
    async fn until(
        watch: &mut futures::stream::BoxStream<
            'static,
            kube::Result<WatchEvent<ReplicationController>>,
        >,
        seen: &mut Vec<&'static str>,
        done: impl Fn(&str, &ReplicationController) -> bool,
    ) {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(event) = watch.try_next().await.expect("watch stream") {
                let (kind, rc) = match event {
                    WatchEvent::Added(rc) => ("ADDED", rc),
                    WatchEvent::Modified(rc) => ("MODIFIED", rc),
                    WatchEvent::Deleted(rc) => ("DELETED", rc),
                    _ => continue,
                };
                seen.push(kind);
                if done(kind, &rc) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "the awaited event; saw {seen:?}");
    }
    let status_is = |replicas: i32, ready: i32| {
        move |_: &str, rc: &ReplicationController| {
            rc.status
                .as_ref()
                .is_some_and(|s| s.replicas == replicas && s.ready_replicas == Some(ready))
        }
    };
    until(&mut watch, &mut seen, |kind, _| kind == "ADDED").await;
    until(&mut watch, &mut seen, status_is(1, 1)).await;

    let patched = rcs
        .patch(
            "rc-test",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({"metadata": {"labels": {"test-rc": "patched"}}})),
        )
        .await
        .expect("patch labels");
    assert_eq!(
        patched
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("test-rc")),
        Some(&"patched".to_string())
    );
    let status = rcs
        .patch_status(
            "rc-test",
            &PatchParams::default(),
            &Patch::Strategic(
                serde_json::json!({"status": {"readyReplicas": 0, "availableReplicas": 0}}),
            ),
        )
        .await
        .expect("patch status");
    assert_eq!(status.status.and_then(|s| s.ready_replicas).unwrap_or(0), 0);
    let status = rcs.get_status("rc-test").await.expect("status");
    assert_eq!(status.status.map(|s| s.replicas), Some(1));

    rcs.patch_scale(
        "rc-test",
        &PatchParams::default(),
        &Patch::Strategic(serde_json::json!({"spec": {"replicas": 2}})),
    )
    .await
    .expect("patch scale");
    until(&mut watch, &mut seen, status_is(2, 2)).await;
    let mut rc = rcs.get("rc-test").await.expect("get");
    assert_eq!(
        rc.metadata.labels.as_ref().and_then(|l| l.get("test-rc")),
        Some(&"patched".to_string()),
        "the earlier label patch kept"
    );
    if let Some(status) = rc.status.as_mut() {
        status.available_replicas = Some(1);
        status.ready_replicas = Some(1);
    }
    // The controller may write the status meanwhile: a conflict is tried again.
    for attempt in 0..5 {
        match rcs
            .replace_status("rc-test", &PostParams::default(), &rc)
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 4 => {
                rc = rcs.get("rc-test").await.expect("get");
                if let Some(status) = rc.status.as_mut() {
                    status.available_replicas = Some(1);
                    status.ready_replicas = Some(1);
                }
            }
            Err(e) => panic!("status update: {e}"),
        }
    }
    let everywhere: Api<ReplicationController> = Api::all(cluster.client.clone());
    let found = everywhere
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list everywhere");
    assert!(found.items.iter().any(|rc| {
        rc.metadata.namespace.as_deref() == Some(ns.as_str())
            && rc.metadata.labels.as_ref().and_then(|l| l.get("test-rc"))
                == Some(&"patched".to_string())
    }));
    rcs.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(selector),
    )
    .await
    .expect("delete collection");
    until(&mut watch, &mut seen, |kind, _| kind == "DELETED").await;
    assert_eq!(seen.first(), Some(&"ADDED"));
    assert!(
        seen[1..seen.len() - 1].iter().all(|k| *k == "MODIFIED"),
        "{seen:?}"
    );
}

/// Upstream's "ReplicationController, surface failure condition (quota)": pods refused
/// by a ResourceQuota show as a `ReplicaFailure` condition (`FailedCreate`), which goes
/// once the controller asks for no more than the quota allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_failure_surfaces_as_a_condition() {
    let cluster = cluster().await;
    let ns = cluster.namespace("rc-quota");
    let _node = cluster.run_node(&ns);
    let rcs: Api<ReplicationController> = Api::namespaced(cluster.client.clone(), &ns);
    cluster
        .kubectl(&[
            "create",
            "quota",
            "condition-test",
            "--hard=pods=2",
            "-n",
            &ns,
        ])
        .await;
    eventually("the quota counted", WAIT, || async {
        let out = cluster
            .kubectl(&[
                "get",
                "quota",
                "condition-test",
                "-n",
                &ns,
                "-o",
                "jsonpath={.status.hard.pods}",
            ])
            .await;
        (out == "2").then_some(())
    })
    .await;
    cluster.apply(&rc_yaml(&ns, "condition-test", 3)).await;
    let failure = |rc: &ReplicationController| {
        rc.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "ReplicaFailure")
            .cloned()
    };
    let condition = eventually("ReplicaFailure", WAIT, || async {
        failure(&rcs.get("condition-test").await.ok()?)
    })
    .await;
    assert_eq!(condition.status, "True");
    assert_eq!(condition.reason.as_deref(), Some("FailedCreate"));
    assert!(
        condition
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("exceeded quota: condition-test"),
        "{condition:?}"
    );
    cluster
        .kubectl(&["scale", "rc", "condition-test", "--replicas=2", "-n", &ns])
        .await;
    eventually("the condition gone", WAIT, || async {
        let rc = rcs.get("condition-test").await.ok()?;
        failure(&rc).is_none().then_some(())
    })
    .await;
}
