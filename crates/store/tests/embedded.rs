//! Behaviour specific to the embedded store: persistence across reopen, slow watchers,
//! compaction cleanup, and a write-latency check of group commit.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{assert_quiet, next_event};
use skiff_store::embedded::EmbeddedStore;
use skiff_store::{Event, RangeRequest, Store, StoreError};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let (r1, r2, r3, floor);
    {
        let s = EmbeddedStore::open(&path).unwrap();
        assert_eq!(s.current_revision().await.unwrap(), 1);
        r1 = s.create("/k/a", b("1")).await.unwrap();
        assert_eq!(r1, 2);
        r2 = s.update("/k/a", b("2"), r1).await.unwrap();
        s.create("/k/b", b("b")).await.unwrap();
        floor = s.current_revision().await.unwrap();
        s.compact(floor).await.unwrap();
        r3 = s.delete("/k/b", None).await.unwrap().0;
    }
    let s = EmbeddedStore::open(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), r3);
    let kv = s.get("/k/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.value),
        (r1, r2, b("2"))
    );
    assert_eq!(s.get("/k/b").await.unwrap(), None);
    // History above the floor and the floor itself persist.
    let old = s
        .range(RangeRequest {
            revision: Some(floor),
            ..RangeRequest::prefix("/k/")
        })
        .await
        .unwrap();
    assert_eq!(old.kvs.len(), 2);
    assert!(matches!(
        s.range(RangeRequest {
            revision: Some(r1),
            ..RangeRequest::prefix("/k/")
        })
        .await,
        Err(StoreError::Compacted { .. })
    ));
    let mut watch = s.watch("/k/", floor).await.unwrap();
    match next_event(&mut watch).await {
        Event::Delete { prev, revision } => {
            assert_eq!(revision, r3);
            assert_eq!(prev.value, b("b"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // New writes continue the revision sequence.
    assert_eq!(s.create("/k/c", b("c")).await.unwrap(), r3 + 1);
}

/// A watcher that does not read while thousands of writes happen neither blocks the
/// writers nor loses events: it catches up from disk when it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watcher_catches_up_without_gaps() {
    let t = common::embedded("slow");
    let s = t.store.clone();
    let start = s.current_revision().await.unwrap();
    let mut watch = s.watch("/slow/", start).await.unwrap();
    // Far more than the live buffers hold.
    const N: i64 = 5000;
    let began = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..N / 4 {
                s.create(&format!("/slow/{w}/{i}"), b("x")).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "writers were held up"
    );
    let mut expected = start;
    for _ in 0..N {
        let event = next_event(&mut watch).await;
        expected += 1;
        assert_eq!(event.revision(), expected, "gap or duplicate");
    }
    assert_quiet(&mut watch).await;
    s.create("/slow/after", b("x")).await.unwrap();
    assert_eq!(next_event(&mut watch).await.revision(), expected + 1);
}

/// After compaction and its background cleanup, reads at and after the floor are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_cleanup_keeps_live_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let s = EmbeddedStore::open(&path).unwrap();
    // Many versions of a few keys, some deleted and recreated, across cleanup chunks.
    let mut revs = std::collections::HashMap::new();
    for round in 0..700 {
        for k in 0..5 {
            let key = format!("/c/{k}");
            let value = b(&format!("{round}"));
            let rev = match revs.get(&key) {
                None => s.create(&key, value).await.unwrap(),
                Some(&r) if round % 7 == k => {
                    s.delete(&key, Some(r)).await.unwrap();
                    revs.remove(&key);
                    continue;
                }
                Some(&r) => s.update(&key, value, r).await.unwrap(),
            };
            revs.insert(key, rev);
        }
    }
    let floor = s.current_revision().await.unwrap() - 3;
    let expected_at_floor = s
        .range(RangeRequest {
            revision: Some(floor),
            ..RangeRequest::prefix("/c/")
        })
        .await
        .unwrap()
        .kvs;
    let expected_now = s.range(RangeRequest::prefix("/c/")).await.unwrap().kvs;
    s.compact(floor).await.unwrap();
    // A write after the compaction lets the writer run cleanup when it is idle again.
    s.create("/other", b("x")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(s);
    let s = EmbeddedStore::open(&path).unwrap();
    let at_floor = s
        .range(RangeRequest {
            revision: Some(floor),
            ..RangeRequest::prefix("/c/")
        })
        .await
        .unwrap()
        .kvs;
    assert_eq!(at_floor, expected_at_floor);
    assert_eq!(
        s.range(RangeRequest::prefix("/c/")).await.unwrap().kvs,
        expected_now
    );
    let mut watch = s.watch("/c/", floor).await.unwrap();
    for _ in 0..3 {
        if let Event::Put { kv, prev } = next_event(&mut watch).await {
            if kv.create_revision != kv.mod_revision {
                assert!(prev.is_some(), "prev of {kv:?} was compacted away");
            }
        }
    }
}

/// Group commit: paced single writes stay fast, and many concurrent writers share fsyncs.
/// The thresholds are loose (CI machines vary); `examples/bench.rs` reports real numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_latency_and_throughput() {
    let t = common::embedded("latency");
    let s: Arc<dyn Store> = t.store.clone();
    let mut latencies = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(2)); // 500 writes/s
    for i in 0..500 {
        tick.tick().await;
        let began = Instant::now();
        s.create(&format!("/lat/{i}"), Bytes::from(vec![b'x'; 1024]))
            .await
            .unwrap();
        latencies.push(began.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!("paced writes: p50 {:?} p99 {:?}", latencies[250], p99);
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");

    let began = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                s.create(&format!("/tput/{w}/{i}"), Bytes::from(vec![b'x'; 1024]))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let rate = 3200.0 / began.elapsed().as_secs_f64();
    eprintln!("64 concurrent writers: {rate:.0} writes/s");
    assert!(rate > 500.0, "{rate:.0} writes/s");
}
