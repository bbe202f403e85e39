//! `souverix serve`, `souverix demo` and `souverix config check`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use config::{FederationConfig, SiteConfig};
use server::{RunningSite, SystemClock};

use crate::simulate;

/// Checks a configuration file and prints what it resolves to.
pub fn check(file: &Path) -> anyhow::Result<()> {
    let config = SiteConfig::load(file)?;
    println!("{}: ok", file.display());
    for line in config.describe() {
        println!("  {line}");
    }
    Ok(())
}

/// Writes a standalone site file for every site of a federation.
pub fn site_files(
    federation: Option<PathBuf>,
    base_port: u16,
    data_dir: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let federation = match &federation {
        Some(path) => FederationConfig::load(path)?,
        None => FederationConfig::embedded_demo(),
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for site in federation.sites() {
        let text = federation.render_site_file(site.id(), base_port, data_dir)?;
        let path = out.join(format!("{}.yaml", site.id()));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for {what}: is another site already running there? Choose another address or port")
    })
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
    let listener = bind(listen, config.site_id().as_str()).await?;
    let shutdown = shutdown_signal()?;
    let site = RunningSite::start(&config, &data_dir, listener, Arc::new(SystemClock))
        .await
        .with_context(|| format!("site {} could not start", config.site_id()))?;
    // The first line on standard output tells scripts and tests where the site is.
    println!(
        "site {} ({}) serving {} with data in {}",
        site.id,
        config.level,
        site.url,
        site.store_path.display()
    );
    std::io::stdout().flush().ok();
    shutdown.await;
    site.stop().await.context("the site did not stop cleanly")?;
    Ok(())
}

/// Runs every site of a federation in this process, each on its own port with its own store.
/// With `fleet`, the design's simulated fleet ([`simulate::DEMO_FLEET`]) heartbeats to the zone
/// sites once they run, and stops before them.
pub async fn demo(
    federation: Option<PathBuf>,
    base_port: u16,
    data_dir: PathBuf,
    fleet: bool,
) -> anyhow::Result<()> {
    init_logging();
    let federation = match &federation {
        Some(path) => FederationConfig::load(path)?,
        None => FederationConfig::embedded_demo(),
    };
    let configs = federation.site_configs_for_run(base_port, &data_dir)?;
    // Bind every port first, so a taken port stops the demo before any site starts.
    let mut listeners = Vec::with_capacity(configs.len());
    for config in &configs {
        listeners.push(bind(config.listen, config.site_id().as_str()).await?);
    }
    let shutdown = shutdown_signal()?;
    let clock = Arc::new(SystemClock);
    let mut sites = Vec::with_capacity(configs.len());
    for (config, listener) in configs.iter().zip(listeners) {
        let site = RunningSite::start(config, &data_dir, listener, clock.clone())
            .await
            .with_context(|| format!("site {} could not start", config.site_id()))?;
        sites.push(site);
    }
    for site in &sites {
        println!("{} {}", site.id, site.url);
    }
    let fleet = if fleet { start_demo_fleet(&sites).map(Some) } else { Ok(None) };
    let mut failed = Vec::new();
    match fleet {
        Ok(fleet) => {
            std::io::stdout().flush().ok();
            tracing::info!(sites = sites.len(), data_dir = %data_dir.display(), "federation running; Ctrl-C stops it");
            shutdown.await;
            if let Some(fleet) = fleet {
                fleet.stop().await;
            }
        }
        // The sites run already: stop them cleanly before saying why the demo cannot go on.
        Err(err) => failed.push(format!("the fleet did not start: {err:#}")),
    }
    for site in sites {
        let id = site.id.clone();
        if let Err(err) = site.stop().await {
            failed.push(format!("{id}: {err}"));
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("the demo did not end cleanly: {}", failed.join("; "));
    }
    Ok(())
}

/// Starts the design's fleet against the zone sites among `sites`.
fn start_demo_fleet(sites: &[RunningSite]) -> anyhow::Result<simulate::Fleet> {
    let url_of = |id: &str| sites.iter().find(|s| s.id.as_str() == id).map(|s| s.url.clone());
    let groups = simulate::demo_groups(url_of)?;
    let fleet = simulate::Fleet::start(&groups, &simulate::demo_plan())?;
    let described: Vec<String> =
        groups.iter().map(|g| format!("{} nodes ({} delayed) at {}", g.nodes, g.delayed, g.server)).collect();
    println!("fleet: {}", described.join(", "));
    Ok(fleet)
}

pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// A future that completes on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this
/// is called, not when the future is first polled, so a signal that arrives as soon as the site
/// has announced itself still shuts it down cleanly.
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
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
