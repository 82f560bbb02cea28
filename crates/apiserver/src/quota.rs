//! The `ResourceQuota` admission plugin: a create is charged against every quota of its
//! namespace that counts it, and refused if any would go over `spec.hard`.
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
