//! The `/v1` handlers.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use model::{Kind, ObjectDocument, ObjectKey, Scope, StoredObject, VersionId, format_rfc3339_millis};
use replication::LocalWriteError;
use serde::{Deserialize, Serialize};
use store::{AuditEntry, Committed, HistoryEntry, ListFilter, LocalWrite, Precondition, WriteError};
use tracing::Instrument;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::body::read_limited;
use crate::problem::{ApiError, Problem};

/// The request header that names who makes a change (recorded in versions and the audit log).
pub const AUTHOR_HEADER: &str = "x-souverix-author";
const DEFAULT_PAGE: usize = 100;
const MAX_AUTHOR_LEN: usize = 128;

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/site", get(site))
        .route("/v1/objects", get(list_objects))
        .route("/v1/objects/{kind}/{scope}/{name}", get(get_object).put(put_object).delete(delete_object))
        .route("/v1/objects/{kind}/{scope}/{name}/history", get(history))
        .route("/v1/audit", get(audit))
        .merge(crate::sync_api::routes())
        .merge(crate::conflicts_api::routes())
        .merge(crate::events_api::routes())
        .merge(crate::webhooks::routes())
        .merge(crate::fleet_api::routes())
        .merge(crate::placement::routes())
        .merge(crate::apply_api::routes())
        .merge(web_ui::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A span and metrics for every request.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let span = tracing::info_span!("request", method = %method, path = %request.uri().path());
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    state.metrics.request(method.as_str(), status.as_u16());
    span.in_scope(|| tracing::debug!(status = status.as_u16(), "answered"));
    response
}

async fn no_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "there is nothing at {}; objects live at /v1/objects/{{kind}}/{{scope}}/{{name}} (the OpenAPI document is at /v1/openapi.json)",
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} is not supported on {}; see /v1/openapi.json for the methods each path accepts",
        request.method(),
        request.uri().path()
    ))
}

/// Runs a store operation on a blocking thread and records its latency. The outer error is
/// a failure of the blocking task itself.
pub(crate) async fn on_store<T, E, F>(
    state: &AppState,
    operation: &'static str,
    f: F,
) -> Result<Result<T, E>, ApiError>
where
    F: FnOnce(&dyn store::Store) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
{
    let store = state.store.clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || f(store.as_ref())).await;
    state.metrics.store_latency(operation, started.elapsed());
    result.map_err(|join| {
        tracing::error!(operation, error = %join, "store task failed");
        ApiError::internal()
    })
}

/// A store read: any failure is internal.
pub(crate) async fn blocking<T, F>(state: &AppState, operation: &'static str, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&dyn store::Store) -> Result<T, store::StoreError> + Send + 'static,
    T: Send + 'static,
{
    on_store(state, operation, f).await?.map_err(|err| store_failure(operation, &err))
}

pub(crate) fn store_failure(operation: &str, err: &dyn std::error::Error) -> ApiError {
    tracing::error!(operation, error = %err, source = ?err.source(), "store operation failed");
    ApiError::internal()
}

pub(crate) fn parse_key(
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<ObjectKey, ApiError> {
    let Path((kind, scope, name)) =
        path.map_err(|e| ApiError::bad_request("bad-path", format!("the object's path is not valid: {e}")))?;
    ObjectKey::parse(&kind, &scope, &name).map_err(|e| ApiError::bad_request("bad-path", e.to_string()))
}

pub(crate) fn author(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(AUTHOR_HEADER) else {
        return Ok("anonymous".to_owned());
    };
    let value = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_AUTHOR_LEN && v.chars().all(|c| !c.is_control()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad-header",
                format!("the {AUTHOR_HEADER} header must be 1 to {MAX_AUTHOR_LEN} printable characters"),
            )
        })?;
    Ok(value.to_owned())
}

/// `If-Match: "<version>"` or `If-None-Match: *`.
fn precondition(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    if let Some(value) = headers.get(header::IF_NONE_MATCH) {
        return match value.to_str() {
            Ok("*") => Ok(Some(Precondition::Absent)),
            _ => Err(ApiError::bad_request(
                "bad-header",
                "If-None-Match supports only `*` (create only if the object does not exist)",
            )),
        };
    }
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let raw = value.to_str().map_err(|_| {
        ApiError::bad_request(
            "bad-header",
            "If-Match must be ASCII: a version such as \"1764000000123.0@global-control\"",
        )
    })?;
    let unquoted = raw.trim().trim_start_matches("W/").trim_matches('"');
    let version: VersionId = unquoted
        .parse()
        .map_err(|e: model::VersionIdError| ApiError::bad_request("bad-header", format!("If-Match: {e}")))?;
    Ok(Some(Precondition::Version(version)))
}

fn etag(object: &StoredObject) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", object.version.id()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

pub(crate) fn document_response(status: StatusCode, object: StoredObject) -> Response {
    let etag = etag(&object);
    let mut response = (status, Json(object.into_document())).into_response();
    response.headers_mut().insert(header::ETAG, etag);
    response
}

fn write_error(state: &AppState, key: &ObjectKey, err: WriteError) -> ApiError {
    match err {
        WriteError::PreconditionFailed { ref current, .. } => {
            state.metrics.write(key.kind.as_str(), "precondition-failed");
            ApiError::precondition_failed(err.to_string(), current.clone())
        }
        WriteError::NotFound { .. } => {
            state.metrics.write(key.kind.as_str(), "not-found");
            ApiError::not_found(err.to_string())
        }
        WriteError::Store(_) => {
            state.metrics.write(key.kind.as_str(), "error");
            store_failure("write", &err)
        }
    }
}

/// Authorizes and commits a write made at this site, then wakes the streaming links
/// (`SyncEngine::write_local`, the one write path). A write the authority rules forbid at this
/// site (a scope it does not hold, an override its autonomy does not allow, a release it may
/// not deploy) is a 403 naming the rule and the site's authority, with an audit entry and a
/// `refusal` event.
pub(crate) async fn commit(state: &AppState, write: LocalWrite) -> Result<Committed, ApiError> {
    let key = write.key.clone();
    let started = Instant::now();
    let result = state.engine.write_local(write).await;
    state.metrics.store_latency("write", started.elapsed());
    write_outcome(state, &key, result)
}

/// A local write's outcome as the API answers it (and counts it in the metrics).
pub(crate) fn write_outcome(
    state: &AppState,
    key: &ObjectKey,
    result: Result<Committed, LocalWriteError>,
) -> Result<Committed, ApiError> {
    match result {
        Ok(committed) => {
            state.metrics.write(key.kind.as_str(), "applied");
            Ok(committed)
        }
        Err(LocalWriteError::Refused(refusal)) => {
            state.metrics.write(key.kind.as_str(), "refused");
            Err(ApiError::forbidden(
                "authority",
                format!("{} (rule `{}`)", refusal.detail, refusal.rule.as_str()),
            ))
        }
        Err(LocalWriteError::Write(err)) => Err(write_error(state, key, err)),
        Err(LocalWriteError::Internal(err)) => {
            tracing::error!(operation = "write", error = %err, "store task failed");
            Err(ApiError::internal())
        }
    }
}

/// Creates or updates an object.
#[utoipa::path(
    put,
    path = "/v1/objects/{kind}/{scope}/{name}",
    params(
        ("kind" = String, Path, description = "Policy, Release, Rollout or SiteStatus"),
        ("scope" = String, Path, description = "the scope the object belongs to, such as `global` or `region-a`"),
        ("name" = String, Path, description = "the object's name"),
        ("If-Match" = Option<String>, Header, description = "apply only if this is the current version"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: create only if the object does not exist"),
        ("x-souverix-author" = Option<String>, Header, description = "who makes the change"),
    ),
    request_body = ObjectDocument,
    responses(
        (status = 200, description = "updated", body = ObjectDocument),
        (status = 201, description = "created", body = ObjectDocument),
        (status = 400, description = "the document or path is not valid", body = Problem),
        (status = 412, description = "the object's current version is not the one in If-Match", body = Problem),
        (status = 413, description = "the body is too large", body = Problem),
    )
)]
pub async fn put_object(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = parse_key(path)?;
    let bytes = read_limited(body, state.max_body).await?;
    let valid = ObjectDocument::parse_body(&bytes)
        .map_err(|e| ApiError::bad_request("bad-document", e.to_string()))?;
    if valid.key != key {
        return Err(ApiError::bad_request(
            "bad-document",
            format!("the document describes {} but the URL names {key}: make them agree", valid.key),
        ));
    }
    let write = LocalWrite {
        key,
        labels: valid.labels,
        spec: valid.spec,
        deleted: false,
        author: author(&headers)?,
        precondition: precondition(&headers)?,
        now_ms: state.clock.now_ms(),
    };
    let committed = commit(&state, write).await?;
    let status = if committed.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(document_response(status, committed.object))
}

/// Reads an object's current version.
#[utoipa::path(
    get,
    path = "/v1/objects/{kind}/{scope}/{name}",
    params(("kind" = String, Path), ("scope" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "the object", body = ObjectDocument),
        (status = 404, description = "no such object, or it was deleted", body = Problem),
    )
)]
pub async fn get_object(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = parse_key(path)?;
    let lookup = key.clone();
    let object = blocking(&state, "get", move |s| s.get(&lookup)).await?;
    match object {
        Some(object) if !object.version.deleted => Ok(document_response(StatusCode::OK, object)),
        Some(object) => Err(ApiError::not_found(format!(
            "{key} was deleted by {} at version {}; its history is at /v1/objects/{}/{}/{}/history",
            object.version.author,
            object.version.id(),
            key.kind,
            key.scope,
            key.name
        ))),
        None => Err(ApiError::not_found(format!("{key} does not exist"))),
    }
}

/// Deletes an object: writes a tombstone version, which is kept in the history.
#[utoipa::path(
    delete,
    path = "/v1/objects/{kind}/{scope}/{name}",
    params(
        ("kind" = String, Path), ("scope" = String, Path), ("name" = String, Path),
        ("If-Match" = Option<String>, Header, description = "delete only if this is the current version"),
    ),
    responses(
        (status = 200, description = "the tombstone", body = ObjectDocument),
        (status = 404, description = "no such object", body = Problem),
        (status = 412, description = "the object's current version is not the one in If-Match", body = Problem),
    )
)]
pub async fn delete_object(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = parse_key(path)?;
    let write = LocalWrite {
        key,
        labels: BTreeMap::new(),
        spec: serde_json::Value::Null,
        deleted: true,
        author: author(&headers)?,
        precondition: precondition(&headers)?,
        now_ms: state.clock.now_ms(),
    };
    let committed = commit(&state, write).await?;
    Ok(document_response(StatusCode::OK, committed.object))
}

/// Query of `GET /v1/objects`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only objects of this kind.
    kind: Option<String>,
    /// Only objects in this scope.
    scope: Option<String>,
    /// Include tombstones of deleted objects.
    #[serde(default)]
    include_deleted: bool,
    /// Continue after this object (`next` of the previous page).
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// A page of objects.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ObjectPage {
    pub items: Vec<ObjectDocument>,
    /// Pass as `after` to read the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

pub(crate) fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=store::MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(
            "bad-query",
            format!("limit is {n}; it must be between 1 and {}", store::MAX_PAGE),
        )),
    }
}

/// Lists objects, filtered by kind and scope, in `(kind, scope, name)` order.
#[utoipa::path(
    get,
    path = "/v1/objects",
    params(ListQuery),
    responses(
        (status = 200, description = "a page of objects", body = ObjectPage),
        (status = 400, description = "a filter is not valid", body = Problem),
    )
)]
pub async fn list_objects(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ObjectPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad-query", e.body_text()))?;
    let bad = |e: model::IdError| ApiError::bad_request("bad-query", e.to_string());
    let kind: Option<Kind> = query.kind.as_deref().map(str::parse).transpose().map_err(bad)?;
    let scope = query.scope.map(Scope::new).transpose().map_err(bad)?;
    let after = match query.after.as_deref() {
        None => None,
        Some(raw) => {
            let mut parts = raw.splitn(3, '/');
            let (Some(k), Some(s), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ApiError::bad_request(
                    "bad-query",
                    format!(
                        "after is `{raw}`; it must be the `next` value of the previous page, such as `Policy/global/name`"
                    ),
                ));
            };
            Some(ObjectKey::parse(k, s, n).map_err(bad)?)
        }
    };
    let limit = page_size(query.limit)?;
    let filter = ListFilter { kind, scope, include_deleted: query.include_deleted, after, limit: limit + 1 };
    let mut objects = blocking(&state, "list", move |s| s.list(&filter)).await?;
    let next = if objects.len() > limit {
        objects.truncate(limit);
        objects.last().map(|o| o.key.to_string())
    } else {
        None
    };
    Ok(Json(ObjectPage { items: objects.iter().map(StoredObject::to_document).collect(), next }))
}

/// One version in an object's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryItem {
    /// The position in this site's change log at which the version was accepted.
    pub seq: u64,
    pub version: String,
    pub origin: String,
    pub author: String,
    /// When the version was written (RFC 3339).
    pub time: String,
    pub deleted: bool,
    pub content_hash: String,
    pub version_vector: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
}

impl From<&HistoryEntry> for HistoryItem {
    fn from(entry: &HistoryEntry) -> Self {
        let v = &entry.version;
        Self {
            seq: entry.seq,
            version: v.id().to_string(),
            origin: v.origin.to_string(),
            author: v.author.clone(),
            time: format_rfc3339_millis(v.hlc.wall_ms),
            deleted: v.deleted,
            content_hash: v.content_hash.to_string(),
            version_vector: v.vv.entries().map(|(s, c)| (s.to_string(), c)).collect(),
            labels: entry.labels.clone(),
            spec: entry.spec.clone(),
        }
    }
}

/// Every version of one object that this site holds, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    pub object: String,
    pub items: Vec<HistoryItem>,
}

/// Lists every version of an object this site has accepted, deletes included, oldest first.
#[utoipa::path(
    get,
    path = "/v1/objects/{kind}/{scope}/{name}/history",
    params(("kind" = String, Path), ("scope" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "the object's versions", body = HistoryPage),
        (status = 404, description = "the object never existed here", body = Problem),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let key = parse_key(path)?;
    let lookup = key.clone();
    let entries = blocking(&state, "history", move |s| s.history(&lookup)).await?;
    if entries.is_empty() {
        return Err(ApiError::not_found(format!("{key} has no history at this site: it never existed here")));
    }
    Ok(Json(HistoryPage { object: key.to_string(), items: entries.iter().map(HistoryItem::from).collect() }))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries after this sequence number (`next` of the previous page), oldest first.
    after: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<usize>,
    /// Instead of paging from the start: the newest `tail` entries.
    tail: Option<usize>,
}

/// One entry of the audit log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditItem {
    pub seq: u64,
    /// When (RFC 3339).
    pub time: String,
    pub actor: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub outcome: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub detail: String,
}

impl From<&AuditEntry> for AuditItem {
    fn from(entry: &AuditEntry) -> Self {
        let r = &entry.record;
        Self {
            seq: entry.seq,
            time: format_rfc3339_millis(r.at_ms),
            actor: r.actor.clone(),
            action: r.action.clone(),
            object: r.key.as_ref().map(ToString::to_string),
            version: r.version.as_ref().map(ToString::to_string),
            outcome: r.outcome.clone(),
            detail: r.detail.clone(),
        }
    }
}

/// A page of the audit log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditItem>,
    /// Pass as `after` to read the next page; absent when there is nothing more now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// Reads the append-only audit log: who did what, when, with what outcome.
#[utoipa::path(
    get,
    path = "/v1/audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "a page of the audit log", body = AuditPage),
        (status = 400, description = "a parameter is not valid", body = Problem),
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad-query", e.body_text()))?;
    if let Some(tail) = query.tail {
        if query.after.is_some() {
            return Err(ApiError::bad_request("bad-query", "give either `tail` or `after`, not both"));
        }
        let n = page_size(Some(tail))?;
        let entries = blocking(&state, "audit", move |s| s.audit_tail(n)).await?;
        return Ok(Json(AuditPage { items: entries.iter().map(AuditItem::from).collect(), next: None }));
    }
    let limit = page_size(query.limit)?;
    let after = query.after.unwrap_or(0);
    let entries = blocking(&state, "audit", move |s| s.audit(after, limit)).await?;
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.seq)).flatten();
    Ok(Json(AuditPage { items: entries.iter().map(AuditItem::from).collect(), next }))
}

/// Who this site is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SiteDocument {
    pub id: String,
    pub scope: String,
    pub level: String,
    /// `Site.trust_domain`, when the site was started from a configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    pub version: String,
}

/// Describes the site answering.
#[utoipa::path(get, path = "/v1/site", responses((status = 200, description = "the site", body = SiteDocument)))]
pub async fn site(State(state): State<AppState>) -> Json<SiteDocument> {
    Json(SiteDocument {
        id: state.site.id.to_string(),
        scope: state.site.scope.to_string(),
        level: state.site.level.to_string(),
        trust_domain: state.fleet.trust_domain.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

async fn healthz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let last_seq = blocking(&state, "health", |s| s.last_seq()).await?;
    Ok(Json(serde_json::json!({ "status": "ok", "site": state.site.id.as_str(), "lastSeq": last_seq })))
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.observe_sync(&state.engine.status().await);
    state.metrics.observe_local_commits(state.engine.local_commits());
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::openapi_document())
}
