//! Authorization: what a request asks to do ([`Attributes`]), and whether its user may.
//!
//! The Node authorizer ([`node`]) speaks first, for kubelets; then the RBAC authorizer
//! ([`rbac`]) decides from the Roles, ClusterRoles and bindings in the watch cache, so a
//! new binding takes effect as soon as it is stored. Members of
//! `system:masters` are allowed everything without a lookup, as upstream allows them.
//! [`bootstrap`] holds the roles and bindings every cluster starts with.

pub mod bootstrap;
pub mod components;
pub mod controller_roles;
pub mod node;
pub mod rbac;
pub mod review;

use crate::auth::UserInfo;

/// What a request does, in the terms RBAC rules speak.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    pub verb: String,
    /// For resource requests.
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// For everything else (`/healthz`, `/api`, ...).
    pub path: String,
    pub resource_request: bool,
    /// A list's or watch's field selector, as sent (the Node authorizer reads it).
    pub field_selector: String,
}

impl Attributes {
    /// Upstream's explanation of a denial, as clients print it, with the authorizer's
    /// reason if it gave one.
    pub fn forbidden_message_because(&self, user: &UserInfo, reason: Option<&str>) -> String {
        match reason {
            Some(reason) => format!("{}: {reason}", self.forbidden_message(user)),
            None => self.forbidden_message(user),
        }
    }

    /// Upstream's explanation of a denial, as clients print it.
    pub fn forbidden_message(&self, user: &UserInfo) -> String {
        if !self.resource_request {
            return format!(
                "forbidden: User \"{}\" cannot {} path \"{}\"",
                user.name, self.verb, self.path
            );
        }
        let resource = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        let subject = match (self.api_group.is_empty(), self.name.is_empty()) {
            (true, true) => resource.clone(),
            (false, true) => format!("{}.{}", self.resource, self.api_group),
            (true, false) => format!("{} \"{}\"", resource, self.name),
            (false, false) => format!("{}.{} \"{}\"", self.resource, self.api_group, self.name),
        };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", self.namespace)
        };
        format!(
            "{subject} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            user.name, self.verb, self.api_group
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_messages_as_upstream() {
        let user = UserInfo {
            name: "x".into(),
            uid: String::new(),
            groups: vec![],
        };
        let list = Attributes {
            verb: "list".into(),
            resource: "pods".into(),
            namespace: "y".into(),
            resource_request: true,
            ..Default::default()
        };
        assert_eq!(
            list.forbidden_message(&user),
            "pods is forbidden: User \"x\" cannot list resource \"pods\" in API group \"\" in the namespace \"y\""
        );
        let get = Attributes {
            verb: "get".into(),
            api_group: "apps".into(),
            resource: "deployments".into(),
            name: "web".into(),
            resource_request: true,
            ..Default::default()
        };
        assert_eq!(
            get.forbidden_message(&user),
            "deployments.apps \"web\" is forbidden: User \"x\" cannot get resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
    }
}
