//! The DaemonSet controller (upstream's `pkg/controller/daemon`): one pod on every node
//! that should run one, placed by the scheduler through a node affinity to that node.
//!
//! `sync(key)`: record the template as a `ControllerRevision` (what `kubectl rollout
//! history|undo` read), then per node: a node that should run the daemon and has no pod
//! gets one; extra pods, failed pods and pods on nodes that should not run the daemon
//! go. A `RollingUpdate` replaces out-of-date pods at most `maxUnavailable` at a time;
//! `OnDelete` only when they are deleted. Status as upstream counts it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use skiff_scheduler::plugins::helpers::{term_matches, tolerated_by_any};

use crate::controller::{key_of, split_key};
use crate::deployment::util::scaled_value;
use crate::error::{ignore_not_found, Result};
use crate::expectations::Expectations;
use crate::informer::InformerFactory;
use crate::owned_pods::PodEvents;
use crate::owner;
use crate::pods;
use crate::queue::WorkQueue;

use crate::history::REVISION_HASH;

pub struct DaemonSetController {
    client: Client,
    sets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    queue: Arc<WorkQueue>,
    expectations: Arc<Expectations>,
}

impl DaemonSetController {
    pub fn new(factory: &InformerFactory) -> Arc<DaemonSetController> {
        let set_informer = factory.informer::<DaemonSet>();
        let pod_informer = factory.informer::<Pod>();
        let node_informer = factory.informer::<Node>();
        let controller = Arc::new(DaemonSetController {
            client: factory.client_for("daemon-set-controller"),
            sets: set_informer.store(),
            pods: pod_informer.store(),
            nodes: node_informer.store(),
            revisions: factory.informer::<ControllerRevision>().store(),
            queue: factory.queue("daemonset"),
            expectations: Arc::new(Expectations::new()),
        });
        set_informer.enqueue_into(controller.queue.clone());
        PodEvents {
            owners: controller.sets.clone(),
            queue: controller.queue.clone(),
            expectations: controller.expectations.clone(),
            selector: |set: &DaemonSet| Some(set.spec.selector.clone()),
        }
        .register(&pod_informer);
        // Any node change may change where daemons should run.
        let me = Arc::downgrade(&controller);
        node_informer.add_handler(move |_, _| {
            if let Some(me) = me.upgrade() {
                for set in me.sets.state() {
                    me.queue.add(key_of(set.as_ref()));
                }
            }
        });
        controller
    }

    /// Out-of-date pods to delete now: as many as `maxUnavailable` allows, counting the
    /// daemons that are already unavailable.
    fn rolling_update_victims<'a>(
        &self,
        set: &DaemonSet,
        owned: &'a [Arc<Pod>],
        nodes: &[Arc<Node>],
        hash: &str,
    ) -> Vec<&'a Pod> {
        let desired = nodes
            .iter()
            .filter(|n| should_run(&set.spec.template, n))
            .count() as i32;
        let max_unavailable = set
            .spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .map(|r| scaled_value(r.max_unavailable.as_ref(), desired, true))
            .unwrap_or(1)
            .max(1);
        let min_ready = set.spec.min_ready_seconds.unwrap_or(0);
        let now = Timestamp::now();
        let live: Vec<&Pod> = owned
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let unavailable = desired
            - live
                .iter()
                .filter(|p| pods::is_available(p, min_ready, now))
                .count() as i32;
        let budget = (max_unavailable - unavailable.max(0)).max(0) as usize;
        let mut old: Vec<&Pod> = live
            .into_iter()
            .filter(|p| revision_hash(p) != Some(hash))
            .collect();
        // Unavailable old pods first: replacing them costs nothing.
        old.sort_by_key(|p| pods::is_available(p, min_ready, now));
        let (unavailable_old, available_old): (Vec<&Pod>, Vec<&Pod>) = old
            .into_iter()
            .partition(|p| !pods::is_available(p, min_ready, now));
        unavailable_old
            .into_iter()
            .chain(available_old.into_iter().take(budget))
            .collect()
    }

    async fn create_pods(
        &self,
        key: &str,
        set: &DaemonSet,
        pod_api: &Api<Pod>,
        nodes: &[String],
        hash: &str,
    ) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        self.expectations.expect_creations(key, nodes.len());
        let mut first_error = None;
        for node in nodes {
            let pod = daemon_pod(set, node, hash)?;
            if let Err(e) = pod_api.create(&PostParams::default(), &pod).await {
                self.expectations.creation_observed(key);
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn delete_pods(&self, key: &str, pod_api: &Api<Pod>, victims: &[&Pod]) -> Result<()> {
        if victims.is_empty() {
            return Ok(());
        }
        self.expectations
            .expect_deletions(key, victims.iter().map(|p| key_of(*p)).collect());
        for pod in victims {
            let result = ignore_not_found(
                pod_api
                    .delete(&pod.name_any(), &DeleteParams::default())
                    .await,
            );
            if result.is_err() {
                self.expectations.deletion_observed(key, &key_of(*pod));
            }
            result?;
        }
        Ok(())
    }
}

fn is_rolling_update(set: &DaemonSet) -> bool {
    set.spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

fn revision_hash(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_HASH)
        .map(String::as_str)
}

/// The node a daemon pod is for: where it is bound, else the node its affinity names.
fn node_of(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    if let Some(node) = spec
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
    {
        return node;
    }
    spec.and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .and_then(|s| s.node_selector_terms.first())
        .and_then(|t| t.match_fields.as_ref())
        .and_then(|f| f.iter().find(|r| r.key == "metadata.name"))
        .and_then(|r| r.values.as_ref()?.first().cloned())
        .unwrap_or_default()
}

/// The tolerations upstream adds to every daemon pod, so that daemons run (and stay) on
/// nodes that are not ready, unreachable, under pressure or cordoned.
fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let tolerate = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut tolerations = vec![
        tolerate("node.kubernetes.io/not-ready", "NoExecute"),
        tolerate("node.kubernetes.io/unreachable", "NoExecute"),
        tolerate("node.kubernetes.io/disk-pressure", "NoSchedule"),
        tolerate("node.kubernetes.io/memory-pressure", "NoSchedule"),
        tolerate("node.kubernetes.io/pid-pressure", "NoSchedule"),
        tolerate("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        tolerations.push(tolerate(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    tolerations
}

/// Whether `node` should run the daemon: the template's node selector and required
/// affinity match it, and it tolerates the node's NoSchedule and NoExecute taints (with
/// the tolerations upstream adds).
pub fn should_run(template: &PodTemplateSpec, node: &Node) -> bool {
    let spec = template.spec.clone().unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if !spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(required) = required {
        if !required
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node))
        {
            return false;
        }
    }
    let mut tolerations = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(daemon_tolerations(spec.host_network == Some(true)));
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerated_by_any(&tolerations, t))
}

/// The daemon pod for `node`: the template, with the revision label, upstream's
/// tolerations, and a required affinity to exactly that node (so the scheduler places it).
fn daemon_pod(set: &DaemonSet, node: &str, hash: &str) -> Result<Pod> {
    let template = set.spec.template.clone();
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH.into(), hash.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    let mut tolerations = spec.tolerations.take().unwrap_or_default();
    for extra in daemon_tolerations(spec.host_network == Some(true)) {
        if !tolerations
            .iter()
            .any(|t| t.key == extra.key && t.effect == extra.effect)
        {
            tolerations.push(extra);
        }
    }
    spec.tolerations = Some(tolerations);
    let this_node = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.to_string()]),
        }]),
        match_expressions: None,
    };
    // As upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: one term, for this node.
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![this_node],
    });
    let mut pod = pods::from_template(
        &template,
        set,
        pods::PodName::Generated(format!("{}-", set.name_any())),
    );
    pod.metadata.labels = Some(labels);
    pod.spec = Some(spec);
    Ok(pod)
}

/// Upstream's DaemonSet status counts.
fn calculate_status(
    set: &DaemonSet,
    owned: &[Arc<Pod>],
    nodes: &[Arc<Node>],
    hash: &str,
    now: Timestamp,
) -> DaemonSetStatus {
    let spec = set.spec.clone();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let (mut desired, mut current, mut misscheduled) = (0, 0, 0);
    let (mut ready, mut available, mut updated) = (0, 0, 0);
    for node in nodes {
        let node_name = node.name_any();
        let here: Vec<&Pod> = owned
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| p.metadata.deletion_timestamp.is_none() && node_of(p) == node_name)
            .collect();
        let should = should_run(&spec.template, node);
        if should {
            desired += 1;
        }
        if here.is_empty() {
            continue;
        }
        if !should {
            misscheduled += 1;
            continue;
        }
        current += 1;
        let newest = here
            .iter()
            .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .copied();
        if let Some(pod) = newest {
            if pods::is_ready(pod) {
                ready += 1;
                if pods::is_available(pod, min_ready, now) {
                    available += 1;
                }
            }
            if revision_hash(pod) == Some(hash) {
                updated += 1;
            }
        }
    }
    DaemonSetStatus {
        current_number_scheduled: current,
        desired_number_scheduled: desired,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: (available > 0).then_some(available),
        number_unavailable: (desired - available > 0).then_some(desired - available),
        updated_number_scheduled: (updated > 0).then_some(updated),
        observed_generation: set.metadata.generation,
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    }
}

impl crate::controller::Reconcile for DaemonSetController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(set) = self.sets.get(&ObjectRef::new(name).within(ns)) else {
            self.expectations.delete(key);
            return Ok(None);
        };
        let spec = set.spec.clone();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let labels = set.spec.selector.match_labels.clone().unwrap_or_default();
        let (hash, _) = crate::history::current(
            &self.client,
            &self.revisions,
            set.as_ref(),
            &spec.template,
            &labels,
            set.status.as_ref().and_then(|s| s.collision_count),
        )
        .await?;
        let owned: Vec<Arc<Pod>> = owner::controlled_by(&self.pods, ns, &uid);
        let mut by_node: HashMap<String, Vec<&Pod>> = HashMap::new();
        for pod in &owned {
            if pod.metadata.deletion_timestamp.is_none() {
                by_node.entry(node_of(pod)).or_default().push(pod);
            }
        }
        let nodes = self.nodes.state();
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);

        let mut create_on = Vec::new();
        let mut delete = Vec::new();
        for node in &nodes {
            let node_name = node.name_any();
            let mut here = by_node.remove(&node_name).unwrap_or_default();
            if !should_run(&spec.template, node) {
                delete.extend(here);
                continue;
            }
            // A failed daemon pod goes, so that a new one replaces it.
            let (failed, mut running): (Vec<&Pod>, Vec<&Pod>) =
                here.drain(..).partition(|p| pods::phase(p) == "Failed");
            delete.extend(failed);
            if running.is_empty() {
                create_on.push(node_name);
            } else if running.len() > 1 {
                // Keep the oldest (upstream keeps the one created first).
                running.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
                delete.extend(running.drain(1..));
            }
        }
        // Pods on nodes that no longer exist, or not bound to any known node.
        delete.extend(
            by_node
                .into_iter()
                .filter(|(node, _)| !node.is_empty())
                .flat_map(|(_, pods)| pods),
        );

        if set.metadata.deletion_timestamp.is_none() && self.expectations.satisfied(key) {
            self.delete_pods(key, &pod_api, &delete).await?;
            self.create_pods(key, &set, &pod_api, &create_on, &hash)
                .await?;
            if is_rolling_update(&set) {
                let surplus = self.rolling_update_victims(&set, &owned, &nodes, &hash);
                self.delete_pods(key, &pod_api, &surplus).await?;
            }
        }

        let status = calculate_status(&set, &owned, &nodes, &hash, Timestamp::now());
        if set.status.as_ref() != Some(&status) {
            let mut updated = (*set).clone();
            updated.status = Some(status);
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), ns);
            api.replace_status(&set.name_any(), &PostParams::default(), &updated)
                .await?;
        }
        // Come back when a ready pod becomes available.
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = Timestamp::now();
        let wait = owned
            .iter()
            .filter_map(|p| pods::until_available(p, min_ready, now))
            .min();
        Ok(wait.map(|s| Duration::from_secs(s.unsigned_abs())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(key, effect)| Taint {
                            key: key.to_string(),
                            effect: effect.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn template(selector: &[(&str, &str)]) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                node_selector: (!selector.is_empty()).then(|| {
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn which_nodes_run_the_daemon() {
        let any = template(&[]);
        assert!(should_run(&any, &node("a", &[], &[])));
        // Cordoned or not ready: daemons run anyway (upstream's added tolerations).
        assert!(should_run(
            &any,
            &node(
                "a",
                &[],
                &[("node.kubernetes.io/unschedulable", "NoSchedule")]
            )
        ));
        assert!(should_run(
            &any,
            &node("a", &[], &[("node.kubernetes.io/not-ready", "NoExecute")])
        ));
        // Another taint: not without a toleration.
        assert!(!should_run(
            &any,
            &node("a", &[], &[("dedicated", "NoSchedule")])
        ));
        assert!(should_run(
            &any,
            &node("a", &[], &[("soft", "PreferNoSchedule")])
        ));
        let picky = template(&[("disk", "ssd")]);
        assert!(!should_run(&picky, &node("a", &[], &[])));
        assert!(should_run(&picky, &node("a", &[("disk", "ssd")], &[])));
    }

    #[test]
    fn daemon_pods_are_pinned_to_their_node() {
        let set = DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: k8s_openapi::api::apps::v1::DaemonSetSpec {
                template: template(&[]),
                ..Default::default()
            },
            status: None,
        };
        let pod = daemon_pod(&set, "n1", "abc").unwrap();
        assert_eq!(node_of(&pod), "n1");
        assert_eq!(revision_hash(&pod), Some("abc"));
        let tolerations = pod.spec.unwrap().tolerations.unwrap();
        assert_eq!(tolerations.len(), 6);
    }
}
