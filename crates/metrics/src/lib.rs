//! Prometheus metrics for every component: each keeps its metric families in a
//! `prometheus_client` registry and serves them here, as upstream's components serve
//! theirs, at `/metrics` in the OpenMetrics text format on an address of its own
//! (`--metrics-bind-address` and its per-component spellings).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
pub use prometheus_client;
use prometheus_client::registry::Registry;

/// The exposition's media type.
pub const MEDIA_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The text exposition of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        // Encoding into a String fails only on a metric's own formatting error.
        tracing::warn!("encoding metrics failed");
        out.clear();
    }
    out
}

/// `GET /metrics` answering with what `render` returns at each request.
pub fn router_with(render: impl Fn() -> String + Clone + Send + Sync + 'static) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move { ([(CONTENT_TYPE, MEDIA_TYPE)], render()).into_response() }
        }),
    )
}

/// `GET /metrics` serving `registry`.
pub fn router(registry: Arc<Registry>) -> axum::Router {
    router_with(move || render(&registry))
}

/// Binds `address` and serves `router` on a task of its own; the error is the bind's
/// (a port taken, an address not on this host). `component` names it in the logs.
pub async fn serve(
    component: &'static str,
    address: SocketAddr,
    router: axum::Router,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(component, %address, "serving metrics");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(component, %error, "metrics server stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn serves_the_registry_at_metrics() {
        let mut registry = Registry::default();
        let requests = Counter::<u64>::default();
        registry.register("demo_requests", "Requests seen", requests.clone());
        requests.inc_by(3);
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = probe.local_addr().expect("address");
        drop(probe);
        serve("test", address, router(Arc::new(registry)))
            .await
            .expect("serve");
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .expect("request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response");
        assert!(response.contains("openmetrics-text"), "{response}");
        assert!(response.contains("demo_requests_total 3"), "{response}");
        assert!(
            serve("test", address, axum::Router::new()).await.is_err(),
            "port taken"
        );
    }
}
