//! The site's local writes on their way to the store. A thread of its own takes every write
//! queued (single writes and batch applies alike), commits them together with one
//! [`Store::write_batch`] (one transaction, one fsync) and answers each request; a request waits
//! for its answer without holding a thread of its own. Without it, each waiting write held a
//! blocking-pool thread, and the threads took turns on the store's lock.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use store::{Committed, LocalWrite, Store, StoreError, WriteError};
use tokio::sync::{mpsc, oneshot};
use tracing::error;

/// Requests waiting for the writer thread at most; a request beyond it waits to queue.
const QUEUE: usize = 4_096;
/// The most writes the thread gathers into one transaction (a larger batch apply is committed
/// whole, on its own).
const GROUP: usize = 512;

/// The outcome of each write of a request, in order.
pub(crate) type Outcomes = Vec<Result<Committed, WriteError>>;

type Request = (Vec<LocalWrite>, oneshot::Sender<Outcomes>);

/// How local writes have been committed since the site started: the transactions (each one
/// fsync) and the writes in them. Their ratio is the mean group: how many writes group commit
/// gathered into one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalCommits {
    pub transactions: u64,
    pub writes: u64,
}

/// [`LocalCommits`] as they grow, shared by the writer thread and whoever reads them.
#[derive(Debug, Default)]
pub(crate) struct CommitCounts {
    transactions: AtomicU64,
    writes: AtomicU64,
}

impl CommitCounts {
    pub(crate) fn record(&self, writes: usize) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> LocalCommits {
        LocalCommits {
            transactions: self.transactions.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

/// The queue to the writer thread, and the thread.
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::Sender<Request>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Why a request got no answer from the writer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotWritten {
    #[error("the site is shutting down; retry the write once it is back")]
    Stopped,
    #[error("the store's writer stopped before answering; check the site's log")]
    Lost,
}

impl Writer {
    /// Starts the writer thread of `store`, which counts its transactions in `counts`.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        site: &str,
        counts: Arc<CommitCounts>,
    ) -> std::io::Result<Writer> {
        let (queue, requests) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("{site}-writer"))
            .spawn(move || run(store.as_ref(), requests, &counts))?;
        Ok(Writer { queue: Mutex::new(Some(queue)), thread: Mutex::new(Some(thread)) })
    }

    /// Commits `writes` with whatever else is queued, and returns their outcomes, in order, once
    /// durable.
    pub(crate) async fn write(&self, writes: Vec<LocalWrite>) -> Result<Outcomes, NotWritten> {
        let queue = crate::engine::lock(&self.queue).clone().ok_or(NotWritten::Stopped)?;
        let (answer, answered) = oneshot::channel();
        queue.send((writes, answer)).await.map_err(|_| NotWritten::Stopped)?;
        answered.await.map_err(|_| NotWritten::Lost)
    }

    /// Lets the writes already queued commit, then stops the thread; later writes are refused.
    pub(crate) async fn stop(&self) {
        drop(crate::engine::lock(&self.queue).take());
        let thread = crate::engine::lock(&self.thread).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// `store.write_batch(writes)`, with exactly one outcome per write: a store that answers fewer,
/// or panics (its transaction rolls back), fails every write of the group. The group is counted
/// in `counts` (the writer thread and the in-place path both come through here).
pub(crate) fn write_batch(store: &dyn Store, writes: Vec<LocalWrite>, counts: &CommitCounts) -> Outcomes {
    let count = writes.len();
    if count > 0 {
        counts.record(count);
    }
    let detail = match std::panic::catch_unwind(AssertUnwindSafe(|| store.write_batch(writes))) {
        Ok(outcomes) if outcomes.len() == count => return outcomes,
        Ok(outcomes) => format!("the store answered {} of {count} writes", outcomes.len()),
        Err(_) => {
            "the store failed while committing a group of writes, which was rolled back; retry them".into()
        }
    };
    error!(%detail, "a group of writes went unanswered");
    (0..count).map(|_| Err(WriteError::Store(StoreError::Corrupt(detail.clone())))).collect()
}

fn run(store: &dyn Store, mut requests: mpsc::Receiver<Request>, counts: &CommitCounts) {
    while let Some(first) = requests.blocking_recv() {
        let mut group = vec![first];
        let mut gathered = group[0].0.len();
        while gathered < GROUP {
            match requests.try_recv() {
                Ok(next) => {
                    gathered += next.0.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let mut writes = Vec::with_capacity(gathered);
        let mut answers = Vec::with_capacity(group.len());
        for (request, answer) in group {
            answers.push((request.len(), answer));
            writes.extend(request);
        }
        let mut outcomes = write_batch(store, writes, counts).into_iter();
        for (count, answer) in answers {
            // A request that gave up waiting is gone: its writes committed all the same.
            let _ = answer.send(outcomes.by_ref().take(count).collect());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use model::{Kind, ObjectKey, ObjectName, Scope, SiteId};
    use store::SqliteStore;

    use super::*;

    fn write(name: &str) -> LocalWrite {
        LocalWrite {
            key: ObjectKey::new(Kind::Policy, Scope::new("global").unwrap(), ObjectName::new(name).unwrap()),
            labels: BTreeMap::new(),
            spec: serde_json::json!({ "name": name }),
            deleted: false,
            author: "alice".into(),
            precondition: None,
            now_ms: 1_790_000_000_000,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_each_get_their_own_durable_answer_and_a_stopped_writer_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("global-control.sqlite3");
        let site = SiteId::new("global-control").unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path, site.clone(), 60_000).unwrap());
        let counts = Arc::new(CommitCounts::default());
        let writer = Arc::new(Writer::start(store.clone(), "global-control", counts.clone()).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move { (i, writer.write(vec![write(&format!("p-{i:02}"))]).await) })
            })
            .collect();
        for task in tasks {
            let (i, answer) = task.await.unwrap();
            let committed = answer.expect("answered").pop().expect("one outcome").expect("written");
            assert_eq!(
                committed.object.key.name.as_str(),
                format!("p-{i:02}"),
                "each write gets its own answer"
            );
        }
        writer.stop().await;
        assert!(matches!(writer.write(vec![write("late")]).await, Err(NotWritten::Stopped)));
        let commits = counts.read();
        assert_eq!(commits.writes, 64, "every write is counted once");
        assert!(
            (1..=64).contains(&commits.transactions),
            "64 writes take between 1 and 64 transactions, not {}",
            commits.transactions
        );
        drop(store);

        // Durable: a store opened again holds all 64.
        let reopened = SqliteStore::open(&path, site, 60_000).unwrap();
        assert_eq!(reopened.changes(0, 1_000).unwrap().len(), 64);
    }
}
