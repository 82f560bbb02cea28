//! The way people use `kubectl apply`: one multi-document file (Namespace, ConfigMap,
//! Secret, Deployment, Service, CronJob) applied, then applied again after an edit that
//! inserts a container between two others, drops an env var and a ConfigMap key, and
//! changes labels, a schedule and a port list; client-side and `--server-side` alike.
//! Each stored object is compared whole with what upstream's API server stores for the
//! same file (its defaults, its list order), and applying the same file again changes
//! nothing.

use serde_json::{json, Value};
use skiff_e2e::{shared, Server};

/// The file, before (`edited == false`) and after the edit.
fn manifest(ns: &str, edited: bool) -> String {
    let (team, mode, level, tier, schedule) = if edited {
        ("b", "slow", "", "v2", "0 4 * * *")
    } else {
        ("a", "fast", "\n  level: \"3\"", "v1", "0 3 * * *")
    };
    let env = if edited {
        "[{name: A, value: \"1\"}]"
    } else {
        "[{name: A, value: \"1\"}, {name: B, value: \"2\"}]"
    };
    let sidecar = if edited {
        "\n      - name: sidecar\n        image: busybox:1.36\n        command: [sleep, infinity]"
    } else {
        ""
    };
    let metrics = if edited {
        ", {name: metrics, port: 9090}"
    } else {
        ""
    };
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels: {{team: {team}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data:
  mode: {mode}{level}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds, namespace: {ns}}}
stringData: {{user: admin}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web, tier: {tier}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports: [{{containerPort: 80}}]
        env: {env}{sidecar}
      - name: log
        image: busybox:1.36
        command: [sh, -c, "tail -f /dev/null"]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80}}{metrics}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly, namespace: {ns}}}
spec:
  schedule: "{schedule}"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: report
            image: busybox:1.36
            command: [echo, done]
"#
    )
}

/// A container as upstream stores it: the file's fields and the defaults.
fn container(fields: Value) -> Value {
    let mut container = json!({
        "imagePullPolicy": "IfNotPresent",
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    });
    for (key, value) in fields.as_object().into_iter().flatten() {
        container[key] = value.clone();
    }
    container
}

/// A pod template's spec as upstream stores it (no pod-only defaults such as
/// `enableServiceLinks`).
fn template_spec(restart_policy: &str, containers: Vec<Value>) -> Value {
    json!({
        "containers": containers,
        "dnsPolicy": "ClusterFirst",
        "restartPolicy": restart_policy,
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "terminationGracePeriodSeconds": 30,
    })
}

/// What upstream stores for the edited file.
fn expected_deployment_spec() -> Value {
    json!({
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "progressDeadlineSeconds": 600,
        "revisionHistoryLimit": 10,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": template_spec("Always", vec![
                container(json!({"name": "web", "image": "nginx:1.25",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [{"name": "A", "value": "1"}]})),
                container(json!({"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "infinity"]})),
                container(json!({"name": "log", "image": "busybox:1.36", "command": ["sh", "-c", "tail -f /dev/null"]})),
            ]),
        },
    })
}

fn expected_cron_job_spec() -> Value {
    json!({
        "schedule": "0 4 * * *",
        "concurrencyPolicy": "Allow",
        "suspend": false,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 1,
        "jobTemplate": {"spec": {"template": {"spec": template_spec("OnFailure", vec![
            container(json!({"name": "report", "image": "busybox:1.36", "command": ["echo", "done"]})),
        ])}}},
    })
}

/// The file applied, edited and applied again with `flags`; every object checked.
fn apply_round_trip(s: &Server, ns: &str, flags: &[&str]) {
    let apply = |edited: bool| {
        let args = [&["apply", "-f", "-"], flags].concat();
        s.ok_with_input(&args, &manifest(ns, edited))
    };
    let first = apply(false);
    for object in [
        "namespace/",
        "configmap/settings",
        "secret/creds",
        "deployment.apps/web",
        "service/web",
        "cronjob.batch/nightly",
    ] {
        assert!(first.contains(object), "{object} in {first}");
    }
    let before = s.json(&["deployment", "web", "-n", ns]);
    assert_eq!(
        before["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    apply(true);

    let namespace = s.json(&["namespace", ns]);
    assert_eq!(
        namespace["metadata"]["labels"],
        json!({"team": "b", "kubernetes.io/metadata.name": ns})
    );
    let settings = s.json(&["configmap", "settings", "-n", ns]);
    assert_eq!(settings["data"], json!({"mode": "slow"}));
    let creds = s.json(&["secret", "creds", "-n", ns]);
    assert_eq!(creds["data"], json!({"user": "YWRtaW4="}));
    assert_eq!(creds["type"], "Opaque");
    assert!(creds.get("stringData").is_none(), "{creds}");

    let web = s.json(&["deployment", "web", "-n", ns]);
    assert_eq!(
        web["metadata"]["labels"],
        json!({"app": "web", "tier": "v2"})
    );
    assert_eq!(web["spec"], expected_deployment_spec());

    let mut service = s.json(&["service", "web", "-n", ns])["spec"].clone();
    let cluster_ip = service["clusterIP"].clone();
    assert!(
        cluster_ip.as_str().is_some_and(|ip| ip.starts_with("10.")),
        "{service}"
    );
    assert_eq!(service["clusterIPs"], json!([cluster_ip]));
    for allocated in ["clusterIP", "clusterIPs"] {
        service
            .as_object_mut()
            .map(|fields| fields.shift_remove(allocated));
    }
    assert_eq!(
        service,
        json!({
            "selector": {"app": "web"},
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80},
                {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090},
            ],
            "type": "ClusterIP",
            "sessionAffinity": "None",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
        })
    );
    let nightly = s.json(&["cronjob", "nightly", "-n", ns]);
    assert_eq!(nightly["spec"], expected_cron_job_spec());

    // The same file again: nothing to change, so nothing is written.
    let versions = |s: &Server| -> Vec<String> {
        [
            "configmap/settings",
            "secret/creds",
            "deployment/web",
            "service/web",
            "cronjob/nightly",
        ]
        .iter()
        .map(|object| {
            s.ok(&[
                "get",
                object,
                "-n",
                ns,
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ])
        })
        .collect()
    };
    let unchanged = versions(s);
    apply(true);
    assert_eq!(versions(s), unchanged);
}

#[test]
fn a_multi_document_file_applied_client_side_and_edited() {
    let s = shared();
    let ns = format!("files-csa-{}", std::process::id());
    apply_round_trip(s, &ns, &[]);
    // Client-side apply records the file in each object, for the next three-way merge.
    let web = s.json(&["deployment", "web", "-n", &ns]);
    let last: Value = serde_json::from_str(
        web["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .expect("last-applied-configuration"),
    )
    .expect("the annotation is JSON");
    let names: Vec<&str> = last["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["web", "sidecar", "log"]);
    s.ok(&["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
fn a_multi_document_file_applied_server_side_and_edited() {
    let s = shared();
    let ns = format!("files-ssa-{}", std::process::id());
    apply_round_trip(s, &ns, &["--server-side"]);
    // Server-side apply records kubectl as the manager of the file's fields, and no
    // annotation.
    let web = s.json(&["deployment", "web", "-n", &ns, "--show-managed-fields"]);
    let managers: Vec<(&str, &str)> = web["metadata"]["managedFields"]
        .as_array()
        .expect("managedFields")
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap_or_default(),
                m["operation"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(managers, [("kubectl", "Apply")]);
    assert!(web["metadata"].get("annotations").is_none(), "{web}");
    s.ok(&["delete", "namespace", &ns, "--wait=false"]);
}
