//! Pod networking through the standard CNI plugins (spec 1.0): the runtime
//! reads the first `*.conflist` in the config directory (writing a default
//! bridge + host-local one on first start if there is none), runs each plugin
//! with `ADD` when a sandbox is created, caches the result, and runs `DEL` in
//! reverse order with the cached result when the sandbox stops.
//!
//! The default network's subnet is `--pod-cidr` unless the node brings its own: the
//! kubelet sends the Node's `spec.podCIDR` through CRI `UpdateRuntimeConfig`, and
//! [`PodNetwork::set_pod_cidr`] rewrites the network Skiff wrote (as containerd renders
//! its CNI config template) — never a config someone else put in the directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, IoContext, Result};

/// Where CNI lives and what default network to write.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// Directory of network configs (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Plugin directories (`/usr/lib/cni`).
    pub plugin_dirs: Vec<PathBuf>,
    /// Result cache and host-local allocations.
    pub state_dir: PathBuf,
    /// Subnet of the default bridge network.
    pub default_subnet: String,
    /// Bridge name of the default network.
    pub default_bridge: String,
    /// Masquerade pod traffic leaving the node (iptables).
    pub ip_masq: bool,
    /// Write the default network only once the node's pod CIDR arrives (UpdateRuntimeConfig);
    /// until then the network is not ready.
    pub subnet_from_node: bool,
    /// MTU of pods' interfaces and the bridge (`None`: the plugin's, the link default).
    /// Below the node's own when pod traffic is tunnelled (VXLAN takes 50 bytes).
    pub mtu: Option<u32>,
}

/// The file the default network is written to; only this one is rewritten when the
/// node's pod CIDR arrives.
pub const DEFAULT_CONFLIST: &str = "10-skiff.conflist";

/// What the pod needs to tell the plugins about itself.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub sandbox_id: &'a str,
    pub netns: &'a Path,
    pub pod_name: &'a str,
    pub pod_namespace: &'a str,
    pub pod_uid: &'a str,
    /// CNI `portMappings` entries, for plugins with that capability.
    pub port_mappings: Vec<Value>,
}

pub const IFNAME: &str = "eth0";

/// A loaded network configuration list.
#[derive(Debug, Clone)]
pub struct Cni {
    pub config: CniConfig,
    pub list: Value,
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
}

/// What [`PodNetwork::set_pod_cidr`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCidrChange {
    /// The network already used that range.
    Unchanged,
    /// The default network was (re)written for the range.
    Applied,
    /// The network in use is not Skiff's default one: its own IPAM decides.
    NotOurs,
}

/// The runtime's pod network: the CNI config in use, which the node's pod CIDR may
/// replace while the runtime runs.
#[derive(Debug)]
pub struct PodNetwork {
    config: CniConfig,
    /// `None` while waiting for the node's pod CIDR.
    current: std::sync::RwLock<Option<std::sync::Arc<Cni>>>,
}

impl PodNetwork {
    /// Loads the network in `conf_dir`; with none there, writes the default one at once,
    /// or (with `subnet_from_node`) once the node's pod CIDR arrives.
    pub fn open(config: CniConfig) -> Result<PodNetwork> {
        let current = match first_conflist(&config)? {
            Some(path) => Some(Cni::load(config.clone(), path)?),
            None if config.subnet_from_node => None,
            None => Some(Cni::load_or_init(config.clone())?),
        };
        Ok(PodNetwork {
            config,
            current: std::sync::RwLock::new(current.map(std::sync::Arc::new)),
        })
    }

    /// The network pods join now.
    pub fn current(&self) -> Result<std::sync::Arc<Cni>> {
        self.current
            .read()
            .map_err(|_| Error::Internal("pod network lock poisoned".into()))?
            .clone()
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "network not ready: waiting for the node's pod CIDR (UpdateRuntimeConfig)"
                        .into(),
                )
            })
    }

    /// Why pods cannot get a network now (the `NetworkReady` condition), if they cannot.
    pub fn not_ready(&self) -> Option<String> {
        match self.current() {
            Err(e) => Some(e.to_string()),
            Ok(cni) => {
                let missing = cni.missing_plugins();
                (!missing.is_empty()).then(|| {
                    format!(
                        "CNI plugins {missing:?} not found; install containernetworking-plugins"
                    )
                })
            }
        }
    }

    /// Makes `cidr` (the node's `spec.podCIDR`) the default network's subnet. A network
    /// someone else wrote is left alone. The range changes only while no pod holds an
    /// address from the old one: their routes point at the bridge's old gateway address,
    /// which the new network takes away (`forceAddress`), so the change waits (an
    /// error the kubelet retries) until they are gone.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<PodCidrChange> {
        validate_cidr(cidr)?;
        let mut current = self
            .current
            .write()
            .map_err(|_| Error::Internal("pod network lock poisoned".into()))?;
        if let Some(cni) = current.as_ref() {
            if cni.path != self.config.conf_dir.join(DEFAULT_CONFLIST) {
                return Ok(PodCidrChange::NotOurs);
            }
            let old = subnet(&cni.list);
            if old.as_deref() == Some(cidr) {
                return Ok(PodCidrChange::Unchanged);
            }
            let attached = cni.attachments();
            if attached > 0 {
                return Err(Error::FailedPrecondition(format!(
                    "{attached} pod sandboxes hold addresses from {}; the pod network moves to {cidr} once they are gone",
                    old.unwrap_or_default()
                )));
            }
        }
        let replacing = current.is_some();
        let path = write_default(&self.config, cidr, replacing)?;
        tracing::info!(subnet = cidr, path = %path.display(), "pod network set to the node's pod CIDR");
        *current = Some(std::sync::Arc::new(Cni::load(self.config.clone(), path)?));
        Ok(PodCidrChange::Applied)
    }
}

/// The subnet of a network's first IPAM range.
fn subnet(list: &Value) -> Option<String> {
    list.pointer("/plugins/0/ipam/ranges/0/0/subnet")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn validate_cidr(cidr: &str) -> Result<()> {
    let valid = cidr.split_once('/').is_some_and(|(address, prefix)| {
        address.parse::<std::net::Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 32)
    });
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "pod CIDR {cidr:?} is not an IPv4 CIDR"
        )))
    }
}

/// The first conflist (by name) in the config directory, if any.
fn first_conflist(config: &CniConfig) -> Result<Option<PathBuf>> {
    std::fs::create_dir_all(&config.conf_dir).path_ctx("create", &config.conf_dir)?;
    let mut lists: Vec<PathBuf> = std::fs::read_dir(&config.conf_dir)
        .path_ctx("read", &config.conf_dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
        .collect();
    lists.sort();
    Ok(lists.into_iter().next())
}

/// Writes the default network for `subnet`; returns its path.
fn write_default(config: &CniConfig, subnet: &str, force_address: bool) -> Result<PathBuf> {
    let p = config.conf_dir.join(DEFAULT_CONFLIST);
    let mut list = default_conflist(config);
    list["plugins"][0]["ipam"]["ranges"] = json!([[{ "subnet": subnet }]]);
    if force_address {
        list["plugins"][0]["forceAddress"] = json!(true);
    }
    let data = serde_json::to_vec_pretty(&list).map_err(|e| Error::json("encode conflist", e))?;
    crate::images::store::write_atomic(&p, &data)?;
    Ok(p)
}

impl Cni {
    /// Loads the first conflist (by name) in `conf_dir`, writing the default
    /// one if the directory holds none.
    pub fn load_or_init(config: CniConfig) -> Result<Cni> {
        let path = match first_conflist(&config)? {
            Some(p) => p,
            None => {
                let p = write_default(&config, &config.default_subnet, false)?;
                tracing::info!(path = %p.display(), "wrote default CNI network");
                p
            }
        };
        Cni::load(config, path)
    }

    /// Loads the conflist at `path`.
    fn load(config: CniConfig, path: PathBuf) -> Result<Cni> {
        std::fs::create_dir_all(config.state_dir.join("results"))
            .path_ctx("create", &config.state_dir)?;
        let data = std::fs::read(&path).path_ctx("read", &path)?;
        let list: Value = serde_json::from_slice(&data)
            .map_err(|e| Error::json(format!("parse {}", path.display()), e))?;
        let name = list
            .get("name")
            .and_then(|n| n.as_str())
            .ok_or_else(|| Error::InvalidArgument(format!("{}: no name", path.display())))?
            .to_string();
        if !list.get("plugins").is_some_and(|p| p.is_array()) {
            return Err(Error::InvalidArgument(format!(
                "{}: no plugins list",
                path.display()
            )));
        }
        Ok(Cni {
            config,
            list,
            name,
            path,
        })
    }

    /// How many sandboxes hold an address on this network (a cached ADD result each,
    /// which DEL removes).
    fn attachments(&self) -> usize {
        let prefix = format!("{}-", self.name);
        std::fs::read_dir(self.config.state_dir.join("results")).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count()
        })
    }

    /// Plugin types of the network that no plugin directory holds.
    pub fn missing_plugins(&self) -> Vec<String> {
        self.plugins()
            .iter()
            .filter_map(|p| p.get("type").and_then(|t| t.as_str()))
            .filter(|t| self.find_plugin(t).is_err())
            .map(str::to_string)
            .collect()
    }

    fn plugins(&self) -> Vec<Value> {
        self.list
            .get("plugins")
            .and_then(|p| p.as_array())
            .cloned()
            .unwrap_or_default()
    }

    fn version(&self) -> String {
        self.list
            .get("cniVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("1.0.0")
            .to_string()
    }

    fn cache_path(&self, sandbox_id: &str) -> PathBuf {
        self.config
            .state_dir
            .join("results")
            .join(format!("{}-{sandbox_id}-{IFNAME}.json", self.name))
    }

    fn find_plugin(&self, kind: &str) -> Result<PathBuf> {
        self.config
            .plugin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "CNI plugin {kind:?} not found in {:?}; install the Debian package 'containernetworking-plugins'",
                    self.config.plugin_dirs
                ))
            })
    }

    async fn invoke(
        &self,
        command: &str,
        plugin: &Value,
        prev: Option<&Value>,
        att: &Attachment<'_>,
    ) -> Result<Value> {
        let kind = plugin
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or_else(|| Error::InvalidArgument("CNI plugin without type".into()))?;
        let bin = self.find_plugin(kind)?;
        let mut conf = plugin.clone();
        conf["name"] = json!(self.name);
        conf["cniVersion"] = json!(self.version());
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        if plugin.pointer("/capabilities/portMappings") == Some(&json!(true)) {
            conf["runtimeConfig"] = json!({"portMappings": att.port_mappings});
        }
        let stdin = serde_json::to_vec(&conf).map_err(|e| Error::json("encode CNI config", e))?;
        let path = std::env::join_paths(&self.config.plugin_dirs)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut child = tokio::process::Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", att.sandbox_id)
            .env("CNI_NETNS", att.netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", path)
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                    att.pod_namespace, att.pod_name, att.sandbox_id, att.pod_uid
                ),
            )
            // Plugins run iptables and ip: give them the usual PATH.
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .path_ctx("run CNI plugin", &bin)?;
        if let Some(mut i) = child.stdin.take() {
            i.write_all(&stdin)
                .await
                .path_ctx("write CNI config to", &bin)?;
        }
        let out = child.wait_with_output().await.path_ctx("wait for", &bin)?;
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if !out.status.success() {
            let msg = parsed
                .as_ref()
                .map(|v| {
                    format!(
                        "{} {}",
                        v.get("msg").and_then(|m| m.as_str()).unwrap_or(""),
                        v.get("details").and_then(|m| m.as_str()).unwrap_or("")
                    )
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned());
            return Err(Error::Internal(format!(
                "CNI {command} {kind} for {}: {}",
                att.sandbox_id,
                msg.trim()
            )));
        }
        Ok(parsed.unwrap_or(Value::Null))
    }

    /// Runs ADD through the chain; returns the pod's IPs (without prefix).
    pub async fn add(&self, att: &Attachment<'_>) -> Result<Vec<String>> {
        let mut prev: Option<Value> = None;
        for p in self.plugins() {
            let r = self.invoke("ADD", &p, prev.as_ref(), att).await?;
            if !r.is_null() {
                prev = Some(r);
            }
        }
        let result = prev.unwrap_or(Value::Null);
        let cache = json!({"kind": "cniCacheV1", "containerId": att.sandbox_id, "ifName": IFNAME, "networkName": self.name, "result": result});
        let data = serde_json::to_vec(&cache).map_err(|e| Error::json("encode CNI cache", e))?;
        crate::images::store::write_atomic(&self.cache_path(att.sandbox_id), &data)?;
        Ok(ips(&result))
    }

    /// Runs DEL through the chain in reverse. Idempotent: without a cached
    /// ADD result there is nothing to undo.
    pub async fn del(&self, att: &Attachment<'_>) -> Result<()> {
        let cache = self.cache_path(att.sandbox_id);
        let Ok(data) = std::fs::read(&cache) else {
            return Ok(());
        };
        let prev: Option<Value> = serde_json::from_slice::<Value>(&data)
            .ok()
            .and_then(|v| v.get("result").cloned())
            .filter(|v| !v.is_null());
        for p in self.plugins().iter().rev() {
            self.invoke("DEL", p, prev.as_ref(), att).await?;
        }
        let _ = std::fs::remove_file(&cache);
        Ok(())
    }
}

/// The addresses of a CNI result, without prefix length.
pub fn ips(result: &Value) -> Vec<String> {
    result
        .get("ips")
        .and_then(|i| i.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip.get("address").and_then(|x| x.as_str()))
                .map(|addr| addr.split('/').next().unwrap_or(addr).to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The kernel settings pod networking relies on, as k3s's agent sets them: forwarding,
/// and bridged traffic passing through netfilter (`br_netfilter`), without which a reply
/// between two pods on one bridge skips the connection tracking that undoes a Service's
/// DNAT (and NetworkPolicy never sees pod-to-pod traffic). Failures are logged, not
/// fatal: the module may be built in, or the settings made by the host's owner.
pub fn prepare_host() {
    let _ = std::process::Command::new("modprobe")
        .arg("br_netfilter")
        .stderr(std::process::Stdio::null())
        .status();
    for (setting, value) in [
        ("/proc/sys/net/ipv4/ip_forward", "1"),
        ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1"),
        ("/proc/sys/net/bridge/bridge-nf-call-ip6tables", "1"),
    ] {
        let current = std::fs::read_to_string(setting).unwrap_or_default();
        if current.trim() == value {
            continue;
        }
        if let Err(error) = std::fs::write(setting, value) {
            tracing::warn!(setting, %error, "could not set a kernel setting pod networking needs");
        }
    }
}

pub fn default_conflist(c: &CniConfig) -> Value {
    let mut list = json!({
        "cniVersion": "1.0.0",
        "name": "skiff",
        "plugins": [
            {
                "type": "bridge",
                "bridge": c.default_bridge,
                "isGateway": true,
                "ipMasq": c.ip_masq,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": c.default_subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": c.state_dir.join("networks"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    if let Some(mtu) = c.mtu {
        list["plugins"][0]["mtu"] = json!(mtu);
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_from_result() {
        let r = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.88.0.7/16", "gateway": "10.88.0.1"}]});
        assert_eq!(ips(&r), vec!["10.88.0.7".to_string()]);
        assert!(ips(&Value::Null).is_empty());
    }

    #[test]
    fn writes_default_conflist_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let cfg = CniConfig {
            conf_dir: d.path().join("net.d"),
            plugin_dirs: vec![d.path().join("bin")],
            state_dir: d.path().join("state"),
            default_subnet: "10.88.0.0/16".into(),
            default_bridge: "skiff0".into(),
            ip_masq: true,
            subnet_from_node: false,
            mtu: None,
        };
        let c = Cni::load_or_init(cfg.clone()).expect("init");
        assert_eq!(c.name, "skiff");
        assert_eq!(c.plugins()[0]["type"], "bridge");
        assert!(c.plugins()[0].get("mtu").is_none(), "the plugin's own MTU");
        let again = Cni::load_or_init(cfg).expect("reload");
        assert_eq!(again.list, c.list);
    }

    fn from_node_config(dir: &Path) -> CniConfig {
        CniConfig {
            conf_dir: dir.join("net.d"),
            plugin_dirs: vec![dir.join("bin")],
            state_dir: dir.join("state"),
            default_subnet: "10.88.0.0/16".into(),
            default_bridge: "skiff0".into(),
            ip_masq: false,
            subnet_from_node: true,
            mtu: Some(1450),
        }
    }

    #[test]
    fn waits_for_the_node_pod_cidr_then_follows_it_while_no_pod_holds_an_address() {
        let d = tempfile::tempdir().expect("tempdir");
        let cfg = from_node_config(d.path());
        let net = PodNetwork::open(cfg.clone()).expect("open");
        assert!(net.current().is_err(), "no network before the pod CIDR");
        assert!(net.not_ready().is_some_and(|m| m.contains("pod CIDR")));
        assert!(net.set_pod_cidr("10.42.0.0/x").is_err());

        assert_eq!(
            net.set_pod_cidr("10.42.1.0/24").expect("pod CIDR"),
            PodCidrChange::Applied
        );
        let cni = net.current().expect("network");
        assert_eq!(subnet(&cni.list).as_deref(), Some("10.42.1.0/24"));
        assert_eq!(cni.list["plugins"][0]["ipMasq"], false);
        assert_eq!(cni.list["plugins"][0]["mtu"], 1450);
        assert_eq!(
            net.set_pod_cidr("10.42.1.0/24").expect("pod CIDR"),
            PodCidrChange::Unchanged
        );

        // A pod holds an address from the range: the move waits for it.
        let cache = cni.cache_path("sandbox1");
        std::fs::write(&cache, "{}").expect("cache");
        assert!(net.set_pod_cidr("10.42.7.0/24").is_err());
        assert_eq!(
            subnet(&net.current().expect("net").list).as_deref(),
            Some("10.42.1.0/24")
        );
        std::fs::remove_file(&cache).expect("rm");
        assert_eq!(
            net.set_pod_cidr("10.42.7.0/24").expect("pod CIDR"),
            PodCidrChange::Applied
        );
        let moved = net.current().expect("network");
        assert_eq!(subnet(&moved.list).as_deref(), Some("10.42.7.0/24"));
        assert_eq!(moved.list["plugins"][0]["forceAddress"], true);

        // A restarted runtime finds the node's range on disk and is ready at once.
        let again = PodNetwork::open(cfg).expect("reopen");
        assert_eq!(
            subnet(&again.current().expect("net").list).as_deref(),
            Some("10.42.7.0/24")
        );
    }

    #[test]
    fn leaves_a_network_it_did_not_write_alone() {
        let d = tempfile::tempdir().expect("tempdir");
        let cfg = from_node_config(d.path());
        std::fs::create_dir_all(&cfg.conf_dir).expect("mkdir");
        let own = json!({"cniVersion": "1.0.0", "name": "theirs", "plugins": [{"type": "bridge",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "192.168.5.0/24"}]]}}]});
        std::fs::write(cfg.conf_dir.join("05-theirs.conflist"), own.to_string()).expect("write");
        let net = PodNetwork::open(cfg.clone()).expect("open");
        assert_eq!(
            net.set_pod_cidr("10.42.1.0/24").expect("pod CIDR"),
            PodCidrChange::NotOurs
        );
        assert_eq!(net.current().expect("net").name, "theirs");
        assert!(!cfg.conf_dir.join(DEFAULT_CONFLIST).exists());
    }
}
