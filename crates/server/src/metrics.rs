//! Prometheus metrics of a site: requests, writes, errors and store latency.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The metrics one site exports at `/metrics`.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    writes: Family<Labels, Counter>,
    store_latency: Family<Labels, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    // 50 µs to about 1.6 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("souverix");
        let requests = Family::<Labels, Counter>::default();
        let errors = Family::<Labels, Counter>::default();
        let writes = Family::<Labels, Counter>::default();
        let store_latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("http_requests", "HTTP requests answered, by method and status", requests.clone());
        registry.register(
            "http_errors",
            "HTTP requests answered with a 4xx or 5xx status, by status",
            errors.clone(),
        );
        registry.register("writes", "Object writes and deletes, by kind and outcome", writes.clone());
        registry.register(
            "store_latency_seconds",
            "Time spent in the store, by operation",
            store_latency.clone(),
        );
        Self { registry, requests, errors, writes, store_latency }
    }

    pub fn request(&self, method: &str, status: u16) {
        self.requests
            .get_or_create(&vec![("method".into(), method.to_owned()), ("status".into(), status.to_string())])
            .inc();
        if status >= 400 {
            self.errors.get_or_create(&vec![("status".into(), status.to_string())]).inc();
        }
    }

    pub fn write(&self, kind: &str, outcome: &str) {
        self.writes
            .get_or_create(&vec![("kind".into(), kind.to_owned()), ("outcome".into(), outcome.to_owned())])
            .inc();
    }

    pub fn store_latency(&self, operation: &str, elapsed: Duration) {
        self.store_latency
            .get_or_create(&vec![("operation".into(), operation.to_owned())])
            .observe(elapsed.as_secs_f64());
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = encode(&mut out, &self.registry) {
            tracing::error!(error = %err, "failed to encode metrics");
        }
        out
    }
}
