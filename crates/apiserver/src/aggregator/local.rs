//! The APIServices of the group versions this server serves itself, as upstream's
//! autoregistration keeps them: one per built-in group version (labelled `onstart`) and
//! one per group version a CustomResourceDefinition serves (labelled `true`, removed
//! when no definition serves it any more). Objects an administrator changed are put
//! back: the server owns these names.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{api_service_name, PREFIX};
use crate::object;
use crate::registry::{Action, DeleteOptions, Registry, SERVER_MANAGER};

pub const AUTOMANAGED_LABEL: &str = "kube-aggregator.kubernetes.io/automanaged";

/// Upstream's discovery priorities of the built-in group versions (group, version); the
/// priorities custom resources get.
fn priorities(group: &str, version: &str) -> (i64, i64) {
    match (group, version) {
        ("", _) => (18000, 1),
        ("apiregistration.k8s.io", _) => (18000, 15),
        ("apps", _) => (17800, 15),
        ("events.k8s.io", _) => (17750, 15),
        ("authentication.k8s.io", _) => (17700, 15),
        ("authorization.k8s.io", _) => (17600, 15),
        ("autoscaling", "v2") => (17500, 30),
        ("autoscaling", _) => (17500, 15),
        ("batch", _) => (17400, 15),
        ("certificates.k8s.io", _) => (17300, 15),
        ("networking.k8s.io", _) => (17200, 15),
        ("policy", _) => (17100, 15),
        ("rbac.authorization.k8s.io", _) => (17000, 15),
        ("storage.k8s.io", _) => (16800, 15),
        ("apiextensions.k8s.io", _) => (16700, 15),
        ("admissionregistration.k8s.io", _) => (16700, 15),
        ("scheduling.k8s.io", _) => (16600, 15),
        ("coordination.k8s.io", _) => (16500, 15),
        ("node.k8s.io", _) => (16300, 15),
        ("discovery.k8s.io", _) => (16200, 15),
        ("flowcontrol.apiserver.k8s.io", _) => (16100, 21),
        ("resource.k8s.io", _) => (15900, 15),
        ("storagemigration.k8s.io", _) => (15800, 15),
        ("metrics.k8s.io", _) => (100, 100),
        _ => (1000, 100),
    }
}

/// The local APIServices the catalogue calls for, by name.
fn desired(registry: &Registry) -> BTreeMap<String, Value> {
    let builtin: Vec<&str> = crate::resources::BUILTIN_GROUPS
        .iter()
        .map(|(g, _)| *g)
        .collect();
    let mut wanted = BTreeMap::new();
    for (group, versions) in registry.catalogue.groups() {
        let managed = if builtin.contains(&group.as_str()) {
            "onstart"
        } else {
            "true"
        };
        for version in versions {
            let name = api_service_name(&group, &version);
            let (group_priority, version_priority) = priorities(&group, &version);
            let object = json!({
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": name, "labels": {AUTOMANAGED_LABEL: managed}},
                "spec": {
                    "group": group,
                    "version": version,
                    "groupPriorityMinimum": group_priority,
                    "versionPriority": version_priority,
                },
            });
            wanted.insert(name, object);
        }
    }
    wanted
}

/// Brings the stored local APIServices in line with the catalogue, each `Available`.
/// An APIService that names a Service is left alone: whoever registered a remote
/// server for a group version this server serves takes it over, as upstream.
pub async fn reconcile(registry: &Registry) -> anyhow::Result<()> {
    let resource = registry
        .catalogue
        .get(super::GROUP, "v1", "apiservices")
        .ok_or_else(|| anyhow::anyhow!("apiservices missing from the catalogue"))?;
    let stored: BTreeMap<String, Value> = registry
        .cache
        .snapshot(PREFIX, None)
        .objects
        .iter()
        .filter_map(|o| o.value().ok())
        .map(|o| (object::name(&o).to_string(), o))
        .collect();
    let wanted = desired(registry);
    for (name, object) in &wanted {
        let current = match stored.get(name) {
            Some(current) => current.clone(),
            None => match registry
                .create(&resource, None, object.clone(), SERVER_MANAGER, false)
                .await
            {
                Ok(created) => created,
                Err(e) if e.reason == "AlreadyExists" => continue,
                Err(e) => anyhow::bail!("creating APIService {name}: {e}"),
            },
        };
        if super::Remote::from_api_service(&current).is_some() {
            continue;
        }
        if current.get("spec") != object.get("spec")
            || object::labels(&current) != object::labels(object)
        {
            let (spec, labels) = (object["spec"].clone(), object["metadata"]["labels"].clone());
            registry
                .guaranteed_update(&resource, None, name, false, |mut current| {
                    current["spec"] = spec.clone();
                    object::metadata_mut(&mut current).insert("labels".into(), labels.clone());
                    Ok(Action::Replace(current))
                })
                .await
                .map_err(|e| anyhow::anyhow!("restoring APIService {name}: {e}"))?;
        }
        if !super::is_available(&current) {
            super::availability::write_condition(
                registry,
                name,
                &super::availability::Condition::available(
                    "Local",
                    "Local APIServices are always available",
                ),
            )
            .await
            .map_err(|e| anyhow::anyhow!("APIService {name}: {e}"))?;
        }
    }
    // Custom resources' APIServices go with the last definition serving them.
    for (name, current) in &stored {
        let automanaged = object::labels(current)
            .get(AUTOMANAGED_LABEL)
            .map(String::as_str)
            == Some("true");
        if automanaged && !wanted.contains_key(name) {
            match registry
                .delete(&resource, None, name, &DeleteOptions::default(), false)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => anyhow::bail!("removing APIService {name}: {e}"),
            }
        }
    }
    Ok(())
}
