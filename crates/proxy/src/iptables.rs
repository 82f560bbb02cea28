//! The iptables mode: the model rendered into chains of the `nat` and `filter` tables
//! ([`Tables`]), written with `iptables-restore --noflush` so that nothing but our own
//! `KUBE-*` chains is touched.
//!
//! Layout (upstream kube-proxy's iptables mode):
//!
//! ```text
//! nat  PREROUTING / OUTPUT ─► KUBE-SERVICES
//!        -d CLUSTER-IP --dport P ─► KUBE-SVC-H  (mark off-cluster sources; `recent` affinity
//!                                                 checks; statistic cascade 1/N, 1/(N-1)…)
//!        -d EXTERNAL-IP --dport P ─► KUBE-EXT-H (mark for masquerade, or keep to local
//!                                                 endpoints through KUBE-SVL-H)
//!        last: dst-type LOCAL ─► KUBE-NODEPORTS ─ --dport NODEPORT ─► KUBE-EXT-H
//!      KUBE-SEP-H: mark hairpin traffic; record affinity; DNAT to IP:port
//!      POSTROUTING ─► KUBE-POSTROUTING: masquerade what carries the mark bit
//! filter INPUT ─► KUBE-EXTERNAL-SERVICES   (external IPs and NodePorts without endpoints)
//!        FORWARD ─► KUBE-SERVICES, KUBE-EXTERNAL-SERVICES
//!        OUTPUT ─► KUBE-SERVICES           (cluster IPs without endpoints: REJECT, or DROP
//!                                           when only the Local policy leaves none)
//! ```
//!
//! With `--noflush`, declaring a chain (`:KUBE-SVC-H - [0:0]`) creates or empties it and
//! chains not named are left alone, so an update writes only the chains whose rules differ
//! and deletes (`-X`) the ones no longer rendered. The jumps from the built-in chains are
//! not ours to rewrite: [`crate::apply::IptablesCommand`] ensures them with `iptables -C`
//! and `-I` (see [`JUMPS`]).
//!
//! Scale: with the nf_tables iptables tools (1.8.9), `iptables-restore --noflush` costs
//! time quadratic in the chains it names (the tool keeps them in a sorted list, one
//! `strcmp` per entry), so a full sync of 10,000 services x 10 endpoints (110,000 chains)
//! takes about 8 minutes against 11 s with the legacy tools; partial syncs name a few
//! chains and stay under half a second. Upstream's answer is the same: nftables mode.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::metrics::{Metrics, TableLabels};
use crate::model::{stable_hash, Endpoint, Model, RenderConfig, ServicePort, ServicePortName};
use crate::proxier::Backend;

pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";

/// Prefixes of the per-service chains: the only chains found in the kernel that a sync
/// deletes when it did not render them (left by an earlier run).
pub const SERVICE_CHAIN_PREFIXES: [&str; 4] = ["KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-", "KUBE-SVL-"];

/// A jump from a built-in chain into ours, kept in place with `iptables -C` / `-I`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jump {
    pub table: &'static str,
    pub chain: &'static str,
    /// The rule as `iptables` arguments (after `-I CHAIN`).
    pub rule: &'static [&'static str],
}

const PORTALS: &[&str] = &[
    "-m",
    "comment",
    "--comment",
    "kubernetes service portals",
    "-j",
    KUBE_SERVICES,
];
const NEW_PORTALS: &[&str] = &[
    "-m",
    "conntrack",
    "--ctstate",
    "NEW",
    "-m",
    "comment",
    "--comment",
    "kubernetes service portals",
    "-j",
    KUBE_SERVICES,
];
const NEW_EXTERNAL: &[&str] = &[
    "-m",
    "conntrack",
    "--ctstate",
    "NEW",
    "-m",
    "comment",
    "--comment",
    "kubernetes externally-visible service portals",
    "-j",
    KUBE_EXTERNAL_SERVICES,
];

/// Upstream's jumps, in its order. The filter ones only look at new connections: a
/// REJECT for a service that just lost its endpoints must not cut established ones.
pub const JUMPS: &[Jump] = &[
    Jump {
        table: "filter",
        chain: "INPUT",
        rule: NEW_EXTERNAL,
    },
    Jump {
        table: "filter",
        chain: "FORWARD",
        rule: NEW_EXTERNAL,
    },
    Jump {
        table: "filter",
        chain: "FORWARD",
        rule: NEW_PORTALS,
    },
    Jump {
        table: "filter",
        chain: "OUTPUT",
        rule: NEW_PORTALS,
    },
    Jump {
        table: "nat",
        chain: "OUTPUT",
        rule: PORTALS,
    },
    Jump {
        table: "nat",
        chain: "PREROUTING",
        rule: PORTALS,
    },
    Jump {
        table: "nat",
        chain: "POSTROUTING",
        rule: &[
            "-m",
            "comment",
            "--comment",
            "kubernetes postrouting rules",
            "-j",
            KUBE_POSTROUTING,
        ],
    },
];

/// Chain name → rules, each rule written as `iptables-restore` reads it after `-A CHAIN `.
pub type Table = BTreeMap<String, Vec<String>>;

/// The complete desired content of our chains in both tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub nat: Table,
    pub filter: Table,
}

impl Tables {
    fn each(&self) -> [(&'static str, &Table); 2] {
        [("filter", &self.filter), ("nat", &self.nat)]
    }

    pub fn rule_count(&self, table: &str) -> usize {
        self.each()
            .iter()
            .filter(|(name, _)| *name == table)
            .map(|(_, t)| t.values().map(Vec::len).sum::<usize>())
            .sum()
    }
}

/// Chain names are limited to 28 characters: `KUBE-XXX-` and 13 characters of a 64-bit
/// hash (upstream uses 16 of a SHA-256).
fn chain_name(kind: &str, readable: &str) -> String {
    format!(
        "KUBE-{kind}-{}",
        stable_hash(&format!("{kind}/{readable}"), 13)
    )
}

pub fn service_chain(name: &ServicePortName) -> String {
    chain_name("SVC", &name.to_string())
}

pub fn external_chain(name: &ServicePortName) -> String {
    chain_name("EXT", &name.to_string())
}

/// The load balancing over only this node's endpoints, when a Local policy leaves fewer
/// endpoints than the cluster IP has.
pub fn local_chain(name: &ServicePortName) -> String {
    chain_name("SVL", &name.to_string())
}

pub fn endpoint_chain(name: &ServicePortName, ep: &Endpoint) -> String {
    chain_name("SEP", &format!("{name}__{}/{}", ep.ip, ep.port))
}

/// `ns/name:port` as upstream's comments write it.
fn comment(name: &ServicePortName) -> String {
    if name.port.is_empty() {
        format!("{}/{}", name.namespace, name.name)
    } else {
        format!("{}/{}:{}", name.namespace, name.name, name.port)
    }
}

/// The iptables mode, for [`crate::Proxier`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Iptables;

impl Backend for Iptables {
    type Rules = Tables;
    const NAME: &'static str = "iptables";

    fn render(&self, model: &Model, config: &RenderConfig) -> Tables {
        render(model, config)
    }

    fn full_transaction(&self, new: &Tables) -> String {
        full_transaction(new)
    }

    fn update_transaction(&self, old: &Tables, new: &Tables, rewrite: bool) -> Option<String> {
        update_transaction(old, new, rewrite)
    }

    fn record(&self, rules: &Tables, metrics: &Metrics) {
        for (table, _) in rules.each() {
            metrics
                .iptables_rules
                .get_or_create(&TableLabels {
                    table: table.into(),
                })
                .set(rules.rule_count(table) as i64);
        }
    }
}

/// Renders every chain of both tables.
pub fn render(model: &Model, config: &RenderConfig) -> Tables {
    let mark = format!("{:#x}", 1u32 << config.masquerade_bit.min(31));
    let mut t = Tables::default();
    for chain in [KUBE_SERVICES, KUBE_NODEPORTS] {
        t.nat.insert(chain.into(), Vec::new());
    }
    for chain in [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES] {
        t.filter.insert(chain.into(), Vec::new());
    }
    t.nat.insert(
        KUBE_MARK_MASQ.into(),
        vec![format!("-j MARK --or-mark {mark}")],
    );
    t.nat.insert(
        KUBE_POSTROUTING.into(),
        vec![
            format!("-m mark ! --mark {mark}/{mark} -j RETURN"),
            // Clear the bit so a packet that is routed again is not masqueraded twice.
            format!("-j MARK --xor-mark {mark}"),
            "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
        ],
    );

    // NodePorts on 127.0.0.1 would need route_localnet; the nftables mode refuses them too.
    let local_destinations: Vec<String> = if config.nodeport_addresses.is_empty() {
        vec!["! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL".into()]
    } else {
        config
            .nodeport_addresses
            .iter()
            .map(|cidr| format!("-d {cidr} -m addrtype --dst-type LOCAL"))
            .collect()
    };

    for sp in model.services.values() {
        render_service(&mut t, sp, config, &local_destinations);
    }

    if let Some(services) = t.nat.get_mut(KUBE_SERVICES) {
        // Last, so that a service's own address always wins over a NodePort.
        for local in &local_destinations {
            services.push(format!(
                "-m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" {local} -j {KUBE_NODEPORTS}"
            ));
        }
    }
    t
}

fn push(table: &mut Table, chain: &str, rule: String) {
    table.entry(chain.to_string()).or_default().push(rule);
}

fn render_service(t: &mut Tables, sp: &ServicePort, config: &RenderConfig, local: &[String]) {
    let p = sp.name.protocol.nft();
    let c = comment(&sp.name);
    let svc = service_chain(&sp.name);
    let ext = external_chain(&sp.name);
    let dst = |ip: &dyn std::fmt::Display| format!("-m {p} -p {p} -d {ip}/32 --dport {}", sp.port);
    // No endpoints at all: refuse. Endpoints, but none this policy may use: drop, as
    // upstream does, since the client could succeed through another node.
    let (unreachable, why) = if sp.any_endpoints {
        ("DROP", "has no local endpoints")
    } else {
        ("REJECT", "has no endpoints")
    };

    if sp.cluster_endpoints.is_empty() {
        push(
            &mut t.filter,
            KUBE_SERVICES,
            format!(
                "-m comment --comment \"{c} {why}\" {} -j {unreachable}",
                dst(&sp.cluster_ip)
            ),
        );
    } else {
        push(
            &mut t.nat,
            KUBE_SERVICES,
            format!(
                "-m comment --comment \"{c} cluster IP\" {} -j {svc}",
                dst(&sp.cluster_ip)
            ),
        );
        let mut rules = Vec::new();
        if let Some(cidr) = config.cluster_cidr {
            rules.push(format!(
                "-m comment --comment \"{c} cluster IP\" {} ! -s {cidr} -j {KUBE_MARK_MASQ}",
                dst(&sp.cluster_ip)
            ));
        }
        load_balance(&mut rules, sp, &sp.cluster_endpoints);
        t.nat.insert(svc.clone(), rules);
    }

    if sp.has_external() {
        let reachable = !sp.external_endpoints.is_empty();
        for ip in &sp.external_ips {
            if reachable {
                push(
                    &mut t.nat,
                    KUBE_SERVICES,
                    format!(
                        "-m comment --comment \"{c} external IP\" {} -j {ext}",
                        dst(ip)
                    ),
                );
            } else {
                push(
                    &mut t.filter,
                    KUBE_EXTERNAL_SERVICES,
                    format!(
                        "-m comment --comment \"{c} {why}\" {} -j {unreachable}",
                        dst(ip)
                    ),
                );
            }
        }
        if let Some(node_port) = sp.node_port {
            if reachable {
                push(
                    &mut t.nat,
                    KUBE_NODEPORTS,
                    format!("-m comment --comment {c} -m {p} -p {p} --dport {node_port} -j {ext}"),
                );
            } else {
                for local in local {
                    push(
                        &mut t.filter,
                        KUBE_EXTERNAL_SERVICES,
                        format!(
                            "-m comment --comment \"{c} {why}\" {local} -m {p} -p {p} --dport {node_port} -j {unreachable}"
                        ),
                    );
                }
            }
        }
        if reachable {
            let mut rules = Vec::new();
            if sp.external_local && !sp.cluster_endpoints.is_empty() {
                // Pods and the node itself reach external addresses like the cluster IP:
                // only traffic from elsewhere must keep its source and stay on this node.
                if let Some(cidr) = config.cluster_cidr {
                    rules.push(format!(
                        "-m comment --comment \"pod traffic for {c} external destinations\" -s {cidr} -j {svc}"
                    ));
                }
                rules.push(format!(
                    "-m comment --comment \"masquerade LOCAL traffic for {c} external destinations\" -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}"
                ));
                rules.push(format!(
                    "-m comment --comment \"route LOCAL traffic for {c} external destinations\" -m addrtype --src-type LOCAL -j {svc}"
                ));
            } else if !sp.external_local {
                // The endpoint may be on another node; its reply must come back through
                // this one to be un-NATed.
                rules.push(format!(
                    "-m comment --comment \"masquerade traffic for {c} external destinations\" -j {KUBE_MARK_MASQ}"
                ));
            }
            if sp.external_endpoints == sp.cluster_endpoints {
                rules.push(format!("-j {svc}"));
            } else {
                let svl = local_chain(&sp.name);
                rules.push(format!("-j {svl}"));
                let mut local_rules = Vec::new();
                load_balance(&mut local_rules, sp, &sp.external_endpoints);
                t.nat.insert(svl, local_rules);
            }
            t.nat.insert(ext, rules);
        }
    }

    let endpoints: BTreeSet<&Endpoint> = sp
        .cluster_endpoints
        .iter()
        .chain(&sp.external_endpoints)
        .collect();
    for ep in endpoints {
        let sep = endpoint_chain(&sp.name, ep);
        let affinity = match sp.affinity_timeout {
            Some(_) => format!(" -m recent --name {sep} --set"),
            None => String::new(),
        };
        let rules = vec![
            // Hairpin: a pod reaching itself through the service must see the reply come
            // from the service, so its source is rewritten.
            format!(
                "-m comment --comment {c} -s {}/32 -j {KUBE_MARK_MASQ}",
                ep.ip
            ),
            format!(
                "-m comment --comment {c} -m {p} -p {p}{affinity} -j DNAT --to-destination {}:{}",
                ep.ip, ep.port
            ),
        ];
        t.nat.insert(sep, rules);
    }
}

/// Affinity first (a client seen within the timeout goes back to its endpoint), then a
/// cascade where rule i takes endpoint i with probability 1/(N-i), so each gets 1/N.
fn load_balance(rules: &mut Vec<String>, sp: &ServicePort, endpoints: &[Endpoint]) {
    if let Some(timeout) = sp.affinity_timeout {
        for ep in endpoints {
            let sep = endpoint_chain(&sp.name, ep);
            rules.push(format!(
                "-m recent --name {sep} --rcheck --seconds {timeout} --reap -j {sep}"
            ));
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let sep = endpoint_chain(&sp.name, ep);
        if i + 1 == n {
            rules.push(format!("-j {sep}"));
        } else {
            let probability = 1.0 / (n - i) as f64;
            rules.push(format!(
                "-m statistic --mode random --probability {probability:.10} -j {sep}"
            ));
        }
    }
}

/// Both tables from scratch: every chain declared (so emptied) and written. Per-service
/// chains an earlier run left are unknown here; the applier adds their deletion (see
/// [`delete_stale_chains`]).
pub fn full_transaction(new: &Tables) -> String {
    write(&Tables::default(), new, true).unwrap_or_default()
}

/// The `iptables-restore --noflush` input that turns `old` (what was last applied) into
/// `new`: the chains whose rules differ (all of them with `rewrite`) declared and written,
/// the chains no longer rendered emptied and deleted. `None` when nothing differs.
pub fn update_transaction(old: &Tables, new: &Tables, rewrite: bool) -> Option<String> {
    write(old, new, rewrite)
}

fn write(old: &Tables, new: &Tables, all: bool) -> Option<String> {
    let mut out = String::new();
    for ((table, before), (_, after)) in old.each().into_iter().zip(new.each()) {
        let changed: Vec<(&String, &Vec<String>)> = after
            .iter()
            .filter(|(name, rules)| all || before.get(*name) != Some(*rules))
            .collect();
        let stale: Vec<&String> = before.keys().filter(|n| !after.contains_key(*n)).collect();
        if changed.is_empty() && stale.is_empty() {
            continue;
        }
        let _ = writeln!(out, "*{table}");
        for name in changed.iter().map(|(n, _)| *n).chain(stale.iter().copied()) {
            let _ = writeln!(out, ":{name} - [0:0]");
        }
        for (name, rules) in &changed {
            for rule in *rules {
                let _ = writeln!(out, "-A {name} {rule}");
            }
        }
        // After every rule naming them was rewritten: a chain still referenced cannot go.
        for name in &stale {
            let _ = writeln!(out, "-X {name}");
        }
        out.push_str("COMMIT\n");
    }
    (!out.is_empty()).then_some(out)
}

/// Chain names per table in `iptables-save` output.
fn saved_chains(saved: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut tables: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in saved.lines() {
        if let Some(table) = line.strip_prefix('*') {
            current = Some(table.trim().to_string());
        } else if let (Some(chain), Some(table)) = (line.strip_prefix(':'), &current) {
            if let Some(name) = chain.split_whitespace().next() {
                tables
                    .entry(table.clone())
                    .or_default()
                    .insert(name.to_string());
            }
        }
    }
    tables
}

/// `restore` (a full transaction) extended to empty and delete the per-service chains
/// that `saved` (`iptables-save` output) shows and `restore` does not declare: what a
/// previous run rendered for services that are gone. Chains of other prefixes are not
/// ours and stay.
pub fn delete_stale_chains(restore: &str, saved: &str) -> String {
    let existing = saved_chains(saved);
    let declared = saved_chains(restore);
    let none = BTreeSet::new();
    let mut out = String::with_capacity(restore.len());
    let mut stale: Vec<&String> = Vec::new();
    for line in restore.lines() {
        if line == "COMMIT" {
            for name in stale.drain(..) {
                let _ = writeln!(out, "-X {name}");
            }
        }
        out.push_str(line);
        out.push('\n');
        if let Some(table) = line.strip_prefix('*') {
            let ours = declared.get(table).unwrap_or(&none);
            stale = existing
                .get(table)
                .unwrap_or(&none)
                .iter()
                .filter(|n| SERVICE_CHAIN_PREFIXES.iter().any(|p| n.starts_with(p)))
                .filter(|n| !ours.contains(*n))
                .collect();
            for name in &stale {
                let _ = writeln!(out, ":{name} - [0:0]");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{model_of, service_port};

    fn config() -> RenderConfig {
        RenderConfig {
            cluster_cidr: Some("10.88.0.0/16".parse().expect("cidr")),
            ..RenderConfig::default()
        }
    }

    #[test]
    fn cluster_ip_cascade_has_probabilities_one_over_n_then_n_minus_one() {
        let sp = service_port(
            "ns",
            "web",
            "10.96.0.50",
            &["10.88.1.2", "10.88.2.2", "10.88.3.2"],
        );
        let t = render(&model_of([sp.clone()]), &config());
        let svc = service_chain(&sp.name);
        assert!(svc.starts_with("KUBE-SVC-") && svc.len() <= 28, "{svc}");
        assert_eq!(
            t.nat[KUBE_SERVICES][0],
            format!("-m comment --comment \"ns/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.50/32 --dport 80 -j {svc}")
        );
        let seps: Vec<String> = sp
            .cluster_endpoints
            .iter()
            .map(|ep| endpoint_chain(&sp.name, ep))
            .collect();
        assert_eq!(
            t.nat[&svc],
            vec![
                "-m comment --comment \"ns/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.50/32 --dport 80 ! -s 10.88.0.0/16 -j KUBE-MARK-MASQ".to_string(),
                format!("-m statistic --mode random --probability 0.3333333333 -j {}", seps[0]),
                format!("-m statistic --mode random --probability 0.5000000000 -j {}", seps[1]),
                format!("-j {}", seps[2]),
            ]
        );
        assert_eq!(
            t.nat[&seps[0]],
            vec![
                "-m comment --comment ns/web:http -s 10.88.1.2/32 -j KUBE-MARK-MASQ",
                "-m comment --comment ns/web:http -m tcp -p tcp -j DNAT --to-destination 10.88.1.2:8080",
            ]
        );
        assert_eq!(
            t.nat[KUBE_POSTROUTING][..2],
            [
                "-m mark ! --mark 0x4000/0x4000 -j RETURN",
                "-j MARK --xor-mark 0x4000"
            ]
        );
        assert_eq!(t.nat[KUBE_MARK_MASQ], ["-j MARK --or-mark 0x4000"]);
        // The NodePorts jump stays the last rule of KUBE-SERVICES.
        assert!(t.nat[KUBE_SERVICES].last().is_some_and(
            |r| r.ends_with("! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")
        ));
        assert!(t.filter[KUBE_SERVICES].is_empty());
    }

    #[test]
    fn session_affinity_checks_recent_lists_before_the_cascade() {
        let mut sp = service_port("ns", "sticky", "10.96.0.54", &["10.88.1.2", "10.88.2.2"]);
        sp.affinity_timeout = Some(60);
        let t = render(&model_of([sp.clone()]), &config());
        let sep0 = endpoint_chain(&sp.name, &sp.cluster_endpoints[0]);
        let sep1 = endpoint_chain(&sp.name, &sp.cluster_endpoints[1]);
        let svc = &t.nat[&service_chain(&sp.name)];
        assert_eq!(
            svc[1..3],
            [
                format!("-m recent --name {sep0} --rcheck --seconds 60 --reap -j {sep0}"),
                format!("-m recent --name {sep1} --rcheck --seconds 60 --reap -j {sep1}"),
            ]
        );
        assert!(svc[3].contains("--probability 0.5000000000"));
        assert!(t.nat[&sep0][1].contains(&format!(
            "-m recent --name {sep0} --set -j DNAT --to-destination 10.88.1.2:8080"
        )));
    }

    #[test]
    fn no_endpoints_rejects_in_filter_and_local_policy_drops() {
        let mut empty = service_port("ns", "empty", "10.96.0.51", &[]);
        empty.node_port = Some(30051);
        empty.external_ips = vec!["192.0.2.1".parse().expect("ip")];
        let mut local = service_port("ns", "local", "10.96.0.52", &[]);
        local.any_endpoints = true;
        local.node_port = Some(30052);
        let t = render(&model_of([empty.clone(), local]), &config());
        assert_eq!(
            t.filter[KUBE_SERVICES],
            [
                "-m comment --comment \"ns/empty:http has no endpoints\" -m tcp -p tcp -d 10.96.0.51/32 --dport 80 -j REJECT",
                "-m comment --comment \"ns/local:http has no local endpoints\" -m tcp -p tcp -d 10.96.0.52/32 --dport 80 -j DROP",
            ]
        );
        assert_eq!(
            t.filter[KUBE_EXTERNAL_SERVICES],
            [
                "-m comment --comment \"ns/empty:http has no endpoints\" -m tcp -p tcp -d 192.0.2.1/32 --dport 80 -j REJECT",
                "-m comment --comment \"ns/empty:http has no endpoints\" ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30051 -j REJECT",
                "-m comment --comment \"ns/local:http has no local endpoints\" ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30052 -j DROP",
            ]
        );
        assert!(!t.nat.contains_key(&service_chain(&empty.name)));
        assert!(t.nat[KUBE_NODEPORTS].is_empty());
        assert_eq!(t.nat[KUBE_SERVICES].len(), 1, "only the NodePorts jump");
    }

    #[test]
    fn nodeports_and_external_ips_go_through_the_external_chain() {
        let mut sp = service_port("ns", "np", "10.96.0.53", &["10.88.1.2", "10.88.2.2"]);
        sp.node_port = Some(30080);
        sp.external_ips = vec!["192.0.2.1".parse().expect("ip")];
        let mut cfg = config();
        cfg.nodeport_addresses = vec!["192.168.0.0/16".parse().expect("cidr")];
        let t = render(&model_of([sp.clone()]), &cfg);
        let (svc, ext) = (service_chain(&sp.name), external_chain(&sp.name));
        assert_eq!(
            t.nat[KUBE_NODEPORTS],
            [format!(
                "-m comment --comment ns/np:http -m tcp -p tcp --dport 30080 -j {ext}"
            )]
        );
        assert!(t.nat[KUBE_SERVICES][1].ends_with(&format!("-d 192.0.2.1/32 --dport 80 -j {ext}")));
        assert!(t.nat[KUBE_SERVICES][2]
            .contains("-d 192.168.0.0/16 -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"));
        assert_eq!(
            t.nat[&ext],
            [
                "-m comment --comment \"masquerade traffic for ns/np:http external destinations\" -j KUBE-MARK-MASQ".to_string(),
                format!("-j {svc}"),
            ]
        );

        // Local: only this node's endpoint, through KUBE-SVL; local and pod sources are
        // treated like cluster traffic.
        sp.external_local = true;
        sp.external_endpoints.pop();
        let t = render(&model_of([sp.clone()]), &config());
        let svl = local_chain(&sp.name);
        let ext_rules = &t.nat[&ext];
        assert_eq!(ext_rules[0], format!("-m comment --comment \"pod traffic for ns/np:http external destinations\" -s 10.88.0.0/16 -j {svc}"));
        assert!(ext_rules[1].ends_with("-m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"));
        assert!(ext_rules[2].ends_with(&format!("-m addrtype --src-type LOCAL -j {svc}")));
        assert_eq!(ext_rules[3], format!("-j {svl}"));
        assert_eq!(
            t.nat[&svl],
            [format!(
                "-j {}",
                endpoint_chain(&sp.name, &sp.external_endpoints[0])
            )]
        );
    }

    #[test]
    fn full_transaction_declares_every_chain_before_its_rules() {
        let sp = service_port("ns", "web", "10.96.0.50", &["10.88.1.2"]);
        let tx = full_transaction(&render(&model_of([sp.clone()]), &config()));
        let lines: Vec<&str> = tx.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert_eq!(lines.iter().filter(|l| **l == "COMMIT").count(), 2);
        let nat = lines.iter().position(|l| *l == "*nat").expect("nat");
        let svc = service_chain(&sp.name);
        let decl = lines
            .iter()
            .position(|l| *l == format!(":{svc} - [0:0]"))
            .expect("declared");
        let first_rule = lines[nat..]
            .iter()
            .position(|l| l.starts_with("-A"))
            .expect("rule")
            + nat;
        assert!(nat < decl && decl < first_rule);
        assert!(!tx.contains("-X"));
    }

    #[test]
    fn one_endpoint_change_rewrites_only_that_services_chains() {
        let web = service_port("ns", "web", "10.96.0.50", &["10.88.1.2", "10.88.2.2"]);
        let db = service_port("ns", "db", "10.96.0.60", &["10.88.3.2"]);
        let old = render(&model_of([web.clone(), db.clone()]), &config());
        let mut web2 = web.clone();
        web2.cluster_endpoints.pop();
        web2.external_endpoints.pop();
        let new = render(&model_of([web2, db]), &config());
        let tx = update_transaction(&old, &new, false).expect("changes");
        let svc = service_chain(&web.name);
        let gone = endpoint_chain(&web.name, &web.cluster_endpoints[1]);
        let kept = endpoint_chain(&web.name, &web.cluster_endpoints[0]);
        assert_eq!(
            tx.lines().collect::<Vec<_>>(),
            vec![
                "*nat".to_string(),
                format!(":{svc} - [0:0]"),
                format!(":{gone} - [0:0]"),
                format!("-A {svc} -m comment --comment \"ns/web:http cluster IP\" -m tcp -p tcp -d 10.96.0.50/32 --dport 80 ! -s 10.88.0.0/16 -j KUBE-MARK-MASQ"),
                format!("-A {svc} -j {kept}"),
                format!("-X {gone}"),
                "COMMIT".to_string(),
            ]
        );
        assert_eq!(update_transaction(&new, &new, false), None);
        let rewrite = update_transaction(&new, &new, true).expect("rewrite");
        assert!(
            rewrite.contains(":KUBE-SERVICES - [0:0]")
                && rewrite.contains(&format!(":{kept} - [0:0]"))
        );
    }

    #[test]
    fn losing_all_endpoints_moves_the_service_to_a_reject() {
        let web = service_port("ns", "web", "10.96.0.50", &["10.88.1.2"]);
        let old = render(&model_of([web.clone()]), &config());
        let new = render(
            &model_of([service_port("ns", "web", "10.96.0.50", &[])]),
            &config(),
        );
        let tx = update_transaction(&old, &new, false).expect("changes");
        let svc = service_chain(&web.name);
        let sep = endpoint_chain(&web.name, &web.cluster_endpoints[0]);
        assert!(tx.starts_with("*filter\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m comment --comment \"ns/web:http has no endpoints\""), "{tx}");
        assert!(tx.contains(":KUBE-SERVICES - [0:0]\n"));
        let pos = |needle: &str| {
            tx.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} in {tx}"))
        };
        assert!(pos("*nat") < pos(&format!("-X {svc}")));
        assert!(
            pos("-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports")
                < pos(&format!("-X {sep}"))
        );
    }

    #[test]
    fn stale_service_chains_found_by_save_are_deleted_and_others_kept() {
        let saved = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-OLD - [0:0]\n:KUBE-SEP-OLD - [0:0]\n:DOCKER - [0:0]\n-A KUBE-SVC-OLD -j KUBE-SEP-OLD\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
        let sp = service_port("ns", "web", "10.96.0.50", &["10.88.1.2"]);
        let full = full_transaction(&render(&model_of([sp]), &config()));
        let tx = delete_stale_chains(&full, saved);
        let nat = &tx[tx.find("*nat").expect("nat")..];
        assert!(
            nat.starts_with("*nat\n:KUBE-SEP-OLD - [0:0]\n:KUBE-SVC-OLD - [0:0]\n"),
            "{nat}"
        );
        assert!(
            nat.ends_with("-X KUBE-SEP-OLD\n-X KUBE-SVC-OLD\nCOMMIT\n"),
            "{nat}"
        );
        assert!(!tx.contains("DOCKER") && !tx.contains("-X KUBE-SERVICES"));
        assert_eq!(delete_stale_chains(&full, ""), full);
    }
}
