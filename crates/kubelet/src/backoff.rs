//! Upstream's per-container restart back-off (`flowcontrol.Backoff` as the
//! kubelet configures it): 10 s doubling to 5 min, measured from the moment
//! the container last finished; an entry idle for twice the maximum is
//! forgotten, so a container that stayed up long enough starts over at 10 s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    last_update: Instant,
}

#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL, MAX)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    /// The time left to wait if `key` is still backing off after an event
    /// (the container's exit) at `event`.
    pub fn remaining(&self, key: &str, event: Instant, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if now.saturating_duration_since(e.last_update) > self.max * 2 {
            return None;
        }
        let elapsed = now.saturating_duration_since(event);
        (elapsed < e.delay).then(|| e.delay - elapsed)
    }

    /// Records a restart: the first waits `initial`, each next one twice as
    /// long, up to `max`.
    pub fn next(&mut self, key: &str, now: Instant) -> Duration {
        let delay = match self.entries.get(key) {
            Some(e) if now.saturating_duration_since(e.last_update) <= self.max * 2 => {
                (e.delay * 2).min(self.max)
            }
            _ => self.initial,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                delay,
                last_update: now,
            },
        );
        delay
    }

    /// The current delay of `key`, for messages.
    pub fn delay(&self, key: &str) -> Duration {
        self.entries.get(key).map_or(self.initial, |e| e.delay)
    }

    pub fn forget_prefix(&mut self, prefix: &str) {
        self.entries.retain(|k, _| !k.starts_with(prefix));
    }
}

/// Formats a delay as Go's `time.Duration` does for whole seconds and
/// minutes (`10s`, `1m20s`, `5m0s`), as in upstream's back-off messages.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_maximum_and_resets_after_idling() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert_eq!(b.remaining("c", t0, t0), None, "first restart is immediate");
        let delays: Vec<u64> = (0..7)
            .map(|i| b.next("c", t0 + Duration::from_secs(i)).as_secs())
            .collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
        let exit = t0 + Duration::from_secs(10);
        assert_eq!(
            b.remaining("c", exit, exit + Duration::from_secs(100)),
            Some(Duration::from_secs(200))
        );
        assert_eq!(
            b.remaining("c", exit, exit + Duration::from_secs(301)),
            None
        );
        // Idle for more than twice the maximum: starts over.
        let later = t0 + Duration::from_secs(1000);
        assert_eq!(b.remaining("c", later, later), None);
        assert_eq!(b.next("c", later), INITIAL);
    }

    #[test]
    fn go_style_durations() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}
