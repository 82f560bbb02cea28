//! From the replica count the metrics ask for to the one the autoscaler sets, as upstream
//! normalizes it: stabilization against recent recommendations, then the scaling rate
//! limits, then `minReplicas`/`maxReplicas`, with the reasons the `AbleToScale` and
//! `ScalingLimited` conditions report.
//!
//! Two paths, as upstream's: an autoscaler without `spec.behavior` uses the controller's
//! downscale stabilization window alone and scales up at most to twice its size (or 4);
//! one with `behavior` (which the API server completes with upstream's defaults) uses
//! both directions' windows and their policies, measured against the scale events this
//! controller made within each policy's period.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// Upstream's `--horizontal-pod-autoscaler-downscale-stabilization`.
pub const DOWNSCALE_STABILIZATION_SECONDS: i64 = 300;

/// How a direction picks among its policies' limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Select {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Pods,
    Percent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Policy {
    change: Change,
    value: i32,
    period_seconds: i64,
}

/// One direction's rules, with upstream's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
struct Rules {
    window_seconds: i64,
    select: Select,
    policies: Vec<Policy>,
}

impl Rules {
    /// `rules` completed with `default`'s policies and selection.
    fn from_spec(rules: Option<&HPAScalingRules>, default: Rules) -> Rules {
        let Some(rules) = rules else { return default };
        Rules {
            window_seconds: rules
                .stabilization_window_seconds
                .map_or(default.window_seconds, i64::from),
            select: match rules.select_policy.as_deref() {
                Some("Min") => Select::Min,
                Some("Disabled") => Select::Disabled,
                Some(_) => Select::Max,
                None => default.select,
            },
            policies: match &rules.policies {
                Some(policies) => policies
                    .iter()
                    .map(|p| Policy {
                        change: if p.type_ == "Percent" {
                            Change::Percent
                        } else {
                            Change::Pods
                        },
                        value: p.value,
                        period_seconds: i64::from(p.period_seconds),
                    })
                    .collect(),
                None => default.policies,
            },
        }
    }
}

/// Both directions of an autoscaler's `spec.behavior`.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    up: Rules,
    down: Rules,
}

impl Behavior {
    /// Upstream's defaults for what `behavior` leaves out: scale up by 4 pods or 100 %
    /// per 15 s (whichever is more) without a window; scale down by up to 100 % per 15 s
    /// after the controller's 300 s window.
    pub fn from_spec(behavior: &HorizontalPodAutoscalerBehavior) -> Behavior {
        let up = Rules {
            window_seconds: 0,
            select: Select::Max,
            policies: vec![
                Policy {
                    change: Change::Pods,
                    value: 4,
                    period_seconds: 15,
                },
                Policy {
                    change: Change::Percent,
                    value: 100,
                    period_seconds: 15,
                },
            ],
        };
        let down = Rules {
            window_seconds: DOWNSCALE_STABILIZATION_SECONDS,
            select: Select::Max,
            policies: vec![Policy {
                change: Change::Percent,
                value: 100,
                period_seconds: 15,
            }],
        };
        Behavior {
            up: Rules::from_spec(behavior.scale_up.as_ref(), up),
            down: Rules::from_spec(behavior.scale_down.as_ref(), down),
        }
    }

    fn longest_period(rules: &Rules) -> i64 {
        rules
            .policies
            .iter()
            .map(|p| p.period_seconds)
            .max()
            .unwrap_or(0)
    }
}

/// A change this controller made to the target, for the policies' periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScaleEvent {
    at: Timestamp,
    replicas: i32,
}

/// What the autoscaler remembers between evaluations (upstream keeps it in memory too:
/// a restarted controller starts with an empty history).
#[derive(Debug, Default, Clone)]
pub struct History {
    recommendations: Vec<(Timestamp, i32)>,
    scale_ups: Vec<ScaleEvent>,
    scale_downs: Vec<ScaleEvent>,
}

impl History {
    /// Records `recommended`, reusing the slot of one older than every window, as
    /// upstream does (the history never outgrows the evaluations within a window).
    fn record(&mut self, now: Timestamp, recommended: i32, oldest_kept: Timestamp) {
        match self
            .recommendations
            .iter()
            .rposition(|(at, _)| *at < oldest_kept)
        {
            Some(old) => self.recommendations[old] = (now, recommended),
            None => self.recommendations.push((now, recommended)),
        }
    }

    /// Remembers a rescale from `from` to `to` replicas; only autoscalers with
    /// `behavior` use them. Events older than their direction's longest period are
    /// replaced, so the list stays as short as the periods need.
    pub fn rescaled(&mut self, behavior: Option<&Behavior>, now: Timestamp, from: i32, to: i32) {
        let Some(behavior) = behavior else { return };
        let (events, rules, replicas) = if to > from {
            (&mut self.scale_ups, &behavior.up, to - from)
        } else {
            (&mut self.scale_downs, &behavior.down, from - to)
        };
        let cutoff = now - SignedDuration::from_secs(Behavior::longest_period(rules));
        let event = ScaleEvent { at: now, replicas };
        match events.iter().rposition(|e| e.at <= cutoff) {
            Some(old) => events[old] = event,
            None => events.push(event),
        }
    }
}

/// The replicas added (or removed) by `events` within the last `period_seconds`.
fn changed_within(events: &[ScaleEvent], now: Timestamp, period_seconds: i64) -> i32 {
    let cutoff = now - SignedDuration::from_secs(period_seconds);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.replicas)
        .sum()
}

/// A condition's status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: bool,
    pub reason: &'static str,
    pub message: &'static str,
}

const fn verdict(status: bool, reason: &'static str, message: &'static str) -> Verdict {
    Verdict {
        status,
        reason,
        message,
    }
}

const READY_FOR_NEW_SCALE: Verdict = verdict(
    true,
    "ReadyForNewScale",
    "recommended size matches current size",
);
const SCALE_UP_STABILIZED: Verdict = verdict(
    true,
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const SCALE_DOWN_STABILIZED: Verdict = verdict(
    true,
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const WITHIN_RANGE: Verdict = verdict(
    false,
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const SCALE_UP_LIMIT: &str =
    "the desired replica count is increasing faster than the maximum scale rate";
const SCALE_DOWN_LIMIT: &str =
    "the desired replica count is decreasing faster than the maximum scale rate";
const TOO_MANY: &str = "the desired replica count is more than the maximum replica count";
const TOO_FEW: &str = "the desired replica count is less than the minimum replica count";

/// The outcome of normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    /// The `AbleToScale` condition's verdict on stabilization.
    pub able_to_scale: Verdict,
    /// The `ScalingLimited` condition's verdict on the rate and range limits.
    pub scaling_limited: Verdict,
}

/// The target's bounds and size as this evaluation found them.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub current: i32,
    pub min: i32,
    pub max: i32,
}

/// Normalizes `recommended` (what the metrics ask for) at `now`.
pub fn normalize(
    history: &mut History,
    behavior: Option<&Behavior>,
    now: Timestamp,
    bounds: Bounds,
    recommended: i32,
) -> Normalized {
    match behavior {
        None => normalize_default(history, now, bounds, recommended),
        Some(behavior) => normalize_with_behavior(history, behavior, now, bounds, recommended),
    }
}

/// Without `behavior`: the highest recommendation of the downscale window, then at most
/// twice the current size (or 4) and within min/max.
fn normalize_default(
    history: &mut History,
    now: Timestamp,
    bounds: Bounds,
    recommended: i32,
) -> Normalized {
    let cutoff = now - SignedDuration::from_secs(DOWNSCALE_STABILIZATION_SECONDS);
    let stabilized = history
        .recommendations
        .iter()
        .filter(|(at, _)| *at >= cutoff)
        .map(|(_, r)| *r)
        .fold(recommended, i32::max);
    history.record(now, recommended, cutoff);
    let able_to_scale = if stabilized == recommended {
        READY_FOR_NEW_SCALE
    } else {
        SCALE_DOWN_STABILIZED
    };
    let up_limit = (bounds.current * 2).max(4);
    let (ceiling, ceiling_reason) = if bounds.max > up_limit {
        (up_limit, ("ScaleUpLimit", SCALE_UP_LIMIT))
    } else {
        (bounds.max, ("TooManyReplicas", TOO_MANY))
    };
    let (replicas, scaling_limited) = if stabilized < bounds.min {
        (bounds.min, verdict(true, "TooFewReplicas", TOO_FEW))
    } else if stabilized > ceiling {
        (ceiling, verdict(true, ceiling_reason.0, ceiling_reason.1))
    } else {
        (stabilized, WITHIN_RANGE)
    };
    Normalized {
        replicas,
        able_to_scale,
        scaling_limited,
    }
}

fn normalize_with_behavior(
    history: &mut History,
    behavior: &Behavior,
    now: Timestamp,
    bounds: Bounds,
    recommended: i32,
) -> Normalized {
    let up_cutoff = now - SignedDuration::from_secs(behavior.up.window_seconds);
    let down_cutoff = now - SignedDuration::from_secs(behavior.down.window_seconds);
    // Scale up only to the lowest recommendation of the up window, down only to the
    // highest of the down window.
    let (mut up_to, mut down_to) = (recommended, recommended);
    for (at, past) in &history.recommendations {
        if *at > up_cutoff {
            up_to = up_to.min(*past);
        }
        if *at > down_cutoff {
            down_to = down_to.max(*past);
        }
    }
    let stabilized = bounds.current.max(up_to).min(down_to);
    history.record(now, recommended, up_cutoff.min(down_cutoff));
    let able_to_scale = if stabilized == recommended {
        READY_FOR_NEW_SCALE
    } else if recommended >= bounds.current {
        SCALE_UP_STABILIZED
    } else {
        SCALE_DOWN_STABILIZED
    };
    let (replicas, reason, message) = if stabilized > bounds.current {
        let limit = rate_limit(history, &behavior.up, now, bounds.current, 1).max(bounds.current);
        let (ceiling, reason, message) = if bounds.max > limit {
            (limit, "ScaleUpLimit", SCALE_UP_LIMIT)
        } else {
            (bounds.max, "TooManyReplicas", TOO_MANY)
        };
        if stabilized > ceiling {
            (ceiling, reason, message)
        } else {
            (stabilized, WITHIN_RANGE.reason, WITHIN_RANGE.message)
        }
    } else if stabilized < bounds.current {
        let limit =
            rate_limit(history, &behavior.down, now, bounds.current, -1).min(bounds.current);
        let (floor, reason, message) = if bounds.min < limit {
            (limit, "ScaleDownLimit", SCALE_DOWN_LIMIT)
        } else {
            (bounds.min, "TooFewReplicas", TOO_FEW)
        };
        if stabilized < floor {
            (floor, reason, message)
        } else {
            (stabilized, WITHIN_RANGE.reason, WITHIN_RANGE.message)
        }
    } else {
        (stabilized, WITHIN_RANGE.reason, WITHIN_RANGE.message)
    };
    Normalized {
        replicas,
        able_to_scale,
        scaling_limited: verdict(replicas != stabilized, reason, message),
    }
}

/// The furthest `rules` let the target go from `current` in `direction` (+1 up, -1
/// down): each policy allows its change from the size at the start of its period (the
/// current size less the changes made within it), and `select` picks among them.
fn rate_limit(
    history: &History,
    rules: &Rules,
    now: Timestamp,
    current: i32,
    direction: i32,
) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|policy| {
        let added = changed_within(&history.scale_ups, now, policy.period_seconds);
        let removed = changed_within(&history.scale_downs, now, policy.period_seconds);
        let start = f64::from(current - added + removed);
        match (policy.change, direction > 0) {
            (Change::Pods, true) => start as i32 + policy.value,
            (Change::Pods, false) => start as i32 - policy.value,
            // Rounded up going up, so that a small target can grow at all; truncated
            // going down.
            (Change::Percent, true) => {
                (start * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i32
            }
            (Change::Percent, false) => (start * (1.0 - f64::from(policy.value) / 100.0)) as i32,
        }
    });
    // The largest change is the highest limit going up and the lowest going down.
    let largest_change = (rules.select == Select::Max) == (direction > 0);
    let picked = if largest_change {
        proposals.max()
    } else {
        proposals.min()
    };
    picked.unwrap_or(current)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        let start: Timestamp = "2026-12-05T10:00:00Z".parse().unwrap();
        start + SignedDuration::from_secs(seconds)
    }

    fn bounds(current: i32) -> Bounds {
        Bounds {
            current,
            min: 1,
            max: 100,
        }
    }

    fn behavior(spec: serde_json::Value) -> Behavior {
        Behavior::from_spec(&serde_json::from_value(spec).unwrap())
    }

    #[test]
    fn without_behavior_scale_down_waits_for_the_window_and_scale_up_at_most_doubles() {
        let mut history = History::default();
        let mut step = |t, current, recommended| {
            normalize(&mut history, None, at(t), bounds(current), recommended)
        };
        assert_eq!(step(0, 5, 5).replicas, 5);
        let held = step(15, 5, 1);
        assert_eq!(held.replicas, 5);
        assert_eq!(held.able_to_scale.reason, "ScaleDownStabilized");
        assert_eq!(step(200, 5, 2).replicas, 5);
        // The 5 left the window: the highest left, 2, wins.
        assert_eq!(step(301, 5, 1).replicas, 2);

        let mut history = History::default();
        let fast = normalize(&mut history, None, at(0), bounds(3), 20);
        assert_eq!(fast.replicas, 6);
        assert_eq!(fast.scaling_limited.reason, "ScaleUpLimit");
        assert!(fast.scaling_limited.status);
        // From 1, the floor of the limit is 4.
        assert_eq!(
            normalize(&mut History::default(), None, at(0), bounds(1), 9).replicas,
            4
        );
        // maxReplicas below the rate limit names the maximum.
        let capped = normalize(
            &mut History::default(),
            None,
            at(0),
            Bounds {
                current: 3,
                min: 1,
                max: 5,
            },
            20,
        );
        assert_eq!(
            (capped.replicas, capped.scaling_limited.reason),
            (5, "TooManyReplicas")
        );
        let floor = normalize(
            &mut History::default(),
            None,
            at(0),
            Bounds {
                current: 3,
                min: 2,
                max: 5,
            },
            1,
        );
        assert_eq!(
            (floor.replicas, floor.scaling_limited.reason),
            (2, "TooFewReplicas")
        );
    }

    #[test]
    fn defaults_fill_what_behavior_leaves_out() {
        let defaults = behavior(serde_json::json!({}));
        assert_eq!(defaults.up.window_seconds, 0);
        assert_eq!(defaults.down.window_seconds, 300);
        assert_eq!(defaults.up.policies.len(), 2);
        let custom = behavior(
            serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": 60,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]}}),
        );
        assert_eq!(custom.down.window_seconds, 60);
        assert_eq!(custom.down.select, Select::Max);
        assert_eq!(
            custom.down.policies,
            [Policy {
                change: Change::Pods,
                value: 1,
                period_seconds: 30
            }]
        );
        assert_eq!(custom.up, defaults.up);
    }

    #[test]
    fn a_pods_policy_limits_each_period_by_the_changes_made_within_it() {
        // Down by at most 1 pod per 60 s, no window.
        let slow = behavior(
            serde_json::json!({"scaleDown": {"stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}),
        );
        let mut history = History::default();
        let first = normalize(&mut history, Some(&slow), at(0), bounds(10), 2);
        assert_eq!(first.replicas, 9);
        assert_eq!(first.scaling_limited.reason, "ScaleDownLimit");
        history.rescaled(Some(&slow), at(0), 10, 9);
        // Within the same period the one pod is spent: no further change.
        assert_eq!(
            normalize(&mut history, Some(&slow), at(30), bounds(9), 2).replicas,
            9
        );
        // The next period allows one more.
        assert_eq!(
            normalize(&mut history, Some(&slow), at(61), bounds(9), 2).replicas,
            8
        );
    }

    #[test]
    fn select_policy_picks_the_largest_or_smallest_change_or_none() {
        let rules = |select: &str| {
            behavior(
                serde_json::json!({"scaleUp": {"selectPolicy": select, "policies": [
                {"type": "Pods", "value": 2, "periodSeconds": 60},
                {"type": "Percent", "value": 50, "periodSeconds": 60}]}}),
            )
        };
        let up = |select: &str| {
            normalize(
                &mut History::default(),
                Some(&rules(select)),
                at(0),
                bounds(10),
                40,
            )
            .replicas
        };
        // From 10: +2 pods gives 12, +50 % gives 15.
        assert_eq!(up("Max"), 15);
        assert_eq!(up("Min"), 12);
        let disabled = normalize(
            &mut History::default(),
            Some(&rules("Disabled")),
            at(0),
            bounds(10),
            40,
        );
        assert_eq!(disabled.replicas, 10);
        assert!(disabled.scaling_limited.status);
        // Percent going up rounds up: 1 pod at +10 % may still become 2.
        let small = behavior(serde_json::json!({"scaleUp": {"policies": [
            {"type": "Percent", "value": 10, "periodSeconds": 60}]}}));
        assert_eq!(
            normalize(&mut History::default(), Some(&small), at(0), bounds(1), 5).replicas,
            2
        );
    }

    #[test]
    fn the_scale_up_window_waits_for_the_lowest_recent_recommendation() {
        let cautious = behavior(serde_json::json!({"scaleUp": {"stabilizationWindowSeconds": 60}}));
        let mut history = History::default();
        assert_eq!(
            normalize(&mut history, Some(&cautious), at(0), bounds(2), 2).replicas,
            2
        );
        let held = normalize(&mut history, Some(&cautious), at(10), bounds(2), 4);
        assert_eq!(held.replicas, 2);
        assert_eq!(held.able_to_scale.reason, "ScaleUpStabilized");
        assert_eq!(
            normalize(&mut history, Some(&cautious), at(61), bounds(2), 4).replicas,
            4
        );
    }

    #[test]
    fn history_reuses_slots_older_than_every_window() {
        let mut history = History::default();
        for t in 0..100 {
            normalize(&mut history, None, at(t * 15), bounds(3), 3);
        }
        // 300 s of 15 s evaluations, plus the slot being reused.
        assert!(
            history.recommendations.len() <= 22,
            "{}",
            history.recommendations.len()
        );
        let rules = behavior(serde_json::json!({}));
        for t in 0..100 {
            history.rescaled(Some(&rules), at(t * 15), 3, 4);
        }
        assert!(history.scale_ups.len() <= 2, "{}", history.scale_ups.len());
    }
}
