//! The PodSecurity admission plugin through real kubectl: namespace labels choose the
//! level per mode; `enforce` refuses pods with upstream's message, `warn` comes back as
//! `Warning:` lines, templates only warn, and raising a namespace's enforce level warns
//! about the pods already there.

use skiff_e2e::{shared, Server};

const RESTRICTED_VIOLATIONS: &str = "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")";

fn pod(name: &str, security: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    securityContext: {{{security}}}\n"
    )
}

const COMPLIANT: &str = "allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}";

/// A namespace with the given labels.
fn labelled(server: &Server, prefix: &str, labels: &[&str]) -> String {
    let ns = server.namespace(prefix);
    if !labels.is_empty() {
        server.ok(&[&["label", "namespace", &ns], labels].concat());
    }
    ns
}

/// Runs kubectl with `input`; returns (success, stderr).
fn run(server: &Server, args: &[&str], input: &str) -> (bool, String) {
    let out = server.kubectl_with_input(args, Some(input));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn restricted_enforcement_refuses_a_default_pod_and_admits_a_compliant_one() {
    let server = shared();
    let ns = labelled(
        server,
        "psa-enforce",
        &["pod-security.kubernetes.io/enforce=restricted"],
    );

    let err = server.fails_with_input(&["create", "-n", &ns, "-f", "-"], &pod("plain", ""));
    assert!(
        err.contains(&format!(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"plain\" is forbidden: violates PodSecurity \"restricted:latest\": {RESTRICTED_VIOLATIONS}\n"
        )),
        "{err}"
    );
    assert!(!server
        .kubectl(&["get", "pod", "plain", "-n", &ns])
        .status
        .success());

    // A privileged pod: the baseline violation first, then the restricted ones.
    let err = server.fails_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &pod("priv", "privileged: true"),
    );
    assert!(
        err.contains(&format!(
            "pods \"priv\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true), {RESTRICTED_VIOLATIONS}\n"
        )),
        "{err}"
    );
    // `kubectl run` is refused the same way.
    let err = server.fails(&["run", "bb", "--image=busybox", "-n", &ns]);
    assert!(
        err.contains("Error from server (Forbidden): pods \"bb\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"bb\" must set"),
        "{err}"
    );

    // Compliant: admitted, with no warning.
    let (ok, err) = run(
        server,
        &["create", "-n", &ns, "-f", "-"],
        &pod("good", COMPLIANT),
    );
    assert!(ok && !err.contains("Warning"), "{err}");

    // A metadata-only update of an admitted pod is never re-checked; a new image is.
    server.ok(&["label", "pod", "good", "-n", &ns, "team=a"]);
    let (ok, err) = run(
        server,
        &["set", "image", "pod/good", "c=busybox:2", "-n", &ns],
        "",
    );
    assert!(ok, "{err}");

    // A pinned older version: runAsUser=0 is checked only from v1.23.
    let old = labelled(
        server,
        "psa-version",
        &[
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=v1.22",
        ],
    );
    let root = format!("{COMPLIANT}, runAsUser: 0");
    let (ok, err) = run(
        server,
        &["create", "-n", &old, "-f", "-"],
        &pod("root", &root),
    );
    assert!(ok, "{err}");
    let err = server.fails_with_input(&["create", "-n", &ns, "-f", "-"], &pod("root", &root));
    assert!(
        err.contains("violates PodSecurity \"restricted:latest\": runAsUser=0 (container \"c\" must not set runAsUser=0)"),
        "{err}"
    );
}

#[test]
fn warn_mode_admits_with_a_warning() {
    let server = shared();
    let ns = labelled(
        server,
        "psa-warn",
        &["pod-security.kubernetes.io/warn=baseline"],
    );
    let (ok, err) = run(
        server,
        &["create", "-n", &ns, "-f", "-"],
        &pod("priv", "privileged: true"),
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("Warning: would violate PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{err}"
    );
    server.ok(&["get", "pod", "priv", "-n", &ns]);

    // An unlabelled namespace is privileged: no warning at all.
    let open = labelled(server, "psa-open", &[]);
    let (ok, err) = run(
        server,
        &["create", "-n", &open, "-f", "-"],
        &pod("priv", "privileged: true"),
    );
    assert!(ok && !err.contains("Warning"), "{err}");
}

#[test]
fn workload_templates_are_warned_about_never_refused() {
    let server = shared();
    let ns = labelled(
        server,
        "psa-deploy",
        &["pod-security.kubernetes.io/enforce=restricted"],
    );
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: busybox}]\n";
    let (ok, err) = run(server, &["create", "-n", &ns, "-f", "-"], deployment);
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!(
            "Warning: would violate PodSecurity \"restricted:latest\": {RESTRICTED_VIOLATIONS}"
        )),
        "{err}"
    );
    server.ok(&["get", "deployment", "web", "-n", &ns]);

    let cronjob = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          hostNetwork: true\n          containers: [{name: c, image: busybox}]\n";
    let (ok, err) = run(server, &["create", "-n", &ns, "-f", "-"], cronjob);
    assert!(ok, "{err}");
    assert!(
        err.contains("Warning: would violate PodSecurity \"restricted:latest\": host namespaces (hostNetwork=true), allowPrivilegeEscalation != false"),
        "{err}"
    );
}

#[test]
fn raising_a_namespace_enforce_level_warns_about_existing_pods() {
    let server = shared();
    let ns = labelled(server, "psa-label", &[]);
    for name in ["b-plain", "a-plain"] {
        server.ok_with_input(&["create", "-n", &ns, "-f", "-"], &pod(name, ""));
    }
    server.ok_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &pod("priv", "privileged: true"),
    );
    server.ok_with_input(&["create", "-n", &ns, "-f", "-"], &pod("good", COMPLIANT));

    let out = server.kubectl(&[
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("Warning: ")).collect();
    assert_eq!(
        warnings,
        [
            format!("Warning: existing pods in namespace \"{ns}\" violate the new PodSecurity enforce level \"restricted:latest\""),
            "Warning: a-plain (and 1 other pod): allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile".to_string(),
            "Warning: priv: privileged, allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile".to_string(),
        ],
        "{err}"
    );
    // Lowering it again (or relabelling with the same level) says nothing.
    let out = server.kubectl(&[
        "label",
        "--overwrite",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("Warning"));
    // The existing pods stay; new ones now meet the new level.
    server.ok(&["get", "pod", "a-plain", "-n", &ns]);
    let err = server.fails_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &pod("priv2", "privileged: true"),
    );
    assert!(err.contains("violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"), "{err}");
}

#[test]
fn bad_labels_are_invalid() {
    let server = shared();
    let ns = labelled(server, "psa-bad", &[]);
    let err = server.fails(&[
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=strict",
    ]);
    assert!(
        err.contains(&format!("The Namespace \"{ns}\" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted")),
        "{err}"
    );
    let err = server.fails(&[
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/warn-version=1.25",
    ]);
    assert!(
        err.contains("Invalid value: \"1.25\": must be \"latest\" or \"v1.x\""),
        "{err}"
    );
    let labels = server.json(&["namespace", &ns])["metadata"]["labels"].clone();
    assert!(
        labels.get("pod-security.kubernetes.io/enforce").is_none(),
        "{labels}"
    );
}

#[test]
fn cluster_defaults_and_exemptions_come_from_the_admission_configuration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("admission.yaml");
    std::fs::write(
        &path,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: PodSecurity\n  configuration:\n    apiVersion: pod-security.admission.config.k8s.io/v1\n    kind: PodSecurityConfiguration\n    defaults: {enforce: baseline, warn: restricted}\n    exemptions: {namespaces: [trusted], runtimeClasses: [sandboxed]}\n",
    )
    .expect("writing the admission configuration");
    let server = Server::start(&[
        "--admission-control-config-file",
        path.to_str().expect("utf-8 path"),
    ]);

    // Unlabelled namespaces get the configured defaults.
    let ns = labelled(&server, "psa-default", &[]);
    let err = server.fails_with_input(
        &["create", "-n", &ns, "-f", "-"],
        &pod("priv", "privileged: true"),
    );
    assert!(
        err.contains("violates PodSecurity \"baseline:latest\": privileged"),
        "{err}"
    );
    let (ok, err) = run(
        &server,
        &["create", "-n", &ns, "-f", "-"],
        &pod("plain", ""),
    );
    assert!(ok, "{err}");
    assert!(err.contains("Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false"), "{err}");

    // An exempt runtime class and an exempt namespace are not checked.
    let sandboxed = pod("sandboxed", "privileged: true")
        .replace("spec:\n", "spec:\n  runtimeClassName: sandboxed\n");
    let (ok, err) = run(&server, &["create", "-n", &ns, "-f", "-"], &sandboxed);
    assert!(ok && !err.contains("Warning"), "{err}");
    server.ok(&["create", "namespace", "trusted"]);
    let (ok, err) = run(
        &server,
        &["create", "-n", "trusted", "-f", "-"],
        &pod("priv", "privileged: true"),
    );
    assert!(ok && !err.contains("Warning"), "{err}");
}
