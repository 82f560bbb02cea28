//! Seccomp filters for a container's OCI spec, from its CRI security profile:
//! `Unconfined` (or a privileged container) runs without one, `Localhost` loads the OCI
//! profile at the absolute path the kubelet names, and `RuntimeDefault` is the runtime's
//! own default.
//!
//! The default refuses (EPERM) the system calls that containerd's and Docker's default
//! profiles keep from containers — kernel keyrings, modules, reboot and kexec, mounts and
//! new namespaces, ptrace across processes, clock setting, io_uring and the like — and
//! lets a call through when the container holds the capability that those profiles
//! grant it for (`CAP_SYS_ADMIN` unlocks `mount`, `CAP_SYS_PTRACE` `ptrace`, …). It is a
//! deny list with everything else allowed, where those profiles are allow lists: a
//! system call newer than this table is allowed here.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::proto;

/// EPERM, what a refused call returns.
const EPERM: u32 = 1;
/// ENOSYS for `clone3`, so that C libraries fall back to `clone`, whose flags the filter
/// can inspect (it cannot read `clone3`'s, which sit in memory).
const ENOSYS: u32 = 38;

/// System calls refused by default, with the capability that lets a container make
/// them anyway (`None`: refused to every unprivileged container).
const REFUSED: &[(&str, Option<&str>)] = &[
    ("acct", Some("CAP_SYS_PACCT")),
    ("add_key", None),
    ("keyctl", None),
    ("request_key", None),
    ("bpf", Some("CAP_SYS_ADMIN")),
    ("create_module", None),
    ("get_kernel_syms", None),
    ("query_module", None),
    ("init_module", Some("CAP_SYS_MODULE")),
    ("finit_module", Some("CAP_SYS_MODULE")),
    ("delete_module", Some("CAP_SYS_MODULE")),
    ("kexec_load", Some("CAP_SYS_BOOT")),
    ("kexec_file_load", Some("CAP_SYS_BOOT")),
    ("reboot", Some("CAP_SYS_BOOT")),
    ("nfsservctl", None),
    ("uselib", None),
    ("ustat", None),
    ("sysfs", None),
    ("_sysctl", None),
    ("vm86", None),
    ("vm86old", None),
    ("userfaultfd", Some("CAP_SYS_PTRACE")),
    ("lookup_dcookie", Some("CAP_SYS_ADMIN")),
    ("mount", Some("CAP_SYS_ADMIN")),
    ("umount", Some("CAP_SYS_ADMIN")),
    ("umount2", Some("CAP_SYS_ADMIN")),
    ("pivot_root", Some("CAP_SYS_ADMIN")),
    ("move_mount", Some("CAP_SYS_ADMIN")),
    ("open_tree", Some("CAP_SYS_ADMIN")),
    ("fsopen", Some("CAP_SYS_ADMIN")),
    ("fsconfig", Some("CAP_SYS_ADMIN")),
    ("fsmount", Some("CAP_SYS_ADMIN")),
    ("fspick", Some("CAP_SYS_ADMIN")),
    ("mount_setattr", Some("CAP_SYS_ADMIN")),
    ("swapon", Some("CAP_SYS_ADMIN")),
    ("swapoff", Some("CAP_SYS_ADMIN")),
    ("setns", Some("CAP_SYS_ADMIN")),
    ("unshare", Some("CAP_SYS_ADMIN")),
    ("sethostname", Some("CAP_SYS_ADMIN")),
    ("setdomainname", Some("CAP_SYS_ADMIN")),
    ("name_to_handle_at", Some("CAP_SYS_ADMIN")),
    ("quotactl", Some("CAP_SYS_ADMIN")),
    ("fanotify_init", Some("CAP_SYS_ADMIN")),
    ("perf_event_open", Some("CAP_SYS_ADMIN")),
    ("open_by_handle_at", Some("CAP_DAC_READ_SEARCH")),
    ("ptrace", Some("CAP_SYS_PTRACE")),
    ("process_vm_readv", Some("CAP_SYS_PTRACE")),
    ("process_vm_writev", Some("CAP_SYS_PTRACE")),
    ("kcmp", Some("CAP_SYS_PTRACE")),
    ("iopl", Some("CAP_SYS_RAWIO")),
    ("ioperm", Some("CAP_SYS_RAWIO")),
    ("settimeofday", Some("CAP_SYS_TIME")),
    ("stime", Some("CAP_SYS_TIME")),
    ("clock_settime", Some("CAP_SYS_TIME")),
    ("clock_adjtime", Some("CAP_SYS_TIME")),
    ("get_mempolicy", Some("CAP_SYS_NICE")),
    ("set_mempolicy", Some("CAP_SYS_NICE")),
    ("mbind", Some("CAP_SYS_NICE")),
    ("move_pages", Some("CAP_SYS_NICE")),
    ("syslog", Some("CAP_SYSLOG")),
    ("chroot", Some("CAP_SYS_CHROOT")),
    ("vhangup", Some("CAP_SYS_TTY_CONFIG")),
    ("io_uring_setup", None),
    ("io_uring_enter", None),
    ("io_uring_register", None),
];

/// The `clone` flags that make new namespaces: refused without `CAP_SYS_ADMIN`.
const NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

fn architectures() -> Value {
    if cfg!(target_arch = "aarch64") {
        json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
    } else {
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    }
}

/// The default filter for a container holding `capabilities` (`CAP_…` names).
pub fn runtime_default(capabilities: &[String]) -> Value {
    let holds = |cap: &str| capabilities.iter().any(|c| c == cap);
    let refused: Vec<&str> = REFUSED
        .iter()
        .filter(|(_, unlock)| unlock.is_none_or(|cap| !holds(cap)))
        .map(|(name, _)| *name)
        .collect();
    let mut rules = vec![json!({"names": refused, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM})];
    if !holds("CAP_SYS_ADMIN") {
        rules.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS}));
        // One rule a flag: the filter can only test a masked argument for equality.
        for flag in NAMESPACE_FLAGS {
            rules.push(json!({
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }));
        }
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": rules,
    })
}

/// The `linux.seccomp` of a container's spec, if it gets one.
pub fn filter(
    sc: &proto::LinuxContainerSecurityContext,
    capabilities: &[String],
) -> Result<Option<Value>> {
    if sc.privileged {
        return Ok(None);
    }
    use proto::security_profile::ProfileType;
    // Kubelets since 1.22 send `seccomp`; the deprecated path field is not read.
    let (kind, localhost) = match &sc.seccomp {
        Some(p) => (
            ProfileType::try_from(p.profile_type).unwrap_or(ProfileType::Unconfined),
            p.localhost_ref.clone(),
        ),
        None => (ProfileType::Unconfined, String::new()),
    };
    match kind {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => Ok(Some(runtime_default(capabilities))),
        ProfileType::Localhost => {
            if !localhost.starts_with('/') {
                return Err(Error::InvalidArgument(format!(
                    "seccomp profile {localhost:?} must be an absolute path"
                )));
            }
            let text = std::fs::read(&localhost).map_err(|e| {
                Error::InvalidArgument(format!("cannot load seccomp profile {localhost:?}: {e}"))
            })?;
            let profile: Value = serde_json::from_slice(&text).map_err(|e| {
                Error::InvalidArgument(format!("seccomp profile {localhost:?} is not JSON: {e}"))
            })?;
            Ok(Some(profile))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(filter: &Value) -> Vec<String> {
        filter["syscalls"][0]["names"]
            .as_array()
            .map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn capabilities_unlock_what_they_guard() {
        let plain = runtime_default(&["CAP_CHOWN".into()]);
        assert!(refused(&plain).contains(&"mount".to_string()));
        assert!(refused(&plain).contains(&"keyctl".to_string()));
        assert_eq!(plain["syscalls"].as_array().map(Vec::len), Some(1 + 1 + 7));
        let admin = runtime_default(&["CAP_SYS_ADMIN".into()]);
        assert!(!refused(&admin).contains(&"mount".to_string()));
        assert!(refused(&admin).contains(&"keyctl".to_string()));
        assert!(refused(&admin).contains(&"ptrace".to_string()));
        assert_eq!(
            admin["syscalls"].as_array().map(Vec::len),
            Some(1),
            "clone is free"
        );
    }

    #[test]
    fn profiles_by_kind() {
        let with = |profile_type: proto::security_profile::ProfileType, path: &str| {
            proto::LinuxContainerSecurityContext {
                seccomp: Some(proto::SecurityProfile {
                    profile_type: profile_type as i32,
                    localhost_ref: path.into(),
                }),
                ..Default::default()
            }
        };
        use proto::security_profile::ProfileType;
        assert!(filter(&with(ProfileType::Unconfined, ""), &[])
            .expect("ok")
            .is_none());
        assert!(filter(&with(ProfileType::RuntimeDefault, ""), &[])
            .expect("ok")
            .is_some());
        let mut privileged = with(ProfileType::RuntimeDefault, "");
        privileged.privileged = true;
        assert!(filter(&privileged, &[]).expect("ok").is_none());
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("profile.json");
        std::fs::write(&path, r#"{"defaultAction": "SCMP_ACT_LOG"}"#).expect("write");
        let local = filter(
            &with(ProfileType::Localhost, &path.display().to_string()),
            &[],
        )
        .expect("loads")
        .expect("a filter");
        assert_eq!(local["defaultAction"], "SCMP_ACT_LOG");
        assert!(filter(&with(ProfileType::Localhost, "relative.json"), &[]).is_err());
    }
}
