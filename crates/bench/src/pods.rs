//! `skiff-bench pods`: pod start-up on a real single-node cluster (as root: real
//! containers). Three measurements in one run on one `skiff server`:
//!
//! - **CRI floor**: the same busybox container started through the runtime's CRI socket
//!   alone (`RunPodSandbox`, `CreateContainer`, `StartContainer`, CNI included): what
//!   the runtime itself costs, the baseline the others are divided by.
//! - **Pod start-up**: one pod at a time, from the create request to the pod `Ready`
//!   as a watch sees it: API server, scheduler, kubelet and runtime together (upstream's
//!   pod start-up SLI measures the same span, image pulls aside).
//! - **Burst**: many pods created at once, until the last is `Ready`: pods per second.

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

use crate::stats::{ms, percentile};

#[derive(Args, Debug, Clone)]
pub struct PodsArgs {
    /// The skiff binary (default: `skiff` next to this executable).
    #[arg(long, env = "SKIFF_BIN")]
    skiff: Option<PathBuf>,
    /// Pods started one at a time, for each of the CRI floor and the pod start-up
    /// (default 20; 5 with --quick).
    #[arg(long)]
    count: Option<usize>,
    /// Pods created at once for the burst (default 30; 10 with --quick).
    #[arg(long)]
    burst: Option<usize>,
    /// A fast smoke run with small counts.
    #[arg(long)]
    quick: bool,
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

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// When each pod of the namespace was first seen `Ready`, by name (a watch running for
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
            if is_ready(&pod) {
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
    let count = args.count.unwrap_or(if args.quick { 5 } else { 20 });
    let burst = args.burst.unwrap_or(if args.quick { 10 } else { 30 });
    let skiff = crate::procs::find_skiff(args.skiff.clone())?;
    eprintln!("pods: starting a single-node cluster ({})", skiff.display());
    // The e2e harness starts `skiff server` with its node agent and the test image.
    std::env::set_var("SKIFF_BIN", &skiff);
    let server = tokio::task::spawn_blocking(skiff_e2e::Server::start_node)
        .await
        .context("starting skiff server")?;
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

    eprintln!("pods: CRI floor, {count} containers one at a time");
    let cri = Cri::connect(
        &server
            .data_dir
            .path()
            .join("cri.sock")
            .display()
            .to_string(),
    )?;
    let logs = server.data_dir.path().join("bench-logs");
    let mut floor = Vec::with_capacity(count);
    for i in 0..count {
        floor.push(cri_start(&cri, &format!("floor-{i}"), &logs).await?);
    }

    eprintln!("pods: pod start-up, {count} pods one at a time");
    let mut startup = Vec::with_capacity(count);
    for i in 0..count {
        let name = format!("single-{i}");
        let created = Instant::now();
        pods.create(&PostParams::default(), &pod(&name)?).await?;
        let at = ready_at(&ready, &name, Duration::from_secs(60)).await?;
        startup.push(at.saturating_duration_since(created));
        pods.delete(&name, &DeleteParams::default().grace_period(0))
            .await?;
    }

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
    let mut last = created;
    for name in &names {
        last = last.max(ready_at(&ready, name, Duration::from_secs(300)).await?);
    }
    let burst_took = last.saturating_duration_since(created);

    let row = |name: &str, samples: &[Duration]| {
        format!(
            "| {name} | {:.1} | {:.1} | {:.1} |",
            ms(percentile(samples, 50.0)),
            ms(percentile(samples, 90.0)),
            ms(percentile(samples, 100.0))
        )
    };
    println!("| measurement ({count} each) | p50 ms | p90 ms | max ms |");
    println!("|---|---:|---:|---:|");
    println!("{}", row("CRI floor: sandbox + container started", &floor));
    println!(
        "{}",
        row(
            "pod create → Ready (API, scheduler, kubelet, runtime)",
            &startup
        )
    );
    let ratio = ms(percentile(&startup, 50.0)) / ms(percentile(&floor, 50.0)).max(f64::EPSILON);
    println!();
    println!("pod start-up p50 / CRI floor p50: {ratio:.2}×");
    println!(
        "burst: {burst} pods Ready in {:.2} s ({:.1} pods/s)",
        burst_took.as_secs_f64(),
        burst as f64 / burst_took.as_secs_f64().max(f64::EPSILON)
    );
    Ok(())
}
