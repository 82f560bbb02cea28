//! The checks of the baseline and restricted levels, each with the versions from which
//! its rules apply, in the order upstream runs them (baseline checks by id, then
//! restricted ones by id; a restricted check replaces the baseline checks it overrides).

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};

use crate::{Level, LevelVersion};

/// One failed check: upstream's reason and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub reason: String,
    pub detail: String,
}

fn violation(reason: impl Into<String>, detail: impl Into<String>) -> Option<Violation> {
    Some(Violation {
        reason: reason.into(),
        detail: detail.into(),
    })
}

/// A pod's metadata and spec, as JSON.
struct Pod<'a> {
    metadata: &'a Value,
    spec: &'a Value,
}

/// `value[key]`, unless missing or null.
fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.get(key).filter(|v| !v.is_null())
}

fn is_true(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool) == Some(true)
}

fn name(container: &Value) -> &str {
    get(container, "name").and_then(Value::as_str).unwrap_or("")
}

/// `container.securityContext[key]`.
fn security<'a>(container: &'a Value, key: &str) -> Option<&'a Value> {
    get(container, "securityContext").and_then(|sc| get(sc, key))
}

fn strings(value: Option<&Value>) -> impl Iterator<Item = &str> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or(""))
}

impl<'a> Pod<'a> {
    /// Init containers, containers, then ephemeral containers, as upstream visits them.
    fn containers(&self) -> impl Iterator<Item = &'a Value> + 'a {
        let spec = self.spec;
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .flat_map(move |list| {
                get(spec, list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
    }

    /// `spec.securityContext[key]`.
    fn pod_security(&self, key: &str) -> Option<&'a Value> {
        get(self.spec, "securityContext").and_then(|sc| get(sc, key))
    }

    fn windows(&self) -> bool {
        get(self.spec, "os")
            .and_then(|os| get(os, "name"))
            .and_then(Value::as_str)
            == Some("windows")
    }

    /// A pod in a user namespace (`hostUsers: false`), which some checks relax for.
    fn user_namespaced(&self) -> bool {
        get(self.spec, "hostUsers").and_then(Value::as_bool) == Some(false)
    }

    fn annotations(&self) -> Option<&'a Map<String, Value>> {
        get(self.metadata, "annotations").and_then(Value::as_object)
    }

    fn annotation(&self, key: &str) -> Option<&'a str> {
        self.annotations()
            .and_then(|a| a.get(key))
            .map(|v| v.as_str().unwrap_or(""))
    }
}

fn pluralize<'s>(singular: &'s str, plural: &'s str, count: usize) -> &'s str {
    if count == 1 {
        singular
    } else {
        plural
    }
}

fn join_quote<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let quoted: Vec<String> = items
        .into_iter()
        .map(|s| format!("\"{}\"", s.as_ref()))
        .collect();
    quoted.join(", ")
}

/// `volume "a"` / `volumes "a", "b"`: a noun for each count, and the names quoted.
fn phrase<S: AsRef<str>>(
    singular: &str,
    plural: &str,
    names: impl ExactSizeIterator<Item = S>,
) -> String {
    format!(
        "{} {}",
        pluralize(singular, plural, names.len()),
        join_quote(names)
    )
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase<S: AsRef<str>>(names: &[S]) -> String {
    phrase("container", "containers", names.iter().map(AsRef::as_ref))
}

/// `<who> uses <what> <values>` / `<who> use <whats> <values>`, as upstream words the
/// checks that name both the offenders and what they use.
fn uses(
    who: String,
    who_count: usize,
    what: (&str, &str),
    values: &[&str],
    quoted: bool,
) -> String {
    let listed = if quoted {
        join_quote(values)
    } else {
        values.join(", ")
    };
    format!(
        "{who} {} {} {listed}",
        pluralize("uses", "use", who_count),
        pluralize(what.0, what.1, values.len()),
    )
}

/// Who set something forbidden: `pod`, then `container(s) "…"`, joined by ` and `.
fn setters<S: AsRef<str>>(pod: bool, containers: &[S]) -> Vec<String> {
    let mut who = Vec::new();
    if pod {
        who.push("pod".to_string());
    }
    if !containers.is_empty() {
        who.push(containers_phrase(containers));
    }
    who
}

/// Go's `%q` for the values upstream quotes that way.
fn go_quote(value: &str) -> String {
    format!("{value:?}")
}

type CheckFn = fn(&Pod) -> Option<Violation>;

struct Check {
    id: &'static str,
    level: Level,
    /// (first minor version, rules from then on), oldest first.
    versions: &'static [(u32, CheckFn)],
    /// Baseline checks this one replaces at the restricted level.
    overrides: &'static [&'static str],
}

impl Check {
    fn at(&self, minor: u32) -> Option<CheckFn> {
        self.versions
            .iter()
            .rev()
            .find(|(first, _)| *first <= minor)
            .map(|(_, check)| *check)
    }
}

const fn baseline(id: &'static str, versions: &'static [(u32, CheckFn)]) -> Check {
    Check {
        id,
        level: Level::Baseline,
        versions,
        overrides: &[],
    }
}

const fn restricted(
    id: &'static str,
    versions: &'static [(u32, CheckFn)],
    overrides: &'static [&'static str],
) -> Check {
    Check {
        id,
        level: Level::Restricted,
        versions,
        overrides,
    }
}

/// Every check, baseline ones sorted by id, then restricted ones sorted by id.
static CHECKS: &[Check] = &[
    baseline("appArmorProfile", &[(0, app_armor)]),
    baseline("capabilities_baseline", &[(0, capabilities_baseline)]),
    baseline("hostNamespaces", &[(0, host_namespaces)]),
    baseline("hostPathVolumes", &[(0, host_path_volumes)]),
    baseline("hostPorts", &[(0, host_ports)]),
    baseline(
        "hostProbesAndHostLifecycle",
        &[(34, host_probes_and_lifecycle)],
    ),
    baseline("privileged", &[(0, privileged)]),
    baseline("procMount", &[(0, proc_mount), (35, proc_mount_1_35)]),
    baseline(
        "seLinuxOptions",
        &[(0, se_linux_options_1_0), (31, se_linux_options_1_31)],
    ),
    baseline(
        "seccompProfile_baseline",
        &[(0, seccomp_annotations), (19, seccomp_baseline)],
    ),
    baseline(
        "sysctls",
        &[
            (0, sysctls_1_0),
            (27, sysctls_1_27),
            (29, sysctls_1_29),
            (32, sysctls_1_32),
            (37, sysctls_1_37),
        ],
    ),
    baseline("windowsHostProcess", &[(0, windows_host_process)]),
    restricted(
        "allowPrivilegeEscalation",
        &[(8, allow_privilege_escalation), (25, unless_windows_ape)],
        &[],
    ),
    restricted(
        "capabilities_restricted",
        &[(22, capabilities_restricted), (25, unless_windows_caps)],
        &["capabilities_baseline"],
    ),
    restricted("procMount_restricted", &[(35, proc_mount)], &["procMount"]),
    restricted(
        "restrictedVolumes",
        &[(0, restricted_volumes)],
        &["hostPathVolumes"],
    ),
    restricted(
        "runAsNonRoot",
        &[(0, run_as_non_root), (35, run_as_non_root_1_35)],
        &[],
    ),
    restricted(
        "runAsUser",
        &[(23, run_as_user), (35, run_as_user_1_35)],
        &[],
    ),
    restricted(
        "seccompProfile_restricted",
        &[(19, seccomp_restricted), (25, unless_windows_seccomp)],
        &["seccompProfile_baseline"],
    ),
];

/// Runs the checks of `level_version` on a pod (or pod template): the violations, in
/// upstream's order. `privileged` allows everything.
pub fn evaluate(level_version: LevelVersion, metadata: &Value, spec: &Value) -> Vec<Violation> {
    if level_version.level == Level::Privileged {
        return Vec::new();
    }
    let minor = level_version.version.effective_minor();
    let pod = Pod { metadata, spec };
    let active: Vec<(&Check, CheckFn)> = CHECKS
        .iter()
        .filter(|c| c.level <= level_version.level)
        .filter_map(|c| c.at(minor).map(|f| (c, f)))
        .collect();
    let overridden: HashSet<&str> = active
        .iter()
        .flat_map(|(c, _)| c.overrides.iter().copied())
        .collect();
    active
        .into_iter()
        .filter(|(c, _)| !overridden.contains(c.id))
        .filter_map(|(_, check)| check(&pod))
        .collect()
}

// --- baseline ---

fn app_armor(pod: &Pod) -> Option<Violation> {
    const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
    let allowed_type = |profile: &Value| {
        matches!(
            get(profile, "type").and_then(Value::as_str),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let profile_type = |profile: &Value| {
        get(profile, "type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut pod_bad = false;
    let mut bad_values = BTreeSet::new();
    if let Some(profile) = pod.pod_security("appArmorProfile") {
        if !allowed_type(profile) {
            pod_bad = true;
            bad_values.insert(profile_type(profile));
        }
    }
    let mut bad_containers = Vec::new();
    for container in pod.containers() {
        if let Some(profile) = security(container, "appArmorProfile") {
            if !allowed_type(profile) {
                bad_containers.push(name(container));
                bad_values.insert(profile_type(profile));
            }
        }
    }
    let mut setters = setters(pod_bad, &bad_containers);
    let mut annotations: Vec<String> = pod
        .annotations()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
        .filter(|(_, v)| !(v.is_empty() || *v == "runtime/default" || v.starts_with("localhost/")))
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect();
    let mut values: Vec<String> = bad_values.into_iter().collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(pluralize("annotation", "annotations", annotations.len()).to_string());
        values.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    violation(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

const DEFAULT_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities(container: &Value) -> impl Iterator<Item = &str> {
    strings(security(container, "capabilities").and_then(|c| get(c, "add")))
}

fn capabilities_baseline(pod: &Pod) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    let mut forbidden = BTreeSet::new();
    for container in pod.containers() {
        let mut valid = true;
        for capability in added_capabilities(container) {
            if !DEFAULT_CAPABILITIES.contains(&capability) {
                valid = false;
                forbidden.insert(capability);
            }
        }
        if !valid {
            bad_containers.push(name(container));
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    violation(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&bad_containers),
            join_quote(forbidden)
        ),
    )
}

fn host_namespaces(pod: &Pod) -> Option<Violation> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|field| is_true(get(pod.spec, field)))
        .map(|field| format!("{field}=true"))
        .collect();
    if set.is_empty() {
        return None;
    }
    violation("host namespaces", set.join(", "))
}

fn volumes<'a>(pod: &Pod<'a>) -> impl Iterator<Item = &'a Value> + 'a {
    get(pod.spec, "volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn host_path_volumes(pod: &Pod) -> Option<Violation> {
    let host: Vec<&str> = volumes(pod)
        .filter(|v| get(v, "hostPath").is_some())
        .map(name)
        .collect();
    if host.is_empty() {
        return None;
    }
    violation(
        "hostPath volumes",
        phrase("volume", "volumes", host.into_iter()),
    )
}

fn host_ports(pod: &Pod) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    // Upstream sorts the ports as strings.
    let mut ports = BTreeSet::new();
    for container in pod.containers() {
        let mut valid = true;
        for port in get(container, "ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match get(port, "hostPort").and_then(Value::as_i64) {
                Some(0) | None => {}
                Some(host_port) => {
                    valid = false;
                    ports.insert(host_port.to_string());
                }
            }
        }
        if !valid {
            bad_containers.push(name(container));
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
    violation(
        "hostPort",
        uses(
            containers_phrase(&bad_containers),
            bad_containers.len(),
            ("hostPort", "hostPorts"),
            &ports,
            false,
        ),
    )
}

fn host_probes_and_lifecycle(pod: &Pod) -> Option<Violation> {
    let mut bad_containers = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    for container in pod.containers() {
        let lifecycle = get(container, "lifecycle");
        let handlers = ["livenessProbe", "readinessProbe", "startupProbe"]
            .into_iter()
            .filter_map(|p| get(container, p))
            .chain(
                ["postStart", "preStop"]
                    .into_iter()
                    .filter_map(|h| lifecycle.and_then(|l| get(l, h))),
            );
        for handler in handlers {
            for action in ["httpGet", "tcpSocket"] {
                let host = get(handler, action)
                    .and_then(|a| get(a, "host"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !host.is_empty() {
                    bad_containers.insert(name(container));
                    hosts.insert(host);
                }
            }
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    let bad_containers: Vec<&str> = bad_containers.into_iter().collect();
    let hosts: Vec<&str> = hosts.into_iter().collect();
    violation(
        "probe or lifecycle host",
        uses(
            containers_phrase(&bad_containers),
            bad_containers.len(),
            ("probe or lifecycle host", "probe or lifecycle hosts"),
            &hosts,
            true,
        ),
    )
}

fn privileged(pod: &Pod) -> Option<Violation> {
    let bad: Vec<&str> = pod
        .containers()
        .filter(|c| is_true(security(c, "privileged")))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_phrase(&bad)
        ),
    )
}

fn proc_mount(pod: &Pod) -> Option<Violation> {
    let mut bad_containers = Vec::new();
    let mut types = BTreeSet::new();
    for container in pod.containers() {
        let Some(mount) = security(container, "procMount") else {
            continue;
        };
        let mount = mount.as_str().unwrap_or("");
        if mount != "Default" {
            bad_containers.push(name(container));
            types.insert(mount);
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    violation(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_phrase(&bad_containers),
            join_quote(types)
        ),
    )
}

fn proc_mount_1_35(pod: &Pod) -> Option<Violation> {
    if pod.user_namespaced() {
        return None;
    }
    proc_mount(pod)
}

fn se_linux_options_1_0(pod: &Pod) -> Option<Violation> {
    se_linux_options(
        pod,
        &["", "container_t", "container_init_t", "container_kvm_t"],
    )
}

fn se_linux_options_1_31(pod: &Pod) -> Option<Violation> {
    se_linux_options(
        pod,
        &[
            "",
            "container_t",
            "container_init_t",
            "container_kvm_t",
            "container_engine_t",
        ],
    )
}

fn se_linux_options(pod: &Pod, allowed_types: &[&str]) -> Option<Violation> {
    let mut bad_types = BTreeSet::new();
    let (mut set_user, mut set_role) = (false, false);
    let mut valid = |options: &Value| {
        let text = |key| get(options, key).and_then(Value::as_str).unwrap_or("");
        let mut ok = true;
        let kind = text("type");
        if !allowed_types.contains(&kind) {
            ok = false;
            bad_types.insert(kind.to_string());
        }
        if !text("user").is_empty() {
            ok = false;
            set_user = true;
        }
        if !text("role").is_empty() {
            ok = false;
            set_role = true;
        }
        ok
    };
    let pod_bad = pod
        .pod_security("seLinuxOptions")
        .is_some_and(|o| !valid(o));
    let mut bad_containers = Vec::new();
    for container in pod.containers() {
        if let Some(options) = security(container, "seLinuxOptions") {
            if !valid(options) {
                bad_containers.push(name(container));
            }
        }
    }
    let setters = setters(pod_bad, &bad_containers);
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        data.push(format!(
            "{} {}",
            pluralize("type", "types", bad_types.len()),
            join_quote(&bad_types)
        ));
    }
    if set_user {
        data.push("user may not be set".to_string());
    }
    if set_role {
        data.push("role may not be set".to_string());
    }
    violation(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

/// Before 1.19, seccomp was set by annotations.
fn seccomp_annotations(pod: &Pod) -> Option<Violation> {
    const POD_KEY: &str = "seccomp.security.alpha.kubernetes.io/pod";
    const CONTAINER_PREFIX: &str = "container.seccomp.security.alpha.kubernetes.io/";
    let valid =
        |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
    let mut forbidden = BTreeSet::new();
    let keys = std::iter::once(POD_KEY.to_string()).chain(
        pod.containers()
            .map(|c| format!("{CONTAINER_PREFIX}{}", name(c))),
    );
    for key in keys {
        if let Some(value) = pod.annotation(&key) {
            if !valid(value) {
                forbidden.insert(format!("{key}={}", go_quote(value)));
            }
        }
    }
    if forbidden.is_empty() {
        return None;
    }
    violation(
        "seccompProfile",
        format!(
            "forbidden {} {}",
            pluralize("annotation", "annotations", forbidden.len()),
            forbidden.into_iter().collect::<Vec<_>>().join(", ")
        ),
    )
}

fn seccomp_type(profile: &Value) -> &str {
    get(profile, "type").and_then(Value::as_str).unwrap_or("")
}

fn valid_seccomp(profile: &Value) -> bool {
    matches!(seccomp_type(profile), "RuntimeDefault" | "Localhost")
}

/// Seccomp from 1.19: what the pod and its containers set explicitly may not be
/// `Unconfined`; with `require`, every container must end up with a profile (its own
/// or the pod's).
fn seccomp(pod: &Pod, require: bool) -> Option<Violation> {
    let (mut pod_set, mut pod_bad) = (false, false);
    let mut bad_values = BTreeSet::new();
    if let Some(profile) = pod.pod_security("seccompProfile") {
        if valid_seccomp(profile) {
            pod_set = true;
        } else {
            pod_bad = true;
            bad_values.insert(seccomp_type(profile));
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for container in pod.containers() {
        match security(container, "seccompProfile") {
            Some(profile) if !valid_seccomp(profile) => {
                explicit.push(name(container));
                bad_values.insert(seccomp_type(profile));
            }
            Some(_) => {}
            None if !pod_set => implicit.push(name(container)),
            None => {}
        }
    }
    let setters = setters(pod_bad, &explicit);
    if !setters.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(bad_values)
            ),
        );
    }
    if require && !implicit.is_empty() {
        return violation(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

fn seccomp_baseline(pod: &Pod) -> Option<Violation> {
    seccomp(pod, false)
}

const SYSCTLS_1_0: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
];
const SYSCTLS_1_27: &[&str] = &["net.ipv4.ip_local_reserved_ports"];
const SYSCTLS_1_29: &[&str] = &[
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];
const SYSCTLS_1_32: &[&str] = &["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"];
const SYSCTLS_1_37: &[&str] = &[
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
];

fn sysctls_1_0(pod: &Pod) -> Option<Violation> {
    sysctls(pod, &[SYSCTLS_1_0])
}
fn sysctls_1_27(pod: &Pod) -> Option<Violation> {
    sysctls(pod, &[SYSCTLS_1_0, SYSCTLS_1_27])
}
fn sysctls_1_29(pod: &Pod) -> Option<Violation> {
    sysctls(pod, &[SYSCTLS_1_0, SYSCTLS_1_27, SYSCTLS_1_29])
}
fn sysctls_1_32(pod: &Pod) -> Option<Violation> {
    sysctls(
        pod,
        &[SYSCTLS_1_0, SYSCTLS_1_27, SYSCTLS_1_29, SYSCTLS_1_32],
    )
}
fn sysctls_1_37(pod: &Pod) -> Option<Violation> {
    sysctls(
        pod,
        &[
            SYSCTLS_1_0,
            SYSCTLS_1_27,
            SYSCTLS_1_29,
            SYSCTLS_1_32,
            SYSCTLS_1_37,
        ],
    )
}

fn sysctls(pod: &Pod, allowed: &[&[&str]]) -> Option<Violation> {
    let forbidden: Vec<&str> = pod
        .pod_security("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| get(s, "name").and_then(Value::as_str).unwrap_or(""))
        .filter(|n| !allowed.iter().any(|set| set.contains(n)))
        .collect();
    if forbidden.is_empty() {
        return None;
    }
    violation("forbidden sysctls", forbidden.join(", "))
}

fn windows_host_process(pod: &Pod) -> Option<Violation> {
    let host_process =
        |options: Option<&Value>| is_true(options.and_then(|o| get(o, "hostProcess")));
    let bad: Vec<&str> = pod
        .containers()
        .filter(|c| host_process(security(c, "windowsOptions")))
        .map(name)
        .collect();
    let setters = setters(host_process(pod.pod_security("windowsOptions")), &bad);
    if setters.is_empty() {
        return None;
    }
    violation(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
    )
}

// --- restricted ---

fn allow_privilege_escalation(pod: &Pod) -> Option<Violation> {
    let bad: Vec<&str> = pod
        .containers()
        .filter(|c| security(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    violation(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_phrase(&bad)
        ),
    )
}

fn unless_windows_ape(pod: &Pod) -> Option<Violation> {
    if pod.windows() {
        return None;
    }
    allow_privilege_escalation(pod)
}

fn capabilities_restricted(pod: &Pod) -> Option<Violation> {
    let mut missing_drop_all = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden = BTreeSet::new();
    for container in pod.containers() {
        let Some(capabilities) = security(container, "capabilities") else {
            missing_drop_all.push(name(container));
            continue;
        };
        if !strings(get(capabilities, "drop")).any(|c| c == "ALL") {
            missing_drop_all.push(name(container));
        }
        let mut added_forbidden = false;
        for capability in strings(get(capabilities, "add")) {
            if capability != "NET_BIND_SERVICE" {
                added_forbidden = true;
                forbidden.insert(capability);
            }
        }
        if added_forbidden {
            adding.push(name(container));
        }
    }
    let mut details = Vec::new();
    if !missing_drop_all.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_phrase(&missing_drop_all)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_phrase(&adding),
            join_quote(forbidden)
        ));
    }
    if details.is_empty() {
        return None;
    }
    violation("unrestricted capabilities", details.join("; "))
}

fn unless_windows_caps(pod: &Pod) -> Option<Violation> {
    if pod.windows() {
        return None;
    }
    capabilities_restricted(pod)
}

/// The inline volume types the restricted level allows.
const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The volume types upstream names when it refuses one, in the order it looks for them.
const RESTRICTED_VOLUMES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

fn restricted_volumes(pod: &Pod) -> Option<Violation> {
    let mut bad_volumes = Vec::new();
    let mut types = BTreeSet::new();
    for volume in volumes(pod) {
        if ALLOWED_VOLUMES.iter().any(|t| get(volume, t).is_some()) {
            continue;
        }
        bad_volumes.push(name(volume));
        let kind = RESTRICTED_VOLUMES
            .iter()
            .find(|t| get(volume, t).is_some())
            .copied()
            .unwrap_or("unknown");
        types.insert(kind);
    }
    if bad_volumes.is_empty() {
        return None;
    }
    let types: Vec<&str> = types.into_iter().collect();
    violation(
        "restricted volume types",
        uses(
            phrase("volume", "volumes", bad_volumes.iter()),
            bad_volumes.len(),
            ("restricted volume type", "restricted volume types"),
            &types,
            true,
        ),
    )
}

fn run_as_non_root(pod: &Pod) -> Option<Violation> {
    let pod_setting = pod.pod_security("runAsNonRoot").and_then(Value::as_bool);
    let pod_non_root = pod_setting == Some(true);
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for container in pod.containers() {
        match security(container, "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(name(container)),
            Some(true) => {}
            None if !pod_non_root => implicit.push(name(container)),
            None => {}
        }
    }
    let setters = setters(pod_setting == Some(false), &explicit);
    if !setters.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    if !implicit.is_empty() {
        return violation(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_phrase(&implicit)
            ),
        );
    }
    None
}

fn run_as_non_root_1_35(pod: &Pod) -> Option<Violation> {
    if pod.user_namespaced() {
        return None;
    }
    run_as_non_root(pod)
}

fn run_as_user(pod: &Pod) -> Option<Violation> {
    let root = |v: Option<&Value>| v.and_then(Value::as_i64) == Some(0);
    let bad: Vec<&str> = pod
        .containers()
        .filter(|c| root(security(c, "runAsUser")))
        .map(name)
        .collect();
    let setters = setters(root(pod.pod_security("runAsUser")), &bad);
    if setters.is_empty() {
        return None;
    }
    violation(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters.join(" and ")),
    )
}

fn run_as_user_1_35(pod: &Pod) -> Option<Violation> {
    if pod.user_namespaced() {
        return None;
    }
    run_as_user(pod)
}

fn seccomp_restricted(pod: &Pod) -> Option<Violation> {
    seccomp(pod, true)
}

fn unless_windows_seccomp(pod: &Pod) -> Option<Violation> {
    if pod.windows() {
        return None;
    }
    seccomp_restricted(pod)
}

#[cfg(test)]
mod tests;
