//! `skiff-bench`: benchmarks of Skiff, measured against real processes.
//!
//! `skiff-bench network` measures the service proxy's rule programming and the cluster
//! DNS ([`network`]); `skiff-bench scheduler` scheduling throughput and latency on
//! hollow nodes ([`scheduler`]); `skiff-bench pods` pod start-up on a real node
//! ([`pods`]).
//!
//! `skiff-bench apiserver` starts one etcd and two `skiff server`s (embedded datastore and
//! etcd datastore) side by side, drives each in turn with the `kube` client over HTTPS,
//! and prints one markdown table with both backends and their ratio. Start reading at
//! [`run_apiserver`]; the workloads are in [`workloads`], the processes in [`procs`].
//! Results are recorded in `docs/benchmarks.md`.

mod network;
mod pods;
mod procs;
mod runc_floor;
mod scheduler;
mod stats;
mod workloads;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use procs::{Etcd, Server};
use stats::Results;

#[derive(Parser)]
#[command(
    name = "skiff-bench",
    about = "Benchmarks of Skiff against real processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API server latency, throughput, list, watch and memory, embedded vs etcd datastore.
    Apiserver(ApiserverArgs),
    /// Service proxy rule programming (nftables vs iptables) and cluster DNS throughput
    /// (as root: network namespaces).
    Network(network::NetworkArgs),
    /// Scheduling throughput and latency with hollow nodes: upstream's scheduler_perf
    /// cases (basic, node affinity, pod anti-affinity, topology spread, preemption).
    Scheduler(scheduler::SchedulerArgs),
    /// Pod start-up latency and burst throughput on a real single-node cluster, against
    /// the runtime's own CRI start (as root: real containers).
    Pods(pods::PodsArgs),
}

#[derive(Args, Debug, Clone)]
struct ApiserverArgs {
    /// The skiff binary (default: `skiff` next to this executable).
    #[arg(long, env = "SKIFF_BIN")]
    skiff: Option<PathBuf>,
    /// The etcd binary for the etcd-backed server.
    #[arg(long, default_value = "/usr/bin/etcd")]
    etcd: PathBuf,
    /// Pods stored before measuring RSS (the list namespace's pods included).
    #[arg(long)]
    objects: Option<usize>,
    /// A fast smoke run with small counts.
    #[arg(long)]
    quick: bool,
    /// Pods in the namespace that is listed (default 10000; 1000 with --quick).
    #[arg(long)]
    list_pods: Option<usize>,
    /// Operations per create/get/update measurement (default 1000; 100 with --quick).
    #[arg(long)]
    ops: Option<usize>,
    /// Concurrent clients for the concurrent create/get/update measurement.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Concurrent clients that load the pods.
    #[arg(long, default_value_t = 64)]
    load_concurrency: usize,
    /// Open-loop write rate (writes/s).
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Open-loop duration in seconds (default 10; 3 with --quick).
    #[arg(long)]
    open_loop_secs: Option<u32>,
    /// Number of watchers for the fan-out measurement (default 100; 20 with --quick).
    #[arg(long)]
    watchers: Option<usize>,
    /// Writes observed by the watchers (default 300; 30 with --quick).
    #[arg(long)]
    watch_writes: Option<usize>,
    /// Also write the report (machine, command, table) as markdown to this file.
    #[arg(long)]
    output: Option<PathBuf>,
}

/// The effective sizes of a run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    objects: usize,
    list_pods: usize,
    ops: usize,
    open_loop_secs: u32,
    watchers: usize,
    watch_writes: usize,
    list_reps: usize,
    typed_list_reps: usize,
}

impl ApiserverArgs {
    fn sizes(&self) -> Sizes {
        let q = self.quick;
        let list_pods = self.list_pods.unwrap_or(if q { 1000 } else { 10_000 });
        Sizes {
            objects: self
                .objects
                .unwrap_or(if q { 3000 } else { 100_000 })
                .max(list_pods),
            list_pods,
            ops: self.ops.unwrap_or(if q { 100 } else { 1000 }),
            open_loop_secs: self.open_loop_secs.unwrap_or(if q { 3 } else { 10 }),
            watchers: self.watchers.unwrap_or(if q { 20 } else { 100 }),
            watch_writes: self.watch_writes.unwrap_or(if q { 30 } else { 300 }),
            list_reps: if q { 5 } else { 30 },
            typed_list_reps: if q { 2 } else { 5 },
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Apiserver(args) => {
                // On Ctrl-C the run future is dropped, and with it every process guard.
                tokio::select! {
                    result = run_apiserver(args) => result,
                    _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
                }
            }
            Command::Network(args) => network::run(args).await,
            Command::Pods(args) => tokio::select! {
                result = pods::run(args) => result,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            },
            Command::Scheduler(args) => tokio::select! {
                result = scheduler::run(args) => result,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            },
        }
    })
}

async fn run_apiserver(args: ApiserverArgs) -> Result<()> {
    let sizes = args.sizes();
    let skiff = procs::find_skiff(args.skiff.clone())?;
    eprintln!("skiff-bench: {sizes:?}");
    eprintln!("skiff-bench: skiff = {}", skiff.display());

    let etcd = Etcd::start(&args.etcd)
        .await
        .with_context(|| format!("starting etcd ({})", args.etcd.display()))?;
    eprintln!(
        "skiff-bench: etcd at {} (pid {})",
        etcd.url,
        etcd.proc.pid()
    );
    let mut embedded = Server::start(&skiff, "embedded", None)
        .await
        .context("starting skiff server (embedded)")?;
    let mut on_etcd = Server::start(&skiff, "etcd", Some(&etcd.url))
        .await
        .context("starting skiff server (etcd)")?;
    eprintln!(
        "skiff-bench: servers up (embedded pid {}, etcd-backed pid {})",
        embedded.proc.pid(),
        on_etcd.proc.pid()
    );

    // Let startup work settle before the idle reading.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut res_embedded = Results::default();
    let mut res_etcd = Results::default();
    res_embedded.push("server RSS, idle", "MB", mb(embedded.proc.rss_bytes()?));
    res_etcd.push("server RSS, idle", "MB", mb(on_etcd.proc.rss_bytes()?));
    res_etcd.push("etcd process RSS, idle", "MB", mb(etcd.proc.rss_bytes()?));

    let load_before = loadavg();
    let started = Instant::now();
    for (label, server, out) in [
        ("embedded", &mut embedded, &mut res_embedded),
        ("etcd", &mut on_etcd, &mut res_etcd),
    ] {
        eprintln!("skiff-bench: == {label} ==");
        run_backend(server, &sizes, &args, out)
            .await
            .with_context(|| format!("benchmarking the {label} backend"))?;
        let stored = format!("{} pods stored", sizes.objects);
        if label == "etcd" {
            out.push(
                format!("etcd process RSS, {stored}"),
                "MB",
                mb(etcd.proc.rss_bytes()?),
            );
            out.push(
                format!("datastore on disk, {stored}"),
                "MB",
                mb(procs::disk_bytes(etcd.dir.path())),
            );
        } else {
            out.push(
                format!("datastore on disk, {stored}"),
                "MB",
                mb(procs::disk_bytes(&server.dir.path().join("db"))),
            );
        }
        server.check_alive()?;
    }
    eprintln!(
        "skiff-bench: measured in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let load_after = loadavg();
    eprintln!("skiff-bench: load average before {load_before}, after {load_after}");

    let table = stats::table(("embedded", &res_embedded), ("etcd", &res_etcd));
    println!("{table}");
    if let Some(path) = &args.output {
        let report = format!(
            "{}- Load average (1/5/15 min) before: {load_before}; after: {load_after}; measuring took {:.0} s\n\nCommand: `{}`\n\n{table}",
            machine_report(),
            started.elapsed().as_secs_f64(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        std::fs::write(path, report).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("skiff-bench: report written to {}", path.display());
    }
    drop(embedded);
    drop(on_etcd);
    drop(etcd);
    Ok(())
}

async fn run_backend(
    server: &mut Server,
    sizes: &Sizes,
    args: &ApiserverArgs,
    out: &mut Results,
) -> Result<()> {
    let client = server.client.clone();
    for ns in [
        "bench-crud",
        "bench-open",
        "bench-watch",
        "bench-list",
        "bench-bulk",
    ] {
        workloads::ensure_namespace(&client, ns).await?;
    }

    eprintln!("  create/get/update, sequential");
    workloads::crud(&client, "bench-crud", "sequential", sizes.ops, 1, out).await?;
    eprintln!("  create/get/update, {} concurrent", args.concurrency);
    let label = format!("{} concurrent", args.concurrency);
    workloads::crud(
        &client,
        "bench-crud",
        &label,
        sizes.ops * 2,
        args.concurrency,
        out,
    )
    .await?;

    eprintln!(
        "  open loop, {}/s for {} s",
        args.rate, sizes.open_loop_secs
    );
    workloads::open_loop(&client, "bench-open", args.rate, sizes.open_loop_secs, out).await?;

    eprintln!(
        "  watch fan-out, {} watchers, {} writes",
        sizes.watchers, sizes.watch_writes
    );
    workloads::watch_fanout(
        &client,
        "bench-watch",
        sizes.watchers,
        sizes.watch_writes,
        Duration::from_millis(10),
        out,
    )
    .await?;

    eprintln!(
        "  loading {} pods ({} in bench-list), {} concurrent",
        sizes.objects, sizes.list_pods, args.load_concurrency
    );
    let (mut lat, t1) = workloads::create_pods(
        &client,
        "bench-list",
        "pod",
        sizes.list_pods,
        args.load_concurrency,
    )
    .await?;
    let (lat2, t2) = workloads::create_pods(
        &client,
        "bench-bulk",
        "pod",
        sizes.objects - sizes.list_pods,
        args.load_concurrency,
    )
    .await?;
    lat.extend(lat2);
    let name = format!(
        "create pod, {} concurrent (bulk load)",
        args.load_concurrency
    );
    out.latency(&name, &lat);
    out.push(
        format!("{name} throughput"),
        "ops/s",
        lat.len() as f64 / (t1 + t2).as_secs_f64(),
    );
    server.check_alive()?;

    eprintln!("  list {} pods", sizes.list_pods);
    workloads::list_pods(
        &client,
        "bench-list",
        sizes.list_pods,
        sizes.list_reps,
        sizes.typed_list_reps,
        out,
    )
    .await?;

    tokio::time::sleep(Duration::from_secs(3)).await;
    out.push(
        format!("server RSS, {} pods stored", sizes.objects),
        "MB",
        mb(server.proc.rss_bytes()?),
    );
    Ok(())
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every number.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Date, CPU, memory and kernel of this machine, as markdown lines.
pub(crate) fn machine_report() -> String {
    let date = std::process::Command::new("date")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".to_string(), |s| s.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or("unknown".to_string(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("- Date: {date}\n- Machine: {cores} cores ({cpu}), {mem} memory, Linux {kernel}\n")
}
