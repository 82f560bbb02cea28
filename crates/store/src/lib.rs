//! The datastore behind the API server: etcd's data model behind one trait.
//!
//! Every object lives under a key such as `/registry/pods/default/web`. The store keeps
//! one global revision that increases with every write; each key remembers the revision
//! that created it and the one that last modified it. Writes are guarded by the last
//! modification revision (compare-and-swap), reads can be taken at an older revision
//! (until it is compacted away), and watches replay every change after a revision.
//!
//! Two backends implement [`Store`]: [`embedded`] (one file, the default) and [`etcd`]
//! (a real etcd v3 cluster); [`open`] picks one from a [`StoreConfig`]. The shared
//! conformance suite in `tests/conformance.rs` runs every case against both (the etcd half
//! starts a real `etcd` from PATH and fails, loudly, when there is none).
//!
//! Conventions both backends follow, as etcd does: an empty store is at revision 1; each
//! successful create, update or delete takes the next revision; failed preconditions
//! (`AlreadyExists`, `Conflict`, `NotFound`) write nothing. After `compact(c)`, reads at a
//! revision below `c` and watches after a revision below `c` fail with
//! [`StoreError::Compacted`]. In a [`RangeRequest`], an empty `end` reads the single key
//! `start`, and `end == "\0"` reads every key from `start` on.

pub mod embedded;
pub mod etcd;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// A stored value and the revisions that describe its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the write that last changed this key.
    pub mod_revision: i64,
}

/// What a range read asks for: keys in `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key (inclusive).
    pub start: String,
    /// End key (exclusive). Use [`prefix_end`] to read a whole prefix.
    pub end: String,
    /// Read at this revision; `None` (or 0) reads the newest state.
    pub revision: Option<i64>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
}

impl RangeRequest {
    /// Every key under `prefix`, newest state, no limit.
    pub fn prefix(prefix: &str) -> Self {
        RangeRequest {
            start: prefix.to_string(),
            end: prefix_end(prefix),
            revision: None,
            limit: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    /// Keys in ascending order.
    pub kvs: Vec<KeyValue>,
    /// More keys remain in the range after the last one returned.
    pub more: bool,
    /// The revision the read was taken at (the store's current revision when `revision` was None).
    pub revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was created (`prev` is None) or updated (`prev` is the value before).
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A key was deleted at `revision`; `prev` is the value it had.
    Delete { prev: KeyValue, revision: i64 },
}

impl Event {
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// A watch: events in revision order. It ends with an error (for example
/// [`StoreError::Compacted`]) or when the store shuts down.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// A compare-and-swap failed: the key changed since `expected` was read.
    /// `current` is what is stored now (None if the key is gone).
    #[error("key {key} was modified (expected revision {expected})")]
    Conflict {
        key: String,
        expected: i64,
        current: Option<KeyValue>,
    },
    /// The requested revision is older than the last compaction.
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    /// The requested revision is newer than the store's current revision.
    #[error("required revision {0} is a future revision")]
    FutureRevision(i64),
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// etcd's semantics, for every backend. All writes are durable before they return.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The newest state of one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys in a range, at a revision, with a limit. A continuation is a new request whose
    /// `start` is the last returned key followed by `\0`, at the revision returned.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Creates `key` if it does not exist; returns the new revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<i64>;

    /// Replaces `key` if its mod revision is still `expected_revision`; returns the new revision.
    async fn update(&self, key: &str, value: Bytes, expected_revision: i64) -> Result<i64>;

    /// Deletes `key`, guarded by its mod revision when `expected_revision` is given.
    /// Returns the revision of the deletion and the deleted value.
    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<(i64, KeyValue)>;

    /// Every change to keys under `prefix` with a revision greater than `after_revision`.
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream>;

    /// Forgets history older than `revision`; reads and watches below it fail with
    /// [`StoreError::Compacted`].
    async fn compact(&self, revision: i64) -> Result<()>;

    /// The store's current revision (the revision of the newest write).
    async fn current_revision(&self) -> Result<i64>;

    /// Whether `key`'s stored form is out of date though its value is not (a store that
    /// transforms values, encrypting them, says so for a value written with a key that
    /// no longer writes): an unchanged update must still write it. Plain stores: never.
    async fn is_stale(&self, _key: &str) -> Result<bool> {
        Ok(false)
    }
}

/// The smallest key greater than every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            // Keys here are ASCII paths, so the result stays valid UTF-8.
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    "\0".to_string()
}

/// Which backend to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// One local file (the default datastore).
    Embedded(PathBuf),
    /// A real etcd v3 cluster, by client URLs such as `http://127.0.0.1:2379`.
    Etcd(Vec<String>),
}

/// Opens the configured backend.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    match config {
        StoreConfig::Embedded(path) => {
            let path = path.clone();
            // Opening may run crash recovery over the whole file: keep it off the runtime.
            let store = tokio::task::spawn_blocking(move || embedded::EmbeddedStore::open(&path))
                .await
                .map_err(|e| StoreError::Backend(format!("opening the embedded store: {e}")))??;
            Ok(Arc::new(store))
        }
        StoreConfig::Etcd(endpoints) => Ok(Arc::new(etcd::EtcdStore::connect(endpoints).await?)),
    }
}
