//! The official Python client (`pip install kubernetes==37.0.2`) creates, lists, watches
//! and deletes objects on a Skiff server.

use std::process::Command;

use skiff_e2e::shared;

#[test]
fn python_client_round_trip() {
    let s = shared();
    let ns = s.namespace("py");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/test_client.py");
    let out = Command::new("python3")
        .arg(script)
        .env("KUBECONFIG", s.kubeconfig())
        .env("SKIFF_NS", &ns)
        .output()
        .expect("python3 on PATH");
    assert!(
        out.status.success(),
        "python client test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all checks passed"));
}
