//! The sync engine of one site: a task per link that sends what the peer lacks, and the
//! receiving side that applies what peers send.
//!
//! Sending: each link keeps a durable cursor of what its peer acknowledged. A round reads the
//! next changes the link carries from the change log (`Store::changes_for_link`: no echo, only
//! scopes the peer holds, superseded rewrites skipped; with several links, from the stretch of
//! the log they share, read once for all of them and handed each commit's changes as it
//! makes them: `shared_log`), sends them as encoded
//! batches, and moves the cursor when the peer acknowledges. The link is up from the first
//! acknowledgement. Every `frequency` the round also exchanges digests and
//! re-sends whatever the peer's current versions lack. When a round fails, the link retries with
//! exponential backoff and full jitter (opportunistic links wait for their next period). Each
//! link's first round runs as the site starts, so a backlog left in the log by a restart or a
//! crash moves on at once.
//!
//! Receiving: a batch from a neighbour is decoded, checked (addressed here, from a configured
//! neighbour, link not cut), its versions filtered to the scopes this site holds, and applied in
//! one transaction; then the links that forward it are woken.
//!
//! Scopes: every batch and acknowledgement carries a [`Hello`]: towards a parent, the scopes of
//! the sender's subtree; towards a child, the scopes of the sender and its ancestors. Each site
//! thus learns which scopes it holds (its own, its ancestors', its descendants') without a
//! central registry, and keeps what it learned in the link records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use config::SyncMode;
use model::{
    Clock, Directory, Kind, Level, ObjectKey, Refusal, Rule, Scope, SiteCard, SiteId, SpecText, Strategy,
    format_rfc3339_millis,
};
use serde::{Deserialize, Serialize};
use store::{
    ApplyError, AuditRecord, Committed, ConflictPolicy, LinkQuery, LinkRecord, LocalWrite, NewEvent,
    RemoteVersion, Store, StoreError, WriteError,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backoff::{Backoff, Rng, SplitMix64};
use crate::codec::{self, Batch, DecodeError, Hello};
use crate::digest;
use crate::link::{Direction, LinkConfig, LinkState, Signal, StateInputs, evaluate};
use crate::shared_log::{LinkFilter, LinkRead, Row, SharedLog, Unwanted, encode_rows, read_alone};
use crate::transport::{Transport, TransportError};
use crate::writer::{self, CommitCounts, LocalCommits, Writer};

/// The content type of an encoded batch.
pub const BATCH_CONTENT_TYPE: &str = "application/x-souverix-batch";
/// The most batches one round sends before it yields to the link's schedule again.
const MAX_BATCHES_PER_ROUND: usize = 200;
/// The most versions one digest exchange repairs.
const MAX_REPAIRS_PER_ROUND: usize = 10_000;
/// The most entries a digest reply lists.
const MAX_DIGEST_ENTRIES: usize = 20_000;
/// A streaming link still checks in this often when nothing changes.
const HEARTBEAT_CAP: Duration = Duration::from_secs(10);
/// How long `sync now` waits for every link's round.
const SYNC_NOW_DEADLINE: Duration = Duration::from_secs(30);
/// How often link states are checked for changes to announce.
const STATE_WATCH_PERIOD: Duration = Duration::from_millis(250);

/// How a site syncs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub site: SiteId,
    pub scope: Scope,
    pub level: Level,
    pub isolation_after: Duration,
    pub links: Vec<LinkConfig>,
    pub backoff: Backoff,
    /// This site's card in the federation's directory (its authority and conflict strategy).
    pub card: SiteCard,
    /// `conflict_resolution.audit_log`: audit every conflict resolution.
    pub audit_conflicts: bool,
}

/// The answer to a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub applied: usize,
    pub duplicates: usize,
    /// Versions of scopes this site does not hold, dropped.
    pub refused: usize,
    /// The sender may move its cursor here.
    pub ack: u64,
    pub hello: Hello,
}

/// A digest exchange request: bucket digests over the objects both sites hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestRequest {
    pub from: SiteId,
    pub to: SiteId,
    pub scopes: BTreeSet<Scope>,
    pub buckets: Vec<String>,
}

/// The receiver's entries in the buckets that differ.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DigestReply {
    pub buckets: Vec<usize>,
    /// `(kind/scope/name, version)` pairs.
    pub entries: Vec<(String, String)>,
    pub truncated: bool,
}

/// Why an incoming batch or digest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(
        "the batch is addressed to `{to}`, but this is `{site}`: check the peer addresses in the sender's configuration"
    )]
    Misaddressed { to: SiteId, site: SiteId },
    #[error("`{from}` is not a neighbour of `{site}`; this site syncs only with {neighbours}")]
    NotNeighbour { from: SiteId, site: SiteId, neighbours: String },
    #[error(
        "the link with `{peer}` is cut at this site (signal `down`): send `up` to /v1/links/{peer}/signal to restore it"
    )]
    LinkDown { peer: SiteId },
    #[error("the hello names `{hello}` but the batch comes from `{from}`")]
    BadHello { hello: SiteId, from: SiteId },
    #[error("{0}")]
    ClockSkew(String),
    #[error("the request is malformed: {0}")]
    Malformed(String),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("internal failure: {0}")]
    Internal(String),
}

/// Why a write made at this site did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LocalWriteError {
    /// The authority rules forbid it here (recorded as an audit entry and a `refusal` event).
    #[error("{} (rule `{}`)", .0.detail, .0.rule.as_str())]
    Refused(Refusal),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("internal failure: {0}")]
    Internal(String),
}

/// Why a signal or a link query was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("`{peer}` is not a neighbour of `{site}`; its links are with {neighbours}")]
    UnknownPeer { peer: SiteId, site: SiteId, neighbours: String },
    #[error("the link record could not be saved: {0}")]
    Store(#[from] StoreError),
}

/// One link as `GET /v1/sync` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    pub peer: String,
    pub direction: Direction,
    pub url: Option<String>,
    pub mode: String,
    pub frequency: String,
    pub signal: Signal,
    pub state: LinkState,
    /// Changes the peer has not acknowledged.
    pub pending: u64,
    pub pending_bytes: u64,
    /// Age of the oldest change the peer has not acknowledged, in seconds.
    pub debt_seconds: Option<f64>,
    /// When a round with the peer last succeeded (RFC 3339), and how long ago in seconds.
    pub last_sync: Option<String>,
    pub last_sync_age_seconds: Option<f64>,
    pub last_error: Option<String>,
    pub cursor: u64,
    pub consecutive_failures: u32,
    pub sent_versions: u64,
    pub sent_bytes: u64,
    pub received_versions: u64,
    pub repaired_versions: u64,
    /// Scopes the peer holds, as it last said.
    pub peer_scopes: Vec<String>,
}

/// The sync status of a site.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    pub site: String,
    pub scope: String,
    pub level: Level,
    /// The upstream link has been down longer than the isolation threshold.
    pub isolated: bool,
    pub links: Vec<LinkStatus>,
    /// Scopes this site holds, as far as it knows.
    pub holds: Vec<String>,
}

struct LinkRuntime {
    cfg: LinkConfig,
    mem: Mutex<LinkMem>,
    /// Held while the link's record is saved ([`Inner::save_record`]).
    saving: Mutex<()>,
    wake: Notify,
    rounds: AtomicU64,
}

/// The link's cursor saved after each acknowledged batch. The save of one batch's cursor runs
/// while the next batch is on its way (a site applying a batch from another link holds the
/// store's write lock, and the link would otherwise wait for it before sending on); the next
/// save, or the round's end, waits for it. The cursor saved is never ahead of what the peer
/// acknowledged; a save lost in a crash only makes the link send a batch again, which the
/// peer skips as duplicates. With [`StoreCalls::Inline`] (one thread) each save runs in place.
#[derive(Default)]
struct CursorSave {
    running: Option<JoinHandle<Result<(), String>>>,
}

impl CursorSave {
    /// Saves the link's record as it is now, after the previous save has finished.
    async fn save(&mut self, inner: &Arc<Inner>, link: &Arc<LinkRuntime>) -> Result<(), String> {
        self.finish().await?;
        let calls = inner.calls;
        let (inner, link) = (inner.clone(), link.clone());
        let save = async move {
            inner.save_record(&link).await?.map_err(|e| format!("saving the link cursor failed: {e}"))
        };
        match calls {
            StoreCalls::Inline => save.await,
            StoreCalls::Blocking => {
                self.running = Some(tokio::spawn(save));
                Ok(())
            }
        }
    }

    /// Waits for the save still running, if any.
    async fn finish(&mut self) -> Result<(), String> {
        match self.running.take() {
            Some(task) => task.await.map_err(|e| format!("saving the link cursor failed: {e}"))?,
            None => Ok(()),
        }
    }
}

/// A batch read from a link's log and encoded, ready to send.
struct Prepared {
    /// The cursor and the scopes it was read for, and the hello it carries.
    after: u64,
    scopes: Option<BTreeSet<Scope>>,
    hello: Hello,
    count: usize,
    scanned_to: u64,
    /// The log may hold more for the link after `scanned_to`.
    more: bool,
    body: Vec<u8>,
}

struct LinkMem {
    record: LinkRecord,
    down_since_ms: Option<u64>,
    ever_reached: bool,
    failures: u32,
    last_error: Option<String>,
    last_digest_ms: u64,
    /// The state last announced (as an event), without debt: connected, disconnected or
    /// isolated.
    announced: Option<LinkState>,
    sent_versions: u64,
    sent_bytes: u64,
    received_versions: u64,
    repaired: u64,
}

impl LinkMem {
    fn signal(&self) -> Signal {
        self.record.signal.parse().unwrap_or(Signal::Up)
    }
}

struct Inner {
    cfg: EngineConfig,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    transport: Arc<dyn Transport>,
    links: BTreeMap<SiteId, Arc<LinkRuntime>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    calls: StoreCalls,
    /// Counts the engine's commits that added events (local writes, applied batches, refusals,
    /// link states), so event streams wake on them instead of polling.
    committed: watch::Sender<u64>,
    /// Where local writes go to be committed together; `None` with [`StoreCalls::Inline`],
    /// where a write runs in place.
    writer: Option<Writer>,
    /// The transactions local writes were committed in, and the writes.
    local_commits: Arc<CommitCounts>,
    /// The stretch of the log the links share; `None` with fewer than two links to send on,
    /// where the link reads alone.
    shared_log: Option<SharedLog>,
}

/// The sync engine of one site. Cheap to clone.
#[derive(Clone)]
pub struct SyncEngine {
    inner: Arc<Inner>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The peer answered: the link is up (its state says so from now on, not only once the round
/// ends).
fn reached(link: &LinkRuntime, mem: &mut LinkMem) {
    if mem.failures > 0 || !mem.ever_reached {
        info!(peer = %link.cfg.peer, "link up");
    }
    mem.failures = 0;
    // A round that was in flight when the link was cut does not bring it back: it stays down,
    // and its time down keeps counting towards isolation.
    if mem.signal() != Signal::Down {
        mem.down_since_ms = None;
    }
    mem.ever_reached = true;
    mem.last_error = None;
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How the engine runs its store calls (which block until the storage answers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreCalls {
    /// On tokio's blocking pool, so a slow disk never stalls the runtime: what a site runs.
    #[default]
    Blocking,
    /// On the calling task, in place. Only for a single-threaded runtime that must be
    /// deterministic (the simulator): no other thread ever touches the store.
    Inline,
}

async fn run_store<T: Send + 'static>(
    calls: StoreCalls,
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> T + Send + 'static,
) -> Result<T, String> {
    match calls {
        StoreCalls::Inline => Ok(f(store.as_ref())),
        StoreCalls::Blocking => {
            let store = store.clone();
            tokio::task::spawn_blocking(move || f(store.as_ref()))
                .await
                .map_err(|e| format!("store task failed: {e}"))
        }
    }
}

impl SyncEngine {
    /// Loads each link's durable record and starts one task per link that has a peer address.
    /// Must be called within a tokio runtime.
    pub async fn start(
        cfg: EngineConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn Transport>,
    ) -> Result<SyncEngine, StoreError> {
        Self::start_with(cfg, store, clock, transport, StoreCalls::Blocking).await
    }

    /// [`SyncEngine::start`], choosing how store calls run.
    pub async fn start_with(
        cfg: EngineConfig,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn Transport>,
        calls: StoreCalls,
    ) -> Result<SyncEngine, StoreError> {
        let now = clock.now_ms();
        let mut links = BTreeMap::new();
        for link in &cfg.links {
            let peer = link.peer.clone();
            let record = {
                let lookup = peer.clone();
                run_store(calls, &store, move |s| s.link(&lookup))
                    .await
                    .map_err(StoreError::Corrupt)??
                    .unwrap_or(LinkRecord {
                        peer: peer.clone(),
                        cursor: 0,
                        peer_scopes: BTreeSet::new(),
                        last_sync_ms: None,
                        signal: Signal::Up.as_str().to_owned(),
                        peer_sites: Vec::new(),
                    })
            };
            let down = record.signal == Signal::Down.as_str();
            let mem = LinkMem {
                record,
                down_since_ms: down.then_some(now),
                ever_reached: false,
                failures: 0,
                last_error: None,
                last_digest_ms: 0,
                announced: None,
                sent_versions: 0,
                sent_bytes: 0,
                received_versions: 0,
                repaired: 0,
            };
            links.insert(
                peer,
                Arc::new(LinkRuntime {
                    cfg: link.clone(),
                    mem: Mutex::new(mem),
                    saving: Mutex::new(()),
                    wake: Notify::new(),
                    rounds: AtomicU64::new(0),
                }),
            );
        }
        let sending = links.values().filter(|l| l.cfg.url.is_some()).count();
        let shared_log = (sending >= 2).then(SharedLog::default);
        let (shutdown, _) = watch::channel(false);
        let local_commits = Arc::new(CommitCounts::default());
        let writer = match calls {
            StoreCalls::Blocking => {
                Some(Writer::start(store.clone(), cfg.site.as_str(), local_commits.clone()).map_err(|e| {
                    StoreError::Corrupt(format!("cannot start the store's writer thread: {e}"))
                })?)
            }
            StoreCalls::Inline => None,
        };
        let inner = Arc::new(Inner {
            cfg,
            store,
            clock,
            transport,
            links,
            shutdown,
            tasks: Mutex::new(Vec::new()),
            calls,
            committed: watch::channel(0).0,
            writer,
            local_commits,
            shared_log,
        });
        let mut tasks = Vec::new();
        for link in inner.links.values() {
            if link.cfg.url.is_none() {
                info!(peer = %link.cfg.peer, "link has no peer address: it only receives");
                continue;
            }
            let task_inner = inner.clone();
            let task_link = link.clone();
            let stop = inner.shutdown.subscribe();
            tasks.push(tokio::spawn(async move { task_inner.run_link(task_link, stop).await }));
        }
        let watcher = inner.clone();
        let stop = inner.shutdown.subscribe();
        tasks.push(tokio::spawn(async move { watcher.watch_states(stop).await }));
        *lock(&inner.tasks) = tasks;
        Ok(SyncEngine { inner })
    }

    /// Stops every link task and waits for them.
    pub async fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for task in tasks {
            let _ = task.await;
        }
        if let Some(writer) = &self.inner.writer {
            writer.stop().await;
        }
    }

    /// Stops every task at its next await point without letting a round finish, as a crash
    /// would, and waits until they are gone. What the store committed stays; the simulator
    /// uses this to crash a site.
    pub async fn abort(&self) {
        let tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    pub fn site(&self) -> &SiteId {
        &self.inner.cfg.site
    }

    /// A write made at this site, the one path every client write takes: checks it against
    /// the authority rules (a refusal is recorded: an audit entry and a `refusal` event),
    /// commits it durably, then wakes the streaming links.
    pub async fn write_local(&self, write: LocalWrite) -> Result<Committed, LocalWriteError> {
        if let Err(refusal) = self.authorize_local(&write.key) {
            self.record_refusal(&write.author, &write.key, &refusal, "").await;
            return Err(LocalWriteError::Refused(refusal));
        }
        let committed =
            self.commit_local(vec![write]).await.map_err(LocalWriteError::Internal)?.pop().unwrap_or_else(
                || Err(WriteError::Store(StoreError::Corrupt("a write went unanswered".into()))),
            )?;
        self.notify_change(None);
        Ok(committed)
    }

    /// Several writes made at this site at once (a batch apply): each checked against the
    /// authority rules as [`SyncEngine::write_local`] does, the allowed ones committed together
    /// (`Store::write_batch`), then the streaming links woken once. One outcome per write, in
    /// order.
    pub async fn write_local_batch(
        &self,
        writes: Vec<LocalWrite>,
    ) -> Vec<Result<Committed, LocalWriteError>> {
        let mut outcomes: Vec<Option<Result<Committed, LocalWriteError>>> = Vec::with_capacity(writes.len());
        let mut allowed = Vec::with_capacity(writes.len());
        for write in writes {
            match self.authorize_local(&write.key) {
                Ok(()) => {
                    outcomes.push(None);
                    allowed.push(write);
                }
                Err(refusal) => {
                    self.record_refusal(&write.author, &write.key, &refusal, "").await;
                    outcomes.push(Some(Err(LocalWriteError::Refused(refusal))));
                }
            }
        }
        let count = allowed.len();
        let written = if allowed.is_empty() { Ok(Vec::new()) } else { self.commit_local(allowed).await };
        let mut written = match written {
            Ok(results) => results.into_iter(),
            Err(e) => {
                return outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or_else(|| Err(LocalWriteError::Internal(e.clone()))))
                    .collect();
            }
        };
        if count > 0 {
            self.notify_change(None);
        }
        outcomes
            .into_iter()
            .map(|o| match o {
                Some(refused) => refused,
                None => written
                    .next()
                    .unwrap_or_else(|| {
                        Err(WriteError::Store(StoreError::Corrupt("a write went unanswered".into())))
                    })
                    .map_err(LocalWriteError::Write),
            })
            .collect()
    }

    /// Commits local writes that passed the authority checks, in order, one outcome each:
    /// through the site's writer thread, or in place with [`StoreCalls::Inline`].
    async fn commit_local(&self, writes: Vec<LocalWrite>) -> Result<writer::Outcomes, String> {
        let outcomes = match &self.inner.writer {
            Some(writer) => writer.write(writes).await.map_err(|e| e.to_string()),
            None => {
                let counts = self.inner.local_commits.clone();
                self.inner.blocking(move |s| writer::write_batch(s, writes, &counts)).await
            }
        }?;
        let first = outcomes.iter().find_map(|outcome| outcome.as_ref().ok()).map(|c| c.seq);
        if let (Some(shared_log), Some(first)) = (&self.inner.shared_log, first)
            && shared_log.follows_end(first)
        {
            shared_log.committed(written_rows(&outcomes), None);
        }
        Ok(outcomes)
    }

    /// How many transactions this site's local writes were committed in since it started, and
    /// how many writes: with many writers at once, group commit puts many writes in each.
    pub fn local_commits(&self) -> LocalCommits {
        self.inner.local_commits.read()
    }

    /// Tells the streaming links that the change log grew; `from` is the neighbour it came
    /// from, if any (that link does not need waking).
    pub fn notify_change(&self, from: Option<&SiteId>) {
        self.inner.notify_change(from);
    }

    /// A receiver that changes after every commit of this engine that appended to the event log
    /// (a local write, an applied batch, a refusal, a link state), so an event stream or a
    /// watcher can wait on it instead of polling. Events appended elsewhere (an operator
    /// acknowledging a conflict, a webhook) do not mark it: a stream still reads the log now and
    /// then.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.inner.committed.subscribe()
    }

    /// Whether this site holds objects of `scope`: its own scope, an ancestor's, or a
    /// descendant's. The global site (the root) holds every scope.
    pub fn holds(&self, scope: &Scope) -> bool {
        self.inner.holds(scope)
    }

    /// Checks a write made at this site against the authority rules: the scope must be held,
    /// and this site's relation to the scope's own site, its autonomy flags and whether it is
    /// isolated right now must allow it.
    pub fn authorize_local(&self, key: &ObjectKey) -> Result<(), Refusal> {
        self.inner.authorize_local(key)
    }

    /// Whether the upstream link has been down longer than the isolation threshold.
    pub fn is_isolated(&self) -> bool {
        self.inner.is_isolated(self.inner.clock.now_ms())
    }

    /// The site directory as this site knows it.
    pub fn directory(&self) -> Directory {
        self.inner.directory()
    }

    /// Records a refused write: an audit entry and a `refusal` event.
    pub async fn record_refusal(&self, actor: &str, key: &ObjectKey, refusal: &Refusal, context: &str) {
        self.inner
            .record_refusals(vec![(actor.to_owned(), key.clone(), None, refusal.clone(), context.to_owned())])
            .await;
    }

    /// The scopes this site knows it holds.
    pub fn held_scopes(&self) -> BTreeSet<Scope> {
        let mut all = self.inner.ancestry();
        all.extend(self.inner.subtree());
        all
    }

    /// Applies a batch received from a neighbour.
    pub async fn receive(&self, body: &[u8]) -> Result<Ack, ReceiveError> {
        self.inner.receive(body).await
    }

    /// Answers a neighbour's digest exchange.
    pub async fn digest(&self, request: DigestRequest) -> Result<DigestReply, ReceiveError> {
        self.inner.answer_digest(request).await
    }

    /// Records a connectivity signal for the link with `peer`.
    pub async fn signal(&self, peer: &SiteId, signal: Signal) -> Result<LinkStatus, LinkError> {
        let link = self.inner.link(peer)?;
        let now = self.inner.clock.now_ms();
        {
            let mut mem = lock(&link.mem);
            mem.record.signal = signal.as_str().to_owned();
            match signal {
                Signal::Down => {
                    mem.down_since_ms.get_or_insert(now);
                }
                Signal::Up | Signal::Metered => mem.failures = 0,
            }
        }
        self.inner.save_record(&link).await.map_err(StoreError::Corrupt)??;
        info!(peer = %peer, signal = signal.as_str(), "link signal");
        link.wake.notify_one();
        Ok(self.inner.link_status(&link).await)
    }

    /// Runs a round on every link now and waits (bounded) until each has finished one.
    pub async fn sync_now(&self) -> SyncStatus {
        let before: Vec<(Arc<LinkRuntime>, u64)> = self
            .inner
            .links
            .values()
            .filter(|l| l.cfg.url.is_some())
            .map(|l| (l.clone(), l.rounds.load(Ordering::SeqCst)))
            .collect();
        for (link, _) in &before {
            lock(&link.mem).last_digest_ms = 0;
            link.wake.notify_one();
        }
        let deadline = tokio::time::Instant::now() + SYNC_NOW_DEADLINE;
        for (link, start) in &before {
            while link.rounds.load(Ordering::SeqCst) <= *start && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.status().await
    }

    /// The sync status of every link, with debt read from the store.
    pub async fn status(&self) -> SyncStatus {
        let mut links = Vec::new();
        for link in self.inner.links.values() {
            links.push(self.inner.link_status(link).await);
        }
        links.sort_by_key(|l| (l.direction != Direction::Upstream, l.peer.clone()));
        let isolated =
            links.iter().any(|l| l.direction == Direction::Upstream && l.state == LinkState::Isolated);
        SyncStatus {
            site: self.inner.cfg.site.to_string(),
            scope: self.inner.cfg.scope.to_string(),
            level: self.inner.cfg.level,
            isolated,
            links,
            holds: self.held_scopes().iter().map(ToString::to_string).collect(),
        }
    }
}

impl Inner {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> T + Send + 'static,
    ) -> Result<T, String> {
        run_store(self.calls, &self.store, f).await
    }

    /// Saves the link's record as it is when the save runs. A link's saves run one at a time,
    /// each copying the record under [`LinkRuntime::saving`], so whatever order callers come in
    /// (a round moving the cursor, an operator's signal, a peer's new scopes), the last save
    /// holds every change made before it.
    async fn save_record(&self, link: &Arc<LinkRuntime>) -> Result<Result<(), StoreError>, String> {
        let link = link.clone();
        self.blocking(move |s| {
            let _one = lock(&link.saving);
            let record = lock(&link.mem).record.clone();
            s.save_link(&record)
        })
        .await
    }

    fn link(&self, peer: &SiteId) -> Result<Arc<LinkRuntime>, LinkError> {
        self.links.get(peer).cloned().ok_or_else(|| LinkError::UnknownPeer {
            peer: peer.clone(),
            site: self.cfg.site.clone(),
            neighbours: self.neighbours(),
        })
    }

    fn neighbours(&self) -> String {
        if self.links.is_empty() {
            return "no other site (it has no parent or children configured)".into();
        }
        self.links
            .values()
            .map(|l| {
                format!(
                    "`{}` ({})",
                    l.cfg.peer,
                    if l.cfg.direction == Direction::Upstream { "parent" } else { "child" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn upstream(&self) -> Option<&Arc<LinkRuntime>> {
        self.links.values().find(|l| l.cfg.direction == Direction::Upstream)
    }

    /// This site's scope and its ancestors'.
    fn ancestry(&self) -> BTreeSet<Scope> {
        let mut scopes = BTreeSet::from([self.cfg.scope.clone()]);
        if let Some(up) = self.upstream() {
            scopes.extend(lock(&up.mem).record.peer_scopes.iter().cloned());
        }
        scopes
    }

    /// This site's scope and its descendants'.
    fn subtree(&self) -> BTreeSet<Scope> {
        let mut scopes = BTreeSet::from([self.cfg.scope.clone()]);
        for link in self.links.values().filter(|l| l.cfg.direction == Direction::Downstream) {
            scopes.extend(lock(&link.mem).record.peer_scopes.iter().cloned());
        }
        scopes
    }

    fn is_root(&self) -> bool {
        self.cfg.level == Level::Global && self.upstream().is_none()
    }

    fn holds(&self, scope: &Scope) -> bool {
        self.is_root() || self.ancestry().contains(scope) || self.subtree().contains(scope)
    }

    fn hello_for(&self, link: &LinkRuntime) -> Hello {
        let (scopes, sites) = match link.cfg.direction {
            Direction::Upstream => (self.subtree(), self.subtree_cards()),
            Direction::Downstream => (self.ancestry(), self.directory().cards().cloned().collect()),
        };
        Hello {
            site: self.cfg.site.clone(),
            scope: self.cfg.scope.clone(),
            level: self.cfg.level,
            scopes,
            sites,
        }
    }

    /// Cards of this site and every site below it.
    fn subtree_cards(&self) -> Vec<SiteCard> {
        let mut directory = Directory::new();
        for link in self.links.values().filter(|l| l.cfg.direction == Direction::Downstream) {
            for card in &lock(&link.mem).record.peer_sites {
                directory.insert(card.clone());
            }
        }
        directory.insert(self.cfg.card.clone());
        directory.cards().cloned().collect()
    }

    /// Every site this site knows: its children's subtrees, then what its parent said (which
    /// wins for sites both name), then its own card.
    fn directory(&self) -> Directory {
        let mut directory = Directory::new();
        for direction in [Direction::Downstream, Direction::Upstream] {
            for link in self.links.values().filter(|l| l.cfg.direction == direction) {
                for card in &lock(&link.mem).record.peer_sites {
                    directory.insert(card.clone());
                }
            }
        }
        directory.insert(self.cfg.card.clone());
        directory
    }

    fn is_isolated(&self, now: u64) -> bool {
        self.upstream().is_some_and(|up| self.quick_state(up, now) == LinkState::Isolated)
    }

    /// A link's state from what is in memory (no debt, so never `lagging`).
    fn quick_state(&self, link: &LinkRuntime, now: u64) -> LinkState {
        let mem = lock(&link.mem);
        evaluate(StateInputs {
            now_ms: now,
            signal: mem.signal(),
            down_since_ms: if link.cfg.url.is_none() { None } else { mem.down_since_ms },
            ever_reached: mem.ever_reached,
            oldest_pending_ms: None,
            direction: link.cfg.direction,
            lag_tolerance: link.cfg.lag_tolerance(),
            isolation_after: self.cfg.isolation_after,
        })
    }

    fn authorize_local(&self, key: &ObjectKey) -> Result<(), Refusal> {
        let site = &self.cfg.site;
        if !self.holds(&key.scope) {
            let mut all = self.ancestry();
            all.extend(self.subtree());
            let held: Vec<String> = all.iter().map(|s| format!("`{s}`")).collect();
            return Err(Refusal {
                rule: Rule::NotInLineage,
                detail: format!(
                    "site `{site}` does not hold scope `{}`: a site holds only its own scope, its ancestors' and its descendants' ({}); write the object at a site that holds it",
                    key.scope,
                    held.join(", ")
                ),
            });
        }
        let directory = self.directory();
        let isolated = self.is_isolated(self.clock.now_ms());
        if directory.owner_of(&key.scope).is_none() {
            // Only the root holds scopes nobody has announced (they are all its descendants'):
            // it writes them as an ancestor, so only its own flags apply.
            let card = &self.cfg.card;
            if isolated && !card.can_operate_isolated {
                return Err(Refusal {
                    rule: Rule::OperateIsolated,
                    detail: format!(
                        "site `{site}` is isolated and its authority has `can_operate_isolated: false`"
                    ),
                });
            }
            if matches!(key.kind, Kind::Release | Kind::Rollout) && !card.can_deploy_versions {
                return Err(Refusal {
                    rule: Rule::DeployVersions,
                    detail: format!(
                        "site `{site}` may not write {} objects: its authority has `can_deploy_versions: false`",
                        key.kind
                    ),
                });
            }
            return Ok(());
        }
        directory.check_write(site, &key.scope, key.kind, Some(isolated))
    }

    /// Audits refused versions or writes and announces them as `refusal` events.
    async fn record_refusals(
        &self,
        refusals: Vec<(String, ObjectKey, Option<model::VersionId>, Refusal, String)>,
    ) {
        if refusals.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let site = self.cfg.site.clone();
        let result = self
            .blocking(move |s| {
                for (actor, key, version, refusal, context) in refusals {
                    s.append_audit(AuditRecord {
                        at_ms: now,
                        actor: actor.clone(),
                        action: "write".into(),
                        key: Some(key.clone()),
                        version: version.clone(),
                        outcome: "refused".into(),
                        detail: format!("rule {}: {}{context}", refusal.rule.as_str(), refusal.detail),
                    })?;
                    s.append_event(NewEvent {
                        at_ms: now,
                        kind: "refusal".into(),
                        object: Some(key),
                        data: serde_json::json!({
                            "site": site.as_str(),
                            "actor": actor,
                            "version": version.map(|v| v.to_string()),
                            "rule": refusal.rule.as_str(),
                            "detail": refusal.detail,
                            "context": context,
                        }),
                    })?;
                }
                Ok::<(), StoreError>(())
            })
            .await;
        match result {
            Ok(Ok(())) => self.announce_commit(),
            Ok(Err(e)) => warn!(error = %e, "could not record a refusal"),
            Err(e) => warn!(error = %e, "could not record a refusal"),
        }
    }

    /// Announces link state changes (entering and leaving autonomous mode included) as `link`
    /// events, checking a few times a second.
    async fn watch_states(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                // In this order, so a single-threaded runtime runs the same way every time.
                biased;
                _ = stop.changed() => {}
                () = tokio::time::sleep(STATE_WATCH_PERIOD) => {}
            }
            if *stop.borrow() {
                break;
            }
            let now = self.clock.now_ms();
            let mut changes = Vec::new();
            for link in self.links.values() {
                let state = self.quick_state(link, now);
                let previous = {
                    let mut mem = lock(&link.mem);
                    let previous = mem.announced;
                    if previous == Some(state) {
                        continue;
                    }
                    mem.announced = Some(state);
                    previous
                };
                if link.cfg.direction == Direction::Upstream {
                    if state == LinkState::Isolated {
                        warn!(upstream = %link.cfg.peer, "entering autonomous mode: the upstream link has been down longer than the isolation threshold");
                    } else if previous == Some(LinkState::Isolated) {
                        info!(upstream = %link.cfg.peer, "leaving autonomous mode: the upstream link is back");
                    }
                }
                changes.push(NewEvent {
                    at_ms: now,
                    kind: "link".into(),
                    object: None,
                    data: serde_json::json!({
                        "site": self.cfg.site.as_str(),
                        "peer": link.cfg.peer.as_str(),
                        "direction": link.cfg.direction,
                        "state": state,
                        "previous": previous,
                    }),
                });
            }
            if changes.is_empty() {
                continue;
            }
            let result = self
                .blocking(move |s| changes.into_iter().try_for_each(|e| s.append_event(e).map(|_| ())))
                .await;
            match result {
                Ok(Ok(())) => self.announce_commit(),
                Ok(Err(e)) => warn!(error = %e, "could not record link state events"),
                Err(e) => warn!(error = %e, "could not record link state events"),
            }
        }
    }

    /// The scopes a link carries: towards the parent, everything (the parent holds all this
    /// site holds); towards a child, this site's ancestry and the child's subtree.
    fn link_scopes(&self, link: &LinkRuntime) -> Option<BTreeSet<Scope>> {
        match link.cfg.direction {
            Direction::Upstream => None,
            Direction::Downstream => {
                let mut scopes = self.ancestry();
                scopes.extend(lock(&link.mem).record.peer_scopes.iter().cloned());
                Some(scopes)
            }
        }
    }

    /// What none of this site's sending links carries: a child's changes in the scopes only its
    /// own link carries. Nothing when a link carries every scope (the upstream one).
    fn unwanted(&self) -> Unwanted {
        let sending = || self.links.values().filter(|l| l.cfg.url.is_some());
        if sending().any(|l| l.cfg.direction == Direction::Upstream) {
            return Vec::new();
        }
        // Every sending link is a child's: each carries a set of scopes.
        let carried: Vec<(&SiteId, BTreeSet<Scope>)> =
            sending().map(|l| (&l.cfg.peer, self.link_scopes(l).unwrap_or_default())).collect();
        carried
            .iter()
            .filter_map(|(peer, scopes)| {
                let mut own = scopes.clone();
                for (other, theirs) in &carried {
                    if other != peer {
                        own.retain(|s| !theirs.contains(s));
                    }
                }
                (!own.is_empty()).then(|| ((*peer).clone(), own))
            })
            .collect()
    }

    /// The scopes both ends of a link hold: what a digest exchange compares.
    fn shared_scopes(&self, link: &LinkRuntime) -> BTreeSet<Scope> {
        match link.cfg.direction {
            Direction::Upstream => {
                let mut scopes = self.ancestry();
                scopes.extend(self.subtree());
                scopes
            }
            Direction::Downstream => self.link_scopes(link).unwrap_or_default(),
        }
    }

    fn notify_change(&self, from: Option<&SiteId>) {
        self.announce_commit();
        for link in self.links.values() {
            if Some(&link.cfg.peer) == from || link.cfg.mode != SyncMode::Continuous {
                continue;
            }
            if lock(&link.mem).signal() == Signal::Up {
                link.wake.notify_one();
            }
        }
    }

    fn announce_commit(&self) {
        self.committed.send_modify(|n| *n = n.wrapping_add(1));
    }

    async fn run_link(self: Arc<Self>, link: Arc<LinkRuntime>, mut stop: watch::Receiver<bool>) {
        let mut rng = SplitMix64::new(self.clock.now_ms() ^ seed_of(&link.cfg.peer));
        // The first round runs at once: a site that restarts with changes in its log resumes
        // sending them, instead of holding them until the link's next period.
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                // In this order, so a single-threaded runtime runs the same way every time.
                biased;
                _ = stop.changed() => {}
                () = link.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
            if *stop.borrow() {
                break;
            }
            let signal = lock(&link.mem).signal();
            if signal != Signal::Down {
                let result = self.round(&link).await;
                self.record_round(&link, result);
            }
            link.rounds.fetch_add(1, Ordering::SeqCst);
            wait = self.next_wait(&link, &mut rng);
        }
        debug!(peer = %link.cfg.peer, "link task stopped");
    }

    fn next_wait(&self, link: &LinkRuntime, rng: &mut dyn Rng) -> Duration {
        let mem = lock(&link.mem);
        let frequency = link.cfg.frequency.max(Duration::from_millis(100));
        match mem.signal() {
            Signal::Down => return Duration::from_secs(3600),
            Signal::Metered => return frequency,
            Signal::Up => {}
        }
        if mem.failures > 0 {
            if link.cfg.mode == SyncMode::Opportunistic {
                return frequency;
            }
            let backoff = Backoff::new(self.cfg.backoff.base, self.cfg.backoff.cap.min(frequency));
            return backoff.delay(mem.failures, rng);
        }
        match link.cfg.mode {
            SyncMode::Continuous => frequency.min(HEARTBEAT_CAP),
            SyncMode::Push | SyncMode::Opportunistic => frequency,
        }
    }

    fn record_round(&self, link: &LinkRuntime, result: Result<(), String>) {
        let now = self.clock.now_ms();
        let mut mem = lock(&link.mem);
        match result {
            Ok(()) => reached(link, &mut mem),
            Err(err) => {
                if mem.failures == 0 {
                    warn!(peer = %link.cfg.peer, error = %err, "sync round failed; retrying with backoff");
                }
                mem.failures = mem.failures.saturating_add(1);
                mem.down_since_ms.get_or_insert(now);
                mem.last_error = Some(err);
            }
        }
    }

    /// One round on a link: drain the log in batches, then a digest exchange if one is due.
    ///
    /// While a full batch is on the wire, the next one is read and encoded on the blocking pool,
    /// on the guess that the peer acknowledges the whole batch: the sender's work then overlaps
    /// the peer's apply instead of waiting for it. The guess is used only if the cursor, the
    /// scopes and the `Hello` after the acknowledgement are the ones it was read for; otherwise
    /// it is dropped and the batch read again. With [`StoreCalls::Inline`] (one thread) nothing
    /// runs ahead. A guess still running when the round fails finishes on its own and is
    /// dropped: it only reads.
    async fn round(self: &Arc<Self>, link: &Arc<LinkRuntime>) -> Result<(), String> {
        let Some(url) = link.cfg.url.as_deref() else { return Ok(()) };
        let mut ahead: Option<JoinHandle<Result<Prepared, String>>> = None;
        let mut saving = CursorSave::default();
        let mut sent = 0;
        for _ in 0..MAX_BATCHES_PER_ROUND {
            // Each lock is taken and released in its own statement: `link_scopes` locks too.
            let scopes = self.link_scopes(link);
            let after = lock(&link.mem).record.cursor;
            let guessed = match ahead.take() {
                Some(task) => task.await.map_err(|e| format!("reading ahead on the link failed: {e}"))?.ok(),
                None => None,
            };
            let batch = match guessed {
                Some(p) if p.after == after && p.scopes == scopes && p.hello == self.hello_for(link) => p,
                _ => self.prepare(link, after, scopes.clone()).await?,
            };
            if batch.count == 0 && batch.scanned_to == after && sent > 0 {
                // Nothing was written since the full batch this round just sent, whose
                // acknowledgement already carried both hellos: an empty batch would tell the
                // peer nothing, and cost this site a durable write of an unchanged cursor.
                break;
            }
            if batch.more && self.calls == StoreCalls::Blocking {
                let (inner, link, scopes) = (self.clone(), link.clone(), scopes.clone());
                let next = batch.scanned_to;
                ahead = Some(tokio::spawn(async move { inner.prepare(&link, next, scopes).await }));
            }
            #[cfg(feature = "broken-cursor-before-ack")]
            {
                // Deliberately wrong, to show the simulator catches it: the cursor moves (durably)
                // before the peer has applied the batch, so a batch lost on the way, or a crash
                // before the peer applied it, loses its changes on this link for good.
                {
                    let mut mem = lock(&link.mem);
                    mem.record.cursor = mem.record.cursor.max(batch.scanned_to);
                }
                self.save_record(link).await?.map_err(|e| format!("saving the link cursor failed: {e}"))?;
            }
            let ack = self.post_batch(link, url, batch.body).await?;
            if self.link_scopes(link) != scopes {
                // The acknowledgement taught new scopes of the peer: the changes this batch
                // skipped may now be due, so the cursor stays (`learn` moved it back).
                continue;
            }
            {
                let mut mem = lock(&link.mem);
                mem.record.cursor = mem.record.cursor.max(ack.ack);
                mem.record.last_sync_ms = Some(self.clock.now_ms());
                mem.sent_versions += batch.count as u64;
            }
            sent += batch.count;
            saving.save(self, link).await?;
            if !batch.more {
                break;
            }
        }
        saving.finish().await?;
        // The digest exchange compares what both ends hold. While changes are streaming, the peer
        // lacks the ones in flight, and the exchange would send them again as repairs and hold
        // up the stream behind it: it waits for a round with nothing to send, at most one more
        // period (`sync now` asks for it at once).
        let due = {
            let mem = lock(&link.mem);
            let since = self.clock.now_ms().saturating_sub(mem.last_digest_ms);
            let period = ms(link.cfg.frequency);
            since >= period && (sent == 0 || since >= period.saturating_mul(2))
        };
        if due {
            self.anti_entropy(link, url).await?;
            lock(&link.mem).last_digest_ms = self.clock.now_ms();
        }
        Ok(())
    }

    /// Reads the link's next batch from the log after `after` and encodes it. With several
    /// links, it is taken from the stretch of the log they share ([`SharedLog`]), and its
    /// versions are encoded once for every link that sends the same ones.
    async fn prepare(
        &self,
        link: &LinkRuntime,
        after: u64,
        scopes: Option<BTreeSet<Scope>>,
    ) -> Result<Prepared, String> {
        let hello = self.hello_for(link);
        let (site, peer) = (self.cfg.site.clone(), link.cfg.peer.clone());
        let limit = link.cfg.batch_size.clamp(1, store::MAX_LINK_BATCH);
        let shared_log = self.shared_log.clone();
        let unwanted = if shared_log.is_some() { self.unwanted() } else { Vec::new() };
        let (sent_hello, link_scopes) = (hello.clone(), scopes.clone());
        let (count, scanned_to, more, body) = self
            .blocking(move |s| {
                let filter = LinkFilter { peer: &peer, scopes: link_scopes.as_ref() };
                let shared = match &shared_log {
                    Some(log) => log.read(s, &site, &unwanted, &filter, after, limit)?,
                    None => None,
                };
                let (read, parts): (LinkRead, _) = match (shared, &shared_log) {
                    (Some(read), Some(log)) => {
                        let parts = log.encode(after, &read);
                        (read, parts)
                    }
                    _ => {
                        let query = LinkQuery { after, peer: peer.clone(), scopes: link_scopes.clone() };
                        let read = read_alone(s, &query, limit)?;
                        let parts = vec![encode_rows(&read.rows)];
                        (read, parts)
                    }
                };
                let header = codec::Header {
                    from: &site,
                    to: &peer,
                    hello: &sent_hello,
                    up_to: read.scanned_to,
                    repair: false,
                };
                let body = codec::encode_with(&header, &parts);
                Ok::<_, StoreError>((read.rows.len(), read.scanned_to, read.more, body))
            })
            .await?
            .map_err(|e| format!("reading the change log failed: {e}"))?;
        Ok(Prepared { after, scopes, hello, count, scanned_to, more, body })
    }

    async fn send(
        &self,
        link: &Arc<LinkRuntime>,
        url: &str,
        up_to: u64,
        repair: bool,
        versions: Vec<RemoteVersion>,
    ) -> Result<Ack, String> {
        let batch = Batch {
            from: self.cfg.site.clone(),
            to: link.cfg.peer.clone(),
            hello: self.hello_for(link),
            up_to,
            repair,
            versions,
        };
        self.post_batch(link, url, codec::encode(&batch)).await
    }

    /// Sends an encoded batch and checks the acknowledgement.
    async fn post_batch(&self, link: &Arc<LinkRuntime>, url: &str, body: Vec<u8>) -> Result<Ack, String> {
        let size = body.len() as u64;
        let reply =
            self.transport.post(url, "/v1/sync/batch", BATCH_CONTENT_TYPE, body).await.map_err(describe)?;
        let ack: Ack = serde_json::from_slice(&reply)
            .map_err(|e| format!("the peer's acknowledgement is not valid: {e}"))?;
        if ack.hello.site != link.cfg.peer {
            return Err(format!(
                "the site at {url} is `{}`, not `{}`: check the peer address in this site's configuration",
                ack.hello.site, link.cfg.peer
            ));
        }
        self.learn(link, &ack.hello).await;
        let mut mem = lock(&link.mem);
        mem.sent_bytes += size;
        reached(link, &mut mem);
        Ok(ack)
    }

    /// Records what a neighbour says it holds and knows, durably when it changed. A child may
    /// not describe this site or its ancestors, nor a parent this site: such cards are dropped.
    async fn learn(&self, link: &Arc<LinkRuntime>, hello: &Hello) {
        let ancestry_ids: BTreeSet<SiteId> = match link.cfg.direction {
            Direction::Downstream => {
                let mut ids: BTreeSet<SiteId> =
                    self.directory().ancestors(&self.cfg.site).into_iter().collect();
                ids.insert(self.cfg.site.clone());
                ids
            }
            Direction::Upstream => BTreeSet::from([self.cfg.site.clone()]),
        };
        let sites: Vec<SiteCard> = if hello.sites.is_empty() {
            // A hello without a directory (every real one carries at least the sender's card)
            // leaves what was learned before.
            lock(&link.mem).record.peer_sites.clone()
        } else {
            hello.sites.iter().filter(|c| !ancestry_ids.contains(&c.id)).cloned().collect()
        };
        {
            let mut mem = lock(&link.mem);
            if mem.record.peer_scopes == hello.scopes && mem.record.peer_sites == sites {
                return;
            }
            // A child that now holds scopes it did not before (its subtree, learned late) needs
            // the changes of those scopes that the cursor already passed while they were not
            // carried: the link rescans its log from the start (the child skips duplicates).
            let widened = link.cfg.direction == Direction::Downstream
                && hello.scopes.iter().any(|s| !mem.record.peer_scopes.contains(s));
            if widened && mem.record.cursor > 0 {
                info!(peer = %link.cfg.peer, cursor = mem.record.cursor, "the peer holds new scopes: re-reading the change log for them");
                mem.record.cursor = 0;
            }
            mem.record.peer_scopes = hello.scopes.clone();
            mem.record.peer_sites = sites;
        }
        match self.save_record(link).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(peer = %link.cfg.peer, error = %e, "could not save the peer's scopes"),
            Err(e) => warn!(peer = %link.cfg.peer, error = %e, "could not save the peer's scopes"),
        }
    }

    /// Compares digests with the peer and re-sends this site's current version of every object
    /// whose version differs on the other side, unless the peer's is a later one by the same
    /// writer ([`digest::needs_repair`]).
    async fn anti_entropy(&self, link: &Arc<LinkRuntime>, url: &str) -> Result<(), String> {
        let scopes = self.shared_scopes(link);
        let entries = {
            let scopes = scopes.clone();
            self.blocking(move |s| s.digest_entries(Some(&scopes)))
                .await?
                .map_err(|e| format!("reading digest entries failed: {e}"))?
        };
        let request = DigestRequest {
            from: self.cfg.site.clone(),
            to: link.cfg.peer.clone(),
            scopes,
            buckets: digest::bucket_digests(&entries),
        };
        let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        let reply =
            self.transport.post(url, "/v1/sync/digest", "application/json", body).await.map_err(describe)?;
        let reply: DigestReply = serde_json::from_slice(&reply)
            .map_err(|e| format!("the peer's digest reply is not valid: {e}"))?;
        if reply.buckets.is_empty() {
            return Ok(());
        }
        let theirs: BTreeMap<String, String> = reply.entries.into_iter().collect();
        let mine = digest::entries_in(&entries, &reply.buckets);
        let stale: Vec<ObjectKey> = mine
            .iter()
            .filter(|(key, ours)| {
                digest::needs_repair(ours, theirs.get(&key.to_string()).map(String::as_str))
            })
            .map(|(key, _)| key.clone())
            .take(MAX_REPAIRS_PER_ROUND)
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        // As stored, byte for byte: the hash the peer checks is over those bytes. Objects whose
        // current version the link has not had acknowledged yet are in flight, not missing.
        let cursor = lock(&link.mem).record.cursor;
        let repairs = self
            .blocking(move |s| s.current_for_link(&stale, cursor))
            .await?
            .map_err(|e| format!("reading objects to repair failed: {e}"))?;
        if repairs.is_empty() {
            return Ok(());
        }
        let total = repairs.len();
        let first = repairs[0].key.to_string();
        let (mut applied, mut duplicates) = (0, 0);
        for chunk in repairs.chunks(link.cfg.batch_size.max(1)) {
            let ack = self.send(link, url, cursor, true, chunk.to_vec()).await?;
            lock(&link.mem).repaired += ack.applied as u64;
            applied += ack.applied;
            duplicates += ack.duplicates;
        }
        info!(peer = %link.cfg.peer, versions = total, applied, duplicates, first, "digest exchange re-sent versions that differed at the peer");
        Ok(())
    }

    async fn receive(&self, body: &[u8]) -> Result<Ack, ReceiveError> {
        let (batch, arrived) = match &self.shared_log {
            Some(_) => codec::decode_keeping_versions(body)?,
            None => (codec::decode(body)?, None),
        };
        let received = batch.versions.len();
        if batch.to != self.cfg.site {
            return Err(ReceiveError::Misaddressed { to: batch.to, site: self.cfg.site.clone() });
        }
        if batch.hello.site != batch.from {
            return Err(ReceiveError::BadHello { hello: batch.hello.site, from: batch.from });
        }
        let link = self.links.get(&batch.from).cloned().ok_or_else(|| ReceiveError::NotNeighbour {
            from: batch.from.clone(),
            site: self.cfg.site.clone(),
            neighbours: self.neighbours(),
        })?;
        if lock(&link.mem).signal() == Signal::Down {
            return Err(ReceiveError::LinkDown { peer: batch.from });
        }
        self.learn(&link, &batch.hello).await;
        let (held, refused): (Vec<RemoteVersion>, Vec<RemoteVersion>) =
            batch.versions.into_iter().partition(|v| self.holds(&v.key.scope));
        if !refused.is_empty() {
            warn!(peer = %batch.from, count = refused.len(), first = %refused[0].key, "dropped versions of scopes this site does not hold");
        }
        // Authority on apply: the origin of each version must have been allowed to write it.
        let directory = self.directory();
        let mut forbidden = Vec::new();
        let mut allowed = Vec::with_capacity(held.len());
        for v in held {
            match directory.check_write(&v.version.origin, &v.key.scope, v.key.kind, None) {
                Ok(()) => allowed.push(v),
                Err(refusal) => forbidden.push((
                    v.version.origin.to_string(),
                    v.key.clone(),
                    Some(v.version.id()),
                    refusal,
                    format!(" (version received from `{}`)", batch.from),
                )),
            }
        }
        let refused_count = refused.len() + forbidden.len();
        if !forbidden.is_empty() {
            warn!(peer = %batch.from, count = forbidden.len(), first = %forbidden[0].1, "refused versions whose origin had no authority to write them");
            self.record_refusals(forbidden).await;
        }
        let held = allowed;
        let policy =
            DirectoryPolicy { directory, own: self.cfg.card.strategy, audit: self.cfg.audit_conflicts };
        let from = batch.from.clone();
        let now = self.clock.now_ms();
        let (report, held) = if held.is_empty() {
            (store::ApplyReport::default(), held)
        } else {
            match self
                .blocking(move |s| {
                    let applied = s.apply_remote(&from, &held, now, &policy);
                    (applied, held)
                })
                .await
                .map_err(ReceiveError::Internal)?
            {
                (Ok(report), held) => (report, held),
                (Err(ApplyError::ClockSkew(refusal)), _) => {
                    warn!(peer = %batch.from, error = %refusal, "refused a batch: clock skew");
                    return Err(ReceiveError::ClockSkew(refusal.to_string()));
                }
                (Err(ApplyError::Store(e)), _) => return Err(ReceiveError::Store(e)),
            }
        };
        if let Some(shared_log) = &self.shared_log {
            // The versions as they arrived are what the links send on only if every one of them
            // was applied, in the batch's order.
            let whole = refused_count == 0
                && report.logged.len() == received
                && report.logged.iter().enumerate().all(|(i, &(index, _))| i == index);
            shared_log.committed(logged_rows(held, &report.logged, &batch.from), arrived.filter(|_| whole));
        }
        let backing_off = {
            let mut mem = lock(&link.mem);
            mem.record.last_sync_ms = Some(now);
            mem.received_versions += report.applied as u64;
            mem.ever_reached = true;
            mem.failures > 0
        };
        if backing_off {
            // The peer reaches this site, so the link works again: this site's sender to it
            // retries now instead of at the end of its backoff (a link restored at both ends
            // a moment apart, say, where the first batch met the still-cut end).
            link.wake.notify_one();
        }
        if report.applied > 0 {
            debug!(peer = %batch.from, applied = report.applied, duplicates = report.duplicates, "applied a batch");
            self.notify_change(Some(&batch.from));
        }
        Ok(Ack {
            applied: report.applied,
            duplicates: report.duplicates,
            refused: refused_count,
            ack: batch.up_to,
            hello: self.hello_for(&link),
        })
    }

    async fn answer_digest(&self, request: DigestRequest) -> Result<DigestReply, ReceiveError> {
        if request.to != self.cfg.site {
            return Err(ReceiveError::Misaddressed { to: request.to, site: self.cfg.site.clone() });
        }
        let link = self.links.get(&request.from).cloned().ok_or_else(|| ReceiveError::NotNeighbour {
            from: request.from.clone(),
            site: self.cfg.site.clone(),
            neighbours: self.neighbours(),
        })?;
        if lock(&link.mem).signal() == Signal::Down {
            return Err(ReceiveError::LinkDown { peer: request.from });
        }
        if request.buckets.len() != digest::BUCKETS {
            return Err(ReceiveError::Malformed(format!(
                "a digest has {} buckets, not {}",
                digest::BUCKETS,
                request.buckets.len()
            )));
        }
        let scopes = request.scopes.clone();
        let entries = self
            .blocking(move |s| s.digest_entries(Some(&scopes)))
            .await
            .map_err(ReceiveError::Internal)??;
        let buckets = digest::differing(&digest::bucket_digests(&entries), &request.buckets);
        let listed = digest::entries_in(&entries, &buckets);
        let truncated = listed.len() > MAX_DIGEST_ENTRIES;
        let entries = listed
            .into_iter()
            .take(MAX_DIGEST_ENTRIES)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(DigestReply { buckets, entries, truncated })
    }

    async fn link_status(&self, link: &LinkRuntime) -> LinkStatus {
        let now = self.clock.now_ms();
        let scopes = self.link_scopes(link);
        let after = lock(&link.mem).record.cursor;
        let query = LinkQuery { after, peer: link.cfg.peer.clone(), scopes };
        let debt = match self.blocking(move |s| s.link_debt(&query)).await {
            Ok(Ok(debt)) => debt,
            Ok(Err(e)) => {
                warn!(peer = %link.cfg.peer, error = %e, "could not read the link's debt");
                store::Debt::default()
            }
            Err(e) => {
                warn!(peer = %link.cfg.peer, error = %e, "could not read the link's debt");
                store::Debt::default()
            }
        };
        let mem = lock(&link.mem);
        // A link without a peer address only receives: it is up while the peer keeps sending.
        let receive_only = link.cfg.url.is_none();
        let inputs = StateInputs {
            now_ms: now,
            signal: mem.signal(),
            down_since_ms: if receive_only { None } else { mem.down_since_ms },
            ever_reached: mem.ever_reached,
            oldest_pending_ms: debt.oldest_ms,
            direction: link.cfg.direction,
            lag_tolerance: link.cfg.lag_tolerance(),
            isolation_after: self.cfg.isolation_after,
        };
        let age = |t: u64| now.saturating_sub(t) as f64 / 1000.0;
        LinkStatus {
            peer: link.cfg.peer.to_string(),
            direction: link.cfg.direction,
            url: link.cfg.url.clone(),
            mode: link.cfg.mode.as_str().to_owned(),
            frequency: config::Duration::from(link.cfg.frequency).to_string(),
            signal: mem.signal(),
            state: evaluate(inputs),
            pending: debt.pending,
            pending_bytes: debt.pending_bytes,
            debt_seconds: debt.oldest_ms.map(age),
            last_sync: mem.record.last_sync_ms.map(format_rfc3339_millis),
            last_sync_age_seconds: mem.record.last_sync_ms.map(age),
            last_error: mem.last_error.clone(),
            cursor: mem.record.cursor,
            consecutive_failures: mem.failures,
            sent_versions: mem.sent_versions,
            sent_bytes: mem.sent_bytes,
            received_versions: mem.received_versions,
            repaired_versions: mem.repaired,
            peer_scopes: mem.record.peer_scopes.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Conflict decisions from the site directory: the strategy of the object's scope's own site
/// (so every site decides an object alike), ranks from the origins' levels.
struct DirectoryPolicy {
    directory: Directory,
    own: Strategy,
    audit: bool,
}

impl ConflictPolicy for DirectoryPolicy {
    fn strategy(&self, key: &ObjectKey) -> Strategy {
        self.directory.owner_of(&key.scope).map(|c| c.strategy).unwrap_or(self.own)
    }

    fn rank(&self, origin: &SiteId) -> u8 {
        self.directory.get(origin).map(|c| c.level.rank()).unwrap_or(0)
    }

    fn audit(&self) -> bool {
        self.audit
    }
}

fn describe(err: TransportError) -> String {
    match err {
        TransportError::Unreachable(reason) => format!("unreachable: {reason}"),
        refused @ TransportError::Refused { .. } => refused.to_string(),
    }
}

/// The changes an applied batch from `from` added to the log, as the links would read them
/// back (`logged`: the index in `applied` and the sequence number of each, in log order). None
/// when `logged` names a version the batch does not have.
fn logged_rows(applied: Vec<RemoteVersion>, logged: &[(usize, u64)], from: &SiteId) -> Vec<Row> {
    let mut versions: Vec<Option<RemoteVersion>> = applied.into_iter().map(Some).collect();
    let rows: Option<Vec<Row>> = logged
        .iter()
        .map(|&(index, seq)| {
            let version = versions.get_mut(index)?.take()?;
            Some(Row { seq, from: Some(from.clone()), version })
        })
        .collect();
    rows.unwrap_or_default()
}

/// The changes local writes added to the log, as the links would read them back: the stored
/// spec of a local write is its value's canonical text.
fn written_rows(outcomes: &[Result<Committed, WriteError>]) -> Vec<Row> {
    outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().ok())
        .map(|committed| {
            let object = &committed.object;
            Row {
                seq: committed.seq,
                from: None,
                version: RemoteVersion {
                    key: object.key.clone(),
                    version: object.version.clone(),
                    labels: object.labels.clone(),
                    spec: SpecText::of(&object.spec),
                },
            }
        })
        .collect()
}

fn seed_of(peer: &SiteId) -> u64 {
    peer.as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3))
}
