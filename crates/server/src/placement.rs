//! Where an object lives in the federation, as this site sees it: its master of record (the
//! site that owns its scope), the sites that hold its scope, and the sites whose writes are in
//! its recent history here, each with how it stands to the owner (a write from a descendant is
//! a local override). The web UI's policy overlay draws this.

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use model::{Relation, format_rfc3339_millis};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::api::{blocking, parse_key};
use crate::problem::{ApiError, Problem};

/// How many of the newest versions count as "recent history".
pub const RECENT_VERSIONS: usize = 50;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/objects/{kind}/{scope}/{name}/placement", get(placement))
}

/// A site whose versions are in the object's recent history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Writer {
    pub site: String,
    /// `own` (the master of record), `ancestor` (from above), `descendant` (an override from
    /// below), `unrelated`, or `unknown` (a site this site's directory does not name).
    pub relation: String,
    /// True for a write from below the master of record: a local override.
    pub r#override: bool,
    /// How many of the recent versions it wrote.
    pub versions: usize,
    /// Its newest one, and when it was written (RFC 3339).
    pub last_version: String,
    pub last_time: String,
}

/// `GET /v1/objects/{kind}/{scope}/{name}/placement`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    pub object: String,
    /// The site that owns the object's scope; absent when no site known here announced it.
    pub master_of_record: Option<String>,
    /// Every site that holds the scope (its owner, the owner's ancestors and descendants).
    pub held_by: Vec<String>,
    /// The current version here, if the object exists here.
    pub current: Option<String>,
    /// Sites whose writes are among the newest versions here, the most recent writer first.
    pub writers: Vec<Writer>,
    /// How many versions of the history were looked at.
    pub recent_versions: usize,
}

/// Shows where an object is mastered and held, and who wrote it recently.
#[utoipa::path(
    get,
    path = "/v1/objects/{kind}/{scope}/{name}/placement",
    params(("kind" = String, Path), ("scope" = String, Path), ("name" = String, Path)),
    responses(
        (status = 200, description = "the object's placement", body = Placement),
        (status = 400, description = "a malformed kind, scope or name", body = Problem),
        (status = 404, description = "the object never existed here", body = Problem),
    )
)]
pub async fn placement(
    State(state): State<AppState>,
    path: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Json<Placement>, ApiError> {
    let key = parse_key(path)?;
    let lookup = key.clone();
    let (history, current) =
        blocking(&state, "placement", move |s| Ok((s.history(&lookup)?, s.get(&lookup)?))).await?;
    if history.is_empty() {
        return Err(ApiError::not_found(format!("{key} has no history at this site: it never existed here")));
    }
    let directory = state.engine.directory();
    let recent = &history[history.len().saturating_sub(RECENT_VERSIONS)..];
    // Newest first, so each writer's first sighting is its newest version.
    let mut writers: Vec<Writer> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for entry in recent.iter().rev() {
        let origin = entry.version.origin.to_string();
        if let Some(&i) = index.get(&origin) {
            writers[i].versions += 1;
            continue;
        }
        let relation = match directory.get(&entry.version.origin) {
            None => None,
            Some(_) => directory.relation(&entry.version.origin, &key.scope),
        };
        index.insert(origin.clone(), writers.len());
        writers.push(Writer {
            site: origin,
            relation: match relation {
                Some(Relation::Own) => "own",
                Some(Relation::Ancestor) => "ancestor",
                Some(Relation::Descendant { .. }) => "descendant",
                Some(Relation::Unrelated) => "unrelated",
                None => "unknown",
            }
            .to_owned(),
            r#override: matches!(relation, Some(Relation::Descendant { .. })),
            versions: 1,
            last_version: entry.version.id().to_string(),
            last_time: format_rfc3339_millis(entry.version.hlc.wall_ms),
        });
    }
    Ok(Json(Placement {
        object: key.to_string(),
        master_of_record: directory.owner_of(&key.scope).map(|c| c.id.to_string()),
        held_by: directory.holders(&key.scope).iter().map(ToString::to_string).collect(),
        current: current.map(|o| o.version.id().to_string()),
        writers,
        recent_versions: recent.len(),
    }))
}
