//! One behavioural suite, run against both backends: every case below becomes
//! `embedded::<case>` and `etcd::<case>`.
//!
//! The etcd server is shared by all cases of this binary and its revision is global, so
//! cases only assert that revisions increase (never by how much), keep their keys under
//! their own prefix, and the cases that compact hold an exclusive lock (see `common`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use common::{assert_quiet, next_event, next_item, TestStore};
use skiff_store::{prefix_end, Event, KeyValue, RangeRequest, Store, StoreError};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn values(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                String::from_utf8(kv.value.to_vec()).unwrap(),
            )
        })
        .collect()
}

fn at(prefix: &str, revision: i64) -> RangeRequest {
    RangeRequest {
        revision: Some(revision),
        ..RangeRequest::prefix(prefix)
    }
}

async fn revision_increases(t: TestStore) {
    let (s, p) = (&t.store, &t.prefix);
    let key = format!("{p}/a");
    let r0 = s.current_revision().await.unwrap();
    assert!(r0 >= 1);
    let r1 = s.create(&key, b("1")).await.unwrap();
    assert!(r1 > r0);
    let kv = s.get(&key).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r1));
    assert_eq!(kv.value, b("1"));
    let r2 = s.update(&key, b("2"), r1).await.unwrap();
    assert!(r2 > r1);
    let kv = s.get(&key).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r1, r2));
    let (r3, deleted) = s.delete(&key, None).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(deleted.value, b("2"));
    assert_eq!(deleted.mod_revision, r2);
    assert!(s.current_revision().await.unwrap() >= r3);
    assert_eq!(s.get(&key).await.unwrap(), None);
    // A key created again after its deletion starts a new life.
    let r4 = s.create(&key, b("again")).await.unwrap();
    let kv = s.get(&key).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r4, r4));
}

async fn create_twice_already_exists(t: TestStore) {
    let key = format!("{}/a", t.prefix);
    t.store.create(&key, b("1")).await.unwrap();
    match t.store.create(&key, b("2")).await {
        Err(StoreError::AlreadyExists(k)) => assert_eq!(k, key),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(t.store.get(&key).await.unwrap().unwrap().value, b("1"));
}

async fn update_conflict_returns_current(t: TestStore) {
    let (s, p) = (&t.store, &t.prefix);
    let key = format!("{p}/a");
    let r1 = s.create(&key, b("1")).await.unwrap();
    let r2 = s.update(&key, b("2"), r1).await.unwrap();
    match s.update(&key, b("3"), r1).await {
        Err(StoreError::Conflict {
            key: k,
            expected,
            current: Some(current),
        }) => {
            assert_eq!(k, key);
            assert_eq!(expected, r1);
            assert_eq!(current.mod_revision, r2);
            assert_eq!(current.create_revision, r1);
            assert_eq!(current.value, b("2"));
        }
        other => panic!("expected Conflict with current, got {other:?}"),
    }
    // A missing key conflicts with nothing; expected 0 must not create it.
    let missing = format!("{p}/missing");
    for expected in [0, r1] {
        match s.update(&missing, b("x"), expected).await {
            Err(StoreError::Conflict { current: None, .. }) => {}
            other => panic!("expected Conflict without current, got {other:?}"),
        }
    }
    assert_eq!(s.get(&missing).await.unwrap(), None);
}

async fn delete_conflict_and_not_found(t: TestStore) {
    let (s, p) = (&t.store, &t.prefix);
    let key = format!("{p}/a");
    let r1 = s.create(&key, b("1")).await.unwrap();
    let r2 = s.update(&key, b("2"), r1).await.unwrap();
    match s.delete(&key, Some(r1)).await {
        Err(StoreError::Conflict {
            current: Some(current),
            expected,
            ..
        }) => {
            assert_eq!(expected, r1);
            assert_eq!(current.mod_revision, r2);
            assert_eq!(current.value, b("2"));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    let (r3, prev) = s.delete(&key, Some(r2)).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(prev.value, b("2"));
    assert_eq!((prev.create_revision, prev.mod_revision), (r1, r2));
    assert!(matches!(
        s.delete(&key, Some(r2)).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete(&key, None).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn range_limit_and_continuation(t: TestStore) {
    let (s, p) = (&t.store, &t.prefix);
    for i in 0..10 {
        s.create(&format!("{p}/k{i:02}"), b(&i.to_string()))
            .await
            .unwrap();
    }
    let all = s
        .range(RangeRequest::prefix(&format!("{p}/")))
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), 10);
    assert!(!all.more);
    let first = s
        .range(RangeRequest {
            limit: 3,
            ..RangeRequest::prefix(&format!("{p}/"))
        })
        .await
        .unwrap();
    assert_eq!(first.kvs.len(), 3);
    assert!(first.more);
    // Changes after the first page must not show up in the continuation.
    s.create(&format!("{p}/k05a"), b("new")).await.unwrap();
    s.delete(&format!("{p}/k08"), None).await.unwrap();
    let mut seen = first.kvs.clone();
    let mut page = first;
    while page.more {
        let last = &page.kvs.last().unwrap().key;
        page = s
            .range(RangeRequest {
                start: format!("{last}\0"),
                end: prefix_end(&format!("{p}/")),
                revision: Some(page.revision),
                limit: 3,
            })
            .await
            .unwrap();
        seen.extend(page.kvs.iter().cloned());
    }
    assert_eq!(values(&seen), values(&all.kvs));
    // Exactly one page holding everything left: `more` is false.
    let exact = s
        .range(RangeRequest {
            limit: 10,
            ..at(&format!("{p}/"), all.revision)
        })
        .await
        .unwrap();
    assert_eq!(exact.kvs.len(), 10);
    assert!(!exact.more);
    // The newest state has the change.
    let now = s
        .range(RangeRequest::prefix(&format!("{p}/")))
        .await
        .unwrap();
    let keys: Vec<_> = now.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert!(keys.contains(&format!("{p}/k05a")));
    assert!(!keys.contains(&format!("{p}/k08")));
    assert_eq!(keys.len(), 10);
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

async fn range_at_old_revision(t: TestStore) {
    let (s, p) = (&t.store, &t.prefix);
    let (a, bk, c) = (format!("{p}/a"), format!("{p}/b"), format!("{p}/c"));
    let ra = s.create(&a, b("a1")).await.unwrap();
    let rb = s.create(&bk, b("b1")).await.unwrap();
    let ra2 = s.update(&a, b("a2"), ra).await.unwrap();
    s.delete(&bk, None).await.unwrap();
    s.create(&c, b("c1")).await.unwrap();
    s.update(&a, b("a3"), ra2).await.unwrap();

    let old = s.range(at(&format!("{p}/"), rb)).await.unwrap();
    assert_eq!(old.revision, rb);
    assert_eq!(
        values(&old.kvs),
        vec![(a.clone(), "a1".into()), (bk.clone(), "b1".into())]
    );
    assert_eq!(
        (old.kvs[0].create_revision, old.kvs[0].mod_revision),
        (ra, ra)
    );
    let mid = s.range(at(&format!("{p}/"), ra2)).await.unwrap();
    assert_eq!(
        values(&mid.kvs),
        vec![(a.clone(), "a2".into()), (bk.clone(), "b1".into())]
    );
    let before = s.range(at(&format!("{p}/"), ra - 1)).await.unwrap();
    assert!(before.kvs.is_empty());
    // A single key (empty end) at an old revision.
    let single = s
        .range(RangeRequest {
            start: a.clone(),
            end: String::new(),
            revision: Some(ra2),
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(values(&single.kvs), vec![(a.clone(), "a2".into())]);
    // Limit at an old revision.
    let limited = s
        .range(RangeRequest {
            limit: 1,
            ..at(&format!("{p}/"), rb)
        })
        .await
        .unwrap();
    assert_eq!(values(&limited.kvs), vec![(a.clone(), "a1".into())]);
    assert!(limited.more);
    let now = s
        .range(RangeRequest::prefix(&format!("{p}/")))
        .await
        .unwrap();
    assert_eq!(
        values(&now.kvs),
        vec![(a.clone(), "a3".into()), (c.clone(), "c1".into())]
    );
}

async fn future_revision(t: TestStore) {
    let current = t.store.current_revision().await.unwrap();
    match t
        .store
        .range(at(&format!("{}/", t.prefix), current + 1000))
        .await
    {
        Err(StoreError::FutureRevision(r)) => assert_eq!(r, current + 1000),
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

async fn compaction(t: TestStore) {
    let (s, p) = (&t.store, &t.prefix);
    let key = format!("{p}/a");
    let r1 = s.create(&key, b("v1")).await.unwrap();
    let r2 = s.update(&key, b("v2"), r1).await.unwrap();
    let other = format!("{p}/gone");
    s.create(&other, b("x")).await.unwrap();
    s.delete(&other, None).await.unwrap();
    let r3 = s.update(&key, b("v3"), r2).await.unwrap();
    let floor = r3 - 1; // after the delete, before v3
    s.compact(floor).await.unwrap();

    match s.range(at(&format!("{p}/"), r1)).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, r1),
        other => panic!("expected Compacted, got {other:?}"),
    }
    let at_floor = s.range(at(&format!("{p}/"), floor)).await.unwrap();
    assert_eq!(values(&at_floor.kvs), vec![(key.clone(), "v2".into())]);
    let now = s
        .range(RangeRequest::prefix(&format!("{p}/")))
        .await
        .unwrap();
    assert_eq!(values(&now.kvs), vec![(key.clone(), "v3".into())]);

    match s.watch(&format!("{p}/"), r1).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => panic!("expected Compacted, got {e:?}"),
        Ok(mut watch) => match next_item(&mut watch).await {
            Some(Err(StoreError::Compacted { .. })) => {}
            other => panic!("expected Compacted from the watch, got {other:?}"),
        },
    }
    // Watching from the floor still has every later event, with its previous value.
    let mut watch = s.watch(&format!("{p}/"), floor).await.unwrap();
    match next_event(&mut watch).await {
        Event::Put { kv, prev } => {
            assert_eq!((kv.mod_revision, kv.value), (r3, b("v3")));
            assert_eq!(prev.unwrap().value, b("v2"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        s.compact(floor).await,
        Err(StoreError::Compacted { .. })
    ));
    let future = s.current_revision().await.unwrap() + 1000;
    assert!(matches!(
        s.compact(future).await,
        Err(StoreError::FutureRevision(_))
    ));
    // Writes go on as before.
    s.update(&key, b("v4"), r3).await.unwrap();
    assert_eq!(s.get(&key).await.unwrap().unwrap().value, b("v4"));
}

async fn watch_replay_then_live(t: TestStore) {
    let (s, p) = (&t.store, &t.prefix);
    let (a, bk, c) = (format!("{p}/a"), format!("{p}/b"), format!("{p}/c"));
    let start = s.current_revision().await.unwrap();
    let ra = s.create(&a, b("a1")).await.unwrap();
    let ra2 = s.update(&a, b("a2"), ra).await.unwrap();
    let rb = s.create(&bk, b("b1")).await.unwrap();
    let (rd, _) = s.delete(&a, Some(ra2)).await.unwrap();

    let mut watch = s.watch(&format!("{p}/"), start).await.unwrap();
    match next_event(&mut watch).await {
        Event::Put { kv, prev: None } => assert_eq!((kv.key, kv.mod_revision), (a.clone(), ra)),
        other => panic!("unexpected {other:?}"),
    }
    match next_event(&mut watch).await {
        Event::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!(
                (kv.key.as_str(), kv.mod_revision, kv.create_revision),
                (a.as_str(), ra2, ra)
            );
            assert_eq!((prev.value, prev.mod_revision), (b("a1"), ra));
        }
        other => panic!("unexpected {other:?}"),
    }
    match next_event(&mut watch).await {
        Event::Put { kv, prev: None } => assert_eq!((kv.key, kv.mod_revision), (bk.clone(), rb)),
        other => panic!("unexpected {other:?}"),
    }
    match next_event(&mut watch).await {
        Event::Delete { prev, revision } => {
            assert_eq!(revision, rd);
            assert_eq!(
                (prev.key.as_str(), prev.value, prev.mod_revision),
                (a.as_str(), b("a2"), ra2)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // Now live.
    let rc = s.create(&c, b("c1")).await.unwrap();
    let rb2 = s.update(&bk, b("b2"), rb).await.unwrap();
    let e1 = next_event(&mut watch).await;
    assert_eq!((e1.key(), e1.revision()), (c.as_str(), rc));
    match next_event(&mut watch).await {
        Event::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!((kv.mod_revision, kv.value), (rb2, b("b2")));
            assert_eq!(prev.value, b("b1"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_quiet(&mut watch).await;

    // A watch from the middle sees only what came after.
    let mut middle = s.watch(&format!("{p}/"), rb).await.unwrap();
    let revisions: Vec<i64> = [
        next_event(&mut middle).await,
        next_event(&mut middle).await,
        next_event(&mut middle).await,
    ]
    .iter()
    .map(Event::revision)
    .collect();
    assert_eq!(revisions, vec![rd, rc, rb2]);
    assert_quiet(&mut middle).await;

    // A watch from now sees only new writes.
    let now = s.current_revision().await.unwrap();
    let mut fresh = s.watch(&format!("{p}/"), now).await.unwrap();
    let rc2 = s.update(&c, b("c2"), rc).await.unwrap();
    assert_eq!(next_event(&mut fresh).await.revision(), rc2);
}

async fn watch_many_concurrent_writers(t: TestStore) {
    const WRITERS: usize = 8;
    const KEYS: usize = 25;
    let p = t.prefix.clone();
    let s: Arc<dyn Store> = t.store.clone();
    let start = s.current_revision().await.unwrap();
    let mut watch = s.watch(&format!("{p}/"), start).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..KEYS {
                let key = format!("{p}/w{w}/k{k}");
                let r = s.create(&key, b("1")).await.unwrap();
                acked.push((key.clone(), r));
                let r2 = s.update(&key, b("2"), r).await.unwrap();
                acked.push((key, r2));
            }
            acked
        }));
    }
    let mut expected = BTreeMap::new();
    for task in tasks {
        for (key, r) in task.await.unwrap() {
            expected.insert(r, key);
        }
    }
    assert_eq!(expected.len(), WRITERS * KEYS * 2);
    let mut got = BTreeMap::new();
    let mut last = start;
    for _ in 0..expected.len() {
        let event = next_event(&mut watch).await;
        assert!(event.revision() > last, "events out of order");
        last = event.revision();
        got.insert(event.revision(), event.key().to_string());
    }
    assert_eq!(got, expected);
    assert_quiet(&mut watch).await;
}

async fn prefix_isolation(t: TestStore) {
    let (s, p) = (&t.store, &t.prefix);
    let pods = format!("{p}/registry/pods/");
    let start = s.current_revision().await.unwrap();
    let mut watch = s.watch(&pods, start).await.unwrap();
    s.create(&format!("{p}/registry/podsx/b"), b("x"))
        .await
        .unwrap();
    s.create(&format!("{p}/registry/pod"), b("x"))
        .await
        .unwrap();
    let ra = s
        .create(&format!("{p}/registry/pods/default/a"), b("a"))
        .await
        .unwrap();
    s.create(&format!("{p}/registry/pods0"), b("x"))
        .await
        .unwrap();
    let listed = s.range(RangeRequest::prefix(&pods)).await.unwrap();
    assert_eq!(
        values(&listed.kvs),
        vec![(format!("{p}/registry/pods/default/a"), "a".into())]
    );
    let event = next_event(&mut watch).await;
    assert_eq!(event.revision(), ra);
    assert_quiet(&mut watch).await;
    let keys: HashSet<_> = s
        .range(RangeRequest::prefix(&format!("{p}/registry/")))
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys.len(), 4);
}

/// A small deterministic generator, so a failure reproduces without extra crates.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

type Snapshots = [(i64, BTreeMap<String, KeyValue>)];

fn model_at(snapshots: &Snapshots, r: i64) -> Vec<KeyValue> {
    let i = snapshots.partition_point(|(rev, _)| *rev <= r) - 1;
    snapshots[i].1.values().cloned().collect()
}

/// Reads at every 7th revision in `from..=end` (and `end`), whole and paginated.
async fn check_reads(s: &dyn Store, dir: &str, from: i64, end: i64, snapshots: &Snapshots) {
    for r in (from..=end).step_by(7).chain([end]) {
        let want = model_at(snapshots, r);
        let got = s.range(at(dir, r)).await.unwrap();
        assert_eq!(got.kvs, want, "range at {r}");
        let mut paged = Vec::new();
        let mut request = RangeRequest {
            limit: 2,
            ..at(dir, r)
        };
        loop {
            let page = s.range(request.clone()).await.unwrap();
            paged.extend(page.kvs.iter().cloned());
            if !page.more {
                break;
            }
            request.start = format!("{}\0", page.kvs.last().unwrap().key);
        }
        assert_eq!(paged, want, "paged range at {r}");
    }
}

/// Random creates, updates and deletes (some with stale revisions) against a model; then
/// every revision's snapshot, paginated reads, the watch replay and post-compaction reads
/// must agree with the model.
async fn random_history_matches_model(t: TestStore) {
    let (s, p) = (&t.store, &t.prefix);
    let dir = format!("{p}/");
    let mut rng = Lcg(0x5eed);
    let start = s.current_revision().await.unwrap();
    let mut live: BTreeMap<String, KeyValue> = BTreeMap::new();
    // State after each successful write, by its revision.
    let mut snapshots: Vec<(i64, BTreeMap<String, KeyValue>)> = vec![(start, BTreeMap::new())];
    // (revision, key, value after or None for delete, prev value)
    let mut log: Vec<(i64, String, Option<Bytes>, Option<Bytes>)> = Vec::new();
    for step in 0..300 {
        let key = format!("{dir}k{}", rng.below(12));
        let value = b(&format!("v{step}"));
        let current = live.get(&key).cloned();
        let stale = rng.below(5) == 0;
        let result = match (rng.below(3), &current) {
            (0, _) => s.create(&key, value.clone()).await.map(|r| (r, false)),
            (1, Some(kv)) => {
                let expected = if stale {
                    kv.mod_revision - 1
                } else {
                    kv.mod_revision
                };
                s.update(&key, value.clone(), expected)
                    .await
                    .map(|r| (r, false))
            }
            (1, None) => s.update(&key, value.clone(), 7).await.map(|r| (r, false)),
            (_, kv) => {
                let expected = match kv {
                    Some(kv) if stale => Some(kv.mod_revision - 1),
                    Some(kv) if rng.below(2) == 0 => Some(kv.mod_revision),
                    _ => None,
                };
                s.delete(&key, expected).await.map(|(r, _)| (r, true))
            }
        };
        match result {
            Ok((revision, deleted)) => {
                assert!(revision > snapshots.last().unwrap().0);
                let prev = live.get(&key).map(|kv| kv.value.clone());
                if deleted {
                    live.remove(&key);
                    log.push((revision, key, None, prev));
                } else {
                    let create_revision = current.map_or(revision, |kv| kv.create_revision);
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: revision,
                    };
                    live.insert(key.clone(), kv);
                    log.push((revision, key, Some(value), prev));
                }
                snapshots.push((revision, live.clone()));
            }
            Err(StoreError::AlreadyExists(_)) => assert!(current.is_some()),
            Err(StoreError::NotFound(_)) => assert!(current.is_none()),
            Err(StoreError::Conflict { current: now, .. }) => assert_eq!(now, current),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(log.len() > 100, "too few successful writes: {}", log.len());
    let end = snapshots.last().unwrap().0;
    let model_at = |r: i64| model_at(&snapshots, r);
    check_reads(s.as_ref(), &dir, start, end, &snapshots).await;
    assert_eq!(
        s.range(RangeRequest::prefix(&dir)).await.unwrap().kvs,
        model_at(end)
    );

    // The watch replays exactly the model's log.
    let mut watch = s.watch(&dir, start).await.unwrap();
    for (revision, key, value, prev) in &log {
        let event = next_event(&mut watch).await;
        assert_eq!((event.revision(), event.key()), (*revision, key.as_str()));
        match (event, value) {
            (Event::Put { kv, prev: got_prev }, Some(value)) => {
                assert_eq!(&kv.value, value);
                assert_eq!(got_prev.map(|kv| kv.value), *prev);
            }
            (Event::Delete { prev: got_prev, .. }, None) => {
                assert_eq!(Some(got_prev.value), *prev);
            }
            (event, _) => panic!("unexpected {event:?} at {revision}"),
        }
    }
    assert_quiet(&mut watch).await;

    // Compact in the middle; everything from the floor on reads the same.
    let floor = snapshots[snapshots.len() / 2].0;
    s.compact(floor).await.unwrap();
    // Give a lazy backend time to drop superseded versions, then read again.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    check_reads(s.as_ref(), &dir, floor, end, &snapshots).await;
    let mut watch = s.watch(&dir, floor).await.unwrap();
    for (revision, _, _, prev) in log.iter().filter(|(r, ..)| *r > floor) {
        let event = next_event(&mut watch).await;
        assert_eq!(event.revision(), *revision);
        let got_prev = match event {
            Event::Put { prev, .. } => prev.map(|kv| kv.value),
            Event::Delete { prev, .. } => Some(prev.value),
        };
        assert_eq!(got_prev, *prev, "prev at {revision}");
    }
}

macro_rules! conformance {
    ($($case:ident $(, exclusive = $exclusive:literal)?;)*) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::common::embedded(stringify!($case))).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    #[allow(unused_mut, unused_assignments)]
                    let mut exclusive = false;
                    $(exclusive = $exclusive;)?
                    super::$case(super::common::etcd(stringify!($case), exclusive).await).await;
                }
            )*
        }
    };
}

conformance! {
    revision_increases;
    create_twice_already_exists;
    update_conflict_returns_current;
    delete_conflict_and_not_found;
    range_limit_and_continuation;
    range_at_old_revision;
    future_revision;
    compaction, exclusive = true;
    watch_replay_then_live;
    watch_many_concurrent_writers;
    prefix_isolation;
    random_history_matches_model, exclusive = true;
}
