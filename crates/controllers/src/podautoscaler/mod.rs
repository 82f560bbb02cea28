//! The horizontal pod autoscaler controller (upstream's `horizontal-pod-autoscaler`):
//! every [`SYNC_PERIOD`] each HorizontalPodAutoscaler reads its target's `scale`
//! subresource and its pods' usage from `metrics.k8s.io`, and sets the target's replicas
//! so that the average usage meets the goal.
//!
//! As upstream: resource metrics (`cpu`, `memory`) against a utilization of the pods'
//! requests or an average value, with unready and unmeasured pods counted as upstream's
//! replica calculator counts them ([`replicas`]); the tolerance, per direction when
//! `behavior` sets one; the normalization ([`behavior`]): stabilization windows, scaling
//! policies and `selectPolicy` measured against this controller's own rescales,
//! `min`/`maxReplicas`; a target at 0 replicas left alone; status with current metrics
//! and the `AbleToScale`, `ScalingActive` and `ScalingLimited` conditions; the
//! `SuccessfulRescale` event. Pods and Object metrics come from `custom.metrics.k8s.io`
//! and External ones from `external.metrics.k8s.io`, served by extension API servers
//! through the API server's aggregator ([`sources`]).

mod behavior;
mod replicas;
mod sources;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, MetricSpec,
};
use k8s_openapi::api::core::v1::Pod;
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
use behavior::{Behavior, Bounds, History};
use replicas::Tolerances;
use sources::{Failure, Proposal, TargetState};

/// How often each autoscaler is evaluated (upstream's `--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);

pub struct HorizontalController {
    client: Client,
    autoscalers: Store<HorizontalPodAutoscaler>,
    queue: Arc<WorkQueue>,
    events: Events,
    /// Each autoscaler's recent recommendations and rescales.
    histories: Mutex<HashMap<String, History>>,
}

impl HorizontalController {
    pub fn new(factory: &InformerFactory) -> Arc<HorizontalController> {
        let informer = factory.informer::<HorizontalPodAutoscaler>();
        let queue = factory.queue("horizontalpodautoscaler");
        // As upstream: a change is looked at within one sync period, never sooner, so that
        // each autoscaler is evaluated once a period however often it (or its status)
        // changes; a key already waiting keeps its time.
        let delayed = queue.clone();
        informer.add_handler(move |old, new| {
            if let Some(hpa) = new.or(old) {
                delayed.add_after(crate::controller::key_of(hpa), SYNC_PERIOD);
            }
        });
        Arc::new(HorizontalController {
            client: factory.client_for("horizontal-pod-autoscaler"),
            autoscalers: informer.store(),
            queue,
            events: Events::new(
                factory.client_for("horizontal-pod-autoscaler"),
                "horizontal-pod-autoscaler",
            ),
            histories: Mutex::new(HashMap::new()),
        })
    }

    fn histories(&self) -> std::sync::MutexGuard<'_, HashMap<String, History>> {
        self.histories.lock().unwrap_or_else(|e| e.into_inner())
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

/// The tolerances `behavior` sets, else upstream's 10 % both ways.
fn tolerances(hpa: &HorizontalPodAutoscaler) -> Tolerances {
    let behavior = hpa.spec.behavior.as_ref();
    let of = |rules: Option<&k8s_openapi::api::autoscaling::v2::HPAScalingRules>| {
        rules
            .and_then(|r| r.tolerance.as_ref())
            .and_then(|t| skiff_quantity::parse_milli(&t.0).ok())
            .map_or(replicas::DEFAULT_TOLERANCE, |milli| milli as f64 / 1000.0)
    };
    Tolerances {
        down: of(behavior.and_then(|b| b.scale_down.as_ref())),
        up: of(behavior.and_then(|b| b.scale_up.as_ref())),
    }
}

/// The autoscaler's conditions, each type set once more overriding the last, in the
/// order first set (as upstream's `setCondition`).
#[derive(Default)]
struct Conditions(Vec<HorizontalPodAutoscalerCondition>);

impl Conditions {
    fn set(&mut self, type_: &str, status: bool, reason: &str, message: impl Into<String>) {
        let condition = HorizontalPodAutoscalerCondition {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: Some(Time(Timestamp::now())),
            observed_generation: None,
        };
        match self.0.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => *existing = condition,
            None => self.0.push(condition),
        }
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

    /// Every metric's proposal for the target's pods; a failure when none could be read,
    /// or when one could not and the others would scale down (as upstream, which never
    /// scales down on partial information).
    async fn proposals(
        &self,
        ns: &str,
        hpa: &HorizontalPodAutoscaler,
        scale: &Scale,
    ) -> std::result::Result<Vec<Proposal>, Failure> {
        let failure = |message: String| Failure {
            reason: "FailedComputeMetricsReplicas",
            message,
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let listed = pods
            .list(&ListParams::default().labels(&scale.selector))
            .await
            .map_err(|e| failure(format!("unable to list the target's pods: {e}")))?
            .items;
        // The API server defaults an empty list to 80 % CPU; this covers objects stored
        // before it did.
        let default_metric = || {
            serde_json::from_value::<MetricSpec>(json!({"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}))
            .map_err(|e| failure(e.to_string()))
        };
        let specs = match hpa.spec.metrics.clone().filter(|m| !m.is_empty()) {
            Some(specs) => specs,
            None => vec![default_metric()?],
        };
        let state = TargetState {
            namespace: ns,
            selector: &scale.selector,
            pods: &listed,
            current: scale.spec_replicas,
            status_replicas: scale.status_replicas,
            tolerances: tolerances(hpa),
        };
        let mut proposals = Vec::new();
        let mut failures = Vec::new();
        for spec in &specs {
            match sources::propose(&self.client, spec, &state).await {
                Ok(proposal) => proposals.push(proposal),
                Err(failure) => failures.push(failure),
            }
        }
        let Some(first) = failures.first() else {
            return Ok(proposals);
        };
        let wanted = proposals.iter().map(|p| p.replicas).max();
        match wanted {
            Some(replicas) if replicas >= scale.spec_replicas => Ok(proposals),
            Some(_) => Err(Failure {
                reason: first.reason,
                message: format!(
                    "invalid metrics ({} invalid out of {}), first error is: {}",
                    failures.len(),
                    specs.len(),
                    first.message
                ),
            }),
            None => Err(first.clone()),
        }
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
            self.histories().remove(key);
            return Ok(None);
        };
        let min = hpa.spec.min_replicas.unwrap_or(1);
        let max = hpa.spec.max_replicas;
        let mut conditions = Conditions::default();
        let mut status = json!({});
        let scale = match self.read_scale(ns, &hpa).await {
            Ok(scale) => scale,
            Err(message) => {
                conditions.set("AbleToScale", false, "FailedGetScale", message);
                self.write_status(ns, name, status, conditions).await?;
                return Ok(Some(SYNC_PERIOD));
            }
        };
        let current = scale.spec_replicas;
        status["currentReplicas"] = json!(scale.status_replicas);
        conditions.set(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        );
        let behavior = hpa.spec.behavior.as_ref().map(Behavior::from_spec);
        let now = Timestamp::now();
        let (desired, reason) = if current == 0 && min != 0 {
            status["desiredReplicas"] = json!(0);
            conditions.set(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            );
            self.write_status(ns, name, status, conditions).await?;
            return Ok(Some(SYNC_PERIOD));
        } else if current > max {
            (
                max,
                "Current number of replicas above Spec.MaxReplicas".to_string(),
            )
        } else if current < min {
            (
                min,
                "Current number of replicas below Spec.MinReplicas".to_string(),
            )
        } else {
            let proposals = match self.proposals(ns, &hpa, &scale).await {
                Ok(proposals) => proposals,
                Err(Failure { reason, message }) => {
                    conditions.set("ScalingActive", false, reason, &message);
                    self.events.warning(hpa.as_ref(), reason, message).await;
                    status["desiredReplicas"] = json!(current);
                    self.write_status(ns, name, status, conditions).await?;
                    return Ok(Some(SYNC_PERIOD));
                }
            };
            status["currentMetrics"] =
                json!(proposals.iter().map(|p| &p.status).collect::<Vec<_>>());
            let Some(strongest) = proposals.iter().max_by_key(|p| p.replicas) else {
                return Ok(Some(SYNC_PERIOD));
            };
            conditions.set(
                "ScalingActive",
                true,
                "ValidMetricFound",
                format!(
                    "the HPA was able to successfully calculate a replica count from {}",
                    strongest.description
                ),
            );
            let reason = if strongest.replicas > current {
                format!("{} above target", strongest.description)
            } else {
                "All metrics below target".to_string()
            };
            let normalized = behavior::normalize(
                self.histories().entry(key.to_string()).or_default(),
                behavior.as_ref(),
                now,
                Bounds { current, min, max },
                strongest.replicas,
            );
            for (type_, verdict) in [
                ("AbleToScale", &normalized.able_to_scale),
                ("ScalingLimited", &normalized.scaling_limited),
            ] {
                conditions.set(type_, verdict.status, verdict.reason, verdict.message);
            }
            (normalized.replicas, reason)
        };
        status["desiredReplicas"] = json!(desired);
        if desired != current {
            if let Err(error) = self.write_scale(&scale, desired).await {
                let message =
                    format!("the HPA controller was unable to update the target scale: {error}");
                conditions.set("AbleToScale", false, "FailedUpdateScale", message);
                self.events
                    .warning(
                        hpa.as_ref(),
                        "FailedRescale",
                        format!("New size: {desired}; reason: {reason}; error: {error}"),
                    )
                    .await;
                self.write_status(ns, name, status, conditions).await?;
                return Err(error);
            }
            conditions.set(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            self.events
                .normal(
                    hpa.as_ref(),
                    "SuccessfulRescale",
                    format!("New size: {desired}; reason: {reason}"),
                )
                .await;
            self.histories()
                .entry(key.to_string())
                .or_default()
                .rescaled(behavior.as_ref(), now, current, desired);
            status["lastScaleTime"] = json!(now.to_string());
            tracing::info!(autoscaler = %key, from = current, to = desired, %reason, "rescaled");
        } else if let Some(last) = hpa.status.as_ref().and_then(|s| s.last_scale_time.as_ref()) {
            status["lastScaleTime"] = json!(last.0.to_string());
        }
        self.write_status(ns, name, status, conditions).await?;
        Ok(Some(SYNC_PERIOD))
    }
}

impl HorizontalController {
    /// Sets the target's replicas with an update of the `Scale` read, as upstream does.
    async fn write_scale(&self, scale: &Scale, replicas: i32) -> Result<()> {
        let mut updated = scale.object.clone();
        updated["spec"]["replicas"] = json!(replicas);
        let request = http::Request::put(&scale.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(updated.to_string().into_bytes())
            .map_err(|e| crate::error::Error::Other(e.to_string()))?;
        self.client.request::<Value>(request).await?;
        Ok(())
    }

    async fn write_status(
        &self,
        ns: &str,
        name: &str,
        mut status: Value,
        conditions: Conditions,
    ) -> Result<()> {
        // A condition keeps its transition time while its status stays.
        let previous = self
            .autoscalers
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|hpa| hpa.status.as_ref().and_then(|s| s.conditions.clone()))
            .unwrap_or_default();
        let conditions: Vec<_> = conditions
            .0
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
    use super::*;

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
