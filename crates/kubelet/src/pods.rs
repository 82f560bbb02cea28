//! The pod manager: merges the pods bound to this node in the API (watch with
//! field selector `spec.nodeName=<node>`) and the static pods of the manifest
//! directory ([`crate::static_pods`]) into one set, as upstream's pod config
//! does, and hands each to its own [`PodWorker`], keyed by UID; keeps the
//! static pods' mirrors; periodically removes what is left of pods it no longer
//! knows.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;

use crate::static_pods::{self, full_name, is_mirror, Mirrors};
use crate::worker::{remove_orphans, PodWorker, Shared};

struct Handle {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
    /// For a static pod: its `namespace/name`, which a newer version waits for.
    static_name: Option<String>,
}

const HOUSEKEEPING: Duration = Duration::from_secs(2);

/// The pods the pod manager runs a worker for, as their workers last got them (static
/// pods in their own form, not as their mirrors): upstream's pod manager's `GetPods`,
/// which the eviction manager and the kubelet's `/pods` read instead of the API.
#[derive(Debug, Default)]
pub struct PodSet(std::sync::RwLock<Vec<Arc<Pod>>>);

impl PodSet {
    pub fn all(&self) -> Vec<Arc<Pod>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Those neither finished nor being deleted: the ones that may still be evicted.
    pub fn active(&self) -> Vec<Arc<Pod>> {
        self.all()
            .into_iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                p.metadata.deletion_timestamp.is_none()
                    && !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .collect()
    }

    fn replace(&self, pods: Vec<Arc<Pod>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = pods;
    }
}

/// The set of pods being merged: workers by UID, the static pods by UID and the
/// API's mirror pods by `namespace/name`.
struct Manager {
    shared: Arc<Shared>,
    workers: HashMap<String, Handle>,
    statics: HashMap<String, Arc<Pod>>,
    mirrors: HashMap<String, Pod>,
}

impl Manager {
    fn spawn(&mut self, uid: String, pod: Pod, static_name: Option<String>) {
        let (tx, rx) = watch::channel(Some(Arc::new(pod)));
        let worker = PodWorker::new(self.shared.clone(), rx);
        let task = tokio::spawn(worker.run());
        self.workers.insert(
            uid,
            Handle {
                tx,
                task,
                static_name,
            },
        );
    }

    fn dispatch(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(h) = self.workers.get(&uid) {
            h.tx.send_replace(Some(Arc::new(pod)));
            return;
        }
        self.spawn(uid, pod, None);
    }

    /// Brings the static pods' workers in line with the files: new ones start (once
    /// an older version of the same name has stopped, as upstream waits), changed
    /// mirrors reach theirs, and those whose file is gone are stopped.
    fn sync_statics(&mut self) {
        for (uid, h) in &self.workers {
            let gone = h.static_name.is_some() && !self.statics.contains_key(uid);
            if gone {
                let stopping =
                    h.tx.borrow()
                        .as_ref()
                        .is_some_and(|p| p.metadata.deletion_timestamp.is_some());
                if !stopping {
                    let pod = h.tx.borrow().as_deref().map(static_pods::removed);
                    h.tx.send_replace(pod.map(Arc::new));
                }
            }
        }
        let statics: Vec<(String, Arc<Pod>)> = self
            .statics
            .iter()
            .map(|(u, p)| (u.clone(), p.clone()))
            .collect();
        for (uid, pod) in statics {
            let name = full_name(&pod);
            let pod = static_pods::for_worker(&pod, self.mirrors.get(&name));
            match self.workers.get(&uid) {
                Some(h) if !h.task.is_finished() => {
                    // Only a real change wakes the worker.
                    if h.tx.borrow().as_deref() != Some(&pod) {
                        h.tx.send_replace(Some(Arc::new(pod)));
                    }
                }
                _ => {
                    let older = self.workers.iter().any(|(u, h)| {
                        *u != uid
                            && h.static_name.as_deref() == Some(name.as_str())
                            && !h.task.is_finished()
                    });
                    if !older {
                        self.spawn(uid, pod, Some(name));
                    }
                }
            }
        }
    }

    /// Makes the workers' pods the ones [`PodSet`] gives.
    fn publish(&self) {
        let pods = self
            .workers
            .values()
            .filter(|h| !h.task.is_finished())
            .filter_map(|h| h.tx.borrow().clone())
            .collect();
        self.shared.pods.replace(pods);
    }

    /// Names of static pods whose worker is still stopping.
    fn stopping_statics(&self) -> HashSet<String> {
        self.workers
            .iter()
            .filter(|(uid, h)| !self.statics.contains_key(*uid) && !h.task.is_finished())
            .filter_map(|(_, h)| h.static_name.clone())
            .collect()
    }
}

pub async fn run(shared: Arc<Shared>, manifests: Option<PathBuf>) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.node_name));
    let mut events = watcher::watcher(api, cfg).default_backoff().boxed();
    let (static_tx, mut static_rx) = watch::channel(None);
    let statics_ready = match manifests {
        Some(dir) => {
            tokio::spawn(static_pods::watch_dir(
                dir,
                shared.node_name.clone(),
                static_tx.clone(),
            ));
            false
        }
        None => true,
    };
    // Kept so that the channel stays open without a directory.
    let _static_tx = static_tx;
    let mut mirrors = Mirrors::new(shared.client.clone(), shared.node_name.clone());
    let mut m = Manager {
        shared: shared.clone(),
        workers: HashMap::new(),
        statics: HashMap::new(),
        mirrors: HashMap::new(),
    };
    let mut statics_ready = statics_ready;
    let mut listed: HashSet<String> = HashSet::new();
    let mut relisted_mirrors: HashMap<String, Pod> = HashMap::new();
    let mut relisting = true;
    let mut synced = false;
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Apply(pod))) if is_mirror(&pod) => {
                    m.mirrors.insert(full_name(&pod), pod);
                    m.sync_statics();
                }
                Some(Ok(Event::InitApply(pod))) if is_mirror(&pod) => {
                    relisted_mirrors.insert(full_name(&pod), pod);
                }
                Some(Ok(Event::Apply(pod))) => m.dispatch(pod),
                Some(Ok(Event::InitApply(pod))) => {
                    listed.extend(pod.metadata.uid.clone());
                    m.dispatch(pod);
                }
                Some(Ok(Event::Delete(pod))) => {
                    if is_mirror(&pod) {
                        m.mirrors.remove(&full_name(&pod));
                    } else if let Some(h) = pod.metadata.uid.as_ref().and_then(|u| m.workers.get(u)) {
                        h.tx.send_replace(None);
                    }
                }
                Some(Ok(Event::Init)) => {
                    listed.clear();
                    relisted_mirrors.clear();
                    relisting = true;
                }
                Some(Ok(Event::InitDone)) => {
                    // API pods deleted while the watch was down (static pods are not
                    // the API's to stop).
                    for (uid, h) in &m.workers {
                        if !listed.contains(uid) && h.static_name.is_none() {
                            h.tx.send_replace(None);
                        }
                    }
                    // The mirrors as listed, swapped in whole: no mirror looks missing
                    // half-way through a relist.
                    m.mirrors = std::mem::take(&mut relisted_mirrors);
                    m.sync_statics();
                    relisting = false;
                    synced = true;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => anyhow::bail!("pod watch ended"),
            },
            r = static_rx.changed() => {
                if r.is_ok() {
                    let pods = static_rx.borrow_and_update().clone().unwrap_or_default();
                    m.statics = pods
                        .iter()
                        .filter_map(|p| Some((p.metadata.uid.clone()?, Arc::new(p.clone()))))
                        .collect();
                    statics_ready = true;
                    m.sync_statics();
                }
            }
            _ = housekeeping.tick() => {
                m.workers.retain(|_, h| !h.task.is_finished());
                if statics_ready {
                    m.sync_statics();
                }
                if synced && statics_ready && !relisting {
                    mirrors.sync(&m.statics, &m.mirrors, &m.stopping_statics()).await;
                    let known: HashSet<String> = m.workers.keys().cloned().collect();
                    if let Err(e) = remove_orphans(&shared, &known).await {
                        tracing::warn!(error = %e, "removing orphaned pods failed");
                    }
                }
            }
        }
        m.publish();
    }
}
