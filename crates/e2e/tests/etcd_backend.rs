//! The same API over the etcd datastore: a real etcd, keys laid out as upstream lays them.

use skiff_e2e::{Etcd, Server};

#[test]
fn kubectl_over_etcd() {
    let etcd = Etcd::start();
    // The control plane, so that deleting the namespace below is carried out (by the
    // namespace controller) as on any cluster.
    let server =
        Server::start_control_plane(&["--datastore", "etcd", "--etcd-endpoints", &etcd.endpoint]);
    server.ok(&["create", "namespace", "on-etcd"]);
    server.ok(&[
        "create",
        "configmap",
        "c",
        "-n",
        "on-etcd",
        "--from-literal=k=v",
    ]);
    server.ok(&[
        "create",
        "deployment",
        "d",
        "-n",
        "on-etcd",
        "--image=busybox",
    ]);
    let cm = server.json(&["configmap", "c", "-n", "on-etcd"]);
    assert_eq!(cm["data"]["k"], "v");

    // Objects sit under upstream's keys.
    let out = std::process::Command::new("etcdctl")
        .args([
            "--endpoints",
            &etcd.endpoint,
            "get",
            "--prefix",
            "--keys-only",
            "/registry/",
        ])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl (apt-get install etcd-client)");
    let keys = String::from_utf8_lossy(&out.stdout);
    for key in [
        "/registry/namespaces/on-etcd",
        "/registry/configmaps/on-etcd/c",
        "/registry/deployments/on-etcd/d",
        "/registry/namespaces/kube-system",
    ] {
        assert!(
            keys.lines().any(|l| l == key),
            "{key} missing from etcd:\n{keys}"
        );
    }

    // State survives a restart of the API server.
    let mut server = server;
    server.restart();
    assert_eq!(
        server.json(&["configmap", "c", "-n", "on-etcd"])["data"]["k"],
        "v"
    );
    server.ok(&["delete", "namespace", "on-etcd", "--wait", "--timeout=60s"]);
    assert!(server
        .fails(&["get", "namespace", "on-etcd"])
        .contains("not found"));
}
