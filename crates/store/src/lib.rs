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
//! [`Store::write`] returns. The same holds for a batch of versions from a peer
//! ([`Store::apply_remote`]): all of it, with the clock, or none of it.
//!
//! Each object keeps a causal context (the merge of the vectors of every version of it the site
//! accepted): a local write increments it, so it dominates everything seen. A remote version
//! concurrent with a tip of the object's branches (its frontier: the versions no other held
//! version dominates) is a conflict, recorded with the same id at every site that sees it
//! ([`ConflictRecord`]). The current version is the frontier version the object's strategy
//! prefers ([`ConflictPolicy`]); under last-write-wins that is the greatest version held in
//! `(hlc, origin)` order. Either way it is a function of the versions held, so sites holding
//! the same versions agree whatever order they came in.
//!
//! Besides the audit log, the store keeps an append-only event log (writes, deletes and
//! conflicts it records itself; refusals and link changes its callers append) for the event
//! stream and webhooks, and the log of webhook deliveries.
//!
//! It also keeps the records of the managed nodes that heartbeat to this site ([`NodeRecord`]):
//! site-local state that never enters the change log, so it never replicates.

use std::collections::{BTreeMap, BTreeSet};

use model::{Hlc, Kind, ObjectKey, ObjectName, Scope, SiteId, SpecText, StoredObject, Version, VersionId};

mod conflicts;
#[cfg(feature = "conformance")]
pub mod conformance;
mod group;
mod local_write;
mod remote;
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

/// One entry of the change log: a version this site accepted, in acceptance order. Its spec is
/// a value, or for a link ([`LinkChange`]) the text as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Change<S = serde_json::Value> {
    pub seq: u64,
    pub key: ObjectKey,
    pub version: Version,
    pub labels: BTreeMap<String, String>,
    pub spec: S,
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

/// The most changes [`Store::changes_for_link`] returns at once: its `limit` is clamped to
/// `1..=MAX_LINK_BATCH`.
pub const MAX_LINK_BATCH: usize = 10_000;

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
    ///
    /// The same transaction appends a `write` (or `delete`) event, and resolves every open or
    /// acknowledged conflict of the object (the new version dominates everything the site
    /// holds): that is how an operator's pick closes a conflict. Each resolution is an audit
    /// entry and a `conflict` event.
    fn write(&self, write: LocalWrite) -> Result<Committed, WriteError>;

    /// Several local writes at once (a batch apply), each with the checks and outcome of
    /// [`Store::write`], in order; a backend may commit them in one durable transaction. None is
    /// answered before it is durable. The default writes them one by one.
    fn write_batch(&self, writes: Vec<LocalWrite>) -> Vec<Result<Committed, WriteError>> {
        writes.into_iter().map(|w| self.write(w)).collect()
    }

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

    // Replication: what the sync engine needs. Every method is one transaction.

    /// Applies versions received from `from` in one durable transaction: versions already held
    /// are skipped; every new one is appended to history and to the change log (with
    /// `from_site = from`, accepted at `now_ms`); the clock observes each timestamp (a timestamp
    /// beyond the maximum skew refuses the whole batch); the object's causal context merges the
    /// version's vector; and the object's current version is picked among its frontier.
    ///
    /// Conflicts: the object's frontier is the set of versions it holds that no other held
    /// version dominates. A new version that a held version already dominates arrived late: it
    /// goes to history and conflicts with nothing (its successor stands for it). Otherwise it
    /// conflicts with every frontier version whose vector is concurrent with its own, joins
    /// the frontier and pushes out what it dominates. The current version is then the frontier
    /// version `policy.strategy(key)` prefers (`last-write-wins`: greatest `(hlc, origin)`;
    /// `authority-wins`: greatest `(policy.rank(origin), hlc, origin)`; `manual`: as
    /// last-write-wins, provisionally). Each conflict gets a [`ConflictRecord`] (id from
    /// [`conflict_id`], so every site names it the same; winner = the side the strategy prefers
    /// of the two; `resolved`, or `open` under `manual`), an audit entry when `policy.audit()`,
    /// and a `conflict` event. Every applied version appends a `write` (or `delete`) event, and
    /// resolves the open or acknowledged conflicts of its object whose two sides it dominates
    /// (with an audit entry when `policy.audit()`, and a `conflict` event). All in the same
    /// transaction. [`ApplyReport::concurrent`] counts the versions that had a conflict.
    ///
    /// Sites holding the same versions agree on the current version, and record the same
    /// conflicts between the versions on the final frontier; a conflict between versions that
    /// a later version of one side superseded is recorded only where it was seen before that
    /// version arrived.
    ///
    /// Refused batches are not audited here (a refusal changes nothing); the caller reports
    /// and counts them.
    fn apply_remote(
        &self,
        from: &SiteId,
        versions: &[RemoteVersion],
        now_ms: u64,
        policy: &dyn ConflictPolicy,
    ) -> Result<ApplyReport, ApplyError>;

    /// Up to `limit` changes after `query.after` that the link carries: not from the peer, in
    /// the scopes asked, and not superseded by a later change of the same object from the same
    /// origin (so a backlog of rewrites costs about the size of the final state).
    ///
    /// "Later" is the origin's order: a version is superseded when the site holds a version of
    /// the same object from the same origin with a greater timestamp (the origin wrote it
    /// after, so its vector covers the earlier one). For versions that arrive in the order their
    /// origin wrote them, as on a link, that is a later change in the log.
    ///
    /// `limit` is clamped to `1..=`[`MAX_LINK_BATCH`]. `scanned_to` is the sequence number of the
    /// last change returned when the batch is full, and otherwise the end of the log as it was
    /// read (never less than `query.after`): fewer than `limit` changes means the link is caught
    /// up to `scanned_to`, even when every change on the way was skipped.
    fn changes_for_link(&self, query: &LinkQuery, limit: usize) -> Result<LinkBatch, StoreError>;

    /// [`Store::changes_for_link`], leaving out besides the changes that arrived from a peer of
    /// `unwanted` in one of its scopes: what a site's links read together when no link carries
    /// those (a child's changes in its own subtree, which go up, but the site has no parent).
    /// Leaving them out is only a saving: a store may return them (the default does), and
    /// `limit` and `scanned_to` count what is returned.
    fn changes_for_links(
        &self,
        query: &LinkQuery,
        unwanted: &[(SiteId, BTreeSet<Scope>)],
        limit: usize,
    ) -> Result<LinkBatch, StoreError> {
        let _ = unwanted;
        self.changes_for_link(query, limit)
    }

    /// The current versions (tombstones included) of these objects, as a link sends them: the
    /// content as stored, byte for byte (a digest exchange repairs a peer with them). Objects
    /// this site does not hold are left out, and so are those whose current version comes after
    /// `through` in the change log: a link whose cursor is `through` still carries them, so a
    /// repair would send them twice. At most [`MAX_LINK_BATCH`] keys are read.
    fn current_for_link(&self, keys: &[ObjectKey], through: u64) -> Result<Vec<RemoteVersion>, StoreError>;

    /// The link's sync debt, counted the way `changes_for_link` selects changes (every change
    /// after `query.after` it would carry, with no limit).
    fn link_debt(&self, query: &LinkQuery) -> Result<Debt, StoreError>;

    /// The current version id of every object (tombstones included) in the scopes asked, in
    /// key order: what a digest exchange compares.
    fn digest_entries(
        &self,
        scopes: Option<&BTreeSet<Scope>>,
    ) -> Result<Vec<(ObjectKey, VersionId)>, StoreError>;

    /// Whether this site holds this exact version of the object (current or in history).
    fn has_version(&self, key: &ObjectKey, version: &VersionId) -> Result<bool, StoreError>;

    /// The durable record of the link with `peer`, as last saved; `None` before the first save.
    fn link(&self, peer: &SiteId) -> Result<Option<LinkRecord>, StoreError>;

    /// Saves the record of the link with `record.peer` durably, replacing the one before.
    fn save_link(&self, record: &LinkRecord) -> Result<(), StoreError>;

    // Conflicts, events, webhook deliveries.

    /// Conflict records, newest first, filtered by status and object; `limit` clamped to
    /// [`MAX_PAGE`].
    fn conflicts(&self, filter: &ConflictFilter) -> Result<Vec<ConflictRecord>, StoreError>;

    fn conflict(&self, id: &str) -> Result<Option<ConflictRecord>, StoreError>;

    /// Marks an open conflict acknowledged by `actor` (its provisional winner stays current),
    /// with an audit entry (action `acknowledge`, outcome `acknowledged`) and a `conflict`
    /// event, in one transaction. Acknowledging one that is not open returns it unchanged and
    /// records nothing; an unknown id is `None`.
    fn acknowledge_conflict(
        &self,
        id: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<Option<ConflictRecord>, StoreError>;

    /// Appends an event (for what the store does not record itself: refusals, link state
    /// changes) and returns its sequence number.
    fn append_event(&self, event: NewEvent) -> Result<u64, StoreError>;

    /// Events with `seq > after`, oldest first, at most `limit` (clamped to [`MAX_PAGE`]).
    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// The highest event sequence number (0 when none).
    fn last_event_seq(&self) -> Result<u64, StoreError>;

    /// Records one attempt to deliver an event to a webhook.
    fn record_delivery(&self, delivery: &Delivery) -> Result<u64, StoreError>;

    /// The newest `limit` delivery attempts (clamped), newest first, optionally for one webhook.
    fn deliveries(&self, webhook: Option<&str>, limit: usize) -> Result<Vec<DeliveryEntry>, StoreError>;

    /// The highest event a webhook has been delivered (or given up on); 0 when none.
    fn webhook_cursor(&self, webhook: &str) -> Result<u64, StoreError>;

    fn save_webhook_cursor(&self, webhook: &str, seq: u64) -> Result<(), StoreError>;

    // Managed nodes: site-local records, never replicated.

    /// Records a node's heartbeat durably: registers the node on its first heartbeat, else
    /// replaces its record, keeping the previous heartbeat's time as `previous_heartbeat_ms`.
    /// Returns the record as stored.
    fn record_heartbeat(&self, heartbeat: &Heartbeat) -> Result<NodeRecord, StoreError>;

    /// Node records in id order (byte by byte), starting after `after`, at most
    /// [`clamp_limit`]`(limit)`.
    fn nodes(&self, after: Option<&ObjectName>, limit: usize) -> Result<Vec<NodeRecord>, StoreError>;
}

/// A heartbeat of a managed node, as the site received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The node's id: an object-name-like id, such as `a2-node-07`.
    pub node: ObjectName,
    /// When the site received it (ms since the epoch).
    pub at_ms: u64,
    pub interval_seconds: u32,
    pub software_version: String,
    /// `healthy`, `degraded` or `failing`.
    pub health: String,
    /// The version of each object the node has applied: `Kind/scope/name` → version id.
    pub applied: BTreeMap<String, String>,
}

/// What the site knows of a managed node: its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub id: ObjectName,
    pub last_heartbeat_ms: u64,
    /// The heartbeat before the last one; `None` after the first.
    pub previous_heartbeat_ms: Option<u64>,
    pub interval_seconds: u32,
    pub software_version: String,
    pub health: String,
    pub applied: BTreeMap<String, String>,
}

/// What decides conflicts while a batch is applied: the sync engine implements it from its
/// site directory, so every site uses the strategy of the object's scope's own site.
pub trait ConflictPolicy: Sync {
    /// The strategy for the object.
    fn strategy(&self, key: &ObjectKey) -> model::Strategy;
    /// The authority rank of a site (`Level::rank`; 0 when unknown), for `authority-wins`.
    fn rank(&self, origin: &SiteId) -> u8;
    /// Whether resolutions are audited (`conflict_resolution.audit_log`).
    fn audit(&self) -> bool;
}

/// Last-write-wins for every object, audited: the policy of a site that knows no better.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastWriteWins;

impl ConflictPolicy for LastWriteWins {
    fn strategy(&self, _: &ObjectKey) -> model::Strategy {
        model::Strategy::LastWriteWins
    }
    fn rank(&self, _: &SiteId) -> u8 {
        0
    }
    fn audit(&self) -> bool {
        true
    }
}

/// The state of a conflict at a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictStatus {
    /// Under `manual`: the winner is provisional until an operator acknowledges or picks.
    Open,
    /// An operator acknowledged the provisional winner.
    Acknowledged,
    /// Decided: by the strategy (last-write-wins, authority-wins), or by a later version that
    /// dominates both sides (an operator's pick, or any later write).
    Resolved,
}

impl ConflictStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictStatus::Open => "open",
            ConflictStatus::Acknowledged => "acknowledged",
            ConflictStatus::Resolved => "resolved",
        }
    }
}

/// One side of a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictSide {
    pub version: VersionId,
    pub origin: SiteId,
    pub author: String,
    pub deleted: bool,
}

/// Two versions of one object written concurrently, and what came of it at this site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictRecord {
    /// The same at every site: [`conflict_id`] of the key and both versions.
    pub id: String,
    pub key: ObjectKey,
    /// The two sides, in version order.
    pub sides: [ConflictSide; 2],
    pub strategy: model::Strategy,
    /// The version the strategy chose (provisional under `manual`).
    pub winner: VersionId,
    pub status: ConflictStatus,
    /// When this site detected it.
    pub detected_ms: u64,
    /// Who acknowledged it, and when.
    pub acknowledged: Option<(String, u64)>,
    /// The later version that dominates both sides, when one arrived or was written here.
    pub resolved_by: Option<VersionId>,
}

/// The deterministic id of the conflict between two versions of an object: 16 hex digits.
pub fn conflict_id(key: &ObjectKey, a: &VersionId, b: &VersionId) -> String {
    use sha2::Digest;
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let digest = sha2::Sha256::digest(format!("{key}\n{first}\n{second}").as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Which conflicts to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConflictFilter {
    pub status: Option<ConflictStatus>,
    pub key: Option<ObjectKey>,
    pub limit: usize,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub at_ms: u64,
    /// `write`, `delete`, `conflict`, `refusal`, `link`.
    pub kind: String,
    pub object: Option<ObjectKey>,
    /// The event's details, as the event stream and webhooks send them.
    pub data: serde_json::Value,
}

/// An event with its position in the append-only event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub event: NewEvent,
}

/// One attempt to deliver an event to a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub webhook: String,
    pub event_seq: u64,
    pub attempt: u32,
    pub at_ms: u64,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// `delivered`, `failed` (will retry) or `gave-up`.
    pub outcome: String,
    pub detail: String,
}

/// A delivery attempt with its position in the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryEntry {
    pub id: u64,
    pub delivery: Delivery,
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

// ---------------------------------------------------------------------------------------------
// Replication: what the sync engine needs from a store.
// ---------------------------------------------------------------------------------------------

/// A version received from a peer, with its content.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteVersion {
    pub key: ObjectKey,
    pub version: Version,
    pub labels: BTreeMap<String, String>,
    /// The spec's text as its origin hashed it: stored and sent on byte for byte.
    pub spec: SpecText,
}

/// One change a link carries ([`Store::changes_for_link`]): a change-log entry with its content
/// as the store keeps it, ready to send without being parsed and written again.
pub type LinkChange = Change<SpecText>;

impl From<LinkChange> for RemoteVersion {
    fn from(c: LinkChange) -> Self {
        RemoteVersion { key: c.key, version: c.version, labels: c.labels, spec: c.spec }
    }
}

/// What applying a batch from a peer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Versions new to this site: appended to history and the change log.
    pub applied: usize,
    /// Versions this site already had (a batch delivered twice changes nothing).
    pub duplicates: usize,
    /// Of the applied versions, how many became the object's current version.
    pub became_current: usize,
    /// Of the applied versions, how many conflicted with at least one version of the object's
    /// frontier (for honest histories: whose vector is concurrent with the object's causal
    /// context).
    pub concurrent: usize,
    /// The change-log sequence number after the batch.
    pub last_seq: u64,
    /// Each applied version's index in the batch and the sequence number the change log gave
    /// it, in log order: what the sync engine forwards from memory instead of reading the log
    /// back.
    pub logged: Vec<(usize, u64)>,
}

/// A version whose timestamp is too far ahead of this site's clock.
#[derive(Debug, thiserror::Error)]
#[error("version {version} of {key} is refused: {error}")]
pub struct SkewRefusal {
    pub key: ObjectKey,
    pub version: VersionId,
    pub error: model::ClockError,
}

/// Why a batch from a peer was refused. A refused batch changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    ClockSkew(Box<SkewRefusal>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which changes of the log a link carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkQuery {
    /// The link's cursor: the peer has acknowledged every change up to this sequence number.
    pub after: u64,
    /// The peer: changes that arrived from it are not sent back to it.
    pub peer: SiteId,
    /// Only objects in these scopes; `None` for every scope.
    pub scopes: Option<BTreeSet<Scope>>,
}

/// The next changes to send on a link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkBatch {
    /// In change-log order, at most the limit asked for.
    pub changes: Vec<LinkChange>,
    /// The highest sequence number examined: once the peer acknowledges this batch, the link's
    /// cursor moves here (changes skipped on the way need not be sent).
    pub scanned_to: u64,
}

/// Sync debt of a link: the changes it should carry that the peer has not acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Debt {
    pub pending: u64,
    /// The size of their content in bytes (labels and spec as compact JSON).
    pub pending_bytes: u64,
    /// When this site accepted the oldest of them (ms since the epoch).
    pub oldest_ms: Option<u64>,
}

/// The durable record of a link, kept by the sync engine (only the sync engine writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRecord {
    pub peer: SiteId,
    /// The peer has acknowledged every change up to this sequence number.
    pub cursor: u64,
    /// Scopes the peer reported holding (learned when the link is up; kept across restarts).
    pub peer_scopes: BTreeSet<Scope>,
    /// The last time a round with the peer succeeded, either way (ms since the epoch).
    pub last_sync_ms: Option<u64>,
    /// The last connectivity signal given for the link: `up`, `down` or `metered`.
    pub signal: String,
    /// The site directory the peer last sent (cards of the sites it knows).
    pub peer_sites: Vec<model::SiteCard>,
}
