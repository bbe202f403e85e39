//! The embedded SQLite backend: one file per site, in WAL mode with `synchronous=FULL`, so a
//! write is fsynced before [`Store::write`] returns.
//!
//! One writer connection behind a mutex serializes writes (each in a `BEGIN IMMEDIATE`
//! transaction). Local writes commit in groups: writes that arrive while a group commits queue
//! up and commit together in the next transaction (a refused write is refused alone, and a
//! write that fails is rolled back and the rest run again without it), so one fsync
//! acknowledges them all. A fixed pool of read-only connections serves reads, which WAL lets
//! run beside the writer. The `versions` table holds every version with its content and is
//! also the change log: a version's row id is its sequence number, and the row says which link
//! it came on, when it was accepted and its size (so sync debt is one query), and the site's
//! clock once it was stamped or observed (the newest version's is the clock). `objects` points
//! at each object's current version (and keeps its causal context). `links` keeps the
//! sync engine's record of each link. `conflicts` keeps the conflict records (with both sides'
//! vectors, to tell which later version resolves one), `events` the append-only event log,
//! `webhook_deliveries` and `webhook_cursors` what the webhook sender did, `nodes` the last
//! heartbeat of each managed node. Labels, specs,
//! version vectors, scope sets, site cards and event data are stored as JSON text. The schema
//! is versioned in the `meta` table and migrated on open.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use model::{
    ContentHash, Hlc, HlcClock, Kind, ObjectKey, ObjectName, Scope, SiteCard, SiteId, SpecText, StoredObject,
    Strategy, Version, VersionId, VersionVector,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{CachedStatement, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use tracing::{debug, info};

use crate::conflicts::{self, Stored};
use crate::group::GroupCommit;
use crate::local_write::{refusal, stamp};
use crate::remote::Current;
use crate::{
    ApplyError, ApplyReport, AuditEntry, AuditRecord, Change, Committed, ConflictFilter, ConflictPolicy,
    ConflictRecord, ConflictSide, ConflictStatus, Debt, Delivery, DeliveryEntry, Event, Heartbeat,
    HistoryEntry, LinkBatch, LinkChange, LinkQuery, LinkRecord, ListFilter, LocalWrite, MAX_LINK_BATCH,
    NewEvent, NodeRecord, RemoteVersion, SkewRefusal, Store, StoreError, WriteError, clamp_limit, remote,
};

/// How many read-only connections serve reads.
const READERS: usize = 4;
/// How many prepared statements each connection keeps: more than the distinct statements one
/// connection runs, so none is prepared twice.
const STATEMENT_CACHE: usize = 64;
/// How long a connection waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `MIGRATIONS[n]` brings a store from schema version `n` to `n + 1`. Version 0 is a new file
/// with only its `meta` table.
const MIGRATIONS: &[Step] = &[
    Step::Sql(SCHEMA_V1),
    Step::Sql(SCHEMA_V2),
    Step::Sql(SCHEMA_V3),
    Step::Sql(SCHEMA_V4),
    Step::Sql(SCHEMA_V5),
    Step::Code(schema_v6),
    Step::Sql(SCHEMA_V7),
];

/// One migration: a script, or code that looks at the file before it changes it.
enum Step {
    Sql(&'static str),
    Code(fn(&Connection, &Path) -> rusqlite::Result<()>),
}

const META: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
";

const SCHEMA_V1: &str = "
-- Every version this site has accepted, with its content; deletes are tombstones.
CREATE TABLE versions (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    name         TEXT NOT NULL,
    hlc_wall     INTEGER NOT NULL,
    hlc_logical  INTEGER NOT NULL,
    origin       TEXT NOT NULL,
    vv           TEXT NOT NULL,
    author       TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    deleted      INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    labels       TEXT NOT NULL,
    spec         TEXT NOT NULL,
    UNIQUE (kind, scope, name, hlc_wall, hlc_logical, origin)
) STRICT;

-- The current version of every object, tombstones included.
CREATE TABLE objects (
    kind            TEXT NOT NULL,
    scope           TEXT NOT NULL,
    name            TEXT NOT NULL,
    version_id      INTEGER NOT NULL UNIQUE REFERENCES versions (id),
    created_wall    INTEGER NOT NULL,
    created_logical INTEGER NOT NULL,
    PRIMARY KEY (kind, scope, name)
) STRICT, WITHOUT ROWID;

-- The versions in the order this site accepted them; `from_site` is NULL for local writes.
CREATE TABLE changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    version_id INTEGER NOT NULL UNIQUE REFERENCES versions (id),
    from_site  TEXT
) STRICT;

CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    kind    TEXT,
    scope   TEXT,
    name    TEXT,
    version TEXT,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL,
    CHECK ((kind IS NULL) = (scope IS NULL) AND (scope IS NULL) = (name IS NULL))
) STRICT;

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

const SCHEMA_V2: &str = "
-- Replication. The causal context of each object: the merge of the version vectors of every
-- version of it this site accepted. Before replication every version was a local write whose
-- vector covered all earlier ones, so the current version's vector is the context.
ALTER TABLE objects ADD COLUMN context TEXT NOT NULL DEFAULT '{}';
UPDATE objects SET context = (SELECT v.vv FROM versions v WHERE v.id = objects.version_id);

-- When this site accepted each change (ms since the epoch) and the size of its content (labels
-- JSON + spec JSON, in bytes), so sync debt is one cheap query. Older changes were all local
-- writes, accepted at their timestamp's physical time.
ALTER TABLE changes ADD COLUMN recorded_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE changes ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
UPDATE changes SET
    recorded_ms = (SELECT v.hlc_wall FROM versions v WHERE v.id = changes.version_id),
    bytes = (SELECT length(CAST(v.labels AS BLOB)) + length(CAST(v.spec AS BLOB))
             FROM versions v WHERE v.id = changes.version_id);

-- Whether a later version of the same object from the same origin is held (superseded).
CREATE INDEX versions_by_origin ON versions (kind, scope, name, origin, hlc_wall, hlc_logical);

-- The sync engine's durable state of each link.
CREATE TABLE links (
    peer         TEXT PRIMARY KEY,
    cursor       INTEGER NOT NULL CHECK (cursor >= 0),
    peer_scopes  TEXT NOT NULL DEFAULT '[]',
    last_sync_ms INTEGER,
    signal       TEXT NOT NULL DEFAULT 'up'
) STRICT;
";

const SCHEMA_V3: &str = "
-- Conflicts: two versions of one object written concurrently, and what came of them at this
-- site. The id is the same at every site (a hash of the object and both version ids); side `a`
-- has the lower version id. The sides' vectors tell which later version resolves the conflict.
CREATE TABLE conflicts (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    scope           TEXT NOT NULL,
    name            TEXT NOT NULL,
    a_version       TEXT NOT NULL,
    a_origin        TEXT NOT NULL,
    a_author        TEXT NOT NULL,
    a_deleted       INTEGER NOT NULL CHECK (a_deleted IN (0, 1)),
    a_vv            TEXT NOT NULL,
    b_version       TEXT NOT NULL,
    b_origin        TEXT NOT NULL,
    b_author        TEXT NOT NULL,
    b_deleted       INTEGER NOT NULL CHECK (b_deleted IN (0, 1)),
    b_vv            TEXT NOT NULL,
    strategy        TEXT NOT NULL,
    winner          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('open', 'acknowledged', 'resolved')),
    detected_ms     INTEGER NOT NULL,
    acknowledged_by TEXT,
    acknowledged_ms INTEGER,
    resolved_by     TEXT,
    CHECK ((acknowledged_by IS NULL) = (acknowledged_ms IS NULL))
) STRICT;
-- The open conflicts of an object (checked by every version applied or written).
CREATE INDEX conflicts_by_object ON conflicts (kind, scope, name, status);
-- Listings, newest first, optionally by status.
CREATE INDEX conflicts_by_time ON conflicts (detected_ms DESC, id);
CREATE INDEX conflicts_by_status ON conflicts (status, detected_ms DESC, id);

-- What happened at this site, for the event stream and webhooks: append-only, like the audit
-- log.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms        INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    object_kind  TEXT,
    object_scope TEXT,
    object_name  TEXT,
    data         TEXT NOT NULL,
    CHECK ((object_kind IS NULL) = (object_scope IS NULL) AND (object_scope IS NULL) = (object_name IS NULL))
) STRICT;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;

-- Every attempt to deliver an event to a webhook, and how far each webhook got.
CREATE TABLE webhook_deliveries (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook   TEXT NOT NULL,
    event_seq INTEGER NOT NULL,
    attempt   INTEGER NOT NULL,
    at_ms     INTEGER NOT NULL,
    status    INTEGER,
    outcome   TEXT NOT NULL,
    detail    TEXT NOT NULL
) STRICT;
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook, id);

CREATE TABLE webhook_cursors (
    webhook TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL CHECK (seq >= 0)
) STRICT;

-- The site directory each peer last sent (a JSON array of site cards).
ALTER TABLE links ADD COLUMN peer_sites TEXT NOT NULL DEFAULT '[]';
";

const SCHEMA_V4: &str = "
-- Managed nodes that heartbeat to this site: site-local, never in the change log. `applied`
-- is a JSON object, `Kind/scope/name` -> version id.
CREATE TABLE nodes (
    id                    TEXT PRIMARY KEY,
    last_heartbeat_ms     INTEGER NOT NULL CHECK (last_heartbeat_ms >= 0),
    previous_heartbeat_ms INTEGER CHECK (previous_heartbeat_ms >= 0),
    interval_seconds      INTEGER NOT NULL CHECK (interval_seconds >= 0),
    software_version      TEXT NOT NULL,
    health                TEXT NOT NULL,
    applied               TEXT NOT NULL
) STRICT, WITHOUT ROWID;
";

const SCHEMA_V5: &str = "
-- Fewer b-trees to update for every accepted version. The change log was a table of its own,
-- one row per version with its own index on `version_id`: it becomes columns of `versions`, and
-- a version's row id is its sequence number in the log (the order this site accepted it; never
-- reused, so a peer's cursor stays valid). Old versions take their change's sequence number, so
-- link cursors carry over. `versions` had two indexes over the same six columns (its UNIQUE
-- constraint and `versions_by_origin`): the index becomes the unique one. Nothing looks
-- `objects` up by `version_id`, so its UNIQUE index goes. The tables are rebuilt (SQLite cannot
-- drop a constraint's index) with foreign keys off; they are checked before the migration
-- commits.
CREATE TABLE versions_v5 (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    name         TEXT NOT NULL,
    hlc_wall     INTEGER NOT NULL,
    hlc_logical  INTEGER NOT NULL,
    origin       TEXT NOT NULL,
    vv           TEXT NOT NULL,
    author       TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    deleted      INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    labels       TEXT NOT NULL,
    spec         TEXT NOT NULL,
    -- The neighbour it was received from; NULL for a local write.
    from_site    TEXT,
    -- When this site accepted it (ms since the epoch), and the size of its content (labels
    -- JSON + spec text, in bytes), so sync debt is one cheap query.
    recorded_ms  INTEGER NOT NULL,
    bytes        INTEGER NOT NULL
) STRICT;
INSERT INTO versions_v5 (id, kind, scope, name, hlc_wall, hlc_logical, origin, vv, author, content_hash,
                         deleted, labels, spec, from_site, recorded_ms, bytes)
    SELECT c.seq, v.kind, v.scope, v.name, v.hlc_wall, v.hlc_logical, v.origin, v.vv, v.author,
           v.content_hash, v.deleted, v.labels, v.spec, c.from_site, c.recorded_ms, c.bytes
    FROM changes c JOIN versions v ON v.id = c.version_id;
-- The log's next number follows the highest it ever gave out.
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0))
    WHERE name = 'versions_v5';

CREATE TABLE objects_v5 (
    kind            TEXT NOT NULL,
    scope           TEXT NOT NULL,
    name            TEXT NOT NULL,
    version_id      INTEGER NOT NULL REFERENCES versions (id),
    created_wall    INTEGER NOT NULL,
    created_logical INTEGER NOT NULL,
    context         TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, scope, name)
) STRICT, WITHOUT ROWID;
INSERT INTO objects_v5 (kind, scope, name, version_id, created_wall, created_logical, context)
    SELECT o.kind, o.scope, o.name, c.seq, o.created_wall, o.created_logical, o.context
    FROM objects o JOIN changes c ON c.version_id = o.version_id;

DROP TABLE objects;
DROP TABLE changes;
DROP TABLE versions;
ALTER TABLE versions_v5 RENAME TO versions;
ALTER TABLE objects_v5 RENAME TO objects;
-- One version per (object, timestamp, origin); also finds whether a later version of an object
-- from the same origin is held.
CREATE UNIQUE INDEX versions_by_origin ON versions (kind, scope, name, origin, hlc_wall, hlc_logical);
";

/// Schema version 6: one page fewer written by every commit. `versions`, `events` and `audit`
/// numbered their rows with `AUTOINCREMENT`, so every insert into them also updated
/// `sqlite_sequence`: a b-tree update per row, and one more page in the WAL for every commit.
/// Their rows are never deleted (versions are history, and the two logs refuse deletes), so
/// without it SQLite numbers a new row one past the largest, which is the number `AUTOINCREMENT`
/// would have given: a number is still never given out twice. A table whose sequence ran ahead
/// of its rows (numbers given out to rows that are not there) keeps `AUTOINCREMENT`, so that it
/// goes on after the highest number it gave out.
fn schema_v6(tx: &Connection, path: &Path) -> rusqlite::Result<()> {
    for (table, rebuild) in [("versions", VERSIONS_V6), ("events", EVENTS_V6), ("audit", AUDIT_V6)] {
        let (given, largest): (i64, i64) = tx.query_row(
            &format!(
                "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0), \
                        COALESCE((SELECT MAX(rowid) FROM {table}), 0)"
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if given > largest {
            info!(
                path = %path.display(), table, given, largest,
                "keeping AUTOINCREMENT: numbers up to {given} were given out, rows go up to {largest}"
            );
            continue;
        }
        tx.execute_batch(rebuild)?;
    }
    Ok(())
}

/// Schema 5's `versions` without `AUTOINCREMENT`. A migration spells out its tables as they are at
/// its version, so that a later change to the schema never rewrites what an older file goes
/// through; the same holds for `events` and `audit` below, schema 3's and schema 1's.
const VERSIONS_V6: &str = "
CREATE TABLE versions_v6 (
    -- The version's sequence number in the change log: the order this site accepted it.
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    name         TEXT NOT NULL,
    hlc_wall     INTEGER NOT NULL,
    hlc_logical  INTEGER NOT NULL,
    origin       TEXT NOT NULL,
    vv           TEXT NOT NULL,
    author       TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    deleted      INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    labels       TEXT NOT NULL,
    spec         TEXT NOT NULL,
    -- The neighbour it was received from; NULL for a local write.
    from_site    TEXT,
    -- When this site accepted it (ms since the epoch), and the size of its content (labels
    -- JSON + spec text, in bytes), so sync debt is one cheap query.
    recorded_ms  INTEGER NOT NULL,
    bytes        INTEGER NOT NULL
) STRICT;
INSERT INTO versions_v6 (id, kind, scope, name, hlc_wall, hlc_logical, origin, vv, author, content_hash,
                         deleted, labels, spec, from_site, recorded_ms, bytes)
    SELECT id, kind, scope, name, hlc_wall, hlc_logical, origin, vv, author, content_hash,
           deleted, labels, spec, from_site, recorded_ms, bytes
    FROM versions ORDER BY id;
DROP TABLE versions;
ALTER TABLE versions_v6 RENAME TO versions;
-- One version per (object, timestamp, origin); also finds whether a later version of an object
-- from the same origin is held.
CREATE UNIQUE INDEX versions_by_origin ON versions (kind, scope, name, origin, hlc_wall, hlc_logical);
";

const EVENTS_V6: &str = "
CREATE TABLE events_v6 (
    seq          INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    object_kind  TEXT,
    object_scope TEXT,
    object_name  TEXT,
    data         TEXT NOT NULL,
    CHECK ((object_kind IS NULL) = (object_scope IS NULL) AND (object_scope IS NULL) = (object_name IS NULL))
) STRICT;
INSERT INTO events_v6 (seq, at_ms, kind, object_kind, object_scope, object_name, data)
    SELECT seq, at_ms, kind, object_kind, object_scope, object_name, data FROM events ORDER BY seq;
DROP TABLE events;
ALTER TABLE events_v6 RENAME TO events;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
";

const AUDIT_V6: &str = "
CREATE TABLE audit_v6 (
    seq     INTEGER PRIMARY KEY,
    at_ms   INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    kind    TEXT,
    scope   TEXT,
    name    TEXT,
    version TEXT,
    outcome TEXT NOT NULL,
    detail  TEXT NOT NULL,
    CHECK ((kind IS NULL) = (scope IS NULL) AND (scope IS NULL) = (name IS NULL))
) STRICT;
INSERT INTO audit_v6 (seq, at_ms, actor, action, kind, scope, name, version, outcome, detail)
    SELECT seq, at_ms, actor, action, kind, scope, name, version, outcome, detail FROM audit ORDER BY seq;
DROP TABLE audit;
ALTER TABLE audit_v6 RENAME TO audit;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

/// Schema version 7: the clock moves into the versions. Every commit updated the `clock` row of
/// `meta`, one more page in the WAL; but the clock only moves when a version is written (a local
/// write's tick, a received version's timestamp observed), so each version now records the clock
/// as it stood once the version was stamped or observed, and the newest version holds the
/// clock. Versions written before have no clock of their own: while the newest is one of them,
/// `meta` still holds the clock (it was saved by every commit until this version).
const SCHEMA_V7: &str = "
ALTER TABLE versions ADD COLUMN clock_wall INTEGER;
ALTER TABLE versions ADD COLUMN clock_logical INTEGER;
";

const NODE_COLUMNS: &str =
    "id, last_heartbeat_ms, previous_heartbeat_ms, interval_seconds, software_version, health, applied";

/// The columns of a version, in the order [`RawVersion::read`] expects them.
const VERSION_COLUMNS: &str = "v.id, v.kind, v.scope, v.name, v.hlc_wall, v.hlc_logical, v.origin, \
     v.vv, v.author, v.content_hash, v.deleted, v.labels, v.spec";
/// The number of columns in [`VERSION_COLUMNS`].
const VERSION_COLUMN_COUNT: usize = 13;

/// [`VERSION_COLUMNS`] without the content (empty labels, null spec): what deciding conflicts
/// reads of every version of an object.
const VERSION_META_COLUMNS: &str = "v.id, v.kind, v.scope, v.name, v.hlc_wall, v.hlc_logical, v.origin, \
     v.vv, v.author, v.content_hash, v.deleted, '{}', 'null'";

const AUDIT_COLUMNS: &str = "seq, at_ms, actor, action, kind, scope, name, version, outcome, detail";

const CONFLICT_COLUMNS: &str = "id, kind, scope, name, \
     a_version, a_origin, a_author, a_deleted, a_vv, b_version, b_origin, b_author, b_deleted, b_vv, \
     strategy, winner, status, detected_ms, acknowledged_by, acknowledged_ms, resolved_by";

const EVENT_COLUMNS: &str = "seq, at_ms, kind, object_kind, object_scope, object_name, data";

const DELIVERY_COLUMNS: &str = "id, webhook, event_seq, attempt, at_ms, status, outcome, detail";

/// A [`Store`] in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    site: SiteId,
    max_clock_skew_ms: u64,
    // Readers are declared (so dropped) before the writer: the last connection to close
    // checkpoints the WAL into the database file, and only the writer can.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    writer: Mutex<Connection>,
    /// Local writes waiting to commit together (group commit).
    group: GroupCommit<LocalWrite, Result<Committed, WriteError>>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("site", &self.site)
            .field("max_clock_skew_ms", &self.max_clock_skew_ms)
            .finish_non_exhaustive()
    }
}

/// How durably an [`SqliteStore`] commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `wal`.
    pub journal_mode: String,
    /// `full`: every commit is fsynced before it returns.
    pub synchronous: String,
}

/// A problem found while opening a store, as the source of [`StoreError::Open`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct OpenProblem(String);

impl SqliteStore {
    /// The schema version this build creates and understands.
    pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

    /// Opens the store of `site` at `path`, creating the file (and its parent directories) if
    /// it does not exist and migrating an older schema. Fails with [`StoreError::WrongSite`] for
    /// another site's file and [`StoreError::SchemaTooNew`] for a file written by a newer build.
    /// `max_clock_skew_ms` bounds how far ahead of local time a peer's timestamp may be.
    pub fn open(path: &Path, site: SiteId, max_clock_skew_ms: u64) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: shown.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| open_err(Box::new(e)))?;
        }
        let mut writer = Connection::open(path).map_err(|e| open_err(Box::new(e)))?;
        configure_writer(&writer).map_err(&open_err)?;
        migrate(&mut writer, path, &site).map_err(|e| match e {
            Migration::Refused(e) => e,
            Migration::Failed(source) => open_err(source),
        })?;
        // A migration's transaction (a rebuild copies whole tables) leaves the WAL file as large
        // as it was: SQLite reuses a WAL but never shrinks it. Copied into the database file and
        // cut to nothing here, before any reader holds a snapshot, it starts small. A WAL that a
        // crash left behind is copied the same way.
        let (busy, _, _): (i64, i64, i64) = writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| open_err(Box::new(e)))?;
        if busy != 0 {
            debug!(path = %shown, "another connection holds the WAL; it is checkpointed later");
        }
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(open_reader(path).map_err(|e| open_err(Box::new(e)))?));
        }
        info!(path = %shown, site = %site, "opened store");
        Ok(SqliteStore {
            path: path.to_owned(),
            site,
            max_clock_skew_ms,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            group: GroupCommit::default(),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How far ahead of local time a peer's timestamp may be before it is refused.
    pub fn max_clock_skew_ms(&self) -> u64 {
        self.max_clock_skew_ms
    }

    /// The durability settings the store's writer connection runs with, as SQLite reports
    /// them: for an operator's status page, and for tests.
    pub fn durability(&self) -> Result<Durability, StoreError> {
        let conn = self.writer();
        let context = "reading the durability settings";
        let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).during(context)?;
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0)).during(context)?;
        let synchronous = match synchronous {
            0 => "off",
            1 => "normal",
            2 => "full",
            3 => "extra",
            _ => "unknown",
        };
        Ok(Durability {
            journal_mode: journal_mode.to_ascii_lowercase(),
            synchronous: synchronous.to_owned(),
        })
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held cannot leave the connection mid-transaction: an
        // unfinished `Transaction` rolls back when it is dropped during the unwind.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle read-only connection if there is one, else the next one in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.readers[start % n].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits a group of local writes in one `BEGIN IMMEDIATE` transaction, so one fsync makes
    /// them all durable, and returns each write's outcome in order. Each write has the checks and
    /// clock tick of a write on its own: a refused write keeps only its audit entry and the
    /// others commit. A write that fails (an error of the store, not a refusal) must leave no
    /// trace, so the transaction is rolled back and the group runs again without it: no
    /// savepoint per write, which would copy every page a write touches into a sub-journal. Each
    /// pass drops one write, so there are at most as many passes as writes. If the transaction
    /// cannot start or commit, every write still waiting fails.
    fn commit_group(&self, writes: Vec<LocalWrite>) -> Vec<Result<Committed, WriteError>> {
        let count = writes.len();
        let mut conn = self.writer();
        let mut failed: Vec<Option<WriteError>> = (0..count).map(|_| None).collect();
        loop {
            let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
                Ok(tx) => tx,
                Err(e) => {
                    return with_failures(failed, group_failed(count, "starting a write transaction", &e));
                }
            };
            let mut clock = match read_clock(&tx) {
                Ok(last) => HlcClock::new(last, self.max_clock_skew_ms),
                Err(e) => return with_failures(failed, group_failed(count, "reading the clock", &e)),
            };
            let mut open = match unresolved_conflicts_exist(&tx) {
                Ok(open) => open,
                Err(e) => {
                    return with_failures(failed, group_failed(count, "reading the open conflicts", &e));
                }
            };
            let mut statements = match VersionStatements::prepare(&tx) {
                Ok(statements) => statements,
                Err(e) => return with_failures(failed, group_failed(count, "preparing the writes", &e)),
            };
            let mut outcomes = Vec::with_capacity(count);
            let mut failure = None;
            for (i, write) in writes.iter().enumerate() {
                if failed[i].is_some() {
                    outcomes.push(None);
                    continue;
                }
                match self.write_in(&tx, &mut statements, write.clone(), &mut clock, &mut open) {
                    Err(WriteError::Store(e)) => {
                        failure = Some((i, e));
                        break;
                    }
                    outcome => outcomes.push(Some(outcome)),
                }
            }
            drop(statements);
            if let Some((i, e)) = failure {
                // Dropping `tx` rolls the pass back; the next one runs without this write.
                drop(tx);
                debug!(write = i, error = %e, "a write of the group failed; the others run again without it");
                failed[i] = Some(WriteError::Store(e));
                continue;
            }
            if let Err(e) = tx.commit() {
                return with_failures(failed, group_failed(count, "committing a write", &e));
            }
            debug!(writes = count, "write group committed");
            return outcomes
                .into_iter()
                .zip(failed)
                .map(|(outcome, failure)| match (outcome, failure) {
                    (_, Some(failure)) => Err(failure),
                    (Some(outcome), None) => outcome,
                    (None, None) => Err(WriteError::Store(StoreError::Backend {
                        context: "committing a write".into(),
                        source: Box::new(GroupFailure("the write was not run".into())),
                    })),
                })
                .collect();
        }
    }

    /// One local write inside the group's transaction: refused (with its audit entry) or
    /// stamped and recorded. Advances `clock`.
    fn write_in(
        &self,
        conn: &Connection,
        statements: &mut VersionStatements<'_>,
        write: LocalWrite,
        clock: &mut HlcClock,
        open_conflicts: &mut bool,
    ) -> Result<Committed, WriteError> {
        // The checks and the stamp read the current version's identity and context, not its
        // content.
        let current = statements.current(&write.key)?;
        if let Some(refused) = refusal(&write, current.as_ref()) {
            insert_audit(conn, &refused.audit)?;
            debug!(key = %write.key, outcome = %refused.audit.outcome, "write refused");
            return Err(refused.error);
        }
        let accepted_ms = write.now_ms;
        // The text stored is the text hashed: the spec is written out once.
        let content = Content::encode(&write.labels, &write.spec);
        let hash = ContentHash::of_text(&write.key, &content.labels, &content.spec, write.deleted);
        let stamped = stamp(&self.site, write, current.as_ref(), clock, hash);
        let object = &stamped.object;
        let (key, version) = (&object.key, &object.version);
        let version_row =
            statements.insert_version(key, version, &content, None, accepted_ms, clock.last())?;
        statements.set_current(key, current.is_some(), version_row, object.created, &object.context)?;
        let seq = to_u64("versions", "just inserted", "id", version_row)?;
        insert_audit(conn, &stamped.audit)?;
        statements.version_event(key, version, None, true, accepted_ms)?;
        // The new version dominates everything the site holds, so it resolves every open
        // conflict of the object (an operator's pick is such a write). No policy reaches a local
        // write, so these resolutions are always audited.
        if *open_conflicts {
            resolve_conflicts(conn, key, version, accepted_ms, true)?;
        }
        debug!(key = %key, version = %version.id(), seq, deleted = version.deleted, "write recorded");
        Ok(Committed { object: stamped.object, seq, created: stamped.created })
    }
}

/// Why a group of writes failed as a whole, as the source of each write's error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct GroupFailure(String);

/// The outcomes of a group whose transaction failed as a whole, but for the writes that had
/// failed on their own before: those keep their own error.
fn with_failures(
    failed: Vec<Option<WriteError>>,
    group: Vec<Result<Committed, WriteError>>,
) -> Vec<Result<Committed, WriteError>> {
    failed.into_iter().zip(group).map(|(own, group)| own.map_or(group, Err)).collect()
}

/// The outcome of every write of a group whose transaction failed as a whole.
fn group_failed(count: usize, context: &str, error: &dyn fmt::Display) -> Vec<Result<Committed, WriteError>> {
    (0..count)
        .map(|_| {
            Err(WriteError::Store(StoreError::Backend {
                context: context.to_owned(),
                source: Box::new(GroupFailure(error.to_string())),
            }))
        })
        .collect()
}

fn configure_writer(conn: &Connection) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Box::new(OpenProblem(format!(
            "could not switch the journal to WAL mode (it stays `{mode}`): keep the data directory on a local filesystem"
        ))));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Why [`migrate`] stopped: a store this build must not use, or a failure.
enum Migration {
    Refused(StoreError),
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

impl From<rusqlite::Error> for Migration {
    fn from(e: rusqlite::Error) -> Self {
        Migration::Failed(Box::new(e))
    }
}

/// Creates the schema of a new file, or checks an existing file's site and schema version and
/// brings it up to [`SqliteStore::SCHEMA_VERSION`], in one transaction.
fn migrate(conn: &mut Connection, path: &Path, site: &SiteId) -> Result<(), Migration> {
    migrate_to(conn, path, site, SqliteStore::SCHEMA_VERSION)
}

/// [`migrate`], stopping at schema version `target` (tests make older files with it).
fn migrate_to(conn: &mut Connection, path: &Path, site: &SiteId, target: u32) -> Result<(), Migration> {
    // A migration may rebuild a table that others reference, which SQLite allows only with
    // foreign keys off (the setting cannot change inside a transaction). The keys are checked
    // before the migration commits, and the setting is put back whatever happened.
    let enforced: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let migrated = migrate_in_transaction(conn, path, site, target);
    conn.pragma_update(None, "foreign_keys", enforced)?;
    migrated
}

fn migrate_in_transaction(
    conn: &mut Connection,
    path: &Path,
    site: &SiteId,
    target: u32,
) -> Result<(), Migration> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_meta: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta')",
        [],
        |r| r.get(0),
    )?;
    let from = if has_meta {
        let read = |key: &str| -> Result<String, Migration> {
            tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?
                .ok_or_else(|| Migration::Refused(StoreError::Corrupt(format!("meta has no `{key}` entry"))))
        };
        let raw = read("schema_version")?;
        let found: u32 = raw.parse().map_err(|_| {
            Migration::Refused(StoreError::Corrupt(format!(
                "meta `schema_version` holds `{raw}`, not a number"
            )))
        })?;
        if found > SqliteStore::SCHEMA_VERSION {
            return Err(Migration::Refused(StoreError::SchemaTooNew {
                path: path.display().to_string(),
                found,
                supported: SqliteStore::SCHEMA_VERSION,
            }));
        }
        let owner = read("site_id")?;
        if owner != site.as_str() {
            return Err(Migration::Refused(StoreError::WrongSite {
                path: path.display().to_string(),
                found: owner,
                expected: site.to_string(),
            }));
        }
        found
    } else {
        let tables: i64 = tx.query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            [],
            |r| r.get(0),
        )?;
        if tables > 0 {
            return Err(Migration::Failed(Box::new(OpenProblem(
                "the file is an SQLite database but not a souverix store: point the data directory elsewhere"
                    .into(),
            ))));
        }
        tx.execute_batch(META)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', '0'), ('site_id', ?1), ('clock', ?2)",
            params![site.as_str(), Hlc::ZERO.to_string()],
        )?;
        info!(path = %path.display(), site = %site, "created store");
        0
    };
    if from > 0 && from < target {
        check_before_migrating(&tx, from)?;
    }
    for (n, migration) in MIGRATIONS.iter().enumerate().take(target as usize).skip(from as usize) {
        match migration {
            Step::Sql(sql) => tx.execute_batch(sql)?,
            Step::Code(migrate) => migrate(&tx, path)?,
        }
        let to = n + 1;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", [to.to_string()])?;
        info!(path = %path.display(), schema_version = to, "migrated store schema");
    }
    check_references(&tx)?;
    tx.commit()?;
    Ok(())
}

/// What a migration relies on in an existing file: every reference resolves, and (before the
/// change log joined `versions`) each version has exactly one change-log entry. A file that
/// fails is refused and left as it was.
fn check_before_migrating(tx: &Connection, from: u32) -> Result<(), Migration> {
    check_references(tx)?;
    if from < 5 {
        let (versions, logged): (i64, i64) = tx.query_row(
            "SELECT (SELECT COUNT(*) FROM versions), \
                    (SELECT COUNT(DISTINCT c.version_id) FROM changes c JOIN versions v ON v.id = c.version_id)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let entries: i64 = tx.query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0))?;
        if versions != logged || entries != logged {
            return Err(Migration::Refused(StoreError::Corrupt(format!(
                "the store holds {versions} versions and {entries} change-log entries for {logged} of \
                 them, where each version has exactly one, so it cannot be migrated; restore the \
                 site's data directory from a backup"
            ))));
        }
    }
    Ok(())
}

/// Fails on the first row whose foreign key refers to a row that does not exist.
fn check_references(tx: &Connection) -> Result<(), Migration> {
    let dangling: Option<(String, Option<i64>, String)> = tx
        .query_row("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    if let Some((table, rowid, parent)) = dangling {
        let row = rowid.map_or_else(|| "a row".to_owned(), |id| format!("row {id}"));
        return Err(Migration::Refused(StoreError::Corrupt(format!(
            "{table} {row} refers to a {parent} row that does not exist, so the store cannot be \
             migrated; restore the site's data directory from a backup"
        ))));
    }
    Ok(())
}

/// Maps a failed SQLite call into [`StoreError::Backend`] naming what the store was doing.
trait During<T> {
    fn during(self, context: &str) -> Result<T, StoreError>;
}

impl<T> During<T> for rusqlite::Result<T> {
    fn during(self, context: &str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Backend { context: context.to_owned(), source: Box::new(source) })
    }
}

fn corrupt(table: &str, row: impl fmt::Display, column: &str, problem: impl fmt::Display) -> StoreError {
    StoreError::Corrupt(format!(
        "{table} row {row}, column `{column}`: {problem}; restore the site's data directory from a backup"
    ))
}

fn encoding(what: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |source| StoreError::Backend {
        context: format!("encoding {what} as JSON"),
        source: Box::new(source),
    }
}

fn to_u64(table: &str, row: impl fmt::Display, column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(table, row, column, format!("{value} is negative")))
}

/// A sequence number or position as an SQL integer; a value beyond SQLite's range is past the
/// end of any log.
fn sql_position(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

fn sql_limit(limit: usize) -> i64 {
    // `clamp_limit` keeps it at most MAX_PAGE, far inside i64.
    i64::try_from(clamp_limit(limit)).unwrap_or(i64::MAX)
}

/// `LIMIT n` with the number written into the SQL, not bound: SQLite plans with a bound limit's
/// value and so prepares the statement again every time it runs (this build enables STAT4),
/// which cost more than the query itself on a link that sends a change at a time. The SQL text
/// stays the same for the same limit, so the statement cache keeps it.
fn limit_clause(limit: i64) -> String {
    format!(" LIMIT {limit}")
}

/// A version row as SQLite returns it, before its values are checked.
struct RawVersion {
    id: i64,
    kind: String,
    scope: String,
    name: String,
    wall: i64,
    logical: i64,
    origin: String,
    vv: String,
    author: String,
    content_hash: String,
    deleted: i64,
    labels: String,
    spec: String,
}

/// A version with its content, decoded.
/// A version read from the store; its spec parsed (`serde_json::Value`) or kept as text
/// ([`SpecText`], to send to a peer).
struct Decoded<S = serde_json::Value> {
    key: ObjectKey,
    version: Version,
    labels: BTreeMap<String, String>,
    spec: S,
}

impl RawVersion {
    /// Reads [`VERSION_COLUMNS`] starting at column 0.
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawVersion {
            id: row.get(0)?,
            kind: row.get(1)?,
            scope: row.get(2)?,
            name: row.get(3)?,
            wall: row.get(4)?,
            logical: row.get(5)?,
            origin: row.get(6)?,
            vv: row.get(7)?,
            author: row.get(8)?,
            content_hash: row.get(9)?,
            deleted: row.get(10)?,
            labels: row.get(11)?,
            spec: row.get(12)?,
        })
    }

    fn decode(self) -> Result<Decoded, StoreError> {
        self.decode_with(|text| serde_json::from_str(&text))
    }

    /// Decodes the version, keeping its spec as the text stored (checked to be JSON).
    fn decode_text(self) -> Result<Decoded<SpecText>, StoreError> {
        self.decode_with(SpecText::parse)
    }

    fn decode_with<S>(
        self,
        spec: impl FnOnce(String) -> Result<S, serde_json::Error>,
    ) -> Result<Decoded<S>, StoreError> {
        let id = self.id;
        let bad = |column: &str, problem: &dyn fmt::Display| corrupt("versions", id, column, problem);
        let key = decode_key(&self.kind, &self.scope, &self.name).map_err(|(column, e)| bad(column, &e))?;
        let hlc = decode_hlc("versions", id, ("hlc_wall", self.wall), ("hlc_logical", self.logical))?;
        let origin = SiteId::new(self.origin).map_err(|e| bad("origin", &e))?;
        let vv: VersionVector = serde_json::from_str(&self.vv).map_err(|e| bad("vv", &e))?;
        let labels = serde_json::from_str(&self.labels).map_err(|e| bad("labels", &e))?;
        let spec = spec(self.spec).map_err(|e| bad("spec", &e))?;
        let deleted = match self.deleted {
            0 => false,
            1 => true,
            other => return Err(bad("deleted", &format!("{other} is neither 0 nor 1"))),
        };
        let version = Version {
            hlc,
            origin,
            vv,
            author: self.author,
            content_hash: ContentHash::from_hex(self.content_hash),
            deleted,
        };
        Ok(Decoded { key, version, labels, spec })
    }
}

fn decode_key(kind: &str, scope: &str, name: &str) -> Result<ObjectKey, (&'static str, String)> {
    Ok(ObjectKey::new(
        kind.parse::<Kind>().map_err(|e| ("kind", e.to_string()))?,
        Scope::new(scope).map_err(|e| ("scope", e.to_string()))?,
        ObjectName::new(name).map_err(|e| ("name", e.to_string()))?,
    ))
}

fn decode_hlc(
    table: &str,
    row: impl fmt::Display + Copy,
    (wall_column, wall): (&str, i64),
    (logical_column, logical): (&str, i64),
) -> Result<Hlc, StoreError> {
    let wall_ms = to_u64(table, row, wall_column, wall)?;
    let logical = u32::try_from(logical)
        .map_err(|_| corrupt(table, row, logical_column, format!("{logical} is not a 32-bit counter")))?;
    Ok(Hlc::new(wall_ms, logical))
}

/// The query of current objects, followed by the object's `created` and `context` columns.
fn object_query(filter_sql: &str) -> String {
    format!(
        "SELECT {VERSION_COLUMNS}, o.created_wall, o.created_logical, o.context \
         FROM objects o JOIN versions v ON v.id = o.version_id {filter_sql}"
    )
}

/// A row of [`object_query`] as SQLite returns it.
struct RawObject {
    version: RawVersion,
    created_wall: i64,
    created_logical: i64,
    context: String,
}

/// Reads one row of [`object_query`].
fn read_object(row: &Row<'_>) -> rusqlite::Result<RawObject> {
    Ok(RawObject {
        version: RawVersion::read(row)?,
        created_wall: row.get(VERSION_COLUMN_COUNT)?,
        created_logical: row.get(VERSION_COLUMN_COUNT + 1)?,
        context: row.get(VERSION_COLUMN_COUNT + 2)?,
    })
}

fn decode_object(raw: RawObject) -> Result<StoredObject, StoreError> {
    let id = raw.version.id;
    let row = format!("of version {id}");
    let row = row.as_str();
    let d = raw.version.decode()?;
    let created = decode_hlc(
        "objects",
        row,
        ("created_wall", raw.created_wall),
        ("created_logical", raw.created_logical),
    )?;
    let context: VersionVector =
        serde_json::from_str(&raw.context).map_err(|e| corrupt("objects", row, "context", e))?;
    Ok(StoredObject { key: d.key, version: d.version, labels: d.labels, spec: d.spec, created, context })
}

/// The current version of `key`, tombstones included.
fn query_current(conn: &Connection, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
    read_current(conn, key, "reading the current version of an object")?.map(decode_object).transpose()
}

/// The row of `key`'s current version, not decoded yet; `context` names the read in errors.
fn read_current(conn: &Connection, key: &ObjectKey, context: &str) -> Result<Option<RawObject>, StoreError> {
    let sql = object_query("WHERE o.kind = ?1 AND o.scope = ?2 AND o.name = ?3");
    conn.prepare_cached(&sql)
        .during(context)?
        .query_row(params![key.kind.as_str(), key.scope.as_str(), key.name.as_str()], read_object)
        .optional()
        .during(context)
}

const READ_CLOCK_SQL: &str = "SELECT value FROM meta WHERE key = 'clock'";
/// The clock as the newest version recorded it (NULL for a version from before schema 7).
const NEWEST_CLOCK_SQL: &str = "SELECT id, clock_wall, clock_logical FROM versions ORDER BY id DESC LIMIT 1";
const MAX_SEQ_SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM versions";
const INSERT_AUDIT_SQL: &str = "INSERT INTO audit (at_ms, actor, action, kind, scope, name, version, outcome, detail) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// The site's clock: the newest version's, or `meta`'s while no version recorded one (a new
/// store, or one whose versions all predate schema 7). The later of the two, should they ever
/// disagree.
fn read_clock(conn: &Connection) -> Result<Hlc, StoreError> {
    let context = "reading the clock";
    let raw: String = conn
        .prepare_cached(READ_CLOCK_SQL)
        .during(context)?
        .query_row([], |r| r.get(0))
        .optional()
        .during(context)?
        .ok_or_else(|| StoreError::Corrupt("meta has no `clock` entry".into()))?;
    let saved: Hlc = raw.parse().map_err(|e| StoreError::Corrupt(format!("meta `clock`: {e}")))?;
    let newest: Option<(i64, Option<i64>, Option<i64>)> = conn
        .prepare_cached(NEWEST_CLOCK_SQL)
        .during(context)?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .during(context)?;
    let recorded = match newest {
        Some((id, Some(wall), Some(logical))) => {
            Some(decode_hlc("versions", id, ("clock_wall", wall), ("clock_logical", logical))?)
        }
        _ => None,
    };
    Ok(recorded.map_or(saved, |recorded| recorded.max(saved)))
}

fn insert_audit(conn: &Connection, record: &AuditRecord) -> Result<u64, StoreError> {
    let context = "appending to the audit log";
    let (kind, scope, name) = match &record.key {
        Some(k) => (Some(k.kind.as_str()), Some(k.scope.as_str()), Some(k.name.as_str())),
        None => (None, None, None),
    };
    conn.prepare_cached(INSERT_AUDIT_SQL)
        .during(context)?
        .execute(params![
            sql_position(record.at_ms),
            record.actor,
            record.action,
            kind,
            scope,
            name,
            record.version.as_ref().map(ToString::to_string),
            record.outcome,
            record.detail,
        ])
        .during(context)?;
    to_u64("audit", "just inserted", "seq", conn.last_insert_rowid())
}

fn read_audit(row: &Row<'_>) -> rusqlite::Result<RawAudit> {
    Ok(RawAudit {
        seq: row.get(0)?,
        at_ms: row.get(1)?,
        actor: row.get(2)?,
        action: row.get(3)?,
        kind: row.get(4)?,
        scope: row.get(5)?,
        name: row.get(6)?,
        version: row.get(7)?,
        outcome: row.get(8)?,
        detail: row.get(9)?,
    })
}

/// An audit row as SQLite returns it.
struct RawAudit {
    seq: i64,
    at_ms: i64,
    actor: String,
    action: String,
    kind: Option<String>,
    scope: Option<String>,
    name: Option<String>,
    version: Option<String>,
    outcome: String,
    detail: String,
}

impl RawAudit {
    fn decode(self) -> Result<AuditEntry, StoreError> {
        let seq = self.seq;
        let key = match (&self.kind, &self.scope, &self.name) {
            (Some(kind), Some(scope), Some(name)) => {
                Some(decode_key(kind, scope, name).map_err(|(column, e)| corrupt("audit", seq, column, e))?)
            }
            (None, None, None) => None,
            _ => return Err(corrupt("audit", seq, "kind", "the object key is only partly set")),
        };
        let version = self
            .version
            .map(|v| v.parse::<VersionId>())
            .transpose()
            .map_err(|e| corrupt("audit", seq, "version", e))?;
        Ok(AuditEntry {
            seq: to_u64("audit", seq, "seq", seq)?,
            record: AuditRecord {
                at_ms: to_u64("audit", seq, "at_ms", self.at_ms)?,
                actor: self.actor,
                action: self.action,
                key,
                version,
                outcome: self.outcome,
                detail: self.detail,
            },
        })
    }
}

/// Runs `sql` with `params` and decodes every row.
fn query_all<P, R, T>(
    conn: &Connection,
    context: &str,
    sql: &str,
    params: P,
    read: fn(&Row<'_>) -> rusqlite::Result<R>,
    decode: impl Fn(R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError>
where
    P: rusqlite::Params,
{
    let mut stmt = conn.prepare_cached(sql).during(context)?;
    let raw = stmt
        .query_map(params, read)
        .during(context)?
        .collect::<rusqlite::Result<Vec<R>>>()
        .during(context)?;
    raw.into_iter().map(decode).collect()
}

/// Labels and spec as the JSON text the store keeps.
struct Content<'a> {
    labels: String,
    spec: Cow<'a, str>,
}

impl<'a> Content<'a> {
    /// The content of a local write: the canonical text (what its hash was computed over).
    fn encode(labels: &BTreeMap<String, String>, spec: &serde_json::Value) -> Content<'a> {
        Content { labels: model::labels_text(labels), spec: Cow::Owned(SpecText::of(spec).into_string()) }
    }

    /// The content of a received version: its spec's text as received.
    fn received(labels: &BTreeMap<String, String>, spec: &'a SpecText) -> Content<'a> {
        Content { labels: model::labels_text(labels), spec: Cow::Borrowed(spec.as_str()) }
    }

    /// The size of the content in bytes, as `versions.bytes` records it (and [`Debt`] sums it).
    fn bytes(&self) -> u64 {
        u64::try_from(self.labels.len() + self.spec.len()).unwrap_or(u64::MAX)
    }
}

const CURRENT_META_SQL: &str = "SELECT v.id, v.kind, v.scope, v.name, v.hlc_wall, v.hlc_logical, v.origin, \
     v.vv, v.author, v.content_hash, v.deleted, '{}', 'null', o.created_wall, o.created_logical, o.context \
     FROM objects o JOIN versions v ON v.id = o.version_id WHERE o.kind = ?1 AND o.scope = ?2 AND o.name = ?3";
const INSERT_VERSION_SQL: &str = "INSERT INTO versions (kind, scope, name, hlc_wall, hlc_logical, origin, vv, \
     author, content_hash, deleted, labels, spec, from_site, recorded_ms, bytes, clock_wall, clock_logical) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";
const INSERT_OBJECT_SQL: &str = "INSERT INTO objects (kind, scope, name, version_id, created_wall, \
     created_logical, context) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const UPDATE_OBJECT_SQL: &str = "UPDATE objects SET version_id = ?4, created_wall = ?5, created_logical = ?6, \
     context = ?7 WHERE kind = ?1 AND scope = ?2 AND name = ?3";
const INSERT_EVENT_SQL: &str = "INSERT INTO events (at_ms, kind, object_kind, object_scope, object_name, data) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// The statements every accepted version runs (local or received), prepared once per
/// transaction: looking each one up in the connection's statement cache, and handing it back,
/// for every version of a batch cost about as much as running it.
struct VersionStatements<'c> {
    conn: &'c Connection,
    current: CachedStatement<'c>,
    insert_version: CachedStatement<'c>,
    insert_object: CachedStatement<'c>,
    update_object: CachedStatement<'c>,
    insert_event: CachedStatement<'c>,
}

impl<'c> VersionStatements<'c> {
    fn prepare(conn: &'c Connection) -> Result<Self, StoreError> {
        let prepare = |sql: &str| conn.prepare_cached(sql).during("preparing to record versions");
        Ok(VersionStatements {
            conn,
            current: prepare(CURRENT_META_SQL)?,
            insert_version: prepare(INSERT_VERSION_SQL)?,
            insert_object: prepare(INSERT_OBJECT_SQL)?,
            update_object: prepare(UPDATE_OBJECT_SQL)?,
            insert_event: prepare(INSERT_EVENT_SQL)?,
        })
    }

    /// The current version of `key` without its content (empty labels, null spec): what the
    /// checks of a local write and the placing of a received version read of the object.
    fn current(&mut self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        self.current
            .query_row(params![key.kind.as_str(), key.scope.as_str(), key.name.as_str()], read_object)
            .optional()
            .during("reading the current version of an object")?
            .map(decode_object)
            .transpose()
    }

    /// Appends a version to the history and to the change log (received from `from_site`, or
    /// written here when `None`, accepted at `recorded_ms`, with the site's `clock` once it was
    /// stamped or observed) and returns its row id, which is its sequence number in the log.
    fn insert_version(
        &mut self,
        key: &ObjectKey,
        version: &Version,
        content: &Content,
        from_site: Option<&SiteId>,
        recorded_ms: u64,
        clock: Hlc,
    ) -> Result<i64, StoreError> {
        self.insert_version
            .execute(params![
                key.kind.as_str(),
                key.scope.as_str(),
                key.name.as_str(),
                version.hlc.wall_ms,
                version.hlc.logical,
                version.origin.as_str(),
                serde_json::to_string(&version.vv).map_err(encoding("a version vector"))?,
                version.author,
                version.content_hash.as_str(),
                version.deleted,
                content.labels,
                content.spec.as_ref(),
                from_site.map(SiteId::as_str),
                recorded_ms,
                content.bytes(),
                clock.wall_ms,
                clock.logical,
            ])
            .during("inserting a version")?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Makes the version in row `version_row` the object's current version: a new row when
    /// the object has none yet (`exists` is false), else an update of its row. The caller has
    /// just read the object's row in the same transaction, so it knows which; a plain `INSERT`
    /// or `UPDATE` writes one b-tree, where an upsert made SQLite copy every page it touched
    /// into a statement journal first.
    fn set_current(
        &mut self,
        key: &ObjectKey,
        exists: bool,
        version_row: i64,
        created: Hlc,
        object_context: &VersionVector,
    ) -> Result<(), StoreError> {
        let statement = if exists { &mut self.update_object } else { &mut self.insert_object };
        let changed = statement
            .execute(params![
                key.kind.as_str(),
                key.scope.as_str(),
                key.name.as_str(),
                version_row,
                created.wall_ms,
                created.logical,
                serde_json::to_string(object_context).map_err(encoding("a version vector"))?,
            ])
            .during("updating the current version of an object")?;
        if changed != 1 {
            return Err(corrupt(
                "objects",
                key,
                "version_id",
                "the object's row was not where it was just read",
            ));
        }
        Ok(())
    }

    /// Appends the `write` or `delete` event of a version this site accepted (see
    /// [`conflicts::version_event`], whose data it writes without building a JSON value).
    fn version_event(
        &mut self,
        key: &ObjectKey,
        version: &Version,
        from: Option<&SiteId>,
        current: bool,
        at_ms: u64,
    ) -> Result<u64, StoreError> {
        let data = conflicts::version_event_data(version, from, current);
        self.insert_event
            .execute(params![
                sql_position(at_ms),
                conflicts::version_event_kind(version),
                key.kind.as_str(),
                key.scope.as_str(),
                key.name.as_str(),
                serde_json::to_string(&data).map_err(encoding("event data"))?,
            ])
            .during("appending to the event log")?;
        to_u64("events", "just inserted", "seq", self.conn.last_insert_rowid())
    }
}

/// Sets the causal context of an object that keeps its current version.
fn update_context(
    conn: &Connection,
    key: &ObjectKey,
    object_context: &VersionVector,
) -> Result<(), StoreError> {
    let context = "updating the causal context of an object";
    conn.prepare_cached("UPDATE objects SET context = ?4 WHERE kind = ?1 AND scope = ?2 AND name = ?3")
        .during(context)?
        .execute(params![
            key.kind.as_str(),
            key.scope.as_str(),
            key.name.as_str(),
            serde_json::to_string(object_context).map_err(encoding("a version vector"))?,
        ])
        .during(context)?;
    Ok(())
}

fn max_seq(conn: &Connection) -> Result<u64, StoreError> {
    let context = "reading the end of the change log";
    let seq: i64 =
        conn.prepare_cached(MAX_SEQ_SQL).during(context)?.query_row([], |r| r.get(0)).during(context)?;
    to_u64("versions", "with the highest id", "id", seq)
}

/// Whether the site holds exactly this version of the object.
fn holds_version(conn: &Connection, key: &ObjectKey, version: &VersionId) -> Result<bool, StoreError> {
    let context = "looking up a version";
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM versions WHERE kind = ?1 AND scope = ?2 AND name = ?3 \
         AND hlc_wall = ?4 AND hlc_logical = ?5 AND origin = ?6)",
    )
    .during(context)?
    .query_row(
        params![
            key.kind.as_str(),
            key.scope.as_str(),
            key.name.as_str(),
            sql_position(version.hlc.wall_ms),
            version.hlc.logical,
            version.origin.as_str(),
        ],
        |r| r.get(0),
    )
    .during(context)
}

/// The query of change-log entries (versions in the order this site accepted them), followed
/// by the sequence number and `from_site`.
fn change_query(filter_sql: &str) -> String {
    format!("SELECT {VERSION_COLUMNS}, v.from_site FROM versions v {filter_sql}")
}

/// Reads one row of [`change_query`].
fn read_change(row: &Row<'_>) -> rusqlite::Result<(RawVersion, Option<String>)> {
    Ok((RawVersion::read(row)?, row.get(VERSION_COLUMN_COUNT)?))
}

fn decode_link_change(row: (RawVersion, Option<String>)) -> Result<LinkChange, StoreError> {
    decode_change_with(row, RawVersion::decode_text)
}

fn decode_change(row: (RawVersion, Option<String>)) -> Result<Change, StoreError> {
    decode_change_with(row, RawVersion::decode)
}

/// A row of [`change_query`], its version decoded by `decode` (spec as a value or as text).
fn decode_change_with<S>(
    (raw, from_site): (RawVersion, Option<String>),
    decode: fn(RawVersion) -> Result<Decoded<S>, StoreError>,
) -> Result<Change<S>, StoreError> {
    let from_site =
        from_site.map(SiteId::new).transpose().map_err(|e| corrupt("versions", raw.id, "from_site", e))?;
    let seq = raw.id;
    let d = decode(raw)?;
    Ok(Change {
        seq: to_u64("versions", seq, "id", seq)?,
        key: d.key,
        version: d.version,
        labels: d.labels,
        spec: d.spec,
        from_site,
    })
}

/// The query of [`Store::changes_for_link`]: `conditions` from [`link_conditions`], in log order,
/// at most `limit` (already clamped).
fn link_changes_sql(conditions: &str, limit: usize) -> String {
    change_query(&format!(
        "WHERE {conditions} ORDER BY v.id{}",
        limit_clause(i64::try_from(limit).unwrap_or(i64::MAX))
    ))
}

/// The query of [`Store::events`].
fn events_sql(limit: usize) -> String {
    format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq{}",
        limit_clause(sql_limit(limit))
    )
}

/// Scopes as one SQL parameter: a JSON array that `json_each` expands.
fn scopes_json(scopes: &BTreeSet<Scope>) -> Result<String, StoreError> {
    serde_json::to_string(scopes).map_err(encoding("scopes"))
}

/// The conditions, on `versions v`, that select the changes a link carries with
/// `after < seq <= through`: not from the peer, in the scopes asked, and not superseded. A
/// version is superseded when the site holds a later version (greater timestamp) of the same
/// object from the same origin: the origin wrote it after, with a vector covering the earlier
/// one, and it reaches the peer on this link or already has. Timestamps, not sequence numbers,
/// decide "later", so a version that arrives late (repaired by digest, or relayed on another
/// path) never hides the newer one. The index `versions_by_origin` makes each check one seek.
fn link_conditions(query: &LinkQuery, through: i64) -> Result<(String, Vec<SqlValue>), StoreError> {
    let mut sql = String::from("v.id > ? AND v.id <= ? AND (v.from_site IS NULL OR v.from_site <> ?)");
    let mut args = vec![
        SqlValue::Integer(sql_position(query.after)),
        SqlValue::Integer(through),
        SqlValue::Text(query.peer.to_string()),
    ];
    if let Some(scopes) = &query.scopes {
        sql.push_str(" AND v.scope IN (SELECT value FROM json_each(?))");
        args.push(SqlValue::Text(scopes_json(scopes)?));
    }
    sql.push_str(
        " AND NOT EXISTS (SELECT 1 FROM versions later WHERE later.kind = v.kind \
         AND later.scope = v.scope AND later.name = v.name AND later.origin = v.origin \
         AND (later.hlc_wall, later.hlc_logical) > (v.hlc_wall, v.hlc_logical))",
    );
    Ok((sql, args))
}

/// The number of changes [`Store::changes_for_link`] returns at most: `limit` clamped to
/// `1..=MAX_LINK_BATCH`.
fn link_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_LINK_BATCH)
}

/// Every version of `key` this site holds, without content, with its row id.
fn held_versions(conn: &Connection, key: &ObjectKey) -> Result<(Vec<i64>, Vec<Version>), StoreError> {
    let sql = format!(
        "SELECT {VERSION_META_COLUMNS} FROM versions v WHERE v.kind = ?1 AND v.scope = ?2 AND v.name = ?3"
    );
    let held = query_all(
        conn,
        "reading the versions of an object",
        &sql,
        params![key.kind.as_str(), key.scope.as_str(), key.name.as_str()],
        RawVersion::read,
        |raw| {
            let row = raw.id;
            Ok((row, raw.decode()?.version))
        },
    )?;
    Ok(held.into_iter().unzip())
}

fn key_columns(key: Option<&ObjectKey>) -> (Option<&str>, Option<&str>, Option<&str>) {
    match key {
        Some(k) => (Some(k.kind.as_str()), Some(k.scope.as_str()), Some(k.name.as_str())),
        None => (None, None, None),
    }
}

/// The object key of a row whose key columns are all set or all NULL.
fn decode_optional_key(
    table: &str,
    row: i64,
    (kind, scope, name): (Option<String>, Option<String>, Option<String>),
) -> Result<Option<ObjectKey>, StoreError> {
    match (kind, scope, name) {
        (Some(kind), Some(scope), Some(name)) => {
            Ok(Some(decode_key(&kind, &scope, &name).map_err(|(column, e)| corrupt(table, row, column, e))?))
        }
        (None, None, None) => Ok(None),
        _ => Err(corrupt(table, row, "kind", "the object key is only partly set")),
    }
}

/// Appends an event to the event log and returns its sequence number.
fn insert_event(conn: &Connection, event: &NewEvent) -> Result<u64, StoreError> {
    let context = "appending to the event log";
    let (kind, scope, name) = key_columns(event.object.as_ref());
    conn.prepare_cached(INSERT_EVENT_SQL)
        .during(context)?
        .execute(params![
            sql_position(event.at_ms),
            event.kind,
            kind,
            scope,
            name,
            serde_json::to_string(&event.data).map_err(encoding("event data"))?,
        ])
        .during(context)?;
    to_u64("events", "just inserted", "seq", conn.last_insert_rowid())
}

/// An event row as SQLite returns it.
type RawEvent = (i64, i64, String, Option<String>, Option<String>, Option<String>, String);

fn read_event(row: &Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
}

fn decode_event((seq, at_ms, kind, o_kind, o_scope, o_name, data): RawEvent) -> Result<Event, StoreError> {
    Ok(Event {
        seq: to_u64("events", seq, "seq", seq)?,
        event: NewEvent {
            at_ms: to_u64("events", seq, "at_ms", at_ms)?,
            kind,
            object: decode_optional_key("events", seq, (o_kind, o_scope, o_name))?,
            data: serde_json::from_str(&data).map_err(|e| corrupt("events", seq, "data", e))?,
        },
    })
}

/// Inserts a detected conflict unless one with its id is recorded; returns whether it was new.
fn insert_conflict(conn: &Connection, conflict: &Stored) -> Result<bool, StoreError> {
    let context = "recording a conflict";
    let r = &conflict.record;
    let [a, b] = &r.sides;
    let [a_vv, b_vv] = &conflict.vectors;
    let vector = |v: &VersionVector| serde_json::to_string(v).map_err(encoding("a version vector"));
    let inserted = conn
        .prepare_cached(&format!(
            "INSERT OR IGNORE INTO conflicts ({CONFLICT_COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
        ))
        .during(context)?
        .execute(params![
            r.id,
            r.key.kind.as_str(),
            r.key.scope.as_str(),
            r.key.name.as_str(),
            a.version.to_string(),
            a.origin.as_str(),
            a.author,
            a.deleted,
            vector(a_vv)?,
            b.version.to_string(),
            b.origin.as_str(),
            b.author,
            b.deleted,
            vector(b_vv)?,
            r.strategy.as_str(),
            r.winner.to_string(),
            r.status.as_str(),
            sql_position(r.detected_ms),
            r.acknowledged.as_ref().map(|(by, _)| by.as_str()),
            r.acknowledged.as_ref().map(|(_, at)| sql_position(*at)),
            r.resolved_by.as_ref().map(ToString::to_string),
        ])
        .during(context)?;
    Ok(inserted == 1)
}

/// Saves what changes in a conflict after it is recorded: its status, acknowledgement and
/// resolution.
fn update_conflict(conn: &Connection, record: &ConflictRecord) -> Result<(), StoreError> {
    let context = "updating a conflict";
    conn.prepare_cached(
        "UPDATE conflicts SET status = ?2, acknowledged_by = ?3, acknowledged_ms = ?4, resolved_by = ?5 \
         WHERE id = ?1",
    )
    .during(context)?
    .execute(params![
        record.id,
        record.status.as_str(),
        record.acknowledged.as_ref().map(|(by, _)| by.as_str()),
        record.acknowledged.as_ref().map(|(_, at)| sql_position(*at)),
        record.resolved_by.as_ref().map(ToString::to_string),
    ])
    .during(context)?;
    Ok(())
}

/// A conflict row as SQLite returns it.
struct RawConflict {
    id: String,
    key: (String, String, String),
    sides: [(String, String, String, i64, String); 2],
    strategy: String,
    winner: String,
    status: String,
    detected_ms: i64,
    acknowledged_by: Option<String>,
    acknowledged_ms: Option<i64>,
    resolved_by: Option<String>,
}

/// Reads one row of [`CONFLICT_COLUMNS`].
fn read_conflict(row: &Row<'_>) -> rusqlite::Result<RawConflict> {
    let side = |at: usize| -> rusqlite::Result<(String, String, String, i64, String)> {
        Ok((row.get(at)?, row.get(at + 1)?, row.get(at + 2)?, row.get(at + 3)?, row.get(at + 4)?))
    };
    Ok(RawConflict {
        id: row.get(0)?,
        key: (row.get(1)?, row.get(2)?, row.get(3)?),
        sides: [side(4)?, side(9)?],
        strategy: row.get(14)?,
        winner: row.get(15)?,
        status: row.get(16)?,
        detected_ms: row.get(17)?,
        acknowledged_by: row.get(18)?,
        acknowledged_ms: row.get(19)?,
        resolved_by: row.get(20)?,
    })
}

fn decode_strategy(raw: &str) -> Option<Strategy> {
    [Strategy::LastWriteWins, Strategy::AuthorityWins, Strategy::Manual]
        .into_iter()
        .find(|s| s.as_str() == raw)
}

fn decode_status(raw: &str) -> Option<ConflictStatus> {
    [ConflictStatus::Open, ConflictStatus::Acknowledged, ConflictStatus::Resolved]
        .into_iter()
        .find(|s| s.as_str() == raw)
}

fn decode_conflict(raw: RawConflict) -> Result<Stored, StoreError> {
    let id = raw.id.as_str();
    let bad = |column: &str, problem: &dyn fmt::Display| corrupt("conflicts", id, column, problem);
    let version = |column: &str, value: &str| value.parse::<VersionId>().map_err(|e| bad(column, &e));
    let (kind, scope, name) = &raw.key;
    let key = decode_key(kind, scope, name).map_err(|(column, e)| bad(column, &e))?;
    let mut sides = Vec::with_capacity(2);
    let mut vectors = Vec::with_capacity(2);
    for (prefix, (v, origin, author, deleted, vv)) in ["a", "b"].into_iter().zip(raw.sides) {
        let column = |c: &str| format!("{prefix}_{c}");
        sides.push(ConflictSide {
            version: version(&column("version"), &v)?,
            origin: SiteId::new(origin).map_err(|e| bad(&column("origin"), &e))?,
            author,
            deleted: match deleted {
                0 => false,
                1 => true,
                other => return Err(bad(&column("deleted"), &format!("{other} is neither 0 nor 1"))),
            },
        });
        vectors.push(serde_json::from_str::<VersionVector>(&vv).map_err(|e| bad(&column("vv"), &e))?);
    }
    let (Ok(sides), Ok(vectors)) =
        (<[ConflictSide; 2]>::try_from(sides), <[VersionVector; 2]>::try_from(vectors))
    else {
        return Err(bad("a_version", &"a conflict has two sides"));
    };
    let acknowledged = match (raw.acknowledged_by, raw.acknowledged_ms) {
        (Some(by), Some(at)) => Some((by, to_u64("conflicts", id, "acknowledged_ms", at)?)),
        (None, None) => None,
        _ => return Err(bad("acknowledged_by", &"set without acknowledged_ms, or the reverse")),
    };
    Ok(Stored {
        record: ConflictRecord {
            key,
            sides,
            strategy: decode_strategy(&raw.strategy)
                .ok_or_else(|| bad("strategy", &format!("`{}` is not a strategy", raw.strategy)))?,
            winner: version("winner", &raw.winner)?,
            status: decode_status(&raw.status)
                .ok_or_else(|| bad("status", &format!("`{}` is not a conflict status", raw.status)))?,
            detected_ms: to_u64("conflicts", id, "detected_ms", raw.detected_ms)?,
            acknowledged,
            resolved_by: raw.resolved_by.as_deref().map(|v| version("resolved_by", v)).transpose()?,
            id: raw.id.clone(),
        },
        vectors,
    })
}

fn query_conflict(conn: &Connection, id: &str) -> Result<Option<Stored>, StoreError> {
    let context = "reading a conflict";
    let raw = conn
        .prepare_cached(&format!("SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE id = ?1"))
        .during(context)?
        .query_row([id], read_conflict)
        .optional()
        .during(context)?;
    raw.map(decode_conflict).transpose()
}

const UNRESOLVED_CONFLICTS_SQL: &str = "SELECT EXISTS (SELECT 1 FROM conflicts WHERE status = 'open') \
     OR EXISTS (SELECT 1 FROM conflicts WHERE status = 'acknowledged')";

/// Whether any conflict is still open or acknowledged: when none is, no version needs to look
/// for conflicts it resolves (one query per transaction instead of one per version). Every
/// local write and applied batch asks, so the query is two lookups in `conflicts_by_status`:
/// `status IN (...)` would have SQLite build a temporary b-tree of the list on every call.
fn unresolved_conflicts_exist(conn: &Connection) -> Result<bool, StoreError> {
    conn.prepare_cached(UNRESOLVED_CONFLICTS_SQL)
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .during("looking for unresolved conflicts")
}

/// Resolves the open and acknowledged conflicts of `key` whose two sides `version` dominates,
/// with an audit entry each (when `audit`) and a `conflict` event each.
fn resolve_conflicts(
    conn: &Connection,
    key: &ObjectKey,
    version: &Version,
    now_ms: u64,
    audit: bool,
) -> Result<(), StoreError> {
    let unresolved = query_all(
        conn,
        "reading the open conflicts of an object",
        &format!(
            "SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE kind = ?1 AND scope = ?2 AND name = ?3 \
             AND status <> 'resolved' ORDER BY detected_ms, id"
        ),
        params![key.kind.as_str(), key.scope.as_str(), key.name.as_str()],
        read_conflict,
        decode_conflict,
    )?;
    for mut conflict in unresolved {
        if !conflicts::resolves(&conflict, version) {
            continue;
        }
        let entry = conflicts::resolve(&mut conflict.record, version, now_ms);
        update_conflict(conn, &conflict.record)?;
        if audit {
            insert_audit(conn, &entry)?;
        }
        insert_event(conn, &conflicts::event(&conflict.record, conflicts::Change::Resolved, now_ms))?;
        debug!(key = %key, conflict = %conflict.record.id, by = %version.id(), "conflict resolved");
    }
    Ok(())
}

/// A delivery row as SQLite returns it.
type RawDelivery = (i64, String, i64, i64, i64, Option<i64>, String, String);

fn read_delivery(row: &Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

fn decode_delivery(
    (id, webhook, event_seq, attempt, at_ms, status, outcome, detail): RawDelivery,
) -> Result<DeliveryEntry, StoreError> {
    let table = "webhook_deliveries";
    Ok(DeliveryEntry {
        id: to_u64(table, id, "id", id)?,
        delivery: Delivery {
            webhook,
            event_seq: to_u64(table, id, "event_seq", event_seq)?,
            attempt: u32::try_from(attempt).map_err(|_| corrupt(table, id, "attempt", attempt))?,
            at_ms: to_u64(table, id, "at_ms", at_ms)?,
            status: status
                .map(|s| u16::try_from(s).map_err(|_| corrupt(table, id, "status", s)))
                .transpose()?,
            outcome,
            detail,
        },
    })
}

impl Store for SqliteStore {
    fn site(&self) -> &SiteId {
        &self.site
    }

    fn write(&self, write: LocalWrite) -> Result<Committed, WriteError> {
        self.group.submit(write, |writes| self.commit_group(writes)).unwrap_or_else(|abandoned| {
            Err(WriteError::Store(StoreError::Backend {
                context: "committing a group of writes".into(),
                source: Box::new(abandoned),
            }))
        })
    }

    fn write_batch(&self, writes: Vec<LocalWrite>) -> Vec<Result<Committed, WriteError>> {
        if writes.is_empty() {
            return Vec::new();
        }
        // One transaction (and one fsync) for the whole batch.
        self.commit_group(writes)
    }

    fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        query_current(&self.reader(), key)
    }

    fn list(&self, filter: &ListFilter) -> Result<Vec<StoredObject>, StoreError> {
        let mut conditions = Vec::new();
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(kind) = filter.kind {
            conditions.push("o.kind = ?");
            args.push(SqlValue::Text(kind.as_str().to_owned()));
        }
        if let Some(scope) = &filter.scope {
            conditions.push("o.scope = ?");
            args.push(SqlValue::Text(scope.to_string()));
        }
        if !filter.include_deleted {
            conditions.push("v.deleted = 0");
        }
        if let Some(after) = &filter.after {
            conditions.push("(o.kind, o.scope, o.name) > (?, ?, ?)");
            args.push(SqlValue::Text(after.kind.as_str().to_owned()));
            args.push(SqlValue::Text(after.scope.to_string()));
            args.push(SqlValue::Text(after.name.to_string()));
        }
        let mut filter_sql = String::new();
        if !conditions.is_empty() {
            filter_sql.push_str("WHERE ");
            filter_sql.push_str(&conditions.join(" AND "));
        }
        // Byte order of the kind's name, then scope, then name: `ObjectKey`'s order.
        filter_sql.push_str(" ORDER BY o.kind, o.scope, o.name");
        filter_sql.push_str(&limit_clause(sql_limit(filter.limit)));
        let sql = object_query(&filter_sql);
        query_all(
            &self.reader(),
            "listing objects",
            &sql,
            rusqlite::params_from_iter(args),
            read_object,
            decode_object,
        )
    }

    fn history(&self, key: &ObjectKey) -> Result<Vec<HistoryEntry>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions v \
             WHERE v.kind = ?1 AND v.scope = ?2 AND v.name = ?3 ORDER BY v.id"
        );
        query_all(
            &self.reader(),
            "reading the history of an object",
            &sql,
            params![key.kind.as_str(), key.scope.as_str(), key.name.as_str()],
            RawVersion::read,
            |raw| {
                let seq = raw.id;
                let d = raw.decode()?;
                Ok(HistoryEntry {
                    version: d.version,
                    labels: d.labels,
                    spec: d.spec,
                    seq: to_u64("versions", seq, "id", seq)?,
                })
            },
        )
    }

    fn changes(&self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        query_all(
            &self.reader(),
            "reading the change log",
            &change_query(&format!("WHERE v.id > ?1 ORDER BY v.id{}", limit_clause(sql_limit(limit)))),
            params![sql_position(after)],
            read_change,
            decode_change,
        )
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        max_seq(&self.reader())
    }

    fn append_audit(&self, record: AuditRecord) -> Result<u64, StoreError> {
        // A single statement outside a transaction commits (durably) on its own.
        insert_audit(&self.writer(), &record)
    }

    fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq{}",
            limit_clause(sql_limit(limit))
        );
        query_all(
            &self.reader(),
            "reading the audit log",
            &sql,
            params![sql_position(after)],
            read_audit,
            RawAudit::decode,
        )
    }

    fn audit_tail(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC{}", limit_clause(sql_limit(limit)));
        let mut newest_first = query_all(
            &self.reader(),
            "reading the end of the audit log",
            &sql,
            [],
            read_audit,
            RawAudit::decode,
        )?;
        newest_first.reverse();
        Ok(newest_first)
    }

    fn clock(&self) -> Result<Hlc, StoreError> {
        read_clock(&self.reader())
    }

    fn apply_remote(
        &self,
        from: &SiteId,
        versions: &[RemoteVersion],
        now_ms: u64,
        policy: &dyn ConflictPolicy,
    ) -> Result<ApplyReport, ApplyError> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting to apply a batch")?;
        let mut clock = HlcClock::new(read_clock(&tx)?, self.max_clock_skew_ms);
        let rank = |site: &SiteId| policy.rank(site);
        let audit = policy.audit();
        let mut open_conflicts = unresolved_conflicts_exist(&tx)?;
        let mut report = ApplyReport::default();
        let mut statements = VersionStatements::prepare(&tx)?;
        for (index, remote) in versions.iter().enumerate() {
            let (key, version) = (&remote.key, &remote.version);
            let id = version.id();
            let current = statements.current(key)?;
            // Every version is stored with its object's row, so an object without a row has no
            // version here: only a known object needs the history looked up.
            let duplicate = match &current {
                None => false,
                Some(c) => {
                    (c.version.hlc == version.hlc && c.version.origin == version.origin)
                        || holds_version(&tx, key, &id)?
                }
            };
            if duplicate {
                report.duplicates += 1;
                continue;
            }
            // A refusal returns before the commit: dropping `tx` rolls the whole batch back.
            clock.observe(version.hlc, now_ms).map_err(|error| {
                ApplyError::ClockSkew(Box::new(SkewRefusal { key: key.clone(), version: id.clone(), error }))
            })?;
            let strategy = policy.strategy(key);
            // Only a version that does not follow everything held needs the object's history.
            let (rows, held) = if remote::supersedes_all(current.as_ref(), version) {
                (Vec::new(), Vec::new())
            } else {
                held_versions(&tx, key)?
            };
            let placement = remote::place(current.as_ref(), &held, version, strategy, &rank);
            let content = Content::received(&remote.labels, &remote.spec);
            let version_row =
                statements.insert_version(key, version, &content, Some(from), now_ms, clock.last())?;
            report.logged.push((index, to_u64("versions", "just inserted", "id", version_row)?));
            match placement.current {
                Current::New => {
                    statements.set_current(
                        key,
                        current.is_some(),
                        version_row,
                        placement.created,
                        &placement.context,
                    )?;
                }
                Current::Held(i) if current.as_ref().is_some_and(|c| c.version.id() != held[i].id()) => {
                    statements.set_current(key, true, rows[i], placement.created, &placement.context)?;
                }
                Current::Held(_) => update_context(&tx, key, &placement.context)?,
            }
            let became_current = placement.becomes_current();
            statements.version_event(key, version, Some(from), became_current, now_ms)?;
            for &i in &placement.conflicts {
                let conflict = conflicts::detected(key, version, &held[i], strategy, &rank, now_ms);
                if insert_conflict(&tx, &conflict)? {
                    open_conflicts = true;
                    if audit {
                        insert_audit(&tx, &conflicts::detected_audit(&conflict.record))?;
                    }
                    let event = conflicts::event(&conflict.record, conflicts::Change::Detected, now_ms);
                    insert_event(&tx, &event)?;
                    debug!(
                        key = %key, conflict = %conflict.record.id, with = %held[i].id(),
                        winner = %conflict.record.winner, "conflict detected"
                    );
                }
            }
            if open_conflicts {
                resolve_conflicts(&tx, key, version, now_ms, audit)?;
            }
            report.applied += 1;
            report.became_current += usize::from(became_current);
            report.concurrent += usize::from(!placement.conflicts.is_empty());
            debug!(
                key = %key, version = %id, from = %from, current = became_current,
                conflicts = placement.conflicts.len(), "applied a remote version"
            );
        }
        drop(statements);
        report.last_seq = max_seq(&tx)?;
        tx.commit().during("committing a batch")?;
        Ok(report)
    }

    fn changes_for_link(&self, query: &LinkQuery, limit: usize) -> Result<LinkBatch, StoreError> {
        self.changes_for_links(query, &[], limit)
    }

    fn changes_for_links(
        &self,
        query: &LinkQuery,
        unwanted: &[(SiteId, BTreeSet<Scope>)],
        limit: usize,
    ) -> Result<LinkBatch, StoreError> {
        let limit = link_limit(limit);
        let mut conn = self.reader();
        // One snapshot, so the end of the log and the changes read agree.
        let tx = conn.transaction().during("starting to read the change log")?;
        let end = max_seq(&tx)?;
        if end <= query.after {
            return Ok(LinkBatch { changes: Vec::new(), scanned_to: query.after });
        }
        let (mut conditions, mut args) = link_conditions(query, sql_position(end))?;
        for (peer, scopes) in unwanted.iter().filter(|(_, scopes)| !scopes.is_empty()) {
            // `IS NOT NULL` first: for a local write `from_site = ?` is NULL, and `NOT (NULL ...)`
            // would leave the write out.
            conditions.push_str(
                " AND NOT (v.from_site IS NOT NULL AND v.from_site = ? AND v.scope IN (SELECT value FROM json_each(?)))",
            );
            args.push(SqlValue::Text(peer.to_string()));
            args.push(SqlValue::Text(scopes_json(scopes)?));
        }
        // SQLite walks the log in seq order and stops at the limit: at most `limit` changes are
        // ever in memory, however many it steps over.
        let changes = query_all(
            &tx,
            "reading the changes for a link",
            &link_changes_sql(&conditions, limit),
            rusqlite::params_from_iter(args),
            read_change,
            decode_link_change,
        )?;
        let scanned_to = match changes.last() {
            Some(last) if changes.len() == limit => last.seq,
            _ => end,
        };
        Ok(LinkBatch { changes, scanned_to })
    }

    fn current_for_link(&self, keys: &[ObjectKey], through: u64) -> Result<Vec<RemoteVersion>, StoreError> {
        let conn = self.reader();
        let mut versions = Vec::new();
        for key in keys.iter().take(MAX_LINK_BATCH) {
            let current = read_current(&conn, key, "reading current versions to send")?;
            // A version's row id is its sequence number in the change log.
            if let Some(raw) = current.filter(|raw| raw.version.id <= sql_position(through)) {
                let d = raw.version.decode_text()?;
                versions.push(RemoteVersion {
                    key: d.key,
                    version: d.version,
                    labels: d.labels,
                    spec: d.spec,
                });
            }
        }
        Ok(versions)
    }

    fn link_debt(&self, query: &LinkQuery) -> Result<Debt, StoreError> {
        let (conditions, args) = link_conditions(query, i64::MAX)?;
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUM(v.bytes), 0), MIN(v.recorded_ms) FROM versions v WHERE {conditions}"
        );
        let context = "counting the sync debt of a link";
        let (pending, bytes, oldest): (i64, i64, Option<i64>) = self
            .reader()
            .prepare_cached(&sql)
            .during(context)?
            .query_row(rusqlite::params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .during(context)?;
        Ok(Debt {
            pending: to_u64("versions", "of a link's debt", "COUNT(*)", pending)?,
            pending_bytes: to_u64("versions", "of a link's debt", "bytes", bytes)?,
            oldest_ms: oldest
                .map(|ms| to_u64("versions", "of a link's debt", "recorded_ms", ms))
                .transpose()?,
        })
    }

    fn digest_entries(
        &self,
        scopes: Option<&BTreeSet<Scope>>,
    ) -> Result<Vec<(ObjectKey, VersionId)>, StoreError> {
        let mut sql = String::from(
            "SELECT o.kind, o.scope, o.name, v.hlc_wall, v.hlc_logical, v.origin, v.id \
             FROM objects o JOIN versions v ON v.id = o.version_id",
        );
        let mut args = Vec::new();
        if let Some(scopes) = scopes {
            sql.push_str(" WHERE o.scope IN (SELECT value FROM json_each(?))");
            args.push(scopes_json(scopes)?);
        }
        sql.push_str(" ORDER BY o.kind, o.scope, o.name");
        type Row7 = (String, String, String, i64, i64, String, i64);
        query_all(
            &self.reader(),
            "reading the digest entries",
            &sql,
            rusqlite::params_from_iter(args),
            |r| -> rusqlite::Result<Row7> {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            },
            |(kind, scope, name, wall, logical, origin, id)| {
                let key = decode_key(&kind, &scope, &name)
                    .map_err(|(column, e)| corrupt("versions", id, column, e))?;
                let hlc = decode_hlc("versions", id, ("hlc_wall", wall), ("hlc_logical", logical))?;
                let origin = SiteId::new(origin).map_err(|e| corrupt("versions", id, "origin", e))?;
                Ok((key, VersionId { hlc, origin }))
            },
        )
    }

    fn has_version(&self, key: &ObjectKey, version: &VersionId) -> Result<bool, StoreError> {
        holds_version(&self.reader(), key, version)
    }

    fn link(&self, peer: &SiteId) -> Result<Option<LinkRecord>, StoreError> {
        let context = "reading a link";
        let raw: Option<(i64, String, Option<i64>, String, String)> = self
            .reader()
            .prepare_cached(
                "SELECT cursor, peer_scopes, last_sync_ms, signal, peer_sites FROM links WHERE peer = ?1",
            )
            .during(context)?
            .query_row([peer.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .optional()
            .during(context)?;
        let Some((cursor, peer_scopes, last_sync_ms, signal, peer_sites)) = raw else { return Ok(None) };
        let row = format!("of peer {peer}");
        let row = row.as_str();
        Ok(Some(LinkRecord {
            peer: peer.clone(),
            cursor: to_u64("links", row, "cursor", cursor)?,
            peer_scopes: serde_json::from_str(&peer_scopes)
                .map_err(|e| corrupt("links", row, "peer_scopes", e))?,
            last_sync_ms: last_sync_ms.map(|ms| to_u64("links", row, "last_sync_ms", ms)).transpose()?,
            signal,
            peer_sites: serde_json::from_str::<Vec<SiteCard>>(&peer_sites)
                .map_err(|e| corrupt("links", row, "peer_sites", e))?,
        }))
    }

    fn save_link(&self, record: &LinkRecord) -> Result<(), StoreError> {
        let context = "saving a link";
        // A single statement outside a transaction commits (durably) on its own.
        self.writer()
            .prepare_cached(
                "INSERT INTO links (peer, cursor, peer_scopes, last_sync_ms, signal, peer_sites) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (peer) DO UPDATE SET cursor = excluded.cursor, \
                 peer_scopes = excluded.peer_scopes, last_sync_ms = excluded.last_sync_ms, \
                 signal = excluded.signal, peer_sites = excluded.peer_sites",
            )
            .during(context)?
            .execute(params![
                record.peer.as_str(),
                record.cursor,
                scopes_json(&record.peer_scopes)?,
                record.last_sync_ms,
                record.signal,
                serde_json::to_string(&record.peer_sites).map_err(encoding("site cards"))?,
            ])
            .during(context)?;
        Ok(())
    }

    fn conflicts(&self, filter: &ConflictFilter) -> Result<Vec<ConflictRecord>, StoreError> {
        let mut conditions = Vec::new();
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(status) = filter.status {
            conditions.push("status = ?");
            args.push(SqlValue::Text(status.as_str().to_owned()));
        }
        if let Some(key) = &filter.key {
            conditions.push("kind = ? AND scope = ? AND name = ?");
            args.push(SqlValue::Text(key.kind.as_str().to_owned()));
            args.push(SqlValue::Text(key.scope.to_string()));
            args.push(SqlValue::Text(key.name.to_string()));
        }
        let filter_sql =
            if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
        query_all(
            &self.reader(),
            "listing conflicts",
            &format!(
                "SELECT {CONFLICT_COLUMNS} FROM conflicts {filter_sql} ORDER BY detected_ms DESC, id{}",
                limit_clause(sql_limit(filter.limit))
            ),
            rusqlite::params_from_iter(args),
            read_conflict,
            |raw| Ok(decode_conflict(raw)?.record),
        )
    }

    fn conflict(&self, id: &str) -> Result<Option<ConflictRecord>, StoreError> {
        Ok(query_conflict(&self.reader(), id)?.map(|c| c.record))
    }

    fn acknowledge_conflict(
        &self,
        id: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<Option<ConflictRecord>, StoreError> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting to acknowledge a conflict")?;
        let Some(Stored { mut record, .. }) = query_conflict(&tx, id)? else { return Ok(None) };
        if record.status != ConflictStatus::Open {
            return Ok(Some(record));
        }
        let entry = conflicts::acknowledge(&mut record, actor, now_ms);
        update_conflict(&tx, &record)?;
        insert_audit(&tx, &entry)?;
        insert_event(&tx, &conflicts::event(&record, conflicts::Change::Acknowledged, now_ms))?;
        tx.commit().during("committing an acknowledgement")?;
        debug!(conflict = %id, actor, "conflict acknowledged");
        Ok(Some(record))
    }

    fn append_event(&self, event: NewEvent) -> Result<u64, StoreError> {
        // A single statement outside a transaction commits (durably) on its own.
        insert_event(&self.writer(), &event)
    }

    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        query_all(
            &self.reader(),
            "reading the event log",
            &events_sql(limit),
            params![sql_position(after)],
            read_event,
            decode_event,
        )
    }

    fn last_event_seq(&self) -> Result<u64, StoreError> {
        let context = "reading the end of the event log";
        let seq: i64 = self
            .reader()
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events")
            .during(context)?
            .query_row([], |r| r.get(0))
            .during(context)?;
        to_u64("events", "with the highest seq", "seq", seq)
    }

    fn record_delivery(&self, delivery: &Delivery) -> Result<u64, StoreError> {
        let context = "recording a webhook delivery";
        let conn = self.writer();
        conn.prepare_cached(
            "INSERT INTO webhook_deliveries (webhook, event_seq, attempt, at_ms, status, outcome, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .during(context)?
        .execute(params![
            delivery.webhook,
            sql_position(delivery.event_seq),
            delivery.attempt,
            sql_position(delivery.at_ms),
            delivery.status,
            delivery.outcome,
            delivery.detail,
        ])
        .during(context)?;
        to_u64("webhook_deliveries", "just inserted", "id", conn.last_insert_rowid())
    }

    fn deliveries(&self, webhook: Option<&str>, limit: usize) -> Result<Vec<DeliveryEntry>, StoreError> {
        let filter = if webhook.is_some() { "WHERE webhook = ?1" } else { "WHERE ?1 IS NULL" };
        query_all(
            &self.reader(),
            "reading webhook deliveries",
            &format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries {filter} ORDER BY id DESC{}",
                limit_clause(sql_limit(limit))
            ),
            params![webhook],
            read_delivery,
            decode_delivery,
        )
    }

    fn webhook_cursor(&self, webhook: &str) -> Result<u64, StoreError> {
        let context = "reading a webhook cursor";
        let seq: Option<i64> = self
            .reader()
            .prepare_cached("SELECT seq FROM webhook_cursors WHERE webhook = ?1")
            .during(context)?
            .query_row([webhook], |r| r.get(0))
            .optional()
            .during(context)?;
        seq.map_or(Ok(0), |seq| to_u64("webhook_cursors", webhook, "seq", seq))
    }

    fn save_webhook_cursor(&self, webhook: &str, seq: u64) -> Result<(), StoreError> {
        let context = "saving a webhook cursor";
        self.writer()
            .prepare_cached(
                "INSERT INTO webhook_cursors (webhook, seq) VALUES (?1, ?2) \
                 ON CONFLICT (webhook) DO UPDATE SET seq = excluded.seq",
            )
            .during(context)?
            .execute(params![webhook, sql_position(seq)])
            .during(context)?;
        Ok(())
    }

    fn record_heartbeat(&self, heartbeat: &Heartbeat) -> Result<NodeRecord, StoreError> {
        let context = "recording a heartbeat";
        let applied = serde_json::to_string(&heartbeat.applied).map_err(encoding("applied versions"))?;
        let conn = self.writer();
        let raw = conn
            .prepare_cached(&format!(
                "INSERT INTO nodes ({NODE_COLUMNS}) VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (id) DO UPDATE SET previous_heartbeat_ms = nodes.last_heartbeat_ms, \
                 last_heartbeat_ms = excluded.last_heartbeat_ms, interval_seconds = excluded.interval_seconds, \
                 software_version = excluded.software_version, health = excluded.health, \
                 applied = excluded.applied \
                 RETURNING {NODE_COLUMNS}"
            ))
            .during(context)?
            .query_row(
                params![
                    heartbeat.node.as_str(),
                    sql_position(heartbeat.at_ms),
                    heartbeat.interval_seconds,
                    heartbeat.software_version,
                    heartbeat.health,
                    applied,
                ],
                read_node,
            )
            .during(context)?;
        decode_node(raw)
    }

    fn nodes(&self, after: Option<&ObjectName>, limit: usize) -> Result<Vec<NodeRecord>, StoreError> {
        query_all(
            &self.reader(),
            "reading node records",
            &format!(
                "SELECT {NODE_COLUMNS} FROM nodes WHERE id > ?1 ORDER BY id{}",
                limit_clause(sql_limit(limit))
            ),
            params![after.map_or("", ObjectName::as_str)],
            read_node,
            decode_node,
        )
    }
}

/// A node row as SQLite returns it.
type RawNode = (String, i64, Option<i64>, i64, String, String, String);

fn read_node(row: &Row<'_>) -> rusqlite::Result<RawNode> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
}

fn decode_node(
    (id, last, previous, interval, software_version, health, applied): RawNode,
) -> Result<NodeRecord, StoreError> {
    let row = id.clone();
    let id = ObjectName::new(id).map_err(|e| corrupt("nodes", &row, "id", e))?;
    Ok(NodeRecord {
        id,
        last_heartbeat_ms: to_u64("nodes", &row, "last_heartbeat_ms", last)?,
        previous_heartbeat_ms: previous
            .map(|p| to_u64("nodes", &row, "previous_heartbeat_ms", p))
            .transpose()?,
        interval_seconds: u32::try_from(interval)
            .map_err(|_| corrupt("nodes", &row, "interval_seconds", format!("{interval} is out of range")))?,
        software_version,
        health,
        applied: serde_json::from_str(&applied).map_err(|e| corrupt("nodes", &row, "applied", e))?,
    })
}

#[cfg(test)]
mod tests {
    use model::Kind;

    use super::*;
    use crate::LinkQuery;

    const T0: u64 = 1_764_000_000_000;

    fn site(name: &str) -> SiteId {
        SiteId::new(name).unwrap()
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new(name).unwrap())
    }

    /// The statements every local write or applied batch runs build no temporary b-tree (an
    /// `IN (...)` list does, for every call): their plans only open the tables and indexes.
    #[test]
    fn the_statements_of_every_commit_open_no_temporary_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("site.db"), site("global-control"), 60_000).unwrap();
        let conn = store.writer();
        for sql in [
            READ_CLOCK_SQL,
            NEWEST_CLOCK_SQL,
            MAX_SEQ_SQL,
            UNRESOLVED_CONFLICTS_SQL,
            INSERT_AUDIT_SQL,
            CURRENT_META_SQL,
            INSERT_VERSION_SQL,
            INSERT_OBJECT_SQL,
            UPDATE_OBJECT_SQL,
            INSERT_EVENT_SQL,
        ] {
            let mut plan = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
            let unbound = vec![SqlValue::Null; plan.parameter_count()];
            let opcodes: Vec<String> = plan
                .query_map(rusqlite::params_from_iter(unbound), |row| row.get::<_, String>(1))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(opcodes.iter().any(|op| op.starts_with("Open")), "{sql}: no table opened in {opcodes:?}");
            assert!(
                !opcodes.iter().any(|op| op == "OpenEphemeral" || op == "OpenAutoindex"),
                "{sql} builds a temporary b-tree on every call: {opcodes:?}"
            );
        }
    }

    /// SQLite is built as `.cargo/config.toml` asks (`LIBSQLITE3_FLAGS`): without the process-wide
    /// page cache and memory statistics, whose global mutexes every page fetch and allocation of
    /// every connection took.
    #[test]
    fn sqlite_is_built_without_its_global_page_cache_and_memory_statistics() {
        let conn = Connection::open_in_memory().unwrap();
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "built with ENABLE_MEMORY_MANAGEMENT (was LIBSQLITE3_FLAGS of .cargo/config.toml overridden?): {options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "built with memory statistics on (was LIBSQLITE3_FLAGS of .cargo/config.toml overridden?): {options:?}"
        );
    }

    /// The clock lives in the versions (schema 7): commits leave the `clock` row of `meta` as a
    /// new store wrote it, and the clock the newest version recorded is the store's, across a
    /// restart too.
    #[test]
    fn the_clock_is_kept_by_the_newest_version_not_by_meta() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let me = site("global-control");
        let write = |store: &SqliteStore, name: &str, now_ms: u64| {
            store
                .write(LocalWrite {
                    key: key(name),
                    labels: BTreeMap::new(),
                    spec: serde_json::json!({ "name": name }),
                    deleted: false,
                    author: "alice".into(),
                    precondition: None,
                    now_ms,
                })
                .unwrap()
        };
        let meta_clock = |path: &Path| -> String {
            Connection::open(path)
                .unwrap()
                .query_row("SELECT value FROM meta WHERE key = 'clock'", [], |r| r.get(0))
                .unwrap()
        };
        let last = {
            let store = SqliteStore::open(&path, me.clone(), 60_000).unwrap();
            write(&store, "a", T0);
            write(&store, "b", T0 + 10);
            let last = write(&store, "c", T0 + 10).object.version.hlc;
            assert_eq!(last, Hlc::new(T0 + 10, 1));
            assert_eq!(store.clock().unwrap(), last);
            last
        };
        assert_eq!(meta_clock(&path), Hlc::ZERO.to_string(), "no commit wrote the clock into meta");
        let store = SqliteStore::open(&path, me, 60_000).unwrap();
        assert_eq!(store.clock().unwrap(), last, "the clock survives a restart");
        let after = write(&store, "d", T0).object.version.hlc;
        assert_eq!(after, Hlc::new(T0 + 10, 2), "a write at an earlier physical time goes on after it");
    }

    /// Written versions reach the database file through checkpoints while the writes go on,
    /// and the WAL is reused rather than grown by every write: after 12 MB of writes it
    /// stays under half of that (about 4 MB), and the database file holds at least half of it
    /// (all but the WAL's last pages, which wait for the next checkpoint).
    #[test]
    fn the_wal_is_checkpointed_as_writes_go_on_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let store = SqliteStore::open(&path, site("global-control"), 60_000).unwrap();
        let payload = "x".repeat(1_000);
        let (groups, per_group) = (240, 50);
        for g in 0..groups {
            let writes = (0..per_group)
                .map(|i| LocalWrite {
                    key: key(&format!("p-{g:03}-{i:02}")),
                    labels: BTreeMap::new(),
                    spec: serde_json::json!({ "payload": payload, "n": g * per_group + i }),
                    deleted: false,
                    author: "alice".into(),
                    precondition: None,
                    now_ms: T0,
                })
                .collect();
            assert!(store.write_batch(writes).iter().all(Result::is_ok));
        }
        let written = (groups * per_group * payload.len()) as u64;
        let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal = dir.path().join("site.db-wal");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while len(&path) < written / 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            len(&path) >= written / 2,
            "the database file holds {} bytes of {written} written after every commit returned",
            len(&path)
        );
        assert!(len(&wal) < written / 2, "the WAL grew to {} bytes for {written} written", len(&wal));
        let last = key(&format!("p-{:03}-{:02}", groups - 1, per_group - 1));
        assert!(store.get(&last).unwrap().is_some(), "the last write is readable");
    }

    /// A store written by the build before replication (schema version 1) opens, migrates to
    /// the current schema and keeps working: contexts are the current versions' vectors, old
    /// changes count as local writes accepted at their timestamps, and links start empty.
    #[test]
    fn a_version_1_store_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let me = site("edge-zone-a1");
        {
            let mut conn = Connection::open(&path).unwrap();
            match migrate_to(&mut conn, &path, &me, 1) {
                Ok(()) => {}
                Err(Migration::Refused(e)) => panic!("creating a version 1 store: {e}"),
                Err(Migration::Failed(e)) => panic!("creating a version 1 store: {e}"),
            }
            let version: String = conn
                .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
                .unwrap();
            assert_eq!(version, "1");
            // What the version 1 write path stored: `a` written twice, `b` written and deleted.
            conn.execute_batch(&format!(
                r#"
                INSERT INTO versions (id, kind, scope, name, hlc_wall, hlc_logical, origin, vv, author,
                                      content_hash, deleted, labels, spec) VALUES
                    (1, 'Policy', 'global', 'a', {t1}, 0, 'edge-zone-a1', '{{"edge-zone-a1":1}}', 'alice',
                     'h1', 0, '{{"team":"platform"}}', '{{"v":1}}'),
                    (2, 'Policy', 'global', 'b', {t2}, 0, 'edge-zone-a1', '{{"edge-zone-a1":1}}', 'alice',
                     'h2', 0, '{{}}', '{{"big":"xxxxxxxxxx"}}'),
                    (3, 'Policy', 'global', 'a', {t3}, 0, 'edge-zone-a1', '{{"edge-zone-a1":2}}', 'alice',
                     'h3', 0, '{{"team":"platform"}}', '{{"v":2}}'),
                    (4, 'Policy', 'global', 'b', {t4}, 1, 'edge-zone-a1', '{{"edge-zone-a1":2}}', 'bob',
                     'h4', 1, '{{}}', 'null');
                INSERT INTO objects (kind, scope, name, version_id, created_wall, created_logical) VALUES
                    ('Policy', 'global', 'a', 3, {t1}, 0),
                    ('Policy', 'global', 'b', 4, {t2}, 0);
                INSERT INTO changes (version_id, from_site) VALUES (1, NULL), (2, NULL), (3, NULL), (4, NULL);
                UPDATE meta SET value = '{t4}.1' WHERE key = 'clock';
                "#,
                t1 = T0,
                t2 = T0 + 10,
                t3 = T0 + 20,
                t4 = T0 + 30,
            ))
            .unwrap();
        }

        let store = SqliteStore::open(&path, me.clone(), 60_000).unwrap();
        let reader = Connection::open(&path).unwrap();
        let version: String = reader
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SqliteStore::SCHEMA_VERSION.to_string());
        assert_eq!(SqliteStore::SCHEMA_VERSION, 7);

        let a = store.get(&key("a")).unwrap().unwrap();
        assert_eq!(a.context, a.version.vv, "the context of an old object is its current vector");
        assert_eq!(a.created, Hlc::new(T0, 0));
        let b = store.get(&key("b")).unwrap().unwrap();
        assert!(b.version.deleted);
        assert_eq!(b.context.get(&me), 2);
        assert_eq!(store.history(&key("a")).unwrap().len(), 2);
        assert_eq!(store.changes(0, 10).unwrap().len(), 4);

        let peer = site("region-a-control");
        let q = LinkQuery { after: 0, peer: peer.clone(), scopes: None };
        let batch = store.changes_for_link(&q, 100).unwrap();
        let ids: Vec<String> = batch.changes.iter().map(|c| c.version.id().to_string()).collect();
        assert_eq!(ids, vec![format!("{}.0@edge-zone-a1", T0 + 20), format!("{}.1@edge-zone-a1", T0 + 30)]);
        assert_eq!(batch.scanned_to, 4);
        let debt = store.link_debt(&q).unwrap();
        assert_eq!(debt.pending, 2);
        assert_eq!(debt.oldest_ms, Some(T0 + 20), "old changes were accepted at their timestamps");
        let bytes = r#"{"team":"platform"}"#.len() + r#"{"v":2}"#.len() + "{}".len() + "null".len();
        assert_eq!(debt.pending_bytes, bytes as u64);
        assert_eq!(store.link(&peer).unwrap(), None);

        // Writes continue the old vectors and clock; new changes carry their own accounting.
        let write = store
            .write(crate::LocalWrite {
                key: key("a"),
                labels: BTreeMap::new(),
                spec: serde_json::json!({"v": 3}),
                deleted: false,
                author: "alice".into(),
                precondition: None,
                now_ms: T0 + 40,
            })
            .unwrap();
        assert_eq!(write.object.version.vv.get(&me), 3);
        let debt = store.link_debt(&LinkQuery { after: 4, ..q }).unwrap();
        assert_eq!((debt.pending, debt.oldest_ms), (1, Some(T0 + 40)));
        assert_eq!(debt.pending_bytes, ("{}".len() + r#"{"v":3}"#.len()) as u64);
    }
}

/// A store written by the build before conflicts (schema version 2) opens and migrates: its
/// link keeps its record and learns no site cards, the new logs start empty, and conflicts are
/// detected from then on against the versions it already held.
#[cfg(test)]
mod version_2 {
    use model::{ContentHash, Kind, ObjectName};

    use super::*;
    use crate::{ConflictFilter, LastWriteWins, LinkRecord};

    const T0: u64 = 1_764_000_000_000;

    #[test]
    fn a_version_2_store_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let me = SiteId::new("edge-zone-a1").unwrap();
        let peer = SiteId::new("region-a-control").unwrap();
        let key = ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new("p").unwrap());
        {
            let mut conn = Connection::open(&path).unwrap();
            if migrate_to(&mut conn, &path, &me, 2).is_err() {
                panic!("creating a version 2 store");
            }
            conn.execute_batch(&format!(
                r#"
                INSERT INTO versions (id, kind, scope, name, hlc_wall, hlc_logical, origin, vv, author,
                                      content_hash, deleted, labels, spec) VALUES
                    (1, 'Policy', 'global', 'p', {T0}, 0, 'edge-zone-a1', '{{"edge-zone-a1":1}}', 'alice',
                     'h1', 0, '{{}}', '{{"v":1}}');
                INSERT INTO objects (kind, scope, name, version_id, created_wall, created_logical, context)
                    VALUES ('Policy', 'global', 'p', 1, {T0}, 0, '{{"edge-zone-a1":1}}');
                INSERT INTO changes (version_id, from_site, recorded_ms, bytes) VALUES (1, NULL, {T0}, 9);
                INSERT INTO links (peer, cursor, peer_scopes, last_sync_ms, signal)
                    VALUES ('region-a-control', 1, '["region-a"]', {T0}, 'up');
                UPDATE meta SET value = '{T0}.0' WHERE key = 'clock';
                "#
            ))
            .unwrap();
        }
        let store = SqliteStore::open(&path, me.clone(), 60_000).unwrap();
        let link = store.link(&peer).unwrap().unwrap();
        assert_eq!(
            link,
            LinkRecord {
                peer: peer.clone(),
                cursor: 1,
                peer_scopes: [Scope::new("region-a").unwrap()].into_iter().collect(),
                last_sync_ms: Some(T0),
                signal: "up".into(),
                peer_sites: Vec::new(),
            }
        );
        assert_eq!(store.last_event_seq().unwrap(), 0);
        assert!(store.conflicts(&ConflictFilter::default()).unwrap().is_empty());

        // A concurrent version from the region conflicts with the version held before.
        let mut vv = VersionVector::new();
        vv.increment(&peer);
        let labels = BTreeMap::new();
        let spec = serde_json::json!({"v": 2});
        let remote = RemoteVersion {
            version: Version {
                hlc: Hlc::new(T0 + 5, 0),
                origin: peer.clone(),
                vv,
                author: "bob".into(),
                content_hash: ContentHash::of(&key, &labels, &spec, false),
                deleted: false,
            },
            key: key.clone(),
            labels,
            spec: SpecText::of(&spec),
        };
        let report =
            store.apply_remote(&peer, std::slice::from_ref(&remote), T0 + 10, &LastWriteWins).unwrap();
        assert_eq!((report.applied, report.concurrent, report.became_current), (1, 1, 1));
        let conflicts = store.conflicts(&ConflictFilter::default()).unwrap();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].winner, remote.version.id());
        assert_eq!(store.events(0, 10).unwrap().len(), 2, "the write and the conflict");
    }
}

/// A store written by the build before node records (schema version 3) opens and migrates: its
/// objects stay, and it starts with no nodes.
#[cfg(test)]
mod version_3 {
    use super::*;
    use crate::Heartbeat;

    #[test]
    fn a_version_3_store_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let me = SiteId::new("edge-zone-a2").unwrap();
        let key = ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new("p").unwrap());
        {
            let mut conn = Connection::open(&path).unwrap();
            if migrate_to(&mut conn, &path, &me, 3).is_err() {
                panic!("creating a version 3 store");
            }
            conn.execute_batch(
                r#"
                INSERT INTO versions (id, kind, scope, name, hlc_wall, hlc_logical, origin, vv, author,
                                      content_hash, deleted, labels, spec) VALUES
                    (1, 'Policy', 'global', 'p', 1764000000000, 0, 'edge-zone-a2', '{"edge-zone-a2":1}',
                     'alice', 'h1', 0, '{}', '{"v":1}');
                INSERT INTO objects (kind, scope, name, version_id, created_wall, created_logical, context)
                    VALUES ('Policy', 'global', 'p', 1, 1764000000000, 0, '{"edge-zone-a2":1}');
                INSERT INTO changes (version_id, from_site, recorded_ms, bytes)
                    VALUES (1, NULL, 1764000000000, 9);
                "#,
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, me, 60_000).unwrap();
        assert_eq!(store.get(&key).unwrap().expect("the object stays").spec, serde_json::json!({"v": 1}));
        assert!(store.nodes(None, 0).unwrap().is_empty());
        let beat = Heartbeat {
            node: ObjectName::new("a2-node-01").unwrap(),
            at_ms: 1_764_000_000_000,
            interval_seconds: 5,
            software_version: "1.0.0".into(),
            health: "healthy".into(),
            applied: BTreeMap::new(),
        };
        store.record_heartbeat(&beat).unwrap();
        assert_eq!(store.nodes(None, 0).unwrap().len(), 1);
    }
}

/// A store written by the build with a change-log table of its own (schema version 4) opens and
/// migrates: versions keep their change-log sequence numbers (so link cursors stay valid), the
/// object points at its current version under its new row id, a version is still held once,
/// the log continues after the highest number it ever gave out, and foreign keys are enforced
/// again. A file with a dangling reference, or a version without its change-log entry, is
/// refused and left as it was.
#[cfg(test)]
mod version_4 {
    use super::*;
    use crate::LinkRecord;

    const T0: u64 = 1_764_000_000_000;

    /// Versions 1 and 2 of `p` (the object points at `current`), logged as changes 5 and 6; the
    /// log once reached 8 (its last entries rolled back); a link's cursor is at 5.
    fn version_4_store(path: &Path, me: &SiteId, current: i64, extra_sql: &str) {
        let mut conn = Connection::open(path).unwrap();
        if migrate_to(&mut conn, path, me, 4).is_err() {
            panic!("creating a version 4 store");
        }
        // Off, so the broken files of the refusal tests can be made.
        conn.pragma_update(None, "foreign_keys", false).unwrap();
        conn.execute_batch(&format!(
            r#"
            INSERT INTO versions (id, kind, scope, name, hlc_wall, hlc_logical, origin, vv, author,
                                  content_hash, deleted, labels, spec) VALUES
                (1, 'Policy', 'global', 'p', {T0}, 0, '{me}', '{{"{me}":1}}', 'alice', 'h1', 0, '{{}}', '{{"v":1}}'),
                (2, 'Policy', 'global', 'p', {t}, 0, 'global-control', '{{"{me}":1,"global-control":1}}', 'bob',
                 'h2', 0, '{{}}', '{{"v":2}}');
            INSERT INTO objects (kind, scope, name, version_id, created_wall, created_logical, context)
                VALUES ('Policy', 'global', 'p', {current}, {T0}, 0, '{{"{me}":1,"global-control":1}}');
            INSERT INTO changes (seq, version_id, from_site, recorded_ms, bytes)
                VALUES (5, 1, NULL, {T0}, 9), (6, 2, 'global-control', {t}, 9);
            UPDATE sqlite_sequence SET seq = 8 WHERE name = 'changes';
            INSERT INTO links (peer, cursor) VALUES ('region-a-control', 5);
            {extra_sql}
            "#,
            t = T0 + 10,
        ))
        .unwrap();
    }

    fn indexes(path: &Path, table: &str) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?1 ORDER BY name")
            .unwrap();
        stmt.query_map([table], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    fn schema_version(path: &Path) -> String {
        let conn = Connection::open(path).unwrap();
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_version_4_store_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let me = SiteId::new("edge-zone-a1").unwrap();
        let key = ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new("p").unwrap());
        version_4_store(&path, &me, 2, "");
        assert_eq!(indexes(&path, "versions"), ["sqlite_autoindex_versions_1", "versions_by_origin"]);

        let store = SqliteStore::open(&path, me.clone(), 60_000).unwrap();
        assert_eq!(schema_version(&path), "7");
        assert_eq!(indexes(&path, "versions"), ["versions_by_origin"]);
        assert_eq!(indexes(&path, "objects"), Vec::<String>::new(), "no index beyond the key");
        let object = store.get(&key).unwrap().expect("the object stays");
        assert_eq!(object.spec, serde_json::json!({"v": 2}));
        let history: Vec<u64> = store.history(&key).unwrap().iter().map(|h| h.seq).collect();
        assert_eq!(history, [5, 6]);
        let log: Vec<(u64, Option<String>)> = store
            .changes(0, 10)
            .unwrap()
            .into_iter()
            .map(|c| (c.seq, c.from_site.map(|s| s.to_string())))
            .collect();
        assert_eq!(log, [(5, None), (6, Some("global-control".to_owned()))]);
        let link =
            store.link(&SiteId::new("region-a-control").unwrap()).unwrap().map(|l: LinkRecord| l.cursor);
        assert_eq!(link, Some(5));
        let q = LinkQuery { after: 5, peer: SiteId::new("region-a-control").unwrap(), scopes: None };
        let pending: Vec<u64> =
            store.changes_for_link(&q, 10).unwrap().changes.iter().map(|c| c.seq).collect();
        assert_eq!(pending, [6], "the link resumes after its cursor");

        // Held once: the same version again is a duplicate, for the store and for SQLite.
        let again = RemoteVersion {
            key: key.clone(),
            version: object.version.clone(),
            labels: object.labels.clone(),
            spec: SpecText::of(&object.spec),
        };
        let from = SiteId::new("global-control").unwrap();
        let report = store.apply_remote(&from, &[again], T0 + 20, &crate::LastWriteWins).unwrap();
        assert_eq!((report.applied, report.duplicates), (0, 1));
        {
            let conn = store.writer();
            let copy = conn.execute(
                "INSERT INTO versions (kind, scope, name, hlc_wall, hlc_logical, origin, vv, author, \
                 content_hash, deleted, labels, spec, recorded_ms, bytes) SELECT kind, scope, name, hlc_wall, \
                 hlc_logical, origin, vv, author, content_hash, deleted, labels, spec, recorded_ms, bytes \
                 FROM versions WHERE id = 6",
                [],
            );
            assert!(copy.is_err(), "a second row for the same version is refused");
            let dangling = conn.execute("UPDATE objects SET version_id = 99", []);
            assert!(dangling.is_err(), "foreign keys are enforced again after the migration");
        }

        // The log continues after the highest number it gave out, not after its last entry.
        let write = store
            .write(crate::LocalWrite {
                key,
                labels: BTreeMap::new(),
                spec: serde_json::json!({"v": 3}),
                deleted: false,
                author: "alice".into(),
                precondition: None,
                now_ms: T0 + 30,
            })
            .unwrap();
        assert_eq!(write.seq, 9);
        assert_eq!(store.last_seq().unwrap(), 9);
    }

    fn assert_refused_and_kept(extra_sql: &str, current: i64, expected: &str) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let me = SiteId::new("edge-zone-a1").unwrap();
        version_4_store(&path, &me, current, extra_sql);
        let err = SqliteStore::open(&path, me, 60_000).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        let shown = err.to_string();
        assert!(shown.contains(expected) && shown.contains("backup"), "{shown}");
        assert_eq!(schema_version(&path), "4", "nothing was migrated");
        assert_eq!(indexes(&path, "versions"), ["sqlite_autoindex_versions_1", "versions_by_origin"]);
    }

    #[test]
    fn a_version_4_store_with_a_dangling_reference_is_refused_and_kept() {
        assert_refused_and_kept("", 7, "objects a row refers to a versions row that does not exist");
    }

    #[test]
    fn a_version_4_store_with_a_version_missing_from_its_log_is_refused_and_kept() {
        let unlogged = format!(
            "INSERT INTO versions (id, kind, scope, name, hlc_wall, hlc_logical, origin, vv, author, \
             content_hash, deleted, labels, spec) VALUES (3, 'Policy', 'global', 'q', {T0}, 0, 'edge-zone-a1', \
             '{{}}', 'alice', 'h3', 0, '{{}}', '{{}}');"
        );
        assert_refused_and_kept(&unlogged, 2, "3 versions and 2 change-log entries for 2 of them");
    }
}

#[cfg(test)]
mod version_5 {
    use super::*;

    const T0: u64 = 1_764_000_000_000;

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new(name).unwrap())
    }

    /// A version 5 store: two versions of `p` (log numbers 1 and 2), three events, two audit
    /// entries; then `extra_sql`.
    fn version_5_store(path: &Path, me: &SiteId, extra_sql: &str) {
        let mut conn = Connection::open(path).unwrap();
        if migrate_to(&mut conn, path, me, 5).is_err() {
            panic!("creating a version 5 store");
        }
        conn.execute_batch(&format!(
            r#"
            INSERT INTO versions (kind, scope, name, hlc_wall, hlc_logical, origin, vv, author, content_hash,
                                  deleted, labels, spec, from_site, recorded_ms, bytes) VALUES
                ('Policy', 'global', 'p', {T0}, 0, '{me}', '{{"{me}":1}}', 'alice', 'h1', 0, '{{}}', '{{"v":1}}',
                 NULL, {T0}, 9),
                ('Policy', 'global', 'p', {t}, 0, '{me}', '{{"{me}":2}}', 'alice', 'h2', 0, '{{}}', '{{"v":2}}',
                 NULL, {t}, 9);
            INSERT INTO objects (kind, scope, name, version_id, created_wall, created_logical, context)
                VALUES ('Policy', 'global', 'p', 2, {T0}, 0, '{{"{me}":2}}');
            INSERT INTO events (at_ms, kind, object_kind, object_scope, object_name, data) VALUES
                ({T0}, 'write', 'Policy', 'global', 'p', '{{}}'),
                ({t}, 'write', 'Policy', 'global', 'p', '{{}}'),
                ({t}, 'refusal', NULL, NULL, NULL, '{{}}');
            INSERT INTO audit (at_ms, actor, action, kind, scope, name, version, outcome, detail) VALUES
                ({T0}, 'alice', 'write', 'Policy', 'global', 'p', NULL, 'applied', ''),
                ({t}, 'alice', 'write', 'Policy', 'global', 'p', NULL, 'applied', '');
            UPDATE meta SET value = '{t}.0' WHERE key = 'clock';
            {extra_sql}
            "#,
            t = T0 + 10,
        ))
        .unwrap();
    }

    fn table_sql(path: &Path, table: &str) -> String {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1", [table], |r| {
                r.get(0)
            })
            .unwrap()
    }

    fn sequences(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT name FROM sqlite_sequence ORDER BY name").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    fn write(store: &SqliteStore, name: &str, now_ms: u64) -> Committed {
        store
            .write(LocalWrite {
                key: key(name),
                labels: BTreeMap::new(),
                spec: serde_json::json!({"v": 3}),
                deleted: false,
                author: "alice".into(),
                precondition: None,
                now_ms,
            })
            .unwrap()
    }

    /// The three tables lose `AUTOINCREMENT`, keep every row under its number, and go on one
    /// past the largest; a commit no longer touches `sqlite_sequence`, and the logs still refuse
    /// to be rewritten.
    #[test]
    fn a_version_5_store_migrates_and_its_commits_leave_the_sequence_table_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let me = SiteId::new("edge-zone-a1").unwrap();
        version_5_store(&path, &me, "");
        assert_eq!(sequences(&path), ["audit", "events", "versions"]);

        let store = SqliteStore::open(&path, me, 60_000).unwrap();
        let wal = std::fs::metadata(dir.path().join("site.db-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "the migration's copy is not left in the WAL");
        for table in ["versions", "events", "audit"] {
            assert!(
                !table_sql(&path, table).contains("AUTOINCREMENT"),
                "{table}: {}",
                table_sql(&path, table)
            );
        }
        assert_eq!(sequences(&path), Vec::<String>::new(), "the dropped tables' sequences went with them");
        let history: Vec<u64> = store.history(&key("p")).unwrap().iter().map(|h| h.seq).collect();
        assert_eq!(history, [1, 2]);
        assert_eq!(store.get(&key("p")).unwrap().unwrap().spec, serde_json::json!({"v": 2}));
        let events: Vec<(u64, String)> =
            store.events(0, 10).unwrap().into_iter().map(|e| (e.seq, e.event.kind)).collect();
        assert_eq!(events, [(1, "write".into()), (2, "write".into()), (3, "refusal".into())]);
        assert_eq!(store.audit(0, 10).unwrap().iter().map(|a| a.seq).collect::<Vec<_>>(), [1, 2]);

        let committed = write(&store, "q", T0 + 20);
        assert_eq!(committed.seq, 3, "the log goes on one past its largest number");
        assert_eq!(store.events(3, 10).unwrap().first().map(|e| e.seq), Some(4));
        assert_eq!(store.audit(2, 10).unwrap().first().map(|a| a.seq), Some(3));
        assert_eq!(sequences(&path), Vec::<String>::new(), "a commit writes no sequence");

        let conn = store.writer();
        for (sql, what) in [
            ("UPDATE audit SET actor = 'mallory'", "the audit log is append-only"),
            ("DELETE FROM audit", "the audit log is append-only"),
            ("UPDATE events SET data = '{}'", "the event log is append-only"),
            ("DELETE FROM events", "the event log is append-only"),
        ] {
            let refused = conn.execute(sql, []).unwrap_err().to_string();
            assert!(refused.contains(what), "{sql}: {refused}");
        }
        let copy = conn.execute(
            "INSERT INTO versions (kind, scope, name, hlc_wall, hlc_logical, origin, vv, author, content_hash, \
             deleted, labels, spec, recorded_ms, bytes) SELECT kind, scope, name, hlc_wall, hlc_logical, origin, \
             vv, author, content_hash, deleted, labels, spec, recorded_ms, bytes FROM versions WHERE id = 2",
            [],
        );
        assert!(copy.is_err(), "a second row for the same version is refused");
    }

    /// A log whose numbers ran ahead of its rows keeps `AUTOINCREMENT` and goes on after the
    /// highest number it gave out; the other tables still lose it.
    #[test]
    fn a_version_5_log_whose_numbers_ran_ahead_goes_on_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let me = SiteId::new("edge-zone-a1").unwrap();
        version_5_store(&path, &me, "UPDATE sqlite_sequence SET seq = 8 WHERE name = 'versions';");

        let store = SqliteStore::open(&path, me, 60_000).unwrap();
        assert!(table_sql(&path, "versions").contains("AUTOINCREMENT"));
        assert!(!table_sql(&path, "events").contains("AUTOINCREMENT"));
        assert_eq!(write(&store, "q", T0 + 20).seq, 9);
        assert_eq!(sequences(&path), ["versions"]);
    }
}

#[cfg(test)]
mod plans {
    use rusqlite::StatementStatus;

    use super::*;
    use crate::LinkQuery;

    /// A link that sends a change at a time reads the log (and a stream the events) once per
    /// change: those statements must run from the statement cache as prepared, not be prepared
    /// again on every run (a bound `LIMIT` made SQLite, built with STAT4, do that: it cost more
    /// than the query).
    #[test]
    fn reading_the_logs_again_does_not_prepare_the_statements_again() {
        let dir = tempfile::tempdir().unwrap();
        let me = SiteId::new("global-control").unwrap();
        let store = SqliteStore::open(&dir.path().join("site.db"), me, 1_000).unwrap();
        let peer = SiteId::new("region-a-control").unwrap();
        let scopes = Some(["global".parse::<Scope>().unwrap()].into_iter().collect());
        let limit = 7;
        for i in 0..5u64 {
            let key = ObjectKey::parse("Policy", "global", &format!("p{i}")).unwrap();
            let write = LocalWrite {
                key,
                labels: BTreeMap::new(),
                spec: serde_json::json!({"i": i}),
                deleted: false,
                author: "alice".into(),
                precondition: None,
                now_ms: 1_764_000_000_000 + i,
            };
            store.write(write).unwrap();
            // A different position each time, as a link's cursor and a stream's moves.
            let query = LinkQuery { after: i, peer: peer.clone(), scopes: scopes.clone() };
            store.changes_for_link(&query, limit).unwrap();
            store.events(i, limit).unwrap();
        }
        let query = LinkQuery { after: 0, peer, scopes };
        let (conditions, _) = link_conditions(&query, 0).unwrap();
        for (what, sql) in
            [("link changes", link_changes_sql(&conditions, limit)), ("events", events_sql(limit))]
        {
            let (runs, reprepares) = store
                .readers
                .iter()
                .map(|reader| {
                    let conn = reader.lock().unwrap();
                    let stmt = conn.prepare_cached(&sql).unwrap();
                    (stmt.get_status(StatementStatus::Run), stmt.get_status(StatementStatus::RePrepare))
                })
                .fold((0, 0), |(r, p), (run, rep)| (r + run, p + rep));
            assert!(runs >= 5, "{what}: the cached statement ran {runs} times, not the 5 reads");
            assert_eq!(reprepares, 0, "{what}: prepared again {reprepares} times in {runs} runs");
        }
    }

    /// The plan SQLite picks for the link selection: the log walked by seq, each version found
    /// by its row id, each superseded check one seek in `versions_by_origin`.
    #[test]
    fn the_link_selection_uses_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(&dir.path().join("site.db"), SiteId::new("edge-zone-a1").unwrap(), 1_000)
                .unwrap();
        let conn = store.writer();
        for scopes in [None, Some(["global".parse::<Scope>().unwrap()].into_iter().collect())] {
            let q = LinkQuery { after: 0, peer: SiteId::new("global-control").unwrap(), scopes };
            let (conditions, args) = link_conditions(&q, 100).unwrap();
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT v.id FROM versions v WHERE {conditions} ORDER BY v.id LIMIT 10"
            );
            let plan: Vec<String> = conn
                .prepare(&sql)
                .unwrap()
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let plan = plan.join("\n");
            eprintln!("{plan}");
            assert!(plan.contains("versions_by_origin"), "{plan}");
            assert!(!plan.contains("SCAN v") && !plan.contains("SCAN later"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE FOR ORDER BY"), "{plan}");
        }
    }
}
