//! Connectivity signals against rounds in flight: a link cut by the connectivity manager stays
//! down, and becomes isolated after the threshold, even when a round that started before the
//! cut finishes well; the store then holds both the cut and the round's cursor.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Gate, ISOLATION_AFTER, ManualClock, eventually, id, two_sites};
use model::{Kind, ObjectKey, ObjectName, Scope};
use replication::{LinkState, Signal, SyncEngine};
use store::{LocalWrite, SqliteStore, Store};

async fn upstream_state(engine: &SyncEngine) -> (LinkState, bool) {
    let status = engine.status().await;
    (status.links[0].state, status.isolated)
}

#[tokio::test]
async fn a_cut_during_a_round_that_then_succeeds_still_isolates_the_site() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock(AtomicU64::new(1_790_000_000_000)));
    let gate = Arc::new(Gate::default());
    // Each site on its own SQLite file, both reaching the other through the gate.
    let (parent, _, child) = two_sites(dir.path(), &clock, &gate, None, None).await;
    eventually("the upstream link to come up", async || match upstream_state(&child).await {
        (LinkState::Connected, _) => Ok(()),
        seen => Err(format!("{seen:?}")),
    })
    .await;

    // A round carrying a local write starts and waits at the gate; the link is cut meanwhile;
    // the round then succeeds.
    gate.hold.store(true, Ordering::SeqCst);
    let write = LocalWrite {
        key: ObjectKey::new(
            Kind::Policy,
            Scope::new("edge-zone-a1").expect("a scope"),
            ObjectName::new("cut-during-a-round").expect("a name"),
        ),
        labels: BTreeMap::new(),
        spec: serde_json::json!({ "n": 1 }),
        deleted: false,
        author: "test".to_owned(),
        precondition: None,
        now_ms: clock.0.load(Ordering::SeqCst),
    };
    child.write_local(write).await.expect("a local write commits");
    let round = tokio::spawn({
        let child = child.clone();
        async move { child.sync_now().await }
    });
    tokio::time::timeout(Duration::from_secs(30), gate.entered.notified())
        .await
        .expect("a round reached the gate");
    child.signal(&id("global"), Signal::Down).await.expect("the link takes the signal");
    gate.release.notify_one();
    let after_round = round.await.expect("the round finished");
    assert!(after_round.links[0].last_error.is_none(), "the held round succeeded: {after_round:?}");

    assert_eq!(upstream_state(&child).await, (LinkState::Disconnected, false), "cut, not yet isolated");
    clock
        .0
        .fetch_add(u64::try_from(ISOLATION_AFTER.as_millis()).unwrap_or(u64::MAX) + 1_000, Ordering::SeqCst);
    assert_eq!(
        upstream_state(&child).await,
        (LinkState::Isolated, true),
        "cut for longer than the isolation threshold, whatever the round in flight did"
    );

    child.shutdown().await;
    parent.shutdown().await;

    // The round's cursor save came after the operator's signal: the link's saved record keeps
    // both, so the cut outlives a restart.
    let reopened = SqliteStore::open(&dir.path().join("edge-zone-a1"), id("edge-zone-a1"), 60_000)
        .expect("the child's store opens again");
    let record = reopened.link(&id("global")).expect("the link record reads").expect("the link is saved");
    assert_eq!(record.signal, "down", "the cut is what the store holds: {record:?}");
    assert!(after_round.links[0].cursor > 0, "the round carried the write: {after_round:?}");
    assert_eq!(record.cursor, after_round.links[0].cursor, "the round's cursor is saved with it: {record:?}");
}
