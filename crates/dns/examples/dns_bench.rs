//! Queries per second and latency of the DNS server, in process over loopback UDP:
//! `cargo run --release -p skiff-dns --example dns_bench -- [services] [queries] [clients]`.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let services = args.next().and_then(Result::ok).unwrap_or(1000);
    let queries = args.next().and_then(Result::ok).unwrap_or(20_000);
    let clients = args.next().and_then(Result::ok).unwrap_or(8);
    println!("{services} services (+{services} headless), {queries} queries, {clients} clients");
    for (name, result) in skiff_dns::bench::in_process(services, queries, clients).await? {
        println!(
            "{name:>10}: {:>8.0} q/s  p50 {:>7.3} ms  p99 {:>7.3} ms  failures {}",
            result.queries_per_second(),
            result.p50.as_secs_f64() * 1000.0,
            result.p99.as_secs_f64() * 1000.0,
            result.failures,
        );
    }
    Ok(())
}
