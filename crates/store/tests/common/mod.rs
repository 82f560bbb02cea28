//! Test harness shared by the integration tests: fresh stores of either backend.
//!
//! The etcd backend is tested against a real etcd: one server per test binary, started on
//! first use on free loopback ports, in a temporary directory. It runs under a small shell
//! wrapper that reads its stdin, which is a pipe from this process: when the test binary
//! exits (however it exits), the pipe closes and the wrapper kills etcd and removes its
//! data, so no server outlives its tests.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use skiff_store::embedded::EmbeddedStore;
use skiff_store::etcd::EtcdStore;
use skiff_store::{Event, Store, StoreError, WatchStream};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A store for one test plus whatever must stay alive as long as it.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    /// A key prefix no other test uses.
    pub prefix: String,
    _dir: Option<tempfile::TempDir>,
    _guard: Guard,
}

enum Guard {
    None,
    Shared(RwLockReadGuard<'static, ()>),
    Exclusive(RwLockWriteGuard<'static, ()>),
}

/// Compaction is global in etcd: a test that compacts must not run while others read old
/// revisions of the shared server. Ordinary tests share this lock; compacting ones own it.
static COMPACTION: RwLock<()> = RwLock::const_new(());

pub fn embedded(name: &str) -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.redb")).unwrap();
    TestStore {
        store: Arc::new(store),
        prefix: format!("/test/{name}"),
        _dir: Some(dir),
        _guard: Guard::None,
    }
}

pub async fn etcd(name: &str, exclusive: bool) -> TestStore {
    let guard = if exclusive {
        Guard::Exclusive(COMPACTION.write().await)
    } else {
        Guard::Shared(COMPACTION.read().await)
    };
    let endpoint = etcd_server().endpoint.clone();
    // A client per test: its connection lives on this test's runtime.
    let store = EtcdStore::connect(&[endpoint]).await.unwrap();
    TestStore {
        store: Arc::new(store),
        prefix: format!("/test/{name}"),
        _dir: None,
        _guard: guard,
    }
}

pub struct EtcdServer {
    pub endpoint: String,
    _child: Mutex<Child>,
}

pub fn etcd_server() -> &'static EtcdServer {
    static SERVER: OnceLock<EtcdServer> = OnceLock::new();
    SERVER.get_or_init(start_etcd)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_etcd() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("etcd");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the etcd conformance tests need a real etcd server, but no `etcd` binary is on PATH; \
         install it (Debian/Ubuntu: apt-get install etcd-server) and run the tests again"
    );
}

fn start_etcd() -> EtcdServer {
    let binary = find_etcd();
    let dir = tempfile::Builder::new()
        .prefix("skiff-store-etcd-")
        .tempdir()
        .unwrap()
        .keep();
    let client_port = free_port();
    let peer_port = free_port();
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    // `read` returns when our end of stdin closes, i.e. when this process is gone.
    let script = r#"dir="$1"; shift; "$@" & pid=$!; read _ignored; kill -9 $pid; wait $pid 2>/dev/null; rm -rf "$dir""#;
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&dir)
        .arg(&binary)
        .arg("--name=skiff-test")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=skiff-test={peer_url}"))
        .stdin(Stdio::piped())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !etcd_healthy(client_port) {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
            panic!("etcd did not become healthy within 30s; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    EtcdServer {
        endpoint: client_url,
        _child: Mutex::new(child),
    }
}

fn etcd_healthy(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    if conn
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    response.contains("\"health\":\"true\"") || response.contains("\"health\": \"true\"")
}

/// The next event of a watch, failing the test if none arrives in time.
pub async fn next_event(watch: &mut WatchStream) -> Event {
    match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 10s"),
    }
}

/// The next item of a watch (event or error), failing the test if none arrives in time.
pub async fn next_item(watch: &mut WatchStream) -> Option<Result<Event, StoreError>> {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("no watch item within 10s")
}

/// Asserts that no event arrives for a short while.
pub async fn assert_quiet(watch: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), watch.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}
