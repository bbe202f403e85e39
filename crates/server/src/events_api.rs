//! The event stream, `GET /v1/events`: the site's event log (writes, deletes, conflicts,
//! refusals, link state changes) as server-sent events, resumable from the last event id.
//!
//! A connection first replays the stored events after the id it gives, a page of at most
//! [`EVENT_PAGE`] at a time, then follows new ones: it reads the store as soon as the sync engine
//! announces a commit (`SyncEngine::commits`), and every [`POLL`] for events appended elsewhere. A
//! keep-alive comment goes out every [`KEEP_ALIVE`] while nothing happens. The stream ends when
//! the site shuts down (so graceful shutdown never waits on it), or after the replay with
//! `follow=false`.

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use config::EventKind;
use model::format_rfc3339_millis;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::api::blocking;
use crate::metrics::Metrics;
use crate::problem::{ApiError, Problem};

/// The most events read from the store at once.
pub const EVENT_PAGE: usize = 1000;
/// How often a connection that has caught up looks for new events the sync engine did not
/// announce (it wakes the stream at once after its own commits).
pub const POLL: Duration = Duration::from_millis(200);
/// How often a keep-alive comment goes out on an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The header a reconnecting client sends with the id of the last event it received.
const LAST_EVENT_ID: &str = "last-event-id";

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/events", get(events))
}

/// One event, as the stream's `data` and as webhooks' bodies carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventItem {
    /// The event's position in this site's event log; the stream's event id.
    pub seq: u64,
    /// When it happened (RFC 3339).
    pub time: String,
    /// `write`, `delete`, `conflict`, `refusal` or `link`.
    pub kind: String,
    /// The object it is about, `Kind/scope/name`, if any.
    pub object: Option<String>,
    /// The event's details; their fields depend on the kind.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl From<&store::Event> for EventItem {
    fn from(e: &store::Event) -> Self {
        Self {
            seq: e.seq,
            time: format_rfc3339_millis(e.event.at_ms),
            kind: e.event.kind.clone(),
            object: e.event.object.as_ref().map(ToString::to_string),
            data: e.event.data.clone(),
        }
    }
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Start after this event id (default 0: every stored event), or `latest` for only the
    /// events from now on. The `Last-Event-ID` header, which a reconnecting client sends,
    /// takes precedence.
    after: Option<String>,
    /// Only these kinds, comma-separated: `write`, `delete`, `conflict`, `refusal`, `link`.
    kinds: Option<String>,
    /// `false`: send the stored events and end the stream instead of following new ones.
    follow: Option<bool>,
}

/// The kinds named in `raw` (comma-separated), each one of [`EventKind`]'s.
pub(crate) fn parse_kinds(raw: &str) -> Result<BTreeSet<String>, ApiError> {
    let mut kinds = BTreeSet::new();
    for name in raw.split(',').map(str::trim) {
        let Some(kind) = EventKind::parse(name) else {
            let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(ApiError::bad_request(
                "bad-query",
                format!(
                    "kinds has `{name}`; list kinds separated by commas, from {}, such as `conflict,link`",
                    all.join(", ")
                ),
            ));
        };
        kinds.insert(kind.as_str().to_owned());
    }
    Ok(kinds)
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(LAST_EVENT_ID) else {
        return Ok(None);
    };
    let id = value.to_str().ok().map(str::trim).and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| {
        ApiError::bad_request(
            "bad-header",
            "Last-Event-ID must be the id of an event this site sent: a whole number such as `42`",
        )
    })?;
    Ok(Some(id))
}

/// The site's events as server-sent events: each event's `id` is its sequence number, its
/// `event` its kind, and its `data` one line of JSON (an `EventItem`).
#[utoipa::path(
    get,
    path = "/v1/events",
    params(
        EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event"),
    ),
    responses(
        (status = 200, description = "a `text/event-stream` of events", content_type = "text/event-stream", body = EventItem),
        (status = 400, description = "a parameter is not valid", body = Problem),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad-query", e.body_text()))?;
    let after = match (last_event_id(&headers)?, query.after.as_deref().map(str::trim)) {
        (Some(id), _) => id,
        (None, None) => 0,
        (None, Some("latest")) => blocking(&state, "events", |s| s.last_event_seq()).await?,
        (None, Some(raw)) => raw.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "bad-query",
                format!("after is `{raw}`; give an event id (a whole number such as `42`) or `latest`"),
            )
        })?,
    };
    let kinds = query.kinds.as_deref().map(parse_kinds).transpose()?;
    let follow = query.follow.unwrap_or(true);
    // Without following, the replay ends at the last event stored now, however busy the site.
    let until = if follow { None } else { Some(blocking(&state, "events", |s| s.last_event_seq()).await?) };
    let tail = Tail {
        shutdown: state.shutdown.subscribe(),
        commits: state.engine.commits(),
        _open: OpenStream::new(state.metrics.clone()),
        state,
        cursor: after,
        kinds,
        until,
        buffer: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(tail, next_event);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// One connection's place in the event log.
struct Tail {
    state: AppState,
    /// The last event read from the store (sent, or skipped by the filter).
    cursor: u64,
    kinds: Option<BTreeSet<String>>,
    /// Stop after this event (`follow=false`).
    until: Option<u64>,
    /// Read and not yet sent; at most one page.
    buffer: VecDeque<store::Event>,
    shutdown: watch::Receiver<bool>,
    /// Marked by the sync engine after each commit that appended events: the stream reads the
    /// log as soon as one lands, and every `POLL` for the events appended elsewhere.
    commits: watch::Receiver<u64>,
    _open: OpenStream,
}

/// Counts the open streams in the metrics while it lives.
struct OpenStream(Arc<Metrics>);

impl OpenStream {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.event_stream_opened();
        Self(metrics)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.event_stream_closed();
    }
}

fn to_sse(event: &store::Event) -> SseEvent {
    let item = EventItem::from(event);
    // An `EventItem` is strings, numbers and JSON values: it always serializes.
    let data = serde_json::to_string(&item).unwrap_or_else(|_| "{}".to_owned());
    SseEvent::default().id(event.seq.to_string()).event(&event.event.kind).data(data)
}

/// The next event to send, or `None` to end the stream. Each turn of the loop either sends,
/// reads one bounded page, or waits one poll interval.
async fn next_event(mut tail: Tail) -> Option<(Result<SseEvent, Infallible>, Tail)> {
    loop {
        if *tail.shutdown.borrow() {
            return None;
        }
        if let Some(event) = tail.buffer.pop_front() {
            return Some((Ok(to_sse(&event)), tail));
        }
        if tail.until.is_some_and(|until| tail.cursor >= until) {
            return None;
        }
        let after = tail.cursor;
        // Seen before reading: a commit that lands during the read marks it again.
        tail.commits.borrow_and_update();
        let page = match blocking(&tail.state, "events", move |s| s.events(after, EVENT_PAGE)).await {
            Ok(page) => page,
            // Logged where it happened; the client resumes from the last id it received.
            Err(_) => return None,
        };
        let Some(last) = page.last() else {
            if tail.until.is_some() {
                return None;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                // The stream holds the engine (in `state`), so this never fails for good.
                _ = tail.commits.changed() => {}
                _ = tail.shutdown.changed() => return None,
            }
            continue;
        };
        tail.cursor = last.seq;
        let until = tail.until;
        let kinds = tail.kinds.as_ref();
        tail.buffer.extend(
            page.into_iter()
                .filter(|e| until.is_none_or(|u| e.seq <= u))
                .filter(|e| kinds.is_none_or(|k| k.contains(&e.event.kind))),
        );
    }
}
