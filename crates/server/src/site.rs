//! A running site: its store, its sync engine, its webhooks, its `SiteStatus` publisher and its
//! HTTP server, started from a `SiteConfig` and stopped cleanly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use config::{ConflictStrategy, SiteConfig};
use model::{Clock, SiteCard, SiteId, Strategy};
use replication::backoff::Backoff;
use replication::{Direction, EngineConfig, HttpTransport, LinkConfig, SyncEngine};
use store::{SqliteStore, StoreError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::site_status::{Fleet, Publisher};
use crate::webhooks::Webhooks;
use crate::{AppState, SiteInfo};

/// Why a site could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the HTTP client for sync could not be built: {0}")]
    Transport(String),
    #[error("the server failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error("a site task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookError),
}

/// The store file of a site inside its data directory.
pub fn store_path(data_dir: &Path, site: &SiteId) -> PathBuf {
    data_dir.join(format!("{site}.sqlite3"))
}

/// The sync engine's configuration from a site's configuration.
pub fn engine_config(config: &SiteConfig) -> EngineConfig {
    let mut links = Vec::new();
    if let Some(up) = &config.upstream {
        links.push(LinkConfig {
            peer: up.target.clone(),
            url: config.peer_url(&up.target).map(str::to_owned),
            direction: Direction::Upstream,
            mode: up.mode,
            frequency: up.frequency.as_std(),
            batch_size: up.batch_size,
        });
    }
    let down = &config.downstream;
    for target in &down.targets {
        links.push(LinkConfig {
            peer: target.clone(),
            url: config.peer_url(target).map(str::to_owned),
            direction: Direction::Downstream,
            mode: down.mode,
            frequency: down.frequency.as_std(),
            batch_size: down.batch_size,
        });
    }
    EngineConfig {
        site: config.site_id().clone(),
        scope: config.scope.clone(),
        level: config.level,
        isolation_after: config.isolation_after.as_std(),
        links,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
        card: site_card(config),
        audit_conflicts: config.conflicts.audit_log,
    }
}

/// This site's entry in the federation's directory.
pub fn site_card(config: &SiteConfig) -> SiteCard {
    SiteCard {
        id: config.site_id().clone(),
        scope: config.scope.clone(),
        parent: config.upstream.as_ref().map(|u| u.target.clone()),
        level: config.level,
        autonomy: config.autonomy.mode,
        can_operate_isolated: config.autonomy.can_operate_isolated,
        can_modify_policies: config.autonomy.can_modify_policies,
        can_deploy_versions: config.autonomy.can_deploy_versions,
        strategy: match config.conflicts.strategy {
            ConflictStrategy::LastWriteWins => Strategy::LastWriteWins,
            ConflictStrategy::AuthorityWins => Strategy::AuthorityWins,
            ConflictStrategy::Manual => Strategy::Manual,
        },
    }
}

/// A site serving on its listener.
pub struct RunningSite {
    pub id: SiteId,
    pub url: String,
    pub store_path: PathBuf,
    pub store: Arc<dyn store::Store>,
    pub engine: SyncEngine,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    webhooks: Webhooks,
    publisher: Publisher,
}

impl RunningSite {
    /// Opens the site's store, starts its sync engine and its webhooks, and serves its API on
    /// `listener`.
    pub async fn start(
        config: &SiteConfig,
        data_dir: &Path,
        listener: tokio::net::TcpListener,
        clock: Arc<dyn Clock>,
    ) -> Result<RunningSite, SiteError> {
        let id = config.site_id().clone();
        let path = store_path(data_dir, &id);
        let skew_ms = u64::try_from(config.max_clock_skew.as_std().as_millis()).unwrap_or(u64::MAX);
        let store = {
            let (path, id) = (path.clone(), id.clone());
            tokio::task::spawn_blocking(move || SqliteStore::open(&path, id, skew_ms))
                .await
                .map_err(|e| SiteError::Task(e.to_string()))??
        };
        let store: Arc<dyn store::Store> = Arc::new(store);
        let transport = Arc::new(HttpTransport::new().map_err(|e| SiteError::Transport(e.to_string()))?);
        let engine =
            SyncEngine::start(engine_config(config), store.clone(), clock.clone(), transport).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let info = SiteInfo { id: id.clone(), scope: config.scope.clone(), level: config.level };
        let mut state = AppState::new(info, store.clone(), engine.clone());
        state.clock = clock.clone();
        state.fleet = Arc::new(Fleet::from_config(config));
        let webhooks =
            match Webhooks::start(id.clone(), &config.webhooks, store.clone(), clock, state.metrics.clone())
                .await
            {
                Ok(webhooks) => webhooks,
                Err(err) => {
                    engine.shutdown().await;
                    return Err(err.into());
                }
            };
        let publisher = Publisher::start(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(crate::run(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(RunningSite {
            id,
            url,
            store_path: path,
            store,
            engine,
            stop: Some(stop),
            server,
            webhooks,
            publisher,
        })
    }

    /// Stops the `SiteStatus` publisher, stops serving (ending event streams, finishing
    /// requests in flight), then stops the webhooks and the sync engine.
    pub async fn stop(mut self) -> Result<(), SiteError> {
        self.publisher.stop().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = (&mut self.server).await.map_err(|e| SiteError::Task(e.to_string()));
        self.webhooks.stop().await;
        self.engine.shutdown().await;
        let served = served?;
        served?;
        Ok(())
    }
}
