//! When a node program that rewrites its rules from the whole cluster state (the proxy,
//! the NetworkPolicy enforcer) syncs next: at once the first time; then on a change, but
//! no sooner than `min` after the last sync, so a burst of events becomes one sync; after
//! a failure, `min` after it; and at the latest `period` after the last sync.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub struct SyncPacer {
    changed: Arc<Notify>,
    min: Duration,
    period: Duration,
    last: Option<Instant>,
    failed: bool,
}

impl SyncPacer {
    /// `changed` is woken by the watches (see [`crate::watch`]).
    pub fn new(changed: Arc<Notify>, min: Duration, period: Duration) -> SyncPacer {
        SyncPacer {
            changed,
            min,
            period,
            last: None,
            failed: false,
        }
    }

    /// Waits until the next sync is due, and records that it starts now.
    pub async fn wait(&mut self) {
        if let Some(last) = self.last {
            let wake = last + if self.failed { self.min } else { self.period };
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            // Events arriving meanwhile are in the caches when the sync reads them.
            tokio::time::sleep_until(last + self.min).await;
        }
        self.last = Some(Instant::now());
    }

    /// Records how the sync went: a failed one is retried after `min`.
    pub fn done(&mut self, ok: bool) {
        self.failed = !ok;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_wait_for_min_failures_retry_and_quiet_waits_for_period() {
        let changed = Arc::new(Notify::new());
        let min = Duration::from_secs(1);
        let mut pacer = SyncPacer::new(changed.clone(), min, Duration::from_secs(30));
        let start = Instant::now();
        pacer.wait().await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the first sync at once");
        pacer.done(true);
        changed.notify_one();
        pacer.wait().await;
        assert_eq!(start.elapsed(), min, "a change waits out the minimum");
        pacer.done(false);
        pacer.wait().await;
        assert_eq!(
            start.elapsed(),
            2 * min,
            "a failure is retried after the minimum"
        );
        pacer.done(true);
        pacer.wait().await;
        assert_eq!(
            start.elapsed(),
            2 * min + Duration::from_secs(30),
            "quiet: the period"
        );
    }
}
