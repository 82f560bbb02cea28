//! Pod status from what the runtime reports: container states, phase and
//! conditions, computed as upstream's `generateAPIPodStatus` and `getPhase`
//! do. Pure, so every rule is unit-tested; the pod worker gathers the
//! [`ContainerView`]s and writes the result through `pods/status`.

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::resize::{Allocation, CgroupLimits, Current, ResizeView};

/// One container attempt as the runtime reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attempt {
    pub id: String,
    pub attempt: u32,
    pub state: RunState,
    /// Nanoseconds since the epoch (0 = unset), as the CRI reports them.
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    pub image_ref: String,
    /// What the container's cgroup enforces (reported while it runs).
    pub cgroup: Option<CgroupLimits>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Exited,
    #[default]
    Unknown,
}

/// What the kubelet knows of one container of the pod.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// The newest attempt, then the one before it.
    pub current: Option<Attempt>,
    pub previous: Option<Attempt>,
    /// Why the container is not running, when the kubelet decided it
    /// (pull failure, back-off, config error); takes precedence over an
    /// exited `current`.
    pub waiting: Option<(String, String)>,
    pub ready: bool,
    pub started: bool,
    /// An init container with `restartPolicy: Always`: it keeps running beside the app
    /// containers instead of completing before them.
    pub sidecar: bool,
    /// What the kubelet has allocated to the container (see [`crate::resize`]).
    pub allocation: Option<Allocation>,
    /// What the kubelet actuated on it last (its creation, or the last update).
    pub actuated: Option<Allocation>,
}

impl ContainerView {
    /// What the container holds while it runs (see [`Current`]).
    fn holding(&self) -> Option<Current> {
        self.current
            .as_ref()
            .filter(|a| a.state == RunState::Running)
            .map(|a| Current::of(a.cgroup, self.actuated.as_ref()))
    }
}

/// Everything [`pod_status`] needs besides the pod.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    pub sandbox_ready: bool,
    pub pod_ips: Vec<String>,
    pub host_ip: String,
    pub init: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    /// Ephemeral containers: reported, but they count for neither phase nor readiness.
    pub ephemeral: Vec<ContainerView>,
    /// `runtime_name` from CRI `Version`: container IDs are `name://id`.
    pub runtime_name: String,
    /// Set when the pod has ended (e.g. deleted): no container restarts.
    pub terminal: bool,
    /// Where an in-place resize stands.
    pub resize: ResizeView,
}

fn time(ns: i64) -> Option<Time> {
    if ns <= 0 {
        return None;
    }
    jiff::Timestamp::from_nanosecond(ns as i128)
        .ok()
        .map(|t| Time(t.round(jiff::Unit::Second).unwrap_or(t)))
}

fn terminated(a: &Attempt, container_id: String) -> ContainerStateTerminated {
    let reason = if !a.reason.is_empty() {
        a.reason.clone()
    } else if a.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: a.exit_code,
        reason: Some(reason),
        message: (!a.message.is_empty()).then(|| a.message.clone()),
        started_at: time(a.started_at),
        finished_at: time(a.finished_at),
        container_id: Some(container_id),
        signal: None,
    }
}

/// The API status of one container (upstream's `convertToAPIContainerStatuses`).
pub fn container_status(
    v: &ContainerView,
    runtime_name: &str,
    default_waiting: &str,
) -> ContainerStatus {
    let cid = |a: &Attempt| format!("{runtime_name}://{}", a.id);
    let waiting = |reason: &str, message: &str| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
        }),
        ..Default::default()
    };
    let last_terminated = |a: Option<&Attempt>| {
        a.filter(|a| a.state == RunState::Exited)
            .map(|a| ContainerState {
                terminated: Some(terminated(a, cid(a))),
                ..Default::default()
            })
    };
    let (state, last_state) = match &v.current {
        None => {
            let (r, m) = v
                .waiting
                .clone()
                .unwrap_or_else(|| (default_waiting.to_string(), String::new()));
            (waiting(&r, &m), None)
        }
        Some(a) => match a.state {
            RunState::Running => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: time(a.started_at),
                    }),
                    ..Default::default()
                },
                last_terminated(v.previous.as_ref()),
            ),
            RunState::Exited => match &v.waiting {
                Some((r, m)) => (waiting(r, m), last_terminated(Some(a))),
                None => (
                    ContainerState {
                        terminated: Some(terminated(a, cid(a))),
                        ..Default::default()
                    },
                    last_terminated(v.previous.as_ref()),
                ),
            },
            RunState::Created | RunState::Unknown => {
                let (r, m) = v
                    .waiting
                    .clone()
                    .unwrap_or_else(|| ("ContainerCreating".to_string(), String::new()));
                (waiting(&r, &m), last_terminated(v.previous.as_ref()))
            }
        },
    };
    let running = v
        .current
        .as_ref()
        .is_some_and(|a| a.state == RunState::Running);
    ContainerStatus {
        allocated_resources: v
            .allocation
            .as_ref()
            .and_then(|a| crate::resize::allocated_resources(&a.resources)),
        resources: v
            .allocation
            .as_ref()
            .zip(v.holding())
            .map(|(a, now)| now.reported(a)),
        name: v.name.clone(),
        image: v.image.clone(),
        image_id: v
            .current
            .as_ref()
            .map(|a| a.image_ref.clone())
            .unwrap_or_default(),
        container_id: v.current.as_ref().map(cid),
        ready: running && v.ready,
        started: Some(running && v.started),
        restart_count: v.current.as_ref().map_or(0, |a| a.attempt as i32),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ..Default::default()
    }
}

/// Whether an init container is a sidecar (`restartPolicy: Always`).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Whether an init container no longer holds back the ones after it: a regular one has
/// completed successfully, a sidecar is running and has passed its startup probe.
pub fn init_done(v: &ContainerView) -> bool {
    v.current.as_ref().is_some_and(|a| {
        if v.sidecar {
            a.state == RunState::Running && v.started
        } else {
            a.state == RunState::Exited && a.exit_code == 0
        }
    })
}

fn terminated_before(s: &ContainerStatus) -> bool {
    s.last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .is_some()
}

/// Upstream's `getPhase`: regular init containers gate the pod; sidecars count as
/// running beside the app containers, but not once they have stopped, so that a
/// finished job's pod completes while its sidecars are being shut down.
pub fn phase(
    restart_policy: &str,
    init: &[ContainerStatus],
    sidecars: &[ContainerStatus],
    containers: &[ContainerStatus],
    init_failed: bool,
) -> &'static str {
    if init_failed {
        return "Failed";
    }
    let init_pending = init.iter().any(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_none_or(|t| t.exit_code != 0)
    });
    if init_pending {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    let mut sidecars_pending = false;
    for s in sidecars {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            sidecars_pending |= s.started != Some(true);
            running += 1;
        } else if st.terminated.is_some() || terminated_before(s) {
            // A stopped sidecar says nothing about the pod's phase.
        } else if st.waiting.is_some() {
            sidecars_pending = true;
            waiting += 1;
        } else {
            sidecars_pending = true;
            unknown += 1;
        }
    }
    let sidecars_running = running;
    for s in containers {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = &st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if st.waiting.is_some() {
            if terminated_before(s) {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    // A sidecar not yet started holds the pod in Pending, unless the app containers
    // have already run (the sidecar is restarting beside them).
    let apps_ran = running > sidecars_running || stopped > 0;
    if waiting > 0 || (sidecars_pending && !apps_ran) {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        return match restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &Time,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status stays the same, as the
    // status manager does, so unchanged statuses are not rewritten.
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| Some(now.clone()));
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: if ok { None } else { reason.map(str::to_string) },
        message: if ok { None } else { message },
        last_transition_time,
        last_probe_time: None,
        observed_generation: None,
    }
}

/// Conditions the kubelet owns; others (set by the scheduler or by users
/// through readiness gates) are kept as they are.
pub const KUBELET_CONDITIONS: &[&str] = &[
    "PodScheduled",
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
    "PodResizePending",
    "PodResizeInProgress",
];

/// `PodResizePending` while the node cannot take a resize, `PodResizeInProgress` while
/// a running container does not yet hold what was allocated to it (reason `Error`
/// when actuating failed); neither once the resize is done.
fn resize_conditions(view: &PodView, old: &[PodCondition], now: &Time) -> Vec<PodCondition> {
    let make = |type_: &str, reason: Option<&str>, message: Option<String>| {
        let mut c = condition(old, type_, true, None, None, now);
        c.reason = reason.map(str::to_string);
        c.message = message;
        c
    };
    let mut out = Vec::new();
    if let Some(p) = &view.resize.pending {
        out.push(make(
            "PodResizePending",
            Some(p.reason),
            Some(p.message.clone()),
        ));
    }
    let actuating = view
        .init
        .iter()
        .chain(&view.containers)
        .any(|v| matches!((&v.allocation, v.holding()), (Some(a), Some(now)) if !now.holds(a)));
    if let Some(error) = &view.resize.error {
        out.push(make(
            "PodResizeInProgress",
            Some("Error"),
            Some(error.clone()),
        ));
    } else if actuating {
        out.push(make("PodResizeInProgress", None, None));
    }
    out
}

/// The pod's whole status.
pub fn pod_status(pod: &Pod, view: &PodView, init_failed: bool, now: jiff::Timestamp) -> PodStatus {
    let now = Time(now.round(jiff::Unit::Second).unwrap_or(now));
    let old = pod.status.clone().unwrap_or_default();
    let old_conditions = old.conditions.clone().unwrap_or_default();
    let restart_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    // Once an app container exists the pod has been initialized, whatever its sidecars
    // do since (upstream keeps `Initialized` so, too).
    let initialized =
        view.containers.iter().any(|v| v.current.is_some()) || view.init.iter().all(init_done);
    let init_statuses: Vec<ContainerStatus> = view
        .init
        .iter()
        .map(|v| container_status(v, &view.runtime_name, "PodInitializing"))
        .collect();
    let (mut sidecar_statuses, mut regular_init_statuses) = (Vec::new(), Vec::new());
    for (v, st) in view.init.iter().zip(&init_statuses) {
        if v.sidecar {
            sidecar_statuses.push(st.clone());
        } else {
            regular_init_statuses.push(st.clone());
        }
    }
    let app_default = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<ContainerStatus> = view
        .containers
        .iter()
        .map(|v| container_status(v, &view.runtime_name, app_default))
        .collect();
    let mut phase = phase(
        &restart_policy,
        &regular_init_statuses,
        &sidecar_statuses,
        &statuses,
        init_failed,
    )
    .to_string();
    // A pod never leaves a terminal phase.
    if matches!(old.phase.as_deref(), Some("Succeeded" | "Failed")) {
        phase = old.phase.clone().unwrap_or_default();
    }
    let terminal = phase == "Succeeded" || phase == "Failed";

    // Sidecars are named first, as upstream lists init containers before the others.
    let not_ready: Vec<&str> = sidecar_statuses
        .iter()
        .chain(&statuses)
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let incomplete: Vec<&str> = view
        .init
        .iter()
        .filter(|v| !init_done(v))
        .map(|v| v.name.as_str())
        .collect();
    let (ready_reason, ready_message) = if terminal {
        ("PodCompleted", None)
    } else {
        (
            "ContainersNotReady",
            Some(format!(
                "containers with unready status: [{}]",
                not_ready.join(" ")
            )),
        )
    };
    let all_ready = !terminal && not_ready.is_empty();
    let mut conditions: Vec<PodCondition> = old_conditions
        .iter()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    conditions.push(condition(
        &old_conditions,
        "PodReadyToStartContainers",
        view.sandbox_ready,
        None,
        None,
        &now,
    ));
    conditions.push(condition(
        &old_conditions,
        "Initialized",
        initialized,
        Some(if terminal {
            "PodCompleted"
        } else {
            "ContainersNotInitialized"
        }),
        (!terminal).then(|| {
            format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )
        }),
        &now,
    ));
    conditions.push(condition(
        &old_conditions,
        "Ready",
        all_ready,
        Some(ready_reason),
        ready_message.clone(),
        &now,
    ));
    conditions.push(condition(
        &old_conditions,
        "ContainersReady",
        all_ready,
        Some(ready_reason),
        ready_message,
        &now,
    ));
    conditions.extend(resize_conditions(view, &old_conditions, &now));
    conditions.push(
        match old_conditions.iter().find(|c| c.type_ == "PodScheduled") {
            Some(c) => c.clone(),
            None => condition(&old_conditions, "PodScheduled", true, None, None, &now),
        },
    );
    // Upstream's order: PodReadyToStartContainers, Initialized, Ready,
    // ContainersReady, PodScheduled (kubectl describe shows them so).
    // What the kubelet writes says which generation of the pod it has seen.
    let generation = pod.metadata.generation;
    for c in conditions
        .iter_mut()
        .filter(|c| KUBELET_CONDITIONS.contains(&c.type_.as_str()) && c.type_ != "PodScheduled")
    {
        c.observed_generation = generation;
    }

    let pod_ips: Vec<PodIP> = view
        .pod_ips
        .iter()
        .map(|ip| PodIP { ip: ip.clone() })
        .collect();
    let host_ips = (!view.host_ip.is_empty()).then(|| {
        vec![k8s_openapi::api::core::v1::HostIP {
            ip: view.host_ip.clone(),
        }]
    });
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: (!view.host_ip.is_empty())
            .then(|| view.host_ip.clone())
            .or(old.host_ip.clone()),
        host_ips: host_ips.or(old.host_ips.clone()),
        pod_ip: view.pod_ips.first().cloned().or(old.pod_ip.clone()),
        pod_ips: if pod_ips.is_empty() {
            old.pod_ips.clone()
        } else {
            Some(pod_ips)
        },
        start_time: old.start_time.clone().or(Some(now)),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        ephemeral_container_statuses: (!view.ephemeral.is_empty()).then(|| {
            view.ephemeral
                .iter()
                .map(|v| container_status(v, &view.runtime_name, "ContainerCreating"))
                .collect()
        }),
        container_statuses: Some(statuses),
        qos_class: old.qos_class.clone(),
        message: old.message.clone(),
        reason: old.reason.clone(),
        nominated_node_name: old.nominated_node_name.clone(),
        observed_generation: generation,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn attempt(state: RunState, exit: i32, n: u32) -> Attempt {
        Attempt {
            id: format!("id{n}"),
            attempt: n,
            state,
            started_at: 1_700_000_000_000_000_000,
            finished_at: if state == RunState::Exited {
                1_700_000_001_000_000_000
            } else {
                0
            },
            exit_code: exit,
            image_ref: "docker.io/library/busybox@sha256:abc".into(),
            ..Default::default()
        }
    }

    fn view(name: &str, current: Option<Attempt>) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "busybox".into(),
            current,
            ready: true,
            started: true,
            ..Default::default()
        }
    }

    fn pod(policy: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).expect("ts")
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .and_then(|c| c.iter().find(|c| c.type_ == t))
            .expect("condition")
    }

    #[test]
    fn running_pod_is_ready() {
        let v = PodView {
            sandbox_ready: true,
            pod_ips: vec!["10.88.0.5".into()],
            host_ip: "192.168.1.2".into(),
            containers: vec![view("c", Some(attempt(RunState::Running, 0, 0)))],
            runtime_name: "skiff".into(),
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &v, false, now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.88.0.5"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        let cs = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(cs.container_id.as_deref(), Some("skiff://id0"));
        assert!(cs.ready);
        assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    }

    #[test]
    fn unready_container_names_itself() {
        let mut c = view("web", Some(attempt(RunState::Running, 0, 0)));
        c.ready = false;
        let v = PodView {
            sandbox_ready: true,
            containers: vec![c],
            runtime_name: "skiff".into(),
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &v, false, now());
        let ready = cond(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [web]")
        );
    }

    #[test]
    fn phases() {
        let v = |a| PodView {
            containers: vec![view("c", Some(a))],
            runtime_name: "skiff".into(),
            ..Default::default()
        };
        let exited0 = attempt(RunState::Exited, 0, 0);
        let exited1 = attempt(RunState::Exited, 1, 0);
        let p = |policy, a| pod_status(&pod(policy), &v(a), false, now()).phase;
        assert_eq!(p("Never", exited0.clone()).as_deref(), Some("Succeeded"));
        assert_eq!(p("Never", exited1.clone()).as_deref(), Some("Failed"));
        assert_eq!(
            p("OnFailure", exited0.clone()).as_deref(),
            Some("Succeeded")
        );
        assert_eq!(p("Always", exited0).as_deref(), Some("Running"));
        let none = PodView {
            containers: vec![view("c", None)],
            ..Default::default()
        };
        assert_eq!(
            pod_status(&pod("Always"), &none, false, now())
                .phase
                .as_deref(),
            Some("Pending")
        );
        // A failed init container with restartPolicy Never fails the pod.
        assert_eq!(
            pod_status(&pod("Never"), &none, true, now())
                .phase
                .as_deref(),
            Some("Failed")
        );
    }

    #[test]
    fn crash_loop_shows_waiting_and_last_state() {
        let mut c = view("c", Some(attempt(RunState::Exited, 1, 3)));
        c.waiting = Some((
            "CrashLoopBackOff".into(),
            "back-off 40s restarting failed container=c pod=p_ns(uid)".into(),
        ));
        let cs = container_status(&c, "skiff", "ContainerCreating");
        assert_eq!(cs.restart_count, 3);
        let st = cs.state.expect("state");
        assert_eq!(
            st.waiting.and_then(|w| w.reason).as_deref(),
            Some("CrashLoopBackOff")
        );
        let last = cs.last_state.and_then(|l| l.terminated).expect("last");
        assert_eq!(last.exit_code, 1);
        assert_eq!(last.reason.as_deref(), Some("Error"));
        let v = PodView {
            containers: vec![c],
            ..Default::default()
        };
        // Waiting after a termination counts as stopped: Running under Always.
        assert_eq!(
            pod_status(&pod("Always"), &v, false, now())
                .phase
                .as_deref(),
            Some("Running")
        );
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let v = PodView {
            sandbox_ready: true,
            init: vec![view("init", Some(attempt(RunState::Running, 0, 0)))],
            containers: vec![view("c", None)],
            runtime_name: "skiff".into(),
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &v, false, now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let init = cond(&s, "Initialized");
        assert_eq!(init.status, "False");
        assert_eq!(
            init.message.as_deref(),
            Some("containers with incomplete status: [init]")
        );
        let cs = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(
            cs.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref()),
            Some("PodInitializing")
        );
    }

    #[test]
    fn transition_times_are_kept_while_status_holds() {
        let v = PodView {
            sandbox_ready: true,
            containers: vec![view("c", Some(attempt(RunState::Running, 0, 0)))],
            runtime_name: "skiff".into(),
            ..Default::default()
        };
        let mut p = pod("Always");
        p.status = Some(pod_status(&p, &v, false, now()));
        let later = now() + jiff::SignedDuration::from_secs(60);
        let s2 = pod_status(&p, &v, false, later);
        assert_eq!(p.status, Some(s2));
    }

    fn sidecar(current: Option<Attempt>, started: bool, ready: bool) -> ContainerView {
        ContainerView {
            started,
            ready,
            sidecar: true,
            ..view("proxy", current)
        }
    }

    #[test]
    fn a_sidecar_gates_the_app_until_it_has_started() {
        let v = PodView {
            sandbox_ready: true,
            init: vec![sidecar(
                Some(attempt(RunState::Running, 0, 0)),
                false,
                false,
            )],
            containers: vec![view("app", None)],
            runtime_name: "skiff".into(),
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &v, false, now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let init = cond(&s, "Initialized");
        assert_eq!(init.status, "False");
        assert_eq!(
            init.message.as_deref(),
            Some("containers with incomplete status: [proxy]")
        );
        let sidecar_status = &s.init_container_statuses.as_ref().expect("init")[0];
        assert_eq!(sidecar_status.started, Some(false));
        assert!(sidecar_status
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some());
    }

    #[test]
    fn a_running_sidecar_counts_for_readiness() {
        let mut v = PodView {
            sandbox_ready: true,
            init: vec![sidecar(Some(attempt(RunState::Running, 0, 0)), true, false)],
            containers: vec![view("app", Some(attempt(RunState::Running, 0, 0)))],
            runtime_name: "skiff".into(),
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &v, false, now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Initialized").status, "True");
        let ready = cond(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [proxy]")
        );
        v.init[0].ready = true;
        let s = pod_status(&pod("Always"), &v, false, now());
        assert_eq!(cond(&s, "Ready").status, "True");
        assert!(s.init_container_statuses.expect("init")[0].ready);
    }

    #[test]
    fn a_crashing_sidecar_does_not_uninitialize_the_pod() {
        let mut crashed = sidecar(Some(attempt(RunState::Exited, 1, 2)), false, false);
        crashed.waiting = Some(("CrashLoopBackOff".into(), "back-off".into()));
        let v = PodView {
            sandbox_ready: true,
            init: vec![crashed],
            containers: vec![view("app", Some(attempt(RunState::Running, 0, 0)))],
            runtime_name: "skiff".into(),
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &v, false, now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(cond(&s, "Ready").status, "False");
    }

    #[test]
    fn a_job_completes_when_its_app_containers_have_whatever_the_sidecars_do() {
        let v = |sidecar_state| PodView {
            sandbox_ready: true,
            init: vec![sidecar(Some(sidecar_state), true, true)],
            containers: vec![view("app", Some(attempt(RunState::Exited, 0, 0)))],
            runtime_name: "skiff".into(),
            ..Default::default()
        };
        let phase = |a| pod_status(&pod("Never"), &v(a), false, now()).phase;
        // Still running beside the finished app: the kubelet is about to stop it.
        assert_eq!(
            phase(attempt(RunState::Running, 0, 0)).as_deref(),
            Some("Running")
        );
        // Stopped (SIGTERM's exit code): the app containers decide.
        assert_eq!(
            phase(attempt(RunState::Exited, 143, 0)).as_deref(),
            Some("Succeeded")
        );
    }

    #[test]
    fn ephemeral_containers_are_reported_but_change_nothing() {
        let v = PodView {
            sandbox_ready: true,
            containers: vec![view("app", Some(attempt(RunState::Running, 0, 0)))],
            ephemeral: vec![view("debugger", Some(attempt(RunState::Exited, 1, 0)))],
            runtime_name: "skiff".into(),
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &v, false, now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "True");
        let debugger = &s.ephemeral_container_statuses.expect("ephemeral")[0];
        assert_eq!(debugger.name, "debugger");
        assert!(debugger
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some());
    }

    #[test]
    fn resize_conditions_follow_the_allocation_and_the_cgroup() {
        use crate::resize::{Allocation, CgroupLimits, Pending, ResizeView};
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let limits = |quota| CgroupLimits {
            cpu_shares: 25,
            cpu_quota: quota,
            cpu_period: 100_000,
            memory_limit: 0,
        };
        let cpu = |v: &str| Some([("cpu".to_string(), Quantity(v.into()))].into());
        let allocation = Allocation {
            resources: ResourceRequirements {
                requests: cpu("25m"),
                limits: cpu("35m"),
                ..Default::default()
            },
            expected: limits(3500),
        };
        let with_cgroup = |quota| {
            let mut a = attempt(RunState::Running, 0, 0);
            a.cgroup = Some(limits(quota));
            ContainerView {
                allocation: Some(allocation.clone()),
                ..view("c", Some(a))
            }
        };
        let has = |s: &PodStatus, t: &str| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .cloned()
        };
        // What a running container holds: its cgroup as the runtime reads it back; or,
        // from a runtime that reports nothing (containerd before 1.6.9, cri-dockerd),
        // what the kubelet actuated last.
        let with_record = |record: &Allocation| ContainerView {
            allocation: Some(allocation.clone()),
            actuated: Some(record.clone()),
            ..view("c", Some(attempt(RunState::Running, 0, 0)))
        };
        let before = Allocation {
            resources: ResourceRequirements {
                requests: cpu("25m"),
                limits: cpu("30m"),
                ..Default::default()
            },
            expected: limits(3000),
        };
        for (old, new) in [
            (with_cgroup(3000), with_cgroup(3500)),
            (with_record(&before), with_record(&allocation)),
        ] {
            // The old quota still holds: in progress, and the status shows it.
            let v = PodView {
                containers: vec![old],
                ..Default::default()
            };
            let s = pod_status(&pod("Always"), &v, false, now());
            assert_eq!(
                has(&s, "PodResizeInProgress").map(|c| c.status),
                Some("True".into())
            );
            let st = &s.container_statuses.as_ref().expect("statuses")[0];
            assert_eq!(
                st.resources.as_ref().and_then(|r| r.limits.clone()),
                cpu("30m")
            );
            assert_eq!(st.allocated_resources, cpu("25m"));
            // Held: no condition, the allocation is the status.
            let v = PodView {
                containers: vec![new],
                ..Default::default()
            };
            let s = pod_status(&pod("Always"), &v, false, now());
            assert!(has(&s, "PodResizeInProgress").is_none());
            assert_eq!(
                s.container_statuses.as_ref().expect("statuses")[0].resources,
                Some(allocation.resources.clone())
            );
        }
        // A resize the node cannot take is pending, with the reason.
        let v = PodView {
            containers: vec![with_cgroup(3500)],
            resize: ResizeView {
                pending: Some(Pending {
                    reason: "Infeasible",
                    message: "no".into(),
                }),
                error: None,
            },
            ..Default::default()
        };
        let s = pod_status(&pod("Always"), &v, false, now());
        let pending = has(&s, "PodResizePending").expect("pending");
        assert_eq!(
            (pending.status.as_str(), pending.reason.as_deref()),
            ("True", Some("Infeasible"))
        );
    }
}
