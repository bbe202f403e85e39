//! The sync endpoints: batches and digests from neighbours, sync status, `sync now`, and
//! connectivity signals.

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use model::SiteId;
use replication::{DigestRequest, LinkError, LinkStatus, ReceiveError, Signal, SyncStatus};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::body::read_limited;
use crate::problem::{ApiError, Problem};

/// The largest sync batch a site accepts (compressed).
const MAX_BATCH_BODY: usize = 32 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sync", get(status))
        .route("/v1/sync/now", post(sync_now))
        .route("/v1/sync/batch", post(batch))
        .route("/v1/sync/digest", post(digest))
        .route("/v1/links/{peer}/signal", post(signal))
}

fn receive_error(err: ReceiveError) -> ApiError {
    match err {
        ReceiveError::Decode(_)
        | ReceiveError::Misaddressed { .. }
        | ReceiveError::BadHello { .. }
        | ReceiveError::Malformed(_) => ApiError::bad_request("bad-batch", err.to_string()),
        ReceiveError::NotNeighbour { .. } => ApiError::forbidden("not-a-neighbour", err.to_string()),
        ReceiveError::LinkDown { .. } => ApiError::unavailable("link-down", err.to_string()),
        ReceiveError::ClockSkew(_) => ApiError::unprocessable("clock-skew", err.to_string()),
        ReceiveError::Store(_) | ReceiveError::Internal(_) => {
            tracing::error!(error = %err, "applying a sync batch failed");
            ApiError::internal()
        }
    }
}

/// Receives a batch of versions from a neighbour (the sync engine of its parent or a child).
async fn batch(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_limited(body, MAX_BATCH_BODY).await?;
    let ack = state.engine.receive(&bytes).await.map_err(receive_error)?;
    state.metrics.received(ack.applied, ack.duplicates);
    Ok(Json(ack).into_response())
}

/// Answers a neighbour's digest exchange.
async fn digest(
    State(state): State<AppState>,
    request: Result<Json<DigestRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = request.map_err(|e| ApiError::bad_request("bad-digest", e.body_text()))?;
    let reply = state.engine.digest(request).await.map_err(receive_error)?;
    Ok(Json(reply).into_response())
}

/// The sync status of every link of this site: state, debt, last sync.
#[utoipa::path(
    get,
    path = "/v1/sync",
    responses((status = 200, description = "every link of this site", body = Object))
)]
pub async fn status(State(state): State<AppState>) -> Json<SyncStatus> {
    Json(state.engine.status().await)
}

/// Runs a sync round on every link now and answers when each has finished one (or after 30 s).
#[utoipa::path(
    post,
    path = "/v1/sync/now",
    responses((status = 200, description = "the status after the round", body = Object))
)]
pub async fn sync_now(State(state): State<AppState>) -> Json<SyncStatus> {
    Json(state.engine.sync_now().await)
}

/// Body of a connectivity signal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// `up`, `down` (cut: nothing is sent or accepted) or `metered` (no streaming).
    pub state: String,
}

/// Tells the site that its link with `peer` is up, down or metered.
#[utoipa::path(
    post,
    path = "/v1/links/{peer}/signal",
    params(("peer" = String, Path, description = "the neighbour at the other end of the link")),
    request_body = SignalBody,
    responses(
        (status = 200, description = "the link's status", body = Object),
        (status = 400, description = "not a valid signal", body = Problem),
        (status = 404, description = "no link with that site", body = Problem),
    )
)]
pub async fn signal(
    State(state): State<AppState>,
    peer: Result<Path<String>, PathRejection>,
    body: Result<Json<SignalBody>, JsonRejection>,
) -> Result<Json<LinkStatus>, ApiError> {
    let Path(peer) = peer.map_err(|e| ApiError::bad_request("bad-path", e.body_text()))?;
    let peer = SiteId::new(peer).map_err(|e| ApiError::bad_request("bad-path", e.to_string()))?;
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(
            "bad-signal",
            format!("{}; send {{\"state\": \"up\"}}, \"down\" or \"metered\"", e.body_text()),
        )
    })?;
    let signal: Signal = body.state.parse().map_err(|e: String| ApiError::bad_request("bad-signal", e))?;
    match state.engine.signal(&peer, signal).await {
        Ok(status) => Ok(Json(status)),
        Err(err @ LinkError::UnknownPeer { .. }) => Err(ApiError::not_found(err.to_string())),
        Err(err @ LinkError::Store(_)) => {
            tracing::error!(error = %err, "saving a link signal failed");
            Err(ApiError::internal())
        }
    }
}
