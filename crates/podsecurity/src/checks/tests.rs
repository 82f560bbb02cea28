//! Each check's passing and failing cases, table-driven: a pod that meets the restricted
//! level, changed by a merge patch, must give exactly the message upstream gives.

use serde_json::{json, Value};

use crate::{describe, evaluate, Level, LevelVersion, Version};

/// A pod that meets `restricted:latest`.
fn compliant() -> Value {
    json!({
        "containers": [{
            "name": "c",
            "image": "busybox",
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"]},
                "runAsNonRoot": true,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }],
    })
}

/// RFC 7396 merge patch (arrays replace, null deletes).
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (k, v) in patch {
                if v.is_null() {
                    target.remove(k);
                } else {
                    merge(target.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn level(level: Level, minor: Option<u32>) -> LevelVersion {
    LevelVersion {
        level,
        version: minor.map_or(Version::LATEST, Version::minor),
    }
}

const B: Level = Level::Baseline;
const R: Level = Level::Restricted;

/// (level, version, metadata, spec patch, expected message; "" when allowed).
fn run(cases: &[(Level, Option<u32>, Value, Value, &str)]) {
    for (i, (lvl, minor, metadata, patch, expected)) in cases.iter().enumerate() {
        let mut spec = compliant();
        merge(&mut spec, patch);
        let got = describe(&evaluate(level(*lvl, *minor), metadata, &spec));
        assert_eq!(&got, expected, "case {i}: {patch}");
    }
}

fn c(security: Value) -> Value {
    let mut container = compliant()["containers"][0].clone();
    merge(&mut container, &json!({"securityContext": security}));
    container
}

#[test]
fn compliant_pod_passes_every_level() {
    for lvl in [Level::Privileged, B, R] {
        for minor in [None, Some(0), Some(19), Some(25), Some(35), Some(99)] {
            assert!(evaluate(level(lvl, minor), &json!({}), &compliant()).is_empty());
        }
    }
}

#[test]
fn default_pod_violates_restricted_as_upstream_says() {
    let spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    assert!(evaluate(level(B, None), &json!({}), &spec).is_empty());
    assert_eq!(
        describe(&evaluate(level(R, None), &json!({}), &spec)),
        "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
         unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
         runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
         seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
    );
}

#[test]
fn host_namespaces() {
    run(&[
        (B, None, json!({}), json!({"hostNetwork": false}), ""),
        (
            B,
            None,
            json!({}),
            json!({"hostNetwork": true, "hostIPC": true}),
            "host namespaces (hostNetwork=true, hostIPC=true)",
        ),
        (
            R,
            None,
            json!({}),
            json!({"hostPID": true}),
            "host namespaces (hostPID=true)",
        ),
    ]);
}

#[test]
fn privileged() {
    run(&[
        (
            B,
            None,
            json!({}),
            json!({"containers": [c(json!({"privileged": false}))]}),
            "",
        ),
        (
            B,
            None,
            json!({}),
            json!({"containers": [c(json!({"privileged": true}))]}),
            "privileged (container \"c\" must not set securityContext.privileged=true)",
        ),
        (
            B,
            None,
            json!({}),
            json!({
                "initContainers": [{"name": "i", "securityContext": {"privileged": true}}],
                "containers": [c(json!({"privileged": true}))],
            }),
            "privileged (containers \"i\", \"c\" must not set securityContext.privileged=true)",
        ),
        // Ephemeral containers count too.
        (
            B,
            None,
            json!({}),
            json!({"ephemeralContainers": [{"name": "debug", "securityContext": {"privileged": true}}]}),
            "privileged (container \"debug\" must not set securityContext.privileged=true)",
        ),
    ]);
}

#[test]
fn capabilities() {
    run(&[
        (B, None, json!({}), json!({"containers": [c(json!({"capabilities": {"add": ["CHOWN", "NET_BIND_SERVICE"], "drop": null}}))]}), ""),
        (B, None, json!({}), json!({"containers": [c(json!({"capabilities": {"add": ["SYS_ADMIN", "NET_RAW", "CHOWN"]}}))]}),
         "non-default capabilities (container \"c\" must not include \"NET_RAW\", \"SYS_ADMIN\" in securityContext.capabilities.add)"),
        (R, None, json!({}), json!({"containers": [c(json!({"capabilities": {"add": ["NET_BIND_SERVICE"]}}))]}), ""),
        (R, None, json!({}), json!({"containers": [c(json!({"capabilities": {"drop": ["NET_RAW"], "add": ["CHOWN"]}}))]}),
         "unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]; container \"c\" must not include \"CHOWN\" in securityContext.capabilities.add)"),
        // Before 1.22 the restricted level used the baseline capability rule.
        (R, Some(21), json!({}), json!({"containers": [c(json!({"capabilities": null}))]}), ""),
        // From 1.25 Windows pods are exempt.
        (R, None, json!({}), json!({"os": {"name": "windows"}, "containers": [c(json!({"capabilities": null}))]}), ""),
    ]);
}

#[test]
fn host_path_and_restricted_volumes() {
    run(&[
        (B, None, json!({}), json!({"volumes": [{"name": "e", "emptyDir": {}}, {"name": "n", "nfs": {"server": "s", "path": "/"}}]}), ""),
        (B, None, json!({}), json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "g", "hostPath": {"path": "/etc"}}]}),
         "hostPath volumes (volumes \"h\", \"g\")"),
        (R, None, json!({}), json!({"volumes": [{"name": "s", "secret": {"secretName": "x"}}, {"name": "p", "projected": {"sources": []}}, {"name": "i", "image": {"reference": "x"}}]}), ""),
        (R, None, json!({}), json!({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
         "restricted volume types (volume \"h\" uses restricted volume type \"hostPath\")"),
        (R, None, json!({}), json!({"volumes": [{"name": "n", "nfs": {}}, {"name": "g", "gitRepo": {}}, {"name": "x"}]}),
         "restricted volume types (volumes \"n\", \"g\", \"x\" use restricted volume types \"gitRepo\", \"nfs\", \"unknown\")"),
    ]);
}

#[test]
fn host_ports() {
    run(&[
        (
            B,
            None,
            json!({}),
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 0}]}]}),
            "",
        ),
        (
            B,
            None,
            json!({}),
            json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}),
            "hostPort (container \"c\" uses hostPort 8080)",
        ),
        (
            B,
            None,
            json!({}),
            json!({"containers": [
                {"name": "a", "ports": [{"containerPort": 80, "hostPort": 9090}, {"containerPort": 81, "hostPort": 10000}]},
                {"name": "b", "ports": [{"containerPort": 80, "hostPort": 9090}]},
            ]}),
            "hostPort (containers \"a\", \"b\" use hostPorts 10000, 9090)",
        ),
    ]);
}

#[test]
fn probe_and_lifecycle_hosts() {
    run(&[
        (B, None, json!({}), json!({"containers": [{"name": "c", "livenessProbe": {"httpGet": {"port": 80, "host": ""}}}]}), ""),
        // Only from 1.34.
        (B, Some(33), json!({}), json!({"containers": [{"name": "c", "livenessProbe": {"httpGet": {"port": 80, "host": "1.2.3.4"}}}]}), ""),
        (B, None, json!({}), json!({"containers": [
            {"name": "c", "livenessProbe": {"httpGet": {"port": 80, "host": "1.2.3.4"}},
             "lifecycle": {"preStop": {"tcpSocket": {"port": 80, "host": "evil"}}}},
        ]}), "probe or lifecycle host (container \"c\" uses probe or lifecycle hosts \"1.2.3.4\", \"evil\")"),
    ]);
}

#[test]
fn app_armor() {
    run(&[
        (B, None, json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "localhost/p"}}),
         json!({"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}), ""),
        (B, None, json!({}), json!({"securityContext": {"appArmorProfile": {"type": "Unconfined"}},
                                    "containers": [c(json!({"appArmorProfile": {"type": "Unconfined"}}))]}),
         "forbidden AppArmor profile (pod and container \"c\" must not set AppArmor profile type to \"Unconfined\")"),
        (B, None, json!({"annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}}), json!({}),
         "forbidden AppArmor profile (annotation must not set AppArmor profile type to \"container.apparmor.security.beta.kubernetes.io/c=\"unconfined\"\")"),
    ]);
}

#[test]
fn se_linux_options() {
    run(&[
        (B, None, json!({}), json!({"securityContext": {"seLinuxOptions": {"type": "container_t", "level": "s0:c1"}}}), ""),
        (B, None, json!({}), json!({"securityContext": {"seLinuxOptions": {"type": "container_engine_t"}}}), ""),
        (B, Some(30), json!({}), json!({"securityContext": {"seLinuxOptions": {"type": "container_engine_t"}}}),
         "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type \"container_engine_t\")"),
        (B, None, json!({}), json!({"securityContext": {"seLinuxOptions": {"type": "spc_t"}},
                                    "containers": [c(json!({"seLinuxOptions": {"user": "root", "role": "r"}}))]}),
         "seLinuxOptions (pod and container \"c\" set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set; role may not be set)"),
    ]);
}

#[test]
fn proc_mount() {
    run(&[
        (
            B,
            None,
            json!({}),
            json!({"containers": [c(json!({"procMount": "Default"}))]}),
            "",
        ),
        (
            B,
            None,
            json!({}),
            json!({"containers": [c(json!({"procMount": "Unmasked"}))]}),
            "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")",
        ),
        // Baseline relaxes for user-namespaced pods from 1.35; restricted does not.
        (
            B,
            None,
            json!({}),
            json!({"hostUsers": false, "containers": [c(json!({"procMount": "Unmasked"}))]}),
            "",
        ),
        (
            R,
            None,
            json!({}),
            json!({"hostUsers": false, "containers": [c(json!({"procMount": "Unmasked"}))]}),
            "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")",
        ),
        (
            B,
            Some(34),
            json!({}),
            json!({"hostUsers": false, "containers": [c(json!({"procMount": "Unmasked"}))]}),
            "procMount (container \"c\" must not set securityContext.procMount to \"Unmasked\")",
        ),
    ]);
}

#[test]
fn seccomp() {
    run(&[
        (B, None, json!({}), json!({"containers": [c(json!({"seccompProfile": null}))]}), ""),
        (B, None, json!({}), json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
         "seccompProfile (pod must not set securityContext.seccompProfile.type to \"Unconfined\")"),
        // Before 1.19: annotations.
        (B, Some(18), json!({"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}), json!({}),
         "seccompProfile (forbidden annotation seccomp.security.alpha.kubernetes.io/pod=\"unconfined\")"),
        (B, Some(18), json!({"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "runtime/default"}}), json!({}), ""),
        (R, None, json!({}), json!({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "p"}},
                                    "containers": [c(json!({"seccompProfile": null}))]}), ""),
        (R, None, json!({}), json!({"containers": [c(json!({"seccompProfile": {"type": "Unconfined"}}))]}),
         "seccompProfile (container \"c\" must not set securityContext.seccompProfile.type to \"Unconfined\")"),
    ]);
}

#[test]
fn sysctls() {
    let sysctls = |names: &[&str]| json!({"securityContext": {"sysctls": names.iter().map(|n| json!({"name": n, "value": "1"})).collect::<Vec<_>>()}});
    run(&[
        (
            B,
            None,
            json!({}),
            sysctls(&["net.ipv4.tcp_syncookies", "net.ipv4.tcp_notsent_lowat"]),
            "",
        ),
        (
            B,
            Some(36),
            json!({}),
            sysctls(&["net.ipv4.tcp_notsent_lowat"]),
            "forbidden sysctls (net.ipv4.tcp_notsent_lowat)",
        ),
        (
            B,
            Some(28),
            json!({}),
            sysctls(&[
                "net.ipv4.tcp_rmem",
                "kernel.msgmax",
                "net.ipv4.ip_local_reserved_ports",
            ]),
            "forbidden sysctls (net.ipv4.tcp_rmem, kernel.msgmax)",
        ),
    ]);
}

#[test]
fn windows_host_process() {
    run(&[
        (B, None, json!({}), json!({"securityContext": {"windowsOptions": {"hostProcess": false}}}), ""),
        (B, None, json!({}), json!({"securityContext": {"windowsOptions": {"hostProcess": true}},
                                    "containers": [c(json!({"windowsOptions": {"hostProcess": true}}))]}),
         "hostProcess (pod and container \"c\" must not set securityContext.windowsOptions.hostProcess=true)"),
    ]);
}

#[test]
fn allow_privilege_escalation() {
    run(&[
        (R, None, json!({}), json!({"containers": [c(json!({"allowPrivilegeEscalation": true}))]}),
         "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)"),
        (R, Some(7), json!({}), json!({"containers": [c(json!({"allowPrivilegeEscalation": true}))]}), ""),
        (B, None, json!({}), json!({"containers": [c(json!({"allowPrivilegeEscalation": true}))]}), ""),
    ]);
}

#[test]
fn run_as_non_root_and_user() {
    run(&[
        (R, None, json!({}), json!({"securityContext": {"runAsNonRoot": true}, "containers": [c(json!({"runAsNonRoot": null}))]}), ""),
        (R, None, json!({}), json!({"securityContext": {"runAsNonRoot": false}, "containers": [c(json!({"runAsNonRoot": false}))]}),
         "runAsNonRoot != true (pod and container \"c\" must not set securityContext.runAsNonRoot=false)"),
        (R, None, json!({}), json!({"hostUsers": false, "containers": [c(json!({"runAsNonRoot": null, "runAsUser": 0}))]}), ""),
        (R, None, json!({}), json!({"securityContext": {"runAsUser": 0}, "containers": [c(json!({"runAsUser": 1000}))]}),
         "runAsUser=0 (pod must not set runAsUser=0)"),
        // runAsUser is checked from 1.23.
        (R, Some(22), json!({}), json!({"securityContext": {"runAsUser": 0}}), ""),
    ]);
}

#[test]
fn baseline_failures_come_first_then_restricted_by_id() {
    let spec = json!({"hostNetwork": true, "containers": [{"name": "c", "securityContext": {"privileged": true}}]});
    let reasons: Vec<String> = evaluate(level(R, None), &json!({}), &spec)
        .into_iter()
        .map(|v| v.reason)
        .collect();
    assert_eq!(
        reasons,
        [
            "host namespaces",
            "privileged",
            "allowPrivilegeEscalation != false",
            "unrestricted capabilities",
            "runAsNonRoot != true",
            "seccompProfile",
        ]
    );
}

#[test]
fn checks_are_in_upstream_order() {
    let ids = |level| {
        super::CHECKS
            .iter()
            .filter(|c| c.level == level)
            .map(|c| c.id)
            .collect::<Vec<_>>()
    };
    for level in [B, R] {
        let mut sorted = ids(level);
        sorted.sort();
        assert_eq!(ids(level), sorted);
    }
    let last_baseline = super::CHECKS.iter().rposition(|c| c.level == B);
    let first_restricted = super::CHECKS.iter().position(|c| c.level == R);
    assert!(last_baseline < first_restricted);
}
