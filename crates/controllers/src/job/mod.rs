//! The Job controller (upstream's `pkg/controller/job`): runs pods until enough succeed,
//! or until the Job fails (back-off limit, deadline).
//!
//! Finished pods are counted with upstream's tracking finalizer, so that none is counted
//! twice or lost when pods are deleted: each pod is created with
//! `batch.kubernetes.io/job-tracking`; once it finishes, its UID goes into
//! `status.uncountedTerminatedPods` (written first), then the finalizer comes off the
//! pod, then the UID moves into the `succeeded`/`failed` counts. A crash between any two
//! steps leaves a state the next sync completes.
//!
//! Then: the success criteria met → `SuccessCriteriaMet`, remaining pods deleted, then
//! `Complete` with `completionTime`; failures beyond `backoffLimit` or
//! `activeDeadlineSeconds` passed → `FailureTarget`, pods deleted, then `Failed`;
//! `suspend` → pods deleted, `Suspended`; otherwise pods created (after the failure
//! back-off) or deleted to reach the wanted number.

pub mod failure_policy;
pub mod util;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::controller::{key_of, split_key};
use crate::error::{is_status, Error, Result};
use crate::expectations::Expectations;
use crate::informer::InformerFactory;
use crate::owned_pods::PodEvents;
use crate::owner;
use crate::queue::WorkQueue;
use crate::replicaset::slow_start_batch;
use util::{Want, COMPLETION_INDEX};

/// The finalizer that keeps a Job's pod until the controller has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

pub struct JobController {
    client: Client,
    jobs: Store<Job>,
    pods: Store<Pod>,
    queue: Arc<WorkQueue>,
    expectations: Arc<Expectations>,
    /// When each Job last saw new failures (for the pod failure back-off).
    last_failure: Mutex<HashMap<String, Instant>>,
    events: crate::events::Events,
    /// The resource version of each Job's last status write: a cache older than that
    /// would count finished pods again, so the sync waits for it.
    written: Mutex<HashMap<String, u64>>,
}

impl JobController {
    pub fn new(factory: &InformerFactory) -> Arc<JobController> {
        let job_informer = factory.informer::<Job>();
        let pod_informer = factory.informer::<Pod>();
        let controller = Arc::new(JobController {
            client: factory.client_for("job-controller"),
            jobs: job_informer.store(),
            pods: pod_informer.store(),
            queue: factory.queue("job"),
            expectations: Arc::new(Expectations::new()),
            last_failure: Mutex::new(HashMap::new()),
            events: crate::events::Events::new(
                factory.client_for("job-controller"),
                "job-controller",
            ),
            written: Mutex::new(HashMap::new()),
        });
        job_informer.enqueue_into(controller.queue.clone());
        let pod_events = PodEvents {
            owners: controller.jobs.clone(),
            queue: controller.queue.clone(),
            expectations: controller.expectations.clone(),
            selector: |job: &Job| job.spec.as_ref()?.selector.clone(),
        };
        let me = Arc::downgrade(&controller);
        pod_informer.add_handler(move |old, new| {
            pod_events.handle(old, new);
            // A tracked pod whose Job is gone would keep its finalizer forever.
            if let (Some(me), Some(pod)) = (me.upgrade(), new) {
                if has_tracking_finalizer(pod) && me.owner(pod).is_none() {
                    me.queue.add(orphan_key(pod));
                }
            }
        });
        controller
    }

    /// The Job that controls `pod`, if it is cached.
    fn owner(&self, pod: &Pod) -> Option<Arc<Job>> {
        let reference = owner::controller_of(&pod.metadata)?;
        if reference.kind != "Job" {
            return None;
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let job = self.jobs.get(&ObjectRef::new(&reference.name).within(ns))?;
        (job.metadata.uid.as_deref() == Some(reference.uid.as_str())).then_some(job)
    }

    pub async fn sync(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(job) = self.jobs.get(&ObjectRef::new(name).within(ns)) else {
            self.forget(key);
            return Ok(None);
        };
        if self.cache_is_behind(key, &job) {
            return Ok(Some(Duration::from_millis(100)));
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);

        if util::is_finished(&job) {
            // Counted already; only the finalizers of stragglers are left to remove.
            let pods = owner::controlled_by(&self.pods, ns, &uid);
            for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
                remove_tracking_finalizer(&pod_api, pod).await?;
            }
            return Ok(None);
        }
        // Upstream's ControllerRefManager: matching orphans adopted, pods that stopped
        // matching the selector released.
        let pods: Vec<Arc<Pod>> = match job.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(selector) => {
                let candidates = self
                    .pods
                    .state()
                    .into_iter()
                    .filter(|p| p.metadata.namespace.as_deref() == Some(ns));
                owner::claim_objects(
                    &self.client,
                    job.as_ref(),
                    &owner::selector(selector)?,
                    candidates,
                )
                .await?
            }
            None => owner::controlled_by(&self.pods, ns, &uid),
        };

        let mut job = (*job).clone();
        let now = Timestamp::now();
        self.count_finished_pods(key, &api, &pod_api, &mut job, &pods)
            .await?;

        let active: Vec<&Pod> = pods
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| {
                util::finished(p, &job).is_none() && p.metadata.deletion_timestamp.is_none()
            })
            .collect();
        let terminating = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some() && !finished_phase(p))
            .count();
        let was_suspended = util::has_true_condition(&job, "Suspended");
        let counted = job.status.clone().unwrap_or_default();
        let succeeded = counted.succeeded.unwrap_or(0);
        let failed = counted.failed.unwrap_or(0);
        let completed = util::parse_indexes(counted.completed_indexes.as_deref().unwrap_or(""));
        let failed_indexes = util::parse_indexes(counted.failed_indexes.as_deref().unwrap_or(""));
        let per_index = util::per_index_limit(&job).is_some();
        let success = util::success(&job, succeeded, &completed, active.len());
        let status = job.status.get_or_insert_with(JobStatus::default);
        let mut conditions = status.conditions.take().unwrap_or_default();
        let spec = job.spec.clone().unwrap_or_default();
        let suspended = spec.suspend == Some(true);
        if status.start_time.is_none() && !suspended {
            status.start_time = Some(Time(now));
        }
        let deadline_left = spec.active_deadline_seconds.and_then(|limit| {
            let started = status.start_time.as_ref()?.0;
            Some(limit - (now.as_second() - started.as_second()))
        });

        let all_indexes_done =
            completed.len() + failed_indexes.len() >= spec.completions.unwrap_or(0).max(0) as usize;
        // With per-index limits the total is unlimited unless set (upstream's default).
        let backoff_limit = spec
            .backoff_limit
            .unwrap_or(if per_index { i32::MAX } else { 6 });
        let failure = if per_index
            && spec
                .max_failed_indexes
                .is_some_and(|max| failed_indexes.len() as i32 > max)
        {
            Some((
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            ))
        } else if failed > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if per_index && !failed_indexes.is_empty() && all_indexes_done && active.is_empty() {
            Some(("FailedIndexes", "Job has failed indexes"))
        } else if deadline_left.is_some_and(|left| left <= 0) && !suspended {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        };
        let failing = conditions
            .iter()
            .find(|c| c.type_ == "FailureTarget" && c.status == "True")
            .map(|c| {
                (
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            });
        // Once met, the success criteria stay met, with the reason first recorded.
        let succeeding = conditions
            .iter()
            .find(|c| c.type_ == "SuccessCriteriaMet" && c.status == "True")
            .map(|c| {
                (
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                )
            })
            .or(success);

        let mut deleted = 0;
        let mut created = 0;
        let mut requeue = None;
        if let Some((reason, message)) = failing.or(failure.map(|(r, m)| (r.into(), m.into()))) {
            util::set_condition(
                &mut conditions,
                "FailureTarget",
                "True",
                &reason,
                &message,
                now,
            );
            deleted = self.delete_pods(key, &pod_api, &active).await?;
            if active.is_empty() && terminating == 0 {
                util::set_condition(&mut conditions, "Failed", "True", &reason, &message, now);
                self.events.warning(&job, &reason, message.clone()).await;
            }
        } else if let Some((reason, message)) = succeeding {
            util::set_condition(
                &mut conditions,
                "SuccessCriteriaMet",
                "True",
                &reason,
                &message,
                now,
            );
            deleted = self.delete_pods(key, &pod_api, &active).await?;
            if active.is_empty() && terminating == 0 {
                util::set_condition(&mut conditions, "Complete", "True", &reason, &message, now);
                status.completion_time = Some(Time(now));
                self.events
                    .normal(&job, "Completed", "Job completed".into())
                    .await;
            }
        } else if suspended {
            deleted = self.delete_pods(key, &pod_api, &active).await?;
            util::set_condition(
                &mut conditions,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
        } else {
            if was_suspended {
                util::set_condition(
                    &mut conditions,
                    "Suspended",
                    "False",
                    "JobResumed",
                    "Job resumed",
                    now,
                );
                // As upstream: the active deadline counts from the resumption.
                status.start_time = Some(Time(now));
            }
            // With `podReplacementPolicy: Failed` (implied by a pod failure policy) a
            // terminating pod is replaced only once it has failed.
            let replacing = if failure_policy::has_policy(&job)
                || spec.pod_replacement_policy.as_deref() == Some("Failed")
            {
                terminating
            } else {
                0
            };
            if self.expectations.satisfied(key) {
                let active_indexes: BTreeSet<i32> =
                    active.iter().filter_map(|p| util::pod_index(p)).collect();
                // Failed indexes are as finished as completed ones: never started again.
                let finished_indexes: BTreeSet<i32> =
                    completed.union(&failed_indexes).copied().collect();
                let want = util::wanted_active(
                    &job,
                    succeeded,
                    &finished_indexes,
                    &active_indexes,
                    active.len(),
                );
                let index_failures = util::index_failures(&pods);
                if want.count < active.len() {
                    let now = Timestamp::now();
                    let surplus =
                        crate::pods::pods_to_delete(&active, &[], active.len() - want.count, now);
                    deleted = self.delete_pods(key, &pod_api, &surplus).await?;
                } else if want.count > active.len() + replacing {
                    // Per-index limits back off by the failures of the indexes to restart.
                    let failures = match per_index {
                        true => want
                            .indexes
                            .iter()
                            .filter_map(|i| index_failures.get(i))
                            .copied()
                            .max()
                            .unwrap_or(0),
                        false => failed,
                    };
                    let wait = self.backoff_left(key, failures);
                    if wait.is_zero() {
                        created = self
                            .create_pods(
                                key,
                                &job,
                                &pod_api,
                                want,
                                active.len() + replacing,
                                &index_failures,
                            )
                            .await?;
                    } else {
                        requeue = Some(wait);
                    }
                }
            }
            if let Some(left) = deadline_left.filter(|left| *left > 0) {
                let left = Duration::from_secs(left as u64);
                requeue = Some(requeue.map_or(left, |r: Duration| r.min(left)));
            }
        }

        let status = job.status.get_or_insert_with(JobStatus::default);
        status.conditions = (!conditions.is_empty()).then_some(conditions);
        status.active = nonzero((active.len() + created).saturating_sub(deleted) as i32);
        status.ready = Some(active.iter().filter(|p| crate::pods::is_ready(p)).count() as i32);
        status.terminating = Some((terminating + deleted) as i32);
        self.write_status(key, &api, &job).await?;
        Ok(requeue)
    }

    /// Counts the pods that finished since the last sync, with the tracking finalizer
    /// protocol (see the module documentation). Updates `job` to what was written.
    async fn count_finished_pods(
        &self,
        key: &str,
        api: &Api<Job>,
        pod_api: &Api<Pod>,
        job: &mut Job,
        pods: &[Arc<Pod>],
    ) -> Result<()> {
        let status = job.status.get_or_insert_with(JobStatus::default);
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let before = uncounted.clone();
        let mut ignored = Vec::new();
        let mut fail_job = None;
        let mut failed_indexes = util::parse_indexes(
            job.status
                .as_ref()
                .and_then(|s| s.failed_indexes.as_deref())
                .unwrap_or(""),
        );
        for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
            let Some(success) = util::finished(pod, job) else {
                continue;
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if !success {
                let mut fail_index = false;
                match failure_policy::judge(job, pod) {
                    failure_policy::Verdict::Ignore => {
                        ignored.push(pod.clone());
                        continue;
                    }
                    failure_policy::Verdict::FailJob(message) => {
                        fail_job.get_or_insert(message);
                    }
                    failure_policy::Verdict::FailIndex => fail_index = true,
                    failure_policy::Verdict::Count => {}
                }
                // Past its own limit, an index is given up (and its pod not replaced).
                if let (Some(limit), Some(index)) =
                    (util::per_index_limit(job), util::pod_index(pod))
                {
                    if fail_index || util::index_failures_before(pod) + 1 > limit {
                        failed_indexes.insert(index);
                    }
                }
            }
            let list = if success {
                uncounted.succeeded.get_or_insert_with(Vec::new)
            } else {
                uncounted.failed.get_or_insert_with(Vec::new)
            };
            if !list.contains(&uid) {
                list.push(uid);
            }
        }
        let is_empty = |u: &UncountedTerminatedPods| {
            u.succeeded.as_ref().is_none_or(Vec::is_empty)
                && u.failed.as_ref().is_none_or(Vec::is_empty)
        };
        // Ignored failures count for nothing: the pod just goes, and is replaced.
        for pod in &ignored {
            remove_tracking_finalizer(pod_api, pod).await?;
        }
        if is_empty(&uncounted) {
            return Ok(());
        }
        if util::per_index_limit(job).is_some() {
            job.status
                .get_or_insert_with(JobStatus::default)
                .failed_indexes = Some(util::format_indexes(&failed_indexes));
        }
        if uncounted != before {
            let status = job.status.get_or_insert_with(JobStatus::default);
            status.uncounted_terminated_pods = Some(uncounted.clone());
            // Written with the pods it is about, so a restart cannot lose the verdict.
            if let Some(message) = fail_job {
                let conditions = status.conditions.get_or_insert_with(Vec::new);
                if !conditions.iter().any(|c| c.type_ == "FailureTarget") {
                    util::set_condition(
                        conditions,
                        "FailureTarget",
                        "True",
                        failure_policy::REASON,
                        &message,
                        Timestamp::now(),
                    );
                }
            }
            *job = self.write_status(key, api, job).await?;
        }
        let listed =
            |list: &Option<Vec<String>>| -> Vec<String> { list.clone().unwrap_or_default() };
        let (won, lost) = (listed(&uncounted.succeeded), listed(&uncounted.failed));
        for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            if won.iter().chain(&lost).any(|u| u == uid) {
                remove_tracking_finalizer(pod_api, pod).await?;
            }
        }
        let status = job.status.get_or_insert_with(JobStatus::default);
        status.succeeded = nonzero(status.succeeded.unwrap_or(0) + won.len() as i32);
        status.failed = nonzero(status.failed.unwrap_or(0) + lost.len() as i32);
        if util::is_indexed(job) {
            let status = job.status.get_or_insert_with(JobStatus::default);
            let mut completed =
                util::parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
            completed.extend(
                pods.iter()
                    .filter(|p| {
                        won.iter()
                            .any(|u| Some(u.as_str()) == p.metadata.uid.as_deref())
                    })
                    .filter_map(|p| util::pod_index(p)),
            );
            status.completed_indexes = Some(util::format_indexes(&completed));
        }
        job.status
            .get_or_insert_with(JobStatus::default)
            .uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        if !lost.is_empty() {
            self.lock_failures().insert(key.to_string(), Instant::now());
        }
        Ok(())
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.last_failure.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_written(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, key: &str) {
        self.expectations.delete(key);
        self.lock_failures().remove(key);
        self.lock_written().remove(key);
    }

    fn cache_is_behind(&self, key: &str, job: &Job) -> bool {
        let cached = job
            .metadata
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse::<u64>().ok());
        match (cached, self.lock_written().get(key)) {
            (Some(cached), Some(written)) => cached < *written,
            _ => false,
        }
    }

    /// How long pod creation must still wait after the last failure.
    fn backoff_left(&self, key: &str, failed: i32) -> Duration {
        let Some(since) = self.lock_failures().get(key).copied() else {
            return Duration::ZERO;
        };
        util::backoff_delay(failed).saturating_sub(since.elapsed())
    }

    async fn write_status(&self, key: &str, api: &Api<Job>, job: &Job) -> Result<Job> {
        let name = job.name_any();
        let written = api
            .replace_status(&name, &PostParams::default(), job)
            .await?;
        if let Some(rv) = written
            .metadata
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse::<u64>().ok())
        {
            self.lock_written().insert(key.to_string(), rv);
        }
        Ok(written)
    }

    async fn create_pods(
        &self,
        key: &str,
        job: &Job,
        pod_api: &Api<Pod>,
        want: Want,
        active: usize,
        index_failures: &BTreeMap<i32, i32>,
    ) -> Result<usize> {
        let count = want.count - active;
        let indexes = Mutex::new(want.indexes.into_iter());
        let names = Mutex::new(Vec::new());
        self.expectations.expect_creations(key, count);
        let (created, error) = slow_start_batch(count, 1, || {
            let index = indexes.lock().unwrap_or_else(|e| e.into_inner()).next();
            let pod = pod_for(job, index, index_failures);
            let names = &names;
            async move {
                let pod = pod?;
                let made = pod_api.create(&PostParams::default(), &pod).await?;
                names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(made.name_any());
                Ok::<(), Error>(())
            }
        })
        .await;
        for name in names.into_inner().unwrap_or_else(|e| e.into_inner()) {
            self.events
                .normal(job, "SuccessfulCreate", format!("Created pod: {name}"))
                .await;
        }
        // Creations that did not happen will not be observed.
        for _ in created..count {
            self.expectations.creation_observed(key);
        }
        match error {
            Some(error) => Err(error),
            None => Ok(created),
        }
    }

    async fn delete_pods(&self, key: &str, pod_api: &Api<Pod>, pods: &[&Pod]) -> Result<usize> {
        let targets: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if targets.is_empty() {
            return Ok(0);
        }
        self.expectations
            .expect_deletions(key, targets.iter().map(|p| key_of(*p)).collect());
        for pod in &targets {
            match pod_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {
                    self.expectations.deletion_observed(key, &key_of(*pod))
                }
                Err(e) => {
                    self.expectations.deletion_observed(key, &key_of(*pod));
                    return Err(e.into());
                }
            }
        }
        Ok(targets.len())
    }

    /// A tracked pod whose Job is gone (or a different Job now): drop the finalizer.
    async fn release_orphan(&self, pod_key: &str) -> Result<()> {
        let (ns, name) = split_key(pod_key);
        let ns = ns.unwrap_or_default();
        let Some(pod) = self.pods.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(());
        };
        if !has_tracking_finalizer(&pod) {
            return Ok(());
        }
        // Confirm with the API server, not the cache, that the owner is gone.
        if let Some(reference) = owner::controller_of(&pod.metadata).filter(|r| r.kind == "Job") {
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
            if let Some(job) = jobs.get_opt(&reference.name).await? {
                if job.metadata.uid.as_deref() == Some(reference.uid.as_str()) {
                    return Ok(());
                }
            }
        }
        let pod_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        remove_tracking_finalizer(&pod_api, &pod).await
    }
}

/// Upstream leaves zero counts out (`omitempty`); `ready` and `terminating` are pointers
/// there, so they show zero.
fn nonzero(count: i32) -> Option<i32> {
    (count != 0).then_some(count)
}

impl crate::controller::Reconcile for JobController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        match key.strip_prefix(ORPHAN_PREFIX) {
            Some(pod_key) => self.release_orphan(pod_key).await.map(|()| None),
            None => self.sync(key).await,
        }
    }
}

/// Keys of orphaned tracked pods share the Job queue, marked by this prefix.
const ORPHAN_PREFIX: &str = "orphan-pod:";

fn orphan_key(pod: &Pod) -> String {
    format!("{ORPHAN_PREFIX}{}", key_of(pod))
}

fn finished_phase(pod: &Pod) -> bool {
    matches!(crate::pods::phase(pod), "Succeeded" | "Failed")
}

fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

/// Removes the tracking finalizer, guarded by the pod's UID and the finalizer's place.
async fn remove_tracking_finalizer(pod_api: &Api<Pod>, pod: &Pod) -> Result<()> {
    let Some(patch) = owner::finalizer_removal(
        pod.metadata.uid.as_deref().unwrap_or_default(),
        pod.metadata.finalizers.as_deref().unwrap_or_default(),
        TRACKING_FINALIZER,
    ) else {
        return Ok(());
    };
    crate::error::ignore_not_found(
        pod_api
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await,
    )
}

/// The pod the Job creates from its template (with `index` for Indexed Jobs).
fn pod_for(job: &Job, index: Option<i32>, index_failures: &BTreeMap<i32, i32>) -> Result<Pod> {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .ok_or_else(|| Error::Other("job has no spec".into()))?;
    let meta = template.metadata.clone().unwrap_or_default();
    let name = job.name_any();
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut finalizers = meta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    let generate_name = match index {
        Some(index) => {
            labels.insert(COMPLETION_INDEX.into(), index.to_string());
            annotations.insert(COMPLETION_INDEX.into(), index.to_string());
            if util::per_index_limit(job).is_some() {
                let failures = index_failures.get(&index).copied().unwrap_or(0);
                annotations.insert(util::INDEX_FAILURE_COUNT.into(), failures.to_string());
            }
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{name}-{index}"));
            }
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            };
            for container in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                let vars = container.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == env.name) {
                    vars.push(env.clone());
                }
            }
            format!("{name}-{index}-")
        }
        None => format!("{name}-"),
    };
    let mut pod = crate::pods::from_template(
        &template,
        job,
        crate::pods::PodName::Generated(generate_name),
    );
    pod.metadata.labels = Some(labels);
    pod.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    pod.metadata.finalizers = Some(finalizers);
    pod.spec = Some(spec);
    Ok(pod)
}
