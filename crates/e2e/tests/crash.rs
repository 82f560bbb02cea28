//! Crash safety: a server killed with SIGKILL in the middle of a stream of writes comes
//! back with every write it acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams};
use kube::Api;
use skiff_e2e::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_write() {
    let mut server = Server::start(&[]);
    for round in 0..3 {
        let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
        let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for writer in 0..8 {
            let (api, acknowledged, stop) = (api.clone(), acknowledged.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let name = format!("r{round}-w{writer}-{i}");
                    let mut cm = ConfigMap::default();
                    cm.metadata.name = Some(name.clone());
                    match api.create(&PostParams::default(), &cm).await {
                        Ok(_) => acknowledged.lock().unwrap().push(name),
                        Err(_) => break,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(700 + 300 * round)).await;
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            let _ = w.await;
        }
        let acked = acknowledged.lock().unwrap().clone();
        assert!(
            acked.len() > 20,
            "round {round}: too few writes before the kill ({})",
            acked.len()
        );

        server.restart();
        let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
        let stored: std::collections::HashSet<String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|cm| cm.metadata.name)
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged writes lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        eprintln!(
            "round {round}: {} acknowledged writes all present after SIGKILL",
            acked.len()
        );
    }
}
