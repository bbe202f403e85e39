//! A store that can die at a chosen call, as its process would: [`CrashableStore`] wraps a
//! site's `SqliteStore` and counts calls; once armed, the call at the trigger and every call
//! after it fail without touching the file. Every store call is one transaction, so dying
//! before a call is the same as dying anywhere inside it (SQLite rolls back an unfinished
//! transaction), and crashes land between any two steps of a round: after the peer
//! acknowledged a batch and before the cursor moved, after a batch was applied and before its
//! acknowledgement left, between reading the log and sending it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

use model::{Hlc, ObjectKey, ObjectName, Scope, SiteId, StoredObject, VersionId};
use store::{
    ApplyError, ApplyReport, AuditEntry, AuditRecord, Change, Committed, ConflictFilter, ConflictPolicy,
    ConflictRecord, Debt, Delivery, DeliveryEntry, Event, Heartbeat, HistoryEntry, LinkBatch, LinkQuery,
    LinkRecord, ListFilter, LocalWrite, NewEvent, NodeRecord, RemoteVersion, SqliteStore, Store, StoreError,
    WriteError,
};

/// Where one life of a site's process ends.
#[derive(Debug)]
pub struct CrashPoint {
    calls: AtomicU64,
    trigger: AtomicU64,
    dead: AtomicBool,
    /// Told when the process dies at a call.
    deaths: Arc<Notify>,
}

impl CrashPoint {
    pub fn new(deaths: Arc<Notify>) -> Self {
        CrashPoint {
            calls: AtomicU64::new(0),
            trigger: AtomicU64::new(u64::MAX),
            dead: AtomicBool::new(false),
            deaths,
        }
    }

    /// No crash planned any more.
    pub fn disarm(&self) {
        self.trigger.store(u64::MAX, Ordering::SeqCst);
    }

    /// The process dies just before its `n`-th store call from now (1 = the next one).
    pub fn arm(&self, n: u64) {
        let now = self.calls.load(Ordering::SeqCst);
        self.trigger.store(now.saturating_add(n.max(1)), Ordering::SeqCst);
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Marks the process dead now (a crash at a point in time rather than at a call).
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    fn pass(&self) -> Result<(), StoreError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if call >= self.trigger.load(Ordering::SeqCst) && !self.dead.swap(true, Ordering::SeqCst) {
            self.deaths.notify_one();
        }
        if self.is_dead() {
            return Err(StoreError::Backend {
                context: "the process crashed".into(),
                source: Box::new(std::io::Error::other("simulated crash")),
            });
        }
        Ok(())
    }
}

/// A site's store for one life of its process.
pub struct CrashableStore {
    pub inner: SqliteStore,
    pub point: Arc<CrashPoint>,
}

impl Store for CrashableStore {
    fn site(&self) -> &SiteId {
        self.inner.site()
    }
    fn write(&self, write: LocalWrite) -> Result<Committed, WriteError> {
        self.point.pass()?;
        self.inner.write(write)
    }
    fn get(&self, key: &ObjectKey) -> Result<Option<StoredObject>, StoreError> {
        self.point.pass()?;
        self.inner.get(key)
    }
    fn list(&self, filter: &ListFilter) -> Result<Vec<StoredObject>, StoreError> {
        self.point.pass()?;
        self.inner.list(filter)
    }
    fn history(&self, key: &ObjectKey) -> Result<Vec<HistoryEntry>, StoreError> {
        self.point.pass()?;
        self.inner.history(key)
    }
    fn changes(&self, after: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.point.pass()?;
        self.inner.changes(after, limit)
    }
    fn last_seq(&self) -> Result<u64, StoreError> {
        self.point.pass()?;
        self.inner.last_seq()
    }
    fn append_audit(&self, record: AuditRecord) -> Result<u64, StoreError> {
        self.point.pass()?;
        self.inner.append_audit(record)
    }
    fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.point.pass()?;
        self.inner.audit(after, limit)
    }
    fn audit_tail(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.point.pass()?;
        self.inner.audit_tail(limit)
    }
    fn clock(&self) -> Result<Hlc, StoreError> {
        self.point.pass()?;
        self.inner.clock()
    }
    fn apply_remote(
        &self,
        from: &SiteId,
        versions: &[RemoteVersion],
        now_ms: u64,
        policy: &dyn ConflictPolicy,
    ) -> Result<ApplyReport, ApplyError> {
        self.point.pass()?;
        self.inner.apply_remote(from, versions, now_ms, policy)
    }
    fn changes_for_link(&self, query: &LinkQuery, limit: usize) -> Result<LinkBatch, StoreError> {
        self.point.pass()?;
        self.inner.changes_for_link(query, limit)
    }
    fn changes_for_links(
        &self,
        query: &LinkQuery,
        unwanted: &[(SiteId, BTreeSet<Scope>)],
        limit: usize,
    ) -> Result<LinkBatch, StoreError> {
        self.point.pass()?;
        self.inner.changes_for_links(query, unwanted, limit)
    }
    fn current_for_link(&self, keys: &[ObjectKey], through: u64) -> Result<Vec<RemoteVersion>, StoreError> {
        self.point.pass()?;
        self.inner.current_for_link(keys, through)
    }
    fn link_debt(&self, query: &LinkQuery) -> Result<Debt, StoreError> {
        self.point.pass()?;
        self.inner.link_debt(query)
    }
    fn digest_entries(
        &self,
        scopes: Option<&BTreeSet<Scope>>,
    ) -> Result<Vec<(ObjectKey, VersionId)>, StoreError> {
        self.point.pass()?;
        self.inner.digest_entries(scopes)
    }
    fn has_version(&self, key: &ObjectKey, version: &VersionId) -> Result<bool, StoreError> {
        self.point.pass()?;
        self.inner.has_version(key, version)
    }
    fn link(&self, peer: &SiteId) -> Result<Option<LinkRecord>, StoreError> {
        self.point.pass()?;
        self.inner.link(peer)
    }
    fn save_link(&self, record: &LinkRecord) -> Result<(), StoreError> {
        self.point.pass()?;
        self.inner.save_link(record)
    }
    fn conflicts(&self, filter: &ConflictFilter) -> Result<Vec<ConflictRecord>, StoreError> {
        self.point.pass()?;
        self.inner.conflicts(filter)
    }
    fn conflict(&self, id: &str) -> Result<Option<ConflictRecord>, StoreError> {
        self.point.pass()?;
        self.inner.conflict(id)
    }
    fn acknowledge_conflict(
        &self,
        id: &str,
        actor: &str,
        now_ms: u64,
    ) -> Result<Option<ConflictRecord>, StoreError> {
        self.point.pass()?;
        self.inner.acknowledge_conflict(id, actor, now_ms)
    }
    fn append_event(&self, event: NewEvent) -> Result<u64, StoreError> {
        self.point.pass()?;
        self.inner.append_event(event)
    }
    fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.point.pass()?;
        self.inner.events(after, limit)
    }
    fn last_event_seq(&self) -> Result<u64, StoreError> {
        self.point.pass()?;
        self.inner.last_event_seq()
    }
    fn record_delivery(&self, delivery: &Delivery) -> Result<u64, StoreError> {
        self.point.pass()?;
        self.inner.record_delivery(delivery)
    }
    fn deliveries(&self, webhook: Option<&str>, limit: usize) -> Result<Vec<DeliveryEntry>, StoreError> {
        self.point.pass()?;
        self.inner.deliveries(webhook, limit)
    }
    fn webhook_cursor(&self, webhook: &str) -> Result<u64, StoreError> {
        self.point.pass()?;
        self.inner.webhook_cursor(webhook)
    }
    fn save_webhook_cursor(&self, webhook: &str, seq: u64) -> Result<(), StoreError> {
        self.point.pass()?;
        self.inner.save_webhook_cursor(webhook, seq)
    }
    fn record_heartbeat(&self, heartbeat: &Heartbeat) -> Result<NodeRecord, StoreError> {
        self.point.pass()?;
        self.inner.record_heartbeat(heartbeat)
    }
    fn nodes(&self, after: Option<&ObjectName>, limit: usize) -> Result<Vec<NodeRecord>, StoreError> {
        self.point.pass()?;
        self.inner.nodes(after, limit)
    }
}
