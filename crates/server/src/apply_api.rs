//! `POST /v1/apply`: many objects in one request, as `souverix apply -f` sends a file of many
//! documents. Every document is validated first (one bad document rejects the request and
//! changes nothing); then each write is checked against the authority rules on its own and the
//! allowed ones commit together in one durable transaction (`SyncEngine::write_local_batch`).
//! The answer lists one outcome per document, in order: created, updated, or the problem that
//! refused it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use model::ObjectDocument;
use serde::{Deserialize, Serialize};
use store::LocalWrite;
use utoipa::ToSchema;

use crate::AppState;
use crate::api::{author, write_outcome};
use crate::body::read_limited;
use crate::problem::{ApiError, Problem};

/// The most documents one request may carry.
pub const MAX_DOCUMENTS: usize = 1_000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/apply", post(apply))
}

/// The body of `POST /v1/apply`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// The documents to write, applied in this order (a later one of the same object wins).
    #[schema(value_type = Vec<ObjectDocument>)]
    pub items: Vec<serde_json::Value>,
}

/// What became of one document.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyOutcome {
    /// `Kind/scope/name`.
    pub object: String,
    /// 201 created, 200 updated, or the status of the problem that refused it.
    pub status: u16,
    /// The version written, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why it was refused, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub problem: Option<serde_json::Value>,
}

/// The answer of `POST /v1/apply`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApplyResponse {
    pub items: Vec<ApplyOutcome>,
    /// How many documents were written.
    pub written: usize,
    /// How many were refused.
    pub refused: usize,
}

/// Writes many objects: validated together, authorized one by one, committed together.
#[utoipa::path(
    post,
    path = "/v1/apply",
    params(("x-souverix-author" = Option<String>, Header, description = "who makes the change")),
    request_body = ApplyRequest,
    responses(
        (status = 200, description = "one outcome per document, in order", body = ApplyResponse),
        (status = 400, description = "a document is not valid; nothing was written", body = Problem),
        (status = 413, description = "the body is too large", body = Problem),
    )
)]
pub async fn apply(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ApplyResponse>, ApiError> {
    let bytes = read_limited(body, state.max_body).await?;
    let request: ApplyRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "bad-document",
            format!("the body is not a valid apply request (`{{\"items\": [documents]}}`): {e}"),
        )
    })?;
    if request.items.len() > MAX_DOCUMENTS {
        return Err(ApiError::bad_request(
            "too-many-documents",
            format!(
                "the request carries {} documents; send at most {MAX_DOCUMENTS} per request",
                request.items.len()
            ),
        ));
    }
    let author = author(&headers)?;
    let now_ms = state.clock.now_ms();
    let mut writes = Vec::with_capacity(request.items.len());
    for (i, item) in request.items.into_iter().enumerate() {
        let valid = serde_json::from_value::<ObjectDocument>(item)
            .map_err(|e| e.to_string())
            .and_then(|d| d.validate().map_err(|e| e.to_string()))
            .map_err(|e| {
                ApiError::bad_request(
                    "bad-document",
                    format!("document {} of the request is not valid (nothing was written): {e}", i + 1),
                )
            })?;
        writes.push(LocalWrite {
            key: valid.key,
            labels: valid.labels,
            spec: valid.spec,
            deleted: false,
            author: author.clone(),
            precondition: None,
            now_ms,
        });
    }
    let keys: Vec<_> = writes.iter().map(|w| w.key.clone()).collect();
    let started = std::time::Instant::now();
    let results = state.engine.write_local_batch(writes).await;
    state.metrics.store_latency("write", started.elapsed());
    let mut items = Vec::with_capacity(keys.len());
    for (key, result) in keys.iter().zip(results) {
        items.push(match write_outcome(&state, key, result) {
            Ok(committed) => ApplyOutcome {
                object: key.to_string(),
                status: if committed.created { StatusCode::CREATED } else { StatusCode::OK }.as_u16(),
                version: Some(committed.object.version.id().to_string()),
                problem: None,
            },
            Err(err) => ApplyOutcome {
                object: key.to_string(),
                status: err.status().as_u16(),
                version: None,
                problem: serde_json::to_value(err.problem()).ok(),
            },
        });
    }
    let written = items.iter().filter(|i| i.version.is_some()).count();
    let refused = items.len() - written;
    Ok(Json(ApplyResponse { items, written, refused }))
}
