//! Starts a site in-process on 127.0.0.1 over a real SQLite file, and stops it.

use std::sync::Arc;

use config::SiteConfig;
use server::{RunningSite, SystemClock};

pub struct Site {
    pub url: String,
    pub http: reqwest::Client,
    pub store: Arc<dyn store::Store>,
    running: Option<RunningSite>,
    _dir: tempfile::TempDir,
}

impl Site {
    /// The embedded default site (`global-control`), in a temporary data directory.
    pub async fn start() -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = SiteConfig::embedded_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let running = RunningSite::start(&config, dir.path(), listener, Arc::new(SystemClock))
            .await
            .expect("site starts");
        Site {
            url: running.url.clone(),
            http: reqwest::Client::new(),
            store: running.store.clone(),
            running: Some(running),
            _dir: dir,
        }
    }

    pub fn object_url(&self, kind: &str, scope: &str, name: &str) -> String {
        format!("{}/v1/objects/{kind}/{scope}/{name}", self.url)
    }

    /// Stops the server and waits for it to finish its requests.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.expect("site stops cleanly");
        }
    }
}

pub fn policy(name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "souverix/v1",
        "kind": "Policy",
        "metadata": {"name": name, "scope": "global", "labels": {"team": "security"}},
        "spec": spec,
    })
}
