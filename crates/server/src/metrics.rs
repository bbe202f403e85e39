//! Prometheus metrics of a site: requests, writes, errors, store latency, sync links, event
//! streams and webhook deliveries.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(String, String)>;

/// The metrics one site exports at `/metrics`.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    writes: Family<Labels, Counter>,
    store_latency: Family<Labels, Histogram, fn() -> Histogram>,
    received_versions: Family<Labels, Counter>,
    link_state: Family<Labels, Gauge>,
    link_pending: Family<Labels, Gauge>,
    link_pending_bytes: Family<Labels, Gauge>,
    link_debt_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    link_last_sync_age_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    link_sent_versions: Family<Labels, Gauge>,
    link_sent_bytes: Family<Labels, Gauge>,
    event_streams: Gauge,
    webhook_deliveries: Family<Labels, Counter>,
    local_write_transactions: Gauge,
    local_writes_committed: Gauge,
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
        let received_versions = Family::<Labels, Counter>::default();
        registry.register(
            "sync_received_versions",
            "Versions received from neighbours, by outcome (applied or duplicate)",
            received_versions.clone(),
        );
        let link_state = Family::<Labels, Gauge>::default();
        registry.register(
            "sync_link_state",
            "1 for the current state of each link, by peer and state",
            link_state.clone(),
        );
        let link_pending = Family::<Labels, Gauge>::default();
        registry.register(
            "sync_pending_changes",
            "Changes a peer has not acknowledged, by peer",
            link_pending.clone(),
        );
        let link_pending_bytes = Family::<Labels, Gauge>::default();
        registry.register(
            "sync_pending_bytes",
            "Bytes of content a peer has not acknowledged, by peer",
            link_pending_bytes.clone(),
        );
        let link_debt_seconds = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "sync_debt_seconds",
            "Age of the oldest change a peer has not acknowledged, by peer (0 when none)",
            link_debt_seconds.clone(),
        );
        let link_last_sync_age_seconds = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "sync_last_sync_age_seconds",
            "Time since the last successful round with a peer, by peer",
            link_last_sync_age_seconds.clone(),
        );
        let link_sent_versions = Family::<Labels, Gauge>::default();
        registry.register(
            "sync_sent_versions",
            "Versions sent to a peer since the site started, by peer",
            link_sent_versions.clone(),
        );
        let link_sent_bytes = Family::<Labels, Gauge>::default();
        registry.register(
            "sync_sent_bytes",
            "Encoded batch bytes sent to a peer since the site started, by peer",
            link_sent_bytes.clone(),
        );
        let event_streams = Gauge::default();
        registry.register("event_streams", "Open event streams (GET /v1/events)", event_streams.clone());
        let webhook_deliveries = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by webhook and outcome (delivered, failed, gave-up)",
            webhook_deliveries.clone(),
        );
        let local_write_transactions = Gauge::default();
        registry.register(
            "local_write_transactions",
            "Transactions (one fsync each) that committed local writes since the site started",
            local_write_transactions.clone(),
        );
        let local_writes_committed = Gauge::default();
        registry.register(
            "local_writes_committed",
            "Local writes committed since the site started; divided by local_write_transactions, \
             the writes group commit put in each transaction",
            local_writes_committed.clone(),
        );
        Self {
            registry,
            requests,
            errors,
            writes,
            store_latency,
            received_versions,
            link_state,
            link_pending,
            link_pending_bytes,
            link_debt_seconds,
            link_last_sync_age_seconds,
            link_sent_versions,
            link_sent_bytes,
            event_streams,
            webhook_deliveries,
            local_write_transactions,
            local_writes_committed,
        }
    }

    pub fn event_stream_opened(&self) {
        self.event_streams.inc();
    }

    pub fn event_stream_closed(&self) {
        self.event_streams.dec();
    }

    pub fn webhook_delivery(&self, webhook: &str, outcome: &str) {
        self.webhook_deliveries
            .get_or_create(&vec![
                ("webhook".into(), webhook.to_owned()),
                ("outcome".into(), outcome.to_owned()),
            ])
            .inc();
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

    pub fn received(&self, applied: usize, duplicates: usize) {
        let count = |outcome: &str, n: usize| {
            self.received_versions
                .get_or_create(&vec![("outcome".into(), outcome.to_owned())])
                .inc_by(n as u64);
        };
        count("applied", applied);
        count("duplicate", duplicates);
    }

    /// Sets the per-link gauges from a sync status.
    pub fn observe_sync(&self, status: &replication::SyncStatus) {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for link in &status.links {
            let peer = vec![("peer".to_owned(), link.peer.clone())];
            for state in replication::LinkState::ALL {
                let labels = vec![
                    ("peer".to_owned(), link.peer.clone()),
                    ("state".to_owned(), state.as_str().to_owned()),
                ];
                self.link_state.get_or_create(&labels).set(i64::from(link.state == state));
            }
            self.link_pending.get_or_create(&peer).set(clamp(link.pending));
            self.link_pending_bytes.get_or_create(&peer).set(clamp(link.pending_bytes));
            self.link_debt_seconds.get_or_create(&peer).set(link.debt_seconds.unwrap_or(0.0));
            if let Some(age) = link.last_sync_age_seconds {
                self.link_last_sync_age_seconds.get_or_create(&peer).set(age);
            }
            self.link_sent_versions.get_or_create(&peer).set(clamp(link.sent_versions));
            self.link_sent_bytes.get_or_create(&peer).set(clamp(link.sent_bytes));
        }
    }

    /// Sets the group-commit gauges from the engine's count of local commits.
    pub fn observe_local_commits(&self, commits: replication::LocalCommits) {
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.local_write_transactions.set(clamp(commits.transactions));
        self.local_writes_committed.set(clamp(commits.writes));
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
