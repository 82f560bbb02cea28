//! The real kubectl 1.37 against one shared `skiff server`, command by command.

use serde_json::Value;
use skiff_e2e::shared;

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn version_and_discovery() {
    let s = shared();
    let version = s.ok(&["version", "-o", "json"]);
    let version: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["serverVersion"]["major"], "1");
    assert_eq!(version["serverVersion"]["minor"], "37");

    let resources = s.ok(&["api-resources"]);
    for expected in [
        "pods                                po",
        "deployments                         deploy       apps/v1",
        "roles                                            rbac.authorization.k8s.io/v1",
        "leases                                           coordination.k8s.io/v1",
    ] {
        let (name, rest) = expected.split_once(' ').unwrap();
        let row = resources
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from api-resources:\n{resources}"));
        for word in rest.split_whitespace() {
            assert!(row.contains(word), "{row} lacks {word}");
        }
    }
    let namespaced = s.ok(&["api-resources", "--namespaced=false", "-o", "name"]);
    assert!(namespaced.lines().any(|l| l == "namespaces"));
    assert!(!namespaced.lines().any(|l| l == "pods"));

    let versions = s.ok(&["api-versions"]);
    for gv in [
        "v1",
        "apps/v1",
        "batch/v1",
        "autoscaling/v2",
        "autoscaling/v1",
        "policy/v1",
        "rbac.authorization.k8s.io/v1",
        "networking.k8s.io/v1",
        "storage.k8s.io/v1",
        "coordination.k8s.io/v1",
        "discovery.k8s.io/v1",
        "events.k8s.io/v1",
        "scheduling.k8s.io/v1",
        "node.k8s.io/v1",
        "certificates.k8s.io/v1",
        "admissionregistration.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "{gv} not in api-versions"
        );
    }
    let info = s.ok(&["cluster-info"]);
    assert!(info.contains("Kubernetes control plane is running at https://127.0.0.1:"));
}

#[test]
fn system_namespaces_exist_and_namespace_lifecycle() {
    let s = shared();
    let names = s.ok(&["get", "namespaces", "-o", "name"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            names.contains(&format!("namespace/{ns}")),
            "{ns} missing: {names}"
        );
    }
    s.ok(&["create", "namespace", "lifecycle-a"]);
    let ns = s.json(&["namespace", "lifecycle-a"]);
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["spec"]["finalizers"][0], "kubernetes");
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "lifecycle-a"
    );
    s.ok(&[
        "create",
        "configmap",
        "inside",
        "-n",
        "lifecycle-a",
        "--from-literal=k=v",
    ]);
    // The API server alone marks the namespace; emptying and removing it is the
    // namespace controller's work (crates/controllers/tests/namespace.rs).
    let out = s.ok(&["delete", "namespace", "lifecycle-a", "--wait=false"]);
    assert!(out.contains("namespace \"lifecycle-a\" deleted"), "{out}");
    let ns = s.json(&["namespace", "lifecycle-a"]);
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    let err = s.fails(&["create", "configmap", "late", "-n", "lifecycle-a"]);
    assert!(err.contains("because it is being terminated"), "{err}");
}

#[test]
fn configmaps_and_secrets() {
    let s = shared();
    let ns = s.namespace("cm");
    s.ok(&[
        "create",
        "configmap",
        "app",
        "-n",
        &ns,
        "--from-literal=a=1",
        "--from-literal=b=two",
    ]);
    let cm = s.json(&["configmap", "app", "-n", &ns]);
    assert_eq!(cm["data"]["a"], "1");
    assert_eq!(cm["data"]["b"], "two");
    assert!(cm["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| u.len() == 36));
    assert!(cm["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .is_ok());
    assert!(cm["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    s.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        &ns,
        "--from-literal=password=hunter2",
    ]);
    let secret = s.json(&["secret", "creds", "-n", &ns]);
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");
    let table = s.ok(&["get", "secrets", "-n", &ns]);
    let row = lines(&table)[1].split_whitespace().collect::<Vec<_>>();
    assert_eq!(&row[..3], ["creds", "Opaque", "1"]);
}

/// kubectl's typed `create` subcommands send protobuf bodies: check what was stored.
#[test]
fn protobuf_creates_store_every_field() {
    let s = shared();
    let ns = s.namespace("pb");
    s.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        &ns,
        "--image=nginx:1.27",
        "--replicas=3",
        "--port=8080",
    ]);
    let d = s.json(&["deployment", "web", "-n", &ns]);
    assert_eq!(d["apiVersion"], "apps/v1");
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["metadata"]["labels"]["app"], "web");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["app"], "web");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "nginx");
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["ports"][0]["containerPort"], 8080);

    let role_args = [
        "create",
        "role",
        "reader",
        "-n",
        &ns,
        "--verb=get,list",
        "--resource=pods,configmaps,deployments.apps",
    ];
    let built: Value = serde_json::from_str(
        &s.ok(&[&role_args[..], &["--dry-run=client", "-o", "json"]].concat()),
    )
    .unwrap();
    s.ok(&role_args);
    let role = s.json(&["role", "reader", "-n", &ns]);
    assert_eq!(
        role["rules"], built["rules"],
        "stored rules differ from what kubectl sent"
    );
    assert_eq!(role["rules"][1]["apiGroups"], serde_json::json!(["apps"]));
    s.ok(&[
        "create",
        "rolebinding",
        "readers",
        "-n",
        &ns,
        "--role=reader",
        "--user=alice",
        "--group=devs",
        "--serviceaccount=default:robot",
    ]);
    let binding = s.json(&["rolebinding", "readers", "-n", &ns]);
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], "reader");
    assert_eq!(binding["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    let subjects = binding["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 3);
    assert!(subjects.iter().any(|x| x["kind"] == "ServiceAccount"
        && x["name"] == "robot"
        && x["namespace"] == "default"));
    let wide = s.ok(&["get", "rolebinding", "readers", "-n", &ns, "-o", "wide"]);
    assert!(
        wide.contains("Role/reader")
            && wide.contains("alice")
            && wide.contains("devs")
            && wide.contains("default/robot"),
        "{wide}"
    );

    let ns2 = format!("{ns}-pb-ns");
    s.ok(&["create", "namespace", &ns2]);
    assert_eq!(s.json(&["namespace", &ns2])["status"]["phase"], "Active");
}

#[test]
fn output_formats() {
    let s = shared();
    let ns = s.namespace("out");
    s.ok(&[
        "create",
        "configmap",
        "one",
        "-n",
        &ns,
        "--from-literal=k=v",
    ]);
    s.ok(&["label", "configmap", "one", "-n", &ns, "tier=web"]);
    let yaml = s.ok(&["get", "configmap", "one", "-n", &ns, "-o", "yaml"]);
    assert!(
        yaml.contains("kind: ConfigMap") && yaml.contains("  k: v"),
        "{yaml}"
    );
    let name = s.ok(&["get", "configmaps", "-n", &ns, "-o", "name"]);
    assert_eq!(name.trim(), "configmap/one");
    let jsonpath = s.ok(&[
        "get",
        "configmap",
        "one",
        "-n",
        &ns,
        "-o",
        "jsonpath={.data.k}",
    ]);
    assert_eq!(jsonpath, "v");
    let columns = s.ok(&[
        "get",
        "configmaps",
        "-n",
        &ns,
        "-o",
        "custom-columns=NAME:.metadata.name,VALUE:.data.k",
    ]);
    assert_eq!(lines(&columns), vec!["NAME   VALUE", "one    v"]);
    let table = s.ok(&["get", "configmaps", "-n", &ns]);
    let rows = lines(&table);
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "DATA", "AGE"]
    );
    assert_eq!(
        rows[1].split_whitespace().take(2).collect::<Vec<_>>(),
        ["one", "1"]
    );
    let labels = s.ok(&["get", "configmaps", "-n", &ns, "--show-labels"]);
    assert!(lines(&labels)[1].ends_with("tier=web"), "{labels}");

    // --sort-by sorts on any field, in the table and in other outputs.
    for (name, value) in [("b-two", "2"), ("c-three", "0"), ("a-one", "9")] {
        s.ok(&[
            "create",
            "configmap",
            name,
            "-n",
            &ns,
            &format!("--from-literal=rank={value}"),
        ]);
    }
    let by_name = s.ok(&[
        "get",
        "configmaps",
        "-n",
        &ns,
        "-l",
        "!tier",
        "--sort-by=.metadata.name",
        "-o",
        "name",
    ]);
    let sorted: Vec<&str> = by_name.lines().filter(|l| l.contains('-')).collect();
    assert_eq!(
        sorted,
        ["configmap/a-one", "configmap/b-two", "configmap/c-three"]
    );
    let by_rank = s.ok(&[
        "get",
        "configmaps",
        "-n",
        &ns,
        "--sort-by=.data.rank",
        "-o",
        "custom-columns=NAME:.metadata.name",
        "--no-headers",
    ]);
    let ranked: Vec<&str> = by_rank.lines().filter(|l| l.contains('-')).collect();
    assert_eq!(ranked, ["c-three", "b-two", "a-one"]);

    // kubectl wait on a field's value, met at once and met after a change.
    s.ok(&[
        "wait",
        "--for=jsonpath={.data.rank}=9",
        "configmap/a-one",
        "-n",
        &ns,
        "--timeout=10s",
    ]);
    let waiter = std::process::Command::new("kubectl")
        .args([
            "wait",
            "--for=jsonpath={.data.rank}=10",
            "configmap/a-one",
            "-n",
            &ns,
            "--timeout=30s",
        ])
        .env("KUBECONFIG", s.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl wait");
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.ok(&[
        "patch",
        "configmap",
        "a-one",
        "-n",
        &ns,
        "-p",
        r#"{"data":{"rank":"10"}}"#,
    ]);
    let waited = waiter.wait_with_output().expect("kubectl wait");
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    let timed_out = s.fails(&[
        "wait",
        "--for=jsonpath={.data.rank}=11",
        "configmap/a-one",
        "-n",
        &ns,
        "--timeout=2s",
    ]);
    assert!(timed_out.contains("timed out"), "{timed_out}");

    s.ok(&["create", "deployment", "api", "-n", &ns, "--image=busybox"]);
    let wide = s.ok(&["get", "deployments", "-n", &ns, "-o", "wide"]);
    let header = lines(&wide)[0].split_whitespace().collect::<Vec<_>>();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        lines(&wide)[1].contains("0/1") && lines(&wide)[1].contains("app=api"),
        "{wide}"
    );
}

#[test]
fn selectors() {
    let s = shared();
    let ns = s.namespace("sel");
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web")] {
        s.ok(&["create", "configmap", name, "-n", &ns]);
        s.ok(&[
            "label",
            "configmap",
            name,
            "-n",
            &ns,
            &format!("tier={tier}"),
        ]);
    }
    let names = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["get", "configmaps", "-n", &ns, "-o", "name"];
        full.extend_from_slice(args);
        lines(&s.ok(&full))
            .iter()
            .map(|l| l.trim_start_matches("configmap/").to_string())
            .collect()
    };
    assert_eq!(names(&["-l", "tier=web"]), ["a", "c"]);
    assert_eq!(names(&["-l", "tier,tier!=web"]), ["b"]);
    assert_eq!(names(&["-l", "tier in (db,web)"]), ["a", "b", "c"]);
    assert_eq!(names(&["-l", "tier notin (web),tier"]), ["b"]);
    assert_eq!(names(&["--field-selector", "metadata.name=b"]), ["b"]);
    assert_eq!(
        names(&["--field-selector", "metadata.name!=b", "-l", "tier"]),
        ["a", "c"]
    );
    let err = s.fails(&[
        "get",
        "configmaps",
        "-n",
        &ns,
        "--field-selector",
        "spec.nodeName=x",
    ]);
    assert!(
        err.contains("field label not supported: spec.nodeName"),
        "{err}"
    );
    let err = s.fails(&["get", "configmaps", "-n", &ns, "-l", "tier in web"]);
    assert!(err.contains("unable to parse requirement"), "{err}");
}

#[test]
fn chunked_list_of_a_thousand() {
    let s = shared();
    let ns = s.namespace("chunk");
    let mut manifest = String::from("apiVersion: v1\nkind: List\nitems:\n");
    for i in 0..1000 {
        manifest.push_str(&format!(
            "- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: cm-{i:04}\n    namespace: {ns}\n  data:\n    i: \"{i}\"\n"
        ));
    }
    s.ok_with_input(&["create", "-f", "-"], &manifest);
    let out = s.kubectl(&[
        "get",
        "configmaps",
        "-n",
        &ns,
        "--chunk-size=100",
        "-o",
        "name",
        "-v=6",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = lines(&stdout);
    assert_eq!(names.len(), 1000);
    assert_eq!(names[0], "configmap/cm-0000");
    assert_eq!(names[999], "configmap/cm-0999");
    let log = String::from_utf8_lossy(&out.stderr);
    let pages = log
        .lines()
        .filter(|l| l.contains("limit=100") && l.contains("200 OK"))
        .count();
    assert_eq!(pages, 10, "expected 10 pages of 100:\n{log}");
    assert!(log.contains("continue="), "later pages use continue tokens");

    // A table view pages too, and the pages are consistent with one revision.
    let table = s.ok(&["get", "configmaps", "-n", &ns, "--chunk-size=250"]);
    assert_eq!(lines(&table).len(), 1001);
}

#[test]
fn watch_sees_added_modified_deleted() {
    let s = shared();
    let ns = s.namespace("watch");
    let args = [
        "get",
        "configmaps",
        "-n",
        &ns,
        "--watch",
        "--output-watch-events",
        "-o",
        "json",
    ];
    let text = s.watch_output(&args, || {
        s.ok(&["create", "configmap", "w", "-n", &ns]);
        s.ok(&["label", "configmap", "w", "-n", &ns, "x=y"]);
        s.ok(&["delete", "configmap", "w", "-n", &ns]);
    });
    let events: Vec<Value> = serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map(|v| v.unwrap())
        .filter(|e| e["object"]["metadata"]["name"] == "w")
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"], "{text}");
    let rvs: Vec<u64> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");
    assert_eq!(events[1]["object"]["metadata"]["labels"]["x"], "y");
}

#[test]
fn label_annotate_patch_replace_edit() {
    let s = shared();
    let ns = s.namespace("mut");
    s.ok(&["create", "configmap", "m", "-n", &ns, "--from-literal=a=1"]);
    s.ok(&["label", "configmap", "m", "-n", &ns, "app=x"]);
    s.ok(&["annotate", "configmap", "m", "-n", &ns, "note=hello"]);
    let err = s.fails(&["label", "configmap", "m", "-n", &ns, "app=y"]);
    assert!(err.contains("already has a value (x)"), "{err}");
    s.ok(&["label", "configmap", "m", "-n", &ns, "app=y", "--overwrite"]);
    s.ok(&[
        "patch",
        "configmap",
        "m",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"data":{"b":"2","a":null}}"#,
    ]);
    s.ok(&[
        "patch",
        "configmap",
        "m",
        "-n",
        &ns,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/c","value":"3"}]"#,
    ]);
    let cm = s.json(&["configmap", "m", "-n", &ns]);
    assert_eq!(cm["metadata"]["labels"]["app"], "y");
    assert_eq!(cm["metadata"]["annotations"]["note"], "hello");
    assert_eq!(cm["data"], serde_json::json!({"b": "2", "c": "3"}));
    let err = s.fails(&[
        "patch",
        "configmap",
        "m",
        "-n",
        &ns,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/nope"}]"#,
    ]);
    assert!(err.contains("/data/nope"), "{err}");

    // replace with what we read: succeeds; replace again with the same, now stale, version: conflict.
    let mut current = cm.clone();
    current["data"]["b"] = "replaced".into();
    let body = serde_json::to_string(&current).unwrap();
    s.ok_with_input(&["replace", "-f", "-"], &body);
    let out = s.kubectl_with_input(&["replace", "-f", "-"], Some(&body));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Operation cannot be fulfilled on configmaps \"m\": the object has been modified; please apply your changes to the latest version and try again"),
        "{err}"
    );

    // edit through an editor script that rewrites one value
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/b: replaced/b: edited/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("kubectl")
        .args(["edit", "configmap", "m", "-n", &ns])
        .env("KUBECONFIG", s.kubeconfig())
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.json(&["configmap", "m", "-n", &ns])["data"]["b"],
        "edited"
    );
}

#[test]
fn deletion_with_finalizers_and_grace() {
    let s = shared();
    let ns = s.namespace("del");
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: {ns}\n  finalizers: [example.com/hold]\n"
    );
    s.ok_with_input(&["create", "-f", "-"], &manifest);
    s.ok(&["delete", "configmap", "held", "-n", &ns, "--wait=false"]);
    let held = s.json(&["configmap", "held", "-n", &ns]);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    assert_eq!(held["metadata"]["deletionGracePeriodSeconds"], 0);
    // A finalizer cannot be added while deleting.
    let err = s.fails(&[
        "patch",
        "configmap",
        "held",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold","x.io/y"]}}"#,
    ]);
    assert!(
        err.contains("no new finalizers can be added if the object is being deleted"),
        "{err}"
    );
    s.ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let err = s.fails(&["get", "configmap", "held", "-n", &ns]);
    assert!(err.contains("configmaps \"held\" not found"), "{err}");

    // An unscheduled pod goes at once, whatever the grace period.
    let pod = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: {ns}\nspec:\n  containers:\n  - name: c\n    image: busybox\n");
    s.ok_with_input(&["create", "-f", "-"], &pod);
    s.ok(&[
        "delete",
        "pod",
        "p",
        "-n",
        &ns,
        "--grace-period=30",
        "--wait",
    ]);
    assert!(s
        .fails(&["get", "pod", "p", "-n", &ns])
        .contains("pods \"p\" not found"));

    // A pod bound to a node waits for its kubelet: it is marked, not removed.
    let bound = pod.replace("  containers:", "  nodeName: node-a\n  containers:");
    s.ok_with_input(&["create", "-f", "-"], &bound);
    s.ok(&[
        "delete",
        "pod",
        "p",
        "-n",
        &ns,
        "--grace-period=45",
        "--wait=false",
    ]);
    let marked = s.json(&["pod", "p", "-n", &ns]);
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 45);
    let table = s.ok(&["get", "pods", "-n", &ns]);
    assert!(table.contains("Terminating"), "{table}");
    s.ok(&[
        "delete",
        "pod",
        "p",
        "-n",
        &ns,
        "--grace-period=0",
        "--force",
    ]);
    assert!(s
        .fails(&["get", "pod", "p", "-n", &ns])
        .contains("not found"));
}

#[test]
fn describe() {
    let s = shared();
    let ns = s.namespace("desc");
    s.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        &ns,
        "--from-literal=mode=fast",
    ]);
    let out = s.ok(&["describe", "namespace", &ns]);
    assert!(
        out.contains(&format!("Name:         {ns}")) && out.contains("Status:       Active"),
        "{out}"
    );
    let out = s.ok(&["describe", "configmap", "settings", "-n", &ns]);
    assert!(out.contains("Name:         settings"), "{out}");
    assert!(out.contains("mode:\n----\nfast"), "{out}");
}

#[test]
fn errors_match_upstream_text() {
    let s = shared();
    let ns = s.namespace("err");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["get".into(), "configmap".into(), "ghost".into(), "-n".into(), ns.clone()],
         "Error from server (NotFound): configmaps \"ghost\" not found"),
        (vec!["get".into(), "deployment".into(), "ghost".into(), "-n".into(), ns.clone()],
         "Error from server (NotFound): deployments.apps \"ghost\" not found"),
        (vec!["create".into(), "namespace".into(), "default".into()],
         "Error from server (AlreadyExists): namespaces \"default\" already exists"),
        (vec!["create".into(), "configmap".into(), "x".into(), "-n".into(), "no-such-ns".into()],
         "namespaces \"no-such-ns\" not found"),
        (vec!["create".into(), "configmap".into(), "Bad_Name".into(), "-n".into(), ns.clone()],
         "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = s.fails(&args);
        assert!(
            err.contains(expected),
            "kubectl {}:\n got: {err}\nwant: {expected}",
            args.join(" ")
        );
    }
    // The raw Status body, byte for byte (kubectl -v=8 prints response bodies).
    let out = s.kubectl(&["get", "configmap", "ghost", "-n", &ns, "-v=8"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"ghost\" not found","reason":"NotFound","details":{"name":"ghost","kind":"configmaps"},"code":404}"#), "{err}");
}

#[test]
fn dry_run_writes_nothing() {
    let s = shared();
    let ns = s.namespace("dry");
    let out = s.ok(&[
        "create",
        "configmap",
        "ghost",
        "-n",
        &ns,
        "--dry-run=server",
        "-o",
        "json",
    ]);
    let object: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(object["metadata"]["name"], "ghost");
    assert!(s
        .fails(&["get", "configmap", "ghost", "-n", &ns])
        .contains("not found"));
}

#[test]
fn status_and_scale_subresources() {
    let s = shared();
    let ns = s.namespace("sub");
    s.ok(&[
        "create",
        "deployment",
        "d",
        "-n",
        &ns,
        "--image=busybox",
        "--replicas=1",
    ]);
    s.ok(&["scale", "deployment", "d", "-n", &ns, "--replicas=4"]);
    let d = s.json(&["deployment", "d", "-n", &ns]);
    assert_eq!(d["spec"]["replicas"], 4);
    assert_eq!(d["metadata"]["generation"], 2);
    let scale = s.ok(&[
        "get",
        "--raw",
        &format!("/apis/apps/v1/namespaces/{ns}/deployments/d/scale"),
    ]);
    let scale: Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["selector"], "app=d");
    // Status written through the main resource is ignored; through /status it sticks
    // and does not move the generation.
    s.ok(&[
        "patch",
        "deployment",
        "d",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":9}}"#,
    ]);
    assert!(s.json(&["deployment", "d", "-n", &ns])["status"]["replicas"].is_null());
    s.ok(&[
        "patch",
        "deployment",
        "d",
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2}}"#,
    ]);
    let d = s.json(&["deployment", "d", "-n", &ns]);
    assert_eq!(d["status"]["replicas"], 2);
    assert_eq!(d["metadata"]["generation"], 2);
}

/// What upstream's defaulting fills in shows in `kubectl get -o yaml`.
#[test]
fn defaults_are_filled_in() {
    let s = shared();
    let ns = s.namespace("defaults");
    let pod = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: {ns}\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n    ports:\n    - containerPort: 80\n");
    s.ok_with_input(&["create", "-f", "-"], &pod);
    let p = s.json(&["pod", "p", "-n", &ns]);
    assert_eq!(p["spec"]["schedulerName"], "default-scheduler");
    assert_eq!(p["spec"]["restartPolicy"], "Always");
    assert_eq!(p["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        p["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(
        p["spec"]["containers"][0]["terminationMessagePolicy"],
        "File"
    );
    assert_eq!(p["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(p["status"]["qosClass"], "BestEffort");

    s.ok(&[
        "create",
        "job",
        "j",
        "-n",
        &ns,
        "--image=busybox",
        "--",
        "true",
    ]);
    let j = s.json(&["job", "j", "-n", &ns]);
    let uid = j["metadata"]["uid"].as_str().unwrap();
    assert_eq!(j["spec"]["backoffLimit"], 6);
    assert_eq!(j["spec"]["completions"], 1);
    assert_eq!(
        j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(j["spec"]["template"]["metadata"]["labels"]["job-name"], "j");

    s.ok(&["create", "deployment", "d", "-n", &ns, "--image=busybox"]);
    let d = s.json(&["deployment", "d", "-n", &ns]);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
}

/// Services get cluster IPs and node ports once each, keep them across updates, and give
/// them back when deleted; the `kubernetes` Service points at the API server.
#[test]
fn service_addresses() {
    let s = shared();
    let ns = s.namespace("svc");
    let kubernetes = s.json(&["service", "kubernetes", "-n", "default"]);
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(kubernetes["spec"]["ports"][0]["port"], 443);
    let slice = s.json(&["endpointslice", "kubernetes", "-n", "default"]);
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    // The address this server advertises: the host's, which pods reach (not loopback).
    let address: std::net::IpAddr = slice["endpoints"][0]["addresses"][0]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("an endpoint address");
    assert!(!address.is_loopback(), "{address}");
    assert_eq!(slice["ports"][0]["port"], s.port);
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::new(address, s.port),
        std::time::Duration::from_secs(5),
    )
    .expect("the API server answers at its endpoint");
    // The range itself, as a ServiceCIDR object.
    let range = s.json(&["servicecidr", "kubernetes"]);
    assert_eq!(range["spec"]["cidrs"][0], "10.96.0.0/12");
    assert_eq!(range["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(range["status"]["conditions"][0]["status"], "True");

    s.ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "-n",
        &ns,
        "--tcp=80:8080",
    ]);
    let web = s.json(&["service", "web", "-n", &ns]);
    let ip = web["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(
        ip.starts_with("10.9") || ip.starts_with("10.10") || ip.starts_with("10.11"),
        "{ip}"
    );
    assert_eq!(web["spec"]["clusterIPs"][0], ip.as_str());
    assert_eq!(web["spec"]["ports"][0]["targetPort"], 8080);
    let record = s.json(&["ipaddresses.networking.k8s.io", &ip]);
    assert_eq!(record["spec"]["parentRef"]["name"], "web");

    s.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "-n",
        &ns,
        "--tcp=80:80",
    ]);
    let np = s.json(&["service", "np", "-n", &ns]);
    let node_port = np["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&node_port));
    let table = s.ok(&["get", "service", "np", "-n", &ns]);
    assert!(table.contains(&format!("80:{node_port}/TCP")), "{table}");

    // A client that leaves clusterIP out of a replace keeps the address; changing it fails.
    let mut body = np.clone();
    body["spec"].as_object_mut().unwrap().remove("clusterIP");
    body["spec"].as_object_mut().unwrap().remove("clusterIPs");
    body["spec"]["ports"][0]
        .as_object_mut()
        .unwrap()
        .remove("nodePort");
    s.ok_with_input(
        &["replace", "-f", "-"],
        &serde_json::to_string(&body).unwrap(),
    );
    let after = s.json(&["service", "np", "-n", &ns]);
    assert_eq!(after["spec"]["clusterIP"], np["spec"]["clusterIP"]);
    assert_eq!(after["spec"]["ports"][0]["nodePort"], node_port);
    let err = s.fails(&[
        "patch",
        "service",
        "np",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"clusterIP":"10.96.0.77","clusterIPs":["10.96.0.77"]}}"#,
    ]);
    assert!(err.contains("may not change once set"), "{err}");

    // Asking for a taken address fails as upstream does; deleting frees it.
    let taken = format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: dup\n  namespace: {ns}\nspec:\n  clusterIP: {ip}\n  ports:\n  - port: 80\n");
    let out = s.kubectl_with_input(&["create", "-f", "-"], Some(&taken));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("provided IP is already allocated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.ok(&["delete", "service", "web", "-n", &ns]);
    assert!(s
        .fails(&["get", "ipaddresses.networking.k8s.io", &ip])
        .contains("not found"));
    s.ok_with_input(&["create", "-f", "-"], &taken);
    assert_eq!(
        s.json(&["service", "dup", "-n", &ns])["spec"]["clusterIP"],
        ip.as_str()
    );

    // Changing type (upstream's "change type" tests): to ExternalName gives the
    // addresses back, from it takes a new one, to and from NodePort takes and gives
    // back node ports.
    let patch = |patch: &str| {
        s.ok(&[
            "patch",
            "service",
            "np",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            patch,
        ]);
        s.json(&["service", "np", "-n", &ns])
    };
    let held_ip = after["spec"]["clusterIP"].as_str().unwrap().to_string();
    let external = patch(
        r#"{"spec":{"type":"ExternalName","externalName":"example.com","clusterIP":"","clusterIPs":null,"ports":null}}"#,
    );
    assert_eq!(external["spec"].get("clusterIP"), None, "{external}");
    assert_eq!(external["spec"].get("ipFamilies"), None, "{external}");
    assert!(s
        .fails(&["get", "ipaddresses.networking.k8s.io", &held_ip])
        .contains("not found"));
    let cluster = patch(
        r#"{"spec":{"type":"ClusterIP","externalName":null,"ports":[{"port":80,"targetPort":8080}]}}"#,
    );
    let new_ip = cluster["spec"]["clusterIP"].as_str().unwrap().to_string();
    s.ok(&["get", "ipaddresses.networking.k8s.io", &new_ip]);
    assert_eq!(cluster["spec"].get("externalTrafficPolicy"), None);
    let node = patch(r#"{"spec":{"type":"NodePort"}}"#);
    let taken_port = node["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&taken_port));
    assert_eq!(node["spec"]["externalTrafficPolicy"], "Cluster");
    let back = patch(r#"{"spec":{"type":"ClusterIP"}}"#);
    assert_eq!(back["spec"]["ports"][0].get("nodePort"), None, "{back}");
    assert_eq!(back["spec"]["clusterIP"], new_ip.as_str());
    // The node port is free again.
    s.ok(&[
        "create",
        "service",
        "nodeport",
        "reuse",
        "-n",
        &ns,
        "--tcp=80:80",
        &format!("--node-port={taken_port}"),
    ]);
}

/// `kubectl get -w` asks for watch events as Tables and prints the server's columns.
#[test]
fn watch_prints_server_side_columns() {
    let s = shared();
    let ns = s.namespace("wtable");
    let args = [
        "get",
        "configmaps",
        "-n",
        &ns,
        "--watch",
        "--output-watch-events",
    ];
    let text = s.watch_output(&args, || {
        s.ok(&[
            "create",
            "configmap",
            "t",
            "-n",
            &ns,
            "--from-literal=a=1",
            "--from-literal=b=2",
        ]);
    });
    let rows = lines(&text);
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        ["EVENT", "NAME", "DATA", "AGE"],
        "{text}"
    );
    assert!(
        rows.iter()
            .any(|r| r.split_whitespace().take(3).collect::<Vec<_>>() == ["ADDED", "t", "2"]),
        "{text}"
    );
}

#[test]
fn a_pods_spec_is_fixed_but_for_images_deadlines_and_tolerations() {
    let s = shared();
    let ns = s.namespace("podupdate");
    s.ok(&[
        "run",
        "fixed",
        "-n",
        &ns,
        "--image=busybox:1.36",
        "--restart=Never",
        "--",
        "sleep",
        "60",
    ]);
    s.ok(&["set", "image", "pod/fixed", "-n", &ns, "fixed=busybox:1.37"]);
    s.ok(&[
        "patch",
        "pod",
        "fixed",
        "-n",
        &ns,
        "-p",
        r#"{"spec":{"activeDeadlineSeconds":100}}"#,
    ]);
    let cases = [
        (
            r#"{"spec":{"restartPolicy":"OnFailure"}}"#,
            "The Pod \"fixed\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`",
        ),
        (
            r#"{"spec":{"activeDeadlineSeconds":200}}"#,
            "The Pod \"fixed\" is invalid: spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value",
        ),
    ];
    for (patch, expected) in cases {
        let err = s.fails(&["patch", "pod", "fixed", "-n", &ns, "-p", patch]);
        assert!(
            err.contains(expected),
            "patch {patch}:\n got: {err}\nwant: {expected}"
        );
    }
    let spec = s.ok(&[
        "get",
        "pod",
        "fixed",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.containers[0].image} {.spec.restartPolicy} {.spec.activeDeadlineSeconds}",
    ]);
    assert_eq!(spec, "busybox:1.37 Never 100");
}
