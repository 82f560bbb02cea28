//! Admission on a control plane (`skiff server --disable-agent`), through real kubectl:
//! the ServiceAccount plugin's defaults, mounts and refusals, as upstream words them.

use skiff_e2e::Server;

fn pod(ns: &str, name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{extra_spec}  initContainers: [{{name: init, image: busybox}}]\n  containers: [{{name: c, image: busybox}}]\n"
    )
}

#[test]
fn service_account_admission() {
    let server = Server::start_control_plane(&[]);
    let ns = server.namespace("admit");

    // The default account, its token, CA and namespace mounted in every container.
    server.ok_with_input(&["create", "-f", "-"], &pod(&ns, "plain", ""));
    let plain = server.json(&["pod", "plain", "-n", &ns]);
    assert_eq!(plain["spec"]["serviceAccountName"], "default");
    assert_eq!(plain["spec"]["serviceAccount"], "default");
    let volume = &plain["spec"]["volumes"][0];
    let name = volume["name"].as_str().expect("volume name");
    assert!(
        name.starts_with("kube-api-access-") && name.len() == 21,
        "{name}"
    );
    let sources = &volume["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(
        sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    for list in ["initContainers", "containers"] {
        let mount = &plain["spec"][list][0]["volumeMounts"][0];
        assert_eq!(mount["name"], name);
        assert_eq!(
            mount["mountPath"],
            "/var/run/secrets/kubernetes.io/serviceaccount"
        );
        assert_eq!(mount["readOnly"], true);
    }

    // Automounting off: the account, but no token.
    server.ok_with_input(
        &["create", "-f", "-"],
        &pod(&ns, "quiet", "  automountServiceAccountToken: false\n"),
    );
    let quiet = server.json(&["pod", "quiet", "-n", &ns]);
    assert_eq!(quiet["spec"]["serviceAccountName"], "default");
    assert!(quiet["spec"]["volumes"].is_null(), "{}", quiet["spec"]);

    // An account that does not exist: refused, and nothing stored.
    let out = server.kubectl_with_input(
        &["create", "-f", "-"],
        Some(&pod(&ns, "ghost", "  serviceAccountName: missing\n")),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"ghost\" is forbidden: error looking up service account {ns}/missing: serviceaccount \"missing\" not found"
        )),
        "{err}"
    );
    assert!(server
        .fails(&["get", "pod", "ghost", "-n", &ns])
        .contains("not found"));
}
