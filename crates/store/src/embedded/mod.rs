//! The embedded backend: etcd's data model in one redb file.
//!
//! # Tables
//!
//! | table | key | value | used by |
//! | --- | --- | --- | --- |
//! | `meta` | name | i64 | `rev` (newest revision), `compacted` (floor), `format` |
//! | `current` | key | create_rev, mod_rev, value | reads at the newest revision, CAS checks |
//! | `history` | (key, rev) | put (create_rev, value) or tombstone | reads at older revisions, watch replay |
//! | `events` | rev | kind, prev_rev, key | watch replay, compaction |
//!
//! Every revision is exactly one write to one key, so `events` has one row per revision
//! (above the compaction floor). `current` duplicates the newest `history` row of each
//! live key so that `get` and `range` at the newest revision are plain B-tree lookups and
//! scans that never touch history. A read at an older revision `r` seeks, for each
//! distinct key in range, the newest `history` row at or below `r`; its cost depends on
//! the number of keys, not on how long their histories are.
//!
//! # Invariants
//!
//! - `meta.rev` is the revision of the newest committed write, and all four tables are
//!   changed in the same transaction as it, so any read snapshot is self-consistent.
//! - A revision is assigned only inside a committed transaction; a failed batch leaves
//!   the revision unchanged, so revisions have no holes visible to readers.
//! - Revisions start at 1 for an empty store (as etcd does); the first write gets 2.
//! - After `compact(c)`: reads below `c` and watches after a revision below `c` fail with
//!   [`StoreError::Compacted`]; every version that was live at `c` or later is kept, so
//!   reads at `c` and later stay exact, and every event after `c` keeps its `prev`.
//!
//! # Writes and watches
//!
//! One writer thread owns all writes (source: `writer.rs`). It takes every queued request
//! (up to 1024), applies them in order in one redb transaction — compare-and-swap checks
//! see earlier requests of the same batch — commits with `Durability::Immediate` (one
//! fsync for the batch), publishes the events, and only then answers the callers. A batch
//! of failed preconditions only is not committed at all.
//!
//! Watches (source: `watch.rs`, `hub.rs`) replay `events` from disk up to the revision at
//! which they subscribed to the live fan-out, then stream live events. Live buffers are
//! bounded; a watcher that falls behind is unsubscribed and catches up from disk again, so
//! it never blocks the writer nor holds unbounded memory. Its stream only ends with an
//! error if what it still needs was compacted meanwhile.

mod codec;
mod hub;
mod read;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use crate::{KeyValue, RangeRequest, RangeResponse, Result, Store, StoreError, WatchStream};
use codec::{COMPACTED_KEY, CURRENT, EVENTS, FORMAT_KEY, FORMAT_VERSION, HISTORY, META, REV_KEY};
use hub::Hub;
use writer::{Done, Op, Request, Writer};

/// The revision of an empty store, as in etcd.
pub(crate) const INITIAL_REVISION: i64 = 1;
/// Writes that may wait for the writer before callers themselves wait to enqueue.
const QUEUE_CAPACITY: usize = 8192;

/// Maps any redb error to [`StoreError::Backend`], saying what was being done.
pub(crate) fn backend<E: Into<redb::Error>>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Backend(format!("embedded store: {what}: {}", e.into()))
}

/// A [`Store`] in one local redb file. See the module docs for the design.
pub struct EmbeddedStore {
    db: Arc<Database>,
    hub: Arc<Hub>,
    /// `None` only while dropping (so the writer sees the channel close).
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// redb's page cache size (see [`EmbeddedStore::open`]).
const PAGE_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`. After a crash this also runs redb's
    /// recovery, which makes the file consistent with its last durable commit.
    pub fn open(path: &Path) -> Result<Self> {
        // The API server keeps every object in its watch cache already; redb's default
        // 1 GiB page cache would hold a second copy, so it gets only enough for the
        // B-tree's upper levels and the write path.
        let db = Database::builder()
            .set_cache_size(PAGE_CACHE_BYTES)
            .create(path)
            .map_err(|e| {
                StoreError::Backend(format!(
                    "embedded store: open {}: {}",
                    path.display(),
                    redb::Error::from(e)
                ))
            })?;
        let (revision, compacted, cleanup_pending) = init_tables(&db)?;
        tracing::info!(
            path = %path.display(),
            revision,
            compacted,
            "embedded store opened"
        );
        let db = Arc::new(db);
        let hub = Arc::new(Hub::new(revision));
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            db: db.clone(),
            hub: hub.clone(),
            rx,
            revision,
            compacted,
            cleanup_pending,
            batches_since_cleanup: 0,
        };
        let handle = std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Backend(format!("embedded store: spawn writer: {e}")))?;
        Ok(EmbeddedStore {
            db,
            hub,
            requests: Some(tx),
            writer: Some(handle),
            path: path.to_path_buf(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn submit(&self, op: Op) -> Result<Done> {
        let requests = self.requests.as_ref().ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        requests
            .send(Request { op, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn blocking_read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(format!("embedded store: read task: {e}")))?
    }
}

fn closed() -> StoreError {
    StoreError::Backend("embedded store: writer has stopped".into())
}

/// Creates missing tables and returns (revision, compacted, cleanup pending).
fn init_tables(db: &Database) -> Result<(i64, i64, bool)> {
    let txn = db.begin_write().map_err(backend("begin write"))?;
    let state;
    {
        let mut meta = txn.open_table(META).map_err(backend("open meta"))?;
        let format = meta
            .get(FORMAT_KEY)
            .map_err(backend("read meta"))?
            .map(|g| g.value());
        match format {
            None => {
                meta.insert(FORMAT_KEY, FORMAT_VERSION)
                    .map_err(backend("write meta"))?;
                meta.insert(REV_KEY, INITIAL_REVISION)
                    .map_err(backend("write meta"))?;
                meta.insert(COMPACTED_KEY, 0)
                    .map_err(backend("write meta"))?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Backend(format!(
                    "embedded store: unsupported file format {other} (this build reads {FORMAT_VERSION})"
                )))
            }
        }
        let get = |name: &str| -> Result<i64> {
            Ok(meta
                .get(name)
                .map_err(backend("read meta"))?
                .map(|g| g.value())
                .unwrap_or(0))
        };
        let revision = get(REV_KEY)?.max(INITIAL_REVISION);
        let compacted = get(COMPACTED_KEY)?;
        txn.open_table(CURRENT).map_err(backend("open current"))?;
        txn.open_table(HISTORY).map_err(backend("open history"))?;
        txn.open_table(EVENTS).map_err(backend("open events"))?;
        state = (
            revision,
            compacted,
            writer::cleanup_needed(&txn, compacted)?,
        );
    }
    txn.commit().map_err(backend("commit"))?;
    Ok(state)
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer after it finishes the batch in hand; waiting
        // for it means the file is released when drop returns (a reopen can follow).
        self.requests = None;
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("embedded store writer panicked");
            }
        }
        self.hub.close();
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        self.blocking_read(move |db| read::get(db, &key)).await
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.blocking_read(move |db| read::range(db, &request))
            .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<i64> {
        let op = Op::Create {
            key: key.to_string(),
            value,
        };
        Ok(self.submit(op).await?.revision)
    }

    async fn update(&self, key: &str, value: Bytes, expected_revision: i64) -> Result<i64> {
        let op = Op::Update {
            key: key.to_string(),
            value,
            expected: expected_revision,
        };
        Ok(self.submit(op).await?.revision)
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<(i64, KeyValue)> {
        let op = Op::Delete {
            key: key.to_string(),
            expected: expected_revision,
        };
        let done = self.submit(op).await?;
        let deleted = done.deleted.ok_or_else(|| {
            StoreError::Backend("embedded store: delete returned no value".into())
        })?;
        Ok((done.revision, deleted))
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        // Fail fast for a compacted start, so callers get the error from `watch` itself
        // (the stream re-checks against the same snapshot it replays from).
        let (_, compacted) = self
            .blocking_read(|db| {
                let txn = db.begin_read().map_err(backend("begin read"))?;
                read::revisions(&txn)
            })
            .await?;
        if after_revision < compacted {
            return Err(StoreError::Compacted {
                requested: after_revision,
                compacted,
            });
        }
        Ok(watch::start(
            self.db.clone(),
            self.hub.clone(),
            prefix.to_string(),
            after_revision,
        ))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.hub.committed())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_watch_leaves_the_hub() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let watch = store.watch("/a/", 1).await.unwrap();
        for _ in 0..100 {
            if store.hub.subscriber_count() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(store.hub.subscriber_count(), 1);
        drop(watch);
        // The next publish (even of an unrelated key) drops the dead subscriber.
        for i in 0..100 {
            store
                .create(&format!("/b/{i}"), Bytes::from_static(b"x"))
                .await
                .unwrap();
            if store.hub.subscriber_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the dropped watch is still subscribed");
    }

    fn table_len<K: redb::Key + 'static, V: redb::Value + 'static>(
        store: &EmbeddedStore,
        table: redb::TableDefinition<K, V>,
    ) -> u64 {
        use redb::ReadableTableMetadata;
        let txn = store.db.begin_read().unwrap();
        txn.open_table(table).unwrap().len().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_cleanup_drops_superseded_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
        let x = || Bytes::from_static(b"x");
        // /a: three versions; /b: created and deleted; /c: deleted then recreated.
        let mut ra = store.create("/a", x()).await.unwrap();
        for _ in 0..2 {
            ra = store.update("/a", x(), ra).await.unwrap();
        }
        store.create("/b", x()).await.unwrap();
        store.delete("/b", None).await.unwrap();
        store.create("/c", x()).await.unwrap();
        store.delete("/c", None).await.unwrap();
        let rc = store.create("/c", x()).await.unwrap();
        assert_eq!(table_len(&store, codec::HISTORY), 8);
        store.compact(rc).await.unwrap();
        for _ in 0..200 {
            if table_len(&store, codec::EVENTS) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Only what is live at the floor is left: /a's newest version and /c.
        assert_eq!(table_len(&store, codec::EVENTS), 0);
        assert_eq!(table_len(&store, codec::HISTORY), 2);
        assert_eq!(table_len(&store, codec::CURRENT), 2);
        let at_floor = store
            .range(RangeRequest {
                revision: Some(rc),
                ..RangeRequest::prefix("/")
            })
            .await
            .unwrap();
        let keys: Vec<_> = at_floor.kvs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/a", "/c"]);
    }
}
