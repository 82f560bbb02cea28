//! The review APIs, answered from the authorizer and never stored:
//! `SelfSubjectAccessReview` (`kubectl auth can-i`), `SubjectAccessReview`,
//! `LocalSubjectAccessReview`, `SelfSubjectRulesReview` (`kubectl auth can-i --list`) and
//! `SelfSubjectReview` (`kubectl auth whoami`).

use serde_json::{json, Value};

use super::rbac::Authorizer;
use super::Attributes;
use crate::auth::UserInfo;
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult, Cause};

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The attributes a review's `spec` asks about.
fn attributes(spec: &Value) -> Option<Attributes> {
    if let Some(r) = spec.get("resourceAttributes") {
        return Some(Attributes {
            verb: str_at(r, "/verb").to_string(),
            api_group: str_at(r, "/group").to_string(),
            resource: str_at(r, "/resource").to_string(),
            subresource: str_at(r, "/subresource").to_string(),
            namespace: str_at(r, "/namespace").to_string(),
            name: str_at(r, "/name").to_string(),
            resource_request: true,
            ..Default::default()
        });
    }
    spec.get("nonResourceAttributes").map(|n| Attributes {
        verb: str_at(n, "/verb").to_string(),
        path: str_at(n, "/path").to_string(),
        ..Default::default()
    })
}

/// Answers a review posted as `user` to `resource` (in `namespace` for the local one).
pub fn answer(
    authorizer: &Authorizer<'_>,
    resource: &ResourceInfo,
    namespace: Option<&str>,
    user: &UserInfo,
    mut review: Value,
) -> ApiResult<Value> {
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match resource.builtin_kind() {
        "SelfSubjectReview" => json!({"userInfo": {
            "username": user.name,
            "uid": if user.uid.is_empty() { Value::Null } else { json!(user.uid) },
            "groups": user.groups,
        }}),
        "SelfSubjectRulesReview" => {
            let rules = authorizer.rules_for(user, str_at(&spec, "/namespace"));
            let master = user.groups.iter().any(|g| g == "system:masters");
            let mut resource_rules: Vec<Value> = rules
                .iter()
                .filter(|r| r.non_resource_urls.is_empty())
                .map(|r| {
                    let mut rule = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
                    if !r.resource_names.is_empty() {
                        rule["resourceNames"] = json!(r.resource_names);
                    }
                    rule
                })
                .collect();
            let mut non_resource_rules: Vec<Value> = rules
                .iter()
                .filter(|r| !r.non_resource_urls.is_empty())
                .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
                .collect();
            if master {
                resource_rules.insert(
                    0,
                    json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                );
                non_resource_rules.insert(0, json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
            }
            json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
        }
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let Some(request) = attributes(&spec) else {
                return Err(ApiError::invalid(
                    &resource.kind,
                    &resource.group,
                    "",
                    vec![Cause::invalid(
                        "spec.resourceAttributes",
                        "",
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            };
            if resource.builtin_kind() == "LocalSubjectAccessReview"
                && Some(request.namespace.as_str()) != namespace
            {
                return Err(ApiError::invalid(
                    &resource.kind,
                    &resource.group,
                    "",
                    vec![Cause::invalid(
                        "spec.resourceAttributes.namespace",
                        &request.namespace,
                        "must match metadata.namespace",
                    )],
                ));
            }
            let subject = if resource.builtin_kind() == "SelfSubjectAccessReview" {
                user.clone()
            } else {
                UserInfo {
                    name: str_at(&spec, "/user").to_string(),
                    uid: str_at(&spec, "/uid").to_string(),
                    groups: spec
                        .get("groups")
                        .and_then(Value::as_array)
                        .map(|g| {
                            g.iter()
                                .filter_map(|x| x.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            };
            json!({"allowed": authorizer.allows(&subject, &request)})
        }
        other => return Err(ApiError::internal(format!("{other} is not a review"))),
    };
    review["apiVersion"] = json!(resource.api_version());
    review["kind"] = json!(resource.kind);
    if review.get("metadata").is_none() {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    review["status"] = status;
    Ok(review)
}
