//! The rules of conflict records that do not depend on the backend: how a detected conflict is
//! recorded (id, sides, winner, status), when a later version resolves one, and what the audit
//! log and the event log say about each step. Every backend calls these inside the transaction
//! that detects, resolves or acknowledges a conflict, so every backend (and every site) records
//! the same thing.
//!
//! Event data (`kind` `conflict`; the event's object is the conflict's object):
//!
//! ```json
//! {"id": "9f2c…", "change": "detected" | "resolved" | "acknowledged",
//!  "sides": [{"version": "…", "origin": "…", "author": "…", "deleted": false}, {…}],
//!  "strategy": "manual", "winner": "…", "status": "open",
//!  "detected_ms": 1764000000000, "acknowledged_by": null, "acknowledged_ms": null,
//!  "resolved_by": null}
//! ```
//!
//! Event data of an accepted version (`kind` `write` or `delete`):
//! `{"version": "…", "origin": "…", "author": "…", "from": "<peer>" | null, "current": true}`
//! (`from` is null for a write made at this site; `current` says whether the version became the
//! object's current one).

use model::{ObjectKey, SiteId, Strategy, Version, VersionId, VersionVector};
use serde_json::json;

use crate::remote::{dominates, winner};
use crate::{AuditRecord, ConflictRecord, ConflictSide, ConflictStatus, NewEvent, conflict_id};

/// The actor of the audit entries the store writes about conflicts it detects or resolves.
pub(crate) const RESOLVER: &str = "conflict-resolver";
/// The audit action of a detected or resolved conflict.
pub(crate) const ACTION_CONFLICT: &str = "conflict";
/// The audit action of an operator's acknowledgement.
pub(crate) const ACTION_ACKNOWLEDGE: &str = "acknowledge";
/// The event kind of every conflict event.
pub(crate) const EVENT_CONFLICT: &str = "conflict";

/// A conflict record with the vectors of its two sides, which later versions are compared
/// with to decide whether they resolve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub record: ConflictRecord,
    pub vectors: [VersionVector; 2],
}

fn side(v: &Version) -> ConflictSide {
    ConflictSide { version: v.id(), origin: v.origin.clone(), author: v.author.clone(), deleted: v.deleted }
}

/// The record of a conflict between `a` and `b`, detected at `now_ms`: sides in version order,
/// the winner the strategy picks between the two, `resolved` for the strategies that decide on
/// their own and `open` for `manual`.
pub(crate) fn detected(
    key: &ObjectKey,
    a: &Version,
    b: &Version,
    strategy: Strategy,
    rank: &dyn Fn(&SiteId) -> u8,
    now_ms: u64,
) -> Stored {
    let (first, second) = if a.id() <= b.id() { (a, b) } else { (b, a) };
    let status = match strategy {
        Strategy::LastWriteWins | Strategy::AuthorityWins => ConflictStatus::Resolved,
        Strategy::Manual => ConflictStatus::Open,
    };
    Stored {
        record: ConflictRecord {
            id: conflict_id(key, &first.id(), &second.id()),
            key: key.clone(),
            sides: [side(first), side(second)],
            strategy,
            winner: winner(strategy, rank, a, b).id(),
            status,
            detected_ms: now_ms,
            acknowledged: None,
            resolved_by: None,
        },
        vectors: [first.vv.clone(), second.vv.clone()],
    }
}

/// Whether `version` resolves the conflict: it is still open (or acknowledged) and the
/// version's vector dominates both sides' (an operator's pick, or any later write that saw
/// both).
pub(crate) fn resolves(conflict: &Stored, version: &Version) -> bool {
    conflict.record.status != ConflictStatus::Resolved
        && conflict.vectors.iter().all(|side| dominates(&version.vv, side))
}

/// `v` as the audit log and events name it: `<id> (from <origin>, by <author>)`, noting a
/// delete.
fn describe(side: &ConflictSide) -> String {
    let delete = if side.deleted { "a delete " } else { "" };
    format!("{} ({delete}from {}, by {})", side.version, side.origin, side.author)
}

/// The audit entry of a detected conflict: version = the winner, outcome `resolved` or `open`.
pub(crate) fn detected_audit(record: &ConflictRecord) -> AuditRecord {
    let [a, b] = &record.sides;
    let outcome = match record.strategy {
        Strategy::Manual => format!(
            "manual: {} is current provisionally; the conflict stays open until an operator acknowledges it or picks a version",
            record.winner
        ),
        Strategy::LastWriteWins => format!("last-write-wins keeps {} (the later write)", record.winner),
        Strategy::AuthorityWins => {
            format!("authority-wins keeps {} (the higher authority, then the later write)", record.winner)
        }
    };
    AuditRecord {
        at_ms: record.detected_ms,
        actor: RESOLVER.to_owned(),
        action: ACTION_CONFLICT.to_owned(),
        key: Some(record.key.clone()),
        version: Some(record.winner.clone()),
        outcome: record.status.as_str().to_owned(),
        detail: format!(
            "conflict {}: {} and {} were written concurrently; {outcome}",
            record.id,
            describe(a),
            describe(b)
        ),
    }
}

/// Marks the conflict resolved by `version` and returns the audit entry saying so.
pub(crate) fn resolve(record: &mut ConflictRecord, version: &Version, now_ms: u64) -> AuditRecord {
    record.status = ConflictStatus::Resolved;
    record.resolved_by = Some(version.id());
    let [a, b] = &record.sides;
    AuditRecord {
        at_ms: now_ms,
        actor: RESOLVER.to_owned(),
        action: ACTION_CONFLICT.to_owned(),
        key: Some(record.key.clone()),
        version: Some(version.id()),
        outcome: ConflictStatus::Resolved.as_str().to_owned(),
        detail: format!(
            "conflict {} between {} and {} resolved by {}: it follows both",
            record.id,
            a.version,
            b.version,
            describe(&side(version))
        ),
    }
}

/// Marks an open conflict acknowledged by `actor` and returns the audit entry saying so.
pub(crate) fn acknowledge(record: &mut ConflictRecord, actor: &str, now_ms: u64) -> AuditRecord {
    record.status = ConflictStatus::Acknowledged;
    record.acknowledged = Some((actor.to_owned(), now_ms));
    let [a, b] = &record.sides;
    AuditRecord {
        at_ms: now_ms,
        actor: actor.to_owned(),
        action: ACTION_ACKNOWLEDGE.to_owned(),
        key: Some(record.key.clone()),
        version: Some(record.winner.clone()),
        outcome: ConflictStatus::Acknowledged.as_str().to_owned(),
        detail: format!(
            "conflict {} between {} and {}: {actor} acknowledged {} ({}) as the current version",
            record.id, a.version, b.version, record.winner, record.strategy
        ),
    }
}

/// What happened to a conflict, as its event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Detected,
    Resolved,
    Acknowledged,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Detected => "detected",
            Change::Resolved => "resolved",
            Change::Acknowledged => "acknowledged",
        }
    }
}

/// The JSON form of a conflict record, as its events carry it.
pub(crate) fn to_json(record: &ConflictRecord) -> serde_json::Value {
    let side = |s: &ConflictSide| {
        json!({
            "version": s.version.to_string(),
            "origin": s.origin.as_str(),
            "author": s.author,
            "deleted": s.deleted,
        })
    };
    json!({
        "id": record.id,
        "sides": [side(&record.sides[0]), side(&record.sides[1])],
        "strategy": record.strategy.as_str(),
        "winner": record.winner.to_string(),
        "status": record.status.as_str(),
        "detected_ms": record.detected_ms,
        "acknowledged_by": record.acknowledged.as_ref().map(|(by, _)| by.clone()),
        "acknowledged_ms": record.acknowledged.as_ref().map(|(_, at)| *at),
        "resolved_by": record.resolved_by.as_ref().map(VersionId::to_string),
    })
}

/// The `conflict` event of a change to a conflict.
pub(crate) fn event(record: &ConflictRecord, change: Change, at_ms: u64) -> NewEvent {
    let mut data = to_json(record);
    if let Some(map) = data.as_object_mut() {
        map.insert("change".to_owned(), json!(change.as_str()));
    }
    NewEvent { at_ms, kind: EVENT_CONFLICT.to_owned(), object: Some(record.key.clone()), data }
}

/// The kind of a version's event.
pub(crate) fn version_event_kind(version: &Version) -> &'static str {
    if version.deleted { "delete" } else { "write" }
}

/// The data of the `write` or `delete` event of a version this site accepted, from a peer
/// (`from`) or written here (`None`). Its fields are in the order a JSON object's keys are
/// written (sorted), so the text is the one a JSON value of the same fields makes.
#[derive(serde::Serialize)]
pub(crate) struct VersionEventData<'a> {
    author: &'a str,
    current: bool,
    from: Option<&'a str>,
    origin: &'a str,
    version: String,
}

pub(crate) fn version_event_data<'a>(
    version: &'a Version,
    from: Option<&'a SiteId>,
    current: bool,
) -> VersionEventData<'a> {
    VersionEventData {
        author: &version.author,
        current,
        from: from.map(SiteId::as_str),
        origin: version.origin.as_str(),
        version: version.id().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use model::{Hlc, SiteId, Version, VersionVector};
    use serde_json::json;

    use super::*;

    #[test]
    fn a_version_event_reads_as_the_json_object_of_its_fields() {
        let origin = SiteId::new("edge-zone-a1").unwrap();
        let from = SiteId::new("region-a-control").unwrap();
        let version = Version {
            hlc: Hlc::new(1_790_000_000_000, 2),
            origin: origin.clone(),
            vv: VersionVector::new(),
            author: "alice \"a\"".into(),
            content_hash: model::ContentHash::from_hex("00".into()),
            deleted: false,
        };
        for (from, current) in [(Some(&from), true), (None, false)] {
            let text = serde_json::to_string(&version_event_data(&version, from, current)).unwrap();
            let value = json!({
                "version": version.id().to_string(),
                "origin": origin.as_str(),
                "author": version.author,
                "from": from.map(SiteId::as_str),
                "current": current,
            });
            assert_eq!(text, serde_json::to_string(&value).unwrap());
        }
    }
}
