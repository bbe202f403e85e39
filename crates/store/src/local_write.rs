//! The rules of a local write that do not depend on the backend: whether a write is refused
//! (precondition, delete of a missing object), how the new version is stamped (clock tick,
//! version vector, content hash, `created`), and what the audit log says about it. Every
//! backend calls these inside its write transaction, so all backends behave alike.

use model::{ContentHash, Hlc, HlcClock, SiteId, StoredObject, Version};

use crate::{AuditRecord, LocalWrite, Precondition, WriteError};

/// Audit outcome of a write that committed.
pub(crate) const OUTCOME_APPLIED: &str = "applied";
/// Audit outcome of a write refused because its precondition did not hold.
pub(crate) const OUTCOME_PRECONDITION_FAILED: &str = "precondition-failed";
/// Audit outcome of a delete of an object that does not exist (or is already deleted).
pub(crate) const OUTCOME_NOT_FOUND: &str = "not-found";

/// A write that must not apply: the error for the caller and the audit record saying why.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub error: WriteError,
    pub audit: AuditRecord,
}

/// The audit action of a write: `put` or `delete`.
pub(crate) fn action(write: &LocalWrite) -> &'static str {
    if write.deleted { "delete" } else { "put" }
}

/// How the current version reads in a refusal: its id, `none`, or `deleted (<id>)`.
pub(crate) fn describe_current(current: Option<&StoredObject>) -> String {
    match current {
        None => "none".to_owned(),
        Some(c) if c.version.deleted => format!("deleted ({})", c.version.id()),
        Some(c) => c.version.id().to_string(),
    }
}

/// Decides whether `write` is refused, given the object's current version (tombstones
/// included). A delete of an object that does not exist or is already deleted is `NotFound`,
/// whatever its precondition; otherwise `Precondition::Version` must name the current,
/// non-deleted version (a tombstone never matches) and `Precondition::Absent` requires no
/// current version or a tombstone.
pub(crate) fn refusal(write: &LocalWrite, current: Option<&StoredObject>) -> Option<Refusal> {
    let live = current.filter(|c| !c.version.deleted);
    let refuse = |error: WriteError, outcome: &str, detail: String| Refusal {
        error,
        audit: AuditRecord {
            at_ms: write.now_ms,
            actor: write.author.clone(),
            action: action(write).to_owned(),
            key: Some(write.key.clone()),
            version: None,
            outcome: outcome.to_owned(),
            detail,
        },
    };
    if write.deleted && live.is_none() {
        let detail = match current {
            None => "delete of an object that does not exist".to_owned(),
            Some(c) => format!("delete of an object that is already deleted ({})", c.version.id()),
        };
        return Some(refuse(WriteError::NotFound { key: write.key.clone() }, OUTCOME_NOT_FOUND, detail));
    }
    let expected = match &write.precondition {
        None => return None,
        Some(Precondition::Version(id)) if live.is_some_and(|c| c.version.id() == *id) => return None,
        Some(Precondition::Version(id)) => id.to_string(),
        Some(Precondition::Absent) if live.is_none() => return None,
        Some(Precondition::Absent) => "none".to_owned(),
    };
    let found = describe_current(current);
    let detail = format!("expected version {expected}, found {found}");
    Some(refuse(
        WriteError::PreconditionFailed { key: write.key.clone(), expected, current: found },
        OUTCOME_PRECONDITION_FAILED,
        detail,
    ))
}

/// A write stamped as a new version, ready to commit.
#[derive(Debug)]
pub(crate) struct Stamped {
    pub object: StoredObject,
    /// The object did not exist (or was deleted) before.
    pub created: bool,
    pub audit: AuditRecord,
}

/// Stamps an accepted `write` as the next version at `site`: the clock's next tick, the
/// object's causal context (a tombstone's too, so a re-created object continues it) with this
/// site's counter incremented, so the new version dominates every version the site has seen,
/// the write's content hash (`content_hash`, as [`ContentHash::of`] computes it), and `created`
/// carried over unless the object was absent or deleted (see [`created_after`]). The object's
/// context afterwards is the new version's vector. Advances `clock`; the caller persists
/// `clock.last()`.
pub(crate) fn stamp(
    site: &SiteId,
    write: LocalWrite,
    current: Option<&StoredObject>,
    clock: &mut HlcClock,
    content_hash: ContentHash,
) -> Stamped {
    let hlc = clock.tick(write.now_ms);
    let mut vv = current.map(|c| c.context.clone()).unwrap_or_default();
    vv.increment(site);
    let live = current.filter(|c| !c.version.deleted);
    let created = live.is_none();
    let version = Version {
        hlc,
        origin: site.clone(),
        vv,
        author: write.author.clone(),
        content_hash,
        deleted: write.deleted,
    };
    let detail = match (live, write.deleted) {
        (None, _) => "created".to_owned(),
        (Some(c), false) => format!("replaced {}", c.version.id()),
        (Some(c), true) => format!("deleted {}", c.version.id()),
    };
    let audit = AuditRecord {
        at_ms: write.now_ms,
        actor: write.author.clone(),
        action: action(&write).to_owned(),
        key: Some(write.key.clone()),
        version: Some(version.id()),
        outcome: OUTCOME_APPLIED.to_owned(),
        detail,
    };
    let object = StoredObject {
        created: created_after(current, hlc),
        key: write.key,
        context: version.vv.clone(),
        version,
        labels: write.labels,
        spec: write.spec,
    };
    Stamped { object, created, audit }
}

/// The `created` of an object whose current version becomes a version stamped `hlc`: kept
/// while the object stays in existence (an update or a delete), restarted at `hlc` when the
/// object was absent or its current version was a tombstone (a re-creation).
pub(crate) fn created_after(current: Option<&StoredObject>, hlc: Hlc) -> Hlc {
    current.filter(|c| !c.version.deleted).map_or(hlc, |c| c.created)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use model::{Hlc, Kind, ObjectKey, ObjectName, Scope, VersionId};

    use super::*;

    fn site() -> SiteId {
        SiteId::new("edge-zone-a1").unwrap()
    }

    fn write(deleted: bool, precondition: Option<Precondition>) -> LocalWrite {
        LocalWrite {
            key: ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new("p").unwrap()),
            labels: BTreeMap::new(),
            spec: serde_json::json!({"a": 1}),
            deleted,
            author: "alice".into(),
            precondition,
            now_ms: 1_000,
        }
    }

    fn stamped(deleted: bool, current: Option<&StoredObject>, clock: &mut HlcClock) -> StoredObject {
        let write = write(deleted, None);
        let hash = ContentHash::of(&write.key, &write.labels, &write.spec, write.deleted);
        stamp(&site(), write, current, clock, hash).object
    }

    #[test]
    fn a_tombstone_matches_neither_its_version_nor_a_live_precondition() {
        let mut clock = HlcClock::new(Hlc::ZERO, 0);
        let live = stamped(false, None, &mut clock);
        let tomb = stamped(true, Some(&live), &mut clock);
        let r = refusal(&write(false, Some(Precondition::Version(tomb.version.id()))), Some(&tomb)).unwrap();
        match r.error {
            WriteError::PreconditionFailed { current, .. } => {
                assert_eq!(current, format!("deleted ({})", tomb.version.id()));
            }
            other => panic!("expected PreconditionFailed, got {other:?}"),
        }
        assert_eq!(r.audit.outcome, OUTCOME_PRECONDITION_FAILED);
        assert!(refusal(&write(false, Some(Precondition::Absent)), Some(&tomb)).is_none());
        assert!(
            refusal(&write(false, Some(Precondition::Version(live.version.id()))), Some(&live)).is_none()
        );
    }

    #[test]
    fn a_delete_of_a_missing_object_is_not_found_whatever_its_precondition() {
        let stale: VersionId = "5.0@edge-zone-a1".parse().unwrap();
        let r = refusal(&write(true, Some(Precondition::Version(stale))), None).unwrap();
        assert!(matches!(r.error, WriteError::NotFound { .. }), "{:?}", r.error);
        assert_eq!(r.audit.action, "delete");
        assert_eq!(r.audit.outcome, OUTCOME_NOT_FOUND);
    }

    #[test]
    fn a_write_increments_the_context_not_the_current_vector() {
        let mut clock = HlcClock::new(Hlc::ZERO, 0);
        let mut current = stamped(false, None, &mut clock);
        let peer = SiteId::new("region-a-control").unwrap();
        current.context.increment(&peer);
        let next = stamped(false, Some(&current), &mut clock);
        assert_eq!(next.version.vv.get(&site()), 2);
        assert_eq!(next.version.vv.get(&peer), 1, "the write covers the peer's version it has seen");
        assert_eq!(next.context, next.version.vv);
    }

    #[test]
    fn recreating_continues_the_version_vector_and_restarts_created() {
        let mut clock = HlcClock::new(Hlc::ZERO, 0);
        let first = stamped(false, None, &mut clock);
        let second = stamped(false, Some(&first), &mut clock);
        assert_eq!(second.created, first.created, "an update keeps `created`");
        let tomb = stamped(true, Some(&second), &mut clock);
        let again_write = write(false, None);
        let hash = ContentHash::of(&again_write.key, &again_write.labels, &again_write.spec, false);
        let again = stamp(&site(), again_write, Some(&tomb), &mut clock, hash);
        assert!(again.created);
        assert_eq!(again.object.version.vv.get(&site()), 4);
        assert_eq!(again.object.created, again.object.version.hlc);
        assert_eq!(again.audit.detail, "created");
    }
}
