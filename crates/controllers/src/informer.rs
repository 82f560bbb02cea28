//! Shared informers: one watch per resource type feeding a local cache (kube-runtime's
//! reflector [`Store`]) and every controller's event handlers, as upstream's
//! `SharedInformerFactory` does.
//!
//! Handlers see `(old, new)`: `old` is the cached object before the event (`None` for a
//! new object), `new` is `None` for a deletion. After a re-list (a watch that expired),
//! objects that vanished meanwhile are reported as deletions, so no handler misses one.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};

use futures::future::BoxFuture;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{store::Writer, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::metrics::ControllerManagerMetrics;
use crate::queue::WorkQueue;

/// An event handler: `(old, new)`.
pub type Handler<K> = Arc<dyn Fn(Option<&K>, Option<&K>) + Send + Sync>;

/// The watch of one resource type, its cache, and its handlers.
pub struct Informer<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Clone + Eq + Hash,
{
    api: Api<K>,
    dyntype: K::DynamicType,
    store: Store<K>,
    writer: Mutex<Option<Writer<K>>>,
    handlers: RwLock<Vec<Handler<K>>>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + Hash + Default + Send + Sync,
{
    /// An informer over every namespace.
    pub fn new(client: Client) -> Arc<Informer<K>> {
        Informer::new_with(Api::all(client), K::DynamicType::default())
    }
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + Hash + Send + Sync,
{
    /// An informer over `api` (for dynamic types, with their `dyntype`).
    pub fn new_with(api: Api<K>, dyntype: K::DynamicType) -> Arc<Informer<K>> {
        let writer = Writer::new(dyntype.clone());
        Arc::new(Informer {
            api,
            store: writer.as_reader(),
            dyntype,
            writer: Mutex::new(Some(writer)),
            handlers: RwLock::new(Vec::new()),
        })
    }

    /// The local cache. Objects in it are shared: clone before changing one.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Adds an event handler; add them all before [`Informer::start`].
    pub fn add_handler(&self, handler: impl Fn(Option<&K>, Option<&K>) + Send + Sync + 'static) {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(handler));
    }

    /// Queues the key (`namespace/name`) of every object that is added, changes or goes:
    /// the handler most controllers need for their own kind.
    pub fn enqueue_into(&self, queue: Arc<crate::queue::WorkQueue>) {
        self.add_handler(move |old, new| {
            if let Some(object) = new.or(old) {
                queue.add(crate::controller::key_of(object));
            }
        });
    }

    /// Starts the watch (once; later calls do nothing).
    pub fn start(self: &Arc<Self>) {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(writer) = writer else { return };
        let me = self.clone();
        tokio::spawn(async move { me.run(writer).await });
    }

    /// Waits until the first list has filled the cache.
    pub async fn wait_synced(&self) {
        let _ = self.store.wait_until_ready().await;
    }

    async fn run(self: Arc<Self>, mut writer: Writer<K>) {
        let kind = K::kind(&self.dyntype).to_string();
        let stream = watcher(self.api.clone(), watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut listed: HashSet<ObjectRef<K>> = HashSet::new();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    // The backoff wrapper retries; the cache keeps its last state meanwhile.
                    tracing::warn!(%kind, %error, "watch failed");
                    continue;
                }
            };
            let handlers: Vec<Handler<K>> = self
                .handlers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            match &event {
                Event::Apply(obj) => {
                    let old = self.store.get(&self.object_ref(obj));
                    writer.apply_watcher_event(&event);
                    for handler in &handlers {
                        handler(old.as_deref(), Some(obj));
                    }
                }
                Event::Delete(obj) => {
                    writer.apply_watcher_event(&event);
                    for handler in &handlers {
                        handler(Some(obj), None);
                    }
                }
                Event::Init => {
                    listed.clear();
                    writer.apply_watcher_event(&event);
                }
                Event::InitApply(obj) => {
                    listed.insert(self.object_ref(obj));
                    writer.apply_watcher_event(&event);
                }
                Event::InitDone => {
                    // The writer swaps in the listed objects now; compare with what was.
                    let before: HashMap<ObjectRef<K>, Arc<K>> = self
                        .store
                        .state()
                        .into_iter()
                        .map(|obj| (self.object_ref(&obj), obj))
                        .collect();
                    writer.apply_watcher_event(&event);
                    for (key, old) in &before {
                        if !listed.contains(key) {
                            for handler in &handlers {
                                handler(Some(old), None);
                            }
                        }
                    }
                    for key in &listed {
                        if let Some(new) = self.store.get(key) {
                            let old = before.get(key);
                            for handler in &handlers {
                                handler(old.map(|o| o.as_ref()), Some(&new));
                            }
                        }
                    }
                    listed.clear();
                }
            }
        }
    }

    fn object_ref(&self, obj: &K) -> ObjectRef<K> {
        ObjectRef::from_obj_with(obj, self.dyntype.clone())
    }
}

/// Makes a future that resolves once an informer has listed.
type SyncWaiter = Box<dyn Fn() -> BoxFuture<'static, ()> + Send>;

/// Shares one informer per typed resource between controllers.
pub struct InformerFactory {
    client: Client,
    /// The controllers' own clients, by service account.
    accounts: Mutex<HashMap<String, Client>>,
    informers: Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>,
    starters: Mutex<Vec<Box<dyn Fn() + Send>>>,
    synced: Mutex<Vec<SyncWaiter>>,
    metrics: Arc<ControllerManagerMetrics>,
}

impl InformerFactory {
    pub fn new(client: Client) -> InformerFactory {
        InformerFactory::with_metrics(client, Arc::default())
    }

    /// A factory whose controllers' queues record into `metrics`.
    pub fn with_metrics(client: Client, metrics: Arc<ControllerManagerMetrics>) -> InformerFactory {
        InformerFactory {
            client,
            accounts: Mutex::new(HashMap::new()),
            informers: Mutex::new(HashMap::new()),
            starters: Mutex::new(Vec::new()),
            synced: Mutex::new(Vec::new()),
            metrics,
        }
    }

    /// The controller manager's metrics, for controllers with families of their own.
    pub fn metrics(&self) -> Arc<ControllerManagerMetrics> {
        self.metrics.clone()
    }

    /// A controller's work queue, named as upstream names it in `workqueue_*` metrics.
    pub fn queue(&self, name: &str) -> Arc<WorkQueue> {
        WorkQueue::with_metrics(name, self.metrics.queue(name))
    }

    /// The controller manager's own client (the shared informers read with it).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The client a controller writes with: its service account's, when the controller
    /// manager uses service-account credentials, else the controller manager's own.
    pub fn client_for(&self, account: &str) -> Client {
        let accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        match accounts.get(account) {
            Some(client) => client.clone(),
            None => {
                // With accounts in use, a name missing from `credentials::ACCOUNTS` would
                // silently give a controller the controller manager's own rights.
                if !accounts.is_empty() {
                    tracing::warn!(account, "no service-account client for this controller; it acts as the controller manager");
                }
                self.client.clone()
            }
        }
    }

    /// Sets the controllers' clients, by account ([`crate::credentials`]).
    pub fn use_accounts(&self, clients: HashMap<String, Client>) {
        *self.accounts.lock().unwrap_or_else(|e| e.into_inner()) = clients;
    }

    /// The informer of `K`, made on first use.
    pub fn informer<K>(&self) -> Arc<Informer<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let key = format!("{}/{}", K::api_version(&()), K::kind(&()));
        let mut informers = self.informers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = informers.get(&key) {
            if let Ok(informer) = existing.clone().downcast::<Informer<K>>() {
                return informer;
            }
        }
        let informer = Informer::<K>::new(self.client.clone());
        informers.insert(key, informer.clone());
        let starter = informer.clone();
        self.starters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(move || starter.start()));
        let waiter = informer.clone();
        self.synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(move || {
                let waiter = waiter.clone();
                Box::pin(async move { waiter.wait_synced().await })
            }));
        informer
    }

    /// Starts every informer made so far.
    pub fn start(&self) {
        for start in self
            .starters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            start();
        }
    }

    /// Waits until every informer has listed once. Workers must not start before: a
    /// ReplicaSet seen before its pods would create them all again.
    pub async fn wait_synced(&self) {
        let waits: Vec<BoxFuture<'static, ()>> = self
            .synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|wait| wait())
            .collect();
        futures::future::join_all(waits).await;
    }
}
