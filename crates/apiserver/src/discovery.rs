//! Discovery: `/version`, `/api`, `/apis`, per-group and per-version resource lists, the
//! aggregated discovery document (`apidiscovery.k8s.io/v2`) kubectl asks for first. (The
//! OpenAPI documents are [`crate::openapi`]'s.)

use serde_json::{json, Map, Value};

use crate::resources::{group_version, Catalogue, ResourceInfo};

pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "37",
        "emulationMajor": "1",
        "emulationMinor": "37",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "36",
        "gitVersion": concat!("v1.37.0-skiff.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn api_group_list(catalogue: &Catalogue) -> Value {
    let groups: Vec<Value> = catalogue
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| group_entry(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(catalogue: &Catalogue, group: &str) -> Option<Value> {
    let versions = catalogue.versions(group)?;
    let mut entry = group_entry(group, &versions);
    let fields = entry.as_object_mut()?;
    let mut out = Map::new();
    out.insert("kind".into(), json!("APIGroup"));
    out.insert("apiVersion".into(), json!("v1"));
    out.append(fields);
    Some(Value::Object(out))
}

fn subresource_verbs(name: &str) -> &'static [&'static str] {
    match name {
        "binding" | "eviction" | "token" => &["create"],
        "log" => &["get"],
        // Streams: a WebSocket handshake is a GET, a SPDY one a POST.
        "attach" | "exec" | "portforward" => &["create", "get"],
        // Only GETs are passed on so far.
        "proxy" => &["get"],
        _ => &["get", "patch", "update"],
    }
}

fn subresource_kind<'a>(resource: &'a ResourceInfo, name: &str) -> (&'a str, &'a str, &'a str) {
    match name {
        "scale" => ("autoscaling", "v1", "Scale"),
        "binding" => ("", "v1", "Binding"),
        "eviction" => ("policy", "v1", "Eviction"),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
        "attach" => ("", "v1", "PodAttachOptions"),
        "exec" => ("", "v1", "PodExecOptions"),
        "portforward" => ("", "v1", "PodPortForwardOptions"),
        "proxy" => ("", "v1", "NodeProxyOptions"),
        "log" => ("", "v1", "Pod"),
        _ => (&resource.group, &resource.version, &resource.kind),
    }
}

pub fn api_resource_list(catalogue: &Catalogue, group: &str, version: &str) -> Option<Value> {
    catalogue
        .versions(group)?
        .iter()
        .any(|v| v == version)
        .then_some(())?;
    let mut resources = Vec::new();
    for r in catalogue.in_group_version(group, version) {
        let mut entry = Map::new();
        entry.insert("name".into(), json!(r.plural));
        entry.insert("singularName".into(), json!(r.singular));
        entry.insert("namespaced".into(), json!(r.namespaced));
        entry.insert("kind".into(), json!(r.kind));
        entry.insert("verbs".into(), json!(r.verbs()));
        if !r.short_names.is_empty() {
            entry.insert("shortNames".into(), json!(r.short_names));
        }
        if !r.categories.is_empty() {
            entry.insert("categories".into(), json!(r.categories));
        }
        resources.push(Value::Object(entry));
        for sub in &r.subresources {
            let (g, v, k) = subresource_kind(&r, sub);
            let mut entry = Map::new();
            entry.insert("name".into(), json!(format!("{}/{sub}", r.plural)));
            entry.insert("singularName".into(), json!(""));
            entry.insert("namespaced".into(), json!(r.namespaced));
            // Named only where the subresource's kind lives in another group version
            // (kubectl drain finds policy/v1 evictions this way).
            if (g, v) != (&r.group, &r.version) {
                entry.insert("group".into(), json!(g));
                entry.insert("version".into(), json!(v));
            }
            entry.insert("kind".into(), json!(k));
            entry.insert("verbs".into(), json!(subresource_verbs(sub)));
            resources.push(Value::Object(entry));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    }))
}

fn discovery_resource(r: &ResourceInfo) -> Value {
    let mut entry = Map::new();
    entry.insert("resource".into(), json!(r.plural));
    entry.insert(
        "responseKind".into(),
        json!({"group": r.group, "version": r.version, "kind": r.kind}),
    );
    entry.insert(
        "scope".into(),
        json!(if r.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        }),
    );
    entry.insert("singularResource".into(), json!(r.singular));
    entry.insert("verbs".into(), json!(r.verbs()));
    if !r.short_names.is_empty() {
        entry.insert("shortNames".into(), json!(r.short_names));
    }
    if !r.categories.is_empty() {
        entry.insert("categories".into(), json!(r.categories));
    }
    if !r.subresources.is_empty() {
        let subs: Vec<Value> = r
            .subresources
            .iter()
            .map(|sub| {
                let (g, v, k) = subresource_kind(r, sub);
                json!({
                    "subresource": sub,
                    "responseKind": {"group": g, "version": v, "kind": k},
                    "verbs": subresource_verbs(sub),
                })
            })
            .collect();
        entry.insert("subresources".into(), Value::Array(subs));
    }
    Value::Object(entry)
}

/// The aggregated discovery document for the core group (`/api`) or the named groups (`/apis`).
pub fn aggregated(catalogue: &Catalogue, core: bool) -> Value {
    let items: Vec<Value> = catalogue
        .groups()
        .iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = catalogue
                        .in_group_version(group, v)
                        .iter()
                        .map(|r| discovery_resource(r))
                        .collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let metadata = if group.is_empty() {
                json!({"creationTimestamp": null})
            } else {
                json!({"name": group, "creationTimestamp": null})
            };
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_lists_core_and_groups() {
        let catalogue = Catalogue::new();
        let core = aggregated(&catalogue, true);
        assert_eq!(core["items"].as_array().unwrap().len(), 1);
        let pods = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap()
            .clone();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["scope"], "Namespaced");
        let groups = aggregated(&catalogue, false);
        assert!(groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["metadata"]["name"] == "apps"));
    }
}
