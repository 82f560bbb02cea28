//! List and watch semantics through kube-rs, the client the other components use:
//! streaming lists (`sendInitialEvents`), bookmarks, `410 Gone` for history that is gone,
//! and reads at an exact revision.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams, VersionMatch, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::Api;
use skiff_e2e::{shared, Server};

fn configmap(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm
}

#[tokio::test]
async fn streaming_list_then_live_events() {
    let server = shared();
    let ns = server.namespace("stream");
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, &ns);
    for name in ["a", "b"] {
        api.create(&PostParams::default(), &configmap(name))
            .await
            .unwrap();
    }
    let config = watcher::Config::default().streaming_lists();
    let mut events = watcher(api.clone(), config).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await {
            Ok(Ok(Some(watcher::Event::Init))) => {}
            Ok(Ok(Some(watcher::Event::InitApply(cm)))) => initial.push(cm.metadata.name.unwrap()),
            Ok(Ok(Some(watcher::Event::InitDone))) => break,
            other => panic!("unexpected before InitDone: {other:?}"),
        }
    }
    initial.sort();
    assert_eq!(initial, ["a", "b"]);
    api.create(&PostParams::default(), &configmap("c"))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await {
        Ok(Ok(Some(watcher::Event::Apply(cm)))) => {
            assert_eq!(cm.metadata.name.as_deref(), Some("c"))
        }
        other => panic!("expected the live ADDED of c, got {other:?}"),
    }
}

#[tokio::test]
async fn initial_events_end_with_an_annotated_bookmark() {
    let server = shared();
    let ns = server.namespace("bookmark");
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, &ns);
    api.create(&PostParams::default(), &configmap("one"))
        .await
        .unwrap();
    let params = WatchParams::streaming_lists().timeout(5);
    // No resource version: the initial state includes our own write above.
    let mut stream = api.watch(&params, "").await.unwrap().boxed();
    let first = stream.try_next().await.unwrap().unwrap();
    assert!(
        matches!(first, WatchEvent::Added(ref cm) if cm.metadata.name.as_deref() == Some("one")),
        "{first:?}"
    );
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            );
            assert!(b.metadata.resource_version.parse::<u64>().unwrap() > 0);
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_forgotten_history_is_gone() {
    let mut server = Server::start(&[]);
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    api.create(&PostParams::default(), &configmap("before"))
        .await
        .unwrap();
    // A restarted server's watch cache starts at the current revision: older ones are gone.
    server.restart();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), "2")
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await {
        Ok(Some(WatchEvent::Error(status))) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert!(
                status.message.starts_with("too old resource version: 2 ("),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn pagination_is_consistent_until_compaction() {
    let server = Server::start(&["--etcd-compaction-interval", "1s"]);
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &configmap(&format!("p{i}")))
            .await
            .unwrap();
    }
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("a continue token");
    let snapshot_rv = first.metadata.resource_version.clone().unwrap();
    // Writes after the first page do not show up in later pages.
    api.create(&PostParams::default(), &configmap("p9-late"))
        .await
        .unwrap();
    let rest = api
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<String> = rest
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, ["p2", "p3", "p4"]);
    // An exact read at the snapshot's revision sees the same state.
    let exact = ListParams::default()
        .at(&snapshot_rv)
        .matching(VersionMatch::Exact);
    assert_eq!(api.list(&exact).await.unwrap().items.len(), 5);

    // Once the history is compacted away, the token is expired, as upstream says.
    tokio::time::sleep(Duration::from_secs(3)).await;
    api.create(&PostParams::default(), &configmap("after"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err = api
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .expect_err("a compacted continue token");
    let inconsistent = match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert!(
                status
                    .message
                    .starts_with("The provided continue parameter is too old"),
                "{}",
                status.message
            );
            status
                .metadata
                .and_then(|m| m.continue_)
                .expect("an inconsistent continue token in the Status")
        }
        other => panic!("expected 410, got {other:?}"),
    };
    // That token goes on from the same place at the current revision: the rest of the
    // list, with what was created since.
    let rest = api
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(&inconsistent),
        )
        .await
        .expect("the list continued inconsistently");
    let names: Vec<String> = rest
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, ["p2", "p3", "p4", "p9-late"]);
    assert_ne!(rest.metadata.resource_version, Some(snapshot_rv.clone()));
    let err = api.list(&exact).await.expect_err("a compacted exact read");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 410),
        "{err:?}"
    );
}

/// Metadata informers (the garbage collector's) ask for `PartialObjectMetadata`; the
/// watch answers in kind, as upstream does, rather than with whole objects.
#[tokio::test]
async fn metadata_only_watch() {
    let server = shared();
    let ns = server.namespace("metadata");
    let client = server.client().await;
    let full: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let meta: Api<kube::core::PartialObjectMeta<ConfigMap>> = Api::namespaced(client, &ns);
    let mut events = meta
        .watch(&WatchParams::default().timeout(10), "0")
        .await
        .unwrap()
        .boxed();
    full.create(&PostParams::default(), &configmap("m"))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), events.try_next()).await {
        Ok(Ok(Some(WatchEvent::Added(object)))) => {
            assert_eq!(object.metadata.name.as_deref(), Some("m"));
            let types = object.types.expect("type meta");
            assert_eq!(
                (types.api_version.as_str(), types.kind.as_str()),
                ("meta.k8s.io/v1", "PartialObjectMetadata")
            );
        }
        other => panic!("expected ADDED of m, got {other:?}"),
    }
}
