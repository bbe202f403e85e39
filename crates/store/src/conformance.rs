//! The conformance suite every [`Store`] backend passes, written against the trait only.
//!
//! A backend provides a [`Harness`]: something that can make a fresh, empty store and reopen
//! the same durable store (a restart). Then either call [`run_all`] from one test, or expand
//! [`conformance_tests!`](crate::conformance_tests) in a test module to get one `#[test]` per
//! case plus the model-based test:
//!
//! ```ignore
//! mod conformance {
//!     store::conformance_tests!(store::conformance::SqliteHarness::new());
//! }
//! ```
//!
//! Each case starts with [`Harness::reset`], so cases are independent and run in any order.
//! The replication cases (applying peers' versions, link batches, debt, digests, link records)
//! build remote versions as a peer would have stamped them; they assume the harness's maximum
//! clock skew is between a second and a day. The conflict cases (detection under each strategy,
//! resolution, acknowledgement, the event log, webhook deliveries) use [`TestPolicy`] as the
//! sync engine's conflict policy. [`model_based`] runs random sequences of writes, deletes,
//! versions from peers and restarts against a `BTreeMap` model, on a fresh store per generated
//! sequence; [`conflicts_converge_whatever_the_interleaving`] delivers generated concurrent
//! histories in random interleavings to fresh stores and compares what they end with.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use model::{ContentHash, Hlc, Kind, ObjectKey, ObjectName, Scope, SiteId, StoredObject, VersionId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

use crate::{
    AuditRecord, Committed, ListFilter, LocalWrite, MAX_PAGE, Precondition, SqliteStore, Store, WriteError,
};

mod conflicts;
mod nodes;
mod replication;
pub use conflicts::*;
pub use nodes::*;
pub use replication::*;

/// What a backend provides to run the suite.
pub trait Harness {
    /// Makes the next [`open`](Harness::open) give a new, empty store (a new directory, a new
    /// database, truncated tables…). Every case calls it first.
    fn reset(&mut self);

    /// Opens the store made by the last [`reset`](Harness::reset) (or a new one if there was
    /// none); called again, it reopens the same durable store, as a restarted site would. The
    /// caller drops the store it opened before, first.
    fn open(&mut self) -> Box<dyn Store>;
}

/// A [`Harness`] for [`SqliteStore`]: each reset makes a new temporary directory, removed when
/// the harness is dropped.
#[derive(Debug)]
pub struct SqliteHarness {
    site: SiteId,
    max_clock_skew_ms: u64,
    dir: Option<tempfile::TempDir>,
}

impl SqliteHarness {
    /// A harness for the site `edge-zone-a1`.
    pub fn new() -> Self {
        Self::for_site(SiteId::new("edge-zone-a1").expect("a valid site id"))
    }

    pub fn for_site(site: SiteId) -> Self {
        Self { site, max_clock_skew_ms: 60_000, dir: None }
    }

    pub fn site(&self) -> &SiteId {
        &self.site
    }

    /// The store's file (its directory exists from the first call on).
    pub fn path(&mut self) -> PathBuf {
        self.dir.get_or_insert_with(new_dir).path().join("site.db")
    }

    /// Opens the store as a [`SqliteStore`] (for backend-specific tests).
    pub fn open_sqlite(&mut self) -> SqliteStore {
        let path = self.path();
        SqliteStore::open(&path, self.site.clone(), self.max_clock_skew_ms)
            .unwrap_or_else(|e| panic!("opening {}: {e} ({e:?})", path.display()))
    }
}

impl Default for SqliteHarness {
    fn default() -> Self {
        Self::new()
    }
}

fn new_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("souverix-store-")
        .tempdir()
        .expect("a temporary directory for a test store")
}

impl Harness for SqliteHarness {
    fn reset(&mut self) {
        self.dir = Some(new_dir());
    }

    fn open(&mut self) -> Box<dyn Store> {
        Box::new(self.open_sqlite())
    }
}

/// One case of the suite.
pub type Case = fn(&mut dyn Harness);

/// Every case of the suite, by name ([`model_based`] and
/// [`conflicts_converge_whatever_the_interleaving`] are separate: they are much longer).
pub const CASES: &[(&str, Case)] = &[
    ("put_then_get_returns_what_was_written", put_then_get_returns_what_was_written),
    ("update_bumps_the_version_and_keeps_created", update_bumps_the_version_and_keeps_created),
    ("stale_if_match_fails_and_changes_nothing", stale_if_match_fails_and_changes_nothing),
    ("if_match_of_the_current_version_applies", if_match_of_the_current_version_applies),
    (
        "absent_precondition_holds_only_for_missing_or_deleted",
        absent_precondition_holds_only_for_missing_or_deleted,
    ),
    ("delete_writes_a_tombstone_that_lists_hide", delete_writes_a_tombstone_that_lists_hide),
    ("delete_of_a_missing_object_is_not_found", delete_of_a_missing_object_is_not_found),
    ("if_match_never_matches_a_tombstone", if_match_never_matches_a_tombstone),
    (
        "recreate_after_delete_continues_the_version_vector",
        recreate_after_delete_continues_the_version_vector,
    ),
    ("change_log_has_one_entry_per_accepted_version", change_log_has_one_entry_per_accepted_version),
    ("audit_log_records_applied_writes", audit_log_records_applied_writes),
    ("audit_pages_and_tail", audit_pages_and_tail),
    ("list_filters_and_pages_in_key_order", list_filters_and_pages_in_key_order),
    ("limits_clamp_to_a_page", limits_clamp_to_a_page),
    ("clock_never_goes_backwards_across_reopen", clock_never_goes_backwards_across_reopen),
    ("data_survives_reopen", data_survives_reopen),
    ("equal_content_hashes_equal", equal_content_hashes_equal),
    ("concurrent_writes_are_durable_and_refused_alone", concurrent_writes_are_durable_and_refused_alone),
    (
        "a_batch_of_writes_is_durable_and_refused_one_by_one",
        a_batch_of_writes_is_durable_and_refused_one_by_one,
    ),
    ("apply_remote_stores_a_peers_version", apply_remote_stores_a_peers_version),
    (
        "a_batch_applied_twice_changes_nothing_the_second_time",
        a_batch_applied_twice_changes_nothing_the_second_time,
    ),
    (
        "a_dominating_remote_version_becomes_current_and_merges_the_context",
        a_dominating_remote_version_becomes_current_and_merges_the_context,
    ),
    (
        "an_older_remote_version_goes_to_history_not_current",
        an_older_remote_version_goes_to_history_not_current,
    ),
    ("concurrent_versions_converge_whatever_the_order", concurrent_versions_converge_whatever_the_order),
    ("a_local_write_after_a_remote_version_follows_it", a_local_write_after_a_remote_version_follows_it),
    (
        "a_batch_beyond_the_clock_skew_is_refused_and_changes_nothing",
        a_batch_beyond_the_clock_skew_is_refused_and_changes_nothing,
    ),
    ("changes_for_link_does_not_echo_and_filters_scopes", changes_for_link_does_not_echo_and_filters_scopes),
    (
        "superseded_versions_from_the_same_origin_are_skipped",
        superseded_versions_from_the_same_origin_are_skipped,
    ),
    ("scanned_to_advances_past_skipped_changes", scanned_to_advances_past_skipped_changes),
    ("link_debt_counts_what_the_link_would_carry", link_debt_counts_what_the_link_would_carry),
    ("digest_entries_and_has_version", digest_entries_and_has_version),
    (
        "current_for_link_leaves_out_what_the_link_still_carries",
        current_for_link_leaves_out_what_the_link_still_carries,
    ),
    ("remote_tombstones_delete_and_recreate", remote_tombstones_delete_and_recreate),
    ("links_round_trip_across_reopen", links_round_trip_across_reopen),
    (
        "concurrent_versions_conflict_alike_in_either_order",
        concurrent_versions_conflict_alike_in_either_order,
    ),
    (
        "manual_keeps_the_last_write_candidate_with_an_open_conflict",
        manual_keeps_the_last_write_candidate_with_an_open_conflict,
    ),
    (
        "authority_wins_picks_the_higher_authority_even_when_older",
        authority_wins_picks_the_higher_authority_even_when_older,
    ),
    (
        "a_later_version_following_both_sides_resolves_an_open_conflict",
        a_later_version_following_both_sides_resolves_an_open_conflict,
    ),
    (
        "a_local_write_resolves_the_open_conflicts_of_its_object",
        a_local_write_resolves_the_open_conflicts_of_its_object,
    ),
    ("acknowledge_marks_an_open_conflict_once", acknowledge_marks_an_open_conflict_once),
    ("a_duplicate_delivery_records_nothing_twice", a_duplicate_delivery_records_nothing_twice),
    ("events_log_in_order_and_page", events_log_in_order_and_page),
    ("webhook_deliveries_and_cursors_round_trip", webhook_deliveries_and_cursors_round_trip),
    ("link_peer_sites_round_trip_across_reopen", link_peer_sites_round_trip_across_reopen),
    ("conflicts_list_newest_first_and_filter", conflicts_list_newest_first_and_filter),
    ("a_heartbeat_registers_then_updates_a_node", a_heartbeat_registers_then_updates_a_node),
    ("nodes_page_in_id_order", nodes_page_in_id_order),
];

/// Runs every case of [`CASES`] in turn (not the property tests).
pub fn run_all(h: &mut dyn Harness) {
    for (name, case) in CASES {
        eprintln!("store conformance: {name}");
        case(h);
    }
}

/// Expands to one `#[test]` per conformance case, plus `model_based` and
/// `conflicts_converge_whatever_the_interleaving`, each running against a
/// harness made by evaluating `$harness` (an expression of a type implementing
/// [`Harness`](crate::conformance::Harness)). Put it in its own module.
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@cases ($harness) [
            put_then_get_returns_what_was_written,
            update_bumps_the_version_and_keeps_created,
            stale_if_match_fails_and_changes_nothing,
            if_match_of_the_current_version_applies,
            absent_precondition_holds_only_for_missing_or_deleted,
            delete_writes_a_tombstone_that_lists_hide,
            delete_of_a_missing_object_is_not_found,
            if_match_never_matches_a_tombstone,
            recreate_after_delete_continues_the_version_vector,
            change_log_has_one_entry_per_accepted_version,
            audit_log_records_applied_writes,
            audit_pages_and_tail,
            list_filters_and_pages_in_key_order,
            limits_clamp_to_a_page,
            clock_never_goes_backwards_across_reopen,
            data_survives_reopen,
            equal_content_hashes_equal,
            concurrent_writes_are_durable_and_refused_alone,
            a_batch_of_writes_is_durable_and_refused_one_by_one,
            apply_remote_stores_a_peers_version,
            a_batch_applied_twice_changes_nothing_the_second_time,
            a_dominating_remote_version_becomes_current_and_merges_the_context,
            an_older_remote_version_goes_to_history_not_current,
            concurrent_versions_converge_whatever_the_order,
            a_local_write_after_a_remote_version_follows_it,
            a_batch_beyond_the_clock_skew_is_refused_and_changes_nothing,
            changes_for_link_does_not_echo_and_filters_scopes,
            superseded_versions_from_the_same_origin_are_skipped,
            scanned_to_advances_past_skipped_changes,
            link_debt_counts_what_the_link_would_carry,
            digest_entries_and_has_version,
            current_for_link_leaves_out_what_the_link_still_carries,
            remote_tombstones_delete_and_recreate,
            links_round_trip_across_reopen,
            concurrent_versions_conflict_alike_in_either_order,
            manual_keeps_the_last_write_candidate_with_an_open_conflict,
            authority_wins_picks_the_higher_authority_even_when_older,
            a_later_version_following_both_sides_resolves_an_open_conflict,
            a_local_write_resolves_the_open_conflicts_of_its_object,
            acknowledge_marks_an_open_conflict_once,
            a_duplicate_delivery_records_nothing_twice,
            events_log_in_order_and_page,
            webhook_deliveries_and_cursors_round_trip,
            link_peer_sites_round_trip_across_reopen,
            conflicts_list_newest_first_and_filter,
            a_heartbeat_registers_then_updates_a_node,
            nodes_page_in_id_order,
        ]);

        #[test]
        fn model_based() {
            let mut harness = $harness;
            $crate::conformance::model_based(&mut harness);
        }

        #[test]
        fn conflicts_converge_whatever_the_interleaving() {
            let mut harness = $harness;
            $crate::conformance::conflicts_converge_whatever_the_interleaving(&mut harness);
        }
    };
    (@cases ($harness:expr) [$($case:ident),* $(,)?]) => {
        $(
            #[test]
            fn $case() {
                let mut harness = $harness;
                $crate::conformance::$case(&mut harness);
            }
        )*

        /// Guards against a case added to `CASES` but not to the macro.
        #[test]
        fn macro_covers_every_case() {
            let expanded: &[&str] = &[$(stringify!($case)),*];
            let cases: ::std::vec::Vec<&str> =
                $crate::conformance::CASES.iter().map(|(name, _)| *name).collect();
            assert_eq!(expanded, cases.as_slice(), "conformance_tests! must list every case of CASES");
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A physical time in the suite's writes (late 2025).
const T0: u64 = 1_764_000_000_000;

fn key(kind: Kind, scope: &str, name: &str) -> ObjectKey {
    ObjectKey::new(
        kind,
        Scope::new(scope).expect("a valid scope"),
        ObjectName::new(name).expect("a valid object name"),
    )
}

fn policy(name: &str) -> ObjectKey {
    key(Kind::Policy, "global", name)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn put(key: &ObjectKey, spec: serde_json::Value, now_ms: u64) -> LocalWrite {
    LocalWrite {
        key: key.clone(),
        labels: labels(&[("team", "platform")]),
        spec,
        deleted: false,
        author: "alice".to_owned(),
        precondition: None,
        now_ms,
    }
}

fn delete(key: &ObjectKey, now_ms: u64) -> LocalWrite {
    LocalWrite {
        key: key.clone(),
        labels: BTreeMap::new(),
        spec: serde_json::Value::Null,
        deleted: true,
        author: "bob".to_owned(),
        precondition: None,
        now_ms,
    }
}

fn if_match(mut write: LocalWrite, version: VersionId) -> LocalWrite {
    write.precondition = Some(Precondition::Version(version));
    write
}

fn if_absent(mut write: LocalWrite) -> LocalWrite {
    write.precondition = Some(Precondition::Absent);
    write
}

fn apply(store: &dyn Store, write: LocalWrite) -> Committed {
    let what = format!("{} of {}", if write.deleted { "delete" } else { "put" }, write.key);
    store.write(write).unwrap_or_else(|e| panic!("{what} must apply: {e} ({e:?})"))
}

fn refuse(store: &dyn Store, write: LocalWrite) -> WriteError {
    let what = format!("{} of {}", if write.deleted { "delete" } else { "put" }, write.key);
    match store.write(write) {
        Ok(c) => panic!("{what} must be refused, but it committed {c:?}"),
        Err(e) => e,
    }
}

fn get(store: &dyn Store, key: &ObjectKey) -> Option<StoredObject> {
    store.get(key).unwrap_or_else(|e| panic!("get {key}: {e} ({e:?})"))
}

fn must_get(store: &dyn Store, key: &ObjectKey) -> StoredObject {
    get(store, key).unwrap_or_else(|| panic!("{key} must exist"))
}

fn list(store: &dyn Store, filter: &ListFilter) -> Vec<StoredObject> {
    store.list(filter).unwrap_or_else(|e| panic!("list {filter:?}: {e} ({e:?})"))
}

fn list_keys(store: &dyn Store, filter: &ListFilter) -> Vec<ObjectKey> {
    list(store, filter).into_iter().map(|o| o.key).collect()
}

fn history_ids(store: &dyn Store, key: &ObjectKey) -> Vec<VersionId> {
    store
        .history(key)
        .unwrap_or_else(|e| panic!("history of {key}: {e} ({e:?})"))
        .into_iter()
        .map(|h| h.version.id())
        .collect()
}

fn all_changes(store: &dyn Store) -> Vec<crate::Change> {
    store.changes(0, MAX_PAGE).unwrap_or_else(|e| panic!("changes: {e} ({e:?})"))
}

fn all_audit(store: &dyn Store) -> Vec<crate::AuditEntry> {
    store.audit(0, MAX_PAGE).unwrap_or_else(|e| panic!("audit: {e} ({e:?})"))
}

fn record(actor: &str, n: usize) -> AuditRecord {
    AuditRecord {
        at_ms: T0 + n as u64,
        actor: actor.to_owned(),
        action: "login".to_owned(),
        key: None,
        version: None,
        outcome: "applied".to_owned(),
        detail: format!("entry {n}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Cases

/// A put is read back exactly, stamped by this site, and an unknown object has no version and
/// no history.
pub fn put_then_get_returns_what_was_written(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let k = policy("baseline");
    assert_eq!(get(store, &k), None, "a new store holds nothing");
    assert!(history_ids(store, &k).is_empty());
    assert_eq!(store.clock().expect("clock"), Hlc::ZERO, "a new store's clock starts at zero");

    let spec = json!({"rules": [{"port": 22, "allow": false}], "mode": "enforce"});
    let mut write = put(&k, spec.clone(), T0);
    write.labels = labels(&[("team", "platform"), ("tier", "1")]);
    let committed = apply(store, write.clone());
    assert!(committed.created, "the first write creates the object");
    assert!(committed.seq > 0);

    let got = must_get(store, &k);
    assert_eq!(got, committed.object, "get returns what the write committed");
    assert_eq!(got.key, k);
    assert_eq!(got.spec, spec);
    assert_eq!(got.labels, write.labels);
    let v = &got.version;
    assert_eq!(&v.origin, store.site(), "a local write's origin is this site");
    assert_eq!(v.author, "alice");
    assert!(!v.deleted);
    assert_eq!(v.hlc, Hlc::new(T0, 0), "the first tick at physical time T0");
    assert_eq!(v.vv.get(store.site()), 1);
    assert_eq!(v.vv.entries().count(), 1, "only this site has written it: {:?}", v.vv);
    assert_eq!(v.content_hash, ContentHash::of(&k, &write.labels, &spec, false));
    assert_eq!(got.created, v.hlc, "created is the first version's timestamp");
    assert_eq!(history_ids(store, &k), vec![v.id()]);
    assert_eq!(store.clock().expect("clock"), v.hlc, "the clock persists the last timestamp");
    assert_eq!(get(store, &policy("other")), None);
}

/// A second write is a new version: later timestamp, this site's counter bumped, same
/// `created`, and the history keeps both, oldest first.
pub fn update_bumps_the_version_and_keeps_created(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let k = policy("baseline");
    let first = apply(store, put(&k, json!({"v": 1}), T0));
    let second = apply(store, put(&k, json!({"v": 2}), T0 + 1_000));
    assert!(!second.created, "an update does not create");
    assert!(second.seq > first.seq);
    let got = must_get(store, &k);
    assert_eq!(got.spec, json!({"v": 2}));
    assert!(got.version.hlc > first.object.version.hlc);
    assert_ne!(got.version.id(), first.object.version.id());
    assert_eq!(got.version.vv.get(store.site()), 2);
    assert_eq!(got.created, first.object.created, "created stays the first version's timestamp");
    assert_ne!(got.version.content_hash, first.object.version.content_hash);

    let history = store.history(&k).expect("history");
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].spec, json!({"v": 1}), "oldest first");
    assert_eq!(history[0].version, first.object.version);
    assert_eq!(history[0].seq, first.seq);
    assert_eq!(history[1].spec, json!({"v": 2}));
    assert_eq!(history[1].version, second.object.version);
    assert_eq!(history[1].seq, second.seq);
}

/// `If-Match` with a version that is no longer current fails, names both versions, changes no
/// object, history or change log, and is audited.
pub fn stale_if_match_fails_and_changes_nothing(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let k = policy("baseline");
    let first = apply(store, put(&k, json!({"v": 1}), T0));
    let second = apply(store, put(&k, json!({"v": 2}), T0 + 1));
    let before = (get(store, &k), store.history(&k).expect("history"), all_changes(store));
    let audit_before = all_audit(store).len();

    let stale = first.object.version.id();
    match refuse(store, if_match(put(&k, json!({"v": 3}), T0 + 2), stale.clone())) {
        WriteError::PreconditionFailed { key, expected, current } => {
            assert_eq!(key, k);
            assert_eq!(expected, stale.to_string());
            assert_eq!(current, second.object.version.id().to_string());
        }
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
    let after = (get(store, &k), store.history(&k).expect("history"), all_changes(store));
    assert_eq!(after, before, "a refused write changes no object, history or change log");
    assert_eq!(store.last_seq().expect("last_seq"), second.seq);

    let audit = all_audit(store);
    assert_eq!(audit.len(), audit_before + 1, "the refusal is audited");
    let entry = &audit[audit.len() - 1].record;
    assert_eq!(entry.outcome, "precondition-failed");
    assert_eq!(entry.actor, "alice");
    assert_eq!(entry.action, "put");
    assert_eq!(entry.key.as_ref(), Some(&k));
    assert!(
        entry.detail.contains(&stale.to_string())
            && entry.detail.contains(&second.object.version.id().to_string()),
        "the audit detail names the expected and the found version: {}",
        entry.detail
    );
}

/// `If-Match` with the current version applies, for a put and for a delete.
pub fn if_match_of_the_current_version_applies(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let k = policy("baseline");
    let first = apply(store, put(&k, json!({"v": 1}), T0));
    let second = apply(store, if_match(put(&k, json!({"v": 2}), T0 + 1), first.object.version.id()));
    assert_eq!(must_get(store, &k).spec, json!({"v": 2}));
    apply(store, if_match(delete(&k, T0 + 2), second.object.version.id()));
    assert!(must_get(store, &k).version.deleted);
    match refuse(store, if_match(put(&k, json!({"v": 9}), T0 + 3), first.object.version.id())) {
        WriteError::PreconditionFailed { .. } => {}
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
}

/// `If-None-Match: *` creates a missing object, fails on a live one (naming its version), and
/// re-creates a deleted one.
pub fn absent_precondition_holds_only_for_missing_or_deleted(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let k = policy("baseline");
    let first = apply(store, if_absent(put(&k, json!({"v": 1}), T0)));
    assert!(first.created);
    match refuse(store, if_absent(put(&k, json!({"v": 2}), T0 + 1))) {
        WriteError::PreconditionFailed { expected, current, .. } => {
            assert_eq!(expected, "none");
            assert_eq!(current, first.object.version.id().to_string());
        }
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
    assert_eq!(must_get(store, &k).spec, json!({"v": 1}), "the refused write changed nothing");
    apply(store, delete(&k, T0 + 2));
    let again = apply(store, if_absent(put(&k, json!({"v": 3}), T0 + 3)));
    assert!(again.created, "a deleted object counts as absent");
    assert_eq!(must_get(store, &k).spec, json!({"v": 3}));
}

/// A delete writes a tombstone: `get` shows it deleted, listings hide it unless asked, and the
/// history keeps every version.
pub fn delete_writes_a_tombstone_that_lists_hide(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let k = policy("baseline");
    let other = policy("other");
    let first = apply(store, put(&k, json!({"v": 1}), T0));
    apply(store, put(&other, json!({}), T0 + 1));
    let tomb = apply(store, delete(&k, T0 + 2));
    assert!(!tomb.created);

    let got = must_get(store, &k);
    assert!(got.version.deleted, "get shows the tombstone");
    assert_eq!(got, tomb.object);
    assert_eq!(&got.version.origin, store.site());
    assert_eq!(got.version.author, "bob");
    assert_eq!(got.version.vv.get(store.site()), 2, "a delete is a version too");
    assert_eq!(got.created, first.object.created);

    assert_eq!(list_keys(store, &ListFilter::default()), vec![other.clone()], "lists hide tombstones");
    let with_deleted = ListFilter { include_deleted: true, ..ListFilter::default() };
    assert_eq!(list_keys(store, &with_deleted), vec![k.clone(), other.clone()]);

    let history = store.history(&k).expect("history");
    assert_eq!(history.len(), 2, "history keeps every version");
    assert!(!history[0].version.deleted);
    assert_eq!(history[0].spec, json!({"v": 1}));
    assert!(history[1].version.deleted);
    assert_eq!(history[1].version, tomb.object.version);
}

/// Deleting an object that never existed, or was already deleted, is `NotFound`, changes
/// nothing and is audited as `not-found`.
pub fn delete_of_a_missing_object_is_not_found(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let missing = policy("missing");
    match refuse(store, delete(&missing, T0)) {
        WriteError::NotFound { key } => assert_eq!(key, missing),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(get(store, &missing), None, "no tombstone for an object that never existed");
    assert!(all_changes(store).is_empty());
    assert_eq!(store.last_seq().expect("last_seq"), 0);

    let k = policy("baseline");
    apply(store, put(&k, json!({}), T0 + 1));
    let tomb = apply(store, delete(&k, T0 + 2));
    match refuse(store, delete(&k, T0 + 3)) {
        WriteError::NotFound { key } => assert_eq!(key, k),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(must_get(store, &k), tomb.object, "the tombstone stays as it was");
    assert_eq!(history_ids(store, &k).len(), 2);

    let audit = all_audit(store);
    let outcomes: Vec<(&str, &str)> =
        audit.iter().map(|e| (e.record.action.as_str(), e.record.outcome.as_str())).collect();
    assert_eq!(
        outcomes,
        vec![("delete", "not-found"), ("put", "applied"), ("delete", "applied"), ("delete", "not-found")]
    );
    assert_eq!(audit[0].record.key.as_ref(), Some(&missing));
}

/// `If-Match` never matches a deleted object, not even with the tombstone's own version: the
/// error says it is deleted.
pub fn if_match_never_matches_a_tombstone(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let k = policy("baseline");
    let live = apply(store, put(&k, json!({"v": 1}), T0));
    let tomb = apply(store, delete(&k, T0 + 1));
    for version in [tomb.object.version.id(), live.object.version.id()] {
        match refuse(store, if_match(put(&k, json!({"v": 2}), T0 + 2), version.clone())) {
            WriteError::PreconditionFailed { expected, current, .. } => {
                assert_eq!(expected, version.to_string());
                assert_eq!(current, format!("deleted ({})", tomb.object.version.id()));
            }
            other => panic!("expected PreconditionFailed, got {other:?}"),
        }
    }
    assert_eq!(must_get(store, &k), tomb.object);
}

/// Re-creating a deleted object continues its version vector (so peers see the re-creation
/// supersede the delete) and starts a new `created`.
pub fn recreate_after_delete_continues_the_version_vector(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let k = policy("baseline");
    let first = apply(store, put(&k, json!({"v": 1}), T0));
    apply(store, delete(&k, T0 + 1));
    let again = apply(store, put(&k, json!({"v": 2}), T0 + 2));
    assert!(again.created, "re-creating a deleted object counts as created");
    let got = must_get(store, &k);
    assert!(!got.version.deleted);
    assert_eq!(got.version.vv.get(store.site()), 3, "the counter continues after the tombstone");
    assert_eq!(got.created, got.version.hlc, "a re-created object has a new created");
    assert!(got.created > first.object.created);
    assert_eq!(history_ids(store, &k).len(), 3);
}

/// The change log holds one entry per accepted version, with increasing sequence numbers,
/// their content, and no origin link for local writes; refusals add nothing; paging works.
pub fn change_log_has_one_entry_per_accepted_version(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    assert_eq!(store.last_seq().expect("last_seq"), 0, "an empty change log ends at 0");
    assert!(all_changes(store).is_empty());
    let a = policy("a");
    let b = key(Kind::Release, "region-a", "b");
    let mut committed = vec![
        apply(store, put(&a, json!({"v": 1}), T0)),
        apply(store, put(&b, json!({"v": 1}), T0 + 1)),
        apply(store, put(&a, json!({"v": 2}), T0 + 2)),
    ];
    let _ = refuse(store, if_absent(put(&a, json!({"v": 9}), T0 + 3)));
    let _ = refuse(store, delete(&policy("missing"), T0 + 4));
    committed.push(apply(store, delete(&b, T0 + 5)));

    let changes = all_changes(store);
    assert_eq!(changes.len(), committed.len(), "one entry per accepted version, none for refusals");
    for (change, c) in changes.iter().zip(&committed) {
        assert_eq!(change.seq, c.seq);
        assert_eq!(change.key, c.object.key);
        assert_eq!(change.version, c.object.version);
        assert_eq!(change.labels, c.object.labels);
        assert_eq!(change.spec, c.object.spec);
        assert_eq!(change.from_site, None, "a local write arrived on no link");
    }
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq), "seq increases");
    let last = committed[committed.len() - 1].seq;
    assert_eq!(store.last_seq().expect("last_seq"), last);

    let page = store.changes(changes[0].seq, 2).expect("changes");
    assert_eq!(page, changes[1..3].to_vec(), "changes(after, limit) starts after `after`");
    assert!(store.changes(last, 10).expect("changes").is_empty());
    assert!(store.changes(u64::MAX, 10).expect("changes").is_empty(), "a position past the end is empty");
}

/// Every applied write is in the audit log: who, what, which object and version, the outcome.
pub fn audit_log_records_applied_writes(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let k = policy("baseline");
    let created = apply(store, put(&k, json!({"v": 1}), T0));
    let deleted = apply(store, delete(&k, T0 + 5));
    let audit = all_audit(store);
    assert_eq!(audit.len(), 2);
    let (put_entry, delete_entry) = (&audit[0].record, &audit[1].record);
    assert_eq!(put_entry.actor, "alice");
    assert_eq!(put_entry.action, "put");
    assert_eq!(put_entry.outcome, "applied");
    assert_eq!(put_entry.key.as_ref(), Some(&k));
    assert_eq!(put_entry.version.as_ref(), Some(&created.object.version.id()));
    assert_eq!(put_entry.at_ms, T0);
    assert_eq!(delete_entry.actor, "bob");
    assert_eq!(delete_entry.action, "delete");
    assert_eq!(delete_entry.outcome, "applied");
    assert_eq!(delete_entry.version.as_ref(), Some(&deleted.object.version.id()));
    assert_eq!(delete_entry.at_ms, T0 + 5);
    assert!(audit[0].seq < audit[1].seq);
}

/// Appended audit records come back as written; `audit(after, limit)` pages forward and
/// `audit_tail` returns the newest entries, oldest first.
pub fn audit_pages_and_tail(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    assert!(all_audit(store).is_empty());
    assert!(store.audit_tail(5).expect("audit_tail").is_empty());
    let mut seqs = Vec::new();
    for n in 0..7 {
        seqs.push(store.append_audit(record("carol", n)).expect("append_audit"));
    }
    let mut keyed = record("dave", 7);
    keyed.key = Some(policy("baseline"));
    keyed.version = Some("1764000000000.3@edge-zone-a1".parse().expect("a version id"));
    keyed.outcome = "refused".to_owned();
    seqs.push(store.append_audit(keyed.clone()).expect("append_audit"));
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "append_audit returns increasing seqs: {seqs:?}");

    let all = all_audit(store);
    assert_eq!(all.len(), 8);
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(all[0].record, record("carol", 0), "a record reads back as written");
    assert_eq!(all[7].record, keyed);

    let page = store.audit(seqs[2], 3).expect("audit");
    assert_eq!(page, all[3..6].to_vec(), "audit(after, limit) pages forward");
    assert!(store.audit(seqs[7], 3).expect("audit").is_empty());

    let tail = store.audit_tail(3).expect("audit_tail");
    assert_eq!(tail, all[5..8].to_vec(), "the newest three, oldest first");
    assert_eq!(store.audit_tail(100).expect("audit_tail"), all, "a tail longer than the log is all of it");
}

/// Listings are in (kind name, scope, name) order, filter by kind and scope, and page with
/// `after` and `limit` without gaps or repeats.
pub fn list_filters_and_pages_in_key_order(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let keys = [
        key(Kind::SiteStatus, "edge-zone-a1", "status"),
        key(Kind::Policy, "region-a", "b"),
        key(Kind::Rollout, "global", "r1"),
        key(Kind::Policy, "global", "z"),
        key(Kind::Release, "global", "v1.2.0"),
        key(Kind::Policy, "global", "a"),
        key(Kind::Policy, "global", "a-2"),
        key(Kind::Release, "region-a", "v1.10.0"),
    ];
    for (i, k) in keys.iter().enumerate() {
        apply(store, put(k, json!({"i": i}), T0 + i as u64));
    }
    apply(store, delete(&key(Kind::Policy, "global", "z"), T0 + 100));
    let ordered = vec![
        key(Kind::Policy, "global", "a"),
        key(Kind::Policy, "global", "a-2"),
        key(Kind::Policy, "global", "z"),
        key(Kind::Policy, "region-a", "b"),
        key(Kind::Release, "global", "v1.2.0"),
        key(Kind::Release, "region-a", "v1.10.0"),
        key(Kind::Rollout, "global", "r1"),
        key(Kind::SiteStatus, "edge-zone-a1", "status"),
    ];
    let live: Vec<ObjectKey> = ordered.iter().filter(|k| k.name.as_str() != "z").cloned().collect();
    assert_eq!(list_keys(store, &ListFilter::default()), live, "ordered by kind, scope, name");
    let all = ListFilter { include_deleted: true, ..ListFilter::default() };
    assert_eq!(list_keys(store, &all), ordered);

    let policies = ListFilter { kind: Some(Kind::Policy), ..ListFilter::default() };
    assert_eq!(list_keys(store, &policies), live[..3].to_vec());
    let global = ListFilter { scope: Some(Scope::new("global").expect("scope")), ..ListFilter::default() };
    assert_eq!(
        list_keys(store, &global),
        vec![
            key(Kind::Policy, "global", "a"),
            key(Kind::Policy, "global", "a-2"),
            key(Kind::Release, "global", "v1.2.0"),
            key(Kind::Rollout, "global", "r1"),
        ]
    );
    let both = ListFilter {
        kind: Some(Kind::Release),
        scope: Some(Scope::new("region-a").expect("scope")),
        ..ListFilter::default()
    };
    assert_eq!(list_keys(store, &both), vec![key(Kind::Release, "region-a", "v1.10.0")]);

    // Page through everything, tombstones included, three at a time.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = list_keys(store, &ListFilter { after: after.clone(), limit: 3, ..all.clone() });
        assert!(page.len() <= 3, "a page holds at most `limit` objects");
        let Some(last) = page.last().cloned() else { break };
        paged.extend(page);
        after = Some(last);
    }
    assert_eq!(paged, ordered, "paging visits every object once, in order");
    // `after` need not be a stored key, and filters apply within a page.
    let after_missing = ListFilter {
        kind: Some(Kind::Policy),
        after: Some(key(Kind::Policy, "global", "b")),
        ..ListFilter::default()
    };
    assert_eq!(list_keys(store, &after_missing), vec![key(Kind::Policy, "region-a", "b")]);

    let objects = list(store, &ListFilter::default());
    for o in &objects {
        assert_eq!(Some(o), get(store, &o.key).as_ref(), "a listed object is its current version");
    }
}

/// A limit of 0 means a full page, a larger one is clamped to [`MAX_PAGE`], and `usize::MAX`
/// is not an error.
pub fn limits_clamp_to_a_page(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    for n in 0..MAX_PAGE + 5 {
        store.append_audit(record("eve", n)).expect("append_audit");
    }
    for limit in [0, MAX_PAGE + 1, usize::MAX] {
        assert_eq!(store.audit(0, limit).expect("audit").len(), MAX_PAGE, "audit limit {limit}");
        let tail = store.audit_tail(limit).expect("audit_tail");
        assert_eq!(tail.len(), MAX_PAGE, "audit_tail limit {limit}");
        assert_eq!(tail[MAX_PAGE - 1].record, record("eve", MAX_PAGE + 4), "the tail ends at the newest");
    }
    assert_eq!(store.audit(0, 1).expect("audit").len(), 1);

    let k = policy("baseline");
    apply(store, put(&k, json!({}), T0));
    apply(store, put(&k, json!({"v": 2}), T0 + 1));
    for limit in [0, usize::MAX] {
        assert_eq!(store.changes(0, limit).expect("changes").len(), 2, "changes limit {limit}");
        let filter = ListFilter { limit, ..ListFilter::default() };
        assert_eq!(list_keys(store, &filter), vec![k.clone()], "list limit {limit}");
    }
}

/// Timestamps of successive writes strictly increase even when physical time stands still or
/// goes back, and across a restart with physical time before the last write.
pub fn clock_never_goes_backwards_across_reopen(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let k = policy("baseline");
    let a = apply(store.as_ref(), put(&k, json!({"v": 1}), T0 + 10_000));
    let b = apply(store.as_ref(), put(&policy("other"), json!({}), T0 + 10_000));
    let c = apply(store.as_ref(), put(&k, json!({"v": 2}), T0 + 5_000));
    let (ta, tb, tc) = (a.object.version.hlc, b.object.version.hlc, c.object.version.hlc);
    assert!(ta < tb && tb < tc, "{ta} < {tb} < {tc}");
    assert_eq!(tc.wall_ms, T0 + 10_000, "a clock that went back does not pull timestamps back");
    assert_eq!(store.clock().expect("clock"), tc);

    drop(store);
    store = h.open();
    assert_eq!(store.clock().expect("clock"), tc, "the clock survives a restart");
    let d = apply(store.as_ref(), put(&k, json!({"v": 3}), T0));
    let td = d.object.version.hlc;
    assert!(td > tc, "after a restart with physical time in the past: {td} > {tc}");
    let e = apply(store.as_ref(), delete(&k, T0 + 20_000));
    assert_eq!(e.object.version.hlc, Hlc::new(T0 + 20_000, 0), "physical time ahead of the clock is taken");
    assert_eq!(store.clock().expect("clock"), e.object.version.hlc);

    let stamps: Vec<Hlc> = all_changes(store.as_ref()).iter().map(|c| c.version.hlc).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "change-log timestamps increase: {stamps:?}");
}

/// Objects, tombstones, history, the change log, the audit log and the clock are all there
/// after a restart, exactly as before.
pub fn data_survives_reopen(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let s = store.as_ref();
    let kept = policy("kept");
    let gone = key(Kind::Release, "region-a", "gone");
    apply(s, put(&kept, json!({"v": 1}), T0));
    apply(s, put(&kept, json!({"nested": {"list": [1, 2.5, "x", null, true]}}), T0 + 1));
    apply(s, put(&gone, json!({"v": 1}), T0 + 2));
    apply(s, delete(&gone, T0 + 3));
    let _ = refuse(s, delete(&gone, T0 + 4));
    s.append_audit(record("frank", 1)).expect("append_audit");

    let snapshot = |s: &dyn Store| {
        let all = ListFilter { include_deleted: true, ..ListFilter::default() };
        (
            (get(s, &kept), get(s, &gone), list(s, &all), list(s, &ListFilter::default())),
            (s.history(&kept).expect("history"), s.history(&gone).expect("history")),
            (all_changes(s), s.last_seq().expect("last_seq"), all_audit(s), s.clock().expect("clock")),
        )
    };
    let before = snapshot(s);
    assert_eq!(before.0.2.len(), 2);
    assert_eq!(before.2.2.len(), 6);

    drop(store);
    store = h.open();
    assert_eq!(snapshot(store.as_ref()), before, "everything reads back the same after a restart");
    let next = apply(store.as_ref(), put(&gone, json!({"v": 2}), T0 + 5));
    assert!(next.seq > before.2.1, "sequence numbers continue after a restart");
    assert_eq!(next.object.version.vv.get(store.site()), 3);
}

/// Many clients writing at once (a backend may commit them together): every accepted write is
/// acknowledged with its own version and survives a restart; a write refused by its own
/// precondition, or a delete of a missing object, is refused alone and audited, and changes
/// nothing, while the writes around it commit.
pub fn concurrent_writes_are_durable_and_refused_alone(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let clients = 16;
    let per_client = 12;
    let stale: VersionId = format!("{T0}.0@{}", store.site()).parse().expect("a version id");
    let mut accepted: Vec<Committed> = Vec::new();
    let mut refused = 0;
    std::thread::scope(|scope| {
        let s: &dyn Store = store.as_ref();
        let stale = &stale;
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                scope.spawn(move || {
                    let mut ok = Vec::new();
                    let mut bad = 0;
                    for i in 0..per_client {
                        let k = policy(&format!("c{c}-{i}"));
                        let now = T0 + 1 + i as u64;
                        match i % 4 {
                            // A stale precondition on an object that does not exist.
                            1 => {
                                match s.write(if_match(put(&k, json!({"c": c, "i": i}), now), stale.clone()))
                                {
                                    Err(WriteError::PreconditionFailed { .. }) => bad += 1,
                                    other => panic!("a stale If-Match must fail alone, got {other:?}"),
                                }
                            }
                            // A delete of an object that does not exist.
                            3 => match s.write(delete(&k, now)) {
                                Err(WriteError::NotFound { .. }) => bad += 1,
                                other => {
                                    panic!("a delete of a missing object must fail alone, got {other:?}")
                                }
                            },
                            _ => ok.push(apply(s, put(&k, json!({"c": c, "i": i}), now))),
                        }
                    }
                    (ok, bad)
                })
            })
            .collect();
        for task in tasks {
            let (ok, bad) = task.join().expect("a client thread");
            accepted.extend(ok);
            refused += bad;
        }
    });
    let good = clients * per_client / 2;
    assert_eq!(accepted.len(), good);
    assert_eq!(refused, clients * per_client - good);
    let mut seqs: Vec<u64> = accepted.iter().map(|c| c.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), good, "every accepted write has its own sequence number");

    drop(store);
    store = h.open();
    let s = store.as_ref();
    for committed in &accepted {
        assert_eq!(
            must_get(s, &committed.object.key).version,
            committed.object.version,
            "an acknowledged write survives a restart"
        );
    }
    let all = ListFilter { include_deleted: true, ..ListFilter::default() };
    assert_eq!(list(s, &all).len(), good, "refused writes left no object behind");
    assert_eq!(s.last_seq().expect("last_seq"), seqs[seqs.len() - 1]);
    let audit = all_audit(s);
    let outcomes = |outcome: &str| audit.iter().filter(|e| e.record.outcome == outcome).count();
    assert_eq!(outcomes("applied"), good);
    assert_eq!(outcomes("precondition-failed") + outcomes("not-found"), refused, "every refusal is audited");
}

/// A batch apply: every write gets its own outcome, in order; refused ones (a stale If-Match, a
/// delete of a missing object) change nothing and are audited; two writes of one object in the
/// same batch apply in order (the second sees the first); the accepted ones survive a restart.
pub fn a_batch_of_writes_is_durable_and_refused_one_by_one(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let stale: VersionId = format!("{T0}.0@{}", store.site()).parse().expect("a version id");
    let (a, b, c) = (policy("a"), policy("b"), policy("c"));
    let outcomes = store.write_batch(vec![
        put(&a, json!({"n": 1}), T0 + 1),
        if_match(put(&b, json!({"n": 2}), T0 + 1), stale),
        delete(&c, T0 + 1),
        put(&a, json!({"n": 3}), T0 + 2),
        put(&c, json!({"n": 4}), T0 + 2),
    ]);
    assert_eq!(outcomes.len(), 5, "one outcome per write");
    let first = outcomes[0].as_ref().expect("the first write is accepted");
    assert!(first.created);
    assert!(matches!(outcomes[1], Err(WriteError::PreconditionFailed { .. })), "{:?}", outcomes[1]);
    assert!(matches!(outcomes[2], Err(WriteError::NotFound { .. })), "{:?}", outcomes[2]);
    let second = outcomes[3].as_ref().expect("the second write of `a` is accepted");
    assert!(!second.created, "the second write of `a` updates what the first created");
    assert_eq!(
        second.object.version.vv.compare(&first.object.version.vv),
        model::Causality::Dominates,
        "in batch order"
    );
    let last = outcomes[4].as_ref().expect("`c` is created after its refused delete");
    assert!(second.seq > first.seq && last.seq > second.seq, "sequence numbers follow the batch");
    assert!(store.write_batch(Vec::new()).is_empty());

    drop(store);
    store = h.open();
    let s = store.as_ref();
    assert_eq!(must_get(s, &a).spec, json!({"n": 3}));
    assert_eq!(must_get(s, &c).spec, json!({"n": 4}));
    assert!(s.get(&b).expect("get").is_none(), "the refused write left nothing");
    assert_eq!(s.history(&a).expect("history").len(), 2);
    let audit = all_audit(s);
    let count = |outcome: &str| audit.iter().filter(|e| e.record.outcome == outcome).count();
    assert_eq!(count("applied"), 3);
    assert_eq!(count("precondition-failed") + count("not-found"), 2, "each refusal is audited");
}

/// Equal content gives an equal content hash, whatever the JSON key order; different content,
/// a different object or a delete give a different one.
pub fn equal_content_hashes_equal(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let k = policy("baseline");
    let spec_a = json!({"a": 1, "b": {"x": [1, 2], "y": null}});
    let spec_b: serde_json::Value =
        serde_json::from_str(r#"{"b": {"y": null, "x": [1, 2]}, "a": 1}"#).expect("json");
    let first = apply(store.as_ref(), put(&k, spec_a.clone(), T0));
    let second = apply(store.as_ref(), put(&k, spec_b, T0 + 1));
    let hash = |c: &Committed| c.object.version.content_hash.clone();
    assert_eq!(hash(&first), hash(&second), "same content, same hash");
    assert_ne!(first.object.version.id(), second.object.version.id(), "but two versions");
    let changed = apply(store.as_ref(), put(&k, json!({"a": 2}), T0 + 2));
    assert_ne!(hash(&changed), hash(&first));
    let elsewhere = apply(store.as_ref(), put(&policy("other"), spec_a.clone(), T0 + 3));
    assert_ne!(hash(&elsewhere), hash(&first), "the hash covers the object's identity");
    let mut relabelled = put(&k, spec_a.clone(), T0 + 4);
    relabelled.labels = labels(&[("team", "security")]);
    assert_ne!(hash(&apply(store.as_ref(), relabelled)), hash(&first), "the hash covers labels");

    drop(store);
    store = h.open();
    let history = store.history(&k).expect("history");
    assert_eq!(history[0].version.content_hash, hash(&first), "the hash reads back after a restart");
    assert_eq!(
        history[0].version.content_hash,
        ContentHash::of(&k, &history[0].labels, &history[0].spec, false),
        "the stored hash is the hash of the stored content"
    );
}

// ---------------------------------------------------------------------------------------------
// Model-based test

/// The keys the model-based test writes: few, so operations collide.
fn model_keys() -> [ObjectKey; 4] {
    [
        policy("alpha"),
        policy("beta"),
        key(Kind::Release, "region-a", "alpha"),
        key(Kind::Rollout, "global", "alpha"),
    ]
}

/// The peers of the model-based test: two sites (not the store's own) that write versions and
/// relay each other's.
fn model_peers(store: &dyn Store) -> [SiteId; 2] {
    let mut sites = ["region-a-control", "global-control", "edge-zone-a2"]
        .into_iter()
        .map(|n| SiteId::new(n).expect("a valid site id"))
        .filter(|s| s != store.site());
    [(); 2].map(|()| sites.next().expect("two other sites"))
}

/// One step of the model-based test. `now` is an offset from [`T0`] that wanders back and
/// forth, as a bad physical clock would.
#[derive(Debug, Clone)]
enum Op {
    Put {
        key: usize,
        spec: u8,
        now: u64,
    },
    PutIfMatch {
        key: usize,
        spec: u8,
        now: u64,
    },
    PutStale {
        key: usize,
        spec: u8,
        now: u64,
    },
    PutIfAbsent {
        key: usize,
        spec: u8,
        now: u64,
    },
    Delete {
        key: usize,
        if_match: bool,
        now: u64,
    },
    /// A version written at peer `origin` (stamped at `written`), arriving from peer `from` at
    /// `now`. `sees` means the origin had seen every version this site holds (its vector
    /// dominates the context); otherwise it had seen only its own earlier versions. A `held`
    /// version is delayed: it arrives with a later [`Op::Deliver`], possibly after versions
    /// its origin wrote after it (as a digest repair would bring it).
    Remote {
        key: usize,
        origin: usize,
        from: usize,
        spec: u8,
        deleted: bool,
        sees: bool,
        held: bool,
        written: u64,
        now: u64,
    },
    /// A delayed version arrives (the `n`-th, modulo how many are delayed).
    Deliver {
        n: usize,
        now: u64,
    },
    /// A version applied before is delivered again (the `n`-th, modulo how many there are).
    Redeliver {
        n: usize,
        now: u64,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..model_keys().len();
    let flags = (proptest::bool::weighted(0.15), any::<bool>(), proptest::bool::weighted(0.3));
    let remote = (key.clone(), 0..2usize, 0..2usize, 0u8..4, flags, 0u64..50, 0u64..50);
    prop_oneof![
        4 => (key.clone(), 0u8..4, 0u64..50).prop_map(|(key, spec, now)| Op::Put { key, spec, now }),
        2 => (key.clone(), 0u8..4, 0u64..50).prop_map(|(key, spec, now)| Op::PutIfMatch { key, spec, now }),
        1 => (key.clone(), 0u8..4, 0u64..50).prop_map(|(key, spec, now)| Op::PutStale { key, spec, now }),
        1 => (key.clone(), 0u8..4, 0u64..50).prop_map(|(key, spec, now)| Op::PutIfAbsent { key, spec, now }),
        2 => (key, any::<bool>(), 0u64..50).prop_map(|(key, if_match, now)| Op::Delete { key, if_match, now }),
        4 => remote.prop_map(|(key, origin, from, spec, (deleted, sees, held), written, now)| Op::Remote {
            key,
            origin,
            from,
            spec,
            deleted,
            sees,
            held,
            written,
            now,
        }),
        2 => (any::<usize>(), 0u64..50).prop_map(|(n, now)| Op::Deliver { n, now }),
        1 => (any::<usize>(), 0u64..50).prop_map(|(n, now)| Op::Redeliver { n, now }),
        1 => Just(Op::Restart),
    ]
}

/// What the model holds for one object.
#[derive(Debug, Clone)]
struct ModelObject {
    /// The current version: the greatest in last-write-wins order of every version held.
    current: model::Version,
    labels: BTreeMap<String, String>,
    spec: serde_json::Value,
    created: Hlc,
    context: model::VersionVector,
    /// Every version id, in the order the site accepted them.
    history: Vec<VersionId>,
    /// Every version held, in the same order.
    versions: Vec<model::Version>,
}

impl ModelObject {
    fn current(&self) -> VersionId {
        self.current.id()
    }

    fn deleted(&self) -> bool {
        self.current.deleted
    }
}

/// One change-log entry as the model keeps it.
#[derive(Debug, Clone)]
struct ModelChange {
    key: ObjectKey,
    id: VersionId,
    /// The peer it came from (an index into [`model_peers`]); `None` for a local write.
    from: Option<usize>,
}

#[derive(Debug)]
struct Model {
    objects: BTreeMap<ObjectKey, ModelObject>,
    changes: Vec<ModelChange>,
    /// Every remote version applied, for redelivery.
    remote: Vec<crate::RemoteVersion>,
    /// Remote versions written but delayed, with the peer they will come from.
    delayed: Vec<(crate::RemoteVersion, usize)>,
    /// The clocks of the two peers.
    peer_clocks: [model::HlcClock; 2],
    audited: usize,
    /// Conflicts recorded, by id, with their winners (all resolved: last-write-wins).
    conflicts: BTreeMap<String, VersionId>,
    /// Events appended: one per accepted version, one per conflict.
    events: u64,
    last_seq: u64,
    last_hlc: Hlc,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            objects: BTreeMap::new(),
            changes: Vec::new(),
            remote: Vec::new(),
            delayed: Vec::new(),
            peer_clocks: [model::HlcClock::new(Hlc::ZERO, 0), model::HlcClock::new(Hlc::ZERO, 0)],
            audited: 0,
            conflicts: BTreeMap::new(),
            events: 0,
            last_seq: 0,
            last_hlc: Hlc::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Applied,
    PreconditionFailed,
    NotFound,
}

fn model_spec(spec: u8) -> (BTreeMap<String, String>, serde_json::Value) {
    (labels(&[("shard", if spec.is_multiple_of(2) { "even" } else { "odd" })]), json!({"value": spec}))
}

/// A version id no store ever issues in this test (its time is long before [`T0`]).
fn never_issued(site: &SiteId) -> VersionId {
    VersionId { hlc: Hlc::new(1, 0), origin: site.clone() }
}

fn model_write(site: &SiteId, model: &Model, op: &Op) -> (LocalWrite, Expect) {
    let keys = model_keys();
    let (key, now) = match op {
        Op::Put { key, now, .. }
        | Op::PutIfMatch { key, now, .. }
        | Op::PutStale { key, now, .. }
        | Op::PutIfAbsent { key, now, .. }
        | Op::Delete { key, now, .. } => (&keys[*key], T0 + now),
        Op::Remote { .. } | Op::Deliver { .. } | Op::Redeliver { .. } | Op::Restart => {
            unreachable!("not a local write")
        }
    };
    let current = model.objects.get(key);
    let live = current.filter(|o| !o.deleted());
    let content = |spec: u8| {
        let (labels, spec) = model_spec(spec);
        LocalWrite { labels, ..put(key, spec, now) }
    };
    match op {
        Op::Put { spec, .. } => (content(*spec), Expect::Applied),
        Op::PutIfMatch { spec, .. } => match live {
            Some(o) => (if_match(content(*spec), o.current()), Expect::Applied),
            None => {
                let id = current.map_or_else(|| never_issued(site), ModelObject::current);
                (if_match(content(*spec), id), Expect::PreconditionFailed)
            }
        },
        Op::PutStale { spec, .. } => {
            let stale = match current {
                Some(o) if o.deleted() => o.current(),
                Some(o) => {
                    let cur = o.current();
                    o.history
                        .iter()
                        .rev()
                        .find(|id| **id != cur)
                        .cloned()
                        .unwrap_or_else(|| never_issued(site))
                }
                None => never_issued(site),
            };
            (if_match(content(*spec), stale), Expect::PreconditionFailed)
        }
        Op::PutIfAbsent { spec, .. } => {
            let expect = if live.is_none() { Expect::Applied } else { Expect::PreconditionFailed };
            (if_absent(content(*spec)), expect)
        }
        Op::Delete { if_match: with_if_match, .. } => match live {
            None => (delete(key, now), Expect::NotFound),
            Some(o) if *with_if_match => (if_match(delete(key, now), o.current()), Expect::Applied),
            Some(_) => (delete(key, now), Expect::Applied),
        },
        Op::Remote { .. } | Op::Deliver { .. } | Op::Redeliver { .. } | Op::Restart => {
            unreachable!("not a local write")
        }
    }
}

/// Applies one write to the store and the model and checks the outcome against the model.
fn step(store: &dyn Store, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Remote { .. } => return step_remote(store, model, op),
        Op::Deliver { n, now } => {
            if model.delayed.is_empty() {
                return Ok(());
            }
            let (remote, from) = model.delayed.remove(n % model.delayed.len());
            return apply_one(store, model, remote, from, *now);
        }
        Op::Redeliver { n, now } => return step_redeliver(store, model, *n, *now),
        _ => {}
    }
    let site = store.site().clone();
    let (write, expect) = model_write(&site, model, op);
    let key = write.key.clone();
    let (labels, spec) = (write.labels.clone(), write.spec.clone());
    let outcome = store.write(write);
    model.audited += 1;
    match (outcome, expect) {
        (Ok(c), Expect::Applied) => {
            let prior = model.objects.get(&key);
            let was_live = prior.is_some_and(|o| !o.deleted());
            let v = &c.object.version;
            prop_assert!(v.hlc > model.last_hlc, "timestamp {} after {}", v.hlc, model.last_hlc);
            prop_assert_eq!(&v.origin, &site);
            prop_assert!(c.seq > model.last_seq, "seq {} after {}", c.seq, model.last_seq);
            prop_assert_eq!(c.created, !was_live);
            let mut vv = prior.map(|o| o.context.clone()).unwrap_or_default();
            vv.increment(&site);
            prop_assert_eq!(&v.vv, &vv, "a local write increments the object's context");
            let created = match prior {
                Some(o) if was_live => o.created,
                _ => v.hlc,
            };
            prop_assert_eq!(c.object.created, created);
            let mut history = prior.map(|o| o.history.clone()).unwrap_or_default();
            history.push(v.id());
            let mut versions = prior.map(|o| o.versions.clone()).unwrap_or_default();
            versions.push(v.clone());
            model.events += 1;
            model.last_hlc = v.hlc;
            model.last_seq = c.seq;
            model.changes.push(ModelChange { key: key.clone(), id: v.id(), from: None });
            let object =
                ModelObject { current: v.clone(), labels, spec, created, context: vv, history, versions };
            model.objects.insert(key, object);
        }
        (Err(WriteError::PreconditionFailed { .. }), Expect::PreconditionFailed)
        | (Err(WriteError::NotFound { .. }), Expect::NotFound) => {}
        (outcome, expect) => {
            prop_assert!(false, "{op:?} on {key}: expected {expect:?}, got {outcome:?}");
        }
    }
    Ok(())
}

/// Applies a version from a peer to the store and the model.
fn step_remote(store: &dyn Store, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let Op::Remote { key, origin, from, spec, deleted, sees, held, written, now } = *op else {
        unreachable!("a remote op")
    };
    let peers = model_peers(store);
    let key = model_keys()[key].clone();
    let (labels, spec) = if deleted { (BTreeMap::new(), serde_json::Value::Null) } else { model_spec(spec) };
    let prior = model.objects.get(&key);
    // The origin's counter continues whatever of its versions the site holds.
    let seen = prior.map_or(0, |o| o.context.get(&peers[origin]));
    let own = model
        .remote
        .iter()
        .chain(model.delayed.iter().map(|(r, _)| r))
        .filter(|r| r.key == key && r.version.origin == peers[origin])
        .map(|r| r.version.vv.get(&peers[origin]))
        .max()
        .unwrap_or(0);
    let mut vv = if sees { prior.map(|o| o.context.clone()).unwrap_or_default() } else { Default::default() };
    for _ in vv.get(&peers[origin])..seen.max(own) + 1 {
        vv.increment(&peers[origin]);
    }
    if sees {
        // Having seen those versions, the origin's clock is past their timestamps.
        for m in model.changes.iter().filter(|c| c.key == key) {
            let clock = &mut model.peer_clocks[origin];
            *clock = model::HlcClock::new(clock.last().max(m.id.hlc), 0);
        }
    }
    let version = model::Version {
        hlc: model.peer_clocks[origin].tick(T0 + written),
        origin: peers[origin].clone(),
        vv,
        author: format!("operator@{}", peers[origin]),
        content_hash: ContentHash::of(&key, &labels, &spec, deleted),
        deleted,
    };
    let remote = crate::RemoteVersion { key, version, labels, spec: model::SpecText::of(&spec) };
    if held {
        model.delayed.push((remote, from));
        return Ok(());
    }
    apply_one(store, model, remote, from, now)
}

/// Applies one new remote version, arriving from peer `from` at `now`, to the store and the
/// model.
fn apply_one(
    store: &dyn Store,
    model: &mut Model,
    remote: crate::RemoteVersion,
    from: usize,
    now: u64,
) -> Result<(), TestCaseError> {
    let peers = model_peers(store);
    let (key, version) = (remote.key.clone(), remote.version.clone());
    let spec = remote.spec.value().map_err(|e| TestCaseError::fail(format!("a model spec is JSON: {e}")))?;
    let prior = model.objects.get(&key);
    let report = store
        .apply_remote(&peers[from], std::slice::from_ref(&remote), T0 + now, &crate::LastWriteWins)
        .map_err(|e| TestCaseError::fail(format!("applying {remote:?}: {e}")))?;

    // The frontier: held versions no other held version dominates. A version a frontier
    // version dominates conflicts with nothing; any other conflicts with the frontier versions
    // concurrent with it.
    let held = prior.map(|o| o.versions.as_slice()).unwrap_or_default();
    let frontier: Vec<&model::Version> = held
        .iter()
        .filter(|v| !held.iter().any(|w| w.vv.compare(&v.vv) == model::Causality::Dominates))
        .collect();
    let dominated = frontier.iter().any(|f| f.vv.compare(&version.vv) == model::Causality::Dominates);
    let conflicts: Vec<model::Version> = frontier
        .iter()
        .filter(|f| !dominated && f.vv.compare(&version.vv) == model::Causality::Concurrent)
        .map(|f| (*f).clone())
        .collect();
    let concurrent = !conflicts.is_empty();
    let becomes_current = prior.is_none_or(|o| version.lww_cmp(&o.current) == std::cmp::Ordering::Greater);
    prop_assert!(report.last_seq > model.last_seq);
    let expected = crate::ApplyReport {
        applied: 1,
        duplicates: 0,
        became_current: usize::from(becomes_current),
        concurrent: usize::from(concurrent),
        last_seq: report.last_seq,
        logged: vec![(0, report.last_seq)],
    };
    prop_assert_eq!(&report, &expected, "{:?}", remote);

    let mut object = match prior {
        Some(o) => o.clone(),
        None => ModelObject {
            current: version.clone(),
            labels: remote.labels.clone(),
            spec: spec.clone(),
            created: version.hlc,
            context: Default::default(),
            history: Vec::new(),
            versions: Vec::new(),
        },
    };
    if becomes_current {
        if object.deleted() || prior.is_none() {
            object.created = version.hlc;
        }
        object.current = version.clone();
        object.labels = remote.labels.clone();
        object.spec = spec.clone();
    }
    object.context.merge(&version.vv);
    object.history.push(version.id());
    object.versions.push(version.clone());
    model.events += 1;
    for side in &conflicts {
        let id = crate::conflict_id(&key, &version.id(), &side.id());
        model.conflicts.insert(id, model::lww_winner(&version, side).id());
        model.audited += 1;
        model.events += 1;
    }
    model.objects.insert(key.clone(), object);
    model.changes.push(ModelChange { key, id: version.id(), from: Some(from) });
    model.last_hlc = model::HlcClock::new(model.last_hlc, u64::MAX)
        .observe(version.hlc, T0 + now)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    model.last_seq = report.last_seq;
    model.remote.push(remote);
    Ok(())
}

/// Delivers a version applied before once more: a duplicate that changes nothing.
fn step_redeliver(store: &dyn Store, model: &mut Model, n: usize, now: u64) -> Result<(), TestCaseError> {
    let batch: Vec<_> =
        model.remote.get(n.checked_rem(model.remote.len()).unwrap_or(0)).cloned().into_iter().collect();
    let from = model_peers(store)[n % 2].clone();
    let report = store
        .apply_remote(&from, &batch, T0 + now, &crate::LastWriteWins)
        .map_err(|e| TestCaseError::fail(format!("redeliver: {e}")))?;
    let expected =
        crate::ApplyReport { duplicates: batch.len(), last_seq: model.last_seq, ..Default::default() };
    prop_assert_eq!(report, expected);
    Ok(())
}

/// The version ids a link to `peer` (an index into [`model_peers`]) carries after the start
/// of the log, in the scopes asked: not from the peer, and not superseded by a version of the
/// same object from the same origin with a greater timestamp.
fn model_link(model: &Model, peer: usize, scope: Option<&Scope>) -> Vec<VersionId> {
    model
        .changes
        .iter()
        .filter(|c| c.from != Some(peer) && scope.is_none_or(|s| &c.key.scope == s))
        .filter(|c| {
            !model.objects[&c.key].history.iter().any(|id| id.origin == c.id.origin && id.hlc > c.id.hlc)
        })
        .map(|c| c.id.clone())
        .collect()
}

/// Compares everything a client and a link can read with the model.
fn check(store: &dyn Store, model: &Model) -> Result<(), TestCaseError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| TestCaseError::fail(format!("{what}: {e}"));
    let mut live = Vec::new();
    let mut all = Vec::new();
    for key in model_keys() {
        let got = store.get(&key).map_err(|e| fail("get", &e))?;
        let history = store.history(&key).map_err(|e| fail("history", &e))?;
        let ids: Vec<VersionId> = history.iter().map(|h| h.version.id()).collect();
        match (model.objects.get(&key), got) {
            (None, None) => prop_assert!(ids.is_empty(), "{key} has history {ids:?} but the model has none"),
            (Some(m), Some(o)) => {
                prop_assert_eq!(&o.version, &m.current, "current version of {}", key);
                prop_assert_eq!(&o.spec, &m.spec, "spec of {}", key);
                prop_assert_eq!(&o.labels, &m.labels, "labels of {}", key);
                prop_assert_eq!(o.created, m.created, "created of {}", key);
                prop_assert_eq!(&o.context, &m.context, "context of {}", key);
                prop_assert_eq!(
                    &o.version.content_hash,
                    &ContentHash::of(&key, &m.labels, &m.spec, m.deleted()),
                    "content hash of {}",
                    key
                );
                prop_assert_eq!(&ids, &m.history, "history of {}", key);
                for id in &ids {
                    prop_assert!(store.has_version(&key, id).map_err(|e| fail("has_version", &e))?);
                }
                all.push(key.clone());
                if !m.deleted() {
                    live.push(key.clone());
                }
            }
            (m, o) => prop_assert!(false, "{key}: the model has {m:?}, the store {o:?}"),
        }
    }
    let sort = |keys: &mut Vec<ObjectKey>| {
        keys.sort_by(|a, b| {
            (a.kind.as_str(), a.scope.as_str(), a.name.as_str()).cmp(&(
                b.kind.as_str(),
                b.scope.as_str(),
                b.name.as_str(),
            ))
        })
    };
    sort(&mut live);
    sort(&mut all);
    let listed = |filter: ListFilter| -> Result<Vec<ObjectKey>, TestCaseError> {
        Ok(store.list(&filter).map_err(|e| fail("list", &e))?.into_iter().map(|o| o.key).collect())
    };
    prop_assert_eq!(listed(ListFilter::default())?, live);
    prop_assert_eq!(listed(ListFilter { include_deleted: true, ..ListFilter::default() })?, all.clone());
    let digest = store.digest_entries(None).map_err(|e| fail("digest_entries", &e))?;
    let expected: Vec<_> = all.iter().map(|k| (k.clone(), model.objects[k].current())).collect();
    prop_assert_eq!(digest, expected, "digest entries");

    let changes = store.changes(0, MAX_PAGE).map_err(|e| fail("changes", &e))?;
    prop_assert_eq!(changes.len(), model.changes.len(), "one change per accepted version");
    let peers = model_peers(store);
    for (c, m) in changes.iter().zip(&model.changes) {
        prop_assert_eq!(&c.version.id(), &m.id);
        prop_assert_eq!(c.from_site.as_ref(), m.from.map(|p| &peers[p]));
    }
    prop_assert_eq!(store.last_seq().map_err(|e| fail("last_seq", &e))?, model.last_seq);
    let region = Scope::new("region-a").expect("scope");
    for (peer, scope) in [(0, None), (1, None), (0, Some(&region))] {
        let query = crate::LinkQuery {
            after: 0,
            peer: peers[peer].clone(),
            scopes: scope.map(|s| [s.clone()].into_iter().collect()),
        };
        let batch = store.changes_for_link(&query, MAX_PAGE).map_err(|e| fail("changes_for_link", &e))?;
        let carried: Vec<VersionId> = batch.changes.iter().map(|c| c.version.id()).collect();
        prop_assert_eq!(&carried, &model_link(model, peer, scope), "a link to {} ({:?})", peers[peer], scope);
        prop_assert_eq!(batch.scanned_to, model.last_seq);
        let debt = store.link_debt(&query).map_err(|e| fail("link_debt", &e))?;
        prop_assert_eq!(debt.pending, carried.len() as u64);
    }
    let audit = store.audit(0, MAX_PAGE).map_err(|e| fail("audit", &e))?;
    prop_assert_eq!(
        audit.len(),
        model.audited,
        "one audit entry per local write, applied or refused, and conflict"
    );
    let conflicts: BTreeMap<String, VersionId> = store
        .conflicts(&crate::ConflictFilter { limit: MAX_PAGE, ..Default::default() })
        .map_err(|e| fail("conflicts", &e))?
        .into_iter()
        .map(|c| (c.id, c.winner))
        .collect();
    prop_assert_eq!(&conflicts, &model.conflicts, "conflict records and their winners");
    prop_assert_eq!(store.last_event_seq().map_err(|e| fail("last_event_seq", &e))?, model.events);
    prop_assert_eq!(store.clock().map_err(|e| fail("clock", &e))?, model.last_hlc);
    Ok(())
}

/// Random sequences of puts (plain, `If-Match` current, `If-Match` stale, `If-None-Match`),
/// deletes, versions from two peers (dominating or concurrent, puts and tombstones, relayed by
/// either peer, some delivered twice) and restarts, on a fresh store each, compared after every
/// step with a `BTreeMap` model: current versions (the last-write-wins maximum), contexts,
/// content, listings, history, digests, outcomes and apply reports, the change log and what
/// links carry, the audit log size and the clock. 200 sequences by default (`PROPTEST_CASES`
/// overrides).
pub fn model_based(h: &mut dyn Harness) {
    let mut config = Config { failure_persistence: None, ..Config::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 200;
    }
    let mut runner = TestRunner::new(config);
    let h = RefCell::new(h);
    let result = runner.run(&proptest::collection::vec(op(), 1..30), |ops| {
        let mut h = h.borrow_mut();
        h.reset();
        let mut store = h.open();
        let mut model = Model::default();
        for op in &ops {
            if let Op::Restart = op {
                drop(store);
                store = h.open();
            } else {
                step(store.as_ref(), &mut model, op)?;
            }
            check(store.as_ref(), &model)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("the store differs from the model: {e}");
    }
}
