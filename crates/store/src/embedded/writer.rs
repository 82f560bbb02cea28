//! The single writer: group commit, in-order compare-and-swap, lazy compaction.
//!
//! Every mutation is a [`Request`] on one bounded channel. The writer thread takes the
//! first waiting request plus everything else already queued (up to [`MAX_BATCH`]),
//! applies them in arrival order inside one redb write transaction, commits it with
//! `Durability::Immediate` (one fsync for the whole batch), publishes the batch's events
//! to watchers, and only then answers each caller. So a caller never sees success for a
//! write that is not on disk, and while one batch is being fsynced the next one queues up:
//! the busier the store, the more writes share an fsync.
//!
//! Compare-and-swap checks read the transaction's own view, so a later request in a batch
//! sees the effects of earlier ones exactly as if they had been committed one by one.
//!
//! Compaction only moves the `compacted` floor (reads below it fail at once); dropping the
//! superseded versions happens afterwards in small non-fsynced transactions whenever the
//! queue is empty (and at least every few batches under sustained load), so a large
//! compaction never stalls writers. If the process dies
//! first, the leftover work is found again at the next start (events at or below the
//! floor still exist) and resumed.

use std::sync::Arc;

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::backend;
use super::codec::{
    CurrentRecord, EventRecord, HistoryRecord, COMPACTED_KEY, CURRENT, EVENTS, HISTORY, META,
    REV_KEY,
};
use super::hub::Hub;
use crate::{Event, KeyValue, Result, StoreError};

/// Requests applied in one transaction at most; bounds a batch's latency and memory.
pub(crate) const MAX_BATCH: usize = 1024;
/// Events whose superseded versions are dropped per cleanup transaction; small, so a
/// write arriving meanwhile waits little.
const CLEANUP_CHUNK: usize = 256;
/// Under sustained load the queue may never be empty; cleanup then still gets one chunk
/// per this many batches, so history cannot grow without bound.
const CLEANUP_EVERY_BATCHES: u32 = 32;

pub(crate) enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: i64,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
    Compact {
        revision: i64,
    },
}

/// What a successful request produced.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) revision: i64,
    /// The deleted value, for deletes.
    pub(crate) deleted: Option<KeyValue>,
}

pub(crate) struct Request {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<Result<Done>>,
}

pub(crate) struct Writer {
    pub(crate) db: Arc<Database>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) rx: mpsc::Receiver<Request>,
    /// Newest committed revision.
    pub(crate) revision: i64,
    /// Committed compaction floor.
    pub(crate) compacted: i64,
    /// Events at or below `compacted` remain to be cleaned up.
    pub(crate) cleanup_pending: bool,
    /// Batches committed since the last cleanup chunk.
    pub(crate) batches_since_cleanup: u32,
}

/// The tables one batch writes to.
struct Tables<'t> {
    current: Table<'t, &'static [u8], &'static [u8]>,
    history: Table<'t, (&'static [u8], i64), &'static [u8]>,
    events: Table<'t, i64, &'static [u8]>,
}

/// Revision state while a batch is being applied (committed only if the batch commits).
struct Pending {
    revision: i64,
    compacted: i64,
    events: Vec<Event>,
}

impl Writer {
    pub(crate) fn run(mut self) {
        loop {
            if self.cleanup_pending && self.batches_since_cleanup >= CLEANUP_EVERY_BATCHES {
                self.cleanup_chunk();
            }
            let first = match self.rx.try_recv() {
                Ok(request) => request,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if self.cleanup_pending {
                        self.cleanup_chunk();
                        continue;
                    }
                    match self.rx.blocking_recv() {
                        Some(request) => request,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            let mut batch = Vec::with_capacity(16);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        tracing::debug!("embedded store writer stopped");
        self.hub.close();
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        match self.apply(&ops) {
            Ok((outcomes, pending)) => {
                if pending.compacted > self.compacted {
                    self.cleanup_pending = true;
                }
                self.revision = pending.revision;
                self.compacted = pending.compacted;
                self.batches_since_cleanup = self.batches_since_cleanup.saturating_add(1);
                // Watchers hear about the batch before callers are answered, so a caller
                // that writes then watches from its new revision never misses anything.
                self.hub.publish(self.revision, &pending.events);
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // The caller may have given up waiting; the write stands regardless.
                    let _ = reply.send(outcome);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, batch = ops.len(), "embedded store commit failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Backend(err.to_string())));
                }
            }
        }
    }

    /// Applies a batch in one transaction. The outer error fails the whole batch (nothing
    /// was written); the inner results are per-request answers.
    fn apply(&self, ops: &[Op]) -> Result<(Vec<Result<Done>>, Pending)> {
        let txn = self.db.begin_write().map_err(backend("begin write"))?;
        let mut pending = Pending {
            revision: self.revision,
            compacted: self.compacted,
            events: Vec::new(),
        };
        let mut outcomes = Vec::with_capacity(ops.len());
        {
            let mut tables = Tables {
                current: txn.open_table(CURRENT).map_err(backend("open current"))?,
                history: txn.open_table(HISTORY).map_err(backend("open history"))?,
                events: txn.open_table(EVENTS).map_err(backend("open events"))?,
            };
            for op in ops {
                outcomes.push(apply_one(&mut tables, &mut pending, op)?);
            }
            if pending.revision == self.revision && pending.compacted == self.compacted {
                // Only failed preconditions: nothing to make durable, skip the fsync.
                drop(tables);
                txn.abort().map_err(backend("abort"))?;
                return Ok((outcomes, pending));
            }
            let mut meta = txn.open_table(META).map_err(backend("open meta"))?;
            meta.insert(REV_KEY, pending.revision)
                .map_err(backend("write meta"))?;
            meta.insert(COMPACTED_KEY, pending.compacted)
                .map_err(backend("write meta"))?;
        }
        txn.commit().map_err(backend("commit"))?;
        Ok((outcomes, pending))
    }

    /// Drops versions superseded at or below the compaction floor, a chunk at a time.
    fn cleanup_chunk(&mut self) {
        self.batches_since_cleanup = 0;
        match self.try_cleanup_chunk() {
            Ok(done) => self.cleanup_pending = !done,
            Err(err) => {
                // Not fatal: the floor already hides the data. Retrying at once would spin
                // on a persistent error, so the work waits for the next compaction or start.
                tracing::warn!(error = %err, "embedded store compaction cleanup failed");
                self.cleanup_pending = false;
            }
        }
    }

    /// Returns true when nothing is left to clean.
    fn try_cleanup_chunk(&self) -> Result<bool> {
        let mut txn = self.db.begin_write().map_err(backend("begin write"))?;
        // Losing this work in a crash is harmless (it is redone at startup), so it does not
        // pay for an fsync; the next durable commit persists it.
        txn.set_durability(Durability::None)
            .map_err(|e| StoreError::Backend(format!("embedded store: set durability: {e}")))?;
        let done;
        {
            let mut events = txn.open_table(EVENTS).map_err(backend("open events"))?;
            let mut history = txn.open_table(HISTORY).map_err(backend("open history"))?;
            let mut chunk = Vec::with_capacity(CLEANUP_CHUNK);
            for entry in events
                .range(..=self.compacted)
                .map_err(backend("scan events"))?
                .take(CLEANUP_CHUNK)
            {
                let (k, v) = entry.map_err(backend("scan events"))?;
                chunk.push((k.value(), EventRecord::decode(v.value())?));
            }
            done = chunk.len() < CLEANUP_CHUNK;
            for (revision, record) in &chunk {
                if record.prev_revision > 0 {
                    history
                        .remove((record.key.as_slice(), record.prev_revision))
                        .map_err(backend("compact history"))?;
                }
                if record.is_delete {
                    // A tombstone at or below the floor only hides versions removed here.
                    history
                        .remove((record.key.as_slice(), *revision))
                        .map_err(backend("compact history"))?;
                }
                events
                    .remove(*revision)
                    .map_err(backend("compact events"))?;
            }
            tracing::debug!(
                events = chunk.len(),
                floor = self.compacted,
                "embedded store compaction chunk"
            );
        }
        txn.commit().map_err(backend("commit"))?;
        Ok(done)
    }
}

/// Applies one request. `Err` is a storage failure (aborts the batch); `Ok(Err(_))` is a
/// failed precondition answered to this caller alone.
fn apply_one(tables: &mut Tables<'_>, pending: &mut Pending, op: &Op) -> Result<Result<Done>> {
    match op {
        Op::Create { key, value } => {
            if current_kv(tables, key)?.is_some() {
                return Ok(Err(StoreError::AlreadyExists(key.clone())));
            }
            let kv = put(tables, pending, key, value, None)?;
            let revision = kv.mod_revision;
            pending.events.push(Event::Put { kv, prev: None });
            Ok(Ok(Done {
                revision,
                deleted: None,
            }))
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let existing = current_kv(tables, key)?;
            match existing {
                Some(prev) if prev.mod_revision == *expected => {
                    let kv = put(tables, pending, key, value, Some(&prev))?;
                    let revision = kv.mod_revision;
                    pending.events.push(Event::Put {
                        kv,
                        prev: Some(prev),
                    });
                    Ok(Ok(Done {
                        revision,
                        deleted: None,
                    }))
                }
                current => Ok(Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    current,
                })),
            }
        }
        Op::Delete { key, expected } => {
            let Some(prev) = current_kv(tables, key)? else {
                return Ok(Err(StoreError::NotFound(key.clone())));
            };
            if let Some(expected) = expected {
                if prev.mod_revision != *expected {
                    return Ok(Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        current: Some(prev),
                    }));
                }
            }
            pending.revision += 1;
            let revision = pending.revision;
            let k = key.as_bytes();
            tables.current.remove(k).map_err(backend("write current"))?;
            tables
                .history
                .insert((k, revision), HistoryRecord::encode_delete().as_slice())
                .map_err(backend("write history"))?;
            tables
                .events
                .insert(
                    revision,
                    EventRecord::encode(true, prev.mod_revision, k).as_slice(),
                )
                .map_err(backend("write events"))?;
            pending.events.push(Event::Delete {
                prev: prev.clone(),
                revision,
            });
            Ok(Ok(Done {
                revision,
                deleted: Some(prev),
            }))
        }
        Op::Compact { revision } => {
            if *revision > pending.revision {
                return Ok(Err(StoreError::FutureRevision(*revision)));
            }
            if *revision <= pending.compacted {
                return Ok(Err(StoreError::Compacted {
                    requested: *revision,
                    compacted: pending.compacted,
                }));
            }
            pending.compacted = *revision;
            Ok(Ok(Done {
                revision: pending.revision,
                deleted: None,
            }))
        }
    }
}

fn current_kv(tables: &Tables<'_>, key: &str) -> Result<Option<KeyValue>> {
    let found = tables
        .current
        .get(key.as_bytes())
        .map_err(backend("read current"))?;
    found
        .map(|g| CurrentRecord::decode(key.as_bytes(), g.value()))
        .transpose()
}

/// Writes a new version of `key` at the next revision and returns it.
fn put(
    tables: &mut Tables<'_>,
    pending: &mut Pending,
    key: &str,
    value: &Bytes,
    prev: Option<&KeyValue>,
) -> Result<KeyValue> {
    pending.revision += 1;
    let revision = pending.revision;
    let create_revision = prev.map_or(revision, |p| p.create_revision);
    let prev_revision = prev.map_or(0, |p| p.mod_revision);
    let k = key.as_bytes();
    tables
        .current
        .insert(
            k,
            CurrentRecord::encode(create_revision, revision, value).as_slice(),
        )
        .map_err(backend("write current"))?;
    tables
        .history
        .insert(
            (k, revision),
            HistoryRecord::encode_put(create_revision, value).as_slice(),
        )
        .map_err(backend("write history"))?;
    tables
        .events
        .insert(
            revision,
            EventRecord::encode(false, prev_revision, k).as_slice(),
        )
        .map_err(backend("write events"))?;
    Ok(KeyValue {
        key: key.to_string(),
        value: value.clone(),
        create_revision,
        mod_revision: revision,
    })
}

/// Whether events at or below `compacted` still wait for cleanup (checked at startup).
pub(crate) fn cleanup_needed(txn: &WriteTransaction, compacted: i64) -> Result<bool> {
    let events = txn.open_table(EVENTS).map_err(backend("open events"))?;
    let first = events.first().map_err(backend("scan events"))?;
    Ok(first.is_some_and(|(k, _)| k.value() <= compacted))
}
