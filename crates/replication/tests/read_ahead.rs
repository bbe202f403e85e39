//! A link drains its log in batches and reads the next batch while one is on the wire. Every
//! change must reach the peer exactly once, including changes committed while the drain runs.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use common::{Gate, ManualClock, config, id, link, start};
use model::{Kind, Level, ObjectKey, ObjectName, Scope};
use replication::{Direction, Signal, SyncEngine};
use store::{ListFilter, LocalWrite, SqliteStore, Store};

const BEFORE: usize = 1_050;
const DURING: usize = 150;

fn write(clock: &ManualClock, i: usize) -> LocalWrite {
    LocalWrite {
        key: ObjectKey::new(
            Kind::Policy,
            Scope::new("edge-zone-a1").expect("a scope"),
            ObjectName::new(format!("policy-{i:05}")).expect("a name"),
        ),
        labels: BTreeMap::new(),
        spec: serde_json::json!({ "n": i }),
        deleted: false,
        author: "test".to_owned(),
        precondition: None,
        now_ms: clock.0.load(std::sync::atomic::Ordering::SeqCst),
    }
}

async fn write_range(child: &SyncEngine, clock: &ManualClock, range: std::ops::Range<usize>) {
    for i in range {
        child.write_local(write(clock, i)).await.expect("a local write commits");
    }
}

fn held(store: &SqliteStore) -> usize {
    let mut count = 0;
    let mut filter =
        ListFilter { scope: Some(Scope::new("edge-zone-a1").expect("a scope")), ..Default::default() };
    loop {
        let page = store.list(&filter).expect("the parent lists its objects");
        count += page.len();
        match page.last() {
            Some(last) => filter.after = Some(last.key.clone()),
            None => return count,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_reading_ahead_delivers_every_change_exactly_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock(AtomicU64::new(1_790_000_000_000)));
    let gate = Arc::new(Gate::default());
    let (parent, parent_store) = start(
        dir.path(),
        &clock,
        &gate,
        config("global", Level::Global, None, link("edge-zone-a1", Direction::Downstream, None)),
    )
    .await;
    gate.parent.set(parent.clone()).ok().expect("set once");
    let (child, _) = start(
        dir.path(),
        &clock,
        &gate,
        config(
            "edge-zone-a1",
            Level::Local,
            Some("global"),
            link("global", Direction::Upstream, Some("test://global")),
        ),
    )
    .await;

    // Cut off, the child fills its log with many batches' worth (batches of 100).
    child.signal(&id("global"), Signal::Down).await.expect("the link takes the signal");
    write_range(&child, &clock, 0..BEFORE).await;
    assert_eq!(held(&parent_store), 0, "nothing crossed a cut link");

    // The link comes back and drains; more changes are committed while it does.
    child.signal(&id("global"), Signal::Up).await.expect("the link takes the signal");
    write_range(&child, &clock, BEFORE..BEFORE + DURING).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = child.sync_now().await;
        if status.links[0].pending == 0 && held(&parent_store) == BEFORE + DURING {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drain did not finish: parent holds {}, link {:?}",
            held(&parent_store),
            status.links[0]
        );
    };
    let link = &status.links[0];
    assert_eq!(link.sent_versions, (BEFORE + DURING) as u64, "each change sent once, none twice: {link:?}");
    assert!(link.last_error.is_none(), "{link:?}");
    assert_eq!(parent.status().await.links[0].received_versions, (BEFORE + DURING) as u64);

    child.shutdown().await;
    parent.shutdown().await;
}
