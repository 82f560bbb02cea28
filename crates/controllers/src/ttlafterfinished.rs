//! The TTL-after-finished controller (upstream's `ttlafterfinished`): a Job with
//! `ttlSecondsAfterFinished` is deleted, with its pods (foreground), that many seconds
//! after it finished.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;

use crate::controller::{key_of, split_key, Reconcile};
use crate::error::{is_status, Result};
use crate::informer::InformerFactory;
use crate::job::util::condition;
use crate::queue::WorkQueue;

pub struct TtlAfterFinishedController {
    client: Client,
    jobs: Store<Job>,
    queue: Arc<WorkQueue>,
}

impl TtlAfterFinishedController {
    pub fn new(factory: &InformerFactory) -> Arc<TtlAfterFinishedController> {
        let informer = factory.informer::<Job>();
        let controller = Arc::new(TtlAfterFinishedController {
            client: factory.client_for("ttl-after-finished-controller"),
            jobs: informer.store(),
            queue: factory.queue("ttl_jobs_to_delete"),
        });
        let queue = controller.queue.clone();
        informer.add_handler(move |_, new| {
            if let Some(job) = new.filter(|j| needs_cleanup(j)) {
                queue.add(key_of(job));
            }
        });
        controller
    }
}

/// Finished, with a TTL, and not being deleted already.
fn needs_cleanup(job: &Job) -> bool {
    job.metadata.deletion_timestamp.is_none()
        && job
            .spec
            .as_ref()
            .and_then(|s| s.ttl_seconds_after_finished)
            .is_some()
        && finished_at(job).is_some()
}

/// When the Job finished: the transition time of its `Complete` or `Failed` condition.
fn finished_at(job: &Job) -> Option<Timestamp> {
    ["Complete", "Failed"]
        .iter()
        .filter_map(|t| condition(job, t))
        .find(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.map(|t| t.0))
}

impl Reconcile for TtlAfterFinishedController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(job) = self.jobs.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        if !needs_cleanup(&job) {
            return Ok(None);
        }
        let ttl = job
            .spec
            .as_ref()
            .and_then(|s| s.ttl_seconds_after_finished)
            .unwrap_or(0);
        let Some(finished) = finished_at(&job) else {
            return Ok(None);
        };
        let expires = finished.as_millisecond() + i64::from(ttl) * 1000;
        let left = expires - Timestamp::now().as_millisecond();
        if left > 0 {
            return Ok(Some(Duration::from_millis(left as u64)));
        }
        tracing::info!(job = key, ttl, "deleting a finished job whose TTL expired");
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        // As upstream: foreground, and only the version that was judged expired.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: job.metadata.resource_version.clone(),
                uid: job.metadata.uid.clone(),
            }),
            ..DeleteParams::foreground()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(None),
            // Gone, or changed since (its TTL may have changed): look again on its event.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
