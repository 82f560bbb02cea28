//! Live fan-out of committed events to watchers.
//!
//! The writer publishes each committed batch under the hub's lock and advances
//! `committed` under the same lock. A watcher subscribes under that lock too, so the
//! revision it reads at subscription (`r0`) splits history cleanly: everything `<= r0` is
//! on disk (the commit happened before the publish), everything `> r0` arrives on the
//! subscription channel. That is what makes replay + live free of gaps and duplicates.
//!
//! Publishing never blocks: each subscriber has a bounded channel, and a subscriber whose
//! channel is full is dropped and flagged `lagged`. Its watch task then resubscribes and
//! catches up from disk (see [`super::watch`]), so a slow consumer costs neither memory
//! nor writer latency.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::Event;

/// Events buffered per live subscriber before it is considered lagging.
pub(crate) const SUBSCRIBER_CAPACITY: usize = 1024;

pub(crate) struct Subscription {
    pub(crate) events: mpsc::Receiver<Event>,
    /// Set when the hub dropped this subscriber because its buffer was full.
    pub(crate) lagged: Arc<AtomicBool>,
    /// Newest committed revision at subscription time.
    pub(crate) revision: i64,
}

struct Subscriber {
    prefix: Vec<u8>,
    tx: mpsc::Sender<Event>,
    lagged: Arc<AtomicBool>,
}

struct Inner {
    subscribers: Vec<Subscriber>,
    closed: bool,
}

pub(crate) struct Hub {
    inner: Mutex<Inner>,
    /// Newest committed revision; readable without the lock.
    committed: AtomicI64,
}

impl Hub {
    pub(crate) fn new(revision: i64) -> Self {
        Hub {
            inner: Mutex::new(Inner {
                subscribers: Vec::new(),
                closed: false,
            }),
            committed: AtomicI64::new(revision),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the subscriber list consistent (it is
        // only pushed to or retained), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn committed(&self) -> i64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Registers a live subscriber; `None` once the store has shut down.
    pub(crate) fn subscribe(&self, prefix: &[u8]) -> Option<Subscription> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CAPACITY);
        let lagged = Arc::new(AtomicBool::new(false));
        inner.subscribers.push(Subscriber {
            prefix: prefix.to_vec(),
            tx,
            lagged: lagged.clone(),
        });
        Some(Subscription {
            events: rx,
            lagged,
            revision: self.committed(),
        })
    }

    /// Called by the writer after a commit: advances the committed revision and hands the
    /// batch's events (in revision order) to every matching subscriber.
    pub(crate) fn publish(&self, revision: i64, events: &[Event]) {
        let mut inner = self.lock();
        self.committed.store(revision, Ordering::Release);
        if events.is_empty() || inner.subscribers.is_empty() {
            return;
        }
        inner.subscribers.retain(|sub| {
            // Watches that went away are dropped here, whether or not this batch matches.
            if sub.tx.is_closed() {
                return false;
            }
            for event in events {
                if !event.key().as_bytes().starts_with(&sub.prefix) {
                    continue;
                }
                match sub.tx.try_send(event.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!(
                            prefix = %String::from_utf8_lossy(&sub.prefix),
                            "watcher fell behind; it will catch up from disk"
                        );
                        sub.lagged.store(true, Ordering::Release);
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    /// Ends every live subscription (the store is shutting down).
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.subscribers.clear();
    }

    /// Live subscribers (for tests of the fan-out bookkeeping).
    #[cfg(test)]
    pub(crate) fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }
}
