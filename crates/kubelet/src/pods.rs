//! The pod manager: watches the pods bound to this node (field selector
//! `spec.nodeName=<node>`) and hands each to its own [`PodWorker`], keyed by
//! UID; periodically removes what is left of pods it no longer knows.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;

use crate::worker::{remove_orphans, PodWorker, Shared};

struct Handle {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

const HOUSEKEEPING: Duration = Duration::from_secs(2);

pub async fn run(shared: Arc<Shared>) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.node_name));
    let mut events = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut workers: HashMap<String, Handle> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut synced = false;
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let dispatch = |workers: &mut HashMap<String, Handle>, pod: Pod| {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let pod = Arc::new(pod);
        if let Some(h) = workers.get(&uid) {
            h.tx.send_replace(Some(pod));
            return;
        }
        let (tx, rx) = watch::channel(Some(pod));
        let worker = PodWorker::new(shared.clone(), rx);
        let task = tokio::spawn(worker.run());
        workers.insert(uid, Handle { tx, task });
    };

    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Apply(pod))) => dispatch(&mut workers, pod),
                Some(Ok(Event::InitApply(pod))) => {
                    listed.extend(pod.metadata.uid.clone());
                    dispatch(&mut workers, pod);
                }
                Some(Ok(Event::Delete(pod))) => {
                    if let Some(h) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                        h.tx.send_replace(None);
                    }
                }
                Some(Ok(Event::Init)) => listed.clear(),
                Some(Ok(Event::InitDone)) => {
                    // Pods deleted while the watch was down.
                    for (uid, h) in &workers {
                        if !listed.contains(uid) {
                            h.tx.send_replace(None);
                        }
                    }
                    synced = true;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => anyhow::bail!("pod watch ended"),
            },
            _ = housekeeping.tick() => {
                workers.retain(|_, h| !h.task.is_finished());
                if synced {
                    let known: HashSet<String> = workers.keys().cloned().collect();
                    if let Err(e) = remove_orphans(&shared, &known).await {
                        tracing::warn!(error = %e, "removing orphaned pods failed");
                    }
                }
            }
        }
    }
}
