//! `souverix serve` and `souverix config check`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use config::SiteConfig;
use server::{AppState, SiteInfo};
use store::SqliteStore;

/// Checks a configuration file and prints what it resolves to.
pub fn check(file: &Path) -> anyhow::Result<()> {
    let config = SiteConfig::load(file)?;
    println!("{}: ok", file.display());
    for line in config.describe() {
        println!("  {line}");
    }
    Ok(())
}

/// The store file of a site inside its data directory.
pub fn store_path(data_dir: &Path, site: &model::SiteId) -> PathBuf {
    data_dir.join(format!("{site}.sqlite3"))
}

pub async fn serve(
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    init_logging();
    let config = match &config {
        Some(path) => SiteConfig::load(path)?,
        None => SiteConfig::embedded_default(),
    };
    let listen = listen.unwrap_or(config.listen);
    let data_dir = data_dir.unwrap_or_else(|| config.data_dir.clone());
    let site = config.site_id().clone();
    let path = store_path(&data_dir, &site);
    let skew_ms = u64::try_from(config.max_clock_skew.as_std().as_millis()).unwrap_or(u64::MAX);
    let store = tokio::task::spawn_blocking({
        let path = path.clone();
        let site = site.clone();
        move || SqliteStore::open(&path, site, skew_ms)
    })
    .await
    .context("the store could not be opened")??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}: is another site already running there? Choose another address with --listen"))?;
    let local = listener.local_addr().context("the listener has no local address")?;
    let info = SiteInfo { id: site.clone(), scope: config.scope.clone(), level: config.level };
    let state = AppState::new(info, Arc::new(store));
    let shutdown = shutdown_signal()?;
    // The first line on standard output tells scripts and tests where the site is.
    println!("site {site} ({}) serving http://{local} with data in {}", config.level, path.display());
    std::io::stdout().flush().ok();
    server::run(listener, state, shutdown).await.context("the server failed")?;
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this
/// is called, not when the future is first polled, so a signal that arrives as soon as the site
/// has announced itself still shuts it down cleanly.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("interrupted: shutting down"),
                _ = terminate.recv() => tracing::info!("terminated: shutting down"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("interrupted: shutting down");
            }
        })
    }
}
