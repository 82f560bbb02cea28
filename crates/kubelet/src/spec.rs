//! Pod spec → CRI configs: the sandbox (hostname, DNS, ports, labels) and
//! each container (command, env, mounts, resources, security context), as
//! upstream's `kuberuntime` builds them. Pure and unit-tested.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_runtime::proto;

use crate::cri::labels;
use skiff_quantity as quantity;

/// Upstream's CPU shares and CFS period constants.
const MIN_SHARES: i64 = 2;
const SHARES_PER_CPU: i64 = 1024;
const QUOTA_PERIOD: i64 = 100_000;
const MIN_QUOTA_PERIOD: i64 = 1000;

/// Settings of this kubelet that shape sandboxes.
#[derive(Debug, Clone, Default)]
pub struct SandboxSettings {
    /// Cluster DNS servers (`--cluster-dns`); empty means the host's
    /// resolv.conf is used even for `ClusterFirst`, as upstream does with a warning.
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// Where pod logs go: `<logs>/<ns>_<name>_<uid>/<container>/<n>.log`.
    pub pod_logs_dir: std::path::PathBuf,
    /// Upstream's `--cgroup-root`, under which pods' cgroups go ([`crate::cgroups`]).
    pub cgroup_root: String,
    /// The host's resolv.conf, for `Default` and the ClusterFirst fallback.
    pub host_resolv_conf: String,
    /// The node's hosts file, which pods on the host's network see (`/etc/hosts`).
    pub node_hosts_file: std::path::PathBuf,
}

pub fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}
pub fn pod_namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}
pub fn pod_uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

/// The pod's QoS class as the API server decided it.
pub fn qos_class(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.qos_class.clone())
        .unwrap_or_else(|| "BestEffort".into())
}

/// The log directory of a pod, upstream's `/var/log/pods` layout.
pub fn pod_log_dir(settings: &SandboxSettings, pod: &Pod) -> std::path::PathBuf {
    settings.pod_logs_dir.join(format!(
        "{}_{}_{}",
        pod_namespace(pod),
        pod_name(pod),
        pod_uid(pod)
    ))
}

fn parse_resolv_conf(s: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut searches, mut options) = (vec![], vec![], vec![]);
    for line in s.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => servers.extend(f.map(str::to_string)),
            Some("search") => searches = f.map(str::to_string).collect(),
            Some("options") => options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// The pod's DNS configuration for its `dnsPolicy` and `dnsConfig`.
pub fn dns_config(pod: &Pod, settings: &SandboxSettings) -> Option<proto::DnsConfig> {
    let spec = pod.spec.as_ref()?;
    let host_network = spec.host_network == Some(true);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let (host_servers, host_searches, host_options) = parse_resolv_conf(&settings.host_resolv_conf);
    let mut cfg = match policy {
        "None" => proto::DnsConfig::default(),
        "ClusterFirst" if !host_network && !settings.cluster_dns.is_empty() => {
            cluster_dns(pod, settings, host_searches)
        }
        "ClusterFirstWithHostNet" if !settings.cluster_dns.is_empty() => {
            cluster_dns(pod, settings, host_searches)
        }
        _ => proto::DnsConfig {
            servers: host_servers,
            searches: host_searches,
            options: host_options,
        },
    };
    if let Some(dc) = &spec.dns_config {
        for s in dc.nameservers.iter().flatten() {
            if !cfg.servers.contains(s) {
                cfg.servers.push(s.clone());
            }
        }
        for s in dc.searches.iter().flatten() {
            if !cfg.searches.contains(s) {
                cfg.searches.push(s.clone());
            }
        }
        for o in dc.options.iter().flatten() {
            let rendered = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or("")),
                None => o.name.clone().unwrap_or_default(),
            };
            let key = o.name.clone().unwrap_or_default();
            cfg.options
                .retain(|x| x.split(':').next() != Some(key.as_str()));
            cfg.options.push(rendered);
        }
    }
    Some(cfg)
}

fn cluster_dns(
    pod: &Pod,
    settings: &SandboxSettings,
    host_searches: Vec<String>,
) -> proto::DnsConfig {
    let d = &settings.cluster_domain;
    let mut searches = vec![
        format!("{}.svc.{d}", pod_namespace(pod)),
        format!("svc.{d}"),
        d.clone(),
    ];
    searches.extend(host_searches);
    proto::DnsConfig {
        servers: settings.cluster_dns.clone(),
        searches,
        options: vec!["ndots:5".into()],
    }
}

/// The sandbox's hostname: `spec.hostname`, else the pod name cut to 63
/// characters (without a trailing `-` or `.`), as upstream's `GeneratePodHostNameAndDomain`.
pub fn hostname(pod: &Pod) -> String {
    if let Some(h) = pod.spec.as_ref().and_then(|s| s.hostname.clone()) {
        if !h.is_empty() {
            return h;
        }
    }
    let name = pod_name(pod);
    let mut h: String = name.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    h
}

fn protocol(p: Option<&str>) -> i32 {
    match p {
        Some("UDP") => proto::Protocol::Udp as i32,
        Some("SCTP") => proto::Protocol::Sctp as i32,
        _ => proto::Protocol::Tcp as i32,
    }
}

/// The `PodSandboxConfig` of `pod` (`attempt` counts sandbox re-creations).
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    settings: &SandboxSettings,
) -> proto::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut sandbox_labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    sandbox_labels.insert(labels::POD_NAME.into(), pod_name(pod).into());
    sandbox_labels.insert(labels::POD_NAMESPACE.into(), pod_namespace(pod).into());
    sandbox_labels.insert(labels::POD_UID.into(), pod_uid(pod).into());
    sandbox_labels.insert(labels::MANAGED_BY.into(), "skiff-kubelet".into());
    let annotations: HashMap<String, String> = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| proto::PortMapping {
            protocol: protocol(p.protocol.as_deref()),
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let host = |b: Option<bool>| {
        if b == Some(true) {
            proto::NamespaceMode::Node as i32
        } else {
            proto::NamespaceMode::Pod as i32
        }
    };
    let psc = spec.security_context.clone().unwrap_or_default();
    let mut supplemental: Vec<i64> = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(g) = psc.fs_group {
        supplemental.push(g);
    }
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: pod_name(pod).into(),
            uid: pod_uid(pod).into(),
            namespace: pod_namespace(pod).into(),
            attempt,
        }),
        hostname: if spec.host_network == Some(true) {
            String::new()
        } else {
            hostname(pod)
        },
        log_directory: pod_log_dir(settings, pod).display().to_string(),
        dns_config: dns_config(pod, settings),
        port_mappings,
        labels: sandbox_labels,
        annotations,
        linux: Some(proto::LinuxPodSandboxConfig {
            cgroup_parent: crate::cgroups::pod_cgroup(
                &settings.cgroup_root,
                &qos_class(pod),
                pod_uid(pod),
            ),
            security_context: Some(proto::LinuxSandboxSecurityContext {
                namespace_options: Some(proto::NamespaceOption {
                    network: host(spec.host_network),
                    pid: if spec.host_pid == Some(true) {
                        proto::NamespaceMode::Node as i32
                    } else if spec.share_process_namespace == Some(true) {
                        proto::NamespaceMode::Pod as i32
                    } else {
                        proto::NamespaceMode::Container as i32
                    },
                    ipc: host(spec.host_ipc),
                    ..Default::default()
                }),
                run_as_user: psc.run_as_user.map(|value| proto::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| proto::Int64Value { value }),
                supplemental_groups: supplemental,
                ..Default::default()
            }),
            sysctls: psc
                .sysctls
                .iter()
                .flatten()
                .map(|s| (dotted(&s.name), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

/// The sysctls a pod may set without the node allowing more (upstream's safe set: each
/// is namespaced and cannot starve other pods).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];

/// A sysctl name with `/` separators written with dots, as the kernel's tools and runc
/// take them (a dot inside a `/`-separated segment becomes a slash).
fn dotted(name: &str) -> String {
    if !name.contains('/') {
        return name.to_string();
    }
    name.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// The first of the pod's sysctls the node does not allow, if any.
pub fn forbidden_sysctl(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .security_context
        .as_ref()?
        .sysctls
        .iter()
        .flatten()
        .map(|s| dotted(&s.name))
        .find(|name| !SAFE_SYSCTLS.contains(&name.as_str()))
}

/// Upstream's oom_score_adj by QoS class (the runtime clamps negatives on
/// machines without CAP_SYS_RESOURCE).
pub fn oom_score_adj(qos: &str, memory_request: i64, memory_capacity: i64) -> i64 {
    match qos {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            if memory_capacity <= 0 {
                return 999;
            }
            let adj = 1000 - (1000 * memory_request) / memory_capacity;
            adj.clamp(2, 999)
        }
    }
}

/// CPU and memory limits of a container for cgroups.
pub fn linux_resources(
    c: &Container,
    qos: &str,
    memory_capacity: i64,
) -> proto::LinuxContainerResources {
    let res = c.resources.clone().unwrap_or_default();
    let get = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    let cpu_request = get(&res.requests, "cpu").and_then(|q| quantity::parse_milli(&q).ok());
    let cpu_limit = get(&res.limits, "cpu").and_then(|q| quantity::parse_milli(&q).ok());
    let mem_limit = get(&res.limits, "memory").and_then(|q| quantity::parse_value(&q).ok());
    let mem_request = get(&res.requests, "memory")
        .and_then(|q| quantity::parse_value(&q).ok())
        .or(mem_limit)
        .unwrap_or(0);
    // Requests default to limits (API defaulting does this; repeat it here).
    let shares_milli = cpu_request.or(cpu_limit).unwrap_or(0);
    let cpu_shares = if shares_milli == 0 {
        MIN_SHARES
    } else {
        ((shares_milli * SHARES_PER_CPU) / 1000).max(MIN_SHARES)
    };
    let (cpu_period, cpu_quota) = match cpu_limit {
        Some(l) if l > 0 => (
            QUOTA_PERIOD,
            ((l * QUOTA_PERIOD) / 1000).max(MIN_QUOTA_PERIOD),
        ),
        _ => (0, 0),
    };
    proto::LinuxContainerResources {
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes: mem_limit.unwrap_or(0),
        oom_score_adj: oom_score_adj(qos, mem_request, memory_capacity),
        ..Default::default()
    }
}

/// The container's `securityContext` merged over the pod's.
pub fn linux_security(pod: &Pod, c: &Container) -> proto::LinuxContainerSecurityContext {
    let spec = pod.spec.clone().unwrap_or_default();
    let psc = spec.security_context.clone().unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let caps = csc.capabilities.clone().unwrap_or_default();
    let mut supplemental: Vec<i64> = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(g) = psc.fs_group {
        supplemental.push(g);
    }
    let host = |b: Option<bool>| {
        if b == Some(true) {
            proto::NamespaceMode::Node as i32
        } else {
            proto::NamespaceMode::Pod as i32
        }
    };
    let seccomp = csc
        .seccomp_profile
        .clone()
        .or(psc.seccomp_profile.clone())
        .map(|p| proto::SecurityProfile {
            profile_type: match p.type_.as_str() {
                "Unconfined" => proto::security_profile::ProfileType::Unconfined as i32,
                "Localhost" => proto::security_profile::ProfileType::Localhost as i32,
                _ => proto::security_profile::ProfileType::RuntimeDefault as i32,
            },
            localhost_ref: p.localhost_profile.unwrap_or_default(),
        });
    proto::LinuxContainerSecurityContext {
        capabilities: Some(proto::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: csc.privileged == Some(true),
        namespace_options: Some(proto::NamespaceOption {
            network: host(spec.host_network),
            pid: if spec.host_pid == Some(true) {
                proto::NamespaceMode::Node as i32
            } else if spec.share_process_namespace == Some(true) {
                proto::NamespaceMode::Pod as i32
            } else {
                proto::NamespaceMode::Container as i32
            },
            ipc: host(spec.host_ipc),
            ..Default::default()
        }),
        run_as_user: csc
            .run_as_user
            .or(psc.run_as_user)
            .map(|value| proto::Int64Value { value }),
        run_as_group: csc
            .run_as_group
            .or(psc.run_as_group)
            .map(|value| proto::Int64Value { value }),
        readonly_rootfs: csc.read_only_root_filesystem == Some(true),
        supplemental_groups: supplemental,
        // Upstream sets no_new_privs only when escalation is explicitly off.
        no_new_privs: csc.allow_privilege_escalation == Some(false),
        seccomp,
        ..Default::default()
    }
}

/// A hash of the container spec (upstream restarts a container whose hash
/// changed; kept as an annotation so a restarted kubelet can compare).
pub fn container_hash(c: &Container) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(c).unwrap_or_default().hash(&mut h);
    format!("{:x}", h.finish() as u32)
}

/// The pod's ephemeral containers as containers (they carry the same fields and a
/// `targetContainerName`), with their targets.
pub fn ephemeral_containers(pod: &Pod) -> Vec<(Container, Option<String>)> {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter_map(|ec| {
            let c = serde_json::to_value(ec)
                .and_then(serde_json::from_value::<Container>)
                .ok()?;
            Some((c, ec.target_container_name.clone()))
        })
        .collect()
}

/// Which of a pod's lists a container comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerKind {
    App,
    Init,
    /// An ephemeral container (`kubectl debug`); with a target, it shares the PID
    /// namespace of the running container with this CRI id.
    Ephemeral {
        target: Option<String>,
    },
}

/// Everything decided elsewhere that goes into one container's config.
pub struct ContainerInputs<'a> {
    pub attempt: u32,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<proto::Mount>,
    pub image: &'a str,
    pub qos: &'a str,
    pub memory_capacity: i64,
    pub kind: ContainerKind,
    /// Where `Localhost` seccomp profiles are found (upstream's `<root>/seccomp`).
    pub seccomp_dir: &'a std::path::Path,
}

/// The `ContainerConfig` of `c` (command and args expanded from `env`).
pub fn container_config(
    pod: &Pod,
    c: &Container,
    inp: ContainerInputs<'_>,
) -> proto::ContainerConfig {
    let env_map: HashMap<&str, &str> = inp
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let lookup = |n: &str| env_map.get(n).map(|v| v.to_string());
    let expand_all = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|s| crate::env::expand(s, &lookup))
            .collect()
    };
    let mut container_labels = HashMap::from([
        (labels::POD_NAME.to_string(), pod_name(pod).to_string()),
        (
            labels::POD_NAMESPACE.to_string(),
            pod_namespace(pod).to_string(),
        ),
        (labels::POD_UID.to_string(), pod_uid(pod).to_string()),
        (labels::CONTAINER_NAME.to_string(), c.name.clone()),
    ]);
    match inp.kind {
        ContainerKind::App => {}
        ContainerKind::Init => {
            container_labels.insert(labels::CONTAINER_TYPE.into(), "init".into());
        }
        ContainerKind::Ephemeral { .. } => {
            container_labels.insert(labels::CONTAINER_TYPE.into(), "ephemeral".into());
        }
    }
    let mut security = linux_security(pod, c);
    if let Some(profile) = security
        .seccomp
        .as_mut()
        .filter(|p| p.profile_type == proto::security_profile::ProfileType::Localhost as i32)
    {
        profile.localhost_ref = inp
            .seccomp_dir
            .join(&profile.localhost_ref)
            .display()
            .to_string();
    }
    if let ContainerKind::Ephemeral {
        target: Some(target),
    } = &inp.kind
    {
        if let Some(namespaces) = security.namespace_options.as_mut() {
            namespaces.pid = proto::NamespaceMode::Target as i32;
            namespaces.target_id = target.clone();
        }
    }
    let grace = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    let annotations = HashMap::from([
        (labels::CONTAINER_HASH.to_string(), container_hash(c)),
        (labels::RESTART_COUNT.to_string(), inp.attempt.to_string()),
        (
            labels::TERMINATION_MESSAGE_PATH.to_string(),
            c.termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        ),
        (
            labels::TERMINATION_MESSAGE_POLICY.to_string(),
            c.termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".into()),
        ),
        (labels::GRACE_PERIOD.to_string(), grace.to_string()),
    ]);
    proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: c.name.clone(),
            attempt: inp.attempt,
        }),
        image: Some(crate::cri::image_spec(inp.image)),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: inp
            .env
            .iter()
            .map(|(k, v)| proto::KeyValue {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        mounts: inp.mounts,
        labels: container_labels,
        annotations,
        log_path: format!("{}/{}.log", c.name, inp.attempt),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
        linux: Some(proto::LinuxContainerConfig {
            resources: Some(linux_resources(c, inp.qos, inp.memory_capacity)),
            security_context: Some(security),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web-0".into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some("u1".into());
        p.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
        p.spec = Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                ports: Some(vec![ContainerPort {
                    container_port: 80,
                    host_port: Some(8080),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn sandbox_has_upstream_labels_ports_and_dns() {
        let settings = SandboxSettings {
            cluster_dns: vec!["10.43.0.10".into()],
            cluster_domain: "cluster.local".into(),
            pod_logs_dir: "/var/log/pods".into(),
            host_resolv_conf: "nameserver 1.1.1.1\nsearch example.com\n".into(),
            ..Default::default()
        };
        let cfg = sandbox_config(&pod(), 0, &settings);
        assert_eq!(cfg.hostname, "web-0");
        assert_eq!(cfg.labels[labels::POD_UID], "u1");
        assert_eq!(cfg.labels["app"], "web");
        assert_eq!(cfg.log_directory, "/var/log/pods/ns_web-0_u1");
        assert_eq!(cfg.port_mappings[0].host_port, 8080);
        let dns = cfg.dns_config.expect("dns");
        assert_eq!(dns.servers, ["10.43.0.10"]);
        assert_eq!(
            dns.searches,
            [
                "ns.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "example.com"
            ]
        );
        // Without cluster DNS, ClusterFirst falls back to the host's.
        let plain = SandboxSettings {
            host_resolv_conf: settings.host_resolv_conf.clone(),
            ..Default::default()
        };
        let dns = sandbox_config(&pod(), 0, &plain).dns_config.expect("dns");
        assert_eq!(dns.servers, ["1.1.1.1"]);
    }

    #[test]
    fn resources_follow_upstream_formulas() {
        let c = Container {
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("500m".into())),
                    ("memory".to_string(), Quantity("64Mi".into())),
                ])),
                requests: Some(BTreeMap::from([(
                    "cpu".to_string(),
                    Quantity("250m".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = linux_resources(&c, "Burstable", 1024 * 1024 * 1024);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 64 * 1024 * 1024);
        assert_eq!(r.oom_score_adj, 938);
        assert_eq!(
            linux_resources(&Container::default(), "BestEffort", 1).cpu_shares,
            2
        );
    }

    #[test]
    fn command_and_args_are_expanded() {
        let c = Container {
            name: "c".into(),
            command: Some(vec!["sh".into(), "-c".into()]),
            args: Some(vec!["echo $(GREETING) $(MISSING)".into()]),
            ..Default::default()
        };
        let cfg = container_config(
            &pod(),
            &c,
            ContainerInputs {
                attempt: 2,
                env: vec![("GREETING".into(), "hi".into())],
                mounts: vec![],
                image: "busybox",
                qos: "BestEffort",
                memory_capacity: 0,
                kind: ContainerKind::App,
                seccomp_dir: std::path::Path::new("/var/lib/kubelet/seccomp"),
            },
        );
        assert_eq!(cfg.args, ["echo hi $(MISSING)"]);
        assert_eq!(cfg.log_path, "c/2.log");
        assert_eq!(cfg.annotations[labels::RESTART_COUNT], "2");
    }

    #[test]
    fn long_names_make_valid_hostnames() {
        let mut p = pod();
        p.metadata.name = Some(format!("{}-x", "a".repeat(62)));
        assert_eq!(hostname(&p), "a".repeat(62));
    }

    #[test]
    fn only_safe_sysctls_pass_and_slashes_become_dots() {
        assert_eq!(dotted("kernel/shm_rmid_forced"), "kernel.shm_rmid_forced");
        assert_eq!(
            dotted("net/ipv4/conf/eth0.100/forwarding"),
            "net.ipv4.conf.eth0/100.forwarding"
        );
        let with = |names: &[&str]| {
            let mut p = pod();
            p.spec.get_or_insert_with(Default::default).security_context =
                Some(k8s_openapi::api::core::v1::PodSecurityContext {
                    sysctls: Some(
                        names
                            .iter()
                            .map(|n| k8s_openapi::api::core::v1::Sysctl {
                                name: n.to_string(),
                                value: "1".into(),
                            })
                            .collect(),
                    ),
                    ..Default::default()
                });
            forbidden_sysctl(&p)
        };
        assert_eq!(
            with(&["kernel/shm_rmid_forced", "net.ipv4.tcp_syncookies"]),
            None
        );
        assert_eq!(
            with(&["kernel.shm_rmid_forced", "kernel.msgmax"]),
            Some("kernel.msgmax".into())
        );
    }
}
