//! Container environment: `envFrom`, `env` with `valueFrom`, and upstream's
//! `$(VAR)` expansion. Pure: the pod worker fetches the ConfigMaps and
//! Secrets first ([`Sources`]), so everything here is unit-tested.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod, Service};

use skiff_quantity::parse_milli;

/// The data of the ConfigMaps and Secrets a pod refers to, by name; `None`
/// for one that does not exist (so `optional` can be honoured). And the service-account
/// tokens its projected volumes hold, by [`token_key`].
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, String>>>,
    pub tokens: HashMap<String, String>,
    /// The Service variables every container starts with ([`service_env`]).
    pub service_env: Vec<(String, String)>,
}

/// Which token of which volume: `volume/path`.
pub fn token_key(volume: &str, path: &str) -> String {
    format!("{volume}/{path}")
}

/// Facts about the running pod that `fieldRef` can read but the spec lacks.
#[derive(Debug, Default, Clone)]
pub struct PodFacts {
    pub pod_ip: String,
    pub pod_ips: Vec<String>,
    pub host_ip: String,
    pub node_allocatable_cpu_millis: i64,
    pub node_allocatable_memory: i64,
}

/// Expands `$(VAR)` references in `input` from `lookup`, as upstream's
/// `third_party/forked/golang/expansion` does: `$$` is an escaped `$`,
/// unknown or unterminated references are kept as written.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let bytes = input.as_bytes();
    let mut i = 0;
    let mut literal_start = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            out.push_str(&input[literal_start..i]);
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                }
                b'(' => match input[i + 2..].find(')') {
                    Some(end) => {
                        let name = &input[i + 2..i + 2 + end];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        i += 2 + end + 1;
                    }
                    None => {
                        // Unterminated: the rest is literal.
                        out.push_str(&input[i..]);
                        i = bytes.len();
                    }
                },
                _ => {
                    out.push('$');
                    i += 1;
                }
            }
            literal_start = i;
        } else {
            i += 1;
        }
    }
    if literal_start < bytes.len() {
        out.push_str(&input[literal_start..]);
    }
    out
}

/// An ordered map: later definitions replace earlier ones in place, as the
/// kubelet's env building does (envFrom first, then env).
#[derive(Default)]
struct EnvList {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl EnvList {
    fn set(&mut self, k: String, v: String) {
        if !self.values.contains_key(&k) {
            self.order.push(k.clone());
        }
        self.values.insert(k, v);
    }
    fn into_vec(mut self) -> Vec<(String, String)> {
        self.order
            .into_iter()
            .filter_map(|k| self.values.remove(&k).map(|v| (k, v)))
            .collect()
    }
}

/// The environment of `container` in `pod`. An error is the message of a
/// `CreateContainerConfigError` (upstream's wording).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, String> {
    let mut env = EnvList::default();
    // First, so that the container's own variables override them and can refer to them.
    for (k, v) in &sources.service_env {
        env.set(k.clone(), v.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(cm) = &from.config_map_ref {
            let name = &cm.name;
            match sources.config_maps.get(name).cloned().flatten() {
                Some(data) => {
                    for (k, v) in data {
                        env.set(format!("{prefix}{k}"), v);
                    }
                }
                None if cm.optional == Some(true) => {}
                None => return Err(format!("configmap \"{name}\" not found")),
            }
        }
        if let Some(s) = &from.secret_ref {
            let name = &s.name;
            match sources.secrets.get(name).cloned().flatten() {
                Some(data) => {
                    for (k, v) in data {
                        env.set(format!("{prefix}{k}"), v);
                    }
                }
                None if s.optional == Some(true) => {}
                None => return Err(format!("secret \"{name}\" not found")),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(r) = &from.config_map_key_ref {
                match sources.config_maps.get(&r.name).cloned().flatten() {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                r.key,
                                namespace(pod),
                                r.name
                            ))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("configmap \"{}\" not found", r.name)),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match sources.secrets.get(&r.name).cloned().flatten() {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {}/{}",
                                r.key,
                                namespace(pod),
                                r.name
                            ))
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("secret \"{}\" not found", r.name)),
                }
            } else if let Some(f) = &from.field_ref {
                field_value(pod, &f.field_path, facts)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(container, &r.resource, r.divisor.as_ref(), facts)?
            } else {
                String::new()
            }
        } else {
            let current = &env.values;
            expand(var.value.as_deref().unwrap_or(""), &|name| {
                current.get(name).cloned()
            })
        };
        env.set(var.name.clone(), value);
    }
    Ok(env.into_vec())
}

/// The Service variables of a pod (upstream's `getServiceEnvVarMap` and
/// `envvars.FromServices`): for the `kubernetes` Service of `default` always, and, unless
/// the pod sets `enableServiceLinks: false`, for every Service of its namespace with a
/// cluster IP, `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT[_<PORT>]` and the Docker-link
/// `<NAME>_PORT*` variables. Sorted by Service name, so a container's environment does
/// not change with the order Services were listed in.
pub fn service_env(pod: &Pod, services: &[&Service]) -> Vec<(String, String)> {
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let ns = namespace(pod);
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in services {
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let service_ns = service.metadata.namespace.as_deref().unwrap_or_default();
        if !has_cluster_ip(service) {
            continue;
        }
        if service_ns == "default" && name == "kubernetes" {
            // A Service of the pod's own namespace of that name wins.
            chosen.entry(name).or_insert(service);
        } else if links && service_ns == ns {
            chosen.insert(name, service);
        }
    }
    let mut env = Vec::new();
    for (name, service) in chosen {
        let spec = service.spec.clone().unwrap_or_default();
        let ip = spec.cluster_ip.unwrap_or_default();
        let prefix = env_name(name);
        let ports = spec.ports.unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        env.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        env.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for port in &ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                env.push((
                    format!("{prefix}_SERVICE_PORT_{}", env_name(port_name)),
                    port.port.to_string(),
                ));
            }
        }
        let protocol = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        let url = |p: &k8s_openapi::api::core::v1::ServicePort| {
            format!("{}://{ip}:{}", protocol(p).to_lowercase(), p.port)
        };
        env.push((format!("{prefix}_PORT"), url(first)));
        for port in &ports {
            let link = format!(
                "{prefix}_PORT_{}_{}",
                port.port,
                protocol(port).to_uppercase()
            );
            env.push((link.clone(), url(port)));
            env.push((format!("{link}_PROTO"), protocol(port).to_lowercase()));
            env.push((format!("{link}_PORT"), port.port.to_string()));
            env.push((format!("{link}_ADDR"), ip.clone()));
        }
    }
    env
}

fn has_cluster_ip(service: &Service) -> bool {
    let ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    !matches!(ip, None | Some("") | Some("None"))
}

/// A Service or port name as an environment variable name: upper case, `-` as `_`.
fn env_name(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// A `fieldRef` value (the paths upstream's downward API supports).
pub fn field_value(pod: &Pod, path: &str, facts: &PodFacts) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let bracketed = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => namespace(pod).to_string(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => facts.host_ip.clone(),
        "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" => facts.pod_ip.clone(),
        "status.podIPs" => facts.pod_ips.join(","),
        _ => {
            if let Some(k) = bracketed("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = bracketed("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldPath: {path}"));
            }
        }
    })
}

/// `k="v"` lines, sorted, as the downward API volume writes maps.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// A `resourceFieldRef` value: the container's limit or request divided by
/// the divisor and rounded up; limits default to the node's allocatable.
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    facts: &PodFacts,
) -> Result<String, String> {
    let res = container.resources.as_ref();
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {resource}"))?;
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported container resource : {resource}")),
    };
    // In thousandths, so that CPU fractions divide exactly.
    let value = map
        .and_then(|m| m.get(name))
        .and_then(|q| parse_milli(&q.0).ok());
    let value = match (value, name) {
        (Some(v), _) => v,
        (None, "cpu") if kind == "limits" => facts.node_allocatable_cpu_millis,
        (None, "memory") if kind == "limits" => facts.node_allocatable_memory.saturating_mul(1000),
        (None, _) => 0,
    };
    let divisor = divisor
        .and_then(|d| parse_milli(&d.0).ok())
        .filter(|d| *d > 0)
        .unwrap_or(1000);
    // Rounded up, as upstream's downward API writes resources.
    Ok(format!("{}", (value + divisor - 1).div_euclid(divisor)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector,
    };

    fn lookup(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "B" => Some("b".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_upstream() {
        assert_eq!(expand("$(A)-$(B)", &lookup), "a-b");
        assert_eq!(expand("$$(A)", &lookup), "$(A)");
        assert_eq!(expand("$(C)", &lookup), "$(C)");
        assert_eq!(expand("x$(A", &lookup), "x$(A");
        assert_eq!(expand("$A $", &lookup), "$A $");
        assert_eq!(expand("$$$$", &lookup), "$$");
        assert_eq!(expand("héllo $(A)ü", &lookup), "héllo aü");
        assert_eq!(expand("", &lookup), "");
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    #[test]
    fn env_from_configmap_then_env_with_references() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        pod.metadata.namespace = Some("ns".into());
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cm".into(),
                    optional: None,
                }),
                prefix: Some("P_".into()),
                ..Default::default()
            }]),
            env: Some(vec![
                var("X", "$(P_k)!"),
                EnvVar {
                    name: "K".into(),
                    value_from: Some(EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cm".into(),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                EnvVar {
                    name: "NAME".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.name".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                var("IP", "$(POD_IP)"),
                var("X", "again"),
            ]),
            ..Default::default()
        };
        let mut sources = Sources::default();
        sources.config_maps.insert(
            "cm".into(),
            Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        );
        let env = container_env(&pod, &c, &sources, &PodFacts::default()).expect("env");
        assert_eq!(
            env,
            vec![
                ("P_k".to_string(), "v".to_string()),
                ("X".into(), "again".into()),
                ("K".into(), "v".into()),
                ("NAME".into(), "p".into()),
                ("IP".into(), "$(POD_IP)".into()),
            ]
        );
        sources.config_maps.insert("cm".into(), None);
        assert_eq!(
            container_env(&pod, &c, &sources, &PodFacts::default()),
            Err("configmap \"cm\" not found".to_string())
        );
    }

    #[test]
    fn field_paths() {
        let mut pod = Pod::default();
        pod.metadata.labels = Some(BTreeMap::from([("app".to_string(), "web".to_string())]));
        let facts = PodFacts {
            pod_ip: "10.88.0.2".into(),
            ..Default::default()
        };
        assert_eq!(
            field_value(&pod, "metadata.labels['app']", &facts),
            Ok("web".into())
        );
        assert_eq!(
            field_value(&pod, "metadata.labels", &facts),
            Ok("app=\"web\"".into())
        );
        assert_eq!(
            field_value(&pod, "status.podIP", &facts),
            Ok("10.88.0.2".into())
        );
        assert!(field_value(&pod, "spec.bogus", &facts).is_err());
    }

    #[test]
    fn resource_fields_divide_and_round_up() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}}
        }))
        .expect("container");
        let facts = PodFacts {
            node_allocatable_cpu_millis: 2000,
            node_allocatable_memory: 1 << 30,
            ..Default::default()
        };
        let q = |s: &str| Quantity(s.into());
        let value = |resource: &str, divisor: Option<Quantity>| {
            resource_value(&container, resource, divisor.as_ref(), &facts)
        };
        assert_eq!(value("limits.cpu", None), Ok("1".into()));
        assert_eq!(value("limits.cpu", Some(q("1m"))), Ok("500".into()));
        assert_eq!(value("requests.cpu", Some(q("100m"))), Ok("3".into()));
        assert_eq!(value("limits.memory", Some(q("1Mi"))), Ok("128".into()));
        assert_eq!(value("requests.memory", None), Ok("0".into()));
        let unlimited: Container =
            serde_json::from_value(serde_json::json!({"name": "c"})).expect("container");
        assert_eq!(
            resource_value(&unlimited, "limits.memory", Some(&q("1Gi")), &facts),
            Ok("1".into())
        );
        assert_eq!(
            resource_value(&unlimited, "limits.cpu", None, &facts),
            Ok("2".into())
        );
    }

    #[test]
    fn service_variables_as_upstream_writes_them() {
        let service = |ns: &str, name: &str, ip: &str, ports: serde_json::Value| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": ports},
            }))
            .expect("service")
        };
        let kubernetes = service(
            "default",
            "kubernetes",
            "10.96.0.1",
            serde_json::json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
        );
        let web = service(
            "app",
            "my-web",
            "10.96.0.20",
            serde_json::json!([{"name": "http-alt", "port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]),
        );
        let headless = service("app", "headless", "None", serde_json::json!([{"port": 80}]));
        let elsewhere = service(
            "other",
            "db",
            "10.96.0.30",
            serde_json::json!([{"port": 5432}]),
        );
        let pod = |links: Option<bool>| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "app"},
                "spec": {"containers": [], "enableServiceLinks": links},
            }))
            .expect("pod")
        };
        let all = [&kubernetes, &web, &headless, &elsewhere];
        let env: HashMap<String, String> = service_env(&pod(None), &all).into_iter().collect();
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["KUBERNETES_PORT"], "tcp://10.96.0.1:443");
        assert_eq!(env["KUBERNETES_PORT_443_TCP_ADDR"], "10.96.0.1");
        assert_eq!(env["MY_WEB_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(env["MY_WEB_SERVICE_PORT"], "80");
        assert_eq!(env["MY_WEB_SERVICE_PORT_HTTP_ALT"], "80");
        assert_eq!(env["MY_WEB_PORT_53_UDP"], "udp://10.96.0.20:53");
        assert_eq!(env["MY_WEB_PORT_53_UDP_PROTO"], "udp");
        assert_eq!(env["MY_WEB_PORT_53_UDP_PORT"], "53");
        assert!(
            !env.contains_key("HEADLESS_SERVICE_HOST"),
            "no cluster IP, no variables"
        );
        assert!(
            !env.contains_key("DB_SERVICE_HOST"),
            "another namespace's Service"
        );
        // Without service links, only the master Service's.
        let env: HashMap<String, String> =
            service_env(&pod(Some(false)), &all).into_iter().collect();
        assert!(env.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!env.contains_key("MY_WEB_SERVICE_HOST"));
        // A container's own variable overrides a Service's and can refer to it.
        let container = Container {
            env: Some(vec![
                serde_json::from_value(
                    serde_json::json!({"name": "MY_WEB_SERVICE_PORT", "value": "8080"}),
                )
                .expect("var"),
                serde_json::from_value(
                    serde_json::json!({"name": "URL", "value": "http://$(MY_WEB_SERVICE_HOST)"}),
                )
                .expect("var"),
            ]),
            ..Default::default()
        };
        let sources = Sources {
            service_env: service_env(&pod(None), &all),
            ..Default::default()
        };
        let env: HashMap<String, String> =
            container_env(&pod(None), &container, &sources, &PodFacts::default())
                .expect("env")
                .into_iter()
                .collect();
        assert_eq!(env["MY_WEB_SERVICE_PORT"], "8080");
        assert_eq!(env["URL"], "http://10.96.0.20");
    }
}
