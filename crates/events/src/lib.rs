//! The events the scheduler and the controllers write, with upstream's reasons and
//! messages, so that `kubectl describe` and `kubectl events` tell what they did and why.
//!
//! As client-go's recorder: a repeat of the same event (same object, reason and message)
//! within ten minutes bumps the first one's `count` and `lastTimestamp` instead of adding
//! another. (kube-rs's recorder folds events by reason alone, which would hide "Scaled
//! down" behind an earlier "Scaled up".)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

/// How long repeats fold into one event (client-go's aggregation window).
const FOLD_WINDOW: Duration = Duration::from_secs(600);

/// What makes two events the same: the object's UID (and field path), the reason, the
/// message.
type EventKey = (String, String, String);

/// One event already written: its name, count, and when it was last written.
struct Written {
    name: String,
    count: i32,
    at: Instant,
}

/// One component's voice (upstream's names: `default-scheduler`,
/// `replicaset-controller`, …).
#[derive(Clone)]
pub struct Events {
    client: Client,
    component: String,
    instance: String,
    /// The node a node agent's events come from (`source.host`).
    host: Option<String>,
    written: Arc<Mutex<HashMap<EventKey, Written>>>,
}

impl Events {
    pub fn new(client: Client, component: &str) -> Events {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Events {
            client,
            component: component.to_string(),
            instance: format!("{component}-{host}"),
            host: None,
            written: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A node agent's voice (the kubelet's): events say which node they come from, and
    /// the node is the reporting instance, as upstream's kubelet reports them.
    pub fn for_node(client: Client, component: &str, node: &str) -> Events {
        Events {
            instance: node.to_string(),
            host: Some(node.to_string()),
            ..Events::new(client, component)
        }
    }

    /// An event about `regarding` as given (a container's events name it in
    /// `fieldPath`, `spec.containers{name}`).
    pub async fn about(
        &self,
        regarding: ObjectReference,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let type_ = if warning { "Warning" } else { "Normal" };
        if let Err(e) = self.write(regarding, type_, reason, note).await {
            tracing::warn!(error = %e, reason, "could not write event");
        }
    }

    pub async fn normal<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        reason: &str,
        note: String,
    ) {
        self.publish(object, "Normal", reason, note).await;
    }

    pub async fn warning<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        reason: &str,
        note: String,
    ) {
        self.publish(object, "Warning", reason, note).await;
    }

    /// Writes the event; a failure to write one is logged, never a reason to fail the
    /// reconcile that acted.
    async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: &str,
        reason: &str,
        message: String,
    ) {
        self.about(object.object_ref(&()), type_ == "Warning", reason, message)
            .await;
    }

    async fn write(
        &self,
        regarding: ObjectReference,
        type_: &str,
        reason: &str,
        message: String,
    ) -> kube::Result<()> {
        let namespace = regarding
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = jiff::Timestamp::now();
        let key = (
            format!(
                "{}/{}",
                regarding.uid.clone().unwrap_or_default(),
                regarding.field_path.clone().unwrap_or_default()
            ),
            reason.to_string(),
            message.clone(),
        );
        let repeat = {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            written.retain(|_, w| w.at.elapsed() < FOLD_WINDOW);
            written.get_mut(&key).map(|w| {
                w.count += 1;
                w.at = Instant::now();
                (w.name.clone(), w.count)
            })
        };
        if let Some((name, count)) = repeat {
            let patch = serde_json::json!({"count": count, "lastTimestamp": Time(now)});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                // Gone (expired, or its namespace went): write a fresh one.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.clone().unwrap_or_default(),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: regarding,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key,
                Written {
                    name,
                    count: 1,
                    at: Instant::now(),
                },
            );
        Ok(())
    }
}
