//! Watch streams: disk replay handed over to live events without gaps or duplicates.
//!
//! Each watch is a task feeding a small bounded channel that the caller's stream reads.
//! The task loops over:
//!
//! 1. subscribe to the hub, learning the committed revision `r0` at that instant;
//! 2. replay events in `(last, r0]` from the `events` table, in chunks;
//! 3. forward live events with revision `> last` until the subscription ends.
//!
//! If the subscription ended because the consumer was too slow (`lagged`), the task goes
//! back to 1 and catches up from disk, which is the source of truth anyway. So a slow
//! consumer never blocks the writer and never grows memory; it only ends with an error if
//! what it still needs has been compacted meanwhile. `last` only moves forward, which is
//! what rules out duplicates.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::stream;
use redb::Database;
use tokio::sync::mpsc;

use super::hub::Hub;
use super::read;
use crate::{Event, Result, StoreError, WatchStream};

/// Events buffered between the watch task and its consumer.
const OUT_CAPACITY: usize = 256;
/// Events replayed per read transaction.
const REPLAY_CHUNK: usize = 512;

pub(crate) fn start(db: Arc<Database>, hub: Arc<Hub>, prefix: String, after: i64) -> WatchStream {
    let (tx, mut rx) = mpsc::channel(OUT_CAPACITY);
    tokio::spawn(run(db, hub, prefix.into_bytes(), after, tx));
    Box::pin(stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

async fn run(
    db: Arc<Database>,
    hub: Arc<Hub>,
    prefix: Vec<u8>,
    mut last: i64,
    out: mpsc::Sender<Result<Event>>,
) {
    loop {
        let Some(mut sub) = hub.subscribe(&prefix) else {
            return; // store shut down
        };
        // Replay what is already on disk.
        while last < sub.revision {
            let chunk = {
                let db = db.clone();
                let prefix = prefix.clone();
                let upto = sub.revision;
                tokio::task::spawn_blocking(move || {
                    read::replay(&db, &prefix, last, upto, REPLAY_CHUNK)
                })
                .await
                .unwrap_or_else(|e| Err(StoreError::Backend(format!("watch replay: {e}"))))
            };
            match chunk {
                Ok((events, through)) => {
                    for event in events {
                        if out.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    last = through;
                }
                Err(err) => {
                    let _ = out.send(Err(err)).await;
                    return;
                }
            }
        }
        // Then live events.
        loop {
            let next = tokio::select! {
                next = sub.events.recv() => next,
                () = out.closed() => return,
            };
            match next {
                Some(event) => {
                    if event.revision() <= last {
                        continue;
                    }
                    last = event.revision();
                    if out.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                None if sub.lagged.load(Ordering::Acquire) => break, // catch up from disk
                None => return,                                      // store shut down
            }
        }
    }
}
