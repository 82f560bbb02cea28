//! Authentication and RBAC as users meet them: bearer tokens, impersonation, `view` in
//! one namespace, `kubectl auth can-i`, `whoami`, escalation prevention, anonymous refusal.

use skiff_e2e::{kubectl_as, Server};

#[test]
fn users_get_what_they_are_bound_to() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        tokens.path(),
        "alice-token,alice,1001,\"devs\"\nbob-token,bob,1002\n",
    )
    .unwrap();
    let server = Server::start(&["--token-auth-file", tokens.path().to_str().unwrap()]);
    server.ok(&["create", "namespace", "team-a"]);
    server.ok(&["create", "namespace", "team-b"]);
    server.ok(&["create", "configmap", "c", "-n", "team-a"]);
    server.ok(&[
        "create",
        "rolebinding",
        "alice-view",
        "-n",
        "team-a",
        "--clusterrole=view",
        "--user=alice",
    ]);
    let alice = server.token_kubeconfig("alice", "alice-token");

    let whoami = kubectl_as(
        &alice,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "alice [\"devs\",\"system:authenticated\"]"
    );

    let ok = kubectl_as(&alice, &["get", "configmaps", "-n", "team-a", "-o", "name"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "configmap/c");

    let denied = kubectl_as(&alice, &["get", "pods", "-n", "team-b"]);
    assert!(!denied.status.success());
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("Error from server (Forbidden): pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"team-b\""), "{err}");
    let denied = kubectl_as(&alice, &["delete", "configmap", "c", "-n", "team-a"]);
    assert!(String::from_utf8_lossy(&denied.stderr).contains("User \"alice\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"team-a\""));
    let secrets = kubectl_as(&alice, &["get", "secrets", "-n", "team-a"]);
    assert!(!secrets.status.success(), "view does not read secrets");

    // can-i, for oneself and (as admin) for others
    let can = |kc: &std::path::Path, args: &[&str]| {
        String::from_utf8_lossy(&kubectl_as(kc, args).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(
        can(&alice, &["auth", "can-i", "list", "pods", "-n", "team-a"]),
        "yes"
    );
    assert_eq!(
        can(&alice, &["auth", "can-i", "create", "pods", "-n", "team-a"]),
        "no"
    );
    assert_eq!(
        server
            .ok(&[
                "auth",
                "can-i",
                "get",
                "configmaps",
                "-n",
                "team-a",
                "--as",
                "alice"
            ])
            .trim(),
        "yes"
    );
    let no = server.kubectl(&[
        "auth",
        "can-i",
        "get",
        "configmaps",
        "-n",
        "team-b",
        "--as",
        "alice",
    ]);
    assert_eq!(String::from_utf8_lossy(&no.stdout).trim(), "no");
    let list = kubectl_as(&alice, &["auth", "can-i", "--list", "-n", "team-a"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("configmaps ") && l.contains("[get list watch]")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("selfsubjectaccessreviews.authorization.k8s.io")),
        "{list}"
    );

    // impersonation through the admin, and refused for someone without the verb
    let out = server.ok(&[
        "get",
        "configmaps",
        "-n",
        "team-a",
        "--as",
        "alice",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "configmap/c");
    let bob = server.token_kubeconfig("bob", "bob-token");
    let out = kubectl_as(
        &bob,
        &["get", "configmaps", "-n", "team-a", "--as", "alice"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    ));

    // escalation: bob may manage roles in team-b but holds nothing else there
    server.ok(&[
        "create",
        "role",
        "role-admin",
        "-n",
        "team-b",
        "--verb=create,get",
        "--resource=roles,rolebindings",
    ]);
    server.ok(&[
        "create",
        "rolebinding",
        "bob-roles",
        "-n",
        "team-b",
        "--role=role-admin",
        "--user=bob",
    ]);
    let out = kubectl_as(
        &bob,
        &[
            "create",
            "role",
            "too-much",
            "-n",
            "team-b",
            "--verb=delete",
            "--resource=pods",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl_as(
        &bob,
        &[
            "create",
            "role",
            "fine",
            "-n",
            "team-b",
            "--verb=get",
            "--resource=roles",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl_as(
        &bob,
        &[
            "create",
            "rolebinding",
            "grab-admin",
            "-n",
            "team-b",
            "--clusterrole=admin",
            "--user=bob",
        ],
    );
    assert!(
        !out.status.success(),
        "binding a role one does not hold is refused"
    );

    // wrong token, no token
    let stranger = server.token_kubeconfig("stranger", "nope");
    let out = kubectl_as(&stranger, &["get", "pods"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No credentials at all: only the health and version endpoints answer.
    let ca = server.data_dir.path().join("tls/ca.crt");
    let anonymous = |path: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--cacert",
                ca.to_str().unwrap(),
                &format!("https://127.0.0.1:{}{path}", server.port),
            ])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        anonymous("/api/v1/pods"),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n"
    );
    assert_eq!(anonymous("/readyz"), "ok");
    assert!(
        anonymous("/version").contains("\"minor\": \"37\"")
            || anonymous("/version").contains("\"minor\":\"37\"")
    );
}

#[test]
fn service_account_tokens() {
    let server = skiff_e2e::shared();
    let ns = server.namespace("sa");
    server.ok(&["create", "serviceaccount", "robot", "-n", &ns]);
    let token = server.ok(&["create", "token", "robot", "-n", &ns]);
    let robot = server.token_kubeconfig(&format!("robot-{ns}"), token.trim());
    let whoami = kubectl_as(
        &robot,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        format!("system:serviceaccount:{ns}:robot")
    );
    let denied = kubectl_as(&robot, &["get", "configmaps", "-n", &ns]);
    assert!(String::from_utf8_lossy(&denied.stderr).contains(&format!(
        "User \"system:serviceaccount:{ns}:robot\" cannot list resource \"configmaps\""
    )));
    server.ok(&[
        "create",
        "rolebinding",
        "robot-view",
        "-n",
        &ns,
        "--clusterrole=view",
        &format!("--serviceaccount={ns}:robot"),
    ]);
    assert!(kubectl_as(&robot, &["get", "configmaps", "-n", &ns])
        .status
        .success());

    // A token for another audience does not authenticate here.
    let other = server.ok(&["create", "token", "robot", "-n", &ns, "--audience=vault"]);
    let other = server.token_kubeconfig(&format!("other-{ns}"), other.trim());
    assert!(
        String::from_utf8_lossy(&kubectl_as(&other, &["get", "configmaps", "-n", &ns]).stderr)
            .contains("Unauthorized")
    );

    // A pod-bound token dies with its pod.
    let pod = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: holder\n  namespace: {ns}\nspec:\n  containers:\n  - name: c\n    image: busybox\n");
    server.ok_with_input(&["create", "-f", "-"], &pod);
    let bound = server.ok(&[
        "create",
        "token",
        "robot",
        "-n",
        &ns,
        "--bound-object-kind=Pod",
        "--bound-object-name=holder",
    ]);
    let bound = server.token_kubeconfig(&format!("bound-{ns}"), bound.trim());
    assert!(kubectl_as(&bound, &["get", "configmaps", "-n", &ns])
        .status
        .success());
    server.ok(&[
        "delete",
        "pod",
        "holder",
        "-n",
        &ns,
        "--grace-period=0",
        "--force",
    ]);
    let out = kubectl_as(&bound, &["get", "configmaps", "-n", &ns]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A deleted and recreated service account does not revive old tokens.
    server.ok(&["delete", "serviceaccount", "robot", "-n", &ns]);
    server.ok(&["create", "serviceaccount", "robot", "-n", &ns]);
    assert!(
        String::from_utf8_lossy(&kubectl_as(&robot, &["get", "configmaps", "-n", &ns]).stderr)
            .contains("Unauthorized")
    );
}
