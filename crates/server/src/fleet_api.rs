//! The fleet endpoints (docs/fleet.md): node heartbeats and listing, the objects in effect,
//! drift, and the global and site views.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use model::{ObjectDocument, ObjectKey, ObjectName, SiteId, VersionId, format_rfc3339_millis};
use serde::{Deserialize, Serialize};
use store::Heartbeat;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::api::{blocking, page_size};
use crate::body::read_limited;
use crate::fleet::{FleetView, Knowledge, NodeStatus, ViewLink, node_status};
use crate::problem::{ApiError, Problem};
use crate::site_status::{self, desired, for_each_node, scan_nodes};

/// The most entries a heartbeat's `applied` may hold.
pub const MAX_APPLIED: usize = 10_000;
const MAX_SOFTWARE_VERSION_LEN: usize = 64;
/// The longest heartbeat interval a node may announce (a day).
const MAX_INTERVAL_SECONDS: u32 = 86_400;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{id}/heartbeat", post(heartbeat))
        .route("/v1/effective", get(effective))
        .route("/v1/drift", get(drift))
        .route("/v1/views/global", get(global_view))
        .route("/v1/views/site/{id}", get(site_view))
}

/// A node's health as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Failing,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Failing => "failing",
        }
    }
}

/// Body of `POST /v1/nodes/{id}/heartbeat`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// The node's software version, such as `1.4.2`.
    pub software_version: String,
    pub health: Health,
    /// How often this node heartbeats, in seconds (1 to 86400).
    pub interval_seconds: u32,
    /// The version of each object the node has applied: `Kind/scope/name` → version.
    #[serde(default)]
    pub applied: BTreeMap<String, String>,
}

/// What a heartbeat answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    pub node: String,
    #[schema(value_type = String)]
    pub status: NodeStatus,
    /// The etag of the objects in effect: refetch `/v1/effective` when it changes.
    pub effective: String,
}

fn node_id(path: Result<Path<String>, PathRejection>) -> Result<ObjectName, ApiError> {
    let Path(id) =
        path.map_err(|e| ApiError::bad_request("bad-path", format!("the node id is not valid: {e}")))?;
    ObjectName::new(id).map_err(|e| {
        ApiError::bad_request(
            "bad-path",
            format!("{e}; a node id is written like an object name, such as `a2-node-07`"),
        )
    })
}

fn bad_heartbeat(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request("bad-heartbeat", detail)
}

/// Checks a heartbeat body: a printable software version, an interval within bounds, and
/// applied entries that name objects and versions.
fn check_heartbeat(body: &HeartbeatBody) -> Result<(), ApiError> {
    let version = &body.software_version;
    if version.is_empty()
        || version.len() > MAX_SOFTWARE_VERSION_LEN
        || version.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(bad_heartbeat(format!(
            "software_version must be 1 to {MAX_SOFTWARE_VERSION_LEN} printable characters without spaces, such as `1.4.2`"
        )));
    }
    if !(1..=MAX_INTERVAL_SECONDS).contains(&body.interval_seconds) {
        return Err(bad_heartbeat(format!(
            "interval_seconds is {}; it must be between 1 and {MAX_INTERVAL_SECONDS}",
            body.interval_seconds
        )));
    }
    if body.applied.len() > MAX_APPLIED {
        return Err(bad_heartbeat(format!(
            "applied lists {} objects; at most {MAX_APPLIED} are accepted",
            body.applied.len()
        )));
    }
    for (key, version) in &body.applied {
        let mut parts = key.splitn(3, '/');
        let parsed = match (parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(s), Some(n)) => ObjectKey::parse(k, s, n).map_err(|e| e.to_string()),
            _ => Err("it is not `Kind/scope/name`".to_owned()),
        };
        if let Err(problem) = parsed {
            return Err(bad_heartbeat(format!(
                "applied names `{key}`: {problem}; name objects as `Kind/scope/name`, such as `Policy/global/baseline-security`"
            )));
        }
        if let Err(e) = version.parse::<VersionId>() {
            return Err(bad_heartbeat(format!("applied[`{key}`]: {e}")));
        }
    }
    Ok(())
}

/// Records a node's heartbeat; the first one registers the node.
#[utoipa::path(
    post,
    path = "/v1/nodes/{id}/heartbeat",
    params(("id" = String, Path, description = "the node's id, written like an object name, such as `a2-node-07`")),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "recorded", body = HeartbeatAnswer),
        (status = 400, description = "the node id or the body is not valid", body = Problem),
        (status = 413, description = "the body is too large", body = Problem),
    )
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let node = node_id(path)?;
    let bytes = read_limited(body, state.max_body).await?;
    let body: HeartbeatBody = serde_json::from_slice(&bytes)
        .map_err(|e| bad_heartbeat(format!("the body is not a valid heartbeat: {e}")))?;
    check_heartbeat(&body)?;
    let effective = site_status::effective(&state).await?;
    let now_ms = state.clock.now_ms();
    let beat = Heartbeat {
        node,
        at_ms: now_ms,
        interval_seconds: body.interval_seconds,
        software_version: body.software_version,
        health: body.health.as_str().to_owned(),
        applied: body.applied,
    };
    let record = blocking(&state, "heartbeat", move |s| s.record_heartbeat(&beat)).await?;
    let status =
        node_status(record.last_heartbeat_ms, record.previous_heartbeat_ms, now_ms, state.fleet.thresholds);
    Ok(Json(HeartbeatAnswer { node: record.id.to_string(), status, effective: effective.etag.clone() }))
}

/// Query of `GET /v1/nodes`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NodesQuery {
    /// Only nodes with this status: `Live`, `Delayed` or `Offline`.
    status: Option<String>,
    /// Continue after this node (`next` of the previous page).
    after: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<usize>,
}

/// A managed node as the site knows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodeItem {
    pub node: String,
    #[schema(value_type = String)]
    pub status: NodeStatus,
    pub software_version: String,
    pub health: String,
    /// RFC 3339.
    pub last_heartbeat: String,
    pub last_heartbeat_age_seconds: f64,
    pub interval_seconds: u32,
    pub applied: BTreeMap<String, String>,
}

/// A page of nodes, in node id order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NodePage {
    pub items: Vec<NodeItem>,
    /// Pass as `after` to read the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Lists the nodes that heartbeat to this site, in id order, optionally by status.
#[utoipa::path(
    get,
    path = "/v1/nodes",
    params(NodesQuery),
    responses(
        (status = 200, description = "a page of nodes", body = NodePage),
        (status = 400, description = "a parameter is not valid", body = Problem),
    )
)]
pub async fn list_nodes(
    State(state): State<AppState>,
    query: Result<Query<NodesQuery>, QueryRejection>,
) -> Result<Json<NodePage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("bad-query", e.body_text()))?;
    let status = match query.status.as_deref() {
        None => None,
        Some(raw) => Some(NodeStatus::parse(raw).ok_or_else(|| {
            ApiError::bad_request(
                "bad-query",
                format!("status is `{raw}`; it must be `Live`, `Delayed` or `Offline`"),
            )
        })?),
    };
    let after = query.after.map(ObjectName::new).transpose().map_err(|e| {
        ApiError::bad_request("bad-query", format!("after: {e}; pass the `next` of the previous page"))
    })?;
    let limit = page_size(query.limit)?;
    let now_ms = state.clock.now_ms();
    let thresholds = state.fleet.thresholds;
    let (items, cut_at) = blocking(&state, "nodes", move |s| {
        let mut items = Vec::new();
        let cut_at = for_each_node(s, after, |record| {
            let found =
                node_status(record.last_heartbeat_ms, record.previous_heartbeat_ms, now_ms, thresholds);
            if status.is_none_or(|wanted| wanted == found) {
                items.push(NodeItem {
                    node: record.id.to_string(),
                    status: found,
                    software_version: record.software_version.clone(),
                    health: record.health.clone(),
                    last_heartbeat: format_rfc3339_millis(record.last_heartbeat_ms),
                    last_heartbeat_age_seconds: now_ms.saturating_sub(record.last_heartbeat_ms) as f64
                        / 1000.0,
                    interval_seconds: record.interval_seconds,
                    applied: record.applied.clone(),
                });
            }
            items.len() <= limit
        })?;
        Ok((items, cut_at))
    })
    .await?;
    let mut items = items;
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|i| i.node.clone())
    } else {
        // A scan that stopped at its bound continues from where it stopped.
        cut_at.map(|id| id.to_string())
    };
    Ok(Json(NodePage { items, next }))
}

/// `GET /v1/effective`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EffectiveSet {
    pub site: String,
    /// Hex SHA-256 over the sorted `(key, version)` pairs; also the `ETag` header.
    pub etag: String,
    pub items: Vec<ObjectDocument>,
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',')
            .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
            .any(|t| t == etag || t == "*")
    })
}

/// The objects in effect at this site: current `Policy`, `Release` and `Rollout` objects of its
/// own scope and its ancestors'.
#[utoipa::path(
    get,
    path = "/v1/effective",
    params(("If-None-Match" = Option<String>, Header, description = "the etag last fetched: 304 when unchanged")),
    responses(
        (status = 200, description = "the objects in effect", body = EffectiveSet),
        (status = 304, description = "unchanged since the etag in If-None-Match"),
    )
)]
pub async fn effective(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let effective = site_status::effective(&state).await?;
    let tag = HeaderValue::from_str(&format!("\"{}\"", effective.etag)).map_err(|_| ApiError::internal())?;
    if none_match(&headers, &effective.etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    let body = EffectiveSet {
        site: state.site.id.to_string(),
        etag: effective.etag.clone(),
        items: effective.objects.iter().map(model::StoredObject::to_document).collect(),
    };
    Ok(([(header::ETAG, tag)], Json(body)).into_response())
}

/// A node that has not applied an object's current version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DriftNode {
    pub node: String,
    /// The version it reports applied; null when it reports none.
    pub applied: Option<String>,
}

/// An object in effect that some nodes have not applied.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DriftObject {
    /// `Kind/scope/name`.
    pub object: String,
    /// Its current version here.
    pub desired: String,
    pub nodes: Vec<DriftNode>,
}

/// `GET /v1/drift`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DriftReport {
    pub site: String,
    /// The number of objects.
    pub count: usize,
    pub objects: Vec<DriftObject>,
}

/// The objects in effect whose current version differs from what one or more non-offline
/// nodes report applied.
#[utoipa::path(get, path = "/v1/drift", responses((status = 200, description = "drift at this site", body = DriftReport)))]
pub async fn drift(State(state): State<AppState>) -> Result<Json<DriftReport>, ApiError> {
    let effective = site_status::effective(&state).await?;
    let desired = desired(&effective);
    let now_ms = state.clock.now_ms();
    let thresholds = state.fleet.thresholds;
    let wanted = desired.clone();
    let scan = blocking(&state, "drift", move |s| scan_nodes(s, now_ms, thresholds, &wanted)).await?;
    let objects: Vec<DriftObject> = scan
        .drift
        .into_iter()
        .map(|(object, nodes)| DriftObject {
            desired: desired.get(&object).cloned().unwrap_or_default(),
            object,
            nodes: nodes.into_iter().map(|d| DriftNode { node: d.node, applied: d.applied }).collect(),
        })
        .collect();
    Ok(Json(DriftReport { site: state.site.id.to_string(), count: objects.len(), objects }))
}

async fn knowledge(state: &AppState) -> Result<Knowledge, ApiError> {
    let snapshot = site_status::snapshot(state).await?;
    let links = snapshot
        .links
        .iter()
        .map(|l| ViewLink {
            peer: l.peer.clone(),
            direction: l.direction,
            state: l.state,
            debt_seconds: l.debt_seconds,
        })
        .collect();
    Ok(Knowledge::new(
        snapshot.summary,
        snapshot.held,
        links,
        snapshot.now_ms,
        state.fleet.status_interval_ms(),
    ))
}

/// The federation as this site sees it: one item per child of the root.
#[utoipa::path(get, path = "/v1/views/global", responses((status = 200, description = "the global view", body = FleetView)))]
pub async fn global_view(State(state): State<AppState>) -> Result<Json<FleetView>, ApiError> {
    Ok(Json(knowledge(&state).await?.global_view()))
}

/// One site's children, as this site sees them.
#[utoipa::path(
    get,
    path = "/v1/views/site/{id}",
    params(("id" = String, Path, description = "a site id, such as `region-a-control`")),
    responses(
        (status = 200, description = "the site's view", body = FleetView),
        (status = 400, description = "the site id is not valid", body = Problem),
        (status = 404, description = "this site knows no summary of that site", body = Problem),
    )
)]
pub async fn site_view(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<FleetView>, ApiError> {
    let Path(id) =
        path.map_err(|e| ApiError::bad_request("bad-path", format!("the site id is not valid: {e}")))?;
    let id = SiteId::new(id).map_err(|e| ApiError::bad_request("bad-path", e.to_string()))?;
    let knowledge = knowledge(&state).await?;
    knowledge.site_view(id.as_str()).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "{} holds no summary of site `{id}`: name a site of its subtree or one whose summary replicates here (see /v1/views/global)",
            state.site.id
        ))
    })
}
