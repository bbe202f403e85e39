//! What the engine tests share: two sites on real SQLite files that reach each other through an
//! in-process gate instead of HTTP, and a clock the test moves by hand.

// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use model::{Autonomy, Clock, Level, Scope, SiteCard, SiteId, Strategy};
use replication::backoff::Backoff;
use replication::transport::Reply;
use replication::{Direction, EngineConfig, LinkConfig, StoreCalls, SyncEngine, Transport, TransportError};
use store::SqliteStore;
use tokio::sync::Notify;

/// The address that [`Gate`] hands to its `child`.
pub const CHILD_URL: &str = "test://child";

pub const ISOLATION_AFTER: Duration = Duration::from_secs(30);

pub struct ManualClock(pub AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Hands requests to the parent's engine, or to the child's at [`CHILD_URL`]; while `hold` is set, the next request
/// waits at the gate until released.
#[derive(Default)]
pub struct Gate {
    pub parent: OnceLock<SyncEngine>,
    /// Where requests to `test://child` go (the parent's requests, when its link has that URL).
    pub child: OnceLock<SyncEngine>,
    pub hold: AtomicBool,
    /// While set, requests to the parent fail as unreachable (and are not logged): the link is
    /// cut in one direction only.
    pub parent_unreachable: AtomicBool,
    pub entered: Notify,
    pub release: Notify,
    /// Every request that went through, in order: its path, and for a batch how many versions
    /// it carried.
    pub log: Mutex<Vec<(String, usize)>>,
}

impl Gate {
    async fn exchange(&self, url: &str, path: &str, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        if self.hold.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        if url != CHILD_URL && self.parent_unreachable.load(Ordering::SeqCst) {
            return Err(TransportError::Unreachable(format!("{url} is cut off")));
        }
        let versions = replication::codec::decode(&body).map_or(0, |b| b.versions.len());
        self.log.lock().expect("the log").push((path.to_owned(), versions));
        let to = if url == CHILD_URL { &self.child } else { &self.parent };
        let site = to.get().ok_or_else(|| TransportError::Unreachable(format!("nothing at {url} yet")))?;
        let refused =
            |e: &dyn std::fmt::Display| TransportError::Refused { status: 500, detail: e.to_string() };
        match path {
            "/v1/sync/batch" => {
                let ack = site.receive(&body).await.map_err(|e| refused(&e))?;
                serde_json::to_vec(&ack).map_err(|e| refused(&e))
            }
            "/v1/sync/digest" => {
                let request = serde_json::from_slice(&body).map_err(|e| refused(&e))?;
                let reply = site.digest(request).await.map_err(|e| refused(&e))?;
                serde_json::to_vec(&reply).map_err(|e| refused(&e))
            }
            other => Err(refused(&format!("nothing at {other}"))),
        }
    }
}

pub struct GateTransport(Arc<Gate>);

impl Transport for GateTransport {
    fn post<'a>(&'a self, url: &'a str, path: &'a str, _: &'static str, body: Vec<u8>) -> Reply<'a> {
        Box::pin(self.0.exchange(url, path, body))
    }
}

pub fn id(s: &str) -> SiteId {
    SiteId::new(s).expect("a site id")
}

pub fn config(site: &str, level: Level, parent: Option<&str>, link: LinkConfig) -> EngineConfig {
    let card = SiteCard {
        id: id(site),
        scope: Scope::new(site).expect("a scope"),
        parent: parent.map(id),
        level,
        autonomy: Autonomy::Full,
        can_operate_isolated: true,
        can_modify_policies: true,
        can_deploy_versions: true,
        strategy: Strategy::LastWriteWins,
    };
    EngineConfig {
        site: card.id.clone(),
        scope: card.scope.clone(),
        level,
        isolation_after: ISOLATION_AFTER,
        links: vec![link],
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
        card,
        audit_conflicts: false,
    }
}

pub fn link(peer: &str, direction: Direction, url: Option<&str>) -> LinkConfig {
    LinkConfig {
        peer: id(peer),
        url: url.map(str::to_owned),
        direction,
        // One round at start, then only when asked: the test decides when rounds run.
        mode: config::SyncMode::Push,
        frequency: Duration::from_secs(3600),
        batch_size: 100,
    }
}

/// Asks `probe` every 10 ms until it answers `Ok`; fails the test after 60 s, showing `what` was
/// awaited and what the probe last answered.
pub async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The global site and one edge zone below it, each on its own SQLite file under `dir`, both
/// reached through `gate`: (parent, the parent's store, child). The parent sends to the child
/// only when `down_url` is given; `child_backoff` replaces the child's retry policy.
pub async fn two_sites(
    dir: &Path,
    clock: &Arc<ManualClock>,
    gate: &Arc<Gate>,
    down_url: Option<&str>,
    child_backoff: Option<Backoff>,
) -> (SyncEngine, Arc<SqliteStore>, SyncEngine) {
    let down = link("edge-zone-a1", Direction::Downstream, down_url);
    let (parent, parent_store) = start(dir, clock, gate, config("global", Level::Global, None, down)).await;
    gate.parent.set(parent.clone()).ok().expect("set once");
    let up = link("global", Direction::Upstream, Some("test://global"));
    let mut child_config = config("edge-zone-a1", Level::Local, Some("global"), up);
    if let Some(backoff) = child_backoff {
        child_config.backoff = backoff;
    }
    let (child, _) = start(dir, clock, gate, child_config).await;
    gate.child.set(child.clone()).ok().expect("set once");
    (parent, parent_store, child)
}

/// Opens a site's SQLite file under `dir` and starts its engine, reaching its peer through `gate`.
pub async fn start(
    dir: &Path,
    clock: &Arc<ManualClock>,
    gate: &Arc<Gate>,
    cfg: EngineConfig,
) -> (SyncEngine, Arc<SqliteStore>) {
    let store =
        Arc::new(SqliteStore::open(&dir.join(cfg.site.as_str()), cfg.site.clone(), 60_000).expect("a store"));
    let transport = Arc::new(GateTransport(gate.clone()));
    let engine = SyncEngine::start_with(cfg, store.clone(), clock.clone(), transport, StoreCalls::Blocking)
        .await
        .expect("a site starts");
    (engine, store)
}
