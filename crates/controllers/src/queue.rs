//! The rate-limited work queue of object keys, as upstream's `workqueue` package has it.
//!
//! Guarantees a controller relies on:
//! - a key queued twice before a worker takes it is processed once (dedup);
//! - a key is never handed to two workers at once: a key added while it is being processed
//!   is queued again only when the worker calls [`WorkQueue::done`];
//! - failures back off per key exponentially (5ms doubling up to 1000s), and all retries
//!   together are held to an overall token bucket (10/s, burst 100): upstream's
//!   `DefaultControllerRateLimiter`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::metrics::QueueMetrics;

/// Per-key exponential back-off combined with an overall token bucket; the longer of the
/// two delays wins.
#[derive(Debug)]
pub struct RateLimiter {
    base: Duration,
    max: Duration,
    failures: HashMap<String, u32>,
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
            10.0,
            100,
        )
    }
}

impl RateLimiter {
    pub fn new(base: Duration, max: Duration, qps: f64, burst: u32) -> Self {
        RateLimiter {
            base,
            max,
            failures: HashMap::new(),
            qps,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: None,
        }
    }

    /// The delay before `key` may be retried; counts one more failure for it.
    pub fn when(&mut self, key: &str, now: Instant) -> Duration {
        let failures = self.failures.entry(key.to_string()).or_insert(0);
        let exponent = (*failures).min(62);
        *failures = failures.saturating_add(1);
        let per_item = if exponent >= 32 {
            self.max
        } else {
            self.base
                .checked_mul(1u32 << exponent)
                .map_or(self.max, |d| d.min(self.max))
        };
        per_item.max(self.bucket_delay(now))
    }

    /// Reserves one token; the wait until that token exists.
    fn bucket_delay(&mut self, now: Instant) -> Duration {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        }
        self.last = Some(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }

    /// Clears a key's failure count (after a successful sync).
    pub fn forget(&mut self, key: &str) {
        self.failures.remove(key);
    }

    pub fn num_requeues(&self, key: &str) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    /// Keys that need processing (queued, or re-added while being processed).
    dirty: HashSet<String>,
    /// When each dirty key became due, for the time it waits for a worker.
    due_since: HashMap<String, Instant>,
    /// Keys being processed and since when.
    processing: HashMap<String, Instant>,
    /// Delayed keys and when they become ready (the earliest wins).
    waiting: HashMap<String, Instant>,
    shutting_down: bool,
    limiter: RateLimiter,
}

/// A queue of keys (`namespace/name`, or `name` for cluster-scoped objects).
pub struct WorkQueue {
    name: String,
    state: Mutex<State>,
    notify: Notify,
    me: Weak<WorkQueue>,
    /// Unset for queues made outside a controller manager (unit tests).
    metrics: Option<QueueMetrics>,
}

impl WorkQueue {
    pub fn new(name: &str) -> Arc<WorkQueue> {
        WorkQueue::with_limiter(name, RateLimiter::default())
    }

    pub fn with_limiter(name: &str, limiter: RateLimiter) -> Arc<WorkQueue> {
        WorkQueue::build(name, limiter, None)
    }

    /// A queue whose adds, depth, latencies and retries `metrics` records.
    pub fn with_metrics(name: &str, metrics: QueueMetrics) -> Arc<WorkQueue> {
        WorkQueue::build(name, RateLimiter::default(), Some(metrics))
    }

    fn build(name: &str, limiter: RateLimiter, metrics: Option<QueueMetrics>) -> Arc<WorkQueue> {
        Arc::new_cyclic(|me| WorkQueue {
            name: name.to_string(),
            state: Mutex::new(State {
                limiter,
                ..State::default()
            }),
            notify: Notify::new(),
            me: me.clone(),
            metrics,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain collections behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a key now, unless it is already queued.
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut state = self.lock();
        if state.shutting_down || state.dirty.contains(&key) {
            return;
        }
        state.dirty.insert(key.clone());
        state.due_since.insert(key.clone(), Instant::now());
        if let Some(metrics) = &self.metrics {
            metrics.added();
        }
        if state.processing.contains_key(&key) {
            return;
        }
        state.queue.push_back(key);
        drop(state);
        self.notify.notify_one();
    }

    /// Queues a key after a delay; a key already waiting keeps the earlier time.
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            return self.add(key);
        }
        let ready = Instant::now() + delay;
        {
            let mut state = self.lock();
            if state.shutting_down {
                return;
            }
            if state.waiting.get(&key).is_some_and(|at| *at <= ready) {
                return;
            }
            state.waiting.insert(key.clone(), ready);
        }
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(ready).await;
            let Some(queue) = me.upgrade() else { return };
            let due = {
                let mut state = queue.lock();
                if state.waiting.get(&key) == Some(&ready) {
                    state.waiting.remove(&key);
                    true
                } else {
                    false
                }
            };
            if due {
                queue.add(key);
            }
        });
    }

    /// Queues a key after its rate-limited back-off.
    pub fn add_rate_limited(&self, key: impl Into<String>) {
        let key = key.into();
        if let Some(metrics) = &self.metrics {
            metrics.retried();
        }
        let delay = self.lock().limiter.when(&key, Instant::now());
        self.add_after(key, delay);
    }

    /// Ends a key's back-off (its sync succeeded).
    pub fn forget(&self, key: &str) {
        self.lock().limiter.forget(key);
    }

    pub fn num_requeues(&self, key: &str) -> u32 {
        self.lock().limiter.num_requeues(key)
    }

    /// Waits for a key; `None` once the queue shuts down. The caller owns the key until it
    /// calls [`WorkQueue::done`].
    pub async fn get(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(key) = state.queue.pop_front() {
                    state.dirty.remove(&key);
                    let now = Instant::now();
                    let due_since = state.due_since.remove(&key).unwrap_or(now);
                    if let Some(metrics) = &self.metrics {
                        metrics.taken(now.saturating_duration_since(due_since));
                    }
                    state.processing.insert(key.clone(), now);
                    let more = !state.queue.is_empty();
                    drop(state);
                    if more {
                        // Pass the wake-up on: one notify may have covered several adds.
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
                if state.shutting_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks a key processed; if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &str) {
        let mut state = self.lock();
        let started = state.processing.remove(key);
        if let (Some(metrics), Some(started)) = (&self.metrics, started) {
            metrics.finished(started.elapsed());
        }
        if state.dirty.contains(key) {
            state.queue.push_back(key.to_string());
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Wakes every waiting worker with `None`; later adds are ignored.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.notify.notify_waiters();
    }

    /// Keys queued and not yet taken.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_per_item_capped() {
        let mut limiter = RateLimiter::new(
            Duration::from_millis(5),
            Duration::from_secs(1000),
            1e9,
            u32::MAX,
        );
        let now = Instant::now();
        let delays: Vec<_> = (0..5).map(|_| limiter.when("a", now)).collect();
        assert_eq!(
            delays,
            [5, 10, 20, 40, 80].map(Duration::from_millis).to_vec()
        );
        // Another key starts from the base.
        assert_eq!(limiter.when("b", now), Duration::from_millis(5));
        for _ in 0..100 {
            limiter.when("a", now);
        }
        assert_eq!(limiter.when("a", now), Duration::from_secs(1000));
        assert_eq!(limiter.num_requeues("b"), 1);
        limiter.forget("a");
        assert_eq!(limiter.when("a", now), Duration::from_millis(5));
    }

    #[test]
    fn overall_bucket_limits_bursts() {
        let mut limiter = RateLimiter::new(Duration::ZERO, Duration::ZERO, 10.0, 100);
        let now = Instant::now();
        for i in 0..100 {
            assert_eq!(limiter.when(&format!("k{i}"), now), Duration::ZERO);
        }
        // The 101st retry waits for one token at 10/s.
        assert_eq!(limiter.when("k100", now), Duration::from_millis(100));
        assert_eq!(limiter.when("k101", now), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn dedup_and_no_concurrent_processing() {
        let queue = WorkQueue::new("test");
        queue.add("a");
        queue.add("a");
        queue.add("b");
        assert_eq!(queue.len(), 2);
        let first = queue.get().await;
        assert_eq!(first.as_deref(), Some("a"));
        // Re-added while processing: not handed out again until done.
        queue.add("a");
        assert_eq!(queue.get().await.as_deref(), Some("b"));
        assert!(queue.is_empty());
        queue.done("b");
        queue.done("a");
        assert_eq!(queue.get().await.as_deref(), Some("a"));
        queue.done("a");
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_keeps_the_earliest_time() {
        let queue = WorkQueue::new("test");
        queue.add_after("a", Duration::from_secs(10));
        queue.add_after("a", Duration::from_secs(5));
        queue.add_after("a", Duration::from_secs(20));
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.get().await.as_deref(), Some("a"));
        queue.done("a");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_requeue_backs_off() {
        let queue = WorkQueue::new("test");
        queue.add_rate_limited("a");
        assert!(queue.is_empty());
        tokio::time::sleep(Duration::from_millis(6)).await;
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.num_requeues("a"), 1);
        queue.forget("a");
        assert_eq!(queue.num_requeues("a"), 0);
    }

    #[tokio::test]
    async fn shut_down_wakes_workers() {
        let queue = WorkQueue::new("test");
        let worker = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.get().await })
        };
        tokio::task::yield_now().await;
        queue.shut_down();
        assert_eq!(worker.await.ok().flatten(), None);
        queue.add("x");
        assert!(queue.is_empty());
    }
}
