//! Reads: point gets, ranges at the newest or an older revision, and watch replay.
//!
//! Every function takes one redb read transaction, i.e. one consistent snapshot, so the
//! revision bookkeeping in `meta` always agrees with the tables read next to it.

use std::ops::Bound;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};

use super::codec::{
    CurrentRecord, EventRecord, HistoryRecord, COMPACTED_KEY, CURRENT, EVENTS, HISTORY, META,
    REV_KEY,
};
use super::{backend, INITIAL_REVISION};
use crate::{Event, KeyValue, RangeRequest, RangeResponse, Result, StoreError};

/// The newest revision and the compaction floor, as of `txn`.
pub(crate) fn revisions(txn: &ReadTransaction) -> Result<(i64, i64)> {
    let meta = txn.open_table(META).map_err(backend("open meta"))?;
    let get = |name: &str, default: i64| -> Result<i64> {
        Ok(meta
            .get(name)
            .map_err(backend("read meta"))?
            .map(|g| g.value())
            .unwrap_or(default))
    };
    Ok((get(REV_KEY, INITIAL_REVISION)?, get(COMPACTED_KEY, 0)?))
}

pub(crate) fn get(db: &Database, key: &str) -> Result<Option<KeyValue>> {
    let txn = db.begin_read().map_err(backend("begin read"))?;
    let current = txn.open_table(CURRENT).map_err(backend("open current"))?;
    let found = current
        .get(key.as_bytes())
        .map_err(backend("read current"))?;
    found
        .map(|g| CurrentRecord::decode(key.as_bytes(), g.value()))
        .transpose()
}

/// The bounds of a request in etcd's conventions: an empty `end` means the single key
/// `start`, and `"\0"` means every key from `start` on.
fn bounds(req: &RangeRequest) -> (Vec<u8>, Option<Vec<u8>>) {
    let start = req.start.as_bytes().to_vec();
    let end = if req.end.is_empty() {
        let mut single = start.clone();
        single.push(0);
        Some(single)
    } else if req.end == "\0" {
        None
    } else {
        Some(req.end.as_bytes().to_vec())
    };
    (start, end)
}

pub(crate) fn range(db: &Database, req: &RangeRequest) -> Result<RangeResponse> {
    let txn = db.begin_read().map_err(backend("begin read"))?;
    let (current_rev, compacted) = revisions(&txn)?;
    let revision = match req.revision {
        None => current_rev,
        Some(r) if r <= 0 => current_rev,
        Some(r) if r > current_rev => return Err(StoreError::FutureRevision(r)),
        Some(r) if r < compacted => {
            return Err(StoreError::Compacted {
                requested: r,
                compacted,
            })
        }
        Some(r) => r,
    };
    let (start, end) = bounds(req);
    if let Some(end) = &end {
        if end.as_slice() <= start.as_slice() {
            return Ok(RangeResponse {
                kvs: Vec::new(),
                more: false,
                revision,
            });
        }
    }
    let limit = if req.limit == 0 {
        usize::MAX
    } else {
        req.limit
    };
    let (kvs, more) = if revision == current_rev {
        range_current(&txn, &start, end.as_deref(), limit)?
    } else {
        range_history(&txn, &start, end.as_deref(), revision, limit)?
    };
    Ok(RangeResponse {
        kvs,
        more,
        revision,
    })
}

/// Newest state: a direct scan of `current`, no history involved.
fn range_current(
    txn: &ReadTransaction,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<KeyValue>, bool)> {
    let current = txn.open_table(CURRENT).map_err(backend("open current"))?;
    let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
    let iter = current
        .range::<&[u8]>((Bound::Included(start), upper))
        .map_err(backend("scan current"))?;
    let mut kvs = Vec::new();
    for entry in iter {
        let (k, v) = entry.map_err(backend("scan current"))?;
        if kvs.len() == limit {
            return Ok((kvs, true));
        }
        kvs.push(CurrentRecord::decode(k.value(), v.value())?);
    }
    Ok((kvs, false))
}

/// State at an older `revision`: for each distinct key in range, the newest version at or
/// below `revision`. Each key costs two B-tree seeks however long its history is.
fn range_history(
    txn: &ReadTransaction,
    start: &[u8],
    end: Option<&[u8]>,
    revision: i64,
    limit: usize,
) -> Result<(Vec<KeyValue>, bool)> {
    let history = txn.open_table(HISTORY).map_err(backend("open history"))?;
    let mut kvs = Vec::new();
    // The next key to look at: `start` itself first, then strictly after the last one.
    let mut after: Option<Vec<u8>> = None;
    loop {
        let key = {
            let lower = match &after {
                None => Bound::Included((start, i64::MIN)),
                Some(k) => Bound::Excluded((k.as_slice(), i64::MAX)),
            };
            let upper = end.map_or(Bound::Unbounded, |e| Bound::Excluded((e, i64::MIN)));
            let mut iter = history
                .range::<(&[u8], i64)>((lower, upper))
                .map_err(backend("scan history"))?;
            match iter.next() {
                None => break,
                Some(entry) => {
                    let (k, _) = entry.map_err(backend("scan history"))?;
                    k.value().0.to_vec()
                }
            }
        };
        let newest = history
            .range::<(&[u8], i64)>((key.as_slice(), i64::MIN)..=(key.as_slice(), revision))
            .map_err(backend("scan history"))?
            .next_back();
        if let Some(entry) = newest {
            let (k, v) = entry.map_err(backend("scan history"))?;
            let mod_revision = k.value().1;
            if let Some(kv) = HistoryRecord::decode(v.value())?.into_kv(&key, mod_revision)? {
                if kvs.len() == limit {
                    return Ok((kvs, true));
                }
                kvs.push(kv);
            }
        }
        after = Some(key);
    }
    Ok((kvs, false))
}

/// Events scanned per replay chunk before handing control back, so one watch catching up
/// on a long history does not hold a read transaction (and pin old pages) for long.
const REPLAY_SCAN_LIMIT: i64 = 4096;

/// Events under `prefix` with revisions in `(after, upto]`, at most `max_events` of them.
/// Returns them and the revision scanned through (the next call starts after it).
pub(crate) fn replay(
    db: &Database,
    prefix: &[u8],
    after: i64,
    upto: i64,
    max_events: usize,
) -> Result<(Vec<Event>, i64)> {
    let txn = db.begin_read().map_err(backend("begin read"))?;
    let (_, compacted) = revisions(&txn)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let events = txn.open_table(EVENTS).map_err(backend("open events"))?;
    let history = txn.open_table(HISTORY).map_err(backend("open history"))?;
    let mut out = Vec::new();
    let scan_upto = upto.min(after.saturating_add(REPLAY_SCAN_LIMIT));
    let iter = events
        .range((after + 1)..=scan_upto)
        .map_err(backend("scan events"))?;
    for entry in iter {
        let (k, v) = entry.map_err(backend("scan events"))?;
        let revision = k.value();
        let bytes = v.value();
        if !EventRecord::key_of(bytes).starts_with(prefix) {
            continue;
        }
        out.push(build_event(
            &history,
            EventRecord::decode(bytes)?,
            revision,
        )?);
        if out.len() >= max_events {
            return Ok((out, revision));
        }
    }
    Ok((out, scan_upto))
}

fn build_event(
    history: &impl ReadableTable<(&'static [u8], i64), &'static [u8]>,
    record: EventRecord,
    revision: i64,
) -> Result<Event> {
    let version = |rev: i64| -> Result<Option<KeyValue>> {
        match history
            .get((record.key.as_slice(), rev))
            .map_err(backend("read history"))?
        {
            Some(g) => HistoryRecord::decode(g.value())?.into_kv(&record.key, rev),
            None => Ok(None),
        }
    };
    let prev = if record.prev_revision > 0 {
        version(record.prev_revision)?
    } else {
        None
    };
    let missing = || {
        StoreError::Backend(format!(
            "embedded store: history for event at revision {revision} is missing"
        ))
    };
    if record.is_delete {
        Ok(Event::Delete {
            prev: prev.ok_or_else(missing)?,
            revision,
        })
    } else {
        Ok(Event::Put {
            kv: version(revision)?.ok_or_else(missing)?,
            prev,
        })
    }
}
