//! How a link's rounds run: it drains its log in batches, reading the next batch while one is on
//! the wire, and exchanges digests with its peer only when nothing is streaming.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{CHILD_URL, Gate, ManualClock, eventually, id, two_sites};
use model::{Kind, ObjectKey, ObjectName, Scope};
use replication::backoff::Backoff;
use replication::{LinkState, Signal, SyncEngine};
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

const DIGEST: &str = "/v1/sync/digest";

/// Waits until the gate has passed a digest exchange after its first `from` requests; returns the
/// requests since `from`.
async fn digest_after(gate: &Gate, from: usize) -> Vec<(String, usize)> {
    eventually("a digest exchange", async || {
        let log = gate.log.lock().expect("the log")[from..].to_vec();
        if log.iter().any(|(path, _)| path == DIGEST) { Ok(log) } else { Err(format!("{log:?}")) }
    })
    .await
}

/// Waits until `store` holds `count` objects of the edge zone's scope.
async fn holds(store: &SqliteStore, count: usize) {
    eventually(&format!("the parent to hold {count} objects"), async || match held(store) {
        n if n >= count => Ok(()),
        n => Err(format!("{n} objects")),
    })
    .await;
}

/// Waits until `engine`'s only link is connected.
async fn connected(engine: &SyncEngine) {
    eventually("the link to come up", async || {
        let link = engine.status().await.links.remove(0);
        if link.state == LinkState::Connected { Ok(()) } else { Err(format!("{link:?}")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_reading_ahead_delivers_every_change_exactly_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock(AtomicU64::new(1_790_000_000_000)));
    let gate = Arc::new(Gate::default());
    let (parent, parent_store, child) = two_sites(dir.path(), &clock, &gate, None, None).await;

    // Cut off, the child fills its log with many batches' worth (batches of 100).
    child.signal(&id("global"), Signal::Down).await.expect("the link takes the signal");
    write_range(&child, &clock, 0..BEFORE).await;
    assert_eq!(held(&parent_store), 0, "nothing crossed a cut link");

    // The link comes back and drains; more changes are committed while it does.
    child.signal(&id("global"), Signal::Up).await.expect("the link takes the signal");
    write_range(&child, &clock, BEFORE..BEFORE + DURING).await;

    let status = eventually("the drain to finish", async || {
        let status = child.sync_now().await;
        match held(&parent_store) {
            n if n == BEFORE + DURING && status.links[0].pending == 0 => Ok(status),
            n => Err(format!("parent holds {n}, link {:?}", status.links[0])),
        }
    })
    .await;
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
    let (parent, parent_store, child) = two_sites(dir.path(), &clock, &gate, None, None).await;
    // The first round exchanges digests: none ever was.
    digest_after(&gate, 0).await;

    // A period later (not two), a cut link comes back with 300 changes to drain.
    clock.0.fetch_add(3_600_000 + 1_000, Ordering::SeqCst);
    child.signal(&id("global"), Signal::Down).await.expect("the link takes the signal");
    write_range(&child, &clock, 0..300).await;
    let mark = gate.log.lock().expect("the log").len();
    child.signal(&id("global"), Signal::Up).await.expect("the link takes the signal");
    holds(&parent_store, 300).await;
    // The next round has nothing to send: the exchange is due, and happens there.
    child.signal(&id("global"), Signal::Up).await.expect("the link takes the signal");
    let log = digest_after(&gate, mark).await;
    let at = log.iter().position(|(path, _)| path == DIGEST).unwrap_or(log.len());
    assert_eq!(log[..at].iter().map(|(_, n)| n).sum::<usize>(), 300, "{log:?}");
    let batch = |n| ("/v1/sync/batch".to_owned(), n);
    assert_eq!(
        log[at.saturating_sub(1)..at],
        [batch(0)],
        "the quiet round sends an empty batch, then exchanges digests: {log:?}"
    );
    assert!(
        at >= 2 && log[at - 2].1 > 0,
        "the drain's round ends with its last full batch: no empty batch after it (nothing was written since) and no exchange: {log:?}"
    );
    assert_eq!(child.status().await.links[0].repaired_versions, 0, "nothing was in flight to repair");

    child.shutdown().await;
    parent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_backing_off_resumes_as_soon_as_its_peer_reaches_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock(AtomicU64::new(1_790_000_000_000)));
    let gate = Arc::new(Gate::default());
    // Links in both directions this time: the parent sends to the child too. After a failed
    // round the child would wait up to ten minutes before trying again.
    let backoff = Backoff::new(Duration::from_secs(600), Duration::from_secs(600));
    let (parent, parent_store, child) =
        two_sites(dir.path(), &clock, &gate, Some(CHILD_URL), Some(backoff)).await;
    parent.sync_now().await;
    connected(&parent).await;
    connected(&child).await;

    // The link is restored at the child's end first: its batch meets the parent's end still cut,
    // is refused, and the child's sender backs off.
    parent.signal(&id("edge-zone-a1"), Signal::Down).await.expect("the link takes the signal");
    write_range(&child, &clock, 0..10).await;
    child.signal(&id("global"), Signal::Up).await.expect("the link takes the signal");
    eventually("the child's batch to be refused", async || {
        let link = child.status().await.links.remove(0);
        if link.consecutive_failures > 0 { Ok(()) } else { Err(format!("{link:?}")) }
    })
    .await;

    // The parent's end comes back; its own round reaches the child, which retries at once.
    parent.signal(&id("edge-zone-a1"), Signal::Up).await.expect("the link takes the signal");
    // Well within the child's backoff (0 to 600 s, drawn from a seed fixed by the test's clock).
    tokio::time::timeout(Duration::from_secs(20), holds(&parent_store, 10))
        .await
        .expect("the child retried at once, not at the end of its backoff");
    assert_eq!(child.status().await.links[0].consecutive_failures, 0);

    child.shutdown().await;
    parent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_exchange_leaves_alone_a_version_its_writer_has_superseded() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock(AtomicU64::new(1_790_000_000_000)));
    let gate = Arc::new(Gate::default());
    let (parent, parent_store, child) = two_sites(dir.path(), &clock, &gate, Some(CHILD_URL), None).await;
    write_range(&child, &clock, 0..1).await;
    child.sync_now().await;
    holds(&parent_store, 1).await;

    // Cut off upwards only, the child writes the object again: the parent's copy is the older one
    // now, and the newer one waits at the child to go up.
    gate.parent_unreachable.store(true, Ordering::SeqCst);
    clock.0.fetch_add(1_000, Ordering::SeqCst);
    write_range(&child, &clock, 0..1).await;

    // The parent's exchange with the child sees the difference; the child already holds the
    // parent's version (it wrote it), so nothing is re-sent. The second round starts after the
    // first has finished, repairs and all.
    let mark = gate.log.lock().expect("the log").len();
    parent.sync_now().await;
    digest_after(&gate, mark).await;
    parent.sync_now().await;
    let log = gate.log.lock().expect("the log")[mark..].to_vec();
    assert!(log.iter().filter(|(path, _)| path == DIGEST).count() >= 2, "{log:?}");
    assert!(
        log.iter().all(|(_, versions)| *versions == 0),
        "the child's batches do not pass, and the parent has nothing to repair: {log:?}"
    );

    child.shutdown().await;
    parent.shutdown().await;
}
