//! How a link's rounds run: it drains its log in batches, reading the next batch while one is on
//! the wire, and exchanges digests with its peer only when nothing is streaming.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{CHILD_URL, Gate, ManualClock, config, id, link, start};
use model::{Kind, Level, ObjectKey, ObjectName, Scope};
use replication::LinkState;
use replication::backoff::Backoff;
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
        now_ms: clock.0.load(Ordering::SeqCst),
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

/// The global site and one edge zone below it, on their own SQLite files in `dir`.
async fn two_sites(
    dir: &std::path::Path,
    clock: &Arc<ManualClock>,
    gate: &Arc<Gate>,
) -> (SyncEngine, Arc<SqliteStore>, SyncEngine) {
    let (parent, parent_store) = start(
        dir,
        clock,
        gate,
        config("global", Level::Global, None, link("edge-zone-a1", Direction::Downstream, None)),
    )
    .await;
    gate.parent.set(parent.clone()).ok().expect("set once");
    let (child, _) = start(
        dir,
        clock,
        gate,
        config(
            "edge-zone-a1",
            Level::Local,
            Some("global"),
            link("global", Direction::Upstream, Some("test://global")),
        ),
    )
    .await;
    (parent, parent_store, child)
}

const DIGEST: &str = "/v1/sync/digest";

/// Waits (bounded) until the gate has passed a digest exchange after its first `from` requests;
/// returns the requests since `from`.
async fn digest_after(gate: &Gate, from: usize) -> Vec<(String, usize)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let log = gate.log.lock().expect("the log")[from..].to_vec();
        if log.iter().any(|(path, _)| path == DIGEST) {
            return log;
        }
        assert!(tokio::time::Instant::now() < deadline, "no digest exchange came: {log:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_reading_ahead_delivers_every_change_exactly_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock(AtomicU64::new(1_790_000_000_000)));
    let gate = Arc::new(Gate::default());
    let (parent, parent_store, child) = two_sites(dir.path(), &clock, &gate).await;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_exchange_waits_for_a_round_with_nothing_to_send() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock(AtomicU64::new(1_790_000_000_000)));
    let gate = Arc::new(Gate::default());
    let (parent, parent_store, child) = two_sites(dir.path(), &clock, &gate).await;
    // The first round exchanges digests: none ever was.
    digest_after(&gate, 0).await;

    // A period later (not two), a cut link comes back with 300 changes to drain.
    clock.0.fetch_add(3_600_000 + 1_000, Ordering::SeqCst);
    child.signal(&id("global"), Signal::Down).await.expect("the link takes the signal");
    write_range(&child, &clock, 0..300).await;
    let mark = gate.log.lock().expect("the log").len();
    child.signal(&id("global"), Signal::Up).await.expect("the link takes the signal");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while held(&parent_store) < 300 {
        assert!(tokio::time::Instant::now() < deadline, "the drain did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The next round has nothing to send: the exchange is due, and happens there.
    child.signal(&id("global"), Signal::Up).await.expect("the link takes the signal");
    let log = digest_after(&gate, mark).await;
    let at = log.iter().position(|(path, _)| path == DIGEST).unwrap_or(log.len());
    assert_eq!(log[..at].iter().map(|(_, n)| n).sum::<usize>(), 300, "{log:?}");
    let batch = |n| ("/v1/sync/batch".to_owned(), n);
    assert_eq!(
        log[at.saturating_sub(2)..at],
        [batch(0), batch(0)],
        "the drain's round ends with its empty batch and no exchange; the quiet round sends an empty batch, then exchanges digests: {log:?}"
    );
    assert_eq!(child.status().await.links[0].repaired_versions, 0, "nothing was in flight to repair");

    child.shutdown().await;
    parent.shutdown().await;
}

/// Waits (bounded) until `engine`'s only link is connected.
async fn connected(engine: &SyncEngine) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = engine.status().await;
        if status.links[0].state == LinkState::Connected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the link never came up: {:?}", status.links[0]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_backing_off_resumes_as_soon_as_its_peer_reaches_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock(AtomicU64::new(1_790_000_000_000)));
    let gate = Arc::new(Gate::default());
    // Links in both directions this time: the parent sends to the child too.
    let (parent, parent_store) = start(
        dir.path(),
        &clock,
        &gate,
        config("global", Level::Global, None, link("edge-zone-a1", Direction::Downstream, Some(CHILD_URL))),
    )
    .await;
    gate.parent.set(parent.clone()).ok().expect("set once");
    let mut child_config = config(
        "edge-zone-a1",
        Level::Local,
        Some("global"),
        link("global", Direction::Upstream, Some("test://global")),
    );
    // After a failed round the child would wait up to ten minutes before trying again.
    child_config.backoff = Backoff::new(Duration::from_secs(600), Duration::from_secs(600));
    let (child, _) = start(dir.path(), &clock, &gate, child_config).await;
    gate.child.set(child.clone()).ok().expect("set once");
    parent.sync_now().await;
    connected(&parent).await;
    connected(&child).await;

    // The link is restored at the child's end first: its batch meets the parent's end still cut,
    // is refused, and the child's sender backs off.
    parent.signal(&id("edge-zone-a1"), Signal::Down).await.expect("the link takes the signal");
    write_range(&child, &clock, 0..10).await;
    child.signal(&id("global"), Signal::Up).await.expect("the link takes the signal");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while child.status().await.links[0].consecutive_failures == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the child's batch was never refused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The parent's end comes back; its own round reaches the child, which retries at once.
    parent.signal(&id("edge-zone-a1"), Signal::Up).await.expect("the link takes the signal");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while held(&parent_store) < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child still waits out its backoff: {:?}",
            child.status().await.links[0]
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(child.status().await.links[0].consecutive_failures, 0);

    child.shutdown().await;
    parent.shutdown().await;
}
