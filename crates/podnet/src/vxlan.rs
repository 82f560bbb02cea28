//! The VXLAN backend, for nodes that do not share an L2 network (flannel's `vxlan`
//! backend, k3s's default): every node has a VXLAN device ([`DEVICE`], VNI 1, UDP 8472)
//! whose address is the network address of its pod range (`10.42.1.0/32` for
//! `10.42.1.0/24`), and publishes the device's MAC address on its Node
//! ([`MAC_ANNOTATION`]). For each other node this node then keeps:
//!
//! - a route: `<its podCIDR> via <its range's network address> dev skiff.vxlan onlink`;
//! - a neighbour entry: that address → its device's MAC (no ARP across the tunnel);
//! - a forwarding entry: that MAC → its InternalIP (where to send the encapsulated frame).
//!
//! So a packet for another node's pod goes into the tunnel, addressed to that node's
//! device, and comes out on that node, which routes it to the pod on its bridge. Only the
//! nodes' InternalIPs need to reach each other (UDP 8472), through any router.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use skiff_proxy::Ipv4Cidr;

use crate::routes::{internal_ip, ip, pod_cidr, run, Routes};
use crate::Error;

/// The VXLAN device every node has.
pub const DEVICE: &str = "skiff.vxlan";
/// Where a node publishes its device's MAC address.
pub const MAC_ANNOTATION: &str = "skiff.io/vxlan-mac";
/// The VXLAN network identifier and UDP port (flannel's and the kernel's usual ones).
const VNI: &str = "1";
const PORT: &str = "8472";
/// The device's MTU: 50 bytes of outer headers (IPv4, UDP, VXLAN, Ethernet) inside a
/// 1500-byte path. Pods' interfaces get the same.
pub const MTU: u32 = 1450;

/// Another node as this node's tunnel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The node's InternalIP: where encapsulated frames go.
    pub node_ip: Ipv4Addr,
    /// Its VXLAN device's MAC address.
    pub mac: String,
}

/// The tunnel address of a node with pod range `cidr`: the range's network address.
pub fn tunnel_address(cidr: Ipv4Cidr) -> Ipv4Addr {
    let mask = match cidr.prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p)),
    };
    Ipv4Addr::from(u32::from(cidr.addr) & mask)
}

/// The other nodes this node tunnels to, by pod range: those with a range, an
/// InternalIP and a published MAC.
pub fn peers(nodes: &[Arc<Node>], own: &str) -> BTreeMap<Ipv4Cidr, Peer> {
    nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(own))
        .filter_map(|n| {
            let mac = n
                .metadata
                .annotations
                .as_ref()?
                .get(MAC_ANNOTATION)?
                .clone();
            Some((
                pod_cidr(n)?,
                Peer {
                    node_ip: internal_ip(n)?,
                    mac,
                },
            ))
        })
        .collect()
}

/// The routes for `peers`: each range via its node's tunnel address.
pub fn routes(peers: &BTreeMap<Ipv4Cidr, Peer>) -> Routes {
    peers
        .keys()
        .map(|cidr| (*cidr, tunnel_address(*cidr)))
        .collect()
}

/// Makes this node's VXLAN device (if it is not there yet) for its pod range and its
/// InternalIP; returns the device's MAC address, to be published.
pub fn ensure_device(own_range: Ipv4Cidr, node_ip: Ipv4Addr) -> Result<String, Error> {
    // Asked through netlink, not /sys/class/net: a process that entered a network
    // namespace may still see another namespace's sysfs.
    if device_mac()?.is_none() {
        ip(&strings(&[
            "link",
            "add",
            DEVICE,
            "type",
            "vxlan",
            "id",
            VNI,
            "local",
            &node_ip.to_string(),
            "dstport",
            PORT,
            "nolearning",
        ]))?;
    }
    ip(&strings(&[
        "link",
        "set",
        DEVICE,
        "mtu",
        &MTU.to_string(),
        "up",
    ]))?;
    let address = format!("{}/32", tunnel_address(own_range));
    ip(&strings(&["addr", "replace", &address, "dev", DEVICE]))?;
    device_mac()?.ok_or_else(|| Error::Ip {
        command: format!("ip link show {DEVICE}"),
        message: "the device made is gone".into(),
    })
}

/// The device's MAC address, if the device exists.
fn device_mac() -> Result<Option<String>, Error> {
    let links = ip(&strings(&["-j", "link", "show"]))?;
    let links: Vec<serde_json::Value> = serde_json::from_str(&links).unwrap_or_default();
    Ok(links
        .iter()
        .find(|l| l.get("ifname").and_then(|n| n.as_str()) == Some(DEVICE))
        .and_then(|l| l.get("address")?.as_str().map(str::to_string)))
}

/// Makes the device's neighbour and forwarding entries exactly those of `peers`
/// (routes are synced as the host-gw ones are, through the device).
pub fn sync_entries(peers: &BTreeMap<Ipv4Cidr, Peer>) -> Result<(), Error> {
    let wanted_neighbours: BTreeMap<String, &str> = peers
        .iter()
        .map(|(cidr, peer)| (tunnel_address(*cidr).to_string(), peer.mac.as_str()))
        .collect();
    let wanted_fdb: BTreeMap<&str, String> = peers
        .values()
        .map(|peer| (peer.mac.as_str(), peer.node_ip.to_string()))
        .collect();
    let neighbours = ip(&strings(&["-j", "-4", "neigh", "show", "dev", DEVICE]))?;
    for (address, mac) in parse_entries(&neighbours, "dst", "lladdr") {
        if wanted_neighbours.get(&address) != Some(&mac.as_str()) {
            ip(&strings(&["neigh", "del", &address, "dev", DEVICE]))?;
        }
    }
    for (address, mac) in &wanted_neighbours {
        ip(&strings(&[
            "neigh",
            "replace",
            address,
            "lladdr",
            mac,
            "dev",
            DEVICE,
            "nud",
            "permanent",
        ]))?;
    }
    let fdb = run("bridge", &strings(&["-j", "fdb", "show", "dev", DEVICE]))?;
    for (mac, dst) in parse_entries(&fdb, "mac", "dst") {
        if wanted_fdb.get(mac.as_str()) != Some(&dst) {
            run(
                "bridge",
                &strings(&["fdb", "del", &mac, "dev", DEVICE, "dst", &dst]),
            )?;
        }
    }
    for (mac, dst) in &wanted_fdb {
        run(
            "bridge",
            &strings(&[
                "fdb",
                "replace",
                mac,
                "dev",
                DEVICE,
                "dst",
                dst,
                "self",
                "permanent",
            ]),
        )?;
    }
    Ok(())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `(a, b)` pairs of the entries of `ip -j` / `bridge -j` output that have both keys.
fn parse_entries(json: &str, a: &str, b: &str) -> Vec<(String, String)> {
    let entries: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    entries
        .iter()
        .filter_map(|e| {
            Some((
                e.get(a)?.as_str()?.to_string(),
                e.get(b)?.as_str()?.to_string(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidr: &str, ip: &str, mac: Option<&str>) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: mac.map(|m| [(MAC_ANNOTATION.to_string(), m.to_string())].into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(cidr.into()),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn peers_and_their_routes() {
        let nodes = vec![
            node("a", "10.42.0.0/24", "192.0.2.10", Some("aa:aa:aa:aa:aa:aa")),
            node(
                "b",
                "10.42.1.0/24",
                "198.51.100.7",
                Some("bb:bb:bb:bb:bb:bb"),
            ),
            // Not yet published its device: no tunnel to it yet.
            node("c", "10.42.2.0/24", "203.0.113.9", None),
        ];
        let peers = peers(&nodes, "a");
        let b: Ipv4Cidr = "10.42.1.0/24".parse().expect("cidr");
        assert_eq!(
            peers,
            BTreeMap::from([(
                b,
                Peer {
                    node_ip: "198.51.100.7".parse().expect("ip"),
                    mac: "bb:bb:bb:bb:bb:bb".into()
                }
            )])
        );
        assert_eq!(
            routes(&peers),
            Routes::from([(b, Ipv4Addr::new(10, 42, 1, 0))])
        );
    }

    #[test]
    fn tunnel_address_is_the_network_address() {
        let cidr: Ipv4Cidr = "10.42.3.7/24".parse().expect("cidr");
        assert_eq!(tunnel_address(cidr), Ipv4Addr::new(10, 42, 3, 0));
    }

    #[test]
    fn entries_from_json() {
        let neigh = r#"[{"dst":"10.42.1.0","dev":"skiff.vxlan","lladdr":"bb:bb:bb:bb:bb:bb","state":["PERMANENT"]},
                        {"dst":"10.42.2.0","dev":"skiff.vxlan","state":["FAILED"]}]"#;
        assert_eq!(
            parse_entries(neigh, "dst", "lladdr"),
            vec![("10.42.1.0".to_string(), "bb:bb:bb:bb:bb:bb".to_string())]
        );
        let fdb = r#"[{"mac":"bb:bb:bb:bb:bb:bb","ifname":"skiff.vxlan","dst":"198.51.100.7","flags":["self"],"state":"permanent"}]"#;
        assert_eq!(
            parse_entries(fdb, "mac", "dst"),
            vec![("bb:bb:bb:bb:bb:bb".to_string(), "198.51.100.7".to_string())]
        );
        assert!(parse_entries("", "mac", "dst").is_empty());
    }
}
