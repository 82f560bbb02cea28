//! `skiff-bench pods`: pod start-up on a real single-node cluster (as root: real
//! containers), with Skiff's runtime and with containerd side by side: the same
//! measurements on a `skiff server` of each kind (`skiff_e2e::ContainerRuntime`; for
//! containerd one of the harness's own, given with `--container-runtime-endpoint`):
//!
//! - **runc floor**: the same command run by bare `runc run --detach` from a ready
//!   bundle (no image, no overlay, no CNI, no cgroup set-up beyond runc's own), one at a
//!   time and many at once: what no runtime built on runc can beat.
//! - **CRI floor**: a busybox container started through the runtime's CRI socket alone
//!   (`RunPodSandbox`, `CreateContainer`, `StartContainer`, CNI included), one at a time
//!   and many at once: what the runtime itself costs.
//! - **Pod start-up**: one pod at a time, from the create request to the pod `Running`
//!   and `Ready` as a watch sees it: API server, scheduler, kubelet and runtime together
//!   (upstream's pod start-up SLI measures the same span, image pulls aside).
//! - **Burst**: many pods created at once; each one's create → `Ready`, and the last's.
//! - **Memory**: the proportional set size (PSS: each shared page divided among the
//!   processes that map it, so that many small processes of one binary are not charged
//!   its pages again and again) of the `skiff server` process (API server, controllers,
//!   scheduler and the node agent; Skiff's runtime too when it runs the pods) and of the
//!   runtime's processes outside it (Skiff's per-container monitors and sandbox holders,
//!   or containerd, its shims and the pods' pause processes), with no pod and with the
//!   burst's pods running; and from those, what each running pod adds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use skiff_kubelet::cri::Cri;
use skiff_runtime::proto;

use crate::stats::{self, ms, percentile, Results};
use skiff_e2e::ContainerRuntime;

#[derive(Args, Debug, Clone)]
pub struct PodsArgs {
    /// The skiff binary (default: `skiff` next to this executable).
    #[arg(long, env = "SKIFF_BIN")]
    skiff: Option<PathBuf>,
    /// Pods started one at a time, for each of the CRI floor and the pod start-up
    /// (default 20; 5 with --quick).
    #[arg(long)]
    count: Option<usize>,
    /// Pods created at once for the burst, whose memory is then measured (default 50;
    /// 10 with --quick).
    #[arg(long)]
    burst: Option<usize>,
    /// Containers started at once through the CRI, and by bare runc (default 20; 5 with
    /// --quick).
    #[arg(long)]
    parallel: Option<usize>,
    /// A fast smoke run with small counts.
    #[arg(long)]
    quick: bool,
    /// Measure Skiff's runtime only (containerd is not needed then).
    #[arg(long)]
    skiff_only: bool,
}

const NAMESPACE: &str = "default";
const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.36.1-1";

fn pod(name: &str) -> Result<Pod> {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "3600"]}]
        }
    }))
    .context("building the pod")
}

fn is_running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .as_ref()
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
}

/// When each pod of the namespace was first seen `Running` and `Ready`, by name (a watch running for
/// the whole benchmark, so that no poll interval blurs the numbers).
fn watch_ready(pods: Api<Pod>) -> Arc<Mutex<HashMap<String, Instant>>> {
    let ready = Arc::new(Mutex::new(HashMap::new()));
    let seen = ready.clone();
    tokio::spawn(async move {
        let mut events = watcher(pods, watcher::Config::default().labels("bench=pods")).boxed();
        while let Some(event) = events.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                _ => continue,
            };
            if is_running_and_ready(&pod) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(name)
                    .or_insert_with(Instant::now);
            }
        }
    });
    ready
}

async fn ready_at(
    ready: &Mutex<HashMap<String, Instant>>,
    name: &str,
    within: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(at) = ready.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(*at);
        }
        if Instant::now() > deadline {
            bail!("pod {name} not Ready within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn sandbox_config(name: &str, logs: &std::path::Path) -> proto::PodSandboxConfig {
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: name.into(),
            uid: format!("bench-{name}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.join(name).display().to_string(),
        ..Default::default()
    }
}

fn container_config() -> proto::ContainerConfig {
    proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(proto::ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "c.log".into(),
        ..Default::default()
    }
}

/// One container started through the CRI alone; the time until `StartContainer`
/// returned (the process runs).
async fn cri_start(cri: &Cri, name: &str, logs: &std::path::Path) -> Result<Duration> {
    let config = sandbox_config(name, logs);
    let started = Instant::now();
    let sandbox = cri.run_sandbox(config.clone()).await?;
    let container = cri
        .create_container(&sandbox, container_config(), config)
        .await?;
    cri.start_container(&container).await?;
    let took = started.elapsed();
    cri.stop_sandbox(&sandbox).await?;
    cri.remove_sandbox(&sandbox).await?;
    Ok(took)
}

pub async fn run(args: PodsArgs) -> Result<()> {
    if let Some(why) = skiff_e2e::netns::unavailable(&[["runc", "--version"]]) {
        bail!("pod start-up runs real containers, as root with runc: {why}");
    }
    if !args.skiff_only {
        if let Some(why) = skiff_e2e::netns::unavailable(&[["containerd", "--version"]]) {
            bail!("the containerd side needs containerd (or --skiff-only): {why}");
        }
    }
    let sizes = Sizes {
        count: args.count.unwrap_or(if args.quick { 5 } else { 20 }),
        burst: args.burst.unwrap_or(if args.quick { 10 } else { 50 }),
        parallel: args.parallel.unwrap_or(if args.quick { 5 } else { 20 }),
    };
    let skiff = crate::procs::find_skiff(args.skiff.clone())?;
    // The e2e harness starts `skiff server` with its node agent and the test images.
    std::env::set_var("SKIFF_BIN", &skiff);
    eprintln!("pods: bare runc");
    let runc_floor = crate::runc_floor::measure(sizes.count, sizes.parallel).await?;
    let mut skiff_results = measure(ContainerRuntime::Skiff, sizes).await?;
    runc_floor.compare(&mut skiff_results);
    println!("{}", stats::column("bare runc", &runc_floor.results()));
    if args.skiff_only {
        println!("{}", stats::column("skiff", &skiff_results));
        return Ok(());
    }
    let mut containerd_results = measure(ContainerRuntime::Containerd, sizes).await?;
    runc_floor.compare(&mut containerd_results);
    println!(
        "{}",
        stats::table(
            ("skiff", &skiff_results),
            ("containerd", &containerd_results)
        )
    );
    Ok(())
}

/// How many of each: containers one at a time, pods in the burst, containers at once.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    count: usize,
    burst: usize,
    parallel: usize,
}

/// Every measurement on a fresh single-node cluster whose pods `runtime` runs.
async fn measure(runtime: ContainerRuntime, sizes: Sizes) -> Result<Results> {
    let name = runtime.name();
    eprintln!("pods: starting a single-node cluster on {name}");
    let server =
        tokio::task::spawn_blocking(move || skiff_e2e::Server::start_node_on(runtime, &[]))
            .await
            .context("starting skiff server")?;
    let outcome = measure_on(&server, sizes).await;
    // Its pods are deleted and waited for (blocking: kubectl) before the next cluster.
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .context("stopping skiff server")?;
    outcome
}

async fn measure_on(server: &skiff_e2e::Server, sizes: Sizes) -> Result<Results> {
    let Sizes {
        count,
        burst,
        parallel,
    } = sizes;
    let mut results = Results::default();
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(90);
    while !nodes
        .list(&Default::default())
        .await?
        .items
        .iter()
        .any(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
    {
        if Instant::now() > deadline {
            bail!("the node did not turn Ready within 90 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let ready = watch_ready(pods.clone());
    // The default service account must exist before pods are admitted.
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("pods: warm-up");
    pods.create(&PostParams::default(), &pod("warm-up")?)
        .await?;
    ready_at(&ready, "warm-up", Duration::from_secs(120)).await?;
    delete_and_wait(&pods, "warm-up").await?;
    let idle = Memory::of(server)?;
    idle.record(&mut results, "0 pods");

    eprintln!("pods: CRI floor, {count} containers one at a time");
    let endpoint = match &server.containerd {
        Some(containerd) => containerd.endpoint(),
        None => server
            .data_dir
            .path()
            .join("cri.sock")
            .display()
            .to_string(),
    };
    let cri = Cri::connect(&endpoint)?;
    let logs = server.data_dir.path().join("bench-logs");
    let mut floor = Vec::with_capacity(count);
    for i in 0..count {
        floor.push(cri_start(&cri, &format!("floor-{i}"), &logs).await?);
    }
    results.latency("CRI floor: sandbox + container started", &floor);
    eprintln!("pods: CRI floor, {parallel} containers at once");
    let at_once = futures::future::join_all((0..parallel).map(|i| {
        let (cri, logs) = (&cri, &logs);
        async move { cri_start(cri, &format!("parallel-{i}"), logs).await }
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    results.latency(
        &format!("CRI floor: {parallel} sandboxes + containers at once, each"),
        &at_once,
    );

    eprintln!("pods: pod start-up, {count} pods one at a time");
    let mut startup = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("single-{i}");
        let created = Instant::now();
        pods.create(&PostParams::default(), &pod(&name)?).await?;
        let at = ready_at(&ready, &name, Duration::from_secs(60)).await?;
        startup.push(at.saturating_duration_since(created));
        delete_and_wait(&pods, &name).await?;
    }
    results.latency("1 pod: create → Running and Ready", &startup);

    eprintln!("pods: burst of {burst} pods");
    let names: Vec<String> = (0..burst).map(|i| format!("burst-{i}")).collect();
    let created = Instant::now();
    let creates = names.iter().map(|name| {
        let pods = pods.clone();
        async move {
            pods.create(&PostParams::default(), &pod(name)?)
                .await
                .map_err(anyhow::Error::from)
        }
    });
    for outcome in futures::future::join_all(creates).await {
        outcome?;
    }
    let mut each = Vec::with_capacity(burst);
    for name in &names {
        let at = ready_at(&ready, name, Duration::from_secs(300)).await?;
        each.push(at.saturating_duration_since(created));
    }
    let label = format!("{burst} pods at once: create → Running and Ready");
    results.latency(&label, &each);
    results.push(
        format!("{burst} pods at once: the last Ready"),
        "ms",
        ms(percentile(&each, 100.0)),
    );
    let loaded = Memory::of(server)?;
    loaded.record(&mut results, &format!("{burst} pods"));
    let per_pod = |idle: u64, loaded: u64| loaded.saturating_sub(idle) as f64 / burst as f64;
    results.push(
        "memory each running pod adds: runtime processes outside the server, PSS",
        "MiB",
        mib(per_pod(idle.runtime, loaded.runtime) as u64),
    );
    results.push(
        "memory each running pod adds: server and runtime processes, PSS",
        "MiB",
        mib(per_pod(idle.server + idle.runtime, loaded.server + loaded.runtime) as u64),
    );
    Ok(results)
}

/// Deletes a pod at once and waits until the API has no such pod (its containers are
/// gone by then: the kubelet removes the object last).
async fn delete_and_wait(pods: &Api<Pod>, name: &str) -> Result<()> {
    pods.delete(name, &DeleteParams::default().grace_period(0))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pods.get_opt(name).await?.is_some() {
        if Instant::now() > deadline {
            bail!("pod {name} still there 60 s after its deletion");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Memory of a test node (PSS): the `skiff server` process, and the runtime's processes
/// outside it.
struct Memory {
    server: u64,
    runtime: u64,
}

impl Memory {
    fn of(server: &skiff_e2e::Server) -> Result<Memory> {
        let pid = server.pid().context("the server runs")?;
        let processes = processes()?;
        let runtime_pids: Vec<u32> = match &server.containerd {
            // containerd and its shims, which all name its directory, and each pod's
            // pause process (the sandbox, as Skiff's holder is), a shim's child.
            Some(containerd) => {
                let dir = containerd.dir().display().to_string();
                let own: Vec<u32> = processes
                    .iter()
                    .filter(|p| p.cmdline.contains(&dir))
                    .map(|p| p.pid)
                    .collect();
                let pauses = processes.iter().filter(|p| {
                    own.contains(&p.ppid)
                        && p.cmdline.contains(skiff_e2e::containerd::SANDBOX_COMMAND)
                });
                own.iter().copied().chain(pauses.map(|p| p.pid)).collect()
            }
            // Skiff's runtime runs in the server: its monitors and sandbox holders are
            // the server's children (what runs in the containers is not).
            None => {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .context("the server's executable")?;
                processes
                    .iter()
                    .filter(|p| p.ppid == pid && p.exe.as_deref() == Some(exe.as_path()))
                    .map(|p| p.pid)
                    .collect()
            }
        };
        Ok(Memory {
            server: crate::procs::pss_bytes(pid).context("the server's memory")?,
            // A process that exited meanwhile holds nothing.
            runtime: runtime_pids
                .into_iter()
                .map(|p| crate::procs::pss_bytes(p).unwrap_or(0))
                .sum(),
        })
    }

    fn record(&self, results: &mut Results, when: &str) {
        results.push(
            format!("PSS of the skiff server process, {when}"),
            "MiB",
            mib(self.server),
        );
        results.push(
            format!("PSS of the runtime's processes outside it, {when}"),
            "MiB",
            mib(self.runtime),
        );
    }
}

/// One process of this machine, as `/proc` shows it.
struct Process {
    pid: u32,
    ppid: u32,
    exe: Option<PathBuf>,
    cmdline: String,
}

/// Every process of this machine (those gone while read are left out).
fn processes() -> Result<Vec<Process>> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .context("reading /proc")?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
            .unwrap_or_default();
        all.push(Process {
            pid,
            ppid: field("PPid:").unwrap_or(0) as u32,
            exe: std::fs::read_link(entry.path().join("exe")).ok(),
            cmdline,
        });
    }
    Ok(all)
}
