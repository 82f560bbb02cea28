//! ResourceQuota: the API server's admission plugin charging creates and refusing what
//! would exceed `spec.hard`, and the quota controller recounting `status.used` (and so
//! giving back what deleted objects held), with real kubectl. Follows upstream's
//! `resource_quota.go` conformance tests (object count quotas, status calculated).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::api::{Api, DeleteParams, PostParams};

const WAIT: Duration = Duration::from_secs(30);

async fn used(quotas: &Api<ResourceQuota>, name: &str) -> Option<BTreeMap<String, String>> {
    let status = quotas.get_status(name).await.ok()?.status?;
    Some(status.used?.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Waits for `status.used` to be `expected`, written as `name=quantity,…`.
async fn wait_used(quotas: &Api<ResourceQuota>, name: &str, expected: &str) {
    let expected: BTreeMap<String, String> = expected
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    eventually(&format!("quota usage {expected:?}"), WAIT, || async {
        (used(quotas, name).await? == expected).then_some(())
    })
    .await;
}

fn pod(name: &str, cpu: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                 "resources": {"requests": {"cpu": cpu}}}]}
    }))
    .expect("pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_count_refuse_and_give_back() {
    let cluster = cluster().await;
    let ns = cluster.namespace("quota");
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    // Wait for the namespace's own ConfigMap, which the quota counts too.
    eventually("kube-root-ca.crt", WAIT, || async {
        cluster
            .server
            .kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", &ns])
            .status
            .success()
            .then_some(())
    })
    .await;

    // kubectl's typed create: a protobuf body.
    cluster
        .kubectl(&[
            "create",
            "quota",
            "test-quota",
            "-n",
            &ns,
            "--hard=pods=2,configmaps=2,requests.cpu=1,count/secrets=1",
        ])
        .await;
    wait_used(
        &quotas,
        "test-quota",
        "configmaps=1,count/secrets=0,pods=0,requests.cpu=0",
    )
    .await;
    let hard = quotas
        .get_status("test-quota")
        .await
        .expect("quota")
        .status
        .and_then(|s| s.hard);
    assert_eq!(hard.map(|h| h.len()), Some(4));

    // Object counts: the second ConfigMap fits, the third is refused with upstream's text.
    cluster
        .kubectl(&["create", "configmap", "one", "-n", &ns])
        .await;
    wait_used(
        &quotas,
        "test-quota",
        "configmaps=2,count/secrets=0,pods=0,requests.cpu=0",
    )
    .await;
    let refused = cluster
        .server
        .kubectl(&["create", "configmap", "two", "-n", &ns]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "configmaps \"two\" is forbidden: exceeded quota: test-quota, requested: configmaps=1, used: configmaps=2, limited: configmaps=2"
        ),
        "{stderr}"
    );

    // Compute: 600m fits in 1 CPU once, not twice; deleting the first gives it back.
    pods.create(&PostParams::default(), &pod("first", "600m"))
        .await
        .expect("first pod");
    let second = pods
        .create(&PostParams::default(), &pod("second", "600m"))
        .await;
    match second {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                status.message,
                "pods \"second\" is forbidden: exceeded quota: test-quota, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
            );
        }
        other => panic!("the second pod should be refused, got {other:?}"),
    }
    pods.delete("first", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    wait_used(
        &quotas,
        "test-quota",
        "configmaps=2,count/secrets=0,pods=0,requests.cpu=0",
    )
    .await;
    pods.create(&PostParams::default(), &pod("second", "600m"))
        .await
        .expect("second pod once the first is gone");

    // A deleted ConfigMap is given back by the recount.
    cluster
        .kubectl(&["delete", "configmap", "one", "-n", &ns])
        .await;
    wait_used(
        &quotas,
        "test-quota",
        "configmaps=1,count/secrets=0,pods=1,requests.cpu=600m",
    )
    .await;
    let described = cluster
        .kubectl(&["describe", "quota", "test-quota", "-n", &ns])
        .await;
    assert!(
        described.contains("requests.cpu") && described.contains("600m"),
        "{described}"
    );

    // An in-place resize is charged what it adds: 600m more does not fit, 300m does.
    let resize = |cpu: &str| {
        let body = format!(
            r#"{{"spec":{{"containers":[{{"name":"c","resources":{{"requests":{{"cpu":"{cpu}"}}}}}}]}}}}"#
        );
        let args = [
            "patch",
            "pod",
            "second",
            "-n",
            &ns,
            "--subresource",
            "resize",
            "-p",
            &body,
        ];
        cluster.server.kubectl(&args)
    };
    let refused = resize("1200m");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(
            "pods \"second\" is forbidden: exceeded quota: test-quota, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"
        ),
        "{stderr}"
    );
    let resized = resize("900m");
    assert!(
        resized.status.success(),
        "{}",
        String::from_utf8_lossy(&resized.stderr)
    );
    wait_used(
        &quotas,
        "test-quota",
        "configmaps=1,count/secrets=0,pods=1,requests.cpu=900m",
    )
    .await;
}

/// Upstream's scope tests: a quota with scopes counts only the pods they select.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_quotas_count_only_their_pods() {
    let cluster = cluster().await;
    let ns = cluster.namespace("quota-scopes");
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    for (name, scopes) in [
        ("best-effort", "[BestEffort]"),
        ("terminating", "[Terminating, NotBestEffort]"),
    ] {
        cluster
            .apply(&format!(
                "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hard: {{pods: '1'}}\n  scopes: {scopes}\n"
            ))
            .await;
        wait_used(&quotas, name, "pods=0").await;
    }
    let plain = |name: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        }))
        .expect("pod")
    };
    // Best-effort pods: one fits, the second is refused by the BestEffort quota.
    pods.create(&PostParams::default(), &plain("free-1"))
        .await
        .expect("first best-effort pod");
    let refused = pods.create(&PostParams::default(), &plain("free-2")).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("exceeded quota: best-effort")),
        "{refused:?}"
    );
    // Pods with requests are not best-effort: without a deadline no quota counts them.
    pods.create(&PostParams::default(), &pod("steady-1", "100m"))
        .await
        .expect("not counted");
    pods.create(&PostParams::default(), &pod("steady-2", "100m"))
        .await
        .expect("not counted either");
    // With a deadline they are Terminating: the second is refused.
    let with_deadline = |name: &str| {
        let mut pod = pod(name, "100m");
        pod.spec.as_mut().expect("spec").active_deadline_seconds = Some(600);
        pod
    };
    pods.create(&PostParams::default(), &with_deadline("batch-1"))
        .await
        .expect("first terminating pod");
    let refused = pods
        .create(&PostParams::default(), &with_deadline("batch-2"))
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("exceeded quota: terminating")),
        "{refused:?}"
    );
    wait_used(&quotas, "best-effort", "pods=1").await;
    wait_used(&quotas, "terminating", "pods=1").await;
}

/// Upstream's "apply changes to a resourcequota status": `status.hard` written by a PUT
/// and by patches of `status` (the spec untouched), then reset to `spec.hard` by the
/// quota controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_are_applied_then_reset() {
    use kube::api::{Patch, PatchParams};
    let cluster = cluster().await;
    let ns = cluster.namespace("quotastatus");
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client.clone(), &ns);
    let hard = |q: &ResourceQuota, which: &str| -> BTreeMap<String, String> {
        let list = match which {
            "spec" => q.spec.as_ref().and_then(|s| s.hard.clone()),
            _ => q.status.as_ref().and_then(|s| s.hard.clone()),
        };
        list.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect()
    };
    let limits = |cpu: &str, memory: &str| -> BTreeMap<String, String> {
        [("cpu", cpu), ("memory", memory)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "e2e-rq-status", "labels": {"e2e-rq-label": "e2e-rq-status"}},
        "spec": {"hard": {"cpu": "500m", "memory": "500Mi"}}
    }))
    .expect("quota");
    let created = quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("create quota");
    assert_eq!(hard(&created, "spec"), limits("500m", "500Mi"));

    // The status replaced with the spec's hard limits (the controller may write first:
    // a conflict is tried again, as upstream's test does).
    let mut updated = None;
    for _ in 0..5 {
        let mut current = quotas.get("e2e-rq-status").await.expect("get quota");
        let spec_hard = current.spec.as_ref().and_then(|s| s.hard.clone());
        current.status.get_or_insert_with(Default::default).hard = spec_hard;
        match quotas
            .replace_status("e2e-rq-status", &PostParams::default(), &current)
            .await
        {
            Ok(written) => {
                updated = Some(written);
                break;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => panic!("status update: {e}"),
        }
    }
    let updated = updated.expect("the status updated within five tries");
    assert_eq!(hard(&updated, "status"), limits("500m", "500Mi"));

    // The spec's limits patched, then the status's to match.
    let patched = quotas
        .patch(
            "e2e-rq-status",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({"spec": {"hard": {"cpu": "1", "memory": "1Gi"}}})),
        )
        .await
        .expect("patch spec");
    assert_eq!(hard(&patched, "spec"), limits("1", "1Gi"));
    quotas
        .patch_status(
            "e2e-rq-status",
            &PatchParams::default(),
            &Patch::Strategic(
                serde_json::json!({"status": {"hard": {"cpu": "1", "memory": "1Gi"}}}),
            ),
        )
        .await
        .expect("patch status");
    let status = quotas
        .get_status("e2e-rq-status")
        .await
        .expect("get status");
    assert_eq!(hard(&status, "status"), limits("1", "1Gi"));

    // Patched away from the spec: answered as written, the spec unchanged, then reset
    // by the controller.
    let repatched = quotas
        .patch_status(
            "e2e-rq-status",
            &PatchParams::default(),
            &Patch::Strategic(
                serde_json::json!({"status": {"hard": {"cpu": "2", "memory": "2Gi"}}}),
            ),
        )
        .await
        .expect("repatch status");
    assert_eq!(hard(&repatched, "status"), limits("2", "2Gi"));
    assert_eq!(hard(&repatched, "spec"), limits("1", "1Gi"));
    eventually("the status reset to the spec", WAIT, || async {
        let current = quotas.get("e2e-rq-status").await.ok()?;
        (hard(&current, "status") == limits("1", "1Gi")).then_some(())
    })
    .await;
}

/// Upstream's "status promptly calculated", with upstream's test quota: every hard
/// resource it names (services by type, storage by class, ephemeral storage, a counted
/// discovered resource) gets a usage, and the quota counts itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_promptly_calculated_for_every_resource() {
    let cluster = cluster().await;
    let ns = cluster.namespace("quotaprompt");
    let quotas: Api<ResourceQuota> = Api::namespaced(cluster.client.clone(), &ns);
    let hard = serde_json::json!({
        "pods": "5", "services": "10", "services.nodeports": "1", "services.loadbalancers": "1",
        "replicationcontrollers": "10", "resourcequotas": "1", "cpu": "1", "memory": "500Mi",
        "configmaps": "2", "secrets": "10", "persistentvolumeclaims": "10",
        "requests.storage": "10Gi", "ephemeral-storage": "50Gi",
        "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "10",
        "gold.storageclass.storage.k8s.io/requests.storage": "10Gi",
        "count/replicasets.apps": "5",
    });
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "test-quota"}, "spec": {"hard": hard}
    }))
    .expect("quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("create quota");
    let used = eventually("the quota's status", WAIT, || async {
        let used = used(&quotas, "test-quota").await?;
        (used.get("resourcequotas").map(String::as_str) == Some("1")).then_some(used)
    })
    .await;
    for name in hard.as_object().into_iter().flatten().map(|(k, _)| k) {
        assert!(used.contains_key(name), "{name} not in {used:?}");
    }
    assert_eq!(used.get("pods").map(String::as_str), Some("0"));
    assert_eq!(
        used.get("count/replicasets.apps").map(String::as_str),
        Some("0")
    );
}
