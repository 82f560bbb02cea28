//! The resource quota controller (upstream's `pkg/controller/resourcequota`): recounts
//! each ResourceQuota's `status.used` from the objects of its namespace and copies
//! `spec.hard` to `status.hard`, which is what lets the admission plugin start charging.
//! Recounting is also what gives back what deleted objects held: pods trigger it at
//! once, other kinds within [`RESYNC`]. Admission's charges do not trigger a recount.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ListParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::controller::{key_of, split_key, Reconcile};
use crate::discovery::{served_resources, ServedResource};
use crate::error::{is_status, Error, Result};
use crate::informer::InformerFactory;
use crate::queue::WorkQueue;

/// How often every quota is recounted (upstream's resync is 5 minutes; replenishment
/// informers make it prompt there, a short resync here).
const RESYNC: Duration = Duration::from_secs(10);

pub struct ResourceQuotaController {
    client: Client,
    quotas: Store<ResourceQuota>,
    queue: Arc<WorkQueue>,
    /// Served resources by `(group, plural)`, refreshed when a quota names an unknown one
    /// (at most every [`RESYNC`], so a quota naming an unserved resource does not run
    /// discovery on each recount).
    served: Mutex<Served>,
}

impl ResourceQuotaController {
    pub fn new(factory: &InformerFactory) -> Arc<ResourceQuotaController> {
        let quota_informer = factory.informer::<ResourceQuota>();
        let pod_informer = factory.informer::<Pod>();
        let controller = Arc::new(ResourceQuotaController {
            client: factory.client_for("resourcequota-controller"),
            quotas: quota_informer.store(),
            queue: factory.queue("resourcequota_primary"),
            served: Mutex::new(Served::default()),
        });
        // As upstream, a quota is recounted when it is new or its `spec.hard` changed, not
        // when admission charges it: a recount racing a create it has charged but not yet
        // stored would give the charge back too early.
        let queue = controller.queue.clone();
        quota_informer.add_handler(move |old, new| {
            let hard = |q: &ResourceQuota| q.spec.as_ref().and_then(|s| s.hard.clone());
            let status_hard = |q: &ResourceQuota| q.status.as_ref().and_then(|s| s.hard.clone());
            let changed = match (old, new) {
                (Some(old), Some(new)) => hard(old) != hard(new) || status_hard(new) != hard(new),
                _ => true,
            };
            if let Some(quota) = new.or(old).filter(|_| changed) {
                queue.add(key_of(quota));
            }
        });
        // A pod that finishes or goes gives its quota back at once.
        let me = Arc::downgrade(&controller);
        pod_informer.add_handler(move |old, new| {
            let Some(me) = me.upgrade() else { return };
            let finished = |p: &Pod| matches!(crate::pods::phase(p), "Succeeded" | "Failed");
            let released = match (old, new) {
                (Some(_), None) => true,
                (Some(o), Some(n)) => !finished(o) && finished(n),
                _ => false,
            };
            let Some(pod) = new.or(old).filter(|_| released) else {
                return;
            };
            let ns = pod.metadata.namespace.as_deref();
            for quota in me.quotas.state() {
                if quota.metadata.namespace.as_deref() == ns {
                    me.queue.add(key_of(quota.as_ref()));
                }
            }
        });
        controller
    }

    async fn resource(&self, group: &str, plural: &str) -> Result<Option<ServedResource>> {
        let key = (group.to_string(), plural.to_string());
        {
            let served = self.lock_served();
            let fresh = served.refreshed.is_some_and(|at| at.elapsed() < RESYNC);
            if let Some(found) = served.by_name.get(&key) {
                return Ok(Some(found.clone()));
            }
            if fresh {
                return Ok(None);
            }
        }
        let found = served_resources(&self.client, &["list"]).await?;
        let mut served = self.lock_served();
        served.refreshed = Some(std::time::Instant::now());
        served.by_name = found
            .into_iter()
            .map(|r| ((r.api.group.clone(), r.api.plural.clone()), r))
            .collect();
        Ok(served.by_name.get(&key).cloned())
    }

    fn lock_served(&self) -> std::sync::MutexGuard<'_, Served> {
        self.served.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Served {
    refreshed: Option<std::time::Instant>,
    by_name: HashMap<(String, String), ServedResource>,
}

/// The `(group, plural)` whose objects a quota's resource name counts.
fn counted_resource(name: &str) -> Option<(String, String)> {
    let core = |plural: &str| Some((String::new(), plural.to_string()));
    if let Some(counted) = name.strip_prefix("count/") {
        return Some(match counted.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), counted.to_string()),
        });
    }
    match name {
        "pods" | "cpu" | "memory" => core("pods"),
        n if n.starts_with("requests.") || n.starts_with("limits.") => core("pods"),
        "services" | "services.loadbalancers" | "services.nodeports" => core("services"),
        "configmaps"
        | "secrets"
        | "replicationcontrollers"
        | "resourcequotas"
        | "persistentvolumeclaims" => core(name),
        _ => None,
    }
}

impl Reconcile for ResourceQuotaController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, key: &str) -> Result<Option<Duration>> {
        let (ns, name) = split_key(key);
        let ns = ns.unwrap_or_default();
        let Some(quota) = self.quotas.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        let hard = quota
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default();
        let quota_value =
            serde_json::to_value(quota.as_ref()).map_err(|e| Error::Other(e.to_string()))?;
        let mut used: skiff_quota::Usage = hard.keys().map(|name| (name.clone(), 0)).collect();
        let mut listed = Vec::new();
        for name in hard.keys() {
            let Some((group, plural)) = counted_resource(name) else {
                continue;
            };
            if listed.contains(&(group.clone(), plural.clone())) {
                continue;
            }
            listed.push((group.clone(), plural.clone()));
            let Some(resource) = self.resource(&group, &plural).await? else {
                continue;
            };
            let api = resource.api(&self.client, Some(ns));
            for object in api.list(&ListParams::default()).await?.items {
                let value =
                    serde_json::to_value(&object).map_err(|e| Error::Other(e.to_string()))?;
                if !skiff_quota::scopes_select(&quota_value, &group, &plural, &value) {
                    continue;
                }
                for (resource_name, amount) in skiff_quota::usage(&group, &plural, &value) {
                    if let Some(total) = used.get_mut(&resource_name) {
                        *total += amount;
                    }
                }
            }
        }
        let as_quantities = |usage: &skiff_quota::Usage| -> BTreeMap<String, Quantity> {
            usage
                .iter()
                .map(|(name, amount)| {
                    (name.clone(), Quantity(skiff_quota::quantity(name, *amount)))
                })
                .collect()
        };
        let status = ResourceQuotaStatus {
            hard: Some(hard.clone()),
            used: Some(as_quantities(&used)),
        };
        // Compared as amounts: "1000m" and "1" are the same quantity.
        let current = quota.status.clone().unwrap_or_default();
        let amounts = |list: &Option<BTreeMap<String, Quantity>>| {
            skiff_quota::read_list(serde_json::to_value(list).ok().as_ref())
        };
        if amounts(&current.used) != used || amounts(&current.hard) != amounts(&Some(hard)) {
            let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), ns);
            let mut updated = (*quota).clone();
            updated.status = Some(status);
            match api
                .replace_status(&quota.name_any(), &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {}
                // An admission charge got there first: recount from the new version.
                Err(e) if is_status(&e, 409) => return Ok(Some(Duration::from_millis(100))),
                Err(e) if is_status(&e, 404) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(RESYNC))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_map_to_what_they_count() {
        let core = |p: &str| Some((String::new(), p.to_string()));
        assert_eq!(counted_resource("pods"), core("pods"));
        assert_eq!(counted_resource("requests.cpu"), core("pods"));
        assert_eq!(counted_resource("services.nodeports"), core("services"));
        assert_eq!(counted_resource("count/secrets"), core("secrets"));
        assert_eq!(
            counted_resource("count/deployments.apps"),
            Some(("apps".into(), "deployments".into()))
        );
        assert_eq!(
            counted_resource("count/widgets.example.com"),
            Some(("example.com".into(), "widgets".into()))
        );
        assert_eq!(counted_resource("nvidia.com/gpu"), None);
    }
}
