//! The plugins, with upstream's names and semantics, and the default profile.
//!
//! Each plugin states its behaviour in its own doc comment; the unit tests beside it pin
//! upstream's verdicts and scores.

pub mod helpers;
pub mod interpod_affinity;
pub mod node_resources;
pub mod simple;
pub mod tally;
#[cfg(test)]
pub(crate) mod testing;
pub mod topology_spread;

use std::sync::Arc;

pub use interpod_affinity::InterPodAffinity;
pub use node_resources::{
    default_resources, BalancedAllocation, NodeResourcesFit, ResourceSpec, ShapePoint, Strategy,
};
pub use simple::{
    ImageLocality, NodeAffinity, NodeName, NodePorts, NodeUnschedulable, TaintToleration,
};

use crate::framework::{Plugin, Profile};

/// Upstream's default score weights (v1.37 `getDefaultPlugins`).
pub const DEFAULT_SCORE_WEIGHTS: &[(&str, i64)] = &[
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodeResourcesFit", 1),
    ("InterPodAffinity", 2),
    ("PodTopologySpread", 2),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
];

/// The filters of the default profile, in upstream's order.
pub const DEFAULT_FILTERS: &[&str] = &[
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
];

/// Plugins that take arguments (`pluginConfig`), built once per profile.
#[derive(Clone, Default)]
pub struct PluginArgs {
    pub fit: Arc<NodeResourcesFit>,
    pub inter_pod_affinity: Arc<InterPodAffinity>,
}

/// A plugin by upstream name, built with the profile's arguments.
pub fn by_name(name: &str, args: &PluginArgs) -> Option<Arc<dyn Plugin>> {
    let p: Arc<dyn Plugin> = match name {
        "NodeName" => Arc::new(NodeName),
        "NodeUnschedulable" => Arc::new(NodeUnschedulable),
        "NodePorts" => Arc::new(NodePorts),
        "TaintToleration" => Arc::new(TaintToleration),
        "NodeAffinity" => Arc::new(NodeAffinity),
        "ImageLocality" => Arc::new(ImageLocality),
        "NodeResourcesFit" => args.fit.clone(),
        "NodeResourcesBalancedAllocation" => Arc::new(BalancedAllocation::default()),
        "PodTopologySpread" => Arc::new(topology_spread::PodTopologySpread::default()),
        "InterPodAffinity" => args.inter_pod_affinity.clone(),
        _ => return None,
    };
    Some(p)
}

/// The default profile for `scheduler_name` with the given resource scoring.
pub fn default_profile(scheduler_name: &str, fit: NodeResourcesFit) -> Profile {
    let args = PluginArgs {
        fit: Arc::new(fit),
        ..PluginArgs::default()
    };
    Profile {
        scheduler_name: scheduler_name.to_string(),
        filters: DEFAULT_FILTERS
            .iter()
            .filter_map(|n| by_name(n, &args))
            .collect(),
        scorers: DEFAULT_SCORE_WEIGHTS
            .iter()
            .filter_map(|(n, w)| by_name(n, &args).map(|p| (p, *w)))
            .collect(),
        percentage_of_nodes_to_score: 0,
    }
}
