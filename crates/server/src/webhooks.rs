//! Webhooks: a task per configured webhook POSTs the site's events of the kinds it wants, in
//! order, and records every attempt; and `GET /v1/webhooks/deliveries` shows those records.
//!
//! Each task reads the event log after its durable cursor, a page at a time. An event is POSTed
//! as JSON (the event stream's `data`) with a timeout; a 2xx answer is `delivered`; anything
//! else is `failed` and retried with exponential backoff and full jitter, up to
//! [`MAX_ATTEMPTS`] attempts, the last recorded as `gave-up`. Either way the cursor then moves
//! past the event, so one dead receiver delays its own webhook and no other. Delivery is at
//! least once: a site stopped mid-delivery sends the event again when it starts.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use config::WebhookConfig;
use model::{Clock, SiteId, format_rfc3339_millis};
use replication::backoff::{Backoff, Rng, SplitMix64};
use serde::{Deserialize, Serialize};
use store::{Delivery, DeliveryEntry, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::api::{blocking, page_size};
use crate::events_api::{EventItem, POLL};
use crate::metrics::Metrics;
use crate::problem::{ApiError, Problem};

/// How long one POST may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per event before giving up on it.
pub const MAX_ATTEMPTS: u32 = 8;
/// Retries wait a random time up to `500 ms * 2^(failures-1)`, at most 60 s.
pub const RETRY_BASE: Duration = Duration::from_millis(500);
pub const RETRY_CAP: Duration = Duration::from_secs(60);
/// Events read from the store at once.
const PAGE: usize = 100;
/// How long a task waits after the store failed before it reads again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// The header naming the event's kind.
pub const EVENT_HEADER: &str = "x-souverix-event";
/// The header naming the delivery, `<site>/<webhook>/<seq>`: the same on every attempt, so a
/// receiver can drop repeats.
pub const DELIVERY_HEADER: &str = "x-souverix-delivery";
/// The header carrying the attempt number, from 1.
pub const ATTEMPT_HEADER: &str = "x-souverix-attempt";

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/webhooks/deliveries", get(deliveries))
}

/// The running webhook tasks of a site.
pub struct Webhooks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// What every webhook task shares.
#[derive(Clone)]
struct Context {
    site: SiteId,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
}

/// Why the webhooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the HTTP client for webhooks could not be built: {0}")]
    Client(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("a webhook task failed: {0}")]
    Task(String),
}

impl Webhooks {
    /// Starts a task per webhook, each from its durable cursor. A webhook the store has no
    /// cursor for starts at the beginning of the event log: a new webhook also hears of the
    /// events of its kinds the site recorded before it was configured (such as open conflicts).
    pub async fn start(
        site: SiteId,
        hooks: &[WebhookConfig],
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Webhooks, WebhookError> {
        let (stop, stopped) = watch::channel(false);
        if hooks.is_empty() {
            return Ok(Webhooks { stop, tasks: Vec::new() });
        }
        let http = reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .connect_timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("souverix/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| WebhookError::Client(e.to_string()))?;
        let cursors = {
            let store = store.clone();
            let names: Vec<String> = hooks.iter().map(|h| h.name.clone()).collect();
            tokio::task::spawn_blocking(move || {
                names.iter().map(|name| store.webhook_cursor(name)).collect::<Result<Vec<u64>, _>>()
            })
            .await
            .map_err(|e| WebhookError::Task(e.to_string()))??
        };
        let context = Context { site, store, clock, metrics, http };
        let tasks = hooks
            .iter()
            .zip(cursors)
            .map(|(hook, cursor)| {
                let task = Task {
                    context: context.clone(),
                    hook: hook.clone(),
                    cursor,
                    stop: stopped.clone(),
                    rng: SplitMix64::new(seed(context.clock.now_ms(), &hook.name)),
                    backoff: Backoff::new(RETRY_BASE, RETRY_CAP),
                };
                tokio::spawn(task.run())
            })
            .collect();
        Ok(Webhooks { stop, tasks })
    }

    /// Stops every task (a delivery in flight is abandoned and sent again at the next start)
    /// and waits for them.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "a webhook task failed");
            }
        }
    }
}

fn seed(now_ms: u64, name: &str) -> u64 {
    name.bytes()
        .fold(now_ms ^ 0x5157_4542_484f_4f4b, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// How one event's delivery ended.
enum Outcome {
    /// Delivered, or given up on: the cursor moves past the event.
    Done,
    /// The site is stopping.
    Stopped,
}

/// One webhook's delivery loop.
struct Task {
    context: Context,
    hook: WebhookConfig,
    /// The last event delivered, given up on, or skipped.
    cursor: u64,
    stop: watch::Receiver<bool>,
    rng: SplitMix64,
    backoff: Backoff,
}

impl Task {
    async fn run(mut self) {
        tracing::info!(webhook = %self.hook.name, url = %self.hook.url, after = self.cursor, "webhook started");
        while !*self.stop.borrow() {
            let after = self.cursor;
            let store = self.context.store.clone();
            let page = match tokio::task::spawn_blocking(move || store.events(after, PAGE)).await {
                Ok(Ok(page)) => page,
                Ok(Err(err)) => {
                    tracing::warn!(webhook = %self.hook.name, error = %err, "reading events failed");
                    if self.pause(STORE_RETRY).await {
                        break;
                    }
                    continue;
                }
                Err(err) => {
                    tracing::error!(webhook = %self.hook.name, error = %err, "reading events failed");
                    break;
                }
            };
            if page.is_empty() {
                if self.pause(POLL).await {
                    break;
                }
                continue;
            }
            let start = self.cursor;
            for event in &page {
                if self.hook.wants(&event.event.kind) {
                    match self.deliver(event).await {
                        Outcome::Done => {}
                        Outcome::Stopped => break,
                    }
                }
                self.cursor = event.seq;
            }
            if self.cursor != start {
                self.save_cursor().await;
            }
        }
        tracing::info!(webhook = %self.hook.name, cursor = self.cursor, "webhook stopped");
    }

    /// Waits `delay`; true when the site is stopping.
    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => *self.stop.borrow(),
            changed = self.stop.changed() => changed.is_err() || *self.stop.borrow(),
        }
    }

    async fn save_cursor(&self) {
        let (store, name, cursor) = (self.context.store.clone(), self.hook.name.clone(), self.cursor);
        match tokio::task::spawn_blocking(move || store.save_webhook_cursor(&name, cursor)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::warn!(webhook = %self.hook.name, error = %err, "saving the webhook cursor failed")
            }
            Err(err) => {
                tracing::error!(webhook = %self.hook.name, error = %err, "saving the webhook cursor failed")
            }
        }
    }

    /// Delivers one event, retrying up to [`MAX_ATTEMPTS`] times.
    async fn deliver(&mut self, event: &store::Event) -> Outcome {
        let body = match serde_json::to_vec(&EventItem::from(event)) {
            Ok(body) => body,
            Err(err) => {
                tracing::error!(webhook = %self.hook.name, seq = event.seq, error = %err, "an event could not be encoded");
                return Outcome::Done;
            }
        };
        let delivery_id = format!("{}/{}/{}", self.context.site, self.hook.name, event.seq);
        for attempt in 1..=MAX_ATTEMPTS {
            let request = self
                .context
                .http
                .post(&self.hook.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(EVENT_HEADER, &event.event.kind)
                .header(DELIVERY_HEADER, &delivery_id)
                .header(ATTEMPT_HEADER, attempt.to_string())
                .body(body.clone())
                .send();
            let answer = tokio::select! {
                answer = request => answer,
                _ = self.stop.changed() => return Outcome::Stopped,
            };
            let (status, failure) = match answer {
                Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
                Ok(response) => {
                    let status = response.status();
                    (Some(status.as_u16()), Some(format!("the receiver answered {status}")))
                }
                Err(err) if err.is_timeout() => {
                    (None, Some(format!("no answer within {}s", DELIVERY_TIMEOUT.as_secs())))
                }
                Err(err) => (None, Some(format!("cannot reach the receiver: {}", root_cause(&err)))),
            };
            let (outcome, detail) = match &failure {
                None => ("delivered", String::new()),
                Some(why) if attempt == MAX_ATTEMPTS => {
                    ("gave-up", format!("{why}; gave up after {MAX_ATTEMPTS} attempts"))
                }
                Some(why) => ("failed", format!("{why}; will retry")),
            };
            self.record(Delivery {
                webhook: self.hook.name.clone(),
                event_seq: event.seq,
                attempt,
                at_ms: self.context.clock.now_ms(),
                status,
                outcome: outcome.to_owned(),
                detail: detail.clone(),
            })
            .await;
            match outcome {
                "delivered" => return Outcome::Done,
                "gave-up" => {
                    tracing::warn!(webhook = %self.hook.name, seq = event.seq, detail = %detail, "webhook delivery gave up");
                    return Outcome::Done;
                }
                _ => {
                    tracing::debug!(webhook = %self.hook.name, seq = event.seq, attempt, detail = %detail, "webhook delivery failed");
                }
            }
            let delay = self.backoff.delay(attempt, &mut self.rng as &mut dyn Rng);
            if self.pause(delay).await {
                return Outcome::Stopped;
            }
        }
        Outcome::Done
    }

    async fn record(&self, delivery: Delivery) {
        self.context.metrics.webhook_delivery(&delivery.webhook, &delivery.outcome);
        let store = self.context.store.clone();
        match tokio::task::spawn_blocking(move || store.record_delivery(&delivery)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(webhook = %self.hook.name, error = %err, "recording a webhook delivery failed")
            }
            Err(err) => {
                tracing::error!(webhook = %self.hook.name, error = %err, "recording a webhook delivery failed")
            }
        }
    }
}

/// The innermost cause of a transport error, which is the one that explains it.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Query of `GET /v1/webhooks/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Only this webhook's deliveries.
    webhook: Option<String>,
    /// The newest this many, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// One attempt to deliver an event to a webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryItem {
    /// The attempt's position in the delivery log.
    pub id: u64,
    pub webhook: String,
    /// The sequence number of the event delivered.
    pub event: u64,
    /// From 1.
    pub attempt: u32,
    /// When (RFC 3339).
    pub time: String,
    /// The HTTP status the receiver answered, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `delivered`, `failed` (will retry) or `gave-up`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl From<&DeliveryEntry> for DeliveryItem {
    fn from(e: &DeliveryEntry) -> Self {
        let d = &e.delivery;
        Self {
            id: e.id,
            webhook: d.webhook.clone(),
            event: d.event_seq,
            attempt: d.attempt,
            time: format_rfc3339_millis(d.at_ms),
            status: d.status,
            outcome: d.outcome.clone(),
            detail: d.detail.clone(),
        }
    }
}

/// Delivery attempts, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryItem>,
}

/// The newest webhook delivery attempts, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks/deliveries",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "delivery attempts, newest first", body = DeliveryPage),
        (status = 400, description = "a parameter is not valid", body = Problem),
    )
)]
pub async fn deliveries(
    State(state): State<AppState>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad-query", e.body_text()))?;
    let limit = page_size(query.limit)?;
    if let Some(name) = &query.webhook {
        let label = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !label {
            return Err(ApiError::bad_request(
                "bad-query",
                format!(
                    "webhook is `{name}`; a webhook name is lowercase letters, digits and `-`, as in the site's `Site.webhooks`"
                ),
            ));
        }
    }
    let webhook = query.webhook;
    let entries = blocking(&state, "deliveries", move |s| s.deliveries(webhook.as_deref(), limit)).await?;
    Ok(Json(DeliveryPage { items: entries.iter().map(DeliveryItem::from).collect() }))
}
