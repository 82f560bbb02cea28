//! The rest of the core and small groups: ResourceQuotas and LimitRanges (quantities,
//! LimitRange's min ≤ default ≤ max), Secrets' typed keys, Endpoints' and EndpointSlices'
//! addresses, Leases and PriorityClasses, as upstream words them.

use std::net::IpAddr;

use base64::Engine;
use serde_json::Value;

use super::{canonical, list, number, one_of, port_number, text, PROTOCOLS};
use crate::status::{BadValue, Cause};
use crate::strategy::{is_dns1123_label, DNS1123_LABEL_MSG};

const NEGATIVE_QUANTITY: &str = "must be greater than or equal to 0";
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

fn milli(quantity: &Value) -> Option<i64> {
    quantity
        .as_str()
        .and_then(|q| skiff_quantity::parse_milli(q).ok())
}

/// Every quantity of a resource list non-negative (`field[name]`).
fn nonnegative_quantities(list: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    for (name, quantity) in list.and_then(Value::as_object).into_iter().flatten() {
        if milli(quantity).is_some_and(|m| m < 0) {
            causes.push(Cause::invalid(
                format!("{field}[{name}]"),
                canonical(quantity.as_str().unwrap_or("")),
                NEGATIVE_QUANTITY,
            ));
        }
    }
}

pub(super) fn resource_quota(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    nonnegative_quantities(spec.and_then(|s| s.get("hard")), "spec.hard", causes);
}

pub(super) fn limit_range(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    for (i, limit) in list(spec, "limits").iter().enumerate() {
        let at = format!("spec.limits[{i}]");
        let limit = Some(limit);
        let kind = text(limit, "type");
        for key in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            nonnegative_quantities(
                limit.and_then(|l| l.get(key)),
                &format!("{at}.{key}"),
                causes,
            );
        }
        if kind == "Pod" {
            for key in ["default", "defaultRequest"] {
                if limit
                    .and_then(|l| l.get(key))
                    .and_then(Value::as_object)
                    .is_some_and(|m| !m.is_empty())
                {
                    causes.push(Cause::forbidden(
                        format!("{at}.{key}"),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
            }
        }
        let get = |key: &str, name: &str| -> Option<(i64, String)> {
            let quantity = limit.and_then(|l| l.get(key)).and_then(|m| m.get(name))?;
            Some((milli(quantity)?, canonical(quantity.as_str()?)))
        };
        let mut names: Vec<&String> = ["max", "min", "default", "defaultRequest"]
            .iter()
            .filter_map(|k| limit.and_then(|l| l.get(*k)).and_then(Value::as_object))
            .flat_map(|m| m.keys())
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let min = get("min", name);
            let max = get("max", name);
            let default = get("default", name);
            let request = get("defaultRequest", name);
            let field = |key: &str| format!("{at}.{key}[{name}]");
            let mut compare = |lower: &Option<(i64, String)>,
                               upper: &Option<(i64, String)>,
                               key: &str,
                               shown: bool,
                               what: (&str, &str)| {
                if let (Some(lower), Some(upper)) = (lower, upper) {
                    if lower.0 > upper.0 {
                        let value = if shown { &lower.1 } else { &upper.1 };
                        causes.push(Cause::invalid(
                            field(key),
                            BadValue::Go(super::go::quantity(value)),
                            &format!(
                                "{} value {} is greater than {} value {}",
                                what.0, lower.1, what.1, upper.1
                            ),
                        ));
                    }
                }
            };
            compare(&min, &max, "min", true, ("min", "max"));
            compare(
                &min,
                &request,
                "defaultRequest",
                false,
                ("min", "default request"),
            );
            compare(
                &request,
                &max,
                "defaultRequest",
                true,
                ("default request", "max"),
            );
            compare(
                &request,
                &default,
                "defaultRequest",
                true,
                ("default request", "default limit"),
            );
            compare(&min, &default, "default", true, ("min", "default"));
            compare(&default, &max, "default", false, ("default", "max"));
        }
    }
}

pub(super) fn secret(object: &Value, causes: &mut Vec<Cause>) {
    let data = object.get("data").and_then(Value::as_object);
    let has = |key: &str| data.is_some_and(|d| d.contains_key(key));
    let required = |key: &str, causes: &mut Vec<Cause>| {
        causes.push(Cause::required(format!("data[{key}]")));
    };
    match text(Some(object), "type") {
        "kubernetes.io/service-account-token" => {
            let named = object
                .pointer("/metadata/annotations")
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            if !named {
                causes.push(Cause::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                ));
            }
        }
        kind @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if kind == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match data.and_then(|d| d.get(key)) {
                None => required(key, causes),
                Some(encoded) => {
                    let bytes = encoded
                        .as_str()
                        .and_then(|e| base64::engine::general_purpose::STANDARD.decode(e).ok())
                        .unwrap_or_default();
                    if let Err(problem) = json_object(&bytes) {
                        causes.push(Cause::invalid(
                            format!("data[{key}]"),
                            "<secret contents redacted>",
                            &problem,
                        ));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            required("username", causes);
            required("password", causes);
        }
        "kubernetes.io/ssh-auth" => {
            let empty = data
                .and_then(|d| d.get("ssh-privatekey"))
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if empty {
                required("ssh-privatekey", causes);
            }
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    required(key, causes);
                }
            }
        }
        _ => {}
    }
}

/// Whether `bytes` are a JSON object, with Go's `encoding/json` words when they are not
/// (upstream's Secret validation unmarshals docker configurations into a map).
fn json_object(bytes: &[u8]) -> Result<(), String> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(_)) => Ok(()),
        Ok(other) => {
            let kind = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "bool",
                _ => return Ok(()), // `null` unmarshals into an empty map
            };
            Err(format!(
                "json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
            ))
        }
        Err(e) if e.is_eof() => Err("unexpected end of JSON input".into()),
        Err(e) => {
            // serde's position is 1-based lines and columns; Go names the offending byte.
            let offset: usize = bytes
                .split(|b| *b == b'\n')
                .take(e.line().saturating_sub(1))
                .map(|line| line.len() + 1)
                .sum::<usize>()
                + e.column().saturating_sub(1);
            let offending = bytes.get(offset).map(|b| *b as char).unwrap_or(' ');
            Err(format!(
                "invalid character '{offending}' looking for beginning of value"
            ))
        }
    }
}

/// Upstream's `IsValidIPForLegacyField` (strict): the parsed address, or a cause.
fn ip(value: &str, field: &str, causes: &mut Vec<Cause>) -> Option<IpAddr> {
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
            causes.push(Cause::invalid(
                field,
                value,
                "must not be an IPv4-mapped IPv6 address",
            ));
            None
        }
        Ok(parsed) => Some(parsed),
        Err(_) => {
            causes.push(Cause::invalid(field, value, IP_MSG));
            None
        }
    }
}

/// Upstream's `ValidateNonSpecialIP`: why `address` is no address traffic can be sent to
/// from elsewhere (a host's own: unspecified, loopback; a link's: link-local), if it is not.
pub(crate) fn special_ip(address: IpAddr) -> Vec<String> {
    let (unspecified, loopback, link_local, link_local_multicast) = match address {
        IpAddr::V4(v4) => (
            v4.is_unspecified(),
            v4.is_loopback(),
            v4.is_link_local(),
            v4.octets()[..3] == [224, 0, 0],
        ),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (
                v6.is_unspecified(),
                v6.is_loopback(),
                first & 0xffc0 == 0xfe80,
                first & 0xff0f == 0xff02,
            )
        }
    };
    let mut problems = Vec::new();
    if unspecified {
        problems.push(format!("may not be unspecified ({address})"));
    }
    for (special, range) in [
        (loopback, "the loopback range (127.0.0.0/8, ::1/128)"),
        (
            link_local,
            "the link-local range (169.254.0.0/16, fe80::/10)",
        ),
        (
            link_local_multicast,
            "the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ),
    ] {
        if special {
            problems.push(format!("may not be in {range}"));
        }
    }
    problems
}

pub(super) fn endpoints(object: &Value, causes: &mut Vec<Cause>) {
    for (i, subset) in list(Some(object), "subsets").iter().enumerate() {
        let at = format!("subsets[{i}]");
        let subset = Some(subset);
        for kind in ["addresses", "notReadyAddresses"] {
            for (j, address) in list(subset, kind).iter().enumerate() {
                let path = format!("{at}.{kind}[{j}]");
                let field = format!("{path}.ip");
                if let Some(parsed) = ip(text(Some(address), "ip"), &field, causes) {
                    let shown = parsed.to_string();
                    for problem in special_ip(parsed) {
                        causes.push(Cause::invalid(&field, shown.as_str(), &problem));
                    }
                }
                let hostname = text(Some(address), "hostname");
                if !hostname.is_empty() && !is_dns1123_label(hostname) {
                    causes.push(Cause::invalid(
                        format!("{path}.hostname"),
                        hostname,
                        DNS1123_LABEL_MSG,
                    ));
                }
            }
        }
        let ports = list(subset, "ports");
        for (j, port) in ports.iter().enumerate() {
            let path = format!("{at}.ports[{j}]");
            let port = Some(port);
            let name = text(port, "name");
            if ports.len() > 1 && name.is_empty() {
                causes.push(Cause::required(format!("{path}.name")));
            } else if !name.is_empty() && !is_dns1123_label(name) {
                causes.push(Cause::invalid(
                    format!("{path}.name"),
                    name,
                    DNS1123_LABEL_MSG,
                ));
            }
            port_number(
                number(port, "port").unwrap_or(0),
                format!("{path}.port"),
                causes,
            );
            one_of(
                text(port, "protocol"),
                PROTOCOLS,
                format!("{path}.protocol"),
                causes,
            );
        }
    }
}

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];

pub(super) fn endpoint_slice(object: &Value, causes: &mut Vec<Cause>) {
    let kind = text(Some(object), "addressType");
    if kind.is_empty() {
        causes.push(Cause::required("addressType"));
    } else if !ADDRESS_TYPES.contains(&kind) {
        causes.push(Cause::unsupported("addressType", kind, ADDRESS_TYPES));
    }
    for (i, endpoint) in list(Some(object), "endpoints").iter().enumerate() {
        let at = format!("endpoints[{i}].addresses");
        let addresses = list(Some(endpoint), "addresses");
        if addresses.is_empty() {
            causes.push(Cause::required_detail(
                &at,
                "must contain at least 1 address",
            ));
        }
        for (j, address) in addresses.iter().enumerate() {
            let address = address.as_str().unwrap_or("");
            let field = format!("{at}[{j}]");
            match kind {
                "IPv4" | "IPv6" => {
                    let Some(parsed) = ip(address, &field, causes) else {
                        continue;
                    };
                    if kind == "IPv4" && !parsed.is_ipv4() {
                        causes.push(Cause::invalid(&at, address, "must be an IPv4 address"));
                    }
                    if kind == "IPv6" && !parsed.is_ipv6() {
                        causes.push(Cause::invalid(&at, address, "must be an IPv6 address"));
                    }
                }
                "FQDN"
                    if !crate::strategy::is_dns1123_subdomain(address)
                        || !address.contains('.') =>
                {
                    causes.push(Cause::invalid(
                        &field,
                        address,
                        "should be a domain with at least two segments separated by dots",
                    ));
                }
                _ => {}
            }
        }
    }
}

pub(super) fn lease(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    if let Some(duration) = number(spec, "leaseDurationSeconds").filter(|d| *d <= 0) {
        causes.push(Cause::invalid(
            "spec.leaseDurationSeconds",
            duration,
            "must be greater than 0",
        ));
    }
    if let Some(transitions) = number(spec, "leaseTransitions").filter(|t| *t < 0) {
        causes.push(Cause::invalid(
            "spec.leaseTransitions",
            transitions,
            "must be greater than or equal to 0",
        ));
    }
    let strategy = text(spec, "strategy");
    if !text(spec, "preferredHolder").is_empty() && strategy.is_empty() {
        causes.push(Cause::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
}

/// The classes the cluster itself defines: name, value (and not a global default).
const SYSTEM_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];
const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

pub(super) fn priority_class(object: &Value, causes: &mut Vec<Cause>) {
    let name = crate::object::name(object);
    let value = number(Some(object), "value").unwrap_or(0);
    let global = object.get("globalDefault").and_then(Value::as_bool) == Some(true);
    if name.starts_with("system-") {
        let error = match SYSTEM_CLASSES.iter().find(|(n, _)| *n == name) {
            None => Some(format!("{name} is not a known system priority class")),
            Some((_, v)) if *v != value => {
                Some(format!("value of {name} PriorityClass must be {v}"))
            }
            Some(_) if global => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
        };
        if let Some(error) = error {
            causes.push(Cause::forbidden(
                "metadata.name",
                &format!("priority class names with 'system-' prefix are reserved for system use only. error: {error}"),
            ));
        }
    } else if value > HIGHEST_USER_PRIORITY {
        causes.push(Cause::forbidden(
            "value",
            &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        ));
    }
    let policy = text(Some(object), "preemptionPolicy");
    if !policy.is_empty() && !["Never", "PreemptLowerPriority"].contains(&policy) {
        causes.push(Cause::unsupported(
            "preemptionPolicy",
            policy,
            &["Never", "PreemptLowerPriority"],
        ));
    }
}
