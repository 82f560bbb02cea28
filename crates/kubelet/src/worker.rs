//! The pod worker: one task per pod that drives the runtime toward the
//! pod's spec and reports status, as upstream's `podWorkers` + `SyncPod`.
//!
//! Each pass ([`PodWorker::sync`]) is level-triggered: it reads the
//! runtime's view of the pod (sandboxes and containers by the pod-UID
//! label), takes at most one step per container (create the sandbox, pull,
//! start, restart after back-off, kill after a failed liveness probe), then
//! computes and writes the status if it changed. A pass runs on every pod
//! update, every probe result change, and every second while the pod lives.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ImageVolumeSource, Pod, PodCondition, PodStatus, ResourceRequirements,
    Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use skiff_runtime::proto;
use tokio::sync::{watch, Notify};

use crate::backoff::{go_duration, Backoff};
use crate::cri::{labels, Cri};
use crate::env::{PodFacts, Sources};
use crate::error::{Error, Result};
use crate::keyring::{repository_to_pull, Credential, Keyring, KeyringError};
use crate::probe;
use crate::resize::{self, Allocation, CgroupLimits, Checkpoint, Current, ResizeView};
use crate::spec::{
    self, pod_name, pod_namespace, pod_uid, qos_class, ContainerKind, SandboxSettings,
};
use crate::static_pods;
use crate::status::{self, Attempt, ContainerView, PodView, RunState};
use crate::volumes;

/// What every pod worker shares: clients and node facts.
pub struct Shared {
    pub client: kube::Client,
    /// The events `kubectl describe pod` shows: pulls, container starts, kills,
    /// back-offs, probe failures, evictions.
    pub events: skiff_events::Events,
    pub cri: Cri,
    /// `runtime_name` from CRI `Version` (container IDs are `name://id`).
    pub runtime_name: String,
    pub node_name: String,
    pub node_ip: String,
    pub root_dir: PathBuf,
    pub settings: SandboxSettings,
    pub memory_capacity: i64,
    pub cpu_millis: i64,
    /// The (cpu millicores, memory bytes) requests each live pod holds on this node, by
    /// UID, as its worker allocated them: what a resize is admitted against.
    pub allocations: std::sync::Mutex<HashMap<String, (i64, i64)>>,
    /// Every Service, for the pods' Service variables.
    pub services: kube::runtime::reflector::Store<k8s_openapi::api::core::v1::Service>,
    pub metrics: Arc<crate::metrics::KubeletMetrics>,
    pub eviction: Arc<crate::eviction::EvictionManager>,
    /// The pods this kubelet runs, as its pod manager keeps them.
    pub pods: Arc<crate::pods::PodSet>,
}

/// Which of the pod's lists names container `name`.
fn container_kind(pod: &Pod, name: &str) -> ContainerKind {
    let spec = pod.spec.as_ref();
    let in_list =
        |list: Option<&Vec<Container>>| list.into_iter().flatten().any(|c| c.name == name);
    if in_list(spec.and_then(|s| s.init_containers.as_ref())) {
        ContainerKind::Init
    } else if spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.name == name)
    {
        ContainerKind::Ephemeral { target: None }
    } else {
        ContainerKind::App
    }
}

/// How often a live pod is re-synced without any event (upstream relies on
/// PLEG relisting every second).
const RESYNC: Duration = Duration::from_secs(1);
/// How long a container start waits for the first list of Services.
const SERVICES_SYNC: Duration = Duration::from_secs(10);
/// Upstream's minimum grace period after a preStop hook.
const MIN_GRACE_AFTER_HOOK: i64 = 2;

struct ProbeSet {
    results: Arc<probe::Results>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ProbeSet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub struct PodWorker {
    shared: Arc<Shared>,
    rx: watch::Receiver<Option<Arc<Pod>>>,
    crash_backoff: Backoff,
    pull_backoff: Backoff,
    /// When an image pull last failed, by image.
    pull_failed_at: HashMap<String, Instant>,
    /// Waiting reasons the kubelet decided, by container name.
    waiting: HashMap<String, (String, String)>,
    probes: HashMap<String, ProbeSet>,
    wake: Arc<Notify>,
    last_written: Option<PodStatus>,
    /// The API object `last_written` went to: the pod's UID, or a static pod's mirror's.
    written_to: Option<String>,
    volumes: Option<HashMap<String, PathBuf>>,
    sandbox_ips: HashMap<String, Vec<String>>,
    /// Termination messages of exited containers, by container id.
    termination_messages: HashMap<String, String>,
    /// The resources allocated to each container (app, init), by name: the spec's
    /// when the pod is first seen, then each resize the node admitted.
    allocated: Option<resize::Allocated>,
    /// The resources the kubelet last actuated on each container, by name (see
    /// [`Current`]): read from the pod's directory on the first pass.
    actuated: Option<resize::Allocated>,
    resize: ResizeView,
    /// When this worker first saw the pod, for the start-up latency metric.
    seen_at: Instant,
    synced_once: bool,
    reported_running: bool,
}

/// One container's attempts, newest first.
type Attempts = Vec<(proto::Container, Attempt)>;

fn run_state(s: i32) -> RunState {
    match proto::ContainerState::try_from(s) {
        Ok(proto::ContainerState::ContainerCreated) => RunState::Created,
        Ok(proto::ContainerState::ContainerRunning) => RunState::Running,
        Ok(proto::ContainerState::ContainerExited) => RunState::Exited,
        _ => RunState::Unknown,
    }
}

fn attempt_of(s: &proto::ContainerStatus) -> Attempt {
    Attempt {
        id: s.id.clone(),
        attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
        state: run_state(s.state),
        started_at: s.started_at,
        finished_at: s.finished_at,
        exit_code: s.exit_code,
        reason: s.reason.clone(),
        message: s.message.clone(),
        image_ref: s.image_ref.clone(),
        cgroup: s
            .resources
            .as_ref()
            .and_then(|r| r.linux.as_ref())
            .map(CgroupLimits::of),
    }
}

/// `imagePullPolicy` with upstream's default (Always for `:latest` or no tag).
pub fn pull_policy(c: &Container) -> String {
    policy_or_default(c.image_pull_policy.as_deref(), c.image.as_deref())
}

/// A pull policy, or the API server's default for `image` when none is set (a pod
/// the kubelet reads from a file was never defaulted).
fn policy_or_default(policy: Option<&str>, image: Option<&str>) -> String {
    if let Some(p) = policy.filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let image = image.unwrap_or("");
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, "latest")) => "Always".into(),
        None if !digest && !image.is_empty() => "Always".into(),
        _ => "IfNotPresent".into(),
    }
}

/// The image volumes (KEP-4639) of the pod, by name.
fn image_volumes(pod: &Pod) -> HashMap<&str, &ImageVolumeSource> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| Some((v.name.as_str(), v.image.as_ref()?)))
        .collect()
}

/// Whether an exited container is restarted under the pod's restartPolicy.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The pod's grace period for a stop: the deletion's, else the spec's, else 30 s.
pub fn grace_period(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0)
}

fn ns_to_instant(finished_ns: i64) -> Instant {
    let now_ns = jiff::Timestamp::now().as_nanosecond() as i64;
    let ago = Duration::from_nanos(now_ns.saturating_sub(finished_ns).max(0) as u64);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

impl PodWorker {
    pub fn new(shared: Arc<Shared>, rx: watch::Receiver<Option<Arc<Pod>>>) -> PodWorker {
        PodWorker {
            shared,
            rx,
            crash_backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            pull_failed_at: HashMap::new(),
            waiting: HashMap::new(),
            probes: HashMap::new(),
            wake: Arc::new(Notify::new()),
            last_written: None,
            written_to: None,
            volumes: None,
            sandbox_ips: HashMap::new(),
            termination_messages: HashMap::new(),
            allocated: None,
            actuated: None,
            resize: ResizeView::default(),
            seen_at: Instant::now(),
            synced_once: false,
            reported_running: false,
        }
    }

    /// Runs until the pod is gone from the API and its containers are removed; then
    /// the node no longer counts its requests.
    pub async fn run(self) {
        let shared = self.shared.clone();
        let uid = self.rx.borrow().as_ref().map(|p| pod_uid(p).to_string());
        self.run_until_gone().await;
        if let Some(uid) = uid {
            shared
                .allocations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
        }
    }

    async fn run_until_gone(mut self) {
        let mut last_pod: Option<Arc<Pod>> = None;
        let mut deleted_by_us = false;
        let mut closed = false;
        loop {
            let current = self.rx.borrow_and_update().clone();
            let delay = match current {
                None => {
                    // The API object is gone (deleted by us, or force-deleted).
                    if let Some(pod) = &last_pod {
                        if !deleted_by_us {
                            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
                            if let Err(e) = self.terminate(pod, grace, false).await {
                                tracing::warn!(pod = %pod_name(pod), error = %e, "cleaning up a removed pod failed");
                            }
                        }
                    }
                    return;
                }
                Some(pod) => {
                    last_pod = Some(pod.clone());
                    if deleted_by_us {
                        Duration::from_secs(3600)
                    } else if pod.metadata.deletion_timestamp.is_some() {
                        let started = Instant::now();
                        let terminated = self.terminate(&pod, grace_period(&pod), true).await;
                        self.shared
                            .metrics
                            .pod_worker_pass("kill", started.elapsed());
                        match terminated {
                            // A static pod's file is gone: the pod manager owns its mirror.
                            Ok(()) if static_pods::is_static(&pod) => return,
                            Ok(()) => {
                                deleted_by_us = self.delete_api_object(&pod).await;
                                if deleted_by_us {
                                    Duration::from_secs(3600)
                                } else {
                                    RESYNC
                                }
                            }
                            Err(e) => {
                                tracing::warn!(pod = %pod_name(&pod), error = %e, "terminating pod failed; retrying");
                                RESYNC
                            }
                        }
                    } else {
                        let started = Instant::now();
                        let synced = self.sync(&pod).await;
                        let operation = if self.synced_once { "sync" } else { "create" };
                        self.synced_once = true;
                        self.shared
                            .metrics
                            .pod_worker_pass(operation, started.elapsed());
                        match synced {
                            Ok(d) => d,
                            Err(e) => {
                                tracing::warn!(pod = %format!("{}/{}", pod_namespace(&pod), pod_name(&pod)), error = %e, "pod sync failed; retrying");
                                RESYNC
                            }
                        }
                    }
                }
            };
            if closed {
                return;
            }
            tokio::select! {
                r = self.rx.changed() => if r.is_err() {
                    // The manager dropped us: one last pass with the final value.
                    closed = true;
                },
                _ = tokio::time::sleep(delay) => {},
                _ = self.wake.notified() => {},
            }
        }
    }

    /// Fetches the ConfigMaps and Secrets the pod refers to (for environment variables
    /// and volumes).
    async fn sources(&self, pod: &Pod) -> Result<Sources> {
        let ns = pod_namespace(pod);
        let mut cms: Vec<String> = vec![];
        let mut secrets: Vec<String> = vec![];
        let spec = pod.spec.clone().unwrap_or_default();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for f in c.env_from.iter().flatten() {
                cms.extend(f.config_map_ref.as_ref().map(|r| r.name.clone()));
                secrets.extend(f.secret_ref.as_ref().map(|r| r.name.clone()));
            }
            for e in c.env.iter().flatten() {
                if let Some(vf) = &e.value_from {
                    cms.extend(vf.config_map_key_ref.as_ref().map(|r| r.name.clone()));
                    secrets.extend(vf.secret_key_ref.as_ref().map(|r| r.name.clone()));
                }
            }
        }
        for v in spec.volumes.iter().flatten() {
            cms.extend(v.config_map.as_ref().map(|c| c.name.clone()));
            secrets.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
            for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                cms.extend(s.config_map.as_ref().map(|c| c.name.clone()));
                secrets.extend(s.secret.as_ref().map(|c| c.name.clone()));
            }
        }
        let mut out = Sources {
            service_env: self.service_env(pod).await,
            ..Sources::default()
        };
        let cm_api: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), ns);
        for name in cms {
            if out.config_maps.contains_key(&name) {
                continue;
            }
            let data = cm_api.get_opt(&name).await?.map(|cm| {
                let mut d = cm.data.unwrap_or_default();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    d.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                d
            });
            out.config_maps.insert(name, data);
        }
        let secret_api: Api<Secret> = Api::namespaced(self.shared.client.clone(), ns);
        for name in secrets {
            if out.secrets.contains_key(&name) {
                continue;
            }
            let data = secret_api.get_opt(&name).await?.map(|s| {
                let mut d: BTreeMap<String, String> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                d.extend(s.string_data.unwrap_or_default());
                d
            });
            out.secrets.insert(name, data);
        }
        Ok(out)
    }

    /// The pod's Service variables. As upstream's kubelet, containers wait (a while) for
    /// the first list of Services, so that none starts without them.
    async fn service_env(&self, pod: &Pod) -> Vec<(String, String)> {
        let services = &self.shared.services;
        if tokio::time::timeout(SERVICES_SYNC, services.wait_until_ready())
            .await
            .is_err()
        {
            tracing::warn!("Services not listed yet: starting containers without their variables");
        }
        let listed = services.state();
        crate::env::service_env(pod, &listed.iter().map(|s| s.as_ref()).collect::<Vec<_>>())
    }

    /// What the pod's volumes need: its ConfigMaps and Secrets, and fresh service-account
    /// tokens for its projected volumes (asked for only here, where volumes are written,
    /// not on every container start).
    async fn volume_sources(&self, pod: &Pod) -> Result<Sources> {
        let mut sources = self.sources(pod).await?;
        self.request_tokens(pod, &mut sources).await?;
        Ok(sources)
    }

    /// Asks the API for the tokens the pod's projected volumes hold: the pod's service
    /// account, the audience and lifetime the volume names, bound to the pod.
    async fn request_tokens(&self, pod: &Pod, out: &mut Sources) -> Result<()> {
        let spec = pod.spec.clone().unwrap_or_default();
        let account = spec
            .service_account_name
            .clone()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> =
            Api::namespaced(self.shared.client.clone(), pod_namespace(pod));
        for volume in spec.volumes.iter().flatten() {
            let sources = volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten());
            for source in sources.filter_map(|s| s.service_account_token.as_ref()) {
                let request = TokenRequest {
                    spec: Some(TokenRequestSpec {
                        audiences: source.audience.clone().map(|a| vec![a]),
                        expiration_seconds: source.expiration_seconds.or(Some(3600)),
                        bound_object_ref: Some(BoundObjectReference {
                            api_version: Some("v1".into()),
                            kind: Some("Pod".into()),
                            name: Some(pod_name(pod).to_string()),
                            uid: Some(pod_uid(pod).to_string()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let answer: TokenRequest = api
                    .create_subresource("token", &account, &Default::default(), &request)
                    .await?;
                let token = answer.status.and_then(|s| s.token).unwrap_or_default();
                out.tokens
                    .insert(crate::env::token_key(&volume.name, &source.path), token);
            }
        }
        Ok(())
    }

    fn facts(&self, pod_ips: &[String]) -> PodFacts {
        PodFacts {
            pod_ip: pod_ips.first().cloned().unwrap_or_default(),
            pod_ips: pod_ips.to_vec(),
            host_ip: self.shared.node_ip.clone(),
            node_allocatable_cpu_millis: self.shared.cpu_millis,
            node_allocatable_memory: self.shared.memory_capacity,
        }
    }

    /// Finds the pod's ready sandbox, or creates one; returns its id, config and IPs.
    async fn ensure_sandbox(
        &mut self,
        pod: &Pod,
    ) -> Result<(String, proto::PodSandboxConfig, Vec<String>)> {
        let cri = &self.shared.cri;
        let uid = pod_uid(pod);
        let sandboxes = cri.sandboxes(Some(uid)).await?;
        let ready = sandboxes
            .iter()
            .filter(|s| s.state == proto::PodSandboxState::SandboxReady as i32)
            .max_by_key(|s| s.created_at);
        if let Some(s) = ready {
            let attempt = s.metadata.as_ref().map_or(0, |m| m.attempt);
            let config = spec::sandbox_config(pod, attempt, &self.shared.settings);
            if !self.sandbox_ips.contains_key(&s.id) {
                let st = cri.sandbox_status(&s.id).await?;
                let ips = st
                    .network
                    .map(|n| {
                        std::iter::once(n.ip)
                            .chain(n.additional_ips.into_iter().map(|i| i.ip))
                            .filter(|ip| !ip.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                self.sandbox_ips.insert(s.id.clone(), ips);
            }
            let ips = self.sandbox_ips.get(&s.id).cloned().unwrap_or_default();
            if self.volumes.is_none() {
                let sources = self.volume_sources(pod).await?;
                self.volumes = Some(volumes::prepare(
                    &self.shared.root_dir,
                    pod,
                    &sources,
                    &self.facts(&ips),
                )?);
            }
            return Ok((s.id.clone(), config, ips));
        }
        // A new sandbox (first start, or the old one died): containers of a
        // dead sandbox are stopped and the attempt counter moves on.
        let attempt = sandboxes
            .iter()
            .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
            .max()
            .unwrap_or(0);
        for s in &sandboxes {
            for c in cri.containers(uid).await? {
                if c.pod_sandbox_id == s.id && run_state(c.state) == RunState::Running {
                    cri.stop_container(&c.id, 0).await?;
                }
            }
            cri.stop_sandbox(&s.id).await?;
        }
        let sources = self.volume_sources(pod).await?;
        self.volumes = Some(volumes::prepare(
            &self.shared.root_dir,
            pod,
            &sources,
            &self.facts(&[]),
        )?);
        let log_dir = spec::pod_log_dir(&self.shared.settings, pod);
        std::fs::create_dir_all(&log_dir)
            .map_err(Error::io(format!("create {}", log_dir.display())))?;
        let config = spec::sandbox_config(pod, attempt, &self.shared.settings);
        let id = cri.run_sandbox(config.clone()).await?;
        self.shared.metrics.sandbox_started();
        tracing::info!(pod = %format!("{}/{}", pod_namespace(pod), pod_name(pod)), sandbox = %id, "started pod sandbox");
        let st = cri.sandbox_status(&id).await?;
        let ips: Vec<String> = st
            .network
            .map(|n| {
                std::iter::once(n.ip)
                    .chain(n.additional_ips.into_iter().map(|i| i.ip))
                    .filter(|ip| !ip.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        self.sandbox_ips.insert(id.clone(), ips.clone());
        Ok((id, config, ips))
    }

    /// The pod's containers by name, newest attempt first; older dead
    /// attempts beyond the previous one are removed (upstream keeps one).
    async fn attempts(&mut self, uid: &str) -> Result<HashMap<String, Attempts>> {
        let cri = self.shared.cri.clone();
        let mut by_name: HashMap<String, Vec<proto::Container>> = HashMap::new();
        for c in cri.containers(uid).await? {
            let name = c
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            by_name.entry(name).or_default().push(c);
        }
        let mut out = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for (name, mut list) in by_name {
            list.sort_by_key(|c| {
                std::cmp::Reverse((c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at))
            });
            let mut attempts = Vec::new();
            for (i, c) in list.into_iter().enumerate() {
                if i >= 2 {
                    if run_state(c.state) != RunState::Running {
                        cri.remove_container(&c.id).await?;
                    }
                    continue;
                }
                match cri.container_status(&c.id).await {
                    Ok(st) => {
                        let mut attempt = attempt_of(&st);
                        if attempt.state == RunState::Exited {
                            // An exited container's message never changes: read once.
                            let written = self
                                .termination_messages
                                .entry(c.id.clone())
                                .or_insert_with(|| crate::termination::message(&st));
                            if !written.is_empty() {
                                // After the runtime's own message, as upstream joins them.
                                attempt.message = if attempt.message.is_empty() {
                                    written.clone()
                                } else {
                                    format!("{}: {written}", attempt.message)
                                };
                            }
                        }
                        seen.insert(c.id.clone());
                        attempts.push((c, attempt));
                    }
                    Err(e) if e.is_cri_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            out.insert(name, attempts);
        }
        self.termination_messages.retain(|id, _| seen.contains(id));
        Ok(out)
    }

    /// Makes sure `image` is present per the pull policy, for the container named
    /// `waiting` (its own image, or an image volume it mounts); returns the image's
    /// reference, or `None` once the container's waiting reason says why not. Events
    /// name the container when `field` is given, else the pod (upstream's events for
    /// image volumes).
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        image: &str,
        policy: &str,
        waiting: &str,
        field: Option<(&ContainerKind, &str)>,
        sandbox_config: &proto::PodSandboxConfig,
    ) -> Result<Option<String>> {
        let cri = self.shared.cri.clone();
        let present = cri.image_present(image).await?;
        let events = self.shared.events.clone();
        let event = |warning: bool, reason: &'static str, note: String| {
            crate::events::record(&events, pod, field, warning, reason, note)
        };
        match (policy, present) {
            ("Never", None) => {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                if self.set_waiting(waiting, "ErrImageNeverPull", message.clone()) {
                    event(true, "ErrImageNeverPull", message);
                    event(true, "Failed", "Error: ErrImageNeverPull".into());
                }
                return Ok(None);
            }
            ("Never" | "IfNotPresent", Some(id)) => {
                event(
                    false,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
                return Ok(Some(id));
            }
            _ => {}
        }
        if let Some(at) = self.pull_failed_at.get(image) {
            if self
                .pull_backoff
                .remaining(image, *at, Instant::now())
                .is_some()
            {
                let message = format!("Back-off pulling image \"{image}\"");
                if self.set_waiting(waiting, "ImagePullBackOff", message.clone()) {
                    event(false, "BackOff", message);
                    event(true, "Failed", "Error: ImagePullBackOff".into());
                }
                return Ok(None);
            }
        }
        event(false, "Pulling", format!("Pulling image \"{image}\""));
        let started = Instant::now();
        let pulled = match self.pull_credentials(pod, image).await {
            Ok(credentials) => cri
                .pull_image(image, &credentials, sandbox_config)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match pulled {
            Ok(image_ref) => {
                self.pull_failed_at.remove(image);
                let took = crate::events::millis(started.elapsed());
                let size = cri.image_size(image).await.unwrap_or_default();
                event(
                    false,
                    "Pulled",
                    format!("Successfully pulled image \"{image}\" in {took} ({took} including waiting). Image size: {size} bytes."),
                );
                Ok(Some(image_ref))
            }
            Err(msg) => {
                tracing::info!(image = %image, error = %msg, "image pull failed");
                let now = Instant::now();
                self.pull_backoff.next(image, now);
                self.pull_failed_at.insert(image.to_string(), now);
                let message = format!("failed to pull and unpack image \"{image}\": {msg}");
                event(
                    true,
                    "Failed",
                    format!("Failed to pull image \"{image}\": {message}"),
                );
                event(true, "Failed", "Error: ErrImagePull".into());
                self.set_waiting(waiting, "ErrImagePull", message);
                Ok(None)
            }
        }
    }

    /// The credentials the pod's pull secrets hold for `image`. A secret that cannot be
    /// read is passed over with a warning event, as upstream's kubelet does; one that
    /// cannot be parsed fails the pull. Read at each pull, not kept: a secret created
    /// after the pod serves its next attempt.
    async fn pull_credentials(
        &self,
        pod: &Pod,
        image: &str,
    ) -> Result<Vec<Credential>, KeyringError> {
        let names: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.name.clone())
            // The API has let empty names through; upstream passes them by silently.
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let api: Api<Secret> = Api::namespaced(self.shared.client.clone(), pod_namespace(pod));
        let mut secrets = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match api.get_opt(&name).await {
                Ok(Some(secret)) => secrets.push(secret),
                Ok(None) => missing.push(name),
                Err(error) => {
                    tracing::info!(secret = %name, %error, "unable to retrieve pull secret, the image pull may not succeed");
                    missing.push(name);
                }
            }
        }
        if !missing.is_empty() {
            crate::events::record(
                &self.shared.events,
                pod,
                None,
                true,
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    missing.join(", ")
                ),
            );
        }
        let keyring = Keyring::from_secrets(&secrets)?;
        Ok(repository_to_pull(image)
            .map(|repository| keyring.lookup(&repository))
            .unwrap_or_default())
    }

    /// Pulls the image volumes `c` mounts, each per its pull policy, as upstream pulls
    /// them before starting containers; returns what each is to the runtime, or `None`
    /// once the container's waiting reason says why not (a failed pull of a volume's
    /// image holds up only the containers that mount it).
    async fn ensure_image_volumes(
        &mut self,
        pod: &Pod,
        c: &Container,
        sandbox_config: &proto::PodSandboxConfig,
    ) -> Result<Option<volumes::ImageVolumes>> {
        let mut out = volumes::ImageVolumes::new();
        let wanted: Vec<(String, String, String)> = {
            let sources = image_volumes(pod);
            c.volume_mounts
                .iter()
                .flatten()
                .filter_map(|m| {
                    let source = sources.get(m.name.as_str())?;
                    let reference = source.reference.clone().unwrap_or_default();
                    let policy = policy_or_default(
                        source.pull_policy.as_deref(),
                        source.reference.as_deref(),
                    );
                    Some((m.name.clone(), reference, policy))
                })
                .collect()
        };
        for (name, reference, policy) in wanted {
            if out.contains_key(&name) {
                continue;
            }
            let pulled = self
                .ensure_image(pod, &reference, &policy, &c.name, None, sandbox_config)
                .await?;
            let Some(image_ref) = pulled else {
                return Ok(None);
            };
            out.insert(
                name,
                proto::ImageSpec {
                    image: image_ref,
                    user_specified_image: reference,
                    annotations: pod
                        .metadata
                        .annotations
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    ..Default::default()
                },
            );
        }
        Ok(Some(out))
    }

    /// Records why a container waits; whether the reason is new (events are written
    /// when a container enters a state, not on every pass).
    fn set_waiting(&mut self, name: &str, reason: &str, message: String) -> bool {
        let new = self.waiting.get(name).is_none_or(|(r, _)| r != reason);
        self.waiting
            .insert(name.to_string(), (reason.to_string(), message));
        new
    }

    /// Pulls, creates and starts one container attempt.
    async fn start_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        kind: ContainerKind,
        sandbox: &(String, proto::PodSandboxConfig, Vec<String>),
    ) -> Result<()> {
        let container_type = match &kind {
            ContainerKind::App => "container",
            ContainerKind::Init => "init_container",
            ContainerKind::Ephemeral { .. } => "ephemeral_container",
        };
        let image = c.image.as_deref().unwrap_or("");
        let field = Some((&kind, c.name.as_str()));
        let policy = pull_policy(c);
        let pulled = self
            .ensure_image(pod, image, &policy, &c.name, field, &sandbox.1)
            .await?;
        if pulled.is_none() {
            return Ok(());
        }
        let Some(image_volumes) = self.ensure_image_volumes(pod, c, &sandbox.1).await? else {
            return Ok(());
        };
        let (events, event_kind) = (self.shared.events.clone(), kind.clone());
        let event = |warning: bool, reason: &'static str, note: String| {
            let field = Some((&event_kind, c.name.as_str()));
            crate::events::record(&events, pod, field, warning, reason, note)
        };
        // A container starts with what was allocated to it, which a pending resize
        // has not changed.
        let allocated = self.with_allocation(c);
        let c = &allocated;
        let sources = self.sources(pod).await?;
        let facts = self.facts(&sandbox.2);
        let env = match crate::env::container_env(pod, c, &sources, &facts) {
            Ok(env) => env,
            Err(msg) => {
                if self.set_waiting(&c.name, "CreateContainerConfigError", msg.clone()) {
                    event(true, "Failed", format!("Error: {msg}"));
                }
                return Ok(());
            }
        };
        let vols = self.volumes.clone().unwrap_or_default();
        let pod_dir = volumes::pod_dir(&self.shared.root_dir, pod_uid(pod));
        let settings = &self.shared.settings;
        let mounts = match volumes::mounts(c, &vols, &image_volumes, &env).and_then(|mut m| {
            m.extend(crate::termination::prepare_mount(&pod_dir, c, attempt)?);
            m.extend(crate::etc_hosts::mount(
                &pod_dir,
                pod,
                c,
                &sandbox.2,
                &settings.cluster_domain,
                &settings.node_hosts_file,
            )?);
            Ok(m)
        }) {
            Ok(m) => m,
            Err(e) => {
                if self.set_waiting(&c.name, "CreateContainerConfigError", e.to_string()) {
                    event(true, "Failed", format!("Error: {e}"));
                }
                return Ok(());
            }
        };
        let qos = qos_class(pod);
        let config = spec::container_config(
            pod,
            c,
            spec::ContainerInputs {
                attempt,
                env,
                mounts,
                image: c.image.as_deref().unwrap_or(""),
                qos: &qos,
                memory_capacity: self.shared.memory_capacity,
                kind,
                seccomp_dir: &self.shared.root_dir.join("seccomp"),
            },
        );
        let cri = self.shared.cri.clone();
        let id = match cri
            .create_container(&sandbox.0, config, sandbox.1.clone())
            .await
        {
            Ok(id) => id,
            Err(e) => {
                if self.set_waiting(&c.name, "CreateContainerError", e.to_string()) {
                    event(true, "Failed", format!("Error: {e}"));
                }
                return Ok(());
            }
        };
        self.record_actuated(pod, c);
        event(false, "Created", format!("Created container: {}", c.name));
        if let Err(e) = cri.start_container(&id).await {
            event(true, "Failed", format!("Error: {e}"));
            self.set_waiting(&c.name, "RunContainerError", e.to_string());
            return Ok(());
        }
        event(false, "Started", format!("Started container {}", c.name));
        self.waiting.remove(&c.name);
        self.shared.metrics.container_started(container_type);
        tracing::info!(pod = %format!("{}/{}", pod_namespace(pod), pod_name(pod)), container = %c.name, attempt, "started container");
        let pod_ip = sandbox.2.first().map(String::as_str).unwrap_or_default();
        let post_start = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .and_then(|h| HookAction::of(h, c, pod_ip));
        if let Some(action) = post_start {
            let limit = Duration::from_secs(grace_period(pod).max(1) as u64);
            if !action.run(&cri, &id, limit).await {
                tracing::info!(container = %c.name, "postStart hook failed; killing the container");
                cri.stop_container(&id, grace_period(pod)).await?;
            }
        }
        Ok(())
    }

    /// Ends the pod as Failed for a reason of the kubelet's own (upstream's `killPod`
    /// after `activeDeadlineSeconds`): its containers are stopped, and its status says
    /// why (with a `DisruptionTarget` condition when the kubelet evicts it,
    /// `disruption`). The next pass finds the pod terminal and releases its sandbox.
    async fn fail(
        &mut self,
        pod: &Pod,
        reason: &str,
        message: &str,
        grace: i64,
        disruption: bool,
    ) -> Result<Duration> {
        tracing::info!(pod = %format!("{}/{}", pod_namespace(pod), pod_name(pod)), reason, "failing pod");
        crate::events::record(
            &self.shared.events,
            pod,
            None,
            true,
            reason,
            message.to_string(),
        );
        self.stop_containers(pod, grace).await?;
        let attempts = self.attempts(pod_uid(pod)).await?;
        let ips = self
            .sandbox_ips
            .values()
            .next()
            .cloned()
            .unwrap_or_default();
        let mut status = self.build_status(pod, &attempts, &ips, true, false);
        status.phase = Some("Failed".into());
        status.reason = Some(reason.into());
        status.message = Some(message.into());
        if disruption {
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(PodCondition {
                    type_: "DisruptionTarget".into(),
                    status: "True".into(),
                    reason: Some("TerminationByKubelet".into()),
                    message: Some(message.into()),
                    last_transition_time: Some(Time(jiff::Timestamp::now())),
                    ..Default::default()
                });
        }
        self.write_status(pod, status).await?;
        Ok(RESYNC)
    }

    /// Stops a running container whose liveness or startup probe has failed, so that it
    /// restarts. Returns whether the container is still running.
    async fn kill_on_failed_probe(
        &mut self,
        pod: &Pod,
        c: &Container,
        a: &Attempt,
    ) -> Result<bool> {
        let failed = self
            .probes
            .get(&a.id)
            .is_some_and(|p| p.results.failed.load(Ordering::SeqCst));
        if !failed {
            return Ok(true);
        }
        tracing::info!(container = %c.name, "killing container after a failed liveness/startup probe");
        let started = self
            .probes
            .get(&a.id)
            .is_some_and(|p| p.results.started.load(Ordering::SeqCst));
        let probe = if started { "liveness" } else { "startup" };
        crate::events::record(
            &self.shared.events,
            pod,
            Some((&container_kind(pod, &c.name), &c.name)),
            false,
            "Killing",
            format!(
                "Container {} failed {probe} probe, will be restarted",
                c.name
            ),
        );
        self.probes.remove(&a.id);
        self.shared
            .cri
            .stop_container(&a.id, grace_period(pod))
            .await?;
        Ok(false)
    }

    /// The container with the resources allocated to it.
    fn with_allocation(&self, c: &Container) -> Container {
        let mut c = c.clone();
        if let Some(r) = self.allocated.as_ref().and_then(|a| a.get(&c.name)) {
            c.resources = Some(r.clone());
        }
        c
    }

    /// What is allocated to a container, and the cgroup limits that comes to.
    fn allocation(&self, pod: &Pod, c: &Container) -> Option<Allocation> {
        let resources = self.allocated.as_ref()?.get(&c.name)?;
        Some(self.limits_of(pod, c, resources))
    }

    /// What was last actuated on a container, and the cgroup limits that came to.
    fn actuated(&self, pod: &Pod, c: &Container) -> Option<Allocation> {
        let resources = self.actuated.as_ref()?.get(&c.name)?;
        Some(self.limits_of(pod, c, resources))
    }

    /// `resources` for container `c` of `pod`, and the cgroup limits they come to.
    fn limits_of(&self, pod: &Pod, c: &Container, resources: &ResourceRequirements) -> Allocation {
        let c = Container {
            resources: Some(resources.clone()),
            ..c.clone()
        };
        let linux = spec::linux_resources(&c, &qos_class(pod), self.shared.memory_capacity);
        Allocation {
            resources: resources.clone(),
            expected: CgroupLimits::of(&linux),
        }
    }

    /// Records that the runtime took container `c` (as it is allocated) — created, or
    /// updated — and keeps the record for a restarted kubelet.
    fn record_actuated(&mut self, pod: &Pod, c: &Container) {
        let resources = self.with_allocation(c).resources.unwrap_or_default();
        let actuated = self.actuated.get_or_insert_with(Default::default);
        if actuated
            .get(&c.name)
            .is_some_and(|a| resize::same(a, &resources))
        {
            return;
        }
        actuated.insert(c.name.clone(), resources);
        let dir = volumes::pod_dir(&self.shared.root_dir, pod_uid(pod));
        if let Err(e) = resize::save(&dir, Checkpoint::Actuated, actuated) {
            tracing::warn!(pod = %pod_name(pod), error = %e, "cannot checkpoint the resources actuated on the pod's containers");
        }
    }

    /// Allocates the spec's resources when they changed and the node can hold them
    /// (upstream's allocation manager); otherwise records why the resize waits.
    fn allocate(&mut self, pod: &Pod) {
        let spec_ = pod.spec.clone().unwrap_or_default();
        let uid = pod_uid(pod).to_string();
        let dir = volumes::pod_dir(&self.shared.root_dir, &uid);
        let mut allocations = self
            .shared
            .allocations
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.allocated.is_none() {
            // After a kubelet restart, what was allocated before, not the spec, is what
            // the containers run with; and what was actuated is what they hold.
            if let Some(saved) = resize::load(&dir, Checkpoint::Allocated) {
                allocations.insert(uid.clone(), resize::pod_requests(&spec_, &saved));
                self.allocated = Some(saved);
            }
            self.actuated = resize::load(&dir, Checkpoint::Actuated);
        }
        let wanted: resize::Allocated = spec_
            .containers
            .iter()
            .chain(spec_.init_containers.iter().flatten())
            .map(|c| (c.name.clone(), c.resources.clone().unwrap_or_default()))
            .collect();
        let changed = match &self.allocated {
            None => true,
            Some(now) => wanted
                .iter()
                .any(|(name, r)| now.get(name).is_none_or(|a| !resize::same(a, r))),
        };
        if !changed {
            self.resize.pending = None;
            return;
        }
        let total = resize::pod_requests(&spec_, &wanted);
        if self.allocated.is_some() {
            let others = allocations
                .iter()
                .filter(|(u, _)| **u != uid)
                .fold((0, 0), |t, (_, r)| (t.0 + r.0, t.1 + r.1));
            let allocatable = (self.shared.cpu_millis, self.shared.memory_capacity);
            self.resize.pending = resize::admit(total, others, allocatable);
            if let Some(p) = &self.resize.pending {
                tracing::info!(pod = %pod_name(pod), reason = p.reason, message = %p.message, "resize pending");
                return;
            }
            tracing::info!(pod = %pod_name(pod), "resize admitted");
        }
        if let Err(e) = resize::save(&dir, Checkpoint::Allocated, &wanted) {
            tracing::warn!(pod = %pod_name(pod), error = %e, "cannot checkpoint the pod's allocation");
        }
        allocations.insert(uid, total);
        self.allocated = Some(wanted);
    }

    /// Brings each running container to its allocation: CRI `UpdateContainerResources`,
    /// or a restart where its `resizePolicy` asks for one.
    async fn actuate(&mut self, pod: &Pod, attempts: &HashMap<String, Attempts>) -> Result<()> {
        let spec_ = pod.spec.clone().unwrap_or_default();
        self.resize.error = None;
        for c in spec_.containers.iter().chain(
            spec_
                .init_containers
                .iter()
                .flatten()
                .filter(|c| status::is_sidecar(c)),
        ) {
            let running = attempts
                .get(&c.name)
                .and_then(|a| a.first())
                .map(|(_, a)| a)
                .filter(|a| a.state == RunState::Running);
            let (Some(a), Some(allocation)) = (running, self.allocation(pod, c)) else {
                continue;
            };
            let now = Current::of(a.cgroup, self.actuated(pod, c).as_ref());
            if now.holds(&allocation) {
                continue;
            }
            let expected = &allocation.expected;
            let actual = now.limits();
            if actual.is_some_and(|l| l.enforces(expected)) {
                // Values the cgroup already holds alike: nothing to write.
                self.record_actuated(pod, c);
                continue;
            }
            // Unknown limits are updated in place, never restarted for: the update is
            // idempotent, a restart is not.
            if actual.is_some_and(|l| resize::needs_restart(c, &l, expected)) {
                tracing::info!(pod = %pod_name(pod), container = %c.name, "restarting container to resize it");
                self.probes.remove(&a.id);
                self.shared
                    .cri
                    .stop_container(&a.id, grace_period(pod))
                    .await?;
                continue;
            }
            if resize::lowers_memory(&actual.unwrap_or_default(), expected) {
                // Without a reading, the runtime's update is the judge.
                let usage = match self.shared.cri.memory_working_set(&a.id).await {
                    Ok(usage) => usage,
                    Err(e) => {
                        tracing::warn!(container = %c.name, error = %e, "no memory reading before lowering the limit");
                        None
                    }
                };
                let refusal =
                    usage.and_then(|u| resize::below_usage(&c.name, expected.memory_limit, u));
                if let Some(refusal) = refusal {
                    self.resize.error = Some(refusal);
                    continue;
                }
            }
            let linux = spec::linux_resources(
                &self.with_allocation(c),
                &qos_class(pod),
                self.shared.memory_capacity,
            );
            match self
                .shared
                .cri
                .update_container_resources(&a.id, linux)
                .await
            {
                Ok(()) => {
                    tracing::info!(pod = %pod_name(pod), container = %c.name, "resized container");
                    self.record_actuated(pod, c);
                }
                Err(e) => {
                    tracing::warn!(pod = %pod_name(pod), container = %c.name, error = %e, "resizing container failed");
                    self.resize.error = Some(e.to_string());
                }
            }
        }
        Ok(())
    }

    /// Whether a running container has passed its startup probe (at once without one).
    fn has_started(&self, c: &Container, id: &str) -> bool {
        match self.probes.get(id) {
            Some(p) => p.results.started.load(Ordering::SeqCst),
            None => c.startup_probe.is_none(),
        }
    }

    /// Stops the pod's running sidecars, the last one first, as upstream does once the
    /// app containers have finished (or are being terminated).
    async fn stop_sidecars(
        &mut self,
        pod: &Pod,
        attempts: &HashMap<String, Attempts>,
    ) -> Result<()> {
        let spec_ = pod.spec.clone().unwrap_or_default();
        for c in spec_.init_containers.iter().flatten().rev() {
            if !status::is_sidecar(c) {
                continue;
            }
            let running = attempts
                .get(&c.name)
                .and_then(|a| a.first())
                .filter(|(_, a)| a.state == RunState::Running);
            if let Some((_, a)) = running {
                self.probes.remove(&a.id);
                self.shared
                    .cri
                    .stop_container(&a.id, grace_period(pod))
                    .await?;
            }
        }
        Ok(())
    }

    /// Decides whether an exited container restarts now; when in back-off
    /// records `CrashLoopBackOff` and returns the time left.
    fn restart_due(&mut self, pod: &Pod, name: &str, a: &Attempt) -> Option<Duration> {
        let key = format!("{}/{name}", pod_uid(pod));
        let now = Instant::now();
        let finished = ns_to_instant(a.finished_at);
        if let Some(left) = self.crash_backoff.remaining(&key, finished, now) {
            let pod_id = format!("{}_{}({})", pod_name(pod), pod_namespace(pod), pod_uid(pod));
            let message = format!(
                "back-off {} restarting failed container={name} pod={pod_id}",
                go_duration(self.crash_backoff.delay(&key)),
            );
            if self.set_waiting(name, "CrashLoopBackOff", message) {
                crate::events::record(
                    &self.shared.events,
                    pod,
                    Some((&container_kind(pod, name), name)),
                    true,
                    "BackOff",
                    format!("Back-off restarting failed container {name} in pod {pod_id}"),
                );
            }
            return Some(left);
        }
        self.crash_backoff.next(&key, now);
        None
    }

    /// One pass over a live pod. Returns when to look again.
    pub async fn sync(&mut self, pod: &Pod) -> Result<Duration> {
        let spec_ = pod.spec.clone().unwrap_or_default();
        let uid = pod_uid(pod).to_string();
        let restart_policy = spec_
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let terminal = matches!(
            self.last_written
                .as_ref()
                .or(pod.status.as_ref())
                .and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if terminal {
            // Nothing restarts in a finished pod; release its network.
            self.probes.clear();
            for s in self.shared.cri.sandboxes(Some(&uid)).await? {
                if s.state == proto::PodSandboxState::SandboxReady as i32 {
                    self.shared.cri.stop_sandbox(&s.id).await?;
                }
            }
            return Ok(Duration::from_secs(3600));
        }
        if let Some(name) = spec::forbidden_sysctl(pod) {
            // Upstream's node admission refuses the pod before it starts.
            let message = format!("Pod forbidden sysctl: \"{name}\" not allowlisted");
            return self
                .fail(pod, "SysctlForbidden", &message, grace_period(pod), false)
                .await;
        }
        let start = self
            .last_written
            .as_ref()
            .or(pod.status.as_ref())
            .and_then(|s| s.start_time.as_ref());
        if let Some(eviction) = self.shared.eviction.decided_for(&uid) {
            let message = eviction.message;
            return self
                .fail(
                    pod,
                    "Evicted",
                    &message,
                    eviction.grace_seconds,
                    eviction.disruption,
                )
                .await;
        }
        if start.is_none() {
            // Admission under node pressure, before the pod first starts.
            if let Some(message) = self.shared.eviction.pressure().refuses(pod) {
                return self.fail(pod, "Evicted", &message, 0, false).await;
            }
        }
        let deadline = deadline_left(pod, start, jiff::Timestamp::now());
        if deadline == Some(Duration::ZERO) {
            return self
                .fail(
                    pod,
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                    grace_period(pod),
                    false,
                )
                .await;
        }
        let sandbox = self.ensure_sandbox(pod).await?;
        let mut attempts = self.attempts(&uid).await?;
        let mut next = deadline.map_or(RESYNC, |left| left.min(RESYNC));
        self.allocate(pod);
        let mut init_failed = false;

        let latest = |attempts: &HashMap<String, Attempts>, name: &str| {
            attempts
                .get(name)
                .and_then(|a| a.first())
                .map(|(_, a)| a.clone())
        };
        // Whether the app containers have run and none of them will run again: the pod
        // is done and its sidecars are shut down instead of being kept alive.
        let apps_done = restart_policy != "Always"
            && spec_.containers.iter().all(|c| {
                latest(&attempts, &c.name).is_some_and(|a| {
                    a.state == RunState::Exited && !should_restart(&restart_policy, a.exit_code)
                })
            });
        // Once an app container exists, the pod is past its initialization: a sidecar
        // restarting later holds nothing back (upstream's `hasAnyRegularContainerCreated`).
        let apps_created = spec_
            .containers
            .iter()
            .any(|c| attempts.contains_key(&c.name));

        // Init containers, one at a time, in order; a sidecar stays running and lets the
        // next one start once it has started.
        let mut initialized = true;
        for c in spec_.init_containers.iter().flatten() {
            let latest = latest(&attempts, &c.name);
            if status::is_sidecar(c) {
                if apps_done {
                    continue;
                }
                let started = match latest {
                    None => {
                        self.start_container(pod, c, 0, ContainerKind::Init, &sandbox)
                            .await?;
                        c.startup_probe.is_none()
                    }
                    Some(a) if a.state == RunState::Running => {
                        self.kill_on_failed_probe(pod, c, &a).await? && self.has_started(c, &a.id)
                    }
                    // Sidecars restart whatever the pod's restart policy says.
                    Some(a) if a.state == RunState::Exited => {
                        if let Some(left) = self.restart_due(pod, &c.name, &a) {
                            next = next.min(left);
                        } else {
                            self.start_container(
                                pod,
                                c,
                                a.attempt + 1,
                                ContainerKind::Init,
                                &sandbox,
                            )
                            .await?;
                        }
                        false
                    }
                    Some(_) => false,
                };
                if !started && !apps_created {
                    initialized = false;
                    break;
                }
                continue;
            }
            if apps_created {
                continue;
            }
            match latest {
                Some(a) if a.state == RunState::Exited && a.exit_code == 0 => continue,
                Some(a) if a.state == RunState::Exited => {
                    initialized = false;
                    if restart_policy == "Never" {
                        init_failed = true;
                    } else if let Some(left) = self.restart_due(pod, &c.name, &a) {
                        next = next.min(left);
                    } else {
                        self.start_container(pod, c, a.attempt + 1, ContainerKind::Init, &sandbox)
                            .await?;
                    }
                    break;
                }
                Some(_) => {
                    initialized = false;
                    break;
                }
                None => {
                    initialized = false;
                    self.start_container(pod, c, 0, ContainerKind::Init, &sandbox)
                        .await?;
                    break;
                }
            }
        }

        if initialized {
            for c in &spec_.containers {
                match latest(&attempts, &c.name) {
                    None => {
                        self.start_container(pod, c, 0, ContainerKind::App, &sandbox)
                            .await?
                    }
                    Some(a) if a.state == RunState::Running => {
                        self.kill_on_failed_probe(pod, c, &a).await?;
                    }
                    Some(a) if a.state == RunState::Exited => {
                        if !should_restart(&restart_policy, a.exit_code) {
                            self.waiting.remove(&c.name);
                            continue;
                        }
                        if let Some(left) = self.restart_due(pod, &c.name, &a) {
                            next = next.min(left);
                        } else {
                            self.start_container(
                                pod,
                                c,
                                a.attempt + 1,
                                ContainerKind::App,
                                &sandbox,
                            )
                            .await?;
                        }
                    }
                    Some(_) => {}
                }
            }
            // Ephemeral containers run once each, beside the others, never restarted.
            for (c, target) in spec::ephemeral_containers(pod) {
                if apps_done || attempts.contains_key(&c.name) {
                    continue;
                }
                let target_id = target
                    .as_deref()
                    .and_then(|t| latest(&attempts, t))
                    .filter(|a| a.state == RunState::Running)
                    .map(|a| a.id);
                if target.is_some() && target_id.is_none() {
                    // Its target is not running (yet): nothing to share a PID namespace with.
                    continue;
                }
                let kind = ContainerKind::Ephemeral { target: target_id };
                self.start_container(pod, &c, 0, kind, &sandbox).await?;
            }
        }
        if apps_done {
            self.stop_sidecars(pod, &attempts).await?;
        } else {
            self.actuate(pod, &attempts).await?;
        }
        // Re-read what changed this pass, so the status shows it now.
        attempts = self.attempts(&uid).await?;

        // Probes follow running containers.
        let pod_ip = sandbox.2.first().cloned().unwrap_or_default();
        let running: HashMap<String, &Container> = spec_
            .init_containers
            .iter()
            .flatten()
            .filter(|c| status::is_sidecar(c))
            .chain(&spec_.containers)
            .filter_map(|c| {
                attempts
                    .get(&c.name)
                    .and_then(|a| a.first())
                    .filter(|(_, a)| a.state == RunState::Running)
                    .map(|(_, a)| (a.id.clone(), c))
            })
            .collect();
        self.probes.retain(|id, _| running.contains_key(id));
        for (id, c) in &running {
            if self.probes.contains_key(id) {
                continue;
            }
            let results = Arc::new(probe::Results::new(c));
            let target = probe::Target {
                cri: self.shared.cri.clone(),
                container_id: id.clone(),
                container: (*c).clone(),
                pod_ip: pod_ip.clone(),
            };
            let mut tasks = Vec::new();
            for (kind, p) in [
                (probe::Kind::Startup, &c.startup_probe),
                (probe::Kind::Readiness, &c.readiness_probe),
                (probe::Kind::Liveness, &c.liveness_probe),
            ] {
                if let Some(p) = p {
                    let (events, pod, name) =
                        (self.shared.events.clone(), pod.clone(), c.name.clone());
                    let on_failure: probe::OnFailure = Arc::new(move |kind, output| {
                        crate::events::record(
                            &events,
                            &pod,
                            Some((&container_kind(&pod, &name), &name)),
                            true,
                            "Unhealthy",
                            format!("{} probe failed: {output}", kind.title()),
                        )
                    });
                    tasks.push(probe::spawn(
                        kind,
                        p.clone(),
                        target.clone(),
                        results.clone(),
                        self.wake.clone(),
                        on_failure,
                    ));
                }
            }
            self.probes.insert(id.clone(), ProbeSet { results, tasks });
        }

        let status = self.build_status(pod, &attempts, &sandbox.2, true, init_failed);
        self.write_status(pod, status).await?;
        Ok(next)
    }

    fn build_status(
        &self,
        pod: &Pod,
        attempts: &HashMap<String, Attempts>,
        pod_ips: &[String],
        sandbox_ready: bool,
        init_failed: bool,
    ) -> PodStatus {
        let spec_ = pod.spec.clone().unwrap_or_default();
        let view_of = |c: &Container, sidecar: bool| {
            let list = attempts.get(&c.name);
            let current = list.and_then(|l| l.first()).map(|(_, a)| a.clone());
            let previous = list.and_then(|l| l.get(1)).map(|(_, a)| a.clone());
            let results = current
                .as_ref()
                .and_then(|a| self.probes.get(&a.id))
                .map(|p| p.results.clone());
            let exited = current
                .as_ref()
                .is_some_and(|a| a.state == RunState::Exited);
            ContainerView {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                current,
                previous,
                // A stale reason (e.g. a pull error) must not hide a container
                // that has since started.
                waiting: self
                    .waiting
                    .get(&c.name)
                    .filter(|_| list.is_none_or(|l| l.is_empty()) || exited)
                    .cloned(),
                ready: results
                    .as_ref()
                    .is_none_or(|r| r.ready.load(Ordering::SeqCst)),
                started: results
                    .as_ref()
                    .is_none_or(|r| r.started.load(Ordering::SeqCst)),
                sidecar,
                allocation: self.allocation(pod, c),
                actuated: self.actuated(pod, c),
            }
        };
        let view = PodView {
            sandbox_ready,
            pod_ips: pod_ips.to_vec(),
            host_ip: self.shared.node_ip.clone(),
            init: spec_
                .init_containers
                .iter()
                .flatten()
                .map(|c| view_of(c, status::is_sidecar(c)))
                .collect(),
            containers: spec_.containers.iter().map(|c| view_of(c, false)).collect(),
            ephemeral: spec::ephemeral_containers(pod)
                .iter()
                .map(|(c, _)| view_of(c, false))
                .collect(),
            runtime_name: self.shared.runtime_name.clone(),
            terminal: false,
            resize: self.resize.clone(),
        };
        let mut base = pod.clone();
        if let Some(last) = &self.last_written {
            base.status = Some(last.clone());
        }
        status::pod_status(&base, &view, init_failed, jiff::Timestamp::now())
    }

    async fn write_status(&mut self, pod: &Pod, status: PodStatus) -> Result<()> {
        // A static pod's status goes to its mirror (same name), written again to a new one.
        let target = static_pods::annotation(pod, static_pods::MIRROR_UID_ANNOTATION)
            .or(pod.metadata.uid.as_deref())
            .map(str::to_string);
        if self.last_written.as_ref() == Some(&status) && self.written_to == target {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), pod_namespace(pod));
        let patch = serde_json::json!({ "status": status });
        match api
            .patch_status(
                pod_name(pod),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                // Upstream's start-up latency: from first sight to the first Running
                // this kubelet reports (not for a pod that was Running already).
                let was_running =
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if status.phase.as_deref() == Some("Running")
                    && !was_running
                    && !self.reported_running
                {
                    self.reported_running = true;
                    self.shared
                        .metrics
                        .pod_started_running(self.seen_at.elapsed());
                }
                self.last_written = Some(status);
                self.written_to = target;
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops the pod's running containers: preStop hooks first, then SIGTERM, SIGKILL
    /// after the grace period; app containers together, then sidecars.
    async fn stop_containers(&mut self, pod: &Pod, grace: i64) -> Result<()> {
        self.probes.clear();
        let uid = pod_uid(pod).to_string();
        let cri = self.shared.cri.clone();
        let spec_ = pod.spec.clone().unwrap_or_default();
        let containers = cri.containers(&uid).await?;
        let live = containers
            .iter()
            .filter(|c| matches!(run_state(c.state), RunState::Running | RunState::Created));
        // App containers stop together; sidecars after them, the last one first, in
        // what is left of the grace period (upstream's order since sidecars went GA).
        let sidecar_rank = |name: &str| {
            spec_
                .init_containers
                .iter()
                .flatten()
                .position(|c| c.name == name && status::is_sidecar(c))
        };
        let mut sidecars = Vec::new();
        let mut apps = Vec::new();
        let pod_ip = self
            .sandbox_ips
            .values()
            .next()
            .and_then(|ips| ips.first().cloned())
            .unwrap_or_default();
        for c in live {
            let name = c
                .metadata
                .as_ref()
                .map(|m| m.name.as_str())
                .unwrap_or_default();
            let hook = spec_
                .containers
                .iter()
                .chain(spec_.init_containers.iter().flatten())
                .find(|sc| sc.name == name)
                .and_then(|sc| {
                    let handler = sc.lifecycle.as_ref()?.pre_stop.as_ref()?;
                    HookAction::of(handler, sc, &pod_ip)
                });
            crate::events::record(
                &self.shared.events,
                pod,
                Some((&container_kind(pod, name), name)),
                false,
                "Killing",
                format!("Stopping container {name}"),
            );
            match sidecar_rank(name) {
                Some(rank) => sidecars.push((rank, c.id.clone(), hook)),
                None => apps.push((c.id.clone(), hook)),
            }
        }
        let started = Instant::now();
        let stops = apps
            .into_iter()
            .map(|(id, hook)| stop_with_hook(&cri, id, hook, grace));
        for r in futures::future::join_all(stops).await {
            r?;
        }
        sidecars.sort_by_key(|(rank, ..)| std::cmp::Reverse(*rank));
        for (_, id, hook) in sidecars {
            let left = (grace - started.elapsed().as_secs() as i64).max(MIN_GRACE_AFTER_HOOK);
            stop_with_hook(&cri, id, hook, left).await?;
        }
        Ok(())
    }

    /// Stops every container ([`Self::stop_containers`]) and the sandbox, and removes
    /// them and the pod's volumes. With `report`, writes the final status first.
    async fn terminate(&mut self, pod: &Pod, grace: i64, report: bool) -> Result<()> {
        self.stop_containers(pod, grace).await?;
        let uid = pod_uid(pod).to_string();
        let cri = self.shared.cri.clone();
        if report {
            let attempts = self.attempts(&uid).await?;
            let ips: Vec<String> = self
                .sandbox_ips
                .values()
                .next()
                .cloned()
                .unwrap_or_default();
            let status = self.build_status(pod, &attempts, &ips, false, false);
            if let Err(e) = self.write_status(pod, status).await {
                tracing::debug!(error = %e, "final status write failed");
            }
        }
        for s in cri.sandboxes(Some(&uid)).await? {
            cri.stop_sandbox(&s.id).await?;
        }
        for c in cri.containers(&uid).await? {
            cri.remove_container(&c.id).await?;
        }
        for s in cri.sandboxes(Some(&uid)).await? {
            cri.remove_sandbox(&s.id).await?;
        }
        crate::cgroups::remove_pod_cgroup(&self.shared.settings.cgroup_root, &uid);
        volumes::cleanup(&self.shared.root_dir, &uid);
        self.crash_backoff.forget_prefix(&uid);
        tracing::info!(pod = %format!("{}/{}", pod_namespace(pod), pod_name(pod)), "pod terminated");
        Ok(())
    }

    /// Removes the API object once its containers are gone, as upstream's
    /// status manager does: grace period 0 and the pod's UID as precondition
    /// (so a new pod of the same name is never deleted by mistake).
    async fn delete_api_object(&self, pod: &Pod) -> bool {
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), pod_namespace(pod));
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(pod_name(pod), &dp).await {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => true,
            Err(e) => {
                tracing::warn!(pod = %pod_name(pod), error = %e, "deleting pod object failed");
                false
            }
        }
    }
}

/// Runs a preStop hook (exec, httpGet against the pod IP is not known
/// here so only exec and sleep are run), bounded by the grace period.
/// How long the pod may still run under `activeDeadlineSeconds`, counted from its
/// `status.startTime` (zero once it is past); `None` without a deadline.
pub fn deadline_left(pod: &Pod, start: Option<&Time>, now: jiff::Timestamp) -> Option<Duration> {
    let seconds = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = start.map_or(now, |t| t.0);
    let end = start + jiff::SignedDuration::from_secs(seconds);
    let left = now.duration_until(end);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// Runs a container's preStop hook, if any, then stops it within what is left of `grace`.
async fn stop_with_hook(cri: &Cri, id: String, hook: Option<HookAction>, grace: i64) -> Result<()> {
    let start = Instant::now();
    let mut after_hook = grace;
    if let Some(hook) = hook {
        hook.run(cri, &id, Duration::from_secs(grace.max(1) as u64))
            .await;
        let used = start.elapsed().as_secs() as i64;
        after_hook = (grace - used).max(MIN_GRACE_AFTER_HOOK);
    }
    cri.stop_container(&id, after_hook).await
}

/// A lifecycle hook (`postStart`, `preStop`), resolved against its container.
enum HookAction {
    Exec(Vec<String>),
    Http(probe::HttpGet),
    Sleep(Duration),
}

impl HookAction {
    /// `None` for a handler with no action, or an `httpGet` to a port the container
    /// does not name.
    fn of(
        handler: &k8s_openapi::api::core::v1::LifecycleHandler,
        c: &Container,
        pod_ip: &str,
    ) -> Option<HookAction> {
        if let Some(exec) = &handler.exec {
            return Some(HookAction::Exec(exec.command.clone().unwrap_or_default()));
        }
        if let Some(get) = &handler.http_get {
            return probe::HttpGet::new(get, c, pod_ip, "kube-lifecycle/1.37")
                .map(HookAction::Http);
        }
        let sleep = handler.sleep.as_ref()?;
        Some(HookAction::Sleep(Duration::from_secs(
            sleep.seconds.max(0) as u64
        )))
    }

    /// Runs the hook for at most `limit`; whether it succeeded.
    async fn run(&self, cri: &Cri, id: &str, limit: Duration) -> bool {
        let run = async {
            match self {
                HookAction::Exec(cmd) => matches!(
                    cri.exec_sync(id, cmd.clone(), limit.as_secs() as i64).await,
                    Ok(r) if r.exit_code == 0
                ),
                // Upstream's hook runner fails only when no response comes: any status
                // code will do.
                HookAction::Http(get) => get.send().await.is_some(),
                HookAction::Sleep(d) => {
                    tokio::time::sleep(*d).await;
                    true
                }
            }
        };
        tokio::time::timeout(limit, run).await.unwrap_or(false)
    }
}

/// Stops and removes sandboxes and containers of pods this kubelet no
/// longer has (deleted while it was down).
pub async fn remove_orphans(
    shared: &Shared,
    known: &std::collections::HashSet<String>,
) -> Result<()> {
    let cri = &shared.cri;
    for s in cri.sandboxes(None).await? {
        if s.labels.get(labels::MANAGED_BY).map(String::as_str) != Some("skiff-kubelet") {
            continue;
        }
        let Some(uid) = s.labels.get(labels::POD_UID) else {
            continue;
        };
        if known.contains(uid) {
            continue;
        }
        tracing::info!(pod_uid = %uid, sandbox = %s.id, "removing orphaned pod sandbox");
        for c in cri.containers(uid).await? {
            cri.stop_container(&c.id, 0).await?;
            cri.remove_container(&c.id).await?;
        }
        cri.stop_sandbox(&s.id).await?;
        cri.remove_sandbox(&s.id).await?;
        crate::cgroups::remove_pod_cgroup(&shared.settings.cgroup_root, uid);
        volumes::cleanup(&shared.root_dir, uid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pull_policies() {
        let c = |image: &str| Container {
            image: Some(image.into()),
            ..Default::default()
        };
        assert_eq!(pull_policy(&c("busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox:latest")), "Always");
        assert_eq!(
            pull_policy(&c("registry.k8s.io/e2e-test-images/busybox:1.36.1-1")),
            "IfNotPresent"
        );
        assert_eq!(pull_policy(&c("localhost:5000/busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox@sha256:abc")), "IfNotPresent");
    }

    #[test]
    fn deadlines_count_from_the_start_time() {
        let mut pod = Pod::default();
        let now = jiff::Timestamp::from_second(1_800_000_000).expect("ts");
        let started = Time(now - jiff::SignedDuration::from_secs(25));
        assert_eq!(deadline_left(&pod, Some(&started), now), None);
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            active_deadline_seconds: Some(30),
            ..Default::default()
        });
        assert_eq!(
            deadline_left(&pod, Some(&started), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            deadline_left(&pod, None, now),
            Some(Duration::from_secs(30))
        );
        let long_ago = Time(now - jiff::SignedDuration::from_secs(31));
        assert_eq!(
            deadline_left(&pod, Some(&long_ago), now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn restart_policies() {
        assert!(should_restart("Always", 0));
        assert!(!should_restart("OnFailure", 0));
        assert!(should_restart("OnFailure", 2));
        assert!(!should_restart("Never", 1));
    }
}
