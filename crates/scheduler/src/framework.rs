//! The scheduling framework: plugins at the PreFilter, Filter, PreScore, Score and
//! NormalizeScore extension points, a [`Profile`] that lists them with weights, and
//! [`Profile::schedule`], one pass of upstream's `schedulePod` (filter, score, select).

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::cache::{NodeInfo, Nominations, PodInfo, Snapshot};

/// Scores are 0..=100 after normalisation, as upstream's `MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;

/// Upstream's status codes, as far as the scheduler's decisions depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Success,
    /// The node does not fit now; preempting pods on it might help.
    Unschedulable,
    /// The node does not fit and preemption cannot change that.
    UnschedulableAndUnresolvable,
    /// An internal error: the pod is retried with backoff.
    Error,
}

/// A plugin's verdict with the reasons shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    /// The plugin that decided it (the queue uses it to pick re-queueing events).
    pub plugin: &'static str,
}

impl Status {
    pub fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    pub fn new(code: Code, plugin: &'static str, reason: impl Into<String>) -> Status {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin,
        }
    }

    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// Kinds of cluster change that can make an unschedulable pod schedulable; each plugin
/// names the ones that matter for its rejections (upstream's `EventsToRegister`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterEvent {
    NodeAdd,
    NodeUpdate,
    AssignedPodAdd,
    AssignedPodUpdate,
    AssignedPodDelete,
    /// A namespace added or relabelled (only `namespaceSelector`s care, so it is not
    /// among [`ALL_EVENTS`]).
    NamespaceChange,
}

pub const ALL_EVENTS: &[ClusterEvent] = &[
    ClusterEvent::NodeAdd,
    ClusterEvent::NodeUpdate,
    ClusterEvent::AssignedPodAdd,
    ClusterEvent::AssignedPodUpdate,
    ClusterEvent::AssignedPodDelete,
];

/// One plugin's per-cycle data. Cloneable, because preemption asks "what if these pods
/// were gone" on a copy of the cycle's state for each candidate node (upstream's
/// `StateData.Clone`).
pub trait StateData: Any + Send + Sync {
    fn clone_data(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Clone + Send + Sync> StateData for T {
    fn clone_data(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Which PreFilter extension [`Profile::run_pod_change`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodChange {
    Added,
    Removed,
}

/// Data plugins compute once per cycle (PreFilter, PreScore) and read per node.
#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn StateData>>,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self
                .data
                .iter()
                .map(|(k, v)| (*k, (**v).clone_data()))
                .collect(),
        }
    }
}

impl CycleState {
    pub fn write<T: Any + Clone + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }

    pub fn read<T: Any + Send + Sync>(&self, key: &'static str) -> Option<&T> {
        self.data
            .get(key)
            .and_then(|v| (**v).as_any().downcast_ref())
    }

    pub fn read_mut<T: Any + Send + Sync>(&mut self, key: &'static str) -> Option<&mut T> {
        self.data
            .get_mut(key)
            .and_then(|v| (**v).as_any_mut().downcast_mut())
    }
}

/// A scheduling plugin. Every extension point has a neutral default, so a plugin
/// implements only the points it takes part in.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// Events after which a pod this plugin rejected is worth retrying.
    fn events(&self) -> &'static [ClusterEvent] {
        ALL_EVENTS
    }

    /// Once per cycle before filtering; a failure rejects the pod on every node.
    fn pre_filter(&self, _state: &mut CycleState, _pod: &PodInfo, _snapshot: &Snapshot) -> Status {
        Status::success()
    }

    fn filter(&self, _state: &CycleState, _pod: &PodInfo, _node: &NodeInfo) -> Status {
        Status::success()
    }

    /// PreFilter extension: updates this cycle's precomputed state as if `other` were
    /// placed on `node` (preemption's reprieve step; upstream's `AddPod`).
    fn add_pod(&self, _state: &mut CycleState, _pod: &PodInfo, _other: &PodInfo, _node: &NodeInfo) {
    }

    /// PreFilter extension: as if `other` were gone from `node` (upstream's `RemovePod`).
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _other: &PodInfo,
        _node: &NodeInfo,
    ) {
    }

    /// Once per cycle before scoring, with the nodes that passed the filters.
    fn pre_score(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _feasible: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) {
    }

    fn score(
        &self,
        _state: &CycleState,
        _pod: &PodInfo,
        _node: &NodeInfo,
        _snapshot: &Snapshot,
    ) -> i64 {
        0
    }

    /// Maps raw scores onto 0..=100 (upstream's `NormalizeScore`).
    fn normalize(&self, _state: &CycleState, _scores: &mut [i64]) {}
}

/// Upstream's `DefaultNormalizeScore`: scales so that the best node gets `max`;
/// `reverse` turns "more is worse" counts into scores.
pub fn default_normalize(max: i64, reverse: bool, scores: &mut [i64]) {
    let highest = scores.iter().copied().max().unwrap_or(0);
    if highest == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = max);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = max * *s / highest;
        if reverse {
            *s = max - *s;
        }
    }
}

/// Why no node fits: each evaluated node's status.
#[derive(Debug, Clone, Default)]
pub struct Diagnosis {
    pub node_status: HashMap<String, Status>,
    pub unschedulable_plugins: BTreeSet<&'static str>,
    pub pre_filter_msg: Option<String>,
}

/// The scheduling failure (upstream's `FitError`); [`crate::feedback`] formats it.
#[derive(Debug, Clone)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub diagnosis: Diagnosis,
    pub post_filter_msg: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleResult {
    pub node: String,
    pub evaluated: usize,
    pub feasible: usize,
}

/// A scheduler profile: the plugins for one `schedulerName`.
pub struct Profile {
    pub scheduler_name: String,
    pub filters: Vec<Arc<dyn Plugin>>,
    /// Score plugins with their weights.
    pub scorers: Vec<(Arc<dyn Plugin>, i64)>,
    /// 0 means upstream's adaptive default.
    pub percentage_of_nodes_to_score: u32,
}

/// Upstream's `numFeasibleNodesToFind`: every node in small clusters, a shrinking share in
/// large ones (never fewer than 100).
pub fn num_feasible_nodes_to_find(percentage: u32, all: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if all < MIN_FEASIBLE || percentage >= 100 {
        return all;
    }
    let pct = if percentage == 0 {
        (50 - (all / 125) as i64).max(5) as usize
    } else {
        percentage as usize
    };
    (all * pct / 100).max(MIN_FEASIBLE)
}

/// Cheap tie-breaking randomness; quality does not matter, only that ties spread.
fn next_random(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

impl Profile {
    fn plugins(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.filters
            .iter()
            .chain(self.scorers.iter().map(|(p, _)| p))
    }

    /// Runs the filters over one node, stopping at the first rejection as upstream does.
    pub fn run_filters(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for plugin in &self.filters {
            let status = plugin.filter(state, pod, node);
            if !status.is_success() {
                return Status {
                    plugin: plugin.name(),
                    ..status
                };
            }
        }
        Status::success()
    }

    /// Runs the filters as if the pods nominated to the node with at least the pod's
    /// priority were on it, then (if any were) as it is: both must pass, as upstream's
    /// `RunFilterPluginsWithNominatedPods` requires.
    pub fn run_filters_with_nominated(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        nominated: &Nominations,
    ) -> Status {
        let mut ahead = nominated
            .on(&node.name)
            .iter()
            .filter(|other| other.key != pod.key && other.priority >= pod.priority)
            .peekable();
        if ahead.peek().is_none() {
            return self.run_filters(state, pod, node);
        }
        let mut with = node.clone();
        let mut with_state = state.clone();
        for other in ahead {
            with.add_pod(other.clone());
            self.run_pod_change(&mut with_state, pod, PodChange::Added, other, &with);
        }
        let status = self.run_filters(&with_state, pod, &with);
        if !status.is_success() {
            return status;
        }
        self.run_filters(state, pod, node)
    }

    /// Runs every filter's `add_pod` or `remove_pod` extension for `other` on `node`.
    pub fn run_pod_change(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        change: PodChange,
        other: &PodInfo,
        node: &NodeInfo,
    ) {
        for plugin in &self.filters {
            match change {
                PodChange::Added => plugin.add_pod(state, pod, other, node),
                PodChange::Removed => plugin.remove_pod(state, pod, other, node),
            }
        }
    }

    pub fn run_pre_filters(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
    ) -> Status {
        for plugin in &self.filters {
            let status = plugin.pre_filter(state, pod, snapshot);
            if !status.is_success() {
                return Status {
                    plugin: plugin.name(),
                    ..status
                };
            }
        }
        Status::success()
    }

    /// Filter, score and select a node for `pod`. `start` rotates where the node scan
    /// begins, so sampling in large clusters does not always favour the same nodes.
    pub fn schedule(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot,
        start: &mut usize,
        seed: &mut u64,
    ) -> Result<ScheduleResult, Box<FitError>> {
        let all = snapshot.nodes.len();
        let mut diagnosis = Diagnosis::default();
        let mut state = CycleState::default();
        let pre = self.run_pre_filters(&mut state, pod, snapshot);
        if !pre.is_success() {
            diagnosis.unschedulable_plugins.insert(pre.plugin);
            diagnosis.pre_filter_msg = Some(pre.reasons.join(", "));
            for n in &snapshot.nodes {
                diagnosis.node_status.insert(n.name.clone(), pre.clone());
            }
            return Err(Box::new(FitError {
                num_all_nodes: all,
                diagnosis,
                post_filter_msg: None,
            }));
        }
        let want = num_feasible_nodes_to_find(self.percentage_of_nodes_to_score, all);
        let mut feasible: Vec<Arc<NodeInfo>> = Vec::new();
        let mut evaluated = 0;
        for i in 0..all {
            if feasible.len() >= want {
                break;
            }
            let node = &snapshot.nodes[(*start + i) % all];
            evaluated += 1;
            let status = self.run_filters_with_nominated(&state, pod, node, &snapshot.nominated);
            if status.is_success() {
                feasible.push(node.clone());
            } else {
                diagnosis.unschedulable_plugins.insert(status.plugin);
                diagnosis.node_status.insert(node.name.clone(), status);
            }
        }
        if all > 0 {
            *start = (*start + evaluated) % all;
        }
        if feasible.is_empty() {
            return Err(Box::new(FitError {
                num_all_nodes: all,
                diagnosis,
                post_filter_msg: None,
            }));
        }
        let result = |node: &NodeInfo| ScheduleResult {
            node: node.name.clone(),
            evaluated,
            feasible: feasible.len(),
        };
        if feasible.len() == 1 {
            return Ok(result(&feasible[0]));
        }
        let totals = self.score(&mut state, pod, &feasible, snapshot);
        // Highest total wins; ties are broken uniformly at random (reservoir sampling).
        let mut best = 0;
        let mut ties = 0u64;
        for (i, total) in totals.iter().enumerate() {
            if *total > totals[best] {
                best = i;
                ties = 1;
            } else if *total == totals[best] {
                ties += 1;
                if next_random(seed).is_multiple_of(ties) {
                    best = i;
                }
            }
        }
        Ok(result(&feasible[best]))
    }

    /// Weighted sum of every score plugin's normalised score, per feasible node.
    pub fn score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        feasible: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Vec<i64> {
        let mut totals = vec![0i64; feasible.len()];
        for (plugin, _) in &self.scorers {
            plugin.pre_score(state, pod, feasible, snapshot);
        }
        for (plugin, weight) in &self.scorers {
            let mut scores: Vec<i64> = feasible
                .iter()
                .map(|n| plugin.score(state, pod, n, snapshot))
                .collect();
            plugin.normalize(state, &mut scores);
            for (total, s) in totals.iter_mut().zip(&scores) {
                *total += s.clamp(&0, &MAX_NODE_SCORE) * weight;
            }
        }
        totals
    }

    /// The plugin with this name, if the profile runs it.
    pub fn plugin(&self, name: &str) -> Option<&Arc<dyn Plugin>> {
        self.plugins().find(|p| p.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_scales_to_the_best_and_reverses() {
        let mut s = [0, 5, 10];
        default_normalize(100, false, &mut s);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 1, 2];
        default_normalize(100, true, &mut s);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [0, 0];
        default_normalize(100, true, &mut s);
        assert_eq!(s, [100, 100]);
    }

    #[test]
    fn sampling_follows_upstream() {
        assert_eq!(num_feasible_nodes_to_find(0, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(0, 1000), 420);
        assert_eq!(num_feasible_nodes_to_find(0, 5000), 500);
        assert_eq!(num_feasible_nodes_to_find(0, 150), 100);
        assert_eq!(num_feasible_nodes_to_find(100, 5000), 5000);
    }
}
