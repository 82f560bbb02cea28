//! Watch streams: events from the watch cache, filtered by the request's selectors and
//! framed as upstream frames them (JSON lines, or length-prefixed protobuf).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::cache::{CacheEvent, CachedObject, EventType, WatchCache};
use crate::convert;
use crate::encoding::json_bytes;
use crate::registry::Registry;
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;

/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

pub struct WatchRequest {
    pub resource: Arc<ResourceInfo>,
    pub prefix: String,
    pub label_selector: LabelSelector,
    pub field_selector: FieldSelector,
    /// Where to start: `None` sends the current state first (as `ADDED` events).
    pub resource_version: Option<i64>,
    pub send_initial_events: bool,
    pub allow_bookmarks: bool,
    pub timeout: Duration,
    pub protobuf: bool,
    /// How each object is shown.
    pub view: WatchView,
    /// For a watch with no resource version: the store revision the initial state must
    /// include (so a client sees its own earlier writes).
    pub fresh_as_of: Option<i64>,
}

/// What a watch event carries, as the client's `Accept` asked.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchView {
    /// The object itself.
    Object,
    /// A one-row `Table` of this `meta.k8s.io` version (`kubectl get -w`), with
    /// `includeObject` as given.
    Table(&'static str, String),
    /// `PartialObjectMetadata` (metadata informers, e.g. the garbage collector's).
    Metadata,
}

struct Watcher {
    request: WatchRequest,
    /// For conversions (a custom resource's may call its CRD's webhook).
    registry: Arc<Registry>,
    tx: mpsc::Sender<Bytes>,
    /// The newest revision this watcher has accounted for (sent or filtered out).
    rv: i64,
    /// Whether a `Table` with column definitions went out (only the first carries them).
    sent_columns: bool,
}

/// Starts a watch; its frames arrive on the returned channel until it ends.
pub fn start(registry: Arc<Registry>, request: WatchRequest) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let cache = registry.cache.clone();
        let mut watcher = Watcher {
            request,
            registry,
            tx,
            rv: 0,
            sent_columns: false,
        };
        watcher.run(&cache).await;
    });
    rx
}

impl Watcher {
    fn matches(&self, object: &CachedObject) -> bool {
        object.key.starts_with(&self.request.prefix)
            && self.request.label_selector.matches(&object.labels)
            // An object that cannot be converted to be judged is not sent; sending it
            // would fail on the same conversion.
            && self
                .registry
                .fields_match(&self.request.resource, &self.request.field_selector, object)
                .unwrap_or(false)
    }

    async fn run(&mut self, cache: &WatchCache) {
        let initial = self.request.resource_version.is_none() || self.request.send_initial_events;
        let mut live = if initial {
            // The later of the asked version and the store's when freshness is owed.
            let wanted = self.request.resource_version.max(self.request.fresh_as_of);
            if let Some(rv) = wanted.filter(|rv| *rv > 0) {
                if let Err(e) = cache.wait_for(rv).await {
                    self.send_error(&e).await;
                    return;
                }
            }
            let (snapshot, subscription) = cache.subscribe_with_state(&self.request.prefix);
            for object in &snapshot.objects {
                if self.matches(object) && !self.send(EventType::Added.as_str(), object).await {
                    return;
                }
            }
            self.rv = snapshot.rv;
            if self.request.send_initial_events
                && self.request.allow_bookmarks
                && !self.bookmark(true).await
            {
                return;
            }
            subscription.live
        } else {
            let from = self.request.resource_version.unwrap_or(0);
            if from > cache.revision() {
                if let Err(e) = cache.wait_for(from).await {
                    self.send_error(&e).await;
                    return;
                }
            }
            let Some(subscription) = cache.subscribe(from) else {
                let error = ApiError::gone(format!(
                    "too old resource version: {from} ({})",
                    cache.revision()
                ));
                self.send_error(&error).await;
                return;
            };
            self.rv = from;
            for event in &subscription.backlog {
                if !self.deliver(event).await {
                    return;
                }
            }
            subscription.live
        };

        let deadline = tokio::time::sleep(self.request.timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval(BOOKMARK_INTERVAL);
        bookmarks.tick().await;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(event) => {
                        if !self.deliver(&event).await {
                            return;
                        }
                    }
                    // A watcher too slow for the feed is closed; its client re-watches
                    // from the last revision it saw, as after any closed watch.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmarks.tick(), if self.request.allow_bookmarks => {
                    if !self.bookmark(false).await {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Sends what `event` means to this watcher: selectors turn an update into an
    /// `ADDED` (now matches) or a `DELETED` (no longer matches), as upstream's cacher does.
    async fn deliver(&mut self, event: &CacheEvent) -> bool {
        if event.rv <= self.rv {
            return true;
        }
        self.rv = event.rv;
        let now = self.matches(&event.object);
        let before = event.prev.as_ref().is_some_and(|p| self.matches(p));
        match event.kind {
            EventType::Added if now => self.send("ADDED", &event.object).await,
            EventType::Deleted if now => self.send("DELETED", &event.object).await,
            EventType::Modified => match (before, now) {
                (true, true) => self.send("MODIFIED", &event.object).await,
                (false, true) => self.send("ADDED", &event.object).await,
                (true, false) => {
                    let Some(prev) = &event.prev else { return true };
                    let Ok(mut value) = prev.value() else {
                        return true;
                    };
                    let gone = CachedObject::from_value(&prev.key, event.rv, &mut value);
                    self.send("DELETED", &gone).await
                }
                (false, false) => true,
            },
            _ => true,
        }
    }

    async fn send(&mut self, event_type: &str, object: &CachedObject) -> bool {
        match &self.request.view {
            WatchView::Object => {}
            WatchView::Table(api_version, include) => {
                let Ok(value) = object.value() else {
                    return true;
                };
                let value =
                    match convert::from_storage(&self.registry, &self.request.resource, value) {
                        Ok(value) => value,
                        Err(e) => {
                            self.send_error(&e).await;
                            return false;
                        }
                    };
                let mut row = crate::table::table(
                    api_version,
                    &self.request.resource,
                    std::slice::from_ref(&value),
                    Some(object.rv.to_string()),
                    None,
                    None,
                    include,
                );
                if self.sent_columns {
                    row["columnDefinitions"] = Value::Null;
                }
                self.sent_columns = true;
                let frame = self.frame(event_type, &row);
                return self.tx.send(frame).await.is_ok();
            }
            WatchView::Metadata => {
                let Ok(value) = object.value() else {
                    return true;
                };
                let frame = self.frame(event_type, &crate::table::partial_metadata(&value));
                return self.tx.send(frame).await.is_ok();
            }
        }
        let frame = if self.request.protobuf || convert::needs_conversion(&self.request.resource) {
            let Ok(value) = object.value() else {
                return true;
            };
            match convert::from_storage(&self.registry, &self.request.resource, value) {
                Ok(value) => self.frame(event_type, &value),
                Err(e) => {
                    // As upstream: a watch ends with the error a conversion met.
                    self.send_error(&e).await;
                    return false;
                }
            }
        } else {
            let json = object.json();
            let mut frame = Vec::with_capacity(json.len() + 32);
            frame.extend_from_slice(b"{\"type\":\"");
            frame.extend_from_slice(event_type.as_bytes());
            frame.extend_from_slice(b"\",\"object\":");
            frame.extend_from_slice(&json);
            frame.extend_from_slice(b"}\n");
            Bytes::from(frame)
        };
        self.tx.send(frame).await.is_ok()
    }

    fn frame(&self, event_type: &str, object: &Value) -> Bytes {
        if self.request.protobuf {
            if let Ok(frame) = skiff_protobuf::encode_watch_event(event_type, object) {
                return Bytes::from(frame);
            }
        }
        Bytes::from(json_bytes(&json!({"type": event_type, "object": object})))
    }

    async fn bookmark(&self, initial_events_end: bool) -> bool {
        let resource = &self.request.resource;
        let mut metadata =
            json!({"resourceVersion": self.rv.to_string(), "creationTimestamp": null});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": metadata});
        self.tx.send(self.frame("BOOKMARK", &object)).await.is_ok()
    }

    async fn send_error(&self, error: &ApiError) {
        let _ = self.tx.send(self.frame("ERROR", &error.to_status())).await;
    }
}
