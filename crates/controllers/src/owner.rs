//! Owner references: who controls an object, and the claim rules (adopt orphans that
//! match a controller's selector, release owned objects that stop matching) of upstream's
//! `ControllerRefManager`.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::error::{is_status, Error, Result};

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The cached objects in `namespace` whose controller is the object with `uid`.
pub fn controlled_by<K>(
    store: &kube::runtime::reflector::Store<K>,
    namespace: &str,
    uid: &str,
) -> Vec<std::sync::Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store
        .state()
        .into_iter()
        .filter(|o| {
            o.meta().namespace.as_deref() == Some(namespace)
                && controller_of(o.meta()).is_some_and(|r| r.uid == uid)
        })
        .collect()
}

/// The reference a controller puts on what it creates.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        controller: Some(true),
        block_owner_deletion: Some(true),
        ..plain_ref(owner)
    }
}

/// A reference that is not a controller's: the garbage collector deletes the dependent
/// with its owner, nothing more.
pub fn plain_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// A label selector as a matcher. As upstream's `LabelSelectorAsSelector`, an absent
/// selector matches nothing (the caller decides) and an empty one everything.
pub fn selector(selector: &LabelSelector) -> Result<Selector> {
    Selector::try_from(selector.clone()).map_err(|e| Error::Selector(e.to_string()))
}

pub fn matches(selector: &Selector, meta: &ObjectMeta) -> bool {
    let empty = Default::default();
    selector.matches(meta.labels.as_ref().unwrap_or(&empty))
}

/// What a controller does with one candidate object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Owned and matching: counts as the controller's.
    Owned,
    /// An orphan that matches: take it.
    Adopt,
    /// Owned but no longer matching: let it go.
    Release,
    /// Someone else's, or not a candidate.
    Ignore,
}

/// Decides the claim of the controller `owner_uid` (being deleted or not) on `meta`.
pub fn claim(
    owner_uid: &str,
    owner_deleting: bool,
    selector: &Selector,
    meta: &ObjectMeta,
) -> Claim {
    let matching = matches(selector, meta);
    match controller_of(meta) {
        Some(r) if r.uid != owner_uid => Claim::Ignore,
        Some(_) if matching => Claim::Owned,
        // An owner being deleted releases nothing: the garbage collector handles the rest.
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner_deleting || !matching || meta.deletion_timestamp.is_some() => Claim::Ignore,
        None => Claim::Adopt,
    }
}

/// Upstream's `ControllerRefManager`: of `candidates` (objects of one namespace), the ones
/// `owner` controls once matching orphans are adopted and owned objects that no longer
/// match are released. Adoption happens only after a fresh read shows the owner still
/// live, so a deleted controller never adopts. Objects that changed or vanished since the
/// cache saw them are skipped; the next sync decides again.
pub async fn claim_objects<O, D>(
    client: &Client,
    owner: &O,
    selector: &Selector,
    candidates: impl IntoIterator<Item = Arc<D>>,
) -> Result<Vec<Arc<D>>>
where
    O: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
    D: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let api: Api<D> = Api::namespaced(client.clone(), &ns);
    let mut owned = Vec::new();
    let mut owner_checked = false;
    for object in candidates {
        let meta = object.meta();
        let refs = meta.owner_references.clone().unwrap_or_default();
        let refs: Vec<OwnerReference> = match claim(&uid, deleting, selector, meta) {
            Claim::Owned => {
                owned.push(object);
                continue;
            }
            Claim::Ignore => continue,
            Claim::Adopt => {
                if !owner_checked {
                    let owners: Api<O> = Api::namespaced(client.clone(), &ns);
                    let fresh = owners.get(&owner.name_any()).await?;
                    if fresh.meta().uid.as_deref() != Some(uid.as_str())
                        || fresh.meta().deletion_timestamp.is_some()
                    {
                        return Err(Error::Other(format!(
                            "original {} {ns}/{} is gone or being deleted",
                            O::kind(&()),
                            owner.name_any()
                        )));
                    }
                    owner_checked = true;
                }
                refs.into_iter().chain([controller_ref(owner)]).collect()
            }
            Claim::Release => refs.into_iter().filter(|r| r.uid != uid).collect(),
        };
        let adopting = refs.iter().any(|r| r.uid == uid);
        let patch = owner_refs_patch(meta, refs)?;
        match api
            .patch(
                &object.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
        {
            Ok(patched) => {
                let action = if adopting { "adopted" } else { "released" };
                tracing::info!(
                    kind = %D::kind(&()),
                    object = %format!("{ns}/{}", object.name_any()),
                    owner = %owner.name_any(),
                    "{action}"
                );
                if adopting {
                    owned.push(Arc::new(patched));
                }
            }
            Err(e) if is_status(&e, 404) || is_status(&e, 409) || is_status(&e, 422) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(owned)
}

/// A JSON patch that sets `ownerReferences`, guarded by the object's `resourceVersion` so
/// that it applies only to the version the decision was made on.
pub fn owner_refs_patch(meta: &ObjectMeta, refs: Vec<OwnerReference>) -> Result<json_patch::Patch> {
    let value = serde_json::json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.resource_version},
        {"op": "add", "path": "/metadata/ownerReferences", "value": refs},
    ]);
    serde_json::from_value(value).map_err(|e| Error::Other(e.to_string()))
}

/// A JSON patch that removes `finalizer` from an object, guarded by its UID and by the
/// finalizer's place in the list as it was read; `None` if it does not hold it.
pub fn finalizer_removal(
    uid: &str,
    finalizers: &[String],
    finalizer: &str,
) -> Option<json_patch::Patch> {
    let index = finalizers.iter().position(|f| f == finalizer)?;
    let value = serde_json::json!([
        {"op": "test", "path": "/metadata/uid", "value": uid},
        {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
    ]);
    serde_json::from_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(labels: &[(&str, &str)], owner: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            owner_references: owner.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn claim_rules() {
        let sel = selector(&LabelSelector {
            match_labels: Some([("app".to_string(), "a".to_string())].into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            claim("u", false, &sel, &meta(&[("app", "a")], Some("u"))),
            Claim::Owned
        );
        assert_eq!(
            claim("u", false, &sel, &meta(&[("app", "a")], None)),
            Claim::Adopt
        );
        assert_eq!(
            claim("u", true, &sel, &meta(&[("app", "a")], None)),
            Claim::Ignore
        );
        assert_eq!(
            claim("u", false, &sel, &meta(&[("app", "b")], Some("u"))),
            Claim::Release
        );
        assert_eq!(
            claim("u", true, &sel, &meta(&[("app", "b")], Some("u"))),
            Claim::Ignore
        );
        assert_eq!(
            claim("u", false, &sel, &meta(&[("app", "a")], Some("v"))),
            Claim::Ignore
        );
        assert_eq!(
            claim("u", false, &sel, &meta(&[("app", "b")], None)),
            Claim::Ignore
        );
    }
}
