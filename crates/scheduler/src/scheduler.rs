//! The scheduler proper: informers feed the [`Cache`] and the [`SchedulingQueue`]; one
//! loop pops a pod, runs its profile over a snapshot, assumes the chosen node and hands
//! the binding to a task of its own (upstream's scheduling and binding cycles), so the
//! next pod is scheduled while the previous binding is on the wire.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Binding, Namespace, Node, ObjectReference, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::oneshot;

use crate::cache::{pod_key, Cache, PodInfo, SelectingKind};
use crate::feedback::{self, Feedback};
use crate::framework::{ClusterEvent, Profile};
use crate::metrics::{Metrics, Outcome};
use crate::queue::SchedulingQueue;
use prometheus_client::registry::Registry;

/// A running scheduler's shared state.
pub struct Scheduler {
    client: Client,
    profiles: HashMap<String, Arc<Profile>>,
    feedback: HashMap<String, Feedback>,
    cache: Mutex<Cache>,
    queue: Arc<SchedulingQueue>,
    pub metrics: Arc<Metrics>,
    registry: Arc<Registry>,
}

fn scheduler_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default-scheduler")
}

fn is_assigned(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// The parts of a node whose change can make a pod fit (upstream ignores heartbeats).
fn node_fingerprint(node: &Node) -> impl PartialEq + '_ {
    (
        node.metadata.labels.as_ref(),
        node.spec.as_ref().map(|s| (&s.taints, s.unschedulable)),
        node.status.as_ref().map(|s| (&s.allocatable, &s.images)),
    )
}

impl Scheduler {
    pub fn new(client: Client, profiles: Vec<Profile>) -> Arc<Scheduler> {
        let feedback = profiles
            .iter()
            .map(|p| {
                (
                    p.scheduler_name.clone(),
                    Feedback::new(client.clone(), &p.scheduler_name),
                )
            })
            .collect();
        let queue = Arc::new(SchedulingQueue::new());
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry, Arc::downgrade(&queue));
        Arc::new(Scheduler {
            profiles: profiles
                .into_iter()
                .map(|p| (p.scheduler_name.clone(), Arc::new(p)))
                .collect(),
            feedback,
            client,
            cache: Mutex::new(Cache::default()),
            queue,
            metrics,
            registry: Arc::new(registry),
        })
    }

    /// The registry of the scheduler's metrics, to serve at `/metrics`.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: ClusterEvent) {
        let profiles = &self.profiles;
        self.queue.on_event(
            event,
            |plugin| {
                profiles.values().any(|p| {
                    p.plugin(plugin)
                        .is_some_and(|pl| pl.events().contains(&event))
                })
            },
            Instant::now(),
        );
    }

    fn on_pod(&self, pod: Pod) {
        let key = pod_key(&pod);
        if is_assigned(&pod) {
            self.queue.delete(&key);
            self.cache().forget_nomination(&key);
            let known = self.cache().is_placed(&key);
            let finished = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            self.cache().apply_assigned_pod(Arc::new(pod));
            self.emit(match (known, finished) {
                (_, true) => ClusterEvent::AssignedPodDelete,
                (true, false) => ClusterEvent::AssignedPodUpdate,
                (false, false) => ClusterEvent::AssignedPodAdd,
            });
            return;
        }
        let gated = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        if pod.metadata.deletion_timestamp.is_some()
            || gated
            || !self.profiles.contains_key(scheduler_name(&pod))
        {
            self.queue.delete(&key);
            self.cache().forget_nomination(&key);
            return;
        }
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
            .filter(|n| !n.is_empty());
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        // A nomination only this scheduler knows yet (its status write still on the way)
        // is kept; one the API shows is taken from there.
        if let Some(node) = nominated {
            self.cache().nominate(info.clone(), &node);
        }
        self.queue.add_or_update(info, Instant::now());
    }

    fn on_pod_deleted(&self, key: &str) {
        self.queue.delete(key);
        self.cache().forget_nomination(key);
        if self.cache().remove_pod(key) {
            self.emit(ClusterEvent::AssignedPodDelete);
        }
    }

    fn on_node(&self, node: Node) {
        let mut cache = self.cache();
        let old = cache.apply_node(node.clone());
        drop(cache);
        match old {
            None => self.emit(ClusterEvent::NodeAdd),
            Some(old) if node_fingerprint(&old) != node_fingerprint(&node) => {
                self.emit(ClusterEvent::NodeUpdate)
            }
            Some(_) => {}
        }
    }

    /// Keeps the cache and queue in step with the API's pods.
    async fn watch_pods(self: Arc<Self>, synced: SyncSignal) -> anyhow::Result<()> {
        follow(
            Api::<Pod>::all(self.client.clone()),
            |pod| self.on_pod(pod),
            |key| self.on_pod_deleted(key),
            // Placed pods are in the cache, pending ones in the queue.
            || {
                let mut keys = self.cache().pod_keys();
                keys.extend(self.queue.keys());
                keys
            },
            synced,
        )
        .await
    }

    async fn watch_nodes(self: Arc<Self>, synced: SyncSignal) -> anyhow::Result<()> {
        let this = self.clone();
        follow(
            Api::<Node>::all(self.client.clone()),
            |node| self.on_node(node),
            |name| this.cache().remove_node(name),
            || self.cache().node_names(),
            synced,
        )
        .await
    }

    /// Keeps the namespaces' labels, which `namespaceSelector`s in pod affinity terms read.
    async fn watch_namespaces(self: Arc<Self>, synced: SyncSignal) -> anyhow::Result<()> {
        follow(
            Api::<Namespace>::all(self.client.clone()),
            |ns| {
                let name = ns.metadata.name.clone().unwrap_or_default();
                let labels = ns.metadata.labels.unwrap_or_default();
                if self.cache().apply_namespace(&name, labels) {
                    self.emit(ClusterEvent::NamespaceChange);
                }
            },
            |name| self.cache().remove_namespace(name),
            || self.cache().namespace_names(),
            synced,
        )
        .await
    }

    /// Keeps the selectors of one kind of Service or controller, which default topology
    /// spreading reads.
    async fn watch_selectors<K>(
        self: Arc<Self>,
        kind: SelectingKind,
        selector_of: fn(&K) -> Option<LabelSelector>,
        synced: SyncSignal,
    ) -> anyhow::Result<()>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + 'static,
        K::DynamicType: Default,
    {
        follow(
            Api::<K>::all(self.client.clone()),
            |o| {
                let key = format!(
                    "{}/{}",
                    o.meta().namespace.as_deref().unwrap_or_default(),
                    o.meta().name.as_deref().unwrap_or_default()
                );
                self.cache().apply_selector(kind, &key, selector_of(&o));
            },
            |key| self.cache().apply_selector(kind, key, None),
            || self.cache().selector_keys(kind),
            synced,
        )
        .await
    }

    /// Keeps the PodDisruptionBudgets, which preemption tries not to violate.
    async fn watch_pdbs(self: Arc<Self>, synced: SyncSignal) -> anyhow::Result<()> {
        follow(
            Api::<PodDisruptionBudget>::all(self.client.clone()),
            |pdb| self.cache().apply_pdb(pdb),
            |key| self.cache().remove_pdb(key),
            || self.cache().pdb_keys(),
            synced,
        )
        .await
    }

    /// Schedules pods until the queue closes.
    async fn scheduling_loop(self: Arc<Self>, synced: Vec<oneshot::Receiver<()>>) {
        // As upstream waits for its informers' caches: a pod judged against a partial
        // list of nodes would be reported unschedulable for no reason.
        for informer in synced {
            if informer.await.is_err() {
                return;
            }
        }
        let mut start = 0usize;
        let mut seed: u64 = Instant::now().elapsed().as_nanos() as u64 | 0x9E37_79B9_7F4A_7C15;
        while let Some(queued) = self.queue.pop().await {
            self.schedule_one(queued, &mut start, &mut seed);
        }
    }

    fn schedule_one(
        self: &Arc<Self>,
        queued: crate::queue::QueuedPod,
        start: &mut usize,
        seed: &mut u64,
    ) {
        let started = Instant::now();
        let pod = queued.info.clone();
        let Some(profile) = self.profiles.get(scheduler_name(&pod.pod)).cloned() else {
            self.queue.done(&pod.key);
            return;
        };
        let snapshot = self.cache().snapshot();
        if snapshot.nodes.is_empty() {
            let seconds = started.elapsed().as_secs_f64();
            self.metrics
                .attempt(Outcome::Error, &profile.scheduler_name, seconds);
            self.report_failure(
                &profile,
                &pod,
                feedback::REASON_SCHEDULER_ERROR,
                feedback::ERR_NO_NODES.into(),
            );
            self.queue.requeue(&queued, BTreeSet::new(), Instant::now());
            return;
        }
        match profile.schedule(&pod, &snapshot, start, seed) {
            Ok(result) => {
                tracing::debug!(pod = %pod.key, node = %result.node, evaluated = result.evaluated, feasible = result.feasible, "scheduled");
                self.cache().assume(pod.clone(), &result.node);
                let this = self.clone();
                tokio::spawn(async move { this.bind(profile, queued, result.node, started).await });
            }
            Err(mut fit) => {
                let pdbs = self.cache().pdbs();
                match crate::preemption::find_candidate(&profile, &pod, &fit, &snapshot, &pdbs) {
                    Some(candidate) => {
                        tracing::info!(pod = %pod.key, node = %candidate.node, victims = candidate.victims.len(), "preempting");
                        self.metrics.preempting(candidate.victims.len());
                        self.cache().nominate(pod.clone(), &candidate.node);
                        let client = self.client.clone();
                        let name = profile.scheduler_name.clone();
                        let preemptor = pod.clone();
                        tokio::spawn(async move {
                            crate::preemption::preempt(&client, &name, &preemptor, candidate).await
                        });
                    }
                    None => {
                        if let Ok(post) =
                            feedback::preemption_message(&profile, &pod, &fit, &snapshot)
                        {
                            fit.post_filter_msg = Some(post);
                        }
                    }
                }
                let seconds = started.elapsed().as_secs_f64();
                self.metrics
                    .attempt(Outcome::Unschedulable, &profile.scheduler_name, seconds);
                let message = feedback::fit_error_message(&fit);
                tracing::info!(pod = %pod.key, %message, "unschedulable");
                self.report_failure(&profile, &pod, feedback::REASON_UNSCHEDULABLE, message);
                self.queue
                    .requeue(&queued, fit.diagnosis.unschedulable_plugins, Instant::now());
            }
        }
    }

    fn report_failure(
        &self,
        profile: &Profile,
        pod: &Arc<PodInfo>,
        reason: &'static str,
        message: String,
    ) {
        if let Some(fb) = self.feedback.get(&profile.scheduler_name).cloned() {
            let pod = pod.pod.clone();
            tokio::spawn(async move { fb.failed(&pod, reason, &message).await });
        }
    }

    async fn bind(
        self: Arc<Self>,
        profile: Arc<Profile>,
        queued: crate::queue::QueuedPod,
        node: String,
        started: Instant,
    ) {
        let pod = &queued.info;
        let namespace = pod.namespace().to_string();
        let name = pod.pod.metadata.name.clone().unwrap_or_default();
        let binding = Binding {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: pod.pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.clone()),
                ..Default::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let result: Result<serde_json::Value, kube::Error> = api
            .create_subresource("binding", &name, &PostParams::default(), &binding)
            .await;
        match result {
            Ok(_) => {
                let seconds = started.elapsed().as_secs_f64();
                self.metrics
                    .attempt(Outcome::Scheduled, &profile.scheduler_name, seconds);
                let waited = queued.first_seen.elapsed().as_secs_f64();
                self.metrics.bound(queued.attempts, waited);
                self.queue.done(&pod.key);
                if let Some(fb) = self.feedback.get(&profile.scheduler_name) {
                    fb.scheduled(&pod.pod, &node).await;
                }
            }
            Err(e) => {
                self.cache().forget(&pod.key);
                match &e {
                    // Gone, or bound by someone else: nothing left to do.
                    kube::Error::Api(s) if s.code == 404 || s.code == 409 => {
                        tracing::info!(pod = %pod.key, error = %e, "binding rejected");
                        self.queue.done(&pod.key);
                    }
                    _ => {
                        let seconds = started.elapsed().as_secs_f64();
                        self.metrics
                            .attempt(Outcome::Error, &profile.scheduler_name, seconds);
                        tracing::warn!(pod = %pod.key, error = %e, "binding failed");
                        self.report_failure(
                            &profile,
                            pod,
                            feedback::REASON_SCHEDULER_ERROR,
                            format!("binding rejected: {e}"),
                        );
                        self.queue.requeue(&queued, BTreeSet::new(), Instant::now());
                    }
                }
            }
        }
    }

    /// Runs informers, the periodic flushes and the scheduling loop until cancelled or an
    /// informer fails for good.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let mut synced = Vec::new();
        let mut signal = || {
            let (tx, rx) = oneshot::channel();
            synced.push(rx);
            SyncSignal(Some(tx))
        };
        let pods = tokio::spawn(self.clone().watch_pods(signal()));
        let nodes = tokio::spawn(self.clone().watch_nodes(signal()));
        let namespaces = tokio::spawn(self.clone().watch_namespaces(signal()));
        let pdbs = tokio::spawn(self.clone().watch_pdbs(signal()));
        // Controllers' selectors only shape scores (default spreading): pods are not held
        // back until they are listed.
        let selectors = [
            tokio::spawn(self.clone().watch_selectors::<Service>(
                SelectingKind::Service,
                // A Service without a selector selects nothing (an empty one, all).
                |s| equality_selector(s.spec.as_ref()?.selector.clone()),
                SyncSignal::UNAWAITED,
            )),
            tokio::spawn(self.clone().watch_selectors::<ReplicationController>(
                SelectingKind::ReplicationController,
                |rc| equality_selector(rc.spec.as_ref()?.selector.clone()),
                SyncSignal::UNAWAITED,
            )),
            tokio::spawn(self.clone().watch_selectors::<ReplicaSet>(
                SelectingKind::ReplicaSet,
                |rs| Some(rs.spec.selector.clone()),
                SyncSignal::UNAWAITED,
            )),
            tokio::spawn(self.clone().watch_selectors::<StatefulSet>(
                SelectingKind::StatefulSet,
                |ss| Some(ss.spec.selector.clone()),
                SyncSignal::UNAWAITED,
            )),
        ];
        let flush = {
            let this = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    this.queue.flush_unschedulable(Instant::now());
                }
            })
        };
        let looping = tokio::spawn(self.clone().scheduling_loop(synced));
        let guard = AbortOnDrop(vec![
            pods.abort_handle(),
            nodes.abort_handle(),
            namespaces.abort_handle(),
            pdbs.abort_handle(),
            selectors[0].abort_handle(),
            selectors[1].abort_handle(),
            selectors[2].abort_handle(),
            selectors[3].abort_handle(),
            flush.abort_handle(),
            looping.abort_handle(),
        ]);
        let outcome = tokio::select! {
            r = pods => r.map_err(anyhow::Error::from).and_then(|r| r),
            r = nodes => r.map_err(anyhow::Error::from).and_then(|r| r),
            r = namespaces => r.map_err(anyhow::Error::from).and_then(|r| r),
            r = pdbs => r.map_err(anyhow::Error::from).and_then(|r| r),
            (r, _, _) = futures::future::select_all(selectors) => r.map_err(anyhow::Error::from).and_then(|r| r),
        };
        self.queue.close();
        drop(guard);
        outcome
    }

    /// (active, backoff, unschedulable, in flight) queue lengths.
    pub fn queue_lengths(&self) -> (usize, usize, usize, usize) {
        self.queue.lengths()
    }
}

/// Follows one kind of object: `apply` for each one listed or changed, `remove` (by
/// `namespace/name`, or name for cluster-scoped kinds) for each deleted, and after a
/// relist for each `known` key the list no longer has.
async fn follow<K>(
    api: Api<K>,
    apply: impl Fn(K),
    remove: impl Fn(&str),
    known: impl Fn() -> Vec<String>,
    mut synced: SyncSignal,
) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let key = |o: &K| {
        let name = o.meta().name.clone().unwrap_or_default();
        match o.meta().namespace.as_deref() {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        }
    };
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relisted: Option<HashSet<String>> = None;
    while let Some(event) = stream.try_next().await? {
        match event {
            Event::Init => relisted = Some(HashSet::new()),
            Event::InitApply(mut o) | Event::Apply(mut o) => {
                if let Some(seen) = relisted.as_mut() {
                    seen.insert(key(&o));
                }
                // Field ownership means nothing to scheduling and is a large part of
                // every object: dropped, as upstream's scheduler drops it from its cache.
                o.meta_mut().managed_fields = None;
                apply(o);
            }
            Event::Delete(o) => remove(&key(&o)),
            Event::InitDone => {
                if let Some(seen) = relisted.take() {
                    for gone in known().into_iter().filter(|k| !seen.contains(k)) {
                        remove(&gone);
                    }
                }
                synced.done();
            }
        }
    }
    Ok(())
}

/// A label map (a Service's or ReplicationController's selector) as a `LabelSelector`.
fn equality_selector(labels: Option<BTreeMap<String, String>>) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some(labels?),
        ..Default::default()
    })
}

/// Tells the scheduling loop, once, that an informer has listed everything.
struct SyncSignal(Option<oneshot::Sender<()>>);

impl SyncSignal {
    /// For an informer the scheduling loop does not wait for.
    const UNAWAITED: SyncSignal = SyncSignal(None);

    fn done(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Stops the spawned tasks when `run` is cancelled.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}
