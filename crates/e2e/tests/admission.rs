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

    // Upstream's "allow opting out of API token automount": accounts that say nothing,
    // mount, or do not mount, each with pods that say nothing, opt in or opt out; the
    // pod's word wins over its account's.
    server.ok_with_input(
        &["create", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: mount-test, namespace: {ns}}}\nautomountServiceAccountToken: true\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: nomount-test, namespace: {ns}}}\nautomountServiceAccountToken: false\n"
        ),
    );
    for (account, pod_says, mounted) in [
        ("default", "", true),
        ("mount-test", "", true),
        ("nomount-test", "", false),
        ("default", "true", true),
        ("mount-test", "true", true),
        ("nomount-test", "true", true),
        ("default", "false", false),
        ("mount-test", "false", false),
        ("nomount-test", "false", false),
    ] {
        let name = format!(
            "opt-{account}-{}",
            if pod_says.is_empty() {
                "unset"
            } else {
                pod_says
            }
        );
        let mut spec = format!("  serviceAccountName: {account}\n");
        if !pod_says.is_empty() {
            spec.push_str(&format!("  automountServiceAccountToken: {pod_says}\n"));
        }
        server.ok_with_input(&["create", "-f", "-"], &pod(&ns, &name, &spec));
        let created = server.json(&["pod", &name, "-n", &ns]);
        let token_volume = created["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["projected"]["sources"][0]["serviceAccountToken"].is_object());
        let token_mount = created["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount");
        assert_eq!(
            (token_volume, token_mount),
            (mounted, mounted),
            "{name}: {}",
            created["spec"]
        );
    }

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

    // A kubelet's mirror pod: stored as sent (no account, no token), unless it reaches
    // for credentials.
    let mirror = |name: &str, extra: &str| {
        pod(&ns, name, extra).replace(
            "namespace: ",
            "annotations: {kubernetes.io/config.mirror: abc}, namespace: ",
        )
    };
    server.ok_with_input(&["create", "-f", "-"], &mirror("static", ""));
    let stored = server.json(&["pod", "static", "-n", &ns]);
    assert!(
        stored["spec"]["serviceAccountName"].is_null(),
        "{}",
        stored["spec"]
    );
    assert!(stored["spec"]["volumes"].is_null(), "{}", stored["spec"]);
    for (name, extra, why) in [
        (
            "with-account",
            "  serviceAccountName: default\n",
            "a mirror pod may not reference service accounts",
        ),
        (
            "with-secret",
            "  volumes: [{name: s, secret: {secretName: s}}]\n",
            "a mirror pod may not reference secrets",
        ),
    ] {
        let out = server.kubectl_with_input(&["create", "-f", "-"], Some(&mirror(name, extra)));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("pods \"{name}\" is forbidden: {why}")),
            "{err}"
        );
    }
}

/// `TokenReview`, as webhook authenticators and delegating servers use it: a token from
/// `kubectl create token` is the service account; a bound pod shows in `extra`; a wrong
/// audience or a forged token is not authenticated.
#[test]
fn token_review() {
    let server = Server::start_control_plane(&[]);
    let ns = server.namespace("review");
    let review = |token: &str, audiences: &str| {
        let body = format!(
            "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec: {{token: \"{token}\", audiences: [{audiences}]}}\n"
        );
        let out = server.ok_with_input(&["create", "-f", "-", "-o", "json"], &body);
        serde_json::from_str::<serde_json::Value>(&out).expect("TokenReview JSON")
    };
    let token = server.ok(&["create", "token", "default", "-n", &ns]);
    let answer = review(token.trim(), "");
    let status = &answer["status"];
    assert_eq!(status["authenticated"], true, "{answer}");
    assert!(status.get("error").is_none(), "{answer}");
    assert_eq!(
        status["user"]["username"],
        format!("system:serviceaccount:{ns}:default")
    );
    assert!(status["user"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "system:serviceaccounts"));
    assert!(
        status["user"]["extra"]["authentication.kubernetes.io/credential-id"][0]
            .as_str()
            .unwrap()
            .starts_with("JTI=")
    );

    // For an audience of its own.
    let scoped = server.ok(&["create", "token", "default", "-n", &ns, "--audience=vault"]);
    assert_eq!(
        review(scoped.trim(), "vault")["status"]["audiences"][0],
        "vault"
    );
    assert_ne!(review(scoped.trim(), "")["status"]["authenticated"], true);

    // Forged or garbage: not authenticated, and no user.
    let forged = review("eyJhbGciOiJub25lIn0.e30.", "");
    assert_ne!(forged["status"]["authenticated"], true, "{forged}");
    assert!(forged["status"]["user"].get("username").is_none());
}

/// Upstream's "LimitRange, defaults applied to pods": a namespace's LimitRange fills in
/// what containers leave out and bounds what they ask for.
#[test]
fn limit_ranges_default_and_bound_pods() {
    let server = Server::start(&[]);
    let ns = server.namespace("limits");
    server.ok_with_input(
        &["create", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: LimitRange\nmetadata: {{name: limits, namespace: {ns}}}\nspec:\n  limits:\n  - type: Container\n    min: {{cpu: 100m, memory: 100Mi}}\n    max: {{cpu: 500m, memory: 500Mi}}\n    defaultRequest: {{cpu: 200m}}\n"
        ),
    );
    // Defaulted as upstream: the default limit from max, the default request from it.
    let range = server.json(&["limitrange", "limits", "-n", &ns]);
    let item = &range["spec"]["limits"][0];
    assert_eq!(
        item["default"],
        serde_json::json!({"cpu": "500m", "memory": "500Mi"})
    );
    assert_eq!(
        item["defaultRequest"],
        serde_json::json!({"cpu": "200m", "memory": "500Mi"})
    );

    let pod = |name: &str, resources: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  containers: [{{name: c, image: busybox, resources: {resources}}}]\n"
        )
    };
    server.ok_with_input(&["create", "-f", "-"], &pod("bare", "{}"));
    let bare = server.json(&["pod", "bare", "-n", &ns]);
    let resources = &bare["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["requests"],
        serde_json::json!({"cpu": "200m", "memory": "500Mi"})
    );
    assert_eq!(
        resources["limits"],
        serde_json::json!({"cpu": "500m", "memory": "500Mi"})
    );
    assert_eq!(
        bare["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );

    server.ok_with_input(
        &["create", "-f", "-"],
        &pod("partial", "{requests: {cpu: 300m}}"),
    );
    let partial = server.json(&["pod", "partial", "-n", &ns]);
    let resources = &partial["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["requests"],
        serde_json::json!({"cpu": "300m", "memory": "500Mi"})
    );

    // Out of bounds: refused, with upstream's words.
    let greedy = pod("greedy", "{limits: {cpu: 600m}}");
    let refused = server.fails_with_input(&["create", "-f", "-"], &greedy);
    assert!(
        refused.contains("pods \"greedy\" is forbidden")
            && refused.contains("maximum cpu usage per Container is 500m, but limit is 600m"),
        "{refused}"
    );
    let tiny = pod("tiny", "{requests: {cpu: 50m}, limits: {cpu: 50m}}");
    let refused = server.fails_with_input(&["create", "-f", "-"], &tiny);
    assert!(
        refused.contains("minimum cpu usage per Container is 100m, but request is 50m"),
        "{refused}"
    );

    // Without the LimitRange, the same pod is admitted.
    server.ok(&["delete", "limitrange", "limits", "-n", &ns]);
    server.ok_with_input(&["create", "-f", "-"], &greedy);
}

/// The `Priority` plugin: system classes from the start, a pod's class resolved to its
/// priority, the global default, and upstream's refusals.
#[test]
fn priority_classes_set_pod_priority() {
    let server = Server::start(&[]);
    let ns = server.namespace("priority");
    let classes = server.ok(&[
        "get",
        "priorityclasses",
        "-o",
        "custom-columns=NAME:.metadata.name,VALUE:.value",
        "--no-headers",
    ]);
    assert!(
        classes.contains("system-cluster-critical   2000000000")
            && classes.contains("system-node-critical      2000001000"),
        "{classes}"
    );
    server.ok(&["create", "priorityclass", "high", "--value=1000"]);
    let pod = |name: &str, spec: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}  containers: [{{name: c, image: busybox}}]\n"
        )
    };
    let priority = |name: &str| {
        let pod = server.json(&["pod", name, "-n", &ns]);
        (
            pod["spec"]["priority"].as_i64(),
            pod["spec"]["priorityClassName"]
                .as_str()
                .map(str::to_string),
            pod["spec"]["preemptionPolicy"].as_str().map(str::to_string),
        )
    };
    server.ok_with_input(&["create", "-f", "-"], &pod("plain", ""));
    assert_eq!(
        priority("plain"),
        (Some(0), None, Some("PreemptLowerPriority".into()))
    );
    server.ok_with_input(
        &["create", "-f", "-"],
        &pod("important", "  priorityClassName: high\n"),
    );
    assert_eq!(
        priority("important"),
        (
            Some(1000),
            Some("high".into()),
            Some("PreemptLowerPriority".into())
        )
    );

    let refused = server.fails_with_input(
        &["create", "-f", "-"],
        &pod("lost", "  priorityClassName: nope\n"),
    );
    assert!(
        refused.contains("pods \"lost\" is forbidden: no PriorityClass with name nope was found"),
        "{refused}"
    );
    let refused = server.fails_with_input(
        &["create", "-f", "-"],
        &pod("liar", "  priorityClassName: high\n  priority: 5\n"),
    );
    assert!(
        refused.contains("the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"),
        "{refused}"
    );

    // A global default class applies to pods that name none.
    server.ok(&[
        "create",
        "priorityclass",
        "everyday",
        "--value=10",
        "--global-default=true",
        "--preemption-policy=Never",
    ]);
    server.ok_with_input(&["create", "-f", "-"], &pod("ordinary", ""));
    assert_eq!(
        priority("ordinary"),
        (Some(10), Some("everyday".into()), Some("Never".into()))
    );
}
