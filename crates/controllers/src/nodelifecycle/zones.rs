//! Zone-aware tainting, as upstream's node lifecycle controller paces it: nodes are
//! grouped by zone (region and zone labels), each zone's health decides how fast its
//! failing nodes get the `NoExecute` taint that evicts their pods, and when every zone
//! has failed entirely the controller assumes the fault is its own (or the network's)
//! and taints nothing.
//!
//! A zone is `FullDisruption` when none of its nodes is Ready, `PartialDisruption` when
//! more than 2 are not and they are at least `--unhealthy-zone-threshold` (55 %) of it,
//! `Normal` otherwise. Normal and fully disrupted zones taint at `--node-eviction-rate`
//! (0.1 nodes/s, one at once); partially disrupted ones at `--secondary-node-eviction-rate`
//! (0.01/s) if larger than `--large-cluster-size-threshold` (50 nodes), else not at all.

use std::collections::BTreeMap;
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;

const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// How the node lifecycle controller paces tainting (upstream's flags).
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionRates {
    /// `--node-eviction-rate`: nodes per second in a healthy zone.
    pub healthy: f64,
    /// `--secondary-node-eviction-rate`: nodes per second in an unhealthy large zone.
    pub secondary: f64,
    /// `--unhealthy-zone-threshold`: the share of not-ready nodes that makes a zone
    /// unhealthy.
    pub unhealthy_zone_threshold: f64,
    /// `--large-cluster-size-threshold`: zones this size or smaller stop tainting when
    /// unhealthy.
    pub large_cluster_size_threshold: usize,
}

impl Default for EvictionRates {
    fn default() -> Self {
        EvictionRates {
            healthy: 0.1,
            secondary: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_size_threshold: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// The zone a node is in: its region and zone labels, as upstream keys them.
pub fn zone_of(node: &Node) -> String {
    let labels = node.metadata.labels.as_ref();
    let label = |key| {
        labels
            .and_then(|l| l.get(key))
            .map(String::as_str)
            .unwrap_or_default()
    };
    let (region, zone) = (label(REGION_LABEL), label(ZONE_LABEL));
    if region.is_empty() && zone.is_empty() {
        String::new()
    } else {
        format!("{region}:\u{0}:{zone}")
    }
}

/// A zone as metrics and logs name it (`region:zone`, the key's separator dropped).
pub fn label(zone: &str) -> String {
    zone.replace('\u{0}', "")
}

fn zone_state(ready: usize, not_ready: usize, threshold: f64) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / (ready + not_ready) as f64 >= threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// A token bucket of one: a node may be tainted once a whole token has accrued.
#[derive(Debug)]
struct Bucket {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(1.0);
        if self.per_second > 0.0 && self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Every zone's state and tainting budget, updated once per monitor pass.
#[derive(Debug, Default)]
pub struct Zones {
    states: BTreeMap<String, ZoneState>,
    /// Per zone: nodes, and those not Ready.
    sizes: BTreeMap<String, (usize, usize)>,
    buckets: BTreeMap<String, Bucket>,
    /// Every zone fully disrupted: nothing is tainted, and taints are lifted.
    all_disrupted: bool,
}

impl Zones {
    /// Recomputes each zone's state from `(zone, ready)` of every node and sets its
    /// tainting rate.
    pub fn observe(
        &mut self,
        nodes: impl IntoIterator<Item = (String, bool)>,
        rates: &EvictionRates,
        now: Instant,
    ) {
        let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (zone, ready) in nodes {
            let count = counts.entry(zone).or_default();
            if ready {
                count.0 += 1;
            } else {
                count.1 += 1;
            }
        }
        let states: BTreeMap<String, ZoneState> = counts
            .iter()
            .map(|(zone, (ready, not_ready))| {
                let state = zone_state(*ready, *not_ready, rates.unhealthy_zone_threshold);
                (zone.clone(), state)
            })
            .collect();
        let all_disrupted =
            !states.is_empty() && states.values().all(|s| *s == ZoneState::FullDisruption);
        if all_disrupted != self.all_disrupted {
            if all_disrupted {
                tracing::warn!("every node is not Ready: entering master disruption mode (no node is tainted NoExecute)");
            } else {
                tracing::info!("some node is Ready again: leaving master disruption mode");
            }
        }
        for (zone, state) in &states {
            if self.states.get(zone) != Some(state) {
                tracing::info!(zone = %label(zone), ?state, "zone state changed");
            }
            let size = counts.get(zone).map_or(0, |(r, n)| r + n);
            let per_second = if all_disrupted {
                0.0
            } else {
                match state {
                    ZoneState::Normal | ZoneState::FullDisruption => rates.healthy,
                    ZoneState::PartialDisruption if size > rates.large_cluster_size_threshold => {
                        rates.secondary
                    }
                    ZoneState::PartialDisruption => 0.0,
                }
            };
            self.buckets
                .entry(zone.clone())
                .or_insert(Bucket {
                    per_second,
                    tokens: 1.0,
                    last: now,
                })
                .per_second = per_second;
        }
        self.buckets.retain(|zone, _| states.contains_key(zone));
        self.states = states;
        self.sizes = counts
            .into_iter()
            .map(|(zone, (ready, not_ready))| (zone, (ready + not_ready, not_ready)))
            .collect();
        self.all_disrupted = all_disrupted;
    }

    /// Each zone (as `region:zone`), its nodes and those not Ready.
    pub fn sizes(&self) -> impl Iterator<Item = (String, usize, usize)> + '_ {
        self.sizes
            .iter()
            .map(|(zone, (size, not_ready))| (label(zone), *size, *not_ready))
    }

    pub fn all_disrupted(&self) -> bool {
        self.all_disrupted
    }

    #[cfg(test)]
    fn state(&self, zone: &str) -> Option<ZoneState> {
        self.states.get(zone).copied()
    }

    /// Whether a node of `zone` may be tainted `NoExecute` now; spends the zone's token.
    pub fn may_taint(&mut self, zone: &str, now: Instant) -> bool {
        !self.all_disrupted && self.buckets.get_mut(zone).is_some_and(|b| b.take(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn nodes(zone: &str, ready: usize, not_ready: usize) -> Vec<(String, bool)> {
        let mut all = vec![(zone.to_string(), true); ready];
        all.extend(vec![(zone.to_string(), false); not_ready]);
        all
    }

    #[test]
    fn zone_states_as_upstream() {
        assert_eq!(zone_state(0, 1, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(3, 2, 0.55), ZoneState::Normal);
        // More than 2 and at least 55 % not ready.
        assert_eq!(zone_state(2, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(4, 3, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(0, 0, 0.55), ZoneState::Normal);
    }

    #[test]
    fn a_healthy_zone_taints_one_node_per_ten_seconds() {
        let rates = EvictionRates::default();
        let start = Instant::now();
        let mut zones = Zones::default();
        zones.observe(nodes("a", 3, 2), &rates, start);
        assert!(zones.may_taint("a", start));
        assert!(!zones.may_taint("a", start + Duration::from_secs(5)));
        assert!(zones.may_taint("a", start + Duration::from_secs(10)));
        // An unknown zone has no budget.
        assert!(!zones.may_taint("b", start));
    }

    #[test]
    fn unhealthy_small_zones_stop_and_large_ones_slow_down() {
        let rates = EvictionRates::default();
        let start = Instant::now();
        let mut zones = Zones::default();
        let mut fleet = nodes("small", 1, 3);
        fleet.extend(nodes("large", 20, 40));
        fleet.extend(nodes("down", 0, 2));
        fleet.extend(nodes("fine", 5, 0));
        zones.observe(fleet, &rates, start);
        assert_eq!(zones.state("small"), Some(ZoneState::PartialDisruption));
        assert!(!zones.may_taint("small", start));
        assert!(!zones.may_taint("small", start + Duration::from_secs(3600)));
        // 60 nodes: 0.01 per second, so one now and the next after 100 s.
        assert!(zones.may_taint("large", start));
        assert!(!zones.may_taint("large", start + Duration::from_secs(50)));
        assert!(zones.may_taint("large", start + Duration::from_secs(101)));
        // A wholly failed zone (while others live) taints at the healthy rate.
        assert_eq!(zones.state("down"), Some(ZoneState::FullDisruption));
        assert!(zones.may_taint("down", start));
        assert!(!zones.all_disrupted());
    }

    #[test]
    fn nothing_is_tainted_when_every_zone_is_down() {
        let rates = EvictionRates::default();
        let start = Instant::now();
        let mut zones = Zones::default();
        let mut fleet = nodes("a", 0, 2);
        fleet.extend(nodes("b", 0, 1));
        zones.observe(fleet, &rates, start);
        assert!(zones.all_disrupted());
        assert!(!zones.may_taint("a", start + Duration::from_secs(60)));
        // One node back: tainting resumes.
        let mut fleet = nodes("a", 1, 1);
        fleet.extend(nodes("b", 0, 1));
        zones.observe(fleet, &rates, start + Duration::from_secs(61));
        assert!(!zones.all_disrupted());
        assert!(zones.may_taint("b", start + Duration::from_secs(61)));
    }

    #[test]
    fn zones_key_on_region_and_zone_labels() {
        let node = |labels: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n", "labels": labels}}))
                .unwrap_or_default()
        };
        assert_eq!(zone_of(&node(serde_json::json!({}))), "");
        assert_eq!(
            zone_of(&node(
                serde_json::json!({REGION_LABEL: "r", ZONE_LABEL: "z"})
            )),
            "r:\u{0}:z"
        );
    }
}
