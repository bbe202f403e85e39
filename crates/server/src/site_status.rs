//! What a site knows of its fleet, read from its store and its sync engine: the objects in
//! effect (with their etag), its nodes' status and drift, and its `SiteStatus` summary; and the
//! publisher, the task that writes that summary every `Site.status_interval`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use model::{Kind, ObjectKey, ObjectName, Scope, StoredObject};
use replication::{Direction, LinkStatus};
use store::{
    ConflictFilter, ConflictStatus, ListFilter, LocalWrite, MAX_PAGE, NodeRecord, Store, StoreError,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::AppState;
use crate::api::blocking;
use crate::fleet::{AutonomyState, NodeCounts, NodeStatus, SiteSummary, SummaryLink, Thresholds, Totals};
use crate::problem::ApiError;

/// Who the summaries are written by.
pub const STATUS_AUTHOR: &str = "souverix";

/// The kinds of objects that configure a zone (what "in effect" selects).
const EFFECTIVE_KINDS: [Kind; 3] = [Kind::Policy, Kind::Release, Kind::Rollout];

/// The most node records one scan reads (a bound on every pass over the nodes).
pub const MAX_NODES_SCANNED: usize = 1_000_000;

/// The fleet settings of a site, and its cache of the objects in effect.
pub struct Fleet {
    pub thresholds: Thresholds,
    pub status_interval: Duration,
    pub autonomy: model::Autonomy,
    pub parent: Option<model::SiteId>,
    /// `Site.trust_domain`, shown in summaries and the web UI's federation boundaries.
    pub trust_domain: Option<String>,
    effective: Mutex<Option<Arc<Effective>>>,
}

impl Fleet {
    pub fn new(
        thresholds: Thresholds,
        status_interval: Duration,
        autonomy: model::Autonomy,
        parent: Option<model::SiteId>,
    ) -> Fleet {
        Fleet {
            thresholds,
            status_interval,
            autonomy,
            parent,
            trust_domain: None,
            effective: Mutex::new(None),
        }
    }

    /// Settings from a site's configuration.
    pub fn from_config(config: &config::SiteConfig) -> Fleet {
        let mut fleet = Fleet::new(
            Thresholds {
                delayed_after_ms: ms(config.nodes.delayed_after.as_std()),
                offline_after_ms: ms(config.nodes.offline_after.as_std()),
            },
            config.status_interval.as_std(),
            config.autonomy.mode,
            config.upstream.as_ref().map(|u| u.target.clone()),
        );
        fleet.trust_domain = Some(config.trust_domain.clone());
        fleet
    }

    pub fn status_interval_ms(&self) -> u64 {
        ms(self.status_interval)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The objects in effect at a site.
#[derive(Debug)]
pub struct Effective {
    /// The end of the change log when they were read (the cache's key, with the scopes).
    last_seq: u64,
    scopes: BTreeSet<Scope>,
    /// Hex SHA-256 over the sorted `(key, version)` pairs.
    pub etag: String,
    /// In key order.
    pub objects: Vec<StoredObject>,
}

/// The scopes whose objects apply at this site: its own and its ancestors' (`global` always).
fn effective_scopes(state: &AppState) -> BTreeSet<Scope> {
    let directory = state.engine.directory();
    let mut scopes = BTreeSet::from([state.site.scope.clone()]);
    scopes.extend(Scope::new("global"));
    for ancestor in directory.ancestors(&state.site.id) {
        if let Some(card) = directory.get(&ancestor) {
            scopes.insert(card.scope.clone());
        }
    }
    scopes
}

/// The objects in effect at this site, read again only when the change log or the scopes
/// changed.
pub async fn effective(state: &AppState) -> Result<Arc<Effective>, ApiError> {
    let scopes = effective_scopes(state);
    let last_seq = blocking(state, "last-seq", |s| s.last_seq()).await?;
    let cached = state.fleet.effective.lock().unwrap_or_else(PoisonError::into_inner).clone();
    if let Some(cached) = cached.filter(|c| c.last_seq == last_seq && c.scopes == scopes) {
        return Ok(cached);
    }
    let read = blocking(state, "effective", move |s| read_effective(s, last_seq, scopes)).await?;
    let read = Arc::new(read);
    *state.fleet.effective.lock().unwrap_or_else(PoisonError::into_inner) = Some(read.clone());
    Ok(read)
}

fn read_effective(
    store: &dyn Store,
    last_seq: u64,
    scopes: BTreeSet<Scope>,
) -> Result<Effective, StoreError> {
    let mut objects = Vec::new();
    for kind in EFFECTIVE_KINDS {
        for scope in &scopes {
            let mut after = None;
            loop {
                let filter = ListFilter {
                    kind: Some(kind),
                    scope: Some(scope.clone()),
                    include_deleted: false,
                    after,
                    limit: MAX_PAGE,
                };
                let page = store.list(&filter)?;
                let full = page.len() == MAX_PAGE;
                after = page.last().map(|o| o.key.clone());
                objects.extend(page);
                if !full {
                    break;
                }
            }
        }
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    let etag = etag_of(objects.iter().map(|o| (o.key.to_string(), o.version.id().to_string())));
    Ok(Effective { last_seq, scopes, etag, objects })
}

/// Hex SHA-256 over `key version\n` lines, in the order given (sorted by key).
pub fn etag_of(pairs: impl Iterator<Item = (String, String)>) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for (key, version) in pairs {
        hasher.update(key.as_bytes());
        hasher.update(b" ");
        hasher.update(version.as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// One node that has not applied an object's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drifting {
    pub node: String,
    pub applied: Option<String>,
}

/// What one pass over the node records found.
#[derive(Debug, Default)]
pub struct NodeScan {
    pub counts: NodeCounts,
    /// Each object in effect that some non-offline node has not applied (key → nodes).
    pub drift: BTreeMap<String, Vec<Drifting>>,
}

/// Counts the nodes by status at `now_ms` and finds the drift against `desired`
/// (`key → version`), reading at most [`MAX_NODES_SCANNED`] records.
pub fn scan_nodes(
    store: &dyn Store,
    now_ms: u64,
    thresholds: Thresholds,
    desired: &BTreeMap<String, String>,
) -> Result<NodeScan, StoreError> {
    let mut scan = NodeScan::default();
    for_each_node(store, None, |record| {
        let status = crate::fleet::node_status(
            record.last_heartbeat_ms,
            record.previous_heartbeat_ms,
            now_ms,
            thresholds,
        );
        scan.counts.add(status);
        if status != NodeStatus::Offline {
            for (key, version) in desired {
                let applied = record.applied.get(key);
                if applied != Some(version) {
                    scan.drift
                        .entry(key.clone())
                        .or_default()
                        .push(Drifting { node: record.id.to_string(), applied: applied.cloned() });
                }
            }
        }
        true
    })?;
    Ok(scan)
}

/// Calls `f` on node records in id order after `after`, page by page, until it returns false,
/// the records end, or [`MAX_NODES_SCANNED`] were read. Returns the id of the last record read
/// when the scan stopped at the bound with more to read.
pub fn for_each_node(
    store: &dyn Store,
    after: Option<ObjectName>,
    mut f: impl FnMut(&NodeRecord) -> bool,
) -> Result<Option<ObjectName>, StoreError> {
    let mut after = after;
    let mut read = 0usize;
    loop {
        let page = store.nodes(after.as_ref(), MAX_PAGE)?;
        let full = page.len() == MAX_PAGE;
        for record in &page {
            read += 1;
            if !f(record) {
                return Ok(None);
            }
        }
        after = page.last().map(|r| r.id.clone());
        if !full {
            return Ok(None);
        }
        if read >= MAX_NODES_SCANNED {
            return Ok(after);
        }
    }
}

/// `key → version` of the objects in effect.
pub fn desired(effective: &Effective) -> BTreeMap<String, String> {
    effective.objects.iter().map(|o| (o.key.to_string(), o.version.id().to_string())).collect()
}

/// Everything a summary or a view is made of, read at one moment.
pub struct Snapshot {
    pub now_ms: u64,
    /// This site's live summary.
    pub summary: SiteSummary,
    /// Every `SiteStatus` spec this site holds (its own included), parsed.
    pub held: Vec<SiteSummary>,
    pub links: Vec<LinkStatus>,
}

/// Reads every `SiteStatus` object this site holds; a spec that does not parse is skipped with
/// a warning.
fn read_held(store: &dyn Store) -> Result<Vec<SiteSummary>, StoreError> {
    let mut held = Vec::new();
    let mut after = None;
    loop {
        let filter = ListFilter {
            kind: Some(Kind::SiteStatus),
            scope: None,
            include_deleted: false,
            after,
            limit: MAX_PAGE,
        };
        let page = store.list(&filter)?;
        let full = page.len() == MAX_PAGE;
        after = page.last().map(|o| o.key.clone());
        for object in page {
            match serde_json::from_value::<SiteSummary>(object.spec) {
                Ok(summary) => held.push(summary),
                Err(err) => {
                    tracing::warn!(object = %object.key, error = %err, "skipping a SiteStatus that does not parse")
                }
            }
        }
        if !full {
            return Ok(held);
        }
    }
}

/// This site's summary now, with what it is made of.
pub async fn snapshot(state: &AppState) -> Result<Snapshot, ApiError> {
    let effective = effective(state).await?;
    let sync = state.engine.status().await;
    let now_ms = state.clock.now_ms();
    let thresholds = state.fleet.thresholds;
    let peers: Vec<model::SiteId> =
        sync.links.iter().filter_map(|l| model::SiteId::new(l.peer.clone()).ok()).collect();
    let (scan, open_conflicts, held, last_syncs) = blocking(state, "site-status", move |s| {
        let scan = scan_nodes(s, now_ms, thresholds, &desired(&effective))?;
        let filter = ConflictFilter { status: Some(ConflictStatus::Open), key: None, limit: MAX_PAGE };
        let open = s.conflicts(&filter)?.len();
        let held = read_held(s)?;
        let mut last_syncs = BTreeMap::new();
        for peer in peers {
            let last = s.link(&peer)?.and_then(|r| r.last_sync_ms);
            last_syncs.insert(peer.to_string(), last);
        }
        Ok((scan, open, held, last_syncs))
    })
    .await?;
    let links: Vec<SummaryLink> = sync
        .links
        .iter()
        .map(|l| SummaryLink {
            peer: l.peer.clone(),
            direction: l.direction,
            state: l.state,
            pending: l.pending,
            debt_seconds: l.debt_seconds,
            last_sync_ms: last_syncs.get(&l.peer).copied().flatten(),
        })
        .collect();
    let children: BTreeMap<String, SiteSummary> = sync
        .links
        .iter()
        .filter(|l| l.direction == Direction::Downstream)
        .filter_map(|l| {
            held.iter()
                .filter(|h| h.site == l.peer)
                .max_by_key(|h| h.observed_ms)
                .map(|h| (l.peer.clone(), h.clone()))
        })
        .collect();
    let mut summary = SiteSummary {
        site: state.site.id.to_string(),
        scope: state.site.scope.to_string(),
        level: state.site.level,
        parent: state.fleet.parent.as_ref().map(ToString::to_string),
        trust_domain: state.fleet.trust_domain.clone(),
        observed_ms: now_ms,
        autonomy: AutonomyState { mode: state.fleet.autonomy, isolated: sync.isolated },
        nodes: scan.counts,
        drift: scan.drift.len() as u64,
        open_conflicts: open_conflicts as u64,
        links,
        children,
        totals: Totals::default(),
    };
    summary.roll_up();
    Ok(Snapshot { now_ms, summary, held, links: sync.links })
}

/// Writes this site's summary as `SiteStatus/<scope>/<site id>` (author `souverix`) and wakes
/// the links so it travels upward promptly.
pub async fn publish(state: &AppState) -> Result<SiteSummary, ApiError> {
    let name = ObjectName::new(state.site.id.as_str()).map_err(|e| {
        tracing::error!(error = %e, "the site id is not a valid object name");
        ApiError::internal()
    })?;
    let key = ObjectKey::new(Kind::SiteStatus, state.site.scope.clone(), name);
    let summary = snapshot(state).await?.summary;
    let spec = serde_json::to_value(&summary).map_err(|e| {
        tracing::error!(error = %e, "could not encode the site summary");
        ApiError::internal()
    })?;
    let write = LocalWrite {
        key,
        labels: BTreeMap::new(),
        spec,
        deleted: false,
        author: STATUS_AUTHOR.to_owned(),
        precondition: None,
        now_ms: summary.observed_ms,
    };
    // `commit` authorizes (a site's own scope), writes, and calls `engine.notify_change`.
    crate::api::commit(state, write).await?;
    Ok(summary)
}

/// The task that publishes the site's summary every `status_interval`.
pub struct Publisher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Publisher {
    /// Publishes every `state.fleet.status_interval` (the first one interval after the start),
    /// until stopped.
    pub fn start(state: AppState) -> Publisher {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let interval = state.fleet.status_interval;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => break,
                }
                match publish(&state).await {
                    Ok(summary) => tracing::debug!(
                        site = %state.site.id,
                        nodes = summary.nodes.total,
                        drift = summary.drift,
                        "published the site status"
                    ),
                    Err(err) => tracing::warn!(
                        site = %state.site.id,
                        status = err.status().as_u16(),
                        "could not publish the site status"
                    ),
                }
            }
        });
        Publisher { stop, task }
    }

    /// Stops the task and waits for it (a publication in progress finishes first).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
