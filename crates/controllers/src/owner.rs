//! Owner references: who controls an object, and the claim rules (adopt orphans that
//! match a controller's selector, release owned objects that stop matching) of upstream's
//! `ControllerRefManager`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::core::{Selector, SelectorExt};
use kube::Resource;

use crate::error::{Error, Result};

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
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
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
