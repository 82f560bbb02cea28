//! Crash safety of the embedded store: `kill -9` mid-stream loses no acknowledged write and
//! leaves a file that opens.
//!
//! The test re-runs this very test binary as a child, selecting `crash_child` with an
//! environment variable set. The child writes keys from many concurrent tasks and prints
//! `ACK <key> <revision>` after each write returns. The parent SIGKILLs it mid-stream,
//! reopens the file and checks that every acknowledged key is there. Every round reuses
//! the same file, so recovery from several crashes in a row is covered too.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;

use bytes::Bytes;
use skiff_store::embedded::EmbeddedStore;
use skiff_store::Store;

const CHILD_ENV: &str = "SKIFF_STORE_CRASH_CHILD";
const ROUND_ENV: &str = "SKIFF_STORE_CRASH_ROUND";
const WRITERS: usize = 16;

/// Child side: a no-op unless started by the parent test below.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let round = std::env::var(ROUND_ENV).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = Arc::new(EmbeddedStore::open(std::path::Path::new(&path)).unwrap());
        let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            let stdout = stdout.clone();
            let round = round.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{round}/{w}/{i}");
                    let value = Bytes::from(format!("value of {key}").repeat(8));
                    let revision = store.create(&key, value).await.unwrap();
                    // Print only after the store acknowledged the write.
                    let mut out = stdout.lock().unwrap();
                    writeln!(out, "ACK {key} {revision}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

#[test]
fn kill9_loses_no_acknowledged_write() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(String, i64)> = Vec::new();
    // Kill after different amounts of work, including almost none.
    for (round, kill_after) in [300usize, 5, 2000, 1000, 50].into_iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < kill_after {
            let Some(line) = lines.next() else {
                panic!("child exited early: {:?}", child.wait());
            };
            if let Some(ack) = parse_ack(&line.unwrap()) {
                acked.push(ack);
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
                               // Acks printed before the kill landed are acknowledged writes too.
        for line in lines {
            if let Some(ack) = parse_ack(&line.unwrap()) {
                acked.push(ack);
            }
        }
        child.wait().unwrap();

        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let store = EmbeddedStore::open(&path).expect("the store opens after kill -9");
            let current = store.current_revision().await.unwrap();
            for (key, revision) in &acked {
                let kv = store
                    .get(key)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("acknowledged key {key} lost in round {round}"));
                assert_eq!(kv.mod_revision, *revision, "{key}");
                assert!(current >= *revision);
            }
        });
        eprintln!(
            "round {round}: {} acknowledged writes survived",
            acked.len()
        );
    }
}

fn parse_ack(line: &str) -> Option<(String, i64)> {
    let rest = line.strip_prefix("ACK ")?;
    let (key, revision) = rest.rsplit_once(' ')?;
    Some((key.to_string(), revision.parse().ok()?))
}
