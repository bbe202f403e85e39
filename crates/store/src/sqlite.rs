//! The embedded SQLite backend: one file per site, in WAL mode with `synchronous=FULL`, so a
//! write is fsynced before [`Store::write`] returns.
//!
//! One writer connection behind a mutex serializes writes (each in a `BEGIN IMMEDIATE`
//! transaction); a fixed pool of read-only connections serves reads, which WAL lets run beside
//! the writer. Objects, versions and the change log are normalized: the `versions` table holds
//! every version with its content, `objects` points at each object's current version, and
//! `changes` gives each version its sequence number. Labels, specs and version vectors are
//! stored as JSON text. The schema is versioned in the `meta` table and migrated on open.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use model::{
    ContentHash, Hlc, HlcClock, Kind, ObjectKey, ObjectName, Scope, SiteId, StoredObject, Version, VersionId,
    VersionVector,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use tracing::{debug, info};

use crate::local_write::{refusal, stamp};
use crate::{
    AuditEntry, AuditRecord, Change, Committed, HistoryEntry, ListFilter, LocalWrite, Store, StoreError,
    WriteError, clamp_limit,
};

/// How many read-only connections serve reads.
const READERS: usize = 4;
/// How long a connection waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `MIGRATIONS[n]` brings a store from schema version `n` to `n + 1`. Version 0 is a new file
/// with only its `meta` table.
const MIGRATIONS: &[&str] = &[SCHEMA_V1];

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

/// The columns of a version, in the order [`RawVersion::read`] expects them.
const VERSION_COLUMNS: &str = "v.id, v.kind, v.scope, v.name, v.hlc_wall, v.hlc_logical, v.origin, \
     v.vv, v.author, v.content_hash, v.deleted, v.labels, v.spec";
/// The number of columns in [`VERSION_COLUMNS`].
const VERSION_COLUMN_COUNT: usize = 13;

const AUDIT_COLUMNS: &str = "seq, at_ms, actor, action, kind, scope, name, version, outcome, detail";

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
}

fn configure_writer(conn: &Connection) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
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
    for (n, migration) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        tx.execute_batch(migration)?;
        let to = n + 1;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", [to.to_string()])?;
        info!(path = %path.display(), schema_version = to, "migrated store schema");
    }
    tx.commit()?;
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
struct Decoded {
    key: ObjectKey,
    version: Version,
    labels: BTreeMap<String, String>,
    spec: serde_json::Value,
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
        let id = self.id;
        let bad = |column: &str, problem: &dyn fmt::Display| corrupt("versions", id, column, problem);
        let key = decode_key(&self.kind, &self.scope, &self.name).map_err(|(column, e)| bad(column, &e))?;
        let hlc = decode_hlc("versions", id, ("hlc_wall", self.wall), ("hlc_logical", self.logical))?;
        let origin = SiteId::new(self.origin).map_err(|e| bad("origin", &e))?;
        let vv: VersionVector = serde_json::from_str(&self.vv).map_err(|e| bad("vv", &e))?;
        let labels = serde_json::from_str(&self.labels).map_err(|e| bad("labels", &e))?;
        let spec = serde_json::from_str(&self.spec).map_err(|e| bad("spec", &e))?;
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

/// The query of current objects, followed by the object's `created` columns.
fn object_query(filter_sql: &str) -> String {
    format!(
        "SELECT {VERSION_COLUMNS}, o.created_wall, o.created_logical \
         FROM objects o JOIN versions v ON v.id = o.version_id {filter_sql}"
    )
}

/// Reads one row of [`object_query`].
fn read_object(row: &Row<'_>) -> rusqlite::Result<(RawVersion, i64, i64)> {
    Ok((RawVersion::read(row)?, row.get(VERSION_COLUMN_COUNT)?, row.get(VERSION_COLUMN_COUNT + 1)?))
}

fn decode_object(
    (raw, created_wall, created_logical): (RawVersion, i64, i64),
) -> Result<StoredObject, StoreError> {
    let id = raw.id;
    let d = raw.decode()?;
    let created = decode_hlc(
        "objects",
        format_args!("of version {id}"),
        ("created_wall", created_wall),
        ("created_logical", created_logical),
    )?;
    Ok(StoredObject { key: d.key, version: d.version, labels: d.labels, spec: d.spec, created })
}

/// The current version of `key`, tombstones included.
fn query_current(conn: &Connection, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
    let sql = object_query("WHERE o.kind = ?1 AND o.scope = ?2 AND o.name = ?3");
    let context = "reading the current version of an object";
    let raw = conn
        .prepare_cached(&sql)
        .during(context)?
        .query_row(params![key.kind.as_str(), key.scope.as_str(), key.name.as_str()], read_object)
        .optional()
        .during(context)?;
    raw.map(decode_object).transpose()
}

fn read_clock(conn: &Connection) -> Result<Hlc, StoreError> {
    let raw: String = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'clock'")
        .during("reading the clock")?
        .query_row([], |r| r.get(0))
        .optional()
        .during("reading the clock")?
        .ok_or_else(|| StoreError::Corrupt("meta has no `clock` entry".into()))?;
    raw.parse().map_err(|e| StoreError::Corrupt(format!("meta `clock`: {e}")))
}

fn insert_audit(conn: &Connection, record: &AuditRecord) -> Result<u64, StoreError> {
    let context = "appending to the audit log";
    let (kind, scope, name) = match &record.key {
        Some(k) => (Some(k.kind.as_str()), Some(k.scope.as_str()), Some(k.name.as_str())),
        None => (None, None, None),
    };
    conn.prepare_cached(
        "INSERT INTO audit (at_ms, actor, action, kind, scope, name, version, outcome, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
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

impl Store for SqliteStore {
    fn site(&self) -> &SiteId {
        &self.site
    }

    fn write(&self, write: LocalWrite) -> Result<Committed, WriteError> {
        let mut conn = self.writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .during("starting a write transaction")?;
        let current = query_current(&tx, &write.key)?;

        if let Some(refused) = refusal(&write, current.as_ref()) {
            insert_audit(&tx, &refused.audit)?;
            tx.commit().during("committing the audit entry of a refused write")?;
            debug!(key = %write.key, outcome = %refused.audit.outcome, "write refused");
            return Err(refused.error);
        }

        let mut clock = HlcClock::new(read_clock(&tx)?, self.max_clock_skew_ms);
        let stamped = stamp(&self.site, write, current.as_ref(), &mut clock);
        let object = &stamped.object;
        let (key, version) = (&object.key, &object.version);

        let context = "inserting a version";
        tx.prepare_cached(
            "INSERT INTO versions (kind, scope, name, hlc_wall, hlc_logical, origin, vv, author, \
             content_hash, deleted, labels, spec) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .during(context)?
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
            serde_json::to_string(&object.labels).map_err(encoding("labels"))?,
            serde_json::to_string(&object.spec).map_err(encoding("a spec"))?,
        ])
        .during(context)?;
        let version_row = tx.last_insert_rowid();

        let context = "updating the current version of an object";
        tx.prepare_cached(
            "INSERT INTO objects (kind, scope, name, version_id, created_wall, created_logical) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (kind, scope, name) DO UPDATE SET version_id = excluded.version_id, \
             created_wall = excluded.created_wall, created_logical = excluded.created_logical",
        )
        .during(context)?
        .execute(params![
            key.kind.as_str(),
            key.scope.as_str(),
            key.name.as_str(),
            version_row,
            object.created.wall_ms,
            object.created.logical,
        ])
        .during(context)?;

        let context = "appending to the change log";
        tx.prepare_cached("INSERT INTO changes (version_id, from_site) VALUES (?1, NULL)")
            .during(context)?
            .execute([version_row])
            .during(context)?;
        let seq = to_u64("changes", "just inserted", "seq", tx.last_insert_rowid())?;

        insert_audit(&tx, &stamped.audit)?;

        let context = "saving the clock";
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'clock'")
            .during(context)?
            .execute([clock.last().to_string()])
            .during(context)?;

        tx.commit().during("committing a write")?;
        debug!(key = %key, version = %version.id(), seq, deleted = version.deleted, "write committed");
        Ok(Committed { object: stamped.object, seq, created: stamped.created })
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
        args.push(SqlValue::Integer(sql_limit(filter.limit)));
        let mut filter_sql = String::new();
        if !conditions.is_empty() {
            filter_sql.push_str("WHERE ");
            filter_sql.push_str(&conditions.join(" AND "));
        }
        // Byte order of the kind's name, then scope, then name: `ObjectKey`'s order.
        filter_sql.push_str(" ORDER BY o.kind, o.scope, o.name LIMIT ?");
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
            "SELECT {VERSION_COLUMNS}, c.seq FROM versions v JOIN changes c ON c.version_id = v.id \
             WHERE v.kind = ?1 AND v.scope = ?2 AND v.name = ?3 ORDER BY c.seq"
        );
        query_all(
            &self.reader(),
            "reading the history of an object",
            &sql,
            params![key.kind.as_str(), key.scope.as_str(), key.name.as_str()],
            |row| Ok((RawVersion::read(row)?, row.get::<_, i64>(VERSION_COLUMN_COUNT)?)),
            |(raw, seq)| {
                let id = raw.id;
                let d = raw.decode()?;
                Ok(HistoryEntry {
                    version: d.version,
                    labels: d.labels,
                    spec: d.spec,
                    seq: to_u64("changes", format_args!("of version {id}"), "seq", seq)?,
                })
            },
        )
    }

    fn changes(&self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS}, c.seq, c.from_site FROM changes c JOIN versions v ON v.id = c.version_id \
             WHERE c.seq > ?1 ORDER BY c.seq LIMIT ?2"
        );
        query_all(
            &self.reader(),
            "reading the change log",
            &sql,
            params![sql_position(after), sql_limit(limit)],
            |row| {
                Ok((
                    RawVersion::read(row)?,
                    row.get::<_, i64>(VERSION_COLUMN_COUNT)?,
                    row.get::<_, Option<String>>(VERSION_COLUMN_COUNT + 1)?,
                ))
            },
            |(raw, seq, from_site)| {
                let from_site = from_site
                    .map(SiteId::new)
                    .transpose()
                    .map_err(|e| corrupt("changes", seq, "from_site", e))?;
                let d = raw.decode()?;
                Ok(Change {
                    seq: to_u64("changes", seq, "seq", seq)?,
                    key: d.key,
                    version: d.version,
                    labels: d.labels,
                    spec: d.spec,
                    from_site,
                })
            },
        )
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        let context = "reading the end of the change log";
        let seq: i64 = self
            .reader()
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM changes")
            .during(context)?
            .query_row([], |r| r.get(0))
            .during(context)?;
        to_u64("changes", "with the highest seq", "seq", seq)
    }

    fn append_audit(&self, record: AuditRecord) -> Result<u64, StoreError> {
        // A single statement outside a transaction commits (durably) on its own.
        insert_audit(&self.writer(), &record)
    }

    fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2");
        query_all(
            &self.reader(),
            "reading the audit log",
            &sql,
            params![sql_position(after), sql_limit(limit)],
            read_audit,
            RawAudit::decode,
        )
    }

    fn audit_tail(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT ?1");
        let mut newest_first = query_all(
            &self.reader(),
            "reading the end of the audit log",
            &sql,
            [sql_limit(limit)],
            read_audit,
            RawAudit::decode,
        )?;
        newest_first.reverse();
        Ok(newest_first)
    }

    fn clock(&self) -> Result<Hlc, StoreError> {
        read_clock(&self.reader())
    }
}
