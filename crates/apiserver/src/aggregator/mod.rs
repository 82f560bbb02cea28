//! API aggregation, as upstream's kube-aggregator does it inside the API server: an
//! `apiregistration.k8s.io/v1` APIService says which server serves a group version.
//! A local one (no `service`) is served here; a remote one names a Service, and every
//! request under `/apis/<group>/<version>` is authenticated and authorized here, then
//! passed to one of the Service's endpoints over TLS, with this server's front-proxy
//! client certificate and the user in `X-Remote-*` headers ([`proxy`]). The extension
//! server learns how to trust those headers from the `extension-apiserver-authentication`
//! ConfigMap ([`authentication`]).
//!
//! Every APIService has an `Available` condition: local ones always, remote ones when
//! their Service has a ready endpoint that answers the group version's discovery; the
//! same check keeps each remote group version's resource list for the discovery
//! documents ([`availability`]). APIServices for the built-in and custom groups are kept
//! by the server itself ([`local`]).

pub mod authentication;
pub mod availability;
pub mod local;
pub mod proxy;
pub mod validation;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::discovery::{RemoteGroup, RemoteVersion};
use crate::registry::Registry;

pub const GROUP: &str = "apiregistration.k8s.io";

/// Where APIServices are stored.
const PREFIX: &str = "/registry/apiregistration.k8s.io/apiservices/";

/// The name of the APIService for a group version: `<version>.<group>` (`v1.` for the
/// core group).
pub fn api_service_name(group: &str, version: &str) -> String {
    format!("{version}.{group}")
}

/// A remote APIService: where its group version's requests go and how the server there
/// is trusted.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    pub name: String,
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub service: String,
    pub port: i64,
    pub ca_bundle: Option<Vec<u8>>,
    pub insecure: bool,
    pub group_priority: i64,
    pub version_priority: i64,
    /// Whether its `Available` condition is `True`.
    pub available: bool,
}

impl Remote {
    /// The remote side of an APIService; `None` for a local one (or a malformed object,
    /// which validation keeps out of the store).
    pub fn from_api_service(api_service: &Value) -> Option<Remote> {
        use base64::Engine;
        let spec = api_service.get("spec")?;
        let service = spec.get("service").filter(|s| s.is_object())?;
        let text = |value: &Value, field: &str| {
            value
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let ca_bundle = spec
            .get("caBundle")
            .and_then(Value::as_str)
            .filter(|b| !b.is_empty())
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
        Some(Remote {
            name: crate::object::name(api_service).to_string(),
            group: text(spec, "group"),
            version: text(spec, "version"),
            namespace: text(service, "namespace"),
            service: text(service, "name"),
            port: service.get("port").and_then(Value::as_i64).unwrap_or(443),
            ca_bundle,
            insecure: spec.get("insecureSkipTLSVerify").and_then(Value::as_bool) == Some(true),
            group_priority: spec
                .get("groupPriorityMinimum")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            version_priority: spec
                .get("versionPriority")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            available: is_available(api_service),
        })
    }

    /// The name the server's certificate must carry, as upstream dials a Service.
    pub fn host(&self) -> String {
        format!("{}.{}.svc", self.service, self.namespace)
    }

    /// The TLS settings for this server: its CA bundle (or none checked), and the
    /// aggregator's client certificate.
    fn trust<'a>(
        &'a self,
        client_certificate: &'a skiff_pki::CertPair,
    ) -> crate::service_client::Trust<'a> {
        crate::service_client::Trust {
            ca_bundle: self.ca_bundle.as_deref(),
            insecure: self.insecure,
            client_certificate: Some((&client_certificate.cert_pem, &client_certificate.key_pem)),
        }
    }
}

fn is_available(api_service: &Value) -> bool {
    crate::object::condition(api_service, "Available")
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        == Some("True")
}

/// The aggregator's state: the client certificate it proxies with, and what each remote
/// group version's server last said it serves.
pub struct Aggregator {
    registry: Arc<Registry>,
    client_certificate: skiff_pki::CertPair,
    /// APIResourceLists by APIService name, from the last successful discovery check.
    discovered: RwLock<BTreeMap<String, Value>>,
}

impl Aggregator {
    pub fn new(registry: Arc<Registry>, client_certificate: skiff_pki::CertPair) -> Self {
        Aggregator {
            registry,
            client_certificate,
            discovered: RwLock::new(BTreeMap::new()),
        }
    }

    /// The remote APIService serving a request's path (`/apis/<group>/<version>/…`).
    /// Read from the watch cache on each request, so that a new APIService routes as
    /// soon as it is stored.
    pub fn remote_for(&self, path: &str) -> Option<Remote> {
        let mut segments = path.trim_start_matches('/').split('/');
        let (Some("apis"), Some(group), Some(version)) =
            (segments.next(), segments.next(), segments.next())
        else {
            return None;
        };
        if group.is_empty() || version.is_empty() {
            return None;
        }
        let key = format!("{PREFIX}{}", api_service_name(group, version));
        let stored = self.registry.cache.get(&key)?.value().ok()?;
        Remote::from_api_service(&stored)
    }

    /// Every remote APIService, from the watch cache.
    pub fn remotes(&self) -> Vec<Remote> {
        self.registry
            .cache
            .snapshot(PREFIX, None)
            .objects
            .iter()
            .filter_map(|o| o.value().ok())
            .filter_map(|o| Remote::from_api_service(&o))
            .collect()
    }

    fn discovered(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Value>> {
        self.discovered
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_discovered(&self, name: &str, resources: Option<Value>) {
        let mut discovered = self
            .discovered
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match resources {
            Some(list) => discovered.insert(name.to_string(), list),
            None => discovered.remove(name),
        };
    }

    /// The groups only remote servers serve, for the discovery documents: ordered as
    /// upstream orders them (highest `groupPriorityMinimum` first, then by name), each
    /// with its versions by `versionPriority`, then version order.
    pub fn remote_groups(&self, catalogue: &crate::resources::Catalogue) -> Vec<RemoteGroup> {
        let mut remotes = self.remotes();
        remotes.retain(|r| catalogue.versions(&r.group).is_none());
        let discovered = self.discovered();
        let mut groups: BTreeMap<String, (i64, Vec<Remote>)> = BTreeMap::new();
        for remote in remotes {
            let entry = groups
                .entry(remote.group.clone())
                .or_insert((remote.group_priority, Vec::new()));
            entry.0 = entry.0.max(remote.group_priority);
            entry.1.push(remote);
        }
        let mut groups: Vec<(String, (i64, Vec<Remote>))> = groups.into_iter().collect();
        groups.sort_by(|(a_name, (a, _)), (b_name, (b, _))| b.cmp(a).then(a_name.cmp(b_name)));
        groups
            .into_iter()
            .map(|(name, (_, mut versions))| {
                versions.sort_by(|a, b| {
                    b.version_priority.cmp(&a.version_priority).then_with(|| {
                        crate::crd::definition::compare_versions(&a.version, &b.version)
                    })
                });
                RemoteGroup {
                    name,
                    versions: versions
                        .into_iter()
                        .map(|r| RemoteVersion {
                            resources: discovered.get(&r.name).cloned(),
                            version: r.version,
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_remote_side_of_an_api_service() {
        let local = json!({"metadata": {"name": "v1.apps"}, "spec": {"group": "apps", "version": "v1", "groupPriorityMinimum": 17800, "versionPriority": 15}});
        assert_eq!(Remote::from_api_service(&local), None);
        let remote = json!({
            "metadata": {"name": "v1alpha1.wardle.example.com"},
            "spec": {"group": "wardle.example.com", "version": "v1alpha1", "groupPriorityMinimum": 2000, "versionPriority": 200,
                     "service": {"namespace": "sample", "name": "api"}, "caBundle": "Q0E="},
            "status": {"conditions": [{"type": "Available", "status": "True"}]},
        });
        let remote = Remote::from_api_service(&remote).unwrap();
        assert_eq!(remote.host(), "api.sample.svc");
        assert_eq!(remote.port, 443);
        assert_eq!(remote.ca_bundle.as_deref(), Some(&b"CA"[..]));
        assert!(remote.available && !remote.insecure);
        assert_eq!(
            api_service_name("wardle.example.com", "v1alpha1"),
            "v1alpha1.wardle.example.com"
        );
        assert_eq!(api_service_name("", "v1"), "v1.");
    }
}
