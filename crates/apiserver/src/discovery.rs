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

/// A group only extension API servers serve (through the aggregator): its versions,
/// preferred first.
pub struct RemoteGroup {
    pub name: String,
    pub versions: Vec<RemoteVersion>,
}

pub struct RemoteVersion {
    pub version: String,
    /// The `APIResourceList` its server last answered discovery with; `None` until
    /// it has.
    pub resources: Option<Value>,
}

impl RemoteGroup {
    fn version_names(&self) -> Vec<String> {
        self.versions.iter().map(|v| v.version.clone()).collect()
    }
}

pub fn api_group_list(catalogue: &Catalogue, remote: &[RemoteGroup]) -> Value {
    let mut groups: Vec<Value> = catalogue
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, v)| group_entry(g, v))
        .collect();
    groups.extend(
        remote
            .iter()
            .map(|g| group_entry(&g.name, &g.version_names())),
    );
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(catalogue: &Catalogue, remote: &[RemoteGroup], group: &str) -> Option<Value> {
    let versions = catalogue.versions(group).or_else(|| {
        remote
            .iter()
            .find(|g| g.name == group)
            .map(RemoteGroup::version_names)
    })?;
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
        "proxy" => &["create", "delete", "get", "patch", "update"],
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
        "proxy" => match resource.kind.as_str() {
            "Pod" => ("", "v1", "PodProxyOptions"),
            "Service" => ("", "v1", "ServiceProxyOptions"),
            _ => ("", "v1", "NodeProxyOptions"),
        },
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

/// The aggregated (v2) form of a group version's `APIResourceList`: each resource with
/// its subresources (`pods/status`) folded into it. One conversion serves this server's
/// own lists and those extension servers answer.
fn v2_resources(list: &Value) -> Vec<Value> {
    let (group, version) = match list
        .get("groupVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split_once('/')
    {
        Some((group, version)) => (group.to_string(), version.to_string()),
        None => (
            String::new(),
            list.get("groupVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
    };
    let entries = list
        .get("resources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let text = |entry: &Value, field: &str| {
        entry
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let response_kind = |entry: &Value| {
        let group = entry.get("group").and_then(Value::as_str).unwrap_or(&group);
        let version = entry
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or(&version);
        json!({"group": group, "version": version, "kind": text(entry, "kind")})
    };
    let mut resources: Vec<Map<String, Value>> = Vec::new();
    for entry in &entries {
        let name = text(entry, "name");
        if let Some((parent, sub)) = name.split_once('/') {
            let subresource = json!({
                "subresource": sub,
                "responseKind": response_kind(entry),
                "verbs": entry.get("verbs").cloned().unwrap_or(json!([])),
            });
            if let Some(parent) = resources
                .iter_mut()
                .find(|r| r.get("resource").and_then(Value::as_str) == Some(parent))
            {
                match parent.get_mut("subresources").and_then(Value::as_array_mut) {
                    Some(subs) => subs.push(subresource),
                    None => {
                        parent.insert("subresources".into(), json!([subresource]));
                    }
                }
            }
            continue;
        }
        let mut resource = Map::new();
        resource.insert("resource".into(), json!(name));
        resource.insert("responseKind".into(), response_kind(entry));
        let namespaced = entry.get("namespaced").and_then(Value::as_bool) == Some(true);
        resource.insert(
            "scope".into(),
            json!(if namespaced { "Namespaced" } else { "Cluster" }),
        );
        resource.insert(
            "singularResource".into(),
            json!(text(entry, "singularName")),
        );
        resource.insert(
            "verbs".into(),
            entry.get("verbs").cloned().unwrap_or(json!([])),
        );
        for field in ["shortNames", "categories"] {
            if let Some(values) = entry
                .get(field)
                .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
            {
                resource.insert(field.into(), values.clone());
            }
        }
        resources.push(resource);
    }
    resources.into_iter().map(Value::Object).collect()
}

fn v2_version(version: &str, list: &Value) -> Value {
    json!({"version": version, "resources": v2_resources(list), "freshness": "Current"})
}

fn v2_group(group: &str, versions: Vec<Value>) -> Value {
    let metadata = if group.is_empty() {
        json!({"creationTimestamp": null})
    } else {
        json!({"name": group, "creationTimestamp": null})
    };
    json!({"metadata": metadata, "versions": versions})
}

/// The aggregated discovery document for the core group (`/api`) or the named groups
/// (`/apis`, this server's own groups, then the remote ones that have answered).
pub fn aggregated(catalogue: &Catalogue, core: bool, remote: &[RemoteGroup]) -> Value {
    let mut items: Vec<Value> = catalogue
        .groups()
        .iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(group, versions)| {
            let versions = versions
                .iter()
                .filter_map(|v| {
                    api_resource_list(catalogue, group, v).map(|list| v2_version(v, &list))
                })
                .collect();
            v2_group(group, versions)
        })
        .collect();
    if !core {
        items.extend(remote.iter().filter_map(|group| {
            let versions: Vec<Value> = group
                .versions
                .iter()
                .filter_map(|v| Some(v2_version(&v.version, v.resources.as_ref()?)))
                .collect();
            (!versions.is_empty()).then(|| v2_group(&group.name, versions))
        }));
    }
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
        let core = aggregated(&catalogue, true, &[]);
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
        let first = &pods["subresources"].as_array().unwrap()[0];
        assert_eq!(first["subresource"], "attach");
        let eviction = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "eviction")
            .unwrap();
        assert_eq!(
            eviction["responseKind"],
            json!({"group": "policy", "version": "v1", "kind": "Eviction"})
        );
        let groups = aggregated(&catalogue, false, &[]);
        assert!(groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["metadata"]["name"] == "apps"));
    }

    #[test]
    fn remote_groups_join_the_documents_once_they_answered() {
        let catalogue = Catalogue::new();
        let list = json!({"kind": "APIResourceList", "groupVersion": "wardle.example.com/v1alpha1", "resources": [
            {"name": "flunders", "singularName": "flunder", "namespaced": true, "kind": "Flunder", "verbs": ["get", "list"], "shortNames": ["fl"]},
            {"name": "flunders/status", "singularName": "", "namespaced": true, "kind": "Flunder", "verbs": ["get"]},
        ]});
        let remote = [RemoteGroup {
            name: "wardle.example.com".into(),
            versions: vec![
                RemoteVersion {
                    version: "v1beta1".into(),
                    resources: None,
                },
                RemoteVersion {
                    version: "v1alpha1".into(),
                    resources: Some(list),
                },
            ],
        }];
        let legacy = api_group_list(&catalogue, &remote);
        let wardle = legacy["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "wardle.example.com")
            .unwrap();
        assert_eq!(wardle["preferredVersion"]["version"], "v1beta1");
        assert_eq!(
            api_group(&catalogue, &remote, "wardle.example.com").unwrap()["versions"][1]
                ["groupVersion"],
            "wardle.example.com/v1alpha1"
        );
        let document = aggregated(&catalogue, false, &remote);
        let item = document["items"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        assert_eq!(item["metadata"]["name"], "wardle.example.com");
        // Only the version that answered.
        assert_eq!(item["versions"].as_array().unwrap().len(), 1);
        let flunders = &item["versions"][0]["resources"][0];
        assert_eq!(
            flunders["responseKind"],
            json!({"group": "wardle.example.com", "version": "v1alpha1", "kind": "Flunder"})
        );
        assert_eq!(flunders["scope"], "Namespaced");
        assert_eq!(flunders["shortNames"], json!(["fl"]));
        assert_eq!(flunders["subresources"][0]["subresource"], "status");
    }
}
