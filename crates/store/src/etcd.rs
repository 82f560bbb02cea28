//! The etcd v3 backend: every [`Store`] call is one etcd request.
//!
//! - `create` is a transaction `if create_revision(key) == 0 then put else get`.
//! - `update` is `if mod_revision(key) == expected and create_revision(key) > 0 then put
//!   else get`; the second compare keeps `expected == 0` from creating a missing key.
//! - `delete` is a plain delete with `prev_kv`, or the same guarded transaction.
//! - `watch` asks for `prev_kv` from `after_revision + 1`; a watch canceled for
//!   compaction ends with [`StoreError::Compacted`].
//!
//! Keys are used exactly as given; callers choose the `/registry/...` layout.
//!
//! etcd only reports "compacted" as a message, without the compaction revision, except on
//! watches. So the `compacted` field of the errors from reads holds the newest compaction
//! this process has seen (requested or reported), which may be 0 if it has seen none.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KvClient,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::stream;

use crate::{Event, KeyValue, RangeRequest, RangeResponse, Result, Store, StoreError, WatchStream};

/// A [`Store`] backed by an etcd v3 cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Newest compaction revision seen by this process (see the module docs).
    compacted: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (client URLs such as `http://127.0.0.1:2379`).
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("etcd: no endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Backend(format!("etcd: connect to {endpoints:?}: {e}")))?;
        tracing::info!(?endpoints, "connected to etcd");
        Ok(EtcdStore {
            client,
            compacted: Arc::new(AtomicI64::new(0)),
        })
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client()
    }

    fn saw_compaction(&self, revision: i64) {
        self.compacted.fetch_max(revision, Ordering::AcqRel);
    }

    /// Maps an etcd error, recognising its compaction and future-revision answers.
    fn error(&self, err: etcd_client::Error, what: &str, requested: i64) -> StoreError {
        if let etcd_client::Error::GRpcStatus(status) = &err {
            let message = status.message();
            if message.contains("required revision has been compacted") {
                return StoreError::Compacted {
                    requested,
                    compacted: self.compacted.load(Ordering::Acquire),
                };
            }
            if message.contains("required revision is a future revision") {
                return StoreError::FutureRevision(requested);
            }
        }
        StoreError::Backend(format!("etcd: {what}: {err}"))
    }
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = std::str::from_utf8(kv.key())
        .map_err(|_| StoreError::Backend("etcd: key is not UTF-8".into()))?
        .to_string();
    Ok(KeyValue {
        key,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd: response without a header".into()))
}

/// The first kv of the `get` that a failed transaction ran in its else branch.
fn else_get(responses: Vec<TxnOpResponse>) -> Result<Option<KeyValue>> {
    for response in responses {
        if let TxnOpResponse::Get(get) = response {
            return get.kvs().first().map(convert).transpose();
        }
    }
    Err(StoreError::Backend(
        "etcd: transaction answered without its get".into(),
    ))
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let response = self
            .kv()
            .get(key, None)
            .await
            .map_err(|e| self.error(e, "get", 0))?;
        response.kvs().first().map(convert).transpose()
    }

    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        let requested = request.revision.unwrap_or(0).max(0);
        let mut options = GetOptions::new()
            .with_revision(requested)
            .with_limit(i64::try_from(request.limit).unwrap_or(i64::MAX));
        if !request.end.is_empty() {
            options = options.with_range(request.end.as_bytes());
        }
        let response = self
            .kv()
            .get(request.start.as_bytes(), Some(options))
            .await
            .map_err(|e| self.error(e, "range", requested))?;
        let kvs = response
            .kvs()
            .iter()
            .map(convert)
            .collect::<Result<Vec<_>>>()?;
        // The header carries the store's newest revision, not the one read at.
        let revision = if requested > 0 {
            requested
        } else {
            header_revision(response.header())?
        };
        Ok(RangeResponse {
            kvs,
            more: response.more(),
            revision,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<i64> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self
            .kv()
            .txn(txn)
            .await
            .map_err(|e| self.error(e, "create", 0))?;
        if response.succeeded() {
            header_revision(response.header())
        } else {
            Err(StoreError::AlreadyExists(key.to_string()))
        }
    }

    async fn update(&self, key: &str, value: Bytes, expected_revision: i64) -> Result<i64> {
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key, CompareOp::Equal, expected_revision),
                Compare::create_revision(key, CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self
            .kv()
            .txn(txn)
            .await
            .map_err(|e| self.error(e, "update", 0))?;
        if response.succeeded() {
            header_revision(response.header())
        } else {
            Err(StoreError::Conflict {
                key: key.to_string(),
                expected: expected_revision,
                current: else_get(response.op_responses())?,
            })
        }
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<(i64, KeyValue)> {
        let Some(expected) = expected_revision else {
            let response = self
                .kv()
                .delete(key, Some(DeleteOptions::new().with_prev_key()))
                .await
                .map_err(|e| self.error(e, "delete", 0))?;
            let prev = response
                .prev_kvs()
                .first()
                .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
            return Ok((header_revision(response.header())?, convert(prev)?));
        };
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key, CompareOp::Equal, expected),
                Compare::create_revision(key, CompareOp::Greater, 0),
            ])
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self
            .kv()
            .txn(txn)
            .await
            .map_err(|e| self.error(e, "delete", 0))?;
        if !response.succeeded() {
            return match else_get(response.op_responses())? {
                None => Err(StoreError::NotFound(key.to_string())),
                current => Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current,
                }),
            };
        }
        let revision = header_revision(response.header())?;
        for op in response.op_responses() {
            if let TxnOpResponse::Delete(deleted) = op {
                if let Some(prev) = deleted.prev_kvs().first() {
                    return Ok((revision, convert(prev)?));
                }
            }
        }
        Err(StoreError::Backend(
            "etcd: guarded delete succeeded without the deleted value".into(),
        ))
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        // etcd reports a compacted start revision only asynchronously, on the stream.
        // Checking with a tiny read at `after_revision` first gives callers the error from
        // `watch` itself, with the same boundary as the embedded store.
        if after_revision > 0 {
            let probe = GetOptions::new()
                .with_revision(after_revision)
                .with_count_only();
            match self.kv().get(prefix, Some(probe)).await {
                Ok(_) => {}
                Err(e) => match self.error(e, "watch", after_revision) {
                    // Watching from the future is allowed: events arrive when they happen.
                    StoreError::FutureRevision(_) => {}
                    err => return Err(err),
                },
            }
        }
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(after_revision + 1);
        let stream = self
            .client
            .watch_client()
            .watch(prefix, Some(options))
            .await
            .map_err(|e| self.error(e, "watch", after_revision))?;
        let state = WatchState {
            stream,
            queued: VecDeque::new(),
            done: false,
            after_revision,
            compacted: self.compacted.clone(),
        };
        Ok(Box::pin(stream::unfold(state, WatchState::next)))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.kv()
            .compact(revision, None)
            .await
            .map_err(|e| self.error(e, "compact", revision))?;
        self.saw_compaction(revision);
        Ok(())
    }

    async fn current_revision(&self) -> Result<i64> {
        let response = self
            .kv()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| self.error(e, "current revision", 0))?;
        header_revision(response.header())
    }
}

/// Turns etcd's batched watch responses into one event per item.
struct WatchState {
    stream: etcd_client::WatchStream,
    queued: VecDeque<Result<Event>>,
    done: bool,
    after_revision: i64,
    compacted: Arc<AtomicI64>,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<Event>, Self)> {
        loop {
            if let Some(item) = self.queued.pop_front() {
                return Some((item, self));
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(response)) => {
                    if response.canceled() {
                        self.done = true;
                        let compact_revision = response.compact_revision();
                        let err = if compact_revision > 0 {
                            self.compacted.fetch_max(compact_revision, Ordering::AcqRel);
                            StoreError::Compacted {
                                requested: self.after_revision,
                                compacted: compact_revision,
                            }
                        } else {
                            StoreError::Backend(format!(
                                "etcd: watch canceled: {}",
                                response.cancel_reason()
                            ))
                        };
                        self.queued.push_back(Err(err));
                        continue;
                    }
                    for event in response.events() {
                        let item = convert_event(event);
                        if item.is_err() {
                            self.done = true;
                        }
                        self.queued.push_back(item);
                        if self.done {
                            break;
                        }
                    }
                }
                Ok(None) => return None,
                Err(e) => {
                    self.done = true;
                    self.queued
                        .push_back(Err(StoreError::Backend(format!("etcd: watch: {e}"))));
                }
            }
        }
    }
}

fn convert_event(event: &etcd_client::Event) -> Result<Event> {
    let kv = event
        .kv()
        .ok_or_else(|| StoreError::Backend("etcd: watch event without a kv".into()))?;
    let prev = event.prev_kv().map(convert).transpose()?;
    match event.event_type() {
        EventType::Put => Ok(Event::Put {
            kv: convert(kv)?,
            prev,
        }),
        EventType::Delete => {
            let revision = kv.mod_revision();
            let prev = match prev {
                Some(prev) => prev,
                None => {
                    // etcd omits prev_kv when that version was already compacted; the key
                    // is all that is left to report.
                    tracing::warn!(revision, "etcd delete event without its previous value");
                    KeyValue {
                        value: Bytes::new(),
                        create_revision: 0,
                        mod_revision: 0,
                        ..convert(kv)?
                    }
                }
            };
            Ok(Event::Delete { prev, revision })
        }
    }
}
