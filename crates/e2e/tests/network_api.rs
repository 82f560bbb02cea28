//! The networking APIs as upstream's API conformance tests drive them, with real kubectl
//! against a real API server: Services' status subresource and collection deletes,
//! Endpoints and EndpointSlices through their whole lifecycle, Ingresses and
//! IngressClasses (`service.go`, `endpoints.go`, `endpointslice.go`, `ingress.go`,
//! `ingressclass.go` in upstream's `test/e2e/network`).

use serde_json::Value;
use skiff_e2e::shared;

fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

#[test]
fn service_status_lifecycle_and_collection_delete() {
    let s = shared();
    let ns = s.namespace("svcapi");
    for name in ["one", "two"] {
        s.ok_with_input(
            &["apply", "-f", "-"],
            &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}, labels: {{test: svc}}}}\nspec:\n  ports: [{{port: 80}}]\n"),
        );
    }
    // Status through its subresource: a load balancer ingress and a condition.
    let status = r#"{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.1"}]},"conditions":[{"type":"StatusUpdate","status":"True","reason":"E2E","message":"Set from e2e test","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    s.ok(&[
        "patch",
        "service",
        "one",
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    let one = s.json(&["service", "one", "-n", &ns]);
    assert_eq!(
        one["status"]["loadBalancer"]["ingress"][0]["ip"],
        "203.0.113.1"
    );
    assert_eq!(one["status"]["conditions"][0]["reason"], "E2E");
    // A status write leaves the spec alone, a spec write the status.
    s.ok(&[
        "patch", "service", "one", "-n", &ns, "--subresource=status", "--type=merge", "-p",
        r#"{"spec":{"ports":[{"port":81}]},"status":{"conditions":[{"type":"StatusUpdate","status":"False","reason":"E2E","message":"Set again","lastTransitionTime":"2026-01-01T00:00:01Z"}]}}"#,
    ]);
    let one = s.json(&["service", "one", "-n", &ns]);
    assert_eq!(one["spec"]["ports"][0]["port"], 80);
    assert_eq!(one["status"]["conditions"][0]["status"], "False");
    s.ok(&[
        "patch",
        "service",
        "one",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"patched":"yes"}},"status":{"loadBalancer":{}}}"#,
    ]);
    let one = s.json(&["service", "one", "-n", &ns]);
    assert_eq!(one["metadata"]["labels"]["patched"], "yes");
    assert_eq!(
        one["status"]["loadBalancer"]["ingress"][0]["ip"],
        "203.0.113.1"
    );

    // Delete a collection by label: both go, the namespace's others stay.
    s.ok_with_input(
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: other, namespace: {ns}}}\nspec:\n  ports: [{{port: 80}}]\n"),
    );
    s.ok(&["delete", "services", "-n", &ns, "-l", "test=svc"]);
    let left = s.json(&["services", "-n", &ns]);
    assert_eq!(names(&left), ["other"]);
}

#[test]
fn endpoints_and_endpoint_slices_lifecycle() {
    let s = shared();
    let ns = s.namespace("epapi");
    s.ok_with_input(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: manual, namespace: {ns}, labels: {{test: ep}}}}\nsubsets: [{{addresses: [{{ip: 10.0.0.1}}], ports: [{{name: http, port: 80}}]}}]\n"
        ),
    );
    // Listed across namespaces by label, patched, then deleted as a collection.
    let all = s.json(&["endpoints", "-A", "-l", "test=ep"]);
    assert_eq!(names(&all), ["manual"]);
    s.ok(&[
        "patch", "endpoints", "manual", "-n", &ns, "--type=merge", "-p",
        r#"{"subsets":[{"addresses":[{"ip":"10.0.0.1"},{"ip":"10.0.0.2"}],"ports":[{"name":"http","port":80}]}]}"#,
    ]);
    let patched = s.json(&["endpoints", "manual", "-n", &ns]);
    assert_eq!(patched["subsets"][0]["addresses"][1]["ip"], "10.0.0.2");
    s.ok(&["delete", "endpoints", "-n", &ns, "-l", "test=ep"]);
    assert!(names(&s.json(&["endpoints", "-n", &ns])).is_empty());

    // EndpointSlices: create, get, list, patch, replace, delete and delete a collection.
    for name in ["slice-a", "slice-b"] {
        s.ok_with_input(
            &["create", "-f", "-"],
            &format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: {ns}, labels: {{kubernetes.io/service-name: example, test: slice}}}}\naddressType: IPv4\nendpoints: [{{addresses: [10.0.0.5], conditions: {{ready: true}}}}]\nports: [{{name: http, port: 80, protocol: TCP}}]\n"
            ),
        );
    }
    let a = s.json(&["endpointslice", "slice-a", "-n", &ns]);
    assert_eq!(a["endpoints"][0]["addresses"][0], "10.0.0.5");
    assert_eq!(a["endpoints"][0]["conditions"]["ready"], true);
    let listed = s.json(&["endpointslices", "-A", "-l", "test=slice"]);
    assert_eq!(names(&listed), ["slice-a", "slice-b"]);
    s.ok(&[
        "patch",
        "endpointslice",
        "slice-a",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"annotations":{"patched":"true"}}}"#,
    ]);
    let mut a = s.json(&["endpointslice", "slice-a", "-n", &ns]);
    assert_eq!(a["metadata"]["annotations"]["patched"], "true");
    a["endpoints"][0]["addresses"][0] = Value::from("10.0.0.6");
    s.ok_with_input(&["replace", "-f", "-"], &a.to_string());
    let a = s.json(&["endpointslice", "slice-a", "-n", &ns]);
    assert_eq!(a["endpoints"][0]["addresses"][0], "10.0.0.6");
    // An address type cannot change.
    let err = s.fails(&[
        "patch",
        "endpointslice",
        "slice-a",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"addressType":"IPv6"}"#,
    ]);
    assert!(
        err.contains("addressType") || err.contains("immutable"),
        "{err}"
    );
    s.ok(&["delete", "endpointslice", "slice-a", "-n", &ns]);
    s.ok(&["delete", "endpointslices", "-n", &ns, "-l", "test=slice"]);
    assert!(names(&s.json(&["endpointslices", "-n", &ns])).is_empty());
}

#[test]
fn ingress_and_ingress_class_api() {
    let s = shared();
    let ns = s.namespace("ingapi");
    let class = format!("{ns}-class");
    s.ok_with_input(
        &["create", "-f", "-"],
        &format!("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: {class}, labels: {{test: {ns}}}}}\nspec: {{controller: example.com/ingress}}\n"),
    );
    let got = s.json(&["ingressclass", &class]);
    assert_eq!(got["spec"]["controller"], "example.com/ingress");
    for name in ["web", "api"] {
        s.ok_with_input(
            &["create", "-f", "-"],
            &format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {ns}, labels: {{test: ing}}}}\nspec:\n  ingressClassName: {class}\n  rules:\n  - host: {name}.example.com\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend: {{service: {{name: {name}, port: {{number: 80}}}}}}\n"
            ),
        );
    }
    let table = s.ok(&["get", "ingress", "-n", &ns]);
    assert!(
        table.contains("web.example.com") && table.contains(&class),
        "{table}"
    );
    // Status through its subresource.
    s.ok(&[
        "patch",
        "ingress",
        "web",
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.7"}]}}}"#,
    ]);
    let web = s.json(&["ingress", "web", "-n", &ns]);
    assert_eq!(
        web["status"]["loadBalancer"]["ingress"][0]["ip"],
        "203.0.113.7"
    );
    let generation = web["metadata"]["generation"].as_i64().unwrap_or_default();
    s.ok(&[
        "patch", "ingress", "web", "-n", &ns, "--type=merge", "-p",
        r#"{"spec":{"rules":[{"host":"www.example.com","http":{"paths":[{"path":"/","pathType":"Prefix","backend":{"service":{"name":"web","port":{"number":8080}}}}]}}]}}"#,
    ]);
    let web = s.json(&["ingress", "web", "-n", &ns]);
    assert_eq!(web["spec"]["rules"][0]["host"], "www.example.com");
    assert_eq!(web["metadata"]["generation"].as_i64(), Some(generation + 1));
    s.ok(&["delete", "ingresses", "-n", &ns, "-l", "test=ing"]);
    assert!(names(&s.json(&["ingresses", "-n", &ns])).is_empty());
    s.ok(&["delete", "ingressclasses", "-l", &format!("test={ns}")]);
    assert!(s
        .fails(&["get", "ingressclass", &class])
        .contains("not found"));
}

/// Upstream's generic resource test for `IPAddress` and `ServiceCIDR` (`service_cidrs.go`).
#[tokio::test]
async fn ip_address_and_service_cidr_api() {
    use skiff_e2e::api::{Case, Resource};
    let s = shared();
    let ns = s.namespace("ipapi");
    let client = s.client().await;
    let relabel = |object: &mut Value| {
        object["metadata"]["labels"]["e2e-updated"] = Value::from("true");
    };
    let patch = serde_json::json!({"metadata": {"labels": {"e2e-patched": "true"}}});
    let json_patch =
        serde_json::json!([{"op": "add", "path": "/metadata/labels/e2e-patched", "value": "true"}]);
    // An address from the documentation range: no Service of the server takes it. Its
    // name is the address, so the generic test's name is set aside for a fixed one.
    let addresses = Resource::new(
        &client,
        "networking.k8s.io/v1",
        "IPAddress",
        "ipaddresses",
        None,
    );
    let address = addresses
        .create(serde_json::json!({"metadata": {"name": "192.0.2.77", "labels": {"e2e": ns}},
            "spec": {"parentRef": {"group": "", "resource": "services", "name": "svc", "namespace": ns}}}))
        .await;
    assert_eq!(address["spec"]["parentRef"]["name"], "svc");
    let patched = addresses.merge("192.0.2.77", patch.clone()).await;
    assert_eq!(patched["metadata"]["labels"]["e2e-patched"], "true");
    let mut current = addresses.get("192.0.2.77").await;
    relabel(&mut current);
    addresses.replace(current).await;
    assert_eq!(addresses.list(&format!("e2e={ns}")).await.0.len(), 1);
    addresses.delete_collection(&format!("e2e={ns}")).await;
    assert!(addresses.is_gone("192.0.2.77").await);

    let cidrs = Resource::new(
        &client,
        "networking.k8s.io/v1",
        "ServiceCIDR",
        "servicecidrs",
        None,
    );
    cidrs
        .crud(
            &ns,
            Case {
                initial: serde_json::json!({"spec": {"cidrs": ["198.51.100.0/24"]}}),
                update: relabel,
                status: Some(
                    serde_json::json!({"conditions": [{"type": "Ready", "status": "True",
                    "reason": "E2E", "message": "Set from an e2e test",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
                ),
                patch,
                json_patch,
            },
        )
        .await;
}
