//! Building a container's OCI runtime spec (`config.json`) from the CRI
//! request, the image's config and the sandbox. Pure: no system calls, so it
//! is unit-tested without root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::images::store::ContainerDefaults;
use crate::proto;

/// Capabilities a container gets by default: containerd's and Docker's set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Namespace files of the sandbox that containers join.
#[derive(Debug, Clone)]
/// `None` means the host's namespace (hostNetwork, hostIPC).
#[derive(Default)]
pub struct SandboxNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// Share the host's PID namespace (hostPID).
    pub host_pid: bool,
    /// Join another container's PID namespace (CRI `TARGET` mode: an ephemeral
    /// container's `targetContainerName`).
    pub pid: Option<PathBuf>,
}

pub struct SpecInput<'a> {
    pub config: &'a proto::ContainerConfig,
    pub image: &'a ContainerDefaults,
    pub rootfs: &'a Path,
    pub hostname: &'a str,
    pub namespaces: &'a SandboxNamespaces,
    /// Files the sandbox provides: (path in container, host path).
    pub sandbox_files: Vec<(String, PathBuf)>,
    pub cgroups_path: String,
    /// The lowest `oom_score_adj` the runtime may set (its own): lowering it
    /// needs CAP_SYS_RESOURCE, which this kind of host lacks.
    pub min_oom_score_adj: i64,
    /// The pod's sysctls.
    pub sysctls: BTreeMap<String, String>,
    /// Contents of the image's `/etc/passwd` and `/etc/group`, for user names.
    pub passwd: Option<String>,
    pub group: Option<String>,
}

fn lookup_user(passwd: Option<&str>, name_or_uid: &str) -> Option<(u32, u32, String)> {
    for line in passwd?.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 6 && (f[0] == name_or_uid || f[2] == name_or_uid) {
            return Some((f[2].parse().ok()?, f[3].parse().ok()?, f[5].to_string()));
        }
    }
    None
}

fn lookup_group(group: Option<&str>, name: &str) -> Option<u32> {
    for line in group?.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            return f[2].parse().ok();
        }
    }
    None
}

/// Resolves the process user: (uid, gid, extra gids, home).
pub fn resolve_user(input: &SpecInput<'_>) -> Result<(u32, u32, Vec<u32>, String)> {
    let sc = input
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let passwd = input.passwd.as_deref();
    let (uid, mut gid, home) = if let Some(u) = sc.and_then(|s| s.run_as_user.as_ref()) {
        let uid = u32::try_from(u.value)
            .map_err(|_| Error::InvalidArgument(format!("run_as_user {}", u.value)))?;
        let (g, h) = lookup_user(passwd, &uid.to_string())
            .map(|(_, g, h)| (g, h))
            .unwrap_or((0, "/".into()));
        (uid, g, h)
    } else if let Some(name) = sc
        .map(|s| s.run_as_username.as_str())
        .filter(|n| !n.is_empty())
    {
        lookup_user(passwd, name)
            .ok_or_else(|| Error::InvalidArgument(format!("user {name:?} not found in image")))?
    } else if let Some(spec) = input.image.user.as_deref().filter(|u| !u.is_empty()) {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let (uid, g, h) = match user.parse::<u32>() {
            Ok(uid) => {
                let (g, h) = lookup_user(passwd, user)
                    .map(|(_, g, h)| (g, h))
                    .unwrap_or((0, "/".into()));
                (uid, g, h)
            }
            Err(_) => lookup_user(passwd, user)
                .ok_or_else(|| Error::InvalidArgument(format!("image user {user:?} not found")))?,
        };
        let g = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => lookup_group(input.group.as_deref(), g).ok_or_else(|| {
                    Error::InvalidArgument(format!("image group {g:?} not found"))
                })?,
            },
            None => g,
        };
        (uid, g, h)
    } else {
        let h = lookup_user(passwd, "0")
            .map(|(_, _, h)| h)
            .unwrap_or("/root".into());
        (0, 0, h)
    };
    if let Some(g) = sc.and_then(|s| s.run_as_group.as_ref()) {
        gid = u32::try_from(g.value)
            .map_err(|_| Error::InvalidArgument(format!("run_as_group {}", g.value)))?;
    }
    let extra = sc
        .map(|s| {
            s.supplemental_groups
                .iter()
                .filter_map(|g| u32::try_from(*g).ok())
                .collect()
        })
        .unwrap_or_default();
    Ok((uid, gid, extra, home))
}

/// The process's argv, by Docker's rules: CRI `command` replaces the image's
/// entrypoint, CRI `args` its cmd.
pub fn process_args(
    config: &proto::ContainerConfig,
    image: &ContainerDefaults,
) -> Result<Vec<String>> {
    let (entry, cmd) = if !config.command.is_empty() {
        (config.command.clone(), config.args.clone())
    } else {
        let cmd = if config.args.is_empty() {
            image.cmd.clone().unwrap_or_default()
        } else {
            config.args.clone()
        };
        (image.entrypoint.clone().unwrap_or_default(), cmd)
    };
    let args: Vec<String> = entry.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::InvalidArgument("no command specified".into()));
    }
    Ok(args)
}

fn normalize_cap(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

pub fn build_spec(input: &SpecInput<'_>) -> Result<oci_spec::runtime::Spec> {
    let cfg = input.config;
    let linux = cfg.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let res = linux.resources.clone().unwrap_or_default();
    let privileged = sc.privileged;

    // Environment: image first, request overrides by key.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    let image_env = input
        .image
        .env
        .clone()
        .unwrap_or_else(|| vec![DEFAULT_PATH.into()]);
    for e in &image_env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(k, v);
    }
    set("HOSTNAME", input.hostname);
    for kv in &cfg.envs {
        set(&kv.key, &kv.value);
    }
    let (uid, gid, extra_gids, home) = resolve_user(input)?;
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), home));
    }
    let env: Vec<String> = env.into_iter().map(|(k, v)| format!("{k}={v}")).collect();

    let cwd = if !cfg.working_dir.is_empty() {
        cfg.working_dir.clone()
    } else {
        input
            .image
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };

    let caps: Vec<String> = if privileged {
        all_caps()
    } else {
        let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
        if let Some(c) = &sc.capabilities {
            if c.drop_capabilities
                .iter()
                .any(|d| d.eq_ignore_ascii_case("ALL"))
            {
                caps.clear();
            }
            if c.add_capabilities
                .iter()
                .any(|d| d.eq_ignore_ascii_case("ALL"))
            {
                caps = all_caps();
            }
            for a in c
                .add_capabilities
                .iter()
                .filter(|a| !a.eq_ignore_ascii_case("ALL"))
            {
                let a = normalize_cap(a);
                if !caps.contains(&a) {
                    caps.push(a);
                }
            }
            for d in c
                .drop_capabilities
                .iter()
                .filter(|d| !d.eq_ignore_ascii_case("ALL"))
            {
                let d = normalize_cap(d);
                caps.retain(|x| *x != d);
            }
        }
        caps
    };

    // Clamp oom_score_adj: without CAP_SYS_RESOURCE it can't go below ours.
    let oom = res.oom_score_adj.clamp(input.min_oom_score_adj, 1000);

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
    ];
    let requested: Vec<&str> = cfg
        .mounts
        .iter()
        .map(|m| m.container_path.as_str())
        .collect();
    for (dest, src) in &input.sandbox_files {
        if !requested.contains(&dest.as_str()) {
            mounts.push(json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", if sc.readonly_rootfs { "ro" } else { "rw" }]}));
        }
    }
    for m in &cfg.mounts {
        if !m.container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "mount path {:?} is not absolute",
                m.container_path
            )));
        }
        let propagation = match proto::MountPropagation::try_from(m.propagation) {
            Ok(proto::MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(proto::MountPropagation::PropagationBidirectional) => "rshared",
            _ => "rprivate",
        };
        mounts.push(json!({
            "destination": m.container_path,
            "type": "bind",
            "source": m.host_path,
            "options": ["rbind", propagation, if m.readonly { "ro" } else { "rw" }],
        }));
    }

    let mut resources = json!({
        "devices": if privileged { json!([{"allow": true, "access": "rwm"}]) } else { json!([{"allow": false, "access": "rwm"}]) },
    });
    if let Value::Object(limits) = resources_json(&res) {
        for (k, v) in limits {
            resources[k] = v;
        }
    }
    if let Some(p) = cfg
        .annotations
        .get(PIDS_LIMIT_ANNOTATION)
        .and_then(|v| v.parse::<i64>().ok())
    {
        resources["pids"] = json!({"limit": p});
    }

    let mut masked = Vec::new();
    let mut readonly = Vec::new();
    if !privileged {
        masked = if sc.masked_paths.is_empty() {
            DEFAULT_MASKED.iter().map(|s| s.to_string()).collect()
        } else {
            sc.masked_paths.clone()
        };
        readonly = if sc.readonly_paths.is_empty() {
            DEFAULT_READONLY.iter().map(|s| s.to_string()).collect()
        } else {
            sc.readonly_paths.clone()
        };
    }
    let sysctl = &input.sysctls;
    let mut namespaces = vec![json!({"type": "mount"})];
    match &input.namespaces.pid {
        Some(path) => namespaces.push(json!({"type": "pid", "path": path})),
        None if !input.namespaces.host_pid => namespaces.push(json!({"type": "pid"})),
        None => {}
    }
    for (kind, path) in [
        ("network", &input.namespaces.net),
        ("ipc", &input.namespaces.ipc),
        ("uts", &input.namespaces.uts),
    ] {
        if let Some(p) = path {
            namespaces.push(json!({"type": kind, "path": p}));
        }
    }

    // No rlimits: raising RLIMIT_NOFILE past the runtime's own hard limit
    // needs CAP_SYS_RESOURCE, which this kind of host lacks; containers inherit
    // the runtime's limits instead.
    // A container sharing the host's UTS namespace (host network) keeps the host's name:
    // runc refuses to set one without a private namespace.
    let hostname = input.namespaces.uts.as_ref().map(|_| input.hostname);
    let seccomp = crate::seccomp::filter(&sc, &caps)?;
    let v = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": cfg.tty,
            "user": {"uid": uid, "gid": gid, "additionalGids": extra_gids},
            "args": process_args(cfg, input.image)?,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": sc.no_new_privs,
            "oomScoreAdj": oom,
        },
        "root": {"path": input.rootfs, "readonly": sc.readonly_rootfs},
        "hostname": hostname,
        "mounts": mounts,
        "annotations": cfg.annotations,
        "linux": {
            "cgroupsPath": input.cgroups_path,
            "resources": resources,
            "sysctl": sysctl,
            "namespaces": namespaces,
            "maskedPaths": masked,
            "readonlyPaths": readonly,
            "seccomp": seccomp,
        },
    });
    serde_json::from_value(v).map_err(|e| Error::json("build runtime spec", e))
}

/// The `memory` and `cpu` parts of an OCI `LinuxResources` for CRI limits
/// (also the body of `runc update --resources`).
pub fn resources_json(res: &proto::LinuxContainerResources) -> Value {
    let mut resources = json!({});
    if res.memory_limit_in_bytes > 0 {
        let mut mem = json!({"limit": res.memory_limit_in_bytes});
        if res.memory_swap_limit_in_bytes > 0 {
            mem["swap"] = json!(res.memory_swap_limit_in_bytes);
        }
        resources["memory"] = mem;
    }
    let mut cpu = serde_json::Map::new();
    if res.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(res.cpu_shares));
    }
    if res.cpu_quota > 0 {
        cpu.insert("quota".into(), json!(res.cpu_quota));
    }
    if res.cpu_period > 0 {
        cpu.insert("period".into(), json!(res.cpu_period));
    }
    if !res.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(res.cpuset_cpus));
    }
    if !res.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(res.cpuset_mems));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    resources
}

/// Annotation that sets a per-container pids limit (the CRI has no field for
/// it; the kubelet limits pids on the pod cgroup instead).
pub const PIDS_LIMIT_ANNOTATION: &str = "io.skiff.pids-limit";

const DEFAULT_MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn all_caps() -> Vec<String> {
    [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        cfg: &'a proto::ContainerConfig,
        image: &'a ContainerDefaults,
        ns: &'a SandboxNamespaces,
    ) -> SpecInput<'a> {
        SpecInput {
            config: cfg,
            image,
            rootfs: Path::new("/r"),
            hostname: "pod",
            namespaces: ns,
            sandbox_files: vec![("/etc/resolv.conf".into(), "/s/resolv.conf".into())],
            cgroups_path: "/kubepods/x/y".into(),
            sysctls: BTreeMap::new(),
            min_oom_score_adj: 0,
            passwd: Some(
                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n".into(),
            ),
            group: Some("root:x:0:\nstaff:x:50:\n".into()),
        }
    }

    fn ns() -> SandboxNamespaces {
        SandboxNamespaces {
            net: Some("/n".into()),
            ipc: Some("/i".into()),
            uts: Some("/u".into()),
            host_pid: false,
            pid: None,
        }
    }

    #[test]
    fn host_uts_namespace_keeps_the_host_name() {
        let img = ContainerDefaults {
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        let cfg = proto::ContainerConfig::default();
        let own = build_spec(&input(&cfg, &img, &ns())).expect("spec");
        assert_eq!(own.hostname().as_deref(), Some("pod"));
        let host = SandboxNamespaces {
            net: None,
            uts: None,
            ..ns()
        };
        let shared = build_spec(&input(&cfg, &img, &host)).expect("spec");
        assert_eq!(shared.hostname(), &None);
    }

    #[test]
    fn args_follow_docker_rules() {
        let img = ContainerDefaults {
            entrypoint: Some(vec!["/ep".into()]),
            cmd: Some(vec!["c".into()]),
            ..Default::default()
        };
        let mut c = proto::ContainerConfig::default();
        assert_eq!(
            process_args(&c, &img).ok(),
            Some(vec!["/ep".into(), "c".into()])
        );
        c.args = vec!["a".into()];
        assert_eq!(
            process_args(&c, &img).ok(),
            Some(vec!["/ep".into(), "a".into()])
        );
        c.command = vec!["sh".into()];
        assert_eq!(
            process_args(&c, &img).ok(),
            Some(vec!["sh".into(), "a".into()])
        );
        let empty = ContainerDefaults::default();
        assert!(process_args(&proto::ContainerConfig::default(), &empty).is_err());
    }

    #[test]
    fn spec_has_env_user_limits_and_clamped_oom() {
        let img = ContainerDefaults {
            env: Some(vec!["PATH=/bin".into(), "A=image".into()]),
            user: Some("app:staff".into()),
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        let cfg = proto::ContainerConfig {
            envs: vec![proto::KeyValue {
                key: "A".into(),
                value: "req".into(),
            }],
            linux: Some(proto::LinuxContainerConfig {
                resources: Some(proto::LinuxContainerResources {
                    memory_limit_in_bytes: 64 << 20,
                    cpu_quota: 50000,
                    cpu_period: 100000,
                    oom_score_adj: -998,
                    ..Default::default()
                }),
                security_context: None,
            }),
            ..Default::default()
        };
        let n = ns();
        let spec = build_spec(&input(&cfg, &img, &n)).expect("spec");
        let v = serde_json::to_value(&spec).expect("json");
        let env: Vec<String> = serde_json::from_value(v["process"]["env"].clone()).expect("env");
        assert!(env.contains(&"A=req".to_string()));
        assert!(env.contains(&"HOME=/home/app".to_string()));
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["user"]["gid"], 50);
        assert_eq!(v["process"]["oomScoreAdj"], 0);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50000);
        assert_eq!(v["linux"]["namespaces"][2]["path"], "/n");
        assert!(v["mounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["destination"] == "/etc/resolv.conf")));
    }
}
