//! Controllers that keep one named object in every active namespace, re-made when
//! deleted and repaired when changed: the `default` ServiceAccount (upstream's
//! `serviceaccount-controller`) and the `kube-root-ca.crt` ConfigMap (upstream's
//! `root-ca-cert-publisher`).

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{is_status, Result};
use crate::informer::InformerFactory;
use crate::queue::WorkQueue;

/// The ConfigMap every namespace gets, with the CA that signs the API server's certificate.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// Upstream's description on that ConfigMap.
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Builds the object a namespace should have.
type Desired<K> = Box<dyn Fn(&str) -> K + Send + Sync>;
/// Given the existing object and the desired one, the object to write back if they
/// differ in what the controller owns.
type Repair<K> = Box<dyn Fn(&K, &K) -> Option<K> + Send + Sync>;

/// What a per-namespace controller can keep: a namespaced API type.
pub trait NamespacedObject:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
}

impl<K> NamespacedObject for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static
{
}

pub struct PerNamespaceController<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    client: Client,
    object_name: String,
    namespaces: Store<Namespace>,
    objects: Store<K>,
    queue: Arc<WorkQueue>,
    desired: Desired<K>,
    repair: Repair<K>,
}

impl<K> PerNamespaceController<K>
where
    K: NamespacedObject,
{
    fn new(
        factory: &InformerFactory,
        account: &str,
        queue_name: &str,
        object_name: &str,
        desired: Desired<K>,
        repair: Repair<K>,
    ) -> Arc<Self> {
        let namespace_informer = factory.informer::<Namespace>();
        let object_informer = factory.informer::<K>();
        let controller = Arc::new(PerNamespaceController {
            client: factory.client_for(account),
            object_name: object_name.to_string(),
            namespaces: namespace_informer.store(),
            objects: object_informer.store(),
            queue: factory.queue(queue_name),
            desired,
            repair,
        });
        let queue = controller.queue.clone();
        namespace_informer.add_handler(move |_, new| {
            if let Some(ns) = new.filter(|ns| ns.metadata.deletion_timestamp.is_none()) {
                queue.add(ns.metadata.name.clone().unwrap_or_default());
            }
        });
        let queue = controller.queue.clone();
        let watched = object_name.to_string();
        object_informer.add_handler(move |old, new| {
            // A change or deletion of the object: look at its namespace again.
            let Some(object) = new.or(old) else { return };
            if object.meta().name.as_deref() == Some(watched.as_str()) {
                queue.add(object.meta().namespace.clone().unwrap_or_default());
            }
        });
        controller
    }

    async fn sync(&self, namespace: &str) -> Result<()> {
        let active = self
            .namespaces
            .get(&ObjectRef::new(namespace))
            .is_some_and(|ns| ns.metadata.deletion_timestamp.is_none());
        if !active {
            return Ok(());
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let desired = (self.desired)(namespace);
        let existing = self
            .objects
            .get(&ObjectRef::new(&self.object_name).within(namespace));
        let written = match existing {
            None => api
                .create(&PostParams::default(), &desired)
                .await
                .map(|_| ()),
            Some(existing) => match (self.repair)(&existing, &desired) {
                Some(repaired) => api
                    .replace(&self.object_name, &PostParams::default(), &repaired)
                    .await
                    .map(|_| ()),
                None => Ok(()),
            },
        };
        match written {
            Ok(()) => Ok(()),
            // The cache lags (409: it exists, or changed), or the namespace began
            // terminating (403): the next event brings the key back if there is work.
            Err(e) if is_status(&e, 409) || is_status(&e, 403) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl<K> crate::controller::Reconcile for PerNamespaceController<K>
where
    K: NamespacedObject,
{
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, namespace: &str) -> Result<Option<std::time::Duration>> {
        self.sync(namespace).await.map(|()| None)
    }
}

/// The `default` ServiceAccount in every namespace.
pub fn service_accounts(factory: &InformerFactory) -> Arc<PerNamespaceController<ServiceAccount>> {
    PerNamespaceController::new(
        factory,
        "service-account-controller",
        "serviceaccount",
        "default",
        Box::new(|ns| {
            let mut account = ServiceAccount::default();
            account.metadata.name = Some("default".into());
            account.metadata.namespace = Some(ns.into());
            account
        }),
        // Any `default` ServiceAccount will do; users may change it as they like.
        Box::new(|_, _| None),
    )
}

/// The `kube-root-ca.crt` ConfigMap, holding `ca_pem`, in every namespace.
pub fn root_ca_config_maps(
    factory: &InformerFactory,
    ca_pem: String,
) -> Arc<PerNamespaceController<ConfigMap>> {
    PerNamespaceController::new(
        factory,
        "root-ca-cert-publisher",
        "root_ca_cert_publisher",
        ROOT_CA_CONFIG_MAP,
        Box::new(move |ns| root_ca_config_map(ns, &ca_pem)),
        Box::new(|existing, desired| {
            let description = |c: &ConfigMap| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("kubernetes.io/description"))
                    .cloned()
            };
            if existing.data == desired.data && description(existing) == description(desired) {
                return None;
            }
            let mut repaired = existing.clone();
            repaired.data = desired.data.clone();
            repaired
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(
                    "kubernetes.io/description".into(),
                    ROOT_CA_DESCRIPTION.into(),
                );
            Some(repaired)
        }),
    )
}

fn root_ca_config_map(namespace: &str, ca_pem: &str) -> ConfigMap {
    let mut map = ConfigMap::default();
    map.metadata.name = Some(ROOT_CA_CONFIG_MAP.into());
    map.metadata.namespace = Some(namespace.into());
    map.metadata.annotations = Some(
        [(
            "kubernetes.io/description".to_string(),
            ROOT_CA_DESCRIPTION.to_string(),
        )]
        .into(),
    );
    map.data = Some([("ca.crt".to_string(), ca_pem.to_string())].into());
    map
}
