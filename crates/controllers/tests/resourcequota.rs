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
