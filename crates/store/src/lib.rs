//! Durable storage of one site: the current version of every object it holds, each object's
//! full history of versions (deletes are tombstone versions), an append-only change log with a
//! sequence number that the sync engine reads, an append-only audit log, and the site's
//! hybrid logical clock, persisted so it never goes backwards.
//!
//! [`Store`] is the one interface; [`SqliteStore`] is the embedded backend (one file per site,
//! WAL, `synchronous=FULL`). Every backend must pass the suite in [`conformance`] (enabled by the
//! `conformance` feature), which is written against the trait only.
//!
//! Invariant: a write, its history entry, its change-log entry, its audit entry and the clock
//! it advanced commit in one transaction, and that transaction is durable (fsynced) before
//! [`Store::write`] returns.

use std::collections::BTreeMap;

use model::{Hlc, Kind, ObjectKey, Scope, SiteId, StoredObject, Version, VersionId};

#[cfg(feature = "conformance")]
pub mod conformance;
mod local_write;
mod sqlite;

pub use sqlite::{Durability, SqliteStore};

/// A write made at this site by a client (as opposed to a version applied from a peer).
#[derive(Debug, Clone, PartialEq)]
pub struct LocalWrite {
    pub key: ObjectKey,
    pub labels: BTreeMap<String, String>,
    pub spec: serde_json::Value,
    /// A delete: writes a tombstone version.
    pub deleted: bool,
    /// Who asked for the write (recorded in the version and the audit log).
    pub author: String,
    /// Compare-and-set: the write applies only if this holds.
    pub precondition: Option<Precondition>,
    /// Physical time at the site, milliseconds since the Unix epoch.
    pub now_ms: u64,
}

/// A condition on the object's current version (`If-Match` / `If-None-Match: *`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The current version must be exactly this one.
    Version(VersionId),
    /// The object must not exist (or be deleted).
    Absent,
}

/// A write that committed durably.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The object as it is now (for a delete: its tombstone).
    pub object: StoredObject,
    /// The change-log sequence number of the new version.
    pub seq: u64,
    /// True when the object did not exist (or was deleted) before this write.
    pub created: bool,
}

/// One version of an object with its content, as kept in the object's history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub version: Version,
    pub labels: BTreeMap<String, String>,
    pub spec: serde_json::Value,
    /// The change-log sequence number under which this site accepted it.
    pub seq: u64,
}

/// One entry of the change log: a version this site accepted, in acceptance order.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub seq: u64,
    pub key: ObjectKey,
    pub version: Version,
    pub labels: BTreeMap<String, String>,
    pub spec: serde_json::Value,
    /// The link the version arrived on; `None` for a write made at this site.
    pub from_site: Option<SiteId>,
}

/// Which objects to list. Listings are ordered by kind name, then scope, then name, each
/// compared byte by byte; that is also the order of [`ObjectKey`] (the variants of [`Kind`] are
/// declared in name order).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ListFilter {
    pub kind: Option<Kind>,
    pub scope: Option<Scope>,
    /// Include tombstones of deleted objects.
    pub include_deleted: bool,
    /// Start after this key (paging): pass the last key of the previous page.
    pub after: Option<ObjectKey>,
    /// At most this many objects; see [`clamp_limit`] (0 means a full page of [`MAX_PAGE`]).
    pub limit: usize,
}

/// The largest page any listing returns.
pub const MAX_PAGE: usize = 1000;

/// The number of entries a listing with `limit` returns at most: `limit` clamped to
/// `1..=MAX_PAGE`, where 0 (no limit given, as in `ListFilter::default()`) means [`MAX_PAGE`].
pub fn clamp_limit(limit: usize) -> usize {
    if limit == 0 { MAX_PAGE } else { limit.min(MAX_PAGE) }
}

/// What an audit entry records: who did what to which object, when, and the outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub actor: String,
    /// `put`, `delete`, …
    pub action: String,
    pub key: Option<ObjectKey>,
    pub version: Option<VersionId>,
    /// `applied`, `precondition-failed`, `not-found`, `refused`, …
    pub outcome: String,
    pub detail: String,
}

/// An audit record with its position in the append-only audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub seq: u64,
    pub record: AuditRecord,
}

/// A write that did not happen, and why. Each is also recorded in the audit log.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "{key}: the current version is {current}, not {expected}: read the object again and retry with its current version"
    )]
    PreconditionFailed { key: ObjectKey, expected: String, current: String },
    #[error("{key} does not exist")]
    NotFound { key: ObjectKey },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A failure of the storage itself.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open the store at {path}")]
    Open { path: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error(
        "the store at {path} belongs to site `{found}`, not `{expected}`: use that site's own data directory"
    )]
    WrongSite { path: String, found: String, expected: String },
    #[error(
        "the store at {path} has schema version {found}; this build understands up to {supported}: upgrade souverix"
    )]
    SchemaTooNew { path: String, found: u32, supported: u32 },
    #[error("storage failed while {context}")]
    Backend { context: String, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// The storage of one site. Implementations are safe to share between threads; every method
/// blocks until the storage has answered, so async callers run them on a blocking thread.
pub trait Store: Send + Sync {
    /// The site this store belongs to.
    fn site(&self) -> &SiteId;

    /// Applies a client's write at this site: checks the precondition, stamps a new version
    /// (next clock tick, version vector incremented for this site, content hash), and commits
    /// the object, its history entry, its change-log entry, its audit entry and the clock in one
    /// durable transaction. A refused write changes no object and is audited.
    fn write(&self, write: LocalWrite) -> Result<Committed, WriteError>;

    /// The current version of an object, tombstones included (`version.deleted`).
    fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError>;

    /// The current versions of the objects `filter` selects, in [`ListFilter`]'s order.
    fn list(&self, filter: &ListFilter) -> Result<Vec<StoredObject>, StoreError>;

    /// Every version of the object this site has accepted, oldest first (in change-log order);
    /// empty for an object the site never held.
    fn history(&self, key: &ObjectKey) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Change-log entries with `seq > after`, oldest first, at most [`clamp_limit`]`(limit)`.
    fn changes(&self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError>;

    /// The highest change-log sequence number (0 when empty).
    fn last_seq(&self) -> Result<u64, StoreError>;

    /// Appends an entry to the audit log, durably, and returns its sequence number.
    fn append_audit(&self, record: AuditRecord) -> Result<u64, StoreError>;

    /// Audit entries with `seq > after`, oldest first, at most [`clamp_limit`]`(limit)`.
    fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// The newest [`clamp_limit`]`(limit)` audit entries, oldest first.
    fn audit_tail(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// The largest timestamp the site's clock has issued or observed, as persisted
    /// ([`Hlc::ZERO`] for a new store).
    fn clock(&self) -> Result<Hlc, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the documented listing order: backends sort by the kind's name, which must agree
    /// with `ObjectKey`'s order, so a new kind must be declared in name order.
    #[test]
    fn kinds_are_declared_in_name_order() {
        let mut by_name = Kind::ALL;
        by_name.sort_by_key(|k| k.as_str());
        let mut by_ord = Kind::ALL;
        by_ord.sort();
        assert_eq!(by_name, by_ord);
    }

    #[test]
    fn zero_means_a_full_page_and_larger_limits_clamp() {
        assert_eq!(clamp_limit(0), MAX_PAGE);
        assert_eq!(clamp_limit(1), 1);
        assert_eq!(clamp_limit(MAX_PAGE), MAX_PAGE);
        assert_eq!(clamp_limit(usize::MAX), MAX_PAGE);
    }
}
