//! Every object the server returns is valid against upstream's v1.37 JSON schemas: one
//! object of each kind a user creates (`fixtures/every_kind.yaml`), and what the cluster
//! makes itself (nodes' leases, bootstrap RBAC, controllers' pods and revisions, events
//! read through both event APIs, …), each read back with kubectl and checked by
//! `kubernetes-validate --strict` (unknown fields are errors), from PyPI, which
//! `scripts/setup` installs.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use skiff_e2e::{eventually, Server};

/// A base64 PEM certificate request, for the CertificateSigningRequest.
fn certificate_request() -> String {
    let out = Command::new("sh")
        .args([
            "-c",
            "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout /dev/null -subj /CN=schema-test 2>/dev/null | base64 -w0",
        ])
        .output()
        .expect("openssl");
    let request = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !request.is_empty(),
        "openssl made no request"
    );
    request
}

#[test]
fn every_object_the_server_returns_matches_upstreams_schemas() {
    let validator = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    assert!(
        validator.is_ok_and(|out| out.status.success()),
        "kubernetes-validate is not installed: run scripts/setup (pip install kubernetes-validate==1.37.0)"
    );
    // The control plane, so that controllers make objects of their own.
    let server = Server::start_control_plane(&[]);
    let ns = server.namespace("schemas");
    let fixture = include_str!("fixtures/every_kind.yaml")
        .replace("NS", &ns)
        .replace("CSR_PEM_BASE64", &certificate_request());
    server.ok_with_input(&["create", "-f", "-"], &fixture);
    let created: BTreeSet<String> = fixture
        .lines()
        .filter_map(|line| line.strip_prefix("kind: "))
        .map(str::to_string)
        .collect();

    // What the controllers make from the fixture: pods, revisions, slices, events.
    eventually("the controllers' objects", Duration::from_secs(60), || {
        let revisions = server.ok(&["get", "controllerrevisions", "-n", &ns, "-o", "name"]);
        let pods = server.ok(&["get", "pods", "-n", &ns, "-o", "name"]);
        (revisions.lines().count() >= 2 && pods.lines().count() >= 5).then_some(())
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let resources = server.ok(&["api-resources", "--verbs=list", "-o", "name"]);
    let mut files = Vec::new();
    let mut kinds = BTreeSet::new();
    for resource in resources.lines() {
        let list: Value = serde_json::from_str(&server.ok(&["get", resource, "-A", "-o", "json"]))
            .unwrap_or_else(|e| panic!("kubectl get {resource}: {e}"));
        for (index, item) in list["items"].as_array().into_iter().flatten().enumerate() {
            kinds.insert(item["kind"].as_str().unwrap_or_default().to_string());
            let path = dir.path().join(format!("{resource}-{index}.json"));
            std::fs::write(&path, item.to_string()).expect("write the object");
            files.push(path);
        }
    }
    let missing: Vec<&String> = created.difference(&kinds).collect();
    assert!(
        missing.is_empty(),
        "kinds created but not read back: {missing:?}"
    );
    assert!(
        kinds.len() >= 50,
        "only {} kinds read back: {kinds:?}",
        kinds.len()
    );

    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "--kubernetes-version", "1.37.0"])
        .args(&files)
        .output()
        .expect("kubernetes-validate");
    assert!(
        out.status.success(),
        "{} of {} objects ({} kinds) are not valid v1.37 objects:\n{}{}",
        String::from_utf8_lossy(&out.stdout).lines().count(),
        files.len(),
        kinds.len(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{} objects of {} kinds are valid v1.37 objects",
        files.len(),
        kinds.len()
    );
}
