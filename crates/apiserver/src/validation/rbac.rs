//! RBAC: a role's rules (verbs always; API groups and resources for resource rules;
//! non-resource URLs only in cluster roles) and a binding's role reference and subjects,
//! as upstream's `rbac` validation words them. A binding's `roleRef` never changes
//! (`strategy::validate_update` calls `role_ref_update`).

use serde_json::Value;

use super::{list, path_segment, text};
use crate::status::{quote, BadValue, Cause};
use crate::strategy::{is_dns1123_subdomain, DNS1123_SUBDOMAIN_MSG};

const GROUP: &str = "rbac.authorization.k8s.io";

/// A Role's or ClusterRole's rules.
pub(super) fn role(object: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    for (i, rule) in list(Some(object), "rules").iter().enumerate() {
        let at = format!("rules[{i}]");
        let rule = Some(rule);
        if list(rule, "verbs").is_empty() {
            causes.push(Cause::required_detail(
                format!("{at}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = list(rule, "nonResourceURLs");
        if !urls.is_empty() {
            let value = BadValue::Go(go_strings(urls));
            if namespaced {
                causes.push(Cause::invalid(
                    format!("{at}.nonResourceURLs"),
                    value.clone(),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !list(rule, "apiGroups").is_empty()
                || !list(rule, "resources").is_empty()
                || !list(rule, "resourceNames").is_empty()
            {
                causes.push(Cause::invalid(
                    format!("{at}.nonResourceURLs"),
                    value,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if list(rule, "apiGroups").is_empty() {
            causes.push(Cause::required_detail(
                format!("{at}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        let resources = list(rule, "resources");
        if resources.is_empty() {
            causes.push(Cause::required_detail(
                format!("{at}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
        if !list(rule, "resourceNames").is_empty() && resources.len() > 1 {
            causes.push(Cause::required_detail(
                format!("{at}.resourceNames"),
                "resource names cannot apply to multiple resources",
            ));
        }
    }
}

/// A RoleBinding's or ClusterRoleBinding's role reference and subjects.
pub(super) fn binding(object: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let role_ref = object.get("roleRef");
    let group = text(role_ref, "apiGroup");
    if group != GROUP {
        causes.push(Cause::unsupported("roleRef.apiGroup", group, &[GROUP]));
    }
    let kind = text(role_ref, "kind");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind) {
        causes.push(Cause::unsupported("roleRef.kind", kind, kinds));
    }
    let name = text(role_ref, "name");
    if name.is_empty() {
        causes.push(Cause::required("roleRef.name"));
    } else {
        for message in path_segment(name) {
            causes.push(Cause::invalid("roleRef.name", name, message));
        }
    }
    for (i, subject) in list(Some(object), "subjects").iter().enumerate() {
        subject_causes(subject, namespaced, &format!("subjects[{i}]"), causes);
    }
}

fn subject_causes(subject: &Value, namespaced: bool, at: &str, causes: &mut Vec<Cause>) {
    let subject = Some(subject);
    let name = text(subject, "name");
    let group = text(subject, "apiGroup");
    if name.is_empty() {
        causes.push(Cause::required(format!("{at}.name")));
    }
    match text(subject, "kind") {
        "ServiceAccount" => {
            if !name.is_empty() && !is_dns1123_subdomain(name) {
                causes.push(Cause::invalid(
                    format!("{at}.name"),
                    name,
                    DNS1123_SUBDOMAIN_MSG,
                ));
            }
            if !group.is_empty() {
                causes.push(Cause::unsupported(format!("{at}.apiGroup"), group, &[""]));
            }
            if !namespaced && text(subject, "namespace").is_empty() {
                causes.push(Cause::required(format!("{at}.namespace")));
            }
        }
        kind @ ("User" | "Group") => {
            if name.is_empty() {
                let what = if kind == "User" { "user" } else { "group" };
                causes.push(Cause::invalid(
                    format!("{at}.name"),
                    name,
                    &format!("{what} name cannot be empty"),
                ));
            }
            if group != GROUP {
                causes.push(Cause::unsupported(
                    format!("{at}.apiGroup"),
                    group,
                    &[GROUP],
                ));
            }
        }
        other => causes.push(Cause::unsupported(
            format!("{at}.kind"),
            other,
            &["ServiceAccount", "User", "Group"],
        )),
    }
}

/// A binding's role reference may not change.
pub fn role_ref_update(new: &Value, old: &Value) -> Vec<Cause> {
    if new.get("roleRef") == old.get("roleRef") {
        return Vec::new();
    }
    let role_ref = new.get("roleRef");
    vec![Cause::invalid(
        "roleRef",
        BadValue::Go(format!(
            "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
            quote(text(role_ref, "apiGroup")),
            quote(text(role_ref, "kind")),
            quote(text(role_ref, "name"))
        )),
        "cannot change roleRef",
    )]
}

fn go_strings(items: &[Value]) -> String {
    let inner: Vec<String> = items
        .iter()
        .map(|v| quote(v.as_str().unwrap_or("")))
        .collect();
    format!("[]string{{{}}}", inner.join(", "))
}
