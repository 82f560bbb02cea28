//! A load generator for the DNS server: queries per second and latency percentiles of a
//! running server, for skiff-bench and for the `dns_bench` example.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

#[derive(Debug, Clone)]
pub struct BenchResult {
    pub queries: usize,
    pub failures: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

impl BenchResult {
    pub fn queries_per_second(&self) -> f64 {
        self.queries as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// One UDP query, and its answer (within `timeout`).
pub async fn query_udp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> std::io::Result<Message> {
    let socket = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await?;
    socket.connect(server).await?;
    exchange(&socket, name, qtype, timeout).await
}

async fn exchange(
    socket: &UdpSocket,
    name: &str,
    qtype: RecordType,
    timeout: Duration,
) -> std::io::Result<Message> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let name = Name::from_ascii(name).map_err(|e| invalid(e.to_string()))?;
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(name, qtype));
    let bytes = request.to_vec().map_err(|e| invalid(e.to_string()))?;
    socket.send(&bytes).await?;
    let mut buffer = vec![0u8; 65535];
    tokio::time::timeout(timeout, async {
        loop {
            let n = socket.recv(&mut buffer).await?;
            let answer = Message::from_vec(&buffer[..n]).map_err(|e| invalid(e.to_string()))?;
            if answer.metadata.id == request.metadata.id {
                return Ok(answer);
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no DNS answer"))?
}

/// Sends `total` queries for `name` from `concurrency` clients, each waiting for its
/// answer before the next query.
pub async fn measure(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    total: usize,
    concurrency: usize,
) -> std::io::Result<BenchResult> {
    let concurrency = concurrency.max(1);
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..concurrency {
        let name = name.to_string();
        let share = total / concurrency + usize::from(client < total % concurrency);
        clients.spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(server).await?;
            let mut latencies = Vec::with_capacity(share);
            let mut failures = 0;
            for _ in 0..share {
                let sent = Instant::now();
                match exchange(&socket, &name, qtype, Duration::from_secs(2)).await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(_) => failures += 1,
                }
            }
            Ok::<_, std::io::Error>((latencies, failures))
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failures = 0;
    while let Some(joined) = clients.join_next().await {
        let (mut l, f) = joined.map_err(std::io::Error::other)??;
        latencies.append(&mut l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(BenchResult {
        queries: latencies.len(),
        failures,
        elapsed,
        p50: percentile(0.50),
        p99: percentile(0.99),
    })
}

/// A server on loopback over a synthetic view of `services` ClusterIP Services (and as
/// many headless ones with three ready endpoints each), measured for a ClusterIP name, a
/// headless name and a missing name: what skiff-bench reports.
pub async fn in_process(
    services: usize,
    queries: usize,
    concurrency: usize,
) -> std::io::Result<Vec<(&'static str, BenchResult)>> {
    use crate::view::{EndpointInfo, ServiceInfo, ServiceKind, SliceInfo, View};

    let view = View::shared();
    {
        let mut view = view.write().unwrap_or_else(|p| p.into_inner());
        for i in 0..services {
            let [_, _, hi, lo] = (i as u32).to_be_bytes();
            let info = ServiceInfo {
                kind: ServiceKind::ClusterIp(vec![std::net::IpAddr::from([10, 96, hi, lo])]),
                ports: vec![],
            };
            view.apply_service("bench", &format!("svc-{i}"), info);
            let headless = ServiceInfo {
                kind: ServiceKind::Headless,
                ports: vec![],
            };
            view.apply_service("bench", &format!("headless-{i}"), headless);
            let endpoints = (1..=3)
                .map(|n| EndpointInfo {
                    addresses: vec![std::net::IpAddr::from([10, n, hi, lo])],
                    hostname: None,
                    ready: true,
                })
                .collect();
            let slice = SliceInfo {
                service: format!("headless-{i}"),
                ports: vec![],
                endpoints,
            };
            view.apply_slice("bench", &format!("headless-{i}-x"), slice);
        }
    }
    let zone = crate::Zone::new("cluster.local", 5).map_err(std::io::Error::other)?;
    let dns = crate::Dns::new(
        view,
        zone,
        crate::Forwarder::new(Vec::new(), Duration::from_secs(1)),
    );
    let udp = UdpSocket::bind("127.0.0.1:0").await?;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = udp.local_addr()?;
    let serving = tokio::spawn(dns.serve(udp, tcp));
    let last = services.saturating_sub(1);
    let mut results = Vec::new();
    for (label, name) in [
        ("clusterip", format!("svc-{last}.bench.svc.cluster.local.")),
        (
            "headless",
            format!("headless-{last}.bench.svc.cluster.local."),
        ),
        ("nxdomain", "missing.bench.svc.cluster.local.".to_string()),
    ] {
        results.push((
            label,
            measure(server, &name, RecordType::A, queries, concurrency).await?,
        ));
    }
    serving.abort();
    Ok(results)
}
