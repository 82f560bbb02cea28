//! Expectations: what a controller has asked the API server to create or delete and not
//! yet seen in its informer. Until they are met, the controller does not act on its
//! (stale) cache again, so a burst of watch events never creates or deletes pods twice.
//! As upstream's `UIDTrackingControllerExpectations`: creations are counted, deletions are
//! tracked by pod key (a pod's deletion is counted once, however many events report it).
//! Expectations expire after five minutes, in case an event is lost for good.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// How long unmet expectations hold a controller back.
pub const EXPECTATIONS_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    add: i64,
    del: i64,
    deleting: HashSet<String>,
    since: Instant,
}

#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    pub fn new() -> Expectations {
        Expectations::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Expectation>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the controller of `key` may trust its cache and act.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.add <= 0 && e.del <= 0) || e.since.elapsed() > EXPECTATIONS_TTL,
        }
    }

    /// Expects `count` creations (replacing what was expected).
    pub fn expect_creations(&self, key: &str, count: usize) {
        self.lock().insert(
            key.to_string(),
            Expectation {
                add: i64::try_from(count).unwrap_or(i64::MAX),
                del: 0,
                deleting: HashSet::new(),
                since: Instant::now(),
            },
        );
    }

    /// Expects the deletion of these pods (keys `namespace/name`).
    pub fn expect_deletions(&self, key: &str, pods: Vec<String>) {
        let deleting: HashSet<String> = pods.into_iter().collect();
        self.lock().insert(
            key.to_string(),
            Expectation {
                add: 0,
                del: i64::try_from(deleting.len()).unwrap_or(i64::MAX),
                deleting,
                since: Instant::now(),
            },
        );
    }

    /// A pod the controller created was seen (or its creation failed or was skipped).
    pub fn creation_observed(&self, key: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            e.add -= 1;
        }
    }

    /// A pod was seen deleted (or marked for deletion), or its deletion failed.
    pub fn deletion_observed(&self, key: &str, pod: &str) {
        if let Some(e) = self.lock().get_mut(key) {
            if e.deleting.remove(pod) {
                e.del -= 1;
            }
        }
    }

    /// Forgets a controller's expectations (it was deleted).
    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creations_must_all_be_observed() {
        let e = Expectations::new();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
    }

    #[tokio::test]
    async fn deletions_count_once_per_pod() {
        let e = Expectations::new();
        e.expect_deletions("ns/rs", vec!["ns/a".into(), "ns/b".into()]);
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/other");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs", "ns/b");
        assert!(e.satisfied("ns/rs"));
    }

    #[tokio::test(start_paused = true)]
    async fn expectations_expire() {
        let e = Expectations::new();
        e.expect_creations("ns/rs", 1);
        tokio::time::advance(EXPECTATIONS_TTL + Duration::from_secs(1)).await;
        assert!(e.satisfied("ns/rs"));
    }
}
