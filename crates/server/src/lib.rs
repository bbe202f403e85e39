//! One site's HTTP API: object documents under `/v1/objects`, their history, the audit log,
//! the sync endpoints (`/v1/sync/...`, `/v1/links/{peer}/signal`), conflicts (`/v1/conflicts`),
//! the event stream (`/v1/events`), webhook deliveries, the fleet (node heartbeats under
//! `/v1/nodes`, `/v1/effective`, `/v1/drift`, `/v1/views/...`; see docs/fleet.md), `/healthz`,
//! Prometheus `/metrics` and the OpenAPI document, over axum; and [`RunningSite`], a whole site
//! (store, sync engine, webhooks, the `SiteStatus` publisher, server) started from its
//! configuration.
//!
//! [`router`] builds the routes over an [`AppState`]; [`run`] serves them on a listener until
//! a shutdown future completes, then drains in-flight requests. The store is reached only
//! through [`store::Store`], on tokio's blocking threads, so a slow fsync never stalls the
//! async workers.

mod api;
mod apply_api;
mod body;
pub mod clock;
mod conflicts_api;
mod events_api;
pub mod fleet;
mod fleet_api;
mod metrics;
mod openapi;
mod placement;
mod problem;
pub mod site;
pub mod site_status;
mod sync_api;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use model::{Level, Scope, SiteId};
use replication::SyncEngine;
use store::Store;
use tokio::sync::watch;

pub use api::{AuditItem, AuditPage, HistoryItem, HistoryPage, ObjectPage, SiteDocument};
pub use apply_api::{ApplyOutcome, ApplyResponse, MAX_DOCUMENTS as MAX_APPLY_DOCUMENTS};
pub use clock::{Clock, SystemClock};
pub use conflicts_api::{ConflictDetail, ConflictItem, ConflictPage, ConflictSideItem, Resolution};
pub use events_api::EventItem;
pub use fleet::{FleetView, NodeCounts, NodeStatus, SiteSummary, ViewItem};
pub use fleet_api::{DriftReport, EffectiveSet, HeartbeatAnswer, NodeItem, NodePage};
pub use metrics::Metrics;
pub use openapi::openapi_document;
pub use problem::{ApiError, Problem};
pub use site::{RunningSite, SiteError};
pub use site_status::Fleet;
pub use webhooks::{DeliveryItem, DeliveryPage};

/// The largest request body a site accepts unless configured otherwise.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Who this site is.
#[derive(Debug, Clone)]
pub struct SiteInfo {
    pub id: SiteId,
    pub scope: Scope,
    pub level: Level,
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub site: Arc<SiteInfo>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
    pub engine: SyncEngine,
    /// Set to true when the site stops serving: long-lived responses (event streams) end, so
    /// graceful shutdown does not wait on them.
    pub shutdown: Arc<watch::Sender<bool>>,
    /// Node thresholds, the status interval, autonomy, parent, and the objects in effect.
    pub fleet: Arc<Fleet>,
}

impl AppState {
    pub fn new(site: SiteInfo, store: Arc<dyn Store>, engine: SyncEngine) -> Self {
        let autonomy = site.level.default_autonomy();
        Self {
            site: Arc::new(site),
            store,
            clock: Arc::new(SystemClock),
            metrics: Arc::new(Metrics::new()),
            max_body: DEFAULT_MAX_BODY,
            engine,
            shutdown: Arc::new(watch::channel(false).0),
            fleet: Arc::new(Fleet::new(
                fleet::Thresholds {
                    delayed_after_ms: millis(config::DEFAULT_NODES_DELAYED_AFTER.as_std()),
                    offline_after_ms: millis(config::DEFAULT_NODES_OFFLINE_AFTER.as_std()),
                },
                config::DEFAULT_STATUS_INTERVAL.as_std(),
                autonomy,
                None,
            )),
        }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The site's routes.
pub fn router(state: AppState) -> axum::Router {
    api::routes(state)
}

/// Serves the site on `listener` until `shutdown` completes, then ends the event streams,
/// finishes the requests in flight and returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let site = state.site.id.clone();
    let signal = state.shutdown.clone();
    let app = router(state);
    tracing::info!(site = %site, addr = ?listener.local_addr().ok(), "serving");
    let shutdown = async move {
        shutdown.await;
        signal.send_replace(true);
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    tracing::info!(site = %site, "stopped");
    Ok(())
}
