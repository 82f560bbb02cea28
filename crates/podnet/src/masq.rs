//! Masquerading that spares the cluster's pod range.
//!
//! Pods' traffic to anything outside the cluster range (other hosts, the internet, other
//! nodes' own addresses) leaves with the node's address, so replies find their way back;
//! traffic to another pod, on any node, keeps the source pod's address, as Kubernetes'
//! network model requires. flannel's rules, in one nftables table of our own, replaced
//! whole in one transaction.

use skiff_proxy::Ipv4Cidr;

/// The table the rules live in.
pub const TABLE: &str = "skiff-podnet";

/// The `nft -f -` transaction that (re)writes the table for `cluster`.
pub fn ruleset(cluster: Ipv4Cidr) -> String {
    // Creating the table first makes the delete succeed on a fresh node.
    format!(
        "table ip {TABLE} {{}}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {cluster} ip daddr {cluster} return\n\
         \t\tip saddr {cluster} ip daddr != 224.0.0.0/4 masquerade\n\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerades_only_what_leaves_the_cluster_range() {
        let cluster: Ipv4Cidr = "10.42.0.0/16".parse().expect("cidr");
        let rules = ruleset(cluster);
        let lines: Vec<&str> = rules.lines().map(str::trim).collect();
        let spare = lines
            .iter()
            .position(|l| *l == "ip saddr 10.42.0.0/16 ip daddr 10.42.0.0/16 return")
            .expect("pod-to-pod traffic returns before the masquerade");
        let masq = lines
            .iter()
            .position(|l| *l == "ip saddr 10.42.0.0/16 ip daddr != 224.0.0.0/4 masquerade")
            .expect("the masquerade rule");
        assert!(spare < masq);
        assert!(lines.contains(&"type nat hook postrouting priority srcnat; policy accept;"));
        // The table is replaced whole: written after its deletion.
        assert_eq!(lines[0], "table ip skiff-podnet {}");
        assert_eq!(lines[1], "delete table ip skiff-podnet");
    }
}
