//! The namespace controller: empties a namespace being deleted, then lifts its
//! `kubernetes` finalizer so that the API server removes it, as upstream's
//! `NamespacedResourcesDeleter` does.
//!
//! Each pass deletes every namespaced resource's objects in the namespace (a collection
//! delete where the resource allows it), pods first and the rest only once no pod is
//! left, reports what is left in the namespace's status conditions, and comes back while
//! anything remains: pods in their grace period, objects held by finalizers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::discovery::verbs;
use kube::Client;

use crate::discovery::served_resources;
use crate::error::Result;
use crate::informer::InformerFactory;
use crate::queue::WorkQueue;

/// The finalizer this controller is responsible for (in `spec.finalizers`).
pub const FINALIZER: &str = "kubernetes";

/// How soon to look again while content remains.
const RECHECK: Duration = Duration::from_secs(1);

pub struct NamespaceController {
    client: Client,
    queue: Arc<WorkQueue>,
}

/// What a deletion pass left behind.
#[derive(Debug, Default, PartialEq)]
struct Remaining {
    /// `resource.group` → objects left.
    content: BTreeMap<String, usize>,
    /// finalizer → objects held by it.
    finalizers: BTreeMap<String, usize>,
    /// Resources whose objects could not be deleted, with why.
    failures: Vec<String>,
}

impl Remaining {
    fn is_empty(&self) -> bool {
        self.content.is_empty() && self.failures.is_empty()
    }

    /// The status conditions upstream reports on a terminating namespace.
    fn conditions(&self, discovery_failure: Option<&str>) -> Vec<NamespaceCondition> {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let condition = |type_: &str, failed: Option<String>, reason_ok: &str, reason_bad: &str| {
            NamespaceCondition {
                type_: type_.into(),
                status: if failed.is_some() { "True" } else { "False" }.into(),
                reason: Some(
                    if failed.is_some() {
                        reason_bad
                    } else {
                        reason_ok
                    }
                    .into(),
                ),
                message: Some(failed.unwrap_or_else(|| match reason_ok {
                    "ResourcesDiscovered" => "All resources successfully discovered".into(),
                    "ParsedGroupVersions" => "All legacy kube types successfully parsed".into(),
                    "ContentDeleted" => {
                        "All content successfully deleted, may be waiting on finalization".into()
                    }
                    "ContentRemoved" => "All content successfully removed".into(),
                    _ => "All content-preserving finalizers finished".into(),
                })),
                last_transition_time: Some(now.clone()),
            }
        };
        let listing = |counts: &BTreeMap<String, usize>, what: &str| {
            let parts: Vec<String> = counts
                .iter()
                .map(|(name, n)| format!("{name} has {n} resource instances"))
                .collect();
            (!counts.is_empty()).then(|| format!("{what}: {}", parts.join(", ")))
        };
        let finalizer_listing = {
            let parts: Vec<String> = self
                .finalizers
                .iter()
                .map(|(name, n)| format!("{name} in {n} resource instances"))
                .collect();
            (!self.finalizers.is_empty()).then(|| {
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    parts.join(", ")
                )
            })
        };
        vec![
            condition(
                "NamespaceDeletionDiscoveryFailure",
                discovery_failure.map(str::to_string),
                "ResourcesDiscovered",
                "DiscoveryFailed",
            ),
            condition(
                "NamespaceDeletionGroupVersionParsingFailure",
                None,
                "ParsedGroupVersions",
                "GroupVersionParsingFailed",
            ),
            condition(
                "NamespaceDeletionContentFailure",
                (!self.failures.is_empty()).then(|| self.failures.join(", ")),
                "ContentDeleted",
                "ContentDeletionFailed",
            ),
            condition(
                "NamespaceContentRemaining",
                listing(&self.content, "Some resources are remaining"),
                "ContentRemoved",
                "SomeResourcesRemain",
            ),
            condition(
                "NamespaceFinalizersRemaining",
                finalizer_listing,
                "ContentHasNoFinalizers",
                "SomeFinalizersRemain",
            ),
        ]
    }
}

impl NamespaceController {
    pub fn new(factory: &InformerFactory) -> Arc<NamespaceController> {
        let me = Arc::new(NamespaceController {
            client: factory.client_for("namespace-controller"),
            queue: factory.queue("namespace"),
        });
        let queue = me.queue.clone();
        factory.informer::<Namespace>().add_handler(move |_, new| {
            if let Some(ns) = new.filter(|ns| ns.metadata.deletion_timestamp.is_some()) {
                queue.add(ns.metadata.name.clone().unwrap_or_default());
            }
        });
        me
    }

    /// One pass over every namespaced resource: delete what is there, count what stays.
    /// Pods go first, and nothing else is deleted while any pod remains (upstream's
    /// OrderedNamespaceDeletion): a pod still running keeps the ConfigMaps, Secrets and
    /// service accounts it uses until it has stopped.
    async fn delete_content(&self, namespace: &str) -> Result<Remaining> {
        let resources = served_resources(&self.client, &[verbs::LIST, verbs::DELETE]).await?;
        let is_pods = |r: &&crate::discovery::ServedResource| {
            r.api.group.is_empty() && r.api.plural == "pods"
        };
        let namespaced = resources.iter().filter(|r| r.namespaced());
        let (pods, others): (Vec<_>, Vec<_>) = namespaced.partition(is_pods);
        let mut remaining = Remaining::default();
        for (index, resource) in pods.into_iter().chain(others).enumerate() {
            if index > 0 && remaining.content.contains_key("pods.") {
                break;
            }
            let api = resource.api(&self.client, Some(namespace));
            // Upstream's form, `plural.group`: `pods.` for the core group.
            let name = format!("{}.{}", resource.api.plural, resource.api.group);
            let params = DeleteParams::background();
            let deleted = if resource.supports(verbs::DELETE_COLLECTION) {
                api.delete_collection(&params, &ListParams::default())
                    .await
                    .map(|_| ())
            } else {
                self.delete_each(&api, &params).await
            };
            if let Err(e) = deleted {
                remaining.failures.push(format!("{name}: {e}"));
                continue;
            }
            let left = match api.list_metadata(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(e) => {
                    remaining.failures.push(format!("{name}: {e}"));
                    continue;
                }
            };
            if !left.is_empty() {
                remaining.content.insert(name, left.len());
            }
            for object in &left {
                for finalizer in object.metadata.finalizers.iter().flatten() {
                    *remaining.finalizers.entry(finalizer.clone()).or_default() += 1;
                }
            }
        }
        Ok(remaining)
    }

    async fn delete_each(
        &self,
        api: &Api<kube::api::DynamicObject>,
        params: &DeleteParams,
    ) -> kube::Result<()> {
        for object in api.list_metadata(&ListParams::default()).await?.items {
            if object.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = object.metadata.name.unwrap_or_default();
            match api.delete(&name, params).await {
                Ok(_) => {}
                Err(e) if crate::error::is_status(&e, 404) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn update_conditions(
        &self,
        namespaces: &Api<Namespace>,
        mut namespace: Namespace,
        conditions: Vec<NamespaceCondition>,
    ) -> Result<()> {
        let status = namespace
            .status
            .get_or_insert_with(NamespaceStatus::default);
        let old = status.conditions.clone().unwrap_or_default();
        // Keep each condition's transition time while its status stays.
        let merged: Vec<NamespaceCondition> = conditions
            .into_iter()
            .map(|mut c| {
                if let Some(prev) = old.iter().find(|p| p.type_ == c.type_) {
                    if prev.status == c.status {
                        c.last_transition_time = prev.last_transition_time.clone();
                    }
                }
                c
            })
            .collect();
        if old == merged {
            return Ok(());
        }
        status.conditions = Some(merged);
        let name = namespace.metadata.name.clone().unwrap_or_default();
        namespaces
            .replace_status(&name, &PostParams::default(), &namespace)
            .await?;
        Ok(())
    }

    /// Removes `kubernetes` from `spec.finalizers` through the `finalize` subresource.
    async fn finalize(&self, namespaces: &Api<Namespace>, name: &str) -> Result<()> {
        let mut namespace = namespaces.get(name).await?;
        if let Some(spec) = namespace.spec.as_mut() {
            if let Some(finalizers) = spec.finalizers.as_mut() {
                finalizers.retain(|f| f != FINALIZER);
            }
        }
        crate::error::ignore_not_found(
            namespaces
                .replace_subresource("finalize", name, &PostParams::default(), &namespace)
                .await,
        )
    }
}

fn has_finalizer(namespace: &Namespace) -> bool {
    namespace
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

impl crate::controller::Reconcile for NamespaceController {
    fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }

    async fn reconcile(&self, name: &str) -> Result<Option<Duration>> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let Some(namespace) = namespaces.get_opt(name).await? else {
            return Ok(None);
        };
        if namespace.metadata.deletion_timestamp.is_none() || !has_finalizer(&namespace) {
            return Ok(None);
        }
        let (remaining, discovery_failure) = match self.delete_content(name).await {
            Ok(remaining) => (remaining, None),
            Err(e) => (Remaining::default(), Some(e.to_string())),
        };
        let conditions = remaining.conditions(discovery_failure.as_deref());
        self.update_conditions(&namespaces, namespace.clone(), conditions)
            .await?;
        if discovery_failure.is_some() || !remaining.is_empty() {
            tracing::debug!(namespace = name, ?remaining, "namespace content remains");
            return Ok(Some(RECHECK));
        }
        self.finalize(&namespaces, name).await?;
        tracing::info!(namespace = name, "namespace emptied and finalized");
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_as_upstream_words_them() {
        let mut remaining = Remaining::default();
        remaining.content.insert("pods.".into(), 2);
        remaining.finalizers.insert("example.com/hold".into(), 1);
        let conditions = remaining.conditions(None);
        let find = |t: &str| conditions.iter().find(|c| c.type_ == t).unwrap();
        let content = find("NamespaceContentRemaining");
        assert_eq!(content.status, "True");
        assert_eq!(content.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            content.message.as_deref(),
            Some("Some resources are remaining: pods. has 2 resource instances")
        );
        let finalizers = find("NamespaceFinalizersRemaining");
        assert_eq!(
            finalizers.message.as_deref(),
            Some("Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances")
        );
        assert_eq!(find("NamespaceDeletionDiscoveryFailure").status, "False");
        assert!(Remaining::default().is_empty());
    }
}
