//! The conflict endpoints: list the conflicts a site recorded, see both sides, acknowledge a
//! provisional winner, or resolve by picking a side (a new local version that dominates both).

use std::collections::BTreeMap;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use model::{ObjectDocument, ObjectKey, VersionId, format_rfc3339_millis};
use serde::{Deserialize, Serialize};
use store::{ConflictFilter, ConflictRecord, ConflictStatus, LocalWrite, Precondition};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::api::{HistoryItem, author, blocking, commit, page_size};
use crate::problem::{ApiError, Problem};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/conflicts", get(list_conflicts))
        .route("/v1/conflicts/{id}", get(show_conflict))
        .route("/v1/conflicts/{id}/ack", post(acknowledge_conflict))
        .route("/v1/conflicts/{id}/resolve", post(resolve_conflict))
}

/// One side of a conflict.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictSideItem {
    pub version: String,
    pub origin: String,
    pub author: String,
    /// The side is a delete (a tombstone).
    pub deleted: bool,
}

/// A conflict record: two versions of one object written concurrently, and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConflictItem {
    /// 16 hex digits, the same at every site that recorded the conflict.
    pub id: String,
    /// `Kind/scope/name`.
    pub object: String,
    /// The two sides, in version order.
    pub sides: Vec<ConflictSideItem>,
    /// `last-write-wins`, `authority-wins` or `manual`.
    pub strategy: String,
    /// The version the strategy chose (provisional while the conflict is open).
    pub winner: String,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    /// When this site detected it (RFC 3339).
    pub detected_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<String>,
    /// The later version that dominates both sides, once one was written or arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
}

impl From<&ConflictRecord> for ConflictItem {
    fn from(r: &ConflictRecord) -> Self {
        Self {
            id: r.id.clone(),
            object: r.key.to_string(),
            sides: r
                .sides
                .iter()
                .map(|s| ConflictSideItem {
                    version: s.version.to_string(),
                    origin: s.origin.to_string(),
                    author: s.author.clone(),
                    deleted: s.deleted,
                })
                .collect(),
            strategy: r.strategy.to_string(),
            winner: r.winner.to_string(),
            status: r.status.as_str().to_owned(),
            detected_at: format_rfc3339_millis(r.detected_ms),
            acknowledged_by: r.acknowledged.as_ref().map(|(who, _)| who.clone()),
            acknowledged_at: r.acknowledged.as_ref().map(|(_, at)| format_rfc3339_millis(*at)),
            resolved_by: r.resolved_by.as_ref().map(ToString::to_string),
        }
    }
}

/// Query of `GET /v1/conflicts`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConflictQuery {
    /// `open`, `acknowledged`, `resolved` or `all`; default: open and acknowledged (what needs
    /// attention).
    status: Option<String>,
    /// Only the conflicts of this object, `Kind/scope/name`.
    object: Option<String>,
    /// At most this many, newest first: 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// Conflicts, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConflictPage {
    pub items: Vec<ConflictItem>,
    /// True when more conflicts match than `limit`: narrow the filter or raise the limit.
    #[serde(default)]
    pub more: bool,
}

/// A conflict with the full content of both sides, from the object's history, and the
/// object's current version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConflictDetail {
    pub conflict: ConflictItem,
    /// The two sides' versions with their labels and spec, in the order of `conflict.sides`.
    pub versions: Vec<HistoryItem>,
    /// The object as it is now at this site (a tombstone when deleted).
    pub current: ObjectDocument,
}

/// Body of `POST /v1/conflicts/{id}/resolve`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// The version whose content becomes current: one of the conflict's two sides.
    pub pick: String,
}

/// What resolving wrote.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Resolution {
    /// The new current version: the picked side's content, written at this site.
    pub object: ObjectDocument,
    /// The conflict record after the write.
    pub conflict: ConflictItem,
}

/// Statuses that need an operator's attention.
const ATTENTION: [ConflictStatus; 2] = [ConflictStatus::Open, ConflictStatus::Acknowledged];

fn parse_status(raw: Option<&str>) -> Result<Vec<Option<ConflictStatus>>, ApiError> {
    Ok(match raw {
        None => ATTENTION.iter().copied().map(Some).collect(),
        Some("all") => vec![None],
        Some("open") => vec![Some(ConflictStatus::Open)],
        Some("acknowledged") => vec![Some(ConflictStatus::Acknowledged)],
        Some("resolved") => vec![Some(ConflictStatus::Resolved)],
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad-query",
                format!(
                    "status is `{other}`; it must be `open`, `acknowledged`, `resolved` or `all` (without it: open and acknowledged)"
                ),
            ));
        }
    })
}

fn parse_object(raw: &str) -> Result<ObjectKey, ApiError> {
    let mut parts = raw.splitn(3, '/');
    let (Some(kind), Some(scope), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ApiError::bad_request(
            "bad-query",
            format!(
                "object is `{raw}`; it must name one object as `Kind/scope/name`, such as `Policy/global/baseline`"
            ),
        ));
    };
    ObjectKey::parse(kind, scope, name)
        .map_err(|e| ApiError::bad_request("bad-query", format!("object: {e}")))
}

/// A conflict id from the path: 16 lowercase hex digits.
fn parse_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request("bad-path", e.body_text()))?;
    let valid = id.len() == 16 && id.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if !valid {
        return Err(ApiError::bad_request(
            "bad-path",
            format!(
                "`{id}` is not a conflict id; an id is 16 hex digits, such as `3f2a9c0d41b7e865` (`souverix conflicts list` shows them)"
            ),
        ));
    }
    Ok(id)
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "this site has recorded no conflict `{id}`; `GET /v1/conflicts?status=all` lists the ones it has"
    ))
}

async fn find(state: &AppState, id: &str) -> Result<ConflictRecord, ApiError> {
    let lookup = id.to_owned();
    blocking(state, "conflict", move |s| s.conflict(&lookup)).await?.ok_or_else(|| unknown(id))
}

/// Lists the conflicts this site recorded, newest first.
#[utoipa::path(
    get,
    path = "/v1/conflicts",
    params(ConflictQuery),
    responses(
        (status = 200, description = "conflicts, newest first", body = ConflictPage),
        (status = 400, description = "a parameter is not valid", body = Problem),
    )
)]
pub async fn list_conflicts(
    State(state): State<AppState>,
    query: Result<Query<ConflictQuery>, QueryRejection>,
) -> Result<Json<ConflictPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad-query", e.body_text()))?;
    let statuses = parse_status(query.status.as_deref())?;
    let key = query.object.as_deref().map(parse_object).transpose()?;
    let limit = page_size(query.limit)?;
    // One more than asked tells whether there are more; the store's pages end at MAX_PAGE.
    let fetch = (limit + 1).min(store::MAX_PAGE);
    let mut records = blocking(&state, "conflicts", move |s| {
        let mut all = Vec::new();
        for status in statuses {
            let filter = ConflictFilter { status, key: key.clone(), limit: fetch };
            all.extend(s.conflicts(&filter)?);
        }
        Ok(all)
    })
    .await?;
    records.sort_by(|a, b| b.detected_ms.cmp(&a.detected_ms).then_with(|| a.id.cmp(&b.id)));
    let more = records.len() > limit;
    records.truncate(limit);
    Ok(Json(ConflictPage { items: records.iter().map(ConflictItem::from).collect(), more }))
}

/// One conflict, with both sides' full content side by side and the object's current version.
#[utoipa::path(
    get,
    path = "/v1/conflicts/{id}",
    params(("id" = String, Path, description = "the conflict's id, 16 hex digits")),
    responses(
        (status = 200, description = "the conflict and both versions", body = ConflictDetail),
        (status = 400, description = "not a conflict id", body = Problem),
        (status = 404, description = "no such conflict at this site", body = Problem),
    )
)]
pub async fn show_conflict(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ConflictDetail>, ApiError> {
    let id = parse_id(id)?;
    let record = find(&state, &id).await?;
    let key = record.key.clone();
    let (history, current) =
        blocking(&state, "conflict", move |s| Ok((s.history(&key)?, s.get(&key)?))).await?;
    let mut versions = Vec::with_capacity(2);
    for side in &record.sides {
        let Some(entry) = history.iter().find(|e| e.version.id() == side.version) else {
            tracing::error!(conflict = %id, version = %side.version, "a side of a conflict is missing from the object's history");
            return Err(ApiError::internal());
        };
        versions.push(HistoryItem::from(entry));
    }
    let Some(current) = current else {
        tracing::error!(conflict = %id, object = %record.key, "the object of a conflict is missing");
        return Err(ApiError::internal());
    };
    Ok(Json(ConflictDetail {
        conflict: ConflictItem::from(&record),
        versions,
        current: current.to_document(),
    }))
}

/// Acknowledges an open conflict: its provisional winner stays current and it no longer needs
/// attention. Acknowledging again changes nothing.
#[utoipa::path(
    post,
    path = "/v1/conflicts/{id}/ack",
    params(
        ("id" = String, Path, description = "the conflict's id"),
        ("x-souverix-author" = Option<String>, Header, description = "who acknowledges"),
    ),
    responses(
        (status = 200, description = "the acknowledged conflict", body = ConflictItem),
        (status = 404, description = "no such conflict at this site", body = Problem),
        (status = 409, description = "the conflict is already resolved", body = Problem),
    )
)]
pub async fn acknowledge_conflict(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<ConflictItem>, ApiError> {
    let id = parse_id(id)?;
    let actor = author(&headers)?;
    let now = state.clock.now_ms();
    let lookup = id.clone();
    let record = blocking(&state, "acknowledge", move |s| s.acknowledge_conflict(&lookup, &actor, now))
        .await?
        .ok_or_else(|| unknown(&id))?;
    if record.status == ConflictStatus::Resolved {
        let how = match &record.resolved_by {
            Some(v) => format!("by version {v}, which supersedes both sides"),
            None => format!("by its strategy ({}), which chose {}", record.strategy, record.winner),
        };
        return Err(ApiError::conflict(
            "conflict-resolved",
            format!(
                "conflict `{id}` on {} is already resolved {how}; there is nothing to acknowledge",
                record.key
            ),
        ));
    }
    Ok(Json(ConflictItem::from(&record)))
}

/// Resolves a conflict by picking one side: writes a new version of the object at this site
/// with the picked side's labels and spec (or a delete, if the picked side is one), on top of
/// the current version. Its version vector dominates both sides, so the conflict is resolved
/// here and at every site the new version reaches.
#[utoipa::path(
    post,
    path = "/v1/conflicts/{id}/resolve",
    params(
        ("id" = String, Path, description = "the conflict's id"),
        ("x-souverix-author" = Option<String>, Header, description = "who resolves"),
    ),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "the new version and the resolved conflict", body = Resolution),
        (status = 400, description = "the pick is not one of the two sides", body = Problem),
        (status = 403, description = "this site may not write the object", body = Problem),
        (status = 404, description = "no such conflict at this site", body = Problem),
        (status = 409, description = "a later version already resolved the conflict", body = Problem),
        (status = 412, description = "the object changed while resolving: try again", body = Problem),
    )
)]
pub async fn resolve_conflict(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Json<ResolveBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let author = author(&headers)?;
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(
            "bad-body",
            format!(
                "{}; send {{\"pick\": \"<version>\"}} with one of the conflict's two versions",
                e.body_text()
            ),
        )
    })?;
    let record = find(&state, &id).await?;
    if let Some(later) = &record.resolved_by {
        return Err(ApiError::conflict(
            "conflict-resolved",
            format!(
                "conflict `{id}` on {} was already resolved by version {later}, which supersedes both sides; to change the object now, write it",
                record.key
            ),
        ));
    }
    let sides: Vec<String> = record.sides.iter().map(|s| format!("`{}`", s.version)).collect();
    let pick: Option<VersionId> = body.pick.trim().parse().ok();
    let Some(pick) = pick.filter(|p| record.sides.iter().any(|s| s.version == *p)) else {
        return Err(ApiError::bad_request(
            "bad-pick",
            format!("`{}` is not a side of conflict `{id}`; pick {} or {}", body.pick, sides[0], sides[1]),
        ));
    };
    let key = record.key.clone();
    let (history, current) =
        blocking(&state, "conflict", move |s| Ok((s.history(&key)?, s.get(&key)?))).await?;
    let Some(picked) = history.into_iter().find(|e| e.version.id() == pick) else {
        tracing::error!(conflict = %id, version = %pick, "a side of a conflict is missing from the object's history");
        return Err(ApiError::internal());
    };
    let Some(current) = current else {
        tracing::error!(conflict = %id, object = %record.key, "the object of a conflict is missing");
        return Err(ApiError::internal());
    };
    if picked.version.deleted && current.version.deleted {
        return Err(ApiError::conflict(
            "already-deleted",
            format!(
                "{} is already deleted (version {}), which is what picking {pick} would do; acknowledge the conflict instead (POST /v1/conflicts/{id}/ack)",
                record.key,
                current.version.id()
            ),
        ));
    }
    // Compare-and-set on what was read: a tombstone is matched by `Absent`.
    let precondition = if current.version.deleted {
        Precondition::Absent
    } else {
        Precondition::Version(current.version.id())
    };
    let write = LocalWrite {
        key: record.key.clone(),
        labels: if picked.version.deleted { BTreeMap::new() } else { picked.labels },
        spec: if picked.version.deleted { serde_json::Value::Null } else { picked.spec },
        deleted: picked.version.deleted,
        author,
        precondition: Some(precondition),
        now_ms: state.clock.now_ms(),
    };
    let committed = commit(&state, write).await?;
    let updated = find(&state, &id).await?;
    if updated.status != ConflictStatus::Resolved {
        tracing::warn!(conflict = %id, version = %committed.object.version.id(), "a version written to resolve a conflict did not resolve it");
    }
    let resolution =
        Resolution { object: committed.object.to_document(), conflict: ConflictItem::from(&updated) };
    Ok((StatusCode::OK, Json(resolution)).into_response())
}
