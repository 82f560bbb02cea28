//! The Job controller against a real `skiff apiserver`, driven by real kubectl.
//!
//! A stand-in node finishes each pod as its image says: `busybox:succeed` pods succeed,
//! `busybox:fail` pods fail, `busybox:exit42` pods fail with that exit code, `busybox:run`
//! pods run until deleted; `busybox:odd-fail` and `busybox:exit42-index0` fail by index
//! (the kubelet tests run real containers).

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams};

/// Plays the kubelet for Job pods: each new pod finishes as its image says.
fn run_finishing_node(cluster: &Cluster, ns: &str) -> tokio::task::JoinHandle<()> {
    cluster.play_kubelet(ns, |api, pod| async move {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let index: Option<i32> = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("batch.kubernetes.io/job-completion-index"))
            .and_then(|i| i.parse().ok());
        let exit42 = serde_json::json!({"status": {"phase": "Failed", "containerStatuses": [{
            "name": "c", "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 42, "reason": "Error"}}
        }]}});
        let status = match image.rsplit(':').next().unwrap_or_default() {
            // Runs until it is deleted, then fails, as a killed container does.
            "run" if deleting && phase == Some("Running") => {
                serde_json::json!({"status": {"phase": "Failed"}})
            }
            "run" if phase == Some("Pending") => {
                serde_json::json!({"status": {"phase": "Running"}})
            }
            _ if deleting || phase != Some("Pending") => return,
            "exit42" => exit42,
            // Indexed Jobs: index 0 exits 42, odd indexes fail, the rest succeed.
            "exit42-index0" if index == Some(0) => exit42,
            "odd-fail" if index.is_some_and(|i| i % 2 == 1) => {
                serde_json::json!({"status": {"phase": "Failed"}})
            }
            "fail" => serde_json::json!({"status": {"phase": "Failed"}}),
            _ => serde_json::json!({"status": {"phase": "Succeeded"}}),
        };
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await;
        if deleting {
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
        }
    })
}

/// `kubectl wait --for=condition=CONDITION job/NAME` (up to a minute).
async fn wait_for(cluster: &Cluster, ns: &str, job: &str, condition: &str) {
    cluster
        .kubectl(&[
            "wait",
            &format!("--for=condition={condition}"),
            &format!("job/{job}"),
            "-n",
            ns,
            "--timeout=60s",
        ])
        .await;
}

fn job_yaml(ns: &str, name: &str, spec: &str, image: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: c, image: {image}}}]\n"
    )
}

fn condition(job: &Job, type_: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn pods_of(cluster: &Cluster, ns: &str, job: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    api.list(
        &kube::api::ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")),
    )
    .await
    .expect("pods")
    .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_with_parallelism_and_indexes() {
    let cluster = cluster().await;
    let ns = cluster.namespace("jobs");
    let _node = run_finishing_node(&cluster, &ns);
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);

    // One pod, kubectl's way.
    cluster
        .kubectl(&[
            "create",
            "job",
            "once",
            "--image=busybox:succeed",
            "-n",
            &ns,
        ])
        .await;
    wait_for(&cluster, &ns, "once", "complete").await;
    let once = jobs.get("once").await.expect("job");
    let status = once.status.clone().expect("status");
    assert_eq!(
        (status.succeeded, status.failed, status.active),
        (Some(1), None, None)
    );
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert_eq!(
        condition(&once, "SuccessCriteriaMet"),
        Some(("True".into(), "CompletionsReached".into()))
    );
    assert_eq!(
        condition(&once, "Complete"),
        Some(("True".into(), "CompletionsReached".into()))
    );
    for pod in pods_of(&cluster, &ns, "once").await {
        assert_eq!(
            pod.metadata.finalizers, None,
            "tracking finalizer left on a counted pod"
        );
    }
    let described = cluster
        .kubectl(&["describe", "job", "once", "-n", &ns])
        .await;
    assert!(
        described.contains("SuccessfulCreate") && described.contains("Completed"),
        "{described}"
    );
    let listed = cluster.kubectl(&["get", "job", "once", "-n", &ns]).await;
    assert!(
        listed.contains("Complete") && listed.contains("1/1"),
        "{listed}"
    );

    // Four completions, two at a time.
    cluster
        .apply(&job_yaml(
            &ns,
            "batch",
            "  completions: 4\n  parallelism: 2\n",
            "busybox:succeed",
        ))
        .await;
    wait_for(&cluster, &ns, "batch", "complete").await;
    let batch = jobs.get("batch").await.expect("job");
    assert_eq!(batch.status.as_ref().and_then(|s| s.succeeded), Some(4));
    assert_eq!(
        pods_of(&cluster, &ns, "batch").await.len(),
        4,
        "one pod per completion"
    );

    // Indexed: every index completes once; pods carry their index.
    cluster
        .apply(&job_yaml(
            &ns,
            "indexed",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
            "busybox:succeed",
        ))
        .await;
    wait_for(&cluster, &ns, "indexed", "complete").await;
    let indexed = jobs.get("indexed").await.expect("job");
    assert_eq!(
        indexed
            .status
            .as_ref()
            .and_then(|s| s.completed_indexes.as_deref()),
        Some("0-2")
    );
    let mut hostnames: Vec<String> = pods_of(&cluster, &ns, "indexed")
        .await
        .iter()
        .filter_map(|p| p.spec.as_ref()?.hostname.clone())
        .collect();
    hostnames.sort();
    assert_eq!(hostnames, ["indexed-0", "indexed-1", "indexed-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_stops_at_its_backoff_limit() {
    let cluster = cluster().await;
    let ns = cluster.namespace("jobs-fail");
    let _node = run_finishing_node(&cluster, &ns);
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    cluster
        .apply(&job_yaml(
            &ns,
            "doomed",
            "  backoffLimit: 1\n",
            "busybox:fail",
        ))
        .await;
    // The second pod starts after the 10 s back-off that follows the first failure.
    wait_for(&cluster, &ns, "doomed", "failed").await;
    let doomed = jobs.get("doomed").await.expect("job");
    assert_eq!(doomed.status.as_ref().and_then(|s| s.failed), Some(2));
    assert_eq!(
        condition(&doomed, "FailureTarget"),
        Some(("True".into(), "BackoffLimitExceeded".into()))
    );
    assert_eq!(
        condition(&doomed, "Failed"),
        Some(("True".into(), "BackoffLimitExceeded".into()))
    );
    assert_eq!(pods_of(&cluster, &ns, "doomed").await.len(), 2);
    let listed = cluster.kubectl(&["get", "job", "doomed", "-n", &ns]).await;
    assert!(listed.contains("Failed"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_job_waits_and_deleted_job_takes_its_pods() {
    let cluster = cluster().await;
    let ns = cluster.namespace("jobs-suspend");
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    cluster
        .apply(&job_yaml(
            &ns,
            "later",
            "  suspend: true\n",
            "busybox:succeed",
        ))
        .await;
    eventually("Suspended condition", Duration::from_secs(30), || async {
        let job = jobs.get("later").await.ok()?;
        (condition(&job, "Suspended") == Some(("True".into(), "JobSuspended".into()))).then_some(())
    })
    .await;
    assert!(pods_of(&cluster, &ns, "later").await.is_empty());

    // Resumed, with no node to finish its pod: it runs (and keeps its finalizer).
    cluster
        .kubectl(&[
            "patch",
            "job",
            "later",
            "-n",
            &ns,
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ])
        .await;
    let pod = eventually("a pod once resumed", Duration::from_secs(30), || async {
        pods_of(&cluster, &ns, "later").await.into_iter().next()
    })
    .await;
    assert_eq!(
        pod.metadata.finalizers.as_deref(),
        Some(&["batch.kubernetes.io/job-tracking".to_string()][..])
    );
    eventually("JobResumed", Duration::from_secs(30), || async {
        let job = jobs.get("later").await.ok()?;
        (condition(&job, "Suspended") == Some(("False".into(), "JobResumed".into()))).then_some(())
    })
    .await;

    // Deleting the Job deletes its pod: the finalizer is released for the collector.
    cluster
        .kubectl(&["delete", "job", "later", "-n", &ns, "--timeout=60s"])
        .await;
    eventually(
        "pods gone with the job",
        Duration::from_secs(30),
        || async {
            pods_of(&cluster, &ns, "later")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_job_starts_a_job_each_minute() {
    let cluster = cluster().await;
    let ns = cluster.namespace("cron");
    let _node = run_finishing_node(&cluster, &ns);
    // Upstream's "CronJob Suspend": a suspended CronJob on the same schedule, made
    // first, so that the minute `tick` runs at below is one it had to let pass.
    cluster
        .apply_in(
            &ns,
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: paused}\nspec:\n  schedule: \"* * * * *\"\n  suspend: true\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: c, image: busybox:succeed}]\n",
        )
        .await;
    cluster
        .kubectl(&[
            "create",
            "cronjob",
            "tick",
            "--image=busybox:succeed",
            "--schedule=* * * * *",
            "-n",
            &ns,
        ])
        .await;
    // kubectl's manual run: a Job from the template, outside the schedule.
    cluster
        .kubectl(&["create", "job", "by-hand", "--from=cronjob/tick", "-n", &ns])
        .await;
    wait_for(&cluster, &ns, "by-hand", "complete").await;

    // The scheduled run comes at the next minute.
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    let scheduled = eventually("a scheduled job", Duration::from_secs(75), || async {
        jobs.list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|j| j.metadata.name.as_deref() != Some("by-hand"))
    })
    .await;
    let name = scheduled.metadata.name.clone().unwrap_or_default();
    let stamp = scheduled
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("batch.kubernetes.io/cronjob-scheduled-timestamp"))
        .cloned()
        .expect("scheduled-timestamp annotation");
    let due: jiff::Timestamp = stamp.parse().expect("RFC 3339");
    assert_eq!(name, format!("tick-{}", due.as_second() / 60));
    let owner = &scheduled.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CronJob", "tick")
    );

    wait_for(&cluster, &ns, &name, "complete").await;
    let cron_jobs: Api<k8s_openapi::api::batch::v1::CronJob> =
        Api::namespaced(cluster.client.clone(), &ns);
    let status = eventually("last successful time", Duration::from_secs(30), || async {
        let status = cron_jobs.get("tick").await.ok()?.status?;
        status.last_successful_time.is_some().then_some(status)
    })
    .await;
    assert_eq!(status.last_schedule_time.map(|t| t.0), Some(due));
    let listed = cluster
        .kubectl(&["get", "cronjob", "tick", "-n", &ns])
        .await;
    assert!(
        listed.contains("* * * * *") && listed.contains("False"),
        "{listed}"
    );
    // The suspended one let the same minute pass: no Job, no schedule time.
    let paused = jobs
        .list(&Default::default())
        .await
        .expect("jobs")
        .items
        .into_iter()
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.name == "paused")
        })
        .count();
    assert_eq!(paused, 0, "a suspended CronJob ran");
    let paused = cron_jobs.get("paused").await.expect("paused");
    assert!(paused.status.and_then(|s| s.last_schedule_time).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_job_goes_after_its_ttl() {
    let cluster = cluster().await;
    let ns = cluster.namespace("jobs-ttl");
    let _node = run_finishing_node(&cluster, &ns);
    cluster
        .apply(&job_yaml(
            &ns,
            "brief",
            "  ttlSecondsAfterFinished: 2\n",
            "busybox:succeed",
        ))
        .await;
    wait_for(&cluster, &ns, "brief", "complete").await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    // The TTL runs from the finish the Job records, not from when this test saw it
    // (which may be a while later on a loaded machine).
    let finished = jobs
        .get("brief")
        .await
        .expect("job")
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "Complete"))
        .and_then(|c| c.last_transition_time)
        .expect("Complete condition time")
        .0;
    eventually(
        "the job deleted after its TTL",
        Duration::from_secs(30),
        || async { jobs.get_opt("brief").await.ok()?.is_none().then_some(()) },
    )
    .await;
    // Condition times have whole seconds: the two-second TTL shows as at least one.
    assert!(
        jiff::Timestamp::now().as_second() - finished.as_second() >= 1,
        "deleted before its TTL"
    );
    eventually("its pods gone too", Duration::from_secs(30), || async {
        pods_of(&cluster, &ns, "brief")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_failure_policy_fails_fast_or_ignores_disruptions() {
    let cluster = cluster().await;
    let ns = cluster.namespace("jobs-policy");
    let _node = run_finishing_node(&cluster, &ns);
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);

    // FailJob on exit code 42: the first such failure fails the Job, whatever the
    // back-off limit.
    cluster
        .apply(&job_yaml(
            &ns,
            "fast",
            "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes: {containerName: c, operator: In, values: [42]}\n",
            "busybox:exit42",
        ))
        .await;
    wait_for(&cluster, &ns, "fast", "failed").await;
    let fast = jobs.get("fast").await.expect("job");
    assert_eq!(fast.status.as_ref().and_then(|s| s.failed), Some(1));
    assert_eq!(
        condition(&fast, "Failed"),
        Some(("True".into(), "PodFailurePolicy".into()))
    );
    let pod = &pods_of(&cluster, &ns, "fast").await[0];
    let message = fast
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed"))
        .and_then(|c| c.message.clone());
    assert_eq!(
        message,
        Some(format!(
            "Container c for pod {ns}/{} failed with exit code 42 matching FailJob rule at index 0",
            pod.metadata.name.as_deref().unwrap_or_default()
        ))
    );

    // Ignore on DisruptionTarget (upstream's "ignore DisruptionTarget" conformance test):
    // an evicted pod does not count against a back-off limit of 0; it is replaced once it
    // has failed, and the replacement completes the Job.
    cluster
        .apply(&job_yaml(
            &ns,
            "tolerant",
            "  backoffLimit: 0\n  podFailurePolicy:\n    rules:\n    - action: Ignore\n      onPodConditions: [{type: DisruptionTarget}]\n",
            "busybox:run",
        ))
        .await;
    let first = eventually("the first pod running", Duration::from_secs(30), || async {
        let pods = pods_of(&cluster, &ns, "tolerant").await;
        pods.into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    let first_name = first.metadata.name.clone().expect("name");
    pods.evict(&first_name, &EvictParams::default())
        .await
        .expect("evict");
    let second = eventually("a replacement running", Duration::from_secs(30), || async {
        let pods = pods_of(&cluster, &ns, "tolerant").await;
        pods.into_iter().find(|p| {
            p.metadata.name.as_deref() != Some(first_name.as_str())
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
    })
    .await;
    let finished = serde_json::json!({"status": {"phase": "Succeeded"}});
    pods.patch_status(
        second.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&finished),
    )
    .await
    .expect("finish the replacement");
    wait_for(&cluster, &ns, "tolerant", "complete").await;
    let tolerant = jobs.get("tolerant").await.expect("job");
    let status = tolerant.status.expect("status");
    assert_eq!((status.succeeded, status.failed), (Some(1), None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_policy_completes_an_indexed_job_early() {
    let cluster = cluster().await;
    let ns = cluster.namespace("jobs-success");
    let _node = run_finishing_node(&cluster, &ns);
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    // Upstream's "succeededIndexes rule": index 0 succeeding is enough.
    cluster
        .apply(&job_yaml(
            &ns,
            "leader",
            "  completionMode: Indexed\n  completions: 3\n  parallelism: 3\n  successPolicy:\n    rules:\n    - succeededIndexes: \"0\"\n",
            "busybox:run",
        ))
        .await;
    let leader = eventually("index 0 running", Duration::from_secs(30), || async {
        let running = pods_of(&cluster, &ns, "leader").await;
        (running.len() == 3).then_some(())?;
        running.into_iter().find(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("batch.kubernetes.io/job-completion-index"))
                .is_some_and(|i| i == "0")
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
    })
    .await;
    let finished = serde_json::json!({"status": {"phase": "Succeeded"}});
    pods.patch_status(
        leader.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&finished),
    )
    .await
    .expect("finish index 0");
    wait_for(&cluster, &ns, "leader", "complete").await;
    let job = jobs.get("leader").await.expect("job");
    assert_eq!(
        condition(&job, "SuccessCriteriaMet"),
        Some(("True".into(), "SuccessPolicy".into()))
    );
    assert_eq!(
        condition(&job, "Complete"),
        Some(("True".into(), "SuccessPolicy".into()))
    );
    let status = job.status.expect("status");
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(status.completed_indexes.as_deref(), Some("0"));
    // The other indexes were stopped, not left running.
    assert!(pods_of(&cluster, &ns, "leader").await.iter().all(|p| p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        != Some("Running")));
}

fn indexes_of(job: &Job) -> (String, String, Option<i32>, Option<i32>) {
    let status = job.status.clone().unwrap_or_default();
    (
        status.completed_indexes.unwrap_or_default(),
        status.failed_indexes.unwrap_or_default(),
        status.succeeded,
        status.failed,
    )
}

/// Upstream's `backoffLimitPerIndex` conformance tests: indexes fail on their own, the
/// others run to the end; `maxFailedIndexes` stops the Job; `FailIndex` gives up an index
/// at its first matching failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_index_back_off_limits() {
    let cluster = cluster().await;
    let ns = cluster.namespace("jobs-per-index");
    let _node = run_finishing_node(&cluster, &ns);
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    let indexed = |extra: &str| {
        format!("  completionMode: Indexed\n  completions: 4\n  parallelism: 4\n{extra}")
    };

    // Odd indexes fail twice each (the retry after the back-off, then over the limit of
    // 1); even ones succeed; the Job fails for its failed indexes once all are done.
    cluster
        .apply(&job_yaml(
            &ns,
            "odd",
            &indexed("  backoffLimitPerIndex: 1\n"),
            "busybox:odd-fail",
        ))
        .await;
    // FailIndex: index 0's exit code 42 gives it up at once, without its retry.
    cluster
        .apply(&job_yaml(
            &ns,
            "fail-index",
            &indexed("  backoffLimitPerIndex: 1\n  podFailurePolicy:\n    rules:\n    - action: FailIndex\n      onExitCodes: {operator: In, values: [42]}\n"),
            "busybox:exit42-index0",
        ))
        .await;
    // maxFailedIndexes 0: the first failed index fails the Job.
    cluster
        .apply(&job_yaml(
            &ns,
            "strict",
            &indexed("  backoffLimitPerIndex: 0\n  maxFailedIndexes: 0\n"),
            "busybox:fail",
        ))
        .await;

    wait_for(&cluster, &ns, "strict", "failed").await;
    let strict = jobs.get("strict").await.expect("job");
    assert_eq!(
        condition(&strict, "Failed"),
        Some(("True".into(), "MaxFailedIndexesExceeded".into()))
    );
    assert_eq!(
        strict.spec.as_ref().and_then(|s| s.backoff_limit),
        Some(i32::MAX)
    );

    wait_for(&cluster, &ns, "fail-index", "failed").await;
    let fail_index = jobs.get("fail-index").await.expect("job");
    assert_eq!(
        condition(&fail_index, "Failed"),
        Some(("True".into(), "FailedIndexes".into()))
    );
    assert_eq!(
        indexes_of(&fail_index),
        ("1-3".into(), "0".into(), Some(3), Some(1))
    );

    wait_for(&cluster, &ns, "odd", "failed").await;
    let odd = jobs.get("odd").await.expect("job");
    assert_eq!(
        condition(&odd, "Failed"),
        Some(("True".into(), "FailedIndexes".into()))
    );
    assert_eq!(
        indexes_of(&odd),
        ("0,2".into(), "1,3".into(), Some(2), Some(4))
    );
    // The retries carry their index's failure count.
    let retried: Vec<String> = pods_of(&cluster, &ns, "odd")
        .await
        .iter()
        .filter_map(|p| {
            p.metadata
                .annotations
                .as_ref()?
                .get("batch.kubernetes.io/job-index-failure-count")
                .cloned()
        })
        .filter(|count| count == "1")
        .collect();
    assert_eq!(retried.len(), 2, "one retry for each odd index");
}

/// Upstream's "CronJob ForbidConcurrent" and "CronJob ReplaceConcurrent": with the first
/// run still going at the next scheduled time, Forbid starts nothing and Replace swaps
/// the running Job for a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_job_concurrency_forbid_and_replace() {
    let cluster = cluster().await;
    let ns = cluster.namespace("cron-policy");
    let _node = run_finishing_node(&cluster, &ns);
    for (name, policy) in [("forbid", "Forbid"), ("replace", "Replace")] {
        cluster
            .apply(&format!(
                "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  schedule: '* * * * *'\n  concurrencyPolicy: {policy}\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{{name: c, image: 'busybox:run'}}]\n"
            ))
            .await;
    }
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    let live_jobs = |prefix: &'static str| {
        let jobs = jobs.clone();
        async move {
            let mut names: Vec<String> = jobs
                .list(&Default::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .into_iter()
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .filter_map(|j| j.metadata.name)
                .filter(|n| n.starts_with(prefix))
                .collect();
            names.sort();
            names
        }
    };
    // The first scheduled run of each.
    let first = eventually("the first replace run", Duration::from_secs(75), || async {
        let names = live_jobs("replace-").await;
        (names.len() == 1).then(|| names[0].clone())
    })
    .await;
    let minute: i64 = first
        .trim_start_matches("replace-")
        .parse()
        .expect("minute in the name");
    // The next minute: Replace swaps its Job for the new one.
    let next = format!("replace-{}", minute + 1);
    eventually("the replacement run", Duration::from_secs(75), || async {
        (live_jobs("replace-").await == [next.clone()]).then_some(())
    })
    .await;
    // Forbid kept its first run and said why it started no other.
    let events = eventually(
        "Forbid's JobAlreadyActive event",
        Duration::from_secs(30),
        || async {
            let text = cluster
                .server
                .kubectl(&["events", "-n", &ns, "--for", "cronjob/forbid"]);
            let text = String::from_utf8_lossy(&text.stdout).into_owned();
            text.contains("JobAlreadyActive").then_some(text)
        },
    )
    .await;
    assert!(
        events.contains(
            "Not starting job because prior execution is running and concurrency policy is Forbid"
        ),
        "{events}"
    );
    assert_eq!(live_jobs("forbid-").await.len(), 1);
}

/// Upstream's "Job successPolicy succeededCount rule" and "all indexes succeeded": one
/// success meets a `succeededCount: 1` rule and stops the other indexes; a rule naming
/// every index is met once all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_policies_by_count_and_by_every_index() {
    let cluster = cluster().await;
    let ns = cluster.namespace("jobs-success-count");
    let _node = run_finishing_node(&cluster, &ns);
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    cluster
        .apply(&job_yaml(
            &ns,
            "any-one",
            "  completionMode: Indexed\n  completions: 3\n  parallelism: 3\n  successPolicy:\n    rules:\n    - succeededCount: 1\n",
            "busybox:run",
        ))
        .await;
    let first = eventually("three running pods", Duration::from_secs(30), || async {
        let running: Vec<Pod> = pods_of(&cluster, &ns, "any-one")
            .await
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        (running.len() == 3).then(|| running[0].clone())
    })
    .await;
    pods.patch_status(
        first.metadata.name.as_deref().unwrap_or_default(),
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .expect("one success");
    wait_for(&cluster, &ns, "any-one", "complete").await;
    let job = jobs.get("any-one").await.expect("job");
    assert_eq!(
        condition(&job, "SuccessCriteriaMet"),
        Some(("True".into(), "SuccessPolicy".into()))
    );
    assert_eq!(job.status.and_then(|s| s.succeeded), Some(1));

    cluster
        .apply(&job_yaml(
            &ns,
            "every-one",
            "  completionMode: Indexed\n  completions: 3\n  parallelism: 3\n  successPolicy:\n    rules:\n    - succeededIndexes: \"0-2\"\n",
            "busybox:succeed",
        ))
        .await;
    wait_for(&cluster, &ns, "every-one", "complete").await;
    let job = jobs.get("every-one").await.expect("job");
    assert_eq!(
        condition(&job, "SuccessCriteriaMet").map(|(status, _)| status),
        Some("True".into())
    );
    let status = job.status.expect("status");
    assert_eq!(
        (status.succeeded, status.completed_indexes.as_deref()),
        (Some(3), Some("0-2"))
    );
}

/// Upstream's "Jobs, completion after task failure": pods that fail are replaced until
/// enough succeed, within `backoffLimit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_completes_although_some_pods_fail() {
    let cluster = cluster().await;
    let ns = cluster.namespace("jobs-flaky");
    // The first two pods fail, every later one succeeds.
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(2));
    let _node = cluster.play_kubelet(&ns, move |api, pod| {
        let failures = failures.clone();
        async move {
            let pending = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
            if !pending || pod.metadata.deletion_timestamp.is_some() {
                return;
            }
            let fail = failures
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |left| left.checked_sub(1),
                )
                .is_ok();
            let phase = if fail { "Failed" } else { "Succeeded" };
            let _ = api
                .patch_status(
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    &PatchParams::default(),
                    &Patch::Merge(&serde_json::json!({"status": {"phase": phase}})),
                )
                .await;
        }
    });
    cluster
        .apply(&job_yaml(
            &ns,
            "flaky",
            "  completions: 4\n  parallelism: 2\n  backoffLimit: 6\n",
            "busybox:flaky",
        ))
        .await;
    wait_for(&cluster, &ns, "flaky", "complete").await;
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    let status = jobs
        .get("flaky")
        .await
        .expect("job")
        .status
        .expect("status");
    assert_eq!((status.succeeded, status.failed), (Some(4), Some(2)));
}

/// Upstream's "Jobs, orphan pods, re-adoption" and "active pods, graceful termination":
/// a running pod orphaned is adopted again, one relabelled out of the Job is released
/// (and replaced), and deleting the Job deletes its active pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_adopted_strays_released_and_pods_go_with_the_job() {
    let cluster = cluster().await;
    let ns = cluster.namespace("jobs-adopt");
    let _node = run_finishing_node(&cluster, &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    cluster
        .apply(&job_yaml(
            &ns,
            "keeper",
            "  parallelism: 2\n  completions: 4\n",
            "busybox:run",
        ))
        .await;
    let running = eventually("two running pods", Duration::from_secs(30), || async {
        let running: Vec<String> = pods_of(&cluster, &ns, "keeper")
            .await
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.metadata.name)
            .collect();
        (running.len() == 2).then_some(running)
    })
    .await;
    let owner = |pod: &Pod| {
        pod.metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.iter().find(|r| r.controller == Some(true)))
            .map(|r| r.name.clone())
    };
    // Orphaned: adopted again. (The Job makes up for it meanwhile and then gives back
    // its surplus, the newest pod as upstream ranks them: a second later, so that
    // creation times, which count whole seconds, tell the two apart.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pods.patch(
        &running[0],
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"metadata": {"ownerReferences": null}})),
    )
    .await
    .expect("orphaned");
    eventually("re-adoption", Duration::from_secs(30), || async {
        let pod = pods.get(&running[0]).await.ok()?;
        (owner(&pod).as_deref() == Some("keeper")).then_some(())
    })
    .await;
    // Relabelled out of the Job's selector: released. (Picked afresh: while the orphan
    // was away the Job made up for it, and then gave back a surplus pod.)
    let stray = eventually(
        "two running pods again",
        Duration::from_secs(30),
        || async {
            let running: Vec<String> = pods_of(&cluster, &ns, "keeper")
                .await
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .filter_map(|p| p.metadata.name)
                .collect();
            (running.len() == 2).then(|| running[1].clone())
        },
    )
    .await;
    pods.patch(
        &stray,
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"metadata": {"labels": {
            "batch.kubernetes.io/controller-uid": null, "controller-uid": null}}})),
    )
    .await
    .expect("relabelled");
    eventually("release", Duration::from_secs(30), || async {
        let pod = pods.get(&stray).await.ok()?;
        owner(&pod).is_none().then_some(())
    })
    .await;
    // Deleted: its active pods go with it.
    cluster
        .kubectl(&["delete", "job", "keeper", "-n", &ns, "--timeout=60s"])
        .await;
    eventually("the Job's pods gone", Duration::from_secs(30), || async {
        let left: Vec<String> = active_pods(&cluster.client, &ns)
            .await
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        (left == [stray.clone()]).then_some(())
    })
    .await;
}
