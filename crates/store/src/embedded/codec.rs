//! Table definitions and the byte layouts of their values.
//!
//! Layouts are little-endian and fixed; changing one needs a format version bump in
//! [`META`] (key [`FORMAT_KEY`]).

use bytes::Bytes;
use redb::TableDefinition;

use crate::{KeyValue, Result, StoreError};

/// Bookkeeping: `rev`, `compacted`, `format`.
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// key -> [`CurrentRecord`]: the newest state of every live key.
pub(crate) const CURRENT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("current");
/// (key, revision) -> [`HistoryRecord`]: every version of every key still needed for MVCC
/// reads (puts and tombstones).
pub(crate) const HISTORY: TableDefinition<(&[u8], i64), &[u8]> = TableDefinition::new("history");
/// revision -> [`EventRecord`]: which key changed at each revision, for watch replay and
/// compaction.
pub(crate) const EVENTS: TableDefinition<i64, &[u8]> = TableDefinition::new("events");

pub(crate) const REV_KEY: &str = "rev";
pub(crate) const COMPACTED_KEY: &str = "compacted";
pub(crate) const FORMAT_KEY: &str = "format";
pub(crate) const FORMAT_VERSION: i64 = 1;

const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("corrupt {what} record in the embedded store"))
}

fn read_i64(bytes: &[u8], at: usize, what: &str) -> Result<i64> {
    let slice = bytes.get(at..at + 8).ok_or_else(|| corrupt(what))?;
    let mut buf = [0u8; 8];
    buf.copy_from_slice(slice);
    Ok(i64::from_le_bytes(buf))
}

/// `current` value: `create_rev (8) | mod_rev (8) | value`.
pub(crate) struct CurrentRecord;

impl CurrentRecord {
    pub(crate) fn encode(create_revision: i64, mod_revision: i64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + value.len());
        out.extend_from_slice(&create_revision.to_le_bytes());
        out.extend_from_slice(&mod_revision.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<KeyValue> {
        let create_revision = read_i64(bytes, 0, "current")?;
        let mod_revision = read_i64(bytes, 8, "current")?;
        Ok(KeyValue {
            key: key_string(key)?,
            value: Bytes::copy_from_slice(&bytes[16..]),
            create_revision,
            mod_revision,
        })
    }
}

/// `history` value: `KIND_PUT | create_rev (8) | value`, or `KIND_DELETE` alone.
pub(crate) enum HistoryRecord {
    Put { create_revision: i64, value: Bytes },
    Delete,
}

impl HistoryRecord {
    pub(crate) fn encode_put(create_revision: i64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + value.len());
        out.push(KIND_PUT);
        out.extend_from_slice(&create_revision.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    pub(crate) fn encode_delete() -> Vec<u8> {
        vec![KIND_DELETE]
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.first() {
            Some(&KIND_PUT) => Ok(HistoryRecord::Put {
                create_revision: read_i64(bytes, 1, "history")?,
                value: Bytes::copy_from_slice(&bytes[9..]),
            }),
            Some(&KIND_DELETE) => Ok(HistoryRecord::Delete),
            _ => Err(corrupt("history")),
        }
    }

    /// The key's state at `mod_revision`, if this version is a put.
    pub(crate) fn into_kv(self, key: &[u8], mod_revision: i64) -> Result<Option<KeyValue>> {
        match self {
            HistoryRecord::Put {
                create_revision,
                value,
            } => Ok(Some(KeyValue {
                key: key_string(key)?,
                value,
                create_revision,
                mod_revision,
            })),
            HistoryRecord::Delete => Ok(None),
        }
    }
}

/// `events` value: `kind (1) | prev_rev (8) | key`. `prev_rev` is the mod revision of the
/// live version this write replaced (0 when the key did not exist), so compaction can drop
/// superseded versions without scanning history, and watch replay can find `prev`.
pub(crate) struct EventRecord {
    pub(crate) is_delete: bool,
    pub(crate) prev_revision: i64,
    pub(crate) key: Vec<u8>,
}

impl EventRecord {
    pub(crate) fn encode(is_delete: bool, prev_revision: i64, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + key.len());
        out.push(if is_delete { KIND_DELETE } else { KIND_PUT });
        out.extend_from_slice(&prev_revision.to_le_bytes());
        out.extend_from_slice(key);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let is_delete = match bytes.first() {
            Some(&KIND_PUT) => false,
            Some(&KIND_DELETE) => true,
            _ => return Err(corrupt("event")),
        };
        Ok(EventRecord {
            is_delete,
            prev_revision: read_i64(bytes, 1, "event")?,
            key: bytes[9..].to_vec(),
        })
    }

    /// Only the key bytes, without copying: the replay filter looks at this first.
    pub(crate) fn key_of(bytes: &[u8]) -> &[u8] {
        bytes.get(9..).unwrap_or(&[])
    }
}

/// Keys arrive as `&str`, so everything stored is valid UTF-8; anything else is corruption.
pub(crate) fn key_string(key: &[u8]) -> Result<String> {
    String::from_utf8(key.to_vec()).map_err(|_| corrupt("key"))
}
