//! The resources the API server serves, as controllers that act on every kind of object
//! (the garbage collector, the namespace controller) find them.

use kube::api::{Api, DynamicObject};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};
use kube::Client;

use crate::error::Result;

/// Resources such controllers leave alone: too many, owned by nothing, and gone with
/// their namespace anyway.
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// A served resource at its group's preferred version.
#[derive(Clone, Debug)]
pub struct ServedResource {
    pub api: ApiResource,
    pub caps: ApiCapabilities,
}

impl ServedResource {
    pub fn namespaced(&self) -> bool {
        self.caps.scope == Scope::Namespaced
    }

    /// `apiVersion/plural`: one key per resource.
    pub fn key(&self) -> String {
        format!("{}/{}", self.api.api_version, self.api.plural)
    }

    pub fn supports(&self, verb: &str) -> bool {
        self.caps.supports_operation(verb)
    }

    /// A client for the objects of this resource in `namespace` (everywhere if `None`, or
    /// if the resource is cluster-scoped).
    pub fn api(&self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        match (self.namespaced(), namespace) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), ns, &self.api),
            _ => Api::all_with(client.clone(), &self.api),
        }
    }
}

/// Every top-level resource (no subresources) at its group's preferred version that
/// supports all of `verbs`, except the ignored ones.
pub async fn served_resources(client: &Client, verbs: &[&str]) -> Result<Vec<ServedResource>> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut found = Vec::new();
    for group in discovery.groups() {
        for (api, caps) in group.recommended_resources() {
            let resource = ServedResource { api, caps };
            if resource.api.plural.contains('/')
                || IGNORED.contains(&(resource.api.group.as_str(), resource.api.plural.as_str()))
                || !verbs.iter().all(|verb| resource.supports(verb))
            {
                continue;
            }
            found.push(resource);
        }
    }
    Ok(found)
}
