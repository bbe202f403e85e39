//! What only the SQLite backend has: the file belongs to one site, runs in WAL mode with
//! `synchronous=FULL`, carries a schema version, may be damaged, and is shared by threads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::{ContentHash, Hlc, Kind, ObjectKey, ObjectName, Scope, SiteId, Version, VersionVector};
use rusqlite::Connection;
use serde_json::json;
use store::conformance::SqliteHarness;
use store::{LinkQuery, ListFilter, LocalWrite, RemoteVersion, SqliteStore, Store, StoreError};

const T0: u64 = 1_764_000_000_000;

fn site(name: &str) -> SiteId {
    SiteId::new(name).unwrap()
}

fn policy(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new(name).unwrap())
}

fn put(key: &ObjectKey, spec: serde_json::Value, now_ms: u64) -> LocalWrite {
    LocalWrite {
        key: key.clone(),
        labels: BTreeMap::new(),
        spec,
        deleted: false,
        author: "alice".into(),
        precondition: None,
        now_ms,
    }
}

#[test]
fn another_sites_file_is_refused_and_left_alone() {
    let mut h = SqliteHarness::for_site(site("region-a-control"));
    let path = h.path();
    {
        let store = h.open_sqlite();
        store.write(put(&policy("baseline"), json!({"v": 1}), T0)).unwrap();
    }
    let err = SqliteStore::open(&path, site("edge-zone-a1"), 1_000).unwrap_err();
    match &err {
        StoreError::WrongSite { found, expected, .. } => {
            assert_eq!(found, "region-a-control");
            assert_eq!(expected, "edge-zone-a1");
        }
        other => panic!("expected WrongSite, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string())
            && message.contains("belongs to site `region-a-control`, not `edge-zone-a1`")
            && message.contains("use that site's own data directory"),
        "{message}"
    );
    let store = h.open_sqlite();
    assert!(store.get(&policy("baseline")).unwrap().is_some(), "the refused open changed nothing");
}

#[test]
fn the_file_is_in_wal_mode_and_commits_are_fsynced() {
    let mut h = SqliteHarness::new();
    let store = h.open_sqlite();
    store.write(put(&policy("baseline"), json!({}), T0)).unwrap();
    let durability = store.durability().unwrap();
    assert_eq!(durability.synchronous, "full", "every commit is fsynced before write returns");
    assert_eq!(durability.journal_mode, "wal");

    // The journal mode is a property of the file: another connection sees it too.
    let other = Connection::open(h.path()).unwrap();
    let mode: String = other.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let mut check = other.prepare("PRAGMA foreign_key_check").unwrap();
    assert_eq!(check.query_map([], |_| Ok(())).unwrap().count(), 0, "no dangling references");
}

#[test]
fn a_schema_from_a_newer_build_is_refused() {
    let mut h = SqliteHarness::new();
    let path = h.path();
    drop(h.open_sqlite());
    let other = Connection::open(&path).unwrap();
    other.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", []).unwrap();
    drop(other);
    let err = SqliteStore::open(&path, h.site().clone(), 1_000).unwrap_err();
    match &err {
        StoreError::SchemaTooNew { found, supported, .. } => {
            assert_eq!(*found, 99);
            assert_eq!(*supported, SqliteStore::SCHEMA_VERSION);
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(err.to_string().contains("upgrade souverix"), "{err}");
}

#[test]
fn an_sqlite_file_of_something_else_is_not_taken_over() {
    let mut h = SqliteHarness::new();
    let path = h.path();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("CREATE TABLE invoices (id INTEGER PRIMARY KEY)").unwrap();
    drop(other);
    let err = SqliteStore::open(&path, h.site().clone(), 1_000).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let source = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
    assert!(source.contains("not a souverix store"), "{source}");
}

#[test]
fn a_file_that_is_not_a_database_fails_to_open_with_its_path() {
    let mut h = SqliteHarness::new();
    let path = h.path();
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = SqliteStore::open(&path, h.site().clone(), 1_000).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn open_creates_missing_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("sites").join("edge.db");
    let store = SqliteStore::open(&path, site("edge-zone-a1"), 1_000).unwrap();
    store.write(put(&policy("baseline"), json!({}), T0)).unwrap();
    assert!(path.is_file());
    assert_eq!(store.path(), path);
}

#[test]
fn a_corrupt_row_is_reported_as_corrupt_not_a_panic() {
    let mut h = SqliteHarness::new();
    let store = h.open_sqlite();
    let k = policy("baseline");
    store.write(put(&k, json!({"v": 1}), T0)).unwrap();
    store.write(put(&policy("other"), json!({"v": 1}), T0 + 1)).unwrap();

    let other = Connection::open(h.path()).unwrap();
    other.execute("UPDATE versions SET spec = '{not json' WHERE name = 'baseline'", []).unwrap();
    let expect_corrupt = |what: &str, result: Result<(), StoreError>| match result {
        Err(StoreError::Corrupt(message)) => {
            assert!(message.contains("versions row") && message.contains("`spec`"), "{what}: {message}");
        }
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    };
    expect_corrupt("get", store.get(&k).map(drop));
    expect_corrupt("list", store.list(&ListFilter::default()).map(drop));
    expect_corrupt("history", store.history(&k).map(drop));
    expect_corrupt("changes", store.changes(0, 10).map(drop));
    assert!(store.get(&policy("other")).unwrap().is_some(), "other objects still read");
    // A write reads the current version's identity, not its content: it replaces the corrupt
    // version, and the history still says which row is corrupt.
    store.write(put(&k, json!({"v": 2}), T0 + 2)).unwrap();
    assert_eq!(store.get(&k).unwrap().unwrap().spec, json!({"v": 2}));
    expect_corrupt("history after a new version", store.history(&k).map(drop));

    other.execute("UPDATE versions SET spec = '{}', kind = 'Gadget' WHERE name = 'baseline'", []).unwrap();
    match store.changes(0, 10) {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("`kind`"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }

    other.execute("UPDATE meta SET value = 'soon' WHERE key = 'clock'", []).unwrap();
    assert!(matches!(store.clock(), Err(StoreError::Corrupt(_))));
}

#[test]
fn a_corrupt_context_or_link_is_reported_as_corrupt() {
    let mut h = SqliteHarness::new();
    let store = h.open_sqlite();
    let k = policy("baseline");
    store.write(put(&k, json!({"v": 1}), T0)).unwrap();
    let peer = site("region-a-control");
    let record = store::LinkRecord {
        peer: peer.clone(),
        cursor: 1,
        peer_scopes: [Scope::new("region-a").unwrap()].into_iter().collect(),
        last_sync_ms: Some(T0),
        signal: "up".into(),
        peer_sites: Vec::new(),
    };
    store.save_link(&record).unwrap();

    let other = Connection::open(h.path()).unwrap();
    other.execute("UPDATE objects SET context = '{\"edge-zone-a1\": -1}'", []).unwrap();
    match store.get(&k) {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("`context`"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    other.execute("UPDATE links SET peer_scopes = '[\"Not A Scope\"]'", []).unwrap();
    match store.link(&peer) {
        Err(StoreError::Corrupt(message)) => assert!(message.contains("`peer_scopes`"), "{message}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn the_audit_log_cannot_be_rewritten() {
    let mut h = SqliteHarness::new();
    let store = h.open_sqlite();
    store.write(put(&policy("baseline"), json!({}), T0)).unwrap();
    let other = Connection::open(h.path()).unwrap();
    let err = other.execute("UPDATE audit SET actor = 'mallory'", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    assert!(other.execute("DELETE FROM audit", []).is_err());
    assert_eq!(store.audit(0, 10).unwrap()[0].record.actor, "alice");
}

/// Writers and readers on several threads: every write commits once, with its own sequence
/// number and timestamp, and readers never fail with a busy database.
#[test]
fn concurrent_writers_and_readers_share_one_store() {
    let mut h = SqliteHarness::new();
    let store = Arc::new(h.open_sqlite());
    let threads = 4;
    let per_thread = 15;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..per_thread {
                    let k = policy(&format!("t{t}-{i}"));
                    let c = store.write(put(&k, json!({"t": t, "i": i}), T0)).unwrap();
                    seqs.push((c.seq, c.object.version.hlc));
                    assert_eq!(store.get(&k).unwrap().unwrap().version, c.object.version, "read your write");
                    store.list(&ListFilter::default()).unwrap();
                }
                seqs
            })
        })
        .collect();
    let mut all: Vec<_> = handles.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort();
    assert_eq!(all.len(), threads * per_thread);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
        "unique seqs and timestamps, in one order"
    );
    assert_eq!(store.last_seq().unwrap(), all[all.len() - 1].0);
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), threads * per_thread);
}

/// A cleanly closed store is one self-contained file (the WAL is checkpointed into it), so an
/// operator can copy it as a backup.
#[test]
fn a_closed_store_is_one_file() {
    let mut h = SqliteHarness::new();
    let path = h.path();
    let store = h.open_sqlite();
    store.write(put(&policy("baseline"), json!({"v": 1}), T0)).unwrap();
    store.get(&policy("baseline")).unwrap();
    drop(store);
    let files: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec!["site.db".to_owned()]);
    let copy = Connection::open(&path).unwrap();
    let versions: i64 = copy.query_row("SELECT COUNT(*) FROM versions", [], |r| r.get(0)).unwrap();
    assert_eq!(versions, 1);
}

/// A backlog of 10,000 changes waiting for a link, mostly rewrites (one object rewritten 5,000
/// times, 1,000 objects 5 times each): a link batch and the debt cost an index lookup per
/// change, not a walk through the object's history per change.
#[test]
fn link_queries_stay_fast_with_a_large_backlog() {
    let mut h = SqliteHarness::new();
    let store = h.open_sqlite();
    let (region, edge) = (site("region-a-control"), site("edge-zone-a2"));
    let version = |key: &ObjectKey, n: u64, wall: u64| {
        let spec = json!({"n": n});
        let labels = BTreeMap::new();
        let mut vv = VersionVector::new();
        for _ in 0..n {
            vv.increment(&edge);
        }
        RemoteVersion {
            key: key.clone(),
            version: Version {
                hlc: Hlc::new(wall, 0),
                origin: edge.clone(),
                vv,
                author: "bot".into(),
                content_hash: ContentHash::of(key, &labels, &spec, false),
                deleted: false,
            },
            labels,
            spec: model::SpecText::of(&spec),
        }
    };
    let hot = policy("hot");
    let mut versions: Vec<RemoteVersion> = (1..=5_000).map(|n| version(&hot, n, T0 + n)).collect();
    for round in 1..=5 {
        for i in 0..1_000 {
            versions.push(version(&policy(&format!("p-{i}")), round, T0 + 5_000 + round * 1_000 + i));
        }
    }
    let now = T0 + 20_000;
    let started = Instant::now();
    for chunk in versions.chunks(1_000) {
        let report = store.apply_remote(&region, chunk, now, &store::LastWriteWins).unwrap();
        assert_eq!(report.applied, chunk.len());
    }
    let applying = started.elapsed();

    let q = LinkQuery { after: 0, peer: site("global-control"), scopes: None };
    let started = Instant::now();
    let debt = store.link_debt(&q).unwrap();
    let debt_took = started.elapsed();
    assert_eq!(debt.pending, 1_001, "the final state: one version per object");
    assert_eq!(debt.oldest_ms, Some(now));

    let started = Instant::now();
    let mut cursor = 0;
    let mut sent = 0;
    loop {
        let batch = store.changes_for_link(&LinkQuery { after: cursor, ..q.clone() }, 400).unwrap();
        sent += batch.changes.len();
        cursor = batch.scanned_to;
        if batch.changes.len() < 400 {
            break;
        }
    }
    let batches_took = started.elapsed();
    assert_eq!(sent, 1_001);
    assert_eq!(cursor, 10_000);
    eprintln!("apply 10k: {applying:?}, debt: {debt_took:?}, batches: {batches_took:?}");
    // Quadratic work (12.5 million history rows for the hot object) takes many seconds.
    let bound = Duration::from_secs(2);
    assert!(debt_took < bound && batches_took < bound, "debt {debt_took:?}, batches {batches_took:?}");
}
