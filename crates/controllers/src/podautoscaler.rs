//! The horizontal pod autoscaler controller (upstream's `horizontal-pod-autoscaler`):
//! every [`SYNC_PERIOD`] each HorizontalPodAutoscaler reads its target's `scale`
//! subresource and its pods' usage from `metrics.k8s.io`, and sets the target's replicas
//! so that the average usage meets the goal.
//!
//! What it does as upstream: resource metrics (`cpu`, `memory`) against a utilization of
//! the pods' requests or an average value; the 10 % tolerance; the default behaviour
//! (scale up by at most 100 % or 4 pods per period, scale down only to the highest
//! recommendation of the last 300 s, or `behavior`'s stabilization windows); `min`/
//! `maxReplicas`; a target at 0 replicas left alone; status with current metrics and
//! the `AbleToScale`, `ScalingActive` and `ScalingLimited` conditions; the
//! `SuccessfulRescale` event. Not yet: pods, object and external metrics, scaling
//! policies other than the default, the special counting of unready and missing pods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, MetricSpec, MetricStatus,
    MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use serde_json::{json, Value};

use crate::controller::{split_key, Reconcile};
use crate::error::Result;
use crate::events::Events;
use crate::informer::InformerFactory;
use crate::queue::WorkQueue;

/// How often each autoscaler is evaluated (upstream's `--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// Ratios this close to 1 change nothing.
const TOLERANCE: f64 = 0.1;
const DEFAULT_SCALE_DOWN_WINDOW: i64 = 300;
const DEFAULT_CPU_UTILIZATION: i32 = 80;

pub struct HorizontalController {
    client: Client,
    autoscalers: Store<HorizontalPodAutoscaler>,
    queue: Arc<WorkQueue>,
    events: Events,
    /// Past recommendations of each autoscaler, for the stabilization windows.
    recommendations: Mutex<HashMap<String, Vec<(Timestamp, i32)>>>,
}

impl HorizontalController {
    pub fn new(factory: &InformerFactory) -> Arc<HorizontalController> {
        let informer = factory.informer::<HorizontalPodAutoscaler>();
        let queue = factory.queue("horizontalpodautoscaler");
        informer.enqueue_into(queue.clone());
        Arc::new(HorizontalController {
            client: factory.client_for("horizontal-pod-autoscaler"),
            autoscalers: informer.store(),
            queue,
            events: Events::new(
                factory.client_for("horizontal-pod-autoscaler"),
                "horizontal-pod-autoscaler",
            ),
            recommendations: Mutex::new(HashMap::new()),
        })
    }
}

/// A target's `scale` subresource: where it is, and what it says.
struct Scale {
    url: String,
    /// The `Scale` as read, written back with new replicas (an update, as upstream's).
    object: Value,
    spec_replicas: i32,
    status_replicas: i32,
    selector: String,
}

fn scale_url(ns: &str, api_version: &str, kind: &str, name: &str) -> Option<String> {
    let plural = match kind {
        "Deployment" => "deployments",
        "ReplicaSet" => "replicasets",
        "StatefulSet" => "statefulsets",
        "ReplicationController" => "replicationcontrollers",
        _ => return None,
    };
    let base = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    Some(format!("{base}/namespaces/{ns}/{plural}/{name}/scale"))
}

/// One metric's reading and the replica count it asks for.
struct Proposal {
    replicas: i32,
    status: MetricStatus,
    description: String,
}

/// Usage and requests of the pods that have metrics, in milli-units.
fn totals(
    resource: &str,
    pods: &[Pod],
    metrics: &[Value],
) -> std::result::Result<(i64, i64, i32), String> {
    let (mut usage, mut requests, mut counted) = (0i64, 0i64, 0i32);
    for pod in pods {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let Some(metric) = metrics.iter().find(|m| m["metadata"]["name"] == name) else {
            continue;
        };
        for container in metric["containers"].as_array().into_iter().flatten() {
            let text = container["usage"][resource].as_str().unwrap_or("0");
            usage += skiff_quantity::parse_milli(text).map_err(|e| e.to_string())?;
        }
        for container in pod.spec.iter().flat_map(|s| &s.containers) {
            let request = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .ok_or_else(|| {
                    format!(
                        "missing request for {resource} in container {} of Pod {name}",
                        container.name
                    )
                })?;
            requests += skiff_quantity::parse_milli(&request.0).map_err(|e| e.to_string())?;
        }
        counted += 1;
    }
    Ok((usage, requests, counted))
}

/// The replica count that brings `ratio` (current over target) to 1 for `counted` pods.
fn replicas_for(ratio: f64, current: i32, counted: i32) -> i32 {
    if (ratio - 1.0).abs() <= TOLERANCE {
        current
    } else {
        (ratio * counted as f64).ceil() as i32
    }
}

impl HorizontalController {
    async fn read_scale(
        &self,
        ns: &str,
        hpa: &HorizontalPodAutoscaler,
    ) -> std::result::Result<Scale, String> {
        let target = &hpa.spec.scale_target_ref;
        let api_version = target.api_version.as_deref().unwrap_or("apps/v1");
        let url = scale_url(ns, api_version, &target.kind, &target.name)
            .ok_or_else(|| format!("the scale of a {} cannot be read", target.kind))?;
        let request = http::Request::get(&url)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let scale: Value = self.client.request(request).await.map_err(|e| {
            format!("the HPA controller was unable to get the target's current scale: {e}")
        })?;
        Ok(Scale {
            url,
            object: scale.clone(),
            spec_replicas: scale["spec"]["replicas"].as_i64().unwrap_or(0) as i32,
            status_replicas: scale["status"]["replicas"].as_i64().unwrap_or(0) as i32,
            selector: scale["status"]["selector"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    async fn pod_metrics(
        &self,
        ns: &str,
        selector: &str,
    ) -> std::result::Result<Vec<Value>, String> {
        let mut url = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods");
        if !selector.is_empty() {
            url.push_str("?labelSelector=");
            url.push_str(&form_urlencoded::byte_serialize(selector.as_bytes()).collect::<String>());
        }
        let request = http::Request::get(&url)
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let list: Value = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("unable to get metrics for resource: {e}"))?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// What one Resource metric asks for.
    fn propose(
        metric: &MetricSpec,
        pods: &[Pod],
        metrics: &[Value],
        current: i32,
    ) -> std::result::Result<Proposal, String> {
        let source = metric
            .resource
            .as_ref()
            .filter(|_| metric.type_ == "Resource")
            .ok_or_else(|| {
                format!(
                    "the {} metric source type is not supported yet",
                    metric.type_
                )
            })?;
        let resource = source.name.as_str();
        let (usage, requests, counted) = totals(resource, pods, metrics)?;
        if counted == 0 {
            return Err(
                "did not receive metrics for targeted pods (pods might be unready)".to_string(),
            );
        }
        let average = usage / counted as i64;
        let target = &source.target;
        let (ratio, current_status, description) = if let Some(goal) = target.average_utilization {
            if requests == 0 {
                return Err(format!("missing request for {resource}"));
            }
            let utilization = (usage * 100 / requests) as i32;
            (
                utilization as f64 / goal as f64,
                MetricValueStatus {
                    average_utilization: Some(utilization),
                    average_value: Some(Quantity(milli_quantity(resource, average))),
                    value: None,
                },
                format!("{resource} resource utilization (percentage of request)"),
            )
        } else if let Some(goal) = &target.average_value {
            let goal = skiff_quantity::parse_milli(&goal.0).map_err(|e| e.to_string())?;
            (
                average as f64 / goal.max(1) as f64,
                MetricValueStatus {
                    average_utilization: None,
                    average_value: Some(Quantity(milli_quantity(resource, average))),
                    value: None,
                },
                format!("{resource} resource"),
            )
        } else {
            return Err(format!("invalid target for the {resource} metric: neither averageUtilization nor averageValue"));
        };
        Ok(Proposal {
            replicas: replicas_for(ratio, current, counted),
            status: MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: resource.to_string(),
                    current: current_status,
                }),
                ..Default::default()
            },
            description,
        })
    }

    /// The recommendation after the stabilization windows and the scale-up limit.
    fn stabilize(
        &self,
        key: &str,
        hpa: &HorizontalPodAutoscaler,
        current: i32,
        recommended: i32,
    ) -> i32 {
        let behavior = hpa.spec.behavior.as_ref();
        let window = |rules: Option<i32>, default: i64| rules.map(i64::from).unwrap_or(default);
        let down = window(
            behavior
                .and_then(|b| b.scale_down.as_ref())
                .and_then(|r| r.stabilization_window_seconds),
            DEFAULT_SCALE_DOWN_WINDOW,
        );
        let up = window(
            behavior
                .and_then(|b| b.scale_up.as_ref())
                .and_then(|r| r.stabilization_window_seconds),
            0,
        );
        let mut all = self
            .recommendations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let history = all.entry(key.to_string()).or_default();
        stabilized(history, Timestamp::now(), (up, down), current, recommended)
    }
}

/// Upstream's stabilization: with this recommendation added to `history`, scale up
/// only to the lowest recommendation of the scale-up window and down only to the highest
/// of the scale-down window (`windows` in seconds, up then down), then limit a scale-up
/// to upstream's default policies (100 % or 4 pods per period).
fn stabilized(
    history: &mut Vec<(Timestamp, i32)>,
    now: Timestamp,
    windows: (i64, i64),
    current: i32,
    recommended: i32,
) -> i32 {
    let (up, down) = windows;
    history.push((now, recommended));
    history.retain(|(at, _)| now.duration_since(*at).as_secs() <= up.max(down));
    let within = |seconds: i64| {
        history
            .iter()
            .filter(move |(at, _)| now.duration_since(*at).as_secs() <= seconds)
            .map(|(_, r)| *r)
    };
    let lowest_recent = within(up).min().unwrap_or(recommended);
    let highest_recent = within(down).max().unwrap_or(recommended);
    let desired = current.max(lowest_recent).min(highest_recent);
    if desired > current {
        desired.min((current * 2).max(current + 4))
    } else {
        desired
    }
}

/// A milli-unit amount as a Quantity in the resource's customary unit.
fn milli_quantity(resource: &str, milli: i64) -> String {
    if resource == "cpu" {
        format!("{milli}m")
    } else {
        (milli / 1000).to_string()
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(Timestamp::now())),
        observed_generation: None,
    }
}

impl Reconcile for HorizontalController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(hpa) = self.autoscalers.get(&ObjectRef::new(name).within(ns)) else {
            self.recommendations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            return Ok(None);
        };
        let spec = hpa.spec.clone();
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        let mut conditions = Vec::new();
        let mut status = json!({});
        let scale = match self.read_scale(ns, &hpa).await {
            Ok(scale) => scale,
            Err(message) => {
                conditions.push(condition("AbleToScale", false, "FailedGetScale", message));
                self.write_status(ns, name, status, conditions).await?;
                return Ok(Some(SYNC_PERIOD));
            }
        };
        status["currentReplicas"] = json!(scale.status_replicas);
        conditions.push(condition(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        ));
        if scale.spec_replicas == 0 {
            status["desiredReplicas"] = json!(0);
            conditions.push(condition(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            ));
            self.write_status(ns, name, status, conditions).await?;
            return Ok(Some(SYNC_PERIOD));
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let listed = pods
            .list(&ListParams::default().labels(&scale.selector))
            .await?
            .items
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            })
            .collect::<Vec<_>>();
        let metric_specs = spec.metrics.clone().unwrap_or_else(|| {
            vec![
                serde_json::from_value(json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}))
                .unwrap_or_default(),
            ]
        });
        let outcome = match self.pod_metrics(ns, &scale.selector).await {
            Ok(metrics) => metric_specs
                .iter()
                .map(|m| Self::propose(m, &listed, &metrics, scale.spec_replicas))
                .collect::<std::result::Result<Vec<_>, _>>(),
            Err(message) => Err(message),
        };
        let proposals = match outcome {
            Ok(proposals) => proposals,
            Err(message) => {
                conditions.push(condition(
                    "ScalingActive",
                    false,
                    "FailedGetResourceMetric",
                    message.clone(),
                ));
                self.events
                    .warning(hpa.as_ref(), "FailedGetResourceMetric", message)
                    .await;
                status["desiredReplicas"] = json!(scale.spec_replicas);
                self.write_status(ns, name, status, conditions).await?;
                return Ok(Some(SYNC_PERIOD));
            }
        };
        let Some(strongest) = proposals.iter().max_by_key(|p| p.replicas) else {
            return Ok(Some(SYNC_PERIOD));
        };
        let stabilized = self.stabilize(key, &hpa, scale.spec_replicas, strongest.replicas);
        let desired = stabilized.clamp(min, max.max(min));
        conditions.push(condition(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {}",
                strongest.description
            ),
        ));
        conditions.push(if desired != stabilized {
            let reason = if desired > stabilized {
                "TooFewReplicas"
            } else {
                "TooManyReplicas"
            };
            condition(
                "ScalingLimited",
                true,
                reason,
                format!(
                    "the desired replica count is {} than the {} replica count",
                    if desired > stabilized { "less" } else { "more" },
                    if desired > stabilized {
                        "minimum"
                    } else {
                        "maximum"
                    }
                ),
            )
        } else {
            condition(
                "ScalingLimited",
                false,
                "DesiredWithinRange",
                "the desired count is within the acceptable range".into(),
            )
        });
        status["desiredReplicas"] = json!(desired);
        status["currentMetrics"] = json!(proposals.iter().map(|p| &p.status).collect::<Vec<_>>());
        if desired != scale.spec_replicas {
            let mut updated = scale.object.clone();
            updated["spec"]["replicas"] = json!(desired);
            let request = http::Request::put(&scale.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(updated.to_string().into_bytes())
                .map_err(|e| crate::error::Error::Other(e.to_string()))?;
            self.client.request::<Value>(request).await?;
            let direction = if desired > scale.spec_replicas {
                "above"
            } else {
                "below"
            };
            self.events
                .normal(
                    hpa.as_ref(),
                    "SuccessfulRescale",
                    format!(
                        "New size: {desired}; reason: {} {direction} target",
                        strongest.description
                    ),
                )
                .await;
            status["lastScaleTime"] = json!(Timestamp::now().to_string());
            tracing::info!(autoscaler = %key, from = scale.spec_replicas, to = desired, "rescaled");
        } else if let Some(last) = hpa.status.as_ref().and_then(|s| s.last_scale_time.as_ref()) {
            status["lastScaleTime"] = json!(last.0.to_string());
        }
        self.write_status(ns, name, status, conditions).await?;
        Ok(Some(SYNC_PERIOD))
    }
}

impl HorizontalController {
    async fn write_status(
        &self,
        ns: &str,
        name: &str,
        mut status: Value,
        conditions: Vec<HorizontalPodAutoscalerCondition>,
    ) -> Result<()> {
        // A condition keeps its transition time while its status stays.
        let previous = self
            .autoscalers
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|hpa| hpa.status.as_ref().and_then(|s| s.conditions.clone()))
            .unwrap_or_default();
        let conditions: Vec<_> = conditions
            .into_iter()
            .map(|mut c| {
                if let Some(old) = previous
                    .iter()
                    .find(|o| o.type_ == c.type_ && o.status == c.status)
                {
                    c.last_transition_time = old.last_transition_time.clone();
                }
                c
            })
            .collect();
        status["conditions"] = json!(conditions);
        // Written with an update of `status`, as upstream's role allows (no patch): the
        // cached object's status with these fields replaced.
        let Some(cached) = self.autoscalers.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(());
        };
        let mut object = serde_json::to_value(cached.as_ref())
            .map_err(|e| crate::error::Error::Other(format!("encoding {ns}/{name}: {e}")))?;
        let merged = object
            .get_mut("status")
            .and_then(Value::as_object_mut)
            .map(|current| {
                if let Some(fields) = status.as_object() {
                    for (field, value) in fields {
                        current.insert(field.clone(), value.clone());
                    }
                }
            });
        if merged.is_none() {
            object["status"] = status;
        }
        let object: HorizontalPodAutoscaler = serde_json::from_value(object)
            .map_err(|e| crate::error::Error::Other(format!("decoding {ns}/{name}: {e}")))?;
        let api: Api<HorizontalPodAutoscaler> = Api::namespaced(self.client.clone(), ns);
        api.replace_status(name, &PostParams::default(), &object)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn replica_counts_as_upstream_computes_them() {
        // 200 % of a 50 % goal on 2 pods: 8 pods.
        assert_eq!(replicas_for(4.0, 2, 2), 8);
        // Within the tolerance: unchanged.
        assert_eq!(replicas_for(1.05, 3, 3), 3);
        assert_eq!(replicas_for(0.95, 3, 3), 3);
        // Half the goal on 4 pods: 2.
        assert_eq!(replicas_for(0.5, 4, 4), 2);
        assert_eq!(replicas_for(0.3, 3, 3), 1);
    }

    #[test]
    fn stabilization_windows_hold_back_scale_down_not_scale_up() {
        let start: Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
        let at = |seconds: i64| start + jiff::SignedDuration::from_secs(seconds);
        let mut history = Vec::new();
        // 5 pods wanted, then only 1: the scale-down waits for the 300 s window.
        assert_eq!(stabilized(&mut history, at(0), (0, 300), 5, 5), 5);
        assert_eq!(stabilized(&mut history, at(15), (0, 300), 5, 1), 5);
        assert_eq!(stabilized(&mut history, at(200), (0, 300), 5, 2), 5);
        // Once the 5 is older than the window, the highest left (2) wins.
        assert_eq!(stabilized(&mut history, at(301), (0, 300), 5, 1), 2);
        // Scaling up is immediate, but at most doubles (or adds 4).
        let mut history = Vec::new();
        assert_eq!(stabilized(&mut history, at(0), (0, 300), 2, 20), 6);
        assert_eq!(stabilized(&mut history, at(0), (0, 300), 10, 30), 20);
        // A scale-up window waits for the lowest recent recommendation.
        let mut history = Vec::new();
        assert_eq!(stabilized(&mut history, at(0), (60, 300), 2, 2), 2);
        assert_eq!(stabilized(&mut history, at(10), (60, 300), 2, 4), 2);
        assert_eq!(stabilized(&mut history, at(61), (60, 300), 2, 4), 4);
    }

    #[test]
    fn scale_urls() {
        assert_eq!(
            scale_url("ns", "apps/v1", "Deployment", "web").as_deref(),
            Some("/apis/apps/v1/namespaces/ns/deployments/web/scale")
        );
        assert_eq!(
            scale_url("ns", "v1", "ReplicationController", "rc").as_deref(),
            Some("/api/v1/namespaces/ns/replicationcontrollers/rc/scale")
        );
        assert!(scale_url("ns", "v1", "Pod", "p").is_none());
    }
}
