//! The replication cases of the suite: applying versions from peers, the change log as links
//! read it, sync debt, digests and link records. Written against the trait only; remote
//! versions are built here as a peer would have stamped them.
//!
//! The cases assume the harness's maximum clock skew is at least a second and less than a day.

use std::collections::BTreeSet;

use model::{
    Causality, ContentHash, Hlc, Kind, ObjectKey, Scope, SiteId, SpecText, StoredObject, Version,
    VersionVector,
};
use serde_json::json;

use super::{
    Harness, T0, all_changes, apply, delete, get, history_ids, key, labels, list_keys, must_get, policy, put,
};
use crate::{
    ApplyError, ApplyReport, Debt, LastWriteWins, LinkBatch, LinkChange, LinkQuery, LinkRecord, ListFilter,
    MAX_LINK_BATCH, MAX_PAGE, RemoteVersion, SkewRefusal, Store,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Three sites other than the store's own, in a fixed order: `[a, b, c]`.
pub(super) fn others(store: &dyn Store) -> [SiteId; 3] {
    let names = ["region-a-control", "global-control", "edge-zone-a2", "edge-zone-b1"];
    let mut sites = names.iter().map(|n| site(n)).filter(|s| s != store.site());
    [(); 3].map(|()| sites.next().expect("three other sites"))
}

pub(super) fn site(name: &str) -> SiteId {
    SiteId::new(name).expect("a valid site id")
}

fn scope(name: &str) -> Scope {
    Scope::new(name).expect("a valid scope")
}

fn scopes(names: &[&str]) -> BTreeSet<Scope> {
    names.iter().map(|n| scope(n)).collect()
}

pub(super) fn vv(entries: &[(&SiteId, u64)]) -> VersionVector {
    let mut v = VersionVector::new();
    for (s, n) in entries {
        for _ in 0..*n {
            v.increment(s);
        }
    }
    v
}

/// A version of `key` as `origin` stamped it: timestamp `(wall, 0)`, vector `vector`.
pub(super) fn remote(
    key: &ObjectKey,
    origin: &SiteId,
    wall: u64,
    vector: VersionVector,
    spec: serde_json::Value,
) -> RemoteVersion {
    let labels = labels(&[("team", "remote")]);
    let version = Version {
        hlc: Hlc::new(wall, 0),
        origin: origin.clone(),
        vv: vector,
        author: format!("operator@{origin}"),
        content_hash: ContentHash::of(key, &labels, &spec, false),
        deleted: false,
    };
    RemoteVersion { key: key.clone(), version, labels, spec: SpecText::of(&spec) }
}

/// A tombstone of `key` as `origin` stamped it.
pub(super) fn remote_delete(
    key: &ObjectKey,
    origin: &SiteId,
    wall: u64,
    vector: VersionVector,
) -> RemoteVersion {
    let mut r = remote(key, origin, wall, vector, serde_json::Value::Null);
    r.labels.clear();
    r.version.deleted = true;
    r.version.content_hash = ContentHash::of(key, &r.labels, &serde_json::Value::Null, true);
    r
}

pub(super) fn apply_batch(
    store: &dyn Store,
    from: &SiteId,
    batch: &[RemoteVersion],
    now_ms: u64,
) -> ApplyReport {
    store
        .apply_remote(from, batch, now_ms, &LastWriteWins)
        .unwrap_or_else(|e| panic!("a batch of {} from {from} must apply: {e} ({e:?})", batch.len()))
}

fn query(after: u64, peer: &SiteId, scopes: Option<BTreeSet<Scope>>) -> LinkQuery {
    LinkQuery { after, peer: peer.clone(), scopes }
}

fn for_link(store: &dyn Store, q: &LinkQuery, limit: usize) -> LinkBatch {
    store.changes_for_link(q, limit).unwrap_or_else(|e| panic!("changes_for_link {q:?}: {e} ({e:?})"))
}

fn debt(store: &dyn Store, q: &LinkQuery) -> Debt {
    store.link_debt(q).unwrap_or_else(|e| panic!("link_debt {q:?}: {e} ({e:?})"))
}

/// `report.logged` names, for each version of `batch` the report applied, the change the log
/// holds under that sequence number, in log order.
fn assert_logged(store: &dyn Store, batch: &[RemoteVersion], report: &ApplyReport) {
    assert_eq!(report.logged.len(), report.applied, "one logged entry per applied version");
    assert!(report.logged.windows(2).all(|w| w[0].1 < w[1].1 && w[0].0 < w[1].0), "{:?}", report.logged);
    for &(index, seq) in &report.logged {
        let change = store.changes(seq - 1, 1).expect("changes");
        let held = change.first().unwrap_or_else(|| panic!("no change at {seq}"));
        assert_eq!(held.seq, seq);
        assert_eq!((&held.key, held.version.id()), (&batch[index].key, batch[index].version.id()));
    }
}

/// The versions a link batch carries, by id, in order.
fn carried(batch: &LinkBatch) -> Vec<model::VersionId> {
    batch.changes.iter().map(|c| c.version.id()).collect()
}

pub(super) fn last_seq(store: &dyn Store) -> u64 {
    store.last_seq().expect("last_seq")
}

fn has(store: &dyn Store, r: &RemoteVersion) -> bool {
    store.has_version(&r.key, &r.version.id()).expect("has_version")
}

/// Content size as a link counts it: labels and spec as compact JSON.
fn content_bytes(c: &LinkChange) -> u64 {
    let labels = serde_json::to_string(&c.labels).expect("labels as JSON");
    (labels.len() + c.spec.as_str().len()) as u64
}

fn assert_dominates(a: &VersionVector, b: &VersionVector, what: &str) {
    assert_eq!(a.compare(b), Causality::Dominates, "{what}: {a:?} must dominate {b:?}");
}

// ---------------------------------------------------------------------------------------------
// Cases

/// A version from a peer is stored as it was stamped: it becomes the current version of a new
/// object (context = its vector, `created` = its timestamp), enters history and the change log
/// under the link it came on, and is held.
pub fn apply_remote_stores_a_peers_version(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, ..] = others(store);
    let k = key(Kind::Release, "region-a", "v1");
    let r = remote(&k, &region, T0, vv(&[(&region, 1)]), json!({"image": "v1"}));
    assert!(!has(store, &r));

    let report = apply_batch(store, &region, std::slice::from_ref(&r), T0 + 5);
    assert_eq!(
        report,
        ApplyReport {
            applied: 1,
            duplicates: 0,
            became_current: 1,
            concurrent: 0,
            last_seq: last_seq(store),
            logged: vec![(0, last_seq(store))],
        }
    );
    assert!(report.last_seq > 0);

    let got = must_get(store, &k);
    let expected = StoredObject {
        key: k.clone(),
        version: r.version.clone(),
        labels: r.labels.clone(),
        spec: r.spec.value().expect("the spec is JSON"),
        created: r.version.hlc,
        context: r.version.vv.clone(),
    };
    assert_eq!(got, expected, "the object is the peer's version, unchanged");
    assert_eq!(list_keys(store, &ListFilter::default()), vec![k.clone()]);
    assert_eq!(history_ids(store, &k), vec![r.version.id()]);
    assert!(has(store, &r));

    let changes = all_changes(store);
    assert_eq!(changes.len(), 1);
    let c = &changes[0];
    assert_eq!((c.seq, &c.key, &c.version), (report.last_seq, &k, &r.version));
    assert_eq!((&c.labels, &c.spec), (&r.labels, &r.spec.value().expect("the spec is JSON")));
    assert_eq!(c.from_site.as_ref(), Some(&region), "the change log records the link it came on");

    let empty = apply_batch(store, &region, &[], T0 + 6);
    assert_eq!(empty, ApplyReport { last_seq: report.last_seq, ..ApplyReport::default() });
}

/// Sync may deliver a batch twice: the second time every version is a duplicate and nothing
/// changes (objects, history, change log, clock).
pub fn a_batch_applied_twice_changes_nothing_the_second_time(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, global, _] = others(store);
    let a = policy("a");
    let b = key(Kind::Rollout, "region-a", "b");
    apply(store, put(&a, json!({"local": true}), T0));
    let batch = vec![
        remote(&a, &global, T0 + 1, vv(&[(store.site(), 1), (&global, 1)]), json!({"v": 1})),
        remote(&b, &region, T0 + 2, vv(&[(&region, 1)]), json!({"v": 1})),
        remote(&b, &region, T0 + 3, vv(&[(&region, 2)]), json!({"v": 2})),
    ];
    let first = apply_batch(store, &region, &batch, T0 + 10);
    assert_eq!((first.applied, first.duplicates, first.became_current), (3, 0, 3));
    assert_logged(store, &batch, &first);

    let snapshot = |s: &dyn Store| {
        (
            (get(s, &a), get(s, &b)),
            (s.history(&a).expect("history"), s.history(&b).expect("history")),
            (all_changes(s), s.clock().expect("clock")),
        )
    };
    let before = snapshot(store);
    let again = apply_batch(store, &region, &batch, T0 + 20);
    assert_eq!(
        again,
        ApplyReport {
            applied: 0,
            duplicates: 3,
            became_current: 0,
            concurrent: 0,
            last_seq: first.last_seq,
            logged: Vec::new()
        }
    );
    assert_eq!(snapshot(store), before, "a batch delivered twice changes nothing");
    let via_other_link = apply_batch(store, &global, &batch[1..], T0 + 30);
    assert_eq!(via_other_link.duplicates, 2, "a version is held once, whichever link brings it");
    assert_eq!(snapshot(store), before);

    let mut mixed = batch.clone();
    mixed.push(remote(&b, &region, T0 + 4, vv(&[(&region, 3)]), json!({"v": 3})));
    let partly = apply_batch(store, &region, &mixed, T0 + 40);
    assert_eq!((partly.applied, partly.duplicates), (1, 3), "only the new version is applied");
    assert_eq!(partly.logged, vec![(3, partly.last_seq)], "the new version is the fourth of the batch");
    assert_logged(store, &mixed, &partly);
    assert_eq!(history_ids(store, &b).len(), 3);
}

/// A peer's version that saw the local one (its vector dominates) becomes current; the
/// object's context merges both vectors and survives a restart.
pub fn a_dominating_remote_version_becomes_current_and_merges_the_context(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let s = store.as_ref();
    let [region, ..] = others(s);
    let me = s.site().clone();
    let k = policy("baseline");
    let local = apply(s, put(&k, json!({"v": 1}), T0));
    assert_eq!(
        local.object.context, local.object.version.vv,
        "after a local write the context is its vector"
    );
    assert_eq!(must_get(s, &k).context, vv(&[(&me, 1)]));

    let r = remote(&k, &region, T0 + 1_000, vv(&[(&me, 1), (&region, 1)]), json!({"v": 2}));
    let report = apply_batch(s, &region, std::slice::from_ref(&r), T0 + 1_000);
    assert_eq!((report.applied, report.became_current, report.concurrent), (1, 1, 0));
    let got = must_get(s, &k);
    assert_eq!(got.version, r.version, "the dominating version is current");
    assert_eq!(got.spec, json!({"v": 2}));
    assert_eq!(got.context, vv(&[(&me, 1), (&region, 1)]));
    assert_eq!(got.created, local.object.created, "an update from a peer keeps `created`");
    assert_eq!(history_ids(s, &k), vec![local.object.version.id(), r.version.id()]);
    let listed = super::list(s, &ListFilter::default());
    assert_eq!(listed, vec![got.clone()], "listings show the same object, context included");

    drop(store);
    store = h.open();
    assert_eq!(must_get(store.as_ref(), &k), got, "the context survives a restart");
}

/// A peer's version that loses last-write-wins (an older, concurrent write) goes to history
/// and merges into the context, but the current version stays; a local write afterwards
/// dominates both.
pub fn an_older_remote_version_goes_to_history_not_current(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, ..] = others(store);
    let me = store.site().clone();
    let k = policy("baseline");
    let local = apply(store, put(&k, json!({"local": 1}), T0 + 10_000));
    let older = remote(&k, &region, T0, vv(&[(&region, 1)]), json!({"remote": 1}));

    let report = apply_batch(store, &region, std::slice::from_ref(&older), T0 + 10_001);
    assert_eq!((report.applied, report.became_current, report.concurrent), (1, 0, 1));
    let got = must_get(store, &k);
    assert_eq!(got.version, local.object.version, "the last write still wins");
    assert_eq!(got.spec, json!({"local": 1}));
    assert_eq!(got.created, local.object.created);
    assert_eq!(got.context, vv(&[(&me, 1), (&region, 1)]), "the context covers the losing version too");
    assert_eq!(history_ids(store, &k), vec![local.object.version.id(), older.version.id()]);
    assert!(has(store, &older));

    let next = apply(store, put(&k, json!({"local": 2}), T0 + 10_002));
    assert_eq!(next.object.version.vv, vv(&[(&me, 2), (&region, 1)]));
    assert_dominates(&next.object.version.vv, &older.version.vv, "a write after seeing the conflict");
    assert_dominates(&next.object.version.vv, &local.object.version.vv, "a write after seeing the conflict");
    assert_eq!(must_get(store, &k).context, next.object.version.vv);
}

/// Concurrent versions applied in any order give the same current version (the
/// last-write-wins winner, ties broken by origin), the same context and the same history.
pub fn concurrent_versions_converge_whatever_the_order(h: &mut dyn Harness) {
    h.reset();
    let probe = h.open();
    let [a, b, c] = others(probe.as_ref());
    drop(probe);
    let k = key(Kind::Policy, "region-a", "limits");
    let base = remote(&k, &a, T0 + 1, vv(&[(&a, 1)]), json!({"v": 0}));
    let x = remote(&k, &a, T0 + 10, vv(&[(&a, 2)]), json!({"x": 1}));
    let y = remote(&k, &b, T0 + 5, vv(&[(&a, 1), (&b, 1)]), json!({"y": 1}));
    let z = remote(&k, &c, T0 + 10, vv(&[(&a, 1), (&c, 1)]), json!({"z": 1}));
    let winner = model::lww_winner(&x.version, &z.version).clone();
    let orders: [[&RemoteVersion; 3]; 6] =
        [[&x, &y, &z], [&x, &z, &y], [&y, &x, &z], [&y, &z, &x], [&z, &x, &y], [&z, &y, &x]];

    let mut outcomes = Vec::new();
    for (n, order) in orders.iter().enumerate() {
        h.reset();
        let store = h.open();
        let store = store.as_ref();
        apply_batch(store, &a, std::slice::from_ref(&base), T0 + 20);
        // One version alone on one link, then the other two in one batch on another.
        let first = apply_batch(store, &b, &[order[0].clone()], T0 + 20);
        let rest = apply_batch(store, &a, &[order[1].clone(), order[2].clone()], T0 + 21);
        assert_eq!(first.applied + rest.applied, 3);
        assert_eq!(
            first.concurrent + rest.concurrent,
            2,
            "order {n}: the second and third of three concurrent versions conflict"
        );
        let got = must_get(store, &k);
        assert_eq!(got.version, winner, "order {n}: the last-write-wins winner is current");
        assert_eq!(got.context, vv(&[(&a, 2), (&b, 1), (&c, 1)]), "order {n}");
        assert_eq!(got.created, base.version.hlc, "order {n}");
        let history: BTreeSet<_> = history_ids(store, &k).into_iter().collect();
        outcomes.push((got, history));
    }
    assert!(outcomes.windows(2).all(|w| w[0] == w[1]), "every order gives the same object and history");
    assert_eq!(outcomes[0].1.len(), 4, "both sides of every conflict stay in history");
}

/// The clock observes remote timestamps: after applying a version stamped ahead of local
/// time, the clock is past it, and the next local write (even at an earlier physical time)
/// is later in last-write-wins order and dominates it causally.
pub fn a_local_write_after_a_remote_version_follows_it(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let s = store.as_ref();
    let [region, ..] = others(s);
    let me = s.site().clone();
    let k = policy("baseline");
    let first = apply(s, put(&k, json!({"v": 1}), T0));
    let ahead = remote(&k, &region, T0 + 1_000, vv(&[(&me, 1), (&region, 1)]), json!({"v": 2}));
    apply_batch(s, &region, std::slice::from_ref(&ahead), T0);
    assert!(s.clock().expect("clock") >= ahead.version.hlc, "the clock is past the remote timestamp");

    drop(store);
    store = h.open();
    let s = store.as_ref();
    assert!(s.clock().expect("clock") >= ahead.version.hlc, "and stays past it across a restart");
    let next = apply(s, put(&k, json!({"v": 3}), T0 + 1));
    assert!(
        next.object.version.hlc > ahead.version.hlc,
        "{} > {}",
        next.object.version.hlc,
        ahead.version.hlc
    );
    assert_dominates(&next.object.version.vv, &ahead.version.vv, "the local write saw the remote one");
    assert_eq!(next.object.version.vv, vv(&[(&me, 2), (&region, 1)]));
    assert!(!next.created);
    assert_eq!(next.object.created, first.object.created);
    assert_eq!(must_get(s, &k).version, next.object.version);

    // A new object written after a remote version of another object is unaffected by it.
    let other = apply(s, put(&policy("other"), json!({}), T0 + 2));
    assert_eq!(other.object.version.vv, vv(&[(&me, 1)]));
}

/// A batch with a timestamp beyond the maximum clock skew is refused whole, with an error
/// naming the object and version; nothing of it is applied and the clock does not move.
pub fn a_batch_beyond_the_clock_skew_is_refused_and_changes_nothing(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, ..] = others(store);
    let k = policy("baseline");
    apply(store, put(&k, json!({"v": 1}), T0));
    let good = remote(&policy("good"), &region, T0 + 1, vv(&[(&region, 1)]), json!({}));
    let update = remote(&k, &region, T0 + 2, vv(&[(store.site(), 1), (&region, 1)]), json!({"v": 2}));
    const DAY_MS: u64 = 24 * 60 * 60 * 1_000;
    let bad = remote(&policy("bad"), &region, T0 + 400 * DAY_MS, vv(&[(&region, 1)]), json!({}));

    let snapshot = |s: &dyn Store| {
        (
            (get(s, &k), get(s, &good.key), get(s, &bad.key)),
            (s.history(&k).expect("history"), all_changes(s), s.clock().expect("clock")),
            s.digest_entries(None).expect("digest_entries"),
        )
    };
    let before = snapshot(store);
    let err = match store.apply_remote(
        &region,
        &[good.clone(), update.clone(), bad.clone()],
        T0 + 3,
        &LastWriteWins,
    ) {
        Ok(report) => panic!("a batch with a timestamp 400 days ahead must be refused, got {report:?}"),
        Err(e) => e,
    };
    match &err {
        ApplyError::ClockSkew(refusal) => {
            let SkewRefusal { key, version, .. } = refusal.as_ref();
            assert_eq!(key, &bad.key);
            assert_eq!(version, &bad.version.id());
        }
        other => panic!("expected ClockSkew, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&bad.key.to_string()) && message.contains(&bad.version.id().to_string()),
        "the error names the object and the version: {message}"
    );
    assert_eq!(snapshot(store), before, "a refused batch changes nothing");
    assert!(!has(store, &good) && !has(store, &update));

    let report = apply_batch(store, &region, &[good.clone(), update.clone()], T0 + 3);
    assert_eq!(report.applied, 2, "the versions before the refused one apply on their own");
}

/// A link does not carry a change back to the peer it came from, and carries only the scopes
/// asked for; local writes go to every peer.
pub fn changes_for_link_does_not_echo_and_filters_scopes(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, global, _] = others(store);
    let g = policy("g");
    let ra = key(Kind::Release, "region-a", "ra");
    let mine = key(Kind::SiteStatus, store.site().as_str(), "status");
    let local_g = apply(store, put(&g, json!({}), T0));
    let from_region = remote(&ra, &region, T0 + 1, vv(&[(&region, 1)]), json!({}));
    let from_global = remote(&policy("h"), &global, T0 + 2, vv(&[(&global, 1)]), json!({}));
    apply_batch(store, &region, std::slice::from_ref(&from_region), T0 + 3);
    apply_batch(store, &global, std::slice::from_ref(&from_global), T0 + 3);
    let local_mine = apply(store, put(&mine, json!({"nodes": 3}), T0 + 4));

    let ids = |b: &LinkBatch| carried(b);
    let to_region = for_link(store, &query(0, &region, None), 100);
    assert_eq!(
        ids(&to_region),
        vec![local_g.object.version.id(), from_global.version.id(), local_mine.object.version.id()],
        "everything but what came from the region"
    );
    let to_global = for_link(store, &query(0, &global, None), 100);
    assert_eq!(
        ids(&to_global),
        vec![local_g.object.version.id(), from_region.version.id(), local_mine.object.version.id()]
    );
    assert_eq!(to_global.changes[1].from_site.as_ref(), Some(&region), "a relayed change keeps its link");
    assert_eq!(to_global.changes[1].spec, from_region.spec);
    assert_eq!(to_region.scanned_to, last_seq(store));

    let only = |names: &[&str]| Some(scopes(names));
    let regional = for_link(store, &query(0, &global, only(&["region-a"])), 100);
    assert_eq!(ids(&regional), vec![from_region.version.id()]);
    let two = for_link(store, &query(0, &global, only(&["global", store.site().as_str()])), 100);
    assert_eq!(ids(&two), vec![local_g.object.version.id(), local_mine.object.version.id()]);
    let none = for_link(store, &query(0, &global, only(&[])), 100);
    assert!(none.changes.is_empty(), "no scopes, no changes");
    assert_eq!(none.scanned_to, last_seq(store), "but the cursor still moves past them");
}

/// A backlog of rewrites costs about the size of the final state: a version is skipped when a
/// later one of the same object from the same origin is held, but a version from another
/// origin (the other side of a conflict) is always sent.
pub fn superseded_versions_from_the_same_origin_are_skipped(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, global, edge] = others(store);
    let me = store.site().clone();
    let a = policy("a");
    let b = policy("b");
    let a1 = apply(store, put(&a, json!({"v": 1}), T0));
    let a2 = apply(store, put(&a, json!({"v": 2}), T0 + 1));
    let b1 = apply(store, put(&b, json!({"v": 1}), T0 + 2));
    // Written at another edge, relayed by the region.
    let r1 = remote(&a, &edge, T0 + 3, vv(&[(&me, 2), (&edge, 1)]), json!({"edge": 1}));
    apply_batch(store, &region, std::slice::from_ref(&r1), T0 + 3);
    let a3 = apply(store, put(&a, json!({"v": 3}), T0 + 4));
    let id = |c: &crate::Committed| c.object.version.id();

    let to_global = for_link(store, &query(0, &global, None), 100);
    assert_eq!(
        carried(&to_global),
        vec![id(&b1), r1.version.id(), id(&a3)],
        "a1 and a2 are superseded by a3; the edge's version is another origin's and is sent"
    );
    let to_region = for_link(store, &query(0, &region, None), 100);
    assert_eq!(carried(&to_region), vec![id(&b1), id(&a3)]);
    assert_eq!(to_global.scanned_to, last_seq(store));
    assert_eq!(debt(store, &query(0, &global, None)).pending, 3, "debt counts the same way");

    let r2 = remote(&a, &edge, T0 + 5, vv(&[(&me, 3), (&edge, 2)]), json!({"edge": 2}));
    apply_batch(store, &region, std::slice::from_ref(&r2), T0 + 5);
    let to_global = for_link(store, &query(0, &global, None), 100);
    assert_eq!(carried(&to_global), vec![id(&b1), id(&a3), r2.version.id()], "r2 supersedes r1");
    let from_cursor = for_link(store, &query(a3.seq, &global, None), 100);
    assert_eq!(carried(&from_cursor), vec![r2.version.id()], "only changes after the cursor");

    // A version that arrives after a later one from its origin (repaired by a digest, say)
    // does not hide the later one: it is the superseded one.
    let late = remote(&b, &edge, T0 + 1, vv(&[(&edge, 1)]), json!({"late": 1}));
    let later = remote(&b, &edge, T0 + 6, vv(&[(&me, 1), (&edge, 2)]), json!({"later": 1}));
    apply_batch(store, &region, std::slice::from_ref(&later), T0 + 6);
    apply_batch(store, &global, std::slice::from_ref(&late), T0 + 7);
    let to_region = for_link(store, &query(0, &region, None), 100);
    assert_eq!(
        carried(&to_region),
        vec![id(&b1), id(&a3)],
        "`later` came from the region; `late` is superseded by it"
    );
    let to_edge = for_link(store, &query(0, &edge, None), 100);
    assert!(
        carried(&to_edge).contains(&later.version.id()) && !carried(&to_edge).contains(&late.version.id())
    );
    assert!(history_ids(store, &a).contains(&id(&a1)) && history_ids(store, &a).contains(&id(&a2)));

    // Two writes in the same millisecond differ in the logical part of their timestamps.
    let end = last_seq(store);
    let c1 = apply(store, put(&policy("c"), json!({"v": 1}), T0 + 100));
    let c2 = apply(store, put(&policy("c"), json!({"v": 2}), T0 + 100));
    assert_eq!(c1.object.version.hlc.wall_ms, c2.object.version.hlc.wall_ms);
    assert_eq!(carried(&for_link(store, &query(end, &global, None), 100)), vec![id(&c2)]);
}

/// `scanned_to` moves past changes the link does not carry, so an idle link's cursor catches
/// up; a full batch ends at its last change; paging visits every carried change once; the
/// limit is clamped to `1..=MAX_LINK_BATCH`.
pub fn scanned_to_advances_past_skipped_changes(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, global, _] = others(store);
    let echoes: Vec<RemoteVersion> = (0..3)
        .map(|i| remote(&policy(&format!("echo-{i}")), &region, T0 + i, vv(&[(&region, 1)]), json!({})))
        .collect();
    apply_batch(store, &region, &echoes, T0 + 10);
    let idle = for_link(store, &query(0, &region, None), 10);
    assert!(idle.changes.is_empty());
    assert_eq!(idle.scanned_to, last_seq(store), "every change skipped, the cursor catches up");

    let locals: Vec<_> =
        (0..5).map(|i| apply(store, put(&policy(&format!("l-{i}")), json!({"i": i}), T0 + 20 + i))).collect();
    apply(store, put(&key(Kind::Policy, "region-b", "elsewhere"), json!({}), T0 + 30));
    let q = |after| query(after, &region, Some(scopes(&["global"])));

    let full = for_link(store, &q(idle.scanned_to), 2);
    assert_eq!(carried(&full), vec![locals[0].object.version.id(), locals[1].object.version.id()]);
    assert_eq!(full.scanned_to, locals[1].seq, "a full batch ends at its last change");

    let mut cursor = 0;
    let mut seen = Vec::new();
    loop {
        let batch = for_link(store, &q(cursor), 2);
        assert!(batch.changes.len() <= 2);
        assert!(batch.scanned_to >= cursor);
        seen.extend(carried(&batch));
        let done = batch.changes.len() < 2;
        cursor = batch.scanned_to;
        if done {
            break;
        }
    }
    let expected: Vec<_> = locals.iter().map(|c| c.object.version.id()).collect();
    assert_eq!(seen, expected, "paging visits every carried change once, in order");
    assert_eq!(cursor, last_seq(store), "past the trailing change of another scope too");
    let caught_up = for_link(store, &q(cursor), 2);
    assert_eq!((caught_up.changes.len(), caught_up.scanned_to), (0, cursor));
    let beyond = for_link(store, &q(u64::MAX), 2);
    assert_eq!((beyond.changes.len(), beyond.scanned_to), (0, u64::MAX), "a cursor never moves back");

    assert_eq!(for_link(store, &query(0, &global, None), 0).changes.len(), 1, "a limit of 0 means 1");
    let all = for_link(store, &query(0, &global, None), usize::MAX);
    assert_eq!(all.changes.len(), 9, "a huge limit is clamped, not an error");
    assert!(all.changes.len() <= MAX_LINK_BATCH);
    assert_eq!(all.scanned_to, last_seq(store));
}

/// Sync debt counts what the link would carry: how many changes, their size, and when the
/// oldest was accepted here (not when it was written).
pub fn link_debt_counts_what_the_link_would_carry(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, global, _] = others(store);
    assert_eq!(debt(store, &query(0, &global, None)), Debt::default(), "no changes, no debt");
    let k1 = policy("k1");
    let k2 = key(Kind::Release, "region-a", "k2");
    apply(store, put(&k1, json!({"v": 1}), T0 + 100));
    let second = apply(store, put(&k2, json!({"big": "x".repeat(300)}), T0 + 200));
    let third = apply(store, put(&k1, json!({"v": 2}), T0 + 300));
    let r = remote(&policy("k3"), &region, T0 + 50, vv(&[(&region, 1)]), json!({"from": "region"}));
    apply_batch(store, &region, std::slice::from_ref(&r), T0 + 400);

    let check = |q: LinkQuery, pending: u64, oldest_ms: Option<u64>| {
        let batch = for_link(store, &q, MAX_PAGE);
        let d = debt(store, &q);
        assert_eq!(d.pending, pending, "{q:?}");
        assert_eq!(d.pending, batch.changes.len() as u64, "{q:?}: debt counts what the link carries");
        assert_eq!(d.pending_bytes, batch.changes.iter().map(content_bytes).sum::<u64>(), "{q:?}");
        assert_eq!(d.oldest_ms, oldest_ms, "{q:?}");
        d
    };
    let to_global = check(query(0, &global, None), 3, Some(T0 + 200));
    assert!(to_global.pending_bytes > 300, "the big spec counts: {to_global:?}");
    check(query(0, &region, None), 2, Some(T0 + 200));
    check(query(second.seq, &global, None), 2, Some(T0 + 300));
    check(query(third.seq, &global, None), 1, Some(T0 + 400));
    check(query(0, &global, Some(scopes(&["region-a"]))), 1, Some(T0 + 200));
    assert_eq!(debt(store, &query(last_seq(store), &global, None)), Debt::default(), "acknowledged, no debt");
}

/// Digest entries are the current version of every object, tombstones included, in key order
/// and by scope; `has_version` knows every version held, current or in history.
pub fn digest_entries_and_has_version(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, ..] = others(store);
    assert!(store.digest_entries(None).expect("digest_entries").is_empty());
    let z = policy("z");
    let gone = key(Kind::Policy, "global", "gone");
    let ra = key(Kind::Release, "region-a", "v1");
    let st = key(Kind::SiteStatus, "region-a", "status");
    let z1 = apply(store, put(&z, json!({"v": 1}), T0));
    let z2 = apply(store, put(&z, json!({"v": 2}), T0 + 1));
    apply(store, put(&gone, json!({}), T0 + 2));
    let tomb = apply(store, delete(&gone, T0 + 3));
    let r1 = remote(&ra, &region, T0 + 4, vv(&[(&region, 1)]), json!({}));
    let r2 = remote(&st, &region, T0 + 5, vv(&[(&region, 1)]), json!({}));
    apply_batch(store, &region, &[r2.clone(), r1.clone()], T0 + 6);

    let all = store.digest_entries(None).expect("digest_entries");
    assert_eq!(
        all,
        vec![
            (gone.clone(), tomb.object.version.id()),
            (z.clone(), z2.object.version.id()),
            (ra.clone(), r1.version.id()),
            (st.clone(), r2.version.id()),
        ],
        "key order, tombstones included"
    );
    let regional = store.digest_entries(Some(&scopes(&["region-a", "region-b"]))).expect("digest_entries");
    assert_eq!(regional, all[2..].to_vec());
    assert!(store.digest_entries(Some(&BTreeSet::new())).expect("digest_entries").is_empty());

    for (k, v) in [(&z, z1.object.version.id()), (&z, z2.object.version.id()), (&ra, r1.version.id())] {
        assert!(store.has_version(k, &v).expect("has_version"), "{k} {v}");
    }
    assert!(
        !store.has_version(&ra, &z1.object.version.id()).expect("has_version"),
        "another object's version"
    );
    let mut unknown = r1.version.id();
    unknown.hlc = Hlc::new(T0 + 99, 0);
    assert!(!store.has_version(&ra, &unknown).expect("has_version"));
    unknown = r1.version.id();
    unknown.origin = store.site().clone();
    assert!(!store.has_version(&ra, &unknown).expect("has_version"), "same time, another origin");
}

/// A digest exchange repairs a peer with the current versions of the objects it lacks, but not
/// those still in the link's log after its cursor: the link carries them anyway.
pub fn current_for_link_leaves_out_what_the_link_still_carries(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, ..] = others(store);
    let z = policy("z");
    let ra = key(Kind::Release, "region-a", "v1");
    let absent = policy("absent");
    apply(store, put(&z, json!({"v": 1}), T0));
    let r1 = remote(&ra, &region, T0 + 1, vv(&[(&region, 1)]), json!({}));
    let applied = apply_batch(store, &region, std::slice::from_ref(&r1), T0 + 2);
    let z2 = apply(store, put(&z, json!({"v": 2}), T0 + 3));
    assert!(z2.seq > applied.last_seq);

    let keys = [z.clone(), ra.clone(), absent];
    let ids = |versions: Vec<RemoteVersion>| -> Vec<(ObjectKey, model::VersionId)> {
        versions.into_iter().map(|v| (v.key, v.version.id())).collect()
    };
    let everything = store.current_for_link(&keys, z2.seq).expect("current_for_link");
    assert_eq!(
        ids(everything),
        vec![(z.clone(), z2.object.version.id()), (ra.clone(), r1.version.id())],
        "current versions, as stored; an object not held is left out"
    );
    let before_z2 = store.current_for_link(&keys, applied.last_seq).expect("current_for_link");
    assert_eq!(
        ids(before_z2),
        vec![(ra.clone(), r1.version.id())],
        "z's current version is after the cursor: the link still carries it"
    );
    assert!(store.current_for_link(&keys, 0).expect("current_for_link").is_empty());
}

/// Deletes from peers are versions too: a remote tombstone becomes current (listings hide it,
/// `created` stays), and a remote re-creation restarts `created`.
pub fn remote_tombstones_delete_and_recreate(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let store = store.as_ref();
    let [region, ..] = others(store);
    let me = store.site().clone();
    let k = key(Kind::Policy, "region-a", "quota");
    let local = apply(store, put(&k, json!({"v": 1}), T0));
    let tomb = remote_delete(&k, &region, T0 + 1, vv(&[(&me, 1), (&region, 1)]));
    let report = apply_batch(store, &region, std::slice::from_ref(&tomb), T0 + 1);
    assert_eq!(report.became_current, 1);
    let got = must_get(store, &k);
    assert!(got.version.deleted, "the remote delete is current");
    assert_eq!(got.created, local.object.created, "a delete keeps `created`");
    assert!(list_keys(store, &ListFilter::default()).is_empty(), "listings hide it");
    assert_eq!(store.digest_entries(None).expect("digest_entries"), vec![(k.clone(), tomb.version.id())]);

    let again = remote(&k, &region, T0 + 2, vv(&[(&me, 1), (&region, 2)]), json!({"v": 2}));
    apply_batch(store, &region, std::slice::from_ref(&again), T0 + 2);
    let got = must_get(store, &k);
    assert!(!got.version.deleted);
    assert_eq!(got.created, again.version.hlc, "a re-creation restarts `created`");

    let local_delete = apply(store, delete(&k, T0 + 3));
    assert_eq!(local_delete.object.version.vv, vv(&[(&me, 2), (&region, 2)]));
    // A concurrent update the region made before it saw the local delete does not resurrect
    // the object: the delete is later.
    let mut stale = remote(&k, &region, T0 + 2, vv(&[(&me, 1), (&region, 3)]), json!({"v": 3}));
    stale.version.hlc = Hlc::new(T0 + 2, 1);
    assert!(stale.version.hlc < local_delete.object.version.hlc);
    let report = apply_batch(store, &region, std::slice::from_ref(&stale), T0 + 4);
    assert_eq!((report.became_current, report.concurrent), (0, 1));
    assert!(must_get(store, &k).version.deleted);
    assert_eq!(history_ids(store, &k).len(), 5);
}

/// Link records round-trip exactly, are replaced by a save, are kept per peer, and survive a
/// restart.
pub fn links_round_trip_across_reopen(h: &mut dyn Harness) {
    h.reset();
    let mut store = h.open();
    let [region, global, _] = others(store.as_ref());
    assert_eq!(store.link(&region).expect("link"), None, "no record before the first save");
    let up = LinkRecord {
        peer: region.clone(),
        cursor: 0,
        peer_scopes: scopes(&["region-a", "edge-zone-a1"]),
        last_sync_ms: None,
        signal: "up".to_owned(),
        peer_sites: Vec::new(),
    };
    store.save_link(&up).expect("save_link");
    assert_eq!(store.link(&region).expect("link"), Some(up.clone()));
    let moved =
        LinkRecord { cursor: 42, last_sync_ms: Some(T0 + 7), signal: "metered".to_owned(), ..up.clone() };
    store.save_link(&moved).expect("save_link");
    assert_eq!(store.link(&region).expect("link"), Some(moved.clone()), "a save replaces the record");
    let parent = LinkRecord {
        peer: global.clone(),
        cursor: 7,
        peer_scopes: BTreeSet::new(),
        last_sync_ms: Some(T0),
        signal: "down".to_owned(),
        peer_sites: Vec::new(),
    };
    store.save_link(&parent).expect("save_link");

    drop(store);
    store = h.open();
    assert_eq!(store.link(&region).expect("link"), Some(moved), "link records survive a restart");
    assert_eq!(store.link(&global).expect("link"), Some(parent));
}
