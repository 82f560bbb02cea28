//! An extension API server for tests of API aggregation (`python/aggregated_server.py`):
//! it trusts the aggregator as the `extension-apiserver-authentication` ConfigMap says,
//! serves Flunders of `wardle.example.com/v1alpha1`, and answers any other GET from
//! fixtures the test sets (custom and external metrics, say). It runs on 127.0.0.1 and
//! is reached as a Service without a selector whose endpoint names it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::tls::ServingCertificate;
use crate::{eventually, free_port, start_python_server, Server, Supervised};

/// The Service port the API server dials (the Service targets the test server's port).
const SERVICE_PORT: u16 = 7443;

pub struct ExtensionServer {
    _process: Supervised,
    pub port: u16,
    pub namespace: String,
    pub service: String,
    pub certificate: ServingCertificate,
    log: PathBuf,
    fixtures: PathBuf,
}

impl ExtensionServer {
    /// Starts it as Service `service` of `namespace` (its certificate names
    /// `service.namespace.svc`), trusting what `server` publishes.
    pub fn start(server: &Server, namespace: &str, service: &str) -> ExtensionServer {
        let data = authentication_config(server);
        let certificate =
            crate::tls::serving_certificate(&format!("DNS:{service}.{namespace}.svc"));
        let dir = certificate.dir.path();
        let client_ca = dir.join("requestheader-ca.crt");
        std::fs::write(
            &client_ca,
            data["requestheader-client-ca-file"]
                .as_str()
                .unwrap_or_default(),
        )
        .expect("writing the request-header CA");
        let fixtures = dir.join("fixtures.json");
        std::fs::write(&fixtures, "{}").expect("writing the fixtures");
        let log = dir.join("requests.jsonl");
        let allowed = data["requestheader-allowed-names"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let port = free_port();
        let process = start_python_server(
            "aggregated_server.py",
            &[
                certificate.cert.as_os_str(),
                certificate.key.as_os_str(),
                client_ca.as_os_str(),
                allowed.as_ref(),
            ],
            &[("AGGREGATED_LOG", &log), ("FIXTURES", &fixtures)],
            port,
        );
        ExtensionServer {
            _process: process,
            port,
            namespace: namespace.to_string(),
            service: service.to_string(),
            certificate,
            log,
            fixtures,
        }
    }

    /// Creates its Service and the EndpointSlice that names this server.
    pub fn expose(&self, server: &Server) {
        server.ok_with_input(
            &["apply", "-n", &self.namespace, "-f", "-"],
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {service}\nspec:\n  ports:\n  - port: {SERVICE_PORT}\n    targetPort: {port}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  labels: {{kubernetes.io/service-name: {service}}}\naddressType: IPv4\nports: [{{name: \"\", port: {port}, protocol: TCP}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n",
                service = self.service,
                port = self.port
            ),
        );
    }

    /// The APIService that registers this server for `group`/`version`.
    pub fn api_service(&self, group: &str, version: &str) -> String {
        format!(
            "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: {version}.{group}\nspec:\n  group: {group}\n  version: {version}\n  groupPriorityMinimum: 2000\n  versionPriority: 200\n  caBundle: {ca}\n  service: {{namespace: {ns}, name: {service}, port: {SERVICE_PORT}}}\n",
            ca = self.certificate.ca_bundle(),
            ns = self.namespace,
            service = self.service,
        )
    }

    /// Answers GETs of `path` (query ignored) with `answer` from now on.
    pub fn set_fixture(&self, path: &str, answer: Value) {
        let mut fixtures: Value = std::fs::read_to_string(&self.fixtures)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_else(|| json!({}));
        fixtures[path] = answer;
        let staged = self.fixtures.with_extension("tmp");
        std::fs::write(&staged, fixtures.to_string()).expect("writing the fixtures");
        std::fs::rename(&staged, &self.fixtures).expect("replacing the fixtures");
    }

    /// Every request it got: method, path, the identity the aggregator asserted.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// What the API server publishes for extension API servers (the `data` of the
/// `extension-apiserver-authentication` ConfigMap).
pub fn authentication_config(server: &Server) -> Value {
    server.json(&[
        "configmap",
        "-n",
        "kube-system",
        "extension-apiserver-authentication",
    ])["data"]
        .clone()
}

/// The `Available` condition of APIService `name`.
pub fn available_condition(server: &Server, name: &str) -> Value {
    server.json(&["apiservice", name])["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Available").cloned())
        .unwrap_or(Value::Null)
}

/// Waits (30 s at most) until APIService `name` is `Available` with `status` for
/// `reason`; returns the condition.
pub fn wait_for_availability(server: &Server, name: &str, status: &str, reason: &str) -> Value {
    eventually(
        &format!("APIService {name} to be Available={status} ({reason})"),
        Duration::from_secs(30),
        || {
            let condition = available_condition(server, name);
            (condition["status"] == status && condition["reason"] == reason).then_some(condition)
        },
    )
}
