//! Where each kind of metric is read and what it asks for, as upstream's metrics clients
//! and replica calculator: `Resource` from `metrics.k8s.io` (each pod's usage against
//! its requests or an average), `Pods` from `custom.metrics.k8s.io` (each pod's value,
//! averaged), `Object` from the same API (one object's value, or that value per pod),
//! `External` from `external.metrics.k8s.io` (the sum of the series a selector picks,
//! likewise). The custom and external APIs are served by extension API servers the API
//! server aggregates.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{
    ExternalMetricStatus, MetricIdentifier, MetricSpec, MetricStatus, MetricTarget,
    MetricValueStatus, ObjectMetricStatus, PodsMetricStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Client;
use serde_json::Value;

use super::replicas::{self, Sample, Target, Tolerances};

const CUSTOM_METRICS: &str = "/apis/custom.metrics.k8s.io/v1beta2";
const EXTERNAL_METRICS: &str = "/apis/external.metrics.k8s.io/v1beta1";

/// One metric's reading and the replica count it asks for.
pub struct Proposal {
    pub replicas: i32,
    pub status: MetricStatus,
    /// How upstream names the metric in conditions and events.
    pub description: String,
}

/// Why a metric could not be read: upstream's condition reason and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

/// What the target looks like now.
pub struct TargetState<'a> {
    pub namespace: &'a str,
    /// The target's pod selector, as a string.
    pub selector: &'a str,
    pub pods: &'a [Pod],
    /// `spec.replicas` of the target's scale.
    pub current: i32,
    /// `status.replicas` of the target's scale.
    pub status_replicas: i32,
    pub tolerances: Tolerances,
}

/// A milli-unit amount as upstream prints a milli-quantity: whole units without a suffix.
pub fn milli_quantity(milli: i64) -> Quantity {
    Quantity(if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    })
}

fn milli(value: &Value) -> Result<i64, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("{value} is not a quantity"))?;
    parse_milli(text)
}

fn parse_milli(text: &str) -> Result<i64, String> {
    skiff_quantity::parse_milli(text).map_err(|e| e.to_string())
}

/// A metric's label selector in its string form (empty selects every series).
fn selector_string(metric: &MetricIdentifier) -> Result<String, String> {
    match &metric.selector {
        None => Ok(String::new()),
        Some(selector) => kube::core::Selector::try_from(selector.clone())
            .map(|s| s.to_string())
            .map_err(|e| format!("invalid metric selector: {e}")),
    }
}

/// `GET path` with the query parameters whose values are not empty.
async fn get(client: &Client, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in params.iter().filter(|(_, v)| !v.is_empty()) {
            query.append_pair(key, value);
        }
        query.finish()
    };
    let url = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let request = http::Request::get(url)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client.request(request).await.map_err(|e| e.to_string())
}

/// The `items` of a list answer.
fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The goal of a target that must be a value per pod or in total, in milli-units.
fn goal(target: &MetricTarget, name: &str) -> Result<Goal, String> {
    match (&target.value, &target.average_value) {
        (Some(value), _) if target.type_ == "Value" => Ok(Goal::Total(parse_milli(&value.0)?)),
        (_, Some(value)) if target.type_ == "AverageValue" => {
            Ok(Goal::PerPod(parse_milli(&value.0)?))
        }
        _ => Err(format!(
            "invalid target for the {name} metric: a {} target without its value",
            target.type_
        )),
    }
}

enum Goal {
    Total(i64),
    PerPod(i64),
}

/// What one metric asks for.
pub async fn propose(
    client: &Client,
    metric: &MetricSpec,
    state: &TargetState<'_>,
) -> Result<Proposal, Failure> {
    let (reading, reason) = match metric.type_.as_str() {
        "Resource" => (
            resource(client, metric, state).await,
            "FailedGetResourceMetric",
        ),
        "Pods" => (pods(client, metric, state).await, "FailedGetPodsMetric"),
        "Object" => (object(client, metric, state).await, "FailedGetObjectMetric"),
        "External" => (
            external(client, metric, state).await,
            "FailedGetExternalMetric",
        ),
        other => {
            return Err(Failure {
                reason: "InvalidMetricSourceType",
                message: format!("unknown metric source type {other:?}"),
            })
        }
    };
    reading.map_err(|message| Failure { reason, message })
}

/// Each pod's usage of `resource` (summed over its containers) in a `metrics.k8s.io`
/// PodMetrics list.
fn resource_samples(metrics: &[Value], resource: &str) -> Result<BTreeMap<String, Sample>, String> {
    let mut samples = BTreeMap::new();
    for metric in metrics {
        let name = metric["metadata"]["name"].as_str().unwrap_or_default();
        let mut total = 0;
        for container in metric["containers"].as_array().into_iter().flatten() {
            let usage = &container["usage"][resource];
            if !usage.is_null() {
                total += milli(usage)?;
            }
        }
        samples.insert(name.to_string(), sample(metric, total, "window"));
    }
    Ok(samples)
}

/// A sample of `milli` at the reading's `timestamp`, over its window (`window` as a
/// duration, or `windowSeconds`).
fn sample(reading: &Value, milli: i64, window_field: &str) -> Sample {
    let timestamp = reading["timestamp"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(Timestamp::now);
    let window = match &reading[window_field] {
        Value::String(text) => skiff_quantity::parse_duration(text).unwrap_or_default(),
        Value::Number(seconds) => {
            std::time::Duration::from_secs(seconds.as_u64().unwrap_or_default())
        }
        _ => std::time::Duration::default(),
    };
    Sample {
        milli,
        timestamp,
        window,
    }
}

/// A milli-unit amount in the resource's customary unit.
fn resource_quantity(resource: &str, milli: i64) -> Quantity {
    if resource == "cpu" {
        Quantity(format!("{milli}m"))
    } else {
        Quantity((milli / 1000).to_string())
    }
}

async fn resource(
    client: &Client,
    metric: &MetricSpec,
    state: &TargetState<'_>,
) -> Result<Proposal, String> {
    let source = metric
        .resource
        .as_ref()
        .ok_or("a Resource metric without its resource")?;
    let resource = source.name.as_str();
    let (target, description) = if let Some(goal) = source.target.average_utilization {
        (
            Target::Utilization(goal),
            format!("{resource} resource utilization (percentage of request)"),
        )
    } else if let Some(goal) = &source.target.average_value {
        let goal = skiff_quantity::parse_milli(&goal.0).map_err(|e| e.to_string())?;
        (Target::AverageValue(goal), format!("{resource} resource"))
    } else {
        return Err(format!(
            "invalid target for the {resource} metric: neither averageUtilization nor averageValue"
        ));
    };
    let path = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods",
        state.namespace
    );
    let metrics = get(client, &path, &[("labelSelector", state.selector)])
        .await
        .map_err(|e| format!("unable to get metrics for resource {resource}: {e}"))?;
    let reading = replicas::resource_replicas(
        state.pods,
        resource_samples(&items(&metrics), resource)?,
        resource,
        target,
        state.current,
        state.tolerances,
        Timestamp::now(),
    )?;
    Ok(Proposal {
        replicas: reading.replicas,
        status: MetricStatus {
            type_: "Resource".into(),
            resource: Some(ResourceMetricStatus {
                name: resource.to_string(),
                current: MetricValueStatus {
                    average_utilization: reading.utilization,
                    average_value: Some(resource_quantity(resource, reading.average_milli)),
                    value: None,
                },
            }),
            ..Default::default()
        },
        description,
    })
}

async fn pods(
    client: &Client,
    metric: &MetricSpec,
    state: &TargetState<'_>,
) -> Result<Proposal, String> {
    let source = metric
        .pods
        .as_ref()
        .ok_or("a Pods metric without its pods")?;
    let name = &source.metric.name;
    let Ok(Goal::PerPod(goal)) = goal(&source.target, name) else {
        return Err(format!(
            "invalid target for the {name} metric: a Pods metric takes an AverageValue target"
        ));
    };
    let path = format!(
        "{CUSTOM_METRICS}/namespaces/{}/pods/*/{name}",
        state.namespace
    );
    let metric_selector = selector_string(&source.metric)?;
    let params = [
        ("labelSelector", state.selector),
        ("metricLabelSelector", metric_selector.as_str()),
    ];
    let list = get(client, &path, &params)
        .await
        .map_err(|e| format!("unable to get metric {name}: {e}"))?;
    let mut samples = BTreeMap::new();
    for item in items(&list) {
        let pod = item["describedObject"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        samples.insert(pod, sample(&item, milli(&item["value"])?, "windowSeconds"));
    }
    let reading = replicas::resource_replicas(
        state.pods,
        samples,
        "",
        Target::AverageValue(goal),
        state.current,
        state.tolerances,
        Timestamp::now(),
    )?;
    Ok(Proposal {
        replicas: reading.replicas,
        status: MetricStatus {
            type_: "Pods".into(),
            pods: Some(PodsMetricStatus {
                metric: source.metric.clone(),
                current: MetricValueStatus {
                    average_value: Some(milli_quantity(reading.average_milli)),
                    ..Default::default()
                },
            }),
            ..Default::default()
        },
        description: format!("pods metric {name}"),
    })
}

/// The custom metrics API's name for a kind's resource: `deployments.apps`, `services`.
async fn group_resource(client: &Client, api_version: &str, kind: &str) -> Result<String, String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("unable to find the resource of {api_version} {kind}: {e}"))?;
    Ok(if group.is_empty() {
        resource.plural
    } else {
        format!("{}.{group}", resource.plural)
    })
}

/// A value for the whole target turned into a proposal, whichever its goal.
fn whole_target_proposal(
    usage: i64,
    goal: Goal,
    state: &TargetState<'_>,
) -> Result<(i32, MetricValueStatus), String> {
    Ok(match goal {
        Goal::Total(target) => (
            replicas::value_replicas(usage, target, state.pods, state.current, state.tolerances)?,
            MetricValueStatus {
                value: Some(milli_quantity(usage)),
                ..Default::default()
            },
        ),
        Goal::PerPod(target) => {
            let (wanted, per_pod) = replicas::average_value_replicas(
                usage,
                target,
                state.status_replicas,
                state.tolerances,
            );
            (
                wanted,
                MetricValueStatus {
                    average_value: Some(milli_quantity(per_pod)),
                    ..Default::default()
                },
            )
        }
    })
}

async fn object(
    client: &Client,
    metric: &MetricSpec,
    state: &TargetState<'_>,
) -> Result<Proposal, String> {
    let source = metric
        .object
        .as_ref()
        .ok_or("an Object metric without its object")?;
    let name = &source.metric.name;
    let described = &source.described_object;
    let goal = goal(&source.target, name)?;
    let resource = group_resource(
        client,
        described.api_version.as_deref().unwrap_or("v1"),
        &described.kind,
    )
    .await?;
    let path = format!(
        "{CUSTOM_METRICS}/namespaces/{}/{resource}/{}/{name}",
        state.namespace, described.name
    );
    let metric_selector = selector_string(&source.metric)?;
    let list = get(client, &path, &[("metricLabelSelector", &metric_selector)])
        .await
        .map_err(|e| format!("unable to get metric {name}: {e}"))?;
    let value = items(&list)
        .first()
        .map(|item| milli(&item["value"]))
        .transpose()?
        .ok_or_else(|| format!("unable to get metric {name}: no metrics returned"))?;
    let (replicas, current) = whole_target_proposal(value, goal, state)?;
    Ok(Proposal {
        replicas,
        status: MetricStatus {
            type_: "Object".into(),
            object: Some(ObjectMetricStatus {
                described_object: described.clone(),
                metric: source.metric.clone(),
                current,
            }),
            ..Default::default()
        },
        description: format!("{} metric {name}", described.kind),
    })
}

async fn external(
    client: &Client,
    metric: &MetricSpec,
    state: &TargetState<'_>,
) -> Result<Proposal, String> {
    let source = metric
        .external
        .as_ref()
        .ok_or("an External metric without its metric")?;
    let name = &source.metric.name;
    let goal = goal(&source.target, name)?;
    let metric_selector = selector_string(&source.metric)?;
    let path = format!("{EXTERNAL_METRICS}/namespaces/{}/{name}", state.namespace);
    let list = get(client, &path, &[("labelSelector", &metric_selector)])
        .await
        .map_err(|e| {
            format!(
                "unable to get external metric {}/{name}/{metric_selector}: {e}",
                state.namespace
            )
        })?;
    let values = items(&list);
    if values.is_empty() {
        return Err(format!(
            "unable to get external metric {}/{name}/{metric_selector}: no metrics returned from external metrics API",
            state.namespace
        ));
    }
    let mut usage = 0;
    for item in &values {
        usage += milli(&item["value"])?;
    }
    let (replicas, current) = whole_target_proposal(usage, goal, state)?;
    Ok(Proposal {
        replicas,
        status: MetricStatus {
            type_: "External".into(),
            external: Some(ExternalMetricStatus {
                metric: source.metric.clone(),
                current,
            }),
            ..Default::default()
        },
        description: format!("external metric {name}({metric_selector})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_as_upstream_prints_milli_quantities() {
        assert_eq!(milli_quantity(2000).0, "2");
        assert_eq!(milli_quantity(1500).0, "1500m");
        assert_eq!(resource_quantity("cpu", 250).0, "250m");
        assert_eq!(resource_quantity("memory", 2_000_000).0, "2000");
    }

    #[test]
    fn readings_become_samples() {
        let pods = serde_json::json!([{"metadata": {"name": "a"}, "timestamp": "2026-12-06T00:00:00Z", "window": "30s",
            "containers": [{"usage": {"cpu": "100m"}}, {"usage": {"cpu": "50m", "memory": "1Mi"}}]}]);
        let samples = resource_samples(pods.as_array().unwrap(), "cpu").unwrap();
        assert_eq!(samples["a"].milli, 150);
        assert_eq!(samples["a"].window, std::time::Duration::from_secs(30));
        let custom = serde_json::json!({"value": "3", "timestamp": "2026-12-06T00:00:00Z", "windowSeconds": 60});
        let reading = sample(&custom, milli(&custom["value"]).unwrap(), "windowSeconds");
        assert_eq!(reading.milli, 3000);
        assert_eq!(reading.window, std::time::Duration::from_secs(60));
    }
}
