//! From a question to an answer over the [`View`]: the names of the Kubernetes DNS
//! specification, as CoreDNS's `kubernetes` plugin serves them (`pods insecure`, no
//! wildcards).
//!
//! A name is resolved to a node (every record that lives at it, of all types) or to
//! nothing (NXDOMAIN); the query type then filters the node. Doing it in that order is
//! what makes NODATA and NXDOMAIN fall out right: a name with records of other types, or
//! an empty non-terminal such as `svc.<zone>`, exists.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::view::{dashed, undashed, ServiceKind, View};

/// The version of the specification served at `dns-version.<zone>`.
pub const SPEC_VERSION: &str = "1.1.0";

/// The cluster zone and how long answers may be cached.
#[derive(Clone, Debug)]
pub struct Zone {
    /// Fully qualified, lower case (`cluster.local.`).
    pub domain: Name,
    pub ttl: u32,
}

impl Zone {
    pub fn new(domain: &str, ttl: u32) -> Result<Zone, crate::Error> {
        let mut domain = Name::from_ascii(domain)
            .map_err(|e| crate::Error::Config(format!("cluster domain {domain:?}: {e}")))?
            .to_lowercase();
        domain.set_fqdn(true);
        Ok(Zone { domain, ttl })
    }

    /// The zone's SOA, for the authority section of negative answers: its minimum is the
    /// TTL, so resolvers cache a miss no longer than a hit.
    pub fn soa(&self) -> Record {
        let name = |prefix: &str| {
            Name::from_ascii(prefix)
                .and_then(|p| p.append_domain(&self.domain))
                .unwrap_or_else(|_| self.domain.clone())
        };
        let soa = SOA::new(
            name("ns.dns"),
            name("hostmaster"),
            // The view has no single version; a constant serial is what a zone that is
            // never transferred needs.
            1,
            7200,
            1800,
            86400,
            self.ttl,
        );
        Record::from_rdata(self.domain.clone(), self.ttl, RData::SOA(soa))
    }

    fn name(&self, labels: &[&str]) -> Name {
        let mut name = self.domain.clone();
        for label in labels.iter().rev() {
            name = match name.prepend_label(*label) {
                Ok(name) => name,
                // Labels come from validated Kubernetes names; an invalid one yields the
                // zone itself rather than a failure.
                Err(_) => return self.domain.clone(),
            };
        }
        name
    }
}

/// What the server should do with a question.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The cluster zone (or a reverse name of a cluster address) answers it.
    Answer(Box<Answer>),
    /// Not ours: ask the upstream resolvers.
    Forward,
}

#[derive(Debug, PartialEq)]
pub struct Answer {
    /// `NoError` (with or without records) or `NXDomain`.
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA, set on NXDOMAIN and NODATA.
    pub soa: Option<Record>,
    /// An ExternalName target outside the zone that the server may resolve on the
    /// client's behalf, as CoreDNS does, so that stub resolvers get addresses.
    pub chase: Option<Name>,
}

/// Everything that lives at one name.
#[derive(Default)]
struct Node {
    records: Vec<Record>,
    /// Glue for SRV targets.
    additionals: Vec<Record>,
    cname: Option<Name>,
}

/// Answers `qtype` for `qname` (any case) from the view.
pub fn lookup(view: &View, zone: &Zone, qname: &Name, qtype: RecordType) -> Outcome {
    lookup_depth(view, zone, qname, qtype, 0)
}

/// How many in-zone aliases are followed (ExternalName pointing at another Service).
const MAX_CHAIN: usize = 8;

fn lookup_depth(
    view: &View,
    zone: &Zone,
    qname: &Name,
    qtype: RecordType,
    depth: usize,
) -> Outcome {
    let lower = qname.to_lowercase();
    let Some(labels) = labels_under(&zone.domain, &lower) else {
        return reverse(view, zone, qname, &lower, qtype);
    };
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let Some(node) = node(view, zone, qname, &labels) else {
        return Outcome::Answer(Box::new(Answer {
            rcode: ResponseCode::NXDomain,
            answers: vec![],
            additionals: vec![],
            soa: Some(zone.soa()),
            chase: None,
        }));
    };
    if let (Some(target), false) = (
        &node.cname,
        matches!(qtype, RecordType::CNAME | RecordType::ANY),
    ) {
        let alias =
            Record::from_rdata(qname.clone(), zone.ttl, RData::CNAME(CNAME(target.clone())));
        let mut answer = Answer {
            rcode: ResponseCode::NoError,
            answers: vec![alias],
            additionals: vec![],
            soa: None,
            chase: None,
        };
        if zone.domain.zone_of(&target.to_lowercase()) {
            if depth < MAX_CHAIN {
                if let Outcome::Answer(rest) = lookup_depth(view, zone, target, qtype, depth + 1) {
                    answer.rcode = rest.rcode;
                    answer.answers.extend(rest.answers);
                    answer.additionals = rest.additionals;
                    answer.soa = rest.soa;
                    answer.chase = rest.chase;
                }
            }
        } else {
            answer.chase = Some(target.clone());
        }
        return Outcome::Answer(Box::new(answer));
    }
    let wanted = |r: &Record| qtype == RecordType::ANY || r.record_type() == qtype;
    let answers: Vec<Record> = node.records.into_iter().filter(wanted).collect();
    let soa = answers.is_empty().then(|| zone.soa());
    let additionals = if answers.is_empty() {
        vec![]
    } else {
        node.additionals
    };
    Outcome::Answer(Box::new(Answer {
        rcode: ResponseCode::NoError,
        answers,
        additionals,
        soa,
        chase: None,
    }))
}

/// The labels of `name` left of `zone`, lower case; `None` if `name` is outside it.
fn labels_under(zone: &Name, name: &Name) -> Option<Vec<String>> {
    if !zone.zone_of(name) {
        return None;
    }
    let extra = usize::from(name.num_labels() - zone.num_labels());
    Some(
        name.iter()
            .take(extra)
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect(),
    )
}

fn address_record(owner: &Name, ttl: u32, address: IpAddr) -> Record {
    let rdata = match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, rdata)
}

/// The node at `labels` under the zone (`labels[0]` is the leftmost), owned by `qname`.
fn node(view: &View, zone: &Zone, qname: &Name, labels: &[&str]) -> Option<Node> {
    let ttl = zone.ttl;
    match labels {
        [] => Some(Node {
            records: vec![Record::from_rdata(qname.clone(), ttl, zone.soa().data)],
            ..Node::default()
        }),
        ["dns-version"] => Some(Node {
            records: vec![Record::from_rdata(
                qname.clone(),
                ttl,
                RData::TXT(TXT::new(vec![SPEC_VERSION.to_string()])),
            )],
            ..Node::default()
        }),
        ["svc"] | ["pod"] => Some(Node::default()),
        [namespace, "svc"] => view.has_namespace(namespace).then(Node::default),
        // `pods insecure`: any namespace, any address; nothing is checked against Pods.
        [_, "pod"] => Some(Node::default()),
        [ip, _, "pod"] => undashed(ip).map(|address| Node {
            records: vec![address_record(qname, ttl, address)],
            ..Node::default()
        }),
        [name, namespace, "svc"] => service_node(view, qname, ttl, namespace, name),
        [proto, name, namespace, "svc"] if proto.starts_with('_') => {
            let service = view.service(namespace, name)?;
            let proto = &proto[1..];
            service
                .ports
                .iter()
                .any(|p| !p.name.is_empty() && p.protocol == *proto)
                .then(Node::default)
        }
        [endpoint, name, namespace, "svc"] => {
            endpoint_node(view, qname, ttl, namespace, name, endpoint)
        }
        [port, proto, name, namespace, "svc"]
            if port.starts_with('_') && proto.starts_with('_') =>
        {
            srv_node(view, zone, qname, namespace, name, &port[1..], &proto[1..])
        }
        _ => None,
    }
}

fn service_node(view: &View, qname: &Name, ttl: u32, namespace: &str, name: &str) -> Option<Node> {
    let service = view.service(namespace, name)?;
    let node = match &service.kind {
        ServiceKind::ClusterIp(ips) => Node {
            records: ips
                .iter()
                .map(|ip| address_record(qname, ttl, *ip))
                .collect(),
            ..Node::default()
        },
        ServiceKind::Headless => Node {
            records: view
                .ready_addresses(namespace, name)
                .into_iter()
                .map(|(ip, _)| address_record(qname, ttl, ip))
                .collect(),
            ..Node::default()
        },
        ServiceKind::ExternalName(target) => {
            let mut target = Name::from_ascii(target).ok()?;
            target.set_fqdn(true);
            Node {
                records: vec![Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::CNAME(CNAME(target.clone())),
                )],
                cname: Some(target),
                ..Node::default()
            }
        }
    };
    Some(node)
}

/// `<hostname or dashed address>.<svc>.<ns>.svc.<zone>`: ready endpoints of headless
/// Services only, as the specification has it.
fn endpoint_node(
    view: &View,
    qname: &Name,
    ttl: u32,
    namespace: &str,
    name: &str,
    label: &str,
) -> Option<Node> {
    if view.service(namespace, name)?.kind != ServiceKind::Headless {
        return None;
    }
    let records: Vec<Record> = view
        .ready_addresses(namespace, name)
        .into_iter()
        .filter(|(ip, endpoint)| endpoint.label(*ip) == label || dashed(*ip) == label)
        .map(|(ip, _)| address_record(qname, ttl, ip))
        .collect();
    (!records.is_empty()).then(|| Node {
        records,
        ..Node::default()
    })
}

fn srv_node(
    view: &View,
    zone: &Zone,
    qname: &Name,
    namespace: &str,
    name: &str,
    port: &str,
    proto: &str,
) -> Option<Node> {
    let ttl = zone.ttl;
    let service = view.service(namespace, name)?;
    let declared = service
        .ports
        .iter()
        .any(|p| p.name == port && p.protocol == proto);
    let mut node = Node::default();
    match &service.kind {
        ServiceKind::ClusterIp(ips) => {
            let target = zone.name(&[name, namespace, "svc"]);
            for p in service
                .ports
                .iter()
                .filter(|p| p.name == port && p.protocol == proto)
            {
                node.records.push(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::SRV(SRV::new(0, 100, p.port, target.clone())),
                ));
            }
            if !node.records.is_empty() {
                node.additionals = ips
                    .iter()
                    .map(|ip| address_record(&target, ttl, *ip))
                    .collect();
            }
        }
        ServiceKind::Headless => {
            let mut targets: Vec<(Name, u16, IpAddr)> = Vec::new();
            for slice in view.slices(namespace, name) {
                for p in slice
                    .ports
                    .iter()
                    .filter(|p| p.name == port && p.protocol == proto)
                {
                    for endpoint in slice.endpoints.iter().filter(|e| e.ready) {
                        for ip in &endpoint.addresses {
                            let target = zone.name(&[&endpoint.label(*ip), name, namespace, "svc"]);
                            if !targets
                                .iter()
                                .any(|(t, port, a)| *t == target && *port == p.port && a == ip)
                            {
                                targets.push((target, p.port, *ip));
                            }
                        }
                    }
                }
            }
            targets.sort();
            // Equal shares of 100, as CoreDNS weighs them.
            let weight = u16::try_from(100 / targets.len().max(1))
                .unwrap_or(1)
                .max(1);
            for (target, port, ip) in targets {
                let srv = SRV::new(0, weight, port, target.clone());
                if !node
                    .records
                    .iter()
                    .any(|r| r.data == RData::SRV(srv.clone()))
                {
                    node.records
                        .push(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
                }
                let glue = address_record(&target, ttl, ip);
                if !node.additionals.contains(&glue) {
                    node.additionals.push(glue);
                }
            }
        }
        ServiceKind::ExternalName(_) => return None,
    }
    (declared || !node.records.is_empty()).then_some(node)
}

/// PTR for addresses the view knows; every other reverse name, and every other name
/// outside the zone, goes upstream (CoreDNS's `fallthrough`).
fn reverse(view: &View, zone: &Zone, qname: &Name, lower: &Name, qtype: RecordType) -> Outcome {
    if qtype != RecordType::PTR {
        return Outcome::Forward;
    }
    let Some(address) = reverse_address(lower) else {
        return Outcome::Forward;
    };
    let answers: Vec<Record> = view
        .reverse(address)
        .map(|target| {
            let name = match &target.endpoint {
                Some(endpoint) => zone.name(&[endpoint, &target.service, &target.namespace, "svc"]),
                None => zone.name(&[&target.service, &target.namespace, "svc"]),
            };
            Record::from_rdata(qname.clone(), zone.ttl, RData::PTR(PTR(name)))
        })
        .collect();
    if answers.is_empty() {
        return Outcome::Forward;
    }
    Outcome::Answer(Box::new(Answer {
        rcode: ResponseCode::NoError,
        answers,
        additionals: vec![],
        soa: None,
        chase: None,
    }))
}

/// `4.3.2.1.in-addr.arpa.` → 1.2.3.4; the nibble form of `ip6.arpa.` likewise.
fn reverse_address(name: &Name) -> Option<IpAddr> {
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    match labels.as_slice() {
        [d, c, b, a, in_addr, arpa] if in_addr == "in-addr" && arpa == "arpa" => {
            format!("{a}.{b}.{c}.{d}").parse().ok().map(IpAddr::V4)
        }
        [nibbles @ .., ip6, arpa] if ip6 == "ip6" && arpa == "arpa" && nibbles.len() == 32 => {
            let mut value: u128 = 0;
            for nibble in nibbles.iter().rev() {
                let digit = u128::from_str_radix(nibble, 16).ok()?;
                if nibble.len() != 1 {
                    return None;
                }
                value = (value << 4) | digit;
            }
            Some(IpAddr::V6(value.into()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::view::{EndpointInfo, PortInfo, ServiceInfo, SliceInfo};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn port(name: &str, protocol: &str, port: u16) -> PortInfo {
        PortInfo {
            name: name.into(),
            protocol: protocol.into(),
            port,
        }
    }

    fn endpoint(address: &str, hostname: Option<&str>, ready: bool) -> EndpointInfo {
        EndpointInfo {
            addresses: vec![ip(address)],
            hostname: hostname.map(str::to_string),
            ready,
        }
    }

    fn zone() -> Zone {
        Zone::new("cluster.local", 5).expect("zone")
    }

    fn view() -> View {
        let mut view = View::default();
        view.apply_service(
            "default",
            "web",
            ServiceInfo {
                kind: ServiceKind::ClusterIp(vec![ip("10.96.0.10"), ip("fd00::10")]),
                ports: vec![port("http", "tcp", 80), port("", "tcp", 8080)],
            },
        );
        view.apply_service(
            "default",
            "db",
            ServiceInfo {
                kind: ServiceKind::Headless,
                ports: vec![port("peer", "tcp", 5432)],
            },
        );
        view.apply_slice(
            "default",
            "db-abc",
            SliceInfo {
                service: "db".into(),
                ports: vec![port("peer", "tcp", 15432)],
                endpoints: vec![
                    endpoint("10.1.0.1", Some("db-0"), true),
                    endpoint("10.1.0.2", Some("db-1"), true),
                    endpoint("10.1.0.3", None, true),
                    endpoint("10.1.0.4", Some("db-3"), false),
                ],
            },
        );
        // A second slice repeating one address: answers hold it once.
        view.apply_slice(
            "default",
            "db-def",
            SliceInfo {
                service: "db".into(),
                ports: vec![port("peer", "tcp", 15432)],
                endpoints: vec![endpoint("10.1.0.1", Some("db-0"), true)],
            },
        );
        view.apply_service(
            "default",
            "ext",
            ServiceInfo {
                kind: ServiceKind::ExternalName("example.com".into()),
                ports: vec![],
            },
        );
        view.apply_service(
            "other",
            "alias",
            ServiceInfo {
                kind: ServiceKind::ExternalName("web.default.svc.cluster.local".into()),
                ports: vec![],
            },
        );
        view
    }

    fn ask(view: &View, name: &str, qtype: RecordType) -> Answer {
        let name = Name::from_ascii(name).expect("name");
        match lookup(view, &zone(), &name, qtype) {
            Outcome::Answer(answer) => *answer,
            Outcome::Forward => panic!("{name} {qtype} was forwarded"),
        }
    }

    fn data(records: &[Record]) -> BTreeSet<String> {
        records.iter().map(|r| r.data.to_string()).collect()
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn assert_nxdomain(answer: &Answer) {
        assert_eq!(answer.rcode, ResponseCode::NXDomain);
        assert!(answer.answers.is_empty());
        assert!(answer.soa.is_some(), "NXDOMAIN carries the SOA");
    }

    fn assert_nodata(answer: &Answer) {
        assert_eq!(answer.rcode, ResponseCode::NoError);
        assert!(answer.answers.is_empty(), "{:?}", answer.answers);
        assert!(answer.soa.is_some(), "NODATA carries the SOA");
    }

    #[test]
    fn cluster_ip_service_has_a_and_aaaa() {
        let view = view();
        let a = ask(&view, "web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(data(&a.answers), set(&["10.96.0.10"]));
        assert!(a.soa.is_none());
        assert_eq!(a.answers[0].ttl, 5);
        let aaaa = ask(&view, "web.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(data(&aaaa.answers), set(&["fd00::10"]));
    }

    #[test]
    fn names_are_case_insensitive_and_keep_the_asked_case() {
        let view = view();
        let a = ask(&view, "WEB.Default.SVC.Cluster.LOCAL.", RecordType::A);
        assert_eq!(data(&a.answers), set(&["10.96.0.10"]));
        assert_eq!(
            a.answers[0].name.to_ascii(),
            "WEB.Default.SVC.Cluster.LOCAL."
        );
    }

    #[test]
    fn headless_service_lists_ready_endpoints_once() {
        let view = view();
        let a = ask(&view, "db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&a.answers), set(&["10.1.0.1", "10.1.0.2", "10.1.0.3"]));
        assert_eq!(
            a.answers.len(),
            3,
            "10.1.0.1 is in two slices, answered once"
        );
        // No IPv6 endpoint: the name exists, with no AAAA.
        assert_nodata(&ask(
            &view,
            "db.default.svc.cluster.local.",
            RecordType::AAAA,
        ));
    }

    #[test]
    fn headless_endpoints_have_their_own_names() {
        let view = view();
        let by_hostname = ask(&view, "db-1.db.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&by_hostname.answers), set(&["10.1.0.2"]));
        let dashed = ask(
            &view,
            "10-1-0-3.db.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(data(&dashed.answers), set(&["10.1.0.3"]));
        // Not ready: no name.
        assert_nxdomain(&ask(
            &view,
            "db-3.db.default.svc.cluster.local.",
            RecordType::A,
        ));
        assert_nxdomain(&ask(
            &view,
            "db-9.db.default.svc.cluster.local.",
            RecordType::A,
        ));
        // Only headless Services name their endpoints.
        assert_nxdomain(&ask(
            &view,
            "db-0.web.default.svc.cluster.local.",
            RecordType::A,
        ));
    }

    #[test]
    fn srv_of_a_cluster_ip_service_points_at_the_service() {
        let view = view();
        let srv = ask(
            &view,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(
            data(&srv.answers),
            set(&["0 100 80 web.default.svc.cluster.local."])
        );
        assert_eq!(data(&srv.additionals), set(&["10.96.0.10", "fd00::10"]));
        // Unknown port or protocol: no such name.
        assert_nxdomain(&ask(
            &view,
            "_ftp._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        ));
        assert_nxdomain(&ask(
            &view,
            "_http._udp.web.default.svc.cluster.local.",
            RecordType::SRV,
        ));
        // `_tcp.<svc>` exists as an empty non-terminal.
        assert_nodata(&ask(
            &view,
            "_tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        ));
    }

    #[test]
    fn srv_of_a_headless_service_lists_ready_endpoints_with_glue() {
        let view = view();
        let srv = ask(
            &view,
            "_peer._tcp.db.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(
            data(&srv.answers),
            set(&[
                "0 33 15432 10-1-0-3.db.default.svc.cluster.local.",
                "0 33 15432 db-0.db.default.svc.cluster.local.",
                "0 33 15432 db-1.db.default.svc.cluster.local.",
            ])
        );
        let glue: BTreeSet<String> = srv
            .additionals
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        assert_eq!(
            glue,
            set(&[
                "10-1-0-3.db.default.svc.cluster.local. 10.1.0.3",
                "db-0.db.default.svc.cluster.local. 10.1.0.1",
                "db-1.db.default.svc.cluster.local. 10.1.0.2",
            ])
        );
        // An A question at the SRV name: the name exists, with no A.
        assert_nodata(&ask(
            &view,
            "_peer._tcp.db.default.svc.cluster.local.",
            RecordType::A,
        ));
    }

    #[test]
    fn external_name_is_an_alias() {
        let view = view();
        let cname = ask(&view, "ext.default.svc.cluster.local.", RecordType::CNAME);
        assert_eq!(data(&cname.answers), set(&["example.com."]));
        assert_eq!(cname.chase, None);
        // Any other type: the alias, and the target for the server to resolve upstream.
        let a = ask(&view, "ext.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&a.answers), set(&["example.com."]));
        assert_eq!(a.chase.map(|n| n.to_ascii()), Some("example.com.".into()));
        // An alias inside the zone is followed here.
        let chained = ask(&view, "alias.other.svc.cluster.local.", RecordType::A);
        assert_eq!(
            data(&chained.answers),
            set(&["web.default.svc.cluster.local.", "10.96.0.10"])
        );
    }

    #[test]
    fn pod_names_spell_their_address() {
        let view = view();
        let a = ask(&view, "10-244-1-7.anyns.pod.cluster.local.", RecordType::A);
        assert_eq!(data(&a.answers), set(&["10.244.1.7"]));
        let aaaa = ask(&view, "fd00--7.anyns.pod.cluster.local.", RecordType::AAAA);
        assert_eq!(data(&aaaa.answers), set(&["fd00::7"]));
        assert_nodata(&ask(
            &view,
            "10-244-1-7.anyns.pod.cluster.local.",
            RecordType::AAAA,
        ));
        assert_nxdomain(&ask(
            &view,
            "not-an-ip.anyns.pod.cluster.local.",
            RecordType::A,
        ));
    }

    #[test]
    fn reverse_names_of_cluster_addresses() {
        let view = view();
        let service = ask(&view, "10.0.96.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            data(&service.answers),
            set(&["web.default.svc.cluster.local."])
        );
        let endpoint = ask(&view, "2.0.1.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            data(&endpoint.answers),
            set(&["db-1.db.default.svc.cluster.local."])
        );
        let v6 = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        let six = ask(&view, v6, RecordType::PTR);
        assert_eq!(data(&six.answers), set(&["web.default.svc.cluster.local."]));
        // Unknown addresses are the upstream's business.
        let unknown = Name::from_ascii("9.9.9.9.in-addr.arpa.").expect("name");
        assert_eq!(
            lookup(&view, &zone(), &unknown, RecordType::PTR),
            Outcome::Forward
        );
    }

    #[test]
    fn dns_version_and_apex() {
        let view = view();
        let txt = ask(&view, "dns-version.cluster.local.", RecordType::TXT);
        assert_eq!(data(&txt.answers), set(&["1.1.0"]));
        let soa = ask(&view, "cluster.local.", RecordType::SOA);
        assert_eq!(soa.answers.len(), 1);
        assert_nodata(&ask(&view, "cluster.local.", RecordType::A));
    }

    #[test]
    fn missing_names_are_nxdomain_and_empty_ones_nodata() {
        let view = view();
        let missing = ask(&view, "nope.default.svc.cluster.local.", RecordType::A);
        assert_nxdomain(&missing);
        let soa = missing.soa.expect("soa");
        match &soa.data {
            RData::SOA(soa) => assert_eq!(soa.minimum, 5),
            other => panic!("not an SOA: {other:?}"),
        }
        assert_nxdomain(&ask(&view, "web.nons.svc.cluster.local.", RecordType::A));
        assert_nxdomain(&ask(&view, "nonsense.cluster.local.", RecordType::A));
        assert_nxdomain(&ask(&view, "a.b.c.d.e.f.svc.cluster.local.", RecordType::A));
        assert_nodata(&ask(&view, "svc.cluster.local.", RecordType::A));
        assert_nodata(&ask(&view, "default.svc.cluster.local.", RecordType::A));
        assert_nodata(&ask(
            &view,
            "web.default.svc.cluster.local.",
            RecordType::TXT,
        ));
    }

    #[test]
    fn names_outside_the_zone_are_forwarded() {
        let view = view();
        for name in ["example.com.", "cluster.local.example.com.", "local."] {
            let name = Name::from_ascii(name).expect("name");
            assert_eq!(
                lookup(&view, &zone(), &name, RecordType::A),
                Outcome::Forward
            );
        }
    }

    #[test]
    fn another_cluster_domain_and_ttl() {
        let view = View::default();
        let zone = Zone::new("Corp.Example", 30).expect("zone");
        let name = Name::from_ascii("dns-version.corp.example.").expect("name");
        let Outcome::Answer(answer) = lookup(&view, &zone, &name, RecordType::TXT) else {
            panic!("forwarded");
        };
        assert_eq!(answer.answers[0].ttl, 30);
    }
}
