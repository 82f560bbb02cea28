//! Upstream's Node authorizer: a kubelet, authenticated as `system:node:<name>` in the
//! group `system:nodes`, may do what every kubelet needs ([`node_rules`]), but may read
//! secrets, config maps, volumes, pods and service-account tokens only where a pod bound
//! to its node refers to them, may list and watch only its own pods, and may touch only
//! its own node lease. The graph upstream keeps is read here from the watch cache, pod by
//! pod, when a kubelet asks.
//!
//! What a kubelet may *write* to nodes and pods is narrowed further by the NodeRestriction
//! admission plugin (`noderestriction.rs`).

use std::collections::BTreeSet;

use serde_json::Value;

use super::components::node_rules;
use super::rbac::Rule;
use super::Attributes;
use crate::auth::UserInfo;
use crate::cache::WatchCache;

/// Every kubelet's rights, parsed once: kubelets' requests come through here all the time.
static NODE_RULES: std::sync::LazyLock<Vec<Rule>> =
    std::sync::LazyLock::new(|| node_rules().iter().map(Rule::from_json).collect());

/// The node a user is the kubelet of, if it is one.
pub fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    let in_group = user.groups.iter().any(|g| g == "system:nodes");
    (in_group && !name.is_empty()).then_some(name)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not allowed here, for this reason (other authorizers may still allow).
    NoOpinion(Option<String>),
}

fn no_relationship(node: &str) -> Decision {
    Decision::NoOpinion(Some(format!(
        "no relationship found between node '{node}' and this object"
    )))
}

pub fn decide(cache: &WatchCache, user: &UserInfo, request: &Attributes) -> Decision {
    let Some(node) = node_of(user) else {
        return Decision::NoOpinion(None);
    };
    if !request.resource_request {
        return Decision::NoOpinion(None);
    }
    let graph = Graph { cache, node };
    let (group, resource, sub) = (
        request.api_group.as_str(),
        request.resource.as_str(),
        request.subresource.as_str(),
    );
    match (group, resource, sub) {
        ("", "secrets" | "configmaps" | "persistentvolumeclaims", "")
        | ("", "persistentvolumes", "")
        | ("storage.k8s.io", "volumeattachments", "") => {
            if request.verb != "get" {
                return Decision::NoOpinion(Some(
                    "can only get individual resources of this type".into(),
                ));
            }
            graph.related(request)
        }
        ("", "persistentvolumeclaims", "status") => match request.verb.as_str() {
            "get" | "update" | "patch" => graph.related(request),
            _ => Decision::NoOpinion(Some(
                "can only get, update or patch the status of persistent volume claims".into(),
            )),
        },
        ("", "serviceaccounts", "token") => {
            if request.verb != "create" {
                return Decision::NoOpinion(Some("can only create tokens".into()));
            }
            graph.related(request)
        }
        ("", "pods", "") if matches!(request.verb.as_str(), "list" | "watch") => {
            let wanted = format!("spec.nodeName={node}");
            let selected = request.field_selector.split(',').any(|term| {
                term.trim() == wanted || term.trim() == format!("spec.nodeName=={node}")
            });
            if selected {
                Decision::Allow
            } else {
                Decision::NoOpinion(Some(
                    "can only list/watch pods with spec.nodeName field selector".into(),
                ))
            }
        }
        ("", "pods", "") if request.verb == "get" => graph.related(request),
        ("coordination.k8s.io", "leases", "") => {
            let own = request.namespace == "kube-node-lease" && request.name == node;
            let verb_ok = matches!(
                request.verb.as_str(),
                "get" | "create" | "update" | "patch" | "delete"
            );
            // A create names no object in its path: the admission plugin checks its name.
            if verb_ok && (own || (request.verb == "create" && request.name.is_empty())) {
                Decision::Allow
            } else {
                Decision::NoOpinion(Some(
                    "can only access node lease with the same name as the requesting node".into(),
                ))
            }
        }
        ("storage.k8s.io", "csinodes", "") => {
            if request.name == node || (request.verb == "create" && request.name.is_empty()) {
                Decision::Allow
            } else {
                Decision::NoOpinion(Some(
                    "can only access CSINode with the same name as the requesting node".into(),
                ))
            }
        }
        _ => {
            if NODE_RULES.iter().any(|rule| rule.allows(request)) {
                Decision::Allow
            } else {
                Decision::NoOpinion(None)
            }
        }
    }
}

/// The part of upstream's node graph one request needs: the pods bound to the node.
struct Graph<'a> {
    cache: &'a WatchCache,
    node: &'a str,
}

impl Graph<'_> {
    /// The node's pods in `namespace` (every namespace when empty).
    fn pods_in(&self, namespace: &str) -> Vec<Value> {
        let prefix = match namespace {
            "" => "/registry/pods/".to_string(),
            ns => format!("/registry/pods/{ns}/"),
        };
        self.cache
            .snapshot(&prefix, None)
            .objects
            .iter()
            .filter_map(|o| o.value().ok())
            .filter(|pod| pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(self.node))
            .collect()
    }

    fn related(&self, request: &Attributes) -> Decision {
        let related = match (request.resource.as_str(), request.subresource.as_str()) {
            ("pods", _) => self
                .cache
                .get(&format!(
                    "/registry/pods/{}/{}",
                    request.namespace, request.name
                ))
                .and_then(|o| o.value().ok())
                .is_some_and(|pod| {
                    pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(self.node)
                }),
            ("serviceaccounts", _) => self.pods_in(&request.namespace).iter().any(|pod| {
                let account = pod
                    .pointer("/spec/serviceAccountName")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                    .unwrap_or("default");
                account == request.name
            }),
            ("persistentvolumes" | "volumeattachments", _) => self.volume_related(request),
            (kind, _) => self
                .pods_in(&request.namespace)
                .iter()
                .any(|pod| references(pod, kind).contains(&request.name)),
        };
        if related {
            Decision::Allow
        } else {
            no_relationship(self.node)
        }
    }

    /// Persistent volumes are reached through the claims of the node's pods (attachments
    /// name the volume they attach, and the node).
    fn volume_related(&self, request: &Attributes) -> bool {
        if request.resource == "volumeattachments" {
            return self
                .cache
                .get(&format!("/registry/volumeattachments/{}", request.name))
                .and_then(|o| o.value().ok())
                .is_some_and(|a| {
                    a.pointer("/spec/nodeName").and_then(Value::as_str) == Some(self.node)
                });
        }
        let pods = self.pods_in("");
        pods.iter().any(|pod| {
            let namespace = crate::object::namespace(pod).unwrap_or_default();
            references(pod, "persistentvolumeclaims")
                .into_iter()
                .filter_map(|claim| {
                    self.cache
                        .get(&format!(
                            "/registry/persistentvolumeclaims/{namespace}/{claim}"
                        ))
                        .and_then(|o| o.value().ok())
                })
                .any(|claim| {
                    claim.pointer("/spec/volumeName").and_then(Value::as_str)
                        == Some(request.name.as_str())
                })
        })
    }
}

/// The names of the `kind` objects (`secrets`, `configmaps`, `persistentvolumeclaims`) a
/// pod refers to, wherever its spec can name one.
pub fn references(pod: &Value, kind: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(spec) = pod.get("spec") else {
        return names;
    };
    let name_at = |v: &Value, pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let volumes = spec.get("volumes").and_then(Value::as_array);
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|field| spec.get(*field).and_then(Value::as_array))
        .flatten();
    match kind {
        "secrets" | "configmaps" => {
            let secrets = kind == "secrets";
            if secrets {
                for reference in spec
                    .get("imagePullSecrets")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    names.extend(name_at(reference, "/name"));
                }
            }
            for volume in volumes.into_iter().flatten() {
                if secrets {
                    names.extend(name_at(volume, "/secret/secretName"));
                    // Volume plugins that take credentials name them as a secretRef.
                    if let Some(fields) = volume.as_object() {
                        for source in fields.values() {
                            names.extend(name_at(source, "/secretRef/name"));
                            names.extend(name_at(source, "/nodePublishSecretRef/name"));
                        }
                    }
                } else {
                    names.extend(name_at(volume, "/configMap/name"));
                }
                let projected = volume
                    .pointer("/projected/sources")
                    .and_then(Value::as_array);
                for source in projected.into_iter().flatten() {
                    let pointer = if secrets {
                        "/secret/name"
                    } else {
                        "/configMap/name"
                    };
                    names.extend(name_at(source, pointer));
                }
            }
            let (env_pointer, from_pointer) = if secrets {
                ("/valueFrom/secretKeyRef/name", "/secretRef/name")
            } else {
                ("/valueFrom/configMapKeyRef/name", "/configMapRef/name")
            };
            for container in containers {
                for env in container
                    .get("env")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    names.extend(name_at(env, env_pointer));
                }
                for from in container
                    .get("envFrom")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    names.extend(name_at(from, from_pointer));
                }
            }
        }
        "persistentvolumeclaims" => {
            let pod_name = crate::object::name(pod);
            for volume in volumes.into_iter().flatten() {
                names.extend(name_at(volume, "/persistentVolumeClaim/claimName"));
                // An ephemeral volume's claim is named after the pod and the volume.
                if volume.get("ephemeral").is_some() {
                    if let Some(volume_name) = name_at(volume, "/name") {
                        names.insert(format!("{pod_name}-{volume_name}"));
                    }
                }
            }
        }
        _ => {}
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> UserInfo {
        UserInfo::authenticated(
            format!("system:node:{name}"),
            String::new(),
            vec!["system:nodes".into()],
        )
    }

    #[test]
    fn only_kubelets_are_nodes() {
        assert_eq!(node_of(&node("n1")), Some("n1"));
        let impostor = UserInfo::authenticated("system:node:n1".into(), String::new(), vec![]);
        assert_eq!(node_of(&impostor), None);
    }

    #[test]
    fn every_place_a_pod_names_a_secret_or_config_map() {
        let pod = json!({"spec": {
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol"}},
                {"name": "b", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "cm-proj"}}]}},
                {"name": "c", "configMap": {"name": "cm-vol"}},
                {"name": "d", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "csi"}}},
                {"name": "e", "persistentVolumeClaim": {"claimName": "data"}},
            ],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-from"}}]}],
            "containers": [{"name": "c", "env": [
                {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm-env", "key": "k"}}},
            ], "envFrom": [{"configMapRef": {"name": "cm-from"}}]}],
        }});
        let secrets: Vec<String> = references(&pod, "secrets").into_iter().collect();
        assert_eq!(secrets, ["csi", "env", "init-from", "proj", "pull", "vol"]);
        let maps: Vec<String> = references(&pod, "configmaps").into_iter().collect();
        assert_eq!(maps, ["cm-env", "cm-from", "cm-proj", "cm-vol"]);
        let claims: Vec<String> = references(&pod, "persistentvolumeclaims")
            .into_iter()
            .collect();
        assert_eq!(claims, ["data"]);
    }

    #[test]
    fn node_rules_cover_what_kubelets_write_and_nothing_else() {
        let allows = |verb: &str, group: &str, resource: &str, sub: &str| {
            let request = Attributes {
                verb: verb.into(),
                api_group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                resource_request: true,
                ..Default::default()
            };
            node_rules()
                .iter()
                .map(Rule::from_json)
                .any(|r| r.allows(&request))
        };
        assert!(allows("patch", "", "nodes", "status"));
        assert!(allows("create", "", "events", ""));
        assert!(allows("update", "", "pods", "status"));
        assert!(!allows("create", "", "secrets", ""));
        assert!(!allows("delete", "", "namespaces", ""));
        assert!(!allows(
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            ""
        ));
    }
}
