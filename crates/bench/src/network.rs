//! `skiff-bench network`: the service proxy and the cluster DNS.
//!
//! - **Proxy programming**: the rules for `N` Services of 10 endpoints each, computed and
//!   loaded into the kernel of a throwaway network namespace, as a full sync and as the
//!   incremental update for one endpoint gone, in each proxy mode (iptables with both
//!   tool sets); repeated, medians reported. The nftables mode's promise is an update
//!   costing in proportion to the change, not to the number of Services: the ratio
//!   column shows it.
//! - **Request latency**: a request on a new connection to a pod's address and to its
//!   Service's cluster IP (through the proxy's nftables rules), in network namespaces.
//! - **DNS**: queries per second and latency of the DNS server in process on loopback,
//!   against a bare UDP echo measured the same way (the floor the client and the loopback
//!   set).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::stats::{ms, percentile};

#[derive(Args, Debug, Clone)]
pub struct NetworkArgs {
    /// Service counts to program (10 endpoints each).
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    services: Vec<usize>,
    /// Repetitions of each proxy measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Largest Service count measured with the nf_tables-backed iptables tools, whose full
    /// sync takes minutes at 10,000.
    #[arg(long, default_value_t = 3000)]
    iptables_nft_max: usize,
    /// Requests for the latency through the proxy against the pod's address.
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Services in the DNS server's view (and as many headless ones).
    #[arg(long, default_value_t = 1000)]
    dns_services: usize,
    /// Queries per DNS measurement.
    #[arg(long, default_value_t = 50_000)]
    queries: usize,
    /// Concurrent DNS clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Also write the report as markdown to this file.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

pub async fn run(args: NetworkArgs) -> Result<()> {
    let mut report = String::new();
    report.push_str(&crate::machine_report());
    writeln!(report, "- Load average before: {}\n", crate::loadavg())?;
    report.push_str(&proxy_table(&args)?);
    writeln!(report)?;
    report.push_str(&latency_table(args.requests)?);
    writeln!(report)?;
    report.push_str(&dns_table(&args).await?);
    println!("{report}");
    if let Some(path) = &args.output {
        std::fs::write(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn dns_table(args: &NetworkArgs) -> Result<String> {
    eprintln!(
        "skiff-bench: DNS, {} services (+{} headless), {} queries, {} clients",
        args.dns_services, args.dns_services, args.queries, args.clients
    );
    let echo = echo_baseline(args.queries, args.clients).await?;
    let results = skiff_dns::bench::in_process(args.dns_services, args.queries, args.clients)
        .await
        .context("DNS benchmark")?;
    let mut table = format!(
        "DNS server, {} ClusterIP + {} headless Services, {} UDP queries from {} clients\n\n\
         | query | queries/s | p50 ms | p99 ms | failures | queries/s vs UDP echo |\n\
         | --- | --- | --- | --- | --- | --- |\n",
        args.dns_services, args.dns_services, args.queries, args.clients
    );
    let row = |table: &mut String, name: &str, r: &skiff_dns::bench::BenchResult| {
        let _ = writeln!(
            table,
            "| {name} | {:.0} | {:.3} | {:.3} | {} | {:.2} |",
            r.queries_per_second(),
            ms(r.p50),
            ms(r.p99),
            r.failures,
            r.queries_per_second() / echo.queries_per_second().max(f64::EPSILON)
        );
    };
    row(&mut table, "UDP echo (baseline)", &echo);
    for (name, result) in &results {
        row(&mut table, name, result);
    }
    Ok(table)
}

/// The same load against a server that sends every datagram back unchanged.
async fn echo_baseline(queries: usize, clients: usize) -> Result<skiff_dns::bench::BenchResult> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let address = socket.local_addr()?;
    let echo = tokio::spawn(async move {
        let mut buffer = vec![0u8; 65535];
        while let Ok((n, peer)) = socket.recv_from(&mut buffer).await {
            let _ = socket.send_to(&buffer[..n], peer).await;
        }
    });
    let result = skiff_dns::bench::measure(
        address,
        "echo.bench.",
        hickory_proto::rr::RecordType::A,
        queries,
        clients,
    )
    .await;
    echo.abort();
    Ok(result?)
}

/// The median of `samples`.
fn median(samples: Vec<Duration>) -> Duration {
    percentile(&samples, 50.0)
}

/// A proxy mode as measured: the renderer, and the tools that load its rules.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Nftables,
    /// iptables with the nf_tables-backed tools (Debian's default `iptables`).
    IptablesNft,
    /// iptables with the legacy x_tables tools.
    IptablesLegacy,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Nftables => "nftables",
            Mode::IptablesNft => "iptables (nf_tables tools)",
            Mode::IptablesLegacy => "iptables (legacy tools)",
        }
    }
}

fn proxy_table(args: &NetworkArgs) -> Result<String> {
    let mut table = String::from(
        "Service proxy rule programming, 10 endpoints per Service, each run in a fresh network namespace \
         (compute: render and diff; kernel: `nft -f` or `iptables-restore`)\n\n\
         | mode | services | full sync: compute ms | full sync: kernel ms | one endpoint gone: compute ms | one endpoint gone: kernel ms | update / full, kernel |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for mode in [Mode::Nftables, Mode::IptablesLegacy, Mode::IptablesNft] {
        for &services in &args.services {
            if matches!(mode, Mode::IptablesNft) && services > args.iptables_nft_max {
                writeln!(
                    table,
                    "| {} | {services} | skipped: minutes per full sync (the tool's `--noflush` restore is quadratic in chains) | | | | |",
                    mode.label()
                )?;
                continue;
            }
            eprintln!("skiff-bench: proxy, {}, {services} services", mode.label());
            let t = match mode {
                Mode::Nftables => measure(skiff_proxy::Nftables, services, args.reps, |ns| {
                    skiff_proxy::NftCommand::new(["ip", "netns", "exec", ns, "nft"])
                })?,
                Mode::IptablesNft => measure(skiff_proxy::Iptables, services, args.reps, |ns| {
                    skiff_proxy::IptablesCommand::new(["ip", "netns", "exec", ns])
                })?,
                Mode::IptablesLegacy => {
                    measure(skiff_proxy::Iptables, services, args.reps, |ns| {
                        skiff_proxy::IptablesCommand::new(["ip", "netns", "exec", ns]).legacy()
                    })?
                }
            };
            writeln!(
                table,
                "| {} | {services} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3} |",
                mode.label(),
                ms(t.full_compute),
                ms(t.full_kernel),
                ms(t.update_compute),
                ms(t.update_kernel),
                t.update_kernel.as_secs_f64() / t.full_kernel.as_secs_f64().max(1e-9),
            )?;
        }
    }
    Ok(table)
}

struct Timings {
    full_compute: Duration,
    full_kernel: Duration,
    update_compute: Duration,
    update_kernel: Duration,
}

/// `reps` runs, each in a fresh namespace: render and load everything for `services`
/// Services, then compute and load the update for one endpoint gone. Medians.
fn measure<B, A>(
    backend: B,
    services: usize,
    reps: usize,
    applier: impl Fn(&str) -> A,
) -> Result<Timings>
where
    B: skiff_proxy::Backend,
    A: skiff_proxy::Apply,
{
    let config = skiff_proxy::RenderConfig {
        cluster_cidr: Some("10.0.0.0/8".parse().map_err(anyhow::Error::msg)?),
        ..Default::default()
    };
    let old = skiff_proxy::model::synthetic(services, 10);
    let mut new = old.clone();
    if let Some(port) = new.services.values_mut().nth(services / 2) {
        port.cluster_endpoints.pop();
        port.external_endpoints.pop();
    }
    let mut samples: [Vec<Duration>; 4] = Default::default();
    for rep in 0..reps.max(1) {
        let lab = Lab::new(rep)?;
        let mut kernel = applier(&lab.namespace);
        let started = Instant::now();
        let old_rules = backend.render(&old, &config);
        let full = backend.full_transaction(&old_rules);
        samples[0].push(started.elapsed());
        let started = Instant::now();
        kernel
            .apply(&full)
            .map_err(|e| anyhow::anyhow!("full sync: {e}"))?;
        samples[1].push(started.elapsed());
        let started = Instant::now();
        let new_rules = backend.render(&new, &config);
        let update = backend
            .update_transaction(&old_rules, &new_rules, false)
            .context("the changed endpoint gave no update")?;
        samples[2].push(started.elapsed());
        let started = Instant::now();
        kernel
            .apply(&update)
            .map_err(|e| anyhow::anyhow!("incremental sync: {e}"))?;
        samples[3].push(started.elapsed());
    }
    let [full_compute, full_kernel, update_compute, update_kernel] = samples.map(median);
    Ok(Timings {
        full_compute,
        full_kernel,
        update_compute,
        update_kernel,
    })
}

/// A network namespace of its own, deleted on drop, where the rules are loaded.
struct Lab {
    namespace: String,
}

impl Lab {
    /// `tag` tells apart the namespaces one run makes.
    fn new(tag: impl std::fmt::Display) -> Result<Lab> {
        let namespace = format!("skiff-bench-{}-{tag}", std::process::id());
        let status = std::process::Command::new("ip")
            .args(["netns", "add", &namespace])
            .status()
            .context("running ip netns add (root and iproute2 needed)")?;
        anyhow::ensure!(status.success(), "ip netns add {namespace} failed");
        Ok(Lab { namespace })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

/// Request latency through the proxy's rules against the pod's own address: a "node"
/// network namespace routing to a "pod" namespace whose server answers one byte per
/// connection; a client in the node opens a connection, sends a byte and reads the answer,
/// `requests` times to each address. Each request is a new connection, so every one goes
/// through the Service's NAT decision (established flows would only hit conntrack).
pub fn latency_table(requests: usize) -> Result<String> {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use skiff_e2e::netns::{enter, sh};

    if let Some(why) = skiff_e2e::netns::unavailable(&[["ip", "-V"], ["nft", "--version"]]) {
        return Ok(format!("Service request latency: not measured ({why})\n"));
    }
    let lab = Lab::new("latency")?;
    let node = lab.namespace.clone();
    let pod = format!("{node}-pod");
    let pod_guard = Lab {
        namespace: pod.clone(),
    };
    sh(&format!("ip netns add {pod}"));
    for ns in [&node, &pod] {
        sh(&format!("ip -n {ns} link set lo up"));
    }
    sh(&format!(
        "ip netns exec {node} sysctl -qw net.ipv4.ip_forward=1"
    ));
    // An uplink with a default route, as a node has: a cluster IP is routed before NAT.
    sh(&format!(
        "ip -n {node} link add up0 type veth peer name up1"
    ));
    sh(&format!("ip -n {node} link set up0 up"));
    sh(&format!("ip -n {node} link set up1 up"));
    sh(&format!("ip -n {node} addr add 192.168.77.1/24 dev up0"));
    sh(&format!("ip -n {node} route add default dev up0"));
    sh(&format!(
        "ip -n {node} link add veth0 type veth peer name eth0 netns {pod}"
    ));
    sh(&format!("ip -n {node} addr add 10.88.1.1/24 dev veth0"));
    sh(&format!("ip -n {node} link set veth0 up"));
    sh(&format!("ip -n {pod} addr add 10.88.1.2/24 dev eth0"));
    sh(&format!("ip -n {pod} link set eth0 up"));
    sh(&format!("ip -n {pod} route add default via 10.88.1.1"));

    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = {
        let (pod, stop) = (pod.clone(), stop.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            enter(&pod)?;
            let listener = std::net::TcpListener::bind("0.0.0.0:8080")?;
            listener.set_nonblocking(true)?;
            let _ = ready_tx.send(());
            let mut byte = [0u8; 1];
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false)?;
                        if conn.read_exact(&mut byte).is_ok() {
                            let _ = conn.write_all(&byte);
                        }
                    }
                    Err(_) => std::thread::yield_now(),
                }
            }
            Ok(())
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the pod's server did not start")?;

    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "bench", "name": "echo"},
        "spec": {"clusterIP": "10.96.0.50", "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "bench", "name": "echo-x",
                         "labels": {"kubernetes.io/service-name": "echo"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.88.1.2"], "conditions": {"ready": true}}],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }))?;
    let config = skiff_proxy::RenderConfig {
        cluster_cidr: Some("10.88.0.0/16".parse().map_err(anyhow::Error::msg)?),
        ..Default::default()
    };
    let nft = skiff_proxy::NftCommand::new(["ip", "netns", "exec", node.as_str(), "nft"]);
    skiff_proxy::Proxier::new(config, nft)
        .sync(&skiff_proxy::model::build([&service], [&slice], "node"))
        .map_err(|e| anyhow::anyhow!("loading the Service's rules: {e}"))?;

    let client = std::thread::spawn(move || -> std::io::Result<Vec<(String, Vec<Duration>)>> {
        enter(&node)?;
        let mut results = Vec::new();
        for (path, address) in [
            ("pod IP, direct", "10.88.1.2:8080"),
            (
                "cluster IP, through the proxy's nftables rules",
                "10.96.0.50:80",
            ),
        ] {
            let address: std::net::SocketAddr = address.parse().map_err(std::io::Error::other)?;
            let mut samples = Vec::with_capacity(requests);
            for round in 0..requests + 100 {
                let started = Instant::now();
                let mut conn =
                    std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
                conn.write_all(b"x")?;
                let mut byte = [0u8; 1];
                conn.read_exact(&mut byte)?;
                // The first hundred warm up caches and the scheduler.
                if round >= 100 {
                    samples.push(started.elapsed());
                }
            }
            results.push((path.to_string(), samples));
        }
        Ok(results)
    });
    let results = client
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))??;
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    drop(pod_guard);
    drop(lab);

    let direct = percentile(&results[0].1, 50.0);
    let mut table = format!(
        "Service request latency, {requests} requests, each on a new TCP connection (connect, one byte each way)\n\n\
         | path | p50 µs | p99 µs | p50 vs direct |\n| --- | --- | --- | --- |\n"
    );
    for (path, samples) in &results {
        let p50 = percentile(samples, 50.0);
        writeln!(
            table,
            "| {path} | {:.0} | {:.0} | {:.2} |",
            p50.as_secs_f64() * 1e6,
            percentile(samples, 99.0).as_secs_f64() * 1e6,
            p50.as_secs_f64() / direct.as_secs_f64().max(1e-9),
        )?;
    }
    Ok(table)
}
