//! Routes to the other nodes' pod ranges: `<node's podCIDR> via <node's InternalIP>`,
//! one per other node, as flannel's host-gw backend writes them. The node's own range is
//! on its bridge (a connected route the bridge plugin makes) and is not touched.
//!
//! Routes this controller writes carry the protocol number [`ROUTE_PROTOCOL`], so a sync
//! knows its own routes from everyone else's and can delete the stale ones (a node gone,
//! or moved to another address) without a record of its own.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;

use k8s_openapi::api::core::v1::Node;
use skiff_proxy::Ipv4Cidr;

use crate::Error;

/// The routing protocol number of Skiff's routes (`ip route … proto 94`): unassigned in
/// iproute2's `rt_protos`, so no routing daemon claims it.
pub const ROUTE_PROTOCOL: u8 = 94;

/// Route table: destination range → gateway.
pub type Routes = BTreeMap<Ipv4Cidr, Ipv4Addr>;

/// The routes this node wants: every other node's IPv4 pod range via its IPv4
/// InternalIP. Nodes without either are skipped (not yet given a range, or not yet
/// reporting an address), and so are simulated nodes: their addresses lead nowhere.
pub fn desired(nodes: &[std::sync::Arc<Node>], own: &str) -> Routes {
    nodes
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(own))
        .filter(|n| {
            let labels = n.metadata.labels.as_ref();
            labels
                .and_then(|l| l.get(crate::HOLLOW_NODE_LABEL))
                .map(String::as_str)
                != Some("true")
        })
        .filter_map(|n| Some((pod_cidr(n)?, internal_ip(n)?)))
        .collect()
}

/// A node's IPv4 pod range.
pub fn pod_cidr(node: &Node) -> Option<Ipv4Cidr> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .find_map(|c| c.parse::<Ipv4Cidr>().ok().filter(|_| c.contains('/')))
}

/// A node's IPv4 InternalIP.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The kernel's route table, as far as this controller's routes go.
pub trait RouteTable {
    /// The routes with protocol [`ROUTE_PROTOCOL`].
    fn ours(&mut self) -> Result<Routes, Error>;
    fn replace(&mut self, destination: Ipv4Cidr, gateway: Ipv4Addr) -> Result<(), Error>;
    fn delete(&mut self, destination: Ipv4Cidr) -> Result<(), Error>;
}

/// What a sync changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub replaced: Vec<(Ipv4Cidr, Ipv4Addr)>,
    pub deleted: Vec<Ipv4Cidr>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.replaced.is_empty() && self.deleted.is_empty()
    }
}

/// Makes the table's routes of ours exactly `wanted`: stale ones deleted, missing or
/// different ones replaced. Every route is tried even when one fails; the first error is
/// returned (the caller retries the whole sync).
pub fn sync(table: &mut impl RouteTable, wanted: &Routes) -> Result<Changes, Error> {
    let current = table.ours()?;
    let mut changes = Changes::default();
    let mut first_error = None;
    for destination in current.keys().filter(|d| !wanted.contains_key(d)) {
        match table.delete(*destination) {
            Ok(()) => changes.deleted.push(*destination),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    for (destination, gateway) in wanted {
        if current.get(destination) == Some(gateway) {
            continue;
        }
        match table.replace(*destination, *gateway) {
            Ok(()) => changes.replaced.push((*destination, *gateway)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(changes),
    }
}

/// The real table, through `ip` (iproute2) in the process's network namespace.
#[derive(Debug, Default)]
pub struct IpRoute {
    /// Routes go through this device, their gateways taken as on-link (the VXLAN
    /// device, whose gateways are the other nodes' tunnel addresses); `None`: the kernel
    /// finds the device from the gateway (host-gw).
    pub onlink_device: Option<&'static str>,
}

/// Runs `ip` with `args`; its stdout.
pub(crate) fn ip(args: &[String]) -> Result<String, Error> {
    run("ip", args)
}

/// Runs an iproute2 program; its stdout, or its stderr as the error.
pub(crate) fn run(program: &str, args: &[String]) -> Result<String, Error> {
    let output = Command::new(program).args(args).output();
    let failed = |message: String| Error::Ip {
        command: format!("{program} {}", args.join(" ")),
        message,
    };
    let output = output.map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Routes from `ip -j route show` output: `dst` and `gateway` of each.
pub fn parse_routes(json: &str) -> Routes {
    let entries: Vec<serde_json::Value> = serde_json::from_str(json).unwrap_or_default();
    entries
        .iter()
        .filter_map(|r| {
            let dst = r.get("dst")?.as_str()?;
            // A /32 destination is printed without its prefix.
            let dst: Ipv4Cidr = dst.parse().ok()?;
            let gateway: Ipv4Addr = r.get("gateway")?.as_str()?.parse().ok()?;
            Some((dst, gateway))
        })
        .collect()
}

impl RouteTable for IpRoute {
    fn ours(&mut self) -> Result<Routes, Error> {
        let out = ip(&[
            "-j".into(),
            "-4".into(),
            "route".into(),
            "show".into(),
            "proto".into(),
            ROUTE_PROTOCOL.to_string(),
        ])?;
        Ok(parse_routes(&out))
    }

    fn replace(&mut self, destination: Ipv4Cidr, gateway: Ipv4Addr) -> Result<(), Error> {
        let mut args: Vec<String> = vec![
            "-4".into(),
            "route".into(),
            "replace".into(),
            destination.to_string(),
            "via".into(),
            gateway.to_string(),
            "proto".into(),
            ROUTE_PROTOCOL.to_string(),
        ];
        if let Some(device) = self.onlink_device {
            args.extend(["dev".into(), device.into(), "onlink".into()]);
        }
        ip(&args).map(drop)
    }

    fn delete(&mut self, destination: Ipv4Cidr) -> Result<(), Error> {
        ip(&[
            "-4".into(),
            "route".into(),
            "del".into(),
            destination.to_string(),
            "proto".into(),
            ROUTE_PROTOCOL.to_string(),
        ])
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use std::sync::Arc;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Arc<Node> {
        Arc::new(Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(str::to_string),
                pod_cidrs: cidr.map(|c| vec![c.to_string()]),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| {
                    vec![
                        NodeAddress {
                            type_: "Hostname".into(),
                            address: name.into(),
                        },
                        NodeAddress {
                            type_: "InternalIP".into(),
                            address: ip.into(),
                        },
                    ]
                }),
                ..Default::default()
            }),
        })
    }

    fn hollow(node: Arc<Node>) -> Arc<Node> {
        let mut node = (*node).clone();
        node.metadata.labels =
            Some([(crate::HOLLOW_NODE_LABEL.to_string(), "true".to_string())].into());
        Arc::new(node)
    }

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().expect("cidr")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn every_other_node_with_a_range_and_an_address() {
        let nodes = vec![
            node("a", Some("10.42.0.0/24"), Some("10.0.0.10")),
            node("b", Some("10.42.1.0/24"), Some("10.0.0.11")),
            node("c", None, Some("10.0.0.12")),
            node("d", Some("10.42.3.0/24"), None),
            node("e", Some("10.42.4.0/24"), Some("fd00::4")),
            hollow(node("f", Some("10.128.0.0/24"), Some("198.18.0.1"))),
        ];
        let wanted = desired(&nodes, "a");
        assert_eq!(
            wanted,
            Routes::from([(cidr("10.42.1.0/24"), ip("10.0.0.11"))])
        );
    }

    #[derive(Default)]
    struct FakeTable {
        routes: Routes,
        fail_on: Option<Ipv4Cidr>,
        calls: Vec<String>,
    }

    impl RouteTable for FakeTable {
        fn ours(&mut self) -> Result<Routes, Error> {
            Ok(self.routes.clone())
        }
        fn replace(&mut self, destination: Ipv4Cidr, gateway: Ipv4Addr) -> Result<(), Error> {
            self.calls.push(format!("replace {destination} {gateway}"));
            if self.fail_on == Some(destination) {
                return Err(Error::Ip {
                    command: "ip route replace".into(),
                    message: "Nexthop has invalid gateway".into(),
                });
            }
            self.routes.insert(destination, gateway);
            Ok(())
        }
        fn delete(&mut self, destination: Ipv4Cidr) -> Result<(), Error> {
            self.calls.push(format!("delete {destination}"));
            self.routes.remove(&destination);
            Ok(())
        }
    }

    #[test]
    fn sync_replaces_what_differs_and_deletes_what_is_stale() {
        let mut table = FakeTable {
            routes: Routes::from([
                (cidr("10.42.1.0/24"), ip("10.0.0.11")),
                (cidr("10.42.2.0/24"), ip("10.0.0.99")),
                (cidr("10.42.9.0/24"), ip("10.0.0.19")),
            ]),
            ..Default::default()
        };
        let wanted = Routes::from([
            (cidr("10.42.1.0/24"), ip("10.0.0.11")),
            (cidr("10.42.2.0/24"), ip("10.0.0.12")),
            (cidr("10.42.3.0/24"), ip("10.0.0.13")),
        ]);
        let changes = sync(&mut table, &wanted).expect("sync");
        assert_eq!(changes.deleted, vec![cidr("10.42.9.0/24")]);
        assert_eq!(
            changes.replaced,
            vec![
                (cidr("10.42.2.0/24"), ip("10.0.0.12")),
                (cidr("10.42.3.0/24"), ip("10.0.0.13")),
            ]
        );
        assert_eq!(table.routes, wanted);
        // Nothing left to do: no calls at all.
        table.calls.clear();
        assert!(sync(&mut table, &wanted).expect("sync").is_empty());
        assert!(table.calls.is_empty());
    }

    #[test]
    fn one_failing_route_does_not_stop_the_others() {
        let mut table = FakeTable {
            fail_on: Some(cidr("10.42.1.0/24")),
            ..Default::default()
        };
        let wanted = Routes::from([
            (cidr("10.42.1.0/24"), ip("10.0.0.11")),
            (cidr("10.42.2.0/24"), ip("10.0.0.12")),
        ]);
        assert!(sync(&mut table, &wanted).is_err());
        assert_eq!(
            table.routes.get(&cidr("10.42.2.0/24")),
            Some(&ip("10.0.0.12"))
        );
    }

    #[test]
    fn routes_from_ip_json() {
        let out = r#"[{"dst":"10.42.1.0/24","gateway":"10.0.0.11","dev":"eth0","protocol":"94","flags":[]},
                      {"dst":"10.42.5.7","gateway":"10.0.0.15","dev":"eth0","flags":[]},
                      {"dst":"10.42.6.0/24","dev":"cni0","flags":[]}]"#;
        assert_eq!(
            parse_routes(out),
            Routes::from([
                (cidr("10.42.1.0/24"), ip("10.0.0.11")),
                (cidr("10.42.5.7/32"), ip("10.0.0.15")),
            ])
        );
        assert!(parse_routes("").is_empty());
    }
}
