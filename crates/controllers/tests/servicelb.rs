//! The service load-balancer controller against a real API server, read back with real
//! kubectl: a pool of three addresses for four LoadBalancer Services (a requested
//! `loadBalancerIP` and three at once), the fourth warned and pending until an address is
//! freed by a deletion, ingress cleared when a Service stops being a LoadBalancer, and a
//! Service naming a `loadBalancerClass` left alone.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const POOL: [&str; 3] = ["10.77.0.1", "10.77.0.2", "10.77.0.3"];

fn service_yaml(ns: &str, name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  type: LoadBalancer\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n{extra_spec}---\n"
    )
}

/// Each Service's `status.loadBalancer.ingress` as kubectl shows it: name → [(ip, ipMode)].
async fn ingress(cluster: &Cluster, ns: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let out = cluster
        .kubectl(&["get", "services", "-n", ns, "-o", "json"])
        .await;
    let list: Value = serde_json::from_str(&out).expect("service list");
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let ingress = s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|i| {
                    (
                        i["ip"].as_str().unwrap_or_default().to_string(),
                        i["ipMode"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            (
                s["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ingress,
            )
        })
        .collect()
}

/// The one address each named Service shows, once all of them show one.
async fn addresses_of(cluster: &Cluster, ns: &str, names: &[&str]) -> BTreeMap<String, String> {
    eventually("load-balancer addresses", WAIT, || async {
        let all = ingress(cluster, ns).await;
        names
            .iter()
            .map(|name| match all.get(*name).map(Vec::as_slice) {
                Some([(ip, mode)]) if mode == "VIP" => Some((name.to_string(), ip.clone())),
                _ => None,
            })
            .collect::<Option<BTreeMap<_, _>>>()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn pool_addresses_for_load_balancer_services() {
    let cluster = cluster_with(skiff_controllers::ControllerManagerArgs {
        service_lb_pool: "10.77.0.1-10.77.0.2,10.77.0.3/32".parse().expect("pool"),
        ..Default::default()
    })
    .await;
    let ns = cluster.namespace("lb");

    // One asks for the pool's last address; one names another implementation's class.
    cluster
        .apply(&format!(
            "{}{}",
            service_yaml(&ns, "asked", "  loadBalancerIP: 10.77.0.3\n"),
            service_yaml(&ns, "classy", "  loadBalancerClass: example.com/other\n"),
        ))
        .await;
    let asked = addresses_of(&cluster, &ns, &["asked"]).await;
    assert_eq!(asked["asked"], "10.77.0.3");

    // Three at once for the two addresses left: two get one each, distinct; the third
    // is warned and stays pending.
    let names = ["a", "b", "c"];
    cluster
        .apply(
            &names
                .iter()
                .map(|n| service_yaml(&ns, n, ""))
                .collect::<String>(),
        )
        .await;
    let pending = eventually("two of three to get addresses", WAIT, || async {
        let all = ingress(&cluster, &ns).await;
        let waiting: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| all.get(*n).is_none_or(Vec::is_empty))
            .collect();
        (waiting.len() == 1).then(|| waiting[0].to_string())
    })
    .await;
    let served: Vec<&str> = names.iter().copied().filter(|n| *n != pending).collect();
    let before = addresses_of(&cluster, &ns, &served).await;
    let mut used: BTreeSet<String> = before.values().cloned().collect();
    used.insert(asked["asked"].clone());
    assert_eq!(used, POOL.iter().map(|s| s.to_string()).collect());
    let warning = eventually("the AllocationFailed warning", WAIT, || async {
        let out = cluster
            .kubectl(&["get", "events", "-n", &ns, "-o", "json"])
            .await;
        let events: Value = serde_json::from_str(&out).ok()?;
        events["items"]
            .as_array()?
            .iter()
            .find(|e| {
                e["reason"] == "AllocationFailed"
                    && e["type"] == "Warning"
                    && e["involvedObject"]["name"] == pending.as_str()
            })
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
    })
    .await;
    assert!(warning.contains("no address left"), "{warning}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(ingress(&cluster, &ns).await[&pending].is_empty());

    // A deletion frees an address; the pending Service gets it.
    let gone = served[0];
    cluster
        .kubectl(&["delete", "service", gone, "-n", &ns])
        .await;
    let now = addresses_of(&cluster, &ns, &[&pending]).await;
    assert_eq!(now[&pending], before[gone]);

    // No longer a LoadBalancer: the ingress is cleared and the address freed for the next.
    cluster
        .kubectl(&[
            "patch",
            "service",
            "asked",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec":{"type":"ClusterIP","loadBalancerIP":null}}"#,
        ])
        .await;
    eventually("asked's ingress cleared", WAIT, || async {
        ingress(&cluster, &ns).await["asked"]
            .is_empty()
            .then_some(())
    })
    .await;
    cluster.apply(&service_yaml(&ns, "late", "")).await;
    let late = addresses_of(&cluster, &ns, &["late"]).await;
    assert_eq!(late["late"], "10.77.0.3");

    // Addresses held were kept throughout; the class's Service was never touched.
    let all = ingress(&cluster, &ns).await;
    assert_eq!(all[served[1]], [(before[served[1]].clone(), "VIP".into())]);
    assert!(all["classy"].is_empty(), "{all:?}");
}
