//! Pod sandboxes: `RunPodSandbox`, `StopPodSandbox`, `RemovePodSandbox`,
//! status and listing.
//!
//! A sandbox is a set of new network, IPC and UTS namespaces, made on a thread
//! of their own and bind-mounted under the sandbox directory, so that containers
//! and CNI join them by path, even after a runtime restart. The mounts keep them
//! alive, as CRI-O's `pinns` does: no pause process or image is needed, and a pod
//! costs no process of its own beyond its containers' monitors.
//!
//! A pod that shares its process namespace (CRI `POD` PID mode) gets a PID
//! namespace too, which needs an init: a holder process of ours (see
//! [`crate::shim`]) is started in the pod's namespaces and forks it (the holder
//! itself stays outside, as `unshare` leaves the caller), so containers join a
//! namespace whose PID 1 outlives each of them and reaps their orphans, as
//! upstream's pause does. A sandbox with no namespace of its own (host network
//! and IPC) gets a holder too, whose life marks the sandbox's.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{load, new_id, save, Runtime};
use crate::error::{Error, IoContext, Result};
use crate::proto;
use crate::spec::SandboxNamespaces;
use crate::sys;

pub const RECORD: &str = "sandbox.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    pub created_at: i64,
    pub hostname: String,
    pub log_directory: String,
    pub runtime_handler: String,
    pub cgroup_parent: String,
    /// Whether we made `cgroup_parent` (and so remove it).
    pub own_cgroup: bool,
    /// The holder process, or 0 when the namespaces' mounts keep them alone.
    pub holder_pid: i32,
    pub ready: bool,
    /// The pod has a PID namespace of its own, which its containers may join.
    #[serde(default)]
    pub pod_pid: bool,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    #[serde(default)]
    pub ip: String,
    /// The pod's sysctls, set in each of its containers (whose namespaces they concern
    /// are the pod's).
    #[serde(default)]
    pub sysctls: std::collections::BTreeMap<String, String>,
}

impl SandboxRecord {
    pub fn key(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.name, self.namespace, self.uid, self.attempt
        )
    }
}

fn mode(o: Option<&proto::NamespaceOption>, f: fn(&proto::NamespaceOption) -> i32) -> bool {
    o.map(f) == Some(proto::NamespaceMode::Node as i32)
}

fn resolv_conf(dns: Option<&proto::DnsConfig>) -> String {
    match dns {
        Some(d) if !d.servers.is_empty() || !d.searches.is_empty() || !d.options.is_empty() => {
            let mut s = String::new();
            if !d.searches.is_empty() {
                s += &format!("search {}\n", d.searches.join(" "));
            }
            for n in &d.servers {
                s += &format!("nameserver {n}\n");
            }
            if !d.options.is_empty() {
                s += &format!("options {}\n", d.options.join(" "));
            }
            s
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}

impl Runtime {
    pub(crate) fn sandbox_namespaces(&self, sb: &SandboxRecord) -> SandboxNamespaces {
        let ns = self.sandbox_dir(&sb.id).join("ns");
        SandboxNamespaces {
            net: (!sb.host_network).then(|| ns.join("net")),
            ipc: (!sb.host_ipc).then(|| ns.join("ipc")),
            uts: (!sb.host_network).then(|| ns.join("uts")),
            host_pid: sb.host_pid,
            pid: None,
        }
    }

    /// The pod's PID namespace, when it has one.
    pub(crate) fn pod_pid_namespace(&self, sb: &SandboxRecord) -> Option<PathBuf> {
        sb.pod_pid
            .then(|| self.sandbox_dir(&sb.id).join("ns").join("pid"))
    }

    /// Files each container of the sandbox gets bind-mounted.
    pub(crate) fn sandbox_files(&self, sb: &SandboxRecord) -> Vec<(String, PathBuf)> {
        let d = self.sandbox_dir(&sb.id);
        vec![
            ("/etc/hostname".into(), d.join("hostname")),
            ("/etc/resolv.conf".into(), d.join("resolv.conf")),
            ("/etc/hosts".into(), d.join("hosts")),
        ]
    }

    pub async fn run_pod_sandbox(
        &self,
        config: proto::PodSandboxConfig,
        handler: String,
    ) -> Result<String> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("sandbox metadata is required".into()))?;
        if meta.name.is_empty() {
            return Err(Error::InvalidArgument("sandbox name is required".into()));
        }
        let linux = config.linux.clone().unwrap_or_default();
        let ns_opts = linux
            .security_context
            .as_ref()
            .and_then(|s| s.namespace_options.clone());
        let id = new_id();
        let cgroup_parent = if linux.cgroup_parent.is_empty() {
            format!(
                "{}/{}",
                self.config.cgroup_parent.trim_end_matches('/'),
                &id[..12]
            )
        } else {
            linux.cgroup_parent.clone()
        };
        let hostname = if config.hostname.is_empty() {
            meta.name.clone()
        } else {
            config.hostname.clone()
        };
        let mut rec = SandboxRecord {
            id: id.clone(),
            name: meta.name,
            uid: meta.uid,
            namespace: meta.namespace,
            attempt: meta.attempt,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            created_at: crate::shim::now_nanos(),
            hostname: hostname.clone(),
            log_directory: config.log_directory.clone(),
            runtime_handler: handler,
            own_cgroup: linux.cgroup_parent.is_empty(),
            cgroup_parent,
            holder_pid: 0,
            ready: false,
            host_network: mode(ns_opts.as_ref(), |o| o.network),
            host_ipc: mode(ns_opts.as_ref(), |o| o.ipc),
            host_pid: mode(ns_opts.as_ref(), |o| o.pid),
            // No options at all means every namespace in its default mode, which for
            // PID is the pod's (CRI's `POD` is 0), as containerd reads it too.
            pod_pid: ns_opts
                .as_ref()
                .is_none_or(|o| o.pid == proto::NamespaceMode::Pod as i32),
            ip: String::new(),
            sysctls: linux.sysctls.clone().into_iter().collect(),
        };
        {
            let mut st = self.state.lock().await;
            if let Some(other) = st.sandboxes.values().find(|s| s.key() == rec.key()) {
                return Err(Error::AlreadyExists(format!(
                    "sandbox name {:?} (reserved for {})",
                    rec.key(),
                    other.id
                )));
            }
            st.sandboxes.insert(id.clone(), rec.clone());
        }
        match self.setup_sandbox(&mut rec, &config).await {
            Ok(()) => {
                rec.ready = true;
                save(&self.sandbox_dir(&id).join(RECORD), &rec)?;
                self.state.lock().await.sandboxes.insert(id.clone(), rec);
                tracing::info!(sandbox = %id, "sandbox ready");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "sandbox setup failed; cleaning up");
                let _ = self.teardown_sandbox(&rec).await;
                let _ = std::fs::remove_dir_all(self.sandbox_dir(&id));
                self.state.lock().await.sandboxes.remove(&id);
                Err(e)
            }
        }
    }

    async fn setup_sandbox(
        &self,
        rec: &mut SandboxRecord,
        config: &proto::PodSandboxConfig,
    ) -> Result<()> {
        let dir = self.sandbox_dir(&rec.id);
        let nsdir = dir.join("ns");
        std::fs::create_dir_all(&nsdir).path_ctx("create", &nsdir)?;
        let write = |name: &str, data: String| {
            let p = dir.join(name);
            std::fs::write(&p, data).path_ctx("write", &p)
        };
        write("hostname", format!("{}\n", rec.hostname))?;
        write("resolv.conf", resolv_conf(config.dns_config.as_ref()))?;
        write(
            "hosts",
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
                rec.hostname
            ),
        )?;
        save(&dir.join(RECORD), rec)?;

        let mut flags = nix::sched::CloneFlags::empty();
        if !rec.host_network {
            flags |= nix::sched::CloneFlags::CLONE_NEWNET | nix::sched::CloneFlags::CLONE_NEWUTS;
        }
        if !rec.host_ipc {
            flags |= nix::sched::CloneFlags::CLONE_NEWIPC;
        }
        if rec.pod_pid {
            flags |= nix::sched::CloneFlags::CLONE_NEWPID;
        }
        let hostname = (!rec.host_network).then(|| rec.hostname.clone());
        // The namespaces, each bind-mounted as `ns/<kind>` from the `/proc/.../ns` entry
        // that names it.
        let pinned: Vec<(&str, &str)> = [
            ("net", "net", !rec.host_network),
            ("ipc", "ipc", !rec.host_ipc),
            ("uts", "uts", !rec.host_network),
            // The holder's children's namespace: the one its PID 1 child is in.
            ("pid", "pid_for_children", rec.pod_pid),
        ]
        .into_iter()
        .filter(|(_, _, wanted)| *wanted)
        .map(|(kind, source, _)| (kind, source))
        .collect();
        // A pod PID namespace needs a process as its init, and a sandbox with no
        // namespace of its own is alive only as long as some process says so; any
        // other sandbox's namespaces live on in their mounts alone.
        if rec.pod_pid || pinned.is_empty() {
            let pid = self.start_holder(&dir, flags, hostname).await?;
            rec.holder_pid = pid;
            bind_namespaces(&pid.to_string(), &pinned, &nsdir)?;
        } else {
            pin_namespaces(flags, hostname, pinned, nsdir.clone()).await?;
        }
        if let (Some(network), false) = (&self.cni, rec.host_network) {
            let cni = network.current()?;
            let netns = nsdir.join("net");
            let ips = cni.add(&attachment(rec, &netns, config)).await?;
            if let Some(ip) = ips.first() {
                rec.ip = ip.clone();
                write(
                    "hosts",
                    format!(
                        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{}\n",
                        rec.hostname
                    ),
                )?;
            }
        }
        Ok(())
    }

    /// Kills the holder and releases the namespace files. Idempotent.
    async fn teardown_sandbox(&self, rec: &SandboxRecord) -> Result<()> {
        if sys::process_alive(rec.holder_pid) && holder_is_ours(rec.holder_pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(rec.holder_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let nsdir = self.sandbox_dir(&rec.id).join("ns");
        // Without a network yet, no sandbox can have joined one.
        let network = self.cni.as_ref().and_then(|n| n.current().ok());
        if let (Some(cni), false) = (network, rec.host_network) {
            let netns = nsdir.join("net");
            // DEL needs the namespace (for the veth); the cached result is
            // enough for IPAM if it is already gone.
            cni.del(&attachment(
                rec,
                &netns,
                &proto::PodSandboxConfig::default(),
            ))
            .await?;
        }
        for kind in ["net", "ipc", "uts", "pid"] {
            sys::unmount(&nsdir.join(kind))?;
        }
        Ok(())
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let rec = {
            let st = self.state.lock().await;
            match Self::find_sandbox(&st, id) {
                Ok(r) => r,
                // Stop is idempotent, and the kubelet may retry after removal.
                Err(Error::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        };
        let containers: Vec<String> = {
            let st = self.state.lock().await;
            st.containers
                .values()
                .filter(|c| c.sandbox_id == rec.id)
                .map(|c| c.id.clone())
                .collect()
        };
        for c in containers {
            self.stop_container(&c, 0).await?;
        }
        self.teardown_sandbox(&rec).await?;
        let mut st = self.state.lock().await;
        if let Some(r) = st.sandboxes.get_mut(&rec.id) {
            r.ready = false;
            save(&self.sandbox_dir(&rec.id).join(RECORD), r)?;
        }
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let rec = {
            let st = self.state.lock().await;
            match Self::find_sandbox(&st, id) {
                Ok(r) => r,
                Err(Error::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            }
        };
        self.stop_pod_sandbox(&rec.id).await?;
        let containers: Vec<String> = {
            let st = self.state.lock().await;
            st.containers
                .values()
                .filter(|c| c.sandbox_id == rec.id)
                .map(|c| c.id.clone())
                .collect()
        };
        for c in containers {
            self.remove_container(&c).await?;
        }
        if rec.own_cgroup {
            sys::remove_cgroup(&rec.cgroup_parent);
        }
        let dir = self.sandbox_dir(&rec.id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).path_ctx("remove", &dir)?;
        }
        self.state.lock().await.sandboxes.remove(&rec.id);
        tracing::info!(sandbox = %rec.id, "sandbox removed");
        Ok(())
    }

    pub async fn sandbox(&self, id: &str) -> Result<SandboxRecord> {
        let st = self.state.lock().await;
        let mut r = Self::find_sandbox(&st, id)?;
        // A holder that died (or a reboot) makes the sandbox not ready.
        if r.ready && !sandbox_alive(self, &r) {
            r.ready = false;
        }
        Ok(r)
    }

    pub async fn sandboxes(&self) -> Vec<SandboxRecord> {
        let st = self.state.lock().await;
        st.sandboxes
            .values()
            .cloned()
            .map(|mut r| {
                if r.ready && !sandbox_alive(self, &r) {
                    r.ready = false;
                }
                r
            })
            .collect()
    }

    /// A connection to `port` on the sandbox's loopback (the host's for a sandbox on the
    /// host network): what a port forward carries.
    pub async fn connect_to_port(
        &self,
        id: &str,
        port: u16,
    ) -> std::io::Result<tokio::net::TcpStream> {
        let sandbox = self
            .sandbox(id)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
        if !sandbox.ready {
            return Err(std::io::Error::other(format!(
                "pod sandbox {id} is not ready"
            )));
        }
        let Some(netns) = self.sandbox_namespaces(&sandbox).net else {
            return tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
        };
        let connection = sys::connect_in_netns(&netns, port).await?;
        connection.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(connection)
    }

    /// Re-reads a record from disk (used by tests of recovery).
    pub fn load_sandbox_record(&self, id: &str) -> Result<SandboxRecord> {
        load(&self.sandbox_dir(id).join(RECORD))
    }
}

fn attachment<'a>(
    rec: &'a SandboxRecord,
    netns: &'a std::path::Path,
    config: &proto::PodSandboxConfig,
) -> crate::network::Attachment<'a> {
    let port_mappings = config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let proto = match proto::Protocol::try_from(p.protocol) {
                Ok(proto::Protocol::Udp) => "udp",
                Ok(proto::Protocol::Sctp) => "sctp",
                _ => "tcp",
            };
            serde_json::json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": proto,
                "hostIP": p.host_ip,
            })
        })
        .collect();
    crate::network::Attachment {
        sandbox_id: &rec.id,
        netns,
        pod_name: &rec.name,
        pod_namespace: &rec.namespace,
        pod_uid: &rec.uid,
        port_mappings,
    }
}

/// Waits for the holder's `ready` line: its pod PID 1, if any, is running.
impl Runtime {
    /// Starts the sandbox holder in new namespaces (`flags`) and waits until it is ready;
    /// its pid.
    async fn start_holder(
        &self,
        dir: &std::path::Path,
        flags: nix::sched::CloneFlags,
        hostname: Option<String>,
    ) -> Result<i32> {
        let log = std::fs::File::create(dir.join("holder.log"))
            .path_ctx("create", &dir.join("holder.log"))?;
        let mut cmd = tokio::process::Command::new(&self.config.shim);
        cmd.arg(crate::shim::SANDBOX_ARG)
            .stdin(std::process::Stdio::null())
            // The holder says on stdout when the pod's PID 1 runs (or at once without
            // a PID namespace); no container may join before, or it would be PID 1.
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(false);
        // SAFETY: between fork and exec we only make async-signal-safe syscalls
        // (setsid, unshare, sethostname) on data captured before the fork.
        unsafe {
            cmd.as_std_mut().pre_exec(move || {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                nix::sched::unshare(flags).map_err(std::io::Error::from)?;
                if let Some(hostname) = &hostname {
                    nix::unistd::sethostname(hostname).map_err(std::io::Error::from)?;
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .ctx(|| format!("start sandbox holder {}", self.config.shim.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| Error::Internal("sandbox holder exited at once".into()))?
            as i32;
        wait_for_holder(&mut child).await?;
        // The child handle is dropped: tokio reaps it if it exits while we run,
        // and it outlives us otherwise.
        drop(child);
        Ok(pid)
    }
}

/// Makes the sandbox's namespaces (`flags`) and bind-mounts each (`/proc/thread-self/ns/
/// <source>`) on its target, as CRI-O's `pinns` does: the mounts keep them alive, and no
/// process of the pod's needs to stay behind. A thread of its own does it, which ends
/// with it: a thread's namespaces cannot be given back, so no pooled thread may run it.
async fn pin_namespaces(
    flags: nix::sched::CloneFlags,
    hostname: Option<String>,
    pinned: Vec<(&'static str, &'static str)>,
    nsdir: PathBuf,
) -> Result<()> {
    let (done, outcome) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("skiff-pinns".into())
        .spawn(move || {
            let _ = done.send(pin_on_this_thread(
                flags,
                hostname.as_deref(),
                &pinned,
                &nsdir,
            ));
        })
        .ctx(|| "start a thread to make the sandbox's namespaces".into())?;
    outcome
        .await
        .map_err(|_| Error::Internal("the thread making the sandbox's namespaces died".into()))?
}

fn pin_on_this_thread(
    flags: nix::sched::CloneFlags,
    hostname: Option<&str>,
    pinned: &[(&str, &str)],
    nsdir: &std::path::Path,
) -> Result<()> {
    nix::sched::unshare(flags).ctx(|| "make the sandbox's namespaces".into())?;
    if let Some(hostname) = hostname {
        nix::unistd::sethostname(hostname).ctx(|| format!("set the host name {hostname:?}"))?;
    }
    if flags.contains(nix::sched::CloneFlags::CLONE_NEWNET) {
        crate::shim::set_loopback_up().ctx(|| "bring up the sandbox's loopback".into())?;
    }
    bind_namespaces("thread-self", pinned, nsdir)
}

/// Bind-mounts each `(kind, source)` namespace of `/proc/<process>/ns/<source>` on
/// `nsdir/<kind>`, where containers and CNI find it.
fn bind_namespaces(process: &str, pinned: &[(&str, &str)], nsdir: &std::path::Path) -> Result<()> {
    for (kind, source) in pinned {
        let target = nsdir.join(kind);
        std::fs::File::create(&target).path_ctx("create", &target)?;
        sys::bind(
            &PathBuf::from(format!("/proc/{process}/ns/{source}")),
            &target,
        )?;
    }
    Ok(())
}

/// Whether the sandbox's namespaces still exist: its holder runs, or (without one) its
/// namespaces are still mounted (a reboot unmounts them).
fn sandbox_alive(runtime: &Runtime, sandbox: &SandboxRecord) -> bool {
    if sandbox.holder_pid != 0 {
        return holder_is_ours(sandbox.holder_pid);
    }
    ["net", "ipc", "uts"]
        .iter()
        .map(|kind| runtime.sandbox_dir(&sandbox.id).join("ns").join(kind))
        .find(|file| file.exists())
        .is_some_and(|file| sys::is_namespace(&file))
}

async fn wait_for_holder(holder: &mut tokio::process::Child) -> Result<()> {
    use tokio::io::AsyncBufReadExt;
    let Some(stdout) = holder.stdout.take() else {
        return Err(Error::Internal("sandbox holder has no stdout".into()));
    };
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(stdout);
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        reader.read_line(&mut line),
    )
    .await;
    match read {
        Ok(Ok(_)) if line.trim() == "ready" => Ok(()),
        outcome => {
            let _ = holder.start_kill();
            Err(Error::Internal(format!(
                "sandbox holder did not start (it said {:?}; {outcome:?}); see its holder.log",
                line.trim()
            )))
        }
    }
}

/// Guards against pid reuse after a reboot or a long downtime: only signal a
/// process that runs our sandbox holder.
fn holder_is_ours(pid: i32) -> bool {
    sys::process_runs(pid, crate::shim::SANDBOX_ARG)
}
