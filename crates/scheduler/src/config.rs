//! The `KubeSchedulerConfiguration` file (`kubescheduler.config.k8s.io/v1`): profiles,
//! enabled and disabled plugins with score weights, and NodeResourcesFit's scoring
//! strategy. Fields not listed here are accepted and ignored.

use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use crate::framework::Profile;
use crate::plugins::{
    self, default_profile, InterPodAffinity, NodeResourcesFit, PluginArgs, ResourceSpec,
    ShapePoint, Strategy,
};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing scheduler configuration: {0}")]
    Parse(#[from] serde_yaml::Error),
    #[error("unsupported configuration kind {0:?} (want KubeSchedulerConfiguration)")]
    Kind(String),
    #[error("profiles[{0}].plugins: unknown plugin {1:?}")]
    UnknownPlugin(usize, String),
    #[error("profiles[{0}]: duplicate schedulerName {1:?}")]
    DuplicateProfile(usize, String),
    #[error("pluginConfig NodeResourcesFit: unknown scoringStrategy.type {0:?}")]
    UnknownStrategy(String),
    #[error("pluginConfig InterPodAffinity: hardPodAffinityWeight: Invalid value: {0}: not in valid range [0-100]")]
    HardPodAffinityWeight(i64),
    #[error("pluginConfig {0}: {1}")]
    Args(&'static str, serde_json::Error),
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileConfig {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
    #[serde(default)]
    pub profiles: Vec<ProfileConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileConfig {
    pub scheduler_name: Option<String>,
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
    #[serde(default)]
    pub plugins: Plugins,
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plugins {
    #[serde(default)]
    pub filter: PluginSet,
    #[serde(default)]
    pub score: PluginSet,
}

#[derive(Debug, Default, Deserialize)]
pub struct PluginSet {
    #[serde(default)]
    pub enabled: Vec<PluginRef>,
    #[serde(default)]
    pub disabled: Vec<PluginRef>,
}

#[derive(Debug, Deserialize)]
pub struct PluginRef {
    pub name: String,
    #[serde(default)]
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct PluginConfig {
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FitArgs {
    #[serde(default)]
    scoring_strategy: Option<ScoringStrategy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScoringStrategy {
    #[serde(rename = "type", default)]
    type_: Option<String>,
    #[serde(default)]
    resources: Option<Vec<ResourceSpec>>,
    #[serde(default)]
    requested_to_capacity_ratio: Option<Rtcr>,
}

#[derive(Debug, Default, Deserialize)]
struct Rtcr {
    #[serde(default)]
    shape: Vec<ShapePoint>,
}

fn fit_from_args(args: &serde_json::Value) -> Result<NodeResourcesFit, ConfigError> {
    let parsed: FitArgs = serde_json::from_value(args.clone()).unwrap_or_default();
    let Some(s) = parsed.scoring_strategy else {
        return Ok(NodeResourcesFit::default());
    };
    let strategy = match s.type_.as_deref().unwrap_or("LeastAllocated") {
        "LeastAllocated" => Strategy::LeastAllocated,
        "MostAllocated" => Strategy::MostAllocated,
        "RequestedToCapacityRatio" => Strategy::RequestedToCapacityRatio(
            s.requested_to_capacity_ratio
                .map(|r| r.shape)
                .unwrap_or_default(),
        ),
        other => return Err(ConfigError::UnknownStrategy(other.to_string())),
    };
    Ok(NodeResourcesFit {
        strategy,
        resources: s.resources.unwrap_or_else(plugins::default_resources),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InterPodAffinityArgs {
    #[serde(default)]
    hard_pod_affinity_weight: Option<i64>,
    #[serde(default)]
    ignore_preferred_terms_of_existing_pods: bool,
}

fn inter_pod_affinity_from_args(args: &serde_json::Value) -> Result<InterPodAffinity, ConfigError> {
    let parsed: InterPodAffinityArgs = if args.is_null() {
        InterPodAffinityArgs::default()
    } else {
        serde_json::from_value(args.clone())
            .map_err(|e| ConfigError::Args("InterPodAffinity", e))?
    };
    let weight = parsed.hard_pod_affinity_weight.unwrap_or(1);
    if !(0..=100).contains(&weight) {
        return Err(ConfigError::HardPodAffinityWeight(weight));
    }
    Ok(InterPodAffinity::new(
        weight,
        parsed.ignore_preferred_terms_of_existing_pods,
    ))
}

/// Applies `disabled` then `enabled` to a list of (name, weight), as upstream merges a
/// profile's plugin set with the defaults (`*` disables every default).
fn merge(defaults: &[(&str, i64)], set: &PluginSet) -> Vec<(String, i64)> {
    let all_off = set.disabled.iter().any(|p| p.name == "*");
    let mut out: Vec<(String, i64)> = defaults
        .iter()
        .filter(|(n, _)| !all_off && !set.disabled.iter().any(|d| d.name == *n))
        .map(|(n, w)| (n.to_string(), *w))
        .collect();
    for e in &set.enabled {
        match out.iter_mut().find(|(n, _)| *n == e.name) {
            Some(existing) => existing.1 = e.weight.unwrap_or(existing.1),
            None => out.push((e.name.clone(), e.weight.unwrap_or(1))),
        }
    }
    out
}

impl FileConfig {
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        let c: FileConfig = serde_yaml::from_str(text)?;
        match c.kind.as_deref() {
            None | Some("KubeSchedulerConfiguration") => Ok(c),
            Some(other) => Err(ConfigError::Kind(other.to_string())),
        }
    }

    pub fn load(path: &std::path::Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        FileConfig::parse(&text)
    }

    /// The profiles this configuration describes; with none, the default profile for
    /// `default_name`.
    pub fn profiles(&self, default_name: &str) -> Result<Vec<Profile>, ConfigError> {
        if self.profiles.is_empty() {
            let mut p = default_profile(default_name, NodeResourcesFit::default());
            p.percentage_of_nodes_to_score = self.percentage_of_nodes_to_score.unwrap_or(0);
            return Ok(vec![p]);
        }
        let mut out: Vec<Profile> = Vec::new();
        for (i, pc) in self.profiles.iter().enumerate() {
            let name = pc
                .scheduler_name
                .clone()
                .unwrap_or_else(|| default_name.to_string());
            if out.iter().any(|p| p.scheduler_name == name) {
                return Err(ConfigError::DuplicateProfile(i, name));
            }
            let args_of = |plugin: &str| {
                pc.plugin_config
                    .iter()
                    .find(|c| c.name == plugin)
                    .map(|c| &c.args)
            };
            let fit = match args_of("NodeResourcesFit") {
                Some(args) => fit_from_args(args)?,
                None => NodeResourcesFit::default(),
            };
            let inter_pod_affinity = match args_of("InterPodAffinity") {
                Some(args) => inter_pod_affinity_from_args(args)?,
                None => InterPodAffinity::default(),
            };
            let args = PluginArgs {
                fit: Arc::new(fit),
                inter_pod_affinity: Arc::new(inter_pod_affinity),
            };
            let filter_defaults: Vec<(&str, i64)> =
                plugins::DEFAULT_FILTERS.iter().map(|n| (*n, 0)).collect();
            let build = |list: Vec<(String, i64)>| {
                list.into_iter()
                    .map(|(n, w)| {
                        plugins::by_name(&n, &args)
                            .map(|p| (p, w))
                            .ok_or(ConfigError::UnknownPlugin(i, n))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let filters = build(merge(&filter_defaults, &pc.plugins.filter))?
                .into_iter()
                .map(|(p, _)| p)
                .collect();
            let scorers = build(merge(plugins::DEFAULT_SCORE_WEIGHTS, &pc.plugins.score))?;
            out.push(Profile {
                scheduler_name: name,
                filters,
                scorers,
                percentage_of_nodes_to_score: pc
                    .percentage_of_nodes_to_score
                    .or(self.percentage_of_nodes_to_score)
                    .unwrap_or(0),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_weights_and_strategy() {
        let c = FileConfig::parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: bin-packer
  plugins:
    score:
      disabled: [{name: NodeResourcesBalancedAllocation}, {name: ImageLocality}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources: [{name: cpu, weight: 2}, {name: memory}]
- schedulerName: no-scores
  plugins:
    score:
      disabled: [{name: "*"}]
"#,
        )
        .expect("parses");
        let profiles = c.profiles("default-scheduler").expect("valid");
        assert_eq!(profiles.len(), 2);
        let weights: Vec<(&str, i64)> = profiles[0]
            .scorers
            .iter()
            .map(|(p, w)| (p.name(), *w))
            .collect();
        assert_eq!(
            weights,
            [
                ("TaintToleration", 3),
                ("NodeAffinity", 2),
                ("NodeResourcesFit", 5),
                ("InterPodAffinity", 2),
                ("PodTopologySpread", 2)
            ]
        );
        assert_eq!(profiles[0].filters.len(), 8);
        assert!(profiles[1].scorers.is_empty());
    }

    #[test]
    fn inter_pod_affinity_args() {
        let c = FileConfig::parse(
            "profiles: [{pluginConfig: [{name: InterPodAffinity, args: {hardPodAffinityWeight: 7}}]}]",
        )
        .expect("parses");
        let profiles = c.profiles("x").expect("valid");
        assert!(profiles[0].plugin("InterPodAffinity").is_some());
        let bad = FileConfig::parse(
            "profiles: [{pluginConfig: [{name: InterPodAffinity, args: {hardPodAffinityWeight: 101}}]}]",
        )
        .expect("parses");
        let err = bad.profiles("x").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("pluginConfig InterPodAffinity: hardPodAffinityWeight: Invalid value: 101: not in valid range [0-100]")
        );
        // The plugin can be disabled like any other.
        let off = FileConfig::parse(
            "profiles: [{plugins: {filter: {disabled: [{name: InterPodAffinity}]}, score: {disabled: [{name: InterPodAffinity}]}}}]",
        )
        .expect("parses");
        assert!(off.profiles("x").expect("valid")[0]
            .plugin("InterPodAffinity")
            .is_none());
    }

    #[test]
    fn errors_are_reported() {
        let bad = FileConfig::parse("profiles: [{plugins: {score: {enabled: [{name: Nope}]}}}]")
            .expect("parses");
        assert!(matches!(
            bad.profiles("x"),
            Err(ConfigError::UnknownPlugin(0, _))
        ));
        assert!(matches!(
            FileConfig::parse("kind: Pod"),
            Err(ConfigError::Kind(_))
        ));
        let strategy = FileConfig::parse(
            "profiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: Odd}}}]}]",
        )
        .expect("parses");
        assert!(matches!(
            strategy.profiles("x"),
            Err(ConfigError::UnknownStrategy(_))
        ));
    }
}
