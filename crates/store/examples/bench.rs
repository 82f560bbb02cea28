//! A quick benchmark of a store backend.
//!
//! ```text
//! cargo run --release -p skiff-store --example bench                 # embedded, temp file
//! cargo run --release -p skiff-store --example bench -- /path/file   # embedded, given file
//! cargo run --release -p skiff-store --example bench -- http://127.0.0.1:2379   # etcd
//! ```
//!
//! Reports paced single-writer latency at 500 writes/s, throughput with many concurrent
//! writers, and read latency for `get` and a 100-key `range`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skiff_store::{RangeRequest, Store, StoreConfig};

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<28} n={:<6} p50={:>9.3?} p99={:>9.3?} max={:>9.3?}",
        samples.len(),
        percentile(&samples, 50),
        percentile(&samples, 99),
        samples[samples.len() - 1]
    );
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args().nth(1);
    let _dir;
    let config = match arg {
        Some(url) if url.starts_with("http") => StoreConfig::Etcd(vec![url]),
        Some(path) => StoreConfig::Embedded(path.into()),
        None => {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("bench.redb");
            _dir = dir;
            StoreConfig::Embedded(path)
        }
    };
    println!("backend: {config:?}");
    let store = skiff_store::open(&config).await?;
    let run = format!("/bench/{}", std::process::id());
    let value = Bytes::from(vec![b'x'; 2048]);

    // Paced: one write every 2 ms for 5 s.
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..2500 {
        tick.tick().await;
        let began = Instant::now();
        store
            .create(&format!("{run}/paced/{i:06}"), value.clone())
            .await?;
        samples.push(began.elapsed());
    }
    report("paced create @500/s", samples);

    for writers in [1usize, 16, 128] {
        let per_writer = 4000 / writers;
        let began = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let store: Arc<dyn Store> = store.clone();
            let run = run.clone();
            let value = value.clone();
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::with_capacity(per_writer);
                for i in 0..per_writer {
                    let t = Instant::now();
                    store
                        .create(&format!("{run}/c{writers}/{w}/{i}"), value.clone())
                        .await?;
                    samples.push(t.elapsed());
                }
                Ok::<_, skiff_store::StoreError>(samples)
            }));
        }
        let mut samples = Vec::new();
        for task in tasks {
            samples.extend(task.await??);
        }
        let elapsed = began.elapsed();
        let rate = samples.len() as f64 / elapsed.as_secs_f64();
        report(&format!("{writers} writers: {rate:.0} w/s"), samples);
    }

    let mut samples = Vec::new();
    for i in 0..2000 {
        let began = Instant::now();
        store.get(&format!("{run}/paced/{:06}", i % 2500)).await?;
        samples.push(began.elapsed());
    }
    report("get", samples);

    let mut samples = Vec::new();
    for i in 0..200 {
        let began = Instant::now();
        let start = format!("{run}/paced/{:06}", (i * 10) % 2400);
        let response = store
            .range(RangeRequest {
                start,
                end: skiff_store::prefix_end(&format!("{run}/paced/")),
                revision: None,
                limit: 100,
            })
            .await?;
        assert_eq!(response.kvs.len(), 100);
        samples.push(began.elapsed());
    }
    report("range 100 keys (newest)", samples);

    let old = store.current_revision().await? - 5000;
    let mut samples = Vec::new();
    for i in 0..200 {
        let began = Instant::now();
        let start = format!("{run}/paced/{:06}", (i * 10) % 2400);
        store
            .range(RangeRequest {
                start,
                end: skiff_store::prefix_end(&format!("{run}/paced/")),
                revision: Some(old),
                limit: 100,
            })
            .await?;
        samples.push(began.elapsed());
    }
    report("range 100 keys (old rev)", samples);
    Ok(())
}
