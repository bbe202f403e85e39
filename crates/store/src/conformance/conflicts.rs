//! The conflict cases of the suite: detection, the three strategies, resolution by a later
//! version (remote or local), acknowledgement, the event log, webhook deliveries and the site
//! cards of link records; and [`conflicts_converge_whatever_the_interleaving`], the property
//! test of convergence. Written against the trait only.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use model::{
    Autonomy, Causality, HlcClock, Kind, Level, ObjectKey, Scope, SiteCard, SiteId, Strategy, Version,
    VersionId, VersionVector,
};
use proptest::prelude::*;
use proptest::strategy::Strategy as _;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

use super::replication::{others, remote, remote_delete, vv};
use super::{Harness, T0, all_audit, apply, delete, history_ids, key, must_get, put};
use crate::{
    ApplyReport, ConflictFilter, ConflictPolicy, ConflictRecord, ConflictSide, ConflictStatus, Delivery,
    DeliveryEntry, Event, LastWriteWins, LinkRecord, MAX_PAGE, NewEvent, RemoteVersion, Store, conflict_id,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A [`ConflictPolicy`] with one strategy for every object and ranks given per site (0 for a
/// site not given): a test double of the sync engine's site directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPolicy {
    pub strategy: Strategy,
    pub ranks: BTreeMap<SiteId, u8>,
    pub audit: bool,
}

impl TestPolicy {
    /// `strategy` for every object, every site ranked 0, resolutions audited.
    pub fn new(strategy: Strategy) -> Self {
        Self { strategy, ranks: BTreeMap::new(), audit: true }
    }

    /// Ranks `site` at `rank`.
    pub fn with_rank(mut self, site: &SiteId, rank: u8) -> Self {
        self.ranks.insert(site.clone(), rank);
        self
    }

    pub fn audited(mut self, audit: bool) -> Self {
        self.audit = audit;
        self
    }
}

impl ConflictPolicy for TestPolicy {
    fn strategy(&self, _: &ObjectKey) -> Strategy {
        self.strategy
    }

    fn rank(&self, origin: &SiteId) -> u8 {
        self.ranks.get(origin).copied().unwrap_or(0)
    }

    fn audit(&self) -> bool {
        self.audit
    }
}

fn manual() -> TestPolicy {
    TestPolicy::new(Strategy::Manual)
}

fn apply_with(
    store: &dyn Store,
    from: &SiteId,
    batch: &[RemoteVersion],
    now_ms: u64,
    policy: &dyn ConflictPolicy,
) -> ApplyReport {
    store
        .apply_remote(from, batch, now_ms, policy)
        .unwrap_or_else(|e| panic!("a batch of {} from {from} must apply: {e} ({e:?})", batch.len()))
}

/// Applies one version, as if it came straight from its origin.
fn deliver(store: &dyn Store, r: &RemoteVersion, now_ms: u64, policy: &dyn ConflictPolicy) -> ApplyReport {
    apply_with(store, &r.version.origin, std::slice::from_ref(r), now_ms, policy)
}

fn every(status: Option<ConflictStatus>) -> ConflictFilter {
    ConflictFilter { status, key: None, limit: MAX_PAGE }
}

fn all_conflicts(store: &dyn Store) -> Vec<ConflictRecord> {
    store.conflicts(&every(None)).unwrap_or_else(|e| panic!("conflicts: {e} ({e:?})"))
}

fn conflict_ids(store: &dyn Store, filter: &ConflictFilter) -> Vec<String> {
    store
        .conflicts(filter)
        .unwrap_or_else(|e| panic!("conflicts {filter:?}: {e} ({e:?})"))
        .into_iter()
        .map(|c| c.id)
        .collect()
}

fn all_events(store: &dyn Store) -> Vec<Event> {
    store.events(0, MAX_PAGE).unwrap_or_else(|e| panic!("events: {e} ({e:?})"))
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.event.kind.as_str()).collect()
}

fn conflict_audit(store: &dyn Store) -> Vec<crate::AuditRecord> {
    all_audit(store).into_iter().map(|e| e.record).filter(|r| r.action == "conflict").collect()
}

fn side_of(r: &RemoteVersion) -> ConflictSide {
    ConflictSide {
        version: r.version.id(),
        origin: r.version.origin.clone(),
        author: r.version.author.clone(),
        deleted: r.version.deleted,
    }
}

fn merged(versions: &[&RemoteVersion]) -> VersionVector {
    let mut v = VersionVector::new();
    for r in versions {
        v.merge(&r.version.vv);
    }
    v
}

/// A vector that follows all of `versions` with one more write by `origin`.
fn after(versions: &[&RemoteVersion], origin: &SiteId) -> VersionVector {
    let mut v = merged(versions);
    v.increment(origin);
    v
}

/// Checks the `conflict` event says what the record says.
fn assert_conflict_event(event: &Event, record: &ConflictRecord, change: &str) {
    let e = &event.event;
    assert_eq!(e.kind, "conflict");
    assert_eq!(e.object.as_ref(), Some(&record.key));
    let d = &e.data;
    assert_eq!(d["id"], record.id.as_str(), "{d}");
    assert_eq!(d["change"], change, "{d}");
    assert_eq!(d["status"], record.status.as_str(), "{d}");
    assert_eq!(d["strategy"], record.strategy.as_str(), "{d}");
    assert_eq!(d["winner"], record.winner.to_string(), "{d}");
    assert_eq!(d["detected_ms"], record.detected_ms, "{d}");
    for (i, side) in record.sides.iter().enumerate() {
        let s = &d["sides"][i];
        assert_eq!(s["version"], side.version.to_string(), "{d}");
        assert_eq!(s["origin"], side.origin.as_str(), "{d}");
        assert_eq!(s["author"], side.author.as_str(), "{d}");
        assert_eq!(s["deleted"], side.deleted, "{d}");
    }
    let resolved_by = record.resolved_by.as_ref().map(|v| json!(v.to_string())).unwrap_or(json!(null));
    assert_eq!(d["resolved_by"], resolved_by, "{d}");
    let (by, at) = match &record.acknowledged {
        Some((by, at)) => (json!(by), json!(at)),
        None => (json!(null), json!(null)),
    };
    assert_eq!((&d["acknowledged_by"], &d["acknowledged_ms"]), (&by, &at), "{d}");
}

/// Checks a `write` or `delete` event of a version accepted from `from` (`None`: written here).
fn assert_version_event(
    event: &Event,
    key: &ObjectKey,
    version: &Version,
    from: Option<&SiteId>,
    current: bool,
) {
    let e = &event.event;
    assert_eq!(e.kind, if version.deleted { "delete" } else { "write" });
    assert_eq!(e.object.as_ref(), Some(key));
    let expected = json!({
        "version": version.id().to_string(),
        "origin": version.origin.as_str(),
        "author": version.author,
        "from": from.map(SiteId::as_str),
        "current": current,
    });
    assert_eq!(e.data, expected);
}

// ---------------------------------------------------------------------------------------------
// Cases

/// Two concurrent versions applied in either order: the same current version (the later
/// write), both in history, one conflict record with the same id, sides and winner, resolved
/// by last-write-wins, an audit entry and a `conflict` event, after a `write` event for each
/// version.
pub fn concurrent_versions_conflict_alike_in_either_order(h: &mut dyn Harness) {
    h.reset();
    let probe = h.open();
    let [a, b, _] = others(probe.as_ref());
    drop(probe);
    let k = key(Kind::Policy, "region-a", "limits");
    let x = remote(&k, &a, T0 + 10, vv(&[(&a, 1)]), json!({"max_pods": 10}));
    let y = remote(&k, &b, T0 + 20, vv(&[(&b, 1)]), json!({"max_pods": 20}));
    let id = conflict_id(&k, &x.version.id(), &y.version.id());
    assert_eq!(id, conflict_id(&k, &y.version.id(), &x.version.id()), "the id does not depend on the order");
    assert_eq!(id.len(), 16);

    let mut outcomes = Vec::new();
    for order in [[&x, &y], [&y, &x]] {
        h.reset();
        let store = h.open();
        let store = store.as_ref();
        let first = deliver(store, order[0], T0 + 100, &LastWriteWins);
        assert_eq!((first.applied, first.concurrent), (1, 0));
        let second = deliver(store, order[1], T0 + 200, &LastWriteWins);
        assert_eq!((second.applied, second.concurrent), (1, 1), "the second version conflicts");
        let current = must_get(store, &k);
        assert_eq!(current.version, y.version, "the later write is current");
        let history: BTreeSet<VersionId> = history_ids(store, &k).into_iter().collect();
        assert_eq!(history, [x.version.id(), y.version.id()].into_iter().collect(), "both stay in history");

        let conflicts = all_conflicts(store);
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        let c = &conflicts[0];
        let expected = ConflictRecord {
            id: id.clone(),
            key: k.clone(),
            sides: [side_of(&x), side_of(&y)],
            strategy: Strategy::LastWriteWins,
            winner: y.version.id(),
            status: ConflictStatus::Resolved,
            detected_ms: T0 + 200,
            acknowledged: None,
            resolved_by: None,
        };
        assert_eq!(c, &expected, "sides in version order, the later write wins, resolved");
        assert_eq!(store.conflict(&id).expect("conflict").as_ref(), Some(c));
        assert_eq!(store.conflict("0123456789abcdef").expect("conflict"), None);

        let audit = conflict_audit(store);
        assert_eq!(audit.len(), 1, "one audit entry per conflict: {audit:?}");
        let entry = &audit[0];
        assert_eq!(
            (entry.actor.as_str(), entry.outcome.as_str(), entry.at_ms),
            ("conflict-resolver", "resolved", T0 + 200)
        );
        assert_eq!((entry.key.as_ref(), entry.version.as_ref()), (Some(&k), Some(&y.version.id())));
        for part in [
            id.clone(),
            x.version.id().to_string(),
            y.version.id().to_string(),
            a.to_string(),
            b.to_string(),
            "last-write-wins".to_owned(),
        ] {
            assert!(entry.detail.contains(&part), "the detail names {part}: {}", entry.detail);
        }

        let events = all_events(store);
        assert_eq!(kinds(&events), ["write", "write", "conflict"]);
        assert_version_event(&events[0], &k, &order[0].version, Some(&order[0].version.origin), true);
        let second_current = order[1].version == y.version;
        assert_version_event(
            &events[1],
            &k,
            &order[1].version,
            Some(&order[1].version.origin),
            second_current,
        );
        assert_conflict_event(&events[2], c, "detected");
        assert_eq!(events[2].event.at_ms, T0 + 200);

        let mut c = c.clone();
        c.detected_ms = 0;
        // `created` is when this site first saw the object live: it depends on the order.
        outcomes.push(((current.version, current.spec, current.context), history, c));
    }
    assert_eq!(outcomes[0], outcomes[1], "either order gives the same object, history and conflict");
}

/// Under `manual` the last-write-wins candidate is current, provisionally, and the conflict
/// stays open; one side may be a delete. Without `audit`, the conflict is recorded and
/// announced but not audited.
pub fn manual_keeps_the_last_write_candidate_with_an_open_conflict(h: &mut dyn Harness) {
    h.reset();
    let probe = h.open();
    let [a, b, _] = others(probe.as_ref());
    drop(probe);
    let k = key(Kind::Policy, "region-a", "limits");
    let other = key(Kind::Policy, "region-a", "other");
    let x = remote_delete(&k, &a, T0 + 10, vv(&[(&a, 1)]));
    let y = remote(&k, &b, T0 + 20, vv(&[(&b, 1)]), json!({"max_pods": 20}));
    let id = conflict_id(&k, &x.version.id(), &y.version.id());
    for order in [[&x, &y], [&y, &x]] {
        h.reset();
        let store = h.open();
        let store = store.as_ref();
        deliver(store, order[0], T0 + 100, &manual());
        let report = deliver(store, order[1], T0 + 200, &manual());
        assert_eq!(report.concurrent, 1);
        assert_eq!(must_get(store, &k).version, y.version, "the last-write-wins candidate is current");
        let c = store.conflict(&id).expect("conflict").expect("an open conflict");
        assert_eq!(c.status, ConflictStatus::Open);
        assert_eq!((c.strategy, &c.winner), (Strategy::Manual, &y.version.id()));
        assert!(c.sides[0].deleted && !c.sides[1].deleted, "the delete is a side like any other");
        assert_eq!((c.acknowledged.as_ref(), c.resolved_by.as_ref()), (None, None));
        assert_eq!(conflict_ids(store, &every(Some(ConflictStatus::Open))), std::slice::from_ref(&id));
        assert!(conflict_ids(store, &every(Some(ConflictStatus::Resolved))).is_empty());
        let by_key = |key: &ObjectKey| ConflictFilter { key: Some(key.clone()), ..every(None) };
        assert_eq!(conflict_ids(store, &by_key(&k)), std::slice::from_ref(&id));
        assert!(conflict_ids(store, &by_key(&other)).is_empty());
        let audit = conflict_audit(store);
        assert_eq!(audit.len(), 1);
        assert_eq!((audit[0].outcome.as_str(), audit[0].version.as_ref()), ("open", Some(&y.version.id())));
        assert!(
            audit[0].detail.contains("manual") && audit[0].detail.contains("a delete"),
            "{}",
            audit[0].detail
        );
        let events = all_events(store);
        assert_eq!(events[0].event.kind, if order[0].version.deleted { "delete" } else { "write" });
        assert_conflict_event(&events[2], &c, "detected");
    }

    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let quiet = manual().audited(false);
    deliver(store, &x, T0 + 100, &quiet);
    deliver(store, &y, T0 + 200, &quiet);
    assert_eq!(conflict_ids(store, &every(None)), [id]);
    assert!(conflict_audit(store).is_empty(), "audit_log: false records no audit entry");
    assert_eq!(kinds(&all_events(store)), ["delete", "write", "conflict"], "but the event is sent");
}

/// Under `authority-wins` the version from the higher-ranked origin is current and wins the
/// conflict even when it is older, in any order; between equal ranks the later write wins.
pub fn authority_wins_picks_the_higher_authority_even_when_older(h: &mut dyn Harness) {
    h.reset();
    let probe = h.open();
    let [region, global, edge] = others(probe.as_ref());
    drop(probe);
    let policy = TestPolicy::new(Strategy::AuthorityWins)
        .with_rank(&global, 3)
        .with_rank(&region, 1)
        .with_rank(&edge, 1);
    let k = key(Kind::Policy, "global", "baseline");
    let g = remote(&k, &global, T0 + 10, vv(&[(&global, 1)]), json!({"from": "global"}));
    let e = remote(&k, &edge, T0 + 20, vv(&[(&edge, 1)]), json!({"from": "edge"}));
    let r = remote(&k, &region, T0 + 30, vv(&[(&region, 1)]), json!({"from": "region"}));
    let orders: [[&RemoteVersion; 3]; 3] = [[&g, &e, &r], [&e, &r, &g], [&r, &g, &e]];
    let mut outcomes = Vec::new();
    for order in orders {
        h.reset();
        let store = h.open();
        let store = store.as_ref();
        for (n, v) in order.iter().enumerate() {
            deliver(store, v, T0 + 100 + n as u64, &policy);
        }
        assert_eq!(
            must_get(store, &k).version,
            g.version,
            "the global write is current though it is the oldest"
        );
        let winners: BTreeMap<String, VersionId> =
            all_conflicts(store).into_iter().map(|c| (c.id, c.winner)).collect();
        let pair = |p: &RemoteVersion, q: &RemoteVersion| conflict_id(&k, &p.version.id(), &q.version.id());
        let expected: BTreeMap<String, VersionId> =
            [(pair(&g, &e), g.version.id()), (pair(&g, &r), g.version.id()), (pair(&e, &r), r.version.id())]
                .into_iter()
                .collect();
        assert_eq!(winners, expected, "the higher rank wins; between equal ranks the later write");
        for c in all_conflicts(store) {
            assert_eq!((c.strategy, c.status), (Strategy::AuthorityWins, ConflictStatus::Resolved));
        }
        let audit = conflict_audit(store);
        assert_eq!(audit.len(), 3);
        assert!(audit.iter().all(|a| a.detail.contains("authority-wins")), "{audit:?}");
        outcomes.push(winners);
    }
    assert!(outcomes.windows(2).all(|w| w[0] == w[1]));
}

/// A later version whose vector dominates both sides of an open conflict resolves it
/// (`resolved_by`), with an audit entry and a `conflict` event; a version that follows only
/// one side conflicts with the other and leaves the first conflict open.
pub fn a_later_version_following_both_sides_resolves_an_open_conflict(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [a, b, c] = others(store);
    let k = key(Kind::Policy, "region-a", "limits");
    let x = remote(&k, &a, T0 + 10, vv(&[(&a, 1)]), json!({"x": 1}));
    let y = remote(&k, &b, T0 + 20, vv(&[(&b, 1)]), json!({"y": 1}));
    let x2 = remote(&k, &a, T0 + 30, vv(&[(&a, 2)]), json!({"x": 2}));
    deliver(store, &x, T0 + 100, &manual());
    deliver(store, &y, T0 + 101, &manual());
    let first = conflict_id(&k, &x.version.id(), &y.version.id());

    let report = deliver(store, &x2, T0 + 102, &manual());
    assert_eq!(report.concurrent, 1, "x2 follows x but not y");
    let second = conflict_id(&k, &x2.version.id(), &y.version.id());
    let mut open = conflict_ids(store, &every(Some(ConflictStatus::Open)));
    open.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(open, expected, "the first conflict stays open: x2 does not follow y");
    assert_eq!(must_get(store, &k).version, x2.version);

    let audit_before = all_audit(store).len();
    let events_before = store.last_event_seq().expect("last_event_seq");
    let z = remote(&k, &c, T0 + 40, after(&[&x2, &y], &c), json!({"z": 1}));
    let report = deliver(store, &z, T0 + 103, &manual());
    assert_eq!((report.applied, report.concurrent, report.became_current), (1, 0, 1));
    for id in [&first, &second] {
        let record = store.conflict(id).expect("conflict").expect("recorded");
        assert_eq!(record.status, ConflictStatus::Resolved, "{id}");
        assert_eq!(record.resolved_by.as_ref(), Some(&z.version.id()));
        assert_eq!(record.winner, if *id == first { y.version.id() } else { x2.version.id() });
    }
    assert!(conflict_ids(store, &every(Some(ConflictStatus::Open))).is_empty());
    let audit = all_audit(store);
    assert_eq!(audit.len(), audit_before + 2, "one audit entry per resolution");
    for entry in &audit[audit_before..] {
        let r = &entry.record;
        assert_eq!(
            (r.action.as_str(), r.outcome.as_str(), r.actor.as_str()),
            ("conflict", "resolved", "conflict-resolver")
        );
        assert_eq!(r.version.as_ref(), Some(&z.version.id()));
        assert!(
            r.detail.contains(&z.version.id().to_string()) && r.detail.contains(c.as_str()),
            "{}",
            r.detail
        );
    }
    let events = store.events(events_before, MAX_PAGE).expect("events");
    assert_eq!(kinds(&events), ["write", "conflict", "conflict"], "the write, then each resolution");
    assert_version_event(&events[0], &k, &z.version, Some(&c), true);
    let resolved: BTreeSet<String> = events[1..]
        .iter()
        .map(|e| {
            let record =
                store.conflict(e.event.data["id"].as_str().expect("id")).expect("conflict").expect("known");
            assert_conflict_event(e, &record, "resolved");
            record.id
        })
        .collect();
    assert_eq!(resolved, [first, second].into_iter().collect());

    let again = deliver(store, &z, T0 + 104, &manual());
    assert_eq!(again.duplicates, 1);
    assert_eq!(
        store.last_event_seq().expect("last_event_seq"),
        events_before + 3,
        "a duplicate changes nothing"
    );
}

/// A local write follows every version the site holds, so it resolves the open and the
/// acknowledged conflicts of its object (how an operator's pick closes a conflict), after its
/// own `write` event; conflicts of other objects stay as they are.
pub fn a_local_write_resolves_the_open_conflicts_of_its_object(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let s = store.as_ref();
    let [a, b, _] = others(s);
    let k = key(Kind::Policy, "global", "baseline");
    let k2 = key(Kind::Policy, "global", "quota");
    let x = remote(&k, &a, T0 + 10, vv(&[(&a, 1)]), json!({"x": 1}));
    let y = remote(&k, &b, T0 + 20, vv(&[(&b, 1)]), json!({"y": 1}));
    let x2 = remote(&k, &a, T0 + 30, vv(&[(&a, 2)]), json!({"x": 2}));
    let p = remote(&k2, &a, T0 + 10, vv(&[(&a, 1)]), json!({"p": 1}));
    let q = remote(&k2, &b, T0 + 20, vv(&[(&b, 1)]), json!({"q": 1}));
    for v in [&x, &y, &x2, &p, &q] {
        deliver(s, v, T0 + 100, &manual());
    }
    let open_k = conflict_id(&k, &x2.version.id(), &y.version.id());
    let acked_k = conflict_id(&k, &x.version.id(), &y.version.id());
    let other = conflict_id(&k2, &p.version.id(), &q.version.id());
    s.acknowledge_conflict(&acked_k, "carol", T0 + 150).expect("acknowledge").expect("known");

    drop(store);
    store = h.open();
    let s = store.as_ref();
    let events_before = s.last_event_seq().expect("last_event_seq");
    let audit_before = all_audit(s).len();
    let pick = apply(s, put(&k, json!({"y": 1, "picked": true}), T0 + 200));
    let v = &pick.object.version;
    for id in [&open_k, &acked_k] {
        let record = s.conflict(id).expect("conflict").expect("known");
        assert_eq!(record.status, ConflictStatus::Resolved, "{id}");
        assert_eq!(record.resolved_by.as_ref(), Some(&v.id()));
    }
    assert_eq!(
        s.conflict(&acked_k).expect("conflict").expect("known").acknowledged,
        Some(("carol".to_owned(), T0 + 150)),
        "the acknowledgement is kept"
    );
    assert_eq!(s.conflict(&other).expect("conflict").expect("known").status, ConflictStatus::Open);

    let events = s.events(events_before, MAX_PAGE).expect("events");
    assert_eq!(kinds(&events), ["write", "conflict", "conflict"]);
    assert_version_event(&events[0], &k, v, None, true);
    for e in &events[1..] {
        let record = s.conflict(e.event.data["id"].as_str().expect("id")).expect("conflict").expect("known");
        assert_conflict_event(e, &record, "resolved");
        assert_eq!(e.event.at_ms, T0 + 200);
    }
    let audit = all_audit(s);
    let actions: Vec<(&str, &str)> =
        audit[audit_before..].iter().map(|e| (e.record.action.as_str(), e.record.outcome.as_str())).collect();
    assert_eq!(actions, [("put", "applied"), ("conflict", "resolved"), ("conflict", "resolved")]);

    let tomb = apply(s, delete(&k2, T0 + 300));
    let record = s.conflict(&other).expect("conflict").expect("known");
    assert_eq!(
        (record.status, record.resolved_by),
        (ConflictStatus::Resolved, Some(tomb.object.version.id())),
        "a local delete resolves too"
    );
    let last = s.events(s.last_event_seq().expect("seq") - 2, MAX_PAGE).expect("events");
    assert_eq!(kinds(&last), ["delete", "conflict"]);
}

/// Acknowledging an open conflict records who and when (the provisional winner stays current),
/// with an audit entry and a `conflict` event; acknowledging it again, or a conflict that is
/// not open, changes and records nothing; an unknown id is `None`.
pub fn acknowledge_marks_an_open_conflict_once(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let s = store.as_ref();
    let [a, b, _] = others(s);
    let k = key(Kind::Policy, "region-a", "limits");
    let lww = key(Kind::Policy, "region-a", "decided");
    let x = remote(&k, &a, T0 + 10, vv(&[(&a, 1)]), json!({"x": 1}));
    let y = remote(&k, &b, T0 + 20, vv(&[(&b, 1)]), json!({"y": 1}));
    deliver(s, &x, T0 + 100, &manual());
    deliver(s, &y, T0 + 100, &manual());
    let p = remote(&lww, &a, T0 + 10, vv(&[(&a, 1)]), json!({"p": 1}));
    let q = remote(&lww, &b, T0 + 20, vv(&[(&b, 1)]), json!({"q": 1}));
    deliver(s, &p, T0 + 100, &LastWriteWins);
    deliver(s, &q, T0 + 100, &LastWriteWins);
    let id = conflict_id(&k, &x.version.id(), &y.version.id());
    let decided = conflict_id(&lww, &p.version.id(), &q.version.id());
    let before = s.conflict(&id).expect("conflict").expect("known");
    let audit_before = all_audit(s).len();
    let events_before = s.last_event_seq().expect("last_event_seq");

    let acked = s.acknowledge_conflict(&id, "carol", T0 + 500).expect("acknowledge").expect("known");
    let expected = ConflictRecord {
        status: ConflictStatus::Acknowledged,
        acknowledged: Some(("carol".to_owned(), T0 + 500)),
        ..before.clone()
    };
    assert_eq!(acked, expected);
    assert_eq!(s.conflict(&id).expect("conflict"), Some(expected.clone()));
    assert_eq!(must_get(s, &k).version, y.version, "the provisional winner stays current");
    let audit = all_audit(s);
    assert_eq!(audit.len(), audit_before + 1);
    let entry = &audit[audit_before].record;
    assert_eq!(
        (entry.actor.as_str(), entry.action.as_str(), entry.outcome.as_str(), entry.at_ms),
        ("carol", "acknowledge", "acknowledged", T0 + 500)
    );
    assert_eq!((entry.key.as_ref(), entry.version.as_ref()), (Some(&k), Some(&y.version.id())));
    assert!(entry.detail.contains(&id) && entry.detail.contains("carol"), "{}", entry.detail);
    let events = s.events(events_before, MAX_PAGE).expect("events");
    assert_eq!(events.len(), 1);
    assert_conflict_event(&events[0], &expected, "acknowledged");
    assert_eq!(events[0].event.at_ms, T0 + 500);

    let again = s.acknowledge_conflict(&id, "dave", T0 + 600).expect("acknowledge");
    assert_eq!(again, Some(expected.clone()), "acknowledging twice changes nothing");
    let resolved = s.acknowledge_conflict(&decided, "dave", T0 + 600).expect("acknowledge").expect("known");
    assert_eq!((resolved.status, resolved.acknowledged), (ConflictStatus::Resolved, None));
    assert_eq!(s.acknowledge_conflict("0123456789abcdef", "dave", T0 + 600).expect("acknowledge"), None);
    assert_eq!(all_audit(s).len(), audit_before + 1, "and records nothing");
    assert_eq!(s.last_event_seq().expect("last_event_seq"), events_before + 1);
    assert_eq!(conflict_ids(s, &every(Some(ConflictStatus::Acknowledged))), std::slice::from_ref(&id));

    drop(store);
    store = h.open();
    assert_eq!(store.conflict(&id).expect("conflict"), Some(expected), "it survives a restart");
}

/// Sync may deliver a batch twice, on the same link or another: the conflict is recorded once,
/// with one audit entry and one event.
pub fn a_duplicate_delivery_records_nothing_twice(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [a, b, _] = others(store);
    let k = key(Kind::Policy, "region-a", "limits");
    let x = remote(&k, &a, T0 + 10, vv(&[(&a, 1)]), json!({"x": 1}));
    let y = remote(&k, &b, T0 + 20, vv(&[(&b, 1)]), json!({"y": 1}));
    let batch = [x.clone(), y.clone()];
    let first = apply_with(store, &a, &batch, T0 + 100, &manual());
    assert_eq!((first.applied, first.concurrent), (2, 1));
    let snapshot = |s: &dyn Store| (all_conflicts(s), all_audit(s), all_events(s));
    let before = snapshot(store);
    assert_eq!((before.0.len(), conflict_audit(store).len(), before.2.len()), (1, 1, 3));
    for from in [&a, &b] {
        let again = apply_with(store, from, &batch, T0 + 200, &manual());
        assert_eq!((again.applied, again.duplicates, again.concurrent), (0, 2, 0));
        assert_eq!(snapshot(store), before, "a duplicate records no second conflict, audit entry or event");
    }
}

/// The event log: appended events and the store's own, in one sequence, oldest first; paged
/// by `after` and `limit`; `last_event_seq`; kept across a restart.
pub fn events_log_in_order_and_page(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let s = store.as_ref();
    let [region, ..] = others(s);
    assert_eq!(s.last_event_seq().expect("last_event_seq"), 0);
    assert!(all_events(s).is_empty());
    let k = key(Kind::Policy, "global", "baseline");
    let written = apply(s, put(&k, json!({"v": 1}), T0));
    let refusal = NewEvent {
        at_ms: T0 + 1,
        kind: "refusal".to_owned(),
        object: Some(k.clone()),
        data: json!({"rule": "not-in-lineage", "detail": "no", "n": [1, 2.5, null]}),
    };
    let seq = s.append_event(refusal.clone()).expect("append_event");
    let link = NewEvent {
        at_ms: T0 + 2,
        kind: "link".to_owned(),
        object: None,
        data: json!({"peer": region.as_str(), "state": "disconnected"}),
    };
    let link_seq = s.append_event(link.clone()).expect("append_event");
    assert!(link_seq > seq);
    let tomb = apply(s, delete(&k, T0 + 3));
    let r = remote(&key(Kind::Policy, "global", "other"), &region, T0 + 4, vv(&[(&region, 1)]), json!({}));
    deliver(s, &r, T0 + 5, &LastWriteWins);

    let events = all_events(s);
    assert_eq!(kinds(&events), ["write", "refusal", "link", "delete", "write"]);
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "sequence numbers increase");
    assert_version_event(&events[0], &k, &written.object.version, None, true);
    assert_eq!(events[0].event.at_ms, T0);
    assert_eq!((events[1].seq, &events[1].event), (seq, &refusal), "appended events read back as they were");
    assert_eq!((events[2].seq, &events[2].event), (link_seq, &link));
    assert_version_event(&events[3], &k, &tomb.object.version, None, true);
    assert_version_event(&events[4], &r.key, &r.version, Some(&region), true);
    let last = events[4].seq;
    assert_eq!(s.last_event_seq().expect("last_event_seq"), last);

    let page = |after, limit| s.events(after, limit).expect("events");
    assert_eq!(page(0, 2), events[..2].to_vec());
    assert_eq!(page(events[1].seq, 2), events[2..4].to_vec());
    assert_eq!(page(events[3].seq, 2), events[4..].to_vec());
    assert!(page(last, 10).is_empty());
    assert!(page(u64::MAX, 10).is_empty());
    assert_eq!(page(0, 0), events, "a limit of 0 means a full page");
    assert_eq!(page(0, usize::MAX), events, "a huge limit is clamped, not an error");

    drop(store);
    store = h.open();
    assert_eq!(all_events(store.as_ref()), events, "the event log survives a restart");
    let next = store.append_event(link).expect("append_event");
    assert!(next > last, "and continues after it");
}

/// Webhook deliveries read back newest first, per webhook or all; cursors start at 0, are
/// replaced by a save, and both survive a restart.
pub fn webhook_deliveries_and_cursors_round_trip(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let s = store.as_ref();
    assert!(s.deliveries(None, 10).expect("deliveries").is_empty());
    assert_eq!(s.webhook_cursor("ops").expect("webhook_cursor"), 0);
    let attempt = |webhook: &str, event_seq, attempt, status, outcome: &str| Delivery {
        webhook: webhook.to_owned(),
        event_seq,
        attempt,
        at_ms: T0 + u64::from(attempt),
        status,
        outcome: outcome.to_owned(),
        detail: format!("attempt {attempt}"),
    };
    let made = [
        attempt("ops", 4, 1, Some(500), "failed"),
        attempt("ops", 4, 2, Some(204), "delivered"),
        attempt("audit-sink", 4, 7, None, "gave-up"),
    ];
    let mut entries = Vec::new();
    for d in &made {
        let id = s.record_delivery(d).expect("record_delivery");
        entries.push(DeliveryEntry { id, delivery: d.clone() });
    }
    assert!(entries.windows(2).all(|w| w[0].id < w[1].id));
    let newest_first: Vec<DeliveryEntry> = entries.iter().rev().cloned().collect();
    assert_eq!(s.deliveries(None, 10).expect("deliveries"), newest_first);
    assert_eq!(s.deliveries(None, 1).expect("deliveries"), newest_first[..1].to_vec());
    assert_eq!(s.deliveries(Some("ops"), 10).expect("deliveries"), newest_first[1..].to_vec());
    assert!(s.deliveries(Some("nobody"), 10).expect("deliveries").is_empty());

    s.save_webhook_cursor("ops", 7).expect("save_webhook_cursor");
    assert_eq!(s.webhook_cursor("ops").expect("webhook_cursor"), 7);
    s.save_webhook_cursor("ops", 9).expect("save_webhook_cursor");
    s.save_webhook_cursor("audit-sink", 4).expect("save_webhook_cursor");
    assert_eq!(s.webhook_cursor("ops").expect("webhook_cursor"), 9, "a save replaces the cursor");

    drop(store);
    store = h.open();
    let s = store.as_ref();
    assert_eq!(s.webhook_cursor("ops").expect("webhook_cursor"), 9);
    assert_eq!(s.webhook_cursor("audit-sink").expect("webhook_cursor"), 4);
    assert_eq!(s.deliveries(None, 10).expect("deliveries"), newest_first, "deliveries survive a restart");
}

/// The site cards a peer sent are kept with its link record, across a restart.
pub fn link_peer_sites_round_trip_across_reopen(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let [region, global, _] = others(store.as_ref());
    let card = |id: &SiteId, scope: &str, parent: Option<&SiteId>, level, autonomy, strategy| SiteCard {
        id: id.clone(),
        scope: Scope::new(scope).expect("a valid scope"),
        parent: parent.cloned(),
        level,
        autonomy,
        can_operate_isolated: true,
        can_modify_policies: level != Level::Global,
        can_deploy_versions: autonomy == Autonomy::Full,
        strategy,
    };
    let record = LinkRecord {
        peer: region.clone(),
        cursor: 3,
        peer_scopes: [Scope::new("region-a").expect("scope")].into_iter().collect(),
        last_sync_ms: Some(T0),
        signal: "up".to_owned(),
        peer_sites: vec![
            card(&global, "global", None, Level::Global, Autonomy::Full, Strategy::LastWriteWins),
            card(&region, "region-a", Some(&global), Level::Regional, Autonomy::Full, Strategy::Manual),
            card(
                store.site(),
                "edge-zone-a1",
                Some(&region),
                Level::Local,
                Autonomy::Conditional,
                Strategy::AuthorityWins,
            ),
        ],
    };
    store.save_link(&record).expect("save_link");
    assert_eq!(store.link(&region).expect("link"), Some(record.clone()));
    drop(store);
    store = h.open();
    assert_eq!(store.link(&region).expect("link"), Some(record.clone()), "the cards survive a restart");
    let forgotten = LinkRecord { peer_sites: Vec::new(), ..record };
    store.save_link(&forgotten).expect("save_link");
    assert_eq!(store.link(&region).expect("link"), Some(forgotten));
}

/// Conflicts list newest first (by detection time, then id), filtered by status and object,
/// at most `limit` (0 means a full page).
pub fn conflicts_list_newest_first_and_filter(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let s = store.as_ref();
    let [a, b, c] = others(s);
    let pair = |name: &str, now, policy: &dyn ConflictPolicy| {
        let k = key(Kind::Policy, "global", name);
        let x = remote(&k, &a, T0 + 10, vv(&[(&a, 1)]), json!({"x": name}));
        let y = remote(&k, &b, T0 + 20, vv(&[(&b, 1)]), json!({"y": name}));
        apply_with(s, &a, &[x.clone(), y.clone()], now, policy);
        conflict_id(&k, &x.version.id(), &y.version.id())
    };
    let decided = pair("one", T0 + 100, &LastWriteWins);
    let open = pair("two", T0 + 200, &manual());
    let acked = pair("three", T0 + 300, &manual());
    s.acknowledge_conflict(&acked, "carol", T0 + 350).expect("acknowledge");
    // Three versions concurrent with each other, in one batch: three conflicts at one time.
    let k = key(Kind::Policy, "global", "four");
    let vs: Vec<RemoteVersion> = [&a, &b, &c]
        .iter()
        .enumerate()
        .map(|(i, o)| remote(&k, o, T0 + 30 + i as u64, vv(&[(o, 1)]), json!({"i": i})))
        .collect();
    apply_with(s, &a, &vs, T0 + 400, &LastWriteWins);
    let mut same_time = vec![
        conflict_id(&k, &vs[0].version.id(), &vs[1].version.id()),
        conflict_id(&k, &vs[0].version.id(), &vs[2].version.id()),
        conflict_id(&k, &vs[1].version.id(), &vs[2].version.id()),
    ];
    same_time.sort();

    let mut newest_first = same_time.clone();
    newest_first.extend([acked.clone(), open.clone(), decided.clone()]);
    assert_eq!(conflict_ids(s, &every(None)), newest_first);
    assert_eq!(conflict_ids(s, &ConflictFilter::default()), newest_first, "a limit of 0 means a full page");
    assert_eq!(conflict_ids(s, &ConflictFilter { limit: 4, ..every(None) }), newest_first[..4].to_vec());
    assert_eq!(conflict_ids(s, &every(Some(ConflictStatus::Open))), [open]);
    assert_eq!(conflict_ids(s, &every(Some(ConflictStatus::Acknowledged))), [acked]);
    let mut resolved = same_time.clone();
    resolved.push(decided);
    assert_eq!(conflict_ids(s, &every(Some(ConflictStatus::Resolved))), resolved);
    let of_four = ConflictFilter { key: Some(k), ..every(Some(ConflictStatus::Resolved)) };
    assert_eq!(conflict_ids(s, &of_four), same_time);
    let none = ConflictFilter { key: Some(key(Kind::Policy, "global", "none")), ..every(None) };
    assert!(conflict_ids(s, &none).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Property test: convergence whatever the interleaving

/// One step of a generated causal history of one object across three origin sites.
#[derive(Debug, Clone)]
enum Step {
    /// Origin `origin` writes (a delete when `deleted`) at physical time `T0 + wall`, having
    /// seen what it knows.
    Write { origin: usize, deleted: bool, wall: u64 },
    /// Origin `to` learns every version origin `from` knows.
    Sync { from: usize, to: usize },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    prop_oneof![
        3 => (0..3usize, proptest::bool::weighted(0.15), 0u64..40)
            .prop_map(|(origin, deleted, wall)| Step::Write { origin, deleted, wall }),
        2 => (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

/// How one replica receives the versions: a shuffle, some versions delivered again, cut into
/// batches, each from one of the origins.
#[derive(Debug, Clone)]
struct Delivering {
    seed: u64,
    duplicates: Vec<usize>,
}

fn delivering() -> impl proptest::strategy::Strategy<Value = Delivering> {
    (any::<u64>(), proptest::collection::vec(any::<usize>(), 0..4))
        .prop_map(|(seed, duplicates)| Delivering { seed, duplicates })
}

/// SplitMix64: a small deterministic generator for the shuffles.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The versions the steps write, as their origins stamp them.
fn history(key: &ObjectKey, origins: &[SiteId; 3], steps: &[Step]) -> Vec<RemoteVersion> {
    let mut written: Vec<RemoteVersion> = Vec::new();
    let mut known: [BTreeSet<usize>; 3] = Default::default();
    let mut clocks = [(); 3].map(|()| HlcClock::new(model::Hlc::ZERO, u64::MAX));
    for (n, s) in steps.iter().enumerate() {
        match *s {
            Step::Write { origin, deleted, wall } => {
                let mut vector = VersionVector::new();
                for &i in &known[origin] {
                    vector.merge(&written[i].version.vv);
                    // Having seen it, the origin's clock is past it.
                    let _ = clocks[origin].observe(written[i].version.hlc, 0);
                }
                vector.increment(&origins[origin]);
                let o = &origins[origin];
                let mut r = if deleted {
                    remote_delete(key, o, 0, vector)
                } else {
                    remote(key, o, 0, vector, json!({"step": n}))
                };
                r.version.hlc = clocks[origin].tick(T0 + wall);
                known[origin].insert(written.len());
                written.push(r);
            }
            Step::Sync { from, to } => {
                let learned = known[from].clone();
                known[to].extend(learned);
            }
        }
    }
    written
}

/// The order one replica receives `versions` in, cut into batches with the peer each came from.
fn batches(versions: &[RemoteVersion], d: &Delivering) -> Vec<(SiteId, Vec<RemoteVersion>)> {
    let mut state = d.seed;
    let mut order: Vec<usize> = (0..versions.len()).collect();
    for i in (1..order.len()).rev() {
        let j = usize::try_from(next(&mut state) % (i as u64 + 1)).unwrap_or(0);
        order.swap(i, j);
    }
    for &dup in &d.duplicates {
        let at = usize::try_from(next(&mut state) % (order.len() as u64 + 1)).unwrap_or(0);
        order.insert(at, dup % versions.len());
    }
    let mut out: Vec<(SiteId, Vec<RemoteVersion>)> = Vec::new();
    let mut rest = order.as_slice();
    while !rest.is_empty() {
        let size = usize::try_from(next(&mut state) % 3).unwrap_or(0) + 1;
        let (batch, tail) = rest.split_at(size.min(rest.len()));
        let from = versions[batch[0]].version.origin.clone();
        out.push((from, batch.iter().map(|&i| versions[i].clone()).collect()));
        rest = tail;
    }
    out
}

/// What one replica ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    current: VersionId,
    history: BTreeSet<VersionId>,
    /// Conflicts between versions of the final frontier: id → (winner, status).
    final_conflicts: BTreeMap<String, (VersionId, ConflictStatus)>,
}

/// For any causal history of one object written at three sites with concurrent branches, and
/// any interleaving of its versions (shuffled, some delivered twice, in batches from different
/// peers) delivered to three fresh stores, under each strategy: every store ends with the same
/// current version (the strategy's pick among the versions no other dominates), the same
/// history (every version), and the same conflicts between the versions on that final frontier
/// (every concurrent pair of them, same id, same winner, same status). Every conflict recorded
/// anywhere is a concurrent pair, sides in order, with the winner the strategy prefers of the
/// two, open under `manual` unless a version that dominates both sides arrived after it; a
/// conflict between versions that a later version of one side superseded may be recorded or
/// not, depending on whether it was seen before that version arrived. Each store announces
/// every version and every conflict change once, and audits every conflict change.
/// 40 histories by default (`PROPTEST_CASES` overrides).
pub fn conflicts_converge_whatever_the_interleaving(h: &mut dyn Harness) {
    let mut config = Config { failure_persistence: None, ..Config::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 40;
    }
    let mut runner = TestRunner::new(config);
    let h = RefCell::new(h);
    let origins = {
        let mut h = h.borrow_mut();
        h.reset();
        let probe = h.open();
        others(probe.as_ref())
    };
    let k = key(Kind::Policy, "region-a", "limits");
    let input = (proptest::collection::vec(step(), 2..14), proptest::collection::vec(delivering(), 3));
    let result = runner.run(&input, |(steps, replicas)| {
        let versions = history(&k, &origins, &steps);
        if versions.is_empty() {
            return Ok(());
        }
        let all: BTreeSet<VersionId> = versions.iter().map(|r| r.version.id()).collect();
        let frontier: Vec<&RemoteVersion> = versions
            .iter()
            .filter(|v| !versions.iter().any(|w| w.version.vv.compare(&v.version.vv) == Causality::Dominates))
            .collect();
        let on_frontier: BTreeSet<VersionId> = frontier.iter().map(|r| r.version.id()).collect();
        for strategy in [Strategy::LastWriteWins, Strategy::AuthorityWins, Strategy::Manual] {
            let policy = TestPolicy::new(strategy)
                .with_rank(&origins[0], 3)
                .with_rank(&origins[1], 2)
                .with_rank(&origins[2], 2);
            let prefers = |a: &Version, b: &Version| match strategy {
                Strategy::AuthorityWins => {
                    policy.rank(&a.origin).cmp(&policy.rank(&b.origin)).then_with(|| a.lww_cmp(b))
                }
                Strategy::LastWriteWins | Strategy::Manual => a.lww_cmp(b),
            };
            let pick = |a: &Version, b: &Version| if prefers(a, b).is_lt() { b.id() } else { a.id() };
            let expected_current =
                frontier.iter().map(|r| &r.version).max_by(|a, b| prefers(a, b)).expect("a frontier").id();
            let open_status =
                if strategy == Strategy::Manual { ConflictStatus::Open } else { ConflictStatus::Resolved };
            let mut expected_final = BTreeMap::new();
            for (i, p) in frontier.iter().enumerate() {
                for q in &frontier[i + 1..] {
                    if p.version.vv.compare(&q.version.vv) == Causality::Concurrent {
                        let id = conflict_id(&k, &p.version.id(), &q.version.id());
                        expected_final.insert(id, (pick(&p.version, &q.version), open_status));
                    }
                }
            }
            let by_id: BTreeMap<VersionId, &Version> =
                versions.iter().map(|r| (r.version.id(), &r.version)).collect();

            let mut outcomes = Vec::new();
            for replica in &replicas {
                let mut h = h.borrow_mut();
                h.reset();
                let store = h.open();
                let store = store.as_ref();
                let mut applied = 0;
                for (from, batch) in batches(&versions, replica) {
                    let report = store
                        .apply_remote(&from, &batch, T0 + 1_000, &policy)
                        .map_err(|e| TestCaseError::fail(format!("applying: {e}")))?;
                    applied += report.applied;
                }
                prop_assert_eq!(applied, versions.len(), "every version applied once");
                let current = store.get(&k).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let current =
                    current.map(|o| o.version.id()).ok_or_else(|| TestCaseError::fail("no object"))?;
                let history: BTreeSet<VersionId> = store
                    .history(&k)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .into_iter()
                    .map(|e| e.version.id())
                    .collect();
                let records =
                    store.conflicts(&every(None)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut changes = 0;
                for c in &records {
                    let [a, b] = [&c.sides[0].version, &c.sides[1].version];
                    let (va, vb) = (by_id[a], by_id[b]);
                    prop_assert!(a < b, "sides in version order: {:?}", c);
                    prop_assert_eq!(va.vv.compare(&vb.vv), Causality::Concurrent, "{:?}", c);
                    prop_assert_eq!(&c.id, &conflict_id(&k, a, b));
                    prop_assert_eq!((c.strategy, &c.winner), (strategy, &pick(va, vb)), "{:?}", c);
                    let superseded = versions.iter().any(|w| {
                        w.version.vv.compare(&va.vv) == Causality::Dominates
                            && w.version.vv.compare(&vb.vv) == Causality::Dominates
                    });
                    let status = if strategy == Strategy::Manual && !superseded {
                        ConflictStatus::Open
                    } else {
                        ConflictStatus::Resolved
                    };
                    prop_assert_eq!(c.status, status, "{:?}", c);
                    prop_assert_eq!(c.resolved_by.is_some(), strategy == Strategy::Manual && superseded);
                    changes += if c.resolved_by.is_some() { 2 } else { 1 };
                }
                let events = store.last_event_seq().map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(
                    events,
                    (versions.len() + changes) as u64,
                    "one event per version and change"
                );
                let audit = store.audit(0, MAX_PAGE).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(audit.len(), changes, "one audit entry per conflict change");
                let final_conflicts = records
                    .iter()
                    .filter(|c| c.sides.iter().all(|s| on_frontier.contains(&s.version)))
                    .map(|c| (c.id.clone(), (c.winner.clone(), c.status)))
                    .collect();
                outcomes.push(Outcome { current, history, final_conflicts });
            }
            let expected =
                Outcome { current: expected_current, history: all.clone(), final_conflicts: expected_final };
            for (n, o) in outcomes.iter().enumerate() {
                prop_assert_eq!(o, &expected, "{:?}, replica {}", strategy, n);
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("replicas diverge: {e}");
    }
}
