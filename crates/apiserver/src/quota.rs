//! The `ResourceQuota` admission plugin: a create is charged against every quota of its
//! namespace that counts it, and refused if any would go over `spec.hard`; so is what an
//! in-place resize (`pods/resize`) adds to a pod's requests and limits.
//!
//! The charge is a compare-and-swap on the quota's `status.used`, as upstream's quota
//! admission does, so concurrent creates cannot both take the last unit; the quota
//! controller later recounts from the objects themselves (returning what deleted objects
//! and failed creates held). The counting rules are `skiff_quota`'s, shared with it.

use serde_json::Value;
use skiff_quota::{quantity, read_list, scopes_select, usage, write_list, Usage};

use crate::object;
use crate::registry::{Action, Registry};
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult};

/// Charges the creation of `object` to the quotas of `namespace`.
pub async fn charge(
    registry: &Registry,
    resource: &ResourceInfo,
    namespace: &str,
    object: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    let wanted = usage(&resource.group, &resource.plural, object);
    charge_usage(registry, resource, namespace, object, wanted, dry_run).await
}

/// Charges what `new` uses beyond `old` (a resized pod) to the quotas of `namespace`.
pub async fn charge_increase(
    registry: &Registry,
    resource: &ResourceInfo,
    namespace: &str,
    new: &Value,
    old: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    let wanted = increase(
        &usage(&resource.group, &resource.plural, new),
        &usage(&resource.group, &resource.plural, old),
    );
    charge_usage(registry, resource, namespace, new, wanted, dry_run).await
}

/// What `new` uses beyond `old`, resource by resource (nothing given back counts).
fn increase(new: &Usage, old: &Usage) -> Usage {
    new.iter()
        .map(|(name, amount)| (name.clone(), amount - old.get(name).copied().unwrap_or(0)))
        .filter(|(_, more)| *more > 0)
        .collect()
}

/// Charges `wanted` (what `object` adds) to the quotas of `namespace` that count it.
async fn charge_usage(
    registry: &Registry,
    resource: &ResourceInfo,
    namespace: &str,
    object: &Value,
    wanted: Usage,
    dry_run: bool,
) -> ApiResult<()> {
    if wanted.is_empty() {
        return Ok(());
    }
    let quotas = registry.core("resourcequotas")?;
    // The cache finds the candidates; each charge then re-reads its quota from the store.
    let snapshot = registry
        .cache
        .snapshot(&quotas.key_prefix(Some(namespace)), None);
    for cached in snapshot.objects {
        let quota = cached.value()?;
        let hard = read_list(quota.pointer("/spec/hard"));
        if !hard.keys().any(|name| wanted.contains_key(name))
            || !scopes_select(&quota, &resource.group, &resource.plural, object)
        {
            continue;
        }
        let quota_name = object::name(&quota).to_string();
        registry
            .guaranteed_update(&quotas, Some(namespace), &quota_name, dry_run, |current| {
                let hard = read_list(current.pointer("/spec/hard"));
                let status_hard = read_list(current.pointer("/status/hard"));
                let mut used = read_list(current.pointer("/status/used"));
                let charged: Vec<&String> = hard
                    .keys()
                    .filter(|name| wanted.contains_key(*name))
                    .collect();
                let unknown: Vec<&str> = charged
                    .iter()
                    .filter(|name| !status_hard.contains_key(**name) || !used.contains_key(**name))
                    .map(|name| name.as_str())
                    .collect();
                if !unknown.is_empty() {
                    return Err(ApiError::admission_forbidden(
                        resource,
                        object::name(object),
                        &format!(
                            "status unknown for quota: {quota_name}, resources: {}",
                            unknown.join(",")
                        ),
                    ));
                }
                let over: Vec<&String> = charged
                    .iter()
                    .copied()
                    .filter(|name| used[*name] + wanted[*name] > hard[*name])
                    .collect();
                if !over.is_empty() {
                    let list = |amounts: &Usage| {
                        over.iter()
                            .map(|name| format!("{name}={}", quantity(name, amounts[*name])))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    return Err(ApiError::admission_forbidden(
                        resource,
                        object::name(object),
                        &format!(
                            "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
                            list(&wanted),
                            list(&used),
                            list(&hard)
                        ),
                    ));
                }
                for name in charged {
                    *used.entry(name.clone()).or_insert(0) += wanted[name];
                }
                let mut next = current;
                object::field_object(&mut next, "status").insert("used".into(), write_list(&used));
                Ok(Action::Replace(next))
            })
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_increase_counts_only_what_grew() {
        let old: Usage = [
            ("pods".into(), 1),
            ("requests.cpu".into(), 100),
            ("requests.memory".into(), 64),
        ]
        .into();
        let new: Usage = [
            ("pods".into(), 1),
            ("requests.cpu".into(), 250),
            ("requests.memory".into(), 32),
            ("limits.cpu".into(), 300),
        ]
        .into();
        let expected: Usage = [("requests.cpu".into(), 150), ("limits.cpu".into(), 300)].into();
        assert_eq!(increase(&new, &old), expected);
    }
}
