//! `skiff-bench scheduler`: the cases of upstream's `scheduler_perf`, end to end.
//!
//! Each case starts its own `skiff apiserver`, `skiff hollow-nodes` (the nodes, which also
//! take every bound pod to Running, as kubelets would) and `skiff scheduler`, as separate
//! processes. Pods the case needs in place first (`init`) are created and scheduled;
//! then the measured pods are created by concurrent clients while a watch sees each one
//! bound. A pod's latency is from just before its create request to the watch event that
//! shows its `spec.nodeName`; throughput is the measured pods over the time from the
//! first create to the last binding seen. The creation rate is reported beside it: when
//! the two are close, the clients, not the scheduler, set the pace.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

use crate::procs::{self, Proc, Server};
use crate::stats::{ms, percentile};

#[derive(Args, Debug, Clone)]
pub struct SchedulerArgs {
    /// The skiff binary (default: `skiff` next to this executable).
    #[arg(long, env = "SKIFF_BIN")]
    skiff: Option<PathBuf>,
    /// A smoke run: 100 and 1,000 nodes, a tenth of the pods.
    #[arg(long)]
    quick: bool,
    /// Only the cases whose name contains this (e.g. `5000`, `affinity`).
    #[arg(long)]
    only: Option<String>,
    /// Concurrent clients creating the pods.
    #[arg(long, default_value_t = 32)]
    creators: usize,
    /// Most time a case may take to bind its measured pods.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Also write the report (machine, command, table) as markdown to this file.
    #[arg(long)]
    output: Option<PathBuf>,
}

/// What the measured (and init) pods ask of the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// Requests only (upstream's `SchedulingBasic`).
    Basic,
    /// Required node affinity to one of two zones (`SchedulingNodeAffinity`).
    NodeAffinity,
    /// Required anti-affinity to each other per node (`SchedulingPodAntiAffinity`).
    AntiAffinity,
    /// Even spread over three zones, `DoNotSchedule` (`TopologySpreading`).
    TopologySpread,
    /// Nodes full of low-priority pods; every measured pod preempts one
    /// (`PreemptionBasic`).
    Preemption,
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    workload: Workload,
    nodes: usize,
    init_pods: usize,
    pods: usize,
}

fn cases(quick: bool) -> Vec<Case> {
    let scale = |n: usize| if quick { n.div_ceil(10) } else { n };
    let (small, large) = if quick { (100, 1000) } else { (500, 5000) };
    let case = |workload, nodes: usize, init: usize, pods: usize| {
        let name = match workload {
            Workload::Basic => "basic",
            Workload::NodeAffinity => "node affinity",
            Workload::AntiAffinity => "pod anti-affinity",
            Workload::TopologySpread => "topology spread",
            Workload::Preemption => "preemption",
        };
        Case {
            name: format!("{name}, {nodes} nodes"),
            workload,
            nodes,
            init_pods: scale(init),
            pods: scale(pods),
        }
    };
    vec![
        case(Workload::Basic, small, 0, 5000),
        case(Workload::Basic, large, 0, 10_000),
        case(Workload::NodeAffinity, small, 0, 5000),
        case(Workload::NodeAffinity, large, 0, 10_000),
        // At most one such pod fits a node: upstream's sizes stay below the node count.
        case(Workload::AntiAffinity, small, 100, 400),
        case(Workload::AntiAffinity, large, 1000, 1000),
        case(Workload::TopologySpread, small, 1000, 1000),
        case(Workload::TopologySpread, large, 5000, 2000),
        // Four low-priority pods fill a node (however small the run); each measured pod
        // needs one evicted.
        Case {
            init_pods: 4 * small,
            ..case(Workload::Preemption, small, 0, small)
        },
    ]
}

/// What one case measured.
struct Outcome {
    case: Case,
    throughput: f64,
    create_rate: f64,
    p50: Duration,
    p99: Duration,
    rss_mb: [f64; 3],
    registration: Duration,
}

pub async fn run(args: SchedulerArgs) -> Result<()> {
    let skiff = procs::find_skiff(args.skiff.clone())?;
    let selected: Vec<Case> = cases(args.quick)
        .into_iter()
        .filter(|c| args.only.as_deref().is_none_or(|f| c.name.contains(f)))
        .collect();
    if selected.is_empty() {
        bail!("no case matches --only {:?}", args.only);
    }
    let load_before = crate::loadavg();
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for case in selected {
        eprintln!(
            "skiff-bench: == {} ({} init pods, {} measured) ==",
            case.name, case.init_pods, case.pods
        );
        let outcome = run_case(&skiff, &case, &args)
            .await
            .with_context(|| format!("case {}", case.name))?;
        outcomes.push(outcome);
    }
    let load_after = crate::loadavg();
    let table = table(&outcomes);
    println!("{table}");
    if let Some(path) = &args.output {
        let report = format!(
            "{}- Load average (1/5/15 min) before: {load_before}; after: {load_after}; the run took {:.0} s\n\nCommand: `{}`\n\n{table}",
            crate::machine_report(),
            started.elapsed().as_secs_f64(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        std::fs::write(path, report).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("skiff-bench: report written to {}", path.display());
    }
    Ok(())
}

fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| case | nodes | init pods | measured pods | pods/s (created → bound) | vs. basic, same nodes | p50 ms | p99 ms | create rate pods/s | RSS MB apiserver / scheduler / hollow nodes | nodes registered in s |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n",
    );
    for o in outcomes {
        let basic = outcomes
            .iter()
            .find(|b| b.case.workload == Workload::Basic && b.case.nodes == o.case.nodes)
            .map_or("n/a".to_string(), |b| {
                format!("{:.2}", o.throughput / b.throughput)
            });
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {basic} | {:.1} | {:.1} | {:.0} | {:.0} / {:.0} / {:.0} | {:.1} |\n",
            o.case.name,
            o.case.nodes,
            o.case.init_pods,
            o.case.pods,
            o.throughput,
            ms(o.p50),
            ms(o.p99),
            o.create_rate,
            o.rss_mb[0],
            o.rss_mb[1],
            o.rss_mb[2],
            o.registration.as_secs_f64(),
        ));
    }
    out
}

async fn run_case(skiff: &std::path::Path, case: &Case, args: &SchedulerArgs) -> Result<Outcome> {
    let mut server = Server::start(skiff, "scheduler", None).await?;
    let kubeconfig = server.dir.path().join("admin.kubeconfig");
    let client = server.client.clone();

    let mut hollow = Command::new(skiff);
    hollow
        .arg("hollow-nodes")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg(format!("--count={}", case.nodes))
        .arg("--concurrency=64");
    match case.workload {
        Workload::NodeAffinity => {
            hollow.arg("--zones=2");
        }
        Workload::TopologySpread => {
            hollow.arg("--zones=3");
        }
        Workload::Preemption => {
            hollow.arg("--cpu=4");
        }
        Workload::Basic | Workload::AntiAffinity => {}
    }
    let registering = Instant::now();
    let mut hollow = Proc::spawn(
        "skiff hollow-nodes",
        hollow,
        server.dir.path().join("hollow.log"),
    )?;
    wait_for_nodes(&client, case.nodes, &mut hollow).await?;
    let registration = registering.elapsed();
    eprintln!(
        "  {} nodes registered and Ready in {:.1} s",
        case.nodes,
        registration.as_secs_f64()
    );

    let mut scheduler = Command::new(skiff);
    scheduler
        .arg("scheduler")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--leader-elect=false");
    let mut scheduler = Proc::spawn(
        "skiff scheduler",
        scheduler,
        server.dir.path().join("scheduler.log"),
    )?;

    let ns = "bench";
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await
        .context("creating the bench namespace")?;
    if case.workload == Workload::Preemption {
        let classes: Api<PriorityClass> = Api::all(client.clone());
        for (name, value) in [("low", 1), ("high", 1000)] {
            classes
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": name}, "value": value}))?,
                )
                .await
                .with_context(|| format!("creating PriorityClass {name}"))?;
        }
    }

    // The scheduler is warm once it has bound a first pod.
    let warmup = pod("warmup", Workload::Basic, "warmup", false)?;
    let (_, _) = create_and_bind(&client, ns, vec![warmup], 1, Duration::from_secs(60)).await?;
    scheduler.check_alive()?;

    if case.init_pods > 0 {
        eprintln!("  {} init pods", case.init_pods);
        let init = (0..case.init_pods)
            .map(|i| pod(&format!("init-{i}"), case.workload, "init", true))
            .collect::<Result<_>>()?;
        create_and_bind(
            &client,
            ns,
            init,
            args.creators,
            Duration::from_secs(args.timeout_secs),
        )
        .await
        .context("scheduling the init pods")?;
    }

    eprintln!("  {} measured pods, {} creators", case.pods, args.creators);
    let measured = (0..case.pods)
        .map(|i| pod(&format!("pod-{i}"), case.workload, "measure", false))
        .collect::<Result<_>>()?;
    let (latencies, rates) = create_and_bind(
        &client,
        ns,
        measured,
        args.creators,
        Duration::from_secs(args.timeout_secs),
    )
    .await
    .context("scheduling the measured pods")?;
    let outcome = Outcome {
        case: case.clone(),
        throughput: rates.bound,
        create_rate: rates.created,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        rss_mb: [
            mb(server.proc.rss_bytes()?),
            mb(scheduler.rss_bytes()?),
            mb(hollow.rss_bytes()?),
        ],
        registration,
    };
    eprintln!(
        "  {:.0} pods/s bound, p50 {:.1} ms, p99 {:.1} ms (created at {:.0} pods/s)",
        outcome.throughput,
        ms(outcome.p50),
        ms(outcome.p99),
        outcome.create_rate
    );
    server.check_alive()?;
    hollow.check_alive()?;
    scheduler.check_alive()?;
    Ok(outcome)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Waits until `count` nodes are Ready, showing progress.
async fn wait_for_nodes(client: &Client, count: usize, hollow: &mut Proc) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut shown = usize::MAX;
    loop {
        hollow.check_alive()?;
        let ready = nodes
            .list(&ListParams::default())
            .await
            .context("listing nodes")?
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= count {
            return Ok(());
        }
        if ready != shown {
            eprintln!("  {ready}/{count} nodes Ready");
            shown = ready;
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {count} nodes Ready after 600 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A pod of the workload: upstream's default pod's requests (100m CPU, 500Mi), and
/// the workload's constraint. `init` pods of the preemption case are the low-priority
/// ones; its measured pods the high-priority ones.
fn pod(name: &str, workload: Workload, role: &str, init: bool) -> Result<Pod> {
    let mut spec = json!({
        "containers": [{
            "name": "pause",
            "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}
        }]
    });
    let mut labels = json!({"bench": role});
    match workload {
        Workload::Basic => {}
        Workload::NodeAffinity => {
            spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-0"]}
                ]}]
            }}});
        }
        Workload::AntiAffinity => {
            labels["color"] = json!("green");
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"color": "green"}},
                "topologyKey": "kubernetes.io/hostname"
            }]}});
        }
        Workload::TopologySpread => {
            labels["app"] = json!("spread");
            spec["topologySpreadConstraints"] = json!([{
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "spread"}}
            }]);
        }
        Workload::Preemption => {
            spec["containers"][0]["resources"]["requests"] =
                json!({"cpu": "900m", "memory": "500Mi"});
            spec["priorityClassName"] = json!(if init { "low" } else { "high" });
        }
    }
    let value: Value = json!({"metadata": {"name": name, "labels": labels}, "spec": spec});
    serde_json::from_value(value).context("building a pod")
}

struct Rates {
    created: f64,
    bound: f64,
}

/// Creates `pods` with `creators` concurrent clients and waits until a watch has seen
/// every one bound; each pod's latency, and the creation and binding rates.
async fn create_and_bind(
    client: &Client,
    ns: &str,
    pods: Vec<Pod>,
    creators: usize,
    timeout: Duration,
) -> Result<(Vec<Duration>, Rates)> {
    let total = pods.len();
    let role = pods
        .first()
        .and_then(|p| p.metadata.labels.as_ref())
        .and_then(|l| l.get("bench").cloned())
        .unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();

    // The watch starts (and has listed) before the first create.
    let config = watcher::Config::default().labels(&format!("bench={role}"));
    let mut events = watcher::watcher(api.clone(), config).boxed();
    loop {
        match events.try_next().await.context("starting the pod watch")? {
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => bail!("the pod watch ended before it started"),
        }
    }

    let started = Instant::now();
    let create = {
        let sent = sent.clone();
        let api = api.clone();
        async move {
            futures::stream::iter(pods)
                .map(|pod| {
                    let api = api.clone();
                    let sent = sent.clone();
                    async move {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        sent.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(name.clone(), Instant::now());
                        api.create(&PostParams::default(), &pod)
                            .await
                            .with_context(|| format!("creating pod {name}"))
                    }
                })
                .buffer_unordered(creators.max(1))
                .try_for_each(|_| async { Ok(()) })
                .await?;
            Ok::<Instant, anyhow::Error>(Instant::now())
        }
    };
    let watch = async {
        let mut bound: HashMap<String, Instant> = HashMap::with_capacity(total);
        let mut last_shown = Instant::now();
        while bound.len() < total {
            let event = tokio::time::timeout(Duration::from_secs(30), events.try_next())
                .await
                .map_err(|_| anyhow::anyhow!("no pod event for 30 s"))?
                .context("watching pods")?;
            let Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event else {
                continue;
            };
            let has_node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some();
            if has_node {
                let name = pod.metadata.name.unwrap_or_default();
                bound.entry(name).or_insert_with(Instant::now);
            }
            if last_shown.elapsed() > Duration::from_secs(5) {
                eprintln!("    {}/{total} bound", bound.len());
                last_shown = Instant::now();
            }
        }
        Ok::<HashMap<String, Instant>, anyhow::Error>(bound)
    };
    let (created_at, bound) =
        tokio::time::timeout(timeout, async { tokio::try_join!(create, watch) })
            .await
            .map_err(|_| anyhow::anyhow!("not every pod bound within {timeout:?}"))??;

    let sent = sent.lock().unwrap_or_else(|e| e.into_inner());
    let latencies: Vec<Duration> = bound
        .iter()
        .filter_map(|(name, at)| Some(at.saturating_duration_since(*sent.get(name)?)))
        .collect();
    let last_bound = bound.values().max().copied().unwrap_or(started);
    let rates = Rates {
        created: total as f64 / created_at.duration_since(started).as_secs_f64().max(1e-9),
        bound: total as f64 / last_bound.duration_since(started).as_secs_f64().max(1e-9),
    };
    Ok((latencies, rates))
}
