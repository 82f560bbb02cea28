//! The CronJob controller (upstream's `cronjob` controller, v2): creates a Job at each
//! scheduled time, with upstream's names (`<cronjob>-<minutes since the epoch>`),
//! concurrency policies, starting deadline and history limits.
//!
//! `sync(key)`: bring `status.active` in line with the Jobs that exist, note the last
//! successful run, delete finished Jobs beyond the history limits, then, unless
//! suspended, start the most recent missed run (if its deadline allows and the
//! concurrency policy agrees), and come back at the next scheduled time.

pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::controller::{key_of, split_key};
use crate::error::{is_status, Result};
use crate::informer::InformerFactory;
use crate::job::util::{condition, is_finished};
use crate::owner;
use crate::queue::WorkQueue;
use schedule::Schedule;

/// The annotation with the time a Job was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// How many missed runs are looked at; beyond, only the latest ones count (upstream
/// warns at 100).
const MAX_MISSED: usize = 100;

pub struct CronJobController {
    client: Client,
    cron_jobs: Store<CronJob>,
    jobs: Store<Job>,
    queue: Arc<WorkQueue>,
    events: crate::events::Events,
}

impl CronJobController {
    pub fn new(factory: &InformerFactory) -> Arc<CronJobController> {
        let cron_informer = factory.informer::<CronJob>();
        let job_informer = factory.informer::<Job>();
        let controller = Arc::new(CronJobController {
            client: factory.client_for("cronjob-controller"),
            cron_jobs: cron_informer.store(),
            jobs: job_informer.store(),
            queue: factory.queue("cronjob"),
            events: crate::events::Events::new(
                factory.client_for("cronjob-controller"),
                "cronjob-controller",
            ),
        });
        cron_informer.enqueue_into(controller.queue.clone());
        let queue = controller.queue.clone();
        job_informer.add_handler(move |old, new| {
            let Some(job) = new.or(old) else { return };
            if let Some(reference) = owner::controller_of(&job.metadata) {
                if reference.kind == "CronJob" {
                    let ns = job.metadata.namespace.clone().unwrap_or_default();
                    queue.add(format!("{ns}/{}", reference.name));
                }
            }
        });
        controller
    }

    /// The most recent scheduled time that has passed without a run, if one should start
    /// now (within `startingDeadlineSeconds`).
    fn due_run(
        &self,
        cron_job: &CronJob,
        schedule: &Schedule,
        zone: &TimeZone,
        status: &CronJobStatus,
        now: Timestamp,
    ) -> Option<Timestamp> {
        let created = cron_job.metadata.creation_timestamp.as_ref()?.0;
        let mut earliest = status.last_schedule_time.as_ref().map_or(created, |t| t.0);
        let deadline = cron_job.spec.starting_deadline_seconds;
        if let Some(seconds) = deadline {
            let window = now - jiff::SignedDuration::from_secs(seconds);
            if window > earliest {
                earliest = window;
            }
        }
        let mut most_recent = None;
        let mut cursor = earliest;
        for _ in 0..MAX_MISSED {
            match schedule.next_after(cursor, zone) {
                Some(next) if next <= now => {
                    most_recent = Some(next);
                    cursor = next;
                }
                _ => return most_recent,
            }
        }
        // Too many missed: upstream warns and starts the latest one only.
        tracing::warn!(
            cronjob = %key_of(cron_job),
            "too many missed start times; starting the most recent one"
        );
        let mut latest = most_recent;
        let mut cursor = now - jiff::SignedDuration::from_hours(24);
        while let Some(next) = schedule.next_after(cursor, zone).filter(|n| *n <= now) {
            latest = Some(next);
            cursor = next;
        }
        latest
    }

    /// Starts the run scheduled at `due` as the concurrency policy allows; the new Job's
    /// reference, or `None` if none was made.
    async fn start_run(
        &self,
        cron_job: &CronJob,
        jobs: &Api<Job>,
        active: &mut Vec<ObjectReference>,
        due: Timestamp,
        zone: &TimeZone,
    ) -> Result<Option<ObjectReference>> {
        let name = format!("{}-{}", cron_job.name_any(), due.as_second() / 60);
        if active
            .iter()
            .any(|a| a.name.as_deref() == Some(name.as_str()))
        {
            return Ok(None);
        }
        match cron_job.spec.concurrency_policy.as_deref() {
            Some("Forbid") if !active.is_empty() => {
                tracing::info!(cronjob = %key_of(cron_job), "previous run still active; skipping (Forbid)");
                self.events
                    .normal(
                        cron_job,
                        "JobAlreadyActive",
                        "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                    )
                    .await;
                return Ok(None);
            }
            Some("Replace") => {
                for running in active.drain(..) {
                    let Some(old) = running.name else { continue };
                    crate::error::ignore_not_found(
                        jobs.delete(&old, &DeleteParams::background()).await,
                    )?;
                    self.events
                        .normal(cron_job, "SuccessfulDelete", format!("Deleted job {old}"))
                        .await;
                }
            }
            _ => {}
        }
        let job = job_for(cron_job, &name, due, zone);
        match jobs.create(&PostParams::default(), &job).await {
            Ok(created) => {
                tracing::info!(cronjob = %key_of(cron_job), job = %name, "created job");
                self.events
                    .normal(cron_job, "SuccessfulCreate", format!("Created job {name}"))
                    .await;
                Ok(Some(job_reference(&created)))
            }
            // Made by an earlier sync whose cache had not caught up.
            Err(e) if is_status(&e, 409) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the oldest finished Jobs beyond `successfulJobsHistoryLimit` (3) and
    /// `failedJobsHistoryLimit` (1).
    async fn clean_up_history(
        &self,
        cron_job: &CronJob,
        jobs: &Api<Job>,
        owned: &[Arc<Job>],
    ) -> Result<()> {
        let spec = &cron_job.spec;
        for (wanted, limit) in [
            ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
            ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let mut finished: Vec<&Arc<Job>> = owned
                .iter()
                .filter(|j| condition(j, wanted).is_some_and(|c| c.status == "True"))
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .collect();
            let keep = limit.max(0) as usize;
            if finished.len() <= keep {
                continue;
            }
            finished.sort_by_key(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.clone())
                    .map(|t| t.0)
                    .or(j.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
            let excess = finished.len() - keep;
            for job in finished.into_iter().take(excess) {
                crate::error::ignore_not_found(
                    jobs.delete(&job.name_any(), &DeleteParams::background())
                        .await,
                )?;
                self.events
                    .normal(
                        cron_job,
                        "SuccessfulDelete",
                        format!("Deleted job {}", job.name_any()),
                    )
                    .await;
            }
        }
        Ok(())
    }
}

fn job_reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The Job of the run scheduled at `due`, from the CronJob's template.
fn job_for(cron_job: &CronJob, name: &str, due: Timestamp, zone: &TimeZone) -> Job {
    let template = &cron_job.spec.job_template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    // RFC 3339 in the CronJob's zone, `Z` for UTC, as Go's formatting writes it.
    let zoned = due.to_zoned(zone.clone());
    let format = if zoned.offset().seconds() == 0 {
        "%Y-%m-%dT%H:%M:%SZ"
    } else {
        "%Y-%m-%dT%H:%M:%S%:z"
    };
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        zoned.strftime(format).to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cron_job.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owner::controller_ref(cron_job)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

impl crate::controller::Reconcile for CronJobController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(cron_job) = self.cron_jobs.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        if cron_job.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let uid = cron_job.metadata.uid.clone().unwrap_or_default();
        let owned: Vec<Arc<Job>> = owner::controlled_by(&self.jobs, ns, &uid);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let mut status = cron_job.status.clone().unwrap_or_default();

        // What runs now: the owned Jobs that have not finished.
        let mut active: Vec<ObjectReference> = owned
            .iter()
            .filter(|j| !is_finished(j))
            .map(|j| job_reference(j))
            .collect();
        active.sort_by(|a, b| a.name.cmp(&b.name));
        let was_active: Vec<String> = status
            .active
            .iter()
            .flatten()
            .filter_map(|a| a.name.clone())
            .collect();
        for job in owned.iter().filter(|j| is_finished(j)) {
            if was_active.contains(&job.name_any()) {
                let how = if condition(job, "Complete").is_some_and(|c| c.status == "True") {
                    "Complete"
                } else {
                    "Failed"
                };
                let note = format!("Saw completed job: {}, condition: {how}", job.name_any());
                self.events
                    .normal(cron_job.as_ref(), "SawCompletedJob", note)
                    .await;
            }
            if condition(job, "Complete").is_some_and(|c| c.status == "True") {
                let done = job.status.as_ref().and_then(|s| s.completion_time.clone());
                if done.as_ref().map(|t| t.0) > status.last_successful_time.as_ref().map(|t| t.0) {
                    status.last_successful_time = done;
                }
            }
        }
        self.clean_up_history(&cron_job, &jobs, &owned).await?;

        let spec = &cron_job.spec;
        let mut requeue = None;
        if spec.suspend != Some(true) {
            let zone = match spec.time_zone.as_deref() {
                Some(name) => TimeZone::get(name).ok(),
                None => Some(TimeZone::system()),
            };
            match (Schedule::parse(&spec.schedule), zone) {
                (Ok(schedule), Some(zone)) => {
                    let now = Timestamp::now();
                    if let Some(due) = self.due_run(&cron_job, &schedule, &zone, &status, now) {
                        if let Some(created) = self
                            .start_run(&cron_job, &jobs, &mut active, due, &zone)
                            .await?
                        {
                            active.push(created);
                        }
                        status.last_schedule_time = Some(Time(due));
                    }
                    requeue = schedule.next_after(now, &zone).map(|next| {
                        Duration::from_millis(
                            (next.as_millisecond() - now.as_millisecond()).max(0) as u64 + 100,
                        )
                    });
                }
                (Err(error), _) => {
                    tracing::warn!(cronjob = key, %error, "unparseable schedule");
                }
                (_, None) => {
                    tracing::warn!(cronjob = key, zone = ?spec.time_zone, "unknown time zone");
                }
            }
        }

        status.active = (!active.is_empty()).then_some(active);
        if cron_job.status.clone().unwrap_or_default() != status {
            let mut updated = (*cron_job).clone();
            updated.status = Some(status);
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), ns);
            api.replace_status(&cron_job.name_any(), &PostParams::default(), &updated)
                .await?;
        }
        Ok(requeue)
    }
}
