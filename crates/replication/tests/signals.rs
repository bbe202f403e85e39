//! Connectivity signals against rounds in flight: a link cut by the connectivity manager stays
//! down, and becomes isolated after the threshold, even when a round that started before the
//! cut finishes well.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use model::{Autonomy, Clock, Level, Scope, SiteCard, SiteId, Strategy};
use replication::backoff::Backoff;
use replication::transport::Reply;
use replication::{
    Direction, EngineConfig, LinkConfig, LinkState, Signal, StoreCalls, SyncEngine, Transport, TransportError,
};
use store::SqliteStore;
use tokio::sync::Notify;

const ISOLATION_AFTER: Duration = Duration::from_secs(30);

struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Hands the child's requests to the parent's engine; while `hold` is set, the next request
/// waits at the gate until released.
#[derive(Default)]
struct Gate {
    parent: OnceLock<SyncEngine>,
    hold: AtomicBool,
    entered: Notify,
    release: Notify,
}

impl Gate {
    async fn exchange(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        if self.hold.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.release.notified().await;
        }
        let parent = self.parent.get().ok_or_else(|| TransportError::Unreachable("no parent yet".into()))?;
        let refused =
            |e: &dyn std::fmt::Display| TransportError::Refused { status: 500, detail: e.to_string() };
        match path {
            "/v1/sync/batch" => {
                let ack = parent.receive(&body).await.map_err(|e| refused(&e))?;
                serde_json::to_vec(&ack).map_err(|e| refused(&e))
            }
            "/v1/sync/digest" => {
                let request = serde_json::from_slice(&body).map_err(|e| refused(&e))?;
                let reply = parent.digest(request).await.map_err(|e| refused(&e))?;
                serde_json::to_vec(&reply).map_err(|e| refused(&e))
            }
            other => Err(refused(&format!("nothing at {other}"))),
        }
    }
}

struct GateTransport(Arc<Gate>);

impl Transport for GateTransport {
    fn post<'a>(&'a self, _: &'a str, path: &'a str, _: &'static str, body: Vec<u8>) -> Reply<'a> {
        Box::pin(self.0.exchange(path, body))
    }
}

fn id(s: &str) -> SiteId {
    SiteId::new(s).expect("a site id")
}

fn config(site: &str, level: Level, parent: Option<&str>, link: LinkConfig) -> EngineConfig {
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

fn link(peer: &str, direction: Direction, url: Option<&str>) -> LinkConfig {
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
    let start = |cfg: EngineConfig| {
        let store = SqliteStore::open(&dir.path().join(cfg.site.as_str()), cfg.site.clone(), 60_000);
        let (clock, transport) = (clock.clone(), Arc::new(GateTransport(gate.clone())));
        async move {
            let store: Arc<dyn store::Store> = Arc::new(store.expect("a store"));
            SyncEngine::start_with(cfg, store, clock, transport, StoreCalls::Blocking)
                .await
                .expect("a site starts")
        }
    };
    let parent =
        start(config("global", Level::Global, None, link("edge-zone-a1", Direction::Downstream, None))).await;
    gate.parent.set(parent.clone()).ok().expect("set once");
    let child = start(config(
        "edge-zone-a1",
        Level::Local,
        Some("global"),
        link("global", Direction::Upstream, Some("test://global")),
    ))
    .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while upstream_state(&child).await.0 != LinkState::Connected {
        assert!(tokio::time::Instant::now() < deadline, "the upstream link never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A round starts and waits at the gate; the link is cut meanwhile; the round then succeeds.
    gate.hold.store(true, Ordering::SeqCst);
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
}
