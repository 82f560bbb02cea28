//! Service health checks, as upstream's proxy serves them: for every LoadBalancer Service
//! with `externalTrafficPolicy: Local`, an HTTP server on its `healthCheckNodePort` that
//! answers 200 while this node has endpoints of the Service and 503 when it has none, so
//! that an external load balancer sends traffic only to nodes that can serve it (the
//! others would drop it: Local traffic never leaves the node).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::model::Model;

/// What one health-check port reports.
struct Check {
    namespace: String,
    name: String,
    local_endpoints: AtomicUsize,
}

/// The health-check servers this node runs, by port.
#[derive(Default)]
pub struct HealthChecks {
    servers: BTreeMap<u16, (Arc<Check>, tokio::task::JoinHandle<()>)>,
}

impl HealthChecks {
    /// Starts, updates and stops servers so that each port the model names answers for
    /// its Service's current local endpoints.
    pub async fn update(&mut self, model: &Model) {
        let mut wanted: BTreeMap<u16, (&str, &str, usize)> = BTreeMap::new();
        for port in model.services.values() {
            let Some(check_port) = port.health_check_node_port else {
                continue;
            };
            let entry =
                wanted
                    .entry(check_port)
                    .or_insert((&port.name.namespace, &port.name.name, 0));
            // Ports of one Service share the check: the node serves if any has endpoints.
            entry.2 = entry.2.max(port.external_endpoints.len());
        }
        self.servers.retain(|port, (_, task)| {
            let keep = wanted.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for (port, (namespace, name, local)) in wanted {
            if let Some((check, _)) = self.servers.get(&port) {
                if check.namespace == namespace && check.name == name {
                    check.local_endpoints.store(local, Ordering::Relaxed);
                    continue;
                }
            }
            let check = Arc::new(Check {
                namespace: namespace.to_string(),
                name: name.to_string(),
                local_endpoints: AtomicUsize::new(local),
            });
            match serve(port, check.clone()).await {
                Ok(task) => {
                    if let Some((_, old)) = self.servers.insert(port, (check, task)) {
                        old.abort();
                    }
                }
                Err(error) => {
                    tracing::warn!(port, %error, service = %format!("{namespace}/{name}"), "health-check port not served")
                }
            }
        }
    }

    /// The ports being served.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for (_, task) in self.servers.values() {
            task.abort();
        }
    }
}

async fn serve(port: u16, check: Arc<Check>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    let router = axum::Router::new().fallback(answer).with_state(check);
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(port, %error, "health-check server stopped");
        }
    }))
}

/// Upstream's answer: the Service and the count, 200 or 503.
async fn answer(State(check): State<Arc<Check>>) -> impl IntoResponse {
    let local = check.local_endpoints.load(Ordering::Relaxed);
    let status = if local > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "service": {"namespace": check.namespace, "name": check.name},
        "localEndpoints": local,
    });
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{model_of, service_port};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(port: u16) -> String {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
            .await
            .expect("request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("answer");
        answer
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    #[tokio::test]
    async fn answers_follow_local_endpoints_and_ports_come_and_go() {
        let port = free_port();
        let mut with_endpoints = service_port("ns", "lb", "10.96.0.9", &["10.88.0.2", "10.88.0.3"]);
        with_endpoints.external_local = true;
        with_endpoints.health_check_node_port = Some(port);
        let mut checks = HealthChecks::default();
        checks.update(&model_of([with_endpoints.clone()])).await;
        assert_eq!(checks.ports(), [port]);
        let answer = get(port).await;
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "{answer}"
        );
        assert!(answer.contains(r#""localEndpoints":2"#), "{answer}");
        assert!(answer.contains(r#""name":"lb""#), "{answer}");

        let mut without = with_endpoints.clone();
        without.external_endpoints.clear();
        checks.update(&model_of([without])).await;
        let answer = get(port).await;
        assert!(answer.contains(" 503 "), "{answer}");
        assert!(answer.contains(r#""localEndpoints":0"#), "{answer}");

        checks.update(&model_of([])).await;
        assert!(checks.ports().is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "the port is closed"
        );
    }
}
