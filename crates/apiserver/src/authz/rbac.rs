//! RBAC, with upstream's matching rules: verbs, API groups, resources and subresources
//! (`pods/log`, `pods/*`, `*/scale`), resource names, non-resource URLs (`/healthz`,
//! `/api/*`), role bindings scoped to a namespace, and aggregated ClusterRoles.

use serde_json::Value;

use super::Attributes;
use crate::auth::UserInfo;
use crate::cache::WatchCache;

/// One `PolicyRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    pub fn from_json(rule: &Value) -> Rule {
        Rule {
            verbs: strings(rule.get("verbs")),
            api_groups: strings(rule.get("apiGroups")),
            resources: strings(rule.get("resources")),
            resource_names: strings(rule.get("resourceNames")),
            non_resource_urls: strings(rule.get("nonResourceURLs")),
        }
    }

    pub fn allows(&self, request: &Attributes) -> bool {
        if !self.verbs.iter().any(|v| v == "*" || *v == request.verb) {
            return false;
        }
        if !request.resource_request {
            return self.non_resource_urls.iter().any(|url| {
                url == "*"
                    || *url == request.path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| request.path.starts_with(prefix))
            });
        }
        let group_ok = self
            .api_groups
            .iter()
            .any(|g| g == "*" || *g == request.api_group);
        let resource_ok = self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if request.subresource.is_empty() {
                return *r == request.resource;
            }
            let combined = format!("{}/{}", request.resource, request.subresource);
            *r == combined
                || *r == format!("{}/*", request.resource)
                || *r == format!("*/{}", request.subresource)
        });
        let name_ok = self.resource_names.is_empty()
            || (!request.name.is_empty() && self.resource_names.contains(&request.name));
        group_ok && resource_ok && name_ok
    }
}

/// Whether a binding's subject is this user.
fn subject_matches(subject: &Value, user: &UserInfo, binding_namespace: &str) -> bool {
    let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
    match subject.get("kind").and_then(Value::as_str) {
        Some("User") => name == user.name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let namespace = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            user.name == format!("system:serviceaccount:{namespace}:{name}")
        }
        _ => false,
    }
}

pub struct Authorizer<'a> {
    pub cache: &'a WatchCache,
}

impl Authorizer<'_> {
    fn objects(&self, prefix: &str) -> Vec<Value> {
        self.cache
            .snapshot(prefix, None)
            .objects
            .iter()
            .filter_map(|o| o.value().ok())
            .collect()
    }

    /// The rules of a ClusterRole, with those of the roles it aggregates.
    pub fn cluster_role_rules(&self, name: &str) -> Vec<Rule> {
        let Some(role) = self
            .cache
            .get(&format!("/registry/clusterroles/{name}"))
            .and_then(|o| o.value().ok())
        else {
            return Vec::new();
        };
        let mut rules = rules_of(&role);
        if let Some(selectors) = role
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        {
            for other in self.objects("/registry/clusterroles/") {
                let labels = crate::object::labels(&other);
                let selected = selectors.iter().any(|selector| {
                    crate::object::string_map(selector.get("matchLabels"))
                        .iter()
                        .all(|(k, v)| labels.get(k) == Some(v))
                });
                if selected && crate::object::name(&other) != name {
                    rules.extend(rules_of(&other));
                }
            }
        }
        rules
    }

    fn role_rules(&self, namespace: &str, role_ref: &Value) -> Vec<Rule> {
        let name = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
        match role_ref.get("kind").and_then(Value::as_str) {
            Some("ClusterRole") => self.cluster_role_rules(name),
            Some("Role") => self
                .cache
                .get(&format!("/registry/roles/{namespace}/{name}"))
                .and_then(|o| o.value().ok())
                .map(|r| rules_of(&r))
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide rules included;
    /// an empty namespace means cluster scope only).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<Rule> {
        let mut rules = Vec::new();
        for binding in self.objects("/registry/clusterrolebindings/") {
            if bound(&binding, user, "") {
                if let Some(role_ref) = binding.get("roleRef") {
                    rules.extend(self.role_rules("", role_ref));
                }
            }
        }
        if !namespace.is_empty() {
            for binding in self.objects(&format!("/registry/rolebindings/{namespace}/")) {
                if bound(&binding, user, namespace) {
                    if let Some(role_ref) = binding.get("roleRef") {
                        rules.extend(self.role_rules(namespace, role_ref));
                    }
                }
            }
        }
        rules
    }

    pub fn allows(&self, user: &UserInfo, request: &Attributes) -> bool {
        self.decide(user, request).is_ok()
    }

    /// Whether `user` may make `request`, as upstream's chain decides it: the Node
    /// authorizer, then RBAC. A refusal carries the Node authorizer's reason, if any.
    pub fn decide(&self, user: &UserInfo, request: &Attributes) -> Result<(), Option<String>> {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Ok(());
        }
        let reason = match super::node::decide(self.cache, user, request) {
            super::node::Decision::Allow => return Ok(()),
            super::node::Decision::NoOpinion(reason) => reason,
        };
        if self
            .rules_for(user, &request.namespace)
            .iter()
            .any(|rule| rule.allows(request))
        {
            return Ok(());
        }
        Err(reason)
    }
}

fn bound(binding: &Value, user: &UserInfo, namespace: &str) -> bool {
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .is_some_and(|subjects| subjects.iter().any(|s| subject_matches(s, user, namespace)))
}

pub fn rules_of(role: &Value) -> Vec<Rule> {
    role.get("rules")
        .and_then(Value::as_array)
        .map(|rules| rules.iter().map(Rule::from_json).collect())
        .unwrap_or_default()
}

/// Escalation prevention: every rule being granted must be covered by rules the granter
/// holds (upstream's `ConfirmNoEscalation`, checked rule by rule and verb by verb).
pub fn covers(held: &[Rule], wanted: &Rule) -> bool {
    let expand = |values: &[String]| -> Vec<String> {
        if values.is_empty() {
            vec![String::new()]
        } else {
            values.to_vec()
        }
    };
    for verb in &wanted.verbs {
        if !wanted.non_resource_urls.is_empty() {
            for url in &wanted.non_resource_urls {
                let request = Attributes {
                    verb: verb.clone(),
                    path: url.clone(),
                    ..Default::default()
                };
                if !held
                    .iter()
                    .any(|r| r.allows(&request) || r.non_resource_urls.iter().any(|u| u == url))
                {
                    return false;
                }
            }
            continue;
        }
        for group in expand(&wanted.api_groups) {
            for resource in expand(&wanted.resources) {
                for name in expand(&wanted.resource_names) {
                    let (resource, subresource) = match resource.split_once('/') {
                        Some((r, s)) => (r.to_string(), s.to_string()),
                        None => (resource.clone(), String::new()),
                    };
                    let request = Attributes {
                        verb: verb.clone(),
                        api_group: group.clone(),
                        resource,
                        subresource,
                        name,
                        resource_request: true,
                        ..Default::default()
                    };
                    // A wildcard is covered only by the same wildcard.
                    let covered = held.iter().any(|r| {
                        r.allows(&request)
                            && (request.verb != "*" || r.verbs.iter().any(|v| v == "*"))
                            && (request.api_group != "*" || r.api_groups.iter().any(|g| g == "*"))
                            && (request.resource != "*" || r.resources.iter().any(|x| x == "*"))
                    });
                    if !covered {
                        return false;
                    }
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            resource_request: true,
            ..Default::default()
        }
    }

    #[test]
    fn rule_matching() {
        let rule = Rule::from_json(
            &json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
        );
        assert!(rule.allows(&attrs("get", "", "pods", "", "a")));
        assert!(rule.allows(&attrs("get", "", "pods", "log", "a")));
        assert!(!rule.allows(&attrs("get", "", "pods", "exec", "a")));
        assert!(!rule.allows(&attrs("delete", "", "pods", "", "a")));
        assert!(!rule.allows(&attrs("get", "apps", "pods", "", "a")));
        let star =
            Rule::from_json(&json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"]}));
        assert!(star.allows(&attrs("update", "apps", "deployments", "scale", "")));
        assert!(!star.allows(&attrs("update", "apps", "deployments", "", "")));
        let named = Rule::from_json(
            &json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["x"]}),
        );
        assert!(named.allows(&attrs("get", "", "configmaps", "", "x")));
        assert!(!named.allows(&attrs("get", "", "configmaps", "", "y")));
        assert!(!named.allows(&attrs("get", "", "configmaps", "", "")));
        let urls =
            Rule::from_json(&json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/api/*"]}));
        let path = |p: &str| Attributes {
            verb: "get".into(),
            path: p.into(),
            ..Default::default()
        };
        assert!(urls.allows(&path("/healthz")));
        assert!(urls.allows(&path("/api/v1")));
        assert!(!urls.allows(&path("/metrics")));
    }

    #[test]
    fn escalation_checks() {
        let held = vec![Rule::from_json(
            &json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}),
        )];
        let same =
            Rule::from_json(&json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}));
        let more = Rule::from_json(
            &json!({"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]}),
        );
        let wider =
            Rule::from_json(&json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}));
        assert!(covers(&held, &same));
        assert!(!covers(&held, &more));
        assert!(!covers(&held, &wider));
    }

    #[test]
    fn subjects() {
        let user = UserInfo {
            name: "system:serviceaccount:ns:robot".into(),
            uid: String::new(),
            groups: vec!["system:serviceaccounts".into()],
        };
        assert!(subject_matches(
            &json!({"kind": "ServiceAccount", "name": "robot", "namespace": "ns"}),
            &user,
            "other"
        ));
        assert!(subject_matches(
            &json!({"kind": "Group", "name": "system:serviceaccounts"}),
            &user,
            ""
        ));
        assert!(!subject_matches(
            &json!({"kind": "User", "name": "robot"}),
            &user,
            ""
        ));
    }
}
