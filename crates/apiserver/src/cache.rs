//! The watch cache: every object of every resource, in memory, kept in step with the store
//! by one store watch.
//!
//! Lists and watches are served from here, as upstream's cacher serves them, so that a
//! thousand watchers cost one store watch. Objects are held as the JSON bytes clients
//! receive (with `resourceVersion` set), plus the labels and selectable fields that
//! selectors test, so a list is a scan and a concatenation, not a re-encoding.
//!
//! Invariants:
//! - `rv` is the revision of the newest event applied; every object's `rv` is at most it.
//! - `history` holds the events after `oldest_rv`, in revision order, so a watch from any
//!   revision at or after `oldest_rv` replays without gaps; older ones get `410 Gone`.
//! - A watcher subscribes to live events under the same lock that reads the history, so
//!   it sees every event exactly once.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use skiff_store::{Event, KeyValue, RangeRequest, Store, StoreError};
use tokio::sync::{broadcast, watch};

use crate::object;
use crate::selectors::LabelSet;
use crate::status::{ApiError, ApiResult};
use crate::strategy;

/// How many events the cache keeps for watches that resume from an older revision.
const HISTORY_LIMIT: usize = 20_000;
/// Live events buffered per watcher before a slow watcher is cut off.
const BROADCAST_CAPACITY: usize = 16_384;

/// One object as the cache holds it.
///
/// The cache holds every object of the cluster, so the parts beside the JSON are packed:
/// a pod's labels and selectable fields in one allocation each, its type fields shared
/// with every object of its kind (`tests/cache_footprint.rs` keeps the overhead in check).
#[derive(Debug)]
pub struct CachedObject {
    pub key: Arc<str>,
    pub rv: i64,
    /// `"kind":"…","apiVersion":"…"`, the type fields that lead the full object.
    type_fields: Arc<str>,
    /// The object's JSON without its type fields (as list items are written),
    /// `resourceVersion` included.
    pub body: Bytes,
    pub labels: Labels,
    /// The field selectors' names for this object's resource, and their values in order.
    field_names: &'static [&'static str],
    field_values: PackedStrs,
}

impl CachedObject {
    pub fn from_kv(kv: &KeyValue) -> Result<Self, serde_json::Error> {
        let mut value: Value = serde_json::from_slice(&kv.value)?;
        Ok(Self::from_value(&kv.key, kv.mod_revision, &mut value))
    }

    /// Builds the cached form of `value`, setting its `resourceVersion` to `rv`.
    pub fn from_value(key: &str, rv: i64, value: &mut Value) -> Self {
        object::set_resource_version(value, rv);
        let field_names = strategy::selectable_fields_for_key(key);
        let field_values = PackedStrs::new(
            field_names
                .iter()
                .map(|f| strategy::field_value(value, f).unwrap_or_default()),
        );
        let labels = Labels::new(&object::labels(value));
        let mut type_fields = String::new();
        if let Some(map) = value.as_object_mut() {
            for field in ["kind", "apiVersion"] {
                if let Some(v) = map.shift_remove(field) {
                    if !type_fields.is_empty() {
                        type_fields.push(',');
                    }
                    type_fields.push_str(&format!("{}:{v}", Value::String(field.into())));
                }
            }
        }
        // A boxed slice, not the serializer's Vec: its spare capacity (up to half of it)
        // would stay allocated for as long as the object is cached.
        let body = Bytes::from(
            serde_json::to_vec(value)
                .unwrap_or_default()
                .into_boxed_slice(),
        );
        CachedObject {
            key: key.into(),
            rv,
            type_fields: intern(type_fields),
            body,
            labels,
            field_names,
            field_values,
        }
    }

    /// The whole object's JSON, type fields first.
    pub fn json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.type_fields.len() + self.body.len() + 2);
        out.push(b'{');
        out.extend_from_slice(self.type_fields.as_bytes());
        let rest = self.body.get(1..).unwrap_or_default();
        if !self.type_fields.is_empty() && rest != b"}" {
            out.push(b',');
        }
        out.extend_from_slice(rest);
        out
    }

    pub fn field(&self, name: &str) -> Option<String> {
        match self.field_names.iter().position(|f| *f == name) {
            Some(index) => self.field_values.get(index).map(str::to_string),
            // A custom resource's `selectableFields` are not packed (the cache knows
            // fields by storage key, not by definition): read from the JSON.
            None => strategy::field_value(&self.value().ok()?, name),
        }
    }

    pub fn value(&self) -> ApiResult<Value> {
        serde_json::from_slice(&self.json()).map_err(ApiError::internal)
    }
}

/// One shared copy of each distinct type-fields string (there is one per kind).
fn intern(text: String) -> Arc<str> {
    static INTERNED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<Arc<str>>>> =
        std::sync::OnceLock::new();
    let mut set = INTERNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = set.get(text.as_str()) {
        return shared.clone();
    }
    let shared: Arc<str> = text.into();
    set.insert(shared.clone());
    shared
}

/// Short strings in one allocation, found by index.
#[derive(Debug, Default)]
pub struct PackedStrs {
    text: Box<str>,
    /// Where each string ends in `text`.
    ends: Box<[u32]>,
}

impl PackedStrs {
    pub fn new<S: AsRef<str>>(strings: impl IntoIterator<Item = S>) -> Self {
        let mut text = String::new();
        let mut ends = Vec::new();
        for s in strings {
            text.push_str(s.as_ref());
            // Objects are bounded far below 4 GiB by the request size limit.
            ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
        }
        PackedStrs {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)? as usize;
        let start = match index {
            0 => 0,
            _ => self.ends[index - 1] as usize,
        };
        self.text.get(start..end)
    }
}

/// An object's labels, sorted by key, packed.
#[derive(Debug, Default)]
pub struct Labels(PackedStrs);

impl Labels {
    pub fn new(labels: &BTreeMap<String, String>) -> Self {
        Labels(PackedStrs::new(
            labels.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]),
        ))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        (0..self.0.len() / 2).filter_map(|i| Some((self.0.get(2 * i)?, self.0.get(2 * i + 1)?)))
    }
}

impl LabelSet for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_json_round_trips() {
        let mut value = serde_json::json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "v"}});
        let cached = CachedObject::from_value("/registry/configmaps/default/a", 7, &mut value);
        assert_eq!(
            String::from_utf8(cached.json()).unwrap(),
            r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a","resourceVersion":"7","labels":{"x":"y"}},"data":{"k":"v"}}"#
        );
        assert!(cached.body.starts_with(b"{\"metadata\""));
        assert_eq!(cached.labels.label("x"), Some("y"));
        assert_eq!(cached.field("metadata.name").as_deref(), Some("a"));
        let mut bare = serde_json::json!({"kind": "X"});
        let cached = CachedObject::from_value("/registry/x/a", 1, &mut bare);
        assert!(serde_json::from_slice::<Value>(&cached.json()).is_ok());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change, with the object after it (for a deletion: the last state, at the deletion's
/// revision) and before it.
#[derive(Debug, Clone)]
pub struct CacheEvent {
    pub kind: EventType,
    pub rv: i64,
    pub object: Arc<CachedObject>,
    pub prev: Option<Arc<CachedObject>>,
}

struct State {
    objects: BTreeMap<Arc<str>, Arc<CachedObject>>,
    history: VecDeque<Arc<CacheEvent>>,
    /// Watches may start at this revision or later.
    oldest_rv: i64,
    rv: i64,
}

pub struct WatchCache {
    state: RwLock<State>,
    live: broadcast::Sender<Arc<CacheEvent>>,
    rv_tx: watch::Sender<i64>,
}

/// A consistent view of part of the cache.
pub struct Snapshot {
    pub rv: i64,
    pub objects: Vec<Arc<CachedObject>>,
}

/// What a new watcher gets: the events it missed, then the live feed.
pub struct Subscription {
    pub backlog: Vec<Arc<CacheEvent>>,
    pub live: broadcast::Receiver<Arc<CacheEvent>>,
    pub rv: i64,
}

impl WatchCache {
    /// Fills the cache from the store and keeps it current in the background.
    pub async fn start(store: Arc<dyn Store>) -> anyhow::Result<Arc<Self>> {
        let (live, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (rv_tx, _) = watch::channel(0);
        let cache = Arc::new(WatchCache {
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                oldest_rv: 0,
                rv: 0,
            }),
            live,
            rv_tx,
        });
        let rv = cache.reload(store.as_ref()).await?;
        let feeder = cache.clone();
        tokio::spawn(async move { feeder.follow(store, rv).await });
        Ok(cache)
    }

    /// Replaces the cache's contents with the store's current state.
    async fn reload(&self, store: &dyn Store) -> anyhow::Result<i64> {
        let response = store.range(RangeRequest::prefix("/registry/")).await?;
        let mut objects = BTreeMap::new();
        for kv in &response.kvs {
            match CachedObject::from_kv(kv) {
                Ok(cached) => {
                    objects.insert(cached.key.clone(), Arc::new(cached));
                }
                Err(e) => tracing::error!(key = %kv.key, error = %e, "undecodable object in store"),
            }
        }
        let mut state = self.write_state();
        state.objects = objects;
        state.history.clear();
        state.rv = response.revision;
        state.oldest_rv = response.revision;
        drop(state);
        self.rv_tx.send_replace(response.revision);
        tracing::info!(
            revision = response.revision,
            objects = response.kvs.len(),
            "watch cache loaded"
        );
        Ok(response.revision)
    }

    async fn follow(self: Arc<Self>, store: Arc<dyn Store>, mut rv: i64) {
        use futures::StreamExt;
        loop {
            match store.watch("/registry/", rv).await {
                Ok(mut stream) => {
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(event) => {
                                rv = event.revision();
                                self.apply(event);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "store watch ended");
                                break;
                            }
                        }
                    }
                }
                Err(StoreError::Compacted { .. }) => {
                    tracing::warn!("watch cache fell behind compaction; reloading");
                    match self.reload(store.as_ref()).await {
                        Ok(new_rv) => rv = new_rv,
                        Err(e) => tracing::error!(error = %e, "reloading watch cache"),
                    }
                }
                Err(e) => tracing::error!(error = %e, "starting store watch"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, event: Event) {
        let rv = event.revision();
        let mut state = self.write_state();
        let cache_event = match &event {
            Event::Put { kv, .. } => {
                let cached = match CachedObject::from_kv(kv) {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        tracing::error!(key = %kv.key, error = %e, "undecodable object in store");
                        return;
                    }
                };
                let prev = state.objects.insert(cached.key.clone(), cached.clone());
                CacheEvent {
                    kind: if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    rv,
                    object: cached,
                    prev,
                }
            }
            Event::Delete { prev, revision } => {
                let Some(old) = state.objects.remove(prev.key.as_str()) else {
                    return;
                };
                // A deleted object is reported at the revision of its deletion.
                let mut value = match old.value() {
                    Ok(v) => v,
                    Err(_) => return,
                };
                let tombstone = CachedObject::from_value(&prev.key, *revision, &mut value);
                CacheEvent {
                    kind: EventType::Deleted,
                    rv,
                    object: Arc::new(tombstone),
                    prev: Some(old),
                }
            }
        };
        let cache_event = Arc::new(cache_event);
        state.rv = rv;
        state.history.push_back(cache_event.clone());
        while state.history.len() > HISTORY_LIMIT {
            if let Some(dropped) = state.history.pop_front() {
                state.oldest_rv = dropped.rv;
            }
        }
        // Sent under the lock so that subscribers never miss or repeat an event.
        let _ = self.live.send(cache_event);
        drop(state);
        self.rv_tx.send_replace(rv);
    }

    pub fn revision(&self) -> i64 {
        self.read_state().rv
    }

    /// Waits until the cache has applied revision `rv`, as upstream waits before serving a
    /// list at a resource version newer than the cache's.
    pub async fn wait_for(&self, rv: i64) -> ApiResult<()> {
        let mut rx = self.rv_tx.subscribe();
        let deadline = tokio::time::sleep(Duration::from_secs(3));
        tokio::pin!(deadline);
        loop {
            let current = *rx.borrow_and_update();
            if current >= rv {
                return Ok(());
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() {
                    return Err(ApiError::internal("watch cache stopped"));
                },
                _ = &mut deadline => {
                    let mut error = ApiError::timeout(format!(
                        "Too large resource version: {rv}, current: {current}"
                    ));
                    error.details = Some(Box::new(serde_json::json!({
                        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                        "retryAfterSeconds": 1
                    })));
                    error.retry_after = Some(1);
                    return Err(error);
                }
            }
        }
    }

    /// Objects under `prefix`, starting after `start_after` (exclusive), in key order.
    pub fn snapshot(&self, prefix: &str, start_after: Option<&str>) -> Snapshot {
        let state = self.read_state();
        let end = skiff_store::prefix_end(prefix);
        let objects = match start_after {
            Some(after) => state
                .objects
                .range::<str, _>((
                    std::ops::Bound::Excluded(after),
                    std::ops::Bound::Excluded(end.as_str()),
                ))
                .map(|(_, v)| v.clone())
                .collect(),
            None => state
                .objects
                .range::<str, _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Excluded(end.as_str()),
                ))
                .map(|(_, v)| v.clone())
                .collect(),
        };
        Snapshot {
            rv: state.rv,
            objects,
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.read_state().objects.get(key).cloned()
    }

    /// Subscribes to changes after `rv`; `None` when `rv` is older than the history kept.
    pub fn subscribe(&self, rv: i64) -> Option<Subscription> {
        let state = self.read_state();
        if rv < state.oldest_rv {
            return None;
        }
        let backlog = state
            .history
            .iter()
            .filter(|e| e.rv > rv)
            .cloned()
            .collect();
        Some(Subscription {
            backlog,
            live: self.live.subscribe(),
            rv: state.rv,
        })
    }

    /// A subscription that starts with the current contents under `prefix` as `ADDED`
    /// events (a watch with no resource version, or `sendInitialEvents=true`).
    pub fn subscribe_with_state(&self, prefix: &str) -> (Snapshot, Subscription) {
        let state = self.read_state();
        let end = skiff_store::prefix_end(prefix);
        let objects = state
            .objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Excluded(end.as_str()),
            ))
            .map(|(_, v)| v.clone())
            .collect();
        let snapshot = Snapshot {
            rv: state.rv,
            objects,
        };
        let subscription = Subscription {
            backlog: Vec::new(),
            live: self.live.subscribe(),
            rv: state.rv,
        };
        (snapshot, subscription)
    }

    pub fn len(&self) -> usize {
        self.read_state().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
