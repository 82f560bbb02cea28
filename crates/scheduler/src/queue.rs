//! The scheduling queue, as upstream's `PriorityQueue`: an active heap (higher priority
//! first, then first come), a backoff heap (pods wait 1s, 2s, 4s … up to 10s after each
//! failed attempt) and the unschedulable pods, which wait for a cluster event that could
//! help them (or five minutes) before they go back.
//!
//! Methods that depend on time take `now`, so the rules are unit-tested without sleeping.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::cache::PodInfo;
use crate::framework::ClusterEvent;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's `podMaxInUnschedulablePodsDuration`.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// A pod handed out by [`SchedulingQueue::pop`].
#[derive(Debug, Clone)]
pub struct QueuedPod {
    pub info: Arc<PodInfo>,
    /// Scheduling attempts so far, this one included.
    pub attempts: u32,
    /// The scheduling cycle this attempt belongs to.
    pub cycle: u64,
    /// When the pod first entered the queue (for the latency metric).
    pub first_seen: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    info: Arc<PodInfo>,
    place: Where,
    /// Bumped whenever the entry moves, so stale heap items are recognised and skipped.
    seq: u64,
    attempts: u32,
    first_seen: Instant,
    last_attempt: Option<Instant>,
    unschedulable_since: Instant,
    unschedulable_plugins: BTreeSet<&'static str>,
    /// Set when the pod was updated while in flight: its next failure goes to backoff.
    updated_in_flight: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    seq: u64,
    key: String,
}

impl Ord for ActiveItem {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: higher priority first, then lower sequence (earlier arrival).
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Default)]
struct Inner {
    pods: HashMap<String, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    seq: u64,
    cycle: u64,
    /// The cycle at which the last move request happened: pods that failed in a cycle
    /// that began before it may have missed the event, so they go to backoff instead.
    move_request_cycle: u64,
    closed: bool,
}

/// Upstream's backoff: initial × 2^(attempts-1), capped.
pub fn backoff_duration(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d *= 2;
        if d > MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d
}

impl Inner {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn move_to_active(&mut self, key: &str) {
        let seq = self.next_seq();
        if let Some(e) = self.pods.get_mut(key) {
            e.place = Where::Active;
            e.seq = seq;
            self.active.push(ActiveItem {
                priority: e.info.priority,
                seq,
                key: key.to_string(),
            });
        }
    }

    fn move_to_backoff(&mut self, key: &str, now: Instant) {
        let seq = self.next_seq();
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        let expiry = e.last_attempt.unwrap_or(now) + backoff_duration(e.attempts);
        if expiry <= now {
            self.move_to_active(key);
            return;
        }
        e.place = Where::Backoff;
        e.seq = seq;
        self.backoff.push(Reverse((expiry, seq, key.to_string())));
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((expiry, seq, key))) = self.backoff.peek().cloned() {
            if expiry > now {
                break;
            }
            self.backoff.pop();
            if self
                .pods
                .get(&key)
                .is_some_and(|e| e.seq == seq && e.place == Where::Backoff)
            {
                self.move_to_active(&key);
            }
        }
    }

    fn next_backoff_expiry(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((at, _, _))| *at)
    }
}

/// The queue of pods waiting to be scheduled. Shared between the informers (which add,
/// update and delete pods and report cluster events) and the scheduling loop.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl SchedulingQueue {
    pub fn new() -> SchedulingQueue {
        SchedulingQueue::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the queue half-updated in a way
        // that matters more than stopping would, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new (or changed) pending pod.
    pub fn add_or_update(&self, info: Arc<PodInfo>, now: Instant) {
        let mut q = self.lock();
        let key = info.key.clone();
        match q.pods.get_mut(&key) {
            None => {
                q.pods.insert(
                    key.clone(),
                    Entry {
                        info,
                        place: Where::Active,
                        seq: 0,
                        attempts: 0,
                        first_seen: now,
                        last_attempt: None,
                        unschedulable_since: now,
                        unschedulable_plugins: BTreeSet::new(),
                        updated_in_flight: false,
                    },
                );
                q.move_to_active(&key);
            }
            Some(e) => {
                let spec_changed = e.info.pod.spec != info.pod.spec
                    || e.info.pod.metadata.labels != info.pod.metadata.labels;
                e.info = info;
                match e.place {
                    Where::Unschedulable if spec_changed => q.move_to_backoff(&key, now),
                    Where::InFlight if spec_changed => e.updated_in_flight = true,
                    Where::Active => {
                        // Re-push so a priority change takes effect; the old item goes stale.
                        q.move_to_active(&key);
                    }
                    _ => {}
                }
            }
        }
        drop(q);
        self.notify.notify_one();
    }

    pub fn delete(&self, key: &str) {
        self.lock().pods.remove(key);
    }

    /// The keys of every pod the queue holds.
    pub fn keys(&self) -> Vec<String> {
        self.lock().pods.keys().cloned().collect()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.lock().pods.contains_key(key)
    }

    /// The next pod to schedule, if one is ready now.
    pub fn try_pop(&self, now: Instant) -> Option<QueuedPod> {
        let mut q = self.lock();
        q.flush_backoff(now);
        while let Some(item) = q.active.pop() {
            q.cycle += 1;
            let cycle = q.cycle;
            let Some(e) = q.pods.get_mut(&item.key) else {
                continue;
            };
            if e.seq != item.seq || e.place != Where::Active {
                continue;
            }
            e.place = Where::InFlight;
            e.attempts += 1;
            e.last_attempt = Some(now);
            e.updated_in_flight = false;
            return Some(QueuedPod {
                info: e.info.clone(),
                attempts: e.attempts,
                cycle,
                first_seen: e.first_seen,
            });
        }
        None
    }

    /// Waits for the next pod; `None` once the queue is closed.
    pub async fn pop(&self) -> Option<QueuedPod> {
        loop {
            let notified = self.notify.notified();
            let wait = {
                let now = Instant::now();
                if let Some(p) = self.try_pop(now) {
                    return Some(p);
                }
                let q = self.lock();
                if q.closed {
                    return None;
                }
                q.next_backoff_expiry()
                    .map(|at| at.saturating_duration_since(now))
                    .unwrap_or(Duration::from_secs(1))
            };
            let _ = tokio::time::timeout(wait, notified).await;
        }
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// The pod was bound (or vanished): forget it.
    pub fn done(&self, key: &str) {
        self.lock().pods.remove(key);
    }

    /// The attempt failed. `plugins` are the ones that rejected it; an empty set means an
    /// error, which always goes to backoff.
    pub fn requeue(&self, pod: &QueuedPod, plugins: BTreeSet<&'static str>, now: Instant) {
        let mut q = self.lock();
        let key = pod.info.key.clone();
        let move_cycle = q.move_request_cycle;
        let Some(e) = q.pods.get_mut(&key) else {
            return;
        };
        if e.place != Where::InFlight {
            return;
        }
        let missed_event = move_cycle >= pod.cycle || e.updated_in_flight;
        if plugins.is_empty() || missed_event {
            e.unschedulable_plugins = plugins;
            q.move_to_backoff(&key, now);
        } else {
            e.unschedulable_plugins = plugins;
            e.place = Where::Unschedulable;
            e.unschedulable_since = now;
        }
        drop(q);
        self.notify.notify_one();
    }

    /// A cluster event: unschedulable pods rejected by a plugin that cares about it move
    /// to backoff (or straight to active if their backoff is over).
    pub fn on_event(
        &self,
        event: ClusterEvent,
        interested: impl Fn(&'static str) -> bool,
        now: Instant,
    ) {
        let mut q = self.lock();
        q.move_request_cycle = q.cycle;
        let keys: Vec<String> = q
            .pods
            .iter()
            .filter(|(_, e)| {
                e.place == Where::Unschedulable
                    && (e.unschedulable_plugins.is_empty()
                        || e.unschedulable_plugins.iter().any(|p| interested(p)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let moved = !keys.is_empty();
        for key in keys {
            q.move_to_backoff(&key, now);
        }
        drop(q);
        if moved {
            tracing::debug!(?event, "moved unschedulable pods back to the queue");
            self.notify.notify_one();
        }
    }

    /// Pods unschedulable for longer than [`MAX_UNSCHEDULABLE`] get another try.
    pub fn flush_unschedulable(&self, now: Instant) {
        let mut q = self.lock();
        let keys: Vec<String> = q
            .pods
            .iter()
            .filter(|(_, e)| {
                e.place == Where::Unschedulable
                    && now.saturating_duration_since(e.unschedulable_since) >= MAX_UNSCHEDULABLE
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            q.move_to_backoff(&key, now);
        }
        drop(q);
        self.notify.notify_one();
    }

    /// (active, backoff, unschedulable, in flight) counts, for tests and metrics.
    pub fn lengths(&self) -> (usize, usize, usize, usize) {
        let q = self.lock();
        let count = |w: Where| q.pods.values().filter(|e| e.place == w).count();
        (
            count(Where::Active),
            count(Where::Backoff),
            count(Where::Unschedulable),
            count(Where::InFlight),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::pod_with;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(pod_with(name, json!({}), json!({"priority": priority})))
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        let secs: Vec<u64> = (1..=6).map(|a| backoff_duration(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn priority_then_arrival() {
        let q = SchedulingQueue::new();
        let now = Instant::now();
        q.add_or_update(pod("low", 0), now);
        q.add_or_update(pod("high", 100), now);
        q.add_or_update(pod("low2", 0), now);
        q.add_or_update(pod("high2", 100), now);
        let order: Vec<String> = std::iter::from_fn(|| q.try_pop(now))
            .map(|p| p.info.key.clone())
            .collect();
        assert_eq!(
            order,
            [
                "default/high",
                "default/high2",
                "default/low",
                "default/low2"
            ]
        );
    }

    #[test]
    fn unschedulable_pods_wait_for_a_relevant_event_then_backoff() {
        let q = SchedulingQueue::new();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0), t0);
        let p = q.try_pop(t0).expect("pod");
        q.requeue(&p, BTreeSet::from(["NodeResourcesFit"]), t0);
        assert_eq!(q.lengths(), (0, 0, 1, 0));
        // An event no rejecting plugin cares about leaves it where it is.
        q.on_event(ClusterEvent::NodeAdd, |p| p == "TaintToleration", t0);
        assert_eq!(q.lengths(), (0, 0, 1, 0));
        q.on_event(ClusterEvent::NodeAdd, |p| p == "NodeResourcesFit", t0);
        assert_eq!(
            q.lengths(),
            (0, 1, 0, 0),
            "still backing off (1s after the attempt)"
        );
        assert!(q.try_pop(t0 + Duration::from_millis(500)).is_none());
        let p = q
            .try_pop(t0 + Duration::from_secs(1))
            .expect("backoff over");
        assert_eq!(p.attempts, 2);
    }

    #[test]
    fn an_event_during_the_attempt_sends_the_pod_to_backoff() {
        let q = SchedulingQueue::new();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0), t0);
        let p = q.try_pop(t0).expect("pod");
        q.on_event(ClusterEvent::NodeAdd, |_| true, t0);
        q.requeue(&p, BTreeSet::from(["NodeResourcesFit"]), t0);
        assert_eq!(q.lengths(), (0, 1, 0, 0));
    }

    #[test]
    fn errors_back_off_and_long_waiters_are_flushed() {
        let q = SchedulingQueue::new();
        let t0 = Instant::now();
        q.add_or_update(pod("p", 0), t0);
        q.add_or_update(pod("u", 0), t0);
        let p = q.try_pop(t0).expect("pod");
        let u = q.try_pop(t0).expect("pod");
        q.requeue(&p, BTreeSet::new(), t0);
        q.requeue(&u, BTreeSet::from(["NodeAffinity"]), t0);
        assert_eq!(q.lengths(), (0, 1, 1, 0));
        q.flush_unschedulable(t0 + MAX_UNSCHEDULABLE);
        // The unschedulable pod's backoff is over; the erroring one's is not.
        assert_eq!(q.lengths(), (1, 1, 0, 0));
    }

    #[test]
    fn deleted_pods_leave_stale_heap_items_behind_harmlessly() {
        let q = SchedulingQueue::new();
        let t0 = Instant::now();
        q.add_or_update(pod("a", 0), t0);
        q.add_or_update(pod("b", 0), t0);
        q.delete("default/a");
        assert_eq!(
            q.try_pop(t0).map(|p| p.info.key.clone()),
            Some("default/b".into())
        );
        assert!(q.try_pop(t0).is_none());
    }
}
