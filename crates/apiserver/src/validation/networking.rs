//! `networking.k8s.io`: Ingresses (rules, paths and their types, backends), IngressClasses
//! and NetworkPolicies (ports, peers, IP blocks, policy types), as upstream's
//! `networking` validation words them.

use std::net::IpAddr;

use serde_json::Value;

use super::{kind_and_name, list, port_name, port_number, text, PROTOCOLS};
use crate::status::{quote, BadValue, Cause};
use crate::strategy::{is_dns1123_label, is_dns1123_subdomain};
use crate::strategy::{DNS1123_LABEL_MSG, DNS1123_SUBDOMAIN_MSG};

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];
const WILDCARD_MSG: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

pub(super) fn ingress(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let rules = list(spec, "rules");
    let default_backend = spec
        .and_then(|s| s.get("defaultBackend"))
        .filter(|b| !b.is_null());
    if rules.is_empty() && default_backend.is_none() {
        let value = match spec.and_then(|s| s.get("rules")) {
            Some(Value::Array(_)) => "[]networking.IngressRule{}",
            _ => "[]networking.IngressRule(nil)",
        };
        causes.push(Cause::invalid(
            "spec",
            BadValue::Go(value.into()),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(backend) = default_backend {
        ingress_backend(backend, "spec.defaultBackend", causes);
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let host = text(Some(rule), "host");
        if !host.is_empty() {
            if host.parse::<IpAddr>().is_ok() {
                causes.push(Cause::invalid(
                    format!("{at}.host"),
                    host,
                    "must be a DNS name, not an IP address",
                ));
            }
            if host.contains('*') {
                let valid = host
                    .strip_prefix("*.")
                    .is_some_and(|rest| is_dns1123_subdomain(rest) && rest.len() <= 251);
                if !valid {
                    causes.push(Cause::invalid(format!("{at}.host"), host, WILDCARD_MSG));
                }
            } else {
                subdomain(host, &format!("{at}.host"), causes);
            }
        }
        let Some(http) = rule.get("http").filter(|h| !h.is_null()) else {
            continue;
        };
        let paths = list(Some(http), "paths");
        if paths.is_empty() {
            causes.push(Cause::required(format!("{at}.http.paths")));
        }
        for (j, path) in paths.iter().enumerate() {
            ingress_path(path, &format!("{at}.http.paths[{j}]"), causes);
        }
    }
    for (i, tls) in list(spec, "tls").iter().enumerate() {
        let at = format!("spec.tls[{i}]");
        for (j, host) in list(Some(tls), "hosts").iter().enumerate() {
            let host = host.as_str().unwrap_or("");
            let field = format!("{at}.hosts[{j}]");
            if host.contains('*') {
                if !host.strip_prefix("*.").is_some_and(is_dns1123_subdomain) {
                    causes.push(Cause::invalid(field, host, WILDCARD_MSG));
                }
            } else {
                subdomain(host, &field, causes);
            }
        }
        let secret = text(Some(tls), "secretName");
        if !secret.is_empty() {
            subdomain(secret, &format!("{at}.secretName"), causes);
        }
    }
    if let Some(class) = spec
        .and_then(|s| s.get("ingressClassName"))
        .and_then(Value::as_str)
    {
        subdomain(class, "spec.ingressClassName", causes);
    }
}

fn subdomain(value: &str, field: &str, causes: &mut Vec<Cause>) {
    if !is_dns1123_subdomain(value) {
        causes.push(Cause::invalid(field, value, DNS1123_SUBDOMAIN_MSG));
    }
}

fn ingress_path(path: &Value, at: &str, causes: &mut Vec<Cause>) {
    let Some(kind) = path.get("pathType").and_then(Value::as_str) else {
        causes.push(Cause::required_detail(
            format!("{at}.pathType"),
            "pathType must be specified",
        ));
        return;
    };
    let value = text(Some(path), "path");
    let field = format!("{at}.path");
    match kind {
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                causes.push(Cause::invalid(&field, value, "must be an absolute path"));
            }
            if !value.is_empty() {
                for sequence in ["//", "/./", "/../", "%2f", "%2F"] {
                    if value.contains(sequence) {
                        causes.push(Cause::invalid(
                            &field,
                            value,
                            &format!("must not contain '{sequence}'"),
                        ));
                    }
                }
                for suffix in ["/..", "/."] {
                    if value.ends_with(suffix) {
                        causes.push(Cause::invalid(
                            &field,
                            value,
                            &format!("cannot end with '{suffix}'"),
                        ));
                    }
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                causes.push(Cause::invalid(&field, value, "must be an absolute path"));
            }
        }
        other => causes.push(Cause::unsupported(
            format!("{at}.pathType"),
            other,
            PATH_TYPES,
        )),
    }
    let backend = path.get("backend").cloned().unwrap_or(Value::Null);
    ingress_backend(&backend, &format!("{at}.backend"), causes);
}

fn ingress_backend(backend: &Value, at: &str, causes: &mut Vec<Cause>) {
    let resource = backend.get("resource").filter(|r| !r.is_null());
    let service = backend.get("service").filter(|s| !s.is_null());
    match (resource, service) {
        (Some(_), Some(_)) => causes.push(Cause::invalid(
            at,
            "",
            "cannot set both resource and service backends",
        )),
        (Some(resource), None) => {
            let resource = Some(resource);
            if let Some(group) = resource
                .and_then(|r| r.get("apiGroup"))
                .and_then(Value::as_str)
            {
                subdomain(group, &format!("{at}.resource.apiGroup"), causes);
            }
            kind_and_name(resource, &format!("{at}.resource"), causes);
        }
        (None, Some(service)) => {
            let service = Some(service);
            let name = text(service, "name");
            if name.is_empty() {
                causes.push(Cause::required(format!("{at}.service.name")));
            } else if !is_dns1123_label(name) {
                causes.push(Cause::invalid(
                    format!("{at}.service.name"),
                    name,
                    DNS1123_LABEL_MSG,
                ));
            }
            let port = service.and_then(|s| s.get("port"));
            let port_name_value = text(port, "name");
            let port_number_value = port
                .and_then(|p| p.get("number"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            match (port_name_value.is_empty(), port_number_value == 0) {
                (false, false) => causes.push(Cause::invalid(
                    at,
                    "",
                    "cannot set both port name & port number",
                )),
                (false, true) => {
                    port_name(port_name_value, &format!("{at}.service.port.name"), causes)
                }
                (true, false) => port_number(
                    port_number_value,
                    format!("{at}.service.port.number"),
                    causes,
                ),
                (true, true) => causes.push(Cause::required_detail(
                    at,
                    "port name or number is required",
                )),
            }
        }
        (None, None) => causes.push(Cause::invalid(
            at,
            "",
            "resource or service backend is required",
        )),
    }
}

pub(super) fn ingress_class(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let controller = text(spec, "controller");
    let field = "spec.controller";
    if controller.is_empty() {
        causes.push(Cause::required(field));
    } else if controller.len() > 250 {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            message: "Too long: may not be more than 250 bytes".into(),
            field: field.into(),
        });
    } else {
        match controller.split_once('/') {
            Some((host, path)) if !host.is_empty() && !path.is_empty() => {
                subdomain(host, field, causes);
            }
            _ => causes.push(Cause::invalid(
                field,
                controller,
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            )),
        }
    }
    let Some(parameters) = spec
        .and_then(|s| s.get("parameters"))
        .filter(|p| !p.is_null())
    else {
        return;
    };
    let at = "spec.parameters";
    let parameters = Some(parameters);
    if let Some(group) = parameters
        .and_then(|p| p.get("apiGroup"))
        .and_then(Value::as_str)
    {
        subdomain(group, &format!("{at}.apiGroup"), causes);
    }
    kind_and_name(parameters, at, causes);
    let namespace = parameters
        .and_then(|p| p.get("namespace"))
        .and_then(Value::as_str);
    match parameters
        .and_then(|p| p.get("scope"))
        .and_then(Value::as_str)
    {
        None => causes.push(Cause::required(format!("{at}.scope"))),
        Some("Namespace") => match namespace {
            None => causes.push(Cause::required_detail(
                format!("{at}.namespace"),
                "`parameters.scope` is set to 'Namespace'",
            )),
            Some(namespace) if !is_dns1123_label(namespace) => causes.push(Cause::invalid(
                format!("{at}.namespace"),
                namespace,
                DNS1123_LABEL_MSG,
            )),
            Some(_) => {}
        },
        Some("Cluster") => {
            if namespace.is_some() {
                causes.push(Cause::forbidden(
                    format!("{at}.namespace"),
                    "`parameters.scope` is set to 'Cluster'",
                ));
            }
        }
        Some(other) => causes.push(Cause::unsupported(
            format!("{at}.scope"),
            other,
            &["Cluster", "Namespace"],
        )),
    }
}

pub(super) fn network_policy(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in list(spec, direction).iter().enumerate() {
            let at = format!("spec.{direction}[{i}]");
            for (j, port) in list(Some(rule), "ports").iter().enumerate() {
                policy_port(port, &format!("{at}.ports[{j}]"), causes);
            }
            for (j, peer) in list(Some(rule), peers).iter().enumerate() {
                policy_peer(peer, &format!("{at}.{peers}[{j}]"), causes);
            }
        }
    }
    let types = list(spec, "policyTypes");
    if types.len() > 2 {
        let inner: Vec<String> = types
            .iter()
            .map(|t| quote(t.as_str().unwrap_or("")))
            .collect();
        causes.push(Cause::invalid(
            "spec.policyTypes",
            BadValue::Go(format!("[]networking.PolicyType{{{}}}", inner.join(", "))),
            "may not specify more than two policyTypes",
        ));
        return;
    }
    for (i, kind) in types.iter().enumerate() {
        let kind = kind.as_str().unwrap_or("");
        if kind != "Ingress" && kind != "Egress" {
            causes.push(Cause::unsupported(
                format!("spec.policyTypes[{i}]"),
                kind,
                &["Ingress", "Egress"],
            ));
        }
    }
}

fn policy_port(port: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(protocol) = port.get("protocol").and_then(Value::as_str) {
        if !PROTOCOLS.contains(&protocol) {
            causes.push(Cause::unsupported(
                format!("{at}.protocol"),
                protocol,
                &["TCP", "UDP", "SCTP"],
            ));
        }
    }
    let end = port.get("endPort").and_then(Value::as_i64);
    match port.get("port").filter(|p| !p.is_null()) {
        Some(Value::String(name)) => {
            if let Some(end) = end {
                causes.push(Cause::invalid(
                    format!("{at}.endPort"),
                    end,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            port_name(name, &format!("{at}.port"), causes);
        }
        Some(number) => {
            let number = number.as_i64().unwrap_or(0);
            port_number(number, format!("{at}.port"), causes);
            if let Some(end) = end {
                if end < number {
                    causes.push(Cause::invalid(
                        format!("{at}.endPort"),
                        end,
                        "must be greater than or equal to `port`",
                    ));
                }
                port_number(end, format!("{at}.endPort"), causes);
            }
        }
        None => {
            if let Some(end) = end {
                causes.push(Cause::invalid(
                    format!("{at}.endPort"),
                    end,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

fn policy_peer(peer: &Value, at: &str, causes: &mut Vec<Cause>) {
    let present = |key: &str| peer.get(key).is_some_and(|v| !v.is_null());
    let count = ["podSelector", "namespaceSelector", "ipBlock"]
        .iter()
        .filter(|k| present(k))
        .count();
    if let Some(block) = peer.get("ipBlock").filter(|b| !b.is_null()) {
        ip_block(block, &format!("{at}.ipBlock"), causes);
    }
    if count == 0 {
        causes.push(Cause::required_detail(at, "must specify a peer"));
    } else if count > 1 && present("ipBlock") {
        causes.push(Cause::forbidden(
            at,
            "may not specify both ipBlock and another peer",
        ));
    }
}

fn ip_block(block: &Value, at: &str, causes: &mut Vec<Cause>) {
    let cidr = text(Some(block), "cidr");
    if cidr.is_empty() {
        causes.push(Cause::required(format!("{at}.cidr")));
        return;
    }
    let Some(outer) = parse_cidr(cidr, &format!("{at}.cidr"), causes) else {
        return;
    };
    for (i, except) in list(Some(block), "except").iter().enumerate() {
        let except = except.as_str().unwrap_or("");
        let field = format!("{at}.except[{i}]");
        let Some(inner) = parse_cidr(except, &field, causes) else {
            continue;
        };
        if !contains(outer, inner.0) || outer.1 >= inner.1 {
            causes.push(Cause::invalid(
                field,
                except,
                "must be a strict subset of `cidr`",
            ));
        }
    }
}

/// A CIDR as upstream's strict legacy-field check reads it: the network (masked) and
/// its prefix length, or the causes that say why not.
pub(super) fn parse_cidr(
    value: &str,
    field: &str,
    causes: &mut Vec<Cause>,
) -> Option<(IpAddr, u8)> {
    let parsed = value.split_once('/').and_then(|(ip, bits)| {
        let ip: IpAddr = ip.parse().ok()?;
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let bits: u8 = (!bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| bits.parse().ok())
            .flatten()
            .filter(|b| *b <= width)?;
        Some((ip, bits))
    });
    let Some((ip, bits)) = parsed else {
        causes.push(Cause::invalid(field, value, CIDR_MSG));
        return None;
    };
    let network = masked(ip, bits);
    if network != ip {
        causes.push(Cause::invalid(
            field,
            value,
            "must not have bits set beyond the prefix length",
        ));
    }
    Some((network, bits))
}

fn masked(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - bits as u32).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - bits as u32).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

fn contains(network: (IpAddr, u8), ip: IpAddr) -> bool {
    network.0.is_ipv4() == ip.is_ipv4() && masked(ip, network.1) == network.0
}
