//! The model rendered into table `inet skiff-netpol`, and that table written as one
//! atomic `nft -f -` transaction.
//!
//! ```text
//! forward (filter hook forward, priority filter)
//!   ct state established,related accept      replies of allowed connections
//!   ip saddr vmap @egress-pods               isolated senders on this node
//!   ip daddr vmap @ingress-pods              isolated receivers on this node
//! egress-HASH-ns/pod:   clause … return   (go on to the receiver's check)   … drop
//! ingress-HASH-ns/pod:  clause … accept                                      … drop
//! peers-HASH-ns/policy/direction/rule/…    sets of peer pod addresses, one per rule
//! ```
//!
//! Why the forward hook, and what it sees:
//! - Pods on one node are ports of the Linux bridge `skiff0`; frames between them are
//!   bridged, not routed, and reach the `inet` hooks only through `br_netfilter` with
//!   `net.bridge.bridge-nf-call-iptables = 1` ([`crate::ensure_bridge_netfilter`]).
//!   This kernel has `br_netfilter` built in (the sysctl defaults to 1 in every netns)
//!   but lacks `nf_conntrack_bridge`, so a `bridge`-family table could not track
//!   connections: the `inet` table behind `br_netfilter` is what works here. Traffic to
//!   and from other nodes is routed and crosses the same hook.
//! - Service traffic is already translated (the proxy's DNAT runs at prerouting), so the
//!   rules see the backend pod's address, as NetworkPolicy requires.
//! - Traffic the node itself sends (kubelet probes, host processes) leaves through the
//!   output hook and is never filtered, as upstream CNIs allow it; traffic from a pod to
//!   the node's own addresses goes to the input hook and is not filtered either.
//! - Only IPv4 is enforced.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::model::{Clause, Direction, Model, Peer, PortMatch, Ports, Protocol};

/// The one table this enforcer owns; nothing else in the host's ruleset is touched.
pub const TABLE: &str = "skiff-netpol";
pub const FAMILY: &str = "inet";

const INGRESS_MAP: &str = "ingress-pods";
const EGRESS_MAP: &str = "egress-pods";

/// nftables allows 256 bytes per name; stay well under it.
const MAX_NAME: usize = 200;

/// Elements per `add element` statement: nft parses one huge statement slower than many.
const ELEMENT_BATCH: usize = 1000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// `type … hook … priority …;` for base chains.
    pub hook: Option<String>,
    pub rules: Vec<String>,
}

/// The complete desired content of the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Chain>,
    /// Verdict map name → address → verdict.
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
    /// Address set name → addresses.
    pub sets: BTreeMap<String, Vec<String>>,
}

impl Ruleset {
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }

    pub fn element_count(&self) -> usize {
        self.maps.values().map(BTreeMap::len).sum::<usize>()
            + self.sets.values().map(Vec::len).sum::<usize>()
    }
}

/// FNV-1a: stable across builds, so names survive a restart.
fn hash(input: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..8)
        .map(|i| char::from(ALPHABET[((h >> (i * 5)) & 31) as usize]))
        .collect()
}

/// `kind-HASH-readable`: the hash keeps names unique when the readable part is cut.
/// nft names allow letters, digits, `/`, `\`, `_`, `.` and `-`; object names and label
/// values stay within those, and anything else becomes `_`.
fn object_name(kind: &str, readable: &str) -> String {
    let clean: String = readable
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "/_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("{kind}-{}-{clean}", hash(&format!("{kind}/{readable}")));
    name.truncate(MAX_NAME);
    name
}

pub fn pod_chain(direction: Direction, pod: &str) -> String {
    object_name(&direction.to_string(), pod)
}

pub fn peer_set(id: &str) -> String {
    object_name("peers", id)
}

/// `tcp dport`-style matches for a rule's ports, one line per protocol.
fn port_matches(ports: &Ports) -> Vec<String> {
    let Ports::Only(list) = ports else {
        return vec![String::new()];
    };
    let mut by_protocol: BTreeMap<Protocol, Option<Vec<String>>> = BTreeMap::new();
    for PortMatch { protocol, range } in list {
        let entry = by_protocol
            .entry(*protocol)
            .or_insert_with(|| Some(Vec::new()));
        match (range, entry.as_mut()) {
            // Every port of the protocol wins over any list of them.
            (None, _) => *entry = None,
            (Some((first, last)), Some(ports)) if first == last => ports.push(first.to_string()),
            (Some((first, last)), Some(ports)) => ports.push(format!("{first}-{last}")),
            (Some(_), None) => {}
        }
    }
    by_protocol
        .into_iter()
        .map(|(protocol, ports)| match ports {
            None => format!("meta l4proto {}", protocol.nft()),
            Some(mut ports) => {
                ports.sort();
                ports.dedup();
                format!(
                    "meta l4proto {} th dport {{ {} }}",
                    protocol.nft(),
                    ports.join(", ")
                )
            }
        })
        .collect()
}

fn clause_rules(clause: &Clause, direction: Direction) -> Vec<String> {
    let addr = match direction {
        Direction::Ingress => "ip saddr",
        Direction::Egress => "ip daddr",
    };
    let verdict = match direction {
        // The receiver, if isolated too, still has its say.
        Direction::Egress => "return",
        Direction::Ingress => "accept",
    };
    let peer = match &clause.peer {
        Peer::Any => String::new(),
        Peer::Pods(set) => format!("{addr} @{}", peer_set(set)),
        Peer::Block { cidr, except } => {
            // One match per exception: overlapping exceptions in one anonymous set would
            // make nft refuse the transaction.
            let mut m = format!("{addr} {cidr}");
            for e in except {
                let _ = write!(m, " {addr} != {e}");
            }
            m
        }
    };
    port_matches(&clause.ports)
        .into_iter()
        .map(|ports| {
            [peer.as_str(), ports.as_str(), verdict]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Renders the whole desired table.
pub fn render(model: &Model) -> Ruleset {
    let mut rs = Ruleset::default();
    rs.chains.insert(
        "forward".into(),
        Chain {
            hook: Some("type filter hook forward priority filter ; policy accept ;".into()),
            rules: vec![
                "ct state established,related accept".into(),
                format!("ip saddr vmap @{EGRESS_MAP}"),
                format!("ip daddr vmap @{INGRESS_MAP}"),
            ],
        },
    );
    rs.maps.insert(INGRESS_MAP.into(), BTreeMap::new());
    rs.maps.insert(EGRESS_MAP.into(), BTreeMap::new());
    for (name, ips) in &model.peer_sets {
        rs.sets.insert(
            peer_set(name),
            ips.iter().map(|ip| ip.to_string()).collect(),
        );
    }
    for (pod, rules) in &model.pods {
        for direction in [Direction::Ingress, Direction::Egress] {
            let Some(clauses) = rules.rules(direction) else {
                continue;
            };
            let chain = pod_chain(direction, pod);
            // A pod reaching itself through a Service (hairpin) is not policed, as
            // upstream implementations (Cilium's hairpin case, for one) leave it open.
            let own = match direction {
                Direction::Ingress => format!("ip saddr {} accept", rules.ip),
                Direction::Egress => format!("ip daddr {} return", rules.ip),
            };
            let mut lines: Vec<String> = std::iter::once(own)
                .chain(clauses.iter().flat_map(|c| clause_rules(c, direction)))
                .collect();
            lines.push("drop".into());
            rs.chains.insert(
                chain.clone(),
                Chain {
                    hook: None,
                    rules: lines,
                },
            );
            let map = match direction {
                Direction::Ingress => INGRESS_MAP,
                Direction::Egress => EGRESS_MAP,
            };
            if let Some(map) = rs.maps.get_mut(map) {
                map.insert(rules.ip.to_string(), format!("jump {chain}"));
            }
        }
    }
    // Sets no rule refers to (a pod left, its policy stays) are still declared: harmless,
    // and the model keeps them only while a policy selects some pod here.
    rs
}

/// The transaction that replaces the whole table with `rs`, atomically: a packet sees
/// either the old table or the new one.
pub fn full_transaction(rs: &Ruleset) -> String {
    let t = format!("{FAMILY} {TABLE}");
    let mut tx = String::new();
    // `add` first, so `delete` succeeds when the table does not exist yet.
    let _ = writeln!(tx, "add table {t}");
    let _ = writeln!(tx, "delete table {t}");
    let _ = writeln!(tx, "add table {t}");
    for (name, elements) in &rs.sets {
        let _ = writeln!(tx, "add set {t} {name} {{ type ipv4_addr ; }}");
        for batch in elements.chunks(ELEMENT_BATCH) {
            let _ = writeln!(tx, "add element {t} {name} {{ {} }}", batch.join(", "));
        }
    }
    for (name, chain) in &rs.chains {
        match &chain.hook {
            Some(hook) => {
                let _ = writeln!(tx, "add chain {t} {name} {{ {hook} }}");
            }
            None => {
                let _ = writeln!(tx, "add chain {t} {name}");
            }
        }
    }
    for name in rs.maps.keys() {
        let _ = writeln!(tx, "add map {t} {name} {{ type ipv4_addr : verdict ; }}");
    }
    for (name, chain) in &rs.chains {
        for rule in &chain.rules {
            let _ = writeln!(tx, "add rule {t} {name} {rule}");
        }
    }
    for (name, elements) in &rs.maps {
        let elements: Vec<String> = elements.iter().map(|(k, v)| format!("{k} : {v}")).collect();
        for batch in elements.chunks(ELEMENT_BATCH) {
            let _ = writeln!(tx, "add element {t} {name} {{ {} }}", batch.join(", "));
        }
    }
    tx
}

/// The transaction that moves the kernel from `old` to `new`, touching only the chains,
/// sets and map elements that differ; `None` when nothing does. Ordered so that nothing
/// is referred to before it exists or deleted while still referred to.
pub fn update_transaction(old: &Ruleset, new: &Ruleset) -> Option<String> {
    if old == new {
        return None;
    }
    let hooks = |rs: &Ruleset| -> Vec<(String, Option<String>)> {
        rs.chains
            .iter()
            .filter(|(_, c)| c.hook.is_some())
            .map(|(n, c)| (n.clone(), c.hook.clone()))
            .collect()
    };
    if hooks(old) != hooks(new) || old.maps.keys().ne(new.maps.keys()) {
        return Some(full_transaction(new));
    }
    let t = format!("{FAMILY} {TABLE}");
    let mut tx = String::new();
    let elements = |tx: &mut String, verb: &str, name: &str, items: &[String]| {
        for batch in items.chunks(ELEMENT_BATCH) {
            let _ = writeln!(tx, "{verb} element {t} {name} {{ {} }}", batch.join(", "));
        }
    };

    // Sets first: new rules may refer to new sets.
    for (name, items) in &new.sets {
        match old.sets.get(name) {
            None => {
                let _ = writeln!(tx, "add set {t} {name} {{ type ipv4_addr ; }}");
                elements(&mut tx, "add", name, items);
            }
            Some(before) if before != items => {
                let (was, is): (BTreeSet<&String>, BTreeSet<&String>) =
                    (before.iter().collect(), items.iter().collect());
                let gone: Vec<String> = was.difference(&is).map(|i| (*i).clone()).collect();
                let added: Vec<String> = is.difference(&was).map(|i| (*i).clone()).collect();
                elements(&mut tx, "delete", name, &gone);
                elements(&mut tx, "add", name, &added);
            }
            Some(_) => {}
        }
    }
    // Dispatch entries that go or change, before the chains they jump to.
    for (map, entries) in &new.maps {
        let before = old.maps.get(map).cloned().unwrap_or_default();
        let gone: Vec<String> = before
            .iter()
            .filter(|(k, v)| entries.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        elements(&mut tx, "delete", map, &gone);
    }
    for (name, chain) in &new.chains {
        match old.chains.get(name) {
            None => {
                let _ = writeln!(tx, "add chain {t} {name}");
            }
            Some(before) if before.rules != chain.rules => {
                let _ = writeln!(tx, "flush chain {t} {name}");
            }
            Some(_) => continue,
        }
    }
    for name in old.chains.keys().filter(|n| !new.chains.contains_key(*n)) {
        let _ = writeln!(tx, "delete chain {t} {name}");
    }
    for (name, chain) in &new.chains {
        if old.chains.get(name).is_some_and(|c| c.rules == chain.rules) {
            continue;
        }
        for rule in &chain.rules {
            let _ = writeln!(tx, "add rule {t} {name} {rule}");
        }
    }
    // Sets no rule refers to any more.
    for name in old.sets.keys().filter(|n| !new.sets.contains_key(*n)) {
        let _ = writeln!(tx, "delete set {t} {name}");
    }
    for (map, entries) in &new.maps {
        let before = old.maps.get(map).cloned().unwrap_or_default();
        let added: Vec<String> = entries
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k} : {v}"))
            .collect();
        elements(&mut tx, "add", map, &added);
    }
    Some(tx)
}

/// The transaction that removes the table (when the enforcer is turned off).
pub fn delete_transaction() -> String {
    format!("add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build;
    use crate::model::tests::{namespace, pod, pod_with_ports, policy};
    use serde_json::json;

    #[test]
    fn renders_dispatch_per_pod_chains_and_peer_sets() {
        let pods = [
            pod_with_ports(
                "a",
                "web",
                json!({"app": "web"}),
                "10.88.0.11",
                "node1",
                json!([{"name": "http", "containerPort": 8080}]),
            ),
            pod(
                "a",
                "client",
                json!({"app": "client"}),
                "10.88.0.12",
                "node1",
            ),
            pod(
                "b",
                "client",
                json!({"app": "client"}),
                "10.88.0.21",
                "node2",
            ),
        ];
        let namespaces = [namespace("a", json!({})), namespace("b", json!({"t": "b"}))];
        let policies = [
            policy(
                "a",
                "web",
                json!({"podSelector": {"matchLabels": {"app": "web"}},
                       "ingress": [
                           {"from": [{"podSelector": {"matchLabels": {"app": "client"}}},
                                     {"namespaceSelector": {"matchLabels": {"t": "b"}}}],
                            "ports": [{"port": "http"}, {"port": 9000, "endPort": 9010},
                                      {"protocol": "UDP", "port": 53}, {"protocol": "UDP"}]},
                           {"from": [{"ipBlock": {"cidr": "192.0.2.9/24",
                                                  "except": ["192.0.2.0/28", "192.0.2.64/26"]}}]}]}),
            ),
            policy(
                "a",
                "egress",
                json!({"podSelector": {"matchLabels": {"app": "client"}},
                       "policyTypes": ["Egress"], "egress": [{}]}),
            ),
        ];
        let model = build(&policies, &pods, &namespaces, "node1");
        let rs = render(&model);
        let ingress = pod_chain(Direction::Ingress, "a/web");
        let egress = pod_chain(Direction::Egress, "a/client");
        let peers = peer_set("a/web/ingress/0/peers");
        assert!(ingress.starts_with("ingress-") && ingress.ends_with("-a/web"));

        assert_eq!(
            rs.chains["forward"].rules,
            [
                "ct state established,related accept",
                "ip saddr vmap @egress-pods",
                "ip daddr vmap @ingress-pods"
            ]
        );
        assert_eq!(
            rs.chains[&ingress].rules,
            [
                "ip saddr 10.88.0.11 accept".to_string(),
                format!("ip saddr @{peers} meta l4proto tcp th dport {{ 8080, 9000-9010 }} accept"),
                format!("ip saddr @{peers} meta l4proto udp accept"),
                "ip saddr 192.0.2.0/24 ip saddr != 192.0.2.0/28 ip saddr != 192.0.2.64/26 accept"
                    .to_string(),
                "drop".to_string(),
            ]
        );
        assert_eq!(
            rs.chains[&egress].rules,
            ["ip daddr 10.88.0.12 return", "return", "drop"]
        );
        assert_eq!(rs.sets[&peers], ["10.88.0.12", "10.88.0.21"]);
        assert_eq!(
            rs.maps["ingress-pods"],
            BTreeMap::from([("10.88.0.11".to_string(), format!("jump {ingress}"))])
        );
        assert_eq!(
            rs.maps["egress-pods"],
            BTreeMap::from([("10.88.0.12".to_string(), format!("jump {egress}"))])
        );

        let tx = full_transaction(&rs);
        let lines: Vec<&str> = tx.lines().collect();
        assert_eq!(
            lines[..3],
            [
                "add table inet skiff-netpol",
                "delete table inet skiff-netpol",
                "add table inet skiff-netpol"
            ]
        );
        // Everything is declared before it is referred to.
        let at = |needle: &str| {
            tx.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing in\n{tx}"))
        };
        assert!(at(&format!("add set inet skiff-netpol {peers}")) < at(&format!("@{peers}")));
        assert!(at("add map inet skiff-netpol ingress-pods") < at("vmap @ingress-pods"));
        assert!(
            at(&format!("add chain inet skiff-netpol {ingress}\n"))
                < at(&format!(": jump {ingress}"))
        );
        assert!(tx.contains(
            "add chain inet skiff-netpol forward { type filter hook forward priority filter ; policy accept ; }"
        ));
    }

    #[test]
    fn names_stay_short_and_nft_safe() {
        let long = format!("ns/{}", "x".repeat(300));
        assert!(pod_chain(Direction::Egress, &long).len() <= MAX_NAME);
        assert_ne!(
            pod_chain(Direction::Egress, &long),
            pod_chain(Direction::Egress, &format!("{long}y"))
        );
        assert!(peer_set("a/p:q/ingress/0").ends_with("a/p_q/ingress/0"));
    }

    #[test]
    fn without_policies_the_table_only_dispatches() {
        let rs = render(&Model::default());
        assert_eq!(rs.chains.len(), 1);
        assert_eq!(rs.element_count(), 0);
        assert!(delete_transaction().contains("delete table inet skiff-netpol"));
    }
}
