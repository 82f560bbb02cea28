//! The kubelet-managed `/etc/hosts` of a pod's containers, as upstream's kubelet
//! writes it: for a pod on its own network, a file naming `localhost`, the usual IPv6
//! names and the pod's addresses with its hostname (and its FQDN,
//! `<hostname>.<subdomain>.<namespace>.svc.<cluster domain>`, when it has a
//! subdomain); for a pod on the host's network, the node's own file. Either way the
//! pod's `hostAliases` follow. The file lives in the pod's directory and is
//! bind-mounted into each container that does not mount `/etc/hosts` itself.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, HostAlias, Pod};
use skiff_runtime::proto;

use crate::error::{Error, Result};
use crate::spec::{hostname, pod_namespace};

/// Where containers see the file.
pub const ETC_HOSTS: &str = "/etc/hosts";

const MANAGED_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const MANAGED_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";

/// The file of a pod on its own network with `ips`.
pub fn managed_content(
    ips: &[String],
    hostname: &str,
    domain: Option<&str>,
    aliases: &[HostAlias],
) -> String {
    let mut out = String::from(MANAGED_HEADER);
    out += "127.0.0.1\tlocalhost\n";
    out += "::1\tlocalhost ip6-localhost ip6-loopback\n";
    out += "fe00::0\tip6-localnet\n";
    out += "fe00::0\tip6-mcastprefix\n";
    out += "fe00::1\tip6-allnodes\n";
    out += "fe00::2\tip6-allrouters\n";
    for ip in ips {
        match domain {
            Some(domain) => out += &format!("{ip}\t{hostname}.{domain}\t{hostname}\n"),
            None => out += &format!("{ip}\t{hostname}\n"),
        }
    }
    out + &alias_entries(aliases)
}

/// The file of a pod on the host's network: the node's `/etc/hosts` as it is.
pub fn host_network_content(node_hosts: &str, aliases: &[HostAlias]) -> String {
    format!(
        "{MANAGED_HEADER_HOST_NETWORK}{node_hosts}{}",
        alias_entries(aliases)
    )
}

/// One line per alias IP, its names tab-separated, after a blank line and a comment.
fn alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.clone().unwrap_or_default().join("\t");
        out += &format!("{}\t{names}\n", alias.ip);
    }
    out
}

/// The pod's DNS domain for its hostname: `<subdomain>.<namespace>.svc.<cluster domain>`
/// when it names a subdomain.
pub fn host_domain(pod: &Pod, cluster_domain: &str) -> Option<String> {
    let subdomain = pod.spec.as_ref()?.subdomain.as_deref()?;
    (!subdomain.is_empty())
        .then(|| format!("{subdomain}.{}.svc.{cluster_domain}", pod_namespace(pod)))
}

/// Whether the container mounts a volume at `/etc/hosts` itself (then it keeps it).
pub fn mounts_its_own(c: &Container) -> bool {
    c.volume_mounts
        .iter()
        .flatten()
        .any(|m| Path::new(&m.mount_path) == Path::new(ETC_HOSTS))
}

/// Writes the pod's file under `pod_dir` and returns the mount of it for `c`; `None`
/// when `c` mounts `/etc/hosts` itself, or when a pod on its own network has no
/// address yet (upstream mounts the file only once the pod has IPs).
pub fn mount(
    pod_dir: &Path,
    pod: &Pod,
    c: &Container,
    ips: &[String],
    cluster_domain: &str,
    node_hosts: &Path,
) -> Result<Option<proto::Mount>> {
    if mounts_its_own(c) {
        return Ok(None);
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let aliases = spec.host_aliases.unwrap_or_default();
    let content = if spec.host_network == Some(true) {
        let node = std::fs::read_to_string(node_hosts)
            .map_err(Error::io(format!("read {}", node_hosts.display())))?;
        host_network_content(&node, &aliases)
    } else if ips.is_empty() {
        return Ok(None);
    } else {
        let domain = host_domain(pod, cluster_domain);
        managed_content(ips, &hostname(pod), domain.as_deref(), &aliases)
    };
    let path: PathBuf = pod_dir.join("etc-hosts");
    std::fs::create_dir_all(pod_dir).map_err(Error::io(format!("create {}", pod_dir.display())))?;
    std::fs::write(&path, content).map_err(Error::io(format!("write {}", path.display())))?;
    Ok(Some(proto::Mount {
        container_path: ETC_HOSTS.to_string(),
        host_path: path.display().to_string(),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(ip: &str, names: &[&str]) -> HostAlias {
        HostAlias {
            ip: ip.to_string(),
            hostnames: Some(names.iter().map(|n| n.to_string()).collect()),
        }
    }

    #[test]
    fn a_pods_own_file_names_its_addresses_fqdn_and_aliases() {
        let file = managed_content(
            &["10.88.0.7".to_string()],
            "dns-querier-1",
            Some("dns-test-service.ns.svc.cluster.local"),
            &[
                alias("123.45.67.89", &["foo", "bar"]),
                alias("1.2.3.4", &["baz"]),
            ],
        );
        assert_eq!(
            file,
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n\
             10.88.0.7\tdns-querier-1.dns-test-service.ns.svc.cluster.local\tdns-querier-1\n\
             \n\
             # Entries added by HostAliases.\n\
             123.45.67.89\tfoo\tbar\n\
             1.2.3.4\tbaz\n"
        );
        let plain = managed_content(&["10.88.0.7".to_string()], "web", None, &[]);
        assert!(
            plain.ends_with("fe00::2\tip6-allrouters\n10.88.0.7\tweb\n"),
            "{plain}"
        );
    }

    #[test]
    fn a_host_network_pod_gets_the_nodes_file_under_its_own_header() {
        let node = "127.0.0.1 localhost\n192.168.1.5 node-1\n";
        assert_eq!(
            host_network_content(node, &[]),
            format!("# Kubernetes-managed hosts file (host network).\n{node}")
        );
        assert!(host_network_content(node, &[alias("1.2.3.4", &["a"])])
            .ends_with("node-1\n\n# Entries added by HostAliases.\n1.2.3.4\ta\n"));
    }

    #[test]
    fn the_file_is_written_and_mounted_unless_the_container_mounts_its_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let node_hosts = dir.path().join("node-hosts");
        std::fs::write(&node_hosts, "127.0.0.1 localhost\n").expect("write");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"hostname": "h", "subdomain": "s", "containers": []}
        }))
        .expect("pod");
        let plain = Container {
            name: "a".into(),
            ..Default::default()
        };
        let own: Container = serde_json::from_value(serde_json::json!({
            "name": "b",
            "volumeMounts": [{"name": "v", "mountPath": "/etc/hosts"}]
        }))
        .expect("container");
        let pod_dir = dir.path().join("pod");
        let ips = ["10.88.0.9".to_string()];
        let m = mount(&pod_dir, &pod, &plain, &ips, "cluster.local", &node_hosts)
            .expect("mount")
            .expect("mounted");
        assert_eq!(m.container_path, "/etc/hosts");
        let written = std::fs::read_to_string(&m.host_path).expect("read");
        assert!(
            written.contains("10.88.0.9\th.s.ns.svc.cluster.local\th\n"),
            "{written}"
        );
        assert!(
            mount(&pod_dir, &pod, &own, &ips, "cluster.local", &node_hosts)
                .expect("mount")
                .is_none()
        );
        // No address yet: nothing mounted.
        assert!(
            mount(&pod_dir, &pod, &plain, &[], "cluster.local", &node_hosts)
                .expect("mount")
                .is_none()
        );
        // On the host's network, the node's file.
        let mut host = pod.clone();
        host.spec.as_mut().expect("spec").host_network = Some(true);
        let m = mount(&pod_dir, &host, &plain, &[], "cluster.local", &node_hosts)
            .expect("mount")
            .expect("mounted");
        assert_eq!(
            std::fs::read_to_string(&m.host_path).expect("read"),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
        );
    }
}
