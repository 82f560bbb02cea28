//! Prometheus metrics for the DNS server, in the spirit of CoreDNS's `coredns_dns_*`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The query type (`A`, `SRV`, …).
    r#type: String,
    /// The response code (`NOERROR`, `NXDOMAIN`, …).
    rcode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    /// `cluster` for answers from the view, `forward` for upstream ones.
    source: String,
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<SourceLabels, Histogram>,
    forward_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<SourceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 18))
        });
        let forward_failures = Counter::default();
        registry.register(
            "skiff_dns_requests",
            "DNS requests answered, by query type and response code",
            requests.clone(),
        );
        registry.register(
            "skiff_dns_request_duration_seconds",
            "Time to answer a DNS request, by where the answer came from",
            duration.clone(),
        );
        registry.register(
            "skiff_dns_forward_failures",
            "Forwarded DNS requests that no upstream answered",
            forward_failures.clone(),
        );
        Metrics {
            registry: Arc::new(Mutex::new(registry)),
            requests,
            duration,
            forward_failures,
        }
    }

    pub(crate) fn observe(&self, qtype: &str, rcode: &str, source: &str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                r#type: qtype.to_string(),
                rcode: rcode.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn forward_failed(&self) {
        self.forward_failures.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        skiff_metrics::render(&self.registry.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `GET /metrics`, for the lead to mount or for `--dns-metrics-address`.
    pub fn router(&self) -> axum::Router {
        let metrics = self.clone();
        skiff_metrics::router_with(move || metrics.render())
    }
}
