//! PodDisruptionBudgets (`policy`) and HorizontalPodAutoscalers (`autoscaling`, checked
//! in their stored `v2` shape whichever version was written), as upstream words them.

use serde_json::Value;

use super::{
    given, int_or_percent, kind_and_name, list, not_over_100_percent, number, path_segment, text,
};
use crate::status::{BadValue, Cause};
use crate::strategy::{is_dns1123_label, DNS1123_LABEL_MSG};

pub(super) fn pod_disruption_budget(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let min = spec
        .and_then(|s| s.get("minAvailable"))
        .filter(|v| !v.is_null());
    let max = spec
        .and_then(|s| s.get("maxUnavailable"))
        .filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        let pointer = |present: bool, target: &str| {
            if present {
                super::go::pointer(target)
            } else {
                format!("(*{target})(nil)")
            }
        };
        causes.push(Cause::invalid(
            "spec",
            BadValue::Go(format!(
                "policy.PodDisruptionBudgetSpec{{MinAvailable:{}, Selector:{}, MaxUnavailable:{}, UnhealthyPodEvictionPolicy:{}}}",
                pointer(true, "intstr.IntOrString"),
                pointer(given(spec, "selector"), "v1.LabelSelector"),
                pointer(true, "intstr.IntOrString"),
                pointer(
                    given(spec, "unhealthyPodEvictionPolicy"),
                    "policy.UnhealthyPodEvictionPolicyType"
                ),
            )),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (value, field) in [(min, "spec.minAvailable"), (max, "spec.maxUnavailable")] {
        if value.is_some() {
            int_or_percent(value, field, causes);
            not_over_100_percent(value, field, causes);
        }
    }
}

pub(super) fn horizontal_pod_autoscaler(spec: Option<&Value>, causes: &mut Vec<Cause>) {
    let min = number(spec, "minReplicas");
    let max = number(spec, "maxReplicas").unwrap_or(0);
    if let Some(min) = min.filter(|m| *m < 1) {
        causes.push(Cause::invalid(
            "spec.minReplicas",
            min,
            "must be greater than or equal to 1",
        ));
    }
    if max < 1 {
        causes.push(Cause::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than 0",
        ));
    }
    if min.is_some_and(|min| max < min) {
        causes.push(Cause::invalid(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    kind_and_name(
        spec.and_then(|s| s.get("scaleTargetRef")),
        "spec.scaleTargetRef",
        causes,
    );
    for (i, metric) in list(spec, "metrics").iter().enumerate() {
        metric_spec(metric, &format!("spec.metrics[{i}]"), causes);
    }
    if let Some(behavior) = spec
        .and_then(|s| s.get("behavior"))
        .filter(|b| !b.is_null())
    {
        for direction in ["scaleUp", "scaleDown"] {
            if let Some(rules) = behavior.get(direction).filter(|r| !r.is_null()) {
                scaling_rules(rules, &format!("spec.behavior.{direction}"), causes);
            }
        }
    }
}

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

fn metric_spec(metric: &Value, at: &str, causes: &mut Vec<Cause>) {
    let kind = text(Some(metric), "type");
    if kind.is_empty() {
        causes.push(Cause::required_detail(
            format!("{at}.type"),
            "must specify a metric source type",
        ));
    }
    if !METRIC_TYPES.contains(&kind) {
        causes.push(Cause::unsupported(format!("{at}.type"), kind, METRIC_TYPES));
    }
    let sources = [
        "object",
        "external",
        "pods",
        "resource",
        "containerResource",
    ];
    let present: Vec<&str> = sources
        .iter()
        .copied()
        .filter(|s| metric.get(*s).is_some_and(|v| !v.is_null()))
        .collect();
    if let Some(first) = present.first() {
        let source = &metric[*first];
        let path = format!("{at}.{first}");
        match *first {
            "object" => {
                kind_and_name(
                    source.get("describedObject"),
                    &format!("{path}.describedObject"),
                    causes,
                );
                metric_identifier(source.get("metric"), &path, causes);
                let target = metric_target(source.get("target"), &path, causes);
                if !given(target, "value") && !given(target, "averageValue") {
                    causes.push(Cause::required_detail(
                        format!("{path}.target.averageValue"),
                        "must set either a target value or averageValue",
                    ));
                }
            }
            "external" => {
                metric_identifier(source.get("metric"), &path, causes);
                let target = metric_target(source.get("target"), &path, causes);
                if !given(target, "value") && !given(target, "averageValue") {
                    causes.push(Cause::required_detail(
                        format!("{path}.target.averageValue"),
                        "must set either a target value for metric or a per-pod target",
                    ));
                }
                if given(target, "value") && given(target, "averageValue") {
                    causes.push(Cause::forbidden(
                        format!("{path}.target.value"),
                        "may not set both a target value for metric and a per-pod target",
                    ));
                }
            }
            "pods" => {
                metric_identifier(source.get("metric"), &path, causes);
                let target = metric_target(source.get("target"), &path, causes);
                if !given(target, "averageValue") {
                    causes.push(Cause::required_detail(
                        format!("{path}.target.averageValue"),
                        "must specify a positive target averageValue",
                    ));
                }
            }
            _ => {
                let name = text(Some(source), "name");
                if name.is_empty() {
                    causes.push(Cause::required_detail(
                        format!("{path}.name"),
                        "must specify a resource name",
                    ));
                }
                if *first == "containerResource" {
                    let container = text(Some(source), "container");
                    if container.is_empty() {
                        causes.push(Cause::required_detail(
                            format!("{path}.container"),
                            "must specify a container",
                        ));
                    } else if !is_dns1123_label(container) {
                        causes.push(Cause::invalid(
                            format!("{path}.container"),
                            container,
                            DNS1123_LABEL_MSG,
                        ));
                    }
                }
                let target = metric_target(source.get("target"), &path, causes);
                if !given(target, "averageUtilization") && !given(target, "averageValue") {
                    causes.push(Cause::required_detail(
                        format!("{path}.target.averageUtilization"),
                        "must set either a target raw value or a target utilization",
                    ));
                }
                if given(target, "averageUtilization") && given(target, "averageValue") {
                    causes.push(Cause::forbidden(
                        format!("{path}.target.averageValue"),
                        "may not set both a target raw value and a target utilization",
                    ));
                }
            }
        }
    }
    let expected = match kind {
        "Object" => Some("object"),
        "Pods" => Some("pods"),
        "Resource" => Some("resource"),
        "External" => Some("external"),
        "ContainerResource" => Some("containerResource"),
        _ => None,
    };
    if let Some(expected) = expected {
        if !present.contains(&expected) {
            causes.push(Cause::required_detail(
                format!("{at}.{expected}"),
                "must populate information for the given metric source",
            ));
        }
    } else {
        // Upstream reports an unknown type twice (before and in its switch).
        causes.push(Cause::unsupported(format!("{at}.type"), kind, METRIC_TYPES));
    }
    if present.len() > 1 {
        for source in present.iter().filter(|s| Some(**s) != expected) {
            causes.push(Cause::forbidden(
                format!("{at}.{source}"),
                "must populate the given metric source only",
            ));
        }
    }
}

fn metric_identifier(metric: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let name = text(metric, "name");
    let field = format!("{path}.metric.name");
    if name.is_empty() {
        causes.push(Cause::required_detail(field, "must specify a metric name"));
    } else {
        for message in path_segment(name) {
            causes.push(Cause::invalid(&field, name, message));
        }
    }
}

/// Upstream's `validateMetricTarget`; the target, for the source's own checks.
fn metric_target<'a>(
    target: Option<&'a Value>,
    path: &str,
    causes: &mut Vec<Cause>,
) -> Option<&'a Value> {
    let at = format!("{path}.target");
    let kind = text(target, "type");
    if kind.is_empty() {
        causes.push(Cause::required_detail(
            format!("{at}.type"),
            "must specify a metric target type",
        ));
    }
    if !["Utilization", "Value", "AverageValue"].contains(&kind) {
        causes.push(Cause::invalid(
            format!("{at}.type"),
            kind,
            "must be either Utilization, Value, or AverageValue",
        ));
    }
    for key in ["value", "averageValue"] {
        if let Some(quantity) = target.and_then(|t| t.get(key)).and_then(Value::as_str) {
            if skiff_quantity::parse_milli(quantity).is_ok_and(|q| q <= 0) {
                causes.push(Cause::invalid(
                    format!("{at}.{key}"),
                    super::canonical(quantity),
                    "must be positive",
                ));
            }
        }
    }
    if let Some(utilization) = number(target, "averageUtilization").filter(|u| *u < 1) {
        causes.push(Cause::invalid(
            format!("{at}.averageUtilization"),
            utilization,
            "must be greater than 0",
        ));
    }
    target
}

fn scaling_rules(rules: &Value, at: &str, causes: &mut Vec<Cause>) {
    let rules = Some(rules);
    if let Some(window) = number(rules, "stabilizationWindowSeconds") {
        if window < 0 {
            causes.push(Cause::invalid(
                format!("{at}.stabilizationWindowSeconds"),
                window,
                "must be greater than or equal to zero",
            ));
        }
        if window > 3600 {
            causes.push(Cause::invalid(
                format!("{at}.stabilizationWindowSeconds"),
                window,
                "must be less than or equal to 3600",
            ));
        }
    }
    if let Some(select) = rules
        .and_then(|r| r.get("selectPolicy"))
        .and_then(Value::as_str)
    {
        if !["Disabled", "Max", "Min"].contains(&select) {
            causes.push(Cause::unsupported(
                format!("{at}.selectPolicy"),
                select,
                &["Disabled", "Max", "Min"],
            ));
        }
    }
    let policies = list(rules, "policies");
    if policies.is_empty() {
        causes.push(Cause::required_detail(
            format!("{at}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, policy) in policies.iter().enumerate() {
        let path = format!("{at}.policies[{i}]");
        let policy = Some(policy);
        let kind = text(policy, "type");
        if kind != "Pods" && kind != "Percent" {
            causes.push(Cause::unsupported(
                format!("{path}.type"),
                kind,
                &["Percent", "Pods"],
            ));
        }
        let value = number(policy, "value").unwrap_or(0);
        if value <= 0 {
            causes.push(Cause::invalid(
                format!("{path}.value"),
                value,
                "must be greater than zero",
            ));
        }
        let period = number(policy, "periodSeconds").unwrap_or(0);
        if period <= 0 {
            causes.push(Cause::invalid(
                format!("{path}.periodSeconds"),
                period,
                "must be greater than zero",
            ));
        }
        if period > 1800 {
            causes.push(Cause::invalid(
                format!("{path}.periodSeconds"),
                period,
                "must be less than or equal to 1800",
            ));
        }
    }
}
