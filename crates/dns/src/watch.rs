//! Feeds the [`View`](crate::view::View) from two watches (Services, EndpointSlices), in
//! every namespace.
//!
//! A re-list (the first one, or after the watch expired) replaces the kind's whole
//! content, so objects deleted while the watch was down disappear too.

use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::view::{service_info, slice_info, Key, SharedView, View};

/// Tells whether both kinds have been listed once, so the server need not answer
/// NXDOMAIN (cached by clients) for Services it has simply not seen yet.
#[derive(Clone)]
pub struct Synced(watch::Receiver<u8>);

impl Synced {
    /// Waits until both kinds are listed, or `timeout` passes; true if listed.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.0.wait_for(|kinds| *kinds >= 2))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Watches Services and EndpointSlices into `view`; the returned future runs until the
/// process ends (the watchers retry with backoff on errors).
pub fn watch(client: Client, view: SharedView) -> (impl std::future::Future<Output = ()>, Synced) {
    let (tx, rx) = watch::channel(0u8);
    let services = feed(
        watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
        view.clone(),
        tx.clone(),
        |s: &Service| service_info(s),
        |view, key, info| view.apply_service(&key.0, &key.1, info),
        |view, key| view.delete_service(&key.0, &key.1),
        |view, all| view.replace_services(all),
    );
    let slices = feed(
        watcher::watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
        view,
        tx,
        |s: &EndpointSlice| slice_info(s),
        |view, key, info| view.apply_slice(&key.0, &key.1, info),
        |view, key| view.delete_slice(&key.0, &key.1),
        |view, all| view.replace_slices(all),
    );
    let run = async move {
        tokio::join!(services, slices);
    };
    (run, Synced(rx))
}

async fn feed<K, I>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    view: SharedView,
    synced: watch::Sender<u8>,
    info: impl Fn(&K) -> Option<I>,
    apply: impl Fn(&mut View, &Key, I),
    delete: impl Fn(&mut View, &Key),
    replace: impl Fn(&mut View, Vec<(Key, I)>),
) where
    K: kube::Resource + Clone + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    let kind = K::kind(&Default::default()).to_string();
    let mut stream = std::pin::pin!(stream.default_backoff());
    let mut listed: Vec<(Key, I)> = Vec::new();
    let mut first = true;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                // The backoff wrapper retries; the view keeps its last state meanwhile.
                tracing::warn!(%kind, %error, "DNS watch failed");
                continue;
            }
        };
        let key = |obj: &K| (obj.namespace().unwrap_or_default(), obj.name_any());
        let mut view = view.write().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Apply(obj) => match info(&obj) {
                Some(i) => apply(&mut view, &key(&obj), i),
                // An object that stopped qualifying (e.g. a slice lost its label).
                None => delete(&mut view, &key(&obj)),
            },
            Event::Delete(obj) => delete(&mut view, &key(&obj)),
            Event::Init => listed.clear(),
            Event::InitApply(obj) => {
                if let Some(i) = info(&obj) {
                    listed.push((key(&obj), i));
                }
            }
            Event::InitDone => {
                let count = listed.len();
                replace(&mut view, std::mem::take(&mut listed));
                tracing::debug!(%kind, count, "DNS view re-listed");
                if first {
                    first = false;
                    synced.send_modify(|kinds| *kinds += 1);
                }
            }
        }
    }
}
